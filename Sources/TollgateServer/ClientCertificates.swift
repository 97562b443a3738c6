import NIOCore
import NIOSSL
import SwiftASN1
import TollgateCore
import X509

extension ProxyHandler {
    /// The verified client certificate of this TLS connection, read once (the handshake is over when
    /// the first request arrives).
    func peerCertificate() -> ClientCertificate? {
        if clientCertificateRead { return clientCertificate }
        clientCertificateRead = true
        guard let context = channelContext,
              let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
              let certificate = handler.peerCertificate else { return nil }
        clientCertificate = Self.describe(certificate)
        return clientCertificate
    }

    /// Subject, common name, SANs and serial of a certificate, as text.
    static func describe(_ certificate: NIOSSLCertificate) -> ClientCertificate? {
        guard let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else { return nil }
        var commonName: String?
        for relative in parsed.subject {
            for attribute in relative where attribute.type == .RDNAttributeType.commonName {
                commonName = attribute.value.description
            }
        }
        var names: [String] = []
        if let alternatives = try? parsed.extensions.subjectAlternativeNames {
            for name in alternatives {
                switch name {
                case .dnsName(let value): names.append(value)
                case .rfc822Name(let value): names.append(value)
                case .uniformResourceIdentifier(let value): names.append(value)
                case .ipAddress(let bytes): names.append(Self.address(Array(bytes.bytes)))
                default: break
                }
            }
        }
        // Lowercase hex without leading zeros (not even half a byte's): `0A1B` is `a1b`, as configs write it.
        let hex = certificate.serialNumber.map { byte in
            let digits = String(byte, radix: 16)
            return digits.count == 1 ? "0" + digits : digits
        }.joined()
        let serial = String(hex.drop { $0 == "0" })
        return ClientCertificate(subject: parsed.subject.description, commonName: commonName,
                                 subjectAlternativeNames: names, serialNumber: serial.isEmpty ? "0" : serial)
    }

    static func address(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        var groups: [String] = []
        var index = 0
        while index + 1 < bytes.count {
            groups.append(String(UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1]), radix: 16))
            index += 2
        }
        return groups.joined(separator: ":")
    }
}
