import Atomics
import Crypto
import Foundation
import HTTPTypes
import NIOCore
import NIOPosix
import Synchronization
import TollgateCore

/// `consumers[].credentials.basic_auth[]`: a user name and its password's slow hash.
public struct BasicCredential: ConsumerCredential {
    public var username: String
    public var hash: PasswordHash

    static func parse(_ node: ConfigNode) -> (any ConsumerCredential)? {
        guard node.expectMapping(keys: ["username", "password_hash"], required: true),
              let username = node["username"].string(required: true),
              let text = node["password_hash"].string(required: true) else { return nil }
        if username.isEmpty || username.contains(":") { node["username"].error("expected a user name without ':'") }
        do {
            return BasicCredential(username: username, hash: try PasswordHash(parsing: text))
        } catch {
            node["password_hash"].error(error.description)
            return nil
        }
    }
}

/// `basic-auth` (RFC 7617). Passwords are checked against slow hashes off the event loop (a thread
/// pool), at most `max_concurrent_verifications` at once; a verified (or refused) user and password
/// pair is remembered for `cache_ttl`, by a keyed hash of both, so a client sending the same
/// credentials on every request pays the slow hash once.
public struct BasicAuthMethod: AuthenticationMethod {
    public static let pluginName = "basic-auth"
    public static let priority = 1100
    public static let configKeys: Set<String> = ["realm", "cache_ttl", "max_concurrent_verifications"]

    let realm: String
    let users: [String: (consumer: Consumer, hash: PasswordHash)]
    let cache: VerificationCache
    let maxConcurrent: Int
    /// A hash as slow as the users' own, checked for unknown user names too: the answer then takes as
    /// long as for a wrong password, so timing does not tell which user names exist.
    let decoy: PasswordHash

    public init?(config: ConfigNode, consumers: ConsumerDirectory) {
        realm = config["realm"].string() ?? "tollgate"
        if realm.contains("\"") { config["realm"].error("a realm cannot contain '\"'") }
        let ttl = config["cache_ttl"].duration() ?? .seconds(300)
        maxConcurrent = config["max_concurrent_verifications"].int(range: 1...1_024) ?? 16
        var users: [String: (consumer: Consumer, hash: PasswordHash)] = [:]
        for (consumer, credential) in consumers.credentials("basic_auth", as: BasicCredential.self) {
            if users[credential.username] != nil {
                config.error("user name '\(credential.username)' belongs to more than one consumer")
            }
            users[credential.username] = (consumer, credential.hash)
        }
        self.users = users
        let scheme = users.values.first?.hash.scheme ?? .pbkdf2SHA256(rounds: 600_000)
        self.decoy = PasswordHash(scheme: scheme, salt: Array(repeating: 7, count: 16), hash: Array(repeating: 0, count: 32))
        self.cache = VerificationCache(ttlNanos: ttl.unsignedNanoseconds, capacity: 10_000)
    }

