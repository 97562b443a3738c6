import CoreMetrics
import Prometheus
import Synchronization
import TollgateCore

/// The metrics of one gateway, rendered in the Prometheus text format at `/metrics`.
///
/// Per-request metrics (counts, latency histograms, bytes, rate-limit and auth outcomes, plugin time)
/// are recorded into a shard owned by the recording thread: each event loop writes its own shard under
/// that shard's lock, which only a scrape ever contends for, so no lock is shared by all loops. Events
/// (reloads, retries, circuit openings, health changes) go through swift-metrics into a
/// swift-prometheus registry. Gauges read at scrape time (connections, target health) come from
/// collectors the server registers.
public final class GatewayMetrics: Sendable {
    /// The metrics of the gateway that owns `state` (one per gateway, kept across reloads).
    public static func of(_ state: PluginStateRegistry) -> GatewayMetrics {
        state.value(for: "observability|metrics") { GatewayMetrics() }
    }

    /// Latency buckets in seconds: 0.5 ms to 30 s.
    public static let latencyBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
    /// Plugin-time buckets in seconds: 5 µs to 1 s.
    public static let pluginBuckets: [Double] = [0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                 0.01, 0.025, 0.1, 1]
    static let latencyBounds = latencyBuckets.map { UInt64($0 * 1e9) }
    static let pluginBounds = pluginBuckets.map { UInt64($0 * 1e9) }

    public let registry = PrometheusCollectorRegistry()
    public let factory: PrometheusMetricsFactory

    private let shards = Mutex<[RequestShard]>([])
    private let slot = ThreadSlot<RequestShard>()
    private let collectors = Mutex<[(id: Int, collect: @Sendable () -> [Sample])]>([])
    private let nextCollector = Atomic<Int>(0)
    /// Consumers given their own label (when per-consumer metrics are enabled), up to the cap.
    private let labelledConsumers = Mutex<Set<String>>([])

    public init(version: String = TollgateVersion.current) {
        self.factory = PrometheusMetricsFactory(registry: registry)
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: "tollgate_build", unitName: "info", helpText: "Tollgate's version; always 1"),
                           labels: [("version", version)]).set(to: 1.0)
    }

    // MARK: events (swift-metrics)

    /// A swift-metrics counter in this gateway's registry.
    public func counter(_ label: String, _ dimensions: [(String, String)] = []) -> CoreMetrics.Counter {
        CoreMetrics.Counter(label: label, dimensions: dimensions, factory: factory)
    }

    public func configReloaded(success: Bool) {
        counter("tollgate_config_reloads_total", [("result", success ? "success" : "failure")]).increment()
    }

    public func retried(service: String) {
        counter("tollgate_upstream_retries_total", [("service", service)]).increment()
    }

    public func circuitOpened(service: String, reason: String) {
        counter("tollgate_circuit_breaker_opens_total", [("service", service), ("reason", reason)]).increment()
    }

    public func targetHealthChanged(service: String, target: String, healthy: Bool) {
        counter("tollgate_upstream_health_changes_total", [("service", service), ("target", target),
                                                           ("to", healthy ? "healthy" : "unhealthy")]).increment()
    }

    // MARK: scrape-time gauges

    /// One sample read at scrape time.
    public struct Sample: Sendable {
        public var name: String
        public var help: String
        public var labels: [(String, String)]
        public var value: Double
        /// `gauge`, or `counter` for totals kept elsewhere (dropped log records).
        public var type: String

        public init(name: String, help: String, labels: [(String, String)] = [], value: Double, type: String = "gauge") {
            self.name = name
            self.help = help
            self.labels = labels
            self.value = value
            self.type = type
        }
    }

    /// Adds a source of gauges read at each scrape; returns an id for `removeCollector`.
    @discardableResult
    public func addCollector(_ collect: @escaping @Sendable () -> [Sample]) -> Int {
        let id = nextCollector.add(1, ordering: .relaxed).newValue
        collectors.withLock { $0.append((id, collect)) }
        return id
    }

    public func removeCollector(_ id: Int) {
        collectors.withLock { $0.removeAll { $0.id == id } }
    }

    // MARK: per-request recording

    /// This thread's shard (made on the thread's first request).
    @inline(__always)
    func shard() -> RequestShard {
        if let shard = slot.get() { return shard }
        let shard = RequestShard()
        shards.withLock { $0.append(shard) }
        slot.set(shard)
        return shard
    }

    /// Records one finished request.
    public func record(_ r: RequestObservation) {
        shard().record(routeKey: r.routeKey, route: r.route, service: r.service, method: r.method, status: r.status,
                       latencyNanos: r.latencyNanos, upstreamNanos: r.upstreamNanos, bytesIn: r.bytesIn, bytesOut: r.bytesOut,
                       rateLimit: r.rateLimit, authFailure: r.authFailure, cache: r.cache, consumer: r.consumer,
                       pluginTimings: r.pluginTimings, pluginNames: r.pluginNames)
    }

    /// Records one finished request straight from the log phase's values (no intermediate struct).
    public func record(context: RequestContext, summary: RequestSummary, consumer: String?, pluginTimings: Bool) {
        let route = context.route
        shard().record(routeKey: route.map(ObjectIdentifier.init), route: route?.name ?? "unmatched", service: route?.serviceName ?? "",
                       method: RequestObservation.methodIndex(summary.head), status: summary.status,
                       latencyNanos: summary.endNanos &- summary.startNanos, upstreamNanos: summary.upstreamNanos,
                       bytesIn: summary.bytesReceived, bytesOut: summary.bytesSent, rateLimit: context.rateLimitOutcome,
                       authFailure: context.authFailure, cache: context.cacheStatus, consumer: consumer,
                       pluginTimings: pluginTimings ? context.pluginTimings : nil,
                       pluginNames: pluginTimings ? route?.chain.names ?? [] : [])
    }

    /// The label a consumer gets: its name while fewer than `cap` consumers have one, else `other`.
    public func consumerLabel(_ name: String, cap: Int) -> String {
        labelledConsumers.withLock { labelled in
            if labelled.contains(name) { return name }
            guard labelled.count < cap else { return "other" }
            labelled.insert(name)
            return name
        }
    }

    // MARK: rendering

    /// The Prometheus text exposition (version 0.0.4).
    public func render() -> String {
        var out: [UInt8] = []
        out.reserveCapacity(16 << 10)
        registry.emit(into: &out)
        var merged = RequestShard.Totals()
        for shard in shards.withLock({ $0 }) { merged.merge(shard.snapshot()) }
        merged.render(into: &out)
        var samples: [Sample] = []
        for collector in collectors.withLock({ $0 }) { samples += collector.collect() }
        var described: Set<String> = []
        for sample in samples.sorted(by: { $0.name < $1.name }) {
            if described.insert(sample.name).inserted {
                PrometheusText.header(sample.name, type: sample.type, help: sample.help, into: &out)
            }
            PrometheusText.sample(sample.name, labels: sample.labels, value: sample.value, into: &out)
        }
        return String(decoding: out, as: UTF8.self)
    }
}
