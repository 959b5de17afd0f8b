import DaxClient
import FUSEABI
import HostSystem
import Synchronization

/// One FUSE connection shared by several `DaxClient`s in turn, so that the
/// benchmark can try several window sizes against a backend that serves one
/// frontend, once (`daxfs serve`, virtiofsd): the first INIT goes to the
/// server and later ones are answered with its reply; DESTROY is answered
/// here until `allowDestroy` is set, so the session outlives each client.
final class SharedConnectionChannel: FUSEChannel, @unchecked Sendable {
    let base: any FUSEChannel
    private let initReply = Locked<[UInt8]?>(nil)
    private let destroyAllowed = Atomic<Bool>(false)

    init(base: any FUSEChannel) { self.base = base }

    /// Lets the next DESTROY through to the server (the end of the run).
    func allowDestroy() { destroyAllowed.store(true, ordering: .releasing) }

    func call<R>(_ request: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws(Errno) -> R) throws(Errno) -> R {
        guard request.count >= InHeader.wireSize else { return try base.call(request, body) }
        let opcode = request.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian
        let unique = request.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        if opcode == FUSEOpcode.`init`.rawValue {
            if let cached = initReply.withLock({ $0 }) { return try answer(cached, unique: unique, body) }
            return try base.call(request) { reply throws(Errno) -> R in
                // Keep only a successful reply: a refused INIT is refused again.
                if reply.count >= OutHeader.wireSize, reply.loadUnaligned(fromByteOffset: 4, as: Int32.self) == 0 {
                    initReply.withLock { $0 = Array(reply) }
                }
                return try body(reply)
            }
        }
        if opcode == FUSEOpcode.destroy.rawValue, !destroyAllowed.load(ordering: .acquiring) {
            // OutHeader {len 16, error 0, unique}.
            var reply = [UInt8](repeating: 0, count: OutHeader.wireSize)
            reply[0] = UInt8(OutHeader.wireSize)
            return try answer(reply, unique: unique, body)
        }
        return try base.call(request, body)
    }

    func send(_ request: UnsafeRawBufferPointer) throws(Errno) { try base.send(request) }

    /// Hands `reply` to `body` with the request's unique filled in.
    private func answer<R>(_ reply: [UInt8], unique: UInt64, _ body: (UnsafeRawBufferPointer) throws(Errno) -> R) throws(Errno) -> R {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: reply.count, alignment: 8)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: reply)
        buffer.storeBytes(of: unique, toByteOffset: 8, as: UInt64.self)
        return try body(UnsafeRawBufferPointer(buffer))
    }
}
