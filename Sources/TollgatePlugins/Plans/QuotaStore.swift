import Foundation
import Logging
import NIOCore
import Synchronization
import TollgateCore
import TollgateRedis

/// Quota usage per consumer, in this node's memory, written to a snapshot file every
/// `snapshotInterval` (atomically: a new file renamed over the old) and read back at start, so usage
/// survives a restart (at most one interval of counts can be lost in a crash).
final class LocalQuotaStore: Sendable {
    private let state = Mutex<[String: QuotaUsage]>([:])
    let snapshotPath: String?
    private let dirty = Mutex<Bool>(false)
    private static let logger = Logger(label: "tollgate.plans")

    init(snapshotPath: String?) {
        self.snapshotPath = snapshotPath
        if let snapshotPath, let data = FileManager.default.contents(atPath: snapshotPath) {
            do {
                let loaded = try JSONDecoder().decode([String: QuotaUsage].self, from: data)
                state.withLock { $0 = loaded }
            } catch {
                Self.logger.error("quota snapshot unreadable; starting from zero", metadata: ["path": "\(snapshotPath)", "error": "\(error)"])
            }
        }
    }

    func decide(key: String, meter: QuotaMeter, now: Int64) -> QuotaDecision {
        let decision = state.withLock { usage -> QuotaDecision in
            let (decision, next) = meter.decide(usage[key] ?? QuotaUsage(), now: now)
            usage[key] = next
            return decision
        }
        dirty.withLock { $0 = true }
        return decision
    }

    /// A consumer's usage (the Admin API shows it).
    func usage(key: String, meter: QuotaMeter, now: Int64) -> QuotaDecision {
        let usage = state.withLock { $0[key] } ?? QuotaUsage()
        let (_, oldest, resetAt) = meter.window(now: now)
        let used = usage.buckets.filter { $0.key >= oldest }.values.reduce(0, +)
        return QuotaDecision(allowed: used < meter.quota.limit, used: used, remaining: max(0, meter.quota.limit - used), resetAt: resetAt)
    }

    /// Writes the snapshot when something changed since the last one.
    func writeSnapshot() throws {
        let changed = dirty.withLock { flag -> Bool in
            defer { flag = false }
            return flag
        }
        guard let snapshotPath, changed else { return }
        let data = try JSONEncoder().encode(state.withLock { $0 })
        let temporary = snapshotPath + ".tmp"
        try data.write(to: URL(fileURLWithPath: temporary))
        if rename(temporary, snapshotPath) != 0 { throw CocoaError(.fileWriteUnknown) }
    }

    private let timerStarted = Mutex<Bool>(false)

    /// Starts the periodic snapshot on `loop` (once).
    func startSnapshots(on loop: any EventLoop, every interval: TimeAmount) {
        let first = timerStarted.withLock { started -> Bool in
            defer { started = true }
            return !started
        }
        guard snapshotPath != nil, first else { return }
        loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            do { try self.writeSnapshot() } catch {
                Self.logger.error("quota snapshot not written", metadata: ["path": "\(self.snapshotPath ?? "")", "error": "\(error)"])
            }
        }
    }
}

/// Quota usage in Redis, shared by every node: one hash per consumer and quota (fields: bucket starts),
/// decided by one atomic script on Redis's clock.
final class RedisQuotaStore: Sendable {
    let pool: RedisPool
    let keyPrefix: String

    init(pool: RedisPool, keyPrefix: String) {
        self.pool = pool
        self.keyPrefix = keyPrefix
    }

    func decide(key: String, meter: QuotaMeter, on loop: any EventLoop, nowSeconds: Int64? = nil) -> EventLoopFuture<QuotaDecision> {
        let now = nowSeconds ?? Int64(WallClock.milliseconds() / 1_000)
        let (bucket, oldest, resetAt) = meter.window(now: now)
        let ttl = max(60, resetAt - now + meter.periodSeconds)
        let redisKey = keyPrefix + RedisKeys.component(key) + ":" + meter.quota.text + ":" + meter.quota.window.rawValue
        return pool.client(on: loop).eval(Self.script, keys: [redisKey],
                                          arguments: [String(bucket), String(oldest), String(meter.quota.limit), "1", String(ttl)])
            .flatMapThrowing { reply in
                guard case .array(let values?) = reply, values.count == 3 else { throw RedisError.server("unexpected quota reply") }
                let allowed = values[0].int == 1
                let used = values[1].int ?? 0
                var reset = resetAt
                if meter.quota.window == .rolling, let first = values[2].int, first > 0 { reset = Int64(first) + meter.periodSeconds }
                return QuotaDecision(allowed: allowed, used: used, remaining: max(0, meter.quota.limit - used), resetAt: reset)
            }
    }

    /// `KEYS[1]`: the consumer's hash; `ARGV`: bucket, oldest counted bucket, limit, cost, ttl. Drops
    /// old buckets, charges the bucket when it fits; answers allowed, used, oldest bucket kept.
    static let script = #"""
    local fields = redis.call('HGETALL', KEYS[1])
    local oldest = tonumber(ARGV[2])
    local used = 0
    local first = 0
    for i = 1, #fields, 2 do
      local bucket = tonumber(fields[i])
      if bucket < oldest then
        redis.call('HDEL', KEYS[1], fields[i])
      else
        used = used + tonumber(fields[i + 1])
        if first == 0 or bucket < first then first = bucket end
      end
    end
    local cost = tonumber(ARGV[4])
    if used + cost > tonumber(ARGV[3]) then
      return {0, used, first}
    end
    redis.call('HINCRBY', KEYS[1], ARGV[1], cost)
    redis.call('EXPIRE', KEYS[1], ARGV[5])
    if first == 0 then first = tonumber(ARGV[1]) end
    return {1, used + cost, first}
    """#
}
