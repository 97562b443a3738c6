/// Comparisons of raw bytes with lowercase ASCII names (header names, codings, media types), the bytes'
/// case ignored: on the request path, without making strings.
public enum ASCIICase {
    /// Whether `bytes` start with `lowercase` (ASCII letters in `bytes` compared lowercased).
    public static func hasPrefix(_ bytes: UnsafeRawBufferPointer, _ lowercase: String) -> Bool {
        let matched: Bool? = lowercase.utf8.withContiguousStorageIfAvailable { expected in
            guard bytes.count >= expected.count else { return false }
            for offset in 0..<expected.count where lowered(bytes[offset]) != expected[offset] { return false }
            return true
        }
        if let matched { return matched }
        // A name whose UTF-8 is not contiguous: the slower view.
        guard bytes.count >= lowercase.utf8.count else { return false }
        for (offset, expected) in lowercase.utf8.enumerated() where lowered(bytes[offset]) != expected { return false }
        return true
    }

    /// Whether `bytes` are `lowercase`, ASCII case ignored.
    public static func equals(_ bytes: UnsafeRawBufferPointer, _ lowercase: String) -> Bool {
        bytes.count == lowercase.utf8.count && hasPrefix(bytes, lowercase)
    }

    /// Whether `bytes` end with `lowercase`, ASCII case ignored.
    public static func hasSuffix(_ bytes: UnsafeRawBufferPointer, _ lowercase: String) -> Bool {
        let length = lowercase.utf8.count
        guard bytes.count >= length else { return false }
        return hasPrefix(UnsafeRawBufferPointer(rebasing: bytes[(bytes.count - length)...]), lowercase)
    }

    @inline(__always)
    public static func lowered(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
    }
}
