import HTTPTypes
import NIOCore
import Testing
import TollgateCore
@testable import TollgatePlugins

/// The memory store: LRU order, the byte budget, expiry and purges.
@Suite struct MemoryCacheStoreTests {
    static func entry(_ url: String, bytes: Int = 100, tags: [String] = []) -> CacheRecord {
        .response(CachedResponse(status: 200, fields: [.contentType: "text/plain"],
                                 body: ByteBuffer(repeating: 0x61, count: bytes), storedAt: 0,
                                 freshness: Freshness(lifetime: 60), url: url, tags: tags))
    }

    @Test func leastRecentlyUsedGoesFirst() {
        // One shard (max object = budget) that holds three of these entries, not four.
        let size = { () -> Int in
            guard case .response(let e) = Self.entry("/a", bytes: 1000) else { return 0 }
            return e.size + 1
        }()
        let store = MemoryCacheStore(budget: size * 3 + size / 2, maxObjectSize: size * 3 + size / 2)
        for key in ["a", "b", "c"] { #expect(store.store(key, Self.entry("/\(key)", bytes: 1000), ttl: 60, now: 0)) }
        #expect(store.lookup("a", now: 1) != nil)   // a is now the most recently used
        store.store("d", Self.entry("/d", bytes: 1000), ttl: 60, now: 1)
        #expect(store.lookup("b", now: 1) == nil)
        #expect(store.lookup("a", now: 1) != nil && store.lookup("c", now: 1) != nil && store.lookup("d", now: 1) != nil)
        #expect(store.count == 3)
    }

    @Test func neverExceedsItsBudget() {
        let budget = 1 << 20
        let store = MemoryCacheStore(budget: budget, maxObjectSize: 64 << 10)
        var generator = SystemRandomNumberGenerator()
        var worst = 0
        for index in 0..<5_000 {
            let bytes = Int.random(in: 0...(64 << 10) - 1024, using: &generator)
            store.store("k\(index % 700)", Self.entry("/\(index)", bytes: bytes), ttl: 60, now: 0)
            worst = max(worst, store.bytes)
        }
        #expect(worst <= budget)
        // What it counts is what it holds: the bodies' bytes are within the count.
        #expect(store.bytes > budget / 2)
    }

    @Test func oversizedObjectsAreRefused() {
        let store = MemoryCacheStore(budget: 64 << 10, maxObjectSize: 16 << 10)
        #expect(!store.store("big", Self.entry("/big", bytes: 80 << 10), ttl: 60, now: 0))
        #expect(store.count == 0 && store.bytes == 0)
    }

    @Test func entriesExpire() {
        let store = MemoryCacheStore(budget: 1 << 20, maxObjectSize: 1 << 16)
        store.store("a", Self.entry("/a"), ttl: 10, now: 100)
        #expect(store.lookup("a", now: 109) != nil)
        #expect(store.lookup("a", now: 110) == nil)
        #expect(store.count == 0 && store.bytes == 0)
    }

    @Test func purges() {
        let store = MemoryCacheStore(budget: 1 << 20, maxObjectSize: 1 << 16)
        store.store("GET|h|/a", .variants(["accept"]), ttl: 60, now: 0)
        store.store("GET|h|/a|vary|accept=x", Self.entry("/a", tags: ["t1"]), ttl: 60, now: 0)
        store.store("GET|h|/a|vary|accept=y", Self.entry("/a", tags: ["t1", "t2"]), ttl: 60, now: 0)
        store.store("GET|h|/ab", Self.entry("/ab?x=1", tags: ["t2"]), ttl: 60, now: 0)
        store.store("GET|h|/b", Self.entry("/b"), ttl: 60, now: 0)
        #expect(store.purge(.tag("t2")) == 2)
        #expect(store.lookup("GET|h|/a|vary|accept=x", now: 0) != nil)
        #expect(store.purge(.url("/a")) == 1)
        #expect(store.purge(.key("GET|h|/a")) == 1)   // the variant list
        store.store("GET|h|/ab", Self.entry("/ab?x=1"), ttl: 60, now: 0)
        #expect(store.purge(.prefix("/a")) == 1)
        #expect(store.count == 1 && store.lookup("GET|h|/b", now: 0) != nil)
        #expect(store.purge(.tag("missing")) == 0)
        // Tags of removed entries are forgotten: nothing leaks in the index.
        #expect(store.purge(.tag("t1")) == 0)
    }
}
