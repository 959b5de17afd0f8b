import Foundation
import Glibc
import Testing

/// A share with more files than daxfs may keep descriptors for: nodes past
/// `--max-node-fds` close theirs and reopen them by file handle.
@Suite(.enabled(if: MountEnvironment.canMount, "needs root and /dev/fuse"))
struct NodeLimitTests {
    static let limit = 64

    @Test(arguments: Mode.allCases)
    func manyMoreFilesThanDescriptors(mode: Mode) throws {
        try withMount(mode, arguments: ["--max-node-fds", "\(Self.limit)"], label: "node-fds") { mount in
            let pid = mount.process.processIdentifier
            let idle = openDescriptors(of: pid)
            let directories = 10, perDirectory = 300
            for d in 0 ..< directories {
                #expect(mkdir(mount.mnt("d\(d)"), 0o755) == 0)
                for f in 0 ..< perDirectory {
                    try writeFile(mount.mnt("d\(d)/f\(f)"), Array("\(d)/\(f)".utf8))
                }
            }
            // The kernel still holds every one of these 3,010 inodes; daxfs may not hold a descriptor for each.
            let busy = openDescriptors(of: pid)
            #expect(busy - idle <= Self.limit + 16, "daxfs holds \(busy) descriptors, \(idle) when idle")

            // Every file still reads back, both by cached node and by a fresh lookup after a host rename.
            for d in 0 ..< directories {
                for f in stride(from: 0, to: perDirectory, by: 7) {
                    #expect(try readFile(mount.mnt("d\(d)/f\(f)")).get() == Array("\(d)/\(f)".utf8))
                }
            }
            #expect(rename(mount.host("d3/f5"), mount.host("d4/moved")) == 0)
            #expect(try readFile(mount.mnt("d4/moved")).get() == Array("3/5".utf8))
            var info = stat()
            #expect(stat(mount.mnt("d9/f299"), &info) == 0 && info.st_size == 5)
            #expect(unlink(mount.mnt("d0/f0")) == 0)
            #expect(openDescriptors(of: pid) - idle <= Self.limit + 16)
        }
    }

    func openDescriptors(of pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }
}
