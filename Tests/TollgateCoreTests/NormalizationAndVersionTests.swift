import HTTPTypes
import Testing
import TollgateCore

@Suite struct PathNormalizerTests {
    @Test(arguments: [
        ("/", "/"), ("/a/b", "/a/b"), ("/a/b/", "/a/b/"), ("//a///b", "/a/b"), ("/a/./b", "/a/b"),
        ("/a/../b", "/b"), ("/../../a", "/a"), ("/a/b/..", "/a/"), ("/%61%62c", "/abc"), ("/a%2Fb", "/a%2Fb"),
        ("/a%2fb", "/a%2Fb"), ("/%2e%2e/x", "/x"), ("/a/%2E/b", "/a/b"), ("/a%20b", "/a%20b"), ("/~user", "/~user"),
        ("/a/..%2F..%2Fetc", "/a/..%2F..%2Fetc"),
    ])
    func normalizes(_ input: String, _ expected: String) throws {
        #expect(try PathNormalizer.normalize(Substring(input), mergeSlashes: true) == expected)
        // From a head's bytes (what the proxy uses), the same.
        #expect(try Array(input.utf8).withUnsafeBytes { try PathNormalizer.normalize(bytes: $0, mergeSlashes: true) } == expected)
    }

    @Test func keepsEmptySegmentsWhenAsked() throws {
        #expect(try PathNormalizer.normalize("//a//b", mergeSlashes: false) == "//a//b")
    }

    @Test func rejectsBadInput() throws {
        #expect(throws: PathNormalizer.Failure.notOriginForm) { try PathNormalizer.normalize("a/b", mergeSlashes: true) }
        #expect(throws: PathNormalizer.Failure.invalidPercentEncoding) { try PathNormalizer.normalize("/a%zz", mergeSlashes: true) }
        #expect(throws: PathNormalizer.Failure.invalidPercentEncoding) { try PathNormalizer.normalize("/a%2", mergeSlashes: true) }
        for (input, failure) in [("a/b", PathNormalizer.Failure.notOriginForm), ("", .notOriginForm), ("/a%zz", .invalidPercentEncoding),
                                 ("/a\u{01}b", .invalidCharacter)] {
            #expect(throws: failure) { try Array(input.utf8).withUnsafeBytes { try PathNormalizer.normalize(bytes: $0, mergeSlashes: true) } }
        }
        #expect(try Array("//a//b".utf8).withUnsafeBytes { try PathNormalizer.normalize(bytes: $0, mergeSlashes: false) } == "//a//b")
    }
}

@Suite struct VersionResolverTests {
    let snapshot: GatewaySnapshot

    init() throws {
        snapshot = try RouterTests_snapshot()
    }

    func resolve(_ path: String, query: String? = nil, headers: HTTPFields = [:]) -> (String?, String) {
        let result = snapshot.versionResolver!.resolve(path: path, query: query.map { Substring($0) }, headerFields: headers)
        return (result.version, result.path)
    }

    @Test func fromPath() {
        #expect(resolve("/v2/users") == ("2", "/users"))
        #expect(resolve("/v2") == ("2", "/"))
        #expect(resolve("/version/users") == ("1", "/version/users"))   // not a version token after the prefix
        #expect(resolve("/v/users") == ("1", "/v/users"))
    }

    @Test func fromQueryHeaderAndAccept() {
        #expect(resolve("/users", query: "a=1&version=3").0 == "3")
        #expect(resolve("/users", headers: [HTTPField.Name("API-Version")!: "4"]).0 == "4")
        #expect(resolve("/users", headers: [.accept: "text/html, application/vnd.acme.v5+json; q=0.9"]).0 == "5")
        #expect(resolve("/users").0 == "1")
        // Path wins over the others.
        #expect(resolve("/v2/users", query: "version=3", headers: [HTTPField.Name("API-Version")!: "4"]).0 == "2")
    }
}

private func RouterTests_snapshot() throws -> GatewaySnapshot {
    try snapshot("  - {match: {paths: [\"/users\"]}, service: s}", versioning: """
        versioning: {path: "/v{version}", query: version, header: API-Version, accept: "application/vnd.acme.v{version}+json", default: "1"}
        """)
}

@Suite struct HTTPDateTests {
    @Test func formatsAndParses() {
        #expect(HTTPDate.format(unixSeconds: 784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.parseISO8601("1994-11-06T08:49:37Z") == 784_111_777)
        #expect(HTTPDate.parseISO8601("2027-06-30") == 1_814_313_600)
        #expect(HTTPDate.parseISO8601("2027-13-30") == nil)
        #expect(HTTPDate.rfc3339(unixMillis: 784_111_777_005) == "1994-11-06T08:49:37.005Z")
    }
}
