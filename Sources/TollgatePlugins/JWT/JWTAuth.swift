import Foundation
import HTTPTypes
import JWTKit
import Synchronization
import TollgateCore

/// `consumers[].credentials.jwt[]`: tokens whose subject (or configured claim) is `subject`, from
/// `issuer` if given, are this consumer's.
public struct JWTCredential: ConsumerCredential {
    public var subject: String
    public var issuer: String?

    static func parse(_ node: ConfigNode) -> (any ConsumerCredential)? {
        guard node.expectMapping(keys: ["subject", "issuer"], required: true),
              let subject = node["subject"].string(required: true) else { return nil }
        return JWTCredential(subject: subject, issuer: node["issuer"].string())
    }
}

/// The claims a gateway checks and passes on, read from a verified token's payload.
public struct JWTClaims: Sendable {
    public var expiresAt: Double?
    public var notBefore: Double?
    public var issuedAt: Double?
    public var issuer: String?
    public var audience: [String] = []
    public var subject: String?
    public var scopes: [String] = []
    /// Every top-level claim with a string, number or boolean value, as text (consumer mapping,
    /// attribute rules); arrays of strings joined by spaces.
    public var values: [String: String] = [:]
    public var names: Set<String> = []
    /// Checked with a key of the JWKS URL (which can expire), not a configured one.
    public var verifiedWithFetchedKey = false
}

/// `jwt`: bearer tokens (RFC 7519) verified with pinned keys: inline (`keys`: PEM or HMAC secret,
/// each with its `alg`), or a JWKS document (`jwks_file`). Checks `exp`, `nbf`, `iat` (with
/// `leeway`), `iss`, `aud` and `required_claims`; maps a claim (`consumer_claim`, default `sub`) to a
/// consumer, or accepts verified tokens of no consumer (`allow_unknown_subjects`). A verified token
/// is remembered until it expires (bounded), so a client presenting the same token again costs a
/// lookup, not a signature check.
public struct JWTMethod: AuthenticationMethod {
    public static let pluginName = "jwt"
    public static let priority = 1450
    public static let configKeys: Set<String> = ["keys", "jwks_file", "jwks_url", "algorithms", "issuer", "audience",
                                                 "required_claims", "leeway", "consumer_claim", "allow_unknown_subjects",
                                                 "cookie", "query", "max_token_size", "realm", "jwks_refresh", "jwks_min_refetch",
                                                 "jwks_max_stale", "jwks_timeout"]

    let keySet: JWTKeySet
    /// Keys from `jwks_url`, shared across reloads.
    let jwks: JWKSSource?
    let allowed: Set<String>
    let issuer: String?
    let audience: Set<String>
    let requiredClaims: [String]
    let leeway: Double
    let consumerClaim: String
    let allowUnknownSubjects: Bool
    let cookie: String?
    let query: String?
    let maxTokenSize: Int
    let realm: String
    /// Subject (and issuer) → consumer.
    let subjects: [String: [(issuer: String?, consumer: Consumer)]]
    /// OAuth 2.0 client id → consumer (tokens the gateway's token endpoint issued carry `client_id`).
    let clients: [String: Consumer]
    let cache: TokenCache

