import ArgumentParser
import DAX
import DaxClient
import FUSEABI
import FUSEServer
import Glibc
import HostSystem
import Logging
import PassthroughFS
import VhostUser

struct ClientCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "Read and write a shared directory through a DAX window, as a virtio-fs guest does.",
        discussion: """
            The client maps 2 MiB ranges of host files into a window of its own memory \
            (FUSE_SETUPMAPPING) and copies file data straight out of the host page cache. \
            With --socket-path it is a userspace virtio-fs driver: it plays the VMM and the \
            guest towards any vhost-user-fs backend (daxfs serve, virtiofsd), with the DAX \
            window in its own memory; a backend without DAX is read and written with \
            FUSE_READ/FUSE_WRITE. With --embedded, the server runs in the same process. \
            Examples: daxfs client --socket-path /run/fs.sock cat notes.txt; \
            daxfs client --embedded /srv/share ls
            """,
        subcommands: [Cat.self, Put.self, CopyIn.self, CopyOut.self, Stat.self, List.self, MmapRead.self, ClientBenchCommand.self, RandomRead.self])

    @OptionGroup var connection: ClientConnectionOptions

    struct Cat: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a file to standard output, read through the window.")
        @ParentCommand var parent: ClientCommand
        var connection: ClientConnectionOptions { parent.connection }
        @Argument(help: "The file, relative to the shared directory.") var path: String

        func run() throws {
            let client = try connection.connect()
            defer { connection.report(client) }
            try copyOut(client, path, to: 1, destination: "standard output")
        }
    }

    struct Put: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Copy standard input into a file (created or truncated).")
        @ParentCommand var parent: ClientCommand
        var connection: ClientConnectionOptions { parent.connection }
        @Argument(help: "The file, relative to the shared directory.") var path: String
        @Option(help: "Permission bits of a new file, in octal (default: 644).") var mode: String = "644"

        func run() throws {
            let bits = try permissionBits(mode)
            let client = try connection.connect()
            defer { connection.report(client) }
            try copyIn(client, from: 0, source: "standard input", to: path, mode: bits)
        }
    }

    struct CopyIn: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "cp-in", abstract: "Copy a host file into the shared directory (created or truncated).")
        @ParentCommand var parent: ClientCommand
        var connection: ClientConnectionOptions { parent.connection }
        @Argument(help: "The host file to read.") var hostFile: String
        @Argument(help: "The file to write, relative to the shared directory.") var path: String
        @Option(help: "Permission bits of a new file, in octal (default: 644).") var mode: String = "644"

        func run() throws {
            let bits = try permissionBits(mode)
            let fd = try clientCall("cannot open \(hostFile)") { () throws(Errno) in try Syscall.call { Glibc.open(hostFile, O_RDONLY | O_CLOEXEC) } }
            defer { Glibc.close(fd) }
            let client = try connection.connect()
            defer { connection.report(client) }
            try copyIn(client, from: fd, source: hostFile, to: path, mode: bits)
        }
    }

    struct CopyOut: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "cp-out", abstract: "Copy a file of the shared directory to a host file (created or truncated).")
        @ParentCommand var parent: ClientCommand
        var connection: ClientConnectionOptions { parent.connection }
        @Argument(help: "The file to read, relative to the shared directory.") var path: String
        @Argument(help: "The host file to write.") var hostFile: String

        func run() throws {
            let client = try connection.connect()
            defer { connection.report(client) }
            let fd = try clientCall("cannot create \(hostFile)") { () throws(Errno) in
                try Syscall.call { Glibc.open(hostFile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
            }
            defer { Glibc.close(fd) }
            try copyOut(client, path, to: fd, destination: hostFile)
        }
    }

    struct MmapRead: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "mmap-read",
            abstract: "Map a file and print its first bytes as text (a ring file's live counter, with daxfs serve --ring-file).",
            discussion: """
                Maps the file the way a device-like file wants: a region of the server's \
                memory when the server offers FUSE direct mmap for it, else a DAX range, else \
                a copy; says which on standard error, then prints the text up to the first NUL \
                (at most --bytes). With --watch it prints the text again whenever it changes.
                """)
        @ParentCommand var parent: ClientCommand
        var connection: ClientConnectionOptions { parent.connection }
        @Argument(help: "The file, relative to the shared directory.") var path: String
        @Option(help: "Bytes to map and show (default: 64).") var bytes = 64
        @Flag(help: "Keep printing the text whenever it changes, until interrupted.") var watch = false
        @Option(help: "With --watch, stop after this many seconds (default: run until interrupted).") var seconds: Double?

        func run() throws {
            guard bytes > 0, bytes <= 1 << 30 else { throw ValidationError("--bytes must be between 1 and 1 GiB") }
            let client = try connection.connect()
            defer { connection.report(client) }
            let file = try clientCall("cannot open \(path)") { () throws(Errno) in try client.open(path, flags: O_RDONLY) }
            defer { try? file.close() }
            let mapping = try clientCall("cannot map \(path)") { () throws(Errno) in try file.mmap(length: bytes) }
            defer { try? mapping.unmap() }
            switch mapping.kind {
            case .region(let id, let offset):
                note("\(path): server region \(id) at offset \(offset)\(mapping.dontCopy ? ", not inherited across fork" : "")")
            case .dax: note("\(path): DAX range (the server has no region for it)")
            case .copy: note("\(path): a copy (the server offers neither direct mmap nor DAX)")
            }
            func text() -> String {
                String(decoding: UnsafeRawBufferPointer(mapping.bytes).prefix { $0 != 0 }, as: UTF8.self)
            }
            var shown = text()
            print(shown, terminator: shown.hasSuffix("\n") || shown.isEmpty ? "" : "\n")
            fflush(nil)
            guard watch else { return }
            Interruption.install()
            let deadline = seconds.map { monotonicSeconds() + $0 }
            while !Interruption.requested, deadline.map({ monotonicSeconds() < $0 }) ?? true {
                usleep(10_000)
                let now = text()
                if now != shown {
                    shown = now
                    print(now, terminator: now.hasSuffix("\n") || now.isEmpty ? "" : "\n")
                    fflush(nil)
                }
            }
        }
    }

    struct Stat: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a file's size, type, mode, owner and times.")
        @ParentCommand var parent: ClientCommand
        var connection: ClientConnectionOptions { parent.connection }
        @Argument(help: "The path, relative to the shared directory.") var path: String

        func run() throws {
            let client = try connection.connect()
            defer { connection.report(client) }
            let attr = try clientCall("cannot stat \(path)") { () throws(Errno) in try client.stat(path) }
            print("""
                path: \(path)
                type: \(typeName(attr.mode))
                size: \(attr.size)
                mode: \(String(attr.mode & 0o7777, radix: 8))
                inode: \(attr.ino)
                links: \(attr.nlink)
                owner: \(attr.uid):\(attr.gid)
                modified: \(attr.mtime).\(nanoseconds(attr.mtimensec)) (seconds since 1970)
                """)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List a directory (default: the shared directory itself).")
        @ParentCommand var parent: ClientCommand
        var connection: ClientConnectionOptions { parent.connection }
        @Argument(help: "The directory, relative to the shared directory.") var path: String = ""

        func run() throws {
            let client = try connection.connect()
            defer { connection.report(client) }
            let entries = try clientCall("cannot list \(path.isEmpty ? "the shared directory" : path)") { () throws(Errno) in try client.list(path) }
            for entry in entries.sorted(by: { $0.name < $1.name }) {
                print(entry.type == .directory ? entry.name + "/" : entry.name)
            }
        }
    }
}

