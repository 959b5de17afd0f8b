import CLinux
import FUSEServer
import Glibc
import HostSystem
import Logging
import Synchronization
import Virtio

/// Errors of the frontend, in words for the command line.
public struct FrontendError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The VMM half of vhost-user, in this process: memfd-backed guest memory,
/// driver-side virtqueues, kick/call eventfds, and the backend channel on
/// which SHMEM_MAP/SHMEM_UNMAP place host files into a DAX window here.
public final class VhostUserFrontend: @unchecked Sendable {
    public struct Options: Sendable {
        public var guestMemorySize: UInt64 = 64 << 20
        public var queueSize: UInt16 = 128
        /// Request queues wanted (the backend may offer fewer).
        public var requestQueues = 1
        /// Act as QEMU 11.1 does with a DAX window: every SHMEM_MAP/SHMEM_UNMAP
        /// also becomes an ADD_MEM_REG/REM_MEM_REG of that range to the
        /// backend, on the main socket, answered before the backend request
        /// is. A backend whose control thread waits for a queue thread that
        /// waits for the SHMEM answer deadlocks here (tests use this).
        public var mirrorMappingsInMemoryTable = false
        public init() {}
    }

    public let socket: MessageSocket
    public let memory: SharedGuestMemory
    public let queues: [FrontendQueue]
    /// Negotiated protocol features.
    public let protocolFeatures: UInt64
    /// The DAX window size the backend asked for in GET_SHMEM_CONFIG (0 = none).
    public let windowSize: UInt64
    private var backendThread: OSThread?
    private var backendHandler: BackendRequestHandler?
    private let backendSocketOwner: SharedDescriptor?
    private var backendSocket: Int32? { backendSocketOwner?.rawValue }
    private let socketOwner: SharedDescriptor
    let logger: Logger

