import Logging

/// `admin:`, the admin listener: `/metrics` (Prometheus), `/health`. Loopback by default.
public struct AdminConfig: Sendable, Equatable {
    public var host: String
    public var port: Int
    /// Where `/metrics` is also served on a listener of its own (a status port for scrapers).
    public var statusHost: String?
    public var statusPort: Int?

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    init?(from node: ConfigNode) {
        guard node.isPresent else { return nil }
        guard node.expectMapping(keys: ["address", "status_address"]) else { return nil }
        guard let address = node["address"].string(required: true) else { return nil }
        guard let (host, port) = HostPort.parse(address) else {
            node["address"].error("expected host:port, such as 127.0.0.1:8001")
            return nil
        }
        self.host = host
        self.port = port
        if let status = node["status_address"].string() {
            if let (host, port) = HostPort.parse(status) {
                statusHost = host
                statusPort = port
            } else {
                node["status_address"].error("expected host:port, such as 127.0.0.1:9100")
            }
        }
    }
}

/// `logging:`, the application log (not the access log): level, format, and levels per module.
public struct LoggingConfig: Sendable, Equatable {
    public enum Format: String, Sendable { case json, text }
    public var level: Logger.Level = .info
    public var format: Format = .json
    /// Levels by logger label (`tollgate.redis: debug`); a label also matches its sub-labels.
    public var modules: [String: Logger.Level] = [:]

    public init() {}

    init(from node: ConfigNode) {
        guard node.isPresent, node.expectMapping(keys: ["level", "format", "modules"]) else { return }
        if let value = node["level"].string() {
            if let level = Logger.Level(rawValue: value) { self.level = level } else { node["level"].error(Self.levelError) }
        }
        if let value = node["format"].string() {
            if let format = Format(rawValue: value) { self.format = format } else { node["format"].error("expected json or text") }
        }
        for (label, child) in node["modules"].entries() ?? [] {
            guard let value = child.string(required: true) else { continue }
            if let level = Logger.Level(rawValue: value) { modules[label] = level } else { child.error(Self.levelError) }
        }
    }

    static let levelError = "expected trace, debug, info, notice, warning, error or critical"

    /// The level for a logger label: the longest configured module prefix, else the default.
    public func level(for label: String) -> Logger.Level {
        var best: (length: Int, level: Logger.Level)?
        for (module, level) in modules where label == module || label.hasPrefix(module + ".") {
            if module.count > best?.length ?? -1 { best = (module.count, level) }
        }
        return best?.level ?? level
    }
}
