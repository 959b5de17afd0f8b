import CLinux
import FUSEServer
import Glibc
import HostSystem
import Logging
import MappingShadow
import PassthroughFS
import Synchronization
import VhostUser

/// The vhost-user-fs daemon behind `daxfs serve` and `daxfs-virtiofsd`:
/// checks the configuration, listens, enters the sandbox, and serves
/// frontends until SIGTERM/SIGINT/SIGHUP (or the frontend's disconnect
/// without `keepListening`).
public enum ServeDaemon {
    /// Runs the daemon; returns when it should exit 0.
    public static func run(_ configuration: ServeConfiguration, logger: Logger) throws(ServeError) {
        var configuration = configuration
        let openFiles = applyOpenFileLimit(configuration.openFileLimit, logger: logger)
        try checkDirectory(configuration.sharedDir)
        try validate(configuration)
        if configuration.fileHandles == .mandatory { try requireFileHandles(configuration.sharedDir) }
        let backend = configuration.backend
        let rings = try makeRingFiles(configuration)

        var fsOptions = configuration.fileSystem
        fsOptions.logger = logger
        fsOptions.ringFiles = rings
        // Each frontend has a share of the process's descriptors of its own,
        // so one that opens without end cannot starve the others: half for
        // its nodes, a quarter for its open files, directories and lock owners.
        let share = max(Int(clamping: openFiles) / configuration.maxFrontends, 256)
        fsOptions.nodeDescriptorLimit = configuration.fileHandles == .never
            ? Int.max / 2 : configuration.maxNodeDescriptors ?? share / 2
        fsOptions.openDescriptorLimit = share / 4
        // Fail now, in plain words, rather than when the guest mounts.
        do { _ = try PassthroughFS(root: configuration.sharedDir, options: fsOptions) } catch {
            throw ServeError("cannot share \(configuration.sharedDir): \(error)")
        }

        // The socket first: its path is out of reach inside the sandbox.
        let listener: UnixListener
        switch configuration.listen {
        case .path(let path, let group): listener = try UnixListener(path: path, group: group, backlog: Int32(configuration.maxFrontends))
        case .descriptor(let fd): listener = try UnixListener(inheritedDescriptor: fd)
        }
        let dax = backend.cacheSize > 0
        let pidNamespace = try Sandbox.enterNamespaces(configuration.sandbox, needsHostPids: dax,
                                                       unlinkOnExit: listener.path, logger: logger)
        let sandboxed = configuration.sandbox.mode != .none
        let kept = try Sandbox.keptCapabilities(configuration.sandbox, dax: dax)
        var options = backend
        if dax {
            // The mapping shadow starts threads: capabilities go first.
            if sandboxed { try Sandbox.dropCapabilities(keeping: kept, logger: logger) }
            do {
                options.mappableFiles = try MappingShadow(logger: logger)
            } catch {
                logger.warning("\(error): QEMU 11.1 will refuse to map the last partial page of files and read-only mappings (the guest sees EIO there); daxfs client frontends are not affected")
            }
            if let why = VhostUserFSBackend.truncationHoldUnavailable(in: configuration.sharedDir) {
                logger.warning("host truncations of mapped files cannot wait for the frontend here: \(why); a host process that truncates a file a guest maps can kill QEMU with SIGBUS")
            } else {
                logger.info("host truncations of mapped files wait until the frontend no longer maps the pages they remove")
            }
        }
        let root = try Sandbox.changeRoot(configuration.sandbox, sharedDir: configuration.sharedDir)
        if sandboxed {
            if !dax { try Sandbox.dropCapabilities(keeping: kept, logger: logger) }
            try Sandbox.installFilter(configuration.sandbox, logger: logger)
            logger.info("sandbox \(configuration.sandbox.mode.rawValue): the shared directory is the root\(pidNamespace ? ", in a pid namespace" : ""); capabilities \(kept); seccomp \(configuration.sandbox.seccomp.rawValue)")
        } else if configuration.sandbox.seccomp != .none {
            try Sandbox.installFilter(configuration.sandbox, logger: logger)
        }
        configuration.sharedDir = root

        let fileSystemOptions = fsOptions
        let server = VhostUserFSBackend(options: options, logger: logger) { () throws(Errno) -> any FileSystem in
            try PassthroughFS(root: root, options: fileSystemOptions)
        }
        try serve(server, listener: listener, rings: rings, configuration: configuration, logger: logger)
    }

