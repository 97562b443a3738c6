import HTTPTypes
import NIOCore

/// The plugins of one route, resolved (route > service > global for the same name) and ordered:
/// by phase, then by priority (higher first) for requests; the reverse for responses.
public struct FilterChain: Sendable {
    public let plugins: [any GatewayPlugin]
    public let names: [String]
    /// Some plugin's request hook may change the request (else the client's head is forwarded as is).
    public let changesRequest: Bool
    /// Every response hook only adds fields (so hooks need not see the upstream's fields).
    public let responseHooksOnlyAdd: Bool
    /// Some request hook reads or changes the request's header fields.
    public let readsRequestFields: Bool
    /// Some request hook reads or changes the request (else the hooks get `HTTPRequest.placeholder`).
    public let readsRequest: Bool
    /// Some request hook reads `RequestContext.clientHead` (and none changes the request).
    public let readsClientHead: Bool
    /// Some plugin has a log hook.
    public let hasLogHooks: Bool
    /// Some plugin has a request hook (else the request goes upstream without building one).
    public let hasRequestHooks: Bool
    /// A log hook reads per-plugin timings: every hook is timed.
    public let timesPlugins: Bool
    /// A log hook reads the upstream attempts (of sampled requests).
    public let recordsUpstreamAttempts: Bool
    /// When every response hook reads and changes only named fields (or only adds fields): the names
    /// (see `GatewayPlugin.responseFieldNames`). Nil: the hooks need every field.
    public let responseFieldNames: [HTTPField.Name]?
    /// Some hook sends requests of its own (`RequestContext.subrequests`).
    public let wantsSubrequests: Bool
    /// Starts each request's trace context (the tracing plugin's `begin`), if the route has a tracer.
    /// A closure around the plugin, like the log hooks: an optional existential is copied and
    /// destroyed through value witnesses, on every request, just to see that it is nil.
    public let beginTrace: (@Sendable (_ traceparent: String?, _ tracestate: String?, _ context: inout RequestContext) -> Void)?
    /// When every hook that reads fields reads only named ones (and none changes the request): those
    /// names. Nil: all fields.
    public let requestFieldNames: [HTTPField.Name]?
    /// The plugins with a response hook, last on the way in first: the response phase runs only these.
    let responders: [any GatewayPlugin]
    /// The log hooks, each a closure around its plugin's concrete type: calling one neither copies
    /// nor opens an existential (which retains and releases the plugin's box on every request).
    let logHooks: [@Sendable (RequestContext, RequestSummary) -> Void]
    /// Each responder's index in `plugins` (where its timing goes).
    let responderIndices: [Int]
    /// By plugin index: whether every other plugin's response hook only adds fields (so an answer
    /// that plugin made can be written from fields it rendered before, with what the others add).
    let othersOnlyAdd: [Bool]

    public static let empty = FilterChain(entries: [])

