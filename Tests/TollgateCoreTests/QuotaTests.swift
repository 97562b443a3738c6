import Testing
import TollgateCore

@Suite struct QuotaTests {
    static func time(_ year: Int64, _ month: Int64, _ day: Int64, _ hour: Int64 = 0, _ minute: Int64 = 0, _ second: Int64 = 0) -> Int64 {
        CivilDate.days(year: year, month: month, day: day) * 86_400 + hour * 3_600 + minute * 60 + second
    }

    @Test func civilDates() {
        #expect(CivilDate.days(year: 1970, month: 1, day: 1) == 0)
        #expect(CivilDate.from(days: CivilDate.days(year: 2024, month: 2, day: 29)) == (2024, 2, 29))
        #expect(CivilDate.rfc3339(Self.time(2026, 11, 27, 14, 30, 5)) == "2026-11-27T14:30:05Z")
        for days in stride(from: Int64(-800_000), to: 800_000, by: 997) {
            let (y, m, d) = CivilDate.from(days: days)
            #expect(CivilDate.days(year: y, month: m, day: d) == days)
        }
    }

    @Test func calendarMonthResetsOnTheFirst() {
        let meter = QuotaMeter(quota: PlanConfig.Quota(parsing: "3/month")!)
        var usage = QuotaUsage()
        var allowed: [Bool] = []
        let lastSecond = Self.time(2026, 12, 31, 23, 59, 59)
        for offset in [Int64(0), 1, 2, 3] {
            let (decision, next) = meter.decide(usage, now: lastSecond - 10 + offset)
            allowed.append(decision.allowed)
            usage = next
            if offset == 3 { #expect(decision.resetAt == Self.time(2027, 1, 1)) }
        }
        #expect(allowed == [true, true, true, false])
        // The new year: a new month, a fresh quota; the old bucket is dropped.
        let (decision, next) = meter.decide(usage, now: Self.time(2027, 1, 1, 0, 0, 1))
        #expect(decision.allowed && decision.remaining == 2)
        #expect(next.buckets.count == 1)
    }

    @Test func calendarWeekStartsOnMonday() {
        let meter = QuotaMeter(quota: PlanConfig.Quota(limit: 10, period: .week))
        // 2026-11-27 is a Friday: its week began Monday 2026-11-23.
        #expect(meter.window(now: Self.time(2026, 11, 27, 12)).bucket == Self.time(2026, 11, 23))
        #expect(meter.window(now: Self.time(2026, 11, 27, 12)).resetAt == Self.time(2026, 11, 30))
    }

    /// Rolling: the last 24 hours in hour buckets; room comes back as old hours leave the window.
    @Test func rollingDayCountsTheLast24Hours() {
        let meter = QuotaMeter(quota: PlanConfig.Quota(limit: 2, period: .day, window: .rolling))
        let start = Self.time(2026, 11, 27, 10, 15)
        var usage = QuotaUsage()
        var (decision, next) = meter.decide(usage, now: start)
        usage = next
        (decision, next) = meter.decide(usage, now: start + 5 * 3_600)
        usage = next
        (decision, next) = meter.decide(usage, now: start + 6 * 3_600)
        #expect(!decision.allowed)
        #expect(decision.resetAt == Self.time(2026, 11, 28, 10))   // the 10:00 bucket leaves the window
        (decision, next) = meter.decide(usage, now: Self.time(2026, 11, 28, 10, 0, 1))
        #expect(decision.allowed)
    }

    @Test func quotaTexts() {
        #expect(PlanConfig.Quota(parsing: "10k/month") == PlanConfig.Quota(limit: 10_000, period: .month))
        #expect(PlanConfig.Quota(parsing: "1M/day")?.limit == 1_000_000)
        for bad in ["10/fortnight", "x/day", "0/day", "10"] { #expect(PlanConfig.Quota(parsing: bad) == nil, "\(bad)") }
    }

    @Test func planConfigurationErrors() {
        #expect(configErrors("""
            services: {a: {targets: [{url: "http://127.0.0.1:1"}]}}
            routes: [{match: {paths: ["/"]}, service: a}]
            plans:
              gold: {limits: ["100/s"], quota: {limit: 10, period: fortnight}}
              free: {quota: "lots"}
              empty: {}
            consumers:
              - {name: a, plan: platinum}
            """) == [
                "plans.gold.quota.period: expected hour, day, week or month (line 4)",
                "plans.free.quota: expected a quota such as 10000/month, 1M/day or 500/hour (line 5)",
                "plans.empty: give limits, a quota, or both (line 6)",
                "consumers[0].plan: no plan named 'platinum' (list it under plans:) (line 8)",
            ])
    }
}
