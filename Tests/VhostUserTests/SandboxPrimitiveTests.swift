import CLinux
import Foundation
import Glibc
import HostSystem
import Testing

/// The sandbox primitives daxfs-virtiofsd uses (HostSystem's `Seccomp` and
/// `Capabilities`). A filter and a capability drop cannot be undone, so every
/// check that applies one runs in a child, daxfs-sandbox-probe, which puts
/// itself in the sandbox its arguments describe, does one thing and reports
/// "key value" lines; the test process is never sandboxed.
///
/// Not tested by running: the architecture check. A process cannot make a
/// syscall under another AUDIT_ARCH here (no 32-bit or x32 userland), so the
/// program's first instructions are checked instead: load seccomp_data.arch,
/// compare with this build's arch, kill on a mismatch.
@Suite(.serialized) struct SandboxPrimitiveTests {
    static let probe: String = {
        let runner = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: runner).deletingLastPathComponent().appendingPathComponent("daxfs-sandbox-probe").path
    }()

    static let isRoot = geteuid() == 0

    /// Runs the probe; its stdout lines as a dictionary from the first word to the rest.
    static func run(_ arguments: [String], started: (pid_t) -> Void = { _ in }) throws -> (status: Int32, lines: [String: String], stdout: String, stderr: String) {
        // Under AddressSanitizer the sandboxed probe skips the leak check (its ptrace is refused).
        let outcome = Sanitizers.address
            ? try ChildProcess.run("/usr/bin/env", ["ASAN_OPTIONS=\(Sanitizers.sandboxedAddressSanitizerOptions)", probe] + arguments,
                                   timeout: 30, started: started)
            : try ChildProcess.run(probe, arguments, timeout: 30, started: started)
        var lines: [String: String] = [:]
        for line in outcome.stdout.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            var key = String(parts[0])
            if key.hasSuffix(":") { key.removeLast() }
            lines[key] = parts.count > 1 ? String(parts[1]) : ""
        }
        return (outcome.status, lines, outcome.stdout, outcome.stderr)
    }

    static let sigsys = 128 + SIGSYS

    // MARK: - seccomp

    @Test func theAllowlistHasTheCallsTheServerMakesAndNotTheDangerousOnes() throws {
        let allowed = Set(Seccomp.allowlist)
        #expect(allowed.count == Seccomp.allowlist.count, "duplicates in the allowlist")
        #expect(allowed.contains(Seccomp.number(of: "getpid")!))
        for name in ["acct", "ptrace", "kexec_load", "execve", "seccomp", "personality"] {
            #expect(!allowed.contains(Seccomp.number(of: name)!), "\(name) must not be allowed")
        }
    }

    @Test func theProgramChecksTheArchitectureFirstAndEndsWithTheAction() throws {
        let program = try Seccomp.program(.log)
        // BPF_LD|BPF_W|BPF_ABS of offset 4 (seccomp_data.arch), BPF_JMP|BPF_JEQ|BPF_K
        // with the audit arch skipping a BPF_RET of SECCOMP_RET_KILL_PROCESS.
        #expect(program[0].code == 0x20 && program[0].k == 4)
        #if arch(x86_64)
        let audit: UInt32 = 0xC000_003E
        #else
        let audit: UInt32 = 0xC000_00B7
        #endif
        #expect(program[1].code == 0x15 && program[1].k == audit && program[1].jt == 1 && program[1].jf == 0)
        #expect(program[2].code == 0x06 && program[2].k == 0x8000_0000)
        #expect(program[3].code == 0x20 && program[3].k == 0)
        #expect(program.last!.code == 0x06 && program.last!.k == 0x7FFC_0000, "SECCOMP_RET_LOG for the rest")
        // One comparison per allowed number, each jumping to an allow.
        let compares = program.filter { $0.code == 0x15 && $0.k != audit }
        #expect(compares.count == Seccomp.allowlist.count)
        #expect(try Seccomp.program(.kill).last!.k == 0x8000_0000)
        #expect(try Seccomp.program(.trap).last!.k == 0x0003_0000)
        // An extra number is compared too, a duplicate once, a negative one refused.
        #expect(try Seccomp.program(.kill, extra: [Seccomp.number(of: "acct")!, Seccomp.number(of: "getpid")!]).count
            == program.count + 1)
        #expect(throws: Errno.invalidArgument) { try Seccomp.program(.kill, extra: [-1]) }
    }

    @Test func killEndsTheProcessBySIGSYSAndTheFilterIsInPlaceWhileItRuns() throws {
        let run = try Self.run(["--seccomp", "kill", "forbidden"])
        #expect(run.status == Self.sigsys, "\(run.stdout) \(run.stderr)")
        #expect(run.lines["Seccomp"] == "2")
        #expect(run.lines["Seccomp_filters"] == "1")
        #expect(run.lines["forbidden"] == nil, "the forbidden call returned: \(run.stdout)")
    }

    @Test func killLetsAllowedCallsThrough() throws {
        let run = try Self.run(["--seccomp", "kill", "getpid"])
        #expect(run.status == 0, "\(run.stdout) \(run.stderr)")
        #expect(run.lines["getpid"] != nil && run.lines["getpid"] != String(getpid()))
    }

    @Test func theFilterReachesThreadsStartedBeforeIt() throws {
        let run = try Self.run(["--seccomp", "kill", "tsync"])
        #expect(run.status == 0, "\(run.stdout) \(run.stderr)")
        #expect(run.stdout.contains("early Seccomp: 2\n"), "\(run.stdout)")
        #expect(run.stdout.contains("early Seccomp_filters: 1\n"), "\(run.stdout)")
    }

    @Test func trapDeliversSIGSYSToTheCallerAndTheCallFailsWithENOSYS() throws {
        let run = try Self.run(["--report-traps", "--seccomp", "trap", "forbidden"])
        #expect(run.status == 0, "\(run.stdout) \(run.stderr)")
        #expect(run.lines["forbidden"] == "errno \(ENOSYS)")
        #expect(run.lines["trapped"] == "1 last \(Seccomp.number(of: "acct")!)")
        #expect(run.stderr.contains("daxfs: seccomp blocked syscall \(Seccomp.number(of: "acct")!)"))
        // Without a handler SIGSYS's default action ends the process.
        let unhandled = try Self.run(["--seccomp", "trap", "forbidden"])
        #expect(unhandled.status == Self.sigsys)
    }

    @Test func logLetsTheCallProceed() throws {
        let run = try Self.run(["--seccomp", "log", "forbidden"])
        #expect(run.status == 0, "\(run.stdout) \(run.stderr)")
        #expect(run.lines["Seccomp"] == "2")
        // acct of a missing file: the call ran and failed on the path.
        #expect(run.lines["forbidden"] == "errno \(ENOENT)")
    }

    @Test func noneInstallsNoFilter() throws {
        let run = try Self.run(["--seccomp", "none", "forbidden"])
        #expect(run.status == 0)
        #expect(run.lines["Seccomp"] == "0")
        #expect(run.lines["forbidden"] == "errno \(ENOENT)")
        #expect(try Seccomp.Action.parse("none") == nil)
        #expect(throws: SandboxOptionError.self) { try Seccomp.Action.parse("kil") }
    }

    /// The filter stays on across execve: a program run from a filtered one is
    /// filtered too (no_new_privs set).
    @Test func theFilterSurvivesExec() throws {
        let run = try Self.run(["--seccomp", "log", "exec", Self.probe, "status"])
        #expect(run.status == 0, "\(run.stdout) \(run.stderr)")
        #expect(run.lines["Seccomp"] == "2")
        #expect(run.lines["NoNewPrivs"] == "1")
    }

    // MARK: - capabilities

    @Test func modcapsParsesVirtiofsdSyntax() throws {
        let defaults = CapabilitySet.virtiofsdDefault
        #expect(try Capabilities.parseModcaps("", defaults: defaults) == defaults)
        let changed = try Capabilities.parseModcaps("+sys_admin:-chown", defaults: defaults)
        #expect(changed.contains(.sysAdmin) && !changed.contains(.chown))
        #expect(changed.subtracting(CapabilitySet([.sysAdmin])) == defaults.subtracting(CapabilitySet([.chown])))
        #expect(try Capabilities.parseModcaps("+CAP_SYS_ADMIN:-Cap_Chown", defaults: defaults) == changed)
        #expect(throws: SandboxOptionError.self) { try Capabilities.parseModcaps("+sys_admn", defaults: defaults) }
        #expect(throws: SandboxOptionError.self) { try Capabilities.parseModcaps("chown", defaults: defaults) }
        #expect(throws: SandboxOptionError.self) { try Capabilities.parseModcaps("+chown:", defaults: defaults) }
        do {
            _ = try Capabilities.parseModcaps("+bogus", defaults: defaults)
        } catch {
            #expect(error.description.contains("'bogus' is not a capability name"))
        }
        #expect(CapabilitySet.virtiofsdDefault.description
            == "cap_chown,cap_dac_override,cap_fowner,cap_fsetid,cap_setgid,cap_setuid,cap_mknod,cap_setfcap")
        #expect(CapabilitySet.daxfsDefault == CapabilitySet.virtiofsdDefault.union(CapabilitySet([.dacReadSearch, .sysAdmin])))
        #expect(Capability(name: "checkpoint_restore")?.rawValue == 40)
    }

    /// Hex as /proc/PID/status prints a set.
    static func hex(_ set: CapabilitySet) -> String {
        let digits = String(set.rawValue, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    @Test(.enabled(if: isRoot, "dropping capabilities needs root"))
    func droppingLeavesExactlyTheKeptSet() throws {
        let kept = try Capabilities.parseModcaps("-chown", defaults: .daxfsDefault)
        let run = try Self.run(["--modcaps=-chown", "status"])
        #expect(run.status == 0, "\(run.stdout) \(run.stderr)")
        #expect(run.lines["CapEff"] == Self.hex(kept))
        #expect(run.lines["CapPrm"] == Self.hex(kept))
        #expect(run.lines["CapBnd"] == Self.hex(kept))
        #expect(run.lines["CapInh"] == Self.hex([]))
        #expect(run.lines["CapAmb"] == Self.hex([]))
    }

    @Test(.enabled(if: isRoot, "chown to another uid needs root"))
    func chownFailsWithoutCapChown() throws {
        let directory = try SandboxScratch()
        let file = directory.path + "/owned"
        #expect(creat(file, 0o644) >= 0)
        let without = try Self.run(["--modcaps", "-chown", "chown", file, "65534"])
        #expect(without.lines["chown"] == "errno \(EPERM)", "\(without.stdout)")
        // Control: with the default set the same chown succeeds.
        let with = try Self.run(["--modcaps", "", "chown", file, "65534"])
        #expect(with.lines["chown"] == "ok", "\(with.stdout)")
    }

    /// daxfs acts for a caller by switching the thread's fsuid (and some
    /// servers the euid): while switched, the kernel clears the filesystem
    /// capabilities from the effective set, so root's 0600 file stays shut;
    /// switched back, the kept set is effective again.
    @Test(.enabled(if: isRoot, "switching credentials needs root"))
    func aThreadThatActsAsAnotherUserGetsTheKeptSetBack() throws {
        let directory = try SandboxScratch()
        let secret = directory.path + "/secret"
        let fd = creat(secret, 0o600)
        #expect(fd >= 0)
        close(fd)
        let kept = try Capabilities.parseModcaps("-chown", defaults: .daxfsDefault)
        let keptHex = String(kept.rawValue, radix: 16)
        // CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER, FSETID, LINUX_IMMUTABLE, MAC_OVERRIDE, MKNOD.
        let fileSystemCaps = CapabilitySet(rawValue: 0x1F | 1 << 9 | 1 << 32 | 1 << 27)
        let run = try Self.run(["--modcaps", "-chown", "switch", secret])
        #expect(run.status == 0, "\(run.stdout) \(run.stderr)")
        #expect(run.lines["start"] == "eff \(keptHex) open ok")
        #expect(run.lines["fsuid-65534"] == "eff \(String(kept.subtracting(fileSystemCaps).rawValue, radix: 16)) open errno \(EACCES)")
        #expect(run.lines["fsuid-0"] == "eff \(keptHex) open ok")
        #expect(run.lines["euid-65534"] == "eff 0 open errno \(EACCES)")
        #expect(run.lines["euid-0"] == "eff \(keptHex) open ok")
        #expect(run.lines["main"] == "eff \(keptHex) open ok")
        #expect(run.lines["become"] == nil && run.lines["setresuid"] == nil, "\(run.stdout)")
    }

    @Test(.enabled(if: isRoot, "needs root"))
    func capabilitiesAndFilterTogether() throws {
        let run = try Self.run(["--modcaps=+sys_chroot:-chown", "--seccomp", "kill", "status"])
        #expect(run.status == 0, "\(run.stdout) \(run.stderr)")
        let kept = try Capabilities.parseModcaps("+sys_chroot:-chown", defaults: .daxfsDefault)
        #expect(run.lines["CapEff"] == Self.hex(kept))
        #expect(run.lines["Seccomp"] == "2")
    }
}

/// A scratch directory removed at the end of a test.
private final class SandboxScratch {
    let path: String
    init() throws {
        var template = Array("/tmp/daxfs-sandbox-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw Errno(daxfs_errno()) }
        path = String(cString: template)
    }
    deinit { _ = system("rm -rf '\(path)'") }
}
