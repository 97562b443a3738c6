import NIOCore
import TollgateCore

/// The deadlines of one connection (header read or idle; upstream read or write) behind a single
/// scheduled task. Moving a deadline only stores it; the task, when it fires early, re-schedules
/// itself for the nearest deadline. So a request costs no timer scheduling or cancelling, which
/// callgrind showed at about 16% of the proxy's instructions.
struct ConnectionTimers {
    /// What the upstream deadline waits for.
    enum UpstreamWait {
        /// Response bytes from the upstream (its read timeout).
        case read
        /// The upstream to take request bytes (its write timeout).
        case write
        /// The client to take response bytes: while it takes none, the upstream is not read (the
        /// backpressure of NIO's writability), so its read timeout would blame it for the client.
        /// The client gets `idle_timeout` instead, then the connection is cut.
        case client

        var message: String {
            switch self {
            case .read: "upstream read timeout"
            case .write: "upstream write timeout"
            case .client: "client stopped reading"
            }
        }
    }

    enum ConnectionPhase {
        case header
        case idle
    }

    var connectionDeadline: NIODeadline?
    var connectionPhase = ConnectionPhase.header
    var upstreamDeadline: NIODeadline?
    var upstreamWait = UpstreamWait.read
    var task: Scheduled<Void>?
    var taskDeadline = NIODeadline.distantFuture

    var nearest: NIODeadline? {
        switch (connectionDeadline, upstreamDeadline) {
        case (nil, nil): return nil
        case (let a?, nil): return a
        case (nil, let b?): return b
        case (let a?, let b?): return min(a, b)
        }
    }

    mutating func cancel() {
        task?.cancel()
        task = nil
        connectionDeadline = nil
        upstreamDeadline = nil
    }
}

extension ProxyHandler {
    /// Makes sure the single task fires no later than the nearest deadline.
    func rescheduleTimer() {
        guard let nearest = timers.nearest, !closing else { return }
        if timers.task != nil && timers.taskDeadline <= nearest { return }
        timers.task?.cancel()
        timers.taskDeadline = nearest
        // `self` is held strongly (until the task fires or `timers.cancel()` on close drops it): a weak
        // capture would give the handler a side table, and make every retain of it the slow kind.
        timers.task = loop.eventLoop.assumeIsolated().scheduleTask(deadline: nearest) { [self] in
            timerFired()
        }
    }

    private func timerFired() {
        timers.task = nil
        let now = NIODeadline.now()
        if let deadline = timers.connectionDeadline, deadline <= now, waitingForHead {
            timers.connectionDeadline = nil
            switch timers.connectionPhase {
            case .header: failConnection(status: .requestTimeout, message: "timed out reading the request head")
            case .idle: close()
            }
            return
        }
        if let deadline = timers.upstreamDeadline, deadline <= now {
            timers.upstreamDeadline = nil
            upstreamTimedOut()
        }
        rescheduleTimer()
    }

    /// Waiting for a request head: header_read_timeout once bytes arrive, else idle_timeout.
    func armConnectionTimer(headerPhase: Bool) {
        headTimerArmed = headerPhase
        waitingForHead = true
        let state = loop.state
        timers.connectionPhase = headerPhase ? .header : .idle
        timers.connectionDeadline = .now() + (headerPhase ? state.headerReadTimeout : state.idleTimeout)
        rescheduleTimer()
    }

    /// Bytes arrived: a slow client now has header_read_timeout to finish its head.
    func bytesArrived() {
        guard waitingForHead, !headTimerArmed else { return }
        armConnectionTimer(headerPhase: true)
    }

    func headStarted() {
        waitingForHead = false
        headTimerArmed = false
        timers.connectionDeadline = nil
    }

    /// Before the response head: the per-try timeout (the read timeout unless retries set one), cut
    /// short by the request's deadline; after it, the read timeout between body bytes. While the
    /// client's socket is full the upstream is not read, and the wait is the client's (`.client`).
    func armReadTimer(_ exchange: Exchange) {
        guard let service = exchange.service else { return }
        if !isWritable {
            armUpstreamTimer(loop.state.idleTimeout, wait: .client)
            return
        }
        var timeout = exchange.responseHeadSent ? service.readTimeout : service.perTryTimeout
        if let deadline = exchange.deadline, !exchange.responseHeadSent {
            timeout = min(timeout, deadline - .now())
        }
        armUpstreamTimer(timeout, wait: .read)
    }

    func armWriteTimer(_ exchange: Exchange) {
        guard let service = exchange.service else { return }
        armUpstreamTimer(service.writeTimeout, wait: .write)
    }

    /// The client's writability changed while a response is awaited: the read deadline becomes the
    /// client's (full) or the upstream's again (drained).
    func clientWritabilityChangedWhileReading() {
        guard let exchange, timers.upstreamDeadline != nil else { return }
        switch (timers.upstreamWait, isWritable) {
        case (.read, false), (.client, true): armReadTimer(exchange)
        default: break
        }
    }

    private func armUpstreamTimer(_ timeout: TimeAmount, wait: ConnectionTimers.UpstreamWait) {
        timers.upstreamDeadline = .now() + timeout
        timers.upstreamWait = wait
        rescheduleTimer()
    }

    /// The upstream said nothing (or took nothing) for its timeout: 504 if the client has no response
    /// yet, else the connection is cut.
    private func upstreamTimedOut() {
        guard let exchange, exchange.phase == .proxying else { return }
        if timers.upstreamWait == .client {
            // Nothing to answer to a client that reads nothing: closing ends the exchange
            // (`channelInactive` drops the upstream connection and logs).
            if exchange.failureReason == nil { exchange.failureReason = timers.upstreamWait.message }
            channelContext?.close(promise: nil)
            return
        }
        exchange.upstreamKeepAlive = false
        if let upstream = exchange.upstreamConnection {
            exchange.upstreamConnection = nil
            upstream.owner = nil
            upstream.close()
        }
        if exchange.responseHeadSent {
            finishCounting(exchange)
            close()
        } else {
            endAttempt(exchange, failed: true)
            if retry(exchange, after: .timeout) { return }
            exchange.keepAlive = exchange.keepAlive && exchange.requestComplete
            respondError(.gatewayTimeout, timers.upstreamWait.message, exchange: exchange)
        }
    }
}
