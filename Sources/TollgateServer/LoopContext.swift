import HTTPTypes
import Logging
import NIOCore
import TollgateCore
import TollgateObservability

/// Everything one event loop owns: its view of the current snapshot, its upstream pools, balancer
/// positions and request-id generator. Touched only on its own loop, so the request path takes no lock.
final class LoopContext: @unchecked Sendable {
    // @unchecked: every mutable member is only accessed on `eventLoop` (asserted in debug builds).
    let eventLoop: any EventLoop
    private var _state: ServerState
    let pool: UpstreamPool
    /// Each service's balancer and retry budget on this loop, by service index.
    private var balancers: [LoopBalancer?] = []
    private var random: WyRand

    let logger: Logger
    /// The router's path segments, reused by every request on this loop.
    var segmentScratch: [RouteTable.Segment] = {
        var scratch: [RouteTable.Segment] = []
        scratch.reserveCapacity(16)
        return scratch
    }()

    init(eventLoop: any EventLoop, state: ServerState, logger: Logger = Logger(label: "tollgate")) {
        self.eventLoop = eventLoop
        self.logger = logger
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
            if newValue !== _state { balancers.removeAll(keepingCapacity: true) }
            _state = newValue
        }
    }

    private func balancer(_ service: ServiceRuntime) -> LoopBalancer {
        if service.index < balancers.count, let balancer = balancers[service.index], balancer.service === service {
            return balancer
        }
        // A request that started before a reload asks for a service this state does not have: it gets
        // a balancer of its own for the moment, never another service's (indices would not match).
        guard _state.services[service.config.name] === service else { return LoopBalancer(service) }
        if service.index >= balancers.count {
            balancers.append(contentsOf: repeatElement(nil, count: service.index - balancers.count + 1))
        }
        let balancer = LoopBalancer(service)
        balancers[service.index] = balancer
        return balancer
    }

    /// The next target of `service` on this loop: one that is healthy, not ejected and (for a retry)
    /// not yet tried when another is left; nil when none is available. `hashKey` feeds hash balancers.
    func pickTarget(_ service: ServiceRuntime, now: UInt64, hashKey: UInt64, tried: UInt64 = 0) -> Int? {
        let targets = service.targets
        if targets.count == 1 { return targets[0].state.isAvailable(now: now) ? 0 : nil }
        if tried == 0 && service.allAvailable(now: now) { return pickAmongAll(service, now: now, hashKey: hashKey) }
        if tried != 0, let index = pick(service, now: now, hashKey: hashKey, isAvailable: { index in
            (index >= 64 || tried & (1 << UInt64(index)) == 0) && targets[index].state.isAvailable(now: now)
        }) {
            return index
        }
        return pick(service, now: now, hashKey: hashKey) { targets[$0].state.isAvailable(now: now) }
    }

    /// Every target is available: no availability checks, and SWRR reads its precomputed sequence.
    private func pickAmongAll(_ service: ServiceRuntime, now: UInt64, hashKey: UInt64) -> Int? {
        if service.slowStartNanos == 0, case .weighted = balancer(service).kind {
            let balancer = self.balancer(service)
            guard case .weighted(var state) = balancer.kind else { return nil }
            balancer.kind = .hash   // let go of the payload, so mutating `state` copies no array
            defer { balancer.kind = .weighted(state) }
            return state.nextAllAvailable()
        }
        return pick(service, now: now, hashKey: hashKey) { _ in true }
    }

    private func pick(_ service: ServiceRuntime, now: UInt64, hashKey: UInt64, isAvailable: (Int) -> Bool) -> Int? {
        let balancer = self.balancer(service)
        // Slow start: weights recomputed now and then (every 50 ms), not per target and pick.
        let ramped = service.slowStartNanos > 0 ? balancer.rampedWeights(service, now: now) : nil
        switch balancer.kind {
        case .roundRobin(var state):
            defer { balancer.kind = .roundRobin(state) }
            return state.next(isAvailable: isAvailable)
        case .weighted(var state):
            balancer.kind = .hash   // let go of the payload, so mutating `state` copies no array
            defer { balancer.kind = .weighted(state) }
            guard let ramped else { return state.next(isAvailable: isAvailable) }
            return state.next(isAvailable: isAvailable, weight: { ramped.weights[$0] })
        case .leastConnections(var state):
            balancer.kind = .hash
            defer { balancer.kind = .leastConnections(state) }
            if let ramped, ramped.changed { state.setWeights(ramped.weights) }
            let targets = service.targets
            return state.next(inFlight: { targets[$0].state.inFlight.load(ordering: .relaxed) }, isAvailable: isAvailable)
        case .hash:
            return service.maglev?.lookup(hashKey, isAvailable: isAvailable)
        case .peakEWMA(var state):
            balancer.kind = .hash
            defer { balancer.kind = .peakEWMA(state) }
            if let ramped {
                return state.next(now: now, random: &random, weight: { ramped.weights[$0] }, isAvailable: isAvailable)
            }
            return state.next(now: now, random: &random, weight: { service.targets[$0].weight }, isAvailable: isAvailable)
        }
    }

    /// An attempt to `index` began (least connections and p2c count what is in flight).
    func attemptStarted(_ service: ServiceRuntime, _ index: Int) {
        switch service.balancer {
        case .leastConnections:
            service.targets[index].state.inFlight.wrappingIncrement(ordering: .relaxed)
        case .p2cEWMA:
            let balancer = self.balancer(service)
            if case .peakEWMA(var state) = balancer.kind {
                balancer.kind = .hash   // let go of the payload before mutating it
                state.started(index)
                balancer.kind = .peakEWMA(state)
            }
        default:
            break
        }
    }

    /// The attempt to `index` ended after `latency` (its response, or its failure).
    func attemptEnded(_ service: ServiceRuntime, _ index: Int, latencyNanos: UInt64, now: UInt64) {
        switch service.balancer {
        case .leastConnections:
            service.targets[index].state.inFlight.wrappingDecrement(ordering: .relaxed)
        case .p2cEWMA:
            let balancer = self.balancer(service)
            if case .peakEWMA(var state) = balancer.kind {
                balancer.kind = .hash
                state.finished(index, latencyNanos: latencyNanos, now: now)
                balancer.kind = .peakEWMA(state)
            }
        default:
            break
        }
    }

    func recordRequest(_ service: ServiceRuntime, now: UInt64) {
        guard service.retryAttempts > 1 else { return }
        balancer(service).budget.recordRequest(now: now)
    }

    /// Whether the service's retry budget on this loop has room for one more retry (counted if so).
    func retryBudgetAllows(_ service: ServiceRuntime, now: UInt64) -> Bool {
        balancer(service).budget.tryRetry(now: now)
    }

    /// A random number in [0, 1), for backoff jitter.
    func randomUnit() -> Double {
        Double(random.next() >> 11) / Double(UInt64(1) << 53)
    }

    /// A 128-bit random id as 32 hex digits, from a per-loop PRNG (no syscall per request).
    func makeRequestID() -> RequestID {
        RequestID(high: random.next(), low: random.next())
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
    /// `limits.header_read_timeout` and `limits.idle_timeout` as nanoseconds, converted once: a
    /// `Duration`'s conversion (128-bit arithmetic) cost some 190 instructions on every request.
    let headerReadTimeout: TimeAmount
    let idleTimeout: TimeAmount
    /// Whether routing or versioning reads request header fields, and whether versioning is on, known
    /// once: asking the snapshot's optional resolver copied it (and destroyed the copy) per request.
    let routingReadsFields: Bool
    let versions: Bool
    /// What plugins send their own requests through (a cache's background refresh).
    let subrequests: ServiceSubrequests

    /// When hostname targets must be resolved again (nil: there are none).
    let refreshAfter: Duration?
    /// The gateway's metrics (events: retries, circuit-breaker refusals, health changes).
    let metrics: GatewayMetrics

    init(snapshot: GatewaySnapshot, services: [String: ServiceRuntime], refreshAfter: Duration? = nil) {
        self.snapshot = snapshot
        self.services = services
        self.refreshAfter = refreshAfter
        self.metrics = GatewayMetrics.of(snapshot.state)
        self.viaValue = "1.1 \(snapshot.config.server.via)"
        self.requestIDHeader = snapshot.config.server.requestIDHeader.rawName
        self.requestIDFieldName = snapshot.config.server.requestIDHeader
        self.routeServices = snapshot.routeTable.routes.map { route in route.serviceName.flatMap { services[$0] } }
        self.subrequests = ServiceSubrequests(routeServices: routeServices)
        let limits = snapshot.config.limits
        self.requestParser = HeadParser(kind: .request, maxURILength: limits.maxURILength,
                                        maxHeaderSize: limits.maxHeaderSize, requestIDHeader: requestIDHeader)
        self.headerReadTimeout = .nanoseconds(limits.headerReadTimeout.nanoseconds)
        self.idleTimeout = .nanoseconds(limits.idleTimeout.nanoseconds)
        self.routingReadsFields = snapshot.routeTable.usesHeaders || snapshot.versionResolver?.usesHeaders == true
        self.versions = snapshot.versionResolver != nil
    }
}


