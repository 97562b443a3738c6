import HTTPTypes
import NIOCore
import NIOHTTP1
import TollgateCore

extension ProxyHandler: UpstreamOwner {
    var upstreamMayRead: Bool { channelContext?.channel.isWritable ?? false }

    func upstreamReceived(_ part: HTTPClientResponsePart) {
        guard let exchange, exchange.phase == .proxying, !exchange.switchingProtocols else { return }
        switch part {
        case .head(let head):
            responseHeadReceived(head, exchange: exchange)
        case .body(let buffer):
            exchange.bytesSent += buffer.readableBytes
            write(.body(.byteBuffer(buffer)))
            if exchange.upstreamRequestComplete { armReadTimer(exchange) }
        case .end(let trailers):
            write(.end(trailers))
            flush()
            responseFinished(exchange)
        }
    }

    func upstreamReadComplete() {
        flush()
    }

    func upstreamWritabilityChanged(_ writable: Bool) {
        if writable { resumeReadingIfPossible() }
    }

    func upstreamFailed(_ error: any Error) {
        upstreamLost()
    }

    func upstreamClosed() {
        upstreamLost()
    }

    /// The upstream connection broke before the response ended: 502 if nothing was sent yet, else the
    /// client's response is cut off by closing (it cannot be completed honestly).
    private func upstreamLost() {
        guard let exchange, exchange.phase == .proxying else { return }
        exchange.upstream = nil
        exchange.upstreamKeepAlive = false
        if exchange.responseHeadSent {
            flush()
            close()
        } else {
            exchange.keepAlive = exchange.keepAlive && exchange.requestComplete
            respondError(.badGateway, "upstream closed the connection", exchange: exchange)
        }
    }

    private func responseHeadReceived(_ upstreamHead: HTTPResponseHead, exchange: Exchange) {
        let code = upstreamHead.status.code
        if code >= 100 && code < 200 && code != 101 {
            // 100 Continue and other interim responses go to the client as they are.
            write(.head(HTTPResponseHead(version: exchange.requestHead.version, status: upstreamHead.status)))
            flush()
            return
        }
        let state = exchange.state
        var head = HTTPResponseHead(version: exchange.requestHead.version, status: upstreamHead.status)
        // A plain array, as for requests: HTTPHeaders.add re-validates every name.
        var headers: [(String, String)] = []
        headers.reserveCapacity(upstreamHead.headers.count + 5)
        let facts = HeadFacts(upstreamHead.headers, requestIDHeader: state.requestIDHeader)
        let listed = facts.connectionListed
        var via: String?
        for (name, value) in upstreamHead.headers {
            if HeaderRules.isHopByHop(name) { continue }
            if !listed.isEmpty && listed.contains(where: { $0.asciiCaseInsensitiveEquals(name) }) { continue }
            if name.caseInsensitiveEquals("via") { via = via.map { "\($0), \(value)" } ?? value; continue }
            headers.append((name, value))
        }
        headers.append(("via", via.map { "\($0), \(state.viaValue)" } ?? state.viaValue))
        if facts.requestID == nil { headers.append((state.requestIDHeader, exchange.context.requestID)) }
        if let route = exchange.route {
            for field in route.deprecationFields { headers.append((field.name.rawName, field.value)) }
        }
        exchange.upstreamKeepAlive = upstreamHead.isKeepAlive
        if code == 101 {
            guard exchange.isUpgrade else {
                exchange.upstreamKeepAlive = false
                return respondError(.badGateway, "upstream switched protocols without being asked", exchange: exchange)
            }
            headers.append(("connection", "upgrade"))
            if let upgrade = facts.upgrade { headers.append(("upgrade", upgrade)) }
        }
        head.headers = HTTPHeaders(headers)
        if let route = exchange.route, !route.chain.isEmpty {
            applyResponsePlugins(&head, chain: route.chain, exchange: exchange)
        }
        if code != 101 {
            // An HTTP/1.0 client cannot take chunks: a body of unknown length ends with the connection.
            if exchange.requestHead.version.minor == 0 && facts.contentLengths.isEmpty
                && exchange.requestHead.method != .HEAD && head.status.mayHaveResponseBody {
                exchange.keepAlive = false
            }
            addConnectionHeader(&head, exchange: exchange)
        }
        exchange.status = Int(head.status.code)
        exchange.responseHeadSent = true
        writeResponseHead(head, exchange: exchange)
        if code == 101 {
            flush()
            // The decoder still has this read's `.end` to deliver; switch once it has.
            exchange.switchingProtocols = true
            loop.eventLoop.assumeIsolated().execute { self.switchToRelay(exchange) }
        }
    }

