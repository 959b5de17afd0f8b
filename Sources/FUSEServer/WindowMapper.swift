import FUSEABI
import HostSystem

/// Maps ranges of host files into a client's DAX window (FUSE_SETUPMAPPING /
/// FUSE_REMOVEMAPPING). An in-process window mmaps directly; a vhost-user
/// frontend receives SHMEM_MAP/SHMEM_UNMAP with the descriptor. The session
/// validates every request before a mapper sees it.
public protocol WindowMapper: Sendable {
    /// Bytes in the window; every mapping lies inside [0, windowSize).
    var windowSize: UInt64 { get }
    /// Maps [fileOffset, fileOffset+length) of `fd` at `windowOffset`, shared,
    /// read-only or read-write, replacing whatever was there.
    func map(fd: Int32, fileOffset: UInt64, windowOffset: UInt64, length: UInt64, writable: Bool) throws(Errno)
    /// Puts inaccessible anonymous memory over [windowOffset, windowOffset+length).
    func unmap(windowOffset: UInt64, length: UInt64) throws(Errno)

    /// `map` for a SETUPMAPPING of `node`: a mapper that follows the file's
    /// size (a frontend that dies when it touches a page past the end of a
    /// file, such as QEMU) records whose mapping it is. Default: `map`.
    func map(node: NodeID, fd: Int32, fileOffset: UInt64, windowOffset: UInt64, length: UInt64, writable: Bool) throws(Errno)

    /// The server just changed the size of `node`'s file, or may have (SETATTR,
    /// WRITE, FALLOCATE, COPY_FILE_RANGE): called before the reply, so the
    /// mappings are right when the client learns the new size. Default: nothing.
    func fileMayHaveResized(node: NodeID)
}

extension WindowMapper {
    public func map(node: NodeID, fd: Int32, fileOffset: UInt64, windowOffset: UInt64, length: UInt64, writable: Bool) throws(Errno) {
        try map(fd: fd, fileOffset: fileOffset, windowOffset: windowOffset, length: length, writable: writable)
    }

    public func fileMayHaveResized(node: NodeID) {}
}

/// The checks a SETUPMAPPING/REMOVEMAPPING range must pass, whichever side
/// (server or client-side frontend) performs them.
public struct MappingRules: Sendable, Equatable {
    /// log2 of the alignment of file offsets, window offsets and lengths.
    public let alignmentLog2: UInt16
    public let windowSize: UInt64

    public init(alignmentLog2: UInt16, windowSize: UInt64) {
        self.alignmentLog2 = alignmentLog2
        self.windowSize = windowSize
    }

    public var alignment: UInt64 { 1 << UInt64(min(alignmentLog2, 63)) }

    /// A window range: aligned, non-empty, inside the window without overflow.
    public func checkWindowRange(offset: UInt64, length: UInt64) throws(Errno) {
        let mask = alignment - 1
        guard length > 0, offset & mask == 0, length & mask == 0 else { throw .invalidArgument }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= windowSize else { throw .invalidArgument }
    }

    /// A file range: aligned and addressable as an off_t.
    public func checkFileRange(offset: UInt64, length: UInt64) throws(Errno) {
        guard offset & (alignment - 1) == 0 else { throw .invalidArgument }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= UInt64(Int64.max) else { throw .invalidArgument }
    }
}

extension FUSESession {
    func setupMapping(_ ctx: RequestContext, node: NodeID, _ input: SetupMappingIn) throws(Errno) {
        guard let window, let rules = mappingRules else { throw .notImplemented }
        let known = FUSEFlag.setupMappingRead | FUSEFlag.setupMappingWrite
        guard input.flags & ~known == 0 else { throw .invalidArgument }
        try rules.checkWindowRange(offset: input.moffset, length: input.len)
        try rules.checkFileRange(offset: input.foffset, length: input.len)
        let writable = input.flags & FUSEFlag.setupMappingWrite != 0
        // Linux always sends fh = -1: the server reopens the inode itself.
        let handle = input.fh == UInt64.max ? nil : FileHandle(input.fh)
        let descriptor = try fileSystem.mappingDescriptor(ctx, node: node, handle: handle, writable: writable)
        try window.map(node: node, fd: descriptor.rawValue, fileOffset: input.foffset, windowOffset: input.moffset, length: input.len,
                       writable: writable)
    }

    func removeMappings(_ reader: inout WireReader) throws(RequestFailure) {
        guard let window, let rules = mappingRules else { throw .errno(.notImplemented) }
        guard let count = try? reader.read(RemoveMappingIn.self).count else {
            throw .malformed("fuse_removemapping_in missing")
        }
        guard UInt64(count) * UInt64(RemoveMappingOne.wireSize) <= UInt64(reader.remaining) else {
            throw .malformed("REMOVEMAPPING of \(count) ranges in \(reader.remaining) bytes")
        }
        var ranges: [RemoveMappingOne] = []
        ranges.reserveCapacity(Int(count))
        for _ in 0 ..< count {
            guard let one = try? reader.read(RemoveMappingOne.self) else { throw .malformed("truncated range") }
            ranges.append(one)
        }
        // All or nothing for bad input: check every range before touching the window.
        for range in ranges {
            do throws(Errno) { try rules.checkWindowRange(offset: range.moffset, length: range.len) } catch { throw .errno(error) }
        }
        // Unmapping only ever replaces memory with PROT_NONE; a failure leaves
        // that one range as it was. Try them all and report the first error.
        var firstError: Errno?
        for range in ranges {
            do throws(Errno) {
                try window.unmap(windowOffset: range.moffset, length: range.len)
            } catch {
                if firstError == nil { firstError = error }
            }
        }
        if let firstError { throw .errno(firstError) }
    }
}
