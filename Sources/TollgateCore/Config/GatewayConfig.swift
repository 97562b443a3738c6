import HTTPTypes

/// The whole validated configuration of one gateway, as the YAML file (or later the Admin API) states it.
public struct GatewayConfig: Sendable {
    public var listen: [ListenerConfig]
    public var services: [ServiceConfig]
    public var routes: [RouteConfig]
    public var plugins: [PluginEntry]
    public var versioning: VersioningConfig?
    public var limits: LimitsConfig
    public var server: ServerConfig
    public var cluster: ClusterConfig
    public var consumers: ConsumerDirectory
    public var plans: [String: PlanConfig]
    public var admin: AdminConfig?
    public var logging: LoggingConfig

    public static let topLevelKeys: Set<String> = ["listen", "services", "routes", "plugins", "versioning", "limits", "server",
                                                   "cluster", "consumers", "plans", "admin", "logging"]

    init(from root: ConfigNode, registry: PluginRegistry) {
        root.expectMapping(keys: Self.topLevelKeys, required: true)
        // First: plugins read it while they load (a rate limit with `policy: redis` needs cluster.redis).
        cluster = ClusterConfig(from: root["cluster"])
        root.diagnostics.cluster = cluster
        // Before plugins too: authentication plugins index the consumers' credentials when they load.
        consumers = ConsumerDirectory.parse(root["consumers"], parsers: registry.credentialParsers)
        root.diagnostics.consumers = consumers
        plans = PlanConfig.parse(root["plans"])
        root.diagnostics.plans = plans
        for element in root["consumers"].elements() ?? [] {
            if let plan = element["plan"].string(), plans[plan] == nil {
                element["plan"].error("no plan named '\(plan)' (list it under plans:)")
            }
        }
        let listenNodes = root["listen"].elements()
        listen = (listenNodes ?? []).compactMap(ListenerConfig.init(from:))
        if !root["listen"].isPresent { listen = [ListenerConfig(host: "127.0.0.1", port: 8080)] }
        if listenNodes?.isEmpty == true { root["listen"].error("must list at least one address") }
        services = (root["services"].entries() ?? []).map { ServiceConfig(name: $0.key, from: $0.value, registry: registry) }
        routes = (root["routes"].elements() ?? []).map { RouteConfig(from: $0, registry: registry) }
        plugins = PluginEntry.parseList(root["plugins"], registry: registry)
        versioning = root["versioning"].isPresent ? VersioningConfig(from: root["versioning"]) : nil
        limits = LimitsConfig(from: root["limits"])
        server = ServerConfig(from: root["server"])
        admin = AdminConfig(from: root["admin"])
        logging = LoggingConfig(from: root["logging"])
    }
}

enum HostPort {
    /// `127.0.0.1:8080`, `[::1]:8080`, `localhost:0`.
    static func parse(_ text: String) -> (String, Int)? {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":"), let port = Int(rest.dropFirst()), (0...65535).contains(port) else { return nil }
            return (host, port)
        }
        guard let colon = text.lastIndex(of: ":") else { return nil }
        let host = String(text[..<colon])
        guard !host.isEmpty, !host.contains(":"), let port = Int(text[text.index(after: colon)...]),
              (0...65535).contains(port) else { return nil }
        return (host, port)
    }
}

public struct TargetConfig: Sendable, Hashable {
    public var host: String
    public var port: Int
    public var weight: Int

    public init(host: String, port: Int, weight: Int = 1) {
        self.host = host
        self.port = port
        self.weight = weight
    }

    public var authority: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    init?(from node: ConfigNode) {
        guard node.expectMapping(keys: ["url", "weight"], required: true) else { return nil }
        guard let url = node["url"].string(required: true) else { return nil }
        guard url.hasPrefix("http://") else {
            node["url"].error(url.hasPrefix("https://") ? "https upstreams are not supported yet; use http://"
                                                         : "expected an http:// URL such as http://127.0.0.1:9001")
            return nil
        }
        var rest = url.dropFirst("http://".count)
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.contains("/"), !rest.isEmpty else {
            node["url"].error("a target URL has no path; use the route's rewrite for paths")
            return nil
        }
        let hostPort = rest.contains("]:") || (!rest.hasPrefix("[") && rest.contains(":")) ? String(rest) : "\(rest):80"
        guard let (host, port) = HostPort.parse(hostPort), port > 0 else {
            node["url"].error("expected http://host:port")
            return nil
        }
        let weight = node["weight"].int(range: 1...1000) ?? 1
        self.init(host: host, port: port, weight: weight)
    }
}

