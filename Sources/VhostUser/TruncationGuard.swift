import CLinux
import Glibc
import HostSystem

/// Holds a truncation of a mapped file until the frontend no longer maps the
/// pages it takes away (fanotify pre-content events, Linux ≥ 6.14, on
/// filesystems that allow them: ext4, xfs, btrfs).
///
/// QEMU maps file pages into the guest; a page past the end of a file kills
/// QEMU with SIGBUS when the guest touches it. inotify reports a truncation
/// only after it happened, so between the two the guest can touch a page
/// that is gone. A FAN_PRE_ACCESS mark on each mapped file makes the kernel
/// ask this guard first (the event's range is {new size, 0}); the guard runs
/// `shrink(file, newSize)` — the backend unmaps what lies past the new end —
/// and only then lets the truncation go on.
///
/// An event does not say what waits on it: its range is page-aligned (a
/// truncation to 100 bytes and a 4 KiB read at 0 look alike), and an open
/// with O_TRUNC raises only FAN_OPEN_PERM. So the guard reads the waiting
/// thread's system call (/proc/TID/syscall): truncate and ftruncate give the
/// exact new size, an open with O_TRUNC truncates to 0, fallocate's collapse
/// shortens the file, reads and writes do nothing to it. Where the call is
/// none of these (io_uring), a range of length 0 is taken as a truncation;
/// an O_TRUNC open through io_uring is followed through inotify only.
///
/// What it costs: a read or write of a marked file through a descriptor
/// opened after the mark also waits for an answer (the guard answers those at
/// once, about 10 µs); descriptors opened before the mark never ask. A
/// shrink that takes longer than `deadline` is let through anyway, so a
/// frontend that stopped answering cannot hang host processes for long.
final class TruncationGuard: @unchecked Sendable {
    private let group: SharedDescriptor
    private let wake: SharedDescriptor
    private let jobs = BlockingQueue<Job>()
    private let finished = Locked<[UInt64]>([])
    private let stopping = Locked(false)
    private var listener: OSThread?
    private var worker: OSThread?

    /// How long a truncation waits for the frontend at most.
    static let deadline: UInt64 = 12_000_000_000
    /// A truncation can still fail after it was let through (no inotify
    /// event follows then): the file is looked at again this much later.
    static let recheckDelay: UInt64 = 2_000_000_000

    private enum Job {
        case shrink(id: UInt64, file: MappedFile, size: UInt64)
        case recheck(MappedFile)
    }

    /// What the guard saw, for the device's closing log line and tests.
    struct Counters: Sendable, Equatable {
        var truncations = 0, heldPastDeadline = 0, accesses = 0
    }
    let counters = Locked(Counters())

    /// nil when this kernel or process cannot have pre-content events (the
    /// backend then follows sizes through inotify alone).
    init?(shrink: @escaping @Sendable (MappedFile, UInt64) -> Void, recheck: @escaping @Sendable (MappedFile) -> Void) {
        let fd = daxfs_fanotify_pre_content()
        guard fd >= 0 else { return nil }
        group = SharedDescriptor(adopting: fd)
        wake = SharedDescriptor(adopting: daxfs_eventfd(0, DAXFS_EFD_CLOEXEC | DAXFS_EFD_NONBLOCK))
        let jobs = self.jobs, finished = self.finished, wake = self.wake
        worker = try? OSThread(name: "daxfs-trunc-work") {
            while let job = jobs.pop() {
                switch job {
                case .shrink(let id, let file, let size):
                    shrink(file, size)
                    finished.withLock { $0.append(id) }
                    var one: UInt64 = 1
                    _ = Glibc.write(wake.rawValue, &one, 8)
                case .recheck(let file):
                    recheck(file)
                }
            }
        }
        guard worker != nil else { return nil }
        listener = try? OSThread(name: "daxfs-trunc-hold") { [self] in listen() }
        guard listener != nil else { jobs.close(); worker?.join(); return nil }
    }

