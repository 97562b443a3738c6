import Atomics
import HTTPTypes
import Logging
import NIOCore
import Synchronization
import TollgateCore
import TollgateRedis

/// Rate limiting and throttling per key (client IP, a header, a path parameter, the route, the
/// service, or a combination), with several limits enforced together, the IETF `RateLimit-Policy` /
/// `RateLimit` headers (and optionally the legacy `X-RateLimit-*`), 429 with `Retry-After` when over,
/// or, in `delay` mode, a wait instead of a refusal (nginx's `limit_req` with `burst`). A
/// `concurrency` limit caps requests in flight per key.
public struct RateLimitPlugin: GatewayPlugin {
    public static let name = "rate-limiting"
    public static let phase = PluginPhase.access
    public static let priority = 910   // after authentication (1000s), before transforms (800s)
    public static let changesRequest = false
    public static let responseHookOnlyAdds = true   // it adds the RateLimit fields

    /// What a request is counted by.
    public enum KeyPart: Sendable, Equatable {
        case ip
        case header(HTTPField.Name)
        case pathParameter(String)
        case route
        case service
        /// The authenticated consumer's id (the client IP when no consumer was identified).
        case consumer
        /// The credential that identified it (the client IP when none did).
        case credential

        init?(parsing text: String) {
            switch text {
            case "ip": self = .ip
            case "consumer": self = .consumer
            case "credential": self = .credential
            case "route": self = .route
            case "service": self = .service
            default:
                if text.hasPrefix("header:"), let name = HTTPField.Name(String(text.dropFirst(7))) {
                    self = .header(name)
                } else if text.hasPrefix("path:"), text.count > 5 {
                    self = .pathParameter(String(text.dropFirst(5)))
                } else {
                    return nil
                }
            }
        }
    }

    public enum Mode: String, Sendable {
        case reject
        case delay
    }

    /// Where the counts live.
    public enum Policy: String, Sendable {
        /// This node's memory: exact for this node, no I/O.
        case local
        /// Redis, one atomic script per decision: exact across nodes.
        case redis
        /// This node's view, synchronized with Redis in batches: a bounded error, few round trips.
        case hybrid
    }

    /// What happens to requests while Redis does not answer.
    public enum FailMode: String, Sendable {
        /// Decide with this node's local store (logged and counted).
        case open
        /// Answer 503.
        case closed
    }

    public struct Configuration: PluginConfiguration {
        public var limits: [RateLimit] = []
        public var algorithm = RateLimitAlgorithm.slidingWindow
        public var key: [KeyPart] = [.ip]
        public var burst: Int?
        public var mode = Mode.reject
        public var maxDelayNanos: UInt64 = 1_000_000_000
        public var concurrency: Int?
        public var ietfHeaders = true
        public var legacyHeaders = false
        public var trustedProxies: [CIDR] = []
        public var maxKeys = 1_000_000
        public var policy = Policy.local
        public var fail = FailMode.open
        /// Hybrid: how often each node sends its counts, and the share of a limit it may admit before
        /// Redis must hear of it (the error bound is `(nodes - 1) × fraction × limit`).
        public var syncInterval: Duration = .milliseconds(50)
        public var syncFraction = 0.05
        public var redis: ClusterConfig.Redis?
        /// Where the limits live: one counter space per configured plugin (its YAML path), kept across
        /// reloads while the configuration keeps it.
        public var scope: String = ""
        /// The gateway's registry the stores are kept in.
        public var state = PluginStateRegistry.shared

