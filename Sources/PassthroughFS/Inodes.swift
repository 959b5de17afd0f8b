import CLinux
import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import Synchronization

/// A host inode the kernel knows: its `O_PATH|O_NOFOLLOW` descriptor (see
/// `withFD`), closed when the last holder (table, open handle, running
/// request) lets go — so a request that found the node can use it even if
/// `forget` races with it — or earlier for room (`NodeDescriptors`).
final class Inode: Sendable {
    let id: NodeID
    let key: InodeKey
    /// `S_IFMT` bits; an inode never changes type.
    let type: UInt32
    /// Open files, passthrough backing and lock owners of this inode.
    let state = Locked(InodeState())

    let slot: Locked<DescriptorSlot>
    let descriptors: NodeDescriptors

    /// Adopts `fd`; `pinned` keeps it open for the node's life (the root).
    init(id: NodeID, fd: Int32, stat st: stat, descriptors: NodeDescriptors, pinned: Bool = false) {
        self.id = id
        key = InodeKey(st)
        type = UInt32(st.st_mode) & FileMode.typeMask
        slot = Locked(descriptors.slot(for: fd, pinned: pinned))
        self.descriptors = descriptors
    }

    deinit {
        if slot.withLock({ $0.counted && $0.descriptor != nil && !$0.pinned }) { descriptors.released() }
    }

    var isSymlink: Bool { type == FileMode.symlink }
    var isDirectory: Bool { type == FileMode.directory }
    var isRegular: Bool { type == FileMode.regular }
}

/// Identity of a host inode. Unique while we hold a descriptor of it: an open
/// inode cannot be freed, so its number cannot be reused. A node whose
/// descriptor was closed for room is checked by reopening it (`referenceKnown`).
struct InodeKey: Hashable, Sendable {
    var device: UInt64
    var inode: UInt64
    init(_ st: stat) { device = UInt64(st.st_dev); inode = UInt64(st.st_ino) }
}

struct InodeState: ~Copyable {
    /// Open file handles of this inode.
    var openFiles = 0
    /// The kernel passthrough backing id, shared by `backingUsers` handles.
    var backingID: Int32?
    var backingUsers = 0
    /// Registration failed once; this inode is served without passthrough.
    var passthroughRefused = false
    /// POSIX lock owner → its OFD-lock descriptor.
    var lockOwners: [UInt64: OwnerLock] = [:]
    /// Descriptors for DAX mappings (see `mappingDescriptor`).
    var mappingRead: SharedDescriptor?
    var mappingWrite: SharedDescriptor?
}

/// The descriptor that carries one lock owner's POSIX locks as OFD locks.
struct OwnerLock {
    let descriptor: SharedDescriptor
    /// Its share of the file system's `DescriptorBudget`.
    var token: DescriptorToken? = nil
    /// The pid the kernel reported for the owner, for GETLK replies.
    var pid: UInt32
}

/// Node id → inode with its lookup count, and (dev, ino) → node id.
struct NodeTable {
    struct Slot {
        let inode: Inode
        var count: UInt64
    }
    var slots: [UInt64: Slot] = [:]
    var byKey: [InodeKey: UInt64] = [:]

    mutating func insert(_ inode: Inode, count: UInt64) {
        slots[inode.id.rawValue] = Slot(inode: inode, count: count)
        byKey[inode.key] = inode.id.rawValue
    }

    /// Adds one lookup to the node of `key` if its descriptor is open (so
    /// the key surely still names its inode).
    mutating func referenceOpen(_ key: InodeKey) -> Inode? {
        guard let id = byKey[key], let slot = slots[id], slot.inode.isOpen else { return nil }
        slots[id]?.count += 1
        return slot.inode
    }
}

extension PassthroughFS {
    /// Takes one lookup on the node of `key`, if there is one and it still is
    /// that inode. A node whose descriptor was closed for room is reopened by
    /// handle first; if its inode is gone, the key is freed for a new node.
    func referenceKnown(_ key: InodeKey) -> Inode? {
        let closed: Inode? = nodes.withLock { table in
            guard let id = table.byKey[key], let slot = table.slots[id], !slot.inode.isOpen else { return nil }
            return slot.inode
        }
        guard let closed else { return nodes.withLock { $0.referenceOpen(key) } }
        do { _ = try closed.descriptor() } catch {
            nodes.withLock { table in
                if table.byKey[key] == closed.id.rawValue { table.byKey[key] = nil }
            }
            return nil
        }
        return nodes.withLock { $0.referenceOpen(key) }
    }

