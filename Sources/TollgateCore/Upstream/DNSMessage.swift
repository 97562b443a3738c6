/// The parts of the DNS wire format (RFC 1035) a gateway needs to learn a name's addresses and how
/// long they may be kept: an A or AAAA query, and the address records of an answer with their TTLs.
public enum DNSMessage {
    public enum RecordType: UInt16, Sendable {
        case a = 1
        case aaaa = 28
    }

    public struct Record: Sendable, Equatable {
        public var type: RecordType
        /// Seconds.
        public var ttl: UInt32
        /// 4 bytes (A) or 16 (AAAA).
        public var address: [UInt8]

        public init(type: RecordType, ttl: UInt32, address: [UInt8]) {
            self.type = type
            self.ttl = ttl
            self.address = address
        }
    }

    public enum ParseError: Error, Equatable, Sendable {
        case truncated
        case notAnAnswer
        case wrongID
        case serverFailure(rcode: UInt8)
        case badName
    }

    /// A recursive query for `name`'s records of `type`.
    public static func query(id: UInt16, name: String, type: RecordType) -> [UInt8]? {
        var bytes: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xFF), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        let trimmed = name.hasSuffix(".") ? String(name.dropLast()) : name
        for label in trimmed.split(separator: ".", omittingEmptySubsequences: false) {
            let utf8 = Array(label.utf8)
            guard !utf8.isEmpty, utf8.count <= 63 else { return nil }
            bytes.append(UInt8(utf8.count))
            bytes.append(contentsOf: utf8)
        }
        guard bytes.count - 12 <= 254 else { return nil }
        bytes.append(0)
        bytes.append(contentsOf: [UInt8(type.rawValue >> 8), UInt8(type.rawValue & 0xFF), 0, 1])
        return bytes
    }

    /// The A and AAAA records of the answer to query `id` (CNAMEs and other records are skipped: a
    /// recursive resolver puts the final addresses in the same answer). An empty list is a name
    /// without such records; NXDOMAIN is too.
    public static func answers(_ bytes: [UInt8], id: UInt16) throws(ParseError) -> [Record] {
        guard bytes.count >= 12 else { throw .truncated }
        guard UInt16(bytes[0]) << 8 | UInt16(bytes[1]) == id else { throw .wrongID }
        guard bytes[2] & 0x80 != 0 else { throw .notAnAnswer }
        let rcode = bytes[3] & 0x0F
        if rcode == 3 { return [] }   // NXDOMAIN
        guard rcode == 0 else { throw .serverFailure(rcode: rcode) }
        let questions = Int(bytes[4]) << 8 | Int(bytes[5])
        let answers = Int(bytes[6]) << 8 | Int(bytes[7])
        var offset = 12
        for _ in 0..<questions {
            offset = try skipName(bytes, at: offset)
            offset += 4
        }
        var records: [Record] = []
        for _ in 0..<answers {
            offset = try skipName(bytes, at: offset)
            guard offset + 10 <= bytes.count else { throw .truncated }
            let type = UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
            let recordClass = UInt16(bytes[offset + 2]) << 8 | UInt16(bytes[offset + 3])
            let ttl = bytes[offset + 4..<offset + 8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            let length = Int(bytes[offset + 8]) << 8 | Int(bytes[offset + 9])
            offset += 10
            guard offset + length <= bytes.count else { throw .truncated }
            if recordClass == 1, let recordType = RecordType(rawValue: type),
               length == (recordType == .a ? 4 : 16) {
                records.append(Record(type: recordType, ttl: ttl, address: Array(bytes[offset..<offset + length])))
            }
            offset += length
        }
        return records
    }

    /// Past a (possibly compressed) name.
    static func skipName(_ bytes: [UInt8], at start: Int) throws(ParseError) -> Int {
        var offset = start
        while true {
            guard offset < bytes.count else { throw .truncated }
            let length = bytes[offset]
            if length == 0 { return offset + 1 }
            if length & 0xC0 == 0xC0 {
                guard offset + 1 < bytes.count else { throw .truncated }
                return offset + 2
            }
            guard length & 0xC0 == 0 else { throw .badName }
            offset += 1 + Int(length)
        }
    }
}
