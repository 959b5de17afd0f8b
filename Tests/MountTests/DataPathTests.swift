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