    /// Looks `name` up in `parent` and takes one lookup reference on the result.
    /// Known inodes cost one `fstatat`; new ones an `openat` and `fstat` more.
    func lookupReference(parent: Inode, name: UnsafePointer<CChar>) throws(Errno) -> (Inode, stat) {
        try parent.withFD { parentFD throws(Errno) in
            let st = try Syscall.fstatat(parentFD, name, flags: DAXFS_AT_SYMLINK_NOFOLLOW)
            if let known = referenceKnown(InodeKey(st)) { return (known, st) }
            let fd = try Syscall.openat(parentFD, name, flags: DAXFS_O_PATH | DAXFS_O_NOFOLLOW)
            // The name may have changed since the fstatat: trust only the descriptor.
            let opened: stat
            do throws(Errno) { opened = try Syscall.fstat(fd) } catch {
                Syscall.close(fd)
                throw error
            }
            return (adopt(fd: fd, stat: opened), opened)
        }
    }

    /// Takes one reference on the inode behind `fd` (an `O_PATH` descriptor we
    /// own): the known node of the same inode (closing `fd`), or a new node.
    func adopt(fd: Int32, stat st: stat) -> Inode {
        if let known = referenceKnown(InodeKey(st)) {
            Syscall.close(fd)
            return known
        }
        let candidate = Inode(id: NodeID(nextNodeID.wrappingAdd(1, ordering: .relaxed).oldValue), fd: fd, stat: st,
                              descriptors: descriptors)
        // A losing candidate is released (and its fd closed) after the lock.
        let chosen = nodes.withLock { table in
            if let known = table.referenceOpen(candidate.key) { return known }
            table.insert(candidate, count: 1)
            return candidate
        }
        if chosen === candidate { descriptors.admit(candidate) }
        return chosen
    }

    /// Takes one reference on the inode behind `fd` (any open descriptor), reopening it `O_PATH` only when it is new.
    func adoptOpened(fd: Int32, stat st: stat) throws(Errno) -> Inode {
        if let known = referenceKnown(InodeKey(st)) { return known }
        let pathFD = try reopen(fd, flags: DAXFS_O_PATH)
        return adopt(fd: pathFD, stat: st)
    }

    /// Adds one lookup to `inode` (whose node the kernel holds), or to whichever node now has its key.
    func addReference(_ inode: Inode) -> Inode {
        nodes.withLock { table in
            if table.slots[inode.id.rawValue] != nil {
                table.slots[inode.id.rawValue]?.count += 1
                return inode
            }
            if let known = table.referenceOpen(inode.key) { return known }
            table.insert(inode, count: 1)
            return inode
        }
    }

    public func lookup(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) -> Entry {
        try become(ctx)
        let directory = try inode(parent)
        do {
            let (found, st) = try name.withCString { name throws(Errno) in try lookupReference(parent: directory, name: name) }
            var reply = entry(found, st)
            if submounts.load(ordering: .acquiring), st.st_mode & S_IFMT == S_IFDIR,
               (try? found.withFD({ fd throws(Errno) in daxfs_is_mount_root(fd) })) == 1 {
                reply.attr.flags |= FUSEFlag.attrSubmount
            }
            return reply
        } catch where error == .noEntry {
            guard let negativeTimeout else { throw error }
            return .negative(timeout: negativeTimeout)
        }
    }

    public func forget(_ node: NodeID, count: UInt64) {
        guard node != .root else { return }
        let removed: Inode? = nodes.withLock { table in
            guard let slot = table.slots[node.rawValue] else { return nil }
            if slot.count > count {
                table.slots[node.rawValue]?.count = slot.count - count
                return nil
            }
            table.slots[node.rawValue] = nil
            if table.byKey[slot.inode.key] == node.rawValue { table.byKey[slot.inode.key] = nil }
            return slot.inode
        }
        // The descriptor closes here, outside the lock, unless a handle or request still holds the inode.
        _ = removed
    }

    /// The lookup count of `node`, or nil when it is not in the table.
    @_spi(Testing) public func lookupCount(_ node: NodeID) -> UInt64? {
        nodes.withLock { $0.slots[node.rawValue]?.count }
    }

    /// Nodes whose host descriptor is open now, the pinned ones (the root) excluded.
    @_spi(Testing) public var openNodeDescriptors: Int { descriptors.openCount }

    /// Whether `node` holds its host descriptor open now; nil when it is not in the table.
    @_spi(Testing) public func holdsDescriptor(_ node: NodeID) -> Bool? {
        nodes.withLock { $0.slots[node.rawValue]?.inode }?.isOpen
    }

    /// Node descriptors reopened by file handle so far.
    @_spi(Testing) public var reopenedByHandle: Int { descriptors.reopens.load(ordering: .relaxed) }

    /// Nodes can close their descriptors and reopen them by file handle here.
    @_spi(Testing) public var reopensByHandle: Bool { descriptors.handlesEnabled }

    /// Number of nodes in the table, the root included.
    @_spi(Testing) public var nodeCount: Int { nodes.withLock { $0.slots.count } }
}
