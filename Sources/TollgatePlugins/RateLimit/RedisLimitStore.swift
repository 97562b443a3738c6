import NIOCore
import TollgateCore
import TollgateRedis

/// Rate-limit state in Redis, exact across every gateway node: each decision is one atomic Lua script
/// (EVALSHA; loaded once per connection's server, again after NOSCRIPT) that runs the same algorithms
/// as `RateLimiter`, on Redis's own clock, so nodes whose clocks differ still share windows. All limits
/// of a request are decided in one call, and charged only when all allow it.
public final class RedisLimitStore: Sendable {
    let pool: RedisPool
    let limiters: [RateLimiter]
    /// `tollgate:rl:<scope hash>:`: one key space per configured plugin.
    let keyPrefix: String
    /// The limits' arguments, the same for every call.
    private let limitArguments: [String]

    public init(pool: RedisPool, limiters: [RateLimiter], keyPrefix: String) {
        self.pool = pool
        self.limiters = limiters
        self.keyPrefix = keyPrefix
        var arguments: [String] = []
        for limiter in limiters {
            arguments += [limiter.algorithm.rawValue, String(limiter.limit.count), String(limiter.limit.periodNanos / 1_000),
                          String(limiter.burst), String(limiter.maxDelayNanos / 1_000)]
        }
        self.limitArguments = arguments
    }

    /// The decisions for one request under `key`, in the limiters' order. `nowMicros` replaces Redis's
    /// clock (tests replaying a timeline).
    public func decide(key: String, on loop: any EventLoop, cost: Int = 1, nowMicros: Int64? = nil) -> EventLoopFuture<[RateLimitDecision]> {
        let base = keyPrefix + RedisKeys.component(key)
        let keys = limiters.indices.map { "\(base):\($0)" }
        let arguments = [nowMicros.map(String.init) ?? "-1", String(cost)] + limitArguments
        let count = limiters.count
        return pool.client(on: loop).eval(Self.script, keys: keys, arguments: arguments).flatMapThrowing { reply in
            guard case .array(let values?) = reply, values.count == 5 * count else {
                throw RedisError.server("unexpected rate-limit script reply")
            }
            let numbers = values.map { $0.int ?? 0 }
            return (0..<count).map { index in
                let at = index * 5
                return RateLimitDecision(allowed: numbers[at] == 1, remaining: numbers[at + 1],
                                         resetNanos: UInt64(max(0, numbers[at + 2])) * 1_000,
                                         retryAfterNanos: UInt64(max(0, numbers[at + 3])) * 1_000, delayed: numbers[at + 4] == 1)
            }
        }
    }

