import Foundation
import NIOCore
import NIOPosix
import Testing
import TollgateCore
import TollgateObservability
import TollgatePlugins
import TollgateServer
import TollgateTesting

func reloadConfig(_ upstream: String, tag: String) -> String {
    """
    listen: [{address: "127.0.0.1:0"}]
    services:
      api: {targets: [{url: "\(upstream)"}]}
    routes:
      - name: any
        match: {paths: ["/*"]}
        service: api
        plugins: [{name: headers, config: {response: {set: {X-Generation: "\(tag)"}}}}]
    """
}

@Suite struct LifecycleTests {
    /// 50 reloads while requests run on 8 connections at once: not one request fails.
    @Test func reloadUnderLoadLosesNothing() async throws {
        try await Harness.with(basicConfig) { harness in
            let url = harness.upstreams[0].url
            let configs = try ["a", "b"].map {
                try ConfigLoader.load(yaml: reloadConfig(url, tag: $0), environment: [:], registry: BuiltinPlugins.registry)
            }
            let done = ManagedFlag()
            let results = try await withThrowingTaskGroup(of: (ok: Int, failed: Int).self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        var ok = 0, failed = 0
                        // Ends when cancelled too (a reload that throws cancels the group), and a
                        // gateway that fails everything cannot keep it going past 100 failures.
                        while (!done.value || (ok == 0 && failed < 100)) && !Task.isCancelled {
                            var request = ""
                            for _ in 0..<4 { request += "GET /api/x HTTP/1.1\r\nHost: t\r\n\r\n" }
                            request += "GET /api/y HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                            let response = try await harness.send(request)
                            let good = response.statuses.filter { $0 == 200 }.count
                            ok += good
                            failed += 5 - good
                        }
                        return (ok, failed)
                    }
                }
                for i in 0..<50 {
                    try await harness.server.reload(configs[i % 2])
                    try await Task.sleep(for: .milliseconds(10))
                }
                done.value = true
                var total = (ok: 0, failed: 0)
                for try await result in group { total.ok += result.ok; total.failed += result.failed }
                return total
            }
            #expect(results.failed == 0)
            #expect(results.ok > 100)
            #expect(harness.server.snapshot === configs[1])
            #expect(try await harness.get("/anything").text.header("x-generation") == "b")
        }
    }

    @Test func invalidReloadIsRefusedAndOldConfigServes() async throws {
        try await Harness.with(basicConfig) { harness in
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-\(UUID()).yaml").path
            defer { try? FileManager.default.removeItem(atPath: path) }
            try "routes: [{match: {paths: [nope]}, service: missing}]".write(toFile: path, atomically: true, encoding: .utf8)
            let reloader = ConfigReloader(path: path, server: harness.server, registry: BuiltinPlugins.registry,
                                          environment: [:], logger: .init(label: "test"))
            let errors = await reloader.reloadNow(reason: "test")
            #expect(errors.map(\.description) == [
                "routes[0].match.paths[0]: must start with '/' (or '~' for a regular expression) (line 1)",
                "routes[0].service: no service named 'missing' (services: none) (line 1)",
            ])
            #expect(try await harness.get("/users/1").statuses == [200])

            try reloadConfig(harness.upstreams[0].url, tag: "new").write(toFile: path, atomically: true, encoding: .utf8)
            #expect(await reloader.reloadNow(reason: "test").isEmpty)
            #expect(try await harness.get("/users/1").text.header("x-generation") == "new")
            let metrics = GatewayMetrics.of(harness.server.snapshot.state).render()
            #expect(metrics.contains(#"tollgate_config_reloads_total{result="failure"} 1"#))
            #expect(metrics.contains(#"tollgate_config_reloads_total{result="success"} 1"#))
        }
    }

    /// Drain: listeners close at once, the in-flight request still completes, then connections close.
    @Test func drainFinishesInFlightRequests() async throws {
        try await Harness.with(basicConfig, upstreams: [{ _ in StubResponse(body: .delayed(.milliseconds(400), "finished")) }]) { harness in
            let port = harness.port
            async let inFlight = harness.get("/api/slow")
            // Drain only once the request is in flight (the upstream has it).
            for _ in 0..<400 where harness.upstreams[0].requests.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
            let clock = ContinuousClock()
            let start = clock.now
            await harness.server.drain(timeout: .seconds(5))
            let response = try await inFlight
            #expect(response.statuses == [200])
            #expect(response.lastBody == "finished")
            #expect(clock.now - start < .seconds(2))
            #expect(harness.server.openConnections == 0)
            await #expect(throws: (any Error).self) {
                _ = try await RawClient.exchange("GET / HTTP/1.1\r\n\r\n", port: port, group: harness.group)
            }
        }
    }
}

final class ManagedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var _value = false
    var value: Bool {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
}

/// A process's peak resident set (`VmHWM` in `/proc/PID/status`), in bytes.
func peakResidentBytes(of pid: pid_t) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
          let kilobytes = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    else { return nil }
    return kilobytes << 10
}

/// A client that counts response bytes instead of keeping them, and uploads with backpressure.
enum StreamingClient {
    final class Counter: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        var count = 0
        var tail = ""
        let promise: EventLoopPromise<(Int, String)>
        init(promise: EventLoopPromise<(Int, String)>) { self.promise = promise }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            count += buffer.readableBytes
            if buffer.readableBytes < 4096 { tail += String(buffer: buffer) } else { tail = "" }
        }
        func channelInactive(context: ChannelHandlerContext) { promise.succeed((count, tail)) }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    static func connect(port: Int, group: any EventLoopGroup) async throws -> (any Channel, EventLoopFuture<(Int, String)>) {
        let eventLoop = group.next()
        let promise = eventLoop.makePromise(of: (Int, String).self)
        let channel = try await ClientBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Counter(promise: promise)) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return (channel, promise.futureResult)
    }

    /// All bytes of the response, head included.
    static func download(_ path: String, port: Int, group: any EventLoopGroup) async throws -> Int {
        let (channel, result) = try await connect(port: port, group: group)
        let head = "GET \(path) HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        try await channel.writeAndFlush(ByteBuffer(string: head))
        let (count, _) = try await result.get()
        return count
    }

    static func upload(_ path: String, bytes: Int, port: Int, group: any EventLoopGroup) async throws -> String {
        let (channel, result) = try await connect(port: port, group: group)
        try await channel.writeAndFlush(ByteBuffer(string: "POST \(path) HTTP/1.1\r\nHost: t\r\nContent-Length: \(bytes)\r\nConnection: close\r\n\r\n"))
        var chunk = channel.allocator.buffer(capacity: 1 << 20)
        chunk.writeRepeatingByte(UInt8(ascii: "u"), count: 1 << 20)
        var sent = 0
        while sent < bytes {
            try await channel.writeAndFlush(chunk)   // completes when written: natural backpressure
            sent += chunk.readableBytes
        }
        let (_, tail) = try await result.get()
        return tail
    }
}
