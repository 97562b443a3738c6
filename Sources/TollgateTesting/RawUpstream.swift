import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// An upstream that answers with exact bytes, for tests of what the gateway does with malformed,
/// close-delimited or trailer-carrying responses. It waits for a whole request (head, and a chunked
/// body up to its last chunk), records the bytes it received, then writes the answer.
public final class RawUpstream: Sendable {
    public struct Answer: Sendable {
        public var bytes: String
        /// Close the connection after writing (a close-delimited body ends this way).
        public var close: Bool

        public init(_ bytes: String, close: Bool = false) {
            self.bytes = bytes
            self.close = close
        }
    }

    public let channel: any Channel
    private let seen = NIOLockedValueBox<[String]>([])

    public var port: Int { channel.localAddress!.port! }
    public var url: String { "http://127.0.0.1:\(port)" }
    /// Every request as the bytes that arrived.
    public var requests: [String] { seen.withLockedValue { $0 } }

    public init(group: any EventLoopGroup, answer: @escaping @Sendable (String) -> Answer) async throws {
        let seen = self.seen
        self.channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler(answer: answer, seen: seen))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    public func close() async throws {
        try await channel.close()
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        let answer: @Sendable (String) -> Answer
        let seen: NIOLockedValueBox<[String]>
        var received = ""

        init(answer: @escaping @Sendable (String) -> Answer, seen: NIOLockedValueBox<[String]>) {
            self.answer = answer
            self.seen = seen
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            received += String(buffer: unwrapInboundIn(data))
            guard let headEnd = received.range(of: "\r\n\r\n") else { return }
            let head = received[..<headEnd.lowerBound].lowercased()
            if head.contains("transfer-encoding: chunked") {
                let body = received[headEnd.upperBound...]
                guard body.hasPrefix("0\r\n") || body.contains("\r\n0\r\n"), body.hasSuffix("\r\n\r\n") else { return }
            }
            let request = received
            received = ""
            seen.withLockedValue { $0.append(request) }
            let reply = answer(request)
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: reply.bytes)), promise: nil)
            if reply.close { context.close(promise: nil) }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension RawUpstream.Handler: Sendable {}
