#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import Synchronization
import TollgateCore

/// The application log (swift-log) as one JSON object per line on standard error:
/// `{"timestamp":"...","level":"info","logger":"tollgate.reload","message":"...", ...metadata}`.
/// Levels come from `logging:` (per module, by label prefix) and follow reloads.
public struct JSONLogHandler: LogHandler {
    /// The levels every handler reads; `update` changes them (a reload).
    public final class Levels: Sendable {
        private let config = Mutex(LoggingConfig())
        /// The command line's `--log-level`, above the file's default level.
        private let commandLine = Mutex<Logger.Level?>(nil)
        public static let shared = Levels()

        public init() {}
        public func update(_ new: LoggingConfig) { config.withLock { $0 = new } }
        public func overrideDefault(_ level: Logger.Level) { commandLine.withLock { $0 = level } }
        public func level(for label: String) -> Logger.Level {
            let forced = commandLine.withLock { $0 }
            return config.withLock { config in
                if let forced, !config.modules.keys.contains(where: { label == $0 || label.hasPrefix($0 + ".") }) { return forced }
                return config.level(for: label)
            }
        }
        public var format: LoggingConfig.Format { config.withLock { $0.format } }
    }

    public let label: String
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let levels: Levels
    private var overriddenLevel: Logger.Level?
    private let write: @Sendable ([UInt8]) -> Void

    public init(label: String, levels: Levels = .shared, write: @escaping @Sendable ([UInt8]) -> Void = JSONLogHandler.standardError) {
        self.label = label
        self.levels = levels
        self.write = write
    }

    public var logLevel: Logger.Level {
        get { overriddenLevel ?? levels.level(for: label) }
        set { overriddenLevel = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { _, new in new } }
        if let extra = event.metadata { all.merge(extra) { _, new in new } }
        var out: [UInt8] = []
        out.reserveCapacity(256)
        if levels.format == .text {
            Bytes.rfc3339(millis: WallClock.milliseconds(), into: &out)
            out.append(contentsOf: " \(event.level) \(label): \(event.message)".utf8)
            for key in all.keys.sorted() { out.append(contentsOf: " \(key)=\(all[key]!)".utf8) }
            out.append(0x0A)
            write(out)
            return
        }
        out.append(contentsOf: #"{"timestamp":""#.utf8)
        Bytes.rfc3339(millis: WallClock.milliseconds(), into: &out)
        out.append(contentsOf: #"","level":""#.utf8)
        out.append(contentsOf: event.level.rawValue.utf8)
        out.append(contentsOf: #"","logger":"#.utf8)
        Bytes.quote(label, into: &out)
        out.append(contentsOf: #","message":"#.utf8)
        Bytes.quote(event.message.description, into: &out)
        for key in all.keys.sorted() where !["timestamp", "level", "logger", "message"].contains(key) {
            out.append(UInt8(ascii: ","))
            Bytes.quote(key, into: &out)
            out.append(UInt8(ascii: ":"))
            Self.value(all[key]!, into: &out)
        }
        out.append(contentsOf: "}\n".utf8)
        write(out)
    }

    static func value(_ value: Logger.Metadata.Value, into out: inout [UInt8]) {
        switch value {
        case .string(let text): Bytes.quote(text, into: &out)
        case .stringConvertible(let convertible): Bytes.quote(convertible.description, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                Self.value(item, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .dictionary(let entries):
            out.append(UInt8(ascii: "{"))
            for (index, key) in entries.keys.sorted().enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                Bytes.quote(key, into: &out)
                out.append(UInt8(ascii: ":"))
                Self.value(entries[key]!, into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// One `write(2)` per line, so lines from several threads never interleave, made on the telemetry
    /// thread: an event loop that logs never waits for a slow terminal or pipe.
    public static let standardError: @Sendable ([UInt8]) -> Void = { bytes in
        BackgroundWorker.telemetry.submit {
            bytes.withUnsafeBytes { buffer in _ = Glibc.write(STDERR_FILENO, buffer.baseAddress, buffer.count) }
        }
    }
}