    /// The algorithms of `RateLimiter`, in microseconds. `KEYS[i]` is limit i's key; `ARGV` is the time
    /// (-1: Redis's clock), the cost, then five values per limit: algorithm, count, period, burst, most
    /// delay. Answers five integers per limit: allowed, remaining, reset, retry after, delayed.
    /// Numbers that become key names or stored values go through `%d`: Lua's default number format
    /// keeps 14 digits, fewer than a time in microseconds has.
    static let script = #"""
    local now = tonumber(ARGV[1])
    if now < 0 then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    local cost = tonumber(ARGV[2])
    local out = {}
    local commits = {}
    local all = true
    -- Expiry in milliseconds, with a second to spare (a key must never expire while still in use).
    local function ms(us) return math.ceil(us / 1000) + 1000 end
    for i = 1, #KEYS do
      local at = 2 + (i - 1) * 5
      local algorithm = ARGV[at + 1]
      local count = tonumber(ARGV[at + 2])
      local period = tonumber(ARGV[at + 3])
      local burst = tonumber(ARGV[at + 4])
      local most_delay = tonumber(ARGV[at + 5])
      local key = KEYS[i]
      local allowed, remaining, reset, retry, delayed = 0, 0, 0, 0, 0
      local commit = nil
      if algorithm == 'fixed_window' or algorithm == 'sliding_window' then
        local start = now - now % period
        local current_key = key .. ':' .. string.format('%d', start / period)
        local current = tonumber(redis.call('GET', current_key) or '0')
        local estimate = current
        local previous = 0
        if algorithm == 'sliding_window' then
          previous = tonumber(redis.call('GET', key .. ':' .. string.format('%d', start / period - 1)) or '0')
          estimate = previous * (period - (now - start)) / period + current
        end
        reset = start + period - now
        if estimate + cost > count then
          remaining = 0
          retry = reset
          if algorithm == 'fixed_window' then
            remaining = math.max(0, count - current)
          elseif previous > 0 and current + cost <= count then
            retry = math.min(reset, math.max(1, math.floor((estimate + cost - count) / previous * period)))
          end
        else
          allowed = 1
          remaining = math.max(0, math.floor(count - estimate - cost))
          local ttl = ms(period * (algorithm == 'sliding_window' and 2 or 1))
          commit = function()
            redis.call('INCRBY', current_key, cost)
            redis.call('PEXPIRE', current_key, ttl)
          end
        end
      elseif algorithm == 'sliding_log' then
        redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now - period))
        local n = redis.call('ZCARD', key)
        local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
        if n + cost > count then
          local index = math.min(n - 1, n + cost - count - 1)
          local freeing = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
          retry = tonumber(freeing[2]) + period - now
          reset = tonumber(first[2]) + period - now
        else
          allowed = 1
          remaining = count - n - cost
          reset = (first[2] and tonumber(first[2]) or now) + period - now
          commit = function()
            local sequence = redis.call('INCRBY', key .. ':seq', cost)
            for j = 1, cost do
              redis.call('ZADD', key, string.format('%d', now), string.format('%d-%d', now, sequence - j))
            end
            redis.call('PEXPIRE', key, ms(period))
            redis.call('PEXPIRE', key .. ':seq', ms(period))
          end
        end
      elseif algorithm == 'token_bucket' then
        local per_token = period / count
        local state = redis.call('HMGET', key, 'tokens', 'at')
        local tokens = burst
        local clock = now
        if state[1] then
          local last = tonumber(state[2])
          if last > clock then clock = last end
          tokens = math.min(burst, tonumber(state[1]) + (clock - last) / per_token)
        end
        local wait = 0
        if tokens < cost then wait = math.ceil((cost - tokens) * per_token) end
        if wait == 0 or (most_delay > 0 and wait <= most_delay) then
          allowed = 1
          tokens = tokens - cost
          if wait > 0 then delayed = 1; retry = wait else remaining = math.floor(tokens) end
          local kept = tokens
          commit = function()
            redis.call('HSET', key, 'tokens', string.format('%.6f', kept), 'at', string.format('%d', clock))
            redis.call('PEXPIRE', key, ms((burst - kept) * per_token + 1000000))
          end
        else
          retry = wait
        end
        reset = math.floor((burst - tokens) * per_token)
      elseif algorithm == 'gcra' then
        local interval = math.floor(period / count)
        local tolerance = interval * (burst - 1)
        local arrival = now
        local kept = redis.call('GET', key)
        if kept then arrival = math.max(tonumber(kept), now) end
        local next_arrival = arrival + interval * cost
        local allow_at = 0
        if next_arrival > tolerance + interval then allow_at = next_arrival - tolerance - interval end
        local wait = 0
        if allow_at > now then wait = allow_at - now end
        if wait == 0 or (most_delay > 0 and wait <= most_delay) then
          allowed = 1
          if wait > 0 then delayed = 1; retry = wait else
            remaining = math.max(0, math.floor((tolerance + interval - (next_arrival - now)) / interval))
          end
          reset = next_arrival - now
          commit = function()
            redis.call('SET', key, string.format('%d', next_arrival), 'PX', ms(next_arrival - now))
          end
        else
          retry = wait
          reset = arrival - now
        end
      else
        return redis.error_reply('unknown algorithm ' .. algorithm)
      end
      if allowed == 0 then all = false end
      commits[i] = commit
      local o = (i - 1) * 5
      out[o + 1] = allowed
      out[o + 2] = math.floor(remaining)
      out[o + 3] = math.floor(reset)
      out[o + 4] = math.floor(retry)
      out[o + 5] = delayed
    end
    if all then
      for i = 1, #KEYS do
        if commits[i] then commits[i]() end
      end
    end
    return out
    """#
}

/// Key names in Redis for rate-limit keys of any length or content.
enum RedisKeys {
    /// The key itself when short and plain; else a hash of it (header values can be long or binary).
    static func component(_ key: String) -> String {
        if key.utf8.count <= 96 && key.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) { return key }
        return "#" + String(StableHash.hash(key), radix: 16) + String(StableHash.hash(key, seed: 0x5bd1_e995), radix: 16)
    }

    /// `<prefix>rl:<hash of the plugin's scope and limits>:`.
    static func prefix(_ clusterPrefix: String, scope: String, limiters: [RateLimiter]) -> String {
        let identity = scope + "|" + limiters.map { "\($0.limit.text):\($0.algorithm.rawValue):\($0.burst)" }.joined(separator: ",")
        return clusterPrefix + "rl:" + String(StableHash.hash(identity), radix: 16) + ":"
    }
}
