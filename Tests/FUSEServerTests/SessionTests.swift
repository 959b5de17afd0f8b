import FUSEABI
@testable import FUSEServer
import HostSystem
import Synchronization
import Testing

/// A small in-memory filesystem that records what reached it: the session
/// is the unit under test here; the real filesystem is tested through a mount.
final class RecordingFS: FileSystem, Sendable {
    let calls = Mutex<[String]>([])
    let forgotten = Mutex<[UInt64: UInt64]>([:])
    var wantedCapabilities: InitFlags { [.asyncRead, .posixLocks, .doReaddirplus, .passthrough, .writebackCache, .setxattrExt] }

    func record(_ call: String) { calls.withLock { $0.append(call) } }

    func lookup(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) -> Entry {
        record("lookup \(parent.rawValue) \(name)")
        guard name.string == "present" else { throw .noEntry }
        var attr = Attr()
        attr.ino = 42
        attr.mode = 0o100644
        return Entry(node: NodeID(7), attr: attr, entryTimeout: CacheTimeout(1), attrTimeout: CacheTimeout(1))
    }
    func forget(_ node: NodeID, count: UInt64) { forgotten.withLock { $0[node.rawValue, default: 0] &+= count } }
    func getattr(_ ctx: RequestContext, node: NodeID, handle: FileHandle?) throws(Errno) -> AttrReply {
        record("getattr \(node.rawValue) \(handle.map { String($0.rawValue) } ?? "-")")
        var attr = Attr()
        attr.ino = node.rawValue
        return AttrReply(attr: attr, timeout: CacheTimeout(seconds: 2, nanoseconds: 5))
    }
    func write(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, data: UnsafeRawBufferPointer, writeFlags: UInt32, lockOwner: UInt64?) throws(Errno) -> Int {
        record("write \(offset) \(data.count)")
        return data.count
    }
    func read(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, lockOwner: UInt64?) throws(Errno) -> Int {
        for i in 0 ..< buffer.count { buffer[i] = UInt8(truncatingIfNeeded: i) }
        return buffer.count
    }
    func rename(_ ctx: RequestContext, parent: NodeID, name: FileName, newParent: NodeID, newName: FileName, flags: UInt32) throws(Errno) {
        record("rename \(name) \(newName) \(flags)")
    }
    func setxattr(_ ctx: RequestContext, node: NodeID, name: CStringArg, value: UnsafeRawBufferPointer, flags: UInt32, setxattrFlags: UInt32) throws(Errno) {
        record("setxattr \(name.string) \(value.count)")
    }
    func readdir(_ ctx: RequestContext, node: NodeID, handle: FileHandle, offset: UInt64, writer: inout DirectoryWriter) throws(Errno) {
        var index = offset
        while index < 100 {
            let name = Array("entry\(index)".utf8)
            let fits = name.withUnsafeBytes { writer.append(name: $0, ino: index + 10, type: .regular, nextOffset: index + 1) }
            if !fits { break }
            index += 1
        }
    }
}

/// Builds request messages the way the kernel lays them out.
struct RequestBuilder {
    var unique: UInt64 = 1

    mutating func message(_ opcode: FUSEOpcode, node: UInt64 = 1, _ parts: [[UInt8]] = [], lengthOverride: UInt32? = nil, extlen: UInt16 = 0) -> [UInt8] {
        let body = parts.flatMap { $0 }
        let length = InHeader.wireSize + body.count
        let header = InHeader(len: lengthOverride ?? UInt32(length), opcode: opcode.rawValue, unique: unique, nodeid: node,
                              uid: 1000, gid: 1000, pid: 77, totalExtlen: extlen)
        unique += 1
        return header.wireBytes + body
    }

    static func name(_ text: String) -> [UInt8] { Array(text.utf8) + [0] }
}

/// A session with a recording filesystem, already through INIT.
struct Harness {
    let fs = RecordingFS()
    let session: FUSESession
    let reply = ReplyBuffer(capacity: requestBufferSize(for: SessionOptions()))
    var builder = RequestBuilder()

