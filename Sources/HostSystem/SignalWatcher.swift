import Glibc

/// Turns SIGINT/SIGTERM/SIGHUP into calls on a dedicated thread (sigwait),
/// so no work happens in a signal handler.
public enum SignalWatcher {
    public static func start(onFirst: @escaping @Sendable () -> Void, onSecond: @escaping @Sendable () -> Void) {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&set, signal) }
        // Block in this thread before any worker starts, so every thread inherits the mask.
        pthread_sigmask(SIG_BLOCK, &set, nil)
        signal(SIGPIPE, SIG_IGN)
        let waitSet = set
        _ = try? OSThread(name: "daxfs-signals") {
            var set = waitSet
            var received: Int32 = 0
            var count = 0
            while sigwait(&set, &received) == 0 {
                count += 1
                if count == 1 { onFirst() } else { onSecond() }
            }
        }
    }
}
