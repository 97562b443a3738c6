import HTTPTypes
import NIOCore
import TollgateCore
import TollgateObservability
import TollgateRedis

/// A shared HTTP cache in front of the upstream (RFC 9111): fresh responses are answered from the
/// store, stale ones revalidated (`ETag` / `Last-Modified`) or served while they are refreshed
/// (`stale-while-revalidate`) or while the upstream fails (`stale-if-error`); concurrent misses for
/// one key make one upstream request; unsafe methods invalidate their URL; `PURGE` (from allowed
/// addresses) and the admin listener purge by URL, prefix or surrogate key.
public struct ProxyCachePlugin: GatewayPlugin {
    public static let name = "proxy-cache"
    public static let phase = PluginPhase.cache
    public static let priority = 100
    public static let changesRequest = false   // conditional fields go through upstreamFieldEdits
    public var wantsSubrequests: Bool { true }
    public var hasLogHook: Bool { false }   // a leader's flight lands from its exchange's deinit at the latest

    public enum StoreKind: String, Sendable {
        case memory, redis, memcached
    }

    public struct Configuration: PluginConfiguration {
        public var store = StoreKind.memory
        public var maxSize = 256 << 20
        public var maxObjectSize = 8 << 20
        public var rules = CachePolicy.Rules()
        public var key = CacheKeySpec()
        public var collapse = true
        public var collapseTimeout = TimeAmount.seconds(5)
        public var keyHeader = false
        public var surrogateKeyHeader = HTTPField.Name("Surrogate-Key")!
        public var purgeAllowed: [CIDR] = []
        public var redis: ClusterConfig.Redis?
        public var memcached = MemcachedConfiguration(servers: [])
        public var scope = ""
        public var state = PluginStateRegistry.shared

        public init(from config: ConfigNode) {
            config.expectMapping(keys: ["store", "max_size", "max_object_size", "default_ttl", "key", "query_params",
                                        "ignore_query_params", "statuses", "cache_control", "store_set_cookie", "collapse",
                                        "collapse_timeout", "cache_key_header", "surrogate_key_header", "purge_allow",
                                        "memcached"])
            state = config.diagnostics.state
            scope = config.path
            if let text = config["store"].string() {
                if let kind = StoreKind(rawValue: text) { store = kind } else { config["store"].error("expected memory, redis or memcached") }
            }
            maxSize = config["max_size"].size() ?? maxSize
            maxObjectSize = config["max_object_size"].size() ?? min(maxObjectSize, maxSize)
            if maxObjectSize > maxSize { config["max_object_size"].error("larger than max_size") }
            if let ttl = config["default_ttl"].duration() { rules.defaultTTL = Int64(ttl.unsignedNanoseconds / 1_000_000_000) }
            if let parts = config["key"].elements() {
                key.parts = []
                for node in parts {
                    guard let text = node.string() else { continue }
                    switch text {
                    case "method": key.parts.append(.method)
                    case "host": key.parts.append(.host)
                    case "path": key.parts.append(.path)
                    case "query": key.parts.append(.query)
                    case "consumer": key.parts.append(.consumer)
                    default:
                        if text.hasPrefix("header:"), let name = HTTPField.Name(String(text.dropFirst(7))) {
                            key.parts.append(.header(name))
                        } else {
                            node.error("expected method, host, path, query, consumer or header:NAME")
                        }
                    }
                }
                if !key.parts.contains(.path) { config["key"].error("the key must contain path") }
            }
            if let only = config["query_params"].strings() { key.queryParameters = Set(only) }
            if let ignored = config["ignore_query_params"].strings() { key.ignoredQueryParameters = Set(ignored) }
            if let statuses = config["statuses"].elements() {
                rules.statuses = Set(statuses.compactMap { $0.int(range: 200...599) })
                if rules.statuses.contains(206) { config["statuses"].error("206 (partial content) is never cached") }
            }
            if let text = config["cache_control"].string() {
                let parsed = CacheControl(text)
                if parsed == CacheControl() { config["cache_control"].error("no Cache-Control directive recognized") }
                rules.overrideCacheControl = parsed
            }
            rules.storeSetCookie = config["store_set_cookie"].bool() ?? false
            collapse = config["collapse"].bool() ?? true
            if let timeout = config["collapse_timeout"].duration() {
                collapseTimeout = .nanoseconds(Int64(timeout.unsignedNanoseconds))
            }
            keyHeader = config["cache_key_header"].bool() ?? false
            if let name = config["surrogate_key_header"].string() {
                if let parsed = HTTPField.Name(name) { surrogateKeyHeader = parsed } else { config["surrogate_key_header"].error("not a header name") }
            }
            for node in config["purge_allow"].elements() ?? [] {
                guard let text = node.string() else { continue }
                if let range = CIDR(text) { purgeAllowed.append(range) } else { node.error("expected an address or CIDR range") }
            }
            switch store {
            case .memory:
                if config["memcached"].isPresent { config["memcached"].error("only for store: memcached") }
            case .redis:
                redis = config.diagnostics.cluster.redis
                if redis == nil { config["store"].error("store redis needs cluster.redis (the Redis the gateway nodes share)") }
            case .memcached:
                memcached = MemcachedConfiguration(from: config["memcached"])
            }
        }
    }

