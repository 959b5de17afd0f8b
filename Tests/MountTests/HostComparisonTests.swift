import CLinux
import Foundation
import Glibc
import Testing

/// Each test runs one scenario on a host directory and through the mount:
/// return values, errnos, data and the resulting host tree must agree.
@Suite(.enabled(if: MountEnvironment.canMount, "needs root and /dev/fuse"))
struct HostComparisonTests {
    @Test(arguments: Mode.allCases)
    func openFlags(mode: Mode) throws {
        try compareWithHost(mode) { p in
            let fd = p.open("f", O_CREAT | O_WRONLY, 0o640)
            p.write(fd, "hello world")
            p.close(fd)
            p.open("f", O_CREAT | O_EXCL | O_WRONLY)                  // EEXIST
            p.open("missing", O_RDONLY)                                // ENOENT
            p.open("f/below", O_RDONLY)                                // ENOTDIR
            p.mkdir("d")
            p.open("d", O_WRONLY)                                      // EISDIR
            p.close(p.open("d", O_RDONLY | O_DIRECTORY))
            p.open("f", O_RDONLY | O_DIRECTORY)                        // ENOTDIR

            let append = p.open("f", O_WRONLY | O_APPEND)
            p.write(append, "!!")
            p.pwrite(append, Array("??".utf8), at: 0)                  // O_APPEND: still at the end
            p.close(append)
            p.readFile("f")

            let trunc = p.open("f", O_RDWR | O_TRUNC)
            p.fstat(trunc, label: "after O_TRUNC")
            p.write(trunc, "short")
            p.close(trunc)
            p.readFile("f")

            let excl = p.open("g", O_CREAT | O_EXCL | O_RDWR, 0o600)
            p.write(excl, "new")
            p.lseek(excl, 0, SEEK_SET)
            p.read(excl, count: 100)
            p.read(excl, count: 100)                                   // end of file: 0
            p.close(excl)
            p.stat("f")
            p.stat("g")
        }
    }

    @Test(arguments: Mode.allCases)
    func readAndWrite(mode: Mode) throws {
        try compareWithHost(mode) { p in
            let big = pattern(1 << 20, seed: 1)
            let fd = p.open("big", O_CREAT | O_RDWR)
            p.write(fd, big)
            p.pread(fd, count: 1 << 20, at: 0)
            p.pread(fd, count: 4096, at: 12345)                        // unaligned
            p.pwrite(fd, pattern(12345, seed: 2), at: 4097)            // unaligned, inside
            p.pwrite(fd, pattern(777, seed: 3), at: (1 << 20) - 100)   // across the end
            p.pread(fd, count: 20000, at: 4000)
            p.pread(fd, count: 1000, at: (1 << 20) + 600)              // short at end of file
            p.pread(fd, count: 10, at: 10 << 20)                       // past end: 0 bytes
            p.pwrite(fd, [1, 2, 3], at: 3 << 20)                       // leaves a hole
            p.pread(fd, count: 64, at: (3 << 20) - 32)
            p.call("fsync") { fsync(fd) }
            p.call("fdatasync") { fdatasync(fd) }
            p.close(fd)
            p.readFile("big")
            p.stat("big")

            // One write larger than any max_write.
            let huge = p.open("huge", O_CREAT | O_WRONLY)
            p.write(huge, pattern((5 << 20) + 5, seed: 11))
            p.close(huge)
            p.readFile("huge")

            // Many small appends, as a log writer does.
            let log = p.open("log", O_CREAT | O_WRONLY | O_APPEND)
            for i in 0 ..< 200 { _ = pwriteAll(log, Array("line \(i)\n".utf8), at: 0) }
            p.close(log)
            p.readFile("log")
        }
    }

