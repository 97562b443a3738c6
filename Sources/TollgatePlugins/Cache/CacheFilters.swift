import NIOCore
import TollgateCore

/// Passes the body on unchanged and keeps a copy, up to a size limit; at the end, hands the whole
/// body to `store` (nothing when the body outgrew the limit or never ended). Optionally passes
/// nothing on (the client gets a 304 while the full response is stored).
final class RecordingFilter: ResponseBodyFilter, @unchecked Sendable {   // one request, on its event loop
    private var kept: ByteBuffer?
    private let limit: Int
    private let passOn: Bool
    private let store: @Sendable (ByteBuffer?) -> Void
    private var finished = false

    init(limit: Int, passOn: Bool, store: @escaping @Sendable (ByteBuffer?) -> Void) {
        self.limit = limit
        self.passOn = passOn
        self.store = store
        self.kept = ByteBuffer()
    }

    deinit {
        // The body never ended (the upstream or the client went away): nothing is stored, and whoever
        // waits for it is let go.
        if !finished { store(nil) }
    }

    func process(_ chunk: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        if kept != nil {
            if kept!.readableBytes + chunk.readableBytes > limit {
                kept = nil
            } else {
                var chunk = chunk
                if kept!.capacity == 0 { kept = allocator.buffer(capacity: max(chunk.readableBytes, 4096)) }
                kept!.writeBuffer(&chunk)
            }
        }
        return passOn ? chunk : ByteBuffer()
    }

    func finish(allocator: ByteBufferAllocator) -> ByteBuffer {
        guard !finished else { return ByteBuffer() }
        finished = true
        // Stored in a buffer of exactly its size: the store's budget counts what it really holds.
        let body = kept.map { kept -> ByteBuffer in
            var exact = allocator.buffer(capacity: kept.readableBytes)
            exact.writeImmutableBuffer(kept)
            return exact
        }
        kept = nil
        store(body)
        return ByteBuffer()
    }
}

/// Drops the upstream's body and sends `body` instead (a 304 that refreshed a stored response, a
/// stored response served when the upstream failed).
final class ReplacingFilter: ResponseBodyFilter, @unchecked Sendable {
    private var body: ByteBuffer?

    init(body: ByteBuffer) {
        self.body = body
    }

    func process(_ chunk: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer { ByteBuffer() }

    func finish(allocator: ByteBufferAllocator) -> ByteBuffer {
        defer { body = nil }
        return body ?? ByteBuffer()
    }
}
