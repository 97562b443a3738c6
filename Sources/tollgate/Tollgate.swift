import ArgumentParser
import Foundation
import Logging
import NIOPosix
import ServiceLifecycle
import TollgateCore
import TollgatePlugins
import TollgateServer
import TollgateTesting


struct Tollgate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tollgate",
        abstract: "An API gateway: routing, versioning, plugins and a streaming reverse proxy, from one YAML file.",
        version: TollgateVersion.string,
        subcommands: [Run.self, Validate.self, Demo.self, Version.self]
    )
}

enum TollgateVersion {
    static let string = "0.1.0"
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway with a config file.")

    @Option(name: .shortAndLong, help: "Path of the YAML config (or set TOLLGATE_CONFIG).")
    var config: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let path = config ?? environment["TOLLGATE_CONFIG"] else {
            throw ValidationError("give --config FILE or set TOLLGATE_CONFIG")
        }
        var logger = Logger(label: "tollgate")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let snapshot: GatewaySnapshot
        do {
            snapshot = try ConfigLoader.load(path: path, environment: environment, registry: BuiltinPlugins.registry)
        } catch {
            FileHandle.standardError.write(Data("\(path): invalid configuration\n\(error)\n".utf8))
            throw ExitCode(1)
        }
        let server = try ProxyServer(snapshot: snapshot, logger: logger)
        let reloader = ConfigReloader(path: path, server: server, registry: BuiltinPlugins.registry,
                                      environment: environment, logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: server), .init(service: reloader)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
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

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version.")
    func run() { print("tollgate \(TollgateVersion.string)") }
}
