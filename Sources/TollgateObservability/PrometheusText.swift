/// Writing the Prometheus text format.
enum PrometheusText {
    static func header(_ name: String, type: String, help: String, into out: inout [UInt8]) {
        out.append(contentsOf: "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n".utf8)
    }

    static func sample(_ name: String, labels: [(String, String)], value: Double, into out: inout [UInt8]) {
        out.append(contentsOf: name.utf8)
        if !labels.isEmpty {
            out.append(UInt8(ascii: "{"))
            for (index, (label, text)) in labels.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                out.append(contentsOf: label.utf8)
                out.append(contentsOf: "=\"".utf8)
                for byte in text.utf8 {
                    switch byte {
                    case UInt8(ascii: "\\"): out.append(contentsOf: "\\\\".utf8)
                    case UInt8(ascii: "\""): out.append(contentsOf: "\\\"".utf8)
                    case 0x0A: out.append(contentsOf: "\\n".utf8)
                    default: out.append(byte)
                    }
                }
                out.append(UInt8(ascii: "\""))
            }
            out.append(UInt8(ascii: "}"))
        }
        out.append(0x20)
        if value == value.rounded(), abs(value) < 1e15 {
            Bytes.integer(Int64(value), into: &out)
        } else {
            out.append(contentsOf: "\(value)".utf8)
        }
        out.append(0x0A)
    }

    static func histogram(_ name: String, labels: [(String, String)], _ histogram: Histogram, bounds: [Double], into out: inout [UInt8]) {
        var cumulative: UInt64 = 0
        for (index, bound) in bounds.enumerated() {
            cumulative &+= histogram.buckets[index]
            sample(name + "_bucket", labels: labels + [("le", "\(bound)")], value: Double(cumulative), into: &out)
        }
        cumulative &+= histogram.buckets[bounds.count]
        sample(name + "_bucket", labels: labels + [("le", "+Inf")], value: Double(cumulative), into: &out)
        sample(name + "_sum", labels: labels, value: Double(histogram.sumNanos) / 1e9, into: &out)
        sample(name + "_count", labels: labels, value: Double(histogram.count), into: &out)
    }
}