    let configuration: Configuration
    let cache: ResponseCache

    public init(configuration: Configuration) {
        self.configuration = configuration
        let identity = "proxy-cache|\(configuration.scope)|\(configuration.store.rawValue)|\(configuration.maxSize)"
            + "|\(configuration.memcached.servers)|\(configuration.redis?.url ?? "")"
        let metrics = GatewayMetrics.of(configuration.state)   // not inside `value`'s closure: one lock
        self.cache = configuration.state.value(for: identity) {
            ResponseCache(store: Self.makeStore(configuration), scope: configuration.scope, metrics: metrics)
        }
    }

    static func makeStore(_ configuration: Configuration) -> any CacheStore {
        switch configuration.store {
        case .memory:
            return MemoryCacheStore(budget: configuration.maxSize, maxObjectSize: configuration.maxObjectSize)
        case .redis:
            guard let redis = configuration.redis, var connection = RedisConfiguration(url: redis.url) else {
                return MemoryCacheStore(budget: configuration.maxSize, maxObjectSize: configuration.maxObjectSize)
            }
            connection.commandTimeout = .nanoseconds(Int64(redis.timeout.unsignedNanoseconds))
            connection.connectTimeout = .nanoseconds(Int64(redis.connectTimeout.unsignedNanoseconds))
            connection.tlsCAFile = redis.tlsCAFile
            return RedisCacheStore(pool: RedisPool.shared(connection), prefix: redis.keyPrefix + "cache:")
        case .memcached:
            return MemcachedCacheStore(configuration: configuration.memcached)
        }
    }

    static let xCache = HTTPField.Name("X-Cache")!
    static let xCacheKey = HTTPField.Name("X-Cache-Key")!
    static let purgeMethod = HTTPRequest.Method("PURGE")!
    /// `X-Cache: HIT`, made once (making a field checks its value).
    static let hitField = HTTPField(name: xCache, value: "HIT")

