import Logging
import OTel
import ServiceContextModule
import ServiceLifecycle
import Synchronization
import TollgateCore
import Tracing

/// W3C Trace Context (`traceparent`), parsed and made without allocating more than the id strings.
public enum TraceParent {
    /// The trace id, parent span id and sampled flag of a valid `traceparent` (version 00, or a later
    /// version read as 00 as the spec asks); nil for anything malformed or all-zero ids.
    public static func parse(_ value: String) -> (traceID: String, parentID: String, sampled: Bool)? {
        let bytes = Array(value.utf8)
        guard bytes.count >= 55 else { return nil }
        guard bytes[2] == UInt8(ascii: "-"), bytes[35] == UInt8(ascii: "-"), bytes[52] == UInt8(ascii: "-") else { return nil }
        func isHex(_ range: Range<Int>) -> Bool {
            bytes[range].allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
        }
        guard isHex(0..<2), isHex(3..<35), isHex(36..<52), isHex(53..<55) else { return nil }
        let version = bytes[0..<2]
        guard !(version.elementsEqual("ff".utf8)) else { return nil }
        if version.elementsEqual("00".utf8) {
            guard bytes.count == 55 else { return nil }
        } else if bytes.count > 55 && bytes[55] != UInt8(ascii: "-") {
            return nil
        }
        guard !bytes[3..<35].allSatisfy({ $0 == 0x30 }), !bytes[36..<52].allSatisfy({ $0 == 0x30 }) else { return nil }
        let flags = (Bytes.hexValue(bytes[53])! << 4) | Bytes.hexValue(bytes[54])!
        return (String(decoding: bytes[3..<35], as: UTF8.self), String(decoding: bytes[36..<52], as: UTF8.self), flags & 1 == 1)
    }
}

/// Random trace and span ids from a shared lock-free generator (wyrand over an atomic counter).
public final class TraceIDGenerator: Sendable {
    private let state: Atomic<UInt64>

    public init(seed: UInt64 = UInt64.random(in: 1...UInt64.max)) {
        state = Atomic(seed)
    }

    public func next() -> UInt64 {
        let s = state.wrappingAdd(0xA076_1D64_78BD_642F, ordering: .relaxed).newValue
        let product = s.multipliedFullWidth(by: s ^ 0xE703_7ED1_A0B4_28DB)
        let mixed = product.high ^ product.low
        return mixed == 0 ? 1 : mixed
    }

    public static func hex(_ value: UInt64, into out: inout [UInt8]) {
        for shift in stride(from: 60, through: 0, by: -4) { out.append(Bytes.hexDigit(UInt8((value >> UInt64(shift)) & 0xF))) }
    }

    public func spanID() -> String {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        Self.hex(next(), into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// A new trace id, and the 56 random bits a ratio sampler compares.
    public func traceID() -> (id: String, randomness: UInt64) {
        let high = next(), low = next()
        var out: [UInt8] = []
        out.reserveCapacity(32)
        Self.hex(high, into: &out)
        Self.hex(low, into: &out)
        return (String(decoding: out, as: UTF8.self), low & 0x00FF_FFFF_FFFF_FFFF)
    }
}

/// Parent-based ratio sampling: a request with a valid `traceparent` follows its sampled flag; a new
/// trace is sampled when its id's random bits fall under the ratio (OpenTelemetry's TraceIdRatioBased).
public struct TraceSampler: Sendable {
    public let ratio: Double
    let threshold: UInt64

    public init(ratio: Double) {
        self.ratio = ratio
        self.threshold = ratio >= 1 ? UInt64(1) << 56 : UInt64(ratio * Double(UInt64(1) << 56))
    }

    public func samples(randomness: UInt64) -> Bool { randomness < threshold }
}

/// A wall-clock instant for spans whose start and end were measured on the monotonic clock.
public struct SpanInstant: TracerInstant {
    public var nanosecondsSinceEpoch: UInt64
    public init(nanosecondsSinceEpoch: UInt64) { self.nanosecondsSinceEpoch = nanosecondsSinceEpoch }
    public static func < (a: SpanInstant, b: SpanInstant) -> Bool { a.nanosecondsSinceEpoch < b.nanosecondsSinceEpoch }
}

/// The OTLP/HTTP exporter of one gateway (swift-otel): a tracer, and its batch processor running in
/// a task of its own. Spans are made only for sampled requests.
public final class TracingBackend: Sendable {
    public struct Settings: Sendable, Equatable {
        /// The collector's base URL (`http://127.0.0.1:4318`); spans go to `/v1/traces` under it.
        public var endpoint: String
        public var serviceName = "tollgate"
        public var headers: [String: String] = [:]
        public var batchDelay: Duration = .seconds(1)
        public var maxQueue = 2_048
        public var maxBatch = 512
        public var timeout: Duration = .seconds(10)

        public init(endpoint: String) { self.endpoint = endpoint }

        public var tracesURL: String {
            endpoint.hasSuffix("/v1/traces") ? endpoint : (endpoint.hasSuffix("/") ? endpoint + "v1/traces" : endpoint + "/v1/traces")
        }
    }

    public let settings: Settings
    public let tracer: any Tracer
    private let task: Task<Void, Never>
    private static let logger = Logger(label: "tollgate.tracing")

    public init(settings: Settings) throws {
        self.settings = settings
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
        self.task = Task {
            do {
                try await service.run()
            } catch {
                Self.logger.error("trace exporter stopped", metadata: ["error": "\(error)"])
            }
        }
    }

    deinit { task.cancel() }

    /// Starts the server span of a sampled request (a child of the caller's, when it sent one).
    public func startRequestSpan(name: String, traceparent: String?, tracestate: String?, startNanosSinceEpoch: UInt64) -> any Span {
        var context = ServiceContext.topLevel
        if let traceparent {
            var carrier = ["traceparent": traceparent]
            if let tracestate { carrier["tracestate"] = tracestate }
            tracer.extract(carrier, into: &context, using: DictionaryCarrier())
        }
        return tracer.startSpan(name, context: context, ofKind: .server,
                                at: SpanInstant(nanosecondsSinceEpoch: startNanosSinceEpoch))
    }

    /// The `traceparent` (and `tracestate`) naming `span` as the parent.
    public func headers(for span: any Span) -> [String: String] {
        var carrier: [String: String] = [:]
        tracer.inject(span.context, into: &carrier, using: DictionaryCarrier())
        return carrier
    }

    public func startChild(of span: any Span, name: String, kind: SpanKind, startNanosSinceEpoch: UInt64) -> any Span {
        tracer.startSpan(name, context: span.context, ofKind: kind, at: SpanInstant(nanosecondsSinceEpoch: startNanosSinceEpoch))
    }
}

struct DictionaryCarrier: Extractor, Injector {
    func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key] = value }
}
