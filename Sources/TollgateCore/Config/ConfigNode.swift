import Foundation
import Yams

/// Collects every error of one load, so `tollgate validate` can list them all at once instead of
/// stopping at the first. Used by one thread during a load only.
public final class ConfigDiagnostics {
    public private(set) var errors: [ConfigError] = []
    /// Values for `${NAME}` interpolation in scalars.
    public let environment: [String: String]
    /// The document's `cluster:` settings, read before any plugin loads so plugins can check what
    /// they need of it (with their own YAML path in the error).
    public var cluster = ClusterConfig()
    /// The document's consumers, read before any plugin loads.
    public var consumers = ConsumerDirectory.empty
    /// The document's plans, read before any plugin loads.
    public var plans: [String: PlanConfig] = [:]

    /// Where plugins keep state across reloads of this gateway.
    public let state: PluginStateRegistry

    public init(environment: [String: String] = [:], state: PluginStateRegistry = .shared) {
        self.environment = environment
        self.state = state
    }

    public func report(_ error: ConfigError) {
        errors.append(error)
    }

    public var sortedErrors: [ConfigError] {
        // Stable: errors without a line keep their reporting order after those with one.
        errors.enumerated().sorted { a, b in
            (a.element.line ?? Int.max, a.offset) < (b.element.line ?? Int.max, b.offset)
        }.map(\.element)
    }
}

/// A read-only view of one place in the YAML document: its node (absent when the key is missing),
/// its YAML path and the diagnostics it reports to. Every accessor checks the type and reports a
/// precise error rather than throwing, so one pass finds every problem.
public struct ConfigNode {
    public let node: Node?
    public let path: String
    /// Line of the node, or of the mapping that lacks it when the key is absent.
    public let line: Int?
    public let diagnostics: ConfigDiagnostics

    public init(node: Node?, path: String = "", line: Int? = nil, diagnostics: ConfigDiagnostics) {
        self.node = node
        self.path = path
        self.line = node?.mark?.line ?? line
        self.diagnostics = diagnostics
    }

    public var isPresent: Bool {
        guard let node else { return false }
        if case .scalar(let scalar) = node, scalar.tag == Tag(.null) || (scalar.style == .plain && ["", "~", "null", "Null", "NULL"].contains(scalar.string)) { return false }
        return true
    }

    public func error(_ message: String) {
        diagnostics.report(ConfigError(path: path, message, line: line))
    }

    private func child(_ node: Node?, path: String) -> ConfigNode {
        ConfigNode(node: node, path: path, line: line, diagnostics: diagnostics)
    }

    private func missing() {
        error("is required")
    }

    // MARK: mappings

    /// The value at `key` (absent if this node is not a mapping or lacks the key).
    public subscript(key: String) -> ConfigNode {
        let childPath = path.isEmpty ? key : "\(path).\(key)"
        guard case .mapping(let mapping) = node else { return child(nil, path: childPath) }
        return child(mapping[key], path: childPath)
    }

    /// Checks that this node is a mapping whose keys are all in `allowed`; reports every other key.
    /// Returns false (having reported it) when the node is present but not a mapping.
    @discardableResult
    public func expectMapping(keys allowed: Set<String>, required: Bool = false) -> Bool {
        guard isPresent, let node else {
            if required { missing() }
            return false
        }
        guard case .mapping(let mapping) = node else {
            error("expected a mapping")
            return false
        }
        for (key, _) in mapping {
            let name = key.string ?? ""
            if !allowed.contains(name) {
                let keyPath = path.isEmpty ? name : "\(path).\(name)"
                let suggestion = allowed.sorted().first { $0.editDistance(to: name) <= 2 }
                let hint = suggestion.map { " (did you mean '\($0)'?)" } ?? ""
                diagnostics.report(ConfigError(path: keyPath, "unknown key\(hint)", line: key.mark?.line ?? line))
            }
        }
        return true
    }

