import TollgateCore

/// How access-log lines look: JSON objects with selectable fields, or the combined log format of
/// Apache and nginx. Formatting writes bytes directly (no Foundation date formatter, no encoder).
public struct AccessLogFormat: Sendable {
    public enum Style: String, Sendable { case json, combined }

    /// The JSON fields, in output order.
    public enum Field: String, Sendable, CaseIterable {
        case timestamp, requestID = "request_id", traceID = "trace_id", clientIP = "client_ip", method, host, path, query,
             `protocol`, status, bytesIn = "bytes_in", bytesOut = "bytes_out", latencyMs = "latency_ms",
             upstreamLatencyMs = "upstream_latency_ms", gatewayOverheadMs = "gateway_overhead_ms", route, service,
             upstream, consumer, rateLimit = "rate_limit", cache, userAgent = "user_agent", error,
             pluginTimings = "plugin_timings_ms"

        /// Every field but the per-plugin timings (opt in: they lengthen each line).
        public static let defaults = allCases.filter { $0 != .pluginTimings }
    }

    public var style: Style
    public var fields: [Field]
    /// Query parameters whose values are replaced by `REDACTED` (case-insensitive names).
    public var redactedParameters: Set<String>

    public init(style: Style = .json, fields: [Field] = Field.defaults, redactedParameters: Set<String> = []) {
        self.style = style
        self.fields = fields
        self.redactedParameters = Set(redactedParameters.map { $0.lowercased() })
    }

    public var includesPluginTimings: Bool { style == .json && fields.contains(.pluginTimings) }

    /// One line, with its newline.
    public func line(_ record: AccessRecord, into out: inout [UInt8]) {
        switch style {
        case .json: json(record, into: &out)
        case .combined: combined(record, into: &out)
        }
        out.append(0x0A)
    }

