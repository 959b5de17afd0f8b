import Glibc
import Synchronization

/// Paths into procfs. Normally "/proc/…". Inside `daxfs-virtiofsd`'s
/// namespace and chroot sandboxes the root is the shared directory, so
/// procfs is not under "/": the sandbox makes it the working directory
/// (`useAsWorkingDirectory`) and these paths become relative to it. Every
/// thread the server starts later inherits that working directory (threads
/// that take their own fs_struct for a umask copy it).
public enum ProcFS {
    private static let relative = Atomic<Bool>(false)

    /// The path of `inside` ("self/fd/3", "1234/maps") in procfs.
    public static func path(_ inside: String) -> String {
        relative.load(ordering: .acquiring) ? inside : "/proc/" + inside
    }

    /// The prefix of `path`: "/proc/" or "" (for callers that build paths in place).
    public static var prefix: String { relative.load(ordering: .acquiring) ? "" : "/proc/" }

    /// Makes the procfs directory `fd` the working directory; from then on
    /// `path` answers relative paths.
    public static func useAsWorkingDirectory(_ fd: Int32) throws(Errno) {
        try Syscall.direct { fchdir(fd) }
        relative.store(true, ordering: .releasing)
    }
}
