import CLinux
import FUSEServer
import Glibc
import HostSystem
import Synchronization

/// Where things live in a ring file's region (`RingFiles`). All counters are
/// little-endian u64, each on its own cache line.
public enum RingLayout {
    /// [0, statusLength): a text line the server rewrites on every tick,
    /// "daxfs ring NAME: tick N, region R (shared|private)\n", NUL-padded.
    public static let statusLength = 64
    /// Messages the server has written (server writes, release).
    public static let produced = 4096
    /// Messages the client has read (client writes).
    public static let consumed = 4096 + 64
    /// Messages the client wants in total (client writes; the server produces up to it).
    public static let requested = 4096 + 128
    /// 0: produce into the ring; 1: write the messages to the server's pipe instead (benchmark baseline).
    public static let mode = 4096 + 192
    /// Message slots start here.
    public static let slots = 8192
    public static let messageSize = 64

    /// Slots in a region of `size` bytes.
    public static func capacity(regionSize size: UInt64) -> UInt64 { (size - UInt64(slots)) / UInt64(messageSize) }

    /// Message `sequence`: the sequence number, then 56 bytes of its low byte.
    public static func fill(_ message: UnsafeMutableRawPointer, sequence: UInt64) {
        message.storeBytes(of: sequence.littleEndian, as: UInt64.self)
        (message + 8).initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: sequence), count: messageSize - 8)
    }
}

/// Device-like files for FUSE direct mmap (seed 003): files of the shared
/// directory whose mmap gets a region of server memory instead of the file's
/// pages. The server writes a live counter into every region on each tick
/// (`tick`, or a thread every `tickInterval`), and produces messages into a
/// ring after it when a client asks (see `RingLayout`).
///
/// Policy: a `.shared` file has one region for all its clients while any maps
/// it; a `.perOpen` file gives every open file handle a private region,
/// marked DONT_COPY (a forked child does not inherit it). A region is freed
/// when its last client mapping goes.
public final class RingFiles: Sendable {
    public enum Sharing: String, Sendable { case shared, perOpen = "private" }

    struct Device {
        let name: String
        let sharing: Sharing
    }

    struct Live {
        let region: SharedRegion
        let label: String
        /// Messages produced so far (the server's own count).
        var produced: UInt64 = 0
    }

    struct State {
        var devices: [InodeKey: Device] = [:]
        /// Shared regions by file; private ones by (file, handle).
        var shared: [InodeKey: SharedRegion] = [:]
        var privates: [PrivateKey: SharedRegion] = [:]
        /// Every region with client mappings, by region id.
        var live: [UInt64: Live] = [:]
        var ticks: UInt64 = 0
        var stopping = false
    }

    struct PrivateKey: Hashable { var file: InodeKey; var handle: UInt64 }

    public let space = RegionSpace(name: "daxfs-ring")
    public let regionSize: UInt64
    /// The benchmark's pipe baseline: messages go here in mode 1.
    private let pipeFD: Int32?
    private let state = Locked(State())
    private let threads = Locked<[OSThread]>([])

    /// `regionSize`: bytes per region (a multiple of the page size, ≥ 3 pages).
    public init(regionSize: UInt64 = 2 << 20, pipeFD: Int32? = nil) throws(Errno) {
        let page = UInt64(HostPage.size)
        guard regionSize % page == 0, regionSize >= UInt64(RingLayout.slots) + page else { throw .invalidArgument }
        self.regionSize = regionSize
        self.pipeFD = pipeFD
    }

    /// Makes `path` (created empty if missing) a ring file.
    public func add(path: String, sharing: Sharing) throws(Errno) {
        let fd = try Syscall.openat(DAXFS_AT_FDCWD, path, flags: O_RDONLY | O_CREAT | O_CLOEXEC, mode: 0o644)
        defer { Syscall.close(fd) }
        let st = try Syscall.fstat(fd)
        guard st.st_mode & S_IFMT == S_IFREG else { throw .invalidArgument }
        let name = path.split(separator: "/").last.map(String.init) ?? path
        state.withLock { $0.devices[InodeKey(st)] = Device(name: name, sharing: sharing) }
    }

    /// Regions with client mappings now.
    public var mappedRegions: Int { state.withLock { $0.live.count } }

    // MARK: Policy (called by PassthroughFS)

    func handles(_ key: InodeKey) -> Bool { state.withLock { $0.devices[key] != nil } }

