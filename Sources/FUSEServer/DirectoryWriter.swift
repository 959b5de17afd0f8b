import FUSEABI

/// Packs directory entries into a READDIR or READDIRPLUS reply. Entries are
/// 8-byte aligned `fuse_dirent`s (with a `fuse_entry_out` in front for
/// READDIRPLUS); the reply never exceeds the size the kernel asked for.
public struct DirectoryWriter: ~Copyable {
    private var writer: WireWriter
    private let limit: Int
    /// True for READDIRPLUS: every entry carries an `Entry`.
    public let isPlus: Bool
    public private(set) var count = 0
    /// The nodes whose lookup reference READDIRPLUS entries hand to the
    /// kernel, to be given back if the reply cannot be delivered.
    public private(set) var referencedNodes: [NodeID] = []

    @_spi(Testing) public init(buffer: UnsafeMutableRawBufferPointer, limit: Int, plus: Bool) {
        writer = WireWriter(buffer)
        self.limit = min(limit, buffer.count)
        isPlus = plus
    }

    /// Bytes one entry with a name of `nameLength` bytes takes.
    public func entrySize(nameLength: Int) -> Int {
        let dirent = (DirentHeader.wireSize + nameLength + 7) & ~7
        return isPlus ? EntryOut.wireSize + dirent : dirent
    }

    /// Whether an entry with this name still fits. READDIRPLUS callers ask
    /// before the lookup that takes a reference, so nothing is left dangling.
    public func fits(nameLength: Int) -> Bool { writer.position + entrySize(nameLength: nameLength) <= limit }

    /// Appends a READDIR entry; false (and nothing written) when it does not fit.
    /// `nextOffset` is the offset the kernel passes back to continue after this entry.
    public mutating func append(name: UnsafeRawBufferPointer, ino: UInt64, type: DirentType, nextOffset: UInt64) -> Bool {
        precondition(!isPlus)
        return appendDirent(name: name, ino: ino, type: type, nextOffset: nextOffset)
    }

    /// Appends a READDIRPLUS entry. The entry's lookup reference passes to the
    /// kernel only when this returns true. Use `node == 0` for "." and "..".
    public mutating func appendPlus(entry: Entry, name: UnsafeRawBufferPointer, type: DirentType, nextOffset: UInt64) -> Bool {
        precondition(isPlus)
        guard fits(nameLength: name.count) else { return false }
        writer.write(entry.wire)
        guard appendDirent(name: name, ino: entry.attr.ino, type: type, nextOffset: nextOffset) else { return false }
        if entry.node.rawValue != 0 { referencedNodes.append(entry.node) }
        return true
    }

    private mutating func appendDirent(name: UnsafeRawBufferPointer, ino: UInt64, type: DirentType, nextOffset: UInt64) -> Bool {
        let direntSize = (DirentHeader.wireSize + name.count + 7) & ~7
        guard writer.position + direntSize <= limit else { return false }
        writer.write(DirentHeader(ino: ino, off: nextOffset, namelen: UInt32(name.count), type: type.rawValue))
        writer.bytes(name)
        writer.align(to: 8)
        count += 1
        return true
    }

    @_spi(Testing) public var byteCount: Int { writer.position }
}
