import Crypto
import Foundation
import HTTPTypes
import Synchronization
import TollgateCore

/// `consumers[].credentials.digest_auth[]`: a user name and HA1 = H(username:realm:password) per
/// algorithm (RFC 7616). HA1 is as good as the password for this realm: keep it as secret. The
/// config may give `password` once (through `${ENV}`), turned into both HA1 values at load.
public struct DigestCredential: ConsumerCredential {
    public var username: String
    public var ha1SHA256: [UInt8]?
    public var ha1MD5: [UInt8]?
    /// The realm the HA1 values were made for (the plugin's realm must be the same).
    public var realm: String

    static func parse(_ node: ConfigNode) -> (any ConsumerCredential)? {
        guard node.expectMapping(keys: ["username", "realm", "password", "ha1_sha256", "ha1_md5"], required: true),
              let username = node["username"].string(required: true) else { return nil }
        let realm = node["realm"].string() ?? "tollgate"
        var credential = DigestCredential(username: username, ha1SHA256: nil, ha1MD5: nil, realm: realm)
        if let password = node["password"].string() {
            let secret = Array("\(username):\(realm):\(password)".utf8)
            credential.ha1SHA256 = Array(SHA256.hash(data: secret))
            credential.ha1MD5 = Array(Insecure.MD5.hash(data: secret))
        }
        if let hex = node["ha1_sha256"].string() {
            credential.ha1SHA256 = Hex.decode(hex)
            if credential.ha1SHA256?.count != 32 { node["ha1_sha256"].error("expected 64 hex digits") }
        }
        if let hex = node["ha1_md5"].string() {
            credential.ha1MD5 = Hex.decode(hex)
            if credential.ha1MD5?.count != 16 { node["ha1_md5"].error("expected 32 hex digits") }
        }
        if credential.ha1SHA256 == nil && credential.ha1MD5 == nil {
            node.error("give password, ha1_sha256 or ha1_md5")
            return nil
        }
        return credential
    }
}

/// `digest-auth` (RFC 7616): `qop=auth` with SHA-256, and MD5 for old clients (`algorithms`).
/// Nonces are made by the gateway (a time, a random part and an HMAC of both under a per-process
/// secret: no state to keep for them), expire after `nonce_ttl` (an expired one gets `stale=true`, so
/// the client retries without asking the user again), and each nonce count may be used once: a
/// replayed request is refused.
public struct DigestAuthMethod: AuthenticationMethod {
    public static let pluginName = "digest-auth"
    public static let priority = 1090
    public static let configKeys: Set<String> = ["realm", "algorithms", "nonce_ttl"]

    enum Algorithm: String, Sendable {
        case sha256 = "SHA-256"
        case md5 = "MD5"

        func hash(_ text: String) -> [UInt8] {
            switch self {
            case .sha256: return Array(SHA256.hash(data: Array(text.utf8)))
            case .md5: return Array(Insecure.MD5.hash(data: Array(text.utf8)))
            }
        }
    }

    let realm: String
    let algorithms: [Algorithm]
    let nonceTTL: Double
    let users: [String: (consumer: Consumer, credential: DigestCredential)]
    let nonces: NonceBook

    public init?(config: ConfigNode, consumers: ConsumerDirectory) {
        realm = config["realm"].string() ?? "tollgate"
        if realm.contains("\"") { config["realm"].error("a realm cannot contain '\"'") }
        var algorithms: [Algorithm] = []
        for name in config["algorithms"].strings() ?? ["SHA-256", "MD5"] {
            if let algorithm = Algorithm(rawValue: name) { algorithms.append(algorithm) } else { config["algorithms"].error("expected SHA-256 or MD5") }
        }
        self.algorithms = algorithms
        nonceTTL = (config["nonce_ttl"].duration() ?? .seconds(300)).seconds
        var users: [String: (consumer: Consumer, credential: DigestCredential)] = [:]
        for (consumer, credential) in consumers.credentials("digest_auth", as: DigestCredential.self) where credential.realm == realm {
            users[credential.username] = (consumer, credential)
        }
        self.users = users
        nonces = NonceBook(ttlSeconds: nonceTTL)
    }

    public func challenge(failure: String?) -> String {
        let stale = failure == "stale nonce" ? ", stale=true" : ""
        return algorithms.map { algorithm in
            #"Digest realm="\#(realm)", qop="auth", algorithm=\#(algorithm.rawValue), nonce="\#(nonces.make())", opaque="\#(nonces.opaque)", charset=UTF-8\#(stale)"#
        }.joined(separator: ", ")
    }

