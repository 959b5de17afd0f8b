import DAX
import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import Synchronization

/// A client's mmap of a file (`DaxFile.mmap`): memory it reads and writes
/// directly. Which memory depends on what the server offers:
/// - `.region`: FUSE direct mmap — a region of the server's own shared memory
///   (a device-like file: a ring buffer the server writes, a shared scratch
///   area), mapped into this client's mmap window;
/// - `.dax`: a DAX range of the file's host page cache, held mapped (not
///   reclaimed) until `unmap`;
/// - `.copy`: a private copy read with FUSE_READ (written back with
///   FUSE_WRITE by `sync` and `unmap` when writable): a server with neither.
public final class FileMapping: @unchecked Sendable {
    public enum Kind: Sendable, Equatable {
        /// The server's region `id`, from `regionOffset`.
        case region(id: UInt64, regionOffset: UInt64)
        case dax
        case copy
    }

    public let kind: Kind
    /// File offset and length asked for.
    public let offset: UInt64
    public let length: Int
    public let writable: Bool
    /// The server asked that forked children not inherit the mapping (MADV_DONTFORK applied).
    public let dontCopy: Bool
    public let pointer: UnsafeMutableRawPointer
    private let teardown: Locked<(() throws(Errno) -> Void)?>
    private let writeBack: (() throws(Errno) -> Void)?

    init(kind: Kind, offset: UInt64, length: Int, writable: Bool, dontCopy: Bool, pointer: UnsafeMutableRawPointer,
         writeBack: (() throws(Errno) -> Void)? = nil, teardown: @escaping () throws(Errno) -> Void) {
        self.kind = kind
        self.offset = offset
        self.length = length
        self.writable = writable
        self.dontCopy = dontCopy
        self.pointer = pointer
        self.writeBack = writeBack
        self.teardown = Locked(teardown)
    }

    deinit { try? unmap() }

    /// The mapped bytes; valid until `unmap`.
    public var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: pointer, count: length) }

    /// Makes writes to a `.copy` mapping reach the file (the others are the
    /// file's or the server's memory already).
    public func sync() throws(Errno) { try writeBack?() }

    /// Ends the mapping (DAXFS_MUNMAP for a region); the memory must not be
    /// touched afterwards. Safe to call twice.
    public func unmap() throws(Errno) {
        let body = teardown.withLock { current -> (() throws(Errno) -> Void)? in
            defer { current = nil }
            return current
        }
        try body?()
    }
}

/// Page-granular first-fit allocation of the mmap window.
final class WindowSpace: Sendable {
    private let free: Locked<[(offset: UInt64, length: UInt64)]>
    let size: UInt64

    init(size: UInt64) {
        self.size = size
        free = Locked(size > 0 ? [(offset: UInt64(0), length: size)] : [])
    }

    func allocate(_ length: UInt64) -> UInt64? {
        free.withLock { list -> UInt64? in
            guard let i = list.firstIndex(where: { $0.length >= length }) else { return nil }
            let start = list[i].offset
            if list[i].length == length { list.remove(at: i) } else { list[i] = (start + length, list[i].length - length) }
            return start
        }
    }

    func release(_ offset: UInt64, _ length: UInt64) {
        free.withLock { list in
            let i = list.firstIndex(where: { $0.offset > offset }) ?? list.count
            list.insert((offset, length), at: i)
            // Merge with the neighbours.
            if i + 1 < list.count, list[i].offset + list[i].length == list[i + 1].offset {
                list[i].length += list[i + 1].length
                list.remove(at: i + 1)
            }
            if i > 0, list[i - 1].offset + list[i - 1].length == list[i].offset {
                list[i - 1].length += list[i].length
                list.remove(at: i)
            }
        }
    }

    /// Bytes free now.
    var available: UInt64 { free.withLock { $0.reduce(0) { $0 + $1.length } } }
}

extension DaxFile {
    /// Maps [offset, offset+length) of the file into this process: the
    /// server's region when it offers FUSE direct mmap for this file, else a
    /// DAX range (when the span lies in one range), else a copy (see
    /// `FileMapping`). `offset` must be page-aligned.
    public func mmap(offset: UInt64 = 0, length: Int, writable: Bool = false) throws(Errno) -> FileMapping {
        guard !isClosed else { throw .badFileDescriptor }
        guard readable, !writable || self.writable else { throw .permissionDenied }
        let page = UInt64(HostPage.size)
        guard length > 0, offset % page == 0 else { throw .invalidArgument }
        let (_, overflow) = offset.addingReportingOverflow(UInt64(length))
        guard !overflow else { throw .invalidArgument }
        if let space = client.mmapSpace, client.directMmapEnabled.load(ordering: .relaxed) {
            do throws(Errno) {
                return try regionMapping(space: space, offset: offset, length: length, writable: writable)
            } catch where error == .notImplemented {
                // This file (or this server) has no regions: the fallbacks below.
            }
        }
        if let mapping = try daxMapping(offset: offset, length: length, writable: writable) { return mapping }
        return try copyMapping(offset: offset, length: length, writable: writable)
    }

