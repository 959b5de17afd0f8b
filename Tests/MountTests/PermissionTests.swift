import Foundation
import Glibc
import Testing

/// Callers other than root, through `--allow-other`.
@Suite(.enabled(if: MountEnvironment.canMount, "needs root and /dev/fuse"))
struct PermissionTests {
    /// An unprivileged caller (uid 1000, through allow_other) gets the same
    /// permission checks, errnos and file ownership as on the host: daxfs
    /// must act with the caller's credentials, not its own root ones.
    ///
    /// With `--allow-other` the kernel checks the mode bits first (the
    /// default); with `--no-default-permissions` only daxfs checks, and the
    /// results of these checks must be the same either way.
    @Test(arguments: Mode.allCases, [false, true])
    func unprivilegedCallerGetsTheSamePermissions(mode: Mode, kernelChecks: Bool) throws {
        try compareWithHost(mode, arguments: ["--allow-other"] + (kernelChecks ? [] : ["--no-default-permissions"])) { p in
            // mkdtemp made the scratch directory 0700; uid 1000 must reach the roots.
            try must("chmod scratch") { chmod(URL(fileURLWithPath: p.root).deletingLastPathComponent().path, 0o755) }
            p.create("rootfile", Array("secret".utf8), mode: 0o644)
            p.mkdir("public", 0o777)
            p.chmod("public", 0o777)
            p.mkdir("private", 0o700)
            p.mkdir("sticky", 0o777)
            p.chmod("sticky", 0o1777)
            p.create("sticky/rootowned", [1], mode: 0o666)
            for line in try runAsUser(1000, unprivilegedScript, root: p.root) { p.note("uid 1000: " + line) }
            p.stat("public/mine")
            p.stat("public/minedir")
            p.stat("rootfile")
        }
    }

    /// Groups and modes: a caller whose supplementary group owns a set-group-ID
    /// directory creates in it (and the new nodes inherit the group), group
    /// permissions come from supplementary groups, the caller's umask applies
    /// (FUSE_DONT_MASK), and writing a set-user-ID file one does not own
    /// clears the bit — all exactly as on the host.
    @Test(arguments: Mode.allCases, [false, true])
    func groupsUmaskAndSetIDBitsMatchTheHost(mode: Mode, kernelChecks: Bool) throws {
        try compareWithHost(mode, arguments: ["--allow-other"] + (kernelChecks ? [] : ["--no-default-permissions"])) { p in
            try must("chmod scratch") { chmod(URL(fileURLWithPath: p.root).deletingLastPathComponent().path, 0o755) }
            p.mkdir("team", 0o770)
            p.call("chown team") { chown(p.path("team"), 0, 2000) }
            p.chmod("team", 0o2770)
            p.create("teamfile", Array("shared".utf8), mode: 0o660)
            p.call("chown teamfile") { chown(p.path("teamfile"), 0, 2000) }
            p.create("setuid", Array("#!/bin/sh\n".utf8), mode: 0o755)
            p.chmod("setuid", 0o4777)
            p.mkdir("open", 0o777)
            p.chmod("open", 0o777)
            for line in try runAsUser(1000, groupScript, root: p.root, groups: [2000], umask: 0o027) { p.note("uid 1000: " + line) }
            p.stat("team/new")
            p.stat("team/sub")
            p.stat("teamfile")
            p.stat("setuid")
            p.stat("open/masked")
            p.stat("open/maskeddir")
        }
    }
}

/// What every uid-1000 script below starts with: `attempt` prints a label
/// with "ok" (and the result) or the errno's name; `read` reads a whole
/// file; `p` names a path under the root given as the first argument.
let scriptPrelude = """
    import errno, os, sys
    root = sys.argv[1]
    def attempt(label, action):
        try:
            result = action()
            print(label, "ok", result if isinstance(result, (bytes, str)) else "")
        except OSError as error:
            print(label, errno.errorcode.get(error.errno, error.errno))
    def read(path):
        with open(path, "rb") as f:
            return f.read()
    p = lambda name: os.path.join(root, name)

    """

/// What only the kernel's own checks get right for other users: a file in
/// root's 0700 directory that root has looked up (the kernel then walks the
/// cached name without asking), a FIFO's mode bits (the kernel opens FIFOs
/// itself), and a directory its owner may read but not search.
@Suite(.enabled(if: MountEnvironment.canMount, "needs root and /dev/fuse"))
struct CachedNamePermissionTests {
    @Test(arguments: Mode.allCases)
    func otherUsersGetTheHostsAnswersForCachedNames(mode: Mode) throws {
        try compareWithHost(mode, arguments: ["--allow-other"]) { p in
            try must("chmod scratch") { chmod(URL(fileURLWithPath: p.root).deletingLastPathComponent().path, 0o755) }
            p.mkdir("vault", 0o700)
            p.create("vault/inside", Array("hidden".utf8), mode: 0o644)
            p.call("mkfifo") { mkfifo(p.path("rootfifo"), 0o600) }
            p.mkdir("readable", 0o777)
            p.chmod("readable", 0o777)
            // root looks everything up first: the names are in the kernel's cache.
            p.stat("vault/inside")
            p.stat("rootfifo")
            for line in try runAsUser(1000, cachedNameScript, root: p.root) { p.note("uid 1000: " + line) }
        }
    }
}

