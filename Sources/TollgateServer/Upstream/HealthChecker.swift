import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TollgateCore
import TollgateObservability

/// Active health checks of one service: every `interval`, each target gets an HTTP GET (healthy when
/// the status is one of `statuses`) or a TCP connect, within `timeout`. The verdicts go through an
/// `ActiveHealthTracker` per target; a change flips the target's shared `healthy` flag, which every
/// loop reads when it picks, and is logged.
final class HealthChecker: Sendable {
    private let service: ServiceRuntime
    private let config: ActiveHealthConfig
    private let eventLoop: any EventLoop
    private let logger: Logger
    private let metrics: GatewayMetrics?
    private let trackers: NIOLockedValueBox<[ActiveHealthTracker]>
    private let tasks = NIOLockedValueBox<[RepeatedTask]>([])

    init(service: ServiceRuntime, config: ActiveHealthConfig, eventLoop: any EventLoop, logger: Logger,
         metrics: GatewayMetrics? = nil) {
        self.service = service
        self.metrics = metrics
        self.config = config
        self.eventLoop = eventLoop
        self.logger = logger
        // A reload keeps each target's current verdict.
        self.trackers = NIOLockedValueBox(service.targets.map { target in
            var tracker = ActiveHealthTracker(healthyThreshold: config.healthyThreshold, unhealthyThreshold: config.unhealthyThreshold)
            if !target.state.healthy.load(ordering: .relaxed) { tracker.startUnhealthy() }
            return tracker
        })
    }

    func start() {
        let interval = TimeAmount.nanoseconds(config.interval.nanoseconds)
        var started: [RepeatedTask] = []
        for index in service.targets.indices {
            started.append(eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: interval) { [self] _ in
                self.probe(index)
            })
        }
        tasks.withLockedValue { $0 = started }
    }

    func stop() {
        for task in tasks.withLockedValue({ $0 }) { task.cancel() }
        tasks.withLockedValue { $0 = [] }
    }

    private func probe(_ index: Int) {
        let target = service.targets[index]
        let timeout = TimeAmount.nanoseconds(config.timeout.nanoseconds)
        let promise = eventLoop.makePromise(of: Bool.self)
        let request: ByteBuffer? = config.kind == .http
            ? ByteBuffer(string: "GET \(config.path) HTTP/1.1\r\nHost: \(target.hostHeader)\r\nUser-Agent: tollgate-health-check\r\nConnection: close\r\n\r\n")
            : nil
        let statuses = config.statuses
        let connect = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let request {
                        try channel.pipeline.syncOperations.addHandler(ProbeHandler(request: request, statuses: statuses, promise: promise))
                    }
                }
            }
            .connect(to: target.address)
        let deadline = eventLoop.scheduleTask(in: timeout) { promise.fail(ChannelError.connectTimeout(timeout)) }
        connect.whenComplete { result in
            switch result {
            case .success(let channel):
                if request == nil {
                    promise.succeed(true)
                    channel.close(promise: nil)
                } else {
                    promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
                }
            case .failure(let error):
                promise.fail(error)
            }
        }
        promise.futureResult.whenComplete { [self] result in
            deadline.cancel()
            let succeeded = (try? result.get()) ?? false
            record(index, succeeded: succeeded)
        }
    }

    private func record(_ index: Int, succeeded: Bool) {
        let target = service.targets[index]
        let verdict = trackers.withLockedValue { $0[index].probe(succeeded: succeeded) }
        if succeeded && target.state.healthy.load(ordering: .relaxed) && verdict == nil
            && service.activeCheckPassed(index, now: NIODeadline.now().uptimeNanoseconds) {
            logger.info("ejected target back after a passed health check", metadata: [
                "service": "\(service.config.name)", "target": "\(target.authority)",
            ])
        }
        guard let healthy = verdict else { return }
        target.state.healthy.store(healthy, ordering: .relaxed)
        if healthy {
            let now = NIODeadline.now().uptimeNanoseconds
            _ = service.activeCheckPassed(index, now: now)
            target.state.since.store(now, ordering: .relaxed)
            service.health.recompute(service.targets)
        } else {
            service.health.markDegraded(until: .max)
        }
        let metadata: Logger.Metadata = ["service": "\(service.config.name)", "target": "\(target.authority)"]
        metrics?.targetHealthChanged(service: service.config.name, target: target.authority, healthy: healthy)
        if healthy {
            logger.info("target healthy again (active health checks)", metadata: metadata)
        } else {
            logger.warning("target unhealthy (active health checks)", metadata: metadata)
        }
    }
}

/// Writes the probe request and judges the status line of the answer.
private final class ProbeHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let request: ByteBuffer
    private let statuses: Set<Int>
    private let promise: EventLoopPromise<Bool>
    private var received = ByteBuffer()

    init(request: ByteBuffer, statuses: Set<Int>, promise: EventLoopPromise<Bool>) {
        self.request = request
        self.statuses = statuses
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        received.writeBuffer(&bytes)
        // "HTTP/1.x NNN"
        guard received.readableBytes >= 12, let line = received.getString(at: received.readerIndex, length: 12) else { return }
        let status = line.hasPrefix("HTTP/1.") ? Int(line.dropFirst(9).prefix(3)) : nil
        promise.succeed(status.map { statuses.contains($0) } ?? false)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.succeed(false)   // no-op when already completed
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.succeed(false)
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension ProbeHandler: Sendable {}
