import FUSEServer
import Glibc
import HostSystem
import Testing
@testable import VhostUser

/// The backend's table of what the frontend holds, planned with QEMU 11.1's
/// rules: no map over a mapping, unmaps name whole mappings.
struct WindowMappingsTests {
    static let mb: UInt64 = 1 << 20
    let descriptor = SharedDescriptor(adopting: dup(0))

    func mapping(_ offset: UInt64, _ length: UInt64, file: UInt64 = 1, fileOffset: UInt64 = 0, writable: Bool = true) -> FrontendMapping {
        FrontendMapping(windowOffset: offset, length: length, requestedLength: length, node: NodeID(file), fileOffset: fileOffset,
                        file: MappedFile(device: 1, inode: file), writable: writable, descriptor: descriptor)
    }

    func apply(_ steps: [WindowStep], to table: inout WindowMappings) {
        for step in steps { table.applied(step) }
    }

    func describe(_ steps: [WindowStep]) -> [String] {
        steps.map { step in
            switch step {
            case .unmap(let m): "unmap \(m.windowOffset / Self.mb)+\(m.length / Self.mb)"
            case .map(let m): "map \(m.windowOffset / Self.mb)+\(m.length / Self.mb)@\(m.fileOffset / Self.mb)"
            }
        }
    }

    @Test func identicalMappingIsHeldAndUpgradeUnmapsFirst() {
        var table = WindowMappings()
        let readOnly = mapping(0, 2 * Self.mb, writable: false)
        #expect(describe(table.plan(replacing: 0, 2 * Self.mb, with: readOnly)) == ["map 0+2@0"])
        apply(table.plan(replacing: 0, 2 * Self.mb, with: readOnly), to: &table)
        #expect(table.holds(readOnly))
        // Linux's upgrade of the same range: QEMU refuses the identical range, so unmap it first.
        let writable = mapping(0, 2 * Self.mb, writable: true)
        #expect(!table.holds(writable))
        #expect(describe(table.plan(replacing: 0, 2 * Self.mb, with: writable)) == ["unmap 0+2", "map 0+2@0"])
        apply(table.plan(replacing: 0, 2 * Self.mb, with: writable), to: &table)
        // Already writable: a read-only request over it changes nothing.
        #expect(table.holds(readOnly) && table.holds(writable))
        #expect(table.invariantViolations().isEmpty)
    }

    @Test func partialOverlapsKeepTheirRemainders() {
        var table = WindowMappings()
        apply(table.plan(replacing: 0, 8 * Self.mb, with: mapping(0, 8 * Self.mb, file: 1)), to: &table)
        let middle = mapping(2 * Self.mb, 2 * Self.mb, file: 2, fileOffset: 10 * Self.mb)
        #expect(describe(table.plan(replacing: 2 * Self.mb, 4 * Self.mb, with: middle))
                == ["unmap 0+8", "map 2+2@10", "map 0+2@0", "map 4+4@4"])
        apply(table.plan(replacing: 2 * Self.mb, 4 * Self.mb, with: middle), to: &table)
        #expect(table.count == 3 && table.invariantViolations().isEmpty)
        // An unmap across two mappings names each whole, then maps back what lies outside.
        #expect(describe(table.plan(replacing: 3 * Self.mb, 5 * Self.mb, with: nil))
                == ["unmap 2+2", "unmap 4+4", "map 2+1@10", "map 5+3@5"])
        // Nothing there: nothing to send.
        let empty = WindowMappings()
        #expect(empty.plan(replacing: 0, Self.mb, with: nil).isEmpty)
    }

    /// Random maps and unmaps against a page-level model of the window.
    @Test func randomChangesMatchAPageModel() {
        var table = WindowMappings()
        var model = [UInt64?](repeating: nil, count: 64)  // window page (1 MiB here) → file offset page, file 1
        var rng = SplitMix(seed: 42)
        for round in 0 ..< 2000 {
            let start = rng.next() % 64, length = 1 + rng.next() % min(8, 64 - start)
            let new: FrontendMapping? = rng.next() % 3 == 0 ? nil : mapping(start * Self.mb, length * Self.mb, fileOffset: (rng.next() % 100) * Self.mb)
            apply(table.plan(replacing: start * Self.mb, (start + length) * Self.mb, with: new), to: &table)
            for page in start ..< start + length { model[Int(page)] = new.map { $0.fileOffset / Self.mb + (page - start) } }
            #expect(table.invariantViolations().isEmpty, "round \(round): \(table.invariantViolations())")
            var seen = [UInt64?](repeating: nil, count: 64)
            for m in table.mappings {
                for page in m.windowOffset / Self.mb ..< m.windowEnd / Self.mb { seen[Int(page)] = m.fileOffset / Self.mb + (page - m.windowOffset / Self.mb) }
            }
            if seen != model { Issue.record("round \(round): table disagrees with the model"); return }
        }
    }
}
