import Crypto
import Foundation
import HTTPTypes
import NIOCore
import NIOPosix
import Testing
import TollgateCore
@testable import TollgatePlugins
import Yams

/// A plugin built with `consumers` (YAML of the `consumers:` list) known to it, as a config load does.
func authPlugin<P: GatewayPlugin>(_ type: P.Type, consumers: String, _ yaml: String) throws -> P {
    let diagnostics = ConfigDiagnostics(state: PluginStateRegistry())
    diagnostics.consumers = ConsumerDirectory.parse(ConfigNode(node: try Yams.compose(yaml: consumers), path: "consumers",
                                                               diagnostics: diagnostics),
                                                    parsers: BuiltinPlugins.registry.credentialParsers)
    let configuration = P.Configuration(from: ConfigNode(node: try Yams.compose(yaml: yaml), diagnostics: diagnostics))
    #expect(diagnostics.errors.isEmpty, "\(diagnostics.errors)")
    return try P(configuration: configuration)
}

extension RequestContext {
    /// The fields the upstream gets: the request's, with the plugins' field edits applied.
    func forwarded(_ request: HTTPRequest) -> HTTPFields {
        var fields = request.headerFields
        if let edits = upstreamFieldEdits {
            for name in edits.removed { fields[name] = nil }
            for field in edits.added { fields.append(field) }
        }
        return fields
    }
}

func sha256Hex(_ text: String) -> String {
    SHA256.hash(data: Array(text.utf8)).map { String(format: "%02x", $0) }.joined()
}

@Suite struct KeyAuthTests {
    static let consumers = """
        - name: alice
          id: u-1
          groups: [admin, staff]
          credentials:
            key_auth: [{key_sha256: "\(sha256Hex("alice-key-0123456789"))"}, {key: "alice-rotated-key-9876543210", id: alice-new}]
        - name: guest
          groups: [guests]
        """

    func request(_ fields: HTTPFields = [:], path: String = "/orders") -> HTTPRequest {
        HTTPRequest(method: .get, scheme: nil, authority: "api", path: path, headerFields: fields)
    }

    static let apiKey = HTTPField.Name("X-API-Key")!

    @Test func acceptsEitherKeyAndSetsIdentityHeaders() throws {
        let auth = try authPlugin(KeyAuthPlugin.self, consumers: Self.consumers, "{}")
        for (key, credential) in [("alice-key-0123456789", "key:" + String(sha256Hex("alice-key-0123456789").prefix(8))),
                                  ("alice-rotated-key-9876543210", "alice-new")] {
            var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
            // A client cannot name its own consumer: these are replaced.
            var request = request([Self.apiKey: key, HTTPField.Name("X-Consumer-ID")!: "root"])
            #expect(auth.onRequest(&request, context: &context).isProceed)
            #expect(context.consumer?.name == "alice")
            #expect(context.credential == credential)
            #expect(context.forwarded(request)[HTTPField.Name("X-Consumer-ID")!] == "u-1")
            #expect(context.forwarded(request)[HTTPField.Name("X-Consumer-Username")!] == "alice")
            #expect(context.forwarded(request)[HTTPField.Name("X-Consumer-Groups")!] == "admin, staff")
            #expect(context.forwarded(request)[Self.apiKey] == nil, "the key is not forwarded")
        }
    }

