import HTTPTypes
import NIOCore
import NIOHTTP1
import TollgateCore

extension ProxyHandler {
    // MARK: request head: checks, routing, plugins

    func requestHeadReceived(_ head: HTTPRequestHead) {
        headStarted()
        let state = loop.state
        let config = state.snapshot.config
        let facts = HeadFacts(head.headers, requestIDHeader: state.requestIDHeader)
        let requestID = facts.requestID.flatMap(Self.acceptableRequestID) ?? loop.makeRequestID()
        let context = RequestContext(requestID: requestID, clientIP: clientIP,
                                     startNanos: NIODeadline.now().uptimeNanoseconds)
        let exchange = Exchange(state: state, head: head, facts: facts, context: context)
        self.exchange = exchange

        if let problem = Self.framingProblem(facts, version: head.version) {
            exchange.keepAlive = false
            return respondError(.badRequest, problem, exchange: exchange)
        }
        if head.uri.utf8.count > config.limits.maxURILength {
            exchange.keepAlive = false
            return respondError(.uriTooLong, "request target longer than \(config.limits.maxURILength) bytes", exchange: exchange)
        }
        if let length = exchange.declaredLength, length > config.limits.maxBodySize {
            exchange.keepAlive = false
            return respondError(.contentTooLarge, "request body larger than \(config.limits.maxBodySize) bytes", exchange: exchange)
        }

        let uri = head.uri
        let queryStart = uri.utf8.firstIndex(of: UInt8(ascii: "?"))   // bytes, not grapheme clusters
        let rawPath = uri[..<(queryStart ?? uri.endIndex)]
        let query = queryStart.map { uri[uri.index(after: $0)...] }
        let normalized: String
        do {
            normalized = try PathNormalizer.normalize(rawPath, mergeSlashes: config.limits.mergeSlashes)
        } catch {
            exchange.keepAlive = false
            return respondError(.badRequest, "invalid request path", exchange: exchange)
        }
        let snapshot = state.snapshot
        // Converted only when routing or versioning reads headers; plugins convert on their own.
        var headerFields = snapshot.routeTable.usesHeaders || snapshot.versionResolver?.usesHeaders == true
            ? HeaderRules.fields(head.headers) : HTTPFields()
        let host = facts.host.map { Substring($0) }
        var path = normalized
        if let resolver = state.snapshot.versionResolver {
            let resolved = resolver.resolve(path: normalized, query: query, headerFields: headerFields)
            exchange.context.version = resolved.version
            path = resolved.path
        }
        exchange.context.originalPath = path
        guard let method = HTTPRequest.Method(head.method.rawValue) else {
            return respondError(.badRequest, "invalid method", exchange: exchange)
        }
        let routeRequest = RouteRequest(method: method, host: host, path: path, query: query,
                                        headerFields: headerFields, version: exchange.context.version)
        guard let match = state.snapshot.routeTable.match(routeRequest) else {
            return respondNoRoute(routeRequest, exchange: exchange)
        }
        let route = match.route
        exchange.route = route
        exchange.context.route = route
        exchange.context.pathParameters = match.parameters
        if let serviceName = route.serviceName { exchange.service = state.services[serviceName] }
        exchange.isUpgrade = facts.isUpgrade

        var upstreamPath = match.upstreamPath(for: path, version: exchange.context.version)
        if let query { upstreamPath += "?" + query }
        if route.chain.isEmpty {
            exchange.upstreamHead = HTTPRequestHead(version: .http1_1, method: head.method, uri: upstreamPath,
                                                    headers: head.headers)
            return forward(exchange)
        }
        if headerFields.isEmpty { headerFields = HeaderRules.fields(head.headers) }
        headerFields[HTTPField.Name("Host")!] = nil
        var request = HTTPRequest(method: method, scheme: nil, authority: facts.host,
                                  path: upstreamPath, headerFields: headerFields)
        runRequestPlugins(&request, exchange: exchange, from: 0)
    }

    /// Client ids are echoed into logs and headers: printable ASCII, bounded length.
    static func acceptableRequestID(_ value: String) -> String? {
        guard value.utf8.count <= 200, !value.isEmpty, value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
        return value
    }

