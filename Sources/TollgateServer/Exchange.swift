import HTTPTypes
import NIOCore
import TollgateCore

/// One request/response on a downstream connection: what was asked, where it goes, and how far each
/// direction has got. Lives on the connection's event loop. It is also the `RequestSummary` the log
/// hooks read (its head and start are the summary's; the rest is filled in when the log phase starts),
/// so the log phase builds and copies nothing.
final class Exchange: RequestSummary {
    enum Phase {
        /// Head received; routing and request plugins run (possibly suspended for I/O).
        case preparing
        /// Waiting for an upstream connection.
        case connecting
        /// Upstream attached; request and response stream.
        case proxying
        /// The response is complete; only the rest of the request body may still arrive (discarded).
        case responded
    }

    let state: ServerState
    var context: RequestContext
    var phase: Phase = .preparing
    var route: CompiledRoute?
    var service: ServiceRuntime?
    var resolvedTarget: ResolvedTarget?
    var upstreamConnection: UpstreamConnection?
    /// The head request plugins produced (nil: the client's head is forwarded), and the target. Boxed:
    /// an optional `RawHead` was copied and destroyed through generic value witnesses, several
    /// hundred instructions per request even when nil.
    var forwardHead: SharedHead?
    var upstreamTarget = ""
    /// Body bytes that arrived before an upstream connection was attached (already framed for the
    /// upstream), and whether the body's end was among them.
    var pendingBody: [ByteBuffer] = []
    /// A plugin waiting for the whole body: where the chain stopped, the limit, what to run, the request.
    var bodyWaiter: (index: Int, maxBytes: Int, then: RequestBodyContinuation, request: HTTPRequest)?
    var pendingEnd = false
    var pendingTrailers: ByteBuffer?
    var body: BodyDecoder
    let requestChunked: Bool

    var keepAlive: Bool
    let isUpgrade: Bool
    var requestComplete = false
    var upstreamRequestComplete = false
    var requestBodyBytes = 0
    let declaredLength: Int?
    var responseHeadSent = false
    /// How the response body goes to the client.
    var responseFraming = BodyFraming.none
    /// The response's status and body bytes so far (the summary's are set when the log phase starts).
    var responseStatus = 0
    var responseBytes = 0
    /// What the response body passes through on its way to the client (from the response hooks).
    var responseFilters: [any ResponseBodyFilter] = []
    var upstreamKeepAlive = true
    var failureReason: String?
    /// The log phase ran (it runs once, however the exchange ends).
    var logged = false
    /// Whether upstream time is measured (some log hook of the route reads it), and attempts kept.
    var timesUpstream = false
    var keepsAttempts = false
    /// When the attempt in flight started (0: none), the time of the finished ones, and each attempt.
    var attemptSince: UInt64 = 0
    var upstreamTime: UInt64?
    var attemptRecords: [UpstreamAttempt] = []

    // Balancing and retries.
    /// The current attempt's target, as an index into `service.targets` (-1 before the first).
    var targetIndex = -1
    /// Attempts made so far, the current one included.
    var attempt = 0
    /// Targets already tried (bit per index, the first 64), so a retry goes elsewhere.
    var tried: UInt64 = 0
    /// Whether this request may be sent again (idempotent, or the route allows it).
    var retryable = false
    /// The body kept for a retry; nil once it outgrew the limit (or nothing is kept).
    var retryBody: [ByteBuffer]?
    var retryBodyBytes = 0
    var retryTrailers: ByteBuffer?
    /// When the current attempt started (monotonic ns), and whether balancers count it in flight.
    var attemptStart: UInt64 = 0
    var attemptCounted = false
    /// Circuit-breaker units this exchange holds.
    var holdsRetry = false
    var holdsPending = false
    var deadline: NIODeadline?
    var hashKey: UInt64 = 0

    init(state: ServerState, head: RawHead, requestID: RequestID, clientIP: String, startNanos: UInt64,
         eventLoop: any EventLoop) {
        self.state = state
        self.context = RequestContext(requestID: requestID, clientIP: clientIP, startNanos: startNanos,
                                      eventLoop: eventLoop)
        self.keepAlive = head.isKeepAlive
        self.isUpgrade = head.isUpgrade
        self.declaredLength = head.contentLength
        let framing = BodyFraming.request(head)
        self.body = BodyDecoder(framing)
        self.requestChunked = framing == .chunked
        super.init(head: head, startNanos: startNanos)
    }

    var isHeadRequest: Bool { head.isHeadMethod }

    /// An upstream attempt starts (a target was picked).
    func beginAttempt() {
        guard timesUpstream else { return }
        closeAttempt(status: 0, error: "abandoned")
        attemptSince = NIODeadline.now().uptimeNanoseconds
    }

    /// The attempt in flight ended: with the upstream's status, or an error (at `now`, when the caller
    /// has read the clock already).
    func closeAttempt(status: Int, error: String?, now: UInt64? = nil) {
        guard attemptSince != 0 else { return }
        let now = now ?? NIODeadline.now().uptimeNanoseconds
        upstreamTime = (upstreamTime ?? 0) &+ (now &- attemptSince)
        if keepsAttempts {
            attemptRecords.append(UpstreamAttempt(target: resolvedTarget?.authority ?? "", startNanos: attemptSince,
                                                  endNanos: now, status: status, error: error))
        }
        attemptSince = 0
    }

    /// Whether the request can be sent again after bytes of it went upstream: retryable, and its body
    /// (if any) kept whole.
    var replayable: Bool {
        guard retryable else { return false }
        return requestBodyBytes == 0 && declaredLength ?? 0 == 0 && !requestChunked || retryBody != nil
    }
    var clientMinorVersion: Int { head.minorVersion }

    /// Whether the rest of a request body, after an early answer, is small enough to read and drop
    /// rather than closing the connection.
    var remainingBodyIsSmall: Bool {
        guard !requestChunked else { return false }
        return (declaredLength ?? 0) - requestBodyBytes <= 64 * 1024
    }
}