extension ClientCommand {
    /// A quick measurement of the read paths on one file in the page cache;
    /// `daxfs bench dax` is the full benchmark.
    struct RandomRead: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "randread",
            abstract: "Time random reads of a scratch file: window (at several sizes), FUSE_READ, native pread; and SETUPMAPPING+REMOVEMAPPING.",
            discussion: "Creates .daxfs-randread in the shared directory (removed at the end). Uses --range-size; ignores --window-size and --no-dax.")
        @ParentCommand var parent: ClientCommand
        @Option(help: "Size of the scratch file.") var fileSize: ByteSize = ByteSize(256 << 20)
        @Option(help: "Bytes per read.") var block: ByteSize = ByteSize(4096)
        @Option(help: "Reads per configuration.") var reads: Int = 200_000

        func run() throws {
            let options = parent.connection
            guard let dir = options.embedded else { throw ValidationError("--embedded SHARED_DIR is required") }
            let path = dir + "/.daxfs-randread"
            let size = fileSize.bytes, blockSize = Int(block.bytes), range = options.rangeSize.bytes
            guard size >= range, blockSize > 0, blockSize <= Int(range) else { throw ValidationError("--file-size must hold a range and --block fit in one") }
            defer { unlink(path) }
            // Fill the file so it sits in the host page cache.
            let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
            guard fd >= 0 else { throw CLIError("cannot create \(path)") }
            defer { close(fd) }
            let fill = [UInt8](repeating: 0x5A, count: 1 << 20)
            var written: UInt64 = 0
            while written < size {
                let n = fill.withUnsafeBytes { pwrite(fd, $0.baseAddress, min($0.count, Int(size - written)), off_t(written)) }
                guard n > 0 else { throw CLIError("cannot fill \(path)") }
                written += UInt64(n)
            }
            var rng = SplitMix64(seed: 42)
            let blocks = size / UInt64(blockSize)
            let offsets = (0 ..< reads).map { _ in (rng.next() % blocks) * UInt64(blockSize) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 4096)
            defer { buffer.deallocate() }

            func perRead(_ body: (UInt64) throws -> Void) rethrows -> Double {
                for offset in offsets.prefix(2000) { try body(offset) }  // warm up
                let start = monotonicSeconds()
                for offset in offsets { try body(offset) }
                return (monotonicSeconds() - start) / Double(offsets.count) * 1e6
            }
            let native = perRead { offset in _ = pread(fd, buffer.baseAddress, blockSize, off_t(offset)) }
            print("native pread:        \(formatted(native, decimals: 2)) µs/read")

            func client(_ mode: DAXMode, windowShare: Double) throws -> (Double, DaxStatistics) {
                var clientOptions = DaxClient.Options()
                clientOptions.mode = mode
                clientOptions.rangeSize = range
                let ranges = max(1, UInt64((Double(size) * windowShare / Double(range)).rounded(.up)))
                clientOptions.windowSize = ranges * range
                var logger = Logger(label: "daxfs.session")
                logger.logLevel = .warning
                var session = SessionOptions()
                session.mapAlignmentLog2 = options.mapAlignment
                let fs = try PassthroughFS(root: dir, options: PassthroughFS.Options(passthrough: false))
                let client = try DaxClient.embedded(fileSystem: fs, sessionOptions: session, options: clientOptions, logger: logger)
                let file = try client.open(".daxfs-randread")
                // Touch every chunk once, as a working set that was read before.
                var offset: UInt64 = 0
                while offset < size { _ = try file.pread(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< 1]), at: offset); offset += range }
                let micros = try perRead { offset in _ = try file.pread(into: buffer, at: offset) }
                let stats = client.statistics
                try file.close()
                return (micros, stats)
            }
            let (fuseRead, _) = try client(.never, windowShare: 1)
            print("FUSE_READ:           \(formatted(fuseRead, decimals: 2)) µs/read")
            for share in [1.0, 0.5, 0.25] {
                for mode in [DAXMode.auto, .always] {
                    let (micros, stats) = try client(mode, windowShare: share)
                    print("window \(padLeft(String(Int(share * 100)), 3)) % \(padRight(mode.rawValue, 6)): \(formatted(micros, decimals: 2)) µs/read  "
                          + "(\(stats.mappingsSetUp) mappings, \(stats.reclaimed) reclaimed, \(stats.fuseReads) FUSE_READs)")
                }
            }

            // SETUPMAPPING + REMOVEMAPPING round trips of one range.
            let window = try LocalWindow(size: range * 2)
            let fs = try PassthroughFS(root: dir, options: PassthroughFS.Options(passthrough: false))
            var logger = Logger(label: "daxfs.session")
            logger.logLevel = .warning
            let fuse = FUSEClient(channel: EmbeddedChannel(session: FUSESession(fileSystem: fs, logger: logger, window: window)))
            _ = try fuse.initialize(flags: [.mapAlignment])
            let node = NodeID(try fuse.lookup(parent: .root, name: ".daxfs-randread").nodeid)
            var setup: [Double] = [], remove: [Double] = []
            for i in 0 ..< 2000 {
                let foffset = UInt64(i) % (size / range) * range
                let t0 = monotonicSeconds()
                try fuse.setupMapping(node, fileOffset: foffset, windowOffset: 0, length: range, writable: false)
                let t1 = monotonicSeconds()
                try fuse.removeMapping([RemoveMappingOne(moffset: 0, len: range)])
                let t2 = monotonicSeconds()
                setup.append((t1 - t0) * 1e6)
                remove.append((t2 - t1) * 1e6)
            }
            setup.sort()
            remove.sort()
            print("SETUPMAPPING:        p50 \(formatted(setup[setup.count / 2], decimals: 2)) µs, p99 \(formatted(setup[setup.count * 99 / 100], decimals: 2)) µs")
            print("REMOVEMAPPING:       p50 \(formatted(remove[remove.count / 2], decimals: 2)) µs, p99 \(formatted(remove[remove.count * 99 / 100], decimals: 2)) µs")
        }
    }
}

