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

    static func runBlocking(_ script: String, input: Data) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script]
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        stdin.fileHandleForWriting.write(input)
        try stdin.fileHandleForWriting.close()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        let errors = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(status: process.terminationStatus, output: String(decoding: output + errors, as: UTF8.self))
        }
        return String(decoding: output, as: UTF8.self)
    }
}