        public init(from config: ConfigNode) {
            config.expectMapping(keys: ["limits", "algorithm", "key", "policy", "burst", "mode", "max_delay", "concurrency",
                                        "headers", "trusted_proxies", "max_keys", "fail", "sync"])
            scope = config.path
            state = config.diagnostics.state
            for item in config["limits"].elements() ?? [] {
                guard let text = item.string() else { continue }
                if let limit = RateLimit(parsing: text) { limits.append(limit) } else {
                    item.error("expected a rate such as 100/s, 5000/min, 1M/day or 10/5s")
                }
            }
            if let name = config["algorithm"].string() {
                if let parsed = RateLimitAlgorithm(rawValue: name) {
                    algorithm = parsed
                } else {
                    config["algorithm"].error("unknown algorithm '\(name)'; expected one of: "
                                              + RateLimitAlgorithm.allCases.map(\.rawValue).joined(separator: ", "))
                }
            }
            let keyNode = config["key"]
            let keyTexts: [(String, ConfigNode)]
            if case .sequence = keyNode.node {
                keyTexts = (keyNode.elements() ?? []).compactMap { node in node.string().map { ($0, node) } }
            } else if keyNode.isPresent, let single = keyNode.string() {
                keyTexts = [(single, keyNode)]
            } else {
                keyTexts = []
            }
            if !keyTexts.isEmpty {
                key = []
                for (text, node) in keyTexts {
                    if let part = KeyPart(parsing: text) {
                        key.append(part)
                    } else {
                        node.error("expected consumer, credential, ip, header:NAME, path:NAME, route or service")
                    }
                }
            }
            if let text = config["policy"].string() {
                if let parsed = Policy(rawValue: text) { policy = parsed } else { config["policy"].error("expected local, redis or hybrid") }
            }
            if let text = config["fail"].string() {
                if let parsed = FailMode(rawValue: text) { fail = parsed } else { config["fail"].error("expected open or closed") }
            }
            let sync = config["sync"]
            sync.expectMapping(keys: ["interval", "fraction"])
            if let interval = sync["interval"].duration() {
                if interval < .milliseconds(1) || interval > .seconds(60) { sync["interval"].error("expected between 1ms and 60s") } else { syncInterval = interval }
            }
            if sync["fraction"].isPresent {
                if let text = sync["fraction"].string(), let value = Double(text), value > 0, value <= 1 {
                    syncFraction = value
                } else {
                    sync["fraction"].error("expected a number above 0 and at most 1, such as 0.05")
                }
            }
            if policy != .local {
                redis = config.diagnostics.cluster.redis
                if redis == nil {
                    config["policy"].error("policy '\(policy.rawValue)' needs cluster.redis (the Redis the gateway nodes share)")
                }
            }
            if sync.isPresent && policy != .hybrid { sync.error("only used with policy hybrid") }
            burst = config["burst"].int(range: 1...10_000_000)
            if let text = config["mode"].string() {
                if let parsed = Mode(rawValue: text) { mode = parsed } else { config["mode"].error("expected reject or delay") }
            }
            if let delay = config["max_delay"].duration() { maxDelayNanos = delay.unsignedNanoseconds }
            if mode == .delay && algorithm != .gcra && algorithm != .tokenBucket {
                config["mode"].error("delay needs algorithm gcra or token_bucket (the others cannot schedule a request later)")
            }
            if burst != nil && algorithm != .gcra && algorithm != .tokenBucket {
                config["burst"].error("only used with algorithm gcra or token_bucket")
            }
            if algorithm == .slidingLog, let big = limits.first(where: { $0.count > 10_000 }) {
                config["limits"].error("sliding_log keeps every request's time: \(big.text) is too many; use sliding_window")
            }
            if policy == .hybrid && algorithm != .fixedWindow && algorithm != .slidingWindow {
                config["algorithm"].error("policy hybrid adds up window counters: use fixed_window or sliding_window, or policy redis")
            }
            concurrency = config["concurrency"].int(range: 1...1_000_000)
            if limits.isEmpty && concurrency == nil {
                config["limits"].error("give limits, a concurrency limit, or both")
            }
            let headers = config["headers"]
            headers.expectMapping(keys: ["ietf", "legacy"])
            ietfHeaders = headers["ietf"].bool() ?? true
            legacyHeaders = headers["legacy"].bool() ?? false
            for item in config["trusted_proxies"].elements() ?? [] {
                guard let text = item.string() else { continue }
                if let cidr = CIDR(text) { trustedProxies.append(cidr) } else { item.error("expected an address or CIDR such as 10.0.0.0/8") }
            }
            maxKeys = config["max_keys"].int(range: 1_000...100_000_000) ?? maxKeys
        }
    }

    /// What the request hook decided, for the response hook and the log phase.
    public final class Outcome: Sendable {
        /// The decision of a single limit (the usual case: no array), else nil and `several`.
        let single: RateLimitDecision?
        let several: [RateLimitDecision]
        public let concurrencyKey: String?

