/// One problem found in a configuration: where it is (YAML path and line) and what is wrong.
///
/// Printed as `routes[2].match.paths[0]: must start with '/' (line 14)`, the form `tollgate validate`
/// lists, one per line.
public struct ConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    public var path: String
    public var message: String
    public var line: Int?

    public init(path: String, _ message: String, line: Int? = nil) {
        self.path = path
        self.message = message
        self.line = line
    }

    public var description: String {
        let location = path.isEmpty ? "" : "\(path): "
        if let line { return "\(location)\(message) (line \(line))" }
        return "\(location)\(message)"
    }
}

/// All the problems of one configuration, in document order.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [ConfigError]
    public init(_ errors: [ConfigError]) { self.errors = errors }
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}
