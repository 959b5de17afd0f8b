import CLinux
import FUSEServer
import Glibc
import HostSystem

extension PassthroughFS {
    /// DAX mappings reuse one descriptor per inode and access mode, opened on
    /// the first SETUPMAPPING and closed with the inode: reopening on every
    /// request would add an open(2) to each mapping's latency.
    public func mappingDescriptor(_ ctx: RequestContext, node: NodeID, handle: FileHandle?, writable: Bool) throws(Errno) -> SharedDescriptor {
        if writable { try refuseChangesWhenReadOnly() }
        try become(ctx)
        let inode: Inode
        if let handle {
            // The caller's open is the permission, as for mmap(2) of its descriptor.
            let file = try openFile(handle)
            guard file.inode.id == node || node.rawValue == 0 else { throw .badFileDescriptor }
            if writable && !file.canWrite { throw .permissionDenied }
            if !file.canRead { throw .permissionDenied }
            inode = file.inode
        } else {
            inode = try self.inode(node)
        }
        guard inode.isRegular else { throw .noDevice }  // mmap(2) of a non-regular file
        // Linux asks without a handle (fh = -1): the caller's own access is
        // checked on every request, since the descriptor below is shared by
        // every caller once opened.
        if handle == nil {
            let wanted = writable ? R_OK | W_OK : R_OK
            let allowed = try withProcName(inode) { name throws(Errno) in faccessat(procSelfFD, name, wanted, DAXFS_AT_EACCESS) == 0 }
            guard allowed else { throw .permissionDenied }
        }
        if let cached = inode.state.withLock({ writable ? $0.mappingWrite : ($0.mappingWrite ?? $0.mappingRead) }) {
            return cached
        }
        let fd: Int32
        do {
            fd = try reopen(inode, flags: writable ? O_RDWR : O_RDONLY)
        } catch {
            // A writable mapping of a file that cannot be written is refused as such.
            if writable && (error == .readOnlyFileSystem || error == .notPermitted || error == .permissionDenied) {
                throw .permissionDenied
            }
            throw error
        }
        let descriptor = SharedDescriptor(adopting: fd)
        return inode.state.withLock { state in
            if writable {
                if let raced = state.mappingWrite { return raced }
                state.mappingWrite = descriptor
            } else {
                if let raced = state.mappingRead { return raced }
                state.mappingRead = descriptor
            }
            return descriptor
        }
    }
}

extension PassthroughFS {
    /// FUSE direct mmap: ring files (`Options.ringFiles`) get a region of
    /// server memory; every other file ENOSYS, so the client uses DAX.
    public func directMmap(_ ctx: RequestContext, node: NodeID, handle: FileHandle, request: DirectMmapRequest) throws(Errno) -> DirectMmapGrant {
        guard let rings = options.ringFiles else { throw .notImplemented }
        let file = try openFile(handle)
        guard file.inode.id == node else { throw .badFileDescriptor }
        guard rings.handles(file.inode.key) else { throw .notImplemented }
        // The open mode bounds the mapping, as for mmap(2) of the file.
        if request.writable && !file.canWrite { throw .permissionDenied }
        return try rings.grant(file.inode.key, handle: handle.rawValue, request: request)
    }

    public func regionUnmapped(_ region: SharedRegion) { options.ringFiles?.unmapped(region) }
}
