import Crypto
import Foundation
import Testing
import TollgatePlugins
import TollgateTesting

/// Authentication and authorization through the proxy: what the upstream sees, and what the client
/// gets when it is refused.
@Suite struct AuthenticationTests {
    static let hash = try! PasswordHash.make("s3cret pass", scheme: .pbkdf2SHA256(rounds: 20_000)).text

    static let config = """
        consumers:
          - name: alice
            id: u-1
            groups: [admin]
            credentials:
              key_auth: [{key: "alice-key-0123456789"}]
              basic_auth: [{username: alice, password_hash: "\(hash)"}]
          - name: bob
            groups: [staff]
            credentials:
              key_auth: [{key: "bob-key-012345678901"}]
        services:
          api: {targets: [{url: "$UPSTREAM0"}]}
        routes:
          - match: {paths: ["/admin/*"]}
            service: api
            plugins:
              - {name: key-auth}
              - {name: acl, config: {allow: [admin]}}
          - match: {paths: ["/limited/*"]}
            service: api
            plugins:
              - {name: key-auth}
              - {name: rate-limiting, config: {limits: ["2/min"], algorithm: sliding_log, key: consumer}}
          - match: {paths: ["/transformed/*"]}
            service: api
            plugins:
              - {name: key-auth}
              - {name: headers, config: {request: {set: {X-From-Gateway: "yes"}}}}
          - match: {paths: ["/basic/*"]}
            service: api
            plugins: [{name: basic-auth, config: {realm: tollgate-test}}]
          - match: {paths: ["/both/*"]}
            service: api
            plugins: [{name: auth, config: {mode: all, methods: [{name: basic-auth}, {name: key-auth}]}}]
        """

    @Test func keyAuthAndACLThroughTheProxy() async throws {
        try await Harness.with(Self.config) { harness in
            let alice = try await harness.get("/admin/x", headers: ["X-API-Key: alice-key-0123456789", "X-Consumer-ID: spoofed"])
            #expect(alice.statuses == [200])
            let seen = try #require(harness.upstreams[0].requests.last)
            #expect(seen.head.headers["X-Consumer-ID"] == ["u-1"])
            #expect(seen.head.headers["X-Consumer-Username"] == ["alice"])
            #expect(seen.head.headers["X-Consumer-Groups"] == ["admin"])
            #expect(seen.head.headers["X-API-Key"].isEmpty)
            let bob = try await harness.get("/admin/x", headers: ["X-API-Key: bob-key-012345678901"])
            #expect(bob.statuses == [403])
            #expect(bob.lastBody.contains(#""error":"consumer is not allowed on this route""#))
            let nobody = try await harness.get("/admin/x")
            #expect(nobody.statuses == [401])
            #expect(nobody.text.header("www-authenticate") == #"Key realm="tollgate""#)
            #expect(harness.upstreams[0].requests.count == 1)
        }
    }

    /// Where another plugin rewrites the request, the key is read from the converted fields instead of
    /// the client's head: the same answers.
    @Test func keyAuthBesideARequestRewrite() async throws {
        try await Harness.with(Self.config) { harness in
            let alice = try await harness.get("/transformed/x", headers: ["X-API-Key: alice-key-0123456789"])
            #expect(alice.statuses == [200])
            let seen = try #require(harness.upstreams[0].requests.last)
            #expect(seen.head.headers["X-Consumer-Username"] == ["alice"])
            #expect(seen.head.headers["X-From-Gateway"] == ["yes"])
            #expect(seen.head.headers["X-API-Key"].isEmpty)
            let wrong = try await harness.get("/transformed/x", headers: ["X-API-Key: not-a-key-0123456789"])
            #expect(wrong.statuses == [401])
            #expect(harness.upstreams[0].requests.count == 1)
        }
    }

    /// `key: consumer`: each consumer has its own budget, whichever address it comes from.
    @Test func rateLimitPerConsumer() async throws {
        try await Harness.with(Self.config) { harness in
            var statuses: [String: [Int]] = [:]
            for (who, key) in [("alice", "alice-key-0123456789"), ("bob", "bob-key-012345678901")] {
                for _ in 0..<3 { statuses[who, default: []] += try await harness.get("/limited/x", headers: ["X-API-Key: \(key)"]).statuses }
            }
            #expect(statuses["alice"] == [200, 200, 429])
            #expect(statuses["bob"] == [200, 200, 429])
        }
    }

    /// Basic: the slow hash runs off the event loop; the answer is cached for the next request.
    @Test func basicAuthThroughTheProxy() async throws {
        try await Harness.with(Self.config) { harness in
            let token = Data("alice:s3cret pass".utf8).base64EncodedString()
            let first = try await harness.get("/basic/x", headers: ["Authorization: Basic \(token)"])
            #expect(first.statuses == [200])
            #expect(harness.upstreams[0].requests.last?.head.headers["Authorization"].isEmpty == true)
            let again = try await harness.get("/basic/x", headers: ["Authorization: Basic \(token)"])
            #expect(again.statuses == [200])
            let wrong = try await harness.get("/basic/x", headers: ["Authorization: Basic \(Data("alice:nope".utf8).base64EncodedString())"])
            #expect(wrong.statuses == [401])
            #expect(wrong.text.header("www-authenticate") == #"Basic realm="tollgate-test", charset="UTF-8""#)
            #expect(!wrong.text.contains("nope"))
        }
    }

    /// `auth` with `mode: all`: the password check waits off the loop, then the key is checked.
    @Test func chainWithASlowMethodThroughTheProxy() async throws {
        try await Harness.with(Self.config) { harness in
            let basic = "Authorization: Basic \(Data("alice:s3cret pass".utf8).base64EncodedString())"
            let both = try await harness.get("/both/x", headers: [basic, "X-API-Key: alice-key-0123456789"])
            #expect(both.statuses == [200])
            let seen = try #require(harness.upstreams[0].requests.last)
            #expect(seen.head.headers["X-Consumer-Username"] == ["alice"])
            #expect(seen.head.headers["Authorization"].isEmpty && seen.head.headers["X-API-Key"].isEmpty)
            let onlyOne = try await harness.get("/both/x", headers: [basic])
            #expect(onlyOne.statuses == [401])
            let mixed = try await harness.get("/both/x", headers: [basic, "X-API-Key: bob-key-012345678901"])
            #expect(mixed.statuses == [401])
        }
    }
}
