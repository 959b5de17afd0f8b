import CLinux
import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import Logging
import Synchronization

/// Errors from mounting, in plain words for the command line.
public struct MountError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Options of a /dev/fuse mount.
public struct MountOptions: Sendable {
    /// Worker threads, each reading requests from its own cloned /dev/fuse descriptor.
    public var threads: Int = OSThread.processorCount
    /// Let users other than the mounting one use the mount (`allow_other`).
    public var allowOther = false
    /// Let the kernel check permissions from the mode bits (`default_permissions`).
    public var defaultPermissions = false
    /// Offer kernel passthrough (FUSE_PASSTHROUGH) for regular files.
    public var passthrough = true
    /// What `mount` and /proc/mounts show as the source.
    public var fsname = "daxfs"
    /// Microseconds one worker keeps polling /dev/fuse (non-blocking reads)
    /// after a request before it sleeps: the next request then costs no
    /// wake-up (45 µs across cores here). 0 = every worker sleeps in read(2).
    public var pollMicroseconds = 50
    public init() {}
}

/// A live FUSE mount served by a pool of worker threads.
///
/// The kernel is the client: it sends requests on /dev/fuse; each worker
/// reads one request at a time into its own buffer and writes the reply on
/// the same descriptor (a reply must go to the clone that read the request).
public final class FUSEMount: Sendable {
    public let mountpoint: String
    private let device: SharedDescriptor
    private let session: FUSESession
    private let options: MountOptions
    private let logger: Logger
    private let unmounted = Atomic<Bool>(false)

    /// Opens /dev/fuse and mounts `fileSystem` at `mountpoint`; call `serve()` next.
    public init(mountpoint: String, fileSystem: any FileSystem, options: MountOptions, session sessionOptions: SessionOptions = SessionOptions(),
                logger: Logger = Logger(label: "daxfs.mount")) throws(MountError) {
        var info = stat()
        guard stat(mountpoint, &info) == 0 else {
            throw MountError("mountpoint \(mountpoint): \(Errno(daxfs_errno()))")
        }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw MountError("mountpoint \(mountpoint) is not a directory") }
        let absolute = Self.absolutePath(mountpoint)
        if let existing = MountTable.entry(at: absolute) {
            throw MountError("mountpoint \(absolute) is busy: a \(existing) filesystem is already mounted there (unmount it first)")
        }

        let fd: Int32
        do {
            fd = try FileDescriptor.open("/dev/fuse", flags: O_RDWR).release()
        } catch {
            switch error {
            case .noEntry: throw MountError("no /dev/fuse on this machine: load the fuse module (modprobe fuse)")
            case .permissionDenied, .notPermitted: throw MountError("cannot open /dev/fuse: \(error) (mounting needs root)")
            default: throw MountError("cannot open /dev/fuse: \(error)")
            }
        }
        device = SharedDescriptor(adopting: fd)

