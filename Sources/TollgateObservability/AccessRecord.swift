import TollgateCore

/// What the access log keeps of one request: taken on the event loop (strings are shared, not
/// copied), formatted later on the log writer's thread.
public struct AccessRecord: Sendable {
    /// When the request started, in wall-clock milliseconds since 1970.
    public var timestampMillis: Int64
    public var requestID: String
    public var traceID: String?
    public var clientIP: String
    public var method: String
    public var host: String?
    public var target: String
    public var httpVersion: String
    public var status: Int
    public var bytesIn: Int
    public var bytesOut: Int
    public var latencyNanos: UInt64
    public var upstreamNanos: UInt64?
    public var route: String?
    public var service: String?
    public var upstream: String?
    public var consumer: String?
    public var rateLimit: String?
    public var cache: String?
    public var userAgent: String?
    public var error: String?
    /// Per-plugin time (name, nanoseconds), when the log asks for it.
    public var pluginTimings: [(name: String, nanos: UInt64)]?

    public init(context: RequestContext, summary: RequestSummary, nowMillis: Int64, pluginNames: [String]? = nil) {
        let latency = summary.endNanos &- summary.startNanos
        timestampMillis = nowMillis - Int64(latency / 1_000_000)
        requestID = context.requestID
        traceID = context.trace?.traceID
        clientIP = context.clientIP
        method = summary.method
        host = summary.host
        target = summary.target
        httpVersion = summary.httpVersion
        status = summary.status
        bytesIn = summary.bytesReceived
        bytesOut = summary.bytesSent
        latencyNanos = latency
        upstreamNanos = summary.upstreamNanos
        route = summary.routeName
        service = summary.serviceName
        upstream = summary.upstream
        consumer = context.consumer?.name
        rateLimit = context.rateLimitOutcome
        cache = context.cacheStatus
        userAgent = summary.userAgent
        error = summary.errorReason
        if let pluginNames, let timings = context.pluginTimings {
            pluginTimings = zip(pluginNames, timings).map { ($0, $1) }
        }
    }

    /// The path part of the target.
    var path: Substring {
        guard let question = target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return Substring(target) }
        return target[..<question]
    }

    var query: Substring? {
        guard let question = target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return nil }
        return target[target.utf8.index(after: question)...]
    }
}
