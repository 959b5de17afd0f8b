import CLinux
import FUSEABI
import Glibc
import HostSystem
import Synchronization
import VhostUser
import Virtio

/// FUSE over virtio-fs queues of a vhost-user backend: each call copies the
/// request into a slot of guest memory, publishes a chain (request readable,
/// reply writable) on a request queue, kicks, and waits for the used entry —
/// spinning for `pollMicroseconds` before sleeping on the call eventfd, since
/// a cross-core wake-up costs ~45 µs here and a polled round trip ~0.1 µs.
public final class VirtioChannel: FUSEChannel, @unchecked Sendable {
    public let frontend: VhostUserFrontend
    private let slots: [Slot]
    private let freeSlots = BlockingQueue<Int>()
    private let pollNanoseconds: UInt64
    private let dead = Atomic<Bool>(false)
    private let nextQueue = Atomic<Int>(0)

    final class Slot: @unchecked Sendable {
        let request: UInt64
        let reply: UInt64
        let capacity: Int
        /// Written by whichever thread reaps the completion (under the queue lock).
        var done = false
        var length = 0
        /// Writable bytes given to the device for this request.
        var offered = 0
        var queue = 0
        init(request: UInt64, reply: UInt64, capacity: Int) { self.request = request; self.reply = reply; self.capacity = capacity }
    }

    /// Which slot a head on a queue belongs to, per queue; touched only under that queue's lock.
    final class Owners: @unchecked Sendable { var slotOfHead: [UInt16: Int] = [:] }
    private let owners: [Owners]

    /// - Parameters:
    ///   - slots: requests that may be outstanding at once.
    ///   - slotSize: bytes for one request and, separately, one reply (≥ max_write + 4 KiB).
    ///   - pollMicroseconds: spin budget before sleeping on the call eventfd.
    public init(frontend: VhostUserFrontend, slots count: Int = 16, slotSize: Int = (1 << 20) + 4096, pollMicroseconds: Int = 50) throws(Errno) {
        self.frontend = frontend
        var slots: [Slot] = []
        for _ in 0 ..< max(1, count) {
            let request = try frontend.memory.allocate(UInt64(slotSize), alignment: 4096)
            let reply = try frontend.memory.allocate(UInt64(slotSize), alignment: 4096)
            slots.append(Slot(request: request, reply: reply, capacity: slotSize))
        }
        self.slots = slots
        for index in slots.indices { freeSlots.push(index) }
        owners = frontend.queues.map { _ in Owners() }
        pollNanoseconds = UInt64(max(0, pollMicroseconds)) * 1000
        spinBudget.store(pollNanoseconds, ordering: .relaxed)
    }

    public func call<R>(_ request: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws(Errno) -> R) throws(Errno) -> R {
        let (slot, length) = try roundTrip(request, expectReply: true)
        defer { freeSlots.push(slot) }
        // The used length comes from the backend: never read past what we lent it.
        guard length <= slots[slot].offered else { throw .protocolError }
        let reply = UnsafeRawBufferPointer(start: frontend.memory.pointer(slots[slot].reply), count: length)
        return try body(reply)
    }

    public func send(_ request: UnsafeRawBufferPointer) throws(Errno) {
        let (slot, _) = try roundTrip(request, expectReply: false)
        freeSlots.push(slot)
    }

    private func roundTrip(_ request: UnsafeRawBufferPointer, expectReply: Bool) throws(Errno) -> (Int, Int) {
        guard !dead.load(ordering: .acquiring) else { throw .notConnected }
        guard let index = freeSlots.pop() else { throw .notConnected }
        let slot = slots[index]
        guard request.count <= slot.capacity, request.count >= InHeader.wireSize else {
            freeSlots.push(index)
            throw .invalidArgument
        }
        frontend.memory.pointer(slot.request).copyMemory(from: request.baseAddress!, byteCount: request.count)
        // FORGET, BATCH_FORGET and INTERRUPT go on the high-priority queue 0.
        let opcode = request.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian
        let queueIndex: Int
        if opcode == FUSEOpcode.forget.rawValue || opcode == FUSEOpcode.batchForget.rawValue || opcode == FUSEOpcode.interrupt.rawValue {
            queueIndex = 0
        } else {
            let requestQueues = frontend.queues.count - 1
            queueIndex = 1 + nextQueue.wrappingAdd(1, ordering: .relaxed).oldValue % requestQueues
        }
        let queue = frontend.queues[queueIndex]
        slot.done = false
        slot.queue = queueIndex
        // The reply buffer of a READ is exactly header + size, as Linux's is: the
        // C virtiofsd (QEMU 7.2) preadv()s into the whole writable buffer and
        // then reports more bytes than were asked for.
        var replyCapacity = slot.capacity
        if opcode == FUSEOpcode.read.rawValue || opcode == FUSEOpcode.readdir.rawValue || opcode == FUSEOpcode.readdirplus.rawValue,
           request.count >= InHeader.wireSize + 20 {
            let size = Int(request.loadUnaligned(fromByteOffset: InHeader.wireSize + 16, as: UInt32.self).littleEndian)
            replyCapacity = min(replyCapacity, OutHeader.wireSize + size)
        }
        slot.offered = expectReply ? replyCapacity : 0
        let submitted: Bool = queue.lock.withLock { _ in
            let writable: [(address: UInt64, length: UInt32)] = expectReply ? [(slot.reply, UInt32(replyCapacity))] : []
            guard let head = queue.ring.submit(readable: [(slot.request, UInt32(request.count))], writable: writable) else { return false }
            owners[queueIndex].slotOfHead[head] = index
            return true
        }
        guard submitted else {
            freeSlots.push(index)
            throw .wouldBlock
        }
        queue.notify()
        do throws(Errno) {
            let mapping = opcode == FUSEOpcode.setupMapping.rawValue || opcode == FUSEOpcode.removeMapping.rawValue
            try wait(for: slot, on: queue, serviceBackend: mapping)
        } catch {
            // The backend is gone: the slot may still be in its ring; never reuse it.
            throw error
        }
        return (index, slot.length)
    }

