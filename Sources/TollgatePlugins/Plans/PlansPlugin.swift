import HTTPTypes
import Logging
import NIOCore
import TollgateCore
import TollgateRedis

/// `plans`: applies each consumer's plan (`consumers[].plan`, the `plans:` of the config): its rate
/// limits and its quota. Requests of no identified consumer use `default_plan` if one is given (counted
/// by client address), else go through. Over a limit: 429 like `rate-limiting`; over the quota: 429
/// with `{"error":"quota exceeded","quota":"10000/month","reset":"2026-12-01T00:00:00Z"}` and
/// `Retry-After`. Every response carries `X-Quota-Limit`, `X-Quota-Remaining` and `X-Quota-Reset`.
/// Usage lives in Redis when `cluster.redis` is set (shared, survives restarts), else in memory with a
/// snapshot file (`snapshot`).
public struct PlansPlugin: GatewayPlugin {
    public static let name = "plans"
    public static let phase = PluginPhase.access
    public static let priority = 905   // after authentication, next to rate-limiting
    public static let changesRequest = false
    public static let responseHookOnlyAdds = true
    public var readsRequestFields: Bool { false }
    public var readsRequest: Bool { false }   // the consumer is in the context
    public var hasLogHook: Bool { false }

    public struct Configuration: PluginConfiguration {
        public var plans: [String: PlanConfig] = [:]
        public var defaultPlan: String?
        public var snapshot: String?
        public var snapshotInterval: Duration = .seconds(10)
        public var fail = RateLimitPlugin.FailMode.open
        public var redis: ClusterConfig.Redis?
        public var scope = ""
        public var state = PluginStateRegistry.shared

        public init(from config: ConfigNode) {
            config.expectMapping(keys: ["default_plan", "snapshot", "snapshot_interval", "fail", "store"])
            plans = config.diagnostics.plans
            scope = config.path
            state = config.diagnostics.state
            if plans.isEmpty { config.error("there are no plans: list them under plans:") }
            if let name = config["default_plan"].string() {
                if plans[name] == nil { config["default_plan"].error("no plan named '\(name)'") } else { defaultPlan = name }
            }
            snapshot = config["snapshot"].string()
            if let value = config["snapshot_interval"].duration() { snapshotInterval = value }
            if let text = config["fail"].string() {
                if let parsed = RateLimitPlugin.FailMode(rawValue: text) { fail = parsed } else { config["fail"].error("expected open or closed") }
            }
            let store = config["store"].string() ?? (config.diagnostics.cluster.redis == nil ? "local" : "redis")
            switch store {
            case "local": break
            case "redis":
                redis = config.diagnostics.cluster.redis
                if redis == nil { config["store"].error("store redis needs cluster.redis") }
                if snapshot != nil { config["snapshot"].error("only used with store local (Redis keeps the usage)") }
            default: config["store"].error("expected local or redis")
            }
        }
    }

    /// A plan made ready: its limiters and quota meter.
    struct Prepared: Sendable {
        var plan: PlanConfig
        var limiters: [RateLimiter]
        var meter: QuotaMeter?
        var policyField: HTTPField?
    }

    public enum OutcomeKey: ContextKey { public typealias Value = QuotaDecision }

    let configuration: Configuration
    let prepared: [String: Prepared]
    let limits: LocalLimitStore
    let localQuota: LocalQuotaStore
    let redisQuota: RedisQuotaStore?
    let redisLimits: [String: RedisLimitStore]
    let circuit: RedisCircuit?

    public init(configuration: Configuration) {
        self.configuration = configuration
        var prepared: [String: Prepared] = [:]
        for (name, plan) in configuration.plans {
            prepared[name] = Prepared(plan: plan, limiters: plan.limits.map { RateLimiter(limit: $0, algorithm: .slidingWindow) },
                                      meter: plan.quota.map(QuotaMeter.init))
        }
        self.prepared = prepared
        let scope = configuration.scope
        self.limits = configuration.state.value(for: "plans|limits|\(scope)|\(configuration.plans.values.map(\.limits).description)") {
            LocalLimitStore(maxKeys: 1_000_000)
        }
        self.localQuota = configuration.state.value(for: "plans|quota|\(configuration.snapshot ?? scope)") {
            LocalQuotaStore(snapshotPath: configuration.snapshot)
        }
        if let redis = configuration.redis, var connection = RedisConfiguration(url: redis.url) {
            connection.commandTimeout = .nanoseconds(Int64(redis.timeout.unsignedNanoseconds))
            connection.tlsCAFile = redis.tlsCAFile
            let pool = RedisPool.shared(connection)
            self.circuit = pool.circuit
            self.redisQuota = RedisQuotaStore(pool: pool, keyPrefix: redis.keyPrefix + "quota:")
            var stores: [String: RedisLimitStore] = [:]
            for (name, plan) in prepared where !plan.limiters.isEmpty {
                stores[name] = RedisLimitStore(pool: pool, limiters: plan.limiters,
                                               keyPrefix: RedisKeys.prefix(redis.keyPrefix, scope: "plan:" + name, limiters: plan.limiters))
            }
            self.redisLimits = stores
        } else {
            self.circuit = nil
            self.redisQuota = nil
            self.redisLimits = [:]
        }
    }

