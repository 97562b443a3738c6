import HTTPTypes
import NIOCore

/// What the proxy adds to a request it forwards (RFC 7239 and the X-Forwarded family), prepared per
/// connection and per snapshot so a request only copies them. A class: passing it costs one retain.
public final class ForwardingValues: Sendable {
    // Rendered once as the bytes a head takes: a request copies these blocks instead of writing the
    // strings one by one (each string written looked at its representation first).
    /// `CLIENT-IP\r\nx-forwarded-proto: PROTO\r\n`: the end of X-Forwarded-For and the next line.
    let clientIPAndProtoLines: [UInt8]
    /// `for=...;proto=...`: the start of this hop's RFC 7239 element.
    let forwardedElementBytes: [UInt8]
    /// `1.1 tollgate\r\n`: the end of the Via line.
    let viaEnd: [UInt8]
    /// `x-request-id: `: the request-id field as written when the client sent none.
    let requestIDPrefix: [UInt8]

    /// `via` is this hop's Via value (`1.1 tollgate`); `requestIDName` the request-id header's name;
    /// `proto` `http`, or `https` on a TLS listener (X-Forwarded-Proto).
    public init(clientIP: String, forwardedElement: String, via: String, requestIDName: String, proto: String = "http") {
        clientIPAndProtoLines = Array("\(clientIP)\r\nx-forwarded-proto: \(proto)\r\n".utf8)
        forwardedElementBytes = Array(forwardedElement.utf8)
        viaEnd = Array("\(via)\r\n".utf8)
        requestIDPrefix = Array("\(requestIDName): ".utf8)
    }
}

/// How a response head ends: the Connection header the client gets.
public enum ConnectionHeader: Sendable {
    case none
    case close
    case keepAlive
    case upgrade
}

/// Writes HTTP/1 heads. Fields nobody changed are copied as the lines they arrived in, runs of them
/// at once; only what the proxy adds or rewrites is rendered.
public enum HeadWriter {
    /// The head sent upstream: the client's method, `target`, the client's fields minus hop-by-hop
    /// ones and the forwarding fields, then Host and the forwarding fields with this hop appended.
    public static func writeRequest(_ head: RawHead, target: String, host: String, forwarding: ForwardingValues,
                                    requestID: RequestID, edits: FieldEdits? = nil, trace: TraceContext? = nil,
                                    into out: inout ByteBuffer) {
        let trace = trace?.propagate == true ? trace : nil
        let hostLength = head.hostIndex.map { Int(head.fields[$0].valueEnd - head.fields[$0].valueStart) } ?? 0
        var bound = head.bytes.readableBytes + target.utf8.count + host.utf8.count + forwarding.clientIPAndProtoLines.count
            + forwarding.forwardedElementBytes.count + forwarding.viaEnd.count + forwarding.requestIDPrefix.count
            + requestID.utf8Count + 2 * hostLength + 192
        // Removed names are matched on their packed bytes (`FieldEdits.removes`); only names too long
        // for that go through the list.
        let checkRemoved = edits.map { !$0.removed.isEmpty } ?? false
        let longRemoved = edits?.hasLongRemovedNames == true ? edits!.removed : []
        if let edits {
            bound += edits.addedLines.count
        }
        if let trace { bound += 72 + (trace.traceState?.utf8.count ?? 0) + 16 }
        // The bytes are borrowed from a copy of the buffer (one retain): through `head.withBytes`, the
        // closure's use of `head` copied the whole head.
        let bytes = head.bytes
        _ = bytes.withUnsafeReadableBytes { p in
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { memory in
                var o = HeadOutput(memory)
                o.put(UnsafeRawBufferPointer(rebasing: p[0..<Int(head.methodEnd)]))
                o.put(UInt8(ascii: " "))
                o.put(target)
                o.put(" HTTP/1.1\r\n")
                var run = LineRun()
                var hasXFF = false
                var hasForwarded = false
                var hasVia = false
                let checkListed = head.connection.hasListed
                for index in head.fields.indices {
                    let field = head.fields[index]
                    switch field.kind {
                    case .traceparent where trace != nil, .tracestate where trace != nil:
                        run.flush(p, into: &o)   // replaced by the gateway's own below
                    case .other, .userAgent, .traceparent, .tracestate:
                        if checkListed && head.isListedInConnection(index)
                            || checkRemoved && edits!.removes(UnsafeRawBufferPointer(rebasing: p[Int(field.start)..<Int(field.nameEnd)]))
                            || !longRemoved.isEmpty && field.name(in: longRemoved, p) != nil {
                            run.flush(p, into: &o)
                        } else {
                            run.add(field, p, into: &o)
                        }
                    case .contentLength, .transferEncoding, .requestID:
                        run.add(field, p, into: &o)
                    case .xForwardedFor:
                        hasXFF = true
                        run.flush(p, into: &o)
                    case .forwarded:
                        hasForwarded = true
                        run.flush(p, into: &o)
                    case .via:
                        hasVia = true
                        run.flush(p, into: &o)
                    default:   // hop-by-hop, Host, X-Forwarded-Host/-Proto: replaced below
                        run.flush(p, into: &o)
                    }
                }
                run.flush(p, into: &o)

                o.put("host: ")
                o.put(host)
                o.put("\r\nx-forwarded-for: ")
                if hasXFF { o.putValues(of: .xForwardedFor, head, p) }
                o.put(forwarding.clientIPAndProtoLines)
                var clientHost: UnsafeRawBufferPointer?
                if let hostIndex = head.hostIndex {
                    let field = head.fields[hostIndex]
                    let value = UnsafeRawBufferPointer(rebasing: p[Int(field.valueStart)..<Int(field.valueEnd)])
                    o.put("x-forwarded-host: ")
                    o.put(value)
                    o.put("\r\n")
                    if value.allSatisfy({ $0 > 0x20 && $0 != UInt8(ascii: "\"") && $0 < 0x7F }) { clientHost = value }
                }
                o.put("forwarded: ")
                if hasForwarded { o.putValues(of: .forwarded, head, p) }
                o.put(forwarding.forwardedElementBytes)
                if let clientHost {
                    o.put(";host=\"")
                    o.put(clientHost)
                    o.put(UInt8(ascii: "\""))
                }
                o.put("\r\nvia: ")
                if hasVia { o.putValues(of: .via, head, p) }
                o.put(forwarding.viaEnd)
                if head.requestIDIndex == nil {
                    o.put(forwarding.requestIDPrefix)
                    requestID.withUTF8 { o.put($0) }
                    o.put("\r\n")
                }
                if let trace {
                    o.put("traceparent: ")
                    trace.withTraceparent { o.put($0) }
                    o.put("\r\n")
                    if let state = trace.traceState { o.putField("tracestate", state) }
                }
                if let edits {
                    edits.addedLines.withUnsafeBytes { o.put($0) }
                }
                if head.isUpgrade { o.putUpgrade(head, p) }
                o.put("\r\n")
                return o.offset
            }
        }
    }

