import Benchmark
import Foundation
import NIOCore
import NIOPosix
import TollgateCore
import TollgatePlugins
import TollgateRedis

/// Rate-limit decisions through Redis (policy `redis`): how many one node makes per second over one
/// pipelined connection, with 64 / 256 decisions in flight at a time, against a redis-server of its
/// own on loopback (target: at least 50 000 per second). Each iteration is 10 000 decisions over
/// 1 000 keys.
let benchmarks: @Sendable () -> Void = {
    let redis = startRedis()
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let loop = group.next()
    let pool = RedisPool(configuration: RedisConfiguration(url: "redis://127.0.0.1:\(redis.port)")!)
    let keys = (0..<1_000).map { "198.51.\($0 / 256).\($0 % 256)" }
    let configuration = Benchmark.Configuration(metrics: [.wallClock, .throughput], maxDuration: .seconds(3),
                                                teardown: { redis.process.terminate() })
    for algorithm in [RateLimitAlgorithm.slidingWindow, .tokenBucket, .gcra] {
        let limiter = RateLimiter(limit: RateLimit(count: 1_000_000, periodNanos: 1_000_000_000), algorithm: algorithm)
        let store = RedisLimitStore(pool: pool, limiters: [limiter], keyPrefix: "bench:\(algorithm.rawValue):")
        for inFlight in [64, 256] {
            Benchmark("\(algorithm.rawValue), \(inFlight) in flight, x10000", configuration: configuration) { benchmark in
                for _ in benchmark.scaledIterations {
                    let done = try! loop.submit { () -> EventLoopFuture<Void> in
                        run(store: store, keys: keys, total: 10_000, inFlight: inFlight, loop: loop)
                    }.wait().wait()
                    blackHole(done)
                }
            }
        }
    }
}

/// Keeps `inFlight` decisions outstanding until `total` are done, as a loaded gateway would.
func run(store: RedisLimitStore, keys: [String], total: Int, inFlight: Int, loop: any EventLoop) -> EventLoopFuture<Void> {
    let promise = loop.makePromise(of: Void.self)
    let state = NIOLoopBound(Counter(), eventLoop: loop)
    @Sendable func next() {
        let counter = state.value
        guard counter.started < total else {
            if counter.finished == total { promise.succeed() }
            return
        }
        let key = keys[counter.started % keys.count]
        counter.started += 1
        store.decide(key: key, on: loop).whenComplete { _ in
            state.value.finished += 1
            next()
        }
    }
    for _ in 0..<inFlight { next() }
    return promise.futureResult
}

final class Counter {
    var started = 0
    var finished = 0
}

struct RedisProcess: Sendable {
    let process: Process
    let port: Int
}

/// redis-server on a free loopback port (found by binding port 0), ready when it answers a connect.
func startRedis() -> RedisProcess {
    let socket = try! ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
    let port = socket.localAddress!.port!
    try! socket.close().wait()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
    process.arguments = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process.standardOutput = FileHandle.nullDevice
    try! process.run()
    for _ in 0..<200 {
        if (try? ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).wait()
            .close().wait()) != nil { break }
        usleep(10_000)
    }
    return RedisProcess(process: process, port: port)
}
