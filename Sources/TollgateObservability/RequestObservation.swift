import TollgateCore

/// What the log phase tells the metrics about one request.
public struct RequestObservation: Sendable {
    /// The matched route's identity (nil: no route matched): series are found by it, not by hashing
    /// names. `route` and `service` are its labels.
    public var routeKey: ObjectIdentifier?
    public var route: String
    public var service: String
    /// One of `methods` (a client cannot mint label values).
    public var method: UInt8
    public var status: Int
    public var latencyNanos: UInt64
    public var upstreamNanos: UInt64?
    public var bytesIn: Int
    public var bytesOut: Int
    public var rateLimit: String?
    public var authFailure: String?
    public var cache: String?
    public var consumer: String?
    /// Nanoseconds per plugin of the route's chain, and the plugins' names, when plugin timing is on.
    public var pluginTimings: [UInt64]?
    public var pluginNames: [String] = []

    public init(routeKey: ObjectIdentifier? = nil, route: String, service: String, method: UInt8, status: Int,
                latencyNanos: UInt64, upstreamNanos: UInt64?, bytesIn: Int, bytesOut: Int, rateLimit: String? = nil,
                authFailure: String? = nil, cache: String? = nil, consumer: String? = nil, pluginTimings: [UInt64]? = nil,
                pluginNames: [String] = []) {
        self.routeKey = routeKey
        self.route = route
        self.service = service
        self.method = method
        self.status = status
        self.latencyNanos = latencyNanos
        self.upstreamNanos = upstreamNanos
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.rateLimit = rateLimit
        self.authFailure = authFailure
        self.cache = cache
        self.consumer = consumer
        self.pluginTimings = pluginTimings
        self.pluginNames = pluginNames
    }

    /// The method labels; methods outside the standard ones are counted as `OTHER`.
    public static let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "OTHER"]

    /// The label index of a request's method, from its head (no string for the common methods).
    public static func methodIndex(_ head: RawHead) -> UInt8 {
        guard let method = head.method else { return 9 }
        switch method {
        case .get: return 0
        case .post: return 1
        case .put: return 2
        case .delete: return 3
        case .patch: return 4
        case .head: return 5
        case .options: return 6
        case .connect: return 7
        case .trace: return 8
        default: return 9
        }
    }

    public static func methodIndex(_ name: String) -> UInt8 {
        UInt8(methods.firstIndex(of: name) ?? 9)
    }
}
