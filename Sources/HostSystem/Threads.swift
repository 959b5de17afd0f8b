import CLinux
import Glibc

/// A joinable OS thread. Blocking FUSE work runs on these, never on Swift
/// concurrency's cooperative pool.
public final class OSThread: @unchecked Sendable {
    private var handle: pthread_t
    private final class Box { let body: () -> Void; init(_ body: @escaping () -> Void) { self.body = body } }

    /// Starts `body` on a new thread named `name` (at most 15 bytes are kept).
    public init(name: String, _ body: @escaping @Sendable () -> Void) throws(Errno) {
        let box = Unmanaged.passRetained(Box({
            let short = String(name.utf8.prefix(15)) ?? "daxfs"
            _ = daxfs_set_thread_name(short)
            body()
        }))
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box.toOpaque())
        if result != 0 {
            box.release()
            throw Errno(result)
        }
        handle = thread
    }

    public var pthread: pthread_t { handle }

    /// Waits for the thread to finish.
    public func join() { pthread_join(handle, nil) }

    /// The calling thread's pthread handle.
    public static var current: pthread_t { pthread_self() }

    /// Number of online CPUs.
    public static var processorCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
}

/// Nanoseconds on the monotonic clock (`clock_gettime(CLOCK_MONOTONIC)`), for
/// spin budgets and cache lifetimes.
@inline(__always)
public func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
}
