import FUSEServer
import Glibc
import HostSystem
import Synchronization

/// A shared-memory window of a vhost-user frontend (the DAX window, shmid 0,
/// or the direct mmap window, shmid 1): mappings become SHMEM_MAP/SHMEM_UNMAP
/// requests on the backend channel, with the file descriptor attached, each
/// waiting for the frontend's REPLY_ACK.
final class BackendChannel: WindowMapper, @unchecked Sendable {
    let windowSize: UInt64
    let shmid: UInt8
    private let line: BackendRequestLine

    init(line: BackendRequestLine, shmid: UInt8, windowSize: UInt64) {
        self.line = line
        self.shmid = shmid
        self.windowSize = windowSize
    }

    func map(fd: Int32, fileOffset: UInt64, windowOffset: UInt64, length: UInt64, writable: Bool) throws(Errno) {
        let flags = writable ? VhostUser.shmemMapReadWrite : 0
        try line.request(.shmemMap, payload: payload(fileOffset: fileOffset, windowOffset: windowOffset, length: length, flags: flags), fd: fd)
    }

    func unmap(windowOffset: UInt64, length: UInt64) throws(Errno) {
        try line.request(.shmemUnmap, payload: payload(fileOffset: 0, windowOffset: windowOffset, length: length, flags: 0), fd: nil)
    }

    /// `VhostUserMMap`: {u8 shmid, u8 padding[7], u64 fd_offset, u64 shm_offset, u64 len, u64 flags}.
    func payload(fileOffset: UInt64, windowOffset: UInt64, length: UInt64, flags: UInt64) -> [UInt8] {
        [shmid, 0, 0, 0, 0, 0, 0, 0] + .le(fileOffset, windowOffset, length, flags)
    }
}

/// The backend request channel, shared by the windows that use it.
final class BackendRequestLine: @unchecked Sendable {
    private let socket: MessageSocket
    private let owner: SharedDescriptor
    /// One request at a time: replies carry no id.
    private let lock = Locked(())

    init(fd: Int32) {
        owner = SharedDescriptor(adopting: fd)
        socket = MessageSocket(fd: fd)
    }

    func request(_ request: VhostUser.BackendRequest, payload: [UInt8], fd: Int32?) throws(Errno) {
        try lock.withLock { _ throws(Errno) in
            do throws(VhostError) {
                try socket.send(request: request.rawValue, flags: VhostUser.version | VhostUser.needReplyFlag,
                                payload: payload, fds: fd.map { [$0] } ?? [])
                // The frontend answers within microseconds when its client
                // thread is spinning: look for the reply before sleeping.
                socket.spinUntilReadable(nanoseconds: 200_000)
                let reply = try socket.receive()
                guard reply.request == request.rawValue, reply.flags & VhostUser.replyFlag != 0, reply.payload.count >= 8 else {
                    throw VhostError.protocolViolation("bad reply to backend request \(request)")
                }
                let status = reply.payload.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian }
                if status != 0 { throw VhostError.system(.io) }
            } catch {
                switch error {
                case .disconnected: throw .notConnected
                case .system(let errno): throw errno
                case .protocolViolation: throw .protocolError
                }
            }
        }
    }
}
