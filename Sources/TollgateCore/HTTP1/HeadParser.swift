#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

/// Why a head was refused, with the status a server answers. Plain data (no reference counting), so
/// results move through the hot path for free.
public struct HeadParseError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Sendable {
        case malformed
        case uriTooLong
        case headerTooLarge
    }

    public let kind: Kind
    private let text: StaticString

    public static func malformed(_ text: StaticString) -> HeadParseError { HeadParseError(kind: .malformed, text: text) }
    public static let uriTooLong = HeadParseError(kind: .uriTooLong, text: "request target too long")
    public static let headerTooLarge = HeadParseError(kind: .headerTooLarge, text: "header section too large")

    /// 400, 414 or 431.
    public var status: Int {
        switch kind {
        case .malformed: return 400
        case .uriTooLong: return 414
        case .headerTooLarge: return 431
        }
    }

    public var message: String { text.description }
    public var description: String { message }

    public static func == (a: HeadParseError, b: HeadParseError) -> Bool { a.kind == b.kind && a.message == b.message }
}

public enum HeadParseResult: Sendable, Equatable {
    /// More bytes are needed (the limits were checked on what is there).
    case incomplete
    /// The head was parsed into the caller's `RawHead`; it took this many bytes of the buffer
    /// (leading empty lines included).
    case complete(consumed: Int)
    case failed(HeadParseError)
}

/// Parses HTTP/1.0 and 1.1 request and response heads (RFC 9112) straight from the bytes: one pass
/// that validates every byte, records field offsets, classifies field names and gathers the framing
/// facts. Strict where leniency enables smuggling: lines end in CRLF, no obsolete line folding, no
/// whitespace before a field's colon, one Host, agreeing Content-Lengths.
public struct HeadParser: Sendable {
    public enum Kind: Sendable {
        case request
        case response
    }

    public let kind: Kind
    public let maxURILength: Int
    /// Bytes of header fields, after the start line.
    public let maxHeaderSize: Int
    public let maxFields: Int
    /// The request-id header's name, lowercased, classified as `.requestID`.
    private let requestIDName: [UInt8]

    public init(kind: Kind, maxURILength: Int = 8 << 10, maxHeaderSize: Int = 32 << 10, maxFields: Int = 256,
                requestIDHeader: String = "x-request-id") {
        self.kind = kind
        self.maxURILength = maxURILength
        self.maxHeaderSize = maxHeaderSize
        self.maxFields = maxFields
        self.requestIDName = Array(requestIDHeader.lowercased().utf8)
    }

    /// The most a head may take before it is refused: what the caller may buffer while waiting.
    public var maxHeadBytes: Int { maxURILength + maxHeaderSize + 64 }

    /// Parses the head at the front of `buffer` into `head`, reusing its storage (a connection keeps
    /// one `RawHead` and parses every head into it: no allocation once its field array has grown).
    public func parse(_ buffer: ByteBuffer, into head: inout RawHead) -> HeadParseResult {
        head.reset()
        let outcome = buffer.withUnsafeReadableBytes { p -> Outcome in
            parse(p, into: &head)
        }
        switch outcome {
        case .incomplete: return .incomplete
        case .failed(let error): return .failed(error)
        case .complete(let start, let end):
            head.bytes = buffer.getSlice(at: buffer.readerIndex + start, length: end - start)!
            return .complete(consumed: end)
        }
    }

    private enum Outcome {
        case incomplete
        case failed(HeadParseError)
        case complete(start: Int, end: Int)
    }

    private static let cr: UInt8 = 13
    private static let lf: UInt8 = 10

    /// RFC 9110 `tchar`, as a table: `1` at the index of every token byte.
    private static var tokenTable: StaticString { "0000000000000000000000000000000001011111001101101111111111000000011111111111111111111111111000111111111111111111111111111110101000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" }

    @inline(__always)
    private static func isTokenByte(_ b: UInt8) -> Bool {
        tokenTable.utf8Start[Int(b)] == UInt8(ascii: "1")
    }

