import Atomics
import NIOCore
import Synchronization
import TollgateCore
import TollgateRedis

/// The `hybrid` policy: each node decides on its own view of a key's window (the count Redis gave at
/// its last sync, plus what it admitted since), and pushes what it admitted to Redis in batches: every
/// `interval`, and at once when it has admitted `syncAt` requests of a key that Redis has not seen
/// (only that request waits for the round trip). Refusals never wait: counts only grow within a
/// window, so a stale view that says "full" is right.
///
/// The bound: every node's admissions unknown to the others stay below `syncAt`, so a window admits at
/// most `limit + (nodes - 1) × syncAt` requests (proof in docs/rate-limiting.md). It never admits
/// fewer than `limit`. Fixed and sliding windows only (the others have no counter to add up).
final class HybridLimitStore: Sendable {
    let pool: RedisPool
    let limiters: [RateLimiter]
    let keyPrefix: String
    /// Per limiter: admissions a node may make before Redis must hear of them.
    let syncAt: [Int]
    let interval: TimeAmount
    /// Whether Redis answers; the plugin's `fail` mode applies while it does not.
    var circuit: RedisCircuit { pool.circuit }
    /// Told when Redis goes away (false) and comes back (true), once per change.
    let onAvailabilityChange: @Sendable (Bool) -> Void
    private let shards: [ShardBox]
    private let maxKeysPerShard: Int
    private let timerRunning = ManagedAtomic<Bool>(false)
    /// Decisions made, and those that waited for a round trip (the share the issue bounds).
    let decisions = ManagedAtomic<Int>(0)
    let roundTrips = ManagedAtomic<Int>(0)
    /// Unsent counts dropped under a flood of new keys (see `evict`).
    let droppedCounts = ManagedAtomic<Int>(0)

    static let shardCount = 32

    init(pool: RedisPool, limiters: [RateLimiter], keyPrefix: String, fraction: Double, interval: TimeAmount, maxKeys: Int,
         onAvailabilityChange: @escaping @Sendable (Bool) -> Void = { _ in }) {
        self.onAvailabilityChange = onAvailabilityChange
        self.pool = pool
        self.limiters = limiters
        self.keyPrefix = keyPrefix
        self.syncAt = limiters.map { max(1, Int((Double($0.limit.count) * fraction).rounded(.down))) }
        self.interval = interval
        self.maxKeysPerShard = max(16, maxKeys / Self.shardCount)
        self.shards = (0..<Self.shardCount).map { _ in ShardBox() }
    }

    /// One counter: a key's view of one limit's current window, in wall-clock milliseconds.
    struct Counter: Sendable {
        var window: Int64 = -1
        /// The window's count as Redis last told it (everyone's synced admissions).
        var global = 0
        /// The previous window's count (sliding window).
        var previous = 0
        /// Admitted here, not yet sent.
        var unsynced = 0
        /// Sent, reply not back yet.
        var inFlight = 0
    }

    struct Entry: Sendable {
        var counters: [Counter]
        var lastUsed: Int64
    }

    /// Deltas of windows that ended before they were sent.
    struct Leftover: Sendable {
        var key: String
        var limiter: Int
        var window: Int64
        var delta: Int
    }

    final class ShardBox: Sendable {
        let mutex = Mutex(Shard())
        func withLock<Result>(_ body: (inout Shard) -> Result) -> Result { mutex.withLock { body(&$0) } }
    }

    struct Shard: Sendable {
        var entries: [String: Entry] = [:]
        var leftovers: [Leftover] = []
    }

    enum LocalDecision {
        case decided([RateLimitDecision])
        /// Admitting would pass `syncAt`: sync this key first.
        case needsSync
    }

    private func shard(_ key: String) -> Int { Int(StableHash.hash(key) % UInt64(Self.shardCount)) }

