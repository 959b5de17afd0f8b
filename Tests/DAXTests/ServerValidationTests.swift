import DAX
@_spi(Testing) import DaxClient
import FUSEABI
import FUSEServer
import Foundation
import Glibc
import HostSystem
import PassthroughFS
import Testing

/// Every bad SETUPMAPPING/REMOVEMAPPING is refused with its errno and leaves
/// the window as it was: the good mapping still reads the file, and the
/// probe range (never mapped) is still inaccessible.
@Suite("Server validation of SETUPMAPPING and REMOVEMAPPING")
struct ServerValidationTests {
    static let page = UInt64(HostPage.size)
    static let windowSize: UInt64 = 1 << 20
    static let mapped: UInt64 = 64 << 10
    /// A window offset no good request ever maps.
    static let probe: UInt64 = 512 << 10

    final class Rig {
        let dir = TempDir("validate")
        let window: LocalWindow
        let fuse: FUSEClient
        let node: NodeID
        let content = pattern(Int(ServerValidationTests.mapped))

        init(alignment: UInt16? = nil) throws {
            try hostWrite(dir.file("f"), content)
            window = try LocalWindow(size: ServerValidationTests.windowSize)
            let fs = try PassthroughFS(root: dir.path, options: PassthroughFS.Options(passthrough: false, logger: quietLogger))
            var options = SessionOptions()
            options.mapAlignmentLog2 = alignment
            let session = FUSESession(fileSystem: fs, options: options, logger: quietLogger, window: window)
            fuse = FUSEClient(channel: EmbeddedChannel(session: session))
            _ = try fuse.initialize(flags: [.mapAlignment])
            node = NodeID(try fuse.lookup(parent: .root, name: "f").nodeid)
            try fuse.setupMapping(node, fileOffset: 0, windowOffset: 0, length: ServerValidationTests.mapped, writable: false)
        }

        /// The reply error of a raw SETUPMAPPING (0 = success).
        func setup(node: NodeID? = nil, fh: UInt64 = .max, foffset: UInt64 = 0, len: UInt64 = ServerValidationTests.page,
                   flags: UInt64 = FUSEFlag.setupMappingRead, moffset: UInt64 = ServerValidationTests.probe) throws -> Int32 {
            let input = SetupMappingIn(fh: fh, foffset: foffset, len: len, flags: flags, moffset: moffset)
            return try fuse.rawRequest(.setupMapping, node: node ?? self.node, arguments: input.wireBytes)
        }

        func remove(count: UInt32, _ ranges: [(UInt64, UInt64)], extra: [UInt8] = []) throws -> Int32 {
            var bytes = RemoveMappingIn(count: count).wireBytes
            for (moffset, len) in ranges { bytes += RemoveMappingOne(moffset: moffset, len: len).wireBytes }
            return try fuse.rawRequest(.removeMapping, node: node, arguments: bytes + extra)
        }

        /// The window is as the good mapping left it.
        func expectUnchanged(_ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(same(windowBytes(window, at: 0, count: content.count), content), "\(what): the mapped range changed", sourceLocation: sourceLocation)
            #expect(!isReadable(window.base + Int(ServerValidationTests.probe)), "\(what): the probe range became accessible", sourceLocation: sourceLocation)
            #expect(!isReadable(window.base + Int(ServerValidationTests.mapped)), "\(what): the page after the mapping became accessible", sourceLocation: sourceLocation)
        }
    }

    /// Ranges can map 2 MiB page-cache folios with one page-table entry only
    /// when the window starts on a 2 MiB boundary.
    @Test(arguments: [UInt64(4096), UInt64(1 << 20 | 4096), UInt64(6 << 20)])
    func windowStartsOnAHugePageBoundary(size: UInt64) throws {
        let dir = TempDir("align")
        try hostWrite(dir.file("f"), pattern(Int(size)))
        let window = try LocalWindow(size: size)
        #expect(UInt(bitPattern: window.base) % UInt(LocalWindow.baseAlignment) == 0)
        let fd = open(dir.file("f"), O_RDONLY)
        defer { close(fd) }
        // The last page is part of the window.
        try window.map(fd: fd, fileOffset: size - Self.page, windowOffset: size - Self.page, length: Self.page, writable: false)
        let last = UnsafeRawBufferPointer(start: window.base + Int(size - Self.page), count: Int(Self.page))
        #expect(Array(last) == pattern(Int(size))[Int(size - Self.page)...].map { $0 })
        try window.unmap(windowOffset: size - Self.page, length: Self.page)
    }

