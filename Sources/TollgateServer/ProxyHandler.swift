import HTTPTypes
import NIOCore
import NIOHTTP1
import TollgateCore

/// The downstream side of one client connection: parses nothing itself (NIO's codec does), runs one
/// exchange at a time (pipelined requests wait in order), streams bodies both ways with backpressure,
/// and enforces the connection's timeouts.
final class ProxyHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    let loop: LoopContext
    var channelContext: ChannelHandlerContext?
    var exchange: Exchange?
    /// Parts of pipelined requests that arrived while an earlier one was in flight.
    var queued = CircularBuffer<HTTPServerRequestPart>()
    private var pendingRead = false
    var draining = false
    var closing = false
    var clientIP = "unknown"
    /// `for=...;proto=http`, the start of this connection's RFC 7239 element (the peer never changes).
    var forwardedElement = "for=unknown;proto=http"
    var timers = ConnectionTimers()
    var waitingForHead = true
    var headTimerArmed = false
    var wroteUpstreamSinceFlush = false

    /// This connection's response encoder, told before each head whether it answers a HEAD.
    let encoder: ResponseEncoder

    init(loop: LoopContext, encoder: ResponseEncoder) {
        self.loop = loop
        self.encoder = encoder
    }

    var limits: LimitsConfig { loop.state.snapshot.config.limits }

    // MARK: channel events

    func handlerAdded(context: ChannelHandlerContext) {
        channelContext = context
        if let address = context.channel.remoteAddress?.ipAddress {
            clientIP = address
            let node = address.utf8.contains(UInt8(ascii: ":")) ? "\"[\(address)]\"" : address
            forwardedElement = "for=\(node);proto=http"
        }
        if context.channel.isActive { armConnectionTimer(headerPhase: true) }
    }

    func channelActive(context: ChannelHandlerContext) {
        armConnectionTimer(headerPhase: true)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timers.cancel()
        channelContext = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        dispatch(unwrapInboundIn(data))
    }

    /// Routes one part to the exchange it belongs to, or queues it behind the one in flight.
    func dispatch(_ part: HTTPServerRequestPart) {
        guard !closing else { return }
        if !queued.isEmpty || (exchange != nil && exchange!.requestComplete) {
            queued.append(part)
            return
        }
        process(part)
    }

    private func process(_ part: HTTPServerRequestPart) {
        switch part {
        case .head(let head):
            if exchange != nil {   // cannot happen with a well-behaved decoder; be safe
                queued.append(part)
                return
            }
            requestHeadReceived(head)
        case .body(let buffer):
            exchange.map { requestBodyReceived(buffer, exchange: $0) }
        case .end(let trailers):
            exchange.map { requestEndReceived(trailers, exchange: $0) }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // The decoder passes on every completed socket read, even one that yielded no message: so a
        // head that has started arriving is noticed here, without a handler in front of the decoder.
        bytesArrived()
        if wroteUpstreamSinceFlush {
            wroteUpstreamSinceFlush = false
            exchange?.upstream?.flush()
        }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { exchange?.upstream?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        timers.cancel()
        if let exchange {
            if let upstream = exchange.upstream {
                // The client went away mid-exchange: the upstream stream is out of step, drop it.
                exchange.upstream = nil
                upstream.owner = nil
                upstream.close()
            }
            self.exchange = nil
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let parserError = error as? HTTPParserError {
            let status: HTTPResponseStatus
            switch parserError {
            case .headerOverflow: status = .requestHeaderFieldsTooLarge
            default: status = .badRequest
            }
            failConnection(status: status, message: Self.describe(parserError))
            return
        }
        // I/O errors (reset by peer): nothing to answer.
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is DrainEvent {
            draining = true
            if exchange == nil && queued.isEmpty { close() }
            return
        }
        if case ChannelEvent.inputClosed = event as? ChannelEvent ?? .outputClosed {
            // Half-close: finish what is in flight, then close.
            draining = true
            if exchange == nil && queued.isEmpty { close() }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: read gating (backpressure)

    func read(context: ChannelHandlerContext) {
        if mayRead {
            context.read()
        } else {
            pendingRead = true
        }
    }

    /// Reads stop while a request waits for its response (bounding pipelined input), while body parts
    /// wait for an upstream connection, and while the upstream cannot take more.
    private var mayRead: Bool {
        guard let exchange else { return queued.isEmpty }
        if exchange.requestComplete { return false }
        switch exchange.phase {
        case .preparing, .connecting: return exchange.pendingBody.count < 4
        case .proxying: return exchange.upstream?.isWritable ?? true
        case .responded: return true
        }
    }

    func resumeReadingIfPossible() {
        guard pendingRead, mayRead, let context = channelContext else { return }
        pendingRead = false
        context.read()
    }

    // MARK: writing responses

    func write(_ part: HTTPServerResponsePart) {
        channelContext?.write(wrapOutboundOut(part), promise: nil)
    }

    /// Writes a final response head; a HEAD request's response gets no body on the wire.
    func writeResponseHead(_ head: HTTPResponseHead, exchange: Exchange?) {
        encoder.respondingToHead = exchange?.requestHead.method == .HEAD
        write(.head(head))
    }

    func flush() {
        channelContext?.flush()
    }

    func close() {
        guard !closing else { return }
        closing = true
        channelContext?.close(promise: nil)
    }

    /// A response made by the gateway. Closes the connection afterwards when the request body cannot be
    /// cheaply skipped.
    func respondLocally(_ response: LocalResponse, exchange: Exchange) {
        guard !exchange.responseHeadSent else {
            close()
            return
        }
        var headers = HTTPHeaders()
        for field in response.headerFields { headers.add(name: field.name.rawName, value: field.value) }
        var body = channelContext?.channel.allocator.buffer(capacity: response.body.utf8.count) ?? ByteBuffer()
        body.writeString(response.body)
        headers.replaceOrAdd(name: "content-length", value: String(body.readableBytes))
        let state = exchange.state
        headers.replaceOrAdd(name: state.snapshot.config.server.requestIDHeader.rawName, value: exchange.context.requestID)
        if !exchange.requestComplete && !exchange.remainingBodyIsSmall { exchange.keepAlive = false }
        var head = HTTPResponseHead(version: exchange.requestHead.version,
                                    status: HTTPResponseStatus(statusCode: response.status.code,
                                                               reasonPhrase: response.status.reasonPhrase),
                                    headers: headers)
        if let route = exchange.route, !route.chain.isEmpty {
            applyResponsePlugins(&head, chain: route.chain, exchange: exchange)
        }
        addConnectionHeader(&head, exchange: exchange)
        exchange.status = Int(head.status.code)
        exchange.responseHeadSent = true
        exchange.bytesSent = body.readableBytes
        writeResponseHead(head, exchange: exchange)
        write(.body(.byteBuffer(body)))
        write(.end(nil))
        flush()
        responseFinished(exchange)
    }

    func respondError(_ status: HTTPResponse.Status, _ message: String, exchange: Exchange,
                      extra: [(String, String)] = []) {
        exchange.errorReason = message
        respondLocally(.error(status, message, requestID: exchange.context.requestID, extra: extra), exchange: exchange)
    }

    func addConnectionHeader(_ head: inout HTTPResponseHead, exchange: Exchange) {
        if draining { exchange.keepAlive = false }
        if !exchange.keepAlive {
            head.headers.replaceOrAdd(name: "connection", value: "close")
        } else if exchange.requestHead.version.major == 1 && exchange.requestHead.version.minor == 0 {
            head.headers.replaceOrAdd(name: "connection", value: "keep-alive")
        }
    }

    /// An error before any exchange could be formed (unparseable bytes): answer once and close.
    func failConnection(status: HTTPResponseStatus, message: String) {
        guard !closing else { return }
        if let exchange, exchange.responseHeadSent {
            close()
            return
        }
        let requestID = exchange?.context.requestID ?? loop.makeRequestID()
        if let exchange {
            timers.upstreamDeadline = nil
            if let upstream = exchange.upstream {
                exchange.upstream = nil
                upstream.close()
            }
        }
        let body = LocalResponse.error(HTTPResponse.Status(code: Int(status.code)), message, requestID: requestID).body
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        headers.add(name: "content-length", value: String(body.utf8.count))
        headers.add(name: "connection", value: "close")
        headers.add(name: loop.state.snapshot.config.server.requestIDHeader.rawName, value: requestID)
        writeResponseHead(HTTPResponseHead(version: .http1_1, status: status, headers: headers), exchange: exchange)
        write(.body(.byteBuffer(ByteBuffer(string: body))))
        write(.end(nil))
        flush()
        exchange = nil
        close()
    }

    // MARK: finishing

    /// The response is fully written. The exchange ends when the request is complete too.
    func responseFinished(_ exchange: Exchange) {
        exchange.phase = .responded
        timers.upstreamDeadline = nil
        if let upstream = exchange.upstream {
            exchange.upstream = nil
            let reusable = exchange.upstreamKeepAlive && exchange.upstreamRequestComplete && !exchange.isUpgrade
            loop.pool.release(upstream, reusable: reusable, maxIdle: exchange.service?.config.maxIdlePerTarget ?? 0)
        }
        if let route = exchange.route, !route.chain.isEmpty {
            let now = NIODeadline.now().uptimeNanoseconds
            route.chain.runLog(context: exchange.context, summary: RequestSummary(
                status: exchange.status, bytesReceived: exchange.requestBodyBytes, bytesSent: exchange.bytesSent,
                startNanos: exchange.context.startNanos, endNanos: now, upstream: exchange.target?.authority,
                errorReason: exchange.errorReason))
        }
        if !exchange.keepAlive {
            close()
            return
        }
        if exchange.requestComplete { exchangeFinished() } else { resumeReadingIfPossible() }
    }

    /// Both directions are done: take the next pipelined request, or wait for one.
    func exchangeFinished() {
        exchange = nil
        if draining && queued.isEmpty {
            close()
            return
        }
        armConnectionTimer(headerPhase: false)
        // Feed queued parts until a request is complete again (its response then frees the rest).
        while !closing, let part = queued.first, !(exchange?.requestComplete ?? false) {
            queued.removeFirst()
            process(part)
        }
        if exchange == nil && !closing && draining {
            close()
            return
        }
        if exchange != nil && wroteUpstreamSinceFlush {
            wroteUpstreamSinceFlush = false
            exchange?.upstream?.flush()
        }
        resumeReadingIfPossible()
    }

    static func describe(_ error: HTTPParserError) -> String {
        switch error {
        case .headerOverflow: return "request header section too large"
        case .invalidHeaderToken: return "malformed header"
        case .invalidContentLength, .unexpectedContentLength: return "invalid Content-Length"
        case .invalidMethod: return "invalid method"
        case .invalidURL: return "invalid request target"
        case .invalidVersion: return "invalid HTTP version"
        case .invalidChunkSize: return "invalid chunk size"
        default: return "malformed request"
        }
    }
}

@available(*, unavailable)
extension ProxyHandler: Sendable {}

/// Sent through a connection's pipeline when the server drains.
struct DrainEvent {}
