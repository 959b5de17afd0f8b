import CLinux
import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import Synchronization

/// An open file: a real descriptor of the inode, opened with the kernel's
/// flags. Closed when the last holder lets go (after `release` removed it
/// from the table and any request using it finished).
final class OpenFile: Sendable {
    let fd: Int32
    let inode: Inode
    /// `O_RDONLY`, `O_WRONLY` or `O_RDWR`.
    let accessMode: Int32
    /// Holds one use of the inode's passthrough backing id.
    let backed: Bool
    /// Its share of the file system's `DescriptorBudget`.
    let token: DescriptorToken?

    init(fd: Int32, inode: Inode, accessMode: Int32, backed: Bool, token: DescriptorToken? = nil) {
        self.fd = fd; self.inode = inode; self.accessMode = accessMode; self.backed = backed; self.token = token
    }

    deinit { Syscall.close(fd) }

    var canRead: Bool { accessMode != O_WRONLY }
    var canWrite: Bool { accessMode != O_RDONLY }
}

/// Handle value → open file or directory. Values come from a counter.
struct HandleTable {
    var files: [UInt64: OpenFile] = [:]
    var directories: [UInt64: OpenDirectory] = [:]
    var next: UInt64 = 1

    mutating func allocate() -> UInt64 {
        defer { next &+= 1 }
        return next
    }
}

extension PassthroughFS {
    /// Flags for reopening a node: the kernel's, minus those that only make
    /// sense on a name (the /proc link must be followed, too) and O_DIRECT.
    static func reopenFlags(_ flags: UInt32) -> Int32 {
        let tmpfileOnly: Int32 = DAXFS_O_TMPFILE & ~DAXFS_O_DIRECTORY
        return Int32(bitPattern: flags) & ~(O_CREAT | O_EXCL | O_NOCTTY | DAXFS_O_NOFOLLOW | DAXFS_O_PATH | tmpfileOnly | DAXFS_O_DIRECT)
    }

    /// O_DIRECT is dropped from our descriptors: request buffers are not
    /// block-aligned (pread/pwrite would fail with EINVAL), and the client's
    /// page cache is bypassed on its side anyway. Passthrough opens are
    /// unaffected: the kernel opens the backing file with the client's flags.
    static let droppedCreateFlags: Int32 = O_NOCTTY | DAXFS_O_DIRECT

    public func open(_ ctx: RequestContext, node: NodeID, flags: UInt32, killSuidgid: Bool) throws(Errno) -> Opened {
        if options.readOnly && (Int32(bitPattern: flags) & O_ACCMODE != O_RDONLY || Int32(bitPattern: flags) & O_TRUNC != 0) {
            throw .readOnlyFileSystem
        }
        try become(ctx)
        let inode = try inode(node)
        // Reopening a symlink through /proc would open the symlink inode itself.
        if inode.isSymlink { throw .loop }
        let token = try budget.take()
        let fd = try reopen(inode, flags: Self.reopenFlags(flags))
        if killSuidgid && inode.isRegular {
            do { try killSetID(inode, fd: fd, as: ctx) } catch {
                Syscall.close(fd)
                throw error
            }
        }
        return register(fd: fd, inode: inode, flags: flags, token: token)
    }

    public func create(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, flags: UInt32, umask: UInt32, killSuidgid: Bool) throws(Errno) -> (Entry, Opened) {
        try refuseChangesWhenReadOnly()
        try refuseForbiddenOwner(ctx)
        try become(ctx)
        let directory = try inode(parent)
        prepareToCreate(umask: umask)
        let openFlags = (Int32(bitPattern: flags) | O_CREAT | DAXFS_O_NOFOLLOW) & ~Self.droppedCreateFlags
        let token = try budget.take()
        let fd = try directory.withFD { directoryFD throws(Errno) in
            try name.withCString { name throws(Errno) in
                try createOrOpenRegular(directoryFD, name, flags: openFlags, mode: mode & 0o7777)
            }
        }
        return try finishCreate(ctx, fd: fd, flags: flags, killSuidgid: killSuidgid, token: token)
    }

