import CLinux
import Glibc

/// One Linux capability (capabilities(7)), by its number.
public struct Capability: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// Names as in capabilities(7) without `CAP_`, lower case, by number.
    static let names = [
        "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
        "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
        "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
        "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
        "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
        "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
    ]

    /// `chown`, `CHOWN`, `cap_chown` and `CAP_CHOWN` all name CAP_CHOWN.
    public init?(name: String) {
        var lower = name.lowercased()
        if lower.hasPrefix("cap_") { lower.removeFirst(4) }
        guard let index = Self.names.firstIndex(of: lower) else { return nil }
        rawValue = Int32(index)
    }

    /// `cap_chown`, or `cap_63` for a number this table does not know.
    public var description: String {
        rawValue >= 0 && Int(rawValue) < Self.names.count ? "cap_" + Self.names[Int(rawValue)] : "cap_\(rawValue)"
    }

    public static let chown = Capability(rawValue: 0)
    public static let dacOverride = Capability(rawValue: 1)
    public static let dacReadSearch = Capability(rawValue: 2)
    public static let fowner = Capability(rawValue: 3)
    public static let fsetid = Capability(rawValue: 4)
    public static let setgid = Capability(rawValue: 6)
    public static let setuid = Capability(rawValue: 7)
    public static let setpcap = Capability(rawValue: 8)
    public static let sysAdmin = Capability(rawValue: 21)
    public static let mknod = Capability(rawValue: 27)
    public static let setfcap = Capability(rawValue: 31)
}

/// A set of capabilities as the kernel keeps it: bit n is capability n.
public struct CapabilitySet: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ capabilities: [Capability]) {
        rawValue = capabilities.reduce(0) { $0 | 1 << UInt64($1.rawValue) }
    }

    public func contains(_ capability: Capability) -> Bool { rawValue & 1 << UInt64(capability.rawValue) != 0 }
    public mutating func insert(_ capability: Capability) { rawValue |= 1 << UInt64(capability.rawValue) }
    public mutating func remove(_ capability: Capability) { rawValue &= ~(1 << UInt64(capability.rawValue)) }

    public var members: [Capability] { (0 ..< 64).map { Capability(rawValue: $0) }.filter { contains($0) } }

    /// `cap_chown,cap_setuid`, or `none`.
    public var description: String { members.isEmpty ? "none" : members.map(\.description).joined(separator: ",") }

    /// virtiofsd's default: what a passthrough server needs to act for any
    /// caller (chown, permission bypass, set-id bits, mknod, file caps).
    public static let virtiofsdDefault = CapabilitySet([
        .chown, .dacOverride, .fowner, .fsetid, .setgid, .setuid, .mknod, .setfcap,
    ])
    /// daxfs's: virtiofsd's, plus DAC_READ_SEARCH for open_by_handle_at (inodes
    /// reopened by file handle) and SYS_ADMIN for the fanotify host watch.
    public static let daxfsDefault = virtiofsdDefault.union(CapabilitySet([.dacReadSearch, .sysAdmin]))
}

/// The process's capabilities: reading them, virtiofsd's `--modcaps`, and
/// dropping all but a kept set.
///
/// Credential switching keeps working with the kept set: daxfs acts for a
/// caller by changing the thread's fsuid/fsgid (`daxfs_become`), and the
/// kernel then clears the filesystem capabilities (CHOWN, DAC_*, FOWNER,
/// FSETID, MKNOD, LINUX_IMMUTABLE, MAC_OVERRIDE) from the effective set and
/// gives them back from the permitted set when fsuid is 0 again
/// (capabilities(7), "Effect of user ID changes on capabilities"). A thread
/// that switches only its euid (raw setresuid, saved uid 0) keeps its
/// permitted set and regains the effective one on the way back. So no
/// securebits are set: SECBIT_NO_SETUID_FIXUP would leave DAC_OVERRIDE
/// effective while the thread acts as an unprivileged caller, which would
/// bypass the very permission checks the switch is for; SECBIT_KEEP_CAPS
/// only matters when all of ruid, euid and suid leave 0, which daxfs never does.
public enum Capabilities {
    /// One thread's sets (capget(2)).
    public struct Sets: Equatable, Sendable {
        public var effective: CapabilitySet
        public var permitted: CapabilitySet
        public var inheritable: CapabilitySet
    }

