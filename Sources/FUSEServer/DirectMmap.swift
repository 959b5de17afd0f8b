import FUSEABI
import Glibc
import HostSystem
import Synchronization

// FUSE direct mmap (seed 003), server side. A filesystem hands out regions of
// server-owned shared memory (memfds) for clients' mmaps of its files; the
// session maps the granted part of the region into the client's mmap window
// (shared-memory id 1) and counts the client mappings of each region. The
// last unmap — or the end of the connection that held it — tells the
// filesystem, which decides whether the region lives on.

/// Creates the regions of one filesystem (or device) and counts those alive.
public final class RegionSpace: Sendable {
    private let nextID = Atomic<UInt64>(1)
    private let alive = Atomic<Int>(0)
    public let name: String

    public init(name: String = "daxfs-region") { self.name = name }

    /// A new zero-filled region of `size` bytes (a multiple of the page size),
    /// mapped read-write into this process too (`SharedRegion.bytes`).
    public func makeRegion(size: UInt64) throws(Errno) -> SharedRegion {
        guard size > 0, size % UInt64(HostPage.size) == 0, size <= UInt64(Int.max) else { throw .invalidArgument }
        let fd = SharedDescriptor(try Syscall.sharedMemory(name: name, size: size))
        let address = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_SHARED, fd.rawValue, 0)
        guard let address, address != MAP_FAILED else { throw Errno(errno) }
        alive.add(1, ordering: .relaxed)
        return SharedRegion(id: nextID.add(1, ordering: .relaxed).oldValue, size: size, descriptor: fd, bytes: address, space: self)
    }

    /// Regions created here and not yet freed.
    public var liveRegions: Int { alive.load(ordering: .relaxed) }

    fileprivate func freed() { alive.subtract(1, ordering: .relaxed) }
}

/// A region of shared memory a server grants for clients' mmaps. Freed (the
/// memfd closed, the server's view unmapped) when the last reference to the
/// object goes: the filesystem's, and one per live client mapping.
public final class SharedRegion: @unchecked Sendable {
    /// Identity in the server's region space (never reused while it lives).
    public let id: UInt64
    public let size: UInt64
    public let descriptor: SharedDescriptor
    /// The server's own read-write view: what it writes here, clients see.
    public let bytes: UnsafeMutableRawPointer
    private let space: RegionSpace
    /// Live client mappings of this region, over all connections.
    let clientMappings = Atomic<Int>(0)

    fileprivate init(id: UInt64, size: UInt64, descriptor: SharedDescriptor, bytes: UnsafeMutableRawPointer, space: RegionSpace) {
        self.id = id
        self.size = size
        self.descriptor = descriptor
        self.bytes = bytes
        self.space = space
    }

    deinit {
        munmap(bytes, Int(size))
        space.freed()
    }

    /// Client mappings alive now.
    public var mappingCount: Int { clientMappings.load(ordering: .relaxed) }
}

/// A client's mmap of an open file, as the filesystem sees it.
public struct DirectMmapRequest: Sendable, Equatable {
    /// File offset and length the client asked for (page-aligned).
    public var offset: UInt64
    public var length: UInt64
    public var writable: Bool
}

/// The filesystem's answer: which region backs the mapping, from where.
public struct DirectMmapGrant: Sendable {
    public var region: SharedRegion
    /// Where the mapping starts in the region; must equal the request's file
    /// offset modulo SHMLBA (the page size here) and leave room for the length.
    public var regionOffset: UInt64
    /// The client must not pass the mapping on to a forked child.
    public var dontCopy: Bool

    public init(region: SharedRegion, regionOffset: UInt64 = 0, dontCopy: Bool = false) {
        self.region = region
        self.regionOffset = regionOffset
        self.dontCopy = dontCopy
    }
}

/// One client mapping the session keeps (by the client's mapping id).
struct DirectMapping {
    let region: SharedRegion
    let handle: UInt64
    let windowOffset: UInt64
    let length: UInt64
}

extension FUSESession {
    /// SHMLBA on x86-64 and arm64: the page size.
    public static var shmlba: UInt64 { UInt64(HostPage.size) }

