import FUSEABI
import HostSystem
import Logging
import Synchronization

/// Settings of one FUSE connection that do not depend on the filesystem.
public struct SessionOptions: Sendable {
    /// Largest request in pages (`max_pages`, ≤ 256 = 1 MiB with 4 KiB pages).
    public var maxPages: UInt16 = FUSEProtocol.maxMaxPages
    /// `max_background`: requests the kernel keeps in flight for readahead and async I/O.
    public var maxBackground: UInt16 = 64
    /// `congestion_threshold`: the kernel reports congestion above this many background requests.
    public var congestionThreshold: UInt16 = 48
    /// log2 of the alignment SETUPMAPPING offsets and lengths need, advertised
    /// with FUSE_MAP_ALIGNMENT when the session has a DAX window. nil = the
    /// host page size; 14 or 16 make a 4 KiB host behave like a 16 or 64 KiB one.
    public var mapAlignmentLog2: UInt16? = nil
    public init() {}
}

/// Bytes a transport must be able to read for one request, and the reply buffer size.
public func requestBufferSize(for options: SessionOptions) -> Int {
    Int(options.maxPages) * HostPage.size + 4096
}

public enum HostPage {
    /// The host page size (`sysconf(_SC_PAGESIZE)`).
    public static let size: Int = Syscall.pageSize
}

/// A per-thread buffer the session writes one reply into. The transport
/// sends `bytes[0 ..< count]` as one message.
/// Used by one thread at a time; it may move between threads (a pool).
public final class ReplyBuffer: @unchecked Sendable {
    public let storage: UnsafeMutableRawBufferPointer
    public init(capacity: Int) {
        storage = .allocate(byteCount: max(capacity, FUSEProtocol.minReadBuffer), alignment: HostPage.size)
        storage.initializeMemory(as: UInt8.self, repeating: 0)
    }
    deinit { storage.deallocate() }
    var payloadCapacity: Int { storage.count - OutHeader.wireSize }
    var payload: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(rebasing: storage[OutHeader.wireSize...]) }
}

/// What `FUSESession.handle` produced.
public struct ReplyOutcome: Sendable {
    /// Bytes of the reply in the ReplyBuffer; 0 when the request has no reply.
    public var length: Int
    /// The node whose lookup count the reply hands to the kernel; if the reply
    /// cannot be delivered, pass the outcome to `FUSESession.undeliverable`.
    var entryNode: NodeID?
    /// READDIRPLUS: every node whose reference the reply hands over.
    var entryNodes: [NodeID] = []
    static let none = ReplyOutcome(length: 0, entryNode: nil)
}

/// One FUSE connection's server side: INIT negotiation, request validation
/// and the single dispatch point. Bytes in, bytes out: every transport
/// (/dev/fuse, vhost-user, in-process) hands it whole request messages.
/// `handle` is safe to call from many threads at once.
public final class FUSESession: Sendable {
    public let fileSystem: any FileSystem
    public let options: SessionOptions
    let logger: Logger
    /// Whether each request is logged at trace level; checked once, so the
    /// per-request cost is a branch when tracing is off.
    private let traceRequests: Bool
    private let backing: (any BackingRegistry)?
    private let sink: (any NotificationSink)?
    /// The DAX window, when the transport has one.
    let window: (any WindowMapper)?
    let mappingRules: MappingRules?
    /// The client's mmap window for FUSE direct mmap (shared-memory id 1), when the transport has one.
    let mmapWindow: (any WindowMapper)?

    private let negotiated = Atomic<UInt64>(0)
    private let initialized = Atomic<Bool>(false)
    private let destroyed = Atomic<Bool>(false)
    let state = Locked(State())

    struct State {
        var connection: FUSEConnection?
        /// Requests that can block, by unique id, so INTERRUPT can reach them.
        var inFlight: [UInt64: InterruptFlag] = [:]
        /// INTERRUPTs that arrived before their request registered (bounded).
        var earlyInterrupts: [UInt64] = []
        /// Live direct mmaps by the client's mapping id, and ids being served.
        var mmaps: [UInt64: DirectMapping] = [:]
        var reservedMmapIDs: Set<UInt64> = []
    }