    /// On the proxy the key is read where it lies in the client's head (the request the hook gets
    /// then has no fields): the first non-empty field of the configured names, in their order.
    @Test func readsTheKeyFromTheClientHead() throws {
        let auth = try authPlugin(KeyAuthPlugin.self, consumers: Self.consumers, "{headers: [X-Other-Key, X-API-Key]}")
        #expect(auth.readsClientHead)
        #expect(!auth.readsRequest, "a key in a header needs no request built")
        func run(_ head: String) -> (RequestDecision, RequestContext) {
            var raw = RawHead()
            _ = HeadParser(kind: .request).parse(ByteBuffer(string: head), into: &raw)
            var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
            context.clientHead = SharedHead(raw)
            var request = HTTPRequest.placeholder
            return (auth.onRequest(&request, context: &context), context)
        }
        let (accepted, context) = run("GET /x HTTP/1.1\r\nHost: a\r\nX-Other-Key:\r\nx-api-key: alice-rotated-key-9876543210\r\n\r\n")
        #expect(accepted.isProceed)
        #expect(context.credential == "alice-new")
        #expect(context.upstreamFieldEdits?.removed.contains(Self.apiKey) == true)
        let (refused, _) = run("GET /x HTTP/1.1\r\nHost: a\r\nX-Other-Key: wrong-key-0123456789\r\nX-API-Key: alice-rotated-key-9876543210\r\n\r\n")
        #expect(!refused.isProceed, "the first name found decides")
        let (missing, _) = run("GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        guard case .respond(let response) = missing else { Issue.record("no key was accepted"); return }
        #expect(response.status == .unauthorized)
        // With a key in a cookie the request's fields are read as before.
        let cookies = try authPlugin(KeyAuthPlugin.self, consumers: Self.consumers, "{cookies: [api_key]}")
        #expect(cookies.readsRequest && cookies.requestFieldNames == [.cookie])
    }

    @Test func missingAndWrongKeysAre401WithoutEchoingTheKey() throws {
        let auth = try authPlugin(KeyAuthPlugin.self, consumers: Self.consumers, "{}")
        var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
        var missing = request()
        guard case .respond(let noKey) = auth.onRequest(&missing, context: &context) else { Issue.record("expected 401"); return }
        #expect(noKey.status == .unauthorized)
        #expect(noKey.headerFields[.wwwAuthenticate] == #"Key realm="tollgate""#)
        #expect(noKey.body.contains(#""error":"no credentials""#))
        var wrong = request([Self.apiKey: "guess-guess-guess-guess"])
        guard case .respond(let badKey) = auth.onRequest(&wrong, context: &context) else { Issue.record("expected 401"); return }
        #expect(badKey.status == .unauthorized)
        #expect(badKey.body.contains(#""error":"invalid credentials""#))
        #expect(!badKey.body.contains("guess"))
        #expect(context[AuthFailureKey.self]?.reason == "unknown API key")
        #expect(auth.statistics.invalid.load(ordering: .relaxed) == 1)
        #expect(auth.statistics.missing.load(ordering: .relaxed) == 1)
        // Failed attempts per client address and per credential (its identifier, never the key).
        let top = auth.statistics.topFailures(5)
        #expect(top.clients.first?.0 == "192.0.2.1" && top.clients.first?.1 == 1)
        #expect(top.credentials.first?.0 == "key:" + String(sha256Hex("guess-guess-guess-guess").prefix(8)))
    }

    @Test func queryAndCookieSourcesAreStrippedBeforeForwarding() throws {
        let auth = try authPlugin(KeyAuthPlugin.self, consumers: Self.consumers, "{headers: [], query: [apikey], cookies: [session_key]}")
        var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
        var byQuery = request(path: "/orders?page=2&apikey=alice-key-0123456789&sort=asc")
        #expect(auth.onRequest(&byQuery, context: &context).isProceed)
        #expect(byQuery.path == "/orders?page=2&sort=asc")
        var byCookie = request([.cookie: "theme=dark; session_key=alice-key-0123456789"])
        #expect(auth.onRequest(&byCookie, context: &context).isProceed)
        #expect(context.forwarded(byCookie)[.cookie] == "theme=dark")
        // Forwarding kept when asked.
        let forwarding = try authPlugin(KeyAuthPlugin.self, consumers: Self.consumers, "{forward_credentials: true}")
        var kept = request([Self.apiKey: "alice-key-0123456789"])
        var keptContext = RequestContext(requestID: "r", clientIP: "192.0.2.1")
        #expect(forwarding.onRequest(&kept, context: &keptContext).isProceed)
        #expect(keptContext.forwarded(kept)[Self.apiKey] == "alice-key-0123456789")
    }

    @Test func anonymousConsumerForOptionalAuthentication() throws {
        let auth = try authPlugin(KeyAuthPlugin.self, consumers: Self.consumers, "{anonymous: guest}")
        var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
        var request = request()
        #expect(auth.onRequest(&request, context: &context).isProceed)
        #expect(context.consumer?.name == "guest")
        #expect(context.isAnonymous)
        #expect(context.forwarded(request)[HTTPField.Name("X-Anonymous-Consumer")!] == "true")
        // A wrong key is still refused: anonymous access is for requests without credentials.
        var wrong = self.request([Self.apiKey: "guess-guess-guess-guess"])
        var fresh = RequestContext(requestID: "r", clientIP: "192.0.2.1")
        guard case .respond(let refused) = auth.onRequest(&wrong, context: &fresh) else { Issue.record("expected 401"); return }
        #expect(refused.status == .unauthorized)
    }

    /// The comparison takes the same time whether the first byte or the last one differs.
    @Test func digestComparisonIsConstantTime() {
        let a = [UInt8](repeating: 7, count: 32)
        var early = a
        early[0] = 8
        var late = a
        late[31] = 8
        #expect(AuthText.constantTimeEqual(a, a))
        #expect(!AuthText.constantTimeEqual(a, early))
        #expect(!AuthText.constantTimeEqual(a, late))
        // The best of many rounds, the two cases interleaved so a busy machine slows both alike.
        let clock = ContinuousClock()
        var earlyTime = Duration.seconds(1)
        var lateTime = Duration.seconds(1)
        for _ in 0..<30 {
            earlyTime = min(earlyTime, clock.measure { for _ in 0..<2_000 { _ = AuthText.constantTimeEqual(a, early) } })
            lateTime = min(lateTime, clock.measure { for _ in 0..<2_000 { _ = AuthText.constantTimeEqual(a, late) } })
        }
        let ratio = Double(earlyTime.components.attoseconds) / Double(max(1, lateTime.components.attoseconds))
        #expect(ratio > 0.5 && ratio < 2, "early \(earlyTime), late \(lateTime)")
    }

    @Test func configurationErrors() throws {
        let diagnostics = ConfigDiagnostics()
        _ = ConsumerDirectory.parse(ConfigNode(node: try Yams.compose(yaml: """
            - name: a
              credentials:
                key_auth: [{key_sha256: "abc"}, {key: short}, {}]
                magic: [{x: 1}]
            - name: a
            """), path: "consumers", diagnostics: diagnostics), parsers: BuiltinPlugins.registry.credentialParsers)
        #expect(diagnostics.sortedErrors.map(\.description) == [
            "consumers[0].credentials.key_auth[0].key_sha256: expected 64 hex digits (a SHA-256 digest) (line 3)",
            "consumers[0].credentials.key_auth[1].key: too short: API keys need at least 16 characters (line 3)",
            "consumers[0].credentials.key_auth[2]: give key_sha256 (or key, hashed at load) (line 3)",
            "consumers[0].credentials.magic: unknown credential kind 'magic' (known: \(BuiltinPlugins.registry.credentialParsers.keys.sorted().joined(separator: ", "))) (line 4)",
            "consumers[1].name: consumer 'a' is listed twice (line 5)",
        ])
        #expect(pluginErrors(KeyAuthPlugin.self, "{anonymous: nobody, headers: []}") == [
            "anonymous: no consumer named 'nobody' (list it under consumers:) (line 1)",
            "give at least one place to read the key from (headers, query or cookies) (line 1)",
        ])
    }
}

