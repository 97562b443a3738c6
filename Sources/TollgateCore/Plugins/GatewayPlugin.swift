import HTTPTypes
import NIOCore

/// The phases of DESIGN.md, in the order a request passes them. A plugin's phase orders its request
/// hook before its priority does.
public enum PluginPhase: Int, Sendable, Comparable, CaseIterable {
    case rewrite = 1
    case access = 2
    case cache = 3
    case proxy = 4
    case response = 5
    case log = 6

    public static func < (lhs: PluginPhase, rhs: PluginPhase) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// A plugin's validated settings, read from its `config:` block. Reading reports every problem to
/// the node's diagnostics (with YAML path and line) instead of throwing, so one load lists them all.
public protocol PluginConfiguration: Sendable {
    init(from config: ConfigNode)
}

/// A gateway plugin. Immutable: built once per route from its configuration and shared by every
/// connection; per-request state goes in `RequestContext`.
public protocol GatewayPlugin: Sendable {
    associatedtype Configuration: PluginConfiguration
    /// YAML name: `request-id`.
    static var name: String { get }
    static var phase: PluginPhase { get }
    /// Higher runs first on requests and last on responses (Kong-style gaps: auth 1000s, limits 900s,
    /// transforms 800s).
    static var priority: Int { get }
    init(configuration: Configuration) throws
    /// Runs on the connection's event loop: no awaits, no locks, no blocking.
    func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision
    /// Runs on the event loop when the response head is ready, before it is written.
    func onResponse(_ response: inout HTTPResponse, context: inout RequestContext)
    /// Runs after the response is complete; must not delay anything.
    func onLog(context: RequestContext, summary: RequestSummary)
    /// Whether the request hook may change the request (method, path, authority or fields). When no
    /// plugin of a route does, the client's head is forwarded as it came, without being rendered again.
    static var changesRequest: Bool { get }
    /// Whether the response hook only adds fields (it neither reads the upstream's fields nor changes
    /// or removes them, nor the status). When every plugin of a route says so, the hooks run on an
    /// empty set of fields and what they add is written after the upstream's fields as they came.
    static var responseHookOnlyAdds: Bool { get }
    /// Whether the request hook reads the request's header fields. When no plugin of a route reads
    /// or changes them, the hooks get a request without header fields (converting them costs).
    var readsRequestFields: Bool { get }
    /// Whether the request hook reads the request at all (method, target, authority or fields). When
    /// no hook of a route reads or changes it, the hooks get a placeholder request (`GET /`, no
    /// fields) instead of one built from the client's head: building it costs. A hook that says false
    /// finds what it needs in the context (consumer, client address, path parameters, route).
    var readsRequest: Bool { get }
    /// Whether the request hook reads `RequestContext.clientHead` (set only for routes where one does).
    var readsClientHead: Bool { get }
    /// When the request hook reads only some header fields, their names: the hooks then get a request
    /// with just those (converting every field costs more than finding a few). Nil: all of them.
    var requestFieldNames: [HTTPField.Name]? { get }
    /// Whether this instance's request hook may change the request itself (method, target, authority,
    /// fields). Defaults to `changesRequest`; a plugin whose settings decide it (an API key read from
    /// a query parameter must be cut from the target) can say false when it only edits fields
    /// through `RequestContext.upstreamFieldEdits`.
    var mayChangeRequest: Bool { get }
    /// Whether `onResponse` does anything. When not, the plugin is left out of the response phase.
    var hasResponseHook: Bool { get }
    /// When the response hook reads and changes only some fields of the upstream's response (and never
    /// its status), their names: the hooks then get a response with just those fields, and what they
    /// change among them (or add) is applied while the upstream's other fields are copied as they came.
    /// Nil: all of them (the hook sees every field, converted).
    var responseFieldNames: [HTTPField.Name]? { get }
    /// Whether `onLog` does anything. When no plugin of a route has a log hook, the log phase is skipped.
    var hasLogHook: Bool { get }
    /// Whether `onRequest` does anything. When no plugin of a route has one, the request is forwarded
    /// without building an `HTTPRequest` for the hooks (log-only plugins such as access-log).
    var hasRequestHook: Bool { get }
    /// Whether the log hook reads per-plugin timings (`RequestContext.pluginTimings`): the chain then
    /// times every request and response hook of the route.
    var wantsPluginTimings: Bool { get }
    /// Whether the log hook reads the upstream attempts (`RequestSummary.attempts`, for trace spans).
    var wantsUpstreamAttempts: Bool { get }
    /// Whether the hooks send requests of their own (`RequestContext.subrequests` is then set).
    var wantsSubrequests: Bool { get }
    /// The plugin that starts each request's trace context, if this is one (the tracing plugin).
    var requestTracer: (any RequestTracer)? { get }
    /// For plugins whose response hook only adds fields: the fields it adds, without an
    /// `HTTPResponse` to add them to. The default runs `onResponse` on an empty response.
    func responseFieldsToAdd(context: inout RequestContext) -> [HTTPField]
    /// The same fields written as header lines, for the proxied response's head (the hot path). The
    /// default writes `responseFieldsToAdd`; a plugin that adds fields to every response writes
    /// them from pieces it rendered once.
    func writeResponseFields(context: inout RequestContext, into lines: inout HeaderLines)
}

extension GatewayPlugin {
    public static var phase: PluginPhase { .access }
    public static var changesRequest: Bool { true }
    public static var responseHookOnlyAdds: Bool { false }
    public var readsRequestFields: Bool { true }
    public var readsRequest: Bool { true }
    public var readsClientHead: Bool { false }
    public var mayChangeRequest: Bool { Self.changesRequest }
    public var requestFieldNames: [HTTPField.Name]? { nil }
    public var hasResponseHook: Bool { true }
    public var responseFieldNames: [HTTPField.Name]? { nil }
    public var hasLogHook: Bool { true }
    public var hasRequestHook: Bool { true }
    public var wantsPluginTimings: Bool { false }
    public var wantsUpstreamAttempts: Bool { false }
    public var wantsSubrequests: Bool { false }
    public var requestTracer: (any RequestTracer)? { nil }
    public func responseFieldsToAdd(context: inout RequestContext) -> [HTTPField] {
        var response = HTTPResponse(status: .ok)
        onResponse(&response, context: &context)
        return Array(response.headerFields)
    }
    public func writeResponseFields(context: inout RequestContext, into lines: inout HeaderLines) {
        for field in responseFieldsToAdd(context: &context) { lines.add(field) }
    }
    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision { .proceed }
    public func onResponse(_ response: inout HTTPResponse, context: inout RequestContext) {}
    public func onLog(context: RequestContext, summary: RequestSummary) {}
}

/// What a plugin's request hook decided.
public enum RequestDecision: Sendable {
    /// Go on to the next plugin, then the upstream.
    case proceed
    /// Answer from the gateway (401, 429, maintenance); later request hooks and the upstream are skipped,
    /// response hooks still run.
    case respond(LocalResponse)
    /// Park the request (stop reading), run `work` off the loop on copies, write the copies back on the
    /// loop, then act on the decision it returns. Only for branches that must do I/O.
    case suspend(@Sendable (inout HTTPRequest, inout RequestContext) async throws -> RequestDecision)
    /// Park the request (stop reading) until `future` completes, then run the continuation it gives on
    /// the connection's event loop with the live request and context. For I/O done on the event loop
    /// itself (a Redis command on the loop's own connection, a timer): no Task, no thread hop. A
    /// failed future answers 500.
    case pending(EventLoopFuture<RequestContinuation>)
    /// Read the request body first (at most `maxBytes`; more is 413), then decide with it, on the loop.
    /// The body is still forwarded upstream when the decision is `proceed`.
    case readBody(maxBytes: Int, then: RequestBodyContinuation)
}

/// What a `readBody` decision does with the whole body.
public typealias RequestBodyContinuation = @Sendable (inout HTTPRequest, inout RequestContext, ByteBuffer) -> RequestDecision

/// What a `pending` decision does once its I/O is done: runs on the event loop, like a request hook.
public typealias RequestContinuation = @Sendable (inout HTTPRequest, inout RequestContext) -> RequestDecision

/// A response made by the gateway itself.
public struct LocalResponse: Sendable {
    public var status: HTTPResponse.Status
    public var headerFields: HTTPFields
    public var body: String
    /// The body as bytes (a cached or binary body); when set it is sent instead of `body`.
    public var payload: ByteBuffer?
    /// Fields that come before `headerFields`, also rendered as header lines (a stored response's):
    /// when no other plugin's response hook reads or changes fields, the lines are written as they
    /// are; else the hooks see `base.fields + headerFields`.
    public var base: (fields: HTTPFields, rendered: ByteBuffer)?

