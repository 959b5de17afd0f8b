import Glibc
import HostSystem

/// Where a workload runs: on the host directory itself, or through a daxfs
/// mount of it with or without kernel passthrough.
enum BenchConfig: CaseIterable {
    case native, passthrough, noPassthrough

    var title: String {
        switch self {
        case .native: "native"
        case .passthrough: "passthrough"
        case .noPassthrough: "no passthrough"
        }
    }

    /// Prefix of this configuration's figures in the JSON.
    var figurePrefix: String {
        switch self {
        case .native: "native"
        case .passthrough: "passthrough"
        case .noPassthrough: "fuse"
        }
    }

    /// Prefix of this configuration's ratios to native in the JSON.
    var ratioPrefix: String {
        switch self {
        case .native: "native"
        case .passthrough: "passthrough"
        case .noPassthrough: "nopassthrough"
        }
    }

    /// Extra `daxfs mount` arguments; nil for the host directory.
    var mountArguments: [String]? {
        switch self {
        case .native: nil
        case .passthrough: []
        case .noPassthrough: ["--no-passthrough"]
        }
    }
}

/// One reported figure. Every figure is a rate, so higher is better and a
/// ratio to native above 1 means faster than the host directory.
enum BenchMetric: CaseIterable {
    case seqRead, seqWrite, seqOverwrite, write4k, rand4kRead, createStatUnlink, create, stat, unlink
    /// Diagnostics of the machine state after each create phase (see `measureMetadata`).
    case statAfterCreate, syscallAfterCreate

    var label: String {
        switch self {
        case .seqRead: "sequential read, MB/s"
        case .seqWrite: "sequential write, MB/s"
        case .seqOverwrite: "sequential overwrite, MB/s"
        case .write4k: "4 KiB buffered write, MB/s"
        case .rand4kRead: "random 4 KiB read, IOPS"
        case .createStatUnlink: "create+stat+unlink, files/s"
        case .create: "  create, files/s"
        case .stat: "  stat, files/s"
        case .unlink: "  unlink, files/s"
        case .statAfterCreate: "  stat right after create, files/s"
        case .syscallAfterCreate: "  getppid after create, calls/s"
        }
    }

    var figureKey: String {
        switch self {
        case .seqRead: "seq_read_mbps"
        case .seqWrite: "seq_write_mbps"
        case .seqOverwrite: "seq_overwrite_mbps"
        case .write4k: "write4k_mbps"
        case .rand4kRead: "rand4k_read_iops"
        case .createStatUnlink: "create_stat_unlink_ops"
        case .create: "create_ops"
        case .stat: "stat_ops"
        case .unlink: "unlink_ops"
        case .statAfterCreate: "stat_after_create_ops"
        case .syscallAfterCreate: "getppid_after_create_ops"
        }
    }

    var ratioKey: String {
        switch self {
        case .seqRead: "seq_read"
        case .seqWrite: "seq_write"
        case .seqOverwrite: "seq_overwrite"
        case .write4k: "write4k"
        case .rand4kRead: "rand4k"
        case .createStatUnlink: "create_stat_unlink"
        case .create: "create"
        case .stat: "stat"
        case .unlink: "unlink"
        case .statAfterCreate: "stat_after_create"
        case .syscallAfterCreate: "getppid_after_create"
        }
    }

    /// The client CPU share is reported for the four workloads, not the phases.
    var cpuKey: String? {
        switch self {
        case .seqRead: "seq_read_cpu_pct"
        case .seqWrite: "seq_write_cpu_pct"
        case .seqOverwrite: "seq_overwrite_cpu_pct"
        case .write4k: "write4k_cpu_pct"
        case .rand4kRead: "rand4k_read_cpu_pct"
        case .createStatUnlink: "create_stat_unlink_cpu_pct"
        case .create, .stat, .unlink, .statAfterCreate, .syscallAfterCreate: nil
        }
    }
}

/// One measurement: a rate and the benchmark process's CPU share meanwhile.
struct BenchSample {
    var value: Double
    var cpuPercent: Double
}

/// `daxfs bench mount`: the same workloads on the host directory and through
/// two daxfs mounts of it, in one run, interleaved round by round.
struct MountBenchSuite {
    struct Size {
        var dataBytes: Int
        /// Size of the file written in 4 KiB write(2)s.
        var smallWriteBytes: Int
        var files: Int
        var rounds: Int
        var randomReadSeconds: Double