        init(decisions: [RateLimitDecision], concurrencyKey: String?) {
            self.single = nil
            self.several = decisions
            self.concurrencyKey = concurrencyKey
        }

        init(single: RateLimitDecision, concurrencyKey: String?) {
            self.single = single
            self.several = []
            self.concurrencyKey = concurrencyKey
        }

        public var decisions: [RateLimitDecision] { single.map { [$0] } ?? several }
        var isEmpty: Bool { single == nil && several.isEmpty }
    }

    public enum OutcomeKey: ObjectContextKey { public typealias Value = Outcome }

    /// Where the limits are decided beyond this node.
    enum Backend: Sendable {
        case local
        case redis(RedisLimitStore)
        case hybrid(HybridLimitStore)
    }

    let configuration: Configuration
    let limiters: [RateLimiter]
    /// The local store: the `local` policy's counts, the fallback of `fail: open`, and concurrency.
    let store: LocalLimitStore
    let backend: Backend
    /// Whether Redis answers (shared by every user of the same Redis); nil for the local policy.
    let circuit: RedisCircuit?
    let statistics: RateLimitStatistics
    let policyHeader: String
    /// Each limit as a quoted policy name: `"10/s"`.
    let quotedLimits: [String]
    /// `RateLimit-Policy`, the same on every response: built once.
    let policyField: HTTPField
    /// The fixed pieces of the header lines, rendered once (nil when a limit's text could not stand
    /// in a field as it is: the fields are then built and checked per response).
    let rendered: RenderedLines?

