#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import DequeModule
import Dispatch
import Logging
import Synchronization
import TollgateCore

/// Where access-log records go. `submit` never blocks and never waits for I/O: records queue in a
/// bounded buffer (the oldest are dropped, and counted, when it is full) and a writer off the event
/// loops formats and writes them.
public protocol AccessLogSink: AnyObject, Sendable {
    func submit(_ record: AccessRecord)
    /// Records dropped because the buffer was full or the destination failed.
    var dropped: Int { get }
    /// A short name for metrics: `stdout`, `file`, `http`.
    var kind: String { get }
}

/// A bounded first-in-first-out buffer of records that drops the oldest when full.
struct RecordBuffer {
    var records = Deque<AccessRecord>()
    let capacity: Int
    var dropped = 0

    init(capacity: Int) { self.capacity = capacity }

    mutating func append(_ record: AccessRecord) {
        if records.count >= capacity {
            records.removeFirst()
            dropped += 1
        }
        records.append(record)
    }

    mutating func take(max: Int = .max) -> [AccessRecord] {
        let count = min(max, records.count)
        let taken = Array(records.prefix(count))
        records.removeFirst(count)
        return taken
    }
}

/// Writes lines to standard output or a file, from a serial dispatch queue. A file is reopened (by
/// path) after `reopen()`, which SIGUSR1 calls, so logrotate can move it away.
public final class StreamLogSink: AccessLogSink {
    public enum Destination: Sendable, Equatable {
        case stdout
        case file(String)
    }

    public let destination: Destination
    let format: AccessLogFormat
    private struct State {
        var buffer: RecordBuffer
        var draining = false
        var failed = 0
    }
    private let state: Mutex<State>
    private let queue = DispatchQueue(label: "tollgate.access-log")
    /// The open file (touched only on `queue`), and whether to reopen it before the next write.
    private nonisolated(unsafe) var descriptor: Int32 = -1
    private let reopenRequested = Atomic<Bool>(false)
    private static let logger = Logger(label: "tollgate.access-log")

    public init(destination: Destination, format: AccessLogFormat, capacity: Int = 65_536) {
        self.destination = destination
        self.format = format
        self.state = Mutex(State(buffer: RecordBuffer(capacity: capacity)))
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

    public var dropped: Int { state.withLock { $0.buffer.dropped + $0.failed } }

    public func submit(_ record: AccessRecord) {
        let schedule = state.withLock { state -> Bool in
            state.buffer.append(record)
            if state.draining { return false }
            state.draining = true
            return true
        }
        if schedule { queue.async { self.drain() } }
    }

    /// Asks for the file to be opened again by path before the next write (logrotate's SIGUSR1).
    public func reopen() {
        reopenRequested.store(true, ordering: .releasing)
        queue.async { self.drain() }
    }

    /// Waits until everything submitted so far is written (tests, shutdown).
    public func flush() {
        queue.sync { self.drain() }
    }

    private func drain() {
        while true {
            let records = state.withLock { state -> [AccessRecord] in
                let taken = state.buffer.take()
                if taken.isEmpty { state.draining = false }
                return taken
            }
            if reopenRequested.exchange(false, ordering: .acquiring), case .file = destination, descriptor >= 0 {
                close(descriptor)
                descriptor = -1
            }
            if records.isEmpty { return }
            var bytes: [UInt8] = []
            bytes.reserveCapacity(records.count * 400)
            for record in records { format.line(record, into: &bytes) }
            if !write(bytes) { state.withLock { $0.failed += records.count } }
        }
    }

    private func write(_ bytes: [UInt8]) -> Bool {
        if descriptor < 0, case .file(let path) = destination {
            descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            if descriptor < 0 {
                Self.logger.error("cannot open the access log", metadata: ["path": "\(path)", "errno": "\(errno)"])
                return false
            }
        }
        return bytes.withUnsafeBytes { buffer -> Bool in
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
