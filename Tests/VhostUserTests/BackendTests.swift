import CLinux
import Foundation
import DAX
import DaxClient
import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import PassthroughFS
import Synchronization
import Testing
@_spi(Testing) import VhostUser
import Virtio

/// A `daxfs serve` backend in this process: a listening socket, a thread
/// serving one connection after another, and a shared directory.
final class BackendFixture: @unchecked Sendable {
    let directory: String
    let socketPath: String
    let listener: Int32
    private var thread: OSThread?
    final class Endings: Sendable { let list = Mutex<[VhostError]>([]) }
    let endings = Endings()

    init(options: FSBackendOptions = FSBackendOptions(), ringFiles: RingFiles? = nil) throws {
        var template = Array("/tmp/daxfs-vhost-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw Errno(daxfs_errno()) }
        directory = String(cString: made)
        mkdir(directory + "/share", 0o755)
        socketPath = directory + "/socket"
        listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in socketPath.utf8.enumerated() { raw[i] = b } }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard bound == 0, listen(listener, 4) == 0 else { throw Errno(daxfs_errno()) }
        let share = directory + "/share"
        let backend = VhostUserFSBackend(options: options) { () throws(Errno) -> any FileSystem in
            try PassthroughFS(root: share, options: PassthroughFS.Options(ringFiles: ringFiles))
        }
        let listenFD = listener
        let endings = self.endings
        thread = try OSThread(name: "test-backend") {
            while true {
                let connection = accept(listenFD, nil, nil)
                if connection < 0 { return }
                let ending = backend.serve(connection: connection)
                endings.list.withLock { $0.append(ending) }
                Glibc.close(connection)
            }
        }
    }

    var share: String { directory + "/share" }

    /// Shuts `frontend`'s socket down and waits up to 5 s for the backend to
    /// end that connection: whether it did, and how long it took (ns).
    func disconnect(_ frontend: VhostUserFrontend) -> (ended: Bool, took: UInt64) {
        let before = endings.list.withLock { $0.count }
        Glibc.shutdown(frontend.socket.fd, Int32(SHUT_RDWR))
        let started = monotonicNanoseconds()
        while monotonicNanoseconds() - started < 5_000_000_000 {
            if endings.list.withLock({ $0.count }) > before { return (true, monotonicNanoseconds() - started) }
            usleep(2000)
        }
        return (false, monotonicNanoseconds() - started)
    }

    func stop() {
        Glibc.shutdown(listener, Int32(SHUT_RDWR))
        Glibc.close(listener)
        thread?.join()
        _ = system("rm -rf '\(directory)'")
    }

    /// A raw control connection for sending hand-made messages.
    func rawConnection() throws -> MessageSocket {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in socketPath.utf8.enumerated() { raw[i] = b } }
        let result = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard result == 0 else { throw Errno(daxfs_errno()) }
        return MessageSocket(fd: fd)
    }

    func waitForEndings(_ count: Int) -> [VhostError] {
        for _ in 0 ..< 500 {
            let current = endings.list.withLock { $0 }
            if current.count >= count { return current }
            usleep(10_000)
        }
        return endings.list.withLock { $0 }
    }
}

@Suite(.serialized) struct VhostUserBackendTests {
    @Test func fuseRequestsRoundTripThroughVirtqueues() throws {
        let fixture = try BackendFixture()
        defer { fixture.stop() }
        _ = system("echo hello > '\(fixture.share)/greeting'")
        do {
            let frontend = try VhostUserFrontend(socketPath: fixture.socketPath)
            let channel = try VirtioChannel(frontend: frontend, slots: 4, pollMicroseconds: 20)
            let client = FUSEClient(channel: channel)
            let negotiated = try client.initialize(flags: [.asyncRead, .maxPages, .initExt])
            #expect(negotiated.maxWrite >= 128 * 1024)
            let entry = try client.lookup(parent: .root, name: "greeting")
            #expect(entry.attr.size == 6)
            let attr = try client.getattr(NodeID(entry.nodeid))
            #expect(attr.size == 6)
            #expect(throws: Errno.noEntry) { try client.lookup(parent: .root, name: "absent") }
        }
        #expect(fixture.waitForEndings(1).first == .disconnected)
    }

