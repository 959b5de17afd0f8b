import DAX
@_spi(Testing) import DaxClient
import FUSEABI
import FUSEServer
import Foundation
import Glibc
import HostSystem
import PassthroughFS
import Testing

@Suite("Alignment matrix")
struct AlignmentTests {
    @Test(arguments: [UInt16(12), 14, 16, 21])
    func serverAlignmentThatDividesTheRangeIsAccepted(_ log2: UInt16) throws {
        let dir = TempDir("align")
        let content = pattern(3 << 20)
        try hostWrite(dir.file("f"), content)
        let client = try makeClient(dir.path, ranges: 4, rangeSize: 2 << 20, alignment: log2)
        #expect(client.negotiated.mapAlignmentLog2 == log2)
        #expect(client.usesWindow)
        let file = try client.open("f", flags: O_RDWR)
        #expect(same(try file.read(count: content.count, at: 0), content))
        try file.write([1, 2, 3], at: (2 << 20) + 5)
        #expect(same(try hostRead(dir.file("f"), count: 3, at: (2 << 20) + 5), [1, 2, 3]))
        #expect(client.statistics.mappingsSetUp == 2)
        #expect(client.statistics.fuseReads == 0)
        try file.close()
    }

    @Test func coarserAlignmentThanTheRangeIsRefusedInPlainWords() throws {
        let dir = TempDir("align22")
        do {
            _ = try makeClient(dir.path, ranges: 4, rangeSize: 2 << 20, alignment: 22)
            Issue.record("a server needing 4 MiB alignment was accepted with 2 MiB ranges")
        } catch let error as DaxClientError {
            #expect(error.kind == .mapAlignment(serverLog2: 22, rangeSize: 2 << 20))
            #expect(error.description == "server needs 4 MiB alignment for DAX mappings (map_alignment 22); this client's ranges are 2 MiB")
        }
        // Smaller ranges are judged the same way.
        #expect(throws: DaxClientError.self) { try makeClient(dir.path, ranges: 4, rangeSize: 64 << 10, alignment: 17) }
    }

    @Test func serverWithoutAWindowFallsBackToReadAndWrite() throws {
        let dir = TempDir("nowindow")
        try hostWrite(dir.file("f"), pattern(100_000))
        let fs = try PassthroughFS(root: dir.path, options: PassthroughFS.Options(passthrough: false, logger: quietLogger))
        let session = FUSESession(fileSystem: fs, logger: quietLogger)  // no window: no FUSE_MAP_ALIGNMENT
        let window = try LocalWindow(size: 4 << 20)
        let client = try DaxClient(channel: EmbeddedChannel(session: session), window: window)
        #expect(client.negotiated.mapAlignmentLog2 == nil)
        #expect(!client.usesWindow)
        let file = try client.open("f", flags: O_RDWR)
        #expect(same(try file.read(count: 100_000, at: 0), pattern(100_000)))
        try file.write([9, 9], at: 10)
        #expect(same(try hostRead(dir.file("f"), count: 2, at: 10), [9, 9]))
        #expect(client.statistics.fuseReads > 0 && client.statistics.fuseWrites == 1)
        try file.close()
    }

    @Test func noDaxModeUsesOnlyReadAndWrite() throws {
        let dir = TempDir("nodax")
        try hostWrite(dir.file("f"), pattern(70_000))
        let client = try makeClient(dir.path, mode: .never)
        #expect(!client.usesWindow)
        let file = try client.open("f", flags: O_RDWR)
        #expect(same(try file.read(count: 70_000, at: 0), pattern(70_000)))
        try file.write([5], at: 0)
        #expect(client.statistics.mappingsSetUp == 0 && client.statistics.fuseWrites == 1)
        try file.close()
    }
}

