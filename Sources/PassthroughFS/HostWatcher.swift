import CLinux
import Glibc
import HostSystem
import Synchronization

/// A change another process made on the host under the shared directory,
/// as the kernel's caches see it.
enum HostChange: Hashable {
    /// A name in a directory appeared, went or moved.
    case entry(directory: InodeKey, name: [UInt8])
    /// An inode's attributes or data changed.
    case inode(InodeKey)
    /// Events were lost (the kernel's queue overflowed).
    case unknown
}

/// Watches the filesystem that holds the shared directory with fanotify
/// (needs CAP_SYS_ADMIN) and reports changes made by other processes, so
/// that names and attributes can be cached for long and still be right: the
/// server tells the kernel to drop what changed (FUSE_NOTIFY_INVAL_*).
/// Changes this process makes itself are skipped (the kernel already knows
/// them from the replies). Events are read in batches, one batch per
/// millisecond at most, so a burst costs one wake-up.
final class HostWatcher: @unchecked Sendable {
    /// Not FAN_CLOSE_WRITE: with kernel passthrough the backing file is closed
    /// in the client's context, so every close of a file opened for writing
    /// through the mount would look like a foreign change (and cost the next
    /// stat a round trip). FAN_MODIFY already reports every foreign write.
    static let mask = DAXFS_FAN_CREATE | DAXFS_FAN_DELETE | DAXFS_FAN_MOVED_FROM | DAXFS_FAN_MOVED_TO | DAXFS_FAN_ATTRIB
        | DAXFS_FAN_MODIFY | DAXFS_FAN_DELETE_SELF | DAXFS_FAN_ONDIR

    private let fd: Int32
    /// Any descriptor on the watched filesystem, for open_by_handle_at.
    private let mountFD: Int32
    private let ownPid = getpid()
    private let stopping = Atomic<Bool>(false)
    private var thread: OSThread?
    /// Handle bytes → inode, for handles seen before (a handle names one inode for good).
    private var resolved: [[UInt8]: InodeKey] = [:]

    /// nil when the filesystem cannot be watched (not root, or no fanotify).
    init?(path: String, mountFD: Int32) {
        let fd = daxfs_fanotify_watch(path, Self.mask)
        guard fd >= 0 else { return nil }
        self.fd = fd
        self.mountFD = mountFD
    }

    deinit { Syscall.close(fd) }

    func start(_ deliver: @escaping @Sendable (Set<HostChange>) -> Void) throws(Errno) {
        thread = try OSThread(name: "daxfs-host-watch") { [self] in run(deliver) }
    }

    func stop() {
        stopping.store(true, ordering: .releasing)
        thread?.join()
        thread = nil
    }

    private func run(_ deliver: (Set<HostChange>) -> Void) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 8)
        defer { buffer.deallocate() }
        while !stopping.load(ordering: .acquiring) {
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 100) > 0 else { continue }
            let count = Glibc.read(fd, buffer.baseAddress, buffer.count)
            guard count > 0 else { continue }
            let changes = parse(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            if !changes.isEmpty { deliver(changes) }
            usleep(1_000)  // let the next events gather
        }
    }

    /// The changes in a buffer of fanotify events (FAN_REPORT_FID | FAN_REPORT_DFID_NAME).
    func parse(_ events: UnsafeRawBufferPointer) -> Set<HostChange> {
        var changes = Set<HostChange>()
        var offset = 0
        while offset + 24 <= events.count {
            let eventLength = Int(events.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            let metadataLength = Int(events.loadUnaligned(fromByteOffset: offset + 6, as: UInt16.self))
            let mask = events.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)
            let pid = events.loadUnaligned(fromByteOffset: offset + 20, as: Int32.self)
            guard eventLength >= 24, metadataLength >= 24, metadataLength <= eventLength, offset + eventLength <= events.count else { break }
            // No descriptor to close: a FAN_REPORT_FID group gets FAN_NOFD in
            // every event, and closing whatever number a buffer holds would
            // close some other descriptor of this process.
            if mask & DAXFS_FAN_Q_OVERFLOW != 0 { changes.insert(.unknown) }
            if pid != ownPid {
                record(UnsafeRawBufferPointer(rebasing: events[offset + metadataLength ..< offset + eventLength]), mask: mask, into: &changes)
            }
            offset += eventLength
        }
        return changes
    }

    private func record(_ infos: UnsafeRawBufferPointer, mask: UInt64, into changes: inout Set<HostChange>) {
        var offset = 0
        while offset + 4 <= infos.count {
            let type = Int32(infos[offset])
            let length = Int(infos.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self))
            guard length >= 4, offset + length <= infos.count else { return }
            let info = UnsafeRawBufferPointer(rebasing: infos[offset ..< offset + length])
            offset += length
            // {u8 type, u8 pad, u16 len, fsid (8 bytes), struct file_handle {u32 bytes, i32 type, bytes}, [name]}
            guard info.count >= 20 else { continue }
            let handleBytes = Int(info.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
            guard handleBytes <= 128, 20 + handleBytes <= info.count else { continue }
            let handle = Array(info[12 ..< 20 + handleBytes])
            switch type {
            case DAXFS_FAN_EVENT_INFO_TYPE_DFID_NAME:
                guard mask & (DAXFS_FAN_CREATE | DAXFS_FAN_DELETE | DAXFS_FAN_MOVED_FROM | DAXFS_FAN_MOVED_TO) != 0,
                      let directory = resolve(handle) else { continue }
                let name = Array(info[(20 + handleBytes)...].prefix { $0 != 0 })
                if !name.isEmpty { changes.insert(.entry(directory: directory, name: name)) }
                changes.insert(.inode(directory))
            case DAXFS_FAN_EVENT_INFO_TYPE_FID:
                guard mask & (DAXFS_FAN_ATTRIB | DAXFS_FAN_MODIFY | DAXFS_FAN_DELETE_SELF) != 0,
                      let key = resolve(handle) else { continue }
                changes.insert(.inode(key))
            default:
                continue
            }
        }
    }

    /// The inode a handle names, if it still exists.
    private func resolve(_ handle: [UInt8]) -> InodeKey? {
        if let known = resolved[handle] { return known }
        let fd = handle.withUnsafeBytes { raw -> Int32 in
            // struct file_handle wants 4-byte alignment.
            let aligned = UnsafeMutableRawBufferPointer.allocate(byteCount: raw.count, alignment: 8)
            defer { aligned.deallocate() }
            aligned.copyMemory(from: raw)
            return daxfs_open_by_handle(mountFD, aligned.baseAddress, DAXFS_O_PATH | DAXFS_O_CLOEXEC)
        }
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        guard let st = try? Syscall.fstat(fd) else { return nil }
        if resolved.count >= 4096 { resolved.removeAll(keepingCapacity: true) }
        let key = InodeKey(st)
        resolved[handle] = key
        return key
    }
}

/// Test access to the event parser (a fanotify group is made on `path`).
@_spi(Testing) public enum HostWatchParser {
    /// The number of changes each buffer decodes to; nil when fanotify is unavailable.
    public static func changes(in buffers: [[UInt8]], watching path: String) -> [Int]? {
        let fd = open(path, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        guard let watcher = HostWatcher(path: path, mountFD: fd) else { return nil }
        return buffers.map { events in events.withUnsafeBytes { watcher.parse($0).count } }
    }
}
