import HTTPTypes
import NIOCore
import TollgateCore
import TollgateObservability

extension ProxyHandler {
    // MARK: request head: checks, routing, plugins

    /// `inout` only so that the connection's parsed head is lent, not copied (see `upstreamHead`); it
    /// is not changed.
    func requestHeadReceived(_ head: inout RawHead) {
        headStarted()
        let state = loop.state
        let config = state.snapshot.config
        // Fields read by index, not through `.map(head.value)`: the method reference copied the head.
        let requestID: RequestID
        if let index = head.requestIDIndex, let given = Self.acceptableRequestID(head.value(index)) {
            requestID = RequestID(given)
        } else {
            requestID = loop.makeRequestID()
        }
        let exchange = Exchange(state: state, head: head, requestID: requestID, clientIP: clientIP,
                                startNanos: NIODeadline.now().uptimeNanoseconds, eventLoop: loop.eventLoop)
        self.exchange = exchange
        if tls { exchange.context.clientCertificate = peerCertificate() }

        if let problem = head.requestFramingProblem {
            exchange.keepAlive = false
            exchange.requestComplete = true
            return respondError(.badRequest, problem, exchange: exchange)
        }
        if let length = exchange.declaredLength, length > config.limits.maxBodySize {
            exchange.keepAlive = false
            exchange.requestComplete = true
            return respondError(.contentTooLarge, "request body larger than \(config.limits.maxBodySize) bytes", exchange: exchange)
        }

        // The path is normalized straight from the head's bytes (no String of the whole target first).
        let query = head.queryStart < head.targetEnd ? Substring(head.string(head.queryStart + 1, head.targetEnd)) : nil
        let normalized: String
        do {
            let (start, end) = (Int(head.targetStart), Int(head.queryStart))
            let mergeSlashes = config.limits.mergeSlashes
            normalized = try head.withBytes { p in
                try PathNormalizer.normalize(bytes: UnsafeRawBufferPointer(rebasing: p[start..<end]), mergeSlashes: mergeSlashes)
            }
        } catch {
            exchange.keepAlive = false
            return respondError(.badRequest, "invalid request path", exchange: exchange)
        }
        let snapshot = state.snapshot
        guard let method = head.method else {
            return respondError(.badRequest, "invalid method", exchange: exchange)
        }
        // Converted only when routing or versioning reads headers; plugins convert on their own.
        let routingFields = state.routingReadsFields ? head.httpFields() : HTTPFields()
        let host = snapshot.routeTable.usesHosts ? head.host : nil
        var path = normalized
        if state.versions, let resolver = snapshot.versionResolver {
            let resolved = resolver.resolve(path: normalized, query: query, headerFields: routingFields)
            exchange.context.version = resolved.version
            path = resolved.path
        }
        exchange.context.originalPath = path
        // The request's parts are moved into it and read from it from here on: kept in locals as well,
        // the request was built from copies, copied again for the call and destroyed twice.
        let routeRequest = RouteRequest(method: method, host: host.map { Substring($0) }, path: consume path,
                                        query: query, headerFields: consume routingFields, version: exchange.context.version)
        guard let match = snapshot.routeTable.match(routeRequest, scratch: &loop.segmentScratch) else {
            return respondNoRoute(routeRequest, exchange: exchange)
        }
        let route = match.route
        exchange.route = route
        exchange.context.route = route
        exchange.context.pathParameters = match.parameters
        exchange.service = state.routeServices[route.index]
        if route.chain.wantsSubrequests { exchange.context.subrequests = state.subrequests }
        if let beginTrace = route.chain.beginTrace {
            beginTrace(head.traceparentIndex.map { head.value($0) }, head.tracestateIndex.map { head.value($0) }, &exchange.context)
        }
        if route.chain.hasLogHooks {
            exchange.timesUpstream = true
            // Attempts are kept for trace spans, so only for sampled requests.
            exchange.keepsAttempts = route.chain.recordsUpstreamAttempts && exchange.context.trace?.sampled == true
        }
        if let service = exchange.service {
            prepareBalancing(exchange, service: service, route: route, method: method, query: routeRequest.query)
        }

        var upstreamPath = match.upstreamPath(for: routeRequest.path, version: exchange.context.version)
        if let query = routeRequest.query { upstreamPath += "?" + query }
        exchange.upstreamTarget = upstreamPath
        if !route.chain.hasRequestHooks {
            return forward(exchange)   // the client's head is forwarded
        }
        if route.chain.readsClientHead { exchange.context.clientHead = SharedHead(head) }
        if !route.chain.readsRequest {
            // No hook reads or changes the request (a rate limit by address, an ACL): none is built.
            var request = HTTPRequest.placeholder
            return runRequestPlugins(&request, exchange: exchange, from: 0)
        }
        var headerFields = routeRequest.headerFields
        if !route.chain.readsRequestFields {
            headerFields = HTTPFields()   // no hook reads or changes them: not converted
        } else if headerFields.isEmpty, let names = route.chain.requestFieldNames {
            headerFields = head.httpFields(named: names)   // only the fields the hooks read
        } else if headerFields.isEmpty {
            headerFields = head.httpFields { $0 == .host }
        } else {
            headerFields[HTTPField.Name("Host")!] = nil
        }
        var request = HTTPRequest(method: method, scheme: nil, authority: host ?? head.host, path: upstreamPath,
                                  headerFields: headerFields)
        runRequestPlugins(&request, exchange: exchange, from: 0)
    }