@Suite("Coherence")
struct CoherenceTests {
    @Test func hostWritesAreVisibleThroughTheWindowAtOnce() throws {
        let dir = TempDir("coh1")
        let path = dir.file("f")
        try hostWrite(path, pattern(200_000))
        let client = try makeClient(dir.path)
        let file = try client.open("f")
        #expect(same(try file.read(count: 1000, at: 100_000), pattern(1000, offset: 100_000)))
        try hostWrite(path, [0xAA, 0xBB, 0xCC], at: 100_010)
        let after = try file.read(count: 4, at: 100_009)
        #expect(after == [pattern(1, offset: 100_009)[0], 0xAA, 0xBB, 0xCC])
        let stats = client.statistics
        #expect(stats.mappingsSetUp == 1 && stats.windowHits >= 1 && stats.fuseReads == 0)
        try file.close()
    }

    @Test func windowWritesAreVisibleToTheHostAtOnce() throws {
        let dir = TempDir("coh2")
        let path = dir.file("f")
        try hostWrite(path, pattern(200_000))
        let client = try makeClient(dir.path)
        let file = try client.open("f", flags: O_RDWR)
        try file.write([1, 2, 3, 4], at: 150_000)
        #expect(try hostRead(path, count: 4, at: 150_000) == [1, 2, 3, 4])
        #expect(client.statistics.fuseWrites == 0, "a write inside the file must go through the window")
        try file.fsync()
        try file.close()
    }

    @Test func twoClientsSeeEachOthersWrites() throws {
        let dir = TempDir("coh3")
        try hostWrite(dir.file("shared"), pattern(300_000))
        let a = try makeClient(dir.path)
        let b = try makeClient(dir.path)
        let fa = try a.open("shared", flags: O_RDWR)
        let fb = try b.open("shared", flags: O_RDWR)
        #expect(same(try fb.read(count: 16, at: 70_000), pattern(16, offset: 70_000)))
        try fa.write([7, 7, 7], at: 70_001)
        #expect(try fb.read(count: 3, at: 70_001) == [7, 7, 7])
        try fb.write([8, 8], at: 250_000)
        #expect(try fa.read(count: 2, at: 250_000) == [8, 8])
        // An extension by one client becomes visible to the other's reads.
        try fa.write([6, 6, 6, 6], at: 300_000)
        #expect(try fb.read(count: 10, at: 299_998) == Array(pattern(2, offset: 299_998)) + [6, 6, 6, 6])
        #expect(a.statistics.fuseReads == 0 && b.statistics.fuseReads == 0)
        #expect(a.statistics.mappingsSetUp > 0 && b.statistics.mappingsSetUp > 0)
        try fa.close()
        try fb.close()
    }

    @Test func mappedBytesAreLentWithoutCopy() throws {
        let dir = TempDir("lend")
        let path = dir.file("f")
        try hostWrite(path, pattern(100_000))
        let client = try makeClient(dir.path)
        let file = try client.open("f")
        try file.withMappedBytes(offset: 65_536 + 10, length: 100) { bytes in
            #expect(same(Array(bytes), pattern(100, offset: 65_546)))
            try hostWrite(path, [42], at: 65_546)
            #expect(bytes[0] == 42, "the lent bytes are the host page cache")
        }
        #expect(throws: Errno.invalidArgument) { try file.withMappedBytes(offset: 65_000, length: 1000) { _ in } }  // crosses a range
        #expect(throws: Errno.invalidArgument) { try file.withMappedBytes(offset: 99_990, length: 20) { _ in } }  // beyond EOF
        try file.close()
    }

