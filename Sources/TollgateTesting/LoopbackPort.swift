import Foundation
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

    /// A blocking socket connected to 127.0.0.1:`port`, reads timing out after 200 ms; nil when refused.
    /// (For readiness probes and shutdown commands: plain sockets, no event loop.)
    public static func connect(_ port: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Foundation.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            close(fd)
            return nil
        }
        return fd
    }
}
