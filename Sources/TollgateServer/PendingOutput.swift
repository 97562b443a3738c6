import NIOCore
import TollgateCore

/// Small writes of one connection gathered into one buffer until the next flush point, so a head and
/// a small body leave in one write (and one iovec), instead of several trips through the pipeline.
struct PendingOutput {
    /// Body buffers up to this size are copied into the pending buffer; larger ones are written as they are.
    static let copyLimit = 4096

    /// A flushed buffer up to this capacity is kept for the next output.
    static let spareLimit = 4096

    private var buffer: ByteBuffer?
    /// The buffer last flushed, rendered into again next time. Once the channel has written it (at
    /// once, for a small head on a writable socket) its storage is only ours, and `clear()` reuses it:
    /// no allocation per response. Still queued in the channel, `clear()` gives it fresh storage.
    private var spare: ByteBuffer?

    /// Renders into the pending buffer. The allocator is asked for only when there is no spare buffer
    /// (getting it from a channel costs a few hundred instructions).
    @inline(__always)
    mutating func render(_ allocator: @autoclosure () -> ByteBufferAllocator, _ body: (inout ByteBuffer) -> Void) {
        if buffer == nil {
            if var reused = spare {
                spare = nil   // the only reference besides the channel's, so that `clear()` can find it unique
                reused.clear()
                buffer = reused
            } else {
                buffer = allocator().buffer(capacity: 1024)
            }
        }
        body(&buffer!)
    }

    /// Body bytes: copied behind what is pending when small, else written after it.
    mutating func data(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        if buffer != nil && bytes.readableBytes <= Self.copyLimit {
            var bytes = bytes
            buffer!.writeBuffer(&bytes)
            return
        }
        writeOut(context)
        context.write(NIOAny(bytes), promise: nil)
    }

    /// One chunk (size line, data, CRLF); empty data is no chunk, since a zero-size chunk ends a body.
    mutating func chunk(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        guard bytes.readableBytes > 0 else { return }
        render(context.channel.allocator) { HeadWriter.writeChunkHeader(bytes.readableBytes, into: &$0) }
        data(bytes, context: context)
        render(context.channel.allocator) { $0.writeStaticString("\r\n") }
    }

    /// `0\r\n`, the trailer lines if any, and the final CRLF.
    mutating func lastChunk(_ trailers: ByteBuffer?, context: ChannelHandlerContext) {
        render(context.channel.allocator) { out in
            out.writeStaticString("0\r\n")
            if var trailers { out.writeBuffer(&trailers) }
            out.writeStaticString("\r\n")
        }
    }

    /// Passes what is pending to the channel and flushes: one trip through the pipeline
    /// (`writeAndFlush`) when something is pending, instead of a write and then a flush.
    mutating func flushOut(_ context: ChannelHandlerContext) {
        guard let pending = buffer else {
            context.flush()
            return
        }
        buffer = nil
        context.writeAndFlush(NIOAny(pending), promise: nil)
        if pending.capacity <= Self.spareLimit { spare = pending }
    }

    /// Passes what is pending to the channel (not flushed).
    mutating func writeOut(_ context: ChannelHandlerContext) {
        guard let pending = buffer else { return }
        buffer = nil
        context.write(NIOAny(pending), promise: nil)
    }
}
