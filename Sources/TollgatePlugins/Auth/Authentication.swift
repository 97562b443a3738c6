import Atomics
import HTTPTypes
import NIOCore
import Synchronization
import TollgateCore

/// Who a credential proved the caller to be.
public struct Identity: Sendable {
    /// The consumer it maps to; nil for a verified token that maps to no consumer (when the plugin
    /// accepts those).
    public var consumer: Consumer?
    /// An identifier of the credential (never the secret): `key:9f86d081`, a user name, a token subject.
    public var credential: String
    public var scopes: [String]
    /// A token's claims as text (attribute rules read them); empty for other credentials.
    public var claims: [String: String]

    public init(consumer: Consumer?, credential: String, scopes: [String] = [], claims: [String: String] = [:]) {
        self.consumer = consumer
        self.credential = credential
        self.scopes = scopes
        self.claims = claims
    }
}

/// What one authentication method made of a request.
public enum AuthOutcome: Sendable {
    case authenticated(Identity)
    /// The request carries no credential of this kind.
    case missing
    /// It carries one, and it is wrong. `reason` is for logs and metrics (never the secret);
    /// `challengeError` goes into the challenge (`invalid_token` for Bearer, RFC 6750).
    case invalid(reason: String, credential: String?)
    /// The method cannot decide now (too many slow verifications at once, a key source down with
    /// nothing cached): 503, the client may retry.
    case unavailable(reason: String)
    /// Proving it needs I/O or slow work (a JWKS fetch, a password hash): decided later, on the loop.
    case pending(EventLoopFuture<AuthOutcome>)
}

/// One way of authenticating (API key, Basic, JWT...): reads its settings and the consumers'
/// credentials at load time, then decides requests on the event loop without I/O where it can.
public protocol AuthenticationMethod: Sendable {
    /// The plugin's YAML name: `key-auth`.
    static var pluginName: String { get }
    static var priority: Int { get }
    /// The keys of the plugin's `config:` this method reads (besides the common ones).
    static var configKeys: Set<String> { get }
    /// Reads the method's settings; reports problems on `config` (with their YAML paths).
    init?(config: ConfigNode, consumers: ConsumerDirectory)
    /// `WWW-Authenticate` for a request without credentials (`failure` nil: `Basic realm="api"`), and
    /// for a wrong one (`failure`: the reason, a fixed text that never holds the credential).
    func challenge(failure: String?) -> String
    func authenticate(_ request: HTTPRequest, context: RequestContext) -> AuthOutcome
    /// Removes the credential from what goes upstream: header fields through `edits`; the target
    /// (a query parameter) in `request`, only when `rewritesTarget`.
    func removeCredential(from request: inout HTTPRequest, edits: inout FieldEdits)
    /// Whether removing the credential changes the request's target (a key in the query).
    var rewritesTarget: Bool { get }
    /// The header fields `authenticate` reads.
    var fieldNames: [HTTPField.Name] { get }
    /// Whether `authenticate` reads the request (its target or fields); false when what it needs is in
    /// the context (a key read from `clientHead`, a client certificate).
    var readsRequest: Bool { get }
    /// Whether `authenticate` reads `RequestContext.clientHead` when it is there.
    var readsClientHead: Bool { get }
    /// When an accepted credential always came in exactly these fields (no cookie or query source):
    /// removing them needs no look at the request. Nil: `removeCredential` runs per request.
    var fixedCredentialFields: [HTTPField.Name]? { get }
}

extension AuthenticationMethod {
    public var rewritesTarget: Bool { false }
    public var readsRequest: Bool { true }
    public var readsClientHead: Bool { false }
}

/// Settings every authentication plugin has.
public struct AuthCommonSettings: Sendable {
    /// The consumer requests without credentials become (optional authentication); nil: 401.
    public var anonymous: Consumer?
    /// Keep the credential on the upstream request.
    public var forwardCredentials = false
    public var consumerIDHeader = HTTPField.Name("X-Consumer-ID")!
    public var consumerNameHeader = HTTPField.Name("X-Consumer-Username")!
    public var groupsHeader = HTTPField.Name("X-Consumer-Groups")!
    public var scopeHeader = HTTPField.Name("X-Authenticated-Scope")!
    public var anonymousHeader = HTTPField.Name("X-Anonymous-Consumer")!

