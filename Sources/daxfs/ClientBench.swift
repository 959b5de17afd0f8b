import ArgumentParser
import DAX
import DaxClient
import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import Synchronization

/// `daxfs client ... bench`: the FUSE and DAX paths of one backend, measured
/// through one connection by one client.
struct ClientBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure a backend through this client: metadata and read round trips, DAX reads, SETUPMAPPING latency.",
        discussion: """
        Works in a fresh directory .daxfs-client-bench-PID of the share (removed at the end), \
        over one connection (the DAX window clients of the sweep share its INIT). Workloads, \
        each run for a fixed time:
          getattr qd1/qd16   GETATTR of one file from 1 thread, or 16 threads with one
                             request outstanding each
          lookup qd1/qd16    LOOKUP of that file by name (the references are forgotten
                             once at the end)
          read 4K            FUSE_READ of 4 KiB at random offsets of the data file
          read 1M            FUSE_READ of 1 MiB, sequential, wrapping around
          create+unlink      CREATE, RELEASE, UNLINK and FORGET of a new empty file;
                             counted as whole cycles
          dax rand 4K        (DAX) 4 KiB reads at random offsets through the window,
                             covering the data file; dax_rand4k_vs_nondax divides it
                             by read 4K: the same file, client and connection
          window N %         (DAX) the same with a window of N % of the data file,
                             after a warm-up, with the client's default policy
          SETUPMAPPING       (DAX) round trip of one 2 MiB SETUPMAPPING into a free
                             range, and of the REMOVEMAPPING that undoes it
        CPU per operation: the client's from getrusage (all its threads); the backend's \
        from /proc/PID/stat (utime+stime, 10 ms ticks) when --backend-pid is given, \
        otherwise the busy time of the whole machine (/proc/stat) minus the client's, \
        which also counts anything else running. Progress goes to stderr; stdout has only the \
        results, and with --json one JSON object as its last line.
        """)

    @ParentCommand var parent: ClientCommand
    @Flag(help: "Smaller run: 128 MiB data file, 0.5 s per workload (default: 512 MiB, 2 s).") var quick = false
    @Flag(help: "After the table, print one JSON object with every figure and ratio as the last line of stdout.") var json = false
    @Option(help: "The backend's process id, to report its CPU time per operation from /proc/PID/stat.") var backendPid: Int32?
    @Option(help: "Seconds per workload (default: 2, or 0.5 with --quick).") var seconds: Double?
    @Option(help: "Size of the data file (default: 512M, or 128M with --quick).") var dataSize: ByteSize?

    func run() throws {
        Interruption.install()
        let connection = parent.connection
        let transport = try connection.openTransport()
        var size = quick ? ClientBenchSuite.Size.quick : .full
        if let seconds { size.seconds = max(0.05, seconds) }
        if let dataSize { size.dataBytes = max(dataSize.bytes, connection.rangeSize.bytes) / connection.rangeSize.bytes * connection.rangeSize.bytes }
        let suite = ClientBenchSuite(connection: connection, transport: transport, size: size,
                                     cpu: CPUMeter(backendPid: backendPid))
        let results: ClientBenchSuite.Results
        do {
            results = try suite.run()
        } catch {
            note("daxfs client bench: \(Interruption.requested ? BenchError.interrupted : error)")
            throw ExitCode(Interruption.requested ? 130 : 1)
        }
        print(results.table())
        if json { print(results.json()) }
    }
}

