import HTTPTypes
import NIOCore
import TollgateCore

extension ProxyHandler: UpstreamOwner {
    var upstreamMayRead: Bool { isWritable }

    func upstreamHead(_ head: inout RawHead, framing: BodyFraming) {
        guard let exchange, exchange.phase == .proxying, let context = channelContext else { return }
        let code = head.status
        if code < 200 && code != 101 {
            // 100 Continue and other interim responses go to the client as they are.
            output.render(context.channel.allocator) { out in
                HeadWriter.writeResponse(minorVersion: exchange.clientMinorVersion,
                                         status: HTTPResponse.Status(code: code, reasonPhrase: head.reason),
                                         fields: [:], addChunked: false, connection: .none, into: &out)
            }
            flush()
            return
        }
        exchange.upstreamKeepAlive = head.isKeepAlive
        if code >= 500 {
            recordHealth(exchange, failed: true)
            if exchange.service?.config.retries.on.contains(.status(code)) == true {
                finishCounting(exchange)
                exchange.closeAttempt(status: code, error: nil)
                if retry(exchange, after: .status(code)) { return }
            }
        } else {
            recordHealth(exchange, failed: false)
        }
        if code == 101 && !exchange.isUpgrade {
            exchange.upstreamKeepAlive = false
            return respondError(.badGateway, "upstream switched protocols without being asked", exchange: exchange)
        }
        // How the body reaches the client: as it came, or (HTTP/1.0 clients cannot take chunks) until
        // close; a body of unknown length is chunked for HTTP/1.1 clients.
        let http10 = exchange.clientMinorVersion == 0
        var clientFraming = framing
        var addChunked = false
        switch framing {
        case .none, .length:
            break
        case .chunked:
            if http10 { clientFraming = .untilClose }
        case .untilClose:
            if http10 { clientFraming = .untilClose } else { clientFraming = .chunked; addChunked = true }
        }
        if http10 && clientFraming == .untilClose { exchange.keepAlive = false }
        let connection: ConnectionHeader = code == 101 ? .upgrade : connectionHeader(exchange)
        let state = exchange.state
        let route = exchange.route
        let extra = route?.deprecationFields ?? []
        exchange.responseStatus = code
        exchange.responseHeadSent = true
        exchange.responseFraming = clientFraming
        if let route, !route.chain.isEmpty, code == 101 || !route.chain.responseHooksOnlyAdd && route.chain.responseFieldNames == nil {
            // Hooks that may read or change the upstream's fields see them all, as swift-http-types fields.
            var fields = HeadWriter.responseFields(head, via: state.viaValue, requestIDName: state.requestIDHeader,
                                                   requestID: exchange.context.requestID, extra: extra)
            if http10 { fields[.transferEncoding] = nil }
            if code == 101 {
                fields[.connection] = "upgrade"
                if let index = head.upgradeIndex { fields[.upgrade] = head.value(index) }
            }
            var response = HTTPResponse(status: HTTPResponse.Status(code: code, reasonPhrase: head.reason), headerFields: fields)
            route.chain.runResponse(&response, context: &exchange.context)
            exchange.responseStatus = response.status.code
            if !exchange.context.responseFilters.isEmpty && code != 101 {
                // The body passes filters: framed by the Content-Length the hooks left (they vouch
                // for it), else chunked (or until close, for HTTP/1.0).
                exchange.responseFilters = exchange.context.responseFilters
                if response.headerFields.contains(.transferEncoding) { response.headerFields[.transferEncoding] = nil }
                let status = response.status.code
                if status == 304 && response.headerFields.contains(.contentLength) { response.headerFields[.contentLength] = nil }
                let length = response.headerFields.contains(.contentLength)
                    ? response.headerFields[.contentLength].flatMap { Int($0) } : nil
                (clientFraming, addChunked) = filteredFraming(exchange, status: status, contentLength: length, http10: http10)
                exchange.responseFraming = clientFraming
            }
            let connection: ConnectionHeader = code == 101 ? .none : connectionHeader(exchange)
            output.render(context.channel.allocator) { out in
                HeadWriter.writeResponse(minorVersion: exchange.clientMinorVersion, status: response.status,
                                         fields: response.headerFields, addChunked: addChunked,
                                         connection: connection, into: &out)
            }
        } else if let route, code != 101, !route.chain.responseHooksOnlyAdd, let names = route.chain.responseFieldNames {
            // Hooks that read and change only some fields (compression) see just those; what they
            // change is applied while the upstream's other fields are copied as they came.
            let before = head.httpFields(named: names)
            var response = HTTPResponse(status: HTTPResponse.Status(code: code, reasonPhrase: head.reason), headerFields: before)
            route.chain.runResponse(&response, context: &exchange.context)
            let (removed, changes) = Self.fieldChanges(from: before, to: response.headerFields)
            let added = extra.isEmpty ? changes : extra + changes
            var dropTransferEncoding = http10
            if !exchange.context.responseFilters.isEmpty {
                exchange.responseFilters = exchange.context.responseFilters
                dropTransferEncoding = true
                let length = names.contains(.contentLength)
                    ? response.headerFields[.contentLength].flatMap { Int($0) } : head.contentLength
                (clientFraming, addChunked) = filteredFraming(exchange, status: code, contentLength: length, http10: http10)
                exchange.responseFraming = clientFraming
            }
            let connection = connectionHeader(exchange)
            let requestID = exchange.context.id
            output.render(context.channel.allocator) { out in
                HeadWriter.writeResponse(head, clientMinorVersion: exchange.clientMinorVersion, via: state.viaValue,
                                         requestIDName: state.requestIDHeader, requestID: requestID, extra: added,
                                         removed: removed, dropTransferEncoding: dropTransferEncoding,
                                         addChunked: addChunked, connection: connection, into: &out)
            }
        } else {
            // The upstream's fields are copied as they came; hooks that only add fields run on an
            // empty set, and what they add follows.
            var lines: ByteBuffer?
            if let route, !route.chain.isEmpty {
                // Moved, not copied, into the writer: a second reference would make the first write
                // copy the buffer.
                var written = HeaderLines(buffer: headerLineScratch.take() ?? context.channel.allocator.buffer(capacity: 256))
                written.buffer.clear()
                route.chain.writeResponseFields(context: &exchange.context, into: &written)
                lines = written.buffer
            }
            let requestID = exchange.context.id
            output.render(context.channel.allocator) { out in
                HeadWriter.writeResponse(head, clientMinorVersion: exchange.clientMinorVersion, via: state.viaValue,
                                         requestIDName: state.requestIDHeader, requestID: requestID, extra: extra,
                                         lines: lines, dropTransferEncoding: http10, addChunked: addChunked,
                                         connection: connection, into: &out)
            }
            headerLineScratch = lines
        }
        if code == 101 {
            flush()
            switchToRelay(exchange)
        }
    }

