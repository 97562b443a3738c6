import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import Synchronization
import TollgateCore

/// Ships access-log records in batches over HTTP: Elasticsearch's `_bulk` NDJSON, Logstash's HTTP
/// input (a JSON array), or plain NDJSON. A batch goes when it is full or `flush` has passed; a failed
/// batch is retried with exponential backoff up to `maxRetries`, then dropped. While the receiver is
/// down new records wait in a bounded buffer that drops the oldest: the gateway never blocks on it and
/// memory never grows past `buffer` records.
public final class HTTPLogShipper: AccessLogSink {
    public struct Settings: Sendable, Equatable {
        public enum Format: String, Sendable { case elasticsearchBulk = "elasticsearch_bulk", logstash, ndjson }
        public var url: String
        public var format: Format = .elasticsearchBulk
        /// The index of `_bulk` action lines; `%Y.%m.%d` in it becomes the record's UTC date.
        public var index = "tollgate-%Y.%m.%d"
        public var batch = 500
        public var flush: Duration = .seconds(1)
        public var buffer = 10_000
        public var maxRetries = 5
        public var initialBackoff: Duration = .milliseconds(200)
        public var maxBackoff: Duration = .seconds(30)
        public var timeout: Duration = .seconds(10)
        public var headers: [(String, String)] = []

        public init(url: String) { self.url = url }

        public static func == (a: Settings, b: Settings) -> Bool {
            a.url == b.url && a.format == b.format && a.index == b.index && a.batch == b.batch && a.flush == b.flush
                && a.buffer == b.buffer && a.maxRetries == b.maxRetries && a.initialBackoff == b.initialBackoff
                && a.maxBackoff == b.maxBackoff && a.timeout == b.timeout
                && a.headers.map { "\($0.0):\($0.1)" } == b.headers.map { "\($0.0):\($0.1)" }
        }
    }

    public let settings: Settings
    let format: AccessLogFormat
    private struct State {
        var buffer: RecordBuffer
        var lastSend: ContinuousClock.Instant
        var failed = 0
        var sent = 0
    }
    private let state: Mutex<State>
    private let client: HTTPClient
    private let task = Mutex<Task<Void, Never>?>(nil)
    private static let logger = Logger(label: "tollgate.access-log")

    public init(settings: Settings, format: AccessLogFormat) {
        self.settings = settings
        self.format = format
        self.state = Mutex(State(buffer: RecordBuffer(capacity: settings.buffer), lastSend: .now))
        self.client = HTTPClient(eventLoopGroupProvider: .singleton)
        start()
    }

    deinit {
        task.withLock { $0?.cancel() }
        try? client.syncShutdown()
    }

    public var kind: String { "http" }
    public var dropped: Int { state.withLock { $0.buffer.dropped + $0.failed } }
    /// Records delivered (the receiver answered 2xx).
    public var sent: Int { state.withLock { $0.sent } }

    public func submit(_ record: AccessRecord) {
        state.withLock { $0.buffer.append(record) }
    }

    private func start() {
        let tick = min(settings.flush / 2, .milliseconds(50))
        task.withLock { task in
            task = Task { [weak self] in
                while !Task.isCancelled {
                    await self?.shipDue()
                    guard self != nil else { return }
                    try? await Task.sleep(for: tick)
                }
            }
        }
    }

    /// Sends every full batch, and a partial one once `flush` has passed since the last send.
    private func shipDue() async {
        while true {
            let batch = state.withLock { state -> [AccessRecord] in
                let full = state.buffer.records.count >= settings.batch
                let due = !state.buffer.records.isEmpty && ContinuousClock.now - state.lastSend >= settings.flush
                guard full || due else { return [] }
                state.lastSend = .now
                return state.buffer.take(max: settings.batch)
            }
            if batch.isEmpty { return }
            await send(batch)
        }
    }

    private func send(_ batch: [AccessRecord]) async {
        let body = self.body(batch)
        var backoff = settings.initialBackoff
        for attempt in 0...settings.maxRetries {
            if Task.isCancelled { return }
            do {
                var request = HTTPClientRequest(url: settings.url)
                request.method = .POST
                request.headers.add(name: "Content-Type", value: settings.format == .logstash ? "application/json" : "application/x-ndjson")
                for (name, value) in settings.headers { request.headers.add(name: name, value: value) }
                request.body = .bytes(ByteBuffer(bytes: body))
                let response = try await client.execute(request, timeout: .nanoseconds(Int64(settings.timeout.unsignedNanoseconds)))
                _ = try? await response.body.collect(upTo: 1 << 20)
                if (200..<300).contains(response.status.code) {
                    state.withLock { $0.sent += batch.count }
                    return
                }
                // A 4xx other than 429 will not get better by sending the same bytes again.
                if response.status.code != 429 && response.status.code < 500 { break }
                Self.logger.debug("log receiver refused a batch", metadata: ["status": "\(response.status.code)", "attempt": "\(attempt)"])
            } catch {
                Self.logger.debug("log receiver unreachable", metadata: ["error": "\(error)", "attempt": "\(attempt)"])
            }
            if attempt == settings.maxRetries { break }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, settings.maxBackoff)
        }
        state.withLock { $0.failed += batch.count }
        Self.logger.warning("access-log batch dropped after retries", metadata: ["records": "\(batch.count)", "url": "\(settings.url)"])
    }

    func body(_ batch: [AccessRecord]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(batch.count * 450)
        switch settings.format {
        case .elasticsearchBulk:
            for record in batch {
                out.append(contentsOf: #"{"index":{"_index":"#.utf8)
                Bytes.quote(index(for: record), into: &out)
                out.append(contentsOf: "}}\n".utf8)
                format.line(record, into: &out)
            }
        case .ndjson:
            for record in batch { format.line(record, into: &out) }
        case .logstash:
            out.append(UInt8(ascii: "["))
            for (position, record) in batch.enumerated() {
                if position > 0 { out.append(UInt8(ascii: ",")) }
                format.line(record, into: &out)
                out.removeLast()   // the newline
            }
            out.append(UInt8(ascii: "]"))
        }
        return out
    }

    /// The index name with `%Y`, `%m` and `%d` replaced by the record's UTC date.
    func index(for record: AccessRecord) -> String {
        guard settings.index.contains("%") else { return settings.index }
        let date = Bytes.rfc3339(millis: record.timestampMillis)
        let parts = date.split(separator: "-")
        return settings.index.replacing("%Y", with: parts[0]).replacing("%m", with: parts[1])
            .replacing("%d", with: parts[2].prefix(2))
    }
}
