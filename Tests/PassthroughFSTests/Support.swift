import CLinux
@_spi(Testing) import FUSEServer
import FUSEABI
import Glibc
import HostSystem
@_spi(Testing) import PassthroughFS
import Synchronization

/// A fresh directory under /tmp, removed with everything in it at deinit.
final class TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/daxfs-pfs-XXXXXX".utf8CString)
        let result = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(result != nil, "mkdtemp failed")
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    deinit { removeTree(path) }

    func at(_ name: String) -> String { path + "/" + name }

    func write(_ name: String, _ contents: String, mode: mode_t = 0o644) {
        let fd = Glibc.open(at(name), O_WRONLY | O_CREAT | O_TRUNC, mode)
        precondition(fd >= 0)
        let bytes = Array(contents.utf8)
        precondition(bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count)
        Glibc.close(fd)
    }

    func read(_ name: String) -> String? {
        let fd = Glibc.open(at(name), O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            result += chunk[..<count]
        }
        return String(decoding: result, as: UTF8.self)
    }

    func lstat(_ name: String) -> stat? {
        var st = stat()
        return Glibc.lstat(at(name), &st) == 0 ? st : nil
    }

    func exists(_ name: String) -> Bool { lstat(name) != nil }
}

func removeTree(_ path: String) {
    var st = stat()
    guard Glibc.lstat(path, &st) == 0 else { return }
    if st.st_mode & Mode.typeMask == Mode.directory {
        if let dir = opendir(path) {
            var names: [String] = []
            while let entry = Glibc.readdir(dir) {
                // Up to the NUL only: a dirent is as long as its name, not d_name's 256 bytes.
                let name = withUnsafePointer(to: &entry.pointee.d_name) {
                    String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
                }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(dir)
            for name in names { removeTree(path + "/" + name) }
        }
        Glibc.rmdir(path)
    } else {
        Glibc.unlink(path)
    }
}

/// Calls `body` with `string` as a request would carry it: NUL-terminated in place.
/// Nil when the session would reject the name.
func withName<R>(_ string: String, _ body: (FileName) throws -> R) throws -> R {
    var bytes = Array(string.utf8)
    bytes.append(0)
    return try bytes.withUnsafeBytes { raw in
        guard let name = FileName(validating: UnsafeRawBufferPointer(rebasing: raw[..<(raw.count - 1)])) else {
            throw TestFailure.invalidName(string)
        }
        return try body(name)
    }
}

func isValidName(_ string: String) -> Bool {
    var bytes = Array(string.utf8)
    bytes.append(0)
    return bytes.withUnsafeBytes { raw in FileName(validating: UnsafeRawBufferPointer(rebasing: raw[..<(raw.count - 1)])) != nil }
}

func withCString<R>(_ string: String, _ body: (CStringArg) throws -> R) rethrows -> R {
    var bytes = Array(string.utf8)
    bytes.append(0)
    return try bytes.withUnsafeBytes { raw in try body(CStringArg(bytes: UnsafeRawBufferPointer(rebasing: raw[..<(raw.count - 1)]))) }
}

enum TestFailure: Error { case invalidName(String) }

/// Mode bits (Glibc's S_IF* imports are ambiguous in Swift).
enum Mode {
    static let typeMask: UInt32 = 0o170000
    static let fifo: UInt32 = 0o010000
    static let character: UInt32 = 0o020000
    static let directory: UInt32 = 0o040000
    static let block: UInt32 = 0o060000
    static let regular: UInt32 = 0o100000
    static let symlink: UInt32 = 0o120000
}

let ctx = RequestContext()

/// A PassthroughFS over a fresh directory.
final class Fixture: @unchecked Sendable {
    let dir = TemporaryDirectory()
    let fs: PassthroughFS

    init(cache: PassthroughFS.CacheMode = .auto, passthrough: Bool = false, backing: (any BackingRegistry)? = nil,
         nodeDescriptorLimit: Int? = nil, openDescriptorLimit: Int? = nil) throws {
        var options = PassthroughFS.Options(cache: cache, passthrough: passthrough)
        options.nodeDescriptorLimit = nodeDescriptorLimit
        options.openDescriptorLimit = openDescriptorLimit
        fs = try PassthroughFS(root: dir.path, options: options)
        let capabilities = fs.wantedCapabilities
        try fs.initialize(connection: FUSEConnection(capabilities: capabilities, kernelMinor: 45, maxWrite: 1 << 20, backing: backing, sink: nil))
    }

    func lookup(_ name: String, in parent: NodeID = .root) throws -> Entry {
        try withName(name) { try fs.lookup(ctx, parent: parent, name: $0) }
    }

    func create(_ name: String, in parent: NodeID = .root, mode: UInt32 = 0o644, flags: Int32 = O_RDWR) throws -> (Entry, Opened) {
        try withName(name) { try fs.create(ctx, parent: parent, name: $0, mode: mode, flags: UInt32(bitPattern: flags), umask: 0, killSuidgid: false) }
    }

    func open(_ node: NodeID, flags: Int32 = O_RDWR) throws -> Opened {
        try fs.open(ctx, node: node, flags: UInt32(bitPattern: flags), killSuidgid: false)
    }

    func release(_ node: NodeID, _ opened: Opened, lockOwner: UInt64? = nil) throws {
        try fs.release(ctx, node: node, handle: opened.handle, flags: 0, lockOwner: lockOwner, flush: false, flockRelease: false)
    }

    func write(_ node: NodeID, _ handle: FileHandle, _ text: String, at offset: UInt64 = 0) throws -> Int {
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBytes { try fs.write(ctx, node: node, handle: handle, offset: offset, data: $0, writeFlags: 0, lockOwner: nil) }
    }

    func read(_ node: NodeID, _ handle: FileHandle, at offset: UInt64 = 0, count: Int = 4096) throws -> String {
        var buffer = [UInt8](repeating: 0, count: count)
        let got = try buffer.withUnsafeMutableBytes { try fs.read(ctx, node: node, handle: handle, offset: offset, into: $0, lockOwner: nil) }
        return String(decoding: buffer[..<got], as: UTF8.self)
    }
}

/// One entry decoded from a READDIR/READDIRPLUS reply.
struct ListedEntry {
    var name: String
    var ino: UInt64
    var nextOffset: UInt64
    var type: UInt32
    var node: UInt64
}

/// Runs one READDIR(PLUS) with a reply limit of `limit` bytes and decodes it.
func readdir(_ fs: PassthroughFS, node: NodeID = .root, handle: FileHandle, offset: UInt64, limit: Int, plus: Bool) throws -> [ListedEntry] {
    var storage = [UInt8](repeating: 0, count: limit)
    return try storage.withUnsafeMutableBytes { raw in
        var writer = DirectoryWriter(buffer: raw, limit: limit, plus: plus)
        try fs.readdir(ctx, node: node, handle: handle, offset: offset, writer: &writer)
        var entries: [ListedEntry] = []
        var position = 0
        for _ in 0 ..< writer.count {
            var nodeID: UInt64 = 0
            if plus {
                nodeID = raw.loadUnaligned(fromByteOffset: position, as: UInt64.self)
                position += EntryOut.wireSize
            }
            let ino = raw.loadUnaligned(fromByteOffset: position, as: UInt64.self)
            let off = raw.loadUnaligned(fromByteOffset: position + 8, as: UInt64.self)
            let length = Int(raw.loadUnaligned(fromByteOffset: position + 16, as: UInt32.self))
            let type = raw.loadUnaligned(fromByteOffset: position + 20, as: UInt32.self)
            let name = String(decoding: raw[(position + 24) ..< (position + 24 + length)], as: UTF8.self)
            entries.append(ListedEntry(name: name, ino: ino, nextOffset: off, type: type, node: nodeID))
            position += (24 + length + 7) & ~7
        }
        return entries
    }
}

/// A passthrough registry that hands out ids and remembers what is open.
final class FakeBacking: BackingRegistry {
    let state = Mutex<(next: Int32, open: Set<Int32>, opens: Int, failure: Errno?)>((1, [], 0, nil))

    init(failure: Errno? = nil) { state.withLock { $0.failure = failure } }

    func open(fd: Int32) throws(Errno) -> Int32 {
        try state.withLock { state throws(Errno) -> Int32 in
            state.opens += 1
            if let failure = state.failure { throw failure }
            let id = state.next
            state.next += 1
            state.open.insert(id)
            return id
        }
    }

    func close(id: Int32) throws(Errno) {
        try state.withLock { state throws(Errno) in
            guard state.open.remove(id) != nil else { throw .badFileDescriptor }
        }
    }

    var openIDs: Set<Int32> { state.withLock { $0.open } }
    var registrations: Int { state.withLock { $0.opens } }
}

func expectErrno(_ expected: Errno, _ body: () throws -> Void) -> Bool {
    do {
        try body()
        return false
    } catch let error as Errno {
        return error == expected
    } catch {
        return false
    }
}

/// Runs `body` on a new thread and waits for it: a request as another caller
/// leaves its thread with that caller's credentials.
func onItsOwnThread<R: Sendable>(_ body: @escaping @Sendable () throws(Errno) -> R) throws -> R {
    let result = Locked<Result<R, Errno>?>(nil)
    let thread = try OSThread(name: "test-caller") {
        do throws(Errno) { let value = try body(); result.withLock { $0 = .success(value) } } catch { result.withLock { $0 = .failure(error) } }
    }
    thread.join()
    return try result.withLock { $0! }.get()
}