    static let keys: Set<String> = ["anonymous", "forward_credentials", "identity_headers"]

    init(config: ConfigNode) {
        if let name = config["anonymous"].string() {
            if let entry = config.diagnostics.consumers[name] {
                anonymous = entry.consumer
            } else {
                config["anonymous"].error("no consumer named '\(name)' (list it under consumers:)")
            }
        }
        forwardCredentials = config["forward_credentials"].bool() ?? false
        let headers = config["identity_headers"]
        headers.expectMapping(keys: ["consumer_id", "consumer_username", "consumer_groups", "scope", "anonymous"])
        func name(_ key: String, _ current: inout HTTPField.Name) {
            guard let text = headers[key].string() else { return }
            if let parsed = HTTPField.Name(text) { current = parsed } else { headers[key].error("'\(text)' is not a header name") }
        }
        name("consumer_id", &consumerIDHeader)
        name("consumer_username", &consumerNameHeader)
        name("consumer_groups", &groupsHeader)
        name("scope", &scopeHeader)
        name("anonymous", &anonymousHeader)
    }

    /// The identity field names: whatever a client sends under them is removed.
    var identityNames: [HTTPField.Name] { [consumerIDHeader, consumerNameHeader, groupsHeader, scopeHeader, anonymousHeader] }

    /// A consumer's identity fields, made once per consumer when the config loads.
    func identityFields(_ consumer: Consumer, anonymous: Bool) -> [HTTPField] {
        var fields = [HTTPField(name: consumerIDHeader, value: consumer.id), HTTPField(name: consumerNameHeader, value: consumer.name)]
        if !consumer.groups.isEmpty { fields.append(HTTPField(name: groupsHeader, value: consumer.groups.joined(separator: ", "))) }
        if anonymous { fields.append(HTTPField(name: anonymousHeader, value: "true")) }
        return fields
    }

    /// The identity fields on the upstream request: any the client sent are removed (a client must
    /// never name its own consumer), then the authenticated ones added.
    func apply(_ identity: Identity?, anonymous: Bool, to edits: inout FieldEdits) {
        for name in [consumerIDHeader, consumerNameHeader, groupsHeader, scopeHeader, anonymousHeader] { edits.remove(name) }
        if let consumer = identity?.consumer {
            edits.set(consumerIDHeader, consumer.id)
            edits.set(consumerNameHeader, consumer.name)
            if !consumer.groups.isEmpty { edits.set(groupsHeader, consumer.groups.joined(separator: ", ")) }
        }
        if let scopes = identity?.scopes, !scopes.isEmpty { edits.set(scopeHeader, scopes.joined(separator: " ")) }
        if anonymous { edits.set(anonymousHeader, "true") }
    }
}

/// Attempts by outcome, and failed ones per client address and per credential (bounded: at most
/// `capacity` of each; beyond, new ones are only counted in `untracked`), for logs and metrics. The
/// request's own failure also goes to the access log through the request context.
public final class AuthStatistics: Sendable {
    public let missing = ManagedAtomic<Int>(0)
    public let invalid = ManagedAtomic<Int>(0)
    public let succeeded = ManagedAtomic<Int>(0)
    public let untracked = ManagedAtomic<Int>(0)
    private let failures = Mutex<(byClient: [String: Int], byCredential: [String: Int])>(([:], [:]))
    let capacity = 10_000

    func recordFailure(client: String, credential: String?) {
        let tracked = failures.withLock { state -> Bool in
            var fits = true
            if state.byClient[client] != nil || state.byClient.count < capacity { state.byClient[client, default: 0] += 1 } else { fits = false }
            if let credential {
                if state.byCredential[credential] != nil || state.byCredential.count < capacity {
                    state.byCredential[credential, default: 0] += 1
                } else {
                    fits = false
                }
            }
            return fits
        }
        if !tracked { untracked.wrappingIncrement(ordering: .relaxed) }
    }

