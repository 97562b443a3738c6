import HTTPTypes
import Testing
import TollgateCore
import TollgatePlugins

/// Builds a snapshot from a routes block; every route points at service `s`.
func snapshot(_ routes: String, versioning: String = "") throws -> GatewaySnapshot {
    let yaml = """
        services:
          s: {targets: [{url: "http://127.0.0.1:9"}]}
        \(versioning)
        routes:
        \(routes)
        """
    return try ConfigLoader.load(yaml: yaml, environment: [:], registry: BuiltinPlugins.registry)
}

func route(_ table: RouteTable, _ path: String, method: HTTPRequest.Method = .get, host: String? = nil,
           headers: HTTPFields = [:], query: String? = nil, version: String? = nil) -> String? {
    let normalized = try? PathNormalizer.normalize(Substring(path), mergeSlashes: true)
    guard let normalized else { return "invalid" }
    let request = RouteRequest(method: method, host: host.map { Substring($0) }, path: normalized,
                               query: query.map { Substring($0) }, headerFields: headers, version: version)
    return table.match(request)?.route.name
}

@Suite struct RouterTests {
    static let routes = """
          - {name: root, match: {paths: ["/"]}, service: s}
          - {name: users-list, match: {paths: ["/users"]}, service: s}
          - {name: user, match: {paths: ["/users/{id}"]}, service: s}
          - {name: user-me, match: {paths: ["/users/me"]}, service: s}
          - {name: user-orders, match: {paths: ["/users/{id}/orders"]}, service: s}
          - {name: user-order, match: {paths: ["/users/{id}/orders/{order}"]}, service: s}
          - {name: files, match: {paths: ["/files/{path...}"]}, service: s}
          - {name: api-prefix, match: {paths: ["/api/*"]}, service: s}
          - {name: api-v-items, match: {paths: ["/api/{v}/items"]}, service: s}
          - {name: api-static, match: {paths: ["/api/status"]}, service: s}
          - {name: regex-items, match: {paths: ["~^/items/[0-9]+$"]}, service: s}
          - {name: items-new, match: {paths: ["/items/new"]}, service: s}
          - {name: post-only, match: {paths: ["/submit"], methods: [POST, PUT]}, service: s}
          - {name: get-submit, match: {paths: ["/submit"], methods: [GET]}, service: s}
          - {name: beta, match: {paths: ["/feature"], headers: {X-Beta: "1"}}, service: s}
          - {name: beta-regex, match: {paths: ["/feature"], headers: {X-Beta: {regex: "[a-z]+"}}}, service: s}
          - {name: feature-absent, match: {paths: ["/feature"], headers: {X-Beta: {absent: true}}}, service: s}
          - {name: feature-present, match: {paths: ["/feature"], headers: {X-Beta: {present: true}}}, service: s}
          - {name: search-q, match: {paths: ["/search"], query: {q: {present: true}}}, service: s}
          - {name: search-exact, match: {paths: ["/search"], query: {mode: "fast"}}, service: s}
          - {name: search, match: {paths: ["/search"]}, service: s}
          - {name: host-exact, match: {hosts: ["api.example.com"], paths: ["/users/{id}"]}, service: s}
          - {name: host-wild, match: {hosts: ["*.example.org"], paths: ["/users/{id}"]}, service: s}
          - {name: host-wild-deeper, match: {hosts: ["*.eu.example.org"], paths: ["/users/{id}"]}, service: s}
          - {name: host-only, match: {hosts: ["only.example.com"]}, service: s}
        """