@Suite struct BasicAuthTests {
    static let hash = try! PasswordHash.make("correct horse", scheme: .pbkdf2SHA256(rounds: 10_000)).text
    static let consumers = """
        - name: bob
          credentials:
            basic_auth: [{username: bob, password_hash: "\(hash)"}]
        """

    func request(_ user: String, _ password: String) -> HTTPRequest {
        let token = Data("\(user):\(password)".utf8).base64EncodedString()
        return HTTPRequest(method: .get, scheme: nil, authority: "api", path: "/", headerFields: [.authorization: "Basic \(token)"])
    }

    @Test func verifiesPasswordsAgainstSlowHashes() throws {
        let auth = try authPlugin(BasicAuthPlugin.self, consumers: Self.consumers, "{realm: shop}")
        var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
        var good = request("bob", "correct horse")
        #expect(auth.onRequest(&good, context: &context).isProceed)
        #expect(context.consumer?.name == "bob")
        #expect(context.forwarded(good)[.authorization] == nil)
        for (user, password, reason) in [("bob", "wrong", "wrong password"), ("mallory", "x", "unknown user")] {
            var bad = request(user, password)
            guard case .respond(let response) = auth.onRequest(&bad, context: &context) else { Issue.record("expected 401"); continue }
            #expect(response.status == .unauthorized)
            #expect(response.headerFields[.wwwAuthenticate] == #"Basic realm="shop", charset="UTF-8""#)
            #expect(context[AuthFailureKey.self]?.reason == reason)
        }
        var malformed = HTTPRequest(method: .get, scheme: nil, authority: "api", path: "/", headerFields: [.authorization: "Basic %%%"])
        guard case .respond = auth.onRequest(&malformed, context: &context) else { Issue.record("expected 401"); return }
    }

