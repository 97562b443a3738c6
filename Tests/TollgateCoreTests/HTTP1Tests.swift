import HTTPTypes
import NIOCore
import Testing
import TollgateCore

private func parse(_ text: String, kind: HeadParser.Kind = .request, maxURI: Int = 8 << 10,
                   maxHeader: Int = 32 << 10) -> (HeadParseResult, RawHead) {
    var head = RawHead()
    let parser = HeadParser(kind: kind, maxURILength: maxURI, maxHeaderSize: maxHeader)
    let result = parser.parse(ByteBuffer(string: text), into: &head)
    return (result, head)
}

private func parse(bytes: [UInt8]) -> HeadParseResult {
    var head = RawHead()
    return HeadParser(kind: .request).parse(ByteBuffer(bytes: bytes), into: &head)
}

@Suite struct HeadParserTests {
    /// Every byte value, at the start, inside and at the end of values of lengths around the
    /// parser's eight-byte steps: accepted exactly when RFC 9110 allows it in a field value (VCHAR,
    /// obs-text, SP, HTAB).
    @Test func fieldValueBytesAgreeWithTheGrammar() {
        for length in [1, 2, 7, 8, 9, 15, 16, 17, 23, 24, 25] {
            for position in Set([0, length / 2, length - 1]) {
                for byte in 0...255 {
                    var value = [UInt8](repeating: UInt8(ascii: "v"), count: length)
                    value[position] = UInt8(byte)
                    let allowed = byte >= 0x20 && byte != 0x7F || byte == 0x09
                    let accepted = parse(bytes: Array("GET / HTTP/1.1\r\nX: ".utf8) + value + Array("\r\n\r\n".utf8))
                        == .complete(consumed: 19 + length + 4)
                    #expect(accepted == allowed, "byte \(byte) at \(position) of \(length)")
                }
            }
        }
    }

