/// Runs a Python 3 script (the Prometheus parser, the OTLP protobuf decoder) with `input` on standard
/// input, as a `ChildProcess`: waiting for it holds no thread.
public enum Python {
    public struct Failure: Error, CustomStringConvertible {
        public var status: Int32
        public var output: String
        public var description: String { "python exited \(status): \(output)" }
    }

    /// What the script printed on stdout; a `Failure` with stdout and stderr when it exits non-zero.
    public static func run(_ script: String, input: some Sequence<UInt8> = [UInt8]()) async throws -> String {
        // The python3 first on PATH: the one `scripts/test` installed the PyPI packages for.
        let result = try await ChildProcess.run("/usr/bin/env", ["python3", "-c", script], input: Array(input), mergeErrors: false)
        guard result.status == 0 else { throw Failure(status: result.status, output: result.output + result.errors) }
        return result.output
    }
}
