import Foundation

public enum MemcachedServerError: Error {
    case didNotStart
}

/// A memcached of the tests' own on a free loopback port (TCP only), stopped afterwards. Ready means
/// it answers `version`; a port taken meanwhile by another test's server makes it try another.
public final class MemcachedServer: @unchecked Sendable {
    public private(set) var port: Int = 0
    private var process: ChildProcess?

    public init() async throws {
        for _ in 0..<10 {
            port = try await LoopbackPort.free()
            if try await launch() { return }
        }
        throw MemcachedServerError.didNotStart
    }

    private func launch() async throws -> Bool {
        // -A: the `shutdown` command stops it.
        let process = try ChildProcess("/usr/bin/memcached", ["-l", "127.0.0.1", "-p", String(port), "-U", "0", "-m", "64", "-A", "-u", "root"])
        for _ in 0..<300 {
            if !process.isRunning { return false }
            if exchange("version\r\n")?.hasPrefix("VERSION") == true {
                self.process = process
                return true
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        process.terminate()
        return false
    }

    /// One connection: `text` sent, the first reply read (within 200 ms).
    private func exchange(_ text: String) -> String? {
        guard let fd = LoopbackPort.connect(port) else { return nil }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : nil
    }

    public func stop() {
        guard let process else { return }
        self.process = nil
        _ = exchange("shutdown\r\n")
        for _ in 0..<100 where process.isRunning { usleep(10_000) }
        if process.isRunning { process.terminate() }
    }

    /// `127.0.0.1:PORT`.
    public var server: String { "127.0.0.1:\(port)" }

    deinit { stop() }
}
