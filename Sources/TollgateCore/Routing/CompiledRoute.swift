import HTTPTypes

/// A route ready for the data plane: predicates compiled, plugins resolved, response headers for
/// deprecation pre-rendered. Immutable and shared by every connection.
public final class CompiledRoute: Sendable {
    public let index: Int
    public let name: String
    public let yamlPath: String
    public let serviceName: String?
    public let hosts: [String]
    public let methods: [HTTPRequest.Method]
    public let headers: [(name: HTTPField.Name, predicate: CompiledPredicate)]
    public let query: [(name: String, predicate: CompiledPredicate)]
    public let version: String?
    public let stripPrefix: Bool
    public let rewrite: RewriteTemplate?
    public let preserveHost: Bool
    public let retryNonIdempotent: Bool
    public let chain: FilterChain
    /// `Deprecation`, `Sunset` and `Link` fields added to every response of a deprecated route.
    public let deprecationFields: [HTTPField]
    /// The route matches on its path (and host) alone: no method, version, header or query predicate.
    let pathOnly: Bool

    init(index: Int, config: RouteConfig, chain: FilterChain, rewrite: RewriteTemplate?) {
        self.index = index
        self.name = config.name ?? "route-\(index)"
        self.yamlPath = config.path
        self.serviceName = config.service
        self.hosts = config.match.hosts
        self.methods = config.match.methods
        self.headers = config.match.headers.map { ($0.name, CompiledPredicate($0.predicate)) }
        self.query = config.match.query.map { ($0.name, CompiledPredicate($0.predicate)) }
        self.version = config.match.version
        self.stripPrefix = config.stripPrefix
        self.rewrite = rewrite
        self.preserveHost = config.preserveHost
        self.retryNonIdempotent = config.retryNonIdempotent
        self.chain = chain
        var fields: [HTTPField] = []
        if let deprecation = config.deprecation {
            fields.append(HTTPField(name: HTTPField.Name("Deprecation")!, value: "@\(deprecation.since)"))
            if let sunset = deprecation.sunset {
                fields.append(HTTPField(name: HTTPField.Name("Sunset")!, value: HTTPDate.format(unixSeconds: sunset)))
            }
            if let link = deprecation.link {
                fields.append(HTTPField(name: HTTPField.Name("Link")!, value: "<\(link)>; rel=\"deprecation\"; type=\"text/html\""))
            }
        }
        self.deprecationFields = fields
        self.pathOnly = methods.isEmpty && version == nil && headers.isEmpty && query.isEmpty
    }

    /// Whether everything but the path matches.
    @inline(__always)
    func predicatesMatch(_ request: borrowing RouteRequest) -> Bool {
        pathOnly || otherPredicatesMatch(request)   // one load instead of walking four empty lists
    }

    /// Apart, so that the common case does not pay this function's entry: the predicates' types hold
    /// a `Regex`, whose size is known only at run time, and room for them was made on every call
    /// (six type-metadata lookups, about 130 instructions).
    @inline(never)
    private func otherPredicatesMatch(_ request: borrowing RouteRequest) -> Bool {
        if !methods.isEmpty && !methods.contains(request.method) { return false }
        if let version, version != request.version { return false }
        for (name, predicate) in headers where !predicate.matches(request.headerFields[name]) { return false }
        if !query.isEmpty {
            for (name, predicate) in query where !predicate.matches(QueryString.value(of: name, in: request.query)) { return false }
        }
        return true
    }
}

/// A header or query predicate with its regex compiled once.
public struct CompiledPredicate: @unchecked Sendable {
    // Regex<AnyRegexOutput> is not Sendable; this one is immutable after init and only used to match.
    enum Kind {
        case equals(String)
        case regex(Regex<AnyRegexOutput>)
        case present
        case absent
    }
    let kind: Kind

    init(_ predicate: ValuePredicate) {
        switch predicate {
        case .equals(let value): kind = .equals(value)
        case .regex(let pattern): kind = .regex(try! Regex(pattern))   // validated at load
        case .present: kind = .present
        case .absent: kind = .absent
        }
    }

    func matches(_ value: String?) -> Bool {
        switch kind {
        case .equals(let expected): return value == expected
        case .regex(let regex): return value.map { (try? regex.wholeMatch(in: $0)) != nil } ?? false
        case .present: return value != nil
        case .absent: return value == nil
        }
    }
}

