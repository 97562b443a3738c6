#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Smooth weighted round robin, as nginx does it: weights 5/1/1 give a a b a c a a, spreading the
/// heavy target out instead of sending it five requests in a row. Equal weights give plain round robin.
/// A plain value: one per service and event loop, so picking never takes a lock.
///
/// The sequence repeats every sum-of-weights picks, so it is computed once: while every target is
/// available a pick is one array read (O(1) at any number of targets); when some are not, the
/// classic O(n) step runs over the available ones.
public struct SmoothWeightedRoundRobin: Sendable {
    @usableFromInline let weights: [Int]
    @usableFromInline var current: [Int]
    /// One period of the sequence with every target available (empty when too long to keep).
    @usableFromInline let schedule: [Int32]
    @usableFromInline var position = 0

    public init(weights: [Int]) {
        precondition(!weights.isEmpty && weights.allSatisfy { $0 > 0 })
        self.weights = weights
        self.current = Array(repeating: 0, count: weights.count)
        let divisor = weights.reduce(0) { Self.gcd($0, $1) }
        let period = weights.reduce(0) { $0 + $1 / divisor }
        var schedule: [Int32] = []
        if weights.count > 1 && period <= 1 << 16 {
            var state = Array(repeating: 0, count: weights.count)
            schedule.reserveCapacity(period)
            for _ in 0..<period {
                var best = 0
                for index in weights.indices {
                    state[index] += weights[index]
                    if state[index] > state[best] { best = index }
                }
                state[best] -= weights.reduce(0, +)
                schedule.append(Int32(best))
            }
        }
        self.schedule = schedule
    }

    private static func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }

    /// The next target when every target is available: one read of the precomputed sequence.
    @inlinable
    public mutating func nextAllAvailable() -> Int {
        if schedule.isEmpty { return next { _ in true } ?? 0 }
        let index = Int(schedule[position])
        position += 1
        if position == schedule.count { position = 0 }
        return index
    }

    /// The index of the next target, skipping those `isAvailable` rejects; nil when none is available.
    @inlinable
    public mutating func next(isAvailable: (Int) -> Bool = { _ in true }) -> Int? {
        let weights = self.weights
        return next(isAvailable: isAvailable, weight: { weights[$0] })
    }

    /// The same, with each target's weight supplied now (slow start scales weights over time).
    @inlinable
    public mutating func next(isAvailable: (Int) -> Bool, weight: (Int) -> Int) -> Int? {
        if current.count == 1 { return isAvailable(0) ? 0 : nil }
        var best = -1
        var availableTotal = 0
        for index in current.indices where isAvailable(index) {
            let w = max(1, weight(index))
            current[index] += w
            availableTotal += w
            if best < 0 || current[index] > current[best] { best = index }
        }
        guard best >= 0 else { return nil }
        current[best] -= availableTotal
        return best
    }
}

/// Plain round robin: each available target in turn, weights ignored.
public struct RoundRobin: Sendable {
    @usableFromInline let count: Int
    @usableFromInline var cursor = 0

    public init(count: Int) {
        precondition(count > 0)
        self.count = count
    }

    @inlinable
    public mutating func next(isAvailable: (Int) -> Bool = { _ in true }) -> Int? {
        var index = cursor
        for _ in 0..<count {
            if isAvailable(index) {
                cursor = index + 1 == count ? 0 : index + 1
                return index
            }
            index = index + 1 == count ? 0 : index + 1
        }
        return nil
    }
}

/// Fewest in-flight requests relative to weight (`(inFlight + 1) / weight`, the +1 counting the
/// request being placed); ties go round robin, so equal loads still spread.
public struct LeastConnections: Sendable {
    @usableFromInline let count: Int
    @usableFromInline var cursor = 0
    /// 2^32 / weight for each target: `load × this` orders targets as `load / weight` with one
    /// multiplication per target (equal weights compare exactly).
    @usableFromInline var inverseWeights: [UInt64]
    /// The score of an idle target of the largest weight: nothing scores lower.
    @usableFromInline var idleScore: UInt64

    public init(count: Int) {
        self.init(weights: Array(repeating: 1, count: count))
    }

    public init(weights: [Int]) {
        precondition(!weights.isEmpty)
        self.count = weights.count
        self.inverseWeights = weights.map { (UInt64(1) << 32) / UInt64(max(1, $0)) }
        self.idleScore = inverseWeights.min()!
    }