    /// Request smuggling defence (RFC 9112 section 6.3): refuse ambiguous framing outright.
    static func framingProblem(_ facts: HeadFacts, version: HTTPVersion) -> String? {
        let transferEncodings = facts.transferEncodings
        let lengths = facts.contentLengths
        if !transferEncodings.isEmpty {
            if !lengths.isEmpty { return "both Content-Length and Transfer-Encoding" }
            if version.major == 1 && version.minor == 0 { return "Transfer-Encoding in an HTTP/1.0 request" }
            if transferEncodings.count != 1
                || !String(Substring(transferEncodings[0]).trimmingSpaces).asciiCaseInsensitiveEquals("chunked") {
                return "unsupported Transfer-Encoding"
            }
        }
        if lengths.count > 1 {
            let first = lengths[0]
            if lengths.contains(where: { $0 != first }) { return "conflicting Content-Length values" }
        }
        if let length = lengths.first, length.isEmpty || !length.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) {
            return "invalid Content-Length"
        }
        return nil
    }

    private func respondNoRoute(_ request: RouteRequest, exchange: Exchange) {
        let snapshot = exchange.state.snapshot
        if snapshot.versionResolver != nil {
            let candidates = snapshot.routeTable.candidates(host: request.host, path: request.path)
            let versions = Set(candidates.compactMap(\.version)).sorted()
            if !versions.isEmpty {
                let list = "[" + versions.map(JSONText.quote).joined(separator: ",") + "]"
                let asked = request.version.map(JSONText.quote) ?? "null"
                return respondError(.notFound, "no route serves this version", exchange: exchange,
                                    extra: [("version", asked), ("available_versions", list)])
            }
        }
        respondError(.notFound, "no route matched", exchange: exchange)
    }

    /// Runs the route's request hooks from `start`; a suspended hook parks the exchange (reads stop)
    /// until its work returns on this loop.
    func runRequestPlugins(_ request: inout HTTPRequest, exchange: Exchange, from start: Int) {
        guard let route = exchange.route else { return }
        switch route.chain.runRequest(&request, context: &exchange.context, from: start) {
        case .proceed:
            exchange.upstreamHead = HTTPRequestHead(version: .http1_1,
                                                    method: HTTPMethod(rawValue: request.method.rawValue),
                                                    uri: request.path ?? "/", headers: HeaderRules.headers(request.headerFields))
            if let authority = request.authority { exchange.upstreamHead!.headers.replaceOrAdd(name: "host", value: authority) }
            forward(exchange)
        case .respond(let response):
            respondLocally(response, exchange: exchange)
        case .suspend(let index, let work):
            suspend(request, exchange: exchange, index: index, work: work)
        }
    }

    private func suspend(_ request: HTTPRequest, exchange: Exchange, index: Int,
                         work: @escaping @Sendable (inout HTTPRequest, inout RequestContext) async throws -> RequestDecision) {
        let eventLoop = loop.eventLoop
        let bound = NIOLoopBound((self, exchange), eventLoop: eventLoop)
        let context = exchange.context
        Task {
            var request = request
            var context = context
            let result: Result<RequestDecision, any Error>
            do { result = .success(try await work(&request, &context)) } catch { result = .failure(error) }
            let finalRequest = request
            let finalContext = context
            eventLoop.execute {
                let (handler, exchange) = bound.value
                guard handler.exchange === exchange, !handler.closing else { return }
                exchange.context = finalContext
                var request = finalRequest
                switch result {
                case .success(.proceed):
                    handler.runRequestPlugins(&request, exchange: exchange, from: index + 1)
                case .success(.respond(let response)):
                    handler.respondLocally(response, exchange: exchange)
                case .success(.suspend):
                    handler.respondError(.internalServerError, "plugin suspended twice", exchange: exchange)
                case .failure(let error):
                    handler.respondError(.internalServerError, "plugin failed: \(error)", exchange: exchange)
                }
            }
        }
    }

    // MARK: request body

    func requestBodyReceived(_ buffer: ByteBuffer, exchange: Exchange) {
        exchange.requestBodyBytes += buffer.readableBytes
        if exchange.requestBodyBytes > exchange.state.snapshot.config.limits.maxBodySize {
            exchange.requestComplete = true   // stop treating later parts as this body
            exchange.keepAlive = false
            if exchange.responseHeadSent { return close() }
            return respondError(.contentTooLarge, "request body larger than \(exchange.state.snapshot.config.limits.maxBodySize) bytes",
                                exchange: exchange)
        }
        switch exchange.phase {
        case .preparing, .connecting:
            exchange.pendingBody.append(.body(buffer))
        case .proxying:
            exchange.upstream?.write(.body(.byteBuffer(buffer)))
            wroteUpstreamSinceFlush = true
            armWriteTimer(exchange)
        case .responded:
            break   // answered early: the rest of the body is read and dropped
        }
    }

    func requestEndReceived(_ trailers: HTTPHeaders?, exchange: Exchange) {
        exchange.requestComplete = true
        switch exchange.phase {
        case .preparing, .connecting:
            exchange.pendingBody.append(.end(trailers))
        case .proxying:
            exchange.upstream?.write(.end(trailers))
            exchange.upstreamRequestComplete = true
            wroteUpstreamSinceFlush = true
            armReadTimer(exchange)
        case .responded:
            exchangeFinished()
        }
    }

    // MARK: upstream

    func forward(_ exchange: Exchange) {
        guard let service = exchange.service, var head = exchange.upstreamHead else {
            return respondError(.internalServerError, "route has no service", exchange: exchange)
        }
        exchange.upstreamHead = nil   // `head` is now the only reference: edited in place, not copied
        let target = loop.pickTarget(service)
        exchange.target = target
        prepareUpstreamHead(&head, exchange: exchange, target: target)
        exchange.upstreamHead = head
        exchange.phase = .connecting
        let pool = loop.pool
        // The common case, an idle keep-alive connection, needs no callback.
        if let connection = pool.takeIdle(target.authority) {
            return attach(connection, exchange: exchange)
        }
        pool.lease(target: target, service: service) { [weak self] result in
            guard let self, self.exchange === exchange, !self.closing else {
                // The client is gone: the connection goes back unused.
                if case .success(let connection) = result {
                    pool.release(connection, reusable: true, maxIdle: service.config.maxIdlePerTarget)
                }
                return
            }
            switch result {
            case .success(let connection):
                self.attach(connection, exchange: exchange)
            case .failure(let error):
                self.upstreamUnavailable(error, exchange: exchange)
            }
        }
    }

    private func attach(_ connection: UpstreamConnection, exchange: Exchange) {
        connection.lease(to: self)
        exchange.upstream = connection
        exchange.phase = .proxying
        connection.write(.head(exchange.upstreamHead!))
        while let part = exchange.pendingBody.popFirst() {
            switch part {
            case .body(let buffer): connection.write(.body(.byteBuffer(buffer)))
            case .end(let trailers):
                connection.write(.end(trailers))
                exchange.upstreamRequestComplete = true
            case .head: break
            }
        }
        connection.flush()
        if exchange.upstreamRequestComplete { armReadTimer(exchange) } else { armWriteTimer(exchange) }
        resumeReadingIfPossible()
    }

    private func upstreamUnavailable(_ error: any Error, exchange: Exchange) {
        switch error {
        case ChannelError.connectTimeout:
            respondError(.gatewayTimeout, "upstream connect timeout", exchange: exchange)
        case UpstreamPool.PoolError.connectionLimitReached:
            respondError(.serviceUnavailable, "upstream connection limit reached", exchange: exchange)
        default:
            respondError(.badGateway, "upstream connection failed", exchange: exchange)
        }
    }

    /// Forwarding headers, hop-by-hop removal and Host, in one pass over the client's headers.
    private func prepareUpstreamHead(_ head: inout HTTPRequestHead, exchange: Exchange, target: ResolvedTarget) {
        let state = exchange.state
        let original = head.headers
        let listed = exchange.facts.connectionListed
        // Built as a plain array: HTTPHeaders.add re-validates every name byte by byte.
        var headers: [(String, String)] = []
        headers.reserveCapacity(original.count + 7)
        var forwardedFor: String?
        var forwarded: String?
        var via: String?
        var clientHost: String?
        var hasRequestID = false
        for (name, value) in original {
            if HeaderRules.isHopByHop(name) { continue }
            if !listed.isEmpty && listed.contains(where: { $0.asciiCaseInsensitiveEquals(name) }) { continue }
            switch name.utf8.count {
            case 3 where name.caseInsensitiveEquals("via"):
                via = via.map { "\($0), \(value)" } ?? value
                continue
            case 4 where name.caseInsensitiveEquals("host"):
                clientHost = clientHost ?? value
                continue
            case 9 where name.caseInsensitiveEquals("forwarded"):
                forwarded = forwarded.map { "\($0), \(value)" } ?? value
                continue
            case 15 where name.caseInsensitiveEquals("x-forwarded-for"):
                forwardedFor = forwardedFor.map { "\($0), \(value)" } ?? value
                continue
            case 16 where name.caseInsensitiveEquals("x-forwarded-host"):
                continue
            case 17 where name.caseInsensitiveEquals("x-forwarded-proto"):
                continue
            default:
                break
            }
            if !hasRequestID && name.asciiCaseInsensitiveEquals(state.requestIDHeader) { hasRequestID = true }
            headers.append((name, value))
        }
        let preserveHost = exchange.route?.preserveHost ?? false
        headers.append(("host", preserveHost ? (clientHost ?? target.authority) : target.authority))
        headers.append(("x-forwarded-for", forwardedFor.map { "\($0), \(clientIP)" } ?? clientIP))
        headers.append(("x-forwarded-proto", "http"))
        var element = forwardedElement
        if let clientHost {
            headers.append(("x-forwarded-host", clientHost))
            if clientHost.utf8.allSatisfy({ $0 > 0x20 && $0 != UInt8(ascii: "\"") && $0 < 0x7F }) {
                element += ";host=\"\(clientHost)\""
            }
        }
        headers.append(("forwarded", forwarded.map { "\($0), \(element)" } ?? element))
        headers.append(("via", via.map { "\($0), \(state.viaValue)" } ?? state.viaValue))
        if !hasRequestID { headers.append((state.requestIDHeader, exchange.context.requestID)) }
        if exchange.isUpgrade {
            headers.append(("connection", "upgrade"))
            if let upgrade = exchange.facts.upgrade { headers.append(("upgrade", upgrade)) }
        }
        head.headers = HTTPHeaders(headers)
    }
}
