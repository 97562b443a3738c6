/// Builds one plugin type from its `config:` block; the type-erased entry of the registry.
public struct PluginFactory: Sendable {
    public let name: String
    public let phase: PluginPhase
    public let priority: Int
    private let make: @Sendable (ConfigNode) -> (any GatewayPlugin)?

    public init<Plugin: GatewayPlugin>(_ type: Plugin.Type) {
        self.name = Plugin.name
        self.phase = Plugin.phase
        self.priority = Plugin.priority
        self.make = { node in
            let before = node.diagnostics.errors.count
            let configuration = Plugin.Configuration(from: node)
            guard node.diagnostics.errors.count == before else { return nil }
            do {
                return try Plugin(configuration: configuration)
            } catch {
                node.error("\(error)")
                return nil
            }
        }
    }

    /// The plugin built from `config`, or nil when the configuration has errors (already reported).
    public func build(config: ConfigNode) -> (any GatewayPlugin)? {
        make(config)
    }
}

/// The plugins a loader knows by name.
public struct PluginRegistry: Sendable {
    public private(set) var factories: [String: PluginFactory] = [:]
    /// Readers of `consumers[].credentials.<kind>`, registered by the plugins that own each kind.
    public private(set) var credentialParsers: [String: CredentialParser] = [:]

    public init(_ factories: [PluginFactory] = []) {
        for factory in factories { register(factory) }
    }

    public mutating func register(_ factory: PluginFactory) {
        factories[factory.name] = factory
    }

    public mutating func registerCredential(kind: String, parser: @escaping CredentialParser) {
        credentialParsers[kind] = parser
    }

    public subscript(name: String) -> PluginFactory? { factories[name] }
}

/// One `{name: ..., config: {...}}` entry, already built into its plugin.
public struct PluginEntry: Sendable {
    public var name: String
    public var plugin: any GatewayPlugin
    public var phase: PluginPhase
    public var priority: Int

    public init(name: String, plugin: any GatewayPlugin, phase: PluginPhase, priority: Int) {
        self.name = name
        self.plugin = plugin
        self.phase = phase
        self.priority = priority
    }

    static func parse(_ node: ConfigNode, registry: PluginRegistry) -> PluginEntry? {
        guard node.expectMapping(keys: ["name", "config", "enabled"], required: true) else { return nil }
        guard let name = node["name"].string(required: true) else { return nil }
        guard let factory = registry[name] else {
            let known = registry.factories.keys.sorted().joined(separator: ", ")
            node["name"].error("unknown plugin '\(name)' (known: \(known))")
            return nil
        }
        if node["enabled"].bool() == false { return nil }
        let config = node["config"]
        if config.isPresent, case .mapping = config.node {} else if config.isPresent {
            config.error("expected a mapping")
            return nil
        }
        guard let plugin = factory.build(config: config) else { return nil }
        return PluginEntry(name: name, plugin: plugin, phase: factory.phase, priority: factory.priority)
    }

    static func parseList(_ node: ConfigNode, registry: PluginRegistry) -> [PluginEntry] {
        guard let elements = node.elements() else { return [] }
        var seen: Set<String> = []
        var result: [PluginEntry] = []
        for element in elements {
            guard let entry = parse(element, registry: registry) else { continue }
            if !seen.insert(entry.name).inserted {
                element["name"].error("plugin '\(entry.name)' is listed twice")
                continue
            }
            result.append(entry)
        }
        return result
    }
}
