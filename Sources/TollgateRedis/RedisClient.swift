import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// Where and how to reach Redis: `redis://[[user]:password@]host[:port][/database]`, or `rediss://`
/// for TLS (the server's certificate checked against the system's roots, or `tlsCAFile`).
public struct RedisConfiguration: Sendable, Hashable {
    public var host: String
    public var port: Int
    public var username: String?
    public var password: String?
    public var database: Int
    public var connectTimeout: TimeAmount = .seconds(1)
    public var commandTimeout: TimeAmount = .milliseconds(500)
    public var useTLS = false
    /// PEM file of the CA that signed the server's certificate (else the system's trust roots).
    public var tlsCAFile: String?

    public init(host: String, port: Int = 6379, username: String? = nil, password: String? = nil, database: Int = 0) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
    }

    public init?(url: String) {
        let tls = url.hasPrefix("rediss://")
        guard url.hasPrefix("redis://") || tls else { return nil }
        var rest = Substring(url.dropFirst(tls ? "rediss://".count : "redis://".count))
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                username = credentials[..<colon].isEmpty ? nil : String(credentials[..<colon])
                password = String(credentials[credentials.index(after: colon)...])
            } else {
                password = String(credentials)
            }
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            if !path.isEmpty {
                guard let number = Int(path), number >= 0 else { return nil }
                database = number
            }
            rest = rest[..<slash]
        }
        var host = String(rest)
        var port = 6379
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            guard let number = Int(rest[rest.index(after: colon)...]), (1...65535).contains(number) else { return nil }
            port = number
            host = String(rest[..<colon])
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port, username: username, password: password, database: database)
        self.useTLS = tls
    }
}

public enum RedisError: Error, Equatable, Sendable {
    /// Redis answered with an error reply.
    case server(String)
    case timeout
    case connectionClosed
    case notConnected(String)
}

