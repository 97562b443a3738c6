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
    public var fields: [Field] {
        didSet {
            keys = Self.keys(fields)
            isDefaultFields = fields == Field.defaults
        }
    }
    /// The default fields in their order: lines are written by a path with the keys built in.
    private var isDefaultFields = true
    /// Each field's JSON key, pre-rendered with its separator: `{"timestamp":`, `,"status":`.
    private var keys: [[UInt8]] = []
    /// Query parameters whose values are replaced by `REDACTED` (case-insensitive names).
    public var redactedParameters: Set<String>

    public init(style: Style = .json, fields: [Field] = Field.defaults, redactedParameters: Set<String> = []) {
        self.style = style
        self.fields = fields
        self.keys = Self.keys(fields)
        self.isDefaultFields = fields == Field.defaults
        self.redactedParameters = Set(redactedParameters.map { $0.lowercased() })
    }

    public var includesPluginTimings: Bool { style == .json && fields.contains(.pluginTimings) }

    private static func keys(_ fields: [Field]) -> [[UInt8]] {
        fields.enumerated().map { index, field in Array("\(index == 0 ? "{" : ",")\"\(field.rawValue)\":".utf8) }
    }

    /// The most bytes one line may take; a longer one is replaced by a short line saying so.
    static let maxLineBytes = 64 << 10

    /// Writes one line (with its newline) for a finished request at `out`. Runs on the event loop:
    /// bytes are copied straight from the request's head and the context into raw memory.
    func write(context: RequestContext, summary: RequestSummary, nowMillis: Int64, pluginNames: [String]? = nil,
               timestamps: inout TimestampCache, into out: inout LineWriter) {
        let start = out.count
        switch style {
        case .json: json(context, summary, nowMillis, pluginNames: pluginNames, timestamps: &timestamps, into: &out)
        case .combined: combined(context, summary, nowMillis, timestamps: &timestamps, into: &out)
        }
        out.byte(0x0A)
        if out.overflowed {
            out.count = start
            out.overflowed = false
            out.ascii(#"{"error":"access-log line longer than 64KB","request_id":"#)
            out.quoted(String(context.requestID.prefix(200)))
            out.ascii(#","status":"#)
            out.integer(summary.status)
            out.ascii("}\n")
        }
    }

    /// One line as bytes (tests, tools); `pluginNames` stand in for the route's chain.
    public func line(context: RequestContext, summary: RequestSummary, nowMillis: Int64, pluginNames: [String]? = nil,
                     into bytes: inout [UInt8]) {
        let memory = UnsafeMutablePointer<UInt8>.allocate(capacity: Self.maxLineBytes + 512)
        defer { memory.deallocate() }
        var out = LineWriter(base: memory, capacity: Self.maxLineBytes + 512, count: 0)
        var timestamps = TimestampCache()
        write(context: context, summary: summary, nowMillis: nowMillis, pluginNames: pluginNames, timestamps: &timestamps, into: &out)
        bytes.append(contentsOf: UnsafeBufferPointer(start: memory, count: out.count))
    }

    public func line(context: RequestContext, summary: RequestSummary, nowMillis: Int64, pluginNames: [String]? = nil) -> String {
        var out: [UInt8] = []
        line(context: context, summary: summary, nowMillis: nowMillis, pluginNames: pluginNames, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// When the request started, in wall-clock milliseconds.
    static func startMillis(_ summary: RequestSummary, nowMillis: Int64) -> Int64 {
        nowMillis - Int64((summary.endNanos &- summary.startNanos) / 1_000_000)
    }

    private func json(_ context: RequestContext, _ summary: RequestSummary, _ nowMillis: Int64, pluginNames: [String]?,
                      timestamps: inout TimestampCache, into out: inout LineWriter) {
        summary.head.withBytes { p in
            func value(_ field: Field) {
                write(field, context, summary, p, nowMillis, pluginNames, &timestamps, &out)
            }
            if isDefaultFields {
                // The usual case, written straight through: the keys are constants and each
                // `value` call folds to its one field (no loop, no key arrays, no dispatch).
                out.ascii(#"{"timestamp":"#); value(.timestamp)
                out.ascii(#","request_id":"#); value(.requestID)
                out.ascii(#","trace_id":"#); value(.traceID)
                out.ascii(#","client_ip":"#); value(.clientIP)
                out.ascii(#","method":"#); value(.method)
                out.ascii(#","host":"#); value(.host)
                out.ascii(#","path":"#); value(.path)
                out.ascii(#","query":"#); value(.query)
                out.ascii(#","protocol":"#); value(.protocol)
                out.ascii(#","status":"#); value(.status)
                out.ascii(#","bytes_in":"#); value(.bytesIn)
                out.ascii(#","bytes_out":"#); value(.bytesOut)
                out.ascii(#","latency_ms":"#); value(.latencyMs)
                out.ascii(#","upstream_latency_ms":"#); value(.upstreamLatencyMs)
                out.ascii(#","gateway_overhead_ms":"#); value(.gatewayOverheadMs)
                out.ascii(#","route":"#); value(.route)
                out.ascii(#","service":"#); value(.service)
                out.ascii(#","upstream":"#); value(.upstream)
                out.ascii(#","consumer":"#); value(.consumer)
                out.ascii(#","rate_limit":"#); value(.rateLimit)
                out.ascii(#","cache":"#); value(.cache)
                out.ascii(#","user_agent":"#); value(.userAgent)
                out.ascii(#","error":"#); value(.error)
                out.byte(UInt8(ascii: "}"))
                return
            }
            if fields.isEmpty { out.byte(UInt8(ascii: "{")) }
            for (field, key) in zip(fields, keys) {
                out.bytes(key)
                value(field)
            }
            out.byte(UInt8(ascii: "}"))
        }
    }

    /// One field's value (its key is written by the caller). Everything comes in as a parameter, so
    /// nothing is copied; inlined, a call with a constant field is just that field's code.
    @inline(__always)
    private func write(_ field: Field, _ context: RequestContext, _ summary: RequestSummary, _ p: UnsafeRawBufferPointer,
                       _ nowMillis: Int64, _ pluginNames: [String]?, _ timestamps: inout TimestampCache, _ out: inout LineWriter) {
        func slice(_ from: UInt32, _ to: UInt32) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: p[Int(from)..<Int(to)]) }
        func fieldValue(_ index: Int?) {
            if let index {
                out.quoted(slice(summary.head.fields[index].valueStart, summary.head.fields[index].valueEnd))
            } else {
                out.ascii("null")
            }
        }
        switch field {
        case .timestamp:
            out.byte(0x22)
            timestamps.rfc3339(millis: AccessLogFormat.startMillis(summary, nowMillis: nowMillis), into: &out)
            out.byte(0x22)
        case .requestID: context.id.withUTF8 { out.quoted($0) }
        case .traceID:
            if let trace = context.trace {
                out.byte(0x22)
                out.hex(trace.traceIDHigh)
                out.hex(trace.traceIDLow)
                out.byte(0x22)
            } else {
                out.ascii("null")
            }
        case .clientIP: out.quoted(context.clientIP)
        case .method: out.quoted(slice(0, summary.head.methodEnd))
        case .host: fieldValue(summary.head.hostIndex)
        case .path: out.quoted(slice(summary.head.targetStart, summary.head.queryStart))
        case .query:
            if summary.head.queryStart < summary.head.targetEnd {
                if redactedParameters.isEmpty {
                    out.quoted(slice(summary.head.queryStart + 1, summary.head.targetEnd))
                } else {
                    out.quoted(redacted(summary.query ?? ""))
                }
            } else {
                out.ascii("null")
            }
        case .protocol: out.ascii(summary.head.minorVersion == 0 ? "\"HTTP/1.0\"" : "\"HTTP/1.1\"")
        case .status: out.integer(summary.status)
        case .bytesIn: out.integer(summary.bytesReceived)
        case .bytesOut: out.integer(summary.bytesSent)
        case .latencyMs: out.millis(summary.endNanos &- summary.startNanos)
        case .upstreamLatencyMs:
            if let nanos = summary.upstreamNanos { out.millis(nanos) } else { out.ascii("null") }
        case .gatewayOverheadMs:
            let latency = summary.endNanos &- summary.startNanos
            out.millis(latency &- min(latency, summary.upstreamNanos ?? 0))
        case .route: out.quotedOrNull(summary.routeName)
        case .service: out.quotedOrNull(summary.serviceName)
        case .upstream: out.quotedOrNull(summary.upstream)
        case .consumer: out.quotedOrNull(context.consumer?.name)
        case .rateLimit: out.quotedOrNull(context.rateLimitOutcome)
        case .cache: out.quotedOrNull(context.cacheStatus)
        case .userAgent: fieldValue(summary.head.userAgentIndex)
        case .error: out.quotedOrNull(summary.errorReason)
        case .pluginTimings:
            guard let timings = context.pluginTimings, let names = pluginNames ?? context.route?.chain.names else {
                out.ascii("null")
                return
            }
            out.byte(UInt8(ascii: "{"))
            for (index, (name, nanos)) in zip(names, timings).enumerated() {
                if index > 0 { out.byte(UInt8(ascii: ",")) }
                out.quoted(name)
                out.byte(UInt8(ascii: ":"))
                out.millis(nanos)
            }
            out.byte(UInt8(ascii: "}"))
        }
    }

    /// `127.0.0.1 - alice [27/Nov/2026:14:05:07 +0000] "GET /a?b=c HTTP/1.1" 200 512 "-" "curl/8.0"`
    /// (the referer is not kept: `-`).
    private func combined(_ context: RequestContext, _ summary: RequestSummary, _ nowMillis: Int64,
                          timestamps: inout TimestampCache, into out: inout LineWriter) {
        let head = summary.head
        out.text(context.clientIP)
        out.ascii(" - ")
        if let name = context.consumer?.name {
            out.text(String(name.map { $0 == " " ? "_" : $0 }))
        } else {
            out.byte(UInt8(ascii: "-"))
        }
        out.ascii(" [")
        timestamps.common(millis: Self.startMillis(summary, nowMillis: nowMillis), into: &out)
        out.ascii("] \"")
        out.escaped(summary.method)
        out.byte(0x20)
        out.escaped(summary.query.map { summary.path + "?" + redacted($0) } ?? summary.target)
        out.byte(0x20)
        out.ascii(head.minorVersion == 0 ? "HTTP/1.0" : "HTTP/1.1")
        out.ascii("\" ")
        out.integer(summary.status)
        out.byte(0x20)
        out.integer(summary.bytesSent)
        out.ascii(" \"-\" \"")
        out.escaped(head.userAgent ?? "-")
        out.byte(0x22)
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