    /// Why truncations in `directory` cannot be held, or nil when they can
    /// (a group is made and a scratch file marked).
    static func unavailable(in directory: String) -> String? {
        let group = daxfs_fanotify_pre_content()
        guard group >= 0 else { return "no fanotify pre-content group (\(Errno(daxfs_errno())))" }
        defer { Glibc.close(group) }
        var name = Array((directory + "/.daxfs-probe-XXXXXX").utf8CString)
        let fd = mkstemp(&name)
        guard fd >= 0 else { return "no scratch file in \(directory) (\(Errno(daxfs_errno())))" }
        unlink(name)
        defer { Glibc.close(fd) }
        guard daxfs_fanotify_mark_inode(group, DAXFS_FAN_MARK_ADD, mask, fd) == 0 else {
            return "this kernel or filesystem has no pre-content events (\(Errno(daxfs_errno())); Linux 6.14 with ext4, xfs or btrfs has them)"
        }
        return nil
    }

    /// Marks the file behind `fd`; false when its filesystem or this kernel
    /// has no pre-content events.
    func watch(_ fd: Int32) -> Bool {
        daxfs_fanotify_mark_inode(group.rawValue, DAXFS_FAN_MARK_ADD, Self.mask, fd) == 0
    }

    func unwatch(_ fd: Int32) {
        _ = daxfs_fanotify_mark_inode(group.rawValue, DAXFS_FAN_MARK_REMOVE, Self.mask, fd)
    }

    static let mask = DAXFS_FAN_PRE_ACCESS | DAXFS_FAN_OPEN_PERM

    /// Ends both threads; every truncation still held goes on.
    func stop() {
        stopping.withLock { $0 = true }
        var one: UInt64 = 1
        _ = Glibc.write(wake.rawValue, &one, 8)
        listener?.join()
        listener = nil
        jobs.close()
        worker?.join()
        worker = nil
    }

    // MARK: The listener thread

    private struct Held {
        let fd: Int32
        let deadline: UInt64
    }