/// CPU seconds used so far by this process and by the backend.
struct CPUMeter {
    let backendPid: Int32?
    let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))

    struct Sample { var client: Double; var backend: Double? }

    var source: String { backendPid == nil ? "machine" : "pid" }

    func sample() -> Sample {
        let client = processCPUSeconds()
        if let backendPid {
            // Fields 14 and 15 (utime, stime), counted after the ")" that ends the command name.
            let text = readSmallFile("/proc/\(backendPid)/stat")
            guard let close = text.lastIndex(of: ")") else { return Sample(client: client, backend: nil) }
            let fields = text[text.index(after: close)...].split(separator: " ")
            guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return Sample(client: client, backend: nil) }
            return Sample(client: client, backend: (user + system) / ticks)
        }
        // The "cpu" line: user nice system idle iowait irq softirq steal ...
        let line = readSmallFile("/proc/stat").split(separator: "\n").first ?? ""
        let values = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard values.count >= 8 else { return Sample(client: client, backend: nil) }
        let busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
        return Sample(client: client, backend: busy / ticks - client)
    }
}

/// One timed workload.
struct ClientMeasurement {
    var key: String
    var label: String
    var operations: Int
    var wall: Double
    var clientCPU: Double
    var backendCPU: Double?
    /// Bytes per operation, for a MB/s column.
    var bytesPerOperation = 0

    var opsPerSecond: Double { wall > 0 ? Double(operations) / wall : .nan }
    var microsPerOp: Double { operations > 0 ? wall / Double(operations) * 1e6 : .nan }
    var clientMicrosPerOp: Double { operations > 0 ? clientCPU / Double(operations) * 1e6 : .nan }
    var backendMicrosPerOp: Double { operations > 0 ? (backendCPU ?? .nan) / Double(operations) * 1e6 : .nan }
}

final class ClientBenchSuite {
    struct Size {
        var dataBytes: UInt64
        var seconds: Double
        var mappingRounds: Int
        static let full = Size(dataBytes: 512 << 20, seconds: 2, mappingRounds: 5000)
        static let quick = Size(dataBytes: 128 << 20, seconds: 0.5, mappingRounds: 1000)
    }

    struct Latency { var p50: Double; var p99: Double }

    struct Results {
        var measurements: [ClientMeasurement] = []
        var setup: Latency?
        var remove: Latency?
        var sweepStats: [String: DaxStatistics] = [:]
        var dax = false
        var params: [(String, String)] = []

        func find(_ key: String) -> ClientMeasurement? { measurements.first { $0.key == key } }

        func ratio(_ key: String, over base: String) -> Double? {
            guard let a = find(key), let b = find(base) else { return nil }
            return a.opsPerSecond / b.opsPerSecond
        }

        func table() -> String {
            var lines = [padRight("workload", 24) + padLeft("ops/s", 12) + padLeft("µs/op", 10) + padLeft("MB/s", 9)
                         + padLeft("client CPU µs/op", 18) + padLeft("backend CPU µs/op", 19)]
            for m in measurements {
                lines.append(padRight(m.label, 24) + padLeft(formatted(m.opsPerSecond, decimals: 0), 12)
                             + padLeft(formatted(m.microsPerOp, decimals: 2), 10)
                             + padLeft(m.bytesPerOperation > 0 ? formatted(m.opsPerSecond * Double(m.bytesPerOperation) / 1e6, decimals: 0) : "", 9)
                             + padLeft(formatted(m.clientMicrosPerOp, decimals: 2), 18) + padLeft(formatted(m.backendMicrosPerOp, decimals: 2), 19))
            }
            if let setup, let remove {
                lines.append("SETUPMAPPING 2 MiB       median \(formatted(setup.p50, decimals: 2)) µs, p99 \(formatted(setup.p99, decimals: 2)) µs")
                lines.append("REMOVEMAPPING 2 MiB      median \(formatted(remove.p50, decimals: 2)) µs, p99 \(formatted(remove.p99, decimals: 2)) µs")
            }
            if let r = ratio("dax_rand4k", over: "read4k") {
                lines.append("dax rand 4K vs FUSE_READ 4K: \(formatted(r, decimals: 2))×")
            } else if !dax {
                lines.append("no DAX: the backend offers no window, or --no-dax")
            }
            for share in [100, 50, 25] {
                guard let r = ratio("window\(share)_rand4k", over: "read4k"), let s = sweepStats["window\(share)"] else { continue }
                lines.append("window \(share) % vs FUSE_READ 4K: \(formatted(r, decimals: 2))×  (\(s.mappingsSetUp) mappings, \(s.reclaimed) reclaimed, "
                             + "\(s.windowHits) hits, \(s.fuseReads) FUSE_READs)")
            }
            return lines.joined(separator: "\n")
        }