    /// The head sent to the client for an upstream response, without plugins: status line in the
    /// client's version, the upstream's end-to-end fields as they came, Via and the request id, `extra`
    /// (deprecation fields), then framing and Connection as the proxy decided them.
    public static func writeResponse(_ head: RawHead, clientMinorVersion: Int, via: String, requestIDName: String,
                                     requestID: RequestID, extra: [HTTPField], lines: ByteBuffer? = nil,
                                     removed: [HTTPField.Name] = [],
                                     dropTransferEncoding: Bool, addChunked: Bool, connection: ConnectionHeader,
                                     into out: inout ByteBuffer) {
        var bound = head.bytes.readableBytes + via.utf8.count + requestIDName.utf8.count + requestID.utf8Count + 160
        for field in extra { bound += field.name.rawName.utf8.count + field.value.utf8.count + 4 }
        if let lines { bound += lines.readableBytes }
        _ = head.withBytes { p in
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { memory in
                var o = HeadOutput(memory)
                o.put(clientMinorVersion == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
                o.putStatus(head.status)
                o.put(UnsafeRawBufferPointer(rebasing: p[Int(head.reasonStart)..<Int(head.reasonEnd)]))
                o.put("\r\n")
                var run = LineRun()
                var hasVia = false
                let checkListed = head.connection.hasListed
                for index in head.fields.indices {
                    let field = head.fields[index]
                    switch field.kind {
                    case .via:
                        hasVia = true
                        run.flush(p, into: &o)
                    case .transferEncoding where dropTransferEncoding:
                        run.flush(p, into: &o)
                    case let kind where kind.isHopByHop:
                        run.flush(p, into: &o)
                    default:
                        if checkListed && head.isListedInConnection(index) || !removed.isEmpty && field.name(in: removed, p) != nil {
                            run.flush(p, into: &o)
                        } else {
                            run.add(field, p, into: &o)
                        }
                    }
                }
                run.flush(p, into: &o)
                o.put("via: ")
                if hasVia { o.putValues(of: .via, head, p) }
                o.put(via)
                o.put("\r\n")
                if head.requestIDIndex == nil { o.putField(requestIDName, requestID) }
                for field in extra { o.putField(field.name.rawName, field.value) }
                lines?.withUnsafeReadableBytes { o.put($0) }
                if addChunked { o.put("transfer-encoding: chunked\r\n") }
                switch connection {
                case .none: break
                case .close: o.put("connection: close\r\n")
                case .keepAlive: o.put("connection: keep-alive\r\n")
                case .upgrade: o.putUpgrade(head, p)
                }
                o.put("\r\n")
                return o.offset
            }
        }
    }

    /// The fields of an upstream response as the client will see them before plugins and framing:
    /// hop-by-hop fields removed, Via and the request id added, then `extra`.
    public static func responseFields(_ head: RawHead, via: String, requestIDName: String, requestID: String,
                                      extra: [HTTPField]) -> HTTPFields {
        var fields = head.httpFields { $0.isHopByHop || $0 == .via }
        if head.connection.hasListed {
            fields = HTTPFields(fields.filter { !head.connection.listed.contains($0.name.canonicalName) })
        }
        var viaValue = via
        let upstreamVia = head.fields.indices.filter { head.fields[$0].kind == .via }.map(head.value)
        if !upstreamVia.isEmpty { viaValue = upstreamVia.joined(separator: ", ") + ", " + via }
        fields.append(HTTPField(name: HTTPField.Name("via")!, value: viaValue))
        if head.requestIDIndex == nil, let name = HTTPField.Name(requestIDName) {
            fields.append(HTTPField(name: name, value: requestID))
        }
        fields.append(contentsOf: extra)
        return fields
    }

    /// A head from swift-http-types fields (local answers, and responses plugins changed).
    public static func writeResponse(minorVersion: Int, status: HTTPResponse.Status, fields: HTTPFields,
                                     addChunked: Bool, connection: ConnectionHeader, into out: inout ByteBuffer) {
        var bound = status.reasonPhrase.utf8.count + 96
        for field in fields { bound += field.name.rawName.utf8.count + field.value.utf8.count + 4 }
        _ = out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { memory in
            var o = HeadOutput(memory)
            o.putStatusLine(minorVersion: minorVersion, status)
            for field in fields { o.putField(field.name.rawName, field.value) }
            if addChunked { o.put("transfer-encoding: chunked\r\n") }
            o.putConnectionAndEnd(connection)
            return o.offset
        }
    }

    /// A head from header lines rendered before (a stored response's) and a few fields added to them,
    /// then `content-length` when given.
    public static func writeResponse(minorVersion: Int, status: HTTPResponse.Status, rendered: ByteBuffer,
                                     fields: [HTTPField], contentLength: Int?, requestID: (name: String, value: RequestID)?,
                                     connection: ConnectionHeader, into out: inout ByteBuffer) {
        var bound = status.reasonPhrase.utf8.count + rendered.readableBytes + 128
        if let requestID { bound += requestID.name.utf8.count + requestID.value.utf8Count + 4 }
        for field in fields { bound += field.name.rawName.utf8.count + field.value.utf8.count + 4 }
        _ = out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { memory in
            var o = HeadOutput(memory)
            o.putStatusLine(minorVersion: minorVersion, status)
            rendered.withUnsafeReadableBytes { o.put($0) }
            for field in fields { o.putField(field.name.rawName, field.value) }
            if let requestID { o.putField(requestID.name, requestID.value) }
            if let contentLength {
                o.put("content-length: ")
                o.putDecimal(contentLength)
                o.put("\r\n")
            }
            o.putConnectionAndEnd(connection)
            return o.offset
        }
    }

    /// A request head from swift-http-types values (after request plugins), to be parsed again and
    /// forwarded like a client's.
    public static func renderRequest(_ request: HTTPRequest, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var out = allocator.buffer(capacity: 256)
        out.writeString(request.method.rawValue)
        out.writeInteger(UInt8(ascii: " "))
        out.writeString(request.path ?? "/")
        out.writeStaticString(" HTTP/1.1\r\n")
        if let authority = request.authority { writeField("host", authority, into: &out) }
        for field in request.headerFields { writeField(field.name.rawName, field.value, into: &out) }
        out.writeStaticString("\r\n")
        return out
    }

    static func writeField(_ name: String, _ value: String, into out: inout ByteBuffer) {
        out.writeString(name)
        out.writeStaticString(": ")
        out.writeString(value)
        out.writeStaticString("\r\n")
    }

    /// Consecutive field lines copied with one copy.
    private struct LineRun {
        var start = -1
        var end = -1

        @inline(__always)
        mutating func add(_ field: RawField, _ p: UnsafeRawBufferPointer, into o: inout HeadOutput) {
            if start >= 0 && end == Int(field.start) {
                end = Int(field.end)
                return
            }
            flush(p, into: &o)
            start = Int(field.start)
            end = Int(field.end)
        }

        @inline(__always)
        mutating func flush(_ p: UnsafeRawBufferPointer, into o: inout HeadOutput) {
            guard start >= 0 else { return }
            o.put(UnsafeRawBufferPointer(rebasing: p[start..<end]))
            start = -1
        }
    }

    /// A chunk's size line.
    public static func writeChunkHeader(_ length: Int, into out: inout ByteBuffer) {
        var digits = 1
        while length >> (4 * digits) > 0 { digits += 1 }
        let hex: StaticString = "0123456789abcdef"
        for k in stride(from: digits - 1, through: 0, by: -1) {
            out.writeInteger(hex.utf8Start[(length >> (4 * k)) & 0xF])
        }
        out.writeStaticString("\r\n")
    }
}

/// Copies into memory reserved for a whole head (its size bounded beforehand): plain memcpy, none of
/// ByteBuffer's per-write bookkeeping. Plugins get one for the header lines they add
/// (`HeaderLines.write`).
public struct HeadOutput {
    @usableFromInline let memory: UnsafeMutableRawBufferPointer
    /// How many bytes are written.
    public var offset: Int { written }
    @usableFromInline var written = 0

