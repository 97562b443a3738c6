import NIOCore
import NIOPosix
import Testing
import TollgateTesting

/// Exact bytes on both sides of the proxy: what it forwards of unusual framing, and what it refuses.
@Suite struct WireTests {
    /// A gateway whose one route (`/api/*`) goes to an upstream answering with `answer`.
    static func withRawUpstream(_ answer: @escaping @Sendable (String) -> RawUpstream.Answer,
                                _ body: (Harness, RawUpstream) async throws -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let upstream = try await RawUpstream(group: group, answer: answer)
        do {
            try await Harness.with("""
                services:
                  api: {targets: [{url: "\(upstream.url)"}], timeouts: {read: 2s}}
                routes:
                  - {match: {paths: ["/api/*"]}, service: api}
                """, upstreams: []) { harness in
                try await body(harness, upstream)
            }
        } catch {
            try? await upstream.close()
            try? await group.shutdownGracefully()
            throw error
        }
        try? await upstream.close()
        try? await group.shutdownGracefully()
    }

    @Test(arguments: [
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        "garbage that is no response\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n",
    ])
    func malformedUpstreamResponsesAre502(_ reply: String) async throws {
        try await Self.withRawUpstream({ _ in .init(reply) }) { harness, _ in
            let response = try await harness.get("/api/x")
            #expect(response.statuses == [502], "\(response.text.prefix(300))")
            #expect(response.lastBody.contains(#""error":"upstream sent an invalid response""#))
        }
    }

