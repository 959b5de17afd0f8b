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
    /// Map every access, evicting an idle range not used recently (the
    /// Linux client's behaviour, with CLOCK instead of its rotation).
    case always
    /// No window: every read and write is a FUSE_READ/FUSE_WRITE (the baseline).
    case never
}

/// The client's DAX window manager (the algorithm of Linux fs/fuse/dax.c,
/// seed 002): the window is cut into ranges of `rangeSize`; each file has a
/// map from chunk index (file offset / rangeSize) to the range that maps it;
/// unused ranges sit on a free list. A range in use (refcount > 0) is never
/// reclaimed.
///
/// The hit path takes no lock: each range has one atomic word (`RangeWord`:
/// refcount, ready, writable, detached, referenced) and each open node a
/// table of hints (chunk → range, `ChunkHints`). A hit reads the hint, pins
/// the range with one compare-and-swap that requires it ready, not detached
/// and (for writes) writable, checks the range still maps this node's chunk,
/// and later unpins with one atomic subtract. Everything else — misses,
/// upgrades, reclaim, drop — runs under the lock; it claims an idle range by
/// swapping its word from "ready, refcount 0" to 0, which fails if a hit
/// pinned it first. Victims are chosen by CLOCK (second chance): a hit sets
/// the referenced bit in the same swap that pins, and the sweep spares a
/// referenced range once, so recently used ranges survive, as with LRU,
/// without relinking a list on every hit (which cost two lock round trips).
///
/// No FUSE request is sent with the lock held. A range that is being set up,
/// upgraded or removed is not ready: no hit can pin it and no second chunk
/// can take it. An I/O caller that finds its chunk in such a transient state
/// does not wait; it uses FUSE_READ/FUSE_WRITE for that access (same host
/// page cache, so just as coherent). Only `withMappedBytes` callers sleep.
final class WindowManager: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    /// Checked after each SETUPMAPPING: the range must really be mapped.
    let window: (any ClientWindow)?
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
    /// Misses of unmapped chunks per period of the admission counters (then they start again).
    let missPeriod: Int
    let fuse: FUSEClient
    /// False once the server answered SETUPMAPPING with ENOSYS.
    let enabled = Atomic<Bool>(true)
    /// Entries of a new node's `ChunkHints`.
    let hintCapacity: Int

    private let state: Locked<State>
    /// One `RangeWord` per range.
    private let words: UnsafeMutablePointer<Atomic<UInt64>>
    /// Which node and chunk each range maps: written under the lock while the
    /// range is not ready, read by hits after they pinned it.
    private let owners: UnsafeMutablePointer<Atomic<UInt64>>
    private let hits = Atomic<UInt64>(0)
    /// `withMappedBytes` callers waiting for a range (see `release`).
    private let waiters = Atomic<Int>(0)
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

    init(base: UnsafeMutableRawPointer, windowSize: UInt64, rangeSize: UInt64, fuse: FUSEClient, options: Options,
         window: (any ClientWindow)? = nil) {
        self.base = base
        self.window = window
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
        // As many hints as ranges (a file as large as the window has one per
        // chunk), within [64, 4096].
        hintCapacity = 1 << (Int.bitWidth - (min(max(rangeCount, 64), 4096) - 1).leadingZeroBitCount)
        self.fuse = fuse
        state = Locked(State(rangeCount: rangeCount))
        words = .allocate(capacity: rangeCount)
        owners = .allocate(capacity: 2 * rangeCount)
        for i in 0 ..< rangeCount { (words + i).initialize(to: Atomic(0)) }
        for i in 0 ..< 2 * rangeCount { (owners + i).initialize(to: Atomic(0)) }
    }

    deinit {
        words.deinitialize(count: rangeCount)
        words.deallocate()
        owners.deinitialize(count: 2 * rangeCount)
        owners.deallocate()
    }

    // MARK: State

    /// The atomic word of a range.
    enum RangeWord {
        static let refs: UInt64 = 0xFFFF_FFFF
        /// Mapped and usable: hits may pin it.
        static let ready: UInt64 = 1 << 32
        static let writable: UInt64 = 1 << 33
        /// Dropped from its file's map (truncate, close) while in use: no
        /// new hits; reclaimed first once idle.
        static let detached: UInt64 = 1 << 34
        /// Used since the CLOCK hand last passed.
        static let referenced: UInt64 = 1 << 35
    }

    /// What only the lock holder changes.
    struct Range {
        enum Phase: UInt8 { case free, settingUp, ready, removing }
        var phase = Phase.free
        var node: UInt64 = 0
        var chunk: UInt64 = 0
        /// A second SETUPMAPPING with WRITE is in flight.
        var upgrading = false
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
        /// The CLOCK hand: the next range the victim sweep looks at.
        var hand = 0
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

    /// Pins `r` if it is ready, not detached and, when `writable`, mapped
    /// writable; marks it referenced in the same swap.
    @inline(__always)
    private func pin(_ r: Int, writable: Bool) -> Bool {
        var word = words[r].load(ordering: .relaxed)
        while true {
            guard word & (RangeWord.ready | RangeWord.detached) == RangeWord.ready,
                  !writable || word & RangeWord.writable != 0,
                  word & RangeWord.refs != RangeWord.refs else { return false }
            let (exchanged, original) = words[r].compareExchange(expected: word, desired: (word + 1) | RangeWord.referenced,
                                                                  ordering: .acquiring)
            if exchanged { return true }
            word = original
        }
    }

    /// Takes `r` for a new use if it is ready and idle: its word becomes 0
    /// (not ready), so no hit can pin it. Under the lock only.
    private func claimIdle(_ r: Int) -> Bool {
        var word = words[r].load(ordering: .relaxed)
        while word & RangeWord.ready != 0 && word & RangeWord.refs == 0 {
            let (exchanged, original) = words[r].compareExchange(expected: word, desired: 0, ordering: .acquiring)
            if exchanged { return true }
            word = original
        }
        return false
    }

    /// Records which chunk `r` maps; under the lock, while `r` is not ready.
    private func setOwner(_ r: Int, node: UInt64, chunk: UInt64) {
        owners[2 * r].store(node, ordering: .relaxed)
        owners[2 * r + 1].store(chunk, ordering: .relaxed)
    }

    /// One step of the CLOCK sweep for an idle victim, under the lock:
    /// detached ranges go at once, referenced ones get a second chance.
    /// The victim is claimed (not ready) and out of its file's map.
    private func sweep(_ s: inout State) -> Int32? {
        for _ in 0 ..< 2 * rangeCount + 1 {
            let r = s.hand
            s.hand = r + 1 == rangeCount ? 0 : r + 1
            guard s.ranges[r].phase == .ready else { continue }
            let word = words[r].load(ordering: .relaxed)
            guard word & RangeWord.ready != 0, word & RangeWord.refs == 0 else { continue }
            if word & (RangeWord.referenced | RangeWord.detached) == RangeWord.referenced {
                // A hit racing with this clears nothing: the swap fails and the bit stays.
                _ = words[r].compareExchange(expected: word, desired: word & ~RangeWord.referenced, ordering: .relaxed)
                continue
            }
            guard claimIdle(r) else { continue }
            s.forgetChunk(of: Int32(r))
            return Int32(r)
        }
        return nil
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

    /// A new node's hint table.
    func makeHints() -> ChunkHints { ChunkHints(capacity: hintCapacity) }

    /// The range mapping `chunk` of `node`, mapped (or upgraded) on demand.
    /// nil: serve this access with FUSE_READ/FUSE_WRITE instead (window
    /// pressure, every range busy, the chunk in transition, or the server
    /// refused the mapping). `.lend` never returns nil; it throws instead.
    /// `hints` is the node's table: tried first, without the lock, and
    /// updated whenever the lock holder finds or maps the chunk.
    @inline(__always)
    func acquire(node: UInt64, chunk: UInt64, hints: ChunkHints, writable: Bool, use: Use) throws(Errno) -> Lease? {
        let hint = hints.range(of: chunk)
        if hint >= 0 && pin(hint, writable: writable) {
            if owners[2 * hint].load(ordering: .relaxed) == node && owners[2 * hint + 1].load(ordering: .relaxed) == chunk {
                // Load and store, not an atomic add: a locked add on every hit
                // costs more than the statistic is worth; concurrent hits may
                // undercount it.
                hits.store(hits.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
                return lease(Int32(hint))
            }
            release(Lease(index: Int32(hint), pointer: base))
        }
        return try acquireLocked(node: node, chunk: chunk, hints: hints, writable: writable, use: use)
    }

    private func acquireLocked(node: UInt64, chunk: UInt64, hints: ChunkHints, writable: Bool, use: Use) throws(Errno) -> Lease? {
        let lend = use == .lend
        while true {
            let seen = lend ? rangeEvent.generation : 0
            // Announced before looking, so that a release after the look sees it (see `release`).
            if lend { waiters.add(1, ordering: .sequentiallyConsistent) }
            let (plan, kick) = state.withLock { s -> (Plan, Bool) in
                if let r = s.files[node]?[chunk] {
                    let i = Int(r)
                    guard s.ranges[i].phase == .ready else {
                        // Being set up by another thread.
                        if lend { return (.wait, false) }
                        s.counters.busyFallbacks += 1
                        return (.fallback, false)
                    }
                    hints.set(chunk, range: i)
                    if writable && words[i].load(ordering: .relaxed) & RangeWord.writable == 0 {
                        if s.ranges[i].upgrading {
                            if lend { return (.wait, false) }
                            s.counters.busyFallbacks += 1
                            return (.fallback, false)
                        }
                        s.ranges[i].upgrading = true
                        // Ready and in the file's map, hence not detached: the pin holds.
                        _ = pin(i, writable: false)
                        return (.upgrade(r), false)
                    }
                    _ = pin(i, writable: false)
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
                } else if let victim = sweep(&s) {
                    s.exhausted = true
                    // Inline reclaim of an idle range, whichever file it maps.
                    // The new SETUPMAPPING replaces the old mapping in place
                    // (MAP_FIXED), which saves the REMOVEMAPPING round trip
                    // Linux pays here.
                    r = victim
                    stolen = true
                } else {
                    s.exhausted = true
                    if lend { return (.wait, false) }
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
                let i = Int(r)
                s.ranges[i] = Range(phase: .settingUp, node: node, chunk: chunk)
                setOwner(i, node: node, chunk: chunk)
                // Not ready yet: only this caller's reference.
                words[i].store(1 | (writable ? RangeWord.writable : 0), ordering: .relaxed)
                s.files[node, default: [:]][chunk] = r
                return (.setup(r, stolen: stolen), kick)
            }
            var waiting = false
            if case .wait = plan { waiting = true }
            if lend && !waiting { waiters.subtract(1, ordering: .relaxed) }
            if kick { reclaimEvent.signal() }

            switch plan {
            case .hit(let r):
                return lease(r)
            case .fallback:
                return nil
            case .wait:
                rangeEvent.wait(after: seen)
                waiters.subtract(1, ordering: .relaxed)
            case .upgrade(let r):
                do throws(Errno) {
                    try window.allowingChanges([(windowOffset(r), rangeSize)]) { () throws(Errno) in
                        try fuse.setupMapping(NodeID(node), fileOffset: chunk << rangeShift, windowOffset: windowOffset(r),
                                              length: rangeSize, writable: true)
                    }
                    try checkMapped(r, writable: true)
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
                    try window.allowingChanges([(windowOffset(r), rangeSize)]) { () throws(Errno) in
                        try fuse.setupMapping(NodeID(node), fileOffset: chunk << rangeShift, windowOffset: windowOffset(r),
                                              length: rangeSize, writable: writable)
                    }
                    try checkMapped(r, writable: writable)
                } catch {
                    abandon(r, stolen: stolen)
                    noteFailure(error)
                    if lend { throw error }
                    return nil
                }
                finishSetup(r, stolen: stolen, hints: hints)
                return lease(r)
            }
        }
    }

    /// Gives a range back. A waiter that announced itself before looking at
    /// the ranges either saw this range idle or is woken here: the subtract
    /// and the load are ordered against its announcement and its look.
    @inline(__always)
    func release(_ lease: Lease) {
        let before = words[Int(lease.index)].subtract(1, ordering: .sequentiallyConsistent).oldValue
        precondition(before & RangeWord.refs != 0, "DAX range \(lease.index) released more often than acquired")
        if waiters.load(ordering: .sequentiallyConsistent) > 0 { rangeEvent.signal() }
    }

    private func finishSetup(_ r: Int32, stolen: Bool, hints: ChunkHints) {
        state.withLock { s in
            let i = Int(r)
            s.ranges[i].phase = .ready
            // Publishes the owner written before; keeps a detached mark set by `drop` meanwhile.
            words[i].bitwiseOr(RangeWord.ready, ordering: .releasing)
            if s.files[s.ranges[i].node]?[s.ranges[i].chunk] == r { hints.set(s.ranges[i].chunk, range: i) }
            s.counters.setups += 1
            if stolen { s.counters.inlineReclaimed += 1 }
        }
        wakeWaiters()
    }

    private func finishUpgrade(_ r: Int32, succeeded: Bool) {
        state.withLock { s in
            s.ranges[Int(r)].upgrading = false
            if succeeded {
                words[Int(r)].bitwiseOr(RangeWord.writable, ordering: .releasing)
                s.counters.upgrades += 1
            }
        }
        wakeWaiters()
    }

    private func wakeWaiters() {
        if waiters.load(ordering: .sequentiallyConsistent) > 0 { rangeEvent.signal() }
    }

    /// A SETUPMAPPING failed: the range goes back to the free list. A stolen
    /// range may still map its old chunk, so it is removed first.
    private func abandon(_ r: Int32, stolen: Bool) {
        state.withLock { s in
            s.forgetChunk(of: r)
            s.ranges[Int(r)].phase = .removing
            words[Int(r)].store(0, ordering: .relaxed)
            s.counters.setupFailures += 1
        }
        if stolen {
            window.allowingChanges([(windowOffset(r), rangeSize)]) {
                try? fuse.removeMapping([RemoveMappingOne(moffset: windowOffset(r), len: rangeSize)])
            }
        }
        freeRanges([r], messages: stolen ? 1 : 0)
    }

    /// A server that answers SETUPMAPPING without mapping (no SHMEM_MAP
    /// reached the window) would leave the range inaccessible: EIO instead
    /// of a fault when the memory is touched.
    private func checkMapped(_ r: Int32, writable: Bool) throws(Errno) {
        guard let window, !window.isMapped(offset: windowOffset(r), length: rangeSize, writable: writable) else { return }
        throw .io
    }

    private func noteFailure(_ error: Errno) {
        // A server without a window: stop trying (FUSE_READ/FUSE_WRITE from now on).
        if error == .notImplemented { enabled.store(false, ordering: .relaxed) }
    }

    private func freeRanges(_ victims: [Int32], messages: Int) {
        state.withLock { s in
            for r in victims {
                s.ranges[Int(r)] = Range()
                words[Int(r)].store(0, ordering: .relaxed)
                s.free.append(r)
            }
            // Files closed or truncated: room to spare again.
            if s.free.count > 2 * reclaimThreshold { s.exhausted = false }
            s.counters.removeMessages += UInt64(messages)
        }
        wakeWaiters()
    }

    private func removeMappings(_ victims: [Int32], node: UInt64) -> Int {
        guard !victims.isEmpty else { return 0 }
        // Unmapping only ever makes a range inaccessible; whatever the server
        // answers, the range can be mapped again by the next SETUPMAPPING.
        window.allowingChanges(victims.map { (windowOffset($0), rangeSize) }) {
            try? fuse.removeMapping(victims.map { RemoveMappingOne(moffset: windowOffset($0), len: rangeSize) },
                                    node: node == 0 ? .root : NodeID(node))
        }
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
                if s.ranges[i].phase == .ready && claimIdle(i) {
                    s.ranges[i].phase = .removing
                    out.append(r)
                } else {
                    // In use or being set up: no new hits from now on.
                    words[i].bitwiseOr(RangeWord.detached, ordering: .relaxed)
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

    /// Frees idle ranges, in CLOCK order (unused since the hand last passed first), until the free list is
    /// back at the threshold, at most `reclaimBatch` per pass; returns how
    /// many it freed.
    @discardableResult
    func reclaimPass() -> Int {
        let victims = state.withLock { s -> [Int32] in
            guard !s.stopping else { return [] }
            let want = min(reclaimBatch, reclaimThreshold - s.free.count)
            var out: [Int32] = []
            while out.count < want, let r = sweep(&s) {
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
        state.withLock { s in
            var counters = s.counters
            counters.hits += hits.load(ordering: .relaxed)
            return (counters, s.free.count)
        }
    }

    /// The window offset of the range mapping `chunk` of `node`, and whether it is writable.
    func mapping(node: UInt64, chunk: UInt64) -> (offset: UInt64, writable: Bool)? {
        state.withLock { s in
            guard let r = s.files[node]?[chunk], s.ranges[Int(r)].phase == .ready else { return nil }
            return (windowOffset(r), words[Int(r)].load(ordering: .relaxed) & RangeWord.writable != 0)
        }
    }

    /// Mapped chunks of `node`.
    func mappedChunks(node: UInt64) -> [UInt64] {
        state.withLock { s in (s.files[node]?.keys).map { Array($0).sorted() } ?? [] }
    }

    /// Every broken invariant, in words (empty when all hold). Exact only
    /// when no other thread uses the window.
    func invariantViolations() -> [String] {
        state.withLock { s in
            var problems: [String] = []
            var seenFree = Set<Int32>()
            for r in s.free {
                if !seenFree.insert(r).inserted { problems.append("range \(r) twice on the free list") }
                let word = words[Int(r)].load(ordering: .relaxed)
                if s.ranges[Int(r)].phase != .free || word != 0 { problems.append("free range \(r) is \(s.ranges[Int(r)]), word \(word)") }
            }
            for (i, range) in s.ranges.enumerated() {
                let word = words[i].load(ordering: .relaxed)
                if range.phase == .free && !seenFree.contains(Int32(i)) { problems.append("free range \(i) not on the free list") }
                if (range.phase == .ready) != (word & RangeWord.ready != 0) { problems.append("range \(i) is \(range), word \(word)") }
                if range.phase == .ready && (owners[2 * i].load(ordering: .relaxed) != range.node || owners[2 * i + 1].load(ordering: .relaxed) != range.chunk) {
                    problems.append("range \(i) is \(range) but its owner words disagree")
                }
            }
            for (node, map) in s.files {
                for (chunk, r) in map {
                    let range = s.ranges[Int(r)]
                    let word = words[Int(r)].load(ordering: .relaxed)
                    if range.node != node || range.chunk != chunk || word & RangeWord.detached != 0 || !(range.phase == .ready || range.phase == .settingUp) {
                        problems.append("node \(node) chunk \(chunk) → range \(r), which is \(range), word \(word)")
                    }
                }
            }
            return problems
        }
    }
}

/// A node's hints for the lock-free hit path: chunk → range, direct-mapped
/// by chunk modulo the capacity. A hint may be stale or point at another
/// chunk's range; the hit path checks the range's owner after pinning it.
final class ChunkHints: @unchecked Sendable {
    private let slots: UnsafeMutablePointer<Atomic<Int32>>
    private let mask: UInt64

    /// `capacity`: a power of two.
    init(capacity: Int) {
        slots = .allocate(capacity: capacity)
        for i in 0 ..< capacity { (slots + i).initialize(to: Atomic(-1)) }
        mask = UInt64(capacity - 1)
    }

    deinit {
        slots.deinitialize(count: Int(mask) + 1)
        slots.deallocate()
    }

    /// The range last seen mapping `chunk`, or -1.
    @inline(__always)
    func range(of chunk: UInt64) -> Int { Int(slots[Int(chunk & mask)].load(ordering: .relaxed)) }

    func set(_ chunk: UInt64, range: Int) { slots[Int(chunk & mask)].store(Int32(range), ordering: .relaxed) }
}