    /// The accept loop: one frontend at a time, or up to `maxFrontends` at
    /// once, each on a thread of its own.
    private static func serve(_ backend: VhostUserFSBackend, listener: UnixListener, rings: RingFiles?,
                              configuration: ServeConfiguration, logger: Logger) throws(ServeError) {
        let current = Locked<Set<Int32>>([])
        let stopping = Atomic<Bool>(false)
        SignalWatcher.start(onFirst: {
            stopping.store(true, ordering: .releasing)
            listener.shutdown()
            current.withLock { for fd in $0 { Glibc.shutdown(fd, Int32(SHUT_RDWR)) } }
        }, onSecond: { Glibc.exit(1) })
        if let rings {
            do { try rings.start(tickInterval: Double(max(1, configuration.ringTickMilliseconds)) / 1000) } catch {
                throw ServeError("cannot start the ring files: \(error)")
            }
        }
        defer { rings?.stop() }
        switch configuration.listen {
        case .path(let path, _): logger.info("waiting for a vhost-user frontend on \(path)")
        case .descriptor(let fd): logger.info("waiting for a vhost-user frontend on descriptor \(fd)")
        }
        defer { listener.close() }
        @Sendable func serveOne(_ connection: Int32) {
            logger.info("frontend connected")
            let reason = backend.serve(connection: connection)
            current.withLock { _ = $0.remove(connection) }
            Syscall.close(connection)
            logger.info("frontend gone: \(reason)")
        }
        let maxFrontends = configuration.maxFrontends
        if maxFrontends == 1 {
            repeat {
                guard let connection = listener.accept() else { break }
                current.withLock { _ = $0.insert(connection) }
                serveOne(connection)
            } while configuration.keepListening && !stopping.load(ordering: .acquiring)
            return
        }
        // One token per frontend that may be served now.
        let slots = BlockingQueue<Bool>()
        for _ in 0 ..< maxFrontends { _ = slots.push(true) }
        var threads: [OSThread] = []
        while !stopping.load(ordering: .acquiring) {
            _ = slots.pop()
            guard let connection = listener.accept() else { break }
            current.withLock { _ = $0.insert(connection) }
            do {
                threads.append(try OSThread(name: "daxfs-frontend") { serveOne(connection); _ = slots.push(true) })
            } catch {
                logger.error("cannot start a thread for a frontend: \(error)")
                current.withLock { _ = $0.remove(connection) }
                Syscall.close(connection)
                _ = slots.push(true)
            }
        }
        for thread in threads { thread.join() }
    }

    // MARK: Checks

    static func validate(_ configuration: ServeConfiguration) throws(ServeError) {
        let backend = configuration.backend
        if let alignment = backend.session.mapAlignmentLog2, !(12 ... 30).contains(alignment) {
            throw ServeError("--map-alignment must be between 12 and 30 (log2 of bytes), not \(alignment)")
        }
        guard backend.threadPoolSize >= 0 else { throw ServeError("--thread-pool-size must not be negative") }
        guard configuration.maxFrontends >= 1 else { throw ServeError("--max-frontends must be at least 1") }
        if let tag = backend.tag, tag.isEmpty || tag.utf8.count > 36 || tag.utf8.contains(0) {
            throw ServeError("--tag must be 1 to 36 bytes without NUL, not \(tag.utf8.count) bytes")
        }
        guard (1 ... 16).contains(backend.announcedRequestQueues) else {
            throw ServeError("--request-queues must be between 1 and 16")
        }
        if let limit = configuration.maxNodeDescriptors, limit < 1 { throw ServeError("--max-node-fds must be at least 1") }
        try checkWindowSizes(cacheBytes: backend.cacheSize, mmapBytes: backend.mmapWindowSize)
    }

