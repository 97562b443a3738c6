import HTTPTypes
import TollgateCore
import TollgateObservability

/// `access-log`: one line per request (JSON with selectable fields, or the combined log format) to
/// standard output, a file (reopened on SIGUSR1), or an HTTP receiver in batches (Elasticsearch
/// `_bulk`, Logstash). Runs in the log phase: the response is already on its way; the record is
/// queued and written off the event loop.
public struct AccessLogPlugin: GatewayPlugin {
    public static let name = "access-log"
    public static let phase = PluginPhase.log
    public static let priority = 10
    public static let changesRequest = false
    public static let responseHookOnlyAdds = true
    public var readsRequestFields: Bool { false }
    public var hasRequestHook: Bool { false }
    public var hasResponseHook: Bool { false }
    public var wantsPluginTimings: Bool { configuration.format.includesPluginTimings }

    public enum Sink: Sendable, Equatable {
        case stdout
        case file(String)
        case http(HTTPLogShipper.Settings)
    }

    public struct Configuration: PluginConfiguration {
        public var format = AccessLogFormat()
        public var sink = Sink.stdout
        /// Bytes of lines waiting for a file or standard output (the oldest are dropped beyond it).
        public var buffer = 64 << 20
        public var state = PluginStateRegistry.shared

        public init(from config: ConfigNode) {
            config.expectMapping(keys: ["format", "fields", "redact_query", "sink", "buffer"])
            state = config.diagnostics.state
            if let text = config["format"].string() {
                if let style = AccessLogFormat.Style(rawValue: text) { format.style = style } else { config["format"].error("expected json or combined") }
            }
            if let names = config["fields"].strings() {
                var fields: [AccessLogFormat.Field] = []
                for (index, name) in names.enumerated() {
                    if let field = AccessLogFormat.Field(rawValue: name) {
                        fields.append(field)
                    } else {
                        config["fields"].elements()?[index].error("unknown field '\(name)' (known: \(AccessLogFormat.Field.allCases.map(\.rawValue).joined(separator: ", ")))")
                    }
                }
                if fields.isEmpty && names.isEmpty { config["fields"].error("must name at least one field") }
                format.fields = fields
                if format.style == .combined { config["fields"].error("fields apply to format json only") }
            }
            if let names = config["redact_query"].strings() { format.redactedParameters = Set(names.map { $0.lowercased() }) }
            if let size = config["buffer"].size() {
                if size < 64 << 10 { config["buffer"].error("must be at least 64KB") } else { buffer = size }
            }
            let sinkNode = config["sink"]
            if case .scalar = sinkNode.node, sinkNode.isPresent {
                if sinkNode.string() == "stdout" { sink = .stdout } else { sinkNode.error("expected stdout, {file: PATH} or {http: {url: ...}}") }
            } else if sinkNode.isPresent, sinkNode.expectMapping(keys: ["stdout", "file", "http"]) {
                let given = ["stdout", "file", "http"].filter { sinkNode[$0].isPresent }
                if given.count != 1 { sinkNode.error("name exactly one of stdout, file or http") }
                if let path = sinkNode["file"].string() {
                    if path.isEmpty { sinkNode["file"].error("must not be empty") }
                    sink = .file(path)
                } else if sinkNode["http"].isPresent {
                    if let settings = Self.shipping(sinkNode["http"]) { sink = .http(settings) }
                }
            }
        }

        static func shipping(_ node: ConfigNode) -> HTTPLogShipper.Settings? {
            guard node.expectMapping(keys: ["url", "format", "index", "batch", "flush", "buffer", "max_retries", "timeout",
                                            "headers", "backoff", "max_backoff"]) else { return nil }
            guard let url = node["url"].string(required: true) else { return nil }
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
                node["url"].error("expected an http:// or https:// URL")
                return nil
            }
            var settings = HTTPLogShipper.Settings(url: url)
            if let text = node["format"].string() {
                if let format = HTTPLogShipper.Settings.Format(rawValue: text) { settings.format = format } else {
                    node["format"].error("expected elasticsearch_bulk, logstash or ndjson")
                }
            }
            if let index = node["index"].string() { settings.index = index }
            if let batch = node["batch"].int(range: 1...100_000) { settings.batch = batch }
            if let flush = node["flush"].duration() { settings.flush = flush }
            if let buffer = node["buffer"].int(range: 1...10_000_000) { settings.buffer = buffer }
            if let retries = node["max_retries"].int(range: 0...100) { settings.maxRetries = retries }
            if let timeout = node["timeout"].duration() { settings.timeout = timeout }
            if let backoff = node["backoff"].duration() { settings.initialBackoff = backoff }
            if let backoff = node["max_backoff"].duration() { settings.maxBackoff = backoff }
            for (name, value) in node["headers"].entries() ?? [] {
                if HTTPField.Name(name) == nil { value.error("not a header name") }
                if let text = value.string(required: true) { settings.headers.append((name, text)) }
            }
            if settings.buffer < settings.batch { node["buffer"].error("must be at least batch (\(settings.batch))") }
            return settings
        }
    }

    let configuration: Configuration
    public let log: AccessLog

    public init(configuration: Configuration) {
        self.configuration = configuration
        let format = configuration.format
        // Made before: the state registry is locked while `make` runs.
        let metrics = GatewayMetrics.of(configuration.state)
        // Kept across reloads that keep the settings (the open file, the queued lines).
        let key = "access-log|\(configuration.sink)|\(format.style)|\(format.fields)|\(format.redactedParameters.sorted())|\(configuration.buffer)"
        self.log = configuration.state.value(for: key) { () -> AccessLog in
            let destination: any LineDestination
            switch configuration.sink {
            case .stdout: destination = StreamLogSink(destination: .stdout, capacityBytes: configuration.buffer)
            case .file(let path): destination = StreamLogSink(destination: .file(path), capacityBytes: configuration.buffer)
            case .http(let settings): destination = HTTPLogShipper(settings: settings)
            }
            let kind = destination.kind
            metrics.addCollector { [weak destination] in
                guard let destination else { return [] }
                return [GatewayMetrics.Sample(name: "tollgate_access_log_dropped_total", help: "Access-log lines dropped (buffer full or sink down)",
                                              labels: [("sink", kind)], value: Double(destination.dropped), type: "counter")]
            }
            return AccessLog(format: format, destination: destination)
        }
    }

    public func onLog(context: RequestContext, summary: RequestSummary) {
        log.log(context: context, summary: summary)
    }
}
