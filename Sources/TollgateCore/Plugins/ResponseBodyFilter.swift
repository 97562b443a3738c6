import NIOCore
import HTTPTypes

/// A stage the response body streams through: compression rewrites the bytes, the cache's recorder
/// keeps a copy, a revalidated response replaces them. A response hook adds one to
/// `RequestContext.responseFilters`; the body then passes the filters in the order they were added
/// (the response hooks' order: the last plugin on the way in adds first).
///
/// A filter belongs to one request and is used only on its connection's event loop. A filter that
/// changes the body's length removes `Content-Length` in its response hook: the body is then sent
/// chunked (or, to HTTP/1.0 clients, until the connection closes). Where the fields keep a
/// `Content-Length`, the filters must produce exactly that many bytes.
public protocol ResponseBodyFilter: AnyObject, Sendable {
    /// A part of the body; returns what goes on to the next stage (may be empty).
    func process(_ chunk: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer
    /// The body ended; returns what is left to send.
    func finish(allocator: ByteBufferAllocator) -> ByteBuffer
}

extension Array where Element == any ResponseBodyFilter {
    /// `chunk` through every filter.
    public func process(_ chunk: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var data = chunk
        for filter in self { data = filter.process(data, allocator: allocator) }
        return data
    }

    /// Ends the body: what each filter has left goes through the filters after it.
    public func finish(allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = ByteBuffer()
        for filter in self {
            var data = out.readableBytes > 0 ? filter.process(out, allocator: allocator) : ByteBuffer()
            var rest = filter.finish(allocator: allocator)
            if data.readableBytes == 0 { data = rest } else { data.writeBuffer(&rest) }
            out = data
        }
        return out
    }

    /// A whole body (a gateway's own response) through every filter.
    public func transform(_ body: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = body.readableBytes > 0 ? process(body, allocator: allocator) : ByteBuffer()
        var rest = finish(allocator: allocator)
        out.writeBuffer(&rest)
        return out
    }
}

/// Requests a plugin makes to its route's service on its own (a cache refreshing a stale response in
/// the background): sent to a target of the service as the server picks one, answered with the whole
/// body (at most `maxBodyBytes`). The server gives plugins that ask (`wantsSubrequests`) one through
/// `RequestContext.subrequests`.
public protocol SubrequestClient: Sendable {
    func send(_ request: HTTPRequest, route: CompiledRoute, maxBodyBytes: Int,
              on loop: any EventLoop) -> EventLoopFuture<(HTTPResponse, ByteBuffer)>
}
