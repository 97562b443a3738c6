import HTTPTypes
import NIOCore
import Testing
import TollgateCore

/// The freshness and cacheability rules of RFC 9111 for a shared cache, as a table.
@Suite struct CachePolicyTests {
    static let now: Int64 = 1_800_000_000
    static func date(_ offset: Int64) -> String { HTTPDate.format(unixSeconds: now + offset) }

    static func fields(_ pairs: [(String, String)]) -> HTTPFields {
        var fields = HTTPFields()
        for (name, value) in pairs { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        return fields
    }

    struct Row: Sendable, CustomStringConvertible {
        var name: String
        var status = 200
        var request: [(String, String)] = []
        var response: [(String, String)]
        var rules = CachePolicy.Rules()
        /// nil: not stored; else the lifetime.
        var lifetime: Int64?
        var check: (@Sendable (Freshness) -> Bool)?
        var description: String { name }
    }

    static let lastWeek = date(-7 * 86_400)
    static let table: [Row] = [
        Row(name: "max-age", response: [("Cache-Control", "max-age=60")], lifetime: 60),
        Row(name: "s-maxage wins over max-age", response: [("Cache-Control", "max-age=60, s-maxage=120")], lifetime: 120),
        Row(name: "no-store", response: [("Cache-Control", "no-store, max-age=60")], lifetime: nil),
        Row(name: "private", response: [("Cache-Control", "private, max-age=60")], lifetime: nil),
        Row(name: "public max-age", response: [("Cache-Control", "public, max-age=60")], lifetime: 60),
        Row(name: "nothing at all", response: [], lifetime: nil),
        Row(name: "only an ETag: stored to revalidate", response: [("ETag", "\"a\"")], lifetime: 0),
        Row(name: "heuristic, capped at a day", response: [("Last-Modified", date(-30 * 86_400))], lifetime: 86_400),
        Row(name: "heuristic, a tenth of the age", response: [("Last-Modified", date(-1_000))], lifetime: 100),
        Row(name: "Expires", response: [("Expires", date(300))], lifetime: 300),
        Row(name: "Expires against Date", response: [("Date", date(-100)), ("Expires", date(200))], lifetime: 300),
        Row(name: "Expires 0 means expired", response: [("Expires", "0")], lifetime: nil),
        Row(name: "invalid Expires with an ETag", response: [("Expires", "soon"), ("ETag", "\"a\"")], lifetime: 0),
        Row(name: "max-age beats Expires", response: [("Expires", date(-10)), ("Cache-Control", "max-age=60")], lifetime: 60),
        Row(name: "Expires beats heuristics", response: [("Expires", date(30)), ("Last-Modified", lastWeek)], lifetime: 30),
        Row(name: "Vary: *", response: [("Cache-Control", "max-age=60"), ("Vary", "*")], lifetime: nil),
        Row(name: "Vary: * among others", response: [("Cache-Control", "max-age=60"), ("Vary", "Accept, *")], lifetime: nil),
        Row(name: "Vary on a field", response: [("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding")], lifetime: 60),
        Row(name: "Set-Cookie", response: [("Cache-Control", "max-age=60"), ("Set-Cookie", "a=b")], lifetime: nil),
        Row(name: "Set-Cookie allowed by config", response: [("Cache-Control", "max-age=60"), ("Set-Cookie", "a=b")],
            rules: { var r = CachePolicy.Rules(); r.storeSetCookie = true; return r }(), lifetime: 60),
        Row(name: "302", status: 302, response: [("Cache-Control", "max-age=60")], lifetime: nil),
        Row(name: "206", status: 206, response: [("Cache-Control", "max-age=60")], lifetime: nil),
        Row(name: "500", status: 500, response: [("Cache-Control", "max-age=60")], lifetime: nil),
        Row(name: "503", status: 503, response: [("Cache-Control", "max-age=60")], lifetime: nil),
        Row(name: "404 with max-age", status: 404, response: [("Cache-Control", "max-age=60")], lifetime: 60),
        Row(name: "404 heuristic", status: 404, response: [("Last-Modified", date(-500))], lifetime: 50),
        Row(name: "410", status: 410, response: [("Cache-Control", "max-age=5")], lifetime: 5),
        Row(name: "301", status: 301, response: [("Cache-Control", "max-age=3600")], lifetime: 3600),
        Row(name: "301 bare", status: 301, response: [], lifetime: nil),
        Row(name: "203", status: 203, response: [("Cache-Control", "max-age=5")], lifetime: 5),
        Row(name: "204", status: 204, response: [("Cache-Control", "max-age=5")], lifetime: 5),
        Row(name: "308", status: 308, response: [("Cache-Control", "max-age=5")], lifetime: 5),
        Row(name: "status list from config", status: 302, response: [("Cache-Control", "max-age=5")],
            rules: { var r = CachePolicy.Rules(); r.statuses = [200, 302]; return r }(), lifetime: 5),
        Row(name: "no heuristics for a status not heuristically cacheable (kept to revalidate)", status: 302,
            response: [("Last-Modified", date(-1_000))],
            rules: { var r = CachePolicy.Rules(); r.statuses = [200, 302]; return r }(), lifetime: 0),
        Row(name: "heuristics for it when public", status: 302, response: [("Last-Modified", date(-1_000)), ("Cache-Control", "public")],
            rules: { var r = CachePolicy.Rules(); r.statuses = [200, 302]; return r }(), lifetime: 100),
        Row(name: "Authorization, plain max-age", request: [("Authorization", "Bearer x")],
            response: [("Cache-Control", "max-age=60")], lifetime: nil),
        Row(name: "Authorization, public", request: [("Authorization", "Bearer x")],
            response: [("Cache-Control", "public, max-age=60")], lifetime: 60),
        Row(name: "Authorization, s-maxage", request: [("Authorization", "Bearer x")],
            response: [("Cache-Control", "s-maxage=30")], lifetime: 30),
        Row(name: "Authorization, must-revalidate", request: [("Authorization", "Bearer x")],
            response: [("Cache-Control", "must-revalidate, max-age=60")], lifetime: 60),
        Row(name: "request no-store", request: [("Cache-Control", "no-store")],
            response: [("Cache-Control", "max-age=60")], lifetime: nil),
        Row(name: "request no-cache does not stop storing", request: [("Cache-Control", "no-cache")],
            response: [("Cache-Control", "max-age=60")], lifetime: 60),
        Row(name: "no-cache with an ETag", response: [("Cache-Control", "no-cache"), ("ETag", "\"v1\"")], lifetime: 0,
            check: { $0.noCache }),
        Row(name: "no-cache with max-age and an ETag", response: [("Cache-Control", "no-cache, max-age=60"), ("ETag", "\"v\"")],
            lifetime: 60, check: { $0.noCache }),
        Row(name: "no-cache without validators", response: [("Cache-Control", "no-cache, max-age=60")], lifetime: nil),
        Row(name: "Age counts", response: [("Cache-Control", "max-age=60"), ("Age", "20")], lifetime: 60,
            check: { $0.initialAge == 20 }),
        Row(name: "a late Date counts as age", response: [("Cache-Control", "max-age=60"), ("Date", date(-100))], lifetime: 60,
            check: { $0.initialAge == 100 }),
        Row(name: "a Date in the future is no negative age", response: [("Cache-Control", "max-age=60"), ("Date", date(50))],
            lifetime: 60, check: { $0.initialAge == 0 }),
        Row(name: "stale-while-revalidate", response: [("Cache-Control", "max-age=60, stale-while-revalidate=30")],
            lifetime: 60, check: { $0.staleWhileRevalidate == 30 && !$0.mustRevalidate }),
        Row(name: "stale-if-error", response: [("Cache-Control", "max-age=60, stale-if-error=600")], lifetime: 60,
            check: { $0.staleIfError == 600 }),
        Row(name: "stale-if-error keeps an unfresh response", response: [("Cache-Control", "max-age=0, stale-if-error=600")],
            lifetime: 0),
        Row(name: "must-revalidate", response: [("Cache-Control", "max-age=60, must-revalidate")], lifetime: 60,
            check: { $0.mustRevalidate }),
        Row(name: "proxy-revalidate", response: [("Cache-Control", "max-age=60, proxy-revalidate")], lifetime: 60,
            check: { $0.mustRevalidate }),
        Row(name: "s-maxage implies proxy-revalidate", response: [("Cache-Control", "s-maxage=60")], lifetime: 60,
            check: { $0.mustRevalidate }),
        Row(name: "quoted value", response: [("Cache-Control", "max-age=\"60\"")], lifetime: 60),
        Row(name: "upper case", response: [("Cache-Control", "MAX-AGE=60, Public")], lifetime: 60),
        Row(name: "spaces", response: [("Cache-Control", "  max-age = 60 ,public ")], lifetime: 60),
        Row(name: "non-numeric max-age is stale", response: [("Cache-Control", "max-age=soon")], lifetime: nil),
        Row(name: "max-age=0 with an ETag", response: [("Cache-Control", "max-age=0"), ("ETag", "\"a\"")], lifetime: 0),
        Row(name: "huge max-age", response: [("Cache-Control", "max-age=99999999999999999999999")], lifetime: Int64(Int32.max)),
        Row(name: "default_ttl for bare responses", response: [],
            rules: { var r = CachePolicy.Rules(); r.defaultTTL = 30; return r }(), lifetime: 30),
        Row(name: "default_ttl never overrides no-store", response: [("Cache-Control", "no-store")],
            rules: { var r = CachePolicy.Rules(); r.defaultTTL = 30; return r }(), lifetime: nil),
        Row(name: "default_ttl never overrides max-age", response: [("Cache-Control", "max-age=5")],
            rules: { var r = CachePolicy.Rules(); r.defaultTTL = 30; return r }(), lifetime: 5),
        Row(name: "route override replaces private", response: [("Cache-Control", "private")],
            rules: { var r = CachePolicy.Rules(); r.overrideCacheControl = CacheControl("public, max-age=10"); return r }(),
            lifetime: 10),
        Row(name: "route override can forbid", response: [("Cache-Control", "max-age=60")],
            rules: { var r = CachePolicy.Rules(); r.overrideCacheControl = CacheControl("no-store"); return r }(),
            lifetime: nil),
        Row(name: "two Cache-Control fields", response: [("Cache-Control", "max-age=60"), ("Cache-Control", "private")],
            lifetime: nil),
        Row(name: "RFC 850 Expires", response: [("Expires", "Sunday, 06-Nov-94 08:49:37 GMT"), ("Date", "Sunday, 06-Nov-94 08:48:37 GMT")],
            lifetime: 60),
        Row(name: "asctime Expires", response: [("Expires", "Sun Nov  6 08:50:37 1994"), ("Date", "Sun, 06 Nov 1994 08:49:37 GMT")],
            lifetime: 60),
        Row(name: "Last-Modified after Date gives no heuristic", response: [("Last-Modified", date(100))], lifetime: 0),
    ]

    @Test(arguments: table)
    func storing(_ row: Row) {
        var response = Self.fields(row.response)
        if response[.date] == nil { response[.date] = Self.date(0) }
        let decision = CachePolicy.storeDecision(status: row.status, requestFields: Self.fields(row.request),
                                                 responseFields: response, now: Self.now, rules: row.rules)
        #expect(decision.freshness?.lifetime == row.lifetime, "\(row.name): \(decision)")
        if let check = row.check, let freshness = decision.freshness { #expect(check(freshness), "\(row.name)") }
    }

    @Test func tableIsLargeEnough() {
        #expect(Self.table.count + Self.usabilityTable.count >= 60)
    }

    struct UsabilityRow: Sendable, CustomStringConvertible {
        var name: String
        var freshness: Freshness
        var age: Int64
        var request = ""
        var expected: CacheUsability
        var description: String { name }
    }

    static let usabilityTable: [UsabilityRow] = [
        UsabilityRow(name: "fresh", freshness: Freshness(lifetime: 60), age: 10, expected: .fresh),
        UsabilityRow(name: "exactly at its lifetime is stale", freshness: Freshness(lifetime: 60), age: 60,
                     expected: .revalidate(staleIfErrorAllowed: true)),
        UsabilityRow(name: "stale", freshness: Freshness(lifetime: 60), age: 70, expected: .revalidate(staleIfErrorAllowed: false)),
        UsabilityRow(name: "within stale-while-revalidate", freshness: Freshness(lifetime: 60, staleWhileRevalidate: 30), age: 70,
                     expected: .staleWhileRevalidate),
        UsabilityRow(name: "past stale-while-revalidate", freshness: Freshness(lifetime: 60, staleWhileRevalidate: 30), age: 100,
                     expected: .revalidate(staleIfErrorAllowed: false)),
        UsabilityRow(name: "within stale-if-error", freshness: Freshness(lifetime: 60, staleIfError: 60), age: 70,
                     expected: .revalidate(staleIfErrorAllowed: true)),
        UsabilityRow(name: "past stale-if-error", freshness: Freshness(lifetime: 60, staleIfError: 60), age: 200,
                     expected: .revalidate(staleIfErrorAllowed: false)),
        UsabilityRow(name: "must-revalidate forbids stale serving",
                     freshness: Freshness(lifetime: 60, staleWhileRevalidate: 30, staleIfError: 60, mustRevalidate: true), age: 70,
                     expected: .revalidate(staleIfErrorAllowed: false)),
        UsabilityRow(name: "no-cache revalidates even fresh", freshness: Freshness(lifetime: 60, noCache: true), age: 1,
                     expected: .revalidate(staleIfErrorAllowed: true)),
        UsabilityRow(name: "request no-cache", freshness: Freshness(lifetime: 60), age: 1, request: "no-cache",
                     expected: .revalidate(staleIfErrorAllowed: true)),
        UsabilityRow(name: "request max-age older", freshness: Freshness(lifetime: 60), age: 10, request: "max-age=5",
                     expected: .revalidate(staleIfErrorAllowed: true)),
        UsabilityRow(name: "request max-age younger", freshness: Freshness(lifetime: 60), age: 10, request: "max-age=50",
                     expected: .fresh),
        UsabilityRow(name: "request max-stale covers it", freshness: Freshness(lifetime: 60), age: 70, request: "max-stale=20",
                     expected: .fresh),
        UsabilityRow(name: "request max-stale too short", freshness: Freshness(lifetime: 60), age: 90, request: "max-stale=20",
                     expected: .revalidate(staleIfErrorAllowed: false)),
        UsabilityRow(name: "request max-stale without a value", freshness: Freshness(lifetime: 60), age: 9_000,
                     request: "max-stale", expected: .fresh),
        UsabilityRow(name: "max-stale does not beat must-revalidate", freshness: Freshness(lifetime: 60, mustRevalidate: true),
                     age: 70, request: "max-stale", expected: .revalidate(staleIfErrorAllowed: false)),
        UsabilityRow(name: "request min-fresh", freshness: Freshness(lifetime: 60), age: 10, request: "min-fresh=55",
                     expected: .revalidate(staleIfErrorAllowed: true)),
        UsabilityRow(name: "initial age counts", freshness: Freshness(lifetime: 60, initialAge: 55), age: 10,
                     expected: .revalidate(staleIfErrorAllowed: false)),
    ]

    @Test(arguments: usabilityTable)
    func serving(_ row: UsabilityRow) {
        let storedAt = Self.now - row.age   // `age`: seconds since it was stored
        let got = CachePolicy.usability(row.freshness, storedAt: storedAt, now: Self.now, request: CacheControl(row.request))
        #expect(got == row.expected, "\(row.name)")
    }

    @Test func requestActions() {
        #expect(CachePolicy.requestAction(method: .get, fields: [:]) == .lookup)
        #expect(CachePolicy.requestAction(method: .head, fields: [:]) == .lookup)
        for method in [HTTPRequest.Method.post, .put, .delete, .patch] {
            #expect(CachePolicy.requestAction(method: method, fields: [:]) == .invalidate)
        }
        #expect(CachePolicy.requestAction(method: .options, fields: [:]) == .bypass)
        #expect(CachePolicy.requestAction(method: .get, fields: Self.fields([("Range", "bytes=0-10")])) == .bypass)
        #expect(CachePolicy.requestAction(method: .get, fields: Self.fields([("Cache-Control", "no-store")])) == .bypass)
    }

    @Test func conditionalRequests() {
        let modified = Self.date(-100)
        func check(_ request: [(String, String)], etag: String? = "\"v1\"", lastModified: String? = modified) -> Bool {
            CachePolicy.notModified(requestFields: Self.fields(request), etag: etag, lastModified: lastModified)
        }
        #expect(check([("If-None-Match", "\"v1\"")]))
        #expect(check([("If-None-Match", "W/\"v1\"")]))          // weak comparison
        #expect(check([("If-None-Match", "\"x\", \"v1\"")]))
        #expect(check([("If-None-Match", "*")]))
        #expect(!check([("If-None-Match", "\"v2\"")]))
        #expect(!check([("If-None-Match", "\"v1\"")], etag: nil))
        #expect(check([("If-Modified-Since", Self.date(0))]))
        #expect(!check([("If-Modified-Since", Self.date(-200))]))
        // If-None-Match decides when both are present.
        #expect(!check([("If-None-Match", "\"v2\""), ("If-Modified-Since", Self.date(0))]))
        #expect(!check([]))
    }

    @Test func httpDates() {
        #expect(HTTPDate.parse("Sun, 06 Nov 1994 08:49:37 GMT") == 784_111_777)
        #expect(HTTPDate.parse("Sunday, 06-Nov-94 08:49:37 GMT") == 784_111_777)
        #expect(HTTPDate.parse("Sun Nov  6 08:49:37 1994") == 784_111_777)
        #expect(HTTPDate.parse("0") == nil)
        #expect(HTTPDate.parse("Sun, 06 Nov 1994 25:49:37 GMT") == nil)
        #expect(HTTPDate.parse(HTTPDate.format(unixSeconds: Self.now)) == Self.now)
    }

    @Test func keys() {
        let spec = CacheKeySpec()
        let a = spec.key(method: .get, host: "API.example.com:8080", path: "/items", query: "b=2&a=1", fields: [:], consumer: nil)
        let b = spec.key(method: .head, host: "api.example.com", path: "/items", query: "a=1&b=2", fields: [:], consumer: nil)
        #expect(a == b)
        #expect(a == "GET|api.example.com|/items|a=1&b=2")
        let ignoring = CacheKeySpec(ignoredQueryParameters: ["utm_source"])
        #expect(ignoring.normalizedQuery("utm_source=x&id=3") == "id=3")
        let only = CacheKeySpec(queryParameters: ["id"])
        #expect(only.normalizedQuery("page=2&id=3&&") == "id=3")
        let withHeader = CacheKeySpec(parts: [.path, .header(HTTPField.Name("Accept-Language")!), .consumer])
        #expect(withHeader.key(method: .get, host: nil, path: "/p", query: nil, fields: Self.fields([("Accept-Language", "de")]),
                               consumer: "alice") == "/p|accept-language=de|c=alice")
        // Variants: Accept-Encoding counts as the coding it selects.
        let gzip = CacheKeySpec.variantKey(primary: "k", names: ["accept-encoding"], fields: Self.fields([("Accept-Encoding", "gzip, deflate")]))
        let gzipToo = CacheKeySpec.variantKey(primary: "k", names: ["accept-encoding"], fields: Self.fields([("Accept-Encoding", "deflate;q=0.5, gzip")]))
        let brotli = CacheKeySpec.variantKey(primary: "k", names: ["accept-encoding"], fields: Self.fields([("Accept-Encoding", "br, gzip")]))
        let none = CacheKeySpec.variantKey(primary: "k", names: ["accept-encoding"], fields: [:])
        #expect(gzip == gzipToo)
        #expect(gzip != brotli && brotli != none && gzip != none)
        #expect(CacheKeySpec.varyNames(Self.fields([("Vary", "Accept-Encoding, accept"), ("Vary", "Origin")])) == ["accept", "accept-encoding", "origin"])
    }

