import HTTPTypes
import NIOCore

/// What a header field means to the proxy, decided once from its name while the head is parsed, so
/// that forwarding is a switch per field instead of string comparisons.
public enum FieldKind: UInt8, Sendable {
    case other
    case host
    case contentLength
    case transferEncoding
    case connection
    case upgrade
    case te
    case trailer
    case keepAlive
    case proxyConnection
    case proxyAuthenticate
    case proxyAuthorization
    case via
    case forwarded
    case xForwardedFor
    case xForwardedHost
    case xForwardedProto
    /// The configured request-id header (`X-Request-ID` by default).
    case requestID
    /// End-to-end fields found by the parser for the log and trace context (copied as any other).
    case userAgent
    case traceparent
    case tracestate

    /// RFC 9110 section 7.6.1, plus the old Proxy-Connection and Keep-Alive.
    @inlinable
    public var isHopByHop: Bool {
        switch self {
        case .connection, .upgrade, .te, .trailer, .keepAlive, .proxyConnection, .proxyAuthenticate, .proxyAuthorization:
            return true
        default:
            return false
        }
    }
}

/// One header line of a `RawHead`, as offsets into its bytes.
public struct RawField: Sendable {
    /// The one of `names` this field's name is (ASCII case-insensitive), read from the head's bytes `p`.
    public func name(in names: [HTTPField.Name], _ p: UnsafeRawBufferPointer) -> HTTPField.Name? {
        let bytes = UnsafeRawBufferPointer(rebasing: p[Int(start)..<Int(nameEnd)])
        // Borrowed through the buffer: iterating the array retained and released each name per field.
        let found: Int? = names.withUnsafeBufferPointer { candidates in
            candidates.indices.first { ASCIICase.equals(bytes, candidates[$0].canonicalName) }
        }
        return found.map { names[$0] }
    }

    /// Start of the name (the line).
    public var start: UInt32
    public var nameEnd: UInt32
    /// The value without surrounding whitespace.
    public var valueStart: UInt32
    public var valueEnd: UInt32
    /// Just after the line's CRLF.
    public var end: UInt32
    public var kind: FieldKind
}

/// The tokens of the `Connection` header fields.
public struct ConnectionTokens: Sendable {
    public var close = false
    public var keepAlive = false
    public var upgrade = false
    /// Other tokens: the names of further hop-by-hop fields (RFC 9110 section 7.6.1), lowercased.
    /// Nil when there are none (the usual case: nothing to retain when a head is copied).
    public var extraTokens: [String]?

    public var listed: [String] { extraTokens ?? [] }
    public var hasListed: Bool { extraTokens != nil }
}

/// A parsed HTTP/1 request or response head, kept as the bytes it arrived in plus offsets: a field the
/// proxy does not change is forwarded by copying its line, never turned into a String.
public struct RawHead: Sendable {
    /// The head from its start line through the empty line that ends it.
    public var bytes: ByteBuffer
    public var fields: [RawField]
    /// 0 or 1 (HTTP/1.0 or HTTP/1.1).
    public var minorVersion: Int
    /// Request line: method is `0..<methodEnd`, the target `targetStart..<targetEnd`.
    public var methodEnd: UInt32 = 0
    public var targetStart: UInt32 = 0
    public var targetEnd: UInt32 = 0
    /// Where the target's query begins (its `?`), or `targetEnd` when it has none.
    public var queryStart: UInt32 = 0
    /// Status line: the code, and the reason phrase's range.
    public var status: Int = 0
    public var reasonStart: UInt32 = 0
    public var reasonEnd: UInt32 = 0
    /// Just after the start line's CRLF.
    public var startLineEnd: UInt32 = 0

    // Facts gathered while parsing.
    public var hostIndex: Int?
    public var requestIDIndex: Int?
    public var upgradeIndex: Int?
    public var userAgentIndex: Int?
    public var traceparentIndex: Int?
    public var tracestateIndex: Int?
    /// The Content-Length (all fields agreed), or nil.
    public var contentLength: Int?
    public var contentLengthFields = 0
    public var transferEncodingFields = 0
    /// The last transfer coding is `chunked`.
    public var chunked = false
    /// The Transfer-Encoding fields say exactly `chunked`, nothing else.
    public var onlyChunked = false
    public var connection = ConnectionTokens()
    /// A framing problem found while parsing (conflicting or invalid Content-Length).
    public var framingProblem: String?

    private static let noBytes = ByteBuffer()

    /// An empty head, to parse into.
    public init() {
        self.bytes = Self.noBytes
        self.fields = []
        self.minorVersion = 1
    }

    /// Back to empty, keeping the field array's capacity when no one else holds it.
    mutating func reset() {
        fields.removeAll(keepingCapacity: true)
        if fields.capacity < 16 { fields.reserveCapacity(16) }
        minorVersion = 1
        methodEnd = 0
        targetStart = 0
        targetEnd = 0
        queryStart = 0
        status = 0
        reasonStart = 0
        reasonEnd = 0
        startLineEnd = 0
        hostIndex = nil
        requestIDIndex = nil
        upgradeIndex = nil
        userAgentIndex = nil
        traceparentIndex = nil
        tracestateIndex = nil
        contentLength = nil
        contentLengthFields = 0
        transferEncodingFields = 0
        chunked = false
        onlyChunked = false
        connection = ConnectionTokens()
        framingProblem = nil
    }

