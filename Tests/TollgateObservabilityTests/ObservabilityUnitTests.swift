import Foundation
import NIOCore
import NIOEmbedded
import Logging
import Synchronization
import Testing
import TollgateCore
@testable import TollgateObservability

@Suite struct AccessLogFormatTests {
    static let now: Int64 = 1_795_788_307_500   // 2026-11-27T14:05:07.500Z, when the response ended

    static func head(_ text: String) -> RawHead {
        var head = RawHead()
        let buffer = ByteBuffer(string: text)
        guard case .complete = HeadParser(kind: .request).parse(buffer, into: &head) else { fatalError("bad head") }
        return head
    }

    static func request(target: String = "/users/7?token=abc&page=2", consumer: String? = "alice")
        -> (context: RequestContext, summary: RequestSummary) {
        var context = RequestContext(requestID: "req-1", clientIP: "10.0.0.9")
        if let consumer { context.consumer = Consumer(name: consumer, id: "c-1") }
        context.rateLimitOutcome = "allowed"
        context.trace = TraceContext(traceIDHigh: 0x4bf9_2f35_77b3_4da6, traceIDLow: 0xa3ce_929d_0e0e_4736, spanID: 0x00f0_67aa_0ba9_02b7,
                                     sampled: false)
        context.pluginTimings = [1_500_000, 250_000]
        let summary = RequestSummary(status: 200, bytesReceived: 12, bytesSent: 345, startNanos: 1_000_000_000,
                                     endNanos: 1_012_345_678, upstream: "127.0.0.1:9001", errorReason: nil,
                                     head: head("GET \(target) HTTP/1.1\r\nHost: api.test\r\nUser-Agent: curl/8.0 \"quoted\"\r\n\r\n"),
                                     upstreamNanos: 10_000_000, routeName: "users", serviceName: "app")
        return (context, summary)
    }

    static func line(_ format: AccessLogFormat, target: String = "/users/7?token=abc&page=2", consumer: String? = "alice",
                     names: [String]? = nil) -> String {
        let (context, summary) = request(target: target, consumer: consumer)
        return format.line(context: context, summary: summary, nowMillis: now, pluginNames: names)
    }

    @Test func jsonHasEveryFieldInOrder() throws {
        let format = AccessLogFormat(redactedParameters: ["TOKEN"])
        let line = Self.line(format)
        #expect(line.hasSuffix("}\n"))
        #expect(line.hasPrefix(#"{"timestamp":"2026-11-27T14:05:07.488Z","request_id":"req-1","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","client_ip":"10.0.0.9","method":"GET","host":"api.test","path":"/users/7","query":"token=REDACTED&page=2","protocol":"HTTP/1.1","status":200,"bytes_in":12,"bytes_out":345,"latency_ms":12.345,"upstream_latency_ms":10.000,"gateway_overhead_ms":2.345,"route":"users","service":"app","upstream":"127.0.0.1:9001","consumer":"alice","rate_limit":"allowed","cache":null,"user_agent":"curl/8.0 \"quoted\"","error":null}"#))
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        #expect(object.count == AccessLogFormat.Field.defaults.count)
    }

    /// The default fields have a straight-through writer of their own; it must write what the
    /// field-by-field one writes for the same fields.
    @Test(arguments: ["/users/7?token=abc&page=2", "/", "/a%22b?x=\"y\""], [nil, "alice"])
    func defaultLineMatchesTheFieldByFieldOne(target: String, consumer: String?) {
        for redacted in [[], ["token"]] as [Set<String>] {
            let whole = Self.line(AccessLogFormat(redactedParameters: redacted), target: target, consumer: consumer)
            let pieces = AccessLogFormat.Field.defaults.map { field in
                Self.line(AccessLogFormat(fields: [field], redactedParameters: redacted), target: target, consumer: consumer)
                    .dropFirst().dropLast(2)   // {"key":value}\n -> "key":value
            }
            #expect(whole == "{" + pieces.joined(separator: ",") + "}\n")
        }
    }

