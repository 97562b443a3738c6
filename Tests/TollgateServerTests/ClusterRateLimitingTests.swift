import Foundation
import NIOCore
import NIOPosix
import Testing
import TollgateCore
import TollgatePlugins
import TollgateRedis
import TollgateServer
import TollgateTesting

/// Rate limits shared by several gateway nodes through one Redis: three gateways (each its own event
/// loop, plugin state and Redis connection) on loopback, a real redis-server, real HTTP.
@Suite struct ClusterRateLimitingTests {
    /// Three nodes, each given a third of the traffic (about 160 requests/s each) for a 100/s limit
    /// during 10 whole seconds: the allowed total must be 1 000 within 1% (redis) or within the
    /// hybrid bound (limit + (nodes - 1) × fraction × limit per window: 1 100); the lower bound only
    /// when every window was offered enough to fill it.
    @Test(arguments: ["redis", "hybrid"])
    func threeNodesShareOneLimit(_ policy: String) async throws {
        let redis = try await RedisServer()
        defer { redis.stop() }
        let sync = policy == "hybrid" ? ", sync: {interval: 50ms, fraction: 0.05}" : ""
        // fail: closed, and a patient timeout: a slow Redis on a loaded test machine shows up as 503s
        // (and fails the test plainly) instead of as local decisions that would blur the count.
        let cluster = try await Cluster(nodes: 3, redisURL: redis.url, redisTimeout: "2s", routes: [("/api/*", """
            {limits: ["100/s"], algorithm: fixed_window, key: route, policy: \(policy), fail: closed\(sync)}
            """)])
        defer { Task { await cluster.stop() } }
        // Start on a whole second (the windows' edge) and stop 500 ms before the tenth ends, so every
        // decision falls in one of ten windows even when a loaded machine delays it. (The 480 requests
        // a second offered use up each window's 100 in about 200 ms: the tenth is still saturated.)
        let nowMillis = WallClock.milliseconds()
        let startMillis = (nowMillis / 1_000 + 2) * 1_000
        let endMillis = startMillis + 10_000 - 500
        try await Task.sleep(for: .milliseconds(startMillis - nowMillis))
        let sent = try await withThrowingTaskGroup(of: [(at: Int64, status: Int)].self) { group in
            for node in 0..<3 {
                for client in 0..<4 {
                    group.addTask {
                        var seen: [(at: Int64, status: Int)] = []
                        var next = startMillis + Int64(client * 6)
                        // The clock decides the end, not the schedule: a client that fell behind
                        // it on a loaded machine would otherwise send into an eleventh window.
                        while next < endMillis && WallClock.milliseconds() < endMillis {
                            let at = WallClock.milliseconds()
                            let result = try await cluster.get(node: node, path: "/api/x")
                            seen.append((at, result.statuses.first ?? 0))
                            next += 25
                            let wait = next - WallClock.milliseconds()
                            if wait > 0 { try await Task.sleep(for: .milliseconds(wait)) }
                        }
                        return seen
                    }
                }
            }
            var all: [(at: Int64, status: Int)] = []
            for try await part in group { all += part }
            return all
        }
        let statuses = sent.map(\.status)
        // Each window must have been offered well over its 100 for the total to be exactly 1 000: on
        // a machine so loaded that the clients fell silent for most of a second, only the upper
        // bound (never more than the limit) is checked.
        let offered = Dictionary(grouping: sent, by: { ($0.at - startMillis) / 1_000 }).mapValues(\.count)
        let saturated = (0..<10).allSatisfy { offered[Int64($0), default: 0] >= 200 }
        let allowed = statuses.filter { $0 == 200 }.count
        let refused = statuses.filter { $0 == 429 }.count
        print("cluster rate limit, policy \(policy): \(allowed) allowed, \(refused) refused of \(statuses.count), "
              + "\(statuses.filter { $0 == 503 }.count) unavailable")
        #expect(allowed + refused == statuses.count, "only 200 and 429 expected")
        // 4 560 are scheduled; a loaded machine delays clients (2 841 were sent in one CI run). Well
        // over the 1 000 the ten windows allow is enough for the upper bound to be tested.
        #expect(statuses.count > 1_500, "the nodes were offered too little traffic to test the limit")
        if policy == "redis" {
            #expect(allowed <= 1_010 && (!saturated || allowed >= 990), "\(allowed) allowed; offered per window: \(offered.sorted { $0.key < $1.key })")
        } else {
            #expect(allowed <= 1_100 && (!saturated || allowed >= 990), "\(allowed) allowed; offered per window: \(offered.sorted { $0.key < $1.key })")
            // Most decisions made without waiting for Redis.
            let (decisions, roundTrips) = cluster.hybridCounts()
            #expect(decisions > 0 && Double(roundTrips) <= 0.1 * Double(decisions), "\(roundTrips) round trips of \(decisions)")
            print("hybrid: \(roundTrips) round trips for \(decisions) decisions")
        }
    }

