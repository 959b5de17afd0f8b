import CLinux
import Glibc
import HostSystem
import Logging
import Synchronization
import Virtio

/// Something that handles one descriptor chain of a queue and completes it.
protocol ChainHandler: AnyObject, Sendable {
    /// Called on the queue's thread for each chain popped (or each broken one).
    func handle(_ chain: DescriptorChain, from queue: RunningQueue)
}

/// A started virtqueue: the ring, its call descriptor and the lock under
/// which completions are published.
final class RunningQueue: @unchecked Sendable {
    let index: Int
    let ring: SplitQueue
    private let completion = Locked(())
    private let callFD: Locked<SharedDescriptor?>
    /// Requests handed to worker threads and not yet completed.
    private let inFlight = Atomic<Int>(0)

    init(index: Int, ring: SplitQueue, call: SharedDescriptor?) {
        self.index = index
        self.ring = ring
        callFD = Locked(call)
    }

    func setCall(_ descriptor: SharedDescriptor?) { callFD.withLock { $0 = descriptor } }

    /// Publishes a completion and interrupts the driver if it wants it.
    func complete(head: UInt16, length: Int) {
        let notify = completion.withLock { _ in
            ring.push(head: head, length: UInt32(clamping: length))
            return ring.needsNotification()
        }
        if notify, let call = callFD.withLock({ $0 }) {
            var one: UInt64 = 1
            _ = Glibc.write(call.rawValue, &one, 8)
        }
    }

    func began() { inFlight.add(1, ordering: .relaxed) }
    func ended() { inFlight.subtract(1, ordering: .releasing) }
    var pending: Int { inFlight.load(ordering: .acquiring) }
}

/// The thread that waits for kicks on one queue and feeds its chains to a handler.
final class QueueRunner: @unchecked Sendable {
    let queue: RunningQueue
    private let kick: SharedDescriptor
    private let wake: SharedDescriptor
    private let enabled: Atomic<Bool>
    private let stopping = Atomic<Bool>(false)
    private var thread: OSThread?

    /// Spin budget after the ring runs dry, before sleeping on the kick eventfd.
    private let pollNanoseconds: UInt64
    /// The budget now: halved by every spin that found nothing, doubled when
    /// work came soon after (a spin would have caught it). A spinner on a busy
    /// 2-core machine takes the CPU the other side needs, so it backs off.
    private var spinBudget: UInt64

    /// Guest memory faulted (see `PoisonFlag`): `poisoned` ends the connection.
    private let poison: PoisonFlag?
    private let poisoned: @Sendable () -> Void

    init(queue: RunningQueue, kick: SharedDescriptor, enabled: Bool, handler: any ChainHandler, logger: Logger,
         pollMicroseconds: Int = 0, poison: PoisonFlag? = nil, poisoned: @escaping @Sendable () -> Void = {}) throws(Errno) {
        self.poison = poison
        self.poisoned = poisoned
        pollNanoseconds = UInt64(max(0, pollMicroseconds)) * 1000
        spinBudget = pollNanoseconds
        self.queue = queue
        self.kick = kick
        wake = SharedDescriptor(adopting: try Syscall.call { daxfs_eventfd(0, DAXFS_EFD_CLOEXEC) })
        self.enabled = Atomic(enabled)
        thread = try OSThread(name: "daxfs-vq\(queue.index)") { [self] in
            run(handler: handler, logger: logger)
        }
    }

    func setEnabled(_ value: Bool) {
        enabled.store(value, ordering: .releasing)
        poke()
    }

    /// Stops the thread and waits for handed-off requests; returns the next available index.
    /// Stops taking requests, runs `beforeDraining` (requests that would
    /// wait forever end there), then waits for those still running.
    func stop(beforeDraining: () -> Void = {}) -> UInt16 {
        stopping.store(true, ordering: .releasing)
        poke()
        thread?.join()
        thread = nil
        beforeDraining()
        while queue.pending > 0 { usleep(100) }
        return queue.ring.nextAvailable
    }

    /// Spins up to the poll budget; true when the driver published work meanwhile.
    private func spinForWork() -> Bool {
        let start = monotonicNanoseconds()
        while monotonicNanoseconds() &- start < spinBudget {
            if queue.ring.hasAvailable {
                spinBudget = min(pollNanoseconds, max(spinBudget * 2, 2_000))
                return true
            }
            if stopping.load(ordering: .relaxed) { return false }
        }
        spinBudget /= 2
        return false
    }

    private func poke() {
        var one: UInt64 = 1
        _ = Glibc.write(wake.rawValue, &one, 8)
    }

    private func run(handler: any ChainHandler, logger: Logger) {
        var fds = [pollfd(fd: kick.rawValue, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: wake.rawValue, events: Int16(POLLIN), revents: 0)]
        while !stopping.load(ordering: .acquiring) {
            if enabled.load(ordering: .acquiring) {
                queue.ring.disableNotifications()
                popping: while let popped = queue.ring.pop() {
                    switch popped {
                    case .chain(let chain):
                        handler.handle(chain, from: queue)
                    case .broken(let head, let error):
                        // That request fails (nothing written); the device goes on.
                        logger.warning("queue \(queue.index): bad descriptor chain: \(error)")
                        if head < queue.ring.size { queue.complete(head: head, length: 0) }
                    case .corrupted:
                        logger.error("queue \(queue.index): available index is corrupted; the queue stops until the frontend restarts it")
                        enabled.store(false, ordering: .releasing)
                        break popping
                    }
                    if stopping.load(ordering: .relaxed) { return }
                    if let poison, poison.isSet {
                        logger.error("queue \(queue.index): guest memory is gone under a mapping (the frontend shrank its memory file); closing the connection")
                        poisoned()
                        return
                    }
                }
                if queue.ring.enableNotifications() { continue }  // raced with the driver
                // Adaptive polling: a request that arrives soon is served without a
                // wake-up (~45 µs across cores here); then sleep.
                if spinBudget > 0 && spinForWork() { continue }
            }
            fds[0].revents = 0
            fds[1].revents = 0
            let sleptFrom = monotonicNanoseconds()
            let ready = poll(&fds, 2, -1)
            if pollNanoseconds > 0 && monotonicNanoseconds() &- sleptFrom < pollNanoseconds {
                spinBudget = min(pollNanoseconds, max(spinBudget * 2, 2_000))
            }
            if ready < 0 && daxfs_errno() != EINTR { logger.error("queue \(queue.index): poll: \(Errno(daxfs_errno()))"); return }
            var counter: UInt64 = 0
            if fds[0].revents & Int16(POLLIN) != 0 { _ = Glibc.read(kick.rawValue, &counter, 8) }
            if fds[1].revents & Int16(POLLIN) != 0 { _ = Glibc.read(wake.rawValue, &counter, 8) }
            if fds[0].revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0 { return }
        }
    }
}