    public init(status: HTTPResponse.Status, headerFields: HTTPFields = [:], body: String,
                contentType: String = "application/json") {
        self.status = status
        self.headerFields = headerFields
        if self.headerFields[.contentType] == nil { self.headerFields[.contentType] = contentType }
        self.body = body
    }

    /// A response with a body of bytes and the fields as given (no content type is added).
    public init(status: HTTPResponse.Status, headerFields: HTTPFields, payload: ByteBuffer) {
        self.status = status
        self.headerFields = headerFields
        self.body = ""
        self.payload = payload
    }

    /// The body's bytes.
    public var bodyBytes: ByteBuffer { payload ?? ByteBuffer(string: body) }

    /// `{"error": message, "request_id": id}`, the body of every error the gateway makes.
    public static func error(_ status: HTTPResponse.Status, _ message: String, requestID: String,
                             extra: [(String, String)] = []) -> LocalResponse {
        var body = #"{"error":"# + JSONText.quote(message) + #","request_id":"# + JSONText.quote(requestID)
        for (key, rawJSON) in extra { body += ",\(JSONText.quote(key)):\(rawJSON)" }
        body += "}"
        return LocalResponse(status: status, body: body)
    }
}

/// What the log phase sees of a finished request. The server's per-request object is one (a
/// subclass, which fills these fields in when the log phase starts), so every log hook reads the same
/// object and nothing is built or copied for the log phase. It belongs to the request's event loop:
/// read it during the hook, and copy out what must outlive it or go to another thread.
open class RequestSummary {
    public final private(set) var status = 0
    public final private(set) var bytesReceived = 0
    public final private(set) var bytesSent = 0
    /// Monotonic nanoseconds: when the request head arrived, and when the log phase started.
    public let startNanos: UInt64
    public final private(set) var endNanos: UInt64 = 0
    /// The upstream target of the last attempt (`host:port`), nil when none was tried.
    public final private(set) var upstream: String?
    public final private(set) var errorReason: String?
    /// The client's request head as it arrived (its bytes are shared, not copied): the request line
    /// and fields, read on demand.
    public let head: RawHead
    /// Time spent on upstream attempts (connect to last byte, summed over retries); nil when the
    /// request never went upstream.
    public final private(set) var upstreamNanos: UInt64?
    /// Each upstream attempt, when a log hook asked for them (`wantsUpstreamAttempts`).
    public final private(set) var attempts: [UpstreamAttempt] = []
    /// The matched route's name and its service; nil when no route matched (those requests run only
    /// the global plugins' log hooks).
    public final private(set) var routeName: String?
    public final private(set) var serviceName: String?