    init(initialize: Bool = true, options: SessionOptions = SessionOptions()) {
        session = FUSESession(fileSystem: fs, options: options)
        if initialize {
            let out = send(builder.message(.`init`, [InitIn(major: 7, minor: 45, maxReadahead: 1 << 17,
                                                             flags: UInt32.max, flags2: UInt32.max).wireBytes]))
            precondition(out.error == 0)
        }
    }

    struct Reply {
        var header: OutHeader?
        var payload: [UInt8]
        var error: Int32 { header?.error ?? 99999 }
    }

    func send(_ message: [UInt8]) -> Reply {
        let outcome = message.withUnsafeBytes { session.handle($0, reply: reply) }
        guard outcome.length > 0 else { return Reply(header: nil, payload: []) }
        let bytes = Array(reply.storage[0 ..< outcome.length])
        let header = try! OutHeader(wireBytes: bytes)
        #expect(Int(header.len) == outcome.length)
        return Reply(header: header, payload: Array(bytes[OutHeader.wireSize...]))
    }

    mutating func request(_ opcode: FUSEOpcode, node: UInt64 = 1, _ parts: [[UInt8]] = []) -> Reply {
        send(builder.message(opcode, node: node, parts))
    }
}

@Suite struct InitNegotiationTests {
    func initReply(minor: UInt32, flags: UInt32, flags2: UInt32 = 0, compact: Bool = false, options: SessionOptions = SessionOptions()) throws -> (Harness, InitOut) {
        var harness = Harness(initialize: false, options: options)
        var input = InitIn(major: 7, minor: minor, maxReadahead: 131072, flags: flags, flags2: flags2).wireBytes
        if compact { input = Array(input[0 ..< InitIn.compatSize]) }
        let reply = harness.request(.`init`, [input])
        #expect(reply.error == 0)
        return (harness, try InitOut(wireBytes: reply.payload))
    }

    @Test(arguments: Array(UInt32(31) ... 45))
    func everyMinorFrom31(minor: UInt32) throws {
        let all = UInt32.max
        let (harness, out) = try initReply(minor: minor, flags: all, flags2: all, compact: minor < 36)
        #expect(out.major == 7)
        #expect(out.minor == minor)
        #expect(out.maxPages == 256)
        #expect(out.maxWrite == 256 * UInt32(HostPage.size))
        let agreed = InitFlags(flags: out.flags, flags2: out.flags2)
        // Only what the filesystem asked for (plus the session's own), never more.
        #expect(agreed.isSubset(of: harness.fs.wantedCapabilities.union([.initExt, .maxPages])))
        #expect(!agreed.contains(.mapAlignment))
        #expect(!agreed.contains(.passthrough))  // no backing registry in this session
        #expect(out.maxStackDepth == 0)
        #expect(harness.session.isInitialized)
    }

    @Test func noFlags2WithoutInitExt() throws {
        let (_, out) = try initReply(minor: 45, flags: InitFlags.asyncRead.low | InitFlags.maxPages.low, flags2: UInt32.max)
        #expect(out.flags2 == 0)
        #expect(out.flags & InitFlags.initExt.low == 0)
        #expect(out.flags & InitFlags.asyncRead.low != 0)
    }

    @Test func withoutMaxPagesTheKernelDefaultApplies() throws {
        let (_, out) = try initReply(minor: 45, flags: InitFlags.asyncRead.low)
        #expect(out.maxPages == 0)
        #expect(out.maxWrite == 32 * UInt32(HostPage.size))
    }

    @Test func noMapAlignmentWithoutAWindow() throws {
        var options = SessionOptions()
        options.mapAlignmentLog2 = 16
        let (_, out) = try initReply(minor: 45, flags: UInt32.max, flags2: UInt32.max, options: options)
        #expect(out.flags & InitFlags.mapAlignment.low == 0)
        #expect(out.mapAlignment == 0)
    }

