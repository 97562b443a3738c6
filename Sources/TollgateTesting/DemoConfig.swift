/// The config `tollgate demo` runs, kept here so the test suite can check that it loads.
public enum DemoConfig {
    public static func yaml(port: Int, usersURL: String, usersV2URL: String, adminPort: Int = 0) -> String {
        """
        listen:
          - address: "127.0.0.1:\(port)"
        admin: {address: "127.0.0.1:\(adminPort)"}
        versioning:
          path: "/v{version}"
          header: API-Version
          query: version
          accept: "application/vnd.tollgate.v{version}+json"
          default: "1"
        services:
          users:
            targets: [{url: "\(usersURL)"}]
          users-v2:
            targets: [{url: "\(usersV2URL)"}]
          both:
            targets: [{url: "\(usersURL)"}, {url: "\(usersV2URL)"}]
            balancer: round_robin
            retries: {attempts: 2, on: [connect_error, reset, "503"]}
            health: {passive: {consecutive_errors: 3, base_ejection_time: 10s}}
        consumers:
          - name: alice
            groups: [admin]
            credentials:
              key_auth: [{key: "demo-key-alice-0123"}]
          - name: bob
            groups: [staff]
            credentials:
              key_auth: [{key: "demo-key-bob-456789"}]
        plugins:
          - name: request-id
          - name: prometheus
          - {name: access-log, config: {fields: [timestamp, request_id, method, path, status, latency_ms, upstream_latency_ms, route, consumer, rate_limit]}}
        routes:
          - name: users-v1
            match: {paths: ["/users/{id}"], methods: [GET], version: "1"}
            service: users
            deprecation: {since: "2026-01-01", sunset: "2027-06-30", link: "https://example.com/migrate-to-v2"}
            plugins:
              - name: headers
                config:
                  response: {set: {X-Route: "$(route)", X-User-ID: "$(path.id)"}}
          - name: users-v2
            match: {paths: ["/users/{id}"], methods: [GET], version: "2"}
            service: users-v2
            rewrite: "/internal/users/{id}"
            plugins:
              - name: headers
                config:
                  request: {set: {X-Route: "$(route)", X-Client-IP: "$(client_ip)"}}
                  response: {set: {X-API-Version: "$(version)"}}
          - name: balanced
            match: {paths: ["/balanced/{id}"]}
            service: both
          - name: limited
            match: {paths: ["/limited/*"]}
            service: users
            plugins:
              - name: rate-limiting
                config: {limits: ["3/10s"], algorithm: sliding_log, headers: {legacy: true}}
          - name: admin
            match: {paths: ["/admin/*"]}
            service: users
            plugins:
              - {name: key-auth}
              - {name: acl, config: {allow: [admin]}}
          - name: catalog
            match: {paths: ["/catalog/*"]}
            service: users
            plugins:
              # The demo backend sends no Cache-Control: the route gives its answers 30 seconds.
              - {name: proxy-cache, config: {max_size: 16MB, cache_control: "public, max-age=30", purge_allow: ["127.0.0.1/32", "::1"]}}
              - {name: compression, config: {encodings: [br, gzip], min_size: 0}}
          - name: reports
            match: {paths: ["/reports/*"]}
            plugins:
              - name: request-termination
                config: {status: 503, message: "Reports are down for maintenance until 06:00 UTC"}
        """
    }
}
