import CLinux
import Foundation
import Glibc
import HostSystem
import Testing

/// Data through open descriptors, big and sparse files, big directories and
/// shared mappings.
@Suite(.enabled(if: MountEnvironment.canMount, "needs root and /dev/fuse"))
struct DataPathTests {
    /// A file renamed on the host while open through the mount stays usable
    /// through that descriptor.
    @Test(arguments: Mode.allCases)
    func hostRenameWhileOpen(mode: Mode) throws {
        try withMount(mode) { mount in
            try writeFile(mount.host("before"), pattern(10_000, seed: 20))
            let fd = try must("open") { open(mount.mnt("before"), O_RDWR) }
            defer { close(Int32(fd)) }
            try must("rename on the host") { rename(mount.host("before"), mount.host("after")) }

            #expect(try preadAll(Int32(fd), count: 10_000, at: 0).get() == pattern(10_000, seed: 20))
            let update = pattern(5000, seed: 21)
            #expect(pwriteAll(Int32(fd), update, at: 8000) == .value(5000))
            #expect(fsync(Int32(fd)) == 0)
            let expected = Array(pattern(10_000, seed: 20).prefix(8000)) + update
            #expect(try readFile(mount.host("after")).get() == expected, "the host file under its new name got the write")
            #expect(try preadAll(Int32(fd), count: 20_000, at: 0).get() == expected)
            #expect(fileStat(mount.mnt("after"))?.st_size == 13_000)
            // The old name may live on in the kernel's dentry cache until its entry timeout.
            #expect(waitUntil(seconds: 5) { fileStat(mount.mnt("before")) == nil && errno == ENOENT }, "the old name disappears")
        }
    }

    /// Changes made directly on the host show through the mount: contents on
    /// the next open, names and sizes within the cache timeout.
    @Test(arguments: Mode.allCases, ["auto", "never"])
    func hostChangesShowThrough(mode: Mode, cache: String) throws {
        try withMount(mode, arguments: ["--cache=\(cache)"]) { mount in
            try writeFile(mount.host("f"), pattern(8192, seed: 80))
            #expect(try readFile(mount.mnt("f")).get() == pattern(8192, seed: 80))
            // Same size, new contents: visible on the next open.
            try pwriteHost(mount.host("f"), pattern(8192, seed: 81), at: 0)
            #expect(try readFile(mount.mnt("f")).get() == pattern(8192, seed: 81), "contents after a same-size host write")
            // Grown on the host.
            try pwriteHost(mount.host("f"), pattern(100, seed: 82), at: 8192)
            #expect(waitUntil(seconds: 3) { fileStat(mount.mnt("f"))?.st_size == 8292 }, "size after the host grew the file")
            #expect(try readFile(mount.mnt("f")).get() == pattern(8192, seed: 81) + pattern(100, seed: 82))
            // Replaced by a new file under the same name.
            try must("unlink on host") { unlink(mount.host("f")) }
            try writeFile(mount.host("f"), pattern(10, seed: 83))
            #expect(waitUntil(seconds: 3) { (try? readFile(mount.mnt("f")).get()) == pattern(10, seed: 83) }, "the new file behind the old name")
            // New and removed names.
            try writeFile(mount.host("new"), [1])
            try must("unlink on host") { unlink(mount.host("f")) }
            #expect(waitUntil(seconds: 3) { directoryNames(mount.mnt("")) == ["new"] }, "listing: \(directoryNames(mount.mnt("")) ?? [])")
            #expect(waitUntil(seconds: 3) { fileStat(mount.mnt("f")) == nil })
        }
    }

