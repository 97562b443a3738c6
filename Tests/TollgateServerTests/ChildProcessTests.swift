import Glibc
import Testing
import TollgateTesting

/// The tests' own process spawner (Foundation's `Process` crashes now and then on Swift 6.3.1 for Linux).
@Suite struct ChildProcessTests {
    @Test func statusOutputAndInput() async throws {
        let result = try await ChildProcess.run("/bin/sh", ["-c", "cat; echo out; echo err >&2; exit 3"], input: Array("in\n".utf8))
        #expect(result.status == 3)
        #expect(result.output == "in\nout\nerr\n")
        let apart = try await ChildProcess.run("/bin/sh", ["-c", "echo out; echo err >&2"], mergeErrors: false)
        #expect(apart.status == 0 && apart.output == "out\n" && apart.errors == "err\n")
    }

    /// A descriptor the test process holds without close-on-exec (a pipe here) does not reach the child.
    @Test func onlyTheStandardDescriptorsAreInherited() async throws {
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let listing = try await ChildProcess.run("/bin/sh", ["-c", "ls /proc/$$/fd"])
        #expect(listing.status == 0)
        let open = Set(listing.output.split(separator: "\n").compactMap { Int32($0) })
        #expect(!open.contains(fds[0]) && !open.contains(fds[1]), "\(open) holds \(fds)")
        #expect(open.isSuperset(of: [0, 1, 2]))
    }

    @Test func signalledChildReportsTheSignal() async throws {
        let child = try ChildProcess("/bin/sleep", ["30"])
        #expect(child.isRunning && child.terminationStatus == nil)
        child.terminate()
        #expect(await child.exit() == 128 + SIGTERM)
        #expect(!child.isRunning)
        #expect(throws: ChildProcess.Failure.self) { try ChildProcess("/nonexistent/tool", []) }
    }
}
