// FUSE requests from a peer into a real FUSESession over a PassthroughFS.
//
// Input: FUSE request messages back to back, each as long as its header's
// `len` says (cut short at the end of the input; a `len` below 1 takes one
// byte). Each run gets a fresh directory tree, file system (ring files for
// FUSE direct mmap, kernel passthrough, room for only 4 node descriptors),
// session (with a passthrough registry), DAX window and mmap window; the
// session is INITed first with the request a Linux guest sends (every flag,
// so direct mmap too), so later requests reach the file system; an input
// may DESTROY and INIT again. Oracles: no crash, every reply is well
// formed, and nothing the run opened (descriptors, passthrough backing ids,
// direct mmap regions) outlives the session.

import DAX
import FUSEABI
import FUSEServer
import FuzzSupport
import Glibc
import HostSystem
import PassthroughFS

/// Where each run's tree lives: a private tmpfs when we are root (device
/// nodes and fallocations then stay inside 64 MiB of this process's memory).
nonisolated(unsafe) var scratch = ""
nonisolated(unsafe) var onPrivateTmpfs = false
nonisolated(unsafe) var reply: ReplyBuffer!

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    prepareFuzzProcess()
    scratch = scratchDirectory("daxfs-fuzz-session")
    onPrivateTmpfs = mountPrivateTmpfs(on: scratch)
    reply = ReplyBuffer(capacity: requestBufferSize(for: SessionOptions()))
    return 0
}

/// The tree every run starts from: a file with data, a directory with a
/// file, a symlink, a FIFO, and two ring files (FUSE direct mmap: one
/// region shared by all, one per open); all names the seeds use.
func makeTree(_ root: String) {
    // Creates leave this thread with the last request's umask.
    umask(0o022)
    removeTree(root)
    mkdir(root, 0o755)
    chmod(root, 0o755)
    writeFile(root + "/file", (0 ..< 8192).map { UInt8(truncatingIfNeeded: $0) })
    mkdir(root + "/dir", 0o755)
    writeFile(root + "/dir/inner", Array("inner file\n".utf8))
    symlink("file", root + "/link")
    mkfifo(root + "/fifo", 0o644)
    writeFile(root + "/ring", [])
    writeFile(root + "/ring-private", [])
}

/// Kernel passthrough backing ids as /dev/fuse would hand them out; counts what is open.
final class CountingBacking: BackingRegistry, @unchecked Sendable {
    private let open = Locked<Set<Int32>>([])
    private let next = Locked<Int32>(1)
    func open(fd: Int32) throws(Errno) -> Int32 {
        guard fcntl(fd, F_GETFD) >= 0 else { fuzzFailure("a backing file registered with a closed descriptor \(fd)") }
        let id = next.withLock { value in defer { value += 1 }; return value }
        open.withLock { _ = $0.insert(id) }
        return id
    }
    func close(id: Int32) throws(Errno) {
        guard open.withLock({ $0.remove(id) }) != nil else { fuzzFailure("backing id \(id) closed twice or never opened") }
    }
    var openCount: Int { open.withLock { $0.count } }
}

