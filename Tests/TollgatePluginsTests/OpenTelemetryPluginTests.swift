import Dispatch
import Testing
import TollgateCore
import TollgateObservability
@testable import TollgatePlugins
import TollgateTesting

@Suite struct OpenTelemetryPluginTests {
    /// swift-otel's engine: while more than `max_queue` jobs wait for the telemetry thread, sampled requests get no spans
    /// (counted), so nothing piles up in the exporter; their trace context is still propagated as
    /// sampled. Once the thread catches up, spans are made again.
    @Test func aBackloggedTelemetryThreadRefusesSpansAndCountsThem() throws {
        let closed = ClosedPort()
        let tracing = try plugin(OpenTelemetryPlugin.self, """
            {endpoint: "http://127.0.0.1:\(closed.port)", engine: swift-otel, sampling: 1, max_queue: 200, max_batch: 1, service_name: backlog-test}
            """)
        let backend = try #require(tracing.backend)
        let summary = RequestSummary(status: 200, bytesReceived: 0, bytesSent: 0, startNanos: 0, endNanos: 0, upstream: nil, errorReason: nil)
        let gate = DispatchSemaphore(value: 0)
        let started = DispatchSemaphore(value: 0)
        BackgroundWorker.telemetry.submit { started.signal(); gate.wait() }   // holds the thread
        started.wait()
        for _ in 0..<200 { BackgroundWorker.telemetry.submit {} }          // the backlog: max_queue jobs
        for _ in 0..<10 {
            var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
            tracing.begin(traceparent: nil, tracestate: nil, context: &context)
            #expect(context.trace?.sampled == true)
            #expect(context.trace?.span == nil)
            tracing.onLog(context: context, summary: summary)
        }
        #expect(backend.droppedRequests.load(ordering: .relaxed) == 10)
        gate.signal()
        BackgroundWorker.telemetry.sync()

        // Caught up (the other suites' log jobs share the thread: wait for a short queue).
        var admitted = false
        for _ in 0..<100 where !admitted {
            if BackgroundWorker.telemetry.waitingJobs < 200 {
                var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
                tracing.begin(traceparent: nil, tracestate: nil, context: &context)
                admitted = context.trace?.span != nil
                tracing.onLog(context: context, summary: summary)
            }
            if !admitted { BackgroundWorker.telemetry.sync() }
        }
        #expect(admitted)
    }

    /// At most `max_traces_per_second` sampled requests get spans in any one second; the rest are
    /// counted, and the next second admits again.
    @Test func spansAreCappedPerSecond() throws {
        let closed = ClosedPort()
        let tracing = try plugin(OpenTelemetryPlugin.self, """
            {endpoint: "http://127.0.0.1:\(closed.port)", sampling: 1, max_traces_per_second: 3, service_name: rate-test}
            """)
        let backend = try #require(tracing.backend)
        let second: UInt64 = 1_000_000_000
        let first = (0..<5).map { index in backend.admitsSpans(nowNanos: 7 * second + UInt64(index) * 1_000) }
        #expect(first == [true, true, true, false, false])
        #expect(backend.droppedRequests.load(ordering: .relaxed) == 2)
        #expect(backend.admitsSpans(nowNanos: 8 * second))
        #expect(backend.admitsSpans(nowNanos: 8 * second + second - 1))
        #expect(backend.droppedRequests.load(ordering: .relaxed) == 2)
    }

    /// Tollgate's engine writes a sampled request's spans when it ends and queues them for the
    /// exporter; once `max_queue` spans wait (the collector down, say), further sampled requests get
    /// none, and are counted. Their trace context stays sampled.
    @Test func theBuiltInEngineQueuesSpansUpToMaxQueue() throws {
        let closed = ClosedPort()
        let tracing = try plugin(OpenTelemetryPlugin.self, """
            {endpoint: "http://127.0.0.1:\(closed.port)", sampling: 1, max_queue: 4, max_batch: 4, batch_delay: 1h, service_name: queue-test}
            """)
        let backend = try #require(tracing.backend)
        #expect(backend.tracer == nil && backend.exporter != nil)
        let attempt = UpstreamAttempt(target: "127.0.0.1:9", startNanos: 10, endNanos: 20, status: 200, error: nil)
        let summary = RequestSummary(status: 200, bytesReceived: 0, bytesSent: 0, startNanos: 0, endNanos: 30, upstream: nil,
                                     errorReason: nil, attempts: [attempt])
        for _ in 0..<2 {
            var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
            tracing.begin(traceparent: nil, tracestate: nil, context: &context)
            #expect(context.trace?.sampled == true)
            #expect(context.trace?.span != nil)
            tracing.onLog(context: context, summary: summary)   // a server span and a client span each
        }
        #expect(backend.droppedRequestsTotal == 0)

        // The queue's bound, on an exporter whose batch (100) is never full, so nothing is sent
        // before the hour's delay and the queue stays as filled.
        var settings = TracingBackend.Settings(endpoint: "http://127.0.0.1:\(closed.port)")
        settings.maxQueue = 4
        settings.maxBatch = 100
        settings.batchDelay = .seconds(3_600)
        let full = try TracingBackend(settings: settings)
        let exporter = try #require(full.exporter)
        #expect(exporter.enqueue(OTLPSpanWriter.sample(spans: 2)))
        #expect(full.admitsSpans())
        #expect(exporter.enqueue(OTLPSpanWriter.sample(spans: 2)))
        #expect(exporter.hasRoom == false)
        #expect(full.admitsSpans() == false)
        #expect(full.droppedRequestsTotal == 1)
        // A request admitted while there was room, whose spans then do not fit, is counted too.
        #expect(exporter.enqueue(OTLPSpanWriter.sample(spans: 1)) == false)
        #expect(full.droppedRequestsTotal == 2)
    }

    /// A collector that cannot be reached: the batch is tried again with backoff, then dropped and
    /// counted; the queue is empty again.
    @Test func aBatchTheCollectorNeverTakesIsDroppedAndCounted() async throws {
        let closed = ClosedPort()
        var settings = TracingBackend.Settings(endpoint: "http://127.0.0.1:\(closed.port)")
        settings.batchDelay = .milliseconds(10)
        settings.timeout = .milliseconds(500)
        settings.maxQueue = 3
        let exporter = OTLPTraceExporter(settings: settings)
        #expect(exporter.enqueue(OTLPSpanWriter.sample(spans: 3)))   // taken for sending within 10 ms
        let deadline = ContinuousClock.now + .seconds(15)
        while exporter.droppedRequests == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(exporter.droppedRequests == 1)
        #expect(exporter.exportedSpans == 0)
        #expect(exporter.hasRoom)
    }
}

extension OTLPSpanWriter {
    static func sample(spans: Int) -> OTLPSpanWriter {
        var writer = OTLPSpanWriter()
        for index in 0..<spans {
            writer.span(traceIDHigh: 1, traceIDLow: 2, spanID: UInt64(index + 1), parentID: 0, traceState: nil, name: "s", kind: .server,
                        startNanos: 1, endNanos: 2, attributes: [], error: false)
        }
        return writer
    }
}
