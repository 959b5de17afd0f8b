import DAX
@_spi(Testing) import DaxClient
import FUSEABI
import FUSEServer
import Foundation
import Glibc
import HostSystem
import PassthroughFS
import Testing

/// FUSE direct mmap (seed 003) through embedded servers: regions the server
/// owns, shared or private, reference counted, with DONT_COPY and fallbacks.
@Suite("Direct mmap")
struct DirectMmapTests {
    static let regionSize: UInt64 = 64 << 10

    /// Ring files "shared" and "private" in a fresh directory, plus a plain file.
    final class Rig {
        let dir = TempDir("dmmap")
        let rings: RingFiles
        init() throws {
            rings = try RingFiles(regionSize: DirectMmapTests.regionSize)
            try rings.add(path: dir.file("shared"), sharing: .shared)
            try rings.add(path: dir.file("private"), sharing: .perOpen)
            try hostWrite(dir.file("plain"), pattern(100_000))
        }

        /// A client of its own embedded server over the same ring files.
        func client(mmapWindow: UInt64 = 1 << 20, mode: DAXMode = .always,
                    channel wrap: ((EmbeddedChannel) -> any FUSEChannel)? = nil) throws -> DaxClient {
            let fs = try PassthroughFS(root: dir.path, options: PassthroughFS.Options(passthrough: false, logger: quietLogger, ringFiles: rings))
            var options = DaxClient.Options()
            options.rangeSize = 64 << 10
            options.windowSize = 1 << 20
            options.mode = mode
            options.mmapWindowSize = mmapWindow
            guard let wrap else { return try DaxClient.embedded(fileSystem: fs, options: options, logger: quietLogger) }
            let window = try LocalWindow(size: options.windowSize, guarded: true)
            let mmapWindow = try LocalWindow(size: mmapWindow, guarded: true)
            let session = FUSESession(fileSystem: fs, logger: quietLogger, window: window, mmapWindow: mmapWindow)
            return try DaxClient(channel: wrap(EmbeddedChannel(session: session)), window: window, mmapWindow: mmapWindow, options: options)
        }
    }

    static func text(_ mapping: FileMapping, count: Int = RingLayout.statusLength) -> String {
        String(decoding: UnsafeRawBufferPointer(start: mapping.pointer, count: count).prefix { $0 != 0 }, as: UTF8.self)
    }

    @Test func twoClientsShareARegionAndSeeTheServersWrites() throws {
        let rig = try Rig()
        let a = try rig.client(), b = try rig.client()
        #expect(a.usesDirectMmap && b.usesDirectMmap)
        let fa = try a.open("shared", flags: O_RDWR), fb = try b.open("shared", flags: O_RDWR)
        let ma = try fa.mmap(length: Int(Self.regionSize), writable: true)
        let mb = try fb.mmap(length: Int(Self.regionSize), writable: true)
        guard case .region(let ida, 0) = ma.kind, case .region(let idb, 0) = mb.kind else {
            Issue.record("not regions: \(ma.kind) \(mb.kind)"); return
        }
        #expect(ida == idb && !ma.dontCopy)
        #expect(rig.rings.mappedRegions == 1 && rig.rings.space.liveRegions == 1)
        // Each client sees the other's writes at once: the same memory.
        ma.bytes[40_000] = 0xA5
        #expect(mb.bytes[40_000] == 0xA5)
        mb.bytes[50_000] = 0x5A
        #expect(ma.bytes[50_000] == 0x5A)
        // And the server's.
        #expect(Self.text(ma).hasSuffix("tick 0\n"))
        rig.rings.tick()
        rig.rings.tick()
        #expect(Self.text(ma).hasSuffix("tick 2\n") && Self.text(mb) == Self.text(ma), "\(Self.text(ma))")
        // The file on the host is untouched: the region is the server's memory.
        #expect(try hostSize(rig.dir.file("shared")) == 0)
        try ma.unmap(); try mb.unmap()
        try fa.close(); try fb.close()
    }

