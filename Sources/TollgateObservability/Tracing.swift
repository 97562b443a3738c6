import Logging
import OTel
import ServiceContextModule
import ServiceLifecycle
import Synchronization
import TollgateCore
import Tracing

/// W3C Trace Context (`traceparent`), parsed without allocating.
public enum TraceParent {
    public struct Parsed: Sendable, Equatable {
        public var traceIDHigh: UInt64
        public var traceIDLow: UInt64
        public var parentID: UInt64
        public var sampled: Bool
    }

    /// The trace id, parent span id and sampled flag of a valid `traceparent` (version 00, or a later
    /// version read as 00 as the spec asks); nil for anything malformed or all-zero ids. Uppercase hex
    /// is refused, as the spec says.
    public static func parse(_ value: String) -> Parsed? {
        var value = value
        return value.withUTF8 { bytes -> Parsed? in
            guard bytes.count >= 55, bytes[2] == 0x2D, bytes[35] == 0x2D, bytes[52] == 0x2D else { return nil }
            func hex(_ range: Range<Int>) -> UInt64? {
                var result: UInt64 = 0
                for index in range {
                    let byte = bytes[index]
                    let digit: UInt8
                    switch byte {
                    case 0x30...0x39: digit = byte - 0x30
                    case 0x61...0x66: digit = byte - 0x57
                    default: return nil
                    }
                    result = result << 4 | UInt64(digit)
                }
                return result
            }
            guard let version = hex(0..<2), version != 0xFF else { return nil }
            if version == 0 {
                guard bytes.count == 55 else { return nil }
            } else if bytes.count > 55 && bytes[55] != 0x2D {
                return nil
            }
            guard let high = hex(3..<19), let low = hex(19..<35), let parent = hex(36..<52), let flags = hex(53..<55),
                  high != 0 || low != 0, parent != 0 else { return nil }
            return Parsed(traceIDHigh: high, traceIDLow: low, parentID: parent, sampled: flags & 1 == 1)
        }
    }
}

/// Random trace and span ids (wyrand), each thread drawing from a stream of its own: no atomic
/// operation on a cache line that every event loop shares (three per request, one per id).
public final class TraceIDGenerator: Sendable {
    /// One thread's state (touched only by that thread once made).
    private final class Stream: @unchecked Sendable {
        var state: UInt64
        init(state: UInt64) { self.state = state }

        @inline(__always)
        func draw() -> UInt64 {
            state &+= 0xA076_1D64_78BD_642F
            let product = state.multipliedFullWidth(by: state ^ 0xE703_7ED1_A0B4_28DB)
            let mixed = product.high ^ product.low
            return mixed == 0 ? 1 : mixed
        }
    }
    private let seed: UInt64
    /// Every thread's stream, kept alive here (the slot does not own them).
    private let streams = Mutex<[Stream]>([])
    private let slot = ThreadSlot<Stream>()

    public init(seed: UInt64 = UInt64.random(in: 1...UInt64.max)) {
        self.seed = seed
    }

    /// A random non-zero id.
    public func next() -> UInt64 {
        slot.withValue { $0.draw() } ?? newStream().draw()
    }

    /// A new trace's ids (its high and low halves, and the span's), with one look-up of the thread's
    /// stream.
    public func nextTrace() -> (high: UInt64, low: UInt64, span: UInt64) {
        if let ids = slot.withValue({ ($0.draw(), $0.draw(), $0.draw()) }) { return ids }
        let stream = newStream()
        return (stream.draw(), stream.draw(), stream.draw())
    }

    /// The calling thread's first draw: its stream starts at the seed scrambled with the number of
    /// threads before it (splitmix64), so threads start far apart in the sequence.
    private func newStream() -> Stream {
        let stream = streams.withLock { streams -> Stream in
            var z = seed &+ UInt64(streams.count + 1) &* 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            let made = Stream(state: z ^ (z >> 31))
            streams.append(made)
            return made
        }
        slot.set(stream)
        return stream
    }
}

