import Crypto
import CryptoExtras
import Foundation
import HTTPTypes
import Testing
import TollgateCore
@testable import TollgatePlugins

/// Keys of every family, and tokens signed with them the way an identity provider would.
struct TestKeys: Sendable {
    static let ec = P256.Signing.PrivateKey()
    static let ec384 = P384.Signing.PrivateKey()
    /// A fixed 2048-bit test key (made with openssl): generating one in a debug build takes seconds of
    /// one of the few threads the whole suite shares.
    static let rsa = try! _RSA.Signing.PrivateKey(pemRepresentation: """
        -----BEGIN PRIVATE KEY-----
        MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDEggkVDj1a13TE
        FEOMTskJwRVRxgy/9aQuvIgi8m5DY+4ZMnQ66mPonC9pSFwS5LSMBhmK0/KkPEzZ
        tn4Jkb3yFibQJb4ahP75BwUO/I6FRNVyRPrZOn924JejkJ0kaQWT7Yno8n7/Gu0y
        tufo6ko05Pr66AOt1aTSFOEZoUn/bOgojMdSR1VGcD3bZKhkAZ4Fl4JSHbleL4SB
        oLSbe+exSDyoybdhairkPuKYyFpwnWoWOXYtYPEcLNdJnDKVjclS87ypqlHIJ2hk
        gvxFYqX4dlS7s2lumSgmfIVAIMob9nmN6srtiD8xX8tDylgtxKZP5hyEHoyNwZuA
        xVq7Snu7AgMBAAECggEAUTvALWgZjPgMWRJXaiUXjmS3P3qzwpb1LCzbyjaVxl4F
        C32D9ub2Li6Cmu9CwLyytj+/R1iesa4LxuRd7e7FqtHlcZ5om+Xm0WNJgAx/jjAK
        XJaPbEV2c9ocVY1uqKKRn7lOjXHRdfvXmmNqMyrHSl5uMlK/UplC7WWcOFAomuHd
        FffMMtsJPFlw0+PuJcHlUq3ppI6gvFsuZOvu6FrtIk06ftIdEDIM2vX+l0lDErMJ
        9QHyx+21j2RKuyoGCqoUi7m7Dt6F+9ogW40TP2sqtp46M6PXv+IvrGB/Q4vOV+cC
        Mi8mT/+5aE1eCpmPT2N4Znt31m8h7tyZIqFMnbYh4QKBgQDheiAEyqFAoEHEbi2p
        DXuFbkqUKySxanxrNQRGYfdgNWgiD4+iSxwm5965GB2ywsF4zv7Gw+CnqkC8TwqH
        0Y/D7jjKnBGulCruxnlCo9ElZm/ewl18b9eAEOd4XE/P/Bs7Bh2hR9KW7gfd1itC
        eh7Ffw7ufcLeURMpH0n+xoiPzwKBgQDfG/2KTOtS+4CO/wdt6pzSIbiJIoxGx8e1
        x0dQIqu/o4pCUqdkjXzMahyQ8Paa3cQWF5sR5MpuSWyOy1pvHX6m9YwgWVOmUVqD
        KgZpCv/jND3dGs35qOagWXbalN3scdNc1R8j1aeot2RqiXtPhbxoQyPsgSIJWNqr
        Ytt8BHSEVQKBgQDdR5o2uZmpL917ZlmfR+EKYOQGJ5UaHJRALkakwC4jGCa7DqR6
        tNXLBNGauyUiM2nmItb8wG0wfrCLXdLK2goKUjcf+CyONVExBk0o7lYqKy7s4bkX
        jzdhsrVHdOjLB/K9aVIY3sC4aKAFwNKxqeGbFwfTXE6rGcwBFnjq9XI+FwKBgE2d
        gCtvrOH2anfUkrITTzDu2DKk2SX6dChxxgZDuXn2m6+M73zUl9jJBV0K5s9jXMbO
        uXyVGjMZyfE3HyPOn/PXMkNCsA4I+TLuGMLMN87Dqs3TeFpk/q5D0UwjQ7zwsDX4
        Ulf2CNhxzDYf080LWkrvKH0rQzr7NT8wKejP5/TtAoGATROZY93rUb5cQgqLx3iv
        P6Py7OBHdBMo/eBmM3PcQiV1S7vYWYM3q2QFSsbJx/EN1gfM3UsYTwHoUTpJU307
        ZhvjADP+5TrRZgLBBrqzqdS+TT2BV8P7FLAmX8xjI0FNKfpNnQDk4T946UYP+/J3
        BnQH6XDa9+NlW9pbdMVTJbU=
        -----END PRIVATE KEY-----
        """)
    static let ed = Curve25519.Signing.PrivateKey()
    static let secret = "0123456789abcdef0123456789abcdef-hmac"

