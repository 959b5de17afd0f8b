import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import Synchronization

/// What INIT agreed on.
public struct NegotiatedInit: Sendable, Equatable {
    public var minor: UInt32
    public var capabilities: InitFlags
    /// Largest WRITE (and READ) payload the server takes.
    public var maxWrite: UInt32
    public var maxPages: UInt16
    /// log2 of the alignment SETUPMAPPING needs; nil when the server did not
    /// grant FUSE_MAP_ALIGNMENT (then it has no DAX window for us).
    public var mapAlignmentLog2: UInt16?
}

/// One entry of a directory listing.
public struct DirectoryEntry: Sendable, Equatable {
    public var name: String
    public var inode: UInt64
    public var type: DirentType
    /// The offset to continue reading after this entry.
    public var nextOffset: UInt64
}

/// The client half of the FUSE protocol: encodes requests (header, arguments,
/// unique ids, the caller's credentials) for any `FUSEChannel` and decodes and
/// checks the replies. Safe to use from many threads at once.
public final class FUSEClient: Sendable {
    public let channel: any FUSEChannel
    private let nextUnique = Atomic<UInt64>(1)
    private let uid: UInt32
    private let gid: UInt32
    private let pid: UInt32
    /// READ/WRITE payload limit; the protocol default until INIT says more.
    private let maxIO = Atomic<Int>(32 * 4096)

    public init(channel: any FUSEChannel) {
        self.channel = channel
        uid = getuid()
        gid = getgid()
        pid = UInt32(bitPattern: getpid())
    }

    /// Largest READ or WRITE payload per request.
    public var maxTransfer: Int { maxIO.load(ordering: .relaxed) }

    // MARK: Encoding and decoding

    private func header(_ opcode: FUSEOpcode, _ node: NodeID, length: Int) -> InHeader {
        let unique = nextUnique.wrappingAdd(1, ordering: .relaxed).oldValue
        return InHeader(len: UInt32(length), opcode: opcode.rawValue, unique: unique, nodeid: node.rawValue, uid: uid, gid: gid, pid: pid)
    }