    /// A consumer's quota usage now (for the Admin API), from this node's store.
    public func usage(consumer: Consumer) -> QuotaDecision? {
        guard let name = consumer.plan, let meter = prepared[name]?.meter else { return nil }
        return localQuota.usage(key: "c:" + consumer.id, meter: meter, now: Int64(WallClock.milliseconds() / 1_000))
    }

    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        let key: String
        let planName: String
        if let consumer = context.consumer, !context.isAnonymous, let name = consumer.plan ?? configuration.defaultPlan {
            key = "c:" + consumer.id
            planName = name
        } else if let name = configuration.defaultPlan {
            key = "ip:" + context.clientIP
            planName = name
        } else {
            return .proceed
        }
        guard let plan = prepared[planName] else { return .proceed }
        guard let loop = context.eventLoop, let redisQuota, circuit?.shouldTry(now: MonotonicClock.nanoseconds()) ?? false else {
            return decideLocally(plan, key: key, context: &context)
        }
        // Redis: the plan's limits, then its quota (one script each), on the loop's connection.
        let plugin = self
        let limitsDecided: EventLoopFuture<[RateLimitDecision]> = redisLimits[planName]?.decide(key: key, on: loop)
            ?? loop.makeSucceededFuture([])
        let decided = limitsDecided.flatMap { decisions -> EventLoopFuture<([RateLimitDecision], QuotaDecision?)> in
            guard decisions.allSatisfy(\.allowed), let meter = plan.meter else { return loop.makeSucceededFuture((decisions, nil)) }
            return redisQuota.decide(key: key, meter: meter, on: loop).map { (decisions, $0) }
        }
        return .pending(decided.map { decisions, quota -> RequestContinuation in
            plugin.circuit?.succeeded()
            return { _, context in plugin.conclude(decisions, quota: quota, plan: plan, context: &context) }
        }.recover { _ -> RequestContinuation in
            if plugin.circuit?.failed(now: MonotonicClock.nanoseconds()) == true {
                Logger(label: "tollgate.plans").warning("Redis does not answer; plans fail \(plugin.configuration.fail.rawValue)")
            }
            return { _, context in
                if plugin.configuration.fail == .closed {
                    var response = LocalResponse.error(.serviceUnavailable, "quota store unavailable", requestID: context.requestID)
                    response.headerFields[.retryAfter] = "1"
                    return .respond(response)
                }
                return plugin.decideLocally(plan, key: key, context: &context)
            }
        })
    }

    private func decideLocally(_ plan: Prepared, key: String, context: inout RequestContext) -> RequestDecision {
        var decisions: [RateLimitDecision] = []
        if !plan.limiters.isEmpty {
            decisions = limits.decide(key: "\(plan.plan.name)|\(key)", limiters: plan.limiters, now: MonotonicClock.nanoseconds())
        }
        var quota: QuotaDecision?
        if decisions.allSatisfy(\.allowed), let meter = plan.meter {
            quota = localQuota.decide(key: key, meter: meter, now: Int64(WallClock.milliseconds() / 1_000))
            if let loop = context.eventLoop {
                localQuota.startSnapshots(on: loop, every: .nanoseconds(Int64(configuration.snapshotInterval.unsignedNanoseconds)))
            }
        }
        return conclude(decisions, quota: quota, plan: plan, context: &context)
    }

    private func conclude(_ decisions: [RateLimitDecision], quota: QuotaDecision?, plan: Prepared, context: inout RequestContext) -> RequestDecision {
        if let refused = decisions.filter({ !$0.allowed }).max(by: { $0.retryAfterNanos < $1.retryAfterNanos }) {
            let seconds = RateLimitPlugin.seconds(refused.retryAfterNanos)
            var response = LocalResponse.error(.tooManyRequests, "rate limit exceeded", requestID: context.requestID,
                                               extra: [("plan", JSONText.quote(plan.plan.name)), ("retry_after", String(seconds))])
            response.headerFields[.retryAfter] = String(seconds)
            return .respond(response)
        }
        guard let quota, let meter = plan.meter else { return .proceed }
        context[OutcomeKey.self] = quota
        guard quota.allowed else {
            let now = Int64(WallClock.milliseconds() / 1_000)
            let wait = max(1, quota.resetAt - now)
            var response = LocalResponse.error(.tooManyRequests, "quota exceeded", requestID: context.requestID,
                                               extra: [("plan", JSONText.quote(plan.plan.name)), ("quota", JSONText.quote(meter.quota.text)),
                                                       ("reset", JSONText.quote(CivilDate.rfc3339(quota.resetAt)))])
            response.headerFields[.retryAfter] = String(wait)
            response.headerFields.append(contentsOf: Self.fields(quota, meter: meter))
            return .respond(response)
        }
        return .proceed
    }

    public func responseFieldsToAdd(context: inout RequestContext) -> [HTTPField] {
        guard let quota = context[OutcomeKey.self], let plan = context.consumer?.plan ?? configuration.defaultPlan,
              let meter = prepared[plan]?.meter else { return [] }
        return Self.fields(quota, meter: meter)
    }

    public func onResponse(_ response: inout HTTPResponse, context: inout RequestContext) {
        response.headerFields.append(contentsOf: responseFieldsToAdd(context: &context))
    }

    private static let limitName = HTTPField.Name("X-Quota-Limit")!
    private static let remainingName = HTTPField.Name("X-Quota-Remaining")!
    private static let resetName = HTTPField.Name("X-Quota-Reset")!

    static func fields(_ quota: QuotaDecision, meter: QuotaMeter) -> [HTTPField] {
        [HTTPField(name: limitName, value: String(meter.quota.limit)), HTTPField(name: remainingName, value: String(quota.remaining)),
         HTTPField(name: resetName, value: CivilDate.rfc3339(quota.resetAt))]
    }
}