    public func line(_ record: AccessRecord) -> String {
        var out: [UInt8] = []
        line(record, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    private func json(_ r: AccessRecord, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        var first = true
        func key(_ field: Field) {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: field.rawValue.utf8)
            out.append(contentsOf: "\":".utf8)
        }
        func string(_ field: Field, _ value: String?) {
            key(field)
            if let value { Bytes.quote(value, into: &out) } else { out.append(contentsOf: "null".utf8) }
        }
        for field in fields {
            switch field {
            case .timestamp:
                key(field)
                out.append(UInt8(ascii: "\""))
                Bytes.rfc3339(millis: r.timestampMillis, into: &out)
                out.append(UInt8(ascii: "\""))
            case .requestID: string(field, r.requestID)
            case .traceID: string(field, r.traceID)
            case .clientIP: string(field, r.clientIP)
            case .method: string(field, r.method)
            case .host: string(field, r.host)
            case .path: key(field); Bytes.quote(r.path, into: &out)
            case .query:
                key(field)
                if let query = r.query { Bytes.quote(redacted(query), into: &out) } else { out.append(contentsOf: "null".utf8) }
            case .protocol: string(field, r.httpVersion)
            case .status: key(field); Bytes.integer(r.status, into: &out)
            case .bytesIn: key(field); Bytes.integer(r.bytesIn, into: &out)
            case .bytesOut: key(field); Bytes.integer(r.bytesOut, into: &out)
            case .latencyMs: key(field); Bytes.millis(r.latencyNanos, into: &out)
            case .upstreamLatencyMs:
                key(field)
                if let nanos = r.upstreamNanos { Bytes.millis(nanos, into: &out) } else { out.append(contentsOf: "null".utf8) }
            case .gatewayOverheadMs:
                key(field)
                Bytes.millis(r.latencyNanos &- min(r.latencyNanos, r.upstreamNanos ?? 0), into: &out)
            case .route: string(field, r.route)
            case .service: string(field, r.service)
            case .upstream: string(field, r.upstream)
            case .consumer: string(field, r.consumer)
            case .rateLimit: string(field, r.rateLimit)
            case .cache: string(field, r.cache)
            case .userAgent: string(field, r.userAgent)
            case .error: string(field, r.error)
            case .pluginTimings:
                key(field)
                guard let timings = r.pluginTimings else { out.append(contentsOf: "null".utf8); continue }
                out.append(UInt8(ascii: "{"))
                for (index, timing) in timings.enumerated() {
                    if index > 0 { out.append(UInt8(ascii: ",")) }
                    Bytes.quote(timing.name, into: &out)
                    out.append(UInt8(ascii: ":"))
                    Bytes.millis(timing.nanos, into: &out)
                }
                out.append(UInt8(ascii: "}"))
            }
        }
        out.append(UInt8(ascii: "}"))
    }

    /// `127.0.0.1 - alice [27/Nov/2026:14:05:07 +0000] "GET /a?b=c HTTP/1.1" 200 512 "-" "curl/8.0"`
    /// (the referer is not kept: `-`).
    private func combined(_ r: AccessRecord, into out: inout [UInt8]) {
        out.append(contentsOf: r.clientIP.utf8)
        out.append(contentsOf: " - ".utf8)
        out.append(contentsOf: (r.consumer ?? "-").utf8.map { $0 == 0x20 ? UInt8(ascii: "_") : $0 })
        out.append(contentsOf: " [".utf8)
        Bytes.commonLogTime(millis: r.timestampMillis, into: &out)
        out.append(contentsOf: "] \"".utf8)
        Bytes.escaped(r.method, into: &out)
        out.append(0x20)
        Bytes.escaped(r.query.map { r.path + "?" + redacted($0) } ?? r.target, into: &out)
        out.append(0x20)
        out.append(contentsOf: r.httpVersion.utf8)
        out.append(contentsOf: "\" ".utf8)
        Bytes.integer(r.status, into: &out)
        out.append(0x20)
        Bytes.integer(r.bytesOut, into: &out)
        out.append(contentsOf: " \"-\" \"".utf8)
        Bytes.escaped(r.userAgent ?? "-", into: &out)
        out.append(UInt8(ascii: "\""))
    }

    /// The query with the values of redacted parameters replaced.
    func redacted(_ query: Substring) -> String {
        guard !redactedParameters.isEmpty else { return String(query) }
        var parts: [Substring] = []
        var changed = false
        for pair in query.split(separator: "&", omittingEmptySubsequences: false) {
            let name = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0]
            let decoded = name.removingPercentEncodingLossy.lowercased()
            if redactedParameters.contains(decoded) {
                parts.append(name + "=REDACTED")
                changed = true
            } else {
                parts.append(pair)
            }
        }
        return changed ? parts.joined(separator: "&") : String(query)
    }
}

extension Substring {
    /// Percent-decoded, keeping malformed escapes as they are (for comparing parameter names).
    var removingPercentEncodingLossy: String {
        guard contains("%") || contains("+") else { return String(self) }
        var bytes: [UInt8] = []
        var iterator = utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "+") { bytes.append(0x20); continue }
            guard byte == UInt8(ascii: "%") else { bytes.append(byte); continue }
            guard let high = iterator.next() else { bytes.append(byte); break }
            guard let low = iterator.next() else { bytes.append(byte); bytes.append(high); break }
            if let h = Bytes.hexValue(high), let l = Bytes.hexValue(low) { bytes.append(h << 4 | l) } else { bytes += [byte, high, low] }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Byte-level formatting helpers for logs and metrics.
public enum Bytes {
    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// A JSON string literal.
    public static func quote<S: StringProtocol>(_ text: S, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: "\\\"".utf8)
            case UInt8(ascii: "\\"): out.append(contentsOf: "\\\\".utf8)
            case 0x0A: out.append(contentsOf: "\\n".utf8)
            case 0x0D: out.append(contentsOf: "\\r".utf8)
            case 0x09: out.append(contentsOf: "\\t".utf8)
            case 0..<0x20, 0x7F:
                out.append(contentsOf: "\\u00".utf8)
                out.append(hexDigit(byte >> 4))
                out.append(hexDigit(byte & 0xF))
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Text inside a quoted combined-log field: `"` and control bytes as `\xHH` (as nginx escapes).
    static func escaped(_ text: String, into out: inout [UInt8]) {
        for byte in text.utf8 {
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte < 0x20 || byte >= 0x7F {
                out.append(contentsOf: "\\x".utf8)
                out.append(hexDigit(byte >> 4))
                out.append(hexDigit(byte & 0xF))
            } else {
                out.append(byte)
            }
        }
    }