    /// Each malformed control message ends that connection with a log line;
    /// the backend then serves the next frontend normally.
    @Test func malformedControlMessagesCloseOnlyThatConnection() throws {
        let fixture = try BackendFixture()
        defer { fixture.stop() }
        typealias R = VhostUser.Request
        let cases: [(UInt32, UInt32, [UInt8])] = [
            (R.getFeatures.rawValue, 0x2, []),                                       // bad version bits
            (R.setFeatures.rawValue, VhostUser.version, .le(UInt64(0))),           // legacy: no VERSION_1
            (R.setFeatures.rawValue, VhostUser.version, [1, 2]),                    // short payload
            (R.setVringNum.rawValue, VhostUser.version, [0]),                       // short payload
            (R.setMemTable.rawValue, VhostUser.version, .le(UInt32(3), UInt32(0))), // regions without descriptors
            (R.setVringKick.rawValue, VhostUser.version, .le(UInt64(0))),           // descriptor missing
            (R.setVringAddr.rawValue, VhostUser.version, .le(UInt32(0), UInt32(0)) + .le(UInt64(1) << 40, UInt64(1) << 40, UInt64(1) << 40, UInt64(0))),
        ]
        var expectedEndings = 0
        for (request, flags, payload) in cases {
            let socket = try fixture.rawConnection()
            if request == R.setVringAddr.rawValue {
                // Addresses outside guest memory fail when the queue starts.
                try socket.send(request: R.setVringNum.rawValue, flags: VhostUser.version, payload: .le(UInt32(0), UInt32(8)))
                try socket.send(request: request, flags: flags, payload: payload)
                let kick = daxfs_eventfd(0, 0)
                try socket.send(request: R.setVringKick.rawValue, flags: VhostUser.version, payload: .le(UInt64(0)), fds: [kick])
                Glibc.close(kick)
            } else {
                try socket.send(request: request, flags: flags, payload: payload)
            }
            expectedEndings += 1
            let endings = fixture.waitForEndings(expectedEndings)
            #expect(endings.count == expectedEndings, "request \(request) did not end the connection")
            Glibc.close(socket.fd)
        }
        // An oversized header alone.
        let socket = try fixture.rawConnection()
        var header: [UInt8] = .le(R.getFeatures.rawValue, VhostUser.version, UInt32(1 << 20))
        _ = header.withUnsafeMutableBytes { Glibc.send(socket.fd, $0.baseAddress, $0.count, 0) }
        expectedEndings += 1
        #expect(fixture.waitForEndings(expectedEndings).count == expectedEndings)
        Glibc.close(socket.fd)

        // Unknown requests with NEED_REPLY get a failure status, and the connection lives on.
        let live = try fixture.rawConnection()
        try live.send(request: 9999, flags: VhostUser.version | VhostUser.needReplyFlag, payload: [])
        let reply = try live.receive()
        #expect(reply.payload == .le(UInt64(1)))
        try live.send(request: R.getFeatures.rawValue, flags: VhostUser.version, payload: [])
        #expect(try live.receive().payload.count == 8)
        Glibc.close(live.fd)

        // And a real frontend still works afterwards.
        let frontend = try VhostUserFrontend(socketPath: fixture.socketPath)
        let client = FUSEClient(channel: try VirtioChannel(frontend: frontend, slots: 2))
        _ = try client.initialize(flags: [.maxPages, .initExt])
        #expect(try client.getattr(.root).mode & 0o170000 == 0o040000)
    }

    /// Broken descriptor chains fail that request (completed with 0 bytes) and
    /// the device keeps serving.
    /// Host device nodes, FIFOs and sockets are never opened for a client:
    /// /dev/kmsg's node (c 1 11) in the share would hand out the host's
    /// kernel log, a FIFO would block the queue thread in open(2). OPEN and
    /// CREATE over an existing name fail with EBADF at once; the FIFO gets a
    /// host writer after 3 s, so an open that blocked returns (and fails
    /// the test) instead of hanging it.
    @Test func specialFilesAreNeverOpenedForAClient() throws {
        let fixture = try BackendFixture()
        defer { fixture.stop() }
        #expect(mknod(fixture.share + "/kmsg", S_IFCHR | 0o666, dev_t((1 << 8) | 11)) == 0)
        #expect(mkfifo(fixture.share + "/fifo", 0o666) == 0)
        let frontend = try VhostUserFrontend(socketPath: fixture.socketPath)
        let channel = try VirtioChannel(frontend: frontend, slots: 2)
        let client = FUSEClient(channel: channel)
        _ = try client.initialize(flags: [.maxPages, .initExt])
        let device = try client.lookup(parent: .root, name: "kmsg")
        #expect(throws: Errno.badFileDescriptor) { _ = try client.open(NodeID(device.nodeid), flags: O_RDONLY) }
        #expect(throws: Errno.badFileDescriptor) { _ = try client.create(parent: .root, name: "kmsg", mode: 0o644, flags: O_RDWR) }

        let fifoPath = fixture.share + "/fifo"
        let writer = try OSThread(name: "test-fifo-writer") {
            usleep(3_000_000)
            let fd = open(fifoPath, O_WRONLY | O_NONBLOCK)
            if fd >= 0 { close(fd) }
        }
        defer { writer.join() }
        let fifo = try client.lookup(parent: .root, name: "fifo")
        let started = monotonicNanoseconds()
        #expect(throws: Errno.badFileDescriptor) { _ = try client.open(NodeID(fifo.nodeid), flags: O_RDONLY) }
        #expect(throws: Errno.badFileDescriptor) { _ = try client.create(parent: .root, name: "fifo", mode: 0o644, flags: O_RDONLY) }
        #expect(monotonicNanoseconds() - started < 2_000_000_000, "an open waited for the FIFO's writer")
        // A regular file still opens, created or existing.
        let (entry, _) = try client.create(parent: .root, name: "plain", mode: 0o644, flags: O_RDWR)
        _ = try client.open(NodeID(entry.nodeid), flags: O_RDONLY)
        _ = try client.create(parent: .root, name: "plain", mode: 0o644, flags: O_RDWR)
        #expect(throws: Errno.exists) { _ = try client.create(parent: .root, name: "plain", mode: 0o644, flags: O_RDWR | O_EXCL) }
    }

    /// A frontend window whose SHMEM_MAP never finishes until released.
    final class StuckWindow: WindowMapper, @unchecked Sendable {
        let windowSize: UInt64
        let entered = Atomic<Bool>(false)
        let released = Atomic<Bool>(false)
        init(size: UInt64) { windowSize = size }
        func map(fd: Int32, fileOffset: UInt64, windowOffset: UInt64, length: UInt64, writable: Bool) throws(Errno) {
            entered.store(true, ordering: .releasing)
            while !released.load(ordering: .acquiring) { usleep(1000) }
            throw .io
        }
        func unmap(windowOffset: UInt64, length: UInt64) throws(Errno) {}
    }

