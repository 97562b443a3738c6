import Testing
import TollgateCore

/// A deterministic generator for the balancers' randomness.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return StableHash.mix(state)
    }
}

@Suite struct BalancerTests {

    /// A string hashes as its UTF-8 bytes do, whichever way it is stored (small or large, ASCII or
    /// not): rate-limit shards and consistent hashing agree with the byte form.
    @Test func stableHashOfTextIsTheHashOfItsBytes() {
        for text in ["", "a", "127.0.0.1", String(repeating: "key-", count: 40), "ümlaut-€", "c:" + String(42)] {
            let bytes = Array(text.utf8)
            #expect(StableHash.hash(text) == bytes.withUnsafeBytes { StableHash.hash($0) }, "\(text)")
            #expect(StableHash.hash(text, seed: 7) == bytes.withUnsafeBytes { StableHash.hash($0, seed: 7) })
        }
        // FNV-1a then the splitmix finalizer, fixed forever (Maglev tables depend on it).
        #expect(StableHash.hash("") == StableHash.mix(0xcbf2_9ce4_8422_2325))
    }

    @Test func smoothWeightedSequence() {
        var balancer = SmoothWeightedRoundRobin(weights: [5, 1, 1])
        let names = ["a", "b", "c"]
        let sequence = (0..<7).map { _ in names[balancer.next()!] }
        #expect(sequence == ["a", "a", "b", "a", "c", "a", "a"])
    }

