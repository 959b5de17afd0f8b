import ClientScript
import DAX
import DaxClient
import FUSEABI
import FUSEServer
import FuzzSupport
import Glibc
import HostSystem
import PassthroughFS

typealias Seed = (String, [UInt8])

// MARK: fuzz-fuse-session

/// Requests as a Linux guest sends them after INIT. Node ids and handles are
/// those a fresh PassthroughFS hands out (nodes from 2, handles from 1) over
/// the tree the target makes (file, dir/inner, link, fifo).
func fuseSessionSeeds() -> [Seed] {
    var unique: UInt64 = 1
    func r(_ opcode: FUSEOpcode, node: UInt64 = 1, _ parts: [[UInt8]] = []) -> [UInt8] {
        unique += 1
        return FUSEMessage.request(opcode, unique: unique, node: node, uid: 0, gid: 0, parts)
    }
    let name = FUSEMessage.name
    let rw = UInt32(O_RDWR)
    var seeds: [Seed] = []
    unique = 1
    seeds.append(("read-write", [
        r(.lookup, [name("file")]),
        r(.getattr, node: 2, [GetattrIn().wireBytes]),
        r(.open, node: 2, [OpenIn(flags: rw).wireBytes]),
        r(.read, node: 2, [ReadWriteIn(fh: 1, offset: 0, size: 4096).wireBytes]),
        r(.write, node: 2, [ReadWriteIn(fh: 1, offset: 100, size: 5).wireBytes, Array("hello".utf8)]),
        r(.flush, node: 2, [FlushIn(fh: 1, lockOwner: 7).wireBytes]),
        r(.release, node: 2, [ReleaseIn(fh: 1, flags: rw).wireBytes]),
        r(.forget, node: 2, [U64Arg(1).wireBytes]),
    ].flatMap { $0 }))
    unique = 1
    seeds.append(("readdir", [
        r(.opendir, [OpenIn(flags: UInt32(O_RDONLY | O_DIRECTORY)).wireBytes]),
        r(.readdir, [ReadWriteIn(fh: 1, offset: 0, size: 4096).wireBytes]),
        r(.readdirplus, [ReadWriteIn(fh: 1, offset: 0, size: 4096).wireBytes]),
        r(.releasedir, [ReleaseIn(fh: 1).wireBytes]),
        r(.lookup, [name("dir")]),
        r(.lookup, node: 2, [name("inner")]),
        r(.batchForget, [U32PaddedArg(2).wireBytes, U64Arg(2).wireBytes, U64Arg(1).wireBytes, U64Arg(3).wireBytes, U64Arg(1).wireBytes]),
    ].flatMap { $0 }))
    unique = 1
    var setattr = SetattrIn()
    setattr.valid = SetattrValid.size.rawValue | SetattrValid.fh.rawValue
    setattr.fh = 1
    setattr.size = 3
    seeds.append(("create-truncate-unlink", [
        r(.create, [CreateIn(flags: rw, mode: 0o100644, umask: 0o022).wireBytes, name("new")]),
        r(.write, node: 2, [ReadWriteIn(fh: 1, offset: 0, size: 8).wireBytes, Array("12345678".utf8)]),
        r(.setattr, node: 2, [setattr.wireBytes]),
        r(.fsync, node: 2, [FsyncIn(fh: 1, fsyncFlags: 1).wireBytes]),
        r(.fallocate, node: 2, [FallocateIn(fh: 1, offset: 0, length: 8192, mode: 0).wireBytes]),
        r(.lseek, node: 2, [LseekIn(fh: 1, offset: 0, whence: 3).wireBytes]),
        r(.release, node: 2, [ReleaseIn(fh: 1, flags: rw).wireBytes]),
        r(.unlink, [name("new")]),
    ].flatMap { $0 }))
    unique = 1
    seeds.append(("names", [
        r(.mkdir, [MkdirIn(mode: 0o755, umask: 0o022).wireBytes, name("sub")]),
        r(.symlink, [name("ln"), name("file")]),
        r(.readlink, node: 3),
        r(.lookup, [name("file")]),
        r(.link, node: 2, [U64Arg(4).wireBytes, name("hard")]),
        r(.rename, [U64Arg(2).wireBytes, name("ln"), name("moved")]),
        r(.rename2, [Rename2In(newdir: 1, flags: 2).wireBytes, name("file"), name("link")]),
        r(.mknod, [MknodIn(mode: 0o10644, rdev: 0, umask: 0).wireBytes, name("pipe")]),
        r(.rmdir, [name("sub")]),
        r(.statfs),
        r(.access, [U32PaddedArg(4).wireBytes]),
    ].flatMap { $0 }))
    unique = 1
    seeds.append(("xattr-locks", [
        r(.lookup, [name("file")]),
        r(.setxattr, node: 2, [SetxattrIn(size: 3, flags: 0).wireBytes, name("user.fuzz"), Array("abc".utf8)]),
        r(.getxattr, node: 2, [U32PaddedArg(64).wireBytes, name("user.fuzz")]),
        r(.listxattr, node: 2, [U32PaddedArg(0).wireBytes]),
        r(.removexattr, node: 2, [name("user.fuzz")]),
        r(.open, node: 2, [OpenIn(flags: rw).wireBytes]),
        r(.setlk, node: 2, [LkIn(fh: 1, owner: 9, lock: FileLock(start: 0, end: 99, type: UInt32(F_WRLCK), pid: 77)).wireBytes]),
        r(.getlk, node: 2, [LkIn(fh: 1, owner: 10, lock: FileLock(start: 0, end: 10, type: UInt32(F_RDLCK), pid: 78)).wireBytes]),
        r(.setlkw, node: 2, [LkIn(fh: 1, owner: 9, lock: FileLock(start: 0, end: 99, type: UInt32(F_UNLCK), pid: 77)).wireBytes]),
        r(.release, node: 2, [ReleaseIn(fh: 1, flags: rw, releaseFlags: 1, lockOwner: 9).wireBytes]),
    ].flatMap { $0 }))
    unique = 1
    seeds.append(("dax-mapping", [
        r(.lookup, [name("file")]),
        r(.setupMapping, node: 2, [SetupMappingIn(fh: .max, foffset: 0, len: 2 << 20, flags: 2, moffset: 0).wireBytes]),
        r(.setupMapping, node: 2, [SetupMappingIn(fh: .max, foffset: 0, len: 2 << 20, flags: 3, moffset: 2 << 20).wireBytes]),
        r(.removeMapping, [RemoveMappingIn(count: 2).wireBytes, RemoveMappingOne(moffset: 0, len: 2 << 20).wireBytes,
                           RemoveMappingOne(moffset: 2 << 20, len: 2 << 20).wireBytes]),
    ].flatMap { $0 }))
    unique = 1
    // The ring files' nodes: "ring" is node 2, "ring-private" node 3.
    seeds.append(("direct-mmap", [
        r(.lookup, [name("ring")]),
        r(.open, node: 2, [OpenIn(flags: rw).wireBytes]),
        r(.daxfsMmap, node: 2, [DirectMmapIn(fh: 1, mh: 1, offset: 0, length: 16 << 10, windowOffset: 0, prot: 3, flags: 0).wireBytes]),
        r(.lookup, [name("ring-private")]),
        r(.open, node: 3, [OpenIn(flags: UInt32(O_RDONLY)).wireBytes]),
        r(.daxfsMmap, node: 3, [DirectMmapIn(fh: 2, mh: 2, offset: 4096, length: 8192, windowOffset: 64 << 10, prot: 1, flags: 0).wireBytes]),
        r(.daxfsMunmap, node: 2, [DirectMunmapIn(fh: 1, mh: 1).wireBytes]),
        r(.release, node: 2, [ReleaseIn(fh: 1, flags: rw).wireBytes]),
    ].flatMap { $0 }))
    unique = 1
    seeds.append(("destroy-init", [
        r(.lookup, [name("file")]),
        r(.interrupt, [U64Arg(5).wireBytes]),
        r(.destroy, node: 0),
        FUSEMessage.initRequest(unique: 50, flags: 0x7fff_ffff, flags2: 0),
        r(.getattr, [GetattrIn().wireBytes]),
    ].flatMap { $0 }))
    return seeds
}

