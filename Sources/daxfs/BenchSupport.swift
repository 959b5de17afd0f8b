import Glibc
import HostSystem
import Synchronization

/// A benchmark failure, in plain words.
struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }

    static let interrupted = BenchError("interrupted")
}

/// Runs `body`, prefixing what failed to its error.
@inline(__always)
func attempt<T: ~Copyable>(_ what: @autoclosure () -> String, _ body: () throws -> T) throws -> T {
    do { return try body() } catch { throw BenchError("\(what()): \(error)") }
}

/// Writes a line to stderr (progress and warnings; stdout carries only results).
func note(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = try? Syscall.writeAll(STDERR_FILENO, from: UnsafeRawBufferPointer($0)) }
}

// MARK: - Interruption

/// Set by SIGINT/SIGTERM; the workloads poll it so that cleanup (stopping the
/// mounts, removing the scratch directory) runs on the ordinary error path.
let benchInterruptRequested = Atomic<Bool>(false)

enum Interruption {
    /// Installs the handler once per signal: a second Ctrl-C kills at once
    /// (SA_RESETHAND), in case cleanup itself hangs.
    static func install() {
        for signo in [SIGINT, SIGTERM] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { _ in benchInterruptRequested.store(true, ordering: .relaxed) }
            action.sa_flags = Int32(truncatingIfNeeded: SA_RESETHAND)  // 0x80000000
            sigemptyset(&action.sa_mask)
            sigaction(signo, &action, nil)
        }
    }

    static var requested: Bool { benchInterruptRequested.load(ordering: .relaxed) }

    @inline(__always)
    static func check() throws {
        if requested { throw BenchError.interrupted }
    }
}

// MARK: - Time

/// Seconds on CLOCK_MONOTONIC.
@inline(__always)
func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// User plus system CPU time of this process, in seconds.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Wall-clock and CPU time of one timed region.
struct Span {
    var wall: Double
    var cpu: Double
    /// CPU time of this process as a share of wall time; below 100 means it waited.
    var cpuPercent: Double { wall > 0 ? cpu / wall * 100 : 0 }
}

func timed(_ body: () throws -> Void) rethrows -> Span {
    let cpu0 = processCPUSeconds(), wall0 = monotonicSeconds()
    try body()
    let wall1 = monotonicSeconds(), cpu1 = processCPUSeconds()
    return Span(wall: wall1 - wall0, cpu: cpu1 - cpu0)
}

func sleepSeconds(_ seconds: Double) {
    usleep(UInt32(seconds * 1e6))
}

func median(_ values: [Double]) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    let mid = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/// SplitMix64: a fast, seedable generator, so every configuration reads the
/// same random offsets.
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    @inline(__always)
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// MARK: - Formatting (no Foundation)

/// `x` with exactly `decimals` digits after the point; "-" when not finite.
func formatted(_ x: Double, decimals: Int) -> String {
    guard x.isFinite else { return "-" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = Int64((abs(x) * scale).rounded())
    let unit = Int64(scale)
    var text = (x < 0 && scaled != 0 ? "-" : "") + String(scaled / unit)
    if decimals > 0 {
        let fraction = String(scaled % unit)
        text += "." + String(repeating: "0", count: decimals - fraction.count) + fraction
    }
    return text
}

func padLeft(_ text: String, _ width: Int) -> String {
    String(repeating: " ", count: max(0, width - text.count)) + text
}

func padRight(_ text: String, _ width: Int) -> String {
    text + String(repeating: " ", count: max(0, width - text.count))
}

/// A JSON object with string keys and number values, keys in the given order.
func jsonObject(_ pairs: [(String, String)]) -> String {
    "{" + pairs.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
}

func jsonNumber(_ x: Double, decimals: Int) -> String {
    x.isFinite ? formatted(x, decimals: decimals) : "null"
}

// MARK: - Files

/// The corresponding C function is `realpath`.
func canonicalPath(_ path: String) throws -> String {
    let resolved = try attempt("cannot resolve \(path)") {
        try Syscall.call { realpath(path, nil) }
    }
    defer { free(resolved) }
    return String(cString: resolved)
}

/// Makes a fresh directory `parent/prefixXXXXXX`. The corresponding C function is `mkdtemp`.
func makeTemporaryDirectory(in parent: String, prefix: String) throws -> String {
    var template = Array("\(parent)/\(prefix)XXXXXX".utf8CString)
    let made = try attempt("cannot create a directory in \(parent)") {
        try Syscall.call { template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) } }
    }
    return String(cString: made)
}

func makeDirectory(_ path: String) throws {
    _ = try attempt("mkdir \(path)") { try Syscall.call { mkdir(path, 0o755) } }
}

/// Closes `fd` and reports the error (a FUSE FLUSH can fail), never retrying
/// on EINTR because Linux closes the descriptor anyway.
func closeChecked(_ fd: consuming FileDescriptor, _ path: String) throws {
    let raw = fd.release()
    _ = try attempt("close \(path)") {
        try Syscall.call(retryOnInterrupt: false) { Glibc.close(raw) }
    }
}

/// The whole content of a small file, or "" if it cannot be read.
func readSmallFile(_ path: String) -> String {
    guard let fd = try? FileDescriptor.open(path, flags: O_RDONLY) else { return "" }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { (try? Syscall.read(fd.rawValue, into: $0)) ?? 0 }
        if count <= 0 { break }
        bytes += chunk[..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Removes `path` and everything under it, best effort, without leaving the
/// filesystem of `path`: a directory on another device is a mount that is
/// still up, and deleting through it would reach into someone else's files.
/// Returns the paths it had to leave.
@discardableResult
func removeTree(_ path: String) -> [String] {
    var root = stat()
    guard lstat(path, &root) == 0 else { return [] }
    return removeTree(path, device: root.st_dev)
}

private func removeTree(_ path: String, device: dev_t) -> [String] {
    var info = stat()
    guard lstat(path, &info) == 0 else { return [] }
    guard info.st_mode & S_IFMT == S_IFDIR else {
        return unlink(path) == 0 ? [] : [path]
    }
    guard info.st_dev == device else { return [path] }
    var left: [String] = []
    if let dir = opendir(path) {
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        closedir(dir)
        for name in names { left += removeTree("\(path)/\(name)", device: device) }
    }
    if rmdir(path) != 0 && left.isEmpty { left.append(path) }
    return left
}

/// Starts `executable` with `arguments` (argv[0] included), standard input
/// from /dev/null, standard output and error to `logPath`, and each
/// `descriptors` pair's first descriptor as its second in the child. The
/// corresponding C function is `posix_spawn`.
func spawnLogged(_ executable: String, _ arguments: [String], logPath: String, descriptors: [(Int32, Int32)] = []) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 2, 1)
    for (from, to) in descriptors { posix_spawn_file_actions_adddup2(&actions, from, to) }
    let argv = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid = pid_t()
    try attempt("cannot start \(executable)") {
        try Syscall.direct { posix_spawn(&pid, executable, &actions, nil, argv, environ) }
    }
    return pid
}