    /// An unknown user name costs the same slow hash as a wrong password (off the loop), so the time
    /// of the answer does not tell which user names exist; the answer is the same 401.
    @Test func unknownUsersTakeTheSlowPathToo() async throws {
        let auth = try authPlugin(BasicAuthPlugin.self, consumers: Self.consumers, "{}")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { Task { try? await group.shutdownGracefully() } }
        for user in ["mallory", "bob"] {
            var request = request(user, "guess")
            var context = RequestContext(requestID: "r", clientIP: "192.0.2.1", eventLoop: group.next())
            guard case .pending(let future) = auth.onRequest(&request, context: &context) else {
                Issue.record("\(user): answered without the slow check")
                continue
            }
            let continuation = try await future.get()
            guard case .respond(let response) = continuation(&request, &context) else { Issue.record("expected 401"); continue }
            #expect(response.status == .unauthorized)
            #expect(response.body.contains(#""error":"invalid credentials""#))
        }
    }

    @Test func passwordHashFormats() throws {
        // Written by Python's passlib (pbkdf2_sha256 with 20000 rounds, scrypt with ln=12): they verify here.
        let passlibPBKDF2 = try PasswordHash(parsing: "$pbkdf2-sha256$20000$mFPKeS8lxBjDuPees9Ya4w$uT9Bx.0qfpPugIS/GwYjzT.iH8VlOzG7PRH5ugCklIk")
        #expect(passlibPBKDF2.verify("correct horse"))
        #expect(!passlibPBKDF2.verify("correct horse "))
        let passlibScrypt = try PasswordHash(parsing: "$scrypt$ln=12,r=8,p=1$eq/Veu9d6723FkLo/b9Xag$SD+D7MIQ93KVDUG6tuOvicSA1DJQm5aEWNI8k9SaiII")
        #expect(passlibScrypt.verify("correct horse"))
        #expect(passlibPBKDF2.text == "$pbkdf2-sha256$20000$mFPKeS8lxBjDuPees9Ya4w$uT9Bx.0qfpPugIS/GwYjzT.iH8VlOzG7PRH5ugCklIk")
        let made = try PasswordHash.make("password", scheme: .pbkdf2SHA512(rounds: 10_000))
        #expect(try PasswordHash(parsing: made.text) == made)
        #expect(made.verify("password"))
        #expect(!made.verify("Password"))
        let scrypt = try PasswordHash.make("pw", scheme: .scrypt(logN: 10, r: 8, p: 1))
        #expect(scrypt.text.hasPrefix("$scrypt$ln=10,r=8,p=1$"))
        #expect(try PasswordHash(parsing: scrypt.text).verify("pw"))
        #expect(throws: PasswordHash.ParseError.bcrypt) { try PasswordHash(parsing: "$2b$12$abcdefghijklmnopqrstuv") }
        #expect(throws: PasswordHash.ParseError.unknown) { try PasswordHash(parsing: "plaintext") }
        #expect(throws: PasswordHash.ParseError.self) { try PasswordHash(parsing: "$pbkdf2-sha256$10$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA") }
    }
}