    /// Connects to `path` and brings the device up. `window` receives
    /// SHMEM_MAP/SHMEM_UNMAP for the DAX window when the backend offers one;
    /// `makeWindow` is called with the size the backend asked for.
    public init(socketPath path: String, options: Options = Options(), logger: Logger = Logger(label: "daxfs.frontend"),
                makeWindow: ((UInt64) throws(Errno) -> any WindowMapper)? = nil,
                makeMmapWindow: ((UInt64) throws(Errno) -> any WindowMapper)? = nil) throws(FrontendError) {
        self.logger = logger
        let fd = try Self.connect(path)
        socketOwner = SharedDescriptor(adopting: fd)
        socket = MessageSocket(fd: fd)
        do throws(Errno) {
            memory = try SharedGuestMemory(size: options.guestMemorySize)
        } catch {
            throw FrontendError("cannot create guest memory: \(error)")
        }

        // Features: VERSION_1 is required; legacy devices are not spoken.
        let offered = try Self.u64(socket, .getFeatures)
        guard offered & VhostUser.Feature.version1 != 0 else { throw FrontendError("the backend does not offer VIRTIO_F_VERSION_1") }
        let wanted = VhostUser.Feature.version1 | VhostUser.Feature.protocolFeatures | VhostUser.Feature.eventIndex | VhostUser.Feature.indirectDescriptors
        let features = offered & wanted
        var negotiated: UInt64 = 0
        if features & VhostUser.Feature.protocolFeatures != 0 {
            let offeredProtocol = try Self.u64(socket, .getProtocolFeatures)
            let wantedProtocol = VhostUser.ProtocolFeature.multiQueue | VhostUser.ProtocolFeature.replyAck
                | VhostUser.ProtocolFeature.backendRequest | VhostUser.ProtocolFeature.backendSendFD
                | (options.mirrorMappingsInMemoryTable ? VhostUser.ProtocolFeature.configureMemSlots : 0)
                | (makeWindow != nil || makeMmapWindow != nil ? VhostUser.ProtocolFeature.shmem : 0)
            negotiated = offeredProtocol & wantedProtocol
        }
        protocolFeatures = negotiated
        try Self.send(socket, .setFeatures, .le(features), ack: false)
        if features & VhostUser.Feature.protocolFeatures != 0 {
            try Self.send(socket, .setProtocolFeatures, .le(negotiated), ack: false)
        }
        let ack = negotiated & VhostUser.ProtocolFeature.replyAck != 0
        try Self.send(socket, .setOwner, [], ack: ack)

        var queueCount = 1 + max(1, options.requestQueues)
        if negotiated & VhostUser.ProtocolFeature.multiQueue != 0 {
            queueCount = min(queueCount, Int(try Self.u64(socket, .getQueueNum)))
        } else {
            queueCount = 2
        }
        guard queueCount >= 2 else { throw FrontendError("the backend offers no request queue") }

        // The backend says how large a DAX cache (shmid 0) and a direct mmap window (shmid 1) it wants.
        var window: (any WindowMapper)?
        var mmapWindow: (any WindowMapper)?
        var windowSize: UInt64 = 0
        let daxFeatures = VhostUser.ProtocolFeature.shmem | VhostUser.ProtocolFeature.backendRequest | VhostUser.ProtocolFeature.backendSendFD
        if makeWindow != nil || makeMmapWindow != nil, negotiated & daxFeatures == daxFeatures {
            let reply = try Self.request(socket, .getShmemConfig, [])
            func size(_ shmid: Int) -> UInt64 {
                guard reply.count >= 8 + 8 * (shmid + 1) else { return 0 }
                let count = reply.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self).littleEndian }
                guard Int(count) > shmid else { return 0 }
                return reply.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8 + 8 * shmid, as: UInt64.self).littleEndian }
            }
            let cacheSize = size(Int(VhostUser.cacheWindowID)), mmapSize = size(Int(VhostUser.mmapWindowID))
            if let makeWindow, cacheSize > 0 {
                do throws(Errno) { window = try makeWindow(cacheSize) } catch {
                    throw FrontendError("cannot reserve a DAX window of \(cacheSize >> 20) MiB: \(error)")
                }
                windowSize = cacheSize
            }
            if let makeMmapWindow, mmapSize > 0 {
                do throws(Errno) { mmapWindow = try makeMmapWindow(mmapSize) } catch {
                    throw FrontendError("cannot reserve a direct mmap window of \(mmapSize >> 20) MiB: \(error)")
                }
            }
        }
        self.windowSize = windowSize

        if negotiated & VhostUser.ProtocolFeature.backendRequest != 0 {
            var pair: [Int32] = [-1, -1]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
                throw FrontendError("socketpair: \(Errno(daxfs_errno()))")
            }
            // Owned at once: a later step that fails closes both ends.
            let ours = SharedDescriptor(adopting: pair[0]), theirs = SharedDescriptor(adopting: pair[1])
            try Self.send(socket, .setBackendReqFD, [], fds: [theirs.rawValue], ack: ack)
            backendSocketOwner = ours
        } else {
            backendSocketOwner = nil
        }

        // Guest memory: one region, guest address 0 = memfd offset 0.
        let region: [UInt8] = .le(UInt32(1), UInt32(0)) + .le(UInt64(0), memory.size, memory.userAddress(0), UInt64(0))
        try Self.send(socket, .setMemTable, region, fds: [memory.fd], ack: ack)

        var queues: [FrontendQueue] = []
        for index in 0 ..< queueCount {
            let queue: FrontendQueue
            do throws(Errno) {
                queue = try FrontendQueue(index: index, size: options.queueSize, memory: memory)
            } catch {
                throw FrontendError("cannot set up queue \(index): \(error)")
            }
            do {
                try Self.send(socket, .setVringNum, .le(UInt32(index), UInt32(options.queueSize)), ack: ack)
                try Self.send(socket, .setVringAddr, .le(UInt32(index), UInt32(0))
                    + .le(memory.userAddress(queue.ring.descriptorAddress), memory.userAddress(queue.ring.usedAddress),
                          memory.userAddress(queue.ring.availableAddress), UInt64(0)), ack: ack)
                try Self.send(socket, .setVringBase, .le(UInt32(index), UInt32(0)), ack: ack)
                try Self.send(socket, .setVringCall, .le(UInt64(index)), fds: [queue.call.rawValue], ack: ack)
                try Self.send(socket, .setVringKick, .le(UInt64(index)), fds: [queue.kick.rawValue], ack: ack)
                if features & VhostUser.Feature.protocolFeatures != 0 {
                    try Self.send(socket, .setVringEnable, .le(UInt32(index), UInt32(1)), ack: ack)
                }
                queues.append(queue)
            }
        }
        self.queues = queues

        if let backendSocket {
            var windows: [UInt8: any WindowMapper] = [:]
            windows[VhostUser.cacheWindowID] = window
            windows[VhostUser.mmapWindowID] = mmapWindow
            let mirror = options.mirrorMappingsInMemoryTable && negotiated & VhostUser.ProtocolFeature.configureMemSlots != 0
            let handler = BackendRequestHandler(socket: MessageSocket(fd: backendSocket), windows: windows, logger: logger,
                                                mirror: mirror ? MemoryTableMirror(socket: socket, ack: ack) : nil)
            backendHandler = handler
            backendThread = try? OSThread(name: "daxfs-backend-req") { handler.run() }
        }
    }

    deinit {
        Glibc.shutdown(socket.fd, Int32(SHUT_RDWR))
        if let backendSocket { Glibc.shutdown(backendSocket, Int32(SHUT_RDWR)) }
        backendThread?.join()
    }

    /// Serves one pending backend request (SHMEM_MAP/UNMAP) on the calling
    /// thread, if there is one and no other thread is at it. A client waiting
    /// for its SETUPMAPPING reply calls this while it spins, so the mapping
    /// costs no thread wake-up (~45 µs across cores here).
    public func serviceBackendRequest() {
        backendHandler?.serviceIfReady()
    }

    /// Whether the backend's control socket is still open.
    /// (0x2000 is POLLRDHUP, which Glibc hides without _GNU_SOURCE.)
    public var isConnected: Bool {
        var descriptor = pollfd(fd: socket.fd, events: Int16(0x2000), revents: 0)
        return poll(&descriptor, 1, 0) == 0 || descriptor.revents & Int16(0x2000 | POLLHUP | POLLERR) == 0
    }

    // MARK: Control messages

    private static func connect(_ path: String) throws(FrontendError) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw FrontendError("socket path \(path) is too long") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw FrontendError("socket: \(Errno(daxfs_errno()))") }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            let error = Errno(daxfs_errno())
            Glibc.close(fd)
            throw FrontendError("cannot connect to the backend at \(path): \(error)")
        }
        return fd
    }

    static func send(_ socket: MessageSocket, _ request: VhostUser.Request, _ payload: [UInt8], fds: [Int32] = [], ack: Bool) throws(FrontendError) {
        let flags = VhostUser.version | (ack ? VhostUser.needReplyFlag : 0)
        do throws(VhostError) {
            try socket.send(request: request.rawValue, flags: flags, payload: payload, fds: fds)
            guard ack else { return }
            let reply = try socket.receive()
            let status = reply.payload.count >= 8 ? reply.payload.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian } : 1
            guard reply.request == request.rawValue, status == 0 else { throw VhostError.protocolViolation("backend refused \(request)") }
        } catch {
            throw FrontendError("vhost-user \(request): \(error)")
        }
    }

    static func request(_ socket: MessageSocket, _ request: VhostUser.Request, _ payload: [UInt8]) throws(FrontendError) -> [UInt8] {
        do throws(VhostError) {
            try socket.send(request: request.rawValue, flags: VhostUser.version, payload: payload)
            let reply = try socket.receive()
            guard reply.request == request.rawValue, reply.flags & VhostUser.replyFlag != 0 else {
                throw VhostError.protocolViolation("reply to \(request) is request \(reply.request)")
            }
            return reply.payload
        } catch {
            throw FrontendError("vhost-user \(request): \(error)")
        }
    }

    static func u64(_ socket: MessageSocket, _ request: VhostUser.Request) throws(FrontendError) -> UInt64 {
        let reply = try Self.request(socket, request, [])
        guard reply.count >= 8 else { throw FrontendError("vhost-user \(request): short reply") }
        return reply.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian }
    }
}

