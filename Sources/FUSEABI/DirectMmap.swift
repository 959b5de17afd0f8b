/// FUSE direct mmap, a daxfs extension (seed 003: Tejun Heo's 2010 patch,
/// never merged into Linux). The server decides which memory backs a
/// client's mmap of a file: a region of its own (a memfd), shared by several
/// clients or private to one. Opcodes and the INIT flag sit far outside what
/// the kernel uses, and a peer only sends them after both sides announced
/// `InitFlags.daxfsDirectMmap` at INIT, so a kernel or a stock server never
/// receives them. See docs/PROTOCOL.md.
extension FUSEOpcode {
    /// `daxfs_mmap_in` → `daxfs_mmap_out`.
    public static let daxfsMmap = FUSEOpcode(rawValue: 0x4458_0001)
    /// `daxfs_munmap_in` → no payload.
    public static let daxfsMunmap = FUSEOpcode(rawValue: 0x4458_0002)
    /// The daxfs extensions, outside `allKnown` (the kernel's opcodes).
    public static let daxfsExtensions: [FUSEOpcode] = [.daxfsMmap, .daxfsMunmap]
}

extension InitFlags {
    /// Both sides speak FUSE direct mmap (`daxfsMmap`/`daxfsMunmap`). The top
    /// bit of flags2: the kernel's bits grow from the bottom (42 in 7.45).
    public static let daxfsDirectMmap = InitFlags(rawValue: 1 << 63)
}

/// Flags of the direct mmap messages.
public enum DirectMmapFlag {
    /// `daxfs_mmap_in.prot`: the client maps for reading / writing.
    public static let protRead: UInt32 = 1 << 0
    public static let protWrite: UInt32 = 1 << 1
    /// `daxfs_mmap_out.flags`: the mapping is not inherited across fork
    /// (the client applies MADV_DONTFORK).
    public static let dontCopy: UInt32 = 1 << 0
}

/// `struct daxfs_mmap_in`, 48 bytes: the client maps [offset, offset+length)
/// of open file `fh` at `windowOffset` of its mmap window (shared-memory id 1)
/// and names the mapping `mh` (unique among its live mappings).
public struct DirectMmapIn: WireStruct, Equatable {
    public static let wireSize = 48
    public var fh: UInt64, mh: UInt64, offset: UInt64, length: UInt64, windowOffset: UInt64, prot: UInt32, flags: UInt32
    public init(fh: UInt64, mh: UInt64, offset: UInt64, length: UInt64, windowOffset: UInt64, prot: UInt32, flags: UInt32) {
        self.fh = fh; self.mh = mh; self.offset = offset; self.length = length; self.windowOffset = windowOffset; self.prot = prot; self.flags = flags
    }
    public init(from r: inout WireReader) throws(WireError) {
        fh = try r.u64(); mh = try r.u64(); offset = try r.u64(); length = try r.u64(); windowOffset = try r.u64(); prot = try r.u32(); flags = try r.u32()
    }
    public func encode(to w: inout WireWriter) { w.u64(fh); w.u64(mh); w.u64(offset); w.u64(length); w.u64(windowOffset); w.u32(prot); w.u32(flags) }
}

/// `struct daxfs_mmap_out`, 24 bytes: the region the server chose (its id)
/// and where in that region the mapping starts. The client's requested file
/// offset is never rewritten; `regionOffset` must equal it modulo SHMLBA.
public struct DirectMmapOut: WireStruct, Equatable {
    public static let wireSize = 24
    public var region: UInt64, regionOffset: UInt64, flags: UInt32, padding: UInt32
    public init(region: UInt64, regionOffset: UInt64, flags: UInt32, padding: UInt32 = 0) {
        self.region = region; self.regionOffset = regionOffset; self.flags = flags; self.padding = padding
    }
    public init(from r: inout WireReader) throws(WireError) { region = try r.u64(); regionOffset = try r.u64(); flags = try r.u32(); padding = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u64(region); w.u64(regionOffset); w.u32(flags); w.u32(padding) }
}

/// `struct daxfs_munmap_in`, 16 bytes: the client's mapping `mh` of `fh` is gone.
public struct DirectMunmapIn: WireStruct, Equatable {
    public static let wireSize = 16
    public var fh: UInt64, mh: UInt64
    public init(fh: UInt64, mh: UInt64) { self.fh = fh; self.mh = mh }
    public init(from r: inout WireReader) throws(WireError) { fh = try r.u64(); mh = try r.u64() }
    public func encode(to w: inout WireWriter) { w.u64(fh); w.u64(mh) }
}