    /// What response hooks changed in the fields they were given: the names whose upstream fields must
    /// go (a field of that name was changed or removed), and the fields to write instead (new ones,
    /// and the kept ones of a removed name). Both lists are short: a handful of fields each.
    static func fieldChanges(from before: HTTPFields, to after: HTTPFields) -> (removed: [HTTPField.Name], added: [HTTPField]) {
        let old = Array(before)
        let new = Array(after)
        if old == new { return ([], []) }
        var removed: [HTTPField.Name] = []
        for field in old where !new.contains(field) && !removed.contains(field.name) { removed.append(field.name) }
        var added: [HTTPField] = []
        for field in new where !old.contains(field) || removed.contains(field.name) { added.append(field) }
        return (removed, added)
    }

    /// How a body that passes filters is framed: by the Content-Length the hooks left (they vouch for
    /// it), else chunked (or until close, for HTTP/1.0); none for HEAD, 204 and 304.
    private func filteredFraming(_ exchange: Exchange, status: Int, contentLength: Int?,
                                 http10: Bool) -> (BodyFraming, Bool) {
        if exchange.isHeadRequest || status == 204 || status == 304 { return (.none, false) }
        if let contentLength { return (contentLength > 0 ? .length(contentLength) : .none, false) }
        if http10 {
            exchange.keepAlive = false
            return (.untilClose, false)
        }
        return (.chunked, true)
    }