/// How a service spreads requests over its targets.
public enum BalancerKind: String, Sendable, CaseIterable {
    case roundRobin = "round_robin"
    case weightedRoundRobin = "weighted_round_robin"
    case leastConnections = "least_connections"
    case ipHash = "ip_hash"
    case consistentHash = "consistent_hash"
    case p2cEWMA = "p2c_ewma"
}

/// Where a hash balancer takes its key from.
public enum HashKey: Sendable, Equatable {
    case clientIP
    case header(HTTPField.Name)
    case cookie(String)
    case query(String)
    case pathParameter(String)

    /// `ip`, `header:X-User`, `cookie:session`, `query:user`, `path:id`.
    init?(parsing text: String) {
        if text == "ip" { self = .clientIP; return }
        guard let colon = text.firstIndex(of: ":") else { return nil }
        let kind = text[..<colon]
        let name = String(text[text.index(after: colon)...])
        guard !name.isEmpty else { return nil }
        switch kind {
        case "header":
            guard let field = HTTPField.Name(name) else { return nil }
            self = .header(field)
        case "cookie": self = .cookie(name)
        case "query": self = .query(name)
        case "path": self = .pathParameter(name)
        default: return nil
        }
    }
}

/// Active health checks: a probe per target every `interval`.
public struct ActiveHealthConfig: Sendable, Equatable {
    public enum Kind: String, Sendable { case http, tcp }
    public var kind: Kind = .http
    public var path = "/health"
    public var interval: Duration = .seconds(5)
    public var timeout: Duration = .seconds(1)
    public var healthyThreshold = 2
    public var unhealthyThreshold = 3
    /// Statuses that count as healthy (default: any 2xx or 3xx).
    public var statuses: Set<Int> = Set(200...399)

    public init() {}

    init(from node: ConfigNode) {
        node.expectMapping(keys: ["type", "path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold", "statuses"])
        if let type = node["type"].string() {
            if let kind = Kind(rawValue: type) { self.kind = kind } else { node["type"].error("expected http or tcp") }
        }
        if let path = node["path"].string() {
            if path.hasPrefix("/") { self.path = path } else { node["path"].error("must start with '/'") }
        }
        if let interval = node["interval"].duration() {
            if interval >= .milliseconds(10) { self.interval = interval } else { node["interval"].error("must be at least 10ms") }
        }
        if let timeout = node["timeout"].duration() { self.timeout = timeout }
        healthyThreshold = node["healthy_threshold"].int(range: 1...100) ?? healthyThreshold
        unhealthyThreshold = node["unhealthy_threshold"].int(range: 1...100) ?? unhealthyThreshold
        if let list = node["statuses"].elements() {
            statuses = Set(list.compactMap { $0.int(range: 100...599) })
        }
    }
}

public struct ServiceConfig: Sendable {
    public var name: String
    public var targets: [TargetConfig]
    public var connectTimeout: Duration
    public var readTimeout: Duration
    public var writeTimeout: Duration
    /// The whole request's deadline across retries (nil: none beyond each try's timeouts).
    public var totalTimeout: Duration?
    /// Upper bound of open connections to one target from one event loop.
    public var maxConnectionsPerTarget: Int
    /// Idle keep-alive connections kept per target and event loop.
    public var maxIdlePerTarget: Int
    public var plugins: [PluginEntry]
    public var balancer: BalancerKind = .weightedRoundRobin
    public var hashKey: HashKey = .clientIP
    public var activeHealth: ActiveHealthConfig?
    public var passiveHealth: OutlierDetector.Settings?
    public var circuitBreaker = CircuitBreakerLimits()
    public var retries = RetryPolicy(attempts: 2, on: [.connectError])
    /// A recovered or new target's weight ramps up over this window (nil: at once).
    public var slowStart: Duration?
    /// How often targets given by hostname are resolved again.
    public var dnsRefresh: Duration = .seconds(30)

