import Foundation
import Testing
import TollgateCore
@testable import TollgatePlugins

@Suite struct UsageMeteringTests {
    /// Counts go to one file per day, appended at each flush; export sums them over a range, per
    /// bucket or regrouped per day, as CSV or JSON.
    @Test func countsFlushAndExport() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("usage-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ledger = UsageLedger(directory: directory, bucketSeconds: 3_600)
        let noon = CivilDate.days(year: 2026, month: 11, day: 27) * 86_400 + 12 * 3_600
        for _ in 0..<3 { ledger.count(consumer: "alice", route: "orders", status: 200, at: noon + 10) }
        ledger.count(consumer: "alice", route: "orders", status: 503, at: noon + 20)
        ledger.flush()
        ledger.count(consumer: "alice", route: "orders", status: 201, at: noon + 3_000)   // same bucket, second flush
        ledger.count(consumer: nil, route: "orders", status: 404, at: noon + 3_700)       // next hour
        ledger.count(consumer: "bob", route: "a,b", status: 200, at: noon + 86_400)       // next day
        ledger.flush()
        let rows = try UsageLedger.export(directory: directory, from: UsageLedger.parseTime("2026-11-27")!,
                                          to: UsageLedger.parseTime("2026-11-28")!)
        #expect(UsageLedger.csv(rows) == """
            bucket,consumer,route,status_class,requests
            2026-11-27T12:00:00Z,alice,orders,2xx,4
            2026-11-27T12:00:00Z,alice,orders,5xx,1
            2026-11-27T13:00:00Z,-,orders,4xx,1

            """)
        let daily = try UsageLedger.export(directory: directory, from: UsageLedger.parseTime("2026-11-01")!,
                                           to: UsageLedger.parseTime("2026-12-01")!, groupSeconds: 86_400)
        #expect(daily.count == 4)
        #expect(UsageLedger.csv(daily).contains(#"2026-11-28T00:00:00Z,bob,"a,b",2xx,1"#))
        #expect(UsageLedger.json(Array(daily.prefix(1))) == #"[{"bucket":"2026-11-27T00:00:00Z","consumer":"-","route":"orders","status_class":"4xx","requests":1}]"# + "\n")
    }
}