    @Test func badSetupMappingsAreRefusedAndChangeNothing() throws {
        let rig = try Rig()
        rig.expectUnchanged("after the good mapping")
        let page = Self.page, window = Self.windowSize
        let cases: [(String, () throws -> Int32, Errno)] = [
            ("moffset at the end of the window", { try rig.setup(moffset: window) }, .invalidArgument),
            ("range crossing the end of the window", { try rig.setup(len: 2 * page, moffset: window - page) }, .invalidArgument),
            ("moffset + len wraps around", { try rig.setup(len: 2 * page, moffset: UInt64.max - page + 1) }, .invalidArgument),
            ("foffset + len wraps around", { try rig.setup(foffset: UInt64.max & ~(page - 1)) }, .invalidArgument),
            ("foffset beyond off_t", { try rig.setup(foffset: UInt64(Int64.max) + 1) }, .invalidArgument),
            ("misaligned foffset", { try rig.setup(foffset: 100) }, .invalidArgument),
            ("misaligned moffset", { try rig.setup(moffset: Self.probe + 100) }, .invalidArgument),
            ("misaligned len", { try rig.setup(len: 100) }, .invalidArgument),
            ("len 0", { try rig.setup(len: 0) }, .invalidArgument),
            ("unknown flag bit 2", { try rig.setup(flags: FUSEFlag.setupMappingRead | 1 << 2) }, .invalidArgument),
            ("unknown flag bit 63", { try rig.setup(flags: 1 << 63) }, .invalidArgument),
            ("a handle that was never opened", { try rig.setup(fh: 12345) }, .badFileDescriptor),
        ]
        for (what, request, expected) in cases {
            let error = try request()
            #expect(error == -expected.rawValue, "\(what): got \(error), expected -\(expected.rawValue)")
            rig.expectUnchanged(what)
        }
        // An unknown inode: the node table has no such id.
        let unknown = try rig.setup(node: NodeID(999_999))
        #expect(unknown == -Errno.staleHandle.rawValue || unknown == -Errno.noEntry.rawValue, "unknown inode: got \(unknown)")
        rig.expectUnchanged("unknown inode")

        // And a good request still works at the probe offset afterwards.
        #expect(try rig.setup(len: Self.mapped) == 0)
        #expect(same(windowBytes(rig.window, at: Self.probe, count: rig.content.count), rig.content))
    }

    @Test func badRemoveMappingsAreRefusedAndUnmapNothing() throws {
        let rig = try Rig()
        let page = Self.page
        let cases: [(String, () throws -> Int32)] = [
            ("count larger than the message", { try rig.remove(count: 2, [(0, Self.mapped)]) }),
            ("count far larger than the message", { try rig.remove(count: .max, [(0, Self.mapped)]) }),
            ("a truncated range", { try rig.remove(count: 1, [], extra: [0, 0, 0, 0, 0, 0, 0, 0]) }),
            ("a misaligned range after a good one", { try rig.remove(count: 2, [(0, Self.mapped), (Self.probe + 100, page)]) }),
            ("a range outside the window after a good one", { try rig.remove(count: 2, [(0, Self.mapped), (Self.windowSize, page)]) }),
            ("a wrapping range after a good one", { try rig.remove(count: 2, [(0, Self.mapped), (UInt64.max - page + 1, 2 * page)]) }),
            ("a zero-length range", { try rig.remove(count: 2, [(0, Self.mapped), (0, 0)]) }),
            ("a misaligned length", { try rig.remove(count: 1, [(0, 100)]) }),
        ]
        for (what, request) in cases {
            let error = try request()
            #expect(error == -Errno.invalidArgument.rawValue, "\(what): got \(error)")
            rig.expectUnchanged(what)
        }
        // Removing nothing is fine; removing the mapping makes it inaccessible.
        #expect(try rig.remove(count: 0, []) == 0)
        rig.expectUnchanged("an empty REMOVEMAPPING")
        #expect(try rig.remove(count: 1, [(0, Self.mapped)]) == 0)
        #expect(!isReadable(rig.window.base))
    }

    @Test func coarserServerAlignmentIsEnforced() throws {
        // A server acting as a 64 KiB-page host: 4 KiB-aligned offsets are refused.
        let rig = try Rig(alignment: 16)
        #expect(try rig.setup(len: 64 << 10, moffset: Self.probe + 4096) == -Errno.invalidArgument.rawValue)
        #expect(try rig.setup(foffset: 4096, len: 64 << 10) == -Errno.invalidArgument.rawValue)
        #expect(try rig.setup(len: 4096) == -Errno.invalidArgument.rawValue)
        rig.expectUnchanged("16-bit alignment refusals")
        #expect(try rig.setup(len: 64 << 10) == 0)
    }

    @Test func writableMappingOfAReadOnlyFileIsRefused() throws {
        let rig = try Rig()
        let path = rig.dir.file("ro")
        try hostWrite(path, pattern(8192))
        // Root opens anything for writing unless the file is immutable.
        var how = "chmod 0444"
        if geteuid() == 0 {
            how = "chattr +i"
            guard runTool("/usr/bin/chattr", ["+i", path]) else {
                print("skipped: chattr +i failed on \(path) (filesystem without immutable files?)")
                return
            }
        } else {
            chmod(path, 0o444)
        }
        defer { if how == "chattr +i" { _ = runTool("/usr/bin/chattr", ["-i", path]) } }
        let node = NodeID(try rig.fuse.lookup(parent: .root, name: "ro").nodeid)
        let writable = try rig.setup(node: node, flags: FUSEFlag.setupMappingRead | FUSEFlag.setupMappingWrite)
        #expect(writable == -Errno.permissionDenied.rawValue, "writable mapping of a read-only file (\(how)): got \(writable)")
        rig.expectUnchanged("writable mapping of a read-only file")
        // Read-only is fine.
        #expect(try rig.setup(node: node, len: 8192, flags: FUSEFlag.setupMappingRead) == 0)
        #expect(same(windowBytes(rig.window, at: Self.probe, count: 8192), pattern(8192)))
    }
}

/// Runs a program and reports whether it exited 0.
func runTool(_ path: String, _ arguments: [String]) -> Bool {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    process.standardError = FileHandle.nullDevice
    do { try process.run() } catch { return false }
    process.waitUntilExit()
    return process.terminationStatus == 0
}
