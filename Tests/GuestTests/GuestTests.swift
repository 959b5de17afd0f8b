import Foundation
import HostSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real Linux guest under QEMU (TCG) mounts a vhost-user-fs backend and runs
/// scripts/guest/check.sh against it. Debian's C virtiofsd is the control;
/// `daxfs serve` must pass the same checks. On QEMU 11.1 (a Debian sid chroot
/// from scripts/guest/sid-chroot.sh) the Rust virtiofsd 1.14 is the control,
/// and `daxfs serve` with a DAX window on QEMU's generic vhost-user device runs
/// scripts/guest/check-dax.sh under `-o dax=always`. The script does the
/// booting, timeouts and cleanup; this suite runs it per backend and reads its
/// RESULT lines.
@Suite(.serialized)
struct GuestTests {
    enum Backend: String, CaseIterable, CustomTestStringConvertible, Sendable {
        /// Debian's C virtiofsd, the control.
        case virtiofsd
        /// `daxfs serve` as QEMU uses it by default.
        case daxfs
        /// `daxfs serve` with worker threads and two request queues (a 6.1
        /// guest sets up every queue but sends requests on the first only).
        case daxfsThreadPool = "daxfs-thread-pool"
        /// `daxfs serve` behind QEMU 11.1 (sid chroot) and vhost-user-fs-pci.
        case daxfsQemu11 = "daxfs-qemu11"
        /// The Rust virtiofsd 1.14 from the sid chroot (run inside it), the
        /// control on QEMU 11.1.
        case virtiofsdRustQemu11 = "virtiofsd-rust-qemu11"
        /// `daxfs serve` with a 32 MiB DAX window on QEMU 11.1's generic
        /// vhost-user-test-device-pci, mounted with dax=always: check-dax.sh.
        case daxfsDax = "daxfs-dax"
        /// The same device while the host truncates and restores a file the
        /// guest reads through DAX (read(2) and MAP_SHARED), 100 times:
        /// check-truncate.sh and host-truncate.py. QEMU must survive.
        case daxfsDaxTruncate = "daxfs-dax-truncate"
        /// `daxfs-virtiofsd` (virtiofsd's command line) in each sandbox:
        /// namespace (the default: pid, mount, network and IPC namespaces,
        /// the share as root; with a tmpfs mounted inside the share, which
        /// the guest must see as a submount), chroot and none.
        case daxfsVirtiofsdNamespace = "daxfs-virtiofsd-namespace"
        case daxfsVirtiofsdChroot = "daxfs-virtiofsd-chroot"
        case daxfsVirtiofsdNone = "daxfs-virtiofsd-none"
        /// `daxfs-virtiofsd` in the namespace sandbox with a DAX window
        /// (QEMU 11.1, check-dax.sh): no pid namespace then.
        case daxfsVirtiofsdDax = "daxfs-virtiofsd-dax"
        /// `daxfs-virtiofsd --readonly`: every change fails with EROFS in
        /// the guest and the share stays as it was (check-readonly.sh). In
        /// the namespace sandbox the read-only bind mount refuses them, in
        /// the chroot sandbox daxfs itself.
        case daxfsVirtiofsdReadonlyNamespace = "daxfs-virtiofsd-readonly-namespace"
        case daxfsVirtiofsdReadonlyChroot = "daxfs-virtiofsd-readonly-chroot"
        var testDescription: String { rawValue }
        var requestQueues: Int { self == .daxfsThreadPool ? 2 : 1 }
        /// Runs QEMU 11.1 from the sid chroot rather than Debian's 7.2.
        var needsSidChroot: Bool { [.daxfsQemu11, .virtiofsdRustQemu11, .daxfsDax, .daxfsDaxTruncate, .daxfsVirtiofsdDax].contains(self) }
        /// run-guest.sh options beyond the backend command and the timeouts.
        var scriptArguments: [String] {
            var arguments = ["--request-queues", String(requestQueues)]
            if needsSidChroot { arguments += ["--qemu", "sid"] }
            if self == .daxfsDax || self == .daxfsVirtiofsdDax {
                arguments += ["--device", "dax", "--mount-opts", "dax=always", "--check", "check-dax.sh"]
            }
            if self == .daxfsVirtiofsdNamespace { arguments.append("--submount") }
            if self == .daxfsVirtiofsdReadonlyNamespace || self == .daxfsVirtiofsdReadonlyChroot {
                arguments += ["--check", "check-readonly.sh"]
            }
            if self == .daxfsDaxTruncate {
                arguments += ["--device", "dax", "--mount-opts", "dax=always", "--check", "check-truncate.sh"]
            }
            return arguments
        }
        var expectedChecks: [String] {
            switch self {
            case .daxfsDax, .daxfsVirtiofsdDax: GuestTests.expectedDaxChecks
            case .daxfsDaxTruncate: GuestTests.expectedTruncateChecks
            // A tmpfs mounted inside the share appears in the guest as a submount.
            case .daxfsVirtiofsdNamespace: GuestTests.expectedChecks + ["submount"]
            case .daxfsVirtiofsdReadonlyNamespace, .daxfsVirtiofsdReadonlyChroot: GuestTests.expectedReadonlyChecks
            default: GuestTests.expectedChecks
            }
        }
    }

