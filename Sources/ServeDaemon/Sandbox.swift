import CLinux
import Glibc
import HostSystem
import Logging

/// The isolation `daxfs-virtiofsd` enters before it serves a guest, as
/// virtiofsd does: the server parses memory a guest controls, in a process
/// that runs as root.
///
/// `namespace` (the default): new mount, network and IPC namespaces and, when
/// the host's pids are not needed, a pid namespace whose first process is the
/// server (the process started stays outside, forwards SIGTERM, SIGINT and
/// SIGHUP, and exits with the server's status). The shared directory is
/// bind-mounted onto itself (read-only with `--readonly`) and becomes the
/// root with pivot_root, the old root detached; procfs stays reachable only
/// as the working directory (`ProcFS`). `chroot`: chroot(2) into the shared
/// directory, for hosts without namespaces. `none`: nothing.
///
/// With a DAX window the pid namespace is left out: holding a host truncation
/// of a mapped file until QEMU lets go of its pages needs the host's pids
/// (fanotify reports the truncating thread as a pid of the listener's
/// namespace, 0 for processes outside it, and QEMU's page mappings are read
/// from /proc/PID/maps of the socket's peer).
public enum Sandbox {
    public enum Mode: String, Sendable, CaseIterable {
        case namespace, chroot, none
    }

    /// virtiofsd's --seccomp.
    public enum SeccompChoice: String, Sendable, CaseIterable {
        case none, kill, log, trap
    }

    public struct Options: Sendable {
        public var mode = Mode.namespace
        /// Refuse every change to the shared directory (EROFS): in the
        /// namespace sandbox the kernel does, through a read-only bind mount.
        public var readOnly = false
        /// What a syscall outside the allowlist gets; `.none` installs no filter.
        public var seccomp = SeccompChoice.kill
        /// virtiofsd's --modcaps: changes to the kept capabilities ("+sys_admin:-chown").
        public var modcaps: String?
        public init() {}
    }

    /// What the sandbox set up: the shared directory's path from now on.
    public struct Entered: Sendable {
        public var sharedDir: String
        /// Whether the server runs as the first process of a pid namespace.
        public var pidNamespace: Bool
    }

    /// First step, while the process is single-threaded: the namespaces.
    /// In a pid namespace the calling process forks; the original process
    /// only waits (this function does not return there) and the child goes
    /// on. `unlinkOnExit` is the socket path the outside process removes
    /// after the server ends (inside, the path is out of reach).
    static func enterNamespaces(_ options: Options, needsHostPids: Bool, unlinkOnExit: String?,
                                logger: Logger) throws(ServeError) -> Bool {
        guard options.mode == .namespace else { return false }
        let threads = threadCount()
        guard threads == 1 else {
            throw ServeError("cannot enter the namespace sandbox: the process already runs \(threads) threads")
        }
        let pidNamespace = !needsHostPids
        guard pidNamespace else {
            try unshareNamespaces(procfs: false)
            return false
        }
        guard daxfs_unshare_pid_namespace() == 0 else {
            throw ServeError("cannot create the sandbox's pid namespace (unshare: \(Errno(daxfs_errno()))); --sandbox chroot or none works without namespaces")
        }
        // Signals the outside process forwards: blocked before fork, so none is lost.
        var set = sigset_t()
        sigemptyset(&set)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGCHLD] { sigaddset(&set, signal) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let child = daxfs_fork()
        guard child >= 0 else { throw ServeError("cannot start the sandboxed server (fork: \(Errno(daxfs_errno())))") }
        if child == 0 {
            // The server: pid 1 of the new namespace. It ends with its parent.
            _ = daxfs_set_parent_death_signal(SIGKILL)
            var childSet = sigset_t()
            sigemptyset(&childSet)
            sigaddset(&childSet, SIGCHLD)
            pthread_sigmask(SIG_UNBLOCK, &childSet, nil)
            try unshareNamespaces(procfs: true)
            return true
        }
        logger.debug("sandboxed server started as pid \(child)")
        waitForServer(child, signals: set, unlinking: unlinkOnExit)
    }

    /// New mount, network and IPC namespaces for this process alone (the
    /// outside process of a pid namespace keeps the host's, so it can remove
    /// the socket at the end); with `procfs`, a procfs of the new pid namespace.
    private static func unshareNamespaces(procfs: Bool) throws(ServeError) {
        guard daxfs_unshare_namespaces() == 0 else {
            throw ServeError("cannot create the sandbox's namespaces (unshare: \(Errno(daxfs_errno()))); --sandbox chroot or none works without them")
        }
        guard daxfs_mounts_private() == 0 else {
            throw ServeError("cannot make the sandbox's mounts private: \(Errno(daxfs_errno()))")
        }
        if procfs, daxfs_mount_proc("/proc") != 0 {
            throw ServeError("cannot mount the sandbox's procfs: \(Errno(daxfs_errno()))")
        }
    }

