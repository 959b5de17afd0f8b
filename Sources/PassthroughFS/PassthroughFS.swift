import CLinux
import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import Logging
import Synchronization

/// Serves a host directory over FUSE, one host call per request where possible.
///
/// Nodes: every node the kernel knows holds an `O_PATH|O_NOFOLLOW` descriptor
/// of its host inode, keyed by (st_dev, st_ino), so renames on the host never
/// break a node or an open file. Past `Options.nodeDescriptorLimit` nodes,
/// the least recently used close theirs and keep a file handle to reopen it
/// (`NodeDescriptors`), so a share may hold more files than the process may
/// open. Node ids come from a counter and are never
/// reused; a lookup of a known inode returns the same id. Lookup counts are
/// exact (see `FileSystem`); a node leaves the table when `forget` brings its
/// count to zero, and its descriptor closes when the last user lets go. The
/// root (node 1) is never forgotten.
///
/// Sandboxing: name-based operations are `*at` calls on the parent's `O_PATH`
/// descriptor with a single component the session already checked (no '/',
/// '.', '..'), never following a symlink. I/O reopens a node through
/// `/proc/self/fd/N`, which names the inode itself; symlinks are never
/// reopened (ELOOP). No path outside the shared directory is ever resolved.
///
/// Caching (`CacheMode`): `.auto` trusts names, attributes and negative
/// lookups for 1 s and lets the kernel drop a file's page cache on open when
/// its mtime or size changed (`autoInvalData`); `.always` trusts everything
/// for a day and keeps page and directory caches across opens; `.never`
/// trusts nothing and sends regular-file I/O straight here (`FOPEN_DIRECT_IO`)
/// unless kernel passthrough serves it.
///
/// Kernel passthrough (`FOPEN_PASSTHROUGH`): regular files are served by the
/// kernel from the host file; one backing id per inode, registered on the first
/// open and closed on the last release. Writeback cache is never requested:
/// the kernel refuses it together with passthrough, and without it the host
/// file stays the single copy other host users see.
///
/// POSIX locks are emulated with open-file-description locks: each
/// (inode, lock owner) gets its own descriptor, closed on that owner's flush
/// (close(2) drops a process's POSIX locks) and on release.
///
/// Credentials: operations run with the server's credentials; new files belong
/// to the server's user. The kernel already applied the caller's umask (no
/// FUSE_DONT_MASK), so creating threads use a private umask of 0.
public final class PassthroughFS: FileSystem {
    /// How long the kernel may trust names, attributes and file data.
    public enum CacheMode: Sendable {
        /// Names, attributes and negative lookups for 1 s — or for an hour
        /// when the host can be watched (`Options.watchHost`, root, the
        /// /dev/fuse transport): changes other processes make under the
        /// shared directory are then pushed to the kernel within milliseconds.
        /// Page cache revalidated on open.
        case auto
        /// Everything for 86400 s; page and directory caches kept across opens.
        case always
        /// Nothing cached; regular files use direct I/O unless passthrough serves them.
        case never
    }