    /// The same for field names, against the `tchar` set (a colon would only end the name early).
    @Test func fieldNameBytesAgreeWithTheGrammar() {
        let tchar = Set(Array("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8))
        for length in [1, 3, 4, 5, 8, 9, 13] {
            for position in Set([0, length / 2, length - 1]) {
                for byte in 0...255 where byte != Int(UInt8(ascii: ":")) {
                    var name = [UInt8](repeating: UInt8(ascii: "n"), count: length)
                    name[position] = UInt8(byte)
                    let result = parse(bytes: Array("GET / HTTP/1.1\r\n".utf8) + name + Array(": v\r\n\r\n".utf8))
                    let accepted = result == .complete(consumed: 16 + length + 7)
                    #expect(accepted == tchar.contains(UInt8(byte)), "byte \(byte) at \(position) of \(length)")
                }
            }
        }
    }

    @Test func parsesARequestHead() {
        let text = "\r\nGET /users/42?x=1 HTTP/1.1\r\nHost: example.com\r\nX-Request-ID:  abc \r\nContent-Length: 5\r\n\r\nhello"
        let (result, head) = parse(text)
        #expect(result == .complete(consumed: text.utf8.count - 5))
        #expect(head.methodString == "GET")
        #expect(head.method == .get)
        #expect(head.target == "/users/42?x=1")
        #expect(head.string(head.targetStart, head.queryStart) == "/users/42")
        #expect(head.minorVersion == 1)
        #expect(head.fields.count == 3)
        #expect(head.host == "example.com")
        #expect(head.requestIDIndex.map(head.value) == "abc")   // surrounding whitespace trimmed
        #expect(head.contentLength == 5)
        #expect(head.isKeepAlive)
        #expect(head.requestFramingProblem == nil)
        #expect(head.fields.map(\.kind) == [.host, .requestID, .contentLength])
    }

    @Test func parsesAResponseHead() {
        let text = "HTTP/1.0 404 Not Found\r\nConnection: keep-alive, X-Secret\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        let (result, head) = parse(text, kind: .response)
        #expect(result == .complete(consumed: text.utf8.count))
        #expect(head.status == 404)
        #expect(head.reason == "Not Found")
        #expect(head.minorVersion == 0)
        #expect(head.isKeepAlive)
        #expect(head.chunked)
        #expect(!head.onlyChunked)
        #expect(head.connection.listed == ["x-secret"])
        #expect(BodyFraming.response(head, toHead: false) == .chunked)
        #expect(BodyFraming.response(head, toHead: true) == .none)
    }

    @Test func statusLineWithoutReason() {
        let (result, head) = parse("HTTP/1.1 204\r\n\r\n", kind: .response)
        #expect(result == .complete(consumed: 16))
        #expect(head.status == 204)
        #expect(head.reason == "")
    }

    @Test func everyPrefixIsIncomplete() {
        let text = "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        for length in 0..<text.utf8.count {
            let prefix = String(decoding: Array(text.utf8.prefix(length)), as: UTF8.self)
            #expect(parse(prefix).0 == .incomplete, "prefix \(length)")
        }
        #expect(parse(text).0 == .complete(consumed: text.utf8.count))
    }

    @Test(arguments: [
        ("GET /x HTTP/1.1\r\nBad Header: x\r\n\r\n", "malformed header"),
        ("GET /x HTTP/1.1\r\nName : x\r\n\r\n", "malformed header"),
        ("GET /x HTTP/1.1\r\nA: b\r\n c\r\n\r\n", "malformed header"),          // obsolete line folding
        ("GET /x HTTP/1.1\r\nA: b\nC: d\r\n\r\n", "malformed header"),          // bare LF
        ("GET /x HTTP/1.1\r\nA: b\rc\r\n\r\n", "malformed header"),             // bare CR
        ("GET /x HTTP/1.1\r\nA: b\u{01}\r\n\r\n", "malformed header"),          // control byte
        ("GET /x HTTP/1.1\r\n: b\r\n\r\n", "malformed header"),
        ("GET /x HTTP/9.9\r\n\r\n", "invalid HTTP version"),
        ("GET /x HTTP/1.1 \r\n\r\n", "malformed request line"),
        ("GET  /x HTTP/1.1\r\n\r\n", "malformed request line"),
        ("NOT A REQUEST\r\n\r\n", "malformed request line"),
        ("G(T /x HTTP/1.1\r\n\r\n", "malformed request line"),
        ("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host"),
    ])
    func refusesMalformedHeads(_ text: String, _ message: String) {
        guard case .failed(let error) = parse(text).0 else {
            Issue.record("accepted: \(text)")
            return
        }
        #expect(error.status == 400)
        #expect(error.message == message)
    }

    @Test func framingProblems() {
        #expect(parse("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").1.requestFramingProblem
                == "both Content-Length and Transfer-Encoding")
        #expect(parse("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n").1.requestFramingProblem
                == "conflicting Content-Length values")
        #expect(parse("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n").1.requestFramingProblem == nil)
        #expect(parse("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").1.requestFramingProblem == "invalid Content-Length")
        #expect(parse("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n").1.requestFramingProblem
                == "invalid Content-Length")
        #expect(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n").1.requestFramingProblem
                == "unsupported Transfer-Encoding")
        #expect(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n").1.requestFramingProblem
                == "unsupported Transfer-Encoding")
        #expect(parse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").1.requestFramingProblem
                == "Transfer-Encoding in an HTTP/1.0 request")
        #expect(parse("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n").1.requestFramingProblem == nil)
    }

    @Test func limits() {
        #expect(parse("GET /" + String(repeating: "a", count: 200) + " HTTP/1.1\r\n\r\n", maxURI: 128).0 == .failed(.uriTooLong))
        // Too long before the line has even ended.
        #expect(parse("GET /" + String(repeating: "a", count: 200), maxURI: 128).0 == .failed(.uriTooLong))
        #expect(parse("GET / HTTP/1.1\r\nX: " + String(repeating: "b", count: 300) + "\r\n\r\n", maxHeader: 256).0
                == .failed(.headerTooLarge))
        #expect(parse("GET / HTTP/1.1\r\nX: " + String(repeating: "b", count: 300), maxHeader: 256).0 == .failed(.headerTooLarge))
        let many = (0..<300).map { "A\($0): b\r\n" }.joined()
        #expect(parse("GET / HTTP/1.1\r\n" + many + "\r\n").0 == .failed(.headerTooLarge))
    }

    @Test func connectionTokensAndKeepAlive() {
        #expect(!parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").1.isKeepAlive)
        #expect(!parse("GET / HTTP/1.0\r\n\r\n").1.isKeepAlive)
        #expect(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").1.isKeepAlive)
        let upgrade = parse("GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n").1
        #expect(upgrade.isUpgrade)
        #expect(!parse("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").1.isUpgrade)
    }

    /// Names and the values the parser reads are compared without regard to case, eight bytes at a
    /// time; a name that differs in one byte anywhere (a `_` for a `-` included) is just another field.
    @Test func fieldKindsIgnoreCaseAndNothingElse() {
        let upper = parse("POST / HTTP/1.1\r\nHOST: a\r\nCONTENT-LENGTH: 5\r\nCONNECTION: CLOSE\r\nX-FORWARDED-FOR: 1.2.3.4\r\n\r\n").1
        #expect(upper.hostIndex == 0)
        #expect(upper.contentLength == 5)
        #expect(!upper.isKeepAlive)
        #expect(upper.fields.map(\.kind) == [.host, .contentLength, .connection, .xForwardedFor])
        let chunked = parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n").1
        #expect(chunked.chunked && chunked.onlyChunked)
        #expect(parse("GET / HTTP/1.0\r\nConnection: KEEP-ALIVE\r\n\r\n").1.isKeepAlive)
        for near in ["Content_Length", "Content-Lengtx", "Xontent-Length", "Content-Lengthh", "Content-Lengt",
                     "Transfer-Encodinf", "Connectioo", "Hos"] {
            let head = parse("POST / HTTP/1.1\r\nHost: a\r\n\(near): 5\r\n\r\n").1
            #expect(head.fields.last?.kind == .other, "\(near)")
            #expect(head.contentLength == nil)
        }
        #expect(!parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkee\r\n\r\n").1.chunked)
    }

    @Test func reusesTheFieldArray() {
        var head = RawHead()
        let parser = HeadParser(kind: .request)
        #expect(parser.parse(ByteBuffer(string: "GET /a HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n"), into: &head) == .complete(consumed: 31))
        #expect(head.fields.count == 2)
        #expect(parser.parse(ByteBuffer(string: "GET /b HTTP/1.1\r\nC: 3\r\n\r\n"), into: &head) == .complete(consumed: 25))
        #expect(head.fields.count == 1)
        #expect(head.name(0) == "C")
        #expect(head.target == "/b")
        #expect(head.contentLength == nil)
    }
}

