#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Foundation
import Synchronization

/// A thread of its own for telemetry work that must not run on an event loop (writing log files,
/// finishing trace spans), at a lower scheduling priority (nice 10): when it competes with the event
/// loops for a core, the loops win, so telemetry does not lengthen the requests' tail latency.
public final class BackgroundWorker: Sendable {
    private final class Queue: Sendable {
        let jobs = Mutex<[@Sendable () -> Void]>([])
        let wakeup = DispatchSemaphore(value: 0)
    }
    private let queue = Queue()
    public let name: String

    public init(name: String, nice: Int32 = 10) {
        self.name = name
        let queue = self.queue
        let threadName = String(name.prefix(15))   // Linux takes at most 15 bytes, and ignores a longer name
        let thread = Thread {
            // Named from the thread itself, through /proc (what `prctl(PR_SET_NAME)` does):
            // Foundation's `Thread.name` reached the kernel only when set after `start()` had
            // recorded the thread, a race; the thread then kept its creator's name (a Dispatch
            // worker's, say).
            Self.nameCurrentThread(threadName)
            // On Linux the nice value is per thread: this lowers only the worker.
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice)
            while true {
                queue.wakeup.wait()
                let batch = queue.jobs.withLock { jobs -> [@Sendable () -> Void] in
                    defer { jobs.removeAll(keepingCapacity: true) }
                    return jobs
                }
                for job in batch { job() }
            }
        }
        thread.start()
    }

    private static func nameCurrentThread(_ name: String) {
        let descriptor = open("/proc/thread-self/comm", O_WRONLY)
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        var name = name
        name.withUTF8 { _ = write(descriptor, $0.baseAddress, $0.count) }
    }

    /// Runs `job` on the worker, after the jobs submitted before it.
    public func submit(_ job: @escaping @Sendable () -> Void) {
        queue.jobs.withLock { $0.append(job) }
        queue.wakeup.signal()
    }

    /// Jobs submitted and not yet taken by the worker: how far behind it is. Work that may be skipped
    /// (tracing a sampled request) is not started while this is high, so a worker that cannot keep
    /// up never holds an unbounded queue.
    public var waitingJobs: Int { queue.jobs.withLock { $0.count } }

    /// Waits until every job submitted so far has run (tests, shutdown).
    public func sync() {
        let done = DispatchSemaphore(value: 0)
        submit { done.signal() }
        done.wait()
    }

    /// Returns once every job submitted so far has run, without blocking a thread.
    public func drained() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            submit { continuation.resume() }
        }
    }

    /// One worker for the process's telemetry (its thread lives as long as the process).
    public static let telemetry = BackgroundWorker(name: "tollgate-telemetry")
}

/// Swift concurrency jobs run on the low-priority telemetry thread: the trace exporter's tasks (span
/// batching, protobuf encoding) take this preference, so they never compete with the event loops as
/// equals.
public final class TelemetryExecutor: TaskExecutor {
    public static let shared = TelemetryExecutor()
    private let worker = BackgroundWorker.telemetry

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        worker.submit { job.runSynchronously(on: executor) }
    }
}
