import Foundation
import HTTPTypes
import TollgateCore

/// `authorize`: attribute rules (ABAC). Rules are tried in order; the first whose condition holds
/// decides (`allow` or `deny`); when none holds, the request is denied. Conditions combine with
/// `all`, `any` and `not`, over the consumer (name, id, groups, tags, attributes), the token's claims
/// (`amr` to require MFA), scopes, the client address, the method, path parameters, headers, query
/// parameters, and the time of day. Everything is checked when the config loads.
///
/// ```yaml
/// - name: authorize
///   config:
///     rules:
///       - {name: no-writes-without-mfa, deny: {all: [{method: {in: [POST, PUT, PATCH, DELETE]}}, {not: {claim.amr: {contains: mfa}}}]}}
///       - {name: office-hours-eng, allow: {all: [{consumer.attributes.department: eng}, {time: {between: ["08:00", "18:00"]}}]}}
///       - {name: admins, allow: {consumer.groups: {contains: admin}}}
/// ```
public struct AuthorizePlugin: GatewayPlugin {
    public static let name = "authorize"
    public static let phase = PluginPhase.access
    public static let priority = 945
    public static let changesRequest = false
    public static let responseHookOnlyAdds = true
    public var hasLogHook: Bool { false }
    public var hasResponseHook: Bool { false }

    public struct Rule: Sendable {
        public var name: String
        public var allow: Bool
        public var condition: Condition
    }

    public struct Configuration: PluginConfiguration {
        public var rules: [Rule] = []

        public init(from config: ConfigNode) {
            config.expectMapping(keys: ["rules"])
            for (index, node) in (config["rules"].elements(required: true) ?? []).enumerated() {
                guard node.expectMapping(keys: ["name", "allow", "deny"], required: true) else { continue }
                let name = node["name"].string() ?? "rule \(index)"
                let allowNode = node["allow"]
                let denyNode = node["deny"]
                guard allowNode.isPresent != denyNode.isPresent else {
                    node.error("give allow or deny (one condition)")
                    continue
                }
                let conditionNode = allowNode.isPresent ? allowNode : denyNode
                if let condition = Condition.parse(conditionNode) {
                    rules.append(Rule(name: name, allow: allowNode.isPresent, condition: condition))
                }
            }
            if config["rules"].isPresent && rules.isEmpty && config.diagnostics.errors.isEmpty {
                config["rules"].error("list at least one rule")
            }
        }
    }

