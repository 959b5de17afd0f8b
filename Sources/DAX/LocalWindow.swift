import CLinux
import FUSEServer
import Glibc
import HostSystem

/// A DAX window in this process's address space: a reserved range that
/// mappings of host files are placed into with mmap(MAP_FIXED). The embedded
/// transport hands the same object to the server (which maps) and the client
/// (which reads and writes through `base`).
public final class LocalWindow: WindowMapper, @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let windowSize: UInt64
    /// Which pages hold a file mapping now, and which of those are writable.
    /// `Locked` (a pthread mutex, which ThreadSanitizer follows).
    private let pages: Locked<PageMap>
    /// Whether `map` and `unmap` are refused outside the ranges a request
    /// of this process has open (`allowingChanges`): set for a window that a
    /// separate backend changes, whose SHMEM_MAP/SHMEM_UNMAP are untrusted.
    public let guarded: Bool

    /// The window starts on a multiple of this (2 MiB, the x86-64 huge page),
    /// so that a range mapping a file's 2 MiB page-cache folio can be mapped
    /// with one page-table entry (no TLB miss per 4 KiB, one fault per range).
    public static let baseAlignment = 2 << 20

    /// Reserves `size` bytes of inaccessible address space (no memory is
    /// committed). A `guarded` window accepts changes only inside
    /// `allowingChanges`.
    public init(size: UInt64, guarded: Bool = false) throws(Errno) {
        guard size > 0, size % UInt64(HostPage.size) == 0, size <= UInt64(Int.max - Self.baseAlignment) else { throw .invalidArgument }
        // Reserve one alignment more than needed, then give back the ends.
        let reserved = Int(size) + Self.baseAlignment
        let address = mmap(nil, reserved, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let address, address != MAP_FAILED else { throw Errno(daxfs_errno()) }
        let start = UInt(bitPattern: address)
        let aligned = (start + UInt(Self.baseAlignment - 1)) & ~UInt(Self.baseAlignment - 1)
        let head = Int(aligned - start)
        if head > 0 { munmap(address, head) }
        let tail = reserved - head - Int(size)
        if tail > 0 { munmap(address + head + Int(size), tail) }
        base = address + head
        windowSize = size
        self.guarded = guarded
        pages = Locked(PageMap(pages: Int(size / UInt64(HostPage.size))))
        _ = daxfs_install_fault_handler()
    }

    deinit { munmap(base, Int(windowSize)) }

    public func map(fd: Int32, fileOffset: UInt64, windowOffset: UInt64, length: UInt64, writable: Bool) throws(Errno) {
        try checkBounds(windowOffset, length)
        try checkAllowed(windowOffset, length)
        guard fileOffset <= UInt64(Int64.max) else { throw .invalidArgument }
        let prot = writable ? PROT_READ | PROT_WRITE : PROT_READ
        let target = base + Int(windowOffset)
        let result = mmap(target, Int(length), prot, MAP_SHARED | MAP_FIXED, fd, off_t(fileOffset))
        guard result == target else {
            let error = Errno(daxfs_errno())
            // A failed MAP_FIXED may have removed what was there; leave the range inaccessible.
            try? unmap(windowOffset: windowOffset, length: length)
            throw error
        }
        // Ask for huge mappings (THP "madvise" mode): faults on pages not yet
        // cached then read 2 MiB folios, and cached 2 MiB folios are mapped
        // whole. Only advice: a kernel or filesystem without it maps 4 KiB pages.
        _ = madvise(target, Int(length), MADV_HUGEPAGE)
        let (first, count) = pageSpan(windowOffset, length)
        pages.withLock { $0.set(first, count, mapped: true, writable: writable) }
    }

    /// Whether every page of [windowOffset, windowOffset+length) holds a file
    /// mapping (a writable one if asked): a client checks this after the
    /// server said it mapped a range, before it touches the memory, so a
    /// server that answers without mapping cannot make it fault.
    public func isMapped(offset windowOffset: UInt64, length: UInt64, writable: Bool) -> Bool {
        guard (try? checkBounds(windowOffset, length)) != nil else { return false }
        let (first, count) = pageSpan(windowOffset, length)
        return pages.withLock { $0.covers(first, count, writable: writable) }
    }

    private func pageSpan(_ offset: UInt64, _ length: UInt64) -> (Int, Int) {
        let page = UInt64(HostPage.size)
        return (Int(offset / page), Int((length + page - 1) / page))
    }

    public func unmap(windowOffset: UInt64, length: UInt64) throws(Errno) {
        try checkBounds(windowOffset, length)
        try checkAllowed(windowOffset, length)
        let target = base + Int(windowOffset)
        let (first, count) = pageSpan(windowOffset, length)
        pages.withLock { $0.set(first, count, mapped: false, writable: false) }
        let result = mmap(target, Int(length), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0)
        guard result == target else { throw Errno(daxfs_errno()) }
    }

    /// Runs `body` with [offset, offset+length) open to `map` and `unmap`: the
    /// client wraps each request that asks the backend to change the window
    /// (SETUPMAPPING, REMOVEMAPPING, DAXFS_MMAP, DAXFS_MUNMAP) in this, so a
    /// guarded window refuses a backend that maps or unmaps anywhere else,
    /// such as under a range a reader is using.
    public func allowingChanges<Result, Failure: Error>(_ ranges: [(offset: UInt64, length: UInt64)],
                                                        _ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        guard guarded else { return try body() }
        let ticket = pages.withLock { $0.open(ranges) }
        defer { pages.withLock { $0.close(ticket) } }
        return try body()
    }

    private func checkAllowed(_ offset: UInt64, _ length: UInt64) throws(Errno) {
        guard guarded else { return }
        guard pages.withLock({ $0.isOpen(offset, length) }) else { throw .permissionDenied }
    }

    private func checkBounds(_ offset: UInt64, _ length: UInt64) throws(Errno) {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard length > 0, !overflow, end <= windowSize, offset % UInt64(HostPage.size) == 0 else { throw .invalidArgument }
    }
}

