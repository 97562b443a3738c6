#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import DequeModule
import Logging
import Synchronization

/// Writes lines to standard output or a file, on the low-priority telemetry thread. A file is reopened (by
/// path) after `reopen()`, which SIGUSR1 calls, so logrotate can move it away.
public final class StreamLogSink: LineDestination {
    public enum Destination: Sendable, Equatable {
        case stdout
        case file(String)
    }

    public let destination: Destination
    private struct State {
        var pending = Deque<LineChunk>()
        var pendingBytes = 0
        var dropped = 0
        var draining = false
    }
    private let state = Mutex(State())
    /// The most bytes waiting to be written; beyond it the oldest chunks are dropped.
    let capacityBytes: Int
    private let worker = BackgroundWorker.telemetry
    /// The open file (touched only on the worker), and whether to reopen it before the next write.
    private nonisolated(unsafe) var descriptor: Int32 = -1
    private let reopenRequested = Atomic<Bool>(false)
    private static let logger = Logger(label: "tollgate.access-log")

    public init(destination: Destination, capacityBytes: Int = 64 << 20) {
        self.destination = destination
        self.capacityBytes = capacityBytes
        if case .stdout = destination { descriptor = STDOUT_FILENO }
        OpenLogFiles.shared.register(self)
    }

    deinit {
        if case .file = destination, descriptor >= 0 { close(descriptor) }
    }

    public var kind: String {
        if case .file = destination { return "file" }
        return "stdout"
    }

    public var dropped: Int { state.withLock { $0.dropped } }

    public func deliver(_ chunk: LineChunk) {
        let schedule = state.withLock { state -> Bool in
            state.pending.append(chunk)
            state.pendingBytes += chunk.count
            while state.pendingBytes > capacityBytes, let oldest = state.pending.popFirst() {
                state.pendingBytes -= oldest.count
                state.dropped += oldest.lines
                oldest.recycle()
            }
            if state.draining { return false }
            state.draining = true
            return true
        }
        if schedule { worker.submit { self.drain() } }
    }

    /// Asks for the file to be opened again by path before the next write (logrotate's SIGUSR1).
    public func reopen() {
        reopenRequested.store(true, ordering: .releasing)
        worker.submit { self.drain() }
    }

    /// Waits until everything delivered so far is written (tests, shutdown).
    public func flush() {
        worker.sync()
    }

    private func drain() {
        while true {
            let chunks = state.withLock { state -> Deque<LineChunk> in
                let taken = state.pending
                state.pending.removeAll()
                state.pendingBytes = 0
                if taken.isEmpty { state.draining = false }
                return taken
            }
            if reopenRequested.exchange(false, ordering: .acquiring), case .file = destination, descriptor >= 0 {
                close(descriptor)
                descriptor = -1
            }
            if chunks.isEmpty { return }
            for chunk in chunks {
                if !write(chunk.bytes) { state.withLock { $0.dropped += chunk.lines } }
                chunk.recycle()
            }
        }
    }

    private func write(_ buffer: UnsafeRawBufferPointer) -> Bool {
        if descriptor < 0, case .file(let path) = destination {
            descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            if descriptor < 0 {
                Self.logger.error("cannot open the access log", metadata: ["path": "\(path)", "errno": "\(errno)"])
                return false
            }
        }
        var offset = 0
        while offset < buffer.count {
            let written = Glibc.write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += written
        }
        return true
    }
}

/// Every open access-log file of the process, for SIGUSR1.
public final class OpenLogFiles: Sendable {
    public static let shared = OpenLogFiles()
    private struct Weak { weak var sink: StreamLogSink? }
    private let sinks = Mutex<[Weak]>([])

    func register(_ sink: StreamLogSink) {
        guard case .file = sink.destination else { return }
        sinks.withLock { list in
            list.removeAll { $0.sink == nil }
            list.append(Weak(sink: sink))
        }
    }

    /// Reopens every access-log file by its path (after logrotate moved it).
    public func reopenAll() {
        for sink in sinks.withLock({ $0.compactMap(\.sink) }) { sink.reopen() }
    }
}