    /// With --cache auto the kernel keeps names and attributes for long, and
    /// the server pushes other processes' host changes to it (fanotify →
    /// FUSE_NOTIFY_INVAL_*): each change shows through well inside the 1 s an
    /// expiring timeout would take (with --no-host-watch this test fails).
    @Test(arguments: Mode.allCases)
    func hostChangesArePushedToTheKernel(mode: Mode) throws {
        try withMount(mode, arguments: ["--cache=auto"]) { mount in
            try must("mkdir on host") { mkdir(mount.host("d"), 0o755) }
            try writeFile(mount.host("d/f"), pattern(100, seed: 90))
            // Cached now: attributes, the entry, and a negative entry.
            #expect(fileStat(mount.mnt("d/f"))?.st_size == 100)
            #expect(fileStat(mount.mnt("d/new")) == nil)
            try pwriteHost(mount.host("d/f"), pattern(50, seed: 91), at: 100)
            try writeFile(mount.host("d/new"), [1, 2, 3])
            #expect(waitUntil(seconds: 0.5) { fileStat(mount.mnt("d/f"))?.st_size == 150 }, "size after a host write")
            #expect(waitUntil(seconds: 0.5) { fileStat(mount.mnt("d/new"))?.st_size == 3 }, "a name created on the host")
            try must("chmod on host") { chmod(mount.host("d/f"), 0o600) }
            #expect(waitUntil(seconds: 0.5) { (fileStat(mount.mnt("d/f"))?.st_mode ?? 0) & 0o777 == 0o600 }, "mode after a host chmod")
            try must("rename on host") { rename(mount.host("d/new"), mount.host("d/renamed")) }
            #expect(waitUntil(seconds: 0.5) { fileStat(mount.mnt("d/new")) == nil && fileStat(mount.mnt("d/renamed")) != nil }, "a host rename")
            try must("unlink on host") { unlink(mount.host("d/renamed")) }
            #expect(waitUntil(seconds: 0.5) { fileStat(mount.mnt("d/renamed")) == nil }, "a host unlink")
        }
    }

