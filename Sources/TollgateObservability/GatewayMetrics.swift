#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CoreMetrics
import NIOConcurrencyHelpers
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
                       pluginTimings: pluginTimings ? context.pluginTimings : nil, pluginNames: route?.chain.names ?? [])
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

/// What the log phase tells the metrics about one request.
public struct RequestObservation: Sendable {
    /// The matched route's identity (nil: no route matched): series are found by it, not by hashing
    /// names. `route` and `service` are its labels.
    public var routeKey: ObjectIdentifier?
    public var route: String
    public var service: String
    /// One of `methods` (a client cannot mint label values).
    public var method: UInt8
    public var status: Int
    public var latencyNanos: UInt64
    public var upstreamNanos: UInt64?
    public var bytesIn: Int
    public var bytesOut: Int
    public var rateLimit: String?
    public var authFailure: String?
    public var cache: String?
    public var consumer: String?
    /// Nanoseconds per plugin of the route's chain, and the plugins' names, when plugin timing is on.
    public var pluginTimings: [UInt64]?
    public var pluginNames: [String] = []

    public init(routeKey: ObjectIdentifier? = nil, route: String, service: String, method: UInt8, status: Int,
                latencyNanos: UInt64, upstreamNanos: UInt64?, bytesIn: Int, bytesOut: Int, rateLimit: String? = nil,
                authFailure: String? = nil, cache: String? = nil, consumer: String? = nil, pluginTimings: [UInt64]? = nil,
                pluginNames: [String] = []) {
        self.routeKey = routeKey
        self.route = route
        self.service = service
        self.method = method
        self.status = status
        self.latencyNanos = latencyNanos
        self.upstreamNanos = upstreamNanos
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.rateLimit = rateLimit
        self.authFailure = authFailure
        self.cache = cache
        self.consumer = consumer
        self.pluginTimings = pluginTimings
        self.pluginNames = pluginNames
    }

    /// The method labels; methods outside the standard ones are counted as `OTHER`.
    public static let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "OTHER"]

    /// The label index of a request's method, from its head (no string for the common methods).
    public static func methodIndex(_ head: RawHead) -> UInt8 {
        guard let method = head.method else { return 9 }
        switch method {
        case .get: return 0
        case .post: return 1
        case .put: return 2
        case .delete: return 3
        case .patch: return 4
        case .head: return 5
        case .options: return 6
        case .connect: return 7
        case .trace: return 8
        default: return 9
        }
    }

    public static func methodIndex(_ name: String) -> UInt8 {
        UInt8(methods.firstIndex(of: name) ?? 9)
    }
}

/// A histogram's bucket counts (not cumulative), sum and count.
struct Histogram {
    var buckets: [UInt64]
    var sumNanos: UInt64 = 0
    var count: UInt64 = 0

    init(bounds: Int) { buckets = Array(repeating: 0, count: bounds + 1) }

    @inline(__always)
    mutating func observe(_ nanos: UInt64, bounds: [UInt64]) {
        var index = 0
        while index < bounds.count && nanos > bounds[index] { index += 1 }
        buckets[index] &+= 1
        sumNanos &+= nanos
        count &+= 1
    }

    mutating func merge(_ other: Histogram) {
        for index in buckets.indices { buckets[index] &+= other.buckets[index] }
        sumNanos &+= other.sumNanos
        count &+= other.count
    }
}

/// One thread's per-request metrics. Series are kept per route (found by the route's identity, the
/// last one remembered), per method and status class in a flat array: recording hashes nothing in
/// the common case.
final class RequestShard: @unchecked Sendable {
    // @unchecked: every member is only touched under `lock`.
    struct Series {
        var requests: UInt64 = 0
        var latency = Histogram(bounds: GatewayMetrics.latencyBounds.count)
        var upstream = Histogram(bounds: GatewayMetrics.latencyBounds.count)
        var bytesIn: UInt64 = 0
        var bytesOut: UInt64 = 0

