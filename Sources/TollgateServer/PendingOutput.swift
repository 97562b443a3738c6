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

    /// A buffer that grew past this capacity is let go once flushed, rather than kept for the next output.
    static let spareLimit = 4096

    /// What is pending: its readable bytes (none: nothing pending). The same buffer takes every output
    /// of the connection, so the usual path neither copies nor retains it: written to the socket at
    /// once, its storage is only ours and `clear()` reuses it (no allocation per response). Handed to
    /// the channel instead, `clear()` finds the storage shared and gives the buffer fresh storage.
    private var buffer = ByteBuffer()
    /// Set when the handler's channel is a plain socket: see `DirectSocket`.
    var socket: DirectSocket?

    /// Renders into the pending buffer. The allocator is asked for only when the buffer has no storage
    /// yet (getting it from a channel costs a few hundred instructions).
    @inline(__always)
    mutating func render(_ allocator: @autoclosure () -> ByteBufferAllocator, _ body: (inout ByteBuffer) -> Void) {
        if buffer.capacity == 0 { buffer = allocator().buffer(capacity: 1024) }
        body(&buffer)
    }

    /// Body bytes: copied behind what is pending when small, else written after it.
    mutating func data(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        if buffer.readableBytes > 0 && bytes.readableBytes <= Self.copyLimit {
            var bytes = bytes
            buffer.writeBuffer(&bytes)
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
        guard buffer.readableBytes > 0 else {
            if let socket {
                if socket.unflushed { socket.flushThroughChannel(nil, context: context) }
            } else {
                context.flush()
            }
            return
        }
        if let socket {
            if socket.channelIdle && context.channel.isActive && socket.write(&buffer) {
                reuse()
                return
            }
            socket.flushThroughChannel(buffer, context: context)
        } else {
            context.writeAndFlush(NIOAny(buffer), promise: nil)
        }
        reuse()
    }

    /// Passes what is pending to the channel (not flushed).
    mutating func writeOut(_ context: ChannelHandlerContext) {
        guard buffer.readableBytes > 0 else { return }
        context.write(NIOAny(buffer), promise: nil)
        reuse()
        socket?.unflushed = true
    }

    /// Everything pending, written and flushed through the channel; `promise` completes once the
    /// channel has written all of this connection's output.
    mutating func flushThroughChannel(_ context: ChannelHandlerContext, promise: EventLoopPromise<Void>) {
        let pending: ByteBuffer? = buffer.readableBytes > 0 ? buffer : nil
        if pending != nil { reuse() }
        if let socket {
            socket.flushThroughChannel(pending, context: context, promise: promise)
        } else {
            context.writeAndFlush(NIOAny(pending ?? ByteBuffer()), promise: promise)
        }
    }

    /// Empties the buffer for the next output: its storage kept when small (fresh storage if the
    /// channel still holds the old), else let go.
    @inline(__always)
    private mutating func reuse() {
        if buffer.capacity <= Self.spareLimit { buffer.clear() } else { buffer = ByteBuffer() }
    }
}
