import NIOConcurrencyHelpers
import TollgateCore

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
