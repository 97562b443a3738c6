/// One host's routes: a trie of path segments (literal children by name, one parameter child,
/// catch-all entries) plus the regex routes, checked last in declaration order.
final class PathTrie: @unchecked Sendable {
    // Built once at load time, read-only afterwards: safe to share across event loops.
    final class Node {
        var literals: [Substring: Node] = [:]
        var parameter: Node?
        /// Routes whose path ends here.
        var terminal: [RouteEntry] = []
        /// Routes whose catch-all starts here (matching zero or more further segments).
        var catchAll: [RouteEntry] = []
    }

    let root = Node()
    var regexRoutes: [(entry: RouteEntry, regex: Regex<AnyRegexOutput>)] = []
    var isEmpty: Bool { routeCount == 0 }
    private(set) var routeCount = 0

    func insert(route: CompiledRoute, pattern: PathPattern) {
        routeCount += 1
        let entry = RouteEntry(route: route, pattern: pattern)
        if let regex = pattern.regex {
            regexRoutes.append((entry, try! Regex(regex)))   // validated at load
            return
        }
        var node = root
        for segment in pattern.segments {
            switch segment {
            case .literal(let text):
                if let next = node.literals[Substring(text)] {
                    node = next
                } else {
                    let next = Node()
                    node.literals[Substring(text)] = next
                    node = next
                }
            case .parameter:
                if node.parameter == nil { node.parameter = Node() }
                node = node.parameter!
            case .catchAll:
                node.catchAll.append(entry)
                return
            }
        }
        node.terminal.append(entry)
    }

    /// The best match: literal segments before parameters before catch-alls, deepest first; among
    /// routes with the same path, the first declared whose predicates match. Cost grows with the path's
    /// length, not with the number of routes.
    func match(_ request: borrowing RouteRequest, segments: [RouteTable.Segment]) -> RouteMatch? {
        if let entry = search(root, segments: segments, depth: 0, request: request) {
            guard entry.namesParameters else { return RouteMatch(entry: entry, parameters: []) }
            return RouteMatch(entry: entry,
                              parameters: Self.parameters(of: entry.pattern, path: request.path, segments: segments))
        }
        return regexRoutes.isEmpty ? nil : matchRegex(request)
    }

    /// Apart, for the reason `CompiledRoute.otherPredicatesMatch` is.
    @inline(never)
    private func matchRegex(_ request: borrowing RouteRequest) -> RouteMatch? {
        for (entry, regex) in regexRoutes where entry.route.predicatesMatch(request) {
            if (try? regex.wholeMatch(in: request.path)) != nil {
                return RouteMatch(entry: entry, parameters: [])
            }
        }
        return nil
    }

    private func search(_ node: Node, segments: [RouteTable.Segment], depth: Int, request: borrowing RouteRequest) -> RouteEntry? {
        if depth == segments.count {
            for entry in node.terminal where entry.route.predicatesMatch(request) { return entry }
        } else {
            if !node.literals.isEmpty, let child = node.literals[RouteTable.text(of: segments[depth], in: request.path)],
               let found = search(child, segments: segments, depth: depth + 1, request: request) {
                return found
            }
            if let child = node.parameter, let found = search(child, segments: segments, depth: depth + 1, request: request) {
                return found
            }
        }
        for entry in node.catchAll where entry.route.predicatesMatch(request) { return entry }
        return nil
    }

    /// All routes whose path (and host) match, whatever their other predicates: for 404/405 bodies.
    func pathCandidates(segments: [RouteTable.Segment], path: String, into result: inout [CompiledRoute]) {
        collect(root, path: path, segments: segments, depth: 0, into: &result)
        for (entry, regex) in regexRoutes where (try? regex.wholeMatch(in: path)) != nil { result.append(entry.route) }
    }

    private func collect(_ node: Node, path: String, segments: [RouteTable.Segment], depth: Int,
                         into result: inout [CompiledRoute]) {
        if depth == segments.count {
            result.append(contentsOf: node.terminal.map(\.route))
        } else {
            if let child = node.literals[RouteTable.text(of: segments[depth], in: path)] {
                collect(child, path: path, segments: segments, depth: depth + 1, into: &result)
            }
            if let child = node.parameter { collect(child, path: path, segments: segments, depth: depth + 1, into: &result) }
        }
        result.append(contentsOf: node.catchAll.map(\.route))
    }

    static func parameters(of pattern: PathPattern, path: String, segments: [RouteTable.Segment]) -> [(name: String, value: String)] {
        var result: [(name: String, value: String)] = []
        for (index, segment) in pattern.segments.enumerated() {
            switch segment {
            case .literal: continue
            case .parameter(let name): result.append((name, String(RouteTable.text(of: segments[index], in: path))))
            case .catchAll(let name):
                guard let name else { continue }
                result.append((name, index < segments.count ? segments[index...].map { RouteTable.text(of: $0, in: path) }.joined(separator: "/") : ""))
            }
        }
        return result
    }
}
