import NIOCore
import NIOPosix
import TollgateCore
import TollgatePlugins
import TollgateServer
import TollgateTesting

/// A gateway and its stub upstreams on 127.0.0.1 port 0, torn down after `body`.
struct Harness {
    let group: MultiThreadedEventLoopGroup
    let server: ProxyServer
    let upstreams: [StubUpstream]

    var port: Int { server.localAddresses[0].port! }

    /// `config` gets `$UPSTREAM0`, `$UPSTREAM1`... replaced by the stubs' URLs.
    /// `listen` replaces the plain loopback listener (an HTTPS one, say).
    static func with<T>(_ config: String, upstreams responders: [StubUpstream.Responder] = [StubUpstream.echo],
                        threads: Int = 2, listen: String = #"[{address: "127.0.0.1:0"}]"#,
                        _ body: (Harness) async throws -> T) async throws -> T {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        var stubs: [StubUpstream] = []
        for responder in responders { stubs.append(try await StubUpstream(group: group, responder: responder)) }
        var yaml = "listen: \(listen)\n" + config
        for (index, stub) in stubs.enumerated().reversed() { yaml = yaml.replacingOccurrences(of: "$UPSTREAM\(index)", with: stub.url) }
        let snapshot = try ConfigLoader.load(yaml: yaml, environment: [:], registry: BuiltinPlugins.registry,
                                             state: PluginStateRegistry())
        let server = try ProxyServer(snapshot: snapshot, group: group)
        try await server.start()
        let harness = Harness(group: group, server: server, upstreams: stubs)
        do {
            let result = try await body(harness)
            await harness.stop()
            return result
        } catch {
            await harness.stop()
            throw error
        }
    }

    func stop() async {
        await server.drain(timeout: .milliseconds(200))
        for stub in upstreams { try? await stub.close() }
        try? await group.shutdownGracefully()
    }

    func send(_ request: String, timeout: TimeAmount = .seconds(5), chunks: [String] = [],
              pause: TimeAmount = .zero) async throws -> RawClient.Result {
        try await RawClient.exchange(request, port: port, group: group, timeout: timeout, chunks: chunks,
                                     pauseBetweenChunks: pause)
    }

    func get(_ path: String, headers: [String] = []) async throws -> RawClient.Result {
        let extra = headers.map { $0 + "\r\n" }.joined()
        return try await send("GET \(path) HTTP/1.1\r\nHost: test\r\n\(extra)Connection: close\r\n\r\n")
    }
}

extension String {
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        var result = ""
        var rest = Substring(self)
        while let range = rest.range(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }

    /// The value of a response header (case-insensitive name), from raw response text.
    func header(_ name: String) -> String? {
        for line in split(separator: "\r\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            if line[..<colon].lowercased() == name.lowercased() {
                return String(line[line.index(after: colon)...].drop { $0 == " " })
            }
        }
        return nil
    }
}
