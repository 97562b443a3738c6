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
/// attempt, and a span per plugin slower than `slow_plugin`, exported in batches by Tollgate's own
/// OTLP encoder (`engine: tollgate`, the default) or by swift-otel (`engine: swift-otel`).
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
            config.expectMapping(keys: ["endpoint", "engine", "sampling", "service_name", "headers", "batch_delay", "max_queue",
                                        "max_batch", "timeout", "slow_plugin", "propagate", "max_traces_per_second"])
            state = config.diagnostics.state
            if let endpoint = config["endpoint"].string() {
                if endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") {
                    exporter.endpoint = endpoint
                } else {
                    config["endpoint"].error("expected an http:// or https:// URL of an OTLP/HTTP collector")
                }
            }
            if let text = config["engine"].string() {
                if let engine = TracingBackend.Engine(rawValue: text) { exporter.engine = engine } else {
                    config["engine"].error("expected tollgate or swift-otel")
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
        self.backend = configuration.state.value(for: "tracing|backend|\(settings.engine)|\(settings.tracesURL)|\(settings.serviceName)|\(settings.headers.sorted { $0.key < $1.key })|\(settings.batchDelay)|\(settings.maxQueue)|\(settings.maxBatch)|\(settings.timeout)|\(settings.maxTracesPerSecond)") { () -> BackendSlot in
            do {
                let backend = try TracingBackend(settings: settings)
                metrics.addCollector { [weak backend] in
                    guard let backend else { return [] }
                    var samples = [GatewayMetrics.Sample(name: "tollgate_trace_requests_dropped_total",
                                                         help: "Sampled requests whose spans were not exported (over max_traces_per_second, the queue full, or a batch that failed for good)",
                                                         labels: [], value: Double(backend.droppedRequestsTotal), type: "counter")]
                    if let exporter = backend.exporter {
                        samples.append(GatewayMetrics.Sample(name: "tollgate_trace_spans_exported_total", help: "Spans the collector accepted",
                                                             labels: [], value: Double(exporter.exportedSpans), type: "counter"))
                    }
                    return samples
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
        var trace: TraceContext
        if let parent {
            trace = TraceContext(traceIDHigh: parent.traceIDHigh, traceIDLow: parent.traceIDLow, spanID: ids.next(),
                                 parentSpanID: parent.parentID, sampled: false, traceState: state)
        } else {
            let new = ids.nextTrace()
            trace = TraceContext(traceIDHigh: new.high, traceIDLow: new.low, spanID: new.span, sampled: false)
        }
        trace.sampled = parent?.sampled ?? sampler.samples(traceIDLow: trace.traceIDLow)
        trace.propagate = configuration.propagate
        if trace.sampled, let backend, backend.exporter != nil {
            // Tollgate's engine: nothing to start; the spans are written when the request ends.
            if backend.admitsSpans() { trace.span = RecordedSpans.marker }
        } else if trace.sampled, let backend, backend.admitsSpans() {
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
        guard let trace = context.trace, trace.sampled, let recorded = trace.span, let backend else { return }
        let finished = FinishedRequest(context: context, summary: summary,
                                       timings: configuration.slowPluginNanos == nil ? nil : context.pluginTimings)
        let threshold = configuration.slowPluginNanos
        if let exporter = backend.exporter {
            // Encoded here, on the event loop (under 10 µs); sent in batches from the telemetry thread.
            var spans = OTLPSpanWriter()
            Self.write(finished, trace: trace, ids: ids, slowPluginNanos: threshold, into: &spans)
            exporter.enqueue(spans)
            return
        }
        guard let span = recorded as? any Span else { return }
        // swift-otel's spans are finished on the telemetry thread, always: a started span stays in its
        // tracer until it ends (`begin` is where a backlog refuses spans).
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
        span.operationName = r.spanName
        // Attributes are built here and given to each span in one assignment: a span's attributes sit
        // behind a lock, and setting them one by one copies the whole set each time.
        span.attributes = Self.spanAttributes(r.attributes)
        if r.failed {
            span.setStatus(SpanStatus(code: .error, message: r.error))
        }
        for (index, attempt) in r.attempts.enumerated() {
            let child = backend.startChild(of: span, name: "upstream \(attempt.target)", kind: .client,
                                           startNanosSinceEpoch: attempt.startNanos &+ offset)
            child.attributes = Self.spanAttributes(FinishedRequest.attributes(of: attempt, number: index + 1))
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

extension OpenTelemetryPlugin {
    /// Sends the spans still queued by the gateway's exporters (graceful shutdown), waiting at most
    /// `limit`: one try each, no retries.
    public static func flushExporters(state: PluginStateRegistry = .shared, within limit: Duration = .seconds(2)) async {
        let exporters = state.all(BackendSlot.self).compactMap { $0.backend?.exporter }
        guard !exporters.isEmpty else { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for exporter in exporters { await exporter.flush() }
            }
            group.addTask { try? await Task.sleep(for: limit) }
            await group.next()
            group.cancelAll()
        }
    }

    static func spanAttributes(_ list: [(String, OTLPSpanWriter.Value)]) -> SpanAttributes {
        var attributes: [String: SpanAttribute] = Dictionary(minimumCapacity: list.count)
        for (key, value) in list {
            switch value {
            case .string(let text): attributes[key] = .string(text)
            case .int(let number): attributes[key] = .int64(number)
            }
        }
        return SpanAttributes(attributes)
    }

    /// A sampled request's spans for Tollgate's engine: the server span (the id the upstream saw as
    /// its parent), a client span per upstream attempt and a span per plugin slower than the threshold.
    static func write(_ r: FinishedRequest, trace: TraceContext, ids: TraceIDGenerator, slowPluginNanos: UInt64?,
                      into spans: inout OTLPSpanWriter) {
        let offset = WallClock.nanoseconds() &- MonotonicClock.nanoseconds()
        spans.span(traceIDHigh: trace.traceIDHigh, traceIDLow: trace.traceIDLow, spanID: trace.spanID, parentID: trace.parentSpanID,
                   traceState: trace.traceState, name: r.spanName, kind: .server, startNanos: r.startNanos &+ offset,
                   endNanos: r.endNanos &+ offset, attributes: r.attributes, error: r.failed, statusMessage: r.error)
        for (index, attempt) in r.attempts.enumerated() {
            spans.span(traceIDHigh: trace.traceIDHigh, traceIDLow: trace.traceIDLow, spanID: ids.next(), parentID: trace.spanID,
                       traceState: nil, name: "upstream \(attempt.target)", kind: .client, startNanos: attempt.startNanos &+ offset,
                       endNanos: attempt.endNanos &+ offset, attributes: FinishedRequest.attributes(of: attempt, number: index + 1),
                       error: attempt.error != nil || attempt.status >= 500, statusMessage: attempt.error)
        }
        if let threshold = slowPluginNanos {
            var at = r.startNanos &+ offset
            for (name, nanos) in r.plugins {
                if nanos >= threshold {
                    spans.span(traceIDHigh: trace.traceIDHigh, traceIDLow: trace.traceIDLow, spanID: ids.next(), parentID: trace.spanID,
                               traceState: nil, name: "plugin \(name)", kind: .internal, startNanos: at, endNanos: at &+ nanos,
                               attributes: [("tollgate.plugin", .string(name))], error: false)
                }
                at &+= nanos
            }
        }
    }
}

extension OpenTelemetryPlugin.FinishedRequest {
    var spanName: String { "\(method) \(route)" }
    var failed: Bool { status >= 500 || status == 499 }

    /// The server span's attributes (OpenTelemetry's HTTP semantic conventions, and Tollgate's own).
    var attributes: [(String, OTLPSpanWriter.Value)] {
        var list: [(String, OTLPSpanWriter.Value)] = []
        list.reserveCapacity(13)
        list.append(("http.request.method", .string(method)))
        list.append(("url.path", .string(path)))
        if let query { list.append(("url.query", .string(query))) }
        list.append(("http.response.status_code", .int(Int64(status))))
        list.append(("http.route", .string(route)))
        if let host { list.append(("server.address", .string(host))) }
        list.append(("client.address", .string(clientIP)))
        list.append(("network.protocol.version", .string(httpVersion)))
        if let userAgent { list.append(("user_agent.original", .string(userAgent))) }
        list.append(("tollgate.request_id", .string(requestID)))
        if let service { list.append(("tollgate.service", .string(service))) }
        if let consumer { list.append(("tollgate.consumer", .string(consumer))) }
        if let rateLimit { list.append(("tollgate.rate_limit", .string(rateLimit))) }
        return list
    }

    static func attributes(of attempt: UpstreamAttempt, number: Int) -> [(String, OTLPSpanWriter.Value)] {
        var list: [(String, OTLPSpanWriter.Value)] = [("server.address", .string(attempt.target)), ("tollgate.attempt", .int(Int64(number)))]
        if attempt.status > 0 { list.append(("http.response.status_code", .int(Int64(attempt.status)))) }
        if let error = attempt.error { list.append(("error.type", .string(error))) }
        return list
    }
}

/// What marks a sampled request whose spans Tollgate's engine writes when it ends.
final class RecordedSpans: Sendable {
    static let marker = RecordedSpans()
}

/// The exporter kept in the plugin state (a class: an optional would read back as "present but nil").
final class BackendSlot: Sendable {
    let backend: TracingBackend?
    init(_ backend: TracingBackend?) { self.backend = backend }
}