    public init(entries: [PluginEntry]) {
        let ordered = entries.enumerated().sorted { a, b in
            if a.element.phase != b.element.phase { return a.element.phase < b.element.phase }
            if a.element.priority != b.element.priority { return a.element.priority > b.element.priority }
            return a.offset < b.offset
        }.map(\.element)
        self.plugins = ordered.map(\.plugin)
        self.names = ordered.map(\.name)
        self.changesRequest = ordered.contains { $0.plugin.mayChangeRequest }
        self.responseHooksOnlyAdd = ordered.allSatisfy { type(of: $0.plugin).responseHookOnlyAdds }
        self.readsRequestFields = ordered.contains { $0.plugin.mayChangeRequest || $0.plugin.readsRequestFields }
        self.readsRequest = ordered.contains {
            $0.plugin.hasRequestHook && ($0.plugin.mayChangeRequest || $0.plugin.readsRequest)
        }
        self.readsClientHead = !changesRequest && ordered.contains { $0.plugin.hasRequestHook && $0.plugin.readsClientHead }
        self.hasLogHooks = ordered.contains { $0.plugin.hasLogHook }
        self.hasRequestHooks = ordered.contains { $0.plugin.hasRequestHook }
        // Timing only matters where some hook runs.
        self.timesPlugins = ordered.contains { $0.plugin.wantsPluginTimings }
            && ordered.contains { $0.plugin.hasRequestHook || $0.plugin.hasResponseHook }
        if let tracer = ordered.lazy.compactMap(\.plugin.requestTracer).first {
            self.beginTrace = { traceparent, tracestate, context in
                tracer.begin(traceparent: traceparent, tracestate: tracestate, context: &context)
            }
        } else {
            self.beginTrace = nil
        }
        self.recordsUpstreamAttempts = ordered.contains { $0.plugin.wantsUpstreamAttempts }
        self.wantsSubrequests = ordered.contains { $0.plugin.wantsSubrequests }
        self.logHooks = ordered.map(\.plugin).filter(\.hasLogHook).map(\.logHook)
        self.responderIndices = ordered.indices.reversed().filter { ordered[$0].plugin.hasResponseHook }
        var names: [HTTPField.Name]? = []
        for entry in ordered where entry.plugin.mayChangeRequest || entry.plugin.readsRequestFields {
            guard !entry.plugin.mayChangeRequest, let wanted = entry.plugin.requestFieldNames else { names = nil; break }
            for name in wanted where !names!.contains(name) { names!.append(name) }
        }
        self.requestFieldNames = names
        self.responders = ordered.reversed().map(\.plugin).filter(\.hasResponseHook)
        var responseNames: [HTTPField.Name]? = []
        for plugin in ordered.map(\.plugin) where plugin.hasResponseHook && !type(of: plugin).responseHookOnlyAdds {
            guard let wanted = plugin.responseFieldNames else { responseNames = nil; break }
            for name in wanted where !responseNames!.contains(name) { responseNames!.append(name) }
        }
        self.responseFieldNames = responseNames
        let adds = ordered.map { !$0.plugin.hasResponseHook || type(of: $0.plugin).responseHookOnlyAdds }
        self.othersOnlyAdd = ordered.indices.map { index in adds.indices.allSatisfy { $0 == index || adds[$0] } }
    }

    /// Merges plugin lists from least to most specific; a later list replaces an earlier entry of the
    /// same name.
    public init(layers: [[PluginEntry]]) {
        var byName: [String: PluginEntry] = [:]
        var order: [String] = []
        for layer in layers {
            for entry in layer {
                if byName[entry.name] == nil { order.append(entry.name) }
                byName[entry.name] = entry
            }
        }
        self.init(entries: order.compactMap { byName[$0] })
    }

    public var isEmpty: Bool { plugins.isEmpty }

    /// Where a request stopped in the chain.
    public enum RequestOutcome: Sendable {
        case proceed
        /// Plugin `index` answered.
        case respond(LocalResponse, index: Int)
        /// Plugin `index` suspended: run `work`, then resume with `resume(after: index, ...)`.
        case suspend(index: Int, work: @Sendable (inout HTTPRequest, inout RequestContext) async throws -> RequestDecision)
        /// Plugin `index` waits for `future`; run its continuation, then go on after `index`.
        case pending(index: Int, future: EventLoopFuture<RequestContinuation>)
        /// Plugin `index` wants the body: read it (up to `maxBytes`), run `then` with it, go on after `index`.
        case readBody(index: Int, maxBytes: Int, then: RequestBodyContinuation)
    }

    /// Runs the request hooks from `start` until one answers or suspends.
    public func runRequest(_ request: inout HTTPRequest, context: inout RequestContext, from start: Int = 0) -> RequestOutcome {
        if timesPlugins { return runRequestTimed(&request, context: &context, from: start) }
        var index = start
        while index < plugins.count {
            switch plugins[index].onRequest(&request, context: &context) {
            case .proceed: index += 1
            case .respond(let response): return .respond(response, index: index)
            case .suspend(let work): return .suspend(index: index, work: work)
            case .pending(let future): return .pending(index: index, future: future)
            case .readBody(let maxBytes, let then): return .readBody(index: index, maxBytes: maxBytes, then: then)
            }
        }
        return .proceed
    }