    private func regionMapping(space: WindowSpace, offset: UInt64, length: Int, writable: Bool) throws(Errno) -> FileMapping {
        let page = UInt64(HostPage.size)
        let span = (UInt64(length) + page - 1) / page * page
        guard let windowOffset = space.allocate(span) else { throw .noMemory }
        let id = client.nextMappingID.add(1, ordering: .relaxed).oldValue
        let client = self.client
        let node = self.node, handle = self.handle
        let out: DirectMmapOut
        do throws(Errno) {
            out = try client.mmapWindow.allowingChanges([(windowOffset, span)]) { () throws(Errno) in
                try client.fuse.directMmap(node, handle: handle, mappingID: id, offset: offset, length: span,
                                           windowOffset: windowOffset, writable: writable)
            }
        } catch {
            space.release(windowOffset, span)
            throw error
        }
        let unmapRegion = { () throws(Errno) in
            defer { space.release(windowOffset, span) }
            try client.mmapWindow.allowingChanges([(windowOffset, span)]) { () throws(Errno) in
                try client.fuse.directMunmap(node, handle: handle, mappingID: id)
            }
        }
        // The server may pick any region and place, but pages that end up
        // shared must keep their alignment (SHMLBA): refuse anything else.
        guard out.regionOffset % FUSESession.shmlba == offset % FUSESession.shmlba, out.regionOffset % page == 0 else {
            try? unmapRegion()
            client.logRefusal("the server placed an mmap at offset \(offset) at region offset \(out.regionOffset), which breaks SHMLBA alignment")
            throw .protocolError
        }
        // A server that answers without mapping the region (no SHMEM_MAP
        // reached the window) would leave inaccessible memory behind `bytes`.
        guard let window = client.mmapWindow, window.isMapped(offset: windowOffset, length: span, writable: writable) else {
            try? unmapRegion()
            client.logRefusal("the server answered DAXFS_MMAP at window offset \(windowOffset) but nothing was mapped there")
            throw .io
        }
        let pointer = window.base + Int(windowOffset)
        let dontCopy = out.flags & DirectMmapFlag.dontCopy != 0
        if dontCopy { _ = madvise(pointer, Int(span), MADV_DONTFORK) }
        return FileMapping(kind: .region(id: out.region, regionOffset: out.regionOffset), offset: offset, length: length,
                           writable: writable, dontCopy: dontCopy, pointer: pointer, teardown: unmapRegion)
    }

    /// The span as a DAX range held until unmap; nil when DAX is off or the span crosses ranges or the end of file.
    private func daxMapping(offset: UInt64, length: Int, writable: Bool) throws(Errno) -> FileMapping? {
        guard let manager = client.manager, manager.enabled.load(ordering: .relaxed) else { return nil }
        let within = offset & (manager.rangeSize - 1)
        guard within + UInt64(length) <= manager.rangeSize else { return nil }
        // As mmap(2): the last page may run past the end of file (it reads as zeros).
        let page = UInt64(HostPage.size)
        let end = offset + UInt64(length)
        var size = record.size.load(ordering: .relaxed)
        if end > (size + page - 1) / page * page { size = try self.size() }
        guard end <= (size + page - 1) / page * page else { return nil }
        guard let lease = try manager.acquire(node: node.rawValue, chunk: offset >> manager.rangeShift, hints: record.hints,
                                              writable: writable, use: .lend) else { return nil }
        return FileMapping(kind: .dax, offset: offset, length: length, writable: writable, dontCopy: false,
                           pointer: lease.pointer + Int(within)) { manager.release(lease) }
    }

    /// A private copy, read now and written back by `sync`/`unmap` when writable.
    private func copyMapping(offset: UInt64, length: Int, writable: Bool) throws(Errno) -> FileMapping {
        let address = Glibc.mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let address, address != MAP_FAILED else { throw .noMemory }
        let buffer = UnsafeMutableRawBufferPointer(start: address, count: length)
        do throws(Errno) {
            _ = try pread(into: buffer, at: offset)
        } catch {
            munmap(address, length)
            throw error
        }
        let writeBack: (() throws(Errno) -> Void)? = writable ? { [self] () throws(Errno) in
            // Within the file as it is now: a mapping never extends the file.
            let size = try self.size()
            guard offset < size else { return }
            let count = Int(min(UInt64(length), size - offset))
            _ = try pwrite(UnsafeRawBufferPointer(rebasing: buffer[..<count]), at: offset)
        } : nil
        return FileMapping(kind: .copy, offset: offset, length: length, writable: writable, dontCopy: false, pointer: address,
                           writeBack: writeBack) { () throws(Errno) in
            defer { munmap(address, length) }
            try writeBack?()
        }
    }
}
