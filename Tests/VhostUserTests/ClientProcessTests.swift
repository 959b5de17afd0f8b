@_spi(Testing) import DaxClient
import DAX
import Foundation
import FUSEServer
import Glibc
import HostSystem
import Synchronization
import Testing
import VhostUser

/// `daxfs client` across processes: the real `daxfs serve` (DAX on) and
/// Debian's C virtiofsd (no DAX) as backends, the client in this process
/// (and, for the CLI, a child process).

/// A backend process serving `share` on `socket`.
final class BackendProcess: @unchecked Sendable {
    enum Kind: String, CustomStringConvertible, CaseIterable, Sendable {
        case daxfs, virtiofsd
        var description: String { rawValue }
    }

    static let virtiofsd = ProcessInfo.processInfo.environment["VIRTIOFSD"] ?? "/usr/lib/qemu/virtiofsd"

    let process = Process()
    let socketPath: String

    /// nil when the backend is not installed (the reason is printed).
    static func start(_ kind: Kind, share: String, socket: String, arguments: [String] = []) throws -> BackendProcess? {
        let binary = kind == .daxfs ? daxfsBinary() : virtiofsd
        guard access(binary, X_OK) == 0 else {
            print("skipped: no \(kind) at \(binary)\(kind == .virtiofsd ? " (install qemu-system-x86)" : "")")
            return nil
        }
        let args: [String]
        switch kind {
        case .daxfs: args = ["serve", "--socket-path", socket, "--shared-dir", share, "--log-level", "error"] + arguments
        case .virtiofsd: args = ["--socket-path=\(socket)", "-o", "source=\(share)", "-o", "cache=auto", "-o", "sandbox=chroot",
                                 "-o", "log_level=err"] + arguments
        }
        return try BackendProcess(binary, args, socket: socket)
    }

    /// `daxfs-virtiofsd` (beside `daxfs`) with virtiofsd-style `arguments`
    /// after --socket-path and --shared-dir.
    static func startDropIn(share: String, socket: String, arguments: [String],
                            environment: [String: String] = [:], log: String? = nil) throws -> BackendProcess {
        let binary = URL(fileURLWithPath: daxfsBinary()).deletingLastPathComponent().appendingPathComponent("daxfs-virtiofsd").path
        var environment = environment
        if Sanitizers.address { environment["ASAN_OPTIONS"] = Sanitizers.sandboxedAddressSanitizerOptions }
        return try BackendProcess(binary, ["--socket-path=\(socket)", "--shared-dir=\(share)", "--log-level=error"] + arguments,
                                  socket: socket, environment: environment, log: log)
    }

    /// The process that serves: the started one, or in a pid-namespace
    /// sandbox its only child.
    var serverPid: Int32 {
        let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return children.split(separator: " ").first.flatMap { Int32($0) } ?? pid
    }

    private init(_ binary: String, _ arguments: [String], socket: String, environment: [String: String] = [:],
                 log: String? = nil) throws {
        socketPath = socket
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        if let log {
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.standardError = handle
            process.standardOutput = handle
        }
        try process.run()
        for _ in 0 ..< 500 where access(socket, F_OK) != 0 { usleep(10_000) }
        guard access(socket, F_OK) == 0 else { throw Errno.noEntry }
    }

    var pid: Int32 { process.processIdentifier }

