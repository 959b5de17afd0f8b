// The client side of fuzz-client-replies, as a script of steps: the target
// feeds it replies from its input; fuzz-seeds runs it against a real server
// (PassthroughFS through an in-process session) to record seeds.

import DAX
@_spi(Testing) import DaxClient
import FUSEABI
import FUSEServer
import FuzzSupport
import Glibc
import HostSystem

/// A fuzz input shared by reference: the script's steps and the scripted
/// channel's replies read from one stream.
public final class ByteStream: @unchecked Sendable {
    public var input: FuzzInput
    public init(_ input: FuzzInput) { self.input = input }
    public var isEmpty: Bool { input.isEmpty }
    public func u8() -> UInt8 { input.u8() }
    public func u16() -> UInt16 { input.u16() }
    public func u32() -> UInt32 { input.u32() }
    public func take(_ count: Int) -> UnsafeRawBufferPointer { input.take(count) }
}

/// Answers every call with the next reply record of the input.
public final class ScriptedChannel: FUSEChannel, @unchecked Sendable {
    let input: ByteStream
    public init(_ input: ByteStream) { self.input = input }

    public func call<R>(_ request: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws(Errno) -> R) throws(Errno) -> R {
        guard !input.isEmpty else { throw .io }
        let mode = input.u8()
        let length = Int(input.u16())
        let bytes = input.take(length)
        // A copy of exactly the reply's bytes, so ASan sees any read past its end.
        let reply = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 8)
        defer { reply.deallocate() }
        if bytes.count > 0 { reply.copyMemory(from: bytes) }
        let message = UnsafeMutableRawBufferPointer(rebasing: reply[0 ..< bytes.count])
        if mode & 1 != 0 && message.count >= OutHeader.wireSize && request.count >= InHeader.wireSize {
            message.storeBytes(of: UInt32(message.count).littleEndian, toByteOffset: 0, as: UInt32.self)
            message.storeBytes(of: request.loadUnaligned(fromByteOffset: 8, as: UInt64.self), toByteOffset: 8, as: UInt64.self)
        }
        return try body(UnsafeRawBufferPointer(message))
    }

    public func send(_ request: UnsafeRawBufferPointer) throws(Errno) {}
}

/// Anonymous read-write memory standing in for a window the server maps into.
public final class FakeWindow: ClientWindow, @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let windowSize: UInt64
    init(size: UInt64) {
        guard let memory = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), memory != MAP_FAILED else {
            fatalError("mmap")
        }
        base = memory
        windowSize = size
    }
    deinit { munmap(base, Int(windowSize)) }
    public func isMapped(offset: UInt64, length: UInt64, writable: Bool) -> Bool {
        let (end, overflow) = offset.addingReportingOverflow(length)
        return !overflow && end <= windowSize
    }
    public func allowingChanges<Result, Failure: Error>(_ ranges: [(offset: UInt64, length: UInt64)],
                                                 _ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        try body()
    }
}

/// The windows and I/O buffer every script uses (made once: they are big).
public enum ScriptResources {
    nonisolated(unsafe) public static let window = FakeWindow(size: 8 << 20)
    nonisolated(unsafe) public static let mmapWindow = FakeWindow(size: 4 << 20)
    nonisolated(unsafe) public static let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 4096)
}

let names = ["file", "dir", "a", "big"]

/// The client under a script: a FUSEClient, and a DaxClient made on first use.
public final class ClientScript {
    let channel: any FUSEChannel
    let fuse: FUSEClient
    var dax: DaxClient?
    var daxFailed = false
    var files: [DaxFile] = []
    var mappings: [FileMapping] = []

    public init(over channel: any FUSEChannel) {
        self.channel = channel
        fuse = FUSEClient(channel: channel)
    }

    /// Unmaps, closes and disconnects what the steps left (these calls take replies too).
    public func finish() {
        for mapping in mappings { try? mapping.unmap() }
        for file in files { try? file.close() }
        mappings = []
        files = []
        dax?.shutdown()
        dax = nil
    }