    /// Sends one request of `argsSize` argument bytes (written by `fill`) and
    /// hands the reply's payload to `body` after checking the header.
    func request<R>(_ opcode: FUSEOpcode, _ node: NodeID, argsSize: Int, _ fill: (inout WireWriter) -> Void,
                    reply body: (UnsafeRawBufferPointer) throws(Errno) -> R) throws(Errno) -> R {
        let length = InHeader.wireSize + argsSize
        let head = header(opcode, node, length: length)
        let message = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 8)
        defer { message.deallocate() }
        var writer = WireWriter(message)
        writer.write(head)
        fill(&writer)
        precondition(writer.position == length, "\(opcode) encoded \(writer.position) of \(length) bytes")
        return try channel.call(UnsafeRawBufferPointer(message)) { reply throws(Errno) -> R in
            var reader = WireReader(reply)
            guard let out = try? reader.read(OutHeader.self) else { throw .protocolError }
            guard out.unique == head.unique, Int(out.len) == reply.count else { throw .protocolError }
            if out.error != 0 {
                guard out.error < 0, out.error > -4096 else { throw .protocolError }
                throw Errno(-out.error)
            }
            return try body(reader.rest())
        }
    }

    /// A request whose reply is a single wire struct.
    func request<T: WireStruct>(_ opcode: FUSEOpcode, _ node: NodeID, argsSize: Int, _ fill: (inout WireWriter) -> Void,
                                replying _: T.Type) throws(Errno) -> T {
        try request(opcode, node, argsSize: argsSize, fill) { payload throws(Errno) -> T in
            var reader = WireReader(payload)
            guard let value = try? reader.read(T.self) else { throw .protocolError }
            return value
        }
    }

    /// A request with an empty reply.
    func request(_ opcode: FUSEOpcode, _ node: NodeID, argsSize: Int, _ fill: (inout WireWriter) -> Void) throws(Errno) {
        try request(opcode, node, argsSize: argsSize, fill) { (_: UnsafeRawBufferPointer) throws(Errno) in }
    }

    private static func nameBytes(_ name: String) throws(Errno) -> [UInt8] {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, !bytes.contains(0), !bytes.contains(UInt8(ascii: "/")) else { throw .invalidArgument }
        guard bytes.count <= 255 else { throw .nameTooLong }
        return bytes
    }

    // MARK: Connection

    /// FUSE_INIT. Offers `flags` (and FUSE_INIT_EXT, MAX_PAGES); returns what the server granted.
    public func initialize(flags: InitFlags, maxReadahead: UInt32 = 1 << 20) throws(Errno) -> NegotiatedInit {
        let offered = flags.union([.initExt, .maxPages])
        let input = InitIn(major: FUSEProtocol.major, minor: FUSEProtocol.minor, maxReadahead: maxReadahead,
                           flags: offered.low, flags2: offered.high)
        let out = try request(.`init`, NodeID(0), argsSize: InitIn.wireSize, { $0.write(input) }, replying: InitOut.self)
        guard out.major == FUSEProtocol.major, out.minor >= FUSEProtocol.oldestMinor else { throw .protocolError }
        var granted = InitFlags(flags: out.flags, flags2: 0)
        if granted.contains(.initExt) { granted = InitFlags(flags: out.flags, flags2: out.flags2) }
        granted = granted.intersection(offered)
        let pages = granted.contains(.maxPages) ? max(out.maxPages, 1) : 32
        let maxWrite = max(out.maxWrite, 4096)
        maxIO.store(Int(min(maxWrite, UInt32(pages) * UInt32(HostPage.size))), ordering: .relaxed)
        return NegotiatedInit(minor: out.minor, capabilities: granted, maxWrite: maxWrite, maxPages: pages,
                              mapAlignmentLog2: granted.contains(.mapAlignment) ? out.mapAlignment : nil)
    }

    /// FUSE_DESTROY: the server drops every node and handle.
    public func destroy() throws(Errno) {
        try request(.destroy, NodeID(0), argsSize: 0) { _ in }
    }

    // MARK: Names

    /// FUSE_LOOKUP: one more lookup reference on the returned node (drop it with `forget`).
    public func lookup(parent: NodeID, name: String) throws(Errno) -> EntryOut {
        let bytes = try Self.nameBytes(name)
        let entry = try request(.lookup, parent, argsSize: bytes.count + 1, { $0.bytes(bytes); $0.u8(0) }, replying: EntryOut.self)
        guard entry.nodeid != 0 else { throw .noEntry }  // a negative entry
        return entry
    }

    /// FUSE_FORGET: drops `count` lookup references. No reply.
    public func forget(_ node: NodeID, count: UInt64 = 1) {
        guard node != .root, count > 0 else { return }
        let length = InHeader.wireSize + U64Arg.wireSize
        let head = header(.forget, node, length: length)
        withUnsafeTemporaryAllocation(byteCount: length, alignment: 8) { message in
            var writer = WireWriter(message)
            writer.write(head)
            writer.write(U64Arg(count))
            try? channel.send(UnsafeRawBufferPointer(message))
        }
    }

    public func getattr(_ node: NodeID, handle: FileHandle? = nil) throws(Errno) -> Attr {
        let input = GetattrIn(getattrFlags: handle == nil ? 0 : FUSEFlag.getattrFH, fh: handle?.rawValue ?? 0)
        return try request(.getattr, node, argsSize: GetattrIn.wireSize, { $0.write(input) }, replying: AttrOut.self).attr
    }

    /// FUSE_SETATTR of the size (truncate or extend).
    public func setSize(_ node: NodeID, size: UInt64, handle: FileHandle? = nil) throws(Errno) -> Attr {
        var input = SetattrIn()
        input.valid = SetattrValid.size.rawValue
        input.size = size
        if let handle {
            input.valid |= SetattrValid.fh.rawValue
            input.fh = handle.rawValue
        }
        return try request(.setattr, node, argsSize: SetattrIn.wireSize, { $0.write(input) }, replying: AttrOut.self).attr
    }

    public func unlink(parent: NodeID, name: String) throws(Errno) {
        let bytes = try Self.nameBytes(name)
        try request(.unlink, parent, argsSize: bytes.count + 1) { $0.bytes(bytes); $0.u8(0) }
    }

    public func rmdir(parent: NodeID, name: String) throws(Errno) {
        let bytes = try Self.nameBytes(name)
        try request(.rmdir, parent, argsSize: bytes.count + 1) { $0.bytes(bytes); $0.u8(0) }
    }

    /// FUSE_MKDIR: the reply carries a lookup reference on the new directory.
    public func mkdir(parent: NodeID, name: String, mode: UInt32) throws(Errno) -> EntryOut {
        let bytes = try Self.nameBytes(name)
        let input = MkdirIn(mode: mode, umask: 0)
        return try request(.mkdir, parent, argsSize: MkdirIn.wireSize + bytes.count + 1,
                           { $0.write(input); $0.bytes(bytes); $0.u8(0) }, replying: EntryOut.self)
    }

    // MARK: Files

    public func open(_ node: NodeID, flags: Int32) throws(Errno) -> OpenOut {
        let input = OpenIn(flags: UInt32(bitPattern: flags))
        return try request(.open, node, argsSize: OpenIn.wireSize, { $0.write(input) }, replying: OpenOut.self)
    }

    /// FUSE_CREATE: creates and opens; the entry carries a lookup reference.
    public func create(parent: NodeID, name: String, mode: UInt32, flags: Int32) throws(Errno) -> (EntryOut, OpenOut) {
        let bytes = try Self.nameBytes(name)
        let input = CreateIn(flags: UInt32(bitPattern: flags), mode: mode | UInt32(S_IFREG), umask: 0)
        return try request(.create, parent, argsSize: CreateIn.wireSize + bytes.count + 1,
                           { $0.write(input); $0.bytes(bytes); $0.u8(0) }) { payload throws(Errno) -> (EntryOut, OpenOut) in
            var reader = WireReader(payload)
            guard let entry = try? reader.read(EntryOut.self), let opened = try? reader.read(OpenOut.self) else { throw .protocolError }
            return (entry, opened)
        }
    }

    public func release(_ node: NodeID, handle: FileHandle, flags: Int32) throws(Errno) {
        let input = ReleaseIn(fh: handle.rawValue, flags: UInt32(bitPattern: flags))
        try request(.release, node, argsSize: ReleaseIn.wireSize) { $0.write(input) }
    }

    public func flush(_ node: NodeID, handle: FileHandle, lockOwner: UInt64 = 0) throws(Errno) {
        let input = FlushIn(fh: handle.rawValue, lockOwner: lockOwner)
        try request(.flush, node, argsSize: FlushIn.wireSize) { $0.write(input) }
    }

    public func fsync(_ node: NodeID, handle: FileHandle, dataOnly: Bool = false) throws(Errno) {
        let input = FsyncIn(fh: handle.rawValue, fsyncFlags: dataOnly ? FUSEFlag.fsyncDatasync : 0)
        try request(.fsync, node, argsSize: FsyncIn.wireSize) { $0.write(input) }
    }

    /// One FUSE_READ of at most `maxTransfer` bytes; returns the count (short at end of file).
    public func read(_ node: NodeID, handle: FileHandle, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        let size = min(buffer.count, maxTransfer)
        let input = ReadWriteIn(fh: handle.rawValue, offset: offset, size: UInt32(size))
        return try request(.read, node, argsSize: ReadWriteIn.wireSize, { $0.write(input) }) { payload throws(Errno) -> Int in
            guard payload.count <= size else { throw .protocolError }
            if payload.count > 0 { buffer.baseAddress!.copyMemory(from: payload.baseAddress!, byteCount: payload.count) }
            return payload.count
        }
    }

    /// One FUSE_WRITE of at most `maxTransfer` bytes; returns the count the server wrote.
    public func write(_ node: NodeID, handle: FileHandle, offset: UInt64, from data: UnsafeRawBufferPointer) throws(Errno) -> Int {
        let size = min(data.count, maxTransfer)
        let input = ReadWriteIn(fh: handle.rawValue, offset: offset, size: UInt32(size))
        let written = try request(.write, node, argsSize: ReadWriteIn.wireSize + size, {
            $0.write(input)
            $0.bytes(UnsafeRawBufferPointer(rebasing: data[0 ..< size]))
        }, replying: U32PaddedArg.self).value
        guard Int(written) <= size else { throw .protocolError }
        return Int(written)
    }

    // MARK: Directories

    public func opendir(_ node: NodeID) throws(Errno) -> OpenOut {
        let input = OpenIn(flags: UInt32(O_RDONLY | O_DIRECTORY))
        return try request(.opendir, node, argsSize: OpenIn.wireSize, { $0.write(input) }, replying: OpenOut.self)
    }

    /// One FUSE_READDIR from `offset`; an empty result is the end of the directory.
    public func readdir(_ node: NodeID, handle: FileHandle, offset: UInt64, size: Int = 64 * 1024) throws(Errno) -> [DirectoryEntry] {
        let input = ReadWriteIn(fh: handle.rawValue, offset: offset, size: UInt32(min(size, maxTransfer)))
        return try request(.readdir, node, argsSize: ReadWriteIn.wireSize, { $0.write(input) }) { payload throws(Errno) -> [DirectoryEntry] in
            var reader = WireReader(payload)
            var entries: [DirectoryEntry] = []
            while reader.remaining > 0 {
                guard let dirent = try? reader.read(DirentHeader.self), dirent.namelen <= 1024,
                      let name = try? reader.bytes(Int(dirent.namelen)) else { throw .protocolError }
                let padded = (DirentHeader.wireSize + Int(dirent.namelen) + 7) & ~7
                try? reader.skip(min(padded - DirentHeader.wireSize - Int(dirent.namelen), reader.remaining))
                entries.append(DirectoryEntry(name: String(decoding: name, as: UTF8.self), inode: dirent.ino,
                                              type: DirentType(rawValue: dirent.type) ?? .unknown, nextOffset: dirent.off))
            }
            return entries
        }
    }

    public func releasedir(_ node: NodeID, handle: FileHandle) throws(Errno) {
        let input = ReleaseIn(fh: handle.rawValue, flags: UInt32(O_RDONLY | O_DIRECTORY))
        try request(.releasedir, node, argsSize: ReleaseIn.wireSize) { $0.write(input) }
    }

    // MARK: DAX

    /// FUSE_SETUPMAPPING: maps [fileOffset, fileOffset+length) of `node` at
    /// `windowOffset`, read-only or read-write. `handle` nil sends fh = -1 as
    /// Linux does: the server reopens the inode.
    public func setupMapping(_ node: NodeID, fileOffset: UInt64, windowOffset: UInt64, length: UInt64,
                             writable: Bool, handle: FileHandle? = nil) throws(Errno) {
        let flags = FUSEFlag.setupMappingRead | (writable ? FUSEFlag.setupMappingWrite : 0)
        let input = SetupMappingIn(fh: handle?.rawValue ?? .max, foffset: fileOffset, len: length, flags: flags, moffset: windowOffset)
        try request(.setupMapping, node, argsSize: SetupMappingIn.wireSize) { $0.write(input) }
    }

    /// DAXFS_MMAP (direct mmap extension): the server maps the region it
    /// chooses at `windowOffset` of this client's mmap window and says which.
    public func directMmap(_ node: NodeID, handle: FileHandle, mappingID: UInt64, offset: UInt64, length: UInt64,
                           windowOffset: UInt64, writable: Bool) throws(Errno) -> DirectMmapOut {
        let prot = DirectMmapFlag.protRead | (writable ? DirectMmapFlag.protWrite : 0)
        let input = DirectMmapIn(fh: handle.rawValue, mh: mappingID, offset: offset, length: length, windowOffset: windowOffset, prot: prot, flags: 0)
        return try request(.daxfsMmap, node, argsSize: DirectMmapIn.wireSize, { $0.write(input) }, replying: DirectMmapOut.self)
    }

    /// DAXFS_MUNMAP: mapping `mappingID` is gone; the server unmaps it and drops its reference.
    public func directMunmap(_ node: NodeID, handle: FileHandle, mappingID: UInt64) throws(Errno) {
        let input = DirectMunmapIn(fh: handle.rawValue, mh: mappingID)
        try request(.daxfsMunmap, node, argsSize: DirectMunmapIn.wireSize) { $0.write(input) }
    }

    /// Ranges per FUSE_REMOVEMAPPING message. Linux sends at most
    /// PAGE_SIZE / 16 = 256; the server takes any count that fits a message.
    public static let removeMappingBatch = 256

    /// FUSE_REMOVEMAPPING of every range, `removeMappingBatch` per message.
    /// Tries every message and reports the first error.
    public func removeMapping(_ ranges: [RemoveMappingOne], node: NodeID = .root) throws(Errno) {
        var firstError: Errno?
        var start = 0
        while start < ranges.count {
            let batch = ranges[start ..< min(start + Self.removeMappingBatch, ranges.count)]
            start += batch.count
            do throws(Errno) {
                try request(.removeMapping, node, argsSize: RemoveMappingIn.wireSize + batch.count * RemoveMappingOne.wireSize) { w in
                    w.write(RemoveMappingIn(count: UInt32(batch.count)))
                    for one in batch { w.write(one) }
                }
            } catch {
                if firstError == nil { firstError = error }
            }
        }
        if let firstError { throw firstError }
    }

    /// Sends raw bytes as one request and returns the reply's error (0 on
    /// success): for tests that need malformed messages.
    @_spi(Testing) public func rawRequest(_ opcode: FUSEOpcode, node: NodeID, arguments: [UInt8]) throws(Errno) -> Int32 {
        do throws(Errno) {
            try request(opcode, node, argsSize: arguments.count) { $0.bytes(arguments) }
            return 0
        } catch {
            return -error.rawValue
        }
    }
}
