import CLinux
import FUSEABI
import FUSEServer
import Glibc
import HostSystem

/// POSIX record locks per lock owner, emulated with OFD locks on one
/// descriptor per (inode, owner): OFD locks belong to the open file
/// description, so each owner's locks conflict with other owners' and with
/// host processes' POSIX locks, yet never with its own. flock(2) locks go on
/// the handle's own descriptor.
///
/// Waiting (SETLKW) polls with backoff instead of blocking in the kernel, so
/// that an interrupted request can answer EINTR.
extension PassthroughFS {
    public func getlk(_ ctx: RequestContext, node: NodeID, handle: FileHandle, owner: UInt64, lock: LockRange) throws(Errno) -> LockRange {
        try become(ctx)
        let file = try openFile(handle)
        var probe = try Self.recordLock(lock)
        guard probe.type != Int16(F_UNLCK) else { throw .invalidArgument }
        probe.pid = 0 // OFD commands require l_pid 0
        let (mine, others) = file.inode.state.withLock { state in
            (state.lockOwners[owner]?.descriptor,
             state.lockOwners.filter { $0.key != owner }.prefix(16).map { ($0.value.descriptor, $0.value.pid) })
        }
        // Without locks of its own the owner can test through any descriptor without OFD locks.
        let conflict = try Syscall.fcntlLock(mine?.rawValue ?? file.fd, command: DAXFS_F_OFD_GETLK, probe)
        if conflict.type == Int16(F_UNLCK) {
            return LockRange(start: lock.start, end: lock.end, type: UInt32(F_UNLCK), pid: 0)
        }
        // Which owner holds it? The one whose own view no longer shows this conflict.
        var pid: UInt32 = 0
        for (descriptor, ownerPID) in others {
            if let view = try? Syscall.fcntlLock(descriptor.rawValue, command: DAXFS_F_OFD_GETLK, probe), view != conflict {
                pid = ownerPID
                break
            }
        }
        let end = conflict.length == 0 ? UInt64(Int64.max) : UInt64(conflict.start) + UInt64(conflict.length) - 1
        return LockRange(start: UInt64(conflict.start), end: end, type: UInt32(conflict.type), pid: pid)
    }

    public func setlk(_ ctx: RequestContext, node: NodeID, handle: FileHandle, owner: UInt64, lock: LockRange, wait: Bool, isFlock: Bool) throws(Errno) {
        try become(ctx)
        let file = try openFile(handle)
        if isFlock { return try flock(ctx, file: file, lock: lock, wait: wait) }
        var record = try Self.recordLock(lock)
        record.pid = 0
        let inode = file.inode

        if record.type == Int16(F_UNLCK) {
            guard let descriptor = inode.state.withLock({ $0.lockOwners[owner]?.descriptor }) else { return }
            _ = try Syscall.fcntlLock(descriptor.rawValue, command: DAXFS_F_OFD_SETLK, record)
            return
        }
        // As fcntl(2): a read lock needs a readable file, a write lock a writable one.
        if record.type == Int16(F_RDLCK) && !file.canRead { throw .badFileDescriptor }
        if record.type == Int16(F_WRLCK) && !file.canWrite { throw .badFileDescriptor }

        let descriptor = try ownerDescriptor(inode, owner: owner, pid: lock.pid)
        try retrying(ctx, wait: wait) { () throws(Errno) in
            _ = try Syscall.fcntlLock(descriptor.rawValue, command: DAXFS_F_OFD_SETLK, record)
        }
    }

    private func flock(_ ctx: RequestContext, file: OpenFile, lock: LockRange, wait: Bool) throws(Errno) {
        let operation: Int32
        // bitPattern: the type is the peer's u32; Int32(_:) traps on values past Int32.max.
        switch Int32(bitPattern: lock.type) {
        case F_RDLCK: operation = LOCK_SH
        case F_WRLCK: operation = LOCK_EX
        case F_UNLCK: return try Syscall.flock(file.fd, operation: LOCK_UN)
        default: throw .invalidArgument
        }
        try retrying(ctx, wait: wait) { () throws(Errno) in
            try Syscall.flock(file.fd, operation: operation | LOCK_NB)
        }
    }

    /// Runs a non-blocking lock attempt; with `wait`, retries on conflict with
    /// backoff (100 µs doubling to 10 ms) until granted or interrupted.
    private func retrying(_ ctx: RequestContext, wait: Bool, _ attempt: () throws(Errno) -> Void) throws(Errno) {
        var delay: UInt32 = 100
        while true {
            do {
                return try attempt()
            } catch where wait && (error == .wouldBlock || error == .permissionDenied) {
                if ctx.isInterrupted { throw .interrupted }
                usleep(delay)
                delay = min(delay * 2, 10_000)
                if ctx.isInterrupted { throw .interrupted }
            }
        }
    }

    /// The descriptor carrying `owner`'s locks on `inode`, opened on first use.
    private func ownerDescriptor(_ inode: Inode, owner: UInt64, pid: UInt32) throws(Errno) -> SharedDescriptor {
        try inode.state.withLock { state throws(Errno) -> SharedDescriptor in
            if let existing = state.lockOwners[owner] {
                state.lockOwners[owner]?.pid = pid
                return existing.descriptor
            }
            // Lock owners are the client's to choose: each costs a descriptor.
            let token = try budget.take()
            // Read-write serves both lock types; fall back for files we cannot open so.
            var fd: Int32 = -1
            var lastError = Errno.permissionDenied
            for mode in [O_RDWR, O_RDONLY, O_WRONLY] {
                do throws(Errno) {
                    fd = try reopen(inode, flags: mode)
                    break
                } catch {
                    lastError = error
                }
            }
            guard fd >= 0 else { throw lastError }
            let descriptor = SharedDescriptor(adopting: fd)
            state.lockOwners[owner] = OwnerLock(descriptor: descriptor, token: token, pid: pid)
            return descriptor
        }
    }

    /// A `struct flock` range from FUSE's inclusive one; an end at or past
    /// `Int64.max` (the kernel sends OFFSET_MAX) means to end of file.
    static func recordLock(_ lock: LockRange) throws(Errno) -> RecordLock {
        guard lock.start <= UInt64(Int64.max) else { throw .invalidArgument }
        let type: Int16
        // bitPattern: the type is the peer's u32; Int32(_:) traps on values past Int32.max.
        switch Int32(bitPattern: lock.type) {
        case F_RDLCK, F_WRLCK, F_UNLCK: type = Int16(lock.type)
        default: throw .invalidArgument
        }
        let length: Int64
        if lock.end >= UInt64(Int64.max) {
            length = 0
        } else {
            guard lock.end >= lock.start else { throw .invalidArgument }
            length = Int64(lock.end - lock.start) + 1
        }
        return RecordLock(type: type, start: Int64(lock.start), length: length, pid: 0)
    }
}
