/// Runs a Python 3 script (the Prometheus parser, the OTLP protobuf decoder) with `input` on standard
/// input, as a `ChildProcess`: waiting for it holds no thread.
public enum Python {
    /// What the script printed on stdout; a `ChildProcess.Failure` when it exits non-zero. The
    /// python3 first on PATH: the one `scripts/test` installed the PyPI packages for.
    public static func run(_ script: String, input: some Sequence<UInt8> = [UInt8]()) async throws -> String {
        try await ChildProcess.output("/usr/bin/env", ["python3", "-c", script], input: Array(input))
    }
}