    @Test func olderThan731IsRefused() {
        var harness = Harness(initialize: false)
        let reply = harness.request(.`init`, [InitIn(major: 7, minor: 30, maxReadahead: 0, flags: 0).wireBytes])
        #expect(reply.error == -Errno.protocolError.rawValue)
        #expect(!harness.session.isInitialized)
    }

    @Test func newerMajorGetsOurVersionOnly() throws {
        var harness = Harness(initialize: false)
        let reply = harness.request(.`init`, [InitIn(major: 8, minor: 1, maxReadahead: 0, flags: UInt32.max).wireBytes])
        let out = try InitOut(wireBytes: reply.payload)
        #expect(out.major == 7 && out.minor == 45 && out.flags == 0)
        #expect(!harness.session.isInitialized)
    }

    /// A virtio-fs guest that unmounts and mounts again sends DESTROY, then a
    /// new INIT on the same device; a second INIT without DESTROY stays refused.
    @Test func initAgainAfterDestroy() throws {
        var harness = Harness()
        #expect(harness.session.isInitialized)
        #expect(harness.request(.`init`, [InitIn(major: 7, minor: 45, maxReadahead: 0, flags: 0).wireBytes]).error == -Errno.io.rawValue)
        #expect(harness.request(.destroy, []).error == 0)
        #expect(!harness.session.isInitialized)
        #expect(harness.request(.getattr, [GetattrIn().wireBytes]).error == -Errno.io.rawValue)
        let again = harness.request(.`init`, [InitIn(major: 7, minor: 45, maxReadahead: 0, flags: 0).wireBytes])
        #expect(again.error == 0)
        #expect(harness.session.isInitialized)
    }

    @Test func requestsBeforeInitGetEIO() {
        var harness = Harness(initialize: false)
        #expect(harness.request(.getattr, [GetattrIn().wireBytes]).error == -Errno.io.rawValue)
        #expect(harness.request(.forget, [U64Arg(1).wireBytes]).header == nil)
    }

    @Test func secondInitIsRefused() {
        var harness = Harness()
        let reply = harness.request(.`init`, [InitIn(major: 7, minor: 45, maxReadahead: 0, flags: 0).wireBytes])
        #expect(reply.error == -Errno.io.rawValue)
    }
}

@Suite struct DecoderTests {
    @Test func lookupReturnsEntry() throws {
        var harness = Harness()
        let reply = harness.request(.lookup, [RequestBuilder.name("present")])
        #expect(reply.error == 0)
        let entry = try EntryOut(wireBytes: reply.payload)
        #expect(entry.nodeid == 7 && entry.attr.ino == 42 && entry.entryValid == 1)
        #expect(harness.request(.lookup, [RequestBuilder.name("absent")]).error == -Errno.noEntry.rawValue)
    }

    @Test(arguments: [[UInt8](), Array("a/b".utf8) + [0], Array(".".utf8) + [0], Array("..".utf8) + [0], [0], Array("noterminator".utf8)])
    func badNamesAreRejectedBeforeTheFilesystem(name: [UInt8]) {
        var harness = Harness()
        let reply = harness.request(.lookup, [name])
        #expect(reply.error == -Errno.invalidArgument.rawValue)
        #expect(harness.fs.calls.withLock { $0.isEmpty })
    }

    @Test func unknownOpcodesGetENOSYS() {
        var harness = Harness()
        for opcode in [7, 19, 54, 100, 4095, 4097, UInt32.max] as [UInt32] {
            #expect(harness.request(FUSEOpcode(rawValue: opcode)).error == -Errno.notImplemented.rawValue)
        }
        // Known opcodes the filesystem does not implement default to ENOSYS too.
        #expect(harness.request(.statfs).error == -Errno.notImplemented.rawValue)
        #expect(harness.request(.setupMapping, [SetupMappingIn(fh: .max, foffset: 0, len: 1 << 21, flags: 2, moffset: 0).wireBytes]).error == -Errno.notImplemented.rawValue)
    }