    /// The clients and credentials with the most failed attempts, most first.
    public func topFailures(_ count: Int) -> (clients: [(String, Int)], credentials: [(String, Int)]) {
        let (clients, credentials) = failures.withLock { state in (state.byClient, state.byCredential) }
        let topClients: [(String, Int)] = clients.sorted { $0.value > $1.value }.prefix(count).map { ($0.key, $0.value) }
        let topCredentials: [(String, Int)] = credentials.sorted { $0.value > $1.value }.prefix(count).map { ($0.key, $0.value) }
        return (topClients, topCredentials)
    }
}

/// Why the last authentication of a request failed (for the access log).
public struct AuthFailure: Sendable {
    public var plugin: String
    public var reason: String
    public var credential: String?
}

public enum AuthFailureKey: ContextKey { public typealias Value = AuthFailure }

/// The verified token's claims, as text (set by `jwt`; read by `authorize`).
public enum TokenClaimsKey: ContextKey { public typealias Value = [String: String] }

/// An authentication plugin: one method plus what all of them share (anonymous access, identity
/// headers, credential removal, 401 with a challenge and a JSON body that never echoes the secret).
public struct AuthPlugin<Method: AuthenticationMethod>: GatewayPlugin {
    public static var name: String { Method.pluginName }
    public static var phase: PluginPhase { .access }
    public static var priority: Int { Method.priority }
    public static var changesRequest: Bool { true }
    public static var responseHookOnlyAdds: Bool { true }   // no response hook
    public var hasLogHook: Bool { false }
    public var hasResponseHook: Bool { false }
    /// Identity fields and a credential in a header are field edits; only a credential in the query
    /// changes the request itself.
    public var mayChangeRequest: Bool { method.rewritesTarget && !common.forwardCredentials }
    public var requestFieldNames: [HTTPField.Name]? { method.fieldNames }
    public var readsRequestFields: Bool { !method.fieldNames.isEmpty || mayChangeRequest || !fixedCredentialRemoval }
    public var readsRequest: Bool { method.readsRequest || readsRequestFields }
    public var readsClientHead: Bool { method.readsClientHead }
    /// Whether removing the credential needs no look at the request (see `fixedCredentialFields`).
    private var fixedCredentialRemoval: Bool { common.forwardCredentials || method.fixedCredentialFields != nil }

    public struct Configuration: PluginConfiguration {
        public var method: Method?
        public var common: AuthCommonSettings
        public var statistics: AuthStatistics
        public var consumers: ConsumerDirectory

        public init(from config: ConfigNode) {
            consumers = config.diagnostics.consumers
            config.expectMapping(keys: Method.configKeys.union(AuthCommonSettings.keys))
            common = AuthCommonSettings(config: config)
            method = Method(config: config, consumers: config.diagnostics.consumers)
            statistics = config.diagnostics.state.value(for: "auth|statistics|\(config.path)") { AuthStatistics() }
        }
    }

    let method: Method
    let common: AuthCommonSettings
    public let statistics: AuthStatistics
    /// The edits every authenticated request gets (identity names and the credential's fields removed),
    /// and each consumer's identity fields: made once, so a request only copies them.
    let baseEdits: FieldEdits
    /// By consumer: `baseEdits` with its identity fields added.
    let consumerEdits: [ObjectIdentifier: FieldEdits]

