import ServiceLifecycle
import TollgateObservability
import UnixSignals

/// SIGUSR1 reopens every access-log file by its path (what logrotate's `postrotate` sends).
public struct LogFileReopener: Service {
    public init() {}

    public func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sigusr1).cancelOnGracefulShutdown() {
            OpenLogFiles.shared.reopenAll()
        }
    }
}
