import ArgumentParser
import CLinux
import FUSEServer
import Glibc
import HostSystem
import Logging
import PassthroughFS
import ServeDaemon

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
        var configuration = ServeConfiguration(listen: .path(socketPath), sharedDir: sharedDir)
        configuration.fileSystem.cache = cache.mode
        configuration.fileSystem.xattr = xattr
        configuration.backend.threadPoolSize = threadPoolSize
        configuration.backend.pollMicroseconds = max(0, pollUs)
        configuration.backend.cacheSize = cacheSizeMib << 20
        let mmapWindow = mmapWindowMib ?? (ringFile.isEmpty && privateRingFile.isEmpty ? 0 : 64)
        configuration.backend.mmapWindowSize = mmapWindow << 20
        configuration.backend.tag = tag
        configuration.backend.announcedRequestQueues = requestQueues
        configuration.backend.session.mapAlignmentLog2 = mapAlignment
        configuration.keepListening = keepListening || maxFrontends > 1
        configuration.maxFrontends = maxFrontends
        configuration.ringFiles = ringFile
        configuration.privateRingFiles = privateRingFile
        configuration.ringTickMilliseconds = ringTickMs
        configuration.ringPipeFD = ringPipeFd
        configuration.maxNodeDescriptors = maxNodeFds
        // `daxfs serve` runs as it always has; daxfs-virtiofsd sandboxes itself.
        configuration.sandbox.mode = .none
        configuration.sandbox.seccomp = .none
        do { try ServeDaemon.run(configuration, logger: Logger(label: "daxfs")) } catch { throw CLIError(error.description) }
    }
}
