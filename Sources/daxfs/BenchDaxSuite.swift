import DAX
import DaxClient
import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import Logging
import PassthroughFS
import Synchronization

/// Reads into the buffer at a file offset; returns the count (0 at end of file).
typealias BlockReader = (UnsafeMutableRawBufferPointer, UInt64) throws -> Int

/// One way the suite reads the data file.
enum DaxReadPath: Hashable {
    case native, mmap, fuseRead, window
    /// The window at `percent` of the file, in `mode`.
    case sweep(percent: Int, mode: DAXMode)

    var title: String {
        switch self {
        case .native: "native pread"
        case .mmap: "native mmap + memcpy"
        case .fuseRead: "FUSE_READ (mode never)"
        case .window: "window (always, 100 %)"
        case .sweep(let percent, let mode): "window \(percent) %, \(mode.rawValue)"
        }
    }

    /// Prefix of this path's figures in the JSON.
    var key: String {
        switch self {
        case .native: "native"
        case .mmap: "native_mmap"
        case .fuseRead: "fuse_read"
        case .window: "dax"
        case .sweep(let percent, let mode): "dax_window\(percent)_\(mode.rawValue)"
        }
    }
}

/// An embedded server and a client of it with the data file open.
final class DaxBenchClient {
    let client: DaxClient
    let file: DaxFile

    init(shared: String, mode: DAXMode, windowSize: UInt64) throws {
        var options = DaxClient.Options()
        options.mode = mode
        options.rangeSize = DaxBenchSuite.rangeSize
        options.windowSize = windowSize
        let fileSystem = try attempt("cannot share \(shared)") {
            try PassthroughFS(root: shared, options: PassthroughFS.Options(passthrough: false))
        }
        client = try attempt("cannot start an embedded client (mode \(mode.rawValue))") {
            try DaxClient.embedded(fileSystem: fileSystem, options: options, logger: quietLogger())
        }
        do {
            file = try client.open(DaxBenchSuite.dataName)
        } catch {
            client.shutdown()
            throw BenchError("cannot open \(DaxBenchSuite.dataName) through the client: \(error)")
        }
    }

    var reader: BlockReader {
        let file = file
        return { buffer, offset in try file.pread(into: buffer, at: offset) }
    }

    /// Closes the file (a batched REMOVEMAPPING of its ranges) and the connection.
    func close() throws {
        defer { client.shutdown() }
        try attempt("close \(DaxBenchSuite.dataName) through the client") { try file.close() }
    }
}

/// A bare FUSE client on an embedded server with a two-range window, for
/// timing SETUPMAPPING and REMOVEMAPPING requests without a window manager.
final class RawMappingClient {
    let window: LocalWindow
    let fuse: FUSEClient
    let node: NodeID

    init(shared: String) throws {
        window = try attempt("cannot reserve a DAX window") {
            try LocalWindow(size: 2 * DaxBenchSuite.rangeSize)
        }
        let fileSystem = try attempt("cannot share \(shared)") {
            try PassthroughFS(root: shared, options: PassthroughFS.Options(passthrough: false))
        }
        let session = FUSESession(fileSystem: fileSystem, logger: quietLogger(), window: window)
        let fuse = FUSEClient(channel: EmbeddedChannel(session: session))
        self.fuse = fuse
        let negotiated = try attempt("FUSE_INIT") { try fuse.initialize(flags: [.mapAlignment]) }
        guard negotiated.mapAlignmentLog2 != nil else { throw BenchError("the embedded server offers no DAX window") }
        node = NodeID(try attempt("lookup \(DaxBenchSuite.dataName)") {
            try fuse.lookup(parent: .root, name: DaxBenchSuite.dataName).nodeid
        })
    }

    func close() {
        fuse.forget(node)
        try? fuse.destroy()
    }
}

func quietLogger() -> Logger {
    var logger = Logger(label: "daxfs.session")
    logger.logLevel = .warning
    return logger
}

/// Keeps loads the optimizer would otherwise drop.
private let benchSink = Atomic<UInt64>(0)