    public init(configuration: Configuration) {
        self.configuration = configuration
        let delay = configuration.mode == .delay ? configuration.maxDelayNanos : 0
        let limiters = configuration.limits.map {
            RateLimiter(limit: $0, algorithm: configuration.algorithm, burst: configuration.burst, maxDelayNanos: delay)
        }
        self.limiters = limiters
        self.store = LimitStores.store(configuration.state, scope: configuration.scope, limiters: limiters,
                                       maxKeys: configuration.maxKeys)
        self.statistics = LimitStores.statistics(configuration.state, scope: configuration.scope)
        if let redis = configuration.redis, configuration.policy != .local,
           var connection = RedisConfiguration(url: redis.url) {
            connection.commandTimeout = .nanoseconds(Int64(redis.timeout.unsignedNanoseconds))
            connection.tlsCAFile = redis.tlsCAFile
            connection.connectTimeout = .nanoseconds(Int64(redis.connectTimeout.unsignedNanoseconds))
            let pool = RedisPool.shared(connection)
            self.circuit = pool.circuit
            let prefix = RedisKeys.prefix(redis.keyPrefix, scope: configuration.scope, limiters: limiters)
            if configuration.policy == .redis {
                self.backend = .redis(RedisLimitStore(pool: pool, limiters: limiters, keyPrefix: prefix))
            } else {
                self.backend = .hybrid(LimitStores.hybrid(configuration.state, prefix: prefix) {
                    HybridLimitStore(pool: pool, limiters: limiters, keyPrefix: prefix, fraction: configuration.syncFraction,
                                     interval: .nanoseconds(Int64(configuration.syncInterval.unsignedNanoseconds)),
                                     maxKeys: configuration.maxKeys)
                })
            }
        } else {
            self.backend = .local
            self.circuit = nil
        }
        self.policyHeader = configuration.limits.map { "\"\($0.text)\";q=\($0.count);w=\($0.periodSeconds)" }
            .joined(separator: ", ")
        self.quotedLimits = configuration.limits.map { "\"\($0.text)\"" }
        self.policyField = HTTPField(name: Self.policyName, value: policyHeader)
        if HeaderLines.isLegalValue(policyHeader.utf8) {
            self.rendered = RenderedLines(
                policyLine: HeaderLines.prefix(Self.policyName) + Array(policyHeader.utf8) + Array("\r\n".utf8),
                rateLimitPrefixes: quotedLimits.map { HeaderLines.prefix(Self.rateLimitName) + Array($0.utf8) + Array(";r=".utf8) },
                legacyPrefixes: configuration.limits.map {
                    HeaderLines.prefix(Self.legacyLimitName) + Array(String($0.count).utf8) + Array("\r\n".utf8)
                        + HeaderLines.prefix(Self.legacyRemainingName)
                })
        } else {
            self.rendered = nil
        }
    }

    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        let key = self.key(request, context: context)
        let concurrencyKey: String?
        if let limit = configuration.concurrency {
            guard store.acquireConcurrency(key: key, limit: limit) else {
                context.rateLimitOutcome = "rejected"
                return .respond(refusal("too many concurrent requests", retryAfterSeconds: 1, context: context))
            }
            concurrencyKey = key
            // Held from now on: if the client leaves while Redis answers, the log phase frees the slot.
            context[OutcomeKey.self] = Outcome(decisions: [], concurrencyKey: key)
        } else {
            concurrencyKey = nil
        }
        guard !limiters.isEmpty else { return .proceed }
        switch backend {
        case .local:
            if limiters.count == 1 {
                let decision = store.decide(key: key, limiter: limiters[0], now: MonotonicClock.nanoseconds())
                if decision.allowed && !decision.delayed {
                    // The usual answer, without the arrays of the general case.
                    context[OutcomeKey.self] = Outcome(single: decision, concurrencyKey: concurrencyKey)
                    context.rateLimitOutcome = "allowed"
                    return .proceed
                }
                return conclude([decision], concurrencyKey: concurrencyKey, context: &context)
            }
            return conclude(decideLocally(key), concurrencyKey: concurrencyKey, context: &context)
        case .redis(let redis):
            guard let loop = context.eventLoop, let circuit, circuit.shouldTry(now: MonotonicClock.nanoseconds()) else {
                return unavailable(key, concurrencyKey: concurrencyKey, context: &context)
            }
            let plugin = self
            return .pending(redis.decide(key: key, on: loop).map { decisions -> RequestContinuation in
                if circuit.succeeded() { plugin.availabilityChanged(true) }
                return { _, context in plugin.conclude(decisions, concurrencyKey: concurrencyKey, context: &context) }
            }.recover { error -> RequestContinuation in
                if circuit.failed(now: MonotonicClock.nanoseconds()) { plugin.availabilityChanged(false, error: error) }
                return { _, context in plugin.unavailable(key, concurrencyKey: concurrencyKey, context: &context) }
            })
        case .hybrid(let hybrid):
            guard let loop = context.eventLoop else { return unavailable(key, concurrencyKey: concurrencyKey, context: &context) }
            hybrid.ensureTimer(on: loop)
            guard hybrid.circuit.isHealthy else { return unavailable(key, concurrencyKey: concurrencyKey, context: &context) }
            switch hybrid.decideLocally(key: key, nowMillis: WallClock.milliseconds()) {
            case .decided(let decisions):
                return conclude(decisions, concurrencyKey: concurrencyKey, context: &context)
            case .needsSync:
                // This node admitted its share unseen by Redis: this request waits for the sync.
                let plugin = self
                return .pending(hybrid.sync(key: key, on: loop).map { () -> RequestContinuation in
                    return { _, context in
                        guard case .decided(let decisions) = hybrid.decideLocally(key: key, nowMillis: WallClock.milliseconds(), force: true)
                        else { return plugin.unavailable(key, concurrencyKey: concurrencyKey, context: &context) }
                        return plugin.conclude(decisions, concurrencyKey: concurrencyKey, context: &context)
                    }
                }.recover { _ -> RequestContinuation in
                    return { _, context in plugin.unavailable(key, concurrencyKey: concurrencyKey, context: &context) }
                })
            }
        }
    }

    private func decideLocally(_ key: String) -> [RateLimitDecision] {
        let now = MonotonicClock.nanoseconds()
        return limiters.count == 1 ? [store.decide(key: key, limiter: limiters[0], now: now)]
            : store.decide(key: key, limiters: limiters, now: now)
    }

    /// Redis does not answer: `fail: open` decides locally, `fail: closed` answers 503.
    private func unavailable(_ key: String, concurrencyKey: String?, context: inout RequestContext) -> RequestDecision {
        switch configuration.fail {
        case .open:
            statistics.failedOpen.wrappingIncrement(ordering: .relaxed)
            let decision = conclude(decideLocally(key), concurrencyKey: concurrencyKey, context: &context)
            if context.rateLimitOutcome == "allowed" { context.rateLimitOutcome = "fail_open" }
            return decision
        case .closed:
            statistics.failedClosed.wrappingIncrement(ordering: .relaxed)
            context.rateLimitOutcome = "unavailable"
            release(concurrencyKey, context: &context)
            var response = LocalResponse.error(.serviceUnavailable, "rate limiter unavailable", requestID: context.requestID)
            response.headerFields[.retryAfter] = "1"
            return .respond(response)
        }
    }

    /// Refuses when any limit refuses (429 with the longest wait), delays when one delays, else proceeds.
    private func conclude(_ decisions: [RateLimitDecision], concurrencyKey: String?, context: inout RequestContext) -> RequestDecision {
        if let refused = decisions.filter({ !$0.allowed }).max(by: { $0.retryAfterNanos < $1.retryAfterNanos }) {
            release(concurrencyKey, context: &context)
            statistics.refused.wrappingIncrement(ordering: .relaxed)
            context.rateLimitOutcome = "rejected"
            var response = refusal("rate limit exceeded", retryAfterSeconds: Self.seconds(refused.retryAfterNanos),
                                   context: context)
            response.headerFields.append(contentsOf: headers(decisions))
            return .respond(response)
        }
        context[OutcomeKey.self] = Outcome(decisions: decisions, concurrencyKey: concurrencyKey)
        var longest: UInt64 = 0
        for decision in decisions where decision.delayed { longest = max(longest, decision.retryAfterNanos) }
        let delay = longest
        guard delay > 0 else {
            context.rateLimitOutcome = "allowed"
            return .proceed
        }
        context.rateLimitOutcome = "delayed"
        // Throttled: the request waits its turn instead of being refused (the connection stays parked).
        if let loop = context.eventLoop {
            return .pending(loop.scheduleTask(in: .nanoseconds(Int64(delay))) { () -> RequestContinuation in
                { _, _ in .proceed }
            }.futureResult)
        }
        return .suspend { _, _ in
            try await Task.sleep(nanoseconds: delay)
            return .proceed
        }
    }

    /// The hybrid stores of a gateway: decisions made, and those that waited for a round trip to Redis.
    public static func hybridCounts(in registry: PluginStateRegistry) -> [(decisions: Int, roundTrips: Int)] {
        registry.all(HybridLimitStore.self).map {
            ($0.decisions.load(ordering: .relaxed), $0.roundTrips.load(ordering: .relaxed))
        }
    }

    /// A refused request gives its concurrency slot back now (and the log phase must not again).
    private func release(_ concurrencyKey: String?, context: inout RequestContext) {
        guard let concurrencyKey else { return }
        store.releaseConcurrency(key: concurrencyKey)
        context[OutcomeKey.self] = nil
    }

    private static let logger = Logger(label: "tollgate.rate-limiting")

    private func availabilityChanged(_ available: Bool, error: (any Error)? = nil) {
        if available {
            Self.logger.notice("Redis answers again; cluster-wide rate limits resume", metadata: ["scope": "\(configuration.scope)"])
        } else {
            Self.logger.warning("Redis does not answer; rate limits fail \(configuration.fail.rawValue)",
                                metadata: ["scope": "\(configuration.scope)", "error": "\(error.map { "\($0)" } ?? "unknown")"])
        }
    }

    /// Only a header key or trusted proxies (X-Forwarded-For) make it read the request's fields.
    public var readsRequestFields: Bool {
        !configuration.trustedProxies.isEmpty || configuration.key.contains { if case .header = $0 { return true }; return false }
    }

    /// It reads nothing of the request but the fields above (the rest of a key is in the context).
    public var readsRequest: Bool { readsRequestFields }

    /// The fields it reads: the key's headers, and X-Forwarded-For behind trusted proxies.
    public var requestFieldNames: [HTTPField.Name]? {
        var names: [HTTPField.Name] = []
        for part in configuration.key { if case .header(let name) = part { names.append(name) } }
        if !configuration.trustedProxies.isEmpty { names.append(HTTPField.Name("X-Forwarded-For")!) }
        return names
    }

    /// Only a concurrency limit has something to give back when the exchange ends.
    public var hasLogHook: Bool { configuration.concurrency != nil }

    public func onLog(context: RequestContext, summary: RequestSummary) {
        if let key = context[OutcomeKey.self]?.concurrencyKey { store.releaseConcurrency(key: key) }
    }

    /// The key: its parts joined; a missing header or parameter counts as its own empty value.
    func key(_ request: HTTPRequest, context: RequestContext) -> String {
        let key = configuration.key
        if key.count == 1 { return keyPart(key[0], request, context: context) }
        var parts: [String] = []
        parts.reserveCapacity(key.count)
        for part in key { parts.append(keyPart(part, request, context: context)) }
        return parts.joined(separator: "\u{1F}")
    }

    private func keyPart(_ part: KeyPart, _ request: HTTPRequest, context: RequestContext) -> String {
        switch part {
        case .ip: return clientIP(request, context: context)
        case .header(let name): return request.headerFields[name] ?? ""
        case .pathParameter(let name): return context.pathParameter(name) ?? ""
        case .route: return context.route?.name ?? ""
        case .service: return context.route?.serviceName ?? ""
        case .consumer:
            // Consumers and addresses never share a key: a consumer named like an address is not that address.
            if let consumer = context.consumer { return "c:" + consumer.id }
            return "ip:" + clientIP(request, context: context)
        case .credential:
            if let credential = context.credential { return "k:" + credential }
            return "ip:" + clientIP(request, context: context)
        }
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy; then the right-most
    /// `X-Forwarded-For` entry that is not a trusted proxy itself (entries to its left are the
    /// client's own claims).
    func clientIP(_ request: HTTPRequest, context: RequestContext) -> String {
        let proxies = configuration.trustedProxies
        guard !proxies.isEmpty, proxies.contains(where: { $0.contains(context.clientIP) }),
              let forwarded = request.headerFields[values: .init("X-Forwarded-For")!].joined(separator: ",") as String?,
              !forwarded.isEmpty else { return context.clientIP }
        var candidate = context.clientIP
        for entry in forwarded.split(separator: ",").reversed() {
            let address = String(entry.trimmingSpaces)
            guard CIDR.bytes(of: address) != nil else { break }
            candidate = address
            if !proxies.contains(where: { $0.contains(address) }) { break }
        }
        return candidate
    }

    private func refusal(_ message: String, retryAfterSeconds: Int, context: RequestContext) -> LocalResponse {
        var response = LocalResponse.error(.tooManyRequests, message, requestID: context.requestID,
                                           extra: [("retry_after", String(retryAfterSeconds))])
        response.headerFields[.retryAfter] = String(retryAfterSeconds)
        return response
    }

    /// Whole seconds, rounded up (a client told 0 would retry at once).
    static func seconds(_ nanos: UInt64) -> Int {
        Int((nanos + 999_999_999) / 1_000_000_000)
    }
}