/// How `daxfs client` reaches a server, and the window it uses.
struct ClientConnectionOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Connect to the vhost-user-fs backend listening on this Unix socket (daxfs serve, virtiofsd).", valueName: "path"))
    var socketPath: String?
    @Option(name: .customLong("embedded"), help: ArgumentHelp("Serve this host directory in this process and connect to it (server and client in one process).", valueName: "shared-dir"))
    var embedded: String?
    @Option(help: "Largest DAX window to use, e.g. 256M or 1G. With --socket-path the client reserves what the backend asks for (GET_SHMEM_CONFIG), capped by this.")
    var windowSize: ByteSize = ByteSize(1 << 30)
    @Option(help: "Bytes per mapping: a power of two of at least the page size, e.g. 64K or 2M.") var rangeSize: ByteSize = ByteSize(2 << 20)
    @Flag(help: "Do not use the DAX window: every read and write is a FUSE_READ or FUSE_WRITE (default: DAX on when the backend offers a window).") var noDax = false
    @Option(help: "With --socket-path: microseconds a caller spins on the ring for its reply before sleeping on the eventfd; trades CPU for latency.")
    var pollUs = 50
    @Option(help: "With --socket-path: request queues to use (the backend may offer fewer).") var queues = 1
    @Option(help: "With --socket-path: requests that may be outstanding at once (each holds 2 MiB of guest memory).") var slots = 24
    @Option(help: "Embedded server: log2 of the alignment it demands of mappings, e.g. 14 or 16 to act like a 16 KiB or 64 KiB host (default: log2 of the host page size).")
    var mapAlignment: UInt16?
    @Flag(help: "Print the DAX counters (mappings, reclaims, fallbacks) to standard error at the end (default: off).") var stats = false

    func validate() throws {
        guard rangeSize.bytes >= UInt64(HostPage.size), rangeSize.bytes.nonzeroBitCount == 1 else {
            throw ValidationError("--range-size must be a power of two of at least the page size (\(HostPage.size) bytes)")
        }
        guard windowSize.bytes >= rangeSize.bytes, windowSize.bytes % UInt64(HostPage.size) == 0 else {
            throw ValidationError("--window-size must be a multiple of the page size and hold at least one range")
        }
        if let mapAlignment, mapAlignment > 40 { throw ValidationError("--map-alignment must be between 0 and 40") }
        if socketPath != nil && embedded != nil { throw ValidationError("give either --socket-path or --embedded, not both") }
        guard pollUs >= 0 else { throw ValidationError("--poll-us must not be negative") }
        guard (1 ... 64).contains(queues) else { throw ValidationError("--queues must be between 1 and 64") }
        guard (1 ... 1024).contains(slots) else { throw ValidationError("--slots must be between 1 and 1024") }
    }

    /// Where the requests go: the channel, and the window the server maps into.
    func openTransport() throws -> ClientTransport {
        if let socketPath { return try openVhostUser(socketPath) }
        guard let embedded else {
            throw ValidationError("say which server to use: --socket-path PATH (a vhost-user-fs backend) or --embedded SHARED_DIR")
        }
        try checkDirectory(embedded, role: "shared directory")
        let fileSystem: PassthroughFS
        do {
            fileSystem = try PassthroughFS(root: embedded, options: PassthroughFS.Options(passthrough: false))
        } catch {
            throw CLIError("cannot share \(embedded): \(error)")
        }
        var sessionOptions = SessionOptions()
        sessionOptions.mapAlignmentLog2 = mapAlignment
        var window: LocalWindow?
        if !noDax {
            do throws(Errno) { window = try LocalWindow(size: windowSize.bytes, guarded: true) } catch {
                throw CLIError("cannot reserve a \(windowSize.defaultValueDescription) DAX window: \(error)")
            }
        }
        var logger = Logger(label: "daxfs.session")
        logger.logLevel = .warning
        let session = FUSESession(fileSystem: fileSystem, options: sessionOptions, logger: logger, window: window)
        return ClientTransport(channel: EmbeddedChannel(session: session), window: window, frontend: nil, description: "embedded server on \(embedded)")
    }

    private func openVhostUser(_ path: String) throws -> ClientTransport {
        var options = VhostUserFrontend.Options()
        options.requestQueues = queues
        let slotSize = (1 << 20) + 4096
        // Each slot holds a request and a reply; the rings and a margin come on top.
        options.guestMemorySize = UInt64(slots * 2 * slotSize + (8 << 20))
        var logger = Logger(label: "daxfs.client")
        logger.logLevel = .error
        let made = Locked<LocalWindow?>(nil)
        let cap = windowSize.bytes
        let makeWindow: ((UInt64) throws(Errno) -> any WindowMapper)? = noDax ? nil : { size throws(Errno) -> any WindowMapper in
            let window = try LocalWindow(size: min(size, cap), guarded: true)
            made.withLock { $0 = window }
            return window
        }
        let madeMmap = Locked<LocalWindow?>(nil)
        let makeMmapWindow = { (size: UInt64) throws(Errno) -> any WindowMapper in
            let window = try LocalWindow(size: min(size, 1 << 30), guarded: true)
            madeMmap.withLock { $0 = window }
            return window
        }
        let frontend: VhostUserFrontend
        do throws(FrontendError) {
            frontend = try VhostUserFrontend(socketPath: path, options: options, logger: logger, makeWindow: makeWindow,
                                             makeMmapWindow: makeMmapWindow)
        } catch {
            if error.description.hasPrefix("cannot connect") { throw CLIError(error.description) }
            throw CLIError("cannot set up the virtio-fs device with the backend at \(path): \(error)")
        }
        let channel: VirtioChannel
        do throws(Errno) {
            channel = try VirtioChannel(frontend: frontend, slots: slots, slotSize: slotSize, pollMicroseconds: pollUs)
        } catch {
            throw CLIError("cannot set up the request slots in guest memory: \(error)")
        }
        return ClientTransport(channel: channel, window: made.withLock { $0 }, mmapWindow: madeMmap.withLock { $0 }, frontend: frontend,
                               description: "backend at \(path)")
    }

    /// The client options these flags ask for, with a window of at most `windowSize`.
    func clientOptions(windowSize: UInt64? = nil) -> DaxClient.Options {
        var options = DaxClient.Options()
        options.windowSize = windowSize ?? self.windowSize.bytes
        options.rangeSize = rangeSize.bytes
        options.mode = noDax ? .never : .auto
        return options
    }

    func connect() throws -> DaxClient {
        try makeClient(on: try openTransport(), options: clientOptions())
    }

    /// INIT over `transport`; errors in words.
    func makeClient(on transport: ClientTransport, channel: (any FUSEChannel)? = nil, options: DaxClient.Options) throws -> DaxClient {
        do throws(DaxClientError) {
            return try DaxClient(channel: channel ?? transport.channel, window: transport.window, mmapWindow: transport.mmapWindow, options: options)
        } catch {
            switch error.kind {
            case .mapAlignment: throw CLIError("backend refused DAX: \(error.description)")
            case .connection(.notConnected): throw CLIError("the \(transport.description) went away during INIT (\(Errno.notConnected))")
            default: throw CLIError(error.description)
            }
        }
    }

    func report(_ client: DaxClient) {
        guard stats else { return }
        let s = client.statistics
        let line = "dax: \(s.ranges) ranges (\(s.freeRanges) free), \(s.mappingsSetUp) mappings set up, \(s.upgrades) upgrades, "
            + "\(s.reclaimed) reclaimed, \(s.windowHits) window hits, \(s.fuseReads) FUSE_READs, \(s.fuseWrites) FUSE_WRITEs\n"
        FileHandleOutput.standardError(line)
    }
}