    /// A request whose head arrived at `startNanos`; the rest is set by `finish`.
    public init(head: RawHead, startNanos: UInt64) {
        self.head = head
        self.startNanos = startNanos
    }

    /// A finished request in one go (tests, tools).
    public convenience init(status: Int, bytesReceived: Int, bytesSent: Int, startNanos: UInt64, endNanos: UInt64,
                            upstream: String?, errorReason: String?, head: RawHead = RawHead(), upstreamNanos: UInt64? = nil,
                            attempts: [UpstreamAttempt] = [], routeName: String? = nil, serviceName: String? = nil) {
        self.init(head: head, startNanos: startNanos)
        finish(status: status, bytesReceived: bytesReceived, bytesSent: bytesSent, endNanos: endNanos, upstream: upstream,
               errorReason: errorReason, upstreamNanos: upstreamNanos, attempts: attempts, routeName: routeName,
               serviceName: serviceName)
    }

    /// How the request ended, set once before the log hooks run.
    public final func finish(status: Int, bytesReceived: Int, bytesSent: Int, endNanos: UInt64, upstream: String?,
                             errorReason: String?, upstreamNanos: UInt64?, attempts: [UpstreamAttempt], routeName: String?,
                             serviceName: String?) {
        self.status = status
        self.bytesReceived = bytesReceived
        self.bytesSent = bytesSent
        self.endNanos = endNanos
        self.upstream = upstream
        self.errorReason = errorReason
        self.upstreamNanos = upstreamNanos
        self.attempts = attempts
        self.routeName = routeName
        self.serviceName = serviceName
    }

    public var method: String { head.methodString }
    /// The target as the client sent it (path and query).
    public var target: String { head.target }
    public var httpVersion: String { head.minorVersion == 0 ? "HTTP/1.0" : "HTTP/1.1" }
    public var host: String? { head.host }
    public var userAgent: String? { head.userAgent }

    /// The path part of `target`.
    public var path: Substring {
        guard let question = target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return Substring(target) }
        return target[..<question]
    }

    /// The query part of `target` (after `?`), nil without one.
    public var query: Substring? {
        guard let question = target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return nil }
        return target[target.utf8.index(after: question)...]
    }
}

/// One try of the upstream: where, when, and how it ended.
public struct UpstreamAttempt: Sendable {
    public var target: String
    public var startNanos: UInt64
    public var endNanos: UInt64
    /// The upstream's status (0 when no response head arrived).
    public var status: Int
    public var error: String?

    public init(target: String, startNanos: UInt64, endNanos: UInt64, status: Int, error: String?) {
        self.target = target
        self.startNanos = startNanos
        self.endNanos = endNanos
        self.status = status
        self.error = error
    }
}

/// Minimal JSON string quoting, without Foundation's encoder on the request path.
public enum JSONText {
    public static func quote(_ text: String) -> String {
        var out = "\""
        out.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
