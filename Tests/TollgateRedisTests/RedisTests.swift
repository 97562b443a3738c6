import Foundation
import NIOCore
import NIOPosix
import Testing
@testable import TollgateRedis

@Suite struct RESPTests {
    @Test func encodesCommands() {
        var out = ByteBuffer()
        RESP.writeCommand(["SET", "k", "välue"], into: &out)
        #expect(String(buffer: out) == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\nvälue\r\n")
    }

    @Test func parsesEveryTypeIncrementally() throws {
        let wire = "+OK\r\n-ERR wrong\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n*-1\r\n"
        let expected: [RESPValue] = [.simpleString("OK"), .error("ERR wrong"), .integer(42), .bulkString(ByteBuffer(string: "hello")),
                                     .bulkString(nil), .array([.integer(1), .array([.bulkString(ByteBuffer())])]), .array(nil)]
        // Byte by byte: nothing is returned before a value is whole, and nothing is lost.
        var buffer = ByteBuffer()
        var values: [RESPValue] = []
        for byte in wire.utf8 {
            buffer.writeInteger(byte)
            while let value = try RESP.parse(&buffer) { values.append(value) }
        }
        #expect(values == expected)
        #expect(buffer.readableBytes == 0)
    }

    @Test(arguments: ["?x\r\n", ":abc\r\n", "$-5\r\n", "$3\r\nabcXY", "*-7\r\n", "+OK\rX"])
    func refusesBrokenReplies(_ wire: String) {
        var buffer = ByteBuffer(string: wire)
        #expect(throws: RESPError.self) { _ = try RESP.parse(&buffer) }
    }

    @Test func configurationFromURL() {
        #expect(RedisConfiguration(url: "redis://127.0.0.1:6380/2")
                == RedisConfiguration(host: "127.0.0.1", port: 6380, database: 2))
        #expect(RedisConfiguration(url: "redis://user:s3cret@cache.internal")
                == RedisConfiguration(host: "cache.internal", username: "user", password: "s3cret"))
        #expect(RedisConfiguration(url: "redis://:s3cret@[::1]:7000")?.host == "::1")
        #expect(RedisConfiguration(url: "redis://:s3cret@[::1]:7000")?.password == "s3cret")
        for bad in ["http://x", "redis://", "redis://h:0", "redis://h/x", "rediss://h"] { #expect(RedisConfiguration(url: bad) == nil, "\(bad)") }
    }
}

/// A redis-server of the tests' own on a free loopback port, stopped afterwards.
final class RedisServer: @unchecked Sendable {
    let port: Int
    private var process: Process?
    let extraArguments: [String]

    init(extraArguments: [String] = []) async throws {
        // A free port: bind, read it, release it.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let probe = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        port = probe.localAddress!.port!
        try await probe.close()
        try await group.shutdownGracefully()
        self.extraArguments = extraArguments
        try await start()
    }

    func start() async throws {
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
        throw RedisError.notConnected("redis-server did not start")
    }

    private func probe() async throws -> Bool {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port).get()
        try await channel.close()
        return true
    }

    /// Asks redis-server to exit (SHUTDOWN NOSAVE over a plain socket) and waits until its port is
    /// closed. (Signals through `Process` proved unreliable from tasks here.)
    func stop() {
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

    deinit { stop() }
}

@Suite(.serialized) struct RedisClientTests {
    @Test func commandsPipelineAndScriptsLoad() async throws {
        let server = try await RedisServer()
        defer { server.stop() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: server.port), eventLoop: group.next())
        #expect(try await client.send(["PING"]).get() == .simpleString("PONG"))
        #expect(try await client.send(["SET", "greeting", "hello"]).get() == .simpleString("OK"))
        #expect(try await client.send(["GET", "greeting"]).get().string == "hello")
        // A thousand commands in flight at once, answered in order.
        let replies = try await EventLoopFuture.whenAllSucceed((0..<1_000).map { _ in client.send(["INCR", "counter"]) },
                                                               on: group.next()).get()
        #expect(replies.map(\.int) == (1...1_000).map { $0 })
        // An error reply is an error.
        await #expect(throws: RedisError.self) { try await client.send(["INCR", "greeting"]).get() }
        // Scripts: loaded once, loaded again after SCRIPT FLUSH (NOSCRIPT).
        let script = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
        #expect(try await client.eval(script, keys: ["n"], arguments: ["5"]).get().int == 5)
        _ = try await client.send(["SCRIPT", "FLUSH"]).get()
        #expect(try await client.eval(script, keys: ["n"], arguments: ["5"]).get().int == 10)
        try await client.close().get()
        try await group.shutdownGracefully()
    }

    @Test func authenticatesAndSelectsTheDatabase() async throws {
        let server = try await RedisServer(extraArguments: ["--requirepass", "s3cret"])
        defer { server.stop() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let url = "redis://:s3cret@127.0.0.1:\(server.port)/3"
        let client = RedisClient(configuration: RedisConfiguration(url: url)!, eventLoop: group.next())
        _ = try await client.send(["SET", "where", "three"]).get()
        #expect(try await client.send(["GET", "where"]).get().string == "three")
        let other = RedisClient(configuration: RedisConfiguration(url: "redis://:s3cret@127.0.0.1:\(server.port)/0")!, eventLoop: group.next())
        #expect(try await other.send(["GET", "where"]).get() == .bulkString(nil))   // another database
        let wrong = RedisClient(configuration: RedisConfiguration(url: "redis://:nope@127.0.0.1:\(server.port)")!, eventLoop: group.next())
        await #expect(throws: RedisError.self) { try await wrong.send(["PING"]).get() }
        try await client.close().get()
        try await other.close().get()
        try await group.shutdownGracefully()
    }

    /// Redis goes away and comes back: commands fail while it is gone (quickly, not after a hang),
    /// then the client connects again by itself.
    @Test func reconnectsAfterRedisReturns() async throws {
        let server = try await RedisServer()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: server.port), eventLoop: group.next())
        #expect(try await client.send(["PING"]).get() == .simpleString("PONG"))
        server.stop()
        let start = ContinuousClock.now
        await #expect(throws: (any Error).self) { try await client.send(["PING"]).get() }
        #expect(ContinuousClock.now - start < .seconds(2))
        try await server.start()
        var answered = false
        for _ in 0..<100 where !answered {
            answered = (try? await client.send(["PING"]).get()) == .simpleString("PONG")
            if !answered { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(answered)
        server.stop()
        try await client.close().get()
        try await group.shutdownGracefully()
    }
}

