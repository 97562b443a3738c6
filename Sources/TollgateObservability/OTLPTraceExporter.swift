import DequeModule
import Logging
import Synchronization
import TollgateCore

/// Protocol Buffers wire format, as much of it as OTLP's trace messages need.
struct ProtobufWriter {
    var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) {
        if value < 0x80 {
            bytes.append(UInt8(value))
            return
        }
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    /// A field's key: its number and wire type (0 varint, 1 fixed 64-bit, 2 length-delimited).
    mutating func key(_ field: UInt64, _ wireType: UInt64) { varint(field << 3 | wireType) }

    mutating func uint(_ field: UInt64, _ value: UInt64) {
        key(field, 0)
        varint(value)
    }

    mutating func fixed64(_ field: UInt64, _ value: UInt64) {
        key(field, 1)
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func string(_ field: UInt64, _ value: String) {
        key(field, 2)
        var value = value
        value.withUTF8 { text in
            varint(UInt64(text.count))
            bytes.append(contentsOf: text)
        }
    }

    /// Ids as OTLP wants them: big-endian bytes, as their hex is written in `traceparent`.
    mutating func id(_ field: UInt64, _ words: UInt64...) {
        key(field, 2)
        varint(UInt64(words.count * 8))
        for word in words { withUnsafeBytes(of: word.bigEndian) { bytes.append(contentsOf: $0) } }
    }

    /// An embedded message: its length is written once `body` has written it (one byte is kept for
    /// it, and the rest made room for when the message is 128 bytes or longer).
    mutating func message(_ field: UInt64, _ body: (inout ProtobufWriter) -> Void) {
        key(field, 2)
        let lengthAt = bytes.count
        bytes.append(0)
        body(&self)
        let length = bytes.count - lengthAt - 1
        if length < 0x80 {
            bytes[lengthAt] = UInt8(length)
        } else {
            var prefix = ProtobufWriter()
            prefix.varint(UInt64(length))
            bytes.replaceSubrange(lengthAt..<lengthAt + 1, with: prefix.bytes)
        }
    }
}

/// Spans encoded as OTLP `Span` messages (opentelemetry/proto/trace/v1/trace.proto), each already
/// framed as a `ScopeSpans.spans` field, so that a batch is the spans' bytes put one after another
/// inside a small envelope. Written on the event loop when a sampled request ends: about 25 000
/// instructions for a request's server and client spans (their attributes' strings included), where
/// swift-otel spends about 300 000.
public struct OTLPSpanWriter: Sendable {
    public enum Kind: UInt64, Sendable { case `internal` = 1, server = 2, client = 3 }
    public enum Value: Sendable {
        case string(String)
        case int(Int64)
    }

    var writer = ProtobufWriter()
    public private(set) var spans = 0
    public var isEmpty: Bool { spans == 0 }
    /// The spans' bytes, each a `ScopeSpans.spans` field.
    public var bytes: [UInt8] { writer.bytes }

    public init() {}

    /// One span. `parentID` 0 makes a root span; an error status carries `statusMessage`.
    public mutating func span(traceIDHigh: UInt64, traceIDLow: UInt64, spanID: UInt64, parentID: UInt64, traceState: String?,
                              name: String, kind: Kind, startNanos: UInt64, endNanos: UInt64,
                              attributes: [(String, Value)], error: Bool, statusMessage: String? = nil) {
        if spans == 0 { writer.bytes.reserveCapacity(1_024) }
        spans += 1
        writer.message(2) { span in   // ScopeSpans.spans
            span.id(1, traceIDHigh, traceIDLow)
            span.id(2, spanID)
            if let traceState, !traceState.isEmpty { span.string(3, traceState) }
            if parentID != 0 { span.id(4, parentID) }
            span.string(5, name)
            span.uint(6, kind.rawValue)
            span.fixed64(7, startNanos)
            span.fixed64(8, max(endNanos, startNanos))
            for (key, value) in attributes { Self.keyValue(9, key, value, into: &span) }
            if error {
                span.message(15) { status in
                    if let statusMessage, !statusMessage.isEmpty { status.string(2, statusMessage) }
                    status.uint(3, 2)   // STATUS_CODE_ERROR
                }
            }
        }
    }

    static func keyValue(_ field: UInt64, _ key: String, _ value: Value, into writer: inout ProtobufWriter) {
        writer.message(field) { pair in
            pair.string(1, key)
            pair.message(2) { any in
                switch value {
                case .string(let text): any.string(1, text)
                case .int(let number): any.uint(3, UInt64(bitPattern: number))
                }
            }
        }
    }

    /// An `ExportTraceServiceRequest` holding these spans' bytes, under one resource (`service.name`)
    /// and one instrumentation scope.
    public static func request(serviceName: String, spans: some Sequence<[UInt8]>) -> [UInt8] {
        var out = ProtobufWriter()
        out.message(1) { resourceSpans in
            resourceSpans.message(1) { resource in
                keyValue(1, "service.name", .string(serviceName), into: &resource)
                keyValue(1, "telemetry.sdk.name", .string("tollgate"), into: &resource)
                keyValue(1, "telemetry.sdk.language", .string("swift"), into: &resource)
            }
            resourceSpans.message(2) { scopeSpans in
                scopeSpans.message(1) { scope in scope.string(1, "tollgate") }
                for chunk in spans { scopeSpans.bytes.append(contentsOf: chunk) }
            }
        }
        return out.bytes
    }
}

/// Tollgate's own OTLP/HTTP trace exporter. Event loops hand it each sampled request's spans, already
/// encoded; a task on the telemetry thread sends them in batches (`application/x-protobuf` to
/// `/v1/traces`) when `maxBatch` spans wait or `batchDelay` has passed, and retries a batch refused
/// with 429, 502, 503 or 504, or not delivered, with backoff. At most `maxQueue` spans wait: past
/// that, requests' spans are dropped and counted, never queued without bound. What waits is sent
/// when the exporter is released, and by `flush()` on a graceful shutdown.
public final class OTLPTraceExporter: Sendable {
    /// The queue and the sending, kept by the task until it has sent what waits.
    final class Core: Sendable {
        let settings: TracingBackend.Settings
        private struct State {
            var chunks = Deque<[UInt8]>()
            var chunkSpans = Deque<Int>()
            var spans = 0
            var lastSend = MonotonicClock.nanoseconds()
        }
        private let state = Mutex(State())
        let droppedRequests = Atomic<Int>(0)
        let exportedSpans = Atomic<Int>(0)
        static let maxRetries = 3
        private static let logger = Logger(label: "tollgate.tracing")

        init(settings: TracingBackend.Settings) { self.settings = settings }

        var hasRoom: Bool { state.withLock { $0.spans < settings.maxQueue } }

        func enqueue(_ spans: OTLPSpanWriter) -> Bool {
            guard !spans.isEmpty else { return true }
            let fits = state.withLock { state -> Bool in
                guard state.spans + spans.spans <= settings.maxQueue else { return false }
                state.chunks.append(spans.writer.bytes)
                state.chunkSpans.append(spans.spans)
                state.spans += spans.spans
                return true
            }
            if !fits { droppedRequests.add(1, ordering: .relaxed) }
            return fits
        }

        /// Sends every full batch, and what waits once `batchDelay` has passed (everything, with `all`).
        func sendDue(all: Bool) async {
            while true {
                let batch = state.withLock { state -> (chunks: [[UInt8]], spans: Int) in
                    let due = all || MonotonicClock.nanoseconds() &- state.lastSend >= settings.batchDelay.unsignedNanoseconds
                    guard state.spans >= settings.maxBatch || (due && state.spans > 0) else { return ([], 0) }
                    state.lastSend = MonotonicClock.nanoseconds()
                    var chunks: [[UInt8]] = []
                    var spans = 0
                    // Whole requests, up to maxBatch spans (at least one request).
                    while let next = state.chunkSpans.first, chunks.isEmpty || spans + next <= settings.maxBatch {
                        chunks.append(state.chunks.removeFirst())
                        state.chunkSpans.removeFirst()
                        spans += next
                    }
                    state.spans -= spans
                    return (chunks, spans)
                }
                if batch.chunks.isEmpty { return }
                await send(batch.chunks, spans: batch.spans, retrying: !all)
            }
        }

        private func send(_ chunks: [[UInt8]], spans: Int, retrying: Bool) async {
            // OTLP/HTTP: only 429, 502, 503 and 504 are worth sending again.
            let policy = BatchPost.Policy(retries: retrying ? Self.maxRetries : 0, initialBackoff: .milliseconds(250), maxBackoff: .seconds(1),
                                          timeout: settings.timeout, retryable: { [429, 502, 503, 504].contains($0) })
            let delivered = await BatchPost.send(OTLPSpanWriter.request(serviceName: settings.serviceName, spans: chunks), to: settings.tracesURL,
                                                 contentType: "application/x-protobuf", headers: settings.headers.sorted { $0.key < $1.key },
                                                 policy: policy, receiver: "trace collector", logger: Self.logger)
            if delivered {
                exportedSpans.add(spans, ordering: .relaxed)
                return
            }
            droppedRequests.add(chunks.count, ordering: .relaxed)
            Self.logger.warning("trace batch dropped", metadata: ["spans": "\(spans)", "url": "\(settings.tracesURL)"])
        }
    }

    let core: Core
    private let task: Task<Void, Never>

    public init(settings: TracingBackend.Settings) {
        let core = Core(settings: settings)
        self.core = core
        let tick = min(settings.batchDelay / 2, .milliseconds(100))
        // On the telemetry thread: a wakeup per tick; the HTTP work runs on the client's own loop.
        self.task = Task(executorPreference: TelemetryExecutor.shared) {
            while !Task.isCancelled {
                try? await Task.sleep(for: tick)
                await core.sendDue(all: false)
            }
            await core.sendDue(all: true)
        }
    }

    deinit { task.cancel() }

    public var settings: TracingBackend.Settings { core.settings }
    /// Sampled requests whose spans were dropped: the queue full, or their batch failed for good.
    public var droppedRequests: Int { core.droppedRequests.load(ordering: .relaxed) }
    public var exportedSpans: Int { core.exportedSpans.load(ordering: .relaxed) }

    /// Whether another request's spans would fit.
    public var hasRoom: Bool { core.hasRoom }

    /// Queues one request's spans; false (and counted) when they do not fit.
    @discardableResult
    public func enqueue(_ spans: OTLPSpanWriter) -> Bool { core.enqueue(spans) }

    /// Sends whatever waits now (graceful shutdown, tests).
    public func flush() async { await core.sendDue(all: true) }
}
