import Foundation
import Glibc
import Testing

/// The kernel resolves paths, including symlinks, in the caller's namespace;
/// what daxfs controls is that no name-based operation follows a symlink on
/// the host. Every check here acts on a link whose target lies outside the
/// share and then verifies the target is untouched.
@Suite(.enabled(if: MountEnvironment.canMount, "needs root and /dev/fuse"))
struct PathEscapeTests {
    /// A file outside the share with known attributes.
    struct Victim {
        let directory: ScratchDirectory
        let path: String
        let contents = pattern(1000, seed: 50)

        init() throws {
            directory = try ScratchDirectory("outside")
            path = directory.path + "/victim"
            try writeFile(path, contents, mode: 0o640)
            var times = [timespec(tv_sec: 1_111_111_111, tv_nsec: 0), timespec(tv_sec: 1_222_222_222, tv_nsec: 0)]
            guard utimensat(AT_FDCWD, path, &times, 0) == 0 else { throw HarnessError("utimensat: \(errnoName(errno))") }
        }

        /// Expects the victim exactly as created.
        func expectUntouched(_ after: String, sourceLocation: SourceLocation = #_sourceLocation) {
            guard let info = fileStat(path, follow: false) else {
                Issue.record("after \(after): \(path) is gone", sourceLocation: sourceLocation)
                return
            }
            #expect(info.st_mode == S_IFREG | 0o640, "after \(after): mode", sourceLocation: sourceLocation)
            #expect(info.st_uid == 0 && info.st_gid == 0, "after \(after): owner", sourceLocation: sourceLocation)
            #expect(info.st_nlink == 1, "after \(after): nlink", sourceLocation: sourceLocation)
            #expect(info.st_mtim.tv_sec == 1_222_222_222, "after \(after): mtime", sourceLocation: sourceLocation)
            #expect((try? readFile(path).get()) == contents, "after \(after): contents", sourceLocation: sourceLocation)
            #expect(Xattr.names(path).map { $0.filter { $0.hasPrefix("user.") } } == .success([]), "after \(after): xattrs", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: Mode.allCases)
    func symlinksAreNeverFollowedByTheServer(mode: Mode) throws {
        let victim = try Victim()
        defer { victim.directory.remove() }
        try withMount(mode) { mount in
            for (name, target) in [("link", victim.path), ("root", "/"), ("up", "../../.."), ("etc", "/etc")] {
                try must("symlink \(name)") { symlink(target, mount.host(name)) }
            }

            // Opening the link itself.
            for name in ["link", "root", "up"] {
                #expect(sys { open(mount.mnt(name), O_RDONLY | O_NOFOLLOW) } == .error(ELOOP), "open(\(name), O_NOFOLLOW)")
            }
            #expect(sys { open(mount.mnt("link"), O_WRONLY | O_TRUNC | O_NOFOLLOW) } == .error(ELOOP))
            victim.expectUntouched("open O_NOFOLLOW")
            #expect(try readLink(mount.mnt("up")).get() == "../../..")
            #expect(try readLink(mount.mnt("root")).get() == "/")
            #expect(fileStat(mount.mnt("link"), follow: false).map { $0.st_mode & S_IFMT } == S_IFLNK)

            // Attribute changes aimed at the link.
            #expect(lchown(mount.mnt("link"), 1000, 1000) == 0, "lchown: \(errnoName(errno))")
            #expect(fileStat(mount.host("link"), follow: false)?.st_uid == 1000, "the link itself changed owner")
            victim.expectUntouched("lchown")
            var times = [timespec(tv_sec: 1_300_000_000, tv_nsec: 0), timespec(tv_sec: 1_400_000_000, tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, mount.mnt("link"), &times, AT_SYMLINK_NOFOLLOW) == 0, "utimensat: \(errnoName(errno))")
            #expect(fileStat(mount.host("link"), follow: false)?.st_mtim.tv_sec == 1_400_000_000, "the link itself got the times")
            victim.expectUntouched("utimensat(AT_SYMLINK_NOFOLLOW)")
            // Linux refuses user.* xattrs on symlinks; the mount must say the same, not set it on the target.
            let hostResult = sys { Xattr.lset(mount.host("link"), "user.escape", "x", 1, 0) }
            let mountResult = sys { Xattr.lset(mount.mnt("link"), "user.escape", "x", 1, 0) }
            #expect(mountResult == hostResult)
            victim.expectUntouched("lsetxattr")

            // Name operations on the link.
            #expect(sys { mkdir(mount.mnt("link"), 0o755) } == .error(EEXIST))
            #expect(sys { open(mount.mnt("link"), O_CREAT | O_EXCL | O_WRONLY, 0o644) } == .error(EEXIST))
            #expect(sys { rmdir(mount.mnt("etc")) } == .error(ENOTDIR))
            #expect(rename(mount.mnt("link"), mount.mnt("renamed")) == 0, "rename: \(errnoName(errno))")
            #expect(try readLink(mount.host("renamed")).get() == victim.path)
            #expect(link(mount.mnt("renamed"), mount.mnt("hard")) == 0, "link: \(errnoName(errno))")
            #expect(fileStat(mount.host("hard"), follow: false).map { ($0.st_mode & S_IFMT, $0.st_nlink) } ?? (0, 0) == (S_IFLNK, 2),
                    "the hard link is to the symlink")
            victim.expectUntouched("rename and link")
            #expect(unlink(mount.mnt("renamed")) == 0 && unlink(mount.mnt("hard")) == 0)
            #expect(fileStat(mount.host("hard"), follow: false) == nil)
            victim.expectUntouched("unlink")

            // Replacing a link to a directory replaces the link.
            try writeFile(mount.mnt("plain"), [1, 2, 3])
            #expect(rename(mount.mnt("plain"), mount.mnt("etc")) == 0, "rename over etc: \(errnoName(errno))")
            #expect(fileStat(mount.host("etc"), follow: false).map { $0.st_mode & S_IFMT } == S_IFREG)
            #expect(fileStat("/etc", follow: false).map { $0.st_mode & S_IFMT } == S_IFDIR, "/etc is still a directory")
            #expect(fileStat("/etc/passwd") != nil)

            // A dangling link: O_CREAT|O_EXCL does not create its target.
            let notCreated = victim.directory.path + "/not-created"
            try must("symlink dangling") { symlink(notCreated, mount.host("dangling")) }
            #expect(sys { open(mount.mnt("dangling"), O_CREAT | O_EXCL | O_WRONLY, 0o644) } == .error(EEXIST))
            #expect(access(notCreated, F_OK) != 0)

            // ".." of the mount root is the mountpoint's parent (the kernel's walk).
            let parent = try #require(fileStat(mount.mnt("..")))
            let scratch = try #require(fileStat(mount.scratch.path))
            #expect(parent.st_ino == scratch.st_ino && parent.st_dev == scratch.st_dev)
            // Nothing escaped into the scratch directory beside the share.
            #expect(directoryNames(mount.scratch.path)?.filter { !["shared", "mnt", "daxfs.log"].contains($0) } == [])
            #expect(directoryNames(victim.directory.path) == ["victim"])
        }
    }
}
