import Dispatch
import Testing
import TollgateCore
import TollgateObservability
@testable import TollgatePlugins
import TollgateTesting

@Suite struct OpenTelemetryPluginTests {
    /// While the telemetry thread is held, sampled requests beyond `max_queue` waiting jobs have their
    /// spans dropped and counted: the queue never grows without bound, and the requests go on.
    @Test func spansBeyondTheQueueAreDroppedAndCounted() throws {
        let closed = ClosedPort()
        let tracing = try plugin(OpenTelemetryPlugin.self, """
            {endpoint: "http://127.0.0.1:\(closed.port)", sampling: 1, max_queue: 2, max_batch: 1, service_name: drop-test}
            """)
        let backend = try #require(tracing.backend)
        let gate = DispatchSemaphore(value: 0)
        let started = DispatchSemaphore(value: 0)
        BackgroundWorker.telemetry.submit { started.signal(); gate.wait() }
        started.wait()
        for _ in 0..<10 {
            var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
            tracing.begin(traceparent: nil, tracestate: nil, context: &context)
            #expect(context.trace?.sampled == true)
            tracing.onLog(context: context, summary: RequestSummary(status: 200, bytesReceived: 0, bytesSent: 0, startNanos: 0,
                                                                    endNanos: 0, upstream: nil, errorReason: nil))
        }
        // At most two waited (fewer when other jobs, the exporter's own, were queued first).
        let dropped = backend.droppedRequests.load(ordering: .relaxed)
        gate.signal()
        BackgroundWorker.telemetry.sync()
        #expect(dropped >= 8 && dropped <= 10, "dropped \(dropped)")
    }
}
