import ArgumentParser
import CLinux
import DaxClient
import FUSEServer
import Glibc
import HostSystem
import PassthroughFS

struct MmapBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mmap",
        abstract: "Time FUSE direct mmap across two processes: mapping a server region, and a server-to-client ring against a pipe.",
        discussion: """
        Starts `daxfs serve` (this binary) on a scratch directory with a private ring \
        file, connects to it as `daxfs client` does (vhost-user, in this process) and \
        measures, in one run:

          map + first touch   DaxFile.mmap of a fresh 2 MiB region (the server makes a \
        memfd, maps it into this process with SHMEM_MAP), one write to each 4 KiB page, \
        then unmap; beside it the same for 2 MiB of anonymous memory in this process
          ring                messages of 64 bytes that the server writes into the \
        region's ring and this process reads (shared memory, both sides polling)
          pipe                the same messages, written by the same server thread to a \
        pipe this process reads (the baseline between the same two processes)

        Each round runs every measurement; the table shows medians. Progress goes to \
        stderr; stdout has only the results.
        """)

    @Flag(help: "Smaller run: 200 mappings and 1,000,000 messages per round, 3 rounds (default: 1,000 mappings, 4,000,000 messages, 5 rounds).")
    var quick = false
    @Flag(help: "After the table, print one JSON object with every figure and ratio as the last line of stdout (default: off).")
    var json = false
    @Option(name: .customLong("dir"), help: ArgumentHelp("Parent of the scratch directory (made fresh, removed afterwards).", valueName: "path"))
    var directory = "/tmp"

    func run() throws {
        Interruption.install()
        let rounds = quick ? 3 : 5, mappings = quick ? 200 : 1_000, messages: UInt64 = quick ? 1_000_000 : 4_000_000
        let scratch = try makeTemporaryDirectory(in: try canonicalPath(directory), prefix: "daxfs-bench-mmap.")
        defer { for path in removeTree(scratch) { note("warning: could not remove \(path)") } }
        try makeDirectory(scratch + "/shared")
        let socket = scratch + "/socket"

        var pipeFDs: [Int32] = [-1, -1]
        guard pipe(&pipeFDs) == 0 else { throw BenchError("pipe: \(Errno(errno))") }
        defer { Glibc.close(pipeFDs[0]) }
        let server = try spawnServer(socket: socket, shared: scratch + "/shared", pipeWriteEnd: pipeFDs[1], log: scratch + "/serve.log")
        Glibc.close(pipeFDs[1])
        defer { stopServer(server) }
        let deadline = monotonicSeconds() + 10
        while access(socket, F_OK) != 0 {
            guard monotonicSeconds() < deadline else { throw BenchError("daxfs serve did not listen on \(socket) within 10 s") }
            usleep(10_000)
        }

        let connection = try ClientConnectionOptions.parse(["--socket-path", socket, "--no-dax"])
        let client = try connection.connect()
        defer { client.shutdown() }
        guard client.usesDirectMmap else { throw BenchError("the server does not offer FUSE direct mmap") }
        let file = try attempt("open bench") { try client.open("bench", flags: O_RDWR) }
        defer { try? file.close() }

        // The same ring file served in this process, to tell the transport's share from the server's.
        try makeDirectory(scratch + "/embedded")
        let localRings = try attempt("ring files") { try RingFiles() }
        try attempt("ring file") { try localRings.add(path: scratch + "/embedded/bench", sharing: .perOpen) }
        let localFS = try attempt("share \(scratch)/embedded") {
            try PassthroughFS(root: scratch + "/embedded", options: PassthroughFS.Options(passthrough: false, ringFiles: localRings))
        }
        var localOptions = DaxClient.Options()
        localOptions.mode = .never
        let localClient = try attempt("embedded client") { try DaxClient.embedded(fileSystem: localFS, options: localOptions, logger: quietLogger()) }
        defer { localClient.shutdown() }
        let localFile = try attempt("open bench (embedded)") { try localClient.open("bench", flags: O_RDWR) }
        defer { try? localFile.close() }

        var samples: [String: [Double]] = [:]
        let regionSize = 2 << 20
        let anonymous = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1)
        defer { anonymous.deallocate() }
        for round in 1 ... rounds {
            try Interruption.check()
            // Map and first touch.
            var mapTimes: [Double] = [], touchTimes: [Double] = [], anonymousTimes: [Double] = [], localTimes: [Double] = []
            for _ in 0 ..< mappings {
                let l0 = monotonicSeconds()
                let local = try attempt("mmap bench (embedded)") { try localFile.mmap(length: regionSize, writable: true) }
                localTimes.append(monotonicSeconds() - l0)
                try attempt("munmap bench (embedded)") { try local.unmap() }
                let t0 = monotonicSeconds()
                let mapping = try attempt("mmap bench") { try file.mmap(length: regionSize, writable: true) }
                let t1 = monotonicSeconds()
                for page in stride(from: 0, to: regionSize, by: HostPage.size) { mapping.pointer.storeBytes(of: 1, toByteOffset: page, as: UInt8.self) }
                let t2 = monotonicSeconds()
                try attempt("munmap bench") { try mapping.unmap() }
                mapTimes.append(t1 - t0)
                touchTimes.append(t2 - t0)
                let a0 = monotonicSeconds()
                let memory = mmap(nil, regionSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
                for page in stride(from: 0, to: regionSize, by: HostPage.size) { memory.storeBytes(of: 1, toByteOffset: page, as: UInt8.self) }
                anonymousTimes.append(monotonicSeconds() - a0)
                munmap(memory, regionSize)
            }
            samples["mmap_us", default: []].append(median(mapTimes) * 1e6)
            samples["mmap_embedded_us", default: []].append(median(localTimes) * 1e6)
            samples["mmap_touch_2m_us", default: []].append(median(touchTimes) * 1e6)
            samples["anonymous_touch_2m_us", default: []].append(median(anonymousTimes) * 1e6)

            // The ring and the pipe, on one mapping of the region.
            let mapping = try attempt("mmap bench") { try file.mmap(length: regionSize, writable: true) }
            let ring = try RingReader(mapping: mapping, pipe: pipeFDs[0])
            let ringSeconds = try ring.receive(messages, mode: 0)
            let pipeSeconds = try ring.receive(messages, mode: 1)
            try attempt("munmap bench") { try mapping.unmap() }
            samples["ring_msgs_per_s", default: []].append(Double(messages) / ringSeconds)
            samples["pipe_msgs_per_s", default: []].append(Double(messages) / pipeSeconds)
            note("round \(round)/\(rounds)  map+touch 2 MiB \(formatted(median(touchTimes) * 1e6, decimals: 1)) µs  ring \(formatted(Double(messages) / ringSeconds / 1e6, decimals: 2)) M msg/s  pipe \(formatted(Double(messages) / pipeSeconds / 1e6, decimals: 2)) M msg/s")
        }

        func m(_ key: String) -> Double { median(samples[key] ?? []) }
        print("median of \(rounds) rounds; \(mappings) mappings of a fresh 2 MiB region and \(messages) messages of 64 bytes per round")
        print(padRight("map a 2 MiB region", 40) + padLeft(formatted(m("mmap_us"), decimals: 1), 10) + " µs")
        print(padRight("  same, server in this process", 40) + padLeft(formatted(m("mmap_embedded_us"), decimals: 1), 10) + " µs")
        print(padRight("map + first touch of every page", 40) + padLeft(formatted(m("mmap_touch_2m_us"), decimals: 1), 10) + " µs")
        print(padRight("  anonymous 2 MiB, touched (baseline)", 40) + padLeft(formatted(m("anonymous_touch_2m_us"), decimals: 1), 10) + " µs")
        print(padRight("server→client ring in the region", 40) + padLeft(formatted(m("ring_msgs_per_s") / 1e6, decimals: 2), 10) + " M msg/s")
        print(padRight("  pipe between the same processes", 40) + padLeft(formatted(m("pipe_msgs_per_s") / 1e6, decimals: 2), 10) + " M msg/s")
        print(padRight("ring / pipe", 40) + padLeft(formatted(m("ring_msgs_per_s") / m("pipe_msgs_per_s"), decimals: 2), 10) + " ×")
        if json {
            let figures = ["mmap_us", "mmap_embedded_us", "mmap_touch_2m_us", "anonymous_touch_2m_us", "ring_msgs_per_s", "pipe_msgs_per_s"].map { ($0, jsonNumber(m($0), decimals: 3)) }
            let ratios = [("ring_vs_pipe", jsonNumber(m("ring_msgs_per_s") / m("pipe_msgs_per_s"), decimals: 3)),
                          ("mmap_touch_vs_anonymous", jsonNumber(m("anonymous_touch_2m_us") / m("mmap_touch_2m_us"), decimals: 3))]
            print("{\"suite\":\"mmap\",\"figures\":\(jsonObject(figures)),\"ratios\":\(jsonObject(ratios)),\"params\":{\"quick\":\(quick),\"rounds\":\(rounds),\"mappings\":\(mappings),\"messages\":\(messages)}}")
        }
    }

    private func spawnServer(socket: String, shared: String, pipeWriteEnd: Int32, log: String) throws -> pid_t {
        let executable = try canonicalPath("/proc/self/exe")
        let arguments = ["daxfs", "serve", "--socket-path", socket, "--shared-dir", shared, "--private-ring-file", "bench",
                         "--mmap-window-mib", "64", "--ring-pipe-fd", "3", "--log-level", "warning"]
        let pid = try spawnLogged(executable, arguments, logPath: log, descriptors: [(pipeWriteEnd, 3)])
        note("started daxfs serve (pid \(pid)) with a private ring file")
        return pid
    }

    private func stopServer(_ pid: pid_t) {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0 ..< 500 {
            if waitpid(pid, &status, WNOHANG) == pid { return }
            usleep(10_000)
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
    }
}

