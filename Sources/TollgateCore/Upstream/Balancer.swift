/// Smooth weighted round robin, as nginx does it: weights 5/1/1 give a a b a c a a, spreading the
/// heavy target out instead of sending it five requests in a row. Equal weights give plain round robin.
/// A plain value: one per service and event loop, so picking never takes a lock.
public struct SmoothWeightedRoundRobin: Sendable {
    private let weights: [Int]
    private var current: [Int]
    private let total: Int

    public init(weights: [Int]) {
        precondition(!weights.isEmpty && weights.allSatisfy { $0 > 0 })
        self.weights = weights
        self.current = Array(repeating: 0, count: weights.count)
        self.total = weights.reduce(0, +)
    }

    /// The index of the next target, skipping those `isAvailable` rejects; nil when none is available.
    public mutating func next(isAvailable: (Int) -> Bool = { _ in true }) -> Int? {
        if weights.count == 1 { return isAvailable(0) ? 0 : nil }
        var best = -1
        var availableTotal = 0
        for index in weights.indices where isAvailable(index) {
            current[index] += weights[index]
            availableTotal += weights[index]
            if best < 0 || current[index] > current[best] { best = index }
        }
        guard best >= 0 else { return nil }
        current[best] -= availableTotal
        return best
    }
}
