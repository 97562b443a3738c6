import NIOCore

/// A RESP2 value (the Redis serialization protocol).
public enum RESPValue: Sendable, Equatable {
    case simpleString(String)
    case error(String)
    case integer(Int)
    /// nil: the null bulk string.
    case bulkString(ByteBuffer?)
    /// nil: the null array.
    case array([RESPValue]?)

    /// The value as text, for simple and bulk strings.
    public var string: String? {
        switch self {
        case .simpleString(let text): return text
        case .bulkString(let bytes?): return String(buffer: bytes)
        default: return nil
        }
    }

    public var int: Int? {
        switch self {
        case .integer(let value): return value
        case .bulkString(let bytes?): return Int(String(buffer: bytes))
        default: return nil
        }
    }
}

public enum RESPError: Error, Equatable, Sendable {
    case protocolError(String)
}

/// RESP2 on the wire: commands as arrays of bulk strings, replies parsed incrementally from the
/// front of a buffer (nil until a whole value has arrived). Pure: no sockets.
public enum RESP {
    /// `*N\r\n` then `$len\r\narg\r\n` for each argument.
    public static func writeCommand(_ arguments: [String], into out: inout ByteBuffer) {
        out.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            out.writeString("$\(argument.utf8.count)\r\n")
            out.writeString(argument)
            out.writeStaticString("\r\n")
        }
    }

    /// The same, for arguments that are bytes (binary values).
    public static func writeCommand(_ arguments: [ByteBuffer], into out: inout ByteBuffer) {
        out.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            out.writeString("$\(argument.readableBytes)\r\n")
            out.writeImmutableBuffer(argument)
            out.writeStaticString("\r\n")
        }
    }

    /// Bulk strings and arrays may be at most this long (Redis's own limit is 512 MB; a gateway's
    /// replies are small).
    static let maxLength = 64 << 20
    static let maxDepth = 16

    /// The next whole value at the front of `buffer`, consumed; nil (buffer untouched) when it has not
    /// all arrived.
    public static func parse(_ buffer: inout ByteBuffer) throws(RESPError) -> RESPValue? {
        var reader = buffer
        guard let value = try parseValue(&reader, depth: 0) else { return nil }
        buffer = reader
        return value
    }

    private static func line(_ buffer: inout ByteBuffer) throws(RESPError) -> String? {
        let view = buffer.readableBytesView
        guard let cr = view.firstIndex(of: 13) else {
            if view.count > 64 << 10 { throw .protocolError("line too long") }
            return nil
        }
        let index = cr - view.startIndex
        guard index + 1 < view.count else { return nil }
        guard view[cr + 1] == 10 else { throw .protocolError("line without LF") }
        let text = buffer.readString(length: index)!
        buffer.moveReaderIndex(forwardBy: 2)
        return text
    }

    private static func parseValue(_ buffer: inout ByteBuffer, depth: Int) throws(RESPError) -> RESPValue? {
        guard depth < maxDepth else { throw .protocolError("nesting too deep") }
        guard let type = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        buffer.moveReaderIndex(forwardBy: 1)
        guard let line = try line(&buffer) else { return nil }
        switch type {
        case UInt8(ascii: "+"):
            return .simpleString(line)
        case UInt8(ascii: "-"):
            return .error(line)
        case UInt8(ascii: ":"):
            guard let value = Int(line) else { throw .protocolError("bad integer '\(line)'") }
            return .integer(value)
        case UInt8(ascii: "$"):
            guard let length = Int(line), length >= -1, length <= maxLength else { throw .protocolError("bad bulk length '\(line)'") }
            if length == -1 { return .bulkString(nil) }
            guard buffer.readableBytes >= length + 2 else { return nil }
            let bytes = buffer.readSlice(length: length)!
            guard buffer.readInteger(as: UInt16.self) == 0x0D0A else { throw .protocolError("bulk string without CRLF") }
            return .bulkString(bytes)
        case UInt8(ascii: "*"):
            guard let count = Int(line), count >= -1, count <= 1 << 20 else { throw .protocolError("bad array length '\(line)'") }
            if count == -1 { return .array(nil) }
            var elements: [RESPValue] = []
            elements.reserveCapacity(count)
            for _ in 0..<count {
                guard let element = try parseValue(&buffer, depth: depth + 1) else { return nil }
                elements.append(element)
            }
            return .array(elements)
        default:
            throw .protocolError("unknown type byte \(type)")
        }
    }
}
