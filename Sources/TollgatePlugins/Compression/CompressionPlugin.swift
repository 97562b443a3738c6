import HTTPTypes
import NIOCore
import TollgateCore

/// Compresses responses for clients that accept it (`br`, `gzip`, `deflate`, chosen by the client's
/// q-values among the configured codings, in the configured order of preference), as they stream.
/// Only configured content types above a minimum size; never responses already encoded, 204/304,
/// answers to HEAD or Range requests, or `Cache-Control: no-transform`. Adds `Vary: Accept-Encoding`,
/// drops `Content-Length` (the body goes chunked) and weakens a strong `ETag`. Optionally undoes a
/// compressed request body, within a limit on its decompressed size (413 past it).
public struct CompressionPlugin: GatewayPlugin {
    public static let name = "compression"
    public static let phase = PluginPhase.response
    public static let priority = 200

    public struct Configuration: PluginConfiguration {
        public var encodings: [ContentCoding] = [.br, .gzip]
        public var minSize = 1024
        /// Media types (`text/*` covers a whole type; `+json` / `+xml` suffixes count as JSON / XML).
        public var contentTypes = ["text/*", "application/json", "application/javascript", "application/xml",
                                   "application/xhtml+xml", "image/svg+xml", "application/wasm"]
        public var gzipLevel: Int32 = 6
        public var brotliQuality: Int32 = 4
        /// Request bodies in these codings are decompressed before they go upstream (off when empty).
        public var decompressRequests = false
        public var maxDecompressedSize = 10 << 20

        public init(from config: ConfigNode) {
            config.expectMapping(keys: ["encodings", "min_size", "content_types", "gzip_level", "brotli_quality",
                                        "decompress_requests", "max_decompressed_size"])
            if let nodes = config["encodings"].elements() {
                encodings = []
                for node in nodes {
                    guard let text = node.string() else { continue }
                    if let coding = ContentCoding(rawValue: text) { encodings.append(coding) } else { node.error("expected br, gzip or deflate") }
                }
                if encodings.isEmpty { config["encodings"].error("at least one encoding") }
            }
            minSize = config["min_size"].size() ?? minSize
            if let types = config["content_types"].strings() { contentTypes = types.map { $0.lowercased() } }
            gzipLevel = Int32(config["gzip_level"].int(range: 1...9) ?? 6)
            brotliQuality = Int32(config["brotli_quality"].int(range: 0...11) ?? 4)
            decompressRequests = config["decompress_requests"].bool() ?? false
            maxDecompressedSize = config["max_decompressed_size"].size() ?? maxDecompressedSize
        }
    }

    let configuration: Configuration
    let supported: [String]

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.supported = configuration.encodings.map(\.rawValue)
    }

    public static let changesRequest = false
    public var mayChangeRequest: Bool { configuration.decompressRequests }
    public var hasLogHook: Bool { false }
    public var requestFieldNames: [HTTPField.Name]? {
        configuration.decompressRequests ? nil : [.acceptEncoding, .range]
    }

    // MARK: request

    public func onRequest(_ request: inout HTTPRequest, context: inout RequestContext) -> RequestDecision {
        if request.method != .head && request.headerFields[.range] == nil {
            let chosen = AcceptEncoding.preferred(request.headerFields[values: .acceptEncoding], among: supported)
            if let coding = ContentCoding(rawValue: chosen) { context[ChosenCoding.self] = coding }
        }
        guard configuration.decompressRequests, let encoding = request.headerFields[.contentEncoding]?.lowercased(),
              encoding != "identity" else { return .proceed }
        guard let coding = ContentCoding(rawValue: encoding == "x-gzip" ? "gzip" : encoding) else {
            return .respond(.error(.unsupportedMediaType, "request Content-Encoding '\(encoding)' is not supported",
                                   requestID: context.requestID))
        }
        let limit = configuration.maxDecompressedSize
        return .readBody(maxBytes: limit) { request, context, body in
            switch Result(catching: { () throws(DecompressionError) in
                try Decompressor.decompress(body, coding: coding, limit: limit)
            }) {
            case .success(let plain):
                request.headerFields[.contentEncoding] = nil
                if request.headerFields[.transferEncoding] == nil { request.headerFields[.contentLength] = String(plain.readableBytes) }
                context.replacementRequestBody = plain
                return .proceed
            case .failure(.tooLarge):
                return .respond(.error(.contentTooLarge, "decompressed request body larger than \(limit) bytes",
                                       requestID: context.requestID))
            case .failure(.invalid):
                return .respond(.error(.badRequest, "request body is not valid \(coding.rawValue)", requestID: context.requestID))
            }
        }
    }

    // MARK: response

    public func onResponse(_ response: inout HTTPResponse, context: inout RequestContext) {
        let code = response.status.code
        guard code >= 200, code != 204, code != 304, code != 206 else { return }
        let fields = response.headerFields
        if let encoding = fields[.contentEncoding], encoding.lowercased() != "identity" { return }
        guard let type = fields[.contentType], compressible(type) else { return }
        if let length = fields[.contentLength].flatMap({ Int($0) }), length < configuration.minSize { return }
        if CacheControl(fields: fields).noTransform { return }
        // The response depends on Accept-Encoding from here on, compressed for this client or not.
        if !varies(fields) { response.headerFields.append(HTTPField(name: .vary, value: "Accept-Encoding")) }
        guard let coding = context[ChosenCoding.self] else { return }
        let level = coding == .br ? configuration.brotliQuality : configuration.gzipLevel
        let length = fields[.contentLength].flatMap { Int($0) }
        guard let filter = CompressingFilter(coding: coding, level: level, length: length) else { return }
        response.headerFields[.contentEncoding] = coding.rawValue
        response.headerFields[.contentLength] = nil
        if let etag = fields[.eTag], !etag.hasPrefix("W/") { response.headerFields[.eTag] = "W/" + etag }
        context.responseFilters.append(filter)
    }

    private func varies(_ fields: HTTPFields) -> Bool {
        fields[values: .vary].contains { value in
            value.split(separator: ",").contains { item in
                let name = item.trimmingCharacters(in: " \t")
                return name == "*" || name.lowercased() == "accept-encoding"
            }
        }
    }

    /// Whether a `Content-Type` is one of the configured media types.
    func compressible(_ contentType: String) -> Bool {
        let media = (contentType.split(separator: ";").first.map(String.init) ?? contentType)
            .trimmingCharacters(in: " \t").lowercased()
        for pattern in configuration.contentTypes {
            if pattern == media { return true }
            if pattern.hasSuffix("/*"), media.hasPrefix(pattern.dropLast()) { return true }
        }
        // Structured syntax suffixes: application/problem+json is JSON.
        if media.hasSuffix("+json") { return configuration.contentTypes.contains("application/json") }
        if media.hasSuffix("+xml") { return configuration.contentTypes.contains("application/xml") }
        return false
    }
}

/// The coding chosen for this request's response (none: identity).
enum ChosenCoding: ContextKey {
    typealias Value = ContentCoding
}

extension StringProtocol {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var text = Substring(self)
        while let first = text.first, set.contains(first) { text = text.dropFirst() }
        while let last = text.last, set.contains(last) { text = text.dropLast() }
        return String(text)
    }
}