    /// Threads create, rename, stat and remove files in one directory while
    /// the kernel drops its dentry and inode caches (so daxfs gets FORGETs and
    /// fresh LOOKUPs for the same names); the end state must be exact.
    @Test(arguments: Mode.allCases)
    func metadataChurnWithCacheDrops(mode: Mode) throws {
        try withMount(mode) { mount in
            let directory = mount.mnt("churn")
            try must("mkdir") { mkdir(directory, 0o755) }
            let failures = FailureList()
            let threads = try (0 ..< 4).map { worker in
                try OSThread(name: "churn-\(worker)") {
                    for round in 0 ..< 300 {
                        let name = "\(directory)/w\(worker)-\(round % 20)"
                        let fd = open(name, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
                        guard fd >= 0 else { return failures.add("create \(name): \(errnoName(errno))") }
                        let data = Array("\(worker):\(round)".utf8)
                        _ = pwriteAll(fd, data, at: 0)
                        close(fd)
                        if rename(name, name + ".r") != 0 { return failures.add("rename \(name): \(errnoName(errno))") }
                        if (try? readFile(name + ".r").get()) != data { return failures.add("read back \(name).r") }
                        if round % 3 == 0, unlink(name + ".r") != 0 { return failures.add("unlink \(name).r: \(errnoName(errno))") }
                    }
                }
            }
            let dropper = try OSThread(name: "drop-caches") {
                for _ in 0 ..< 20 {
                    dropCaches()
                    usleep(20_000)
                }
            }
            threads.forEach { $0.join() }
            dropper.join()
            #expect(failures.all.isEmpty, "\(failures.all.prefix(5))")
            dropCaches()
            // Round r of worker w leaves "w-(r%20).r" unless r%3 == 0 for its last round r in 280..<300.
            var expected: [String] = []
            for worker in 0 ..< 4 {
                for slot in 0 ..< 20 where (280 + slot) % 3 != 0 { expected.append("w\(worker)-\(slot).r") }
            }
            #expect(directoryNames(directory) == expected.sorted())
            #expect(directoryNames(mount.host("churn")) == expected.sorted())
            for name in expected {
                let round = 280 + Int(name.split(separator: "-")[1].dropLast(2))!
                let worker = name.dropFirst().prefix { $0 != "-" }
                #expect(try readFile(directory + "/" + name).get() == Array("\(worker):\(round)".utf8), "\(name)")
            }
        }
    }

    /// daxfs releases what it holds for inodes and open files once the kernel
    /// forgets them: its descriptor count returns to where it started.
    @Test(arguments: Mode.allCases)
    func noDescriptorLeaks(mode: Mode) throws {
        try withMount(mode) { mount in
            let pid = mount.process.processIdentifier
            func descriptors() -> Int { directoryNames("/proc/\(pid)/fd")?.count ?? -1 }
            dropCaches()
            let baseline = descriptors()
            try must("mkdir") { mkdir(mount.mnt("many"), 0o755) }
            for index in 0 ..< 2000 {
                let fd = try must("create") { open(mount.mnt("many/\(index)"), O_CREAT | O_RDWR, 0o644) }
                _ = pwriteAll(Int32(fd), [1, 2, 3], at: 0)
                close(Int32(fd))
                _ = fileStat(mount.mnt("many/\(index)"))
            }
            for _ in 0 ..< 3 {
                for index in 0 ..< 2000 where index % 4 == 0 { _ = try readFile(mount.mnt("many/\(index)")).get() }
            }
            let busy = descriptors()
            dropCaches()
            let settled = waitUntil(seconds: 5) { descriptors() <= baseline + 16 }
            #expect(settled, "daxfs holds \(descriptors()) descriptors after the kernel forgot everything (baseline \(baseline), \(busy) while busy)")
            for index in 0 ..< 2000 { try must("unlink") { unlink(mount.mnt("many/\(index)")) } }
            dropCaches()
            #expect(waitUntil(seconds: 5) { descriptors() <= baseline + 16 }, "after unlinking: \(descriptors()) descriptors (baseline \(baseline))")
        }
    }

    /// Four threads write disjoint 4 MiB regions of one file at once.
    @Test(arguments: Mode.allCases)
    func concurrentWritersOnOneFile(mode: Mode) throws {
        try withMount(mode) { mount in
            let region = 4 << 20, chunk = 64 << 10, writers = 4
            let fd = Int32(try must("create") { open(mount.mnt("shared-file"), O_CREAT | O_RDWR, 0o644) })
            defer { close(fd) }
            let failures = FailureList()
            let path = mount.mnt("shared-file")
            let threads = try (0 ..< writers).map { writer in
                try OSThread(name: "writer-\(writer)") {
                    // Each thread its own descriptor, interleaved chunk order.
                    let own = open(path, O_WRONLY)
                    guard own >= 0 else { return failures.add("writer \(writer): open \(errnoName(errno))") }
                    defer { close(own) }
                    for index in stride(from: 0, to: region / chunk, by: 1) {
                        let offset = writer * region + index * chunk
                        let result = pwriteAll(own, pattern(chunk, seed: UInt64(offset)), at: offset)
                        if result != .value(chunk) { return failures.add("writer \(writer) at \(offset): \(result)") }
                    }
                }
            }
            threads.forEach { $0.join() }
            #expect(failures.all.isEmpty, "\(failures.all)")
            let expected = (0 ..< writers * region / chunk).flatMap { pattern(chunk, seed: UInt64($0 * chunk)) }
            let throughMount = try preadAll(fd, count: writers * region, at: 0).get()
            #expect(throughMount.count == expected.count)
            #expect(throughMount == expected, "contents read through the mount")
            #expect(try readFile(mount.host("shared-file")).get() == expected, "contents of the host file")
        }
    }

    /// A 1 GiB sparse file stays sparse; data and holes are where they were written.
    @Test(arguments: Mode.allCases)
    func sparseGigabyteFile(mode: Mode) throws {
        try withMount(mode) { mount in
            let size = 1 << 30
            let fd = Int32(try must("create") { open(mount.mnt("sparse"), O_CREAT | O_RDWR, 0o644) })
            defer { close(fd) }
            try must("ftruncate 1 GiB") { ftruncate(fd, off_t(size)) }
            let writes: [(offset: Int, bytes: [UInt8])] = [
                (0, pattern(4096, seed: 30)),
                ((512 << 20) + 7, pattern(10_000, seed: 31)),
                (size - 1, [0x5A]),
            ]
            for write in writes {
                #expect(pwriteAll(fd, write.bytes, at: write.offset) == .value(write.bytes.count), "write at \(write.offset)")
            }
            try must("fsync") { fsync(fd) }
            for write in writes {
                #expect(try preadAll(fd, count: write.bytes.count, at: write.offset).get() == write.bytes, "read back at \(write.offset)")
            }
            #expect(try preadAll(fd, count: 4096, at: 300 << 20).get() == [UInt8](repeating: 0, count: 4096), "the hole reads as zeros")
            #expect(try preadAll(fd, count: 10, at: size - 1).get() == [0x5A], "the last byte, then end of file")

            for path in [mount.mnt("sparse"), mount.host("sparse")] {
                let info = try #require(fileStat(path))
                #expect(info.st_size == off_t(size))
                #expect(info.st_blocks < 2048, "\(path): \(info.st_blocks) blocks allocated for 14 KiB of data")
            }
            let data = lseek(fd, 4096, LinuxConstant.seekData)
            #expect(data > 4096 && data <= off_t((512 << 20) + 7), "SEEK_DATA from 4096 found \(data)")
            #expect(lseek(fd, 0, LinuxConstant.seekHole) == 4096)
            #expect(lseek(fd, off_t(size - 1), LinuxConstant.seekData) <= off_t(size - 1))
        }
    }

    /// 10,000 files created through the mount are listed exactly once each.
    @Test func tenThousandEntryDirectory() throws {
        try withMount(.passthrough) { mount in
            let count = 10_000
            try must("mkdir") { mkdir(mount.mnt("big"), 0o755) }
            let names = (0 ..< count).map { String(format: "entry-%05d-%@", $0, String(repeating: "x", count: $0 % 40)) }
            for name in names {
                let fd = try must("create \(name)") { open(mount.mnt("big/" + name), O_CREAT | O_WRONLY, 0o644) }
                close(Int32(fd))
            }
            let listed = try #require(directoryNames(mount.mnt("big"), includingDots: true))
            #expect(listed.count == count + 2)
            #expect(listed == (names + [".", ".."]).sorted())
            #expect(directoryNames(mount.host("big"))?.count == count)
            for name in names { try must("unlink \(name)") { unlink(mount.mnt("big/" + name)) } }
            #expect(directoryNames(mount.mnt("big"), includingDots: true) == [".", ".."])
            #expect(directoryNames(mount.host("big")) == [])
        }
    }

    /// Host writes reach a MAP_SHARED mapping of the mount's file (after a
    /// reopen without passthrough; at once with it), and writes through the
    /// mapping reach the host file after msync.
    @Test(arguments: Mode.allCases)
    func sharedMappingCoherence(mode: Mode) throws {
        try withMount(mode) { mount in
            let length = 64 << 10
            try writeFile(mount.host("mapped"), pattern(length, seed: 40))

            let first = try SharedMapping(mount.mnt("mapped"), length: length)
            #expect(first.bytes(0 ..< length) == pattern(length, seed: 40))
            let hostUpdate = pattern(4096, seed: 41)
            try pwriteHost(mount.host("mapped"), hostUpdate, at: 8192)

            if mode == .passthrough {
                // The mapping is the host file's page cache.
                #expect(first.bytes(8192 ..< 12288) == hostUpdate, "passthrough mapping sees the host write without reopening")
            }
            // Without passthrough the kernel drops stale pages on open when the file changed.
            let second = try SharedMapping(mount.mnt("mapped"), length: length)
            #expect(second.bytes(8192 ..< 12288) == hostUpdate, "a fresh open + mmap sees the host write")
            first.unmap()

            // The other way: store through the mapping, msync, read on the host.
            let clientUpdate = pattern(5000, seed: 42)
            second.store(clientUpdate, at: 30_000)
            #expect(msync(second.address, length, MS_SYNC) == 0, "msync: \(errnoName(errno))")
            var expected = pattern(length, seed: 40)
            expected.replaceSubrange(8192 ..< 12288, with: hostUpdate)
            expected.replaceSubrange(30_000 ..< 35_000, with: clientUpdate)
            #expect(try readFile(mount.host("mapped")).get() == expected, "host file after msync")
            second.unmap()
            #expect(try readFile(mount.mnt("mapped")).get() == expected, "read through the mount")
        }
    }
}

/// Asks the kernel to drop clean dentries and inodes (root only), which
/// makes it send FORGETs for everything not in use.
func dropCaches() {
    let fd = open("/proc/sys/vm/drop_caches", O_WRONLY)
    guard fd >= 0 else { return }
    _ = write(fd, "2", 1)
    close(fd)
}

/// Failures collected from worker threads.
final class FailureList: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func add(_ item: String) { lock.withLock { items.append(item) } }
    var all: [String] { lock.withLock { items } }
}