        // 10,000 files in both: per-file costs depend on the directory's size.
        static let quick = Size(dataBytes: 256 << 20, smallWriteBytes: 64 << 20, files: 10_000, rounds: 3, randomReadSeconds: 0.5)
        static let full = Size(dataBytes: 1 << 30, smallWriteBytes: 256 << 20, files: 10_000, rounds: 5, randomReadSeconds: 1)
    }

    enum Workload: CaseIterable { case seqRead, seqWrite, write4k, rand4kRead, metadata }

    struct Results {
        var size: Size
        var configs: [BenchConfig]
        var samples: [BenchConfig: [BenchMetric: [BenchSample]]] = [:]
        /// Problems stopping the mounts after all figures were taken.
        var shutdownErrors: [String] = []

        func median(_ config: BenchConfig, _ metric: BenchMetric) -> BenchSample {
            let values = samples[config]?[metric] ?? []
            return BenchSample(value: daxfs.median(values.map(\.value)), cpuPercent: daxfs.median(values.map(\.cpuPercent)))
        }

        func ratio(_ config: BenchConfig, _ metric: BenchMetric) -> Double {
            median(config, metric).value / median(.native, metric).value
        }
    }

    var size: Size
    /// The directory in which the scratch directory is made.
    var parent: String
    /// Which configurations to measure; native always comes first.
    var configs: [BenchConfig] = BenchConfig.allCases

    func run() throws -> Results {
        let executable = try canonicalPath("/proc/self/exe")
        let scratch = try makeTemporaryDirectory(in: try canonicalPath(parent), prefix: "daxfs-bench.")
        note("scratch directory: \(scratch)")
        var mounts: [BenchMountProcess] = []
        let buffer = BenchWorkload.makeBuffer()
        defer {
            buffer.deallocate()
            for mount in mounts { mount.stopQuietly() }
            for path in removeTree(scratch) { note("warning: could not remove \(path)") }
        }

        let shared = scratch + "/shared"
        try makeDirectory(shared)
        note("writing the \(size.dataBytes >> 20) MiB data file")
        try BenchWorkload.writeFile(shared + "/data", bytes: size.dataBytes, buffer: buffer, sync: true)

        var directories: [BenchConfig: String] = [:]
        for config in configs {
            guard let arguments = config.mountArguments else {
                directories[config] = shared
                continue
            }
            let mountpoint = "\(scratch)/mnt-\(config.figurePrefix)"
            try makeDirectory(mountpoint)
            mounts.append(try BenchMountProcess(
                label: config.title, executable: executable, shared: shared, mountpoint: mountpoint,
                extraArguments: arguments, logPath: "\(scratch)/mount-\(config.figurePrefix).log"))
            directories[config] = mountpoint
        }

        // Reads compare cached data: each configuration reads the file once first.
        for config in configs {
            note("warming the page cache through \(config.title)")
            _ = try BenchWorkload.sequentialRead(directories[config]! + "/data", buffer: buffer)
        }

        var results = Results(size: size, configs: configs)
        for round in 0..<size.rounds {
            // Rotate the order each round so no configuration always goes first.
            let order = configs.indices.map { configs[($0 + round) % configs.count] }
            for workload in Workload.allCases {
                if workload == .metadata {
                    for (config, metric, sample) in try measureMetadata(order: order, directories: directories, round: round) {
                        results.samples[config, default: [:]][metric, default: []].append(sample)
                        guard metric == .createStatUnlink || metric == .syscallAfterCreate else { continue }
                        note("round \(round + 1)/\(size.rounds)  \(padRight(config.title, 14)) \(padRight(metric.label, 28)) "
                            + "\(padLeft(formatted(sample.value, decimals: 1), 12))")
                    }
                    continue
                }
                for config in order {
                    if workload == .seqWrite || workload == .write4k {
                        // Twice the size: without passthrough the data is cached twice.
                        let bytes = workload == .seqWrite ? size.dataBytes : size.smallWriteBytes
                        try BenchWorkload.recyclePageCache(shared + "/recycle", bytes: 2 * bytes, buffer: buffer)
                    }
                    let figures = try measure(workload, in: directories[config]!, tag: "\(config.figurePrefix)-\(round)",
                                              seed: UInt64(round + 1), buffer: buffer)
                    for (metric, sample) in figures {
                        results.samples[config, default: [:]][metric, default: []].append(sample)
                        guard metric.cpuKey != nil else { continue }
                        note("round \(round + 1)/\(size.rounds)  \(padRight(config.title, 14)) \(padRight(metric.label, 28)) "
                            + "\(padLeft(formatted(sample.value, decimals: 1), 12))  cpu \(formatted(sample.cpuPercent, decimals: 0))%")
                    }
                }
            }
        }

        for mount in mounts {
            do { try mount.stop() } catch { results.shutdownErrors.append("\(error)") }
        }
        return results
    }