    @Test func privateRegionsStayIsolated() throws {
        let rig = try Rig()
        let client = try rig.client()
        let f1 = try client.open("private", flags: O_RDWR), f2 = try client.open("private", flags: O_RDWR)
        let m1 = try f1.mmap(length: 8192, writable: true), m2 = try f2.mmap(length: 8192, writable: true)
        #expect(m1.kind != m2.kind && m1.dontCopy && m2.dontCopy, "\(m1.kind) \(m2.kind)")
        m1.bytes[100] = 1
        m2.bytes[100] = 2
        #expect(m1.bytes[100] == 1 && m2.bytes[100] == 2)
        // The same open mapped twice shares its region.
        let again = try f1.mmap(length: 8192)
        #expect(again.kind == m1.kind && again.bytes[100] == 1)
        #expect(rig.rings.mappedRegions == 2)
        for m in [m1, m2, again] { try m.unmap() }
        #expect(rig.rings.mappedRegions == 0 && rig.rings.space.liveRegions == 0)
        try f1.close(); try f2.close()
    }

    @Test func aRegionIsFreedOnlyAfterItsLastUnmap() throws {
        let rig = try Rig()
        let a = try rig.client(), b = try rig.client()
        let fa = try a.open("shared"), fb = try b.open("shared")
        let ma = try fa.mmap(length: 4096), mb = try fb.mmap(length: 4096), mb2 = try fb.mmap(offset: 8192, length: 4096)
        try ma.unmap()
        #expect(rig.rings.space.liveRegions == 1)
        try mb.unmap()
        #expect(rig.rings.space.liveRegions == 1 && rig.rings.mappedRegions == 1)
        try mb2.unmap()
        #expect(rig.rings.space.liveRegions == 0 && rig.rings.mappedRegions == 0)
        // A client that goes away without unmapping drops its references.
        let mc = try fa.mmap(length: 4096)
        _ = mc
        b.shutdown()
        #expect(rig.rings.space.liveRegions == 1)
        a.shutdown()  // FUSE_DESTROY: the server ends the session
        #expect(rig.rings.space.liveRegions == 0 && rig.rings.mappedRegions == 0)
        try? mc.unmap()
    }

    @Test func dontCopyMappingsAreNotInheritedByAForkedChild() throws {
        let rig = try Rig()
        let client = try rig.client()
        let privateFile = try client.open("private", flags: O_RDWR), sharedFile = try client.open("shared")
        let inherited = try sharedFile.mmap(length: 4096), notInherited = try privateFile.mmap(length: 4096, writable: true)
        #expect(!inherited.dontCopy && notInherited.dontCopy)
        #expect(childSeesMapping(inherited.pointer) == true)
        #expect(childSeesMapping(notInherited.pointer) == false)
        try inherited.unmap(); try notInherited.unmap()
        try privateFile.close(); try sharedFile.close()
    }

    /// Whether a forked child has memory mapped at `address` (msync fails with ENOMEM where nothing is).
    private func childSeesMapping(_ address: UnsafeMutableRawPointer) -> Bool? {
        let pid = fork()
        if pid == 0 {
            // Only async-signal-safe calls in the child.
            _exit(msync(address, 4096, MS_ASYNC) == 0 ? 0 : 1)
        }
        guard pid > 0 else { return nil }
        var status: Int32 = 0
        guard waitpid(pid, &status, 0) == pid, status & 0x7f == 0 else { return nil }
        return (status >> 8) & 0xff == 0
    }

    /// The ring counters live in memory the client writes: absurd values must
    /// not crash the server's producer (consumed + capacity once overflowed)
    /// or stop it serving. A client that claims to have read everything is
    /// treated as a fast reader: the producer keeps going, inside the ring.
    @Test func hostileRingCountersAreBounded() throws {
        let rig = try Rig()
        let client = try rig.client()
        let file = try client.open("private", flags: O_RDWR)
        let mapping = try file.mmap(length: Int(Self.regionSize), writable: true)
        let base = mapping.pointer
        base.storeBytes(of: UInt64.max, toByteOffset: RingLayout.consumed, as: UInt64.self)
        base.storeBytes(of: UInt64.max, toByteOffset: RingLayout.requested, as: UInt64.self)
        try rig.rings.start(tickInterval: 0.01)
        let capacity = RingLayout.capacity(regionSize: Self.regionSize)
        usleep(100_000)
        let produced = base.load(fromByteOffset: RingLayout.produced, as: UInt64.self)
        #expect(produced >= capacity, "produced \(produced)")
        // The slots wrapped many times; the status line before them is intact.
        #expect(String(decoding: UnsafeRawBufferPointer(start: base, count: 64).prefix { $0 != 0 }, as: UTF8.self).contains("tick"))
        rig.rings.stop()
        try mapping.unmap()
        try file.close()
    }