    static func hexDigit(_ value: UInt8) -> UInt8 { value < 10 ? 0x30 + value : 0x61 + value - 10 }

    public static func integer<T: BinaryInteger>(_ value: T, into out: inout [UInt8]) {
        if value < 0 {
            out.append(UInt8(ascii: "-"))
            integer(UInt64(-Int64(value)), into: &out)
            return
        }
        var v = UInt64(value)
        if v < 10 { out.append(0x30 + UInt8(v)); return }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        withUnsafeMutableBytes(of: &digits) { buffer in
            while v > 0 {
                buffer[19 - count] = 0x30 + UInt8(v % 10)
                v /= 10
                count += 1
            }
            out.append(contentsOf: buffer[(20 - count)...])
        }
    }

    /// Nanoseconds as milliseconds with three decimals: `12.345`.
    public static func millis(_ nanos: UInt64, into out: inout [UInt8]) {
        let micros = nanos / 1_000
        integer(micros / 1_000, into: &out)
        out.append(UInt8(ascii: "."))
        let fraction = micros % 1_000
        out.append(0x30 + UInt8(fraction / 100))
        out.append(0x30 + UInt8(fraction / 10 % 10))
        out.append(0x30 + UInt8(fraction % 10))
    }

    static func two(_ value: Int64, into out: inout [UInt8]) {
        out.append(0x30 + UInt8(value / 10))
        out.append(0x30 + UInt8(value % 10))
    }

    /// `2026-11-27T14:05:07.123Z`.
    public static func rfc3339(millis: Int64, into out: inout [UInt8]) {
        let seconds = millis >= 0 ? millis / 1_000 : (millis - 999) / 1_000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let (year, month, day) = CivilDate.from(days: days)
        let rest = seconds - days * 86_400
        integer(year, into: &out)
        out.append(UInt8(ascii: "-")); two(month, into: &out)
        out.append(UInt8(ascii: "-")); two(day, into: &out)
        out.append(UInt8(ascii: "T")); two(rest / 3_600, into: &out)
        out.append(UInt8(ascii: ":")); two(rest % 3_600 / 60, into: &out)
        out.append(UInt8(ascii: ":")); two(rest % 60, into: &out)
        let ms = millis - seconds * 1_000
        out.append(UInt8(ascii: "."))
        out.append(0x30 + UInt8(ms / 100)); two(ms % 100, into: &out)
        out.append(UInt8(ascii: "Z"))
    }

    public static func rfc3339(millis: Int64) -> String {
        var out: [UInt8] = []
        rfc3339(millis: millis, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `27/Nov/2026:14:05:07 +0000`.
    static func commonLogTime(millis: Int64, into out: inout [UInt8]) {
        let seconds = millis >= 0 ? millis / 1_000 : (millis - 999) / 1_000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let (year, month, day) = CivilDate.from(days: days)
        let rest = seconds - days * 86_400
        two(day, into: &out)
        out.append(UInt8(ascii: "/"))
        out.append(contentsOf: months[Int(month) - 1].utf8)
        out.append(UInt8(ascii: "/"))
        integer(year, into: &out)
        out.append(UInt8(ascii: ":")); two(rest / 3_600, into: &out)
        out.append(UInt8(ascii: ":")); two(rest % 3_600 / 60, into: &out)
        out.append(UInt8(ascii: ":")); two(rest % 60, into: &out)
        out.append(contentsOf: " +0000".utf8)
    }
}
