import HTTPTypes
import NIOCore

/// A typed slot in `RequestContext` (Kong's `kong.ctx`, typed as in Hummingbird).
public protocol ContextKey {
    associatedtype Value: Sendable
}

/// A slot whose value is a class instance: kept in the context without a box. Read and written only
/// through the key's concrete type (a generic `ContextKey` access would look for a box).
public protocol ObjectContextKey: ContextKey where Value: AnyObject {}

/// Per-request state shared by the plugins of one request. A value type: it lives in the connection
/// handler on the event loop, and is copied only when a plugin suspends.
public struct RequestContext: Sendable {
    /// The request's id (the client's, or generated), as the heads and the access log write it.
    public var id: RequestID
    /// The request's id as text (built on each read when the gateway generated it: prefer `id` on
    /// a path every request takes).
    public var requestID: String {
        get { id.string }
        set { id = RequestID(newValue) }
    }
    /// The matched route (nil before routing or when no route matched).
    public var route: CompiledRoute?
    /// Named path parameters of the match: `/users/{id}` gives `["id": "42"]`.
    public var pathParameters: [(name: String, value: String)]
    /// The API version the request resolved to (or the configured default).
    public var version: String?
    public var clientIP: String
    /// The path the client sent, normalized, before strip_prefix/rewrite.
    public var originalPath: String
    /// Monotonic start time in nanoseconds.
    public var startNanos: UInt64
    /// Who is calling, once an authentication plugin accepted a credential (or let the route's
    /// anonymous consumer in); nil before, or when the route has no authentication.
    public var consumer: Consumer?
    /// Which credential identified the consumer (an identifier such as `key:9f86d081` or a user name,
    /// never the secret): for logs and rate-limit keys.
    public var credential: String?
    /// The OAuth scopes the credential carries (JWT `scope`/`scp`, introspection).
    public var scopes: [String] = []
    /// Whether `consumer` is the anonymous consumer of an optional authentication.
    public var isAnonymous = false
    /// Header-field changes for the upstream request that plugins asked for without rewriting the
    /// request (identity fields, a removed credential): applied while the client's head is copied.
    public var upstreamFieldEdits: FieldEdits?
    /// The client's certificate, on a TLS listener that asked for one (verified against its
    /// `client_ca` during the handshake).
    public var clientCertificate: ClientCertificate?
    /// What rate limiting decided (`allowed`, `rejected`, `delayed`, `fail_open`...), for logs and metrics.
    public var rateLimitOutcome: String?
    /// Why authentication or authorization refused the request (`missing_credentials`...), for metrics.
    public var authFailure: String?
    /// `HIT`, `MISS`... once a cache plugin looked the request up.
    public var cacheStatus: String?
    /// Stages the response body passes before it reaches the client (compression, the cache's
    /// recorder), added by response hooks.
    public var responseFilters: [any ResponseBodyFilter] = []
    /// Set by a `readBody` continuation: the body that goes upstream instead of the one read (a
    /// decompressed request body). The continuation fixes the framing fields to match.
    public var replacementRequestBody: ByteBuffer?
    /// How plugins that asked (`wantsSubrequests`) send requests of their own to the route's service.
    public var subrequests: (any SubrequestClient)?
    /// The client's request head as it arrived (its bytes shared, not copied), for hooks that said
    /// they read it (`GatewayPlugin.readsClientHead`), when no plugin of the route changes the
    /// request: such a hook finds a field or two here (`RawHead.withFirstValue`) without the head
    /// being converted into `HTTPFields`. Nil otherwise (the request the hooks get then carries every
    /// field) and in tests that run hooks alone. Boxed: a head is large, and most requests have none.
    public var clientHead: SharedHead?
    /// The W3C trace context of this request, once the tracing plugin read or made it.
    public var trace: TraceContext?
    /// Nanoseconds each plugin of the chain spent in its request and response hooks, by chain index;
    /// kept only when a log hook asked for timings.
    public var pluginTimings: [UInt64]?
    /// The connection's event loop, for plugins that answer with a `pending` future (nil in unit tests
    /// that run hooks without a server).
    public var eventLoop: (any EventLoop)?
    /// Plugin values by key: the first in a slot of its own (most requests meet one key at most, and
    /// the slot needs no array), the others in a short list; each value in a box of its key's value
    /// type, or itself for a class (`ObjectContextKey`), so reading needs no dictionary hashing and no
    /// dynamic cast. Inlinable (with the subscripts) so each plugin's access is specialized for its
    /// key, not run generically.
    @usableFromInline var firstKey: ObjectIdentifier?
    @usableFromInline var firstValue: (any AnyObject & Sendable)?
    @usableFromInline var storage: [(key: ObjectIdentifier, box: any AnyObject & Sendable)] = []

