// The checks every DAX and direct-mmap range passes before it reaches a
// mapper, and the planner of a frontend's window (WindowMappings).
//
// Input: {u8 alignment log2 (12 + x % 10), u8 window size in 2 MiB units
// (1 + x % 16)}, then steps {u8 operation, arguments}:
//   0  MappingRules.checkWindowRange / checkFileRange on four u64s, judged
//      against the rules written out (aligned, non-empty, no overflow, inside);
//   1  SETUPMAPPING {fh, foffset, len, flags, moffset} into a FUSESession;
//   2  REMOVEMAPPING {u8 count, count × {moffset, len}} into the session;
//   3  DAXFS_MMAP {fh, mh, offset, length, windowOffset, prot, flags} with
//      the file system's grant {u8 region pages, u64 region offset};
//   4  DAXFS_MUNMAP {fh, mh};
//   5  WindowMappings: replace [start, end) (in pages of the window) with a
//      new mapping or with nothing, planned and applied step by step;
//   6  a backend request to the client side ({u32 request, u32 flags, 40
//      payload bytes}: SHMEM_MAP/UNMAP {shmid, pad, fd_offset, shm_offset,
//      len, flags}, a memfd attached) into the frontend's BackendRequestHandler.
// Oracles: a mapper only ever sees aligned ranges inside its window and a
// grant that fits its region; REMOVEMAPPING is all or nothing for bad
// ranges; the planned window equals a page-by-page model and keeps its
// invariants; no region outlives the session.

@testable import VhostUser
import FUSEABI
import FUSEServer
import CLinux
import FuzzSupport
import Glibc
import HostSystem

/// Records what reaches it and checks that the session validated it.
final class CheckingWindow: WindowMapper, @unchecked Sendable {
    let windowSize: UInt64
    let alignment: UInt64
    var calls: [(map: Bool, offset: UInt64, length: UInt64)] = []
    init(windowSize: UInt64, alignment: UInt64) { self.windowSize = windowSize; self.alignment = alignment }

    func check(_ what: String, _ offset: UInt64, _ length: UInt64) {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard length > 0, !overflow, end <= windowSize, offset % alignment == 0, length % alignment == 0 else {
            fuzzFailure("\(what) of [\(offset), +\(length)) reached a \(windowSize)-byte window (alignment \(alignment))")
        }
    }

    func map(fd: Int32, fileOffset: UInt64, windowOffset: UInt64, length: UInt64, writable: Bool) throws(Errno) {
        check("map", windowOffset, length)
        guard fileOffset % alignment == 0, !fileOffset.addingReportingOverflow(length).overflow,
              fileOffset + length <= UInt64(Int64.max) else { fuzzFailure("map of file range [\(fileOffset), +\(length))") }
        guard fcntl(fd, F_GETFD) >= 0 else { fuzzFailure("map of a closed descriptor \(fd)") }
        calls.append((true, windowOffset, length))
    }

    func unmap(windowOffset: UInt64, length: UInt64) throws(Errno) {
        check("unmap", windowOffset, length)
        calls.append((false, windowOffset, length))
    }
}

/// Hands out /dev/zero for DAX and regions sized and offset as the input says.
final class GrantingFileSystem: FileSystem, @unchecked Sendable {
    let zero: SharedDescriptor
    let space = RegionSpace(name: "daxfs-fuzz-region")
    var nextGrant: (pages: Int, offset: UInt64) = (1, 0)

    init() { zero = SharedDescriptor(adopting: Glibc.open("/dev/zero", O_RDWR | O_CLOEXEC)) }

    func mappingDescriptor(_ ctx: RequestContext, node: NodeID, handle: FileHandle?, writable: Bool) throws(Errno) -> SharedDescriptor { zero }

    func directMmap(_ ctx: RequestContext, node: NodeID, handle: FileHandle, request: DirectMmapRequest) throws(Errno) -> DirectMmapGrant {
        // A fresh private region each time; the session's mappings keep it alive.
        DirectMmapGrant(region: try space.makeRegion(size: UInt64(nextGrant.pages * HostPage.size)), regionOffset: nextGrant.offset)
    }
}

nonisolated(unsafe) var fileSystem: GrantingFileSystem!
nonisolated(unsafe) var reply: ReplyBuffer!
nonisolated(unsafe) var sharedDescriptor: SharedDescriptor!

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    prepareFuzzProcess()
    fileSystem = GrantingFileSystem()
    reply = ReplyBuffer(capacity: requestBufferSize(for: SessionOptions()))
    sharedDescriptor = SharedDescriptor(adopting: open("/dev/null", O_RDONLY | O_CLOEXEC))
    return 0
}

