import HTTPTypes
import Logging
import TollgateCore
import TollgateObservability
import Tracing

/// `opentelemetry`: W3C Trace Context for every request and OTLP/HTTP spans for the sampled ones.
///
/// Every request gets a trace id (the caller's, or a new one) and a span id, and the upstream
/// request carries `traceparent` (and `tracestate`) naming the gateway's span as parent. Sampling is
/// parent-based: a caller's sampled flag is followed; new traces are sampled at `sampling`. Only
/// sampled requests touch the exporter: one server span per request, a client span per upstream
/// attempt, and a span per plugin slower than `slow_plugin`, exported in batches by swift-otel.
public struct OpenTelemetryPlugin: GatewayPlugin, RequestTracer {
    public static let name = "opentelemetry"
    public static let phase = PluginPhase.rewrite
    public static let priority = 100_000
    public static let changesRequest = false
    public static let responseHookOnlyAdds = true
    public var readsRequestFields: Bool { false }
    public var hasRequestHook: Bool { false }
    public var hasResponseHook: Bool { false }
    public var wantsUpstreamAttempts: Bool { true }
    public var wantsPluginTimings: Bool { configuration.slowPluginNanos != nil }
    public var requestTracer: (any RequestTracer)? { self }

    public struct Configuration: PluginConfiguration {
        public var exporter = TracingBackend.Settings(endpoint: "http://127.0.0.1:4318")
        /// The share of new traces sampled, 0 to 1.
        public var sampling = 0.01
        /// Plugins slower than this get a span of their own (nil: none).
        public var slowPluginNanos: UInt64? = 1_000_000
        /// Send `traceparent` upstream.
        public var propagate = true
        public var state = PluginStateRegistry.shared

