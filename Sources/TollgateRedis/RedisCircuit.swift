import Atomics

/// Whether Redis is worth asking: after a failure, callers stop trying (and use their fallback at
/// once, instead of each waiting for a timeout) and one probe at a time goes through every
/// `probeInterval`, until one succeeds. Lock-free: read on every request.
public final class RedisCircuit: Sendable {
    private let healthy = ManagedAtomic<Bool>(true)
    private let nextProbe = ManagedAtomic<UInt64>(0)
    public let probeIntervalNanos: UInt64

    public init(probeIntervalNanos: UInt64 = 200_000_000) {
        self.probeIntervalNanos = probeIntervalNanos
    }

    public var isHealthy: Bool { healthy.load(ordering: .relaxed) }

    /// True when a command should be sent now: Redis is healthy, or this caller won the next probe.
    public func shouldTry(now: UInt64) -> Bool {
        if healthy.load(ordering: .relaxed) { return true }
        let due = nextProbe.load(ordering: .relaxed)
        guard now >= due else { return false }
        return nextProbe.compareExchange(expected: due, desired: now + probeIntervalNanos, ordering: .relaxed).exchanged
    }

    /// Records a success; true when this ends an outage (log the recovery once).
    @discardableResult
    public func succeeded() -> Bool {
        healthy.exchange(true, ordering: .relaxed) == false
    }

    /// Records a failure; true when this starts an outage (log it once).
    @discardableResult
    public func failed(now: UInt64) -> Bool {
        nextProbe.store(now + probeIntervalNanos, ordering: .relaxed)
        return healthy.exchange(false, ordering: .relaxed) == true
    }
}
