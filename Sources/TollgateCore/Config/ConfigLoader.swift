import Foundation
import Yams

/// YAML text in, a validated and compiled `GatewaySnapshot` out, or every error with its YAML path and
/// line. Nothing on the request path parses config.
public enum ConfigLoader {
    public static func load(yaml: String, environment: [String: String], registry: PluginRegistry,
                            generation: Int = 0, state: PluginStateRegistry = .shared) throws(ConfigErrors) -> GatewaySnapshot {
        let diagnostics = ConfigDiagnostics(environment: environment, state: state)
        let root: Node?
        do {
            // The basic resolver tags every scalar a string: ConfigNode parses numbers, booleans and
            // nulls itself, and Yams' default resolver runs several regexes per scalar (most of a
            // 10 000-route load under callgrind).
            root = try Yams.compose(yaml: yaml, .basic)
        } catch {
            throw ConfigErrors([ConfigError(path: "", "not valid YAML: \(Self.describe(error))",
                                            line: Self.line(of: error))])
        }
        guard let root else { throw ConfigErrors([ConfigError(path: "", "the file is empty")]) }
        let config = GatewayConfig(from: ConfigNode(node: root, diagnostics: diagnostics), registry: registry)
        let snapshot = compile(config, diagnostics: diagnostics, generation: generation)
        let errors = diagnostics.sortedErrors
        guard errors.isEmpty else { throw ConfigErrors(errors) }
        return snapshot
    }

    static func compile(_ config: GatewayConfig, diagnostics: ConfigDiagnostics, generation: Int) -> GatewaySnapshot {
        var services: [String: ServiceConfig] = [:]
        for service in config.services { services[service.name] = service }

        var routes: [CompiledRoute] = []
        var patterns: [[PathPattern]] = []
        var routeNames: [String: Int] = [:]
        var signatures: [String: (index: Int, methods: [String])] = [:]
        for (index, route) in config.routes.enumerated() {
            func report(_ key: String, _ message: String) {
                diagnostics.report(ConfigError(path: "\(route.path).\(key)", message, line: route.line))
            }
            if let name = route.name {
                if let other = routeNames[name] { report("name", "'\(name)' is already the name of routes[\(other)]") }
                routeNames[name] = index
            }
            var serviceConfig: ServiceConfig?
            if let serviceName = route.service {
                serviceConfig = services[serviceName]
                if serviceConfig == nil {
                    let known = config.services.map(\.name).joined(separator: ", ")
                    report("service", "no service named '\(serviceName)' (services: \(known.isEmpty ? "none" : known))")
                }
            } else if !route.plugins.contains(where: { $0.phase < .proxy }) {
                report("service", "is required (or a plugin such as request-termination that answers the request)")
            }
            var rewrite: RewriteTemplate?
            if let template = route.rewrite {
                var unknown: String?
                for pattern in route.match.paths {
                    var missing: String?
                    let names = Set(pattern.parameterNames)
                    rewrite = RewriteTemplate(template, parameterNames: names, unknown: &missing)
                    if let missing { unknown = "unknown parameter '\(missing)' (not a parameter of '\(pattern.source)')" }
                }
                if route.match.paths.isEmpty {
                    var missing: String?
                    rewrite = RewriteTemplate(template, parameterNames: [], unknown: &missing)
                    if let missing { unknown = "unknown parameter '\(missing)' (the route has no path parameters)" }
                }
                if let unknown { report("rewrite", unknown) }
            }
            if route.stripPrefix, route.match.paths.contains(where: \.isRegex) {
                report("strip_prefix", "cannot be used with a regular-expression path")
            }
            let chain = FilterChain(layers: [config.plugins, serviceConfig?.plugins ?? [], route.plugins])
            let compiled = CompiledRoute(index: index, config: route, chain: chain, rewrite: rewrite)
            routes.append(compiled)
            patterns.append(route.match.paths)

            // Two routes with the same hosts, path shape and predicates: the later could never match
            // for the methods they share.
            let methodNames = route.match.methods.map(\.rawValue)
            for signature in conflictSignatures(route) {
                if let earlier = signatures[signature] {
                    let shared = earlier.methods.isEmpty || methodNames.isEmpty
                        || !Set(earlier.methods).isDisjoint(with: methodNames)
                    if shared {
                        report("match", "conflicts with routes[\(earlier.index)]: same hosts, path, methods and predicates, so this route could never match")
                        break
                    }
                } else {
                    signatures[signature] = (index, methodNames)
                }
            }
        }
        let resolver = config.versioning.map(VersionResolver.init(config:))
        for (index, route) in config.routes.enumerated() where route.match.version != nil && resolver == nil {
            diagnostics.report(ConfigError(path: "routes[\(index)].match.version",
                                           "needs a top-level versioning section to resolve request versions",
                                           line: route.line))
        }
        return GatewaySnapshot(config: config, routeTable: RouteTable(routes: routes, patterns: patterns),
                               services: services, versionResolver: resolver, generation: generation,
                               globalChain: FilterChain(layers: [config.plugins]), state: diagnostics.state)
    }