/// A Redis client over one pipelined connection: commands are written as they come and replies are
/// matched in order, so many requests share one round trip's latency. It connects on first use (AUTH
/// and SELECT first), and after the connection breaks it connects again on the next command, no sooner
/// than a backoff that doubles up to 1 s. Scripts run with EVALSHA, loaded on first use and loaded
/// again when Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH).
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    public let eventLoop: any EventLoop
    private let state: NIOLockedValueBox<State>

    private struct State {
        var connection: EventLoopFuture<any Channel>?
        var failures = 0
        var retryAfter = NIODeadline.uptimeNanoseconds(0)
        var scripts: [String: String] = [:]   // source → SHA1
        /// Scripts being loaded: callers meanwhile wait on the same load instead of each loading.
        var loading: [String: EventLoopFuture<String>] = [:]
    }

    public init(configuration: RedisConfiguration, eventLoop: any EventLoop) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.state = NIOLockedValueBox(State())
        if configuration.useTLS {
            var tls = TLSConfiguration.makeClientConfiguration()
            if let file = configuration.tlsCAFile { tls.trustRoots = .file(file) }
            tlsContext = Result { try NIOSSLContext(configuration: tls) }
        } else {
            tlsContext = nil
        }
    }

    /// One command; its reply, or `RedisError.server` for an error reply.
    public func send(_ arguments: [String]) -> EventLoopFuture<RESPValue> {
        channel().flatMap { channel in
            self.write(arguments, on: channel)
        }.flatMapThrowing { value in
            if case .error(let message) = value { throw RedisError.server(message) }
            return value
        }
    }

    /// One command whose arguments are bytes (binary values such as a cached response).
    public func send(bytes arguments: [ByteBuffer]) -> EventLoopFuture<RESPValue> {
        channel().flatMap { channel in
            let promise = channel.eventLoop.makePromise(of: RESPValue.self)
            var buffer = channel.allocator.buffer(capacity: arguments.reduce(16) { $0 + $1.readableBytes + 16 })
            RESP.writeCommand(arguments, into: &buffer)
            channel.write(RedisHandler.Command(bytes: buffer, promise: promise), promise: nil)
            return promise.futureResult
        }.flatMapThrowing { value in
            if case .error(let message) = value { throw RedisError.server(message) }
            return value
        }
    }

    /// Runs a Lua script atomically (EVALSHA), loading it when Redis does not know it.
    public func eval(_ script: String, keys: [String], arguments: [String]) -> EventLoopFuture<RESPValue> {
        let known = state.withLockedValue { $0.scripts[script] }
        let sha: EventLoopFuture<String> = known.map { eventLoop.makeSucceededFuture($0) } ?? load(script)
        return sha.flatMap { sha in
            self.send(["EVALSHA", sha, String(keys.count)] + keys + arguments)
        }.flatMapError { error in
            guard case RedisError.server(let message) = error, message.hasPrefix("NOSCRIPT") else {
                return self.eventLoop.makeFailedFuture(error)
            }
            return self.load(script).flatMap { sha in self.send(["EVALSHA", sha, String(keys.count)] + keys + arguments) }
        }
    }

    private func load(_ script: String) -> EventLoopFuture<String> {
        let (future, start) = state.withLockedValue { state -> (EventLoopFuture<String>, EventLoopPromise<String>?) in
            if let loading = state.loading[script] { return (loading, nil) }
            let promise = eventLoop.makePromise(of: String.self)
            state.loading[script] = promise.futureResult
            return (promise.futureResult, promise)
        }
        guard let start else { return future }
        send(["SCRIPT", "LOAD", script]).flatMapThrowing { value -> String in
            guard let sha = value.string else { throw RedisError.server("SCRIPT LOAD gave no SHA") }
            return sha
        }.whenComplete { result in
            self.state.withLockedValue { state in
                state.loading[script] = nil
                if case .success(let sha) = result { state.scripts[script] = sha }
            }
            start.completeWith(result)
        }
        return future
    }

    public func close() -> EventLoopFuture<Void> {
        let connection = state.withLockedValue { state -> EventLoopFuture<any Channel>? in
            defer { state.connection = nil }
            return state.connection
        }
        guard let connection else { return eventLoop.makeSucceededVoidFuture() }
        return connection.flatMap { $0.close() }.recover { _ in }
    }

    private func write(_ arguments: [String], on channel: any Channel) -> EventLoopFuture<RESPValue> {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        var buffer = channel.allocator.buffer(capacity: 64)
        RESP.writeCommand(arguments, into: &buffer)
        // The handler flushes once per loop tick and watches the oldest command's deadline.
        channel.write(RedisHandler.Command(bytes: buffer, promise: promise), promise: nil)
        return promise.futureResult
    }

    /// The open connection, or a new one (AUTH, SELECT) unless the backoff after a failure still runs.
    private func channel() -> EventLoopFuture<any Channel> {
        state.withLockedValue { state -> EventLoopFuture<any Channel> in
            if let connection = state.connection { return connection }
            let now = NIODeadline.now()
            if now < state.retryAfter {
                return eventLoop.makeFailedFuture(RedisError.notConnected("reconnecting after a failure"))
            }
            let connection = connect()
            state.connection = connection
            return connection
        }
    }

    /// TLS for `rediss://`: made once per client.
    private let tlsContext: Result<NIOSSLContext, any Error>?

    private func connect() -> EventLoopFuture<any Channel> {
        let configuration = self.configuration
        let tls: NIOSSLContext?
        switch tlsContext {
        case .success(let context): tls = context
        case .failure(let error): return eventLoop.makeFailedFuture(error)
        case nil: tls = nil
        }
        let serverName = configuration.host.contains(":") || configuration.host.allSatisfy({ $0.isNumber || $0 == "." }) ? nil : configuration.host
        let connected = ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: serverName))
                    }
                    try channel.pipeline.syncOperations.addHandler(RedisHandler(timeout: configuration.commandTimeout))
                }
            }
            .connect(host: configuration.host, port: configuration.port)
            .flatMap { channel -> EventLoopFuture<any Channel> in
                var setup: EventLoopFuture<RESPValue> = channel.eventLoop.makeSucceededFuture(.simpleString("OK"))
                if let password = configuration.password {
                    let auth = configuration.username.map { ["AUTH", $0, password] } ?? ["AUTH", password]
                    setup = setup.flatMap { _ in self.write(auth, on: channel) }
                }
                if configuration.database != 0 {
                    setup = setup.flatMap { _ in self.write(["SELECT", String(configuration.database)], on: channel) }
                }
                return setup.flatMapThrowing { reply in
                    if case .error(let message) = reply { throw RedisError.server(message) }
                    return channel
                }.flatMapErrorThrowing { error in
                    channel.close(promise: nil)
                    throw error
                }
            }
        connected.whenComplete { result in
            switch result {
            case .success(let channel):
                self.state.withLockedValue { $0.failures = 0 }
                channel.closeFuture.whenComplete { _ in self.forget(connected) }
            case .failure:
                self.forget(connected, failed: true)
            }
        }
        return connected
    }

    /// A connection ended: the next command connects again, after a backoff when it failed.
    private func forget(_ connection: EventLoopFuture<any Channel>, failed: Bool = false) {
        state.withLockedValue { state in
            guard state.connection === connection else { return }
            state.connection = nil
            if failed {
                state.failures += 1
                let backoff = min(1_000, 10 << min(state.failures, 7))   // 20 ms, 40 ms... up to 1 s
                state.retryAfter = .now() + .milliseconds(Int64(backoff))
            }
        }
    }
}

