import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import TollgateCore
import TollgatePlugins
import TollgateServer
import TollgateTesting

/// `tollgate demo`: the gateway on 127.0.0.1:8080 with an embedded config and two small backends
/// in the same process, plus curl commands to try.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start a demo gateway with two built-in backends.")

    @Option(help: "Gateway port.")
    var port: Int = 8080

    func run() async throws {
        var logger = Logger(label: "tollgate")
        logger.logLevel = .warning
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let users = try await StubUpstream(group: group) { request in
            let id = request.head.uri.split(separator: "?")[0].split(separator: "/").last.map(String.init) ?? ""
            return StubResponse(body: .bytes(#"{"service":"users-v1","id":"\#(id)","name":"Ada"}"#))
        }
        let usersV2 = try await StubUpstream(group: group) { request in
            let id = request.head.uri.split(separator: "?")[0].split(separator: "/").last.map(String.init) ?? ""
            let route = request.head.headers["x-route"].first ?? ""
            return StubResponse(body: .bytes(#"{"service":"users-v2","id":"\#(id)","given_name":"Ada","family_name":"Lovelace","x_route":"\#(route)"}"#))
        }
        let adminPort = port == 0 ? 0 : port - 79   // 8001 beside 8080
        let yaml = DemoConfig.yaml(port: port, usersURL: users.url, usersV2URL: usersV2.url, adminPort: adminPort)
        let snapshot = try ConfigLoader.load(yaml: yaml, environment: [:], registry: BuiltinPlugins.registry)
        let server = try ProxyServer(snapshot: snapshot, group: group, logger: logger)
        print("""
            Tollgate demo on http://127.0.0.1:\(port)  (backends on :\(users.port) and :\(usersV2.port); Ctrl-C to stop)

            Routing and path parameters:
              curl -i http://127.0.0.1:\(port)/v1/users/42
            Versioning (path, header, query, Accept):
              curl -i http://127.0.0.1:\(port)/v2/users/42
              curl -i -H 'API-Version: 2' http://127.0.0.1:\(port)/users/42
              curl -i 'http://127.0.0.1:\(port)/users/42?version=2'
              curl -i -H 'Accept: application/vnd.tollgate.v2+json' http://127.0.0.1:\(port)/users/42
            A version nobody serves (404 listing the versions that exist):
              curl -i http://127.0.0.1:\(port)/v9/users/42
            Deprecated v1 (Deprecation, Sunset, Link headers), headers plugin ($(route), $(path.id)):
              curl -si http://127.0.0.1:\(port)/v1/users/42 | grep -iE 'deprecation|sunset|link|x-'
            Load balancing (round robin over both backends, with retries and passive health checks):
              for i in 1 2 3 4; do curl -s http://127.0.0.1:\(port)/balanced/7; echo; done
            Rate limiting (3 per 10 s per client: the fourth gets 429 with Retry-After and RateLimit headers):
              for i in 1 2 3 4; do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:\(port)/limited/x; done; echo
              curl -si http://127.0.0.1:\(port)/limited/x | grep -iE '^(ratelimit|x-ratelimit|retry-after)'
            Authentication (key-auth) and authorization (acl: admins only; the upstream sees X-Consumer-*):
              curl -i http://127.0.0.1:\(port)/admin/stats
              curl -i -H 'X-API-Key: demo-key-bob-456789' http://127.0.0.1:\(port)/admin/stats
              curl -i -H 'X-API-Key: demo-key-alice-0123' http://127.0.0.1:\(port)/admin/stats
            Response cache (proxy-cache: MISS, then HIT with Age) and compression (br/gzip), then a purge:
              for i in 1 2; do curl -si http://127.0.0.1:\(port)/catalog/7 | grep -iE '^(x-cache|age):'; done
              curl -s -H 'Accept-Encoding: gzip' http://127.0.0.1:\(port)/catalog/7 | gunzip
              curl -s -X POST 'http://127.0.0.1:\(adminPort)/cache/purge?prefix=/catalog/'
            request-termination (maintenance):
              curl -i http://127.0.0.1:\(port)/v1/reports
            No route: curl -i http://127.0.0.1:\(port)/nothing
            Every request above printed a JSON access-log line here; the metrics they made:
              curl -s http://127.0.0.1:\(adminPort)/metrics | grep -E '^tollgate_(requests_total|rate_limit|auth_failures)'

            """)
        let serviceGroup = ServiceGroup(configuration: .init(
            services: [.init(service: server)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await serviceGroup.run()
        try await users.close()
        try await usersV2.close()
        try await group.shutdownGracefully()
    }
}
