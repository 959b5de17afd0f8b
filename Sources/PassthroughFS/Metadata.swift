import CLinux
import FUSEABI
import FUSEServer
import Glibc
import HostSystem

/// Attributes, names and directory structure.
extension PassthroughFS {
    public func getattr(_ ctx: RequestContext, node: NodeID, handle: FileHandle?) throws(Errno) -> AttrReply {
        try become(ctx)
        let inode = try inode(node)
        let file = handle.flatMap { handle in handles.withLock { $0.files[handle.rawValue] } }
        // fstat works on O_PATH descriptors and never follows a symlink.
        let st = try attributes(inode, file: file)
        return AttrReply(attr: guestAttr(st), timeout: attrTimeout)
    }

    public func setattr(_ ctx: RequestContext, node: NodeID, _ request: SetattrRequest) throws(Errno) -> AttrReply {
        try refuseChangesWhenReadOnly()
        try become(ctx)
        let inode = try inode(node)
        let file = request.handle.flatMap { handle in handles.withLock { $0.files[handle.rawValue] } }

        if let mode = request.mode {
            if let file {
                try Syscall.fchmod(file.fd, mode: mode & 0o7777)
            } else if inode.isSymlink {
                throw .notSupported // Linux cannot chmod a symlink
            } else {
                try withProcName(inode) { name throws(Errno) in
                    try Syscall.fchmodat(procSelfFD, name, mode: mode & 0o7777, flags: 0)
                }
            }
        }
        if request.uid != nil || request.gid != nil {
            // To host ids; an id that may not own files is refused.
            let uid = try request.uid.map { (id) throws(Errno) -> UInt32 in
                guard let host = options.uidTranslation.toHost(id) else { throw .notPermitted }
                return host
            }
            let gid = try request.gid.map { (id) throws(Errno) -> UInt32 in
                guard let host = options.gidTranslation.toHost(id) else { throw .notPermitted }
                return host
            }
            try inode.withFD { fd throws(Errno) in
                try Syscall.fchownat(fd, "", uid: uid, gid: gid,
                                     flags: DAXFS_AT_EMPTY_PATH | DAXFS_AT_SYMLINK_NOFOLLOW)
            }
        }
        if let size = request.size {
            guard size <= UInt64(Int64.max) else { throw .invalidArgument }
            if let file, file.accessMode != O_RDONLY {
                try Syscall.ftruncate(file.fd, size: Int64(size))
            } else {
                if inode.isDirectory { throw .isDirectory }
                if !inode.isRegular { throw .invalidArgument }
                let fd = FileDescriptor(adopting: try reopen(inode, flags: O_WRONLY))
                try Syscall.ftruncate(fd.rawValue, size: Int64(size))
            }
        }
        if request.killSuidgid && request.mode == nil && !inode.isSymlink {
            try killSetID(inode, fd: file?.fd, as: ctx)
        }
        if request.atime != nil || request.mtime != nil {
            let times = (timespec(request.atime), timespec(request.mtime))
            if let file {
                try Syscall.futimens(file.fd, times)
            } else {
                try inode.withFD { fd throws(Errno) in
                    try Syscall.utimensat(fd, "", times, flags: DAXFS_AT_EMPTY_PATH | DAXFS_AT_SYMLINK_NOFOLLOW)
                }
            }
        }
        // ctime cannot be set on Linux; every change above updated it anyway.
        let st = try attributes(inode)
        return AttrReply(attr: guestAttr(st), timeout: attrTimeout)
    }

    public func readlink(_ ctx: RequestContext, node: NodeID) throws(Errno) -> [UInt8] {
        try become(ctx)
        let inode = try inode(node)
        guard inode.isSymlink else { throw .invalidArgument }
        // One byte more than PATH_MAX tells a full buffer from a complete target.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(PATH_MAX) + 1, alignment: 1)
        defer { buffer.deallocate() }
        let count = try inode.withFD { fd throws(Errno) in try Syscall.readlinkat(fd, "", into: buffer) }
        guard count < buffer.count else { throw .nameTooLong }
        return Array(buffer[..<count])
    }

    public func symlink(_ ctx: RequestContext, parent: NodeID, name: FileName, target: CStringArg) throws(Errno) -> Entry {
        try refuseChangesWhenReadOnly()
        try refuseForbiddenOwner(ctx)
        try become(ctx)
        let directory = try inode(parent)
        return try name.withCString { name throws(Errno) in
            try directory.withFD { directoryFD throws(Errno) in
                try target.withCString { target throws(Errno) in try Syscall.symlinkat(target, directoryFD, name) }
            }
            let (inode, st) = try lookupReference(parent: directory, name: name)
            return entry(inode, st)
        }
    }

    public func mknod(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, rdev: UInt32, umask: UInt32) throws(Errno) -> Entry {
        try refuseChangesWhenReadOnly()
        try refuseForbiddenOwner(ctx)
        try become(ctx)
        let directory = try inode(parent)
        prepareToCreate(umask: umask)
        return try name.withCString { name throws(Errno) in
            try directory.withFD { directoryFD throws(Errno) in
                try Syscall.mknodat(directoryFD, name, mode: mode, device: DeviceNumber.decode(rdev))
            }
            let (inode, st) = try lookupReference(parent: directory, name: name)
            return entry(inode, st)
        }
    }