/// One driver-side queue with its kick and call eventfds.
public final class FrontendQueue: @unchecked Sendable {
    public let index: Int
    public let ring: DriverQueue
    public let kick: SharedDescriptor
    public let call: SharedDescriptor
    /// Serializes submit and reap.
    public let lock = Locked(())

    init(index: Int, size: UInt16, memory: SharedGuestMemory) throws(Errno) {
        self.index = index
        ring = try DriverQueue(size: size, memory: memory)
        kick = SharedDescriptor(adopting: try Syscall.call { daxfs_eventfd(0, DAXFS_EFD_CLOEXEC) })
        call = SharedDescriptor(adopting: try Syscall.call { daxfs_eventfd(0, DAXFS_EFD_CLOEXEC | DAXFS_EFD_NONBLOCK) })
    }

    /// Tells the device there is work.
    public func notify() {
        var one: UInt64 = 1
        _ = Glibc.write(kick.rawValue, &one, 8)
    }
}

/// Answers SHMEM_MAP/SHMEM_UNMAP from the backend: validated like the
/// server validates SETUPMAPPING, then mapped into the window.
final class BackendRequestHandler: @unchecked Sendable {
    let socket: MessageSocket
    /// Windows by shared-memory id.
    let windows: [UInt8: any WindowMapper]
    let logger: Logger