    public init?(config: ConfigNode, consumers: ConsumerDirectory) {
        var allowed = Set(config["algorithms"].strings() ?? ["RS256", "ES256"])
        for alg in allowed where !JWTKeySet.algorithms.contains(alg) {
            config["algorithms"].error(alg.lowercased() == "none" ? "alg none is never accepted"
                                       : "unknown algorithm '\(alg)'; expected some of: " + JWTKeySet.algorithms.sorted().joined(separator: ", "))
            allowed.remove(alg)
        }
        var sources: [JWTKeySet.Source] = []
        for item in config["keys"].elements() ?? [] {
            guard item.expectMapping(keys: ["kid", "alg", "pem", "pem_file", "secret"], required: true),
                  let alg = item["alg"].string(required: true) else { continue }
            guard JWTKeySet.algorithms.contains(alg) else { item["alg"].error("unknown algorithm '\(alg)'"); continue }
            if !allowed.contains(alg) { item["alg"].error("'\(alg)' is not among algorithms: \(allowed.sorted())") }
            var pem = item["pem"].string()
            if let file = item["pem_file"].string() {
                do { pem = try String(contentsOfFile: file, encoding: .utf8) } catch { item["pem_file"].error("cannot read \(file)") }
            }
            sources.append(JWTKeySet.Source(kid: item["kid"].string(), alg: alg, pem: pem, secret: item["secret"].string()))
        }
        var documents: [JWKS] = []
        if let file = config["jwks_file"].string() {
            do {
                let data = try Data(contentsOf: URL(fileURLWithPath: file))
                documents.append(try JSONDecoder().decode(JWKS.self, from: data))
            } catch {
                config["jwks_file"].error("cannot read a JWKS document from \(file): \(error)")
            }
        }
        var jwks: JWKSSource?
        if let url = config["jwks_url"].string() {
            if !(url.hasPrefix("https://") || url.hasPrefix("http://")) || URL(string: url)?.host == nil {
                config["jwks_url"].error("expected an https:// (or http://) URL")
            } else {
                var settings = JWKSSource.Settings(url: url, allowed: allowed)
                if let value = config["jwks_refresh"].duration() { settings.refresh = value }
                if let value = config["jwks_min_refetch"].duration() { settings.minRefetch = value }
                if let value = config["jwks_max_stale"].duration() { settings.maxStale = value }
                if let value = config["jwks_timeout"].duration() { settings.timeout = value }
                let made = config.diagnostics.state.value(for: "jwt|jwks|\(settings.hashValue)|\(url)") { JWKSSource(settings: settings) }
                jwks = made
            }
        }
        self.jwks = jwks
        if sources.isEmpty && documents.isEmpty && !config["jwks_url"].isPresent {
            config.error("give keys, jwks_file or jwks_url")
        }
        do {
            keySet = try JWTKeySet.make(sources: sources, jwks: documents, allowed: allowed)
        } catch {
            config["keys"].error("\(error)")
            return nil
        }
        if let jwks, jwks.snapshot.keys == nil, config.diagnostics.errors.isEmpty {
            _ = jwks.fetch(on: nil)   // the first fetch starts now, not with the first request
        }
        if keySet.isEmpty && (!sources.isEmpty || !documents.isEmpty) {
            config.error("no usable key for the algorithms \(allowed.sorted())")
        }
        self.allowed = allowed
        issuer = config["issuer"].string()
        if case .sequence = config["audience"].node {
            audience = Set(config["audience"].strings() ?? [])
        } else {
            audience = Set(config["audience"].string().map { [$0] } ?? [])
        }
        requiredClaims = config["required_claims"].strings() ?? ["exp"]
        leeway = (config["leeway"].duration() ?? .seconds(30)).seconds
        consumerClaim = config["consumer_claim"].string() ?? "sub"
        allowUnknownSubjects = config["allow_unknown_subjects"].bool() ?? false
        cookie = config["cookie"].string()
        query = config["query"].string()
        maxTokenSize = config["max_token_size"].int(range: 256...65_536) ?? 8_192
        realm = config["realm"].string() ?? "tollgate"
        var subjects: [String: [(issuer: String?, consumer: Consumer)]] = [:]
        for (consumer, credential) in consumers.credentials("jwt", as: JWTCredential.self) {
            subjects[credential.subject, default: []].append((credential.issuer, consumer))
        }
        self.subjects = subjects
        var clients: [String: Consumer] = [:]
        for (consumer, credential) in consumers.credentials("oauth2", as: OAuth2Credential.self) { clients[credential.clientID] = consumer }
        self.clients = clients
        cache = TokenCache(capacity: 10_000)
    }

