import CLinux
import HostSystem

/// Why a descriptor chain was refused. The request fails; the device goes on.
public enum ChainError: Error, Equatable, Sendable {
    case headOutOfRange(UInt16)
    case indexOutOfRange(UInt16)
    case addressOutOfRange(UInt64)
    case loop
    case nestedIndirect
    case badIndirectTable
    /// An indirect table of more than `SplitQueue.maxIndirectEntries` entries.
    case indirectTableTooLong(UInt32)
    case readableAfterWritable
}

/// What `SplitQueue.pop` found.
public enum PoppedChain: Sendable {
    case chain(DescriptorChain)
    /// A chain that cannot be used; complete `head` with 0 bytes if it is in range.
    case broken(head: UInt16, ChainError)
    /// The available index is more than a ring ahead: the queue must stop.
    case corrupted
}

/// One guest buffer of a chain, already translated.
public struct GuestBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer?
    public let length: Int
}

/// A request's descriptor chain: device-readable buffers (the driver's
/// request) followed by device-writable ones (room for the reply).
public struct DescriptorChain: Sendable {
    public let head: UInt16
    /// The memory table the buffers were translated in, kept mapped while the chain lives.
    public let memory: GuestMemory
    public var readable: [GuestBuffer] = []
    public var writable: [GuestBuffer] = []
    public var readableLength = 0
    public var writableLength = 0

    /// Copies the readable part into `buffer`; nil when it does not fit.
    public func gather(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        guard readableLength <= buffer.count else { return nil }
        var offset = 0
        for part in readable where part.length > 0 {
            (buffer.baseAddress! + offset).copyMemory(from: part.pointer!, byteCount: part.length)
            offset += part.length
        }
        return offset
    }

    /// Copies `data` into the writable part; returns the bytes written (all, or nil when it does not fit).
    public func scatter(_ data: UnsafeRawBufferPointer) -> Int? {
        guard data.count <= writableLength else { return nil }
        var offset = 0
        for part in writable where offset < data.count && part.length > 0 {
            let count = min(part.length, data.count - offset)
            part.pointer!.copyMemory(from: data.baseAddress! + offset, byteCount: count)
            offset += count
        }
        return offset
    }
}

/// A split virtqueue (virtio 1.x §2.7) living in guest memory.
///
/// Layout: descriptor table of 16-byte {addr, len, flags, next}; available
/// ring {flags, idx, ring[size], used_event}; used ring {flags, idx,
/// {id, len}[size], avail_event}. The driver owns avail, the device owns
/// used; the indices are published with release/acquire ordering.
public final class SplitQueue: @unchecked Sendable {
    public let size: UInt16
    let descriptors: UnsafeMutableRawPointer
    let available: UnsafeMutableRawPointer
    let used: UnsafeMutableRawPointer
    /// Where descriptors are translated: the table of the moment.
    let memory: MemoryTable
    /// The table the three ring pointers came from, kept mapped as long as the queue runs.
    let ringMemory: GuestMemory
    /// VIRTIO_RING_F_EVENT_IDX negotiated.
    let eventIndex: Bool
    public private(set) var nextAvailable: UInt16
    private var nextUsed: UInt16
    private var signalledUsed: UInt16?

    static let descriptorNext: UInt16 = 1
    static let descriptorWrite: UInt16 = 2
    static let descriptorIndirect: UInt16 = 4

    /// Byte sizes of the three parts for a queue of `size` entries.
    public static func layout(size: UInt16) -> (descriptors: UInt64, available: UInt64, used: UInt64) {
        let n = UInt64(size)
        return (16 * n, 6 + 2 * n, 6 + 8 * n)
    }

    public init(size: UInt16, descriptors: UnsafeMutableRawPointer, available: UnsafeMutableRawPointer, used: UnsafeMutableRawPointer,
                memory: MemoryTable, ringMemory: GuestMemory, eventIndex: Bool, nextAvailable: UInt16) {
        self.size = size
        self.descriptors = descriptors
        self.available = available
        self.used = used
        self.memory = memory
        self.ringMemory = ringMemory
        self.eventIndex = eventIndex
        self.nextAvailable = nextAvailable
        nextUsed = daxfs_load_acquire_u16(used + 2)
    }

    /// The driver's available index.
    var availableIndex: UInt16 { daxfs_load_acquire_u16(available + 2) }

    /// Whether the driver has published requests not yet popped.
    public var hasAvailable: Bool { availableIndex != nextAvailable }

    /// The next request, nil when the ring is empty.
    public func pop() -> PoppedChain? {
        let availableIndex = self.availableIndex
        if availableIndex == nextAvailable { return nil }
        if availableIndex &- nextAvailable > size { return .corrupted }
        let slot = Int(nextAvailable % size)
        let head = UInt16(littleEndian: available.loadUnaligned(fromByteOffset: 4 + 2 * slot, as: UInt16.self))
        nextAvailable &+= 1
        do throws(ChainError) {
            return .chain(try walk(head: head, memory: memory.current))
        } catch {
            return .broken(head: head, error)
        }
    }