    /// QEMU puts every shared-memory region of a device in one PCI BAR and
    /// aborts (an assertion in pci_register_bar) unless the regions add up to
    /// a power of two; each must also be a whole number of pages, which MiB
    /// always are. Refused here, in words, instead of killing the VM at start.
    static func checkWindowSizes(cacheBytes: UInt64, mmapBytes: UInt64) throws(ServeError) {
        let cacheMiB = cacheBytes >> 20, mmapMiB = mmapBytes >> 20
        for (name, value) in [("--cache-size-mib", cacheMiB), ("--mmap-window-mib", mmapMiB)] where value > (1 << 24) {
            throw ServeError("\(name) \(value) is larger than 16 TiB")
        }
        let total = cacheMiB + mmapMiB
        guard total == 0 || total & (total - 1) == 0 else {
            let both = cacheMiB > 0 && mmapMiB > 0
            throw ServeError("the shared-memory windows must add up to a power of two MiB (QEMU aborts otherwise): "
                + (both ? "--cache-size-mib \(cacheMiB) + --mmap-window-mib \(mmapMiB) = \(total) MiB" : "\(total) MiB")
                + "; try \(1 << (64 - (total - 1).leadingZeroBitCount)) MiB in all")
        }
    }

    /// That `path` is a directory, or why not in words naming its `role`.
    public static func checkDirectory(_ path: String, role: String = "shared directory") throws(ServeError) {
        var info = stat()
        do {
            _ = try Syscall.call { stat(path, &info) }
        } catch {
            throw ServeError("\(role) \(path) does not exist or cannot be reached (\(error))")
        }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw ServeError("\(role) \(path) is not a directory") }
    }

    /// `--inode-file-handles=mandatory`: the shared directory's filesystem
    /// must give file handles (name_to_handle_at), or daxfs does not start.
    static func requireFileHandles(_ path: String) throws(ServeError) {
        guard daxfs_can_make_file_handle(path) == 0 else {
            throw ServeError("--inode-file-handles=mandatory: the filesystem of \(path) gives no file handles (\(Errno(daxfs_errno())))")
        }
    }

    /// Sets the open-file limit (nil: the soft limit up to the hard one; 0:
    /// unchanged) and returns the soft limit in force.
    static func applyOpenFileLimit(_ wanted: UInt64?, logger: Logger) -> UInt64 {
        guard let wanted else { return raiseOpenFileLimit() }
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if wanted > 0 {
            var new = rlimit(rlim_cur: rlim_t(wanted), rlim_max: max(rlim_t(wanted), limit.rlim_max))
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &new) != 0 {
                logger.warning("cannot set the open-file limit to \(wanted): \(Errno(daxfs_errno()))")
            }
            getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return UInt64(limit.rlim_cur)
    }

    /// The ring files of --ring-file and --private-ring-file, or nil.
    static func makeRingFiles(_ configuration: ServeConfiguration) throws(ServeError) -> RingFiles? {
        guard !configuration.ringFiles.isEmpty || !configuration.privateRingFiles.isEmpty else { return nil }
        let rings: RingFiles
        do { rings = try RingFiles(pipeFD: configuration.ringPipeFD) } catch { throw ServeError("cannot set up ring files: \(error)") }
        for (names, sharing) in [(configuration.ringFiles, RingFiles.Sharing.shared), (configuration.privateRingFiles, .perOpen)] {
            for name in names {
                guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
                    throw ServeError("ring file \(name) must be a file name in the shared directory (no '/')")
                }
                do { try rings.add(path: configuration.sharedDir + "/" + name, sharing: sharing) } catch {
                    throw ServeError("cannot make \(configuration.sharedDir)/\(name) a ring file: \(error)")
                }
            }
        }
        return rings
    }
}