    func kill() {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    deinit { kill() }
}

/// A scratch directory with a share/ inside.
final class Scratch {
    let path: String
    init() {
        var template = Array("/tmp/daxfs-client-XXXXXX".utf8CString)
        path = String(cString: mkdtemp(&template)!)
        mkdir(share, 0o755)
    }
    var share: String { path + "/share" }
    func socket(_ name: String) -> String { path + "/" + name + ".sock" }
    func file(_ name: String) -> String { share + "/" + name }
    deinit { _ = system("rm -rf '\(path)'") }
}

/// A client connected over vhost-user with a window of the size the backend asks for.
struct ConnectedClient {
    let client: DaxClient
    let window: LocalWindow?
}

func connectClient(_ socket: String, rangeSize: UInt64 = 2 << 20, mode: DAXMode = .always, pollMicroseconds: Int = 20,
                   mirrorMappings: Bool = false, slots: Int = 8, guarded: Bool = true,
                   configure: (inout DaxClient.Options) -> Void = { _ in }) throws -> ConnectedClient {
    let made = Locked<LocalWindow?>(nil)
    var frontendOptions = VhostUserFrontend.Options()
    frontendOptions.guestMemorySize = 48 << 20
    frontendOptions.mirrorMappingsInMemoryTable = mirrorMappings
    let frontend = try VhostUserFrontend(socketPath: socket, options: frontendOptions) { size throws(Errno) in
        let window = try LocalWindow(size: size, guarded: guarded)
        made.withLock { $0 = window }
        return window
    }
    let channel = try VirtioChannel(frontend: frontend, slots: slots, pollMicroseconds: pollMicroseconds)
    let window = made.withLock { $0 }
    var options = DaxClient.Options()
    options.rangeSize = rangeSize
    options.windowSize = window?.windowSize ?? options.windowSize
    options.mode = mode
    configure(&options)
    return ConnectedClient(client: try DaxClient(channel: channel, window: window, options: options), window: window)
}

func writeHost(_ path: String, _ bytes: [UInt8], at offset: Int = 0) {
    let fd = open(path, O_WRONLY | O_CREAT, 0o644)
    precondition(fd >= 0)
    _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
    close(fd)
}

func readHost(_ path: String, count: Int, at offset: Int = 0) -> [UInt8] {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: count)
    let got = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
    return Array(buffer.prefix(max(0, got)))
}

func pattern(_ count: Int, seed: UInt8) -> [UInt8] { (0 ..< count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) } }

@Suite(.serialized) struct ClientProcessTests {
    /// Host writes are visible through the client at once, and client writes
    /// to the host: through the window with daxfs, through FUSE_READ/WRITE
    /// with the C virtiofsd (which has no DAX).
    @Test(arguments: BackendProcess.Kind.allCases)
    func hostAndClientSeeEachOthersWrites(_ kind: BackendProcess.Kind) throws {
        let scratch = Scratch()
        writeHost(scratch.file("data"), pattern(6 << 20, seed: 1))
        guard let backend = try BackendProcess.start(kind, share: scratch.share, socket: scratch.socket("a"),
                                                     arguments: kind == .daxfs ? ["--cache-size-mib", "64"] : []) else { return }
        defer { backend.kill() }
        let connected = try connectClient(backend.socketPath)
        let client = connected.client
        #expect(client.usesWindow == (kind == .daxfs), "DAX only with daxfs")
        let file = try client.open("data", flags: O_RDWR)
        #expect(try file.read(count: 4096, at: (4 << 20) + 5) == Array(pattern(6 << 20, seed: 1)[(4 << 20) + 5 ..< (4 << 20) + 4101]))

        // Host pwrite, client read: no reopen, no invalidation.
        for round in 0 ..< 20 {
            let offset = (round * 300_007) % ((6 << 20) - 8192)
            let bytes = pattern(5000, seed: UInt8(round))
            writeHost(scratch.file("data"), bytes, at: offset)
            #expect(try file.read(count: 5000, at: UInt64(offset)) == bytes, "round \(round): host write not visible")
        }
        // Client write, host pread.
        for round in 0 ..< 20 {
            let offset = (round * 123_457) % ((6 << 20) - 8192)
            let bytes = pattern(7000, seed: UInt8(100 + round))
            #expect(try file.write(bytes, at: UInt64(offset)) == bytes.count)
            #expect(readHost(scratch.file("data"), count: 7000, at: offset) == bytes, "round \(round): client write not visible to the host")
        }
        // An extending write (FUSE_WRITE in both cases) and a new file.
        let tail = pattern(10_000, seed: 9)
        #expect(try file.write(tail, at: 6 << 20) == tail.count)
        #expect(readHost(scratch.file("data"), count: 10_000, at: 6 << 20) == tail)
        let created = try client.create("new")
        #expect(try created.write(tail, at: 0) == tail.count)
        try created.close()
        #expect(readHost(scratch.file("new"), count: 20_000) == tail)

        let stats = client.statistics
        if kind == .daxfs {
            #expect(stats.mappingsSetUp > 0 && stats.windowHits > 0, "\(stats)")
        } else {
            #expect(stats.mappingsSetUp == 0 && stats.fuseReads > 0 && stats.fuseWrites > 0, "\(stats)")
        }
        try file.close()
        client.shutdown()
    }

