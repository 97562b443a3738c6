import HTTPTypes
import TollgateCore

/// Puts the request's id in a header of your choice, on the way up and on the way back. The server
/// always assigns `context.requestID` (propagated from `X-Request-ID` when the client sent a sane one,
/// generated otherwise); this plugin names a different header (`X-Correlation-ID`), decides whether
/// a client's id is trusted, and whether it is echoed to the client.
public struct RequestIDPlugin: GatewayPlugin {
    public static let name = "request-id"
    public static let phase = PluginPhase.rewrite
    public static let priority = 100_000

    public struct Configuration: PluginConfiguration {
        public var header = HTTPField.Name("X-Request-ID")!
        public var echoDownstream = true
        /// When false, a client's own id in `header` is replaced by the gateway's.
        public var trustIncoming = true

        public init(from config: ConfigNode) {
            config.expectMapping(keys: ["header_name", "echo_downstream", "trust_incoming"])
            if let name = config["header_name"].string() {
                if let field = HTTPField.Name(name) { header = field } else { config["header_name"].error("not a header name") }
            }
            echoDownstream = config["echo_downstream"].bool() ?? true
            trustIncoming = config["trust_incoming"].bool() ?? true
        }
    }

    /// The id this plugin settled on, for the response hook.
    public enum Assigned: ContextKey { public typealias Value = String }

    let configuration: Configuration
    public var hasLogHook: Bool { false }

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        let id: String
        if configuration.trustIncoming, let incoming = request.headerFields[configuration.header],
           RequestIDPlugin.isAcceptable(incoming) {
            id = incoming
        } else {
            id = context.requestID
            request.headerFields[configuration.header] = id
        }
        context[Assigned.self] = id
        return .proceed
    }

    public func onResponse(_ response: inout HTTPResponse, context: inout RequestContext) {
        guard configuration.echoDownstream, let id = context[Assigned.self] else { return }
        response.headerFields[configuration.header] = id
    }

    /// Ids are echoed into logs and headers: printable ASCII, bounded length.
    public static func isAcceptable(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 200 && id.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }
}
