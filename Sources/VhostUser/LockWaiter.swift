import CLinux
import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import Virtio

/// SETLKW without a thread per wait. A guest can have any number of lock
/// waits outstanding; a thread (and request buffers) for each grew the
/// backend by about 1 MiB per wait. Here a waiting SETLKW is a small record:
/// one thread tries each again as a non-blocking SETLK, with backoff, until
/// the lock is granted, the request is interrupted (FUSE_INTERRUPT), or its
/// queue stops (the reply is then EINTR, as for a signal). At most
/// `limit` waits per device; one more is refused with ENOLCK.
public final class LockWaiter: @unchecked Sendable {
    /// Waiting SETLKWs per device.
    static let limit = 4096
    @_spi(Testing) public static var limitForTests: Int { limit }
    /// The largest SETLKW taken: header, fuse_lk_in, and room for extensions.
    static let largestRequest = 512

    private struct Waiting {
        let chain: DescriptorChain
        let queue: RunningQueue
        /// The request, its opcode turned into SETLK.
        var request: [UInt8]
        let unique: UInt64
        var delay: UInt64
        var due: UInt64
    }

    private let session: FUSESession
    private let waiting = Locked<[Waiting]>([])
    /// Waits taken and not yet answered (in `waiting`, or being tried).
    private let admitted = Locked(0)
    private let stopping = Locked(false)
    private let wake: SharedDescriptor
    private let reply = ReplyBuffer(capacity: 4096)
    private var thread: OSThread?

    init(session: FUSESession) throws(Errno) {
        self.session = session
        wake = SharedDescriptor(adopting: daxfs_eventfd(0, DAXFS_EFD_CLOEXEC | DAXFS_EFD_NONBLOCK))
        thread = try OSThread(name: "daxfs-lock-wait") { [self] in run() }
    }

    var count: Int { admitted.withLock { $0 } }

    /// Whether `chain` is a SETLKW.
    static func isLockWait(_ chain: DescriptorChain) -> Bool {
        guard let first = chain.readable.first, first.length >= 8, let pointer = first.pointer else { return false }
        return UInt32(littleEndian: pointer.loadUnaligned(fromByteOffset: 4, as: UInt32.self)) == FUSEOpcode.setlkw.rawValue
    }

    /// Takes a SETLKW; `queue.began()` was called. The reply comes later.
    func add(_ chain: DescriptorChain, from queue: RunningQueue) {
        var request = [UInt8](repeating: 0, count: Self.largestRequest)
        let length = request.withUnsafeMutableBytes { chain.gather(into: $0) }
        guard let length, length >= InHeader.wireSize else {
            finish(chain, queue, errorReply: EINVAL, unique: 0, admitted: false)
            return
        }
        request.removeSubrange(length...)
        request.withUnsafeMutableBytes { $0.storeBytes(of: FUSEOpcode.setlk.rawValue.littleEndian, toByteOffset: 4, as: UInt32.self) }
        let unique = request.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
        let taken = admitted.withLock { count -> Bool in
            guard count < Self.limit else { return false }
            count += 1
            return true
        }
        guard taken else {
            finish(chain, queue, errorReply: ENOLCK, unique: unique, admitted: false)
            return
        }
        waiting.withLock { $0.append(Waiting(chain: chain, queue: queue, request: request, unique: unique, delay: 0, due: 0)) }
        poke()
    }

    /// Ends every wait of queue `index` with EINTR (the queue is stopping).
    func cancel(queue index: Int) {
        let cancelled = waiting.withLock { list -> [Waiting] in
            let gone = list.filter { $0.queue.index == index }
            list.removeAll { $0.queue.index == index }
            return gone
        }
        for wait in cancelled { finish(wait.chain, wait.queue, errorReply: EINTR, unique: wait.unique) }
    }

    /// Ends every wait with EINTR and the thread.
    func stop() {
        stopping.withLock { $0 = true }
        poke()
        thread?.join()
        thread = nil
        let left = waiting.withLock { list -> [Waiting] in defer { list.removeAll() }; return list }
        for wait in left { finish(wait.chain, wait.queue, errorReply: EINTR, unique: wait.unique) }
    }

    private func poke() {
        var one: UInt64 = 1
        _ = Glibc.write(wake.rawValue, &one, 8)
    }

    private func run() {
        var descriptor = pollfd(fd: wake.rawValue, events: Int16(POLLIN), revents: 0)
        while !stopping.withLock({ $0 }) {
            let now = monotonicNanoseconds()
            let due = waiting.withLock { list -> [Waiting] in
                let ready = list.filter { $0.due <= now }
                list.removeAll { $0.due <= now }
                return ready
            }
            var again: [Waiting] = []
            for var wait in due {
                if session.takeInterrupt(unique: wait.unique) {
                    finish(wait.chain, wait.queue, errorReply: EINTR, unique: wait.unique)
                    continue
                }
                let outcome = wait.request.withUnsafeBytes { session.handle($0, reply: reply) }
                let error = outcome.length >= OutHeader.wireSize
                    ? reply.storage.loadUnaligned(fromByteOffset: 4, as: Int32.self) : 0
                if error == -EAGAIN || error == -EACCES {
                    // Held by someone else: 100 µs doubling to 10 ms (50 ms
                    // when many wait, so the retries stay cheap).
                    let ceiling: UInt64 = count > 64 ? 50_000_000 : 10_000_000
                    wait.delay = min(max(wait.delay * 2, 100_000), ceiling)
                    wait.due = monotonicNanoseconds() + wait.delay
                    again.append(wait)
                    continue
                }
                deliver(wait, length: outcome.length)
            }
            if !again.isEmpty { waiting.withLock { $0 += again } }
            let next = waiting.withLock { $0.map(\.due).min() }
            let timeout: Int32 = next.map { Int32(min(($0 &- min($0, monotonicNanoseconds())) / 1_000_000, 1000)) } ?? 1000
            descriptor.revents = 0
            if poll(&descriptor, 1, timeout) > 0 {
                var counter: UInt64 = 0
                _ = Glibc.read(wake.rawValue, &counter, 8)
            }
        }
    }

    private func deliver(_ wait: Waiting, length: Int) {
        admitted.withLock { $0 -= 1 }
        guard length > 0 else {
            wait.queue.complete(head: wait.chain.head, length: 0)
            wait.queue.ended()
            return
        }
        let written = wait.chain.scatter(UnsafeRawBufferPointer(rebasing: reply.storage[0 ..< length]))
        wait.queue.complete(head: wait.chain.head, length: written ?? 0)
        wait.queue.ended()
    }

    /// Completes `chain` with a bare error reply (`admitted`: it was a wait taken).
    private func finish(_ chain: DescriptorChain, _ queue: RunningQueue, errorReply errno: Int32, unique: UInt64, admitted wasTaken: Bool = true) {
        if wasTaken { admitted.withLock { $0 -= 1 } }
        var header = [UInt8](repeating: 0, count: OutHeader.wireSize)
        header.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt32(OutHeader.wireSize).littleEndian, toByteOffset: 0, as: UInt32.self)
            raw.storeBytes(of: (-errno).littleEndian, toByteOffset: 4, as: Int32.self)
            raw.storeBytes(of: unique.littleEndian, toByteOffset: 8, as: UInt64.self)
        }
        let written = header.withUnsafeBytes { chain.scatter($0) }
        queue.complete(head: chain.head, length: written ?? 0)
        queue.ended()
    }
}
