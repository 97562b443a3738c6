import Foundation
import Glibc
import Synchronization

/// A child process started with `posix_spawn`, for the tests' servers, tools and the `tollgate` binary.
///
/// Not Foundation's `Process`: on Swift 6.3.1 for Linux its `run()` lists `/proc/self/fd` by copying
/// each directory entry's whole 256-byte name field, which reads past glibc's buffer and now and then
/// crashes a test process with many descriptors open (swift-corelibs-foundation #5472). Its exit
/// notification also needs a run loop; here the exit is polled with `waitpid(WNOHANG)`, so waiting
/// blocks no thread at all.
public final class ChildProcess: Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Where a standard stream goes: the parent's, `/dev/null`, or a file (read, written from its start,
    /// or appended to).
    public enum Stream: Sendable {
        case inherit, null
        case file(String)
        case appending(String)
    }

    public let processIdentifier: pid_t
    /// The wait status once the child has been reaped.
    private let reaped = Mutex<Int32?>(nil)

    /// Starts `executable` (an absolute path) with `arguments`. Descriptors other than the three
    /// standard ones are closed in the child; signal dispositions and mask are the defaults.
    public init(_ executable: String, _ arguments: [String], stdin: Stream = .null, stdout: Stream = .null,
                stderr: Stream = .null) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (fd, stream) in [(Int32(0), stdin), (1, stdout), (2, stderr)] {
            switch stream {
            case .inherit: break
            case .null: posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
            case .file(let path):
                posix_spawn_file_actions_addopen(&actions, fd, path, fd == 0 ? O_RDONLY : O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            case .appending(let path):
                posix_spawn_file_actions_addopen(&actions, fd, path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            }
        }
        _ = Self.addCloseFrom(&actions, 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var all = sigset_t()
        sigfillset(&all)
        sigdelset(&all, SIGKILL)
        sigdelset(&all, SIGSTOP)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard result == 0 else {
            throw Failure(description: "posix_spawn \(executable): \(String(cString: strerror(result)))")
        }
        processIdentifier = pid
    }

    /// Runs `executable` to its end with `input` on stdin. Returns its exit status, what it wrote to
    /// stdout and what it wrote to stderr; with `mergeErrors`, stderr is appended to `output` as it
    /// comes and `errors` is empty. (Through temporary files rather than pipes: nothing needs draining
    /// while the child runs, however much it writes.)
    public static func run(_ executable: String, _ arguments: [String], input: [UInt8] = [], mergeErrors: Bool = true) async throws
        -> (status: Int32, output: String, errors: String) {
        let base = "/tmp/tollgate-child-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let paths = (input: base + ".in", output: base + ".out", errors: base + ".err")
        defer { for path in [paths.input, paths.output, paths.errors] { unlink(path) } }
        try write(input, to: paths.input)
        try write([], to: paths.output)
        let child = try ChildProcess(executable, arguments, stdin: .file(paths.input), stdout: .appending(paths.output),
                                     stderr: mergeErrors ? .appending(paths.output) : .file(paths.errors))
        let status = await child.exit()
        return (status, read(paths.output), mergeErrors ? "" : read(paths.errors))
    }

    /// What `executable` printed on stdout; a `Failure` with its status, stdout and stderr when it
    /// exits non-zero.
    public static func output(_ executable: String, _ arguments: [String], input: [UInt8] = []) async throws -> String {
        let result = try await run(executable, arguments, input: input, mergeErrors: false)
        guard result.status == 0 else {
            throw Failure(description: "\(executable) \(arguments.first ?? "") exited \(result.status): \(result.output)\(result.errors)")
        }
        return result.output
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), which Swift's Glibc module
    /// does not declare (it is a GNU extension): so no descriptor of the test process, a socket or a
    /// pipe another test opened without `O_CLOEXEC`, lives on in the child.
    private static let addCloseFrom: @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32 = {
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else {
            fatalError("glibc 2.34 or later is needed (posix_spawn_file_actions_addclosefrom_np)")
        }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()

    /// True until the child has exited (and has been reaped).
    public var isRunning: Bool { poll() == nil }

    /// The exit code, or 128 + the signal that ended it; nil while it runs.
    public var terminationStatus: Int32? {
        guard let status = poll() else { return nil }
        return Self.exitCode(status)
    }

    /// Waits (polling every 5 ms, holding no thread) for the child to exit; returns `terminationStatus`.
    public func exit() async -> Int32 {
        while await !exit(within: .seconds(60)) {}
        return terminationStatus!
    }

    /// Waits at most `timeout` for the exit; false if the child still runs.
    public func exit(within timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if poll() != nil { return true }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return poll() != nil
    }

    public func signal(_ signal: Int32) {
        if poll() == nil { kill(processIdentifier, signal) }
    }

    public func terminate() { signal(SIGTERM) }

    /// The wait status once reaped, reaping it now if it has exited.
    private func poll() -> Int32? {
        reaped.withLock { reaped in
            if let reaped { return reaped }
            var status: Int32 = 0
            if waitpid(processIdentifier, &status, WNOHANG) == processIdentifier { reaped = status }
            return reaped
        }
    }

    private static func exitCode(_ status: Int32) -> Int32 {
        let signal = status & 0x7F
        return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    }

    /// Reaps a child that has exited meanwhile; one still running is left running (a test that wants
    /// it gone says so).
    deinit { _ = poll() }

    static func write(_ bytes: [UInt8], to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
            throw Failure(description: "cannot create \(path)")
        }
    }

    static func read(_ path: String) -> String {
        String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self)
    }
}