    static let cases: [(path: String, method: HTTPRequest.Method, host: String?, headers: HTTPFields, query: String?, expected: String?)] = [
        ("/", .get, nil, [:], nil, "root"),
        ("/users", .get, nil, [:], nil, "users-list"),
        ("/users/", .get, nil, [:], nil, "users-list"),
        ("/users/42", .get, nil, [:], nil, "user"),
        ("/users/me", .get, nil, [:], nil, "user-me"),                 // literal beats parameter
        ("/users/42/orders", .get, nil, [:], nil, "user-orders"),
        ("/users/42/orders/7", .get, nil, [:], nil, "user-order"),
        ("/users/42/orders/7/x", .get, nil, [:], nil, nil),
        ("/users/me/orders", .get, nil, [:], nil, "user-orders"),      // backtracks from literal to parameter
        ("/files", .get, nil, [:], nil, "files"),
        ("/files/a/b/c.txt", .get, nil, [:], nil, "files"),
        ("/api", .get, nil, [:], nil, "api-prefix"),
        ("/api/anything/else", .get, nil, [:], nil, "api-prefix"),
        ("/api/status", .get, nil, [:], nil, "api-static"),             // exact beats prefix
        ("/api/v3/items", .get, nil, [:], nil, "api-v-items"),          // parameters beat shorter prefix
        ("/api/v3/items/9", .get, nil, [:], nil, "api-prefix"),
        ("/items/123", .get, nil, [:], nil, "regex-items"),
        ("/items/new", .get, nil, [:], nil, "items-new"),               // trie before regex
        ("/items/abc", .get, nil, [:], nil, nil),
        ("/submit", .post, nil, [:], nil, "post-only"),
        ("/submit", .put, nil, [:], nil, "post-only"),
        ("/submit", .get, nil, [:], nil, "get-submit"),
        ("/submit", .delete, nil, [:], nil, nil),
        ("/feature", .get, nil, [HTTPField.Name("X-Beta")!: "1"], nil, "beta"),
        ("/feature", .get, nil, [HTTPField.Name("X-Beta")!: "abc"], nil, "beta-regex"),
        ("/feature", .get, nil, [HTTPField.Name("X-Beta")!: "ABC1"], nil, "feature-present"),
        ("/feature", .get, nil, [:], nil, "feature-absent"),
        ("/search", .get, nil, [:], "q=x", "search-q"),
        ("/search", .get, nil, [:], "mode=fast", "search-exact"),
        ("/search", .get, nil, [:], "mode=slow", "search"),
        ("/search", .get, nil, [:], nil, "search"),
        ("/users/1", .get, "api.example.com", [:], nil, "host-exact"),
        ("/users/1", .get, "API.Example.COM:8443", [:], nil, "host-exact"),   // case and port ignored
        ("/users/1", .get, "a.example.org", [:], nil, "host-wild"),
        ("/users/1", .get, "a.b.example.org", [:], nil, "host-wild"),
        ("/users/1", .get, "x.eu.example.org", [:], nil, "host-wild-deeper"),   // longer suffix wins
        ("/users/1", .get, "example.org", [:], nil, "user"),                   // *.x does not match x
        ("/users/1", .get, "other.com", [:], nil, "user"),
        ("/anything/at/all", .get, "only.example.com", [:], nil, "host-only"),
        ("/users/1", .get, "only.example.com", [:], nil, "host-only"),         // host beats path specificity
        ("/api/%2e%2e/users/5", .get, nil, [:], nil, "user"),                  // encoded dot segments
        ("/files/../users/5", .get, nil, [:], nil, "user"),
        ("//users//5", .get, nil, [:], nil, "user"),
        ("/users/%35", .get, nil, [:], nil, "user"),
        ("/users/a%2Fb", .get, nil, [:], nil, "user"),                          // %2F stays inside the segment
        ("/../../etc/passwd", .get, nil, [:], nil, nil),
        ("/nothing", .get, nil, [:], nil, nil),
    ]