/// `daxfs bench dax`: reads of one cached file through the DAX window,
/// through FUSE_READ and natively, plus mapping latency, in one run,
/// interleaved round by round.
struct DaxBenchSuite {
    struct Size {
        var dataBytes: Int
        var rounds: Int
        /// Per configuration and round.
        var randomReadSeconds: Double
        /// Random reads before the first round, for each window-size configuration.
        var warmSeconds: Double
        /// Sequential reads repeat whole-file passes for at least this long.
        var sequentialSeconds: Double
        /// Per round, for each kind of mapping request.
        var mappingRequests: Int

        static let quick = Size(dataBytes: 256 << 20, rounds: 3, randomReadSeconds: 0.5, warmSeconds: 1,
                                sequentialSeconds: 0.3, mappingRequests: 2_000)
        static let full = Size(dataBytes: 1 << 30, rounds: 5, randomReadSeconds: 1, warmSeconds: 2,
                               sequentialSeconds: 0.5, mappingRequests: 2_000)
    }

    static let rangeSize: UInt64 = 2 << 20
    static let dataName = "data"
    static let smallBlock = 4096
    static let sweepPercents = [25, 50, 100]
    static let sweepModes: [DAXMode] = [.auto, .always]

    struct Results {
        var size: Size
        /// Figure name → one value per round.
        var samples: [String: [Double]] = [:]

        mutating func add(_ key: String, _ value: Double) { samples[key, default: []].append(value) }
        func median(_ key: String) -> Double { daxfs.median(samples[key] ?? []) }
    }

    var size: Size
    /// The directory in which the scratch directory is made.
    var parent: String
    /// Warm the page cache with pread (readahead-sized folios) instead of
    /// through a huge-page-advised mapping (2 MiB folios).
    var smallFolios = false

    static func windowBytes(percent: Int, dataBytes: Int) -> UInt64 {
        let ranges = (UInt64(dataBytes) * UInt64(percent) / 100 + rangeSize - 1) / rangeSize
        return max(1, ranges) * rangeSize
    }

