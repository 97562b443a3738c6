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

    /// The coding to use among `supported` (lowercase, in the server's order of preference): the one
    /// with the highest q-value the client gives (a `*` covers codings it does not name); `identity`
    /// when none is acceptable or the header is absent. Parsed from the bytes without allocating:
    /// this runs on every request of a compressing route.
    public static func preferred(_ values: [String], among supported: [String]) -> String {
        guard !values.isEmpty, !supported.isEmpty else { return "identity" }
        // Weights in thousandths (q has at most three decimals); -1: not named.
        var weights = [Int](repeating: -1, count: supported.count)
        var wildcard = -1
        for value in values {
            var value = value
            value.withUTF8 { bytes in
                var index = 0
                let count = bytes.count
                while index < count {
                    // One item: a coding, then parameters, up to a comma.
                    while index < count && (bytes[index] == 0x20 || bytes[index] == 0x09 || bytes[index] == 0x2C) { index += 1 }
                    let tokenStart = index
                    while index < count && bytes[index] != 0x3B && bytes[index] != 0x2C && bytes[index] != 0x20 && bytes[index] != 0x09 {
                        index += 1
                    }
                    let token = UnsafeBufferPointer(rebasing: bytes[tokenStart..<index])
                    var q = 1000
                    while index < count && bytes[index] != 0x2C {
                        if bytes[index] == 0x3B {
                            index += 1
                            while index < count && (bytes[index] == 0x20 || bytes[index] == 0x09) { index += 1 }
                            if index + 1 < count && (bytes[index] | 0x20) == UInt8(ascii: "q") && bytes[index + 1] == UInt8(ascii: "=") {
                                index += 2
                                q = parseQ(bytes, &index)
                                continue
                            }
                        }
                        index += 1
                    }
                    guard !token.isEmpty else { continue }
                    if token.count == 1 && token[0] == UInt8(ascii: "*") {
                        wildcard = q
                    } else if let position = position(of: token, in: supported) {
                        weights[position] = q
                    }
                }
            }
        }
        var best = -1
        var bestQ = 0
        for index in supported.indices {
            let q = weights[index] >= 0 ? weights[index] : wildcard
            if q > bestQ {
                best = index
                bestQ = q
            }
        }
        return best >= 0 ? supported[best] : "identity"
    }

    /// A q-value (`0`, `0.5`, `1.000`) in thousandths, read from `index`; malformed counts as 0.
    private static func parseQ(_ bytes: UnsafeBufferPointer<UInt8>, _ index: inout Int) -> Int {
        guard index < bytes.count else { return 0 }
        let whole = bytes[index]
        guard whole == UInt8(ascii: "0") || whole == UInt8(ascii: "1") else { return 0 }
        var value = whole == UInt8(ascii: "1") ? 1000 : 0
        index += 1
        if index < bytes.count && bytes[index] == UInt8(ascii: ".") {
            index += 1
            var scale = 100
            while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
                if scale > 0 { value += Int(bytes[index] - UInt8(ascii: "0")) * scale }
                scale /= 10
                index += 1
            }
        }
        return min(1000, value)
    }

    /// Which of `supported` the token names (ASCII case-insensitive; `x-gzip` is gzip).
    private static func position(of token: UnsafeBufferPointer<UInt8>, in supported: [String]) -> Int? {
        for (index, name) in supported.enumerated() {
            if matches(token, name) || (name == "gzip" && matches(token, "x-gzip")) { return index }
        }
        return nil
    }

    private static func matches(_ token: UnsafeBufferPointer<UInt8>, _ name: String) -> Bool {
        ASCIICase.equals(UnsafeRawBufferPointer(token), name)
    }
}