    @Test func selectedFieldsAndPluginTimings() {
        let format = AccessLogFormat(fields: [.status, .pluginTimings, .path])
        #expect(Self.line(format, names: ["jwt", "rate-limiting"]) == #"{"status":200,"plugin_timings_ms":{"jwt":1.500,"rate-limiting":0.250},"path":"/users/7"}"# + "\n")
    }

    @Test func combinedLogFormat() {
        let format = AccessLogFormat(style: .combined, redactedParameters: ["token"])
        #expect(Self.line(format) == #"10.0.0.9 - alice [27/Nov/2026:14:05:07 +0000] "GET /users/7?token=REDACTED&page=2 HTTP/1.1" 200 345 "-" "curl/8.0 \x22quoted\x22""# + "\n")
        #expect(Self.line(format, target: "/", consumer: nil).hasPrefix(#"10.0.0.9 - - [27/Nov/2026:14:05:07 +0000] "GET / HTTP/1.1" 200"#))
    }

    @Test func redactionMatchesEncodedNamesAndKeepsTheRest() {
        let format = AccessLogFormat(redactedParameters: ["api_key", "token"])
        #expect(format.redacted("api%5Fkey=1&x=2&TOKEN=3&tokenish=4&=5&api_key") == "api%5Fkey=REDACTED&x=2&TOKEN=REDACTED&tokenish=4&=5&api_key=REDACTED")
        #expect(format.redacted("a=1") == "a=1")
    }

    @Test func controlCharactersAreEscaped() throws {
        var out: [UInt8] = []
        Bytes.quote("a\u{1}b\n\u{7F}é", into: &out)
        #expect(String(decoding: out, as: UTF8.self) == #""a\u0001b\n\u007fé""#)
        #expect(try JSONSerialization.jsonObject(with: Data(out), options: .fragmentsAllowed) as? String == "a\u{1}b\n\u{7F}é")
    }

    @Test func lineWriterCopiesEveryLength() {
        let source = (0..<100).map { UInt8($0 + 1) }
        for length in 0...100 {
            let memory = UnsafeMutablePointer<UInt8>.allocate(capacity: 256)
            defer { memory.deallocate() }
            memory.initialize(repeating: 0xEE, count: 256)
            var out = LineWriter(base: memory, capacity: 256, count: 3)
            source.withUnsafeBytes { out.bytes(UnsafeRawBufferPointer(rebasing: $0[0..<length])) }
            #expect(out.count == 3 + length)
            #expect(Array(UnsafeBufferPointer(start: memory + 3, count: length)) == Array(source[0..<length]))
            #expect(memory[2] == 0xEE && memory[3 + length] == 0xEE)
        }
        var small = LineWriter(base: UnsafeMutablePointer<UInt8>.allocate(capacity: 4), capacity: 4, count: 0)
        small.ascii("12345")
        #expect(small.overflowed && small.count == 0)
        small.base.deallocate()
    }

