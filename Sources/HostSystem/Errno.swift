import CLinux
import Glibc

/// A POSIX error number. FUSE replies carry it negated in `fuse_out_header.error`.
public struct Errno: Error, RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's errno. Only `Syscall` reads it.
    static var current: Errno { Errno(daxfs_errno()) }

    public var description: String {
        guard let text = strerror(rawValue) else { return "errno \(rawValue)" }
        return String(cString: text)
    }

    public static let notPermitted = Errno(EPERM)
    public static let noEntry = Errno(ENOENT)
    public static let interrupted = Errno(EINTR)
    public static let io = Errno(EIO)
    public static let badFileDescriptor = Errno(EBADF)
    public static let wouldBlock = Errno(EAGAIN)
    public static let noMemory = Errno(ENOMEM)
    public static let permissionDenied = Errno(EACCES)
    public static let busy = Errno(EBUSY)
    public static let exists = Errno(EEXIST)
    public static let crossDevice = Errno(EXDEV)
    public static let noDevice = Errno(ENODEV)
    public static let notDirectory = Errno(ENOTDIR)
    public static let isDirectory = Errno(EISDIR)
    public static let invalidArgument = Errno(EINVAL)
    public static let fileTooLarge = Errno(EFBIG)
    public static let noSpace = Errno(ENOSPC)
    public static let range = Errno(ERANGE)
    public static let nameTooLong = Errno(ENAMETOOLONG)
    public static let notImplemented = Errno(ENOSYS)
    public static let notEmpty = Errno(ENOTEMPTY)
    public static let loop = Errno(ELOOP)
    public static let noData = Errno(ENODATA)
    public static let notSupported = Errno(EOPNOTSUPP)
    public static let overflow = Errno(EOVERFLOW)
    public static let staleHandle = Errno(ESTALE)
    public static let protocolError = Errno(EPROTO)
    public static let readOnlyFileSystem = Errno(EROFS)
    public static let notConnected = Errno(ENOTCONN)
}
