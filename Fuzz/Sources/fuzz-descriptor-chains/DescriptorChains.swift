// Descriptor chains a guest driver writes into guest memory, as the device
// side (SplitQueue) walks them.
//
// Guest memory: one 64 KiB memfd shown as two regions, guest [0x10000,
// +32 KiB) and [0x40000, +32 KiB), so that buffers can straddle a hole.
// Input: {u8 log2 queue size (mod 9), u16 next available index, u8 flags
// (bit 0: EVENT_IDX)}, then the bytes of guest memory from 0x10000: the
// descriptor table there, the available ring right after it (2-byte
// aligned), the used ring after that (4-byte aligned), and any buffers.
// Every chain is popped, gathered and scattered, then handed to the
// virtio-fs device (FSDevice: SETLKW chains to its lock waiter, the rest to
// a FUSE session over a file system that answers ENOSYS), which replies and
// pushes it. Oracles: no crash, every buffer lies inside guest memory, and
// gather and scatter move exactly the bytes a chain has room for.

import FUSEServer
import FuzzSupport
import Glibc
import HostSystem
@testable import VhostUser
import Virtio

/// Answers ENOSYS to every request: the device's handling of chains is under test.
final class NullFileSystem: FileSystem, Sendable {}

let regionSize = 32 << 10
let guestBases: [UInt64] = [0x10000, 0x40000]
nonisolated(unsafe) var memory: GuestMemory!
nonisolated(unsafe) var table: MemoryTable!
nonisolated(unsafe) var contents: UnsafeMutableRawBufferPointer!

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    prepareFuzzProcess()
    do throws(Errno) {
        let fd = try Syscall.sharedMemory(name: "daxfs-fuzz-guest", size: UInt64(2 * regionSize)).release()
        defer { Glibc.close(fd) }
        let regions = try guestBases.enumerated().map { index, base throws(Errno) in
            try MemoryRegion(guestAddress: base, size: UInt64(regionSize), userAddress: base, mmapOffset: UInt64(index * regionSize), fd: fd)
        }
        memory = GuestMemory(regions: regions)
        table = MemoryTable(memory)
        // The regions are consecutive in the file: one writable view of both.
        guard let view = mmap(nil, 2 * regionSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), view != MAP_FAILED else { fatalError("mmap") }
        contents = UnsafeMutableRawBufferPointer(start: view, count: 2 * regionSize)
    } catch {
        fatalError("guest memory: \(error)")
    }
    return 0
}

/// Whether [pointer, pointer+length) lies inside one region's mapping.
func insideGuestMemory(_ pointer: UnsafeMutableRawPointer?, _ length: Int) -> Bool {
    guard let pointer else { return length == 0 }
    return memory.regions.contains { region in
        let start = UInt(bitPattern: region.base), address = UInt(bitPattern: pointer)
        return address >= start && address - start <= UInt(region.size) && UInt(length) <= UInt(region.size) - (address - start)
    }
}

nonisolated(unsafe) let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)

func check(_ chain: DescriptorChain) {
    for buffer in chain.readable + chain.writable where !insideGuestMemory(buffer.pointer, buffer.length) {
        fuzzFailure("chain \(chain.head) has a \(buffer.length)-byte buffer outside guest memory")
    }
    if chain.readable.reduce(0, { $0 + $1.length }) != chain.readableLength { fuzzFailure("readableLength disagrees with its buffers") }
    if chain.writable.reduce(0, { $0 + $1.length }) != chain.writableLength { fuzzFailure("writableLength disagrees with its buffers") }
    if chain.readableLength <= scratch.count {
        guard chain.gather(into: scratch) == chain.readableLength else { fuzzFailure("gather did not copy the whole request") }
    } else if chain.gather(into: scratch) != nil {
        fuzzFailure("gather of \(chain.readableLength) bytes into \(scratch.count)")
    }
    let reply = UnsafeRawBufferPointer(rebasing: scratch[0 ..< min(chain.writableLength, scratch.count)])
    guard chain.scatter(reply) == reply.count else { fuzzFailure("scatter did not fill the reply") }
    if chain.writableLength < scratch.count, chain.scatter(UnsafeRawBufferPointer(rebasing: scratch[0 ... chain.writableLength])) != nil {
        fuzzFailure("scatter of more than the chain's \(chain.writableLength) writable bytes")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    let queueSize = UInt16(1) << UInt16(input.u8() % 9)
    let nextAvailable = input.u16()
    let eventIndex = input.bool()
    contents.initializeMemory(as: UInt8.self, repeating: 0)
    let image = input.take(regionSize)
    if image.count > 0 { contents.baseAddress!.copyMemory(from: image.baseAddress!, byteCount: image.count) }

    let layout = SplitQueue.layout(size: queueSize)
    let descriptorsAt = guestBases[0]
    let availableAt = descriptorsAt + layout.descriptors
    let usedAt = (availableAt + layout.available + 3) & ~3
    guard let descriptors = memory.translate(GuestAddress(descriptorsAt), length: layout.descriptors),
          let available = memory.translate(GuestAddress(availableAt), length: layout.available),
          let used = memory.translate(GuestAddress(usedAt), length: layout.used) else { fuzzFailure("the rings do not fit") }
    let queue = SplitQueue(size: queueSize, descriptors: descriptors, available: available, used: used, memory: table,
                           ringMemory: memory, eventIndex: eventIndex, nextAvailable: nextAvailable)
    let running = RunningQueue(index: 1, ring: queue, call: nil)
    // Small requests (8 pages): the device's buffers are made for each input.
    var options = SessionOptions()
    options.maxPages = 8
    let session = FUSESession(fileSystem: NullFileSystem(), options: options, logger: silentLogger)
    let initMessage = FUSEMessage.initRequest()
    let reply = ReplyBuffer(capacity: 4096)
    _ = initMessage.withUnsafeBytes { session.handle($0, reply: reply) }
    let device: FSDevice
    do throws(Errno) { device = try FSDevice(session: session, threadPoolSize: 0, queueCount: 2, logger: silentLogger) } catch {
        fatalError("device: \(error)")
    }
    defer {
        device.stopping(queue: 1)
        device.shutdown()
        session.end()
    }
    _ = queue.enableNotifications()
    var popped = 0
    while let next = queue.pop() {
        // A reply may land on the available ring itself (the guest's
        // choice) and publish more chains; stop after a few rings' worth.
        popped += 1
        if popped > 4 * Int(queueSize) { break }
        switch next {
        case .chain(let chain):
            check(chain)
            device.handle(chain, from: running)
        case .broken(let head, _):
            if head < queueSize { running.complete(head: head, length: 0) }
        case .corrupted:
            return 0
        }
    }
    queue.disableNotifications()
    return 0
}
