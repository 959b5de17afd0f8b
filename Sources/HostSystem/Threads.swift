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
@inlinable
public func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
}

/// Raises this process's open-file limit as far as it may go: every inode the
/// kernel knows holds an O_PATH descriptor, so a busy share needs many. Root
/// may lift the hard limit up to /proc/sys/fs/nr_open. Returns the new soft limit.
@discardableResult
public func raiseOpenFileLimit() -> UInt64 {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
    var ceiling = limit.rlim_max
    if let text = try? String(contentsOfProcFile: "/proc/sys/fs/nr_open"), let value = UInt64(text) {
        ceiling = max(ceiling, rlim_t(value))
    }
    var wanted = rlimit(rlim_cur: ceiling, rlim_max: ceiling)
    if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &wanted) != 0 {
        wanted = rlimit(rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max)
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &wanted)
    }
    _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    return UInt64(limit.rlim_cur)
}

extension String {
    /// The first line of a small /proc or /sys file, trimmed.
    init(contentsOfProcFile path: String) throws(Errno) {
        let fd = try Syscall.call { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = try Syscall.call { buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) } }
        let text = String(decoding: buffer[0 ..< count], as: UTF8.self)
        self = String((text.split(separator: "\n").first ?? "").filter { $0 != " " && $0 != "\t" })
    }
}
