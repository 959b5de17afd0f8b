import Glibc
import HostSystem
import Synchronization

/// The descriptors one file system holds for its client beyond its nodes'
/// own: open files, open directories, lock owners. A client that opens
/// without end gets EMFILE from its own budget, never the other clients of
/// the process (each `daxfs serve` frontend has a file system of its own).
final class DescriptorBudget: Sendable {
    let limit: Int
    private let used = Atomic<Int>(0)

    init(limit: Int) { self.limit = max(1, limit) }

    var inUse: Int { used.load(ordering: .relaxed) }

    /// One descriptor's worth, given back when the token goes.
    func take() throws(Errno) -> DescriptorToken {
        if used.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue > limit {
            used.wrappingSubtract(1, ordering: .acquiringAndReleasing)
            throw Errno(EMFILE)
        }
        return DescriptorToken(self)
    }

    fileprivate func give() { used.wrappingSubtract(1, ordering: .acquiringAndReleasing) }
}

/// One descriptor of a `DescriptorBudget`, held by what keeps the descriptor open.
final class DescriptorToken: Sendable {
    private let budget: DescriptorBudget
    fileprivate init(_ budget: DescriptorBudget) { self.budget = budget }
    deinit { budget.give() }
}
