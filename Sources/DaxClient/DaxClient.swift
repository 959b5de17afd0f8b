import DAX
import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import Logging
import Synchronization

/// Memory the client reads and writes mapped file ranges through: the DAX
/// window as this process sees it.
public protocol ClientWindow: AnyObject, Sendable {
    var base: UnsafeMutableRawPointer { get }
    var windowSize: UInt64 { get }
    /// Whether [offset, offset+length) holds a file mapping now (a writable
    /// one if asked); checked after each mapping the server reports.
    func isMapped(offset: UInt64, length: UInt64, writable: Bool) -> Bool
    /// Runs `body`, a request that asks the server to map or unmap `ranges`,
    /// with those ranges open to the server's changes (see `LocalWindow.guarded`).
    func allowingChanges<Result, Failure: Error>(_ ranges: [(offset: UInt64, length: UInt64)],
                                                 _ body: () throws(Failure) -> Result) throws(Failure) -> Result
}

extension Optional where Wrapped == any ClientWindow {
    /// `allowingChanges` of the window, or just `body` without one.
    func allowingChanges<Result, Failure: Error>(_ ranges: [(offset: UInt64, length: UInt64)],
                                                 _ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        guard let window = self else { return try body() }
        return try window.allowingChanges(ranges, body)
    }
}

extension LocalWindow: ClientWindow {}

/// Why a client could not connect, in plain words.
public struct DaxClientError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The server's map_alignment is coarser than the client's ranges.
        case mapAlignment(serverLog2: UInt16, rangeSize: UInt64)
        case badOptions
        /// INIT or setting up the transport failed.
        case connection(Errno)
    }
    public let kind: Kind
    public let description: String
    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}

/// Counters of the DAX data path (cumulative since the client started).
public struct DaxStatistics: Sendable, Equatable {
    /// Ranges in the window, and how many are free now.
    public var ranges = 0
    public var freeRanges = 0
    /// SETUPMAPPINGs that mapped a chunk into a range (not counting upgrades).
    public var mappingsSetUp: UInt64 = 0
    /// Read-only ranges remapped writable in place.
    public var upgrades: UInt64 = 0
    /// Accesses served by a range that was already mapped.
    public var windowHits: UInt64 = 0
    /// Ranges freed by the background reclaimer.
    public var reclaimedInBackground: UInt64 = 0
    /// Ranges taken from another chunk because the free list was empty.
    public var reclaimedInline: UInt64 = 0
    /// Ranges removed on close, forget or truncate.
    public var removedByOwner: UInt64 = 0
    public var removeMappingMessages: UInt64 = 0
    /// Small accesses served by FUSE I/O instead of evicting, under window pressure.
    public var pressureFallbacks: UInt64 = 0
    /// Accesses served by FUSE I/O because their range was in transition or every range was in use.
    public var busyFallbacks: UInt64 = 0
    public var setupFailures: UInt64 = 0
    /// FUSE_READ and FUSE_WRITE requests the data path sent (fallbacks, extending writes, no-DAX mode).
    public var fuseReads: UInt64 = 0
    public var fuseWrites: UInt64 = 0
    /// Window copies cut short by a fault (the file shrank under the mapping).
    public var faults: UInt64 = 0

    /// All ranges reclaimed from one chunk for another.
    public var reclaimed: UInt64 { reclaimedInBackground + reclaimedInline }
    /// FUSE_READ requests sent instead of using the window.
    public var fuseReadFallbacks: UInt64 { fuseReads }
}

