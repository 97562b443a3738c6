import HTTPTypes

/// The directives of `Cache-Control` fields (RFC 9111 section 5.2), of a request or a response.
/// Unknown directives are ignored; a delta-seconds value that is not a number counts as 0 (stale).
public struct CacheControl: Sendable, Equatable {
    public var noStore = false
    /// `no-cache` (with or without field names: a stored response must be revalidated).
    public var noCache = false
    public var isPrivate = false
    public var isPublic = false
    public var mustRevalidate = false
    public var proxyRevalidate = false
    public var noTransform = false
    public var onlyIfCached = false
    public var maxAge: Int64?
    public var sMaxAge: Int64?
    public var staleWhileRevalidate: Int64?
    public var staleIfError: Int64?
    /// Request: `max-stale` (without a value: any staleness, `Int64.max`).
    public var maxStale: Int64?
    public var minFresh: Int64?

    public init() {}

    /// Parses one field value (or several, joined with commas).
    public init(_ value: some StringProtocol) {
        for part in value.split(separator: ",") {
            let directive = part.trimmingSpaces
            guard !directive.isEmpty else { continue }
            let name: Substring
            var argument: Substring?
            if let equals = directive.firstIndex(of: "=") {
                name = directive[..<equals].trimmingSpaces
                var raw = directive[directive.index(after: equals)...].trimmingSpaces
                if raw.hasPrefix("\"") && raw.hasSuffix("\"") && raw.count >= 2 { raw = raw.dropFirst().dropLast() }
                argument = raw
            } else {
                name = directive
            }
            func seconds() -> Int64 {
                guard let argument, !argument.isEmpty, argument.allSatisfy({ $0.isASCII && $0.isNumber }) else { return 0 }
                return Int64(argument) ?? Int64(Int32.max)   // overflow: "a very large" age (section 1.2.2)
            }
            switch name.lowercased() {
            case "no-store": noStore = true
            case "no-cache": noCache = true
            case "private": isPrivate = true
            case "public": isPublic = true
            case "must-revalidate": mustRevalidate = true
            case "proxy-revalidate": proxyRevalidate = true
            case "no-transform": noTransform = true
            case "only-if-cached": onlyIfCached = true
            case "max-age": maxAge = seconds()
            case "s-maxage": sMaxAge = seconds()
            case "stale-while-revalidate": staleWhileRevalidate = seconds()
            case "stale-if-error": staleIfError = seconds()
            case "max-stale": maxStale = argument == nil ? Int64.max : seconds()
            case "min-fresh": minFresh = seconds()
            default: break
            }
        }
    }

    /// Every `Cache-Control` field of a message.
    public init(fields: HTTPFields) {
        guard fields.contains(.cacheControl) else {
            self.init()
            return
        }
        let values = fields[values: .cacheControl]
        self.init(values.count == 1 ? values[0] : values.joined(separator: ","))
    }
}

/// How fresh a stored response is, worked out once when it is stored (RFC 9111 section 4.2).
public struct Freshness: Sendable, Equatable {
    /// Seconds the response is fresh for, counted from its age zero.
    public var lifetime: Int64
    /// Its age when it was stored (the `Age` it came with, or the delay since its `Date`).
    public var initialAge: Int64
    /// Seconds after it goes stale during which it may be served while it is revalidated in the background.
    public var staleWhileRevalidate: Int64
    /// Seconds after it goes stale during which it may be served when the upstream fails.
    public var staleIfError: Int64
    /// Stale, it must not be served without revalidation (`must-revalidate`, `proxy-revalidate`, `s-maxage`).
    public var mustRevalidate: Bool
    /// Every use must be revalidated first (`no-cache`).
    public var noCache: Bool

    public init(lifetime: Int64, initialAge: Int64 = 0, staleWhileRevalidate: Int64 = 0, staleIfError: Int64 = 0,
                mustRevalidate: Bool = false, noCache: Bool = false) {
        self.lifetime = lifetime
        self.initialAge = initialAge
        self.staleWhileRevalidate = staleWhileRevalidate
        self.staleIfError = staleIfError
        self.mustRevalidate = mustRevalidate
        self.noCache = noCache
    }
}

