import HTTPTypes
import NIOHTTP1

/// Header work at the proxy boundary: hop-by-hop removal, forwarding headers, conversions between
/// NIO's heads and swift-http-types' messages for plugins.
enum HeaderRules {
    /// RFC 9110 section 7.6.1, plus the old Proxy-Connection and Keep-Alive.
    @inline(__always)
    static func isHopByHop(_ name: String) -> Bool {
        switch name.utf8.count {
        case 2: return name.caseInsensitiveEquals("te")
        case 7: return name.caseInsensitiveEquals("trailer") || name.caseInsensitiveEquals("upgrade")
        case 10: return name.caseInsensitiveEquals("connection") || name.caseInsensitiveEquals("keep-alive")
        case 16: return name.caseInsensitiveEquals("proxy-connection")
        case 18: return name.caseInsensitiveEquals("proxy-authenticate")
        case 19: return name.caseInsensitiveEquals("proxy-authorization")
        default: return false
        }
    }


    static func fields(_ headers: HTTPHeaders) -> HTTPFields {
        var fields = HTTPFields()
        fields.reserveCapacity(headers.count)
        for (name, value) in headers {
            if let fieldName = HTTPField.Name(name) { fields.append(HTTPField(name: fieldName, value: value)) }
        }
        return fields
    }

    static func headers(_ fields: HTTPFields) -> HTTPHeaders {
        HTTPHeaders(fields.map { ($0.name.rawName, $0.value) })
    }
}

/// What the proxy needs to know of a head's headers, found in one pass over them (instead of one
/// lookup, each a scan with case folding, per question).
struct HeadFacts {
    var host: String?
    var requestID: String?
    var contentLengths: [String] = []
    var transferEncodings: [String] = []
    var connection: [String] = []
    var upgrade: String?

    init(_ headers: HTTPHeaders, requestIDHeader: String) {
        let requestIDLength = requestIDHeader.utf8.count
        for (name, value) in headers {
            let length = name.utf8.count
            switch length {
            case 4 where name.caseInsensitiveEquals("host"): if host == nil { host = value }
            case 7 where name.caseInsensitiveEquals("upgrade"): upgrade = value
            case 10 where name.caseInsensitiveEquals("connection"): connection.append(value)
            case 14 where name.caseInsensitiveEquals("content-length"): contentLengths.append(value)
            case 17 where name.caseInsensitiveEquals("transfer-encoding"): transferEncodings.append(value)
            default: break
            }
            if length == requestIDLength && requestID == nil && name.asciiCaseInsensitiveEquals(requestIDHeader) {
                requestID = value
            }
        }
    }

    private var connectionTokens: [Substring] {
        connection.flatMap { $0.split(separator: ",").map(\.trimmingSpaces) }
    }

    /// Header names listed in `Connection:` (besides keep-alive/close/upgrade): hop-by-hop too.
    var connectionListed: [String] {
        guard !connection.isEmpty else { return [] }
        if connection.count == 1, connection[0].asciiCaseInsensitiveEquals("keep-alive") || connection[0].asciiCaseInsensitiveEquals("close") {
            return []   // the usual value, without splitting
        }
        return connectionTokens.compactMap { token in
            let text = String(token)
            if text.asciiCaseInsensitiveEquals("close") || text.asciiCaseInsensitiveEquals("keep-alive")
                || text.asciiCaseInsensitiveEquals("upgrade") { return nil }
            return text
        }
    }

    /// `Connection: upgrade` together with `Upgrade:`: a protocol switch (WebSocket).
    var isUpgrade: Bool {
        upgrade != nil && connectionTokens.contains { String($0).asciiCaseInsensitiveEquals("upgrade") }
    }

    var declaredLength: Int? { contentLengths.first.flatMap { Int($0) } }
}

extension String {
    /// ASCII case-insensitive equality, without lowercasing copies.
    func asciiCaseInsensitiveEquals(_ other: String) -> Bool {
        guard utf8.count == other.utf8.count else { return false }
        for (a, b) in zip(utf8, other.utf8) where a != b {
            let foldedA = a >= 65 && a <= 90 ? a | 0x20 : a
            let foldedB = b >= 65 && b <= 90 ? b | 0x20 : b
            if foldedA != foldedB { return false }
        }
        return true
    }

    @inline(__always)
    func caseInsensitiveEquals(_ lowercase: StaticString) -> Bool {
        let other = UnsafeBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        guard utf8.count == other.count else { return false }
        var index = 0
        for byte in utf8 {
            let folded = byte >= 65 && byte <= 90 ? byte | 0x20 : byte
            if folded != other[index] { return false }
            index += 1
        }
        return true
    }
}
