import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TollgateCore

/// Where the Memcached servers are (`memcached: {servers: [host:port], timeout: 250ms}`).
public struct MemcachedConfiguration: Sendable, Equatable {
    public var servers: [String]
    public var timeout = TimeAmount.milliseconds(250)
    public var connectTimeout = TimeAmount.seconds(1)

    public init(servers: [String]) {
        self.servers = servers
    }

    init(from config: ConfigNode) {
        self.servers = []
        guard config.expectMapping(keys: ["servers", "timeout", "connect_timeout"], required: true) else { return }
        for node in config["servers"].elements(required: true) ?? [] {
            guard let text = node.string() else { continue }
            if MemcachedClient.split(text) == nil { node.error("expected host:port") } else { servers.append(text) }
        }
        if config["servers"].isPresent && servers.isEmpty { config["servers"].error("at least one server") }
        if let timeout = config["timeout"].duration() { self.timeout = .nanoseconds(Int64(timeout.unsignedNanoseconds)) }
        if let timeout = config["connect_timeout"].duration() { connectTimeout = .nanoseconds(Int64(timeout.unsignedNanoseconds)) }
    }
}

public enum MemcachedError: Error, Equatable {
    case notConnected(String)
    case timeout
    case protocolError(String)
    case server(String)
}

/// A Memcached text-protocol client for one server on one event loop: commands are pipelined on one
/// connection and answered in order; a command not answered within the timeout fails it and drops the
/// connection (the next command reconnects, after a short backoff once connecting failed).
public final class MemcachedClient: Sendable {
    let host: String
    let port: Int
    let eventLoop: any EventLoop
    let configuration: MemcachedConfiguration
    private let state = NIOLockedValueBox(State())

    private struct State {
        var connection: EventLoopFuture<any Channel>?
        var retryAfter = NIODeadline.uptimeNanoseconds(0)
    }

    init(host: String, port: Int, eventLoop: any EventLoop, configuration: MemcachedConfiguration) {
        self.host = host
        self.port = port
        self.eventLoop = eventLoop
        self.configuration = configuration
    }

    static func split(_ server: String) -> (String, Int)? {
        guard let colon = server.lastIndex(of: ":"), let port = Int(server[server.index(after: colon)...]),
              (1...65535).contains(port) else { return nil }
        var host = String(server[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }

    /// The value under `key`, or nil.
    public func get(_ key: String) -> EventLoopFuture<ByteBuffer?> {
        var command = ByteBuffer(string: "get \(key)\r\n")
        return send(&command, expects: .value).map { reply in
            if case .value(let bytes) = reply { return bytes }
            return nil
        }
    }

    /// `set` (or `append`, `add`) with an expiry in seconds; whether it was stored.
    public func store(_ verb: String, _ key: String, _ value: ByteBuffer, ttl: Int64) -> EventLoopFuture<Bool> {
        var command = ByteBuffer(string: "\(verb) \(key) 0 \(ttl) \(value.readableBytes)\r\n")
        command.writeImmutableBuffer(value)
        command.writeStaticString("\r\n")
        return send(&command, expects: .line).flatMapThrowing { reply in
            guard case .line(let line) = reply else { return false }
            if line == "STORED" { return true }
            if line == "NOT_STORED" || line == "EXISTS" || line == "NOT_FOUND" { return false }
            throw MemcachedError.server(line)
        }
    }

    /// Whether `key` was there.
    public func delete(_ key: String) -> EventLoopFuture<Bool> {
        var command = ByteBuffer(string: "delete \(key)\r\n")
        return send(&command, expects: .line).map { reply in
            if case .line(let line) = reply { return line == "DELETED" }
            return false
        }
    }

    private func send(_ command: inout ByteBuffer, expects: MemcachedHandler.Expectation) -> EventLoopFuture<MemcachedHandler.Reply> {
        let bytes = command
        return channel().flatMap { channel in
            let promise = channel.eventLoop.makePromise(of: MemcachedHandler.Reply.self)
            channel.writeAndFlush(MemcachedHandler.Command(bytes: bytes, expects: expects, promise: promise), promise: nil)
            return promise.futureResult
        }
    }

    private func channel() -> EventLoopFuture<any Channel> {
        state.withLockedValue { state in
            if let connection = state.connection { return connection }
            if NIODeadline.now() < state.retryAfter {
                return eventLoop.makeFailedFuture(MemcachedError.notConnected("reconnecting after a failure"))
            }
            let timeout = configuration.timeout
            let connection = ClientBootstrap(group: eventLoop)
                .connectTimeout(configuration.connectTimeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(MemcachedHandler(timeout: timeout))
                    }
                }
                .connect(host: host, port: port)
            state.connection = connection
            connection.whenComplete { result in
                switch result {
                case .success(let channel):
                    channel.closeFuture.whenComplete { _ in self.forget(connection) }
                case .failure:
                    self.forget(connection, backoff: true)
                }
            }
            return connection
        }
    }

    private func forget(_ connection: EventLoopFuture<any Channel>, backoff: Bool = false) {
        state.withLockedValue { state in
            if state.connection === connection { state.connection = nil }
            if backoff { state.retryAfter = NIODeadline.now() + .milliseconds(500) }
        }
    }

    func close() -> EventLoopFuture<Void> {
        let connection = state.withLockedValue { state -> EventLoopFuture<any Channel>? in
            defer { state.connection = nil }
            return state.connection
        }
        guard let connection else { return eventLoop.makeSucceededVoidFuture() }
        return connection.flatMap { $0.close() }.recover { _ in }
    }
}

/// Writes commands, matches replies to them in order, and fails them all when one times out or the
/// connection breaks.
final class MemcachedHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Command
    typealias OutboundOut = ByteBuffer

