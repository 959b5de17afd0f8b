import CLinux
import Glibc

/// A child process run to its end or to a deadline. Its stdout and stderr go
/// to unlinked temporary files, never to a pipe: a child that writes more
/// than a pipe holds while nobody reads would stop, and a runner that reads
/// to the end before it looks at the clock would wait with it forever.
public enum ChildProcess {
    public struct Outcome: Sendable {
        /// The exit status, or 128 + the signal that ended it.
        public var status: Int32
        /// Killed (SIGKILL, its whole process group) at the deadline.
        public var timedOut: Bool
        public var stdout: String
        public var stderr: String
        public var seconds: Double
    }

    /// Runs `executable` with `arguments` (stdin /dev/null) in a process group
    /// of its own; `started` runs on this thread right after the spawn.
    /// With `mergeOutput` stderr goes where stdout goes (`stdout`).
    public static func run(_ executable: String, _ arguments: [String], timeout: Double, mergeOutput: Bool = false,
                           started: (pid_t) -> Void = { _ in }) throws(Errno) -> Outcome {
        let out = try scratchFile(), err = mergeOutput ? out : try scratchFile()
        defer { close(out); if !mergeOutput { close(err) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, out, 1)
        posix_spawn_file_actions_adddup2(&actions, err, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard spawned == 0 else { throw Errno(spawned) }
        let start = monotonicNanoseconds()
        started(pid)
        let deadline = start + UInt64(max(0, timeout) * 1e9)
        var status: Int32 = 0
        var timedOut = false
        while true {
            let done = waitpid(pid, &status, WNOHANG)
            if done == pid { break }
            if done < 0 && daxfs_errno() != EINTR { break }
            if monotonicNanoseconds() >= deadline {
                timedOut = true
                kill(-pid, SIGKILL)
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                break
            }
            usleep(5_000)
        }
        // WIFEXITED / WEXITSTATUS / WTERMSIG by hand (function-like macros).
        let signal = status & 0x7F
        let code = signal == 0 ? (status >> 8) & 0xFF : 128 + signal
        return Outcome(status: code, timedOut: timedOut, stdout: contents(out), stderr: mergeOutput ? "" : contents(err),
                       seconds: Double(monotonicNanoseconds() - start) / 1e9)
    }

    /// An unlinked read-write file in /tmp.
    private static func scratchFile() throws(Errno) -> Int32 {
        var name = Array("/tmp/daxfs-child-XXXXXX".utf8CString)
        let fd = mkstemp(&name)
        guard fd >= 0 else { throw Errno(daxfs_errno()) }
        unlink(name)
        return fd
    }

    private static func contents(_ fd: Int32) -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        var offset: off_t = 0
        while true {
            let count = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            guard count > 0 else { break }
            bytes += chunk[0 ..< count]
            offset += off_t(count)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
