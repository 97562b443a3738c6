import HTTPTypes
import Testing
import TollgateCore
import TollgatePlugins
import Yams

func plugin<P: GatewayPlugin>(_ type: P.Type, _ yaml: String) throws -> P {
    let diagnostics = ConfigDiagnostics()
    let configuration = P.Configuration(from: ConfigNode(node: try Yams.compose(yaml: yaml), diagnostics: diagnostics))
    #expect(diagnostics.errors.isEmpty, "\(diagnostics.errors)")
    return try P(configuration: configuration)
}

@Suite struct PluginTests {
    var context = RequestContext(requestID: "req-1", clientIP: "10.1.2.3")
    var request = HTTPRequest(method: .get, scheme: nil, authority: "api", path: "/users/42?tab=x",
                              headerFields: [HTTPField.Name("X-Secret")!: "s", HTTPField.Name("X-Tenant")!: "acme"])

    init() {
        context.pathParameters = [("id", "42")]
        context.version = "2"
    }

    @Test mutating func headersAddSetRemoveWithVariables() throws {
        let headers = try plugin(HeadersPlugin.self, """
            request:
              remove: [X-Secret]
              set: {X-User: "user-$(path.id)", X-Client: "$(client_ip)", X-Version: "v$(version)", X-Tab: "$(query.tab)"}
              add: {X-Request: "$(request_id)"}
            response:
              set: {X-Tenant-Echo: "$(header.X-Tenant)"}
            """)
        #expect(headers.onRequest(&request, context: &context).isProceed)
        #expect(request.headerFields[HTTPField.Name("X-Secret")!] == nil)
        #expect(request.headerFields[HTTPField.Name("X-User")!] == "user-42")
        #expect(request.headerFields[HTTPField.Name("X-Client")!] == "10.1.2.3")
        #expect(request.headerFields[HTTPField.Name("X-Version")!] == "v2")
        #expect(request.headerFields[HTTPField.Name("X-Tab")!] == "x")
        #expect(request.headerFields[HTTPField.Name("X-Request")!] == "req-1")
        var response = HTTPResponse(status: .ok)
        headers.onResponse(&response, context: &context)
        #expect(response.headerFields[HTTPField.Name("X-Tenant-Echo")!] == "acme")
    }

    @Test mutating func requestTerminationAnswers() throws {
        let termination = try plugin(RequestTerminationPlugin.self, "{status: 410, message: \"gone for good\"}")
        guard case .respond(let response) = termination.onRequest(&request, context: &context) else {
            Issue.record("expected a response")
            return
        }
        #expect(response.status.code == 410)
        #expect(response.body == #"{"message":"gone for good"}"#)
        #expect(response.headerFields[.contentType] == "application/json")
    }

    @Test mutating func requestIDPropagatesOrGenerates() throws {
        let requestID = try plugin(RequestIDPlugin.self, "{header_name: X-Correlation-ID}")
        _ = requestID.onRequest(&request, context: &context)
        #expect(request.headerFields[HTTPField.Name("X-Correlation-ID")!] == "req-1")
        var response = HTTPResponse(status: .ok)
        requestID.onResponse(&response, context: &context)
        #expect(response.headerFields[HTTPField.Name("X-Correlation-ID")!] == "req-1")

        var incoming = request
        incoming.headerFields[HTTPField.Name("X-Correlation-ID")!] = "client-7"
        var context2 = RequestContext(requestID: "gen", clientIP: "1.1.1.1")
        _ = requestID.onRequest(&incoming, context: &context2)
        requestID.onResponse(&response, context: &context2)
        #expect(response.headerFields[HTTPField.Name("X-Correlation-ID")!] == "client-7")

        let untrusting = try plugin(RequestIDPlugin.self, "{header_name: X-Correlation-ID, trust_incoming: false}")
        var context3 = RequestContext(requestID: "gen", clientIP: "1.1.1.1")
        _ = untrusting.onRequest(&incoming, context: &context3)
        #expect(incoming.headerFields[HTTPField.Name("X-Correlation-ID")!] == "gen")
    }

    @Test func chainOrdersByPhaseThenPriority() throws {
        let registry = BuiltinPlugins.registry
        let diagnostics = ConfigDiagnostics()
        let node = ConfigNode(node: try Yams.compose(yaml: "{status: 503}"), diagnostics: diagnostics)
        let termination = try #require(registry["request-termination"]?.build(config: node))
        let headersNode = ConfigNode(node: try Yams.compose(yaml: "{request: {set: {A: b}}}"), diagnostics: diagnostics)
        let headers = try #require(registry["headers"]?.build(config: headersNode))
        let chain = FilterChain(entries: [
            PluginEntry(name: "request-termination", plugin: termination, phase: .access, priority: 2),
            PluginEntry(name: "headers", plugin: headers, phase: .rewrite, priority: 800),
        ])
        #expect(chain.names == ["headers", "request-termination"])
        let merged = FilterChain(layers: [
            [PluginEntry(name: "headers", plugin: headers, phase: .rewrite, priority: 800)],
            [PluginEntry(name: "headers", plugin: termination, phase: .rewrite, priority: 800)],
        ])
        #expect(merged.plugins.count == 1)
        #expect(merged.plugins[0] is RequestTerminationPlugin)   // the more specific layer wins
    }
}

extension RequestDecision {
    var isProceed: Bool { if case .proceed = self { return true }; return false }
}
