import CLinux
@_spi(Testing) import FUSEServer
import FUSEABI
import Glibc
import HostSystem
@_spi(Testing) import PassthroughFS
import Testing

@Suite struct NodeTests {
    @Test func lookupCountsAndForget() throws {
        let f = try Fixture()
        f.dir.write("a", "hello")
        let baseline = f.fs.nodeCount
        let first = try f.lookup("a")
        let second = try f.lookup("a")
        #expect(first.node == second.node)
        #expect(first.node != .root && first.node.rawValue != 0)
        #expect(f.fs.lookupCount(first.node) == 2)
        let host = try #require(f.dir.lstat("a"))
        #expect(first.attr.ino == UInt64(host.st_ino))
        #expect(first.attr.size == 5)
        #expect(first.attr.mode == UInt32(host.st_mode))
        #expect(first.attr.nlink == 1)
        #expect(first.attr.mtime == UInt64(host.st_mtim.tv_sec) && first.attr.mtimensec == UInt32(host.st_mtim.tv_nsec))
        #expect(first.entryTimeout == CacheTimeout(seconds: 1))

        f.fs.forget(first.node, count: 1)
        #expect(f.fs.lookupCount(first.node) == 1)
        f.fs.forget(first.node, count: 1)
        #expect(f.fs.lookupCount(first.node) == nil)
        #expect(f.fs.nodeCount == baseline)
        // Forgetting more than counted, unknown nodes and the root are harmless.
        f.fs.forget(first.node, count: 5)
        f.fs.forget(NodeID(987_654), count: 1)
        f.fs.forget(.root, count: 100)
        #expect(f.fs.lookupCount(.root) != nil)
        #expect(throws: Errno.staleHandle) { try f.fs.getattr(ctx, node: first.node, handle: nil) }

        // A new lookup after the node died gets a fresh id.
        let third = try f.lookup("a")
        #expect(third.node != first.node)
        #expect(f.fs.lookupCount(third.node) == 1)
    }

    @Test func negativeLookups() throws {
        let auto = try Fixture(cache: .auto)
        let negative = try auto.lookup("missing")
        #expect(negative.node.rawValue == 0)
        #expect(negative.entryTimeout == CacheTimeout(seconds: 1))

        let never = try Fixture(cache: .never)
        #expect(throws: Errno.noEntry) { try never.lookup("missing") }
        never.dir.write("f", "x")
        let entry = try never.lookup("f")
        #expect(entry.entryTimeout == .zero && entry.attrTimeout == .zero)

        let always = try Fixture(cache: .always)
        #expect(try always.lookup("missing").entryTimeout == CacheTimeout(seconds: 86400))
        #expect(!always.fs.wantedCapabilities.contains(.autoInvalData))
        #expect(auto.fs.wantedCapabilities.contains(.autoInvalData))
        #expect(!auto.fs.wantedCapabilities.contains(.writebackCache))
    }

    @Test func hostRenameKeepsNodesAndHandles() throws {
        let f = try Fixture()
        f.dir.write("a", "contents")
        #expect(mkdir(f.dir.at("sub"), 0o755) == 0)
        let entry = try f.lookup("a")
        let opened = try f.open(entry.node, flags: O_RDONLY)
        #expect(rename(f.dir.at("a"), f.dir.at("sub/b")) == 0)
        #expect(try f.fs.getattr(ctx, node: entry.node, handle: nil).attr.size == 8)
        #expect(try f.read(entry.node, opened.handle) == "contents")
        let reopened = try f.open(entry.node, flags: O_RDONLY)
        #expect(try f.read(entry.node, reopened.handle, at: 3) == "tents")
        // The renamed file, looked up under its new name, is the same node.
        let sub = try f.lookup("sub")
        #expect(try f.lookup("b", in: sub.node).node == entry.node)
        try f.release(entry.node, opened)
        try f.release(entry.node, reopened)
    }

    @Test func concurrentLookupsAndForgetsStayExact() throws {
        let f = try Fixture()
        f.dir.write("shared", "x")
        let rounds = 200
        let threads = try (0 ..< 4).map { _ in
            try OSThread(name: "lookup") {
                for _ in 0 ..< rounds {
                    if let entry = try? f.lookup("shared") { f.fs.forget(entry.node, count: 1) }
                }
            }
        }
        threads.forEach { $0.join() }
        #expect(f.fs.nodeCount == 1)
        let entry = try f.lookup("shared")
        #expect(f.fs.lookupCount(entry.node) == 1)
    }

    @Test func untrustedValues() throws {
        let f = try Fixture()
        let (entry, opened) = try f.create("f")
        #expect(throws: Errno.badFileDescriptor) { try f.read(entry.node, FileHandle(999), count: 10) }
        #expect(throws: Errno.staleHandle) { try f.fs.getattr(ctx, node: NodeID(123_456), handle: nil) }
        #expect(throws: Errno.staleHandle) { try f.lookup("x", in: NodeID(42_000)) }
        #expect(throws: Errno.invalidArgument) { try f.read(entry.node, opened.handle, at: UInt64.max) }
        #expect(throws: Errno.invalidArgument) { try f.write(entry.node, opened.handle, "x", at: UInt64(Int64.max) + 1) }
        #expect(throws: Errno.fileTooLarge) { try f.write(entry.node, opened.handle, "xy", at: UInt64(Int64.max)) }
        #expect(throws: Errno.invalidArgument) {
            try f.fs.fallocate(ctx, node: entry.node, handle: opened.handle, offset: UInt64.max, length: 1, mode: 0)
        }
        #expect(throws: Errno.fileTooLarge) {
            try f.fs.fallocate(ctx, node: entry.node, handle: opened.handle, offset: UInt64(Int64.max), length: 2, mode: 0)
        }
        #expect(throws: Errno.invalidArgument) {
            try f.fs.setattr(ctx, node: entry.node, SetattrRequest(size: UInt64.max))
        }
        #expect(throws: Errno.invalidArgument) {
            try f.fs.setlk(ctx, node: entry.node, handle: opened.handle, owner: 1,
                           lock: LockRange(start: 10, end: 5, type: UInt32(F_WRLCK)), wait: false, isFlock: false)
        }
        #expect(throws: Errno.invalidArgument) {
            try f.fs.setlk(ctx, node: entry.node, handle: opened.handle, owner: 1,
                           lock: LockRange(start: 0, end: 5, type: 77), wait: false, isFlock: false)
        }
        #expect(throws: Errno.invalidArgument) {
            try f.fs.lseek(ctx, node: entry.node, handle: opened.handle, offset: 0, whence: 99)
        }
        #expect(throws: Errno.invalidArgument) {
            try withName("x") { try f.fs.rename(ctx, parent: .root, name: $0, newParent: .root, newName: $0, flags: 1 << 9) }
        }
        #expect(throws: Errno.badFileDescriptor) {
            try f.fs.release(ctx, node: entry.node, handle: FileHandle(77), flags: 0, lockOwner: nil, flush: false, flockRelease: false)
        }
        #expect(throws: Errno.badFileDescriptor) { try f.fs.releasedir(ctx, node: .root, handle: opened.handle, flags: 0) }
        try f.release(entry.node, opened)
        // Released twice: unknown.
        #expect(throws: Errno.badFileDescriptor) { try f.release(entry.node, opened) }
    }
}