@Suite struct ACLTests {
    @Test func allowAndDenyByGroup() throws {
        let admin = Consumer(name: "alice", groups: ["admin"])
        let guest = Consumer(name: "guest", groups: ["guests"])
        let allow = try plugin(ACLPlugin.self, "{allow: [admin]}")
        let deny = try plugin(ACLPlugin.self, "{deny: [guests]}")
        var request = HTTPRequest(method: .get, scheme: nil, authority: "api", path: "/")
        func status(_ plugin: ACLPlugin, _ consumer: Consumer?) -> Int {
            var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
            context.consumer = consumer
            switch plugin.onRequest(&request, context: &context) {
            case .respond(let response): return response.status.code
            default: return 200
            }
        }
        #expect(status(allow, admin) == 200)
        #expect(status(allow, guest) == 403)
        #expect(status(allow, nil) == 401)
        #expect(status(deny, admin) == 200)
        #expect(status(deny, guest) == 403)
        #expect(pluginErrors(ACLPlugin.self, "{allow: [a], deny: [b]}") == ["deny: give allow or deny, not both (line 1)"])
    }
}

@Suite struct AuthChainTests {
    static let consumers = KeyAuthTests.consumers + """

        - name: bob
          credentials:
            key_auth: [{key: "bob-key-012345678901"}]
            basic_auth: [{username: bob, password_hash: "\(BasicAuthTests.hash)"}]
        """

    func run(_ plugin: AuthChainPlugin, _ fields: HTTPFields) -> (Int, RequestContext, LocalResponse?) {
        var request = HTTPRequest(method: .get, scheme: nil, authority: "api", path: "/", headerFields: fields)
        var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
        switch plugin.onRequest(&request, context: &context) {
        case .proceed: return (200, context, nil)
        case .respond(let response): return (response.status.code, context, response)
        default: return (0, context, nil)
        }
    }

    static func basic(_ user: String, _ password: String) -> String { "Basic " + Data("\(user):\(password)".utf8).base64EncodedString() }

    @Test func anyLetsTheFirstSuccessIn() throws {
        let chain = try authPlugin(AuthChainPlugin.self, consumers: Self.consumers, """
            {mode: any, methods: [{name: basic-auth}, {name: key-auth}]}
            """)
        // A wrong password does not stop a right key.
        let (status, context, _) = run(chain, [.authorization: Self.basic("bob", "wrong"), KeyAuthTests.apiKey: "alice-key-0123456789"])
        #expect(status == 200)
        #expect(context.consumer?.name == "alice")
        #expect(run(chain, [.authorization: Self.basic("bob", "correct horse")]).1.consumer?.name == "bob")
        // Nothing at all: 401 with one challenge per method.
        let (refused, _, response) = run(chain, [:])
        #expect(refused == 401)
        #expect(response?.headerFields[values: .wwwAuthenticate] == [#"Basic realm="tollgate", charset="UTF-8""#, #"Key realm="tollgate""#])
        // Only wrong credentials: 401 invalid.
        let (wrong, wrongContext, _) = run(chain, [KeyAuthTests.apiKey: "guess-guess-guess-guess"])
        #expect(wrong == 401)
        #expect(wrongContext[AuthFailureKey.self]?.reason == "unknown API key")
    }