let cachedNameScript = scriptPrelude + """
    attempt("read file in root's 0700 dir", lambda: read(p("vault/inside")))
    attempt("stat file in root's 0700 dir", lambda: str(os.stat(p("vault/inside")).st_size))
    attempt("open root's 0600 fifo", lambda: os.close(os.open(p("rootfifo"), os.O_RDONLY | os.O_NONBLOCK)))
    os.mkdir(p("readable/own"), 0o700)
    os.chmod(p("readable/own"), 0o600)
    attempt("open own 0600 dir", lambda: os.close(os.open(p("readable/own"), os.O_RDONLY)))
    os.chmod(p("readable/own"), 0o400)
    attempt("open own 0400 dir", lambda: os.close(os.open(p("readable/own"), os.O_RDONLY)))
    attempt("list own 0400 dir", lambda: str(os.listdir(p("readable/own"))))
    os.chmod(p("readable/own"), 0o700)
    """

/// Group and mode operations of a uid-1000 caller with supplementary group 2000.
let groupScript = scriptPrelude + """
    def write(path, data, flags=os.O_WRONLY, mode=0o666):
        fd = os.open(path, flags, mode)
        try:
            return str(os.write(fd, data))
        finally:
            os.close(fd)
    attempt("create in setgid team dir", lambda: write(p("team/new"), b"n", os.O_CREAT | os.O_WRONLY))
    attempt("mkdir in setgid team dir", lambda: os.mkdir(p("team/sub"), 0o777))
    attempt("read teamfile via group", lambda: open(p("teamfile"), "rb").read())
    attempt("write teamfile via group", lambda: write(p("teamfile"), b"S"))
    attempt("access teamfile W_OK", lambda: str(os.access(p("teamfile"), os.W_OK)))
    attempt("write setuid file", lambda: write(p("setuid"), b"#"))
    attempt("create with umask 027", lambda: write(p("open/masked"), b"m", os.O_CREAT | os.O_WRONLY, 0o666))
    attempt("mkdir with umask 027", lambda: os.mkdir(p("open/maskeddir"), 0o777))
    """

/// Operations a uid-1000 caller tries under argv[1]; one line of result each.
let unprivilegedScript = scriptPrelude + """
    def write(path, data, flags=os.O_WRONLY):
        fd = os.open(path, flags, 0o644)
        try:
            return str(os.write(fd, data))
        finally:
            os.close(fd)
    attempt("read rootfile", lambda: read(p("rootfile")))
    attempt("write rootfile", lambda: write(p("rootfile"), b"x"))
    attempt("truncate rootfile", lambda: os.truncate(p("rootfile"), 0))
    attempt("chmod rootfile", lambda: os.chmod(p("rootfile"), 0o666))
    attempt("chown rootfile", lambda: os.chown(p("rootfile"), 1000, 1000))
    attempt("utime rootfile", lambda: os.utime(p("rootfile"), (1, 1)))
    attempt("utime now rootfile", lambda: os.utime(p("rootfile")))
    attempt("setxattr rootfile", lambda: os.setxattr(p("rootfile"), "user.x", b"1"))
    attempt("create in root dir", lambda: write(p("new"), b"x", os.O_CREAT | os.O_WRONLY))
    attempt("create in public", lambda: write(p("public/mine"), b"mine", os.O_CREAT | os.O_WRONLY))
    attempt("mkdir in public", lambda: os.mkdir(p("public/minedir"), 0o750))
    attempt("chmod own file", lambda: os.chmod(p("public/mine"), 0o600))
    attempt("chown own file to root", lambda: os.chown(p("public/mine"), 0, 0))
    attempt("chgrp own file to 0", lambda: os.chown(p("public/mine"), -1, 0))
    attempt("setxattr own file", lambda: os.setxattr(p("public/mine"), "user.x", b"1"))
    attempt("list private", lambda: str(os.listdir(p("private"))))
    attempt("create in private", lambda: write(p("private/x"), b"x", os.O_CREAT | os.O_WRONLY))
    attempt("unlink in sticky", lambda: os.unlink(p("sticky/rootowned")))
    attempt("rename in sticky", lambda: os.rename(p("sticky/rootowned"), p("sticky/moved")))
    attempt("write sticky file", lambda: write(p("sticky/rootowned"), b"2"))
    attempt("link rootfile", lambda: os.link(p("rootfile"), p("public/hard")))
    attempt("rmdir private", lambda: os.rmdir(p("private")))
    attempt("access rootfile W_OK", lambda: str(os.access(p("rootfile"), os.W_OK)))
    """

/// Runs a python3 script as `uid`:`uid` (with supplementary `groups` and
/// `umask`) with `root` as its argument; returns its output lines.
func runAsUser(_ uid: Int, _ script: String, root: String, groups: [Int] = [], umask: Int = 0o022) throws -> [String] {
    guard let python = which("python3") else { throw HarnessError("python3 is needed to act as another user") }
    let wrapper = "import os\nos.setgroups(\(groups))\nos.setgid(\(uid))\nos.setuid(\(uid))\nos.umask(\(umask))\n" + script
    let result = try run(python, ["-c", wrapper, root], timeout: 60)
    guard result.exitedNormally && result.status == 0 else { throw HarnessError("python3 as uid \(uid) failed: \(result.output)") }
    return result.output.split(separator: "\n").map(String.init)
}