    public struct Options: Sendable {
        public var cache: CacheMode
        /// Use kernel passthrough for regular files when the transport offers it.
        public var passthrough: Bool
        /// Serve extended attributes; when false the kernel learns ENOSYS once and stops asking.
        public var xattr: Bool
        public var logger: Logger?
        /// Look up a non-root caller's supplementary groups in /proc/PID/status
        /// (cached for a second), so group permissions match the host. Right
        /// for /dev/fuse, where the header's pid is a host pid; wrong for a
        /// guest, whose pids mean nothing here (virtio-fs guests check
        /// permissions themselves with default_permissions).
        public var callerGroupsFromProc: Bool
        /// Files whose mmap gets a region of server memory (FUSE direct mmap); nil = none.
        public var ringFiles: RingFiles?
        /// With `.auto` caching on /dev/fuse, watch the host filesystem for
        /// other processes' changes (fanotify; needs CAP_SYS_ADMIN) and cache
        /// for long. Default true.
        public var watchHost = true
        /// At most this many nodes keep their host descriptor open; others are
        /// reopened by file handle when used (see `NodeDescriptors`). nil: half
        /// of the open-file limit.
        public var nodeDescriptorLimit: Int?
        /// At most this many open files, open directories and lock owners
        /// (each a descriptor) for this file system's client; one more is
        /// refused with EMFILE. nil: a quarter of the open-file limit.
        public var openDescriptorLimit: Int?
        /// Every change to the share is refused with EROFS: writes, creates,
        /// attribute and xattr changes, writable opens and mappings.
        public var readOnly = false
        /// READDIRPLUS offered (FUSE_DO_READDIRPLUS, FUSE_READDIRPLUS_AUTO).
        public var readdirplus = true
        /// POSIX record locks and flock(2) locks served by the host (else the
        /// client keeps them to itself).
        public var posixLocks = true
        public var flockLocks = true
        /// FUSE_HANDLE_KILLPRIV_V2: this server clears set-id bits on writes,
        /// truncations and chowns; without it the client's kernel does.
        public var handleKillprivV2 = true
        /// FUSE_SUBMOUNTS: a directory that is a mount point on the host is
        /// looked up with FUSE_ATTR_SUBMOUNT, so the client gives it a
        /// superblock (and st_dev) of its own (virtiofsd's --announce-submounts).
        public var announceSubmounts = false
        /// Guest ↔ host uids and gids (virtiofsd's --translate-uid/-gid).
        public var uidTranslation = IDTranslation()
        public var gidTranslation = IDTranslation()

        public init(cache: CacheMode = .auto, passthrough: Bool = true, xattr: Bool = true, logger: Logger? = nil,
                    callerGroupsFromProc: Bool = true, ringFiles: RingFiles? = nil) {
            self.cache = cache; self.passthrough = passthrough; self.xattr = xattr; self.logger = logger
            self.callerGroupsFromProc = callerGroupsFromProc
            self.ringFiles = ringFiles
        }
    }

    let options: Options
    let root: Inode
    /// `/proc/self/fd`, for reopening `O_PATH` descriptors as "N" relative to it.
    let procSelfFD: Int32
    /// A readable descriptor of the root, for syncfs (which refuses `O_PATH`).
    let rootReadFD: Int32

    let nodes: Locked<NodeTable>
    let descriptors: NodeDescriptors
    /// Descriptors for open files, directories and lock owners (`Options.openDescriptorLimit`).
    let budget: DescriptorBudget
    let nextNodeID = Atomic<UInt64>(2)
    let handles = Locked(HandleTable())

    private let baseEntryTimeout: CacheTimeout
    private let baseAttrTimeout: CacheTimeout
    private let baseNegativeTimeout: CacheTimeout?
    /// The host is watched: cached names and attributes are invalidated when it changes.
    let watched = Atomic<Bool>(false)
    let watcher = Locked<HostWatcher?>(nil)
    static let watchedTimeout = CacheTimeout(seconds: 3600)
    var entryTimeout: CacheTimeout { watched.load(ordering: .relaxed) ? Self.watchedTimeout : baseEntryTimeout }
    var attrTimeout: CacheTimeout { watched.load(ordering: .relaxed) ? Self.watchedTimeout : baseAttrTimeout }
    var negativeTimeout: CacheTimeout? { watched.load(ordering: .relaxed) ? Self.watchedTimeout : baseNegativeTimeout }

    let backing = Locked<(any BackingRegistry)?>(nil)
    let passthroughActive = Atomic<Bool>(false)
    /// FUSE_DONT_MASK was negotiated: creates carry the caller's umask.
    let dontMask = Atomic<Bool>(false)
    /// FUSE_SUBMOUNTS negotiated (and wanted).
    let submounts = Atomic<Bool>(false)
    /// Supplementary groups of calling processes, from /proc (see `Options.callerGroupsFromProc`).
    let callerGroups: CallerGroups
    let passthroughWarned = Atomic<Bool>(false)

