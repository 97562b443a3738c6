import HTTPTypes

/// A typed slot in `RequestContext` (Kong's `kong.ctx`, typed as in Hummingbird).
public protocol ContextKey {
    associatedtype Value: Sendable
}

/// Per-request state shared by the plugins of one request. A value type: it lives in the connection
/// handler on the event loop, and is copied only when a plugin suspends.
public struct RequestContext: Sendable {
    public var requestID: String
    /// The matched route (nil before routing or when no route matched).
    public var route: CompiledRoute?
    /// Named path parameters of the match: `/users/{id}` gives `["id": "42"]`.
    public var pathParameters: [(name: String, value: String)]
    /// The API version the request resolved to (or the configured default).
    public var version: String?
    public var clientIP: String
    /// The path the client sent, normalized, before strip_prefix/rewrite.
    public var originalPath: String
    /// Monotonic start time in nanoseconds.
    public var startNanos: UInt64
    private var storage: [ObjectIdentifier: any Sendable] = [:]

    public init(requestID: String, clientIP: String, originalPath: String = "/", startNanos: UInt64 = 0) {
        self.requestID = requestID
        self.route = nil
        self.pathParameters = []
        self.version = nil
        self.clientIP = clientIP
        self.originalPath = originalPath
        self.startNanos = startNanos
    }

    public subscript<Key: ContextKey>(key: Key.Type) -> Key.Value? {
        get { storage[ObjectIdentifier(key)] as? Key.Value }
        set { storage[ObjectIdentifier(key)] = newValue }
    }

    public func pathParameter(_ name: String) -> String? {
        pathParameters.first { $0.name == name }?.value
    }
}
