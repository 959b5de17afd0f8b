@_spi(Testing) import DaxClient
import DAX
import Foundation
import FUSEServer
import Glibc
import HostSystem
import ServeDaemon
import Testing
import VhostUser

/// `daxfs-virtiofsd` in each sandbox, as a process with a real client: what
/// the kernel reports about the daemon (its root, namespaces), and that the
/// features keep working inside (file I/O, DAX, node reopening by file
/// handle, the caller's credentials, --readonly).
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root"))
struct VirtiofsdSandboxTests {
    static func identity(_ path: String) -> (UInt64, UInt64)? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }

    static let content = pattern(3 << 20, seed: 1)

    static func namespace(_ pid: Int32, _ kind: String) -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/\(kind)")) ?? "?"
    }

    @Test(arguments: Sandbox.Mode.allCases, [false, true])
    func featuresWorkInsideTheSandbox(mode: Sandbox.Mode, dax: Bool) throws {
        let scratch = Scratch()
        // More files than --max-node-fds: nodes get reopened by file handle.
        // 3 MiB each (two DAX ranges), the file's number at 2 MiB + 100.
        let content = Self.content
        for i in 0 ..< 8 {
            writeHost(scratch.file("f\(i)"), content)
            writeHost(scratch.file("f\(i)"), [UInt8(i)], at: (2 << 20) + 100)
        }
        let backend = try BackendProcess.startDropIn(share: scratch.share, socket: scratch.socket("s"),
                                                     arguments: ["--sandbox", mode.rawValue, "--max-node-fds", "4"]
                                                         + (dax ? ["--cache-size-mib", "64"] : []))
        defer { backend.kill() }
        let pidNamespace = mode == .namespace && !dax

        // Through the sandbox: reads and writes (through the window with DAX), every file.
        let connected = try connectClient(backend.socketPath)
        let client = connected.client
        #expect(client.usesWindow == dax)
        for i in 0 ..< 8 {
            let file = try client.open("f\(i)", flags: O_RDWR)
            var expected = Array(content[(2 << 20) ..< (2 << 20) + 8192])
            expected[100] = UInt8(i)
            #expect(try file.read(count: 8192, at: 2 << 20) == expected)
            let bytes = pattern(5000, seed: UInt8(100 + i))
            #expect(try file.write(bytes, at: 4096) == bytes.count)
            try file.close()
            #expect(readHost(scratch.file("f\(i)"), count: 5000, at: 4096) == bytes, "f\(i): write not on the host")
        }
        // Reopened by handle after eviction: the first files again.
        for i in 0 ..< 4 {
            let file = try client.open("f\(i)")
            #expect(try file.read(count: 100, at: 4096) == Array(pattern(5000, seed: UInt8(100 + i)).prefix(100)))
            try file.close()
        }
        let created = try client.create("made-inside")
        #expect(try created.write([1, 2, 3], at: 0) == 3)
        try created.close()
        #expect(readHost(scratch.file("made-inside"), count: 10) == [1, 2, 3])
        // Names cannot leave the share: ".." of the root is the root.
        #expect(throws: Errno.self) { try client.stat("../etc/passwd") }
        // The kernel's view of the daemon (which serves by now).
        let server = backend.serverPid
        #expect((server != backend.pid) == pidNamespace, "server \(server), started \(backend.pid)")
        let root = Self.identity("/proc/\(server)/root/")
        let expectedRoot = Self.identity(mode == .none ? "/" : scratch.share)
        #expect(root != nil && root! == expectedRoot!, "root of \(server) is not \(mode == .none ? "/" : scratch.share)")
        for kind in ["mnt", "net", "ipc"] {
            let separate = Self.namespace(server, kind) != Self.namespace(getpid(), kind)
            #expect(separate == (mode == .namespace), "\(kind) namespace separate: \(separate)")
        }
        #expect((Self.namespace(server, "pid") != Self.namespace(getpid(), "pid")) == pidNamespace)
        let status = Self.status(server)
        #expect(status["Seccomp"] == "2" && status["NoNewPrivs"] == "1", "seccomp: \(status["Seccomp"] ?? "?")")
        if mode != .none {
            // virtiofsd's set and DAC_READ_SEARCH; with DAX also SYS_ADMIN,
            // SYS_PTRACE, and SYS_CHROOT in the chroot sandbox.
            var kept: UInt64 = 0x8800_00df | 1 << 2
            if dax { kept |= 1 << 21 | 1 << 19 | (mode == .chroot ? 1 << 18 : 0) }
            for set in ["CapEff", "CapPrm", "CapBnd"] {
                #expect(UInt64(status[set] ?? "", radix: 16) == kept, "\(set) \(status[set] ?? "?"), expected \(String(kept, radix: 16))")
            }
            #expect(UInt64(status["CapInh"] ?? "", radix: 16) == 0 && UInt64(status["CapAmb"] ?? "", radix: 16) == 0)
        }

        client.shutdown()
    }

    /// The fields of /proc/PID/status.
    static func status(_ pid: Int32) -> [String: String] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        return fields
    }

    /// A syscall outside the allowlist (acct, made once the filter is in
    /// when DAXFS_TEST_FORBIDDEN_SYSCALL is set) gets --seccomp's action:
    /// kill ends the daemon with SIGSYS; trap fails the call with ENOSYS and
    /// says so; log lets it through (EPERM: CAP_SYS_PACCT is dropped); the
    /// last two keep serving. With none there is no filter (and no trigger).
    @Test(arguments: ["kill", "trap", "log", "none"])
    func aSyscallOutsideTheAllowlistGetsTheChosenAction(action: String) throws {
        let scratch = Scratch()
        writeHost(scratch.file("f"), [7, 7, 7])
        let log = scratch.path + "/daemon.log"
        let backend = try BackendProcess.startDropIn(share: scratch.share, socket: scratch.socket("s"),
                                                     arguments: ["--sandbox", "chroot", "--seccomp", action, "--log-level", "warn"],
                                                     environment: ["DAXFS_TEST_FORBIDDEN_SYSCALL": "1"], log: log)
        defer { backend.kill() }
        if action == "kill" {
            for _ in 0 ..< 500 where backend.process.isRunning { usleep(10_000) }
            #expect(!backend.process.isRunning, "the daemon survived a forbidden syscall")
            #expect(backend.process.terminationReason == .uncaughtSignal && backend.process.terminationStatus == SIGSYS,
                    "ended with \(backend.process.terminationStatus)")
            return
        }
        let client = try connectClient(backend.socketPath).client
        #expect(Self.status(backend.pid)["Seccomp"] == (action == "none" ? "0" : "2"))
        let file = try client.open("f")
        #expect(try file.read(count: 3, at: 0) == [7, 7, 7])
        try file.close()
        client.shutdown()
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        switch action {
        case "trap": #expect(text.contains("acct(2) returned -1, errno \(ENOSYS)"), "log: \(text)")
        case "log": #expect(text.contains("acct(2) returned -1, errno \(EPERM)"), "log: \(text)")
        default: #expect(!text.contains("acct"), "no filter, no trigger: \(text)")
        }
    }

    /// FUSE direct mmap inside each sandbox: a ring file's mmap is a region
    /// of the daemon's memory whose counter keeps ticking (the ring files
    /// are set up before the sandbox; their ticking thread runs inside).
    @Test(arguments: Sandbox.Mode.allCases)
    func ringFilesMapInsideTheSandbox(mode: Sandbox.Mode) throws {
        let scratch = Scratch()
        let backend = try BackendProcess.startDropIn(share: scratch.share, socket: scratch.socket("s"),
                                                     arguments: ["--sandbox", mode.rawValue, "--ring-file", "ring", "--ring-tick-ms", "20"])
        defer { backend.kill() }
        let mmapMade = Locked<LocalWindow?>(nil)
        let frontend = try VhostUserFrontend(socketPath: backend.socketPath, makeWindow: { size throws(Errno) in
            try LocalWindow(size: size, guarded: true)
        }, makeMmapWindow: { size throws(Errno) in
            let window = try LocalWindow(size: size, guarded: true)
            mmapMade.withLock { $0 = window }
            return window
        })
        let mmapWindow = try #require(mmapMade.withLock { $0 } as LocalWindow?, "\(mode): no direct mmap window offered")
        let client = try DaxClient(channel: try VirtioChannel(frontend: frontend), window: nil, mmapWindow: mmapWindow)
        #expect(client.usesDirectMmap)
        let file = try client.open("ring")
        let mapping = try file.mmap(length: 64)
        guard case .region = mapping.kind else {
            Issue.record("\(mode): the ring file was not mapped as a server region: \(mapping.kind)")
            return
        }
        func text() -> String { String(decoding: UnsafeRawBufferPointer(mapping.bytes).prefix { $0 != 0 }, as: UTF8.self) }
        let first = text()
        var later = first
        for _ in 0 ..< 200 where later == first { usleep(10_000); later = text() }
        #expect(first.hasPrefix("daxfs ring ring: region") && later != first, "\(mode): counter \(first) → \(later)")
        try mapping.unmap()
        try file.close()
        client.shutdown()
    }

    /// With --readonly every change is EROFS, in each sandbox; reads work.
    @Test(arguments: Sandbox.Mode.allCases)
    func readOnlyRefusesEveryChange(mode: Sandbox.Mode) throws {
        let scratch = Scratch()
        writeHost(scratch.file("kept"), pattern(10_000, seed: 3))
        let backend = try BackendProcess.startDropIn(share: scratch.share, socket: scratch.socket("s"),
                                                     arguments: ["--sandbox", mode.rawValue, "--readonly"])
        defer { backend.kill() }
        let client = try connectClient(backend.socketPath).client
        let file = try client.open("kept")
        #expect(try file.read(count: 10_000, at: 0) == pattern(10_000, seed: 3))
        try file.close()
        for (what, attempt) in [
            ("open for writing", { () throws(Errno) in _ = try client.open("kept", flags: O_RDWR) }),
            ("create", { () throws(Errno) in _ = try client.create("new") }),
            ("mkdir", { () throws(Errno) in try client.mkdir("dir") }),
            ("unlink", { () throws(Errno) in try client.unlink("kept") }),
        ] as [(String, () throws(Errno) -> Void)] {
            do throws(Errno) {
                try attempt()
                Issue.record("\(mode): \(what) succeeded on a read-only share")
            } catch {
                #expect(error == .readOnlyFileSystem, "\(mode): \(what) gave \(error)")
            }
        }
        #expect(readHost(scratch.file("kept"), count: 10_000) == pattern(10_000, seed: 3))
        #expect(access(scratch.file("new"), F_OK) != 0 && access(scratch.file("dir"), F_OK) != 0)
        client.shutdown()
    }

    /// SIGTERM ends the daemon (both processes of a pid-namespace sandbox)
    /// within two seconds, and the socket is removed.
    @Test(arguments: Sandbox.Mode.allCases)
    func sigtermEndsTheDaemon(mode: Sandbox.Mode) throws {
        let scratch = Scratch()
        let backend = try BackendProcess.startDropIn(share: scratch.share, socket: scratch.socket("s"),
                                                     arguments: ["--sandbox", mode.rawValue])
        // In the namespace sandbox the server is forked after the socket is made.
        for _ in 0 ..< 200 where mode == .namespace && backend.serverPid == backend.pid { usleep(10_000) }
        let server = backend.serverPid
        #expect((server != backend.pid) == (mode == .namespace))
        let started = Date()
        kill(backend.pid, SIGTERM)
        backend.process.waitUntilExit()
        #expect(Date().timeIntervalSince(started) < 2, "took \(Date().timeIntervalSince(started)) s")
        #expect(backend.process.terminationReason == .exit && backend.process.terminationStatus == 0)
        #expect(kill(server, 0) != 0, "the server \(server) outlived its parent")
        #expect(access(scratch.socket("s"), F_OK) != 0, "the socket is left behind")
    }
}
