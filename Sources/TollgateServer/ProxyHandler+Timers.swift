import NIOCore
import TollgateCore

/// The deadlines of one connection (header read or idle; upstream read or write) behind a single
/// scheduled task. Moving a deadline only stores it; the task, when it fires early, re-schedules
/// itself for the nearest deadline. So a request costs no timer scheduling or cancelling, which
/// callgrind showed at about 16% of the proxy's instructions.
struct ConnectionTimers {
    enum ConnectionPhase {
        case header
        case idle
    }

    var connectionDeadline: NIODeadline?
    var connectionPhase = ConnectionPhase.header
    var upstreamDeadline: NIODeadline?
    var upstreamMessage = ""
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
    /// short by the request's deadline; after it, the read timeout between body bytes.
    func armReadTimer(_ exchange: Exchange) {
        guard let service = exchange.service else { return }
        var timeout = exchange.responseHeadSent ? service.readTimeout : service.perTryTimeout
        if let deadline = exchange.deadline, !exchange.responseHeadSent {
            timeout = min(timeout, deadline - .now())
        }
        armUpstreamTimer(timeout, message: "upstream read timeout")
    }

    func armWriteTimer(_ exchange: Exchange) {
        guard let service = exchange.service else { return }
        armUpstreamTimer(service.writeTimeout, message: "upstream write timeout")
    }

    private func armUpstreamTimer(_ timeout: TimeAmount, message: String) {
        timers.upstreamDeadline = .now() + timeout
        timers.upstreamMessage = message
        rescheduleTimer()
    }

    /// The upstream said nothing (or took nothing) for its timeout: 504 if the client has no response
    /// yet, else the connection is cut.
    private func upstreamTimedOut() {
        guard let exchange, exchange.phase == .proxying else { return }
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
            respondError(.gatewayTimeout, timers.upstreamMessage, exchange: exchange)
        }
    }
}