    @Test(arguments: Mode.allCases)
    func attributes(mode: Mode) throws {
        try compareWithHost(mode) { p in
            p.create("f", Array("data".utf8), mode: 0o644)
            p.stat("f")
            p.chmod("f", 0o600)
            p.chmod("f", 0o4755)                                       // setuid survives (root)
            p.stat("f")
            p.call("chown(f, 1000, 1000)") { chown(p.path("f"), 1000, 1000) }
            p.stat("f")
            p.call("chown(f, -1, 0)") { chown(p.path("f"), uid_t.max, 0) }
            p.stat("f")

            var times = [timespec(tv_sec: 1_000_000_000, tv_nsec: 123_456_789), timespec(tv_sec: 1_500_000_000, tv_nsec: 987_654_321)]
            p.call("utimensat(f)") { utimensat(AT_FDCWD, p.path("f"), &times, 0) }
            p.stat("f", times: true)
            var omitAtime = [timespec(tv_sec: 0, tv_nsec: DAXFS_UTIME_OMIT), timespec(tv_sec: 1_600_000_000, tv_nsec: 5)]
            let fd = p.open("f", O_RDWR)
            p.call("futimens(omit atime)") { futimens(fd, &omitAtime) }
            p.fstat(fd, label: "f")
            p.close(fd)
            p.stat("f", times: true)

            p.mkdir("d", 0o700)
            p.call("chmod(d, 0o1777)") { chmod(p.path("d"), 0o1777) }
            p.stat("d")
            p.call("chown(missing)") { chown(p.path("missing"), 1, 1) }  // ENOENT

            p.call("access(f, F_OK)") { access(p.path("f"), F_OK) }
            p.call("access(f, R_OK|W_OK)") { access(p.path("f"), R_OK | W_OK) }
            p.create("plain", [], mode: 0o644)
            p.call("access(plain, X_OK)") { access(p.path("plain"), X_OK) }   // EACCES even for root
            p.call("access(missing, F_OK)") { access(p.path("missing"), F_OK) }
        }
    }

    @Test(arguments: Mode.allCases)
    func truncation(mode: Mode) throws {
        try compareWithHost(mode) { p in
            p.create("f", pattern(100_000, seed: 4))
            p.truncate("f", 50_000)
            p.readFile("f")
            p.truncate("f", 200_000)                                   // grows with zeros
            p.readFile("f")
            let fd = p.open("f", O_RDWR)
            p.call("ftruncate(1)") { ftruncate(fd, 1) }
            p.pread(fd, count: 10, at: 0)
            p.call("ftruncate(-1)") { ftruncate(fd, -1) }              // EINVAL
            p.call("ftruncate(3 MiB + 1)") { ftruncate(fd, 3 << 20 + 1) }
            p.fstat(fd, label: "f")
            p.close(fd)
            let readOnly = p.open("f", O_RDONLY)
            p.call("ftruncate(read-only fd)") { ftruncate(readOnly, 0) }  // EINVAL/EBADF
            p.close(readOnly)
            p.mkdir("d")
            p.truncate("d", 0)                                         // EISDIR
            p.truncate("missing", 0)                                   // ENOENT
        }
    }

    @Test(arguments: Mode.allCases)
    func namespaceOperations(mode: Mode) throws {
        try compareWithHost(mode) { p in
            p.create("target", Array("t".utf8))
            p.symlink("target", "link")
            p.symlink("/nonexistent/far/away", "dangling")
            p.readlink("link")
            p.readlink("dangling")
            p.readlink("target")                                       // EINVAL
            p.stat("link", follow: false)
            p.stat("link")
            p.stat("dangling")                                         // ENOENT
            p.readFile("link")
            p.symlink("x", "link")                                     // EEXIST

            p.call("mkfifo(fifo)") { mkfifo(p.path("fifo"), 0o640) }
            p.call("mknod(fifo2, S_IFIFO)") { mknod(p.path("fifo2"), S_IFIFO | 0o600, 0) }
            p.call("mknod(null, S_IFCHR 1:3)") { mknod(p.path("null"), S_IFCHR | 0o600, dev_t(daxfs_makedev(1, 3))) }
            p.stat("fifo")
            p.stat("fifo2")
            p.stat("null")
            p.unlink("null")

            p.mkdir("d")
            p.mkdir("d")                                               // EEXIST
            p.mkdir("d/e/f")                                           // ENOENT
            p.create("d/file", [1])
            p.rmdir("d")                                               // ENOTEMPTY
            p.rmdir("d/file")                                          // ENOTDIR
            p.unlink("d")                                              // EISDIR
            p.unlink("d/file")
            p.rmdir("d")
            p.rmdir("d")                                               // ENOENT
            p.stat("d")
            p.unlink("fifo2")
            p.unlink("link")
            p.stat("target")

            p.link("target", "hard")
            p.stat("target")                                           // nlink 2
            p.stat("hard")
            p.link("target", "hard")                                   // EEXIST
            p.mkdir("dir")
            p.link("dir", "dirlink")                                   // EPERM
            p.unlink("target")
            p.stat("hard")                                             // nlink 1 again
            p.list("")

            // Unusual names and the limits of names and link targets.
            for name in ["with space", "new\nline", "tab\there", "back\\slash", "ünïcødé-✓", ".hidden", "-dash", String(repeating: "n", count: 255)] {
                p.create(name, Array(name.utf8))
                p.stat(name)
            }
            p.create(String(repeating: "n", count: 256), [])           // ENAMETOOLONG
            p.symlink(String(repeating: "t", count: 4095), "longlink")
            p.readlink("longlink")
            p.symlink(String(repeating: "t", count: 4096), "toolong")   // ENAMETOOLONG
            p.list("")

            // fsync on a directory (FSYNCDIR).
            let directory = p.open("dir", O_RDONLY | O_DIRECTORY)
            p.call("fsync(dir)") { fsync(directory) }
            p.close(directory)
        }
    }

