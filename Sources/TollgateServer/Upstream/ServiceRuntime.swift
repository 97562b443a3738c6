#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Atomics
import NIOConcurrencyHelpers
import NIOCore
import TollgateCore

/// What every event loop must see of one target at once, as atomics (read on every pick, written
/// only when something changes): active-check health, passive ejection, in-flight requests (least
/// connections) and when it last came back (slow start). Kept across reloads for the same service
/// and address (`HealthRegistry`), so a reload neither forgets an ejection nor resets health.
final class TargetState: Sendable {
    let healthy = ManagedAtomic<Bool>(true)
    /// Monotonic nanoseconds until which the target is ejected (0: not ejected).
    let ejectedUntil = ManagedAtomic<UInt64>(0)
    let inFlight = ManagedAtomic<Int>(0)
    /// Consecutive failures seen, so a success only takes the detector's lock after failures.
    let errorStreak = ManagedAtomic<Int>(0)
    /// When the target joined or last recovered (slow start ramps from here).
    let since: ManagedAtomic<UInt64>

    init(now: UInt64) {
        since = ManagedAtomic(now)
    }

    @inline(__always)
    func isAvailable(now: UInt64) -> Bool {
        healthy.load(ordering: .relaxed) && ejectedUntil.load(ordering: .relaxed) <= now
    }
}

/// The health state a server keeps across reloads: per service, and per service and target address.
/// One per `ProxyServer` (two servers in one process, as in tests, never share it).
final class HealthRegistry: Sendable {
    private let targets = NIOLockedValueBox<[String: TargetState]>([:])
    private let services = NIOLockedValueBox<[String: ServiceHealthState]>([:])

    func target(service: String, authority: String, now: UInt64) -> TargetState {
        targets.withLockedValue { states in
            let key = service + "|" + authority
            if let state = states[key] { return state }
            let state = TargetState(now: now)
            states[key] = state
            return state
        }
    }

    func service(_ name: String) -> ServiceHealthState {
        services.withLockedValue { states in
            if let state = states[name] { return state }
            let state = ServiceHealthState()
            states[name] = state
            return state
        }
    }
}

/// Whether all of a service's targets are available, in one atomic read: the time until which some
/// target is out (`UInt64.max` while one fails active checks, 0 when none is out). Raised on every
/// ejection or failed check, recomputed when a target comes back. Kept across reloads (`HealthRegistry`).
final class ServiceHealthState: Sendable {
    let degradedUntil = ManagedAtomic<UInt64>(0)

    @inline(__always)
    func allAvailable(now: UInt64) -> Bool { degradedUntil.load(ordering: .relaxed) <= now }

