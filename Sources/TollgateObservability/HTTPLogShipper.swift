import AsyncHTTPClient
import DequeModule
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
public final class HTTPLogShipper: LineDestination {
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
    private struct State {
        /// Chunks delivered and not yet split into lines, and the lines waiting for a batch.
        var incoming = Deque<LineChunk>()
        var incomingLines = 0
        var lines = Deque<ArraySlice<UInt8>>()
        var lastSend: ContinuousClock.Instant
        var dropped = 0

        var waiting: Int { incomingLines + lines.count }
    }
    private let state: Mutex<State>
    private let task = Mutex<Task<Void, Never>?>(nil)
    private static let logger = Logger(label: "tollgate.access-log")

    public init(settings: Settings) {
        self.settings = settings
        self.state = Mutex(State(lastSend: .now))
        start()
    }

    // The process-wide client: nothing to shut down here. (A client of its own would need a
    // blocking shutdown wherever the last reference happens to go: on an event loop, or a pool thread
    // the shutdown's own callback then waits for.)
    deinit {
        task.withLock { $0?.cancel() }
    }

    public var kind: String { "http" }
    public var dropped: Int { state.withLock { $0.dropped } }

    /// Keeps at most `buffer` lines: the oldest waiting ones make room.
    public func deliver(_ chunk: LineChunk) {
        state.withLock { state in
            state.incoming.append(chunk)
            state.incomingLines += chunk.lines
            var excess = state.waiting - settings.buffer
            while excess > 0, !state.lines.isEmpty {
                state.lines.removeFirst()
                state.dropped += 1
                excess -= 1
            }
            while excess > 0, let oldest = state.incoming.first, oldest.lines <= excess {
                state.incoming.removeFirst()
                state.incomingLines -= oldest.lines
                state.dropped += oldest.lines
                excess -= oldest.lines
                oldest.recycle()
            }
        }
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
            let batch = state.withLock { state -> [ArraySlice<UInt8>] in
                // Split what arrived into lines (here, off the event loops).
                while let chunk = state.incoming.popFirst() {
                    state.incomingLines -= chunk.lines
                    // One copy per chunk (its lines share it), and the chunk's memory goes back.
                    let bytes = Array(chunk.bytes)
                    chunk.recycle()
                    for line in bytes.split(separator: 0x0A) { state.lines.append(line) }
                }
                while state.lines.count > settings.buffer {
                    state.lines.removeFirst()
                    state.dropped += 1
                }
                let full = state.lines.count >= settings.batch
                let due = !state.lines.isEmpty && ContinuousClock.now - state.lastSend >= settings.flush
                guard full || due else { return [] }
                state.lastSend = .now
                let count = min(settings.batch, state.lines.count)
                defer { state.lines.removeFirst(count) }
                return Array(state.lines.prefix(count))
            }
            if batch.isEmpty { return }
            await send(batch)
        }
    }

    private func send(_ batch: [ArraySlice<UInt8>]) async {
        // A 4xx other than 429 will not get better by sending the same bytes again.
        let policy = BatchPost.Policy(retries: settings.maxRetries, initialBackoff: settings.initialBackoff, maxBackoff: settings.maxBackoff,
                                      timeout: settings.timeout, retryable: { $0 == 429 || $0 >= 500 })
        let delivered = await BatchPost.send(body(batch, now: WallClock.milliseconds()), to: settings.url,
                                             contentType: settings.format == .logstash ? "application/json" : "application/x-ndjson",
                                             headers: settings.headers, policy: policy, receiver: "log receiver", logger: Self.logger)
        if delivered { return }
        state.withLock { $0.dropped += batch.count }
        Self.logger.warning("access-log batch dropped after retries", metadata: ["lines": "\(batch.count)", "url": "\(settings.url)"])
    }

    /// The request body for a batch of JSON lines. For `_bulk`, each document gets an action line
    /// naming its index, dated by the document's `timestamp` when it starts with one (the default
    /// fields), else by `now`.
    func body(_ batch: [ArraySlice<UInt8>], now: Int64) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(batch.reduce(0) { $0 + $1.count + 64 })
        switch settings.format {
        case .elasticsearchBulk:
            let fallback = Bytes.rfc3339(millis: now)
            for line in batch {
                out.append(contentsOf: #"{"index":{"_index":"#.utf8)
                Bytes.quote(index(date: Self.date(of: line) ?? Substring(fallback.prefix(10))), into: &out)
                out.append(contentsOf: "}}\n".utf8)
                out.append(contentsOf: line)
                out.append(0x0A)
            }
        case .ndjson:
            for line in batch {
                out.append(contentsOf: line)
                out.append(0x0A)
            }
        case .logstash:
            out.append(UInt8(ascii: "["))
            for (position, line) in batch.enumerated() {
                if position > 0 { out.append(UInt8(ascii: ",")) }
                out.append(contentsOf: line)
            }
            out.append(UInt8(ascii: "]"))
        }
        return out
    }

    /// `2026-11-27` from a line that starts `{"timestamp":"2026-11-27T`.
    static func date(of line: ArraySlice<UInt8>) -> Substring? {
        let prefix = Array(#"{"timestamp":""#.utf8)
        guard line.count > prefix.count + 10, line.prefix(prefix.count).elementsEqual(prefix) else { return nil }
        let start = line.startIndex + prefix.count
        return Substring(String(decoding: line[start..<start + 10], as: UTF8.self))
    }

    /// The index name with `%Y`, `%m` and `%d` replaced from a `YYYY-MM-DD` date.
    func index(date: Substring) -> String {
        guard settings.index.contains("%") else { return settings.index }
        let parts = date.split(separator: "-")
        guard parts.count == 3 else { return settings.index }
        return settings.index.replacing("%Y", with: parts[0]).replacing("%m", with: parts[1]).replacing("%d", with: parts[2])
    }
}
