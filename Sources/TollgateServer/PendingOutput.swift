#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import TollgateCore

/// The socket of a channel in which the proxy's handler is the only one (no TLS): a flush finding the
/// channel's queue empty writes its bytes to the socket itself with one `send`, past the pipeline and
/// NIO's pending-writes machinery (about 2 900 instructions per write, a sixth of a proxied request).
///
/// What the kernel does not take at once goes to the channel, and so does all output from then on
/// until the channel has written it, so bytes leave in order and NIO's writability (the backpressure
/// of large bodies) sees what waits. An error (a reset peer) also goes to the channel, which meets it
/// again, closes and reports it as it would have anyway.
final class DirectSocket {
    let descriptor: CInt
    #if canImport(Darwin)
    private static var noSignal: Int32 { 0 }   // NIO sets SO_NOSIGPIPE on its sockets there
    #else
    private static var noSignal: Int32 { Int32(MSG_NOSIGNAL) }
    #endif
    /// Flushes handed to the channel and not yet written by it.
    private var inChannel = 0
    /// Writes handed to the channel and not flushed yet.
    var unflushed = false

    init(descriptor: CInt) {
        self.descriptor = descriptor
    }

    /// The socket of the handler's channel, if it has one and no other handler is in the way.
    static func of(_ context: ChannelHandlerContext, alone: Bool) -> DirectSocket? {
        guard alone,
              let handle = try? context.pipeline.syncOperations.withUnsafeTransportIfAvailable(of: NIOBSDSocket.Handle.self, { $0 }),
              handle >= 0
        else { return nil }
        return DirectSocket(descriptor: handle)
    }

    /// Nothing of this connection waits in the channel: the socket may be written directly.
    var channelIdle: Bool { inChannel == 0 && !unflushed }

    /// Sends what it can of `bytes` (whose reader index moves past it); true when all was sent. The
    /// channel must be active (its descriptor still its own): NIO marks it inactive before closing the
    /// descriptor, without calling out in between.
    @inline(__always)
    func write(_ bytes: inout ByteBuffer) -> Bool {
        let count = bytes.readableBytes
        let sent = bytes.withUnsafeReadableBytes { raw in
            send(descriptor, raw.baseAddress, count, Self.noSignal)
        }
        if sent == count { return true }
        if sent > 0 { bytes.moveReaderIndex(forwardBy: sent) }
        return false
    }

    /// Hands a flush to the channel and counts it until the channel has written it (or failed to).
    func flushThroughChannel(_ bytes: ByteBuffer?, context: ChannelHandlerContext, promise: EventLoopPromise<Void>? = nil) {
        let written = context.eventLoop.makePromise(of: Void.self)
        inChannel += 1
        unflushed = false
        written.futureResult.assumeIsolated().whenComplete { [self] _ in inChannel -= 1 }
        if let promise { written.futureResult.cascade(to: promise) }
        context.writeAndFlush(NIOAny(bytes ?? ByteBuffer()), promise: written)
    }
}

/// Small writes of one connection gathered into one buffer until the next flush point, so a head and
/// a small body leave in one write (and one iovec), instead of several trips through the pipeline.
struct PendingOutput {
    /// Body buffers up to this size are copied into the pending buffer; larger ones are written as they are.
    static let copyLimit = 4096

    /// A flushed buffer up to this capacity is kept for the next output.
    static let spareLimit = 4096

    private var buffer: ByteBuffer?
    /// The buffer last flushed, rendered into again next time. Once written (at once, for a small head
    /// on a writable socket) its storage is only ours, and `clear()` reuses it: no allocation per
    /// response. Still queued in the channel, `clear()` gives it fresh storage.
    private var spare: ByteBuffer?
    /// Set when the handler's channel is a plain socket: see `DirectSocket`.
    var socket: DirectSocket?

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
        socket?.unflushed = true
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

    /// Sends what is pending: straight to the socket when the channel holds nothing of this connection
    /// (see `DirectSocket`), else through the channel in one trip (`writeAndFlush`).
    mutating func flushOut(_ context: ChannelHandlerContext) {
        guard var pending = buffer else {
            if let socket {
                if socket.unflushed { socket.flushThroughChannel(nil, context: context) }
            } else {
                context.flush()
            }
            return
        }
        buffer = nil
        if let socket {
            if socket.channelIdle && context.channel.isActive && socket.write(&pending) {
                if pending.capacity <= Self.spareLimit { spare = pending }
                return
            }
            socket.flushThroughChannel(pending, context: context)
        } else {
            context.writeAndFlush(NIOAny(pending), promise: nil)
        }
        if pending.capacity <= Self.spareLimit { spare = pending }
    }

    /// Passes what is pending to the channel (not flushed).
    mutating func writeOut(_ context: ChannelHandlerContext) {
        guard let pending = buffer else { return }
        buffer = nil
        context.write(NIOAny(pending), promise: nil)
        socket?.unflushed = true
    }

    /// Everything pending, written and flushed through the channel; `promise` completes once the
    /// channel has written all of this connection's output.
    mutating func flushThroughChannel(_ context: ChannelHandlerContext, promise: EventLoopPromise<Void>) {
        let pending = buffer
        buffer = nil
        if let socket {
            socket.flushThroughChannel(pending, context: context, promise: promise)
        } else {
            context.writeAndFlush(NIOAny(pending ?? ByteBuffer()), promise: promise)
        }
    }
}