        /// One line: {"suite":"client","figures":{...},"ratios":{...},"params":{...}}.
        func json() -> String {
            var figures: [(String, String)] = []
            for m in measurements {
                figures.append(("\(m.key)_ops", jsonNumber(m.opsPerSecond, decimals: 1)))
                if m.bytesPerOperation > 0 { figures.append(("\(m.key)_mbps", jsonNumber(m.opsPerSecond * Double(m.bytesPerOperation) / 1e6, decimals: 1))) }
                figures.append(("\(m.key)_client_cpu_us_per_op", jsonNumber(m.clientMicrosPerOp, decimals: 3)))
                if m.backendCPU != nil { figures.append(("\(m.key)_backend_cpu_us_per_op", jsonNumber(m.backendMicrosPerOp, decimals: 3))) }
            }
            if let setup, let remove {
                figures += [("setupmapping_p50_us", jsonNumber(setup.p50, decimals: 2)), ("setupmapping_p99_us", jsonNumber(setup.p99, decimals: 2)),
                            ("removemapping_p50_us", jsonNumber(remove.p50, decimals: 2)), ("removemapping_p99_us", jsonNumber(remove.p99, decimals: 2))]
            }
            var ratios: [(String, String)] = []
            if let r = ratio("dax_rand4k", over: "read4k") { ratios.append(("dax_rand4k_vs_nondax", jsonNumber(r, decimals: 3))) }
            for share in [100, 50, 25] {
                if let r = ratio("window\(share)_rand4k", over: "read4k") { ratios.append(("window\(share)_rand4k_vs_nondax", jsonNumber(r, decimals: 3))) }
            }
            if let r = ratio("getattr_qd16", over: "getattr_qd1") { ratios.append(("getattr_qd16_vs_qd1", jsonNumber(r, decimals: 3))) }
            return jsonObject([("suite", "\"client\""), ("figures", jsonObject(figures)), ("ratios", jsonObject(ratios)), ("params", jsonObject(params))])
        }
    }

    let connection: ClientConnectionOptions
    let transport: ClientTransport
    let size: Size
    let cpu: CPUMeter
    let shared: SharedConnectionChannel
    static let depth = 16

    init(connection: ClientConnectionOptions, transport: ClientTransport, size: Size, cpu: CPUMeter) {
        self.connection = connection
        self.transport = transport
        self.size = size
        self.cpu = cpu
        shared = SharedConnectionChannel(base: transport.channel)
    }

