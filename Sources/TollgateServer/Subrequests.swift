import AsyncHTTPClient
import HTTPTypes
import NIOCore
import NIOHTTP1
import TollgateCore

/// Requests plugins send on their own to a route's service (a cache's background refresh): to an
/// available target (the first, in configured order), through the process-wide HTTP client, with
/// the service's read timeout. Not on any client's hot path.
final class ServiceSubrequests: SubrequestClient {
    private let services: [ServiceRuntime?]

    init(routeServices: [ServiceRuntime?]) {
        self.services = routeServices
    }

    func send(_ request: HTTPRequest, route: CompiledRoute, maxBodyBytes: Int,
              on loop: any EventLoop) -> EventLoopFuture<(HTTPResponse, ByteBuffer)> {
        guard route.index < services.count, let service = services[route.index] else {
            return loop.makeFailedFuture(SubrequestError.noService)
        }
        let now = NIODeadline.now().uptimeNanoseconds
        guard let target = service.targets.first(where: { $0.state.isAvailable(now: now) }) ?? service.targets.first else {
            return loop.makeFailedFuture(SubrequestError.noService)
        }
        var headers = HTTPHeaders()
        for field in request.headerFields where field.name.canonicalName != "host" && field.name != .connection {
            headers.add(name: field.name.rawName, value: field.value)
        }
        headers.replaceOrAdd(name: "Host", value: route.preserveHost ? (request.authority ?? target.hostHeader) : target.hostHeader)
        let url = "http://\(target.config.authority)\(request.path ?? "/")"
        let outgoing: HTTPClient.Request
        do {
            outgoing = try HTTPClient.Request(url: url, method: HTTPMethod(rawValue: request.method.rawValue), headers: headers)
        } catch {
            return loop.makeFailedFuture(error)
        }
        let deadline = NIODeadline.now() + service.readTimeout
        return HTTPClient.shared.execute(request: outgoing, eventLoop: .indifferent, deadline: deadline).hop(to: loop)
            .flatMapThrowing { response in
                let body = response.body ?? ByteBuffer()
                guard body.readableBytes <= maxBodyBytes else { throw SubrequestError.tooLarge }
                var fields = HTTPFields()
                for header in response.headers {
                    if let name = HTTPField.Name(header.name) { fields.append(HTTPField(name: name, value: header.value)) }
                }
                return (HTTPResponse(status: HTTPResponse.Status(code: Int(response.status.code)), headerFields: fields), body)
            }
    }
}

enum SubrequestError: Error {
    case noService
    case tooLarge
}