    /// Reaps the queue's completions; true when `slot` is among the finished.
    private func reap(_ queue: FrontendQueue, for slot: Slot) -> Bool {
        queue.lock.withLock { _ in
            var others = false
            for (head, length) in queue.ring.reap() {
                guard let owner = owners[queue.index].slotOfHead.removeValue(forKey: head) else { continue }
                slots[owner].length = Int(length)
                slots[owner].done = true
                if slots[owner] !== slot { others = true }
            }
            // Completions of other waiters: wake them, in case we consumed their signal.
            if others { var one: UInt64 = 1; _ = Glibc.write(queue.call.rawValue, &one, 8) }
            return slot.done
        }
    }

    /// Callers spinning now. More spinners than cores starve the backend
    /// (16 waiters on 2 cores), so only the first `maxSpinners` spin; the
    /// rest sleep on the call eventfd, and a spinner that reaps their
    /// completions wakes them.
    private let spinners = Atomic<Int>(0)
    /// Adaptive spin budget (ns): halved when a spin ends empty, doubled when
    /// a reply came soon after we went to sleep. Updated racily; it is a hint.
    private let spinBudget = Atomic<UInt64>(0)
    private let maxSpinners = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) / 2)

    /// - Parameter serviceBackend: the request is a SETUPMAPPING/REMOVEMAPPING,
    ///   whose reply waits for our answer to the backend's SHMEM_MAP/UNMAP:
    ///   answer it from this spinning thread instead of waking another.
    private func wait(for slot: Slot, on queue: FrontendQueue, serviceBackend: Bool = false) throws(Errno) {
        if reap(queue, for: slot) { return }
        if pollNanoseconds > 0, spinners.wrappingAdd(1, ordering: .relaxed).oldValue < maxSpinners {
            let start = monotonicNanoseconds()
            defer { spinners.subtract(1, ordering: .relaxed) }
            // Mapping requests wait on a socket round trip besides the ring: spin longer.
            let current = spinBudget.load(ordering: .relaxed)
            let budget = serviceBackend ? max(current, 200_000) : current
            while monotonicNanoseconds() &- start < budget {
                if reap(queue, for: slot) {
                    spinBudget.store(min(pollNanoseconds, max(current * 2, 2_000)), ordering: .relaxed)
                    return
                }
                if serviceBackend { frontend.serviceBackendRequest() }
            }
            if !serviceBackend { spinBudget.store(current / 2, ordering: .relaxed) }
        } else if pollNanoseconds > 0 {
            spinners.subtract(1, ordering: .relaxed)
        }
        while true {
            if reap(queue, for: slot) { return }
            var counter: UInt64 = 0
            _ = Glibc.read(queue.call.rawValue, &counter, 8)
            if reap(queue, for: slot) { return }
            var fds = [pollfd(fd: queue.call.rawValue, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: frontend.socket.fd, events: Int16(0x2000), revents: 0)]  // POLLRDHUP
            let sleptFrom = monotonicNanoseconds()
            let ready = poll(&fds, 2, 1000)
            if pollNanoseconds > 0 && monotonicNanoseconds() &- sleptFrom < pollNanoseconds {
                let current = spinBudget.load(ordering: .relaxed)
                spinBudget.store(min(pollNanoseconds, max(current * 2, 2_000)), ordering: .relaxed)
            }
            if ready < 0 && daxfs_errno() != EINTR { throw Errno(daxfs_errno()) }
            if fds[1].revents & Int16(0x2000 | POLLHUP | POLLERR) != 0 {
                if reap(queue, for: slot) { return }
                dead.store(true, ordering: .releasing)
                throw .notConnected
            }
        }
    }

}
