import HTTPTypes
import NIOCore
import TollgateCore

/// Everything one event loop owns: its view of the current snapshot, its upstream pools, balancer
/// positions and request-id generator. Touched only on its own loop, so the request path takes no lock.
final class LoopContext: @unchecked Sendable {
    // @unchecked: every mutable member is only accessed on `eventLoop` (asserted in debug builds).
    let eventLoop: any EventLoop
    private var _state: ServerState
    let pool: UpstreamPool
    private var balancers: [ObjectIdentifier: SmoothWeightedRoundRobin] = [:]
    private var random: WyRand

    init(eventLoop: any EventLoop, state: ServerState) {
        self.eventLoop = eventLoop
        self._state = state
        self.pool = UpstreamPool(eventLoop: eventLoop)
        var system = SystemRandomNumberGenerator()
        self.random = WyRand(seed: system.next())
    }

    var state: ServerState {
        get {
            eventLoop.preconditionInEventLoop()
            return _state
        }
        set {
            eventLoop.preconditionInEventLoop()
            if newValue.snapshot !== _state.snapshot { balancers.removeAll(keepingCapacity: true) }
            _state = newValue
        }
    }

    /// The next target of `service`, by smooth weighted round robin on this loop.
    func pickTarget(_ service: ServiceRuntime) -> ResolvedTarget {
        if service.targets.count == 1 { return service.targets[0] }
        let key = ObjectIdentifier(service)
        var balancer = balancers[key] ?? SmoothWeightedRoundRobin(weights: service.targets.map(\.weight))
        let index = balancer.next() ?? 0
        balancers[key] = balancer
        return service.targets[index]
    }

    /// A 128-bit random id as 32 hex digits, from a per-loop PRNG (no syscall per request).
    func makeRequestID() -> String {
        let high = random.next(), low = random.next()
        return String(unsafeUninitializedCapacity: 32) { buffer in
            let digits: StaticString = "0123456789abcdef"
            digits.withUTF8Buffer { hex in
                for i in 0..<16 { buffer[i] = hex[Int((high >> UInt64(60 - i * 4)) & 0xF)] }
                for i in 0..<16 { buffer[16 + i] = hex[Int((low >> UInt64(60 - i * 4)) & 0xF)] }
            }
            return 32
        }
    }
}

/// wyrand: fast, good-enough randomness for ids that need to be unique, not secret.
struct WyRand: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0xa076_1d64_78bd_642f
        let product = state.multipliedFullWidth(by: state ^ 0xe703_7ed1_a0b4_28db)
        return product.high ^ product.low
    }
}

/// The snapshot plus what the server derived from it (resolved target addresses).
final class ServerState: Sendable {
    let snapshot: GatewaySnapshot
    let services: [String: ServiceRuntime]
    /// `1.1 tollgate`, rendered once.
    let viaValue: String
    /// The request-id header's name as written to the wire.
    let requestIDHeader: String
    let requestIDFieldName: HTTPField.Name?
    /// Each route's service, by route index (no lookup by name per request).
    let routeServices: [ServiceRuntime?]
    /// Request heads are parsed with this snapshot's limits.
    let requestParser: HeadParser

    init(snapshot: GatewaySnapshot, services: [String: ServiceRuntime]) {
        self.snapshot = snapshot
        self.services = services
        self.viaValue = "1.1 \(snapshot.config.server.via)"
        self.requestIDHeader = snapshot.config.server.requestIDHeader.rawName
        self.requestIDFieldName = snapshot.config.server.requestIDHeader
        self.routeServices = snapshot.routeTable.routes.map { route in route.serviceName.flatMap { services[$0] } }
        let limits = snapshot.config.limits
        self.requestParser = HeadParser(kind: .request, maxURILength: limits.maxURILength,
                                        maxHeaderSize: limits.maxHeaderSize, requestIDHeader: requestIDHeader)
    }
}

/// A service with its targets' addresses resolved once per snapshot, not per request.
final class ServiceRuntime: Sendable {
    let config: ServiceConfig
    let targets: [ResolvedTarget]
    let connectTimeout: TimeAmount
    let readTimeout: TimeAmount
    let writeTimeout: TimeAmount

    init(config: ServiceConfig, targets: [ResolvedTarget]) {
        self.config = config
        self.targets = targets
        self.connectTimeout = .nanoseconds(config.connectTimeout.nanoseconds)
        self.readTimeout = .nanoseconds(config.readTimeout.nanoseconds)
        self.writeTimeout = .nanoseconds(config.writeTimeout.nanoseconds)
    }
}

final class ResolvedTarget: Sendable {
    let config: TargetConfig
    let address: SocketAddress
    /// `host:port`: the default upstream Host header.
    let authority: String
    /// The authority's id (`TargetIDs`): where pools keep its connections.
    let id: Int
    var weight: Int { config.weight }

    init(config: TargetConfig, address: SocketAddress, authority: String, id: Int) {
        self.config = config
        self.address = address
        self.authority = authority
        self.id = id
    }
}
