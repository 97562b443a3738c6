import NIOCore

/// How a message body is delimited on the wire (RFC 9112 section 6).
public enum BodyFraming: Equatable, Sendable {
    case none
    case length(Int)
    case chunked
    /// Ends when the connection closes (responses only).
    case untilClose

    /// A request's framing from its (already validated) head.
    public static func request(_ head: RawHead) -> BodyFraming {
        if head.transferEncodingFields > 0 { return .chunked }
        if let length = head.contentLength, length > 0 { return .length(length) }
        return .none
    }

    /// A response's framing (RFC 9112 section 6.3), given whether it answers a HEAD request.
    public static func response(_ head: RawHead, toHead: Bool) -> BodyFraming {
        let status = head.status
        if toHead || status < 200 || status == 204 || status == 304 { return .none }
        if head.transferEncodingFields > 0 { return head.chunked ? .chunked : .untilClose }
        if let length = head.contentLength { return length > 0 ? .length(length) : .none }
        return .untilClose
    }
}

/// What the decoder found next.
public enum BodyEvent: Sendable {
    /// Body bytes (a slice of the input, not a copy).
    case data(ByteBuffer)
    /// The body ended; for chunked bodies, the raw trailer lines (each ending in CRLF), if any.
    case end(trailers: ByteBuffer?)
}

public enum BodyDecodingError: Error, Equatable, Sendable {
    case invalidChunkSize
    case invalidChunkFraming
    case trailersTooLarge
}

/// Takes body bytes off the front of a buffer: by length, by chunks (RFC 9112 section 7.1), or until
/// close. A plain state machine: the caller feeds the bytes it has and acts on each event.
public struct BodyDecoder: Sendable {
    private enum State: Sendable {
        case length(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case untilClose
        /// The body's bytes are all out; `.end` comes next.
        case ending
        case done
    }

    private var state: State
    private let maxTrailerBytes: Int

    public init(_ framing: BodyFraming, maxTrailerBytes: Int = 16 << 10) {
        switch framing {
        case .none: state = .ending
        case .length(let length): state = length > 0 ? .length(remaining: length) : .ending
        case .chunked: state = .chunkSize
        case .untilClose: state = .untilClose
        }
        self.maxTrailerBytes = maxTrailerBytes
    }

    /// The next event from the front of `buffer`, or nil when more bytes are needed (or the body is
    /// done). Every body, an empty one too, ends with `.end`, except `.untilClose` bodies: they end
    /// when the caller sees the connection close.
    public mutating func next(_ buffer: inout ByteBuffer) throws(BodyDecodingError) -> BodyEvent? {
        while true {
            switch state {
            case .done:
                return nil
            case .ending:
                state = .done
                return .end(trailers: nil)
            case .length(let remaining):
                guard buffer.readableBytes > 0 else { return nil }
                let count = min(remaining, buffer.readableBytes)
                let slice = buffer.readSlice(length: count)!
                state = count == remaining ? .ending : .length(remaining: remaining - count)
                return .data(slice)
            case .untilClose:
                guard buffer.readableBytes > 0 else { return nil }
                return .data(buffer.readSlice(length: buffer.readableBytes)!)
            case .chunkData(let remaining):
                guard buffer.readableBytes > 0 else { return nil }
                let count = min(remaining, buffer.readableBytes)
                let slice = buffer.readSlice(length: count)!
                state = count == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - count)
                return .data(slice)
            case .chunkDataEnd:
                guard buffer.readableBytes >= 2 else { return nil }
                guard buffer.readInteger(as: UInt16.self) == 0x0D0A else { throw .invalidChunkFraming }
                state = .chunkSize
            case .chunkSize:
                guard let size = try Self.chunkSizeLine(&buffer) else { return nil }
                state = size == 0 ? .trailers : .chunkData(remaining: size)
            case .trailers:
                guard let trailers = try trailerSection(&buffer) else { return nil }
                state = .done
                return .end(trailers: trailers.readableBytes > 0 ? trailers : nil)
            }
        }
    }

    /// `1*HEXDIG [ chunk-ext ] CRLF`, consumed when complete; nil when the line has not all arrived.
    private static func chunkSizeLine(_ buffer: inout ByteBuffer) throws(BodyDecodingError) -> Int? {
        let result = buffer.withUnsafeReadableBytes { p -> (size: Int, length: Int)?? in
            var size = 0
            var i = 0
            let n = p.count
            while i < n {
                let b = p[i]
                let digit: Int
                switch b {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = Int(b - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = Int(b - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = Int(b - UInt8(ascii: "A") + 10)
                default: digit = -1
                }
                if digit < 0 { break }
                if i >= 15 { return .some(nil) }   // more than 2^60: refuse
                size = size * 16 + digit
                i += 1
            }
            if i == n { return i > 15 ? .some(nil) : nil }
            if i == 0 { return .some(nil) }
            // Chunk extensions are skipped (bounded), never forwarded.
            if p[i] == UInt8(ascii: ";") || p[i] == 0x20 || p[i] == 9 {
                while i < n && p[i] != 13 {
                    if p[i] == 10 || i > 4096 { return .some(nil) }
                    i += 1
                }
                if i == n { return nil }
            }
            if i + 1 >= n { return p[i] == 13 ? nil : .some(nil) }
            guard p[i] == 13, p[i + 1] == 10 else { return .some(nil) }
            return (size, i + 2)
        }
        switch result {
        case .none: return nil
        case .some(.none): throw .invalidChunkSize
        case .some(.some(let line)):
            buffer.moveReaderIndex(forwardBy: line.length)
            return line.size
        }
    }

    /// Trailer lines up to the empty line; the lines without the empty one.
    private func trailerSection(_ buffer: inout ByteBuffer) throws(BodyDecodingError) -> ByteBuffer? {
        let end = buffer.withUnsafeReadableBytes { p -> Int?? in
            var i = 0
            let n = p.count
            while true {
                if i > maxTrailerBytes { return .some(nil) }
                if i + 1 >= n { return nil }
                if p[i] == 13 && p[i + 1] == 10 { return i }   // the empty line
                while i < n && p[i] != 10 {
                    if i > maxTrailerBytes { return .some(nil) }
                    i += 1
                }
                if i == n { return nil }
                guard p[i - 1] == 13 else { return .some(nil) }
                i += 1
            }
        }
        switch end {
        case .none: return nil
        case .some(.none): throw .trailersTooLarge
        case .some(.some(let length)):
            let trailers = buffer.readSlice(length: length)!
            buffer.moveReaderIndex(forwardBy: 2)
            return trailers
        }
    }
}