// MARK: fuzz-vhost-control

/// The handshake QEMU sends to a vhost-user-fs backend, up to a running queue.
func vhostControlSeeds() -> [Seed] {
    typealias V = VhostMessageBytes
    let reply = V.version | V.needReply
    let features: UInt64 = 1 << 32 | 1 << 30 | 1 << 29
    let protocolFeatures: UInt64 = 1 << 0 | 1 << 3 | 1 << 5 | 1 << 9 | 1 << 10 | 1 << 13 | 1 << 15 | 1 << 22
    var region = ByteWriter()
    region.append(UInt32(1)); region.append(UInt32(0))
    region.append(UInt64(0)); region.append(UInt64(1 << 20)); region.append(UInt64(0x7f00_0000_0000)); region.append(UInt64(0))
    var address = ByteWriter()
    address.append(UInt32(1)); address.append(UInt32(0))
    address.append(UInt64(0x7f00_0000_0000)); address.append(UInt64(0x7f00_0000_2000)); address.append(UInt64(0x7f00_0000_1000))
    address.append(UInt64(0))
    var config = ByteWriter()
    config.append(UInt32(0)); config.append(UInt32(40)); config.append(UInt32(0))
    config.append([UInt8](repeating: 0, count: 40))
    let handshake: [[UInt8]] = [
        V.message(1),  // GET_FEATURES
        V.message(15),  // GET_PROTOCOL_FEATURES
        V.message(16, flags: reply, V.u64(protocolFeatures)),
        V.message(17),  // GET_QUEUE_NUM
        V.message(36),  // GET_MAX_MEM_SLOTS
        V.message(21, flags: reply),  // SET_BACKEND_REQ_FD
        V.message(3),  // SET_OWNER
        V.message(44),  // GET_SHMEM_CONFIG
        V.message(24, config.bytes),  // GET_CONFIG
        V.message(2, V.u64(features)),
        V.message(5, flags: reply, region.bytes),  // SET_MEM_TABLE
        V.message(8, V.state(1, 128)),  // SET_VRING_NUM
        V.message(10, V.state(1, 0)),  // SET_VRING_BASE
        V.message(9, address.bytes),  // SET_VRING_ADDR
        V.message(13, V.u64(1)),  // SET_VRING_CALL
        V.message(12, V.u64(1)),  // SET_VRING_KICK
        V.message(18, V.state(1, 1)),  // SET_VRING_ENABLE
    ]
    let teardown: [[UInt8]] = [
        V.message(11, V.state(1, 0)),  // GET_VRING_BASE
        V.message(34, flags: reply),  // RESET_DEVICE
    ]
    var memoryChange = ByteWriter()
    memoryChange.append(UInt64(0))
    memoryChange.append(UInt64(1 << 30)); memoryChange.append(UInt64(1 << 20)); memoryChange.append(UInt64(0x7f10_0000_0000)); memoryChange.append(UInt64(0))
    return [
        ("handshake", handshake.flatMap { $0 }),
        ("handshake-teardown", (handshake + teardown).flatMap { $0 }),
        ("memory-slots", [
            V.message(1), V.message(15), V.message(16, V.u64(protocolFeatures)), V.message(2, V.u64(features)),
            V.message(37, flags: reply, memoryChange.bytes),  // ADD_MEM_REG
            V.message(38, flags: reply, memoryChange.bytes),  // REM_MEM_REG
            V.message(14, V.u64(1 << 8 | 2)),  // SET_VRING_ERR without a descriptor
            V.message(40),  // GET_STATUS
        ].flatMap { $0 }),
    ]
}

