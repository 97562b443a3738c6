import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing
import TollgateTesting

/// A small identity provider on loopback: a JWKS document and an RFC 7662 introspection endpoint,
/// which tests can rotate keys on, take down and bring back.
final class IdentityProvider: Sendable {
    struct State: Sendable {
        var keys: [(kid: String, key: P256.Signing.PrivateKey)] = []
        var maxAge = 300
        var down = false
        /// Answer the JWKS this late (a slow identity provider).
        var delayMillis = 0
        var jwksFetches = 0
        var introspections = 0
        /// Introspection answers (JSON) by token; others are inactive.
        var tokens: [String: String] = [:]
    }

    let state = NIOLockedValueBox(State())
    let server: StubUpstream
    let group: MultiThreadedEventLoopGroup

    init() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let state = self.state
        server = try await StubUpstream(group: group) { request in
            state.withLockedValue { state -> StubResponse in
                if state.down { return .text("down", status: .serviceUnavailable) }
                if request.head.uri == "/jwks.json" {
                    state.jwksFetches += 1
                    let keys = state.keys.map { entry -> [String: Any] in
                        let raw = entry.key.publicKey.rawRepresentation
                        return ["kty": "EC", "crv": "P-256", "kid": entry.kid, "alg": "ES256", "use": "sig",
                                "x": Self.base64url(raw.prefix(32)), "y": Self.base64url(raw.suffix(32))]
                    }
                    let body = String(decoding: try! JSONSerialization.data(withJSONObject: ["keys": keys]), as: UTF8.self)
                    return StubResponse(headers: ["content-type": "application/json", "cache-control": "public, max-age=\(state.maxAge)"],
                                        body: state.delayMillis > 0 ? .delayed(.milliseconds(Int64(state.delayMillis)), body) : .bytes(body))
                }
                if request.head.uri == "/introspect" {
                    state.introspections += 1
                    // The gateway's own client credentials, form-encoded token.
                    guard request.head.headers["Authorization"].first == "Basic " + Data("gateway:gw-secret".utf8).base64EncodedString() else {
                        return .text("who are you", status: .unauthorized)
                    }
                    let form = request.bodyString
                    let token = form.split(separator: "&").first { $0.hasPrefix("token=") }.map { String($0.dropFirst(6)) } ?? ""
                    return StubResponse(body: .bytes(state.tokens[token] ?? #"{"active":false}"#))
                }
                return .text("not found", status: .notFound)
            }
        }
    }

    var url: String { server.url }

    func addKey(_ kid: String) -> P256.Signing.PrivateKey {
        let key = P256.Signing.PrivateKey()
        state.withLockedValue { $0.keys.append((kid, key)) }
        return key
    }

    func token(kid: String, key: P256.Signing.PrivateKey, subject: String = "alice", expiresIn: Int = 300) -> String {
        let header = Self.base64url(try! JSONSerialization.data(withJSONObject: ["alg": "ES256", "kid": kid, "typ": "JWT"]))
        let payload = Self.base64url(try! JSONSerialization.data(withJSONObject: [
            "sub": subject, "iss": "https://idp.test", "exp": Int(Date().timeIntervalSince1970) + expiresIn]))
        let signature = try! key.signature(for: Data("\(header).\(payload)".utf8)).rawRepresentation
        return "\(header).\(payload).\(Self.base64url(signature))"
    }

    static func base64url(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    func close() async {
        try? await server.close()
        try? await group.shutdownGracefully()
    }
}

@Suite struct IdentityProviderTests {
    static let consumers = """
        consumers:
          - name: alice
            credentials:
              jwt: [{subject: alice}]
              oauth2: [{client_id: svc-a}]
        services:
          api: {targets: [{url: "$UPSTREAM0"}]}

        """

    /// Keys from a JWKS URL: the first request waits for the first fetch; a rotated key is found by
    /// fetching again on its unknown kid; random kids cannot make it fetch more than once per
    /// `jwks_min_refetch`; while the endpoint is down the cached keys work until they expire, then a
    /// clear 503; when it is back, keys load again.
    @Test func jwksFetchRotationOutageAndExpiry() async throws {
        let idp = try await IdentityProvider()
        let first = idp.addKey("k1")
        try await Harness.with(Self.consumers + """
            routes:
              - match: {paths: ["/api/*"]}
                service: api
                plugins: [{name: jwt, config: {jwks_url: "\(idp.url)/jwks.json", algorithms: [ES256], issuer: "https://idp.test",
                                               jwks_min_refetch: 300ms, jwks_max_stale: 1s}}]
            """) { harness in
            func status(_ token: String) async throws -> Int {
                try await harness.get("/api/x", headers: ["Authorization: Bearer \(token)"]).statuses.first ?? 0
            }
            #expect(try await status(idp.token(kid: "k1", key: first)) == 200)
            // Rotation: a new key, unknown to the gateway until it fetches again.
            try await Task.sleep(for: .milliseconds(350))
            let second = idp.addKey("k2")
            #expect(try await status(idp.token(kid: "k2", key: second)) == 200)
            // A flood of random kids: one more fetch inside the min_refetch window (a second one at most,
            // should a slow run cross the keys' 1 s max-age, which the fetch below sets).
            idp.state.withLockedValue { $0.maxAge = 1 }
            try await Task.sleep(for: .milliseconds(350))   // past jwks_min_refetch: the flood may fetch once
            let before = idp.state.withLockedValue { $0.jwksFetches }
            let floodStart = ContinuousClock.now
            for index in 0..<20 {
                #expect(try await status(idp.token(kid: "random-\(index)", key: second)) == 401)
            }
            let fetched = idp.state.withLockedValue { $0.jwksFetches } - before
            // At most one fetch per jwks_min_refetch (300 ms) of the flood's duration (a loaded CI
            // machine may take longer than one window for the 20 requests), never one per kid.
            let windows = Int((ContinuousClock.now - floodStart) / .milliseconds(300))
            #expect(fetched >= 1 && fetched <= 2 + windows, "\(fetched) fetches in \(windows + 1) windows")
            // The endpoint goes down: cached keys keep working...
            idp.state.withLockedValue { $0.down = true }
            #expect(try await status(idp.token(kid: "k1", key: first)) == 200)
            // ...until max-age (1 s) + max_stale (1 s) have passed: then a clear 503.
            try await Task.sleep(for: .milliseconds(2_300))
            let expired = try await harness.get("/api/x", headers: ["Authorization: Bearer \(idp.token(kid: "k1", key: first))"])
            #expect(expired.statuses == [503])
            #expect(expired.lastBody.contains(#""error":"authentication unavailable""#))
            // Back: the next refresh loads the keys again.
            idp.state.withLockedValue { $0.down = false; $0.maxAge = 300 }
            var recovered = false
            for _ in 0..<30 where !recovered {
                try await Task.sleep(for: .milliseconds(200))
                recovered = try await status(idp.token(kid: "k1", key: first)) == 200
            }
            #expect(recovered)
        }
        await idp.close()
    }

    /// A slow JWKS endpoint: the first requests wait no longer than `jwks_timeout`, then get a 503;
    /// once it answers in time, keys load; a slow refresh later never holds requests with cached keys.
    @Test func slowJWKSEndpoint() async throws {
        let idp = try await IdentityProvider()
        let key = idp.addKey("k1")
        idp.state.withLockedValue { $0.delayMillis = 4_000 }
        try await Harness.with(Self.consumers + """
            routes:
              - match: {paths: ["/api/*"]}
                service: api
                plugins: [{name: jwt, config: {jwks_url: "\(idp.url)/jwks.json", algorithms: [ES256], jwks_timeout: 300ms,
                                               jwks_min_refetch: 200ms}}]
            """) { harness in
            func get() async throws -> (Int, Duration) {
                let start = ContinuousClock.now
                let status = try await harness.get("/api/x", headers: ["Authorization: Bearer \(idp.token(kid: "k1", key: key))"]).statuses.first ?? 0
                return (status, ContinuousClock.now - start)
            }
            let (first, waited) = try await get()
            #expect(first == 503)
            #expect(waited < .milliseconds(3_000), "waited \(waited) for a 300 ms timeout (the endpoint takes 4 s)")
            idp.state.withLockedValue { $0.delayMillis = 0; $0.maxAge = 1 }
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await get().0 == 200)
            // Slow again: the background refresh (max-age 1 s) takes its time; requests do not wait for it.
            idp.state.withLockedValue { $0.delayMillis = 2_000 }
            try await Task.sleep(for: .milliseconds(1_100))
            let (cached, quick) = try await get()
            #expect(cached == 200)
            #expect(quick < .milliseconds(500))
        }
        await idp.close()
    }

    /// Opaque tokens through introspection: cached until they expire, one introspection for a burst of
    /// requests with the same new token, inactive tokens refused, and while the endpoint is down,
    /// cached tokens keep working and unknown ones get a 503.
    @Test func introspectionCachingAndOutage() async throws {
        let idp = try await IdentityProvider()
        let exp = Int(Date().timeIntervalSince1970) + 300
        idp.state.withLockedValue {
            $0.tokens["good-token"] = #"{"active":true,"sub":"alice","scope":"orders.read","exp":\#(exp)}"#
            $0.tokens["client-token"] = #"{"active":true,"client_id":"svc-a","exp":\#(exp)}"#
            $0.tokens["burst-token"] = #"{"active":true,"sub":"alice","exp":\#(exp)}"#
        }
        try await Harness.with(Self.consumers + """
            routes:
              - match: {paths: ["/api/*"]}
                service: api
                plugins: [{name: oauth2, config: {introspection: {url: "\(idp.url)/introspect", client_id: gateway, client_secret: gw-secret}}}]
            """) { harness in
            func get(_ token: String) async throws -> RawClient.Result {
                try await harness.get("/api/x", headers: ["Authorization: Bearer \(token)"])
            }
            #expect(try await get("good-token").statuses == [200])
            #expect(harness.upstreams[0].requests.last?.head.headers["X-Consumer-Username"] == ["alice"])
            #expect(harness.upstreams[0].requests.last?.head.headers["X-Authenticated-Scope"] == ["orders.read"])
            #expect(try await get("good-token").statuses == [200])
            #expect(idp.state.withLockedValue { $0.introspections } == 1, "the second request was answered from the cache")
            #expect(try await get("client-token").statuses == [200])   // mapped by client_id
            let inactive = try await get("revoked-token")
            #expect(inactive.statuses == [401])
            #expect(inactive.text.header("www-authenticate")?.contains(#"error_description="token inactive""#) == true)
            // A burst of requests with one new token: one introspection.
            let before = idp.state.withLockedValue { $0.introspections }
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<10 { group.addTask { try await get("burst-token").statuses.first ?? 0 } }
                var all: [Int] = []
                for try await status in group { all.append(status) }
                return all
            }
            #expect(statuses == Array(repeating: 200, count: 10))
            #expect(idp.state.withLockedValue { $0.introspections } - before <= 2)
            // Down: cached tokens work, new ones get a 503.
            idp.state.withLockedValue { $0.down = true }
            #expect(try await get("good-token").statuses == [200])
            #expect(try await get("never-seen").statuses == [503])
        }
        await idp.close()
    }
}