    @Test(arguments: Mode.allCases)
    func renames(mode: Mode) throws {
        try compareWithHost(mode) { p in
            p.create("a", Array("aaa".utf8))
            p.create("b", Array("bb".utf8))
            p.mkdir("d")
            p.mkdir("e")
            p.create("e/inside", [7])

            p.rename("a", "a2")
            p.rename("a2", "b", flags: LinuxConstant.renameNoReplace)  // EEXIST
            p.rename("a2", "c", flags: LinuxConstant.renameNoReplace)
            p.rename("c", "b", flags: LinuxConstant.renameExchange)
            p.readFile("b")
            p.readFile("c")
            p.rename("b", "missing", flags: LinuxConstant.renameExchange)  // ENOENT
            p.rename("c", "b")                                         // replaces b
            p.readFile("b")
            p.rename("b", "d/b")                                       // across directories
            p.rename("d/b", "d/b")                                     // same name: no-op
            p.rename("d", "e")                                         // ENOTEMPTY
            p.rename("e", "e/inside/x")                                // ENOTDIR or EINVAL
            p.rename("e", "e/sub")                                     // EINVAL: into itself
            p.rename("d/b", "e")                                       // EISDIR
            p.rename("e", "d/b")                                       // ENOTDIR
            p.rename("d", "e", flags: LinuxConstant.renameExchange)    // swap directories
            p.rename("missing", "z")                                   // ENOENT
            p.mkdir("empty")
            p.rename("e", "empty")                                     // dir over empty dir
            p.list("")
            p.list("empty")
            p.list("d")
        }
    }

    @Test(arguments: Mode.allCases)
    func extendedAttributes(mode: Mode) throws {
        try compareWithHost(mode) { p in
            p.create("f", [1, 2, 3])
            let file = p.path("f")
            func set(_ name: String, _ value: String, _ flags: Int32) {
                p.call("setxattr(\(name), \(value), \(flags))") { Xattr.set(file, name, value, value.utf8.count, flags) }
            }
            func get(_ name: String) {
                switch Xattr.value(file, name) {
                case .success(let value): p.note("getxattr(\(name)) = \(String(decoding: value, as: UTF8.self))")
                case .failure(let error): p.note("getxattr(\(name)) = \(error)")
                }
            }
            func list() {
                let names = Xattr.names(file).map { $0.filter { $0.hasPrefix("user.") } }
                p.note("listxattr = \((try? names.get().joined(separator: ",")) ?? "\(names)")")
            }
            set("user.test", "value one", 0)
            get("user.test")
            set("user.test", "x", LinuxConstant.xattrCreate)           // EEXIST
            set("user.other", "y", LinuxConstant.xattrReplace)         // ENODATA
            set("user.test", "replaced", LinuxConstant.xattrReplace)
            set("user.empty", "", 0)
            get("user.test")
            get("user.empty")
            list()
            p.call("getxattr(size query)") { Xattr.get(file, "user.test", nil, 0) }
            var small = [UInt8](repeating: 0, count: 2)
            p.call("getxattr(2-byte buffer)") { Xattr.get(file, "user.test", &small, 2) }  // ERANGE
            p.call("listxattr(1-byte buffer)") {
                var one: CChar = 0
                return Xattr.list(file, &one, 1)                       // ERANGE
            }
            p.call("removexattr(user.test)") { Xattr.remove(file, "user.test") }
            get("user.test")                                           // ENODATA
            p.call("removexattr(user.test)") { Xattr.remove(file, "user.test") }  // ENODATA
            list()
            get("user.never")                                          // ENODATA
            set("user.big", String(repeating: "v", count: 3000), 0)
            get("user.big")
            set("user.huge", String(repeating: "h", count: 65536), 0)  // too big for ext4
            set("user.toolarge", String(repeating: "h", count: 65537), 0)  // E2BIG
            set(String(repeating: "k", count: 300), "v", 0)            // ERANGE: name too long
            set("nonamespace", "v", 0)                                 // EOPNOTSUPP
            list()
        }
    }

