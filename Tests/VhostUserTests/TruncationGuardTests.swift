import Glibc
import HostSystem
import Testing
@testable import VhostUser

/// The truncation guard's readers of kernel bytes: fanotify permission
/// events, and /proc/TID/syscall lines of a thread waiting in an open.
@Suite struct TruncationGuardTests {
    /// One event as the kernel lays it out, with an optional range record.
    func event(fd: Int32, pid: Int32, mask: UInt64, range: (UInt64, UInt64)?) -> [UInt8] {
        let length = 24 + (range == nil ? 0 : 24)
        var bytes: [UInt8] = []
        bytes += withUnsafeBytes(of: UInt32(length).littleEndian, Array.init)
        bytes += [3, 0]
        bytes += withUnsafeBytes(of: UInt16(24).littleEndian, Array.init)
        bytes += withUnsafeBytes(of: mask.littleEndian, Array.init)
        bytes += withUnsafeBytes(of: fd.littleEndian, Array.init)
        bytes += withUnsafeBytes(of: pid.littleEndian, Array.init)
        if let (offset, count) = range {
            bytes += [6, 0]
            bytes += withUnsafeBytes(of: UInt16(24).littleEndian, Array.init)
            bytes += [0, 0, 0, 0]
            bytes += withUnsafeBytes(of: offset.littleEndian, Array.init)
            bytes += withUnsafeBytes(of: count.littleEndian, Array.init)
        }
        return bytes
    }