@Suite struct SandboxTests {
    @Test func symlinkEscapes() throws {
        let f = try Fixture()
        #expect(symlink("/", f.dir.at("escape")) == 0)
        #expect(symlink("/etc/passwd", f.dir.at("passwd")) == 0)
        let escape = try f.lookup("escape")
        #expect(escape.attr.mode & Mode.typeMask == Mode.symlink)
        #expect(try f.fs.readlink(ctx, node: escape.node) == Array("/".utf8))
        #expect(throws: Errno.loop) { try f.open(escape.node, flags: O_RDONLY) }
        #expect(throws: Errno.notDirectory) { try f.fs.opendir(ctx, node: escape.node, flags: 0) }
        // Used as a directory, the symlink is not followed.
        #expect(throws: Errno.notDirectory) { try f.lookup("etc", in: escape.node) }
        #expect(throws: Errno.notDirectory) {
            try withName("x") { try f.fs.mkdir(ctx, parent: escape.node, name: $0, mode: 0o755, umask: 0) }
        }
        let passwd = try f.lookup("passwd")
        #expect(throws: Errno.loop) { try f.open(passwd.node, flags: O_RDONLY) }
        #expect(throws: Errno.loop) { try f.open(passwd.node, flags: O_WRONLY | O_TRUNC) }
        // create through an existing symlink name must not follow it.
        #expect(throws: Errno.exists) { try f.create("passwd", flags: O_RDWR | O_EXCL) }
        #expect(throws: Errno.loop) { try f.create("passwd", flags: O_RDWR) }
        // setattr on the symlink changes the symlink, never its target.
        #expect(throws: Errno.notSupported) { try f.fs.setattr(ctx, node: passwd.node, SetattrRequest(mode: 0o777)) }
        _ = try f.fs.setattr(ctx, node: passwd.node, SetattrRequest(mtime: .set(seconds: 1000, nanoseconds: 0)))
        #expect(f.dir.lstat("passwd")?.st_mtim.tv_sec == 1000)
        var target = stat()
        #expect(fstatat(DAXFS_AT_FDCWD, "/etc/passwd", &target, 0) == 0 && target.st_mtim.tv_sec != 1000)
        // Names a session would never pass.
        for bad in ["..", ".", "a/b", "", "/", "../etc"] { #expect(!isValidName(bad)) }
    }
}

@Suite struct MetadataTests {
    @Test func createWriteReadTruncate() throws {
        let f = try Fixture()
        let (entry, opened) = try f.create("file", mode: 0o640)
        #expect(f.fs.lookupCount(entry.node) == 1)
        #expect(entry.attr.mode == Mode.regular | 0o640)
        #expect(f.dir.lstat("file")?.st_mode == Mode.regular | 0o640)
        #expect(try f.write(entry.node, opened.handle, "hello world") == 11)
        #expect(f.dir.read("file") == "hello world")
        #expect(try f.read(entry.node, opened.handle, at: 6) == "world")
        #expect(try f.read(entry.node, opened.handle, at: 100) == "")
        #expect(try f.fs.getattr(ctx, node: entry.node, handle: opened.handle).attr.size == 11)

        var attr = try f.fs.setattr(ctx, node: entry.node, SetattrRequest(handle: opened.handle, size: 5))
        #expect(attr.attr.size == 5 && f.dir.read("file") == "hello")
        attr = try f.fs.setattr(ctx, node: entry.node, SetattrRequest(size: 2))
        #expect(attr.attr.size == 2 && f.dir.read("file") == "he")
        attr = try f.fs.setattr(ctx, node: entry.node, SetattrRequest(mode: 0o600))
        #expect(attr.attr.mode == Mode.regular | 0o600)
        attr = try f.fs.setattr(ctx, node: entry.node, SetattrRequest(atime: .set(seconds: 100, nanoseconds: 5), mtime: .set(seconds: 200, nanoseconds: 7)))
        #expect(attr.attr.atime == 100 && attr.attr.atimensec == 5 && attr.attr.mtime == 200 && attr.attr.mtimensec == 7)
        attr = try f.fs.setattr(ctx, node: entry.node, SetattrRequest(handle: opened.handle, mtime: .now))
        #expect(attr.attr.mtime > 200 && attr.attr.atime == 100)
        attr = try f.fs.setattr(ctx, node: entry.node, SetattrRequest(uid: 1234, gid: 5678))
        #expect(attr.attr.uid == 1234 && attr.attr.gid == 5678)
        #expect(f.dir.lstat("file")?.st_uid == 1234)

        // O_EXCL on an existing name.
        #expect(throws: Errno.exists) { try f.create("file", flags: O_RDWR | O_EXCL) }
        // O_TRUNC on open.
        let truncating = try f.open(entry.node, flags: O_WRONLY | O_TRUNC)
        #expect(f.dir.lstat("file")?.st_size == 0)
        // O_APPEND writes at the end whatever the offset.
        let appending = try f.open(entry.node, flags: O_WRONLY | O_APPEND)
        _ = try f.write(entry.node, truncating.handle, "abc")
        _ = try f.write(entry.node, appending.handle, "XY", at: 0)
        #expect(f.dir.read("file") == "abcXY")
        // The kernel's access mode is kept.
        let readOnly = try f.open(entry.node, flags: O_RDONLY)
        #expect(throws: Errno.badFileDescriptor) { try f.write(entry.node, readOnly.handle, "no") }
        try f.fs.fsync(ctx, node: entry.node, handle: opened.handle, datasync: false)
        try f.fs.fsync(ctx, node: entry.node, handle: opened.handle, datasync: true)
        try f.fs.flush(ctx, node: entry.node, handle: opened.handle, lockOwner: 1)
        for handle in [opened, truncating, appending, readOnly] { try f.release(entry.node, handle) }
    }