    public init(requestID: RequestID, clientIP: String, originalPath: String = "/", startNanos: UInt64 = 0,
                eventLoop: (any EventLoop)? = nil) {
        self.id = requestID
        self.route = nil
        self.pathParameters = []
        self.version = nil
        self.clientIP = clientIP
        self.originalPath = originalPath
        self.startNanos = startNanos
        self.consumer = nil
        self.credential = nil
        self.eventLoop = eventLoop
    }

    @inlinable
    public subscript<Key: ContextKey>(key: Key.Type) -> Key.Value? {
        get {
            guard let object = object(for: ObjectIdentifier(key)) else { return nil }
            // The key decides the box's type: `Key.Value` was stored under it.
            return unsafeDowncast(object, to: ContextBox<Key.Value>.self).value
        }
        set { setObject(newValue.map { ContextBox($0) }, for: ObjectIdentifier(key)) }
    }

    /// A class instance kept as it is (no box): one allocation fewer per value.
    @inlinable
    public subscript<Key: ObjectContextKey>(key: Key.Type) -> Key.Value? {
        get { object(for: ObjectIdentifier(key)).map { unsafeDowncast($0, to: Key.Value.self) } }
        set { setObject(newValue, for: ObjectIdentifier(key)) }
    }

    @inlinable
    func object(for id: ObjectIdentifier) -> (any AnyObject & Sendable)? {
        if firstKey == id { return firstValue }
        for entry in storage where entry.key == id { return entry.box }
        return nil
    }

    @inlinable
    mutating func setObject(_ object: (any AnyObject & Sendable)?, for id: ObjectIdentifier) {
        if firstKey == id {
            firstValue = object
            if object == nil { firstKey = nil }
            return
        }
        let index = storage.firstIndex { $0.key == id }
        switch (index, object) {
        case (let index?, let object?): storage[index].box = object
        case (let index?, nil): storage.remove(at: index)
        case (nil, let object?):
            if firstKey == nil {
                firstKey = id
                firstValue = object
            } else {
                storage.append((id, object))
            }
        case (nil, nil): break
        }
    }

    public func pathParameter(_ name: String) -> String? {
        pathParameters.first { $0.name == name }?.value
    }
}

/// A request's place in a distributed trace (W3C Trace Context): the trace, this gateway's span for
/// the request, its parent in the caller, and whether it is sampled. Ids are kept as numbers and
/// written as hex only where they are shown (the upstream's `traceparent`, a log line).
public struct TraceContext: Sendable {
    public var traceIDHigh: UInt64
    public var traceIDLow: UInt64
    /// The span the upstream request is a child of.
    public var spanID: UInt64
    /// The caller's span (0: none).
    public var parentSpanID: UInt64
    public var sampled: Bool
    /// Whether the upstream request carries `traceparent` (and `tracestate`).
    public var propagate = true
    /// The rarer parts, boxed so that copying a trace context copies one reference at most.
    public var extras: TraceExtras?

    /// The caller's `tracestate`, passed on.
    public var traceState: String? {
        get { extras?.traceState }
        set { extras = TraceExtras(traceState: newValue, span: extras?.span) }
    }

    /// What the sampled request's span is, for the tracing plugin (opaque here).
    public var span: (any Sendable)? {
        get { extras?.span }
        set { extras = TraceExtras(traceState: extras?.traceState, span: newValue) }
    }

    public init(traceIDHigh: UInt64, traceIDLow: UInt64, spanID: UInt64, parentSpanID: UInt64 = 0, sampled: Bool,
                traceState: String? = nil) {
        self.traceIDHigh = traceIDHigh
        self.traceIDLow = traceIDLow
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.sampled = sampled
        if let traceState { self.extras = TraceExtras(traceState: traceState, span: nil) }
    }