    func directMmap(_ ctx: RequestContext, node: NodeID, _ input: DirectMmapIn) throws(Errno) -> DirectMmapOut {
        guard capabilities.contains(.daxfsDirectMmap), let window = mmapWindow else { throw .notImplemented }
        let page = UInt64(HostPage.size)
        let knownProt = DirectMmapFlag.protRead | DirectMmapFlag.protWrite
        guard input.flags == 0, input.prot & ~knownProt == 0, input.prot != 0 else { throw .invalidArgument }
        guard input.length > 0, input.offset % page == 0, input.length % page == 0 else { throw .invalidArgument }
        let (fileEnd, overflow) = input.offset.addingReportingOverflow(input.length)
        guard !overflow, fileEnd <= UInt64(Int64.max) else { throw .invalidArgument }
        try MappingRules(alignmentLog2: UInt16(page.trailingZeroBitCount), windowSize: window.windowSize)
            .checkWindowRange(offset: input.windowOffset, length: input.length)
        // Reserve the mapping id first: a second MMAP with the same id fails
        // even while the first is still being served.
        let reserved = state.withLock { s -> Bool in
            guard s.mmaps[input.mh] == nil, !s.reservedMmapIDs.contains(input.mh) else { return false }
            s.reservedMmapIDs.insert(input.mh)
            return true
        }
        guard reserved else { throw .invalidArgument }
        defer { state.withLock { _ = $0.reservedMmapIDs.remove(input.mh) } }

        let writable = input.prot & DirectMmapFlag.protWrite != 0
        let request = DirectMmapRequest(offset: input.offset, length: input.length, writable: writable)
        let grant = try fileSystem.directMmap(ctx, node: node, handle: FileHandle(input.fh), request: request)
        let region = grant.region
        let (regionEnd, regionOverflow) = grant.regionOffset.addingReportingOverflow(input.length)
        guard grant.regionOffset % Self.shmlba == input.offset % Self.shmlba, grant.regionOffset % page == 0,
              !regionOverflow, regionEnd <= region.size else {
            logger.error("the filesystem granted [\(grant.regionOffset), +\(input.length)) of a \(region.size)-byte region for an mmap at offset \(input.offset): refused")
            throw .invalidArgument
        }
        region.clientMappings.add(1, ordering: .relaxed)
        do throws(Errno) {
            try window.map(fd: region.descriptor.rawValue, fileOffset: grant.regionOffset, windowOffset: input.windowOffset,
                           length: input.length, writable: writable)
        } catch {
            dropClientMapping(region)
            throw error
        }
        let mapping = DirectMapping(region: region, handle: input.fh, windowOffset: input.windowOffset, length: input.length)
        state.withLock { $0.mmaps[input.mh] = mapping }
        return DirectMmapOut(region: region.id, regionOffset: grant.regionOffset, flags: grant.dontCopy ? DirectMmapFlag.dontCopy : 0)
    }

    func directMunmap(_ input: DirectMunmapIn) throws(Errno) {
        guard capabilities.contains(.daxfsDirectMmap), let window = mmapWindow else { throw .notImplemented }
        let mapping = state.withLock { s -> DirectMapping? in
            guard let mapping = s.mmaps[input.mh], mapping.handle == input.fh else { return nil }
            s.mmaps[input.mh] = nil
            return mapping
        }
        guard let mapping else { throw .invalidArgument }
        // Only ever makes the range inaccessible; the reference goes either way.
        let unmapped = Result { () throws(Errno) in try window.unmap(windowOffset: mapping.windowOffset, length: mapping.length) }
        dropClientMapping(mapping.region)
        try unmapped.get()
    }

    /// The connection ended: every mapping it held goes (the client's memory
    /// is gone with it, so nothing is unmapped there).
    func dropAllDirectMappings() {
        let mappings = state.withLock { s -> [DirectMapping] in
            defer { s.mmaps.removeAll() }
            return Array(s.mmaps.values)
        }
        for mapping in mappings { dropClientMapping(mapping.region) }
    }

    /// Live client mappings of this connection.
    public var directMappingCount: Int { state.withLock { $0.mmaps.count } }

    private func dropClientMapping(_ region: SharedRegion) {
        if region.clientMappings.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            fileSystem.regionUnmapped(region)
        }
    }
}