/// A connected transport: the channel requests travel on, the window the
/// server maps into (nil without DAX), and the vhost-user device if any.
final class ClientTransport: @unchecked Sendable {
    let channel: any FUSEChannel
    let window: LocalWindow?
    /// Where the backend maps FUSE direct mmap regions, when it offers them.
    let mmapWindow: LocalWindow?
    let frontend: VhostUserFrontend?
    let description: String
    init(channel: any FUSEChannel, window: LocalWindow?, mmapWindow: LocalWindow? = nil, frontend: VhostUserFrontend?, description: String) {
        self.channel = channel; self.window = window; self.mmapWindow = mmapWindow; self.frontend = frontend; self.description = description
    }
}

/// A byte count written as 4096, 64K, 2M or 1G (powers of 1024).
struct ByteSize: ExpressibleByArgument {
    let bytes: UInt64
    init(_ bytes: UInt64) { self.bytes = bytes }
    init?(argument: String) {
        var text = argument.uppercased()
        if text.hasSuffix("IB") { text.removeLast(2) } else if text.hasSuffix("B") { text.removeLast() }
        var shift: UInt64 = 0
        switch text.last {
        case "K": shift = 10
        case "M": shift = 20
        case "G": shift = 30
        case "T": shift = 40
        default: break
        }
        if shift > 0 { text.removeLast() }
        guard let value = UInt64(text), value <= UInt64.max >> shift else { return nil }
        bytes = value << shift
    }
    var defaultValueDescription: String {
        for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] where bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return "\(bytes >> UInt64(shift))\(unit)"
        }
        return "\(bytes)"
    }
}

