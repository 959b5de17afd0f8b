import CLinux
import Glibc
import HostSystem

/// What a frontend process maps of a file, from /proc/PID/maps.
///
/// QEMU 11.1 answers a SHMEM_UNMAP before its mapping is gone: it deletes
/// the memory region, and the file mapping is released only once every vCPU
/// has left its RCU read section (until then a vCPU may still reach the
/// pages). So a backend that must know the frontend can no longer touch a
/// range — a truncation is about to take those pages away — looks at the
/// frontend's own address space.
struct FrontendMaps: Sendable {
    let pid: Int32

    /// Whether the process maps a page of `file` at or past file offset
    /// `offset`; nil when its maps cannot be read.
    func mapsPages(of file: MappedFile, from offset: UInt64) -> Bool? {
        let fd = open(ProcFS.path("\(pid)/maps"), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var text: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 && daxfs_errno() == EINTR { continue }
            guard count > 0 else { break }
            text += chunk[0 ..< count]
            guard text.count < 64 << 20 else { return nil }
        }
        return Self.mapsPages(in: text, of: file, from: offset)
    }

    /// The same over the text of a maps file: lines "start-end perms offset
    /// major:minor inode [path]", numbers in hex but the inode.
    static func mapsPages(in text: [UInt8], of file: MappedFile, from offset: UInt64) -> Bool {
        let major = ((file.device >> 8) & 0xFFF) | ((file.device >> 32) & ~0xFFF)
        let minor = (file.device & 0xFF) | ((file.device >> 12) & ~0xFF)
        for line in text.split(separator: UInt8(ascii: "\n")) {
            let fields = line.split(separator: UInt8(ascii: " "), maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count >= 5,
                  let inode = UInt64(String(decoding: fields[4], as: UTF8.self)), inode == file.inode else { continue }
            let device = fields[3].split(separator: UInt8(ascii: ":"))
            guard device.count == 2,
                  UInt64(String(decoding: device[0], as: UTF8.self), radix: 16) == major,
                  UInt64(String(decoding: device[1], as: UTF8.self), radix: 16) == minor else { continue }
            let range = fields[0].split(separator: UInt8(ascii: "-"))
            guard range.count == 2,
                  let start = UInt64(String(decoding: range[0], as: UTF8.self), radix: 16),
                  let end = UInt64(String(decoding: range[1], as: UTF8.self), radix: 16), end > start,
                  let first = UInt64(String(decoding: fields[2], as: UTF8.self), radix: 16) else { continue }
            let (last, overflow) = first.addingReportingOverflow(end - start)
            if overflow || last > offset { return true }
        }
        return false
    }

    /// Waits until the process maps no page of `file` at or past `offset`,
    /// or `deadline` (monotonic nanoseconds) passed; true when it does not.
    func waitUntilUnmapped(_ file: MappedFile, from offset: UInt64, deadline: UInt64) -> Bool {
        while true {
            guard let mapped = mapsPages(of: file, from: offset) else { return false }
            if !mapped { return true }
            if monotonicNanoseconds() >= deadline { return false }
            usleep(500)
        }
    }

    /// The process at the other end of a Unix socket (SO_PEERCRED).
    static func peer(of socket: Int32) -> FrontendMaps? {
        let pid = daxfs_peer_pid(socket)
        return pid > 0 ? FrontendMaps(pid: pid) : nil
    }
}