    /// Opens `root` (following symlinks in that administrator-given path) and serves it.
    public init(root: String, options: Options = Options()) throws(Errno) {
        let rootFD = FileDescriptor(adopting: try Syscall.openat(DAXFS_AT_FDCWD, root, flags: DAXFS_O_PATH | DAXFS_O_DIRECTORY))
        let st = try Syscall.fstat(rootFD.rawValue)
        let proc = FileDescriptor(adopting: try Syscall.openat(DAXFS_AT_FDCWD, ProcFS.path("self/fd"), flags: DAXFS_O_PATH | DAXFS_O_DIRECTORY))
        let readable = FileDescriptor(adopting: try Syscall.openat(rootFD.rawValue, ".", flags: O_RDONLY | DAXFS_O_DIRECTORY))

        self.options = options
        callerGroups = CallerGroups(enabled: options.callerGroupsFromProc)
        procSelfFD = proc.release()
        rootReadFD = readable.release()
        descriptors = NodeDescriptors(capacity: options.nodeDescriptorLimit ?? Self.defaultDescriptorLimit(),
                                      mountFD: rootReadFD)
        budget = DescriptorBudget(limit: options.openDescriptorLimit ?? max(Self.defaultDescriptorLimit() / 2, 32))
        self.root = Inode(id: .root, fd: rootFD.release(), stat: st, descriptors: descriptors, pinned: true)
        var table = NodeTable()
        table.insert(self.root, count: 1)
        nodes = Locked(table)

        switch options.cache {
        case .auto:
            baseEntryTimeout = CacheTimeout(seconds: 1); baseAttrTimeout = CacheTimeout(seconds: 1)
            // As long as positive entries: a name created on the host shows up within the same 1 s.
            baseNegativeTimeout = CacheTimeout(seconds: 1)
        case .always:
            baseEntryTimeout = CacheTimeout(seconds: 86400); baseAttrTimeout = CacheTimeout(seconds: 86400)
            baseNegativeTimeout = CacheTimeout(seconds: 86400)
        case .never:
            baseEntryTimeout = .zero; baseAttrTimeout = .zero; baseNegativeTimeout = nil
        }
    }

    deinit {
        Syscall.close(procSelfFD)
        Syscall.close(rootReadFD)
    }

