import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import TollgateCore
import TollgateObservability

/// The data plane: listeners, per-loop state, reloads and graceful drain. Run it as a Service in a
/// ServiceGroup (SIGTERM/SIGINT drain, then exit), or start/stop it directly in tests.
public final class ProxyServer: Service, Sendable {
    public let group: MultiThreadedEventLoopGroup
    private let ownsGroup: Bool
    private let loops: [ObjectIdentifier: LoopContext]
    private let connections = ConnectionRegistry()
    private let channels = NIOLockedValueBox<[any Channel]>([])
    private let current: NIOLockedValueBox<ServerState>
    private let checkers = NIOLockedValueBox<[HealthChecker]>([])
    private let logger: Logger

    /// Builds the server for `snapshot`; `start()` binds the listeners.
    /// Resolves a target's host to its addresses (every A and AAAA record) and their TTL; tests
    /// substitute their own.
    public typealias Resolve = @Sendable (_ host: String, _ port: Int) throws -> Resolution

    private let resolve: Resolve
    /// Health kept across reloads (and DNS refreshes) of this server.
    private let registry = HealthRegistry()
    private let dnsTask = NIOLockedValueBox<Task<Void, Never>?>(nil)
    /// When the last resolution says to resolve again.
    private let nextRefresh = NIOLockedValueBox<Duration?>(nil)
    /// The admin listener and the status listener, when configured.
    private let adminServers = NIOLockedValueBox<[AdminServer]>([])

    public init(snapshot: GatewaySnapshot, group: MultiThreadedEventLoopGroup? = nil, logger: Logger = Logger(label: "tollgate"),
                resolve: @escaping Resolve = { try Resolver.resolve(host: $0, port: $1) }) throws {
        self.resolve = resolve
        let threads = snapshot.config.server.threads > 0 ? snapshot.config.server.threads : System.coreCount
        self.group = group ?? MultiThreadedEventLoopGroup(numberOfThreads: threads)
        self.ownsGroup = group == nil
        self.logger = logger
        let state = try Self.makeState(snapshot, resolve: resolve, registry: registry)
        self.current = NIOLockedValueBox(state)
        var loops: [ObjectIdentifier: LoopContext] = [:]
        for eventLoop in self.group.makeIterator() {
            loops[ObjectIdentifier(eventLoop)] = LoopContext(eventLoop: eventLoop, state: state, logger: logger)
        }
        self.loops = loops
        registerCollectors(GatewayMetrics.of(snapshot.state))
    }

    /// Gauges read at scrape time: open connections, and each target's health and requests in flight.
    private func registerCollectors(_ metrics: GatewayMetrics) {
        metrics.addCollector { [weak self] in
            guard let self else { return [] }
            var samples = [GatewayMetrics.Sample(name: "tollgate_connections_active", help: "Open client connections",
                                                 value: Double(self.connections.count))]
            for (service, targets) in self.health().sorted(by: { $0.key < $1.key }) {
                for target in targets {
                    let labels = [("service", service), ("target", target.target)]
                    samples.append(.init(name: "tollgate_upstream_target_up", help: "1 when the target takes traffic (healthy and not ejected)",
                                         labels: labels, value: target.available ? 1 : 0))
                    samples.append(.init(name: "tollgate_upstream_target_in_flight", help: "Requests in flight to the target",
                                         labels: labels, value: Double(target.inFlight)))
                }
            }
            return samples
        }
    }

    /// Resolves every service's targets once (DNS here, never per request).
    static func makeState(_ snapshot: GatewaySnapshot, resolve: Resolve, registry: HealthRegistry) throws -> ServerState {
        var services: [String: ServiceRuntime] = [:]
        var refreshAfter: Duration?
        let now = NIODeadline.now().uptimeNanoseconds
        for (index, name) in snapshot.services.keys.sorted().enumerated() {
            let config = snapshot.services[name]!
            var targets: [ResolvedTarget] = []
            for target in config.targets {
                // A hostname becomes one target per address; each address is its own pool and health.
                let literal = (try? SocketAddress(ipAddress: target.host, port: target.port)) != nil
                let resolution = try resolve(target.host, target.port)
                let addresses = resolution.addresses
                if !literal {
                    // Resolved again when the records expire, or every dns.refresh when they carry no TTL.
                    let after = max(.seconds(1), resolution.ttl ?? config.dnsRefresh)
                    refreshAfter = min(refreshAfter ?? after, after)
                }
                for address in addresses {
                    let authority = literal ? target.authority : Self.authority(of: address, port: target.port)
                    targets.append(ResolvedTarget(config: target, address: address, authority: authority,
                                                  hostHeader: target.authority, id: TargetIDs.id(for: authority),
                                                  state: registry.target(service: name, authority: authority, now: now)))
                }
            }
            services[name] = ServiceRuntime(config: config, index: index, targets: targets, health: registry.service(name))
        }
        return ServerState(snapshot: snapshot, services: services, refreshAfter: refreshAfter)
    }