    @Test func modesAreExact() throws {
        let f = try Fixture()
        // The kernel already applied the caller's umask; the server's must not strip more.
        let (entry, opened) = try f.create("g", mode: 0o666)
        #expect(entry.attr.mode & 0o7777 == 0o666)
        let dir = try withName("d") { try f.fs.mkdir(ctx, parent: .root, name: $0, mode: 0o777, umask: 0) }
        #expect(dir.attr.mode == Mode.directory | 0o777)
        #expect(f.dir.lstat("d")?.st_mode == Mode.directory | 0o777)
        try f.release(entry.node, opened)
    }

    @Test func namespaceOperations() throws {
        let f = try Fixture()
        let dir = try withName("d") { try f.fs.mkdir(ctx, parent: .root, name: $0, mode: 0o750, umask: 0) }
        #expect(dir.attr.mode == Mode.directory | 0o750)
        #expect(f.dir.lstat("d")?.st_mode == Mode.directory | 0o750)

        let link = try withName("l") { name in try withCString("target/x") { try f.fs.symlink(ctx, parent: dir.node, name: name, target: $0) } }
        #expect(link.attr.mode & Mode.typeMask == Mode.symlink)
        #expect(try f.fs.readlink(ctx, node: link.node) == Array("target/x".utf8))
        #expect(throws: Errno.invalidArgument) { try f.fs.readlink(ctx, node: dir.node) }

        let fifo = try withName("p") { try f.fs.mknod(ctx, parent: .root, name: $0, mode: Mode.fifo | 0o600, rdev: 0, umask: 0) }
        #expect(fifo.attr.mode == Mode.fifo | 0o600)
        #expect(f.dir.lstat("p")?.st_mode == Mode.fifo | 0o600)

        let (file, opened) = try f.create("f")
        try f.release(file.node, opened)
        let hard = try withName("hard") { try f.fs.link(ctx, node: file.node, newParent: dir.node, newName: $0) }
        #expect(hard.node == file.node)
        #expect(hard.attr.nlink == 2)
        #expect(f.fs.lookupCount(file.node) == 2)

        // rename with flags
        f.dir.write("other", "o")
        #expect(throws: Errno.exists) {
            try withName("f") { a in try withName("other") { try f.fs.rename(ctx, parent: .root, name: a, newParent: .root, newName: $0, flags: DAXFS_RENAME_NOREPLACE) } }
        }
        try withName("f") { a in try withName("other") { try f.fs.rename(ctx, parent: .root, name: a, newParent: .root, newName: $0, flags: DAXFS_RENAME_EXCHANGE) } }
        #expect(f.dir.read("f") == "o" && f.dir.read("other") == "")
        try withName("other") { a in try withName("moved") { try f.fs.rename(ctx, parent: .root, name: a, newParent: dir.node, newName: $0, flags: 0) } }
        #expect(f.dir.exists("d/moved") && !f.dir.exists("other"))
        #expect(try f.lookup("moved", in: dir.node).node == file.node)

        #expect(throws: Errno.notEmpty) { try withName("d") { try f.fs.rmdir(ctx, parent: .root, name: $0) } }
        #expect(throws: Errno.isDirectory) { try withName("d") { try f.fs.unlink(ctx, parent: .root, name: $0) } }
        for name in ["l", "hard", "moved"] { try withName(name) { try f.fs.unlink(ctx, parent: dir.node, name: $0) } }
        try withName("d") { try f.fs.rmdir(ctx, parent: .root, name: $0) }
        #expect(!f.dir.exists("d"))
        #expect(throws: Errno.noEntry) { try withName("d") { try f.fs.rmdir(ctx, parent: .root, name: $0) } }
        // A node whose directory is gone still answers getattr.
        #expect(try f.fs.getattr(ctx, node: dir.node, handle: nil).attr.nlink == 0)
    }

    @Test(.enabled(if: geteuid() == 0)) func deviceNodes() throws {
        let f = try Fixture()
        // /dev/null is 1:3; FUSE carries new_encode_dev.
        let rdev: UInt32 = (1 << 8) | 3
        let node = try withName("null") { try f.fs.mknod(ctx, parent: .root, name: $0, mode: Mode.character | 0o666, rdev: rdev, umask: 0) }
        #expect(node.attr.rdev == rdev)
        let host = try #require(f.dir.lstat("null"))
        #expect(daxfs_major(UInt64(host.st_rdev)) == 1 && daxfs_minor(UInt64(host.st_rdev)) == 3)
        // A large minor round-trips too (minor 0x12345 on major 0x123).
        let big: UInt32 = (0x45) | (0x123 << 8) | (0x123 << 20)
        let other = try withName("big") { try f.fs.mknod(ctx, parent: .root, name: $0, mode: Mode.block | 0o600, rdev: big, umask: 0) }
        #expect(other.attr.rdev == big)
        let bigHost = try #require(f.dir.lstat("big"))
        #expect(daxfs_major(UInt64(bigHost.st_rdev)) == 0x123 && daxfs_minor(UInt64(bigHost.st_rdev)) == 0x12345)
    }

    @Test func deviceNumberEncoding() {
        for (major, minor) in [(0, 0), (1, 3), (8, 17), (0xfff, 0xfffff), (259, 0x12345)] as [(UInt32, UInt32)] {
            let dev = daxfs_makedev(major, minor)
            let encoded = DeviceNumber.encode(dev)
            #expect(encoded == (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12))
            #expect(DeviceNumber.decode(encoded) == dev)
        }
    }

    @Test func statfsAccessSync() throws {
        let f = try Fixture()
        let reply = try f.fs.statfs(ctx, node: .root)
        var host = statvfs()
        #expect(statvfs(f.dir.path, &host) == 0)
        #expect(reply.blocks == UInt64(host.f_blocks) && reply.bsize == UInt32(host.f_bsize) && reply.namelen == UInt32(host.f_namemax))
        f.dir.write("x", "", mode: 0o644)
        let entry = try f.lookup("x")
        try f.fs.access(ctx, node: entry.node, mask: UInt32(R_OK | W_OK))
        #expect(throws: Errno.permissionDenied) { try f.fs.access(ctx, node: entry.node, mask: UInt32(X_OK)) }
        try f.fs.syncfs(ctx, node: .root)
    }

    @Test func tmpfile() throws {
        let f = try Fixture()
        let (entry, opened) = try f.fs.tmpfile(ctx, parent: .root, mode: 0o600, flags: UInt32(O_RDWR), umask: 0)
        #expect(f.fs.lookupCount(entry.node) == 1)
        #expect(entry.attr.nlink == 0)
        #expect(try f.write(entry.node, opened.handle, "temp") == 4)
        #expect(try f.read(entry.node, opened.handle) == "temp")
        // Give it a name.
        let named = try withName("named") { try f.fs.link(ctx, node: entry.node, newParent: .root, newName: $0) }
        #expect(named.node == entry.node && named.attr.nlink == 1)
        #expect(f.dir.read("named") == "temp")
        try f.release(entry.node, opened)
    }

    @Test func killSuidgidOnOpen() throws {
        let f = try Fixture()
        f.dir.write("s", "data", mode: 0o755)
        #expect(chmod(f.dir.at("s"), 0o6755) == 0)
        let entry = try f.lookup("s")
        let opened = try f.fs.open(ctx, node: entry.node, flags: UInt32(O_WRONLY | O_TRUNC), killSuidgid: true)
        #expect(f.dir.lstat("s")?.st_mode == Mode.regular | 0o755)
        try f.release(entry.node, opened)
    }
}

