import Foundation
import HTTPTypes
import TollgateCore

/// `consumers[].credentials.mtls[]`: which client certificates are this consumer's — by subject
/// (`CN=alice,O=Acme`), by a subject alternative name, or by common name.
public struct MTLSCredential: ConsumerCredential {
    public var subject: String?
    public var san: String?
    public var commonName: String?

    static func parse(_ node: ConfigNode) -> (any ConsumerCredential)? {
        guard node.expectMapping(keys: ["subject", "san", "common_name"], required: true) else { return nil }
        let credential = MTLSCredential(subject: node["subject"].string(), san: node["san"].string(), commonName: node["common_name"].string())
        if credential.subject == nil && credential.san == nil && credential.commonName == nil {
            node.error("give subject, san or common_name")
            return nil
        }
        return credential
    }
}

/// `mtls-auth`: the client certificate of a TLS listener with `client_ca` (verified against that CA
/// bundle in the handshake) mapped to a consumer: by subject, then by a subject alternative name,
/// then by common name. Certificates whose serial is in `revoked_serials` (hex, or a file of them,
/// one per line) are refused. Without a certificate (a listener with `client_auth: optional`): 401,
/// or the anonymous consumer.
public struct MTLSMethod: AuthenticationMethod {
    public static let pluginName = "mtls-auth"
    public static let priority = 1600
    public static let configKeys: Set<String> = ["revoked_serials", "revoked_serials_file"]

    let bySubject: [String: Consumer]
    let bySAN: [String: Consumer]
    let byCommonName: [String: Consumer]
    let revoked: Set<String>

    public init?(config: ConfigNode, consumers: ConsumerDirectory) {
        var revoked = Set((config["revoked_serials"].strings() ?? []).map(Self.normalizeSerial))
        if let file = config["revoked_serials_file"].string() {
            if let text = try? String(contentsOfFile: file, encoding: .utf8) {
                for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") && !line.isEmpty {
                    revoked.insert(Self.normalizeSerial(String(line)))
                }
            } else {
                config["revoked_serials_file"].error("cannot read \(file)")
            }
        }
        self.revoked = revoked
        var bySubject: [String: Consumer] = [:]
        var bySAN: [String: Consumer] = [:]
        var byCommonName: [String: Consumer] = [:]
        for (consumer, credential) in consumers.credentials("mtls", as: MTLSCredential.self) {
            if let subject = credential.subject { bySubject[subject] = consumer }
            if let san = credential.san { bySAN[san] = consumer }
            if let name = credential.commonName { byCommonName[name] = consumer }
        }
        self.bySubject = bySubject
        self.bySAN = bySAN
        self.byCommonName = byCommonName
    }

    /// Lowercase hex without separators or leading zeros (`0A:1B` and `a1b` are the same serial).
    static func normalizeSerial(_ text: String) -> String {
        let hex = text.lowercased().filter { $0.isHexDigit }
        let trimmed = hex.drop { $0 == "0" }
        return trimmed.isEmpty ? "0" : String(trimmed)
    }

    public func challenge(failure: String?) -> String { #"ClientCertificate realm="tollgate""# }

    public var fieldNames: [HTTPField.Name] { [] }
    public var fixedCredentialFields: [HTTPField.Name]? { [] }
    public func removeCredential(from request: inout HTTPRequest, edits: inout FieldEdits) {}

    public func authenticate(_ request: HTTPRequest, context: RequestContext) -> AuthOutcome {
        guard let certificate = context.clientCertificate else { return .missing }
        let credential = "cert:" + certificate.serialNumber
        if revoked.contains(certificate.serialNumber) { return .invalid(reason: "certificate revoked", credential: credential) }
        let consumer = bySubject[certificate.subject]
            ?? certificate.subjectAlternativeNames.lazy.compactMap { self.bySAN[$0] }.first
            ?? certificate.commonName.flatMap { byCommonName[$0] }
        guard let consumer else { return .invalid(reason: "certificate of no consumer", credential: credential) }
        return .authenticated(Identity(consumer: consumer, credential: credential))
    }
}

public typealias MTLSPlugin = AuthPlugin<MTLSMethod>
