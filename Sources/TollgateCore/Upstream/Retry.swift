/// What may be retried, and how long to wait between attempts.
public struct RetryPolicy: Sendable, Equatable {
    public enum Condition: Hashable, Sendable {
        /// The connection could not be made (refused, unreachable, connect timeout).
        case connectError
        /// No response head within the per-try timeout.
        case timeout
        /// The connection closed or broke before the response head.
        case reset
        /// The upstream answered with this status.
        case status(Int)
    }

    /// Tries in all, the first included (1 = no retries).
    public var attempts: Int
    public var on: Set<Condition>
    public var backoffBaseNanos: UInt64
    public var backoffMaxNanos: UInt64
    /// At most this share of a service's requests (in percent, over the last 10 s) may be retries...
    public var budgetPercent: Int
    /// ...but this many retries per second are always allowed (so a quiet service can still retry).
    public var budgetMinPerSecond: Int
    /// A request body up to this size is kept so it can be sent again; a larger one is not retried.
    public var bufferBodyLimit: Int
    /// Each try's time to the response head (nil: the service's read timeout).
    public var perTryTimeoutNanos: UInt64?

    public init(attempts: Int = 1, on: Set<Condition> = [.connectError, .reset], backoffBaseNanos: UInt64 = 25_000_000,
                backoffMaxNanos: UInt64 = 250_000_000, budgetPercent: Int = 20, budgetMinPerSecond: Int = 10,
                bufferBodyLimit: Int = 64 << 10, perTryTimeoutNanos: UInt64? = nil) {
        self.attempts = attempts
        self.on = on
        self.backoffBaseNanos = backoffBaseNanos
        self.backoffMaxNanos = backoffMaxNanos
        self.budgetPercent = budgetPercent
        self.budgetMinPerSecond = budgetMinPerSecond
        self.bufferBodyLimit = bufferBodyLimit
        self.perTryTimeoutNanos = perTryTimeoutNanos
    }

    public static let none = RetryPolicy()

    /// RFC 9110 section 9.2.2.
    public static func isIdempotent(_ method: String) -> Bool {
        switch method {
        case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE": return true
        default: return false
        }
    }

    /// Full jitter (AWS architecture blog): uniformly random in [0, min(max, base × 2^retry)], where
    /// `retry` is 0 for the first retry; `unit` is a random number in [0, 1).
    public func backoffNanos(retry: Int, unit: Double) -> UInt64 {
        let exponential = backoffBaseNanos.multipliedReportingOverflow(by: UInt64(1) << UInt64(min(retry, 30)))
        let ceiling = exponential.overflow ? backoffMaxNanos : min(backoffMaxNanos, exponential.partialValue)
        return UInt64(Double(ceiling) * min(max(unit, 0), 1))
    }
}

/// A retry budget (Finagle, Linkerd): retries may add at most `percent` to the requests of the last
/// 10 seconds, plus `minPerSecond`, so retries can never multiply an outage. Counted in 1-second
/// buckets; time is passed in. One per service and event loop: no lock on the request path.
public struct RetryBudget: Sendable {
    private static let buckets = 10
    private var requests = [Int](repeating: 0, count: RetryBudget.buckets)
    private var retries = [Int](repeating: 0, count: RetryBudget.buckets)
    private var currentSecond: UInt64 = 0
    public let percent: Int
    public let minPerSecond: Int

    public init(percent: Int, minPerSecond: Int) {
        self.percent = percent
        self.minPerSecond = minPerSecond
    }

    private mutating func advance(to now: UInt64) {
        let second = now / 1_000_000_000
        guard second != currentSecond else { return }
        if second > currentSecond {
            let steps = min(UInt64(Self.buckets), second - currentSecond)
            for step in 1...steps {
                let index = Int((currentSecond + step) % UInt64(Self.buckets))
                requests[index] = 0
                retries[index] = 0
            }
        }
        currentSecond = second
    }

    public mutating func recordRequest(now: UInt64) {
        advance(to: now)
        requests[Int(currentSecond % UInt64(Self.buckets))] += 1
    }

    /// Whether one more retry fits; if it does, it is counted.
    public mutating func tryRetry(now: UInt64) -> Bool {
        advance(to: now)
        let allowed = requests.reduce(0, +) * percent / 100 + minPerSecond * Self.buckets
        guard retries.reduce(0, +) < allowed else { return false }
        retries[Int(currentSecond % UInt64(Self.buckets))] += 1
        return true
    }
}

/// A service's circuit-breaker limits (Envoy's thresholds): open upstream connections, requests
/// waiting for a connection, and retries in flight, all across the gateway's event loops. Past a limit
/// a request is refused at once (503, `X-Tollgate-Overloaded`) instead of queueing toward a timeout.
public struct CircuitBreakerLimits: Sendable, Equatable {
    public var maxConnections: Int
    public var maxPending: Int
    public var maxRetries: Int

    /// Defaults high enough never to refuse normal load (Envoy's 1024 are a frequent surprise).
    public init(maxConnections: Int = 10_000, maxPending: Int = 10_000, maxRetries: Int = 1_000) {
        self.maxConnections = maxConnections
        self.maxPending = maxPending
        self.maxRetries = maxRetries
    }

    public enum Resource: Sendable {
        case connection
        case pending
        case retry
    }

    public func admits(_ resource: Resource, current: Int) -> Bool {
        switch resource {
        case .connection: return current < maxConnections
        case .pending: return current < maxPending
        case .retry: return current < maxRetries
        }
    }
}