@Suite struct DirectoryTests {
    @Test func readdirResumesAcrossCalls() throws {
        let f = try Fixture()
        let names = (0 ..< 100).map { "entry-\($0)" }
        for name in names { f.dir.write(name, "") }
        let opened = try f.fs.opendir(ctx, node: .root, flags: 0)
        var seen: [String] = []
        var offset: UInt64 = 0
        var calls = 0
        while true {
            let batch = try readdir(f.fs, handle: opened.handle, offset: offset, limit: 256, plus: false)
            if batch.isEmpty { break }
            calls += 1
            seen += batch.map(\.name)
            offset = batch[batch.count - 1].nextOffset
        }
        #expect(calls > 5)
        #expect(seen.sorted() == (names + [".", ".."]).sorted())

        // Resuming from an earlier offset (as after a seekdir) repeats the tail.
        let first = try readdir(f.fs, handle: opened.handle, offset: 0, limit: 256, plus: false)
        let resumed = try readdir(f.fs, handle: opened.handle, offset: first[2].nextOffset, limit: 256, plus: false)
        #expect(resumed.first?.name == first[3].name)
        // Offset 0 rewinds and sees new entries.
        f.dir.write("late", "")
        var all: [String] = []
        offset = 0
        while true {
            let batch = try readdir(f.fs, handle: opened.handle, offset: offset, limit: 4096, plus: false)
            if batch.isEmpty { break }
            all += batch.map(\.name)
            offset = batch[batch.count - 1].nextOffset
        }
        #expect(all.contains("late") && all.count == 103)
        try f.fs.fsyncdir(ctx, node: .root, handle: opened.handle, datasync: false)
        try f.fs.releasedir(ctx, node: .root, handle: opened.handle, flags: 0)
        #expect(throws: Errno.badFileDescriptor) { try readdir(f.fs, handle: opened.handle, offset: 0, limit: 256, plus: false) }
    }

    @Test func readdirplusTakesExactlyOneReferencePerAcceptedEntry() throws {
        let f = try Fixture()
        for index in 0 ..< 30 { f.dir.write("file-\(index)", "") }
        #expect(mkdir(f.dir.at("sub"), 0o755) == 0)
        let known = try f.lookup("file-0")
        let opened = try f.fs.opendir(ctx, node: .root, flags: 0)
        var listed: [ListedEntry] = []
        var offset: UInt64 = 0
        while true {
            // Room for two or three entries: many entries are tried and refused.
            let batch = try readdir(f.fs, handle: opened.handle, offset: offset, limit: 400, plus: true)
            if batch.isEmpty { break }
            listed += batch
            offset = batch[batch.count - 1].nextOffset
        }
        #expect(listed.count == 33)
        for entry in listed {
            if entry.name == "." || entry.name == ".." {
                #expect(entry.node == 0)
                continue
            }
            let host = try #require(f.dir.lstat(entry.name))
            #expect(entry.ino == UInt64(host.st_ino))
            let expected: UInt64 = entry.node == known.node.rawValue ? 2 : 1
            #expect(f.fs.lookupCount(NodeID(entry.node)) == expected, "\(entry.name)")
        }
        #expect(listed.first { $0.name == "sub" }?.type == DirentType.directory.rawValue)
        // Root + 31 nodes, each referenced once per accepted entry: nothing leaked.
        #expect(f.fs.nodeCount == 32)
        try f.fs.releasedir(ctx, node: .root, handle: opened.handle, flags: 0)
    }

    @Test func largeDirectoryPlusAndForget() throws {
        let f = try Fixture()
        let count = 2000
        for index in 0 ..< count { f.dir.write("n\(index)", "") }
        let opened = try f.fs.opendir(ctx, node: .root, flags: 0)
        var listed: [ListedEntry] = []
        var offset: UInt64 = 0
        while true {
            let batch = try readdir(f.fs, handle: opened.handle, offset: offset, limit: 4096, plus: true)
            if batch.isEmpty { break }
            listed += batch
            offset = batch[batch.count - 1].nextOffset
        }
        #expect(listed.count == count + 2)
        #expect(Set(listed.map(\.name)).count == count + 2)
        #expect(f.fs.nodeCount == count + 1)
        for entry in listed where entry.node != 0 { f.fs.forget(NodeID(entry.node), count: 1) }
        #expect(f.fs.nodeCount == 1)
        try f.fs.releasedir(ctx, node: .root, handle: opened.handle, flags: 0)
    }

    @Test func opendirModes() throws {
        let always = try Fixture(cache: .always)
        let opened = try always.fs.opendir(ctx, node: .root, flags: 0)
        #expect(opened.flags.contains(.cacheDir) && opened.flags.contains(.keepCache))
        let auto = try Fixture(cache: .auto)
        #expect(try auto.fs.opendir(ctx, node: .root, flags: 0).flags.isEmpty)
        auto.dir.write("f", "")
        let file = try auto.lookup("f")
        #expect(throws: Errno.notDirectory) { try auto.fs.opendir(ctx, node: file.node, flags: 0) }
    }
}

