import NIOCore
import TollgateCore
import TollgateRedis

/// Responses in Redis, shared by every gateway node: each record under `<prefix>r:<key>` with its
/// retention as TTL, and for each surrogate key (and each URL) a set of the keys tagged with it,
/// `<prefix>t:<tag>`, so purges need no scan of the records.
public final class RedisCacheStore: CacheStore {
    public let kind = "redis"
    let pool: RedisPool
    let prefix: String

    public init(pool: RedisPool, prefix: String) {
        self.pool = pool
        self.prefix = prefix
    }

    private func recordKey(_ key: String) -> String { prefix + "r:" + key }
    private func tagKey(_ tag: String) -> String { prefix + "t:" + tag }

    public func get(_ key: String, now: Int64, on loop: any EventLoop) -> CacheLookup {
        .pending(pool.client(on: loop).send(["GET", recordKey(key)]).map { reply -> CacheRecord? in
            guard case .bulkString(let bytes?) = reply else { return nil }
            return CacheRecord(decoding: bytes)
        })
    }

    public func put(_ key: String, _ record: CacheRecord, ttl: Int64, now: Int64, on loop: any EventLoop) {
        let client = pool.client(on: loop)
        let value = record.encoded()
        let seconds = String(max(1, ttl))
        _ = client.send(bytes: [ByteBuffer(string: "SET"), ByteBuffer(string: recordKey(key)), value,
                                ByteBuffer(string: "EX"), ByteBuffer(string: seconds)])
        guard case .response(let entry) = record else { return }
        for tag in entry.tags + [Self.urlTag(entry.url)] {
            let set = tagKey(tag)
            _ = client.send(["SADD", set, key])
            // A new set takes the TTL; an existing one keeps the longest of its members'.
            _ = client.send(["EXPIRE", set, seconds, "NX"])
            _ = client.send(["EXPIRE", set, seconds, "GT"])
        }
    }

    public func purge(_ target: PurgeTarget, on loop: any EventLoop) -> EventLoopFuture<Int> {
        let client = pool.client(on: loop)
        let reply: EventLoopFuture<RESPValue>
        switch target {
        case .key(let key):
            reply = client.eval(Self.purgeKey, keys: [], arguments: [prefix + "r:", key, Self.globEscaped(recordKey(key)) + "|vary|*"])
        case .tag(let tag):
            reply = client.eval(Self.purgeTags, keys: [], arguments: [prefix + "r:", tagKey(tag), "exact"])
        case .url(let url):
            reply = client.eval(Self.purgeTags, keys: [], arguments: [prefix + "r:", tagKey(Self.urlTag(url)), "exact"])
        case .prefix(let urlPrefix):
            reply = client.eval(Self.purgeTags, keys: [], arguments: [prefix + "r:", Self.globEscaped(tagKey(Self.urlTag(urlPrefix))) + "*", "scan"])
        }
        return reply.map { $0.int ?? 0 }
    }

    /// `pattern` characters of `KEYS`/`SCAN` escaped.
    static func globEscaped(_ text: String) -> String {
        var out = ""
        for character in text {
            if "*?[]\\".contains(character) { out.append("\\") }
            out.append(character)
        }
        return out
    }

    /// ARGV: record prefix, key, pattern of its variants.
    static let purgeKey = """
    local count = redis.call('DEL', ARGV[1] .. ARGV[2])
    local cursor = '0'
    repeat
      local page = redis.call('SCAN', cursor, 'MATCH', ARGV[3], 'COUNT', 1000)
      cursor = page[1]
      for _, key in ipairs(page[2]) do count = count + redis.call('DEL', key) end
    until cursor == '0'
    return count
    """

    /// ARGV: record prefix, tag set (or a pattern of tag sets, with "scan"), mode.
    static let purgeTags = """
    local count = 0
    local function purge(set)
      for _, key in ipairs(redis.call('SMEMBERS', set)) do count = count + redis.call('DEL', ARGV[1] .. key) end
      redis.call('DEL', set)
    end
    if ARGV[3] == 'exact' then
      purge(ARGV[2])
    else
      local cursor = '0'
      repeat
        local page = redis.call('SCAN', cursor, 'MATCH', ARGV[2], 'COUNT', 1000)
        cursor = page[1]
        for _, set in ipairs(page[2]) do purge(set) end
      until cursor == '0'
    end
    return count
    """
}