    static var edPEM: String {
        let der: [UInt8] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00] + Array(ed.publicKey.rawRepresentation)
        return "-----BEGIN PUBLIC KEY-----\n\(Data(der).base64EncodedString())\n-----END PUBLIC KEY-----"
    }

    static func token(alg: String, kid: String?, claims: [String: Any], sign: ((Data) -> Data)? = nil) -> String {
        var header: [String: Any] = ["alg": alg, "typ": "JWT"]
        if let kid { header["kid"] = kid }
        let head = Base64URL.encode(try! JSONSerialization.data(withJSONObject: header, options: .sortedKeys))
        let body = Base64URL.encode(try! JSONSerialization.data(withJSONObject: claims, options: .sortedKeys))
        let input = Data("\(head).\(body)".utf8)
        let signature = sign?(input) ?? signWith(alg, input)
        return "\(head).\(body).\(Base64URL.encode(signature))"
    }

    static func signWith(_ alg: String, _ input: Data) -> Data {
        switch alg {
        case "ES256": return try! ec.signature(for: input).rawRepresentation
        case "ES384": return try! ec384.signature(for: input).rawRepresentation
        case "RS256": return try! rsa.signature(for: input, padding: .insecurePKCS1v1_5).rawRepresentation
        case "PS256": return try! rsa.signature(for: input, padding: .PSS).rawRepresentation
        case "EdDSA": return try! ed.signature(for: input)
        case "HS256": return Data(HMAC<SHA256>.authenticationCode(for: input, using: SymmetricKey(data: Data(secret.utf8))))
        default: return Data()
        }
    }

    static var now: Double { Date().timeIntervalSince1970 }
    static func claims(_ extra: [String: Any] = [:]) -> [String: Any] {
        var claims: [String: Any] = ["sub": "alice", "iss": "https://idp.test", "aud": "orders", "exp": Int(now) + 300,
                                     "iat": Int(now) - 10, "scope": "orders.read orders.write"]
        for (key, value) in extra { claims[key] = value }
        return claims
    }
}

@Suite struct JWTPluginTests {
    static let consumers = """
        - name: alice
          groups: [staff]
          credentials:
            jwt: [{subject: alice, issuer: "https://idp.test"}]
        """

    static var config: String {
        func indent(_ pem: String) -> String { pem.split(separator: "\n").joined(separator: "\n      ") }
        return """
            algorithms: [ES256, ES384, RS256, PS256, EdDSA, HS256]
            issuer: "https://idp.test"
            audience: orders
            keys:
              - kid: ec1
                alg: ES256
                pem: |
                  \(indent(TestKeys.ec.publicKey.pemRepresentation))
              - kid: ec384
                alg: ES384
                pem: |
                  \(indent(TestKeys.ec384.publicKey.pemRepresentation))
              - kid: rsa1
                alg: RS256
                pem: |
                  \(indent(TestKeys.rsa.publicKey.pemRepresentation))
              - kid: pss1
                alg: PS256
                pem: |
                  \(indent(TestKeys.rsa.publicKey.pemRepresentation))
              - kid: ed1
                alg: EdDSA
                pem: |
                  \(indent(TestKeys.edPEM))
              - {kid: hs1, alg: HS256, secret: "\(TestKeys.secret)"}
            """
    }

    static let jwt = try! authPlugin(JWTPlugin.self, consumers: consumers, config)

    func outcome(_ token: String, plugin: JWTPlugin = jwt) -> (status: Int, context: RequestContext, request: HTTPRequest) {
        var request = HTTPRequest(method: .get, scheme: nil, authority: "api", path: "/orders", headerFields: [.authorization: "Bearer \(token)"])
        var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
        switch plugin.onRequest(&request, context: &context) {
        case .proceed: return (200, context, request)
        case .respond(let response): return (response.status.code, context, request)
        default: return (0, context, request)
        }
    }

    @Test(arguments: [("ES256", "ec1"), ("ES384", "ec384"), ("RS256", "rsa1"), ("PS256", "pss1"), ("EdDSA", "ed1"), ("HS256", "hs1")])
    func acceptsEveryAlgorithmFamily(_ alg: String, _ kid: String) {
        let (status, context, request) = outcome(TestKeys.token(alg: alg, kid: kid, claims: TestKeys.claims()))
        #expect(status == 200, "\(alg)")
        #expect(context.consumer?.name == "alice")
        #expect(context.scopes == ["orders.read", "orders.write"])
        #expect(context.forwarded(request)[.authorization] == nil)
        #expect(context.forwarded(request)[HTTPField.Name("X-Authenticated-Scope")!] == "orders.read orders.write")
    }