    /// `runRequest` with each hook's time added to `context.pluginTimings`.
    private func runRequestTimed(_ request: inout HTTPRequest, context: inout RequestContext, from start: Int) -> RequestOutcome {
        if context.pluginTimings == nil { context.pluginTimings = Array(repeating: 0, count: plugins.count) }
        var index = start
        var before = NIODeadline.now().uptimeNanoseconds
        while index < plugins.count {
            let decision = plugins[index].onRequest(&request, context: &context)
            let after = NIODeadline.now().uptimeNanoseconds
            context.pluginTimings![index] &+= after &- before
            before = after
            switch decision {
            case .proceed: index += 1
            case .respond(let response): return .respond(response, index: index)
            case .suspend(let work): return .suspend(index: index, work: work)
            case .pending(let future): return .pending(index: index, future: future)
            case .readBody(let maxBytes, let then): return .readBody(index: index, maxBytes: maxBytes, then: then)
            }
        }
        return .proceed
    }

    /// Runs the response hooks, lowest priority first (so the first plugin on the way in is the last on
    /// the way out).
    public func runResponse(_ response: inout HTTPResponse, context: inout RequestContext) {
        if timesPlugins {
            if context.pluginTimings == nil { context.pluginTimings = Array(repeating: 0, count: plugins.count) }
            var before = NIODeadline.now().uptimeNanoseconds
            for (plugin, index) in zip(responders, responderIndices) {
                plugin.onResponse(&response, context: &context)
                let after = NIODeadline.now().uptimeNanoseconds
                context.pluginTimings![index] &+= after &- before
                before = after
            }
            return
        }
        for plugin in responders { plugin.onResponse(&response, context: &context) }
    }

    /// Whether an answer plugin `index` made may be written from its pre-rendered fields: every other
    /// response hook only adds fields.
    public func othersOnlyAddFields(besides index: Int) -> Bool {
        index >= 0 && index < othersOnlyAdd.count && othersOnlyAdd[index] && !timesPlugins
    }

    /// The fields the response hooks of every plugin but `index` add (see `othersOnlyAddFields`).
    public func responseFieldsToAdd(context: inout RequestContext, besides index: Int) -> [HTTPField] {
        var added: [HTTPField] = []
        for (plugin, pluginIndex) in zip(responders, responderIndices) where pluginIndex != index {
            added += plugin.responseFieldsToAdd(context: &context)
        }
        return added
    }

    /// The fields the response hooks add, in the order `runResponse` would add them (for chains
    /// whose hooks only add fields).
    public func responseFieldsToAdd(context: inout RequestContext) -> [HTTPField] {
        if responders.isEmpty { return [] }
        if timesPlugins {
            var response = HTTPResponse(status: .ok)
            runResponse(&response, context: &context)
            return Array(response.headerFields)
        }
        if responders.count == 1 { return responders[0].responseFieldsToAdd(context: &context) }
        var added: [HTTPField] = []
        for plugin in responders { added += plugin.responseFieldsToAdd(context: &context) }
        return added
    }

    /// `responseFieldsToAdd(context:)` written as header lines (the proxied response's head).
    public func writeResponseFields(context: inout RequestContext, into lines: inout HeaderLines) {
        if responders.isEmpty { return }
        if timesPlugins {
            for field in responseFieldsToAdd(context: &context) { lines.add(field) }
            return
        }
        for plugin in responders { plugin.writeResponseFields(context: &context, into: &lines) }
    }

    /// Runs the log hooks. `context` is inout only so a caller holding it in a class passes it without
    /// a copy; the hooks cannot change it.
    public func runLog(context: inout RequestContext, summary: RequestSummary) {
        for hook in logHooks { hook(context, summary) }
    }
}

extension HTTPRequest {
    /// What request hooks get when none of a route's reads the request (`GatewayPlugin.readsRequest`):
    /// `GET /` without fields, made once.
    public static let placeholder = HTTPRequest(method: .get, scheme: nil, authority: nil, path: "/")
}

extension GatewayPlugin {
    /// `onLog` as a closure over this plugin's concrete type (see `FilterChain.logHooks`).
    var logHook: @Sendable (RequestContext, RequestSummary) -> Void {
        { context, summary in self.onLog(context: context, summary: summary) }
    }
}
