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
import NIOCore
import Synchronization
import TollgateCore

/// Formatted access-log lines on their way out: a chunk of whole lines (each ending in a newline).
public struct LineChunk: Sendable {
    public var bytes: [UInt8]
    public var lines: Int

    public init(bytes: [UInt8], lines: Int) {
        self.bytes = bytes
        self.lines = lines
    }
}

/// Where chunks of lines go: a file or standard output, or an HTTP receiver. `deliver` never blocks
/// and never waits for I/O; what does not fit the destination's bounded buffer is dropped (the
/// oldest first) and counted.
public protocol LineDestination: AnyObject, Sendable {
    func deliver(_ chunk: LineChunk)
    /// Lines dropped because the buffer was full or the destination failed.
    var dropped: Int { get }
    /// A short name for metrics: `stdout`, `file`, `http`.
    var kind: String { get }
}

/// The access log of one plugin instance: each event-loop thread formats its lines into a batch of
/// its own (no lock, no allocation per line), and hands the batch to the destination when it holds
/// 64 KiB or 100 ms after its first line. Only the hand-off takes a lock, once per batch.
public final class AccessLog: Sendable {
    public let format: AccessLogFormat
    public let destination: any LineDestination
    private let slot = ThreadSlot<LineBatch>()
    private let batches = Mutex<[LineBatch]>([])
    static let batchBytes = 64 << 10
    static let batchDelay = TimeAmount.milliseconds(100)

    public init(format: AccessLogFormat, destination: any LineDestination) {
        self.format = format
        self.destination = destination
        AccessLogs.shared.register(self)
    }

    /// Formats the request's line on the calling (event-loop) thread.
    public func log(context: RequestContext, summary: RequestSummary) {
        let batch = self.batch()
        var out = LineWriter(base: batch.memory, capacity: LineBatch.capacity, count: batch.count)
        format.write(context: context, summary: summary, nowMillis: WallClock.milliseconds(), timestamps: &batch.timestamps, into: &out)
        batch.count = out.count
        batch.lines += 1
        if batch.count >= Self.batchBytes {
            handOff(batch)
        } else if !batch.flushScheduled {
            guard let loop = context.eventLoop else { return handOff(batch) }
            batch.flushScheduled = true
            loop.scheduleTask(in: Self.batchDelay) { [self] in
                batch.flushScheduled = false
                handOff(batch)
            }
        }
    }

    @inline(__always)
    private func batch() -> LineBatch {
        if let batch = slot.get() { return batch }
        let batch = LineBatch()
        batches.withLock { $0.append(batch) }
        slot.set(batch)
        return batch
    }

    private func handOff(_ batch: LineBatch) {
        guard batch.lines > 0 else { return }
        let chunk = LineChunk(bytes: Array(UnsafeBufferPointer(start: batch.memory, count: batch.count)), lines: batch.lines)
        batch.count = 0
        batch.lines = 0
        destination.deliver(chunk)
    }

    /// Hands this thread's batch over now (a server draining on each of its loops).
    public func flushCurrentThread() {
        if let batch = slot.get() { handOff(batch) }
    }
}

/// One thread's lines not yet handed over, in memory of its own (a batch plus room for the longest
/// line). Touched only by its thread.
final class LineBatch: @unchecked Sendable {
    static let capacity = AccessLog.batchBytes + AccessLogFormat.maxLineBytes + 1024
    let memory = UnsafeMutablePointer<UInt8>.allocate(capacity: LineBatch.capacity)
    var count = 0
    var lines = 0
    var flushScheduled = false
    var timestamps = TimestampCache()

    deinit { memory.deallocate() }
}

/// Every access log of the process, for a drain to flush each loop's batches.
public final class AccessLogs: Sendable {
    public static let shared = AccessLogs()
    private struct Weak { weak var log: AccessLog? }
    private let logs = Mutex<[Weak]>([])

    func register(_ log: AccessLog) {
        logs.withLock { list in
            list.removeAll { $0.log == nil }
            list.append(Weak(log: log))
        }
    }

    /// Hands over the calling thread's batches of every access log.
    public func flushCurrentThread() {
        for log in logs.withLock({ $0.compactMap(\.log) }) { log.flushCurrentThread() }
    }
}

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
            state.pendingBytes += chunk.bytes.count
            while state.pendingBytes > capacityBytes, let oldest = state.pending.popFirst() {
                state.pendingBytes -= oldest.bytes.count
                state.dropped += oldest.lines
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
            for chunk in chunks where !write(chunk.bytes) {
                state.withLock { $0.dropped += chunk.lines }
            }
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
