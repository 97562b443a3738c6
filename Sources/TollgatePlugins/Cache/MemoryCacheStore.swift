import NIOCore
import Synchronization
import TollgateCore

/// The in-process store: a byte budget with LRU eviction and per-entry expiry. Split into shards by
/// key hash, each with its own lock and its share of the budget, so the event loops rarely meet on
/// one lock and the total never exceeds the budget. A lock is held only to find, link or unlink an
/// entry: never across I/O, and a hit's body is shared, not copied.
public final class MemoryCacheStore: CacheStore {
    public let kind = "memory"
    public let budget: Int
    private let shards: [ShardLock]

    /// `budget` bytes in all; objects larger than `maxObjectSize` are refused (and the shards are made
    /// large enough to hold one).
    public init(budget: Int, maxObjectSize: Int) {
        self.budget = budget
        let count = max(1, min(16, budget / max(1, maxObjectSize * 4)))
        let share = budget / count
        shards = (0..<count).map { _ in ShardLock(Shard(budget: share)) }
    }

    private func shard(_ key: String) -> ShardLock {
        var hasher = Hasher()
        hasher.combine(key)
        return shards[Int(UInt(bitPattern: hasher.finalize()) % UInt(shards.count))]
    }

    public func get(_ key: String, now: Int64, on loop: any EventLoop) -> CacheLookup {
        .ready(lookup(key, now: now))
    }

    /// The record under `key` (a hit moves it to the front).
    public func lookup(_ key: String, now: Int64) -> CacheRecord? {
        shard(key).withLock { $0.get(key, now: now) }
    }

    public func put(_ key: String, _ record: CacheRecord, ttl: Int64, now: Int64, on loop: any EventLoop) {
        store(key, record, ttl: ttl, now: now)
    }

    /// Keeps `record`; false when it is larger than a shard's budget.
    @discardableResult
    public func store(_ key: String, _ record: CacheRecord, ttl: Int64, now: Int64) -> Bool {
        shard(key).withLock { $0.put(key, record, expiresAt: now + max(1, ttl)) }
    }

    public func purge(_ target: PurgeTarget, on loop: any EventLoop) -> EventLoopFuture<Int> {
        loop.makeSucceededFuture(purge(target))
    }

    /// Drops what matches; how many keys went.
    @discardableResult
    public func purge(_ target: PurgeTarget) -> Int {
        var removed = 0
        for shard in shards {
            removed += shard.withLock { shard in
                switch target {
                case .key(let key):
                    return shard.removeKeys { $0 == key || $0.hasPrefix(key + "|vary|") }
                case .prefix(let prefix):
                    return shard.removeKeys(where: { node in
                        if case .response(let entry) = node.record { return entry.url.hasPrefix(prefix) }
                        return false
                    })
                case .tag(let tag):
                    return shard.removeTagged(tag)
                case .url(let url):
                    return shard.removeTagged(Self.urlTag(url))
                }
            }
        }
        return removed
    }

    /// Bytes counted against the budget now.
    public var bytes: Int { shards.reduce(0) { $0 + $1.withLock { $0.bytes } } }
    public var count: Int { shards.reduce(0) { $0 + $1.withLock { $0.map.count } } }
}

/// One entry of a shard's LRU list.
private final class Node: @unchecked Sendable {   // only touched under its shard's lock
    let key: String
    var record: CacheRecord
    var size: Int
    var expiresAt: Int64
    var tags: [String]
    var previous: Node?
    var next: Node?

    init(key: String, record: CacheRecord, size: Int, expiresAt: Int64, tags: [String]) {
        self.key = key
        self.record = record
        self.size = size
        self.expiresAt = expiresAt
        self.tags = tags
    }
}

/// A shard behind its own lock.
private final class ShardLock: Sendable {
    private let mutex: Mutex<Shard>
    init(_ shard: sending Shard) { mutex = Mutex(shard) }
    func withLock<Result>(_ body: (inout Shard) -> Result) -> Result {
        mutex.withLock { body(&$0) }
    }
}

private struct Shard {
    let budget: Int
    var map: [String: Node] = [:]
    /// Most recently used first.
    var head: Node?
    var tail: Node?
    var bytes = 0
    /// Tag → keys (surrogate keys, and each response's URL).
    var tagged: [String: Set<String>] = [:]

    init(budget: Int) { self.budget = budget }

    mutating func get(_ key: String, now: Int64) -> CacheRecord? {
        guard let node = map[key] else { return nil }
        if node.expiresAt <= now {
            remove(node)
            return nil
        }
        moveToFront(node)
        return node.record
    }

    mutating func put(_ key: String, _ record: CacheRecord, expiresAt: Int64) -> Bool {
        let tags: [String]
        let size: Int
        switch record {
        case .response(let entry):
            tags = entry.tags + [MemoryCacheStore.urlTag(entry.url)]
            size = entry.size + key.utf8.count
        case .variants(let names):
            tags = []
            size = 128 + key.utf8.count + names.reduce(0) { $0 + $1.utf8.count }
        }
        if let old = map[key] { remove(old) }
        guard size <= budget else { return false }
        while bytes + size > budget, let last = tail { remove(last) }
        let node = Node(key: key, record: record, size: size, expiresAt: expiresAt, tags: tags)
        map[key] = node
        bytes += size
        for tag in tags { tagged[tag, default: []].insert(key) }
        linkFront(node)
        return true
    }

    mutating func removeKeys(where matches: (Node) -> Bool) -> Int {
        let doomed = map.values.filter(matches)
        for node in doomed { remove(node) }
        return doomed.count
    }

    mutating func removeKeys(_ matches: (String) -> Bool) -> Int {
        removeKeys(where: { matches($0.key) })
    }

    mutating func removeTagged(_ tag: String) -> Int {
        guard let keys = tagged[tag] else { return 0 }
        var removed = 0
        for key in keys {
            if let node = map[key] {
                remove(node)
                removed += 1
            }
        }
        tagged[tag] = nil
        return removed
    }

    mutating func remove(_ node: Node) {
        guard map.removeValue(forKey: node.key) != nil else { return }
        bytes -= node.size
        for tag in node.tags {
            tagged[tag]?.remove(node.key)
            if tagged[tag]?.isEmpty == true { tagged[tag] = nil }
        }
        unlink(node)
    }

    mutating func linkFront(_ node: Node) {
        node.previous = nil
        node.next = head
        head?.previous = node
        head = node
        if tail == nil { tail = node }
    }

    mutating func unlink(_ node: Node) {
        if let previous = node.previous { previous.next = node.next } else { head = node.next }
        if let next = node.next { next.previous = node.previous } else { tail = node.previous }
        node.previous = nil
        node.next = nil
    }

    mutating func moveToFront(_ node: Node) {
        guard head !== node else { return }
        unlink(node)
        linkFront(node)
    }
}
