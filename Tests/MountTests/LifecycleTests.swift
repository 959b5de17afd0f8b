import Foundation
import Glibc
import Testing

/// Starting, stopping and refusing mounts, and fio as an outside workload.
@Suite(.enabled(if: MountEnvironment.canMount, "needs root and /dev/fuse"))
struct LifecycleTests {
    @Test(arguments: [SIGTERM, SIGINT])
    func signalUnmountsAndExitsZero(signal: Int32) throws {
        let mount = try DaxfsMount(.passthrough, label: "signal")
        try writeFile(mount.mnt("kept"), [1, 2, 3])
        kill(mount.process.processIdentifier, signal)
        mount.waitForExit()
        #expect(!MountTable.isDaxfsMounted(at: mount.mountpoint))
        #expect(try readFile(mount.host("kept")).get() == [1, 2, 3])
        mount.stop()
    }

    @Test func umountMakesItExitZero() throws {
        let mount = try DaxfsMount(.passthrough, label: "umount")
        let result = try run(which("umount") ?? "/bin/umount", [mount.mountpoint])
        #expect(result.status == 0, "umount: \(result.output)")
        mount.waitForExit()
        #expect(!MountTable.isDaxfsMounted(at: mount.mountpoint))
        mount.stop()
    }

    /// A mount in use when SIGTERM arrives is detached at once and served
    /// until its last user leaves; then daxfs exits 0.
    @Test func busyMountIsDetachedThenServedUntilReleased() throws {
        let mount = try DaxfsMount(.noPassthrough, label: "busy")
        try writeFile(mount.mnt("open-file"), pattern(1000, seed: 60))
        let fd = open(mount.mnt("open-file"), O_RDONLY)
        try #require(fd >= 0)
        kill(mount.process.processIdentifier, SIGTERM)
        #expect(waitUntil(seconds: 10) { !MountTable.isDaxfsMounted(at: mount.mountpoint) }, "detached from the namespace")
        #expect(try preadAll(fd, count: 1000, at: 0).get() == pattern(1000, seed: 60), "the open file is still served")
        close(fd)
        mount.waitForExit()
        mount.stop()
    }

    @Test func missingSharedDirectoryIsAnError() throws {
        let scratch = try ScratchDirectory("missing")
        defer { scratch.remove() }
        let missing = scratch.path + "/no-such-dir"
        let result = try run(MountEnvironment.daxfsBinary, ["mount", missing, try scratch.make("mnt")], timeout: 10)
        #expect(result.exitedNormally && result.status != 0)
        #expect(result.output.contains(missing), "the message names the path: \(result.output)")
        #expect(MountTable.entry(at: scratch.path + "/mnt") == nil)
    }

    @Test func missingMountpointIsAnError() throws {
        let scratch = try ScratchDirectory("missing")
        defer { scratch.remove() }
        let missing = scratch.path + "/no-such-mnt"
        let result = try run(MountEnvironment.daxfsBinary, ["mount", try scratch.make("shared"), missing], timeout: 10)
        #expect(result.exitedNormally && result.status != 0)
        #expect(result.output.contains(missing), "the message names the path: \(result.output)")
    }

    /// daxfs refuses to stack a second mount on a FUSE mountpoint, in plain words.
    @Test func mountingOnTopOfAMountIsRefused() throws {
        try withMount(.passthrough, label: "stacked") { mount in
            try writeFile(mount.mnt("first"), [1])
            let otherShare = try mount.hostScratch("other")
            let result = try run(MountEnvironment.daxfsBinary, ["mount", otherShare, mount.mountpoint], timeout: 10)
            if result.status == 0 || !result.exitedNormally {
                Issue.record("second daxfs on a busy mountpoint did not fail: status \(result.status): \(result.output)")
            }
            #expect(result.output.lowercased().contains("busy"), "says the mountpoint is busy: \(result.output)")
            #expect(MountTable.entries().filter { $0.mountpoint == mount.mountpoint }.count == 1)
            #expect(try readFile(mount.mnt("first")).get() == [1], "the first mount still serves")
        }
    }

    @Test(arguments: ["--threads=1", "--cache=never", "--cache=always"])
    func optionsStillServeCorrectly(option: String) throws {
        try compareWithHost(.noPassthrough, arguments: [option]) { p in
            p.create("f", pattern(200_000, seed: 70))
            let fd = p.open("f", O_RDWR)
            p.pwrite(fd, pattern(5000, seed: 71), at: 199_000)
            p.pread(fd, count: 300_000, at: 0)
            p.close(fd)
            p.mkdir("d")
            p.rename("f", "d/g")
            p.stat("d/g")
            p.list("d")
        }
    }

    /// fio with crc32c verification: sequential 1 MiB writes and reads, and
    /// 4 KiB random I/O.
    @Test(arguments: Mode.allCases)
    func fioVerifiedWorkloads(mode: Mode) throws {
        guard let fio = which("fio") else {
            print("skipping fio test: fio is not in PATH")
            return
        }
        try withMount(mode, label: "fio") { mount in
            let common = ["--directory=\(mount.mountpoint)", "--ioengine=psync", "--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0", "--group_reporting"]
            let jobs: [[String]] = [
                ["--name=seqwrite", "--rw=write", "--bs=1M", "--size=64M", "--filename=seq"],
                ["--name=seqread", "--rw=read", "--bs=1M", "--size=64M", "--filename=seq"],
                ["--name=randwrite", "--rw=randwrite", "--bs=4k", "--size=16M", "--filename=rand"],
                ["--name=randread", "--rw=randread", "--bs=4k", "--size=16M", "--filename=rand"],
            ]
            for job in jobs {
                let result = try run(fio, common + job, timeout: 120)
                #expect(result.exitedNormally && result.status == 0, "fio \(job[0]) failed: \(result.output)")
                #expect(!result.output.contains("verify: bad"), "fio \(job[0]) verify error: \(result.output)")
            }
        }
    }
}
