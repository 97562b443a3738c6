import Foundation
import NIOCore
import NIOPosix

public enum RedisServerError: Error {
    case didNotStart
}

/// A redis-server of the tests' own on a free loopback port, stopped afterwards. Ready means it
/// answers PING: a port found free may be taken by another test's server before redis-server binds
/// it, in which case redis-server exits and another port is tried.
public final class RedisServer: @unchecked Sendable {
    public private(set) var port: Int = 0
    /// With `tls`: the port of TLS connections (`port` stays plain, for readiness and shutdown).
    public private(set) var tlsPort: Int?
    private var process: ChildProcess?
    public private(set) var extraArguments: [String]
    private let tls: (certificate: String, key: String, ca: String)?

    public init(extraArguments: [String] = [], tls: (certificate: String, key: String, ca: String)? = nil) async throws {
        self.extraArguments = extraArguments
        self.tls = tls
        for _ in 0..<10 {
            port = try await LoopbackPort.free()
            if let tls {
                let tlsPort = try await LoopbackPort.free()
                self.tlsPort = tlsPort
                self.extraArguments = extraArguments + ["--tls-port", String(tlsPort), "--tls-cert-file", tls.certificate,
                                                        "--tls-key-file", tls.key, "--tls-ca-cert-file", tls.ca, "--tls-auth-clients", "no"]
            }
            if try await launch() { return }
        }
        throw RedisServerError.didNotStart
    }

    /// Starts it again on the same port (after `stop()`).
    public func start() async throws {
        for _ in 0..<20 {
            if try await launch() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw RedisServerError.didNotStart
    }


    /// True once this redis-server answers PING; false when it exited (its port was taken).
    private func launch() async throws -> Bool {
        let process = try ChildProcess("/usr/bin/redis-server",
                                       ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"] + extraArguments)
        for _ in 0..<300 {
            if !process.isRunning { return false }
            if answersPing() {
                self.process = process
                return true
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        process.terminate()
        return false
    }

    /// Sends PING (after AUTH when a password is set) and expects Redis's answer, not another server's.
    private func answersPing() -> Bool {
        guard let reply = exchange(commands: [["PING"]], readUntilClose: false) else { return false }
        return reply.contains("+PONG")
    }

    /// One connection: the commands (AUTH first when a password is set), then the replies read
    /// (until the server closes, or a first reply within 200 ms).
    private func exchange(commands: [[String]], readUntilClose: Bool) -> String? {
        guard let fd = LoopbackPort.connect(port) else { return nil }
        defer { close(fd) }
        var all = commands
        if let index = extraArguments.firstIndex(of: "--requirepass"), index + 1 < extraArguments.count {
            all.insert(["AUTH", extraArguments[index + 1]], at: 0)
        }
        var text = ""
        for command in all {
            text += "*\(command.count)\r\n" + command.map { "$\($0.utf8.count)\r\n\($0)\r\n" }.joined()
        }
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 256)
        var waits = 0
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EAGAIN && readUntilClose && waits < 25 {
                waits += 1   // the server is still shutting down
                continue
            }
            if count <= 0 { break }
            reply += buffer[0..<count]
            if !readUntilClose && reply.filter({ $0 == UInt8(ascii: "\n") }).count >= all.count { break }
        }
        return String(decoding: reply, as: UTF8.self)
    }

    /// Asks redis-server to exit (SHUTDOWN NOSAVE) and waits until it has closed the connection.
    public func stop() {
        guard process != nil else { return }
        process = nil
        _ = exchange(commands: [["SHUTDOWN", "NOSAVE"]], readUntilClose: true)
    }

    /// `redis://127.0.0.1:PORT`.
    public var url: String { "redis://127.0.0.1:\(port)" }

    deinit { stop() }
}
