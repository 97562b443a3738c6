import Foundation
import NIOCore
import NIOPosix

public enum RedisServerError: Error {
    case didNotStart
}

/// A redis-server of the tests' own on a free loopback port, stopped afterwards.
public final class RedisServer: @unchecked Sendable {
    public let port: Int
    private var process: Process?
    public let extraArguments: [String]

    public init(extraArguments: [String] = []) async throws {
        // A free port: bind, read it, release it.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let probe = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        port = probe.localAddress!.port!
        try await probe.close()
        try await group.shutdownGracefully()
        self.extraArguments = extraArguments
        try await start()
    }

    public func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"] + extraArguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        // Ready when it accepts a connection.
        for _ in 0..<200 {
            if (try? await probe()) == true { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw RedisServerError.didNotStart
    }

    private func probe() async throws -> Bool {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port).get()
        try await channel.close()
        return true
    }

    /// Asks redis-server to exit (SHUTDOWN NOSAVE over a plain socket) and waits until its port is
    /// closed. (Signals through `Process` proved unreliable from tasks here.)
    public func stop() {
        guard process != nil else { return }
        process = nil
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return }
        var text = ""
        if let index = extraArguments.firstIndex(of: "--requirepass"), index + 1 < extraArguments.count {
            let password = extraArguments[index + 1]
            text += "*2\r\n$4\r\nAUTH\r\n$\(password.utf8.count)\r\n\(password)\r\n"
        }
        text += "*2\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n"
        let command = Array(text.utf8)
        _ = command.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var bytes = [UInt8](repeating: 0, count: 64)
        while bytes.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, $0.count, 0) }) > 0 {}   // until the server closes
    }

    /// `redis://127.0.0.1:PORT`.
    public var url: String { "redis://127.0.0.1:\(port)" }

    deinit { stop() }
}
