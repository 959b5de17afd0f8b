import Glibc
import HostSystem

/// Supplementary groups of calling processes, read from /proc/PID/status and
/// kept for a second: FUSE headers carry only uid and gid, but the host
/// checks group permissions against every group a process has.
final class CallerGroups: Sendable {
    private struct Cached { var groups: [UInt32]; var expires: UInt64 }
    private let enabled: Bool
    private let cache = Locked<[UInt32: Cached]>([:])
    private static let lifetime: UInt64 = 1_000_000_000

    init(enabled: Bool) { self.enabled = enabled }

    func groups(of pid: UInt32) -> [UInt32] {
        guard enabled, pid != 0 else { return [] }
        let now = monotonicNanoseconds()
        if let hit = cache.withLock({ $0[pid] }), hit.expires > now { return hit.groups }
        let groups = Self.read(pid)
        cache.withLock { table in
            if table.count > 4096 { table.removeAll(keepingCapacity: true) }
            table[pid] = Cached(groups: groups, expires: now + Self.lifetime)
        }
        return groups
    }

    /// The "Groups:" line of /proc/PID/status; empty when the process is gone.
    private static func read(_ pid: UInt32) -> [UInt32] {
        let fd = open(ProcFS.path("\(pid)/status"), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { raw in Glibc.read(fd, raw.baseAddress, raw.count) }
        guard count > 0 else { return [] }
        let text = String(decoding: buffer[0 ..< count], as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Groups:") }) else { return [] }
        return line.dropFirst("Groups:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { UInt32($0) }
    }
}