    /// Redis stops mid-run: `fail: open` routes keep serving (decided locally), `fail: closed` routes
    /// answer 503 with a JSON body; when Redis returns, both go back to Redis without a restart.
    @Test func redisOutageFailsOpenOrClosedAndRecovers() async throws {
        let redis = try await RedisServer()
        defer { redis.stop() }
        let cluster = try await Cluster(nodes: 1, redisURL: redis.url, redisTimeout: "2s", routes: [
            ("/open/*", #"{limits: ["1000/s"], policy: redis, fail: open}"#),
            ("/closed/*", #"{limits: ["1000/s"], policy: redis, fail: closed}"#),
            ("/hybrid/*", #"{limits: ["1000/s"], algorithm: sliding_window, policy: hybrid, fail: closed, sync: {interval: 20ms}}"#),
        ])
        defer { Task { await cluster.stop() } }
        for path in ["/open/a", "/closed/a", "/hybrid/a"] {
            #expect(try await cluster.get(node: 0, path: path).statuses == [200], "\(path) before the outage")
        }
        redis.stop()
        try await Task.sleep(for: .milliseconds(100))   // the hybrid store's next sync finds Redis gone
        var open: [Int] = []
        var closed: [Int] = []
        var hybrid: [Int] = []
        let outageStart = ContinuousClock.now
        for _ in 0..<10 {
            open += try await cluster.get(node: 0, path: "/open/a").statuses
            let refused = try await cluster.get(node: 0, path: "/closed/a")
            closed += refused.statuses
            if refused.statuses == [503] { #expect(refused.lastBody.contains(#""error":"rate limiter unavailable""#)) }
            hybrid += try await cluster.get(node: 0, path: "/hybrid/a").statuses
        }
        #expect(open == Array(repeating: 200, count: 10))
        #expect(closed == Array(repeating: 503, count: 10))
        #expect(hybrid.suffix(5) == Array(repeating: 503, count: 5), "\(hybrid)")
        #expect(ContinuousClock.now - outageStart < .seconds(5), "requests waited for the dead Redis")
        try await redis.start()
        var recovered = false
        for _ in 0..<100 where !recovered {
            try await Task.sleep(for: .milliseconds(50))
            let statuses = try await [cluster.get(node: 0, path: "/closed/b"), cluster.get(node: 0, path: "/hybrid/b")]
                .map { $0.statuses }
            recovered = statuses == [[200], [200]]
        }
        #expect(recovered, "the fail-closed routes did not come back after Redis returned")
    }
}

extension ClusterRateLimitingTests {
    /// A plan's quota in Redis is one budget for every node, and the usage is still there for a
    /// gateway started afterwards.
    @Test func planQuotaSharedThroughRedis() async throws {
        let redis = try await RedisServer()
        defer { redis.stop() }
        let preamble = """
            consumers:
              - {name: alice, plan: trial, credentials: {key_auth: [{key: "alice-key-0123456789"}]}}
            plans:
              trial: {quota: "5/day"}
            """
        let routes = "  - {match: {paths: [\"/api/*\"]}, service: api, plugins: [{name: key-auth}, {name: plans, config: {fail: closed}}]}\n"
        let cluster = try await Cluster(nodes: 2, redisURL: redis.url, redisTimeout: "2s", preamble: preamble, routes: routes)
        var statuses: [Int] = []
        for index in 0..<6 {
            let port = cluster.servers[index % 2].localAddresses[0].port!
            let result = try await RawClient.exchange("GET /api/x HTTP/1.1\r\nHost: t\r\nX-API-Key: alice-key-0123456789\r\nConnection: close\r\n\r\n",
                                                      port: port, group: cluster.groups[1 + index % 2])
            statuses += result.statuses
            if index == 5 { #expect(result.lastBody.contains(#""error":"quota exceeded""#)) }
        }
        #expect(statuses == [200, 200, 200, 200, 200, 429])
        await cluster.stop()
        // A new gateway (a restart): the usage is in Redis.
        let again = try await Cluster(nodes: 1, redisURL: redis.url, redisTimeout: "2s", preamble: preamble, routes: routes)
        let port = again.servers[0].localAddresses[0].port!
        let result = try await RawClient.exchange("GET /api/x HTTP/1.1\r\nHost: t\r\nX-API-Key: alice-key-0123456789\r\nConnection: close\r\n\r\n",
                                                  port: port, group: again.groups[1])
        #expect(result.statuses == [429])
        await again.stop()
    }

    /// A client that leaves while its request waits for Redis does not keep its concurrency slot.
    @Test func concurrencySlotFreedWhenTheClientLeavesDuringTheRedisCall() async throws {
        let redis = try await RedisServer(extraArguments: ["--enable-debug-command", "yes"])
        defer { redis.stop() }
        let cluster = try await Cluster(nodes: 1, redisURL: redis.url, redisTimeout: "2s", routes: [
            ("/api/*", #"{limits: ["1000/s"], concurrency: 1, policy: redis, fail: closed}"#),
        ])
        defer { Task { await cluster.stop() } }
        #expect(try await cluster.get(node: 0, path: "/api/warm").statuses == [200])
        // Redis busy for 1.5 s (long, so a loaded machine's late wake-ups still land inside it): the
        // next request waits for it, and its client gives up after 100 ms.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var blocking = RedisConfiguration(url: redis.url)!
        blocking.commandTimeout = .seconds(5)
        let blocker = RedisClient(configuration: blocking, eventLoop: group.next())
        _ = try await blocker.send(["PING"]).get()   // connected: the next command goes out at once
        let sleeping = blocker.send(["DEBUG", "SLEEP", "1.5"])
        try await Task.sleep(for: .milliseconds(40))
        let abandoned = try await RawClient.exchange("GET /api/slow HTTP/1.1\r\nHost: t\r\n\r\n",
                                                     port: cluster.servers[0].localAddresses[0].port!,
                                                     group: cluster.groups[1], timeout: .milliseconds(100))
        #expect(abandoned.statuses.isEmpty)
        _ = try await sleeping.get()
        try await Task.sleep(for: .milliseconds(50))
        // The slot is free again: the next request is served, not refused as concurrent.
        #expect(try await cluster.get(node: 0, path: "/api/next").statuses == [200])
        try await blocker.close().get()
        try await group.shutdownGracefully()
    }
}

/// Gateways sharing one Redis, each with its own event loop and plugin state (as separate processes
/// would have), in front of one stub upstream.
struct Cluster: Sendable {
    let groups: [MultiThreadedEventLoopGroup]
    let servers: [ProxyServer]
    let states: [PluginStateRegistry]
    let upstream: StubUpstream

    init(nodes: Int, redisURL: String, plugin: String) async throws {
        try await self.init(nodes: nodes, redisURL: redisURL, routes: [("/api/*", plugin)])
    }

    init(nodes: Int, redisURL: String, redisTimeout: String = "250ms", routes: [(String, String)]) async throws {
        let lines = routes.map { "  - {match: {paths: [\"\($0.0)\"]}, service: api, plugins: [{name: rate-limiting, config: \($0.1)}]}\n" }
        try await self.init(nodes: nodes, redisURL: redisURL, redisTimeout: redisTimeout, preamble: "", routes: lines.joined())
    }

    /// `preamble`: top-level YAML (consumers, plans); `routes`: the lines under `routes:`.
    init(nodes: Int, redisURL: String, redisTimeout: String = "250ms", preamble: String, routes: String) async throws {
        let upstreamGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        upstream = try await StubUpstream(group: upstreamGroup, responder: StubUpstream.echo)
        var yaml = """
            listen: [{address: "127.0.0.1:0"}]
            cluster: {redis: {url: "\(redisURL)", timeout: \(redisTimeout)}}
            services:
              api: {targets: [{url: "\(upstream.url)"}]}
            \(preamble)
            routes:

            """
        yaml += routes
        var groups: [MultiThreadedEventLoopGroup] = [upstreamGroup]
        var servers: [ProxyServer] = []
        var states: [PluginStateRegistry] = []
        for _ in 0..<nodes {
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let state = PluginStateRegistry()
            let snapshot = try ConfigLoader.load(yaml: yaml, environment: [:], registry: BuiltinPlugins.registry, state: state)
            let server = try ProxyServer(snapshot: snapshot, group: group)
            try await server.start()
            groups.append(group)
            servers.append(server)
            states.append(state)
        }
        self.groups = groups
        self.servers = servers
        self.states = states
    }

    func get(node: Int, path: String) async throws -> RawClient.Result {
        try await RawClient.exchange("GET \(path) HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
                                     port: servers[node].localAddresses[0].port!, group: groups[node + 1])
    }

    /// The hybrid stores' decisions and the ones that waited for Redis, over all nodes.
    func hybridCounts() -> (decisions: Int, roundTrips: Int) {
        var decisions = 0
        var roundTrips = 0
        for state in states {
            for counts in RateLimitPlugin.hybridCounts(in: state) {
                decisions += counts.decisions
                roundTrips += counts.roundTrips
            }
        }
        return (decisions, roundTrips)
    }

    func stop() async {
        for server in servers { await server.drain(timeout: .milliseconds(200)) }
        try? await upstream.close()
        for group in groups { try? await group.shutdownGracefully() }
    }
}
