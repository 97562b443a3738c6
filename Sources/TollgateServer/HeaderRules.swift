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

    /// Header names listed in `Connection:` (besides keep-alive/close/upgrade), which are hop-by-hop too.
    static func connectionListed(_ headers: HTTPHeaders) -> [String] {
        var names: [String] = []
        for value in headers[canonicalForm: "connection"] {
            let lower = value.lowercased()
            if lower != "close" && lower != "keep-alive" && lower != "upgrade" { names.append(String(value)) }
        }
        return names
    }

    /// Whether the request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
    static func isUpgradeRequest(_ headers: HTTPHeaders) -> Bool {
        headers.contains(name: "upgrade")
            && headers[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" }
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
