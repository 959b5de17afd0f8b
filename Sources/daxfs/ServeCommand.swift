import ArgumentParser
import CLinux
import FUSEServer
import Glibc
import HostSystem
import Logging
import MappingShadow
import PassthroughFS
import Synchronization
import VhostUser

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a directory to a VM as a vhost-user-fs device backend (a drop-in for virtiofsd).",
        discussion: """
            Listens on a Unix socket for a vhost-user frontend (QEMU: -chardev socket,path=PATH \
            -device vhost-user-fs-pci,chardev=...). Exits 0 on SIGTERM or SIGINT, and when the \
            frontend disconnects unless --keep-listening is given.
            """)

    @Option(help: "The vhost-user Unix socket to listen on (created; a stale socket there is replaced). Required.")
    var socketPath: String?
    @Option(help: "The host directory to share. Required.") var sharedDir: String?
    @Option(help: "Worker threads for requests; 0 handles them on each queue's own thread.")
    var threadPoolSize = 0
    @Option(help: "Caching: auto (1 s timeouts, data revalidated on open), always, never.")
    var cache: CacheOption = .auto
    @Flag(help: "Enable extended attributes (default: off, as in virtiofsd).") var xattr = false
    @Option(help: "log2 of the alignment DAX mappings need (default: the host page size, 12); 14 or 16 act like a 16 or 64 KiB host.")
    var mapAlignment: UInt16?
    @Option(help: "DAX cache window offered to the frontend in GET_SHMEM_CONFIG, in MiB; 0 = no DAX.")
    var cacheSizeMib: UInt64 = 0
    @Option(help: "The virtio-fs tag answered in GET_CONFIG (offering VHOST_USER_PROTOCOL_F_CONFIG, as virtiofsd does with --tag); frontends that read the config space from the backend, such as QEMU's vhost-user-test-device-pci with a DAX window, need it. At most 36 bytes.")
    var tag: String?
    @Option(help: "Request queues announced in the config space with --tag (num_request_queues); the frontend may still set up to 16.")
    var requestQueues = 1
    @Option(help: "Microseconds each queue thread spins for new requests before sleeping; trades CPU for latency.")
    var pollUs = 50
    @Flag(help: "Keep listening for the next frontend after one disconnects (default: exit).") var keepListening = false
    @Option(help: "Frontends served at once, each on its own threads; above 1 implies --keep-listening (default: 1).")
    var maxFrontends = 1
    @Option(help: ArgumentHelp("A device-like file in the shared directory (created if missing) whose mmap gets one region of server memory shared by every client, with a live counter the server writes (FUSE direct mmap; repeatable).", valueName: "name"))
    var ringFile: [String] = []
    @Option(help: ArgumentHelp("Like --ring-file, but every open of the file gets a private region, not inherited across fork (repeatable).", valueName: "name"))
    var privateRingFile: [String] = []
    @Option(help: "Milliseconds between the ring files' counter ticks (default: 100).")
    var ringTickMs = 100
    @Option(help: "Direct mmap window offered in GET_SHMEM_CONFIG (shared-memory id 1), in MiB (default: 64 with ring files, else 0 = off).")
    var mmapWindowMib: UInt64?
    @Option(help: "Nodes that keep a host file descriptor open; beyond this, the least recently used are closed and reopened by file handle when needed (needs root; default: half the open-file limit).")
    var maxNodeFds: Int?
    @Option(help: .hidden) var ringPipeFd: Int32?
    @Flag(help: "Print the vhost-user backend capabilities JSON (for QEMU and libvirt) and exit.") var printCapabilities = false
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: LogLevelOption = .info

    func run() throws {
        if printCapabilities {
            print(#"{"type": "fs", "features": []}"#)
            return
        }
        guard let socketPath else { throw ValidationError("--socket-path is required") }
        guard let sharedDir else { throw ValidationError("--shared-dir is required") }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = logLevel.level
            return handler
        }
        let logger = Logger(label: "daxfs")
        let openFiles = Int(clamping: raiseOpenFileLimit())
        try checkDirectory(sharedDir, role: "shared directory")
        if let mapAlignment, !(12 ... 30).contains(mapAlignment) {
            throw CLIError("--map-alignment must be between 12 and 30 (log2 of bytes), not \(mapAlignment)")
        }
        guard threadPoolSize >= 0 else { throw CLIError("--thread-pool-size must not be negative") }
        guard maxFrontends >= 1 else { throw CLIError("--max-frontends must be at least 1") }
        if let tag, tag.isEmpty || tag.utf8.count > 36 || tag.utf8.contains(0) {
            throw CLIError("--tag must be 1 to 36 bytes without NUL, not \(tag.utf8.count) bytes")
        }
        guard (1 ... 16).contains(requestQueues) else { throw CLIError("--request-queues must be between 1 and 16") }
        let mmapWindow = mmapWindowMib ?? (ringFile.isEmpty && privateRingFile.isEmpty ? 0 : 64)
        try checkWindowSizes(cacheMiB: cacheSizeMib, mmapMiB: mmapWindow)
        let rings = try makeRingFiles(sharedDir)

        var fsOptions = PassthroughFS.Options()
        fsOptions.cache = cache.mode
        fsOptions.xattr = xattr
        fsOptions.passthrough = false
        // Guest pids mean nothing on the host; the guest checks permissions itself.
        fsOptions.callerGroupsFromProc = false
        // A guest cannot be told about host changes (no notification queue): short timeouts.
        fsOptions.watchHost = false
        fsOptions.logger = logger
        fsOptions.ringFiles = rings
        if let maxNodeFds, maxNodeFds < 1 { throw ValidationError("--max-node-fds must be at least 1") }
        // Each frontend has a share of the process's descriptors of its own,
        // so one that opens without end cannot starve the others: half for
        // its nodes, a quarter for its open files, directories and lock owners.
        let share = max(openFiles / maxFrontends, 256)
        fsOptions.nodeDescriptorLimit = maxNodeFds ?? share / 2
        fsOptions.openDescriptorLimit = share / 4
        let root = sharedDir
        // Fail now, in plain words, rather than when the guest mounts.
        do { _ = try PassthroughFS(root: root, options: fsOptions) } catch { throw CLIError("cannot share \(root): \(error)") }

        var options = FSBackendOptions()
        options.threadPoolSize = threadPoolSize
        options.pollMicroseconds = max(0, pollUs)
        options.cacheSize = cacheSizeMib << 20
        options.mmapWindowSize = mmapWindow << 20
        options.tag = tag
        options.announcedRequestQueues = requestQueues
        options.session.mapAlignmentLog2 = mapAlignment
        if cacheSizeMib > 0 {
            do {
                options.mappableFiles = try MappingShadow(logger: logger)
            } catch {
                logger.warning("\(error): QEMU 11.1 will refuse to map the last partial page of files and read-only mappings (the guest sees EIO there); daxfs client frontends are not affected")
            }
            if let why = VhostUserFSBackend.truncationHoldUnavailable(in: root) {
                logger.warning("host truncations of mapped files cannot wait for the frontend here: \(why); a host process that truncates a file a guest maps can kill QEMU with SIGBUS")
            } else {
                logger.info("host truncations of mapped files wait until the frontend no longer maps the pages they remove")
            }
        }
        let options2 = fsOptions
        let backend = VhostUserFSBackend(options: options, logger: logger) { () throws(Errno) -> any FileSystem in
            try PassthroughFS(root: root, options: options2)
        }

        let listener = try UnixListener(path: socketPath, backlog: Int32(maxFrontends))
        let current = Locked<Set<Int32>>([])
        let stopping = Atomic<Bool>(false)
        SignalWatcher.start(onFirst: {
            stopping.store(true, ordering: .releasing)
            listener.shutdown()
            current.withLock { for fd in $0 { Glibc.shutdown(fd, Int32(SHUT_RDWR)) } }
        }, onSecond: { Glibc.exit(1) })
        if let rings {
            do { try rings.start(tickInterval: Double(max(1, ringTickMs)) / 1000) } catch { throw CLIError("cannot start the ring files: \(error)") }
        }
        defer { rings?.stop() }
        logger.info("waiting for a vhost-user frontend on \(socketPath)")
        defer { listener.close() }
        @Sendable func serveOne(_ connection: Int32) {
            logger.info("frontend connected")
            let reason = backend.serve(connection: connection)
            current.withLock { _ = $0.remove(connection) }
            Syscall.close(connection)
            logger.info("frontend gone: \(reason)")
        }
        if maxFrontends == 1 {
            repeat {
                guard let connection = listener.accept() else { break }
                current.withLock { _ = $0.insert(connection) }
                serveOne(connection)
            } while keepListening && !stopping.load(ordering: .acquiring)
            return
        }
        // Several frontends at once, each served on a thread of its own.
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

    /// QEMU puts every shared-memory region of a device in one PCI BAR and
    /// aborts (an assertion in pci_register_bar) unless the regions add up to
    /// a power of two; each must also be a whole number of pages, which MiB
    /// always are. Refused here, in words, instead of killing the VM at start.
    private func checkWindowSizes(cacheMiB: UInt64, mmapMiB: UInt64) throws {
        for (name, value) in [("--cache-size-mib", cacheMiB), ("--mmap-window-mib", mmapMiB)] where value > (1 << 24) {
            throw CLIError("\(name) \(value) is larger than 16 TiB")
        }
        let total = cacheMiB + mmapMiB
        guard total == 0 || total & (total - 1) == 0 else {
            let both = cacheMiB > 0 && mmapMiB > 0
            throw CLIError("the shared-memory windows must add up to a power of two MiB (QEMU aborts otherwise): "
                + (both ? "--cache-size-mib \(cacheMiB) + --mmap-window-mib \(mmapMiB) = \(total) MiB" : "\(total) MiB")
                + "; try \(1 << (64 - (total - 1).leadingZeroBitCount)) MiB in all")
        }
    }

    /// The ring files of --ring-file and --private-ring-file, or nil.
    private func makeRingFiles(_ sharedDir: String) throws -> RingFiles? {
        guard !ringFile.isEmpty || !privateRingFile.isEmpty else { return nil }
        let rings: RingFiles
        do { rings = try RingFiles(pipeFD: ringPipeFd) } catch { throw CLIError("cannot set up ring files: \(error)") }
        for (names, sharing) in [(ringFile, RingFiles.Sharing.shared), (privateRingFile, .perOpen)] {
            for name in names {
                guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
                    throw CLIError("ring file \(name) must be a file name in the shared directory (no '/')")
                }
                do { try rings.add(path: sharedDir + "/" + name, sharing: sharing) } catch {
                    throw CLIError("cannot make \(sharedDir)/\(name) a ring file: \(error)")
                }
            }
        }
        return rings
    }
}

