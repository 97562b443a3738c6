import NIOCore
import NIOPosix

/// Sends raw bytes over TCP and collects everything the server answers until it closes the connection
/// (or `timeout` passes): for tests of exact wire behaviour, malformed input and pipelining.
public enum RawClient {
    public struct Result: Sendable {
        public var text: String
        /// Whether the server closed the connection (rather than the timeout ending it).
        public var closedByServer: Bool

        /// Status codes of the responses in order.
        /// Status codes of the responses in order (status lines may directly follow a body).
        public var statuses: [Int] {
            var result: [Int] = []
            var rest = Substring(text)
            while let range = rest.range(of: "HTTP/1.") {
                let line = rest[range.lowerBound...].prefix(12)
                if line.count == 12, let code = Int(line.dropFirst(9)) { result.append(code) }
                rest = rest[range.upperBound...]
            }
            return result
        }

        /// The status of the first response (0 when none arrived).
        public var status: Int { statuses.first ?? 0 }

        /// `lastBody`.
        public var body: String { lastBody }

        /// The body of the last response (after its blank line).
        public var lastBody: String {
            guard let range = text.range(of: "\r\n\r\n", options: .backwards) else { return "" }
            return String(text[range.upperBound...])
        }
    }

    public static func exchange(_ request: String, port: Int, host: String = "127.0.0.1", group: any EventLoopGroup,
                                timeout: TimeAmount = .seconds(5), chunks: [String] = [],
                                pauseBetweenChunks: TimeAmount = .zero) async throws -> Result {
        let collector = Collector()
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.allowRemoteHalfClosure, value: false)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
            .connect(host: host, port: port).get()
        // The server may answer and close before it has read everything (431, 413): not an error here.
        try? await channel.writeAndFlush(ByteBuffer(string: request))
        for chunk in chunks {
            if pauseBetweenChunks > .zero { try await Task.sleep(nanoseconds: UInt64(pauseBetweenChunks.nanoseconds)) }
            try? await channel.writeAndFlush(ByteBuffer(string: chunk))
        }
        let doneBox = collector.doneBox
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            doneBox.closingLocally = true
            channel.close(promise: nil)
        }
        let closedByServer = try await collector.done.get()
        timer.cancel()
        return Result(text: collector.text, closedByServer: closedByServer)
    }

    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        // Touched on the channel's loop only; `text` is read after `done` completes.
        typealias InboundIn = ByteBuffer
        var bytes: [UInt8] = []
        var promise: EventLoopPromise<Bool>?
        private var result: EventLoopFuture<Bool>?
        let doneBox = DoneBox()

        var done: EventLoopFuture<Bool> { result! }
        var text: String { String(decoding: bytes, as: UTF8.self) }

        func handlerAdded(context: ChannelHandlerContext) {
            let promise = context.eventLoop.makePromise(of: Bool.self)
            self.promise = promise
            self.result = promise.futureResult
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            bytes.append(contentsOf: buffer.readableBytesView)
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise?.succeed(!doneBox.closingLocally)
            promise = nil
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            // A connection that never came up: complete the promise rather than leak it.
            promise?.succeed(false)
            promise = nil
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    final class DoneBox: @unchecked Sendable {
        var closingLocally = false
    }
}
