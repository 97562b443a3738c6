#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A per-thread pointer (pthread TLS, without NIO's boxed dynamic cast). The objects themselves are
/// kept alive by their owner; the key dies with this slot.
final class ThreadSlot<Value: AnyObject>: @unchecked Sendable {
    private var key = pthread_key_t()

    init() { pthread_key_create(&key, nil) }
    deinit { pthread_key_delete(key) }

    @inline(__always)
    func get() -> Value? {
        guard let raw = pthread_getspecific(key) else { return nil }
        return Unmanaged<Value>.fromOpaque(raw).takeUnretainedValue()
    }

    /// Calls `body` with this thread's object, without retaining it (the owner keeps it alive); nil
    /// when this thread has none yet.
    @inline(__always)
    func withValue<Result>(_ body: (Value) -> Result) -> Result? {
        guard let raw = pthread_getspecific(key) else { return nil }
        return Unmanaged<Value>.fromOpaque(raw)._withUnsafeGuaranteedRef(body)
    }

    func set(_ value: Value) {
        pthread_setspecific(key, Unmanaged.passUnretained(value).toOpaque())
    }
}