    /// 32 lowercase hex digits.
    public var traceID: String { Self.hex([traceIDHigh, traceIDLow]) }
    /// 16 lowercase hex digits.
    public var spanIDHex: String { Self.hex([spanID]) }

    /// `00-<trace>-<span>-<flags>`, written into a stack buffer.
    public func withTraceparent<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 55) { buffer in
            buffer[0] = 0x30; buffer[1] = 0x30; buffer[2] = 0x2D
            Self.writeHex(traceIDHigh, into: buffer, at: 3)
            Self.writeHex(traceIDLow, into: buffer, at: 19)
            buffer[35] = 0x2D
            Self.writeHex(spanID, into: buffer, at: 36)
            buffer[52] = 0x2D; buffer[53] = 0x30; buffer[54] = sampled ? 0x31 : 0x30
            return body(UnsafeRawBufferPointer(buffer))
        }
    }

    public var traceparent: String { withTraceparent { String(decoding: $0, as: UTF8.self) } }

    /// Two hex digits per byte value, as one little-endian UInt16 ("0f" is 0x6630).
    private static let hexPairs: [UInt16] = (0..<256).map { value in
        let digits = Array("0123456789abcdef".utf8)
        return UInt16(digits[value >> 4]) | UInt16(digits[value & 0xF]) << 8
    }

    @inline(__always)
    public static func writeHex(_ value: UInt64, into buffer: UnsafeMutableBufferPointer<UInt8>, at offset: Int) {
        let destination = UnsafeMutableRawPointer(buffer.baseAddress! + offset)
        hexPairs.withUnsafeBufferPointer { pairs in
            var shift: UInt64 = 56
            for index in 0..<8 {
                destination.storeBytes(of: pairs[Int((value >> shift) & 0xFF)], toByteOffset: index * 2, as: UInt16.self)
                shift &-= 8
            }
        }
    }

    static func hex(_ values: [UInt64]) -> String {
        String(unsafeUninitializedCapacity: values.count * 16) { buffer in
            for (index, value) in values.enumerated() { writeHex(value, into: buffer, at: index * 16) }
            return values.count * 16
        }
    }
}

/// A trace context's `tracestate` and span, when it has either.
public final class TraceExtras: Sendable {
    public let traceState: String?
    public let span: (any Sendable)?

    public init(traceState: String?, span: (any Sendable)?) {
        self.traceState = traceState
        self.span = span
    }
}

/// What starts a request's trace context: given the caller's `traceparent` and `tracestate` (when it
/// sent them), sets `context.trace`. The server calls it right after routing, from the raw head (no
/// request hook, no header conversion), and writes the propagated fields itself.
public protocol RequestTracer: Sendable {
    func begin(traceparent: String?, tracestate: String?, context: inout RequestContext)
}

/// What a plugin may know of a client certificate (verified by the TLS layer).
public final class ClientCertificate: Sendable {
    /// RFC 4514 form: `CN=alice,O=Acme`.
    public let subject: String
    public let commonName: String?
    /// DNS names, e-mail addresses, URIs and IP addresses, as text.
    public let subjectAlternativeNames: [String]
    /// Lowercase hex, without leading zeros.
    public let serialNumber: String

    public init(subject: String, commonName: String?, subjectAlternativeNames: [String], serialNumber: String) {
        self.subject = subject
        self.commonName = commonName
        self.subjectAlternativeNames = subjectAlternativeNames
        self.serialNumber = serialNumber
    }
}

/// Header-field changes for the upstream request: fields removed by name, fields added. Cheaper than
/// rewriting the request (the client's head is copied line by line, skipping the removed names).
/// Copy-on-write over one reference, so a request without edits (an optional edit set, nil) and one
/// with prepared edits (a consumer's identity fields) each cost a word.
public struct FieldEdits: Sendable {
    /// Mutated only while uniquely referenced (copy-on-write), hence unchecked.
    private final class Storage: @unchecked Sendable {
        var removed: [HTTPField.Name] = []
        var added: [HTTPField] = []
        var addedLines: [UInt8] = []
        var removedPacked: [UInt8] = []
        var hasLongRemovedNames = false

