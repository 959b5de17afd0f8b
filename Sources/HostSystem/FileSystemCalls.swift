import CLinux
import Glibc

/// Wrappers for the calls a passthrough filesystem makes. Paths and names are
/// NUL-terminated C strings so that hot paths need not allocate; directory
/// arguments may be `O_PATH` descriptors.
extension Syscall {
    /// Opens `path` relative to `directory`; `O_CLOEXEC` is always added.
    /// The corresponding C function is `openat`.
    @inlinable
    public static func openat(_ directory: Int32, _ path: UnsafePointer<CChar>, flags: Int32, mode: UInt32 = 0) throws(Errno) -> Int32 {
        try call { daxfs_openat(directory, path, flags | DAXFS_O_CLOEXEC, mode) }
    }

    /// The corresponding C function is `fstat`.
    @inlinable
    public static func fstat(_ fd: Int32) throws(Errno) -> stat {
        var result = stat()
        _ = try call { Glibc.fstat(fd, &result) }
        return result
    }

    /// The corresponding C function is `fstatat`.
    @inlinable
    public static func fstatat(_ directory: Int32, _ path: UnsafePointer<CChar>, flags: Int32) throws(Errno) -> stat {
        var result = stat()
        _ = try call { Glibc.fstatat(directory, path, &result, flags) }
        return result
    }

    /// The corresponding C function is `mkdirat`.
    public static func mkdirat(_ directory: Int32, _ name: UnsafePointer<CChar>, mode: UInt32) throws(Errno) {
        _ = try call { Glibc.mkdirat(directory, name, mode_t(mode)) }
    }

    /// The corresponding C function is `mknodat`.
    public static func mknodat(_ directory: Int32, _ name: UnsafePointer<CChar>, mode: UInt32, device: UInt64) throws(Errno) {
        _ = try call { Glibc.mknodat(directory, name, mode_t(mode), dev_t(device)) }
    }

    /// The corresponding C function is `symlinkat`.
    public static func symlinkat(_ target: UnsafePointer<CChar>, _ directory: Int32, _ name: UnsafePointer<CChar>) throws(Errno) {
        _ = try call { Glibc.symlinkat(target, directory, name) }
    }

    /// The corresponding C function is `linkat`.
    public static func linkat(_ oldDirectory: Int32, _ oldPath: UnsafePointer<CChar>, _ newDirectory: Int32, _ newName: UnsafePointer<CChar>, flags: Int32) throws(Errno) {
        _ = try call { Glibc.linkat(oldDirectory, oldPath, newDirectory, newName, flags) }
    }

    /// The corresponding C function is `unlinkat`.
    public static func unlinkat(_ directory: Int32, _ name: UnsafePointer<CChar>, flags: Int32) throws(Errno) {
        _ = try call { Glibc.unlinkat(directory, name, flags) }
    }

    /// The corresponding C function is `renameat2`.
    public static func renameat2(_ oldDirectory: Int32, _ oldName: UnsafePointer<CChar>, _ newDirectory: Int32, _ newName: UnsafePointer<CChar>, flags: UInt32) throws(Errno) {
        _ = try call { daxfs_renameat2(oldDirectory, oldName, newDirectory, newName, flags) }
    }

    /// Returns the number of bytes stored (no NUL is added).
    /// The corresponding C function is `readlinkat`.
    public static func readlinkat(_ directory: Int32, _ path: UnsafePointer<CChar>, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        try call { guard let base = buffer.baseAddress else { return 0 }
            return Glibc.readlinkat(directory, path, base.assumingMemoryBound(to: CChar.self), buffer.count) }
    }

    /// The corresponding C function is `fchmod`.
    public static func fchmod(_ fd: Int32, mode: UInt32) throws(Errno) {
        _ = try call { Glibc.fchmod(fd, mode_t(mode)) }
    }

    /// The corresponding C function is `fchmodat`.
    public static func fchmodat(_ directory: Int32, _ path: UnsafePointer<CChar>, mode: UInt32, flags: Int32) throws(Errno) {
        _ = try call { Glibc.fchmodat(directory, path, mode_t(mode), flags) }
    }

    /// `nil` leaves that id unchanged. The corresponding C function is `fchownat`.
    public static func fchownat(_ directory: Int32, _ path: UnsafePointer<CChar>, uid: UInt32?, gid: UInt32?, flags: Int32) throws(Errno) {
        _ = try call { Glibc.fchownat(directory, path, uid ?? UInt32.max, gid ?? UInt32.max, flags) }
    }

    /// The corresponding C function is `ftruncate`.
    public static func ftruncate(_ fd: Int32, size: Int64) throws(Errno) {
        _ = try call { Glibc.ftruncate(fd, off_t(size)) }
    }

    /// `times` holds atime then mtime (`UTIME_NOW`/`UTIME_OMIT` allowed).
    /// The corresponding C function is `futimens`.
    public static func futimens(_ fd: Int32, _ times: (timespec, timespec)) throws(Errno) {
        var times = times
        _ = try call { withUnsafePointer(to: &times) { $0.withMemoryRebound(to: timespec.self, capacity: 2) { Glibc.futimens(fd, $0) } } }
    }

    /// The corresponding C function is `utimensat`.
    public static func utimensat(_ directory: Int32, _ path: UnsafePointer<CChar>, _ times: (timespec, timespec), flags: Int32) throws(Errno) {
        var times = times
        _ = try call { withUnsafePointer(to: &times) { $0.withMemoryRebound(to: timespec.self, capacity: 2) { Glibc.utimensat(directory, path, $0, flags) } } }
    }

