import HTTPTypes
import TollgateCore

/// One request's dealings with the cache, from its request hook to its log hook (on its event loop).
final class CacheExchange: @unchecked Sendable {
    let primaryKey: String
    /// The key the response is stored under (the primary key, or its variant's).
    var key: String
    private let path: String
    private let query: Substring?
    let request: HTTPRequest
    let bypass: Bool
    let invalidates: String?
    /// The stored response being revalidated, and whether it may be served if the upstream fails.
    var stale: CachedResponse?
    var staleIfError = false
    /// This request leads the flight for its key (others wait for it).
    var leader = false
    /// The answer came from the cache.
    var served = false
    /// Where a leader's flight lands if no recorder landed it (the response was not stored to its
    /// end, or never came): when the request's context goes, at the latest.
    var flights: CacheFlights?

    deinit {
        if leader { flights?.land(primaryKey, outcome: nil) }
    }

    var requestFields: HTTPFields { request.headerFields }
    var isHead: Bool { request.method == .head }
    /// Whether the client sent conditions (`If-None-Match`, `If-Modified-Since`).
    var conditional: Bool { request.headerFields[.ifNoneMatch] != nil || request.headerFields[.ifModifiedSince] != nil }

    /// `/path?query`: what purges by URL and invalidations match.
    private(set) lazy var url: String = Self.url(path: path, query: query)

    static func url(path: String, query: Substring?) -> String {
        guard let query else { return path }
        return path + "?" + query
    }

    init(primaryKey: String, path: String, query: Substring?, request: HTTPRequest) {
        self.primaryKey = primaryKey
        self.key = primaryKey
        self.path = path
        self.query = query
        self.request = request
        self.bypass = false
        self.invalidates = nil
    }

    init(invalidating url: String) {
        self.primaryKey = ""
        self.key = ""
        self.path = url
        self.query = nil
        self.request = HTTPRequest(method: .post, scheme: nil, authority: nil, path: nil)
        self.bypass = false
        self.invalidates = url
    }

    private init() {
        self.primaryKey = ""
        self.key = ""
        self.path = ""
        self.query = nil
        self.request = HTTPRequest(method: .get, scheme: nil, authority: nil, path: nil)
        self.bypass = true
        self.invalidates = nil
    }

    static let bypass = CacheExchange()
}

enum CacheExchangeKey: ObjectContextKey {
    typealias Value = CacheExchange
}
