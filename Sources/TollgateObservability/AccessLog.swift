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
