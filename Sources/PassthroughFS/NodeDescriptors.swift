import CLinux
import Glibc
import HostSystem
import Synchronization

/// Bounds the `O_PATH` descriptors that nodes hold.
///
/// The kernel keeps every inode it has looked up until memory runs short, and
/// each node holds a descriptor of its host inode; a share with more files
/// than the process's open-file limit would then fail every lookup and create
/// with EMFILE. So at most `capacity` nodes keep their descriptor open. Past
/// that, a CLOCK sweep picks nodes not used since the last sweep, records each
/// one's file handle (`name_to_handle_at`) and closes its descriptor; the next
/// use reopens it with `open_by_handle_at`, which also tells a node whose host
/// inode is gone (ESTALE) from a live one.
///
/// Nodes that cannot get a handle keep their descriptor ("pinned"): the root,
/// inodes on another mount than the root's, filesystems without handles, and
/// every node when the process may not open by handle (no
/// CAP_DAC_READ_SEARCH). Pinned nodes do not count against `capacity`.
final class NodeDescriptors: Sendable {
    let capacity: Int
    /// The root's mount, where handles are opened; nil when handles are off.
    private let mount: (descriptor: SharedDescriptor, id: Int32)?
    private let clock = Locked(Clock())
    /// Descriptors reopened by handle so far.
    let reopens = Atomic<Int>(0)

    struct Clock {
        var ring: [WeakInode] = []
        var head = 0
        /// Nodes whose descriptor is open and not pinned.
        var open = 0
    }

    struct WeakInode {
        weak var inode: Inode?
    }

    /// `mountFD` is a readable descriptor inside the shared directory (this
    /// object keeps a duplicate); handles are used only if that directory's
    /// own can be made and reopened here.
    init(capacity: Int, mountFD: Int32) {
        self.capacity = max(capacity, 1)
        let duplicate = fcntl(mountFD, F_DUPFD_CLOEXEC, 0)
        if duplicate >= 0, let id = Self.probe(duplicate) {
            mount = (SharedDescriptor(adopting: duplicate), id)
        } else {
            if duplicate >= 0 { Syscall.close(duplicate) }
            mount = nil
        }
    }

    /// The mount id of `fd`'s filesystem if a handle of it can be made and opened again; nil otherwise.
    private static func probe(_ fd: Int32) -> Int32? {
        guard let (handle, mountID) = HostHandle.make(fd) else { return nil }
        let reopened = handle.bytes.withUnsafeBytes { daxfs_open_by_handle_privileged(fd, $0.baseAddress, DAXFS_O_PATH | O_CLOEXEC) }
        guard reopened >= 0 else { return nil }
        Syscall.close(reopened)
        return mountID
    }

    var handlesEnabled: Bool { mount != nil }

    /// Number of nodes whose descriptor is open and may be closed.
    var openCount: Int { clock.withLock { $0.open } }

    /// A new node's slot for its freshly opened descriptor.
    func slot(for fd: Int32, pinned: Bool) -> DescriptorSlot {
        DescriptorSlot(descriptor: SharedDescriptor(adopting: fd), pinned: pinned || mount == nil)
    }

    /// Counts `inode`'s newly opened descriptor and closes others' past `capacity`.
    func admit(_ inode: Inode) {
        guard inode.markCounted() else { return }
        let over = clock.withLock { clock -> Bool in
            clock.ring.append(WeakInode(inode: inode))
            clock.open += 1
            return clock.open > capacity
        }
        if over { sweep() }
    }

    /// A node with an open, unpinned descriptor went away.
    func released() {
        clock.withLock { $0.open -= 1 }
    }

    /// Closes descriptors of nodes not used since the last pass until at most `capacity` are open.
    private func sweep() {
        // Each node gets one second chance, so two passes over the ring suffice.
        var budget = 2 * clock.withLock { $0.ring.count - $0.head } + 1
        while budget > 0 {
            budget -= 1
            let candidate: Inode?? = clock.withLock { clock in
                guard clock.open > capacity, clock.head < clock.ring.count else { return .none }
                let next = clock.ring[clock.head].inode
                clock.ring[clock.head] = WeakInode()
                clock.head += 1
                // Compact once the consumed prefix dominates.
                if clock.head > 1024 && clock.head * 2 > clock.ring.count {
                    clock.ring.removeFirst(clock.head)
                    clock.head = 0
                }
                return .some(next)
            }
            guard case .some(let popped) = candidate else { return }
            // A node that went away already left the count.
            guard let inode = popped else { continue }
            switch inode.close(onMount: mount?.id) {
            case .closed, .pinned: clock.withLock { $0.open -= 1 }
            case .used: clock.withLock { $0.ring.append(WeakInode(inode: inode)) }
            case .absent: continue
            }
        }
    }

