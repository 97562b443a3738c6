import Foundation
import Testing
import TollgateCore
import TollgatePlugins

func configErrors(_ yaml: String, environment: [String: String] = [:]) -> [String] {
    do {
        _ = try ConfigLoader.load(yaml: yaml, environment: environment, registry: BuiltinPlugins.registry)
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

@Suite struct ConfigTests {
    @Test func validConfigLoads() throws {
        let snapshot = try ConfigLoader.load(yaml: """
            listen: [{address: "127.0.0.1:0"}]
            services:
              users:
                targets: [{url: "http://127.0.0.1:9001", weight: 2}, {url: "http://localhost:9002"}]
                timeouts: {connect: 250ms, read: 5s}
            limits: {max_body_size: 1MB, header_read_timeout: 2s}
            routes:
              - {name: users, match: {paths: ["/users/{id}"]}, service: users}
            """, environment: [:], registry: BuiltinPlugins.registry)
        let users = try #require(snapshot.services["users"])
        #expect(users.targets.map(\.weight) == [2, 1])
        #expect(users.connectTimeout == .milliseconds(250))
        #expect(users.readTimeout == .seconds(5))
        #expect(snapshot.config.limits.maxBodySize == 1 << 20)
        #expect(snapshot.config.limits.headerReadTimeout == .seconds(2))
    }

    @Test func unknownKeysAreErrorsWithPathAndLine() {
        #expect(configErrors("""
            services:
              s:
                targets: [{url: "http://127.0.0.1:1"}]
                timeout: {connect: 1s}
            routes:
              - match: {path: ["/a"]}
                service: s
            """) == [
                "services.s.timeout: unknown key (did you mean 'timeouts'?) (line 4)",
                "routes[0].match.path: unknown key (did you mean 'paths'?) (line 6)",
            ])
    }

    @Test func wrongTypes() {
        #expect(configErrors("""
            services:
              s: {targets: [{url: "http://127.0.0.1:1", weight: heavy}], timeouts: {read: soon}}
            routes:
              - {match: {paths: "/a"}, service: s, strip_prefix: maybe}
            """) == [
                "services.s.targets[0].weight: expected an integer, got 'heavy' (line 2)",
                "services.s.timeouts.read: expected a duration such as 250ms, 5s or 1m, got 'soon' (line 2)",
                "routes[0].match.paths: expected a list (line 4)",
                "routes[0].strip_prefix: expected true or false, got 'maybe' (line 4)",
            ])
    }

    @Test func danglingServiceReference() {
        #expect(configErrors("""
            services:
              users: {targets: [{url: "http://127.0.0.1:1"}]}
            routes:
              - match: {paths: ["/a"]}
                service: orders
            """) == ["routes[0].service: no service named 'orders' (services: users) (line 4)"])
    }

    @Test func conflictingRoutes() {
        #expect(configErrors("""
            services:
              s: {targets: [{url: "http://127.0.0.1:1"}]}
            routes:
              - {match: {paths: ["/users/{id}"], methods: [GET]}, service: s}
              - {match: {paths: ["/users/{uid}"], methods: [GET, POST]}, service: s}
              - {match: {paths: ["/users/{uid}"], methods: [DELETE]}, service: s}
            """) == ["routes[1].match: conflicts with routes[0]: same hosts, path, methods and predicates, so this route could never match (line 5)"])
    }

    @Test func pathErrors() {
        let errors = configErrors("""
            services:
              s: {targets: [{url: "http://127.0.0.1:1"}]}
            routes:
              - match:
                  paths: ["users", "/a/{}", "/a/{x}/{x}", "/a/{rest...}/b", "/a/x{y}", "~[unclosed"]
                service: s
            """)
        #expect(Array(errors.prefix(5)) == [
            "routes[0].match.paths[0]: must start with '/' (or '~' for a regular expression) (line 5)",
            "routes[0].match.paths[1]: a parameter needs a name: {name} (line 5)",
            "routes[0].match.paths[2]: parameter 'x' appears twice (line 5)",
            "routes[0].match.paths[3]: a catch-all ({name...} or *) must be the last segment (line 5)",
            "routes[0].match.paths[4]: a parameter must be a whole segment, as in /users/{id} (line 5)",
        ])
        #expect(errors.count == 6)
        #expect(errors.last?.hasPrefix("routes[0].match.paths[5]: invalid regular expression") == true)
    }

    @Test func everyErrorIsListed() {
        let errors = configErrors("""
            listen: [{address: "nowhere"}]
            services:
              s: {targets: [{url: "ftp://x"}]}
            routes:
              - {match: {paths: ["/a"], methods: ["GE T"]}, service: s, rewrite: "/b/{missing}"}
              - {match: {paths: ["/b"]}, service: s, plugins: [{name: no-such-plugin}]}
            limits: {max_body_size: lots}
            """)
        #expect(errors == [
            "listen[0].address: expected host:port, such as 127.0.0.1:8080 or [::1]:8080 (line 1)",
            "services.s.targets[0].url: expected an http:// URL such as http://127.0.0.1:9001 (line 3)",
            "routes[0].match.methods[0]: 'GE T' is not an HTTP method (line 5)",
            "routes[1].plugins[0].name: unknown plugin 'no-such-plugin' (known: \(BuiltinPlugins.registry.factories.keys.sorted().joined(separator: ", "))) (line 6)",
            "limits.max_body_size: expected a size such as 512KB or 1MB, got 'lots' (line 7)",
            "routes[0].rewrite: unknown parameter 'missing' (not a parameter of '/a') (line 5)",
        ].sorted { lineOf($0) < lineOf($1) })
    }

    @Test func environmentInterpolation() throws {
        let yaml = """
            services:
              s: {targets: [{url: "http://${UPSTREAM_HOST}:${UPSTREAM_PORT:-9001}"}]}
            routes:
              - {match: {paths: ["/a"]}, service: s}
            """
        let snapshot = try ConfigLoader.load(yaml: yaml, environment: ["UPSTREAM_HOST": "127.0.0.2"], registry: BuiltinPlugins.registry)
        #expect(snapshot.services["s"]?.targets.first?.authority == "127.0.0.2:9001")
        #expect(configErrors(yaml) == ["services.s.targets[0].url: environment variable UPSTREAM_HOST is not set (line 2)",
                                       "services.s.targets[0].url: expected http://host:port (line 2)"])
    }

    @Test func pluginConfigErrorsCarryTheirPath() {
        #expect(configErrors("""
            services:
              s: {targets: [{url: "http://127.0.0.1:1"}]}
            routes:
              - match: {paths: ["/a"]}
                service: s
                plugins:
                  - name: headers
                    config:
                      request: {set: {X-A: "$(nope)"}, remov: [X-B]}
                  - name: request-termination
                    config: {status: 99}
            """) == [
                "routes[0].plugins[0].config.request.remov: unknown key (did you mean 'remove'?) (line 9)",
                "routes[0].plugins[0].config.request.set.X-A: unknown variable $(nope); known: route, service, client_ip, version, request_id, path.NAME, query.NAME, header.NAME (line 9)",
                "routes[0].plugins[1].config.status: must be between 100 and 599 (line 11)",
            ])
    }

    @Test func invalidYAML() {
        let errors = configErrors("routes: [\n  - {a: b\n")
        #expect(errors.count == 1)
        #expect(errors[0].hasPrefix("not valid YAML"))
    }

    @Test func versioningAndDeprecation() throws {
        #expect(configErrors("""
            services:
              s: {targets: [{url: "http://127.0.0.1:1"}]}
            routes:
              - {match: {paths: ["/a"], version: "2"}, service: s, deprecation: {since: "yesterday"}}
            """) == [
                "routes[0].deprecation.since: expected a date such as 2026-01-31 or 2026-01-31T00:00:00Z (line 4)",
                "routes[0].match.version: needs a top-level versioning section to resolve request versions (line 4)",
            ])
        #expect(configErrors("versioning: {path: \"/api/v{version}\"}\nroutes: []") ==
                ["versioning.path: expected a first path segment with {version}, such as /v{version} (line 1)"])
    }

    @Test func unitsParse() {
        #expect(ConfigUnits.parseDuration("250ms") == .milliseconds(250))
        #expect(ConfigUnits.parseDuration("1.5s") == .milliseconds(1500))
        #expect(ConfigUnits.parseDuration("2m") == .seconds(120))
        #expect(ConfigUnits.parseDuration("-1s") == nil)
        #expect(ConfigUnits.parseSize("1MB") == 1 << 20)
        #expect(ConfigUnits.parseSize("64kb") == 64 << 10)
        #expect(ConfigUnits.parseSize("2GB") == 2 << 30)
        #expect(ConfigUnits.parseSize("12") == 12)
        #expect(ConfigUnits.parseSize("x") == nil)
    }

    /// `cluster.redis`: a URL or a mapping; bad URLs and TLS (not in this build) are errors with their path.
    @Test func clusterRedisSettings() throws {
        let base = "services: {a: {targets: [{url: \"http://127.0.0.1:1\"}]}}\nroutes: [{match: {paths: [\"/\"]}, service: a}]\n"
        let snapshot = try ConfigLoader.load(yaml: base + """
            cluster: {redis: {url: "redis://:pw@10.0.0.5:6380/2", timeout: 100ms, key_prefix: "edge:"}}
            """, environment: [:], registry: BuiltinPlugins.registry)
        #expect(snapshot.config.cluster.redis?.url == "redis://:pw@10.0.0.5:6380/2")
        #expect(snapshot.config.cluster.redis?.timeout == .milliseconds(100))
        #expect(snapshot.config.cluster.redis?.keyPrefix == "edge:")
        #expect(configErrors(base + "cluster: {redis: \"http://cache:6379\"}") ==
                ["cluster.redis: expected redis://[[user]:password@]host[:port][/database] (or rediss:// for TLS) (line 3)"])
        #expect(configErrors(base + "cluster: {redis: {url: \"rediss://cache:6379\", tls_ca_file: /etc/ca.pem}}") == [])
        #expect(configErrors(base + "cluster: {redis: {url: \"redis://cache:6379\", tls_ca_file: /etc/ca.pem}}") ==
                ["cluster.redis.tls_ca_file: only used with rediss:// URLs (line 3)"])
        #expect(configErrors(base + "cluster: {redis: \"redis://cache:99999\", nodes: 3}") ==
                ["cluster.nodes: unknown key (line 3)", "cluster.redis: expected redis://[[user]:password@]host[:port][/database] (or rediss:// for TLS) (line 3)"])
    }

    /// Every file in examples/ validates.
    @Test func examplesValidate() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let directory = root.appendingPathComponent("examples")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".yaml") }
        #expect(!files.isEmpty)
        for file in files {
            let path = directory.appendingPathComponent(file).path
            do {
                _ = try ConfigLoader.load(path: path, environment: ["UPSTREAM_HOST": "127.0.0.1"], registry: BuiltinPlugins.registry)
            } catch {
                Issue.record("\(file): \(error)")
            }
        }
    }
}

private func lineOf(_ message: String) -> Int {
    guard let range = message.range(of: "(line ", options: .backwards) else { return .max }
    return Int(message[range.upperBound...].dropLast()) ?? .max
}

@Suite struct ConfigScalarTests {
    /// Scalars are resolved by ConfigNode, not by YAML tags: null, ~ and empty mean "absent".
    @Test func nullsAreAbsent() throws {
        let snapshot = try ConfigLoader.load(yaml: """
            services:
              s: {targets: [{url: "http://127.0.0.1:1", weight: ~}], plugins: null}
            limits: {max_body_size: null, merge_slashes: off}
            routes:
              - {match: {paths: ["/a"]}, service: s, strip_prefix: yes, rewrite: }
            """, environment: [:], registry: BuiltinPlugins.registry)
        #expect(snapshot.services["s"]?.targets.first?.weight == 1)
        #expect(snapshot.config.limits.maxBodySize == 16 << 20)
        #expect(snapshot.config.limits.mergeSlashes == false)
        #expect(snapshot.config.routes[0].stripPrefix)
        #expect(snapshot.config.routes[0].rewrite == nil)
    }
}
