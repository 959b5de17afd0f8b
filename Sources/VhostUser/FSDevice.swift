import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import Logging
import Virtio

/// The virtio-fs device: queue 0 is the high-priority queue (FORGET,
/// INTERRUPT), the rest carry requests. Every chain is one FUSE request:
/// device-readable buffers hold the request, device-writable ones take the
/// reply. Requests go to the FUSE session unchanged, but for SETLKW (see
/// `LockWaiter`).
final class FSDevice: ChainHandler, @unchecked Sendable {
    let session: FUSESession
    let logger: Logger
    private let pool: BlockingQueue<Job>?
    private var workers: [OSThread] = []
    private let bufferSize: Int
    /// Buffers of the queue threads (pool size 0), one set per queue index.
    private let inlineBuffers: [Buffers]

    struct Job: @unchecked Sendable {
        let chain: DescriptorChain
        let queue: RunningQueue
    }

    final class Buffers: @unchecked Sendable {
        let request: UnsafeMutableRawBufferPointer
        let reply: ReplyBuffer
        init(size: Int) {
            request = .allocate(byteCount: size, alignment: 4096)
            reply = ReplyBuffer(capacity: size)
        }
        deinit { request.deallocate() }
    }

    /// SETLKW requests waiting for their lock.
    private let locks: LockWaiter

    init(session: FUSESession, threadPoolSize: Int, queueCount: Int, logger: Logger) throws(Errno) {
        self.session = session
        locks = try LockWaiter(session: session)
        self.logger = logger
        bufferSize = requestBufferSize(for: session.options)
        inlineBuffers = (0 ..< queueCount).map { _ in Buffers(size: requestBufferSize(for: session.options)) }
        if threadPoolSize > 0 {
            let pool = BlockingQueue<Job>()
            self.pool = pool
            for index in 0 ..< threadPoolSize {
                let buffers = Buffers(size: bufferSize)
                workers.append(try OSThread(name: "daxfs-fs-\(index)") { [self] in
                    while let job = pool.pop() {
                        process(job.chain, job.queue, buffers)
                        job.queue.ended()
                    }
                })
            }
        } else {
            pool = nil
        }
    }

    /// Ends the lock waits of queue `index` (EINTR): it is stopping.
    func stopping(queue index: Int) { locks.cancel(queue: index) }

    /// Stops the workers after the queued jobs are done, and every lock wait.
    func shutdown() {
        locks.stop()
        pool?.close()
        for worker in workers { worker.join() }
        workers = []
    }

    func handle(_ chain: DescriptorChain, from queue: RunningQueue) {
        if LockWaiter.isLockWait(chain) {
            // A SETLKW can wait forever: it waits without a thread of its own.
            queue.began()
            locks.add(chain, from: queue)
        } else if let pool {
            queue.began()
            if !pool.push(Job(chain: chain, queue: queue)) { queue.ended(); queue.complete(head: chain.head, length: 0) }
        } else {
            process(chain, queue, inlineBuffers[queue.index % inlineBuffers.count])
        }
    }

    private func process(_ chain: DescriptorChain, _ queue: RunningQueue, _ buffers: Buffers) {
        guard let length = chain.gather(into: buffers.request) else {
            logger.warning("queue \(queue.index): request of \(chain.readableLength) bytes exceeds \(buffers.request.count); failed")
            queue.complete(head: chain.head, length: 0)
            return
        }
        let outcome = session.handle(UnsafeRawBufferPointer(rebasing: buffers.request[0 ..< length]), reply: buffers.reply)
        guard outcome.length > 0 else {
            queue.complete(head: chain.head, length: 0)
            return
        }
        let reply = UnsafeRawBufferPointer(rebasing: buffers.reply.storage[0 ..< outcome.length])
        if let written = chain.scatter(reply) {
            queue.complete(head: chain.head, length: written)
        } else {
            logger.warning("queue \(queue.index): reply of \(outcome.length) bytes does not fit the \(chain.writableLength) bytes the driver gave")
            session.undeliverable(outcome)
            queue.complete(head: chain.head, length: 0)
        }
    }
}
