import Crypto
import NIOCore
import TollgateCore

/// Responses in Memcached, shared by every gateway node. Keys are hashed (Memcached keys are short
/// and may not contain spaces); each surrogate key, URL and primary key keeps a list of the keys
/// tagged with it (grown with `append`), so purges by tag, URL and key work. Memcached cannot list
/// keys, so purging by URL prefix is refused: use tags.
public final class MemcachedCacheStore: CacheStore {
    public let kind = "memcached"
    let pool: MemcachedPool
    /// How long a tag's key list is kept (its members' own TTLs are shorter or equal in practice).
    static let tagTTL: Int64 = 7 * 86_400

    public init(configuration: MemcachedConfiguration) {
        pool = MemcachedPool(configuration: configuration)
    }

    static func hashed(_ key: String, kind: String) -> String {
        let digest = SHA256.hash(data: Array(key.utf8))
        return "tollgate:" + kind + ":" + digest.map { String($0, radix: 16).leftPadded }.joined()
    }

    public func get(_ key: String, now: Int64, on loop: any EventLoop) -> CacheLookup {
        let id = Self.hashed(key, kind: "r")
        return .pending(pool.client(for: id, on: loop).get(id).map { bytes in bytes.flatMap(CacheRecord.init(decoding:)) })
    }

    public func put(_ key: String, _ record: CacheRecord, ttl: Int64, now: Int64, on loop: any EventLoop) {
        let id = Self.hashed(key, kind: "r")
        _ = pool.client(for: id, on: loop).store("set", id, record.encoded(), ttl: max(1, ttl))
        guard case .response(let entry) = record else { return }
        var tags = entry.tags + [Self.urlTag(entry.url)]
        if let range = key.range(of: "|vary|") { tags.append("key:" + key[..<range.lowerBound]) }
        for tag in tags { addToTag(tag, id, on: loop) }
    }

    /// Appends `id` to the tag's list (made when it does not exist yet).
    private func addToTag(_ tag: String, _ id: String, on loop: any EventLoop) {
        let list = Self.hashed(tag, kind: "t")
        let client = pool.client(for: list, on: loop)
        let line = ByteBuffer(string: id + "\n")
        client.store("append", list, line, ttl: 0).whenSuccess { appended in
            guard !appended else { return }
            client.store("add", list, line, ttl: Self.tagTTL).whenSuccess { added in
                if !added { _ = client.store("append", list, line, ttl: 0) }   // another node made it meanwhile
            }
        }
    }

    public func purge(_ target: PurgeTarget, on loop: any EventLoop) -> EventLoopFuture<Int> {
        switch target {
        case .key(let key):
            let id = Self.hashed(key, kind: "r")
            let deleted = pool.client(for: id, on: loop).delete(id)
            return deleted.and(purgeTag("key:" + key, on: loop)).map { ($0 ? 1 : 0) + $1 }
        case .tag(let tag):
            return purgeTag(tag, on: loop)
        case .url(let url):
            return purgeTag(Self.urlTag(url), on: loop)
        case .prefix:
            return loop.makeFailedFuture(CacheStoreError.unsupported("the memcached store cannot purge by URL prefix (Memcached cannot list keys); purge by tag"))
        }
    }

    private func purgeTag(_ tag: String, on loop: any EventLoop) -> EventLoopFuture<Int> {
        let list = Self.hashed(tag, kind: "t")
        let client = pool.client(for: list, on: loop)
        return client.get(list).flatMap { bytes -> EventLoopFuture<Int> in
            let ids = Set(bytes.map { String(buffer: $0) }?.split(separator: "\n").map(String.init) ?? [])
            let deletions = ids.map { id in self.pool.client(for: id, on: loop).delete(id) }
            return EventLoopFuture.whenAllComplete(deletions, on: loop).flatMap { results in
                client.delete(list).map { _ in
                    results.reduce(0) { count, result in
                        if case .success(true) = result { return count + 1 }
                        return count
                    }
                }
            }
        }
    }
}

extension String {
    fileprivate var leftPadded: String { count == 1 ? "0" + self : self }
}