    /// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 only when told `keep-alive`.
    public var isKeepAlive: Bool {
        minorVersion >= 1 ? !connection.close : (connection.keepAlive && !connection.close)
    }

    /// `Connection: upgrade` together with `Upgrade:`: a protocol switch (WebSocket).
    public var isUpgrade: Bool { upgradeIndex != nil && connection.upgrade }

    @inlinable
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try bytes.withUnsafeReadableBytes(body)
    }

    public func string(_ start: UInt32, _ end: UInt32) -> String {
        withBytes { String(decoding: UnsafeRawBufferPointer(rebasing: $0[Int(start)..<Int(end)]), as: UTF8.self) }
    }

    public func name(_ index: Int) -> String { string(fields[index].start, fields[index].nameEnd) }
    public func value(_ index: Int) -> String { string(fields[index].valueStart, fields[index].valueEnd) }

    public var target: String { string(targetStart, targetEnd) }
    public var methodString: String { string(0, methodEnd) }
    public var reason: String { string(reasonStart, reasonEnd) }
    public var host: String? { hostIndex.map(value) }

    public var userAgent: String? { userAgentIndex.map(value) }

    /// The method, without building a String for the common ones.
    public var method: HTTPRequest.Method? {
        withBytes { p -> HTTPRequest.Method? in
            let m = UnsafeRawBufferPointer(rebasing: p[0..<Int(methodEnd)])
            switch m.count {
            case 3:
                if m[0] == 0x47 && m[1] == 0x45 && m[2] == 0x54 { return .get }
                if m[0] == 0x50 && m[1] == 0x55 && m[2] == 0x54 { return .put }
            case 4:
                if m[0] == 0x50 && m[1] == 0x4F && m[2] == 0x53 && m[3] == 0x54 { return .post }
                if m[0] == 0x48 && m[1] == 0x45 && m[2] == 0x41 && m[3] == 0x44 { return .head }
            default: break
            }
            return HTTPRequest.Method(String(decoding: m, as: UTF8.self))
        }
    }

    public var isHeadMethod: Bool {
        methodEnd == 4 && withBytes { $0[0] == 0x48 && $0[1] == 0x45 && $0[2] == 0x41 && $0[3] == 0x44 }
    }

    /// Whether field `index` is named in `Connection` (and so hop-by-hop).
    public func isListedInConnection(_ index: Int) -> Bool {
        guard connection.hasListed else { return false }
        let name = self.name(index).lowercased()
        return connection.listed.contains(name)
    }

    /// Every field as swift-http-types fields (for plugins), optionally leaving some kinds out.
    public func httpFields(excluding excluded: (FieldKind) -> Bool = { _ in false }) -> HTTPFields {
        var result = HTTPFields()
        result.reserveCapacity(fields.count)
        for index in fields.indices where !excluded(fields[index].kind) {
            if let name = HTTPField.Name(self.name(index)) {
                result.append(HTTPField(name: name, value: value(index)))
            }
        }
        return result
    }

    /// The value of the first field named `names[0]` whose value is not empty, else of `names[1]`...
    /// (names ASCII case-insensitive), read in place and given to `body`; nil when there is none.
    @inlinable
    public func withFirstValue<Result>(of names: [HTTPField.Name], _ body: (UnsafeRawBufferPointer) -> Result) -> Result? {
        withBytes { p -> Result? in
            for name in names {
                let wanted = name.canonicalName
                for field in fields where field.valueEnd > field.valueStart {
                    let fieldName = UnsafeRawBufferPointer(rebasing: p[Int(field.start)..<Int(field.nameEnd)])
                    if ASCIICase.equals(fieldName, wanted) {
                        return body(UnsafeRawBufferPointer(rebasing: p[Int(field.valueStart)..<Int(field.valueEnd)]))
                    }
                }
            }
            return nil
        }
    }

    /// Only the fields with one of `names` (ASCII case-insensitive), converted; the others are not.
    public func httpFields(named names: [HTTPField.Name]) -> HTTPFields {
        var result = HTTPFields()
        guard !names.isEmpty else { return result }
        withBytes { p in
            for index in fields.indices {
                if let name = fields[index].name(in: names, p) {
                    result.append(HTTPField(name: name, value: value(index)))
                }
            }
        }
        return result
    }

    /// Request smuggling defence (RFC 9112 section 6.3): ambiguous request framing is refused outright.
    public var requestFramingProblem: String? {
        if let framingProblem { return framingProblem }
        if transferEncodingFields > 0 {
            if contentLengthFields > 0 { return "both Content-Length and Transfer-Encoding" }
            if minorVersion == 0 { return "Transfer-Encoding in an HTTP/1.0 request" }
            if !onlyChunked { return "unsupported Transfer-Encoding" }
        }
        return nil
    }
}
