import NIOCore
import Synchronization
import TollgateCore

/// Formatted access-log lines on their way out: a chunk of whole lines (each ending in a newline), in
/// the very memory an event loop wrote them into. The destination calls `recycle()` once it no longer
/// needs the bytes, and the memory goes back to the pool for the next batch: a full batch's lines are
/// never copied between the loop and the file, nothing is allocated or freed for it, and the same few
/// buffers stay warm in the CPU's caches. (Small batches go as copies; a chunk that is never recycled
/// frees its memory when it goes.)
public struct LineChunk: Sendable {
    let buffer: LineBuffer
    /// Bytes in the chunk.
    public let count: Int
    public let lines: Int

    init(buffer: LineBuffer, count: Int, lines: Int) {
        self.buffer = buffer
        self.count = count
        self.lines = lines
    }

    /// A chunk holding a copy of `bytes`, in memory of its size.
    init(copying bytes: UnsafeRawBufferPointer, lines: Int) {
        let buffer = LineBuffer(capacity: bytes.count)
        if let base = bytes.baseAddress { UnsafeMutableRawPointer(buffer.memory).copyMemory(from: base, byteCount: bytes.count) }
        self.init(buffer: buffer, count: bytes.count, lines: lines)
    }

    /// A chunk holding a copy of `bytes` (tests, tools).
    public init(bytes: [UInt8], lines: Int) {
        self = bytes.withUnsafeBytes { LineChunk(copying: $0, lines: lines) }
    }

    /// The lines' bytes, valid until `recycle()`.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: buffer.memory, count: count) }

    /// Gives the memory back for reuse; the chunk must not be read after this.
    public func recycle() { LineBufferPool.shared.give(buffer) }
}

/// Memory that lines are formatted into (raw, so writing needs no uniqueness checks or growth).
/// @unchecked Sendable: one thread at a time owns it (an event loop while filling it, then the
/// destination once handed over through its lock, then the pool through its own).
final class LineBuffer: @unchecked Sendable {
    let memory: UnsafeMutablePointer<UInt8>
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        memory = .allocate(capacity: max(capacity, 1))
    }

    deinit { memory.deallocate() }
}

/// Batch buffers not in use, shared by every access log of the process. It keeps a few (one per
/// event loop and a spare is the usual need; at most 16 of about 320 KiB, touched only as far as
/// lines were written); a buffer given back beyond that is freed.
final class LineBufferPool: Sendable {
    static let shared = LineBufferPool(keep: 16)
    private let free = Mutex<[LineBuffer]>([])
    let keep: Int

    init(keep: Int) { self.keep = keep }

    /// A batch-sized buffer (`LineBatch.capacity`).
    func take() -> LineBuffer {
        free.withLock { $0.popLast() } ?? LineBuffer(capacity: LineBatch.capacity)
    }

    /// Takes a buffer back (one not of batch size, or beyond `keep`, is freed instead). A buffer
    /// given back twice is kept once: two batches must never share memory.
    func give(_ buffer: LineBuffer) {
        guard buffer.capacity == LineBatch.capacity else { return }
        free.withLock { free in
            if free.count < keep, !free.contains(where: { $0 === buffer }) { free.append(buffer) }
        }
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
/// 256 KiB or 100 ms after its first line. Only the hand-off takes a lock, once per batch, and the
/// batch's memory itself is handed over (the thread takes another buffer from the pool). Batches of
/// 256 KiB cost 2.5% less CPU per request than 64 KiB ones with the access log to a file (fewer, larger
/// writes and hand-offs; `bench/ab.sh`); 1 MiB gained nothing more.
public final class AccessLog: Sendable {
    public let format: AccessLogFormat
    public let destination: any LineDestination
    private let slot = ThreadSlot<LineBatch>()
    private let batches = Mutex<[LineBatch]>([])
    static let batchBytes = 256 << 10
    static let batchDelay = TimeAmount.milliseconds(100)

    public init(format: AccessLogFormat, destination: any LineDestination) {
        self.format = format
        self.destination = destination
        AccessLogs.shared.register(self)
    }

    /// Formats the request's line on the calling (event-loop) thread.
    public func log(context: RequestContext, summary: RequestSummary) {
        let batch = self.batch()
        var out = LineWriter(base: batch.buffer.memory, capacity: LineBatch.capacity, count: batch.count)
        format.write(context: context, summary: summary, nowMillis: batch.wallMillis(atUptime: summary.endNanos),
                     timestamps: &batch.timestamps, into: &out)
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
        let chunk: LineChunk
        if batch.count >= Self.batchBytes / 4 {
            chunk = LineChunk(buffer: batch.buffer, count: batch.count, lines: batch.lines)
            batch.buffer = LineBufferPool.shared.take()
        } else {
            // A small batch (the timer's, at low load) goes as a copy of its size and the buffer
            // stays: chunks waiting for a slow sink then hold about what their lines take, not a
            // batch buffer each.
            chunk = LineChunk(copying: UnsafeRawBufferPointer(start: batch.buffer.memory, count: batch.count), lines: batch.lines)
        }
        batch.count = 0
        batch.lines = 0
        destination.deliver(chunk)
    }

    /// Hands this thread's batch over now (a server draining on each of its loops).
    public func flushCurrentThread() {
        if let batch = slot.get() { handOff(batch) }
    }
}

/// One thread's lines not yet handed over, in a buffer from the pool (a batch plus room for the
/// longest line). Touched only by its thread.
final class LineBatch: @unchecked Sendable {
    static let capacity = AccessLog.batchBytes + AccessLogFormat.maxLineBytes + 1024
    var buffer = LineBufferPool.shared.take()
    var count = 0
    var lines = 0
    var flushScheduled = false
    var timestamps = TimestampCache()
    /// The wall clock minus the uptime clock, in nanoseconds, and when (uptime) it was read.
    private var clockOffset: Int64 = 0
    private var offsetReadAt: UInt64?

    /// Wall-clock milliseconds at an instant of the uptime clock (`NIODeadline`'s): the offset
    /// between the two clocks is read once a second, not once a line, so a stepped wall clock shows
    /// within a second.
    func wallMillis(atUptime uptime: UInt64) -> Int64 {
        if offsetReadAt.map({ uptime < $0 || uptime - $0 >= 1_000_000_000 }) ?? true {
            let now = NIODeadline.now().uptimeNanoseconds
            clockOffset = Int64(bitPattern: WallClock.nanoseconds()) &- Int64(bitPattern: now)
            offsetReadAt = now
        }
        return (Int64(bitPattern: uptime) &+ clockOffset) / 1_000_000
    }

    deinit { LineBufferPool.shared.give(buffer) }
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