    /// The calling thread's sets. The corresponding C call is `capget`.
    public static func current() throws(Errno) -> Sets {
        var effective: UInt64 = 0, permitted: UInt64 = 0, inheritable: UInt64 = 0
        _ = try Syscall.call { daxfs_capget(&effective, &permitted, &inheritable) }
        return Sets(effective: CapabilitySet(rawValue: effective), permitted: CapabilitySet(rawValue: permitted),
                    inheritable: CapabilitySet(rawValue: inheritable))
    }

    /// The bounding set (PR_CAPBSET_READ for every capability the kernel knows).
    public static func boundingSet() -> CapabilitySet {
        var set = CapabilitySet()
        for number in Int32(0) ..< 64 {
            let result = daxfs_capbset_read(number)
            if result < 0 { break }  // EINVAL: past the kernel's last capability
            if result == 1 { set.insert(Capability(rawValue: number)) }
        }
        return set
    }

    /// Parses virtiofsd's `--modcaps`: `+name` adds to `defaults`, `-name`
    /// removes, items joined by `:` (`+sys_admin:-chown`). Names are
    /// case-insensitive, with or without `cap_`. An empty string changes nothing.
    public static func parseModcaps(_ text: String, defaults: CapabilitySet) throws(SandboxOptionError) -> CapabilitySet {
        var kept = defaults
        if text.isEmpty { return kept }
        for item in text.split(separator: ":", omittingEmptySubsequences: false) {
            guard let sign = item.first, sign == "+" || sign == "-" else {
                throw SandboxOptionError("--modcaps item '\(item)' must start with + (keep) or - (drop), as in +sys_admin:-chown")
            }
            let name = String(item.dropFirst())
            guard let capability = Capability(name: name) else {
                throw SandboxOptionError("--modcaps: '\(name)' is not a capability name (see capabilities(7): chown, dac_override, sys_admin, …)")
            }
            if sign == "+" { kept.insert(capability) } else { kept.remove(capability) }
        }
        return kept
    }

    /// Drops every capability but `kept`: from the bounding set
    /// (PR_CAPBSET_DROP, which needs CAP_SETPCAP, so first), the ambient set,
    /// and the permitted, effective and inheritable sets (capset); `kept`
    /// stays permitted and effective.
    ///
    /// capset changes the calling thread only, so call this while the process
    /// has one thread: threads started later inherit the sets. Throws EBUSY
    /// when /proc/self/status shows more threads, EPERM when a kept
    /// capability is not permitted now or the bounding set cannot be changed.
    public static func apply(keeping kept: CapabilitySet) throws(Errno) {
        if let threads = threadCount(), threads > 1 { throw Errno(EBUSY) }
        let now = try current()
        guard now.permitted.isSuperset(of: kept) else { throw Errno.notPermitted }
        for capability in boundingSet().subtracting(kept).members {
            _ = try Syscall.call { daxfs_capbset_drop(capability.rawValue) }
        }
        // EINVAL: a kernel without ambient capabilities (before 4.3) has none to clear.
        do throws(Errno) { _ = try Syscall.call { daxfs_ambient_clear_all() } } catch { if error != .invalidArgument { throw error } }
        _ = try Syscall.call {
            daxfs_capset(kept.rawValue, kept.rawValue, now.inheritable.intersection(kept).rawValue)
        }
    }

    /// Threads of this process (/proc/self/status), nil when /proc is not there (a chroot).
    static func threadCount() -> Int? {
        guard let status = try? procStatus(), let line = status.first(where: { $0.hasPrefix("Threads:") }) else { return nil }
        return Int(line.dropFirst("Threads:".count).trimmingCharacters())
    }

    /// The lines of /proc/self/status.
    static func procStatus() throws(Errno) -> [Substring] {
        let fd = try Syscall.call { open(ProcFS.path("self/status"), O_RDONLY | O_CLOEXEC) }
        defer { Glibc.close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = try Syscall.call { chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) } }
            if count == 0 { break }
            bytes += chunk[0 ..< count]
        }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n")
    }
}

extension Substring {
    fileprivate func trimmingCharacters() -> String { String(filter { $0 != " " && $0 != "\t" }) }
}