    private static func conflictSignatures(_ route: RouteConfig) -> [String] {
        let hosts = route.match.hosts.isEmpty ? ["*"] : route.match.hosts
        let paths = route.match.paths.isEmpty ? ["/*"] : route.match.paths.map { pattern -> String in
            if let regex = pattern.regex { return "~" + regex }
            return "/" + pattern.segments.map { segment -> String in
                switch segment {
                case .literal(let text): return text
                case .parameter: return "{}"
                case .catchAll: return "*"
                }
            }.joined(separator: "/")
        }
        let headers = route.match.headers.map { "\($0.name.canonicalName)=\($0.predicate)" }.sorted().joined(separator: "&")
        let query = route.match.query.map { "\($0.name)=\($0.predicate)" }.sorted().joined(separator: "&")
        let version = route.match.version ?? ""
        return hosts.flatMap { host in paths.map { "\(host)|\($0)|\(headers)|\(query)|\(version)" } }
    }

    private static func describe(_ error: any Error) -> String {
        if let yamlError = error as? YamlError {
            switch yamlError {
            case .scanner(let context, let problem, _, _), .parser(let context, let problem, _, _):
                return [context?.text, problem].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: ": ")
            default: return "\(yamlError)"
            }
        }
        return "\(error)"
    }

    private static func line(of error: any Error) -> Int? {
        if let yamlError = error as? YamlError {
            switch yamlError {
            case .scanner(_, _, let mark, _), .parser(_, _, let mark, _): return mark.line
            default: return nil
            }
        }
        return nil
    }
}

/// One immutable, compiled configuration. Requests read the current snapshot through the server's
/// reference and keep it until they finish; a reload builds a new one and swaps it.
public final class GatewaySnapshot: Sendable {
    public let config: GatewayConfig
    public let routeTable: RouteTable
    public let services: [String: ServiceConfig]
    public let versionResolver: VersionResolver?
    public let generation: Int
    /// The global plugins alone: their log hooks see requests no route matched.
    public let globalChain: FilterChain
    /// The plugin state this snapshot was built with (metrics, caches), for the admin listener.
    public let state: PluginStateRegistry

    init(config: GatewayConfig, routeTable: RouteTable, services: [String: ServiceConfig],
         versionResolver: VersionResolver?, generation: Int, globalChain: FilterChain, state: PluginStateRegistry) {
        self.globalChain = globalChain
        self.state = state
        self.config = config
        self.routeTable = routeTable
        self.services = services
        self.versionResolver = versionResolver
        self.generation = generation
    }
}

extension ConfigLoader {
    /// Reads and loads a config file; an unreadable file is one error with its path.
    public static func load(path: String, environment: [String: String], registry: PluginRegistry,
                            generation: Int = 0, state: PluginStateRegistry = .shared) throws(ConfigErrors) -> GatewaySnapshot {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigErrors([ConfigError(path: "", "cannot read \(path): \(error.localizedDescription)")])
        }
        return try load(yaml: text, environment: environment, registry: registry, generation: generation, state: state)
    }
}