/// Two bits per window page: mapped, and mapped writable; and the ranges
/// requests have open to changes.
struct PageMap: ~Copyable {
    var mapped: [UInt64]
    var writable: [UInt64]
    /// Ranges open to changes, by ticket: as many as requests in flight.
    var openRanges: [(ticket: UInt64, offset: UInt64, end: UInt64)] = []
    var nextTicket: UInt64 = 0

    mutating func open(_ ranges: [(offset: UInt64, length: UInt64)]) -> UInt64 {
        nextTicket &+= 1
        for range in ranges {
            let (end, overflow) = range.offset.addingReportingOverflow(range.length)
            openRanges.append((nextTicket, range.offset, overflow ? .max : end))
        }
        return nextTicket
    }

    mutating func close(_ ticket: UInt64) {
        openRanges.removeAll { $0.ticket == ticket }
    }

    /// Whether the open ranges together cover [offset, offset+length)
    /// (a backend may join adjacent ranges of one request into one message).
    func isOpen(_ offset: UInt64, _ length: UInt64) -> Bool {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow else { return false }
        var covered = offset
        for range in openRanges.sorted(by: { $0.offset < $1.offset }) where range.offset <= covered && range.end > covered {
            covered = range.end
            if covered >= end { return true }
        }
        return covered >= end
    }

    init(pages: Int) {
        mapped = Array(repeating: 0, count: (pages + 63) / 64)
        writable = mapped
    }

    mutating func set(_ first: Int, _ count: Int, mapped isMapped: Bool, writable isWritable: Bool) {
        for page in first ..< first + count {
            let bit = UInt64(1) << UInt64(page % 64)
            if isMapped { mapped[page / 64] |= bit } else { mapped[page / 64] &= ~bit }
            if isWritable { writable[page / 64] |= bit } else { writable[page / 64] &= ~bit }
        }
    }

    func covers(_ first: Int, _ count: Int, writable needWritable: Bool) -> Bool {
        for page in first ..< first + count {
            let bit = UInt64(1) << UInt64(page % 64)
            if mapped[page / 64] & bit == 0 { return false }
            if needWritable && writable[page / 64] & bit == 0 { return false }
        }
        return true
    }
}

/// Copies that survive a window page whose file was truncated underneath:
/// they return how many bytes were copied before the fault instead of
/// letting SIGBUS kill the process.
public enum FaultSafeCopy {
    /// Copies `count` bytes; returns fewer when a source or destination page faulted.
    @inlinable
    public static func copy(to destination: UnsafeMutableRawPointer, from source: UnsafeRawPointer, count: Int) -> Int {
        guard count > 0 else { return 0 }
        return daxfs_safe_copy(destination, source, count)
    }
}
