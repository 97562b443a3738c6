import Testing
import TollgateCore

@Suite struct DNSMessageTests {
    @Test func queryEncoding() {
        let query = DNSMessage.query(id: 0xBEEF, name: "api.example.com.", type: .aaaa)
        #expect(query == [0xBE, 0xEF, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
                          3, 0x61, 0x70, 0x69, 7, 0x65, 0x78, 0x61, 0x6D, 0x70, 0x6C, 0x65, 3, 0x63, 0x6F, 0x6D, 0,
                          0, 28, 0, 1])
        #expect(DNSMessage.query(id: 1, name: "a..b", type: .a) == nil)
        #expect(DNSMessage.query(id: 1, name: String(repeating: "x", count: 64), type: .a) == nil)
    }

    /// An answer with a CNAME, then two A records under compressed names: the addresses and TTLs.
    @Test func answerParsing() throws {
        var answer: [UInt8] = [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0]
        answer += [3, 0x61, 0x70, 0x69, 0, 0, 1, 0, 1]                                  // question: api A IN
        answer += [0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, 0x62, 0xC0, 16]           // CNAME (skipped)
        answer += [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 0, 7]                 // A 10.0.0.7, TTL 30
        answer += [0xC0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 10, 0, 0, 8]                 // A 10.0.0.8, TTL 300
        let records = try DNSMessage.answers(answer, id: 0x1234)
        #expect(records == [DNSMessage.Record(type: .a, ttl: 30, address: [10, 0, 0, 7]),
                            DNSMessage.Record(type: .a, ttl: 300, address: [10, 0, 0, 8])])
    }

    @Test func refusedAnswers() throws {
        let header: [UInt8] = [0x12, 0x34, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0]
        #expect(throws: DNSMessage.ParseError.wrongID) { try DNSMessage.answers(header, id: 1) }
        #expect(throws: DNSMessage.ParseError.truncated) { try DNSMessage.answers(Array(header.prefix(5)), id: 0x1234) }
        var query = header
        query[2] = 0x01
        #expect(throws: DNSMessage.ParseError.notAnAnswer) { try DNSMessage.answers(query, id: 0x1234) }
        var failure = header
        failure[3] = 0x82
        #expect(throws: DNSMessage.ParseError.serverFailure(rcode: 2)) { try DNSMessage.answers(failure, id: 0x1234) }
        var missing = header
        missing[3] = 0x83
        let none = try? DNSMessage.answers(missing, id: 0x1234)
        #expect(none == [])   // NXDOMAIN: no addresses
        var cut = header
        cut[7] = 1   // one answer announced, none there
        #expect(throws: DNSMessage.ParseError.truncated) { try DNSMessage.answers(cut, id: 0x1234) }
    }
}