@Suite struct DataTests {
    @Test func sparseFilesSeekDataAndHole() throws {
        let f = try Fixture()
        let (entry, opened) = try f.create("sparse")
        let megabyte: UInt64 = 1 << 20
        #expect(try f.write(entry.node, opened.handle, String(repeating: "d", count: 4096), at: megabyte) == 4096)
        let data = try f.fs.lseek(ctx, node: entry.node, handle: opened.handle, offset: 0, whence: UInt32(DAXFS_SEEK_DATA))
        let hole = try f.fs.lseek(ctx, node: entry.node, handle: opened.handle, offset: megabyte, whence: UInt32(DAXFS_SEEK_HOLE))
        #expect(data <= megabyte && data % 4096 == 0)
        #expect(hole == megabyte + 4096)
        #expect(throws: Errno(ENXIO)) {
            try f.fs.lseek(ctx, node: entry.node, handle: opened.handle, offset: megabyte * 2, whence: UInt32(DAXFS_SEEK_DATA))
        }
        #expect(try f.fs.lseek(ctx, node: entry.node, handle: opened.handle, offset: 0, whence: UInt32(SEEK_END)) == megabyte + 4096)
        // Reads of a hole are zeros; a read straddling EOF is short.
        #expect(try f.read(entry.node, opened.handle, at: 10, count: 4) == "\0\0\0\0")
        #expect(try f.read(entry.node, opened.handle, at: megabyte + 4090, count: 100).count == 6)
        try f.release(entry.node, opened)
    }

    @Test func directOpensUseUnalignedBuffers() throws {
        let f = try Fixture()
        let (entry, opened) = try f.create("direct", flags: O_RDWR | DAXFS_O_DIRECT)
        #expect(try f.write(entry.node, opened.handle, "unaligned", at: 3) == 9)
        #expect(try f.read(entry.node, opened.handle, at: 3, count: 9) == "unaligned")
        let again = try f.open(entry.node, flags: O_RDONLY | DAXFS_O_DIRECT)
        #expect(try f.read(entry.node, again.handle, at: 5, count: 3) == "ali")
        try f.release(entry.node, opened)
        try f.release(entry.node, again)
    }

    @Test func fallocateAndCopyFileRange() throws {
        let f = try Fixture()
        let (source, input) = try f.create("source")
        let (target, output) = try f.create("target")
        _ = try f.write(source.node, input.handle, "0123456789")
        try f.fs.fallocate(ctx, node: target.node, handle: output.handle, offset: 0, length: 65536, mode: 0)
        #expect(f.dir.lstat("target")?.st_size == 65536)
        let copied = try f.fs.copyFileRange(ctx, nodeIn: source.node, handleIn: input.handle, offsetIn: 2,
                                            nodeOut: target.node, handleOut: output.handle, offsetOut: 100, length: 5, flags: 0)
        #expect(copied == 5)
        #expect(try f.read(target.node, output.handle, at: 100, count: 5) == "23456")
        #expect(throws: Errno.invalidArgument) {
            try f.fs.copyFileRange(ctx, nodeIn: source.node, handleIn: input.handle, offsetIn: 0,
                                   nodeOut: target.node, handleOut: output.handle, offsetOut: 0, length: 5, flags: 1)
        }
        // Punch a hole, keeping the size.
        try f.fs.fallocate(ctx, node: target.node, handle: output.handle, offset: 100, length: 5, mode: 0x01 | 0x02)
        #expect(try f.read(target.node, output.handle, at: 100, count: 5) == "\0\0\0\0\0")
        #expect(f.dir.lstat("target")?.st_size == 65536)
        try f.release(source.node, input)
        try f.release(target.node, output)
    }

    @Test func xattrSizeProtocol() throws {
        let f = try Fixture()
        let (entry, opened) = try f.create("x")
        try f.release(entry.node, opened)
        let value = Array("hello".utf8)
        do {
            try withCString("user.test") { name in
                try value.withUnsafeBytes { try f.fs.setxattr(ctx, node: entry.node, name: name, value: $0, flags: 0, setxattrFlags: 0) }
            }
        } catch let error as Errno where error == .notSupported {
            return // /tmp without user xattrs
        }
        try withCString("user.test") { name in
            #expect(try f.fs.getxattr(ctx, node: entry.node, name: name, into: nil) == 5)
            var small = [UInt8](repeating: 0, count: 2)
            #expect(throws: Errno.range) { try small.withUnsafeMutableBytes { try f.fs.getxattr(ctx, node: entry.node, name: name, into: $0) } }
            var buffer = [UInt8](repeating: 0, count: 16)
            let count = try buffer.withUnsafeMutableBytes { try f.fs.getxattr(ctx, node: entry.node, name: name, into: $0) }
            #expect(Array(buffer[..<count]) == value)
            #expect(throws: Errno.exists) {
                try value.withUnsafeBytes { try f.fs.setxattr(ctx, node: entry.node, name: name, value: $0, flags: 1 /* XATTR_CREATE */, setxattrFlags: 0) }
            }
        }
        let listSize = try f.fs.listxattr(ctx, node: entry.node, into: nil)
        var list = [UInt8](repeating: 0, count: listSize)
        let listed = try list.withUnsafeMutableBytes { try f.fs.listxattr(ctx, node: entry.node, into: $0) }
        #expect(String(decoding: list[..<listed], as: UTF8.self).split(separator: "\0").contains("user.test"))
        try withCString("user.test") { try f.fs.removexattr(ctx, node: entry.node, name: $0) }
        _ = withCString("user.test") { name in
            #expect(throws: Errno.noData) { try f.fs.getxattr(ctx, node: entry.node, name: name, into: nil) }
        }
        // Symlinks: the symlink itself, like lgetxattr (user.* is refused there).
        #expect(symlink("x", f.dir.at("link")) == 0)
        let link = try f.lookup("link")
        _ = withCString("user.test") { name in
            #expect(throws: Errno.notPermitted) {
                try value.withUnsafeBytes { try f.fs.setxattr(ctx, node: link.node, name: name, value: $0, flags: 0, setxattrFlags: 0) }
            }
        }
        // Disabled: ENOSYS, so the kernel stops asking.
        let off = try PassthroughFS(root: f.dir.path, options: .init(xattr: false))
        _ = withCString("user.test") { name in
            #expect(throws: Errno.notImplemented) { try off.getxattr(ctx, node: .root, name: name, into: nil) }
        }
    }

    @Test func cacheModeOpenFlags() throws {
        let never = try Fixture(cache: .never)
        let (entry, opened) = try never.create("f")
        #expect(opened.flags.contains(.directIO))
        try never.release(entry.node, opened)
        let always = try Fixture(cache: .always)
        let (other, kept) = try always.create("f")
        #expect(kept.flags == .keepCache && always.fs.lookupCount(other.node) == 1)
        let auto = try Fixture(cache: .auto)
        #expect(try auto.create("f").1.flags.isEmpty)
    }
}

