import Crypto
import Foundation
import HTTPTypes
import NIOCore
import TollgateCore

/// `oauth2-token`: the gateway as an authorization server for machine-to-machine clients (RFC 6749
/// section 4.4, client credentials). Put it on the route of the token endpoint (`POST`, form body).
/// A client of `consumers[].credentials.oauth2` authenticates with HTTP Basic (or `client_id` and
/// `client_secret` in the body), asks for scopes among its allowed ones (all of them when it asks for
/// none), and gets a JWT signed with the gateway's key: `iss`, `sub` and `client_id` (the client),
/// `aud`, `scope`, `iat`, `exp`, `jti`. The `jwt` plugin verifies these tokens with the matching public
/// key (or secret), and maps `client_id` back to the consumer.
public struct OAuth2TokenPlugin: GatewayPlugin {
    public static let name = "oauth2-token"
    public static let phase = PluginPhase.access
    public static let priority = 1700
    public static let changesRequest = false
    public static let responseHookOnlyAdds = true
    public var hasLogHook: Bool { false }
    public var hasResponseHook: Bool { false }
    public var requestFieldNames: [HTTPField.Name]? { [.authorization, .contentType] }

    enum Signer: Sendable {
        case es256(P256.Signing.PrivateKey)
        case hs256(SymmetricKey)

        var alg: String {
            switch self {
            case .es256: return "ES256"
            case .hs256: return "HS256"
            }
        }

        func sign(_ input: Data) throws -> Data {
            switch self {
            case .es256(let key): return try key.signature(for: input).rawRepresentation
            case .hs256(let key): return Data(HMAC<SHA256>.authenticationCode(for: input, using: key))
            }
        }
    }

    public struct Configuration: PluginConfiguration {
        var signer: Signer?
        var kid: String?
        var issuer = "tollgate"
        var audience: String?
        var ttlSeconds = 3_600
        var clients: [String: (consumer: Consumer, credential: OAuth2Credential)] = [:]

        public init(from config: ConfigNode) {
            config.expectMapping(keys: ["signing_key", "issuer", "audience", "ttl"])
            let key = config["signing_key"]
            if key.expectMapping(keys: ["kid", "alg", "pem", "pem_file", "secret"], required: true) {
                kid = key["kid"].string()
                switch key["alg"].string(required: true) {
                case "ES256":
                    var pem = key["pem"].string()
                    if let file = key["pem_file"].string() { pem = try? String(contentsOfFile: file, encoding: .utf8) }
                    if let pem, let parsed = try? P256.Signing.PrivateKey(pemRepresentation: pem) {
                        signer = .es256(parsed)
                    } else {
                        key.error("ES256 needs pem or pem_file with a P-256 private key")
                    }
                case "HS256":
                    if let secret = key["secret"].string(), secret.utf8.count >= 32 {
                        signer = .hs256(SymmetricKey(data: Data(secret.utf8)))
                    } else {
                        key["secret"].error("HS256 needs a secret of at least 32 bytes")
                    }
                case let other?:
                    key["alg"].error("expected ES256 or HS256, got \(other)")
                case nil:
                    break
                }
            }
            issuer = config["issuer"].string() ?? issuer
            audience = config["audience"].string()
            if let ttl = config["ttl"].duration() {
                let seconds = Int(ttl.components.seconds)
                if (60...86_400).contains(seconds) { ttlSeconds = seconds } else { config["ttl"].error("expected 1m to 24h") }
            }
            for (consumer, credential) in config.diagnostics.consumers.credentials("oauth2", as: OAuth2Credential.self) {
                if credential.secretDigest == nil { continue }
                clients[credential.clientID] = (consumer, credential)
            }
        }
    }

    let configuration: Configuration
    let signer: Signer

