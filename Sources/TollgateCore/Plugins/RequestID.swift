/// A request's id: the client's own (propagated) or one the gateway made up. A made-up id is kept as
/// its 128 random bits and written as 32 lowercase hex digits straight into the heads that carry it,
/// so most requests never build it as a `String` (which, at 32 bytes, would be a heap allocation).
public struct RequestID: Sendable, Equatable, CustomStringConvertible, ExpressibleByStringLiteral {
    @usableFromInline enum Storage: Sendable, Equatable {
        case random(high: UInt64, low: UInt64)
        case text(String)
    }

    @usableFromInline let storage: Storage

    /// A generated id: the two halves print as 32 hex digits.
    public init(high: UInt64, low: UInt64) { storage = .random(high: high, low: low) }

    /// An id given as text (a client's, checked by the caller).
    public init(_ text: String) { storage = .text(text) }

    public init(stringLiteral value: String) { self.init(value) }

    /// The id as text (rendered on each call for a generated id).
    public var string: String {
        switch storage {
        case .text(let text): return text
        case .random: return withUTF8 { String(decoding: $0, as: UTF8.self) }
        }
    }

    public var description: String { string }

    /// Its length in bytes.
    public var utf8Count: Int {
        switch storage {
        case .text(let text): return text.utf8.count
        case .random: return 32
        }
    }

    /// Calls `body` with the id's bytes (for a generated id, 32 hex digits on the stack).
    @inlinable
    public func withUTF8<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        switch storage {
        case .text(var text):
            return try text.withUTF8 { try body(UnsafeRawBufferPointer($0)) }
        case .random(let high, let low):
            return try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { buffer in
                TraceContext.writeHex(high, into: buffer, at: 0)
                TraceContext.writeHex(low, into: buffer, at: 16)
                return try body(UnsafeRawBufferPointer(buffer))
            }
        }
    }
}