    /// The precomputed sequence (all targets available) is the classic algorithm's, pick for pick.
    @Test func precomputedSequenceMatchesTheStepwiseOne() {
        for weights in [[5, 1, 1], [3, 2], [1, 1, 1, 1], [7, 3, 9, 2, 2], [100, 1]] {
            var stepwise = SmoothWeightedRoundRobin(weights: weights)
            var scheduled = SmoothWeightedRoundRobin(weights: weights)
            for _ in 0..<500 { #expect(stepwise.next()! == scheduled.nextAllAvailable()) }
        }
    }

    @Test func smoothWeightedDistributionIsExact() {
        var balancer = SmoothWeightedRoundRobin(weights: [5, 3, 2])
        var counts = [0, 0, 0]
        for _ in 0..<100_000 { counts[balancer.next()!] += 1 }
        #expect(counts == [50_000, 30_000, 20_000])
    }

    @Test func skipsUnavailable() {
        var balancer = SmoothWeightedRoundRobin(weights: [1, 1, 1])
        let picks = (0..<6).map { _ in balancer.next { $0 != 1 }! }
        #expect(!picks.contains(1))
        #expect(picks.filter { $0 == 0 }.count == 3)
        #expect(balancer.next { _ in false } == nil)
    }

    @Test func roundRobinIgnoresWeightsAndSkips() {
        var balancer = RoundRobin(count: 3)
        #expect((0..<6).map { _ in balancer.next()! } == [0, 1, 2, 0, 1, 2])
        #expect((0..<4).map { _ in balancer.next { $0 != 0 }! } == [1, 2, 1, 2])
        #expect(balancer.next { _ in false } == nil)
    }

    @Test func leastConnectionsPicksFewestRelativeToWeight() {
        var balancer = LeastConnections(count: 3)
        #expect(balancer.next(inFlight: { [4, 1, 3][$0] }, weight: { _ in 1 }) == 1)
        // Weight 4 with 7 in flight ((7+1)/4 = 2) beats weight 1 with 2 in flight ((2+1)/1 = 3).
        #expect(balancer.next(inFlight: { [7, 2, 9][$0] }, weight: { [4, 1, 1][$0] }) == 0)
        #expect(balancer.next(inFlight: { _ in 0 }, weight: { _ in 1 }, isAvailable: { $0 == 2 }) == 2)
        // The same with the weights given at init.
        var weighted = LeastConnections(weights: [4, 1, 1])
        #expect(weighted.next(inFlight: { [7, 2, 9][$0] }) == 0)
        #expect(weighted.next(inFlight: { [8, 1, 9][$0] }) == 1)   // (8+1)/4 = 2.25 against (1+1)/1 = 2
        #expect(weighted.next(inFlight: { _ in 0 }, isAvailable: { $0 == 2 }) == 2)
        #expect(weighted.next(inFlight: { _ in 0 }, isAvailable: { _ in false }) == nil)
    }

    @Test func leastConnectionsDistributesLikeTheStepwiseVersion() {
        var fixed = LeastConnections(weights: [1, 1, 1, 1])
        var counts = [0, 0, 0, 0]
        var inFlight = [0, 0, 0, 0]
        for step in 0..<100_000 {
            let pick = fixed.next(inFlight: { inFlight[$0] })!
            counts[pick] += 1
            inFlight[pick] += 1
            if step % 2 == 1 { inFlight[(step / 2) % 4] = max(0, inFlight[(step / 2) % 4] - 1) }
        }
        for count in counts { #expect(abs(count - 25_000) < 500, "\(counts)") }
    }

    @Test func leastConnectionsWithLargeWeightsAndLoads() {
        var balancer = LeastConnections(count: 2)
        #expect(balancer.next(inFlight: { [1_000_000, 10][$0] }, weight: { [100_000, 1][$0] }) == 0)
        #expect(balancer.next(inFlight: { _ in 0 }, weight: { [1, 100_000][$0] }, maxWeight: 100_000) == 1)
    }

    /// Slow start through the weighted balancer: a target that just came back gets a small share,
    /// growing to its full share over the window.
    @Test func slowStartRampsTheShare() {
        let second: UInt64 = 1_000_000_000
        func share(at now: UInt64) -> Double {
            var balancer = SmoothWeightedRoundRobin(weights: [1, 1])
            var picks = [0, 0]
            for _ in 0..<10_000 {
                let index = balancer.next(isAvailable: { _ in true }, weight: { index in
                    SlowStart.weight(1, since: index == 1 ? 100 * second : 0, now: now, window: 10 * second)
                })!
                picks[index] += 1
            }
            return Double(picks[1]) / 10_000
        }
        #expect(abs(share(at: 100 * second) - 0.1 / 1.1) < 0.01)   // 10% of the weight: a share of 1/11
        #expect(abs(share(at: 105 * second) - 0.5 / 1.5) < 0.01)
        #expect(abs(share(at: 110 * second) - 0.5) < 0.01)
    }

    @Test func leastConnectionsBreaksTiesRoundRobin() {
        var balancer = LeastConnections(count: 3)
        let picks = (0..<6).map { _ in balancer.next(inFlight: { _ in 0 }, weight: { _ in 1 })! }
        #expect(picks == [0, 1, 2, 0, 1, 2])
    }

    /// Simulated traffic: the balancer sees its own in-flight counts; a slow target's requests take
    /// ten times longer, so with p2c over peak-EWMA it gets far less than a third.
    @Test func peakEWMAAvoidsASlowTarget() {
        var balancer = PeakEWMABalancer(count: 3)
        var random = SplitMix(state: 7)
        var counts = [0, 0, 0]
        var now: UInt64 = 1_000_000_000
        let latency: [UInt64] = [1_000_000, 1_000_000, 10_000_000]
        for _ in 0..<30_000 {
            let pick = balancer.next(now: now, random: &random, weight: { _ in 1 })!
            counts[pick] += 1
            balancer.started(pick)
            now += 100_000
            balancer.finished(pick, latencyNanos: latency[pick], now: now)
        }
        #expect(Double(counts[2]) / 30_000 < 0.2, "\(counts)")
        #expect(abs(counts[0] - counts[1]) < 3_000, "\(counts)")
    }

    @Test func peakEWMASpreadsEqualTargetsEvenly() {
        var balancer = PeakEWMABalancer(count: 4)
        var random = SplitMix(state: 11)
        var counts = [0, 0, 0, 0]
        for _ in 0..<100_000 { counts[balancer.next(now: 1, random: &random, weight: { _ in 1 })!] += 1 }
        for count in counts { #expect(abs(count - 25_000) < 1_500, "\(counts)") }
        #expect(balancer.next(now: 1, random: &random, weight: { _ in 1 }, isAvailable: { $0 == 3 }) == 3)
        #expect(balancer.next(now: 1, random: &random, weight: { _ in 1 }, isAvailable: { _ in false }) == nil)
    }
}

@Suite struct MaglevTests {
    static func names(_ count: Int) -> [String] { (0..<count).map { "10.0.0.\($0 + 1):8080" } }

    @Test func spreadsKeysEvenlyAndByWeight() {
        let table = MaglevTable(names: Self.names(5), weights: [1, 1, 1, 1, 1])
        var counts = [Int](repeating: 0, count: 5)
        for key in 0..<100_000 { counts[table.lookup(StableHash.hash("user-\(key)"))!] += 1 }
        for count in counts { #expect(abs(count - 20_000) < 1_500, "\(counts)") }

        let weighted = MaglevTable(names: Self.names(2), weights: [2, 1])
        var shares = [0, 0]
        for key in 0..<90_000 { shares[weighted.lookup(StableHash.hash("k\(key)"))!] += 1 }
        #expect(abs(shares[0] - 60_000) < 2_000, "\(shares)")
    }

    /// Removing one of N targets moves about 1/N of the keys (the removed target's), and adding one
    /// moves about 1/(N+1): measured over 100 000 keys.
    @Test(arguments: [5, 10])
    func changingOneTargetMovesAboutOneNth(_ n: Int) {
        let names = Self.names(n + 1)
        let before = MaglevTable(names: Array(names.prefix(n)), weights: Array(repeating: 1, count: n))
        let removed = MaglevTable(names: Array(names.prefix(n - 1)), weights: Array(repeating: 1, count: n - 1))
        let added = MaglevTable(names: names, weights: Array(repeating: 1, count: n + 1))
        var movedOnRemove = 0
        var movedOnAdd = 0
        let keys = 100_000
        for key in 0..<keys {
            let hash = StableHash.hash("session-\(key)")
            let target = names[before.lookup(hash)!]
            if names[removed.lookup(hash)!] != target { movedOnRemove += 1 }
            if names[added.lookup(hash)!] != target { movedOnAdd += 1 }
        }
        let removeShare = Double(movedOnRemove) / Double(keys)
        let addShare = Double(movedOnAdd) / Double(keys)
        #expect(abs(removeShare - 1.0 / Double(n)) < 0.03, "remove moved \(removeShare)")
        #expect(abs(addShare - 1.0 / Double(n + 1)) < 0.03, "add moved \(addShare)")
    }

    /// A target that is down loses its keys to the others; no other key moves.
    @Test func unavailableTargetsKeysSpread() {
        let table = MaglevTable(names: Self.names(4), weights: [1, 1, 1, 1])
        var receivers = Set<Int>()
        for key in 0..<10_000 {
            let hash = StableHash.hash("k\(key)")
            let normal = table.lookup(hash)!
            let fallback = table.lookup(hash) { $0 != 2 }!
            if normal != 2 { #expect(fallback == normal) } else { receivers.insert(fallback) }
            #expect(fallback != 2)
        }
        #expect(receivers == [0, 1, 3])
        #expect(table.lookup(1) { _ in false } == nil)
    }

    @Test func stableHashIsFixed() {
        // The same in every process: nodes of a cluster agree on a key's target.
        #expect(StableHash.hash("10.1.2.3") == StableHash.hash("10.1.2.3"))
        #expect(StableHash.hash("") == StableHash.mix(0xcbf2_9ce4_8422_2325))
    }
}

@Suite struct HealthTests {
    @Test func activeThresholds() {
        var tracker = ActiveHealthTracker(healthyThreshold: 2, unhealthyThreshold: 3)
        #expect(tracker.probe(succeeded: false) == nil)
        #expect(tracker.probe(succeeded: false) == nil)
        #expect(tracker.probe(succeeded: true) == nil)   // the run of failures restarts
        #expect(tracker.probe(succeeded: false) == nil)
        #expect(tracker.probe(succeeded: false) == nil)
        #expect(tracker.probe(succeeded: false) == false)
        #expect(!tracker.isHealthy)
        #expect(tracker.probe(succeeded: true) == nil)
        #expect(tracker.probe(succeeded: true) == true)
        #expect(tracker.isHealthy)
    }

    static let second: UInt64 = 1_000_000_000

    @Test func outlierEjectionGrowsAndEnds() {
        var detector = OutlierDetector(targets: 4, settings: .init(consecutiveErrors: 3, baseEjectionNanos: 10 * Self.second,
                                                                   maxEjectionNanos: 25 * Self.second, maxEjectionPercent: 50))
        var now = 100 * Self.second
        #expect(detector.failed(0, now: now) == nil)
        #expect(detector.failed(0, now: now) == nil)
        detector.succeeded(0)   // a success resets the run
        #expect(detector.failed(0, now: now) == nil)
        #expect(detector.failed(0, now: now) == nil)
        #expect(detector.failed(0, now: now) == now + 10 * Self.second)
        #expect(detector.isEjected(0, now: now + 9 * Self.second))
        #expect(detector.failed(0, now: now + Self.second) == nil)   // already out
        now += 11 * Self.second
        #expect(!detector.isEjected(0, now: now))
        for _ in 0..<2 { _ = detector.failed(0, now: now) }
        #expect(detector.failed(0, now: now) == now + 20 * Self.second)   // second ejection: twice as long
        now += 21 * Self.second
        for _ in 0..<2 { _ = detector.failed(0, now: now) }
        #expect(detector.failed(0, now: now) == now + 25 * Self.second)   // capped
    }

    @Test func outlierEjectionRespectsMaxPercent() {
        var detector = OutlierDetector(targets: 4, settings: .init(consecutiveErrors: 1, baseEjectionNanos: Self.second,
                                                                   maxEjectionNanos: Self.second, maxEjectionPercent: 50))
        #expect(detector.failed(0, now: 1) != nil)
        #expect(detector.failed(1, now: 1) != nil)
        #expect(detector.failed(2, now: 1) == nil)   // 2 of 4 is the limit
        #expect(detector.ejectedCount(now: 1) == 2)
        // At least one target may always be ejected.
        var small = OutlierDetector(targets: 3, settings: .init(consecutiveErrors: 1, maxEjectionPercent: 10))
        #expect(small.failed(0, now: 1) != nil)
        #expect(small.failed(1, now: 1) == nil)
    }

    @Test func slowStartRamps() {
        let window = 10 * Self.second
        #expect(SlowStart.weight(2, since: 0, now: 0, window: window) == 20)        // 10% floor
        #expect(SlowStart.weight(2, since: 0, now: 5 * Self.second, window: window) == 100)
        #expect(SlowStart.weight(2, since: 0, now: 10 * Self.second, window: window) == 200)
        #expect(SlowStart.weight(2, since: 0, now: 99 * Self.second, window: 0) == 200)
    }
}

@Suite struct RetryTests {
    @Test func budgetCapsRetriesToAShareOfRequests() {
        var budget = RetryBudget(percent: 20, minPerSecond: 0)
        let second: UInt64 = 1_000_000_000
        for _ in 0..<100 { budget.recordRequest(now: 5 * second) }
        var granted = 0
        for _ in 0..<50 where budget.tryRetry(now: 5 * second) { granted += 1 }
        #expect(granted == 20)
        // Ten seconds later the window has moved on: no requests, no budget.
        let later = budget.tryRetry(now: 16 * second)
        #expect(!later)
        var floor = RetryBudget(percent: 0, minPerSecond: 1)
        var floorGranted = 0
        for _ in 0..<50 where floor.tryRetry(now: second) { floorGranted += 1 }
        #expect(floorGranted == 10)   // 1 per second over the 10-second window
    }

    @Test func backoffIsJitteredAndCapped() {
        let policy = RetryPolicy(attempts: 3, backoffBaseNanos: 10_000_000, backoffMaxNanos: 50_000_000)
        #expect(policy.backoffNanos(retry: 0, unit: 0.999_999) <= 10_000_000)
        #expect(policy.backoffNanos(retry: 1, unit: 0.5) == 10_000_000)
        #expect(policy.backoffNanos(retry: 5, unit: 0.5) == 25_000_000)   // capped at 50 ms, then halved
        #expect(policy.backoffNanos(retry: 80, unit: 1) == 50_000_000)    // no overflow
        #expect(policy.backoffNanos(retry: 2, unit: 0) == 0)
    }

    @Test func idempotentMethods() {
        #expect(RetryPolicy.isIdempotent("GET"))
        #expect(RetryPolicy.isIdempotent("PUT"))
        #expect(!RetryPolicy.isIdempotent("POST"))
        #expect(!RetryPolicy.isIdempotent("PATCH"))
    }

    @Test func circuitBreakerLimits() {
        let limits = CircuitBreakerLimits(maxConnections: 2, maxPending: 1, maxRetries: 0)
        #expect(limits.admits(.connection, current: 1))
        #expect(!limits.admits(.connection, current: 2))
        #expect(!limits.admits(.retry, current: 0))
        #expect(CircuitBreakerLimits().admits(.pending, current: 5_000))
    }
}