    public init(configuration: Configuration) throws {
        guard let method = configuration.method else { throw AuthConfigurationError.invalid }
        self.method = method
        self.common = configuration.common
        self.statistics = configuration.statistics
        var base = FieldEdits()
        for name in configuration.common.identityNames { base.remove(name) }
        if !configuration.common.forwardCredentials, let fixed = method.fixedCredentialFields {
            for name in fixed { base.remove(name) }
        }
        self.baseEdits = base
        var edits: [ObjectIdentifier: FieldEdits] = [:]
        for entry in configuration.consumers.all {
            var consumerEdits = base
            consumerEdits.append(configuration.common.identityFields(entry.consumer, anonymous: false))
            edits[ObjectIdentifier(entry.consumer)] = consumerEdits
        }
        self.consumerEdits = edits
    }

    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        // Another authentication plugin of the route already identified the caller: with anonymous
        // access allowed here, that is enough (Kong's "logical OR" between auth plugins).
        if common.anonymous != nil, context.consumer != nil, !context.isAnonymous { return .proceed }
        return conclude(method.authenticate(request, context: context), request: &request, context: &context)
    }

    func conclude(_ outcome: AuthOutcome, request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        switch outcome {
        case .authenticated(let identity):
            statistics.succeeded.wrappingIncrement(ordering: .relaxed)
            context.consumer = identity.consumer
            context.credential = identity.credential
            context.scopes = identity.scopes
            context.isAnonymous = false
            if !identity.claims.isEmpty { context[TokenClaimsKey.self] = identity.claims }
            context.upstreamFieldEdits = edits(for: identity, request: &request)
            return .proceed
        case .missing:
            statistics.missing.wrappingIncrement(ordering: .relaxed)
            if let anonymous = common.anonymous {
                if context.consumer == nil {
                    context.consumer = anonymous
                    context.isAnonymous = true
                    let common = self.common
                    context.editUpstreamFields { common.apply(Identity(consumer: anonymous, credential: "anonymous"), anonymous: true, to: &$0) }
                }
                return .proceed
            }
            context[AuthFailureKey.self] = AuthFailure(plugin: Self.name, reason: "no credentials", credential: nil)
            context.authFailure = "missing_credentials"
            return .respond(Self.unauthorized("no credentials", challenge: method.challenge(failure: nil), context: context))
        case .invalid(let reason, let credential):
            statistics.invalid.wrappingIncrement(ordering: .relaxed)
            statistics.recordFailure(client: context.clientIP, credential: credential)
            context[AuthFailureKey.self] = AuthFailure(plugin: Self.name, reason: reason, credential: credential)
            context.authFailure = "invalid_credentials"
            return .respond(Self.unauthorized("invalid credentials", challenge: method.challenge(failure: reason), context: context))
        case .unavailable(let reason):
            context[AuthFailureKey.self] = AuthFailure(plugin: Self.name, reason: reason, credential: nil)
            context.authFailure = "provider_unavailable"
            var response = LocalResponse.error(.serviceUnavailable, "authentication unavailable", requestID: context.requestID)
            response.headerFields[.retryAfter] = "1"
            return .respond(response)
        case .pending(let future):
            let plugin = self
            return .pending(future.map { outcome -> RequestContinuation in
                { request, context in plugin.conclude(outcome, request: &request, context: &context) }
            })
        }
    }

    /// The upstream edits for an accepted credential: the prepared ones, the consumer's prepared
    /// identity fields, and only what depends on the request (scopes, a cookie or query credential).
    func edits(for identity: Identity, request: inout HTTPRequest) -> FieldEdits {
        var edits: FieldEdits
        if let consumer = identity.consumer {
            if let prepared = consumerEdits[ObjectIdentifier(consumer)] {
                edits = prepared
            } else {
                edits = baseEdits
                common.apply(identity, anonymous: false, to: &edits)
            }
        } else {
            edits = baseEdits
        }
        if !identity.scopes.isEmpty { edits.set(common.scopeHeader, identity.scopes.joined(separator: " ")) }
        if !common.forwardCredentials && method.fixedCredentialFields == nil {
            method.removeCredential(from: &request, edits: &edits)
        }
        return edits
    }

    /// 401 with the method's challenge and `{"error": ...}`: the same body for a missing and an
    /// unknown credential of a kind, so the answer tells nothing about which keys exist.
    static func unauthorized(_ message: String, challenge: String, context: RequestContext) -> LocalResponse {
        var response = LocalResponse.error(.unauthorized, message, requestID: context.requestID)
        response.headerFields[.wwwAuthenticate] = challenge
        return response
    }
}

enum AuthConfigurationError: Error, CustomStringConvertible {
    case invalid
    var description: String { "invalid authentication settings" }
}

/// Small helpers the methods share.
enum AuthText {
    /// The value of cookie `name` in a request's `Cookie` fields.
    static func cookie(_ name: String, in fields: HTTPFields) -> String? {
        for value in fields[values: .cookie] {
            for pair in value.split(separator: ";") {
                let trimmed = pair.trimmingSpaces
                guard let equals = trimmed.firstIndex(of: "=") else { continue }
                if trimmed[..<equals] == name { return String(trimmed[trimmed.index(after: equals)...]) }
            }
        }
        return nil
    }