    func markDegraded(until: UInt64) {
        var current = degradedUntil.load(ordering: .relaxed)
        while current < until {
            let (exchanged, original) = degradedUntil.compareExchange(expected: current, desired: until, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }

    func recompute(_ targets: [ResolvedTarget]) {
        var until: UInt64 = 0
        for target in targets {
            if !target.state.healthy.load(ordering: .relaxed) { until = .max; break }
            until = max(until, target.state.ejectedUntil.load(ordering: .relaxed))
        }
        degradedUntil.store(until, ordering: .relaxed)
    }

}

/// A target with its address resolved (a hostname target becomes one per address).
final class ResolvedTarget: Sendable {
    let config: TargetConfig
    let address: SocketAddress
    /// `ip:port` (or the configured `host:port` for literal addresses): pool key and log name.
    let authority: String
    /// The configured `host:port`: the Host header upstream.
    let hostHeader: String
    /// The authority's id (`TargetIDs`): where pools keep its connections.
    let id: Int
    let state: TargetState
    var weight: Int { config.weight }

    init(config: TargetConfig, address: SocketAddress, authority: String, hostHeader: String, id: Int, state: TargetState) {
        self.config = config
        self.address = address
        self.authority = authority
        self.hostHeader = hostHeader
        self.id = id
        self.state = state
    }
}

/// Counts a service's circuit breaker limits across event loops.
final class ServiceCounters: Sendable {
    let connections = ManagedAtomic<Int>(0)
    let pending = ManagedAtomic<Int>(0)
    let retries = ManagedAtomic<Int>(0)

    /// Takes one unit of `resource` if the limit allows it.
    func acquire(_ resource: CircuitBreakerLimits.Resource, limits: CircuitBreakerLimits) -> Bool {
        let counter = self.counter(resource)
        let now = counter.loadThenWrappingIncrement(ordering: .relaxed)
        if limits.admits(resource, current: now) { return true }
        counter.wrappingDecrement(ordering: .relaxed)
        return false
    }

    func release(_ resource: CircuitBreakerLimits.Resource) {
        counter(resource).wrappingDecrement(ordering: .relaxed)
    }

    private func counter(_ resource: CircuitBreakerLimits.Resource) -> ManagedAtomic<Int> {
        switch resource {
        case .connection: return connections
        case .pending: return pending
        case .retry: return retries
        }
    }
}

/// A service ready for the data plane: targets resolved, balancing tables built, health shared.
final class ServiceRuntime: Sendable {
    let config: ServiceConfig
    /// Position in the state's service list: where loops keep their balancer for it.
    let index: Int
    let targets: [ResolvedTarget]
    let connectTimeout: TimeAmount
    let readTimeout: TimeAmount
    let writeTimeout: TimeAmount
    let perTryTimeout: TimeAmount
    /// Built for hash balancers only.
    let maglev: MaglevTable?
    let outliers: NIOLockedValueBox<OutlierDetector>?
    let counters = ServiceCounters()
    let health: ServiceHealthState
    let slowStartNanos: UInt64
    // Copied out of `config` for the request path: reading a nested field of the config is cheap,
    // copying the config (or its retry policy, which holds a Set) is not.
    let balancer: BalancerKind
    let retryAttempts: Int
    let hashKey: HashKey
    let totalTimeoutNanos: Int64?
    let bufferBodyLimit: Int
    let circuitBreaker: CircuitBreakerLimits
    let maxIdlePerTarget: Int

    init(config: ServiceConfig, index: Int, targets: [ResolvedTarget], health: ServiceHealthState) {
        self.config = config
        self.index = index
        self.targets = targets
        self.connectTimeout = .nanoseconds(config.connectTimeout.nanoseconds)
        self.readTimeout = .nanoseconds(config.readTimeout.nanoseconds)
        self.writeTimeout = .nanoseconds(config.writeTimeout.nanoseconds)
        self.perTryTimeout = .nanoseconds(config.perTryTimeout.nanoseconds)
        switch config.balancer {
        case .ipHash, .consistentHash:
            maglev = targets.isEmpty ? nil : MaglevTable(names: targets.map(\.authority), weights: targets.map(\.weight))
        default:
            maglev = nil
        }
        outliers = config.passiveHealth.map { NIOLockedValueBox(OutlierDetector(targets: targets.count, settings: $0)) }
        slowStartNanos = config.slowStart?.unsignedNanoseconds ?? 0
        self.health = health
        health.recompute(targets)
        balancer = config.balancer
        retryAttempts = config.retries.attempts
        hashKey = config.hashKey
        totalTimeoutNanos = config.totalTimeout?.nanoseconds
        bufferBodyLimit = config.retries.bufferBodyLimit
        circuitBreaker = config.circuitBreaker
        maxIdlePerTarget = config.maxIdlePerTarget
    }

    /// The weight to balance with now (hundredths while slow start applies).
    @inline(__always)
    func weight(_ index: Int, now: UInt64) -> Int {
        let target = targets[index]
        guard slowStartNanos > 0 else { return target.weight }
        return SlowStart.weight(target.weight, since: target.state.since.load(ordering: .relaxed), now: now,
                                window: slowStartNanos)
    }

    @inline(__always)
    func allAvailable(now: UInt64) -> Bool { health.allAvailable(now: now) }

    /// A request to `index` failed (connect error, reset, timeout or 5xx): passive health.
    func recordFailure(_ index: Int, now: UInt64) -> Bool {
        let state = targets[index].state
        state.errorStreak.wrappingIncrement(ordering: .relaxed)
        guard let outliers else { return false }
        guard let until = outliers.withLockedValue({ $0.failed(index, now: now) }) else { return false }
        state.ejectedUntil.store(until, ordering: .relaxed)
        state.since.store(until, ordering: .relaxed)   // slow start begins when it returns
        health.markDegraded(until: until)
        return true
    }

    /// An active check passed: an ejected target comes back now rather than at the ejection's end.
    func activeCheckPassed(_ index: Int, now: UInt64) -> Bool {
        let state = targets[index].state
        guard state.ejectedUntil.load(ordering: .relaxed) > now else { return false }
        _ = outliers?.withLockedValue { $0.uneject(index, now: now) }
        state.ejectedUntil.store(0, ordering: .relaxed)
        state.errorStreak.store(0, ordering: .relaxed)
        state.since.store(now, ordering: .relaxed)
        health.recompute(targets)
        return true
    }

    @inline(__always)
    func recordSuccess(_ index: Int) {
        let state = targets[index].state
        guard state.errorStreak.load(ordering: .relaxed) != 0 else { return }
        state.errorStreak.store(0, ordering: .relaxed)
        outliers?.withLockedValue { $0.succeeded(index) }
    }

    /// Health as the Admin API and metrics will show it.
    func health(now: UInt64) -> [TargetHealth] {
        targets.map { target in
            let until = target.state.ejectedUntil.load(ordering: .relaxed)
            return TargetHealth(target: target.authority, healthy: target.state.healthy.load(ordering: .relaxed),
                                ejected: until > now, inFlight: target.state.inFlight.load(ordering: .relaxed))
        }
    }
}

/// One target's health, for the Admin API and metrics.
public struct TargetHealth: Sendable, Equatable {
    public var target: String
    /// Active checks' verdict (true when there are none).
    public var healthy: Bool
    /// Ejected by passive health (outlier detection) right now.
    public var ejected: Bool
    public var inFlight: Int

    public var available: Bool { healthy && !ejected }
}
