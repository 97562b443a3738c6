import HTTPTypes
import NIOCore
import NIOHTTP1
import TollgateCore

/// One request/response on a downstream connection: what was asked, where it goes, and how far each
/// direction has got. Lives on the connection's event loop.
final class Exchange {
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
    let requestHead: HTTPRequestHead
    let facts: HeadFacts
    var context: RequestContext
    var phase: Phase = .preparing
    var route: CompiledRoute?
    var service: ServiceRuntime?
    var target: ResolvedTarget?
    var upstream: UpstreamConnection?
    /// Head for the upstream, built after the plugins ran.
    var upstreamHead: HTTPRequestHead?
    /// Body parts that arrived before an upstream connection was attached.
    var pendingBody = CircularBuffer<HTTPServerRequestPart>()

    var keepAlive: Bool
    var isUpgrade = false
    /// A 101 was forwarded; the connection becomes a byte relay on the next loop tick.
    var switchingProtocols = false
    var requestComplete = false
    var upstreamRequestComplete = false
    var requestBodyBytes = 0
    let declaredLength: Int?
    var responseHeadSent = false
    var status = 0
    var bytesSent = 0
    var upstreamKeepAlive = true
    var errorReason: String?

    init(state: ServerState, head: HTTPRequestHead, facts: HeadFacts, context: RequestContext) {
        self.state = state
        self.requestHead = head
        self.facts = facts
        self.context = context
        self.keepAlive = head.isKeepAlive
        self.declaredLength = facts.declaredLength
    }

    var isChunkedRequest: Bool { !facts.transferEncodings.isEmpty }

    /// Whether the rest of a request body, after an early answer, is small enough to read and drop
    /// rather than closing the connection.
    var remainingBodyIsSmall: Bool {
        guard !isChunkedRequest else { return false }
        return (declaredLength ?? 0) - requestBodyBytes <= 64 * 1024
    }
}
