import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// What a stub upstream saw of one request. Bodies are counted in full but kept only up to 1 MB, so a
/// 1 GB upload costs the stub no memory.
public struct StubRequest: Sendable {
    public var head: HTTPRequestHead
    public var body: ByteBuffer
    public var bodyLength: Int
    public var bodyString: String { String(buffer: body) }
}

/// What a stub upstream answers.
public struct StubResponse: Sendable {
    public enum Body: Sendable {
        case bytes(String)
        /// `count` bytes of 'x' written in chunks with backpressure (Content-Length set unless `chunked`).
        case stream(count: Int, chunked: Bool)
        /// Answer after a delay.
        case delayed(TimeAmount, String)
        /// Close the connection without answering.
        case close
        /// Answer 101 and echo raw bytes from then on (a WebSocket-like upgrade).
        case upgradeEcho
        /// Send 100 Continue first, then the response.
        case continueThen(String)
    }

    public var status: HTTPResponseStatus
    public var headers: HTTPHeaders
    public var body: Body

    public init(status: HTTPResponseStatus = .ok, headers: HTTPHeaders = ["content-type": "application/json"], body: Body) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func text(_ body: String, status: HTTPResponseStatus = .ok) -> StubResponse {
        StubResponse(status: status, headers: ["content-type": "text/plain"], body: .bytes(body))
    }
}

/// A small HTTP/1.1 server on 127.0.0.1 for tests and the demo: keep-alive, a responder closure,
/// streaming bodies and a few misbehaviours on demand.
public final class StubUpstream: Sendable {
    public typealias Responder = @Sendable (StubRequest) -> StubResponse

    public let channel: any Channel
    private let seen = NIOLockedValueBox<[StubRequest]>([])
    private let connectionCount = NIOLockedValueBox(0)
    private let children = NIOLockedValueBox<[any Channel]>([])

    public var port: Int { channel.localAddress!.port! }
    public var url: String { "http://127.0.0.1:\(port)" }
    public var requests: [StubRequest] { seen.withLockedValue { $0 } }
    public var connectionsAccepted: Int { connectionCount.withLockedValue { $0 } }

    /// Default answer: a JSON echo of the request (method, uri, headers, body length).
    public static let echo: Responder = { request in
        var headers: [String] = []
        for (name, value) in request.head.headers {
            headers.append("\"\(name.lowercased())\":\"\(value.replacingOccurrences(of: "\"", with: "\\\""))\"")
        }
        let body = """
            {"method":"\(request.head.method.rawValue)","uri":"\(request.head.uri)","body_length":\(request.bodyLength),\
            "headers":{\(headers.joined(separator: ","))}}
            """
        return StubResponse(body: .bytes(body))
    }

    public init(group: any EventLoopGroup, host: String = "127.0.0.1", port: Int = 0,
                responder: @escaping Responder = StubUpstream.echo) async throws {
        let seen = self.seen
        let connectionCount = self.connectionCount
        let children = self.children
        self.channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                connectionCount.withLockedValue { $0 += 1 }
                children.withLockedValue { $0.append(channel) }
                do {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: true)
                    try channel.pipeline.syncOperations.addHandler(StubHandler(responder: responder, seen: seen))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
            .bind(host: host, port: port).get()
    }

    public func close() async throws {
        try await channel.close()
    }

    /// Stops listening and closes every connection, as a crashed process would (a restarted one is a
    /// new `StubUpstream` on the same port).
    public func kill() async throws {
        try await channel.close()
        for child in children.withLockedValue({ $0 }) { try? await child.close() }
    }
}

final class StubHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let responder: StubUpstream.Responder
    let seen: NIOLockedValueBox<[StubRequest]>
    var request: StubRequest?
    var streamRemaining = 0
    var streamChunked = false
    var streaming = false

    init(responder: @escaping StubUpstream.Responder, seen: NIOLockedValueBox<[StubRequest]>) {
        self.responder = responder
        self.seen = seen
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = StubRequest(head: head, body: context.channel.allocator.buffer(capacity: 0), bodyLength: 0)
            if head.headers["expect"].first?.lowercased() == "100-continue" {
                let response = responder(request!)
                if case .continueThen = response.body {
                    context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
                }
            }
        case .body(var buffer):
            request?.bodyLength += buffer.readableBytes
            if (request?.body.readableBytes ?? 0) < 1 << 20 { request?.body.writeBuffer(&buffer) }
        case .end:
            guard let request else { return }
            self.request = nil
            seen.withLockedValue { $0.append(request) }
            respond(responder(request), to: request, context: context)
        }
    }

    private func respond(_ response: StubResponse, to request: StubRequest, context: ChannelHandlerContext) {
        var headers = response.headers
        let version = request.head.version
        switch response.body {
        case .bytes(let text), .continueThen(let text):
            headers.replaceOrAdd(name: "content-length", value: String(text.utf8.count))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: response.status, headers: headers))), promise: nil)
            if request.head.method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        case .delayed(let delay, let text):
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: delay) {
                let (handler, context) = bound.value
                handler.respond(StubResponse(status: response.status, headers: response.headers, body: .bytes(text)),
                                to: request, context: context)
            }
        case .close:
            context.close(promise: nil)
        case .stream(let count, let chunked):
            if chunked {
                headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
            } else {
                headers.replaceOrAdd(name: "content-length", value: String(count))
            }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: response.status, headers: headers))), promise: nil)
            streamRemaining = count
            streaming = true
            pump(context: context)
        case .upgradeEcho:
            headers.replaceOrAdd(name: "upgrade", value: request.head.headers["upgrade"].first ?? "websocket")
            headers.replaceOrAdd(name: "connection", value: "upgrade")
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: .switchingProtocols, headers: headers))), promise: nil)
            let sync = context.pipeline.syncOperations
            if let encoder = try? sync.handler(type: HTTPResponseEncoder.self) { sync.removeHandler(encoder, promise: nil) }
            if let validator = try? sync.handler(type: NIOHTTPResponseHeadersValidator.self) { sync.removeHandler(validator, promise: nil) }
            if let pipelining = try? sync.handler(type: HTTPServerPipelineHandler.self) { sync.removeHandler(pipelining, promise: nil) }
            if let errors = try? sync.handler(type: HTTPServerProtocolErrorHandler.self) { sync.removeHandler(errors, promise: nil) }
            try? sync.addHandler(EchoHandler(), position: .first)
            if let decoder = try? sync.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self) { sync.removeHandler(decoder, promise: nil) }
            sync.removeHandler(self, promise: nil)
            context.channel.read()
        }
    }

    /// Writes the streamed body while the channel is writable; resumes on writability.
    private func pump(context: ChannelHandlerContext) {
        let chunk = 64 * 1024
        while streamRemaining > 0 && context.channel.isWritable {
            let size = min(chunk, streamRemaining)
            streamRemaining -= size
            var buffer = context.channel.allocator.buffer(capacity: size)
            buffer.writeRepeatingByte(UInt8(ascii: "x"), count: size)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        if streamRemaining == 0 && streaming {
            streaming = false
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            context.flush()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if streaming && context.channel.isWritable { pump(context: context) }
        context.fireChannelWritabilityChanged()
    }
}

@available(*, unavailable)
extension StubHandler: Sendable {}

final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }
}

@available(*, unavailable)
extension EchoHandler: Sendable {}