    public func challenge(failure: String?) -> String {
        guard let failure else { return #"Bearer realm="\#(realm)""# }
        return #"Bearer realm="\#(realm)", error="invalid_token", error_description="\#(failure)""#
    }

    public func authenticate(_ request: HTTPRequest, context: RequestContext) -> AuthOutcome {
        guard let token = token(request) else { return .missing }
        let now = Double(WallClock.milliseconds()) / 1_000
        if let cached = cache.lookup(token) {
            if let problem = timeProblem(cached.claims, now: now) { return .invalid(reason: problem, credential: cached.identity.credential) }
            // A token checked with a fetched key is only as good as that key: not past the keys' expiry.
            if !cached.claims.verifiedWithFetchedKey || (jwks.map { MonotonicClock.nanoseconds() <= $0.snapshot.usableUntil } ?? true) {
                return .authenticated(cached.identity)
            }
        }
        guard let jwks else { return outcome(verify(token, now: now, keySets: [keySet]), token: token) }
        let clock = MonotonicClock.nanoseconds()
        let snapshot = jwks.snapshot
        guard let fetched = snapshot.keys else {
            // Never loaded: wait for the fetch (joined if one runs; at most one a second otherwise).
            guard let loop = context.eventLoop, jwks.isFetching || snapshot.lastAttempt == 0 || jwks.mayRefetch(now: clock),
                  let done = jwks.fetch(on: loop) else {
                return .unavailable(reason: "JWKS not loaded: \(snapshot.lastError ?? "fetching")")
            }
            return .pending(done.map { self.afterFetch(token) })
        }
        guard clock <= snapshot.usableUntil else {
            jwks.refreshIfDue(now: clock)
            return .unavailable(reason: "JWKS keys expired and \(jwks.settings.url) does not answer")
        }
        jwks.refreshIfDue(now: clock)
        let result = verify(token, now: now, keySets: [keySet, fetched])
        if case .failure(let failure) = result, failure.reason == "unknown key id", let loop = context.eventLoop,
           jwks.mayRefetch(now: clock), let done = jwks.fetch(on: loop) {
            // A key the document did not have: the provider may have rotated. Fetch once, then decide.
            return .pending(done.map { self.afterFetch(token) })
        }
        return outcome(result, token: token)
    }

    /// After a fetch: decide with whatever keys there are now (no second fetch).
    private func afterFetch(_ token: String) -> AuthOutcome {
        let now = Double(WallClock.milliseconds()) / 1_000
        guard let jwks, let fetched = jwks.snapshot.keys else {
            return .unavailable(reason: "JWKS not loaded: \(jwks?.snapshot.lastError ?? "unknown error")")
        }
        return outcome(verify(token, now: now, keySets: [keySet, fetched]), token: token)
    }

    private func outcome(_ result: Result<JWTClaims, Failure>, token: String) -> AuthOutcome {
        switch result {
        case .failure(let failure):
            return .invalid(reason: failure.reason, credential: failure.subject.map { "jwt:" + $0 })
        case .success(let claims):
            guard let identity = identity(claims) else {
                return .invalid(reason: "token subject is not a known consumer", credential: claims.subject.map { "jwt:" + $0 })
            }
            cache.store(token, identity: identity, claims: claims)
            return .authenticated(identity)
        }
    }

    public var rewritesTarget: Bool { query != nil }
    public var fieldNames: [HTTPField.Name] { cookie == nil ? [.authorization] : [.authorization, .cookie] }
    public var fixedCredentialFields: [HTTPField.Name]? { cookie == nil && query == nil ? [.authorization] : nil }

    public func removeCredential(from request: inout HTTPRequest, edits: inout FieldEdits) {
        if request.headerFields.contains(where: { $0.name == .authorization && AuthText.credentials(scheme: "Bearer", in: $0.value) != nil }) {
            edits.remove(.authorization)
        }
        if let cookie { AuthText.removeCookie(cookie, from: request, edits: &edits) }
        if let query, let path = request.path { request.path = AuthText.removingQuery(query, from: path) }
    }

    func token(_ request: HTTPRequest) -> String? {
        for field in request.headerFields where field.name == .authorization {
            if let token = AuthText.credentials(scheme: "Bearer", in: field.value) { return token }
        }
        if let cookie, let value = AuthText.cookie(cookie, in: request.headerFields), !value.isEmpty { return value }
        if let query, let value = AuthText.query(query, in: request.path), !value.isEmpty { return value }
        return nil
    }

    struct Failure: Error {
        var reason: String
        var subject: String?
    }

    /// Checks a token: shape, header, key and signature, then claims.
    func verify(_ token: String, now: Double, keySets: [JWTKeySet]) -> Result<JWTClaims, Failure> {
        guard token.utf8.count <= maxTokenSize else { return .failure(Failure(reason: "token too large")) }
        let bytes = Array(token.utf8)
        let dots = bytes.indices.filter { bytes[$0] == UInt8(ascii: ".") }
        guard dots.count == 2, dots[0] > 0, dots[1] > dots[0] + 1, dots[1] < bytes.count - 1 else {
            return .failure(Failure(reason: "malformed token"))
        }
        guard let headerBytes = Base64URL.decode(bytes[..<dots[0]]),
              let header = try? JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any],
              let payloadBytes = Base64URL.decode(bytes[(dots[0] + 1)..<dots[1]]),
              let payload = try? JSONSerialization.jsonObject(with: Data(payloadBytes)) as? [String: Any],
              let signature = Base64URL.decode(bytes[(dots[1] + 1)...]) else {
            return .failure(Failure(reason: "malformed token"))
        }
        guard let alg = header["alg"] as? String else { return .failure(Failure(reason: "token has no alg")) }
        guard alg != "none", allowed.contains(alg) else { return .failure(Failure(reason: "algorithm not allowed")) }
        if header["crit"] != nil { return .failure(Failure(reason: "unsupported critical header")) }
        let kid = header["kid"] as? String
        var candidates: [(key: JWTKeySet.Key, set: Int)]?
        for (index, set) in keySets.enumerated() {
            if let found = set.candidates(kid: kid, alg: alg) { candidates = (candidates ?? []) + found.map { ($0, index) } }
        }
        guard let candidates else { return .failure(Failure(reason: "unknown key id")) }
        guard !candidates.isEmpty else { return .failure(Failure(reason: "no key for this algorithm")) }
        let input = bytes[..<dots[1]]
        guard let verifier = candidates.first(where: { JWTKeySet.verify(signature, signs: input, with: $0.key) }) else {
            return .failure(Failure(reason: "invalid signature"))
        }
        var claims = Self.claims(payload)
        claims.verifiedWithFetchedKey = verifier.set > 0
        if let problem = check(claims, now: now) { return .failure(Failure(reason: problem, subject: claims.subject)) }
        return .success(claims)
    }

