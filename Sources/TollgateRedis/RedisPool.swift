import NIOCore
import Synchronization

/// One pipelined connection per event loop, made on first use from that loop: a command issued on a
/// connection's loop is written and answered there, with no thread hop, and the loops never wait on
/// one another's connection. Pools are shared by everyone using the same Redis (`shared(_:)`), so a
/// config reload keeps its connections.
public final class RedisPool: Sendable {
    public let configuration: RedisConfiguration
    /// Whether this Redis answers, shared by all its users.
    public let circuit = RedisCircuit()
    /// Each loop kept with its client: holding the loop keeps its identity from being reused.
    private let clients = Mutex<[ObjectIdentifier: (loop: any EventLoop, client: RedisClient)]>([:])

    public init(configuration: RedisConfiguration) {
        self.configuration = configuration
    }

    /// The client whose connection lives on `loop`.
    public func client(on loop: any EventLoop) -> RedisClient {
        let id = ObjectIdentifier(loop)
        return clients.withLock { clients in
            if let entry = clients[id] { return entry.client }
            let client = RedisClient(configuration: configuration, eventLoop: loop)
            clients[id] = (loop, client)
            return client
        }
    }

    /// Closes every connection (tests; a process that exits need not).
    public func close() -> [EventLoopFuture<Void>] {
        let all = clients.withLock { clients in
            defer { clients = [:] }
            return clients.values.map(\.client)
        }
        return all.map { $0.close() }
    }

    private static let pools = Mutex<[RedisConfiguration: RedisPool]>([:])

    /// The process-wide pool for `configuration`.
    public static func shared(_ configuration: RedisConfiguration) -> RedisPool {
        pools.withLock { pools in
            if let pool = pools[configuration] { return pool }
            let pool = RedisPool(configuration: configuration)
            pools[configuration] = pool
            return pool
        }
    }
}
