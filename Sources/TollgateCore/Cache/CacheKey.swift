import HTTPTypes

/// How a cache names a request: which parts go into its key, and how the query is normalized.
public struct CacheKeySpec: Sendable, Equatable {
    public enum Part: Sendable, Equatable {
        case method
        case host
        case path
        case query
        case header(HTTPField.Name)
        case consumer
    }

    public var parts: [Part]
    /// Only these query parameters count (nil: all but the ignored ones).
    public var queryParameters: Set<String>?
    public var ignoredQueryParameters: Set<String>

    public init(parts: [Part] = [.method, .host, .path, .query], queryParameters: Set<String>? = nil,
                ignoredQueryParameters: Set<String> = []) {
        self.parts = parts
        self.queryParameters = queryParameters
        self.ignoredQueryParameters = ignoredQueryParameters
    }

    /// The key of a request. HEAD shares GET's key (a stored GET answers a HEAD). Built as bytes in
    /// one allocation: this runs on every lookup.
    public func key(method: HTTPRequest.Method, host: String?, path: String, query: Substring?, fields: HTTPFields,
                    consumer: String?) -> String {
        var pieces: [Piece] = []
        pieces.reserveCapacity(parts.count)
        var total = parts.count
        for part in parts {
            let piece: Piece
            switch part {
            case .method: piece = .text(method == .head ? "GET" : method.rawValue)
            case .host: piece = .host(host.map { Self.hostName($0) } ?? "")
            case .path: piece = .text(path)
            case .query:
                if let query, !query.isEmpty { piece = .text(normalizedQuery(query)) } else { piece = .text("") }
            case .header(let name): piece = .text(name.canonicalName + "=" + fields[values: name].joined(separator: ","))
            case .consumer: piece = .text("c=" + (consumer ?? ""))
            }
            total += piece.count
            pieces.append(piece)
        }
        return String(unsafeUninitializedCapacity: total) { buffer in
            var offset = 0
            for (index, piece) in pieces.enumerated() {
                if index > 0 {
                    buffer[offset] = UInt8(ascii: "|")
                    offset += 1
                }
                offset = piece.write(into: buffer, at: offset)
            }
            return offset
        }
    }

    /// One part of a key: text as it is, or a host name lowercased while it is copied.
    private enum Piece {
        case text(String)
        case host(Substring)

        var count: Int {
            switch self {
            case .text(let text): return text.utf8.count
            case .host(let name): return name.utf8.count
            }
        }

        func write(into buffer: UnsafeMutableBufferPointer<UInt8>, at start: Int) -> Int {
            var offset = start
            switch self {
            case .text(var text):
                offset = text.withUTF8 { bytes in
                    guard let source = bytes.baseAddress, bytes.count > 0 else { return offset }
                    (buffer.baseAddress! + offset).update(from: source, count: bytes.count)
                    return offset + bytes.count
                }
            case .host(let name):
                for byte in name.utf8 {
                    buffer[offset] = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
                    offset += 1
                }
            }
            return offset
        }
    }

    /// The host without its port (found by bytes).
    static func hostName(_ host: String) -> Substring {
        let bytes = host.utf8
        if bytes.first != UInt8(ascii: "["), let colon = bytes.lastIndex(of: UInt8(ascii: ":")) { return host[..<colon] }
        return host[...]
    }

    /// The query's parameters sorted (by name, then value), without empty ones, and filtered by the
    /// include or ignore lists: `?b=2&a=1` and `?a=1&b=2` name the same response.
    public func normalizedQuery(_ query: Substring) -> String {
        var pairs: [(Substring, Substring)] = []
        for item in query.split(separator: "&") where !item.isEmpty {
            let name: Substring
            let value: Substring
            if let equals = item.firstIndex(of: "=") {
                name = item[..<equals]
                value = item[item.index(after: equals)...]
            } else {
                name = item
                value = ""
            }
            if let only = queryParameters, !only.contains(String(name)) { continue }
            if ignoredQueryParameters.contains(String(name)) { continue }
            pairs.append((name, value))
        }
        if pairs.count > 1 { pairs.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 } }
        return pairs.map { $0.1.isEmpty ? String($0.0) : "\($0.0)=\($0.1)" }.joined(separator: "&")
    }

    /// The key of one variant, for responses that vary by `names` (their `Vary`): the primary key
    /// and the request's values of those fields, whitespace-normalized. `Accept-Encoding` counts as
    /// the coding it selects (`br`, `gzip`, `deflate` or `identity`), so clients that accept the same
    /// coding share a variant.
    public static func variantKey(primary: String, names: [String], fields: HTTPFields) -> String {
        var key = primary + "|vary"
        for name in names {
            key += "|" + name + "="
            guard let fieldName = HTTPField.Name(name) else { continue }
            if fieldName == .acceptEncoding {
                key += AcceptEncoding.preferred(fields[values: .acceptEncoding], among: AcceptEncoding.cacheCodings)
                continue
            }
            let value = fields[values: fieldName].joined(separator: ",")
            key += value.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
        }
        return key
    }

    /// The lowercased field names of a response's `Vary`, sorted (nil: it does not vary).
    public static func varyNames(_ fields: HTTPFields) -> [String]? {
        let names = fields[values: .vary].flatMap { $0.split(separator: ",") }.map { $0.trimmingSpaces.lowercased() }
            .filter { !$0.isEmpty }
        guard !names.isEmpty else { return nil }
        return Array(Set(names)).sorted()
    }
}

/// `Accept-Encoding` negotiation (RFC 9110 section 12.5.3).
public enum AcceptEncoding {
    /// The codings a cache tells apart.
    public static let cacheCodings = ["br", "gzip", "deflate"]

    /// The coding to use among `supported` (in the server's order of preference): the one with the
    /// highest q-value the client gives (a `*` covers codings it does not name); `identity` when none is
    /// acceptable or the header is absent.
    public static func preferred(_ values: [String], among supported: [String]) -> String {
        guard !values.isEmpty else { return "identity" }
        var weights: [String: Double] = [:]
        var wildcard: Double?
        for value in values {
            for item in value.split(separator: ",") {
                let parts = item.split(separator: ";")
                guard let first = parts.first else { continue }
                let coding = first.trimmingSpaces.lowercased()
                var q = 1.0
                for parameter in parts.dropFirst() {
                    let text = parameter.trimmingSpaces
                    if text.lowercased().hasPrefix("q="), let parsed = Double(text.dropFirst(2)) { q = min(1, max(0, parsed)) }
                }
                if coding == "*" { wildcard = q } else if coding == "x-gzip" { weights["gzip"] = q } else { weights[coding] = q }
            }
        }
        var best = "identity"
        var bestQ = 0.0
        for coding in supported {
            let q = weights[coding] ?? wildcard ?? 0
            if q > bestQ {
                best = coding
                bestQ = q
            }
        }
        return best
    }
}
