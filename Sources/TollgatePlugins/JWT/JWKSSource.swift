import AsyncHTTPClient
import Foundation
import JWTKit
import Logging
import NIOCore
import NIOHTTP1
import Synchronization
import TollgateCore

/// The keys of a JWKS URL (RFC 7517), fetched with async-http-client and cached: refreshed in the
/// background when their `Cache-Control: max-age` (or `refresh`) runs out, used for `max_stale`
/// beyond that while the endpoint fails, and fetched again on an unknown `kid` at most once per
/// `min_refetch` (a flood of random kids cannot hammer the identity provider). A request never waits
/// for a refresh when keys are cached; only the first requests after a start, and one with an unknown
/// kid, wait for a fetch (off the event loop's thread: the loop goes on serving others).
final class JWKSSource: Sendable {
    struct Settings: Sendable, Hashable {
        var url: String
        var refresh: Duration = .seconds(600)
        var minRefetch: Duration = .seconds(30)
        var maxStale: Duration = .seconds(3_600)
        var timeout: Duration = .seconds(5)
        var allowed: Set<String>
    }

    struct Snapshot: Sendable {
        var keys: JWTKeySet?
        /// Monotonic ns: when a refresh is due, and when the keys stop being used.
        var refreshAt: UInt64 = 0
        var usableUntil: UInt64 = 0
        var lastAttempt: UInt64 = 0
        var lastError: String?
    }

    let settings: Settings
    private let state = Mutex<(snapshot: Snapshot, fetching: Bool, waiters: [EventLoopPromise<Void>])>((Snapshot(), false, []))
    private static let logger = Logger(label: "tollgate.jwt")

    init(settings: Settings) {
        self.settings = settings
    }

    var snapshot: Snapshot { state.withLock { $0.snapshot } }
    var isFetching: Bool { state.withLock { $0.fetching } }

    /// Whether an unknown kid may trigger a fetch now.
    func mayRefetch(now: UInt64) -> Bool {
        state.withLock { now >= $0.snapshot.lastAttempt + settings.minRefetch.unsignedNanoseconds }
    }

    /// Starts a background refresh when one is due (the caller does not wait).
    func refreshIfDue(now: UInt64) {
        let due = state.withLock { !$0.fetching && $0.snapshot.keys != nil && now >= $0.snapshot.refreshAt
            && now >= $0.snapshot.lastAttempt + 1_000_000_000 }
        if due { _ = fetch(on: nil) }
    }

    /// Fetches the document (or joins the fetch in flight); the future completes, on `loop`, when it is
    /// done, whether it worked or not (read `snapshot` after).
    func fetch(on loop: (any EventLoop)?) -> EventLoopFuture<Void>? {
        let promise = loop?.makePromise(of: Void.self)
        let start = state.withLock { state -> Bool in
            if let promise { state.waiters.append(promise) }
            guard !state.fetching else { return false }
            state.fetching = true
            state.snapshot.lastAttempt = MonotonicClock.nanoseconds()
            return true
        }
        if start {
            let settings = self.settings
            let startedAt = MonotonicClock.nanoseconds()
            Task {
                let result: Result<(JWTKeySet, Duration?), any Error>
                do { result = .success(try await Self.download(settings)) } catch { result = .failure(error) }
                self.finish(result, startedAt: startedAt)
            }
        }
        return promise?.futureResult
    }

    /// Records a fetch's outcome. The keys' age counts from when the fetch started (the answer is at
    /// least that old; a busy machine may take a while to get back here).
    private func finish(_ result: Result<(JWTKeySet, Duration?), any Error>, startedAt now: UInt64) {
        let waiters = state.withLock { state -> [EventLoopPromise<Void>] in
            switch result {
            case .success(let (keys, maxAge)):
                let lifetime = min(max(maxAge ?? settings.refresh, .seconds(1)), .seconds(86_400))
                state.snapshot.keys = keys
                state.snapshot.refreshAt = now + lifetime.unsignedNanoseconds
                state.snapshot.usableUntil = now + lifetime.unsignedNanoseconds + settings.maxStale.unsignedNanoseconds
                state.snapshot.lastError = nil
            case .failure(let error):
                state.snapshot.lastError = "\(error)"
            }
            state.fetching = false
            defer { state.waiters = [] }
            return state.waiters
        }
        switch result {
        case .success(let (keys, _)):
            Self.logger.info("JWKS loaded", metadata: ["url": "\(settings.url)", "keys": "\(keys.keys.count)"])
        case .failure(let error):
            Self.logger.warning("JWKS fetch failed; cached keys stay in use until they expire",
                                metadata: ["url": "\(settings.url)", "error": "\(error)"])
        }
        for waiter in waiters { waiter.succeed() }
    }

    enum FetchError: Error, CustomStringConvertible {
        case status(Int)
        case notJWKS(String)
        var description: String {
            switch self {
            case .status(let code): return "the JWKS endpoint answered \(code)"
            case .notJWKS(let detail): return "not a JWKS document: \(detail)"
            }
        }
    }

    /// GET the document, parse it, make its keys; with the `max-age` of its Cache-Control.
    static func download(_ settings: Settings) async throws -> (JWTKeySet, Duration?) {
        var request = HTTPClientRequest(url: settings.url)
        request.headers.add(name: "Accept", value: "application/json")
        let response = try await HTTPClient.shared.execute(request, timeout: .nanoseconds(Int64(settings.timeout.unsignedNanoseconds)))
        guard response.status == .ok else { throw FetchError.status(Int(response.status.code)) }
        let body = try await response.body.collect(upTo: 1 << 20)
        let document: JWKS
        do {
            document = try JSONDecoder().decode(JWKS.self, from: Data(body.readableBytesView))
        } catch {
            throw FetchError.notJWKS("\(error)")
        }
        let keys = try await JWTKeySet.build(sources: [], jwks: [document], allowed: settings.allowed)
        return (keys, maxAge(response.headers))
    }

    static func maxAge(_ headers: HTTPHeaders) -> Duration? {
        for value in headers["Cache-Control"] {
            for directive in value.split(separator: ",") {
                let parts = directive.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
                if parts.count == 2, parts[0].lowercased() == "max-age", let seconds = Int(parts[1]), seconds >= 0 {
                    return .seconds(seconds)
                }
            }
        }
        return nil
    }
}
