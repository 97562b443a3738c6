#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
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

    /// The label index of a request's method, from the bytes of its head (no string, no
    /// `HTTPRequest.Method` to compare).
    public static func methodIndex(_ head: RawHead) -> UInt8 {
        head.withBytes { p -> UInt8 in
            let method = UnsafeRawBufferPointer(rebasing: p[0..<Int(head.methodEnd)])
            // The only standard method of this length and first letter, then a check of the rest.
            let index: Int
            switch (method.count, method.first ?? 0) {
            case (3, UInt8(ascii: "G")): index = 0
            case (4, UInt8(ascii: "P")): index = 1
            case (3, UInt8(ascii: "P")): index = 2
            case (6, UInt8(ascii: "D")): index = 3
            case (5, UInt8(ascii: "P")): index = 4
            case (4, UInt8(ascii: "H")): index = 5
            case (7, UInt8(ascii: "O")): index = 6
            case (7, UInt8(ascii: "C")): index = 7
            case (5, UInt8(ascii: "T")): index = 8
            default: return 9
            }
            return methodBytes[index].withUnsafeBytes { memcmp($0.baseAddress!, method.baseAddress!, method.count) } == 0 ? UInt8(index) : 9
        }
    }

    private static let methodBytes: [[UInt8]] = methods.map { Array($0.utf8) }

    public static func methodIndex(_ name: String) -> UInt8 {
        UInt8(methods.firstIndex(of: name) ?? 9)
    }
}
