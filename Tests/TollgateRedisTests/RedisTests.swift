import Foundation
import NIOCore
import NIOPosix
import Testing
@testable import TollgateRedis
import TollgateTesting

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
        #expect(RedisConfiguration(url: "rediss://cache.internal:6380")?.useTLS == true)
        for bad in ["http://x", "redis://", "redis://h:0", "redis://h/x", "rediss://"] { #expect(RedisConfiguration(url: bad) == nil, "\(bad)") }
    }
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


/// `rediss://`: TLS to Redis, the server's certificate checked against a CA the test makes.
@Suite struct RedisTLSTests {
    /// A CA and a certificate for 127.0.0.1 signed by it, made with the openssl command.
    static func makeCertificates(in directory: String) async throws -> (certificate: String, key: String, ca: String) {
        func openssl(_ arguments: [String]) async throws {
            _ = try await ChildProcess.output("/usr/bin/openssl", arguments)
        }
        let ca = "\(directory)/ca.pem", caKey = "\(directory)/ca.key", key = "\(directory)/server.key"
        let csr = "\(directory)/server.csr", certificate = "\(directory)/server.pem", ext = "\(directory)/ext.cnf"
        try await openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", caKey, "-out", ca, "-days", "2", "-subj", "/CN=Tollgate Test CA"])
        try await openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"])
        try "subjectAltName=IP:127.0.0.1\n".write(toFile: ext, atomically: true, encoding: .utf8)
        try await openssl(["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", caKey, "-CAcreateserial", "-out", certificate, "-days", "2", "-extfile", ext])
        return (certificate, key, ca)
    }

    @Test func commandsOverTLSAndUntrustedServersRefused() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("redis-tls-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let files = try await Self.makeCertificates(in: directory)
        let server = try await RedisServer(tls: files)
        defer { server.stop() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var trusted = RedisConfiguration(url: "rediss://127.0.0.1:\(server.tlsPort!)")!
        trusted.tlsCAFile = files.ca
        let client = RedisClient(configuration: trusted, eventLoop: group.next())
        #expect(try await client.send(["PING"]).get() == .simpleString("PONG"))
        #expect(try await client.eval("return redis.call('INCR', KEYS[1])", keys: ["tls"], arguments: []).get().int == 1)
        // Without the test CA, the server's certificate is not trusted: the command fails.
        let untrusting = RedisClient(configuration: RedisConfiguration(url: "rediss://127.0.0.1:\(server.tlsPort!)")!, eventLoop: group.next())
        await #expect(throws: (any Error).self) { try await untrusting.send(["PING"]).get() }
        try await client.close().get()
        try await group.shutdownGracefully()
    }
}
