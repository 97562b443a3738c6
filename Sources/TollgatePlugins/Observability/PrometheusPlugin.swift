import TollgateCore
import TollgateObservability

/// `prometheus`: counts every request into the gateway's metrics (served at `/metrics` on the admin
/// listener): requests, latency and upstream-latency histograms, bytes, rate-limit and auth outcomes,
/// cache results, and each plugin's time. Recording takes only the recording thread's own shard lock.
public struct PrometheusPlugin: GatewayPlugin {
    public static let name = "prometheus"
    public static let phase = PluginPhase.log
    public static let priority = 20
    public static let changesRequest = false
    public static let responseHookOnlyAdds = true
    public var readsRequestFields: Bool { false }
    public var hasRequestHook: Bool { false }
    public var hasResponseHook: Bool { false }
    public var wantsPluginTimings: Bool { configuration.pluginTiming }

    public struct Configuration: PluginConfiguration {
        /// Time every plugin of a route (a histogram per plugin).
        public var pluginTiming = true
        /// A `consumer` label on a per-consumer request counter, for at most `maxConsumers` consumers.
        public var perConsumer = false
        public var maxConsumers = 100
        public var state = PluginStateRegistry.shared

        public init(from config: ConfigNode) {
            config.expectMapping(keys: ["plugin_timing", "per_consumer", "max_consumers"])
            state = config.diagnostics.state
            if let value = config["plugin_timing"].bool() { pluginTiming = value }
            if let value = config["per_consumer"].bool() { perConsumer = value }
            if let value = config["max_consumers"].int(range: 1...10_000) { maxConsumers = value }
        }
    }

    let configuration: Configuration
    public let metrics: GatewayMetrics

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.metrics = GatewayMetrics.of(configuration.state)
    }

    public func onLog(context: RequestContext, summary: RequestSummary) {
        let consumer = configuration.perConsumer ? context.consumer.map { metrics.consumerLabel($0.name, cap: configuration.maxConsumers) } : nil
        metrics.record(context: context, summary: summary, consumer: consumer, pluginTimings: configuration.pluginTiming)
    }
}
