import Foundation
import Glibc
import Testing

/// FUSE_HANDLE_KILLPRIV_V2: the server clears set-id bits and capabilities
/// itself, so the kernel stops asking for `security.capability` before each
/// write(2) (without it, every small write costs a GETXATTR round trip).
@Suite(.enabled(if: MountEnvironment.canMount, "needs root and /dev/fuse"))
struct KillprivTests {
    static let writes = 1000
    static let blockSize = 4096

    /// 1,000 buffered 4 KiB writes cost at most one GETXATTR, counted from
    /// daxfs's per-request trace log. The kernel still asks once per inode:
    /// with KILLPRIV_V2 it sets SB_NOSEC on the superblock, and
    /// `file_remove_privs` latches S_NOSEC on the inode only after the first
    /// write found no `security.capability`; without KILLPRIV_V2 every write asks.
    @Test(arguments: Mode.allCases)
    func smallWritesSendNoGetxattr(mode: Mode) throws {
        try withMount(mode, arguments: ["--log-level", "trace"], label: "killpriv") { m in
            let block = [UInt8](repeating: 0x5a, count: Self.blockSize)
            let fd = try must("open") { open(m.mnt("file"), O_CREAT | O_WRONLY | O_TRUNC, 0o644) }
            for index in 0 ..< Self.writes {
                let written = try must("write \(index)") { block.withUnsafeBytes { write(Int32(fd), $0.baseAddress, $0.count) } }
                #expect(written == Self.blockSize)
            }
            try must("close") { close(Int32(fd)) }

            var info = stat()
            try must("stat host copy") { stat(m.host("file"), &info) }
            #expect(Int(info.st_size) == Self.writes * Self.blockSize)

            // Requests are logged before they are answered, so the close above
            // has seen every line about this file; count them.
            let log = m.output
            let counts = Self.requestCounts(log)
            #expect(counts["CREATE", default: 0] >= 1, "no CREATE in the trace log (\(log.utf8.count) bytes): \(counts)\n\(log.prefix(3000))")
            if mode == .noPassthrough {
                // Every write(2) went through daxfs (no writeback cache): the log saw them.
                #expect(counts["WRITE", default: 0] >= Self.writes, "requests seen: \(counts)")
            }
            #expect(counts["GETXATTR", default: 0] <= 1, "GETXATTR reached the server per small write: \(counts)")
        }
    }

    /// Requests by opcode name, from trace lines "... OPCODE unique N node N ...".
    static func requestCounts(_ log: String) -> [String: Int] {
        var counts: [String: Int] = [:]
        for line in log.split(separator: "\n") {
            let words = line.split(separator: " ")
            guard let at = words.firstIndex(of: "unique"), at > words.startIndex else { continue }
            counts[String(words[words.index(before: at)]), default: 0] += 1
        }
        return counts
    }
}