@Suite struct PassthroughTests {
    @Test func backingIDsPerInodeRefcounted() throws {
        let backing = FakeBacking()
        let f = try Fixture(cache: .never, passthrough: true, backing: backing)
        let (entry, first) = try f.create("f")
        #expect(first.flags == .passthrough && first.backingID == 1)
        let second = try f.open(entry.node, flags: O_RDONLY)
        #expect(second.flags == .passthrough && second.backingID == 1)
        #expect(backing.registrations == 1)
        try f.release(entry.node, first)
        #expect(backing.openIDs == [1])
        try f.release(entry.node, second)
        #expect(backing.openIDs.isEmpty)
        // Directories and non-regular files never go passthrough.
        let dir = try f.fs.opendir(ctx, node: .root, flags: 0)
        #expect(!dir.flags.contains(.passthrough))
        // A new open registers again.
        let third = try f.open(entry.node)
        #expect(third.backingID == 2 && backing.openIDs == [2])
        try f.release(entry.node, third)
    }

    @Test func permissionFailureDisablesPassthrough() throws {
        let backing = FakeBacking(failure: .notPermitted)
        let f = try Fixture(cache: .never, passthrough: true, backing: backing)
        let (entry, opened) = try f.create("f")
        #expect(opened.flags == [.directIO, .parallelDirectWrites] && opened.backingID == 0)
        let (_, other) = try f.create("g")
        #expect(!other.flags.contains(.passthrough))
        #expect(backing.registrations == 1)
        try f.release(entry.node, opened)
    }

    @Test func otherFailureFallsBackPerFile() throws {
        let backing = FakeBacking(failure: .loop)
        let f = try Fixture(passthrough: true, backing: backing)
        let (entry, opened) = try f.create("f")
        #expect(opened.flags.isEmpty)
        _ = try f.open(entry.node)
        #expect(backing.registrations == 1) // not retried for this inode
        _ = try f.create("g")
        #expect(backing.registrations == 2) // but tried for another one
    }

    @Test func destroyReleasesEverything() throws {
        let backing = FakeBacking()
        let f = try Fixture(passthrough: true, backing: backing)
        let (entry, opened) = try f.create("f")
        _ = try f.fs.opendir(ctx, node: .root, flags: 0)
        #expect(backing.openIDs.count == 1)
        f.fs.destroy()
        #expect(backing.openIDs.isEmpty)
        #expect(f.fs.nodeCount == 1)
        #expect(throws: Errno.badFileDescriptor) { try f.read(entry.node, opened.handle) }
        #expect(throws: Errno.staleHandle) { try f.fs.getattr(ctx, node: entry.node, handle: nil) }
        _ = try f.fs.getattr(ctx, node: .root, handle: nil)
    }

    @Test func disabledByOption() throws {
        let backing = FakeBacking()
        let f = try Fixture(passthrough: false, backing: backing)
        #expect(!f.fs.wantedCapabilities.contains(.passthrough))
        #expect(try f.create("f").1.flags.isEmpty)
        #expect(backing.registrations == 0)
    }
}

@Suite struct LockTests {
    @Test func posixOwnersConflict() throws {
        let f = try Fixture()
        let (entry, a) = try f.create("f")
        let b = try f.open(entry.node)
        let whole = LockRange(start: 0, end: UInt64(Int64.max), type: UInt32(F_WRLCK), pid: 100)
        try f.fs.setlk(ctx, node: entry.node, handle: a.handle, owner: 1, lock: whole, wait: false, isFlock: false)
        // Same owner: relocking and converting is fine.
        try f.fs.setlk(ctx, node: entry.node, handle: a.handle, owner: 1, lock: whole, wait: false, isFlock: false)
        try f.fs.setlk(ctx, node: entry.node, handle: b.handle, owner: 1,
                       lock: LockRange(start: 0, end: 9, type: UInt32(F_RDLCK), pid: 100), wait: false, isFlock: false)
        // Owner 2 conflicts, whichever handle it uses.
        let probe = LockRange(start: 5, end: 5, type: UInt32(F_WRLCK), pid: 200)
        #expect(throws: Errno.wouldBlock) {
            try f.fs.setlk(ctx, node: entry.node, handle: b.handle, owner: 2, lock: probe, wait: false, isFlock: false)
        }
        let conflict = try f.fs.getlk(ctx, node: entry.node, handle: b.handle, owner: 2, lock: probe)
        #expect(conflict.type == UInt32(F_RDLCK) && conflict.start == 0 && conflict.end == 9 && conflict.pid == 100)
        let beyond = try f.fs.getlk(ctx, node: entry.node, handle: b.handle, owner: 2, lock: LockRange(start: 20, end: 30, type: UInt32(F_WRLCK)))
        #expect(beyond.type == UInt32(F_WRLCK) && beyond.start == 10 && beyond.end == UInt64(Int64.max))
        // The owner sees no conflict with itself.
        #expect(try f.fs.getlk(ctx, node: entry.node, handle: a.handle, owner: 1, lock: probe).type == UInt32(F_UNLCK))
        // A host process's POSIX lock test sees the lock too.
        let hostFD = Glibc.open(f.dir.at("f"), O_RDWR)
        var test = RecordLock(type: Int16(F_WRLCK), start: 0, length: 0)
        test = try Syscall.fcntlLock(hostFD, command: F_GETLK, test)
        #expect(test.type != Int16(F_UNLCK))
        Glibc.close(hostFD)