    static let repoRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let runScript = repoRoot.appendingPathComponent("scripts/guest/run-guest.sh").path
    static let virtiofsd = "/usr/lib/qemu/virtiofsd"
    /// Longer than the script's own timeout, which kills QEMU and the backend.
    static let guestTimeout = 600.0
    static let scriptTimeout = guestTimeout + 240

    /// Every check the guest and the script report; a missing one is a failure too.
    /// check-readonly.sh's checks and the host's.
    static let expectedReadonlyChecks = [
        "mount", "ro_read", "ro_readdir", "ro_create", "ro_append", "ro_truncate", "ro_mkdir", "ro_unlink", "ro_rename",
        "ro_chmod", "ro_symlink", "ro_hardlink", "ro_setxattr", "ro_touch", "umount", "guest-finished", "qemu-exit",
        "ro-share-unchanged", "backend-exit",
    ]

    static let expectedChecks = [
        "mount", "create", "write_read", "append", "truncate", "overwrite", "rename", "unlink",
        "mkdir", "readdir", "rmdir", "symlink", "hardlink", "chmod", "xattr",
        "host_file_before_boot", "guest_file_for_host", "big_guest_write", "big_host_read",
        "host_file_live", "fio", "umount", "guest-finished", "qemu-exit", "host-big-sum-matches",
        "guest-big-sum-matches", "host-sees-guest-file", "backend-exit",
    ]

    /// check-dax.sh's checks (a 32 MiB window, so the 64 MiB file is read
    /// through reclaim and REMOVEMAPPING), then the script's host-side ones:
    /// a sha256 per host file the guest read, the guest's 32 MiB write as the
    /// host reads it, the guest's MAP_SHARED store as the host reads it.
    static let expectedDaxChecks = [
        "mount", "window", "statx_dax", "small_reads", "big_read_twice", "overwrite_in_size",
        "extending_writes", "write_32m_fsync", "mmap_write_for_host", "host_write_in_mapping",
        "fio_psync", "fio_mmap", "fio_2jobs", "figure_dax_read", "umount_dax", "mount_nodax",
        "figure_nodax_read", "dmesg_clean", "umount", "guest-finished", "qemu-exit",
        "host-sum-0", "host-sum-1", "host-sum-6", "host-sum-4095", "host-sum-4096", "host-sum-4097",
        "host-sum-2097151", "host-sum-2097153", "host-sum-64m", "guest-32m-sum-matches",
        "host-sees-guest-mmap", "backend-exit",
    ]

    /// check-truncate.sh's readers ran to the end, and host-truncate.py's
    /// cycles all ran with QEMU alive.
    static let expectedTruncateChecks = [
        "mount", "truncate-readers", "umount", "guest-finished", "qemu-exit", "host-truncate", "backend-exit",
    ]

    @Test(arguments: Backend.allCases)
    func guestRunsChecks(backend: Backend) throws {
        // GUEST_BACKENDS=a,b runs only those (names as in the test's arguments).
        if let only = ProcessInfo.processInfo.environment["GUEST_BACKENDS"], !only.isEmpty,
           !only.split(separator: ",").contains(Substring(backend.rawValue)) {
            print("skipping guest test [\(backend.rawValue)]: not in GUEST_BACKENDS")
            return
        }
        if let reason = Self.missingPrerequisite(for: backend) {
            print("skipping guest test [\(backend.rawValue)]: \(reason)")
            return
        }
        var chroot = ""
        if backend.needsSidChroot {
            switch Self.sidChroot() {
            case .success(let path): chroot = path
            case .failure(let error):
                print("skipping guest test [\(backend.rawValue)]: no QEMU 11.1 chroot: \(error)")
                return
            }
        }
        let command = try Self.backendCommand(backend, chroot: chroot)
        let run = try Self.runGuest(backendCommand: command, arguments: backend.scriptArguments)

        let results = Self.parseResults(run.output)
        print("guest [\(backend.rawValue)]: boot-to-poweroff \(run.bootToPoweroff ?? "?") s, exit \(run.status)")
        for line in run.output.split(separator: "\n") where line.hasPrefix("RESULT ") || line.hasPrefix("FIGURE ") {
            print("  [\(backend.rawValue)] \(line)")
        }
        let missing = backend.expectedChecks.filter { results[$0] == nil }
        #expect(missing.isEmpty, "[\(backend.rawValue)] checks that did not report: \(missing.joined(separator: " "))")
        for (name, result) in results.sorted(by: { $0.key < $1.key }) {
            #expect(result.passed, "[\(backend.rawValue)] \(name) failed: \(result.detail)")
        }
        #expect(run.status == 0, "[\(backend.rawValue)] run-guest.sh exited \(run.status):\n\(run.output.suffix(6000))")
    }