    @Test func attacksAndBadTokensAre401() {
        let rsaPEM = TestKeys.rsa.publicKey.pemRepresentation
        let cases: [(String, String, String)] = [
            ("alg none", TestKeys.token(alg: "none", kid: "ec1", claims: TestKeys.claims(), sign: { _ in Data([1, 2, 3]) }), "algorithm not allowed"),
            ("alg none, empty signature", TestKeys.token(alg: "none", kid: nil, claims: TestKeys.claims(), sign: { _ in Data() }), "malformed token"),
            // The RSA public key used as an HMAC secret: the key with that kid is pinned to RS256.
            ("algorithm confusion", TestKeys.token(alg: "HS256", kid: "rsa1", claims: TestKeys.claims(), sign: {
                Data(HMAC<SHA256>.authenticationCode(for: $0, using: SymmetricKey(data: Data(rsaPEM.utf8))))
            }), "no key for this algorithm"),
            ("kid of another key type", TestKeys.token(alg: "ES256", kid: "rsa1", claims: TestKeys.claims()), "no key for this algorithm"),
            ("unknown kid", TestKeys.token(alg: "ES256", kid: "nope", claims: TestKeys.claims()), "unknown key id"),
            ("expired", TestKeys.token(alg: "ES256", kid: "ec1", claims: TestKeys.claims(["exp": Int(TestKeys.now) - 120])), "token expired"),
            ("not yet valid", TestKeys.token(alg: "ES256", kid: "ec1", claims: TestKeys.claims(["nbf": Int(TestKeys.now) + 120])), "token not yet valid"),
            ("issued in the future", TestKeys.token(alg: "ES256", kid: "ec1", claims: TestKeys.claims(["iat": Int(TestKeys.now) + 120])), "token issued in the future"),
            ("wrong issuer", TestKeys.token(alg: "ES256", kid: "ec1", claims: TestKeys.claims(["iss": "https://evil.test"])), "wrong issuer"),
            ("wrong audience", TestKeys.token(alg: "ES256", kid: "ec1", claims: TestKeys.claims(["aud": ["billing"]])), "wrong audience"),
            ("missing exp", TestKeys.token(alg: "ES256", kid: "ec1", claims: TestKeys.claims().filter { $0.key != "exp" }), "missing claim exp"),
            ("unknown subject", TestKeys.token(alg: "ES256", kid: "ec1", claims: TestKeys.claims(["sub": "mallory"])), "token subject is not a known consumer"),
            ("truncated", String(TestKeys.token(alg: "ES256", kid: "ec1", claims: TestKeys.claims()).split(separator: ".").prefix(2).joined(separator: ".")), "malformed token"),
            ("not base64", "abc.d$f.ghi", "malformed token"),
            ("oversized", TestKeys.token(alg: "ES256", kid: "ec1", claims: TestKeys.claims(["pad": String(repeating: "x", count: 9_000)])), "token too large"),
        ]
        for (name, token, reason) in cases {
            let (status, context, _) = outcome(token)
            #expect(status == 401, "\(name)")
            #expect(context[AuthFailureKey.self]?.reason == reason, "\(name)")
        }
        // Tampering: another payload under a valid signature, and a changed signature.
        let good = TestKeys.token(alg: "ES256", kid: "ec1", claims: TestKeys.claims())
        let parts = good.split(separator: ".").map(String.init)
        let forged = Base64URL.encode(try! JSONSerialization.data(withJSONObject: TestKeys.claims(["sub": "admin"])))
        #expect(outcome("\(parts[0]).\(forged).\(parts[2])").status == 401)
        var signature = Array(Base64URL.decode(Array(parts[2].utf8)[...])!)
        signature[5] ^= 1
        #expect(outcome("\(parts[0]).\(parts[1]).\(Base64URL.encode(signature))").status == 401)
    }

    @Test func challengeFollowsRFC6750() {
        var request = HTTPRequest(method: .get, scheme: nil, authority: "api", path: "/")
        var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
        guard case .respond(let missing) = Self.jwt.onRequest(&request, context: &context) else { Issue.record("expected 401"); return }
        #expect(missing.headerFields[.wwwAuthenticate] == #"Bearer realm="tollgate""#)
        request.headerFields[.authorization] = "Bearer " + TestKeys.token(alg: "ES256", kid: "ec1", claims: TestKeys.claims(["exp": 1]))
        guard case .respond(let expired) = Self.jwt.onRequest(&request, context: &context) else { Issue.record("expected 401"); return }
        #expect(expired.headerFields[.wwwAuthenticate] == #"Bearer realm="tollgate", error="invalid_token", error_description="token expired""#)
        #expect(!expired.body.contains("eyJ"))
    }