    @Test func anOverlongLineIsReplacedByAShortOne() throws {
        var (context, summary) = Self.request()
        func with(_ head: RawHead) -> RequestSummary {
            RequestSummary(status: summary.status, bytesReceived: summary.bytesReceived, bytesSent: summary.bytesSent,
                           startNanos: summary.startNanos, endNanos: summary.endNanos, upstream: summary.upstream,
                           errorReason: summary.errorReason, head: head)
        }
        var head = RawHead()
        let agent = String(repeating: "\"", count: 40_000)   // 80 000 bytes once escaped
        guard case .complete = HeadParser(kind: .request, maxHeaderSize: 64 << 10)
            .parse(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: \(agent)\r\n\r\n"), into: &head) else {
            Issue.record("head not parsed")
            return
        }
        summary = with(head)
        let line = AccessLogFormat().line(context: context, summary: summary, nowMillis: Self.now)
        #expect(line == #"{"error":"access-log line longer than 64KB","request_id":"req-1","status":200}"# + "\n")
        context.requestID = "next"
        summary = with(Self.head("GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(AccessLogFormat(fields: [.path]).line(context: context, summary: summary, nowMillis: Self.now) == #"{"path":"/ok"}"# + "\n")
    }

    @Test func escapingCheckAgreesWithTheNaiveOne() {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = Array("abcXYZ019 /?&=-_.~".utf8) + [0x00, 0x09, 0x0A, 0x1F, 0x20, 0x22, 0x5C, 0x7E, 0x7F, 0x80, 0xC3, 0xA9, 0xFF]
        for length in 0..<40 {
            for _ in 0..<200 {
                let bytes = (0..<length).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
                let naive = bytes.contains { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C || $0 == 0x7F }
                #expect(bytes.withUnsafeBytes { LineWriter.needsEscaping($0) } == naive, "\(bytes)")
            }
        }
        // Every byte value at the start, middle and end of plain text of each length up to 20 (the
        // word-at-a-time paths: under 4 bytes, 4 to 7, 8 and more with an overlapping last word).
        for length in 1...20 {
            for position in Set([0, length / 2, length - 1]) {
                for byte in 0...255 {
                    var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: length)
                    bytes[position] = UInt8(byte)
                    let naive = byte < 0x20 || byte == 0x22 || byte == 0x5C || byte == 0x7F
                    #expect(bytes.withUnsafeBytes { LineWriter.needsEscaping($0) } == naive, "byte \(byte) at \(position) of \(length)")
                }
            }
        }
    }

    @Test func timestampsWithoutFoundation() {
        #expect(Bytes.rfc3339(millis: 0) == "1970-01-01T00:00:00.000Z")
        #expect(Bytes.rfc3339(millis: 951_782_400_007) == "2000-02-29T00:00:00.007Z")
        #expect(Bytes.rfc3339(millis: -1) == "1969-12-31T23:59:59.999Z")
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        for millis: Int64 in [1_795_788_307_123, 4_102_444_799_999, 1_234_567_890_001] {
            #expect(Bytes.rfc3339(millis: millis) == formatter.string(from: Date(timeIntervalSince1970: Double(millis) / 1000)))
        }
        let memory = UnsafeMutablePointer<UInt8>.allocate(capacity: 256)
        defer { memory.deallocate() }
        var out = LineWriter(base: memory, capacity: 256, count: 0)
        out.millis(12_345_678)
        out.millis(999)
        out.integer(-42)
        out.unsigned(18_446_744_073_709_551_615)
        var cache = TimestampCache()
        cache.rfc3339(millis: 1_795_788_307_123, into: &out)
        cache.rfc3339(millis: 1_795_788_307_999, into: &out)
        #expect(String(decoding: UnsafeBufferPointer(start: memory, count: out.count), as: UTF8.self)
                == "12.3450.000-4218446744073709551615" + "2026-11-27T14:05:07.123Z2026-11-27T14:05:07.999Z")
    }

