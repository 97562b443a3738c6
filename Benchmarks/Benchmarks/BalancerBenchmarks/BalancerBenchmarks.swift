import Benchmark
import TollgateCore

/// One pick per balancer with 3 and 100 targets (target: under 100 ns each). Each sample is a batch of
/// 1 000 picks, so the harness's own per-sample cost does not swamp a pick; divide by 1 000.
let benchmarks: @Sendable () -> Void = {
    let configuration = Benchmark.Configuration(metrics: [.wallClock, .mallocCountTotal], maxDuration: .seconds(1))
    for count in [3, 100] {
        let weights = (0..<count).map { 1 + $0 % 3 }
        let inFlight = (0..<count).map { $0 % 7 }

        Benchmark("round_robin x1000, \(count) targets", configuration: configuration) { benchmark in
            var balancer = RoundRobin(count: count)
            for _ in benchmark.scaledIterations {
                for _ in 0..<1_000 { blackHole(balancer.next { _ in true }) }
            }
        }
        // Built outside the measured closure: building computes the sequence once.
        let weighted = SmoothWeightedRoundRobin(weights: weights)
        Benchmark("weighted_round_robin x1000, \(count) targets", configuration: configuration) { benchmark in
            var balancer = weighted
            for _ in benchmark.scaledIterations {
                for _ in 0..<1_000 { blackHole(balancer.nextAllAvailable()) }
            }
        }
        // While some target is out, the classic O(n) step runs over the available ones.
        Benchmark("weighted_round_robin, one target out x1000, \(count) targets", configuration: configuration) { benchmark in
            var balancer = weighted
            for _ in benchmark.scaledIterations {
                for _ in 0..<1_000 { blackHole(balancer.next { $0 != 1 }) }
            }
        }
        // Some targets idle: the scan stops at the first idle target of the largest weight.
        Benchmark("least_connections, some idle x1000, \(count) targets", configuration: configuration) { benchmark in
            var balancer = LeastConnections(weights: weights)
            for _ in benchmark.scaledIterations {
                for _ in 0..<1_000 { blackHole(balancer.next(inFlight: { inFlight[$0] })) }
            }
        }
        // Every target busy: every count is read.
        Benchmark("least_connections, all busy x1000, \(count) targets", configuration: configuration) { benchmark in
            var balancer = LeastConnections(weights: weights)
            for _ in benchmark.scaledIterations {
                for _ in 0..<1_000 { blackHole(balancer.next(inFlight: { inFlight[$0] + 1 })) }
            }
        }
        let table = MaglevTable(names: (0..<count).map { "10.0.\($0 / 256).\($0 % 256):80" }, weights: weights)
        Benchmark("consistent_hash x1000, \(count) targets", configuration: configuration) { benchmark in
            var key: UInt64 = 1
            for _ in benchmark.scaledIterations {
                for _ in 0..<1_000 {
                    key = StableHash.mix(key)
                    blackHole(table.lookup(key) { _ in true })
                }
            }
        }
        Benchmark("p2c_ewma x1000, \(count) targets", configuration: configuration) { benchmark in
            var balancer = PeakEWMABalancer(count: count)
            var random = Xorshift(state: 0x9E37_79B9)
            for index in 0..<count { balancer.finished(index, latencyNanos: UInt64(1_000_000 + index * 1_000), now: 1) }
            for _ in benchmark.scaledIterations {
                for _ in 0..<1_000 { blackHole(balancer.next(now: 2, random: &random, weight: { weights[$0] })) }
            }
        }
    }
}

struct Xorshift: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}
