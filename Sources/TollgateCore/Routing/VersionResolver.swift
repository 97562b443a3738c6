import HTTPTypes

/// Finds a request's API version, once, from the sources `versioning:` enables, in this order: path
/// prefix (`/v2/users`), query parameter (`?version=2`), header (`API-Version: 2`), Accept media type
/// (`application/vnd.acme.v2+json`); else the default. A path version is removed from the path that
/// routes match and that goes upstream (a rewrite can put it back with `{version}`).
public struct VersionResolver: Sendable {
    public let config: VersioningConfig
    /// Whether resolving reads headers (API-Version or Accept).
    public var usesHeaders: Bool { config.header != nil || config.accept != nil }

    public init(config: VersioningConfig) {
        self.config = config
    }

    public func resolve(path: String, query: Substring?, headerFields: HTTPFields) -> (version: String?, path: String) {
        if let (before, after) = config.pathPrefix {
            let segments = path.utf8.dropFirst()
            let end = segments.firstIndex(of: UInt8(ascii: "/")) ?? path.utf8.endIndex
            let first = Substring(path.utf8[segments.startIndex..<end])
            if first.count > before.count + after.count, first.hasPrefix(before), first.hasSuffix(after) {
                let version = first.dropFirst(before.count).dropLast(after.count)
                // `/v2`, `/v2.1`: a path version starts with a digit, so `/version/...` is a path.
                if Self.isVersionToken(version), version.utf8.first.map({ $0 >= 48 && $0 <= 57 }) == true {
                    let rest = path[end...]
                    return (String(version), rest.isEmpty ? "/" : String(rest))
                }
            }
        }
        if let name = config.query, let version = QueryString.value(of: name, in: query), Self.isVersionToken(Substring(version)) {
            return (version, path)
        }
        if let name = config.header, let version = headerFields[name], Self.isVersionToken(Substring(version)) {
            return (version, path)
        }
        if let (before, after) = config.accept, let accept = headerFields[.accept] {
            for item in accept.split(separator: ",") {
                let mediaType = item.split(separator: ";", maxSplits: 1)[0].trimmingSpaces.lowercased()
                if mediaType.count > before.count + after.count, mediaType.hasPrefix(before), mediaType.hasSuffix(after) {
                    let version = mediaType.dropFirst(before.count).dropLast(after.count)
                    if Self.isVersionToken(Substring(version)) { return (String(version), path) }
                }
            }
        }
        return (config.defaultVersion, path)
    }

    /// Versions are short tokens: `2`, `2.1`, `2024-01-01`, `beta`.
    static func isVersionToken(_ text: Substring) -> Bool {
        !text.isEmpty && text.utf8.count <= 32 && text.utf8.allSatisfy {
            ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 46 || $0 == 45 || $0 == 95
        }
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs (header list items).
    public var trimmingSpaces: Substring {
        var result = self
        while result.first == " " || result.first == "\t" { result = result.dropFirst() }
        while result.last == " " || result.last == "\t" { result = result.dropLast() }
        return result
    }
}
