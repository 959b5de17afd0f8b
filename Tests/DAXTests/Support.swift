import DAX
@_spi(Testing) import DaxClient
import FUSEABI
import FUSEServer
import Foundation
import Glibc
import HostSystem
import Logging
import PassthroughFS
import Testing

/// A fresh directory under /tmp, removed at the end of the test.
final class TempDir {
    let path: String
    init(_ tag: String = "dax") {
        var template = Array("/tmp/daxtests-\(tag).XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { path + "/" + name }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A logger that stays quiet unless something goes wrong.
let quietLogger: Logger = {
    var logger = Logger(label: "daxfs.test")
    logger.logLevel = .error
    return logger
}()

/// A client with its own embedded server and window on `dir`.
func makeClient(_ dir: String, ranges: Int = 16, rangeSize: UInt64 = 64 << 10, mode: DAXMode = .always,
                alignment: UInt16? = nil, configure: (inout DaxClient.Options) -> Void = { _ in }) throws -> DaxClient {
    var options = DaxClient.Options()
    options.rangeSize = rangeSize
    options.windowSize = UInt64(ranges) * rangeSize
    options.mode = mode
    configure(&options)
    var session = SessionOptions()
    session.mapAlignmentLog2 = alignment
    let fs = try PassthroughFS(root: dir, options: PassthroughFS.Options(passthrough: false, logger: quietLogger))
    return try DaxClient.embedded(fileSystem: fs, sessionOptions: session, options: options, logger: quietLogger)
}

// MARK: Host files

/// Deterministic bytes: the pattern of `seed` at `offset`.
func pattern(_ count: Int, seed: UInt8 = 7, offset: Int = 0) -> [UInt8] {
    (0 ..< count).map { UInt8(truncatingIfNeeded: ($0 + offset) &* 31 &+ Int(seed) &+ ($0 + offset) >> 8) }
}

func hostWrite(_ path: String, _ bytes: [UInt8], at offset: Int = 0, truncate: Bool = false) throws {
    let fd = Glibc.open(path, O_RDWR | O_CREAT | (truncate ? O_TRUNC : 0), 0o644)
    guard fd >= 0 else { throw TestFailure("open \(path): \(errno)") }
    defer { Glibc.close(fd) }
    let wrote = bytes.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
    guard wrote == bytes.count else { throw TestFailure("pwrite \(path): \(wrote)") }
}

func hostRead(_ path: String, count: Int, at offset: Int = 0) throws -> [UInt8] {
    let fd = Glibc.open(path, O_RDONLY)
    guard fd >= 0 else { throw TestFailure("open \(path): \(errno)") }
    defer { Glibc.close(fd) }
    var bytes = [UInt8](repeating: 0, count: count)
    let got = bytes.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
    guard got >= 0 else { throw TestFailure("pread \(path): \(errno)") }
    return Array(bytes[0 ..< got])
}

func hostSize(_ path: String) throws -> Int {
    var st = Glibc.stat()
    guard Glibc.lstat(path, &st) == 0 else { throw TestFailure("stat \(path): \(errno)") }
    return Int(st.st_size)
}

func hostTruncate(_ path: String, to size: Int) throws {
    guard Glibc.truncate(path, off_t(size)) == 0 else { throw TestFailure("truncate \(path): \(errno)") }
}

// MARK: Window probes

/// Whether `count` bytes at `address` can be read, asked of the kernel (a
/// write(2) from them into a pipe fails with EFAULT otherwise) so that an
/// inaccessible page neither faults nor kills the test.
func isReadable(_ address: UnsafeRawPointer, count: Int = 1) -> Bool {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { return false }
    defer { Glibc.close(fds[0]); Glibc.close(fds[1]) }
    var sink: UInt8 = 0
    // One byte of every page the span touches.
    let page = HostPage.size
    var offset = 0
    while offset < max(count, 1) {
        guard Glibc.write(fds[1], address + offset, 1) == 1 else { return false }
        _ = Glibc.read(fds[0], &sink, 1)
        offset = (Int(bitPattern: address + offset) / page + 1) * page - Int(bitPattern: address)
    }
    if count > 1 {
        guard Glibc.write(fds[1], address + count - 1, 1) == 1 else { return false }
        _ = Glibc.read(fds[0], &sink, 1)
    }
    return true
}

/// Copies `count` window bytes without dying on a fault; nil when any byte faulted.
func windowBytes(_ window: LocalWindow, at offset: UInt64, count: Int) -> [UInt8]? {
    guard isReadable(window.base + Int(offset), count: count) else { return nil }
    var bytes = [UInt8](repeating: 0, count: count)
    let copied = bytes.withUnsafeMutableBytes { FaultSafeCopy.copy(to: $0.baseAddress!, from: window.base + Int(offset), count: count) }
    return copied == count ? bytes : nil
}

// MARK: Randomness

/// SplitMix64: small, fast and the same on every platform, so a seed replays a run.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The seed of a randomized test: DAX_MODEL_SEED, or a fresh one.
func modelSeed() -> UInt64 {
    if let text = ProcessInfo.processInfo.environment["DAX_MODEL_SEED"], let seed = UInt64(text) { return seed }
    return UInt64.random(in: 1 ... UInt64(UInt32.max))
}

func errnoOf(_ body: () throws -> Void) -> Errno? {
    do {
        try body()
        return nil
    } catch let error as Errno {
        return error
    } catch {
        return Errno(-1)
    }
}

/// Byte-for-byte equality that keeps failure messages short.
func same(_ a: [UInt8]?, _ b: [UInt8]?) -> Bool { a == b }
