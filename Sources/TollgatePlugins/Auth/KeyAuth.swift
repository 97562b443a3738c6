import Crypto
import HTTPTypes
import TollgateCore

/// `consumers[].credentials.key_auth[]`: an API key, kept as its SHA-256 only. The config gives
/// `key_sha256` (hex), or the key itself once (`key: ${API_KEY}`), hashed when the config loads.
public struct KeyCredential: ConsumerCredential {
    public var digest: [UInt8]
    /// How logs and rate-limit keys name it: `key:` and the digest's first 8 hex digits, or the
    /// credential's `id`.
    public var id: String

    static func parse(_ node: ConfigNode) -> (any ConsumerCredential)? {
        guard node.expectMapping(keys: ["key_sha256", "key", "id"], required: true) else { return nil }
        var digest: [UInt8]?
        if let hex = node["key_sha256"].string() {
            digest = Hex.decode(hex)
            if digest?.count != 32 { node["key_sha256"].error("expected 64 hex digits (a SHA-256 digest)") }
        }
        if let key = node["key"].string() {
            if digest != nil { node["key"].error("give key_sha256 or key, not both") }
            if key.utf8.count < 16 { node["key"].error("too short: API keys need at least 16 characters") }
            digest = Array(SHA256.hash(data: Array(key.utf8)))
        }
        guard let digest, digest.count == 32 else {
            if !node["key_sha256"].isPresent && !node["key"].isPresent { node.error("give key_sha256 (or key, hashed at load)") }
            return nil
        }
        let id = node["id"].string() ?? "key:" + Hex.encode(digest.prefix(4))
        return KeyCredential(digest: digest, id: id)
    }
}

/// `key-auth`: an API key from a header, a query parameter or a cookie, looked up by its SHA-256
/// (an index by the digest's first 8 bytes, then a constant-time comparison of the whole digest).
public struct KeyAuthMethod: AuthenticationMethod {
    public static let pluginName = "key-auth"
    public static let priority = 1250
    public static let configKeys: Set<String> = ["headers", "query", "cookies"]

    var headerNames: [HTTPField.Name] = [HTTPField.Name("X-API-Key")!]
    var queryNames: [String] = []
    var cookieNames: [String] = []
    /// The credentials, sorted by their digest's first 8 bytes (a binary search finds a key's: the
    /// digest is already uniformly spread, so it needs no hashing).
    let credentials: [(prefix: UInt64, digest: [UInt8], consumer: Consumer, id: String)]

    public init?(config: ConfigNode, consumers: ConsumerDirectory) {
        if let names = config["headers"].strings() {
            headerNames = []
            for name in names {
                if let parsed = HTTPField.Name(name) { headerNames.append(parsed) } else { config["headers"].error("'\(name)' is not a header name") }
            }
        }
        queryNames = config["query"].strings() ?? []
        cookieNames = config["cookies"].strings() ?? []
        if headerNames.isEmpty && queryNames.isEmpty && cookieNames.isEmpty {
            config.error("give at least one place to read the key from (headers, query or cookies)")
        }
        self.credentials = consumers.credentials("key_auth", as: KeyCredential.self)
            .map { (Self.prefix($0.1.digest), $0.1.digest, $0.0, $0.1.id) }
            .sorted { $0.prefix < $1.prefix }
    }

    static func prefix(_ digest: some Collection<UInt8>) -> UInt64 {
        var value: UInt64 = 0
        for byte in digest.prefix(8) { value = value << 8 | UInt64(byte) }
        return value
    }

    public func challenge(failure: String?) -> String { #"Key realm="tollgate""# }

    public func authenticate(_ request: HTTPRequest, context: RequestContext) -> AuthOutcome {
        // A key in a header is hashed where it lies in the client's head (no String, no fields).
        var digest = context.clientHead?.head.withFirstValue(of: headerNames) { SHA256.hash(data: $0) }
        if digest == nil {
            guard var key = presentedKey(request, headers: context.clientHead == nil) else { return .missing }
            digest = key.withUTF8 { SHA256.hash(data: UnsafeRawBufferPointer($0)) }
        }
        return digest!.withUnsafeBytes { bytes -> AuthOutcome in
            guard let found = find(bytes) else {
                return .invalid(reason: "unknown API key", credential: "key:" + Hex.encode(bytes.prefix(4)))
            }
            return .authenticated(Identity(consumer: credentials[found].consumer, credential: credentials[found].id))
        }
    }

    /// The credential whose digest is `digest`: the first with its prefix (binary search), then each
    /// with that prefix compared whole in constant time.
    private func find(_ digest: UnsafeRawBufferPointer) -> Int? {
        let prefix = Self.prefix(digest)
        var low = 0, high = credentials.count
        while low < high {
            let middle = (low + high) / 2
            if credentials[middle].prefix < prefix { low = middle + 1 } else { high = middle }
        }
        var found: Int?
        while low < credentials.count && credentials[low].prefix == prefix {
            if credentials[low].digest.withUnsafeBytes({ AuthText.constantTimeEqual($0, digest) }) { found = low }
            low += 1
        }
        return found
    }

    /// The key from the request: its header fields (unless `headers` is false: they were read from
    /// the client's head), then the query, then cookies.
    private func presentedKey(_ request: HTTPRequest, headers: Bool) -> String? {
        // The first field of each name (HTTPFields' subscript joins every field of a name: it costs more).
        if headers {
            for name in headerNames {
                for field in request.headerFields where field.name == name && !field.value.isEmpty { return field.value }
            }
        }
        for name in queryNames {
            if let value = AuthText.query(name, in: request.path), !value.isEmpty { return value }
        }
        for name in cookieNames {
            if let value = AuthText.cookie(name, in: request.headerFields), !value.isEmpty { return value }
        }
        return nil
    }

    public var rewritesTarget: Bool { !queryNames.isEmpty }
    /// Header keys are read from the client's head (`RequestContext.clientHead`); only cookies need fields.
    public var fieldNames: [HTTPField.Name] { cookieNames.isEmpty ? [] : [.cookie] }
    public var readsClientHead: Bool { !headerNames.isEmpty }
    /// Only a key in the query needs the request's target.
    public var readsRequest: Bool { !queryNames.isEmpty || !cookieNames.isEmpty }
    public var fixedCredentialFields: [HTTPField.Name]? { queryNames.isEmpty && cookieNames.isEmpty ? headerNames : nil }

    public func removeCredential(from request: inout HTTPRequest, edits: inout FieldEdits) {
        for name in headerNames { edits.remove(name) }
        if !queryNames.isEmpty, let path = request.path {
            var stripped = path
            for name in queryNames { stripped = AuthText.removingQuery(name, from: stripped) }
            request.path = stripped
        }
        for name in cookieNames { AuthText.removeCookie(name, from: request, edits: &edits) }
    }
}

public typealias KeyAuthPlugin = AuthPlugin<KeyAuthMethod>

/// Hex digits both ways.
enum Hex {
    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count / 2)
        var index = 0
        while index < utf8.count {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }

    private static func nibble(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