    public init(name: String, targets: [TargetConfig], connectTimeout: Duration = .seconds(5),
                readTimeout: Duration = .seconds(60), writeTimeout: Duration = .seconds(60),
                maxConnectionsPerTarget: Int = 1024, maxIdlePerTarget: Int = 64, plugins: [PluginEntry] = []) {
        self.name = name
        self.targets = targets
        self.connectTimeout = connectTimeout
        self.readTimeout = readTimeout
        self.writeTimeout = writeTimeout
        self.maxConnectionsPerTarget = maxConnectionsPerTarget
        self.maxIdlePerTarget = maxIdlePerTarget
        self.plugins = plugins
    }

    init(name: String, from node: ConfigNode, registry: PluginRegistry) {
        node.expectMapping(keys: ["targets", "timeouts", "connections", "plugins", "balancer", "hash_key", "health",
                                  "circuit_breaker", "retries", "slow_start", "dns"], required: true)
        let targetNodes = node["targets"].elements(required: true)
        if targetNodes?.isEmpty == true { node["targets"].error("must list at least one target") }
        let timeouts = node["timeouts"]
        timeouts.expectMapping(keys: ["connect", "read", "write", "total"])
        let connections = node["connections"]
        connections.expectMapping(keys: ["max_per_target", "max_idle_per_target"])
        self.init(
            name: name,
            targets: (targetNodes ?? []).compactMap(TargetConfig.init(from:)),
            connectTimeout: timeouts["connect"].duration() ?? .seconds(5),
            readTimeout: timeouts["read"].duration() ?? .seconds(60),
            writeTimeout: timeouts["write"].duration() ?? .seconds(60),
            maxConnectionsPerTarget: connections["max_per_target"].int(range: 1...1_000_000) ?? 1024,
            maxIdlePerTarget: connections["max_idle_per_target"].int(range: 0...1_000_000) ?? 64,
            plugins: PluginEntry.parseList(node["plugins"], registry: registry)
        )
        totalTimeout = timeouts["total"].duration()
        if let name = node["balancer"].string() {
            if let kind = BalancerKind(rawValue: name) {
                balancer = kind
            } else {
                node["balancer"].error("unknown balancer '\(name)'; expected one of: "
                                       + BalancerKind.allCases.map(\.rawValue).joined(separator: ", "))
            }
        }
        if let key = node["hash_key"].string() {
            if let parsed = HashKey(parsing: key) {
                hashKey = parsed
                if balancer != .consistentHash { node["hash_key"].error("only used with balancer: consistent_hash") }
            } else {
                node["hash_key"].error("expected ip, header:NAME, cookie:NAME, query:NAME or path:NAME")
            }
        }
        let health = node["health"]
        health.expectMapping(keys: ["active", "passive"])
        if health["active"].isPresent { activeHealth = ActiveHealthConfig(from: health["active"]) }
        if health["passive"].isPresent {
            let passive = health["passive"]
            passive.expectMapping(keys: ["consecutive_errors", "base_ejection_time", "max_ejection_time", "max_ejection_percent"])
            var settings = OutlierDetector.Settings()
            settings.consecutiveErrors = passive["consecutive_errors"].int(range: 1...1000) ?? settings.consecutiveErrors
            if let base = passive["base_ejection_time"].duration() { settings.baseEjectionNanos = base.unsignedNanoseconds }
            if let max = passive["max_ejection_time"].duration() { settings.maxEjectionNanos = max.unsignedNanoseconds }
            if settings.maxEjectionNanos < settings.baseEjectionNanos {
                passive["max_ejection_time"].error("must not be shorter than base_ejection_time")
            }
            settings.maxEjectionPercent = passive["max_ejection_percent"].int(range: 0...100) ?? settings.maxEjectionPercent
            passiveHealth = settings
        }
        let breaker = node["circuit_breaker"]
        breaker.expectMapping(keys: ["max_connections", "max_pending", "max_retries"])
        circuitBreaker.maxConnections = breaker["max_connections"].int(range: 1...10_000_000) ?? circuitBreaker.maxConnections
        circuitBreaker.maxPending = breaker["max_pending"].int(range: 0...10_000_000) ?? circuitBreaker.maxPending
        circuitBreaker.maxRetries = breaker["max_retries"].int(range: 0...10_000_000) ?? circuitBreaker.maxRetries
        if node["retries"].isPresent { retries = RetryPolicy(from: node["retries"]) }
        slowStart = node["slow_start"].duration()
        let dns = node["dns"]
        dns.expectMapping(keys: ["refresh"])
        if let refresh = dns["refresh"].duration() {
            if refresh >= .seconds(1) { dnsRefresh = refresh } else { dns["refresh"].error("must be at least 1s") }
        }
    }