@Suite struct BodyDecoderTests {
    /// Feeds `input` in pieces of `step` bytes and collects the body and trailers.
    private func decode(_ framing: BodyFraming, _ input: String, step: Int) throws -> (body: String, trailers: String?, rest: String) {
        var decoder = BodyDecoder(framing)
        var pending = ByteBuffer()
        var body = ""
        var trailers: String?
        var ended = false
        let bytes = Array(input.utf8)
        var offset = 0
        while offset < bytes.count || !ended {
            if offset < bytes.count {
                pending.writeBytes(bytes[offset..<min(offset + step, bytes.count)])
                offset += step
            }
            while let event = try decoder.next(&pending) {
                switch event {
                case .data(let data): body += String(buffer: data)
                case .end(let trailerBytes):
                    trailers = trailerBytes.map { String(buffer: $0) }
                    ended = true
                }
            }
            if offset >= bytes.count && !ended { break }
        }
        #expect(ended)
        return (body, trailers, String(buffer: pending))
    }

    @Test(arguments: [1, 2, 7, 1000])
    func chunkedBodies(step: Int) throws {
        let input = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 1\r\n\r\nGET /next"
        let result = try decode(.chunked, input, step: step)
        #expect(result.body == "hello world")
        #expect(result.trailers == "X-Sum: 1\r\n")
        #expect(result.rest == "GET /next")
    }

    @Test(arguments: [1, 3, 1000])
    func lengthBodies(step: Int) throws {
        let result = try decode(.length(5), "helloGET", step: step)
        #expect(result.body == "hello")
        #expect(result.trailers == nil)
        #expect(result.rest == "GET")
    }