/// Counts of what a configured rate limit did that no response shows (for logs and metrics).
public final class RateLimitStatistics: Sendable {
    public let refused = ManagedAtomic<Int>(0)
    /// Requests decided by the local store because Redis did not answer (`fail: open`).
    public let failedOpen = ManagedAtomic<Int>(0)
    /// Requests answered 503 because Redis did not answer (`fail: closed`).
    public let failedClosed = ManagedAtomic<Int>(0)
}

/// The stores of a configured plugin, kept in the gateway's registry across reloads while the scope
/// and its limits stay the same (a reload does not hand everyone a fresh budget).
enum LimitStores {
    static func store(_ registry: PluginStateRegistry, scope: String, limiters: [RateLimiter], maxKeys: Int) -> LocalLimitStore {
        let key = "rate-limiting|local|\(scope)|\(limiters.map { "\($0.limit.text):\($0.algorithm.rawValue):\($0.burst)" })|\(maxKeys)"
        return registry.value(for: key) { LocalLimitStore(maxKeys: maxKeys) }
    }

    static func statistics(_ registry: PluginStateRegistry, scope: String) -> RateLimitStatistics {
        registry.value(for: "rate-limiting|statistics|\(scope)") { RateLimitStatistics() }
    }

    /// The hybrid store of a key space: its unsent counts survive a reload.
    static func hybrid(_ registry: PluginStateRegistry, prefix: String, make: () -> HybridLimitStore) -> HybridLimitStore {
        registry.value(for: "rate-limiting|hybrid|\(prefix)", make: make)
    }
}
