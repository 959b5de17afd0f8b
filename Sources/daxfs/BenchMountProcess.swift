import Glibc
import HostSystem

/// A `daxfs mount` child process serving one mountpoint for the benchmark.
/// Its stdout and stderr go to `logPath`, quoted when it fails.
final class BenchMountProcess {
    let label: String
    let mountpoint: String
    let logPath: String
    private let pid: pid_t
    private var exitStatus: Int32?
    private var stopped = false

    static let readyTimeout = 10.0
    static let stopTimeout = 10.0

    /// Starts `executable mount shared mountpoint extraArguments...` and waits
    /// until /proc/self/mountinfo lists the mountpoint as `fuse.daxfs`.
    init(label: String, executable: String, shared: String, mountpoint: String,
         extraArguments: [String], logPath: String) throws {
        self.label = label
        self.mountpoint = mountpoint
        self.logPath = logPath
        let arguments = ["daxfs", "mount", shared, mountpoint] + extraArguments
        note("starting \(label) mount: \(executable) \(arguments.dropFirst().joined(separator: " "))")
        pid = try spawnLogged(executable, arguments, logPath: logPath)
        try waitUntilMounted()
    }

    private func waitUntilMounted() throws {
        let deadline = monotonicSeconds() + Self.readyTimeout
        while !BenchMountProcess.isMounted(mountpoint) {
            if Interruption.requested {
                stopQuietly()
                throw BenchError.interrupted
            }
            if reap() {
                throw BenchError("the \(label) mount exited (\(describeStatus())) before mounting \(mountpoint)\(logExcerpt())")
            }
            if monotonicSeconds() > deadline {
                stopQuietly()
                throw BenchError("the \(label) mount did not appear at \(mountpoint) within \(Int(Self.readyTimeout)) s\(logExcerpt())")
            }
            sleepSeconds(0.01)
        }
    }

    /// Stops the server with SIGTERM and waits for it to unmount and exit 0.
    /// A server that does not exit in time is killed and its mount detached.
    func stop() throws {
        guard !stopped else { return }
        stopped = true
        guard !reap() else {
            try checkStopped()
            return
        }
        kill(pid, SIGTERM)
        let deadline = monotonicSeconds() + Self.stopTimeout
        while !reap() {
            if monotonicSeconds() > deadline {
                kill(pid, SIGKILL)
                while !reap() { sleepSeconds(0.01) }
                umount2(mountpoint, Int32(MNT_DETACH))
                throw BenchError("the \(label) mount did not exit within \(Int(Self.stopTimeout)) s of SIGTERM; killed it\(logExcerpt())")
            }
            sleepSeconds(0.01)
        }
        try checkStopped()
    }

    /// `stop` for cleanup paths, where the first error is already on its way.
    func stopQuietly() {
        do { try stop() } catch { note("warning: \(error)") }
    }

    private func checkStopped() throws {
        if BenchMountProcess.isMounted(mountpoint) {
            umount2(mountpoint, Int32(MNT_DETACH))
            throw BenchError("the \(label) mount exited (\(describeStatus())) but left \(mountpoint) mounted; detached it\(logExcerpt())")
        }
        guard exitStatus == 0 else {
            throw BenchError("the \(label) mount exited with \(describeStatus())\(logExcerpt())")
        }
    }

    /// Collects the child's exit status if it has exited; true once it has.
    private func reap() -> Bool {
        if exitStatus != nil { return true }
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return false }
        exitStatus = status
        return true
    }

    // WIFEXITED and friends are macros Swift cannot import; this is their glibc definition.
    private func describeStatus() -> String {
        guard let status = exitStatus else { return "still running" }
        let signal = status & 0x7f
        if signal == 0 { return "status \((status >> 8) & 0xff)" }
        return "signal \(signal)"
    }

    private func logExcerpt() -> String {
        let log = readSmallFile(logPath)
        guard !log.isEmpty else { return " (it printed nothing)" }
        let tail = log.count > 4000 ? "...\n" + String(log.suffix(4000)) : log
        return "; its output:\n" + tail
    }

    /// True when /proc/self/mountinfo has `path` as a mountpoint of type
    /// `fuse.daxfs`. Fields: id parent dev root mountpoint options [optional...] - fstype source superoptions.
    static func isMounted(_ path: String) -> Bool {
        let wanted = escapedForMountinfo(path)
        for line in readSmallFile("/proc/self/mountinfo").split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 4, fields[4] == wanted,
                  let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count
            else { continue }
            if fields[dash + 1] == "fuse.daxfs" { return true }
        }
        return false
    }

    /// The kernel writes space, tab, newline and backslash as octal escapes.
    private static func escapedForMountinfo(_ path: String) -> Substring {
        var out = ""
        for character in path {
            switch character {
            case " ": out += "\\040"
            case "\t": out += "\\011"
            case "\n": out += "\\012"
            case "\\": out += "\\134"
            default: out.append(character)
            }
        }
        return Substring(out)
    }
}
