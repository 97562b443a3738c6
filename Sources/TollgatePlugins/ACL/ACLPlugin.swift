import HTTPTypes
import TollgateCore

/// `acl` (RBAC): lets a route's consumers in by their groups. `allow` admits only consumers in one of
/// the listed groups; `deny` refuses consumers in any of them. It runs after the authentication
/// plugins: without an identified consumer the answer is 401; a known consumer without permission
/// gets 403. The anonymous consumer of an optional authentication has its own groups, so
/// `deny: [guests]` (say) closes a route to it.
public struct ACLPlugin: GatewayPlugin {
    public static let name = "acl"
    public static let phase = PluginPhase.access
    public static let priority = 950
    public static let changesRequest = false
    public static let responseHookOnlyAdds = true
    public var readsRequestFields: Bool { false }
    public var readsRequest: Bool { false }   // the consumer is in the context
    public var hasLogHook: Bool { false }
    public var hasResponseHook: Bool { false }

    public struct Configuration: PluginConfiguration {
        public var allow: Set<String> = []
        public var deny: Set<String> = []

        public init(from config: ConfigNode) {
            config.expectMapping(keys: ["allow", "deny"])
            allow = Set(config["allow"].strings() ?? [])
            deny = Set(config["deny"].strings() ?? [])
            if allow.isEmpty && deny.isEmpty { config.error("give allow or deny (a list of consumer groups)") }
            if !allow.isEmpty && !deny.isEmpty { config["deny"].error("give allow or deny, not both") }
        }
    }

    let configuration: Configuration

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        guard let consumer = context.consumer else {
            context.authFailure = "missing_credentials"
            var response = LocalResponse.error(.unauthorized, "no credentials", requestID: context.requestID)
            response.headerFields[.wwwAuthenticate] = #"Key realm="tollgate""#
            return .respond(response)
        }
        let allowed: Bool
        if !configuration.allow.isEmpty {
            allowed = consumer.groups.contains { configuration.allow.contains($0) }
        } else {
            allowed = !consumer.groups.contains { configuration.deny.contains($0) }
        }
        guard allowed else {
            context[AuthFailureKey.self] = AuthFailure(plugin: Self.name, reason: "group not allowed", credential: context.credential)
            context.authFailure = "forbidden"
            return .respond(LocalResponse.error(.forbidden, "consumer is not allowed on this route", requestID: context.requestID))
        }
        return .proceed
    }
}