        var data = "fd=\(fd),rootmode=\(String(info.st_mode & S_IFMT, radix: 8)),user_id=\(getuid()),group_id=\(getgid())"
        if options.allowOther { data += ",allow_other" }
        if options.defaultPermissions { data += ",default_permissions" }
        let flags = DAXFS_MS_NOSUID | DAXFS_MS_NODEV
        if Glibc.mount(options.fsname, absolute, "fuse.daxfs", flags, data) != 0 {
            let error = Errno(daxfs_errno())
            switch error {
            case .busy: throw MountError("mountpoint \(absolute) is busy: \(error)")
            case .notPermitted, .permissionDenied: throw MountError("mount(2) of \(absolute) refused: \(error) (mounting needs root)")
            case .noDevice: throw MountError("the kernel has no FUSE support (fuse module not loaded)")
            default: throw MountError("mount(2) of \(absolute) failed: \(error)")
            }
        }
        self.mountpoint = absolute
        self.options = options
        self.logger = logger
        let backing: (any BackingRegistry)? = options.passthrough ? DeviceBackingRegistry(device: device) : nil
        session = FUSESession(fileSystem: fileSystem, options: sessionOptions, logger: logger,
                              backing: backing, notifications: DeviceNotificationSink(device: device))
    }

    /// Serves requests until the filesystem is unmounted (here or elsewhere)
    /// or the connection is aborted. Returns after every worker has stopped.
    public func serve() throws(MountError) {
        let count = max(1, options.threads)
        let bufferSize = requestBufferSize(for: session.options)
        var workers: [OSThread] = []
        for index in 0 ..< count {
            let fd: Int32
            if index == 0 {
                fd = device.rawValue
            } else {
                do { fd = try cloneDevice() } catch {
                    logger.warning("FUSE_DEV_IOC_CLONE failed (\(error)); serving with \(index) thread(s)")
                    break
                }
            }
            let owned = index == 0 ? nil : SharedDescriptor(adopting: fd)
            // The last worker polls, on a cloned descriptor of its own (O_NONBLOCK is per open file).
            let polls = options.pollMicroseconds > 0 && index == count - 1 && index > 0
            if polls { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
            let worker = Worker(fd: fd, owner: owned, session: session, logger: logger, bufferSize: bufferSize,
                                pollNanoseconds: polls ? UInt64(options.pollMicroseconds) * 1000 : 0)
            do {
                workers.append(try OSThread(name: "daxfs-fuse-\(index)") { worker.run() })
            } catch {
                throw MountError("cannot start worker thread: \(error)")
            }
        }
        for worker in workers { worker.join() }
        session.end()
    }

    /// Unmounts; busy mounts are detached and served until their last user leaves.
    public func unmount() {
        if unmounted.exchange(true, ordering: .acquiringAndReleasing) { return }
        if umount2(mountpoint, 0) == 0 { return }
        let error = Errno(daxfs_errno())
        if error == .busy {
            logger.info("\(mountpoint) is busy; detaching it lazily")
            _ = umount2(mountpoint, DAXFS_MNT_DETACH)
        } else if error != .invalidArgument {  // EINVAL: no longer mounted
            logger.warning("umount \(mountpoint): \(error)")
        }
    }

    /// Tears the connection down at once (pending requests fail with ENOTCONN).
    public func abort() {
        // The connection id is the device number of the mounted superblock.
        let id = MountTable.connectionID(of: mountpoint)
        unmount()
        if let id {
            let fd = open("/sys/fs/fuse/connections/\(id)/abort", O_WRONLY)
            if fd >= 0 { _ = Glibc.write(fd, "1", 1); Glibc.close(fd) }
        }
    }

    private func cloneDevice() throws(Errno) -> Int32 {
        let clone = try FileDescriptor.open("/dev/fuse", flags: O_RDWR)
        var source = UInt32(bitPattern: device.rawValue)
        _ = try Syscall.call { daxfs_ioctl_ptr(clone.rawValue, DAXFS_FUSE_DEV_IOC_CLONE, &source) }
        return clone.release()
    }

    private static func absolutePath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// One worker thread's loop and buffers.
private final class Worker: @unchecked Sendable {
    let fd: Int32
    let owner: SharedDescriptor?
    let session: FUSESession
    let logger: Logger
    let request: UnsafeMutableRawBufferPointer
    let reply: ReplyBuffer

    /// 0: block in read(2). Otherwise the descriptor is non-blocking and the
    /// worker polls this long after each request before sleeping in poll(2).
    let pollNanoseconds: UInt64

    init(fd: Int32, owner: SharedDescriptor?, session: FUSESession, logger: Logger, bufferSize: Int, pollNanoseconds: UInt64 = 0) {
        self.fd = fd; self.owner = owner; self.session = session; self.logger = logger; self.pollNanoseconds = pollNanoseconds
        request = .allocate(byteCount: bufferSize, alignment: HostPage.size)
        reply = ReplyBuffer(capacity: bufferSize)
    }

    deinit { request.deallocate() }

    func run() {
        var lastRequest = monotonicNanoseconds()
        while true {
            let count: Int
            do {
                count = try Syscall.read(fd, into: request)
                if pollNanoseconds > 0 { lastRequest = monotonicNanoseconds() }
            } catch {
                switch error {
                case .wouldBlock where pollNanoseconds > 0:
                    // Nothing queued: keep polling within the budget, then sleep until a request comes.
                    if monotonicNanoseconds() &- lastRequest > pollNanoseconds {
                        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                        _ = poll(&descriptor, 1, -1)
                        lastRequest = monotonicNanoseconds()
                    }
                    continue
                case .noEntry, .wouldBlock:
                    continue  // the request was interrupted before we read it
                case .noDevice:
                    return  // unmounted or aborted
                default:
                    logger.error("reading /dev/fuse: \(error)")
                    return
                }
            }
            if count == 0 { return }
            let outcome = session.handle(UnsafeRawBufferPointer(rebasing: request[0 ..< count]), reply: reply)
            guard outcome.length > 0 else { continue }
            do {
                try Syscall.writeAll(fd, from: UnsafeRawBufferPointer(rebasing: reply.storage[0 ..< outcome.length]))
            } catch {
                switch error {
                case .noEntry:
                    session.undeliverable(outcome)  // interrupted meanwhile; the kernel dropped it
                case .noDevice:
                    session.undeliverable(outcome)
                    return
                default:
                    logger.error("writing a reply to /dev/fuse: \(error)")
                    session.undeliverable(outcome)
                }
            }
        }
    }
}

/// FUSE_DEV_IOC_BACKING_OPEN/CLOSE on the session's device.
private struct DeviceBackingRegistry: BackingRegistry {
    let device: SharedDescriptor

    func open(fd: Int32) throws(Errno) -> Int32 {
        var map = [UInt8](BackingMap(fd: fd).wireBytes)
        return try Syscall.call { map.withUnsafeMutableBytes { daxfs_ioctl_ptr(device.rawValue, DAXFS_FUSE_DEV_IOC_BACKING_OPEN, $0.baseAddress) } }
    }

    func close(id: Int32) throws(Errno) {
        var value = id
        _ = try Syscall.call { daxfs_ioctl_ptr(device.rawValue, DAXFS_FUSE_DEV_IOC_BACKING_CLOSE, &value) }
    }
}

/// Notifications are written to the device like replies, with unique 0.
private struct DeviceNotificationSink: NotificationSink {
    let device: SharedDescriptor
    func send(_ message: UnsafeRawBufferPointer) throws(Errno) {
        try Syscall.writeAll(device.rawValue, from: message)
    }
}

/// Reads /proc/self/mountinfo.
enum MountTable {
    /// The filesystem type mounted exactly at `path`, if any.
    static func entry(at path: String) -> String? {
        lines().last { $0.mountpoint == path }?.fstype
    }

    /// The FUSE connection id (the minor device number) of the mount at `path`.
    static func connectionID(of path: String) -> UInt32? {
        guard let line = lines().last(where: { $0.mountpoint == path }) else { return nil }
        return line.device.split(separator: ":").last.flatMap { UInt32($0) }
    }

    private struct Line { let device: String; let mountpoint: String; let fstype: String }

    private static func lines() -> [Line] {
        guard let file = fopen("/proc/self/mountinfo", "r") else { return [] }
        defer { fclose(file) }
        var result: [Line] = []
        var linePointer: UnsafeMutablePointer<CChar>? = nil
        var capacity = 0
        defer { free(linePointer) }
        while getline(&linePointer, &capacity, file) > 0, let linePointer {
            let fields = String(cString: linePointer).split(separator: " ")
            guard let dash = fields.firstIndex(of: "-"), fields.count > dash + 1, fields.count > 4 else { continue }
            result.append(Line(device: String(fields[2]), mountpoint: unescape(fields[4]), fstype: String(fields[dash + 1])))
        }
        return result
    }

    /// mountinfo escapes space, tab, newline and backslash as \ooo.
    private static func unescape(_ field: Substring) -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3, let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