    @Test func acceptEncodingNegotiation() {
        let supported = ["br", "gzip"]
        #expect(AcceptEncoding.preferred(["gzip, br"], among: supported) == "br")
        #expect(AcceptEncoding.preferred(["br;q=0.5, gzip"], among: supported) == "gzip")
        #expect(AcceptEncoding.preferred(["br;q=0, gzip;q=0"], among: supported) == "identity")
        #expect(AcceptEncoding.preferred(["*"], among: supported) == "br")
        #expect(AcceptEncoding.preferred(["*;q=0.1, gzip;q=0"], among: supported) == "br")
        #expect(AcceptEncoding.preferred(["x-gzip"], among: supported) == "gzip")
        #expect(AcceptEncoding.preferred(["identity"], among: supported) == "identity")
        #expect(AcceptEncoding.preferred([], among: supported) == "identity")
    }

    @Test func recordsSurviveEncoding() throws {
        let entry = CachedResponse(status: 200, fields: Self.fields([("Content-Type", "text/plain"), ("ETag", "\"v\"")]),
                                   body: ByteBuffer(string: "hello"), storedAt: Self.now,
                                   freshness: Freshness(lifetime: 60, initialAge: 3, staleWhileRevalidate: 4, staleIfError: 5,
                                                        mustRevalidate: true, noCache: false),
                                   url: "/a?b=1", tags: ["t1", "t2"])
        guard case .response(let decoded)? = CacheRecord(decoding: CacheRecord.response(entry).encoded()) else {
            Issue.record("not decoded")
            return
        }
        #expect(decoded.status == 200 && decoded.fields == entry.fields && decoded.body == entry.body)
        #expect(decoded.freshness == entry.freshness && decoded.url == entry.url && decoded.tags == entry.tags)
        guard case .variants(let names)? = CacheRecord(decoding: CacheRecord.variants(["accept"]).encoded()) else {
            Issue.record("variants not decoded")
            return
        }
        #expect(names == ["accept"])
        #expect(CacheRecord(decoding: ByteBuffer(string: "garbage")) == nil)
        var truncated = CacheRecord.response(entry).encoded()
        truncated.moveWriterIndex(to: truncated.writerIndex - 2)
        #expect(CacheRecord(decoding: truncated) == nil)
    }
}

