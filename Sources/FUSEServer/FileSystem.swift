import FUSEABI
import HostSystem

/// A filesystem served over FUSE.
///
/// Threading: every method is synchronous and may be called on any of the
/// transport's worker threads, concurrently. Implementations do their own
/// locking. Methods may block (disk I/O, SETLKW); they never run on Swift
/// concurrency's cooperative threads.
///
/// Errors: throw an `Errno`; the session sends it to the kernel. Every method
/// defaults to ENOSYS, which the kernel remembers for some operations (FLUSH,
/// FSYNC, SETXATTR, ...) and stops sending.
///
/// Lookup counts: each reply that carries an `Entry` with a nonzero node —
/// from `lookup`, `mknod`, `mkdir`, `symlink`, `link`, `create`, `tmpfile`
/// and each READDIRPLUS entry the `DirectoryWriter` accepted — adds one to
/// that node's lookup count. `forget` subtracts. A node must stay valid
/// while its count is above zero; the root starts with an implicit count that
/// is never forgotten. When a method throws after taking a reference, it must
/// drop that reference itself: the kernel never learns of it. The session
/// calls `forget` for entries whose reply could not be delivered.
///
/// Handles: `open`, `create` and `opendir` return a handle the kernel passes
/// back until the matching `release`/`releasedir`; each is released exactly
/// once (after DESTROY or a lost connection, `destroy` releases the rest).
///
/// Timeouts: `Entry.entryTimeout` and `attrTimeout` tell the kernel how long
/// it may trust a name and attributes without asking again; they trade
/// freshness against round trips when the backing store changes behind the
/// server.
public protocol FileSystem: AnyObject, Sendable {
    /// INIT capabilities this filesystem wants; the session grants those the kernel also offers.
    var wantedCapabilities: InitFlags { get }

    /// Called once, after INIT negotiation, before any other request.
    func initialize(connection: FUSEConnection) throws(Errno)
    /// FUSE_DESTROY or the end of the connection: drop every node and handle.
    func destroy()

