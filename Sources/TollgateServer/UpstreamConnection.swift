import NIOCore
import NIOHTTP1
import NIOPosix

/// What an upstream connection reports to the downstream request that leased it. Both live on the
/// same event loop, so these are plain synchronous calls.
protocol UpstreamOwner: AnyObject {
    func upstreamReceived(_ part: HTTPClientResponsePart)
    func upstreamReadComplete()
    func upstreamWritabilityChanged(_ writable: Bool)
    func upstreamFailed(_ error: any Error)
    func upstreamClosed()
    /// Whether the owner can take more response bytes now (downstream writable).
    var upstreamMayRead: Bool { get }
}

/// The handler at the end of one upstream connection's pipeline: forwards response parts to the
/// request that leased it, and gates reads on the downstream's writability (backpressure).
final class UpstreamConnection: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    let key: String
    private(set) var channel: (any Channel)?
    private var context: ChannelHandlerContext?
    weak var pool: UpstreamPool?
    /// Strong while leased: the exchange and the connection keep each other alive until release.
    var owner: (any UpstreamOwner)?
    private var pendingRead = false

    init(key: String) {
        self.key = key
    }

    var isActive: Bool { channel?.isActive ?? false }
    var isWritable: Bool { channel?.isWritable ?? false }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.channel = context.channel
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func lease(to owner: any UpstreamOwner) {
        self.owner = owner
    }

    func write(_ part: HTTPClientRequestPart) {
        context?.write(wrapOutboundOut(part), promise: nil)
    }

    func flush() {
        context?.flush()
    }

    func close() {
        owner = nil
        context?.close(promise: nil)
    }

    /// Resumes a read that was held back while the downstream could not take more.
    func resumeReading() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        guard let owner else {
            // An idle pooled connection must not speak; a stray response means the stream is out of step.
            context.close(promise: nil)
            return
        }
        owner.upstreamReceived(part)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        owner?.upstreamReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        owner?.upstreamWritabilityChanged(context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        pool?.connectionClosed(self)
        let owner = self.owner
        self.owner = nil
        owner?.upstreamClosed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let owner = self.owner
        self.owner = nil
        owner?.upstreamFailed(error)
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        if let owner, !owner.upstreamMayRead {
            pendingRead = true
            return
        }
        context.read()
    }
}

@available(*, unavailable)
extension UpstreamConnection: Sendable {}

/// Keep-alive connections of one event loop, per target, with a per-target connection limit. Only
/// touched on its loop: no locks.
final class UpstreamPool {
    enum PoolError: Error {
        case connectionLimitReached
    }

    private struct TargetPool {
        var idle: [UpstreamConnection] = []
        var open = 0
        var waiters = CircularBuffer<Waiter>()
    }

    private struct Waiter {
        let id: Int
        let target: ResolvedTarget
        let service: ServiceRuntime
        let callback: (Result<UpstreamConnection, any Error>) -> Void
    }

    let eventLoop: any EventLoop
    private var pools: [String: TargetPool] = [:]
    private var nextWaiterID = 0

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// An idle, still open connection to `key`, if there is one.
    /// (Mutated in place through the dictionary: copying a TargetPool out and back would copy its
    /// arrays on every request.)
    func takeIdle(_ key: String) -> UpstreamConnection? {
        while let connection = pools[key]?.idle.popLast() {
            if connection.isActive { return connection }
        }
        return nil
    }

    /// Calls back with a connection to `target`: an idle one at once, else a new one, else (at the
    /// limit) the next one released, failing after the connect timeout.
    func lease(target: ResolvedTarget, service: ServiceRuntime,
               callback: @escaping (Result<UpstreamConnection, any Error>) -> Void) {
        let key = target.authority
        if let connection = takeIdle(key) {
            callback(.success(connection))
            return
        }
        if pools[key, default: TargetPool()].open >= service.config.maxConnectionsPerTarget {
            let id = nextWaiterID
            nextWaiterID += 1
            pools[key, default: TargetPool()].waiters.append(Waiter(id: id, target: target, service: service, callback: callback))
            eventLoop.assumeIsolated().scheduleTask(in: service.connectTimeout) { [weak self] in
                self?.expireWaiter(key: key, id: id)
            }
            return
        }
        pools[key, default: TargetPool()].open += 1
        connect(target: target, service: service, callback: callback)
    }

    private func expireWaiter(key: String, id: Int) {
        guard var pool = pools[key], let index = pool.waiters.firstIndex(where: { $0.id == id }) else { return }
        let waiter = pool.waiters.remove(at: index)
        pools[key] = pool
        waiter.callback(.failure(PoolError.connectionLimitReached))
    }

    private func connect(target: ResolvedTarget, service: ServiceRuntime,
                         callback: @escaping (Result<UpstreamConnection, any Error>) -> Void) {
        let handler = UpstreamConnection(key: target.authority)
        handler.pool = self
        let loopBoundHandler = NIOLoopBound(handler, eventLoop: eventLoop)
        let future = ClientBootstrap(group: eventLoop)
            .connectTimeout(service.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: true)
            .channelInitializer { channel in
                do {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(RequestEncoder())
                    try sync.addHandler(ByteToMessageHandler(HTTPResponseDecoder(
                        leftOverBytesStrategy: .forwardBytes, informationalResponseStrategy: .forward)))
                    try sync.addHandler(loopBoundHandler.value)
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
            .connect(to: target.address)
        future.assumeIsolated().whenComplete { result in
            switch result {
            case .success:
                callback(.success(handler))
            case .failure(let error):
                // A channel that never became active fires no channelInactive: count it closed here.
                handler.pool = nil
                self.connectionFailed(key: target.authority)
                callback(.failure(error))
            }
        }
    }

    /// Returns a connection after a complete exchange; reusable ones go idle, the rest are closed.
    func release(_ connection: UpstreamConnection, reusable: Bool, maxIdle: Int) {
        connection.owner = nil
        let key = connection.key
        guard reusable, connection.isActive else {
            connection.close()
            return
        }
        if let waiter = pools[key, default: TargetPool()].waiters.popFirst() {
            waiter.callback(.success(connection))
            return
        }
        guard pools[key, default: TargetPool()].idle.count < maxIdle else {
            connection.close()
            return
        }
        pools[key, default: TargetPool()].idle.append(connection)
    }

    /// Called when a pooled connection's channel closes, leased or idle.
    func connectionClosed(_ connection: UpstreamConnection) {
        guard var pool = pools[connection.key] else { return }
        pool.idle.removeAll { $0 === connection }
        pool.open = max(0, pool.open - 1)
        pools[connection.key] = pool
        connection.pool = nil
        connectForWaiter(key: connection.key)
    }

    private func connectionFailed(key: String) {
        guard var pool = pools[key] else { return }
        pool.open = max(0, pool.open - 1)
        pools[key] = pool
        connectForWaiter(key: key)
    }

    /// A slot freed up at the limit: open a connection for the longest waiter.
    private func connectForWaiter(key: String) {
        guard var pool = pools[key], let waiter = pool.waiters.first,
              pool.open < waiter.service.config.maxConnectionsPerTarget else { return }
        pool.waiters.removeFirst()
        pool.open += 1
        pools[key] = pool
        connect(target: waiter.target, service: waiter.service, callback: waiter.callback)
    }

    /// Closes every idle connection (shutdown).
    func closeIdle() {
        for (key, var pool) in pools {
            let idle = pool.idle
            pool.idle = []
            pools[key] = pool
            for connection in idle { connection.close() }
        }
    }
}
