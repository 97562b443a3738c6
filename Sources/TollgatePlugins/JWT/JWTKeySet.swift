import Crypto
import Foundation
import JWTKit

/// Verification keys, each pinned to one algorithm: a token is checked only with a key whose
/// algorithm is the token's `alg` (so an HS256 token is never checked with an RSA public key used as
/// an HMAC secret), and `none` is never accepted. Keys are made with jwt-kit once, when the config or a
/// JWKS loads; checking a signature is then synchronous.
public struct JWTKeySet: Sendable {
    public struct Key: Sendable {
        public var kid: String?
        public var alg: String
        let verifier: any JWTAlgorithm
    }

    public private(set) var keys: [Key]
    private var byKid: [String: [Int]] = [:]
    private var withoutKid: [String: [Int]] = [:]   // by alg

    public static let algorithms: Set<String> = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384",
                                                 "PS512", "ES256", "ES384", "ES512", "EdDSA"]

    public init(keys: [Key]) {
        self.keys = keys
        for (index, key) in keys.enumerated() {
            if let kid = key.kid { byKid[kid, default: []].append(index) } else { withoutKid[key.alg, default: []].append(index) }
        }
    }

    public var isEmpty: Bool { keys.isEmpty }

    /// The keys a token with `kid` and `alg` may be checked with; nil when no key has that kid.
    func candidates(kid: String?, alg: String) -> [Key]? {
        if let kid {
            guard let indices = byKid[kid] else { return nil }
            return indices.map { keys[$0] }.filter { $0.alg == alg }
        }
        // No kid: keys without one, then any key of the algorithm.
        let direct = (withoutKid[alg] ?? []).map { keys[$0] }
        return direct.isEmpty ? keys.filter { $0.alg == alg } : direct
    }

    static func verify(_ signature: [UInt8], signs input: ArraySlice<UInt8>, with key: Key) -> Bool {
        (try? key.verifier.verify(signature, signs: input)) ?? false
    }

    // MARK: building

    public enum KeyError: Error, CustomStringConvertible {
        case invalid(String)
        public var description: String {
            switch self { case .invalid(let text): return text }
        }
    }

    /// One configured key: a PEM (public key or certificate) or an HMAC secret, for one algorithm.
    public struct Source: Sendable {
        public var kid: String?
        public var alg: String
        public var pem: String?
        public var secret: String?
    }

    /// Makes the keys (jwt-kit's key collection is an actor: this waits for it, at load time only).
    public static func make(sources: [Source], jwks: [JWKS], allowed: Set<String>) throws -> JWTKeySet {
        try BlockingBridge.run { try await build(sources: sources, jwks: jwks, allowed: allowed) }
    }

    /// As `make`, from async code (a JWKS refresh).
    public static func build(sources: [Source], jwks: [JWKS], allowed: Set<String>) async throws -> JWTKeySet {
        var keys: [Key] = []
        for source in sources {
            let collection = JWTKeyCollection()
            let kid = JWKIdentifier(string: source.kid ?? "key")
            switch source.alg {
            case "HS256", "HS384", "HS512":
                guard let secret = source.secret else { throw KeyError.invalid("\(source.alg) needs a secret") }
                guard secret.utf8.count >= 32 else { throw KeyError.invalid("an HMAC secret needs at least 32 bytes") }
                await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: digest(source.alg), kid: kid)
            case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
                guard let pem = source.pem else { throw KeyError.invalid("\(source.alg) needs a pem") }
                let key = try rsaKey(pem)
                if source.alg.hasPrefix("RS") {
                    await collection.add(rsa: key, digestAlgorithm: digest(source.alg), kid: kid)
                } else {
                    await collection.add(pss: key, digestAlgorithm: digest(source.alg), kid: kid)
                }
            case "ES256":
                await collection.add(ecdsa: try ecKey(source.pem, ES256PublicKey.self), kid: kid)
            case "ES384":
                await collection.add(ecdsa: try ecKey(source.pem, ES384PublicKey.self), kid: kid)
            case "ES512":
                await collection.add(ecdsa: try ecKey(source.pem, ES512PublicKey.self), kid: kid)
            case "EdDSA":
                guard let pem = source.pem, let raw = ed25519Raw(pem) else { throw KeyError.invalid("EdDSA needs an Ed25519 public key pem") }
                await collection.add(eddsa: EdDSA.PublicKey(backing: try Curve25519.Signing.PublicKey(rawRepresentation: raw)), kid: kid)
            default:
                throw KeyError.invalid("unknown algorithm \(source.alg)")
            }
            keys.append(Key(kid: source.kid, alg: source.alg, verifier: try await collection.getKey(for: kid, alg: source.alg)))
        }
        for set in jwks {
            for jwk in set.keys {
                let kid = jwk.keyIdentifier?.string
                // A JWK with `alg` is pinned to it; one without, to the allowed algorithms of its key type.
                let algs = jwk.algorithm.map { [$0.rawValue] } ?? compatibleAlgorithms(jwk).filter { allowed.contains($0) }
                for alg in algs where allowed.contains(alg) {
                    let collection = JWTKeyCollection()
                    var pinned = jwk
                    pinned.keyIdentifier = JWKIdentifier(string: kid ?? "key")
                    try await collection.add(jwk: pinned)
                    guard let verifier = try? await collection.getKey(for: pinned.keyIdentifier, alg: alg) else { continue }
                    keys.append(Key(kid: kid, alg: alg, verifier: verifier))
                }
            }
        }
        return JWTKeySet(keys: keys)
    }

    static func compatibleAlgorithms(_ jwk: JWK) -> [String] {
        switch jwk.keyType {
        case .rsa: return ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
        case .ecdsa:
            switch jwk.curve?.rawValue {
            case "P-256": return ["ES256"]
            case "P-384": return ["ES384"]
            case "P-521": return ["ES512"]
            default: return []
            }
        case .octetKeyPair: return ["EdDSA"]
        default: return []   // symmetric keys in a JWKS are not accepted
        }
    }

    private static func digest(_ alg: String) -> DigestAlgorithm {
        alg.hasSuffix("384") ? .sha384 : alg.hasSuffix("512") ? .sha512 : .sha256
    }

    private static func rsaKey(_ pem: String) throws -> JWTKit.Insecure.RSA.PublicKey {
        if pem.contains("CERTIFICATE") { return try JWTKit.Insecure.RSA.PublicKey(certificatePEM: pem) }
        return try JWTKit.Insecure.RSA.PublicKey(pem: pem)
    }

    private static func ecKey<Curve: ECDSACurveType>(_ pem: String?, _ type: ECDSA.PublicKey<Curve>.Type) throws -> ECDSA.PublicKey<Curve> {
        guard let pem else { throw KeyError.invalid("ECDSA keys need a pem") }
        if pem.contains("CERTIFICATE") { return try ECDSA.PublicKey<Curve>(certificate: pem) }
        return try ECDSA.PublicKey<Curve>(pem: pem)
    }

    /// The 32 raw bytes of an Ed25519 SubjectPublicKeyInfo PEM.
    static func ed25519Raw(_ pem: String) -> [UInt8]? {
        let body = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        guard let der = Data(base64Encoded: body).map(Array.init), der.count == 44 else { return nil }
        let prefix: [UInt8] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]
        guard Array(der.prefix(12)) == prefix else { return nil }
        return Array(der.suffix(32))
    }
}
