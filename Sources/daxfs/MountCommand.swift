import ArgumentParser
import DevFUSE
import FUSEServer
import Glibc
import HostSystem
import Logging
import PassthroughFS
import ServeDaemon

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Share a host directory at a mountpoint through /dev/fuse (needs root).",
        discussion: """
            Runs in the foreground until the filesystem is unmounted (umount MOUNTPOINT) \
            or daxfs gets SIGINT or SIGTERM; then it unmounts and exits 0. A busy mount is \
            detached and served until its last user leaves; a second signal aborts it.
            """)

    @Argument(help: "The host directory to share.") var sharedDir: String
    @Argument(help: "An existing directory to mount it on.") var mountpoint: String
    @OptionGroup var common: ServeOptions
    @Option(help: "Worker threads reading /dev/fuse (default: the number of CPUs).") var threads: Int?
    @Flag(help: "Do not use kernel passthrough; every read and write goes through daxfs (default: passthrough on where the kernel offers it).")
    var noPassthrough = false
    @Flag(help: "Let users other than root use the mount (allow_other; default off). The kernel then checks access from the mode bits too (default_permissions), so every user gets the host's answer; see --no-default-permissions.") var allowOther = false
    @Flag(help: "Do not watch the host filesystem for other processes' changes; --cache auto then trusts names and attributes for 1 s instead of until they change (default: watch, when running as root).")
    var noHostWatch = false
    @Option(help: "Microseconds one worker keeps polling for the next request before sleeping; trades CPU for latency (0 = off; default: 50).")
    var pollUs = 50
    @Flag(help: "Let the kernel check access from the mode bits before asking daxfs (default_permissions; default: on with --allow-other, off without).")
    var defaultPermissions = false
    @Flag(help: "With --allow-other, leave every check to daxfs (no default_permissions). Not exact for other users: the kernel walks names it has cached without asking, so search permission on those directories is not enforced, and FIFO opens ignore mode bits.")
    var noDefaultPermissions = false

    func run() throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = common.logLevel.level
            return handler
        }
        let logger = Logger(label: "daxfs")
        raiseOpenFileLimit()
        try checkDirectory(sharedDir, role: "shared directory")
        try checkDirectory(mountpoint, role: "mountpoint")

        var fsOptions = PassthroughFS.Options()
        fsOptions.cache = common.cache.mode
        fsOptions.passthrough = !noPassthrough
        fsOptions.xattr = !common.noXattr
        fsOptions.logger = logger
        fsOptions.watchHost = !noHostWatch
        fsOptions.nodeDescriptorLimit = try common.nodeDescriptorLimit()
        let fileSystem: PassthroughFS
        do {
            fileSystem = try PassthroughFS(root: sharedDir, options: fsOptions)
        } catch {
            throw CLIError("cannot share \(sharedDir): \(error)")
        }

        var options = MountOptions()
        if let threads {
            guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
            options.threads = threads
        }
        options.passthrough = !noPassthrough
        guard pollUs >= 0 else { throw ValidationError("--poll-us must not be negative") }
        options.pollMicroseconds = pollUs
        options.allowOther = allowOther
        if defaultPermissions && noDefaultPermissions {
            throw ValidationError("--default-permissions and --no-default-permissions exclude each other")
        }
        // Other users get the host's answers only if the kernel checks too:
        // it resolves cached names without asking daxfs.
        options.defaultPermissions = defaultPermissions || (allowOther && !noDefaultPermissions)
        options.fsname = "daxfs:" + sharedDir

        let mount: FUSEMount
        do throws(MountError) {
            mount = try FUSEMount(mountpoint: mountpoint, fileSystem: fileSystem, options: options, logger: logger)
        } catch {
            throw CLIError(error.description)
        }
        SignalWatcher.start(onFirst: { mount.unmount() }, onSecond: { mount.abort() })
        logger.info("serving \(sharedDir) at \(mount.mountpoint)")
        do throws(MountError) {
            try mount.serve()
        } catch {
            throw CLIError(error.description)
        }
        logger.info("unmounted \(mount.mountpoint)")
    }
}

/// Options every serving command shares.
struct ServeOptions: ParsableArguments {
    @Option(help: "Caching: auto (names and attributes until another process changes them on the host — watched with fanotify as root, else for 1 s; data revalidated on open), always (long timeouts, keep page cache; only when nothing else changes the directory), never (no caching; direct I/O).")
    var cache: CacheOption = .auto
    @Flag(help: "Turn extended attributes off: the kernel is told they are unsupported (default: xattrs on).") var noXattr = false
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: LogLevelOption = .info
    @Option(help: "Nodes that keep a host file descriptor open; beyond this, the least recently used are closed and reopened by file handle when needed (needs root; default: half the open-file limit).")
    var maxNodeFds: Int?

    /// Checks `--max-node-fds`.
    func nodeDescriptorLimit() throws -> Int? {
        if let maxNodeFds, maxNodeFds < 1 { throw ValidationError("--max-node-fds must be at least 1") }
        return maxNodeFds
    }
}

enum CacheOption: String, ExpressibleByArgument, CaseIterable {
    case auto, always, never
    var mode: PassthroughFS.CacheMode {
        switch self {
        case .auto: .auto
        case .always: .always
        case .never: .never
        }
    }
}

struct LogLevelOption: ExpressibleByArgument {
    let level: Logger.Level
    init?(argument: String) {
        guard let level = Logger.Level(rawValue: argument) else { return nil }
        self.level = level
    }
    init(_ level: Logger.Level) { self.level = level }
    static let info = LogLevelOption(.info)
    var defaultValueDescription: String { level.rawValue }
}

func checkDirectory(_ path: String, role: String) throws {
    do { try ServeDaemon.checkDirectory(path, role: role) } catch { throw CLIError(error.description) }
}

/// A failure reported as "Error: <text>" with exit status 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
