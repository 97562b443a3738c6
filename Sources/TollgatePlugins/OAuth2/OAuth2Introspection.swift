import AsyncHTTPClient
import Crypto
import Foundation
import HTTPTypes
import NIOCore
import NIOHTTP1
import Synchronization
import TollgateCore

/// `consumers[].credentials.oauth2[]`: an OAuth 2.0 client. Introspected tokens whose `client_id` is
/// this one are this consumer's (when their subject names no consumer).
public struct OAuth2Credential: ConsumerCredential {
    public var clientID: String
    public var secretDigest: [UInt8]?
    public var scopes: [String]

    static func parse(_ node: ConfigNode) -> (any ConsumerCredential)? {
        guard node.expectMapping(keys: ["client_id", "client_secret_sha256", "client_secret", "scopes"], required: true),
              let clientID = node["client_id"].string(required: true) else { return nil }
        var credential = OAuth2Credential(clientID: clientID, secretDigest: nil, scopes: node["scopes"].strings() ?? [])
        if let hex = node["client_secret_sha256"].string() {
            credential.secretDigest = Hex.decode(hex)
            if credential.secretDigest?.count != 32 { node["client_secret_sha256"].error("expected 64 hex digits (a SHA-256 digest)") }
        }
        if let secret = node["client_secret"].string() {
            credential.secretDigest = Array(SHA256.hash(data: Array(secret.utf8)))
        }
        return credential
    }
}

/// `oauth2` as a resource server: opaque bearer tokens checked by token introspection (RFC 7662)
/// against the authorization server's endpoint, with this gateway's client credentials. Answers are
/// cached until the token's `exp` (at most `cache_ttl`; inactive ones `inactive_ttl`), bounded, and
/// concurrent requests with the same unknown token share one introspection. An endpoint that is down
/// fails only the tokens it has not answered for yet (503); cached tokens keep working.
public struct OAuth2Method: AuthenticationMethod {
    public static let pluginName = "oauth2"
    public static let priority = 1400
    public static let configKeys: Set<String> = ["introspection", "token_endpoint", "consumer_claim", "allow_unknown_subjects", "realm"]

    struct Settings: Sendable {
        var url: String
        var clientID: String
        var clientSecret: String
        var timeout: Duration = .seconds(2)
        var cacheTTL: Double = 300
        var inactiveTTL: Double = 30
    }

    let settings: Settings
    let consumerClaim: String
    let allowUnknownSubjects: Bool
    let realm: String
    let subjects: [String: Consumer]
    let clients: [String: Consumer]
    let cache: IntrospectionCache

    public init?(config: ConfigNode, consumers: ConsumerDirectory) {
        let node = config["introspection"]
        guard node.expectMapping(keys: ["url", "client_id", "client_secret", "timeout", "cache_ttl", "inactive_ttl"], required: true),
              let url = node["url"].string(required: true), let clientID = node["client_id"].string(required: true),
              let secret = node["client_secret"].string(required: true) else { return nil }
        guard (url.hasPrefix("https://") || url.hasPrefix("http://")), URL(string: url)?.host != nil else {
            node["url"].error("expected an https:// (or http://) URL")
            return nil
        }
        var settings = Settings(url: url, clientID: clientID, clientSecret: secret)
        if let value = node["timeout"].duration() { settings.timeout = value }
        if let value = node["cache_ttl"].duration() { settings.cacheTTL = value.seconds }
        if let value = node["inactive_ttl"].duration() { settings.inactiveTTL = value.seconds }
        self.settings = settings
        if config["token_endpoint"].isPresent {
            config["token_endpoint"].error("the client-credentials token endpoint is not in this build yet")
        }
        consumerClaim = config["consumer_claim"].string() ?? "sub"
        allowUnknownSubjects = config["allow_unknown_subjects"].bool() ?? false
        realm = config["realm"].string() ?? "tollgate"
        var subjects: [String: Consumer] = [:]
        for (consumer, credential) in consumers.credentials("jwt", as: JWTCredential.self) { subjects[credential.subject] = consumer }
        self.subjects = subjects
        var clients: [String: Consumer] = [:]
        for (consumer, credential) in consumers.credentials("oauth2", as: OAuth2Credential.self) { clients[credential.clientID] = consumer }
        self.clients = clients
        cache = config.diagnostics.state.value(for: "oauth2|introspection|\(config.path)|\(url)") { IntrospectionCache(capacity: 10_000) }
    }