    /// Decides from this node's view. `force` admits past `syncAt` (after a sync that others raced).
    func decideLocally(key: String, nowMillis: Int64, cost: Int = 1, force: Bool = false) -> LocalDecision {
        if !force { decisions.wrappingIncrement(ordering: .relaxed) }
        let limiters = self.limiters
        let syncAt = self.syncAt
        let cap = maxKeysPerShard
        return shards[shard(key)].withLock { shard -> LocalDecision in
            var entry = shard.entries[key] ?? Entry(counters: Array(repeating: Counter(), count: limiters.count), lastUsed: nowMillis)
            if shard.entries[key] == nil && shard.entries.count >= cap { Self.evict(&shard, cap: cap, dropped: self.droppedCounts) }
            entry.lastUsed = max(entry.lastUsed, nowMillis)
            var results: [RateLimitDecision] = []
            results.reserveCapacity(limiters.count)
            var allowed = true
            var mustSync = false
            for (index, limiter) in limiters.enumerated() {
                let period = Int64(limiter.limit.periodNanos / 1_000_000)
                let start = nowMillis - nowMillis % period
                Self.roll(&entry.counters[index], to: start, period: period, key: key, limiter: index, leftovers: &shard.leftovers)
                let counter = entry.counters[index]
                let mine = counter.unsynced + counter.inFlight
                var estimate = Double(counter.global + mine)
                if limiter.algorithm == .slidingWindow {
                    estimate += Double(counter.previous) * Double(period - (nowMillis - start)) / Double(period)
                }
                let reset = UInt64(start + period - nowMillis) * 1_000_000
                if estimate + Double(cost) > Double(limiter.limit.count) {
                    allowed = false
                    results.append(RateLimitDecision(allowed: false, remaining: 0, resetNanos: reset, retryAfterNanos: reset))
                } else {
                    if mine + cost > syncAt[index] && !force { mustSync = true }
                    let remaining = Int((Double(limiter.limit.count) - estimate - Double(cost)).rounded(.down))
                    results.append(RateLimitDecision(allowed: true, remaining: max(0, remaining), resetNanos: reset))
                }
            }
            if allowed && mustSync {
                shard.entries[key] = entry
                return .needsSync
            }
            if allowed {
                for index in entry.counters.indices { entry.counters[index].unsynced += cost }
            }
            shard.entries[key] = entry
            return .decided(results)
        }
    }

    /// Moves a counter to the window starting at `start`; what it had not sent goes to the leftovers.
    private static func roll(_ counter: inout Counter, to start: Int64, period: Int64, key: String, limiter: Int,
                             leftovers: inout [Leftover]) {
        guard counter.window != start else { return }
        if counter.unsynced > 0 && counter.window >= 0 {
            leftovers.append(Leftover(key: key, limiter: limiter, window: counter.window, delta: counter.unsynced))
        }
        let previousTotal = counter.global + counter.unsynced + counter.inFlight
        counter = Counter(window: start, global: 0, previous: counter.window == start - period ? previousTotal : 0,
                          unsynced: 0, inFlight: 0)
    }

    /// Under a flood of new keys: drops a few keys to make room. Their unsent counts move to the
    /// leftovers, sent at the next tick; when those outgrow their cap too, the oldest are dropped
    /// and counted (each is one key's few requests: the flood's, not a steady client's).
    private static func evict(_ shard: inout Shard, cap: Int, dropped: ManagedAtomic<Int>) {
        var victims: [String] = []
        for key in shard.entries.keys {
            victims.append(key)
            if victims.count >= 4 { break }
        }
        for key in victims {
            guard let entry = shard.entries.removeValue(forKey: key) else { continue }
            for (index, counter) in entry.counters.enumerated() where counter.unsynced > 0 {
                shard.leftovers.append(Leftover(key: key, limiter: index, window: counter.window, delta: counter.unsynced))
            }
        }
        if shard.leftovers.count > cap {
            let excess = shard.leftovers.count - cap
            shard.leftovers.removeFirst(excess)
            dropped.wrappingIncrement(by: excess, ordering: .relaxed)
        }
    }

    // MARK: syncing