/// The client end of a ring file's message ring (`RingLayout`).
struct RingReader {
    let base: UnsafeMutableRawPointer
    let capacity: UInt64
    let pipe: Int32

    init(mapping: FileMapping, pipe: Int32) throws {
        guard case .region = mapping.kind else { throw BenchError("bench is not a server region (\(mapping.kind))") }
        base = mapping.pointer
        capacity = RingLayout.capacity(regionSize: UInt64(mapping.length))
        self.pipe = pipe
    }

    /// Asks the server for `count` more messages in `mode` (0 ring, 1 pipe),
    /// reads and checks them; returns the seconds it took.
    func receive(_ count: UInt64, mode: UInt64) throws -> Double {
        var next = daxfs_load_acquire_u64(base + RingLayout.consumed)
        let target = next + count
        daxfs_store_release_u64(base + RingLayout.mode, mode)
        let start = monotonicSeconds()
        daxfs_store_release_u64(base + RingLayout.requested, target)
        if mode == 0 {
            var idle = 0
            while next < target {
                let produced = daxfs_load_acquire_u64(base + RingLayout.produced)
                if produced == next {
                    idle += 1
                    if idle & 0xFFFFF == 0 { try Interruption.check() }
                    continue
                }
                while next < produced {
                    let slot = base + RingLayout.slots + Int(next % capacity) * RingLayout.messageSize
                    guard slot.loadUnaligned(as: UInt64.self) == next.littleEndian else { throw BenchError("ring message \(next) is wrong") }
                    next += 1
                }
                daxfs_store_release_u64(base + RingLayout.consumed, next)
            }
        } else {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * RingLayout.messageSize, alignment: 8)
            defer { buffer.deallocate() }
            var pending = 0
            while next < target {
                let got = Glibc.read(pipe, buffer.baseAddress! + pending, buffer.count - pending)
                guard got > 0 else { throw BenchError("the pipe from the server closed") }
                pending += got
                var used = 0
                while pending - used >= RingLayout.messageSize {
                    guard buffer.loadUnaligned(fromByteOffset: used, as: UInt64.self) == next.littleEndian else {
                        throw BenchError("pipe message \(next) is wrong")
                    }
                    next += 1
                    used += RingLayout.messageSize
                }
                if used < pending { buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + used, byteCount: pending - used) }
                pending -= used
            }
            daxfs_store_release_u64(base + RingLayout.consumed, next)
        }
        return monotonicSeconds() - start
    }
}