// MARK: fuzz-descriptor-chains

/// A FUSE request chain as Linux's virtio-fs driver lays it out: header and
/// arguments readable, reply room writable; one direct, one indirect.
func descriptorChainSeeds() -> [Seed] {
    func descriptor(_ address: UInt64, _ length: UInt32, _ flags: UInt16, _ next: UInt16) -> [UInt8] {
        var w = ByteWriter()
        w.append(address); w.append(length); w.append(flags); w.append(next)
        return w.bytes
    }
    let size = 8, base: UInt64 = 0x10000
    // The target puts the available ring right after the table (the used ring follows it).
    let availableAt = 16 * size, buffers = 0x1000
    func image(table: [[UInt8]], heads: [UInt16], extra: [(Int, [UInt8])] = []) -> [UInt8] {
        var memory = [UInt8](repeating: 0, count: buffers + 0x400)
        let flat = table.flatMap { $0 }
        memory.replaceSubrange(0 ..< flat.count, with: flat)
        var ring = ByteWriter()
        ring.append(UInt16(0)); ring.append(UInt16(heads.count))
        for head in heads { ring.append(head) }
        memory.replaceSubrange(availableAt ..< availableAt + ring.bytes.count, with: ring.bytes)
        for (offset, bytes) in extra { memory.replaceSubrange(offset ..< offset + bytes.count, with: bytes) }
        let request = FUSEMessage.request(.getattr, unique: 2, node: 1, [GetattrIn().wireBytes])
        memory.replaceSubrange(buffers ..< buffers + request.count, with: request)
        return [3, 0, 0, 0] + memory  // log2(8), next available 0, no EVENT_IDX
    }
    let direct = image(table: [
        descriptor(base + UInt64(buffers), 40, 1, 1),
        descriptor(base + UInt64(buffers) + 40, 16, 1, 2),
        descriptor(base + UInt64(buffers) + 0x100, 120, 2, 0),
    ], heads: [0])
    // The request readable (NEXT), the reply room writable in the second region.
    let indirectTable = [descriptor(base + UInt64(buffers), 56, 1, 1), descriptor(0x40000, 4096, 2, 0)].flatMap { $0 }
    let indirect = image(table: [descriptor(base + 0x800, 32, 4, 0)], heads: [0, 0], extra: [(0x800, indirectTable)])
    return [("direct-chain", direct), ("indirect-chain", indirect)]
}