    /// Two clients, each with its own backend process on the same directory
    /// (a backend serves one frontend), each with its own window: each sees
    /// the other's window writes at once.
    @Test func twoClientsOnTwoBackendsSeeEachOther() throws {
        let scratch = Scratch()
        writeHost(scratch.file("shared"), pattern(4 << 20, seed: 3))
        guard let backendA = try BackendProcess.start(.daxfs, share: scratch.share, socket: scratch.socket("a"), arguments: ["--cache-size-mib", "32"]),
              let backendB = try BackendProcess.start(.daxfs, share: scratch.share, socket: scratch.socket("b"), arguments: ["--cache-size-mib", "32"])
        else { return }
        defer { backendA.kill(); backendB.kill() }
        let a = try connectClient(backendA.socketPath).client
        let b = try connectClient(backendB.socketPath).client
        let fileA = try a.open("shared", flags: O_RDWR)
        let fileB = try b.open("shared", flags: O_RDWR)
        for round in 0 ..< 50 {
            let offset = UInt64((round * 77_777) % ((4 << 20) - 4096))
            let bytes = pattern(3000, seed: UInt8(round))
            let (writer, reader) = round % 2 == 0 ? (fileA, fileB) : (fileB, fileA)
            #expect(try writer.write(bytes, at: offset) == bytes.count)
            #expect(try reader.read(count: 3000, at: offset) == bytes, "round \(round)")
        }
        #expect(a.statistics.fuseWrites == 0 && b.statistics.fuseWrites == 0, "all writes went through the windows")
        #expect(a.statistics.fuseReads == 0 && b.statistics.fuseReads == 0, "all reads went through the windows")
        try fileA.close()
        try fileB.close()
        a.shutdown()
        b.shutdown()
    }

    /// The host truncates a file under a mapping: reads beyond the new end
    /// are short or EIO, never a crash or a hang; reads before it still work.
    @Test func hostTruncateUnderMapping() throws {
        let scratch = Scratch()
        writeHost(scratch.file("shrinking"), pattern(8 << 20, seed: 5))
        guard let backend = try BackendProcess.start(.daxfs, share: scratch.share, socket: scratch.socket("a"), arguments: ["--cache-size-mib", "32"])
        else { return }
        defer { backend.kill() }
        let client = try connectClient(backend.socketPath).client
        let file = try client.open("shrinking", flags: O_RDWR)
        for chunk in 0 ..< 4 { _ = try file.read(count: 4096, at: UInt64(chunk) << 21) }
        #expect(client.mappedChunks(of: file).count == 4)
        #expect(truncate(scratch.file("shrinking"), 1 << 20) == 0)
        // Inside the new size: still the data.
        #expect(try file.read(count: 4096, at: 4096) == Array(pattern(8 << 20, seed: 5)[4096 ..< 8192]))
        // Beyond it: the mapped pages are gone.
        for offset: UInt64 in [3 << 20, (5 << 20) + 123, (1 << 20) - 100] {
            do {
                let got = try file.read(count: 8192, at: offset)
                let room = offset < 1 << 20 ? Int(UInt64(1 << 20) - offset) : 0
                #expect(got.count <= room, "read at \(offset) returned \(got.count) bytes past the end")
            } catch {
                #expect(error == .io, "read at \(offset): \(error)")
            }
        }
        // A window write beyond the end fails cleanly too.
        do {
            _ = try file.write(pattern(100, seed: 1), at: 6 << 20)
        } catch {
            #expect(error == .io, "\(error)")
        }
        try file.close()
        // Reopened, the file has its new size.
        let again = try client.open("shrinking")
        #expect(try again.size() >= 1 << 20)
        try again.close()
        client.shutdown()
    }

