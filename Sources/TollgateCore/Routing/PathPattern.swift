/// A route's path, compiled: literal segments, `{name}` parameters, a trailing catch-all (`{name...}`
/// or `*`), or, as an escape hatch, a regular expression (`~^/items/[0-9]+$`).
public struct PathPattern: Hashable, Sendable, CustomStringConvertible {
    public enum Segment: Hashable, Sendable {
        case literal(String)
        case parameter(String)
        /// Matches the rest of the path (zero or more segments). Named for `{path...}`, unnamed for `*`.
        case catchAll(String?)
    }

    public let source: String
    public let segments: [Segment]
    /// Set for regex patterns, whose `segments` are empty.
    public let regex: String?

    public var description: String { source }

    public var isRegex: Bool { regex != nil }

    /// Literal segments before the first parameter or wildcard: what `strip_prefix` removes.
    public var staticPrefix: String {
        var prefix = ""
        for segment in segments {
            guard case .literal(let text) = segment else { break }
            prefix += "/" + text
        }
        return prefix
    }

    public var parameterNames: [String] {
        segments.compactMap {
            switch $0 {
            case .parameter(let name): return name
            case .catchAll(let name): return name
            case .literal: return nil
            }
        }
    }

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case mustStartWithSlash
        case emptyParameterName
        case invalidParameterName(String)
        case parameterNotWholeSegment
        case catchAllNotLast
        case duplicateParameter(String)
        case invalidRegex(String)

        public var description: String {
            switch self {
            case .mustStartWithSlash: return "must start with '/' (or '~' for a regular expression)"
            case .emptyParameterName: return "a parameter needs a name: {name}"
            case .invalidParameterName(let name): return "'\(name)' is not a valid parameter name (letters, digits, _)"
            case .parameterNotWholeSegment: return "a parameter must be a whole segment, as in /users/{id}"
            case .catchAllNotLast: return "a catch-all ({name...} or *) must be the last segment"
            case .duplicateParameter(let name): return "parameter '\(name)' appears twice"
            case .invalidRegex(let message): return "invalid regular expression: \(message)"
            }
        }
    }

    public init(parsing source: String) throws(ParseError) {
        self.source = source
        if source.hasPrefix("~") {
            let pattern = String(source.dropFirst())
            do { _ = try Regex(pattern) } catch { throw .invalidRegex("\(error)") }
            self.regex = pattern
            self.segments = []
            return
        }
        guard source.hasPrefix("/") else { throw .mustStartWithSlash }
        self.regex = nil
        var segments: [Segment] = []
        var names: Set<String> = []
        let parts = source.split(separator: "/", omittingEmptySubsequences: true)
        for (index, part) in parts.enumerated() {
            let isLast = index == parts.count - 1
            if part == "*" {
                guard isLast else { throw .catchAllNotLast }
                segments.append(.catchAll(nil))
                continue
            }
            if part.contains("{") || part.contains("}") {
                guard part.first == "{", part.last == "}", part.count >= 2 else { throw .parameterNotWholeSegment }
                var name = part.dropFirst().dropLast()
                var catchAll = false
                if name.hasSuffix("...") {
                    name = name.dropLast(3)
                    catchAll = true
                }
                guard !name.isEmpty else { throw .emptyParameterName }
                guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }), name.first?.isNumber == false else {
                    throw .invalidParameterName(String(name))
                }
                guard names.insert(String(name)).inserted else { throw .duplicateParameter(String(name)) }
                if catchAll {
                    guard isLast else { throw .catchAllNotLast }
                    segments.append(.catchAll(String(name)))
                } else {
                    segments.append(.parameter(String(name)))
                }
                continue
            }
            segments.append(.literal(String(part)))
        }
        self.segments = segments
    }
}
