import NIOCore
import Testing
import TollgateTesting

let basicConfig = """
    services:
      api: {targets: [{url: "$UPSTREAM0"}], timeouts: {read: 1s, connect: 1s}}
    routes:
      - {name: users, match: {paths: ["/users/{id}"]}, service: api, rewrite: "/internal/users/{id}"}
      - {name: any, match: {paths: ["/api/*"]}, service: api, strip_prefix: true}
    """

@Suite struct ProxyTests {
    @Test func proxiesWithForwardingHeaders() async throws {
        try await Harness.with(basicConfig) { harness in
            let response = try await harness.get("/users/42?x=1", headers: ["X-Forwarded-For: 1.2.3.4", "Connection: keep-alive, X-Hop", "X-Hop: secret"])
            #expect(response.statuses == [200])
            #expect(response.text.header("via") == "1.1 tollgate")
            let requestID = try #require(response.text.header("x-request-id"))
            #expect(requestID.count == 32)
            let seen = try #require(harness.upstreams[0].requests.last)
            #expect(seen.head.uri == "/internal/users/42?x=1")
            #expect(seen.head.headers["x-forwarded-for"] == ["1.2.3.4, 127.0.0.1"])
            #expect(seen.head.headers["x-forwarded-proto"] == ["http"])
            #expect(seen.head.headers["x-forwarded-host"] == ["test"])
            #expect(seen.head.headers["forwarded"] == ["for=127.0.0.1;proto=http;host=\"test\""])
            #expect(seen.head.headers["via"] == ["1.1 tollgate"])
            #expect(seen.head.headers["x-request-id"] == [requestID])
            #expect(seen.head.headers["x-hop"].isEmpty)          // named in Connection: hop-by-hop
            #expect(seen.head.headers["host"] == ["127.0.0.1:\(harness.upstreams[0].port)"])
        }
    }

    @Test func propagatesClientRequestID() async throws {
        try await Harness.with(basicConfig) { harness in
            let response = try await harness.get("/api/x", headers: ["X-Request-ID: abc-123"])
            #expect(response.text.header("x-request-id") == "abc-123")
            #expect(harness.upstreams[0].requests.last?.head.headers["x-request-id"] == ["abc-123"])
            #expect(harness.upstreams[0].requests.last?.head.uri == "/x")
        }
    }

    @Test func keepAliveReusesUpstreamConnections() async throws {
        try await Harness.with(basicConfig, threads: 1) { harness in
            var request = ""
            for i in 0..<5 { request += "GET /api/\(i) HTTP/1.1\r\nHost: t\r\n\r\n" }
            request += "GET /api/last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            let response = try await harness.send(request)
            #expect(response.statuses == Array(repeating: 200, count: 6))   // pipelined, answered in order
            let uris = harness.upstreams[0].requests.map(\.head.uri)
            #expect(uris == ["/0", "/1", "/2", "/3", "/4", "/last"])
            #expect(harness.upstreams[0].connectionsAccepted == 1)
        }
    }

    @Test func noRouteIs404JSON() async throws {
        try await Harness.with(basicConfig) { harness in
            let response = try await harness.get("/nope")
            #expect(response.statuses == [404])
            #expect(response.lastBody.hasPrefix(#"{"error":"no route matched","request_id":""#))
        }
    }

    @Test func upstreamDownIs502() async throws {
        try await Harness.with("""
            services:
              dead: {targets: [{url: "http://127.0.0.1:1"}]}
            routes:
              - {match: {paths: ["/*"]}, service: dead}
            """) { harness in
            let response = try await harness.get("/x")
            #expect(response.statuses == [502])
            #expect(response.lastBody.contains(#""error":"upstream connection failed""#))
        }
    }

    @Test func upstreamTimeoutIs504() async throws {
        try await Harness.with("""
            services:
              slow: {targets: [{url: "$UPSTREAM0"}], timeouts: {read: 200ms}}
            routes:
              - {match: {paths: ["/*"]}, service: slow}
            """, upstreams: [{ _ in StubResponse(body: .delayed(.seconds(2), "late")) }]) { harness in
            let response = try await harness.get("/x")
            #expect(response.statuses == [504])
            #expect(response.lastBody.contains("upstream read timeout"))
        }
    }