extension CacheRecord: Equatable {
    public static func == (lhs: CacheRecord, rhs: CacheRecord) -> Bool {
        switch (lhs, rhs) {
        case (.variants(let a), .variants(let b)): return a == b
        case (.response(let a), .response(let b)): return a === b
        default: return false
        }
    }
}

/// Bad settings of the cache and compression plugins are load errors with their YAML paths.
@Suite struct CachingConfigTests {
    static func route(_ plugins: String, top: String = "") -> String {
        """
        \(top)services: {api: {targets: [{url: "http://127.0.0.1:9"}]}}
        routes:
          - match: {paths: ["/*"]}
            service: api
            plugins: \(plugins)
        """
    }

    @Test func proxyCacheSettings() {
        let errors = configErrors(Self.route("""
            [{name: proxy-cache, config: {store: disk, max_size: 1MB, max_object_size: 2MB, key: [method, query, cookie],
              statuses: [200, 206], cache_control: "whatever", surrogate_key_header: "bad header", purge_allow: ["10.0.0.0/99"],
              collapse_timeout: soon, colapse: true}}]
            """))
        let text = errors.joined(separator: "\n")
        for expected in ["routes[0].plugins[0].config.store: expected memory, redis or memcached",
                         "routes[0].plugins[0].config.max_object_size: larger than max_size",
                         "routes[0].plugins[0].config.key[2]: expected method, host, path, query, consumer or header:NAME",
                         "routes[0].plugins[0].config.key: the key must contain path",
                         "routes[0].plugins[0].config.statuses: 206 (partial content) is never cached",
                         "routes[0].plugins[0].config.cache_control: no Cache-Control directive recognized",
                         "routes[0].plugins[0].config.surrogate_key_header: not a header name",
                         "routes[0].plugins[0].config.purge_allow[0]: expected an address or CIDR range",
                         "routes[0].plugins[0].config.collapse_timeout:",
                         "routes[0].plugins[0].config"] {
            #expect(text.contains(expected), "missing \(expected) in:\n\(text)")
        }
        #expect(text.contains("colapse"))   // an unknown key is named
    }

