import CLinux
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

    /// Memory slots the frontend uses now (the regions of its memory table).
    private let slotsInUse: (@Sendable () -> Int)?

    /// What the window did: SETUPMAPPINGs (`map` calls), REMOVEMAPPING ranges
    /// (`unmap` calls), and the SHMEM_MAP/SHMEM_UNMAP messages they took.
    struct Counters: Sendable, Equatable, CustomStringConvertible {
        var setups = 0, removes = 0, shmemMaps = 0, shmemUnmaps = 0, resizes = 0
        /// SHMEM_UNMAPs the frontend acknowledged.
        var shmemUnmapsTaken = 0
        /// Host truncations the truncation guard held, and those let through before the frontend answered.
        var truncationsHeld = 0, truncationsPastDeadline = 0
        /// Waits for the frontend process to release pages a held truncation takes away.
        var releaseWaits = 0, releasesPastDeadline = 0
        var releaseNanoseconds: [UInt64] = []
        var description: String {
            var text = "\(setups) SETUPMAPPING, \(removes) REMOVEMAPPING ranges, \(shmemMaps) SHMEM_MAP, \(shmemUnmaps) SHMEM_UNMAP, \(resizes) size changes followed, \(truncationsHeld) truncations held (\(truncationsPastDeadline) past the deadline)"
            if releaseWaits > 0 {
                let sorted = releaseNanoseconds.sorted()
                func milliseconds(_ ns: UInt64) -> String { "\(ns / 1_000_000).\(ns / 100_000 % 10)" }
                text += "; the frontend released truncated pages \(milliseconds(sorted[sorted.count / 2])) ms after (median, longest \(milliseconds(sorted.last ?? 0)) ms, \(releasesPastDeadline) not within \(Self.releaseDeadlineText))"
            }
            return text
        }
        static let releaseDeadlineText = "10 s"
    }
    let counters = Locked(Counters())

    /// QEMU 11.1 gives every mapping a memory slot of the vhost device and
    /// aborts (an assertion) past VHOST_USER_MAX_RAM_SLOTS = 512; it checks
    /// the limit the backend states only at start. So the backend stops
    /// mapping short of it, keeping a few slots for guest RAM changes.
    static let memorySlotCeiling = 500

    /// The frontend process, whose address space says when a range it
    /// unmapped is really gone (see `FrontendMaps`).
    private let frontend: FrontendMaps?

    init(line: BackendRequestLine, shmid: UInt8, windowSize: UInt64, files: (any MappableFileSource)? = nil,
         slotsInUse: (@Sendable () -> Int)? = nil, frontend: FrontendMaps? = nil) {
        self.frontend = frontend
        self.line = line
        self.shmid = shmid
        self.windowSize = windowSize
        self.files = files
        self.slotsInUse = slotsInUse
    }

    func map(fd: Int32, fileOffset: UInt64, windowOffset: UInt64, length: UInt64, writable: Bool) throws(Errno) {
        try map(node: nil, fd: fd, fileOffset: fileOffset, windowOffset: windowOffset, length: length, writable: writable)
    }

    func map(node: NodeID, fd: Int32, fileOffset: UInt64, windowOffset: UInt64, length: UInt64, writable: Bool) throws(Errno) {
        try map(node: Optional(node), fd: fd, fileOffset: fileOffset, windowOffset: windowOffset, length: length, writable: writable)
    }

    private func map(node: NodeID?, fd: Int32, fileOffset: UInt64, windowOffset: UInt64, length: UInt64, writable: Bool) throws(Errno) {
        counters.withLock { $0.setups += 1 }
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
        if let node {
            let shown = (try? Syscall.fstat(descriptor.rawValue)).map { MappedFile(device: UInt64($0.st_dev), inode: UInt64($0.st_ino)) } ?? file
            track(node, fd: fd, file: file, shownAs: shown, size: UInt64(max(0, info.st_size)))
        }
        let wanted = FrontendMapping(windowOffset: windowOffset, length: length, requestedLength: length, node: node,
                                     fileOffset: fileOffset, file: file, writable: mapWritable, descriptor: descriptor)
        try table.withLock { mappings throws(Errno) in
            mappings.forgetSuspended(windowOffset, windowOffset + length)
            // A frontend that maps pages past the end of the file dies of
            // SIGBUS when its guest touches one (QEMU: the shadow file lets
            // any range be mapped), and a guest that still believes an old
            // size asks for such ranges. A range wholly past the end is not
            // mapped (it comes when the file reaches it, `resynchronize`);
            // the range that holds the end is mapped whole, as the daxfs
            // client checks its ranges are (see docs/ARCHITECTURE.md).
            if files != nil, let node {
                resynchronize(node, assuming: nil, in: &mappings)
                if fileOffset >= validEnd(of: node) && fileOffset > 0 {
                    try run(mappings.plan(replacing: windowOffset, windowOffset + length, with: nil), on: &mappings)
                    mappings.suspend(wanted)
                    return
                }
            }
            // Linux's read-only → writable upgrade of a range already mapped
            // read-write, or the same SETUPMAPPING again: nothing to change.
            if mappings.holds(wanted) { return }
            try run(mappings.plan(replacing: windowOffset, windowOffset + length, with: wanted), on: &mappings)
        }
        releaseUnused()
    }

    func unmap(windowOffset: UInt64, length: UInt64) throws(Errno) {
        counters.withLock { $0.removes += 1 }
        try table.withLock { mappings throws(Errno) in
            mappings.forgetSuspended(windowOffset, windowOffset + length)
            try run(mappings.plan(replacing: windowOffset, windowOffset + length, with: nil), on: &mappings)
        }
        releaseUnused()
    }

    /// The mappings the frontend holds now (tests and statistics).
    var liveMappings: Int { table.withLock { $0.count } }


    /// Applies `steps` in order; the first failure stops, with the table
    /// saying what the frontend holds.
    ///
    /// The table heals where it disagrees with the frontend (QEMU drops every
    /// mapping on a device reset, which the backend is not always told of):
    /// an unmap the frontend refuses means it holds no such mapping; a map it
    /// refuses is tried once more after unmapping that exact range.
    /// `healing: false` (changes the backend makes on its own) stops at the
    /// first refusal instead.
    private func run(_ steps: [WindowStep], on mappings: inout WindowMappings, healing: Bool = true) throws(Errno) {
        for step in steps {
            switch step {
            case .unmap(let old):
                do throws(Errno) { try sendUnmap(old.windowOffset, old.length) } catch where error == .io && healing {}
            case .map(let new):
                if let slotsInUse, slotsInUse() >= Self.memorySlotCeiling { throw .noSpace }
                do throws(Errno) {
                    try sendMap(new)
                } catch where error == .io && healing {
                    try? sendUnmap(new.windowOffset, new.length)
                    try sendMap(new)
                }
            }
            mappings.applied(step)
        }
    }

    private func sendMap(_ new: FrontendMapping) throws(Errno) {
        counters.withLock { $0.shmemMaps += 1 }
        let flags = new.writable ? VhostUser.shmemMapReadWrite : 0
        try line.request(.shmemMap, payload: payload(fileOffset: new.fileOffset, windowOffset: new.windowOffset, length: new.length, flags: flags),
                         fd: new.descriptor.rawValue)
    }

    private func sendUnmap(_ windowOffset: UInt64, _ length: UInt64) throws(Errno) {
        counters.withLock { $0.shmemUnmaps += 1 }
        try line.request(.shmemUnmap, payload: payload(fileOffset: 0, windowOffset: windowOffset, length: length, flags: 0), fd: nil)
        counters.withLock { $0.shmemUnmapsTaken += 1 }
    }

    // MARK: Following file sizes

    /// A mapped node's host file: a descriptor of the file itself (a mappable
    /// one reports a made-up size), the size last seen, and its inotify watch.
    private struct Tracked {
        let real: SharedDescriptor
        let file: MappedFile
        /// The file the frontend maps: `file`, or its shadow (`MappableFileSource`).
        let shownAs: MappedFile
        var size: UInt64
        var watch: Int32
        /// Whether the truncation guard holds this file's truncations.
        var guarded: Bool
        /// A truncation let through after its pages left the window, until
        /// the file shows it: the size it makes, the file's ctime before it
        /// (a change after the hold means it happened), and when to stop waiting.
        var coming: (size: UInt64, changed: timespec, until: UInt64)?
    }
    private let tracked = Locked<[NodeID: Tracked]>([:])
    private let watcher = Locked<SizeWatcher?>(nil)
    /// Made with the first tracked file; nil for good once the kernel refused it.
    private let truncationGuard = Locked<(made: Bool, guard: TruncationGuard?)>((false, nil))

    /// Whether host truncations of mapped files wait until the frontend
    /// stopped mapping what they take away (see `TruncationGuard`); false
    /// when this kernel or filesystem has no pre-content events.
    var holdsTruncations: Bool { tracked.withLock { $0.values.contains { $0.guarded } } }

    private func guardTruncations(of fd: Int32) -> Bool {
        let current = truncationGuard.withLock { state -> TruncationGuard? in
            if !state.made {
                state.made = true
                state.guard = TruncationGuard(shrink: { [weak self] file, size in self?.fileWillShrink(file, to: size) },
                                              recheck: { [weak self] file in self?.recheck(file) })
            }
            return state.guard
        }
        return current?.watch(fd) ?? false
    }

    private func unguard(_ entry: Tracked) {
        guard entry.guarded else { return }
        // A mark is the inode's: another node of the same file keeps it.
        guard !tracked.withLock({ t in t.values.contains { $0.file == entry.file } }) else { return }
        truncationGuard.withLock { $0.guard }?.unwatch(entry.real.rawValue)
    }

    /// The end of the last page of `node`'s file that may be mapped: its size
    /// rounded up to a page, or that of a held truncation still to come.
    private func validEnd(of node: NodeID) -> UInt64 {
        let size = tracked.withLock { t -> UInt64 in
            guard let entry = t[node] else { return UInt64.max }
            return min(entry.size, entry.coming?.size ?? UInt64.max)
        }
        let page = UInt64(HostPage.size)
        return size > UInt64.max - page ? size : (size + page - 1) & ~(page - 1)
    }

    /// A truncation of `file` to `size` waits for this (the truncation guard).
    private func fileWillShrink(_ file: MappedFile, to size: UInt64) {
        let nodes = tracked.withLock { t in t.filter { $0.value.file == file }.map { ($0.key, $0.value.shownAs) } }
        let unmapsBefore = counters.withLock { $0.shmemUnmapsTaken }
        for (node, _) in nodes { resynchronize(node, assuming: size) }
        // The frontend took its unmaps; QEMU lets go of the pages later. (A
        // frontend that refused them — the daxfs client's guarded window,
        // which copies fault-safe — keeps them: nothing to wait for.)
        guard let frontend, let shown = nodes.first?.1, counters.withLock({ $0.shmemUnmapsTaken }) != unmapsBefore else { return }
        let start = monotonicNanoseconds()
        let page = UInt64(HostPage.size)
        let end = size > UInt64.max - page ? size : (size + page - 1) & ~(page - 1)
        let released = frontend.waitUntilUnmapped(shown, from: end, deadline: start + Self.releaseDeadline)
        let took = monotonicNanoseconds() - start
        counters.withLock { c in
            c.releaseWaits += 1
            c.releaseNanoseconds.append(took)
            if !released { c.releasesPastDeadline += 1 }
        }
    }

    /// How long a held truncation waits for the frontend to let go of the
    /// pages it unmapped (the truncation guard's own deadline is longer).
    /// QEMU takes ~40 ms on an idle machine, but its RCU reclaim waits for
    /// every vCPU: on a loaded one it took over 1.5 s (the VM then died of
    /// SIGBUS), and a truncation that waits is better than a dead VM.
    static let releaseDeadline: UInt64 = 10_000_000_000

    private func recheck(_ file: MappedFile) {
        for node in tracked.withLock({ t in t.filter { $0.value.file == file }.map(\.key) }) { resynchronize(node) }
    }

    private func track(_ node: NodeID, fd: Int32, file: MappedFile, shownAs shown: MappedFile, size: UInt64) {
        // A node kept as a spare may since stand for another file (node ids
        // are reused after FORGET): follow the file the client maps now.
        let (same, stale) = tracked.withLock { t -> (Bool, Tracked?) in
            guard let known = t[node] else { return (false, nil) }
            if known.file == file { return (true, nil) }
            t.removeValue(forKey: node)
            return (false, known)
        }
        if same { return }
        if let stale {
            if stale.watch >= 0 { watcher.withLock { $0?.remove(stale.watch) } }
            unguard(stale)
        }
        guard let real = try? Syscall.call({ dup(fd) }) else { return }
        let descriptor = SharedDescriptor(adopting: real)
        let watch = watcher.withLock { current -> Int32 in
            if current == nil { current = SizeWatcher { [weak self] node in self?.resynchronize(node) } }
            return current?.add(descriptor.rawValue, node: node) ?? -1
        }
        let guarded = guardTruncations(of: descriptor.rawValue)
        tracked.withLock { $0[node] = Tracked(real: descriptor, file: file, shownAs: shown, size: size, watch: watch, guarded: guarded, coming: nil) }
    }

    func fileMayHaveResized(node: NodeID) {
        guard tracked.withLock({ $0[node] != nil }) else { return }
        resynchronize(node)
    }

    /// Puts `node`'s mappings right after its file's size changed. QEMU maps
    /// file pages; touching one past the end of the file kills QEMU with
    /// SIGBUS, and a client that learned an old size may still touch pages
    /// the file lost. So a file that shrank loses those pages from every
    /// mapping (the client then reads an empty part of the window, not a
    /// dead VM), and one that grows again gets its mappings back whole. The
    /// server's own changes come here before their reply; other processes'
    /// through the inotify watch, as soon as the kernel reports them.
    ///
    /// `assuming` is a size the file is about to have: a truncation the
    /// truncation guard holds until its pages are out of the window.
    func resynchronize(_ node: NodeID, assuming coming: UInt64? = nil) {
        // The size is read under the table's lock: a size read before a held
        // truncation must not be applied after it (pages past the new end
        // mapped again, with nothing left to take them away).
        table.withLock { mappings in resynchronize(node, assuming: coming, in: &mappings) }
    }

    private func resynchronize(_ node: NodeID, assuming coming: UInt64?, in mappings: inout WindowMappings) {
        guard let (real, old) = tracked.withLock({ t in t[node].map { ($0.real, $0.size) } }),
              let info = try? Syscall.fstat(real.rawValue) else { return }
        var size = UInt64(max(0, info.st_size))
        let now = monotonicNanoseconds()
        let waiting = tracked.withLock { t -> Bool in
            if let coming {
                t[node]?.coming = (coming, info.st_ctim, now + TruncationGuard.deadline + TruncationGuard.recheckDelay)
                return false
            }
            // The file may still show its size from before a held truncation
            // (a write's late inotify event): do not map those pages again yet.
            guard let held = t[node]?.coming else { return false }
            if size != held.size && info.st_ctim.tv_sec == held.changed.tv_sec && info.st_ctim.tv_nsec == held.changed.tv_nsec && now < held.until {
                return true
            }
            t[node]?.coming = nil
            return false
        }
        if waiting { return }
        if let coming { size = coming }
        // A held truncation looks at every mapping: the size last seen may be stale.
        guard size != old || coming != nil else { return }
        tracked.withLock { $0[node]?.size = size }
        counters.withLock { $0.resizes += 1 }
        let page = UInt64(HostPage.size)
        let validEnd = size > UInt64.max - page ? size : (size + page - 1) & ~(page - 1)
        do {
            for mapping in mappings.mappings(of: node) {
                let fileEnd = mapping.fileOffset + mapping.length
                var steps: [WindowStep] = []
                if (size < old || coming != nil) && fileEnd > validEnd {
                    var kept: FrontendMapping?
                    if validEnd > mapping.fileOffset {
                        kept = mapping
                        kept?.length = validEnd - mapping.fileOffset
                    }
                    steps = mappings.plan(replacing: mapping.windowOffset, mapping.windowEnd, with: kept)
                    if kept == nil {
                        var whole = mapping
                        whole.length = mapping.requestedLength
                        do throws(Errno) { try run(steps, on: &mappings, healing: false) } catch { return }
                        mappings.suspend(whole)
                        continue
                    }
                } else if size > old && mapping.length < mapping.requestedLength {
                    let end = mapping.windowOffset + mapping.requestedLength
                    // Only over a part of the window nothing else took meanwhile.
                    guard mappings.overlapping(mapping.windowEnd, end).isEmpty else { continue }
                    var whole = mapping
                    whole.length = mapping.requestedLength
                    steps = mappings.plan(replacing: mapping.windowOffset, end, with: whole)
                }
                do throws(Errno) { try run(steps, on: &mappings, healing: false) } catch {
                    // Device stopped, frontend gone, or a frontend that takes
                    // changes only for its own requests (daxfs client's guarded
                    // window, which copies fault-safe instead): leave it as it is.
                    return
                }
            }
            guard size > old else { return }
            // Mappings that lay wholly past the old end come back whole once
            // the file reaches into them again (not before: a client that
            // still believes an old size could touch them).
            for var whole in mappings.resume(node) {
                guard whole.fileOffset < size else { mappings.suspend(whole); continue }
                guard mappings.overlapping(whole.windowOffset, whole.windowOffset + whole.requestedLength).isEmpty else { continue }
                whole.length = whole.requestedLength
                do throws(Errno) {
                    try run(mappings.plan(replacing: whole.windowOffset, whole.windowEnd, with: whole), on: &mappings, healing: false)
                } catch { return }
            }
        }
    }

    /// Stops following nodes none of whose mappings are left.
    private func untrackUnused() {
        // Nodes mapped again soon (reclaim, then a new read) keep their watch.
        guard tracked.withLock({ $0.count }) > Self.spareMappable else { return }
        let gone: [NodeID] = table.withLock { mappings in
            tracked.withLock { t in t.keys.filter { !mappings.shows($0) } }
        }
        guard !gone.isEmpty else { return }
        let entries = tracked.withLock { t in gone.compactMap { t.removeValue(forKey: $0) } }
        watcher.withLock { w in for entry in entries where entry.watch >= 0 { w?.remove(entry.watch) } }
        for entry in entries { unguard(entry) }
    }

    /// Ends the watch thread (the device is going away).
    func shutDown() {
        let current = watcher.withLock { w -> SizeWatcher? in defer { w = nil }; return w }
        current?.stop()
        let held = truncationGuard.withLock { state -> TruncationGuard? in defer { state.guard = nil }; return state.guard }
        if let held {
            let seen = held.counters.withLock { $0 }
            counters.withLock { $0.truncationsHeld += seen.truncations; $0.truncationsPastDeadline += seen.heldPastDeadline }
            held.stop()
        }
    }

    /// Mappable descriptors kept beyond those live mappings use: a file
    /// mapped again soon (reclaim, then a new read) skips making one anew.
    static let spareMappable = 64

    /// Closes mappable descriptors no mapping uses, once there are more than the spares.
    private func releaseUnused() {
        untrackUnused()
        guard files != nil, mappable.withLock({ $0.count }) > Self.spareMappable else { return }
        let shown = table.withLock { mappings in Set(mappings.mappings.map(\.file)) }
        mappable.withLock { cache in cache = cache.filter { shown.contains($0.key) } }
    }

    /// `VhostUserMMap`: {u8 shmid, u8 padding[7], u64 fd_offset, u64 shm_offset, u64 len, u64 flags}.
    func payload(fileOffset: UInt64, windowOffset: UInt64, length: UInt64, flags: UInt64) -> [UInt8] {
        [shmid, 0, 0, 0, 0, 0, 0, 0] + .le(fileOffset, windowOffset, length, flags)
    }
}

