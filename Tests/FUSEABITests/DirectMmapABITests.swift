import FUSEABI
import Testing

/// The daxfs direct-mmap extension never collides with what a kernel speaks.
@Suite("Direct mmap extension ABI")
struct DirectMmapABITests {
    @Test func opcodesAndFlagStayOutOfTheKernelsRange() {
        let kernel = Set(FUSEOpcode.allKnown.map(\.rawValue))
        for opcode in FUSEOpcode.daxfsExtensions {
            #expect(!kernel.contains(opcode.rawValue))
            #expect(opcode.rawValue > FUSEOpcode.cuseInit.rawValue)
        }
        #expect(FUSEOpcode.daxfsMmap.description == "DAXFS_MMAP" && FUSEOpcode.daxfsMunmap.description == "DAXFS_MUNMAP")
        // Every kernel INIT bit of 7.45 lies below the extension's bit.
        #expect(InitFlags.daxfsDirectMmap.rawValue > InitFlags.requestTimeout.rawValue << 16)
    }

    @Test func structsHaveTheirDocumentedLayout() throws {
        let input = DirectMmapIn(fh: 0x0102_0304_0506_0708, mh: 2, offset: 3, length: 4, windowOffset: 5, prot: 6, flags: 7)
        let bytes = input.wireBytes
        #expect(bytes.count == 48)
        #expect(Array(bytes[0 ..< 8]) == [8, 7, 6, 5, 4, 3, 2, 1])
        #expect(bytes[8] == 2 && bytes[16] == 3 && bytes[24] == 4 && bytes[32] == 5 && bytes[40] == 6 && bytes[44] == 7)
        #expect(try DirectMmapIn(wireBytes: bytes) == input)

        let output = DirectMmapOut(region: 9, regionOffset: 4096, flags: DirectMmapFlag.dontCopy)
        #expect(output.wireBytes.count == 24 && output.wireBytes[0] == 9 && output.wireBytes[9] == 0x10 && output.wireBytes[16] == 1)
        #expect(try DirectMmapOut(wireBytes: output.wireBytes) == output)

        let unmap = DirectMunmapIn(fh: 1, mh: 2)
        #expect(unmap.wireBytes == [1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0])
        #expect(throws: WireError.truncated) { try DirectMmapIn(wireBytes: Array(bytes[0 ..< 47])) }
    }
}