    public init(fileSystem: any FileSystem, options: SessionOptions = SessionOptions(), logger: Logger = Logger(label: "daxfs.session"),
                backing: (any BackingRegistry)? = nil, notifications: (any NotificationSink)? = nil,
                window: (any WindowMapper)? = nil, mmapWindow: (any WindowMapper)? = nil) {
        self.fileSystem = fileSystem
        self.options = options
        self.logger = logger
        traceRequests = logger.logLevel <= .trace
        self.backing = backing
        self.sink = notifications
        self.window = window
        self.mmapWindow = mmapWindow
        mappingRules = window.map {
            MappingRules(alignmentLog2: options.mapAlignmentLog2 ?? UInt16(HostPage.size.trailingZeroBitCount), windowSize: $0.windowSize)
        }
    }

    /// The capabilities agreed at INIT (empty before).
    public var capabilities: InitFlags { InitFlags(rawValue: negotiated.load(ordering: .relaxed)) }
    public var isInitialized: Bool { initialized.load(ordering: .acquiring) }
    public var isDestroyed: Bool { destroyed.load(ordering: .acquiring) }
    /// The connection handed to the filesystem, after INIT.
    public var connection: FUSEConnection? { state.withLock { $0.connection } }

    /// The connection is gone (transport closed): release everything once.
    public func end() {
        if destroyed.exchange(true, ordering: .acquiringAndReleasing) { return }
        dropAllDirectMappings()
        if initialized.load(ordering: .acquiring) { fileSystem.destroy() }
    }

    /// FUSE_DESTROY: the client unmounted. Everything it held is released and
    /// the session waits for a new INIT: a virtio-fs guest that mounts the
    /// same tag again sends one over the same device (Linux does, after a
    /// umount), and the transport may keep serving.
    func unmounted() {
        dropAllDirectMappings()
        guard initialized.exchange(false, ordering: .acquiringAndReleasing) else { return }
        fileSystem.destroy()
        state.withLock { $0.connection = nil }
        logger.info("the client unmounted (DESTROY); waiting for a new INIT")
    }

    /// A reply that carried an entry could not be delivered (the request was
    /// interrupted): the kernel never got the reference, so drop it.
    public func undeliverable(_ outcome: ReplyOutcome) {
        if let node = outcome.entryNode, node.rawValue != 0 { fileSystem.forget(node, count: 1) }
        for node in outcome.entryNodes { fileSystem.forget(node, count: 1) }
    }

    /// Handles one request message and writes its reply into `reply`.
    public func handle(_ message: UnsafeRawBufferPointer, reply: ReplyBuffer) -> ReplyOutcome {
        var reader = WireReader(message)
        guard message.count >= InHeader.wireSize, let header = try? reader.read(InHeader.self) else {
            logger.warning("dropped a \(message.count)-byte message: shorter than fuse_in_header")
            return .none
        }
        let opcode = FUSEOpcode(rawValue: header.opcode)
        if traceRequests {
            logger.trace("\(opcode) unique \(header.unique) node \(header.nodeid) uid \(header.uid) pid \(header.pid) len \(header.len)")
        }
        guard Int(header.len) == message.count else {
            return malformed(header, opcode, "header says \(header.len) bytes, message has \(message.count)", reply)
        }
        let extBytes = Int(header.totalExtlen) * 8
        guard extBytes <= reader.remaining else {
            return malformed(header, opcode, "extensions of \(extBytes) bytes exceed the message", reply)
        }
        // Extensions (security context, supplementary groups) trail the arguments.
        let argsEnd = message.count - extBytes
        let args = UnsafeRawBufferPointer(rebasing: message[InHeader.wireSize ..< argsEnd])

        if opcode == .`init` {
            return handleInit(header, args, reply)
        }
        guard initialized.load(ordering: .acquiring) else {
            if opcode == .forget || opcode == .batchForget || opcode == .interrupt { return .none }
            logger.warning("\(opcode) (unique \(header.unique)) before INIT: EIO")
            return error(header, .io, reply)
        }
        var context = RequestContext(unique: header.unique, uid: header.uid, gid: header.gid, pid: header.pid)
        if extBytes > 0 {
            context.supplementaryGroups = Self.supplementaryGroups(UnsafeRawBufferPointer(rebasing: message[argsEnd...]))
        }
        do throws(RequestFailure) {
            return try dispatch(header, opcode, args, context, reply)
        } catch {
            switch error {
            case .errno(let errno):
                if opcode.hasNoReply { return .none }
                return self.error(header, errno, reply)
            case .malformed(let reason):
                return malformed(header, opcode, reason, reply)
            }
        }
    }

    // MARK: Replies