/// The backend request channel, shared by the windows that use it.
///
/// It is closed while the device is stopped: QEMU 11.1 handles SHMEM_MAP and
/// SHMEM_UNMAP through the started device and dies (a NULL dereference) on
/// one that arrives before the driver is up or after a stop. So no request is
/// sent while closed (it fails with EBUSY), and closing releases a request
/// waiting for its reply — the frontend may be waiting for the control
/// thread meanwhile — whose late reply is then skipped.
final class BackendRequestLine: @unchecked Sendable {
    private let socket: MessageSocket
    private let owner: SharedDescriptor
    /// One request at a time: replies carry no id.
    private let lock = Locked(())
    private let gate = Locked(Gate())
    /// Written by `close` to wake a request waiting for its reply.
    private let wake: SharedDescriptor
    /// Whether the last wait ended at `replyTimeout` (only under `lock`).
    private var timedOut = false

    private struct Gate {
        var open = true
        /// Replies still to come for requests given up on.
        var staleReplies = 0
    }

    init(fd: Int32) {
        owner = SharedDescriptor(adopting: fd)
        socket = MessageSocket(fd: fd)
        wake = SharedDescriptor(adopting: daxfs_eventfd(0, DAXFS_EFD_CLOEXEC))
    }

    /// The device stopped: refuse new requests, release a waiting one.
    func close() {
        gate.withLock { $0.open = false }
        var one: UInt64 = 1
        _ = Glibc.write(wake.rawValue, &one, 8)
    }