    private func listen() {
        var held: [UInt64: Held] = [:]
        var rechecks: [(at: UInt64, file: MappedFile)] = []
        var nextID: UInt64 = 1
        var buffer = [UInt8](repeating: 0, count: 8 << 10)
        var fds = [pollfd(fd: group.rawValue, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: wake.rawValue, events: Int16(POLLIN), revents: 0)]
        defer {
            for (_, one) in held { answer(one.fd) }
        }
        while !stopping.withLock({ $0 }) {
            let now = monotonicNanoseconds()
            let soonest = min(held.values.map(\.deadline).min() ?? UInt64.max, rechecks.map(\.at).min() ?? UInt64.max)
            let timeout = soonest == UInt64.max ? -1 : Int32(min((soonest &- min(soonest, now)) / 1_000_000 + 1, 60_000))
            fds[0].revents = 0
            fds[1].revents = 0
            if poll(&fds, 2, timeout) < 0 && daxfs_errno() != EINTR { return }
            if fds[1].revents != 0 {
                var counter: UInt64 = 0
                _ = Glibc.read(wake.rawValue, &counter, 8)
                for id in finished.withLock({ f -> [UInt64] in defer { f.removeAll() }; return f }) {
                    if let one = held.removeValue(forKey: id) { answer(one.fd) }
                }
            }
            let later = monotonicNanoseconds()
            for (id, one) in held where one.deadline <= later {
                held.removeValue(forKey: id)
                answer(one.fd)
                counters.withLock { $0.heldPastDeadline += 1 }
            }
            rechecks.removeAll { due in
                guard due.at <= later else { return false }
                jobs.push(.recheck(due.file))
                return true
            }
            guard fds[0].revents & Int16(POLLIN) != 0 else { continue }
            let count = buffer.withUnsafeMutableBytes { Glibc.read(group.rawValue, $0.baseAddress, $0.count) }
            guard count > 0 else { continue }
            for event in Self.events(in: buffer, count: count) {
                guard event.fd >= 0 else { continue }
                guard let info = try? Syscall.fstat(event.fd),
                      let size = Self.shrinkingSize(of: event, fileSize: UInt64(max(0, info.st_size))),
                      size < UInt64(max(0, info.st_size)) else {
                    answer(event.fd)
                    counters.withLock { $0.accesses += 1 }
                    continue
                }
                let file = MappedFile(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
                counters.withLock { $0.truncations += 1 }
                let id = nextID
                nextID += 1
                held[id] = Held(fd: event.fd, deadline: later + Self.deadline)
                if !jobs.push(.shrink(id: id, file: file, size: size)) {
                    held.removeValue(forKey: id)
                    answer(event.fd)
                }
                rechecks.append((later + Self.deadline + Self.recheckDelay, file))
            }
        }
    }

    /// Lets the access or truncation behind event descriptor `fd` go on, and closes it.
    private func answer(_ fd: Int32) {
        // struct fanotify_response {s32 fd; u32 response}
        var response: (Int32, UInt32) = (fd, DAXFS_FAN_ALLOW)
        _ = withUnsafeBytes(of: &response) { Glibc.write(group.rawValue, $0.baseAddress, 8) }
        Glibc.close(fd)
    }

    /// One permission event: its descriptor, the thread that waits, and the
    /// range of a pre-content event (page-aligned by the kernel: a truncation
    /// to 100 and a 4 KiB read at 0 both show {0, 4096}).
    struct Event: Equatable {
        var fd: Int32
        var pid: Int32
        var mask: UInt64
        var range: Range?
        struct Range: Equatable { var offset, count: UInt64 }
    }

    /// What a waiting thread's system call does to the size of the file.
    enum Intent: Equatable {
        case truncates(to: UInt64)
        /// fallocate(FALLOC_FL_COLLAPSE_RANGE): the file loses this many bytes.
        case collapses(UInt64)
        case keepsSize
        case unknown
    }

    /// The new size `event` is about to give the file behind `info`, or nil
    /// when it does not shrink it. The event alone cannot say (see `Event`),
    /// so the waiting thread's system call is read; where it is not one this
    /// knows (io_uring), a pre-content range of length 0 is the kernel's
    /// truncation to a page-aligned size.
    static func shrinkingSize(of event: Event, fileSize: UInt64) -> UInt64? {
        shrinkingSize(of: event, intent: intent(ofThread: event.pid), fileSize: fileSize)
    }

    static func shrinkingSize(of event: Event, intent: Intent, fileSize: UInt64) -> UInt64? {
        switch intent {
        case .truncates(let size): return size
        case .collapses(let length): return fileSize > length ? fileSize - length : 0
        case .keepsSize: return nil
        case .unknown:
            guard event.mask & DAXFS_FAN_PRE_ACCESS != 0, let range = event.range, range.count == 0 else { return nil }
            return range.offset
        }
    }

    /// The intent of thread `thread`'s system call, from /proc/TID/syscall.
    static func intent(ofThread thread: Int32) -> Intent {
        guard let fd = try? Syscall.call({ open(ProcFS.path("\(thread)/syscall"), O_RDONLY | O_CLOEXEC) }) else { return .unknown }
        var buffer = [UInt8](repeating: 0, count: 512)
        let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        Glibc.close(fd)
        guard count > 0 else { return .unknown }
        let line = String(decoding: buffer[0 ..< count], as: UTF8.self).trimmingNewline
        return intent(ofSyscall: line) { address in
            // openat2's struct open_how starts with u64 flags.
            guard let mem = try? Syscall.call({ open(ProcFS.path("\(thread)/mem"), O_RDONLY | O_CLOEXEC) }) else { return nil }
            defer { Glibc.close(mem) }
            var flags: UInt64 = 0
            let read = pread(mem, &flags, 8, off_t(Int64(bitPattern: address)))
            return read == 8 ? flags : nil
        }
    }

    /// The same from a /proc/TID/syscall line ("NR arg1 ... arg6 sp pc",
    /// arguments in hex); `howFlags` reads openat2's flags at an address.
    static func intent(ofSyscall line: String, howFlags: (UInt64) -> UInt64?) -> Intent {
        let words = line.split(separator: " ")
        guard words.count >= 7, let number = Int(words[0]) else { return .unknown }
        func argument(_ index: Int) -> UInt64? {
            let word = words[index]
            return word.hasPrefix("0x") ? UInt64(word.dropFirst(2), radix: 16) : UInt64(word)
        }
        let truncating = UInt64(O_TRUNC)
        let calls = SystemCall.self
        switch number {
        case calls.truncate, calls.ftruncate:
            return argument(2).map { .truncates(to: $0) } ?? .unknown
        case calls.open:
            return (argument(2) ?? 0) & truncating != 0 ? .truncates(to: 0) : .keepsSize
        case calls.openat:
            return (argument(3) ?? 0) & truncating != 0 ? .truncates(to: 0) : .keepsSize
        case calls.creat:
            return .truncates(to: 0)
        case calls.openat2:
            guard let flags = argument(3).flatMap(howFlags) else { return .unknown }
            return flags & truncating != 0 ? .truncates(to: 0) : .keepsSize
        case calls.fallocate:
            let collapse: UInt64 = 0x08
            guard let mode = argument(2), let length = argument(4) else { return .unknown }
            return mode & collapse != 0 ? .collapses(length) : .keepsSize
        case _ where calls.keepingSize.contains(number):
            return .keepsSize
        default:
            return .unknown
        }
    }

    /// System call numbers of this architecture (-1: none such).
    enum SystemCall {
        #if arch(x86_64)
        static let truncate = 76, ftruncate = 77, open = 2, openat = 257, creat = 85, openat2 = 437, fallocate = 285
        /// read, write, pread64, pwrite64, readv, writev, mmap, sendfile,
        /// splice, preadv, pwritev, copy_file_range, preadv2, pwritev2.
        static let keepingSize: Set<Int> = [0, 1, 17, 18, 19, 20, 9, 40, 275, 295, 296, 326, 327, 328]
        #else
        static let truncate = 45, ftruncate = 46, open = -1, openat = 56, creat = -1, openat2 = 437, fallocate = 47
        static let keepingSize: Set<Int> = [63, 64, 67, 68, 65, 66, 222, 71, 76, 69, 70, 285, 286, 287]
        #endif
    }

    /// The events in `buffer[0 ..< count]`: struct fanotify_event_metadata
    /// {u32 event_len; u8 vers, reserved; u16 metadata_len; u64 mask; s32 fd,
    /// pid} followed by info records {u8 type, pad; u16 len; ...}; a range
    /// record (type 6) is {header, u32 pad, u64 offset, u64 count}, and a
    /// count of 0 marks a truncation to `offset`.
    static func events(in buffer: [UInt8], count: Int) -> [Event] {
        var found: [Event] = []
        buffer.withUnsafeBytes { raw in
            var offset = 0
            let end = min(count, raw.count)
            while offset + 24 <= end {
                let length = Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                let metadataLength = Int(raw.loadUnaligned(fromByteOffset: offset + 6, as: UInt16.self))
                guard length >= 24, metadataLength >= 24, metadataLength <= length, length <= end - offset else { break }
                var event = Event(fd: raw.loadUnaligned(fromByteOffset: offset + 16, as: Int32.self),
                                  pid: raw.loadUnaligned(fromByteOffset: offset + 20, as: Int32.self),
                                  mask: raw.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self), range: nil)
                var info = offset + metadataLength
                while info + 4 <= offset + length {
                    let type = raw[info]
                    let infoLength = Int(raw.loadUnaligned(fromByteOffset: info + 2, as: UInt16.self))
                    guard infoLength >= 4, info + infoLength <= offset + length else { break }
                    if type == DAXFS_FAN_EVENT_INFO_TYPE_RANGE, infoLength >= 24 {
                        event.range = .init(offset: raw.loadUnaligned(fromByteOffset: info + 8, as: UInt64.self),
                                            count: raw.loadUnaligned(fromByteOffset: info + 16, as: UInt64.self))
                    }
                    info += infoLength
                }
                found.append(event)
                offset += length
            }
        }
        return found
    }
}

private extension String {
    var trimmingNewline: String { hasSuffix("\n") ? String(dropLast()) : self }
}

extension VhostUserFSBackend {
    /// Why host truncations of files shared from `directory` cannot wait for
    /// the frontend to let go of their pages (see `TruncationGuard`), or nil
    /// when they can.
    public static func truncationHoldUnavailable(in directory: String) -> String? {
        TruncationGuard.unavailable(in: directory)
    }
}
