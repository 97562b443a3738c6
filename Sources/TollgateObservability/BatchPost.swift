import AsyncHTTPClient
import Logging
import NIOCore

/// One batch POSTed to a telemetry receiver (a log shipper's, a trace collector's), tried again with
/// exponential backoff while the answer says it may succeed later or nothing answers at all.
enum BatchPost {
    struct Policy {
        var retries: Int
        var initialBackoff: Duration
        var maxBackoff: Duration
        var timeout: Duration
        /// Which non-2xx statuses are worth sending the same bytes again.
        var retryable: (UInt) -> Bool
    }

    /// Whether the receiver took the batch (a 2xx answer). `receiver` names it in the log lines.
    static func send(_ body: [UInt8], to url: String, contentType: String, headers: [(String, String)], policy: Policy,
                     receiver: String, logger: Logger) async -> Bool {
        var backoff = policy.initialBackoff
        for attempt in 0...policy.retries {
            if Task.isCancelled && attempt > 0 { return false }
            do {
                var request = HTTPClientRequest(url: url)
                request.method = .POST
                request.headers.add(name: "Content-Type", value: contentType)
                for (name, value) in headers { request.headers.add(name: name, value: value) }
                request.body = .bytes(ByteBuffer(bytes: body))
                // The client waits for a connection until this deadline: a receiver that is down
                // costs one timeout per attempt, never more.
                let response = try await HTTPClient.shared.execute(request, timeout: .nanoseconds(Int64(policy.timeout.unsignedNanoseconds)))
                _ = try? await response.body.collect(upTo: 1 << 20)
                if (200..<300).contains(response.status.code) { return true }
                guard policy.retryable(response.status.code) else {
                    logger.warning("\(receiver) refused a batch", metadata: ["status": "\(response.status.code)"])
                    return false
                }
                logger.debug("\(receiver) refused a batch", metadata: ["status": "\(response.status.code)", "attempt": "\(attempt)"])
            } catch {
                logger.debug("\(receiver) unreachable", metadata: ["error": "\(error)", "attempt": "\(attempt)"])
            }
            if attempt == policy.retries || Task.isCancelled { break }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, policy.maxBackoff)
        }
        return false
    }
}