    static func authority(of address: SocketAddress, port: Int) -> String {
        let ip = address.ipAddress ?? "?"
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }

    public var snapshot: GatewaySnapshot { current.withLockedValue { $0.snapshot } }

    /// Bound addresses, in the order of `listen`.
    public var localAddresses: [SocketAddress] {
        channels.withLockedValue { $0.compactMap(\.localAddress) }
    }

    public func start() async throws {
        let state = current.withLockedValue { $0 }
        startHealthChecks(state)
        startDNSRefresh(state)
        let snapshot = self.snapshot
        for listener in snapshot.config.listen {
            let tls = try listener.tls.map(Self.tlsContext)
            let channel = try await makeBootstrap(tls: tls).bind(host: listener.host, port: listener.port).get()
            channels.withLockedValue { $0.append(channel) }
            logger.info("listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        }
        if let admin = snapshot.config.admin {
            var addresses = [(admin.host, admin.port, false)]
            if let host = admin.statusHost, let port = admin.statusPort { addresses.append((host, port, true)) }
            for (host, port, statusOnly) in addresses {
                let server = try await AdminServer.start(host: host, port: port, group: group, statusOnly: statusOnly) { [weak self] in
                    self?.snapshot ?? snapshot
                }
                adminServers.withLockedValue { $0.append(server) }
                logger.info("admin listening", metadata: ["address": "\(server.localAddress.map { "\($0)" } ?? "?")"])
            }
        }
    }

    /// Bound admin addresses: the admin listener, then the status listener.
    public var adminAddresses: [SocketAddress] {
        adminServers.withLockedValue { $0.compactMap(\.localAddress) }
    }

    /// The server side of a TLS listener: its certificate chain and key, and, for mutual TLS, the CA
    /// bundle client certificates must chain to.
    static func tlsContext(_ settings: ListenerConfig.TLS) throws -> NIOSSLContext {
        let chain = try NIOSSLCertificate.fromPEMFile(settings.certificateFile).map { NIOSSLCertificateSource.certificate($0) }
        // Loaded as PEM whatever the file is called (NIOSSL takes `.key` files for DER).
        let key = try NIOSSLPrivateKey(file: settings.keyFile, format: .pem)
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        if let ca = settings.clientCAFile {
            configuration.trustRoots = .file(ca)
            switch settings.clientAuth {
            case .none: configuration.certificateVerification = .none
            case .optional: configuration.certificateVerification = .optionalVerification
            case .required: configuration.certificateVerification = .noHostnameVerification
            }
        }
        configuration.applicationProtocols = ["http/1.1"]
        return try NIOSSLContext(configuration: configuration)
    }

    private func makeBootstrap(tls: NIOSSLContext? = nil) -> ServerBootstrap {
        let loops = self.loops
        let connections = self.connections
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                guard let loop = loops[ObjectIdentifier(channel.eventLoop)] else {
                    return channel.eventLoop.makeFailedFuture(ChannelError.inappropriateOperationForState)
                }
                do {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    // One handler: it parses, proxies and writes the bytes itself.
                    try channel.pipeline.syncOperations.addHandler(ProxyHandler(loop: loop, tls: tls != nil))
                    connections.add(channel)
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
    }

    /// Swaps in a new snapshot on every loop. Requests already in flight keep the one they started with.
    public func reload(_ snapshot: GatewaySnapshot) async throws {
        let state = try Self.makeState(snapshot, resolve: resolve, registry: registry)
        try await install(state)
        startDNSRefresh(state)
        logger.info("configuration reloaded", metadata: ["generation": "\(snapshot.generation)"])
    }

    private func install(_ state: ServerState) async throws {
        current.withLockedValue { $0 = state }
        for loop in loops.values {
            try await loop.eventLoop.submit { loop.state = state }.get()
        }
        startHealthChecks(state)
    }

    /// Targets given by hostname are resolved again when their records' TTL runs out (every
    /// `dns.refresh` when the answer has none); a changed set of addresses is swapped in like a reload.
    private func startDNSRefresh(_ state: ServerState) {
        nextRefresh.withLockedValue { $0 = state.refreshAfter }
        let task = state.refreshAfter.map { first in
            Task { [weak self] in
                var delay = first
                while !Task.isCancelled {
                    try? await Task.sleep(for: delay)
                    guard !Task.isCancelled, let self else { return }
                    await self.refreshTargets()
                    guard let next = self.nextRefresh.withLockedValue({ $0 }) else { return }
                    delay = next
                }
            }
        }
        dnsTask.withLockedValue { old in
            old?.cancel()
            old = task
        }
    }

    /// Resolves every target again; swaps in the result when an address set changed.
    public func refreshTargets() async {
        let state = current.withLockedValue { $0 }
        let fresh: ServerState
        do {
            fresh = try Self.makeState(state.snapshot, resolve: resolve, registry: registry)
        } catch {
            logger.warning("DNS refresh failed; keeping the current targets", metadata: ["error": "\(error)"])
            return
        }
        nextRefresh.withLockedValue { $0 = fresh.refreshAfter }
        func addresses(_ state: ServerState) -> [String: [String]] { state.services.mapValues { $0.targets.map(\.authority) } }
        guard addresses(fresh) != addresses(state),
              current.withLockedValue({ $0.snapshot === state.snapshot }) else { return }
        try? await install(fresh)
        logger.info("targets re-resolved", metadata: ["targets": "\(addresses(fresh))"])
    }

    /// Active health checks of the state's services (replacing those of the previous state).
    private func startHealthChecks(_ state: ServerState) {
        var started: [HealthChecker] = []
        for service in state.services.values.sorted(by: { $0.index < $1.index }) {
            guard let config = service.config.activeHealth, !service.targets.isEmpty else { continue }
            let checker = HealthChecker(service: service, config: config, eventLoop: group.next(), logger: logger,
                                        metrics: state.metrics)
            checker.start()
            started.append(checker)
        }
        let old = checkers.withLockedValue { checkers in
            defer { checkers = started }
            return checkers
        }
        for checker in old { checker.stop() }
    }

    /// Every service's targets with their health (active checks, passive ejection) and load: what the
    /// Admin API and metrics show.
    public func health() -> [String: [TargetHealth]] {
        let state = current.withLockedValue { $0 }
        let now = NIODeadline.now().uptimeNanoseconds
        return state.services.mapValues { $0.health(now: now) }
    }

    /// Stops accepting, lets in-flight requests finish for up to `timeout`, then closes what is left.
    public func drain(timeout: Duration) async {
        for checker in checkers.withLockedValue({ $0 }) { checker.stop() }
        dnsTask.withLockedValue { $0?.cancel() }
        let listeners = channels.withLockedValue { $0 }
        for channel in listeners { try? await channel.close() }
        for admin in adminServers.withLockedValue({ $0 }) { await admin.close() }
        connections.broadcastDrain()
        let deadline = ContinuousClock.now + timeout
        while connections.count > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let left = connections.count
        if left > 0 { logger.warning("drain timeout: closing connections", metadata: ["open": "\(left)"]) }
        connections.closeAll()
        for loop in loops.values {
            try? await loop.eventLoop.submit {
                loop.pool.closeIdle()
                AccessLogs.shared.flushCurrentThread()   // lines still batched on this loop
            }.get()
        }
    }

    public func shutdown() async throws {
        if ownsGroup { try await group.shutdownGracefully() }
    }

    /// Service: runs until graceful shutdown is requested, then drains.
    public func run() async throws {
        try await start()
        try? await gracefulShutdown()
        await drain(timeout: snapshot.config.server.drainTimeout)
        try await shutdown()
    }

    /// Open client connections, for drain and tests.
    public var openConnections: Int { connections.count }
}

/// Client connections, so a drain can reach them. Touched on connect and close only, never per request.
final class ConnectionRegistry: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var draining = false
    }

    private let state = NIOLockedValueBox(State())

    /// Tracks `channel` until it closes, whichever handler it ends with (a WebSocket relay, say). A
    /// connection accepted while the listeners were closing (after the drain was broadcast) is told
    /// to drain as well: else it would hold the drain until its timeout.
    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        let draining = state.withLockedValue { state -> Bool in
            state.channels[id] = channel
            return state.draining
        }
        channel.closeFuture.whenComplete { [state] _ in
            state.withLockedValue { _ = $0.channels.removeValue(forKey: id) }
        }
        if draining {
            // After the initializer has finished adding the handlers.
            channel.eventLoop.execute { channel.pipeline.fireUserInboundEventTriggered(DrainEvent()) }
        }
    }

    var count: Int { state.withLockedValue { $0.channels.count } }

    func broadcastDrain() {
        let channels = state.withLockedValue { state -> [any Channel] in
            state.draining = true
            return Array(state.channels.values)
        }
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(DrainEvent())
        }
    }

    func closeAll() {
        for channel in state.withLockedValue({ Array($0.channels.values) }) { channel.close(promise: nil) }
    }
}