    /// Runs one step read from `steps`.
    public func step(_ steps: ByteStream) {
        let buffer = ScriptResources.buffer, window = ScriptResources.window, mmapWindow = ScriptResources.mmapWindow
        let operation = steps.u8()
        let node = NodeID(UInt64(steps.u8() % 4) + 1)
        let handle = FileHandle(UInt64(steps.u8()))
        let name = names[Int(steps.u8()) % names.count]
        let offset = UInt64(steps.u32())
        let count = Int(steps.u16()) % (buffer.count + 1)
        let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< count])
        switch operation % 32 {
        case 0: _ = try? fuse.initialize(flags: [.asyncRead, .mapAlignment, .daxfsDirectMmap, .doReaddirplus])
        case 1: _ = try? fuse.lookup(parent: node, name: name)
        case 2: _ = try? fuse.getattr(node, handle: offset & 1 == 0 ? nil : handle)
        case 3: _ = try? fuse.setSize(node, size: offset)
        case 4: _ = try? fuse.open(node, flags: O_RDWR)
        case 5: _ = try? fuse.create(parent: node, name: name, mode: 0o644, flags: O_RDWR)
        case 6:
            if let got = try? fuse.read(node, handle: handle, offset: offset, into: slice), got > count {
                fuzzFailure("READ returned \(got) bytes into \(count)")
            }
        case 7:
            if let wrote = try? fuse.write(node, handle: handle, offset: offset, from: UnsafeRawBufferPointer(slice)), wrote > count {
                fuzzFailure("WRITE of \(count) bytes says \(wrote)")
            }
        case 8: _ = try? fuse.opendir(node)
        case 9: _ = try? fuse.readdir(node, handle: handle, offset: offset, size: count)
        case 10: _ = try? fuse.mkdir(parent: node, name: name, mode: 0o755)
        case 11: try? fuse.unlink(parent: node, name: name); try? fuse.rmdir(parent: node, name: name)
        case 12: try? fuse.setupMapping(node, fileOffset: offset << 12, windowOffset: 0, length: 2 << 20, writable: offset & 1 != 0)
        case 13:
            _ = try? fuse.directMmap(node, handle: handle, mappingID: offset, offset: 0, length: 4096, windowOffset: 0, writable: false)
            try? fuse.directMunmap(node, handle: handle, mappingID: offset)
        case 14: try? fuse.removeMapping([RemoveMappingOne(moffset: 0, len: 2 << 20)])
        case 15:
            try? fuse.flush(node, handle: handle); try? fuse.fsync(node, handle: handle)
            try? fuse.release(node, handle: handle, flags: O_RDWR); try? fuse.releasedir(node, handle: handle)
            fuse.forget(node)
        default:
            if dax == nil && !daxFailed {
                var options = DaxClient.Options()
                options.windowSize = window.windowSize
                options.backgroundReclaim = false
                options.mmapWindowSize = mmapWindow.windowSize
                dax = try? DaxClient(channel: channel, window: window, mmapWindow: mmapWindow, options: options)
                daxFailed = dax == nil
            }
            guard let dax else { return }
            daxStep(dax, operation % 32 - 16, name: name, offset: offset, slice: slice, files: &files, mappings: &mappings)
        }
    }
}

/// Runs up to 64 steps from `steps` over `channel` (for fuzzing, the same
/// stream feeds both), then cleans up.
public func runClientScript(_ steps: ByteStream, over channel: any FUSEChannel) {
    let script = ClientScript(over: channel)
    var done = 0
    while !steps.isEmpty && done < 64 {
        done += 1
        script.step(steps)
    }
    script.finish()
}

func daxStep(_ dax: DaxClient, _ operation: UInt8, name: String, offset: UInt64, slice: UnsafeMutableRawBufferPointer,
             files: inout [DaxFile], mappings: inout [FileMapping]) {
    let file = files.isEmpty ? nil : files[Int(offset) % files.count]
    switch operation {
    case 0, 1:
        if files.count < 4, let opened = try? dax.open("dir/" + name, flags: operation == 0 ? O_RDONLY : O_RDWR | O_CREAT) {
            files.append(opened)
        }
    case 2:
        if let got = try? file?.pread(into: slice, at: offset), got > slice.count { fuzzFailure("pread returned \(got) into \(slice.count)") }
    case 3:
        if let wrote = try? file?.pwrite(UnsafeRawBufferPointer(slice), at: offset), wrote > slice.count {
            fuzzFailure("pwrite of \(slice.count) says \(wrote)")
        }
    case 4: _ = try? file?.size()
    case 5: try? file?.truncate(to: offset)
    case 6: try? file?.fsync()
    case 7:
        if let file, let index = files.firstIndex(where: { $0 === file }) {
            files.remove(at: index)
            try? file.close()
        }
    case 8: _ = try? dax.stat(name)
    case 9: _ = try? dax.list("dir")
    case 10: try? dax.mkdir("dir/" + name); try? dax.unlink("dir/" + name); try? dax.rmdir("dir/" + name)
    case 11:
        let length = max(1, min(slice.count, 64 << 10))
        if mappings.count < 4, let mapping = try? file?.mmap(offset: (offset & 0xFFFF) << 12, length: length, writable: offset & 1 != 0) {
            mappings.append(mapping)
        }
    case 12:
        if let mapping = mappings.popLast() { try? mapping.sync(); try? mapping.unmap() }
    case 13: _ = dax.reclaimNow()
    default:
        let violations = dax.windowInvariantViolations()
        if !violations.isEmpty { fuzzFailure("window manager: \(violations.joined(separator: "; "))") }
    }
}