    /// Random reads, writes, truncates, appends and reopens of 20 files
    /// through a 16-range window of a `daxfs serve` process (and with the C
    /// virtiofsd through FUSE I/O), compared with an in-memory model and,
    /// at the end, with the host files. DAX_CLIENT_SEED=<n> replays a run.
    @Test(arguments: BackendProcess.Kind.allCases)
    func randomOperationsMatchTheModel(_ kind: BackendProcess.Kind) throws {
        let seed = ProcessInfo.processInfo.environment["DAX_CLIENT_SEED"].flatMap { UInt64($0) } ?? UInt64(UInt32.random(in: 1 ... .max))
        let scratch = Scratch()
        let rangeSize: UInt64 = 64 << 10
        // daxfs serve offers whole MiB: 1 MiB = 16 ranges of 64 KiB.
        guard let backend = try BackendProcess.start(kind, share: scratch.share, socket: scratch.socket("a"),
                                                     arguments: kind == .daxfs ? ["--cache-size-mib", "1"] : []) else { return }
        defer { backend.kill() }
        let client = try connectClient(backend.socketPath, rangeSize: rangeSize, mode: .always) { $0.admitAfterMisses = 3 }.client
        #expect(client.statistics.ranges == (kind == .daxfs ? 16 : 0))
        var rng = SplitMix(seed: seed)
        var pool = [UInt8](repeating: 0, count: 1 << 20)
        for i in stride(from: 0, to: pool.count, by: 8) { withUnsafeBytes(of: rng.next()) { for k in 0 ..< 8 { pool[i + k] = $0[k] } } }
        let maxSize = 400 << 10
        let names = (0 ..< 20).map { "m\($0)" }
        var files: [DaxFile] = []
        var model: [[UInt8]] = []
        for name in names {
            let file = try client.create(name)
            let size = Int(rng.next() % 300_000)
            let start = Int(rng.next() % UInt64(pool.count - size))
            let content = Array(pool[start ..< start + size])
            _ = try file.write(content, at: 0)
            files.append(file)
            model.append(content)
        }
        var failures: [String] = []
        let steps = 20_000
        let started = Date()
        for step in 0 ..< steps where failures.isEmpty {
            let i = Int(rng.next() % UInt64(files.count))
            let size = model[i].count
            let op = rng.next() % 100
            func random(_ bound: Int) -> Int { Int(rng.next() % UInt64(max(bound, 1))) }
            func length(_ small: Int, _ large: Int) -> Int { random(10) < 8 ? 1 + random(small) : 1 + random(large) }
            do {
                switch op {
                case 0 ..< 40:
                    let offset = random(size + 20_000)
                    let count = length(8192, 200_000)
                    let got = try files[i].read(count: count, at: UInt64(offset))
                    let expected = offset < size ? Array(model[i][offset ..< min(offset + count, size)]) : []
                    if got != expected { failures.append("step \(step): read \(names[i]) [\(offset), +\(count)) of \(size) differs (\(got.count) bytes)") }
                case 40 ..< 72:
                    let offset = random(10) < 7 ? random(max(size, 1)) : size + random(20_000)
                    let count = min(length(8192, 150_000), maxSize - offset)
                    guard count > 0 else { continue }
                    let start = random(pool.count - count)
                    let chunk = Array(pool[start ..< start + count])
                    let wrote = try files[i].write(chunk, at: UInt64(offset))
                    if wrote != count { failures.append("step \(step): write \(names[i]) wrote \(wrote) of \(count)") }
                    if offset + count > model[i].count { model[i] += [UInt8](repeating: 0, count: offset + count - model[i].count) }
                    model[i].replaceSubrange(offset ..< offset + count, with: chunk)
                case 72 ..< 82:
                    let newSize = random(maxSize)
                    try files[i].truncate(to: UInt64(newSize))
                    if newSize < size { model[i].removeSubrange(newSize...) } else { model[i] += [UInt8](repeating: 0, count: newSize - size) }
                case 82 ..< 90:
                    let count = min(1 + random(20_000), maxSize - size)
                    guard count > 0 else { continue }
                    let start = random(pool.count - count)
                    let chunk = Array(pool[start ..< start + count])
                    _ = try files[i].write(chunk, at: UInt64(size))
                    model[i] += chunk
                default:
                    try files[i].close()
                    files[i] = try client.open(names[i], flags: O_RDWR)
                }
            } catch {
                failures.append("step \(step): operation \(op) on \(names[i]) threw \(error)")
            }
            if step % 2000 == 0, case let broken = client.windowInvariantViolations(), !broken.isEmpty {
                failures.append("step \(step): window invariants: \(broken.prefix(3))")
            }
        }
        for failure in failures.prefix(5) { Issue.record(Comment(rawValue: "\(kind), seed \(seed) (replay with DAX_CLIENT_SEED=\(seed)): \(failure)")) }
        for file in files { try file.close() }
        for (i, name) in names.enumerated() where readHost(scratch.file(name), count: maxSize + 1) != model[i] {
            Issue.record(Comment(rawValue: "\(kind), seed \(seed): host file \(name) differs from the model"))
        }
        let stats = client.statistics
        print("client model \(kind), seed \(seed), \(steps) steps in \(Int(Date().timeIntervalSince(started))) s: \(stats)")
        #expect(Date().timeIntervalSince(started) < 60 * Sanitizers.slowdown)
        if kind == .daxfs {
            #expect(stats.freeRanges == stats.ranges, "every range is free once all files are closed")
            #expect(stats.reclaimed > 500 && stats.upgrades > 50, "reclaim and upgrade ran: \(stats)")
        } else {
            #expect(stats.mappingsSetUp == 0)
        }
        client.shutdown()
    }