    public func mkdir(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, umask: UInt32) throws(Errno) -> Entry {
        try refuseChangesWhenReadOnly()
        try refuseForbiddenOwner(ctx)
        try become(ctx)
        let directory = try inode(parent)
        prepareToCreate(umask: umask)
        return try name.withCString { name throws(Errno) in
            try directory.withFD { directoryFD throws(Errno) in try Syscall.mkdirat(directoryFD, name, mode: mode & 0o7777) }
            let (inode, st) = try lookupReference(parent: directory, name: name)
            return entry(inode, st)
        }
    }

    public func unlink(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) {
        try refuseChangesWhenReadOnly()
        try become(ctx)
        let directory = try inode(parent)
        try directory.withFD { directoryFD throws(Errno) in
            try name.withCString { name throws(Errno) in try Syscall.unlinkat(directoryFD, name, flags: 0) }
        }
    }

    public func rmdir(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) {
        try refuseChangesWhenReadOnly()
        try become(ctx)
        let directory = try inode(parent)
        try directory.withFD { directoryFD throws(Errno) in
            try name.withCString { name throws(Errno) in try Syscall.unlinkat(directoryFD, name, flags: DAXFS_AT_REMOVEDIR) }
        }
    }

    public func rename(_ ctx: RequestContext, parent: NodeID, name: FileName, newParent: NodeID, newName: FileName, flags: UInt32) throws(Errno) {
        try refuseChangesWhenReadOnly()
        try become(ctx)
        let known = DAXFS_RENAME_NOREPLACE | DAXFS_RENAME_EXCHANGE | DAXFS_RENAME_WHITEOUT
        guard flags & ~known == 0 else { throw .invalidArgument }
        let from = try inode(parent)
        let to = try inode(newParent)
        try from.withFD { fromFD throws(Errno) in
            try to.withFD { toFD throws(Errno) in
                try name.withCString { old throws(Errno) in
                    try newName.withCString { new throws(Errno) in try Syscall.renameat2(fromFD, old, toFD, new, flags: flags) }
                }
            }
        }
    }

    public func link(_ ctx: RequestContext, node: NodeID, newParent: NodeID, newName: FileName) throws(Errno) -> Entry {
        try refuseChangesWhenReadOnly()
        try become(ctx)
        let inode = try inode(node)
        let directory = try self.inode(newParent)
        let st = try inode.withFD { fd throws(Errno) in
            try directory.withFD { directoryFD throws(Errno) in
                try newName.withCString { name throws(Errno) in
                    do throws(Errno) {
                        // Needs CAP_DAC_READ_SEARCH; the /proc form below does not.
                        try Syscall.linkat(fd, "", directoryFD, name, flags: DAXFS_AT_EMPTY_PATH)
                    } catch where error == .noEntry || error == .notPermitted {
                        try withProcPath(fd) { path throws(Errno) in
                            try Syscall.linkat(DAXFS_AT_FDCWD, path, directoryFD, name, flags: Int32(AT_SYMLINK_FOLLOW))
                        }
                    }
                }
            }
            return try Syscall.fstat(fd)
        }
        return entry(addReference(inode), st)
    }

    public func statfs(_ ctx: RequestContext, node: NodeID) throws(Errno) -> StatfsReply {
        try become(ctx)
        let inode = try inode(node)
        let vfs = try inode.withFD { fd throws(Errno) in try Syscall.fstatvfs(fd) }
        var reply = StatfsReply()
        reply.blocks = UInt64(vfs.f_blocks); reply.bfree = UInt64(vfs.f_bfree); reply.bavail = UInt64(vfs.f_bavail)
        reply.files = UInt64(vfs.f_files); reply.ffree = UInt64(vfs.f_ffree)
        reply.bsize = UInt32(clamping: UInt64(vfs.f_bsize)); reply.frsize = UInt32(clamping: UInt64(vfs.f_frsize))
        reply.namelen = UInt32(clamping: UInt64(vfs.f_namemax))
        return reply
    }

    public func access(_ ctx: RequestContext, node: NodeID, mask: UInt32) throws(Errno) {
        try become(ctx)
        let inode = try inode(node)
        guard mask & ~UInt32(R_OK | W_OK | X_OK) == 0 else { throw .invalidArgument }
        // AT_EACCESS: check with the thread's fsuid/fsgid (the caller's, see
        // `become`); plain access(2) would use the process's real uid (root).
        try withProcName(inode) { name throws(Errno) in
            try Syscall.faccessat(procSelfFD, name, mode: Int32(mask), flags: AT_EACCESS)
        }
    }

    public func syncfs(_ ctx: RequestContext, node: NodeID) throws(Errno) {
        try become(ctx)
        try Syscall.syncfs(rootReadFD)
    }
}

extension timespec {
    /// A SETATTR time: nil leaves it (UTIME_OMIT).
    init(_ update: TimeUpdate?) {
        switch update {
        case nil: self.init(tv_sec: 0, tv_nsec: Int(DAXFS_UTIME_OMIT))
        case .now: self.init(tv_sec: 0, tv_nsec: Int(DAXFS_UTIME_NOW))
        case .set(let seconds, let nanoseconds):
            self.init(tv_sec: Int(seconds), tv_nsec: Int(min(nanoseconds, 999_999_999)))
        }
    }
}