    /// openat(O_CREAT) that never opens an existing special file: the name
    /// is created exclusively first; when it exists (and O_EXCL was not
    /// asked), it is opened O_PATH, and only a regular file is opened again
    /// with `flags` (a device node, FIFO or socket there: EBADF, see `reopen`).
    func createOrOpenRegular(_ directory: Int32, _ name: UnsafePointer<CChar>, flags: Int32, mode: UInt32) throws(Errno) -> Int32 {
        do {
            return try Syscall.openat(directory, name, flags: flags | O_EXCL, mode: mode)
        } catch where error == .exists && flags & O_EXCL == 0 {}
        let path = try Syscall.openat(directory, name, flags: DAXFS_O_PATH | DAXFS_O_NOFOLLOW | O_CLOEXEC)
        defer { Syscall.close(path) }
        let info = try Syscall.fstat(path)
        switch info.st_mode & S_IFMT {
        case S_IFREG: return try reopen(path, flags: flags & ~(O_CREAT | O_EXCL | DAXFS_O_NOFOLLOW))
        case S_IFDIR: throw .isDirectory
        case S_IFLNK: throw .loop
        default: throw .badFileDescriptor
        }
    }

    public func tmpfile(_ ctx: RequestContext, parent: NodeID, mode: UInt32, flags: UInt32, umask: UInt32) throws(Errno) -> (Entry, Opened) {
        try refuseChangesWhenReadOnly()
        try refuseForbiddenOwner(ctx)
        try become(ctx)
        let directory = try inode(parent)
        prepareToCreate(umask: umask)
        // O_TMPFILE refuses O_CREAT; "." relative to the O_PATH parent names the directory.
        let openFlags = (Int32(bitPattern: flags) | DAXFS_O_TMPFILE) & ~(O_CREAT | DAXFS_O_NOFOLLOW | Self.droppedCreateFlags)
        let token = try budget.take()
        let fd = try directory.withFD { directoryFD throws(Errno) in
            try Syscall.openat(directoryFD, ".", flags: openFlags, mode: mode & 0o7777)
        }
        return try finishCreate(ctx, fd: fd, flags: flags, killSuidgid: false, token: token)
    }

    /// Entry and handle for a descriptor `create`/`tmpfile` opened (consumed).
    private func finishCreate(_ ctx: RequestContext, fd: Int32, flags: UInt32, killSuidgid: Bool,
                              token: DescriptorToken) throws(Errno) -> (Entry, Opened) {
        let inode: Inode
        var st: stat
        do {
            st = try Syscall.fstat(fd)
            // The node comes from the descriptor, not the name, which may already be gone.
            inode = try adoptOpened(fd: fd, stat: st)
        } catch {
            Syscall.close(fd)
            throw error
        }
        if killSuidgid {
            do {
                try killSetID(inode, fd: fd, as: ctx)
                st = try Syscall.fstat(fd)
            } catch {
                Syscall.close(fd)
                forget(inode.id, count: 1)
                throw error
            }
        }
        let opened = register(fd: fd, inode: inode, flags: flags, token: token)
        return (entry(inode, st), opened)
    }

    /// Files `fd` (consumed) as a new handle; chooses passthrough and cache flags.
    func register(fd: Int32, inode: Inode, flags: UInt32, token: DescriptorToken) -> Opened {
        var replyFlags: OpenReplyFlags = []
        var backingID: Int32 = 0
        var backed = false
        var id: Int32?
        if inode.isRegular && passthroughActive.load(ordering: .relaxed) {
            id = acquireBacking(inode, fd: fd)
        } else {
            inode.state.withLock { $0.openFiles += 1 }
        }
        if let id {
            replyFlags = .passthrough
            backingID = id
            backed = true
        } else {
            switch options.cache {
            case .auto: break
            case .always: replyFlags = .keepCache
            case .never:
                // Passthrough cannot combine with DIRECT_IO; this file is not passthrough.
                if inode.isRegular { replyFlags = [.directIO, .parallelDirectWrites] }
            }
        }
        let file = OpenFile(fd: fd, inode: inode, accessMode: Int32(bitPattern: flags) & O_ACCMODE, backed: backed, token: token)
        let handle = handles.withLock { table in
            let handle = table.allocate()
            table.files[handle] = file
            return handle
        }
        return Opened(handle: FileHandle(handle), flags: replyFlags, backingID: backingID)
    }

