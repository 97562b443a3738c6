import Synchronization

/// State plugins keep across config reloads (rate-limit counters, a hybrid store's unsent counts,
/// later caches), by a key the plugin chooses (its YAML path and settings): a reload that keeps a
/// plugin's settings keeps its state. One registry per gateway; the process-wide `shared` one by
/// default, a fresh one for each of several gateways in one process (tests).
public final class PluginStateRegistry: Sendable {
    private let entries = Mutex<[String: any Sendable]>([:])

    public init() {}

    public static let shared = PluginStateRegistry()

    /// The value under `key`, made by `make` the first time (or when the kept one is of another type).
    /// Not for optional values: a missing entry casts to an optional's nil.
    public func value<Value: Sendable>(for key: String, make: () -> Value) -> Value {
        entries.withLock { entries in
            if let existing = entries[key] as? Value { return existing }
            let made = make()
            entries[key] = made
            return made
        }
    }

    /// Every kept value of one type (statistics, tests).
    public func all<Value: Sendable>(_ type: Value.Type) -> [Value] {
        entries.withLock { entries in entries.values.compactMap { $0 as? Value } }
    }
}