    @Test func badRequestsAreRejected() throws {
        let rig = try Rig()
        let client = try rig.client()
        let file = try client.open("shared", flags: O_RDWR)
        let readOnly = try client.open("shared")
        let fuse = client.fuse
        func mmap(_ handle: FUSEServer.FileHandle, mh: UInt64, offset: UInt64 = 0, length: UInt64 = 4096, windowOffset: UInt64 = 0,
                  writable: Bool = false) -> Errno? {
            errnoOf { _ = try fuse.directMmap(file.node, handle: handle, mappingID: mh, offset: offset, length: length,
                                              windowOffset: windowOffset, writable: writable) }
        }
        #expect(mmap(file.handle, mh: 1, offset: 100) == .invalidArgument)                          // misaligned offset
        #expect(mmap(file.handle, mh: 1, length: 100) == .invalidArgument)                          // misaligned length
        #expect(mmap(file.handle, mh: 1, length: 0) == .invalidArgument)
        #expect(mmap(file.handle, mh: 1, length: Self.regionSize + 4096) == .invalidArgument)        // beyond the region
        #expect(mmap(file.handle, mh: 1, offset: UInt64.max - 4095) == .invalidArgument)            // overflow
        #expect(mmap(file.handle, mh: 1, windowOffset: 1 << 20) == .invalidArgument)                 // outside the window
        #expect(mmap(file.handle, mh: 1, windowOffset: 100) == .invalidArgument)                     // misaligned in the window
        #expect(mmap(readOnly.handle, mh: 1, writable: true) == .permissionDenied)                   // read-only open
        #expect(mmap(FUSEServer.FileHandle(999_999), mh: 1) == .badFileDescriptor)                              // unknown handle
        #expect(mmap(file.handle, mh: 1) == nil)
        #expect(mmap(file.handle, mh: 1, windowOffset: 4096) == .invalidArgument)                    // id in use
        #expect(errnoOf { try fuse.directMunmap(file.node, handle: file.handle, mappingID: 77) } == .invalidArgument)  // unknown id
        #expect(errnoOf { try fuse.directMunmap(file.node, handle: readOnly.handle, mappingID: 1) } == .invalidArgument) // other handle
        #expect(rig.rings.mappedRegions == 1)
        #expect(errnoOf { try fuse.directMunmap(file.node, handle: file.handle, mappingID: 1) } == nil)
        #expect(rig.rings.mappedRegions == 0 && rig.rings.space.liveRegions == 0)
        try file.close(); try readOnly.close()
    }

    @Test func aMisalignedReplyIsRefusedByTheClient() throws {
        let rig = try Rig()
        let client = try rig.client { ShiftingChannel(inner: $0) }
        let file = try client.open("shared")
        #expect(errnoOf { _ = try file.mmap(length: 4096) } == .protocolError)
        // The client gave the mapping back.
        #expect(rig.rings.mappedRegions == 0 && rig.rings.space.liveRegions == 0)
        try file.close()
    }

    @Test func withoutTheFeatureTheClientFallsBack() throws {
        let rig = try Rig()
        // A client that does not offer the extension: DAX.
        let plainClient = try rig.client(mmapWindow: 0)
        #expect(!plainClient.usesDirectMmap)
        let ring = try plainClient.open("plain")
        let dax = try ring.mmap(length: 8192)
        #expect(dax.kind == .dax && Array(dax.bytes) == pattern(8192))
        try dax.unmap()
        try ring.close()
        // A server that does not announce it (no mmap window on its side): DAX.
        let fs = try PassthroughFS(root: rig.dir.path, options: PassthroughFS.Options(passthrough: false, logger: quietLogger, ringFiles: rig.rings))
        let daxWindow = try LocalWindow(size: 1 << 20), clientMmapWindow = try LocalWindow(size: 1 << 20)
        var options = DaxClient.Options()
        options.rangeSize = 64 << 10
        options.windowSize = 1 << 20
        let unaware = try DaxClient(channel: EmbeddedChannel(session: FUSESession(fileSystem: fs, logger: quietLogger, window: daxWindow)),
                                    window: daxWindow, mmapWindow: clientMmapWindow, options: options)
        #expect(!unaware.usesDirectMmap)
        let unawareRing = try unaware.open("shared")
        let unawareMapping = try unawareRing.mmap(length: 4096)
        #expect(unawareMapping.kind == .copy, "\(unawareMapping.kind)")  // an empty file: no DAX range either
        #expect(rig.rings.mappedRegions == 0)
        try unawareMapping.unmap()
        try unawareRing.close()
        // A file the server has no region for: DAX too.
        let client = try rig.client()
        let plain = try client.open("plain", flags: O_RDWR)
        let mapped = try plain.mmap(offset: 4096, length: 4096, writable: true)
        #expect(mapped.kind == .dax && Array(mapped.bytes) == Array(pattern(8192)[4096...]))
        mapped.bytes[0] = 0xEE
        #expect(try hostRead(rig.dir.file("plain"), count: 1, at: 4096) == [0xEE])
        try mapped.unmap()
        try plain.close()
        // No DAX either: a copy, written back on unmap.
        let copying = try rig.client(mmapWindow: 0, mode: .never)
        let copied = try copying.open("plain", flags: O_RDWR)
        let copy = try copied.mmap(offset: 0, length: 4096, writable: true)
        #expect(copy.kind == .copy && copy.bytes[4096 - 1] == pattern(4096)[4095])
        copy.bytes[1] = 0x11
        #expect(try hostRead(rig.dir.file("plain"), count: 1, at: 1) != [0x11])
        try copy.unmap()
        #expect(try hostRead(rig.dir.file("plain"), count: 1, at: 1) == [0x11])
        try copied.close()
    }
}

