#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import HTTPTypes
import NIOCore
import TollgateCore

/// The downstream side of one client connection, the only handler in its pipeline: parses request
/// heads and bodies from the bytes (`HeadParser`, `BodyDecoder`), runs one exchange at a time
/// (pipelined requests wait, unparsed, in the inbound buffer), streams bodies both ways with
/// backpressure, relays bytes after a protocol switch, and enforces the connection's timeouts.
final class ProxyHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let loop: LoopContext
    var channelContext: ChannelHandlerContext?
    var exchange: Exchange?
    /// Bytes read and not yet parsed: the rest of a body, or the next (pipelined) request.
    var inbound: ByteBuffer
    /// How many buffered bytes were searched for a line end without finding one (while waiting for a head).
    private var headScanned = 0
    /// Request heads are parsed into this one value (its field array is reused).
    private var head = RawHead()
    private var processing = false
    /// After a 101: the upstream connection bytes are relayed to and from.
    var relayPeer: UpstreamConnection?
    private var pendingRead = false
    var draining = false
    var closing = false
    var output = PendingOutput()
    var clientIP = "unknown"
    /// `for=...;proto=http`, the start of this connection's RFC 7239 element (the peer never changes).
    var forwardedElement = "for=unknown;proto=http"
    var timers = ConnectionTimers()
    var waitingForHead = true
    var headTimerArmed = false
    var wroteUpstreamSinceFlush = false
    /// Where response hooks write the header lines they add (`HeaderLines`), kept from one response to
    /// the next so writing them allocates nothing.
    var headerLineScratch: ByteBuffer?
    /// The client connection's writability, kept from channel events (asking the channel each time costs).
    var isWritable = true
    /// This connection's forwarding values, built once per snapshot.
    private var forwardingCache: (state: ServerState, values: ForwardingValues)?

    private static let empty = ByteBuffer()
    /// Unparsed bytes (pipelined requests) buffered behind the request in flight before reads pause.
    static let maxPipelinedBytes = 64 << 10

    /// Behind a TLS handler (an HTTPS listener).
    let tls: Bool
    /// The client's certificate, read once per connection (nil: none, or not read yet).
    var clientCertificate: ClientCertificate?
    var clientCertificateRead = false

    init(loop: LoopContext, tls: Bool = false) {
        self.loop = loop
        self.tls = tls
        self.inbound = Self.empty
    }

    /// What this connection adds to forwarded requests (X-Forwarded-For, Forwarded, Via...).
    func forwardingValues(_ state: ServerState) -> ForwardingValues {
        if let cache = forwardingCache, cache.state === state { return cache.values }
        let values = ForwardingValues(clientIP: clientIP, forwardedElement: forwardedElement, via: state.viaValue,
                                      requestIDName: state.requestIDHeader, proto: tls ? "https" : "http")
        forwardingCache = (state, values)
        return values
    }

    // MARK: channel events

    func handlerAdded(context: ChannelHandlerContext) {
        channelContext = context
        output.socket = DirectSocket.of(context, alone: !tls)
        if let address = context.channel.remoteAddress?.ipAddress {
            clientIP = address
            let node = address.utf8.contains(UInt8(ascii: ":")) ? "\"[\(address)]\"" : address
            forwardedElement = "for=\(node);proto=\(tls ? "https" : "http")"
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
        var buffer = unwrapInboundIn(data)
        if let relayPeer {
            relayPeer.writeRaw(buffer)
            return
        }
        guard !closing else { return }
        if inbound.readableBytes == 0 {
            inbound = buffer
        } else {
            inbound.writeBuffer(&buffer)
        }
        processInbound()
    }

    /// Parses what is buffered for as long as the current exchange can take it: a head when none is in
    /// flight, else its body. Stops at a complete request (the next one waits for its response).
    func processInbound() {
        guard !processing else { return }   // re-entered from a response finishing inside the loop
        processing = true
        defer {
            processing = false
            if inbound.readableBytes == 0 { inbound = Self.empty }
        }
        while !closing && relayPeer == nil {
            if let exchange {
                if exchange.requestComplete { return }
                let event: BodyEvent?
                do {
                    event = try exchange.body.next(&inbound)
                } catch {
                    exchange.requestComplete = true
                    exchange.keepAlive = false
                    if exchange.responseHeadSent { return close() }
                    return failConnection(status: .badRequest, message: "invalid chunked body")
                }
                switch consume event {   // consumed: see UpstreamConnection.process
                case .data(let bytes)?: requestBodyReceived(bytes, exchange: exchange)
                case .end(let trailers)?: requestEndReceived(trailers, exchange: exchange)
                case nil: return
                }
            } else {
                guard inbound.readableBytes > 0, let parser = headParserIfLineEnded() else { return }
                switch parser.parse(inbound, into: &head) {
                case .incomplete:
                    headScanned = inbound.readableBytes
                    if inbound.readableBytes > parser.maxHeadBytes {
                        return failConnection(status: .requestHeaderFieldsTooLarge, message: "request head too large")
                    }
                    return
                case .failed(let error):
                    return failConnection(status: HTTPResponse.Status(code: error.status), message: error.message)
                case .complete(let consumed):
                    inbound.moveReaderIndex(forwardBy: consumed)
                    headScanned = 0
                    requestHeadReceived(&head)
                }
            }
        }
    }

    /// The parser, when a line end arrived since the last attempt (a head trickling in byte by byte is
    /// not parsed again per byte) or the buffer outgrew every limit (so the parser names the error).
    private func headParserIfLineEnded() -> HeadParser? {
        let parser = loop.state.requestParser
        let readable = inbound.readableBytes
        if readable > parser.maxHeadBytes { return parser }
        let from = min(headScanned, readable)
        let found = inbound.withUnsafeReadableBytes { p in
            memchr(p.baseAddress! + from, 10, readable - from) != nil
        }
        if !found { headScanned = readable }
        return found ? parser : nil
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Not passed on: this is the pipeline's last handler (the tail would drop it, one more hop).
        if let relayPeer {
            relayPeer.flush()
            return
        }
        // A head that has started arriving is noticed here.
        bytesArrived()
        if wroteUpstreamSinceFlush {
            wroteUpstreamSinceFlush = false
            exchange?.upstreamConnection?.flush()
        }
        // The next read is asked for from here, past the pipeline's tail and this handler's `read`
        // (NIO asks for one after every read completes, unless one is pending already). When reads
        // must pause, NIO's own request reaches `read(context:)`, which holds it back.
        if mayRead { context.read() }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        isWritable = context.channel.isWritable
        clientWritabilityChangedWhileReading()
        if isWritable {
            exchange?.upstreamConnection?.resumeReading()
            relayPeer?.resumeReading()
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        timers.cancel()
        if let relayPeer {
            self.relayPeer = nil
            relayPeer.owner = nil
            relayPeer.close()
        }
        if let exchange {
            if let upstream = exchange.upstreamConnection {
                // The client went away mid-exchange: the upstream stream is out of step, drop it.
                exchange.upstreamConnection = nil
                upstream.owner = nil
                upstream.close()
            }
            finishCounting(exchange)
            releaseLimits(exchange)
            if exchange.failureReason == nil && !exchange.responseHeadSent { exchange.failureReason = "client closed the connection" }
            runLogPhase(exchange)
            self.exchange = nil
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // I/O errors (reset by peer): nothing to answer.
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is DrainEvent {
            if relayPeer != nil { return }   // a relayed connection ends with its peers (or the drain timeout)
            draining = true
            if exchange == nil { close() }
            return
        }
        if case ChannelEvent.inputClosed = event as? ChannelEvent ?? .outputClosed {
            if let relayPeer {
                relayPeer.flush()
                relayPeer.close()
                close()
                return
            }
            // Half-close: finish what is in flight, then close.
            draining = true
            if exchange == nil { close() }
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

    /// Reads stop when pipelined requests pile up behind the one in flight, while body parts wait for
    /// an upstream connection, and while the upstream cannot take more. A client that simply waits for
    /// its response is not paused: pausing and resuming would cost two `epoll_ctl` calls per request.
    private var mayRead: Bool {
        if let relayPeer { return relayPeer.isWritable }
        guard let exchange else { return true }
        if exchange.requestComplete { return inbound.readableBytes < Self.maxPipelinedBytes }
        switch exchange.phase {
        case .preparing, .connecting: return exchange.bodyWaiter != nil || exchange.pendingBody.count < 4
        case .proxying: return exchange.upstreamConnection?.isWritable ?? true
        case .responded: return true
        }
    }

    internal func resumeReadingIfPossible() {
        guard pendingRead, mayRead, let context = channelContext else { return }
        pendingRead = false
        context.read()
    }

    // MARK: writing responses

    func flush() {
        guard let context = channelContext else { return }
        output.flushOut(context)
    }

    /// Closes once everything written so far has reached the socket: NIO's close fails the writes
    /// still queued (a client reading slowly would lose the end of its response). A client that stops
    /// reading altogether is closed anyway after the idle timeout.
    func close() {
        guard !closing else { return }
        closing = true
        guard let context = channelContext else { return }
        let written = context.eventLoop.makePromise(of: Void.self)
        output.flushThroughChannel(context, promise: written)
        let channel = context.channel
        let deadline = context.eventLoop.scheduleTask(in: loop.state.idleTimeout) {
            channel.close(promise: nil)
        }
        written.futureResult.whenComplete { _ in
            deadline.cancel()
            channel.close(promise: nil)
        }
    }

    /// The Connection header of a response, and whether the connection stays open after it.
    func connectionHeader(_ exchange: Exchange) -> ConnectionHeader {
        if draining { exchange.keepAlive = false }
        if !exchange.keepAlive { return .close }
        return exchange.clientMinorVersion == 0 ? .keepAlive : .none
    }

    /// A response made by the gateway. Closes the connection afterwards when the request body cannot be
    /// cheaply skipped.
    func respondLocally(_ response: LocalResponse, exchange: Exchange, from pluginIndex: Int = -1) {
        guard !exchange.responseHeadSent, let context = channelContext else {
            close()
            return
        }
        if let base = response.base, let route = exchange.route, route.chain.othersOnlyAddFields(besides: pluginIndex) {
            return respondPrerendered(response, base: base.rendered, exchange: exchange, route: route, from: pluginIndex)
        }
        var fields = response.headerFields
        if let base = response.base {
            var all = base.fields
            all.append(contentsOf: fields)
            fields = all
        }
        var body = response.payload ?? context.channel.allocator.buffer(string: response.body)
        // Appended where absent (setting looks for and removes existing ones first).
        let length = String(body.readableBytes)
        if fields.contains(.contentLength) {
            fields[.contentLength] = length
        } else {
            fields.append(HTTPField(name: .contentLength, value: length))
        }
        if let name = exchange.state.requestIDFieldName {
            if fields.contains(name) {
                fields[name] = exchange.context.requestID
            } else {
                fields.append(HTTPField(name: name, value: exchange.context.requestID))
            }
        }
        if !exchange.requestComplete && !exchange.remainingBodyIsSmall { exchange.keepAlive = false }
        var status = response.status
        if let route = exchange.route, !route.chain.isEmpty {
            var message = HTTPResponse(status: status, headerFields: fields)
            route.chain.runResponse(&message, context: &exchange.context)
            status = message.status
            fields = message.headerFields
            if !exchange.context.responseFilters.isEmpty {
                // The whole body is here: it passes the filters at once, and its length is known.
                body = exchange.context.responseFilters.transform(body, allocator: context.channel.allocator)
                exchange.context.responseFilters = []
                fields[.transferEncoding] = nil
                if fields[.contentLength] != nil || !exchange.isHeadRequest { fields[.contentLength] = String(body.readableBytes) }
            }
        }
        if status.code == 304 || status.code == 204 { fields[.contentLength] = nil }
        let connection = connectionHeader(exchange)
        exchange.responseStatus = status.code
        exchange.responseHeadSent = true
        let withBody = !exchange.isHeadRequest && status.code != 204 && status.code != 304
        exchange.responseBytes = withBody ? body.readableBytes : 0
        output.render(context.channel.allocator) { out in
            HeadWriter.writeResponse(minorVersion: exchange.clientMinorVersion, status: status, fields: fields,
                                     addChunked: false, connection: connection, into: &out)
        }
        if withBody { output.data(body, context: context) }
        flush()
        responseFinished(exchange)
    }

    /// A plugin's answer whose fields were rendered before (a cache hit): the lines are written as
    /// they are, followed by what the response hooks of the other plugins add (they only add).
    private func respondPrerendered(_ response: LocalResponse, base: ByteBuffer, exchange: Exchange, route: CompiledRoute,
                                    from pluginIndex: Int) {
        guard let context = channelContext else { return }
        var added = Array(response.headerFields)
        added += route.chain.responseFieldsToAdd(context: &exchange.context, besides: pluginIndex)
        let requestID = exchange.state.requestIDFieldName.map { ($0.rawName, exchange.context.id) }
        if !exchange.requestComplete && !exchange.remainingBodyIsSmall { exchange.keepAlive = false }
        let status = response.status
        let body = response.payload ?? context.channel.allocator.buffer(string: response.body)
        let noBody = status.code == 304 || status.code == 204
        let connection = connectionHeader(exchange)
        exchange.responseStatus = status.code
        exchange.responseHeadSent = true
        let withBody = !exchange.isHeadRequest && !noBody
        exchange.responseBytes = withBody ? body.readableBytes : 0
        output.render(context.channel.allocator) { out in
            HeadWriter.writeResponse(minorVersion: exchange.clientMinorVersion, status: status, rendered: base, fields: added,
                                     contentLength: noBody ? nil : body.readableBytes, requestID: requestID,
                                     connection: connection, into: &out)
        }
        if withBody { output.data(body, context: context) }
        flush()
        responseFinished(exchange)
    }

    func respondError(_ status: HTTPResponse.Status, _ message: String, exchange: Exchange,
                      extra: [(String, String)] = []) {
        exchange.failureReason = message
        if status.code >= 500 {
            loop.logger.warning("request failed", metadata: [
                "request_id": "\(exchange.context.requestID)", "route": "\(exchange.route?.name ?? "-")",
                "service": "\(exchange.service?.config.name ?? "-")", "target": "\(exchange.resolvedTarget?.authority ?? "-")",
                "status": "\(status.code)", "error": "\(message)",
            ])
        }
        respondLocally(.error(status, message, requestID: exchange.context.requestID, extra: extra), exchange: exchange)
    }

    /// An error outside an answerable exchange (unparseable bytes, a timeout reading the head): answer
    /// once and close.
    func failConnection(status: HTTPResponse.Status, message: String) {
        guard !closing, let context = channelContext else { return }
        if let exchange, exchange.responseHeadSent {
            close()
            return
        }
        let requestID = exchange?.context.requestID ?? loop.makeRequestID().string
        if let exchange {
            timers.upstreamDeadline = nil
            if let upstream = exchange.upstreamConnection {
                exchange.upstreamConnection = nil
                upstream.owner = nil
                upstream.close()
            }
            finishCounting(exchange)
            releaseLimits(exchange)
            exchange.responseStatus = status.code
            exchange.phase = .responded
            exchange.failureReason = exchange.failureReason ?? message
            runLogPhase(exchange)
        }
        let body = LocalResponse.error(status, message, requestID: requestID).body
        var fields = HTTPFields()
        fields[.contentType] = "application/json"
        fields[.contentLength] = String(body.utf8.count)
        if let name = loop.state.requestIDFieldName { fields[name] = requestID }
        output.render(context.channel.allocator) { out in
            HeadWriter.writeResponse(minorVersion: 1, status: status, fields: fields, addChunked: false,
                                     connection: .close, into: &out)
            out.writeString(body)
        }
        exchange = nil
        close()
    }

    // MARK: finishing

    /// The response is fully written. The exchange ends when the request is complete too.
    func responseFinished(_ exchange: Exchange) {
        exchange.phase = .responded
        timers.upstreamDeadline = nil
        finishCounting(exchange)
        releaseLimits(exchange)
        if let upstream = exchange.upstreamConnection {
            exchange.upstreamConnection = nil
            let reusable = exchange.upstreamKeepAlive && exchange.upstreamRequestComplete && !exchange.isUpgrade
                && upstream.isClean
            loop.pool.release(upstream, reusable: reusable, maxIdle: exchange.service?.maxIdlePerTarget ?? 0)
        }
        runLogPhase(exchange)
        if !exchange.keepAlive {
            close()
            return
        }
        if exchange.requestComplete { exchangeFinished() } else { resumeReadingIfPossible() }
    }

    /// The log phase of the route's plugins, once per exchange, whether the response completed or the
    /// client went away first (status 499, as nginx logs it): plugins release what they hold here.
    /// Requests no route matched run the global plugins' log hooks (access log, metrics).
    func runLogPhase(_ exchange: Exchange) {
        guard !exchange.logged else { return }
        // Asked through the route (a class) first: binding the chain would copy the struct and
        // retain each of its arrays, on every request.
        let hasLogHooks = exchange.route.map { $0.chain.hasLogHooks } ?? exchange.state.snapshot.globalChain.hasLogHooks
        guard hasLogHooks else { return }
        exchange.logged = true
        let status = exchange.responseHeadSent || exchange.phase == .responded ? exchange.responseStatus : 499
        let now = NIODeadline.now().uptimeNanoseconds
        exchange.closeAttempt(status: exchange.responseStatus, error: exchange.failureReason ?? "abandoned", now: now)
        // The exchange is the summary the hooks read: its summary fields are set here, nothing is
        // built or copied.
        exchange.finish(status: status, bytesReceived: exchange.requestBodyBytes, bytesSent: exchange.responseBytes,
                        endNanos: now, upstream: exchange.resolvedTarget?.authority,
                        errorReason: exchange.failureReason, upstreamNanos: exchange.upstreamTime,
                        attempts: exchange.attemptRecords, routeName: exchange.route?.name, serviceName: exchange.route?.serviceName)
        // The context is passed in place: reading it from the exchange (a class) would copy it,
        // retaining every string and array in it. The chain is used where it is (binding it copies it).
        if let route = exchange.route {
            route.chain.runLog(context: &exchange.context, summary: exchange)
        } else {
            exchange.state.snapshot.globalChain.runLog(context: &exchange.context, summary: exchange)
        }
    }

    /// Both directions are done: take the next pipelined request, or wait for one.
    func exchangeFinished() {
        exchange = nil
        if draining && inbound.readableBytes == 0 {
            close()
            return
        }
        armConnectionTimer(headerPhase: inbound.readableBytes > 0)
        processInbound()
        if exchange == nil && !closing && draining {
            close()
            return
        }
        if exchange != nil && wroteUpstreamSinceFlush {
            wroteUpstreamSinceFlush = false
            exchange?.upstreamConnection?.flush()
        }
        resumeReadingIfPossible()
    }
}

@available(*, unavailable)
extension ProxyHandler: Sendable {}

/// Sent through a connection's pipeline when the server drains.
struct DrainEvent {}
