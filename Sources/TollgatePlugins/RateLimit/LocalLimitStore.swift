import Synchronization
import TollgateCore

/// The embedded store of rate-limit state: exact across event loops (each key lives in exactly one
/// shard, behind that shard's lock), bounded (each shard keeps at most its share of `maxKeys`, least
/// recently used first out, and drops keys idle past their limits' windows), and cheap (a decision
/// locks one of 64 shards for a few hundred nanoseconds: loops rarely meet on the same one).
public final class LocalLimitStore: Sendable {
    public static let shardCount = 64

    private let shards: [ShardBox]
    public let maxKeys: Int

    public init(maxKeys: Int = 1_000_000) {
        self.maxKeys = maxKeys
        let perShard = max(16, maxKeys / Self.shardCount)
        self.shards = (0..<Self.shardCount).map { _ in ShardBox(Shard(capacity: perShard)) }
    }

    /// Decides one request for `key` against every limiter; when any refuses, no limit is charged
    /// (the request did not happen). `results` are in the limiters' order.
    public func decide(key: String, limiters: [RateLimiter], now: UInt64, cost: Int = 1) -> [RateLimitDecision] {
        if limiters.count == 1 { return [decide(key: key, limiter: limiters[0], now: now, cost: cost)] }
        let hash = StableHash.hash(key)
        var idle: UInt64 = 0
        for limiter in limiters { idle = max(idle, limiter.idleNanos) }
        return shards[Int(hash % UInt64(Self.shardCount))].mutex.withLock { shard in
            shard.decide(key: key, limiters: limiters, now: now, cost: cost, idleNanos: idle)
        }
    }

    /// One limit (the common case): no arrays on the way.
    public func decide(key: String, limiter: RateLimiter, now: UInt64, cost: Int = 1) -> RateLimitDecision {
        let hash = StableHash.hash(key)
        let idle = limiter.idleNanos
        return shards[Int(hash % UInt64(Self.shardCount))].mutex.withLock { shard in
            shard.decide(key: key, limiter: limiter, now: now, cost: cost, idleNanos: idle)
        }
    }

    /// Takes one of `limit` concurrent slots for `key`; false when all are taken.
    public func acquireConcurrency(key: String, limit: Int) -> Bool {
        let hash = StableHash.hash(key)
        return shards[Int(hash % UInt64(Self.shardCount))].mutex.withLock { $0.acquire(key: key, limit: limit) }
    }

    public func releaseConcurrency(key: String) {
        let hash = StableHash.hash(key)
        shards[Int(hash % UInt64(Self.shardCount))].mutex.withLock { $0.release(key: key) }
    }

    /// Keys held now (tests and metrics).
    public var keyCount: Int { shards.reduce(0) { total, shard in total + shard.mutex.withLock { $0.count } } }

    final class ShardBox: Sendable {
        let mutex: Mutex<Shard>
        init(_ shard: Shard) { mutex = Mutex(shard) }
    }

    /// One shard: a dictionary from key to slot, and the slots in a doubly linked LRU list.
    struct Shard: Sendable {
        struct Entry: Sendable {
            var key: String
            var states: [RateLimitState]
            var concurrent: Int
            var lastUsed: UInt64
            var idleNanos: UInt64
            var newer: Int32
            var older: Int32
        }

        let capacity: Int
        var slots: [String: Int32] = [:]
        var entries: [Entry] = []
        var free: [Int32] = []
        /// Most and least recently used slots (-1: none).
        var newest: Int32 = -1
        var oldest: Int32 = -1

        init(capacity: Int) {
            self.capacity = capacity
        }

        var count: Int { slots.count }

        mutating func decide(key: String, limiters: [RateLimiter], now: UInt64, cost: Int, idleNanos: UInt64) -> [RateLimitDecision] {
            let slot = self.slot(for: key, now: now, stateCount: limiters.count)
            entries[Int(slot)].idleNanos = idleNanos
            var decisions: [RateLimitDecision] = []
            decisions.reserveCapacity(limiters.count)
            var next: [RateLimitState] = []
            next.reserveCapacity(limiters.count)
            var allowed = true
            for (index, limiter) in limiters.enumerated() {
                let (decision, state) = limiter.decide(entries[Int(slot)].states[index], now: now, cost: cost)
                decisions.append(decision)
                next.append(state)
                if !decision.allowed { allowed = false }
            }
            if allowed { entries[Int(slot)].states = next }
            return decisions
        }