/// Parent-based ratio sampling: a request with a valid `traceparent` follows its sampled flag; a new
/// trace is sampled when the low 56 bits of its id fall under the ratio (OpenTelemetry's
/// TraceIdRatioBased, so every node decides the same for the same trace).
public struct TraceSampler: Sendable {
    public let ratio: Double
    let threshold: UInt64

    public init(ratio: Double) {
        self.ratio = ratio
        self.threshold = ratio >= 1 ? UInt64(1) << 56 : UInt64(ratio * Double(UInt64(1) << 56))
    }

    public func samples(traceIDLow: UInt64) -> Bool { traceIDLow & 0x00FF_FFFF_FFFF_FFFF < threshold }
}

/// A wall-clock instant for spans whose start and end were measured on the monotonic clock.
public struct SpanInstant: TracerInstant {
    public var nanosecondsSinceEpoch: UInt64
    public init(nanosecondsSinceEpoch: UInt64) { self.nanosecondsSinceEpoch = nanosecondsSinceEpoch }
    public static func < (a: SpanInstant, b: SpanInstant) -> Bool { a.nanosecondsSinceEpoch < b.nanosecondsSinceEpoch }
}

/// The OTLP/HTTP exporter of one gateway. Spans are made only for sampled requests, by one of two
/// engines: Tollgate's own (the default), which encodes a request's spans on its event loop (about
/// 25 000 instructions) and sends them in batches from the telemetry thread, or swift-otel's tracer
/// (through swift-distributed-tracing), whose spans cost about 300 000 instructions each on that thread.
public final class TracingBackend: Sendable {
    public enum Engine: String, Sendable, CaseIterable {
        case tollgate
        case swiftOTel = "swift-otel"
    }

    public struct Settings: Sendable, Equatable {
        /// The collector's base URL (`http://127.0.0.1:4318`); spans go to `/v1/traces` under it.
        public var endpoint: String
        public var engine = Engine.tollgate
        public var serviceName = "tollgate"
        public var headers: [String: String] = [:]
        public var batchDelay: Duration = .seconds(1)
        public var maxQueue = 2_048
        public var maxBatch = 512
        public var timeout: Duration = .seconds(10)
        /// The most sampled requests given spans per second, by all routes using this exporter. With
        /// swift-otel a sampled request costs the telemetry thread about 80 µs (finishing, batching,
        /// protobuf), so 1 000 a second is about 8% of a core, and beyond what the thread can do its
        /// queues would grow without bound; Tollgate's engine spends under 10 µs on the event loop.
        public var maxTracesPerSecond = 1_000

        public init(endpoint: String) { self.endpoint = endpoint }

        public var tracesURL: String {
            endpoint.hasSuffix("/v1/traces") ? endpoint : (endpoint.hasSuffix("/") ? endpoint + "v1/traces" : endpoint + "/v1/traces")
        }
    }

    public let settings: Settings
    /// swift-otel's tracer (the `swift-otel` engine).
    public let tracer: (any Tracer)?
    /// Tollgate's exporter (the `tollgate` engine).
    public let exporter: OTLPTraceExporter?
    /// Sampled requests that got no spans: over `maxTracesPerSecond`, or no room to queue them (for
    /// swift-otel, more than `maxQueue` jobs waiting for the telemetry thread).
    public let droppedRequests = Atomic<Int>(0)
    /// This second's admissions: the second (monotonic) in the high 32 bits, the count in the low.
    private let window = Atomic<UInt64>(0)
    private let task: Task<Void, Never>?
    private static let logger = Logger(label: "tollgate.tracing")