    @Test func allNeedsEveryMethodForOneConsumer() throws {
        let chain = try authPlugin(AuthChainPlugin.self, consumers: Self.consumers, """
            {mode: all, methods: [{name: basic-auth}, {name: key-auth}]}
            """)
        let (status, context, _) = run(chain, [.authorization: Self.basic("bob", "correct horse"), KeyAuthTests.apiKey: "bob-key-012345678901"])
        #expect(status == 200)
        #expect(context.consumer?.name == "bob")
        #expect(context.credential == "bob+key:" + String(sha256Hex("bob-key-012345678901").prefix(8)))
        #expect(run(chain, [.authorization: Self.basic("bob", "correct horse")]).0 == 401)
        // Two valid credentials of different consumers are not one identity.
        #expect(run(chain, [.authorization: Self.basic("bob", "correct horse"), KeyAuthTests.apiKey: "alice-key-0123456789"]).0 == 401)
    }

    @Test func anonymousWhenNoMethodFindsACredential() throws {
        let chain = try authPlugin(AuthChainPlugin.self, consumers: Self.consumers, """
            {mode: any, anonymous: guest, methods: [{name: key-auth}]}
            """)
        let (status, context, _) = run(chain, [:])
        #expect(status == 200)
        #expect(context.isAnonymous && context.consumer?.name == "guest")
        #expect(run(chain, [KeyAuthTests.apiKey: "guess-guess-guess-guess"]).0 == 401)
        #expect(pluginErrors(AuthChainPlugin.self, "{mode: all, anonymous: guest, methods: [{name: magic}]}") == [
            "anonymous: no consumer named 'guest' (list it under consumers:) (line 1)",
            "methods[0].name: unknown authentication method 'magic' (known: \(AuthChainPlugin.methods.keys.sorted().joined(separator: ", "))) (line 1)",
            "methods: list at least one method (line 1)",
        ])
    }
}

@Suite struct DigestAuthTests {
    static let consumers = """
        - name: carol
          credentials:
            digest_auth: [{username: carol, realm: vault, password: "open sesame"}]
        """

    /// What a client sends: the response computed per RFC 7616 from the server's challenge.
    static func authorization(challenge: String, user: String = "carol", password: String = "open sesame",
                              algorithm: String = "SHA-256", nc: String = "00000001", uri: String = "/vault/1",
                              method: String = "GET") -> String {
        let parts = DigestAuthMethod.parameters(String(challenge.dropFirst(7)))
        let nonce = parts["nonce"]!
        func h(_ text: String) -> String {
            algorithm == "MD5" ? Insecure.MD5.hash(data: Array(text.utf8)).map { String(format: "%02x", $0) }.joined()
                : SHA256.hash(data: Array(text.utf8)).map { String(format: "%02x", $0) }.joined()
        }
        let ha1 = h("\(user):vault:\(password)")
        let ha2 = h("\(method):\(uri)")
        let response = h("\(ha1):\(nonce):\(nc):abc123:auth:\(ha2)")
        return #"Digest username="\#(user)", realm="vault", nonce="\#(nonce)", uri="\#(uri)", qop=auth, nc=\#(nc), cnonce="abc123", response="\#(response)", algorithm=\#(algorithm), opaque="\#(parts["opaque"] ?? "")""#
    }

    func run(_ plugin: DigestAuthPlugin, _ authorization: String?, path: String = "/vault/1") -> (Int, LocalResponse?, RequestContext) {
        var request = HTTPRequest(method: .get, scheme: nil, authority: "api", path: path)
        if let authorization { request.headerFields[.authorization] = authorization }
        var context = RequestContext(requestID: "r", clientIP: "192.0.2.1", originalPath: path)
        if case .respond(let response) = plugin.onRequest(&request, context: &context) { return (response.status.code, response, context) }
        return (200, nil, context)
    }