    private func measure(_ workload: Workload, in directory: String, tag: String, seed: UInt64,
                         buffer: UnsafeMutableRawBufferPointer) throws -> [(BenchMetric, BenchSample)] {
        func rate(_ amount: Double, _ span: Span) -> BenchSample {
            BenchSample(value: amount / span.wall, cpuPercent: span.cpuPercent)
        }
        switch workload {
        case .seqRead:
            let (bytes, span) = try BenchWorkload.sequentialRead(directory + "/data", buffer: buffer)
            guard bytes == size.dataBytes else {
                throw BenchError("read \(bytes) bytes of \(directory)/data, expected \(size.dataBytes)")
            }
            return [(.seqRead, rate(Double(bytes) / 1e6, span))]
        case .seqWrite:
            let spans = try BenchWorkload.sequentialWrite(directory + "/write-\(tag)", bytes: size.dataBytes, buffer: buffer)
            let megabytes = Double(size.dataBytes) / 1e6
            return [(.seqWrite, rate(megabytes, spans.write)), (.seqOverwrite, rate(megabytes, spans.overwrite))]
        case .write4k:
            let span = try BenchWorkload.smallWrites(directory + "/write4k-\(tag)", bytes: size.smallWriteBytes, buffer: buffer)
            return [(.write4k, rate(Double(size.smallWriteBytes) / 1e6, span))]
        case .rand4kRead:
            let (reads, span) = try BenchWorkload.randomRead(directory + "/data", fileSize: size.dataBytes,
                                                            seconds: size.randomReadSeconds, seed: seed, buffer: buffer)
            return [(.rand4kRead, rate(Double(reads), span))]
        case .metadata:
            preconditionFailure("the metadata workload runs across configurations: measureMetadata")
        }
    }

    /// Stat passes per configuration and round in the alternating phase.
    static let statPasses = 5
    /// getppid calls timed right after each create phase.
    static let probeCalls = 100_000

    /// The metadata workload of one round, across configurations:
    /// 1. one configuration after the other, in a fresh directory: create
    ///    the files (timed), stat each once at once (`statAfterCreate`),
    ///    time bare getppid calls (`syscallAfterCreate`), unlink (timed);
    /// 2. a fresh set of files in every configuration at once (not timed),
    ///    then stat passes that alternate between the configurations,
    ///    `statPasses` each: a configuration's `stat` is its median pass.
    ///
    /// Why 2: on this machine (a KVM guest) a system call costs a quarter to a half more
    /// for a while after the CPU waited a lot — as in a create phase through
    /// FUSE, which waits for the server 10,000 times — than after it ran
    /// without pause, as in a native create phase; the getppid figure shows
    /// it in every run. A stat pass timed right after its own create phase
    /// therefore compares machine states as much as file systems. Passes
    /// that alternate run native and the mounts in the same state. Creates
    /// and unlinks stay one configuration at a time: ext4 here creates
    /// faster when no unlinks came just before, so their order must not
    /// change between configurations.
    private func measureMetadata(order: [BenchConfig], directories: [BenchConfig: String],
                                 round: Int) throws -> [(BenchConfig, BenchMetric, BenchSample)] {
        let files = Double(size.files)
        func rate(_ amount: Double, _ seconds: Double) -> BenchSample { BenchSample(value: amount / seconds, cpuPercent: 0) }
        var out: [(BenchConfig, BenchMetric, BenchSample)] = []
        for config in order {
            let set = try BenchWorkload.FileSet(in: directories[config]! + "/meta-\(config.figurePrefix)-\(round)", count: size.files)
            let create = try set.create()
            let firstStat = try set.stat()
            let probe = BenchWorkload.bareSystemCalls(Self.probeCalls)
            let unlink = try set.unlink()
            out.append((config, .create, rate(files, create.wall)))
            out.append((config, .statAfterCreate, rate(files, firstStat.wall)))
            out.append((config, .syscallAfterCreate, rate(Double(Self.probeCalls), probe.wall)))
            out.append((config, .unlink, rate(files, unlink.wall)))
            out.append((config, .createStatUnlink, rate(files, create.wall + firstStat.wall + unlink.wall)))
        }

        var sets: [(BenchConfig, BenchWorkload.FileSet)] = []
        defer { for (_, set) in sets { _ = try? set.unlink() } }
        for config in order {
            let set = try BenchWorkload.FileSet(in: directories[config]! + "/stat-\(config.figurePrefix)-\(round)", count: size.files)
            sets.append((config, set))
            _ = try set.create()
        }
        var passes: [BenchConfig: [Double]] = [:]
        for _ in 0..<Self.statPasses {
            for (config, set) in sets { passes[config, default: []].append(try set.stat().wall) }
        }
        for (config, _) in sets { out.append((config, .stat, rate(files, median(passes[config]!)))) }
        return out
    }
}