    /// The device runs again.
    func reopen() {
        gate.withLock { $0.open = true }
    }

    var isOpen: Bool { gate.withLock { $0.open } }

    /// Sends `request` and waits for the frontend's answer. Throws EIO when
    /// the frontend refused it, EBUSY when the device is stopped (nothing
    /// sent, or given up on), ETIMEDOUT when no answer came within
    /// `replyTimeout`, ENOTCONN when the channel is gone.
    func request(_ request: VhostUser.BackendRequest, payload: [UInt8], fd: Int32?) throws(Errno) {
        try lock.withLock { _ throws(Errno) in
            guard isOpen else { throw .busy }
            do throws(VhostError) {
                try socket.send(request: request.rawValue, flags: VhostUser.version | VhostUser.needReplyFlag,
                                payload: payload, fds: fd.map { [$0] } ?? [])
                while true {
                    // The frontend answers within microseconds when its client
                    // thread is spinning: look for the reply before sleeping.
                    socket.spinUntilReadable(nanoseconds: 200_000)
                    timedOut = false
                    guard waitForReply() else {
                        gate.withLock { $0.staleReplies += 1 }
                        throw VhostError.system(timedOut ? Errno(ETIMEDOUT) : .busy)
                    }
                    let reply = try socket.receive()
                    let skip = gate.withLock { gate in
                        guard gate.staleReplies > 0 else { return false }
                        gate.staleReplies -= 1
                        return true
                    }
                    if skip { continue }
                    guard reply.request == request.rawValue, reply.flags & VhostUser.replyFlag != 0, reply.payload.count >= 8 else {
                        throw VhostError.protocolViolation("bad reply to backend request \(request)")
                    }
                    let status = reply.payload.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian }
                    if status != 0 { throw VhostError.system(.io) }
                    return
                }
            } catch {
                switch error {
                case .disconnected: throw .notConnected
                case .system(let errno): throw errno
                case .protocolViolation: throw .protocolError
                }
            }
        }
    }

    /// How long a backend request waits for its reply: QEMU answers within
    /// milliseconds; one that does not answer fails the request (ETIMEDOUT)
    /// rather than holding a queue thread for good.
    static let replyTimeout: UInt64 = 10_000_000_000

    /// Sleeps until a reply can be read (true) or the line is closed or the
    /// reply is overdue (false).
    private func waitForReply() -> Bool {
        var fds = [pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.rawValue, events: Int16(POLLIN), revents: 0)]
        let deadline = monotonicNanoseconds() + Self.replyTimeout
        while true {
            fds[0].revents = 0
            fds[1].revents = 0
            let now = monotonicNanoseconds()
            guard now < deadline else { timedOut = true; return false }
            let ready = poll(&fds, 2, Int32(min((deadline - now) / 1_000_000 + 1, 60_000)))
            if ready < 0 { if daxfs_errno() == EINTR { continue }; return true }  // let receive report it
            if fds[1].revents != 0 {
                var counter: UInt64 = 0
                _ = Glibc.read(wake.rawValue, &counter, 8)
                if !isOpen { return false }
            }
            if fds[0].revents != 0 { return true }
        }
    }
}

