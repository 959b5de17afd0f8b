import CLinux
import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import Logging
import Virtio

/// Settings of the vhost-user-fs backend.
public struct FSBackendOptions: Sendable {
    /// Worker threads for requests; 0 handles them on each queue's thread.
    public var threadPoolSize = 0
    /// Request queues offered (GET_QUEUE_NUM reports this plus the hiprio queue).
    public var requestQueues = 16
    /// Microseconds a queue thread spins for new requests before sleeping on its kick eventfd.
    public var pollMicroseconds = 50
    /// Size of the DAX cache window offered in GET_SHMEM_CONFIG (shmid 0); 0 = no DAX.
    public var cacheSize: UInt64 = 0
    /// Size of the direct mmap window offered in GET_SHMEM_CONFIG (shmid 1); 0 = no FUSE direct mmap.
    public var mmapWindowSize: UInt64 = 0
    /// The virtio-fs tag answered in GET_CONFIG. As virtiofsd, the CONFIG
    /// protocol feature is offered only with a tag (QEMU 7.1–8.0 crash on it).
    public var tag: String?
    /// `num_request_queues` of the config space: the request queues the guest should set up.
    public var announcedRequestQueues = 1
    /// Where DAX mappings get descriptors QEMU can map (see `MappableFileSource`);
    /// nil hands the frontend the host file itself.
    public var mappableFiles: (any MappableFileSource)?
    public var session = SessionOptions()
    public init() {}
}

/// A vhost-user backend serving one frontend connection at a time: the
/// control messages set up guest memory and virtqueues; the virtio-fs device
/// turns each request chain into a FUSE request for a fresh `FUSESession`.
public final class VhostUserFSBackend: @unchecked Sendable {
    public typealias FileSystemFactory = @Sendable () throws(Errno) -> any FileSystem
    private let makeFileSystem: FileSystemFactory
    private let options: FSBackendOptions
    private let logger: Logger

    public init(options: FSBackendOptions, logger: Logger = Logger(label: "daxfs.vhost"), fileSystem: @escaping FileSystemFactory) {
        self.options = options
        self.logger = logger
        makeFileSystem = fileSystem
    }

    static let offeredFeatures = VhostUser.Feature.version1 | VhostUser.Feature.protocolFeatures
        | VhostUser.Feature.indirectDescriptors | VhostUser.Feature.eventIndex | VhostUser.Feature.notifyOnEmpty
    /// The protocol features offered: what is implemented and configured
    /// (CONFIG with a tag, SHMEM with a window), never more.
    var offeredProtocolFeatures: UInt64 {
        typealias P = VhostUser.ProtocolFeature
        var bits = P.multiQueue | P.replyAck | P.backendRequest | P.backendSendFD | P.configureMemSlots | P.resetDevice
        if options.tag != nil { bits |= P.config }
        if options.cacheSize > 0 || options.mmapWindowSize > 0 { bits |= P.shmem }
        precondition(bits & ~P.implementedByBackend == 0, "offering a protocol feature daxfs does not implement")
        return bits
    }
    /// Memory slots the frontend may use. QEMU 11.1 gives every SHMEM_MAP of
    /// the DAX window a slot of its own (ADD_MEM_REG), so this bounds the live
    /// mappings too; 509 is rust-vmm's figure (QEMU's VHOST_USER_MAX_RAM_SLOTS is 512).
    static let maxMemorySlots: UInt64 = 509
    /// virtio_fs_config: {u8 tag[36]; le32 num_request_queues}.
    static let tagCapacity = 36
    /// VHOST_USER_MAX_CONFIG_SIZE.
    static let maxConfigSize = 256