        @inline(__always)
        mutating func record(latencyNanos: UInt64, upstreamNanos: UInt64?, bytesIn received: Int, bytesOut sent: Int) {
            requests &+= 1
            latency.observe(latencyNanos, bounds: GatewayMetrics.latencyBounds)
            if let upstreamNanos { upstream.observe(upstreamNanos, bounds: GatewayMetrics.latencyBounds) }
            bytesIn &+= UInt64(received)
            bytesOut &+= UInt64(sent)
        }

        mutating func merge(_ other: Series) {
            requests &+= other.requests
            latency.merge(other.latency)
            upstream.merge(other.upstream)
            bytesIn &+= other.bytesIn
            bytesOut &+= other.bytesOut
        }
    }

    /// One route's series on this thread.
    final class RouteSeries {
        let route: String
        let service: String
        /// By method index × 5 + status class - 1.
        var series: [Series?] = Array(repeating: nil, count: RequestObservation.methods.count * 5)
        /// Short lists, searched linearly (a handful of static outcome strings).
        var rateLimit: [(String, UInt64)] = []
        var authFailures: [(String, UInt64)] = []
        var cache: [(String, UInt64)] = []
        var pluginNames: [String] = []
        var plugins: [Histogram] = []

        init(route: String, service: String) {
            self.route = route
            self.service = service
        }
    }

    private let lock = NIOLock()
    private var routes: [ObjectIdentifier: RouteSeries] = [:]
    private var unmatched: [String: RouteSeries] = [:]
    private var lastKey: ObjectIdentifier?
    private var last: RouteSeries?
    private var consumers: [String: UInt64] = [:]

    private func routeSeries(_ routeKey: ObjectIdentifier?, route: String, service: String) -> RouteSeries {
        if let key = routeKey {
            if key == lastKey, let last, last.route == route, last.service == service { return last }
            if let found = routes[key], found.route == route, found.service == service {
                lastKey = key
                last = found
                return found
            }
            let made = RouteSeries(route: route, service: service)
            routes[key] = made
            lastKey = key
            last = made
            return made
        }
        if let found = unmatched[route] { return found }
        let made = RouteSeries(route: route, service: service)
        unmatched[route] = made
        return made
    }

    @inline(__always)
    private static func count(_ value: String, in list: inout [(String, UInt64)]) {
        for index in list.indices where list[index].0 == value {
            list[index].1 &+= 1
            return
        }
        list.append((value, 1))
    }

    func record(routeKey: ObjectIdentifier?, route: String, service: String, method: UInt8, status: Int, latencyNanos: UInt64,
                upstreamNanos: UInt64?, bytesIn: Int, bytesOut: Int, rateLimit: String?, authFailure: String?, cache: String?,
                consumer: String?, pluginTimings: [UInt64]?, pluginNames: [String]) {
        let slot = Int(min(method, 9)) * 5 + max(1, min(5, status / 100)) - 1
        lock.lock()
        defer { lock.unlock() }
        let series = routeSeries(routeKey, route: route, service: service)
        if series.series[slot] == nil { series.series[slot] = Series() }
        series.series[slot]!.record(latencyNanos: latencyNanos, upstreamNanos: upstreamNanos, bytesIn: bytesIn, bytesOut: bytesOut)
        if let outcome = rateLimit { Self.count(outcome, in: &series.rateLimit) }
        if let reason = authFailure { Self.count(reason, in: &series.authFailures) }
        if let cache { Self.count(cache, in: &series.cache) }
        if let consumer { consumers[consumer, default: 0] &+= 1 }
        if let timings = pluginTimings {
            if series.pluginNames != pluginNames {
                series.pluginNames = pluginNames
                series.plugins = pluginNames.map { _ in Histogram(bounds: GatewayMetrics.pluginBounds.count) }
            }
            for (index, nanos) in timings.enumerated() where index < series.plugins.count {
                series.plugins[index].observe(nanos, bounds: GatewayMetrics.pluginBounds)
            }
        }
    }