    @Test(arguments: Mode.allCases)
    func allocationAndHoles(mode: Mode) throws {
        try compareWithHost(mode) { p in
            let fd = p.open("f", O_CREAT | O_RDWR)
            p.call("fallocate(0, 1 MiB)") { daxfs_fallocate(fd, 0, 0, 1 << 20) }
            p.fstat(fd, label: "after fallocate")
            p.pwrite(fd, pattern(1 << 20, seed: 5), at: 0)
            p.call("fallocate(punch 64 KiB at 128 KiB)") {
                daxfs_fallocate(fd, LinuxConstant.fallocPunchHole | LinuxConstant.fallocKeepSize, 128 << 10, 64 << 10)
            }
            p.fstat(fd, label: "after punch")                          // size unchanged
            p.pread(fd, count: 256 << 10, at: 64 << 10)                // zeros in the hole
            p.call("fallocate(keep size, past end)") {
                daxfs_fallocate(fd, LinuxConstant.fallocKeepSize, 1 << 20, 1 << 20)
            }
            p.fstat(fd, label: "after keep-size")
            p.call("fallocate(punch without keep size)") { daxfs_fallocate(fd, LinuxConstant.fallocPunchHole, 0, 4096) }  // EOPNOTSUPP
            p.close(fd)

            // A sparse file: data at 0 and at 1 MiB, a hole between.
            let sparse = p.open("sparse", O_CREAT | O_RDWR)
            p.pwrite(sparse, pattern(4096, seed: 6), at: 0)
            p.pwrite(sparse, pattern(4096, seed: 7), at: 1 << 20)
            p.call("fsync") { fsync(sparse) }
            p.lseek(sparse, 0, LinuxConstant.seekData)
            p.lseek(sparse, 0, LinuxConstant.seekHole)
            p.lseek(sparse, 8192, LinuxConstant.seekData)
            p.lseek(sparse, (1 << 20) + 10, LinuxConstant.seekHole)
            p.lseek(sparse, 2 << 20, LinuxConstant.seekData)          // ENXIO
            p.lseek(sparse, 0, SEEK_END)
            p.close(sparse)
        }
    }

