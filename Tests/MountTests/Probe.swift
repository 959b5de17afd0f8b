import CLinux
import Foundation
import Glibc
import Testing

/// Runs file operations under one root and logs every observable result
/// (return value or errno, data fingerprints, stat fields). The same scenario
/// is run once on a host directory and once through the mount; the two logs
/// must be equal line for line.
final class Probe {
    let root: String
    private(set) var log: [String] = []

    init(root: String) { self.root = root }

    /// `name` below the root; absolute paths pass through.
    func path(_ name: String) -> String { name.hasPrefix("/") ? name : root + "/" + name }

    func note(_ line: String) { log.append(compressRuns(line)) }

    /// Logs `label = result` and returns the result.
    @discardableResult
    func call<T: BinaryInteger>(_ label: String, _ body: () -> T) -> Outcome {
        let outcome = sys(body)
        note("\(label) = \(outcome)")
        return outcome
    }

    // MARK: Descriptors

    /// Opens `name`; logs success as "fd" (numbers differ between runs). Returns -1 on failure.
    @discardableResult
    func open(_ name: String, _ flags: Int32, _ mode: mode_t = 0o644) -> Int32 {
        let outcome = sys { Glibc.open(path(name), flags, mode) }
        note("open(\(name), 0o\(String(flags, radix: 8)), 0o\(String(mode, radix: 8))) = \(outcome.succeeded ? "fd" : outcome.description)")
        return Int32(outcome.value ?? -1)
    }

    func close(_ fd: Int32) {
        guard fd >= 0 else { return }
        call("close") { Glibc.close(fd) }
    }

    @discardableResult
    func write(_ fd: Int32, _ bytes: [UInt8]) -> Outcome {
        call("write(\(bytes.count) bytes \(fingerprint(bytes)))") { bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } }
    }

    func write(_ fd: Int32, _ text: String) { write(fd, Array(text.utf8)) }

    @discardableResult
    func pwrite(_ fd: Int32, _ bytes: [UInt8], at offset: Int) -> Outcome {
        let outcome = pwriteAll(fd, bytes, at: offset)
        note("pwrite(\(bytes.count) bytes \(fingerprint(bytes)) at \(offset)) = \(outcome)")
        return outcome
    }

    @discardableResult
    func pread(_ fd: Int32, count: Int, at offset: Int) -> [UInt8]? {
        switch preadAll(fd, count: count, at: offset) {
        case .success(let data):
            note("pread(\(count) at \(offset)) = \(data.count) bytes \(fingerprint(data))")
            return data
        case .failure(let error):
            note("pread(\(count) at \(offset)) = \(error)")
            return nil
        }
    }

    /// Reads from the current position, as read(2) does.
    func read(_ fd: Int32, count: Int) {
        var buffer = [UInt8](repeating: 0, count: count)
        let outcome = sys { buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, count) } }
        note("read(\(count)) = \(outcome) \(outcome.value.map { fingerprint(buffer.prefix($0)) } ?? "")")
    }

    func lseek(_ fd: Int32, _ offset: Int, _ whence: Int32) {
        call("lseek(\(offset), whence \(whence))") { Glibc.lseek(fd, off_t(offset), whence) }
    }

    // MARK: Paths

    /// Logs the whole file's size and fingerprint.
    func readFile(_ name: String) {
        switch MountTests.readFile(path(name)) {
        case .success(let data): note("contents(\(name)) = \(data.count) bytes \(fingerprint(data))")
        case .failure(let error): note("contents(\(name)) = \(error)")
        }
    }

    /// Logs type, permission bits, link count, owner, size and, on request,
    /// the times and allocated blocks (both deterministic only when the test
    /// sets them).
    func stat(_ name: String, follow: Bool = true, times: Bool = false, blocks: Bool = false) {
        guard let info = fileStat(path(name), follow: follow) else {
            note("\(follow ? "stat" : "lstat")(\(name)) = \(errnoName(errno))")
            return
        }
        var line = "\(follow ? "stat" : "lstat")(\(name)) = \(fileType(info.st_mode)) \(String(info.st_mode & 0o7777, radix: 8)) nlink \(info.st_nlink) owner \(info.st_uid):\(info.st_gid)"
        if info.st_mode & S_IFMT != S_IFDIR { line += " size \(info.st_size)" }
        if [S_IFCHR, S_IFBLK].contains(info.st_mode & S_IFMT) { line += " rdev \(daxfs_major(UInt64(info.st_rdev))):\(daxfs_minor(UInt64(info.st_rdev)))" }
        if times {
            line += " atime \(info.st_atim.tv_sec).\(info.st_atim.tv_nsec) mtime \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
        }
        if blocks { line += " blocks \(info.st_blocks)" }
        note(line)
    }

    func fstat(_ fd: Int32, label: String) {
        var info = Glibc.stat()
        let outcome = sys { Glibc.fstat(fd, &info) }
        note("fstat(\(label)) = \(outcome.succeeded ? "\(fileType(info.st_mode)) \(String(info.st_mode & 0o7777, radix: 8)) nlink \(info.st_nlink) size \(info.st_size)" : outcome.description)")
    }

    func readlink(_ name: String) {
        switch readLink(path(name)) {
        case .success(let target): note("readlink(\(name)) = \(target)")
        case .failure(let error): note("readlink(\(name)) = \(error)")
        }
    }

    func list(_ name: String) {
        note("readdir(\(name)) = \(directoryNames(path(name))?.joined(separator: ",") ?? errnoName(errno))")
    }

    // MARK: Names

    @discardableResult func mkdir(_ name: String, _ mode: mode_t = 0o755) -> Outcome {
        call("mkdir(\(name), 0o\(String(mode, radix: 8)))") { Glibc.mkdir(path(name), mode) }
    }
    @discardableResult func rmdir(_ name: String) -> Outcome { call("rmdir(\(name))") { Glibc.rmdir(path(name)) } }
    @discardableResult func unlink(_ name: String) -> Outcome { call("unlink(\(name))") { Glibc.unlink(path(name)) } }
    @discardableResult func link(_ from: String, _ to: String) -> Outcome { call("link(\(from), \(to))") { Glibc.link(path(from), path(to)) } }
    @discardableResult func symlink(_ target: String, _ name: String) -> Outcome {
        call("symlink(\(target), \(name))") { Glibc.symlink(target, path(name)) }
    }
    @discardableResult func rename(_ from: String, _ to: String, flags: UInt32 = 0) -> Outcome {
        call("renameat2(\(from), \(to), \(flags))") { daxfsRenameat2(path(from), path(to), flags) }
    }
    @discardableResult func truncate(_ name: String, _ size: Int) -> Outcome {
        call("truncate(\(name), \(size))") { Glibc.truncate(path(name), off_t(size)) }
    }
    @discardableResult func chmod(_ name: String, _ mode: mode_t) -> Outcome {
        call("chmod(\(name), 0o\(String(mode, radix: 8)))") { Glibc.chmod(path(name), mode) }
    }

    /// A file with `bytes`, created through open/write/close.
    func create(_ name: String, _ bytes: [UInt8], mode: mode_t = 0o644) {
        let fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, mode)
        if fd >= 0 {
            pwrite(fd, bytes, at: 0)
            close(fd)
        }
    }
}

