import Foundation
import HTTPTypes
import NIOCore
import Testing
import TollgateCore
@testable import TollgatePlugins
import Yams

@Suite struct LocalLimitStoreTests {
    let limiter = RateLimiter(limit: RateLimit(count: 100, periodNanos: 1_000_000_000), algorithm: .slidingWindow)

    /// Eight threads hammer one key: exactly the limit gets through.
    @Test func exactUnderConcurrency() {
        let store = LocalLimitStore()
        let allowed = Locked(0)
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for _ in 0..<1_000 where store.decide(key: "one", limiters: [limiter], now: 5_000_000_000)[0].allowed {
                allowed.add(1)
            }
        }
        #expect(allowed.value == 100)
    }

    /// A flood of new keys cannot grow the store past its bound.
    @Test func keysAreBounded() {
        let store = LocalLimitStore(maxKeys: 1_000)
        for index in 0..<100_000 { _ = store.decide(key: "ip-\(index)", limiters: [limiter], now: 1) }
        #expect(store.keyCount <= 64 * 16)   // 64 shards of at least 16
        // The most recent keys are the ones kept.
        #expect(store.decide(key: "ip-99999", limiters: [limiter], now: 1)[0].remaining == 98)
    }

    @Test func idleKeysAreDropped() {
        let store = LocalLimitStore(maxKeys: 100_000)
        for index in 0..<500 { _ = store.decide(key: "k\(index)", limiters: [limiter], now: 1) }
        let before = store.keyCount
        // Long after their windows, new keys push the idle ones out two at a time.
        for index in 0..<500 { _ = store.decide(key: "later\(index)", limiters: [limiter], now: 100_000_000_000) }
        #expect(before == 500)
        #expect(store.keyCount < 1_000 - 400)
    }

    /// Several limits: a request refused by one is not charged to the others.
    @Test func refusedRequestsChargeNoLimit() {
        let store = LocalLimitStore()
        let perSecond = RateLimiter(limit: RateLimit(count: 2, periodNanos: 1_000_000_000), algorithm: .fixedWindow)
        let perHour = RateLimiter(limit: RateLimit(count: 5, periodNanos: 3_600_000_000_000), algorithm: .fixedWindow)
        var allowed = 0
        for second: UInt64 in 0..<10 {
            for _ in 0..<3 where store.decide(key: "k", limiters: [perSecond, perHour], now: second * 1_000_000_000 + 1)
                .allSatisfy(\.allowed) {
                allowed += 1
            }
        }
        #expect(allowed == 5)   // the hourly limit, not eaten by the refused third request of each second
    }

    @Test func concurrencySlots() {
        let store = LocalLimitStore()
        #expect(store.acquireConcurrency(key: "c", limit: 2))
        #expect(store.acquireConcurrency(key: "c", limit: 2))
        #expect(!store.acquireConcurrency(key: "c", limit: 2))
        store.releaseConcurrency(key: "c")
        #expect(store.acquireConcurrency(key: "c", limit: 2))
    }
}

final class Locked<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value { lock.withLock { stored } }
    func add(_ amount: Int) where Value == Int { lock.withLock { stored += amount } }
}

@Suite struct RateLimitPluginTests {
    func request(_ headers: HTTPFields = [:]) -> HTTPRequest {
        HTTPRequest(method: .get, scheme: nil, authority: "api", path: "/x", headerFields: headers)
    }

    @Test func refusesWith429AndHeaders() throws {
        let limiter = try plugin(RateLimitPlugin.self, """
            limits: ["2/s", "100/h"]
            algorithm: fixed_window
            headers: {legacy: true}
            """)
        var context = RequestContext(requestID: "r", clientIP: "192.0.2.10")
        var request = self.request()
        #expect(limiter.onRequest(&request, context: &context).isProceed)
        var response = HTTPResponse(status: .ok)
        limiter.onResponse(&response, context: &context)
        #expect(response.headerFields[HTTPField.Name("RateLimit-Policy")!] == "\"2/s\";q=2;w=1, \"100/h\";q=100;w=3600")
        #expect(response.headerFields[HTTPField.Name("RateLimit")!]?.hasPrefix("\"2/s\";r=1;t=") == true)
        #expect(response.headerFields[HTTPField.Name("X-RateLimit-Limit")!] == "2")
        #expect(response.headerFields[HTTPField.Name("X-RateLimit-Remaining")!] == "1")
        _ = limiter.onRequest(&request, context: &context)
        guard case .respond(let refused) = limiter.onRequest(&request, context: &context) else {
            Issue.record("third request within the second was not refused")
            return
        }
        #expect(refused.status == .tooManyRequests)
        #expect(refused.headerFields[.retryAfter] == "1")
        #expect(refused.body.contains(#""error":"rate limit exceeded""#))
        #expect(refused.body.contains(#""retry_after":1"#))
        #expect(refused.headerFields[HTTPField.Name("RateLimit")!]?.hasPrefix("\"2/s\";r=0;") == true)
    }