/// The inotify watch of mapped files: a thread that reports each node whose
/// file another process modified (IN_MODIFY covers truncation and writes).
final class SizeWatcher: @unchecked Sendable {
    private let inotify: SharedDescriptor
    private let wake: SharedDescriptor
    private let nodes = Locked<[Int32: NodeID]>([:])
    private var thread: OSThread?
    private let stopping = Locked(false)

    init?(onChange: @escaping @Sendable (NodeID) -> Void) {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { return nil }
        inotify = SharedDescriptor(adopting: fd)
        wake = SharedDescriptor(adopting: daxfs_eventfd(0, DAXFS_EFD_CLOEXEC))
        let nodes = self.nodes, stopping = self.stopping, inotify = self.inotify, wake = self.wake
        thread = try? OSThread(name: "daxfs-size-watch") {
            var buffer = [UInt8](repeating: 0, count: 16 << 10)
            var fds = [pollfd(fd: inotify.rawValue, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.rawValue, events: Int16(POLLIN), revents: 0)]
            while !stopping.withLock({ $0 }) {
                fds[0].revents = 0
                fds[1].revents = 0
                if poll(&fds, 2, -1) < 0 && daxfs_errno() != EINTR { return }
                guard fds[0].revents & Int16(POLLIN) != 0 else { continue }
                let count = buffer.withUnsafeMutableBytes { Glibc.read(inotify.rawValue, $0.baseAddress, $0.count) }
                guard count > 0 else { continue }
                // struct inotify_event {i32 wd; u32 mask, cookie, len; char name[len]}; each node once per batch.
                var changed = Set<NodeID>()
                var offset = 0
                buffer.withUnsafeBytes { raw in
                    while offset + 16 <= count {
                        let wd = raw.loadUnaligned(fromByteOffset: offset, as: Int32.self)
                        let mask = raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
                        let length = Int(raw.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
                        if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                            // Events were lost: look at every watched file.
                            changed.formUnion(nodes.withLock { Array($0.values) })
                        } else if let node = nodes.withLock({ $0[wd] }) {
                            changed.insert(node)
                        }
                        offset += 16 + length
                    }
                }
                for node in changed { onChange(node) }
            }
        }
        if thread == nil { return nil }
    }

    /// Watches the file behind `fd` for `node`; the watch id, or -1.
    func add(_ fd: Int32, node: NodeID) -> Int32 {
        let watch = inotify_add_watch(inotify.rawValue, ProcFS.path("self/fd/\(fd)"), UInt32(IN_MODIFY))
        if watch >= 0 { nodes.withLock { $0[watch] = node } }
        return watch
    }

    func remove(_ watch: Int32) {
        nodes.withLock { _ = $0.removeValue(forKey: watch) }
        _ = inotify_rm_watch(inotify.rawValue, watch)
    }

    func stop() {
        stopping.withLock { $0 = true }
        var one: UInt64 = 1
        _ = Glibc.write(wake.rawValue, &one, 8)
        thread?.join()
        thread = nil
    }
}
