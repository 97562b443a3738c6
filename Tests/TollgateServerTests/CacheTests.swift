import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import Testing
import TollgateObservability
import TollgateTesting

/// The proxy-cache plugin through the proxy, with a real upstream whose answers say how to cache them.
@Suite struct CacheTests {
    static func config(_ plugin: String = "{}") -> String {
        """
        services:
          api: {targets: [{url: "$UPSTREAM0"}]}
        routes:
          - match: {paths: ["/*"]}
            service: api
            plugins: [{name: proxy-cache, config: \(plugin)}]
        """
    }

    /// Answers by path; bodies carry a per-path counter so a test can tell a cached answer from a new one.
    static func origin() -> StubUpstream.Responder {
        let counts = NIOLockedValueBox([String: Int]())
        return { request in
            let uri = request.head.uri
            let path = String(uri.split(separator: "?").first ?? "")
            let n = counts.withLockedValue { counts -> Int in
                counts[path, default: 0] += 1
                return counts[path]!
            }
            func answer(_ body: String, _ headers: [(String, String)], status: HTTPResponseStatus = .ok) -> StubResponse {
                var fields = HTTPHeaders([("Content-Type", "text/plain")])
                for (name, value) in headers { fields.add(name: name, value: value) }
                return StubResponse(status: status, headers: fields, body: .bytes(body))
            }
            switch path {
            case "/fresh":
                return answer("fresh-\(n)", [("Cache-Control", "max-age=60"), ("ETag", "\"f\(n)\"")])
            case "/vary":
                let language = request.head.headers.first(name: "Accept-Language") ?? "none"
                return answer("lang-\(language)-\(n)", [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")])
            case "/etag":
                if request.head.headers.first(name: "If-None-Match") == "\"v1\"" {
                    return StubResponse(status: .notModified, headers: ["ETag": "\"v1\"", "Cache-Control": "max-age=0", "X-Refreshed": "\(n)"],
                                        body: .bytes(""))
                }
                return answer("etag-body-\(n)", [("Cache-Control", "max-age=0"), ("ETag", "\"v1\"")])
            case "/swr":
                return answer("swr-\(n)", [("Cache-Control", "max-age=5, stale-while-revalidate=60"), ("Age", "10")])
            case "/sie":
                if n > 1 { return answer("broken", [], status: .internalServerError) }
                return answer("sie-\(n)", [("Cache-Control", "max-age=5, stale-if-error=60"), ("Age", "10")])
            case "/slow-leader":
                // The first fetch takes 3 s, later ones none: a waiter that gives up and fetches for
                // itself is answered at once.
                let fields = HTTPHeaders([("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")])
                return StubResponse(headers: fields, body: n == 1 ? .delayed(.seconds(3), "leader") : .bytes("waiter-\(n)"))
            case "/slow":
                var fields = HTTPHeaders([("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")])
                fields.add(name: "X-N", value: "\(n)")
                return StubResponse(headers: fields, body: .delayed(.milliseconds(400), "slow-\(n)"))
            case "/tagged", "/tagged2":
                return answer("\(path)-\(n)", [("Cache-Control", "max-age=60"), ("Surrogate-Key", "t1 t2")])
            case "/nostore":
                return answer("nostore-\(n)", [("Cache-Control", "no-store")])
            case "/private":
                return answer("private-\(n)", [("Cache-Control", "private, max-age=60")])
            default:
                return answer("other-\(n)", [("Cache-Control", "max-age=60")])
            }
        }
    }

    static func hits(_ harness: Harness, _ path: String) -> Int {
        harness.upstreams[0].requests.filter { $0.head.uri.hasPrefix(path) }.count
    }

    @Test func missThenHitWithAge() async throws {
        try await Harness.with(Self.config(), upstreams: [Self.origin()]) { harness in
            let first = try await harness.get("/fresh")
            let second = try await harness.get("/fresh")
            #expect(first.text.header("x-cache") == "MISS")
            #expect(second.text.header("x-cache") == "HIT")
            #expect(first.lastBody == "fresh-1" && second.lastBody == "fresh-1")
            #expect(second.text.header("age").flatMap(Int.init).map { $0 >= 0 && $0 < 5 } == true)
            #expect(second.text.header("content-length") == "7")
            #expect(second.text.header("etag") == "\"f1\"")
            #expect(Self.hits(harness, "/fresh") == 1)
            // HEAD is answered from the stored GET, without a body.
            let head = try await harness.send("HEAD /fresh HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            #expect(head.statuses == [200] && head.text.header("x-cache") == "HIT" && head.lastBody.isEmpty)
            // The query is normalized: the same parameters in another order are the same response.
            _ = try await harness.get("/other?b=2&a=1")
            let reordered = try await harness.get("/other?a=1&b=2")
            #expect(reordered.text.header("x-cache") == "HIT")
            // A client's conditional request is answered from the cache.
            let conditional = try await harness.get("/fresh", headers: ["If-None-Match: \"f1\""])
            #expect(conditional.statuses == [304] && conditional.text.header("etag") == "\"f1\"")
            #expect(conditional.text.header("content-length") == nil)
            #expect(Self.hits(harness, "/fresh") == 1)
        }
    }

    /// A hit written from its pre-rendered lines still carries what other plugins add (rate-limit
    /// headers); a plugin that changes fields (headers: remove) sees and changes a hit's stored ones.
    @Test func hitsGoThroughTheOtherPluginsResponseHooks() async throws {
        let adding = "[{name: proxy-cache}, {name: rate-limiting, config: {limits: [\"100/min\"]}}]"
        try await Harness.with(Self.config("{}").replacingOccurrences(of: "[{name: proxy-cache, config: {}}]", with: adding),
                               upstreams: [Self.origin()]) { harness in
            _ = try await harness.get("/fresh")
            let hit = try await harness.get("/fresh")
            #expect(hit.text.header("x-cache") == "HIT" && hit.lastBody == "fresh-1")
            #expect(hit.text.header("ratelimit-policy") == "\"100/min\";q=100;w=60")
            #expect(hit.text.header("content-type") == "text/plain" && hit.text.header("content-length") == "7")
            #expect(hit.text.header("x-request-id") != nil)
            // Each answer has its own request id, once (the stored response's is not replayed).
            let again = try await harness.get("/fresh")
            let ids = again.text.split(separator: "\r\n").filter { $0.lowercased().hasPrefix("x-request-id:") }
            #expect(ids.count == 1 && again.text.header("x-request-id") != hit.text.header("x-request-id"))
        }
        let changing = "[{name: proxy-cache}, {name: headers, config: {response: {remove: [ETag], set: {X-Served: gw}}}}]"
        try await Harness.with(Self.config("{}").replacingOccurrences(of: "[{name: proxy-cache, config: {}}]", with: changing),
                               upstreams: [Self.origin()]) { harness in
            _ = try await harness.get("/fresh")
            let hit = try await harness.get("/fresh")
            #expect(hit.text.header("x-cache") == "HIT" && hit.lastBody == "fresh-1")
            #expect(hit.text.header("etag") == nil && hit.text.header("x-served") == "gw")
            #expect(hit.text.header("content-type") == "text/plain")
        }
    }

    @Test func cacheKeyHeaderOnRequest() async throws {
        try await Harness.with(Self.config("{cache_key_header: true, ignore_query_params: [utm]}"), upstreams: [Self.origin()]) { harness in
            let miss = try await harness.get("/fresh?utm=x&b=1")
            let hit = try await harness.get("/fresh?b=1")
            #expect(miss.text.header("x-cache-key") == "GET|test|/fresh|b=1")
            #expect(hit.text.header("x-cache") == "HIT" && hit.text.header("x-cache-key") == "GET|test|/fresh|b=1")
        }
    }

    @Test func variantsPerVaryField() async throws {
        try await Harness.with(Self.config(), upstreams: [Self.origin()]) { harness in
            let de = try await harness.get("/vary", headers: ["Accept-Language: de"])
            let en = try await harness.get("/vary", headers: ["Accept-Language: en"])
            let deAgain = try await harness.get("/vary", headers: ["Accept-Language: de"])
            let enAgain = try await harness.get("/vary", headers: ["Accept-Language: en"])
            #expect(de.lastBody == "lang-de-1" && en.lastBody == "lang-en-2")
            #expect(deAgain.lastBody == "lang-de-1" && deAgain.text.header("x-cache") == "HIT")
            #expect(enAgain.lastBody == "lang-en-2" && enAgain.text.header("x-cache") == "HIT")
            #expect(Self.hits(harness, "/vary") == 2)
        }
    }

    @Test func revalidationWith304RefreshesTheStoredResponse() async throws {
        try await Harness.with(Self.config(), upstreams: [Self.origin()]) { harness in
            let first = try await harness.get("/etag")
            let second = try await harness.get("/etag")
            #expect(first.text.header("x-cache") == "MISS" && first.lastBody == "etag-body-1")
            #expect(second.statuses == [200])
            #expect(second.text.header("x-cache") == "REVALIDATED")
            #expect(second.lastBody == "etag-body-1")
            #expect(second.text.header("x-refreshed") == "2")   // fields of the 304 replace the stored ones
            let asked = harness.upstreams[0].requests.filter { $0.head.uri == "/etag" }
            #expect(asked.count == 2 && asked[1].head.headers.first(name: "If-None-Match") == "\"v1\"")
            // The client's own condition is answered from the refreshed response.
            let conditional = try await harness.get("/etag", headers: ["If-None-Match: \"v1\""])
            #expect(conditional.statuses == [304] && conditional.text.header("x-cache") == "REVALIDATED")
        }
    }

    @Test func staleWhileRevalidateServesAndRefreshes() async throws {
        try await Harness.with(Self.config(), upstreams: [Self.origin()]) { harness in
            _ = try await harness.get("/swr")   // stored already stale (Age 10 > max-age 5)
            let stale = try await harness.get("/swr")
            #expect(stale.text.header("x-cache") == "STALE" && stale.lastBody == "swr-1")
            // The refresh runs in the background.
            var refreshed = false
            for _ in 0..<100 where !refreshed {
                try await Task.sleep(for: .milliseconds(20))
                refreshed = Self.hits(harness, "/swr") == 2
            }
            #expect(refreshed)
            var newBody = ""
            for _ in 0..<50 where newBody != "swr-2" {
                newBody = try await harness.get("/swr").lastBody
                if newBody != "swr-2" { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(newBody == "swr-2")
        }
    }

    @Test func staleIfErrorServesTheStoredResponse() async throws {
        try await Harness.with(Self.config(), upstreams: [Self.origin()]) { harness in
            _ = try await harness.get("/sie")
            let answer = try await harness.get("/sie")   // the upstream now fails with 500
            #expect(answer.statuses == [200])
            #expect(answer.text.header("x-cache") == "STALE")
            #expect(answer.lastBody == "sie-1")
            #expect(Self.hits(harness, "/sie") == 2)
            // An upstream that cannot be reached at all: the stale response too.
            try await harness.upstreams[0].kill()
            let unreachable = try await harness.get("/sie")
            #expect(unreachable.statuses == [200] && unreachable.text.header("x-cache") == "STALE")
            #expect(unreachable.lastBody == "sie-1" && unreachable.text.header("content-length") == "5")
            // Without a stored response, the client gets the gateway's 502 as usual.
            #expect(try await harness.get("/fresh").statuses == [502])
        }
    }

    @Test func concurrentMissesCollapseIntoOneUpstreamRequest() async throws {
        try await Harness.with(Self.config(), upstreams: [Self.origin()]) { harness in
            let bodies = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<100 { group.addTask { try await harness.get("/slow", ).lastBody } }
                var all: [String] = []
                for try await body in group { all.append(body) }
                return all
            }
            #expect(bodies.count == 100)
            #expect(Set(bodies) == ["slow-1"])
            #expect(Self.hits(harness, "/slow") == 1)
        }
    }

    /// Waiters give up on a slow leader after `collapse_timeout` and go upstream themselves. The
    /// waiters start once the origin holds the leader's request, so a loaded machine that delays them
    /// cannot turn them into cache hits of the finished leader.
    @Test func collapsingWaitsAtMostItsTimeout() async throws {
        try await Harness.with(Self.config("{collapse_timeout: 100ms}"), upstreams: [Self.origin()]) { harness in
            async let leader = harness.get("/slow-leader")
            while Self.hits(harness, "/slow-leader") == 0 { try await Task.sleep(for: .milliseconds(5)) }
            let start = ContinuousClock.now
            let bodies = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<4 { group.addTask { try await harness.get("/slow-leader").lastBody } }
                var all: [String] = []
                for try await body in group { all.append(body) }
                return all
            }
            let waited = ContinuousClock.now - start
            #expect(bodies.allSatisfy { $0.hasPrefix("waiter-") }, "\(bodies)")
            // About 100 ms (the four wait at once); a loaded CI machine has taken 1.5 s.
            #expect(waited < .milliseconds(2_500), "the waiters waited \(waited) for a 3 s leader")
            // At least one waiter fetched for itself; later ones may hit what it stored.
            #expect(Self.hits(harness, "/slow-leader") >= 2)
            #expect(try await leader.lastBody == "leader")
        }
    }

    @Test func unsafeMethodsInvalidateAndPurgeByTag() async throws {
        try await Harness.with(Self.config(#"{purge_allow: ["127.0.0.1/32", "::1"]}"#), upstreams: [Self.origin()]) { harness in
            _ = try await harness.get("/fresh")
            #expect(try await harness.get("/fresh").text.header("x-cache") == "HIT")
            let post = try await harness.send("POST /fresh HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
            #expect(post.statuses == [200] && post.text.header("x-cache") == "BYPASS")
            let after = try await harness.get("/fresh")
            #expect(after.text.header("x-cache") == "MISS" && after.lastBody == "fresh-3")

            _ = try await harness.get("/tagged")
            _ = try await harness.get("/tagged2")
            #expect(try await harness.get("/tagged").text.header("x-cache") == "HIT")
            let purge = try await harness.send("PURGE /anything HTTP/1.1\r\nHost: test\r\nSurrogate-Key: t2\r\nConnection: close\r\n\r\n")
            #expect(purge.statuses == [200] && purge.lastBody == #"{"purged":2}"#)
            #expect(try await harness.get("/tagged").text.header("x-cache") == "MISS")
            #expect(try await harness.get("/tagged2").text.header("x-cache") == "MISS")
            // By URL, and by URL prefix.
            let byURL = try await harness.send("PURGE /tagged HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            #expect(byURL.lastBody == #"{"purged":1}"#)
            let byPrefix = try await harness.send("PURGE /tag* HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            #expect(byPrefix.lastBody == #"{"purged":1}"#)
            #expect(try await harness.get("/tagged2").text.header("x-cache") == "MISS")
        }
    }

    @Test func purgeIsRefusedFromOtherAddresses() async throws {
        try await Harness.with(Self.config(#"{purge_allow: ["10.0.0.0/8"]}"#), upstreams: [Self.origin()]) { harness in
            _ = try await harness.get("/fresh")
            let purge = try await harness.send("PURGE /fresh HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            #expect(purge.statuses == [403] && purge.lastBody.contains("not allowed"))
            #expect(try await harness.get("/fresh").text.header("x-cache") == "HIT")
        }
    }

    @Test func whatIsNeverCached() async throws {
        try await Harness.with(Self.config(), upstreams: [Self.origin()]) { harness in
            for path in ["/nostore", "/private"] {
                _ = try await harness.get(path)
                #expect(try await harness.get(path).text.header("x-cache") == "MISS")
                #expect(Self.hits(harness, path) == 2)
            }
            // Authorization: not stored unless the response allows it.
            _ = try await harness.get("/other1", headers: ["Authorization: Bearer x"])
            #expect(try await harness.get("/other1", headers: ["Authorization: Bearer x"]).text.header("x-cache") == "MISS")
            // Range requests and no-store requests pass by the cache.
            _ = try await harness.get("/other2")
            let range = try await harness.get("/other2", headers: ["Range: bytes=0-1"])
            #expect(range.text.header("x-cache") == "BYPASS")
            let noStore = try await harness.get("/other2", headers: ["Cache-Control: no-store"])
            #expect(noStore.text.header("x-cache") == "BYPASS")
            // only-if-cached: 504 when not stored.
            let onlyIfCached = try await harness.get("/other3", headers: ["Cache-Control: only-if-cached"])
            #expect(onlyIfCached.statuses == [504])
        }
    }
}

/// The shared stores: two gateways with one Redis (or one Memcached) answer each other's misses.
@Suite struct SharedCacheStoreTests {
    static func config(_ top: String, _ plugin: String) -> String {
        """
        \(top)
        services:
          api: {targets: [{url: "$UPSTREAM0"}]}
        routes:
          - match: {paths: ["/*"]}
            service: api
            plugins: [{name: proxy-cache, config: \(plugin)}]
        """
    }

    /// Gateway A stores, gateway B hits; a purge through B is seen by A.
    static func sharedBetweenTwoGateways(_ config: String, prefixPurge: Bool) async throws {
        try await Harness.with(config, upstreams: [CacheTests.origin()]) { a in
            let url = a.upstreams[0].url
            try await Harness.with(config.replacingOccurrences(of: "$UPSTREAM0", with: url), upstreams: []) { b in
                let first = try await a.get("/tagged")
                #expect(first.text.header("x-cache") == "MISS")
                try await Task.sleep(for: .milliseconds(100))   // the store's write is fire and forget
                let fromB = try await b.get("/tagged")
                #expect(fromB.text.header("x-cache") == "HIT" && fromB.lastBody == "/tagged-1")
                let vary = try await a.get("/vary", headers: ["Accept-Language: fr"])
                try await Task.sleep(for: .milliseconds(100))
                let varyB = try await b.get("/vary", headers: ["Accept-Language: fr"])
                #expect(varyB.text.header("x-cache") == "HIT" && varyB.lastBody == vary.lastBody)
                #expect(try await b.get("/vary", headers: ["Accept-Language: it"]).text.header("x-cache") == "MISS")

                let purge = try await b.send("PURGE /x HTTP/1.1\r\nHost: test\r\nSurrogate-Key: t1\r\nConnection: close\r\n\r\n")
                #expect(purge.statuses == [200] && purge.lastBody == #"{"purged":1}"#)
                #expect(try await a.get("/tagged").text.header("x-cache") == "MISS")
                #expect(CacheTests.hits(a, "/tagged") == 2)

                _ = try await a.get("/fresh")
                try await Task.sleep(for: .milliseconds(100))
                let post = try await b.send("DELETE /fresh HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                #expect(post.statuses == [200])
                try await Task.sleep(for: .milliseconds(50))
                #expect(try await a.get("/fresh").text.header("x-cache") == "MISS")

                let prefix = try await b.send("PURGE /fre* HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                #expect(prefix.statuses == (prefixPurge ? [200] : [503]))
            }
        }
    }

    @Test func redisStoreIsShared() async throws {
        let redis = try await RedisServer()
        defer { redis.stop() }
        try await Self.sharedBetweenTwoGateways(
            Self.config("cluster: {redis: \"\(redis.url)\"}", #"{store: redis, purge_allow: ["127.0.0.1/32"]}"#), prefixPurge: true)
    }

    @Test func memcachedStoreIsShared() async throws {
        let memcached = try await MemcachedServer()
        defer { memcached.stop() }
        try await Self.sharedBetweenTwoGateways(
            Self.config("", #"{store: memcached, memcached: {servers: ["\#(memcached.server)"]}, purge_allow: ["127.0.0.1/32"]}"#),
            prefixPurge: false)
    }

    /// A store that cannot be reached is no error for clients: every request passes through.
    @Test(arguments: ["redis", "memcached"])
    func storeDownPassesThrough(_ kind: String) async throws {
        let closed = ClosedPort()
        let config = kind == "redis"
            ? Self.config("cluster: {redis: {url: \"redis://127.0.0.1:\(closed.port)\", timeout: 100ms}}", "{store: redis}")
            : Self.config("", #"{store: memcached, memcached: {servers: ["127.0.0.1:\#(closed.port)"], timeout: 100ms}}"#)
        try await Harness.with(config, upstreams: [CacheTests.origin()]) { harness in
            for n in 1...3 {
                let answer = try await harness.get("/fresh")
                #expect(answer.statuses == [200] && answer.lastBody == "fresh-\(n)")
                #expect(answer.text.header("x-cache") == "MISS")
            }
            let metrics = GatewayMetrics.of(harness.server.snapshot.state).render()
            #expect(metrics.contains(#"tollgate_cache_store_errors_total{store="\#(kind)"} 3"#), "\(metrics)")
        }
    }
}
