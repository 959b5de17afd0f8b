import CLinux
import Glibc
import HostSystem

/// A guest physical address (what descriptors carry).
public struct GuestAddress: RawRepresentable, Hashable, Sendable, Comparable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (a: GuestAddress, b: GuestAddress) -> Bool { a.rawValue < b.rawValue }
}

/// One region of guest memory, mapped into this process from the frontend's fd.
public final class MemoryRegion: @unchecked Sendable {
    public let guestAddress: UInt64
    public let size: UInt64
    /// Where the frontend (VMM) has this region in its own address space; vring
    /// addresses arrive in these terms.
    public let userAddress: UInt64
    public let base: UnsafeMutableRawPointer
    private let mappedBase: UnsafeMutableRawPointer
    private let mappedLength: Int

    /// Set when the region's file shrank under it (see `poison`).
    private let poison: PoisonFlag?
    private let guardSlot: Int32

    /// Maps `size` bytes of `fd` from `mmapOffset`. The descriptor is not kept.
    /// With `poison`, a SIGBUS in the region (a frontend that shrinks the
    /// file after handing it over) reads zeros and sets the flag instead of
    /// killing the process; the flag's owner then ends the connection.
    public init(guestAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64, fd: Int32,
                poison: PoisonFlag? = nil) throws(Errno) {
        guard size > 0, size <= UInt64(Int.max) / 2, mmapOffset <= UInt64(Int64.max),
              !guestAddress.addingReportingOverflow(size).overflow, !userAddress.addingReportingOverflow(size).overflow
        else { throw .invalidArgument }
        // mmap needs a page-aligned offset; map from the page below and skip the rest.
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let alignedOffset = mmapOffset & ~(page - 1)
        let slack = Int(mmapOffset - alignedOffset)
        let length = Int(size) + slack
        let address = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(alignedOffset))
        guard let address, address != MAP_FAILED else { throw Errno(daxfs_errno()) }
        self.guestAddress = guestAddress
        self.size = size
        self.userAddress = userAddress
        mappedBase = address
        mappedLength = length
        base = address + slack
        self.poison = poison
        if let poison {
            _ = daxfs_install_fault_handler()
            guardSlot = daxfs_guard_region(address, length, poison.pointer)
        } else {
            guardSlot = -1
        }
    }

    deinit {
        if guardSlot >= 0 { daxfs_unguard_region(guardSlot) }
        munmap(mappedBase, mappedLength)
    }

    func contains(guest address: UInt64, length: UInt64) -> Bool {
        guard address >= guestAddress else { return false }
        let offset = address - guestAddress
        return offset <= size && length <= size - offset
    }
}

/// The guest's memory table: an immutable snapshot. A new table replaces the
/// whole object, so a request being processed keeps the mappings it started with.
public final class GuestMemory: Sendable {
    public let regions: [MemoryRegion]

    public init(regions: [MemoryRegion]) { self.regions = regions }

    public static let empty = GuestMemory(regions: [])

    /// A pointer to [address, address+length) if it lies inside one region.
    public func translate(_ address: GuestAddress, length: UInt64) -> UnsafeMutableRawPointer? {
        for region in regions where region.contains(guest: address.rawValue, length: length) {
            return region.base + Int(address.rawValue - region.guestAddress)
        }
        return nil
    }

    /// A pointer for a frontend virtual address (vring addresses), bounds-checked.
    public func translateUser(_ address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        for region in regions {
            guard address >= region.userAddress else { continue }
            let offset = address - region.userAddress
            if offset <= region.size && length <= region.size - offset {
                return region.base + Int(offset)
            }
        }
        return nil
    }

    public func adding(_ region: MemoryRegion) -> GuestMemory { GuestMemory(regions: regions + [region]) }

    public func removing(guestAddress: UInt64, size: UInt64) -> GuestMemory {
        GuestMemory(regions: regions.filter { !($0.guestAddress == guestAddress && $0.size == size) })
    }
}

/// The memory table a running device reads, replaced as a whole when the
/// frontend changes it (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG). Queue
/// threads take a snapshot per descriptor chain and the chain keeps it, so a
/// replaced region stays mapped until the last request that translated an
/// address into it is done. The frontend is answered at once: QEMU 11.1
/// changes the table for every DAX mapping and waits for that answer before
/// it answers the backend request a queue thread may be waiting on, so the
/// control thread must never wait for a queue.
public final class MemoryTable: Sendable {
    private let table: Locked<GuestMemory>

    public init(_ memory: GuestMemory = .empty) { table = Locked(memory) }

    public var current: GuestMemory { table.withLock { $0 } }

    public func replace(with memory: GuestMemory) { table.withLock { $0 = memory } }
}

/// Whether a guest memory region faulted (its file shrank): set from the
/// SIGBUS handler, read by the connection that owns the regions.
public final class PoisonFlag: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Int32>
    public init() {
        pointer = .allocate(capacity: 1)
        pointer.initialize(to: 0)
    }
    deinit { pointer.deallocate() }
    public var isSet: Bool { daxfs_load_acquire_int(pointer) != 0 }
}