    @Test func eventsCarryTheirRanges() {
        let pre: UInt64 = 0x0010_0000, openPermission: UInt64 = 0x0001_0000
        let bytes = event(fd: 7, pid: 100, mask: pre, range: (1 << 20, 0))
            + event(fd: 8, pid: 101, mask: pre, range: (0, 4096))
            + event(fd: 9, pid: 102, mask: openPermission, range: nil)
        let events = TruncationGuard.events(in: bytes, count: bytes.count)
        #expect(events == [.init(fd: 7, pid: 100, mask: pre, range: .init(offset: 1 << 20, count: 0)),
                           .init(fd: 8, pid: 101, mask: pre, range: .init(offset: 0, count: 4096)),
                           .init(fd: 9, pid: 102, mask: openPermission, range: nil)])
    }

    @Test func malformedEventsEndTheBatch() {
        var bytes = event(fd: 7, pid: 1, mask: 0x0010_0000, range: (5, 0))
        // A length past the bytes read, then a length below the header.
        var long = bytes
        long[0] = 200
        #expect(TruncationGuard.events(in: long, count: long.count).isEmpty)
        var short = bytes
        short[0] = 8
        #expect(TruncationGuard.events(in: short, count: short.count).isEmpty)
        // An info record longer than its event is ignored, the event kept.
        bytes[26] = 0xFF
        #expect(TruncationGuard.events(in: bytes, count: bytes.count) == [.init(fd: 7, pid: 1, mask: 0x0010_0000, range: nil)])
        // Fewer bytes than one header: nothing.
        #expect(TruncationGuard.events(in: bytes, count: 20).isEmpty)
    }

    @Test func systemCallsSayWhatTheyDoToTheSize() {
        let none: (UInt64) -> UInt64? = { _ in nil }
        func intent(_ line: String) -> TruncationGuard.Intent { TruncationGuard.intent(ofSyscall: line, howFlags: none) }
        #if arch(x86_64)
        // ftruncate(fd, 1 MiB + 100) and truncate(path, 0x2000): the exact size.
        #expect(intent("77 0x3 0x100064 0x0 0x0 0x0 0x0 0x7ffd0ff8 0x7f00aa") == .truncates(to: (1 << 20) + 100))
        #expect(intent("76 0x7ffd1000 0x2000 0x0 0x0 0x0 0x0 0x7ffd0ff8 0x7f00aa") == .truncates(to: 0x2000))
        // openat(AT_FDCWD, path, O_WRONLY|O_CREAT|O_TRUNC, 0666), without O_TRUNC, open, creat.
        #expect(intent("257 0xffffff9c 0x7ffd1000 0x241 0x1b6 0x0 0x0 0x7ffd0ff8 0x7f00aa") == .truncates(to: 0))
        #expect(intent("257 0xffffff9c 0x7ffd1000 0x2 0x0 0x0 0x0 0x7ffd0ff8 0x7f00aa") == .keepsSize)
        #expect(intent("2 0x7ffd1000 0x201 0x1b6 0x0 0x0 0x0 0x7ffd0ff8 0x7f00aa") == .truncates(to: 0))
        #expect(intent("85 0x7ffd1000 0x1b6 0x0 0x0 0x0 0x0 0x7ffd0ff8 0x7f00aa") == .truncates(to: 0))
        // pread64 of 0 bytes (its event looks like a truncation), fallocate: collapse, plain.
        #expect(intent("17 0x3 0x7ffd1000 0x0 0x3039 0x0 0x0 0x7ffd0ff8 0x7f00aa") == .keepsSize)
        #expect(intent("285 0x3 0x8 0x0 0x200000 0x0 0x0 0x7ffd0ff8 0x7f00aa") == .collapses(0x200000))
        #expect(intent("285 0x3 0x0 0x0 0x200000 0x0 0x0 0x7ffd0ff8 0x7f00aa") == .keepsSize)
        #endif
        // openat2: the flags are read from struct open_how at arg3.
        #expect(TruncationGuard.intent(ofSyscall: "437 0xffffff9c 0x7ffd1000 0x7ffd2000 0x18 0x0 0x0 0x1 0x2") { address in
            address == 0x7FFD_2000 ? UInt64(O_TRUNC | O_WRONLY) : nil
        } == .truncates(to: 0))
        #expect(intent("437 0xffffff9c 0x7ffd1000 0x7ffd2000 0x18 0x0 0x0 0x1 0x2") == .unknown)
        // Not in a system call, or in one this does not know (io_uring_enter).
        #expect(intent("running") == .unknown)
        #expect(intent("-1 0x7ffd0ff8 0x7f00aa") == .unknown)
        #expect(intent("426 0x3 0x1 0x0 0x0 0x0 0x0 0x1 0x2") == .unknown)
    }

    @Test func unknownCallsFallBackOnTheKernelsRange() {
        let pre: UInt64 = 0x0010_0000
        let truncation = TruncationGuard.Event(fd: 3, pid: 1, mask: pre, range: .init(offset: 8192, count: 0))
        let read = TruncationGuard.Event(fd: 3, pid: 1, mask: pre, range: .init(offset: 8192, count: 4096))
        #expect(TruncationGuard.shrinkingSize(of: truncation, intent: .unknown, fileSize: 1 << 20) == 8192)
        #expect(TruncationGuard.shrinkingSize(of: read, intent: .unknown, fileSize: 1 << 20) == nil)
        #expect(TruncationGuard.shrinkingSize(of: read, intent: .truncates(to: 100), fileSize: 1 << 20) == 100)
        #expect(TruncationGuard.shrinkingSize(of: truncation, intent: .keepsSize, fileSize: 1 << 20) == nil)
        #expect(TruncationGuard.shrinkingSize(of: read, intent: .collapses(3 << 20), fileSize: 1 << 20) == 0)
    }

    @Test func mapsLinesSayWhichFilePagesAProcessHolds() {
        // dev 0xfd01 is major 0xfd, minor 1; the second line maps file offsets [2 MiB, 4 MiB).
        let text = Array("""
            55d0c0000000-55d0c0001000 r--p 00000000 fd:01 131 /usr/bin/qemu
            7f0000000000-7f0000200000 rw-s 00200000 00:3a 77                         /tmp/daxfs-shadow-1/f (deleted)
            7f1000000000-7f1000001000 rw-p 00000000 00:00 0
            """.utf8)
        let shadow = MappedFile(device: 0x3A, inode: 77)
        #expect(FrontendMaps.mapsPages(in: text, of: shadow, from: 0))
        #expect(FrontendMaps.mapsPages(in: text, of: shadow, from: (4 << 20) - 4096))
        #expect(!FrontendMaps.mapsPages(in: text, of: shadow, from: 4 << 20))
        #expect(!FrontendMaps.mapsPages(in: text, of: MappedFile(device: 0x3A, inode: 78), from: 0))
        #expect(!FrontendMaps.mapsPages(in: text, of: MappedFile(device: 0xFD01, inode: 77), from: 0))
        #expect(FrontendMaps.mapsPages(in: text, of: MappedFile(device: 0xFD01, inode: 131), from: 0))
        #expect(!FrontendMaps.mapsPages(in: Array("garbage\n-\n1-0 x y z 77".utf8), of: shadow, from: 0))
    }

    /// This process as the frontend: a real mapping, then none.
    @Test func aProcessThatUnmappedNoLongerHoldsThePages() throws {
        var name = Array("/tmp/daxfs-maps-XXXXXX".utf8CString)
        let fd = mkstemp(&name)
        try #require(fd >= 0)
        defer { close(fd); unlink(name) }
        #expect(ftruncate(fd, 4 * 4096) == 0)
        var info = stat()
        #expect(fstat(fd, &info) == 0)
        let file = MappedFile(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        let me = FrontendMaps(pid: getpid())
        #expect(me.mapsPages(of: file, from: 0) == false)
        let pages = mmap(nil, 2 * 4096, PROT_READ, MAP_SHARED, fd, 4096)
        try #require(pages != MAP_FAILED)
        #expect(me.mapsPages(of: file, from: 0) == true)
        #expect(me.mapsPages(of: file, from: 2 * 4096) == true)
        #expect(me.mapsPages(of: file, from: 3 * 4096) == false)
        munmap(pages, 2 * 4096)
        #expect(me.waitUntilUnmapped(file, from: 0, deadline: monotonicNanoseconds() + 1_000_000_000))
        #expect(FrontendMaps(pid: Int32.max).mapsPages(of: file, from: 0) == nil)
    }
}