    /// This shard's counts, by label values.
    func snapshot() -> Totals {
        lock.withLock {
            var totals = Totals()
            for series in routes.values.map({ $0 }) + unmatched.values.map({ $0 }) {
                for (slot, value) in series.series.enumerated() {
                    guard let value else { continue }
                    let key = SeriesKey(route: series.route, service: series.service, method: UInt8(slot / 5), statusClass: slot % 5 + 1)
                    totals.series[key, default: Series()].merge(value)
                }
                for (outcome, count) in series.rateLimit { totals.rateLimit[PairKey(route: series.route, value: outcome), default: 0] &+= count }
                for (reason, count) in series.authFailures { totals.authFailures[PairKey(route: series.route, value: reason), default: 0] &+= count }
                for (status, count) in series.cache { totals.cache[PairKey(route: series.route, value: status), default: 0] &+= count }
                for (name, histogram) in zip(series.pluginNames, series.plugins) {
                    totals.plugins[name, default: Histogram(bounds: GatewayMetrics.pluginBounds.count)].merge(histogram)
                }
            }
            totals.consumers = consumers
            return totals
        }
    }

    struct SeriesKey: Hashable {
        var route: String
        var service: String
        var method: UInt8
        var statusClass: Int
    }

    struct PairKey: Hashable {
        var route: String
        var value: String
    }

    /// Counts by label values, merged over shards at scrape time.
    struct Totals {
        var series: [SeriesKey: Series] = [:]
        var rateLimit: [PairKey: UInt64] = [:]
        var authFailures: [PairKey: UInt64] = [:]
        var cache: [PairKey: UInt64] = [:]
        var consumers: [String: UInt64] = [:]
        var plugins: [String: Histogram] = [:]

        mutating func merge(_ other: Totals) {
            for (key, value) in other.series { series[key, default: Series()].merge(value) }
            rateLimit.merge(other.rateLimit, uniquingKeysWith: &+)
            authFailures.merge(other.authFailures, uniquingKeysWith: &+)
            cache.merge(other.cache, uniquingKeysWith: &+)
            consumers.merge(other.consumers, uniquingKeysWith: &+)
            for (name, histogram) in other.plugins {
                plugins[name, default: Histogram(bounds: GatewayMetrics.pluginBounds.count)].merge(histogram)
            }
        }
    }
}