    public init(configuration: Configuration) throws {
        guard let signer = configuration.signer else { throw AuthConfigurationError.invalid }
        self.configuration = configuration
        self.signer = signer
    }

    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        guard request.method == .post else {
            var response = Self.error(.methodNotAllowed, "invalid_request", "use POST", context: context)
            response.headerFields[.allow] = "POST"
            return .respond(response)
        }
        let plugin = self
        return .readBody(maxBytes: 8_192) { request, context, body in
            .respond(plugin.answer(request, body: String(buffer: body), context: context))
        }
    }

    /// The token response, or an RFC 6749 section 5.2 error.
    func answer(_ request: HTTPRequest, body: String, context: RequestContext) -> LocalResponse {
        let contentType = request.headerFields[.contentType]?.lowercased() ?? ""
        guard contentType.hasPrefix("application/x-www-form-urlencoded") else {
            return Self.error(.badRequest, "invalid_request", "expected an application/x-www-form-urlencoded body", context: context)
        }
        var form: [String: String] = [:]
        for pair in body.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0]).replacingOccurrences(of: "+", with: " ").removingPercentEncodingLeniently
            let value = parts.count == 2 ? String(parts[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncodingLeniently : ""
            form[name] = value
        }
        guard form["grant_type"] == "client_credentials" else {
            return Self.error(.badRequest, "unsupported_grant_type", "only client_credentials is supported", context: context)
        }
        var clientID = form["client_id"]
        var secret = form["client_secret"]
        for field in request.headerFields where field.name == .authorization {
            if let encoded = AuthText.credentials(scheme: "Basic", in: field.value), let decoded = Data(base64Encoded: encoded),
               let text = String(data: decoded, encoding: .utf8), let colon = text.firstIndex(of: ":") {
                clientID = String(text[..<colon]).removingPercentEncodingLeniently
                secret = String(text[text.index(after: colon)...]).removingPercentEncodingLeniently
            }
        }
        guard let clientID, let secret, let client = configuration.clients[clientID], let expected = client.credential.secretDigest,
              AuthText.constantTimeEqual(Array(SHA256.hash(data: Array(secret.utf8))), expected) else {
            var response = Self.error(.unauthorized, "invalid_client", "client authentication failed", context: context)
            response.headerFields[.wwwAuthenticate] = #"Basic realm="tollgate""#
            return response
        }
        let allowed = client.credential.scopes
        var scopes = allowed
        if let requested = form["scope"], !requested.isEmpty {
            scopes = requested.split(separator: " ").map(String.init)
            guard scopes.allSatisfy(allowed.contains) else {
                return Self.error(.badRequest, "invalid_scope", "a requested scope is not allowed for this client", context: context)
            }
        }
        let now = WallClock.milliseconds() / 1_000
        var header: [String: Any] = ["alg": signer.alg, "typ": "JWT"]
        if let kid = configuration.kid { header["kid"] = kid }
        var claims: [String: Any] = ["iss": configuration.issuer, "sub": clientID, "client_id": clientID, "iat": now,
                                     "exp": now + Int64(configuration.ttlSeconds), "jti": UUID().uuidString, "scope": scopes.joined(separator: " ")]
        if let audience = configuration.audience { claims["aud"] = audience }
        do {
            let head = Base64URL.encode(try JSONSerialization.data(withJSONObject: header, options: .sortedKeys))
            let payload = Base64URL.encode(try JSONSerialization.data(withJSONObject: claims, options: .sortedKeys))
            let signature = Base64URL.encode(try signer.sign(Data("\(head).\(payload)".utf8)))
            let token = "\(head).\(payload).\(signature)"
            var fields = HTTPFields()
            fields[.cacheControl] = "no-store"
            fields[HTTPField.Name("Pragma")!] = "no-cache"
            let body = #"{"access_token":"\#(token)","token_type":"Bearer","expires_in":\#(configuration.ttlSeconds),"scope":\#(JSONText.quote(scopes.joined(separator: " ")))}"#
            return LocalResponse(status: .ok, headerFields: fields, body: body)
        } catch {
            return Self.error(.internalServerError, "server_error", "the token could not be signed", context: context)
        }
    }

    static func error(_ status: HTTPResponse.Status, _ code: String, _ description: String, context: RequestContext) -> LocalResponse {
        var fields = HTTPFields()
        fields[.cacheControl] = "no-store"
        return LocalResponse(status: status, headerFields: fields,
                             body: #"{"error":"\#(code)","error_description":\#(JSONText.quote(description)),"request_id":\#(JSONText.quote(context.requestID))}"#)
    }
}