    /// The header lines written on the proxied path say what the fields say, for every header style.
    @Test func headerLinesMatchTheFields() throws {
        for (index, headers) in ["{legacy: true}", "{legacy: true, ietf: false}", "{}"].enumerated() {
            let limiter = try plugin(RateLimitPlugin.self, """
                limits: ["5/s", "3/h"]
                algorithm: fixed_window
                headers: \(headers)
                """)
            // Each style on its own address: the plugins share their counts.
            var context = RequestContext(requestID: "r", clientIP: "198.51.100.\(index)")
            var request = self.request()
            #expect(limiter.onRequest(&request, context: &context).isProceed)
            var lines = HeaderLines(buffer: ByteBuffer())
            limiter.writeResponseFields(context: &context, into: &lines)
            var expected = HeaderLines(buffer: ByteBuffer())
            for field in limiter.responseFieldsToAdd(context: &context) { expected.add(field) }
            #expect(String(buffer: lines.buffer) == String(buffer: expected.buffer), "headers: \(headers)")
            #expect(String(buffer: lines.buffer).contains(headers == "{legacy: true, ietf: false}" ? "Remaining: 2\r\n" : "\"3/h\";r=2;t="),
                    "the tightest limit is shown")
        }
        // No decision (the plugin did not run for this request): nothing.
        let limiter = try plugin(RateLimitPlugin.self, "{limits: [\"1/s\"]}")
        var context = RequestContext(requestID: "r", clientIP: "192.0.2.12")
        var lines = HeaderLines(buffer: ByteBuffer())
        limiter.writeResponseFields(context: &context, into: &lines)
        #expect(lines.isEmpty)
    }

    /// A limit by address reads nothing of the request, so the route builds none; by header it does.
    @Test func readsTheRequestOnlyForHeaderKeys() throws {
        let byIP = try plugin(RateLimitPlugin.self, "{limits: [\"1/min\"], key: ip}")
        let byHeader = try plugin(RateLimitPlugin.self, "{limits: [\"1/min\"], key: \"header:X-Tenant\"}")
        #expect(!byIP.readsRequest)
        #expect(byHeader.readsRequest)
        #expect(!FilterChain(entries: [PluginEntry(name: "rate-limiting", plugin: byIP, phase: .access, priority: 910)]).readsRequest)
        #expect(FilterChain(entries: [PluginEntry(name: "rate-limiting", plugin: byHeader, phase: .access, priority: 910)]).readsRequest)
    }

    @Test func aSingleKeyNeedsNoList() throws {
        let byHeader = try plugin(RateLimitPlugin.self, "{limits: [\"1/min\"], key: \"header:X-Tenant\"}")
        #expect(byHeader.configuration.key == [.header(HTTPField.Name("X-Tenant")!)])
        let byIP = try plugin(RateLimitPlugin.self, "{limits: [\"1/min\"], key: ip}")
        #expect(byIP.configuration.key == [.ip])
    }

    @Test func keysByHeaderAndRoute() throws {
        let limiter = try plugin(RateLimitPlugin.self, """
            limits: ["1/min"]
            key: [header:X-Tenant, ip]
            """)
        var context = RequestContext(requestID: "r", clientIP: "192.0.2.20")
        var acme = request([HTTPField.Name("X-Tenant")!: "acme"])
        var globex = request([HTTPField.Name("X-Tenant")!: "globex"])
        #expect(limiter.onRequest(&acme, context: &context).isProceed)
        #expect(limiter.onRequest(&globex, context: &context).isProceed)   // another tenant, another key
        #expect(!limiter.onRequest(&acme, context: &context).isProceed)
    }

    /// X-Forwarded-For is believed only from trusted proxies, and only up to the first untrusted hop.
    @Test func clientIPBehindTrustedProxies() throws {
        let limiter = try plugin(RateLimitPlugin.self, """
            limits: ["1/min"]
            trusted_proxies: ["10.0.0.0/8", "::1"]
            """)
        let spoofed = request([HTTPField.Name("X-Forwarded-For")!: "6.6.6.6, 203.0.113.5, 10.0.0.2"])
        #expect(limiter.clientIP(spoofed, context: RequestContext(requestID: "r", clientIP: "10.0.0.1")) == "203.0.113.5")
        #expect(limiter.clientIP(spoofed, context: RequestContext(requestID: "r", clientIP: "198.51.100.7")) == "198.51.100.7")
        #expect(limiter.clientIP(request(), context: RequestContext(requestID: "r", clientIP: "10.0.0.1")) == "10.0.0.1")
        let garbage = request([HTTPField.Name("X-Forwarded-For")!: "not-an-ip, 203.0.113.9"])
        #expect(limiter.clientIP(garbage, context: RequestContext(requestID: "r", clientIP: "::1")) == "203.0.113.9")
    }

    @Test func concurrencyIsReleasedInTheLogPhase() throws {
        let limiter = try plugin(RateLimitPlugin.self, "concurrency: 1")
        var first = RequestContext(requestID: "a", clientIP: "192.0.2.30")
        var second = RequestContext(requestID: "b", clientIP: "192.0.2.30")
        var request = self.request()
        #expect(limiter.onRequest(&request, context: &first).isProceed)
        guard case .respond(let busy) = limiter.onRequest(&request, context: &second) else {
            Issue.record("a second concurrent request was let through")
            return
        }
        #expect(busy.status == .tooManyRequests)
        #expect(busy.body.contains("too many concurrent requests"))
        limiter.onLog(context: first, summary: RequestSummary(status: 200, bytesReceived: 0, bytesSent: 0, startNanos: 0,
                                                               endNanos: 0, upstream: nil, errorReason: nil))
        #expect(limiter.onRequest(&request, context: &second).isProceed)
    }

    @Test func delayModeSuspends() throws {
        let limiter = try plugin(RateLimitPlugin.self, """
            limits: ["10/s"]
            algorithm: gcra
            burst: 1
            mode: delay
            max_delay: 1s
            """)
        var context = RequestContext(requestID: "r", clientIP: "192.0.2.40")
        var request = self.request()
        #expect(limiter.onRequest(&request, context: &context).isProceed)
        guard case .suspend = limiter.onRequest(&request, context: &context) else {
            Issue.record("the second request was not delayed")
            return
        }
    }

    @Test func configurationErrors() {
        #expect(pluginErrors(RateLimitPlugin.self, """
            limits: ["10/fortnight"]
            algorithm: magic
            key: [consumer, cookie:x]
            policy: redis
            burst: 5
            mode: delay
            """) == [
                "limits[0]: expected a rate such as 100/s, 5000/min, 1M/day or 10/5s (line 1)",
                "algorithm: unknown algorithm 'magic'; expected one of: fixed_window, sliding_window, sliding_log, token_bucket, gcra (line 2)",
                "key[1]: expected consumer, credential, ip, header:NAME, path:NAME, route or service (line 3)",
                "policy: policy 'redis' needs cluster.redis (the Redis the gateway nodes share) (line 4)",
                "mode: delay needs algorithm gcra or token_bucket (the others cannot schedule a request later) (line 6)",
                "burst: only used with algorithm gcra or token_bucket (line 5)",
                "limits: give limits, a concurrency limit, or both (line 1)",
            ])
        // Cluster settings the policies need, each with its path.
        #expect(pluginErrors(RateLimitPlugin.self, """
            limits: ["10/s"]
            algorithm: gcra
            policy: hybrid
            fail: maybe
            sync: {interval: 0ms, fraction: 2}
            """, cluster: ClusterConfig(redis: .init(url: "redis://127.0.0.1"))) == [
                "fail: expected open or closed (line 4)",
                "sync.interval: expected between 1ms and 60s (line 5)",
                "sync.fraction: expected a number above 0 and at most 1, such as 0.05 (line 5)",
                "algorithm: policy hybrid adds up window counters: use fixed_window or sliding_window, or policy redis (line 2)",
            ])
        #expect(pluginErrors(RateLimitPlugin.self, """
            limits: ["10/s"]
            sync: {interval: 10ms}
            """) == ["sync: only used with policy hybrid (line 2)"])
    }
}

/// The errors a plugin's configuration reports, as `path: message (line N)`.
func pluginErrors<P: GatewayPlugin>(_ type: P.Type, _ yaml: String, cluster: ClusterConfig = ClusterConfig()) -> [String] {
    let diagnostics = ConfigDiagnostics()
    diagnostics.cluster = cluster
    guard let node = try? Yams.compose(yaml: yaml) else { return ["not YAML"] }
    _ = P.Configuration(from: ConfigNode(node: node, diagnostics: diagnostics))
    return diagnostics.errors.map(\.description)
}
