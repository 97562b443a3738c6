import Benchmark
import HTTPTypes
import TollgateCore

/// Route matching with 10, 1 000 and 10 000 routes: the cost must stay flat (a trie walk over the
/// path), the target being at most 1.5x between 10 and 10 000 routes and under 1 µs at 1 000.
let benchmarks: @Sendable () -> Void = {
    // The harness's own cost per sample, to read the others against.
    Benchmark("baseline (empty loop)", configuration: .init(metrics: [.wallClock, .mallocCountTotal], maxDuration: .seconds(1))) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(1) }
    }
    for count in [10, 1_000, 10_000] {
        let table = makeTable(routes: count)
        let path = "/svc\(count / 2)/items/42"
        Benchmark("match \(count) routes", configuration: .init(metrics: [.wallClock, .instructions, .mallocCountTotal],
                                                                 maxDuration: .seconds(2))) { benchmark in
            // Built in the closure: a request is noncopyable, so it cannot be captured.
            let request = RouteRequest(method: .get, host: "api.example.com", path: path, query: nil, headerFields: [:], version: nil)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(table.match(request))
            }
        }
    }
}

func makeTable(routes count: Int) -> RouteTable {
    var yaml = "services:\n  s: {targets: [{url: \"http://127.0.0.1:9\"}]}\nroutes:\n"
    for i in 0..<count {
        yaml += "  - {name: r\(i), match: {paths: [\"/svc\(i)/items/{id}\"], methods: [GET]}, service: s}\n"
    }
    return try! ConfigLoader.load(yaml: yaml, environment: [:], registry: PluginRegistry()).routeTable
}
