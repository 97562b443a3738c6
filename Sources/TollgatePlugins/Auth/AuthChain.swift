import HTTPTypes
import NIOCore
import TollgateCore

/// `auth`: several authentication methods on one route. `mode: any` lets in the first method that
/// succeeds (a wrong credential of one method does not stop another's right one); `mode: all` needs
/// every method to succeed, for the same consumer. With `anonymous`, a request with no credential of
/// any method becomes that consumer (`any` only). A refusal carries one challenge per method.
///
/// ```yaml
/// - name: auth
///   config:
///     mode: any
///     methods:
///       - {name: jwt, config: {jwks_file: /etc/tollgate/jwks.json, issuer: "https://idp"}}
///       - {name: key-auth}
/// ```
public struct AuthChainPlugin: GatewayPlugin {
    public static let name = "auth"
    public static let phase = PluginPhase.access
    public static let priority = 1500
    public static let changesRequest = true
    public static let responseHookOnlyAdds = true
    public var hasLogHook: Bool { false }
    public var hasResponseHook: Bool { false }
    public var mayChangeRequest: Bool {
        !configuration.common.forwardCredentials && configuration.methods.contains { $0.method.rewritesTarget }
    }
    public var readsClientHead: Bool { configuration.methods.contains { $0.method.readsClientHead } }
    public var requestFieldNames: [HTTPField.Name]? {
        var names: [HTTPField.Name] = []
        for entry in configuration.methods { for name in entry.method.fieldNames where !names.contains(name) { names.append(name) } }
        return names
    }

    public enum Mode: String, Sendable {
        case any
        case all
    }

    /// The methods the chain can name, by plugin name.
    static let methods: [String: @Sendable (ConfigNode, ConsumerDirectory) -> (any AuthenticationMethod)?] = [
        KeyAuthMethod.pluginName: { KeyAuthMethod(config: $0, consumers: $1) },
        BasicAuthMethod.pluginName: { BasicAuthMethod(config: $0, consumers: $1) },
        JWTMethod.pluginName: { JWTMethod(config: $0, consumers: $1) },
        DigestAuthMethod.pluginName: { DigestAuthMethod(config: $0, consumers: $1) },
        OAuth2Method.pluginName: { OAuth2Method(config: $0, consumers: $1) },
        MTLSMethod.pluginName: { MTLSMethod(config: $0, consumers: $1) },
    ]

    public struct Configuration: PluginConfiguration {
        public var mode = Mode.any
        public var methods: [(name: String, method: any AuthenticationMethod)] = []
        public var common: AuthCommonSettings
        public var statistics: AuthStatistics

        public init(from config: ConfigNode) {
            config.expectMapping(keys: AuthCommonSettings.keys.union(["mode", "methods"]))
            common = AuthCommonSettings(config: config)
            statistics = config.diagnostics.state.value(for: "auth|statistics|\(config.path)") { AuthStatistics() }
            if let text = config["mode"].string() {
                if let parsed = Mode(rawValue: text) { mode = parsed } else { config["mode"].error("expected any or all") }
            }
            for item in config["methods"].elements(required: true) ?? [] {
                guard item.expectMapping(keys: ["name", "config"], required: true), let name = item["name"].string(required: true) else { continue }
                guard let make = AuthChainPlugin.methods[name] else {
                    item["name"].error("unknown authentication method '\(name)' (known: \(AuthChainPlugin.methods.keys.sorted().joined(separator: ", ")))")
                    continue
                }
                let methodConfig = item["config"]
                if let method = make(methodConfig, config.diagnostics.consumers) {
                    methods.append((name, method))
                }
            }
            if config["methods"].isPresent && methods.isEmpty { config["methods"].error("list at least one method") }
            if mode == .all && common.anonymous != nil { config["anonymous"].error("anonymous access needs mode any") }
        }
    }

    let configuration: Configuration

    public init(configuration: Configuration) throws {
        guard !configuration.methods.isEmpty else { throw AuthConfigurationError.invalid }
        self.configuration = configuration
    }

    public var statistics: AuthStatistics { configuration.statistics }