    let configuration: Configuration
    let readsHeaders: Bool

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.readsHeaders = configuration.rules.contains { $0.condition.readsHeaders }
    }

    public var readsRequestFields: Bool { readsHeaders }
    public var requestFieldNames: [HTTPField.Name]? { configuration.rules.flatMap { $0.condition.headerNames } }

    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        let facts = Facts(request: request, context: context, now: Date())
        for rule in configuration.rules where rule.condition.holds(facts) {
            if rule.allow { return .proceed }
            return .respond(deny(context: &context, rule: rule.name))
        }
        return .respond(deny(context: &context, rule: nil))
    }

    private func deny(context: inout RequestContext, rule: String?) -> LocalResponse {
        context[AuthFailureKey.self] = AuthFailure(plugin: Self.name, reason: rule.map { "denied by rule \($0)" } ?? "no rule allows",
                                                   credential: context.credential)
        if context.consumer == nil && context.credential == nil {
            context.authFailure = "missing_credentials"
            var response = LocalResponse.error(.unauthorized, "no credentials", requestID: context.requestID)
            response.headerFields[.wwwAuthenticate] = #"Bearer realm="tollgate""#
            return response
        }
        context.authFailure = "forbidden"
        return LocalResponse.error(.forbidden, "not authorized", requestID: context.requestID)
    }

    /// What conditions read, gathered lazily from one request.
    struct Facts {
        let request: HTTPRequest
        let context: RequestContext
        let now: Date

        func values(_ selector: Selector) -> [String]? {
            switch selector {
            case .consumerName: return context.consumer.map { [$0.name] }
            case .consumerID: return context.consumer.map { [$0.id] }
            case .groups: return context.consumer?.groups
            case .tags: return context.consumer?.tags
            case .attribute(let name): return context.consumer?.attributes[name].map { [$0] }
            case .claim(let name):
                guard let text = context[TokenClaimsKey.self]?[name] else { return nil }
                return text.split(separator: " ").map(String.init)   // lists (amr, scope) are space-joined
            case .scopes: return context.scopes
            case .clientIP: return [context.clientIP]
            case .method: return [request.method.rawValue]
            case .pathParameter(let name): return context.pathParameter(name).map { [$0] }
            case .header(let name): let all = request.headerFields[values: name]; return all.isEmpty ? nil : all
            case .query(let name): return AuthText.query(name, in: request.path).map { [$0] }
            case .authenticated: return [context.consumer != nil && !context.isAnonymous ? "true" : "false"]
            case .anonymous: return [context.isAnonymous ? "true" : "false"]
            case .time, .weekday: return nil   // read through `clock`
            }
        }

        /// Minutes since midnight and the weekday (0 = Sunday) at `offset` minutes from UTC.
        func clock(offset: Int) -> (minute: Int, weekday: Int) {
            let seconds = Int(now.timeIntervalSince1970) + offset * 60
            let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
            let minute = (seconds - days * 86_400) / 60
            let weekday = ((days % 7) + 7 + 4) % 7   // 1970-01-01 was a Thursday
            return (minute, weekday)
        }
    }

    public enum Selector: Sendable, Equatable {
        case consumerName, consumerID, groups, tags, attribute(String), claim(String), scopes, clientIP, method
        case pathParameter(String), header(HTTPField.Name), query(String), time, weekday, authenticated, anonymous

        static let help = "consumer.name, consumer.id, consumer.groups, consumer.tags, consumer.attributes.NAME, claim.NAME, "
            + "scopes, client_ip, method, path.NAME, header.NAME, query.NAME, time, weekday, authenticated, anonymous"

        init?(_ text: String) {
            switch text {
            case "consumer.name": self = .consumerName
            case "consumer.id": self = .consumerID
            case "consumer.groups": self = .groups
            case "consumer.tags": self = .tags
            case "scopes": self = .scopes
            case "client_ip": self = .clientIP
            case "method": self = .method
            case "time": self = .time
            case "weekday": self = .weekday
            case "authenticated": self = .authenticated
            case "anonymous": self = .anonymous
            default:
                func suffix(_ prefix: String) -> String? {
                    text.hasPrefix(prefix) && text.count > prefix.count ? String(text.dropFirst(prefix.count)) : nil
                }
                if let name = suffix("consumer.attributes.") { self = .attribute(name) }
                else if let name = suffix("claim.") { self = .claim(name) }
                else if let name = suffix("path.") { self = .pathParameter(name) }
                else if let name = suffix("header."), let field = HTTPField.Name(name) { self = .header(field) }
                else if let name = suffix("query.") { self = .query(name) }
                else { return nil }
            }
        }
    }

    /// One test of the values a selector gives.
    public enum Test: @unchecked Sendable {   // Regex is immutable after load
        case equals(String)
        case oneOf(Set<String>)
        case contains(String)
        case matches(Regex<AnyRegexOutput>)
        case present(Bool)
        case inCIDR([CIDR])
        case between(from: Int, to: Int, offset: Int)   // minutes of the day
        case weekdays(Set<Int>)
    }

    public indirect enum Condition: Sendable {
        case all([Condition])
        case any([Condition])
        case not(Condition)
        case test(Selector, Test)

        var headerNames: [HTTPField.Name] {
            switch self {
            case .all(let list), .any(let list): return list.flatMap(\.headerNames)
            case .not(let inner): return inner.headerNames
            case .test(let selector, _):
                if case .header(let name) = selector { return [name] }
                return []
            }
        }

        var readsHeaders: Bool {
            switch self {
            case .all(let list), .any(let list): return list.contains { $0.readsHeaders }
            case .not(let inner): return inner.readsHeaders
            case .test(let selector, _):
                if case .header = selector { return true }
                return false
            }
        }

        func holds(_ facts: Facts) -> Bool {
            switch self {
            case .all(let list): return list.allSatisfy { $0.holds(facts) }
            case .any(let list): return list.contains { $0.holds(facts) }
            case .not(let inner): return !inner.holds(facts)
            case .test(let selector, let test):
                switch test {
                case .between(let from, let to, let offset):
                    let minute = facts.clock(offset: offset).minute
                    return from <= to ? (minute >= from && minute < to) : (minute >= from || minute < to)
                case .weekdays(let days):
                    return days.contains(facts.clock(offset: 0).weekday)
                default:
                    break
                }
                let values = facts.values(selector)
                switch test {
                case .present(let wanted): return (values != nil) == wanted
                // A list attribute (groups, a claim like amr) equals a value when it holds it.
                case .equals(let expected), .contains(let expected): return values?.contains(expected) ?? false
                case .oneOf(let set): return values?.contains { set.contains($0) } ?? false
                case .matches(let regex): return values?.contains { (try? regex.wholeMatch(in: $0)) != nil } ?? false
                case .inCIDR(let ranges): return values?.contains { value in ranges.contains { $0.contains(value) } } ?? false
                case .between, .weekdays: return false
                }
            }
        }

        /// `{all: [...]}`, `{any: [...]}`, `{not: {...}}`, or `{SELECTOR: VALUE}` / `{SELECTOR: {OPERATOR: VALUE}}`.
        static func parse(_ node: ConfigNode) -> Condition? {
            guard let entries = node.entries(required: true) else { return nil }
            guard entries.count == 1, let (key, value) = entries.first else {
                node.error("a condition has one key: all, any, not, or an attribute such as method or consumer.groups")
                return nil
            }
            switch key {
            case "all", "any":
                let parts = (value.elements(required: true) ?? []).compactMap(parse)
                guard !parts.isEmpty else { value.error("list at least one condition"); return nil }
                return key == "all" ? .all(parts) : .any(parts)
            case "not":
                return parse(value).map { .not($0) }
            default:
                guard let selector = Selector(key) else {
                    value.error("unknown attribute '\(key)'; expected one of: \(Selector.help)")
                    return nil
                }
                return parseTest(selector, value).map { .test(selector, $0) }
            }
        }

        static func parseTest(_ selector: Selector, _ node: ConfigNode) -> Test? {
            if case .mapping = node.node {} else {
                if selector == .time || selector == .weekday {
                    node.error(selector == .time ? "expected {between: [\"08:00\", \"18:00\"], utc_offset: \"+01:00\"}" : "expected {in: [mon, tue, ...]}")
                    return nil
                }
                return node.string(required: true).map { .equals($0) }
            }
            if selector == .time {
                node.expectMapping(keys: ["between", "utc_offset"])
                guard let bounds = node["between"].strings(required: true), bounds.count == 2,
                      let from = minutes(bounds[0]), let to = minutes(bounds[1]) else {
                    node["between"].error("expected two times of day such as [\"08:00\", \"18:00\"]")
                    return nil
                }
                var offset = 0
                if let text = node["utc_offset"].string() {
                    guard let parsed = utcOffset(text) else { node["utc_offset"].error("expected an offset such as +01:00 or -05:30"); return nil }
                    offset = parsed
                }
                return .between(from: from, to: to, offset: offset)
            }
            if selector == .weekday {
                node.expectMapping(keys: ["in"])
                let names = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
                var days: Set<Int> = []
                for day in node["in"].strings(required: true) ?? [] {
                    guard let index = names.firstIndex(of: String(day.lowercased().prefix(3))) else {
                        node["in"].error("unknown weekday '\(day)'")
                        return nil
                    }
                    days.insert(index)
                }
                return .weekdays(days)
            }
            guard let entries = node.entries(), entries.count == 1, let (op, value) = entries.first else {
                node.error("a test has one operator: equals, in, contains, matches, present or in_cidr")
                return nil
            }
            switch op {
            case "equals": return value.string(required: true).map { .equals($0) }
            case "in": return value.strings(required: true).map { .oneOf(Set($0)) }
            case "contains": return value.string(required: true).map { .contains($0) }
            case "present": return value.bool(required: true).map { .present($0) }
            case "matches":
                guard let pattern = value.string(required: true) else { return nil }
                do { return .matches(try Regex(pattern)) } catch {
                    value.error("not a valid regular expression: \(pattern)")
                    return nil
                }
            case "in_cidr":
                guard selector == .clientIP else { value.error("in_cidr applies to client_ip"); return nil }
                var ranges: [CIDR] = []
                for text in value.strings(required: true) ?? [] {
                    guard let range = CIDR(text) else { value.error("expected an address or CIDR such as 10.0.0.0/8, got '\(text)'"); return nil }
                    ranges.append(range)
                }
                return .inCIDR(ranges)
            default:
                value.error("unknown operator '\(op)'; expected equals, in, contains, matches, present or in_cidr")
                return nil
            }
        }

        static func minutes(_ text: String) -> Int? {
            let parts = text.split(separator: ":")
            guard parts.count == 2, let hours = Int(parts[0]), let minutes = Int(parts[1]),
                  (0...24).contains(hours), (0..<60).contains(minutes), hours * 60 + minutes <= 1_440 else { return nil }
            return hours * 60 + minutes
        }

        static func utcOffset(_ text: String) -> Int? {
            guard let sign = text.first, sign == "+" || sign == "-", let value = minutes(String(text.dropFirst())) else { return nil }
            return sign == "+" ? value : -value
        }
    }
}
