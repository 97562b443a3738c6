import TollgateCore

/// Writes one log line into raw memory: each write is a bounds check and a copy (no array growth, no
/// uniqueness checks). A line that would not fit sets `overflowed`; the caller writes a short line
/// instead.
struct LineWriter {
    let base: UnsafeMutablePointer<UInt8>
    let capacity: Int
    var count: Int
    var overflowed = false

    init(base: UnsafeMutablePointer<UInt8>, capacity: Int, count: Int) {
        self.base = base
        self.capacity = capacity
        self.count = count
    }

    @inline(__always)
    mutating func fits(_ n: Int) -> Bool {
        if count + n <= capacity { return true }
        overflowed = true
        return false
    }

    @inline(__always)
    mutating func byte(_ b: UInt8) {
        guard fits(1) else { return }
        base[count] = b
        count += 1
    }

    @inline(__always)
    mutating func bytes(_ p: UnsafeRawBufferPointer) {
        let n = p.count
        guard n > 0, fits(n) else { return }
        let source = p.baseAddress!
        let destination = UnsafeMutableRawPointer(base + count)
        // Short pieces (keys, method names, numbers): overlapping word copies beat a memcpy call.
        switch n {
        case 8...16:
            destination.storeBytes(of: source.loadUnaligned(as: UInt64.self), as: UInt64.self)
            destination.storeBytes(of: source.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self), toByteOffset: n - 8, as: UInt64.self)
        case 17...32:
            destination.storeBytes(of: source.loadUnaligned(as: UInt64.self), as: UInt64.self)
            destination.storeBytes(of: source.loadUnaligned(fromByteOffset: 8, as: UInt64.self), toByteOffset: 8, as: UInt64.self)
            destination.storeBytes(of: source.loadUnaligned(fromByteOffset: n - 16, as: UInt64.self), toByteOffset: n - 16, as: UInt64.self)
            destination.storeBytes(of: source.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self), toByteOffset: n - 8, as: UInt64.self)
        case 4..<8:
            destination.storeBytes(of: source.loadUnaligned(as: UInt32.self), as: UInt32.self)
            destination.storeBytes(of: source.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self), toByteOffset: n - 4, as: UInt32.self)
        case 1..<4:
            for index in 0..<n { destination.storeBytes(of: source.load(fromByteOffset: index, as: UInt8.self), toByteOffset: index, as: UInt8.self) }
        default:
            destination.copyMemory(from: source, byteCount: n)
        }
        count += n
    }

    /// Whether any byte needs escaping in a JSON string: `"`, `\`, control bytes and DEL. Eight bytes
    /// at a time (SWAR; the last word overlaps the one before it, and four to seven bytes are two
    /// overlapping halves of one word); a word that may hold such a byte is checked byte by byte.
    @inline(__always)
    static func needsEscaping(_ p: UnsafeRawBufferPointer) -> Bool {
        let n = p.count
        if n >= 8 {
            var index = 0
            while index + 8 < n {
                if mayNeedEscaping(p.loadUnaligned(fromByteOffset: index, as: UInt64.self)) { return bytesNeedEscaping(p) }
                index += 8
            }
            return mayNeedEscaping(p.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self)) && bytesNeedEscaping(p)
        }
        if n >= 4 {
            let word = UInt64(p.loadUnaligned(as: UInt32.self)) | UInt64(p.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self)) << 32
            return mayNeedEscaping(word) && bytesNeedEscaping(p)
        }
        return bytesNeedEscaping(p)
    }

    /// Whether some byte of `word` is below 0x20, equals 0x22, 0x5C or 0x7F, or is 0x80 and above
    /// (UTF-8 is copied as it is, but the SWAR tests would misfire on it: such words are checked byte
    /// by byte).
    @inline(__always)
    static func mayNeedEscaping(_ word: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        let below = (word &- ones &* 0x20) & ~word & highs
        let quote = word ^ (ones &* 0x22), backslash = word ^ (ones &* 0x5C), del = word ^ (ones &* 0x7F)
        let zero = ((quote &- ones) & ~quote | (backslash &- ones) & ~backslash | (del &- ones) & ~del) & highs
        return below | zero | (word & highs) != 0
    }

    /// The exact test, one byte at a time.
    static func bytesNeedEscaping(_ p: UnsafeRawBufferPointer) -> Bool {
        for b in p where b < 0x20 || b == 0x22 || b == 0x5C || b == 0x7F { return true }
        return false
    }

    @inline(__always)
    mutating func bytes(_ array: [UInt8]) {
        array.withUnsafeBytes { bytes($0) }
    }

    @inline(__always)
    mutating func ascii(_ text: StaticString) {
        bytes(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// Raw text (no escaping).
    mutating func text(_ text: String) {
        if let done: Void = text.utf8.withContiguousStorageIfAvailable({ bytes(UnsafeRawBufferPointer($0)) }) { return done }
        var copy = text
        copy.withUTF8 { bytes(UnsafeRawBufferPointer($0)) }
    }

    /// A JSON string literal: copied in one piece unless something needs escaping.
    mutating func quoted(_ p: UnsafeRawBufferPointer) {
        byte(0x22)
        if !Self.needsEscaping(p) {
            bytes(p)
        } else {
            for b in p { JSONEscape.escape(b) { byte($0) } }
        }
        byte(0x22)
    }

    mutating func quoted(_ text: String) {
        if let done: Void = text.utf8.withContiguousStorageIfAvailable({ quoted(UnsafeRawBufferPointer($0)) }) { return done }
        var copy = text
        copy.withUTF8 { quoted(UnsafeRawBufferPointer($0)) }
    }

    mutating func quotedOrNull(_ text: String?) {
        if let text { quoted(text) } else { ascii("null") }
    }

    /// Text inside a quoted combined-log field: `"`, `\` and control bytes as `\xHH` (as nginx does).
    mutating func escaped(_ p: UnsafeRawBufferPointer) {
        for b in p {
            if b == 0x22 || b == 0x5C || b < 0x20 || b >= 0x7F {
                ascii("\\x")
                byte(Bytes.hexDigit(b >> 4))
                byte(Bytes.hexDigit(b & 0xF))
            } else {
                byte(b)
            }
        }
    }

    mutating func escaped(_ text: String) {
        var copy = text
        copy.withUTF8 { escaped(UnsafeRawBufferPointer($0)) }
    }

    mutating func integer(_ value: Int) {
        if value < 0 {
            byte(UInt8(ascii: "-"))
            unsigned(UInt64(value.magnitude))
        } else {
            unsigned(UInt64(value))
        }
    }

    mutating func unsigned(_ value: UInt64) {
        guard fits(20) else { return }
        var digits = 1
        var probe = value
        while probe >= 10 { probe /= 10; digits += 1 }
        var v = value
        var index = count + digits - 1
        repeat {
            base[index] = 0x30 + UInt8(v % 10)
            v /= 10
            index -= 1
        } while v > 0
        count += digits
    }

    /// Nanoseconds as milliseconds with three decimals: `12.345`.
    mutating func millis(_ nanos: UInt64) {
        let micros = nanos / 1_000
        unsigned(micros / 1_000)
        guard fits(4) else { return }
        let fraction = micros % 1_000
        base[count] = UInt8(ascii: ".")
        base[count + 1] = 0x30 + UInt8(fraction / 100)
        base[count + 2] = 0x30 + UInt8(fraction / 10 % 10)
        base[count + 3] = 0x30 + UInt8(fraction % 10)
        count += 4
    }

    /// 16 lowercase hex digits.
    mutating func hex(_ value: UInt64) {
        guard fits(16) else { return }
        TraceContext.writeHex(value, into: UnsafeMutableBufferPointer(start: base + count, count: 16), at: 0)
        count += 16
    }
}

/// The formatted second of a timestamp, kept per thread: `2026-11-27T14:05:07.` and
/// `27/Nov/2026:14:05:07 +0000` are computed once a second, not once a line.
struct TimestampCache {
    private var second: Int64 = .min
    private var rfc3339: [UInt8] = []
    private var commonSecond: Int64 = .min
    private var common: [UInt8] = []

    /// `2026-11-27T14:05:07.123Z`.
    mutating func rfc3339(millis: Int64, into out: inout LineWriter) {
        let seconds = millis >= 0 ? millis / 1_000 : (millis - 999) / 1_000
        if seconds != second {
            second = seconds
            rfc3339 = []
            Bytes.rfc3339(millis: seconds * 1_000, into: &rfc3339)
            rfc3339.removeLast(4)   // ".000Z" without "000Z": the prefix through the dot
        }
        out.bytes(rfc3339)
        let ms = UInt64(millis - seconds * 1_000)
        guard out.fits(4) else { return }
        out.base[out.count] = 0x30 + UInt8(ms / 100)
        out.base[out.count + 1] = 0x30 + UInt8(ms / 10 % 10)
        out.base[out.count + 2] = 0x30 + UInt8(ms % 10)
        out.base[out.count + 3] = UInt8(ascii: "Z")
        out.count += 4
    }

    /// `27/Nov/2026:14:05:07 +0000`.
    mutating func common(millis: Int64, into out: inout LineWriter) {
        let seconds = millis >= 0 ? millis / 1_000 : (millis - 999) / 1_000
        if seconds != commonSecond {
            commonSecond = seconds
            common = []
            Bytes.commonLogTime(millis: millis, into: &common)
        }
        out.bytes(common)
    }
}
