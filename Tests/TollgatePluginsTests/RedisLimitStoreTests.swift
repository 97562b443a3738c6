import NIOCore
import NIOPosix
import Testing
import TollgateCore
@testable import TollgatePlugins
import TollgateRedis
import TollgateTesting

/// The Redis policy's script and the hybrid policy's store against a real redis-server.
@Suite struct RedisLimitStoreTests {
    /// A timeline replayed through `RateLimiter` (the local algorithms) and the Lua script (with the
    /// same clock): both admit and refuse the same requests, and tell the same remaining counts.
    /// Replayed in real time from the next whole second: the script's keys expire by Redis's own
    /// clock, so a timeline run faster than real time (as this test once did) loses state whenever
    /// a loaded machine stalls it for more than a key's second of slack.
    @Test(arguments: RateLimitAlgorithm.allCases)
    func scriptAgreesWithTheLocalAlgorithm(_ algorithm: RateLimitAlgorithm) async throws {
        try await withRedis { group, pool in
        let limiter = RateLimiter(limit: RateLimit(parsing: "5/s")!, algorithm: algorithm,
                                  burst: algorithm == .gcra || algorithm == .tokenBucket ? 3 : nil)
        let store = RedisLimitStore(pool: pool, limiters: [limiter], keyPrefix: "t:\(algorithm.rawValue):")
        // Bursts, gaps, window edges: times in microseconds from a round second.
        let base = (WallClock.milliseconds() / 1_000 + 1) * 1_000_000
        var times: [Int64] = [0, 1, 2, 3, 4, 5, 6, 100_000, 250_000, 999_999, 1_000_000, 1_000_001, 1_100_000,
                              1_500_000, 1_500_001, 1_500_002, 1_900_000, 2_000_000, 2_600_000, 2_600_001, 2_600_002,
                              2_600_003, 2_600_004, 2_600_005, 4_000_000, 4_000_001]
        var jitter: Int64 = 4_100_000
        for step in 0..<40 { jitter += Int64((step * 7_919) % 180_000); times.append(jitter) }
        var state = RateLimitState.empty
        for time in times {
            let wait = (base + time) / 1_000 - WallClock.milliseconds()
            if wait > 0 { try await Task.sleep(for: .milliseconds(wait)) }
            let (local, next) = limiter.decide(state, now: UInt64(base + time) * 1_000)
            if local.allowed { state = next }
            let remote = try await store.decide(key: "k", on: group.next(), nowMicros: base + time).get()[0]
            #expect(remote.allowed == local.allowed, "at +\(time) µs")
            #expect(remote.remaining == local.remaining, "at +\(time) µs")
            #expect(remote.delayed == local.delayed)
            // Times agree to the microsecond the script counts in.
            #expect(abs(Int64(remote.retryAfterNanos) - Int64(local.retryAfterNanos)) <= 2_000, "retry at +\(time) µs")
            #expect(abs(Int64(remote.resetNanos) - Int64(local.resetNanos)) <= 2_000, "reset at +\(time) µs")
        }
        }
    }

    /// Two limits in one script call: a request refused by one is charged to neither; keys are apart.
    @Test func severalLimitsAreAllOrNothing() async throws {
        try await withRedis { group, pool in
        let limiters = [RateLimiter(limit: RateLimit(parsing: "2/s")!, algorithm: .fixedWindow),
                        RateLimiter(limit: RateLimit(parsing: "3/min")!, algorithm: .fixedWindow)]
        let store = RedisLimitStore(pool: pool, limiters: limiters, keyPrefix: "multi:")
        let second: Int64 = 1_000_000
        let start: Int64 = 1_800_000_000 * second   // a whole minute
        var allowed: [Bool] = []
        for time in [start, start + 1, start + 2, start + second, start + second + 1, start + 2 * second] {
            let decisions = try await store.decide(key: "a", on: group.next(), nowMicros: time).get()
            allowed.append(decisions.allSatisfy(\.allowed))
        }
        // 2 in the first second; the third refused by 2/s and not charged to 3/min; then one more
        // in the next second (3/min reached), and nothing after.
        #expect(allowed == [true, true, false, true, false, false])
        let other = try await store.decide(key: "b", on: group.next(), nowMicros: start + 2 * second).get()
        #expect(other.allSatisfy { $0.allowed })
        }
    }

