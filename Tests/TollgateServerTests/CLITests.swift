import Foundation
import NIOCore
import NIOPosix
import Testing
import TollgatePlugins
import TollgateTesting

/// The real `tollgate` binary as a child process: validate's exit codes and messages, SIGHUP and
/// file-change reloads, SIGTERM drain with exit 0.
@Suite(.serialized) struct CLITests {
    static let binary: URL = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/tollgate")
    }()

    /// Runs the binary to its end: its exit status, and stdout and stderr together.
    func run(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        let result = try await ChildProcess.run(Self.binary.path, arguments)
        return (result.status, result.output)
    }

    @Test func validateListsEveryErrorAndExits1() async throws {
        try #require(FileManager.default.fileExists(atPath: Self.binary.path), "build the tollgate product first")
        let path = NSTemporaryDirectory() + "tollgate-cli-\(UUID()).yaml"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try """
            services:
              s: {targets: [{url: "http://127.0.0.1:1"}]}
            routes:
              - {match: {paths: ["nope"]}, service: s}
              - {match: {paths: ["/b"]}, service: missing}
            """.write(toFile: path, atomically: true, encoding: .utf8)
        let bad = try await run(["validate", path])
        #expect(bad.status == 1)
        #expect(bad.output == """
            routes[0].match.paths[0]: must start with '/' (or '~' for a regular expression) (line 4)
            routes[1].service: no service named 'missing' (services: s) (line 5)

            """)
        let examples = Self.binary.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("examples/basic.yaml").path
        let good = try await run(["validate", examples])
        #expect(good.status == 0)
        #expect(good.output.hasSuffix("OK (1 routes, 1 services)\n"))
    }

    @Test func sighupReloadsAndSigtermDrainsWithExit0() async throws {
        try #require(FileManager.default.fileExists(atPath: Self.binary.path), "build the tollgate product first")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let upstream = try await StubUpstream(group: group)
        let port = try freePort()
        let path = NSTemporaryDirectory() + "tollgate-cli-\(UUID()).yaml"
        defer { try? FileManager.default.removeItem(atPath: path) }
        func config(_ tag: String) -> String {
            """
            listen: [{address: "127.0.0.1:\(port)"}]
            server: {threads: 1, drain_timeout: 5s}
            services:
              api: {targets: [{url: "\(upstream.url)"}]}
            routes:
              - match: {paths: ["/*"]}
                service: api
                plugins: [{name: headers, config: {response: {set: {X-Generation: "\(tag)"}}}}]
            """
        }
        try config("one").write(toFile: path, atomically: true, encoding: .utf8)
        let process = try ChildProcess(Self.binary.path, ["run", "--config", path, "--log-level", "error"],
                                       stdout: .inherit, stderr: .inherit)
        defer { if process.isRunning { process.terminate() } }

        func generation() async -> String? {
            let response = try? await RawClient.exchange("GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                                                          port: port, group: group, timeout: .seconds(2))
            return response?.text.header("x-generation")
        }
        func waitFor(_ tag: String) async -> Bool {
            for _ in 0..<100 {
                if await generation() == tag { return true }
                try? await Task.sleep(for: .milliseconds(50))
            }
            return false
        }
        #expect(await waitFor("one"))

        try config("two").write(toFile: path, atomically: true, encoding: .utf8)
        process.signal(SIGHUP)
        #expect(await waitFor("two"))

        // A change of the file alone (no signal) is picked up by the watcher.
        try config("three").write(toFile: path, atomically: true, encoding: .utf8)
        #expect(await waitFor("three"))

        try "routes: [oops".write(toFile: path, atomically: true, encoding: .utf8)
        process.signal(SIGHUP)
        try await Task.sleep(for: .milliseconds(300))
        #expect(await generation() == "three")   // the invalid file was refused
        #expect(process.isRunning)

        process.signal(SIGTERM)
        #expect(await process.exit(within: .seconds(5)))
        #expect(process.terminationStatus == 0)
        try await upstream.close()
        try await group.shutdownGracefully()
    }

    /// Bodies stream with backpressure: 256 MB each way moves through the gateway (the real binary,
    /// alone in its process, so nothing else the test run does counts) while its peak RSS stays
    /// under 64 MB.
    @Test func streamsLargeBodiesInBoundedMemory() async throws {
        try #require(FileManager.default.fileExists(atPath: Self.binary.path), "build the tollgate product first")
        let size = 256 << 20
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let upstream = try await StubUpstream(group: group) { request in
            if request.head.method == .GET { return StubResponse(body: .stream(count: size, chunked: false)) }
            return .text("received \(request.bodyLength)")
        }
        let port = try freePort()
        let path = NSTemporaryDirectory() + "tollgate-cli-memory-\(UUID()).yaml"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try """
            listen: [{address: "127.0.0.1:\(port)"}]
            server: {threads: 1}
            services: {api: {targets: [{url: "\(upstream.url)"}]}}
            routes: [{match: {paths: ["/api/*"]}, service: api}]
            limits: {max_body_size: 1GB}
            """.write(toFile: path, atomically: true, encoding: .utf8)
        let process = try ChildProcess(Self.binary.path, ["run", "--config", path, "--log-level", "error"], stdout: .inherit, stderr: .inherit)
        defer { if process.isRunning { process.terminate() } }
        var ready = false
        for _ in 0..<100 where !ready {
            ready = (try? await RawClient.exchange("GET /api/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                                                   port: port, group: group, timeout: .seconds(2))) != nil
            if !ready { try await Task.sleep(for: .milliseconds(50)) }
        }
        try #require(ready)
        let idle = try #require(peakResidentBytes(of: process.processIdentifier))

        let download = try await StreamingClient.download("/api/big", port: port, group: group)
        #expect((size..<size + 1024).contains(download))   // the body plus a head
        let upload = try await StreamingClient.upload("/api/up", bytes: size, port: port, group: group)
        #expect(upload.hasSuffix("received \(size)"))

        let peak = try #require(peakResidentBytes(of: process.processIdentifier))
        #expect(peak < 64 << 20, "peak RSS \(peak >> 20) MB (\(idle >> 20) MB before the transfers)")
        process.signal(SIGTERM)
        #expect(await process.exit(within: .seconds(5)))
        try await upstream.close()
        try await group.shutdownGracefully()
    }

    /// With Tollgate's trace engine, spans still queued at SIGTERM (here `batch_delay` is an hour) are
    /// sent before the process exits.
    @Test func sigtermSendsTheQueuedSpans() async throws {
        try #require(FileManager.default.fileExists(atPath: Self.binary.path), "build the tollgate product first")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let upstream = try await StubUpstream(group: group)
        let collector = try await StubUpstream(group: group) { _ in StubResponse(headers: ["content-type": "application/x-protobuf"], body: .bytes("")) }
        let port = try freePort()
        let path = NSTemporaryDirectory() + "tollgate-cli-spans-\(UUID()).yaml"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try """
            listen: [{address: "127.0.0.1:\(port)"}]
            server: {threads: 1, drain_timeout: 5s}
            services: {api: {targets: [{url: "\(upstream.url)"}]}}
            routes: [{match: {paths: ["/*"]}, service: api}]
            plugins: [{name: opentelemetry, config: {endpoint: "\(collector.url)", sampling: 1, batch_delay: 1h}}]
            """.write(toFile: path, atomically: true, encoding: .utf8)
        let process = try ChildProcess(Self.binary.path, ["run", "--config", path, "--log-level", "error"], stdout: .inherit, stderr: .inherit)
        defer { if process.isRunning { process.terminate() } }
        var served = false
        for _ in 0..<100 where !served {
            let response = try? await RawClient.exchange("GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                                                          port: port, group: group, timeout: .seconds(2))
            served = response?.status == 200
            if !served { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(served)
        try await Task.sleep(for: .milliseconds(200))
        #expect(collector.requests.isEmpty)   // still queued
        process.signal(SIGTERM)
        #expect(await process.exit(within: .seconds(5)))
        #expect(process.terminationStatus == 0)
        let exports = collector.requests.filter { $0.head.uri == "/v1/traces" && $0.head.method == .POST }
        #expect(exports.count == 1)
        #expect((exports.first?.body.readableBytes ?? 0) > 100)
        try await collector.close()
        try await upstream.close()
        try await group.shutdownGracefully()
    }

    /// The real process: SIGUSR1 reopens a rotated access log, SIGTERM writes what was still batched,
    /// and the application log is JSON lines on stderr, the trace exporter's included.
    @Test func sigusr1ReopensTheAccessLogAndTheAppLogIsJSON() async throws {
        try #require(FileManager.default.fileExists(atPath: Self.binary.path), "build the tollgate product first")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let upstream = try await StubUpstream(group: group)
        let port = try freePort()
        let directory = NSTemporaryDirectory() + "tollgate-cli-log-\(UUID())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = directory + "/access.log"
        // The trace exporter's collector refuses connections: swift-otel logs the failed exports, and
        // those lines must be JSON too (its logger is made while the config loads).
        let collector = ClosedPort()
        try """
            listen: [{address: "127.0.0.1:\(port)"}]
            server: {threads: 1, drain_timeout: 5s}
            logging: {level: info}
            services: {api: {targets: [{url: "\(upstream.url)"}]}}
            routes: [{match: {paths: ["/*"]}, service: api}]
            plugins:
              - {name: access-log, config: {format: combined, sink: {file: "\(log)"}}}
              - {name: opentelemetry, config: {endpoint: "http://127.0.0.1:\(collector.port)", engine: swift-otel, sampling: 1, batch_delay: 50ms, timeout: 1s}}
            """.write(toFile: directory + "/tollgate.yaml", atomically: true, encoding: .utf8)
        // A file, not a pipe: read while the process runs and after, nothing to drain.
        let stderrPath = directory + "/stderr.log"
        let process = try ChildProcess(Self.binary.path, ["run", "--config", directory + "/tollgate.yaml"], stderr: .file(stderrPath))
        defer { if process.isRunning { process.terminate() } }

        func get(_ path: String) async -> Int {
            let response = try? await RawClient.exchange("GET \(path) HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                                                          port: port, group: group, timeout: .seconds(2))
            return response?.status ?? 0
        }
        func lines(_ path: String, atLeast count: Int) async -> [String] {
            for _ in 0..<100 {
                let found = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
                if found.count >= count { return found }
                try? await Task.sleep(for: .milliseconds(50))
            }
            return []
        }
        var started = false
        for _ in 0..<100 where !started {
            started = await get("/a") == 200
            if !started { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(started)
        #expect(await lines(log, atLeast: 1).last?.contains("\"GET /a HTTP/1.1\" 200") == true)
        try FileManager.default.moveItem(atPath: log, toPath: log + ".1")
        #expect(await get("/b") == 200)
        #expect(await lines(log + ".1", atLeast: 2).last?.contains("/b") == true)   // still the open file
        process.signal(SIGUSR1)
        try await Task.sleep(for: .milliseconds(200))
        #expect(await get("/c") == 200)
        #expect(await lines(log, atLeast: 1).first?.contains("/c") == true)      // a new file by the same path
        #expect(await get("/d") == 200)
        for _ in 0..<100 where !((try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "").contains("tollgate.otel") {
            try await Task.sleep(for: .milliseconds(50))
        }
        process.signal(SIGTERM)   // /d may still be batched
        try #require(await process.exit(within: .seconds(5)))
        #expect(process.terminationStatus == 0)
        #expect(await lines(log, atLeast: 2).contains { $0.contains("/d") })

        let output = (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""
        let objects = output.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(!objects.isEmpty && objects.count == output.split(separator: "\n").count, "\(output)")
        #expect(objects.contains { $0["message"] as? String == "listening" && $0["level"] as? String == "info" && $0["logger"] as? String == "tollgate" })
        #expect(objects.contains { $0["logger"] as? String == "tollgate.otel" }, "\(output)")
        try await upstream.close()
        try await group.shutdownGracefully()
    }

    /// A port the kernel just handed out and released (the gateway binds it right after).
    func freePort() throws -> Int {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let channel = try ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).wait()
        let port = channel.localAddress!.port!
        try channel.close().wait()
        return port
    }
    /// `tollgate cache purge` against a running gateway's admin listener.
    @Test func cachePurgeThroughTheAdminListener() async throws {
        try #require(FileManager.default.fileExists(atPath: Self.binary.path), "build the tollgate product first")
        let config = "admin: {address: \"127.0.0.1:0\"}\n" + CacheTests.config()
        try await Harness.with(config, upstreams: [CacheTests.origin()]) { harness in
            let admin = "127.0.0.1:\(harness.server.adminAddresses[0].port!)"
            _ = try await harness.get("/tagged")
            #expect(try await harness.get("/tagged").text.header("x-cache") == "HIT")
            let purged = try await run(["cache", "purge", "--admin", admin, "--tag", "t1"])
            #expect(purged.status == 0 && purged.output.contains(#"{"purged":1}"#), "\(purged.output)")
            #expect(try await harness.get("/tagged").text.header("x-cache") == "MISS")
            let both = try await run(["cache", "purge", "--admin", admin, "--tag", "t1", "--url", "/x"])
            #expect(both.status != 0 && both.output.contains("exactly one"))
            // The admin API itself: a bad request, and URL purges with encoded characters.
            _ = try await harness.get("/fresh?a=1&b=2")
            let url = try await run(["cache", "purge", "--admin", admin, "--url", "/fresh?a=1&b=2"])
            #expect(url.status == 0 && url.output.contains(#"{"purged":1}"#), "\(url.output)")
        }
    }
}

@Suite struct DemoTests {
    /// The demo's embedded config loads and routes as its printed curl commands promise.
    /// `tollgate usage export` sums what the usage-metering plugin wrote; bad dates are clear errors.
    @Test func usageExport() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("usage-cli-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ledger = UsageLedger(directory: directory, bucketSeconds: 3_600)
        let noon = UsageLedger.parseTime("2026-11-27T12:00:00Z")!
        for _ in 0..<2 { ledger.count(consumer: "alice", route: "orders", status: 200, at: noon) }
        ledger.flush()
        let csv = try await CLITests().run(["usage", "export", "--dir", directory, "--from", "2026-11-27", "--to", "2026-11-28"])
        #expect(csv.status == 0)
        #expect(csv.output == "bucket,consumer,route,status_class,requests\n2026-11-27T12:00:00Z,alice,orders,2xx,2\n")
        let json = try await CLITests().run(["usage", "export", "--dir", directory, "--from", "2026-11-27", "--to", "2026-11-28", "--format", "json", "--per", "day"])
        #expect(json.output.contains(#""bucket":"2026-11-27T00:00:00Z""#))
        let bad = try await CLITests().run(["usage", "export", "--dir", directory, "--from", "yesterday", "--to", "2026-11-28"])
        #expect(bad.status != 0)
        #expect(bad.output.contains("--from: expected a date such as 2026-11-01"))
    }

    @Test func demoConfigServes() async throws {
        let yaml = DemoConfig.yaml(port: 0, usersURL: "$UPSTREAM0", usersV2URL: "$UPSTREAM1")
            .split(separator: "\n").dropFirst(2).joined(separator: "\n")   // Harness supplies `listen`
        try await Harness.with(yaml, upstreams: [StubUpstream.echo, StubUpstream.echo], threads: 1) { harness in
            let v1 = try await harness.get("/v1/users/42")
            #expect(v1.statuses == [200])
            #expect(v1.text.header("deprecation") == "@1767225600")
            #expect(v1.text.header("sunset") == "Wed, 30 Jun 2027 00:00:00 GMT")
            #expect(v1.text.header("x-user-id") == "42")
            let v2 = try await harness.get("/users/42", headers: ["API-Version: 2"])
            #expect(v2.text.header("x-api-version") == "2")
            #expect(harness.upstreams[1].requests.last?.head.uri == "/internal/users/42")
            #expect(try await harness.get("/v9/users/42").lastBody.contains(#""available_versions":["1","2"]"#))
            #expect(try await harness.get("/v1/reports/daily").statuses == [503])
            let before = harness.upstreams.map { $0.requests.count }
            for _ in 0..<4 { _ = try await harness.get("/balanced/7") }
            #expect(zip(harness.upstreams, before).map { $0.requests.count - $1 } == [2, 2])   // round robin
            var limited: [Int] = []
            for _ in 0..<4 { limited.append(try await harness.get("/limited/x").statuses.first ?? 0) }
            #expect(limited == [200, 200, 200, 429])
            // The demo's authentication: no key 401, a staff key 403, the admin's key through.
            #expect(try await harness.get("/admin/stats").statuses == [401])
            #expect(try await harness.get("/admin/stats", headers: ["X-API-Key: demo-key-bob-456789"]).statuses == [403])
            let alice = try await harness.get("/admin/stats", headers: ["X-API-Key: demo-key-alice-0123"])
            #expect(alice.statuses == [200])
            #expect(alice.lastBody.contains(#""x-consumer-username":"alice""#))
            // The demo's cache and compression.
            #expect(try await harness.get("/catalog/7").text.header("x-cache") == "MISS")
            let hit = try await harness.get("/catalog/7")
            #expect(hit.text.header("x-cache") == "HIT" && hit.text.header("age") != nil)
            #expect(try await harness.get("/catalog/7", headers: ["Accept-Encoding: gzip"]).text.header("content-encoding") == "gzip")
        }
    }
}