    @Test func pathOperations() throws {
        let dir = TempDir("paths")
        let client = try makeClient(dir.path)
        try client.mkdir("d")
        try client.mkdir("d/e")
        let file = try client.create("d/e/new.txt")
        try file.write(Array("hello".utf8), at: 0)
        #expect(file.cachedSize == 5)
        try file.close()
        #expect(try hostRead(dir.file("d/e/new.txt"), count: 10) == Array("hello".utf8))
        #expect(try client.stat("d/e/new.txt").size == 5)
        #expect(try client.list("d").map(\.name) == ["e"])
        #expect(try client.list("d/e").map(\.name) == ["new.txt"])
        #expect(throws: Errno.exists) { try client.open("d/e/new.txt", flags: O_RDWR | O_CREAT | O_EXCL) }
        #expect(throws: Errno.noEntry) { try client.open("d/missing") }
        #expect(throws: Errno.isDirectory) { try client.open("d") }
        try client.unlink("d/e/new.txt")
        #expect(throws: Errno.noEntry) { try client.stat("d/e/new.txt") }
        // O_TRUNC through open drops the old contents.
        try hostWrite(dir.file("t"), pattern(5000))
        let truncated = try client.open("t", flags: O_RDWR | O_TRUNC)
        #expect(try truncated.read(count: 10, at: 0) == [])
        try truncated.close()
        #expect(try hostSize(dir.file("t")) == 0)
    }
}

@Suite("Window manager")
struct WindowManagerTests {
    @Test func writeAfterReadUpgradesInPlace() throws {
        let dir = TempDir("upgrade")
        try hostWrite(dir.file("f"), pattern(200_000))
        let client = try makeClient(dir.path)
        let file = try client.open("f", flags: O_RDWR)
        _ = try file.read(count: 10, at: 70_000)  // chunk 1
        let before = try #require(client.windowMapping(of: file, chunk: 1))
        #expect(!before.writable)
        try file.write([1], at: 70_001)
        let after = try #require(client.windowMapping(of: file, chunk: 1))
        #expect(after.writable && after.offset == before.offset)
        #expect(client.statistics.upgrades == 1 && client.statistics.mappingsSetUp == 1)
        try file.write([2], at: 70_002)
        #expect(client.statistics.upgrades == 1)
        // A chunk first touched by a write is mapped writable at once.
        try file.write([3], at: 140_000)
        #expect(client.windowMapping(of: file, chunk: 2)?.writable == true)
        #expect(client.statistics.upgrades == 1 && client.statistics.mappingsSetUp == 2)
        #expect(try hostRead(dir.file("f"), count: 2, at: 70_001) == [1, 2])
        try file.close()
    }

    @Test func victimsAreLeastRecentlyUsed() throws {
        let dir = TempDir("lru")
        try hostWrite(dir.file("f"), pattern(8 << 16))
        let client = try makeClient(dir.path, ranges: 4) { $0.backgroundReclaim = false }
        let file = try client.open("f")
        for chunk in [0, 1, 2, 3, 0] { _ = try file.read(count: 1, at: UInt64(chunk) << 16) }
        #expect(client.mappedChunks(of: file) == [0, 1, 2, 3])
        _ = try file.read(count: 1, at: 4 << 16)  // evicts chunk 1, the least recently used
        #expect(client.mappedChunks(of: file) == [0, 2, 3, 4])
        _ = try file.read(count: 1, at: 2 << 16)
        _ = try file.read(count: 1, at: 5 << 16)  // evicts chunk 3
        #expect(client.mappedChunks(of: file) == [0, 2, 4, 5])
        #expect(client.statistics.reclaimedInline == 2)
        #expect(client.windowInvariantViolations() == [])
        try file.close()
        #expect(client.statistics.freeRanges == 4)
        #expect(client.statistics.removedByOwner == 4)
    }

