import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore
import TollgateObservability

/// The admin listener (`admin.address`, loopback by default): `/metrics` in the Prometheus text
/// format and `/health`; and, when `admin.status_address` is set, a second listener with only those
/// two, for scrapers that must not reach the admin API. Runs on the gateway's event loops but shares
/// nothing with the request path except the metrics it reads.
public final class AdminServer: Sendable {
    private let channel: any Channel

    /// What the admin listener answers with: the current snapshot's metrics.
    public typealias Source = @Sendable () -> GatewaySnapshot

    public static func start(host: String, port: Int, group: any EventLoopGroup, snapshot: @escaping Source) async throws -> AdminServer {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(snapshot: snapshot))
                }
            }
            .bind(host: host, port: port).get()
        return AdminServer(channel: channel)
    }

    private init(channel: any Channel) { self.channel = channel }

    public var localAddress: SocketAddress? { channel.localAddress }

    public func close() async {
        try? await channel.close()
    }
}

final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let snapshot: AdminServer.Source
    private var head: HTTPRequestHead?

    init(snapshot: @escaping AdminServer.Source) { self.snapshot = snapshot }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let (status, type, body) = answer(head)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: type)
            headers.add(name: "Content-Length", value: String(body.utf8.count))
            if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            if head.method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            }
            let keepAlive = head.isKeepAlive
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { channel.close(promise: nil) }
            }
        }
    }

    func answer(_ head: HTTPRequestHead) -> (HTTPResponseStatus, String, String) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard head.method == .GET || head.method == .HEAD else {
            return (.methodNotAllowed, "application/json", #"{"error":"method not allowed"}"#)
        }
        switch path {
        case "/metrics":
            return (.ok, "text/plain; version=0.0.4; charset=utf-8", GatewayMetrics.of(snapshot().state).render())
        case "/health":
            return (.ok, "application/json", #"{"status":"ok","generation":\#(snapshot().generation)}"#)
        default:
            return (.notFound, "application/json", #"{"error":"not found","paths":["/metrics","/health"]}"#)
        }
    }
}

@available(*, unavailable)
extension AdminHandler: Sendable {}