    @Test(arguments: Mode.allCases)
    func directIO(mode: Mode) throws {
        try compareWithHost(mode) { p in
            let size = 1 << 20
            guard let buffer = aligned(size) else { throw HarnessError("posix_memalign") }
            defer { free(buffer) }
            let data = pattern(size, seed: 12)
            data.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: size) }
            let fd = p.open("direct", O_CREAT | O_RDWR | DAXFS_O_DIRECT)
            p.call("pwrite O_DIRECT 1 MiB") { Glibc.pwrite(fd, buffer, size, 0) }
            p.call("pwrite O_DIRECT 4 KiB at 8 KiB") { Glibc.pwrite(fd, buffer, 4096, 8192) }
            memset(buffer, 0, size)
            p.call("pread O_DIRECT 64 KiB at 4 KiB") { Glibc.pread(fd, buffer, 65536, 4096) }
            p.note("data \(fingerprint(UnsafeRawBufferPointer(start: buffer, count: 65536)))")
            p.close(fd)
            p.readFile("direct")
        }
    }

    @Test(arguments: Mode.allCases)
    func copyFileRange(mode: Mode) throws {
        try compareWithHost(mode) { p in
            p.create("src", pattern(300_000, seed: 8))
            let source = p.open("src", O_RDONLY)
            let destination = p.open("dst", O_CREAT | O_RDWR)
            p.pwrite(destination, pattern(1000, seed: 9), at: 0)
            func copy(from: Int64, to: Int64, length: Int) {
                var offIn = from, offOut = to
                p.call("copy_file_range(\(from) -> \(to), \(length))") {
                    daxfs_copy_file_range(source, &offIn, destination, &offOut, length, 0)
                }
            }
            copy(from: 0, to: 500, length: 100_000)
            copy(from: 250_000, to: 200_000, length: 100_000)          // short: source ends
            copy(from: 400_000, to: 0, length: 10)                     // past end: 0
            p.close(source)
            p.close(destination)
            p.readFile("dst")
        }
    }

    @Test(arguments: Mode.allCases)
    func posixLocksAgainstAnotherProcess(mode: Mode) throws {
        try compareWithHost(mode) { p in
            p.create("f", pattern(1000, seed: 10))
            try withLockHolder(p.path("f"), start: 0, length: 100) {
                let fd = p.open("f", O_RDWR)
                func lock(_ type: Int32, _ start: Int, _ length: Int, _ command: Int32 = F_SETLK) {
                    var lock = flock()
                    lock.l_type = Int16(type)
                    lock.l_whence = Int16(SEEK_SET)
                    lock.l_start = off_t(start)
                    lock.l_len = off_t(length)
                    let outcome = sys { fcntl(fd, command, &lock) }
                    let shown = command == F_GETLK ? " -> type \(lock.l_type) \(lock.l_start)+\(lock.l_len)" : ""
                    p.note("fcntl(\(command == F_GETLK ? "F_GETLK" : "F_SETLK"), type \(type), \(start)+\(length)) = \(outcome)\(shown)")
                }
                lock(F_WRLCK, 50, 10)                                  // EAGAIN: held by the helper
                lock(F_RDLCK, 0, 1)                                    // EAGAIN
                lock(F_WRLCK, 100, 100)                                // free range
                lock(F_WRLCK, 0, 10, F_GETLK)                          // reports the helper's lock
                lock(F_WRLCK, 500, 10, F_GETLK)                        // F_UNLCK
                lock(F_UNLCK, 100, 100)
                p.close(fd)
            }
        }
    }

    @Test(arguments: Mode.allCases)
    func flockBetweenTwoOpens(mode: Mode) throws {
        try compareWithHost(mode) { p in
            p.create("f", [1])
            let first = p.open("f", O_RDONLY)
            let second = p.open("f", O_RDONLY)
            p.call("flock(first, LOCK_EX|LOCK_NB)") { flock(first, LOCK_EX | LOCK_NB) }
            p.call("flock(second, LOCK_EX|LOCK_NB)") { flock(second, LOCK_EX | LOCK_NB) }  // EWOULDBLOCK
            p.call("flock(second, LOCK_SH|LOCK_NB)") { flock(second, LOCK_SH | LOCK_NB) }  // EWOULDBLOCK
            p.call("flock(first, LOCK_UN)") { flock(first, LOCK_UN) }
            p.call("flock(second, LOCK_SH|LOCK_NB)") { flock(second, LOCK_SH | LOCK_NB) }
            p.call("flock(first, LOCK_SH|LOCK_NB)") { flock(first, LOCK_SH | LOCK_NB) }    // shared + shared
            p.call("flock(first, LOCK_EX|LOCK_NB)") { flock(first, LOCK_EX | LOCK_NB) }   // EWOULDBLOCK
            p.close(first)
            p.call("flock(second, LOCK_EX|LOCK_NB)") { flock(second, LOCK_EX | LOCK_NB) }  // first's lock went with close
            p.close(second)
        }
    }

    /// statfs through the mount reports the shared directory's filesystem.
    @Test(arguments: Mode.allCases)
    func statfsMatchesTheHostFilesystem(mode: Mode) throws {
        try withMount(mode) { mount in
            var host = statvfs(), mounted = statvfs()
            try must("statvfs \(mount.shared)") { statvfs(mount.shared, &host) }
            try must("statvfs \(mount.mountpoint)") { statvfs(mount.mountpoint, &mounted) }
            #expect(mounted.f_bsize == host.f_bsize)
            #expect(mounted.f_frsize == host.f_frsize)
            #expect(mounted.f_blocks == host.f_blocks)
            #expect(mounted.f_files == host.f_files)
            #expect(mounted.f_namemax == host.f_namemax)
            // Free space moves with other tests; it must be in the same range.
            #expect(mounted.f_bfree <= host.f_blocks && mounted.f_bavail <= mounted.f_bfree)
        }
    }
}

/// Page-aligned memory for O_DIRECT.
func aligned(_ size: Int) -> UnsafeMutableRawPointer? {
    var pointer: UnsafeMutableRawPointer?
    return posix_memalign(&pointer, 4096, size) == 0 ? pointer : nil
}

/// Runs `body` while a python3 process holds a POSIX write lock on
/// `start ..< start + length` of `path` (classic locks never conflict within
/// one process, so the holder must be another one).
func withLockHolder(_ path: String, start: Int, length: Int, _ body: () throws -> Void) throws {
    guard let python = which("python3") else { throw HarnessError("python3 is needed for the lock test") }
    let script = """
        import fcntl, os, sys
        fd = os.open(sys.argv[1], os.O_RDWR)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, int(sys.argv[3]), int(sys.argv[2]))
        print("locked", flush=True)
        sys.stdin.read()
        """
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = ["-c", script, path, "\(start)", "\(length)"]
    let input = Pipe(), output = Pipe()
    process.standardInput = input
    process.standardOutput = output
    try process.run()
    defer {
        try? input.fileHandleForWriting.close()
        _ = waitUntil(seconds: 10) { !process.isRunning }
    }
    let line = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
    guard line.hasPrefix("locked") else { throw HarnessError("lock holder did not get its lock: \(line)") }
    try body()
}