    /// Two nodes' hybrid stores on one Redis and one clock: each admits locally, syncs when its unseen
    /// share is used, and together they stay within limit + (nodes - 1) × syncAt.
    @Test func hybridNodesStayWithinTheBound() async throws {
        try await withRedis { group, pool in
        let limiter = RateLimiter(limit: RateLimit(parsing: "100/min")!, algorithm: .fixedWindow)
        let nodes = (0..<2).map { _ in
            HybridLimitStore(pool: pool, limiters: [limiter], keyPrefix: "hy:", fraction: 0.1, interval: .seconds(60), maxKeys: 1_000)
        }
        #expect(nodes[0].syncAt == [10])
        let loop = group.next()
        let now: Int64 = 1_800_000_000_000 + 5_000   // 5 s into a minute
        var admitted = 0
        var roundTrips = 0
        for request in 0..<400 {
            let node = nodes[request % 2]
            switch node.decideLocally(key: "k", nowMillis: now) {
            case .decided(let decisions):
                if decisions[0].allowed { admitted += 1 }
            case .needsSync:
                roundTrips += 1
                try await node.sync(key: "k", on: loop).get()
                if case .decided(let decisions) = node.decideLocally(key: "k", nowMillis: now, force: true), decisions[0].allowed {
                    admitted += 1
                }
            }
        }
        #expect(admitted >= 100)
        #expect(admitted <= 100 + 10, "admitted \(admitted)")
        // One round trip per 10 admissions at most, none for refusals.
        #expect(roundTrips <= 12, "\(roundTrips) round trips")
        // A flush sends what is left; Redis's count is what was admitted.
        for node in nodes { node.flush(on: loop, nowMillis: now) }
        try await Task.sleep(for: .milliseconds(100))
        let windowKey = "hy:k:0:\(now / 60_000)"
        let stored = try await pool.client(on: loop).send(["GET", windowKey]).get().int
        #expect(stored == admitted)
        // The next window starts afresh, and the first node still knows the previous one.
        if case .decided(let decisions) = nodes[0].decideLocally(key: "k", nowMillis: now + 60_000) {
            #expect(decisions[0].allowed)
        } else {
            Issue.record("a fresh window needed a sync")
        }
        }
    }

    /// Keys idle for two periods are dropped at a flush; a key cap evicts under a flood of new keys.
    @Test func hybridMemoryIsBounded() async throws {
        try await withRedis { group, pool in
        let limiter = RateLimiter(limit: RateLimit(parsing: "100/s")!, algorithm: .slidingWindow)
        let store = HybridLimitStore(pool: pool, limiters: [limiter], keyPrefix: "mem:", fraction: 1, interval: .seconds(60),
                                     maxKeys: 32 * 16)
        let now: Int64 = 1_800_000_000_000
        for index in 0..<5_000 { _ = store.decideLocally(key: "ip-\(index)", nowMillis: now) }
        #expect(store.keyCount <= 5_000)
        store.flush(on: group.next(), nowMillis: now)   // sends everything (so keys become evictable)
        try await Task.sleep(for: .milliseconds(300))
        for index in 5_000..<10_000 { _ = store.decideLocally(key: "ip-\(index)", nowMillis: now) }
        #expect(store.keyCount <= 5_000 + 32 * 16)
        store.flush(on: group.next(), nowMillis: now)
        try await Task.sleep(for: .milliseconds(300))
        // Idle past two periods: dropped once everything they counted has reached Redis.
        for _ in 0..<50 where store.keyCount > 0 {
            store.flush(on: group.next(), nowMillis: now + 10_000)
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(store.keyCount == 0)
        }
    }

    /// A redis-server, a loop and a pool for `body`, all stopped afterwards.
    func withRedis(_ body: (MultiThreadedEventLoopGroup, RedisPool) async throws -> Void) async throws {
        let server = try await RedisServer()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pool = RedisPool(configuration: RedisConfiguration(url: server.url)!)
        do { try await body(group, pool) } catch {
            server.stop()
            try await group.shutdownGracefully()
            throw error
        }
        for closing in pool.close() { try? await closing.get() }
        server.stop()
        try await group.shutdownGracefully()
    }
}