    static func claims(_ payload: [String: Any]) -> JWTClaims {
        var claims = JWTClaims()
        claims.names = Set(payload.keys)
        claims.expiresAt = (payload["exp"] as? NSNumber)?.doubleValue
        claims.notBefore = (payload["nbf"] as? NSNumber)?.doubleValue
        claims.issuedAt = (payload["iat"] as? NSNumber)?.doubleValue
        claims.issuer = payload["iss"] as? String
        claims.subject = payload["sub"] as? String
        if let audience = payload["aud"] as? String { claims.audience = [audience] } else if let list = payload["aud"] as? [String] { claims.audience = list }
        if let scope = payload["scope"] as? String {
            claims.scopes = scope.split(separator: " ").map(String.init)
        } else if let list = payload["scp"] as? [String] {
            claims.scopes = list
        } else if let scp = payload["scp"] as? String {
            claims.scopes = scp.split(separator: " ").map(String.init)
        }
        for (name, value) in payload {
            switch value {
            case let text as String: claims.values[name] = text
            case let number as NSNumber: claims.values[name] = number.stringValue
            case let list as [String]: claims.values[name] = list.joined(separator: " ")
            default: break
            }
        }
        return claims
    }

    /// Everything but the signature: required claims, issuer, audience, times.
    func check(_ claims: JWTClaims, now: Double) -> String? {
        for name in requiredClaims where !claims.names.contains(name) { return "missing claim \(name)" }
        if let issuer, claims.issuer != issuer { return "wrong issuer" }
        if !audience.isEmpty && !claims.audience.contains(where: audience.contains) { return "wrong audience" }
        if let issuedAt = claims.issuedAt, issuedAt > now + leeway { return "token issued in the future" }
        return timeProblem(claims, now: now)
    }

