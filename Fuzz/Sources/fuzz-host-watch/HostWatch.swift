// The kernel-facing parsers whose bytes another process can shape: fanotify
// event buffers (the host watcher, the truncation guard), the waiting
// thread's /proc/TID/syscall line, and a frontend's /proc/PID/maps.
//
// Input: {u8 parser}, then that parser's bytes:
//   0  HostWatcher.parse over the rest (a fanotify group on a scratch
//      directory, made once; needs root, else the step does nothing);
//   1  TruncationGuard.events(in:count:), {u16 count} then the buffer;
//   2  TruncationGuard.intent(ofSyscall:), {u64 openat2 flags} then the line;
//   3  FrontendMaps.mapsPages(in:of:from:), {u64 device, u64 inode, u64
//      offset} then the maps text.
// Oracles: no crash, events stay inside the buffer, and an intent agrees
// with the line's system call number.

import FuzzSupport
import Glibc
import HostSystem
@testable import PassthroughFS
@testable import VhostUser

nonisolated(unsafe) var watcher: HostWatcher?
nonisolated(unsafe) var watchedDirectory: Int32 = -1

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    prepareFuzzProcess()
    let directory = scratchDirectory("daxfs-fuzz-watch")
    watchedDirectory = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    watcher = HostWatcher(path: directory, mountFD: watchedDirectory)
    // The group stays open; the directory can go (the watch keeps its inode).
    rmdir(directory)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    switch input.u8() % 4 {
    case 0:
        let events = Array(input.rest())
        _ = events.withUnsafeBytes { watcher?.parse($0) }
    case 1:
        let count = Int(input.u16())
        let buffer = Array(input.rest())
        let events = TruncationGuard.events(in: buffer, count: count)
        // Each event takes at least its 24-byte metadata.
        if events.count * 24 > min(count, buffer.count) { fuzzFailure("\(events.count) events in \(min(count, buffer.count)) bytes") }
    case 2:
        let flags = input.u64()
        let line = String(decoding: input.rest(), as: UTF8.self)
        let intent = TruncationGuard.intent(ofSyscall: line) { _ in flags }
        let words = line.split(separator: " ")
        if words.count < 7 && intent != .unknown { fuzzFailure("intent \(intent) from a line of \(words.count) words") }
        if case .truncates = intent, let number = words.first.flatMap({ Int($0) }) {
            let calls = TruncationGuard.SystemCall.self
            let truncating = [calls.truncate, calls.ftruncate, calls.open, calls.openat, calls.creat, calls.openat2]
            if !truncating.contains(number) { fuzzFailure("system call \(number) read as a truncation") }
        }
    default:
        let file = MappedFile(device: input.u64(), inode: input.u64())
        let offset = input.u64()
        _ = FrontendMaps.mapsPages(in: Array(input.rest()), of: file, from: offset)
    }
    return 0
}
