/// A rate: `count` requests per `periodNanos`. Written `100/s`, `5000/min`, `1M/day`, `10/5s`.
public struct RateLimit: Sendable, Hashable, CustomStringConvertible {
    public var count: Int
    public var periodNanos: UInt64
    /// As written in the configuration (`100/s`), for headers and messages.
    public var text: String

    public init(count: Int, periodNanos: UInt64, text: String? = nil) {
        precondition(count > 0 && periodNanos > 0)
        self.count = count
        self.periodNanos = periodNanos
        self.text = text ?? "\(count)/\(periodNanos / 1_000_000_000)s"
    }

    public var description: String { text }
    public var periodSeconds: Int { Int((periodNanos + 999_999_999) / 1_000_000_000) }

    /// Parses `COUNT/PERIOD`: the count may end in k or M; the period is a unit (`s`, `sec`,
    /// `second`, `m`, `min`, `minute`, `h`, `hour`, `d`, `day`) or a number and a unit (`5s`, `15min`).
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", maxSplits: 1)
        guard parts.count == 2 else { return nil }
        var countText = parts[0].trimmingSpaces
        var multiplier = 1
        if countText.hasSuffix("k") || countText.hasSuffix("K") {
            multiplier = 1_000
            countText = countText.dropLast()
        } else if countText.hasSuffix("M") {
            multiplier = 1_000_000
            countText = countText.dropLast()
        }
        guard let base = Int(countText), base > 0, base <= Int(Int32.max) else { return nil }
        let periodText = parts[1].trimmingSpaces
        let digits = periodText.prefix { $0.isASCII && $0.isNumber }
        let unit = periodText.dropFirst(digits.count)
        let units = digits.isEmpty ? 1 : Int(digits) ?? 0
        guard units > 0 else { return nil }
        let second: UInt64 = 1_000_000_000
        let unitNanos: UInt64
        switch unit.lowercased() {
        case "s", "sec", "second", "seconds": unitNanos = second
        case "m", "min", "minute", "minutes": unitNanos = 60 * second
        case "h", "hour", "hours": unitNanos = 3_600 * second
        case "d", "day", "days": unitNanos = 86_400 * second
        default: return nil
        }
        self.init(count: base * multiplier, periodNanos: UInt64(units) * unitNanos, text: text)
    }
}

/// How requests are counted against a limit.
public enum RateLimitAlgorithm: String, Sendable, CaseIterable {
    /// A counter per calendar window: cheap, but allows up to twice the limit across a window edge.
    case fixedWindow = "fixed_window"
    /// The current window's count plus the previous window's, weighted by how much of it still
    /// overlaps the sliding window (Cloudflare's approximation): smooth and one counter pair per key.
    case slidingWindow = "sliding_window"
    /// Every request's time kept for one period: exact, memory grows with the limit (low rates only).
    case slidingLog = "sliding_log"
    /// Tokens refill at the rate, up to `burst`; each request takes one.
    case tokenBucket = "token_bucket"
    /// Generic cell rate algorithm (a leaky bucket as a meter): requests spaced by period/count, with
    /// `burst` allowed early. One timestamp per key.
    case gcra
}

/// What one limit said about one request.
public struct RateLimitDecision: Sendable, Equatable {
    public var allowed: Bool
    /// Requests left in the current period after this one (0 when refused).
    public var remaining: Int
    /// Nanoseconds until the limit is fully available again (the window resets, the bucket is full).
    public var resetNanos: UInt64
    /// When refused: nanoseconds until a request would be allowed. When delayed: how long to wait.
    public var retryAfterNanos: UInt64
    /// Allowed, but only after waiting `retryAfterNanos` (throttling mode).
    public var delayed: Bool

    public init(allowed: Bool, remaining: Int, resetNanos: UInt64, retryAfterNanos: UInt64 = 0, delayed: Bool = false) {
        self.allowed = allowed
        self.remaining = remaining
        self.resetNanos = resetNanos
        self.retryAfterNanos = retryAfterNanos
        self.delayed = delayed
    }
}

