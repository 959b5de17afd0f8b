import CLinux
import Glibc

/// daxfs's seccomp filter (Sources/CLinux/seccomp.c): the syscalls daxfs's
/// server processes make are allowed, every other one gets the action, and a
/// call from another architecture's ABI (or x32) kills the process.
///
/// The filter holds for every thread (TSYNC) and for good: it cannot be
/// removed, and it survives execve.
public enum Seccomp {
    /// What happens to a syscall outside the allowlist (virtiofsd's
    /// `--seccomp kill|log|trap`; `none` is not installing a filter).
    public enum Action: String, Sendable, CaseIterable {
        /// The whole process dies of SIGSYS (SECCOMP_RET_KILL_PROCESS).
        case kill
        /// The call proceeds and the kernel logs it (SECCOMP_RET_LOG; the
        /// audit log, or the kernel log as "audit: type=1326 … syscall=N").
        case log
        /// The calling thread gets SIGSYS (SECCOMP_RET_TRAP); the call is not
        /// made. With `reportTraps()` it fails with ENOSYS and a line on stderr.
        case trap

        var code: Int32 {
            switch self {
            case .kill: DAXFS_SECCOMP_KILL
            case .log: DAXFS_SECCOMP_LOG
            case .trap: DAXFS_SECCOMP_TRAP
            }
        }

        /// Parses `--seccomp`: `kill`, `log`, `trap`, or `none` (nil: no filter).
        public static func parse(_ text: String) throws(SandboxOptionError) -> Action? {
            if text == "none" { return nil }
            guard let action = Action(rawValue: text) else {
                throw SandboxOptionError("unknown --seccomp action '\(text)': expected none, kill, log or trap")
            }
            return action
        }
    }

    /// The allowlist: syscall numbers of this build's architecture.
    public static var allowlist: [Int32] {
        var count = 0
        guard let numbers = daxfs_seccomp_allowlist(&count) else { return [] }
        return Array(UnsafeBufferPointer(start: numbers, count: count))
    }

    /// Installs the filter on every thread of this process: no_new_privs,
    /// then the filter with SECCOMP_FILTER_FLAG_TSYNC. `extra` allows more
    /// syscall numbers (a caller that still has to exec, say).
    /// The corresponding C calls are `prctl(PR_SET_NO_NEW_PRIVS)` and
    /// `seccomp(SECCOMP_SET_MODE_FILTER)`. Throws EINVAL for a negative
    /// number, ESRCH when a thread could not take the filter.
    public static func install(_ action: Action, extra: [Int32] = []) throws(Errno) {
        _ = try Syscall.call { extra.withUnsafeBufferPointer { daxfs_seccomp_install(action.code, $0.baseAddress, $0.count) } }
    }

    /// The BPF program `install` would load (`struct sock_filter` words:
    /// code, jt, jf, k), for tests and `--print-filter`-style diagnostics.
    public static func program(_ action: Action, extra: [Int32] = []) throws(Errno) -> [(code: UInt16, jt: UInt8, jf: UInt8, k: UInt32)] {
        var program = [daxfs_bpf_instruction](repeating: daxfs_bpf_instruction(), count: 4096)
        let count = try Syscall.call {
            extra.withUnsafeBufferPointer { extra in
                program.withUnsafeMutableBufferPointer { daxfs_seccomp_build(action.code, extra.baseAddress, extra.count, $0.baseAddress, $0.count) }
            }
        }
        return program[0 ..< Int(count)].map { ($0.code, $0.jt, $0.jf, $0.k) }
    }

    /// For `.trap`: a SIGSYS handler that makes a trapped call fail with
    /// ENOSYS and writes "daxfs: seccomp blocked syscall N" to stderr.
    public static func reportTraps() throws(Errno) {
        _ = try Syscall.call { daxfs_seccomp_report_traps() }
    }

    /// Calls trapped since `reportTraps()`, and the number of the last one.
    public static var trapped: (count: UInt64, last: Int32?) {
        let last = daxfs_seccomp_last_trapped()
        return (daxfs_seccomp_trap_count(), last < 0 ? nil : last)
    }

    /// This build's number of a few syscalls named in tests (getpid, getppid, acct,
    /// ptrace, kexec_load, execve, seccomp, personality), nil for others.
    public static func number(of name: String) -> Int32? {
        let number = daxfs_syscall_number(name)
        return number < 0 ? nil : number
    }
}

/// A sandbox option (`--seccomp`, `--modcaps`) that does not parse, in plain words.
public struct SandboxOptionError: Error, CustomStringConvertible, Sendable, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