    /// The virtio-fs config space.
    var configSpace: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.tagCapacity)
        for (index, byte) in (options.tag ?? "").utf8.prefix(Self.tagCapacity).enumerated() { bytes[index] = byte }
        return bytes + .le(UInt32(clamping: max(1, options.announcedRequestQueues)))
    }

    /// Serves one connected frontend until it disconnects or breaks the
    /// protocol; every queue is stopped and the session ended on return.
    public func serve(connection fd: Int32) -> VhostError {
        let connection = Connection(socket: MessageSocket(fd: fd), backend: self)
        defer { connection.tearDown() }
        while true {
            var message: VhostMessage
            do throws(VhostError) { message = try connection.socket.receive() } catch { return error }
            do throws(VhostError) {
                try connection.handle(&message)
            } catch {
                logger.error("vhost-user: \(error); closing the connection")
                return error
            }
        }
    }

    /// Per-connection state, touched only by the control thread.
    final class Connection {
        let socket: MessageSocket
        let backend: VhostUserFSBackend
        var features: UInt64 = 0
        var protocolFeatures: UInt64 = 0
        /// The guest memory table; queues read it as it changes.
        let memoryTable = MemoryTable()
        /// Set when guest memory faulted: the frontend shrank a region's file
        /// after handing it over. The connection then ends (its queues see it).
        let poison = PoisonFlag()
        var memory: GuestMemory { memoryTable.current }
        var vrings: [Vring]
        var backendChannelFD: Int32?
        var device: FSDevice?
        /// The device's backend request line, closed while the device is stopped.
        var backendLine: BackendRequestLine?
        /// The DAX window's mapper, whose size watch ends with the device.
        var cacheWindow: BackendChannel?

        init(socket: MessageSocket, backend: VhostUserFSBackend) {
            self.socket = socket
            self.backend = backend
            vrings = (0 ..< backend.queueCount).map { _ in Vring() }
        }

        var logger: Logger { backend.logger }
        var negotiatedReplyAck: Bool { protocolFeatures & VhostUser.ProtocolFeature.replyAck != 0 }

        func handle(_ message: inout VhostMessage) throws(VhostError) {
            guard let request = VhostUser.Request(rawValue: message.request) else {
                logger.warning("vhost-user: unknown request \(message.request) refused")
                if message.needsReply { try socket.reply(to: message, payload: .le(UInt64(1))) }
                return
            }
            var status: UInt64 = 0
            do throws(VhostError) {
                if let reply = try dispatch(request, &message) {
                    try socket.reply(to: message, payload: reply)
                    return
                }
            } catch {
                guard case .system(let errno) = error else { throw error }
                logger.warning("vhost-user: \(request) failed: \(errno)")
                status = 1
            }
            if message.needsReply && negotiatedReplyAck {
                try socket.reply(to: message, payload: .le(status))
            }
        }

        /// Returns a reply payload for requests that have one.
        private func dispatch(_ request: VhostUser.Request, _ message: inout VhostMessage) throws(VhostError) -> [UInt8]? {
            switch request {
            case .getFeatures:
                return .le(VhostUserFSBackend.offeredFeatures)
            case .setFeatures:
                let value = try u64(message)
                guard value & VhostUser.Feature.version1 != 0 else {
                    throw .protocolViolation("the frontend did not accept VIRTIO_F_VERSION_1: legacy virtio devices are not supported")
                }
                guard value & ~VhostUserFSBackend.offeredFeatures == 0 else {
                    throw .protocolViolation("the frontend set features 0x\(String(value & ~VhostUserFSBackend.offeredFeatures, radix: 16)) that were not offered")
                }
                features = value
            case .getProtocolFeatures:
                return .le(backend.offeredProtocolFeatures)
            case .setProtocolFeatures:
                protocolFeatures = try u64(message) & backend.offeredProtocolFeatures
            case .setOwner:
                break
            case .resetOwner, .resetDevice:
                backendLine?.close()
                stopAll()
                features = 0
            case .getQueueNum:
                return .le(UInt64(backend.queueCount))
            case .getMaxMemSlots:
                return .le(VhostUserFSBackend.maxMemorySlots)
            case .setMemTable:
                try setMemoryTable(&message)
            case .addMemReg:
                let region = try mapRegion(&message, fdIndex: 0, skip: 8)
                try replaceMemory(memory.adding(region))
            case .remMemReg:
                let (guest, size) = try message.withReaderSystem { r throws(WireError) in
                    try r.skip(8)
                    let guest = try r.u64(), size = try r.u64()
                    return (guest, size)
                }
                try replaceMemory(memory.removing(guestAddress: guest, size: size))
            case .setVringNum:
                let (index, number) = try vringState(message)
                guard number > 0, number <= 32768, number & (number - 1) == 0 else {
                    throw .system(.invalidArgument)
                }
                vrings[index].size = UInt16(number)
            case .setVringAddr:
                let index = try vringIndex(UInt64(try message.withReaderSystem { r throws(WireError) in try r.u32() }))
                let (descriptors, used, available) = try message.withReaderSystem { r throws(WireError) in
                    try r.skip(8)
                    let d = try r.u64(), u = try r.u64(), a = try r.u64()
                    return (d, u, a)
                }
                vrings[index].addresses = (descriptors, used, available)
            case .setVringBase:
                let (index, base) = try vringState(message)
                guard base <= UInt32(UInt16.max) else { throw .system(.invalidArgument) }
                vrings[index].base = UInt16(base)
            case .getVringBase:
                let index = try vringIndex(UInt64(try message.withReaderSystem { r throws(WireError) in try r.u32() }))
                // The device is stopping: no backend request may reach QEMU from now on.
                backendLine?.close()
                let next = stop(index)
                vrings[index].kick = nil
                return .le(UInt32(index), UInt32(next))
            case .setVringKick:
                let (index, fd) = try vringDescriptor(&message)
                _ = stop(index)
                vrings[index].kick = fd.map { SharedDescriptor(adopting: $0) }
                // Without VHOST_USER_F_PROTOCOL_FEATURES rings start enabled; with it, SET_VRING_ENABLE decides.
                if features & VhostUser.Feature.protocolFeatures == 0 { vrings[index].enabled = true }
                try start(index)
            case .setVringCall:
                let (index, fd) = try vringDescriptor(&message)
                let call = fd.map { SharedDescriptor(adopting: $0) }
                vrings[index].call = call
                vrings[index].runner?.queue.setCall(call)
            case .setVringErr:
                let (index, fd) = try vringDescriptor(&message)
                vrings[index].error = fd.map { SharedDescriptor(adopting: $0) }
            case .setVringEnable:
                let (index, value) = try vringState(message)
                vrings[index].enabled = value != 0
                if value == 0 { backendLine?.close() }
                vrings[index].runner?.setEnabled(value != 0)
                if value != 0 && vrings[index].runner != nil { backendLine?.reopen() }
            case .setBackendReqFD:
                guard let fd = message.takeFD() else { throw .system(.badFileDescriptor) }
                if let old = backendChannelFD { Syscall.close(old) }
                backendChannelFD = fd
            case .getShmemConfig:
                // VhostUserShMemConfig: {u32 nregions, u32 padding, u64 sizes[256]}; shmid 0 is the DAX window.
                var sizes = [UInt64](repeating: 0, count: 256)
                sizes[0] = backend.options.cacheSize
                sizes[1] = backend.options.mmapWindowSize
                let regions = backend.options.mmapWindowSize > 0 ? 2 : backend.options.cacheSize > 0 ? 1 : 0
                var payload: [UInt8] = .le(UInt32(regions), UInt32(0))
                for size in sizes { payload += .le(size) }
                return payload
            case .getConfig:
                return try config(message)
            case .setConfig:
                // The virtio-fs config space is read-only for the driver.
                logger.warning("vhost-user: SET_CONFIG refused: the virtio-fs config space (tag, queues) is read-only")
                throw .system(.permissionDenied)
            case .setStatus, .getStatus, .setLogBase, .setLogFD, .sendRARP, .netSetMTU, .iotlbMessage, .setVringEndian,
                 .postcopyAdvise, .postcopyListen, .postcopyEnd, .getInflightFD, .setInflightFD, .vringKick:
                // Not offered; a frontend that sends them anyway gets a failure, not a crash.
                logger.warning("vhost-user: \(request) is not supported")
                if request == .getStatus { return .le(UInt8(0)) }
                throw .system(.notImplemented)
            }
            return nil
        }

        /// GET_CONFIG: `VhostUserConfig` {u32 offset, u32 size, u32 flags, u8 payload[size]},
        /// answered with the same header and that slice of the config space
        /// (zeros past its end). A size beyond VHOST_USER_MAX_CONFIG_SIZE or a
        /// frontend that did not negotiate CONFIG gets an empty answer, which
        /// QEMU reports as a failed read.
        private func config(_ message: borrowing VhostMessage) throws(VhostError) -> [UInt8] {
            let (offset, size, flags) = try message.withReaderSystem { r throws(WireError) in
                let o = try r.u32(), s = try r.u32(), f = try r.u32()
                return (o, s, f)
            }
            let space = backend.configSpace
            guard protocolFeatures & VhostUser.ProtocolFeature.config != 0, Int(size) <= VhostUserFSBackend.maxConfigSize,
                  Int(offset) <= VhostUserFSBackend.maxConfigSize else {
                logger.warning("vhost-user: GET_CONFIG of \(size) bytes at \(offset) refused")
                return .le(offset, UInt32(0), flags)
            }
            var payload: [UInt8] = .le(offset, size, flags)
            for index in Int(offset) ..< Int(offset) + Int(size) { payload.append(index < space.count ? space[index] : 0) }
            return payload
        }

        // MARK: Memory

        private func setMemoryTable(_ message: inout VhostMessage) throws(VhostError) {
            let count = try message.withReaderSystem { r throws(WireError) in try r.u32() }
            guard count <= UInt32(VhostUser.maxMemoryRegions), Int(count) <= message.fds.count,
                  message.payload.count >= 8 + 32 * Int(count) else {
                throw .protocolViolation("SET_MEM_TABLE with \(count) regions, \(message.fds.count) descriptors and \(message.payload.count) bytes")
            }
            var regions: [MemoryRegion] = []
            for index in 0 ..< Int(count) {
                regions.append(try mapRegion(&message, fdIndex: index, skip: 8 + 32 * index))
            }
            try replaceMemory(GuestMemory(regions: regions))
        }

        /// `VhostUserMemoryRegion` {guest_phys_addr, memory_size, userspace_addr, mmap_offset} at `skip`.
        private func mapRegion(_ message: inout VhostMessage, fdIndex: Int, skip: Int) throws(VhostError) -> MemoryRegion {
            let (guest, size, user, offset) = try message.withReaderSystem { r throws(WireError) in
                try r.skip(skip)
                let g = try r.u64(), s = try r.u64(), u = try r.u64(), o = try r.u64()
                return (g, s, u, o)
            }
            guard let fd = message.takeFD(fdIndex) else { throw .protocolViolation("memory region without a descriptor") }
            defer { Syscall.close(fd) }
            do throws(Errno) {
                return try MemoryRegion(guestAddress: guest, size: size, userAddress: user, mmapOffset: offset, fd: fd, poison: poison)
            } catch {
                throw .system(error)
            }
        }

        /// Installs a new table without stopping the queues (see `MemoryTable`):
        /// requests in flight finish on the table they started with.
        private func replaceMemory(_ new: GuestMemory) throws(VhostError) {
            memoryTable.replace(with: new)
        }

        // MARK: Queues

        struct Vring {
            var size: UInt16 = 0
            var addresses: (descriptors: UInt64, used: UInt64, available: UInt64)?
            var base: UInt16 = 0
            var kick: SharedDescriptor?
            var call: SharedDescriptor?
            var error: SharedDescriptor?
            var enabled = false
            var runner: QueueRunner?
        }

        /// Starts queue `index` when it has everything it needs.
        private func start(_ index: Int) throws(VhostError) {
            let vring = vrings[index]
            guard vring.runner == nil, let kick = vring.kick, let addresses = vring.addresses, vring.size > 0 else { return }
            let layout = SplitQueue.layout(size: vring.size)
            let memory = self.memory
            guard let descriptors = memory.translateUser(addresses.descriptors, length: layout.descriptors),
                  let available = memory.translateUser(addresses.available, length: layout.available),
                  let used = memory.translateUser(addresses.used, length: layout.used) else {
                throw .protocolViolation("queue \(index) addresses are not inside guest memory")
            }
            let device = try ensureDevice()
            let ring = SplitQueue(size: vring.size, descriptors: descriptors, available: available, used: used,
                                  memory: memoryTable, ringMemory: memory,
                                  eventIndex: features & VhostUser.Feature.eventIndex != 0, nextAvailable: vring.base)
            let queue = RunningQueue(index: index, ring: ring, call: vring.call)
            if vring.enabled { backendLine?.reopen() }
            do throws(Errno) {
                let socketFD = socket.fd, poison = self.poison
                vrings[index].runner = try QueueRunner(queue: queue, kick: kick, enabled: vring.enabled, handler: device, logger: logger,
                                                       pollMicroseconds: backend.options.pollMicroseconds, poison: poison) {
                    // The control thread sees the end of its socket and tears down.
                    Glibc.shutdown(socketFD, Int32(SHUT_RDWR))
                }
            } catch {
                throw .system(error)
            }
        }

        /// Stops queue `index`; returns the next available index to resume from.
        private func stop(_ index: Int) -> UInt16 {
            guard let runner = vrings[index].runner else { return vrings[index].base }
            // Lock waits of the queue end (EINTR) before the queue drains:
            // stopping waits for every request it took.
            let device = self.device
            let next = runner.stop { device?.stopping(queue: index) }
            vrings[index].runner = nil
            vrings[index].base = next
            return next
        }

        private func stopAll() {
            // A queue thread waiting for a SHMEM reply from a frontend that
            // is gone (or stopped) is released first, or stopping it waits forever.
            backendLine?.close()
            for index in vrings.indices { _ = stop(index) }
            device?.shutdown()
            device?.session.end()
            device = nil
            backendLine = nil
            if let cacheWindow {
                cacheWindow.shutDown()
                logger.info("DAX window: \(cacheWindow.counters.withLock { $0 })")
            }
            cacheWindow = nil
        }

        func tearDown() {
            stopAll()
            if let fd = backendChannelFD { Syscall.close(fd) }
            backendChannelFD = nil
        }

        /// The device and its FUSE session, created when the first queue starts
        /// (by then the frontend has said whether a DAX window exists).
        private func ensureDevice() throws(VhostError) -> FSDevice {
            if let device { return device }
            let fileSystem: any FileSystem
            do throws(Errno) { fileSystem = try backend.makeFileSystem() } catch { throw .system(error) }
            var window: (any WindowMapper)?
            var mmapWindow: (any WindowMapper)?
            let daxFeatures = VhostUser.ProtocolFeature.shmem | VhostUser.ProtocolFeature.backendRequest | VhostUser.ProtocolFeature.backendSendFD
            if protocolFeatures & daxFeatures == daxFeatures, let fd = backendChannelFD {
                let line = BackendRequestLine(fd: dup(fd))
                backendLine = line
                let table = memoryTable
                if backend.options.cacheSize > 0 {
                    let channel = BackendChannel(line: line, shmid: VhostUser.cacheWindowID, windowSize: backend.options.cacheSize,
                                                 files: backend.options.mappableFiles, slotsInUse: { table.current.regions.count },
                                                 frontend: FrontendMaps.peer(of: socket.fd))
                    cacheWindow = channel
                    window = channel
                    logger.info("DAX window of \(backend.options.cacheSize >> 20) MiB through SHMEM_MAP/SHMEM_UNMAP")
                }
                if backend.options.mmapWindowSize > 0 {
                    mmapWindow = BackendChannel(line: line, shmid: VhostUser.mmapWindowID, windowSize: backend.options.mmapWindowSize)
                    logger.info("direct mmap window of \(backend.options.mmapWindowSize >> 20) MiB (shmid 1)")
                }
            }
            let session = FUSESession(fileSystem: fileSystem, options: backend.options.session, logger: logger, window: window,
                                      mmapWindow: mmapWindow)
            do throws(Errno) {
                let device = try FSDevice(session: session, threadPoolSize: backend.options.threadPoolSize, queueCount: vrings.count, logger: logger)
                self.device = device
                return device
            } catch {
                throw .system(error)
            }
        }

        // MARK: Payload helpers

        private func u64(_ message: borrowing VhostMessage) throws(VhostError) -> UInt64 {
            try message.withReaderSystem { r throws(WireError) in try r.u64() }
        }

        private func vringIndex(_ raw: UInt64) throws(VhostError) -> Int {
            guard raw < UInt64(vrings.count) else { throw .system(.invalidArgument) }
            return Int(raw)
        }

        /// `vhost_vring_state` {u32 index, u32 num}.
        private func vringState(_ message: borrowing VhostMessage) throws(VhostError) -> (Int, UInt32) {
            let (index, number) = try message.withReaderSystem { r throws(WireError) in
                let i = try r.u32(), n = try r.u32()
                return (i, n)
            }
            return (try vringIndex(UInt64(index)), number)
        }

        /// SET_VRING_KICK/CALL/ERR: u64 index | (no-fd flag), descriptor attached unless flagged.
        private func vringDescriptor(_ message: inout VhostMessage) throws(VhostError) -> (Int, Int32?) {
            let value = try u64(message)
            let index = try vringIndex(value & VhostUser.vringIndexMask)
            if value & VhostUser.vringNoFD != 0 { return (index, nil) }
            guard let fd = message.takeFD() else { throw .protocolViolation("vring \(index) descriptor missing") }
            return (index, fd)
        }
    }

    var queueCount: Int { 1 + max(1, options.requestQueues) }
}

extension VhostMessage {
    /// Reads the payload; a short payload is a protocol violation.
    func withReaderSystem<R>(_ body: (inout WireReader) throws(WireError) -> R) throws(VhostError) -> R {
        do throws(WireError) {
            return try withReader(body)
        } catch {
            throw .protocolViolation("request \(request) payload of \(payload.count) bytes is too short")
        }
    }
}