/// A channel that moves every DAXFS_MMAP reply's region offset by one byte:
/// a server breaking the SHMLBA rule.
final class ShiftingChannel: FUSEChannel {
    let inner: EmbeddedChannel
    init(inner: EmbeddedChannel) { self.inner = inner }

    func call<R>(_ request: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws(Errno) -> R) throws(Errno) -> R {
        let opcode = request.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        return try inner.call(request) { reply throws(Errno) -> R in
            guard opcode == FUSEOpcode.daxfsMmap.rawValue, reply.count == OutHeader.wireSize + DirectMmapOut.wireSize else { return try body(reply) }
            var bytes = Array(reply)
            bytes[OutHeader.wireSize + 8] &+= 1
            let shifted = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 8)
            defer { shifted.deallocate() }
            shifted.copyBytes(from: bytes)
            return try body(UnsafeRawBufferPointer(shifted))
        }
    }

    func send(_ request: UnsafeRawBufferPointer) throws(Errno) { try inner.send(request) }
}

/// A server that answers SETUPMAPPING and DAXFS_MMAP with success but maps
/// into memory the client does not see (as a vhost-user backend that never
/// sends SHMEM_MAP): the client must notice before it touches the window.
@Suite struct UnmappedReplyTests {
    @Test func theClientRefusesRangesThatWereNeverMapped() throws {
        let rig = try DirectMmapTests.Rig()
        let fs = try PassthroughFS(root: rig.dir.path, options: PassthroughFS.Options(passthrough: false, logger: quietLogger, ringFiles: rig.rings))
        var options = DaxClient.Options()
        options.rangeSize = 64 << 10
        options.windowSize = 1 << 20
        options.mode = .always
        options.mmapWindowSize = 1 << 20
        // The server's windows are not the client's.
        let serverWindow = try LocalWindow(size: 1 << 20), serverMmapWindow = try LocalWindow(size: 1 << 20)
        let clientWindow = try LocalWindow(size: 1 << 20), clientMmapWindow = try LocalWindow(size: 1 << 20)
        let session = FUSESession(fileSystem: fs, logger: quietLogger, window: serverWindow, mmapWindow: serverMmapWindow)
        let client = try DaxClient(channel: EmbeddedChannel(session: session), window: clientWindow, mmapWindow: clientMmapWindow,
                                   options: options)
        #expect(client.usesWindow && client.usesDirectMmap)

        // Reads fall back to FUSE_READ and return the data; nothing faults.
        let plain = try client.open("plain")
        #expect(try plain.read(count: 8192, at: 4096) == Array(pattern(100_000)[4096 ..< 12288]))
        let stats = client.statistics
        #expect(stats.setupFailures >= 1 && stats.fuseReads >= 1 && stats.windowHits == 0)
        // A DAX mmap is refused rather than handed out over inaccessible memory.
        #expect(throws: Errno.io) { try plain.mmap(length: 4096) }
        try plain.close()

        // So is a region the server claims it mapped.
        let ring = try client.open("shared", flags: O_RDWR)
        #expect(throws: Errno.io) { try ring.mmap(length: Int(DirectMmapTests.regionSize), writable: true) }
        try ring.close()
        // The refused region was given back to the server.
        #expect(rig.rings.mappedRegions == 0)
    }
}
