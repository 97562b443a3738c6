import AsyncHTTPClient
import ArgumentParser
import Foundation
import Logging
import NIOPosix
import ServiceLifecycle
import TollgateCore
import TollgatePlugins
import TollgateServer
import TollgateObservability
import TollgateTesting


struct Tollgate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tollgate",
        abstract: "An API gateway: routing, versioning, plugins and a streaming reverse proxy, from one YAML file.",
        version: TollgateVersion.current,
        subcommands: [Run.self, Validate.self, Demo.self, HashPassword.self, Usage.self, Cache.self, Version.self]
    )
}


struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway with a config file.")

    @Option(name: .shortAndLong, help: "Path of the YAML config (or set TOLLGATE_CONFIG).")
    var config: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String?

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let path = config ?? environment["TOLLGATE_CONFIG"] else {
            throw ValidationError("give --config FILE or set TOLLGATE_CONFIG")
        }
        if let logLevel {
            guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level \(logLevel)") }
            JSONLogHandler.Levels.shared.overrideDefault(level)
        }
        // Before the config is loaded: loading starts plugins, whose loggers (the trace exporter's
        // among them) keep the handler of the moment they are made. Handlers read the levels live.
        LoggingSystem.bootstrap { label in JSONLogHandler(label: label) }
        let logger = Logger(label: "tollgate")
        let snapshot: GatewaySnapshot
        do {
            snapshot = try ConfigLoader.load(path: path, environment: environment, registry: BuiltinPlugins.registry)
        } catch {
            FileHandle.standardError.write(Data("\(path): invalid configuration\n\(error)\n".utf8))
            throw ExitCode(1)
        }
        JSONLogHandler.Levels.shared.update(snapshot.config.logging)
        let server = try ProxyServer(snapshot: snapshot, logger: logger)
        let reloader = ConfigReloader(path: path, server: server, registry: BuiltinPlugins.registry,
                                      environment: environment, logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: server), .init(service: reloader), .init(service: LogFileReopener())],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
        await OpenTelemetryPlugin.flushExporters()    // the spans still queued (at most 2 s)
        await BackgroundWorker.telemetry.drained()   // the last log lines and access-log writes
    }
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check a config file; list every error with its YAML path and line.")

    @Argument(help: "Path of the YAML config.")
    var file: String

    func run() throws {
        do {
            let snapshot = try ConfigLoader.load(path: file, environment: ProcessInfo.processInfo.environment,
                                                 registry: BuiltinPlugins.registry)
            print("\(file): OK (\(snapshot.config.routes.count) routes, \(snapshot.config.services.count) services)")
        } catch {
            for line in error.errors { print(line) }
            throw ExitCode(1)
        }
    }
}

struct HashPassword: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash-password",
        abstract: "Print a slow hash of a password for consumers[].credentials.basic_auth[].password_hash.",
        discussion: "Reads the password from standard input (one line), so it stays out of shell history.")

    @Option(help: "pbkdf2-sha256 (default), pbkdf2-sha512 or scrypt.")
    var scheme = "pbkdf2-sha256"

    @Option(help: "PBKDF2 rounds.")
    var rounds = 600_000

    func run() throws {
        guard let password = readLine(strippingNewline: true), !password.isEmpty else {
            throw ValidationError("give the password on standard input")
        }
        let chosen: PasswordHash.Scheme
        switch scheme {
        case "pbkdf2-sha256": chosen = .pbkdf2SHA256(rounds: rounds)
        case "pbkdf2-sha512": chosen = .pbkdf2SHA512(rounds: rounds)
        case "scrypt": chosen = .scrypt(logN: 15, r: 8, p: 1)
        default: throw ValidationError("unknown scheme \(scheme)")
        }
        print(try PasswordHash.make(password, scheme: chosen).text)
    }
}

struct Usage: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Usage metering records.", subcommands: [UsageExport.self])
}

struct UsageExport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Sum the usage-metering files into CSV or JSON, per bucket, consumer, route and status class.")

    @Option(help: "The usage-metering plugin's directory.")
    var dir: String

    @Option(help: "First day or time (UTC), such as 2026-11-01 or 2026-11-27T12:00:00Z.")
    var from: String

    @Option(help: "Day or time (UTC) to stop before.")
    var to: String

    @Option(help: "csv or json.")
    var format = "csv"

    @Option(help: "Regroup by hour or day (default: the recorded buckets).")
    var per: String?

    func run() throws {
        guard let start = UsageLedger.parseTime(from) else { throw ValidationError("--from: expected a date such as 2026-11-01") }
        guard let end = UsageLedger.parseTime(to), end > start else { throw ValidationError("--to: expected a date after --from") }
        let group: Int64?
        switch per {
        case nil: group = nil
        case "hour": group = 3_600
        case "day": group = 86_400
        default: throw ValidationError("--per: expected hour or day")
        }
        let rows = try UsageLedger.export(directory: dir, from: start, to: end, groupSeconds: group)
        switch format {
        case "csv": print(UsageLedger.csv(rows), terminator: "")
        case "json": print(UsageLedger.json(rows), terminator: "")
        default: throw ValidationError("--format: expected csv or json")
        }
    }
}

struct Cache: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The response cache of a running gateway.",
                                                    subcommands: [CachePurgeCommand.self])
}

struct CachePurgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "purge",
        abstract: "Purge cached responses by surrogate key, URL, URL prefix or cache key, through the admin listener.")

    @Option(help: "The running gateway's admin address (admin.address).")
    var admin = "127.0.0.1:8001"

    @Option(help: "Every response tagged with this surrogate key.")
    var tag: String?

    @Option(help: "Every stored variant of this URL (path and query, as the client sent it).")
    var url: String?

    @Option(help: "Every URL starting with this (not on the memcached store).")
    var prefix: String?

    @Option(help: "One cache key (its variants too).")
    var key: String?

    func run() async throws {
        let given = [("tag", tag), ("url", url), ("prefix", prefix), ("key", key)].compactMap { name, value in value.map { (name, $0) } }
        guard given.count == 1, let (name, value) = given.first else {
            throw ValidationError("give exactly one of --tag, --url, --prefix or --key")
        }
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&=+?#")
        let encoded = value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value
        var request = HTTPClientRequest(url: "http://\(admin)/cache/purge?\(name)=\(encoded)")
        request.method = .POST
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        print(String(buffer: body))
        guard response.status == .ok else { throw ExitCode(1) }
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version.")
    func run() { print("tollgate \(TollgateVersion.current)") }
}
