import Logging
import NIOCore
import Synchronization
import TollgateCore
import TollgateObservability

/// A cache's state that outlives reloads: its store and its flights.
final class ResponseCache: Sendable {
    let store: any CacheStore
    let flights = CacheFlights()
    let scope: String
    private let lastFailureLog = Mutex<Int64>(0)
    private static let logger = Logger(label: "tollgate.proxy-cache")

    let metrics: GatewayMetrics

    init(store: any CacheStore, scope: String, metrics: GatewayMetrics) {
        self.store = store
        self.scope = scope
        self.metrics = metrics
        if let memory = store as? MemoryCacheStore {
            // Kept for the gateway's life, like the cache itself (it outlives reloads).
            _ = metrics.addCollector { [weak memory] in
                guard let memory else { return [] }
                let labels = [("scope", scope)]
                return [
                    .init(name: "tollgate_cache_bytes", help: "Bytes the memory cache holds (counted against max_size)",
                          labels: labels, value: Double(memory.bytes)),
                    .init(name: "tollgate_cache_entries", help: "Responses (and variant lists) the memory cache holds",
                          labels: labels, value: Double(memory.count)),
                ]
            }
        }
    }

    func put(_ key: String, _ record: CacheRecord, now: Int64, on loop: (any EventLoop)?, retention: Int64? = nil) {
        guard let loop else {
            (store as? MemoryCacheStore)?.store(key, record, ttl: retention ?? 3600, now: now)
            return
        }
        let ttl: Int64
        if let retention { ttl = retention } else if case .response(let entry) = record { ttl = entry.retention } else { ttl = 3600 }
        store.put(key, record, ttl: ttl, now: now, on: loop)
    }

    /// A store that could not answer: counted, and logged at most once a minute.
    func storeFailed(_ error: any Error) {
        metrics.counter("tollgate_cache_store_errors_total", [("store", store.kind)]).increment()
        let now = WallClock.milliseconds()
        let log = lastFailureLog.withLock { last -> Bool in
            guard now - last >= 60_000 else { return false }
            last = now
            return true
        }
        if log {
            Self.logger.warning("cache store unavailable; requests pass through", metadata: [
                "store": "\(store.kind)", "scope": "\(scope)", "error": "\(error)",
            ])
        }
    }
}

/// Purging from outside a request: what the admin listener (and `tollgate cache purge`) call.
public enum CachePurge {
    /// Purges `target` from every cache of the gateway that owns `state`; how many keys went in all.
    /// Stores that cannot purge (a URL prefix on Memcached) or cannot be reached fail the whole call.
    public static func purge(_ target: PurgeTarget, state: PluginStateRegistry, on loop: any EventLoop) -> EventLoopFuture<Int> {
        let caches = state.all(ResponseCache.self)
        let purges = caches.map { $0.store.purge(target, on: loop) }
        return EventLoopFuture.reduce(0, purges, on: loop, +)
    }

    /// How many caches the gateway has (none: purging is pointless, and says so).
    public static func cacheCount(state: PluginStateRegistry) -> Int {
        state.all(ResponseCache.self).count
    }
}