/// One key's state under one limit. Small values, so a store keeps them inline.
public enum RateLimitState: Sendable, Equatable {
    case empty
    case window(start: UInt64, count: Int, previous: Int)
    case log([UInt64])
    case bucket(tokens: Double, at: UInt64)
    /// GCRA's theoretical arrival time.
    case arrival(UInt64)
}

/// A limit with its algorithm: decides a request against a key's state, as a pure function of the
/// state and the time (monotonic nanoseconds), returning the new state to keep.
public struct RateLimiter: Sendable, Hashable {
    public var limit: RateLimit
    public var algorithm: RateLimitAlgorithm
    /// Token bucket and GCRA: how many requests may come at once (default: the limit's count).
    public var burst: Int
    /// Throttling: token bucket and GCRA may admit a request up to this late instead of refusing it.
    public var maxDelayNanos: UInt64

    public init(limit: RateLimit, algorithm: RateLimitAlgorithm, burst: Int? = nil, maxDelayNanos: UInt64 = 0) {
        self.limit = limit
        self.algorithm = algorithm
        self.burst = max(1, burst ?? limit.count)
        self.maxDelayNanos = maxDelayNanos
    }

    /// Time after which an untouched key's state is as good as empty (the store drops it then).
    public var idleNanos: UInt64 {
        switch algorithm {
        case .fixedWindow, .slidingWindow: return 2 * limit.periodNanos
        case .slidingLog: return limit.periodNanos
        case .tokenBucket, .gcra: return limit.periodNanos / UInt64(limit.count) * UInt64(burst) + maxDelayNanos + limit.periodNanos
        }
    }

    public func decide(_ state: RateLimitState, now reading: UInt64, cost: Int = 1) -> (RateLimitDecision, RateLimitState) {
        // A clock read on another core may be a little behind the state's time: treat it as that time,
        // so going back can neither reopen a window nor refill a bucket.
        let now: UInt64
        switch state {
        case .window(let start, _, _): now = max(reading, start)
        case .log(let times): now = max(reading, times.last ?? 0)
        case .bucket(_, let at): now = max(reading, at)
        case .arrival, .empty: now = reading
        }
        switch algorithm {
        case .fixedWindow: return fixedWindow(state, now: now, cost: cost)
        case .slidingWindow: return slidingWindow(state, now: now, cost: cost)
        case .slidingLog: return slidingLog(state, now: now, cost: cost)
        case .tokenBucket: return tokenBucket(state, now: now, cost: cost)
        case .gcra: return gcra(state, now: now, cost: cost)
        }
    }

    private func fixedWindow(_ state: RateLimitState, now: UInt64, cost: Int) -> (RateLimitDecision, RateLimitState) {
        let period = limit.periodNanos
        let start = now - now % period
        var count = 0
        if case .window(let previousStart, let previousCount, _) = state, previousStart == start { count = previousCount }
        let reset = start + period - now
        if count + cost > limit.count {
            return (RateLimitDecision(allowed: false, remaining: max(0, limit.count - count), resetNanos: reset,
                                      retryAfterNanos: reset), .window(start: start, count: count, previous: 0))
        }
        count += cost
        return (RateLimitDecision(allowed: true, remaining: limit.count - count, resetNanos: reset),
                .window(start: start, count: count, previous: 0))
    }

    private func slidingWindow(_ state: RateLimitState, now: UInt64, cost: Int) -> (RateLimitDecision, RateLimitState) {
        let period = limit.periodNanos
        let start = now - now % period
        var current = 0
        var previous = 0
        if case .window(let stateStart, let stateCount, let statePrevious) = state {
            if stateStart == start {
                current = stateCount
                previous = statePrevious
            } else if stateStart + period == start {
                previous = stateCount
            }
        }
        // The share of the previous window that still lies inside the sliding window.
        let overlap = Double(period - (now - start)) / Double(period)
        let estimate = Double(previous) * overlap + Double(current)
        let reset = start + period - now
        if estimate + Double(cost) > Double(limit.count) {
            // Wait until enough of the previous window has slid out (or the next window, if that is sooner).
            let excess = estimate + Double(cost) - Double(limit.count)
            var wait = reset
            if previous > 0 {
                let slide = UInt64(excess / Double(previous) * Double(period))
                if current + cost <= limit.count { wait = min(wait, max(1, slide)) }
            }
            return (RateLimitDecision(allowed: false, remaining: 0, resetNanos: reset, retryAfterNanos: wait),
                    .window(start: start, count: current, previous: previous))
        }
        current += cost
        let remaining = max(0, Int((Double(limit.count) - estimate - Double(cost)).rounded(.down)))
        return (RateLimitDecision(allowed: true, remaining: remaining, resetNanos: reset),
                .window(start: start, count: current, previous: previous))
    }