/// The parts of a request the router looks at. Noncopyable: the handler builds one per request and
/// lends it to the router; as a copyable value it was copied and destroyed once more on the way
/// (callgrind: about 400 instructions per request).
public struct RouteRequest: ~Copyable {
    public var method: HTTPRequest.Method
    public var host: Substring?
    /// Normalized path, without the query.
    public var path: String
    public var query: Substring?
    public var headerFields: HTTPFields
    public var version: String?

    public init(method: HTTPRequest.Method, host: Substring?, path: String, query: Substring?, headerFields: HTTPFields,
                version: String?) {
        self.method = method
        self.host = host
        self.path = path
        self.query = query
        self.headerFields = headerFields
        self.version = version
    }
}

/// A route under one of its path patterns, as the router keeps it. A class, so that a match holds
/// one reference, not the pattern's three.
final class RouteEntry: Sendable {
    let route: CompiledRoute
    let pattern: PathPattern
    /// Whether the pattern names a parameter (`{id}`, `{path...}`): if not, a match has none to extract.
    let namesParameters: Bool

    init(route: CompiledRoute, pattern: PathPattern) {
        self.route = route
        self.pattern = pattern
        self.namesParameters = !pattern.parameterNames.isEmpty
    }
}

/// The result of routing one request.
public struct RouteMatch: Sendable {
    let entry: RouteEntry
    public let parameters: [(name: String, value: String)]
    public var route: CompiledRoute { entry.route }
    /// The path pattern that matched.
    public var pattern: PathPattern { entry.pattern }

    /// The path to send upstream: strip_prefix or rewrite applied to the normalized path.
    public func upstreamPath(for path: String, version: String?) -> String {
        if let rewrite = route.rewrite { return rewrite.render(parameters: parameters, version: version) }
        if route.stripPrefix, !pattern.isRegex {
            let prefix = pattern.staticPrefix
            let rest = path.dropFirst(prefix.count)
            if rest.isEmpty { return "/" }
            return rest.first == "/" ? String(rest) : "/" + rest
        }
        return path
    }
}

/// `/internal/users/{id}`: literal text and parameter references, resolved at load time.
public struct RewriteTemplate: Sendable {
    enum Part: Sendable {
        case literal(String)
        case parameter(String)
        case version
    }
    let parts: [Part]

    /// Nil (with `unknown` set) when the template names a parameter that some pattern lacks.
    init(_ template: String, parameterNames: Set<String>, unknown: inout String?) {
        var parts: [Part] = []
        var rest = Substring(template)
        while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
            if open > rest.startIndex { parts.append(.literal(String(rest[..<open]))) }
            var name = String(rest[rest.index(after: open)..<close])
            if name.hasSuffix("...") { name.removeLast(3) }
            if name == "version" {
                parts.append(.version)
            } else {
                if !parameterNames.contains(name) { unknown = name }
                parts.append(.parameter(name))
            }
            rest = rest[rest.index(after: close)...]
        }
        if !rest.isEmpty { parts.append(.literal(String(rest))) }
        self.parts = parts
    }

    func render(parameters: [(name: String, value: String)], version: String?) -> String {
        var result = ""
        for part in parts {
            switch part {
            case .literal(let text): result += text
            case .parameter(let name): result += parameters.first { $0.name == name }?.value ?? ""
            case .version: result += version ?? ""
            }
        }
        // Collapse the `//` an empty catch-all leaves behind.
        while let range = result.range(of: "//") { result.replaceSubrange(range, with: "/") }
        return result.isEmpty ? "/" : result
    }
}

/// Query-string lookups without building a dictionary per request.
public enum QueryString {
    public static func value(of name: String, in query: Substring?) -> String? {
        guard let query else { return nil }
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let key: Substring
            let value: Substring
            if let equals = pair.firstIndex(of: "=") {
                key = pair[..<equals]
                value = pair[pair.index(after: equals)...]
            } else {
                key = pair
                value = ""
            }
            if key == name { return percentDecode(value) }
        }
        return nil
    }

    static func percentDecode(_ text: Substring) -> String {
        guard text.contains("%") || text.contains("+") else { return String(text) }
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), iterator.count >= 2,
                      let h = PathNormalizer.hexValue(iterator[iterator.startIndex]),
                      let l = PathNormalizer.hexValue(iterator[iterator.startIndex + 1]) {
                bytes.append(h << 4 | l)
                iterator = iterator.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