        // Unlocking a range lets owner 2 in there.
        try f.fs.setlk(ctx, node: entry.node, handle: a.handle, owner: 1,
                       lock: LockRange(start: 0, end: 9, type: UInt32(F_UNLCK)), wait: false, isFlock: false)
        try f.fs.setlk(ctx, node: entry.node, handle: b.handle, owner: 2, lock: probe, wait: false, isFlock: false)
        // Flush of owner 1 (its close) drops the rest of its locks.
        try f.fs.flush(ctx, node: entry.node, handle: a.handle, lockOwner: 1)
        try f.fs.setlk(ctx, node: entry.node, handle: b.handle, owner: 2,
                       lock: LockRange(start: 100, end: 200, type: UInt32(F_WRLCK), pid: 200), wait: false, isFlock: false)
        // Lock types must match the handle's access mode.
        let readOnly = try f.open(entry.node, flags: O_RDONLY)
        #expect(throws: Errno.badFileDescriptor) {
            try f.fs.setlk(ctx, node: entry.node, handle: readOnly.handle, owner: 3,
                           lock: LockRange(start: 1000, end: 1000, type: UInt32(F_WRLCK)), wait: false, isFlock: false)
        }
        try f.release(entry.node, a, lockOwner: 1)
        try f.release(entry.node, b, lockOwner: 2)
        try f.release(entry.node, readOnly)
    }

    @Test func waitingLockIsGrantedWhenReleased() throws {
        let f = try Fixture()
        let (entry, a) = try f.create("f")
        let b = try f.open(entry.node)
        let lock = LockRange(start: 0, end: 0, type: UInt32(F_WRLCK), pid: 1)
        try f.fs.setlk(ctx, node: entry.node, handle: a.handle, owner: 1, lock: lock, wait: false, isFlock: false)
        let releaser = try OSThread(name: "release") {
            usleep(30_000)
            try? f.fs.flush(ctx, node: entry.node, handle: a.handle, lockOwner: 1)
        }
        try f.fs.setlk(ctx, node: entry.node, handle: b.handle, owner: 2, lock: lock, wait: true, isFlock: false)
        releaser.join()
        #expect(throws: Errno.wouldBlock) {
            try f.fs.setlk(ctx, node: entry.node, handle: a.handle, owner: 1, lock: lock, wait: false, isFlock: false)
        }
        try f.release(entry.node, a)
        try f.release(entry.node, b)
    }

    /// Found by fuzz-fuse-session (Fuzz/Corpus/fuzz-fuse-session/regression-lock-type):
    /// a lock type past Int32.max trapped in the conversion instead of failing.
    @Test func lockTypesPastInt32AreInvalid() throws {
        let f = try Fixture()
        let (entry, a) = try f.create("f")
        let lock = LockRange(start: 0, end: 9, type: 0x8000_0000 | UInt32(F_WRLCK))
        for isFlock in [false, true] {
            #expect(throws: Errno.invalidArgument) {
                try f.fs.setlk(ctx, node: entry.node, handle: a.handle, owner: 1, lock: lock, wait: false, isFlock: isFlock)
            }
        }
        #expect(throws: Errno.invalidArgument) { _ = try f.fs.getlk(ctx, node: entry.node, handle: a.handle, owner: 1, lock: lock) }
        try f.release(entry.node, a)
    }

    @Test func flockLocks() throws {
        let f = try Fixture()
        let (entry, a) = try f.create("f")
        let b = try f.open(entry.node)
        let exclusive = LockRange(type: UInt32(F_WRLCK))
        let shared = LockRange(type: UInt32(F_RDLCK))
        try f.fs.setlk(ctx, node: entry.node, handle: a.handle, owner: 1, lock: exclusive, wait: false, isFlock: true)
        #expect(throws: Errno.wouldBlock) {
            try f.fs.setlk(ctx, node: entry.node, handle: b.handle, owner: 2, lock: shared, wait: false, isFlock: true)
        }
        try f.fs.setlk(ctx, node: entry.node, handle: a.handle, owner: 1, lock: shared, wait: false, isFlock: true)
        try f.fs.setlk(ctx, node: entry.node, handle: b.handle, owner: 2, lock: shared, wait: false, isFlock: true)
        try f.fs.setlk(ctx, node: entry.node, handle: b.handle, owner: 2, lock: LockRange(type: UInt32(F_UNLCK)), wait: false, isFlock: true)
        // Release with flockRelease drops a's lock.
        try f.fs.release(ctx, node: entry.node, handle: a.handle, flags: 0, lockOwner: 1, flush: false, flockRelease: true)
        try f.fs.setlk(ctx, node: entry.node, handle: b.handle, owner: 2, lock: exclusive, wait: false, isFlock: true)
        try f.release(entry.node, b)
    }
}

/// FUSE_HANDLE_KILLPRIV_V2 asks the server to clear set-id bits; only a
/// caller who may write the file has them cleared, as natively (a write or
/// truncation by a writer), and the server's own credentials are used for
/// the chmod alone. Requests as uid 65534 run on a thread of their own: a
/// request leaves its thread with the caller's credentials.
@Suite struct SetIDClearingTests {
    func mode(_ f: Fixture, _ name: String) -> UInt32 {
        var info = stat()
        return stat(f.dir.at(name), &info) == 0 ? UInt32(info.st_mode) & 0o7777 : 0
    }

    static let nobody = RequestContext(uid: 65534, gid: 65534)

    /// A root-owned file `name` with `mode` (set-id bits included), and its node.
    func makeFile(_ f: Fixture, _ name: String, mode: mode_t) throws -> NodeID {
        f.dir.write(name, "#!/bin/sh\n", mode: mode & 0o777)
        #expect(chmod(f.dir.at(name), mode) == 0)
        return try f.lookup(name).node
    }

    @Test func callersWhoMayNotWriteKeepTheBits() throws {
        guard getuid() == 0 else { print("skipped: needs root to act as uid 65534"); return }
        let f = try Fixture()
        let node = try makeFile(f, "suid", mode: 0o4755)
        let fs = f.fs, nobody = Self.nobody
        // A read-only open that asks for the kill.
        let opened = try onItsOwnThread { () throws(Errno) in try fs.open(nobody, node: node, flags: UInt32(O_RDONLY), killSuidgid: true) }
        #expect(mode(f, "suid") == 0o4755)
        try f.release(node, opened)
        // A SETATTR that carries only the kill flag.
        _ = try? onItsOwnThread { () throws(Errno) in try fs.setattr(nobody, node: node, SetattrRequest(killSuidgid: true)) }
        #expect(mode(f, "suid") == 0o4755)
        // nobody still cannot open root's 0755 file for writing.
        #expect(throws: Errno.permissionDenied) {
            _ = try onItsOwnThread { () throws(Errno) in try fs.open(nobody, node: node, flags: UInt32(O_WRONLY), killSuidgid: false) }
        }
    }

    @Test func writersLoseTheBits() throws {
        guard getuid() == 0 else { print("skipped: needs root to act as uid 65534"); return }
        let f = try Fixture()
        let node = try makeFile(f, "shared", mode: 0o6757)
        let fs = f.fs, nobody = Self.nobody
        // The chmod runs as the server, the rest of the open as the caller:
        // after the kill, the same thread cannot chmod root's file itself.
        let rootFD = open(f.dir.at("shared"), O_RDONLY | O_CLOEXEC)
        defer { close(rootFD) }
        let (opened, chmodAfter) = try onItsOwnThread { () throws(Errno) -> (Opened, Int32) in
            let opened = try fs.open(nobody, node: node, flags: UInt32(O_WRONLY), killSuidgid: true)
            return (opened, fchmod(rootFD, 0o6777) == 0 ? 0 : daxfs_errno())
        }
        #expect(chmodAfter == EPERM, "the caller's thread kept the server's credentials")
        // setuid goes; setgid goes too, the group may execute.
        #expect(mode(f, "shared") == 0o0757)
        try f.release(node, opened)
        var info = stat()
        #expect(stat(f.dir.at("shared"), &info) == 0 && info.st_uid == 0)
        // A SETATTR with only the flag from a caller who may write clears it too.
        #expect(chmod(f.dir.at("shared"), 0o4757) == 0)
        _ = try onItsOwnThread { () throws(Errno) in try fs.setattr(nobody, node: node, SetattrRequest(killSuidgid: true)) }
        #expect(mode(f, "shared") == 0o0757)
    }
}