    func malformed(_ header: InHeader, _ opcode: FUSEOpcode, _ reason: String, _ reply: ReplyBuffer) -> ReplyOutcome {
        logger.warning("malformed \(opcode) (unique \(header.unique)): \(reason)")
        if opcode.hasNoReply { return .none }
        return error(header, .invalidArgument, reply)
    }

    func error(_ header: InHeader, _ errno: Errno, _ reply: ReplyBuffer) -> ReplyOutcome {
        var w = WireWriter(reply.storage)
        w.write(OutHeader(len: UInt32(OutHeader.wireSize), error: -errno.rawValue, unique: header.unique))
        return ReplyOutcome(length: OutHeader.wireSize, entryNode: nil)
    }

    /// Finishes a successful reply whose payload (`payloadLength` bytes) is already in place.
    func success(_ header: InHeader, payloadLength: Int, _ reply: ReplyBuffer, entry: NodeID? = nil) -> ReplyOutcome {
        let length = OutHeader.wireSize + payloadLength
        var w = WireWriter(reply.storage)
        w.write(OutHeader(len: UInt32(length), error: 0, unique: header.unique))
        return ReplyOutcome(length: length, entryNode: entry)
    }

    func success<T: WireStruct>(_ header: InHeader, _ value: T, _ reply: ReplyBuffer, entry: NodeID? = nil) -> ReplyOutcome {
        var w = WireWriter(reply.storage, position: OutHeader.wireSize)
        w.write(value)
        return success(header, payloadLength: T.wireSize, reply, entry: entry)
    }

    func success(_ header: InHeader, _ reply: ReplyBuffer) -> ReplyOutcome { success(header, payloadLength: 0, reply) }

    // MARK: Interrupts

    /// Runs `body` with an interrupt flag that FUSE_INTERRUPT for this request sets.
    func interruptible<T>(_ context: RequestContext, _ body: (RequestContext) throws(Errno) -> T) throws(Errno) -> T {
        let flag = InterruptFlag()
        let early = state.withLock { state -> Bool in
            if let index = state.earlyInterrupts.firstIndex(of: context.unique) {
                state.earlyInterrupts.remove(at: index)
                return true
            }
            state.inFlight[context.unique] = flag
            return false
        }
        if early { throw .interrupted }
        defer { _ = state.withLock { $0.inFlight.removeValue(forKey: context.unique) } }
        var context = context
        context.interrupt = flag
        return try body(context)
    }

    /// Whether a FUSE_INTERRUPT for `unique` arrived while that request was
    /// not running (a transport that keeps a request waiting between tries
    /// of it); the interrupt is consumed.
    public func takeInterrupt(unique: UInt64) -> Bool {
        state.withLock { state in
            guard let index = state.earlyInterrupts.firstIndex(of: unique) else { return false }
            state.earlyInterrupts.remove(at: index)
            return true
        }
    }

    func interrupt(unique: UInt64) {
        state.withLock { state in
            if let flag = state.inFlight[unique] {
                flag.set()
            } else {
                // The target may not have registered yet, or it cannot block
                // (then the entry ages out). Keep only a bounded number.
                state.earlyInterrupts.append(unique)
                if state.earlyInterrupts.count > 256 { state.earlyInterrupts.removeFirst(64) }
            }
        }
    }

    /// The FUSE_EXT_GROUPS extension among the request's extensions, if any:
    /// records of {u32 size, u32 type, payload} with size a multiple of 8.
    static func supplementaryGroups(_ extensions: UnsafeRawBufferPointer) -> [UInt32] {
        var reader = WireReader(extensions)
        while reader.remaining >= ExtHeader.wireSize {
            guard let ext = try? reader.read(ExtHeader.self), ext.size >= UInt32(ExtHeader.wireSize), ext.size % 8 == 0,
                  let payload = try? reader.bytes(Int(ext.size) - ExtHeader.wireSize) else { return [] }
            guard ext.type == ExtHeader.typeSuppGroups else { continue }
            var groups = WireReader(payload)
            guard let count = try? groups.u32(), UInt64(count) * 4 <= UInt64(groups.remaining) else { return [] }
            return (0 ..< count).compactMap { _ in try? groups.u32() }
        }
        return []
    }

    // MARK: INIT

