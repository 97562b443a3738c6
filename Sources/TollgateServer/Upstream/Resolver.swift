#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import NIOCore
import TollgateCore

/// A name's addresses, and how long they may be kept (the records' smallest TTL; nil when the
/// source has none, as /etc/hosts or getaddrinfo).
public struct Resolution: Sendable, Equatable {
    public var addresses: [SocketAddress]
    public var ttl: Duration?

    public init(addresses: [SocketAddress], ttl: Duration? = nil) {
        self.addresses = addresses
        self.ttl = ttl
    }
}

struct ResolveError: Error, CustomStringConvertible {
    var host: String
    var port: Int
    var reason: String
    var description: String { "cannot resolve \(host):\(port): \(reason)" }
}

/// Name resolution at snapshot time and on refresh (never per request): an IP literal as it is, else
/// /etc/hosts, else a DNS query (A and AAAA, over UDP to the nameservers of /etc/resolv.conf) whose
/// answer carries the TTL, else getaddrinfo. Blocking: called off the event loops.
public enum Resolver {
    public static func resolve(host: String, port: Int, nameservers: [SocketAddress]? = nil,
                               hostsFile: String = "/etc/hosts", timeout: Duration = .seconds(1)) throws -> Resolution {
        if let literal = try? SocketAddress(ipAddress: host, port: port) { return Resolution(addresses: [literal]) }
        if let fromHosts = hostsEntry(host, port: port, file: hostsFile), !fromHosts.isEmpty {
            return Resolution(addresses: fromHosts)
        }
        for server in (nameservers ?? systemNameservers()).prefix(3) {
            guard let records = try? query(host, nameserver: server, timeout: timeout) else { continue }
            let addresses = records.compactMap { record -> SocketAddress? in
                switch record.type {
                case .a:
                    return try? SocketAddress(ipAddress: record.address.map(String.init).joined(separator: "."), port: port)
                case .aaaa:
                    let groups = stride(from: 0, to: 16, by: 2).map {
                        String(UInt16(record.address[$0]) << 8 | UInt16(record.address[$0 + 1]), radix: 16)
                    }
                    return try? SocketAddress(ipAddress: groups.joined(separator: ":"), port: port)
                }
            }
            if !addresses.isEmpty {
                let ttl = records.map(\.ttl).min().map { Duration.seconds(Int64($0)) }
                return Resolution(addresses: addresses, ttl: ttl)
            }
            break   // the server answered without records: search domains and the like are getaddrinfo's
        }
        return Resolution(addresses: try resolveAll(host: host, port: port))
    }

    /// The nameservers of /etc/resolv.conf, on port 53.
    static func systemNameservers(file: String = "/etc/resolv.conf") -> [SocketAddress] {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 2, words[0] == "nameserver" else { return nil }
            return try? SocketAddress(ipAddress: String(words[1]), port: 53)
        }
    }

    static func hostsEntry(_ host: String, port: Int, file: String) -> [SocketAddress]? {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        let name = host.lowercased()
        var result: [SocketAddress] = []
        for line in text.split(separator: "\n") {
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let words = content.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 2, words.dropFirst().contains(where: { $0.lowercased() == name }),
                  let address = try? SocketAddress(ipAddress: String(words[0]), port: port),
                  !result.contains(address) else { continue }
            result.append(address)
        }
        return result
    }

    /// A and AAAA records of `host` from one nameserver, over UDP.
    static func query(_ host: String, nameserver: SocketAddress, timeout: Duration) throws -> [DNSMessage.Record] {
        let fd = socket(nameserver.protocol.rawValue, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw ResolveError(host: host, port: 0, reason: "socket failed") }
        defer { close(fd) }
        var interval = timeval(tv_sec: Int(timeout.components.seconds),
                               tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        let connected = nameserver.withSockAddr { address, length in connect(fd, address, socklen_t(length)) }
        guard connected == 0 else { throw ResolveError(host: host, port: 0, reason: "cannot reach the nameserver") }
        var records: [DNSMessage.Record] = []
        for type in [DNSMessage.RecordType.a, .aaaa] {
            let id = UInt16.random(in: 0...UInt16.max)
            guard let message = DNSMessage.query(id: id, name: host, type: type) else {
                throw ResolveError(host: host, port: 0, reason: "not a DNS name")
            }
            guard message.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == message.count else {
                throw ResolveError(host: host, port: 0, reason: "send failed")
            }
            var buffer = [UInt8](repeating: 0, count: 1500)
            while true {
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard count > 0 else { throw ResolveError(host: host, port: 0, reason: "no answer from the nameserver") }
                do {
                    records += try DNSMessage.answers(Array(buffer[0..<count]), id: id)
                    break
                } catch .wrongID {
                    continue   // a late answer to an earlier query
                }
            }
        }
        return records
    }

    /// Every address getaddrinfo knows for `host`.
    public static func resolveAll(host: String, port: Int) throws -> [SocketAddress] {
        if let literal = try? SocketAddress(ipAddress: host, port: port) { return [literal] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &result)
        guard status == 0, let first = result else {
            throw ResolveError(host: host, port: port, reason: String(cString: gai_strerror(status)))
        }
        defer { freeaddrinfo(first) }
        var addresses: [SocketAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            if let raw = info.pointee.ai_addr {
                let address: SocketAddress?
                switch Int32(info.pointee.ai_family) {
                case AF_INET:
                    address = raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { SocketAddress($0.pointee, host: host) }
                case AF_INET6:
                    address = raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { SocketAddress($0.pointee, host: host) }
                default:
                    address = nil
                }
                if let address, !addresses.contains(address) { addresses.append(address) }
            }
            cursor = info.pointee.ai_next
        }
        guard !addresses.isEmpty else { throw ResolveError(host: host, port: port, reason: "no address") }
        return addresses
    }
}
