import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Small integer ids for target authorities (`host:port`), stable for the life of the process, so
/// that pools find a target's connections by index instead of hashing a String per request, and keep
/// them across reloads that keep the target.
enum TargetIDs {
    private static let ids = NIOLockedValueBox<[String: Int]>([:])

    /// Called when a snapshot is prepared, never per request.
    static func id(for authority: String) -> Int {
        ids.withLockedValue { ids in
            if let id = ids[authority] { return id }
            let id = ids.count
            ids[authority] = id
            return id
        }
    }
}

/// Keep-alive connections of one event loop, per target, with a per-target connection limit. Only
/// touched on its loop: no locks.
final class UpstreamPool {
    enum PoolError: Error {
        case connectionLimitReached
        /// The service's circuit breaker allows no more connections.
        case overloaded
    }

    /// One target's connections on this loop.
    final class TargetPool {
        var idle: [UpstreamConnection] = []
        var open = 0
        var waiters: [Waiter] = []
    }

    struct Waiter {
        let id: Int
        let target: ResolvedTarget
        let service: ServiceRuntime
        let callback: (Result<UpstreamConnection, any Error>) -> Void
    }

    let eventLoop: any EventLoop
    /// Indexed by target id.
    private var pools: [TargetPool?] = []
    private var nextWaiterID = 0

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    private func pool(_ targetID: Int) -> TargetPool {
        if targetID < pools.count, let pool = pools[targetID] { return pool }
        if targetID >= pools.count { pools.append(contentsOf: repeatElement(nil, count: targetID - pools.count + 1)) }
        let pool = TargetPool()
        pools[targetID] = pool
        return pool
    }

    /// An idle, still open connection to the target, if there is one.
    func takeIdle(_ targetID: Int) -> UpstreamConnection? {
        guard targetID < pools.count, let pool = pools[targetID] else { return nil }
        while let connection = pool.idle.popLast() {
            if connection.isActive { return connection }
        }
        return nil
    }

    /// Calls back with a connection to `target`: an idle one at once, else a new one, else (at the
    /// limit) the next one released, failing after the connect timeout.
    func lease(target: ResolvedTarget, service: ServiceRuntime,
               callback: @escaping (Result<UpstreamConnection, any Error>) -> Void) {
        if let connection = takeIdle(target.id) {
            callback(.success(connection))
            return
        }
        let pool = self.pool(target.id)
        if pool.open >= service.config.maxConnectionsPerTarget {
            let id = nextWaiterID
            nextWaiterID += 1
            pool.waiters.append(Waiter(id: id, target: target, service: service, callback: callback))
            // Strong: a weak capture would give the pool a side table (slow retains on every request).
            eventLoop.assumeIsolated().scheduleTask(in: service.connectTimeout) { [self] in
                expireWaiter(pool, id: id)
            }
            return
        }
        pool.open += 1
        connect(target: target, service: service, pool: pool, callback: callback)
    }

    private func expireWaiter(_ pool: TargetPool, id: Int) {
        guard let index = pool.waiters.firstIndex(where: { $0.id == id }) else { return }
        let waiter = pool.waiters.remove(at: index)
        waiter.callback(.failure(PoolError.connectionLimitReached))
    }

    private func connect(target: ResolvedTarget, service: ServiceRuntime, pool: TargetPool,
                         callback: @escaping (Result<UpstreamConnection, any Error>) -> Void) {
        guard service.counters.acquire(.connection, limits: service.circuitBreaker) else {
            pool.open = max(0, pool.open - 1)
            callback(.failure(PoolError.overloaded))
            return
        }
        let handler = UpstreamConnection(targetPool: pool, counters: service.counters)
        handler.pool = self
        let loopBoundHandler = NIOLoopBound(handler, eventLoop: eventLoop)
        let future = ClientBootstrap(group: eventLoop)
            .connectTimeout(service.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: true)
            .channelInitializer { channel in
                do {
                    try channel.pipeline.syncOperations.addHandler(loopBoundHandler.value)
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
                handler.releaseCounters()
                pool.open = max(0, pool.open - 1)
                self.connectForWaiter(pool)
                callback(.failure(error))
            }
        }
    }

    /// Returns a connection after a complete exchange; reusable ones go idle, the rest are closed.
    func release(_ connection: UpstreamConnection, reusable: Bool, maxIdle: Int) {
        connection.owner = nil
        guard reusable, connection.isActive else {
            connection.close()
            return
        }
        let pool = connection.targetPool
        if !pool.waiters.isEmpty {
            pool.waiters.removeFirst().callback(.success(connection))
            return
        }
        guard pool.idle.count < maxIdle else {
            connection.close()
            return
        }
        pool.idle.append(connection)
    }

    /// Called when a pooled connection's channel closes, leased or idle.
    func connectionClosed(_ connection: UpstreamConnection) {
        let pool = connection.targetPool
        pool.idle.removeAll { $0 === connection }
        pool.open = max(0, pool.open - 1)
        connection.pool = nil
        connectForWaiter(pool)
    }

    /// A slot freed up at the limit: open a connection for the longest waiter.
    private func connectForWaiter(_ pool: TargetPool) {
        guard let waiter = pool.waiters.first, pool.open < waiter.service.config.maxConnectionsPerTarget else { return }
        pool.waiters.removeFirst()
        pool.open += 1
        connect(target: waiter.target, service: waiter.service, pool: pool, callback: waiter.callback)
    }

    /// Closes every idle connection (shutdown).
    func closeIdle() {
        for case let pool? in pools {
            let idle = pool.idle
            pool.idle = []
            for connection in idle { connection.close() }
        }
    }
}

@available(*, unavailable)
extension UpstreamPool.TargetPool: Sendable {}
