import CLinux
import DevFUSE
import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import Logging
import Synchronization
import VhostUser

/// Read-write descriptors of host files that report a size no mapping can
/// exceed, for frontends that check a file's size before they map it.
///
/// QEMU 11.1 maps each SHMEM_MAP with memory_region_init_ram_from_fd, which
/// refuses when the file is shorter than fd_offset + len — yet Linux's DAX
/// client asks for whole 2 MiB ranges of files of every size, and the last
/// partial page of a file can never pass such a check. It also maps every
/// range read-write. So the backend hands QEMU a file of this private FUSE
/// mount instead of the host file: each one is opened in kernel passthrough
/// mode (FOPEN_PASSTHROUGH) over the host file, so mmap(2) maps the host
/// file's own page cache (the kernel swaps the mapping's file for the backing
/// file) — the same pages host processes and the server see — while lseek and
/// fstat report `reportedSize`. Pages past the host file's end stay past it:
/// touching one raises SIGBUS as for any file mapping, so a backend still
/// must not let a frontend touch them (the guest kernel never reads past its
/// i_size; a host truncation is the case the host watch handles).
///
/// The mount is detached right after it is made (umount2 MNT_DETACH): only
/// this process reaches it, through the root descriptor it keeps.
public final class MappingShadow: MappableFileSource, @unchecked Sendable {
    /// What lseek(SEEK_END) and fstat report for every file: page aligned, below MAX_LFS_FILESIZE.
    public static let reportedSize: UInt64 = 1 << 62

    private let fileSystem: ShadowFileSystem
    private let mount: FUSEMount
    private let root: SharedDescriptor
    private var server: OSThread?

    /// Mounts the shadow filesystem; fails without root, /dev/fuse or kernel passthrough (Linux ≥ 6.9).
    public init(logger: Logger = Logger(label: "daxfs.shadow")) throws(MountError) {
        var template = Array("/tmp/daxfs-shadow-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw MountError("cannot make a directory for the mapping shadow: \(Errno(daxfs_errno()))") }
        let mountpoint = String(cString: made)
        defer { rmdir(mountpoint) }
        fileSystem = ShadowFileSystem()
        var options = MountOptions()
        options.threads = 1
        options.passthrough = true
        options.pollMicroseconds = 0
        options.fsname = "daxfs-shadow"
        mount = try FUSEMount(mountpoint: mountpoint, fileSystem: fileSystem, options: options, logger: logger)
        let mount = self.mount
        do {
            server = try OSThread(name: "daxfs-shadow") { try? mount.serve() }
        } catch {
            mount.abort()
            throw MountError("cannot start the mapping shadow's thread: \(error)")
        }
        let fd = open(mountpoint, DAXFS_O_PATH | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            let error = Errno(daxfs_errno())
            mount.unmount()
            throw MountError("cannot open the mapping shadow at \(mountpoint): \(error)")
        }
        root = SharedDescriptor(adopting: fd)
        _ = umount2(mountpoint, DAXFS_MNT_DETACH)
        // Prove it works now, rather than at the first guest mapping.
        do throws(Errno) {
            let probe = try Syscall.call { daxfs_memfd("daxfs-shadow-probe") }
            defer { Syscall.close(probe) }
            _ = try mappable(probe)
        } catch {
            throw MountError("the mapping shadow does not work here (\(error)); it needs FUSE passthrough (Linux ≥ 6.9, root)")
        }
    }

    /// A read-write descriptor showing `fd`'s file, reporting `reportedSize`.
    /// Fails as opening the file read-write would (EROFS, ETXTBSY, EPERM for
    /// an immutable file): those files cannot be mapped through QEMU 11.1.
    public func mappable(_ fd: Int32) throws(Errno) -> SharedDescriptor {
        let id = fileSystem.register(SharedDescriptor(adopting: try Syscall.call { dup(fd) }))
        defer { fileSystem.unregister(id) }
        let shadow = try Syscall.call { openat(root.rawValue, String(id), O_RDWR | O_CLOEXEC) }
        return SharedDescriptor(adopting: shadow)
    }
}

/// The shadow mount's filesystem: a root directory whose entry "N" is the
/// host file registered as N, opened in passthrough mode.
final class ShadowFileSystem: FileSystem, @unchecked Sendable {
    private struct Registered {
        let fd: SharedDescriptor
    }
    private let registered = Locked<[UInt64: Registered]>([:])
    private let nextID = Atomic<UInt64>(2)
    private let connection = Locked<FUSEConnection?>(nil)
    /// Backing ids by handle, closed at release.
    private let backings = Locked<[UInt64: Int32]>([:])
    private let nextHandle = Atomic<UInt64>(1)