    let mirror: MemoryTableMirror?

    init(socket: MessageSocket, windows: [UInt8: any WindowMapper], logger: Logger, mirror: MemoryTableMirror? = nil) {
        self.socket = socket; self.windows = windows; self.logger = logger; self.mirror = mirror
    }

    /// One reader at a time: the dedicated thread, or a client thread that is spinning anyway.
    private let reader = Locked(())
    private let closed = Atomic<Bool>(false)

    /// When a client thread last looked for requests itself (ns, monotonic).
    private let lastServiced = Atomic<UInt64>(0)

    func run() {
        var descriptor = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
        while !closed.load(ordering: .acquiring) {
            // While client threads are answering requests themselves, stay out
            // of their way: a wake-up here would take one of the two cores
            // from the spinning client or backend. Check back every millisecond.
            if monotonicNanoseconds() &- lastServiced.load(ordering: .relaxed) < 1_000_000 {
                usleep(1000)
                continue
            }
            descriptor.revents = 0
            if poll(&descriptor, 1, 10) < 0 && daxfs_errno() != EINTR { return }
            if descriptor.revents == 0 { continue }
            if descriptor.revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0 && descriptor.revents & Int16(POLLIN) == 0 { return }
            reader.withLock { _ in serveOne() }
        }
    }

    /// Serves a request if one is waiting and the reader lock is free.
    func serviceIfReady() {
        guard !closed.load(ordering: .relaxed) else { return }
        lastServiced.store(monotonicNanoseconds(), ordering: .relaxed)
        var descriptor = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
        guard poll(&descriptor, 1, 0) > 0, descriptor.revents & Int16(POLLIN) != 0 else { return }
        _ = reader.withLockIfAvailable { _ in serveOne() }
    }

