import HTTPTypes
import Synchronization
import TollgateCore

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

        init?(parsing text: String) {
            switch text {
            case "ip": self = .ip
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
        /// Where the limits live: one counter space per configured plugin (its YAML path), kept across
        /// reloads while the configuration keeps it.
        public var scope: String = ""

        public init(from config: ConfigNode) {
            config.expectMapping(keys: ["limits", "algorithm", "key", "policy", "burst", "mode", "max_delay", "concurrency",
                                        "headers", "trusted_proxies", "max_keys"])
            scope = config.path
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
                    if text == "consumer" || text == "credential" {
                        node.error("'\(text)' keys need an authentication plugin, which this build does not have yet; use ip, header:NAME, path:NAME, route or service")
                    } else if let part = KeyPart(parsing: text) {
                        key.append(part)
                    } else {
                        node.error("expected ip, header:NAME, path:NAME, route or service")
                    }
                }
            }
            if let policy = config["policy"].string(), policy != "local" {
                if policy == "redis" || policy == "hybrid" {
                    config["policy"].error("policy '\(policy)' needs the Redis store, which this build does not have yet; use local")
                } else {
                    config["policy"].error("expected local, redis or hybrid")
                }
            }
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
        public let decisions: [RateLimitDecision]
        public let concurrencyKey: String?

        init(decisions: [RateLimitDecision], concurrencyKey: String?) {
            self.decisions = decisions
            self.concurrencyKey = concurrencyKey
        }
    }

    public enum OutcomeKey: ContextKey { public typealias Value = Outcome }

    let configuration: Configuration
    let limiters: [RateLimiter]
    let store: LocalLimitStore
    let policyHeader: String
    /// Each limit as a quoted policy name: `"10/s"`.
    let quotedLimits: [String]
    /// `RateLimit-Policy`, the same on every response: built once.
    let policyField: HTTPField

    public init(configuration: Configuration) {
        self.configuration = configuration
        let delay = configuration.mode == .delay ? configuration.maxDelayNanos : 0
        self.limiters = configuration.limits.map {
            RateLimiter(limit: $0, algorithm: configuration.algorithm, burst: configuration.burst, maxDelayNanos: delay)
        }
        self.store = LimitStores.store(scope: configuration.scope, limiters: limiters, maxKeys: configuration.maxKeys)
        self.policyHeader = configuration.limits.map { "\"\($0.text)\";q=\($0.count);w=\($0.periodSeconds)" }
            .joined(separator: ", ")
        self.quotedLimits = configuration.limits.map { "\"\($0.text)\"" }
        self.policyField = HTTPField(name: Self.policyName, value: policyHeader)
    }

    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        let key = self.key(request, context: context)
        var concurrencyKey: String?
        if let limit = configuration.concurrency {
            guard store.acquireConcurrency(key: key, limit: limit) else {
                return .respond(refusal("too many concurrent requests", retryAfterSeconds: 1, context: context))
            }
            concurrencyKey = key
        }
        var decisions: [RateLimitDecision] = []
        if !limiters.isEmpty {
            let now = MonotonicClock.nanoseconds()
            decisions = limiters.count == 1 ? [store.decide(key: key, limiter: limiters[0], now: now)]
                : store.decide(key: key, limiters: limiters, now: now)
            if let refused = decisions.filter({ !$0.allowed }).max(by: { $0.retryAfterNanos < $1.retryAfterNanos }) {
                if let concurrencyKey { store.releaseConcurrency(key: concurrencyKey) }
                var response = refusal("rate limit exceeded", retryAfterSeconds: Self.seconds(refused.retryAfterNanos),
                                       context: context)
                response.headerFields.append(contentsOf: headers(decisions))
                return .respond(response)
            }
        }
        context[OutcomeKey.self] = Outcome(decisions: decisions, concurrencyKey: concurrencyKey)
        var longest: UInt64 = 0
        for decision in decisions where decision.delayed { longest = max(longest, decision.retryAfterNanos) }
        let delay = longest
        if delay > 0 {
            // Throttled: the request waits its turn instead of being refused (the connection stays parked).
            return .suspend { _, _ in
                try await Task.sleep(nanoseconds: delay)
                return .proceed
            }
        }
        return .proceed
    }

    public func onResponse(_ response: inout HTTPResponse, context: inout RequestContext) {
        response.headerFields.append(contentsOf: responseFieldsToAdd(context: &context))
    }

    public func responseFieldsToAdd(context: inout RequestContext) -> [HTTPField] {
        guard let outcome = context[OutcomeKey.self], !outcome.decisions.isEmpty else { return [] }
        return headers(outcome.decisions)
    }

    /// Only a header key or trusted proxies (X-Forwarded-For) make it read the request's fields.
    public var readsRequestFields: Bool {
        !configuration.trustedProxies.isEmpty || configuration.key.contains { if case .header = $0 { return true }; return false }
    }

    /// Only a concurrency limit has something to give back when the exchange ends.
    public var hasLogHook: Bool { configuration.concurrency != nil }

    public func onLog(context: RequestContext, summary: RequestSummary) {
        if let key = context[OutcomeKey.self]?.concurrencyKey { store.releaseConcurrency(key: key) }
    }

    /// The key: its parts joined; a missing header or parameter counts as its own empty value.
    func key(_ request: HTTPRequest, context: RequestContext) -> String {
        var parts: [String] = []
        parts.reserveCapacity(configuration.key.count)
        for part in configuration.key {
            switch part {
            case .ip: parts.append(clientIP(request, context: context))
            case .header(let name): parts.append(request.headerFields[name] ?? "")
            case .pathParameter(let name): parts.append(context.pathParameter(name) ?? "")
            case .route: parts.append(context.route?.name ?? "")
            case .service: parts.append(context.route?.serviceName ?? "")
            }
        }
        return parts.count == 1 ? parts[0] : parts.joined(separator: "\u{1F}")
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

    private static let policyName = HTTPField.Name("RateLimit-Policy")!
    private static let rateLimitName = HTTPField.Name("RateLimit")!
    private static let legacyLimitName = HTTPField.Name("X-RateLimit-Limit")!
    private static let legacyRemainingName = HTTPField.Name("X-RateLimit-Remaining")!
    private static let legacyResetName = HTTPField.Name("X-RateLimit-Reset")!

    /// `RateLimit-Policy` lists every limit; `RateLimit` (and the legacy fields) speak of the one
    /// closest to running out.
    private func headers(_ decisions: [RateLimitDecision]) -> [HTTPField] {
        var tightest = 0
        for index in decisions.indices where decisions[index].remaining < decisions[tightest].remaining { tightest = index }
        guard tightest < decisions.count else { return [] }
        let decision = decisions[tightest]
        let limit = configuration.limits[tightest]
        let reset = String(Self.seconds(decision.resetNanos))
        let remaining = String(decision.remaining)
        var added: [HTTPField] = []
        added.reserveCapacity(5)
        if configuration.ietfHeaders {
            added.append(policyField)
            added.append(HTTPField(name: Self.rateLimitName, value: "\(quotedLimits[tightest]);r=\(remaining);t=\(reset)"))
        }
        if configuration.legacyHeaders {
            added.append(HTTPField(name: Self.legacyLimitName, value: String(limit.count)))
            added.append(HTTPField(name: Self.legacyRemainingName, value: remaining))
            added.append(HTTPField(name: Self.legacyResetName, value: reset))
        }
        return added
    }

    /// Whole seconds, rounded up (a client told 0 would retry at once).
    static func seconds(_ nanos: UInt64) -> Int {
        Int((nanos + 999_999_999) / 1_000_000_000)
    }
}

/// The local stores, one per configured plugin scope, kept across reloads while the scope and its
/// limits stay the same (a reload does not hand everyone a fresh budget).
enum LimitStores {
    private static let stores = Mutex<[String: LocalLimitStore]>([:])

    static func store(scope: String, limiters: [RateLimiter], maxKeys: Int) -> LocalLimitStore {
        let key = "\(scope)|\(limiters.map { "\($0.limit.text):\($0.algorithm.rawValue):\($0.burst)" })|\(maxKeys)"
        return stores.withLock { stores in
            if let store = stores[key] { return store }
            let store = LocalLimitStore(maxKeys: maxKeys)
            stores[key] = store
            return store
        }
    }
}
