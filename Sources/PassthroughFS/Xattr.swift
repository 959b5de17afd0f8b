import FUSEServer
import HostSystem

/// Extended attributes go through "/proc/self/fd/N": the xattr calls take
/// only paths, and `O_PATH` descriptors refuse the f*xattr forms. The /proc
/// link resolves to the node's inode itself; for a symlink node that is the
/// symlink (like the l*xattr calls), never its target.
extension PassthroughFS {
    public func setxattr(_ ctx: RequestContext, node: NodeID, name: CStringArg, value: UnsafeRawBufferPointer, flags: UInt32, setxattrFlags: UInt32) throws(Errno) {
        try refuseChangesWhenReadOnly()
        try become(ctx)
        guard options.xattr else { throw .notImplemented }
        let inode = try inode(node)
        try withProcPath(inode) { path throws(Errno) in
            try name.withCString { name throws(Errno) in
                try Syscall.setxattr(path, name, value: value, flags: Int32(bitPattern: flags))
            }
        }
    }

    public func getxattr(_ ctx: RequestContext, node: NodeID, name: CStringArg, into buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int {
        try become(ctx)
        // ENOSYS: the kernel answers EOPNOTSUPP from now on without asking.
        guard options.xattr else { throw .notImplemented }
        let inode = try inode(node)
        return try withProcPath(inode) { path throws(Errno) in
            try name.withCString { name throws(Errno) in
                // An empty buffer asks for the size; a short one fails with ERANGE.
                try Syscall.getxattr(path, name, into: buffer ?? UnsafeMutableRawBufferPointer(start: nil, count: 0))
            }
        }
    }

    public func listxattr(_ ctx: RequestContext, node: NodeID, into buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int {
        try become(ctx)
        guard options.xattr else { throw .notImplemented }
        let inode = try inode(node)
        return try withProcPath(inode) { path throws(Errno) in
            try Syscall.listxattr(path, into: buffer ?? UnsafeMutableRawBufferPointer(start: nil, count: 0))
        }
    }

    public func removexattr(_ ctx: RequestContext, node: NodeID, name: CStringArg) throws(Errno) {
        try refuseChangesWhenReadOnly()
        try become(ctx)
        guard options.xattr else { throw .notImplemented }
        let inode = try inode(node)
        try withProcPath(inode) { path throws(Errno) in
            try name.withCString { name throws(Errno) in try Syscall.removexattr(path, name) }
        }
    }
}