    @Test func truncatedArgumentsGetEINVAL() {
        var harness = Harness()
        let cases: [(FUSEOpcode, Int)] = [(.getattr, GetattrIn.wireSize), (.setattr, SetattrIn.wireSize), (.read, ReadWriteIn.wireSize),
                                          (.write, ReadWriteIn.wireSize), (.open, OpenIn.wireSize), (.create, CreateIn.wireSize),
                                          (.mknod, MknodIn.wireSize), (.mkdir, MkdirIn.wireSize), (.rename2, Rename2In.wireSize),
                                          (.setlk, LkIn.wireSize), (.fallocate, FallocateIn.wireSize), (.lseek, LseekIn.wireSize),
                                          (.copyFileRange, CopyFileRangeIn.wireSize), (.release, ReleaseIn.wireSize)]
        for (opcode, size) in cases {
            for length in [0, 1, size - 1] {
                let reply = harness.request(opcode, [[UInt8](repeating: 0xAB, count: length)])
                #expect(reply.error == -Errno.invalidArgument.rawValue, "\(opcode) with \(length) bytes")
            }
        }
        #expect(harness.fs.calls.withLock { $0.isEmpty })
    }

    @Test func headerLengthMustMatchTheMessage() {
        var harness = Harness()
        let long = harness.builder.message(.getattr, [GetattrIn().wireBytes], lengthOverride: 1000)
        #expect(harness.send(long).error == -Errno.invalidArgument.rawValue)
        let short = harness.builder.message(.getattr, [GetattrIn().wireBytes], lengthOverride: 40)
        #expect(harness.send(short).error == -Errno.invalidArgument.rawValue)
    }

    @Test func messagesShorterThanAHeaderAreDropped() {
        let harness = Harness()
        for length in [0, 1, 16, 39] {
            #expect(harness.send([UInt8](repeating: 0, count: length)).header == nil)
        }
    }

    @Test func extensionsLongerThanTheMessageAreRejected() {
        var harness = Harness()
        let message = harness.builder.message(.getattr, [GetattrIn().wireBytes], extlen: 100)
        #expect(harness.send(message).error == -Errno.invalidArgument.rawValue)
        // A well-formed trailing extension is stripped before the arguments are read.
        let withExt = harness.builder.message(.lookup, [RequestBuilder.name("present"), ExtHeader(size: 16, type: 32).wireBytes, [0, 0, 0, 0, 0, 0, 0, 0]], extlen: 2)
        #expect(harness.send(withExt).error == 0)
    }

    @Test func writeSizeMustMatchTheData() {
        var harness = Harness()
        let data = [UInt8](repeating: 1, count: 100)
        #expect(harness.request(.write, [ReadWriteIn(fh: 1, offset: 0, size: 100).wireBytes, data]).error == 0)
        #expect(harness.request(.write, [ReadWriteIn(fh: 1, offset: 0, size: 101).wireBytes, data]).error == -Errno.invalidArgument.rawValue)
        #expect(harness.request(.write, [ReadWriteIn(fh: 1, offset: 0, size: UInt32.max).wireBytes, data]).error == -Errno.invalidArgument.rawValue)
        #expect(harness.fs.calls.withLock { $0 } == ["write 0 100"])
    }

    @Test func readNeverExceedsTheReplyBuffer() {
        var harness = Harness()
        let reply = harness.request(.read, [ReadWriteIn(fh: 1, offset: 0, size: UInt32.max).wireBytes])
        #expect(reply.error == 0)
        #expect(reply.payload.count == harness.reply.storage.count - OutHeader.wireSize)
    }