/// A read-write MAP_SHARED mapping of a whole file.
final class SharedMapping {
    let address: UnsafeMutableRawPointer
    let length: Int
    private var mapped = true

    init(_ path: String, length: Int) throws {
        let fd = open(path, O_RDWR)
        guard fd >= 0 else { throw HarnessError("open \(path): \(errnoName(errno))") }
        defer { close(fd) }
        guard let address = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), address != MAP_FAILED else {
            throw HarnessError("mmap \(path): \(errnoName(errno))")
        }
        self.address = address
        self.length = length
    }

    func bytes(_ range: Range<Int>) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: address + range.lowerBound, count: range.count))
    }

    func store(_ bytes: [UInt8], at offset: Int) {
        bytes.withUnsafeBytes { (address + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    func unmap() {
        if mapped { munmap(address, length) }
        mapped = false
    }

    deinit { unmap() }
}

func pwriteHost(_ path: String, _ bytes: [UInt8], at offset: Int) throws {
    let fd = open(path, O_WRONLY)
    guard fd >= 0 else { throw HarnessError("open \(path): \(errnoName(errno))") }
    defer { close(fd) }
    guard pwriteAll(fd, bytes, at: offset) == .value(bytes.count) else { throw HarnessError("pwrite \(path): \(errnoName(errno))") }
}