/// A FUSE connection with a DAX window: the client side of virtio-fs DAX
/// (Linux fs/fuse/dax.c) as a library. Reads and writes go through the window
/// (2 MiB mappings of the host page cache) where it helps and through
/// FUSE_READ/FUSE_WRITE where it does not or cannot.
public final class DaxClient: Sendable {
    public struct Options: Sendable {
        /// Bytes of window the client uses (the window may be larger). Default 1 GiB.
        public var windowSize: UInt64 = 1 << 30
        /// Bytes per mapping: a power of two ≥ the page size. Default 2 MiB (Linux's FUSE_DAX_SZ).
        public var rangeSize: UInt64 = 2 << 20
        /// Default `.auto`.
        ///
        /// Why `.auto` serves small misses under pressure with FUSE_READ,
        /// measured with `daxfs client randread` (release build, embedded
        /// server, 2 cores, 4 KiB random reads of a 1 GiB file in the page
        /// cache, 2 MiB ranges): native pread 0.97 µs, FUSE_READ 1.45 µs, a
        /// window hit 0.66 µs. With the window at 50 % of the working set,
        /// mapping every miss (`.always`: Linux's policy, with CLOCK victims)
        /// costs 12.9 µs per read — a SETUPMAPPING over an evicted range
        /// (3.3 µs; the kernel zaps the old page tables) and a page fault on
        /// first touch, for a chunk that is evicted again before it pays off —
        /// while `.auto` gives 1.31 µs, faster than FUSE_READ alone; at 25 %,
        /// 16.0 µs against 1.43 µs. With uniform access no policy can hit
        /// more than window/working-set, so remapping only adds cost. A chunk
        /// that keeps missing (`admitAfterMisses` within a period) is hot and
        /// is mapped.
        public var mode: DAXMode = .auto
        /// Misses of one chunk within a period (2 × ranges misses) after which `.auto` maps it under pressure. Default 8.
        public var admitAfterMisses = 8
        /// Background reclaim starts below this share of free ranges. Default 20 (Linux).
        public var reclaimThresholdPercent = 20
        /// Ranges per background reclaim pass. Default 10 (Linux).
        public var reclaimBatch = 10
        /// Run the background reclaimer thread. Default true.
        public var backgroundReclaim = true
        /// Bytes of address space for FUSE direct mmap regions (`DaxFile.mmap`)
        /// in the embedded mode; a vhost-user backend states its own. Default 256 MiB.
        public var mmapWindowSize: UInt64 = 256 << 20
        public init() {}
    }

    /// The connection's raw requests (benchmarks time SETUPMAPPING and
    /// REMOVEMAPPING round trips with it). Mapping into a window this client
    /// manages would confuse it: use a client with `mode: .never`, or a
    /// `FUSEClient` of its own, for raw mappings.
    public let fuse: FUSEClient
    public let negotiated: NegotiatedInit
    public let options: Options
    /// The window memory, held so it outlives every mapping the client uses.
    let window: (any ClientWindow)?
    let manager: WindowManager?
    /// Where the server maps direct mmap regions (shared-memory id 1), and its allocation.
    let mmapWindow: (any ClientWindow)?
    let mmapSpace: WindowSpace?
    /// True while the server speaks FUSE direct mmap.
    let directMmapEnabled = Atomic<Bool>(false)
    let nextMappingID = Atomic<UInt64>(1)
    private let logger = Logger(label: "daxfs.client")
    let counters = IOCounters()
    private let nodes = Locked<[UInt64: NodeRecord]>([:])
    private let closed = Atomic<Bool>(false)

    /// Connects over `channel` (sends INIT). With `window` nil, or a server that
    /// has no window, or `mode == .never`, all I/O is FUSE_READ/FUSE_WRITE.
    /// `mmapWindow` receives the server's direct mmap regions; without it (or
    /// a server that does not speak the extension) `DaxFile.mmap` uses DAX or copies.
    public init(channel: any FUSEChannel, window: (any ClientWindow)?, mmapWindow: (any ClientWindow)? = nil,
                options: Options = Options()) throws(DaxClientError) {
        let page = UInt64(HostPage.size)
        let range = options.rangeSize
        guard range >= page, range.nonzeroBitCount == 1 else {
            throw DaxClientError(.badOptions, "the range size must be a power of two of at least the page size (\(formatBytes(page))); got \(range) bytes")
        }
        fuse = FUSEClient(channel: channel)
        var flags: InitFlags = [.asyncRead, .bigWrites, .atomicOTrunc, .parallelDirops, .maxPages, .mapAlignment, .initExt]
        if mmapWindow != nil { flags.insert(.daxfsDirectMmap) }
        do throws(Errno) {
            negotiated = try fuse.initialize(flags: flags)
        } catch {
            throw DaxClientError(.connection(error), "the server refused the FUSE connection (INIT: \(error))")
        }
        self.mmapWindow = mmapWindow
        mmapSpace = mmapWindow.map { WindowSpace(size: $0.windowSize) }
        directMmapEnabled.store(mmapWindow != nil && negotiated.capabilities.contains(.daxfsDirectMmap), ordering: .relaxed)
        self.options = options
        self.window = window
        let usable = min(options.windowSize, window?.windowSize ?? 0)
        if let window, options.mode != .never, let alignment = negotiated.mapAlignmentLog2 {
            // Linux refuses the whole connection when map_alignment exceeds its range shift.
            guard alignment < 64, UInt64(1) << UInt64(alignment) <= range else {
                try? fuse.destroy()
                throw DaxClientError(.mapAlignment(serverLog2: alignment, rangeSize: range),
                                     "server needs \(alignment < 64 ? formatBytes(1 << UInt64(alignment)) : "2^\(alignment) bytes") alignment for DAX mappings (map_alignment \(alignment)); this client's ranges are \(formatBytes(range))")
            }
            guard usable >= range else {
                try? fuse.destroy()
                throw DaxClientError(.badOptions, "the DAX window (\(formatBytes(usable))) is smaller than one range (\(formatBytes(range)))")
            }
            let manager = WindowManager(base: window.base, windowSize: usable, rangeSize: range, fuse: fuse,
                                        options: .init(mode: options.mode, reclaimThresholdPercent: options.reclaimThresholdPercent,
                                                       reclaimBatch: options.reclaimBatch, backgroundReclaim: options.backgroundReclaim,
                                                       admitAfterMisses: options.admitAfterMisses),
                                        window: window)
            do throws(Errno) {
                try manager.startReclaimer()
            } catch {
                try? fuse.destroy()
                throw DaxClientError(.connection(error), "cannot start the DAX reclaim thread: \(error)")
            }
            self.manager = manager
        } else {
            // No window, DAX turned off, or a server that did not grant
            // FUSE_MAP_ALIGNMENT (it has no window): FUSE_READ/FUSE_WRITE only.
            manager = nil
        }
    }

