import NIOCore
import Synchronization
import TollgateCore

/// Request collapsing: the first miss for a key goes upstream (the leader); later misses for the same
/// key wait for it, up to a timeout, and are then answered from what it stored. One table per cache,
/// across all event loops; a lock is held only to join or leave a flight.
final class CacheFlights: Sendable {
    /// What a flight ended with: the record stored (and under which key), or nothing to share.
    struct Outcome: Sendable {
        var key: String
        var record: CachedResponse
    }

    private struct Waiter {
        let id: UInt64
        let promise: EventLoopPromise<Outcome?>
    }

    private struct Table {
        var flights: [String: [Waiter]] = [:]
        var nextID: UInt64 = 0
    }

    private let table = Mutex(Table())

    enum Role {
        case leader
        case waiter(EventLoopFuture<Outcome?>)
    }

    /// Leads the flight for `key`, or waits for the one in the air (at most `timeout`; then nil).
    func join(_ key: String, on loop: any EventLoop, timeout: TimeAmount) -> Role {
        let joined: (id: UInt64, promise: EventLoopPromise<Outcome?>)? = table.withLock { table in
            guard table.flights[key] != nil else {
                table.flights[key] = []
                return nil
            }
            table.nextID &+= 1
            let waiter = Waiter(id: table.nextID, promise: loop.makePromise(of: Outcome?.self))
            table.flights[key]!.append(waiter)
            return (waiter.id, waiter.promise)
        }
        guard let (id, promise) = joined else { return .leader }
        loop.scheduleTask(in: timeout) { [self] in
            // Whoever takes the waiter out of the table completes its promise: the timeout or the leader.
            let removed = table.withLock { table -> Bool in
                guard let index = table.flights[key]?.firstIndex(where: { $0.id == id }) else { return false }
                table.flights[key]!.remove(at: index)
                return true
            }
            if removed { promise.succeed(nil) }
        }
        return .waiter(promise.futureResult)
    }

    /// The leader is done: its waiters go on with `outcome` (nil: they go upstream themselves).
    func land(_ key: String, outcome: Outcome?) {
        let waiters = table.withLock { $0.flights.removeValue(forKey: key) } ?? []
        for waiter in waiters { waiter.promise.succeed(outcome) }
    }
}
