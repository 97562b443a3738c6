import HTTPTypes
import NIOCore

/// Header lines a plugin adds to a response, written as bytes (`name: value\r\n`) instead of built as
/// swift-http-types fields: a field's value is checked and copied into a `String` when it is made,
/// which costs more than the line itself for the few fields a rate limit adds to every response.
///
/// The buffer is the connection's, reused from one response to the next. Pieces given as bytes must be
/// legal in a field (a name that is a token, a value without CR, LF or NUL): plugins render their
/// fixed pieces once, checked by `isLegalValue`, and add only decimals to them per response.
public struct HeaderLines {
    public var buffer: ByteBuffer

    public init(buffer: ByteBuffer) {
        self.buffer = buffer
    }

    public var isEmpty: Bool { buffer.readableBytes == 0 }

    /// A whole field, checked as swift-http-types checked it.
    public mutating func add(_ field: HTTPField) {
        buffer.writeString(field.name.rawName)
        buffer.writeStaticString(": ")
        buffer.writeString(field.value)
        buffer.writeStaticString("\r\n")
    }

    /// Writes lines of at most `bound` bytes in one go (one capacity check, then plain copies).
    @inlinable
    public mutating func write(reserving bound: Int, _ body: (inout HeadOutput) -> Void) {
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { memory in
            var output = HeadOutput(UnsafeMutableRawBufferPointer(rebasing: memory[..<bound]))
            body(&output)
            return output.offset
        }
    }

    /// Whether `bytes` may stand in a field value (visible ASCII, spaces and tabs, and bytes above
    /// 0x7F, as RFC 9110 allows): what a plugin checks its pre-rendered pieces with.
    public static func isLegalValue(_ bytes: some Sequence<UInt8>) -> Bool {
        bytes.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }
    }

    /// `name: ` as bytes, the name as it was spelled (as `add` writes it).
    public static func prefix(_ name: HTTPField.Name) -> [UInt8] {
        Array(name.rawName.utf8) + Array(": ".utf8)
    }
}