    /// Opens `handle` again; ESTALE when its inode is gone.
    func reopen(_ handle: HostHandle) throws(Errno) -> Int32 {
        guard let mount else { throw .staleHandle }
        let fd = handle.bytes.withUnsafeBytes {
            daxfs_open_by_handle_privileged(mount.descriptor.rawValue, $0.baseAddress, DAXFS_O_PATH | O_CLOEXEC)
        }
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        reopens.add(1, ordering: .relaxed)
        return fd
    }
}

/// A `struct file_handle` as `name_to_handle_at` wrote it, in 4-byte words
/// (the struct's alignment).
struct HostHandle: Sendable {
    let bytes: [UInt32]

    /// The handle of the inode behind `fd` and its mount id; nil when its filesystem has none.
    static func make(_ fd: Int32) -> (HostHandle, Int32)? {
        // Header: handle_bytes (the room, then the length), handle_type.
        var storage = [UInt32](repeating: 0, count: 2 + Int(DAXFS_MAX_HANDLE_BYTES) / 4)
        storage[0] = UInt32(DAXFS_MAX_HANDLE_BYTES)
        var mountID: Int32 = 0
        let result = storage.withUnsafeMutableBytes { daxfs_handle_of(fd, $0.baseAddress, &mountID) }
        guard result == 0 else { return nil }
        let length = Int(storage[0])
        guard length <= Int(DAXFS_MAX_HANDLE_BYTES) else { return nil }
        return (HostHandle(bytes: Array(storage[..<(2 + (length + 3) / 4)])), mountID)
    }
}

/// How a node reaches its host inode.
struct DescriptorSlot: ~Copyable {
    /// Open `O_PATH` descriptor; nil while closed for room.
    var descriptor: SharedDescriptor?
    /// Recorded when the descriptor is first closed.
    var handle: HostHandle?
    /// Never closed (see `NodeDescriptors`).
    var pinned: Bool
    /// Used since the CLOCK hand last passed.
    var referenced = false
    /// `NodeDescriptors.open` includes this node while its descriptor is open.
    var counted = false

    init(descriptor: SharedDescriptor, pinned: Bool) {
        self.descriptor = descriptor
        self.pinned = pinned
    }
}

/// What the sweep did with a node: `absent` (already closed) was not counted.
enum CloseOutcome { case closed, pinned, used, absent }

extension Inode {
    /// Calls `body` with an open `O_PATH` descriptor of this node's host
    /// inode, reopening it by handle if it was closed for room (ESTALE when
    /// the inode is gone). The descriptor stays open until `body` returns.
    @inline(__always)
    func withFD<R>(_ body: (Int32) throws(Errno) -> R) throws(Errno) -> R {
        let held = try descriptor()
        return try withExtendedLifetime(held) { () throws(Errno) -> R in try body(held.rawValue) }
    }

    /// The open descriptor, reopened if needed.
    @inline(__always)
    func descriptor() throws(Errno) -> SharedDescriptor {
        var reopened = false
        let held = try slot.withLock { slot throws(Errno) -> SharedDescriptor in
            slot.referenced = true
            if let open = slot.descriptor { return open }
            guard let handle = slot.handle else { throw .staleHandle }
            let fd = try descriptors.reopen(handle)
            let opened = SharedDescriptor(adopting: fd)
            // A handle names one inode, but check: a stale handle must never reach another file.
            let st = try Syscall.fstat(fd)
            guard InodeKey(st) == key else { throw .staleHandle }
            slot.descriptor = opened
            reopened = true
            return opened
        }
        if reopened { descriptors.admit(self) }
        return held
    }

    /// Marks the open descriptor as counted by `NodeDescriptors`; false when it is pinned.
    func markCounted() -> Bool {
        slot.withLock { slot in
            guard !slot.pinned, slot.descriptor != nil else { return false }
            slot.counted = true
            return true
        }
    }

    /// Whether the descriptor is open now (for tests and the node table's checks).
    var isOpen: Bool { slot.withLock { $0.descriptor != nil } }

    /// The sweep's visit: closes the descriptor unless the node was used since
    /// the last visit or cannot be reopened by handle.
    func close(onMount mountID: Int32?) -> CloseOutcome {
        slot.withLock { slot in
            guard let open = slot.descriptor else { return .absent }
            if slot.pinned { return .pinned }
            if slot.referenced {
                slot.referenced = false
                return .used
            }
            if slot.handle == nil {
                guard let (handle, mount) = HostHandle.make(open.rawValue), mount == mountID else {
                    slot.pinned = true
                    return .pinned
                }
                slot.handle = handle
            }
            // Closes now, or when the last request using it is done.
            slot.descriptor = nil
            return .closed
        }
    }
}