    /// `daxfs serve` SIGKILLed while a large FUSE_READ loop is in flight:
    /// the reader gets ENOTCONN within seconds, never hangs.
    @Test(arguments: BackendProcess.Kind.allCases)
    func killingTheBackendMidReadFailsTheReader(_ kind: BackendProcess.Kind) throws {
        let scratch = Scratch()
        let fd = open(scratch.file("big"), O_WRONLY | O_CREAT, 0o644)
        ftruncate(fd, 4 << 30)  // sparse: reads are zeros
        close(fd)
        guard let backend = try BackendProcess.start(kind, share: scratch.share, socket: scratch.socket("a")) else { return }
        defer { backend.kill() }
        let client = try connectClient(backend.socketPath, pollMicroseconds: 0).client
        let file = try client.open("big")
        let outcome = Locked<(reads: Int, error: Errno?, done: Bool)>((0, nil, false))
        let reader = try OSThread(name: "big-reader") {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
            defer { buffer.deallocate() }
            var offset: UInt64 = 0
            while true {
                do throws(Errno) {
                    let count = try file.pread(into: buffer, at: offset)
                    offset = count == 0 ? 0 : offset + UInt64(count)
                    outcome.withLock { $0.reads += 1 }
                } catch {
                    outcome.withLock { $0.error = error; $0.done = true }
                    return
                }
            }
        }
        for _ in 0 ..< 500 where outcome.withLock({ $0.reads }) < 20 { usleep(10_000) }
        #expect(outcome.withLock { $0.reads } >= 20, "reads were under way")
        backend.kill()
        let killed = Date()
        while !outcome.withLock({ $0.done }) && Date().timeIntervalSince(killed) < 10 { usleep(10_000) }
        #expect(outcome.withLock { $0.done }, "the reader still hangs 10 s after the backend died")
        if outcome.withLock({ $0.done }) {
            reader.join()
            #expect(outcome.withLock { $0.error } == .notConnected)
            #expect(Date().timeIntervalSince(killed) < 5)
        }
    }

