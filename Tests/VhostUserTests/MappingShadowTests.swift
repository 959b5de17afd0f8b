import CLinux
import Foundation
import Glibc
import HostSystem
import MappingShadow
import Testing
import VhostUser

/// The mapping shadow against a real /dev/fuse mount and real host files:
/// its descriptors pass QEMU 11.1's size check (lseek(SEEK_END) ≥ any
/// fd_offset + len) and map the host file's own pages, tail page included.
@Suite(.serialized) struct MappingShadowTests {
    static func skipReason() -> String? {
        if getuid() != 0 { return "needs root (a /dev/fuse mount)" }
        if access("/dev/fuse", R_OK | W_OK) != 0 { return "no /dev/fuse" }
        return nil
    }

    @Test func shadowReportsALargeSizeAndMapsTheHostPages() throws {
        if let reason = Self.skipReason() { print("skipped: \(reason)"); return }
        let shadow = try MappingShadow()
        let scratch = Scratch()
        let path = scratch.file("six")
        writeHost(path, Array("hello\n".utf8))
        let host = open(path, O_RDONLY)
        #expect(host >= 0)
        defer { close(host) }

        let mappable = try shadow.mappable(host)
        #expect(lseek(mappable.rawValue, 0, SEEK_END) == off_t(MappingShadow.reportedSize))
        let range = 2 << 20
        let base = mmap(nil, range, PROT_READ | PROT_WRITE, MAP_SHARED, mappable.rawValue, 0)
        #expect(base != MAP_FAILED)
        guard let base, base != MAP_FAILED else { return }
        defer { munmap(base, range) }
        let bytes = base.assumingMemoryBound(to: UInt8.self)
        // The tail page: the file's 6 bytes, then the zeros past its end.
        #expect(Array(UnsafeBufferPointer(start: bytes, count: 6)) == Array("hello\n".utf8))
        #expect(bytes[6] == 0 && bytes[4095] == 0)

        // Host writes show through the mapping, mapping writes reach the host file.
        writeHost(path, Array("J".utf8))
        #expect(bytes[0] == UInt8(ascii: "J"))
        bytes[1] = UInt8(ascii: "E")
        #expect(readHost(path, count: 6) == Array("JEllo\n".utf8))
        // A host append is visible in the range already mapped.
        writeHost(path, pattern(8192, seed: 3), at: 6)
        #expect(Array(UnsafeBufferPointer(start: bytes + 6, count: 8192)) == pattern(8192, seed: 3))
    }

    @Test func readOnlyHostFilesCannotBeMappedWritable() throws {
        if let reason = Self.skipReason() { print("skipped: \(reason)"); return }
        let shadow = try MappingShadow()
        // A file root cannot open read-write: a running executable (ETXTBSY)
        // is hard to arrange here; an immutable file is not on every
        // filesystem. A read-only bind mount is: EROFS.
        let scratch = Scratch()
        let dir = scratch.path + "/ro"
        mkdir(dir, 0o755)
        writeHost(scratch.file("f"), pattern(100, seed: 1))
        guard mount(scratch.share, dir, nil, UInt(MS_BIND), nil) == 0,
              mount(nil, dir, nil, UInt(MS_BIND | MS_REMOUNT | MS_RDONLY), nil) == 0 else {
            print("skipped: cannot make a read-only bind mount: \(Errno(errno))"); return
        }
        defer { umount2(dir, 2) }
        let fd = open(dir + "/f", O_RDONLY)
        defer { close(fd) }
        // The kernel's passthrough open fails (it reports EIO, not EROFS).
        #expect(throws: Errno.self) { _ = try shadow.mappable(fd) }
        // The same file through a writable path maps.
        let writable = open(scratch.file("f"), O_RDONLY)
        defer { close(writable) }
        _ = try shadow.mappable(writable)
    }
}