/// MappingRules against the rules written out.
func checkRules(_ rules: MappingRules, _ input: inout FuzzInput) {
    let offset = input.u64(), length = input.u64(), fileOffset = input.u64(), fileLength = input.u64()
    let alignment = rules.alignment
    let (end, overflow) = offset.addingReportingOverflow(length)
    let windowOK = length > 0 && offset % alignment == 0 && length % alignment == 0 && !overflow && end <= rules.windowSize
    let acceptedWindow = (try? rules.checkWindowRange(offset: offset, length: length)) != nil
    if acceptedWindow != windowOK { fuzzFailure("checkWindowRange(\(offset), \(length)) in \(rules) says \(acceptedWindow)") }
    let (fileEnd, fileOverflow) = fileOffset.addingReportingOverflow(fileLength)
    let fileOK = fileOffset % alignment == 0 && !fileOverflow && fileEnd <= UInt64(Int64.max)
    let acceptedFile = (try? rules.checkFileRange(offset: fileOffset, length: fileLength)) != nil
    if acceptedFile != fileOK { fuzzFailure("checkFileRange(\(fileOffset), \(fileLength)) in \(rules) says \(acceptedFile)") }
}

/// The window planner against a model that knows, for each page, which mapping shows it.
struct PlannerModel {
    let pages: Int
    var mappings = WindowMappings()
    var model: [Int?]
    var serial = 0

    init(pages: Int) { self.pages = pages; model = Array(repeating: nil, count: pages) }

    mutating func step(_ input: inout FuzzInput) {
        let page = UInt64(HostPage.size)
        let first = Int(input.u8()) % pages
        let count = 1 + Int(input.u8()) % (pages - first)
        let replace = input.bool()
        let writable = input.bool()
        serial += 1
        let start = UInt64(first) * page, end = UInt64(first + count) * page
        // Each new mapping shows a file offset unique to it, so the model can tell them apart.
        let new = replace ? FrontendMapping(windowOffset: start, length: end - start, requestedLength: end - start, node: NodeID(UInt64(serial)),
                                            fileOffset: UInt64(serial) << 32, file: MappedFile(device: 1, inode: 1), writable: writable,
                                            descriptor: sharedDescriptor) : nil
        for step in mappings.plan(replacing: start, end, with: new) { mappings.applied(step) }
        for index in first ..< first + count { model[index] = replace ? serial : nil }

        let violations = mappings.invariantViolations()
        if !violations.isEmpty { fuzzFailure("WindowMappings: \(violations.joined(separator: "; "))") }
        if let new, !mappings.holds(new) { fuzzFailure("WindowMappings does not hold the mapping it just planned") }
        var shown = [Int?](repeating: nil, count: pages)
        for mapping in mappings.mappings {
            // fileOffset = serial << 32 + how far into the original mapping this part starts.
            let owner = Int(mapping.fileOffset >> 32)
            let skew = mapping.fileOffset & 0xFFFF_FFFF
            for index in Int(mapping.windowOffset / page) ..< Int(mapping.windowEnd / page) {
                if shown[index] != nil { fuzzFailure("page \(index) shown twice") }
                shown[index] = owner
            }
            if mapping.windowOffset < skew { fuzzFailure("a remainder's file offset moved before its mapping") }
        }
        if shown != model { fuzzFailure("planned window \(shown) differs from the model \(model)") }
    }
}

/// The client (frontend) end of a backend request line, and its handler.
final class FrontendSide {
    let backend: MessageSocket
    let handler: BackendRequestHandler
    let windows: [CheckingWindow]
    let file: Int32

    init(windowSize: UInt64) {
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else { fatalError("socketpair") }
        backend = MessageSocket(fd: pair[0])
        // The frontend checks with 4 KiB alignment (QEMU's page), whatever the server's map_alignment.
        windows = [CheckingWindow(windowSize: windowSize, alignment: 4096), CheckingWindow(windowSize: windowSize / 2, alignment: 4096)]
        handler = BackendRequestHandler(socket: MessageSocket(fd: pair[1]), windows: [0: windows[0], 1: windows[1]], logger: silentLogger)
        file = daxfs_memfd("daxfs-fuzz-mapped")
    }

    deinit {
        Glibc.close(backend.fd)
        Glibc.close(handler.socket.fd)
        Glibc.close(file)
    }