    /// Server and client in one process: a `FUSESession` over `fileSystem`
    /// with a `LocalWindow` of `options.windowSize`, joined by an
    /// `EmbeddedChannel`. With `mode == .never` the server gets no window.
    public static func embedded(fileSystem: any FileSystem, sessionOptions: SessionOptions = SessionOptions(),
                                options: Options = Options(), logger: Logger = Logger(label: "daxfs.session")) throws(DaxClientError) -> DaxClient {
        var window: LocalWindow?
        if options.mode != .never {
            do throws(Errno) {
                window = try LocalWindow(size: options.windowSize)
            } catch {
                throw DaxClientError(.connection(error), "cannot reserve a \(formatBytes(options.windowSize)) DAX window: \(error)")
            }
        }
        var mmapWindow: LocalWindow?
        if options.mmapWindowSize > 0 {
            do throws(Errno) {
                mmapWindow = try LocalWindow(size: options.mmapWindowSize)
            } catch {
                throw DaxClientError(.connection(error), "cannot reserve a \(formatBytes(options.mmapWindowSize)) mmap window: \(error)")
            }
        }
        let session = FUSESession(fileSystem: fileSystem, options: sessionOptions, logger: logger, window: window, mmapWindow: mmapWindow)
        return try DaxClient(channel: EmbeddedChannel(session: session), window: window, mmapWindow: mmapWindow, options: options)
    }

    deinit { shutdown() }

    /// Stops the reclaimer and ends the connection (FUSE_DESTROY). Files must
    /// be closed first; `deinit` does this too.
    public func shutdown() {
        if closed.exchange(true, ordering: .acquiringAndReleasing) { return }
        manager?.stop()
        try? fuse.destroy()
    }

    /// True when the server grants FUSE direct mmap regions.
    public var usesDirectMmap: Bool { directMmapEnabled.load(ordering: .relaxed) }

    func logRefusal(_ message: String) { logger.error("\(message)") }

    /// True when reads and writes may use the window.
    public var usesWindow: Bool { manager?.enabled.load(ordering: .relaxed) ?? false }

    public var statistics: DaxStatistics {
        var stats = DaxStatistics()
        if let manager {
            let (c, free) = manager.counters()
            stats.ranges = manager.rangeCount
            stats.freeRanges = free
            stats.mappingsSetUp = c.setups
            stats.upgrades = c.upgrades
            stats.windowHits = c.hits
            stats.reclaimedInBackground = c.backgroundReclaimed
            stats.reclaimedInline = c.inlineReclaimed
            stats.removedByOwner = c.removedByOwner
            stats.removeMappingMessages = c.removeMessages
            stats.pressureFallbacks = c.pressureFallbacks
            stats.busyFallbacks = c.busyFallbacks
            stats.setupFailures = c.setupFailures
        }
        stats.fuseReads = counters.reads.load(ordering: .relaxed)
        stats.fuseWrites = counters.writes.load(ordering: .relaxed)
        stats.faults = counters.faults.load(ordering: .relaxed)
        return stats
    }

