import HTTPTypes
import NIOCore

/// A stored response: status, fields and body, and what the freshness rules need. Immutable and
/// shared: a hit answers with its body's bytes without copying them.
public final class CachedResponse: Sendable {
    public let status: Int
    /// The upstream's fields, without hop-by-hop ones, `Age` and the gateway's own.
    public let fields: HTTPFields
    public let body: ByteBuffer
    /// Unix seconds when it was stored (or last revalidated).
    public let storedAt: Int64
    public let freshness: Freshness
    /// `host/path?query`, for purging by URL prefix and invalidation by unsafe methods.
    public let url: String
    /// Surrogate keys the upstream gave it (purge by tag).
    public let tags: [String]
    /// `fields` as header lines (`name: value\r\n`), rendered once: a hit writes them as they are.
    public let renderedFields: ByteBuffer

    public init(status: Int, fields: HTTPFields, body: ByteBuffer, storedAt: Int64, freshness: Freshness,
                url: String, tags: [String]) {
        self.status = status
        self.fields = fields
        self.body = body
        self.storedAt = storedAt
        self.freshness = freshness
        self.url = url
        self.tags = tags
        var rendered = ByteBuffer()
        rendered.reserveCapacity(fields.reduce(0) { $0 + $1.name.rawName.utf8.count + $1.value.utf8.count + 4 })
        for field in fields {
            rendered.writeString(field.name.rawName)
            rendered.writeStaticString(": ")
            rendered.writeString(field.value)
            rendered.writeStaticString("\r\n")
        }
        self.renderedFields = rendered
    }

    public var etag: String? { fields[.eTag] }
    public var lastModified: String? { fields[.lastModified] }
    public var hasValidators: Bool { fields[.eTag] != nil || fields[.lastModified] != nil }

    /// Bytes it takes in memory, counted against a store's budget: the body, the fields, the URL and
    /// tags, and a fixed share for the objects around them.
    public var size: Int {
        var total = 256 + body.readableBytes + url.utf8.count + renderedFields.readableBytes
        for field in fields { total += field.name.rawName.utf8.count + field.value.utf8.count + 48 }
        for tag in tags { total += tag.utf8.count + 16 }
        return total
    }

    /// How long a store keeps it (seconds): while it is fresh, may be served stale, or (with
    /// validators) revalidated cheaply.
    public var retention: Int64 {
        let remaining = max(0, freshness.lifetime - freshness.initialAge)
        let stale = max(freshness.staleWhileRevalidate, freshness.staleIfError)
        let revalidation: Int64 = hasValidators ? max(remaining, 3_600) : 0
        return max(1, remaining + max(stale, revalidation))
    }

    /// The same response with fields refreshed by a 304 (RFC 9111 section 4.3.4) and a new freshness.
    public func refreshed(with update: HTTPFields, storedAt: Int64, freshness: Freshness) -> CachedResponse {
        var fields = self.fields
        for name in Set(update.map(\.name)) where !CachedResponse.notUpdated.contains(name) {
            fields[values: name] = update[values: name]
        }
        return CachedResponse(status: status, fields: fields, body: body, storedAt: storedAt, freshness: freshness,
                              url: url, tags: tags)
    }

    /// Fields a 304 must not replace (they describe the stored body).
    static let notUpdated: Set<HTTPField.Name> = [.contentLength, .contentEncoding, .transferEncoding, .contentRange]

    /// Fields never stored: hop-by-hop ones, and those the gateway sets on each response.
    public static let unstoredFields: Set<HTTPField.Name> = [
        .connection, .transferEncoding, .age, .upgrade, .proxyAuthenticate, .te, .trailer,
        HTTPField.Name("Keep-Alive")!, HTTPField.Name("X-Cache")!, HTTPField.Name("X-Cache-Key")!,
    ]
}

/// What a store keeps under a key: a response, or (under a URL's primary key, when its responses
/// vary) the request fields its variants differ by.
public enum CacheRecord: Sendable {
    case response(CachedResponse)
    case variants([String])
}

extension CacheRecord {
    private static let magic: UInt32 = 0x5447_4331   // "TGC1"

    /// A compact binary form for the shared stores (Redis, Memcached).
    public func encoded(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var out = allocator.buffer(capacity: 256)
        out.writeInteger(Self.magic)
        func string(_ text: String) {
            out.writeInteger(UInt32(text.utf8.count))
            out.writeString(text)
        }
        switch self {
        case .variants(let names):
            out.writeInteger(UInt8(1))
            out.writeInteger(UInt16(names.count))
            names.forEach(string)
        case .response(let entry):
            out.writeInteger(UInt8(0))
            out.writeInteger(UInt16(entry.status))
            out.writeInteger(entry.storedAt)
            let f = entry.freshness
            for value in [f.lifetime, f.initialAge, f.staleWhileRevalidate, f.staleIfError] { out.writeInteger(value) }
            out.writeInteger(UInt8((f.mustRevalidate ? 1 : 0) | (f.noCache ? 2 : 0)))
            string(entry.url)
            out.writeInteger(UInt16(entry.tags.count))
            entry.tags.forEach(string)
            out.writeInteger(UInt16(entry.fields.count))
            for field in entry.fields {
                string(field.name.rawName)
                string(field.value)
            }
            out.writeInteger(UInt32(entry.body.readableBytes))
            out.writeImmutableBuffer(entry.body)
        }
        return out
    }

    /// Reads `encoded()`'s form; nil for anything else (a foreign or damaged value is a miss).
    public init?(decoding input: ByteBuffer) {
        var buffer = input
        guard buffer.readInteger(as: UInt32.self) == Self.magic, let kind = buffer.readInteger(as: UInt8.self) else { return nil }
        func string() -> String? {
            guard let length = buffer.readInteger(as: UInt32.self) else { return nil }
            return buffer.readString(length: Int(length))
        }
        if kind == 1 {
            guard let count = buffer.readInteger(as: UInt16.self) else { return nil }
            var names: [String] = []
            for _ in 0..<count {
                guard let name = string() else { return nil }
                names.append(name)
            }
            self = .variants(names)
            return
        }
        guard kind == 0, let status = buffer.readInteger(as: UInt16.self), let storedAt = buffer.readInteger(as: Int64.self),
              let lifetime = buffer.readInteger(as: Int64.self), let initialAge = buffer.readInteger(as: Int64.self),
              let swr = buffer.readInteger(as: Int64.self), let sie = buffer.readInteger(as: Int64.self),
              let flags = buffer.readInteger(as: UInt8.self), let url = string(),
              let tagCount = buffer.readInteger(as: UInt16.self) else { return nil }
        var tags: [String] = []
        for _ in 0..<tagCount {
            guard let tag = string() else { return nil }
            tags.append(tag)
        }
        guard let fieldCount = buffer.readInteger(as: UInt16.self) else { return nil }
        var fields = HTTPFields()
        for _ in 0..<fieldCount {
            guard let rawName = string(), let value = string(), let name = HTTPField.Name(rawName) else { return nil }
            fields.append(HTTPField(name: name, value: value))
        }
        guard let bodyLength = buffer.readInteger(as: UInt32.self), let body = buffer.readSlice(length: Int(bodyLength)) else {
            return nil
        }
        let freshness = Freshness(lifetime: lifetime, initialAge: initialAge, staleWhileRevalidate: swr, staleIfError: sie,
                                  mustRevalidate: flags & 1 != 0, noCache: flags & 2 != 0)
        self = .response(CachedResponse(status: Int(status), fields: fields, body: body, storedAt: storedAt,
                                        freshness: freshness, url: url, tags: tags))
    }
}