    /// The CLI: `daxfs client --socket-path S cat big` with the backend
    /// killed mid-file exits non-zero within seconds and says why.
    @Test func cliExitsNonZeroWhenTheBackendDies() throws {
        let scratch = Scratch()
        let fd = open(scratch.file("big"), O_WRONLY | O_CREAT, 0o644)
        ftruncate(fd, 16 << 30)
        close(fd)
        guard let backend = try BackendProcess.start(.daxfs, share: scratch.share, socket: scratch.socket("a")) else { return }
        defer { backend.kill() }
        let (status, output, elapsed) = try runClient(["--socket-path", backend.socketPath, "--no-dax", "cat", "big"], killAfter: 0.5, backend: backend)
        #expect(status != 0, "exit status \(status)")
        #expect(elapsed < 5, "took \(elapsed) s")
        #expect(output.contains("went away") || output.contains("not connected"), "stderr: \(output)")
    }

    /// Plain-words errors of the CLI: no backend, and a backend whose
    /// map_alignment (4 MiB) the client's 2 MiB ranges cannot meet.
    @Test func cliErrorsAreInPlainWords() throws {
        let scratch = Scratch()
        let (status, output, _) = try runClient(["--socket-path", scratch.socket("none"), "ls"])
        #expect(status != 0)
        #expect(output.contains("cannot connect to the backend at \(scratch.socket("none"))"), "\(output)")

        writeHost(scratch.file("f"), pattern(100, seed: 1))
        guard let backend = try BackendProcess.start(.daxfs, share: scratch.share, socket: scratch.socket("a"),
                                                     arguments: ["--cache-size-mib", "64", "--map-alignment", "22"]) else { return }
        defer { backend.kill() }
        let (refused, message, _) = try runClient(["--socket-path", backend.socketPath, "cat", "f"])
        #expect(refused != 0)
        #expect(message.contains("backend refused DAX"), "\(message)")
    }

