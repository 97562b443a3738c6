import Foundation
import NIOCore
import NIOPosix
import Testing
import TollgateServer

/// The resolver against a DNS server on loopback that answers with fixed records.
@Suite struct ResolverTests {
    /// Answers every query for A with 127.0.0.1 (TTL 42) and for AAAA with ::1 (TTL 7).
    final class FakeDNS: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        typealias OutboundOut = AddressedEnvelope<ByteBuffer>

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            let query = Array(envelope.data.readableBytesView)
            guard query.count > 16 else { return }
            let type = UInt16(query[query.count - 4]) << 8 | UInt16(query[query.count - 3])
            var answer = query
            answer[2] = 0x81
            answer[3] = 0x80
            answer[7] = 1   // one answer
            answer += [0xC0, 12, UInt8(type >> 8), UInt8(type & 0xFF), 0, 1]
            if type == 1 {
                answer += [0, 0, 0, 42, 0, 4, 127, 0, 0, 1]
            } else {
                answer += [0, 0, 0, 7, 0, 16] + Array(repeating: 0, count: 15) + [1]
            }
            context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress,
                                                                    data: ByteBuffer(bytes: answer))), promise: nil)
        }
    }

    @Test func queriesTheNameserverAndKeepsTheSmallestTTL() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let channel = try await DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(FakeDNS()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let nameserver = channel.localAddress!
        let hosts = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-hosts-\(UUID().uuidString)").path
        try "10.1.2.3 fixed.internal other  # comment\n".write(toFile: hosts, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: hosts) }
        let resolution = try await Task.detached {
            try Resolver.resolve(host: "api.internal", port: 8080, nameservers: [nameserver], hostsFile: hosts)
        }.value
        #expect(resolution.addresses == [try SocketAddress(ipAddress: "127.0.0.1", port: 8080),
                                         try SocketAddress(ipAddress: "::1", port: 8080)])
        #expect(resolution.ttl == .seconds(7))
        // /etc/hosts entries win, and have no TTL.
        let fixed = try Resolver.resolve(host: "FIXED.internal", port: 80, nameservers: [nameserver], hostsFile: hosts)
        #expect(fixed == Resolution(addresses: [try SocketAddress(ipAddress: "10.1.2.3", port: 80)]))
        try await channel.close()
        try await group.shutdownGracefully()
    }
}