    public func authenticate(_ request: HTTPRequest, context: RequestContext) -> AuthOutcome {
        guard let field = request.headerFields.first(where: { $0.name == .authorization }),
              let credentials = AuthText.credentials(scheme: "Digest", in: field.value) else {
            return .missing
        }
        let parameters = Self.parameters(credentials)
        guard let username = parameters["username"], let nonce = parameters["nonce"], let uri = parameters["uri"],
              let response = parameters["response"], let cnonce = parameters["cnonce"], let nc = parameters["nc"],
              parameters["qop"] == "auth", parameters["realm"] == realm else {
            return .invalid(reason: "malformed Digest credentials", credential: nil)
        }
        let algorithm = Algorithm(rawValue: parameters["algorithm"] ?? "MD5")
        guard let algorithm, algorithms.contains(algorithm) else { return .invalid(reason: "algorithm not allowed", credential: username) }
        // The target the client sent (a route's rewrite may already have changed the request's path).
        guard uri == (request.path ?? "/") || uri.split(separator: "?", maxSplits: 1).first.map(String.init) == context.originalPath else { return .invalid(reason: "digest uri does not match the request", credential: username) }
        guard let user = users[username] else { return .invalid(reason: "unknown user", credential: username) }
        guard let ha1 = algorithm == .sha256 ? user.credential.ha1SHA256 : user.credential.ha1MD5 else {
            return .invalid(reason: "no \(algorithm.rawValue) secret for this user", credential: username)
        }
        switch nonces.check(nonce) {
        case .invalid: return .invalid(reason: "invalid nonce", credential: username)
        case .stale: return .invalid(reason: "stale nonce", credential: username)
        case .valid: break
        }
        let expected = Self.response(algorithm, ha1: ha1, nonce: nonce, nc: nc, cnonce: cnonce, method: request.method.rawValue, uri: uri)
        guard AuthText.constantTimeEqual(Array(expected.utf8), Array(response.lowercased().utf8)) else {
            return .invalid(reason: "wrong password", credential: username)
        }
        // Only a right answer uses up its nonce count (a wrong one must not let others replay it away).
        guard let count = UInt64(nc, radix: 16), nonces.use(nonce, count: count) else {
            return .invalid(reason: "replayed nonce count", credential: username)
        }
        return .authenticated(Identity(consumer: user.consumer, credential: username))
    }

    public func removeCredential(from request: inout HTTPRequest, edits: inout FieldEdits) {
        edits.remove(.authorization)
    }

    public var fieldNames: [HTTPField.Name] { [.authorization] }
    public var fixedCredentialFields: [HTTPField.Name]? { [.authorization] }

    /// The `response` a client must send for `qop=auth` (RFC 7616 section 3.4.1), in lowercase hex.
    static func response(_ algorithm: Algorithm, ha1: [UInt8], nonce: String, nc: String, cnonce: String,
                         method: String, uri: String) -> String {
        let ha2 = Hex.encode(algorithm.hash("\(method):\(uri)"))
        return Hex.encode(algorithm.hash("\(Hex.encode(ha1)):\(nonce):\(nc):\(cnonce):auth:\(ha2)"))
    }

    /// `key="quoted, value", key=token` pairs.
    static func parameters(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        var rest = Substring(text)
        while !rest.isEmpty {
            rest = rest.drop { $0 == " " || $0 == "," }
            guard let equals = rest.firstIndex(of: "=") else { break }
            let key = rest[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            rest = rest[rest.index(after: equals)...].drop { $0 == " " }
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                var escaped = false
                var end = rest.endIndex
                for index in rest.indices {
                    let character = rest[index]
                    if escaped { value.append(character); escaped = false; continue }
                    if character == "\\" { escaped = true; continue }
                    if character == "\"" { end = index; break }
                    value.append(character)
                }
                rest = end < rest.endIndex ? rest[rest.index(after: end)...] : ""
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = rest[..<end].trimmingCharacters(in: .whitespaces)
                rest = rest[end...]
            }
            result[key] = value
        }
        return result
    }
}

public typealias DigestAuthPlugin = AuthPlugin<DigestAuthMethod>

/// Nonces: made and checked without state (time, random, HMAC), and the highest nonce count used
/// per nonce, kept while the nonce lives (bounded: the oldest nonces go first).
final class NonceBook: Sendable {
    enum Check { case valid, stale, invalid }

    private let secret = SymmetricKey(size: .bits256)
    let opaque: String
    private let ttlSeconds: Double
    private let used = Mutex(BoundedMap<String, UInt64>(capacity: 100_000))

    init(ttlSeconds: Double) {
        self.ttlSeconds = ttlSeconds
        opaque = Hex.encode((0..<8).map { _ in UInt8.random(in: 0...255) })
    }

    func make(now: Double = Date().timeIntervalSince1970) -> String {
        var bytes: [UInt8] = []
        var time = UInt64(now).bigEndian
        withUnsafeBytes(of: &time) { bytes += $0 }
        bytes += (0..<8).map { _ in UInt8.random(in: 0...255) }
        let mac = HMAC<SHA256>.authenticationCode(for: bytes, using: secret)
        return Hex.encode(bytes + Array(mac).prefix(16))
    }

    func check(_ nonce: String, now: Double = Date().timeIntervalSince1970) -> Check {
        guard let bytes = Hex.decode(nonce), bytes.count == 32 else { return .invalid }
        let mac = HMAC<SHA256>.authenticationCode(for: bytes.prefix(16), using: secret)
        guard AuthText.constantTimeEqual(Array(mac).prefix(16), bytes.suffix(16)) else { return .invalid }
        var time: UInt64 = 0
        for byte in bytes.prefix(8) { time = time << 8 | UInt64(byte) }
        return now - Double(time) > ttlSeconds ? .stale : .valid
    }

    /// Records `count` for `nonce`; false when it is not above every count seen for it (a replay).
    func use(_ nonce: String, count: UInt64) -> Bool {
        used.withLock { counts in
            if let last = counts[nonce], count <= last { return false }
            counts[nonce] = count
            return true
        }
    }
}