// MARK: - Host comparison

/// Runs `scenario` on a fresh host directory and through a fresh mount, and
/// expects the same log from both and the same resulting tree in the share as
/// in the host directory (and as seen through the mount).
func compareWithHost(_ mode: Mode, arguments: [String] = [], sourceLocation: SourceLocation = #_sourceLocation,
                     _ scenario: (Probe) throws -> Void) throws {
    try withMount(mode, arguments: arguments, sourceLocation: sourceLocation) { mount in
        let reference = Probe(root: try mount.hostScratch("reference"))
        try scenario(reference)
        let mounted = Probe(root: mount.mountpoint)
        try scenario(mounted)
        if ProcessInfo.processInfo.environment["MOUNT_TESTS_VERBOSE"] != nil {
            print("--- \(mode) host log ---\n" + reference.log.joined(separator: "\n"))
            print("--- \(mode) mount log ---\n" + mounted.log.joined(separator: "\n"))
        }
        expectSameLines(mounted.log, reference.log, "results through the mount vs on the host", sourceLocation: sourceLocation)
        let expectedTree = treeSnapshot(reference.root)
        expectSameLines(treeSnapshot(mount.shared), expectedTree, "shared directory vs host reference", sourceLocation: sourceLocation)
        expectSameLines(treeSnapshot(mount.mountpoint), expectedTree, "tree seen through the mount vs host reference", sourceLocation: sourceLocation)
    }
}

/// Shortens runs of 16 or more equal characters ("nnnn…" → "n×255") so long
/// names and values stay readable in logs.
func compressRuns(_ line: String) -> String {
    var out = "", run: (Character, Int)? = nil
    func flush() {
        guard let (character, count) = run else { return }
        out += count >= 16 ? "\(character)×\(count)" : String(repeating: character, count: count)
    }
    for character in line {
        if let (current, count) = run, current == character {
            run = (current, count + 1)
        } else {
            flush()
            run = (character, 1)
        }
    }
    flush()
    return out
}

/// renameat2(2) with AT_FDCWD.
func daxfsRenameat2(_ from: String, _ to: String, _ flags: UInt32) -> Int32 {
    daxfs_renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)
}
