import NIOCore
import NIOPosix
import TollgateCore

/// What an upstream connection reports to the downstream request that leased it. Both live on the
/// same event loop, so these are plain synchronous calls.
protocol UpstreamOwner: AnyObject {
    /// A response head: interim (1xx, framing `.none`), final, or a 101 after which bytes are relayed.
    /// `inout` only so that the connection's head is lent, not copied: a stored property passed by
    /// value is copied first (the call could change it) and the copy released, on every response. The
    /// owner does not change it.
    func upstreamHead(_ head: inout RawHead, framing: BodyFraming)
    func upstreamBody(_ buffer: ByteBuffer)
    func upstreamEnd(trailers: ByteBuffer?)
    /// Bytes after a 101 Switching Protocols.
    func upstreamRelay(_ buffer: ByteBuffer)
    func upstreamReadComplete()
    func upstreamWritabilityChanged(_ writable: Bool)
    func upstreamFailed(_ error: any Error)
    func upstreamClosed()
    /// Whether the owner can take more response bytes now (downstream writable).
    var upstreamMayRead: Bool { get }
}

enum UpstreamProtocolError: Error {
    case invalidResponse(String)
    case unexpectedBytes
}

/// One upstream connection: writes request heads and bodies, parses responses from the bytes (head
/// offsets, body slices) and hands them to the request that leased it. Reads are gated on the
/// downstream's writability (backpressure).
final class UpstreamConnection: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum ReadState {
        /// No request in flight: any byte is out of step.
        case idle
        case head(toHeadRequest: Bool)
        case body
        case relay
    }

    /// Response heads up to this size are accepted.
    static let parser = HeadParser(kind: .response, maxHeaderSize: 64 << 10)

    /// The pool of the target this connection goes to (on this loop).
    let targetPool: UpstreamPool.TargetPool
    private var context: ChannelHandlerContext?
    /// The loop's pool, told when this connection closes. Strong: a weak reference would give the
    /// pool a side table, and every retain of it (several per request) would take the slow path. The
    /// cycle (the pool keeps idle connections) ends when the channel closes: `connectionClosed`
    /// clears this.
    var pool: UpstreamPool?
    /// Strong while leased: the exchange and the connection keep each other alive until release.
    /// The concrete type (the one `UpstreamOwner`), so calls to it are direct, not through a witness table.
    var owner: ProxyHandler?
    private var pendingRead = false
    private var readState = ReadState.idle
    private var decoder = BodyDecoder(.none)
    private var untilClose = false
    private var inbound: ByteBuffer
    private var output = PendingOutput()
    private var processing = false
    /// Response heads are parsed into this one value (its field array is reused).
    private var head = RawHead()

    /// The circuit-breaker counters this connection counts against, until it closes.
    private var counters: ServiceCounters?

    init(targetPool: UpstreamPool.TargetPool, counters: ServiceCounters? = nil) {
        self.targetPool = targetPool
        self.counters = counters
        self.inbound = Self.empty
    }

    /// Kept from channel events: asking the channel costs NIO a lifecycle check each time.
    private(set) var isActive = false
    private(set) var isWritable = true
    /// No response in flight and no stray bytes: safe to hand to the next request.
    var isClean: Bool {
        if case .idle = readState { return inbound.readableBytes == 0 }
        return false
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        output.socket = DirectSocket.of(context, alone: true)
        isActive = context.channel.isActive
    }

    func channelActive(context: ChannelHandlerContext) {
        isActive = true
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func lease(to owner: ProxyHandler) {
        self.owner = owner
    }

    // MARK: writing

    /// Renders a request head; the response that follows is parsed as an answer to it.
    func writeHead(toHeadRequest: Bool, _ render: (inout ByteBuffer) -> Void) {
        guard let context else { return }
        readState = .head(toHeadRequest: toHeadRequest)
        output.render(context.channel.allocator, render)
    }

    func writeBody(_ bytes: ByteBuffer, chunked: Bool) {
        guard let context else { return }
        if chunked { output.chunk(bytes, context: context) } else { output.data(bytes, context: context) }
    }

    func writeEnd(trailers: ByteBuffer?, chunked: Bool) {
        guard chunked, let context else { return }
        output.lastChunk(trailers, context: context)
    }

    /// Relayed bytes after a protocol switch.
    func writeRaw(_ bytes: ByteBuffer) {
        guard let context else { return }
        output.data(bytes, context: context)
    }

    func flush() {
        guard let context else { return }
        output.flushOut(context)
    }

    func close() {
        owner = nil
        context?.close(promise: nil)
    }

    /// Resumes a read that was held back while the downstream could not take more.
    func resumeReading() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    // MARK: reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if inbound.readableBytes == 0 {
            inbound = buffer
        } else {
            inbound.writeBuffer(&buffer)
        }
        process()
        // Let go of a consumed read buffer, so the channel can reuse it for the next read.
        if inbound.readableBytes == 0 { inbound = Self.empty }
    }

    private static let empty = ByteBuffer()

    private func process() {
        guard !processing else { return }
        processing = true
        defer { processing = false }
        guard inbound.readableBytes > 0 || isReadingBody else { return }
        // An idle pooled connection must not speak; a stray response means the stream is out of step.
        guard let owner else {
            context?.close(promise: nil)
            return
        }
        // The owner is taken once (one retain per read, not per event) and checked by identity on
        // each turn: a finished exchange gives the connection back (no owner), and only this owner
        // runs here, so it can only lease it again itself.
        while inbound.readableBytes > 0 || isReadingBody {
            guard self.owner === owner else {
                context?.close(promise: nil)
                return
            }
            switch readState {
            case .idle:
                fail(UpstreamProtocolError.unexpectedBytes)
                return
            case .head(let toHeadRequest):
                switch Self.parser.parse(inbound, into: &head) {
                case .incomplete:
                    if inbound.readableBytes > Self.parser.maxHeadBytes { fail(UpstreamProtocolError.invalidResponse("head too large")) }
                    return
                case .failed(let error):
                    fail(UpstreamProtocolError.invalidResponse(error.message))
                    return
                case .complete(let consumed):
                    inbound.moveReaderIndex(forwardBy: consumed)
                    if head.status == 101 {
                        readState = .relay
                        owner.upstreamHead(&head, framing: .none)
                        continue
                    }
                    if head.status < 200 {
                        owner.upstreamHead(&head, framing: .none)
                        continue
                    }
                    if let problem = head.framingProblem {
                        fail(UpstreamProtocolError.invalidResponse(problem))
                        return
                    }
                    if head.transferEncodingFields > 0 && head.contentLengthFields > 0 {
                        fail(UpstreamProtocolError.invalidResponse("both Content-Length and Transfer-Encoding"))
                        return
                    }
                    let framing = BodyFraming.response(head, toHead: toHeadRequest)
                    decoder = BodyDecoder(framing)
                    untilClose = framing == .untilClose
                    readState = .body
                    owner.upstreamHead(&head, framing: framing)
                }
            case .body:
                let event: BodyEvent?
                do {
                    event = try decoder.next(&inbound)
                } catch {
                    fail(UpstreamProtocolError.invalidResponse("invalid chunked body"))
                    return
                }
                // Consumed: its bytes move to the owner (a copy retained them, and released them twice).
                switch consume event {
                case .data(let bytes)?:
                    owner.upstreamBody(bytes)
                case .end(let trailers)?:
                    readState = .idle
                    owner.upstreamEnd(trailers: trailers)
                case nil:
                    return
                }
            case .relay:
                guard inbound.readableBytes > 0 else { return }
                let bytes = inbound.readSlice(length: inbound.readableBytes)!
                owner.upstreamRelay(bytes)
            }
        }
    }

    /// In a body, events may come without new bytes (the `.end` of an empty body).
    private var isReadingBody: Bool {
        if case .body = readState { return true }
        return false
    }

    private func fail(_ error: any Error) {
        let owner = self.owner
        self.owner = nil
        readState = .idle
        owner?.upstreamFailed(error)
        context?.close(promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        owner?.upstreamReadComplete()
        // The next read, asked for here rather than by NIO through the pipeline (see ProxyHandler).
        if owner?.upstreamMayRead ?? true { context.read() }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        isWritable = context.channel.isWritable
        owner?.upstreamWritabilityChanged(isWritable)
        context.fireChannelWritabilityChanged()
    }

    /// Gives the connection's unit back to its service's circuit breaker (once).
    func releaseCounters() {
        counters?.release(.connection)
        counters = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        isActive = false
        releaseCounters()
        pool?.connectionClosed(self)
        let owner = self.owner
        self.owner = nil
        if case .body = readState, untilClose, let owner {
            // The close is how this body ends.
            readState = .idle
            owner.upstreamEnd(trailers: nil)
        } else {
            owner?.upstreamClosed()
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let owner = self.owner
        self.owner = nil
        owner?.upstreamFailed(error)
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        if let owner, !owner.upstreamMayRead {
            pendingRead = true
            return
        }
        context.read()
    }
}

@available(*, unavailable)
extension UpstreamConnection: Sendable {}
