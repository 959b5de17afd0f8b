import Foundation
import HostSystem
import PassthroughFS
import ServeDaemon
import Testing

/// `daxfs-virtiofsd`'s command line against the Rust virtiofsd 1.14's: every
/// option is accepted with its effect, or refused in words; nothing is
/// silently ignored.
struct VirtiofsdCommandLineTests {
    /// Every option `virtiofsd --help` (1.14.0, Debian sid) lists, with a
    /// value where it takes one, and whether daxfs-virtiofsd implements it.
    static let virtiofsdOptions: [(arguments: [String], accepted: Bool)] = [
        (["--shared-dir", "/srv"], true), (["--tag", "fs0"], true), (["--socket", "/run/s"], true),
        (["--socket-path", "/run/s"], true), (["--socket-group", "kvm"], true), (["--fd", "3"], true),
        (["--thread-pool-size", "4"], true), (["--xattr"], true), (["--posix-acl=never"], true), (["--posix-acl"], false),
        (["--posix-acl=always"], false), (["--xattrmap", ":map::user.virtiofs.:"], false),
        (["--sandbox", "chroot"], true), (["--readonly"], true), (["--seccomp", "log"], true),
        (["--announce-submounts"], true), (["--no-announce-submounts"], true),
        (["--inode-file-handles=never"], true), (["--cache", "never"], true), (["--cache", "metadata"], false),
        (["--allow-mmap"], true), (["--no-readdirplus"], true), (["--writeback"], false), (["--allow-direct-io"], false),
        (["--print-capabilities"], true), (["--modcaps=+sys_admin:-chown"], true), (["--log-level", "debug"], true),
        (["--syslog"], true), (["--rlimit-nofile", "4096"], true), (["-o", "cache=auto"], true), (["-d"], true),
        (["--no-killpriv-v2"], true), (["--killpriv-v2"], true), (["-f"], true), (["--security-label=never"], true),
        (["--security-label"], false), (["--uid-map", ":0:100000:65536:"], false), (["--gid-map", ":0:100000:65536:"], false),
        (["--translate-uid", "map:0:1000:1"], true), (["--translate-gid", "squash-guest:0:1000:65536"], true),
        (["--preserve-noatime"], true), (["--migration-mode", "find-paths"], false), (["--migration-on-error", "abort"], false),
        (["--migration-verify-handles"], false), (["--migration-confirm-paths"], false), (["-h"], true), (["--help"], true),
        (["-V"], true), (["--version"], true),
    ]

    static let required = ["--shared-dir", "/srv", "--socket-path", "/run/vfs.sock"]