    private func slidingLog(_ state: RateLimitState, now: UInt64, cost: Int) -> (RateLimitDecision, RateLimitState) {
        var times: [UInt64] = []
        if case .log(let kept) = state { times = kept }
        let horizon = now >= limit.periodNanos ? now - limit.periodNanos : 0
        if let firstInside = times.firstIndex(where: { $0 > horizon }) {
            if firstInside > 0 { times.removeFirst(firstInside) }
        } else {
            times.removeAll(keepingCapacity: true)
        }
        let reset = times.first.map { $0 + limit.periodNanos - now } ?? 0
        if times.count + cost > limit.count {
            // The oldest requests must leave the window first.
            let freeing = times[min(times.count - 1, times.count + cost - limit.count - 1)]
            return (RateLimitDecision(allowed: false, remaining: 0, resetNanos: reset,
                                      retryAfterNanos: freeing + limit.periodNanos - now), .log(times))
        }
        for _ in 0..<cost { times.append(now) }
        return (RateLimitDecision(allowed: true, remaining: limit.count - times.count,
                                  resetNanos: times[0] + limit.periodNanos - now), .log(times))
    }

    private func tokenBucket(_ state: RateLimitState, now: UInt64, cost: Int) -> (RateLimitDecision, RateLimitState) {
        let perToken = Double(limit.periodNanos) / Double(limit.count)
        var tokens = Double(burst)
        if case .bucket(let kept, let at) = state {
            tokens = min(Double(burst), kept + Double(now &- min(now, at)) / perToken)
        }
        let needed = Double(cost)
        if tokens >= needed {
            tokens -= needed
            return (RateLimitDecision(allowed: true, remaining: Int(tokens.rounded(.down)),
                                      resetNanos: UInt64((Double(burst) - tokens) * perToken)), .bucket(tokens: tokens, at: now))
        }
        let wait = UInt64(((needed - tokens) * perToken).rounded(.up))
        if maxDelayNanos > 0 && wait <= maxDelayNanos {
            // Throttled: admitted later; the tokens go negative until then.
            tokens -= needed
            return (RateLimitDecision(allowed: true, remaining: 0, resetNanos: UInt64((Double(burst) - tokens) * perToken),
                                      retryAfterNanos: wait, delayed: true), .bucket(tokens: tokens, at: now))
        }
        return (RateLimitDecision(allowed: false, remaining: 0, resetNanos: UInt64((Double(burst) - tokens) * perToken),
                                  retryAfterNanos: wait), .bucket(tokens: tokens, at: now))
    }

    private func gcra(_ state: RateLimitState, now: UInt64, cost: Int) -> (RateLimitDecision, RateLimitState) {
        let interval = limit.periodNanos / UInt64(limit.count)
        let tolerance = interval * UInt64(burst - 1)
        var arrival = now
        if case .arrival(let kept) = state { arrival = max(kept, now) }
        let next = arrival + interval * UInt64(cost)
        // Allowed when the new arrival time is within the tolerance of now.
        let allowAt = next > tolerance + interval ? next - tolerance - interval : 0
        if allowAt <= now {
            let remaining = Int((tolerance + interval - (next - now)) / interval)
            return (RateLimitDecision(allowed: true, remaining: max(0, remaining), resetNanos: next - now), .arrival(next))
        }
        let wait = allowAt - now
        if maxDelayNanos > 0 && wait <= maxDelayNanos {
            return (RateLimitDecision(allowed: true, remaining: 0, resetNanos: next - now, retryAfterNanos: wait, delayed: true),
                    .arrival(next))
        }
        return (RateLimitDecision(allowed: false, remaining: 0, resetNanos: arrival - now, retryAfterNanos: wait),
                state == .empty ? .arrival(arrival) : state)
    }
}
