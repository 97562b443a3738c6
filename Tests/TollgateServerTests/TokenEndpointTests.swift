import Crypto
import Foundation
import Testing
import TollgateTesting

/// The gateway's own client-credentials token endpoint, and the `jwt` plugin accepting its tokens.
@Suite struct TokenEndpointTests {
    static let key = P256.Signing.PrivateKey()

    static var config: String {
        func indent(_ pem: String, _ spaces: Int) -> String {
            pem.split(separator: "\n").joined(separator: "\n" + String(repeating: " ", count: spaces))
        }
        return """
            consumers:
              - name: billing
                credentials:
                  oauth2: [{client_id: svc-billing, client_secret: "billing-secret-1234", scopes: [orders.read, orders.write]}]
            services:
              api: {targets: [{url: "$UPSTREAM0"}]}
            routes:
              - match: {paths: ["/oauth2/token"]}
                service: api
                plugins:
                  - name: oauth2-token
                    config:
                      issuer: "https://gateway.test"
                      audience: orders
                      ttl: 10m
                      signing_key:
                        kid: gw-1
                        alg: ES256
                        pem: |
                          \(indent(key.pemRepresentation, 14))
              - match: {paths: ["/api/*"]}
                service: api
                plugins:
                  - name: jwt
                    config:
                      algorithms: [ES256]
                      issuer: "https://gateway.test"
                      audience: orders
                      keys:
                        - kid: gw-1
                          alg: ES256
                          pem: |
                            \(indent(key.publicKey.pemRepresentation, 16))
                  - {name: scopes, config: {GET: [orders.read], DELETE: [orders.admin]}}
            """
    }

    static func post(_ harness: Harness, body: String, basic: String? = "svc-billing:billing-secret-1234",
                     contentType: String = "application/x-www-form-urlencoded") async throws -> RawClient.Result {
        var head = "POST /oauth2/token HTTP/1.1\r\nHost: t\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n"
        if let basic { head += "Authorization: Basic \(Data(basic.utf8).base64EncodedString())\r\n" }
        return try await harness.send(head + "\r\n" + body)
    }

    @Test func issuesTokensTheJWTPluginAccepts() async throws {
        try await Harness.with(Self.config) { harness in
            let issued = try await Self.post(harness, body: "grant_type=client_credentials&scope=orders.read")
            #expect(issued.statuses == [200])
            #expect(issued.text.header("cache-control") == "no-store")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(issued.lastBody.utf8)) as? [String: Any])
            #expect(json["token_type"] as? String == "Bearer")
            #expect(json["expires_in"] as? Int == 600)
            #expect(json["scope"] as? String == "orders.read")
            let token = try #require(json["access_token"] as? String)
            // The token opens the API route, as the billing consumer, with its scope.
            let call = try await harness.get("/api/orders", headers: ["Authorization: Bearer \(token)"])
            #expect(call.statuses == [200])
            let seen = try #require(harness.upstreams[0].requests.last)
            #expect(seen.head.headers["X-Consumer-Username"] == ["billing"])
            #expect(seen.head.headers["X-Authenticated-Scope"] == ["orders.read"])
            // A scope it was not given: 403.
            let delete = try await harness.send("DELETE /api/orders/1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer \(token)\r\nConnection: close\r\n\r\n")
            #expect(delete.statuses == [403])
            #expect(harness.upstreams[0].requests.count == 1, "the token endpoint answers itself")
        }
    }

    @Test func tokenRequestErrorsFollowRFC6749() async throws {
        try await Harness.with(Self.config) { harness in
            let wrongSecret = try await Self.post(harness, body: "grant_type=client_credentials", basic: "svc-billing:guess")
            #expect(wrongSecret.statuses == [401])
            #expect(wrongSecret.lastBody.contains(#""error":"invalid_client""#))
            #expect(!wrongSecret.text.contains("guess"))
            let formClient = try await Self.post(harness, body: "grant_type=client_credentials&client_id=svc-billing&client_secret=billing-secret-1234", basic: nil)
            #expect(formClient.statuses == [200], "client credentials in the body")
            let password = try await Self.post(harness, body: "grant_type=password&username=a&password=b")
            #expect(password.lastBody.contains(#""error":"unsupported_grant_type""#))
            let scope = try await Self.post(harness, body: "grant_type=client_credentials&scope=orders.admin")
            #expect(scope.statuses == [400])
            #expect(scope.lastBody.contains(#""error":"invalid_scope""#))
            let json = try await Self.post(harness, body: #"{"grant_type":"client_credentials"}"#, contentType: "application/json")
            #expect(json.statuses == [400])
            let huge = try await Self.post(harness, body: "grant_type=client_credentials&pad=" + String(repeating: "x", count: 10_000))
            #expect(huge.statuses == [413])
            let get = try await harness.get("/oauth2/token")
            #expect(get.statuses == [405])
        }
    }
}