        public init(from config: ConfigNode) {
            config.expectMapping(keys: ["endpoint", "sampling", "service_name", "headers", "batch_delay", "max_queue",
                                        "max_batch", "timeout", "slow_plugin", "propagate", "max_traces_per_second"])
            state = config.diagnostics.state
            if let endpoint = config["endpoint"].string() {
                if endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") {
                    exporter.endpoint = endpoint
                } else {
                    config["endpoint"].error("expected an http:// or https:// URL of an OTLP/HTTP collector")
                }
            }
            if let text = config["sampling"].string() {
                if let ratio = Double(text), (0...1).contains(ratio) { sampling = ratio } else {
                    config["sampling"].error("expected a number from 0 to 1")
                }
            }
            if let name = config["service_name"].string() { exporter.serviceName = name }
            for (name, value) in config["headers"].entries() ?? [] {
                if HTTPField.Name(name) == nil { value.error("not a header name") }
                if let text = value.string(required: true) { exporter.headers[name] = text }
            }
            if let delay = config["batch_delay"].duration() { exporter.batchDelay = delay }
            if let value = config["max_queue"].int(range: 1...1_000_000) { exporter.maxQueue = value }
            if let value = config["max_batch"].int(range: 1...100_000) { exporter.maxBatch = value }
            if let value = config["max_traces_per_second"].int(range: 1...1_000_000) { exporter.maxTracesPerSecond = value }
            if let value = config["timeout"].duration() { exporter.timeout = value }
            if exporter.maxBatch > exporter.maxQueue { config["max_batch"].error("must not exceed max_queue (\(exporter.maxQueue))") }
            let slow = config["slow_plugin"]
            if slow.isPresent {
                if slow.string() == "off" { slowPluginNanos = nil } else if let value = slow.duration() { slowPluginNanos = value.unsignedNanoseconds }
            }
            if let value = config["propagate"].bool() { propagate = value }
        }
    }

    let configuration: Configuration
    let backend: TracingBackend?
    let sampler: TraceSampler
    let ids: TraceIDGenerator
    private static let logger = Logger(label: "tollgate.tracing")

    public init(configuration: Configuration) throws {
        self.configuration = configuration
        self.sampler = TraceSampler(ratio: configuration.sampling)
        self.ids = configuration.state.value(for: "tracing|ids") { TraceIDGenerator() }
        let settings = configuration.exporter
        // Made before: the state registry is locked while `make` runs.
        let metrics = GatewayMetrics.of(configuration.state)
        // One exporter per gateway and settings: a reload that keeps them keeps its queue.
        self.backend = configuration.state.value(for: "tracing|backend|\(settings.tracesURL)|\(settings.serviceName)|\(settings.headers.sorted { $0.key < $1.key })|\(settings.batchDelay)|\(settings.maxQueue)|\(settings.maxBatch)|\(settings.timeout)|\(settings.maxTracesPerSecond)") { () -> BackendSlot in
            do {
                let backend = try TracingBackend(settings: settings)
                metrics.addCollector { [weak backend] in
                    guard let backend else { return [] }
                    return [GatewayMetrics.Sample(name: "tollgate_trace_requests_dropped_total",
                                                  help: "Sampled requests that got no spans (over max_traces_per_second, or the telemetry thread behind)",
                                                  labels: [], value: Double(backend.droppedRequests.load(ordering: .relaxed)), type: "counter")]
                }
                return BackendSlot(backend)
            } catch {
                Self.logger.error("trace exporter not started", metadata: ["error": "\(error)"])
                return BackendSlot(nil)
            }
        }.backend
    }

    /// Called by the server right after routing, with the caller's fields as they came.
    public func begin(traceparent: String?, tracestate: String?, context: inout RequestContext) {
        let parent = traceparent.flatMap(TraceParent.parse)
        // tracestate belongs to a valid parent only (W3C: drop it with a bad traceparent).
        let state = parent == nil ? nil : tracestate
        var trace = TraceContext(traceIDHigh: parent?.traceIDHigh ?? ids.next(), traceIDLow: parent?.traceIDLow ?? ids.next(),
                                 spanID: ids.next(), parentSpanID: parent?.parentID ?? 0, sampled: false, traceState: state)
        trace.sampled = parent?.sampled ?? sampler.samples(traceIDLow: trace.traceIDLow)
        trace.propagate = configuration.propagate
        if trace.sampled, let backend, backend.admitsSpans() {
            // Only sampled requests reach the exporter: their span is made now, so the upstream's
            // parent id is the span's own.
            let startWall = WallClock.nanoseconds() &- (MonotonicClock.nanoseconds() &- context.startNanos)
            let span = backend.startRequestSpan(name: context.route?.name ?? "unmatched", traceparent: parent == nil ? nil : traceparent,
                                                tracestate: state, startNanosSinceEpoch: startWall)
            let headers = backend.headers(for: span)
            if let own = headers["traceparent"].flatMap(TraceParent.parse) {
                trace.traceIDHigh = own.traceIDHigh
                trace.traceIDLow = own.traceIDLow
                trace.spanID = own.parentID
            }
            trace.traceState = headers["tracestate"] ?? state
            trace.span = span
        }
        context.trace = trace
    }

    public func onLog(context: RequestContext, summary: RequestSummary) {
        guard let trace = context.trace, trace.sampled, let span = trace.span as? any Span, let backend else { return }
        // What the spans need, taken now; they are finished on the telemetry thread, off the loop.
        let finished = FinishedRequest(context: context, summary: summary,
                                       timings: configuration.slowPluginNanos == nil ? nil : context.pluginTimings)
        let threshold = configuration.slowPluginNanos
        // Always finished: a started span stays in swift-otel's tracer until it ends (`begin` is
        // where a backlog refuses spans).
        BackgroundWorker.telemetry.submit {
            Self.finish(span, finished, backend: backend, slowPluginNanos: threshold)
        }
    }

    /// A sampled request's facts, for its spans.
    struct FinishedRequest: Sendable {
        var method, path, route, clientIP, requestID, httpVersion: String
        var query, host, userAgent, service, consumer, rateLimit, error: String?
        var status: Int
        var startNanos, endNanos: UInt64
        var attempts: [UpstreamAttempt]
        var plugins: [(name: String, nanos: UInt64)]

        init(context: RequestContext, summary: RequestSummary, timings: [UInt64]?) {
            method = summary.method
            path = String(summary.path)
            query = summary.query.map(String.init)
            route = summary.routeName ?? "unmatched"
            host = summary.host
            clientIP = context.clientIP
            httpVersion = summary.httpVersion == "HTTP/1.0" ? "1.0" : "1.1"
            userAgent = summary.userAgent
            requestID = context.requestID
            service = summary.serviceName
            consumer = context.consumer?.name
            rateLimit = context.rateLimitOutcome
            error = summary.errorReason
            status = summary.status
            startNanos = summary.startNanos
            endNanos = summary.endNanos
            attempts = summary.attempts
            plugins = timings.map { Array(zip(context.route?.chain.names ?? [], $0)).map { (name: $0.0, nanos: $0.1) } } ?? []
        }
    }

    static func finish(_ span: any Span, _ r: FinishedRequest, backend: TracingBackend, slowPluginNanos: UInt64?) {
        // Monotonic times become wall-clock ones through one common offset.
        let offset = WallClock.nanoseconds() &- MonotonicClock.nanoseconds()
        span.operationName = "\(r.method) \(r.route)"
        // Attributes are built here and given to each span in one assignment: a span's attributes sit
        // behind a lock, and setting them one by one copies the whole set each time.
        var attributes: [String: SpanAttribute] = Dictionary(minimumCapacity: 16)
        attributes["http.request.method"] = .string(r.method)
        attributes["url.path"] = .string(r.path)
        if let query = r.query { attributes["url.query"] = .string(query) }
        attributes["http.response.status_code"] = .int64(Int64(r.status))
        attributes["http.route"] = .string(r.route)
        if let host = r.host { attributes["server.address"] = .string(host) }
        attributes["client.address"] = .string(r.clientIP)
        attributes["network.protocol.version"] = .string(r.httpVersion)
        if let agent = r.userAgent { attributes["user_agent.original"] = .string(agent) }
        attributes["tollgate.request_id"] = .string(r.requestID)
        if let service = r.service { attributes["tollgate.service"] = .string(service) }
        if let consumer = r.consumer { attributes["tollgate.consumer"] = .string(consumer) }
        if let outcome = r.rateLimit { attributes["tollgate.rate_limit"] = .string(outcome) }
        span.attributes = SpanAttributes(attributes)
        if r.status >= 500 || r.status == 499 {
            span.setStatus(SpanStatus(code: .error, message: r.error))
        }
        for (index, attempt) in r.attempts.enumerated() {
            let child = backend.startChild(of: span, name: "upstream \(attempt.target)", kind: .client,
                                           startNanosSinceEpoch: attempt.startNanos &+ offset)
            var childAttributes: [String: SpanAttribute] = ["server.address": .string(attempt.target),
                                                            "tollgate.attempt": .int64(Int64(index + 1))]
            if attempt.status > 0 { childAttributes["http.response.status_code"] = .int64(Int64(attempt.status)) }
            if let error = attempt.error { childAttributes["error.type"] = .string(error) }
            child.attributes = SpanAttributes(childAttributes)
            if let error = attempt.error {
                child.setStatus(SpanStatus(code: .error, message: error))
            } else if attempt.status >= 500 {
                child.setStatus(SpanStatus(code: .error))
            }
            child.end(at: SpanInstant(nanosecondsSinceEpoch: attempt.endNanos &+ offset))
        }
        if let threshold = slowPluginNanos {
            // Request hooks run one after another from the start: a plugin's span starts where the
            // previous ones' time ends (response-hook time is folded in).
            var at = r.startNanos &+ offset
            for (name, nanos) in r.plugins {
                if nanos >= threshold {
                    let child = backend.startChild(of: span, name: "plugin \(name)", kind: .internal, startNanosSinceEpoch: at)
                    child.attributes = SpanAttributes(["tollgate.plugin": .string(name)])
                    child.end(at: SpanInstant(nanosecondsSinceEpoch: at &+ nanos))
                }
                at &+= nanos
            }
        }
        span.end(at: SpanInstant(nanosecondsSinceEpoch: r.endNanos &+ offset))
    }
}

/// The exporter kept in the plugin state (a class: an optional would read back as "present but nil").
final class BackendSlot: Sendable {
    let backend: TracingBackend?
    init(_ backend: TracingBackend?) { self.backend = backend }
}
