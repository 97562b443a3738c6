import CTollgateBrotli
import CTollgateZlib
import NIOCore
import TollgateCore

/// A content coding the gateway can produce or undo.
public enum ContentCoding: String, Sendable, CaseIterable {
    case br
    case gzip
    case deflate

}

/// Compresses a body as it streams. A body of unknown length (chunked: perhaps a stream of events)
/// has each chunk compressed and flushed at once (a sync flush), so nothing waits for the rest of
/// it. A body of known length is compressed as it comes without flushing each chunk: the coder emits
/// blocks as its buffers fill (a bounded amount, never the whole body) and the end flushes the rest,
/// which makes one block of a small body instead of two (a flushed block costs the coder its
/// Huffman trees). One per response, on its event loop.
final class CompressingFilter: ResponseBodyFilter, @unchecked Sendable {
    private enum Engine {
        case zlib(UnsafeMutablePointer<z_stream>)
        case brotli(OpaquePointer)
    }

    private let engine: Engine
    private var finished = false
    /// Flush after each chunk (bodies of unknown length).
    private let flushEachChunk: Bool

    /// Nil when the library could not set up a stream (out of memory). With the body's length known,
    /// a small body gets a window (and zlib's hash tables) no larger than it needs: setting up a
    /// full-size stream costs more than compressing a few kilobytes.
    init?(coding: ContentCoding, level: Int32, length: Int? = nil) {
        flushEachChunk = length == nil
        switch coding {
        case .gzip, .deflate:
            var bits: Int32 = 15
            var memory: Int32 = 8
            if let length, length > 0 {
                // zlib's usable window is 262 bytes short of its size.
                while bits > 9 && length < (1 << (bits - 1)) - 262 {
                    bits -= 1
                    memory -= 1
                }
                memory = max(1, memory)
            }
            let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
            stream.initialize(to: z_stream())
            let windowBits = coding == .gzip ? bits + 16 : bits
            guard tollgate_deflate_init(stream, level, windowBits, memory) == Z_OK else {
                stream.deallocate()
                return nil
            }
            engine = .zlib(stream)
        case .br:
            guard let state = BrotliEncoderCreateInstance(nil, nil, nil) else { return nil }
            BrotliEncoderSetParameter(state, BROTLI_PARAM_QUALITY, UInt32(level))
            var window: UInt32 = 20
            if let length, length > 0 {
                while window > 10 && length <= 1 << (window - 1) { window -= 1 }
                BrotliEncoderSetParameter(state, BROTLI_PARAM_SIZE_HINT, UInt32(min(length, 1 << 30)))
            }
            BrotliEncoderSetParameter(state, BROTLI_PARAM_LGWIN, window)
            engine = .brotli(state)
        }
    }

    deinit {
        switch engine {
        case .zlib(let stream):
            deflateEnd(stream)
            stream.deinitialize(count: 1)
            stream.deallocate()
        case .brotli(let state):
            BrotliEncoderDestroyInstance(state)
        }
    }

    func process(_ chunk: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        guard !finished, chunk.readableBytes > 0 else { return ByteBuffer() }
        return run(chunk, finish: false, allocator: allocator)
    }

    func finish(allocator: ByteBufferAllocator) -> ByteBuffer {
        guard !finished else { return ByteBuffer() }
        finished = true
        return run(ByteBuffer(), finish: true, allocator: allocator)
    }

    private func run(_ input: ByteBuffer, finish: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: max(256, input.readableBytes / 2 + 64))
        input.withUnsafeReadableBytes { source in
            switch engine {
            case .zlib(let stream):
                stream.pointee.next_in = UnsafeMutablePointer(mutating: source.bindMemory(to: UInt8.self).baseAddress)
                stream.pointee.avail_in = UInt32(source.count)
                while true {
                    var code: Int32 = Z_OK
                    out.writeWithUnsafeMutableBytes(minimumWritableBytes: 256) { target in
                        stream.pointee.next_out = target.bindMemory(to: UInt8.self).baseAddress
                        stream.pointee.avail_out = UInt32(target.count)
                        code = deflate(stream, finish ? Z_FINISH : flushEachChunk ? Z_SYNC_FLUSH : Z_NO_FLUSH)
                        return target.count - Int(stream.pointee.avail_out)
                    }
                    if code == Z_STREAM_END { break }
                    // Flushed: zlib left output space unused with all input taken.
                    if !finish && stream.pointee.avail_out > 0 && stream.pointee.avail_in == 0 { break }
                    if code != Z_OK && code != Z_BUF_ERROR { break }
                }
                stream.pointee.next_in = nil
            case .brotli(let state):
                var availableIn = source.count
                var nextIn = source.bindMemory(to: UInt8.self).baseAddress
                let operation = finish ? BROTLI_OPERATION_FINISH : flushEachChunk ? BROTLI_OPERATION_FLUSH : BROTLI_OPERATION_PROCESS
                while true {
                    var availableOut = 0
                    out.writeWithUnsafeMutableBytes(minimumWritableBytes: 256) { target in
                        availableOut = target.count
                        var nextOut = target.bindMemory(to: UInt8.self).baseAddress
                        BrotliEncoderCompressStream(state, operation, &availableIn, &nextIn, &availableOut, &nextOut, nil)
                        return target.count - availableOut
                    }
                    if availableIn == 0 && BrotliEncoderHasMoreOutput(state) == 0 { break }
                }
            }
        }
        return out
    }
}

