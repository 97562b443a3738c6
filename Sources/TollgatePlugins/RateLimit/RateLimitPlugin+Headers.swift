import HTTPTypes
import TollgateCore

/// The fields a rate-limited route's responses carry: `RateLimit-Policy` (every limit), `RateLimit`
/// and optionally the legacy `X-RateLimit-*` (the limit closest to running out). On the proxied path
/// they are written as header lines from pieces rendered when the plugin is built.
extension RateLimitPlugin {
    struct RenderedLines {
        /// `RateLimit-Policy: ...\r\n`.
        var policyLine: [UInt8]
        /// By limit: `RateLimit: "10/s";r=`.
        var rateLimitPrefixes: [[UInt8]]
        /// By limit: `X-RateLimit-Limit: 10\r\nX-RateLimit-Remaining: `.
        var legacyPrefixes: [[UInt8]]
    }

    static let policyName = HTTPField.Name("RateLimit-Policy")!
    static let rateLimitName = HTTPField.Name("RateLimit")!
    static let legacyLimitName = HTTPField.Name("X-RateLimit-Limit")!
    static let legacyRemainingName = HTTPField.Name("X-RateLimit-Remaining")!
    static let legacyResetName = HTTPField.Name("X-RateLimit-Reset")!

    /// `RateLimit-Policy` lists every limit; `RateLimit` (and the legacy fields) speak of the one
    /// closest to running out.
    func headers(_ decisions: [RateLimitDecision]) -> [HTTPField] {
        let tightest = Self.tightest(decisions)
        guard tightest < decisions.count else { return [] }
        let decision = decisions[tightest]
        let limit = configuration.limits[tightest]
        let reset = String(Self.seconds(decision.resetNanos))
        let remaining = String(decision.remaining)
        var added: [HTTPField] = []
        added.reserveCapacity(configuration.legacyHeaders ? 5 : 2)
        if configuration.ietfHeaders {
            added.append(policyField)
            // Built by appending (string interpolation costs more on every response).
            var value = quotedLimits[tightest]
            value.reserveCapacity(value.utf8.count + remaining.utf8.count + reset.utf8.count + 6)
            value += ";r="
            value += remaining
            value += ";t="
            value += reset
            added.append(HTTPField(name: Self.rateLimitName, value: value))
        }
        if configuration.legacyHeaders {
            added.append(HTTPField(name: Self.legacyLimitName, value: String(limit.count)))
            added.append(HTTPField(name: Self.legacyRemainingName, value: remaining))
            added.append(HTTPField(name: Self.legacyResetName, value: reset))
        }
        return added
    }

    public func onResponse(_ response: inout HTTPResponse, context: inout RequestContext) {
        response.headerFields.append(contentsOf: responseFieldsToAdd(context: &context))
    }

    public func responseFieldsToAdd(context: inout RequestContext) -> [HTTPField] {
        guard let outcome = context[OutcomeKey.self], !outcome.isEmpty else { return [] }
        return headers(outcome.decisions)
    }

    /// The fields of `headers`, written from the pieces rendered at load.
    public func writeResponseFields(context: inout RequestContext, into lines: inout HeaderLines) {
        guard let outcome = context[OutcomeKey.self], !outcome.isEmpty else { return }
        guard let rendered else {
            for field in headers(outcome.decisions) { lines.add(field) }
            return
        }
        let tightest = outcome.single == nil ? Self.tightest(outcome.several) : 0
        let decision = outcome.single ?? outcome.several[tightest]
        let reset = Self.seconds(decision.resetNanos)
        let ietf = configuration.ietfHeaders
        let legacy = configuration.legacyHeaders
        var bound = 0
        if ietf { bound += rendered.policyLine.count + rendered.rateLimitPrefixes[tightest].count + 3 + 2 * 19 + 2 }
        if legacy { bound += rendered.legacyPrefixes[tightest].count + 21 + 2 * 19 + 2 }
        lines.write(reserving: bound) { out in
            if ietf {
                out.put(rendered.policyLine)
                out.put(rendered.rateLimitPrefixes[tightest])
                out.putDecimal(decision.remaining)
                out.put(";t=")
                out.putDecimal(reset)
                out.put("\r\n")
            }
            if legacy {
                out.put(rendered.legacyPrefixes[tightest])
                out.putDecimal(decision.remaining)
                out.put("\r\nX-RateLimit-Reset: ")
                out.putDecimal(reset)
                out.put("\r\n")
            }
        }
    }

    /// The limit with the fewest requests left (its fields are the ones shown).
    static func tightest(_ decisions: [RateLimitDecision]) -> Int {
        var tightest = 0
        for index in decisions.indices where decisions[index].remaining < decisions[tightest].remaining { tightest = index }
        return tightest
    }
}
