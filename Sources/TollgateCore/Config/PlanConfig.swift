/// `plans:`: what a consumer on each plan may use — rate limits and a quota — referenced by
/// `consumers[].plan` and enforced by the `plans` plugin.
///
/// ```yaml
/// plans:
///   free: {limits: ["5/s"], quota: "10000/month"}
///   gold: {limits: ["100/s", "20000/h"], quota: {limit: 5000000, period: month, window: rolling}}
/// ```
public struct PlanConfig: Sendable, Equatable {
    public var name: String
    public var limits: [RateLimit]
    public var quota: Quota?

    /// Requests per period: per calendar period (the month, day or hour in UTC, reset at its start) or
    /// rolling (the last period's worth of days or hours, counted in day or hour buckets).
    public struct Quota: Sendable, Equatable, Hashable {
        public enum Period: String, Sendable, CaseIterable {
            case hour, day, week, month
        }

        public enum Window: String, Sendable {
            case calendar
            case rolling
        }

        public var limit: Int
        public var period: Period
        public var window: Window

        public init(limit: Int, period: Period, window: Window = .calendar) {
            self.limit = limit
            self.period = period
            self.window = window
        }

        /// `10000/month`, `1M/day`, `500/hour`, `2k/week`.
        public init?(parsing text: String) {
            let parts = text.split(separator: "/", maxSplits: 1)
            guard parts.count == 2, let period = Period(rawValue: parts[1].trimmingSpaces.lowercased()) else { return nil }
            var count = parts[0].trimmingSpaces
            var multiplier = 1
            if count.hasSuffix("k") || count.hasSuffix("K") { multiplier = 1_000; count = count.dropLast() } else if count.hasSuffix("M") {
                multiplier = 1_000_000
                count = count.dropLast()
            }
            guard let base = Int(count), base > 0, base <= Int(Int32.max) else { return nil }
            self.init(limit: base * multiplier, period: period)
        }

        public var text: String { "\(limit)/\(period.rawValue)" }
    }

    static func parse(_ node: ConfigNode) -> [String: PlanConfig] {
        var plans: [String: PlanConfig] = [:]
        for (name, value) in node.entries() ?? [] {
            value.expectMapping(keys: ["limits", "quota"], required: true)
            var plan = PlanConfig(name: name, limits: [], quota: nil)
            for item in value["limits"].elements() ?? [] {
                guard let text = item.string() else { continue }
                if let limit = RateLimit(parsing: text) { plan.limits.append(limit) } else {
                    item.error("expected a rate such as 100/s, 5000/min, 1M/day or 10/5s")
                }
            }
            let quota = value["quota"]
            if case .mapping = quota.node {
                quota.expectMapping(keys: ["limit", "period", "window"])
                if let limit = quota["limit"].int(required: true, range: 1...Int(Int32.max) * 1_000),
                   let periodText = quota["period"].string(required: true) {
                    if let period = Quota.Period(rawValue: periodText) {
                        var parsed = Quota(limit: limit, period: period)
                        if let windowText = quota["window"].string() {
                            if let window = Quota.Window(rawValue: windowText) { parsed.window = window } else {
                                quota["window"].error("expected calendar or rolling")
                            }
                        }
                        plan.quota = parsed
                    } else {
                        quota["period"].error("expected hour, day, week or month")
                    }
                }
            } else if let text = quota.string() {
                if let parsed = Quota(parsing: text) { plan.quota = parsed } else {
                    quota.error("expected a quota such as 10000/month, 1M/day or 500/hour")
                }
            }
            if !value["limits"].isPresent && !value["quota"].isPresent { value.error("give limits, a quota, or both") }
            plans[name] = plan
        }
        return plans
    }
}
