// daxfs-sandbox-probe: puts itself in the sandbox the options describe, then
// does one thing and says what happened, one "key value" line at a time on
// stdout (written with write(2) at once: a process killed by its filter
// still leaves what it said before). SandboxPrimitiveTests runs it as a child,
// so the test process itself is never filtered.
//
//   daxfs-sandbox-probe [--modcaps SPEC] [--seccomp none|kill|log|trap]
//                       [--extra NR]... [--report-traps] ACTION [ARG]...
//
// Actions:
//   status            the Seccomp, Seccomp_filters and Cap* lines of /proc/self/status
//   getpid            an allowed call
//   forbidden         acct("/nonexistent/…"), not allowed (it fails with ENOENT when it runs)
//   tsync             a thread started before the filter reports its Seccomp line
//   chown PATH UID    fchownat(PATH, UID, -1)
//   switch PATH       a thread that acts as uid 65534 (fsuid, then euid) and back,
//                     reporting its effective set and whether PATH (root's, 0600) opens
//   bench N           N getpid() calls, 5 runs: "ns-per-call MEDIAN runs …"
//   exec PROG ARG...  execv, so the filter covers another program
import CLinux
import Glibc
import HostSystem

func say(_ line: String) {
    let text = line + "\n"
    text.utf8CString.withUnsafeBytes { bytes in
        _ = try? Syscall.writeAll(1, from: UnsafeRawBufferPointer(rebasing: bytes.dropLast()))
    }
}

func fail(_ message: String) -> Never {
    say("error \(message)")
    exit(2)
}

/// Lines of a /proc status file that start with one of `keys`.
func statusLines(_ path: String, _ keys: [String]) -> [String] {
    guard let fd = try? FileDescriptor.open(path, flags: O_RDONLY) else { return ["error cannot open \(path)"] }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while let count = try? Syscall.call({ chunk.withUnsafeMutableBytes { Glibc.read(fd.rawValue, $0.baseAddress, $0.count) } }), count > 0 {
        bytes += chunk[0 ..< count]
    }
    return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
        .filter { line in keys.contains { line.hasPrefix($0 + ":") } }
        .map { $0.replacingTabs() }
}

extension String {
    func replacingTabs() -> String { String(map { $0 == "\t" ? " " : $0 }) }
}

/// The calling thread's effective set (hex) and whether root's 0600 file at `path` opens.
func report(_ path: String, _ stage: String) {
    let effective = (try? Capabilities.current().effective.rawValue).map { String($0, radix: 16) } ?? "?"
    var opened = "ok"
    do { _ = try FileDescriptor.open(path, flags: O_RDONLY) } catch { opened = "errno \(error.rawValue)" }
    say("\(stage) eff \(effective) open \(opened)")
}

func forbidden() -> String {
    let result = acct("/nonexistent/daxfs-sandbox-probe")
    let error = daxfs_errno()
    return result == 0 ? "forbidden returned 0" : "forbidden errno \(error)"
}

var arguments = Array(CommandLine.arguments.dropFirst())
var modcaps: String?
var seccomp: Seccomp.Action?
var extra: [Int32] = []
var reportTraps = false
while var first = arguments.first, first.hasPrefix("--") {
    arguments.removeFirst()
    if let equals = first.firstIndex(of: "=") {  // --modcaps=-chown, as virtiofsd spells it
        arguments.insert(String(first[first.index(after: equals)...]), at: 0)
        first = String(first[..<equals])
    }
    func value() -> String {
        guard !arguments.isEmpty else { fail("\(first) needs a value") }
        return arguments.removeFirst()
    }
    switch first {
    case "--modcaps": modcaps = value()
    case "--seccomp":
        do { seccomp = try Seccomp.Action.parse(value()) } catch { fail(error.description) }
    case "--extra":
        let text = value()
        guard let number = Int32(text) ?? Seccomp.number(of: text) else { fail("--extra \(text): not a syscall") }
        extra.append(number)
    case "--report-traps": reportTraps = true
    default: fail("unknown option \(first)")
    }
}
guard !arguments.isEmpty else { fail("no action") }
let action = arguments.removeFirst()