    /// The corresponding C function is `fsync`.
    public static func fsync(_ fd: Int32) throws(Errno) { _ = try call { Glibc.fsync(fd) } }

    /// The corresponding C function is `fdatasync`.
    public static func fdatasync(_ fd: Int32) throws(Errno) { _ = try call { Glibc.fdatasync(fd) } }

    /// The corresponding C function is `syncfs`.
    public static func syncfs(_ fd: Int32) throws(Errno) { _ = try call { daxfs_syncfs(fd) } }

    /// The corresponding C function is `lseek`.
    public static func lseek(_ fd: Int32, offset: Int64, whence: Int32) throws(Errno) -> Int64 {
        Int64(try call { Glibc.lseek(fd, off_t(offset), whence) })
    }

    /// Reads `struct linux_dirent64` records; 0 at the end of the directory.
    /// The corresponding C function is `getdents64`.
    public static func getdents64(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        Int(try call { daxfs_getdents64(fd, buffer.baseAddress, buffer.count) })
    }

    /// The corresponding C function is `fstatvfs`.
    public static func fstatvfs(_ fd: Int32) throws(Errno) -> statvfs {
        var result = statvfs()
        _ = try call { Glibc.fstatvfs(fd, &result) }
        return result
    }

    /// The corresponding C function is `faccessat`.
    public static func faccessat(_ directory: Int32, _ path: UnsafePointer<CChar>, mode: Int32, flags: Int32) throws(Errno) {
        _ = try call { Glibc.faccessat(directory, path, mode, flags) }
    }

    /// The corresponding C function is `fallocate`.
    public static func fallocate(_ fd: Int32, mode: Int32, offset: Int64, length: Int64) throws(Errno) {
        _ = try call { daxfs_fallocate(fd, mode, offset, length) }
    }

    /// Copies up to `length` bytes between explicit offsets, which advance.
    /// The corresponding C function is `copy_file_range`.
    public static func copyFileRange(from input: Int32, offset inputOffset: inout Int64, to output: Int32, offset outputOffset: inout Int64,
                                     length: Int, flags: UInt32) throws(Errno) -> Int {
        try call { daxfs_copy_file_range(input, &inputOffset, output, &outputOffset, length, flags) }
    }

    /// The corresponding C function is `flock`.
    public static func flock(_ fd: Int32, operation: Int32, retryOnInterrupt: Bool = true) throws(Errno) {
        _ = try call(retryOnInterrupt: retryOnInterrupt) { daxfs_flock(fd, operation) }
    }

    /// A record lock command (`F_OFD_GETLK`, `F_OFD_SETLK`, `F_GETLK`, ...) on a
    /// `struct flock` built from `lock`; returns the kernel's answer for GETLK.
    /// The corresponding C function is `fcntl`.
    public static func fcntlLock(_ fd: Int32, command: Int32, _ lock: RecordLock) throws(Errno) -> RecordLock {
        var type = lock.type, start = lock.start, length = lock.length, pid = lock.pid
        _ = try call { daxfs_fcntl_lock(fd, command, &type, Int16(SEEK_SET), &start, &length, &pid) }
        return RecordLock(type: type, start: start, length: length, pid: pid)
    }

    /// With an empty `buffer` returns the value's size.
    /// The corresponding C function is `getxattr`.
    public static func getxattr(_ path: UnsafePointer<CChar>, _ name: UnsafePointer<CChar>, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        try call { daxfs_getxattr(path, name, buffer.baseAddress, buffer.count) }
    }

    /// The corresponding C function is `setxattr`.
    public static func setxattr(_ path: UnsafePointer<CChar>, _ name: UnsafePointer<CChar>, value: UnsafeRawBufferPointer, flags: Int32) throws(Errno) {
        _ = try call { daxfs_setxattr(path, name, value.baseAddress, value.count, flags) }
    }

    /// With an empty `buffer` returns the list's size.
    /// The corresponding C function is `listxattr`.
    public static func listxattr(_ path: UnsafePointer<CChar>, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        try call { daxfs_listxattr(path, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), buffer.count) }
    }

    /// The corresponding C function is `removexattr`.
    public static func removexattr(_ path: UnsafePointer<CChar>, _ name: UnsafePointer<CChar>) throws(Errno) {
        _ = try call { daxfs_removexattr(path, name) }
    }

}

/// A `struct flock` range with `l_whence = SEEK_SET`; `length` 0 means to end of file.
public struct RecordLock: Sendable, Equatable {
    public var type: Int16
    public var start: Int64
    public var length: Int64
    public var pid: Int32
    public init(type: Int16, start: Int64, length: Int64, pid: Int32 = 0) {
        self.type = type; self.start = start; self.length = length; self.pid = pid
    }
}

extension Syscall {
    /// An anonymous shared-memory file of `size` bytes (memfd_create with
    /// MFD_CLOEXEC, then ftruncate).
    public static func sharedMemory(name: String, size: UInt64) throws(Errno) -> FileDescriptor {
        guard size <= UInt64(Int64.max) else { throw .invalidArgument }
        let fd = FileDescriptor(adopting: try call { daxfs_memfd(name) })
        try ftruncate(fd.rawValue, size: Int64(size))
        return fd
    }
}
