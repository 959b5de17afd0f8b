import FUSEServer
import Glibc
import HostSystem
import Synchronization

/// Turns a host file into a descriptor a frontend can map whole ranges of,
/// past the end of the file included. QEMU 11.1 maps a SHMEM_MAP's fd with
/// memory_region_init_ram_from_fd, which refuses a file shorter than
/// fd_offset + len (Linux asks for 2 MiB of a file of any size, and the last
/// partial page of a file can never pass) and always maps read-write; the
/// descriptor returned here is read-write and reports a size large enough,
/// while its pages are the file's own page cache (see `MappingShadow`).
public protocol MappableFileSource: Sendable {
    func mappable(_ fd: Int32) throws(Errno) -> SharedDescriptor
}

/// A shared-memory window of a vhost-user frontend (the DAX window, shmid 0,
/// or the direct mmap window, shmid 1): mappings become SHMEM_MAP/SHMEM_UNMAP
/// requests on the backend channel, with the file descriptor attached, each
/// waiting for the frontend's REPLY_ACK. The window keeps the table of what
/// the frontend holds (`WindowMappings`), so it never asks for an overlapping
/// map or an unmap that does not match one, as QEMU 11.1 requires.
final class BackendChannel: WindowMapper, @unchecked Sendable {
    let windowSize: UInt64
    let shmid: UInt8
    private let line: BackendRequestLine
    private let files: (any MappableFileSource)?
    /// Held across a whole change, so changes of one window never interleave.
    private let table = Locked(WindowMappings())
    /// Descriptors from `files` by host file, shared by that file's mappings.
    private let mappable = Locked<[MappedFile: SharedDescriptor]>([:])

    init(line: BackendRequestLine, shmid: UInt8, windowSize: UInt64, files: (any MappableFileSource)? = nil) {
        self.line = line
        self.shmid = shmid
        self.windowSize = windowSize
        self.files = files
    }

    func map(fd: Int32, fileOffset: UInt64, windowOffset: UInt64, length: UInt64, writable: Bool) throws(Errno) {
        let info = try Syscall.fstat(fd)
        let file = MappedFile(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        let descriptor: SharedDescriptor
        var mapWritable = writable
        if let files {
            // One read-write descriptor per file: QEMU maps every range writable.
            descriptor = try mappable.withLock { cache throws(Errno) in
                if let known = cache[file] { return known }
                let made = try files.mappable(fd)
                cache[file] = made
                return made
            }
            mapWritable = true
        } else {
            descriptor = SharedDescriptor(adopting: try Syscall.call { dup(fd) })
        }
        let wanted = FrontendMapping(windowOffset: windowOffset, length: length, fileOffset: fileOffset, file: file,
                                     writable: mapWritable, descriptor: descriptor)
        try table.withLock { mappings throws(Errno) in
            // Linux's read-only → writable upgrade of a range already mapped
            // read-write, or the same SETUPMAPPING again: nothing to change.
            if mappings.holds(wanted) { return }
            try run(mappings.plan(replacing: windowOffset, windowOffset + length, with: wanted), on: &mappings)
        }
        releaseUnused()
    }

    func unmap(windowOffset: UInt64, length: UInt64) throws(Errno) {
        try table.withLock { mappings throws(Errno) in
            try run(mappings.plan(replacing: windowOffset, windowOffset + length, with: nil), on: &mappings)
        }
        releaseUnused()
    }

    /// The mappings the frontend holds now (tests and statistics).
    var liveMappings: Int { table.withLock { $0.count } }

    /// The frontend dropped every mapping itself (device reset, disconnect).
    func forgetAll() {
        table.withLock { $0.forgetAll() }
        releaseUnused(force: true)
    }

    /// Applies `steps` in order; the first failure stops, with the table
    /// saying what the frontend holds.
    private func run(_ steps: [WindowStep], on mappings: inout WindowMappings) throws(Errno) {
        for step in steps {
            switch step {
            case .unmap(let old):
                try line.request(.shmemUnmap, payload: payload(fileOffset: 0, windowOffset: old.windowOffset, length: old.length, flags: 0), fd: nil)
            case .map(let new):
                let flags = new.writable ? VhostUser.shmemMapReadWrite : 0
                try line.request(.shmemMap, payload: payload(fileOffset: new.fileOffset, windowOffset: new.windowOffset, length: new.length, flags: flags),
                                 fd: new.descriptor.rawValue)
            }
            mappings.applied(step)
        }
    }

    /// Mappable descriptors kept beyond those live mappings use: a file
    /// mapped again soon (reclaim, then a new read) skips making one anew.
    static let spareMappable = 64

    /// Closes mappable descriptors no mapping uses, once there are more than the spares.
    private func releaseUnused(force: Bool = false) {
        guard files != nil, force || mappable.withLock({ $0.count }) > Self.spareMappable else { return }
        let shown = table.withLock { mappings in Set(mappings.mappings.map(\.file)) }
        mappable.withLock { cache in cache = cache.filter { shown.contains($0.key) } }
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
