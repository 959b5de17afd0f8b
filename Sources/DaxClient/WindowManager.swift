import FUSEABI
import FUSEServer
import HostSystem
import Synchronization

/// How a client uses its DAX window.
public enum DAXMode: String, Sendable, CaseIterable {
    /// Map through the window, but under window pressure serve small reads
    /// and writes that miss with FUSE_READ/FUSE_WRITE unless their chunk keeps
    /// missing (see `WindowManager.admit`).
    case auto
    /// Map every access, evicting the least recently used idle range (the
    /// Linux client's behaviour, with LRU instead of its rotation).
    case always
    /// No window: every read and write is a FUSE_READ/FUSE_WRITE (the baseline).
    case never
}

/// The client's DAX window manager (the algorithm of Linux fs/fuse/dax.c,
/// seed 002): the window is cut into ranges of `rangeSize`; each file has a
/// map from chunk index (file offset / rangeSize) to the range that maps it;
/// unused ranges sit on a free list, mapped ones that nobody uses on a busy
/// list kept in least-recently-used order. A range in use (refcount > 0) is
/// never reclaimed.
///
/// No FUSE request is sent with the lock held. A range that is being set up,
/// upgraded or removed is marked so, and it is in no list another thread could
/// take it from: it cannot be handed to a second chunk meanwhile. An I/O
/// caller that finds its chunk in such a transient state does not wait; it
/// uses FUSE_READ/FUSE_WRITE for that access (same host page cache, so just as
/// coherent). Only `withMappedBytes` callers sleep.
final class WindowManager: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let rangeSize: UInt64
    let rangeShift: UInt64
    let rangeCount: Int
    let mode: DAXMode
    /// Background reclaim starts when fewer ranges than this are free (20 %).
    let reclaimThreshold: Int
    /// At most this many ranges per background pass (Linux: 10).
    let reclaimBatch: Int
    let backgroundReclaim: Bool
    /// A chunk that missed this many times within a period is mapped even under pressure.
    let admitAfterMisses: UInt32
    /// Misses per period of the admission counters (then they start again).
    let missPeriod: Int
    let fuse: FUSEClient
    /// False once the server answered SETUPMAPPING with ENOSYS.
    let enabled = Atomic<Bool>(true)

    private let state: Locked<State>
    private let rangeEvent = WakeUp()
    private let reclaimEvent = WakeUp()
    private let reclaimer = Locked<OSThread?>(nil)

    struct Options {
        var mode: DAXMode
        var reclaimThresholdPercent: Int
        var reclaimBatch: Int
        var backgroundReclaim: Bool
        var admitAfterMisses: Int
    }

    init(base: UnsafeMutableRawPointer, windowSize: UInt64, rangeSize: UInt64, fuse: FUSEClient, options: Options) {
        self.base = base
        self.rangeSize = rangeSize
        rangeShift = UInt64(rangeSize.trailingZeroBitCount)
        // A trailing partial range is unused.
        rangeCount = Int(windowSize / rangeSize)
        mode = options.mode
        reclaimThreshold = rangeCount * max(0, min(options.reclaimThresholdPercent, 100)) / 100
        reclaimBatch = max(1, options.reclaimBatch)
        backgroundReclaim = options.backgroundReclaim
        admitAfterMisses = UInt32(max(1, options.admitAfterMisses))
        missPeriod = max(64, 2 * rangeCount)
        self.fuse = fuse
        state = Locked(State(rangeCount: rangeCount))
    }

    // MARK: State

    struct Range {
        enum Phase: UInt8 { case free, settingUp, ready, removing }
        var phase = Phase.free
        var node: UInt64 = 0
        var chunk: UInt64 = 0
        var writable = false
        /// A second SETUPMAPPING with WRITE is in flight.
        var upgrading = false
        /// Dropped from its file's map (truncate, close) while in use: reclaim it first.
        var detached = false
        var refs: Int32 = 0
        /// `State.clock` at the last use, for diagnostics; the LRU order is the list.
        var lastUse: UInt64 = 0
        // Links of the busy list (idle ranges only), -1 = none.
        var prev: Int32 = -1
        var next: Int32 = -1
        var inLRU = false
    }

    struct ChunkKey: Hashable { var node: UInt64; var chunk: UInt64 }

    struct Counters {
        var setups: UInt64 = 0
        var upgrades: UInt64 = 0
        var hits: UInt64 = 0
        var backgroundReclaimed: UInt64 = 0
        var inlineReclaimed: UInt64 = 0
        var removedByOwner: UInt64 = 0
        var removeMessages: UInt64 = 0
        var pressureFallbacks: UInt64 = 0
        var busyFallbacks: UInt64 = 0
        var setupFailures: UInt64 = 0
    }

    struct State {
        var ranges: [Range]
        var free: [Int32]
        /// Per file (node id): chunk index → range.
        var files: [UInt64: [UInt64: Int32]] = [:]
        /// The busy list of idle mapped ranges: head = least recently used.
        var lruHead: Int32 = -1
        var lruTail: Int32 = -1
        var clock: UInt64 = 0
        /// Threads sleeping on `rangeEvent`.
        var waiters = 0
        var reclaimRequested = false
        /// The free list ran out since the window last had room to spare:
        /// demand exceeds the window. Background reclaim and the small-miss
        /// policy only act then (see `acquire`).
        var exhausted = false
        var stopping = false
        /// Misses of unmapped chunks under pressure, for admission.
        var misses: [ChunkKey: UInt32] = [:]
        var missesInPeriod = 0
        var counters = Counters()

        init(rangeCount: Int) {
            ranges = Array(repeating: Range(), count: rangeCount)
            // Pop from the end: hand out low window offsets first.
            free = (0 ..< Int32(rangeCount)).reversed()
        }

        mutating func lruRemove(_ r: Int32) {
            let i = Int(r)
            guard ranges[i].inLRU else { return }
            let prev = ranges[i].prev, next = ranges[i].next
            if prev >= 0 { ranges[Int(prev)].next = next } else { lruHead = next }
            if next >= 0 { ranges[Int(next)].prev = prev } else { lruTail = prev }
            ranges[i].prev = -1
            ranges[i].next = -1
            ranges[i].inLRU = false
        }

        /// Most recently used end.
        mutating func lruAppend(_ r: Int32) {
            let i = Int(r)
            ranges[i].prev = lruTail
            ranges[i].next = -1
            if lruTail >= 0 { ranges[Int(lruTail)].next = r } else { lruHead = r }
            lruTail = r
            ranges[i].inLRU = true
        }

        /// The end reclaim takes from.
        mutating func lruPrepend(_ r: Int32) {
            let i = Int(r)
            ranges[i].next = lruHead
            ranges[i].prev = -1
            if lruHead >= 0 { ranges[Int(lruHead)].prev = r } else { lruTail = r }
            lruHead = r
            ranges[i].inLRU = true
        }

        mutating func pin(_ r: Int32) {
            lruRemove(r)
            ranges[Int(r)].refs += 1
            ranges[Int(r)].lastUse = clock
        }

        /// Removes the file-map entry that points at `r`, if any.
        mutating func forgetChunk(of r: Int32) {
            let range = ranges[Int(r)]
            guard files[range.node]?[range.chunk] == r else { return }
            files[range.node]?[range.chunk] = nil
            if files[range.node]?.isEmpty == true { files[range.node] = nil }
        }

        /// Counts a miss of `key` under pressure; true when the chunk has now
        /// missed `threshold` times in this period and should be mapped.
        mutating func admit(_ key: ChunkKey, threshold: UInt32, period: Int) -> Bool {
            missesInPeriod += 1
            if missesInPeriod >= period {
                misses.removeAll(keepingCapacity: true)
                missesInPeriod = 0
            }
            let count = (misses[key] ?? 0) + 1
            if count >= threshold {
                misses[key] = nil
                return true
            }
            misses[key] = count
            return false
        }
    }

    // MARK: Acquire and release

    /// A range lent to one access; give it back with `release`.
    struct Lease {
        let index: Int32
        /// The mapped chunk's first byte in this process.
        let pointer: UnsafeMutableRawPointer
    }

    enum Use: Equatable {
        /// A read or write; `small` when the whole request is shorter than a range.
        case io(small: Bool)
        /// `withMappedBytes`: must map, may sleep.
        case lend
    }

    private enum Plan {
        case hit(Int32)
        case upgrade(Int32)
        case setup(Int32, stolen: Bool)
        case fallback
        case wait
    }

    func windowOffset(_ r: Int32) -> UInt64 { UInt64(r) << rangeShift }

    private func lease(_ r: Int32) -> Lease { Lease(index: r, pointer: base + Int(windowOffset(r))) }

    /// The range mapping `chunk` of `node`, mapped (or upgraded) on demand.
    /// nil: serve this access with FUSE_READ/FUSE_WRITE instead (window
    /// pressure, every range busy, the chunk in transition, or the server
    /// refused the mapping). `.lend` never returns nil; it throws instead.
    func acquire(node: UInt64, chunk: UInt64, writable: Bool, use: Use) throws(Errno) -> Lease? {
        let lend = use == .lend
        while true {
            let seen = lend ? rangeEvent.generation : 0
            let (plan, kick) = state.withLock { s -> (Plan, Bool) in
                s.clock &+= 1
                if let r = s.files[node]?[chunk] {
                    let range = s.ranges[Int(r)]
                    guard range.phase == .ready else {
                        // Being set up by another thread.
                        if lend { s.waiters += 1; return (.wait, false) }
                        s.counters.busyFallbacks += 1
                        return (.fallback, false)
                    }
                    if writable && !range.writable {
                        if range.upgrading {
                            if lend { s.waiters += 1; return (.wait, false) }
                            s.counters.busyFallbacks += 1
                            return (.fallback, false)
                        }
                        s.ranges[Int(r)].upgrading = true
                        s.pin(r)
                        return (.upgrade(r), false)
                    }
                    s.pin(r)
                    s.counters.hits += 1
                    return (.hit(r), false)
                }
                // A miss. Under pressure — demand exceeds the window and only
                // the reserve is left — a small access is cheaper as FUSE I/O
                // than as a new mapping that evicts another (see DaxClient.Options).
                // In `.auto` only an empty free list is pressure: the reserve
                // would otherwise sit unused while misses go to FUSE_READ
                // (measured: 40 % hits with a window of 50 % of the file).
                let pressure = mode == .auto ? s.free.isEmpty : (s.free.isEmpty || (s.exhausted && s.free.count <= reclaimThreshold))
                if case .io(small: true) = use, mode == .auto, pressure,
                   !s.admit(ChunkKey(node: node, chunk: chunk), threshold: admitAfterMisses, period: missPeriod) {
                    s.counters.pressureFallbacks += 1
                    return (.fallback, false)
                }
                var kick = false
                let r: Int32
                var stolen = false
                if let freeRange = s.free.popLast() {
                    r = freeRange
                } else if s.lruHead >= 0 {
                    s.exhausted = true
                    // Inline reclaim of the least recently used idle range,
                    // whichever file it maps. The new SETUPMAPPING replaces
                    // the old mapping in place (MAP_FIXED), which saves the
                    // REMOVEMAPPING round trip Linux pays here.
                    r = s.lruHead
                    s.lruRemove(r)
                    s.forgetChunk(of: r)
                    stolen = true
                } else {
                    s.exhausted = true
                    if lend { s.waiters += 1; return (.wait, false) }
                    s.counters.busyFallbacks += 1
                    return (.fallback, false)
                }
                // Linux keeps 20 % free whenever the window fills, which makes
                // a working set of 80–100 % of the window thrash. Here the
                // reserve is kept only once the window has run out (demand
                // really exceeds it).
                // In `.auto`, misses under pressure go to FUSE_READ, so a free
                // reserve buys nothing and reclaiming for it only evicts hits;
                // background reclaim keeps Linux's 20 % in `.always`.
                if backgroundReclaim && mode != .auto && s.exhausted && s.free.count < reclaimThreshold && !s.reclaimRequested {
                    s.reclaimRequested = true
                    kick = true
                }
                var range = Range()
                range.phase = .settingUp
                range.node = node
                range.chunk = chunk
                range.writable = writable
                range.refs = 1
                range.lastUse = s.clock
                s.ranges[Int(r)] = range
                s.files[node, default: [:]][chunk] = r
                return (.setup(r, stolen: stolen), kick)
            }
            if kick { reclaimEvent.signal() }

            switch plan {
            case .hit(let r):
                return lease(r)
            case .fallback:
                return nil
            case .wait:
                rangeEvent.wait(after: seen)
                state.withLock { $0.waiters -= 1 }
            case .upgrade(let r):
                do throws(Errno) {
                    try fuse.setupMapping(NodeID(node), fileOffset: chunk << rangeShift, windowOffset: windowOffset(r),
                                          length: rangeSize, writable: true)
                } catch {
                    finishUpgrade(r, succeeded: false)
                    release(Lease(index: r, pointer: base))
                    noteFailure(error)
                    if lend { throw error }
                    return nil
                }
                finishUpgrade(r, succeeded: true)
                return lease(r)
            case .setup(let r, let stolen):
                do throws(Errno) {
                    try fuse.setupMapping(NodeID(node), fileOffset: chunk << rangeShift, windowOffset: windowOffset(r),
                                          length: rangeSize, writable: writable)
                } catch {
                    abandon(r, stolen: stolen)
                    noteFailure(error)
                    if lend { throw error }
                    return nil
                }
                finishSetup(r, stolen: stolen)
                return lease(r)
            }
        }
    }

    func release(_ lease: Lease) {
        let r = lease.index
        let notify = state.withLock { s -> Bool in
            let i = Int(r)
            s.ranges[i].refs -= 1
            precondition(s.ranges[i].refs >= 0, "DAX range \(r) released more often than acquired")
            s.ranges[i].lastUse = s.clock
            if s.ranges[i].refs == 0 && s.ranges[i].phase == .ready {
                if s.ranges[i].detached { s.lruPrepend(r) } else { s.lruAppend(r) }
            }
            return s.waiters > 0
        }
        if notify { rangeEvent.signal() }
    }

    private func finishSetup(_ r: Int32, stolen: Bool) {
        let notify = state.withLock { s -> Bool in
            s.ranges[Int(r)].phase = .ready
            s.counters.setups += 1
            if stolen { s.counters.inlineReclaimed += 1 }
            return s.waiters > 0
        }
        if notify { rangeEvent.signal() }
    }

    private func finishUpgrade(_ r: Int32, succeeded: Bool) {
        let notify = state.withLock { s -> Bool in
            s.ranges[Int(r)].upgrading = false
            if succeeded {
                s.ranges[Int(r)].writable = true
                s.counters.upgrades += 1
            }
            return s.waiters > 0
        }
        if notify { rangeEvent.signal() }
    }

    /// A SETUPMAPPING failed: the range goes back to the free list. A stolen
    /// range may still map its old chunk, so it is removed first.
    private func abandon(_ r: Int32, stolen: Bool) {
        state.withLock { s in
            s.forgetChunk(of: r)
            s.ranges[Int(r)].phase = .removing
            s.counters.setupFailures += 1
        }
        if stolen { try? fuse.removeMapping([RemoveMappingOne(moffset: windowOffset(r), len: rangeSize)]) }
        freeRanges([r], messages: stolen ? 1 : 0)
    }

    private func noteFailure(_ error: Errno) {
        // A server without a window: stop trying (FUSE_READ/FUSE_WRITE from now on).
        if error == .notImplemented { enabled.store(false, ordering: .relaxed) }
    }

    private func freeRanges(_ victims: [Int32], messages: Int) {
        let notify = state.withLock { s -> Bool in
            for r in victims {
                s.ranges[Int(r)] = Range()
                s.free.append(r)
            }
            // Files closed or truncated: room to spare again.
            if s.free.count > 2 * reclaimThreshold { s.exhausted = false }
            s.counters.removeMessages += UInt64(messages)
            return s.waiters > 0
        }
        if notify { rangeEvent.signal() }
    }

    private func removeMappings(_ victims: [Int32], node: UInt64) -> Int {
        guard !victims.isEmpty else { return 0 }
        // Unmapping only ever makes a range inaccessible; whatever the server
        // answers, the range can be mapped again by the next SETUPMAPPING.
        try? fuse.removeMapping(victims.map { RemoveMappingOne(moffset: windowOffset($0), len: rangeSize) },
                                node: node == 0 ? .root : NodeID(node))
        return (victims.count + FUSEClient.removeMappingBatch - 1) / FUSEClient.removeMappingBatch
    }

    // MARK: Removal by the file's owner

    /// Removes the mappings of `node` from chunk `first` on, with batched
    /// REMOVEMAPPING (close, forget, truncate). Ranges still in use are
    /// detached from the file and reclaimed first once idle.
    func drop(node: UInt64, fromChunk first: UInt64 = 0) {
        let victims = state.withLock { s -> [Int32] in
            guard let map = s.files[node] else { return [] }
            var out: [Int32] = []
            for (chunk, r) in map where chunk >= first {
                s.files[node]?[chunk] = nil
                let i = Int(r)
                if s.ranges[i].refs == 0 && s.ranges[i].phase == .ready {
                    s.lruRemove(r)
                    s.ranges[i].phase = .removing
                    out.append(r)
                } else {
                    s.ranges[i].detached = true
                }
            }
            if s.files[node]?.isEmpty == true { s.files[node] = nil }
            s.counters.removedByOwner += UInt64(out.count)
            return out
        }
        let messages = removeMappings(victims, node: node)
        if !victims.isEmpty { freeRanges(victims, messages: messages) }
    }

    // MARK: Background reclaim

    func startReclaimer() throws(Errno) {
        guard backgroundReclaim, reclaimThreshold > 0 else { return }
        let thread = try OSThread(name: "daxfs-reclaim") { [self] in reclaimLoop() }
        reclaimer.withLock { $0 = thread }
    }

    /// Stops the reclaim thread and waits for it.
    func stop() {
        state.withLock { $0.stopping = true }
        reclaimEvent.signal()
        let thread = reclaimer.withLock { current -> OSThread? in
            defer { current = nil }
            return current
        }
        thread?.join()
    }

    private func reclaimLoop() {
        while true {
            let seen = reclaimEvent.generation
            let (stopping, requested) = state.withLock { s -> (Bool, Bool) in
                defer { s.reclaimRequested = false }
                return (s.stopping, s.reclaimRequested)
            }
            if stopping { return }
            if requested {
                while reclaimPass() > 0 {}
                continue
            }
            reclaimEvent.wait(after: seen)
        }
    }

    /// Frees idle ranges, least recently used first, until the free list is
    /// back at the threshold, at most `reclaimBatch` per pass; returns how
    /// many it freed.
    @discardableResult
    func reclaimPass() -> Int {
        let victims = state.withLock { s -> [Int32] in
            guard !s.stopping else { return [] }
            let want = min(reclaimBatch, reclaimThreshold - s.free.count)
            var out: [Int32] = []
            while out.count < want, s.lruHead >= 0 {
                let r = s.lruHead
                s.lruRemove(r)
                s.forgetChunk(of: r)
                s.ranges[Int(r)].phase = .removing
                out.append(r)
            }
            s.counters.backgroundReclaimed += UInt64(out.count)
            return out
        }
        guard !victims.isEmpty else { return 0 }
        freeRanges(victims, messages: removeMappings(victims, node: 0))
        return victims.count
    }

    // MARK: Inspection

    func counters() -> (Counters, free: Int) {
        state.withLock { ($0.counters, $0.free.count) }
    }

    /// The window offset of the range mapping `chunk` of `node`, and whether it is writable.
    func mapping(node: UInt64, chunk: UInt64) -> (offset: UInt64, writable: Bool)? {
        state.withLock { s in
            guard let r = s.files[node]?[chunk], s.ranges[Int(r)].phase == .ready else { return nil }
            return (windowOffset(r), s.ranges[Int(r)].writable)
        }
    }

    /// Mapped chunks of `node`.
    func mappedChunks(node: UInt64) -> [UInt64] {
        state.withLock { s in (s.files[node]?.keys).map { Array($0).sorted() } ?? [] }
    }

    /// Every broken invariant, in words (empty when all hold).
    func invariantViolations() -> [String] {
        state.withLock { s in
            var problems: [String] = []
            var seenFree = Set<Int32>()
            for r in s.free {
                if !seenFree.insert(r).inserted { problems.append("range \(r) twice on the free list") }
                let range = s.ranges[Int(r)]
                if range.phase != .free || range.refs != 0 || range.inLRU { problems.append("free range \(r) is \(range)") }
            }
            var lruCount = 0
            var previous: Int32 = -1
            var cursor = s.lruHead
            while cursor >= 0 {
                let range = s.ranges[Int(cursor)]
                if range.phase != .ready || range.refs != 0 || !range.inLRU || range.prev != previous {
                    problems.append("busy-list range \(cursor) is \(range)")
                }
                lruCount += 1
                if lruCount > s.ranges.count { problems.append("busy list has a cycle"); break }
                previous = cursor
                cursor = range.next
            }
            if previous != s.lruTail { problems.append("busy list tail \(s.lruTail), walked to \(previous)") }
            for (i, range) in s.ranges.enumerated() {
                if range.refs < 0 { problems.append("range \(i) refcount \(range.refs)") }
                if range.phase == .free && !seenFree.contains(Int32(i)) { problems.append("free range \(i) not on the free list") }
                if range.phase == .ready && range.refs == 0 && !range.inLRU { problems.append("idle range \(i) not on the busy list") }
                if range.inLRU { lruCount -= 1 }
            }
            if lruCount != 0 { problems.append("busy list length disagrees with its members") }
            for (node, map) in s.files {
                for (chunk, r) in map {
                    let range = s.ranges[Int(r)]
                    if range.node != node || range.chunk != chunk || range.detached || !(range.phase == .ready || range.phase == .settingUp) {
                        problems.append("node \(node) chunk \(chunk) → range \(r), which is \(range)")
                    }
                }
            }
            return problems
        }
    }
}