    enum Expectation { case value, line }
    enum Reply: Sendable {
        case value(ByteBuffer?)
        case line(String)
    }

    struct Command {
        var bytes: ByteBuffer
        var expects: Expectation
        var promise: EventLoopPromise<Reply>
    }

    private var waiting: [(expects: Expectation, promise: EventLoopPromise<Reply>, deadline: NIODeadline)] = []
    private var buffer = ByteBuffer()
    private var timer: Scheduled<Void>?
    private let timeout: TimeAmount
    private var failed: (any Error)?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let command = unwrapOutboundIn(data)
        if let failed {
            command.promise.fail(failed)
            return
        }
        waiting.append((command.expects, command.promise, .now() + timeout))
        context.write(wrapOutboundOut(command.bytes), promise: promise)
        if timer == nil { armTimer(context) }
    }

    private func armTimer(_ context: ChannelHandlerContext) {
        guard let first = waiting.first else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: first.deadline) {
            let (handler, context) = bound.value
            handler.timer = nil
            if let oldest = handler.waiting.first, oldest.deadline <= .now() {
                handler.fail(MemcachedError.timeout, context: context)
            } else {
                handler.armTimer(context)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        do {
            while let expected = waiting.first, let reply = try parse(expected.expects) {
                waiting.removeFirst()
                expected.promise.succeed(reply)
            }
        } catch {
            fail(error, context: context)
            return
        }
        if waiting.isEmpty {
            timer?.cancel()
            timer = nil
        }
        if buffer.readableBytes == 0 { buffer.clear() }
    }

    /// The next reply, consumed; nil when it has not all arrived.
    private func parse(_ expects: Expectation) throws -> Reply? {
        let view = buffer.readableBytesView
        guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count > 1024 { throw MemcachedError.protocolError("line too long") }
            return nil
        }
        let lineLength = newline - view.startIndex + 1
        let line = String(decoding: view[view.startIndex..<newline], as: UTF8.self).trimmingCharacters(in: "\r")
        if line.hasPrefix("SERVER_ERROR") || line.hasPrefix("CLIENT_ERROR") || line == "ERROR" {
            buffer.moveReaderIndex(forwardBy: lineLength)
            throw MemcachedError.server(line)
        }
        switch expects {
        case .line:
            buffer.moveReaderIndex(forwardBy: lineLength)
            return .line(line)
        case .value:
            if line == "END" {
                buffer.moveReaderIndex(forwardBy: lineLength)
                return .value(nil)
            }
            let parts = line.split(separator: " ")
            guard parts.count >= 4, parts[0] == "VALUE", let length = Int(parts[3]), length >= 0 else {
                throw MemcachedError.protocolError("unexpected reply '\(line.prefix(64))'")
            }
            let end = "\r\nEND\r\n".utf8.count
            guard buffer.readableBytes >= lineLength + length + end else { return nil }
            buffer.moveReaderIndex(forwardBy: lineLength)
            let value = buffer.readSlice(length: length)!
            buffer.moveReaderIndex(forwardBy: end)
            // A copy: the slice would keep the whole read buffer alive.
            return .value(ByteBuffer(buffer: value))
        }
    }

    private func fail(_ error: any Error, context: ChannelHandlerContext) {
        failed = error
        let pending = waiting
        waiting.removeAll()
        timer?.cancel()
        timer = nil
        for entry in pending { entry.promise.fail(error) }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(MemcachedError.notConnected("connection closed"), context: context)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error, context: context)
    }
}

extension String {
    fileprivate func trimmingCharacters(in character: Character) -> String {
        var text = Substring(self)
        while text.last == character { text = text.dropLast() }
        return String(text)
    }
}

/// One client per server per event loop, made on first use.
final class MemcachedPool: Sendable {
    let configuration: MemcachedConfiguration
    private let clients = NIOLockedValueBox([String: MemcachedClient]())

    init(configuration: MemcachedConfiguration) {
        self.configuration = configuration
    }

    /// The server for `key` (by hash), on `loop`.
    func client(for key: String, on loop: any EventLoop) -> MemcachedClient {
        // FNV-1a: the same server for a key on every gateway node (Hasher is seeded per process).
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let servers = configuration.servers
        let server = servers[Int(hash % UInt64(servers.count))]
        let id = "\(ObjectIdentifier(loop))|\(server)"
        return clients.withLockedValue { clients in
            if let client = clients[id] { return client }
            let (host, port) = MemcachedClient.split(server) ?? ("127.0.0.1", 11211)
            let client = MemcachedClient(host: host, port: port, eventLoop: loop, configuration: configuration)
            clients[id] = client
            return client
        }
    }
}
