/// Dates for headers and config without Foundation's formatters (slow, and not on the request path).
public enum HTTPDate {
    private static let weekdays = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    static func days(year: Int, month: Int, day: Int) -> Int {
        Int(CivilDate.days(year: Int64(year), month: Int64(month), day: Int64(day)))
    }

    static func civil(days: Int) -> (year: Int, month: Int, day: Int) {
        let (year, month, day) = CivilDate.from(days: Int64(days))
        return (Int(year), Int(month), Int(day))
    }

    /// `2026-12-31` or `2026-12-31T23:59:59Z` (UTC only) to Unix seconds.
    public static func parseISO8601(_ text: String) -> Int64? {
        let chars = Array(text.utf8)
        func number(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= chars.count else { return nil }
            var value = 0
            for c in chars[from..<from + count] {
                guard c >= 48 && c <= 57 else { return nil }
                value = value * 10 + Int(c - 48)
            }
            return value
        }
        guard chars.count >= 10, chars[4] == 45, chars[7] == 45, let year = number(0, 4), let month = number(5, 2),
              let day = number(8, 2), (1...12).contains(month), (1...31).contains(day) else { return nil }
        var seconds = Int64(days(year: year, month: month, day: day)) * 86_400
        if chars.count == 10 { return seconds }
        guard chars.count == 20, chars[10] == 84 || chars[10] == 116, chars[13] == 58, chars[16] == 58,
              chars[19] == 90 || chars[19] == 122,
              let hour = number(11, 2), let minute = number(14, 2), let second = number(17, 2),
              hour < 24, minute < 60, second < 61 else { return nil }
        seconds += Int64(hour * 3600 + minute * 60 + second)
        return seconds
    }

    /// An HTTP date (RFC 9110 section 5.6.7) to Unix seconds: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37
    /// GMT`), and the obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6
    /// 08:49:37 1994`) forms. Nil for anything else.
    public static func parse(_ text: some StringProtocol) -> Int64? {
        let parts = String(text).split(whereSeparator: { (c: Character) in c == " " || c == "-" || c == "," }).map(String.init)
        func month(_ name: String) -> Int? { months.firstIndex { $0.lowercased() == name.lowercased() }.map { $0 + 1 } }
        func clock(_ text: String) -> (Int, Int, Int)? {
            let fields = text.split(separator: ":").compactMap { Int($0) }
            guard fields.count == 3, fields[0] < 24, fields[1] < 60, fields[2] < 61 else { return nil }
            return (fields[0], fields[1], fields[2])
        }
        var year = 0, monthNumber = 0, day = 0
        var time: (Int, Int, Int)?
        if parts.count == 6, parts[5] == "GMT", let d = Int(parts[1]), let m = month(parts[2]), let y = Int(parts[3]) {
            // IMF-fixdate, or RFC 850 with a two-digit year.
            day = d; monthNumber = m
            year = parts[3].count == 2 ? (y < 70 ? 2000 + y : 1900 + y) : y
            time = clock(parts[4])
        } else if parts.count == 5, let m = month(parts[1]), let d = Int(parts[2]), let y = Int(parts[4]) {
            day = d; monthNumber = m; year = y
            time = clock(parts[3])
        }
        guard let (hour, minute, second) = time, (1...31).contains(day), year >= 1900 else { return nil }
        return Int64(days(year: year, month: monthNumber, day: day)) * 86_400 + Int64(hour * 3600 + minute * 60 + second)
    }

    /// IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
    public static func format(unixSeconds: Int64) -> String {
        let days = Int(unixSeconds >= 0 ? unixSeconds / 86_400 : (unixSeconds - 86_399) / 86_400)
        let secondOfDay = Int(unixSeconds - Int64(days) * 86_400)
        let (year, month, day) = civil(days: days)
        let weekday = weekdays[((days % 7) + 7) % 7]
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(weekday), \(two(day)) \(months[month - 1]) \(year) \(two(secondOfDay / 3600)):\(two(secondOfDay / 60 % 60)):\(two(secondOfDay % 60)) GMT"
    }

    /// RFC 3339 with milliseconds: `2026-11-27T07:08:38.123Z`.
    public static func rfc3339(unixMillis: Int64) -> String {
        let seconds = unixMillis / 1000
        let millis = Int(unixMillis % 1000)
        let days = Int(seconds / 86_400)
        let secondOfDay = Int(seconds % 86_400)
        let (year, month, day) = civil(days: days)
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        let ms = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return "\(year)-\(two(month))-\(two(day))T\(two(secondOfDay / 3600)):\(two(secondOfDay / 60 % 60)):\(two(secondOfDay % 60)).\(ms)Z"
    }
}