    /// The per-try timeout: the retry policy's, else the read timeout.
    public var perTryTimeout: Duration {
        retries.perTryTimeoutNanos.map { .nanoseconds(Int64($0)) } ?? readTimeout
    }
}

extension RetryPolicy {
    init(from node: ConfigNode) {
        self.init()
        node.expectMapping(keys: ["attempts", "on", "backoff", "budget", "buffer_body", "per_try_timeout"])
        attempts = node["attempts"].int(range: 1...10) ?? 2
        if let list = node["on"].elements() {
            var conditions: Set<Condition> = []
            for item in list {
                guard let text = item.string() else { continue }
                switch text {
                case "connect_error": conditions.insert(.connectError)
                case "timeout": conditions.insert(.timeout)
                case "reset": conditions.insert(.reset)
                default:
                    if let status = Int(text), (500...599).contains(status) {
                        conditions.insert(.status(status))
                    } else {
                        item.error("expected connect_error, timeout, reset or a 5xx status such as \"503\"")
                    }
                }
            }
            on = conditions
        } else {
            on = [.connectError, .reset]
        }
        let backoff = node["backoff"]
        backoff.expectMapping(keys: ["base", "max"])
        if let base = backoff["base"].duration() { backoffBaseNanos = base.unsignedNanoseconds }
        if let max = backoff["max"].duration() { backoffMaxNanos = max.unsignedNanoseconds }
        if backoffMaxNanos < backoffBaseNanos { backoff["max"].error("must not be shorter than base") }
        let budget = node["budget"]
        budget.expectMapping(keys: ["percent", "min_per_second"])
        budgetPercent = budget["percent"].int(range: 0...1000) ?? budgetPercent
        budgetMinPerSecond = budget["min_per_second"].int(range: 0...100_000) ?? budgetMinPerSecond
        bufferBodyLimit = node["buffer_body"].size() ?? bufferBodyLimit
        perTryTimeoutNanos = node["per_try_timeout"].duration().map(\.unsignedNanoseconds)
    }
}

/// How one header or query parameter must look for a route to match.
public enum ValuePredicate: Sendable, Hashable {
    case equals(String)
    case regex(String)
    case present
    case absent

    init?(from node: ConfigNode) {
        if case .mapping = node.node {
            guard node.expectMapping(keys: ["exact", "regex", "present", "absent"]) else { return nil }
            if let exact = node["exact"].string() { self = .equals(exact); return }
            if let pattern = node["regex"].string() {
                do { _ = try Regex(pattern) } catch {
                    node["regex"].error("invalid regular expression: \(error)")
                    return nil
                }
                self = .regex(pattern)
                return
            }
            if node["present"].bool() == true { self = .present; return }
            if node["absent"].bool() == true { self = .absent; return }
            node.error("expected one of exact, regex, present: true, absent: true")
            return nil
        }
        guard let value = node.string(required: true) else { return nil }
        self = .equals(value)
    }
}

public struct RouteMatchConfig: Sendable {
    public var hosts: [String] = []
    public var paths: [PathPattern] = []
    public var methods: [HTTPRequest.Method] = []
    public var headers: [(name: HTTPField.Name, predicate: ValuePredicate)] = []
    public var query: [(name: String, predicate: ValuePredicate)] = []
    public var version: String?

    public init() {}

