/// Normalizes request paths before routing, so that `/a/%2E%2E/admin`, `/a/../admin` and `//admin`
/// all route as `/admin` and cannot reach a route or upstream path other than the one matched.
///
/// - percent-encodings of unreserved characters (ALPHA / DIGIT / "-" / "." / "_" / "~") are decoded,
///   the rest are kept with upper-case hex (so `%2F` never becomes a segment separator);
/// - `.` and `..` segments are removed (RFC 3986 section 5.2.4); `..` never climbs above the root;
/// - runs of `/` become one when `mergeSlashes` is set.
public enum PathNormalizer {
    public enum Failure: Error, Equatable {
        case notOriginForm
        case invalidPercentEncoding
        case invalidCharacter
    }

    /// Fast check: the common, already-normal path needs no copy.
    @inline(__always)
    static func isAlreadyNormal(_ bytes: UnsafeBufferPointer<UInt8>, mergeSlashes: Bool) -> Bool {
        var previous: UInt8 = 0
        var segmentStart = true
        var dotsInSegment = 0
        var segmentLength = 0
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "/"):
                if segmentStart && dotsInSegment == segmentLength && segmentLength > 0 && segmentLength <= 2 { return false }
                if mergeSlashes && previous == UInt8(ascii: "/") { return false }
                segmentStart = true
                dotsInSegment = 0
                segmentLength = 0
            case UInt8(ascii: "%"), 0...0x20, 0x7F...0xFF:
                return false
            case UInt8(ascii: "."):
                dotsInSegment += 1
                segmentLength += 1
            default:
                segmentLength += 1
            }
            previous = byte
        }
        if dotsInSegment == segmentLength && segmentLength > 0 && segmentLength <= 2 { return false }
        return true
    }

    /// Normalizes the bytes of a request target's path; the common already-normal path becomes its
    /// String directly.
    public static func normalize(bytes: UnsafeRawBufferPointer, mergeSlashes: Bool) throws(Failure) -> String {
        guard bytes.first == UInt8(ascii: "/") else { throw .notOriginForm }
        if isAlreadyNormal(bytes.assumingMemoryBound(to: UInt8.self), mergeSlashes: mergeSlashes) {
            return String(decoding: bytes, as: UTF8.self)
        }
        return try resolve(bytes, mergeSlashes: mergeSlashes)
    }

    public static func normalize(_ path: Substring, mergeSlashes: Bool) throws(Failure) -> String {
        var path = String(path)
        return try path.withUTF8 { bytes in
            Result { () throws(Failure) -> String in try normalize(bytes: UnsafeRawBufferPointer(bytes), mergeSlashes: mergeSlashes) }
        }.get()
    }

    /// The general case: escapes decoded, dot segments (and, if asked, empty ones) removed.
    private static func resolve(_ path: UnsafeRawBufferPointer, mergeSlashes: Bool) throws(Failure) -> String {
        // Decode unreserved escapes first, keeping reserved ones encoded.
        var decoded: [UInt8] = []
        decoded.reserveCapacity(path.count)
        var iterator = Array(path)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.popFirst(), let low = iterator.popFirst(),
                      let h = hexValue(high), let l = hexValue(low) else { throw .invalidPercentEncoding }
                let value = h << 4 | l
                if isUnreserved(value) {
                    decoded.append(value)
                } else {
                    decoded.append(UInt8(ascii: "%"))
                    decoded.append(hexDigit(h))
                    decoded.append(hexDigit(l))
                }
            } else if byte <= 0x20 || byte == 0x7F {
                throw .invalidCharacter
            } else {
                decoded.append(byte)
            }
        }

        // Remove dot segments and, if asked, empty ones.
        var output: [[UInt8]] = []
        let segments = decoded.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).dropFirst()
        let endsWithSlash = decoded.last == UInt8(ascii: "/")
        for (index, segment) in segments.enumerated() {
            let isLast = index == segments.count - 1
            if segment.elementsEqual([UInt8(ascii: ".")]) { continue }
            if segment.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
                if !output.isEmpty { output.removeLast() }
                continue
            }
            if segment.isEmpty && (mergeSlashes || isLast) { continue }
            output.append(Array(segment))
        }
        var result = [UInt8]()
        result.reserveCapacity(decoded.count)
        for segment in output {
            result.append(UInt8(ascii: "/"))
            result.append(contentsOf: segment)
        }
        let lastWasDot = segments.last.map { $0.elementsEqual([46]) || $0.elementsEqual([46, 46]) } ?? false
        if result.isEmpty || endsWithSlash || lastWasDot { result.append(UInt8(ascii: "/")) }
        return String(decoding: result, as: UTF8.self)
    }

    @inline(__always) static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    @inline(__always) static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    @inline(__always) static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "A") + value - 10
    }
}
