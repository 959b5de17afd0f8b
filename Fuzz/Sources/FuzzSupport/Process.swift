import FuzzShim
import Glibc
import HostSystem
import Logging

/// DAXFS_FUZZ_LOG=1 logs everything to stderr, to see what an input does
/// (run the target on that one file).
public let loggingWanted = getenv("DAXFS_FUZZ_LOG") != nil

/// Once per process: log nothing (a log line per input would dominate the
/// run time) and ignore SIGPIPE, as `daxfs serve` does.
public func prepareFuzzProcess() {
    if loggingWanted {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .trace
            return handler
        }
    } else {
        LoggingSystem.bootstrap { _ in SwiftLogNoOpLogHandler() }
    }
    signal(SIGPIPE, SIG_IGN)
}

/// The logger for the APIs that take one: silent unless DAXFS_FUZZ_LOG is set.
public let silentLogger: Logger = {
    var logger = loggingWanted ? Logger(label: "daxfs.fuzz") : Logger(label: "daxfs.fuzz") { _ in SwiftLogNoOpLogHandler() }
    logger.logLevel = loggingWanted ? .trace : .critical
    return logger
}()

/// The descriptor numbers open in this process now.
public func openDescriptors() -> Set<Int32> {
    guard let directory = opendir("/proc/self/fd") else { return [] }
    defer { closedir(directory) }
    let own = dirfd(directory)
    var found = Set<Int32>()
    while let entry = readdir(directory) {
        // d_name is "N" (or "." and ".."); parse the digits by hand: no string compares for the fuzzer to learn.
        var number: Int32 = 0, digits = 0
        withUnsafeBytes(of: entry.pointee.d_name) { name in
            for byte in name {
                guard byte >= 48 && byte <= 57 else { break }
                number = number * 10 + Int32(byte - 48)
                digits += 1
            }
        }
        if digits > 0 && number != own { found.insert(number) }
    }
    return found
}

/// What descriptor `fd` is open on, for a failure message.
func describeDescriptor(_ fd: Int32) -> String {
    var target = [CChar](repeating: 0, count: 512)
    let count = readlink("/proc/self/fd/\(fd)", &target, target.count - 1)
    return count > 0 ? String(decoding: target[0 ..< count].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
}

/// Fails when `body` leaves descriptors open that were not open before it:
/// everything a run creates must be closed by the code under test.
public func expectNoDescriptorLeak(_ what: String, _ body: () -> Void) {
    let before = openDescriptors()
    body()
    let leaked = openDescriptors().subtracting(before)
    if !leaked.isEmpty {
        fuzzFailure("\(what) left descriptors open: \(leaked.sorted().map { "\($0) -> \(describeDescriptor($0))" }.joined(separator: ", "))")
    }
}

/// A directory for one target's scratch files: $DAXFS_FUZZ_SCRATCH when set
/// (scripts/fuzz.sh removes it afterwards), else a new one under /tmp.
public func scratchDirectory(_ name: String) -> String {
    let base = getenv("DAXFS_FUZZ_SCRATCH").map { String(cString: $0) } ?? "/tmp"
    var template = Array("\(base)/\(name)-XXXXXX".utf8CString)
    guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
        fatalError("cannot create a scratch directory under \(base)")
    }
    return String(cString: template)
}

/// Mounts a private tmpfs (nodev, nosuid, 64 MiB) on `path` in a mount
/// namespace of this process's own, so nothing a fuzz input creates (device
/// nodes, huge fallocations) reaches the host; false when that is not
/// allowed (not root). Call before any thread starts: unshare needs that.
public func mountPrivateTmpfs(on path: String) -> Bool { fuzz_private_tmpfs(path) == 0 }

/// Removes everything under `path` and `path` itself, as root, without following symlinks.
public func removeTree(_ path: String) {
    var st = stat()
    guard lstat(path, &st) == 0 else { return }
    if st.st_mode & S_IFMT == S_IFDIR {
        chmod(path, 0o700)
        if let directory = opendir(path) {
            var names: [String] = []
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(directory)
            for name in names { removeTree(path + "/" + name) }
        }
        rmdir(path)
    } else {
        unlink(path)
    }
}

/// Writes `bytes` to a new file at `path`.
public func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    guard fd >= 0 else { fatalError("cannot create \(path): errno \(errno)") }
    defer { close(fd) }
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
}
