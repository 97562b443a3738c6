/// One target's state under active health checks: it changes only after `unhealthyThreshold`
/// failed probes in a row, or `healthyThreshold` successful ones (Kong's and Envoy's thresholds), so
/// one lost probe does not flap a target.
public struct ActiveHealthTracker: Sendable, Equatable {
    public private(set) var isHealthy = true
    private var successes = 0
    private var failures = 0
    public let healthyThreshold: Int
    public let unhealthyThreshold: Int

    public init(healthyThreshold: Int, unhealthyThreshold: Int) {
        precondition(healthyThreshold > 0 && unhealthyThreshold > 0)
        self.healthyThreshold = healthyThreshold
        self.unhealthyThreshold = unhealthyThreshold
    }

    /// Starts out unhealthy (a reload keeps a target's verdict).
    public mutating func startUnhealthy() {
        isHealthy = false
        successes = 0
        failures = 0
    }

    /// Records a probe; returns the new state when it changed.
    public mutating func probe(succeeded: Bool) -> Bool? {
        if succeeded {
            failures = 0
            successes += 1
            if !isHealthy && successes >= healthyThreshold {
                isHealthy = true
                successes = 0
                return true
            }
        } else {
            successes = 0
            failures += 1
            if isHealthy && failures >= unhealthyThreshold {
                isHealthy = false
                failures = 0
                return false
            }
        }
        return nil
    }
}

/// Passive health, as Envoy's outlier detection: a target that fails `consecutiveErrors` times in a
/// row (5xx, connect failure, reset, timeout) is ejected for `baseEjection × times ejected` (capped
/// at `maxEjection`), but never so that more than `maxEjectionPercent` of the service's targets are
/// out at once. Time is passed in (monotonic nanoseconds). One per service, shared by its loops.
public struct OutlierDetector: Sendable {
    public struct Settings: Sendable, Equatable {
        public var consecutiveErrors: Int
        public var baseEjectionNanos: UInt64
        public var maxEjectionNanos: UInt64
        public var maxEjectionPercent: Int

        public init(consecutiveErrors: Int = 5, baseEjectionNanos: UInt64 = 30_000_000_000,
                    maxEjectionNanos: UInt64 = 300_000_000_000, maxEjectionPercent: Int = 50) {
            self.consecutiveErrors = consecutiveErrors
            self.baseEjectionNanos = baseEjectionNanos
            self.maxEjectionNanos = maxEjectionNanos
            self.maxEjectionPercent = maxEjectionPercent
        }
    }

    struct Record: Sendable {
        var consecutive = 0
        var ejections = 0
        var ejectedUntil: UInt64 = 0
        /// When the last ejection ended: a target healthy for `maxEjection` since is forgiven.
        var lastEjectionEnd: UInt64 = 0
    }

    public let settings: Settings
    private var records: [Record]

    public init(targets: Int, settings: Settings) {
        self.settings = settings
        self.records = Array(repeating: Record(), count: targets)
    }

    public func isEjected(_ index: Int, now: UInt64) -> Bool { records[index].ejectedUntil > now }

    public func ejectedCount(now: UInt64) -> Int { records.count { $0.ejectedUntil > now } }

    /// Until when `index` is ejected (0 when it is not).
    public func ejectedUntil(_ index: Int) -> UInt64 { records[index].ejectedUntil }

    public mutating func succeeded(_ index: Int) {
        records[index].consecutive = 0
    }

    /// Ends an ejection early (an active health check passed, as Envoy's
    /// `successful_active_health_check_uneject_host`); returns whether the target was ejected.
    public mutating func uneject(_ index: Int, now: UInt64) -> Bool {
        guard records[index].ejectedUntil > now else { return false }
        records[index].ejectedUntil = 0
        records[index].lastEjectionEnd = now
        records[index].consecutive = 0
        return true
    }

    /// A failure; returns the end of the ejection when this one ejects the target.
    public mutating func failed(_ index: Int, now: UInt64) -> UInt64? {
        var record = records[index]
        defer { records[index] = record }
        if record.ejectedUntil > now { return nil }   // already out
        if record.ejectedUntil > 0 && record.lastEjectionEnd < record.ejectedUntil {
            record.lastEjectionEnd = record.ejectedUntil
        }
        if record.ejections > 0 && now > record.lastEjectionEnd && now - record.lastEjectionEnd >= settings.maxEjectionNanos {
            record.ejections = 0
        }
        record.consecutive += 1
        guard record.consecutive >= settings.consecutiveErrors else { return nil }
        let allowed = max(1, records.count * settings.maxEjectionPercent / 100)
        guard ejectedCount(now: now) < allowed else { return nil }
        record.consecutive = 0
        record.ejections += 1
        let duration = min(settings.maxEjectionNanos, settings.baseEjectionNanos * UInt64(record.ejections))
        record.ejectedUntil = now + duration
        return record.ejectedUntil
    }
}

/// Slow start: a target that just joined or recovered gets a weight that grows linearly from 10% to
/// its full weight over `window` (nanoseconds), so a cold cache or JIT is not flooded at once.
/// Weights come back in hundredths (a full weight of 3 is 300), so the ramp has steps to take.
public enum SlowStart {
    public static func weight(_ weight: Int, since: UInt64, now: UInt64, window: UInt64) -> Int {
        guard window > 0, now >= since, now - since < window else { return weight * 100 }
        let fraction = max(0.1, Double(now - since) / Double(window))
        return max(1, Int((Double(weight * 100) * fraction).rounded()))
    }
}
