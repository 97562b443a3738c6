import Foundation
import HTTPTypes
import Testing
import TollgateCore
@testable import TollgatePlugins
import Yams

@Suite struct PlansPluginTests {
    func plansPlugin(_ yaml: String, plans: String) throws -> PlansPlugin {
        let document = "services: {a: {targets: [{url: \"http://127.0.0.1:1\"}]}}\nroutes: [{match: {paths: [\"/\"]}, service: a}]\nplans:\n"
            + plans.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n")
        let diagnostics = ConfigDiagnostics(state: PluginStateRegistry())
        diagnostics.plans = try ConfigLoader.load(yaml: document, environment: [:], registry: BuiltinPlugins.registry).config.plans
        let configuration = PlansPlugin.Configuration(from: ConfigNode(node: try Yams.compose(yaml: yaml), diagnostics: diagnostics))
        #expect(diagnostics.errors.isEmpty, "\(diagnostics.errors)")
        return PlansPlugin(configuration: configuration)
    }

    func status(_ plugin: PlansPlugin, _ consumer: Consumer?) -> (Int, LocalResponse?, [HTTPField]) {
        var request = HTTPRequest(method: .get, scheme: nil, authority: "api", path: "/")
        var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
        context.consumer = consumer
        switch plugin.onRequest(&request, context: &context) {
        case .respond(let response): return (response.status.code, response, [])
        default: return (200, nil, plugin.responseFieldsToAdd(context: &context))
        }
    }

    @Test func quotaPerConsumerAndPlan() throws {
        let plugin = try plansPlugin("{}", plans: """
            small: {quota: "3/day"}
            big: {quota: "100/day"}
            """)
        let alice = Consumer(name: "alice", plan: "small")
        let bob = Consumer(name: "bob", plan: "big")
        var statuses: [Int] = []
        var last: LocalResponse?
        for _ in 0..<4 {
            let (code, response, _) = status(plugin, alice)
            statuses.append(code)
            last = response ?? last
        }
        #expect(statuses == [200, 200, 200, 429])
        let body = try #require(last?.body)
        #expect(body.contains(#""error":"quota exceeded""#) && body.contains(#""quota":"3/day""#) && body.contains(#""reset":""#))
        #expect(Int(last?.headerFields[.retryAfter] ?? "") ?? 0 >= 1)
        let (bobStatus, _, fields) = status(plugin, bob)
        #expect(bobStatus == 200)
        #expect(fields.first { $0.name.rawName == "X-Quota-Remaining" }?.value == "99")
        #expect(plugin.usage(consumer: alice)?.used == 3)
        // No consumer, no default plan: not counted.
        #expect(status(plugin, nil).0 == 200)
    }

    @Test func planRateLimitsAndDefaultPlan() throws {
        let plugin = try plansPlugin("{default_plan: anonymous}", plans: """
            anonymous: {limits: ["2/min"]}
            """)
        let codes: [Int] = (0..<3).map { _ in status(plugin, nil).0 }
        #expect(codes == [200, 200, 429])
    }

    /// Usage survives a restart: the snapshot is written, and a new store reads it back.
    @Test func snapshotPersistsUsage() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("quota-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let meter = QuotaMeter(quota: PlanConfig.Quota(parsing: "5/day")!)
        let now = Int64(Date().timeIntervalSince1970)
        let store = LocalQuotaStore(snapshotPath: path)
        for _ in 0..<3 { _ = store.decide(key: "c:alice", meter: meter, now: now) }
        try store.writeSnapshot()
        let restarted = LocalQuotaStore(snapshotPath: path)
        #expect(restarted.usage(key: "c:alice", meter: meter, now: now).used == 3)
        #expect(restarted.decide(key: "c:alice", meter: meter, now: now).remaining == 1)
    }
}
