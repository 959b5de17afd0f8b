import DAX
import FUSEABI
import FUSEServer
import HostSystem
import Synchronization

/// An open file of a `DaxClient`. Reads and writes below end of file go
/// through the DAX window; writes that extend the file are FUSE_WRITE, so the
/// new size and the data arrive together. Safe to use from many threads.
public final class DaxFile: Sendable {
    public let client: DaxClient
    public let node: NodeID
    public let handle: FileHandle
    public let readable: Bool
    public let writable: Bool
    let openFlags: Int32
    let record: NodeRecord
    private let position = Locked<UInt64>(0)
    private let closed = Atomic<Bool>(false)

    init(client: DaxClient, node: NodeID, handle: FileHandle, record: NodeRecord, readable: Bool, writable: Bool, openFlags: Int32) {
        self.client = client
        self.node = node
        self.handle = handle
        self.record = record
        self.readable = readable
        self.writable = writable
        self.openFlags = openFlags
    }

    deinit { try? close() }

    /// RELEASE, and on the node's last close a batched REMOVEMAPPING of its ranges, then FORGET.
    public func close() throws(Errno) {
        if closed.exchange(true, ordering: .acquiringAndReleasing) { return }
        try client.close(self)
    }

    var isClosed: Bool { closed.load(ordering: .relaxed) }

    private func checkOpen() throws(Errno) {
        if closed.load(ordering: .relaxed) { throw .badFileDescriptor }
    }

    /// The cached size (what reads stop at).
    public var cachedSize: UInt64 { record.size.load(ordering: .relaxed) }

    /// The size as the server sees it now (GETATTR); refreshes the cache.
    public func size() throws(Errno) -> UInt64 {
        try checkOpen()
        return try refreshSize()
    }

    @discardableResult
    private func refreshSize() throws(Errno) -> UInt64 {
        let attr = try client.fuse.getattr(node, handle: handle)
        record.storeSize(attr.size)
        return attr.size
    }

    private var manager: WindowManager? {
        guard let manager = client.manager, manager.enabled.load(ordering: .relaxed) else { return nil }
        return manager
    }

    // MARK: Reading

    /// Reads up to `buffer.count` bytes at `offset`; returns the count (0 at end
    /// of file). A file that shrank under a mapping gives a short count or EIO.
    public func pread(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(Errno) -> Int {
        try checkOpen()
        guard readable else { throw .badFileDescriptor }
        guard buffer.count > 0 else { return 0 }
        let (requestEnd, overflow) = offset.addingReportingOverflow(UInt64(buffer.count))
        guard !overflow, requestEnd <= UInt64(Int64.max) else { throw .invalidArgument }
        var size = record.size.load(ordering: .relaxed)
        // At the cached end of file: ask once, so growth by others becomes visible.
        if requestEnd > size { size = try refreshSize() }
        guard offset < size else { return 0 }
        let count = Int(min(requestEnd, size) - offset)
        let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< count])
        guard let manager else { return try fuseRead(into: target, at: offset) }

