import Glibc
import HostSystem
import Testing

/// The runner the tests start child processes with: a chatty child never
/// blocks on its output, a hung one is killed at its deadline, with its
/// whole process group.
@Suite struct ChildProcessTests {
    @Test func aChildThatWritesMoreThanAPipeHoldsFinishes() throws {
        // 4 MiB on stdout and on stderr, far past a pipe's 64 KiB.
        let outcome = try ChildProcess.run("/bin/sh", ["-c", "yes a | head -c 4194304; yes b | head -c 4194304 >&2; exit 3"],
                                           timeout: 60)
        #expect(!outcome.timedOut)
        #expect(outcome.status == 3)
        #expect(outcome.stdout.utf8.count == 4 << 20 && outcome.stdout.hasPrefix("a\na\n"))
        #expect(outcome.stderr.utf8.count == 4 << 20 && outcome.stderr.hasPrefix("b\nb\n"))
    }

    @Test func aHungChildIsKilledAtItsDeadlineWithItsChildren() throws {
        let outcome = try ChildProcess.run("/bin/sh", ["-c", "sleep 300 & echo started; wait"], timeout: 0.5)
        #expect(outcome.timedOut)
        #expect(outcome.status == 128 + SIGKILL)
        #expect(outcome.seconds < 5)
        #expect(outcome.stdout == "started\n")
        // The grandchild went with the group.
        let left = try ChildProcess.run("/bin/sh", ["-c", "pgrep -f '^sleep 300$' || true"], timeout: 10)
        #expect(left.stdout.isEmpty, "left running: \(left.stdout)")
    }
}