    /// A frontend that disconnects while a SHMEM_MAP reply is pending: the
    /// connection ends within two seconds (the waiting queue thread is
    /// released), the SETUPMAPPING fails, and the backend serves the next
    /// frontend.
    @Test func aFrontendGoneWithAPendingShmemReplyEndsItsConnection() throws {
        var options = FSBackendOptions()
        options.cacheSize = 8 << 20
        let fixture = try BackendFixture(options: options)
        let share = fixture.share
        writeHost(share + "/data", [UInt8](repeating: 7, count: 8192))
        let stuck = Locked<StuckWindow?>(nil)
        var frontend: VhostUserFrontend? = try VhostUserFrontend(socketPath: fixture.socketPath) { size throws(Errno) in
            let window = StuckWindow(size: size)
            stuck.withLock { $0 = window }
            return window
        }
        guard let window = stuck.withLock({ $0 }) else { Issue.record("no window"); fixture.stop(); return }
        let client = FUSEClient(channel: try VirtioChannel(frontend: frontend!, slots: 2))
        _ = try client.initialize(flags: [.maxPages, .initExt])
        let node = NodeID(try client.lookup(parent: .root, name: "data").nodeid)
        let opened = try client.open(node, flags: O_RDONLY)
        let outcome = Locked<Errno?>(nil)
        let mapper = try OSThread(name: "test-setupmapping") {
            do throws(Errno) {
                try client.setupMapping(node, fileOffset: 0, windowOffset: 0, length: 2 << 20, writable: false, handle: FileHandle(opened.fh))
            } catch { outcome.withLock { $0 = error } }
        }
        for _ in 0 ..< 2000 where !window.entered.load(ordering: .acquiring) { usleep(1000) }
        let reached = window.entered.load(ordering: .acquiring)
        #expect(reached, "the SHMEM_MAP never reached the frontend")

        let (ended, took) = fixture.disconnect(frontend!)
        #expect(ended && took < 2_000_000_000, "the connection took \(took / 1_000_000) ms to end")
        window.released.store(true, ordering: .releasing)
        mapper.join()
        #expect(outcome.withLock { $0 } != nil, "the SETUPMAPPING succeeded")
        frontend = nil
        guard ended else { return }  // a backend still stuck would hang stop()
        defer { fixture.stop() }
        // The next frontend is served (and gone before the fixture stops).
        do {
            let next = try VhostUserFrontend(socketPath: fixture.socketPath)
            let nextClient = FUSEClient(channel: try VirtioChannel(frontend: next, slots: 2))
            _ = try nextClient.initialize(flags: [.maxPages, .initExt])
            #expect(try nextClient.getattr(.root).mode & 0o170000 == 0o040000)
        }
    }

    /// Writes descriptors with `build`, publishes `head` bypassing the
    /// driver's own bookkeeping, and waits for the backend to complete it.
    static func publishRaw(head: UInt16, on queue: FrontendQueue, waitingMilliseconds: Int,
                           _ build: () -> Void) -> [(head: UInt16, length: UInt32)] {
        queue.lock.withLock { _ in
            build()
            queue.ring.publishRaw(head: head)
            queue.notify()
            var done: [(head: UInt16, length: UInt32)] = []
            for _ in 0 ..< waitingMilliseconds where done.isEmpty {
                done = queue.ring.reap()
                if done.isEmpty { usleep(1000) }
            }
            return done
        }
    }

