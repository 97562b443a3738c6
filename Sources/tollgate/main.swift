import ArgumentParser
import Dispatch

// The main thread waits on a semaphore while the command runs on the concurrency pool, instead of
// parking in dispatch_main(): valgrind (callgrind, the instruction counts in bench/) cannot run a
// process whose main thread sits in dispatch's sigsuspend.
nonisolated(unsafe) var exitError: (any Error)?
let finished = DispatchSemaphore(value: 0)
Task.detached {
    do {
        var command = try Tollgate.parseAsRoot()
        if var asyncCommand = command as? any AsyncParsableCommand {
            try await asyncCommand.run()
        } else {
            try command.run()
        }
    } catch {
        exitError = error
    }
    finished.signal()
}
finished.wait()
if let exitError { Tollgate.exit(withError: exitError) }
