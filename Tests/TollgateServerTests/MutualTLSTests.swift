import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Testing
import TollgateCore
import TollgatePlugins
import TollgateServer
import TollgateTesting

/// HTTPS listeners and client certificates: a CA, the gateway's certificate and clients' certificates
/// made with openssl; real TLS clients (async-http-client).
@Suite struct MutualTLSTests {
    struct PKI {
        let directory: String
        var ca: String { "\(directory)/ca.pem" }
        func certificate(_ name: String) -> String { "\(directory)/\(name).pem" }
        func key(_ name: String) -> String { "\(directory)/\(name).key" }
        var serials: [String: String] = [:]
    }

    static func openssl(_ arguments: [String]) async throws -> String {
        try await ChildProcess.output("/usr/bin/openssl", arguments)
    }

    /// A CA; a server certificate for 127.0.0.1; client certificates for alice (an e-mail SAN), bob and
    /// mallory (subjects only).
    static func makePKI() async throws -> PKI {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pki-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var pki = PKI(directory: directory)
        _ = try await openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(directory)/ca.key",
                         "-out", pki.ca, "-days", "2", "-subj", "/CN=Tollgate Test CA"])
        for (name, subject, san) in [("server", "/CN=127.0.0.1", "IP:127.0.0.1"), ("alice", "/O=Acme/CN=alice", "email:alice@acme.test"),
                                     ("bob", "/O=Acme/CN=bob", "email:bob@acme.test"), ("mallory", "/O=Evil/CN=mallory", "email:m@evil.test")] {
            _ = try await openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", pki.key(name),
                             "-out", "\(directory)/\(name).csr", "-subj", subject])
            try "subjectAltName=\(san)\n".write(toFile: "\(directory)/\(name).ext", atomically: true, encoding: .utf8)
            // Bob's serial starts with a zero half-byte: it must still match the revoked list.
            let serialOption = name == "bob" ? ["-set_serial", "0x0a1b2c3d4e"] : ["-CAcreateserial"]
            _ = try await openssl(["x509", "-req", "-in", "\(directory)/\(name).csr", "-CA", pki.ca, "-CAkey", "\(directory)/ca.key"]
                            + serialOption + ["-out", pki.certificate(name), "-days", "2", "-extfile", "\(directory)/\(name).ext"])
            let serial = try await openssl(["x509", "-in", pki.certificate(name), "-noout", "-serial"])
            pki.serials[name] = serial.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "serial=", with: "")
        }
        return pki
    }

    /// A TLS client trusting the test CA, presenting `identity`'s certificate when given.
    static func client(_ pki: PKI, identity: String?) throws -> HTTPClient {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(pki.ca)
        if let identity {
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(pki.certificate(identity)).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: pki.key(identity), format: .pem))
        }
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPClient.Configuration(tlsConfiguration: tls))
    }

    static func get(_ client: HTTPClient, port: Int) async -> (status: Int, body: String)? {
        do {
            let response = try await client.execute(HTTPClientRequest(url: "https://127.0.0.1:\(port)/api/x"), timeout: .seconds(5))
            let body = try await response.body.collect(upTo: 1 << 20)
            return (Int(response.status.code), String(buffer: body))
        } catch {
            return nil   // the handshake failed
        }
    }

    @Test func clientCertificatesMapToConsumersAndRevokedOnesAreRefused() async throws {
        let pki = try await Self.makePKI()
        defer { try? FileManager.default.removeItem(atPath: pki.directory) }
        let listen = """
            [{address: "127.0.0.1:0", tls: {certificate: "\(pki.certificate("server"))", key: "\(pki.key("server"))",
                                            client_ca: "\(pki.ca)", client_auth: optional}}]
            """
        let config = """
            consumers:
              - {name: alice, credentials: {mtls: [{san: alice@acme.test}]}}
              - {name: bob, credentials: {mtls: [{subject: "CN=bob,O=Acme"}]}}
            services:
              api: {targets: [{url: "$UPSTREAM0"}]}
            routes:
              - match: {paths: ["/api/*"]}
                service: api
                plugins: [{name: mtls-auth, config: {revoked_serials: ["\(pki.serials["bob"]!)"]}}]
            """
        try await Harness.with(config, listen: listen) { harness in
            let clients = try ["alice", "bob", "mallory"].map { try Self.client(pki, identity: $0) } + [Self.client(pki, identity: nil)]
            let aliceAnswer = await Self.get(clients[0], port: harness.port)
            #expect(aliceAnswer?.status == 200)
            #expect(aliceAnswer?.body.contains(#""x-consumer-username":"alice""#) == true)
            #expect(aliceAnswer?.body.contains(#""x-forwarded-proto":"https""#) == true)
            #expect(await Self.get(clients[1], port: harness.port)?.status == 401, "revoked serial")
            #expect(await Self.get(clients[2], port: harness.port)?.status == 401, "a certificate of no consumer")
            #expect(await Self.get(clients[3], port: harness.port)?.status == 401, "no certificate on an optional listener")
            for client in clients { try? await client.shutdown() }
        }
    }

    /// `client_auth: required`: without a certificate the handshake itself fails; a certificate of
    /// another CA too.
    @Test func requiredClientCertificates() async throws {
        let pki = try await Self.makePKI()
        defer { try? FileManager.default.removeItem(atPath: pki.directory) }
        let listen = #"[{address: "127.0.0.1:0", tls: {certificate: "\#(pki.certificate("server"))", key: "\#(pki.key("server"))", client_ca: "\#(pki.ca)"}}]"#
        try await Harness.with("services:\n  api: {targets: [{url: \"$UPSTREAM0\"}]}\nroutes:\n  - {match: {paths: [\"/api/*\"]}, service: api}\n",
                               listen: listen) { harness in
            let alice = try Self.client(pki, identity: "alice")
            let anonymous = try Self.client(pki, identity: nil)
            #expect(await Self.get(alice, port: harness.port)?.status == 200)
            #expect(await Self.get(anonymous, port: harness.port) == nil)
            try? await alice.shutdown()
            try? await anonymous.shutdown()
        }
        // Bad TLS settings are config errors with their paths.
        #expect(configErrors("""
            listen: [{address: "127.0.0.1:0", tls: {certificate: /nonexistent.pem, key: /nonexistent.key, client_auth: required}}]
            services: {a: {targets: [{url: "http://127.0.0.1:1"}]}}
            routes: [{match: {paths: ["/"]}, service: a}]
            """) == [
                "listen[0].tls.certificate: cannot read /nonexistent.pem (line 1)",
                "listen[0].tls.key: cannot read /nonexistent.key (line 1)",
                "listen[0].tls.client_ca: client_auth required needs client_ca (the CA bundle client certificates chain to) (line 1)",
            ])
    }
}

func configErrors(_ yaml: String) -> [String] {
    do {
        _ = try ConfigLoader.load(yaml: yaml, environment: [:], registry: BuiltinPlugins.registry)
        return []
    } catch {
        return error.errors.map(\.description)
    }
}
