import NIOCore
import NIOPosix

/// Loopback ports for servers the tests start as child processes (redis-server, memcached).
public enum LoopbackPort {
    /// A port that was free a moment ago: the server started on it may still lose it to another
    /// test's, so callers retry with another when their server does not come up.
    public static func free() async throws -> Int {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let probe = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = probe.localAddress!.port!
        try await probe.close()
        try await group.shutdownGracefully()
        return port
    }
}