    func run() throws -> Results {
        var results = Results()
        let range = connection.rangeSize.bytes
        let client = try connection.makeClient(on: transport, channel: shared, options: connection.clientOptions())
        let fuse = client.fuse
        results.dax = client.usesWindow
        results.params = [("quick", size.seconds < 1 ? "true" : "false"), ("seconds", jsonNumber(size.seconds, decimals: 2)),
                          ("data_bytes", "\(size.dataBytes)"), ("window_bytes", "\(transport.window?.windowSize ?? 0)"),
                          ("poll_us", "\(connection.pollUs)"), ("queues", "\(transport.frontend.map { $0.queues.count - 1 } ?? 0)"),
                          ("depth", "\(Self.depth)"), ("backend_cpu", "\"\(cpu.source)\""), ("dax", results.dax ? "true" : "false")]
        if transport.frontend != nil, connection.slots < Self.depth + 2 {
            throw BenchError("--slots must be at least \(Self.depth + 2) for the queue-depth \(Self.depth) workloads")
        }

        let directory = ".daxfs-client-bench-\(getpid())"
        try step("mkdir \(directory)") { () throws(Errno) in try client.mkdir(directory) }
        defer {
            try? client.unlink(directory + "/data")
            try? client.rmdir(directory)
            shared.allowDestroy()
            client.shutdown()
        }
        note("writing the \(size.dataBytes >> 20) MiB data file")
        try fill(client, directory + "/data")
        let dirNode = NodeID(try step("lookup \(directory)") { () throws(Errno) in try fuse.lookup(parent: .root, name: directory) }.nodeid)
        defer { fuse.forget(dirNode) }
        let dataNode = NodeID(try step("lookup data") { () throws(Errno) in try fuse.lookup(parent: dirNode, name: "data") }.nodeid)
        defer { fuse.forget(dataNode) }

        // Metadata round trips.
        results.measurements.append(try measure("getattr_qd1", "GETATTR qd1") { _, deadline throws(Errno) in
            try loop(until: deadline) { () throws(Errno) in _ = try fuse.getattr(dataNode) }
        })
        results.measurements.append(try measure("getattr_qd16", "GETATTR qd16", threads: Self.depth) { _, deadline throws(Errno) in
            try loop(until: deadline) { () throws(Errno) in _ = try fuse.getattr(dataNode) }
        })
        for (key, label, threads) in [("lookup_qd1", "LOOKUP qd1", 1), ("lookup_qd16", "LOOKUP qd16", Self.depth)] {
            results.measurements.append(try measure(key, label, threads: threads) { _, deadline throws(Errno) in
                let count = try loop(until: deadline) { () throws(Errno) in _ = try fuse.lookup(parent: dirNode, name: "data") }
                fuse.forget(dataNode, count: UInt64(count))
                return count
            })
        }

        // FUSE_READ, on a handle of its own.
        let opened = try step("open data") { () throws(Errno) in try fuse.open(dataNode, flags: O_RDONLY) }
        let handle = FileHandle(opened.fh)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: HostPage.size)
        defer { buffer.deallocate() }
        let blocks = size.dataBytes / 4096
        let dataBytes = size.dataBytes
        var read4k = try measure("read4k", "READ 4K random") { _, deadline throws(Errno) in
            var rng = SplitMix64(seed: 7)
            let small = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< 4096])
            return try loop(until: deadline) { () throws(Errno) in
                _ = try fuse.read(dataNode, handle: handle, offset: rng.next() % blocks * 4096, into: small)
            }
        }
        read4k.bytesPerOperation = 4096
        results.measurements.append(read4k)
        var read1m = try measure("read1m", "READ 1M sequential") { _, deadline throws(Errno) in
            var offset: UInt64 = 0
            return try loop(until: deadline) { () throws(Errno) in
                let count = try fuse.read(dataNode, handle: handle, offset: offset, into: buffer)
                offset = count == 0 || offset + UInt64(count) >= dataBytes ? 0 : offset + UInt64(count)
            }
        }
        read1m.bytesPerOperation = min(1 << 20, fuse.maxTransfer)
        results.measurements.append(read1m)
        try? fuse.release(dataNode, handle: handle, flags: O_RDONLY)

        results.measurements.append(try measure("create_unlink", "create+unlink") { _, deadline throws(Errno) in
            var index = 0
            return try loop(until: deadline) { () throws(Errno) in
                let name = "f\(index)"
                index += 1
                let (entry, file) = try fuse.create(parent: dirNode, name: name, mode: 0o644, flags: O_RDWR)
                try fuse.release(NodeID(entry.nodeid), handle: FileHandle(file.fh), flags: O_RDWR)
                try fuse.unlink(parent: dirNode, name: name)
                fuse.forget(NodeID(entry.nodeid))
            }
        })

        guard results.dax, let window = transport.window else { return results }

        // DAX: the whole data file in the window, each chunk touched once before timing.
        do {
            let file = try step("open data through the window") { () throws(Errno) in try client.open(directory + "/data") }
            var offset: UInt64 = 0
            while offset < size.dataBytes {
                _ = try step("read data") { () throws(Errno) in try file.pread(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< 1]), at: offset) }
                offset += range
            }
            var dax = try measure("dax_rand4k", "DAX rand 4K") { _, deadline throws(Errno) in
                var rng = SplitMix64(seed: 7)
                let small = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< 4096])
                return try loop(until: deadline) { () throws(Errno) in _ = try file.pread(into: small, at: rng.next() % blocks * 4096) }
            }
            dax.bytesPerOperation = 4096
            results.measurements.append(dax)
            try step("close data") { () throws(Errno) in try file.close() }
        }

        // The window-size sweep: a client per size over the same connection.
        for share in [100, 50, 25] {
            let ranges = max(1, (size.dataBytes * UInt64(share) / 100 + range - 1) / range)
            guard ranges * range <= window.windowSize else {
                note("window \(share) %: skipped, the window (\(window.windowSize >> 20) MiB) is smaller than \(ranges * range >> 20) MiB")
                continue
            }
            var options = connection.clientOptions(windowSize: ranges * range)
            options.mode = .auto
            let sweeper = try connection.makeClient(on: transport, channel: shared, options: options)
            let file = try step("open data") { () throws(Errno) in try sweeper.open(directory + "/data") }
            let small = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< 4096])
            var warmRng = SplitMix64(seed: 11)
            let warm = monotonicSeconds() + size.seconds / 2
            _ = try step("warm-up") { () throws(Errno) in try loop(until: warm) { () throws(Errno) in _ = try file.pread(into: small, at: warmRng.next() % blocks * 4096) } }
            let before = sweeper.statistics
            var m = try measure("window\(share)_rand4k", "window \(share) % rand 4K") { _, deadline throws(Errno) in
                var rng = SplitMix64(seed: 13)
                return try loop(until: deadline) { () throws(Errno) in _ = try file.pread(into: small, at: rng.next() % blocks * 4096) }
            }
            m.bytesPerOperation = 4096
            results.measurements.append(m)
            var after = sweeper.statistics
            after.mappingsSetUp -= before.mappingsSetUp
            after.reclaimedInline -= before.reclaimedInline
            after.reclaimedInBackground -= before.reclaimedInBackground
            after.windowHits -= before.windowHits
            after.fuseReads -= before.fuseReads
            results.sweepStats["window\(share)"] = after
            try step("close data") { () throws(Errno) in try file.close() }
            sweeper.shutdown()
        }

        // SETUPMAPPING round trips into range 0, free now that every file is closed.
        let raw = FUSEClient(channel: shared)
        let chunks = size.dataBytes / range
        var setups: [Double] = [], removes: [Double] = []
        setups.reserveCapacity(size.mappingRounds)
        removes.reserveCapacity(size.mappingRounds)
        for round in 0 ..< size.mappingRounds + 100 {
            let t0 = monotonicSeconds()
            // A guarded window takes the backend's SHMEM_MAP/UNMAP only over
            // ranges a request has open, so the raw requests open range 0 too.
            try step("SETUPMAPPING") { () throws(Errno) in
                try window.allowingChanges([(0, range)]) { () throws(Errno) in
                    try raw.setupMapping(dataNode, fileOffset: UInt64(round) % chunks * range, windowOffset: 0, length: range, writable: false)
                }
            }
            let t1 = monotonicSeconds()
            try step("REMOVEMAPPING") { () throws(Errno) in
                try window.allowingChanges([(0, range)]) { () throws(Errno) in try raw.removeMapping([RemoveMappingOne(moffset: 0, len: range)]) }
            }
            let t2 = monotonicSeconds()
            if round >= 100 {  // the first hundred warm up
                setups.append((t1 - t0) * 1e6)
                removes.append((t2 - t1) * 1e6)
            }
            try Interruption.check()
        }
        func latency(_ values: [Double]) -> Latency {
            let sorted = values.sorted()
            return Latency(p50: sorted[sorted.count / 2], p99: sorted[min(sorted.count - 1, sorted.count * 99 / 100)])
        }
        results.setup = latency(setups)
        results.remove = latency(removes)
        return results
    }

    /// Creates the data file: sized first (FUSE_SETATTR), then written in
    /// 1 MiB pieces — through the DAX window when the backend has one (the
    /// window's huge-page advice makes the host read the new pages in 2 MiB
    /// folios), as FUSE_WRITE otherwise.
    private func fill(_ client: DaxClient, _ path: String) throws {
        let file = try step("create \(path)") { () throws(Errno) in try client.create(path) }
        try step("truncate \(path)") { () throws(Errno) in try file.truncate(to: size.dataBytes) }
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: HostPage.size)
        defer { chunk.deallocate() }
        for i in 0 ..< chunk.count { chunk[i] = UInt8(truncatingIfNeeded: i &* 131 &+ 7) }
        var offset: UInt64 = 0
        while offset < size.dataBytes {
            let count = Int(min(UInt64(chunk.count), size.dataBytes - offset))
            _ = try step("write \(path)") { () throws(Errno) in try file.pwrite(UnsafeRawBufferPointer(rebasing: chunk[0 ..< count]), at: offset) }
            offset += UInt64(count)
            try Interruption.check()
        }
        try step("close \(path)") { () throws(Errno) in try file.close() }
    }

    /// Runs `body` on `threads` threads at once until the deadline; `body`
    /// returns the operations it did.
    private func measure(_ key: String, _ label: String, threads: Int = 1,
                         _ body: @escaping (Int, Double) throws(Errno) -> Int) throws -> ClientMeasurement {
        // Multi-threaded workloads capture only thread-safe state (the FUSE client, node ids).
        nonisolated(unsafe) let body = body
        try Interruption.check()
        note("\(label)")
        let total = Atomic<Int>(0)
        let failure = Locked<Errno?>(nil)
        let start = cpu.sample()
        let t0 = monotonicSeconds()
        let deadline = t0 + size.seconds
        if threads == 1 {
            do throws(Errno) { total.store(try body(0, deadline), ordering: .relaxed) } catch { failure.withLock { $0 = error } }
        } else {
            var workers: [OSThread] = []
            for index in 0 ..< threads {
                workers.append(try step("start a thread") { () throws(Errno) in
                    try OSThread(name: "bench-\(index)") {
                        do throws(Errno) { total.add(try body(index, deadline), ordering: .relaxed) } catch {
                            failure.withLock { if $0 == nil { $0 = error } }
                        }
                    }
                })
            }
            for worker in workers { worker.join() }
        }
        let t1 = monotonicSeconds()
        let end = cpu.sample()
        if let error = failure.withLock({ $0 }) {
            throw BenchError("\(label): \(error == .notConnected ? "the backend went away (\(error))" : "\(error)")")
        }
        return ClientMeasurement(key: key, label: label, operations: total.load(ordering: .relaxed), wall: t1 - t0,
                                 clientCPU: end.client - start.client,
                                 backendCPU: start.backend.flatMap { s in end.backend.map { $0 - s } })
    }
}

/// Calls `body` until the monotonic clock passes `deadline` (checked every
/// 16 calls); returns the number of calls.
@inline(__always)
private func loop(until deadline: Double, _ body: () throws(Errno) -> Void) throws(Errno) -> Int {
    var count = 0
    while true {
        for _ in 0 ..< 16 { try body() }
        count += 16
        if monotonicSeconds() >= deadline || Interruption.requested { return count }
    }
}

/// Runs a client call, prefixing what failed to its errno.
private func step<T>(_ what: @autoclosure () -> String, _ body: () throws(Errno) -> T) throws -> T {
    do throws(Errno) {
        return try body()
    } catch where error == .notConnected {
        throw BenchError("\(what()): the backend went away (\(error))")
    } catch {
        throw BenchError("\(what()): \(error)")
    }
}
