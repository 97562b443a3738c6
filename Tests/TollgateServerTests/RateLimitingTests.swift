import NIOConcurrencyHelpers
import NIOCore
import Testing
import TollgateTesting

/// The rate-limiting plugin through the proxy.
@Suite struct RateLimitingTests {
    static func config(_ plugin: String) -> String {
        """
        services:
          api: {targets: [{url: "$UPSTREAM0"}]}
        routes:
          - match: {paths: ["/api/*"]}
            service: api
            plugins: [{name: rate-limiting, config: \(plugin)}]
        """
    }

    @Test func limitsAndHeadersThroughTheProxy() async throws {
        // sliding_log: exact, and not reset by a window edge that a slow run might cross
        try await Harness.with(Self.config(#"{limits: ["3/min"], algorithm: sliding_log, headers: {legacy: true}}"#)) { harness in
            var responses: [RawClient.Result] = []
            for _ in 0..<5 { responses.append(try await harness.get("/api/x")) }
            let statuses = responses.map { $0.statuses.first ?? 0 }
            let first = responses[0]
            #expect(first.text.header("ratelimit-policy") == "\"3/min\";q=3;w=60")
            #expect(first.text.header("ratelimit")?.hasPrefix("\"3/min\";r=2;t=") == true)
            #expect(first.text.header("x-ratelimit-remaining") == "2")
            let last = responses[4]
            #expect(statuses == [200, 200, 200, 429, 429])
            #expect(last.text.header("retry-after").flatMap(Int.init).map { $0 >= 1 && $0 <= 60 } == true)
            #expect(last.lastBody.contains(#""error":"rate limit exceeded""#))
            #expect(harness.upstreams[0].requests.count == 3)   // refused requests never reach the upstream
        }
    }

    /// A header key through the proxy: the plugin sees the request's fields (it says it reads them).
    @Test func keyedByHeaderThroughTheProxy() async throws {
        try await Harness.with(Self.config(#"{limits: ["1/min"], algorithm: sliding_log, key: "header:X-Tenant"}"#)) { harness in
            let acme = try await harness.get("/api/x", headers: ["X-Tenant: acme"])
            let globex = try await harness.get("/api/x", headers: ["X-Tenant: globex"])
            let acmeAgain = try await harness.get("/api/x", headers: ["X-Tenant: acme"])
            #expect([acme, globex, acmeAgain].map { $0.statuses.first ?? 0 } == [200, 200, 429])
        }
    }

    /// Throttling: requests over the rate wait their turn instead of being refused.
    @Test func delayModeSpacesRequests() async throws {
        try await Harness.with(Self.config(#"{limits: ["10/s"], algorithm: gcra, burst: 1, mode: delay, max_delay: 2s}"#)) { harness in
            let start = ContinuousClock.now
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<5 { group.addTask { try await harness.get("/api/x").statuses.first ?? 0 } }
                var all: [Int] = []
                for try await status in group { all.append(status) }
                return all
            }
            let elapsed = ContinuousClock.now - start
            #expect(statuses == Array(repeating: 200, count: 5))
            // One at once, then one every 100 ms: the fifth waits about 400 ms.
            #expect(elapsed >= .milliseconds(350), "\(elapsed)")
        }
    }

    /// A client that leaves mid-request does not keep its concurrency slot: the slot is freed when
    /// its exchange ends (the upstream's answer finds the client gone), not leaked.
    @Test func concurrencySlotFreedWhenTheClientLeaves() async throws {
        let slow: StubUpstream.Responder = { _ in StubResponse(body: .delayed(.milliseconds(1_000), "slow")) }
        try await Harness.with(Self.config("{concurrency: 1}"), upstreams: [slow]) { harness in
            let start = ContinuousClock.now
            // The first client gives up after 100 ms, while its request is in flight.
            let abandoned = try await harness.send("GET /api/slow HTTP/1.1\r\nHost: t\r\n\r\n", timeout: .milliseconds(100))
            #expect(abandoned.statuses.isEmpty)
            // While the abandoned request is still with the upstream, the slot is taken...
            let busy = try await harness.get("/api/busy")
            if ContinuousClock.now - start < .milliseconds(900) { #expect(busy.statuses == [429]) }
            // ...and once the upstream has answered it, the slot is free again (polled: on a loaded
            // machine the abandoned exchange may end a little after the upstream's second).
            try await Task.sleep(until: start + .milliseconds(1_100))
            var next = try await harness.get("/api/next")
            while next.statuses != [200] && ContinuousClock.now - start < .seconds(5) {
                try await Task.sleep(for: .milliseconds(50))
                next = try await harness.get("/api/next")
            }
            #expect(next.statuses == [200])
        }
    }
}