    public init(settings: Settings) throws {
        self.settings = settings
        guard settings.engine == .swiftOTel else {
            tracer = nil
            exporter = OTLPTraceExporter(settings: settings)
            task = nil
            return
        }
        exporter = nil
        var configuration = OTel.Configuration.default
        configuration.serviceName = settings.serviceName
        configuration.diagnosticLogger = .custom(Logger(label: "tollgate.otel"))
        configuration.propagators = [.traceContext]
        configuration.traces.sampler = .parentBasedAlwaysOn   // the plugin samples; sampled requests all export
        configuration.traces.exporter = .otlp
        configuration.traces.otlpExporter.endpoint = settings.tracesURL
        configuration.traces.otlpExporter.protocol = .httpProtobuf
        configuration.traces.otlpExporter.timeout = settings.timeout
        configuration.traces.otlpExporter.headers = settings.headers.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        configuration.traces.batchSpanProcessor.scheduleDelay = settings.batchDelay
        configuration.traces.batchSpanProcessor.maxQueueSize = settings.maxQueue
        configuration.traces.batchSpanProcessor.maxExportBatchSize = settings.maxBatch
        configuration.metrics.enabled = false
        configuration.logs.enabled = false
        let (tracer, service) = try OTel.makeTracingBackend(configuration: configuration)
        self.tracer = tracer
        // On the telemetry thread (nice 10): batching and encoding spans yields to the event loops.
        self.task = Task(executorPreference: TelemetryExecutor.shared) {
            do {
                try await service.run()
            } catch {
                Self.logger.error("trace exporter stopped", metadata: ["error": "\(error)"])
            }
        }
    }

    deinit { task?.cancel() }

    /// Sampled requests without spans, for whatever reason (admission, a full queue, a failed batch).
    public var droppedRequestsTotal: Int { droppedRequests.load(ordering: .relaxed) + (exporter?.droppedRequests ?? 0) }

    /// Whether a sampled request may have spans now: not beyond `maxTracesPerSecond` in this second,
    /// nor while the exporter's queue is full (for swift-otel: while more than `maxQueue` jobs wait for
    /// the telemetry thread). A swift-otel span once started is kept by swift-otel until it ends, and
    /// its end, its export and the request's child spans all take turns on that thread, so spans are
    /// refused before they start (and counted), never dropped half-way. The request's trace context
    /// is propagated as sampled either way.
    public func admitsSpans(nowNanos: UInt64 = MonotonicClock.nanoseconds()) -> Bool {
        // The backlog first: a request it refuses does not use up this second's budget.
        let room = exporter?.hasRoom ?? (BackgroundWorker.telemetry.waitingJobs < settings.maxQueue)
        if room, withinRate(second: nowNanos / 1_000_000_000) { return true }
        droppedRequests.add(1, ordering: .relaxed)
        return false
    }

    private func withinRate(second: UInt64) -> Bool {
        let limit = UInt64(settings.maxTracesPerSecond)
        let stamp = second & 0xFFFF_FFFF
        var current = window.load(ordering: .relaxed)
        while true {
            let next: UInt64
            if current >> 32 != stamp {
                next = stamp << 32 | 1
            } else if current & 0xFFFF_FFFF < limit {
                next = current &+ 1
            } else {
                return false
            }
            let (exchanged, original) = window.compareExchange(expected: current, desired: next, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
    }

    /// swift-otel's tracer (a no-op one for the `tollgate` engine, which starts no span objects).
    private var otelTracer: any Tracer { tracer ?? NoOpTracer() }

    /// Starts the server span of a sampled request (a child of the caller's, when it sent one).
    public func startRequestSpan(name: String, traceparent: String?, tracestate: String?, startNanosSinceEpoch: UInt64) -> any Span {
        var context = ServiceContext.topLevel
        if let traceparent {
            var carrier = ["traceparent": traceparent]
            if let tracestate { carrier["tracestate"] = tracestate }
            otelTracer.extract(carrier, into: &context, using: DictionaryCarrier())
        }
        return otelTracer.startSpan(name, context: context, ofKind: .server,
                                at: SpanInstant(nanosecondsSinceEpoch: startNanosSinceEpoch))
    }

    /// The `traceparent` (and `tracestate`) naming `span` as the parent.
    public func headers(for span: any Span) -> [String: String] {
        var carrier: [String: String] = [:]
        otelTracer.inject(span.context, into: &carrier, using: DictionaryCarrier())
        return carrier
    }

    public func startChild(of span: any Span, name: String, kind: SpanKind, startNanosSinceEpoch: UInt64) -> any Span {
        otelTracer.startSpan(name, context: span.context, ofKind: kind, at: SpanInstant(nanosecondsSinceEpoch: startNanosSinceEpoch))
    }
}

struct DictionaryCarrier: Extractor, Injector {
    func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key] = value }
}
