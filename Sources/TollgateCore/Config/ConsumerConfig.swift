/// A credential of one kind (an API key's hash, a password hash, a JWT subject...), parsed by the
/// plugin package that owns the kind and opaque to the Core, which has no cryptography.
public protocol ConsumerCredential: Sendable {}

/// Reads one credential of a kind from its YAML node, reporting errors there; nil when it has errors.
public typealias CredentialParser = @Sendable (ConfigNode) -> (any ConsumerCredential)?

/// Who is calling: a consumer of the `consumers:` list (or the anonymous one a route allows).
/// Immutable and shared (a request's context holds a reference, not a copy).
public final class Consumer: Sendable, Equatable, CustomStringConvertible {
    public let name: String
    public let id: String
    public let groups: [String]
    public let tags: [String]
    public let attributes: [String: String]
    /// The plan its limits and quotas come from (rate limiting).
    public let plan: String?

    public init(name: String, id: String? = nil, groups: [String] = [], tags: [String] = [],
                attributes: [String: String] = [:], plan: String? = nil) {
        self.name = name
        self.id = id ?? name
        self.groups = groups
        self.tags = tags
        self.attributes = attributes
        self.plan = plan
    }

    public static func == (lhs: Consumer, rhs: Consumer) -> Bool {
        lhs.name == rhs.name && lhs.id == rhs.id && lhs.groups == rhs.groups && lhs.tags == rhs.tags
            && lhs.attributes == rhs.attributes && lhs.plan == rhs.plan
    }

    public var description: String { name }
}

/// One `consumers:` entry: the consumer and its credentials by kind (`key_auth`, `basic_auth`...).
public struct ConsumerConfig: Sendable {
    public var consumer: Consumer
    public var credentials: [String: [any ConsumerCredential]]

    /// Parses an entry; credential kinds are read by `parsers` (unknown kinds are errors).
    static func parse(_ node: ConfigNode, parsers: [String: CredentialParser]) -> ConsumerConfig? {
        guard node.expectMapping(keys: ["name", "id", "groups", "tags", "attributes", "plan", "credentials"], required: true),
              let name = node["name"].string(required: true) else { return nil }
        if name.isEmpty || name.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: ",") }) {
            node["name"].error("expected a non-empty name without commas or control characters")
        }
        var groups: [String] = []
        for item in node["groups"].elements() ?? [] {
            guard let group = item.string() else { continue }
            if group.isEmpty || group.contains(",") { item.error("expected a group name without commas") } else { groups.append(group) }
        }
        var attributes: [String: String] = [:]
        for (key, value) in node["attributes"].entries() ?? [] {
            if let text = value.string() { attributes[key] = text }
        }
        let consumer = Consumer(name: name, id: node["id"].string(), groups: groups, tags: node["tags"].strings() ?? [],
                                attributes: attributes, plan: node["plan"].string())
        var credentials: [String: [any ConsumerCredential]] = [:]
        for (kind, list) in node["credentials"].entries() ?? [] {
            guard let parser = parsers[kind] else {
                let known = parsers.keys.sorted().joined(separator: ", ")
                list.error("unknown credential kind '\(kind)' (known: \(known))")
                continue
            }
            for item in list.elements(required: true) ?? [] {
                if let credential = parser(item) { credentials[kind, default: []].append(credential) }
            }
        }
        return ConsumerConfig(consumer: consumer, credentials: credentials)
    }
}

/// The consumers of one configuration, by name (auth plugins index their credentials at load time).
public struct ConsumerDirectory: Sendable {
    public let all: [ConsumerConfig]
    private let byName: [String: Int]

    public static let empty = ConsumerDirectory(all: [])

    public init(all: [ConsumerConfig]) {
        self.all = all
        var byName: [String: Int] = [:]
        for (index, entry) in all.enumerated() where byName[entry.consumer.name] == nil { byName[entry.consumer.name] = index }
        self.byName = byName
    }

    public subscript(name: String) -> ConsumerConfig? { byName[name].map { all[$0] } }

    /// Every credential of `kind` with its consumer.
    public func credentials<Credential: ConsumerCredential>(_ kind: String, as type: Credential.Type) -> [(Consumer, Credential)] {
        var result: [(Consumer, Credential)] = []
        for entry in all {
            for credential in entry.credentials[kind] ?? [] {
                if let typed = credential as? Credential { result.append((entry.consumer, typed)) }
            }
        }
        return result
    }

    public static func parse(_ node: ConfigNode, parsers: [String: CredentialParser]) -> ConsumerDirectory {
        var all: [ConsumerConfig] = []
        var names: Set<String> = []
        var ids: Set<String> = []
        for element in node.elements() ?? [] {
            guard let entry = ConsumerConfig.parse(element, parsers: parsers) else { continue }
            if !names.insert(entry.consumer.name).inserted {
                element["name"].error("consumer '\(entry.consumer.name)' is listed twice")
                continue
            }
            if !ids.insert(entry.consumer.id).inserted {
                element["id"].error("consumer id '\(entry.consumer.id)' is used twice")
                continue
            }
            all.append(entry)
        }
        return ConsumerDirectory(all: all)
    }
}
