import NIOCore
import TollgateCore

/// What a lookup found: at once (memory), or later (a store across the network).
public enum CacheLookup: Sendable {
    case ready(CacheRecord?)
    case pending(EventLoopFuture<CacheRecord?>)
}

/// What to purge.
public enum PurgeTarget: Sendable, Equatable {
    /// One key (a primary key also drops its variants).
    case key(String)
    /// Every response whose URL (`/path?query`) starts with this.
    case prefix(String)
    /// Every response the upstream tagged with this surrogate key.
    case tag(String)
    /// Every response stored for this exact URL (`/path?query`): what an unsafe method invalidates.
    case url(String)
}

public enum CacheStoreError: Error, Equatable, CustomStringConvertible {
    case unsupported(String)
    case unavailable(String)

    public var description: String {
        switch self {
        case .unsupported(let what): return what
        case .unavailable(let why): return why
        }
    }
}

/// Where responses are kept: in this process (`memory`), or shared by every gateway node (`redis`,
/// `memcached`). Lookups on the network fail soft: a store that cannot answer is a miss, and the
/// cache passes requests through (logged and counted by the plugin).
public protocol CacheStore: Sendable {
    /// `memory`, `redis`, `memcached`: for logs and metrics.
    var kind: String { get }
    /// The record under `key`; `now` is Unix seconds (for expiry).
    func get(_ key: String, now: Int64, on loop: any EventLoop) -> CacheLookup
    /// Keeps `record` under `key` for `ttl` seconds (at most). Fire and forget.
    func put(_ key: String, _ record: CacheRecord, ttl: Int64, now: Int64, on loop: any EventLoop)
    /// Drops what matches; the future gives how many keys went.
    func purge(_ target: PurgeTarget, on loop: any EventLoop) -> EventLoopFuture<Int>
}

extension CacheStore {
    /// The tag under which a store indexes every response of one URL.
    static func urlTag(_ url: String) -> String { "url:" + url }
}