    /// Threads of this process (the backend runs in it).
    static func threadCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0
    }

    /// 50 SETLKWs wait for a lock a host process holds: no thread each (they
    /// used to get one, with 1 MiB of buffers), all granted once the host
    /// lets go; then one more waits while its frontend disconnects, and the
    /// connection still ends at once.
    @Test func lockWaitsTakeNoThreadsAndEndWithTheirConnection() throws {
        let fixture = try BackendFixture()
        var stopped = false
        defer { if !stopped { fixture.stop() } }
        writeHost(fixture.share + "/locked", [UInt8](repeating: 1, count: 4096))
        let host = open(fixture.share + "/locked", O_RDWR | O_CLOEXEC)
        defer { close(host) }
        var exclusive = flock(l_type: Int16(F_WRLCK), l_whence: Int16(SEEK_SET), l_start: 0, l_len: 0, l_pid: 0)
        #expect(fcntl(host, DAXFS_F_OFD_SETLK, &exclusive) == 0)

        var frontend: VhostUserFrontend? = try VhostUserFrontend(socketPath: fixture.socketPath)
        let client = FUSEClient(channel: try VirtioChannel(frontend: frontend!, slots: 2))
        _ = try client.initialize(flags: [.maxPages, .initExt])
        let node = try client.lookup(parent: .root, name: "locked").nodeid
        let handle = try client.open(NodeID(node), flags: O_RDWR).fh
        let queue = frontend!.queues[1], memory = frontend!.memory
        let base = try memory.allocate(64 * 256, alignment: 64)
        func publishLockWait(_ i: Int, type: Int32) {
            Self.publishLockWait(i, type: type, at: base, on: queue, memory: memory, node: node, handle: handle)
        }
        let threadsBefore = Self.threadCount()
        queue.lock.withLock { _ in
            for i in 0 ..< 50 { publishLockWait(i, type: F_RDLCK) }
            queue.notify()
        }
        usleep(300_000)
        let threadsWaiting = Self.threadCount()
        #expect(threadsWaiting - threadsBefore < 5, "\(threadsWaiting - threadsBefore) more threads for 50 lock waits")
        #expect(queue.lock.withLock { _ in queue.ring.reap() }.isEmpty, "a SETLKW finished while the host holds the lock")

        // The host lets go: every reader gets its lock.
        var unlock = flock(l_type: Int16(F_UNLCK), l_whence: Int16(SEEK_SET), l_start: 0, l_len: 0, l_pid: 0)
        #expect(fcntl(host, DAXFS_F_OFD_SETLK, &unlock) == 0)
        var done: [(head: UInt16, length: UInt32)] = []
        for _ in 0 ..< 3000 where done.count < 50 {
            done += queue.lock.withLock { _ in queue.ring.reap() }
            if done.count < 50 { usleep(1000) }
        }
        #expect(done.count == 50)
        for (head, length) in done {
            let reply = memory.pointer(base + UInt64((Int(head) - 8) / 2 * 256) + 128)
            #expect(length == 16 && reply.loadUnaligned(fromByteOffset: 4, as: Int32.self) == 0, "chain \(head): \(length) bytes")
        }

        // A writer waits for the readers (still holding); its frontend goes away.
        queue.lock.withLock { _ in
            publishLockWait(50, type: F_WRLCK)
            queue.notify()
        }
        usleep(100_000)
        let (ended, took) = fixture.disconnect(frontend!)
        #expect(ended && took < 2_000_000_000, "the connection took \(took / 1_000_000) ms to end with a lock wait pending")
        frontend = nil
        if !ended { stopped = true }  // a backend still stuck would hang stop()
    }

    /// A SETLKW waits on request queue 1 for a lock a host process holds; a
    /// FUSE_INTERRUPT for it arrives on the high-priority queue 0: the wait
    /// ends with EINTR at once, and the lock is not taken (the host can still
    /// take it again after letting go). Another waiter, not interrupted, is
    /// granted once the host lets go.
    @Test func interruptEndsAWaitingLockWithEINTR() throws {
        let fixture = try BackendFixture()
        defer { fixture.stop() }
        writeHost(fixture.share + "/locked", [UInt8](repeating: 1, count: 4096))
        let host = open(fixture.share + "/locked", O_RDWR | O_CLOEXEC)
        defer { close(host) }
        var exclusive = flock(l_type: Int16(F_WRLCK), l_whence: Int16(SEEK_SET), l_start: 0, l_len: 0, l_pid: 0)
        #expect(fcntl(host, DAXFS_F_OFD_SETLK, &exclusive) == 0)

        let frontend = try VhostUserFrontend(socketPath: fixture.socketPath)
        let channel = try VirtioChannel(frontend: frontend, slots: 2)
        let client = FUSEClient(channel: channel)
        _ = try client.initialize(flags: [.maxPages, .initExt])
        let node = try client.lookup(parent: .root, name: "locked").nodeid
        let handle = try client.open(NodeID(node), flags: O_RDWR).fh
        let queue = frontend.queues[1], memory = frontend.memory
        let base = try memory.allocate(64 * 256, alignment: 64)
        queue.lock.withLock { _ in
            for i in 0 ..< 2 {
                Self.publishLockWait(i, type: F_WRLCK, at: base, on: queue, memory: memory, node: node, handle: handle)
            }
            queue.notify()
        }
        usleep(200_000)
        #expect(queue.lock.withLock { _ in queue.ring.reap() }.isEmpty, "a SETLKW finished while the host holds the lock")

        // INTERRUPT (its own unique has FUSE_INT_REQ_BIT) for request 0.
        let length = InHeader.wireSize + U64Arg.wireSize
        let started = monotonicNanoseconds()
        try withUnsafeTemporaryAllocation(byteCount: length, alignment: 8) { (message) throws(Errno) in
            var writer = WireWriter(message)
            writer.write(InHeader(len: UInt32(length), opcode: FUSEOpcode.interrupt.rawValue, unique: 2_000_001))
            writer.write(U64Arg(1_000_000))
            try channel.send(UnsafeRawBufferPointer(message))
        }
        var done: [(head: UInt16, length: UInt32)] = []
        for _ in 0 ..< 2000 where done.isEmpty {
            done = queue.lock.withLock { _ in queue.ring.reap() }
            if done.isEmpty { usleep(1000) }
        }
        let took = monotonicNanoseconds() - started
        #expect(done.count == 1 && done.first?.head == 8, "completed: \(done)")
        #expect(took < 1_000_000_000, "the interrupt took \(took / 1_000_000) ms")
        let reply = memory.pointer(base + 128)
        #expect(done.first?.length == 16)
        #expect(reply.loadUnaligned(fromByteOffset: 4, as: Int32.self) == -EINTR)
        #expect(reply.loadUnaligned(fromByteOffset: 8, as: UInt64.self) == 1_000_000)

        // The host lets go: only the waiter that was not interrupted gets the lock.
        var unlock = flock(l_type: Int16(F_UNLCK), l_whence: Int16(SEEK_SET), l_start: 0, l_len: 0, l_pid: 0)
        #expect(fcntl(host, DAXFS_F_OFD_SETLK, &unlock) == 0)
        done = []
        for _ in 0 ..< 3000 where done.isEmpty {
            done = queue.lock.withLock { _ in queue.ring.reap() }
            if done.isEmpty { usleep(1000) }
        }
        #expect(done.count == 1 && done.first?.head == 10, "completed: \(done)")
        #expect(memory.pointer(base + 256 + 128).loadUnaligned(fromByteOffset: 4, as: Int32.self) == 0)
        usleep(100_000)
        #expect(queue.lock.withLock { _ in queue.ring.reap() }.isEmpty, "the interrupted SETLKW was answered twice")
    }

    /// Publishes SETLKW number `i` (owner 5000+i, the whole file, lock
    /// `type`) without waiting: descriptors 8+2i (the request, at
    /// `base`+256i) and 9+2i (64 bytes for the reply, 128 bytes further).
    static func publishLockWait(_ i: Int, type: Int32, at base: UInt64, on queue: FrontendQueue, memory: SharedGuestMemory,
                                node: UInt64, handle: UInt64) {
        let request = base + UInt64(i * 256), reply = request + 128
        let length = InHeader.wireSize + LkIn.wireSize
        var writer = WireWriter(UnsafeMutableRawBufferPointer(start: memory.pointer(request), count: length))
        writer.write(InHeader(len: UInt32(length), opcode: FUSEOpcode.setlkw.rawValue, unique: 1_000_000 + UInt64(i), nodeid: node))
        writer.write(LkIn(fh: handle, owner: 5000 + UInt64(i), lock: FileLock(start: 0, end: UInt64(Int64.max), type: UInt32(type), pid: 42)))
        let head = UInt16(8 + 2 * i)
        queue.ring.writeDescriptor(head, address: request, length: UInt32(length), flags: 1, next: head + 1)
        queue.ring.writeDescriptor(head + 1, address: reply, length: 64, flags: 2, next: 0)
        queue.ring.publishRaw(head: head)
    }

    /// The process's peak resident memory (VmHWM), in KiB.
    static func peakResidentKiB() -> Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    /// A 256 MiB indirect table whose entry 0 loops to itself: refused by
    /// its size before a single entry is read, so the backend does not grow
    /// (the walk used to keep every entry it visited, one per 16 bytes of
    /// table, before it found the loop), and the device goes on.
    @Test func hugeIndirectTablesAreRefusedBeforeTheyAreWalked() throws {
        let fixture = try BackendFixture()
        defer { fixture.stop() }
        var options = VhostUserFrontend.Options()
        options.guestMemorySize = 320 << 20
        let frontend = try VhostUserFrontend(socketPath: fixture.socketPath, options: options)
        let channel = try VirtioChannel(frontend: frontend, slots: 2)
        let client = FUSEClient(channel: channel)
        _ = try client.initialize(flags: [.maxPages, .initExt])
        let queue = frontend.queues[1]
        let memory = frontend.memory
        let ring = queue.ring
        let tableLength: UInt64 = 256 << 20
        let table = try memory.allocate(tableLength, alignment: 4096)
        let entry = memory.pointer(table)
        entry.storeBytes(of: table.littleEndian, toByteOffset: 0, as: UInt64.self)
        entry.storeBytes(of: UInt32(64).littleEndian, toByteOffset: 8, as: UInt32.self)
        entry.storeBytes(of: UInt16(1).littleEndian, toByteOffset: 12, as: UInt16.self)  // NEXT
        entry.storeBytes(of: UInt16(0).littleEndian, toByteOffset: 14, as: UInt16.self)  // to itself
        let before = Self.peakResidentKiB()
        let completed = Self.publishRaw(head: 100, on: queue, waitingMilliseconds: 20_000) {
            ring.writeDescriptor(100, address: table, length: UInt32(tableLength), flags: 4, next: 0)
        }
        let grown = Self.peakResidentKiB() - before
        #expect(completed.count == 1 && completed.first?.head == 100 && completed.first?.length == 0)
        #expect(grown < 64 << 10, "the backend grew by \(grown) KiB for one request")
        #expect(try client.getattr(.root).mode & 0o170000 == 0o040000, "device stopped")
    }

    @Test func badDescriptorChainsFailOnlyThatRequest() throws {
        let fixture = try BackendFixture()
        defer { fixture.stop() }
        let frontend = try VhostUserFrontend(socketPath: fixture.socketPath)
        let channel = try VirtioChannel(frontend: frontend, slots: 2)
        let client = FUSEClient(channel: channel)
        _ = try client.initialize(flags: [.maxPages, .initExt])

        let queue = frontend.queues[1]
        let memory = frontend.memory
        let buffer = try memory.allocate(4096)
        let outside = memory.size + (1 << 30)
        let ring = queue.ring
        // Descriptors 100+ are never handed out by this test's channel (2 slots × 2 descriptors).
        let broken: [(String, () -> Void)] = [
            ("loop", { ring.writeDescriptor(100, address: buffer, length: 64, flags: 1, next: 101)
                       ring.writeDescriptor(101, address: buffer, length: 64, flags: 1, next: 100) }),
            ("out of range address", { ring.writeDescriptor(100, address: outside, length: 64, flags: 0, next: 0) }),
            ("address overflow", { ring.writeDescriptor(100, address: UInt64.max - 10, length: 64, flags: 0, next: 0) }),
            ("next out of range", { ring.writeDescriptor(100, address: buffer, length: 64, flags: 1, next: 5000) }),
            ("readable after writable", { ring.writeDescriptor(100, address: buffer, length: 64, flags: 3, next: 101)
                                          ring.writeDescriptor(101, address: buffer, length: 64, flags: 0, next: 0) }),
            ("nested indirect", {
                let table = memory.pointer(buffer)
                table.storeBytes(of: (buffer).littleEndian, toByteOffset: 0, as: UInt64.self)
                table.storeBytes(of: UInt32(16).littleEndian, toByteOffset: 8, as: UInt32.self)
                table.storeBytes(of: UInt16(4).littleEndian, toByteOffset: 12, as: UInt16.self)
                ring.writeDescriptor(100, address: buffer, length: 16, flags: 4, next: 0) }),
            ("indirect table of odd size", { ring.writeDescriptor(100, address: buffer, length: 17, flags: 4, next: 0) }),
            ("garbage request", {
                memory.pointer(buffer).initializeMemory(as: UInt8.self, repeating: 0xEE, count: 64)
                ring.writeDescriptor(100, address: buffer, length: 64, flags: 1, next: 101)
                ring.writeDescriptor(101, address: buffer + 1024, length: 1024, flags: 2, next: 0) }),
        ]
        for (name, build) in broken {
            let completed = Self.publishRaw(head: 100, on: queue, waitingMilliseconds: 1000, build)
            #expect(completed.count == 1, "\(name): not completed")
            #expect(completed.first?.head == 100, "\(name)")
            if name == "garbage request" {
                // A well-formed chain carrying garbage gets an EINVAL reply header.
                #expect(completed.first?.length == 16, "\(name)")
                let error = memory.pointer(buffer + 1024).loadUnaligned(fromByteOffset: 4, as: Int32.self)
                #expect(error == -EINVAL)
            } else {
                #expect(completed.first?.length == 0, "\(name): \(completed.first?.length ?? 0) bytes")
            }
            // The device still answers.
            #expect(try client.getattr(.root).mode & 0o170000 == 0o040000, "\(name): device stopped")
        }
    }

    /// `daxfs serve` killed under a connected frontend: calls fail with
    /// ENOTCONN instead of hanging.
    @Test func backendDeathFailsCallsInsteadOfHanging() throws {
        let binary = daxfsBinary()
        guard access(binary, X_OK) == 0 else {
            print("skipped: no daxfs binary at \(binary)")
            return
        }
        var template = Array("/tmp/daxfs-vhost-XXXXXX".utf8CString)
        let directory = String(cString: mkdtemp(&template)!)
        defer { _ = system("rm -rf '\(directory)'") }
        mkdir(directory + "/share", 0o755)
        let socketPath = directory + "/socket"
        let server = Process()
        server.executableURL = URL(fileURLWithPath: binary)
        server.arguments = ["serve", "--socket-path", socketPath, "--shared-dir", directory + "/share", "--log-level", "error"]
        try server.run()
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) }; server.waitUntilExit() }
        for _ in 0 ..< 500 where access(socketPath, F_OK) != 0 { usleep(10_000) }
        let frontend = try VhostUserFrontend(socketPath: socketPath)
        let client = FUSEClient(channel: try VirtioChannel(frontend: frontend, slots: 2, pollMicroseconds: 0))
        _ = try client.initialize(flags: [.maxPages, .initExt])
        #expect(try client.getattr(.root).mode & 0o170000 == 0o040000)
        kill(server.processIdentifier, SIGKILL)
        server.waitUntilExit()
        let start = Date()
        #expect(throws: Errno.notConnected) { _ = try client.getattr(.root) }
        #expect(throws: Errno.notConnected) { _ = try client.getattr(.root) }
        #expect(Date().timeIntervalSince(start) < 5)
    }
}