    func step(_ input: inout FuzzInput) {
        let request = input.u8() & 1 == 0 ? UInt32(9) : UInt32(10)
        let flags = UInt32(input.u8() & 0xF)
        var payload = Array(input.take(40))
        payload += [UInt8](repeating: 0, count: 40 - payload.count)
        for window in windows { window.calls.removeAll() }
        guard (try? backend.send(request: request, flags: flags | 1, payload: payload, fds: request == 9 ? [file] : [])) != nil else { return }
        handler.serviceIfReady()
        // The u64 status, when one was sent (the handler answers before it returns).
        var ready = pollfd(fd: backend.fd, events: Int16(POLLIN), revents: 0)
        if poll(&ready, 1, 0) > 0 && ready.revents & Int16(POLLIN) != 0 { _ = try? backend.receive() }
        let calls = windows.reduce(0) { $0 + $1.calls.count }
        if calls > 1 { fuzzFailure("one backend request changed the window \(calls) times") }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    let alignmentLog2 = UInt16(12 + input.u8() % 10)
    let windowSize = UInt64(1 + input.u8() % 16) << 21
    var options = SessionOptions()
    options.mapAlignmentLog2 = alignmentLog2
    let window = CheckingWindow(windowSize: windowSize, alignment: UInt64(1) << alignmentLog2)
    let mmapWindow = CheckingWindow(windowSize: windowSize, alignment: UInt64(HostPage.size))
    let session = FUSESession(fileSystem: fileSystem, options: options, logger: silentLogger, window: window, mmapWindow: mmapWindow)
    var unique: UInt64 = 1
    func send(_ opcode: FUSEOpcode, _ arguments: [UInt8]) -> Int32 {
        unique += 1
        let message = FUSEMessage.request(opcode, unique: unique, node: 2, [arguments])
        let outcome = message.withUnsafeBytes { session.handle($0, reply: reply) }
        guard outcome.length >= OutHeader.wireSize else { return 0 }
        return reply.storage.loadUnaligned(fromByteOffset: 4, as: Int32.self)
    }
    let initMessage = FUSEMessage.initRequest()
    _ = initMessage.withUnsafeBytes { session.handle($0, reply: reply) }
    let rules = MappingRules(alignmentLog2: alignmentLog2, windowSize: windowSize)
    var planner = PlannerModel(pages: Int(windowSize) / HostPage.size / 64)
    var frontend: FrontendSide?

    var steps = 0
    while !input.isEmpty && steps < 128 {
        steps += 1
        switch input.u8() % 7 {
        case 0:
            checkRules(rules, &input)
        case 1:
            var w = ByteWriter()
            for _ in 0 ..< 5 { w.append(input.u64()) }
            window.calls.removeAll()
            let error = send(.setupMapping, w.bytes)
            if error == 0 && window.calls.count != 1 { fuzzFailure("SETUPMAPPING succeeded without mapping") }
        case 2:
            let count = Int(input.u8() % 8)
            var w = ByteWriter()
            w.append(UInt32(count))
            var ranges: [(UInt64, UInt64)] = []
            for _ in 0 ..< count {
                let range = (input.u64(), input.u64())
                ranges.append(range)
                w.append(range.0)
                w.append(range.1)
            }
            window.calls.removeAll()
            _ = send(.removeMapping, w.bytes)
            let allValid = ranges.allSatisfy { (try? rules.checkWindowRange(offset: $0.0, length: $0.1)) != nil }
            if !allValid && !window.calls.isEmpty { fuzzFailure("REMOVEMAPPING with a bad range unmapped \(window.calls.count) ranges") }
            if allValid && window.calls.count != count { fuzzFailure("REMOVEMAPPING of \(count) valid ranges unmapped \(window.calls.count)") }
        case 3:
            var w = ByteWriter()
            for _ in 0 ..< 5 { w.append(input.u64()) }
            w.append(input.u32() & 7)
            w.append(input.u8() == 0 ? input.u32() : 0)
            fileSystem.nextGrant = (1 + Int(input.u8() % 64), input.u64() % (80 << 12))
            mmapWindow.calls.removeAll()
            let error = send(.daxfsMmap, w.bytes)
            if error == 0 && mmapWindow.calls.count != 1 { fuzzFailure("DAXFS_MMAP succeeded without mapping") }
        case 4:
            var w = ByteWriter()
            w.append(input.u64())
            w.append(input.u64())
            _ = send(.daxfsMunmap, w.bytes)
        case 5:
            planner.step(&input)
        default:
            if frontend == nil { frontend = FrontendSide(windowSize: windowSize) }
            frontend?.step(&input)
        }
    }
    session.end()
    if fileSystem.space.liveRegions != 0 {
        fuzzFailure("\(fileSystem.space.liveRegions) regions outlived their session")
    }
    return 0
}
