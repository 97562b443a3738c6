/// `cluster:`: what gateway nodes share. For now Redis, which rate limits (and later quotas and the
/// cache) use when a plugin asks for a cluster-wide policy.
///
/// ```yaml
/// cluster:
///   redis: "redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0"   # or {url: ..., timeout: 200ms, connect_timeout: 1s}
/// ```
public struct ClusterConfig: Sendable, Equatable {
    public struct Redis: Sendable, Equatable {
        /// `redis://[[user]:password@]host[:port][/database]`.
        public var url: String
        /// How long one command may take before it counts as failed (and the plugin's `fail` mode applies).
        public var timeout: Duration = .milliseconds(250)
        public var connectTimeout: Duration = .seconds(1)
        /// Prefix of every key Tollgate writes, so several gateways (or other users) can share a Redis.
        public var keyPrefix = "tollgate:"
        /// `rediss://`: the CA that signed Redis's certificate (default: the system's trust roots).
        public var tlsCAFile: String?

        public init(url: String) {
            self.url = url
        }
    }

    public var redis: Redis?

    public init(redis: Redis? = nil) {
        self.redis = redis
    }

    init(from node: ConfigNode) {
        node.expectMapping(keys: ["redis"])
        let redisNode = node["redis"]
        guard redisNode.isPresent else { return }
        var settings: Redis
        if case .mapping = redisNode.node {
            redisNode.expectMapping(keys: ["url", "timeout", "connect_timeout", "key_prefix", "tls_ca_file"])
            guard let url = redisNode["url"].string(required: true) else { return }
            settings = Redis(url: url)
            if let value = redisNode["timeout"].duration() { settings.timeout = value }
            if let value = redisNode["connect_timeout"].duration() { settings.connectTimeout = value }
            if let value = redisNode["key_prefix"].string() { settings.keyPrefix = value }
            settings.tlsCAFile = redisNode["tls_ca_file"].string()
        } else {
            guard let url = redisNode.string() else { return }
            settings = Redis(url: url)
        }
        let urlNode = redisNode["url"].isPresent ? redisNode["url"] : redisNode
        guard Self.isRedisURL(settings.url) else {
            urlNode.error("expected redis://[[user]:password@]host[:port][/database] (or rediss:// for TLS)")
            return
        }
        if settings.tlsCAFile != nil && !settings.url.hasPrefix("rediss://") {
            redisNode["tls_ca_file"].error("only used with rediss:// URLs")
        }
        redis = settings
    }

    /// The shape `redis://[[user]:password@]host[:port][/database]`, checked without connecting.
    static func isRedisURL(_ url: String) -> Bool {
        guard url.hasPrefix("redis://") || url.hasPrefix("rediss://") else { return false }
        var rest = Substring(url.dropFirst(url.hasPrefix("rediss://") ? 9 : 8))
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        if let slash = rest.firstIndex(of: "/") {
            let database = rest[rest.index(after: slash)...]
            guard database.isEmpty || Int(database).map({ $0 >= 0 }) == true else { return false }
            rest = rest[..<slash]
        }
        if rest.hasPrefix("[") { return rest.contains("]") }
        if let colon = rest.lastIndex(of: ":") {
            guard let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else { return false }
            rest = rest[..<colon]
        }
        return !rest.isEmpty
    }
}