    @Test func backgroundReclaimKeepsTwentyPercentFreeOnceTheWindowRunsOut() throws {
        let dir = TempDir("bg")
        try hostWrite(dir.file("f"), pattern(20 << 16))
        let client = try makeClient(dir.path, ranges: 10)  // threshold: 2 free ranges
        let file = try client.open("f")
        for chunk in 0 ..< 12 { _ = try file.read(count: 1, at: UInt64(chunk) << 16) }
        // Chunk 10 finds the window full and steals inline, which wakes the
        // reclaimer; chunk 11 steals too unless the reclaimer already freed a
        // range — a race the test must not depend on.
        let early = client.statistics
        #expect(early.reclaimedInline >= 1 && early.reclaimedInline + early.reclaimedInBackground >= 2, "\(early)")
        _ = try file.read(count: 1, at: 12 << 16)  // takes a free range, if reclaim made one; else steals
        let deadline = Date().addingTimeInterval(5)
        while client.statistics.freeRanges < 2 && Date() < deadline { usleep(1000) }
        let stats = client.statistics
        #expect(stats.freeRanges >= 2 && stats.reclaimedInBackground >= 1, "\(stats)")
        #expect(stats.removeMappingMessages >= 1)
        // The oldest chunks went first.
        #expect(!client.mappedChunks(of: file).contains(2))
        #expect(client.mappedChunks(of: file).contains(12))
        #expect(client.windowInvariantViolations() == [])
        try file.close()
    }

    @Test func aWindowThatHoldsTheWorkingSetNeverReclaims() throws {
        // Linux reclaims whenever fewer than 20 % of ranges are free, so a
        // working set of 80–100 % of the window thrashes; here it does not.
        let dir = TempDir("full")
        try hostWrite(dir.file("f"), pattern(10 << 16))
        let client = try makeClient(dir.path, ranges: 10)
        let file = try client.open("f")
        for round in 0 ..< 20 {
            for chunk in 0 ..< 10 { _ = try file.read(count: 1, at: UInt64((chunk * 7 + round) % 10) << 16) }
        }
        usleep(20_000)
        let stats = client.statistics
        #expect(stats.mappingsSetUp == 10 && stats.reclaimed == 0 && stats.windowHits == 190, "\(stats)")
        try file.close()
    }

    @Test func smallMissesUnderPressureUseReadUntilAChunkIsHot() throws {
        let dir = TempDir("adaptive")
        try hostWrite(dir.file("f"), pattern(64 << 16))
        let client = try makeClient(dir.path, ranges: 8, mode: .auto) { $0.backgroundReclaim = false; $0.admitAfterMisses = 4 }
        let file = try client.open("f")
        for chunk in 0 ..< 8 { _ = try file.read(count: 1, at: UInt64(chunk) << 16) }  // fill the window
        #expect(client.statistics.mappingsSetUp == 8)
        // Pressure now: a small miss is served by FUSE_READ and maps nothing.
        #expect(try file.read(count: 100, at: 20 << 16) == pattern(100, offset: 20 << 16))
        #expect(client.statistics.mappingsSetUp == 8 && client.statistics.pressureFallbacks == 1 && client.statistics.fuseReads == 1)
        // A chunk that keeps missing is hot: it is mapped.
        for _ in 0 ..< 3 { _ = try file.read(count: 100, at: 20 << 16) }
        #expect(client.mappedChunks(of: file).contains(20))
        // A large read always maps.
        #expect(same(try file.read(count: 1 << 16, at: 30 << 16), pattern(1 << 16, offset: 30 << 16)))
        #expect(client.mappedChunks(of: file).contains(30))
        #expect(client.windowInvariantViolations() == [])
        try file.close()
    }

    @Test func truncateDropsMappingsBeyondTheEnd() throws {
        let dir = TempDir("trunc")
        try hostWrite(dir.file("f"), pattern(5 << 16))
        let client = try makeClient(dir.path)
        let file = try client.open("f", flags: O_RDWR)
        _ = try file.read(count: 5 << 16, at: 0)
        #expect(client.mappedChunks(of: file) == [0, 1, 2, 3, 4])
        try file.truncate(to: (1 << 16) + 10)
        #expect(client.mappedChunks(of: file) == [0, 1])
        #expect(try file.read(count: 100, at: 1 << 16) == pattern(10, offset: 1 << 16))
        try file.truncate(to: 3 << 16)  // extend: zeros
        #expect(try file.read(count: 4, at: (1 << 16) + 8) == pattern(2, offset: (1 << 16) + 8) + [0, 0])
        #expect(try hostSize(dir.file("f")) == 3 << 16)
        try file.close()
    }