    /// `daxfs client bench --quick --json` against `daxfs serve --cache-size-mib`,
    /// two processes as a user runs them: the DAX rows and the raw
    /// SETUPMAPPING/REMOVEMAPPING latencies are in the JSON (the raw requests
    /// once failed with EIO against the guarded client window).
    @Test func clientBenchAgainstServeReportsDAXFigures() throws {
        let scratch = Scratch()
        guard let backend = try BackendProcess.start(.daxfs, share: scratch.share, socket: scratch.socket("bench"),
                                                     arguments: ["--cache-size-mib", "256"]) else { return }
        defer { backend.kill() }
        let run = try runDaxfs(["client", "--socket-path", backend.socketPath, "bench", "--quick", "--json"], timeout: 300)
        #expect(run.status == 0, "bench exited \(run.status): \(run.stderr.suffix(2000))")
        let last = run.stdout.split(separator: "\n").last.map(String.init) ?? ""
        let object = try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any]
        let figures = object?["figures"] as? [String: Any] ?? [:]
        let params = object?["params"] as? [String: Any] ?? [:]
        #expect(params["dax"] as? Bool == true, "params: \(params)")
        for key in ["dax_rand4k_ops", "window100_rand4k_ops", "setupmapping_p50_us", "removemapping_p50_us", "read4k_ops"] {
            let value = (figures[key] as? NSNumber)?.doubleValue ?? 0
            #expect(value > 0, "\(key) missing or zero in: \(last.prefix(3000))")
        }
        #expect((object?["ratios"] as? [String: Any])?["dax_rand4k_vs_nondax"] != nil)
    }

    /// Windows QEMU cannot register (their total must be a power of two) and
    /// bad tags are refused at start, in words, before any frontend comes.
    @Test func serveRefusesWindowsQEMUWouldAbortOn() throws {
        let scratch = Scratch()
        for (arguments, words) in [(["--cache-size-mib", "48"], "power of two"),
                                   (["--cache-size-mib", "64", "--mmap-window-mib", "32"], "power of two"),
                                   (["--tag", String(repeating: "t", count: 37)], "--tag must be 1 to 36 bytes")] {
            let run = try runDaxfs(["serve", "--socket-path", scratch.socket("bad"), "--shared-dir", scratch.share] + arguments, timeout: 30)
            #expect(run.status != 0, "\(arguments) was accepted")
            #expect(run.stderr.contains(words), "\(arguments): \(run.stderr)")
        }
    }

    /// The CLI copies files in and out through daxfs (window) and the C virtiofsd (FUSE I/O).
    @Test(arguments: BackendProcess.Kind.allCases)
    func cliCopiesInAndOut(_ kind: BackendProcess.Kind) throws {
        let scratch = Scratch()
        let content = pattern((5 << 20) + 1234, seed: 42)
        writeHost(scratch.path + "/in", content)
        for step in [["cp-in", scratch.path + "/in", "copied"], ["cp-out", "copied", scratch.path + "/out"]] {
            // Each backend process serves one client.
            guard let backend = try BackendProcess.start(kind, share: scratch.share, socket: scratch.socket("\(step[0])"),
                                                         arguments: kind == .daxfs ? ["--cache-size-mib", "64"] : []) else { return }
            defer { backend.kill() }
            let (status, output, _) = try runClient(["--socket-path", backend.socketPath] + step)
            #expect(status == 0, "\(step[0]): \(output)")
        }
        #expect(readHost(scratch.file("copied"), count: content.count + 1) == content)
        #expect(readHost(scratch.path + "/out", count: content.count + 1) == content)
    }
}

/// Runs `daxfs client ARGS`; returns its status, its stderr and the seconds
/// it took. With `killAfter`, SIGKILLs `backend` that many seconds in (the
/// seconds are then counted from there); the client gets 10 s more, then
/// the status is -1 and the stderr "hung".
func runClient(_ arguments: [String], killAfter: Double? = nil, backend: BackendProcess? = nil) throws -> (Int32, String, Double) {
    var killed: UInt64 = 0
    let outcome = try ChildProcess.run(daxfsBinary(), ["client"] + arguments, timeout: (killAfter ?? 0) + 10) { pid in
        guard let killAfter, let backend else { return }
        usleep(UInt32(killAfter * 1e6))
        #expect(kill(pid, 0) == 0, "the client finished before the backend was killed")
        backend.kill()
        killed = monotonicNanoseconds()
    }
    let seconds = killed == 0 ? outcome.seconds : Double(monotonicNanoseconds() - killed) / 1e9
    if outcome.timedOut { return (-1, "hung", seconds) }
    return (outcome.status, outcome.stderr, seconds)
}

struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Runs `daxfs ARGS` (`ChildProcess`: output in files, killed after
/// `timeout` seconds; the status is then -1).
func runDaxfs(_ arguments: [String], timeout: Double) throws -> (status: Int32, stdout: String, stderr: String) {
    let outcome = try ChildProcess.run(daxfsBinary(), arguments, timeout: timeout)
    return (outcome.timedOut ? -1 : outcome.status, outcome.stdout, (outcome.timedOut ? "timed out after \(timeout) s\n" : "") + outcome.stderr)
}
