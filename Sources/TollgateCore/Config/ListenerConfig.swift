import Foundation

/// One `listen:` entry: an address, and TLS when the listener speaks HTTPS.
public struct ListenerConfig: Sendable, Hashable {
    public var host: String
    public var port: Int
    public var tls: TLS?

    /// HTTPS on this listener: the server's certificate chain and key (PEM files), and optionally the
    /// CA bundle client certificates must chain to (mutual TLS).
    public struct TLS: Sendable, Hashable {
        public enum ClientAuth: String, Sendable {
            /// No client certificate asked for.
            case none
            /// Asked for; a connection without one goes on (the `mtls-auth` plugin decides per route).
            case optional
            /// A connection without a valid client certificate fails in the handshake.
            case required
        }

        public var certificateFile: String
        public var keyFile: String
        public var clientCAFile: String?
        public var clientAuth = ClientAuth.none

        public init(certificateFile: String, keyFile: String, clientCAFile: String? = nil, clientAuth: ClientAuth = .none) {
            self.certificateFile = certificateFile
            self.keyFile = keyFile
            self.clientCAFile = clientCAFile
            self.clientAuth = clientAuth
        }
    }

    public init(host: String, port: Int, tls: TLS? = nil) {
        self.host = host
        self.port = port
        self.tls = tls
    }

    init?(from node: ConfigNode) {
        guard node.expectMapping(keys: ["address", "tls"], required: true) else { return nil }
        guard let address = node["address"].string(required: true) else { return nil }
        guard let (host, port) = HostPort.parse(address) else {
            node["address"].error("expected host:port, such as 127.0.0.1:8080 or [::1]:8080")
            return nil
        }
        self.init(host: host, port: port)
        let tlsNode = node["tls"]
        if tlsNode.isPresent {
            tlsNode.expectMapping(keys: ["certificate", "key", "client_ca", "client_auth"])
            guard let certificate = tlsNode["certificate"].string(required: true), let key = tlsNode["key"].string(required: true) else {
                return
            }
            var settings = TLS(certificateFile: certificate, keyFile: key, clientCAFile: tlsNode["client_ca"].string())
            for (field, path) in [("certificate", certificate), ("key", key), ("client_ca", settings.clientCAFile)] {
                if let path, !FileManager.default.isReadableFile(atPath: path) { tlsNode[field].error("cannot read \(path)") }
            }
            if let text = tlsNode["client_auth"].string() {
                if let parsed = TLS.ClientAuth(rawValue: text) { settings.clientAuth = parsed } else {
                    tlsNode["client_auth"].error("expected none, optional or required")
                }
            } else if settings.clientCAFile != nil {
                settings.clientAuth = .required
            }
            if settings.clientAuth != .none && settings.clientCAFile == nil {
                tlsNode["client_ca"].error("client_auth \(settings.clientAuth.rawValue) needs client_ca (the CA bundle client certificates chain to)")
            }
            tls = settings
        }
    }
}