    @Test func extendingWritesAreFuseWrites() throws {
        let dir = TempDir("extend")
        try hostWrite(dir.file("f"), pattern(1000))
        let client = try makeClient(dir.path)
        let file = try client.open("f", flags: O_RDWR)
        try file.write([UInt8](repeating: 1, count: 200), at: 900)  // 100 inside, 100 beyond
        #expect(client.statistics.fuseWrites == 1)
        #expect(file.cachedSize == 1100)
        #expect(try hostRead(dir.file("f"), count: 300, at: 850) == pattern(50, offset: 850) + [UInt8](repeating: 1, count: 200))
        try file.write([2], at: 5000)  // leaves a hole
        #expect(try file.read(count: 3, at: 4999) == [0, 2])
        try file.close()
    }
}

@Suite("Fault safety")
struct FaultTests {
    @Test func hostTruncateUnderAMappingGivesShortReadsAndEIO() throws {
        let dir = TempDir("fault")
        let path = dir.file("f")
        try hostWrite(path, pattern(4 << 16))
        let client = try makeClient(dir.path)
        let file = try client.open("f", flags: O_RDWR)
        #expect(same(try file.read(count: 4 << 16, at: 0), pattern(4 << 16)))
        try hostTruncate(path, to: 4096)  // the client's cached size is now stale

        // A read starting in the last page stops at the page boundary (short), not a crash.
        let short = try file.read(count: 8192, at: 0)
        #expect(short.count <= 4096 && short.count > 0)
        // A read wholly beyond the new end: end of file or EIO.
        do {
            let beyond = try file.read(count: 100, at: 3 << 16)
            #expect(beyond.isEmpty)
        } catch {
            #expect(error == .io)
        }
        #expect(file.cachedSize == 4096, "the fault refreshed the size")
        #expect(client.statistics.faults >= 1)
        try file.close()
    }

    @Test func writeIntoATruncatedMappingIsEIOOrShort() throws {
        let dir = TempDir("faultw")
        let path = dir.file("f")
        try hostWrite(path, pattern(4 << 16))
        let client = try makeClient(dir.path)
        let file = try client.open("f", flags: O_RDWR)
        try file.write([1], at: 3 << 16)  // maps chunk 3 writable
        try hostTruncate(path, to: 4096)
        do {
            let wrote = try file.write([UInt8](repeating: 3, count: 100), at: (3 << 16) + 10)
            #expect(wrote < 100, "a write into a page the file lost cannot fully succeed")
        } catch {
            #expect(error == .io)
        }
        #expect(try hostSize(path) == 4096)
        // After the fault the client knows the size; a new write extends with FUSE_WRITE.
        try file.write([4], at: 10_000)
        #expect(try hostRead(path, count: 1, at: 10_000) == [4])
        try file.close()
    }

    @Test func truncateByAnotherClientUnderAMapping() throws {
        let dir = TempDir("fault2")
        try hostWrite(dir.file("f"), pattern(4 << 16))
        let a = try makeClient(dir.path)
        let b = try makeClient(dir.path)
        let fa = try a.open("f")
        let fb = try b.open("f", flags: O_RDWR)
        #expect(same(try fa.read(count: 4 << 16, at: 0), pattern(4 << 16)))
        try fb.truncate(to: 100)
        do {
            let got = try fa.read(count: 1 << 16, at: 2 << 16)
            #expect(got.isEmpty)
        } catch {
            #expect(error == .io)
        }
        #expect(try fa.read(count: 200, at: 0).count <= 4096)
        try fa.close()
        try fb.close()
    }
}
