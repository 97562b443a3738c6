import Foundation
import HTTPTypes
import Testing
import TollgateCore
@testable import TollgatePlugins

@Suite struct AuthorizeTests {
    static let rules = """
        rules:
          - name: no-writes-without-mfa
            deny:
              all:
                - {method: {in: [POST, PUT, PATCH, DELETE]}}
                - {not: {claim.amr: {contains: mfa}}}
          - name: blocked-network
            deny: {client_ip: {in_cidr: ["203.0.113.0/24"]}}
          - name: eng-own-tenant
            allow:
              all:
                - {consumer.attributes.department: eng}
                - {header.X-Tenant: {matches: "[a-z]+"}}
                - {path.id: {present: true}}
          - name: admins
            allow: {consumer.groups: {contains: admin}}
        """

    func status(_ plugin: AuthorizePlugin, method: HTTPRequest.Method = .get, consumer: Consumer?, claims: [String: String] = [:],
                ip: String = "192.0.2.1", headers: HTTPFields = [:], pathID: String? = "42") -> Int {
        var request = HTTPRequest(method: method, scheme: nil, authority: "api", path: "/items/42", headerFields: headers)
        var context = RequestContext(requestID: "r", clientIP: ip)
        context.consumer = consumer
        if consumer != nil { context.credential = "test" }
        if !claims.isEmpty { context[TokenClaimsKey.self] = claims }
        if let pathID { context.pathParameters = [("id", pathID)] }
        if case .respond(let response) = plugin.onRequest(&request, context: &context) { return response.status.code }
        return 200
    }

    @Test func rulesInOrderDefaultDeny() throws {
        let authorize = try plugin(AuthorizePlugin.self, Self.rules)
        #expect(authorize.readsRequestFields)
        let admin = Consumer(name: "root", groups: ["admin"])
        let engineer = Consumer(name: "eve", attributes: ["department": "eng"])
        let sales = Consumer(name: "sam", attributes: ["department": "sales"])
        #expect(status(authorize, consumer: admin) == 200)
        #expect(status(authorize, method: .delete, consumer: admin) == 403, "writes need MFA, even for admins")
        #expect(status(authorize, method: .delete, consumer: admin, claims: ["amr": "pwd mfa"]) == 200)
        #expect(status(authorize, consumer: admin, ip: "203.0.113.9") == 403)
        #expect(status(authorize, consumer: engineer, headers: [HTTPField.Name("X-Tenant")!: "acme"]) == 200)
        #expect(status(authorize, consumer: engineer, headers: [HTTPField.Name("X-Tenant")!: "ACME-1"]) == 403)
        #expect(status(authorize, consumer: engineer, headers: [HTTPField.Name("X-Tenant")!: "acme"], pathID: nil) == 403)
        #expect(status(authorize, consumer: sales) == 403, "no rule allows")
        #expect(status(authorize, consumer: nil) == 401)
    }

    @Test func timeOfDayAndWeekdays() throws {
        let facts = { (date: Date) in AuthorizePlugin.Facts(request: HTTPRequest(method: .get, scheme: nil, authority: "a", path: "/"),
                                                             context: RequestContext(requestID: "r", clientIP: "::1"), now: date) }
        // 2026-11-27 is a Friday; 14:30 UTC.
        let friday = Date(timeIntervalSince1970: 1_795_789_800)
        #expect(facts(friday).clock(offset: 0).minute == 14 * 60 + 30)
        #expect(facts(friday).clock(offset: 0).weekday == 5)
        let office = try plugin(AuthorizePlugin.self, """
            rules: [{allow: {all: [{time: {between: ["08:00", "18:00"], utc_offset: "+01:00"}}, {weekday: {in: [mon, tue, wed, thu, fri]}}]}}]
            """)
        #expect(office.configuration.rules[0].condition.holds(facts(friday)))
        #expect(!office.configuration.rules[0].condition.holds(facts(friday.addingTimeInterval(4 * 3_600))))   // 19:30 at +01:00
        #expect(!office.configuration.rules[0].condition.holds(facts(friday.addingTimeInterval(86_400))))   // Saturday
        let night = try plugin(AuthorizePlugin.self, #"rules: [{allow: {time: {between: ["22:00", "06:00"]}}}]"#)
        #expect(night.configuration.rules[0].condition.holds(facts(friday.addingTimeInterval(9 * 3_600))))   // 23:30
        #expect(!night.configuration.rules[0].condition.holds(facts(friday)))
    }

    @Test func rulesAreValidatedAtLoad() {
        #expect(pluginErrors(AuthorizePlugin.self, """
            rules:
              - {allow: {consumer.shoe_size: 42}}
              - {deny: {client_ip: {in_cidr: [nonsense]}}}
              - {allow: {header.X-A: {matches: "(unclosed"}}}
              - {allow: {method: GET}, deny: {method: POST}}
              - {allow: {all: []}}
              - {allow: {time: {between: ["25:00", "08:00"]}}}
              - {allow: {method: {resembles: GET}}}
            """) == [
                "rules[0].allow.consumer.shoe_size: unknown attribute 'consumer.shoe_size'; expected one of: \(AuthorizePlugin.Selector.help) (line 2)",
                "rules[1].deny.client_ip.in_cidr: expected an address or CIDR such as 10.0.0.0/8, got 'nonsense' (line 3)",
                "rules[2].allow.header.X-A.matches: not a valid regular expression: (unclosed (line 4)",
                "rules[3]: give allow or deny (one condition) (line 5)",
                "rules[4].allow.all: list at least one condition (line 6)",
                "rules[5].allow.time.between: expected two times of day such as [\"08:00\", \"18:00\"] (line 7)",
                "rules[6].allow.method.resembles: unknown operator 'resembles'; expected equals, in, contains, matches, present or in_cidr (line 8)",
            ])
    }
}
