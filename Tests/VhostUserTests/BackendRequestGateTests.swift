import CLinux
import DAX
import Glibc
import HostSystem
import Logging
import Testing
@testable import VhostUser

/// The frontend's answers to SHMEM_MAP/SHMEM_UNMAP on a guarded window: a
/// backend may change only ranges a client request has open. Real sockets,
/// a real file mapped into a real window.
@Suite struct BackendRequestGateTests {
    final class Rig {
        let window: LocalWindow
        let handler: BackendRequestHandler
        let backend: MessageSocket
        let file: Int32
        private let fds: [Int32]

        init() throws {
            var pair: [Int32] = [-1, -1]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
                throw Errno(daxfs_errno())
            }
            window = try LocalWindow(size: 4 << 20, guarded: true)
            var logger = Logger(label: "test.frontend")
            logger.logLevel = .critical
            handler = BackendRequestHandler(socket: MessageSocket(fd: pair[0]), windows: [0: window], logger: logger)
            backend = MessageSocket(fd: pair[1])
            // A 4 MiB file whose every byte says which MiB it is in.
            let file = daxfs_memfd("gate")
            guard file >= 0 else { throw Errno(daxfs_errno()) }
            for mib in 0 ..< 4 {
                let chunk = [UInt8](repeating: UInt8(0x10 + mib), count: 1 << 20)
                guard chunk.withUnsafeBytes({ pwrite(file, $0.baseAddress, $0.count, off_t(mib << 20)) }) == 1 << 20 else {
                    throw Errno(daxfs_errno())
                }
            }
            self.file = file
            fds = [pair[0], pair[1], file]
        }

        deinit { for fd in fds { close(fd) } }

        /// Sends one SHMEM_MAP (with `fd`) or SHMEM_UNMAP, lets the frontend
        /// answer it, and returns the status it replied (0 = done).
        func request(_ request: VhostUser.BackendRequest, windowOffset: UInt64, length: UInt64, fileOffset: UInt64 = 0) throws -> UInt64 {
            let flags = request == .shmemMap ? VhostUser.shmemMapReadWrite : 0
            let payload = [UInt8(0), 0, 0, 0, 0, 0, 0, 0] + .le(fileOffset, windowOffset, length, flags)
            try backend.send(request: request.rawValue, flags: VhostUser.version | VhostUser.needReplyFlag, payload: payload,
                             fds: request == .shmemMap ? [file] : [])
            handler.serviceIfReady()
            let reply = try backend.receive()
            #expect(reply.request == request.rawValue && reply.payload.count >= 8)
            return reply.payload.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian }
        }

        func byte(at offset: Int) -> UInt8 { window.base.load(fromByteOffset: offset, as: UInt8.self) }
    }

    @Test func mapsAndUnmapsOutsideAnOpenRangeAreRefused() throws {
        let rig = try Rig()
        // A request of the client has [0, 2 MiB) open: the backend maps it.
        let status = try rig.window.allowingChanges([(0, 2 << 20)]) { try rig.request(.shmemMap, windowOffset: 0, length: 2 << 20) }
        #expect(status == 0)
        #expect(rig.window.isMapped(offset: 0, length: 2 << 20, writable: true))
        #expect(rig.byte(at: 4096) == 0x10)

        // Now nothing is open: an unmap under the client's feet is refused
        // and the memory stays readable (the old frontend unmapped it, and
        // the next touch was SIGSEGV).
        #expect(try rig.request(.shmemUnmap, windowOffset: 0, length: 2 << 20) != 0)
        #expect(rig.window.isMapped(offset: 0, length: 2 << 20, writable: true))
        #expect(rig.byte(at: (2 << 20) - 1) == 0x11)
        // So is a map over it (another file's data in place of the client's)
        // and a map anywhere else.
        #expect(try rig.request(.shmemMap, windowOffset: 0, length: 2 << 20, fileOffset: 2 << 20) != 0)
        #expect(rig.byte(at: 0) == 0x10)
        #expect(try rig.request(.shmemMap, windowOffset: 2 << 20, length: 4096) != 0)
        #expect(!rig.window.isMapped(offset: 2 << 20, length: 4096, writable: false))
        // A range only partly open is refused too.
        let partly = try rig.window.allowingChanges([(0, 1 << 20)]) { try rig.request(.shmemUnmap, windowOffset: 0, length: 2 << 20) }
        #expect(partly != 0)
        #expect(rig.byte(at: 1 << 20) == 0x11)
    }

    @Test func adjacentOpenRangesCoverOneJoinedMessage() throws {
        let rig = try Rig()
        let ranges: [(offset: UInt64, length: UInt64)] = [(2 << 20, 2 << 20), (0, 2 << 20)]
        let mapped = try rig.window.allowingChanges(ranges) { try rig.request(.shmemMap, windowOffset: 0, length: 4 << 20) }
        #expect(mapped == 0)
        #expect(rig.byte(at: 3 << 20) == 0x13)
        let unmapped = try rig.window.allowingChanges(ranges) { try rig.request(.shmemUnmap, windowOffset: 0, length: 4 << 20) }
        #expect(unmapped == 0)
        #expect(!rig.window.isMapped(offset: 0, length: 4096, writable: false))
        #expect(!rig.window.isMapped(offset: (4 << 20) - 4096, length: 4096, writable: false))
    }

    @Test func anUnguardedWindowTakesChangesAnyTime() throws {
        let window = try LocalWindow(size: 1 << 20)
        let file = daxfs_memfd("open")
        defer { close(file) }
        #expect(ftruncate(file, 1 << 20) == 0)
        try window.map(fd: file, fileOffset: 0, windowOffset: 0, length: 1 << 20, writable: false)
        #expect(window.isMapped(offset: 0, length: 1 << 20, writable: false))
        try window.unmap(windowOffset: 0, length: 1 << 20)
        #expect(!window.isMapped(offset: 0, length: 4096, writable: false))
    }
}
