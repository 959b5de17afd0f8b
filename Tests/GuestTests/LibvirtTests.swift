import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension GuestTests {
    /// libvirt 9.0 starts the virtio-fs backend named in the domain XML's
    /// `<binary path='…'/>`, the guest mounts the share and runs check.sh,
    /// and libvirt ends the backend, both when the guest powers off and on
    /// `virsh destroy`. scripts/guest/libvirt-guest.sh does the booting (with
    /// a private libvirtd), the timeouts and the cleanup. This suite runs it
    /// once per backend binary and reads its RESULT lines. It is nested in
    /// GuestTests so that its guests never run alongside the others on the
    /// same CPUs.
    /// See docs/LIBVIRT-FINDINGS.md for what libvirt passes the backend.
    @Suite(.serialized)
    struct LibvirtTests {
        enum Backend: String, CaseIterable, CustomTestStringConvertible, Sendable {
            /// Debian's C virtiofsd (libvirt's default), the control.
            case virtiofsd
            /// daxfs-virtiofsd, the virtiofsd-compatible executable, when it is built.
            case daxfsVirtiofsd = "daxfs-virtiofsd"
            /// daxfs-virtiofsd with `<sandbox mode='namespace'/>` (`-o …,sandbox=namespace`).
            case daxfsVirtiofsdNamespace = "daxfs-virtiofsd-sandbox-namespace"
            /// daxfs-virtiofsd with `<sandbox mode='chroot'/>` (`-o …,sandbox=chroot`).
            case daxfsVirtiofsdChroot = "daxfs-virtiofsd-sandbox-chroot"
            var testDescription: String { rawValue }
            var sandbox: String? {
                switch self {
                case .daxfsVirtiofsdNamespace: "namespace"
                case .daxfsVirtiofsdChroot: "chroot"
                default: nil
                }
            }
        }

        static let script = GuestTests.repoRoot.appendingPathComponent("scripts/guest/libvirt-guest.sh").path
        /// The first boot's limit (the script destroys the domain then);
        /// the destroy boot has its own 180 s.
        static let guestTimeout = 600.0
        /// Longer than everything the script waits for, plus building the initramfs.
        static let scriptTimeout = guestTimeout + 480

        /// GuestTests' checks, then the libvirt ones: each boot started a
        /// backend, the second one mounted and was destroyed, and libvirt
        /// left no backend, domain or pid file behind.
        static let expectedChecks = GuestTests.expectedChecks + [
            "boot-start", "destroy-start", "destroy-guest-mounted", "destroy", "destroy-backend-gone",
            "destroy-no-domain-left", "destroy-pidfile-removed",
        ]

        @Test(arguments: Backend.allCases)
        func libvirtStartsAndEndsBackend(backend: Backend) throws {
            if let reason = Self.missingPrerequisite(for: backend) {
                print("skipping libvirt test [\(backend.rawValue)]: \(reason)")
                return
            }
            let binary = try Self.binary(for: backend)
            var arguments = [Self.script, "--binary", binary, "--timeout", String(Int(Self.guestTimeout))]
            if let sandbox = backend.sandbox { arguments += ["--sandbox", sandbox] }
            let run = try GuestTests.runLogged(arguments: arguments, timeout: Self.scriptTimeout)
            if run.status == 2, let line = run.output.split(separator: "\n").first(where: { $0.contains("SKIP ") }) {
                // Only what the Swift side cannot see (e.g. a missing /etc/libvirt).
                print("skipping libvirt test [\(backend.rawValue)]: \(line)")
                return
            }

            let results = GuestTests.parseResults(run.output)
            for line in run.output.split(separator: "\n")
            where line.hasPrefix("RESULT ") || line.hasPrefix("TIME ") || line.hasPrefix("ARGV ") {
                print("  [libvirt \(backend.rawValue)] \(line)")
            }
            let missing = Self.expectedChecks.filter { results[$0] == nil }
            #expect(missing.isEmpty, "[libvirt \(backend.rawValue)] checks that did not report: \(missing.joined(separator: " "))\n\(run.output.suffix(8000))")
            for (name, result) in results.sorted(by: { $0.key < $1.key }) {
                #expect(result.passed, "[libvirt \(backend.rawValue)] \(name) failed: \(result.detail)")
            }
            #expect(run.status == 0, "[libvirt \(backend.rawValue)] libvirt-guest.sh exited \(run.status):\n\(run.output.suffix(12000))")
        }

        static func missingPrerequisite(for backend: Backend) -> String? {
            if let reason = GuestTests.missingPrerequisite(for: backend == .virtiofsd ? .virtiofsd : .daxfs) { return reason }
            for tool in ["libvirtd", "virsh"] where GuestTests.which(tool) == nil {
                return "\(tool) not installed (apt-get install libvirt-daemon-system)"
            }
            if GuestTests.which("unshare") == nil { return "unshare not installed (util-linux)" }
            if backend != .virtiofsd, (try? daxfsVirtiofsdBinary()) == nil {
                return "no daxfs-virtiofsd executable beside the test binary (not built yet)"
            }
            return nil
        }

        static func binary(for backend: Backend) throws -> String {
            backend == .virtiofsd ? GuestTests.virtiofsd : try daxfsVirtiofsdBinary()
        }

        /// DAXFS_VIRTIOFSD_BIN, or `daxfs-virtiofsd` beside this test binary
        /// (.build/debug/daxfs-virtiofsd).
        static func daxfsVirtiofsdBinary() throws -> String {
            if let path = ProcessInfo.processInfo.environment["DAXFS_VIRTIOFSD_BIN"], !path.isEmpty { return path }
            let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            let candidate = me.deletingLastPathComponent().appendingPathComponent("daxfs-virtiofsd").path
            guard access(candidate, X_OK) == 0 else { throw GuestError("no daxfs-virtiofsd at \(candidate)") }
            return candidate
        }
    }
}
