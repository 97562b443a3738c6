import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOPosix
import Synchronization
import TollgateCore

/// `usage-metering`: counts requests per consumer, route and status class in time buckets, for
/// billing. Counting happens in the log phase (after the response; it never delays one) into sharded
/// in-memory counters; every `flush_interval` the counts are appended to one NDJSON file per day in
/// `directory`. `tollgate usage export --from --to` sums the files into CSV or JSON.
public struct UsageMeteringPlugin: GatewayPlugin {
    public static let name = "usage-metering"
    public static let phase = PluginPhase.log
    public static let priority = 5
    public static let changesRequest = false
    public static let responseHookOnlyAdds = true
    public var readsRequestFields: Bool { false }
    public var hasResponseHook: Bool { false }

    public struct Configuration: PluginConfiguration {
        public var directory = ""
        public var bucketSeconds: Int64 = 3_600
        public var flushInterval: Duration = .seconds(10)
        public var state = PluginStateRegistry.shared

        public init(from config: ConfigNode) {
            config.expectMapping(keys: ["directory", "bucket", "flush_interval"])
            state = config.diagnostics.state
            directory = config["directory"].string(required: true) ?? ""
            if let bucket = config["bucket"].duration() {
                let seconds = Int64(bucket.components.seconds)
                if seconds < 60 || seconds > 86_400 || 86_400 % seconds != 0 {
                    config["bucket"].error("expected a divisor of a day from 1m to 24h, such as 5m, 1h or 24h")
                } else {
                    bucketSeconds = seconds
                }
            }
            if let value = config["flush_interval"].duration() { flushInterval = value }
        }
    }

    let configuration: Configuration
    public let ledger: UsageLedger

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.ledger = configuration.state.value(for: "usage|\(configuration.directory)|\(configuration.bucketSeconds)") {
            UsageLedger(directory: configuration.directory, bucketSeconds: configuration.bucketSeconds)
        }
    }

    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        if let loop = context.eventLoop {
            ledger.startFlushing(on: loop, every: .nanoseconds(Int64(configuration.flushInterval.unsignedNanoseconds)))
        }
        return .proceed
    }

    public func onLog(context: RequestContext, summary: RequestSummary) {
        ledger.count(consumer: context.consumer?.id, route: context.route?.name, status: summary.status,
                     at: WallClock.milliseconds() / 1_000)
    }
}



/// Request counts by (bucket, consumer, route, status class), and the files they are kept in.
public final class UsageLedger: Sendable {
    public struct Key: Hashable, Sendable, Codable {
        public var bucket: Int64
        public var consumer: String
        public var route: String
        public var statusClass: String
    }

    public let directory: String
    public let bucketSeconds: Int64
    private final class Shard: Sendable {
        let counts = Mutex<[Key: Int]>([:])
        func withLock<Result>(_ body: (inout [Key: Int]) -> Result) -> Result { counts.withLock { body(&$0) } }
    }

    private let shards: [Shard]
    private let flushing = Mutex<Bool>(false)
    private static let logger = Logger(label: "tollgate.usage")

    public init(directory: String, bucketSeconds: Int64) {
        self.directory = directory
        self.bucketSeconds = bucketSeconds
        self.shards = (0..<8).map { _ in Shard() }
    }

    public func count(consumer: String?, route: String?, status: Int, at seconds: Int64) {
        let key = Key(bucket: seconds - seconds % bucketSeconds, consumer: consumer ?? "-", route: route ?? "-",
                      statusClass: "\(max(1, min(5, status / 100)))xx")
        shards[Int(UInt(bitPattern: key.hashValue) % 8)].withLock { $0[key, default: 0] += 1 }
    }

    /// Takes the counts gathered since the last flush.
    func drain() -> [Key: Int] {
        var all: [Key: Int] = [:]
        for shard in shards {
            let taken = shard.withLock { counts -> [Key: Int] in
                defer { counts = [:] }
                return counts
            }
            all.merge(taken, uniquingKeysWith: +)
        }
        return all
    }