    @inlinable
    init(_ memory: UnsafeMutableRawBufferPointer) {
        self.memory = memory
    }

    @inlinable @inline(__always)
    public mutating func put(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        precondition(written + bytes.count <= memory.count, "head larger than its bound")
        (memory.baseAddress! + written).copyMemory(from: source, byteCount: bytes.count)
        written += bytes.count
    }

    @inlinable @inline(__always)
    public mutating func put(_ text: StaticString) {
        put(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// Bytes rendered before (a field's name and `: `, whole lines, a value's fixed part).
    @inlinable @inline(__always)
    public mutating func put(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { put($0) }
    }

    /// Borrows the text's bytes where it keeps them contiguous (native and small strings): a copy for
    /// `withUTF8` retained and released it, once per string written.
    @inline(__always)
    mutating func put(_ text: String) {
        if let done: Void = text.utf8.withContiguousStorageIfAvailable({ put(UnsafeRawBufferPointer($0)) }) { return done }
        var text = text
        text.withUTF8 { put(UnsafeRawBufferPointer($0)) }
    }

    @inline(__always)
    mutating func put(_ byte: UInt8) {
        precondition(written < memory.count, "head larger than its bound")
        memory[written] = byte
        written += 1
    }

    /// Three digits and a space.
    mutating func putStatus(_ status: Int) {
        let code = status >= 100 && status <= 999 ? status : 500
        put(UInt8(ascii: "0") + UInt8(code / 100))
        put(UInt8(ascii: "0") + UInt8(code / 10 % 10))
        put(UInt8(ascii: "0") + UInt8(code % 10))
        put(UInt8(ascii: " "))
    }

    /// `HTTP/1.x CODE Reason\r\n`.
    mutating func putStatusLine(minorVersion: Int, _ status: HTTPResponse.Status) {
        put(minorVersion == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
        putStatus(status.code)
        put(status.reasonPhrase)
        put("\r\n")
    }

    /// The Connection field of a gateway-written head (an upgrade's is the caller's), and the blank line.
    mutating func putConnectionAndEnd(_ connection: ConnectionHeader) {
        switch connection {
        case .none, .upgrade: break
        case .close: put("connection: close\r\n")
        case .keepAlive: put("connection: keep-alive\r\n")
        }
        put("\r\n")
    }

    /// A non-negative number in decimal (negative numbers are written as 0).
    public mutating func putDecimal(_ value: Int) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)   // up to 24 digits, most significant last
        var count = 0
        var rest = max(0, value)
        withUnsafeMutableBytes(of: &digits) { buffer in
            repeat {
                buffer[count] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
                count += 1
            } while rest > 0
            for index in stride(from: count - 1, through: 0, by: -1) { put(buffer[index]) }
        }
    }

    mutating func putField(_ name: String, _ value: String) {
        put(name)
        put(": ")
        put(value)
        put("\r\n")
    }

    @inline(__always)
    mutating func putField(_ name: String, _ value: RequestID) {
        put(name)
        put(": ")
        value.withUTF8 { put($0) }
        put("\r\n")
    }

    /// `connection: upgrade` and the head's own `Upgrade` value (a protocol switch goes through).
    mutating func putUpgrade(_ head: RawHead, _ p: UnsafeRawBufferPointer) {
        put("connection: upgrade\r\n")
        guard let index = head.upgradeIndex else { return }
        let field = head.fields[index]
        put("upgrade: ")
        put(UnsafeRawBufferPointer(rebasing: p[Int(field.valueStart)..<Int(field.valueEnd)]))
        put("\r\n")
    }

    /// The values of every field of `kind`, each followed by ", " (the caller appends this hop's).
    mutating func putValues(of kind: FieldKind, _ head: RawHead, _ p: UnsafeRawBufferPointer) {
        for field in head.fields where field.kind == kind {
            put(UnsafeRawBufferPointer(rebasing: p[Int(field.valueStart)..<Int(field.valueEnd)]))
            put(", ")
        }
    }
}
