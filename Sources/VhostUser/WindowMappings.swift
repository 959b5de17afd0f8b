import FUSEServer
import HostSystem

/// The host file a mapping shows, by (st_dev, st_ino).
struct MappedFile: Hashable, Sendable {
    let device: UInt64
    let inode: UInt64
}

/// One SHMEM_MAP the frontend holds: a window range showing a file range.
struct FrontendMapping: @unchecked Sendable {
    var windowOffset: UInt64
    var length: UInt64
    /// The length the client asked for; more than `length` after the file
    /// shrank under the mapping (see `BackendChannel.resynchronize`).
    var requestedLength: UInt64
    /// Whose SETUPMAPPING it is, when known.
    var node: NodeID?
    var fileOffset: UInt64
    var file: MappedFile
    var writable: Bool
    /// The descriptor the frontend was given; kept so that a remainder can be mapped again.
    var descriptor: SharedDescriptor

    var windowEnd: UInt64 { windowOffset + length }

    /// The part of this mapping inside [start, end), as a mapping of its own.
    func slice(from start: UInt64, to end: UInt64) -> FrontendMapping {
        var part = self
        part.windowOffset = max(start, windowOffset)
        part.length = min(end, windowEnd) - part.windowOffset
        part.fileOffset = fileOffset + (part.windowOffset - windowOffset)
        part.requestedLength = part.length
        return part
    }
}

/// What the frontend must be told, in order, to change the window.
enum WindowStep: @unchecked Sendable {
    case unmap(FrontendMapping)
    case map(FrontendMapping)
}

/// The mappings a frontend holds in one shared-memory window, kept the way
/// QEMU 11.1 needs them: it refuses a SHMEM_MAP that overlaps any mapping it
/// has (the identical range included), and a SHMEM_UNMAP must name exactly
/// one earlier mapping. So every change is planned here as exact unmaps of
/// what it overlaps, the new mapping, then the remainders of what it cut
/// (mapped again as they were). The plan is applied step by step with
/// `applied`, so the table always says what the frontend really holds, even
/// when a step fails halfway.
struct WindowMappings {
    /// Sorted by window offset, never overlapping.
    private(set) var mappings: [FrontendMapping] = []
    /// Mappings the client still holds but the frontend does not: their
    /// whole file range lies past the file's end after it shrank. They come
    /// back when it grows again, unless the client reused the range meanwhile.
    private(set) var suspended: [FrontendMapping] = []

    var count: Int { mappings.count }

    /// The mappings overlapping [start, end), in window order.
    func overlapping(_ start: UInt64, _ end: UInt64) -> ArraySlice<FrontendMapping> {
        var low = 0, high = mappings.count
        while low < high {  // first mapping that ends after `start`
            let middle = (low + high) / 2
            if mappings[middle].windowEnd <= start { low = middle + 1 } else { high = middle }
        }
        var last = low
        while last < mappings.count && mappings[last].windowOffset < end { last += 1 }
        return mappings[low ..< last]
    }

    /// Whether `wanted` is already in place: one mapping of the same range of
    /// the same file, writable if `wanted` is.
    func holds(_ wanted: FrontendMapping) -> Bool {
        let found = overlapping(wanted.windowOffset, wanted.windowEnd)
        guard found.count == 1, let existing = found.first else { return false }
        return existing.windowOffset == wanted.windowOffset && existing.length == wanted.length
            && existing.file == wanted.file && existing.fileOffset == wanted.fileOffset
            && (existing.writable || !wanted.writable)
    }

    /// Steps that put `new` in place (nil: unmap only) over [start, end).
    func plan(replacing start: UInt64, _ end: UInt64, with new: FrontendMapping?) -> [WindowStep] {
        var steps: [WindowStep] = []
        var remainders: [FrontendMapping] = []
        for old in overlapping(start, end) {
            steps.append(.unmap(old))
            if old.windowOffset < start { remainders.append(old.slice(from: old.windowOffset, to: start)) }
            if old.windowEnd > end { remainders.append(old.slice(from: end, to: old.windowEnd)) }
        }
        if let new { steps.append(.map(new)) }
        steps += remainders.map { .map($0) }
        return steps
    }

    mutating func suspend(_ mapping: FrontendMapping) { suspended.append(mapping) }

    /// Takes the suspended mappings of `node` back, to be mapped again.
    mutating func resume(_ node: NodeID) -> [FrontendMapping] {
        let back = suspended.filter { $0.node == node }
        suspended.removeAll { $0.node == node }
        return back
    }

    /// The client changes [start, end) itself: suspended mappings there are void.
    mutating func forgetSuspended(_ start: UInt64, _ end: UInt64) {
        suspended.removeAll { $0.windowOffset < end && $0.windowOffset + $0.requestedLength > start }
    }

    /// Records a step the frontend acknowledged.
    mutating func applied(_ step: WindowStep) {
        switch step {
        case .unmap(let old):
            if let index = mappings.firstIndex(where: { $0.windowOffset == old.windowOffset && $0.length == old.length }) {
                mappings.remove(at: index)
            }
        case .map(let new):
            let index = mappings.firstIndex { $0.windowOffset > new.windowOffset } ?? mappings.count
            mappings.insert(new, at: index)
        }
    }

    /// Mappings of `node`'s file.
    func mappings(of node: NodeID) -> [FrontendMapping] { mappings.filter { $0.node == node } }

    /// Whether any mapping, live or suspended, belongs to `node`.
    func shows(_ node: NodeID) -> Bool { mappings.contains { $0.node == node } || suspended.contains { $0.node == node } }


    /// Broken invariants, for tests: order, overlap, empty mappings.
    func invariantViolations() -> [String] {
        var problems: [String] = []
        for (index, mapping) in mappings.enumerated() {
            if mapping.length == 0 { problems.append("mapping \(index) at \(mapping.windowOffset) is empty") }
            if index > 0 && mappings[index - 1].windowEnd > mapping.windowOffset {
                problems.append("mapping \(index) at \(mapping.windowOffset) overlaps the one before (ends \(mappings[index - 1].windowEnd))")
            }
        }
        return problems
    }
}