        init() {}

        func copy() -> Storage {
            let copy = Storage()
            copy.removed = removed
            copy.added = added
            copy.addedLines = addedLines
            copy.removedPacked = removedPacked
            copy.hasLongRemovedNames = hasLongRemovedNames
            return copy
        }
    }

    private var storage = Storage()

    public init() {}

    public var removed: [HTTPField.Name] { storage.removed }
    public var added: [HTTPField] { storage.added }
    /// `added` as header lines (`name: value\r\n`), kept in step with it: edits prepared once (an
    /// authenticated consumer's identity fields) are then written upstream as one copy.
    public var addedLines: [UInt8] { storage.addedLines }
    /// Some removed name is too long for `removes` (the writer then checks `removed` itself).
    public var hasLongRemovedNames: Bool { storage.hasLongRemovedNames }
    public var isEmpty: Bool { storage.removed.isEmpty && storage.added.isEmpty }

    /// Whether a field with this name (as it came, any case) is removed. Names are kept packed: each
    /// one's length, then its lowercase bytes.
    public func removes(_ name: UnsafeRawBufferPointer) -> Bool {
        storage.removedPacked.withUnsafeBufferPointer { packed in
            var index = 0
            while index < packed.count {
                let length = Int(packed[index])
                index += 1
                if length == name.count {
                    var offset = 0
                    while offset < length && ASCIICase.lowered(name[offset]) == packed[index + offset] { offset += 1 }
                    if offset == length { return true }
                }
                index += length
            }
            return false
        }
    }

    /// Drops every field of this name (the client's, and any added before).
    public mutating func remove(_ name: HTTPField.Name) {
        unique()
        let storage = self.storage
        if !storage.removed.contains(name) {
            storage.removed.append(name)
            // Names longer than 255 bytes are matched by `removed` alone (see `HeadWriter`).
            let bytes = Array(name.canonicalName.utf8)
            if bytes.count <= 255 {
                storage.removedPacked.append(UInt8(bytes.count))
                storage.removedPacked.append(contentsOf: bytes)
            } else {
                storage.hasLongRemovedNames = true
            }
        }
        let count = storage.added.count
        storage.added.removeAll { $0.name == name }
        if storage.added.count != count {
            storage.addedLines = []
            for field in storage.added { Self.render(field, into: &storage.addedLines) }
        }
    }

    /// Replaces every field of this name with one.
    public mutating func set(_ name: HTTPField.Name, _ value: String) {
        remove(name)
        let field = HTTPField(name: name, value: value)
        storage.added.append(field)
        Self.render(field, into: &storage.addedLines)
    }

    /// Adds fields whose names were already removed (prepared identity fields): no checks.
    public mutating func append(_ fields: [HTTPField]) {
        unique()
        storage.added.append(contentsOf: fields)
        for field in fields { Self.render(field, into: &storage.addedLines) }
    }

    private mutating func unique() {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
    }

    private static func render(_ field: HTTPField, into lines: inout [UInt8]) {
        lines.append(contentsOf: field.name.rawName.utf8)
        lines.append(UInt8(ascii: ":"))
        lines.append(UInt8(ascii: " "))
        lines.append(contentsOf: field.value.utf8)
        lines.append(UInt8(ascii: "\r"))
        lines.append(UInt8(ascii: "\n"))
    }
}

extension RequestContext {
    /// Applies `change` to the upstream field edits (made on first use).
    public mutating func editUpstreamFields(_ change: (inout FieldEdits) -> Void) {
        var edits = upstreamFieldEdits ?? FieldEdits()
        change(&edits)
        upstreamFieldEdits = edits
    }
}

/// One context value, boxed so `RequestContext` can keep values of any type without existentials.
@usableFromInline
final class ContextBox<Value: Sendable>: Sendable {
    @usableFromInline let value: Value
    @usableFromInline init(_ value: Value) { self.value = value }
}

/// A request head shared by reference (`RequestContext.clientHead`).
public final class SharedHead: Sendable {
    public let head: RawHead

    public init(_ head: RawHead) {
        self.head = head
    }
}
