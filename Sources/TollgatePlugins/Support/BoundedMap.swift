/// A dictionary that keeps at most `capacity` keys: adding a new key past it drops the oldest ones
/// (first added, first out). For the caches of credentials, tokens and nonces; callers lock it.
struct BoundedMap<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private(set) var values: [Key: Value] = [:]
    private var order: [Key] = []
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
    }

    subscript(key: Key) -> Value? {
        get { values[key] }
        set {
            guard let newValue else {
                values[key] = nil   // its place in `order` goes when it is the oldest
                return
            }
            if values.updateValue(newValue, forKey: key) == nil {
                order.append(key)
                if order.count > capacity {
                    let drop = order.count - capacity
                    for old in order.prefix(drop) where old != key { values[old] = nil }
                    order.removeFirst(drop)
                }
            }
        }
    }

    var count: Int { values.count }
}
