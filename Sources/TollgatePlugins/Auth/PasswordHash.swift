import Crypto
import CryptoExtras
import Foundation

/// A stored password hash, in the PHC string format passlib and others write:
/// `$pbkdf2-sha256$<rounds>$<salt>$<hash>`, `$pbkdf2-sha512$...`, or
/// `$scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt>$<hash>` (salt and hash in base64; passlib's `.` for `+`
/// and missing padding accepted). `tollgate hash-password` writes the first.
public struct PasswordHash: Sendable, Equatable {
    public enum Scheme: Sendable, Equatable {
        case pbkdf2SHA256(rounds: Int)
        case pbkdf2SHA512(rounds: Int)
        case scrypt(logN: Int, r: Int, p: Int)
    }

    public var scheme: Scheme
    public var salt: [UInt8]
    public var hash: [UInt8]

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case bcrypt
        case unknown
        case malformed(String)

        public var description: String {
            switch self {
            case .bcrypt: return "bcrypt hashes are not supported in this build; use $pbkdf2-sha256$ or $scrypt$ (tollgate hash-password writes one)"
            case .unknown: return "expected $pbkdf2-sha256$ROUNDS$SALT$HASH, $pbkdf2-sha512$... or $scrypt$ln=N,r=R,p=P$SALT$HASH"
            case .malformed(let detail): return detail
            }
        }
    }

    public init(scheme: Scheme, salt: [UInt8], hash: [UInt8]) {
        self.scheme = scheme
        self.salt = salt
        self.hash = hash
    }

    public init(parsing text: String) throws(ParseError) {
        let parts = text.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].isEmpty else { throw .unknown }
        if parts[1].hasPrefix("2") { throw .bcrypt }
        guard parts.count == 5 else { throw .unknown }
        guard let salt = Self.base64(parts[3]), salt.count >= 8 else { throw .malformed("the salt is not base64 of at least 8 bytes") }
        guard let hash = Self.base64(parts[4]), hash.count >= 16 else { throw .malformed("the hash is not base64 of at least 16 bytes") }
        switch parts[1] {
        case "pbkdf2-sha256", "pbkdf2-sha512":
            guard let rounds = Int(parts[2]), rounds >= 10_000, rounds <= 10_000_000 else {
                throw .malformed("rounds must be between 10000 and 10000000")
            }
            scheme = parts[1] == "pbkdf2-sha256" ? .pbkdf2SHA256(rounds: rounds) : .pbkdf2SHA512(rounds: rounds)
        case "scrypt":
            var values: [String: Int] = [:]
            for pair in parts[2].split(separator: ",") {
                let kv = pair.split(separator: "=")
                if kv.count == 2, let value = Int(kv[1]) { values[String(kv[0])] = value }
            }
            guard let logN = values["ln"], let r = values["r"], let p = values["p"], (10...20).contains(logN),
                  (1...32).contains(r), (1...16).contains(p) else {
                throw .malformed("scrypt needs ln=10..20, r=1..32, p=1..16")
            }
            scheme = .scrypt(logN: logN, r: r, p: p)
        default:
            throw .unknown
        }
        self.salt = salt
        self.hash = hash
    }

    /// The PHC string, as passlib writes it (its PBKDF2 hashes use `.` for `+`).
    public var text: String {
        var salt = Self.encode(self.salt)
        var hash = Self.encode(self.hash)
        if case .scrypt = scheme {} else {
            salt = salt.replacingOccurrences(of: "+", with: ".")
            hash = hash.replacingOccurrences(of: "+", with: ".")
        }
        switch scheme {
        case .pbkdf2SHA256(let rounds): return "$pbkdf2-sha256$\(rounds)$\(salt)$\(hash)"
        case .pbkdf2SHA512(let rounds): return "$pbkdf2-sha512$\(rounds)$\(salt)$\(hash)"
        case .scrypt(let logN, let r, let p): return "$scrypt$ln=\(logN),r=\(r),p=\(p)$\(salt)$\(hash)"
        }
    }

    /// Hashes `password` the slow way and compares in constant time. Takes tens to hundreds of
    /// milliseconds by design: never call it on an event loop.
    public func verify(_ password: String) -> Bool {
        guard let derived = try? Self.derive(password, scheme: scheme, salt: salt, count: hash.count) else { return false }
        return AuthText.constantTimeEqual(derived, hash)
    }

    /// A new hash of `password` with a random salt.
    public static func make(_ password: String, scheme: Scheme = .pbkdf2SHA256(rounds: 600_000)) throws -> PasswordHash {
        var salt = [UInt8](repeating: 0, count: 16)
        for index in salt.indices { salt[index] = UInt8.random(in: 0...255) }
        return PasswordHash(scheme: scheme, salt: salt, hash: try derive(password, scheme: scheme, salt: salt, count: 32))
    }

    static func derive(_ password: String, scheme: Scheme, salt: [UInt8], count: Int) throws -> [UInt8] {
        let key: SymmetricKey
        switch scheme {
        case .pbkdf2SHA256(let rounds):
            key = try KDF.Insecure.PBKDF2.deriveKey(from: Array(password.utf8), salt: salt, using: .sha256,
                                                    outputByteCount: count, unsafeUncheckedRounds: rounds)
        case .pbkdf2SHA512(let rounds):
            key = try KDF.Insecure.PBKDF2.deriveKey(from: Array(password.utf8), salt: salt, using: .sha512,
                                                    outputByteCount: count, unsafeUncheckedRounds: rounds)
        case .scrypt(let logN, let r, let p):
            key = try KDF.Scrypt.deriveKey(from: Array(password.utf8), salt: salt, outputByteCount: count,
                                           rounds: 1 << logN, blockSize: r, parallelism: p)
        }
        return key.withUnsafeBytes { Array($0) }
    }

    static func base64(_ text: Substring) -> [UInt8]? {
        var normalized = text.replacingOccurrences(of: ".", with: "+")
        while normalized.utf8.count % 4 != 0 { normalized += "=" }
        return Data(base64Encoded: normalized).map { Array($0) }
    }

    static func encode(_ bytes: [UInt8]) -> String {
        var text = Data(bytes).base64EncodedString()
        while text.hasSuffix("=") { text.removeLast() }
        return text
    }
}