/// A listening Unix stream socket at a path.
final class UnixListener: Sendable {
    let fd: Int32
    let path: String

    init(path: String, backlog: Int32 = 1) throws {
        let capacity = MemoryLayout.size(ofValue: sockaddr_un().sun_path)
        guard !path.isEmpty, path.utf8.count < capacity else {
            throw CLIError("socket path \(path) is empty or longer than \(capacity - 1) bytes")
        }
        var info = stat()
        if lstat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFSOCK else { throw CLIError("socket path \(path) exists and is not a socket") }
            unlink(path)  // a stale socket from an earlier run
        }
        // The path appears only once the socket listens: a frontend that
        // connects as soon as it sees the path (as QEMU and the tests do)
        // would otherwise get ECONNREFUSED between bind and listen. So bind
        // a temporary name beside it, listen, then rename it into place.
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        var temporary = "\(directory).\(name).\(getpid())"
        if temporary.utf8.count >= capacity { temporary = path }  // no room for a longer name: bind in place
        unlink(temporary)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw CLIError("cannot create a Unix socket: \(Errno(daxfs_errno()))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in temporary.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, backlog) == 0, temporary == path || rename(temporary, path) == 0 else {
            let error = Errno(daxfs_errno())
            if bound == 0 { unlink(temporary) }  // ours, listening or not
            Glibc.close(fd)
            throw CLIError("cannot listen on socket path \(path): \(error)")
        }
        self.fd = fd
        self.path = path
    }

    /// The next connection; nil once shut down.
    func accept() -> Int32? {
        while true {
            let connection = Glibc.accept(fd, nil, nil)
            if connection >= 0 { return connection }
            if daxfs_errno() == EINTR { continue }
            return nil
        }
    }

    func shutdown() { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    func close() {
        Glibc.close(fd)
        unlink(path)
    }
}