/// DAX mappings share one descriptor per file and mode once opened; each
/// SETUPMAPPING still checks its own caller (Linux sends no handle).
@Suite struct MappingPermissionTests {
    @Test func aCachedDescriptorIsNotHandedToCallersWithoutAccess() throws {
        guard getuid() == 0 else { print("skipped: needs root to act as uid 65534"); return }
        let f = try Fixture()
        f.dir.write("secret", "root only", mode: 0o600)
        f.dir.write("public", "read by all", mode: 0o644)
        let secret = try f.lookup("secret").node, open = try f.lookup("public").node
        let fs = f.fs
        let nobody = RequestContext(uid: 65534, gid: 65534)
        // root maps both, read and write: the descriptors are cached.
        _ = try fs.mappingDescriptor(ctx, node: secret, handle: nil, writable: true)
        _ = try fs.mappingDescriptor(ctx, node: open, handle: nil, writable: true)
        #expect(throws: Errno.permissionDenied) {
            _ = try onItsOwnThread { () throws(Errno) in try fs.mappingDescriptor(nobody, node: secret, handle: nil, writable: false) }
        }
        #expect(throws: Errno.permissionDenied) {
            _ = try onItsOwnThread { () throws(Errno) in try fs.mappingDescriptor(nobody, node: open, handle: nil, writable: true) }
        }
        // What nobody may do, nobody gets.
        _ = try onItsOwnThread { () throws(Errno) in try fs.mappingDescriptor(nobody, node: open, handle: nil, writable: false) }
    }
}

/// Open files, directories and lock owners cost descriptors the client
/// chooses to spend: past its budget it gets EMFILE, and what it closes
/// comes back (each `daxfs serve` frontend has a budget of its own).
@Suite struct DescriptorBudgetTests {
    @Test func aClientPastItsBudgetGetsEMFILEAndClosingGivesItBack() throws {
        let f = try Fixture(openDescriptorLimit: 6)
        f.dir.write("a", "x")
        #expect(mkdir(f.dir.at("d"), 0o755) == 0)
        let file = try f.lookup("a").node, directory = try f.lookup("d").node
        var files: [Opened] = []
        for _ in 0 ..< 3 { files.append(try f.fs.open(ctx, node: file, flags: UInt32(O_RDWR), killSuidgid: false)) }
        let dir = try f.fs.opendir(ctx, node: directory, flags: 0)
        // Two lock owners on one handle: a descriptor each.
        for owner: UInt64 in [1, 2] {
            try f.fs.setlk(ctx, node: file, handle: files[0].handle, owner: owner,
                           lock: LockRange(start: owner * 10, end: owner * 10 + 5, type: UInt32(F_WRLCK), pid: 1), wait: false, isFlock: false)
        }
        #expect(throws: Errno(EMFILE)) { _ = try f.fs.open(ctx, node: file, flags: UInt32(O_RDONLY), killSuidgid: false) }
        #expect(throws: Errno(EMFILE)) { _ = try f.fs.opendir(ctx, node: directory, flags: 0) }
        #expect(throws: Errno(EMFILE)) { _ = try withName("b") { try f.fs.create(ctx, parent: .root, name: $0, mode: 0o644, flags: UInt32(O_RDWR), umask: 0, killSuidgid: false) } }
        #expect(f.dir.read("b") == nil, "a refused create left a file")
        try f.fs.releasedir(ctx, node: directory, handle: dir.handle, flags: 0)
        let again = try f.fs.open(ctx, node: file, flags: UInt32(O_RDONLY), killSuidgid: false)
        try f.release(file, again)
        // Closing the handle drops its lock owners and their descriptors too.
        for opened in files { try f.release(file, opened, lockOwner: 1) }
        for _ in 0 ..< 6 { files.append(try f.fs.open(ctx, node: file, flags: UInt32(O_RDONLY), killSuidgid: false)) }
    }
}

/// A READDIRPLUS reply hands the kernel a lookup reference per entry; one
/// that cannot be delivered gives them all back (the `FileSystem` contract).
@Suite struct UndeliverableReplyTests {
    @Test func anUndeliveredReaddirplusForgetsItsEntries() throws {
        let f = try Fixture()
        for name in ["a", "b", "c"] { f.dir.write(name, name) }
        let session = FUSESession(fileSystem: f.fs, options: SessionOptions())
        let reply = ReplyBuffer(capacity: 1 << 20)
        var unique: UInt64 = 1
        func send(_ opcode: FUSEOpcode, _ body: [UInt8]) -> (ReplyOutcome, OutHeader) {
            let header = InHeader(len: UInt32(InHeader.wireSize + body.count), opcode: opcode.rawValue, unique: unique, nodeid: 1)
            unique += 1
            let message = header.wireBytes + body
            let outcome = message.withUnsafeBytes { session.handle($0, reply: reply) }
            return (outcome, try! OutHeader(wireBytes: Array(reply.storage[0 ..< OutHeader.wireSize])))
        }
        #expect(send(.`init`, InitIn(major: 7, minor: 45, maxReadahead: 1 << 17, flags: UInt32.max, flags2: UInt32.max).wireBytes).1.error == 0)
        let baseline = f.fs.nodeCount
        let (opened, openHeader) = send(.opendir, OpenIn(flags: UInt32(O_RDONLY | O_DIRECTORY)).wireBytes)
        #expect(openHeader.error == 0 && opened.length > 0)
        let handle = reply.storage.loadUnaligned(fromByteOffset: OutHeader.wireSize, as: UInt64.self)
        let (listing, listHeader) = send(.readdirplus, ReadWriteIn(fh: handle, offset: 0, size: 64 << 10).wireBytes)
        #expect(listHeader.error == 0)
        #expect(f.fs.nodeCount == baseline + 3, "three entries looked up")
        session.undeliverable(listing)
        #expect(f.fs.nodeCount == baseline, "the undelivered entries are still referenced")
    }
}