    /// Range size in use, or nil without a window.
    public var rangeSize: UInt64? { manager?.rangeSize }

    // MARK: Paths

    /// Splits a path relative to the shared directory into components.
    static func components(_ path: String) throws(Errno) -> [String] {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init).filter { $0 != "." }
        if parts.contains("..") { throw .invalidArgument }
        return parts
    }

    /// Walks `components` from the root with LOOKUP; returns the node with
    /// one lookup reference the caller owns (none for the root itself).
    func walk(_ components: ArraySlice<String>) throws(Errno) -> EntryOut? {
        var parent = NodeID.root
        var last: EntryOut?
        for name in components {
            let entry: EntryOut
            do throws(Errno) {
                entry = try fuse.lookup(parent: parent, name: name)
            } catch {
                fuse.forget(parent)
                throw error
            }
            fuse.forget(parent)  // intermediate directories: done with them
            parent = NodeID(entry.nodeid)
            last = entry
        }
        return last
    }

    /// Runs `body` with the parent directory of `path` and the last name; drops the parent's reference after.
    func withParent<R>(_ path: String, _ body: (NodeID, String) throws(Errno) -> R) throws(Errno) -> R {
        let parts = try Self.components(path)
        guard let name = parts.last else { throw .invalidArgument }
        let parent = try walk(parts.dropLast()).map { NodeID($0.nodeid) } ?? .root
        defer { fuse.forget(parent) }
        return try body(parent, name)
    }

    /// Opens a file by path (relative to the shared directory). `flags` are
    /// open(2) flags: O_RDONLY, O_WRONLY or O_RDWR, with O_CREAT, O_EXCL, O_TRUNC.
    public func open(_ path: String, flags: Int32 = O_RDONLY, mode: UInt32 = 0o644) throws(Errno) -> DaxFile {
        let parts = try Self.components(path)
        guard let name = parts.last else { throw .isDirectory }
        let parent = try walk(parts.dropLast()).map { NodeID($0.nodeid) } ?? .root
        defer { fuse.forget(parent) }
        var entry: EntryOut
        do throws(Errno) {
            entry = try fuse.lookup(parent: parent, name: name)
        } catch where error == .noEntry && flags & O_CREAT != 0 {
            let (created, opened) = try fuse.create(parent: parent, name: name, mode: mode, flags: flags & ~O_CREAT & ~O_EXCL)
            return adopt(entry: created, opened: opened, flags: flags)
        }
        if flags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL {
            fuse.forget(NodeID(entry.nodeid))
            throw .exists
        }
        guard entry.attr.mode & UInt32(S_IFMT) != UInt32(S_IFDIR) else {
            fuse.forget(NodeID(entry.nodeid))
            throw .isDirectory
        }
        let opened: OpenOut
        do throws(Errno) {
            opened = try fuse.open(NodeID(entry.nodeid), flags: flags & ~(O_CREAT | O_EXCL))
        } catch {
            fuse.forget(NodeID(entry.nodeid))
            throw error
        }
        if flags & O_TRUNC != 0 && flags & O_ACCMODE != O_RDONLY { entry.attr.size = 0 }
        return adopt(entry: entry, opened: opened, flags: flags)
    }

    /// Creates (or truncates) a file and opens it read-write.
    public func create(_ path: String, mode: UInt32 = 0o644) throws(Errno) -> DaxFile {
        try open(path, flags: O_RDWR | O_CREAT | O_TRUNC, mode: mode)
    }

    private func adopt(entry: EntryOut, opened: OpenOut, flags: Int32) -> DaxFile {
        let node = entry.nodeid
        let truncated = flags & O_TRUNC != 0 && flags & O_ACCMODE != O_RDONLY
        let record = nodes.withLock { table -> NodeRecord in
            if let record = table[node] {
                record.openCount += 1
                return record
            }
            let record = NodeRecord(size: entry.attr.size, hints: manager?.makeHints() ?? ChunkHints(capacity: 1))
            table[node] = record
            return record
        }
        if truncated {
            record.size.store(0, ordering: .relaxed)
            manager?.drop(node: node)
        } else {
            record.storeSize(entry.attr.size)
        }
        let access = flags & O_ACCMODE
        return DaxFile(client: self, node: NodeID(node), handle: FileHandle(opened.fh), record: record,
                       readable: access != O_WRONLY, writable: access != O_RDONLY, openFlags: flags & ~(O_CREAT | O_EXCL | O_TRUNC))
    }

    /// The last close of a node removes its mappings (one batched
    /// REMOVEMAPPING); every close releases its handle and lookup reference.
    func close(_ file: DaxFile) throws(Errno) {
        let node = file.node.rawValue
        let last = nodes.withLock { table -> Bool in
            guard let record = table[node] else { return true }
            record.openCount -= 1
            if record.openCount > 0 { return false }
            table[node] = nil
            return true
        }
        if last { manager?.drop(node: node) }
        defer { fuse.forget(file.node) }
        try fuse.release(file.node, handle: file.handle, flags: file.openFlags)
    }

    /// Attributes of a path.
    public func stat(_ path: String) throws(Errno) -> Attr {
        let parts = try Self.components(path)
        guard let entry = try walk(parts[...]) else { return try fuse.getattr(.root) }
        fuse.forget(NodeID(entry.nodeid))
        return entry.attr
    }

    public func unlink(_ path: String) throws(Errno) {
        try withParent(path) { parent, name throws(Errno) in try fuse.unlink(parent: parent, name: name) }
    }

    public func rmdir(_ path: String) throws(Errno) {
        try withParent(path) { parent, name throws(Errno) in try fuse.rmdir(parent: parent, name: name) }
    }

    public func mkdir(_ path: String, mode: UInt32 = 0o755) throws(Errno) {
        try withParent(path) { parent, name throws(Errno) in
            let entry = try fuse.mkdir(parent: parent, name: name, mode: mode)
            fuse.forget(NodeID(entry.nodeid))
        }
    }

    /// The entries of a directory, without "." and "..".
    public func list(_ path: String = "") throws(Errno) -> [DirectoryEntry] {
        let parts = try Self.components(path)
        let entry = try walk(parts[...])
        let node = entry.map { NodeID($0.nodeid) } ?? .root
        defer { fuse.forget(node) }
        let opened = try fuse.opendir(node)
        let handle = FileHandle(opened.fh)
        defer { try? fuse.releasedir(node, handle: handle) }
        var result: [DirectoryEntry] = []
        var offset: UInt64 = 0
        while true {
            let batch = try fuse.readdir(node, handle: handle, offset: offset)
            guard let last = batch.last else { break }
            result += batch.filter { $0.name != "." && $0.name != ".." }
            offset = last.nextOffset
        }
        return result
    }

    // MARK: Testing

    /// Broken window-manager invariants, in words.
    @_spi(Testing) public func windowInvariantViolations() -> [String] { manager?.invariantViolations() ?? [] }

    /// The window offset of the range mapping `chunk` of `file`, and whether it is writable.
    @_spi(Testing) public func windowMapping(of file: DaxFile, chunk: UInt64) -> (offset: UInt64, writable: Bool)? {
        manager?.mapping(node: file.node.rawValue, chunk: chunk)
    }

    @_spi(Testing) public func mappedChunks(of file: DaxFile) -> [UInt64] { manager?.mappedChunks(node: file.node.rawValue) ?? [] }

    /// Runs one background reclaim pass now.
    @_spi(Testing) public func reclaimNow() -> Int { manager?.reclaimPass() ?? 0 }
}

