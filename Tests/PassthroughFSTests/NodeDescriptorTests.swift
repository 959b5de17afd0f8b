import CLinux
@_spi(Testing) import FUSEServer
import FUSEABI
import Glibc
import HostSystem
@_spi(Testing) import PassthroughFS
import Testing

/// Nodes beyond `nodeDescriptorLimit` close their host descriptors and reopen
/// them by file handle (needs CAP_DAC_READ_SEARCH, so root).
@Suite struct NodeDescriptorTests {
    /// Entries in /proc/self/fd.
    func openDescriptors() -> Int {
        guard let directory = opendir("/proc/self/fd") else { return -1 }
        defer { closedir(directory) }
        var count = 0
        while readdir(directory) != nil { count += 1 }
        return count
    }

    static let limit = 8

    static var canOpenByHandle: Bool {
        guard let f = try? Fixture(nodeDescriptorLimit: limit) else { return false }
        if !f.fs.reopensByHandle { print("skipped: open_by_handle_at needs CAP_DAC_READ_SEARCH (run as root)") }
        return f.fs.reopensByHandle
    }

    @Test(.enabled(if: canOpenByHandle)) func descriptorsStayBoundedAndNodesKeepWorking() throws {
        let f = try Fixture(nodeDescriptorLimit: Self.limit)
        let count = 200
        var nodes: [NodeID] = []
        let before = openDescriptors()
        for index in 0 ..< count {
            f.dir.write("f\(index)", "file \(index)")
            nodes.append(try f.lookup("f\(index)").node)
            #expect(f.fs.openNodeDescriptors <= Self.limit)
        }
        #expect(Set(nodes).count == count)
        #expect(f.fs.openNodeDescriptors == Self.limit)
        // The process itself holds no more than the limit for them (other tests run in parallel: some slack).
        #expect(openDescriptors() - before < count / 2)
        #expect(nodes.filter { f.fs.holdsDescriptor($0) == false }.count >= count - Self.limit)
        // Every node works again, through a reopened handle where needed:
        // attributes, a new open and read, and a second lookup finds the same node.
        for (index, node) in nodes.enumerated() {
            #expect(try f.fs.getattr(ctx, node: node, handle: nil).attr.size == UInt64("file \(index)".utf8.count))
            let opened = try f.open(node, flags: O_RDONLY)
            #expect(try f.read(node, opened.handle) == "file \(index)")
            try f.release(node, opened)
            #expect(try f.lookup("f\(index)").node == node)
            #expect(f.fs.openNodeDescriptors <= Self.limit)
        }
        for node in nodes { f.fs.forget(node, count: 2) }
        #expect(f.fs.nodeCount == 1)
        #expect(f.fs.openNodeDescriptors == 0)
    }

    @Test(.enabled(if: canOpenByHandle)) func directoriesWorkAsParentsAfterClosing() throws {
        let f = try Fixture(nodeDescriptorLimit: Self.limit)
        var directories: [NodeID] = []
        for index in 0 ..< 40 {
            #expect(mkdir(f.dir.at("d\(index)"), 0o755) == 0)
            directories.append(try f.lookup("d\(index)").node)
        }
        // Creating, renaming and removing inside each directory goes through its reopened descriptor.
        for (index, directory) in directories.enumerated() {
            let (entry, opened) = try f.create("new", in: directory)
            try f.release(entry.node, opened)
            try withName("new") { old in
                try withName("renamed") { new in
                    try f.fs.rename(ctx, parent: directory, name: old, newParent: directory, newName: new, flags: 0)
                }
            }
            #expect(f.dir.exists("d\(index)/renamed"))
            try withName("renamed") { try f.fs.unlink(ctx, parent: directory, name: $0) }
            #expect(!f.dir.exists("d\(index)/renamed"))
        }
        #expect(f.fs.openNodeDescriptors <= Self.limit)
    }