    // MARK: request

    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        if request.method == Self.purgeMethod { return purge(request, context: context) }
        switch CachePolicy.requestAction(method: request.method, fields: request.headerFields) {
        case .bypass:
            context.cacheStatus = "BYPASS"
            context[CacheExchangeKey.self] = CacheExchange.bypass
            return .proceed
        case .invalidate:
            context.cacheStatus = "BYPASS"
            context[CacheExchangeKey.self] = CacheExchange(invalidating: url(request, context: context))
            return .proceed
        case .lookup:
            break
        }
        let query = Self.query(of: request.path)
        let key = configuration.key.key(method: request.method, host: request.authority, path: context.originalPath,
                                        query: query, fields: request.headerFields, consumer: context.consumer?.id)
        // The exchange goes into the context only when the request goes upstream: a hit needs no
        // response hook of this plugin.
        let exchange = CacheExchange(primaryKey: key, path: context.originalPath, query: query, request: request)
        guard let loop = context.eventLoop else { return lookedUp(nil, exchange: exchange, context: &context) }
        switch cache.store.get(key, now: Self.now(), on: loop) {
        case .ready(let record):
            return lookedUp(record, exchange: exchange, context: &context)
        case .pending(let future):
            return .pending(lookup(future, exchange: exchange))
        }
    }

    /// The query of a request target (after `?`), found by bytes.
    static func query(of target: String?) -> Substring? {
        guard let target, let question = target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return nil }
        return target[target.utf8.index(after: question)...]
    }

    /// A lookup on the network: a failure is a miss (pass-through), counted and logged.
    private func lookup(_ future: EventLoopFuture<CacheRecord?>, exchange: CacheExchange) -> EventLoopFuture<RequestContinuation> {
        let cache = self.cache
        return future.map { record -> RequestContinuation in
            { _, context in self.lookedUp(record, exchange: exchange, context: &context) }
        }.recover { error in
            cache.storeFailed(error)
            return { _, context in self.miss(exchange, context: &context, collapse: false) }
        }
    }

    private func lookedUp(_ record: CacheRecord?, exchange: CacheExchange, context: inout RequestContext) -> RequestDecision {
        switch record {
        case nil:
            return miss(exchange, context: &context, collapse: configuration.collapse)
        case .variants(let names)?:
            guard exchange.key == exchange.primaryKey else { return miss(exchange, context: &context, collapse: configuration.collapse) }
            exchange.key = CacheKeySpec.variantKey(primary: exchange.primaryKey, names: names, fields: exchange.requestFields)
            guard let loop = context.eventLoop else { return miss(exchange, context: &context, collapse: false) }
            switch cache.store.get(exchange.key, now: Self.now(), on: loop) {
            case .ready(let record): return lookedUp(record, exchange: exchange, context: &context)
            case .pending(let future): return .pending(lookup(future, exchange: exchange))
            }
        case .response(let entry)?:
            let now = Self.now()
            let request = CacheControl(fields: exchange.requestFields)
            switch CachePolicy.usability(entry.freshness, storedAt: entry.storedAt, now: now, request: request) {
            case .fresh:
                return .respond(serve(entry, status: "HIT", exchange: exchange, context: &context, now: now))
            case .staleWhileRevalidate:
                if let refresher = context.subrequests, let route = context.route, let loop = context.eventLoop {
                    refreshInBackground(entry, exchange: exchange, route: route, client: refresher, on: loop)
                }
                return .respond(serve(entry, status: "STALE", exchange: exchange, context: &context, now: now))
            case .revalidate(let staleIfError):
                if request.onlyIfCached { return .respond(onlyIfCachedMiss(context)) }
                exchange.stale = entry
                exchange.staleIfError = staleIfError
                context.cacheStatus = "MISS"
                context[CacheExchangeKey.self] = exchange
                // The upstream is asked whether the stored response still holds (the client's own
                // conditions are answered by the gateway from the result).
                context.editUpstreamFields { edits in
                    edits.remove(.ifNoneMatch)
                    edits.remove(.ifModifiedSince)
                    if let etag = entry.etag { edits.set(.ifNoneMatch, etag) }
                    if let modified = entry.lastModified { edits.set(.ifModifiedSince, modified) }
                }
                return .proceed
            }
        }
    }

    /// Nothing usable is stored: collapse onto a request for the same key already in flight, or go upstream.
    private func miss(_ exchange: CacheExchange, context: inout RequestContext, collapse: Bool) -> RequestDecision {
        if CacheControl(fields: exchange.requestFields).onlyIfCached { return .respond(onlyIfCachedMiss(context)) }
        context.cacheStatus = "MISS"
        if collapse, let loop = context.eventLoop {
            switch cache.flights.join(exchange.primaryKey, on: loop, timeout: configuration.collapseTimeout) {
            case .leader:
                exchange.leader = true
                exchange.flights = cache.flights
            case .waiter(let landed):
                return .pending(landed.map { outcome -> RequestContinuation in
                    { _, context in self.flightLanded(outcome, exchange: exchange, context: &context) }
                })
            }
        }
        context[CacheExchangeKey.self] = exchange
        // The client's conditions are answered by the gateway once the full response is here (and stored).
        if exchange.requestFields[.ifNoneMatch] != nil || exchange.requestFields[.ifModifiedSince] != nil {
            context.editUpstreamFields { edits in
                edits.remove(.ifNoneMatch)
                edits.remove(.ifModifiedSince)
            }
        }
        return .proceed
    }

    /// The request this one waited for is done: answer from what it stored, or go upstream.
    private func flightLanded(_ outcome: CacheFlights.Outcome?, exchange: CacheExchange,
                              context: inout RequestContext) -> RequestDecision {
        if let outcome {
            let key: String
            if let names = CacheKeySpec.varyNames(outcome.record.fields) {
                key = CacheKeySpec.variantKey(primary: exchange.primaryKey, names: names, fields: exchange.requestFields)
            } else {
                key = exchange.primaryKey
            }
            if key == outcome.key {
                exchange.key = key
                return .respond(serve(outcome.record, status: "HIT", exchange: exchange, context: &context, now: Self.now()))
            }
        }
        return miss(exchange, context: &context, collapse: false)
    }

    /// A stored response as the client's answer: with its age, or a 304 when the client's
    /// conditions hold.
    private func serve(_ entry: CachedResponse, status: String, exchange: CacheExchange, context: inout RequestContext,
                       now: Int64) -> LocalResponse {
        exchange.served = true
        context.cacheStatus = status
        var fields = HTTPFields()
        fields.append(HTTPField(name: .age, value: String(CachePolicy.age(entry.freshness, storedAt: entry.storedAt, now: now))))
        fields.append(status == "HIT" ? Self.hitField : HTTPField(name: Self.xCache, value: status))
        if configuration.keyHeader { fields.append(HTTPField(name: Self.xCacheKey, value: exchange.key)) }
        if exchange.conditional,
           CachePolicy.notModified(requestFields: exchange.requestFields, etag: entry.etag, lastModified: entry.lastModified) {
            var all = entry.fields
            all.append(contentsOf: fields)
            return LocalResponse(status: .notModified, headerFields: Self.notModifiedFields(all), payload: ByteBuffer())
        }
        // The stored fields go out as the lines rendered when it was stored.
        var response = LocalResponse(status: HTTPResponse.Status(code: entry.status), headerFields: fields, payload: entry.body)
        response.base = (entry.fields, entry.renderedFields)
        return response
    }

    /// What a 304 keeps of a response's fields (RFC 9110 section 15.4.5).
    static func notModifiedFields(_ fields: HTTPFields) -> HTTPFields {
        var kept = HTTPFields()
        for field in fields where Self.notModifiedNames.contains(field.name) { kept.append(field) }
        return kept
    }

    static let notModifiedNames: Set<HTTPField.Name> = [.cacheControl, .contentLocation, .date, .eTag, .expires, .vary,
                                                          .lastModified, .age, xCache, xCacheKey]

    private func onlyIfCachedMiss(_ context: RequestContext) -> LocalResponse {
        .error(.gatewayTimeout, "not in the cache (only-if-cached)", requestID: context.requestID)
    }

    /// `PURGE /path` (this URL), `PURGE /prefix*` (every URL under it), or with a surrogate-key field
    /// (every response tagged so): only from the allowed addresses.
    private func purge(_ request: HTTPRequest, context: RequestContext) -> RequestDecision {
        guard configuration.purgeAllowed.contains(where: { $0.contains(context.clientIP) }) else {
            return .respond(.error(.forbidden, "PURGE is not allowed from this address", requestID: context.requestID))
        }
        let target: PurgeTarget
        if let tag = request.headerFields[configuration.surrogateKeyHeader] {
            target = .tag(tag)
        } else {
            let url = self.url(request, context: context)
            target = url.hasSuffix("*") ? .prefix(String(url.dropLast())) : .url(url)
        }
        guard let loop = context.eventLoop else { return .respond(.error(.internalServerError, "no event loop", requestID: context.requestID)) }
        return .pending(cache.store.purge(target, on: loop).map { count -> RequestContinuation in
            { _, context in .respond(LocalResponse(status: .ok, body: #"{"purged":\#(count)}"#)) }
        }.recover { error in
            { _, context in .respond(.error(.serviceUnavailable, "purge failed: \(error)", requestID: context.requestID)) }
        })
    }

    /// The client's path (normalized, before any rewrite) and query.
    private func url(_ request: HTTPRequest, context: RequestContext) -> String {
        CacheExchange.url(path: context.originalPath, query: Self.query(of: request.path))
    }

    // MARK: response

    public func onResponse(_ response: inout HTTPResponse, context: inout RequestContext) {
        guard let exchange = context[CacheExchangeKey.self] else { return }
        if exchange.served { return }
        if let url = exchange.invalidates {
            if response.status.code < 400, let loop = context.eventLoop {
                _ = cache.store.purge(.url(url), on: loop)
            }
            response.headerFields[Self.xCache] = "BYPASS"
            return
        }
        if exchange.bypass {
            response.headerFields[Self.xCache] = "BYPASS"
            return
        }
        let now = Self.now()
        let code = response.status.code
        if let stale = exchange.stale {
            if code == 304 {
                // Still valid: refresh the stored response's fields and freshness, answer with it.
                let merged = stale.refreshed(with: response.headerFields, storedAt: now, freshness: stale.freshness)
                var entry = merged
                if case .store(let freshness) = CachePolicy.storeDecision(status: stale.status, requestFields: exchange.requestFields,
                                                                          responseFields: merged.fields, now: now, rules: configuration.rules) {
                    entry = stale.refreshed(with: response.headerFields, storedAt: now, freshness: freshness)
                    cache.put(exchange.key, .response(entry), now: now, on: context.eventLoop)
                }
                answer(with: entry, status: "REVALIDATED", response: &response, exchange: exchange, context: &context, now: now)
                return
            }
            if code >= 500 && exchange.staleIfError {
                answer(with: stale, status: "STALE", response: &response, exchange: exchange, context: &context, now: now)
                return
            }
        }
        response.headerFields[Self.xCache] = "MISS"
        if configuration.keyHeader { response.headerFields[Self.xCacheKey] = exchange.key }
        let decision = CachePolicy.storeDecision(status: code, requestFields: exchange.requestFields,
                                                 responseFields: response.headerFields, now: now, rules: configuration.rules)
        let tooLarge = response.headerFields[.contentLength].flatMap { Int($0) }.map { $0 > configuration.maxObjectSize } ?? false
        guard case .store(let freshness) = decision, !exchange.isHead, !tooLarge else {
            // Nothing will be stored: requests waiting for this one go upstream now.
            if exchange.leader {
                exchange.leader = false
                cache.flights.land(exchange.primaryKey, outcome: nil)
            }
            return
        }
        // The response is stored as the client gets it (after the hooks that ran before this one,
        // compression among them), under its variant's key when it varies.
        var fields = HTTPFields()
        let requestID = context.requestID
        for field in response.headerFields where !CachedResponse.unstoredFields.contains(field.name) && field.name != .contentLength {
            // This request's id (the gateway's request-id field, or the upstream's echo of it) is not
            // the next one's: each answer gets its own.
            if field.value == requestID { continue }
            fields.append(field)
        }
        let tags = response.headerFields[values: configuration.surrogateKeyHeader]
            .flatMap { $0.split(separator: " ") }.map(String.init)
        let storedFields = fields
        let varyNames = CacheKeySpec.varyNames(response.headerFields)
        let key = varyNames.map { CacheKeySpec.variantKey(primary: exchange.primaryKey, names: $0, fields: exchange.requestFields) }
            ?? exchange.primaryKey
        exchange.key = key
        let status = code
        let url = exchange.url
        let cache = self.cache
        let loop = context.eventLoop
        let primaryKey = exchange.primaryKey
        let leader = exchange.leader
        exchange.leader = false   // the recorder lands the flight
        // The client's own conditions: answered with a 304 while the full response is stored.
        let notModified = CachePolicy.notModified(requestFields: exchange.requestFields, etag: fields[.eTag],
                                                  lastModified: fields[.lastModified])
        let recorder = RecordingFilter(limit: configuration.maxObjectSize, passOn: !notModified) { body in
            var outcome: CacheFlights.Outcome?
            if let body {
                let entry = CachedResponse(status: status, fields: storedFields, body: body, storedAt: now, freshness: freshness,
                                           url: url, tags: tags)
                if let varyNames { cache.put(primaryKey, .variants(varyNames), now: now, on: loop, retention: entry.retention) }
                cache.put(key, .response(entry), now: now, on: loop)
                outcome = CacheFlights.Outcome(key: key, record: entry)
            }
            if leader { cache.flights.land(primaryKey, outcome: outcome) }
        }
        context.responseFilters.append(recorder)
        if notModified {
            response.status = .notModified
            response.headerFields = Self.notModifiedFields(response.headerFields)
        }
    }

    /// Answers with a stored response instead of the upstream's (whose body is dropped).
    private func answer(with entry: CachedResponse, status: String, response: inout HTTPResponse, exchange: CacheExchange,
                        context: inout RequestContext, now: Int64) {
        let local = serve(entry, status: status, exchange: exchange, context: &context, now: now)
        response.status = local.status
        var fields = local.base?.fields ?? HTTPFields()
        fields.append(contentsOf: local.headerFields)
        response.headerFields = fields
        let body = local.status == .notModified || exchange.isHead ? ByteBuffer() : entry.body
        if local.status != .notModified { response.headerFields[.contentLength] = String(entry.body.readableBytes) }
        context.responseFilters.append(ReplacingFilter(body: body))
    }

    // MARK: background refresh

    private func refreshInBackground(_ entry: CachedResponse, exchange: CacheExchange, route: CompiledRoute,
                                     client: any SubrequestClient, on loop: any EventLoop) {
        let refreshKey = "refresh|" + exchange.key
        guard case .leader = cache.flights.join(refreshKey, on: loop, timeout: .seconds(30)) else { return }
        var request = exchange.request
        request.headerFields[.ifNoneMatch] = entry.etag
        request.headerFields[.ifModifiedSince] = entry.lastModified
        let cache = self.cache
        let rules = configuration.rules
        let key = exchange.key
        let requestFields = exchange.requestFields
        client.send(request, route: route, maxBodyBytes: configuration.maxObjectSize, on: loop).whenComplete { result in
            defer { cache.flights.land(refreshKey, outcome: nil) }
            guard case .success(let (response, body)) = result else { return }
            let now = Self.now()
            let fields: HTTPFields
            let stored: CachedResponse
            if response.status.code == 304 {
                stored = entry.refreshed(with: response.headerFields, storedAt: now, freshness: entry.freshness)
                fields = stored.fields
            } else {
                fields = response.headerFields
                var kept = HTTPFields()
                for field in fields where !CachedResponse.unstoredFields.contains(field.name) { kept.append(field) }
                stored = CachedResponse(status: response.status.code, fields: kept, body: body, storedAt: now,
                                        freshness: entry.freshness, url: entry.url, tags: entry.tags)
            }
            guard case .store(let freshness) = CachePolicy.storeDecision(status: stored.status, requestFields: requestFields,
                                                                         responseFields: fields, now: now, rules: rules) else { return }
            let refreshed = CachedResponse(status: stored.status, fields: stored.fields, body: stored.body, storedAt: now,
                                           freshness: freshness, url: stored.url, tags: stored.tags)
            cache.put(key, .response(refreshed), now: now, on: loop)
        }
    }

    static func now() -> Int64 { WallClock.milliseconds() / 1000 }
}