// A thread that exists before the filter goes in (TSYNC must reach it).
let installed = Locked(false)
var early: OSThread?
if action == "tsync" {
    early = try? OSThread(name: "probe-early") {
        while !installed.withLock({ $0 }) { usleep(1_000) }
        for line in statusLines("/proc/thread-self/status", ["Seccomp", "Seccomp_filters"]) { say("early \(line)") }
    }
}

if let modcaps {
    do {
        let kept = try Capabilities.parseModcaps(modcaps, defaults: .daxfsDefault)
        try Capabilities.apply(keeping: kept)
        say("kept \(kept)")
    } catch let error as SandboxOptionError {
        fail(error.description)
    } catch {
        fail("applying capabilities: \(error)")
    }
}
if reportTraps {
    do { try Seccomp.reportTraps() } catch { fail("SIGSYS handler: \(error)") }
}
if let seccomp {
    do { try Seccomp.install(seccomp, extra: extra) } catch { fail("installing the filter: \(error)") }
    say("installed \(seccomp)")
}
installed.withLock { $0 = true }

switch action {
case "status":
    for line in statusLines("/proc/self/status", ["Seccomp", "Seccomp_filters", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"]) {
        say(line)
    }
case "getpid":
    say("getpid \(getpid())")
case "forbidden":
    for line in statusLines("/proc/self/status", ["Seccomp", "Seccomp_filters"]) { say(line) }
    say(forbidden())
    let trapped = Seccomp.trapped
    say("trapped \(trapped.count) last \(trapped.last.map(String.init) ?? "none")")
case "tsync":
    early?.join()
case "chown":
    guard arguments.count == 2, let uid = UInt32(arguments[1]) else { fail("chown PATH UID") }
    do {
        try Syscall.fchownat(DAXFS_AT_FDCWD, arguments[0], uid: uid, gid: nil, flags: 0)
        say("chown ok")
    } catch {
        say("chown errno \(error.rawValue)")
    }
case "switch":
    guard arguments.count == 1 else { fail("switch PATH") }
    let path = arguments[0]
    let thread = try? OSThread(name: "probe-switch") {
        report(path, "start")
        if daxfs_become(65534, 65534) != 0 { say("become errno \(daxfs_errno())") }
        report(path, "fsuid-65534")
        if daxfs_become(0, 0) != 0 { say("become errno \(daxfs_errno())") }
        report(path, "fsuid-0")
        if daxfs_thread_setresuid(UInt32.max, 65534, UInt32.max) != 0 { say("setresuid errno \(daxfs_errno())") }
        report(path, "euid-65534")
        if daxfs_thread_setresuid(UInt32.max, 0, UInt32.max) != 0 { say("setresuid errno \(daxfs_errno())") }
        report(path, "euid-0")
    }
    thread?.join()
    report(path, "main")
case "bench":
    guard arguments.count == 1, let count = Int(arguments[0]) else { fail("bench N") }
    var runs: [Double] = []
    var sink: pid_t = 0
    for _ in 0 ..< 5 {
        let start = monotonicNanoseconds()
        for _ in 0 ..< count { sink &+= getpid() }
        runs.append(Double(monotonicNanoseconds() - start) / Double(count))
    }
    runs.sort()
    say("ns-per-call \(runs[2]) runs \(runs.map { String(format1($0)) }.joined(separator: ",")) sink \(sink != 0)")
case "exec":
    guard !arguments.isEmpty else { fail("exec PROGRAM ARG...") }
    let argv = arguments.map { strdup($0) } + [nil]
    execv(arguments[0], argv)
    fail("exec \(arguments[0]): errno \(daxfs_errno())")
default:
    fail("unknown action \(action)")
}

func format1(_ value: Double) -> String { String(Double(Int(value * 10)) / 10) }