    func grant(_ key: InodeKey, handle: UInt64, request: DirectMmapRequest) throws(Errno) -> DirectMmapGrant {
        // The client's offset is the offset in the region: the whole region is the file's "content".
        let (end, overflow) = request.offset.addingReportingOverflow(request.length)
        guard !overflow, end <= regionSize else { throw .invalidArgument }
        let made: (SharedRegion, Bool)? = try state.withLock { s throws(Errno) -> (SharedRegion, Bool)? in
            guard let device = s.devices[key] else { return nil }
            let shared = device.sharing == .shared
            let privateKey = PrivateKey(file: key, handle: handle)
            if let region = shared ? s.shared[key] : s.privates[privateKey] { return (region, !shared) }
            let region = try space.makeRegion(size: regionSize)
            if shared { s.shared[key] = region } else { s.privates[privateKey] = region }
            let label = "\(device.name): region \(region.id) (\(shared ? "shared" : "private"))"
            s.live[region.id] = Live(region: region, label: label)
            writeStatus(region, label: label, tick: s.ticks)
            // Private regions are for the opener alone: not inherited by its children.
            return (region, !shared)
        }
        guard let (region, dontCopy) = made else { throw .notImplemented }
        return DirectMmapGrant(region: region, regionOffset: request.offset, dontCopy: dontCopy)
    }

    /// The last client mapping of `region` went: forget it, which frees it.
    func unmapped(_ region: SharedRegion) {
        state.withLock { s in
            guard s.live.removeValue(forKey: region.id) != nil else { return }
            if let key = s.shared.first(where: { $0.value === region })?.key { s.shared[key] = nil }
            if let key = s.privates.first(where: { $0.value === region })?.key { s.privates[key] = nil }
        }
    }

    // MARK: Server-side writes

    /// Advances the counter and rewrites every live region's status line.
    public func tick() {
        state.withLock { s in
            s.ticks += 1
            for live in s.live.values { writeStatus(live.region, label: live.label, tick: s.ticks) }
        }
    }

    private func writeStatus(_ region: SharedRegion, label: String, tick: UInt64) {
        var line = Array("daxfs ring \(label): tick \(tick)\n".utf8.prefix(RingLayout.statusLength - 1))
        line += [UInt8](repeating: 0, count: RingLayout.statusLength - line.count)
        line.withUnsafeBytes { region.bytes.copyMemory(from: $0.baseAddress!, byteCount: RingLayout.statusLength) }
    }

    /// Starts the ticker (every `tickInterval` seconds) and the producer thread.
    public func start(tickInterval: Double) throws(Errno) {
        let ticker = try OSThread(name: "daxfs-ring-tick") { [self] in
            while !state.withLock({ $0.stopping }) {
                usleep(useconds_t(max(1_000, tickInterval * 1_000_000)))
                tick()
            }
        }
        let producer = try OSThread(name: "daxfs-ring-produce") { [self] in produceLoop() }
        threads.withLock { $0 += [ticker, producer] }
    }

    public func stop() {
        state.withLock { $0.stopping = true }
        for thread in threads.withLock({ list -> [OSThread] in defer { list = [] }; return list }) { thread.join() }
    }

    /// Produces what clients asked for; polls every 200 µs when idle.
    private func produceLoop() {
        let capacity = RingLayout.capacity(regionSize: regionSize)
        var batch = [UInt8](repeating: 0, count: 64 * RingLayout.messageSize)
        while true {
            let work = state.withLock { s -> [(UInt64, SharedRegion, UInt64)]? in
                s.stopping ? nil : s.live.map { ($0.key, $0.value.region, $0.value.produced) }
            }
            guard let work else { return }
            var busy = false, pending = false
            for (id, region, start) in work {
                let base = region.bytes
                let wanted = daxfs_load_acquire_u64(base + RingLayout.requested)
                guard wanted > start else { continue }
                pending = true
                var produced = start
                if daxfs_load_acquire_u64(base + RingLayout.mode) == 1, let pipeFD {
                    // The baseline: the same messages through a pipe, 64 per write.
                    // At most 65,536 messages per pass, whatever the client asked for.
                    let stop = min(wanted, start + 65_536)
                    while produced < stop {
                        let count = Int(min(64, stop - produced))
                        batch.withUnsafeMutableBytes { raw in
                            for i in 0 ..< count { RingLayout.fill(raw.baseAddress! + i * RingLayout.messageSize, sequence: produced + UInt64(i)) }
                        }
                        let bytes = count * RingLayout.messageSize
                        var done = 0
                        while done < bytes {
                            let wrote = batch.withUnsafeBytes { Glibc.write(pipeFD, $0.baseAddress! + done, bytes - done) }
                            if wrote <= 0 { break }
                            done += wrote
                        }
                        if done < bytes { break }
                        produced += UInt64(count)
                    }
                } else {
                    // Into the ring, as far as the consumer has made room.
                    // The client writes these counters: a client cannot have read more
                    // than was written (and a huge claim must not overflow).
                    let consumed = min(daxfs_load_acquire_u64(base + RingLayout.consumed), start)
                    let limit = min(wanted, consumed + capacity)
                    while produced < limit {
                        RingLayout.fill(base + RingLayout.slots + Int(produced % capacity) * RingLayout.messageSize, sequence: produced)
                        produced += 1
                    }
                    daxfs_store_release_u64(base + RingLayout.produced, produced)
                }
                if produced != start {
                    busy = true
                    state.withLock { s in s.live[id]?.produced = produced }
                }
            }
            // Waiting for the consumer to make room: stay close; idle: poll gently.
            if !busy { if pending { sched_yield() } else { usleep(200) } }
        }
    }
}