    @Test func bulkBodies() {
        let shipper = HTTPLogShipper(settings: { var s = HTTPLogShipper.Settings(url: "http://127.0.0.1:1/_bulk"); s.index = "logs-%Y.%m.%d"; return s }())
        let lines: [ArraySlice<UInt8>] = [ArraySlice(Self.line(AccessLogFormat(fields: [.timestamp, .status])).utf8.dropLast()),
                                          ArraySlice(#"{"status":200}"#.utf8)]
        #expect(String(decoding: shipper.body(lines, now: 1_000_000_000_000), as: UTF8.self) == """
            {"index":{"_index":"logs-2026.11.27"}}
            {"timestamp":"2026-11-27T14:05:07.488Z","status":200}
            {"index":{"_index":"logs-2001.09.09"}}
            {"status":200}

            """)
        let logstash = HTTPLogShipper(settings: { var s = HTTPLogShipper.Settings(url: "http://127.0.0.1:1/"); s.format = .logstash; return s }())
        #expect(String(decoding: logstash.body(lines, now: 0), as: UTF8.self) == #"[{"timestamp":"2026-11-27T14:05:07.488Z","status":200},{"status":200}]"#)
    }

    @Test func poolKeepsEachBufferOnceAndOnlyBatchSizedOnes() {
        let pool = LineBufferPool(keep: 2)
        let a = pool.take(), b = pool.take(), c = pool.take()
        pool.give(a)
        pool.give(a)                          // twice: kept once, or two batches would share it
        pool.give(LineBuffer(capacity: 10))   // not batch-sized: freed
        pool.give(b)
        pool.give(c)                          // beyond `keep`: freed
        let first = pool.take(), second = pool.take(), third = pool.take()
        #expect(first === b && second === a)
        #expect(third !== a && third !== b && third !== c)
    }

    /// Batches of at least a quarter of the batch size are handed over in their own buffer, which
    /// comes back through the pool while the sink writes: a buffer reused before it was written would
    /// show as a lost or mangled line. (Smaller ones, and lines logged off an event loop, are copied.)
    @Test func linesSurviveTheBufferPool() throws {
        let path = NSTemporaryDirectory() + "tollgate-pool-\(UUID().uuidString).log"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let sink = StreamLogSink(destination: .file(path))
        let log = AccessLog(format: AccessLogFormat(fields: [.requestID, .status]), destination: sink)
        let loop = EmbeddedEventLoop()
        let (_, summary) = AccessLogFormatTests.request()
        var index = 0
        for _ in 0..<30 {
            // About 80 KB of lines, then the flush timer: one hand-over of the buffer itself.
            for _ in 0..<2_000 {
                log.log(context: RequestContext(requestID: RequestID("req-\(index)"), clientIP: "10.0.0.9", eventLoop: loop),
                        summary: summary)
                index += 1
            }
            loop.advanceTime(by: AccessLog.batchDelay)
        }
        log.log(context: RequestContext(requestID: RequestID("req-\(index)"), clientIP: "10.0.0.9"), summary: summary)
        sink.flush()
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == index + 1)
        #expect(lines.enumerated().allSatisfy { $1 == #"{"request_id":"req-\#($0)","status":200}"# })
        #expect(sink.dropped == 0)
    }

    @Test func fileSinkDropsTheOldestBeyondItsBuffer() async throws {
        let path = NSTemporaryDirectory() + "tollgate-sink-\(UUID().uuidString).log"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let sink = StreamLogSink(destination: .file(path), capacityBytes: 10)
        sink.flush()
        for line in ["a\n", "b\n", "c\n"] { sink.deliver(LineChunk(bytes: Array(line.utf8), lines: 1)) }
        sink.flush()
        let written = try String(contentsOfFile: path, encoding: .utf8)
        #expect(written.hasSuffix("c\n"))
        #expect(sink.dropped + written.split(separator: "\n").count == 3)
    }
}

@Suite struct TraceContextTests {
    @Test func parsesValidTraceparents() throws {
        let parsed = try #require(TraceParent.parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
        #expect(parsed == TraceParent.Parsed(traceIDHigh: 0x4bf9_2f35_77b3_4da6, traceIDLow: 0xa3ce_929d_0e0e_4736,
                                             parentID: 0x00f0_67aa_0ba9_02b7, sampled: true))
        let context = TraceContext(traceIDHigh: parsed.traceIDHigh, traceIDLow: parsed.traceIDLow, spanID: 0xab, sampled: true)
        #expect(context.traceparent == "00-4bf92f3577b34da6a3ce929d0e0e4736-00000000000000ab-01")
        #expect(context.traceID == "4bf92f3577b34da6a3ce929d0e0e4736" && context.spanIDHex == "00000000000000ab")
        #expect(TraceParent.parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")?.sampled == false)
        #expect(TraceParent.parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03")?.sampled == true)
        // A later version may append fields; it is read as version 00.
        #expect(TraceParent.parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra") != nil)
    }

    @Test func rejectsMalformedTraceparents() {
        for bad in ["", "00", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                    "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"] {
            #expect(TraceParent.parse(bad) == nil, "\(bad)")
        }
    }

    @Test func generatedIDsAreDistinctAndRoundTrip() {
        let ids = TraceIDGenerator(seed: 42)
        var seen = Set<UInt64>()
        for _ in 0..<1_000 {
            let context = TraceContext(traceIDHigh: ids.next(), traceIDLow: ids.next(), spanID: ids.next(), sampled: false)
            seen.insert(context.traceIDLow)
            let parsed = TraceParent.parse(context.traceparent)
            #expect(parsed?.traceIDHigh == context.traceIDHigh && parsed?.traceIDLow == context.traceIDLow && parsed?.parentID == context.spanID)
        }
        #expect(seen.count == 1_000)
    }

    @Test func threadsDrawDistinctIDs() async {
        let ids = TraceIDGenerator(seed: 42)
        let drawn = await withTaskGroup(of: [UInt64].self) { group in
            for _ in 0..<4 {
                group.addTask { await Task.detached { (0..<5_000).map { _ in ids.next() } }.value }
            }
            var all: [UInt64] = []
            for await part in group { all += part }
            return all
        }
        #expect(drawn.count == 20_000 && Set(drawn).count == 20_000 && !drawn.contains(0))
    }

    @Test func samplerFollowsItsRatio() {
        let ids = TraceIDGenerator(seed: 7)
        for ratio in [0.0, 0.01, 0.25, 1.0] {
            let sampler = TraceSampler(ratio: ratio)
            let sampled = (0..<20_000).filter { _ in sampler.samples(traceIDLow: ids.next()) }.count
            #expect(abs(Double(sampled) / 20_000 - ratio) < 0.01, "ratio \(ratio): \(sampled)")
        }
    }
}

@Suite struct JSONLogHandlerTests {
    final class Lines: Sendable {
        let lines = Mutex<[String]>([])
        var all: [String] { lines.withLock { $0 } }
    }

    @Test func writesOneJSONObjectPerLineWithMetadata() throws {
        let captured = Lines()
        let levels = JSONLogHandler.Levels()
        var config = LoggingConfig()
        config.modules = ["tollgate.redis": .debug, "tollgate.auth": .error]
        levels.update(config)
        func logger(_ label: String) -> Logger {
            Logger(label: label) { JSONLogHandler(label: $0, levels: levels) { bytes in captured.lines.withLock { $0.append(String(decoding: bytes, as: UTF8.self)) } } }
        }
        var reload = logger("tollgate.reload")
        reload[metadataKey: "generation"] = "3"
        reload.info("config reloaded", metadata: ["reason": "SIGHUP", "routes": .array(["a", "b"])])
        reload.debug("not shown: default level is info")
        logger("tollgate.redis.pool").debug("shown: the module says debug")
        logger("tollgate.auth").warning("not shown: the module says error")
        let lines = captured.all
        try #require(lines.count == 2)
        #expect(lines.allSatisfy { $0.hasSuffix("}\n") })
        let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as! [String: Any]
        #expect(first["level"] as? String == "info")
        #expect(first["logger"] as? String == "tollgate.reload")
        #expect(first["message"] as? String == "config reloaded")
        #expect(first["generation"] as? String == "3")
        #expect(first["reason"] as? String == "SIGHUP")
        #expect(first["routes"] as? [String] == ["a", "b"])
        #expect((first["timestamp"] as? String)?.hasSuffix("Z") == true)
        #expect(lines[1].contains(#""logger":"tollgate.redis.pool""#))
        levels.overrideDefault(.trace)
        #expect(levels.level(for: "tollgate.reload") == .trace)
        #expect(levels.level(for: "tollgate.auth") == .error)   // a module's own level beats the command line
    }
}

@Suite struct GatewayMetricsTests {
    @Test func shardsOfSeveralThreadsAddUp() async throws {
        let metrics = GatewayMetrics(version: "test")
        await withTaskGroup(of: Void.self) { group in
            for thread in 0..<4 {
                group.addTask {
                    let done = Mutex(false)
                    let worker = Thread {
                        for index in 0..<1_000 {
                            metrics.record(RequestObservation(route: "r", service: "s", method: index % 2 == 0 ? 0 : RequestObservation.methodIndex("MKCOL"),
                                                              status: 200 + thread, latencyNanos: UInt64(index) * 100_000,
                                                              upstreamNanos: nil, bytesIn: 1, bytesOut: 2))
                        }
                        done.withLock { $0 = true }
                    }
                    worker.start()
                    while !done.withLock({ $0 }) { try? await Task.sleep(for: .milliseconds(5)) }
                }
            }
        }
        let text = metrics.render()
        #expect(text.contains(#"tollgate_requests_total{route="r",service="s",method="GET",status_class="2xx"} 2000"#))
        #expect(text.contains(#"tollgate_requests_total{route="r",service="s",method="OTHER",status_class="2xx"} 2000"#))
        #expect(text.contains(#"tollgate_request_duration_seconds_bucket{route="r",service="s",method="GET",status_class="2xx",le="+Inf"} 2000"#))
        // 0, 0.2 ms ... 99.8 ms in steps of 0.2 ms: the 0.5 ms bucket holds 0, 0.2, 0.4 of each thread.
        #expect(text.contains(#"tollgate_request_duration_seconds_bucket{route="r",service="s",method="GET",status_class="2xx",le="0.0005"} 12"#))
        #expect(text.contains(#"tollgate_response_bytes_total{route="r",service="s",method="GET",status_class="2xx"} 4000"#))
        #expect(!text.contains("tollgate_upstream_duration_seconds_bucket"))
        #expect(text.contains(#"tollgate_build_info{version="test"} 1"#))
    }

    @Test func methodLabelsFromTheHeadBytes() {
        let cases: [(String, String)] = [("GET", "GET"), ("POST", "POST"), ("PUT", "PUT"), ("DELETE", "DELETE"), ("PATCH", "PATCH"),
                                         ("HEAD", "HEAD"), ("OPTIONS", "OPTIONS"), ("CONNECT", "CONNECT"), ("TRACE", "TRACE"),
                                         ("MKCOL", "OTHER"), ("PURGE", "OTHER"), ("GOT", "OTHER"), ("PUTS", "OTHER"), ("DELETES", "OTHER"),
                                         ("CONNECX", "OTHER"), ("TRACK", "OTHER"), ("PATCX", "OTHER")]
        for (method, label) in cases {
            let head = AccessLogFormatTests.head("\(method) / HTTP/1.1\r\nHost: a\r\n\r\n")
            #expect(RequestObservation.methods[Int(RequestObservation.methodIndex(head))] == label, "\(method)")
        }
    }

    @Test func labelValuesAreEscaped() {
        let metrics = GatewayMetrics(version: "1")
        metrics.record(RequestObservation(route: "a\"b\\c\nd", service: "", method: 0, status: 503, latencyNanos: 1,
                                          upstreamNanos: 1, bytesIn: 0, bytesOut: 0))
        #expect(metrics.render().contains(#"tollgate_requests_total{route="a\"b\\c\nd",service="",method="GET",status_class="5xx"} 1"#))
    }
}

@Suite struct BackgroundWorkerTests {
    /// Jobs submitted to the worker run in order, and `sync` returns after them.
    @Test func jobsRunInOrder() {
        let worker = BackgroundWorker(name: "test-worker")
        let seen = Mutex<[Int]>([])
        for index in 0..<100 { worker.submit { seen.withLock { $0.append(index) } } }
        worker.sync()
        #expect(seen.withLock { $0 } == Array(0..<100))
    }

    /// The thread carries its name (what `top -H` and `/proc/PID/task/*/comm` show), cut to Linux's
    /// 15 bytes, and runs at nice 10.
    @Test func threadIsNamedAndNiced() throws {
        let worker = BackgroundWorker(name: "test-named-worker-thread")
        let found = Mutex<(name: String, nice: Int32)?>(nil)
        worker.submit {
            let name = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
            errno = 0
            let nice = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
            found.withLock { $0 = (name.trimmingCharacters(in: .newlines), nice) }
        }
        worker.sync()
        let seen = try #require(found.withLock { $0 })
        #expect(seen.name == "test-named-work")
        #expect(seen.nice == 10)
    }

    /// `waitingJobs` counts what was submitted and not yet taken: how far behind the worker is.
    @Test func waitingJobsCountsTheBacklog() {
        let worker = BackgroundWorker(name: "test-backlog")
        let gate = DispatchSemaphore(value: 0)
        let started = DispatchSemaphore(value: 0)
        worker.submit { started.signal(); gate.wait() }   // holds the thread while jobs queue
        started.wait()
        #expect(worker.waitingJobs == 0)
        for _ in 0..<3 { worker.submit {} }
        #expect(worker.waitingJobs == 3)
        gate.signal()
        worker.sync()
        #expect(worker.waitingJobs == 0)
    }
}