extension RequestShard.Totals {
    func render(into out: inout [UInt8]) {
        let keys = series.keys.sorted { ($0.route, $0.service, $0.method, $0.statusClass) < ($1.route, $1.service, $1.method, $1.statusClass) }
        func labels(_ key: RequestShard.SeriesKey) -> [(String, String)] {
            [("route", key.route), ("service", key.service), ("method", RequestObservation.methods[Int(key.method)]),
             ("status_class", "\(key.statusClass)xx")]
        }
        PrometheusText.header("tollgate_requests_total", type: "counter", help: "Requests by route, service, method and status class", into: &out)
        for key in keys { PrometheusText.sample("tollgate_requests_total", labels: labels(key), value: Double(series[key]!.requests), into: &out) }
        PrometheusText.header("tollgate_request_duration_seconds", type: "histogram", help: "Time from the request head to the end of the response", into: &out)
        for key in keys {
            PrometheusText.histogram("tollgate_request_duration_seconds", labels: labels(key), series[key]!.latency,
                                     bounds: GatewayMetrics.latencyBuckets, into: &out)
        }
        PrometheusText.header("tollgate_upstream_duration_seconds", type: "histogram", help: "Time spent on upstream attempts (connect to last byte)", into: &out)
        for key in keys where series[key]!.upstream.count > 0 {
            PrometheusText.histogram("tollgate_upstream_duration_seconds", labels: labels(key), series[key]!.upstream,
                                     bounds: GatewayMetrics.latencyBuckets, into: &out)
        }
        PrometheusText.header("tollgate_request_bytes_total", type: "counter", help: "Request body bytes received", into: &out)
        for key in keys { PrometheusText.sample("tollgate_request_bytes_total", labels: labels(key), value: Double(series[key]!.bytesIn), into: &out) }
        PrometheusText.header("tollgate_response_bytes_total", type: "counter", help: "Response body bytes sent", into: &out)
        for key in keys { PrometheusText.sample("tollgate_response_bytes_total", labels: labels(key), value: Double(series[key]!.bytesOut), into: &out) }

        func pairs(_ name: String, _ help: String, _ label: String, _ counts: [RequestShard.PairKey: UInt64]) {
            PrometheusText.header(name, type: "counter", help: help, into: &out)
            for key in counts.keys.sorted(by: { ($0.route, $0.value) < ($1.route, $1.value) }) {
                PrometheusText.sample(name, labels: [("route", key.route), (label, key.value)], value: Double(counts[key]!), into: &out)
            }
        }
        pairs("tollgate_rate_limit_decisions_total", "Rate-limit decisions by outcome (allowed, rejected, delayed, fail_open, unavailable)", "outcome", rateLimit)
        pairs("tollgate_auth_failures_total", "Requests refused by authentication or authorization, by reason", "reason", authFailures)
        pairs("tollgate_cache_requests_total", "Cache lookups by result (HIT, MISS, STALE, BYPASS, REVALIDATED)", "cache_status", cache)
        if !consumers.isEmpty {
            PrometheusText.header("tollgate_consumer_requests_total", type: "counter", help: "Requests per consumer (capped; the rest are 'other')", into: &out)
            for name in consumers.keys.sorted() {
                PrometheusText.sample("tollgate_consumer_requests_total", labels: [("consumer", name)], value: Double(consumers[name]!), into: &out)
            }
        }
        if !plugins.isEmpty {
            PrometheusText.header("tollgate_plugin_duration_seconds", type: "histogram", help: "Time each plugin spends per request (request and response hooks)", into: &out)
            for name in plugins.keys.sorted() {
                PrometheusText.histogram("tollgate_plugin_duration_seconds", labels: [("plugin", name)], plugins[name]!,
                                         bounds: GatewayMetrics.pluginBuckets, into: &out)
            }
        }
    }
}

/// Writing the Prometheus text format.
enum PrometheusText {
    static func header(_ name: String, type: String, help: String, into out: inout [UInt8]) {
        out.append(contentsOf: "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n".utf8)
    }

    static func sample(_ name: String, labels: [(String, String)], value: Double, into out: inout [UInt8]) {
        out.append(contentsOf: name.utf8)
        if !labels.isEmpty {
            out.append(UInt8(ascii: "{"))
            for (index, (label, text)) in labels.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                out.append(contentsOf: label.utf8)
                out.append(contentsOf: "=\"".utf8)
                for byte in text.utf8 {
                    switch byte {
                    case UInt8(ascii: "\\"): out.append(contentsOf: "\\\\".utf8)
                    case UInt8(ascii: "\""): out.append(contentsOf: "\\\"".utf8)
                    case 0x0A: out.append(contentsOf: "\\n".utf8)
                    default: out.append(byte)
                    }
                }
                out.append(UInt8(ascii: "\""))
            }
            out.append(UInt8(ascii: "}"))
        }
        out.append(0x20)
        if value == value.rounded(), abs(value) < 1e15 {
            Bytes.integer(Int64(value), into: &out)
        } else {
            out.append(contentsOf: "\(value)".utf8)
        }
        out.append(0x0A)
    }

    static func histogram(_ name: String, labels: [(String, String)], _ histogram: Histogram, bounds: [Double], into out: inout [UInt8]) {
        var cumulative: UInt64 = 0
        for (index, bound) in bounds.enumerated() {
            cumulative &+= histogram.buckets[index]
            sample(name + "_bucket", labels: labels + [("le", "\(bound)")], value: Double(cumulative), into: &out)
        }
        cumulative &+= histogram.buckets[bounds.count]
        sample(name + "_bucket", labels: labels + [("le", "+Inf")], value: Double(cumulative), into: &out)
        sample(name + "_sum", labels: labels, value: Double(histogram.sumNanos) / 1e9, into: &out)
        sample(name + "_count", labels: labels, value: Double(histogram.count), into: &out)
    }
}