    var wantedCapabilities: InitFlags { [.passthrough] }

    func initialize(connection: FUSEConnection) throws(Errno) {
        self.connection.withLock { $0 = connection }
    }

    func register(_ fd: SharedDescriptor) -> UInt64 {
        let id = nextID.add(1, ordering: .relaxed).newValue
        registered.withLock { $0[id] = Registered(fd: fd) }
        return id
    }

    func unregister(_ id: UInt64) { _ = registered.withLock { $0.removeValue(forKey: id) } }

    private func attributes(_ node: NodeID) -> Attr {
        var attr = Attr()
        attr.ino = node.rawValue
        if node == .root {
            attr.mode = S_IFDIR | 0o500
            attr.nlink = 2
        } else {
            attr.mode = S_IFREG | 0o600
            attr.nlink = 1
            attr.size = MappingShadow.reportedSize
        }
        attr.blksize = UInt32(HostPage.size)
        return attr
    }

    func lookup(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) -> Entry {
        guard parent == .root else { throw .notDirectory }
        guard let text = String(validating: name.bytes, as: UTF8.self), let id = UInt64(text),
              registered.withLock({ $0[id] != nil }) else { throw .noEntry }
        let node = NodeID(id)
        return Entry(node: node, attr: attributes(node), entryTimeout: CacheTimeout(seconds: 0), attrTimeout: CacheTimeout(seconds: 3600))
    }

    func getattr(_ ctx: RequestContext, node: NodeID, handle: FileHandle?) throws(Errno) -> AttrReply {
        AttrReply(attr: attributes(node), timeout: CacheTimeout(seconds: 3600))
    }

    func open(_ ctx: RequestContext, node: NodeID, flags: UInt32, killSuidgid: Bool) throws(Errno) -> Opened {
        guard node != .root else { throw .isDirectory }
        guard let file = registered.withLock({ $0[node.rawValue] }) else { throw .staleHandle }
        guard let backing = connection.withLock({ $0?.backing }) else { throw .notSupported }
        // The kernel opens the backing file anew, with this open's flags and
        // the credentials of this thread (the server's): a file that cannot
        // be opened read-write fails here, as it should.
        let id = try backing.open(fd: file.fd.rawValue)
        let handle = nextHandle.add(1, ordering: .relaxed).newValue
        backings.withLock { $0[handle] = id }
        return Opened(handle: FileHandle(handle), flags: .passthrough, backingID: id)
    }

    func release(_ ctx: RequestContext, node: NodeID, handle: FileHandle, flags: UInt32, lockOwner: UInt64?, flush: Bool, flockRelease: Bool) throws(Errno) {
        if let id = backings.withLock({ $0.removeValue(forKey: handle.rawValue) }) {
            try? connection.withLock { $0?.backing }?.close(id: id)
        }
    }

    func opendir(_ ctx: RequestContext, node: NodeID, flags: UInt32) throws(Errno) -> Opened {
        guard node == .root else { throw .notDirectory }
        return Opened(handle: FileHandle(0))
    }

    func releasedir(_ ctx: RequestContext, node: NodeID, handle: FileHandle, flags: UInt32) throws(Errno) {}
}