    /// Reads and answers one message if it is there (called with `reader` held).
    private func serveOne() {
        var descriptor = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
        guard poll(&descriptor, 1, 0) > 0, descriptor.revents & Int16(POLLIN) != 0 else { return }
        do {
            var message: VhostMessage
            do throws(VhostError) { message = try socket.receive() } catch {
                closed.store(true, ordering: .releasing)
                return
            }
            let status: UInt64
            do throws(Errno) {
                try handle(&message)
                status = 0
            } catch {
                logger.warning("backend request \(message.request) refused: \(error)")
                status = 1
            }
            if message.needsReply {
                do throws(VhostError) { try socket.reply(to: message, payload: .le(status)) } catch {
                    closed.store(true, ordering: .releasing)
                }
            }
        }
    }

    private func handle(_ message: inout VhostMessage) throws(Errno) {
        guard let request = VhostUser.BackendRequest(rawValue: message.request) else { throw .notImplemented }
        guard request == .shmemMap || request == .shmemUnmap else { throw .notImplemented }
        guard message.payload.count >= 40 else { throw .invalidArgument }
        let (shmid, fileOffset, windowOffset, length, flags) = message.payload.withUnsafeBytes { raw in
            (raw[0], raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian,
             raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian,
             raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self).littleEndian,
             raw.loadUnaligned(fromByteOffset: 32, as: UInt64.self).littleEndian)
        }
        guard let window = windows[shmid] else { throw .invalidArgument }
        let rules = MappingRules(alignmentLog2: 12, windowSize: window.windowSize)
        try rules.checkWindowRange(offset: windowOffset, length: length)
        if request == .shmemUnmap {
            try window.unmap(windowOffset: windowOffset, length: length)
            try mirror?.removed(shmid: shmid, windowOffset: windowOffset, length: length)
            return
        }
        guard flags & ~VhostUser.shmemMapReadWrite == 0 else { throw .invalidArgument }
        try rules.checkFileRange(offset: fileOffset, length: length)
        guard let fd = message.takeFD() else { throw .badFileDescriptor }
        defer { Syscall.close(fd) }
        try window.map(fd: fd, fileOffset: fileOffset, windowOffset: windowOffset, length: length,
                       writable: flags & VhostUser.shmemMapReadWrite != 0)
        try mirror?.added(shmid: shmid, windowOffset: windowOffset, length: length, fd: fd, fileOffset: fileOffset)
    }
}

/// `Options.mirrorMappingsInMemoryTable`: each window mapping as a region of
/// the memory table, at a made-up guest address above the guest's RAM.
final class MemoryTableMirror: @unchecked Sendable {
    let socket: MessageSocket
    let ack: Bool
    /// Where shmid N's window would sit in guest-physical space.
    static func guestAddress(shmid: UInt8, windowOffset: UInt64) -> UInt64 { (UInt64(shmid) + 1) << 40 + windowOffset }

    init(socket: MessageSocket, ack: Bool) { self.socket = socket; self.ack = ack }

    /// `VhostUserMemRegMsg`: {u64 padding, {guest_phys_addr, memory_size, userspace_addr, mmap_offset}}.
    private func region(_ shmid: UInt8, _ windowOffset: UInt64, _ length: UInt64, _ fileOffset: UInt64) -> [UInt8] {
        let guest = Self.guestAddress(shmid: shmid, windowOffset: windowOffset)
        return .le(UInt64(0), guest, length, guest, fileOffset)
    }

    func added(shmid: UInt8, windowOffset: UInt64, length: UInt64, fd: Int32, fileOffset: UInt64) throws(Errno) {
        do throws(FrontendError) {
            try VhostUserFrontend.send(socket, .addMemReg, region(shmid, windowOffset, length, fileOffset), fds: [fd], ack: ack)
        } catch { throw .io }
    }

    func removed(shmid: UInt8, windowOffset: UInt64, length: UInt64) throws(Errno) {
        do throws(FrontendError) {
            try VhostUserFrontend.send(socket, .remMemReg, region(shmid, windowOffset, length, 0), ack: ack)
        } catch { throw .io }
    }
}
