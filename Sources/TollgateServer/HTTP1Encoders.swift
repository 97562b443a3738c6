import NIOCore
import NIOHTTP1

/// Renders a head into one String and writes it with a single copy. NIO's encoders write each name,
/// separator and value separately, each copy paying ByteBuffer's exclusivity checks: about a sixth of
/// the proxy's instructions per request under callgrind.
enum HeadRenderer {
    /// The head as one buffer of exactly its size.
    static func render(startLine: String, headers: HTTPHeaders, extra: (String, String)? = nil,
                       allocator: ByteBufferAllocator) -> ByteBuffer {
        var total = startLine.utf8.count + 2
        for (name, value) in headers { total += name.utf8.count + value.utf8.count + 4 }
        if let (name, value) = extra { total += name.utf8.count + value.utf8.count + 4 }
        var buffer = allocator.buffer(capacity: total)
        render(startLine: startLine, headers: headers, extra: extra, total: total, into: &buffer)
        return buffer
    }

    static func render(startLine: String, headers: HTTPHeaders, extra: (String, String)?, total: Int,
                       into buffer: inout ByteBuffer) {
        // One reservation and one unchecked copy loop: no per-piece ByteBuffer or String appends.
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { memory in
            var offset = 0
            func put(_ text: String) {
                var text = text
                text.withUTF8 { bytes in
                    UnsafeMutableRawBufferPointer(rebasing: memory[offset..<offset + bytes.count]).copyMemory(from: UnsafeRawBufferPointer(bytes))
                    offset += bytes.count
                }
            }
            func put(_ a: UInt8, _ b: UInt8) {
                memory[offset] = a
                memory[offset + 1] = b
                offset += 2
            }
            put(startLine)
            for (name, value) in headers {
                put(name)
                put(UInt8(ascii: ":"), UInt8(ascii: " "))
                put(value)
                put(13, 10)
            }
            if let (name, value) = extra {
                put(name)
                put(UInt8(ascii: ":"), UInt8(ascii: " "))
                put(value)
                put(13, 10)
            }
            put(13, 10)
            return offset
        }
    }

    static func statusLine(_ head: HTTPResponseHead) -> String {
        "HTTP/\(head.version.major).\(head.version.minor) \(head.status.code) \(head.status.reasonPhrase)\r\n"
    }

    static func writeChunkHeader(_ length: Int, into buffer: inout ByteBuffer) {
        buffer.writeString(String(length, radix: 16))
        buffer.writeStaticString("\r\n")
    }
}

/// Writes one chunk (size line, data, CRLF) on behalf of either encoder; empty data is no chunk,
/// since a zero-size chunk would end the body.
private func writeChunk(_ bytes: ByteBuffer, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
    guard bytes.readableBytes > 0 else {
        promise?.succeed(())
        return
    }
    var header = context.channel.allocator.buffer(capacity: 12)
    HeadRenderer.writeChunkHeader(bytes.readableBytes, into: &header)
    context.write(NIOAny(header), promise: nil)
    context.write(NIOAny(bytes), promise: nil)
    context.write(NIOAny(ByteBuffer(staticString: "\r\n")), promise: promise)
}

/// `0\r\n` plus trailers (or none) and the final CRLF.
func lastChunk(_ trailers: HTTPHeaders?, allocator: ByteBufferAllocator) -> ByteBuffer {
    guard let trailers, !trailers.isEmpty else { return ByteBuffer(staticString: "0\r\n\r\n") }
    return HeadRenderer.render(startLine: "0\r\n", headers: trailers, allocator: allocator)
}

/// How a message body is delimited on the wire.
enum BodyFraming {
    case none
    case length
    case chunked
    case untilClose
}

/// The downstream encoder. Frames responses from their own headers (Content-Length, else chunked on
/// HTTP/1.1, else until close); the proxy handler says, before each head, whether the request was a
/// HEAD (no body may follow, framing headers stay as they are).
final class ResponseEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = ByteBuffer

    private var framing = BodyFraming.none
    /// Set by the proxy handler for the response about to be written.
    var respondingToHead = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head):
            let code = head.status.code
            if head.version.minor == 0 && head.headers.contains(name: "transfer-encoding") {
                head.headers.remove(name: "transfer-encoding")   // HTTP/1.0 has no chunks: until close
            }
            var extra: (String, String)?
            if code < 200 && code != 101 {
                framing = .none   // interim response: another head follows
            } else if respondingToHead || !head.status.mayHaveResponseBody {
                framing = .none
            } else if head.headers.contains(name: "content-length") {
                framing = .length
            } else if head.headers.contains(name: "transfer-encoding") {
                framing = .chunked
            } else if head.version.major == 1 && head.version.minor >= 1 {
                framing = .chunked
                extra = ("transfer-encoding", "chunked")
            } else {
                framing = .untilClose
            }
            let buffer = HeadRenderer.render(startLine: HeadRenderer.statusLine(head), headers: head.headers, extra: extra,
                                             allocator: context.channel.allocator)
            context.write(wrapOutboundOut(buffer), promise: promise)
        case .body(let body):
            writeBody(body, context: context, promise: promise)
        case .end(let trailers):
            writeEnd(trailers, context: context, promise: promise)
        }
    }

    private func writeBody(_ body: IOData, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        guard case .byteBuffer(let bytes) = body else {
            context.write(NIOAny(body), promise: promise)   // file regions are never produced by the proxy
            return
        }
        switch framing {
        case .none:
            promise?.succeed(())
        case .length, .untilClose:
            context.write(wrapOutboundOut(bytes), promise: promise)
        case .chunked:
            writeChunk(bytes, context: context, promise: promise)
        }
    }

    private func writeEnd(_ trailers: HTTPHeaders?, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        defer { framing = .none }
        guard case .chunked = framing else {
            promise?.succeed(())
            return
        }
        context.write(wrapOutboundOut(lastChunk(trailers, allocator: context.channel.allocator)), promise: promise)
    }
}

@available(*, unavailable)
extension ResponseEncoder: Sendable {}

/// The upstream encoder. The proxy forwards the client's own framing (Content-Length or chunked)
/// upstream, so requests are framed from their headers alone.
final class RequestEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = ByteBuffer

    private var chunked = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            chunked = !head.headers.contains(name: "content-length") && head.headers.contains(name: "transfer-encoding")
            let startLine = "\(head.method.rawValue) \(head.uri) HTTP/\(head.version.major).\(head.version.minor)\r\n"
            let buffer = HeadRenderer.render(startLine: startLine, headers: head.headers, allocator: context.channel.allocator)
            context.write(wrapOutboundOut(buffer), promise: promise)
        case .body(.byteBuffer(let bytes)):
            if chunked {
                writeChunk(bytes, context: context, promise: promise)
            } else {
                context.write(wrapOutboundOut(bytes), promise: promise)
            }
        case .body(let other):
            context.write(NIOAny(other), promise: promise)
        case .end(let trailers):
            guard chunked else { promise?.succeed(()); return }
            context.write(wrapOutboundOut(lastChunk(trailers, allocator: context.channel.allocator)), promise: promise)
        }
    }
}

@available(*, unavailable)
extension RequestEncoder: Sendable {}
