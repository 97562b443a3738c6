import HTTPTypes
import TollgateCore

/// Adds, sets and removes request and response headers. Values may use `$(route)`, `$(service)`,
/// `$(path.NAME)`, `$(query.NAME)`, `$(header.NAME)`, `$(client_ip)`, `$(version)` and
/// `$(request_id)`, resolved per request; templates are parsed once at load time.
public struct HeadersPlugin: GatewayPlugin {
    public static let name = "headers"
    public static let phase = PluginPhase.rewrite
    public static let priority = 800

    public struct Configuration: PluginConfiguration {
        public var request = Transform()
        public var response = Transform()

        public init(from config: ConfigNode) {
            config.expectMapping(keys: ["request", "response"], required: true)
            request = Transform(from: config["request"])
            response = Transform(from: config["response"])
            if !config["request"].isPresent && !config["response"].isPresent { config.error("give request or response changes") }
        }
    }

    /// One direction's changes, applied as remove, then set, then add.
    public struct Transform: Sendable {
        public var remove: [HTTPField.Name] = []
        public var set: [(HTTPField.Name, ValueTemplate)] = []
        public var add: [(HTTPField.Name, ValueTemplate)] = []

        init() {}

        init(from node: ConfigNode) {
            node.expectMapping(keys: ["add", "set", "remove"])
            for item in node["remove"].elements() ?? [] {
                guard let text = item.string(required: true) else { continue }
                if let name = HTTPField.Name(text) { remove.append(name) } else { item.error("'\(text)' is not a header name") }
            }
            set = Self.fields(node["set"])
            add = Self.fields(node["add"])
        }

        static func fields(_ node: ConfigNode) -> [(HTTPField.Name, ValueTemplate)] {
            var result: [(HTTPField.Name, ValueTemplate)] = []
            for (key, value) in node.entries() ?? [] {
                guard let name = HTTPField.Name(key) else { value.error("'\(key)' is not a header name"); continue }
                guard let text = value.string(required: true) else { continue }
                do throws(ValueTemplate.ParseError) {
                    result.append((name, try ValueTemplate(parsing: text)))
                } catch {
                    value.error(error.description)
                }
            }
            return result
        }

        func apply(to fields: inout HTTPFields, request: HTTPRequest?, context: RequestContext) {
            for name in remove { fields[name] = nil }
            for (name, template) in set { fields[name] = template.render(request: request, context: context) }
            for (name, template) in add { fields.append(HTTPField(name: name, value: template.render(request: request, context: context))) }
        }
    }

    /// The request's headers as it arrived, for `$(header.NAME)` in response templates.
    enum OriginalRequest: ContextKey { typealias Value = HTTPRequest }

    let configuration: Configuration
    public var hasLogHook: Bool { false }
    let responseNeedsRequest: Bool

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.responseNeedsRequest = (configuration.response.set + configuration.response.add).contains { $0.1.readsRequest }
    }

    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        if responseNeedsRequest { context[OriginalRequest.self] = request }
        let original = request
        configuration.request.apply(to: &request.headerFields, request: original, context: context)
        return .proceed
    }

    public func onResponse(_ response: inout HTTPResponse, context: inout RequestContext) {
        configuration.response.apply(to: &response.headerFields, request: context[OriginalRequest.self], context: context)
    }
}

/// A header value with `$(...)` variables.
public struct ValueTemplate: Sendable {
    enum Part: Sendable {
        case literal(String)
        case route, service, clientIP, version, requestID
        case pathParameter(String)
        case query(String)
        case header(HTTPField.Name)
    }

    let parts: [Part]

    var readsRequest: Bool {
        parts.contains { if case .header = $0 { return true }; if case .query = $0 { return true }; return false }
    }

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    public init(parsing text: String) throws(ParseError) {
        var parts: [Part] = []
        var rest = Substring(text)
        while let open = rest.range(of: "$(") {
            if open.lowerBound > rest.startIndex { parts.append(.literal(String(rest[..<open.lowerBound]))) }
            guard let close = rest[open.upperBound...].firstIndex(of: ")") else {
                throw ParseError(description: "unterminated $( in '\(text)'")
            }
            let name = String(rest[open.upperBound..<close])
            switch name {
            case "route": parts.append(.route)
            case "service": parts.append(.service)
            case "client_ip": parts.append(.clientIP)
            case "version": parts.append(.version)
            case "request_id": parts.append(.requestID)
            case _ where name.hasPrefix("path.") && name.count > 5: parts.append(.pathParameter(String(name.dropFirst(5))))
            case _ where name.hasPrefix("query.") && name.count > 6: parts.append(.query(String(name.dropFirst(6))))
            case _ where name.hasPrefix("header."):
                guard let field = HTTPField.Name(String(name.dropFirst(7))) else {
                    throw ParseError(description: "'\(name)' does not name a header")
                }
                parts.append(.header(field))
            default:
                throw ParseError(description: "unknown variable $(\(name)); known: route, service, client_ip, version, request_id, path.NAME, query.NAME, header.NAME")
            }
            rest = rest[rest.index(after: close)...]
        }
        if !rest.isEmpty { parts.append(.literal(String(rest))) }
        self.parts = parts
    }

    func render(request: HTTPRequest?, context: RequestContext) -> String {
        if parts.count == 1, case .literal(let text) = parts[0] { return text }
        var result = ""
        for part in parts {
            switch part {
            case .literal(let text): result += text
            case .route: result += context.route?.name ?? ""
            case .service: result += context.route?.serviceName ?? ""
            case .clientIP: result += context.clientIP
            case .version: result += context.version ?? ""
            case .requestID: result += context.requestID
            case .pathParameter(let name): result += context.pathParameter(name) ?? ""
            case .query(let name):
                let query = request?.path.flatMap { path in path.firstIndex(of: "?").map { path[path.index(after: $0)...] } }
                result += QueryString.value(of: name, in: query) ?? ""
            case .header(let name): result += request?.headerFields[name] ?? ""
            }
        }
        // Header values cannot carry line breaks.
        return String(result.unicodeScalars.filter { $0 != "\r" && $0 != "\n" && $0 != "\0" })
    }
}
