import Benchmark
import Crypto
import CryptoExtras
import Foundation
import HTTPTypes
import TollgateCore
import TollgatePlugins
import Yams

/// The request hooks of the authentication and authorization plugins, as a route runs them: key-auth
/// (SHA-256 of the key, index, identity fields), JWT ES256 and RS256 with the keys loaded (a new token
/// each time: the signature is checked) and with the token cache warm (the same token again), and
/// attribute rules. Samples of 1 000 requests.
let benchmarks: @Sendable () -> Void = {
    let configuration = Benchmark.Configuration(metrics: [.wallClock, .mallocCountTotal, .throughput], maxDuration: .seconds(2))

    let ec = P256.Signing.PrivateKey()
    let rsa = try! _RSA.Signing.PrivateKey(keySize: .bits2048)
    func indent(_ pem: String) -> String { pem.split(separator: "\n").joined(separator: "\n      ") }
    let consumers = """
        - name: bench
          groups: [staff]
          attributes: {department: eng}
          credentials:
            key_auth: [{key: "bench-key-0123456789abcdef"}]
            jwt: [{subject: bench}]
        """
    func plugin<P: GatewayPlugin>(_ type: P.Type, _ yaml: String) -> P {
        let diagnostics = ConfigDiagnostics(state: PluginStateRegistry())
        diagnostics.consumers = ConsumerDirectory.parse(ConfigNode(node: try! Yams.compose(yaml: consumers), diagnostics: diagnostics),
                                                        parsers: BuiltinPlugins.registry.credentialParsers)
        let configuration = P.Configuration(from: ConfigNode(node: try! Yams.compose(yaml: yaml), diagnostics: diagnostics))
        precondition(diagnostics.errors.isEmpty, "\(diagnostics.errors)")
        return try! P(configuration: configuration)
    }
    func run<P: GatewayPlugin>(_ plugin: P, _ request: HTTPRequest) {
        var request = request
        var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
        guard case .proceed = plugin.onRequest(&request, context: &context) else { fatalError("refused") }
        blackHole(context)
    }
    func base64url(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
    func token(_ alg: String, _ kid: String, _ index: Int) -> String {
        let head = base64url(try! JSONSerialization.data(withJSONObject: ["alg": alg, "kid": kid, "typ": "JWT"]))
        let body = base64url(try! JSONSerialization.data(withJSONObject: ["sub": "bench", "exp": Int(Date().timeIntervalSince1970) + 86_400,
                                                                         "jti": "\(index)"]))
        let input = Data("\(head).\(body)".utf8)
        let signature = alg == "ES256" ? try! ec.signature(for: input).rawRepresentation
            : try! rsa.signature(for: input, padding: .insecurePKCS1v1_5).rawRepresentation
        return "\(head).\(body).\(base64url(signature))"
    }

    let keyAuth = plugin(KeyAuthPlugin.self, "{}")
    let keyRequest = HTTPRequest(method: .get, scheme: nil, authority: "api", path: "/",
                                 headerFields: [HTTPField.Name("X-API-Key")!: "bench-key-0123456789abcdef"])
    Benchmark("key-auth x1000", configuration: configuration) { benchmark in
        for _ in benchmark.scaledIterations { for _ in 0..<1_000 { run(keyAuth, keyRequest) } }
    }

    let jwt = plugin(JWTPlugin.self, """
        algorithms: [ES256, RS256]
        required_claims: [exp]
        keys:
          - kid: ec
            alg: ES256
            pem: |
              \(indent(ec.publicKey.pemRepresentation))
          - kid: rsa
            alg: RS256
            pem: |
              \(indent(rsa.publicKey.pemRepresentation))
        """)
    for (alg, kid) in [("ES256", "ec"), ("RS256", "rsa")] {
        // Distinct tokens: every request checks a signature (keys loaded, token cache cold).
        let fresh = (0..<20_000).map { index in
            HTTPRequest(method: .get, scheme: nil, authority: "api", path: "/", headerFields: [.authorization: "Bearer " + token(alg, kid, index)])
        }
        var next = 0
        Benchmark("jwt \(alg) verify x100", configuration: configuration) { benchmark in
            for _ in benchmark.scaledIterations {
                for _ in 0..<100 {
                    run(jwt, fresh[next % fresh.count])
                    next += 1
                }
            }
        }
        let repeated = HTTPRequest(method: .get, scheme: nil, authority: "api", path: "/",
                                   headerFields: [.authorization: "Bearer " + token(alg, kid, -1)])
        Benchmark("jwt \(alg) cached token x1000", configuration: configuration) { benchmark in
            for _ in benchmark.scaledIterations { for _ in 0..<1_000 { run(jwt, repeated) } }
        }
    }

    let authorize = plugin(AuthorizePlugin.self, """
        rules:
          - {name: mfa-writes, deny: {all: [{method: {in: [POST, PUT, DELETE]}}, {not: {claim.amr: {contains: mfa}}}]}}
          - {name: network, deny: {client_ip: {in_cidr: ["203.0.113.0/24", "198.51.100.0/24"]}}}
          - {name: eng, allow: {all: [{consumer.attributes.department: eng}, {consumer.groups: {contains: staff}}]}}
        """)
    let engineer = Consumer(name: "bench", groups: ["staff"], attributes: ["department": "eng"])
    Benchmark("authorize 3 rules x1000", configuration: configuration) { benchmark in
        let request = HTTPRequest(method: .get, scheme: nil, authority: "api", path: "/")
        for _ in benchmark.scaledIterations {
            for _ in 0..<1_000 {
                var request = request
                var context = RequestContext(requestID: "r", clientIP: "192.0.2.1")
                context.consumer = engineer
                guard case .proceed = authorize.onRequest(&request, context: &context) else { fatalError("denied") }
            }
        }
    }
}
