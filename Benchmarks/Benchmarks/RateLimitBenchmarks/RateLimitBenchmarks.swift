import Benchmark
import TollgateCore
import TollgatePlugins

/// One local rate-limit decision per algorithm (target: under 200 ns), through the store the plugin
/// uses: hashing the key, one shard's lock, the algorithm. Samples of 1 000 decisions.
let benchmarks: @Sendable () -> Void = {
    let configuration = Benchmark.Configuration(metrics: [.wallClock, .mallocCountTotal], maxDuration: .seconds(1))
    // Distinct client IPs, made once: the decision, not the key's construction, is measured.
    let keys = (0..<1_000).map { "198.51.\($0 / 256).\($0 % 256)" }
    for algorithm in RateLimitAlgorithm.allCases {
        let limit = RateLimit(count: algorithm == .slidingLog ? 100 : 1_000_000, periodNanos: 1_000_000_000)
        let limiter = RateLimiter(limit: limit, algorithm: algorithm)
        let store = LocalLimitStore()
        Benchmark("\(algorithm.rawValue) x1000, 1 000 keys", configuration: configuration) { benchmark in
            var now: UInt64 = 1_000_000_000_000
            for _ in benchmark.scaledIterations {
                for key in keys {
                    now &+= 1_000
                    blackHole(store.decide(key: key, limiter: limiter, now: now))
                }
            }
        }
    }
}