    // MARK: - Environment

    static func missingPrerequisite(for backend: Backend) -> String? {
        if getuid() != 0 { return "needs root (vhost-user memfd guest and QEMU)" }
        if !backend.needsSidChroot && which("qemu-system-x86_64") == nil {
            return "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
        }
        // What scripts/guest/build-initramfs.sh copies into the guest, and cpio to pack it.
        for tool in ["fio", "setfattr", "getfattr", "cpio"] where which(tool) == nil {
            return "\(tool) not installed (apt-get install fio attr cpio)"
        }
        if access("/bin/busybox", X_OK) != 0 && which("busybox") == nil { return "busybox not installed (apt-get install busybox-static)" }
        let kernels = (try? FileManager.default.contentsOfDirectory(atPath: "/boot")) ?? []
        if !kernels.contains(where: { $0.hasPrefix("vmlinuz-") }) {
            return "no /boot/vmlinuz-* (apt-get install linux-image-cloud-amd64)"
        }
        if backend == .virtiofsd && access(virtiofsd, X_OK) != 0 { return "\(virtiofsd) missing" }
        if backend == .daxfsDaxTruncate, let release = kernelRelease(), release < (6, 14) {
            return "host kernel \(release.0).\(release.1) has no fanotify pre-content events (Linux 6.14), so host truncations cannot wait for QEMU"
        }
        return nil
    }