    func timeProblem(_ claims: JWTClaims, now: Double) -> String? {
        if let expiresAt = claims.expiresAt, now > expiresAt + leeway { return "token expired" }
        if let notBefore = claims.notBefore, now + leeway < notBefore { return "token not yet valid" }
        return nil
    }

    /// The consumer a verified token names; nil when it names none (unless those are accepted).
    func identity(_ claims: JWTClaims) -> Identity? {
        let value = claims.values[consumerClaim]
        let credential = "jwt:" + (value ?? claims.subject ?? "?")
        if let value, let matches = subjects[value],
           let match = matches.first(where: { $0.issuer == nil || $0.issuer == claims.issuer }) {
            return Identity(consumer: match.consumer, credential: credential, scopes: claims.scopes, claims: claims.values)
        }
        if let clientID = claims.values["client_id"], let consumer = clients[clientID] {
            return Identity(consumer: consumer, credential: "oauth2:" + clientID, scopes: claims.scopes, claims: claims.values)
        }
        return allowUnknownSubjects ? Identity(consumer: nil, credential: credential, scopes: claims.scopes, claims: claims.values) : nil
    }
}

public typealias JWTPlugin = AuthPlugin<JWTMethod>

/// Verified tokens until they expire: 16 shards (loops rarely meet on one lock; a token picks its
/// shard by its last character, which is part of the signature), each bounded, oldest first out. A
/// hit compares the whole token and hands back one shared entry.
final class TokenCache: Sendable {
    final class Entry: Sendable {
        let identity: Identity
        let claims: JWTClaims

        init(identity: Identity, claims: JWTClaims) {
            self.identity = identity
            self.claims = claims
        }
    }

    private final class Shard: Sendable {
        let state: Mutex<BoundedMap<String, Entry>>
        init(capacity: Int) { state = Mutex(BoundedMap(capacity: capacity)) }
    }

    private let shards: [Shard]

    init(capacity: Int) {
        let perShard = max(16, capacity / 16)
        shards = (0..<16).map { _ in Shard(capacity: perShard) }
    }

    private func shard(_ token: String) -> Shard { shards[Int((token.utf8.last ?? 0) & 15)] }

    func lookup(_ token: String) -> Entry? {
        shard(token).state.withLock { $0[token] }
    }

    func store(_ token: String, identity: Identity, claims: JWTClaims) {
        let entry = Entry(identity: identity, claims: claims)
        shard(token).state.withLock { $0[token] = entry }
    }
}

/// Base64url without padding (RFC 7515), strict: other characters fail.
enum Base64URL {
    static func decode(_ bytes: ArraySlice<UInt8>) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 3 / 4)
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            let value: UInt8
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = byte - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = byte - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte - UInt8(ascii: "0") + 52
            case UInt8(ascii: "-"): value = 62
            case UInt8(ascii: "_"): value = 63
            default: return nil
            }
            buffer = buffer << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
        }
        guard bits < 6 else { return nil }   // one leftover character cannot be
        return out
    }

    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var text = Data(bytes).base64EncodedString()
        text = text.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        while text.hasSuffix("=") { text.removeLast() }
        return text
    }
}

extension Duration {
    var seconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}