    /// The entries of a mapping in document order, for maps with user-chosen keys (services, headers).
    public func entries(required: Bool = false) -> [(key: String, value: ConfigNode)]? {
        guard isPresent, let node else {
            if required { missing() }
            return nil
        }
        guard case .mapping(let mapping) = node else {
            error("expected a mapping")
            return nil
        }
        return mapping.map { pair in
            let name = pair.key.string ?? ""
            return (name, child(pair.value, path: path.isEmpty ? name : "\(path).\(name)"))
        }
    }

    // MARK: sequences

    /// The elements of a sequence. A single scalar is not accepted as a one-element list, because
    /// `paths: /a` is more often a mistake than a shorthand.
    public func elements(required: Bool = false) -> [ConfigNode]? {
        guard isPresent, let node else {
            if required { missing() }
            return nil
        }
        guard case .sequence(let sequence) = node else {
            error("expected a list")
            return nil
        }
        return sequence.enumerated().map { index, element in child(element, path: "\(path)[\(index)]") }
    }

    // MARK: scalars

    /// The scalar's text after `${NAME}` interpolation.
    public func string(required: Bool = false) -> String? {
        guard isPresent, let node else {
            if required { missing() }
            return nil
        }
        guard case .scalar(let scalar) = node else {
            error("expected a string")
            return nil
        }
        return interpolate(scalar.string)
    }

    public func int(required: Bool = false, range: ClosedRange<Int>? = nil) -> Int? {
        guard let text = string(required: required) else { return nil }
        guard let value = Int(text.replacingOccurrences(of: "_", with: "")) else {
            error("expected an integer, got '\(text)'")
            return nil
        }
        if let range, !range.contains(value) {
            error("must be between \(range.lowerBound) and \(range.upperBound)")
            return nil
        }
        return value
    }

    public func bool(required: Bool = false) -> Bool? {
        guard let text = string(required: required) else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            error("expected true or false, got '\(text)'")
            return nil
        }
    }

    /// `250ms`, `5s`, `1m`, `2h`, `1d`, or a bare number of seconds.
    public func duration(required: Bool = false) -> Duration? {
        guard let text = string(required: required) else { return nil }
        guard let value = ConfigUnits.parseDuration(text) else {
            error("expected a duration such as 250ms, 5s or 1m, got '\(text)'")
            return nil
        }
        return value
    }

    /// `512`, `64KB`, `1MB`, `2GB` (powers of 1024), in bytes.
    public func size(required: Bool = false) -> Int? {
        guard let text = string(required: required) else { return nil }
        guard let value = ConfigUnits.parseSize(text) else {
            error("expected a size such as 512KB or 1MB, got '\(text)'")
            return nil
        }
        return value
    }

    /// A list of strings, or nil (reported) when any element is not a string.
    public func strings(required: Bool = false) -> [String]? {
        guard let elements = elements(required: required) else { return nil }
        var result: [String] = []
        for element in elements {
            guard let value = element.string(required: true) else { return nil }
            result.append(value)
        }
        return result
    }

    private func interpolate(_ text: String) -> String {
        // A byte scan: Foundation's String.contains costs a CFString search per scalar of the file.
        guard text.utf8.contains(UInt8(ascii: "$")) else { return text }
        var result = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            result += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                error("unterminated ${ in '\(text)'")
                return text
            }
            let spec = rest[start.upperBound..<end]
            // ${NAME:-default} as in the shell, for optional settings.
            let parts = spec.split(separator: ":-", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0])
            if let value = diagnostics.environment[name] {
                result += value
            } else if parts.count == 2 {
                result += parts[1]
            } else {
                error("environment variable \(name) is not set")
            }
            rest = rest[rest.index(after: end)...]
        }
        result += rest
        return result
    }
}

extension String {
    /// Levenshtein distance, for "did you mean" hints on unknown keys.
    func editDistance(to other: String) -> Int {
        let a = Array(self), b = Array(other)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                current[j] = Swift.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