// MARK: fuzz-client-replies

/// Records the replies a real server (PassthroughFS through an in-process
/// session) gives to the client script, as the target's reply records.
final class RecordingChannel: FUSEChannel, @unchecked Sendable {
    let inner: EmbeddedChannel
    var recorded: [UInt8] = []
    init(_ inner: EmbeddedChannel) { self.inner = inner }
    func call<R>(_ request: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws(Errno) -> R) throws(Errno) -> R {
        try inner.call(request) { reply throws(Errno) -> R in
            var w = ByteWriter()
            w.append(UInt8(1))
            w.append(UInt16(reply.count))
            w.append(Array(reply))
            recorded += w.bytes
            return try body(reply)
        }
    }
    func send(_ request: UnsafeRawBufferPointer) throws(Errno) { try inner.send(request) }
}

func clientReplySeeds() -> [Seed] {
    /// {operation, node, handle, name, u32 offset, u16 count}.
    func step(_ operation: UInt8, node: UInt8 = 0, handle: UInt8 = 1, name: UInt8 = 0, offset: UInt32 = 0, count: UInt16 = 4096) -> [UInt8] {
        var w = ByteWriter()
        w.append(operation); w.append(node); w.append(handle); w.append(name); w.append(offset); w.append(count)
        return w.bytes
    }
    let scripts: [(String, [[UInt8]])] = [
        ("fuse-calls", [step(0), step(1, name: 0), step(2, node: 1), step(4, node: 1), step(6, node: 1), step(7, node: 1, count: 16),
                        step(8), step(9, count: 1024), step(15, node: 1), step(5, name: 2), step(10, name: 3), step(11, name: 3)]),
        ("dax-read-write", [step(16, name: 0), step(17, name: 2), step(18, offset: 0), step(19, offset: 1, count: 100), step(20), step(22),
                            step(18, offset: 1, count: 8192), step(23), step(24, name: 0), step(25), step(30)]),
        ("dax-mmap", [step(16, name: 0), step(27, offset: 0, count: 4096), step(28), step(21, offset: 0), step(29), step(30)]),
    ]
    var seeds: [Seed] = []
    for (name, steps) in scripts {
        let root = scratchDirectory("daxfs-seeds")
        mkdir(root + "/dir", 0o755)
        writeFile(root + "/dir/file", (0 ..< 12000).map { UInt8(truncatingIfNeeded: $0 * 7) })
        writeFile(root + "/file", Array("top-level file\n".utf8))
        defer { removeTree(root) }
        let fs = try! PassthroughFS(root: root, options: PassthroughFS.Options(passthrough: false, callerGroupsFromProc: false))
        let window = try! LocalWindow(size: 8 << 20)
        let mmapWindow = try! LocalWindow(size: 4 << 20)
        let session = FUSESession(fileSystem: fs, logger: silentLogger, window: window, mmapWindow: mmapWindow)
        let recorder = RecordingChannel(EmbeddedChannel(session: session))
        let script = ClientScript(over: recorder)
        var output: [UInt8] = []
        for bytes in steps {
            recorder.recorded = []
            bytes.withUnsafeBytes { raw in script.step(ByteStream(FuzzInput(raw))) }
            output += bytes + recorder.recorded
        }
        recorder.recorded = []
        script.finish()
        output += recorder.recorded
        session.end()
        seeds.append((name, output))
    }
    return seeds
}

