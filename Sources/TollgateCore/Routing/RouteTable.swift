/// The router: compiled once from the config, then read-only. Hosts first (exact, then wildcard
/// suffixes from the longest, then routes without hosts), and inside each host the path trie.
public final class RouteTable: Sendable {
    private let exactHosts: [String: PathTrie]
    private let wildcardHosts: [String: PathTrie]
    private let anyHost: PathTrie
    public let routes: [CompiledRoute]
    /// Whether any route has header predicates: when none does, the request's headers need not be
    /// converted for routing.
    public let usesHeaders: Bool
    /// Whether any route names hosts: when none does, the Host header is not read for routing.
    public var usesHosts: Bool { !exactHosts.isEmpty || !wildcardHosts.isEmpty }

    public init(routes: [CompiledRoute], patterns: [[PathPattern]]) {
        var exact: [String: PathTrie] = [:]
        var wildcard: [String: PathTrie] = [:]
        let any = PathTrie()
        for (route, routePatterns) in zip(routes, patterns) {
            var tries: [PathTrie] = []
            if route.hosts.isEmpty {
                tries.append(any)
            } else {
                for host in route.hosts {
                    if host.hasPrefix("*.") {
                        let suffix = String(host.dropFirst(2))
                        if wildcard[suffix] == nil { wildcard[suffix] = PathTrie() }
                        tries.append(wildcard[suffix]!)
                    } else {
                        if exact[host] == nil { exact[host] = PathTrie() }
                        tries.append(exact[host]!)
                    }
                }
            }
            // A route without paths matches every path.
            let effective = routePatterns.isEmpty ? [try! PathPattern(parsing: "/*")] : routePatterns
            for trie in tries {
                for pattern in effective { trie.insert(route: route, pattern: pattern) }
            }
        }
        self.exactHosts = exact
        self.wildcardHosts = wildcard
        self.anyHost = any
        self.routes = routes
        self.usesHeaders = routes.contains { !$0.headers.isEmpty }
    }

    /// A path segment, as the range of its UTF-8 offsets in the path: the path is sliced only where a
    /// segment is compared with a literal or becomes a parameter (a catch-all route slices nothing).
    public typealias Segment = Range<Int>

    /// Splits a normalized path into segments (empty ones dropped: a trailing slash does not matter).
    @inline(__always)
    static func segments(of path: String) -> [Segment] {
        var result: [Segment] = []
        result.reserveCapacity(8)
        segments(of: path, into: &result)
        return result
    }

    /// Appends the path's segments to `result`, found in its bytes. Every bound is next to an ASCII `/`
    /// (or an end), so it falls between Unicode scalars.
    static func segments(of path: String, into result: inout [Segment]) {
        func split(_ bytes: UnsafeBufferPointer<UInt8>) {
            var start = 0
            for index in bytes.indices where bytes[index] == UInt8(ascii: "/") {
                if start != index { result.append(start..<index) }
                start = index + 1
            }
            if start != bytes.count { result.append(start..<bytes.count) }
        }
        // Borrowed where contiguous (native and small strings); `withUTF8` on a copy retained it.
        if path.utf8.withContiguousStorageIfAvailable(split) != nil { return }
        var path = path
        path.withUTF8(split)
    }

    /// The text of a segment of `path`.
    @inline(__always)
    static func text(of segment: Segment, in path: String) -> Substring {
        let utf8 = path.utf8
        let start = utf8.index(utf8.startIndex, offsetBy: segment.lowerBound)
        return path[start..<utf8.index(start, offsetBy: segment.count)]
    }

    /// Lower-cased host without port, from a Host header value.
    public static func hostName(_ value: Substring) -> Substring {
        var host = value
        if host.first == "[" {
            if let close = host.firstIndex(of: "]") { host = host[host.startIndex...close] }
        } else if let colon = host.lastIndex(of: ":") {
            host = host[..<colon]
        }
        if host.last == "." { host = host.dropLast() }
        if host.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) {
            return Substring(host.lowercased())
        }
        return host
    }

    /// The route for `request`, with an array of its own for the path's segments.
    public func match(_ request: borrowing RouteRequest) -> RouteMatch? {
        var segments: [Segment] = []
        segments.reserveCapacity(8)
        return match(request, scratch: &segments)
    }

    /// Host tries from the most specific, the path split into `scratch`: an empty array the caller
    /// keeps from one request to the next (one per event loop), so that nothing is allocated on the
    /// common paths. Left empty, its capacity kept.
    public func match(_ request: borrowing RouteRequest, scratch segments: inout [Segment]) -> RouteMatch? {
        assert(segments.isEmpty)
        defer { segments.removeAll(keepingCapacity: true) }
        Self.segments(of: request.path, into: &segments)
        if let hostHeader = request.host, !exactHosts.isEmpty || !wildcardHosts.isEmpty {
            let host = Self.hostName(hostHeader)
            if let trie = exactHosts[String(host)], let match = trie.match(request, segments: segments) { return match }
            if !wildcardHosts.isEmpty {
                var rest = host
                while let dot = rest.firstIndex(of: ".") {
                    rest = rest[rest.index(after: dot)...]
                    if let trie = wildcardHosts[String(rest)], let match = trie.match(request, segments: segments) {
                        return match
                    }
                }
            }
        }
        return anyHost.isEmpty ? nil : anyHost.match(request, segments: segments)
    }

    private func tries(for hostHeader: Substring?) -> [PathTrie] {
        var result: [PathTrie] = []
        if let hostHeader, !exactHosts.isEmpty || !wildcardHosts.isEmpty {
            let host = Self.hostName(hostHeader)
            if let trie = exactHosts[String(host)] { result.append(trie) }
            if !wildcardHosts.isEmpty {
                var rest = host
                while let dot = rest.firstIndex(of: ".") {
                    rest = rest[rest.index(after: dot)...]
                    if let trie = wildcardHosts[String(rest)] { result.append(trie) }
                }
            }
        }
        if !anyHost.isEmpty { result.append(anyHost) }
        return result
    }

    /// Routes whose host and path match, ignoring method, header, query and version predicates: the
    /// versions listed in a 404, and the methods of a 405.
    public func candidates(host: Substring?, path: String) -> [CompiledRoute] {
        let segments = Self.segments(of: path)
        var result: [CompiledRoute] = []
        for trie in tries(for: host) { trie.pathCandidates(segments: segments, path: path, into: &result) }
        var seen: Set<Int> = []
        return result.filter { seen.insert($0.index).inserted }
    }
}
