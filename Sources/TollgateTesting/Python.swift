import Foundation

/// Runs a Python 3 script (the Prometheus parser, the OTLP protobuf decoder) with `input` on standard
/// input, on a thread of its own: waiting for a process must hold neither a cooperative-pool thread
/// nor a Dispatch worker (on Linux the pool runs on them).
public enum Python {
    public struct Failure: Error, CustomStringConvertible {
        public var status: Int32
        public var output: String
        public var description: String { "python exited \(status): \(output)" }
    }

    public static func run(_ script: String, input: Data = Data()) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            Thread {
                continuation.resume(with: Result { try runBlocking(script, input: input) })
            }.start()
        }
    }

    /// Standard input, output and error go through temporary files, not pipes: a pipe's write end
    /// can leak into a child another test spawns at the same moment, and reading to its end would
    /// then wait for that child.
    static func runBlocking(_ script: String, input: Data) throws -> String {
        let base = NSTemporaryDirectory() + "tollgate-python-\(UUID().uuidString)"
        let paths = (input: base + ".in", output: base + ".out", errors: base + ".err")
        defer { for path in [paths.input, paths.output, paths.errors] { try? FileManager.default.removeItem(atPath: path) } }
        try input.write(to: URL(fileURLWithPath: paths.input))
        for path in [paths.output, paths.errors] { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script]
        process.standardInput = FileHandle(forReadingAtPath: paths.input)
        process.standardOutput = FileHandle(forWritingAtPath: paths.output)
        process.standardError = FileHandle(forWritingAtPath: paths.errors)
        try process.run()
        process.waitUntilExit()
        let output = (try? String(contentsOfFile: paths.output, encoding: .utf8)) ?? ""
        guard process.terminationStatus == 0 else {
            let errors = (try? String(contentsOfFile: paths.errors, encoding: .utf8)) ?? ""
            throw Failure(status: process.terminationStatus, output: output + errors)
        }
        return output
    }
}