// MARK: fuzz-mapping-validators

func mappingValidatorSeeds() -> [Seed] {
    var w = ByteWriter()
    w.append(UInt8(0)); w.append(UInt8(1))  // 4 KiB alignment, 4 MiB window
    w.append(UInt8(0)); for value in [UInt64(0), 2 << 20, 4096, 4096] { w.append(value) }
    w.append(UInt8(1)); for value in [UInt64.max, 0, 2 << 20, 2, 0] { w.append(value) }  // SETUPMAPPING read
    w.append(UInt8(1)); for value in [UInt64.max, 2 << 20, 2 << 20, 3, 2 << 20] { w.append(value) }  // read-write
    w.append(UInt8(2)); w.append(UInt8(2)); for value in [UInt64(0), 2 << 20, 2 << 20, 2 << 20] { w.append(value) }
    w.append(UInt8(3)); for value in [UInt64(1), 7, 0, 8192, 0] { w.append(value) }  // DAXFS_MMAP
    w.append(UInt32(3)); w.append(UInt8(0)); w.append(UInt32(0)); w.append(UInt8(3)); w.append(UInt64(0))
    w.append(UInt8(4)); w.append(UInt64(1)); w.append(UInt64(7))  // DAXFS_MUNMAP
    var planner = ByteWriter()
    planner.append(UInt8(0)); planner.append(UInt8(15))
    for (first, count, replace) in [(0, 4, 1), (2, 4, 1), (1, 1, 0), (0, 8, 1), (3, 2, 0)] as [(UInt8, UInt8, UInt8)] {
        planner.append(UInt8(5)); planner.append(first); planner.append(count - 1); planner.append(replace); planner.append(UInt8(1))
    }
    var frontend = ByteWriter()
    frontend.append(UInt8(0)); frontend.append(UInt8(1))
    // SHMEM_MAP {shmid 0, fd_offset 0, shm_offset 2 MiB, len 2 MiB, MAP_RW} with NEED_REPLY, then SHMEM_UNMAP.
    for (request, flags) in [(UInt8(0), UInt64(1)), (UInt8(1), UInt64(0))] {
        frontend.append(UInt8(6)); frontend.append(request); frontend.append(UInt8(8))
        frontend.append(UInt64(0)); frontend.append(UInt64(0)); frontend.append(UInt64(2 << 20)); frontend.append(UInt64(2 << 20))
        frontend.append(flags)
    }
    return [("session-and-rules", w.bytes), ("window-planner", planner.bytes), ("frontend-requests", frontend.bytes)]
}