    /// What one sync sends for one key: per limiter, the window and how many were admitted.
    private struct Push {
        var key: String
        var windows: [Int64]
        var deltas: [Int]
    }

    /// Sends `key`'s unsent admissions now and refreshes its view (a request waits on this).
    func sync(key: String, on loop: any EventLoop) -> EventLoopFuture<Void> {
        roundTrips.wrappingIncrement(ordering: .relaxed)
        let push = shards[shard(key)].withLock { shard -> Push? in
            guard var entry = shard.entries[key] else { return nil }
            let push = Self.takeUnsent(&entry, key: key)
            shard.entries[key] = entry
            return push
        }
        guard let push else { return loop.makeSucceededVoidFuture() }
        let sent = send(push, on: loop)
        sent.whenComplete { result in self.record(result) }
        return sent
    }

    /// Moves a key's unsent counts to in flight and describes them.
    private static func takeUnsent(_ entry: inout Entry, key: String) -> Push {
        var push = Push(key: key, windows: [], deltas: [])
        for index in entry.counters.indices {
            let delta = entry.counters[index].unsynced
            entry.counters[index].inFlight += delta
            entry.counters[index].unsynced = 0
            push.windows.append(entry.counters[index].window)
            push.deltas.append(delta)
        }
        return push
    }

    private func windowKey(_ key: String, limiter: Int, window: Int64) -> String {
        let period = Int64(limiters[limiter].limit.periodNanos / 1_000_000)
        return "\(keyPrefix)\(RedisKeys.component(key)):\(limiter):\(window / period)"
    }

    /// Adds the deltas in Redis and takes back the windows' counts. On failure the deltas return to
    /// unsent, so nothing admitted is lost from the count.
    private func send(_ push: Push, on loop: any EventLoop) -> EventLoopFuture<Void> {
        var keys: [String] = []
        var arguments: [String] = []
        for index in push.windows.indices {
            let period = Int64(limiters[index].limit.periodNanos / 1_000_000)
            keys.append(windowKey(push.key, limiter: index, window: push.windows[index]))
            keys.append(windowKey(push.key, limiter: index, window: push.windows[index] - period))
            arguments.append(String(push.deltas[index]))
            arguments.append(String(2 * period))
        }
        return pool.client(on: loop).eval(Self.script, keys: keys, arguments: arguments).flatMapThrowing { reply -> [Int] in
            guard case .array(let values?) = reply, values.count == 2 * push.windows.count else {
                throw RedisError.server("unexpected hybrid sync reply")
            }
            return values.map { $0.int ?? 0 }
        }.map { counts in
            self.shards[self.shard(push.key)].withLock { shard in
                guard var entry = shard.entries[push.key] else { return }
                for index in push.windows.indices where entry.counters[index].window == push.windows[index] {
                    entry.counters[index].inFlight = max(0, entry.counters[index].inFlight - push.deltas[index])
                    entry.counters[index].global = max(entry.counters[index].global, counts[2 * index])
                    entry.counters[index].previous = counts[2 * index + 1]
                }
                shard.entries[push.key] = entry
            }
        }.flatMapErrorThrowing { error in
            self.shards[self.shard(push.key)].withLock { shard in
                guard var entry = shard.entries[push.key] else { return }
                for index in push.windows.indices where entry.counters[index].window == push.windows[index] {
                    entry.counters[index].inFlight = max(0, entry.counters[index].inFlight - push.deltas[index])
                    entry.counters[index].unsynced += push.deltas[index]
                }
                shard.entries[push.key] = entry
            }
            throw error
        }
    }

    /// Sends leftovers of ended windows (no view to refresh: their windows are over).
    private func send(_ leftover: Leftover, on loop: any EventLoop) -> EventLoopFuture<Void> {
        let period = Int64(limiters[leftover.limiter].limit.periodNanos / 1_000_000)
        let keys = [windowKey(leftover.key, limiter: leftover.limiter, window: leftover.window),
                    windowKey(leftover.key, limiter: leftover.limiter, window: leftover.window - period)]
        return pool.client(on: loop).eval(Self.script, keys: keys, arguments: [String(leftover.delta), String(2 * period)])
            .map { _ in }
    }