    @Test func unknownSubjectsWhenAllowedAndScpClaims() throws {
        let open = try authPlugin(JWTPlugin.self, consumers: Self.consumers, Self.config + "\nallow_unknown_subjects: true")
        let (status, context, _) = outcome(TestKeys.token(alg: "ES256", kid: "ec1", claims: TestKeys.claims(["sub": "svc-7", "scope": NSNull(), "scp": ["a", "b"]])), plugin: open)
        #expect(status == 200)
        #expect(context.consumer == nil)
        #expect(context.credential == "jwt:svc-7")
        #expect(context.scopes == ["a", "b"])
    }

    /// A verified token is remembered: the cached entry still has its expiry checked.
    @Test func verifiedTokensAreCachedButStillExpire() {
        let token = TestKeys.token(alg: "ES256", kid: "ec1", claims: TestKeys.claims())
        #expect(outcome(token).status == 200)
        #expect(Self.jwt.method.cache.lookup(token) != nil)
        var claims = Self.jwt.method.cache.lookup(token)!.claims
        claims.expiresAt = TestKeys.now - 100
        #expect(Self.jwt.method.timeProblem(claims, now: TestKeys.now) == "token expired")
    }

    @Test func jwksFileAndConfigurationErrors() throws {
        let jwk: [String: Any] = ["kty": "EC", "crv": "P-256", "kid": "from-file",
                                  "x": Base64URL.encode(TestKeys.ec.publicKey.rawRepresentation.prefix(32)),
                                  "y": Base64URL.encode(TestKeys.ec.publicKey.rawRepresentation.suffix(32))]
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("jwks-\(UUID().uuidString).json")
        try JSONSerialization.data(withJSONObject: ["keys": [jwk]]).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let fromFile = try authPlugin(JWTPlugin.self, consumers: Self.consumers, """
            {jwks_file: "\(file.path)", algorithms: [ES256], issuer: "https://idp.test"}
            """)
        #expect(outcome(TestKeys.token(alg: "ES256", kid: "from-file", claims: TestKeys.claims()), plugin: fromFile).status == 200)
        // The JWK has no alg: it is pinned to ES256 by its curve, so RS256 under its kid is refused.
        #expect(outcome(TestKeys.token(alg: "RS256", kid: "from-file", claims: TestKeys.claims()), plugin: fromFile).status == 401)
        #expect(pluginErrors(JWTPlugin.self, "{algorithms: [none, HS256], keys: [{alg: HS256, secret: short}]}") == [
            "algorithms: alg none is never accepted (line 1)",
            "keys: HMAC secret needs at least 32 bytes (line 1)",
        ].map { $0.replacingOccurrences(of: "HMAC secret", with: "an HMAC secret") })
    }

    /// `scopes` after `jwt`: the token's scopes per method; 403 insufficient_scope names what is needed.
    @Test func scopesPerMethod() throws {
        let scopes = try plugin(ScopesPlugin.self, #"{GET: [orders.read], POST: [orders.write, orders.admin], "*": [orders.read]}"#)
        func status(_ method: HTTPRequest.Method, token: String?) -> (Int, String?) {
            var request = HTTPRequest(method: method, scheme: nil, authority: "api", path: "/orders")
            if let token { request.headerFields[.authorization] = "Bearer \(token)" }
            var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
            if case .respond(let response) = Self.jwt.onRequest(&request, context: &context) { return (response.status.code, nil) }
            if case .respond(let response) = scopes.onRequest(&request, context: &context) {
                return (response.status.code, response.headerFields[.wwwAuthenticate])
            }
            return (200, nil)
        }
        let token = TestKeys.token(alg: "ES256", kid: "ec1", claims: TestKeys.claims(["scope": "orders.read orders.write"]))
        #expect(status(.get, token: token).0 == 200)
        #expect(status(.delete, token: token).0 == 200)   // "*": orders.read
        let post = status(.post, token: token)
        #expect(post.0 == 403)
        #expect(post.1 == #"Bearer realm="tollgate", error="insufficient_scope", scope="orders.write orders.admin""#)
        #expect(status(.get, token: nil).0 == 401)
        #expect(pluginErrors(ScopesPlugin.self, "{get: [a], FETCH: [b]}") == [
            "get: 'get' is not an HTTP method (or \"*\") (line 1)",
        ])
    }
}