    @Test func challengeResponseAndReplay() throws {
        let digest = try authPlugin(DigestAuthPlugin.self, consumers: Self.consumers, "{realm: vault}")
        let (status, challengeResponse, _) = run(digest, nil)
        #expect(status == 401)
        let challenge = try #require(challengeResponse?.headerFields[.wwwAuthenticate])
        #expect(challenge.hasPrefix(#"Digest realm="vault", qop="auth", algorithm=SHA-256, nonce=""#))
        #expect(challenge.contains("algorithm=MD5"))
        for algorithm in ["SHA-256", "MD5"] {
            let first = Self.authorization(challenge: challenge, algorithm: algorithm, nc: algorithm == "MD5" ? "00000002" : "00000001")
            let (ok, _, context) = run(digest, first)
            #expect(ok == 200, "\(algorithm)")
            #expect(context.consumer?.name == "carol")
            // The same request again: its nonce count is used up.
            #expect(run(digest, first).0 == 401, "\(algorithm) replay")
        }
        let (wrong, _, wrongContext) = run(digest, Self.authorization(challenge: challenge, password: "guess", nc: "00000009"))
        #expect(wrong == 401)
        #expect(wrongContext[AuthFailureKey.self]?.reason == "wrong password")
        #expect(run(digest, Self.authorization(challenge: challenge, nc: "0000000a", uri: "/vault/2")).0 == 401, "uri of another resource")
        // A nonce the gateway did not make.
        let forged = Self.authorization(challenge: challenge.replacingOccurrences(of: "nonce=\"", with: "nonce=\"00"), nc: "0000000b")
        #expect(run(digest, forged).2[AuthFailureKey.self]?.reason == "invalid nonce")
    }

    /// RFC 7616 section 3.9.1: Mufasa's request, with SHA-256 and with MD5.
    @Test func rfc7616Example() {
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
        let secret = "Mufasa:http-auth@example.org:Circle of Life"
        #expect(DigestAuthMethod.response(.sha256, ha1: Array(SHA256.hash(data: Array(secret.utf8))), nonce: nonce, nc: "00000001",
                                          cnonce: cnonce, method: "GET", uri: "/dir/index.html")
                == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")
        #expect(DigestAuthMethod.response(.md5, ha1: Array(Insecure.MD5.hash(data: Array(secret.utf8))), nonce: nonce, nc: "00000001",
                                          cnonce: cnonce, method: "GET", uri: "/dir/index.html")
                == "8ca523f5e9506fed4657c9700eebdbec")
    }

    @Test func expiredNoncesAreStale() throws {
        let book = NonceBook(ttlSeconds: 60)
        let nonce = book.make(now: 1_000)
        #expect(book.check(nonce, now: 1_030) == .valid)
        #expect(book.check(nonce, now: 1_100) == .stale)
        var tampered = Array(nonce)
        tampered[20] = tampered[20] == "0" ? "1" : "0"   // the random part changed: its HMAC no longer fits
        #expect(book.check(String(tampered), now: 1_030) == .invalid)
        #expect(book.use(nonce, count: 1) && book.use(nonce, count: 2) && !book.use(nonce, count: 2))
    }
}

@Suite struct MTLSSerialTests {
    /// Serials compare the way certificates and configs write them: case, colons and leading zeros apart.
    @Test func serialsNormalize() {
        #expect(MTLSMethod.normalizeSerial("0A:1B:FF") == "a1bff")
        #expect(MTLSMethod.normalizeSerial("0a1bff") == "a1bff")
        #expect(MTLSMethod.normalizeSerial("00") == "0")
    }
}

@Suite struct BoundedMapTests {
    @Test func keepsTheNewestKeys() {
        var map = BoundedMap<String, Int>(capacity: 3)
        for (index, key) in ["a", "b", "c", "d"].enumerated() { map[key] = index }
        #expect(map["a"] == nil && map["d"] == 3 && map.count == 3)
        map["b"] = 10   // an update keeps its place
        map["e"] = 4
        #expect(map["b"] == nil && map["c"] == 2 && map["e"] == 4 && map.count == 3)
    }
}
