import Dispatch
import Testing
import TollgateCore
import TollgateObservability
@testable import TollgatePlugins
import TollgateTesting

@Suite struct OpenTelemetryPluginTests {
    /// While more than `max_queue` jobs wait for the telemetry thread, sampled requests get no spans
    /// (counted), so nothing piles up in the exporter; their trace context is still propagated as
    /// sampled. Once the thread catches up, spans are made again.
    @Test func aBackloggedTelemetryThreadRefusesSpansAndCountsThem() throws {
        let closed = ClosedPort()
        let tracing = try plugin(OpenTelemetryPlugin.self, """
            {endpoint: "http://127.0.0.1:\(closed.port)", sampling: 1, max_queue: 200, max_batch: 1, service_name: backlog-test}
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
}