/// The daxfs executable next to the test runner, or $DAXFS_BIN.
func daxfsBinary() -> String {
    if let override = ProcessInfo.processInfo.environment["DAXFS_BIN"] { return override }
    let runner = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    return runner.deletingLastPathComponent().appendingPathComponent("daxfs").path
}

@Suite(.serialized) struct DAXOverVhostUserTests {
    /// SETUPMAPPING in the backend becomes SHMEM_MAP to the frontend, which
    /// maps the host file into its window; reads and writes then go through it.
    @Test func windowReadsAndWritesReachTheHostFile() throws {
        var options = FSBackendOptions()
        options.cacheSize = 64 << 20
        let fixture = try BackendFixture(options: options)
        defer { fixture.stop() }
        let content = (0 ..< (3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try Data(content).write(to: URL(fileURLWithPath: fixture.share + "/data"))
        do {
            let made = Locked<LocalWindow?>(nil)
            let frontend = try VhostUserFrontend(socketPath: fixture.socketPath) { size throws(Errno) in
                let window = try LocalWindow(size: size, guarded: true)
                made.withLock { $0 = window }
                return window
            }
            #expect(frontend.windowSize == 64 << 20)
            let window = try #require(made.withLock { $0 } as LocalWindow?)
            var clientOptions = DaxClient.Options()
            clientOptions.windowSize = 64 << 20
            clientOptions.mode = .always
            let client = try DaxClient(channel: try VirtioChannel(frontend: frontend), window: window, options: clientOptions)
            let file = try client.open("data", flags: O_RDWR)
            var buffer = [UInt8](repeating: 0, count: 8192)
            let count = try buffer.withUnsafeMutableBytes { try file.pread(into: $0, at: (2 << 20) + 100) }
            #expect(count == 8192)
            #expect(Array(buffer) == Array(content[(2 << 20) + 100 ..< (2 << 20) + 100 + 8192]))
            #expect(client.statistics.mappingsSetUp >= 1)
            #expect(client.statistics.fuseReads == 0)
            // A window write reaches the host file without FUSE_WRITE.
            let patch = [UInt8](repeating: 0xAB, count: 4096)
            _ = try patch.withUnsafeBytes { try file.pwrite($0, at: 4096) }
            #expect(client.statistics.fuseWrites == 0)
            let host = try Data(contentsOf: URL(fileURLWithPath: fixture.share + "/data"))
            #expect(Array(host[4096 ..< 8192]) == patch)
            try file.close()
            client.shutdown()
        }
    }
}

/// A frontend that shrinks its guest-memory memfd after SET_MEM_TABLE and
/// points a descriptor past the new end: `daxfs serve` used to die of
/// SIGBUS, taking every other frontend's connection with it. Now the fault
/// reads zeros, that connection is closed with a log line, and the other
/// frontend goes on.
@Suite struct ShrunkGuestMemoryTests {
    @Test func aShrunkMemfdEndsOnlyItsConnection() throws {
        let scratch = Scratch()
        guard let backend = try BackendProcess.start(.daxfs, share: scratch.share, socket: scratch.socket("a"),
                                                     arguments: ["--max-frontends", "2", "--log-level", "info"]) else { return }
        defer { backend.kill() }
        let bystander = try VhostUserFrontend(socketPath: backend.socketPath)
        let bystanderClient = FUSEClient(channel: try VirtioChannel(frontend: bystander, slots: 2))
        _ = try bystanderClient.initialize(flags: [.maxPages, .initExt])

        do {
            let hostile = try VhostUserFrontend(socketPath: backend.socketPath)
            let client = FUSEClient(channel: try VirtioChannel(frontend: hostile, slots: 2))
            _ = try client.initialize(flags: [.maxPages, .initExt])
            let memory = hostile.memory
            _ = try memory.allocate(40 << 20, alignment: 4096)  // the request lies past 40 MiB
            let request = try memory.allocate(4096, alignment: 4096)
            let reply = try memory.allocate(4096, alignment: 4096)
            var writer = WireWriter(UnsafeMutableRawBufferPointer(start: memory.pointer(request), count: InHeader.wireSize))
            writer.write(InHeader(len: UInt32(InHeader.wireSize), opcode: FUSEOpcode.getattr.rawValue, unique: 77, nodeid: 1))
            // Gone from the file: the backend's mapping of these pages now faults.
            #expect(ftruncate(memory.fd, off_t(16 << 20)) == 0)
            let queue = hostile.queues[1]
            queue.lock.withLock { _ in
                queue.ring.writeDescriptor(100, address: request, length: UInt32(InHeader.wireSize), flags: 1, next: 101)
                queue.ring.writeDescriptor(101, address: reply, length: 4096, flags: 2, next: 0)
                queue.ring.publishRaw(head: 100)
                queue.notify()
            }
            var closed = false
            for _ in 0 ..< 500 where !closed {
                closed = !hostile.isConnected
                if !closed { usleep(10_000) }
            }
            #expect(closed, "the connection with the shrunk memory is still open")
        }
        #expect(kill(backend.pid, 0) == 0, "daxfs serve died")
        #expect(try bystanderClient.getattr(.root).mode & 0o170000 == 0o040000, "the other frontend's connection died")
    }
}

/// A backend that goes away in the middle of the handshake: the frontend's
/// failed connect leaves no descriptor behind (its backend-request
/// socketpair used to leak, both ends).
@Suite struct FrontendHandshakeTests {
    static func openDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
    }

    @Test func aFailedHandshakeLeaksNoDescriptors() throws {
        let scratch = Scratch()
        let path = scratch.socket("half")
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0 && listen(listener, 8) == 0)
        let attempts = 40
        // Answers the feature questions (offering the backend channel), then
        // hangs up once it is handed the backend-request socket.
        let server = try OSThread(name: "test-half-backend") {
            for _ in 0 ..< attempts {
                let connection = accept(listener, nil, nil)
                guard connection >= 0 else { return }
                let messages = MessageSocket(fd: connection)
                while let message = try? messages.receive() {
                    if message.request == VhostUser.Request.getFeatures.rawValue {
                        try? messages.reply(to: message, payload: .le(VhostUser.Feature.version1 | VhostUser.Feature.protocolFeatures))
                    } else if message.request == VhostUser.Request.getProtocolFeatures.rawValue {
                        try? messages.reply(to: message, payload: .le(VhostUser.ProtocolFeature.backendRequest | VhostUser.ProtocolFeature.backendSendFD | VhostUser.ProtocolFeature.replyAck))
                    } else if message.request == VhostUser.Request.getQueueNum.rawValue {
                        try? messages.reply(to: message, payload: .le(UInt64(2)))
                    } else if message.request == VhostUser.Request.setBackendReqFD.rawValue {
                        for fd in message.fds { close(fd) }
                        break
                    } else if message.flags & VhostUser.needReplyFlag != 0 {
                        try? messages.reply(to: message, payload: .le(UInt64(0)))
                    }
                }
                close(connection)
            }
        }
        defer { server.join() }
        // One attempt first, so lazily made descriptors (logging, ...) are counted in.
        #expect(throws: (any Error).self) { _ = try VhostUserFrontend(socketPath: path) }
        let before = Self.openDescriptors()
        for _ in 1 ..< attempts {
            #expect(throws: (any Error).self) { _ = try VhostUserFrontend(socketPath: path) }
        }
        let grown = Self.openDescriptors() - before
        #expect(grown < 20, "\(grown) descriptors more after \(attempts - 1) failed handshakes")
    }
}