    /// Client ids are echoed into logs and headers: printable ASCII, bounded length.
    static func acceptableRequestID(_ value: String) -> String? {
        guard value.utf8.count <= 200, !value.isEmpty, value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
        return value
    }

    private func respondNoRoute(_ request: borrowing RouteRequest, exchange: Exchange) {
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
            // No plugin changes requests: the client's head is forwarded as it came.
            guard route.chain.changesRequest else { return forward(exchange) }
            // The plugins' request is rendered and parsed again, so it is forwarded exactly like a
            // client's head (hop-by-hop fields removed, forwarding fields added).
            var head = RawHead()
            switch exchange.state.requestParser.parse(HeadWriter.renderRequest(request), into: &head) {
            case .complete:
                exchange.forwardHead = SharedHead(head)
                exchange.upstreamTarget = request.path ?? "/"
                forward(exchange)
            case .incomplete, .failed:
                respondError(.internalServerError, "request plugins produced an invalid request", exchange: exchange)
            }
        case .respond(let response, let index):
            respondLocally(response, exchange: exchange, from: index)
        case .suspend(let index, let work):
            suspend(request, exchange: exchange, index: index, work: work)
        case .pending(let index, let future):
            wait(for: future, request: request, exchange: exchange, index: index)
        case .readBody(let index, let maxBytes, let then):
            exchange.bodyWaiter = (index, maxBytes, then, request)
            bodyProgressed(exchange)
        }
    }

    /// A plugin waits for the body: past its limit, 413; once it is all here, the plugin decides with it.
    func bodyProgressed(_ exchange: Exchange) {
        guard let waiter = exchange.bodyWaiter else { return }
        var total = 0
        for part in exchange.pendingBody { total += part.readableBytes }
        if total > waiter.maxBytes {
            exchange.bodyWaiter = nil
            exchange.keepAlive = false
            return respondError(.contentTooLarge, "request body larger than \(waiter.maxBytes) bytes", exchange: exchange)
        }
        guard exchange.requestComplete else { return resumeReadingIfPossible() }
        exchange.bodyWaiter = nil
        var body = ByteBuffer()
        body.reserveCapacity(total)
        for var part in exchange.pendingBody { body.writeBuffer(&part) }
        var request = waiter.request
        let decision = waiter.then(&request, &exchange.context, body)
        if let replacement = exchange.context.replacementRequestBody {
            exchange.context.replacementRequestBody = nil
            exchange.pendingBody = replacement.readableBytes > 0 ? [replacement] : []
            if exchange.retryBody != nil { exchange.retryBody = exchange.pendingBody }
        }
        resume(&request, exchange: exchange, index: waiter.index, result: .success(decision))
    }

    /// Parks the request (no reads are processed for this exchange) until the plugin's I/O completes;
    /// its continuation then runs on this loop with the live request and context.
    private func wait(for future: EventLoopFuture<RequestContinuation>, request: HTTPRequest, exchange: Exchange, index: Int) {
        let bound = NIOLoopBound((self, exchange, request), eventLoop: loop.eventLoop)
        future.hop(to: loop.eventLoop).whenComplete { result in
            let (handler, exchange, request) = bound.value
            guard handler.exchange === exchange, !handler.closing else { return }
            var live = request
            handler.resume(&live, exchange: exchange, index: index, result: result.map { continuation in
                continuation(&live, &exchange.context)
            })
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
                handler.resume(&request, exchange: exchange, index: index, result: result)
            }
        }
    }

    /// Acts on what a suspended or pending plugin decided, then reads on.
    private func resume(_ request: inout HTTPRequest, exchange: Exchange, index: Int, result: Result<RequestDecision, any Error>) {
        switch result {
        case .success(.proceed):
            runRequestPlugins(&request, exchange: exchange, from: index + 1)
        case .success(.respond(let response)):
            respondLocally(response, exchange: exchange, from: index)
        case .success(.suspend(let work)):
            return suspend(request, exchange: exchange, index: index, work: work)   // the same plugin waits again
        case .success(.pending(let future)):
            return wait(for: future, request: request, exchange: exchange, index: index)
        case .success(.readBody(let maxBytes, let then)):
            exchange.bodyWaiter = (index, maxBytes, then, request)
            return bodyProgressed(exchange)
        case .failure(let error):
            respondError(.internalServerError, "plugin failed: \(error)", exchange: exchange)
        }
        processInbound()
    }

    // MARK: request body

    func requestBodyReceived(_ buffer: ByteBuffer, exchange: Exchange) {
        exchange.requestBodyBytes += buffer.readableBytes
        let maxBodySize = exchange.state.snapshot.config.limits.maxBodySize
        if exchange.requestBodyBytes > maxBodySize {
            exchange.requestComplete = true   // stop treating later bytes as this body
            exchange.keepAlive = false
            if exchange.responseHeadSent { return close() }
            return respondError(.contentTooLarge, "request body larger than \(maxBodySize) bytes", exchange: exchange)
        }
        if exchange.retryBody != nil {
            // Kept while it fits, so a retry can send it again; past the limit the request is no
            // longer retried once its body went upstream.
            exchange.retryBodyBytes += buffer.readableBytes
            if let limit = exchange.service?.bufferBodyLimit, exchange.retryBodyBytes <= limit {
                exchange.retryBody!.append(buffer)
            } else {
                exchange.retryBody = nil
            }
        }
        switch exchange.phase {
        case .preparing, .connecting:
            exchange.pendingBody.append(buffer)
            if exchange.bodyWaiter != nil { bodyProgressed(exchange) }
        case .proxying:
            exchange.upstreamConnection?.writeBody(buffer, chunked: exchange.requestChunked)
            wroteUpstreamSinceFlush = true
            armWriteTimer(exchange)
        case .responded:
            break   // answered early: the rest of the body is read and dropped
        }
    }

    func requestEndReceived(_ trailers: ByteBuffer?, exchange: Exchange) {
        exchange.requestComplete = true
        if exchange.retryBody != nil { exchange.retryTrailers = trailers }
        switch exchange.phase {
        case .preparing, .connecting:
            exchange.pendingEnd = true
            exchange.pendingTrailers = trailers
            if exchange.bodyWaiter != nil { bodyProgressed(exchange) }
        case .proxying:
            exchange.upstreamConnection?.writeEnd(trailers: trailers, chunked: exchange.requestChunked)
            exchange.upstreamRequestComplete = true
            // Only a chunked body has an end of its own to send (the last chunk); otherwise nothing
            // was written, and an empty flush costs NIO a pass through the pipeline and the socket.
            if exchange.requestChunked { wroteUpstreamSinceFlush = true }
            armReadTimer(exchange)
        case .responded:
            exchangeFinished()
        }
    }

    // MARK: upstream

    /// What balancing and retries need to know of a routed request, worked out once.
    private func prepareBalancing(_ exchange: Exchange, service: ServiceRuntime, route: CompiledRoute,
                                  method: HTTPRequest.Method, query: Substring?) {
        if service.retryAttempts > 1 {
            exchange.retryable = route.retryNonIdempotent || Self.isIdempotent(method)
            if exchange.retryable && (exchange.requestChunked || (exchange.declaredLength ?? 0) > 0) { exchange.retryBody = [] }
        }
        if let total = service.totalTimeoutNanos {
            exchange.deadline = .uptimeNanoseconds(exchange.context.startNanos) + .nanoseconds(total)
        }
        if service.maglev != nil { exchange.hashKey = hashKey(service.hashKey, exchange: exchange, query: query) }
        loop.recordRequest(service, now: exchange.context.startNanos)
    }

    /// RFC 9110 section 9.2.2, without building the method's name for the common ones.
    static func isIdempotent(_ method: HTTPRequest.Method) -> Bool {
        switch method {
        case .get, .head, .put, .delete, .options, .trace: return true
        default: return false
        }
    }

    /// The key a hash balancer places the request by; the client's IP when the key is missing.
    private func hashKey(_ key: HashKey, exchange: Exchange, query: Substring?) -> UInt64 {
        let head = exchange.head
        switch key {
        case .clientIP:
            break
        case .header(let name):
            if let index = head.fields.indices.first(where: { head.name($0).lowercased() == name.canonicalName }) {
                return StableHash.hash(head.value(index))
            }
        case .cookie(let name):
            for index in head.fields.indices where head.name(index).lowercased() == "cookie" {
                for pair in head.value(index).split(separator: ";") {
                    let parts = pair.split(separator: "=", maxSplits: 1)
                    if parts.count == 2, parts[0].trimmingSpaces == name { return StableHash.hash(String(parts[1].trimmingSpaces)) }
                }
            }
        case .query(let name):
            if let value = QueryString.value(of: name, in: query) { return StableHash.hash(value) }
        case .pathParameter(let name):
            if let value = exchange.context.pathParameter(name) { return StableHash.hash(value) }
        }
        return StableHash.hash(clientIP)
    }

    func forward(_ exchange: Exchange) {
        guard let service = exchange.service else {
            return respondError(.internalServerError, "route has no service", exchange: exchange)
        }
        let now = exchange.attempt == 0 ? exchange.context.startNanos : NIODeadline.now().uptimeNanoseconds
        guard let index = loop.pickTarget(service, now: now, hashKey: exchange.hashKey, tried: exchange.tried) else {
            exchange.keepAlive = exchange.keepAlive && exchange.requestComplete
            return respondError(.serviceUnavailable, "no healthy upstream target", exchange: exchange)
        }
        let target = service.targets[index]
        exchange.targetIndex = index
        exchange.resolvedTarget = target
        exchange.attempt += 1
        exchange.beginAttempt()
        if index < 64 { exchange.tried |= 1 << UInt64(index) }
        exchange.phase = .connecting
        let pool = loop.pool
        // The common case, an idle keep-alive connection, needs no callback.
        if let connection = pool.takeIdle(target.id) {
            return attach(connection, exchange: exchange)
        }
        guard service.counters.acquire(.pending, limits: service.circuitBreaker) else {
            return respondOverloaded("max_pending", exchange: exchange)
        }
        exchange.holdsPending = true
        // Strong, like every callback to this handler (a weak capture makes its retains slow): a
        // closed handler stays until the pool answers, within the connect timeout, and ignores it.
        pool.lease(target: target, service: service) { [self] result in
            guard self.exchange === exchange, !self.closing else {
                // The client is gone: the connection goes back unused.
                if exchange.holdsPending {
                    exchange.holdsPending = false
                    service.counters.release(.pending)
                }
                if case .success(let connection) = result {
                    pool.release(connection, reusable: true, maxIdle: service.maxIdlePerTarget)
                }
                return
            }
            if exchange.holdsPending {
                exchange.holdsPending = false
                service.counters.release(.pending)
            }
            switch result {
            case .success(let connection):
                self.attach(connection, exchange: exchange)
                self.processInbound()
            case .failure(let error):
                self.upstreamUnavailable(error, exchange: exchange)
                self.processInbound()
            }
        }
    }

    private func attach(_ connection: UpstreamConnection, exchange: Exchange) {
        guard let target = exchange.resolvedTarget, let service = exchange.service else { return }
        connection.lease(to: self)
        exchange.upstreamConnection = connection
        exchange.phase = .proxying
        exchange.upstreamRequestComplete = false
        if service.balancer == .leastConnections || service.balancer == .p2cEWMA {
            exchange.attemptStart = NIODeadline.now().uptimeNanoseconds
            exchange.attemptCounted = true
            loop.attemptStarted(service, exchange.targetIndex)
        }
        let state = exchange.state
        let forwarding = forwardingValues(state)
        let preserveHost = exchange.route?.preserveHost ?? false
        func write(_ head: RawHead) {
            let host = preserveHost ? (head.host ?? target.hostHeader) : target.hostHeader
            connection.writeHead(toHeadRequest: head.isHeadMethod) { out in
                HeadWriter.writeRequest(head, target: exchange.upstreamTarget, host: host, forwarding: forwarding,
                                        requestID: exchange.context.id, edits: exchange.context.upstreamFieldEdits,
                                        trace: exchange.context.trace, into: &out)
            }
        }
        // The head plugins produced, or (no plugins) the client's own.
        if let forwardHead = exchange.forwardHead {
            write(forwardHead.head)
        } else {
            write(exchange.head)
        }
        for bytes in exchange.pendingBody {
            connection.writeBody(bytes, chunked: exchange.requestChunked)
        }
        exchange.pendingBody.removeAll()
        if exchange.pendingEnd {
            connection.writeEnd(trailers: exchange.pendingTrailers, chunked: exchange.requestChunked)
            exchange.pendingTrailers = nil
            exchange.upstreamRequestComplete = true
        }
        connection.flush()
        if exchange.upstreamRequestComplete { armReadTimer(exchange) } else { armWriteTimer(exchange) }
        resumeReadingIfPossible()
    }

    /// The attempt in flight is over: balancers stop counting it, passive health hears how it went.
    func endAttempt(_ exchange: Exchange, failed: Bool) {
        finishCounting(exchange)
        recordHealth(exchange, failed: failed)
    }

    /// Balancers stop counting the attempt as in flight (its response is complete, or it failed).
    func finishCounting(_ exchange: Exchange) {
        guard exchange.attemptCounted, let service = exchange.service, exchange.targetIndex >= 0 else { return }
        exchange.attemptCounted = false
        let now = NIODeadline.now().uptimeNanoseconds
        loop.attemptEnded(service, exchange.targetIndex, latencyNanos: now &- exchange.attemptStart, now: now)
    }

    /// Passive health: a failure (connect error, reset, timeout, 5xx) or a success of the target.
    func recordHealth(_ exchange: Exchange, failed: Bool) {
        guard let service = exchange.service, exchange.targetIndex >= 0 else { return }
        if failed {
            if service.recordFailure(exchange.targetIndex, now: NIODeadline.now().uptimeNanoseconds) {
                logEjection(service, exchange.targetIndex)
            }
        } else {
            service.recordSuccess(exchange.targetIndex)
        }
    }

    private func logEjection(_ service: ServiceRuntime, _ index: Int) {
        loop.state.metrics.circuitOpened(service: service.config.name, reason: "outlier_ejection")
        loop.logger.warning("target ejected by passive health checks", metadata: [
            "service": "\(service.config.name)", "target": "\(service.targets[index].authority)",
        ])
    }

    /// Frees what the exchange holds of its service's circuit breaker.
    func releaseLimits(_ exchange: Exchange) {
        guard let service = exchange.service else { return }
        if exchange.holdsRetry {
            exchange.holdsRetry = false
            service.counters.release(.retry)
        }
        if exchange.holdsPending {
            exchange.holdsPending = false
            service.counters.release(.pending)
        }
    }

    /// After a failure before any response byte reached the client: sends the request again, to
    /// another target when there is one, after a jittered backoff, when the policy, the method, the
    /// body, the retry budget, the circuit breaker and the deadline all allow it.
    func retry(_ exchange: Exchange, after condition: RetryPolicy.Condition) -> Bool {
        guard let service = exchange.service, !closing, !exchange.responseHeadSent, self.exchange === exchange else { return false }
        let policy = service.config.retries
        guard exchange.attempt < policy.attempts, policy.on.contains(condition) else { return false }
        // A connection that never opened carried nothing: any request may go elsewhere.
        guard condition == .connectError || exchange.replayable else { return false }
        let now = NIODeadline.now()
        if let deadline = exchange.deadline, now >= deadline { return false }
        guard loop.retryBudgetAllows(service, now: now.uptimeNanoseconds) else { return false }
        if !exchange.holdsRetry {
            guard service.counters.acquire(.retry, limits: service.circuitBreaker) else { return false }
            exchange.holdsRetry = true
        }
        if let upstream = exchange.upstreamConnection {
            exchange.upstreamConnection = nil
            upstream.owner = nil
            upstream.close()
        }
        timers.upstreamDeadline = nil
        if condition != .connectError {
            // What went upstream is sent again from the kept copy.
            exchange.pendingBody = exchange.retryBody ?? []
            exchange.pendingEnd = exchange.requestComplete
            exchange.pendingTrailers = exchange.retryTrailers
        }
        exchange.phase = .preparing
        exchange.state.metrics.retried(service: service.config.name)
        let delay = policy.backoffNanos(retry: exchange.attempt - 1, unit: loop.randomUnit())
        if delay == 0 {
            forward(exchange)
        } else {
            loop.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(delay))) { [self] in
                guard self.exchange === exchange, !self.closing else { return }
                self.forward(exchange)
                self.processInbound()
            }
        }
        return true
    }

    private func upstreamUnavailable(_ error: any Error, exchange: Exchange) {
        if case UpstreamPool.PoolError.overloaded = error {
            return respondOverloaded("max_connections", exchange: exchange)
        }
        exchange.closeAttempt(status: 0, error: Self.describe(error))
        if error is UpstreamPool.PoolError {
            finishCounting(exchange)   // the pool's own limit: says nothing of the target's health
        } else {
            endAttempt(exchange, failed: true)
        }
        if retry(exchange, after: .connectError) { return }
        switch error {
        case ChannelError.connectTimeout:
            respondError(.gatewayTimeout, "upstream connect timeout", exchange: exchange)
        case UpstreamPool.PoolError.connectionLimitReached:
            respondError(.serviceUnavailable, "upstream connection limit reached", exchange: exchange)
        default:
            respondError(.badGateway, "upstream connection failed", exchange: exchange)
        }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case ChannelError.connectTimeout: return "connect timeout"
        case UpstreamPool.PoolError.connectionLimitReached: return "connection limit reached"
        default: return "connect failed"
        }
    }

    /// A circuit-breaker limit is reached: refused at once, marked so clients and operators can tell.
    func respondOverloaded(_ limit: String, exchange: Exchange) {
        exchange.keepAlive = exchange.keepAlive && exchange.requestComplete
        exchange.failureReason = "circuit breaker: \(limit)"
        exchange.state.metrics.circuitOpened(service: exchange.service?.config.name ?? "", reason: limit)
        var response = LocalResponse.error(.serviceUnavailable, "service overloaded (\(limit) reached)",
                                           requestID: exchange.context.requestID)
        response.headerFields[HTTPField.Name("X-Tollgate-Overloaded")!] = limit
        respondLocally(response, exchange: exchange)
    }
}
