import Testing
import TollgateCore
import TollgatePlugins

@Suite struct ServiceConfigTests {
    @Test func balancingSettingsLoad() throws {
        let snapshot = try ConfigLoader.load(yaml: """
            services:
              api:
                targets: [{url: "http://127.0.0.1:9001"}, {url: "http://127.0.0.1:9002", weight: 3}]
                balancer: consistent_hash
                hash_key: "cookie:session"
                timeouts: {total: 3s}
                health:
                  active: {type: tcp, interval: 2s, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 4}
                  passive: {consecutive_errors: 3, base_ejection_time: 10s, max_ejection_time: 1m, max_ejection_percent: 34}
                circuit_breaker: {max_connections: 100, max_pending: 50, max_retries: 5}
                retries:
                  attempts: 3
                  on: [connect_error, timeout, "503"]
                  backoff: {base: 10ms, max: 1s}
                  budget: {percent: 10, min_per_second: 2}
                  buffer_body: 16KB
                  per_try_timeout: 750ms
                slow_start: 30s
                dns: {refresh: 10s}
            routes:
              - {match: {paths: ["/api/*"]}, service: api, retry_non_idempotent: true}
            """, environment: [:], registry: BuiltinPlugins.registry)
        let api = try #require(snapshot.services["api"])
        #expect(api.balancer == .consistentHash)
        #expect(api.hashKey == .cookie("session"))
        #expect(api.totalTimeout == .seconds(3))
        #expect(api.activeHealth?.kind == .tcp)
        #expect(api.activeHealth?.unhealthyThreshold == 4)
        #expect(api.passiveHealth == OutlierDetector.Settings(consecutiveErrors: 3, baseEjectionNanos: 10_000_000_000,
                                                               maxEjectionNanos: 60_000_000_000, maxEjectionPercent: 34))
        #expect(api.circuitBreaker == CircuitBreakerLimits(maxConnections: 100, maxPending: 50, maxRetries: 5))
        #expect(api.retries.attempts == 3)
        #expect(api.retries.on == [.connectError, .timeout, .status(503)])
        #expect(api.retries.backoffBaseNanos == 10_000_000)
        #expect(api.retries.budgetPercent == 10)
        #expect(api.retries.bufferBodyLimit == 16 << 10)
        #expect(api.perTryTimeout == .milliseconds(750))
        #expect(api.slowStart == .seconds(30))
        #expect(api.dnsRefresh == .seconds(10))
        #expect(snapshot.routeTable.routes[0].retryNonIdempotent)
    }

    @Test func defaultsAreSafe() throws {
        let snapshot = try ConfigLoader.load(yaml: """
            services: {api: {targets: [{url: "http://127.0.0.1:9001"}]}}
            routes: [{match: {paths: ["/*"]}, service: api}]
            """, environment: [:], registry: BuiltinPlugins.registry)
        let api = try #require(snapshot.services["api"])
        #expect(api.balancer == .weightedRoundRobin)
        #expect(api.activeHealth == nil)
        #expect(api.passiveHealth == nil)   // ejection is opt-in: a lone target is never ejected by default
        #expect(api.retries.attempts == 2)
        #expect(api.retries.on == [.connectError])   // nothing was sent: safe for every method
        #expect(api.circuitBreaker == CircuitBreakerLimits())
    }

    @Test func badBalancingSettingsAreErrors() {
        #expect(configErrors("""
            services:
              api:
                targets: [{url: "http://127.0.0.1:9001"}]
                balancer: fastest
                hash_key: "body:x"
                health:
                  active: {type: udp, path: health, interval: 1ms}
                  passive: {base_ejection_time: 1m, max_ejection_time: 10s, max_ejection_percent: 150}
                retries: {attempts: 20, on: [sometimes, "404"], backoff: {base: 1s, max: 1ms}}
                dns: {refresh: 10ms}
            routes: [{match: {paths: ["/*"]}, service: api}]
            """) == [
                "services.api.balancer: unknown balancer 'fastest'; expected one of: round_robin, weighted_round_robin, least_connections, ip_hash, consistent_hash, p2c_ewma (line 4)",
                "services.api.hash_key: expected ip, header:NAME, cookie:NAME, query:NAME or path:NAME (line 5)",
                "services.api.health.active.type: expected http or tcp (line 7)",
                "services.api.health.active.path: must start with '/' (line 7)",
                "services.api.health.active.interval: must be at least 10ms (line 7)",
                "services.api.health.passive.max_ejection_time: must not be shorter than base_ejection_time (line 8)",
                "services.api.health.passive.max_ejection_percent: must be between 0 and 100 (line 8)",
                "services.api.retries.attempts: must be between 1 and 10 (line 9)",
                "services.api.retries.on[0]: expected connect_error, timeout, reset or a 5xx status such as \"503\" (line 9)",
                "services.api.retries.on[1]: expected connect_error, timeout, reset or a 5xx status such as \"503\" (line 9)",
                "services.api.retries.backoff.max: must not be shorter than base (line 9)",
                "services.api.dns.refresh: must be at least 1s (line 10)",
            ])
        #expect(configErrors("""
            services: {api: {targets: [{url: "http://127.0.0.1:9001"}], hash_key: ip}}
            routes: [{match: {paths: ["/*"]}, service: api}]
            """) == ["services.api.hash_key: only used with balancer: consistent_hash (line 1)"])
    }
}
