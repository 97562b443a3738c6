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
    let types: MediaTypes

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.supported = configuration.encodings.map(\.rawValue)
        self.types = MediaTypes(configuration.contentTypes)
    }

    public static let changesRequest = false
    /// The response fields it reads and changes (it never changes the status).
    public var responseFieldNames: [HTTPField.Name]? {
        [.contentEncoding, .contentType, .contentLength, .cacheControl, .eTag, .vary]
    }
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
        // The fields this needs, found in one pass (each lookup by name scans every field).
        let seen = ResponseFacts(response.headerFields)
        if let encoding = seen.contentEncoding, encoding.lowercased() != "identity" { return }
        guard let type = seen.contentType, compressible(type) else { return }
        if let length = seen.contentLength, length < configuration.minSize { return }
        if let cacheControl = seen.cacheControl, CacheControl(cacheControl).noTransform { return }
        // The response depends on Accept-Encoding from here on, compressed for this client or not.
        if !seen.variesByEncoding { response.headerFields.append(HTTPField(name: .vary, value: "Accept-Encoding")) }
        guard let coding = context[ChosenCoding.self] else { return }
        let level = coding == .br ? configuration.brotliQuality : configuration.gzipLevel
        guard let filter = CompressingFilter(coding: coding, level: level, length: seen.contentLength) else { return }
        if seen.contentEncoding != nil {
            response.headerFields[.contentEncoding] = coding.rawValue
        } else {
            response.headerFields.append(HTTPField(name: .contentEncoding, value: coding.rawValue))
        }
        if seen.contentLength != nil { response.headerFields[.contentLength] = nil }
        if let etag = seen.etag, !etag.hasPrefix("W/") { response.headerFields[.eTag] = "W/" + etag }
        context.responseFilters.append(filter)
    }

    /// What compression reads of a response's fields, in one pass over them.
    struct ResponseFacts {
        var contentEncoding: String?
        var contentType: String?
        var contentLength: Int?
        var cacheControl: String?
        var etag: String?
        var variesByEncoding = false

        init(_ fields: HTTPFields) {
            for field in fields {
                // Names are compared only when their lengths match (most fields match none).
                let name = field.name.canonicalName
                switch name.utf8.count {
                case 16 where name == "content-encoding": contentEncoding = field.value
                case 12 where name == "content-type": contentType = field.value
                case 14 where name == "content-length": contentLength = Int(field.value)
                case 13 where name == "cache-control":
                    cacheControl = cacheControl.map { $0 + "," + field.value } ?? field.value
                case 4 where name == "etag": etag = field.value
                case 4 where name == "vary":
                    for item in field.value.split(separator: ",") {
                        let token = item.trimmingCharacters(in: " \t")
                        if token == "*" || token.lowercased() == "accept-encoding" { variesByEncoding = true }
                    }
                default: break
                }
            }
        }
    }

    /// Whether a `Content-Type` is one of the configured media types: its media type (before any
    /// parameter, lowercased) among the exact ones, under a `type/*`, or (for `+json` and `+xml`)
    /// covered by JSON or XML. Read from the bytes: this runs on every response.
    func compressible(_ contentType: String) -> Bool {
        var text = contentType
        return text.withUTF8 { bytes in
            var start = 0
            var end = bytes.count
            if let semicolon = bytes.firstIndex(of: UInt8(ascii: ";")) { end = semicolon }
            while start < end && (bytes[start] == 0x20 || bytes[start] == 0x09) { start += 1 }
            while end > start && (bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09) { end -= 1 }
            let media = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[start..<end])
            for pattern in types.exact where ASCIICase.equals(media, pattern) { return true }
            for prefix in types.prefixes where ASCIICase.hasPrefix(media, prefix) { return true }
            if types.json && ASCIICase.hasSuffix(media, "+json") { return true }
            if types.xml && ASCIICase.hasSuffix(media, "+xml") { return true }
            return false
        }
    }

    /// The configured media types, sorted for matching once at load.
    struct MediaTypes: Sendable {
        var exact: [String] = []
        var prefixes: [String] = []
        var json = false
        var xml = false

        init(_ patterns: [String]) {
            for pattern in patterns {
                if pattern.hasSuffix("/*") { prefixes.append(String(pattern.dropLast())) } else { exact.append(pattern) }
            }
            json = exact.contains("application/json")
            xml = exact.contains("application/xml")
        }
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
