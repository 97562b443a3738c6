import Foundation
import NIOConcurrencyHelpers
import Logging
import ServiceLifecycle
import TollgateCore
import TollgateObservability
import UnixSignals

/// Hot reload: on SIGHUP, and when the config file changes (polled: portable, and cheap at one stat
/// per interval), builds a new snapshot and swaps it in. An invalid file is refused with its errors
/// logged; the old config keeps serving.
public final class ConfigReloader: Service, Sendable {
    let path: String
    let server: ProxyServer
    let registry: PluginRegistry
    let environment: [String: String]
    let pollInterval: Duration
    let logger: Logger
    private let generation = NIOLockedCounter()

    public init(path: String, server: ProxyServer, registry: PluginRegistry, environment: [String: String],
                pollInterval: Duration = .seconds(1), logger: Logger) {
        self.path = path
        self.server = server
        self.registry = registry
        self.environment = environment
        self.pollInterval = pollInterval
        self.logger = logger
    }

    /// Loads the file and swaps it in; returns the errors when it is refused.
    @discardableResult
    public func reloadNow(reason: String) async -> [ConfigError] {
        let next = generation.increment()
        do {
            // The running gateway's plugin state: counters, caches and metrics carry over.
            let snapshot = try ConfigLoader.load(path: path, environment: environment, registry: registry, generation: next,
                                                 state: server.snapshot.state)
            if snapshot.config.listen != server.snapshot.config.listen {
                logger.warning("listen addresses changed; they take effect on restart")
            }
            if snapshot.config.admin != server.snapshot.config.admin {
                logger.warning("admin addresses changed; they take effect on restart")
            }
            try await server.reload(snapshot)
            GatewayMetrics.of(snapshot.state).configReloaded(success: true)
            JSONLogHandler.Levels.shared.update(snapshot.config.logging)
            logger.info("config reloaded", metadata: ["reason": "\(reason)", "generation": "\(next)"])
            return []
        } catch let errors as ConfigErrors {
            GatewayMetrics.of(server.snapshot.state).configReloaded(success: false)
            for error in errors.errors {
                logger.error("config reload refused", metadata: ["reason": "\(reason)", "error": "\(error)"])
            }
            return errors.errors
        } catch {
            GatewayMetrics.of(server.snapshot.state).configReloaded(success: false)
            logger.error("config reload failed", metadata: ["reason": "\(reason)", "error": "\(error)"])
            return [ConfigError(path: "", "\(error)")]
        }
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
                    await self.reloadNow(reason: "SIGHUP")
                }
            }
            group.addTask {
                var last = Self.modificationStamp(self.path)
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    try? await Task.sleep(for: self.pollInterval)
                    let stamp = Self.modificationStamp(self.path)
                    if stamp != last {
                        last = stamp
                        await self.reloadNow(reason: "file changed")
                    }
                }
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
    }

    static func modificationStamp(_ path: String) -> String? {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { return nil }
        let date = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        let size = (attributes[.size] as? Int) ?? 0
        return "\(date)-\(size)"
    }
}

/// A counter behind a lock; used for reload generations only.
final class NIOLockedCounter: Sendable {
    private let value = NIOLockedValueBox(0)
    func increment() -> Int { value.withLockedValue { $0 += 1; return $0 } }
}