    /// Half the open-file limit for nodes; the rest is for open files, DAX
    /// mappings, lock owners and the transport.
    static func defaultDescriptorLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 512 }
        let soft = Int(clamping: min(limit.rlim_cur, 1 << 20))
        return max(soft / 2, 64)
    }

    public var wantedCapabilities: InitFlags {
        // No writebackCache: Linux refuses it together with passthrough, and it
        // would make the kernel, not the host file, the owner of recent writes.
        var flags: InitFlags = [.asyncRead, .posixLocks, .flockLocks, .atomicOTrunc, .bigWrites,
                                .doReaddirplus, .readdirplusAuto, .parallelDirops, .asyncDIO, .maxPages,
                                .cacheSymlinks, .setxattrExt,
                                // The caller's umask arrives with each create and is applied by
                                // the host (so default ACLs win over it, as locally).
                                .dontMask,
                                // The caller's supplementary group that owns the parent directory.
                                .createSuppGroup,
                                // We clear set-id bits ourselves (the server is root, so the host would not);
                                // saves a security.capability GETXATTR per write.
                                .handleKillprivV2,
                                // MAP_SHARED on FOPEN_DIRECT_IO files (cache=never).
                                .directIOAllowMmap]
        if options.cache != .always { flags.insert(.autoInvalData) }
        if !options.readdirplus { flags.subtract([.doReaddirplus, .readdirplusAuto]) }
        if !options.posixLocks { flags.remove(.posixLocks) }
        if !options.flockLocks { flags.remove(.flockLocks) }
        if !options.handleKillprivV2 { flags.remove(.handleKillprivV2) }
        if options.passthrough { flags.insert(.passthrough) }
        if options.announceSubmounts { flags.insert(.submounts) }
        return flags
    }

    public func initialize(connection: FUSEConnection) throws(Errno) {
        dontMask.store(connection.capabilities.contains(.dontMask), ordering: .releasing)
        submounts.store(options.announceSubmounts && connection.capabilities.contains(.submounts), ordering: .releasing)
        let registry = options.passthrough && connection.capabilities.contains(.passthrough) ? connection.backing : nil
        backing.withLock { $0 = registry }
        passthroughActive.store(registry != nil, ordering: .releasing)
        if options.cache == .auto && options.watchHost && connection.canNotify { watchHost(connection) }
    }

    /// Starts the host watcher (see `CacheMode.auto`); without it the 1 s timeouts stay.
    private func watchHost(_ connection: FUSEConnection) {
        // The root's descriptor is pinned: this path stays valid.
        guard let rootPath = try? root.withFD({ fd throws(Errno) in ProcFS.path("self/fd/\(fd)") }),
              let watcher = HostWatcher(path: rootPath, mountFD: rootReadFD) else {
            options.logger?.info("host changes cannot be watched (fanotify needs CAP_SYS_ADMIN): names and attributes are cached for 1 s")
            return
        }
        do throws(Errno) {
            try watcher.start { [weak self] changes in self?.apply(changes, connection) }
        } catch {
            options.logger?.warning("cannot start the host watcher: \(error)")
            return
        }
        self.watcher.withLock { $0 = watcher }
        watched.store(true, ordering: .relaxed)
    }

    /// Tells the kernel to drop what other processes changed on the host.
    private func apply(_ changes: Set<HostChange>, _ connection: FUSEConnection) {
        for change in changes {
            switch change {
            case .entry(let directory, let name):
                guard let node = nodes.withLock({ $0.byKey[directory] }) else { continue }
                try? connection.invalidateEntry(parent: NodeID(node), name: name)
            case .inode(let key):
                guard let node = nodes.withLock({ $0.byKey[key] }) else { continue }
                try? connection.invalidateInode(NodeID(node), offset: 0, length: 0)
            case .unknown:
                // Lost events: every attribute may be stale.
                options.logger?.warning("host change events were lost: invalidating every cached attribute")
                for node in nodes.withLock({ Array($0.slots.keys) }) { try? connection.invalidateInode(NodeID(node), offset: 0, length: 0) }
            }
        }
    }

    public func destroy() {
        let stopped = watcher.withLock { current -> HostWatcher? in
            defer { current = nil }
            return current
        }
        stopped?.stop()
        watched.store(false, ordering: .relaxed)
        let old = handles.withLock { table in
            defer { table.files.removeAll(); table.directories.removeAll() }
            return table
        }
        // Backing ids and lock owners go; descriptors close with their last holder.
        for file in old.files.values { releaseResources(of: file, lockOwner: nil) }
        let dropped = nodes.withLock { table in
            defer {
                table = NodeTable()
                table.insert(root, count: 1)
            }
            return table
        }
        _ = dropped
    }

    // MARK: - Helpers

    /// The live node `id`; ESTALE for ids the kernel should not have.
    @inline(__always)
    func inode(_ id: NodeID) throws(Errno) -> Inode {
        if id == .root { return root }
        guard let inode = nodes.withLock({ $0.slots[id.rawValue]?.inode }) else { throw .staleHandle }
        return inode
    }

    @inline(__always)
    func openFile(_ handle: FileHandle) throws(Errno) -> OpenFile {
        guard let file = handles.withLock({ $0.files[handle.rawValue] }) else { throw .badFileDescriptor }
        return file
    }

    @inline(__always)
    func entry(_ inode: Inode, _ st: stat) -> Entry {
        Entry(node: inode.id, attr: guestAttr(st), entryTimeout: entryTimeout, attrTimeout: attrTimeout)
    }

    /// Calls `body` with "N", the name of descriptor `fd` inside /proc/self/fd.
    @inline(__always)
    func withProcName<R>(_ fd: Int32, _ body: (UnsafePointer<CChar>) throws(Errno) -> R) throws(Errno) -> R {
        var storage: (UInt64, UInt64) = (0, 0)
        return try withUnsafeMutableBytes(of: &storage) { raw throws(Errno) -> R in
            let count = formatDecimal(UInt32(bitPattern: fd), into: raw)
            raw[count] = 0
            return try body(raw.baseAddress!.assumingMemoryBound(to: CChar.self))
        }
    }

    /// EROFS when the share is read-only (`Options.readOnly`).
    @inline(__always)
    func refuseChangesWhenReadOnly() throws(Errno) {
        if options.readOnly { throw .readOnlyFileSystem }
    }

    /// Calls `body` with "/proc/self/fd/N" (`ProcFS`), for calls that take only a path (xattrs).
    @inline(__always)
    func withProcPath<R>(_ fd: Int32, _ body: (UnsafePointer<CChar>) throws(Errno) -> R) throws(Errno) -> R {
        var storage: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        return try withUnsafeMutableBytes(of: &storage) { raw throws(Errno) -> R in
            let prefix = (ProcFS.prefix + "self/fd/").utf8
            var index = 0
            for byte in prefix { raw[index] = byte; index += 1 }
            let count = formatDecimal(UInt32(bitPattern: fd), into: UnsafeMutableRawBufferPointer(rebasing: raw[index...]))
            raw[index + count] = 0
            return try body(raw.baseAddress!.assumingMemoryBound(to: CChar.self))
        }
    }

    /// Opens the inode behind `fd` again with `flags`, through /proc/self/fd.
    @inline(__always)
    func reopen(_ fd: Int32, flags: Int32) throws(Errno) -> Int32 {
        try withProcName(fd) { name throws(Errno) in try Syscall.openat(procSelfFD, name, flags: flags) }
    }

    /// Opens `inode` again with `flags`, through /proc/self/fd. Only regular
    /// files and directories are opened (O_PATH aside): opening a host
    /// device node would hand a client the host's device (virtiofsd's
    /// CVE-2020-35517), and a FIFO would block the thread in open(2). A Linux
    /// client opens special files itself and never asks; EBADF as virtiofsd.
    @inline(__always)
    func reopen(_ inode: Inode, flags: Int32) throws(Errno) -> Int32 {
        guard inode.isRegular || inode.isDirectory || flags & DAXFS_O_PATH != 0 else { throw .badFileDescriptor }
        return try inode.withFD { fd throws(Errno) in try reopen(fd, flags: flags) }
    }

    /// `withProcName` for `inode`'s descriptor.
    @inline(__always)
    func withProcName<R>(_ inode: Inode, _ body: (UnsafePointer<CChar>) throws(Errno) -> R) throws(Errno) -> R {
        try inode.withFD { fd throws(Errno) in try withProcName(fd, body) }
    }

    /// `withProcPath` for `inode`'s descriptor.
    @inline(__always)
    func withProcPath<R>(_ inode: Inode, _ body: (UnsafePointer<CChar>) throws(Errno) -> R) throws(Errno) -> R {
        try inode.withFD { fd throws(Errno) in try withProcPath(fd, body) }
    }

    /// The host attributes of `inode`, through `file`'s descriptor when given.
    @inline(__always)
    func attributes(_ inode: Inode, file: OpenFile? = nil) throws(Errno) -> stat {
        if let file { return try Syscall.fstat(file.fd) }
        return try inode.withFD { fd throws(Errno) in try Syscall.fstat(fd) }
    }

    /// Clears set-user-ID, and set-group-ID when group-executable, as the kernel
    /// does for unprivileged writers (FUSE_HANDLE_KILLPRIV_V2). `fd` is a real
    /// open descriptor, or nil to go through `inode`'s proc name.
    func killSetID(_ inode: Inode, fd: Int32?, as ctx: RequestContext) throws(Errno) {
        let st = if let fd { try Syscall.fstat(fd) } else { try attributes(inode) }
        var mode = UInt32(st.st_mode) & 0o7777
        let original = mode
        mode &= ~FileMode.setUID
        if mode & FileMode.groupExecute != 0 { mode &= ~FileMode.setGID }
        guard mode != original else { return }
        // Only a caller who may write the file loses its set-id bits for it
        // (natively: a write or truncation; a client asking for the kill on
        // a read-only open, or a SETATTR with only the flag, changes nothing).
        guard callerMayWrite(inode, fd: fd) else { return }
        // Clearing is the server's duty under FUSE_HANDLE_KILLPRIV_V2 and a
        // writer who is not the owner may not chmod: do it with our own
        // credentials, then act as the caller again.
        try withServerCredentials(restoring: ctx) { () throws(Errno) in
            if let fd {
                try Syscall.fchmod(fd, mode: mode)
            } else {
                try withProcName(inode) { name throws(Errno) in try Syscall.fchmodat(procSelfFD, name, mode: mode, flags: 0) }
            }
        }
    }

    /// Whether the caller, whose credentials this thread has, may write
    /// `inode`: `fd` is open for writing, or access(W_OK) allows it.
    func callerMayWrite(_ inode: Inode, fd: Int32?) -> Bool {
        if let fd, fcntl(fd, F_GETFL) & O_ACCMODE != O_RDONLY { return true }
        let allowed = try? withProcName(inode) { name throws(Errno) in
            faccessat(procSelfFD, name, W_OK, DAXFS_AT_EACCESS) == 0
        }
        return allowed ?? false
    }

    /// Runs `body` with the server's own credentials, then acts as `ctx`
    /// again. A restore that fails fails the request: nothing after it may
    /// run with the server's credentials.
    func withServerCredentials<R>(restoring ctx: RequestContext, _ body: () throws(Errno) -> R) throws(Errno) -> R {
        _ = try Syscall.call { daxfs_become(0, 0) }
        let outcome: Result<R, Errno>
        do throws(Errno) { outcome = .success(try body()) } catch { outcome = .failure(error) }
        try become(ctx)
        return try outcome.get()
    }

    /// New nodes get the caller's umask (FUSE_DONT_MASK: the kernel left it to
    /// us, so the host applies it — or a default ACL instead), or none when the
    /// kernel already applied it.
    @inline(__always)
    func prepareToCreate(umask: UInt32) {
        let mask = dontMask.load(ordering: .acquiring) ? umask : 0
        do { _ = try Syscall.call { daxfs_thread_set_umask(mask) } } catch {
            options.logger?.warning("cannot give this thread its own umask: \(error)")
        }
    }
}