/// `daxfs serve` under the worst each bound allows, as a process: its peak
/// resident memory and thread count (FIGURE lines), which must stay small.
@Suite(.serialized) struct BoundsFiguresTests {
    /// VmHWM and VmRSS (KiB) and Threads of process `pid`.
    static func status(_ pid: Int32) -> (peak: Int, resident: Int, threads: Int) {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Int {
            let line = text.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
            return Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") ?? 0
        }
        return (field("VmHWM"), field("VmRSS"), field("Threads"))
    }

    /// How much a bounded request may grow the backend, in KiB. Under
    /// AddressSanitizer (the suite's ASan step builds `daxfs` with it too)
    /// freed memory waits in a quarantine of up to 256 MiB before reuse, so
    /// there the bound only catches the unbounded growth; the figures come
    /// from the plain build.
    static var growthBoundKiB: Int { Sanitizers.address ? 320 << 10 : 64 << 10 }

    @Test func lockWaitsAndIndirectTablesAtTheirBounds() throws {
        let scratch = Scratch()
        guard let backend = try BackendProcess.start(.daxfs, share: scratch.share, socket: scratch.socket("a"),
                                                     arguments: ["--log-level", "error"]) else { return }
        defer { backend.kill() }
        writeHost(scratch.file("locked"), [UInt8](repeating: 1, count: 4096))
        let host = open(scratch.file("locked"), O_RDWR | O_CLOEXEC)
        defer { close(host) }
        var exclusive = flock(l_type: Int16(F_WRLCK), l_whence: Int16(SEEK_SET), l_start: 0, l_len: 0, l_pid: 0)
        #expect(fcntl(host, DAXFS_F_OFD_SETLK, &exclusive) == 0)

        var options = VhostUserFrontend.Options()
        options.queueSize = 16384
        options.guestMemorySize = 64 << 20
        let frontend = try VhostUserFrontend(socketPath: backend.socketPath, options: options)
        let client = FUSEClient(channel: try VirtioChannel(frontend: frontend, slots: 2))
        _ = try client.initialize(flags: [.maxPages, .initExt])
        let node = try client.lookup(parent: .root, name: "locked").nodeid
        let handle = try client.open(NodeID(node), flags: O_RDWR).fh
        let idle = Self.status(backend.pid)
        print("FIGURE serve_idle peak_kib=\(idle.peak) threads=\(idle.threads)")

        // More SETLKWs than the bound: 4,096 wait, the rest get ENOLCK at once.
        let waits = 5000
        let queue = frontend.queues[1], memory = frontend.memory
        let base = try memory.allocate(UInt64(waits) * 256, alignment: 64)
        queue.lock.withLock { _ in
            for i in 0 ..< waits {
                VhostUserBackendTests.publishLockWait(i, type: F_RDLCK, at: base, on: queue, memory: memory, node: node, handle: handle)
            }
            queue.notify()
        }
        var refused = 0
        for _ in 0 ..< 500 where refused < waits - LockWaiter.limitForTests {
            refused += queue.lock.withLock { _ in queue.ring.reap() }.count
            usleep(10_000)
        }
        usleep(500_000)
        let waiting = Self.status(backend.pid)
        print("FIGURE serve_lock_waits waiting=\(LockWaiter.limitForTests) refused=\(refused) peak_kib=\(waiting.peak) threads=\(waiting.threads)")
        #expect(refused == waits - LockWaiter.limitForTests, "\(refused) refused")
        #expect(waiting.threads < idle.threads + 4)
        #expect(waiting.peak - idle.peak < Self.growthBoundKiB)
        var unlock = flock(l_type: Int16(F_UNLCK), l_whence: Int16(SEEK_SET), l_start: 0, l_len: 0, l_pid: 0)
        #expect(fcntl(host, DAXFS_F_OFD_SETLK, &unlock) == 0)
        var granted = 0
        for _ in 0 ..< 1000 where granted < LockWaiter.limitForTests {
            granted += queue.lock.withLock { _ in queue.ring.reap() }.count
            if granted < LockWaiter.limitForTests { usleep(10_000) }
        }
        #expect(granted == LockWaiter.limitForTests)

        // The longest indirect table taken: 65,535 entries, each a readable 16 bytes.
        let entries = Int(SplitQueue.maxIndirectEntries)
        let table = try memory.allocate(UInt64(entries) * 16, alignment: 4096)
        let buffer = try memory.allocate(64, alignment: 64)
        let pointer = memory.pointer(table)
        for i in 0 ..< entries {
            pointer.storeBytes(of: buffer.littleEndian, toByteOffset: 16 * i, as: UInt64.self)
            pointer.storeBytes(of: UInt32(16).littleEndian, toByteOffset: 16 * i + 8, as: UInt32.self)
            pointer.storeBytes(of: UInt16(i + 1 < entries ? 1 : 0).littleEndian, toByteOffset: 16 * i + 12, as: UInt16.self)
            pointer.storeBytes(of: UInt16(truncatingIfNeeded: i + 1).littleEndian, toByteOffset: 16 * i + 14, as: UInt16.self)
        }
        let completed = VhostUserBackendTests.publishRaw(head: 8, on: queue, waitingMilliseconds: 10_000) {
            queue.ring.writeDescriptor(8, address: table, length: UInt32(entries * 16), flags: 4, next: 0)
        }
        let walked = Self.status(backend.pid)
        print("FIGURE serve_indirect_65535 peak_kib=\(walked.peak) threads=\(walked.threads)")
        #expect(completed.count == 1)
        #expect(walked.peak - idle.peak < Self.growthBoundKiB)
        #expect(try client.getattr(.root).mode & 0o170000 == 0o040000)
    }
}
