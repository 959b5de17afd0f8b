import FUSEServer
import HostSystem
import Synchronization

/// Carries whole FUSE messages from the client to a server and back.
/// Transports: in-process (`EmbeddedChannel`), and vhost-user in a later layer.
public protocol FUSEChannel: Sendable {
    /// Sends one request message and calls `body` with the whole reply message
    /// (header included). The reply bytes are valid only inside `body`.
    func call<R>(_ request: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws(Errno) -> R) throws(Errno) -> R
    /// Sends one message that has no reply (FORGET, BATCH_FORGET, INTERRUPT).
    func send(_ request: UnsafeRawBufferPointer) throws(Errno)
}

extension FUSEChannel {
    /// A transport that cannot tell one-way messages apart sends them as a call
    /// and expects no reply.
    public func send(_ request: UnsafeRawBufferPointer) throws(Errno) {
        _ = try? call(request) { (_: UnsafeRawBufferPointer) throws(Errno) in }
    }
}

/// Server and client in one process: a request is handled on the calling
/// thread by the server's session, and the reply is read in place.
public final class EmbeddedChannel: FUSEChannel {
    public let session: FUSESession
    private let pool = Locked<[ReplyBuffer]>([])
    private let bufferSize: Int

    public init(session: FUSESession) {
        self.session = session
        bufferSize = requestBufferSize(for: session.options)
    }

    public func call<R>(_ request: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws(Errno) -> R) throws(Errno) -> R {
        let reply = pool.withLock { $0.popLast() } ?? ReplyBuffer(capacity: bufferSize)
        defer { pool.withLock { $0.append(reply) } }
        let outcome = session.handle(request, reply: reply)
        guard outcome.length > 0 else { throw .io }
        return try body(UnsafeRawBufferPointer(rebasing: reply.storage[0 ..< outcome.length]))
    }

    public func send(_ request: UnsafeRawBufferPointer) throws(Errno) {
        let reply = pool.withLock { $0.popLast() } ?? ReplyBuffer(capacity: bufferSize)
        defer { pool.withLock { $0.append(reply) } }
        _ = session.handle(request, reply: reply)
    }
}