/// One service's balancing state on one loop.
final class LoopBalancer {
    enum Kind {
        case roundRobin(RoundRobin)
        case weighted(SmoothWeightedRoundRobin)
        case leastConnections(LeastConnections)
        case hash
        case peakEWMA(PeakEWMABalancer)
    }

    var kind: Kind
    var budget: RetryBudget
    /// The service this balancer is for (indices are only meaningful against its targets).
    let service: ServiceRuntime
    /// Slow-start weights and when they were computed.
    private var ramp: [Int] = []
    private var rampComputedAt: UInt64 = 0

    /// The current slow-start weights (hundredths), recomputed at most every 50 ms; `changed` tells
    /// balancers that keep derived tables to rebuild them.
    func rampedWeights(_ service: ServiceRuntime, now: UInt64) -> (weights: [Int], changed: Bool) {
        if !ramp.isEmpty && now &- rampComputedAt < 50_000_000 { return (ramp, false) }
        let fresh = service.targets.indices.map { service.weight($0, now: now) }
        let changed = fresh != ramp
        ramp = fresh
        rampComputedAt = now
        return (fresh, changed)
    }

    init(_ service: ServiceRuntime) {
        self.service = service
        let count = max(1, service.targets.count)
        switch service.balancer {
        case .roundRobin: kind = .roundRobin(RoundRobin(count: count))
        case .weightedRoundRobin: kind = .weighted(SmoothWeightedRoundRobin(weights: service.targets.isEmpty ? [1] : service.targets.map(\.weight)))
        case .leastConnections: kind = .leastConnections(LeastConnections(weights: service.targets.isEmpty ? [1] : service.targets.map(\.weight)))
        case .ipHash, .consistentHash: kind = .hash
        case .p2cEWMA: kind = .peakEWMA(PeakEWMABalancer(count: count))
        }
        budget = RetryBudget(percent: service.config.retries.budgetPercent, minPerSecond: service.config.retries.budgetMinPerSecond)
    }
}