    /// The value of query parameter `name` (percent-decoded) in a path with a query.
    static func query(_ name: String, in path: String?) -> String? {
        guard let path, let question = path.firstIndex(of: "?") else { return nil }
        for pair in path[path.index(after: question)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if parts[0] == name { return parts.count == 2 ? String(parts[1]).removingPercentEncodingLeniently : "" }
        }
        return nil
    }

    /// The path with query parameter `name` removed.
    static func removingQuery(_ name: String, from path: String) -> String {
        guard let question = path.firstIndex(of: "?") else { return path }
        let kept = path[path.index(after: question)...].split(separator: "&").filter {
            $0.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0] != name
        }
        return String(path[..<question]) + (kept.isEmpty ? "" : "?" + kept.joined(separator: "&"))
    }

    /// The request's `Cookie` fields without cookie `name`, as edits (nothing when it has no such cookie).
    static func removeCookie(_ name: String, from request: HTTPRequest, edits: inout FieldEdits) {
        let values = request.headerFields[values: .cookie]
        guard values.contains(where: { $0.contains(name + "=") }) else { return }
        var kept: [Substring] = []
        for value in values {
            kept += value.split(separator: ";").map { $0.trimmingSpaces }.filter { pair in
                guard let equals = pair.firstIndex(of: "=") else { return true }
                return pair[..<equals] != name
            }
        }
        if kept.isEmpty { edits.remove(.cookie) } else { edits.set(.cookie, kept.joined(separator: "; ")) }
    }

    /// The credentials after an auth scheme (`Bearer`, `Basic`...), ASCII case-insensitive, without
    /// surrounding spaces; nil for another scheme. Works on the UTF-8 bytes (Foundation's trimming
    /// and `lowercased()` cost tens of thousands of instructions on a token).
    static func credentials(scheme: StaticString, in header: String) -> String? {
        let utf8 = header.utf8
        let length = scheme.utf8CodeUnitCount
        guard utf8.count > length else { return nil }
        var index = utf8.startIndex
        let matches = scheme.withUTF8Buffer { expected -> Bool in
            for byte in expected {
                var candidate = utf8[index]
                if candidate >= UInt8(ascii: "A") && candidate <= UInt8(ascii: "Z") { candidate |= 0x20 }
                var wanted = byte
                if wanted >= UInt8(ascii: "A") && wanted <= UInt8(ascii: "Z") { wanted |= 0x20 }
                if candidate != wanted { return false }
                index = utf8.index(after: index)
            }
            return true
        }
        guard matches, utf8[index] == UInt8(ascii: " ") else { return nil }
        var start = index
        var end = utf8.endIndex
        while start < end && (utf8[start] == UInt8(ascii: " ") || utf8[start] == UInt8(ascii: "\t")) { start = utf8.index(after: start) }
        while end > start {
            let before = utf8.index(before: end)
            guard utf8[before] == UInt8(ascii: " ") || utf8[before] == UInt8(ascii: "\t") else { break }
            end = before
        }
        guard start < end else { return nil }
        return String(header[start..<end])
    }

    /// Compares two byte sequences in time that depends on their length only.
    /// `constantTimeEqual` for bytes in memory (a digest against a stored one): no generic iteration.
    static func constantTimeEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in 0..<a.count { difference |= a[index] ^ b[index] }
        return difference == 0
    }

    static func constantTimeEqual<A: Collection<UInt8>, B: Collection<UInt8>>(_ a: A, _ b: B) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }
}

extension String {
    /// Percent-decoding that leaves malformed escapes as they are.
    var removingPercentEncodingLeniently: String {
        guard utf8.contains(UInt8(ascii: "%")) else { return self }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count)
        var iterator = Array(utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "%"), iterator.count >= 2,
               let high = hexValue(iterator[iterator.startIndex]), let low = hexValue(iterator[iterator.startIndex + 1]) {
                bytes.append(high << 4 | low)
                iterator = iterator.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
