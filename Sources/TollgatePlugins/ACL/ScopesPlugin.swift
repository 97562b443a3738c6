import HTTPTypes
import TollgateCore

/// `scopes`: the OAuth scopes a request needs, per method (`GET: [orders.read]`), with `"*"` for
/// every method not listed. The scopes come from the authenticated credential (JWT `scope`/`scp`).
/// Missing credentials: 401; a credential without a needed scope: 403 with
/// `WWW-Authenticate: Bearer error="insufficient_scope", scope="..."` (RFC 6750).
public struct ScopesPlugin: GatewayPlugin {
    public static let name = "scopes"
    public static let phase = PluginPhase.access
    public static let priority = 940
    public static let changesRequest = false
    public static let responseHookOnlyAdds = true
    public var readsRequestFields: Bool { false }
    public var hasLogHook: Bool { false }
    public var hasResponseHook: Bool { false }

    public struct Configuration: PluginConfiguration {
        public var byMethod: [String: [String]] = [:]
        public var fallback: [String]?

        public init(from config: ConfigNode) {
            guard let entries = config.entries(required: true) else { return }
            for (method, list) in entries {
                guard let scopes = list.strings(required: true) else { continue }
                if method == "*" {
                    fallback = scopes
                } else if HTTPRequest.Method(method) != nil, method == method.uppercased() {
                    byMethod[method] = scopes
                } else {
                    list.error("'\(method)' is not an HTTP method (or \"*\")")
                }
            }
        }
    }

    let configuration: Configuration

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        guard let needed = configuration.byMethod[request.method.rawValue] ?? configuration.fallback, !needed.isEmpty else {
            return .proceed
        }
        guard context.consumer != nil || context.credential != nil, !context.isAnonymous else {
            context.authFailure = "missing_credentials"
            var response = LocalResponse.error(.unauthorized, "no credentials", requestID: context.requestID)
            response.headerFields[.wwwAuthenticate] = #"Bearer realm="tollgate""#
            return .respond(response)
        }
        let missing = needed.filter { !context.scopes.contains($0) }
        guard missing.isEmpty else {
            context[AuthFailureKey.self] = AuthFailure(plugin: Self.name, reason: "insufficient scope", credential: context.credential)
            context.authFailure = "insufficient_scope"
            var response = LocalResponse.error(.forbidden, "insufficient scope", requestID: context.requestID,
                                               extra: [("required_scopes", "[" + needed.map(JSONText.quote).joined(separator: ",") + "]")])
            response.headerFields[.wwwAuthenticate] = #"Bearer realm="tollgate", error="insufficient_scope", scope="\#(needed.joined(separator: " "))""#
            return .respond(response)
        }
        return .proceed
    }
}