    /// Threads of this process (entries of /proc/self/task).
    static func threadCount() -> Int {
        guard let directory = opendir("/proc/self/task") else { return 0 }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            let first = withUnsafeBytes(of: entry.pointee.d_name) { $0[0] }
            if first != UInt8(ascii: ".") { count += 1 }
        }
        return count
    }

    /// The outside process of the pid-namespace sandbox: forwards signals
    /// to the server until it ends, then exits with its status.
    private static func waitForServer(_ child: Int32, signals: sigset_t, unlinking path: String?) -> Never {
        var set = signals
        while true {
            var received: Int32 = 0
            guard sigwait(&set, &received) == 0 else { continue }
            if received == SIGCHLD {
                var status: Int32 = 0
                let ended = waitpid(child, &status, WNOHANG)
                guard ended == child else { continue }
                if let path { unlink(path) }
                let code = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
                exit(code)
            }
            kill(child, received)
        }
    }

    /// The capabilities the server keeps (before `--modcaps`): virtiofsd's
    /// (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID, SETUID, MKNOD, SETFCAP)
    /// and DAC_READ_SEARCH for nodes reopened by file handle. With a DAX
    /// window also SYS_ADMIN (the mapping shadow's FUSE mount and the
    /// fanotify marks that hold host truncations), SYS_PTRACE (reading the
    /// truncating thread's /proc/TID/syscall when another user runs it; the
    /// ptrace syscall itself stays outside the seccomp allowlist) and, in the
    /// chroot sandbox, SYS_CHROOT (the root changes after the shadow's
    /// threads have started, and capabilities are per thread).
    static func keptCapabilities(_ options: Options, dax: Bool) throws(ServeError) -> CapabilitySet {
        var kept = CapabilitySet.virtiofsdDefault
        kept.insert(.dacReadSearch)
        if dax {
            kept.insert(.sysAdmin)
            if let ptrace = Capability(name: "sys_ptrace") { kept.insert(ptrace) }
            if options.mode == .chroot, let chroot = Capability(name: "sys_chroot") { kept.insert(chroot) }
        }
        guard let modcaps = options.modcaps else { return kept }
        do { return try Capabilities.parseModcaps(modcaps, defaults: kept) } catch { throw ServeError(error.description) }
    }

    /// Drops every capability but `kept`, while the process has one thread
    /// (capabilities are per thread; threads started later inherit them).
    static func dropCapabilities(keeping kept: CapabilitySet, logger: Logger) throws(ServeError) {
        do { try Capabilities.apply(keeping: kept) } catch {
            throw ServeError("cannot drop capabilities to \(kept) (\(error)); --modcaps can keep fewer")
        }
        logger.debug("capabilities kept: \(kept)")
    }

    /// The seccomp allowlist, last, on every thread. With `trap` a refused
    /// call fails with ENOSYS and a log line instead of a signal.
    static func installFilter(_ options: Options, logger: Logger) throws(ServeError) {
        let action: Seccomp.Action
        switch options.seccomp {
        case .none: return
        case .kill: action = .kill
        case .log: action = .log
        case .trap: action = .trap
        }
        do {
            if action == .trap { try Seccomp.reportTraps() }
            try Seccomp.install(action)
        } catch {
            throw ServeError("cannot install the seccomp filter (\(error)); --seccomp none runs without it")
        }
        logger.debug("seccomp filter installed: \(Seccomp.allowlist.count) syscalls allowed, others \(action.rawValue)")
        // For tests of the filter: one syscall outside the allowlist, now.
        if getenv("DAXFS_TEST_FORBIDDEN_SYSCALL") != nil {
            let result = daxfs_forbidden_syscall_for_tests()
            logger.warning("DAXFS_TEST_FORBIDDEN_SYSCALL: acct(2) returned \(result), errno \(daxfs_errno())")
        }
    }

    /// Second step: the shared directory becomes the root; procfs becomes
    /// the working directory. Returns the shared directory's new path.
    static func changeRoot(_ options: Options, sharedDir: String) throws(ServeError) -> String {
        switch options.mode {
        case .none:
            return sharedDir
        case .namespace, .chroot:
            let proc = open("/proc", DAXFS_O_PATH | O_DIRECTORY | O_CLOEXEC)
            guard proc >= 0 else { throw ServeError("cannot open /proc for the sandbox: \(Errno(daxfs_errno()))") }
            defer { Glibc.close(proc) }
            if options.mode == .namespace {
                guard daxfs_bind_self(sharedDir, options.readOnly ? 1 : 0) == 0 else {
                    throw ServeError("cannot bind-mount \(sharedDir) for the sandbox: \(Errno(daxfs_errno()))")
                }
                guard daxfs_pivot_into(sharedDir) == 0 else {
                    throw ServeError("cannot make \(sharedDir) the sandbox's root (pivot_root: \(Errno(daxfs_errno())))")
                }
            } else {
                guard daxfs_chroot_into(sharedDir) == 0 else {
                    throw ServeError("cannot chroot into \(sharedDir): \(Errno(daxfs_errno()))")
                }
            }
            do { try ProcFS.useAsWorkingDirectory(proc) } catch {
                throw ServeError("cannot keep procfs reachable in the sandbox: \(error)")
            }
            return "/"
        }
    }
}
