import Foundation
import Glibc
import HostSystem
import Testing

// Integration tests against the real Linux FUSE client: each test runs its
// own `daxfs mount` of a fresh host directory and talks to the kernel through
// ordinary syscalls.

/// Whether daxfs serves regular files with kernel passthrough.
enum Mode: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case passthrough
    case noPassthrough

    var arguments: [String] { self == .passthrough ? [] : ["--no-passthrough"] }
    var testDescription: String { rawValue }
}

enum MountEnvironment {
    /// Why mount tests cannot run here, or nil. CI runs them as root.
    static let skipReason: String? = {
        if geteuid() != 0 { return "mount tests need root (running as uid \(geteuid()))" }
        if access("/dev/fuse", R_OK | W_OK) != 0 { return "mount tests need /dev/fuse, which is absent or not usable" }
        return nil
    }()

    /// Whether mount tests run; says why once when they are skipped.
    static let canMount: Bool = {
        if let skipReason { print("skipping the mount tests: \(skipReason)") }
        return skipReason == nil
    }()

    /// `$DAXFS_BIN`, else `daxfs` next to the test runner in the build products.
    static let daxfsBinary: String = {
        if let path = ProcessInfo.processInfo.environment["DAXFS_BIN"], !path.isEmpty { return path }
        let runner = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: runner).deletingLastPathComponent().appendingPathComponent("daxfs").path
    }()
}

/// Failures inside the harness itself.
struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Polls `condition` every few milliseconds until it holds or `seconds` pass.
func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() {
        if Date() > deadline { return false }
        usleep(10_000)
    }
    return true
}

// MARK: - Scratch directories

/// A fresh directory under /tmp for one test (ext4 there delays inode reuse,
/// so nothing is shared between tests or runs).
final class ScratchDirectory {
    let path: String

    init(_ label: String) throws {
        var template = Array("/tmp/daxfs-\(label)-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw HarnessError("mkdtemp: \(errnoName(errno))") }
        path = String(cString: made)
    }

    func make(_ name: String) throws -> String {
        let child = path + "/" + name
        guard mkdir(child, 0o755) == 0 else { throw HarnessError("mkdir \(child): \(errnoName(errno))") }
        return child
    }

    /// Removes the tree; refuses while anything below is still mounted.
    func remove() {
        if MountTable.entries().contains(where: { $0.mountpoint.hasPrefix(path + "/") }) {
            Issue.record("left \(path) in place: something below it is still mounted")
            return
        }
        try? FileManager.default.removeItem(atPath: path)
    }
}

// MARK: - /proc/self/mountinfo

struct MountTable {
    struct Entry {
        var device: String      // "major:minor"
        var mountpoint: String
        var fstype: String
        var source: String
    }

    static func entries() -> [Entry] {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
            let halves = line.components(separatedBy: " - ")
            guard halves.count >= 2 else { return nil }
            let left = halves[0].split(separator: " ")
            let right = halves[1].split(separator: " ")
            guard left.count >= 5, right.count >= 2 else { return nil }
            return Entry(device: String(left[2]), mountpoint: unescape(String(left[4])),
                         fstype: String(right[0]), source: unescape(String(right[1])))
        }
    }

    static func entry(at mountpoint: String) -> Entry? {
        entries().last { $0.mountpoint == mountpoint }
    }

    static func isDaxfsMounted(at mountpoint: String) -> Bool {
        entry(at: mountpoint)?.fstype == "fuse.daxfs"
    }

