import CLinux
import Glibc

/// The one way daxfs makes a system call: run it, read errno at once when it
/// fails, and retry on EINTR unless the caller wants to see interruptions.
public enum Syscall {
    /// Runs `body`; a result of -1 becomes `Errno`.
    @inlinable
    public static func call<T: FixedWidthInteger>(retryOnInterrupt: Bool = true, _ body: () -> T) throws(Errno) -> T {
        while true {
            let result = body()
            if result != -1 { return result }
            let error = lastError()
            if error == .interrupted && retryOnInterrupt { continue }
            throw error
        }
    }

    /// Like `call` for functions that return a pointer, nil meaning failure.
    @inlinable
    public static func call<T>(retryOnInterrupt: Bool = true, _ body: () -> T?) throws(Errno) -> T {
        while true {
            if let result = body() { return result }
            let error = lastError()
            if error == .interrupted && retryOnInterrupt { continue }
            throw error
        }
    }

    /// For calls that return the error number directly (pthread_*).
    @inlinable
    public static func direct(_ body: () -> Int32) throws(Errno) {
        let result = body()
        if result != 0 { throw Errno(result) }
    }

    @usableFromInline
    static func lastError() -> Errno { Errno.current }
}

/// The host page size; the corresponding C call is `sysconf(_SC_PAGESIZE)`.
public func sysconfPageSize() -> Int { Int(sysconf(Int32(_SC_PAGESIZE))) }