    func run() throws -> Results {
        let scratch = try makeTemporaryDirectory(in: try canonicalPath(parent), prefix: "daxfs-bench-dax.")
        note("scratch directory: \(scratch)")
        let buffer = BenchWorkload.makeBuffer()
        var clients: [DaxBenchClient] = []
        var rawClient: RawMappingClient?
        var nativeFD: Int32 = -1
        defer {
            for client in clients { try? client.close() }
            rawClient?.close()
            if nativeFD >= 0 { Glibc.close(nativeFD) }
            buffer.deallocate()
            for path in removeTree(scratch) { note("warning: could not remove \(path)") }
        }

        let shared = scratch + "/shared"
        try makeDirectory(shared)
        let dataPath = shared + "/" + Self.dataName
        note("writing the \(size.dataBytes >> 20) MiB data file")
        try Self.writeDataFile(dataPath, bytes: size.dataBytes, buffer: buffer)
        nativeFD = try attempt("open \(dataPath)") { try FileDescriptor.open(dataPath, flags: O_RDONLY).release() }
        let fd = nativeFD
        let dataBytes = size.dataBytes
        // The native mapping: 2 MiB-aligned and huge-page-advised like the
        // window's ranges, so both map the page cache the same way.
        let nativeMap = try attempt("reserve \(dataBytes >> 20) MiB of address space") { try LocalWindow(size: UInt64(dataBytes)) }
        if smallFolios {
            note("warming the page cache with pread (folios as readahead makes them)")
            _ = try BenchWorkload.sequentialRead(dataPath, buffer: buffer)
        } else {
            // What a file first read through the window gets: the window's
            // huge-page advice makes page faults read 2 MiB folios.
            note("warming the page cache through a huge-page-advised mapping (2 MiB folios)")
            _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        }
        do {
            try nativeMap.map(fd: fd, fileOffset: 0, windowOffset: 0, length: UInt64(dataBytes), writable: false)
        } catch {
            throw BenchError("mmap \(dataPath): \(error)")
        }
        let address = nativeMap.base
        var sink: UInt8 = 0
        for page in stride(from: 0, to: dataBytes, by: HostPage.size) { sink &+= address.load(fromByteOffset: page, as: UInt8.self) }
        if sink == 1 { note("") }  // keeps the loads
        let hugeShare = Double(filePmdMappedBytes(at: address)) / Double(dataBytes) * 100
        note("page cache: \(formatted(hugeShare, decimals: 1)) % of the file mapped with 2 MiB page-table entries")

        var readers: [DaxReadPath: BlockReader] = [:]
        var daxClients: [DaxReadPath: DaxClient] = [:]
        readers[.native] = { buffer, offset in try Syscall.pread(fd, into: buffer, offset: Int64(offset)) }
        let source = UnsafeRawPointer(address)
        readers[.mmap] = { buffer, offset in
            let count = min(buffer.count, max(0, dataBytes - Int(offset)))
            if count > 0 { buffer.baseAddress!.copyMemory(from: source + Int(offset), byteCount: count) }
            return count
        }
        func addClient(_ path: DaxReadPath, mode: DAXMode, windowSize: UInt64) throws {
            let client = try DaxBenchClient(shared: shared, mode: mode, windowSize: windowSize)
            clients.append(client)
            readers[path] = client.reader
            daxClients[path] = client.client
        }
        note("starting the embedded clients")
        try addClient(.fuseRead, mode: .never, windowSize: Self.rangeSize)
        try addClient(.window, mode: .always, windowSize: UInt64(size.dataBytes))
        var sweeps: [DaxReadPath] = []
        for percent in Self.sweepPercents {
            for mode in Self.sweepModes {
                let path = DaxReadPath.sweep(percent: percent, mode: mode)
                try addClient(path, mode: mode, windowSize: Self.windowBytes(percent: percent, dataBytes: size.dataBytes))
                sweeps.append(path)
            }
        }
        guard daxClients[.window]!.usesWindow else { throw BenchError("the embedded client does not use its DAX window") }
        rawClient = try RawMappingClient(shared: shared)

        let randomPaths: [DaxReadPath] = [.native, .mmap, .fuseRead, .window] + sweeps
        let sequentialPaths: [DaxReadPath] = [.native, .mmap, .fuseRead, .window]
        note("checking that every path reads the same bytes")
        for path in randomPaths { try verify(readers[path]!, against: fd, title: path.title, buffer: buffer) }

        note("warming: the window client reads the file once; each window-size client reads at random for \(formatted(size.warmSeconds, decimals: 1)) s")
        _ = try sequentialPass(readers[.window]!, buffer: buffer)
        let small = UnsafeMutableRawBufferPointer(rebasing: buffer[..<Self.smallBlock])
        for path in sweeps {
            _ = try randomReads(readers[path]!, seconds: size.warmSeconds, seed: 0x5EED, block: small)
        }
        let permutation = Self.blockPermutation(count: size.dataBytes / Self.smallBlock, seed: 0xF1257)

        var results = Results(size: size)
        results.add("page_cache_huge_pct", hugeShare)
        for round in 0..<size.rounds {
            let progress = "round \(round + 1)/\(size.rounds)"
            for path in rotated(randomPaths, by: round) {
                let before = daxClients[path]?.statistics
                let (reads, span) = try randomReads(readers[path]!, seconds: size.randomReadSeconds,
                                                    seed: UInt64(round + 1), block: small)
                let micros = span.wall / Double(reads) * 1e6
                results.add("\(path.key)_rand4k_us", micros)
                results.add("\(path.key)_rand4k_cpu_pct", span.cpuPercent)
                var detail = ""
                if let before, let after = daxClients[path]?.statistics {
                    let hits = Double(after.windowHits - before.windowHits) / Double(reads) * 100
                    let maps = Double(after.mappingsSetUp - before.mappingsSetUp) / Double(reads) * 100
                    let fuse = Double(after.fuseReads - before.fuseReads) / Double(reads) * 100
                    results.add("\(path.key)_rand4k_hit_pct", hits)
                    results.add("\(path.key)_rand4k_map_pct", maps)
                    results.add("\(path.key)_rand4k_fuse_read_pct", fuse)
                    detail = "  hits \(formatted(hits, decimals: 1))%  new mappings \(formatted(maps, decimals: 1))%  "
                        + "FUSE_READ \(formatted(fuse, decimals: 1))%"
                }
                note("\(progress)  random 4 KiB  \(padRight(path.title, 24)) \(padLeft(formatted(micros, decimals: 3), 9)) µs/read  "
                    + "cpu \(formatted(span.cpuPercent, decimals: 0))%\(detail)")
            }
            for path in rotated(sequentialPaths, by: round) {
                let (bytes, span) = try sequentialReads(readers[path]!, seconds: size.sequentialSeconds, buffer: buffer)
                let rate = Double(bytes) / 1e6 / span.wall
                results.add("\(path.key)_seq1m_mbps", rate)
                results.add("\(path.key)_seq1m_cpu_pct", span.cpuPercent)
                note("\(progress)  sequential   \(padRight(path.title, 24)) \(padLeft(formatted(rate, decimals: 1), 9)) MB/s     "
                    + "cpu \(formatted(span.cpuPercent, decimals: 0))%")
            }
            try firstTouch(shared: shared, permutation: permutation, buffer: buffer, into: &results, progress: progress)
            try mappingLatency(rawClient!, round: round, into: &results, progress: progress)
        }

        note("closing the clients")
        let open = clients
        clients = []
        for client in open { try client.close() }
        rawClient?.close()
        rawClient = nil
        return results
    }