    /// One use of `inode`'s backing id, registering `fd` on first use; nil
    /// serves the open without passthrough. Counts the open either way.
    private func acquireBacking(_ inode: Inode, fd: Int32) -> Int32? {
        guard let registry = backing.withLock({ $0 }) else {
            inode.state.withLock { $0.openFiles += 1 }
            return nil
        }
        var failure: Errno?
        let id = inode.state.withLock { state -> Int32? in
            state.openFiles += 1
            if let id = state.backingID {
                state.backingUsers += 1
                return id
            }
            // Linux refuses to mix passthrough with cached opens of one inode.
            if state.passthroughRefused || state.openFiles > 1 { return nil }
            do throws(Errno) {
                let id = try registry.open(fd: fd)
                state.backingID = id
                state.backingUsers = 1
                return id
            } catch {
                state.passthroughRefused = true
                failure = error
                return nil
            }
        }
        if let failure {
            if failure == .notPermitted { passthroughActive.store(false, ordering: .relaxed) }
            if !passthroughWarned.exchange(true, ordering: .relaxed) {
                let scope = failure == .notPermitted ? "the rest of this connection" : "this file"
                options.logger?.warning("kernel passthrough unavailable (\(failure)); serving I/O through the daemon for \(scope)")
            }
        }
        return id
    }

    /// Undoes `register`: backing use, open count, lock owners.
    func releaseResources(of file: OpenFile, lockOwner: UInt64?) {
        var closeID: Int32?
        var dropped: [OwnerLock] = []
        file.inode.state.withLock { state in
            state.openFiles -= 1
            if file.backed {
                state.backingUsers -= 1
                if state.backingUsers == 0 {
                    closeID = state.backingID
                    state.backingID = nil
                }
            }
            if let lockOwner, let owner = state.lockOwners.removeValue(forKey: lockOwner) { dropped.append(owner) }
            // Nobody can hold a POSIX lock on a file no one has open.
            if state.openFiles == 0 && !state.lockOwners.isEmpty {
                dropped.append(contentsOf: state.lockOwners.values)
                state.lockOwners.removeAll()
            }
        }
        if let closeID, let registry = backing.withLock({ $0 }) {
            do { try registry.close(id: closeID) } catch {
                options.logger?.warning("closing passthrough backing id \(closeID) failed: \(error)")
            }
        }
        _ = dropped // closing their descriptors drops their locks
    }

