import CLinux
import Glibc

/// An owned file descriptor: closed exactly once, when the owner goes away.
public struct FileDescriptor: ~Copyable, @unchecked Sendable {
    public let rawValue: Int32

    public init(adopting rawValue: Int32) { self.rawValue = rawValue }

    /// Gives up ownership without closing.
    public consuming func release() -> Int32 {
        let value = rawValue
        discard self
        return value
    }

    deinit { _ = Glibc.close(rawValue) }

    /// Opens `path` relative to `directory` (AT_FDCWD for the working directory).
    /// The corresponding C function is `openat`.
    public static func open(_ path: String, relativeTo directory: Int32 = DAXFS_AT_FDCWD,
                            flags: Int32, mode: mode_t = 0) throws(Errno) -> FileDescriptor {
        let fd = try Syscall.call { daxfs_openat(directory, path, flags | DAXFS_O_CLOEXEC, mode) }
        return FileDescriptor(adopting: fd)
    }
}

/// Reference-counted owner of a file descriptor for sharing between threads
/// and tables; closes on deinit.
public final class SharedDescriptor: @unchecked Sendable {
    public let rawValue: Int32
    public init(adopting rawValue: Int32) { self.rawValue = rawValue }
    public convenience init(_ owned: consuming FileDescriptor) { self.init(adopting: owned.release()) }
    deinit { _ = Glibc.close(rawValue) }
}

extension Syscall {
    /// The corresponding C function is `pread`.
    public static func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: Int64) throws(Errno) -> Int {
        try call { Glibc.pread(fd, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    /// The corresponding C function is `pwrite`.
    public static func pwrite(_ fd: Int32, from buffer: UnsafeRawBufferPointer, offset: Int64) throws(Errno) -> Int {
        try call { Glibc.pwrite(fd, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    /// The corresponding C function is `read`.
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, retryOnInterrupt: Bool = true) throws(Errno) -> Int {
        try call(retryOnInterrupt: retryOnInterrupt) { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    /// The corresponding C function is `write`.
    public static func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) throws(Errno) -> Int {
        try call { Glibc.write(fd, buffer.baseAddress, buffer.count) }
    }

    /// Writes every byte, looping on short writes.
    public static func writeAll(_ fd: Int32, from buffer: UnsafeRawBufferPointer) throws(Errno) {
        var done = 0
        while done < buffer.count {
            done += try write(fd, from: UnsafeRawBufferPointer(rebasing: buffer[done...]))
        }
    }

    /// The corresponding C function is `close`. EINTR is not retried (Linux closes anyway).
    public static func close(_ fd: Int32) { _ = Glibc.close(fd) }
}