    public func challenge(failure: String?) -> String {
        guard let failure else { return #"Bearer realm="\#(realm)""# }
        return #"Bearer realm="\#(realm)", error="invalid_token", error_description="\#(failure)""#
    }

    public var fieldNames: [HTTPField.Name] { [.authorization] }
    public var fixedCredentialFields: [HTTPField.Name]? { [.authorization] }

    public func removeCredential(from request: inout HTTPRequest, edits: inout FieldEdits) {
        edits.remove(.authorization)
    }

    public func authenticate(_ request: HTTPRequest, context: RequestContext) -> AuthOutcome {
        guard let field = request.headerFields.first(where: { $0.name == .authorization }),
              let token = AuthText.credentials(scheme: "Bearer", in: field.value) else { return .missing }
        guard token.utf8.count <= 4_096 else { return .invalid(reason: "token too large", credential: nil) }
        let now = Double(WallClock.milliseconds()) / 1_000
        if let known = cache.lookup(token, now: now) { return outcome(known) }
        guard let loop = context.eventLoop else { return .unavailable(reason: "introspection needs an event loop") }
        return .pending(cache.introspect(token, on: loop) { self.introspect(token, on: loop) }.map { answer in
            self.outcome(answer)
        }.recover { error in
            .unavailable(reason: "introspection endpoint unavailable")
        })
    }

    private func outcome(_ answer: IntrospectionCache.Answer) -> AuthOutcome {
        guard answer.active else { return .invalid(reason: "token inactive", credential: answer.credential) }
        guard let identity = answer.identity else {
            return .invalid(reason: "token subject is not a known consumer", credential: answer.credential)
        }
        return .authenticated(identity)
    }

    /// POST the token to the endpoint (RFC 7662 section 2.1) and read the answer.
    private func introspect(_ token: String, on loop: any EventLoop) -> EventLoopFuture<IntrospectionCache.Answer> {
        let settings = self.settings
        do {
            var request = try HTTPClient.Request(url: settings.url, method: .POST)
            let credentials = Data("\(Self.formEncode(settings.clientID)):\(Self.formEncode(settings.clientSecret))".utf8).base64EncodedString()
            request.headers.add(name: "Authorization", value: "Basic \(credentials)")
            request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            request.headers.add(name: "Accept", value: "application/json")
            request.body = .string("token=\(Self.formEncode(token))&token_type_hint=access_token")
            let deadline = NIODeadline.now() + .nanoseconds(Int64(settings.timeout.unsignedNanoseconds))
            // The shared client runs on its own loops; the answer comes back to this one.
            return HTTPClient.shared.execute(request: request, eventLoop: .indifferent, deadline: deadline).hop(to: loop).flatMapThrowing { response in
                guard response.status == .ok, let body = response.body,
                      let json = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] else {
                    throw IntrospectionError.badAnswer(Int(response.status.code))
                }
                return self.answer(json)
            }
        } catch {
            return loop.makeFailedFuture(error)
        }
    }

    enum IntrospectionError: Error {
        case badAnswer(Int)
    }

    /// The endpoint's JSON as a cacheable answer: active, who, scopes, until when.
    func answer(_ json: [String: Any]) -> IntrospectionCache.Answer {
        let now = Double(WallClock.milliseconds()) / 1_000
        let active = json["active"] as? Bool ?? false
        guard active else { return IntrospectionCache.Answer(active: false, identity: nil, credential: nil, expiresAt: now + settings.inactiveTTL) }
        let exp = (json["exp"] as? NSNumber)?.doubleValue
        if let exp, exp <= now {
            return IntrospectionCache.Answer(active: false, identity: nil, credential: nil, expiresAt: now + settings.inactiveTTL)
        }
        var claims: [String: String] = [:]
        for (name, value) in json {
            if let text = value as? String { claims[name] = text } else if let number = value as? NSNumber { claims[name] = number.stringValue }
        }
        let scopes = (json["scope"] as? String)?.split(separator: " ").map(String.init) ?? []
        let subject = claims[consumerClaim]
        let clientID = json["client_id"] as? String
        let consumer = subject.flatMap { subjects[$0] } ?? clientID.flatMap { clients[$0] }
        let credential = "oauth2:" + (subject ?? clientID ?? "?")
        let identity = consumer != nil || allowUnknownSubjects
            ? Identity(consumer: consumer, credential: credential, scopes: scopes, claims: claims) : nil
        let until = min(exp ?? .infinity, now + settings.cacheTTL)
        return IntrospectionCache.Answer(active: true, identity: identity, credential: credential, expiresAt: until)
    }

    /// `application/x-www-form-urlencoded` (RFC 6749 appendix B).
    static func formEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "*"):
                out.unicodeScalars.append(UnicodeScalar(byte))
            case UInt8(ascii: " "): out += "+"
            default: out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

public typealias OAuth2Plugin = AuthPlugin<OAuth2Method>

extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}

/// Introspection answers by token until they expire (bounded, oldest first out), and the
/// introspections in flight (one per token, however many requests carry it).
final class IntrospectionCache: Sendable {
    struct Answer: Sendable {
        var active: Bool
        var identity: Identity?
        var credential: String?
        var expiresAt: Double
    }

    private let state: Mutex<(answers: BoundedMap<String, Answer>, inFlight: [String: EventLoopFuture<Answer>])>

    init(capacity: Int) {
        state = Mutex((BoundedMap(capacity: capacity), [:]))
    }

    func lookup(_ token: String, now: Double) -> Answer? {
        state.withLock { state in
            guard let answer = state.answers[token], answer.expiresAt > now else { return nil }
            return answer
        }
    }

    /// The answer for `token`: joins an introspection in flight, or starts one with `start`.
    func introspect(_ token: String, on loop: any EventLoop, start: () -> EventLoopFuture<Answer>) -> EventLoopFuture<Answer> {
        let running = state.withLock { $0.inFlight[token] }
        if let running { return running.hop(to: loop) }
        let future = start()
        let joined = state.withLock { state -> EventLoopFuture<Answer>? in
            if let other = state.inFlight[token] { return other }
            state.inFlight[token] = future
            return nil
        }
        if let joined { return joined.hop(to: loop) }
        future.whenComplete { result in
            self.state.withLock { state in
                state.inFlight[token] = nil
                guard case .success(let answer) = result else { return }
                state.answers[token] = answer
            }
        }
        return future
    }
}