        let small = UInt64(count) < manager.rangeSize
        var done = 0
        while done < count {
            let position = offset + UInt64(done)
            let chunk = position >> manager.rangeShift
            let within = Int(position & (manager.rangeSize - 1))
            let piece = min(count - done, Int(manager.rangeSize) - within)
            let destination = target.baseAddress! + done
            if let lease = try manager.acquire(node: node.rawValue, chunk: chunk, hints: record.hints, writable: false, use: .io(small: small)) {
                let copied = FaultSafeCopy.copy(to: destination, from: lease.pointer + within, count: piece)
                manager.release(lease)
                done += copied
                if copied < piece { return try faulted(done: done, at: offset) }
            } else {
                let got = try fuseRead(into: UnsafeMutableRawBufferPointer(start: destination, count: piece), at: position)
                done += got
                if got < piece { break }  // the server's end of file
            }
        }
        return done
    }

    /// A window copy stopped at a page the file no longer has.
    private func faulted(done: Int, at offset: UInt64) throws(Errno) -> Int {
        client.counters.faults.add(1, ordering: .relaxed)
        let size = (try? refreshSize()) ?? 0
        if done > 0 { return done }
        if offset >= size { return 0 }
        throw .io
    }

    private func fuseRead(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(Errno) -> Int {
        var done = 0
        while done < buffer.count {
            client.counters.reads.add(1, ordering: .relaxed)
            let got = try client.fuse.read(node, handle: handle, offset: offset + UInt64(done),
                                           into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            if got == 0 { break }
            done += got
        }
        return done
    }

    /// Reads at the file position and advances it.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        try position.withLock { position throws(Errno) -> Int in
            let count = try pread(into: buffer, at: position)
            position += UInt64(count)
            return count
        }
    }

    /// Reads up to `count` bytes at `offset`.
    public func read(count: Int, at offset: UInt64) throws(Errno) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let result = bytes.withUnsafeMutableBytes { buffer in
            Result { () throws(Errno) -> Int in try pread(into: buffer, at: offset) }
        }
        bytes.removeSubrange(try result.get()...)
        return bytes
    }

    // MARK: Writing

    /// Writes `data` at `offset`; returns the count. The part below the
    /// cached end of file goes through the window, the rest is FUSE_WRITE.
    /// A file that shrank under a mapping gives a short count or EIO.
    public func pwrite(_ data: UnsafeRawBufferPointer, at offset: UInt64) throws(Errno) -> Int {
        try checkOpen()
        guard writable else { throw .badFileDescriptor }
        guard data.count > 0 else { return 0 }
        let (end, overflow) = offset.addingReportingOverflow(UInt64(data.count))
        guard !overflow, end <= UInt64(Int64.max) else { throw .fileTooLarge }
        var done = 0
        if let manager {
            let size = record.size.load(ordering: .relaxed)
            let inside = offset < size ? Int(min(end, size) - offset) : 0
            let small = UInt64(data.count) < manager.rangeSize
            while done < inside {
                let position = offset + UInt64(done)
                let chunk = position >> manager.rangeShift
                let within = Int(position & (manager.rangeSize - 1))
                let piece = min(inside - done, Int(manager.rangeSize) - within)
                let source = data.baseAddress! + done
                if let lease = try manager.acquire(node: node.rawValue, chunk: chunk, hints: record.hints, writable: true, use: .io(small: small)) {
                    let copied = FaultSafeCopy.copy(to: lease.pointer + within, from: source, count: piece)
                    manager.release(lease)
                    done += copied
                    if copied < piece {
                        client.counters.faults.add(1, ordering: .relaxed)
                        _ = try? refreshSize()
                        if done > 0 { return done }
                        throw .io
                    }
                } else {
                    try fuseWrite(UnsafeRawBufferPointer(start: source, count: piece), at: position)
                    done += piece
                }
            }
        }
        if done < data.count {
            try fuseWrite(UnsafeRawBufferPointer(rebasing: data[done...]), at: offset + UInt64(done))
            record.extend(to: end)
        }
        return data.count
    }

    private func fuseWrite(_ data: UnsafeRawBufferPointer, at offset: UInt64) throws(Errno) {
        var done = 0
        while done < data.count {
            client.counters.writes.add(1, ordering: .relaxed)
            let wrote = try client.fuse.write(node, handle: handle, offset: offset + UInt64(done),
                                              from: UnsafeRawBufferPointer(rebasing: data[done...]))
            guard wrote > 0 else { throw .io }
            done += wrote
        }
    }

    /// Writes at the file position and advances it.
    public func write(_ data: UnsafeRawBufferPointer) throws(Errno) -> Int {
        try position.withLock { position throws(Errno) -> Int in
            let count = try pwrite(data, at: position)
            position += UInt64(count)
            return count
        }
    }

    @discardableResult
    public func write(_ bytes: [UInt8], at offset: UInt64) throws(Errno) -> Int {
        try bytes.withUnsafeBytes { buffer in Result { () throws(Errno) -> Int in try pwrite(buffer, at: offset) } }.get()
    }

    /// Moves the file position used by `read(into:)` and `write(_:)`.
    public func seek(to offset: UInt64) { position.withLock { $0 = offset } }

    // MARK: Size and durability

    /// FUSE_SETATTR of the size; mappings wholly beyond the new end are removed.
    public func truncate(to size: UInt64) throws(Errno) {
        try checkOpen()
        guard writable else { throw .invalidArgument }
        let attr = try client.fuse.setSize(node, size: size, handle: handle)
        record.storeSize(attr.size)
        if let manager = client.manager {
            let firstBeyond = (size + manager.rangeSize - 1) >> manager.rangeShift
            manager.drop(node: node.rawValue, fromChunk: firstBeyond)
        }
    }

    /// FUSE_FSYNC: the server flushes the host file (window writes included:
    /// they are in the same page cache).
    public func fsync(dataOnly: Bool = false) throws(Errno) {
        try checkOpen()
        try client.fuse.fsync(node, handle: handle, dataOnly: dataOnly)
    }

    // MARK: Zero copy

    /// Lends `body` the mapped bytes [offset, offset+length) of one range —
    /// no copy. The range stays mapped (it is not reclaimed) until `body`
    /// returns; the bytes must not escape it. The span must lie inside one
    /// range and inside the file. If the file shrinks meanwhile, touching the
    /// lost pages raises SIGBUS: copy with `FaultSafeCopy` when that matters.
    public func withMappedBytes<R>(offset: UInt64, length: Int, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        try checkOpen()
        guard readable else { throw Errno.badFileDescriptor }
        guard let manager else { throw Errno.notSupported }
        guard length > 0 else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        let within = offset & (manager.rangeSize - 1)
        guard within + UInt64(length) <= manager.rangeSize else { throw Errno.invalidArgument }
        var size = record.size.load(ordering: .relaxed)
        if offset + UInt64(length) > size { size = try refreshSize() }
        guard offset + UInt64(length) <= size else { throw Errno.invalidArgument }
        guard let lease = try manager.acquire(node: node.rawValue, chunk: offset >> manager.rangeShift, hints: record.hints,
                                              writable: false, use: .lend) else {
            throw Errno.io
        }
        defer { manager.release(lease) }
        return try body(UnsafeRawBufferPointer(start: lease.pointer + Int(within), count: length))
    }
}