        mutating func decide(key: String, limiter: RateLimiter, now: UInt64, cost: Int, idleNanos: UInt64) -> RateLimitDecision {
            let slot = Int(self.slot(for: key, now: now, stateCount: 1))
            entries[slot].idleNanos = idleNanos
            let (decision, state) = limiter.decide(entries[slot].states[0], now: now, cost: cost)
            if decision.allowed { entries[slot].states[0] = state }
            return decision
        }

        mutating func acquire(key: String, limit: Int) -> Bool {
            let slot = self.slot(for: key, now: 0, stateCount: 0)
            guard entries[Int(slot)].concurrent < limit else { return false }
            entries[Int(slot)].concurrent += 1
            return true
        }

        mutating func release(key: String) {
            guard let slot = slots[key] else { return }
            entries[Int(slot)].concurrent = max(0, entries[Int(slot)].concurrent - 1)
        }

        /// The key's slot, made most recent; a new key evicts the least recently used one when full
        /// (idle keys first, then, under a flood of new keys, whatever is oldest).
        private mutating func slot(for key: String, now: UInt64, stateCount: Int) -> Int32 {
            if let slot = slots[key] {
                touch(slot, now: now)
                if entries[Int(slot)].states.count < stateCount {
                    entries[Int(slot)].states += Array(repeating: .empty, count: stateCount - entries[Int(slot)].states.count)
                }
                return slot
            }
            dropIdle(now: now)
            if slots.count >= capacity { evictOldest() }
            let entry = Entry(key: key, states: Array(repeating: .empty, count: stateCount), concurrent: 0,
                              lastUsed: now, idleNanos: 0, newer: -1, older: -1)
            let slot: Int32
            if let reused = free.popLast() {
                slot = reused
                entries[Int(slot)] = entry
            } else {
                slot = Int32(entries.count)
                entries.append(entry)
            }
            slots[key] = slot
            linkNewest(slot)
            return slot
        }

        private mutating func touch(_ slot: Int32, now: UInt64) {
            entries[Int(slot)].lastUsed = max(entries[Int(slot)].lastUsed, now)
            guard newest != slot else { return }
            unlink(slot)
            linkNewest(slot)
        }

        /// Drops a few keys idle past their windows from the old end (amortized: at most 2 per call).
        private mutating func dropIdle(now: UInt64) {
            for _ in 0..<2 {
                guard oldest >= 0 else { return }
                let entry = entries[Int(oldest)]
                guard entry.concurrent == 0, now > entry.lastUsed &+ entry.idleNanos else { return }
                remove(oldest)
            }
        }

        private mutating func evictOldest() {
            var candidate = oldest
            // Never evict a key with requests in flight (its concurrency count would be lost).
            while candidate >= 0 && entries[Int(candidate)].concurrent > 0 { candidate = entries[Int(candidate)].newer }
            if candidate >= 0 { remove(candidate) }
        }

        private mutating func remove(_ slot: Int32) {
            unlink(slot)
            slots[entries[Int(slot)].key] = nil
            entries[Int(slot)].key = ""
            entries[Int(slot)].states = []
            free.append(slot)
        }

        private mutating func unlink(_ slot: Int32) {
            let newer = entries[Int(slot)].newer
            let older = entries[Int(slot)].older
            if newer >= 0 { entries[Int(newer)].older = older } else { newest = older }
            if older >= 0 { entries[Int(older)].newer = newer } else { oldest = newer }
            entries[Int(slot)].newer = -1
            entries[Int(slot)].older = -1
        }

        private mutating func linkNewest(_ slot: Int32) {
            entries[Int(slot)].older = newest
            entries[Int(slot)].newer = -1
            if newest >= 0 { entries[Int(newest)].newer = slot }
            newest = slot
            if oldest < 0 { oldest = slot }
        }
    }
}