    // MARK: Data

    /// FilePmdMapped of this process's mapping that starts at `address` (/proc/self/smaps), 0 if unknown.
    func filePmdMappedBytes(at address: UnsafeMutableRawPointer) -> Int {
        let smaps = readSmallFile("/proc/self/smaps")
        let start = String(UInt(bitPattern: address), radix: 16) + "-"
        var inside = false
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard let key = fields.first else { continue }
            if !key.hasSuffix(":") {
                inside = key.hasPrefix(start)  // a mapping's header: "start-end perms offset dev inode path"
            } else if inside, key == "FilePmdMapped:", fields.count > 1 {
                return (Int(fields[1]) ?? 0) * 1024
            }
        }
        return 0
    }

    /// The data file: pseudo-random bytes, each 4 KiB block stamped with its
    /// own offset, so a read from the wrong place cannot match.
    static func writeDataFile(_ path: String, bytes: Int, buffer: UnsafeMutableRawBufferPointer) throws {
        let fd = try attempt("create \(path)") { try FileDescriptor.open(path, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o644) }
        var offset = 0
        while offset < bytes {
            try Interruption.check()
            let count = min(buffer.count, bytes - offset)
            for block in stride(from: 0, to: count, by: smallBlock) {
                buffer.storeBytes(of: UInt64(offset + block), toByteOffset: block, as: UInt64.self)
            }
            var done = 0
            while done < count {
                done += try attempt("write \(path)") {
                    try Syscall.pwrite(fd.rawValue, from: UnsafeRawBufferPointer(rebasing: buffer[done ..< count]),
                                       offset: Int64(offset + done))
                }
            }
            offset += count
        }
        _ = try attempt("fsync \(path)") { try Syscall.call { fsync(fd.rawValue) } }
        try closeChecked(fd, path)
    }

    /// Compares reads through `read` with pread on the host file: random
    /// 4 KiB blocks, and 1 MiB reads across range boundaries.
    private func verify(_ read: BlockReader, against fd: Int32, title: String, buffer: UnsafeMutableRawBufferPointer) throws {
        let expected = UnsafeMutableRawBufferPointer.allocate(byteCount: buffer.count, alignment: 4096)
        defer { expected.deallocate() }
        var random = SplitMix64(seed: 0xC0FFEE)
        let blocks = UInt64(size.dataBytes / Self.smallBlock)
        var checks: [(offset: UInt64, count: Int)] = (0..<32).map { _ in ((random.next() % blocks) * UInt64(Self.smallBlock), Self.smallBlock) }
        checks.append((Self.rangeSize - UInt64(buffer.count / 2), buffer.count))
        checks.append((UInt64(size.dataBytes - buffer.count), buffer.count))
        for (offset, count) in checks {
            let got = try read(UnsafeMutableRawBufferPointer(rebasing: buffer[..<count]), offset)
            let want = try Syscall.pread(fd, into: UnsafeMutableRawBufferPointer(rebasing: expected[..<count]), offset: Int64(offset))
            guard got == want, memcmp(buffer.baseAddress!, expected.baseAddress!, count) == 0 else {
                throw BenchError("\(title): the \(count) bytes at offset \(offset) differ from the host file")
            }
        }
    }

    /// Every 4 KiB block index once, shuffled (Fisher–Yates).
    static func blockPermutation(count: Int, seed: UInt64) -> [UInt32] {
        var blocks = (0..<UInt32(count)).map { $0 }
        var random = SplitMix64(seed: seed)
        for i in stride(from: blocks.count - 1, to: 0, by: -1) {
            blocks.swapAt(i, Int(random.next() % UInt64(i + 1)))
        }
        return blocks
    }

    // MARK: Workloads

    private func rotated(_ paths: [DaxReadPath], by round: Int) -> [DaxReadPath] {
        paths.indices.map { paths[($0 + round) % paths.count] }
    }

    /// 4 KiB reads at uniformly random 4 KiB-aligned offsets for about
    /// `seconds`; the same `seed` gives the same offsets.
    private func randomReads(_ read: BlockReader, seconds: Double, seed: UInt64,
                             block: UnsafeMutableRawBufferPointer) throws -> (Int, Span) {
        let blocks = UInt64(size.dataBytes / Self.smallBlock)
        var random = SplitMix64(seed: seed)
        var reads = 0
        let span = try timed {
            let deadline = monotonicSeconds() + seconds
            repeat {
                try Interruption.check()
                for _ in 0..<64 {
                    let offset = (random.next() % blocks) * UInt64(Self.smallBlock)
                    let count = try read(block, offset)
                    guard count == Self.smallBlock else {
                        throw BenchError("read \(count) bytes at offset \(offset), expected \(Self.smallBlock)")
                    }
                }
                reads += 64
            } while monotonicSeconds() < deadline
        }
        return (reads, span)
    }

    /// Reads the whole file once in 1 MiB reads; returns the bytes read.
    private func sequentialPass(_ read: BlockReader, buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var total = 0
        while true {
            try Interruption.check()
            let count = try read(buffer, UInt64(total))
            if count == 0 { break }
            total += count
        }
        guard total == size.dataBytes else { throw BenchError("read \(total) bytes of the data file, expected \(size.dataBytes)") }
        return total
    }

    /// Whole-file passes until at least `seconds` have passed.
    private func sequentialReads(_ read: BlockReader, seconds: Double, buffer: UnsafeMutableRawBufferPointer) throws -> (Int, Span) {
        var total = 0
        let span = try timed {
            let deadline = monotonicSeconds() + seconds
            repeat { total += try sequentialPass(read, buffer: buffer) } while monotonicSeconds() < deadline
        }
        return (total, span)
    }

    /// New clients with an empty window as large as the file: one reads the
    /// file once sequentially, the other reads every 4 KiB block once in
    /// random order. Client start and close are not timed.
    private func firstTouch(shared: String, permutation: [UInt32], buffer: UnsafeMutableRawBufferPointer,
                            into results: inout Results, progress: String) throws {
        let sequential = try DaxBenchClient(shared: shared, mode: .always, windowSize: UInt64(size.dataBytes))
        let span = try timed { _ = try sequentialPass(sequential.reader, buffer: buffer) }
        try sequential.close()
        let rate = Double(size.dataBytes) / 1e6 / span.wall
        results.add("dax_first_touch_seq1m_mbps", rate)
        results.add("dax_first_touch_seq1m_cpu_pct", span.cpuPercent)

        let random = try DaxBenchClient(shared: shared, mode: .always, windowSize: UInt64(size.dataBytes))
        let read = random.reader
        let block = UnsafeMutableRawBufferPointer(rebasing: buffer[..<Self.smallBlock])
        let randomSpan = try timed {
            for (i, index) in permutation.enumerated() {
                if i & 1023 == 0 { try Interruption.check() }
                let count = try read(block, UInt64(index) * UInt64(Self.smallBlock))
                guard count == Self.smallBlock else { throw BenchError("read \(count) bytes of block \(index), expected \(Self.smallBlock)") }
            }
        }
        let setups = random.client.statistics.mappingsSetUp
        try random.close()
        let micros = randomSpan.wall / Double(permutation.count) * 1e6
        results.add("dax_first_touch_rand4k_us", micros)
        results.add("dax_first_touch_rand4k_cpu_pct", randomSpan.cpuPercent)
        note("\(progress)  first touch  sequential \(formatted(rate, decimals: 1)) MB/s, "
            + "random \(formatted(micros, decimals: 3)) µs/read (\(permutation.count) reads, \(setups) mappings)")
    }

    /// Per round: `mappingRequests` SETUPMAPPING+REMOVEMAPPING round trips of
    /// one range at random file offsets (each request timed too), then as
    /// many SETUPMAPPINGs over the same window range while it is mapped and
    /// all its pages have been touched, which is what inline reclaim does.
    private func mappingLatency(_ raw: RawMappingClient, round: Int, into results: inout Results, progress: String) throws {
        let range = Self.rangeSize
        let chunks = UInt64(size.dataBytes) / range
        var random = SplitMix64(seed: 0x3A9 &+ UInt64(round))
        let removal = [RemoveMappingOne(moffset: 0, len: range)]
        var setup: [Double] = [], remove: [Double] = [], pair: [Double] = [], replace: [Double] = []
        setup.reserveCapacity(size.mappingRequests)
        remove.reserveCapacity(size.mappingRequests)
        pair.reserveCapacity(size.mappingRequests)
        replace.reserveCapacity(size.mappingRequests)
        let fuse = raw.fuse, node = raw.node
        try attempt("SETUPMAPPING+REMOVEMAPPING") {
            for _ in 0..<size.mappingRequests {
                let offset = (random.next() % chunks) * range
                let t0 = monotonicSeconds()
                try fuse.setupMapping(node, fileOffset: offset, windowOffset: 0, length: range, writable: false)
                let t1 = monotonicSeconds()
                try fuse.removeMapping(removal)
                let t2 = monotonicSeconds()
                setup.append((t1 - t0) * 1e6)
                remove.append((t2 - t1) * 1e6)
                pair.append((t2 - t0) * 1e6)
            }
        }
        try Interruption.check()
        let page = HostPage.size
        let base = UnsafeRawPointer(raw.window.base)
        var sum: UInt64 = 0
        try attempt("SETUPMAPPING over a mapped range") {
            try fuse.setupMapping(node, fileOffset: 0, windowOffset: 0, length: range, writable: false)
            for _ in 0..<size.mappingRequests {
                for p in stride(from: 0, to: Int(range), by: page) { sum &+= UInt64(base.load(fromByteOffset: p, as: UInt8.self)) }
                let offset = (random.next() % chunks) * range
                let t0 = monotonicSeconds()
                try fuse.setupMapping(node, fileOffset: offset, windowOffset: 0, length: range, writable: false)
                replace.append((monotonicSeconds() - t0) * 1e6)
            }
            try fuse.removeMapping(removal)
        }
        benchSink.store(sum, ordering: .relaxed)

        for (name, values) in [("setupmapping", pair), ("setupmapping_only", setup), ("removemapping", remove),
                               ("setupmapping_replace", replace)] {
            let sorted = values.sorted()
            results.add("\(name)_p50_us", percentile(sorted, 0.5))
            results.add("\(name)_p99_us", percentile(sorted, 0.99))
        }
        let sortedPair = pair.sorted(), sortedReplace = replace.sorted()
        note("\(progress)  mappings     SETUPMAPPING+REMOVEMAPPING p50 \(formatted(percentile(sortedPair, 0.5), decimals: 2)) µs, "
            + "p99 \(formatted(percentile(sortedPair, 0.99), decimals: 2)) µs; over a mapped range p50 "
            + "\(formatted(percentile(sortedReplace, 0.5), decimals: 2)) µs")
    }
}

/// The value below which a share `q` of the sorted samples lie (nearest rank).
func percentile(_ sorted: [Double], _ q: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    let rank = Int((Double(sorted.count) * q).rounded(.up)) - 1
    return sorted[min(max(rank, 0), sorted.count - 1)]
}