    /// What the chain has found so far.
    struct Progress: Sendable {
        var identities: [Identity] = []
        var failure: (reason: String, credential: String?)?
        var unavailable: String?
    }

    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        decide(step(0, Progress(), request: request, context: context), request: &request, context: &context)
    }

    /// Runs the methods from `index` on; a method that must wait makes the rest wait with it.
    enum Step: Sendable {
        case done(Progress)
        case pending(EventLoopFuture<Progress>)
    }

    func step(_ index: Int, _ progress: Progress, request: HTTPRequest, context: RequestContext) -> Step {
        var progress = progress
        var index = index
        while index < configuration.methods.count {
            if configuration.mode == .any && !progress.identities.isEmpty { break }
            switch configuration.methods[index].method.authenticate(request, context: context) {
            case .authenticated(let identity): progress.identities.append(identity)
            case .missing: if configuration.mode == .all { progress.failure = progress.failure ?? ("no credentials", nil) }
            case .invalid(let reason, let credential): progress.failure = progress.failure ?? (reason, credential)
            case .unavailable(let reason): progress.unavailable = progress.unavailable ?? reason
            case .pending(let future):
                let next = index + 1
                let plugin = self
                let sofar = progress
                return .pending(future.flatMap { outcome -> EventLoopFuture<Progress> in
                    var resumed = sofar
                    switch outcome {
                    case .authenticated(let identity): resumed.identities.append(identity)
                    case .invalid(let reason, let credential): resumed.failure = resumed.failure ?? (reason, credential)
                    case .unavailable(let reason): resumed.unavailable = resumed.unavailable ?? reason
                    case .missing: if plugin.configuration.mode == .all { resumed.failure = resumed.failure ?? ("no credentials", nil) }
                    case .pending: resumed.unavailable = "authentication waited twice"
                    }
                    switch plugin.step(next, resumed, request: request, context: context) {
                    case .done(let final): return future.eventLoop.makeSucceededFuture(final)
                    case .pending(let later): return later
                    }
                })
            }
            index += 1
        }
        return .done(progress)
    }

    func decide(_ step: Step, request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        switch step {
        case .pending(let future):
            let plugin = self
            return .pending(future.map { progress -> RequestContinuation in
                { request, context in plugin.decide(.done(progress), request: &request, context: &context) }
            })
        case .done(let progress):
            return conclude(progress, request: &request, context: &context)
        }
    }

    private func conclude(_ progress: Progress, request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        let common = configuration.common
        let succeeded: Identity?
        switch configuration.mode {
        case .any:
            succeeded = progress.identities.first
        case .all:
            let consumers = Set(progress.identities.compactMap { $0.consumer?.name })
            if progress.failure == nil, progress.identities.count == configuration.methods.count, consumers.count <= 1 {
                var scopes: [String] = []
                for identity in progress.identities { for scope in identity.scopes where !scopes.contains(scope) { scopes.append(scope) } }
                succeeded = Identity(consumer: progress.identities.lazy.compactMap(\.consumer).first,
                                     credential: progress.identities.map(\.credential).joined(separator: "+"), scopes: scopes)
            } else {
                succeeded = nil
            }
        }
        if let identity = succeeded {
            statistics.succeeded.wrappingIncrement(ordering: .relaxed)
            context.consumer = identity.consumer
            context.credential = identity.credential
            context.scopes = identity.scopes
            context.isAnonymous = false
            var claims: [String: String] = [:]
            for found in progress.identities { claims.merge(found.claims) { first, _ in first } }
            if !claims.isEmpty { context[TokenClaimsKey.self] = claims }
            let methods = configuration.methods
            context.editUpstreamFields { edits in
                common.apply(identity, anonymous: false, to: &edits)
                if !common.forwardCredentials { for entry in methods { entry.method.removeCredential(from: &request, edits: &edits) } }
            }
            return .proceed
        }
        if let reason = progress.unavailable {
            context[AuthFailureKey.self] = AuthFailure(plugin: Self.name, reason: reason, credential: nil)
            var response = LocalResponse.error(.serviceUnavailable, "authentication unavailable", requestID: context.requestID)
            response.headerFields[.retryAfter] = "1"
            return .respond(response)
        }
        if progress.failure == nil, configuration.mode == .any, let anonymous = common.anonymous {
            statistics.missing.wrappingIncrement(ordering: .relaxed)
            context.consumer = anonymous
            context.isAnonymous = true
            context.editUpstreamFields { common.apply(Identity(consumer: anonymous, credential: "anonymous"), anonymous: true, to: &$0) }
            return .proceed
        }
        let failure = progress.failure ?? (progress.identities.isEmpty ? ("no credentials", nil) : ("credentials name different consumers", nil))
        if failure.reason == "no credentials" {
            statistics.missing.wrappingIncrement(ordering: .relaxed)
        } else {
            statistics.invalid.wrappingIncrement(ordering: .relaxed)
            statistics.recordFailure(client: context.clientIP, credential: failure.credential)
        }
        context[AuthFailureKey.self] = AuthFailure(plugin: Self.name, reason: failure.reason, credential: failure.credential)
        let missing = failure.reason == "no credentials"
        context.authFailure = missing ? "missing_credentials" : "invalid_credentials"
        var response = LocalResponse.error(.unauthorized, missing ? "no credentials" : "invalid credentials", requestID: context.requestID)
        for entry in configuration.methods {
            response.headerFields.append(HTTPField(name: .wwwAuthenticate, value: entry.method.challenge(failure: missing ? nil : failure.reason)))
        }
        return .respond(response)
    }
}