    /// Tells the driver which available index we will look at next, so it
    /// kicks only when it adds past it (EVENT_IDX), then re-checks for races.
    public func enableNotifications() -> Bool {
        if eventIndex {
            used.storeBytes(of: nextAvailable.littleEndian, toByteOffset: 4 + 8 * Int(size), as: UInt16.self)
        } else {
            used.storeBytes(of: UInt16(0).littleEndian, toByteOffset: 0, as: UInt16.self)
        }
        daxfs_fence()
        return availableIndex != nextAvailable
    }

    public func disableNotifications() {
        if !eventIndex {
            used.storeBytes(of: UInt16(1).littleEndian, toByteOffset: 0, as: UInt16.self)  // VRING_USED_F_NO_NOTIFY
        }
    }

    /// Completes a request: `length` bytes were written into its writable buffers.
    public func push(head: UInt16, length: UInt32) {
        let slot = Int(nextUsed % size)
        used.storeBytes(of: UInt32(head).littleEndian, toByteOffset: 4 + 8 * slot, as: UInt32.self)
        used.storeBytes(of: length.littleEndian, toByteOffset: 8 + 8 * slot, as: UInt32.self)
        nextUsed &+= 1
        daxfs_store_release_u16(used + 2, nextUsed)
    }

    /// Whether the driver wants an interrupt for what was pushed since the last one.
    public func needsNotification() -> Bool {
        daxfs_fence()
        defer { signalledUsed = nextUsed }
        guard eventIndex else {
            let flags = daxfs_load_acquire_u16(available)
            return flags & 1 == 0  // VRING_AVAIL_F_NO_INTERRUPT
        }
        let usedEvent = daxfs_load_acquire_u16(available + 4 + 2 * Int(size))
        guard let old = signalledUsed else { return true }
        // vring_need_event: notify when used_event lies in (old, new].
        return (nextUsed &- usedEvent &- 1) < (nextUsed &- old)
    }

    /// The longest indirect table taken (as rust-vmm's virtio-queue): a
    /// chain's index is 16 bits, and Linux's longest tables (a FUSE request
    /// of max_pages pages) have a few hundred entries.
    public static let maxIndirectEntries: UInt32 = 65_535

    private func walk(head: UInt16, memory: GuestMemory) throws(ChainError) -> DescriptorChain {
        guard head < size else { throw .headOutOfRange(head) }
        var chain = DescriptorChain(head: head, memory: memory)
        var table = descriptors
        var tableSize = Int(size)
        var index = Int(head)
        var visited = 0
        var indirect = false
        while true {
            guard index < tableSize else { throw .indexOutOfRange(UInt16(truncatingIfNeeded: index)) }
            visited += 1
            guard visited <= tableSize else { throw .loop }
            let entry = table + 16 * index
            let address = UInt64(littleEndian: entry.loadUnaligned(as: UInt64.self))
            let length = UInt32(littleEndian: entry.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            let flags = UInt16(littleEndian: entry.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
            let next = UInt16(littleEndian: entry.loadUnaligned(fromByteOffset: 14, as: UInt16.self))

            if flags & Self.descriptorIndirect != 0 {
                guard !indirect else { throw .nestedIndirect }
                guard flags & Self.descriptorNext == 0, length > 0, length % 16 == 0 else { throw .badIndirectTable }
                // The table's size bounds the walk and the chain kept: a
                // guest must not make one request cost gigabytes.
                guard length / 16 <= Self.maxIndirectEntries else { throw .indirectTableTooLong(length / 16) }
                guard let pointer = memory.translate(GuestAddress(address), length: UInt64(length)) else {
                    throw .addressOutOfRange(address)
                }
                table = pointer
                tableSize = Int(length / 16)
                index = 0
                visited = 0
                indirect = true
                continue
            }
            var pointer: UnsafeMutableRawPointer? = nil
            if length > 0 {
                guard let translated = memory.translate(GuestAddress(address), length: UInt64(length)) else {
                    throw .addressOutOfRange(address)
                }
                pointer = translated
            }
            let buffer = GuestBuffer(pointer: pointer, length: Int(length))
            if flags & Self.descriptorWrite != 0 {
                chain.writable.append(buffer)
                chain.writableLength += Int(length)
            } else {
                guard chain.writable.isEmpty else { throw .readableAfterWritable }
                chain.readable.append(buffer)
                chain.readableLength += Int(length)
            }
            guard flags & Self.descriptorNext != 0 else { return chain }
            index = Int(next)
        }
    }
}