/// Without a private tmpfs the host's /tmp holds the tree: keep sizes small there.
func tame(_ message: UnsafeMutableRawBufferPointer) {
    guard !onPrivateTmpfs, message.count >= InHeader.wireSize else { return }
    let opcode = FUSEOpcode(rawValue: message.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
    let limit: UInt64 = 1 << 20
    switch opcode {
    case .fallocate where message.count >= InHeader.wireSize + 24:  // {fh, offset, length, mode}
        let length = message.loadUnaligned(fromByteOffset: InHeader.wireSize + 16, as: UInt64.self)
        message.storeBytes(of: min(length, limit), toByteOffset: InHeader.wireSize + 16, as: UInt64.self)
    case .copyFileRange, .copyFileRange64:  // len at 40 of fuse_copy_file_range_in
        if message.count >= InHeader.wireSize + 48 {
            let length = message.loadUnaligned(fromByteOffset: InHeader.wireSize + 40, as: UInt64.self)
            message.storeBytes(of: min(length, limit), toByteOffset: InHeader.wireSize + 40, as: UInt64.self)
        }
    default:
        break
    }
}

/// A reply the session wrote must say its own length and be a whole message.
func checkReply(_ outcome: ReplyOutcome, request unique: UInt64?) {
    guard outcome.length > 0 else { return }
    guard outcome.length >= OutHeader.wireSize, outcome.length <= reply.storage.count else {
        fuzzFailure("reply of \(outcome.length) bytes in a \(reply.storage.count)-byte buffer")
    }
    let length = reply.storage.loadUnaligned(fromByteOffset: 0, as: UInt32.self)
    let error = reply.storage.loadUnaligned(fromByteOffset: 4, as: Int32.self)
    let replyUnique = reply.storage.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
    if loggingWanted { print("reply to \(replyUnique): error \(error), \(outcome.length) bytes") }
    if Int(length) != outcome.length { fuzzFailure("reply header says \(length) bytes, the reply has \(outcome.length)") }
    if error > 0 || error < -4095 { fuzzFailure("reply error \(error) is not a negated errno") }
    if error != 0 && outcome.length != OutHeader.wireSize { fuzzFailure("error reply with \(outcome.length - OutHeader.wireSize) payload bytes") }
    if let unique, replyUnique != unique { fuzzFailure("reply to unique \(unique) says unique \(replyUnique)") }
}

/// Sends FUSE_INTERRUPT for `unique` from another thread after `microseconds`.
func interrupt(_ session: FUSESession, unique: UInt64, after microseconds: UInt32) -> OSThread {
    do throws(Errno) {
        return try OSThread(name: "fuzz-interrupt") {
            usleep(microseconds)
            let message = FUSEMessage.request(.interrupt, unique: unique &+ 1 << 63, node: 0, [U64Arg(unique).wireBytes])
            let own = ReplyBuffer(capacity: 4096)
            _ = message.withUnsafeBytes { session.handle($0, reply: own) }
        }
    } catch {
        fatalError("thread: \(error)")
    }
}

func run(_ input: UnsafeRawBufferPointer) {
    let root = scratch + "/root"
    makeTree(root)
    let rings: RingFiles
    do throws(Errno) {
        rings = try RingFiles(regionSize: 16 << 10)
        try rings.add(path: root + "/ring", sharing: .shared)
        try rings.add(path: root + "/ring-private", sharing: .perOpen)
    } catch { fatalError("ring files: \(error)") }
    // Kernel passthrough on, and room for only 4 node descriptors: past that,
    // nodes close theirs and come back by file handle (NodeDescriptors).
    var options = PassthroughFS.Options(cache: .auto, passthrough: true, callerGroupsFromProc: false, ringFiles: rings)
    options.watchHost = false
    options.nodeDescriptorLimit = 4
    let backing = CountingBacking()
    let fs: PassthroughFS
    do throws(Errno) { fs = try PassthroughFS(root: root, options: options) } catch { fatalError("PassthroughFS on \(root): \(error)") }
    let window: LocalWindow, mmapWindow: LocalWindow
    do throws(Errno) {
        window = try LocalWindow(size: 8 << 20)
        mmapWindow = try LocalWindow(size: 1 << 20)
    } catch { fatalError("window: \(error)") }
    let session = FUSESession(fileSystem: fs, logger: silentLogger, backing: backing, window: window, mmapWindow: mmapWindow)

    let initMessage = FUSEMessage.initRequest()
    let initOutcome = initMessage.withUnsafeBytes { session.handle($0, reply: reply) }
    checkReply(initOutcome, request: 1)
    guard session.isInitialized else { fuzzFailure("the session refused the INIT a Linux guest sends") }

    // One message at a time, copied so that the session sees exactly its bytes (ASan catches overreads).
    var position = 0
    while position < input.count {
        var length = 0
        if input.count - position >= 4 { length = Int(input.loadUnaligned(fromByteOffset: position, as: UInt32.self)) }
        length = max(1, min(length, input.count - position))
        let message = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 8)
        message.copyMemory(from: UnsafeRawBufferPointer(rebasing: input[position ..< position + length]))
        tame(message)
        let unique = length >= InHeader.wireSize ? message.loadUnaligned(fromByteOffset: 8, as: UInt64.self) : nil
        // SETLKW waits while another owner holds the lock, until the kernel
        // interrupts it (the caller got a signal): so does the harness, 2 ms on.
        let opcode = length >= 8 ? FUSEOpcode(rawValue: message.loadUnaligned(fromByteOffset: 4, as: UInt32.self)) : nil
        let interrupter = opcode == .setlkw ? unique.map { interrupt(session, unique: $0, after: 2_000) } : nil
        let outcome = session.handle(UnsafeRawBufferPointer(message), reply: reply)
        interrupter?.join()
        checkReply(outcome, request: unique)
        message.deallocate()
        position += length
    }

    // Back to the server's own credentials (requests switch this thread's fsuid and groups).
    _ = try? fs.getattr(RequestContext(), node: .root, handle: nil)
    session.end()
    if backing.openCount != 0 { fuzzFailure("\(backing.openCount) passthrough backing ids still open after the session ended") }
    // A region lives while a client maps it: none outlives the connection.
    if rings.mappedRegions != 0 || rings.space.liveRegions != 0 {
        fuzzFailure("\(rings.mappedRegions) ring regions still mapped, \(rings.space.liveRegions) alive after the session ended")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = FuzzInput(data, size)
    expectNoDescriptorLeak("a FUSE session over PassthroughFS") { run(input.bytes) }
    return 0
}