/// Mode bits (Glibc's S_IF* imports are ambiguous in Swift).
enum FileMode {
    static let typeMask: UInt32 = 0o170000
    static let directory: UInt32 = 0o040000
    static let regular: UInt32 = 0o100000
    static let symlink: UInt32 = 0o120000
    static let setUID: UInt32 = 0o4000
    static let setGID: UInt32 = 0o2000
    static let groupExecute: UInt32 = 0o010
}

/// Writes `value` in decimal; returns the digit count.
@inline(__always)
func formatDecimal(_ value: UInt32, into buffer: UnsafeMutableRawBufferPointer) -> Int {
    var digits = 1
    var probe = value
    while probe >= 10 { probe /= 10; digits += 1 }
    var rest = value
    for index in stride(from: digits - 1, through: 0, by: -1) {
        buffer[index] = UInt8(truncatingIfNeeded: rest % 10) + UInt8(ascii: "0")
        rest /= 10
    }
    return digits
}

extension Attr {
    /// `fuse_attr` from a host `struct stat`: blocks in 512-byte units, rdev in
    /// the kernel's `new_encode_dev` form, flags 0.
    init(_ st: stat) {
        self.init()
        ino = UInt64(st.st_ino)
        size = UInt64(bitPattern: Int64(st.st_size))
        blocks = UInt64(bitPattern: Int64(st.st_blocks))
        atime = UInt64(bitPattern: Int64(st.st_atim.tv_sec)); atimensec = UInt32(truncatingIfNeeded: st.st_atim.tv_nsec)
        mtime = UInt64(bitPattern: Int64(st.st_mtim.tv_sec)); mtimensec = UInt32(truncatingIfNeeded: st.st_mtim.tv_nsec)
        ctime = UInt64(bitPattern: Int64(st.st_ctim.tv_sec)); ctimensec = UInt32(truncatingIfNeeded: st.st_ctim.tv_nsec)
        mode = UInt32(st.st_mode)
        nlink = UInt32(clamping: UInt64(st.st_nlink))
        uid = UInt32(st.st_uid)
        gid = UInt32(st.st_gid)
        rdev = DeviceNumber.encode(UInt64(st.st_rdev))
        blksize = UInt32(clamping: Int64(st.st_blksize))
    }
}