    /// mountinfo writes space, tab, newline and backslash as \ooo.
    private static func unescape(_ field: String) -> String {
        guard field.contains("\\") else { return field }
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3, let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

// MARK: - The daxfs process

/// A running `daxfs mount SHARED MOUNTPOINT`.
final class DaxfsMount {
    let scratch: ScratchDirectory
    /// The host directory being shared.
    let shared: String
    let mountpoint: String
    /// daxfs's stdout and stderr.
    let logPath: String
    let process = Process()
    private var stopped = false
    private var exitChecked = false
    /// Kills daxfs if the test hangs in a FUSE call, so the call fails with
    /// ENOTCONN instead of hanging the whole run.
    private var watchdog: DispatchWorkItem?

    static let readyTimeout = 10.0
    /// Under AddressSanitizer the exit includes LeakSanitizer's heap scan,
    /// which took over 40 s for the model test's mount on a loaded machine.
    static let exitTimeout = 10.0 * Sanitizers.slowdown * Sanitizers.slowdown
    static let hangTimeout = 180.0

    init(_ mode: Mode, extraArguments: [String] = [], label: String = "mount") throws {
        scratch = try ScratchDirectory(label)
        shared = try scratch.make("shared")
        mountpoint = try scratch.make("mnt")
        logPath = scratch.path + "/daxfs.log"
        let binary = MountEnvironment.daxfsBinary
        guard access(binary, X_OK) == 0 else {
            scratch.remove()
            throw HarnessError("no daxfs executable at \(binary) (build it, or set DAXFS_BIN)")
        }
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        let arguments = ["mount", shared, mountpoint] + mode.arguments + extraArguments
        if let setpriv = which("setpriv") {
            // If the test runner dies, daxfs gets SIGTERM and unmounts instead of lingering.
            process.executableURL = URL(fileURLWithPath: setpriv)
            process.arguments = ["--pdeathsig", "TERM", binary] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = arguments
        }
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            scratch.remove()
            throw HarnessError("cannot start \(binary): \(error)")
        }
        try? log.close()

        let ready = waitUntil(seconds: Self.readyTimeout) {
            !process.isRunning || MountTable.isDaxfsMounted(at: mountpoint)
        }
        guard ready, process.isRunning else {
            let why = process.isRunning ? "not mounted after \(Self.readyTimeout) s" : "exited with status \(process.terminationStatus) before mounting"
            let text = output
            cleanUpAfterFailure()
            throw HarnessError("daxfs \(arguments.joined(separator: " ")): \(why)\n--- daxfs output ---\n\(text)")
        }
        let pid = process.processIdentifier
        let watchdog = DispatchWorkItem {
            FileHandle.standardError.write(Data("daxfs test still running after \(Int(DaxfsMount.hangTimeout)) s: killing daxfs \(pid) to abort the FUSE connection\n".utf8))
            kill(pid, SIGKILL)
        }
        self.watchdog = watchdog
        DispatchQueue.global().asyncAfter(deadline: .now() + Self.hangTimeout, execute: watchdog)
    }

    /// daxfs's output so far.
    /// Decoded leniently: one stray byte must not hide the whole log.
    var output: String { String(decoding: FileManager.default.contents(atPath: logPath) ?? Data(), as: UTF8.self) }

    /// Path of `name` inside the mount, and of the same file on the host.
    func mnt(_ name: String) -> String { mountpoint + "/" + name }
    func host(_ name: String) -> String { shared + "/" + name }

    /// A fresh host directory next to the share, for reference runs.
    func hostScratch(_ name: String) throws -> String { try scratch.make(name) }

    /// SIGTERM, then expects exit status 0 within 10 s and the mount gone.
    func stop(sourceLocation: SourceLocation = #_sourceLocation) {
        guard !stopped else { return }
        stopped = true
        watchdog?.cancel()
        if !exitChecked {
            if process.isRunning { kill(process.processIdentifier, SIGTERM) }
            waitForExit(sourceLocation: sourceLocation)
        }
        #expect(!MountTable.isDaxfsMounted(at: mountpoint), "\(mountpoint) still mounted after daxfs exited", sourceLocation: sourceLocation)
        cleanUpAfterFailure()
    }

    /// Waits for daxfs to exit by itself (after `umount`, say) and checks status 0.
    func waitForExit(sourceLocation: SourceLocation = #_sourceLocation) {
        exitChecked = true
        watchdog?.cancel()
        let exited = waitUntil(seconds: Self.exitTimeout) { !process.isRunning }
        if !exited {
            Issue.record("daxfs did not exit within \(Self.exitTimeout) s\n--- daxfs output ---\n\(output)", sourceLocation: sourceLocation)
            kill(process.processIdentifier, SIGKILL)
            _ = waitUntil(seconds: Self.exitTimeout) { !process.isRunning }
            return
        }
        #expect(process.terminationReason == .exit && process.terminationStatus == 0,
                "daxfs ended with \(process.terminationReason == .exit ? "status" : "signal") \(process.terminationStatus)\n--- daxfs output ---\n\(output)",
                sourceLocation: sourceLocation)
    }

    /// Makes sure nothing stays mounted or running, then removes the scratch tree.
    private func cleanUpAfterFailure() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            _ = waitUntil(seconds: Self.exitTimeout) { !process.isRunning }
        }
        if MountTable.entry(at: mountpoint) != nil { _ = umount2(mountpoint, Int32(MNT_DETACH)) }
        scratch.remove()
    }

    deinit { if !stopped { stop() } }
}

/// Mounts a fresh share, runs `body`, then unmounts with SIGTERM and checks
/// that daxfs exited 0.
func withMount<R>(_ mode: Mode, arguments: [String] = [], label: String = "mount",
                  sourceLocation: SourceLocation = #_sourceLocation, _ body: (DaxfsMount) throws -> R) throws -> R {
    let mount = try DaxfsMount(mode, extraArguments: arguments, label: label)
    defer { mount.stop(sourceLocation: sourceLocation) }
    return try body(mount)
}

// MARK: - Other processes

struct ProcessResult {
    var status: Int32
    var exitedNormally: Bool
    var output: String
}

/// Runs a command to completion, capturing stdout and stderr together
/// (`ChildProcess`: output in a file, killed at the timeout).
@discardableResult
func run(_ executable: String, _ arguments: [String], timeout: Double = 120) throws -> ProcessResult {
    let outcome = try ChildProcess.run(executable, arguments, timeout: timeout, mergeOutput: true)
    if outcome.timedOut {
        throw HarnessError("\(executable) \(arguments.joined(separator: " ")) did not finish in \(timeout) s: \(outcome.stdout.suffix(2000))")
    }
    return ProcessResult(status: outcome.status, exitedNormally: outcome.status < 128, output: outcome.stdout)
}

/// The full path of `name` in PATH, or nil.
func which(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for directory in path.split(separator: ":") where access("\(directory)/\(name)", X_OK) == 0 {
        return "\(directory)/\(name)"
    }
    return nil
}