    @Test func emptyBodiesEndAtOnce() throws {
        var empty = ByteBuffer()
        var none = BodyDecoder(.none)
        guard case .end(nil) = try none.next(&empty) else { Issue.record("no end"); return }
        #expect(try none.next(&empty) == nil)
        var zero = BodyDecoder(.length(0))
        guard case .end = try zero.next(&empty) else { Issue.record("no end"); return }
    }

    @Test(arguments: ["zz\r\n", "5\r\nhelloXX", "\r\n", "fffffffffffffffff\r\n", "5\nhello\r\n", "5;a\nb\r\n"])
    func refusesBadChunks(_ input: String) {
        var decoder = BodyDecoder(.chunked)
        var buffer = ByteBuffer(string: input)
        #expect(throws: BodyDecodingError.self) {
            while try decoder.next(&buffer) != nil {}
        }
    }

    @Test func trailerSectionIsBounded() {
        var decoder = BodyDecoder(.chunked, maxTrailerBytes: 64)
        var buffer = ByteBuffer(string: "0\r\nX: " + String(repeating: "y", count: 100) + "\r\n\r\n")
        #expect(throws: BodyDecodingError.trailersTooLarge) {
            while try decoder.next(&buffer) != nil {}
        }
    }
}

@Suite struct HeadWriterTests {
    let forwarding = ForwardingValues(clientIP: "10.0.0.9", forwardedElement: "for=10.0.0.9;proto=http",
                                      via: "1.1 tollgate", requestIDName: "X-Request-ID")

    @Test func forwardedRequestDropsHopByHopAndAppendsThisHop() {
        let (_, head) = parse("""
            GET /old HTTP/1.1\r
            Host: api.example.com\r
            Accept: */*\r
            Connection: keep-alive, X-Hop\r
            X-Hop: secret\r
            Keep-Alive: timeout=5\r
            X-Forwarded-For: 1.2.3.4\r
            X-Forwarded-Proto: https\r
            Via: 1.0 edge\r
            Content-Length: 0\r
            \r

            """)
        var out = ByteBuffer()
        HeadWriter.writeRequest(head, target: "/new?q=1", host: "backend:8080", forwarding: forwarding, requestID: "rid", into: &out)
        #expect(String(buffer: out) == """
            GET /new?q=1 HTTP/1.1\r
            Accept: */*\r
            Content-Length: 0\r
            host: backend:8080\r
            x-forwarded-for: 1.2.3.4, 10.0.0.9\r
            x-forwarded-proto: http\r
            x-forwarded-host: api.example.com\r
            forwarded: for=10.0.0.9;proto=http;host="api.example.com"\r
            via: 1.0 edge, 1.1 tollgate\r
            X-Request-ID: rid\r
            \r

            """)
    }

    /// Ids and trace ids are written as hex from a table of digit pairs: every digit value in every
    /// position, the edges and random values agree with `String(_:radix:)`.
    @Test func hexDigitsAgreeWithStringRadix() {
        var values: [UInt64] = [0, 1, 9, 10, 15, 16, .max, 0x8000_0000_0000_0000, 0x0123_4567_89AB_CDEF, 0xA9A9_9A9A_F0F0_0F0F]
        for shift in stride(from: 0, to: 64, by: 4) {
            for digit in UInt64(0)...15 { values.append(digit << UInt64(shift)) }
        }
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<1000 { values.append(generator.next()) }
        for value in values {
            let text = String(unsafeUninitializedCapacity: 16) { buffer in
                TraceContext.writeHex(value, into: buffer, at: 0)
                return 16
            }
            let expected = String(repeating: "0", count: 16 - String(value, radix: 16).count) + String(value, radix: 16)
            #expect(text == expected)
        }
    }

    /// A generated request id is written from its bits as 32 lowercase hex digits, the same text
    /// `string` gives; an id given as text is written as it is.
    @Test func generatedRequestIDsAreWrittenAsHex() {
        let (_, head) = parse("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        let id = RequestID(high: 0x0123_4567_89AB_CDEF, low: 0xFEDC_BA98_7654_3210)
        #expect(id.string == "0123456789abcdeffedcba9876543210")
        #expect(id.utf8Count == 32)
        #expect(id.withUTF8 { Array($0) } == Array(id.string.utf8))
        #expect(id != RequestID(high: 1, low: 0x0123_4567_89AB_CDEF))
        var out = ByteBuffer()
        HeadWriter.writeRequest(head, target: "/", host: "b", forwarding: forwarding, requestID: id, into: &out)
        #expect(String(buffer: out).contains("X-Request-ID: 0123456789abcdeffedcba9876543210\r\n"))
        var response = ByteBuffer()
        let (_, upstream) = parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", kind: .response)
        HeadWriter.writeResponse(upstream, clientMinorVersion: 1, via: "1.1 tollgate", requestIDName: "x-request-id",
                                 requestID: RequestID("client-7"), extra: [], dropTransferEncoding: false, addChunked: false,
                                 connection: .keepAlive, into: &response)
        #expect(String(buffer: response).contains("x-request-id: client-7\r\n"))
        var context = RequestContext(requestID: id, clientIP: "1.2.3.4")
        #expect(context.requestID == id.string)
        context.requestID = "other"
        #expect(context.id == RequestID("other"))
    }

    /// Plugins' field edits: removed names (any case) are skipped while the lines are copied, added
    /// fields come after the forwarding ones.
    @Test func forwardedRequestAppliesFieldEdits() {
        let (_, head) = parse("GET /a HTTP/1.1\r\nHost: h\r\nX-API-Key: secret\r\nx-consumer-id: spoofed\r\nAccept: */*\r\n\r\n")
        var edits = FieldEdits()
        edits.remove(HTTPField.Name("X-Api-Key")!)
        edits.set(HTTPField.Name("X-Consumer-ID")!, "u-1")
        var out = ByteBuffer()
        HeadWriter.writeRequest(head, target: "/a", host: "b", forwarding: forwarding, requestID: "rid", edits: edits, into: &out)
        let text = String(buffer: out)
        #expect(!text.contains("secret") && !text.contains("spoofed"))
        #expect(text.contains("Accept: */*\r\n"))
        #expect(text.hasSuffix("X-Request-ID: rid\r\nX-Consumer-ID: u-1\r\n\r\n"))
    }