    /// Appends the counts since the last flush to each day's file; on a write error they are counted
    /// again for the next flush (nothing is lost while the disk is full, only delayed).
    public func flush() {
        let counts = drain()
        guard !counts.isEmpty else { return }
        var byDay: [String: String] = [:]
        for (key, requests) in counts.sorted(by: { ($0.key.bucket, $0.key.consumer, $0.key.route) < ($1.key.bucket, $1.key.consumer, $1.key.route) }) {
            let day = String(CivilDate.rfc3339(key.bucket).prefix(10))
            byDay[day, default: ""] += #"{"bucket":"\#(CivilDate.rfc3339(key.bucket))","consumer":\#(JSONText.quote(key.consumer)),"route":\#(JSONText.quote(key.route)),"status_class":"\#(key.statusClass)","requests":\#(requests)}"# + "\n"
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for (day, lines) in byDay {
                let path = "\(directory)/usage-\(day).ndjson"
                if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
                let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
                try handle.seekToEnd()
                try handle.write(contentsOf: Data(lines.utf8))
                try handle.close()
            }
        } catch {
            Self.logger.error("usage not written; kept for the next flush", metadata: ["directory": "\(directory)", "error": "\(error)"])
            for (key, requests) in counts { shards[Int(UInt(bitPattern: key.hashValue) % 8)].withLock { $0[key, default: 0] += requests } }
        }
    }

    func startFlushing(on loop: any EventLoop, every interval: TimeAmount) {
        let first = flushing.withLock { started -> Bool in
            defer { started = true }
            return !started
        }
        guard first else { return }
        // Off the loop: file writes block.
        loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            NIOThreadPoolRunner.run { self.flush() }
        }
    }

    // MARK: export

    /// The counts of the files in `directory` for buckets in [from, to), summed (and regrouped by
    /// `groupSeconds` when given: daily totals from hourly buckets).
    public static func export(directory: String, from: Int64, to: Int64, groupSeconds: Int64? = nil) throws -> [(Key, Int)] {
        var totals: [Key: Int] = [:]
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix("usage-") && $0.hasSuffix(".ndjson") }
        for file in files {
            let day = file.dropFirst(6).prefix(10)
            let parts = day.split(separator: "-").compactMap { Int64($0) }
            guard parts.count == 3 else { continue }
            let dayStart = CivilDate.days(year: parts[0], month: parts[1], day: parts[2]) * 86_400
            guard dayStart + 86_400 > from, dayStart < to else { continue }
            let text = try String(contentsOfFile: "\(directory)/\(file)", encoding: .utf8)
            for line in text.split(separator: "\n") {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let bucketText = object["bucket"] as? String, let bucket = parseTime(bucketText),
                      let consumer = object["consumer"] as? String, let route = object["route"] as? String,
                      let status = object["status_class"] as? String, let requests = object["requests"] as? Int,
                      bucket >= from, bucket < to else { continue }
                let grouped = groupSeconds.map { bucket - bucket % $0 } ?? bucket
                totals[Key(bucket: grouped, consumer: consumer, route: route, statusClass: status), default: 0] += requests
            }
        }
        return totals.sorted { ($0.key.bucket, $0.key.consumer, $0.key.route, $0.key.statusClass) < ($1.key.bucket, $1.key.consumer, $1.key.route, $1.key.statusClass) }
            .map { ($0.key, $0.value) }
    }

    /// `2026-11-27` or `2026-11-27T12:00:00Z` as seconds since 1970 (UTC).
    public static func parseTime(_ text: String) -> Int64? {
        HTTPDate.parseISO8601(text)
    }

    public static func csv(_ rows: [(Key, Int)]) -> String {
        var out = "bucket,consumer,route,status_class,requests\n"
        func field(_ text: String) -> String {
            text.contains(",") || text.contains("\"") ? "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : text
        }
        for (key, requests) in rows {
            out += "\(CivilDate.rfc3339(key.bucket)),\(field(key.consumer)),\(field(key.route)),\(key.statusClass),\(requests)\n"
        }
        return out
    }

    public static func json(_ rows: [(Key, Int)]) -> String {
        "[" + rows.map { key, requests in
            #"{"bucket":"\#(CivilDate.rfc3339(key.bucket))","consumer":\#(JSONText.quote(key.consumer)),"route":\#(JSONText.quote(key.route)),"status_class":"\#(key.statusClass)","requests":\#(requests)}"#
        }.joined(separator: ",\n ") + "]\n"
    }
}

/// Runs blocking work (file writes) on NIO's thread pool.
enum NIOThreadPoolRunner {
    static func run(_ work: @escaping @Sendable () -> Void) {
        NIOThreadPool.singleton.submit { state in
            if state == .active { work() }
        }
    }
}
