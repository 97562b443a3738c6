import TollgateCore

/// Byte-level formatting helpers for logs and metrics.
public enum Bytes {
    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// A JSON string literal: copied in one piece unless something needs escaping.
    public static func quote(_ text: String, into out: inout [UInt8]) {
        var text = text
        text.withUTF8 { p in
            out.append(0x22)
            if LineWriter.needsEscaping(UnsafeRawBufferPointer(p)) {
                for byte in p { JSONEscape.escape(byte) { out.append($0) } }
            } else {
                out.append(contentsOf: p)
            }
            out.append(0x22)
        }
    }

    static func hexDigit(_ value: UInt8) -> UInt8 { value < 10 ? 0x30 + value : 0x61 + value - 10 }

    public static func integer<T: BinaryInteger>(_ value: T, into out: inout [UInt8]) {
        if value < 0 {
            out.append(UInt8(ascii: "-"))
            integer(UInt64(-Int64(value)), into: &out)
            return
        }
        var v = UInt64(value)
        if v < 10 { out.append(0x30 + UInt8(v)); return }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        withUnsafeMutableBytes(of: &digits) { buffer in
            while v > 0 {
                buffer[19 - count] = 0x30 + UInt8(v % 10)
                v /= 10
                count += 1
            }
            out.append(contentsOf: buffer[(20 - count)...])
        }
    }

    static func two(_ value: Int64, into out: inout [UInt8]) {
        out.append(0x30 + UInt8(value / 10))
        out.append(0x30 + UInt8(value % 10))
    }

    /// `2026-11-27T14:05:07.123Z`.
    public static func rfc3339(millis: Int64, into out: inout [UInt8]) {
        let seconds = millis >= 0 ? millis / 1_000 : (millis - 999) / 1_000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let (year, month, day) = CivilDate.from(days: days)
        let rest = seconds - days * 86_400
        integer(year, into: &out)
        out.append(UInt8(ascii: "-")); two(month, into: &out)
        out.append(UInt8(ascii: "-")); two(day, into: &out)
        out.append(UInt8(ascii: "T")); two(rest / 3_600, into: &out)
        out.append(UInt8(ascii: ":")); two(rest % 3_600 / 60, into: &out)
        out.append(UInt8(ascii: ":")); two(rest % 60, into: &out)
        let ms = millis - seconds * 1_000
        out.append(UInt8(ascii: "."))
        out.append(0x30 + UInt8(ms / 100)); two(ms % 100, into: &out)
        out.append(UInt8(ascii: "Z"))
    }

    public static func rfc3339(millis: Int64) -> String {
        var out: [UInt8] = []
        rfc3339(millis: millis, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `27/Nov/2026:14:05:07 +0000`.
    static func commonLogTime(millis: Int64, into out: inout [UInt8]) {
        let seconds = millis >= 0 ? millis / 1_000 : (millis - 999) / 1_000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let (year, month, day) = CivilDate.from(days: days)
        let rest = seconds - days * 86_400
        two(day, into: &out)
        out.append(UInt8(ascii: "/"))
        out.append(contentsOf: months[Int(month) - 1].utf8)
        out.append(UInt8(ascii: "/"))
        integer(year, into: &out)
        out.append(UInt8(ascii: ":")); two(rest / 3_600, into: &out)
        out.append(UInt8(ascii: ":")); two(rest % 3_600 / 60, into: &out)
        out.append(UInt8(ascii: ":")); two(rest % 60, into: &out)
        out.append(contentsOf: " +0000".utf8)
    }
}

/// How JSON strings escape a byte: `"` and `\` with a backslash, control bytes and DEL as `\u00XX`
/// (newline, return and tab by their letters).
enum JSONEscape {
    @inline(__always)
    static func escape(_ byte: UInt8, _ emit: (UInt8) -> Void) {
        switch byte {
        case 0x22: emit(0x5C); emit(0x22)
        case 0x5C: emit(0x5C); emit(0x5C)
        case 0x0A: emit(0x5C); emit(UInt8(ascii: "n"))
        case 0x0D: emit(0x5C); emit(UInt8(ascii: "r"))
        case 0x09: emit(0x5C); emit(UInt8(ascii: "t"))
        case 0..<0x20, 0x7F:
            emit(0x5C); emit(UInt8(ascii: "u")); emit(0x30); emit(0x30)
            emit(Bytes.hexDigit(byte >> 4)); emit(Bytes.hexDigit(byte & 0xF))
        default: emit(byte)
        }
    }
}