public enum DecompressionError: Error, Equatable {
    /// The decompressed body would pass the limit (a zip bomb, or simply too large).
    case tooLarge
    case invalid
}

/// Undoes a content coding of a whole body, stopping as soon as the output passes `limit`.
public enum Decompressor {
    public static func decompress(_ input: ByteBuffer, coding: ContentCoding, limit: Int) throws(DecompressionError) -> ByteBuffer {
        do {
            return try decompress(input, coding: coding, limit: limit, rawDeflate: false)
        } catch .invalid where coding == .deflate {
            // "deflate" means the zlib format, but some clients send raw deflate data.
            return try decompress(input, coding: coding, limit: limit, rawDeflate: true)
        }
    }

    private static func decompress(_ input: ByteBuffer, coding: ContentCoding, limit: Int,
                                   rawDeflate: Bool) throws(DecompressionError) -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(min(limit, max(1024, input.readableBytes * 4)))
        let outcome: DecompressionError? = input.withUnsafeReadableBytes { source -> DecompressionError? in
            switch coding {
            case .gzip, .deflate:
                var stream = z_stream()
                // 31: gzip framing; 15: zlib framing; -15: raw deflate.
                let windowBits: Int32 = coding == .gzip ? 31 : rawDeflate ? -15 : 15
                guard tollgate_inflate_init(&stream, windowBits) == Z_OK else { return .invalid }
                defer { inflateEnd(&stream) }
                stream.next_in = UnsafeMutablePointer(mutating: source.bindMemory(to: UInt8.self).baseAddress)
                stream.avail_in = UInt32(source.count)
                while true {
                    var code: Int32 = Z_OK
                    out.writeWithUnsafeMutableBytes(minimumWritableBytes: 16 << 10) { target in
                        stream.next_out = target.bindMemory(to: UInt8.self).baseAddress
                        stream.avail_out = UInt32(target.count)
                        code = inflate(&stream, Z_NO_FLUSH)
                        return target.count - Int(stream.avail_out)
                    }
                    if out.readableBytes > limit { return .tooLarge }
                    if code == Z_STREAM_END { return stream.avail_in == 0 ? nil : .invalid }
                    if code != Z_OK && code != Z_BUF_ERROR { return .invalid }
                    if code == Z_BUF_ERROR && stream.avail_in == 0 { return .invalid }   // truncated
                }
            case .br:
                guard let state = BrotliDecoderCreateInstance(nil, nil, nil) else { return .invalid }
                defer { BrotliDecoderDestroyInstance(state) }
                var availableIn = source.count
                var nextIn = source.bindMemory(to: UInt8.self).baseAddress
                while true {
                    var result = BROTLI_DECODER_RESULT_ERROR
                    out.writeWithUnsafeMutableBytes(minimumWritableBytes: 16 << 10) { target in
                        var availableOut = target.count
                        var nextOut = target.bindMemory(to: UInt8.self).baseAddress
                        result = BrotliDecoderDecompressStream(state, &availableIn, &nextIn, &availableOut, &nextOut, nil)
                        return target.count - availableOut
                    }
                    if out.readableBytes > limit { return .tooLarge }
                    switch result {
                    case BROTLI_DECODER_RESULT_SUCCESS: return availableIn == 0 ? nil : .invalid
                    case BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT: continue
                    default: return .invalid   // an error, or input that ended too soon
                    }
                }
            }
        }
        if let outcome { throw outcome }
        return out
    }
}