    init(from node: ConfigNode) {
        node.expectMapping(keys: ["hosts", "paths", "methods", "headers", "query", "version"], required: true)
        for host in node["hosts"].elements() ?? [] {
            guard let text = host.string(required: true)?.lowercased() else { continue }
            let bare = text.hasPrefix("*.") ? String(text.dropFirst(2)) : text
            if bare.isEmpty || bare.contains("*") || bare.contains("/") || bare.contains(" ") {
                host.error("expected a host name, or *.domain for a wildcard")
                continue
            }
            hosts.append(text)
        }
        let pathNodes = node["paths"].elements()
        for path in pathNodes ?? [] {
            guard let text = path.string(required: true) else { continue }
            do throws(PathPattern.ParseError) {
                paths.append(try PathPattern(parsing: text))
            } catch {
                path.error(error.description)
            }
        }
        if pathNodes?.isEmpty == true { node["paths"].error("must list at least one path") }
        for method in node["methods"].elements() ?? [] {
            guard let text = method.string(required: true) else { continue }
            guard let parsed = HTTPRequest.Method(text.uppercased()) else {
                method.error("'\(text)' is not an HTTP method")
                continue
            }
            methods.append(parsed)
        }
        for (name, value) in node["headers"].entries() ?? [] {
            guard let fieldName = HTTPField.Name(name) else {
                value.error("'\(name)' is not a valid header name")
                continue
            }
            if let predicate = ValuePredicate(from: value) { headers.append((fieldName, predicate)) }
        }
        for (name, value) in node["query"].entries() ?? [] {
            if let predicate = ValuePredicate(from: value) { query.append((name, predicate)) }
        }
        version = node["version"].string()
    }
}

public struct DeprecationConfig: Sendable, Hashable {
    /// Unix seconds when the route was deprecated (`Deprecation: @since`, RFC 9745).
    public var since: Int64
    /// Unix seconds when it goes away (`Sunset`, RFC 8594).
    public var sunset: Int64?
    /// Migration notes (`Link: <...>; rel="deprecation"`).
    public var link: String?

    init?(from node: ConfigNode) {
        guard node.expectMapping(keys: ["since", "sunset", "link"]) else { return nil }
        guard let sinceText = node["since"].string(required: true) else { return nil }
        guard let since = HTTPDate.parseISO8601(sinceText) else {
            node["since"].error("expected a date such as 2026-01-31 or 2026-01-31T00:00:00Z")
            return nil
        }
        self.since = since
        if let sunsetText = node["sunset"].string() {
            guard let sunset = HTTPDate.parseISO8601(sunsetText) else {
                node["sunset"].error("expected a date such as 2026-12-31 or 2026-12-31T00:00:00Z")
                return nil
            }
            if sunset < since { node["sunset"].error("must not be before since") }
            self.sunset = sunset
        }
        if let link = node["link"].string() {
            guard link.hasPrefix("https://") || link.hasPrefix("http://") || link.hasPrefix("/") else {
                node["link"].error("expected a URL")
                return nil
            }
            self.link = link
        }
    }
}

public struct RouteConfig: Sendable {
    public var name: String?
    public var match: RouteMatchConfig
    public var service: String?
    public var stripPrefix: Bool
    public var rewrite: String?
    public var preserveHost: Bool
    /// Retries also for methods that are not idempotent (POST, PATCH): only where the upstream
    /// de-duplicates them.
    public var retryNonIdempotent: Bool
    public var plugins: [PluginEntry]
    public var deprecation: DeprecationConfig?
    /// Line of the route in its file, for error messages found after parsing (conflicts).
    public var line: Int?
    public var path: String

    init(from node: ConfigNode, registry: PluginRegistry) {
        node.expectMapping(keys: ["name", "match", "service", "strip_prefix", "rewrite", "preserve_host", "plugins",
                                  "deprecation", "retry_non_idempotent"], required: true)
        name = node["name"].string()
        match = RouteMatchConfig(from: node["match"])
        service = node["service"].string()
        stripPrefix = node["strip_prefix"].bool() ?? false
        rewrite = node["rewrite"].string()
        preserveHost = node["preserve_host"].bool() ?? false
        retryNonIdempotent = node["retry_non_idempotent"].bool() ?? false
        plugins = PluginEntry.parseList(node["plugins"], registry: registry)
        deprecation = node["deprecation"].isPresent ? DeprecationConfig(from: node["deprecation"]) : nil
        line = node.line
        path = node.path
        if let rewrite {
            if !rewrite.hasPrefix("/") { node["rewrite"].error("must start with '/'") }
            if stripPrefix { node["strip_prefix"].error("cannot be combined with rewrite") }
        }
    }
}