    func upstreamBody(_ buffer: ByteBuffer) {
        guard let exchange, exchange.phase == .proxying, let context = channelContext else { return }
        var buffer = buffer
        if !exchange.responseFilters.isEmpty {
            // A filter may hold bytes back (a coder's block): nothing goes out this time.
            buffer = exchange.responseFilters.process(buffer, allocator: context.channel.allocator)
        }
        exchange.responseBytes += buffer.readableBytes
        if buffer.readableBytes == 0 {
            if exchange.upstreamRequestComplete { armReadTimer(exchange) }
            return
        }
        switch exchange.responseFraming {
        case .length, .untilClose: output.data(buffer, context: context)
        case .chunked: output.chunk(buffer, context: context)
        case .none: break
        }
        if exchange.upstreamRequestComplete { armReadTimer(exchange) }
    }

    func upstreamEnd(trailers: ByteBuffer?) {
        guard let exchange, exchange.phase == .proxying, let context = channelContext else { return }
        if !exchange.responseFilters.isEmpty {
            let rest = exchange.responseFilters.finish(allocator: context.channel.allocator)
            exchange.responseFilters = []
            if rest.readableBytes > 0 && exchange.responseFraming != .none {
                exchange.responseBytes += rest.readableBytes
                if case .chunked = exchange.responseFraming { output.chunk(rest, context: context) } else { output.data(rest, context: context) }
            }
        }
        if case .chunked = exchange.responseFraming { output.lastChunk(trailers, context: context) }
        exchange.closeAttempt(status: exchange.responseStatus, error: nil)
        flush()
        responseFinished(exchange)
    }

    func upstreamRelay(_ buffer: ByteBuffer) {
        guard relayPeer != nil, let context = channelContext else { return }
        output.data(buffer, context: context)
    }

    func upstreamReadComplete() {
        flush()
    }

    func upstreamWritabilityChanged(_ writable: Bool) {
        if writable { resumeReadingIfPossible() }
    }

    func upstreamFailed(_ error: any Error) {
        upstreamLost(error is UpstreamProtocolError ? "upstream sent an invalid response" : "upstream connection failed")
    }

    func upstreamClosed() {
        upstreamLost("upstream closed the connection")
    }

    /// The upstream connection broke before the response ended: 502 if nothing was sent yet, else the
    /// client's response is cut off by closing (it cannot be completed honestly).
    private func upstreamLost(_ reason: String) {
        if relayPeer != nil {
            relayPeer = nil
            return close()
        }
        guard let exchange, exchange.phase == .proxying else { return }
        exchange.upstreamConnection = nil
        exchange.upstreamKeepAlive = false
        if exchange.responseHeadSent {
            finishCounting(exchange)
            close()
        } else {
            endAttempt(exchange, failed: true)
            if retry(exchange, after: .reset) { return }
            exchange.keepAlive = exchange.keepAlive && exchange.requestComplete
            respondError(.badGateway, reason, exchange: exchange)
            processInbound()
        }
    }

    /// After a 101, both connections carry opaque bytes (WebSocket): client bytes go to the upstream
    /// connection and its bytes come back through `upstreamRelay`, with backpressure through the same
    /// read gating as bodies.
    private func switchToRelay(_ exchange: Exchange) {
        guard let upstream = exchange.upstreamConnection else { return close() }
        exchange.upstreamConnection = nil
        runLogPhase(exchange)   // the exchange ends here; the relay that follows is not a request
        self.exchange = nil
        timers.cancel()
        relayPeer = upstream
        // Bytes the client sent right after its request belong to the new protocol.
        if inbound.readableBytes > 0 {
            upstream.writeRaw(inbound.readSlice(length: inbound.readableBytes)!)
            upstream.flush()
        }
        resumeReadingIfPossible()
    }
}
