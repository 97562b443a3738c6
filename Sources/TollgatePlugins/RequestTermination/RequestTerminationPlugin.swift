import HTTPTypes
import TollgateCore

/// Answers every request of its route with a fixed status and body (maintenance windows, retired
/// endpoints), before authentication and the upstream.
public struct RequestTerminationPlugin: GatewayPlugin {
    public static let name = "request-termination"
    public static let phase = PluginPhase.access
    public static let priority = 2
    public static let changesRequest = false
    public static let responseHookOnlyAdds = true   // it has no response hook
    public var readsRequestFields: Bool { false }
    public var hasLogHook: Bool { false }
    public var hasResponseHook: Bool { false }

    public struct Configuration: PluginConfiguration {
        public var status: Int = 503
        public var body: String?
        public var message: String?
        public var contentType = "application/json"
        public var headers: [(String, String)] = []

        public init(from config: ConfigNode) {
            config.expectMapping(keys: ["status", "body", "message", "content_type", "headers"])
            status = config["status"].int(range: 100...599) ?? 503
            body = config["body"].string()
            message = config["message"].string()
            if body != nil && message != nil { config["message"].error("give either body or message, not both") }
            contentType = config["content_type"].string() ?? (body == nil ? "application/json" : "text/plain")
            for (name, value) in config["headers"].entries() ?? [] {
                guard HTTPField.Name(name) != nil else { value.error("'\(name)' is not a header name"); continue }
                if let text = value.string(required: true) { headers.append((name, text)) }
            }
        }
    }

    let response: LocalResponse

    public init(configuration: Configuration) {
        let status = HTTPResponse.Status(code: configuration.status)
        var fields = HTTPFields()
        for (name, value) in configuration.headers { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        let body = configuration.body
            ?? #"{"message":"# + JSONText.quote(configuration.message ?? status.reasonPhrase) + "}"
        response = LocalResponse(status: status, headerFields: fields, body: body, contentType: configuration.contentType)
    }

    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        .respond(response)
    }
}