extension MountBenchSuite.Results {
    /// Medians per configuration, each with its ratio to native and the
    /// benchmark process's CPU share.
    func table() -> String {
        let mounted = configs.filter { $0 != .native }
        var header = padRight("median of \(size.rounds) rounds", 30) + padLeft("native", 12)
        for config in mounted { header += padLeft(config.title, 16) + padLeft("×native", 9) }
        var lines = [header]
        for metric in BenchMetric.allCases {
            var line = padRight(metric.label, 30) + padLeft(formatted(median(.native, metric).value, decimals: 1), 12)
            for config in mounted {
                line += padLeft(formatted(median(config, metric).value, decimals: 1), 16)
                    + padLeft(formatted(ratio(config, metric), decimals: 2), 9)
            }
            lines.append(line)
            guard metric.cpuKey != nil else { continue }
            var cpu = padRight("  client CPU %", 30) + padLeft(formatted(median(.native, metric).cpuPercent, decimals: 0), 12)
            for config in mounted {
                cpu += padLeft(formatted(median(config, metric).cpuPercent, decimals: 0), 16) + padLeft("", 9)
            }
            lines.append(cpu)
        }
        return lines.joined(separator: "\n")
    }

    /// One line: {"suite":"mount","figures":{...},"ratios":{...},"params":{...}}.
    func json(quick: Bool) -> String {
        var figures: [(String, String)] = []
        var ratios: [(String, String)] = []
        for config in configs {
            for metric in BenchMetric.allCases {
                let sample = median(config, metric)
                figures.append(("\(config.figurePrefix)_\(metric.figureKey)", jsonNumber(sample.value, decimals: 1)))
                if let cpuKey = metric.cpuKey {
                    figures.append(("\(config.figurePrefix)_\(cpuKey)", jsonNumber(sample.cpuPercent, decimals: 1)))
                }
                if config != .native {
                    ratios.append(("\(config.ratioPrefix)_\(metric.ratioKey)_vs_native",
                                   jsonNumber(ratio(config, metric), decimals: 3)))
                }
            }
        }
        // Metadata ratios without a prefix are the default mount's (passthrough);
        // `passthrough_write4k_vs_native` comes from the loop above.
        if configs.contains(.passthrough) {
            for metric in [BenchMetric.create, .stat, .unlink] {
                ratios.append(("\(metric.ratioKey)_vs_native", jsonNumber(ratio(.passthrough, metric), decimals: 3)))
            }
        }
        let params: [(String, String)] = [
            ("quick", quick ? "true" : "false"), ("rounds", "\(size.rounds)"),
            ("data_bytes", "\(size.dataBytes)"), ("write4k_bytes", "\(size.smallWriteBytes)"), ("files", "\(size.files)"),
            ("rand4k_seconds", jsonNumber(size.randomReadSeconds, decimals: 2)),
        ]
        return jsonObject([
            ("suite", "\"mount\""), ("figures", jsonObject(figures)),
            ("ratios", jsonObject(ratios)), ("params", jsonObject(params)),
        ])
    }
}