    @Test(.enabled(if: canOpenByHandle)) func hostRenameOfAClosedNode() throws {
        let f = try Fixture(nodeDescriptorLimit: Self.limit)
        f.dir.write("target", "still here")
        let target = try f.lookup("target").node
        for index in 0 ..< 50 {
            f.dir.write("fill\(index)", "")
            _ = try f.lookup("fill\(index)")
        }
        #expect(mkdir(f.dir.at("elsewhere"), 0o755) == 0)
        #expect(rename(f.dir.at("target"), f.dir.at("elsewhere/moved")) == 0)
        // The handle names the inode, not the path.
        let opened = try f.open(target, flags: O_RDONLY)
        #expect(try f.read(target, opened.handle) == "still here")
        try f.release(target, opened)
    }

    @Test(.enabled(if: canOpenByHandle)) func deletedInodeIsStaleAndItsNumberGoesToANewNode() throws {
        let f = try Fixture(nodeDescriptorLimit: Self.limit)
        f.dir.write("victim", "old")
        let victim = try f.lookup("victim")
        for index in 0 ..< 50 {
            f.dir.write("fill\(index)", "")
            _ = try f.lookup("fill\(index)")
        }
        #expect(f.fs.holdsDescriptor(victim.node) == false)
        // Removed on the host while the node held only its handle: the inode is freed.
        #expect(unlink(f.dir.at("victim")) == 0)
        #expect(throws: Errno.staleHandle) { try f.fs.getattr(ctx, node: victim.node, handle: nil) }
        #expect(throws: Errno.staleHandle) { try f.open(victim.node, flags: O_RDONLY) }
        // New files may reuse the inode number; none of them may land on the stale node.
        for index in 0 ..< 20 {
            f.dir.write("new\(index)", "new \(index)")
            let entry = try f.lookup("new\(index)")
            #expect(entry.node != victim.node)
            let opened = try f.open(entry.node, flags: O_RDONLY)
            #expect(try f.read(entry.node, opened.handle) == "new \(index)")
            try f.release(entry.node, opened)
        }
    }

    /// Four threads look up, stat, open and forget 64 files over 8
    /// descriptors, so closes and reopens race with use (run under TSan in CI).
    @Test(.enabled(if: canOpenByHandle)) func concurrentUseWhileDescriptorsCloseAndReopen() throws {
        let f = try Fixture(nodeDescriptorLimit: Self.limit)
        for index in 0 ..< 64 { f.dir.write("f\(index)", "file \(index)") }
        let failures = Locked(0)
        let threads = try (0 ..< 4).map { thread in
            try OSThread(name: "node-fds") {
                // Lookups are forgotten only at the end: all 64 nodes stay known.
                var lookups: [NodeID: UInt64] = [:]
                defer { for (node, count) in lookups { f.fs.forget(node, count: count) } }
                for round in 0 ..< 300 {
                    let index = (round * 7 + thread * 13) % 64
                    do {
                        let entry = try f.lookup("f\(index)")
                        let size = try f.fs.getattr(ctx, node: entry.node, handle: nil).attr.size
                        let opened = try f.open(entry.node, flags: O_RDONLY)
                        let text = try f.read(entry.node, opened.handle)
                        try f.release(entry.node, opened)
                        lookups[entry.node, default: 0] += 1
                        if size != UInt64("file \(index)".utf8.count) || text != "file \(index)" { failures.withLock { $0 += 1 } }
                    } catch {
                        failures.withLock { $0 += 1 }
                    }
                }
            }
        }
        threads.forEach { $0.join() }
        #expect(failures.withLock { $0 } == 0)
        #expect(f.fs.nodeCount == 1)
        #expect(f.fs.reopenedByHandle > 100, "descriptors were closed and reopened while in use")
        #expect(f.fs.openNodeDescriptors <= Self.limit)
    }

    @Test func withoutHandlesEveryNodeKeepsItsDescriptor() throws {
        // A limit of 1 with handles still serves every node; without handles
        // (not root) nodes are pinned and nothing is counted.
        let f = try Fixture(nodeDescriptorLimit: 1)
        for index in 0 ..< 20 {
            f.dir.write("f\(index)", "\(index)")
            let entry = try f.lookup("f\(index)")
            #expect(try f.fs.getattr(ctx, node: entry.node, handle: nil).attr.size == UInt64("\(index)".utf8.count))
        }
        #expect(f.fs.openNodeDescriptors <= 1)
    }
}