// MARK: fuzz-host-watch

func hostWatchSeeds() -> [Seed] {
    /// struct fanotify_event_metadata with FAN_NOFD and the given info records.
    func event(mask: UInt64, pid: Int32, infos: [[UInt8]]) -> [UInt8] {
        let body = infos.flatMap { $0 }
        var w = ByteWriter()
        w.append(UInt32(24 + body.count)); w.append(UInt8(3)); w.append(UInt8(0)); w.append(UInt16(24))
        w.append(mask); w.append(Int32(-1)); w.append(pid)
        w.append(body)
        return w.bytes
    }
    /// A {type, pad, len, fsid, file_handle, name} record, padded to 4 bytes.
    func fid(type: UInt8, handle: [UInt8], name: String?) -> [UInt8] {
        var tail = handle
        if let name { tail += Array(name.utf8) + [0] }
        while (20 + tail.count) % 4 != 0 { tail.append(0) }
        var w = ByteWriter()
        w.append(type); w.append(UInt8(0)); w.append(UInt16(20 + tail.count))
        w.append(UInt64(0x1234)); w.append(UInt32(handle.count)); w.append(Int32(1))
        w.append(tail)
        return w.bytes
    }
    let handle: [UInt8] = [2, 0, 0, 0, 0, 0, 0, 0]
    let created = event(mask: 0x100 | 0x4000_0000, pid: 1, infos: [fid(type: 2, handle: handle, name: "new-file")])
    let modified = event(mask: 0x2, pid: 1, infos: [fid(type: 1, handle: handle, name: nil)])
    var range = ByteWriter()
    range.append(UInt8(6)); range.append(UInt8(0)); range.append(UInt16(24)); range.append(UInt32(0)); range.append(UInt64(4096)); range.append(UInt64(0))
    let truncation = event(mask: 0x0010_0000, pid: Int32(getpid()), infos: [range.bytes])
    var count = ByteWriter()
    count.append(UInt16(truncation.count))
    var syscall = Array("0 0x3 0x7ffc 0x1000 0x0 0x0 0x0 0x7ffc0000 0x7f0000001234".utf8)
    // This process's own line, as the guard reads it for a waiting thread.
    let fd = open("/proc/self/syscall", O_RDONLY)
    if fd >= 0 {
        var buffer = [UInt8](repeating: 0, count: 512)
        let got = read(fd, &buffer, buffer.count)
        if got > 0 { syscall = Array(buffer[0 ..< got]).filter { $0 != 10 } }
        close(fd)
    }
    let truncateLine = Array("77 0x5 0x64 0x0 0x0 0x0 0x0 0x7ffc0000 0x7f0000001234".utf8)
    let maps = Array("""
        7f0000000000-7f0000200000 rw-s 00000000 00:2a 1234 /tmp/share/file
        7f0000200000-7f0000400000 r--s 00200000 fd:01 99 /tmp/share/other
        """.utf8)
    var mapsSeed = ByteWriter()
    mapsSeed.append(UInt8(3)); mapsSeed.append(UInt64(0x2a)); mapsSeed.append(UInt64(1234)); mapsSeed.append(UInt64(0x100000))
    return [
        ("fanotify-dfid-name", [0] + created + modified),
        ("truncation-event", [1] + count.bytes + truncation),
        ("syscall-line", [2] + [UInt8](repeating: 0, count: 8) + syscall),
        ("syscall-ftruncate", [2] + [UInt8](repeating: 0, count: 8) + truncateLine),
        ("proc-maps", mapsSeed.bytes + maps),
    ]
}