    @Test(arguments: 0..<cases.count)
    func matches(_ index: Int) throws {
        let table = try snapshot(Self.routes).routeTable
        let c = Self.cases[index]
        #expect(route(table, c.path, method: c.method, host: c.host, headers: c.headers, query: c.query) == c.expected,
                "\(c.method) \(c.host ?? "") \(c.path)")
    }

    /// The event loop's way: one scratch array for every request. Each case gives the same route and
    /// parameters as a fresh match, and the array is left empty with its capacity.
    @Test func aReusedScratchArrayChangesNothing() throws {
        let table = try snapshot(Self.routes).routeTable
        var scratch: [RouteTable.Segment] = []
        for c in Self.cases + Self.cases {
            guard let path = try? PathNormalizer.normalize(Substring(c.path), mergeSlashes: true) else { continue }
            let request = RouteRequest(method: c.method, host: c.host.map { Substring($0) }, path: path,
                                       query: c.query.map { Substring($0) }, headerFields: c.headers, version: nil)
            let reused = table.match(request, scratch: &scratch)
            let fresh = table.match(request)
            #expect(reused?.route.name == c.expected, "\(c.method) \(c.path)")
            #expect(reused?.parameters.map(\.value) == fresh?.parameters.map(\.value))
            #expect(scratch.isEmpty)
        }
        #expect(scratch.capacity >= 5)
    }

    @Test func parametersAreExtracted() throws {
        let table = try snapshot(Self.routes).routeTable
        let request = RouteRequest(method: .get, host: nil, path: "/users/42/orders/7", query: nil, headerFields: [:], version: nil)
        let found = table.match(request)
        let match = try #require(found)
        #expect(match.parameters.map(\.name) == ["id", "order"])
        #expect(match.parameters.map(\.value) == ["42", "7"])
        let filesMatch = table.match(RouteRequest(method: .get, host: nil, path: "/files/a/b/c.txt", query: nil,
                                                  headerFields: [:], version: nil))
        let files = try #require(filesMatch)
        #expect(files.parameters.first?.value == "a/b/c.txt")
    }

    @Test func tiesGoToTheFirstDeclared() throws {
        let table = try snapshot("""
              - {name: first, match: {paths: ["/x/{a}"], headers: {X-A: {present: true}}}, service: s}
              - {name: second, match: {paths: ["/x/{b}"], headers: {X-B: {present: true}}}, service: s}
            """).routeTable
        let both: HTTPFields = [HTTPField.Name("X-A")!: "1", HTTPField.Name("X-B")!: "1"]
        #expect(route(table, "/x/1", headers: both) == "first")
        #expect(route(table, "/x/1", headers: [HTTPField.Name("X-B")!: "1"]) == "second")
    }

    @Test func rewriteAndStripPrefix() throws {
        let table = try snapshot("""
              - {name: rw, match: {paths: ["/users/{id}"]}, service: s, rewrite: "/internal/users/{id}"}
              - {name: strip, match: {paths: ["/api/*"]}, service: s, strip_prefix: true}
              - {name: rest, match: {paths: ["/files/{rest...}"]}, service: s, rewrite: "/store/{rest}"}
            """).routeTable
        func upstream(_ path: String) -> String? {
            table.match(RouteRequest(method: .get, host: nil, path: path, query: nil, headerFields: [:], version: nil))?
                .upstreamPath(for: path, version: nil)
        }
        #expect(upstream("/users/42") == "/internal/users/42")
        #expect(upstream("/api/orders/1") == "/orders/1")
        #expect(upstream("/api") == "/")
        #expect(upstream("/files/a/b") == "/store/a/b")
        #expect(upstream("/files") == "/store/")
    }

    @Test func versionPredicates() throws {
        let table = try snapshot("""
              - {name: v1, match: {paths: ["/users"], version: "1"}, service: s}
              - {name: v2, match: {paths: ["/users"], version: "2"}, service: s}
              - {name: any, match: {paths: ["/health"]}, service: s}
            """, versioning: "versioning: {header: API-Version, default: \"1\"}").routeTable
        #expect(route(table, "/users", version: "1") == "v1")
        #expect(route(table, "/users", version: "2") == "v2")
        #expect(route(table, "/users", version: "3") == nil)
        #expect(route(table, "/health", version: "3") == "any")
        #expect(Set(table.candidates(host: nil, path: "/users").compactMap(\.version)) == ["1", "2"])
    }

    /// Match cost must not grow with the number of routes: 10 000 routes still find the right one.
    @Test func manyRoutes() throws {
        var routes = ""
        for i in 0..<10_000 { routes += "  - {name: r\(i), match: {paths: [\"/svc\(i)/items/{id}\"]}, service: s}\n" }
        let clock = ContinuousClock()
        var table: RouteTable?
        let compile = try clock.measure { table = try snapshot(routes).routeTable }
        #expect(route(table!, "/svc9999/items/3") == "r9999")
        #expect(route(table!, "/svc0/items/3") == "r0")
        #expect(compile < .seconds(10))   // a debug build; the release target is 0.5 s (docs/benchmarks.md)
    }
}
