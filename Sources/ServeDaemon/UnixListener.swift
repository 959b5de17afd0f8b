import CLinux
import Glibc
import HostSystem

/// A listening Unix stream socket at a path.
public final class UnixListener: Sendable {
    public let fd: Int32
    /// The socket's path; nil for an inherited socket (it is not unlinked).
    public let path: String?
    /// The socket's directory (O_PATH) and name, so the socket is removed at
    /// the end even from inside a sandbox where `path` is out of reach.
    private let directoryFD: Int32
    private let name: String

    /// A socket that already listens, inherited from the parent process
    /// (libvirt passes one with `--fd=N`): it must be a Unix stream socket
    /// in the listening state.
    public init(inheritedDescriptor fd: Int32) throws(ServeError) {
        var type: Int32 = 0, listening: Int32 = 0, domain: Int32 = 0
        var length = socklen_t(4)
        guard fd >= 0, fcntl(fd, F_GETFD) >= 0 else { throw ServeError("--fd \(fd) is not an open descriptor") }
        guard getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) == 0 else {
            throw ServeError("--fd \(fd) is not a socket: \(Errno(daxfs_errno()))")
        }
        length = 4
        _ = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length)
        length = 4
        _ = getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length)
        guard domain == AF_UNIX, type == Int32(SOCK_STREAM.rawValue) else {
            throw ServeError("--fd \(fd) is not a Unix stream socket")
        }
        guard listening != 0 else { throw ServeError("--fd \(fd) is a socket that does not listen (it must be bound and listening)") }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        self.fd = fd
        path = nil
        directoryFD = -1
        name = ""
    }

    /// A socket created at `path`, listening; with `group`, owned by that
    /// group and connectable by its members (virtiofsd's --socket-group).
    public convenience init(path: String, group: String?, backlog: Int32 = 1) throws(ServeError) {
        var gid: gid_t?
        if let group {
            guard let entry = getgrnam(group) else { throw ServeError("--socket-group \(group): no such group") }
            gid = entry.pointee.gr_gid
        }
        try self.init(path: path, backlog: backlog)
        if let gid, chown(path, uid_t.max, gid) != 0 || chmod(path, 0o660) != 0 {
            let error = Errno(daxfs_errno())
            close()
            throw ServeError("cannot give socket \(path) to group \(group ?? ""): \(error)")
        }
    }

    public init(path: String, backlog: Int32 = 1) throws(ServeError) {
        let capacity = MemoryLayout.size(ofValue: sockaddr_un().sun_path)
        guard !path.isEmpty, path.utf8.count < capacity else {
            throw ServeError("socket path \(path) is empty or longer than \(capacity - 1) bytes")
        }
        var info = stat()
        if lstat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFSOCK else { throw ServeError("socket path \(path) exists and is not a socket") }
            unlink(path)  // a stale socket from an earlier run
        }
        // The path appears only once the socket listens: a frontend that
        // connects as soon as it sees the path (as QEMU and the tests do)
        // would otherwise get ECONNREFUSED between bind and listen. So bind
        // a temporary name beside it, listen, then rename it into place.
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        var temporary = "\(directory).\(name).\(getpid())"
        if temporary.utf8.count >= capacity { temporary = path }  // no room for a longer name: bind in place
        unlink(temporary)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ServeError("cannot create a Unix socket: \(Errno(daxfs_errno()))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in temporary.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, backlog) == 0, temporary == path || rename(temporary, path) == 0 else {
            let error = Errno(daxfs_errno())
            if bound == 0 { unlink(temporary) }  // ours, listening or not
            Glibc.close(fd)
            throw ServeError("cannot listen on socket path \(path): \(error)")
        }
        self.fd = fd
        self.path = path
        directoryFD = open(directory.isEmpty ? "." : directory, DAXFS_O_PATH | O_DIRECTORY | O_CLOEXEC)
        self.name = name
    }

    /// The next connection; nil once shut down.
    public func accept() -> Int32? {
        while true {
            let connection = Glibc.accept(fd, nil, nil)
            if connection >= 0 { return connection }
            if daxfs_errno() == EINTR { continue }
            return nil
        }
    }

    public func shutdown() { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    public func close() {
        Glibc.close(fd)
        guard directoryFD >= 0 else { return }
        unlinkat(directoryFD, name, 0)
        Glibc.close(directoryFD)
    }
}