    @Test func everyVirtiofsdOptionIsAcceptedOrRefusedInWords() throws {
        for (arguments, accepted) in Self.virtiofsdOptions {
            let base = arguments[0] == "--socket" || arguments[0] == "--socket-path" || arguments[0] == "--fd"
                ? ["--shared-dir", "/srv"] : arguments[0] == "--shared-dir" ? ["--socket-path", "/run/s"] : Self.required
            do {
                _ = try VirtiofsdCommandLine.parse(base + arguments)
                #expect(accepted, "\(arguments) was accepted, but daxfs does not implement it")
            } catch {
                #expect(!accepted, "\(arguments) was refused: \(error)")
                let name = arguments[0].split(separator: "=")[0]
                #expect(error.description.contains(name) && error.description.contains("not supported"),
                        "refusal of \(arguments) does not name it in words: \(error)")
            }
        }
    }

    /// The table covers what the real virtiofsd offers: its --help (from
    /// the Debian sid chroot the DAX guest tests use) names no option the
    /// table lacks.
    @Test func theTableCoversTheRealVirtiofsdHelp() throws {
        let chroot = "/var/cache/daxfs/sid"
        guard access(chroot + "/usr/libexec/virtiofsd", X_OK) == 0 else {
            print("skipped: no Rust virtiofsd in \(chroot) (scripts/guest/sid-chroot.sh builds it)")
            return
        }
        let result = try ChildProcess.run("/usr/sbin/chroot", [chroot, "/usr/libexec/virtiofsd", "--help"], timeout: 30)
        let names = Set(result.stdout.split(separator: "\n").compactMap { line -> String? in
            let trimmed = line.drop { $0 == " " }
            guard trimmed.hasPrefix("-"), trimmed.dropFirst().first.map({ $0 == "-" || $0.isLetter }) == true else { return nil }
            let first = trimmed.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "=" || $0 == "[" || $0 == "<" }).first
            return first.map(String.init)
        })
        #expect(names.count > 30, "parsed only \(names.count) options from virtiofsd --help")
        let known = Set(VirtiofsdCommandLine.options.flatMap(\.names))
        let tested = Set(Self.virtiofsdOptions.map { String($0.arguments[0].split(separator: "=")[0]) })
        #expect(names.subtracting(known).isEmpty, "virtiofsd options daxfs-virtiofsd does not know: \(names.subtracting(known).sorted())")
        #expect(names.subtracting(tested).isEmpty, "virtiofsd options this test does not try: \(names.subtracting(tested).sorted())")
    }

    @Test func optionsLandInTheConfiguration() throws {
        guard case .serve(let c, let logging) = try VirtiofsdCommandLine.parse([
            "--shared-dir=/srv/share", "--fd=7", "--thread-pool-size", "2", "--xattr", "--readonly", "--sandbox=chroot",
            "--seccomp", "trap", "--modcaps=-chown", "--cache", "always", "--no-readdirplus", "--killpriv-v2",
            "--inode-file-handles=mandatory", "--rlimit-nofile", "2048", "--log-level", "warn", "--syslog",
            "--cache-size-mib", "64", "--tag", "share", "--translate-uid", "map:1000:2000:10",
            "--translate-uid=forbid-guest:0:1", "--translate-gid", "squash-host:0:100:1000",
        ]) else { Issue.record("not a serve action"); return }
        #expect(c.fileSystem.uidTranslation.rules == [.map(guestBase: 1000, hostBase: 2000, count: 10), .forbidGuest(guestBase: 0, count: 1)])
        #expect(c.fileSystem.gidTranslation.rules == [.squashHost(hostBase: 0, guestID: 100, count: 1000)])
        #expect(c.sharedDir == "/srv/share" && c.listen == .descriptor(7))
        #expect(c.backend.threadPoolSize == 2 && c.backend.cacheSize == 64 << 20 && c.backend.tag == "share")
        #expect(c.fileSystem.xattr && c.fileSystem.readOnly && c.sandbox.readOnly && !c.fileSystem.readdirplus)
        #expect(c.fileSystem.handleKillprivV2 && c.fileSystem.cache == .always)
        #expect(c.sandbox.mode == .chroot && c.sandbox.seccomp == .trap && c.sandbox.modcaps == "-chown")
        #expect(c.fileHandles == .mandatory && c.openFileLimit == 2048)
        #expect(logging == VirtiofsdCommandLine.Logging(level: .warning, syslog: true))

        // virtiofsd's defaults.
        guard case .serve(let d, let defaults) = try VirtiofsdCommandLine.parse(Self.required) else { return }
        #expect(d.sandbox.mode == .namespace && d.sandbox.seccomp == .kill && !d.fileSystem.handleKillprivV2)
        #expect(d.fileSystem.announceSubmounts)
        #expect(!d.fileSystem.xattr && d.fileSystem.posixLocks && d.fileSystem.flockLocks && d.fileHandles == .prefer)
        #expect(d.listen == .path("/run/vfs.sock", group: nil) && defaults.level == .info)
    }

    /// The legacy form libvirt uses without "separate-options".
    @Test func legacyOptionsAsLibvirtPassesThem() throws {
        guard case .serve(let c, _) = try VirtiofsdCommandLine.parse([
            "--fd=3", "-o", "source=/srv/share,cache=none,sandbox=chroot,xattr,no_posix_lock,no_flock",
            "-osandbox=namespace", "-o", "log_level=debug",
        ]) else { Issue.record("not a serve action"); return }
        #expect(c.sharedDir == "/srv/share" && c.fileSystem.cache == .never && c.sandbox.mode == .namespace)
        #expect(c.fileSystem.xattr && !c.fileSystem.posixLocks && !c.fileSystem.flockLocks)
        for bad in ["writeback", "timeout=5", "xattrmap=:x:", "frobnicate", "source="] {
            #expect(throws: ServeError.self, "-o \(bad)") { try VirtiofsdCommandLine.parse(["--fd=3", "-o", "source=/x," + bad]) }
        }
    }

    @Test func missingAndConflictingOptionsAreRefused() {
        for (arguments, words) in [
            (["--socket-path", "/run/s"], "--shared-dir"), (["--shared-dir", "/srv"], "--socket-path or --fd"),
            (["--shared-dir", "/srv", "--fd", "3", "--socket-path", "/run/s"], "exclude"),
            (["--shared-dir", "/srv", "--fd", "-1"], "--fd"), (["--shared-dir", "/srv", "--fd"], "needs a value"),
            (Self.required + ["--sandbox", "jail"], "namespace, chroot, none"),
            (Self.required + ["--xattr=yes"], "takes no value"), (Self.required + ["extra"], "unexpected argument"),
            (Self.required + ["--fd", "3", "--socket-group", "kvm"], "exclude"),
            (Self.required + ["--translate-uid", "map:1:2"], "takes 3 numbers"),
            (Self.required + ["--translate-uid", "swap:1:2:3"], "the type must be"),
            (Self.required + ["--translate-gid", "map:4294967295:0:2"], "past the last id"),
            (Self.required + ["--translate-gid", "guest:1:x:2"], "must be numbers"),
        ] {
            do {
                _ = try VirtiofsdCommandLine.parse(arguments)
                Issue.record("\(arguments) was accepted")
            } catch {
                #expect(error.description.contains(words), "\(arguments): \(error)")
            }
        }
    }

    @Test func capabilitiesListOnlyWhatWorks() throws {
        let json = try JSONSerialization.jsonObject(with: Data(VirtiofsdCommandLine.capabilitiesJSON.utf8)) as? [String: Any]
        #expect(json?["type"] as? String == "fs")
        #expect(json?["features"] as? [String] == ["separate-options"])
    }

    /// The vhost-user descriptor scripts/install.sh installs (QEMU's
    /// docs/interop/vhost-user.json format) names an "fs" backend and the
    /// binary's installed path.
    @Test func theVhostUserDescriptorNamesTheBackend() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let data = try Data(contentsOf: root.appendingPathComponent("contrib/vhost-user/60-daxfs-virtiofsd.json"))
        let json = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        #expect(json?["type"] as? String == "fs")
        #expect(json?["binary"] as? String == "/usr/local/libexec/daxfs-virtiofsd")
        #expect((json?["description"] as? String)?.isEmpty == false)
        let install = try String(contentsOf: root.appendingPathComponent("scripts/install.sh"), encoding: .utf8)
        #expect(install.contains("60-daxfs-virtiofsd.json") && install.contains("libexec/daxfs-virtiofsd"))
    }
}