    @Test func sharedStoresNeedTheirServers() {
        let redis = configErrors(Self.route("[{name: proxy-cache, config: {store: redis}}]")).joined(separator: "\n")
        #expect(redis.contains("routes[0].plugins[0].config.store: store redis needs cluster.redis"), "\(redis)")
        let memcached = configErrors(Self.route("[{name: proxy-cache, config: {store: memcached}}]")).joined(separator: "\n")
        #expect(memcached.contains("routes[0].plugins[0].config.memcached"), "\(memcached)")
        let badServer = configErrors(Self.route(#"[{name: proxy-cache, config: {store: memcached, memcached: {servers: ["nohost"]}}}]"#))
            .joined(separator: "\n")
        #expect(badServer.contains("routes[0].plugins[0].config.memcached.servers[0]: expected host:port"), "\(badServer)")
        let memoryWithServers = configErrors(Self.route(#"[{name: proxy-cache, config: {memcached: {servers: ["127.0.0.1:11211"]}}}]"#))
            .joined(separator: "\n")
        #expect(memoryWithServers.contains("only for store: memcached"), "\(memoryWithServers)")
        #expect(configErrors(Self.route("[{name: proxy-cache, config: {store: redis}}]", top: "cluster: {redis: \"redis://127.0.0.1:6379\"}\n")).isEmpty)
    }

    @Test func compressionSettings() {
        let errors = configErrors(Self.route("""
            [{name: compression, config: {encodings: [br, zstd], gzip_level: 12, brotli_quality: -1, min_size: lots}}]
            """)).joined(separator: "\n")
        for expected in ["routes[0].plugins[0].config.encodings[1]: expected br, gzip or deflate",
                         "routes[0].plugins[0].config.gzip_level",
                         "routes[0].plugins[0].config.brotli_quality",
                         "routes[0].plugins[0].config.min_size"] {
            #expect(errors.contains(expected), "missing \(expected) in:\n\(errors)")
        }
        let empty = configErrors(Self.route("[{name: compression, config: {encodings: []}}]")).joined(separator: "\n")
        #expect(empty.contains("routes[0].plugins[0].config.encodings: at least one encoding"), "\(empty)")
    }
}