    @Test func responseKeepsEndToEndFieldsAsTheyCame() {
        let (_, head) = parse("HTTP/1.1 200 OK\r\nServer: up\r\nTransfer-Encoding: chunked\r\nX-Request-ID: given\r\nConnection: close\r\n\r\n",
                              kind: .response)
        var out = ByteBuffer()
        HeadWriter.writeResponse(head, clientMinorVersion: 0, via: "1.1 tollgate", requestIDName: "X-Request-ID", requestID: "rid",
                                 extra: [HTTPField(name: HTTPField.Name("Deprecation")!, value: "@1")],
                                 dropTransferEncoding: true, addChunked: false, connection: .close, into: &out)
        #expect(String(buffer: out) == """
            HTTP/1.0 200 OK\r
            Server: up\r
            X-Request-ID: given\r
            via: 1.1 tollgate\r
            Deprecation: @1\r
            connection: close\r
            \r

            """)
    }

    /// Fields a hook reads from the client's head: the first non-empty one of the first name found,
    /// any case; nil when none.
    @Test func firstValueOfNamesInPlace() {
        let (_, head) = parse("GET /a HTTP/1.1\r\nHost: h\r\nx-api-key:\r\nX-Token: t1\r\nX-API-KEY:  k1 \r\nx-api-key: k2\r\n\r\n")
        let key = HTTPField.Name("X-API-Key")!, token = HTTPField.Name("X-Token")!
        func first(_ names: [HTTPField.Name]) -> String? {
            head.withFirstValue(of: names) { String(decoding: $0, as: UTF8.self) }
        }
        #expect(first([key]) == "k1")
        #expect(first([key, token]) == "k1")
        #expect(first([token, key]) == "t1")
        #expect(first([HTTPField.Name("X-Missing")!]) == nil)
        #expect(first([]) == nil)
    }

    /// Edits keep their rendered lines in step with their fields, through sets and removals.
    @Test func fieldEditsRenderTheirAddedFields() {
        var edits = FieldEdits()
        let a = HTTPField.Name("X-A")!, b = HTTPField.Name("X-B")!
        edits.set(a, "1")
        edits.append([HTTPField(name: b, value: "two words")])
        #expect(String(decoding: edits.addedLines, as: UTF8.self) == "X-A: 1\r\nX-B: two words\r\n")
        edits.set(a, "3")
        #expect(String(decoding: edits.addedLines, as: UTF8.self) == "X-B: two words\r\nX-A: 3\r\n")
        edits.remove(b)
        #expect(String(decoding: edits.addedLines, as: UTF8.self) == "X-A: 3\r\n")
        #expect(edits.removed == [a, b])
        let (_, head) = parse("GET /a HTTP/1.1\r\nHost: h\r\nX-B: client\r\n\r\n")
        var out = ByteBuffer()
        HeadWriter.writeRequest(head, target: "/a", host: "b", forwarding: forwarding, requestID: "rid", edits: edits, into: &out)
        #expect(String(buffer: out).hasSuffix("X-Request-ID: rid\r\nX-A: 3\r\n\r\n"))
        #expect(!String(buffer: out).contains("client"))
        // Names are matched in any case, and names too long for the packed form still are.
        let long = String(repeating: "x", count: 300)
        edits.remove(HTTPField.Name(long)!)
        #expect(Array("x-a".utf8).withUnsafeBytes { edits.removes($0) })
        #expect(!Array("X-C".utf8).withUnsafeBytes { edits.removes($0) })
        #expect(Array(long.uppercased().utf8).withUnsafeBytes { edits.removes($0) } == false, "checked through the list")
        let (_, other) = parse("GET /a HTTP/1.1\r\nHost: h\r\nx-b: client\r\n\(long.uppercased()): secret\r\nKeep: me\r\n\r\n")
        var second = ByteBuffer()
        HeadWriter.writeRequest(other, target: "/a", host: "b", forwarding: forwarding, requestID: "rid", edits: edits, into: &second)
        #expect(!String(buffer: second).contains("client") && !String(buffer: second).contains("secret"))
        #expect(String(buffer: second).contains("Keep: me\r\n"))
    }

    /// Header lines written as bytes by response hooks: decimals of every width, and the lines land
    /// after the upstream's fields.
    @Test func headerLinesAndDecimals() {
        var lines = HeaderLines(buffer: ByteBuffer())
        let prefix = HeaderLines.prefix(HTTPField.Name("X-N")!)
        for value in [0, 7, 10, 99, 100, 12_345, Int.max, -5] {
            lines.write(reserving: prefix.count + 21) { out in
                out.put(prefix)
                out.putDecimal(value)
                out.put("\r\n")
            }
        }
        lines.add(HTTPField(name: HTTPField.Name("X-F")!, value: "v"))
        #expect(String(buffer: lines.buffer) == "X-N: 0\r\nX-N: 7\r\nX-N: 10\r\nX-N: 99\r\nX-N: 100\r\nX-N: 12345\r\n"
                + "X-N: \(Int.max)\r\nX-N: 0\r\nX-F: v\r\n")
        #expect(HeaderLines.isLegalValue("\"10/s\";q=10;w=1".utf8))
        #expect(!HeaderLines.isLegalValue("a\r\nb".utf8))
        let (_, head) = parse("HTTP/1.1 200 OK\r\nServer: up\r\n\r\n", kind: .response)
        var out = ByteBuffer()
        HeadWriter.writeResponse(head, clientMinorVersion: 1, via: "1.1 tollgate", requestIDName: "X-Request-ID", requestID: "rid",
                                 extra: [], lines: ByteBuffer(string: "X-Limit: 1\r\n"), dropTransferEncoding: false,
                                 addChunked: false, connection: .none, into: &out)
        #expect(String(buffer: out) == "HTTP/1.1 200 OK\r\nServer: up\r\nvia: 1.1 tollgate\r\nX-Request-ID: rid\r\nX-Limit: 1\r\n\r\n")
    }

    @Test func chunkHeaders() {
        for (length, hex) in [(1, "1"), (15, "f"), (16, "10"), (4096, "1000"), (0x7fff_ffff, "7fffffff")] {
            var out = ByteBuffer()
            HeadWriter.writeChunkHeader(length, into: &out)
            #expect(String(buffer: out) == hex + "\r\n")
        }
    }
}