    /// The index of the next LF at or after `from`, found with memchr (vectorized in libc).
    @inline(__always)
    private static func lineFeed(_ p: UnsafeRawBufferPointer, from: Int) -> Int? {
        guard from < p.count, let base = p.baseAddress else { return nil }
        guard let found = memchr(base + from, 10, p.count - from) else { return nil }
        return UnsafeRawPointer(found) - base
    }

    /// Whether `p[start..<end]` holds only field-value bytes (VCHAR, obs-text, SP, HTAB). Eight bytes
    /// at a time when there are eight: a word with no byte below 0x20 and none equal to 0x7F passes at
    /// once (the last word overlaps the one before); a value with such a byte (a tab, say) is checked
    /// byte by byte.
    @inline(__always)
    private static func isFieldValue(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Bool {
        if end - start >= 8 {
            var k = start
            var suspect: UInt64 = 0
            while k + 8 < end {
                suspect |= controlOrDelete(p.loadUnaligned(fromByteOffset: k, as: UInt64.self))
                k += 8
            }
            suspect |= controlOrDelete(p.loadUnaligned(fromByteOffset: end - 8, as: UInt64.self))
            if suspect == 0 { return true }
        }
        var bad: UInt8 = 0
        var k = start
        while k < end {
            let b = p[k]
            bad |= ((b < 0x20 && b != 9) || b == 0x7F) ? 1 : 0
            k += 1
        }
        return bad == 0
    }

    /// Nonzero when some byte of `word` is below 0x20 or is 0x7F (the classic "has a byte less than n"
    /// and "has a zero byte" tests, exact for whether any byte matches).
    @inline(__always)
    static func controlOrDelete(_ word: UInt64) -> UInt64 {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        let below = (word &- ones &* 0x20) & ~word & highs
        let delete = word ^ (ones &* 0x7F)
        return below | (delete &- ones) & ~delete & highs
    }

    /// The end of the run of token bytes from `i` (at most `end`): four bytes per step while they
    /// last (their table entries and-ed together), then one by one.
    @inline(__always)
    private static func tokenEnd(_ p: UnsafeRawBufferPointer, from i: Int, to end: Int) -> Int {
        let table = tokenTable.utf8Start
        var i = i
        while i + 4 <= end {
            let all = table[Int(p[i])] & table[Int(p[i + 1])] & table[Int(p[i + 2])] & table[Int(p[i + 3])]
            if all != UInt8(ascii: "1") { break }
            i += 4
        }
        while i < end && table[Int(p[i])] == UInt8(ascii: "1") { i += 1 }
        return i
    }

    /// Whether `p[start..<end]` holds only request-target bytes (no whitespace or controls).
    @inline(__always)
    private static func isTarget(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Bool {
        var bad: UInt8 = 0
        var k = start
        while k < end {
            let b = p[k]
            bad |= (b <= 0x20 || b == 0x7F) ? 1 : 0
            k += 1
        }
        return bad == 0
    }

    private func parse(_ p: UnsafeRawBufferPointer, into head: inout RawHead) -> Outcome {
        let n = p.count
        var i = 0
        // RFC 9112 section 2.2: ignore empty lines before a request line.
        while i + 1 < n && p[i] == Self.cr && p[i + 1] == Self.lf { i += 2 }
        let start = i
        if i == n || (i + 1 == n && p[i] == Self.cr) { return .incomplete }

        switch kind {
        case .request:
            // method SP request-target SP HTTP-version CRLF
            while i < n && Self.isTokenByte(p[i]) { i += 1 }
            if i == n { return i - start > 32 ? .failed(.malformed("invalid method")) : .incomplete }
            if p[i] != UInt8(ascii: " ") || i == start { return .failed(.malformed("malformed request line")) }
            head.methodEnd = UInt32(i - start)
            let targetStart = i + 1
            guard let lf = Self.lineFeed(p, from: targetStart) else {
                // No line end yet: refuse a target that is already too long.
                if n - targetStart > maxURILength + 10 { return .failed(.uriTooLong) }
                return .incomplete
            }
            // The line ends with " HTTP/1.x\r\n"; the target is everything between.
            let targetEnd = lf - 10
            guard targetEnd > targetStart, p[lf - 1] == Self.cr, p[targetEnd] == UInt8(ascii: " ") else {
                if lf - 1 - targetStart > maxURILength { return .failed(.uriTooLong) }
                return .failed(.malformed("malformed request line"))
            }
            if targetEnd - targetStart > maxURILength { return .failed(.uriTooLong) }
            guard let minor = Self.version(p, at: targetEnd + 1) else { return .failed(.malformed("invalid HTTP version")) }
            guard Self.isTarget(p, targetStart, targetEnd) else { return .failed(.malformed("malformed request line")) }
            head.minorVersion = minor
            head.targetStart = UInt32(targetStart - start)
            head.targetEnd = UInt32(targetEnd - start)
            if let question = memchr(p.baseAddress! + targetStart, Int32(UInt8(ascii: "?")), targetEnd - targetStart) {
                head.queryStart = UInt32(UnsafeRawPointer(question) - p.baseAddress! - start)
            } else {
                head.queryStart = head.targetEnd
            }
            i = lf + 1
        case .response:
            // HTTP-version SP status-code SP [reason-phrase] CRLF
            if n - i < 12 { return .incomplete }
            guard let minor = Self.version(p, at: i) else { return .failed(.malformed("invalid HTTP version")) }
            head.minorVersion = minor
            i += 8
            guard p[i] == UInt8(ascii: " ") else { return .failed(.malformed("malformed status line")) }
            var status = 0
            for k in 1...3 {
                let digit = p[i + k] &- UInt8(ascii: "0")
                guard digit <= 9 else { return .failed(.malformed("malformed status line")) }
                status = status * 10 + Int(digit)
            }
            guard status >= 100 else { return .failed(.malformed("malformed status line")) }
            head.status = status
            i += 4
            guard let lf = Self.lineFeed(p, from: i) else {
                return n - i > 1024 ? .failed(.malformed("malformed status line")) : .incomplete
            }
            guard p[lf - 1] == Self.cr, lf - 1 == i || p[i] == UInt8(ascii: " "),
                  Self.isFieldValue(p, i, lf - 1) else { return .failed(.malformed("malformed status line")) }
            head.reasonStart = UInt32((lf - 1 == i ? i : i + 1) - start)
            head.reasonEnd = UInt32(lf - 1 - start)
            i = lf + 1
        }
        let fieldsStart = i
        head.startLineEnd = UInt32(i - start)

        while true {
            if i - fieldsStart > maxHeaderSize { return .failed(.headerTooLarge) }
            guard let lf = Self.lineFeed(p, from: i) else {
                return n - fieldsStart > maxHeaderSize ? .failed(.headerTooLarge) : .incomplete
            }
            guard lf > i, p[lf - 1] == Self.cr else { return .failed(.malformed("malformed header")) }
            let lineEnd = lf - 1   // the CR
            if lineEnd == i { return .complete(start: start, end: lf + 1) }   // the empty line
            let nameStart = i
            i = Self.tokenEnd(p, from: i, to: lineEnd)
            // Also refuses obsolete line folding (a line starting with whitespace) and "Name :".
            if i == lineEnd || p[i] != UInt8(ascii: ":") || i == nameStart { return .failed(.malformed("malformed header")) }
            let nameEnd = i
            i += 1
            while i < lineEnd && (p[i] == 0x20 || p[i] == 9) { i += 1 }
            let valueStart = i
            var valueEnd = lineEnd
            while valueEnd > valueStart && (p[valueEnd - 1] == 0x20 || p[valueEnd - 1] == 9) { valueEnd -= 1 }
            guard Self.isFieldValue(p, valueStart, valueEnd) else { return .failed(.malformed("malformed header")) }
            i = lf + 1
            if head.fields.count == maxFields { return .failed(.headerTooLarge) }
            let kind = classify(UnsafeRawBufferPointer(rebasing: p[nameStart..<nameEnd]))
            let index = head.fields.count
            // Unchecked conversions: every position is at or after `start` and inside a ByteBuffer,
            // whose size fits in 32 bits.
            head.fields.append(RawField(start: UInt32(truncatingIfNeeded: nameStart &- start),
                                        nameEnd: UInt32(truncatingIfNeeded: nameEnd &- start),
                                        valueStart: UInt32(truncatingIfNeeded: valueStart &- start),
                                        valueEnd: UInt32(truncatingIfNeeded: valueEnd &- start),
                                        end: UInt32(truncatingIfNeeded: i &- start), kind: kind))
            if kind != .other {
                if let error = note(kind, index: index, value: UnsafeRawBufferPointer(rebasing: p[valueStart..<valueEnd]),
                                    head: &head) {
                    return .failed(error)
                }
            }
        }
    }

    /// `HTTP/1.0` or `HTTP/1.1` at `i` (8 bytes available).
    @inline(__always)
    private static func version(_ p: UnsafeRawBufferPointer, at i: Int) -> Int? {
        guard p[i] == UInt8(ascii: "H"), p[i + 1] == UInt8(ascii: "T"), p[i + 2] == UInt8(ascii: "T"),
              p[i + 3] == UInt8(ascii: "P"), p[i + 4] == UInt8(ascii: "/"), p[i + 5] == UInt8(ascii: "1"),
              p[i + 6] == UInt8(ascii: ".") else { return nil }
        switch p[i + 7] {
        case UInt8(ascii: "0"): return 0
        case UInt8(ascii: "1"): return 1
        default: return nil
        }
    }

    /// Records what a field of a known kind says about the message.
    private func note(_ kind: FieldKind, index: Int, value: UnsafeRawBufferPointer, head: inout RawHead) -> HeadParseError? {
        switch kind {
        case .host:
            if head.hostIndex != nil {
                if self.kind == .request { return .malformed("more than one Host") }
            } else {
                head.hostIndex = index
            }
        case .requestID:
            if head.requestIDIndex == nil { head.requestIDIndex = index }
        case .upgrade:
            head.upgradeIndex = index
        case .userAgent:
            if head.userAgentIndex == nil { head.userAgentIndex = index }
        case .traceparent:
            if head.traceparentIndex == nil { head.traceparentIndex = index }
        case .tracestate:
            if head.tracestateIndex == nil { head.tracestateIndex = index }
        case .contentLength:
            head.contentLengthFields += 1
            guard let length = Self.decimal(value) else {
                head.framingProblem = head.framingProblem ?? "invalid Content-Length"
                return nil
            }
            if let previous = head.contentLength, previous != length {
                head.framingProblem = head.framingProblem ?? "conflicting Content-Length values"
            }
            head.contentLength = length
        case .transferEncoding:
            head.transferEncodingFields += 1
            let last = Self.lastToken(value)
            head.chunked = last.map { Self.equalsLowercase($0, "chunked") } ?? false
            head.onlyChunked = head.transferEncodingFields == 1 && Self.equalsLowercase(value, "chunked")
        case .connection:
            // The usual values, whole, without splitting into tokens.
            if Self.equalsLowercase(value, "keep-alive") {
                head.connection.keepAlive = true
                return nil
            }
            if Self.equalsLowercase(value, "close") {
                head.connection.close = true
                return nil
            }
            Self.forEachToken(value) { token in
                if Self.equalsLowercase(token, "close") {
                    head.connection.close = true
                } else if Self.equalsLowercase(token, "keep-alive") {
                    head.connection.keepAlive = true
                } else if Self.equalsLowercase(token, "upgrade") {
                    head.connection.upgrade = true
                } else {
                    head.connection.extraTokens = (head.connection.extraTokens ?? []) + [String(decoding: token, as: UTF8.self).lowercased()]
                }
            }
        default:
            break
        }
        return nil
    }

    /// A Content-Length: digits only, no overflow.
    static func decimal(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard !bytes.isEmpty, bytes.count <= 18 else { return nil }
        var value = 0
        for b in bytes {
            let digit = b &- UInt8(ascii: "0")
            guard digit <= 9 else { return nil }
            value = value * 10 + Int(digit)
        }
        return value
    }

    static func forEachToken(_ value: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
        var i = 0
        let n = value.count
        while i < n {
            while i < n && (value[i] == 0x20 || value[i] == 9 || value[i] == UInt8(ascii: ",")) { i += 1 }
            let start = i
            while i < n && value[i] != UInt8(ascii: ",") { i += 1 }
            var end = i
            while end > start && (value[end - 1] == 0x20 || value[end - 1] == 9) { end -= 1 }
            if end > start { body(UnsafeRawBufferPointer(rebasing: value[start..<end])) }
        }
    }

    static func lastToken(_ value: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        var last: UnsafeRawBufferPointer?
        forEachToken(value) { last = $0 }
        return last
    }

    /// ASCII case-insensitive comparison with a literal of lowercase letters, digits and `-`, eight
    /// bytes at a time. Setting bit 5 of every byte lowercases letters; of the other bytes it could
    /// make equal to a letter, digit or `-`, none can reach here (they are controls, refused in field
    /// names and values before any comparison).
    @inline(__always)
    static func equalsLowercase(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
        let count = bytes.count
        guard count == literal.utf8CodeUnitCount else { return false }
        let other = UnsafeRawPointer(literal.utf8Start)
        var k = 0
        while k + 8 <= count {
            let folded = bytes.loadUnaligned(fromByteOffset: k, as: UInt64.self) | 0x2020_2020_2020_2020
            if folded != other.loadUnaligned(fromByteOffset: k, as: UInt64.self) { return false }
            k += 8
        }
        while k < count {
            if bytes[k] | 0x20 != other.load(fromByteOffset: k, as: UInt8.self) { return false }
            k += 1
        }
        return true
    }

    /// Field names the proxy treats specially; everything else is `.other` and copied as it came.
    @inline(__always)
    private func classify(_ name: UnsafeRawBufferPointer) -> FieldKind {
        let kind: FieldKind
        switch name.count {
        case 2: kind = Self.equalsLowercase(name, "te") ? .te : .other
        case 3: kind = Self.equalsLowercase(name, "via") ? .via : .other
        case 4: kind = Self.equalsLowercase(name, "host") ? .host : .other
        case 7:
            kind = Self.equalsLowercase(name, "upgrade") ? .upgrade : Self.equalsLowercase(name, "trailer") ? .trailer : .other
        case 9: kind = Self.equalsLowercase(name, "forwarded") ? .forwarded : .other
        case 10:
            kind = Self.equalsLowercase(name, "connection") ? .connection
                : Self.equalsLowercase(name, "keep-alive") ? .keepAlive
                : Self.equalsLowercase(name, "user-agent") ? .userAgent
                : Self.equalsLowercase(name, "tracestate") ? .tracestate : .other
        case 11: kind = Self.equalsLowercase(name, "traceparent") ? .traceparent : .other
        case 14: kind = Self.equalsLowercase(name, "content-length") ? .contentLength : .other
        case 15: kind = Self.equalsLowercase(name, "x-forwarded-for") ? .xForwardedFor : .other
        case 16:
            kind = Self.equalsLowercase(name, "x-forwarded-host") ? .xForwardedHost
                : Self.equalsLowercase(name, "proxy-connection") ? .proxyConnection : .other
        case 17:
            kind = Self.equalsLowercase(name, "transfer-encoding") ? .transferEncoding
                : Self.equalsLowercase(name, "x-forwarded-proto") ? .xForwardedProto : .other
        case 18: kind = Self.equalsLowercase(name, "proxy-authenticate") ? .proxyAuthenticate : .other
        case 19: kind = Self.equalsLowercase(name, "proxy-authorization") ? .proxyAuthorization : .other
        default: kind = .other
        }
        if kind == .other && name.count == requestIDName.count {
            var equal = true
            for k in 0..<name.count {
                let b = name[k]
                if (b >= 65 && b <= 90 ? b | 0x20 : b) != requestIDName[k] {
                    equal = false
                    break
                }
            }
            if equal { return .requestID }
        }
        return kind
    }
}
