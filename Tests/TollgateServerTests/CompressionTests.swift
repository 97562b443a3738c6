import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TollgateTesting

/// The compression plugin through the proxy; bodies are decoded by independent decoders (Python's
/// zlib/gzip and the brotli module), which also act as the HTTP client.
@Suite struct CompressionTests {
    /// A text body that compresses well but not trivially.
    static let text: String = (0..<600).map { #"{"id":\#($0),"name":"item \#($0 * 7919 % 1000)","tags":["a","b"]},"# }.joined()

    static func origin(_ request: StubRequest) -> StubResponse {
        let path = String(request.head.uri.split(separator: "?").first ?? "")
        var headers = HTTPHeaders([("Content-Type", "application/json; charset=utf-8")])
        switch path {
        case "/small": return StubResponse(headers: headers, body: .bytes("{\"ok\":true}"))
        case "/png":
            headers.replaceOrAdd(name: "Content-Type", value: "image/png")
        case "/encoded":
            headers.add(name: "Content-Encoding", value: "gzip")
            return StubResponse(headers: headers, body: .bytes("not really gzip, passed on untouched"))
        case "/notransform":
            headers.add(name: "Cache-Control", value: "no-transform")
        case "/etag":
            headers.add(name: "ETag", value: "\"abc\"")
        case "/stream":
            headers.replaceOrAdd(name: "Content-Type", value: "text/plain")
            return StubResponse(headers: headers, body: .stream(count: 3 << 20, chunked: true))
        case "/cached":
            headers.add(name: "Cache-Control", value: "max-age=60")
            headers.add(name: "X-Upstream", value: "yes")
        case "/echo-length":
            return StubResponse(headers: headers, body: .bytes("{\"received\":\(request.bodyLength),\"md5\":\"\(request.bodyString.utf8.count)\"}"))
        default: break
        }
        return StubResponse(headers: headers, body: .bytes(text))
    }

    static func config(_ plugins: String = "[{name: compression, config: {encodings: [br, gzip, deflate]}}]") -> String {
        """
        services:
          api: {targets: [{url: "$UPSTREAM0"}]}
        routes:
          - match: {paths: ["/*"]}
            service: api
            plugins: \(plugins)
        """
    }

    struct Fetched: Sendable {
        var status: Int
        var headers: [String: String]
        /// The body as it came, and decoded by its Content-Encoding.
        var rawLength: Int
        var body: Data
        var chunked: Bool
    }

    struct Request: Sendable {
        var path: String
        var method = "GET"
        var headers: [String: String] = [:]
        var body: Data?
    }

    /// One request through Python's http.client; the body decoded with zlib / gzip / brotli.
    static func fetch(_ port: Int, _ path: String, method: String = "GET", headers: [String: String] = [:],
                      body: Data? = nil) async throws -> Fetched {
        try await fetchAll(port, [Request(path: path, method: method, headers: headers, body: body)])[0]
    }

    /// Several requests in order, from one Python process (a process per request would load the machine).
    static func fetchAll(_ port: Int, _ requests: [Request]) async throws -> [Fetched] {
        let list: [[String: Any]] = requests.map {
            ["path": $0.path, "method": $0.method, "headers": $0.headers, "body": $0.body?.base64EncodedString() ?? ""]
        }
        let script = #"""
        import base64, brotli, gzip, http.client, json, sys, zlib
        job = json.load(sys.stdin)
        out = []
        for r in job["requests"]:
            c = http.client.HTTPConnection("127.0.0.1", job["port"], timeout=10)
            body = base64.b64decode(r["body"]) if r["body"] else None
            c.request(r["method"], r["path"], body=body, headers=r["headers"])
            resp = c.getresponse()
            raw = resp.read()
            enc = resp.getheader("Content-Encoding", "")
            try:
                if enc == "gzip": data = gzip.decompress(raw)
                elif enc == "br": data = brotli.decompress(raw)
                elif enc == "deflate": data = zlib.decompress(raw)
                else: data = raw
            except Exception:
                data = raw   # not what it claims (the test's fake gzip body)
            out.append({"status": resp.status, "headers": {k.lower(): v for k, v in resp.getheaders()},
                        "raw_length": len(raw), "body": base64.b64encode(data).decode(), "chunked": resp.chunked})
            c.close()
        print(json.dumps(out))
        """#
        let input = try JSONSerialization.data(withJSONObject: ["port": port, "requests": list] as [String: Any])
        let output = try await Python.run(script, input: input)
        let answers = try JSONSerialization.jsonObject(with: Data(output.utf8)) as! [[String: Any]]
        return answers.map { json in
            Fetched(status: json["status"] as! Int, headers: json["headers"] as! [String: String],
                    rawLength: json["raw_length"] as! Int, body: Data(base64Encoded: json["body"] as! String)!,
                    chunked: json["chunked"] as! Bool)
        }
    }

    @Test func roundTrips() async throws {
        let cases = [("gzip", "gzip"), ("br;q=1, gzip;q=0.8", "br"), ("deflate", "deflate"), ("gzip;q=0.2, deflate;q=0.9", "deflate"),
                     ("*", "br"), ("br;q=0, *;q=0.5", "gzip")]
        try await Harness.with(Self.config(), upstreams: [Self.origin]) { harness in
            let answers = try await Self.fetchAll(harness.port, cases.map { Request(path: "/text", headers: ["Accept-Encoding": $0.0]) })
            for ((accept, expected), answer) in zip(cases, answers) {
                #expect(answer.status == 200)
                #expect(answer.headers["content-encoding"] == expected, "\(accept)")
                #expect(answer.headers["vary"]?.lowercased().contains("accept-encoding") == true)
                #expect(answer.headers["content-length"] == nil && answer.chunked)
                #expect(String(decoding: answer.body, as: UTF8.self) == Self.text, "\(accept)")
                #expect(answer.rawLength < Self.text.utf8.count / 4, "\(accept): \(answer.rawLength)")
            }
        }
    }

    @Test func whatIsLeftAlone() async throws {
        try await Harness.with(Self.config(), upstreams: [Self.origin]) { harness in
            let gzip = ["Accept-Encoding": "gzip, br"]
            let answers = try await Self.fetchAll(harness.port, [
                Request(path: "/text"),
                Request(path: "/small", headers: gzip),
                Request(path: "/png", headers: gzip),
                Request(path: "/encoded", headers: ["Accept-Encoding": "br"]),
                Request(path: "/notransform", headers: gzip),
                Request(path: "/text", method: "HEAD", headers: gzip),
                Request(path: "/text", headers: ["Accept-Encoding": "gzip", "Range": "bytes=0-9"]),
                Request(path: "/etag", headers: gzip),
                Request(path: "/text", headers: ["Accept-Encoding": "gzip;q=0, br;q=0"]),
            ])
            let (identity, small, png, encoded, noTransform, head, range, etag, rejected) =
                (answers[0], answers[1], answers[2], answers[3], answers[4], answers[5], answers[6], answers[7], answers[8])
            #expect(identity.headers["content-encoding"] == nil && identity.headers["vary"] == "Accept-Encoding")
            #expect(String(decoding: identity.body, as: UTF8.self) == Self.text)
            #expect(small.headers["content-encoding"] == nil && small.headers["content-length"] == "11")
            #expect(png.headers["content-encoding"] == nil && png.headers["vary"] == nil)
            #expect(encoded.headers["content-encoding"] == "gzip" && encoded.rawLength == 36)   // not compressed twice
            #expect(noTransform.headers["content-encoding"] == nil)
            #expect(head.headers["content-encoding"] == nil && head.rawLength == 0)
            #expect(range.headers["content-encoding"] == nil)
            #expect(etag.headers["etag"] == "W/\"abc\"" && etag.headers["content-encoding"] == "br")
            #expect(rejected.headers["content-encoding"] == nil)
        }
    }

    /// An HTTP/1.0 client cannot take chunks: the compressed body ends with the connection.
    @Test func http10ClientsGetACompressedBodyDelimitedByClose() async throws {
        try await Harness.with(Self.config(), upstreams: [Self.origin]) { harness in
            let answer = try await harness.send("GET /text HTTP/1.0\r\nHost: t\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\r\n")
            #expect(answer.statuses == [200])
            #expect(answer.text.header("content-encoding") == "gzip")
            #expect(answer.text.header("transfer-encoding") == nil && answer.text.header("content-length") == nil)
            #expect(answer.text.header("connection") == "close")
            #expect(answer.closedByServer)
        }
    }

    /// The upstream's other fields are copied as they came; only what compression changes differs,
    /// and a chunked upstream body is framed once.
    @Test func onlyTheChangedFieldsDiffer() async throws {
        try await Harness.with(Self.config(), upstreams: [Self.origin]) { harness in
            let plain = try await harness.get("/etag")
            let compressed = try await harness.get("/etag", headers: ["Accept-Encoding: gzip"])
            #expect(plain.text.header("content-encoding") == nil && plain.text.header("etag") == "\"abc\"")
            #expect(plain.text.header("content-length") != nil && plain.text.header("vary") == "Accept-Encoding")
            #expect(compressed.text.header("content-encoding") == "gzip" && compressed.text.header("etag") == "W/\"abc\"")
            #expect(compressed.text.header("content-type") == "application/json; charset=utf-8")
            #expect(compressed.text.header("via") == "1.1 tollgate" && compressed.text.header("x-request-id") != nil)
            let streamed = try await harness.send("GET /stream HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n")
            let head = streamed.text.components(separatedBy: "\r\n\r\n")[0].lowercased()
            #expect(head.components(separatedBy: "transfer-encoding").count == 2, "\(head)")
            #expect(head.contains("content-encoding: gzip"))
        }
    }

    /// A 3 MB streamed body is compressed as it streams and decodes to what the upstream sent.
    @Test func streamsLargeBodies() async throws {
        try await Harness.with(Self.config(), upstreams: [Self.origin]) { harness in
            for coding in ["gzip", "br"] {
                let answer = try await Self.fetch(harness.port, "/stream", headers: ["Accept-Encoding": coding])
                #expect(answer.headers["content-encoding"] == coding)
                #expect(answer.body.count == 3 << 20 && answer.body.allSatisfy { $0 == UInt8(ascii: "x") })
                #expect(answer.rawLength < 64 << 10)
            }
        }
    }

    /// The cache stores each coding's variant: a hit is served as stored, never compressed again.
    @Test func cacheKeepsOneVariantPerCoding() async throws {
        let plugins = "[{name: proxy-cache, config: {}}, {name: compression, config: {encodings: [br, gzip]}}]"
        try await Harness.with(Self.config(plugins), upstreams: [Self.origin]) { harness in
            let codings = ["br", "gzip", "identity"]
            var requests = codings.flatMap { coding in Array(repeating: Request(path: "/cached", headers: ["Accept-Encoding": coding]), count: 2) }
            // Clients that accept the same coding share its variant.
            requests.append(Request(path: "/cached", headers: ["Accept-Encoding": "gzip, deflate;q=0.5"]))
            let answers = try await Self.fetchAll(harness.port, requests)
            for (index, coding) in codings.enumerated() {
                let (first, second) = (answers[index * 2], answers[index * 2 + 1])
                #expect(first.headers["x-cache"] == "MISS" && second.headers["x-cache"] == "HIT", "\(coding)")
                let expected = coding == "identity" ? nil : coding
                #expect(first.headers["content-encoding"] == expected && second.headers["content-encoding"] == expected)
                #expect(String(decoding: second.body, as: UTF8.self) == Self.text, "\(coding)")
                #expect(second.rawLength == first.rawLength)
            }
            let other = answers[6]
            #expect(other.headers["x-cache"] == "HIT" && other.headers["content-encoding"] == "gzip")
            #expect(harness.upstreams[0].requests.count == 3)
        }
    }

    @Test func requestBodiesAreDecompressedWithinALimit() async throws {
        let plugins = "[{name: compression, config: {decompress_requests: true, max_decompressed_size: 64KB}}]"
        try await Harness.with(Self.config(plugins), upstreams: [Self.origin]) { harness in
            // 50 000 bytes, and a bomb: 10 MB of zeros in about 10 KB.
            let made = try await Python.run("""
                import gzip, base64
                print(base64.b64encode(gzip.compress(b"a" * 50000)).decode())
                print(base64.b64encode(gzip.compress(b"\\0" * (10 << 20))).decode())
                import zlib
                print(base64.b64encode(zlib.compress(b"z" * 3000)).decode())
                raw = zlib.compressobj(6, zlib.DEFLATED, -15)
                print(base64.b64encode(raw.compress(b"r" * 2000) + raw.flush()).decode())
                """).split(separator: "\n").map { Data(base64Encoded: String($0))! }
            let (body, bomb, zlibBody, rawBody) = (made[0], made[1], made[2], made[3])
            #expect(bomb.count < 20_000)
            let answers = try await Self.fetchAll(harness.port, [
                Request(path: "/echo-length", method: "POST", headers: ["Content-Encoding": "gzip", "Content-Type": "text/plain"], body: body),
                Request(path: "/echo-length", method: "POST", headers: ["Content-Encoding": "gzip"], body: bomb),
                Request(path: "/echo-length", method: "POST", headers: ["Content-Encoding": "gzip"], body: Data("not gzip".utf8)),
                Request(path: "/echo-length", method: "POST", headers: ["Content-Encoding": "zstd"], body: Data("x".utf8)),
                Request(path: "/text"),
                // "deflate" is the zlib format; raw deflate, which some clients send, is accepted too.
                Request(path: "/echo-length", method: "POST", headers: ["Content-Encoding": "deflate"], body: zlibBody),
                Request(path: "/echo-length", method: "POST", headers: ["Content-Encoding": "deflate"], body: rawBody),
            ])
            let (ok, refused, garbage, unknown, after) = (answers[0], answers[1], answers[2], answers[3], answers[4])
            #expect(String(decoding: answers[5].body, as: UTF8.self).contains(#""received":3000"#))
            #expect(String(decoding: answers[6].body, as: UTF8.self).contains(#""received":2000"#))
            #expect(ok.status == 200)
            #expect(String(decoding: ok.body, as: UTF8.self).contains(#""received":50000"#))
            let forwarded = harness.upstreams[0].requests.first { $0.head.uri == "/echo-length" }
            #expect(forwarded?.head.headers.first(name: "Content-Encoding") == nil)
            #expect(forwarded?.head.headers.first(name: "Content-Length") == "50000")
            #expect(refused.status == 413)
            #expect(String(decoding: refused.body, as: UTF8.self).contains("decompressed request body larger than"))
            #expect(garbage.status == 400)
            #expect(unknown.status == 415)
            #expect(after.status == 200)   // the gateway is still fine
            #expect(harness.upstreams[0].requests.filter { $0.head.uri == "/echo-length" }.count == 3)
        }
    }
}