    public func challenge(failure: String?) -> String { #"Basic realm="\#(realm)", charset="UTF-8""# }

    public func authenticate(_ request: HTTPRequest, context: RequestContext) -> AuthOutcome {
        guard let field = request.headerFields.first(where: { $0.name == .authorization }),
              let encoded = AuthText.credentials(scheme: "Basic", in: field.value) else { return .missing }
        guard let decoded = Data(base64Encoded: encoded),
              let text = String(data: decoded, encoding: .utf8), let colon = text.firstIndex(of: ":") else {
            return .invalid(reason: "malformed Basic credentials", credential: nil)
        }
        let username = String(text[..<colon])
        let password = String(text[text.index(after: colon)...])
        let key = cache.key(username: username, password: password)
        guard let user = users[username] else {
            return decoyCheck(username: username, password: password, key: key, context: context)
        }
        let now = MonotonicClock.nanoseconds()
        if let known = cache.lookup(key, now: now) {
            return known ? .authenticated(Identity(consumer: user.consumer, credential: username))
                : .invalid(reason: "wrong password", credential: username)
        }
        guard let loop = context.eventLoop else {
            // No loop to come back to (a unit test calling the hook directly): verify here.
            return finish(user.hash.verify(password), user: user, username: username, key: key)
        }
        guard cache.inFlight.wrappingIncrementThenLoad(ordering: .relaxed) <= maxConcurrent else {
            cache.inFlight.wrappingDecrement(ordering: .relaxed)
            return .unavailable(reason: "too many password verifications at once")
        }
        let hash = user.hash
        let verified = NIOThreadPool.singleton.runIfActive(eventLoop: loop) { hash.verify(password) }
        return .pending(verified.map { ok in
            self.cache.inFlight.wrappingDecrement(ordering: .relaxed)
            return self.finish(ok, user: user, username: username, key: key)
        }.recover { _ in
            self.cache.inFlight.wrappingDecrement(ordering: .relaxed)
            return .unavailable(reason: "password verification failed to run")
        })
    }

    /// An unknown user name: the same slow work as a known one (and the same cache), then refused.
    private func decoyCheck(username: String, password: String, key: [UInt8], context: RequestContext) -> AuthOutcome {
        let refused = AuthOutcome.invalid(reason: "unknown user", credential: username)
        if cache.lookup(key, now: MonotonicClock.nanoseconds()) != nil { return refused }
        guard let loop = context.eventLoop else { return refused }
        guard cache.inFlight.wrappingIncrementThenLoad(ordering: .relaxed) <= maxConcurrent else {
            cache.inFlight.wrappingDecrement(ordering: .relaxed)
            return .unavailable(reason: "too many password verifications at once")
        }
        let decoy = self.decoy
        let checked = NIOThreadPool.singleton.runIfActive(eventLoop: loop) { _ = decoy.verify(password) }
        return .pending(checked.map { _ in
            self.cache.inFlight.wrappingDecrement(ordering: .relaxed)
            self.cache.store(key, verified: false, now: MonotonicClock.nanoseconds())
            return refused
        }.recover { _ in
            self.cache.inFlight.wrappingDecrement(ordering: .relaxed)
            return refused
        })
    }

    private func finish(_ ok: Bool, user: (consumer: Consumer, hash: PasswordHash), username: String, key: [UInt8]) -> AuthOutcome {
        cache.store(key, verified: ok, now: MonotonicClock.nanoseconds())
        return ok ? .authenticated(Identity(consumer: user.consumer, credential: username))
            : .invalid(reason: "wrong password", credential: username)
    }

    public func removeCredential(from request: inout HTTPRequest, edits: inout FieldEdits) {
        edits.remove(.authorization)
    }

    public var fieldNames: [HTTPField.Name] { [.authorization] }
    public var fixedCredentialFields: [HTTPField.Name]? { [.authorization] }
}

public typealias BasicAuthPlugin = AuthPlugin<BasicAuthMethod>

/// Results of slow verifications, by HMAC(process secret, user, password): the clear password is
/// never kept, and the key means nothing outside this process. Bounded: oldest first out.
final class VerificationCache: Sendable {
    private struct Entry: Sendable {
        var verified: Bool
        var expires: UInt64
    }

    private let secret = SymmetricKey(size: .bits256)
    private let ttlNanos: UInt64
    private let entries: Mutex<BoundedMap<[UInt8], Entry>>
    let inFlight = ManagedAtomic<Int>(0)

    init(ttlNanos: UInt64, capacity: Int) {
        self.ttlNanos = ttlNanos
        self.entries = Mutex(BoundedMap(capacity: capacity))
    }

    func key(username: String, password: String) -> [UInt8] {
        var hmac = HMAC<SHA256>(key: secret)
        hmac.update(data: Array(username.utf8))
        hmac.update(data: [0])
        hmac.update(data: Array(password.utf8))
        return Array(hmac.finalize())
    }

    func lookup(_ key: [UInt8], now: UInt64) -> Bool? {
        entries.withLock { state in
            guard let entry = state[key], entry.expires > now else { return nil }
            return entry.verified
        }
    }

    /// A refusal is kept a tenth as long as a success (a password may just have been changed).
    func store(_ key: [UInt8], verified: Bool, now: UInt64) {
        let ttl = verified ? ttlNanos : ttlNanos / 10
        entries.withLock { $0[key] = Entry(verified: verified, expires: now + ttl) }
    }
}