enum FileHandleOutput {
    static func standardError(_ text: String) {
        var text = text
        text.withUTF8 { try? Syscall.writeAll(2, from: UnsafeRawBufferPointer($0)) }
    }
}

private func permissionBits(_ mode: String) throws -> UInt32 {
    guard let bits = UInt32(mode, radix: 8), bits <= 0o7777 else { throw ValidationError("--mode must be octal permission bits such as 644") }
    return bits
}

/// Copies a file of the share to `fd`, 1 MiB at a time, through the window where it can.
private func copyOut(_ client: DaxClient, _ path: String, to fd: Int32, destination: String) throws {
    let file = try clientCall("cannot open \(path)") { () throws(Errno) in try client.open(path) }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: HostPage.size)
    defer { buffer.deallocate() }
    var offset: UInt64 = 0
    while true {
        let count = try clientCall("cannot read \(path)") { () throws(Errno) in try file.pread(into: buffer, at: offset) }
        if count == 0 { break }
        try clientCall("cannot write to \(destination)") { () throws(Errno) in
            try Syscall.writeAll(fd, from: UnsafeRawBufferPointer(rebasing: buffer[0 ..< count]))
        }
        offset += UInt64(count)
    }
    try clientCall("cannot close \(path)") { () throws(Errno) in try file.close() }
}

