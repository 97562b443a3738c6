import Testing
import TollgateCore

@Suite struct RateLimitTests {
    static let second: UInt64 = 1_000_000_000
    static let ms: UInt64 = 1_000_000

    @Test func parsesRates() {
        #expect(RateLimit(parsing: "100/s") == RateLimit(count: 100, periodNanos: Self.second, text: "100/s"))
        #expect(RateLimit(parsing: "5000/min")?.periodNanos == 60 * Self.second)
        #expect(RateLimit(parsing: "1M/day")?.count == 1_000_000)
        #expect(RateLimit(parsing: "10/5s")?.periodNanos == 5 * Self.second)
        #expect(RateLimit(parsing: "2k/hour")?.count == 2_000)
        for bad in ["100", "0/s", "-1/s", "10/fortnight", "x/s", "10/0s", "/s"] { #expect(RateLimit(parsing: bad) == nil, "\(bad)") }
    }

    /// Runs `times` (ms offsets) through a limiter and returns which were allowed.
    static func run(_ limiter: RateLimiter, at times: [UInt64], start: UInt64 = 1_000 * second) -> [Bool] {
        var state = RateLimitState.empty
        return times.map { offset in
            let (decision, next) = limiter.decide(state, now: start + offset * ms)
            if decision.allowed { state = next }
            return decision.allowed
        }
    }

    @Test func fixedWindowCountsPerWindowAndAllowsTheEdgeBurst() {
        let limiter = RateLimiter(limit: RateLimit(count: 3, periodNanos: Self.second), algorithm: .fixedWindow)
        #expect(Self.run(limiter, at: [0, 10, 20, 30, 999, 1_000, 1_001, 1_002, 1_003])
                == [true, true, true, false, false, true, true, true, false])
        // The known weakness: 3 at the end of one window and 3 at the start of the next.
        #expect(Self.run(limiter, at: [997, 998, 999, 1_000, 1_001, 1_002]) == Array(repeating: true, count: 6))
    }

    @Test func slidingWindowSmoothsTheEdge() {
        let limiter = RateLimiter(limit: RateLimit(count: 4, periodNanos: Self.second), algorithm: .slidingWindow)
        // 4 at the end of a window: at the start of the next, the previous window still counts nearly fully.
        #expect(Self.run(limiter, at: [900, 910, 920, 930, 1_000, 1_500, 1_800])
                == [true, true, true, true, false, true, true])
        // Remaining and retry-after are consistent with the estimate.
        var state = RateLimitState.empty
        let base = 1_000 * Self.second
        for offset: UInt64 in [0, 1, 2, 3] { state = limiter.decide(state, now: base + offset).1 }
        let (refused, _) = limiter.decide(state, now: base + 10 * Self.ms)
        #expect(!refused.allowed)
        #expect(refused.retryAfterNanos > 0 && refused.retryAfterNanos <= Self.second)
    }

    @Test func slidingLogIsExact() {
        let limiter = RateLimiter(limit: RateLimit(count: 3, periodNanos: Self.second), algorithm: .slidingLog)
        // The window is the last second, open at its old end: at 1 000 ms the request at 0 has left it.
        #expect(Self.run(limiter, at: [0, 100, 200, 300, 999, 1_000, 1_050, 1_100, 1_150, 1_250])
                == [true, true, true, false, false, true, false, true, false, true])
        var state = RateLimitState.empty
        let base = 1_000 * Self.second
        for offset: UInt64 in [0, 100, 200] { state = limiter.decide(state, now: base + offset * Self.ms).1 }
        let (refused, _) = limiter.decide(state, now: base + 500 * Self.ms)
        #expect(refused.retryAfterNanos == 500 * Self.ms)   // when the request at 0 leaves the window
    }

    @Test func tokenBucketRefillsUpToBurst() {
        let limiter = RateLimiter(limit: RateLimit(count: 10, periodNanos: Self.second), algorithm: .tokenBucket, burst: 2)
        // Two at once (the burst), then one per 100 ms.
        #expect(Self.run(limiter, at: [0, 0, 0, 50, 100, 150, 200, 200, 10_000, 10_000, 10_000])
                == [true, true, false, false, true, false, true, false, true, true, false])
    }

    @Test func gcraSpacesRequests() {
        let limiter = RateLimiter(limit: RateLimit(count: 10, periodNanos: Self.second), algorithm: .gcra, burst: 1)
        #expect(Self.run(limiter, at: [0, 50, 100, 150, 200, 210, 300]) == [true, false, true, false, true, false, true])
        let bursty = RateLimiter(limit: RateLimit(count: 10, periodNanos: Self.second), algorithm: .gcra, burst: 3)
        #expect(Self.run(bursty, at: [0, 0, 0, 0, 100, 100]) == [true, true, true, false, true, false])
    }

    /// Throttling: a request over the limit but within max_delay is admitted with a wait.
    @Test func delayModeSchedulesInsteadOfRefusing() {
        let limiter = RateLimiter(limit: RateLimit(count: 10, periodNanos: Self.second), algorithm: .gcra, burst: 1,
                                  maxDelayNanos: 250 * Self.ms)
        var state = RateLimitState.empty
        let now = 1_000 * Self.second
        var waits: [UInt64?] = []
        for _ in 0..<5 {
            let (decision, next) = limiter.decide(state, now: now)
            if decision.allowed { state = next }
            waits.append(decision.allowed ? decision.retryAfterNanos : nil)
        }
        #expect(waits == [0, 100 * Self.ms, 200 * Self.ms, nil, nil])   // the fourth would wait 300 ms > 250
    }

    /// The monotonic clock may be read on different cores; a decision at an earlier time than the
    /// state's must not crash or grant extra budget.
    @Test func clockGoingBackIsHarmless() {
        for algorithm in RateLimitAlgorithm.allCases {
            let limiter = RateLimiter(limit: RateLimit(count: 2, periodNanos: Self.second), algorithm: algorithm)
            var state = RateLimitState.empty
            var allowed = 0
            for now: UInt64 in [1_000 * Self.second, 1_000 * Self.second - 5 * Self.ms, 1_000 * Self.second - 10 * Self.ms, 1_000 * Self.second] {
                let (decision, next) = limiter.decide(state, now: now)
                if decision.allowed { state = next; allowed += 1 }
            }
            #expect(allowed == 2, "\(algorithm) allowed \(allowed)")
        }
    }
}