/// Writes commands and completes their promises with the replies, in order. Commands written in one
/// loop tick go out in one flush. Replies come in order, so one timer watches only the oldest command:
/// when it is late, every later one is stuck behind it, and the connection is closed (failing them
/// all) to be made again by the next command.
final class RedisHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Command
    typealias OutboundOut = ByteBuffer

    struct Command {
        var bytes: ByteBuffer
        var promise: EventLoopPromise<RESPValue>
    }

    private let timeout: TimeAmount
    private var waiting = CircularBuffer<(promise: EventLoopPromise<RESPValue>, deadline: NIODeadline)>()
    private var inbound = ByteBuffer()
    private var flushScheduled = false
    private var timer: Scheduled<Void>?
    private var failed: RedisError?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let command = unwrapOutboundIn(data)
        if let failed {
            command.promise.fail(failed)
            return
        }
        // The deadline runs from the flush (a burst written in one tick may take a while to queue).
        waiting.append((command.promise, .distantFuture))
        context.write(wrapOutboundOut(command.bytes), promise: promise)
        if !flushScheduled {
            flushScheduled = true
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.execute {
                let (handler, context) = bound.value
                handler.flushScheduled = false
                let deadline = NIODeadline.now() + handler.timeout
                for index in handler.waiting.indices.reversed() {
                    guard handler.waiting[index].deadline == .distantFuture else { break }
                    handler.waiting[index].deadline = deadline
                }
                context.flush()
                if handler.timer == nil { handler.armTimer(context: context) }
            }
        }
    }

    private func armTimer(context: ChannelHandlerContext) {
        guard let oldest = waiting.first else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: oldest.deadline) {
            let (handler, context) = bound.value
            handler.timer = nil
            guard let oldest = handler.waiting.first else { return }
            if oldest.deadline <= .now() {
                handler.failAll(RedisError.timeout)
                context.close(promise: nil)
            } else {
                handler.armTimer(context: context)
            }
        }
    }

    private func failAll(_ error: RedisError) {
        failed = failed ?? error
        while let entry = waiting.popFirst() { entry.promise.fail(error) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        inbound.writeBuffer(&bytes)
        do {
            while let value = try RESP.parse(&inbound) {
                guard let entry = waiting.popFirst() else {
                    context.close(promise: nil)   // a reply nobody asked for: the stream is out of step
                    return
                }
                entry.promise.succeed(value)
            }
            inbound.discardReadBytes()
        } catch {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        failAll(RedisError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension RedisHandler: Sendable {}