public struct VersioningConfig: Sendable {
    /// `/v{version}`: the first path segment, with its prefix and suffix around `{version}`.
    public var pathPrefix: (before: String, after: String)?
    public var query: String?
    public var header: HTTPField.Name?
    /// `application/vnd.acme.v{version}+json`, split around `{version}`.
    public var accept: (before: String, after: String)?
    public var defaultVersion: String?

    init(from node: ConfigNode) {
        node.expectMapping(keys: ["path", "query", "header", "accept", "default"])
        if let path = node["path"].string() {
            if let parts = Self.splitTemplate(path), parts.before.hasPrefix("/"), !parts.before.dropFirst().contains("/"),
               !parts.after.contains("/") {
                pathPrefix = (String(parts.before.dropFirst()), parts.after)
            } else {
                node["path"].error("expected a first path segment with {version}, such as /v{version}")
            }
        }
        query = node["query"].string()
        if let header = node["header"].string() {
            self.header = HTTPField.Name(header)
            if self.header == nil { node["header"].error("'\(header)' is not a valid header name") }
        }
        if let accept = node["accept"].string() {
            if let parts = Self.splitTemplate(accept) {
                self.accept = (parts.before.lowercased(), parts.after.lowercased())
            } else {
                node["accept"].error("expected a media type with {version}, such as application/vnd.acme.v{version}+json")
            }
        }
        defaultVersion = node["default"].string()
        if node.isPresent && !["path", "query", "header", "accept"].contains(where: { node[$0].isPresent }) {
            node.error("enable at least one of path, query, header, accept")
        }
    }

    static func splitTemplate(_ text: String) -> (before: String, after: String)? {
        guard let range = text.range(of: "{version}") else { return nil }
        return (String(text[..<range.lowerBound]), String(text[range.upperBound...]))
    }
}

public struct LimitsConfig: Sendable {
    public var maxBodySize: Int = 16 << 20
    public var maxHeaderSize: Int = 32 << 10
    public var maxURILength: Int = 8 << 10
    public var headerReadTimeout: Duration = .seconds(10)
    public var idleTimeout: Duration = .seconds(60)
    public var mergeSlashes: Bool = true

    public init() {}

    init(from node: ConfigNode) {
        node.expectMapping(keys: ["max_body_size", "max_header_size", "max_uri_length", "header_read_timeout",
                                  "idle_timeout", "merge_slashes"])
        if let value = node["max_body_size"].size() { maxBodySize = value }
        if let value = node["max_header_size"].size() {
            // A head is buffered whole while it is parsed: 80 KB bounds what one connection may hold.
            if value < 1024 || value > 80 << 10 { node["max_header_size"].error("must be between 1KB and 80KB") } else { maxHeaderSize = value }
        }
        if let value = node["max_uri_length"].size() {
            if value < 64 { node["max_uri_length"].error("must be at least 64") } else { maxURILength = value }
        }
        if let value = node["header_read_timeout"].duration() { headerReadTimeout = value }
        if let value = node["idle_timeout"].duration() { idleTimeout = value }
        if let value = node["merge_slashes"].bool() { mergeSlashes = value }
    }
}

public struct ServerConfig: Sendable {
    /// Event-loop threads; 0 means one per core.
    public var threads: Int = 0
    /// How long SIGTERM waits for in-flight requests.
    public var drainTimeout: Duration = .seconds(30)
    /// The pseudonym in `Via: 1.1 tollgate`.
    public var via: String = "tollgate"
    /// Header carrying the request id both ways.
    public var requestIDHeader: HTTPField.Name = HTTPField.Name("X-Request-ID")!

    public init() {}

    init(from node: ConfigNode) {
        node.expectMapping(keys: ["threads", "drain_timeout", "via", "request_id_header"])
        if let value = node["threads"].int(range: 0...256) { threads = value }
        if let value = node["drain_timeout"].duration() { drainTimeout = value }
        if let value = node["via"].string() { via = value }
        if let value = node["request_id_header"].string() {
            if let name = HTTPField.Name(value) { requestIDHeader = name } else { node["request_id_header"].error("not a header name") }
        }
    }
}