/// Device numbers: glibc's 64-bit `dev_t` and the kernel's 32-bit
/// `new_encode_dev` form that FUSE carries (12-bit major, 20-bit minor).
@_spi(Testing) public enum DeviceNumber {
    /// `dev_t` → `new_encode_dev`.
    public static func encode(_ device: UInt64) -> UInt32 {
        let major = ((device >> 8) & 0xfff) | ((device >> 32) & ~0xfff)
        let minor = (device & 0xff) | ((device >> 12) & ~0xff)
        return UInt32(truncatingIfNeeded: (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12))
    }

    /// `new_decode_dev` → `dev_t` (glibc's `makedev`).
    public static func decode(_ raw: UInt32) -> UInt64 {
        let value = UInt64(raw)
        let major = (value & 0xfff00) >> 8
        let minor = (value & 0xff) | ((value >> 12) & 0xfff00)
        return ((major & 0xfff) << 8) | ((major & ~0xfff) << 32) | (minor & 0xff) | ((minor & ~0xff) << 12)
    }
}

extension PassthroughFS {
    /// Runs the rest of the request with the caller's filesystem uid and gid
    /// (and supplementary groups) on this thread, so the host kernel checks
    /// permissions and assigns ownership exactly as for the caller. Free for
    /// root callers and when nothing changed.
    @inline(__always)
    func become(_ ctx: RequestContext) throws(Errno) {
        let uid = options.uidTranslation.credential(ctx.uid), gid = options.gidTranslation.credential(ctx.gid)
        if uid == 0 && ctx.supplementaryGroups.isEmpty {
            _ = try Syscall.call { daxfs_become(0, gid) }
            return
        }
        var groups = ctx.supplementaryGroups
        if groups.isEmpty { groups = callerGroups.groups(of: ctx.pid) }
        if !options.gidTranslation.isEmpty { groups = groups.map { options.gidTranslation.credential($0) } }
        _ = try Syscall.call { daxfs_become_with_groups(uid, gid, groups, Int32(groups.count)) }
    }

    /// EPERM when the caller's uid or gid may not own files here
    /// (a forbid-guest translation rule); for requests that create one.
    func refuseForbiddenOwner(_ ctx: RequestContext) throws(Errno) {
        if options.uidTranslation.toHost(ctx.uid) == nil || options.gidTranslation.toHost(ctx.gid) == nil {
            throw .notPermitted
        }
    }

    /// `st` as the client sees it: owner and group translated to its ids.
    func guestAttr(_ st: stat) -> Attr {
        var attr = Attr(st)
        attr.uid = options.uidTranslation.toGuest(attr.uid)
        attr.gid = options.gidTranslation.toGuest(attr.gid)
        return attr
    }
}