    public func read(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, lockOwner: UInt64?) throws(Errno) -> Int {
        try become(ctx)
        let file = try openFile(handle)
        guard offset <= UInt64(Int64.max) else { throw .invalidArgument }
        var done = 0
        while done < buffer.count {
            let (position, overflow) = Int64(offset).addingReportingOverflow(Int64(done))
            if overflow { break }
            let count: Int
            do {
                count = try Syscall.pread(file.fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), offset: position)
            } catch {
                if done > 0 { break }
                throw error
            }
            if count == 0 { break }
            done += count
        }
        return done
    }

    public func write(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, data: UnsafeRawBufferPointer, writeFlags: UInt32, lockOwner: UInt64?) throws(Errno) -> Int {
        try refuseChangesWhenReadOnly()
        try become(ctx)
        let file = try openFile(handle)
        guard offset <= UInt64(Int64.max) else { throw .invalidArgument }
        guard Int64(offset).addingReportingOverflow(Int64(data.count)).overflow == false else { throw .fileTooLarge }
        if writeFlags & FUSEFlag.writeKillSuidgid != 0 { try killSetID(file.inode, fd: file.fd, as: ctx) }
        var done = 0
        while done < data.count {
            let count: Int
            do {
                count = try Syscall.pwrite(file.fd, from: UnsafeRawBufferPointer(rebasing: data[done...]), offset: Int64(offset) + Int64(done))
            } catch {
                if done > 0 { break }
                throw error
            }
            if count == 0 { break }
            done += count
        }
        return done
    }

    public func flush(_ ctx: RequestContext, node: NodeID, handle: FileHandle, lockOwner: UInt64) throws(Errno) {
        try become(ctx)
        let file = try openFile(handle)
        // close(2) drops all POSIX locks the closing process holds on the file.
        let owner = file.inode.state.withLock { $0.lockOwners.removeValue(forKey: lockOwner) }
        _ = owner
    }

    public func release(_ ctx: RequestContext, node: NodeID, handle: FileHandle, flags: UInt32, lockOwner: UInt64?, flush: Bool, flockRelease: Bool) throws(Errno) {
        // Not with whatever credentials this thread had last (the kernel
        // sends RELEASE with no caller: uid 0).
        try become(ctx)
        guard let file = handles.withLock({ $0.files.removeValue(forKey: handle.rawValue) }) else { throw .badFileDescriptor }
        // The kernel may still hold this open file description as a backing file; unlock explicitly.
        if flockRelease { try? Syscall.flock(file.fd, operation: LOCK_UN) }
        releaseResources(of: file, lockOwner: lockOwner)
    }

    public func fsync(_ ctx: RequestContext, node: NodeID, handle: FileHandle, datasync: Bool) throws(Errno) {
        try become(ctx)
        let file = try openFile(handle)
        if datasync { try Syscall.fdatasync(file.fd) } else { try Syscall.fsync(file.fd) }
    }

    public func fallocate(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, length: UInt64, mode: UInt32) throws(Errno) {
        try refuseChangesWhenReadOnly()
        try become(ctx)
        let file = try openFile(handle)
        guard offset <= UInt64(Int64.max), length <= UInt64(Int64.max) else { throw .invalidArgument }
        guard Int64(offset).addingReportingOverflow(Int64(length)).overflow == false else { throw .fileTooLarge }
        try Syscall.fallocate(file.fd, mode: Int32(bitPattern: mode), offset: Int64(offset), length: Int64(length))
    }

    public func lseek(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, whence: UInt32) throws(Errno) -> UInt64 {
        try become(ctx)
        let file = try openFile(handle)
        switch Int32(bitPattern: whence) {
        case SEEK_SET, SEEK_CUR, SEEK_END, DAXFS_SEEK_DATA, DAXFS_SEEK_HOLE: break
        default: throw .invalidArgument
        }
        // The wire offset is a signed loff_t; the kernel validates the rest.
        let result = try Syscall.lseek(file.fd, offset: Int64(bitPattern: offset), whence: Int32(bitPattern: whence))
        return UInt64(bitPattern: result)
    }

    public func copyFileRange(_ ctx: RequestContext, nodeIn: NodeID, handleIn: FileHandle, offsetIn: UInt64,
                              nodeOut: NodeID, handleOut: FileHandle, offsetOut: UInt64, length: UInt64, flags: UInt64) throws(Errno) -> UInt64 {
        try refuseChangesWhenReadOnly()
        try become(ctx)
        guard flags == 0 else { throw .invalidArgument }
        let input = try openFile(handleIn)
        let output = try openFile(handleOut)
        guard offsetIn <= UInt64(Int64.max), offsetOut <= UInt64(Int64.max) else { throw .invalidArgument }
        var from = Int64(offsetIn), to = Int64(offsetOut)
        let count = try Syscall.copyFileRange(from: input.fd, offset: &from, to: output.fd, offset: &to,
                                              length: Int(clamping: length), flags: 0)
        return UInt64(count)
    }
}
