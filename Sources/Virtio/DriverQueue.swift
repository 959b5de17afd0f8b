import CLinux
import Glibc
import HostSystem

/// Guest memory this process owns and shares with a device (a memfd): the
/// frontend side of `GuestMemory`. Guest physical address = offset in the memfd.
public final class SharedGuestMemory: @unchecked Sendable {
    public let fd: Int32
    public let base: UnsafeMutableRawPointer
    public let size: UInt64
    private var next: UInt64 = 0

    public init(size: UInt64) throws(Errno) {
        let fd = try Syscall.call { daxfs_memfd("daxfs-guest-memory") }
        do throws(Errno) {
            _ = try Syscall.call { ftruncate(fd, off_t(size)) }
        } catch {
            Glibc.close(fd)
            throw error
        }
        let address = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let address, address != MAP_FAILED else {
            let error = Errno(daxfs_errno())
            Glibc.close(fd)
            throw error
        }
        self.fd = fd
        base = address
        self.size = size
    }

    deinit {
        munmap(base, Int(size))
        Glibc.close(fd)
    }

    /// Carves `length` bytes aligned to `alignment`; returns the guest address.
    public func allocate(_ length: UInt64, alignment: UInt64 = 64) throws(Errno) -> UInt64 {
        let start = (next + alignment - 1) & ~(alignment - 1)
        guard start + length <= size else { throw .noMemory }
        next = start + length
        return start
    }

    public func pointer(_ address: UInt64) -> UnsafeMutableRawPointer { base + Int(address) }

    /// The frontend's virtual address of a guest address (vring addresses are sent this way).
    public func userAddress(_ address: UInt64) -> UInt64 { UInt64(UInt(bitPattern: base)) + address }
}

/// The driver side of a split virtqueue, in `SharedGuestMemory`. Not
/// thread-safe: its owner serializes `submit` and `reap`.
public final class DriverQueue: @unchecked Sendable {
    public let size: UInt16
    public let descriptorAddress: UInt64
    public let availableAddress: UInt64
    public let usedAddress: UInt64
    private let memory: SharedGuestMemory
    private var freeDescriptors: [UInt16]
    private var nextAvailable: UInt16 = 0
    private var lastUsed: UInt16 = 0
    private var chainLengths: [Int]

    public init(size: UInt16, memory: SharedGuestMemory) throws(Errno) {
        let layout = SplitQueue.layout(size: size)
        self.size = size
        self.memory = memory
        descriptorAddress = try memory.allocate(layout.descriptors, alignment: 16)
        availableAddress = try memory.allocate(layout.available, alignment: 2)
        usedAddress = try memory.allocate(layout.used, alignment: 4)
        freeDescriptors = (0 ..< size).reversed().map { $0 }
        chainLengths = Array(repeating: 0, count: Int(size))
    }

    public var freeCount: Int { freeDescriptors.count }

    /// Publishes a chain of device-readable then device-writable buffers; returns its head.
    public func submit(readable: [(address: UInt64, length: UInt32)], writable: [(address: UInt64, length: UInt32)]) -> UInt16? {
        let parts = readable.map { ($0.address, $0.length, false) } + writable.map { ($0.address, $0.length, true) }
        guard !parts.isEmpty, parts.count <= freeDescriptors.count else { return nil }
        let indices = (0 ..< parts.count).map { _ in freeDescriptors.removeLast() }
        for (position, part) in parts.enumerated() {
            let entry = memory.pointer(descriptorAddress) + 16 * Int(indices[position])
            let last = position == parts.count - 1
            var flags: UInt16 = part.2 ? 2 : 0
            if !last { flags |= 1 }
            entry.storeBytes(of: part.0.littleEndian, toByteOffset: 0, as: UInt64.self)
            entry.storeBytes(of: part.1.littleEndian, toByteOffset: 8, as: UInt32.self)
            entry.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
            entry.storeBytes(of: (last ? 0 : indices[position + 1]).littleEndian, toByteOffset: 14, as: UInt16.self)
        }
        let head = indices[0]
        chainLengths[Int(head)] = parts.count
        let available = memory.pointer(availableAddress)
        available.storeBytes(of: head.littleEndian, toByteOffset: 4 + 2 * Int(nextAvailable % size), as: UInt16.self)
        nextAvailable &+= 1
        daxfs_store_release_u16(available + 2, nextAvailable)
        return head
    }

    /// Writes raw descriptor table entries (tests build broken chains with this).
    public func writeDescriptor(_ index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        let entry = memory.pointer(descriptorAddress) + 16 * Int(index % size)
        entry.storeBytes(of: address.littleEndian, toByteOffset: 0, as: UInt64.self)
        entry.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
        entry.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
        entry.storeBytes(of: next.littleEndian, toByteOffset: 14, as: UInt16.self)
    }

    /// Publishes `head` as-is (for hand-built chains); the caller owns its descriptors.
    public func publishRaw(head: UInt16) {
        let available = memory.pointer(availableAddress)
        available.storeBytes(of: head.littleEndian, toByteOffset: 4 + 2 * Int(nextAvailable % size), as: UInt16.self)
        nextAvailable &+= 1
        daxfs_store_release_u16(available + 2, nextAvailable)
    }

    /// Completed chains since the last call: (head, bytes written). Their descriptors are freed.
    public func reap() -> [(head: UInt16, length: UInt32)] {
        let used = memory.pointer(usedAddress)
        let usedIndex = daxfs_load_acquire_u16(used + 2)
        var done: [(UInt16, UInt32)] = []
        while lastUsed != usedIndex {
            let slot = Int(lastUsed % size)
            let id = UInt32(littleEndian: used.loadUnaligned(fromByteOffset: 4 + 8 * slot, as: UInt32.self))
            let length = UInt32(littleEndian: used.loadUnaligned(fromByteOffset: 8 + 8 * slot, as: UInt32.self))
            lastUsed &+= 1
            let head = UInt16(truncatingIfNeeded: id)
            if id < UInt32(size) { free(head) }
            done.append((head, length))
        }
        // EVENT_IDX: ask to be interrupted for the next completion.
        memory.pointer(availableAddress).storeBytes(of: lastUsed.littleEndian, toByteOffset: 4 + 2 * Int(size), as: UInt16.self)
        daxfs_fence()
        return done
    }

    private func free(_ head: UInt16) {
        var index = head
        let count = chainLengths[Int(head)]
        chainLengths[Int(head)] = 0
        for position in 0 ..< count {
            freeDescriptors.append(index)
            if position < count - 1 {
                let entry = memory.pointer(descriptorAddress) + 16 * Int(index)
                index = UInt16(littleEndian: entry.loadUnaligned(fromByteOffset: 14, as: UInt16.self)) % size
            }
        }
    }
}