    /// The host kernel's (major, minor) version.
    static func kernelRelease() -> (Int, Int)? {
        var names = utsname()
        guard uname(&names) == 0 else { return nil }
        let release = withUnsafeBytes(of: &names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        return parts.count == 2 ? (parts[0], parts[1]) : nil
    }

    /// The backend as a shell command for run-guest.sh ({socket}, {dir},
    /// {chroot_socket}, {chroot_dir} filled in there). `chroot` is the sid
    /// chroot for the backends that need it.
    static func backendCommand(_ backend: Backend, chroot: String = "") throws -> String {
        switch backend {
        case .virtiofsd:
            return "\(virtiofsd) --socket-path={socket} -o source={dir} -o cache=auto -o xattr"
        case .daxfs, .daxfsQemu11:
            return "'\(try daxfsBinary())' serve --socket-path {socket} --shared-dir {dir} --cache auto --xattr"
        case .daxfsThreadPool:
            return "'\(try daxfsBinary())' serve --socket-path {socket} --shared-dir {dir} --xattr --thread-pool-size 2"
        case .virtiofsdRustQemu11:
            // Its glibc is sid's, so it runs inside the chroot (in-chroot.sh mounts
            // /proc and /dev in a private namespace); there it needs the chroot
            // sandbox and no file handles.
            return "'\(inChrootScript)' '\(chroot)' \(sidVirtiofsd) --socket-path={chroot_socket} "
                + "--shared-dir={chroot_dir} --sandbox=chroot --inode-file-handles=never --cache=auto --xattr"
        case .daxfsDax, .daxfsDaxTruncate:
            return "'\(try daxfsBinary())' serve --socket-path {socket} --shared-dir {dir} --cache-size-mib 32 --tag myfs"
        case .daxfsVirtiofsdNamespace, .daxfsVirtiofsdChroot, .daxfsVirtiofsdNone:
            let mode = backend.rawValue.split(separator: "-").last ?? ""
            return "\(sandboxedEnvironment)'\(try daxfsBinary(named: "daxfs-virtiofsd"))' --socket-path={socket} --shared-dir={dir} --sandbox=\(mode) --cache=auto --xattr"
        case .daxfsVirtiofsdReadonlyNamespace, .daxfsVirtiofsdReadonlyChroot:
            let mode = backend.rawValue.split(separator: "-").last ?? ""
            return "\(sandboxedEnvironment)'\(try daxfsBinary(named: "daxfs-virtiofsd"))' --socket-path={socket} --shared-dir={dir} --sandbox=\(mode) --xattr --readonly"
        case .daxfsVirtiofsdDax:
            return "\(sandboxedEnvironment)'\(try daxfsBinary(named: "daxfs-virtiofsd"))' --socket-path={socket} --shared-dir={dir} --cache-size-mib 32 --tag myfs"
        }
    }

    /// `env ASAN_OPTIONS=… ` before a sandboxed daemon when this suite runs
    /// under AddressSanitizer (`Sanitizers.sandboxedAddressSanitizerOptions`).
    static var sandboxedEnvironment: String {
        Sanitizers.address ? "env ASAN_OPTIONS='\(Sanitizers.sandboxedAddressSanitizerOptions)' " : ""
    }

    static let sidChrootScript = repoRoot.appendingPathComponent("scripts/guest/sid-chroot.sh").path
    static let inChrootScript = repoRoot.appendingPathComponent("scripts/guest/in-chroot.sh").path
    /// The Rust virtiofsd's path inside the sid chroot.
    static let sidVirtiofsd = "/usr/libexec/virtiofsd"

    /// The sid chroot with QEMU >= 11.1 (sid-chroot.sh makes it when missing:
    /// debootstrap, a few minutes), or why there is none.
    static func sidChroot() -> Result<String, GuestError> {
        let run: Run
        do {
            run = try runLogged(arguments: [sidChrootScript], timeout: 2400)
        } catch let error as GuestError {
            return .failure(error)
        } catch {
            return .failure(GuestError("\(error)"))
        }
        let lines = run.output.split(separator: "\n").map(String.init)
        guard run.status == 0, let path = lines.last, path.hasPrefix("/") else {
            return .failure(GuestError(lines.suffix(3).joined(separator: " | ")))
        }
        if access("\(path)\(sidVirtiofsd)", X_OK) != 0 {
            print("note: \(path) has no \(sidVirtiofsd); the Rust virtiofsd control will fail")
        }
        return .success(path)
    }

    /// DAXFS_BIN, or the `daxfs` executable beside this test binary (or
    /// another of the package's executables).
    static func daxfsBinary(named name: String = "daxfs") throws -> String {
        if name == "daxfs", let path = ProcessInfo.processInfo.environment["DAXFS_BIN"], !path.isEmpty { return path }
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let candidate = me.deletingLastPathComponent().appendingPathComponent(name).path
        guard access(candidate, X_OK) == 0 else {
            throw GuestError("no daxfs executable at \(candidate); build it or set DAXFS_BIN")
        }
        return candidate
    }

    // MARK: - Running the script

    struct Run {
        var status: Int32
        var output: String
        var bootToPoweroff: String? {
            output.split(separator: "\n").first { $0.hasPrefix("TIME boot-to-poweroff ") }
                .map { String($0.split(separator: " ")[2]) }
        }
    }

    /// Runs run-guest.sh with its output in a file (no pipe to fill up), with a
    /// deadline: on expiry SIGTERM lets the script kill QEMU and the backend,
    /// then SIGKILL follows.
    static func runGuest(backendCommand: String, arguments: [String]) throws -> Run {
        try runLogged(arguments: [runScript, "--backend-cmd", backendCommand] + arguments
                          + ["--timeout", String(Int(guestTimeout))],
                      timeout: scriptTimeout)
    }

    /// Runs a bash script with its output (stdout and stderr) in a file, with
    /// a deadline (SIGTERM, 15 s grace, SIGKILL).
    static func runLogged(arguments: [String], timeout: Double) throws -> Run {
        let logURL = FileManager.default.temporaryDirectory
            .appendingPathComponent("daxfs-guest-test-\(getpid())-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: logURL) }
        let log = try FileHandle(forWritingTo: logURL)
        defer { try? log.close() }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = arguments
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()

        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(200_000) }
        if process.isRunning {
            process.terminate()
            let grace = Date().addingTimeInterval(15)
            while process.isRunning && Date() < grace { usleep(100_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            let output = readLog(logURL)
            let script = URL(fileURLWithPath: arguments.first ?? "script").lastPathComponent
            throw GuestError("\(script) did not finish in \(Int(timeout)) s:\n\(output.suffix(6000))")
        }
        process.waitUntilExit()
        return Run(status: process.terminationStatus, output: readLog(logURL))
    }

    /// The script's log, decoded leniently: a stray byte from the guest console
    /// must not turn the whole log into nothing (it once did: every check
    /// "missing" although the script passed them all).
    static func readLog(_ url: URL) -> String {
        String(decoding: (try? Data(contentsOf: url)) ?? Data(), as: UTF8.self)
    }

    struct CheckResult { var passed: Bool; var detail: String }

    /// `RESULT name PASS|FAIL detail...` lines by name; a repeated name keeps its worst result.
    static func parseResults(_ output: String) -> [String: CheckResult] {
        var results: [String: CheckResult] = [:]
        for line in output.split(separator: "\n") where line.hasPrefix("RESULT ") {
            let words = line.split(separator: " ", maxSplits: 3).map(String.init)
            guard words.count >= 3 else { continue }
            let result = CheckResult(passed: words[2] == "PASS", detail: words.count > 3 ? words[3] : "")
            if results[words[1]]?.passed != false { results[words[1]] = result }
        }
        return results
    }

    static func which(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { access($0, X_OK) == 0 }
    }
}

struct GuestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