    /// An upstream body of unknown length (ended by close) reaches an HTTP/1.1 client chunked, on a
    /// connection that stays usable.
    @Test func closeDelimitedBodyIsChunkedForTheClient() async throws {
        try await Self.withRawUpstream({ _ in .init("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close", close: true) }) { harness, _ in
            let response = try await harness.send("GET /api/a HTTP/1.1\r\nHost: t\r\n\r\nGET /api/b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            #expect(response.statuses == [200, 200])
            #expect(response.text.header("transfer-encoding") == "chunked")
            #expect(response.text.contains("b\r\nuntil close\r\n0\r\n\r\nHTTP/1.1 200"))
        }
    }

    /// Chunked bodies are re-framed, not passed through: chunk extensions are dropped, trailers kept.
    @Test func chunkedRequestWithTrailersIsReframed() async throws {
        try await Self.withRawUpstream({ _ in .init("HTTP/1.1 204 No Content\r\n\r\n") }) { harness, upstream in
            let response = try await harness.send(
                "POST /api/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                chunks: ["5;name=value\r\nhello\r\n", "6\r\n world\r\n0\r\nX-Checksum: 42\r\n\r\n"])
            #expect(response.statuses == [204])
            let forwarded = try #require(upstream.requests.first)
            #expect(forwarded.hasSuffix("\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 42\r\n\r\n"))
            #expect(forwarded.contains("Transfer-Encoding: chunked\r\n"))
            #expect(!forwarded.contains("name=value"))
        }
    }

    @Test func responseTrailersReachHTTP11Clients() async throws {
        try await Self.withRawUpstream({ _ in
            .init("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 9\r\n\r\n")
        }) { harness, _ in
            let response = try await harness.get("/api/t")
            #expect(response.statuses == [200])
            #expect(response.text.hasSuffix("5\r\nhello\r\n0\r\nX-Sum: 9\r\n\r\n"))
            #expect(response.text.header("trailer") == nil)   // hop-by-hop
        }
    }

    /// A chunked body that turns invalid after the head went out cannot be finished honestly: the
    /// client's connection is closed, and the gateway keeps serving.
    @Test func brokenBodyAfterTheHeadCutsTheConnection() async throws {
        try await Self.withRawUpstream({ request in
            request.contains("/api/broken")
                ? .init("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXXzz\r\n")
                : .init("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }) { harness, _ in
            let response = try await harness.send("GET /api/broken HTTP/1.1\r\nHost: t\r\n\r\n")
            #expect(response.statuses == [200])
            #expect(response.closedByServer)
            #expect(!response.text.hasSuffix("0\r\n\r\n"))
            #expect(try await harness.get("/api/fine").statuses == [200])
        }
    }

    /// A head that arrives one byte at a time is parsed once per line end, and served.
    @Test func headTrickledByteByByte() async throws {
        try await Harness.with(basicConfig) { harness in
            let request = "GET /api/slow HTTP/1.1\r\nHost: t\r\nX-Long: " + String(repeating: "v", count: 300) + "\r\nConnection: close\r\n\r\n"
            let bytes = request.map { String($0) }
            let response = try await harness.send(bytes[0], chunks: Array(bytes.dropFirst()))
            #expect(response.statuses == [200])
            #expect(harness.upstreams[0].requests.first?.head.headers["x-long"].first?.count == 300)
        }
    }

    /// Many pipelined requests in one write are answered in order, each exactly once.
    @Test func longPipelineInOneWrite() async throws {
        try await Harness.with(basicConfig) { harness in
            let requests = (0..<50).map { "GET /api/p\($0) HTTP/1.1\r\nHost: t\r\n\r\n" }.joined()
                + "GET /api/last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            let response = try await harness.send(requests)
            #expect(response.statuses == Array(repeating: 200, count: 51))
            let uris = harness.upstreams[0].requests.map(\.head.uri)
            #expect(uris == (0..<50).map { "/p\($0)" } + ["/last"])   // basicConfig strips /api
        }
    }
}

/// Counts bytes but reads slowly: after each read it pauses 2 ms, so the sender's socket buffer stays
/// full and its writes queue up.
final class SlowCounter: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    var count = 0
    let promise: EventLoopPromise<Int>
    init(promise: EventLoopPromise<Int>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        count += unwrapInboundIn(data).readableBytes
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        let channel = context.channel
        _ = channel.setOption(.autoRead, value: false)
        context.eventLoop.scheduleTask(in: .milliseconds(2)) {
            _ = channel.setOption(.autoRead, value: true)
            channel.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) { promise.succeed(count) }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

extension WireTests {
    /// A response that ends the connection (`Connection: close`) reaches a slow reader whole: the
    /// gateway closes only after its last byte left, not while writes are still queued.
    @Test func closingResponseIsDeliveredWholeToASlowReader() async throws {
        let size = 4 << 20
        try await Harness.with(basicConfig, upstreams: [{ _ in StubResponse(body: .stream(count: size, chunked: false)) }]) { harness in
            let eventLoop = harness.group.next()
            let promise = eventLoop.makePromise(of: Int.self)
            let channel = try await ClientBootstrap(group: eventLoop)
                .channelOption(.socketOption(.so_rcvbuf), value: 16 << 10)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(SlowCounter(promise: promise)) }
                }
                .connect(host: "127.0.0.1", port: harness.port).get()
            try await channel.writeAndFlush(ByteBuffer(string: "GET /api/big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
            let count = try await promise.futureResult.get()
            #expect((size..<size + 1024).contains(count), "received \(count) of \(size) body bytes")
        }
    }
}

/// Keeps every byte it reads, but reads nothing for `stall` after connecting, so the sender's socket
/// fills up first.
final class StalledCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    var bytes = ByteBuffer()
    let stall: TimeAmount
    let promise: EventLoopPromise<ByteBuffer>
    init(stall: TimeAmount, promise: EventLoopPromise<ByteBuffer>) {
        self.stall = stall
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        _ = channel.setOption(.autoRead, value: false)
        context.eventLoop.scheduleTask(in: stall) {
            _ = channel.setOption(.autoRead, value: true)
            channel.read()
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        bytes.writeBuffer(&buffer)
    }

    func channelInactive(context: ChannelHandlerContext) { promise.succeed(bytes) }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

extension WireTests {
    /// Responses go straight to the client's socket while the channel holds nothing of the
    /// connection, and through the channel once the kernel takes only part of one: thousands of
    /// pipelined responses to a client that reads nothing until the gateway's socket is full arrive
    /// whole, each once, in order.
    @Test func pipelinedResponsesToASlowReaderStayInOrder() async throws {
        let count = 2000, size = 4000
        let responder: StubUpstream.Responder = { request in
            let tag = request.head.uri + ";"
            return .text(tag + String(repeating: "x", count: size - tag.utf8.count))
        }
        try await Harness.with(basicConfig, upstreams: [responder]) { harness in
            let requests = (0..<count).map { index in
                "GET /api/p\(index) HTTP/1.1\r\nHost: t\r\n" + (index == count - 1 ? "Connection: close\r\n" : "") + "\r\n"
            }.joined()
            var received = try await Self.sendStalled(requests, to: harness, stall: .milliseconds(1500))
            var bodies: [String] = []
            while let end = received.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) {
                let head = received.readString(length: end.upperBound - received.readerIndex)!
                guard let length = head.header("content-length").flatMap({ Int($0) }),
                      let body = received.readString(length: length) else { break }
                #expect(head.hasPrefix("HTTP/1.1 200"))
                bodies.append(body)
            }
            #expect(received.readableBytes == 0)
            #expect(bodies.count == count)
            let misplaced = bodies.indices.first { !bodies[$0].hasPrefix("/p\($0);") || bodies[$0].utf8.count != size }
            #expect(misplaced == nil, "response \(misplaced ?? 0): \(misplaced.map { bodies[$0].prefix(80) } ?? "")")
        }
    }

    /// Sends `requests` from a client with a small receive buffer that reads nothing for `stall`, then
    /// everything; returns what it received until the connection closed.
    static func sendStalled(_ requests: String, to harness: Harness, stall: TimeAmount) async throws -> ByteBuffer {
        let eventLoop = harness.group.next()
        let promise = eventLoop.makePromise(of: ByteBuffer.self)
        let channel = try await ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.so_rcvbuf), value: 16 << 10)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(StalledCollector(stall: stall, promise: promise))
                }
            }
            .connect(host: "127.0.0.1", port: harness.port).get()
        try await channel.writeAndFlush(ByteBuffer(string: requests))
        return try await promise.futureResult.get()
    }

    /// Reads `size` body bytes through the gateway with a client that reads nothing for `stall`,
    /// returning how many body bytes it got before the connection ended.
    static func stalledDownload(_ config: String, size: Int, stall: TimeAmount) async throws -> Int {
        try await Harness.with(config, upstreams: [{ _ in StubResponse(body: .stream(count: size, chunked: false)) }]) { harness in
            var received = try await Self.sendStalled("GET /api/big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                                                      to: harness, stall: stall)
            guard let end = received.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) else { return 0 }
            received.moveReaderIndex(to: end.upperBound)
            return received.readableBytes
        }
    }

    /// A client that pauses longer than the upstream's read timeout still gets its whole download:
    /// while its socket is full the upstream is not read, so the wait is the client's (idle_timeout).
    @Test func clientPausingLongerThanTheReadTimeoutGetsTheWholeBody() async throws {
        let size = 8 << 20
        let received = try await Self.stalledDownload(basicConfig, size: size, stall: .milliseconds(1500))   // read: 1s
        #expect(received == size)
    }

    /// A client that reads nothing for idle_timeout while its response waits is cut off.
    @Test func clientThatStopsReadingIsCutAfterTheIdleTimeout() async throws {
        let config = """
            limits: {idle_timeout: 300ms}
            services:
              api: {targets: [{url: "$UPSTREAM0"}], timeouts: {read: 10s}}
            routes:
              - {name: any, match: {paths: ["/api/*"]}, service: api, strip_prefix: true}
            """
        let size = 32 << 20
        let started = ContinuousClock.now
        let received = try await Self.stalledDownload(config, size: size, stall: .milliseconds(2000))
        #expect(received < size)
        #expect(ContinuousClock.now - started < .seconds(8))
    }
}
