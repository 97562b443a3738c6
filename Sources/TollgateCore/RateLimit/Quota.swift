/// A consumer's use of a quota: request counts in time buckets (seconds since 1970, UTC). A calendar
/// quota has one bucket, the period's start; a rolling one has a bucket per hour (day, week and month
/// quotas) or per minute (hour quotas), and counts those inside the last period.
public struct QuotaUsage: Sendable, Equatable, Codable {
    public var buckets: [Int64: Int]

    public init(buckets: [Int64: Int] = [:]) {
        self.buckets = buckets
    }

    public var total: Int { buckets.values.reduce(0, +) }
}

/// What a quota said about one request.
public struct QuotaDecision: Sendable, Equatable {
    public var allowed: Bool
    public var used: Int
    public var remaining: Int
    /// When (seconds since 1970) the quota has room again: the next calendar period, or when the
    /// oldest counted bucket leaves a rolling window.
    public var resetAt: Int64

    public init(allowed: Bool, used: Int, remaining: Int, resetAt: Int64) {
        self.allowed = allowed
        self.used = used
        self.remaining = remaining
        self.resetAt = resetAt
    }
}

/// Decides requests against a plan's quota, as a pure function of the usage and the time.
public struct QuotaMeter: Sendable, Hashable {
    public var quota: PlanConfig.Quota

    public init(quota: PlanConfig.Quota) {
        self.quota = quota
    }

    /// The period's length in seconds (a month is 30 days when rolling).
    public var periodSeconds: Int64 {
        switch quota.period {
        case .hour: return 3_600
        case .day: return 86_400
        case .week: return 7 * 86_400
        case .month: return 30 * 86_400
        }
    }

    var bucketSeconds: Int64 {
        switch quota.window {
        case .calendar: return periodSeconds
        case .rolling: return quota.period == .hour ? 60 : 3_600
        }
    }

    /// The bucket a request at `now` is counted in, and the oldest bucket still counted.
    public func window(now: Int64) -> (bucket: Int64, oldest: Int64, resetAt: Int64) {
        switch quota.window {
        case .calendar:
            let start = Self.calendarStart(quota.period, now: now)
            return (start, start, Self.calendarEnd(quota.period, start: start))
        case .rolling:
            let bucket = now - now % bucketSeconds
            let oldest = bucket - periodSeconds + bucketSeconds
            return (bucket, oldest, oldest + periodSeconds)
        }
    }

    /// Charges `cost` when it fits; either way drops the buckets that no longer count.
    public func decide(_ usage: QuotaUsage, now: Int64, cost: Int = 1) -> (QuotaDecision, QuotaUsage) {
        let (bucket, oldest, windowReset) = window(now: now)
        var kept = usage
        kept.buckets = usage.buckets.filter { $0.key >= oldest }
        let used = kept.total
        var resetAt = windowReset
        if quota.window == .rolling, let first = kept.buckets.keys.min() { resetAt = first + periodSeconds }
        if used + cost > quota.limit {
            return (QuotaDecision(allowed: false, used: used, remaining: max(0, quota.limit - used), resetAt: resetAt), kept)
        }
        kept.buckets[bucket, default: 0] += cost
        if quota.window == .rolling, let first = kept.buckets.keys.min() { resetAt = first + periodSeconds }
        return (QuotaDecision(allowed: true, used: used + cost, remaining: quota.limit - used - cost, resetAt: resetAt), kept)
    }

    // MARK: calendar (UTC)

    static func calendarStart(_ period: PlanConfig.Quota.Period, now: Int64) -> Int64 {
        switch period {
        case .hour: return now - now % 3_600
        case .day: return now - now % 86_400
        case .week:
            let day = now / 86_400
            let weekday = (day + 3) % 7   // 0 = Monday (1970-01-01 was a Thursday)
            return (day - weekday) * 86_400
        case .month:
            let (year, month, _) = CivilDate.from(days: now / 86_400)
            return CivilDate.days(year: year, month: month, day: 1) * 86_400
        }
    }

    static func calendarEnd(_ period: PlanConfig.Quota.Period, start: Int64) -> Int64 {
        switch period {
        case .hour: return start + 3_600
        case .day: return start + 86_400
        case .week: return start + 7 * 86_400
        case .month:
            let (year, month, _) = CivilDate.from(days: start / 86_400)
            return CivilDate.days(year: month == 12 ? year + 1 : year, month: month == 12 ? 1 : month + 1, day: 1) * 86_400
        }
    }
}

/// Days since 1970-01-01 and proleptic Gregorian dates (Howard Hinnant's algorithms).
public enum CivilDate {
    public static func days(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    public static func from(days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    /// `2026-12-01T00:00:00Z`.
    public static func rfc3339(_ seconds: Int64) -> String {
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let (year, month, day) = from(days: days)
        let rest = seconds - days * 86_400
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(year)-\(two(month))-\(two(day))T\(two(rest / 3_600)):\(two(rest % 3_600 / 60)):\(two(rest % 60))Z"
    }
}