    func lookup(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) -> Entry
    /// Drops `count` lookups of `node`. No reply.
    func forget(_ node: NodeID, count: UInt64)
    func getattr(_ ctx: RequestContext, node: NodeID, handle: FileHandle?) throws(Errno) -> AttrReply
    func setattr(_ ctx: RequestContext, node: NodeID, _ request: SetattrRequest) throws(Errno) -> AttrReply
    /// The target of a symlink, as raw bytes (no NUL).
    func readlink(_ ctx: RequestContext, node: NodeID) throws(Errno) -> [UInt8]
    func symlink(_ ctx: RequestContext, parent: NodeID, name: FileName, target: CStringArg) throws(Errno) -> Entry
    /// `mode` includes the file type bits; `umask` applies only with FUSE_DONT_MASK.
    func mknod(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, rdev: UInt32, umask: UInt32) throws(Errno) -> Entry
    func mkdir(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, umask: UInt32) throws(Errno) -> Entry
    func unlink(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno)
    func rmdir(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno)
    /// `flags`: 0, RENAME_NOREPLACE, RENAME_EXCHANGE or RENAME_WHITEOUT.
    func rename(_ ctx: RequestContext, parent: NodeID, name: FileName, newParent: NodeID, newName: FileName, flags: UInt32) throws(Errno)
    func link(_ ctx: RequestContext, node: NodeID, newParent: NodeID, newName: FileName) throws(Errno) -> Entry
    /// `flags` are the open(2) flags (O_ACCMODE, O_TRUNC, O_APPEND, ...). `killSuidgid`: FUSE_OPEN_KILL_SUIDGID.
    func open(_ ctx: RequestContext, node: NodeID, flags: UInt32, killSuidgid: Bool) throws(Errno) -> Opened
    func create(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, flags: UInt32, umask: UInt32, killSuidgid: Bool) throws(Errno) -> (Entry, Opened)
    /// Reads into `buffer` (already limited to the requested size); returns the byte count. Short only at end of file.
    func read(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, lockOwner: UInt64?) throws(Errno) -> Int
    /// Writes `data`; returns the byte count written.
    func write(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, data: UnsafeRawBufferPointer, writeFlags: UInt32, lockOwner: UInt64?) throws(Errno) -> Int
    /// close(2) of one file descriptor; POSIX locks of `lockOwner` go away here.
    func flush(_ ctx: RequestContext, node: NodeID, handle: FileHandle, lockOwner: UInt64) throws(Errno)
    /// The last close of an open: the handle is gone afterwards. `flockRelease`: drop flock locks held through it.
    func release(_ ctx: RequestContext, node: NodeID, handle: FileHandle, flags: UInt32, lockOwner: UInt64?, flush: Bool, flockRelease: Bool) throws(Errno)
    func fsync(_ ctx: RequestContext, node: NodeID, handle: FileHandle, datasync: Bool) throws(Errno)
    func opendir(_ ctx: RequestContext, node: NodeID, flags: UInt32) throws(Errno) -> Opened
    /// Fills `writer` with entries from `offset` (0 = start; else an earlier `nextOffset`).
    /// With `writer.isPlus`, each accepted entry carries a lookup reference.
    func readdir(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, writer: inout DirectoryWriter) throws(Errno)
    func releasedir(_ ctx: RequestContext, node: NodeID, handle: FileHandle, flags: UInt32) throws(Errno)
    func fsyncdir(_ ctx: RequestContext, node: NodeID, handle: FileHandle, datasync: Bool) throws(Errno)
    func statfs(_ ctx: RequestContext, node: NodeID) throws(Errno) -> StatfsReply
    func setxattr(_ ctx: RequestContext, node: NodeID, name: CStringArg, value: UnsafeRawBufferPointer, flags: UInt32, setxattrFlags: UInt32) throws(Errno)
    /// With `buffer == nil` returns the value's size; else copies the value in and returns its
    /// length, or throws ERANGE when it does not fit.
    func getxattr(_ ctx: RequestContext, node: NodeID, name: CStringArg, into buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int
    /// The NUL-separated name list; same size protocol as `getxattr`.
    func listxattr(_ ctx: RequestContext, node: NodeID, into buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int
    func removexattr(_ ctx: RequestContext, node: NodeID, name: CStringArg) throws(Errno)
    /// access(2) with `mask` of R_OK, W_OK, X_OK (F_OK = 0).
    func access(_ ctx: RequestContext, node: NodeID, mask: UInt32) throws(Errno)
    func fallocate(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, length: UInt64, mode: UInt32) throws(Errno)
    /// SEEK_SET/CUR/END/DATA/HOLE; returns the new offset.
    func lseek(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, whence: UInt32) throws(Errno) -> UInt64
    func copyFileRange(_ ctx: RequestContext, nodeIn: NodeID, handleIn: FileHandle, offsetIn: UInt64,
                       nodeOut: NodeID, handleOut: FileHandle, offsetOut: UInt64, length: UInt64, flags: UInt64) throws(Errno) -> UInt64
    /// POSIX byte-range lock test: returns the conflicting lock, or one with type F_UNLCK.
    func getlk(_ ctx: RequestContext, node: NodeID, handle: FileHandle, owner: UInt64, lock: LockRange) throws(Errno) -> LockRange
    /// POSIX lock (or flock(2) when `isFlock`). With `wait`, blocks until granted
    /// or `ctx.isInterrupted` (then EINTR).
    func setlk(_ ctx: RequestContext, node: NodeID, handle: FileHandle, owner: UInt64, lock: LockRange, wait: Bool, isFlock: Bool) throws(Errno)
    func syncfs(_ ctx: RequestContext, node: NodeID) throws(Errno)
    /// O_TMPFILE: an unnamed file in directory `parent`.
    func tmpfile(_ ctx: RequestContext, parent: NodeID, mode: UInt32, flags: UInt32, umask: UInt32) throws(Errno) -> (Entry, Opened)
    func bmap(_ ctx: RequestContext, node: NodeID, block: UInt64, blockSize: UInt32) throws(Errno) -> UInt64
    /// A descriptor of `node`'s data for a DAX mapping (FUSE_SETUPMAPPING): the
    /// open `handle`'s, or — when nil, as Linux always sends — one the
    /// filesystem opens itself, read-write when `writable` (EACCES when the
    /// file cannot be opened for writing). The filesystem may cache it.
    func mappingDescriptor(_ ctx: RequestContext, node: NodeID, handle: FileHandle?, writable: Bool) throws(Errno) -> SharedDescriptor
    /// FUSE direct mmap (a daxfs extension, seed 003): the region of server
    /// memory that backs a client's mmap of [offset, offset+length) of open
    /// file `handle`. The policy is the filesystem's: one region per file,
    /// per open, per user, or a fresh private one. ENOSYS (the default): the
    /// client falls back to DAX or copied I/O.
    func directMmap(_ ctx: RequestContext, node: NodeID, handle: FileHandle, request: DirectMmapRequest) throws(Errno) -> DirectMmapGrant
    /// The last client mapping of `region` went away (MUNMAP, or the
    /// connection that held it ended). Drop the region to free it, or keep it.
    func regionUnmapped(_ region: SharedRegion)
}

extension FileSystem {
    public var wantedCapabilities: InitFlags { [] }
    public func initialize(connection: FUSEConnection) throws(Errno) {}
    public func destroy() {}
    public func lookup(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) -> Entry { throw .notImplemented }
    public func forget(_ node: NodeID, count: UInt64) {}
    public func getattr(_ ctx: RequestContext, node: NodeID, handle: FileHandle?) throws(Errno) -> AttrReply { throw .notImplemented }
    public func setattr(_ ctx: RequestContext, node: NodeID, _ request: SetattrRequest) throws(Errno) -> AttrReply { throw .notImplemented }
    public func readlink(_ ctx: RequestContext, node: NodeID) throws(Errno) -> [UInt8] { throw .notImplemented }
    public func symlink(_ ctx: RequestContext, parent: NodeID, name: FileName, target: CStringArg) throws(Errno) -> Entry { throw .notImplemented }
    public func mknod(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, rdev: UInt32, umask: UInt32) throws(Errno) -> Entry { throw .notImplemented }
    public func mkdir(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, umask: UInt32) throws(Errno) -> Entry { throw .notImplemented }
    public func unlink(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) { throw .notImplemented }
    public func rmdir(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) { throw .notImplemented }
    public func rename(_ ctx: RequestContext, parent: NodeID, name: FileName, newParent: NodeID, newName: FileName, flags: UInt32) throws(Errno) { throw .notImplemented }
    public func link(_ ctx: RequestContext, node: NodeID, newParent: NodeID, newName: FileName) throws(Errno) -> Entry { throw .notImplemented }
    public func open(_ ctx: RequestContext, node: NodeID, flags: UInt32, killSuidgid: Bool) throws(Errno) -> Opened { throw .notImplemented }
    public func create(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, flags: UInt32, umask: UInt32, killSuidgid: Bool) throws(Errno) -> (Entry, Opened) { throw .notImplemented }
    public func read(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, lockOwner: UInt64?) throws(Errno) -> Int { throw .notImplemented }
    public func write(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, data: UnsafeRawBufferPointer, writeFlags: UInt32, lockOwner: UInt64?) throws(Errno) -> Int { throw .notImplemented }
    public func flush(_ ctx: RequestContext, node: NodeID, handle: FileHandle, lockOwner: UInt64) throws(Errno) { throw .notImplemented }
    public func release(_ ctx: RequestContext, node: NodeID, handle: FileHandle, flags: UInt32, lockOwner: UInt64?, flush: Bool, flockRelease: Bool) throws(Errno) {}
    public func fsync(_ ctx: RequestContext, node: NodeID, handle: FileHandle, datasync: Bool) throws(Errno) { throw .notImplemented }
    public func opendir(_ ctx: RequestContext, node: NodeID, flags: UInt32) throws(Errno) -> Opened { throw .notImplemented }
    public func readdir(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, writer: inout DirectoryWriter) throws(Errno) { throw .notImplemented }
    public func releasedir(_ ctx: RequestContext, node: NodeID, handle: FileHandle, flags: UInt32) throws(Errno) {}
    public func fsyncdir(_ ctx: RequestContext, node: NodeID, handle: FileHandle, datasync: Bool) throws(Errno) { throw .notImplemented }
    public func statfs(_ ctx: RequestContext, node: NodeID) throws(Errno) -> StatfsReply { throw .notImplemented }
    public func setxattr(_ ctx: RequestContext, node: NodeID, name: CStringArg, value: UnsafeRawBufferPointer, flags: UInt32, setxattrFlags: UInt32) throws(Errno) { throw .notImplemented }
    public func getxattr(_ ctx: RequestContext, node: NodeID, name: CStringArg, into buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int { throw .notImplemented }
    public func listxattr(_ ctx: RequestContext, node: NodeID, into buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int { throw .notImplemented }
    public func removexattr(_ ctx: RequestContext, node: NodeID, name: CStringArg) throws(Errno) { throw .notImplemented }
    public func access(_ ctx: RequestContext, node: NodeID, mask: UInt32) throws(Errno) { throw .notImplemented }
    public func fallocate(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, length: UInt64, mode: UInt32) throws(Errno) { throw .notImplemented }
    public func lseek(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, whence: UInt32) throws(Errno) -> UInt64 { throw .notImplemented }
    public func copyFileRange(_ ctx: RequestContext, nodeIn: NodeID, handleIn: FileHandle, offsetIn: UInt64,
                              nodeOut: NodeID, handleOut: FileHandle, offsetOut: UInt64, length: UInt64, flags: UInt64) throws(Errno) -> UInt64 { throw .notImplemented }
    public func getlk(_ ctx: RequestContext, node: NodeID, handle: FileHandle, owner: UInt64, lock: LockRange) throws(Errno) -> LockRange { throw .notImplemented }
    public func setlk(_ ctx: RequestContext, node: NodeID, handle: FileHandle, owner: UInt64, lock: LockRange, wait: Bool, isFlock: Bool) throws(Errno) { throw .notImplemented }
    public func syncfs(_ ctx: RequestContext, node: NodeID) throws(Errno) { throw .notImplemented }
    public func tmpfile(_ ctx: RequestContext, parent: NodeID, mode: UInt32, flags: UInt32, umask: UInt32) throws(Errno) -> (Entry, Opened) { throw .notImplemented }
    public func bmap(_ ctx: RequestContext, node: NodeID, block: UInt64, blockSize: UInt32) throws(Errno) -> UInt64 { throw .notImplemented }
    public func mappingDescriptor(_ ctx: RequestContext, node: NodeID, handle: FileHandle?, writable: Bool) throws(Errno) -> SharedDescriptor { throw .notImplemented }
    public func directMmap(_ ctx: RequestContext, node: NodeID, handle: FileHandle, request: DirectMmapRequest) throws(Errno) -> DirectMmapGrant { throw .notImplemented }
    public func regionUnmapped(_ region: SharedRegion) {}
}