    @Test func upstreamClosingIs502() async throws {
        try await Harness.with(basicConfig, upstreams: [{ _ in StubResponse(body: .close) }]) { harness in
            let response = try await harness.get("/api/x")
            #expect(response.statuses == [502])
        }
    }

    @Test func headRequestsHaveNoBody() async throws {
        try await Harness.with(basicConfig) { harness in
            let response = try await harness.send("HEAD /api/x HTTP/1.1\r\nHost: t\r\n\r\nGET /api/y HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            #expect(response.statuses == [200, 200])
        }
    }

    @Test func chunkedRequestBodyStreamsThrough() async throws {
        try await Harness.with(basicConfig) { harness in
            let response = try await harness.send(
                "POST /api/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                chunks: ["5\r\nhello\r\n", "6\r\n world\r\n", "0\r\n\r\n"], pause: .milliseconds(20))
            #expect(response.statuses == [200])
            #expect(harness.upstreams[0].requests.last?.bodyString == "hello world")
        }
    }

    @Test func expectContinueIsRelayed() async throws {
        try await Harness.with(basicConfig, upstreams: [{ _ in StubResponse(body: .continueThen("done")) }]) { harness in
            let response = try await harness.send(
                "POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
                chunks: ["data"], pause: .milliseconds(100))
            #expect(response.statuses == [100, 200])
            #expect(response.lastBody == "done")
        }
    }

    @Test func webSocketUpgradeRelaysBytes() async throws {
        try await Harness.with(basicConfig, upstreams: [{ _ in StubResponse(body: .upgradeEcho) }]) { harness in
            let response = try await harness.send(
                "GET /api/ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                timeout: .seconds(1), chunks: ["ping-1", "ping-2"], pause: .milliseconds(100))
            #expect(response.statuses == [101])
            #expect(response.text.hasSuffix("ping-1ping-2"))
            #expect(harness.upstreams[0].requests.last?.head.headers["upgrade"] == ["websocket"])
            // The relayed connection is still tracked until it closes, then forgotten (drain needs both).
            for _ in 0..<50 where harness.server.openConnections > 0 { try await Task.sleep(for: .milliseconds(20)) }
            #expect(harness.server.openConnections == 0)
        }
    }
}

@Suite struct ConnectionLimitTests {
    static func config(connectTimeout: String) -> String {
        """
        services:
          api: {targets: [{url: "$UPSTREAM0"}], connections: {max_per_target: 1}, timeouts: {connect: \(connectTimeout)}}
        routes:
          - {match: {paths: ["/*"]}, service: api}
        """
    }

    /// At the limit, requests wait for a connection: a released one, or a new one once another closed.
    @Test func waitersGetFreedConnections() async throws {
        try await Harness.with(Self.config(connectTimeout: "2s"), upstreams: [{ request in
            var response = StubResponse(body: .delayed(.milliseconds(100), "ok"))
            if request.head.uri.hasPrefix("/close") { response.headers.add(name: "connection", value: "close") }
            return response
        }], threads: 1) { harness in
            for prefix in ["/keep", "/close"] {
                try await withThrowingTaskGroup(of: [Int].self) { group in
                    for i in 0..<3 { group.addTask { try await harness.get("\(prefix)/\(i)").statuses } }
                    for try await statuses in group { #expect(statuses == [200]) }
                }
            }
            // One connection serves the three keep-alive requests and the first closing one; the other
            // two closing requests each wait for the previous connection to close, then get a new one.
            #expect(harness.upstreams[0].connectionsAccepted == 3)
        }
    }

    @Test func waitingPastTheConnectTimeoutIs503() async throws {
        try await Harness.with(Self.config(connectTimeout: "100ms"), upstreams: [{ _ in
            StubResponse(body: .delayed(.seconds(2), "slow"))
        }], threads: 1) { harness in
            // Whichever leases the only connection holds it for 2 s; the other gives up after 100 ms.
            async let first = harness.get("/a")
            async let second = harness.get("/b")
            let responses = try await [first, second]
            #expect(responses.flatMap(\.statuses).sorted() == [200, 503])
            #expect(responses.contains { $0.text.contains("upstream connection limit reached") })
        }
    }
}

@Suite struct FramingTests {
    static let chunkedUpstream: StubUpstream.Responder = { _ in StubResponse(body: .stream(count: 100_000, chunked: true)) }

    @Test func chunkedResponseStaysChunkedForHTTP11() async throws {
        try await Harness.with(basicConfig, upstreams: [Self.chunkedUpstream]) { harness in
            let response = try await harness.get("/api/stream")
            #expect(response.statuses == [200])
            #expect(response.text.header("transfer-encoding") == "chunked")
            #expect(response.text.hasSuffix("0\r\n\r\n"))
        }
    }

    @Test func http10ClientGetsABodyDelimitedByClose() async throws {
        try await Harness.with(basicConfig, upstreams: [Self.chunkedUpstream]) { harness in
            let response = try await harness.send("GET /api/stream HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
            #expect(response.statuses == [200])
            #expect(response.text.header("transfer-encoding") == nil)
            #expect(response.text.header("connection") == "close")
            #expect(response.lastBody.utf8.count == 100_000)
            #expect(response.closedByServer)
        }
    }

    /// HEAD keeps the framing headers but sends no body, not even a chunk terminator, so the next
    /// pipelined response is not corrupted.
    @Test func headResponseToChunkedUpstreamHasNoBody() async throws {
        try await Harness.with(basicConfig, upstreams: [Self.chunkedUpstream]) { harness in
            let response = try await harness.send(
                "HEAD /api/stream HTTP/1.1\r\nHost: t\r\n\r\nHEAD /api/stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            #expect(response.statuses == [200, 200])
            // Each response is exactly a head: its only blank line ends it, and nothing follows.
            let responses = response.text.components(separatedBy: "HTTP/1.1 200 OK\r\n").dropFirst()
            #expect(responses.count == 2)
            for text in responses {
                #expect(text.hasSuffix("\r\n\r\n"))
                #expect(text.components(separatedBy: "\r\n\r\n").count == 2)
            }
        }
    }
}

@Suite struct HostTests {
    @Test func hostIsPreservedOrRewrittenPerRoute() async throws {
        try await Harness.with("""
            services:
              api: {targets: [{url: "$UPSTREAM0"}]}
            routes:
              - {match: {paths: ["/keep"]}, service: api, preserve_host: true}
              - {match: {paths: ["/rewrite"]}, service: api}
            """) { harness in
            _ = try await harness.get("/keep")
            #expect(harness.upstreams[0].requests.last?.head.headers["host"] == ["test"])
            _ = try await harness.get("/rewrite")
            #expect(harness.upstreams[0].requests.last?.head.headers["host"] == ["127.0.0.1:\(harness.upstreams[0].port)"])
        }
    }
}

@Suite struct ConnectionReuseTests {
    /// HTTP/1.0 with keep-alive stays open and says so; the next request on it is served.
    @Test func http10KeepAlive() async throws {
        try await Harness.with(basicConfig) { harness in
            let response = try await harness.send(
                "GET /api/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /api/b HTTP/1.0\r\n\r\n")
            #expect(response.statuses == [200, 200])
            #expect(response.text.header("connection") == "keep-alive")
            #expect(response.closedByServer)   // the second request did not ask for keep-alive
        }
    }

    /// A request answered by the gateway (404, a plugin's 410) with a small body: the body is read and
    /// dropped, and the next pipelined request on the connection is still served.
    @Test func localAnswersSkipSmallBodies() async throws {
        try await Harness.with("""
            services:
              api: {targets: [{url: "$UPSTREAM0"}]}
            routes:
              - {match: {paths: ["/api/*"]}, service: api}
              - {match: {paths: ["/closed"]}, plugins: [{name: request-termination, config: {status: 410}}]}
            """) { harness in
            let response = try await harness.send(
                "POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello" +
                "POST /closed HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" +
                "GET /api/after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                chunks: ["3\r\nabc\r\n0\r\n\r\n"], pause: .milliseconds(50))
            // The chunked body's size is unknown up front, so the 410 closes the connection instead.
            #expect(response.statuses == [404, 410])
            #expect(response.text.header("connection") == "close")
            let second = try await harness.send(
                "POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello" +
                "GET /api/after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            #expect(second.statuses == [404, 200])
            #expect(harness.upstreams[0].requests.map(\.head.uri) == ["/api/after"])
        }
    }
}