    /// Starts the batch timer on `loop` unless it runs; it stops by itself when nothing is left to send.
    func ensureTimer(on loop: any EventLoop) {
        guard timerRunning.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        scheduleTick(on: loop, idleTicks: 0)
    }

    private func scheduleTick(on loop: any EventLoop, idleTicks: Int) {
        let task = loop.scheduleTask(in: interval) { () -> Bool in
            self.flush(on: loop)
        }
        task.futureResult.whenComplete { result in
            switch result {
            case .success(let sent):
                let idle = sent ? 0 : idleTicks + 1
                if idle >= 20 {
                    self.timerRunning.store(false, ordering: .relaxed)
                } else {
                    self.scheduleTick(on: loop, idleTicks: idle)
                }
            case .failure:
                self.timerRunning.store(false, ordering: .relaxed)   // the loop is shutting down
            }
        }
    }

    /// Sends every key's unsent counts and the leftovers, pipelined; drops keys idle for two periods.
    /// True when something was sent.
    @discardableResult
    func flush(on loop: any EventLoop, nowMillis: Int64 = WallClock.milliseconds()) -> Bool {
        var pushes: [Push] = []
        var leftovers: [Leftover] = []
        let longest = limiters.map { Int64($0.limit.periodNanos / 1_000_000) }.max() ?? 0
        for index in shards.indices {
            shards[index].withLock { shard in
                leftovers += shard.leftovers
                shard.leftovers = []
                var changed: [(String, Entry?)] = []
                for (key, entry) in shard.entries {
                    if entry.counters.contains(where: { $0.unsynced > 0 }) {
                        var entry = entry
                        pushes.append(Self.takeUnsent(&entry, key: key))
                        changed.append((key, entry))
                    } else if entry.lastUsed + 2 * longest < nowMillis && entry.counters.allSatisfy({ $0.inFlight == 0 }) {
                        changed.append((key, nil))
                    }
                }
                for (key, entry) in changed { shard.entries[key] = entry }
            }
        }
        for push in pushes {
            send(push, on: loop).whenComplete { result in self.record(result) }
        }
        for leftover in leftovers {
            send(leftover, on: loop).whenFailure { _ in
                // Kept for the next tick while Redis is away, as long as its window can still matter
                // (a sliding window looks one window back).
                let period = Int64(self.limiters[leftover.limiter].limit.periodNanos / 1_000_000)
                guard leftover.window + 2 * period > WallClock.milliseconds() else { return }
                self.shards[self.shard(leftover.key)].withLock { $0.leftovers.append(leftover) }
            }
        }
        if pushes.isEmpty && leftovers.isEmpty && !circuit.isHealthy {
            // Nothing to send, but Redis is away: probe it, so the policy comes back without traffic.
            pool.client(on: loop).send(["PING"]).whenComplete { result in self.record(result.map { _ in }) }
            return true
        }
        return !pushes.isEmpty || !leftovers.isEmpty
    }

    private func record(_ result: Result<Void, any Error>) {
        switch result {
        case .success:
            if circuit.succeeded() { onAvailabilityChange(true) }
        case .failure:
            if circuit.failed(now: MonotonicClock.nanoseconds()) { onAvailabilityChange(false) }
        }
    }

    var keyCount: Int { shards.reduce(0) { $0 + $1.withLock { $0.entries.count } } }

    /// Adds each delta to its window (expiring after two periods) and answers each window's count and
    /// its previous window's. `KEYS`: pairs of (window, previous window); `ARGV`: pairs of (delta, ttl ms).
    static let script = #"""
    local out = {}
    for i = 1, #KEYS / 2 do
      local current = redis.call('INCRBY', KEYS[2 * i - 1], ARGV[2 * i - 1])
      redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[2 * i])
      out[2 * i - 1] = current
      out[2 * i] = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
    end
    return out
    """#
}