    /// New weights (slow start changes them over time; callers do this now and then, not per pick).
    public mutating func setWeights(_ weights: [Int]) {
        precondition(weights.count == count)
        inverseWeights = weights.map { (UInt64(1) << 32) / UInt64(max(1, $0)) }
        idleScore = inverseWeights.min()!
    }

    /// With the weights given at init. Stops at an idle target of the largest weight, which nothing
    /// can beat, so under light load a pick looks at a few targets only.
    @inlinable
    public mutating func next(inFlight: (Int) -> Int, isAvailable: (Int) -> Bool = { _ in true }) -> Int? {
        var best = -1
        var bestScore = UInt64.max
        let idleScore = self.idleScore
        inverseWeights.withUnsafeBufferPointer { inverse in
            var index = cursor
            var remaining = count
            while remaining > 0 {
                if isAvailable(index) {
                    let score = UInt64(truncatingIfNeeded: inFlight(index) + 1) &* inverse[index]
                    if score < bestScore {
                        best = index
                        bestScore = score
                        if score == idleScore { break }
                    }
                }
                index += 1
                if index == count { index = 0 }
                remaining -= 1
            }
        }
        guard best >= 0 else { return nil }
        cursor = best + 1 == count ? 0 : best + 1
        return best
    }

    /// With weights supplied now (slow start scales them over time). `maxWeight` (the largest weight
    /// `weight` can return) lets the scan stop early at an idle target of that weight.
    @inlinable
    public mutating func next(inFlight: (Int) -> Int, weight: (Int) -> Int, maxWeight: Int = .max,
                              isAvailable: (Int) -> Bool = { _ in true }) -> Int? {
        var best = -1
        // Start worse than any real target (load / weight compared as cross products, no division;
        // 2^40 × a weight up to 2^20 cannot overflow).
        var bestLoad = 1 << 40
        var bestWeight = 1
        var done = false
        // From the cursor to the end, then from the start: two plain loops, no wrap test per step.
        @inline(__always)
        func consider(_ index: Int) {
            guard isAvailable(index) else { return }
            let load = inFlight(index) + 1
            let w = max(1, weight(index))
            // Strictly better only, so the first found (from the cursor) wins ties.
            if load * bestWeight < bestLoad * w {
                best = index
                bestLoad = load
                bestWeight = w
                done = load == 1 && w >= maxWeight
            }
        }
        var index = cursor
        while index < count && !done {
            consider(index)
            index += 1
        }
        index = 0
        while index < cursor && !done {
            consider(index)
            index += 1
        }
        guard best >= 0 else { return nil }
        cursor = best + 1 == count ? 0 : best + 1
        return best
    }
}

/// Power of two choices over a peak-EWMA of latency (Finagle's and Linkerd's `p2c` with `PeakEwma`):
/// two random available targets are compared by `latency × (in-flight + 1) / weight` and the cheaper
/// one wins. Latency jumps up at once on a slow response and decays toward new observations (and, with
/// time, toward zero), so a slow target is probed now and then but gets little traffic.
/// One per service and event loop: its in-flight counts and latencies are this loop's own.
public struct PeakEWMABalancer: Sendable {
    public struct Target: Sendable {
        /// Nanoseconds.
        public var cost: Double = 0
        public var stamp: UInt64 = 0
        public var inFlight = 0
    }

    public private(set) var targets: [Target]
    /// The decay time constant in nanoseconds (Linkerd: 10 s).
    private let decay: Double

    public init(count: Int, decayNanos: UInt64 = 10_000_000_000) {
        precondition(count > 0)
        self.targets = Array(repeating: Target(), count: count)
        self.decay = Double(decayNanos)
    }

    /// The latency estimate of `index` at `now`, decayed since its last observation.
    public func load(_ index: Int, now: UInt64) -> Double {
        let target = targets[index]
        guard target.cost > 0 else { return 0 }
        let elapsed = Double(now &- min(now, target.stamp))
        return target.cost * exp(-elapsed / decay)
    }

    private func score(_ index: Int, weight: Int, now: UInt64) -> Double {
        (load(index, now: now) + 1) * Double(targets[index].inFlight + 1) / Double(max(1, weight))
    }