    @Test func batchForgetChecksItsCount() {
        var harness = Harness()
        let two = U32PaddedArg(2).wireBytes + ForgetOne(nodeid: 5, nlookup: 3).wireBytes + ForgetOne(nodeid: 6, nlookup: 1).wireBytes
        #expect(harness.request(.batchForget, [two]).header == nil)
        #expect(harness.fs.forgotten.withLock { $0 } == [5: 3, 6: 1])
        let lying = U32PaddedArg(UInt32.max).wireBytes + ForgetOne(nodeid: 9, nlookup: 1).wireBytes
        #expect(harness.request(.batchForget, [lying]).header == nil)
        #expect(harness.fs.forgotten.withLock { $0[9] } == nil)
    }

    @Test func setxattrUsesTheExtendedHeaderWhenNegotiated() {
        var harness = Harness()
        let value: [UInt8] = [1, 2, 3]
        let reply = harness.request(.setxattr, [SetxattrIn(size: 3, flags: 0).wireBytes, RequestBuilder.name("user.x"), value])
        #expect(reply.error == 0)
        #expect(harness.fs.calls.withLock { $0 } == ["setxattr user.x 3"])
    }

    @Test func readdirRespectsTheRequestedSize() {
        var harness = Harness()
        let reply = harness.request(.readdir, [ReadWriteIn(fh: 1, offset: 0, size: 100).wireBytes])
        #expect(reply.error == 0)
        #expect(reply.payload.count <= 100 && reply.payload.count > 0)
        #expect(reply.payload.count % 8 == 0)
    }

    @Test func rename2CarriesFlags() {
        var harness = Harness()
        let reply = harness.request(.rename2, [Rename2In(newdir: 1, flags: 1).wireBytes, RequestBuilder.name("a"), RequestBuilder.name("b")])
        #expect(reply.error == 0)
        #expect(harness.fs.calls.withLock { $0 } == ["rename a b 1"])
    }

    @Test func undeliveredEntriesAreForgotten() {
        var harness = Harness()
        let message = harness.builder.message(.lookup, [RequestBuilder.name("present")])
        let outcome = message.withUnsafeBytes { harness.session.handle($0, reply: harness.reply) }
        harness.session.undeliverable(outcome)
        #expect(harness.fs.forgotten.withLock { $0 } == [7: 1])
    }

    @Test func randomGarbageNeverCrashes() {
        var harness = Harness()
        var rng = SystemRandomNumberGenerator()
        for _ in 0 ..< 20_000 {
            let opcode = FUSEOpcode.allKnown.randomElement(using: &rng)!
            let length = Int.random(in: 0 ... 200, using: &rng)
            let body = (0 ..< length).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
            var message = harness.builder.message(opcode, node: UInt64.random(in: 0 ... 10, using: &rng), [body])
            if Bool.random(using: &rng) { message = Array(message.prefix(Int.random(in: 0 ... message.count, using: &rng))) }
            _ = harness.send(message)
        }
    }
}

@Suite struct ExtensionTests {
    @Test func supplementaryGroupsAreParsedFromTheExtension() {
        let groups: [UInt8] = ExtHeader(size: 24, type: ExtHeader.typeSuppGroups).wireBytes
            + U32PaddedArg(2, 2000).wireBytes + U32PaddedArg(3000, 0).wireBytes
        let parsed = groups.withUnsafeBytes { FUSESession.supplementaryGroups($0) }
        #expect(parsed == [2000, 3000])
        // A security context before it is skipped; lying sizes give nothing.
        let secctx = ExtHeader(size: 16, type: 1).wireBytes + [UInt8](repeating: 7, count: 8)
        #expect((secctx + groups).withUnsafeBytes { FUSESession.supplementaryGroups($0) } == [2000, 3000])
        let lying = ExtHeader(size: 4096, type: ExtHeader.typeSuppGroups).wireBytes + U32PaddedArg(1000, 0).wireBytes
        #expect(lying.withUnsafeBytes { FUSESession.supplementaryGroups($0) } == [])
        let tooMany = ExtHeader(size: 16, type: ExtHeader.typeSuppGroups).wireBytes + U32PaddedArg(100, 0).wireBytes
        #expect(tooMany.withUnsafeBytes { FUSESession.supplementaryGroups($0) } == [])
    }
}
