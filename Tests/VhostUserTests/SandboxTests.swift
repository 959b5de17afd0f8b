@_spi(Testing) import DaxClient
import Foundation
import FUSEServer
import Glibc
import HostSystem
import ServeDaemon
import Testing

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

    static func namespace(_ pid: Int32, _ kind: String) -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/\(kind)")) ?? "?"
    }

    @Test(arguments: Sandbox.Mode.allCases, [false, true])
    func featuresWorkInsideTheSandbox(mode: Sandbox.Mode, dax: Bool) throws {
        let scratch = Scratch()
        // More files than --max-node-fds: nodes get reopened by file handle.
        for i in 0 ..< 12 { writeHost(scratch.file("f\(i)"), pattern(3 << 20, seed: UInt8(i))) }
        let backend = try BackendProcess.startDropIn(share: scratch.share, socket: scratch.socket("s"),
                                                     arguments: ["--sandbox", mode.rawValue, "--max-node-fds", "4"]
                                                         + (dax ? ["--cache-size-mib", "64"] : []))
        defer { backend.kill() }
        let pidNamespace = mode == .namespace && !dax

        // Through the sandbox: reads and writes (through the window with DAX), every file.
        let connected = try connectClient(backend.socketPath)
        let client = connected.client
        #expect(client.usesWindow == dax)
        for i in 0 ..< 12 {
            let file = try client.open("f\(i)", flags: O_RDWR)
            #expect(try file.read(count: 8192, at: 2 << 20) == Array(pattern(3 << 20, seed: UInt8(i))[(2 << 20) ..< (2 << 20) + 8192]))
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