/// What the cache does with a request before looking anything up.
public enum CacheRequestAction: Sendable, Equatable {
    /// GET or HEAD: look it up.
    case lookup
    /// Neither look up nor store (another method, a `Range` request, `no-store`).
    case bypass
    /// An unsafe method: a successful response invalidates what is stored for the URL (section 4.4).
    case invalidate
}

/// Whether a response may be stored, and for how long it is fresh.
public enum StoreDecision: Sendable, Equatable {
    case store(Freshness)
    case noStore(String)

    public var freshness: Freshness? {
        if case .store(let freshness) = self { return freshness }
        return nil
    }
}

/// What a stored response can do for a request (section 4.2, 4.2.4, RFC 5861).
public enum CacheUsability: Sendable, Equatable {
    /// Fresh: answer from the cache.
    case fresh
    /// Stale, but within `stale-while-revalidate`: answer from the cache and refresh it in the background.
    case staleWhileRevalidate
    /// It must be revalidated (stale, `no-cache`, or the request asked for fresher); it may still be
    /// served if the upstream fails within `stale-if-error` (`staleIfErrorAllowed`).
    case revalidate(staleIfErrorAllowed: Bool)
}

/// The rules of a shared cache (RFC 9111), as plain functions with the time passed in.
public enum CachePolicy {
    /// Statuses a response may be stored with (those "heuristically cacheable" by RFC 9110 section
    /// 15.1, less 206: partial content is left alone).
    public static let defaultStatuses: Set<Int> = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]

    /// The settings of one cache that change the rules.
    public struct Rules: Sendable {
        /// Freshness for responses that give none (and allow heuristics); 0: none.
        public var defaultTTL: Int64 = 0
        /// Statuses that may be stored.
        public var statuses: Set<Int> = CachePolicy.defaultStatuses
        /// Replaces the upstream's `Cache-Control` for the storing decision (the route's override).
        public var overrideCacheControl: CacheControl?
        /// Heuristic freshness (section 4.2.2): this fraction of the time since `Last-Modified`, at most `heuristicMax`.
        public var heuristicFraction = 0.1
        public var heuristicMax: Int64 = 86_400
        /// Whether responses that set cookies are stored (nginx, and most CDNs, do not by default).
        public var storeSetCookie = false

        public init() {}
    }

    /// What to do with a request, from its method and fields.
    public static func requestAction(method: HTTPRequest.Method, fields: HTTPFields) -> CacheRequestAction {
        switch method {
        case .get, .head:
            if fields[.range] != nil { return .bypass }
            if CacheControl(fields: fields).noStore { return .bypass }
            return .lookup
        case .post, .put, .delete, .patch:
            return .invalidate
        default:
            return .bypass
        }
    }

    /// Whether a response to a GET may be stored (section 3), and its freshness (section 4.2.1).
    /// `now` is the Unix time (seconds) the response arrived.
    public static func storeDecision(status: Int, requestFields: HTTPFields, responseFields: HTTPFields,
                                     now: Int64, rules: Rules) -> StoreDecision {
        guard rules.statuses.contains(status) else { return .noStore("status \(status) is not cacheable") }
        let request = CacheControl(fields: requestFields)
        if request.noStore { return .noStore("the request says no-store") }
        let control = rules.overrideCacheControl ?? CacheControl(fields: responseFields)
        if control.noStore { return .noStore("the response says no-store") }
        if control.isPrivate { return .noStore("the response is private") }
        let vary = responseFields[values: .vary].flatMap { $0.split(separator: ",").map { $0.trimmingSpaces } }
        if vary.contains("*") { return .noStore("Vary: *") }
        if responseFields[.setCookie] != nil && !rules.storeSetCookie && rules.overrideCacheControl == nil {
            return .noStore("the response sets a cookie")
        }
        if requestFields[.authorization] != nil && !control.isPublic && control.sMaxAge == nil && !control.mustRevalidate {
            return .noStore("the request carries Authorization and the response is not public")
        }
        let date = responseFields[.date].flatMap(HTTPDate.parse) ?? now
        let lastModified = responseFields[.lastModified].flatMap(HTTPDate.parse)
        var lifetime: Int64
        if let sMaxAge = control.sMaxAge {
            lifetime = sMaxAge
        } else if let maxAge = control.maxAge {
            lifetime = maxAge
        } else if let expires = rules.overrideCacheControl == nil ? responseFields[.expires] : nil {
            // An invalid date (often "0") means already expired.
            lifetime = max(0, (HTTPDate.parse(expires) ?? date) - date)
        } else if let lastModified, lastModified < date, control.isPublic || Self.defaultStatuses.contains(status) {
            // Heuristic freshness only where RFC 9111 section 4.2.2 allows it: heuristically cacheable
            // statuses, or `public`.
            lifetime = min(rules.heuristicMax, Int64(Double(date - lastModified) * rules.heuristicFraction))
        } else {
            lifetime = rules.defaultTTL
        }
        let hasValidators = responseFields[.eTag] != nil || lastModified != nil
        if lifetime <= 0 && !hasValidators && (control.staleIfError ?? 0) == 0 {
            return .noStore("the response has no freshness and no validators")
        }
        if control.noCache && !hasValidators { return .noStore("no-cache without validators") }
        lifetime = max(0, lifetime)
        let ageField = responseFields[.age].flatMap { Int64($0.trimmingSpaces) } ?? 0
        let initialAge = max(0, now - date, ageField)
        return .store(Freshness(
            lifetime: lifetime, initialAge: initialAge,
            staleWhileRevalidate: control.staleWhileRevalidate ?? 0, staleIfError: control.staleIfError ?? 0,
            mustRevalidate: control.mustRevalidate || control.proxyRevalidate || control.sMaxAge != nil,
            noCache: control.noCache))
    }

    /// The age of a stored response now (section 4.2.3); times in Unix seconds.
    public static func age(_ freshness: Freshness, storedAt: Int64, now: Int64) -> Int64 {
        freshness.initialAge + max(0, now - storedAt)
    }

    /// What a stored response can do for a request with these `Cache-Control` directives.
    public static func usability(_ freshness: Freshness, storedAt: Int64, now: Int64,
                                 request: CacheControl) -> CacheUsability {
        let age = Self.age(freshness, storedAt: now >= storedAt ? storedAt : now, now: now)
        let staleness = age - freshness.lifetime   // > 0: stale by that much
        let staleIfError = !freshness.mustRevalidate && staleness <= freshness.staleIfError
        if freshness.noCache || request.noCache { return .revalidate(staleIfErrorAllowed: staleIfError) }
        if let maxAge = request.maxAge, age > maxAge { return .revalidate(staleIfErrorAllowed: staleIfError) }
        if let minFresh = request.minFresh, freshness.lifetime - age < minFresh {
            return .revalidate(staleIfErrorAllowed: staleIfError)
        }
        if staleness < 0 { return .fresh }
        if freshness.mustRevalidate { return .revalidate(staleIfErrorAllowed: false) }
        if let maxStale = request.maxStale, staleness <= maxStale { return .fresh }
        if staleness < freshness.staleWhileRevalidate { return .staleWhileRevalidate }
        return .revalidate(staleIfErrorAllowed: staleIfError)
    }

    /// Whether a client's conditional request is satisfied by a stored response's validators
    /// (RFC 9110 section 13.2.2): `If-None-Match` decides when present (weak comparison), else
    /// `If-Modified-Since`.
    public static func notModified(requestFields: HTTPFields, etag: String?, lastModified: String?) -> Bool {
        if let ifNoneMatch = requestFields[.ifNoneMatch] {
            guard let etag else { return false }
            let stored = weakTag(etag)
            for candidate in ifNoneMatch.split(separator: ",") {
                let tag = candidate.trimmingSpaces
                if tag == "*" || weakTag(tag) == stored { return true }
            }
            return false
        }
        if let since = requestFields[.ifModifiedSince].flatMap(HTTPDate.parse),
           let modified = lastModified.flatMap(HTTPDate.parse) {
            return modified <= since
        }
        return false
    }

    private static func weakTag(_ tag: some StringProtocol) -> Substring {
        let text = Substring(tag)
        return text.hasPrefix("W/") ? text.dropFirst(2) : text
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs.
    var trimmingSpaces: Substring {
        var text = self[...]
        while let first = text.first, first == " " || first == "\t" { text = text.dropFirst() }
        while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
        return Substring(text)
    }
}