/// Copies `fd` to end of input into a file of the share (created or truncated).
private func copyIn(_ client: DaxClient, from fd: Int32, source: String, to path: String, mode: UInt32) throws {
    let file = try clientCall("cannot create \(path)") { () throws(Errno) in try client.open(path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: mode) }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: HostPage.size)
    defer { buffer.deallocate() }
    var offset: UInt64 = 0
    while true {
        let count = try clientCall("cannot read \(source)") { () throws(Errno) in try Syscall.read(fd, into: buffer) }
        if count == 0 { break }
        var done = 0
        while done < count {
            let written = try clientCall("cannot write \(path)") { () throws(Errno) in
                try file.pwrite(UnsafeRawBufferPointer(rebasing: buffer[done ..< count]), at: offset + UInt64(done))
            }
            guard written > 0 else { throw CLIError("cannot write \(path): the backend wrote nothing") }
            done += written
        }
        offset += UInt64(count)
    }
    try clientCall("cannot close \(path)") { () throws(Errno) in try file.close() }
}

/// Runs a client call and turns its errno into a sentence.
func clientCall<R>(_ what: String, _ body: () throws(Errno) -> R) throws -> R {
    do throws(Errno) {
        return try body()
    } catch where error == .notConnected {
        throw CLIError("\(what): the backend went away (\(error))")
    } catch {
        throw CLIError("\(what): \(error)")
    }
}

private func nanoseconds(_ value: UInt32) -> String {
    let digits = String(value)
    return String(repeating: "0", count: max(0, 9 - digits.count)) + digits
}

private func typeName(_ mode: UInt32) -> String {
    switch mode & UInt32(S_IFMT) {
    case UInt32(S_IFREG): "regular file"
    case UInt32(S_IFDIR): "directory"
    case UInt32(S_IFLNK): "symbolic link"
    case UInt32(S_IFIFO): "fifo"
    case UInt32(S_IFSOCK): "socket"
    case UInt32(S_IFCHR): "character device"
    case UInt32(S_IFBLK): "block device"
    default: "unknown"
    }
}
