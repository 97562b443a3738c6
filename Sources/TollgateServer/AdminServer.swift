import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore
import TollgateObservability
import TollgatePlugins
import Foundation

/// The admin listener (`admin.address`, loopback by default): `/metrics` in the Prometheus text
/// format, `/health`, and `POST /cache/purge?tag=|url=|prefix=|key=`; and, when
/// `admin.status_address` is set, a second listener with only `/metrics` and `/health`, for scrapers
/// that must not reach the admin API. Runs on the gateway's event loops but shares
/// nothing with the request path except the metrics it reads.
public final class AdminServer: Sendable {
    private let channel: any Channel

    /// What the admin listener answers with: the current snapshot's metrics.
    public typealias Source = @Sendable () -> GatewaySnapshot

    public static func start(host: String, port: Int, group: any EventLoopGroup, statusOnly: Bool = false,
                             snapshot: @escaping Source) async throws -> AdminServer {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(snapshot: snapshot, statusOnly: statusOnly))
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
    let statusOnly: Bool
    private var head: HTTPRequestHead?

    init(snapshot: @escaping AdminServer.Source, statusOnly: Bool) {
        self.snapshot = snapshot
        self.statusOnly = statusOnly
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            if head.method == .POST, !statusOnly, head.uri.hasPrefix("/cache/purge") {
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                purge(head, on: context.eventLoop).whenComplete { result in
                    let (handler, context) = bound.value
                    switch result {
                    case .success(let answer): handler.respond(head, answer, context: context)
                    case .failure(let error):
                        handler.respond(head, (.serviceUnavailable, "application/json",
                                               #"{"error":"purge failed: "# + Self.escaped("\(error)") + #""}"#), context: context)
                    }
                }
                return
            }
            respond(head, answer(head), context: context)
        }
    }

    private func respond(_ head: HTTPRequestHead, _ answer: (HTTPResponseStatus, String, String), context: ChannelHandlerContext) {
        let (status, type, body) = answer
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

    /// `POST /cache/purge` with one of `tag`, `url` (a path and query), `prefix` or `key`.
    private func purge(_ head: HTTPRequestHead, on loop: any EventLoop) -> EventLoopFuture<(HTTPResponseStatus, String, String)> {
        let query = head.uri.split(separator: "?", maxSplits: 1).dropFirst().first.map(String.init) ?? ""
        var targets: [PurgeTarget] = []
        for item in query.split(separator: "&") {
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let value = String(parts[1]).removingPercentEncoding, !value.isEmpty else { continue }
            switch parts[0] {
            case "tag": targets.append(.tag(value))
            case "url": targets.append(.url(value))
            case "prefix": targets.append(.prefix(value))
            case "key": targets.append(.key(value))
            default: break
            }
        }
        guard targets.count == 1, let target = targets.first else {
            return loop.makeSucceededFuture((.badRequest, "application/json",
                                             #"{"error":"give exactly one of tag, url, prefix or key"}"#))
        }
        let state = snapshot().state
        guard CachePurge.cacheCount(state: state) > 0 else {
            return loop.makeSucceededFuture((.notFound, "application/json", #"{"error":"no proxy-cache is configured"}"#))
        }
        return CachePurge.purge(target, state: state, on: loop).map { count in
            (.ok, "application/json", #"{"purged":\#(count)}"#)
        }
    }

    static func escaped(_ text: String) -> String {
        String(String(JSONText.quote(text).dropFirst()).dropLast())
    }

    func answer(_ head: HTTPRequestHead) -> (HTTPResponseStatus, String, String) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        if path == "/cache/purge" && !statusOnly {
            return (.methodNotAllowed, "application/json", #"{"error":"method not allowed; use POST"}"#)
        }
        guard head.method == .GET || head.method == .HEAD else {
            return (.methodNotAllowed, "application/json", #"{"error":"method not allowed"}"#)
        }
        switch path {
        case "/metrics":
            return (.ok, "text/plain; version=0.0.4; charset=utf-8", GatewayMetrics.of(snapshot().state).render())
        case "/health":
            return (.ok, "application/json", #"{"status":"ok","generation":\#(snapshot().generation)}"#)
        default:
            let paths = statusOnly ? #"["/metrics","/health"]"# : #"["/metrics","/health","/cache/purge"]"#
            return (.notFound, "application/json", #"{"error":"not found","paths":\#(paths)}"#)
        }
    }
}

@available(*, unavailable)
extension AdminHandler: Sendable {}