    public mutating func next<R: RandomNumberGenerator>(now: UInt64, random: inout R, weight: (Int) -> Int,
                                                        isAvailable: (Int) -> Bool = { _ in true }) -> Int? {
        let count = targets.count
        if count == 1 { return isAvailable(0) ? 0 : nil }
        // Two distinct random candidates among the available ones (a few tries, then a scan).
        var first = -1
        var second = -1
        for _ in 0..<4 where first < 0 {
            let index = Int(random.next() % UInt64(count))
            if isAvailable(index) { first = index }
        }
        if first < 0 { first = (0..<count).first(where: isAvailable) ?? -1 }
        guard first >= 0 else { return nil }
        for _ in 0..<4 where second < 0 {
            let index = Int(random.next() % UInt64(count - 1))
            let candidate = index >= first ? index + 1 : index
            if isAvailable(candidate) { second = candidate }
        }
        if second < 0 { second = (0..<count).first { $0 != first && isAvailable($0) } ?? -1 }
        guard second >= 0 else { return first }
        return score(first, weight: weight(first), now: now) <= score(second, weight: weight(second), now: now) ? first : second
    }

    public mutating func started(_ index: Int) {
        targets[index].inFlight += 1
    }

    /// A response (or failure) after `latencyNanos`: peak goes in at once, lower values blend in.
    public mutating func finished(_ index: Int, latencyNanos: UInt64, now: UInt64) {
        targets[index].inFlight = max(0, targets[index].inFlight - 1)
        let rtt = Double(latencyNanos)
        let current = load(index, now: now)
        if rtt > current {
            targets[index].cost = rtt
        } else {
            let elapsed = Double(now &- min(now, targets[index].stamp))
            let w = exp(-elapsed / decay)
            targets[index].cost = current * w + rtt * (1 - w)
        }
        targets[index].stamp = now
    }
}

/// Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size filled by
/// each target's own permutation, so a key's target is one array read, and adding or removing one of
/// N targets moves about 1/N of the keys. Weights give targets proportionally many turns while the
/// table fills. Immutable once built: one per service and snapshot, shared by every loop.
public struct MaglevTable: Sendable {
    public static let defaultSize = 65_537

    private let table: [UInt16]
    public let count: Int

    /// `names` identify targets (`host:port`): a target keeps its permutation whatever else changes.
    public init(names: [String], weights: [Int], size: Int = MaglevTable.defaultSize) {
        precondition(!names.isEmpty && names.count == weights.count && names.count < Int(UInt16.max))
        let n = names.count
        let m = size
        let divisor = weights.reduce(0) { Self.gcd($0, max(1, $1)) }
        let turns = weights.map { max(1, $0) / max(1, divisor) }
        let offsets = names.map { Int(StableHash.hash($0, seed: 0x9E37_79B9) % UInt64(m)) }
        let skips = names.map { Int(StableHash.hash($0, seed: 0x85EB_CA6B) % UInt64(m - 1)) + 1 }
        var next = Array(repeating: 0, count: n)
        var entries = Array(repeating: UInt16.max, count: m)
        var filled = 0
        fill: while true {
            for target in 0..<n {
                for _ in 0..<turns[target] {
                    var slot = (offsets[target] + next[target] * skips[target]) % m
                    while entries[slot] != UInt16.max {
                        next[target] += 1
                        slot = (offsets[target] + next[target] * skips[target]) % m
                    }
                    entries[slot] = UInt16(target)
                    next[target] += 1
                    filled += 1
                    if filled == m { break fill }
                }
            }
        }
        self.table = entries
        self.count = n
    }

    /// The target for `hash`; when it is unavailable, the key is re-hashed a few times (so its keys
    /// spread over the others instead of all landing on one neighbour), then the first available wins.
    public func lookup(_ hash: UInt64, isAvailable: (Int) -> Bool = { _ in true }) -> Int? {
        var key = hash
        for _ in 0..<8 {
            let target = Int(table[Int(key % UInt64(table.count))])
            if isAvailable(target) { return target }
            key = StableHash.mix(key &+ 0x9E37_79B9_7F4A_7C15)
        }
        return (0..<count).first(where: isAvailable)
    }

    private static func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
}

/// A hash that is the same in every process and run (Swift's `Hasher` is seeded per process), so
/// every gateway node sends a key to the same target: FNV-1a, then a SplitMix64 finalizer.
public enum StableHash {
    public static func hash(_ text: String, seed: UInt64 = 0) -> UInt64 {
        // The same bytes through the pointer loop: iterating `utf8` costs several times more per byte.
        if let hashed = text.utf8.withContiguousStorageIfAvailable({ hash(UnsafeRawBufferPointer($0), seed: seed) }) {
            return hashed
        }
        var value: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
        for byte in text.utf8 {
            value ^= UInt64(byte)
            value = value &* 0x0000_0100_0000_01B3
        }
        return mix(value)
    }

    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        var value: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
        for byte in bytes {
            value ^= UInt64(byte)
            value = value &* 0x0000_0100_0000_01B3
        }
        return mix(value)
    }

    @inline(__always)
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
