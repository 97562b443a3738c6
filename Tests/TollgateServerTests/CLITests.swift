import Foundation
import NIOCore
import NIOPosix
import Testing
import TollgateTesting

/// The real `tollgate` binary as a child process: validate's exit codes and messages, SIGHUP reload,
/// SIGTERM drain with exit 0.
@Suite(.serialized) struct CLITests {
    static let binary: URL = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/tollgate")
    }()

    func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func validateListsEveryErrorAndExits1() throws {
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
        let bad = try run(["validate", path])
        #expect(bad.status == 1)
        #expect(bad.output == """
            routes[0].match.paths[0]: must start with '/' (or '~' for a regular expression) (line 4)
            routes[1].service: no service named 'missing' (services: s) (line 5)

            """)
        let examples = Self.binary.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("examples/basic.yaml").path
        let good = try run(["validate", examples])
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
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = ["run", "--config", path, "--log-level", "error"]
        try process.run()
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
        kill(process.processIdentifier, SIGHUP)
        #expect(await waitFor("two"))

        try "routes: [oops".write(toFile: path, atomically: true, encoding: .utf8)
        kill(process.processIdentifier, SIGHUP)
        try await Task.sleep(for: .milliseconds(300))
        #expect(await generation() == "two")   // the invalid file was refused
        #expect(process.isRunning)

        kill(process.processIdentifier, SIGTERM)
        for _ in 0..<100 where process.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!process.isRunning)
        #expect(process.terminationStatus == 0)
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
}