    func handleInit(_ header: InHeader, _ args: UnsafeRawBufferPointer, _ reply: ReplyBuffer) -> ReplyOutcome {
        var r = WireReader(args)
        guard let input = try? InitIn.decodeAny(&r) else {
            return malformed(header, .`init`, "fuse_init_in of \(args.count) bytes", reply)
        }
        if initialized.load(ordering: .acquiring) {
            logger.warning("second INIT (unique \(header.unique)): EIO")
            return error(header, .io, reply)
        }
        if input.major < FUSEProtocol.major {
            logger.error("kernel speaks FUSE \(input.major).\(input.minor); daxfs needs 7.\(FUSEProtocol.oldestMinor) or newer")
            return error(header, .protocolError, reply)
        }
        if input.major > FUSEProtocol.major {
            // Answer with our version only; the kernel retries INIT with major 7.
            var out = InitOut()
            out.major = FUSEProtocol.major
            out.minor = FUSEProtocol.minor
            return success(header, out, reply)
        }
        if input.minor < FUSEProtocol.oldestMinor {
            logger.error("kernel speaks FUSE 7.\(input.minor); daxfs needs 7.\(FUSEProtocol.oldestMinor) or newer")
            return error(header, .protocolError, reply)
        }
        let (out, agreed) = negotiate(input)
        let connection = FUSEConnection(capabilities: agreed, kernelMinor: input.minor, maxWrite: out.maxWrite,
                                        backing: agreed.contains(.passthrough) ? backing : nil, sink: sink)
        do throws(Errno) {
            try fileSystem.initialize(connection: connection)
        } catch {
            logger.error("filesystem refused the connection: \(error)")
            return self.error(header, error, reply)
        }
        state.withLock { $0.connection = connection }
        negotiated.store(agreed.rawValue, ordering: .relaxed)
        initialized.store(true, ordering: .releasing)
        logger.info("FUSE 7.\(out.minor) connected: max_write \(out.maxWrite), passthrough \(agreed.contains(.passthrough) ? "on" : "off")")
        return success(header, out, reply)
    }

    /// The INIT reply: what both sides support, nothing more.
    func negotiate(_ input: InitIn) -> (InitOut, InitFlags) {
        var kernel = InitFlags(flags: input.flags, flags2: 0)
        if kernel.contains(.initExt) { kernel = InitFlags(flags: input.flags, flags2: input.flags2) }

        var wanted = fileSystem.wantedCapabilities
        wanted.insert(.initExt)
        wanted.insert(.maxPages)
        if mappingRules != nil { wanted.insert(.mapAlignment) } else { wanted.remove(.mapAlignment) }
        if backing == nil { wanted.remove(.passthrough) }
        // Only to a client that offered it (a kernel never does), and only with a window to map into.
        if mmapWindow != nil { wanted.insert(.daxfsDirectMmap) } else { wanted.remove(.daxfsDirectMmap) }
        var agreed = wanted.intersection(kernel)
        // The kernel refuses passthrough together with writeback caching.
        if agreed.contains(.passthrough) { agreed.remove(.writebackCache) }

        var out = InitOut()
        out.major = FUSEProtocol.major
        out.minor = min(FUSEProtocol.minor, input.minor)
        out.maxReadahead = input.maxReadahead
        out.maxBackground = options.maxBackground
        out.congestionThreshold = options.congestionThreshold
        out.timeGran = 1
        let pages: Int
        if agreed.contains(.maxPages) {
            out.maxPages = min(max(options.maxPages, 1), FUSEProtocol.maxMaxPages)
            pages = Int(out.maxPages)
        } else {
            pages = min(Int(options.maxPages), 32)  // FUSE_DEFAULT_MAX_PAGES_PER_REQ
        }
        out.maxWrite = UInt32(pages * HostPage.size)
        if agreed.contains(.mapAlignment), let rules = mappingRules { out.mapAlignment = rules.alignmentLog2 }
        if agreed.contains(.passthrough) { out.maxStackDepth = 1 }
        out.flags = agreed.low
        out.flags2 = agreed.contains(.initExt) ? agreed.high : 0
        if !agreed.contains(.initExt) { agreed = InitFlags(rawValue: UInt64(agreed.low)) }
        return (out, agreed)
    }
}

/// Why a request failed: an error for the kernel, or a message we could not decode.
enum RequestFailure: Error {
    case errno(Errno)
    case malformed(String)
}

extension FUSEOpcode {
    /// Requests the kernel expects no reply to.
    var hasNoReply: Bool { self == .forget || self == .batchForget || self == .interrupt || self == .notifyReply }
}

extension Syscall {
    /// The corresponding C call is `sysconf(_SC_PAGESIZE)`.
    static let pageSize: Int = Int(sysconfPageSize())
}