    /// Runs response hooks on a swift-http-types copy of the head and writes the result back.
    func applyResponsePlugins(_ head: inout HTTPResponseHead, chain: FilterChain, exchange: Exchange) {
        var response = HTTPResponse(status: HTTPResponse.Status(code: Int(head.status.code), reasonPhrase: head.status.reasonPhrase),
                                    headerFields: HeaderRules.fields(head.headers))
        chain.runResponse(&response, context: &exchange.context)
        head.status = HTTPResponseStatus(statusCode: response.status.code, reasonPhrase: response.status.reasonPhrase)
        head.headers = HeaderRules.headers(response.headerFields)
    }

    /// After a 101, both connections carry opaque bytes (WebSocket): the HTTP codecs leave both
    /// pipelines and a relay copies bytes each way, with backpressure through autoRead.
    private func switchToRelay(_ exchange: Exchange) {
        guard let upstream = exchange.upstream, let upstreamChannel = upstream.channel,
              let downstreamChannel = channelContext?.channel else { return close() }
        exchange.upstream = nil
        timers.upstreamDeadline = nil
        upstream.owner = nil
        self.exchange = nil
        queued.removeAll()
        closing = true   // this handler is done; the relay owns the connection now
        do {
            try ByteRelayHandler.install(on: downstreamChannel, peer: upstreamChannel,
                                         removing: { sync in
                                             sync.removeHandler(try sync.handler(type: ResponseEncoder.self), promise: nil)
                                             return try sync.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
                                         }, alsoRemove: [self])
            try ByteRelayHandler.install(on: upstreamChannel, peer: downstreamChannel,
                                         removing: { sync in
                                             sync.removeHandler(try sync.handler(type: RequestEncoder.self), promise: nil)
                                             return try sync.handler(type: ByteToMessageHandler<HTTPResponseDecoder>.self)
                                         }, alsoRemove: [upstream])
        } catch {
            downstreamChannel.close(promise: nil)
            upstreamChannel.close(promise: nil)
        }
    }
}

/// Copies bytes to a peer channel; closing either side closes the other. Reads on this side pause
/// while the peer cannot take more.
final class ByteRelayHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let peer: any Channel

    init(peer: any Channel) {
        self.peer = peer
    }

    /// Puts a relay right after the decoder that `removing` returns (after it removed the encoder),
    /// then removes the decoder, whose buffered bytes flow into the relay, and the `alsoRemove` handlers.
    static func install(on channel: any Channel, peer: any Channel,
                        removing: (ChannelPipeline.SynchronousOperations) throws -> any RemovableChannelHandler & ChannelHandler,
                        alsoRemove: [any RemovableChannelHandler]) throws {
        let sync = channel.pipeline.syncOperations
        let decoder = try removing(sync)
        let relay = ByteRelayHandler(peer: peer)
        try sync.addHandler(relay, position: .after(decoder))
        for handler in alsoRemove { sync.removeHandler(handler, promise: nil) }
        sync.removeHandler(decoder, promise: nil)
        _ = channel.setOption(.autoRead, value: true)
        // The removed handlers may have held back a read (backpressure); start reading again.
        channel.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        peer.write(buffer, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        peer.flush()
        if !peer.isWritable { _ = context.channel.setOption(.autoRead, value: false) }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // This side drained: let the peer read again.
        if context.channel.isWritable { _ = peer.setOption(.autoRead, value: true) }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        peer.close(promise: nil)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // A half-close (client listeners allow them) ends the relay: close both sides, flushing first.
        if case .some(.inputClosed) = event as? ChannelEvent {
            peer.flush()
            peer.close(promise: nil)
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension ByteRelayHandler: Sendable {}
