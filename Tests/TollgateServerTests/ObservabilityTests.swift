import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing
import TollgateCore
import TollgateObservability
import TollgatePlugins
import TollgateServer
import TollgateTesting

/// Access logs, /metrics and traces through a real gateway: what each request leaves behind.
@Suite struct ObservabilityTests {
    static func temporaryPath(_ name: String) -> String {
        NSTemporaryDirectory() + "tollgate-\(name)-\(UUID().uuidString)"
    }

    /// The JSON objects of a log file, once it has at least `count` lines (the writer is asynchronous).
    static func logLines(_ path: String, count: Int, timeout: Duration = .seconds(5)) async throws -> [[String: Any]] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            let lines = text.split(separator: "\n")
            if lines.count >= count || ContinuousClock.now > deadline {
                return try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    static func adminGet(_ harness: Harness, _ path: String) async throws -> String {
        let port = harness.server.adminAddresses[0].port!
        let result = try await RawClient.exchange("GET \(path) HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
                                                  port: port, group: harness.group)
        return result.text
    }

    @Test func accessLogRecordsProxiedNotFoundLocalAndUpstreamErrors() async throws {
        let path = Self.temporaryPath("access") + ".log"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let closed = ClosedPort()
        try await Harness.with("""
            services:
              app: {targets: [{url: "$UPSTREAM0"}]}
              down: {targets: [{url: "http://127.0.0.1:\(closed.port)"}]}
            routes:
              - {name: users, match: {paths: ["/users/{id}"]}, service: app}
              - {name: gone, match: {paths: ["/gone"]}, plugins: [{name: request-termination, config: {status: 429, message: "slow down"}}]}
              - {name: broken, match: {paths: ["/broken"]}, service: down}
            plugins:
              - {name: access-log, config: {sink: {file: "\(path)"}, redact_query: [token]}}
            """) { harness in
            let ok = try await harness.send("GET /users/7?token=secret&page=2 HTTP/1.1\r\nHost: api.test\r\nUser-Agent: probe/1.0\r\nX-Request-ID: req-1\r\nConnection: close\r\n\r\n")
            #expect(ok.status == 200)
            #expect(try await harness.get("/nowhere").status == 404)
            #expect(try await harness.get("/gone").status == 429)
            #expect(try await harness.get("/broken").status == 502)
            let lines = try await Self.logLines(path, count: 4)
            try #require(lines.count == 4)
            let byPath = Dictionary(uniqueKeysWithValues: lines.map { ($0["path"] as! String, $0) })
            let proxied = try #require(byPath["/users/7"])
            #expect(proxied["status"] as? Int == 200)
            #expect(proxied["method"] as? String == "GET")
            #expect(proxied["host"] as? String == "api.test")
            #expect(proxied["query"] as? String == "token=REDACTED&page=2")
            #expect(proxied["request_id"] as? String == "req-1")
            #expect(proxied["route"] as? String == "users")
            #expect(proxied["service"] as? String == "app")
            #expect(proxied["upstream"] as? String == harness.upstreams[0].url.replacingOccurrences(of: "http://", with: ""))
            #expect(proxied["user_agent"] as? String == "probe/1.0")
            #expect(proxied["protocol"] as? String == "HTTP/1.1")
            #expect(proxied["client_ip"] as? String == "127.0.0.1")
            #expect((proxied["bytes_out"] as? Int ?? 0) > 0)
            let latency = try #require(proxied["latency_ms"] as? Double)
            let upstream = try #require(proxied["upstream_latency_ms"] as? Double)
            let overhead = try #require(proxied["gateway_overhead_ms"] as? Double)
            #expect(upstream <= latency && abs(latency - upstream - overhead) < 0.01)
            #expect(proxied["error"] is NSNull)
            let timestamp = try #require(proxied["timestamp"] as? String)
            #expect(timestamp.count == 24 && timestamp.hasSuffix("Z") && timestamp.contains("T"))

            let missing = try #require(byPath["/nowhere"])
            #expect(missing["status"] as? Int == 404)
            #expect(missing["route"] is NSNull)
            #expect(missing["error"] as? String == "no route matched")
            #expect(missing["upstream_latency_ms"] is NSNull)

            let local = try #require(byPath["/gone"])
            #expect(local["status"] as? Int == 429)
            #expect(local["route"] as? String == "gone")
            #expect(local["upstream"] is NSNull)

            let failed = try #require(byPath["/broken"])
            #expect(failed["status"] as? Int == 502)
            #expect(failed["error"] as? String == "upstream connection failed")
            #expect(failed["upstream"] as? String == "127.0.0.1:\(closed.port)")
            #expect(failed["upstream_latency_ms"] is Double)
        }
    }

    @Test func accessLogFileIsReopenedAfterRotation() async throws {
        let path = Self.temporaryPath("rotate") + ".log"
        let rotated = path + ".1"
        defer {
            try? FileManager.default.removeItem(atPath: path)
            try? FileManager.default.removeItem(atPath: rotated)
        }
        try await Harness.with("""
            services: {app: {targets: [{url: "$UPSTREAM0"}]}}
            routes: [{match: {paths: ["/{path...}"]}, service: app}]
            plugins: [{name: access-log, config: {format: combined, sink: {file: "\(path)"}}}]
            """) { harness in
            _ = try await harness.get("/before")
            #expect(try await Self.rawLines(path, count: 1).count == 1)
            try FileManager.default.moveItem(atPath: path, toPath: rotated)
            // Until told, the writer keeps its open file (now the rotated one).
            _ = try await harness.get("/still-old")
            #expect(try await Self.rawLines(rotated, count: 2).count == 2)
            OpenLogFiles.shared.reopenAll()   // what SIGUSR1 does
            _ = try await harness.get("/after")
            let fresh = try await Self.rawLines(path, count: 1)
            #expect(fresh.count == 1)
            #expect(fresh.first?.contains("\"GET /after HTTP/1.1\" 200") == true)
            let old = try await Self.rawLines(rotated, count: 2)
            #expect(old.count == 2 && old[0].hasPrefix("127.0.0.1 - - [") && old[1].contains("/still-old"))
        }
    }

    static func rawLines(_ path: String, count: Int) async throws -> [String] {
        let deadline = ContinuousClock.now + .seconds(5)
        while true {
            let lines = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            if lines.count >= count || ContinuousClock.now > deadline { return lines }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test func accessLogShipsElasticsearchBulkBatches() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let receiver = try await StubUpstream(group: group) { _ in StubResponse(body: .bytes(#"{"errors":false}"#)) }
        try await Harness.with("""
            services: {app: {targets: [{url: "$UPSTREAM0"}]}}
            routes: [{name: r, match: {paths: ["/item/{id}"]}, service: app}]
            plugins:
              - {name: access-log, config: {fields: [timestamp, status, path, route], sink: {http: {url: "\(receiver.url)/_bulk", format: elasticsearch_bulk, index: "gw-%Y.%m.%d", batch: 3, flush: 1s}}}}
            """) { harness in
            for index in 0..<5 { #expect(try await harness.get("/item/\(index)").status == 200) }
            let deadline = ContinuousClock.now + .seconds(5)
            while receiver.requests.flatMap({ $0.bodyString.split(separator: "\n") }).count < 10 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            let posts = receiver.requests
            // Batches of at most 3 (a full one goes at once, the rest after the flush interval; on a loaded
            // machine the requests may span a flush, giving three posts).
            #expect(posts.count >= 2 && posts.count <= 4, "\(posts.count)")
            #expect(posts.allSatisfy { $0.bodyString.split(separator: "\n").count <= 6 })
            #expect(posts.allSatisfy { $0.head.method == .POST && $0.head.uri == "/_bulk" })
            #expect(posts.allSatisfy { $0.head.headers["content-type"].first == "application/x-ndjson" })
            let lines = posts.flatMap { $0.bodyString.split(separator: "\n").map(String.init) }
            try #require(lines.count == 10)
            let today = Bytes.rfc3339(millis: WallClock.milliseconds()).prefix(10).replacing("-", with: ".")
            var paths: [String] = []
            for pair in stride(from: 0, to: lines.count, by: 2) {
                let action = try JSONSerialization.jsonObject(with: Data(lines[pair].utf8)) as! [String: [String: String]]
                #expect(action["index"]?["_index"] == "gw-\(today)")
                let document = try JSONSerialization.jsonObject(with: Data(lines[pair + 1].utf8)) as! [String: Any]
                #expect(Set(document.keys) == ["timestamp", "status", "path", "route"])
                paths.append(document["path"] as! String)
            }
            #expect(Set(paths) == Set((0..<5).map { "/item/\($0)" }))
        }
        try await receiver.close()
        try await group.shutdownGracefully()
    }

    @Test func aDownLogReceiverOnlyCostsCountedDrops() async throws {
        let closed = ClosedPort()
        try await Harness.with("""
            admin: {address: "127.0.0.1:0"}
            services: {app: {targets: [{url: "$UPSTREAM0"}]}}
            routes: [{match: {paths: ["/x"]}, service: app}]
            plugins:
              - {name: access-log, config: {sink: {http: {url: "http://127.0.0.1:\(closed.port)/_bulk", batch: 5, buffer: 10, flush: 50ms, max_retries: 1, backoff: 10ms, timeout: 1s}}}}
            """) { harness in
            // Alone these requests take under 0.1 s; beside the other suites on 2 cores, up to about 4 s.
            // A shipper that held an event loop while the receiver is down would cost at least the 1 s
            // timeout for each of its 2 attempts at each of the 12 batches: 24 s.
            let start = ContinuousClock.now
            for _ in 0..<60 { #expect(try await harness.get("/x").status == 200) }
            #expect(ContinuousClock.now - start < .seconds(15))
            // Everything that did not fit the 10-record buffer, and every batch that failed, is counted
            // (a batch in flight fails after its two attempts: about 2 s).
            var dropped = 0.0
            let deadline = ContinuousClock.now + .seconds(8)
            while ContinuousClock.now < deadline {
                let metrics = try await Self.adminGet(harness, "/metrics")
                dropped = Self.value(in: metrics, #"tollgate_access_log_dropped_total{sink="http"}"#) ?? 0
                if dropped >= 50 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(dropped >= 50 && dropped <= 60, "dropped \(dropped)")
        }
    }

    static func value(in metrics: String, _ series: String) -> Double? {
        for line in metrics.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    /// Python's prometheus_client parses the exposition; the script checks every histogram (buckets
    /// cumulative, +Inf equal to _count) and prints the samples it found.
    static let prometheusCheck = #"""
    import sys, json
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for family in text_string_to_metric_families(sys.stdin.read()):
        out.setdefault("types", {})[family.name] = family.type
        if family.type == "histogram":
            series = {}
            for s in family.samples:
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                series.setdefault(key, {"buckets": [], "count": None})
                if s.name.endswith("_bucket"):
                    series[key]["buckets"].append((float(s.labels["le"]), s.value))
                elif s.name.endswith("_count"):
                    series[key]["count"] = s.value
            for key, h in series.items():
                values = [v for _, v in sorted(h["buckets"])]
                assert values == sorted(values), (family.name, key, "buckets not cumulative")
                assert sorted(h["buckets"])[-1][0] == float("inf"), (family.name, key, "no +Inf bucket")
                assert values[-1] == h["count"], (family.name, key, "+Inf != count")
        for s in family.samples:
            out.setdefault("samples", []).append([s.name, s.labels, s.value])
    print(json.dumps(out))
    """#

    @Test func metricsParseWithPrometheusAndAddUp() async throws {
        try await Harness.with("""
            admin: {address: "127.0.0.1:0"}
            consumers:
              - {name: alice, credentials: {key_auth: [{key: "alice-key-0123456789abcdef"}]}}
            services: {app: {targets: [{url: "$UPSTREAM0"}]}}
            routes:
              - {name: open, match: {paths: ["/open"]}, service: app, plugins: [{name: rate-limiting, config: {limits: ["2/min"], key: ip}}]}
              - {name: private, match: {paths: ["/private"]}, service: app, plugins: [{name: key-auth}]}
            plugins: [{name: prometheus}]
            """) { harness in
            for _ in 0..<3 { _ = try await harness.get("/open") }
            _ = try await harness.get("/private")
            _ = try await harness.get("/private", headers: ["X-API-Key: alice-key-0123456789abcdef"])
            _ = try await harness.get("/none")
            _ = try await harness.send("BREW /open HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            let text = try await Self.adminGet(harness, "/metrics")
            #expect(text.contains("Content-Type: text/plain; version=0.0.4"))
            let body = String(text[text.range(of: "\r\n\r\n")!.upperBound...])
            let parsed = try await Python.run(Self.prometheusCheck, input: Data(body.utf8))
            let json = try JSONSerialization.jsonObject(with: Data(parsed.utf8)) as! [String: Any]
            let types = json["types"] as! [String: String]
            #expect(types["tollgate_requests"] == "counter")
            #expect(types["tollgate_request_duration_seconds"] == "histogram")
            #expect(types["tollgate_upstream_duration_seconds"] == "histogram")
            #expect(types["tollgate_plugin_duration_seconds"] == "histogram")
            #expect(types["tollgate_build_info"] == "gauge")
            #expect(types["tollgate_connections_active"] == "gauge")
            #expect(types["tollgate_upstream_target_up"] == "gauge")
            let samples = (json["samples"] as! [[Any]]).map { (name: $0[0] as! String, labels: $0[1] as! [String: String], value: $0[2] as! Double) }
            func value(_ name: String, _ labels: [String: String]) -> Double? {
                samples.first { sample in sample.name == name && labels.allSatisfy { key, value in sample.labels[key] == value } }?.value
            }
            #expect(value("tollgate_requests_total", ["route": "open", "method": "GET", "status_class": "2xx", "service": "app"]) == 2)
            #expect(value("tollgate_requests_total", ["route": "open", "method": "GET", "status_class": "4xx"]) == 1)
            #expect(value("tollgate_requests_total", ["route": "open", "method": "OTHER"]) == 1)   // BREW: no label per made-up method
            #expect(value("tollgate_requests_total", ["route": "private", "status_class": "4xx"]) == 1)
            #expect(value("tollgate_requests_total", ["route": "unmatched", "status_class": "4xx"]) == 1)
            #expect(value("tollgate_rate_limit_decisions_total", ["route": "open", "outcome": "rejected"]) == 2)
            #expect(value("tollgate_rate_limit_decisions_total", ["route": "open", "outcome": "allowed"]) == 2)
            #expect(value("tollgate_auth_failures_total", ["route": "private", "reason": "missing_credentials"]) == 1)
            #expect(value("tollgate_request_duration_seconds_count", ["route": "open", "status_class": "2xx"]) == 2)
            #expect(value("tollgate_upstream_duration_seconds_count", ["route": "private", "status_class": "2xx"]) == 1)
            #expect((value("tollgate_plugin_duration_seconds_count", ["plugin": "key-auth"]) ?? 0) == 2)
            #expect((value("tollgate_plugin_duration_seconds_count", ["plugin": "rate-limiting"]) ?? 0) == 4)
            #expect(value("tollgate_upstream_target_up", ["service": "app"]) == 1)
            #expect(value("tollgate_build_info", ["version": TollgateVersion.current]) == 1)
            // Every metric shown is documented, and the Grafana dashboard uses documented names only.
            let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            let docs = try String(contentsOf: root.appendingPathComponent("docs/observability.md"), encoding: .utf8)
            for name in Set(samples.map(\.name)) {
                let base = ["_bucket", "_count", "_sum"].reduce(name) { $0.hasSuffix($1) ? String($0.dropLast($1.count)) : $0 }
                #expect(docs.contains("`\(base)`"), "undocumented metric \(base)")
            }
            let dashboard = try String(contentsOf: root.appendingPathComponent("docs/grafana/tollgate.json"), encoding: .utf8)
            _ = try JSONSerialization.jsonObject(with: Data(dashboard.utf8))
            let used = dashboard.split(whereSeparator: { !($0.isLetter || $0 == "_") }).filter { $0.hasPrefix("tollgate_") }
            #expect(used.count > 10)
            for name in Set(used.map(String.init)) {
                let base = name.hasSuffix("_bucket") ? String(name.dropLast(7)) : name
                #expect(docs.contains("`\(base)`"), "dashboard uses undocumented \(base)")
            }
            // Raw paths never become labels.
            #expect(!samples.contains { $0.labels.values.contains("/none") || $0.labels.values.contains("/open") })

            let health = try await Self.adminGet(harness, "/health")
            #expect(health.hasPrefix("HTTP/1.1 200") && health.contains(#""status":"ok""#))
            #expect(try await Self.adminGet(harness, "/secret").hasPrefix("HTTP/1.1 404"))
            let post = try await RawClient.exchange("POST /metrics HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                                                    port: harness.server.adminAddresses[0].port!, group: harness.group)
            #expect(post.status == 405 && post.body.contains(#""error":"method not allowed""#))
        }
    }

    @Test func upstreamEventsAreCountedAndTheStatusListenerServesMetrics() async throws {
        let closed = ClosedPort()
        try await Harness.with("""
            admin: {address: "127.0.0.1:0", status_address: "127.0.0.1:0"}
            services:
              flaky:
                targets: [{url: "http://127.0.0.1:\(closed.port)"}, {url: "$UPSTREAM0"}]
                balancer: round_robin
                retries: {attempts: 2, on: [connect_error]}
                health: {passive: {consecutive_errors: 1, base_ejection_time: 30s}}
            routes: [{name: flaky, match: {paths: ["/x"]}, service: flaky}]
            plugins: [{name: prometheus}]
            """, threads: 1) { harness in
            for _ in 0..<3 { #expect(try await harness.get("/x").status == 200) }
            #expect(harness.server.adminAddresses.count == 2)
            let port = harness.server.adminAddresses[1].port!
            let status = try await RawClient.exchange("GET /metrics HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n",
                                                      port: port, group: harness.group)
            #expect(status.status == 200)
            let metrics = status.body
            #expect(Self.value(in: metrics, #"tollgate_upstream_retries_total{service="flaky"}"#) == 1)
            #expect(Self.value(in: metrics, #"tollgate_circuit_breaker_opens_total{service="flaky",reason="outlier_ejection"}"#) == 1)
            #expect(Self.value(in: metrics, #"tollgate_upstream_target_up{service="flaky",target="127.0.0.1:\#(closed.port)"}"#) == 0)
            #expect(Self.value(in: metrics, #"tollgate_upstream_target_up{service="flaky",target="\#(harness.upstreams[0].url.dropFirst(7))"}"#) == 1)
            #expect(Self.value(in: metrics, #"tollgate_requests_total{route="flaky",service="flaky",method="GET",status_class="2xx"}"#) == 3)
            #expect((Self.value(in: metrics, "tollgate_connections_active") ?? -1) >= 0)
        }
    }

    @Test func perConsumerMetricsAreCapped() async throws {
        try await Harness.with("""
            admin: {address: "127.0.0.1:0"}
            consumers:
              - {name: a, credentials: {key_auth: [{key: "key-a-0123456789abcdef"}]}}
              - {name: b, credentials: {key_auth: [{key: "key-b-0123456789abcdef"}]}}
              - {name: c, credentials: {key_auth: [{key: "key-c-0123456789abcdef"}]}}
            services: {app: {targets: [{url: "$UPSTREAM0"}]}}
            routes: [{match: {paths: ["/"]}, service: app, plugins: [{name: key-auth}]}]
            plugins: [{name: prometheus, config: {per_consumer: true, max_consumers: 2}}]
            """) { harness in
            for key in ["key-a-0123456789abcdef", "key-b-0123456789abcdef", "key-c-0123456789abcdef", "key-c-0123456789abcdef"] { _ = try await harness.get("/", headers: ["X-API-Key: \(key)"]) }
            let metrics = try await Self.adminGet(harness, "/metrics")
            #expect(Self.value(in: metrics, #"tollgate_consumer_requests_total{consumer="a"}"#) == 1)
            #expect(Self.value(in: metrics, #"tollgate_consumer_requests_total{consumer="b"}"#) == 1)
            #expect(Self.value(in: metrics, #"tollgate_consumer_requests_total{consumer="other"}"#) == 2)
            #expect(!metrics.contains(#"consumer="c""#))
        }
    }

    @Test func traceparentIsPropagatedOrMade() async throws {
        try await Harness.with("""
            services: {app: {targets: [{url: "$UPSTREAM0"}]}}
            routes: [{match: {paths: ["/"]}, service: app}]
            plugins: [{name: opentelemetry, config: {endpoint: "http://127.0.0.1:1", sampling: 0}}]
            """) { harness in
            let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            // Sampled by the caller, but the collector is down: the request does not care.
            let traced = try await harness.get("/", headers: ["traceparent: \(parent)", "tracestate: vendor=1"])
            let forwarded = try #require(Self.echoedHeader(traced.body, "traceparent"))
            let parts = forwarded.split(separator: "-")
            #expect(parts.count == 4 && parts[0] == "00" && parts[1] == "4bf92f3577b34da6a3ce929d0e0e4736" && parts[3] == "01", "\(forwarded)")
            #expect(parts[2] != "00f067aa0ba902b7" && parts[2].count == 16)
            #expect(Self.echoedHeader(traced.body, "tracestate") == "vendor=1")

            let unsampledParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
            let quiet = try await harness.get("/", headers: ["traceparent: \(unsampledParent)"])
            #expect(Self.echoedHeader(quiet.body, "traceparent")?.hasSuffix("-00") == true)

            for bad in ["", "00-xyz", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"] {
                let fresh = try await harness.get("/", headers: bad.isEmpty ? [] : ["traceparent: \(bad)", "tracestate: stale=1"])
                let made = try #require(Self.echoedHeader(fresh.body, "traceparent"))
                #expect(TraceParent.parse(made) != nil && made.hasSuffix("-00"))   // sampling 0: new traces are not sampled
                #expect(!made.contains("4bf92f3577b34da6a3ce929d0e0e4736"))
                #expect(Self.echoedHeader(fresh.body, "tracestate") == nil)
            }
        }
    }

    static func echoedHeader(_ body: String, _ name: String) -> String? {
        let json = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        return (json?["headers"] as? [String: String])?[name]
    }

    /// Decodes OTLP/HTTP bodies with opentelemetry-proto and prints each span.
    static let otlpDecode = #"""
    import sys, json, base64
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    spans = []
    for line in sys.stdin.read().split():
        request = ExportTraceServiceRequest()
        request.ParseFromString(base64.b64decode(line))
        for rs in request.resource_spans:
            service = [a.value.string_value for a in rs.resource.attributes if a.key == "service.name"]
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attributes = {}
                    for a in span.attributes:
                        v = a.value
                        attributes[a.key] = v.string_value if v.HasField("string_value") else v.int_value
                    spans.append({"service": service[0] if service else None, "name": span.name,
                                  "trace": span.trace_id.hex(), "id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                                  "kind": span.kind, "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                                  "status": span.status.code, "message": span.status.message, "state": span.trace_state,
                                  "attributes": attributes})
    print(json.dumps(spans))
    """#

    /// Tollgate's own encoding, read back by opentelemetry-proto: ids, names, kinds, times, every
    /// attribute type, status, and lengths that need two and three bytes.
    @Test func builtInSpansDecodeWithOpenTelemetryProto() async throws {
        var spans = OTLPSpanWriter()
        let long = String(repeating: "x", count: 300), huge = String(repeating: "y", count: 20_000)
        spans.span(traceIDHigh: 0x4BF9_2F35_77B3_4DA6, traceIDLow: 0xA3CE_929D_0E0E_4736, spanID: 0x00F0_67AA_0BA9_02B7, parentID: 0,
                   traceState: "vendor=1", name: "GET users", kind: .server, startNanos: 1_795_788_307_500_000_001,
                   endNanos: 1_795_788_307_600_000_002,
                   attributes: [("url.path", .string(long)), ("big", .string(huge)), ("http.response.status_code", .int(503)), ("negative", .int(-7))],
                   error: true, statusMessage: "upstream timed out")
        spans.span(traceIDHigh: 0x4BF9_2F35_77B3_4DA6, traceIDLow: 0xA3CE_929D_0E0E_4736, spanID: 9, parentID: 0x00F0_67AA_0BA9_02B7,
                   traceState: nil, name: "upstream 127.0.0.1:9", kind: .client, startNanos: 5, endNanos: 3, attributes: [], error: false)
        let body = OTLPSpanWriter.request(serviceName: "gw", spans: [spans.bytes])
        let decoded = try await Python.run(Self.otlpDecode, input: Data(Data(body).base64EncodedString().utf8))
        let result = try #require(try JSONSerialization.jsonObject(with: Data(decoded.utf8)) as? [[String: Any]])
        try #require(result.count == 2)
        let server = result[0], client = result[1]
        #expect(server["service"] as? String == "gw")
        #expect(server["trace"] as? String == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(server["id"] as? String == "00f067aa0ba902b7")
        #expect(server["parent"] as? String == "")
        #expect(server["state"] as? String == "vendor=1")
        #expect(server["name"] as? String == "GET users")
        #expect(server["kind"] as? Int == 2)
        #expect(server["start"] as? Int == 1_795_788_307_500_000_001)
        #expect(server["end"] as? Int == 1_795_788_307_600_000_002)
        #expect(server["status"] as? Int == 2)
        #expect(server["message"] as? String == "upstream timed out")
        let attributes = try #require(server["attributes"] as? [String: Any])
        #expect(attributes["url.path"] as? String == long)
        #expect(attributes["big"] as? String == huge)
        #expect(attributes["http.response.status_code"] as? Int == 503)
        #expect(attributes["negative"] as? Int == -7)
        #expect(client["parent"] as? String == "00f067aa0ba902b7")
        #expect(client["id"] as? String == "0000000000000009")
        #expect(client["kind"] as? Int == 3)
        #expect(client["status"] as? Int == 0)
        #expect(client["start"] as? Int == 5 && client["end"] as? Int == 5)   // an end before the start is clamped
    }

    @Test(arguments: TracingBackend.Engine.allCases)
    func sampledRequestsAreExportedOverOTLP(engine: TracingBackend.Engine) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let collector = try await StubUpstream(group: group) { _ in StubResponse(headers: ["content-type": "application/x-protobuf"], body: .bytes("")) }
        let closed = ClosedPort()
        try await Harness.with("""
            admin: {address: "127.0.0.1:0"}
            services:
              app: {targets: [{url: "$UPSTREAM0"}]}
              flaky: {targets: [{url: "http://127.0.0.1:\(closed.port)"}, {url: "$UPSTREAM0"}], balancer: round_robin, retries: {attempts: 2, on: [connect_error]}}
            routes:
              - {name: users, match: {paths: ["/users/{id}"]}, service: app, plugins: [{name: rate-limiting, config: {limits: ["1000/s"]}}]}
              - {name: flaky, match: {paths: ["/flaky"]}, service: flaky}
            plugins: [{name: opentelemetry, config: {endpoint: "\(collector.url)", engine: \(engine.rawValue), sampling: 1, service_name: gw-test, batch_delay: 50ms, slow_plugin: 0ms}}]
            """) { harness in
            let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            let response = try await harness.get("/users/42?x=1", headers: ["traceparent: \(parent)"])
            #expect(response.status == 200)
            let forwarded = try #require(Self.echoedHeader(response.body, "traceparent"))
            // Round robin per event loop: within four requests some start on the closed target and retry.
            var flakyTraces: [String] = []
            for _ in 0..<4 {
                let flaky = try await harness.get("/flaky")
                #expect(flaky.status == 200)
                flakyTraces.append(String(try #require(Self.echoedHeader(flaky.body, "traceparent")).split(separator: "-")[1]))
            }
            var spans: [[String: Any]] = []
            let deadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < deadline {
                let bodies = collector.requests.filter { $0.head.uri == "/v1/traces" }
                    .map { Data($0.body.readableBytesView).base64EncodedString() }.joined(separator: "\n")
                if !bodies.isEmpty {
                    let decoded = try await Python.run(Self.otlpDecode, input: Data(bodies.utf8))
                    spans = try JSONSerialization.jsonObject(with: Data(decoded.utf8)) as! [[String: Any]]
                    if spans.filter({ $0["kind"] as? Int == 2 }).count >= 5 { break }
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(collector.requests.allSatisfy { $0.head.method == .POST && $0.head.headers["content-type"].first == "application/x-protobuf" })
            let server = try #require(spans.first { $0["trace"] as? String == "4bf92f3577b34da6a3ce929d0e0e4736" && $0["kind"] as? Int == 2 })
            #expect(server["service"] as? String == "gw-test")
            #expect(server["parent"] as? String == "00f067aa0ba902b7")
            #expect(server["name"] as? String == "GET users")
            #expect(forwarded.split(separator: "-")[2] == (server["id"] as? String ?? "?"))
            let attributes = server["attributes"] as! [String: Any]
            #expect(attributes["http.response.status_code"] as? Int == 200)
            #expect(attributes["url.path"] as? String == "/users/42")
            #expect(attributes["http.route"] as? String == "users")
            #expect(attributes["tollgate.request_id"] is String)
            #expect((server["end"] as! Int) > (server["start"] as! Int))
            let children = spans.filter { $0["parent"] as? String == server["id"] as? String }
            let upstream = try #require(children.first { $0["kind"] as? Int == 3 })
            #expect(upstream["trace"] as? String == "4bf92f3577b34da6a3ce929d0e0e4736")
            #expect((upstream["start"] as! Int) >= (server["start"] as! Int) && (upstream["end"] as! Int) <= (server["end"] as! Int))
            // slow_plugin: 0ms gives every plugin with a hook a span.
            #expect(children.contains { $0["name"] as? String == "plugin rate-limiting" && $0["kind"] as? Int == 1 })
            #expect(attributes["tollgate.rate_limit"] as? String == "allowed")

            // One client span per attempt; a failed attempt is an error and the retry follows it.
            var retries = 0
            for trace in flakyTraces {
                let attempts = spans.filter { $0["trace"] as? String == trace && $0["kind"] as? Int == 3 }
                    .sorted { ($0["start"] as! Int) < ($1["start"] as! Int) }
                #expect(attempts.count == 1 || attempts.count == 2)
                #expect(attempts.last?["status"] as? Int != 2)
                if attempts.count == 2 {
                    retries += 1
                    #expect(attempts[0]["status"] as? Int == 2)
                    #expect((attempts[0]["attributes"] as? [String: Any])?["error.type"] as? String == "connect failed")
                    #expect((attempts[0]["attributes"] as? [String: Any])?["server.address"] as? String == "127.0.0.1:\(closed.port)")
                }
            }
            #expect(retries >= 1)
            // Every sampled request got its spans: none was refused (rate or backlog).
            let metrics = try await Self.adminGet(harness, "/metrics")
            #expect(Self.value(in: metrics, "tollgate_trace_requests_dropped_total") == 0)
            if engine == .tollgate {
                // Counted once the collector's answer is read: it may lag the body by a moment.
                var exported = 0.0
                let countDeadline = ContinuousClock.now + .seconds(5)
                while exported < Double(spans.count), ContinuousClock.now < countDeadline {
                    exported = Self.value(in: try await Self.adminGet(harness, "/metrics"), "tollgate_trace_spans_exported_total") ?? 0
                    if exported < Double(spans.count) { try await Task.sleep(for: .milliseconds(50)) }
                }
                #expect(exported >= Double(spans.count))
            }
        }
        try await collector.close()
        try await group.shutdownGracefully()
    }

    @Test func configErrorsNameTheirPath() throws {
        let yaml = """
            services: {app: {targets: [{url: "http://127.0.0.1:1"}]}}
            routes: [{match: {paths: ["/"]}, service: app}]
            admin: {address: "nowhere"}
            logging: {level: loud, modules: {tollgate.redis: chatty}}
            plugins:
              - {name: access-log, config: {format: xml, fields: [status, colour], sink: {http: {url: "ftp://x", format: splunk, batch: 10, buffer: 5}}}}
              - {name: opentelemetry, config: {endpoint: "localhost:4318", engine: jaeger, sampling: 2, max_traces_per_second: 0}}
              - {name: prometheus, config: {max_consumers: 0}}
            """
        #expect(throws: ConfigErrors.self) { try ConfigLoader.load(yaml: yaml, environment: [:], registry: BuiltinPlugins.registry, state: PluginStateRegistry()) }
        do {
            _ = try ConfigLoader.load(yaml: yaml, environment: [:], registry: BuiltinPlugins.registry, state: PluginStateRegistry())
        } catch {
            let text = error.errors.map(\.description).joined(separator: "\n")
            for expected in ["admin.address: expected host:port", "logging.level: expected trace, debug",
                             "logging.modules.tollgate.redis: expected trace", "plugins[0].config.format: expected json or combined",
                             "plugins[0].config.fields[1]: unknown field 'colour'", "plugins[0].config.sink.http.url: expected an http:// or https:// URL",
                             "plugins[1].config.endpoint: expected an http:// or https:// URL", "plugins[1].config.sampling: expected a number from 0 to 1",
                             "plugins[1].config.max_traces_per_second", "plugins[1].config.engine: expected tollgate or swift-otel",
                             "plugins[2].config.max_consumers"] {
                #expect(text.contains(expected), "missing: \(expected)\n\(text)")
            }
        }
    }
}