/// What the client knows about an open node, shared by its open files.
final class NodeRecord: @unchecked Sendable {
    /// Cached file size: reads stop here, writes beyond it are FUSE_WRITE.
    let size: Atomic<UInt64>
    /// Open files of the node; guarded by `DaxClient.nodes`.
    var openCount = 1
    /// Where the window manager last saw this node's chunks mapped.
    let hints: ChunkHints
    init(size: UInt64, hints: ChunkHints) {
        self.size = Atomic(size)
        self.hints = hints
    }

    func storeSize(_ value: UInt64) { size.store(value, ordering: .relaxed) }

    /// Raises the cached size to at least `value` (after an extending write).
    func extend(to value: UInt64) {
        var current = size.load(ordering: .relaxed)
        while current < value {
            let (exchanged, original) = size.compareExchange(expected: current, desired: value, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }
}

final class IOCounters: Sendable {
    let reads = Atomic<UInt64>(0)
    let writes = Atomic<UInt64>(0)
    let faults = Atomic<UInt64>(0)
}

/// "2 MiB", "16 KiB", "4096 bytes".
func formatBytes(_ value: UInt64) -> String {
    let units: [(UInt64, String)] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
    for (size, name) in units where value >= size && value % size == 0 { return "\(value / size) \(name)" }
    return "\(value) bytes"
}
