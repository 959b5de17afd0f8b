import CLinux
import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import Synchronization

/// An open directory: a readable descriptor and a buffer of `getdents64`
/// records not yet sent. READDIR calls on one handle may race, so the cursor
/// and buffer are used only under `cursor`'s lock.
final class OpenDirectory: @unchecked Sendable {
    static let bufferSize = 32 * 1024

    let fd: Int32
    let inode: Inode
    let cursor = Locked(DirectoryCursor())
    /// Guarded by `cursor`.
    let buffer: UnsafeMutableRawBufferPointer
    /// Its share of the file system's `DescriptorBudget`.
    let token: DescriptorToken?

    init(fd: Int32, inode: Inode, token: DescriptorToken? = nil) {
        self.fd = fd
        self.inode = inode
        self.token = token
        buffer = .allocate(byteCount: Self.bufferSize, alignment: 8)
    }

    deinit {
        buffer.deallocate()
        Syscall.close(fd)
    }
}

/// Where the directory stream stands: `buffer[start..<end]` holds records
/// that follow the entry whose `d_off` is `offset`.
struct DirectoryCursor {
    var start = 0
    var end = 0
    var offset: UInt64 = 0
    /// False until the first READDIR positions the stream.
    var positioned = false
    var atEnd = false
}

extension PassthroughFS {
    public func opendir(_ ctx: RequestContext, node: NodeID, flags: UInt32) throws(Errno) -> Opened {
        try become(ctx)
        let inode = try inode(node)
        guard inode.isDirectory else { throw .notDirectory }
        let token = try budget.take()
        // Through /proc/self/fd, as open(2) of the directory itself: read
        // permission on it is what counts. openat(dir, ".") would also need
        // search permission, which a 0600 directory's owner does not have.
        let fd = try reopen(inode, flags: O_RDONLY | DAXFS_O_DIRECTORY)
        let directory = OpenDirectory(fd: fd, inode: inode, token: token)
        let handle = handles.withLock { table in
            let handle = table.allocate()
            table.directories[handle] = directory
            return handle
        }
        let replyFlags: OpenReplyFlags = options.cache == .always ? [.keepCache, .cacheDir] : []
        return Opened(handle: FileHandle(handle), flags: replyFlags)
    }

    public func releasedir(_ ctx: RequestContext, node: NodeID, handle: FileHandle, flags: UInt32) throws(Errno) {
        try become(ctx)
        guard handles.withLock({ $0.directories.removeValue(forKey: handle.rawValue) }) != nil else { throw .badFileDescriptor }
    }

    public func fsyncdir(_ ctx: RequestContext, node: NodeID, handle: FileHandle, datasync: Bool) throws(Errno) {
        try become(ctx)
        guard let directory = handles.withLock({ $0.directories[handle.rawValue] }) else { throw .badFileDescriptor }
        if datasync { try Syscall.fdatasync(directory.fd) } else { try Syscall.fsync(directory.fd) }
    }

    public func readdir(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, writer: inout DirectoryWriter) throws(Errno) {
        try become(ctx)
        guard let directory = handles.withLock({ $0.directories[handle.rawValue] }) else { throw .badFileDescriptor }
        try directory.cursor.withLock { cursor throws(Errno) in
            try fill(&writer, from: directory, cursor: &cursor, offset: offset)
        }
    }

    /// Sends entries from `offset` until the writer is full or the directory ends.
    /// `offset` is 0 or a `d_off` we sent; anything else is the host's to judge.
    private func fill(_ writer: inout DirectoryWriter, from directory: OpenDirectory, cursor: inout DirectoryCursor, offset: UInt64) throws(Errno) {
        // Offset 0 rewinds (rewinddir must see new entries); a continuation uses the buffer.
        if offset == 0 || !cursor.positioned || offset != cursor.offset {
            guard offset <= UInt64(Int64.max) else { throw .invalidArgument }
            _ = try Syscall.lseek(directory.fd, offset: Int64(offset), whence: SEEK_SET)
            cursor = DirectoryCursor(start: 0, end: 0, offset: offset, positioned: true, atEnd: false)
        }
        let buffer = directory.buffer
        while true {
            if cursor.start >= cursor.end {
                if cursor.atEnd { return }
                let count = try Syscall.getdents64(directory.fd, into: buffer)
                if count == 0 {
                    cursor.atEnd = true
                    return
                }
                cursor.start = 0
                cursor.end = count
            }
            // struct linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, char d_name[].
            let start = cursor.start
            guard cursor.end - start >= 19 else { throw .io }
            let ino = buffer.loadUnaligned(fromByteOffset: start, as: UInt64.self)
            let nextOffset = UInt64(bitPattern: buffer.loadUnaligned(fromByteOffset: start + 8, as: Int64.self))
            let recordLength = Int(buffer.loadUnaligned(fromByteOffset: start + 16, as: UInt16.self))
            let rawType = buffer[start + 18]
            guard recordLength > 19, recordLength <= cursor.end - start else { throw .io }
            let nameArea = UnsafeRawBufferPointer(rebasing: buffer[(start + 19) ..< (start + recordLength)])
            guard let nameLength = nameArea.firstIndex(of: 0) else { throw .io }
            let name = UnsafeRawBufferPointer(rebasing: nameArea[..<nameLength])
            let type = DirentType(rawValue: UInt32(rawType)) ?? .unknown

            let accepted: Bool
            if writer.isPlus {
                accepted = appendPlus(&writer, directory: directory, name: name, ino: ino, type: type, nextOffset: nextOffset)
            } else {
                accepted = writer.append(name: name, ino: ino, type: type, nextOffset: nextOffset)
            }
            guard accepted else { return }
            cursor.start = start + recordLength
            cursor.offset = nextOffset
        }
    }

    /// A READDIRPLUS entry. Each accepted entry other than "." and ".." carries
    /// one lookup reference; a rejected one gives its reference back.
    private func appendPlus(_ writer: inout DirectoryWriter, directory: OpenDirectory, name: UnsafeRawBufferPointer,
                            ino: UInt64, type: DirentType, nextOffset: UInt64) -> Bool {
        let isDot = name.count == 1 && name[0] == UInt8(ascii: ".")
        let isDotDot = name.count == 2 && name[0] == UInt8(ascii: ".") && name[1] == UInt8(ascii: ".")
        if !isDot && !isDotDot {
            // Ask before the lookup, so a full reply does not cost a reference round trip.
            guard writer.fits(nameLength: name.count) else { return false }
            // The name is NUL-terminated in the getdents buffer.
            let pointer = name.baseAddress!.assumingMemoryBound(to: CChar.self)
            if let (inode, st) = try? lookupReference(parent: directory.inode, name: pointer) {
                let accepted = writer.appendPlus(entry: entry(inode, st), name: name, type: DirentType(mode: UInt32(st.st_mode)), nextOffset: nextOffset)
                if !accepted { forget(inode.id, count: 1) }
                return accepted
            }
            // Vanished or unreadable: a plain entry; a later LOOKUP tells the truth.
        }
        var attr = Attr()
        attr.ino = ino
        attr.mode = type.rawValue << 12
        return writer.appendPlus(entry: Entry(node: NodeID(0), attr: attr, entryTimeout: .zero, attrTimeout: .zero),
                                 name: name, type: type, nextOffset: nextOffset)
    }
}
