// vhost-user control messages from a frontend into the backend's serve loop.
//
// Input: vhost-user messages back to back, {u32 request, u32 flags, u32
// size} and `size` payload bytes; the last one may be cut short. They are
// written to one end of a socketpair while `VhostUserFSBackend.serve` runs on
// the other; then that end is shut down for writing, and serve must return.
// Descriptors cannot come from the input, so the harness attaches what a
// frontend would: a memfd per memory region (sized to the region), an
// eventfd for SET_VRING_KICK/CALL/ERR (unless the no-fd flag is set) and
// for SET_LOG_FD and SET_INFLIGHT_FD, and a socket for SET_BACKEND_REQ_FD.
// Oracles: no crash or hang, serve returns, and every descriptor the run
// handed over is closed once it has.

import CLinux
import FUSEServer
import FuzzSupport
import Glibc
import HostSystem
import VhostUser

/// A file system that answers ENOSYS to everything: the control plane is under test here.
final class NullFileSystem: FileSystem, Sendable {}

nonisolated(unsafe) var backend: VhostUserFSBackend!

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    prepareFuzzProcess()
    var options = FSBackendOptions()
    options.requestQueues = 2
    options.pollMicroseconds = 0
    options.cacheSize = 4 << 20
    options.mmapWindowSize = 2 << 20
    options.tag = "fuzz"
    options.session.maxPages = 32
    backend = VhostUserFSBackend(options: options, logger: silentLogger) { () throws(Errno) -> any FileSystem in NullFileSystem() }
    return 0
}

enum Request {
    static let setLogFD: UInt32 = 7, setMemTable: UInt32 = 5, setVringKick: UInt32 = 12, setVringCall: UInt32 = 13
    static let setVringErr: UInt32 = 14, setBackendReqFD: UInt32 = 21, setInflightFD: UInt32 = 32, addMemReg: UInt32 = 37
}

/// A memfd for a region of `size` bytes from `offset`, as a VMM would pass.
/// Regions past 256 MiB get one page: mapping them fails or reads zeros.
func regionFile(size: UInt64, offset: UInt64) -> Int32 {
    let (end, overflow) = size.addingReportingOverflow(offset)
    let length = !overflow && end <= 256 << 20 ? end : 4096
    let fd = daxfs_memfd("daxfs-fuzz-guest")
    guard fd >= 0 else { fatalError("memfd: errno \(errno)") }
    ftruncate(fd, off_t(length))
    return fd
}

func eventDescriptor() -> Int32 {
    let fd = daxfs_eventfd(0, DAXFS_EFD_CLOEXEC | DAXFS_EFD_NONBLOCK)
    guard fd >= 0 else { fatalError("eventfd: errno \(errno)") }
    return fd
}

/// The descriptors a frontend sends with `request` (ours to close after sending).
func descriptors(for request: UInt32, payload: UnsafeRawBufferPointer, peers: inout [Int32]) -> [Int32] {
    func u64(_ offset: Int) -> UInt64 {
        offset + 8 <= payload.count ? payload.loadUnaligned(fromByteOffset: offset, as: UInt64.self) : 0
    }
    switch request {
    case Request.setMemTable:
        let count = payload.count >= 4 ? Int(min(payload.loadUnaligned(as: UInt32.self), 8)) : 0
        return (0 ..< count).map { index in regionFile(size: u64(8 + 32 * index + 8), offset: u64(8 + 32 * index + 24)) }
    case Request.addMemReg:
        return [regionFile(size: u64(16), offset: u64(32))]
    case Request.setVringKick, Request.setVringCall, Request.setVringErr:
        return u64(0) & (1 << 8) != 0 ? [] : [eventDescriptor()]
    case Request.setLogFD, Request.setInflightFD:
        return [eventDescriptor()]
    case Request.setBackendReqFD:
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else { fatalError("socketpair") }
        peers.append(pair[1])
        return [pair[0]]
    default:
        return []
    }
}

func run(_ input: UnsafeRawBufferPointer) {
    var pair: [Int32] = [-1, -1]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else { fatalError("socketpair") }
    let frontend = pair[0], serverSide = pair[1]
    let server: OSThread
    do throws(Errno) {
        server = try OSThread(name: "fuzz-serve") {
            _ = backend.serve(connection: serverSide)
            Glibc.close(serverSide)
        }
    } catch { fatalError("thread: \(error)") }

    let socket = MessageSocket(fd: frontend)
    var peers: [Int32] = []
    var position = 0
    while position < input.count {
        let rest = input.count - position
        let size = rest >= 12 ? Int(input.loadUnaligned(fromByteOffset: position + 8, as: UInt32.self)) : Int.max
        guard rest >= 12, size <= rest - 12 else {
            // A message cut short: its bytes as they are, then the end of the stream.
            _ = Glibc.send(frontend, input.baseAddress! + position, rest, Int32(MSG_NOSIGNAL))
            break
        }
        let request = input.loadUnaligned(fromByteOffset: position, as: UInt32.self)
        let flags = input.loadUnaligned(fromByteOffset: position + 4, as: UInt32.self)
        let payload = UnsafeRawBufferPointer(rebasing: input[position + 12 ..< position + 12 + size])
        let fds = descriptors(for: request, payload: payload, peers: &peers)
        let sent = Result { () throws(VhostError) in try socket.send(request: request, flags: flags, payload: Array(payload), fds: fds) }
        for fd in fds { Glibc.close(fd) }
        position += 12 + size
        if case .failure = sent { break }  // the backend already ended the connection
    }
    Glibc.shutdown(frontend, Int32(SHUT_WR))
    // Replies are dropped; reading them lets a backend that writes many finish.
    var sink = [UInt8](repeating: 0, count: 4096)
    while sink.withUnsafeMutableBytes({ Glibc.recv(frontend, $0.baseAddress, $0.count, 0) }) > 0 {}
    server.join()
    Glibc.close(frontend)
    for peer in peers { Glibc.close(peer) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = FuzzInput(data, size)
    expectNoDescriptorLeak("a vhost-user connection") { run(input.bytes) }
    return 0
}
