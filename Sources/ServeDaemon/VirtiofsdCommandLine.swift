import Logging
import PassthroughFS

/// The command line of `daxfs-virtiofsd`: the Rust virtiofsd 1.14's
/// options (what libvirt and users pass; `virtiofsd --help` is the
/// reference), then daxfs's own. Every virtiofsd option is either
/// implemented or refused with the reason, never ignored: `options` is the
/// table, and a test walks it.
public enum VirtiofsdCommandLine {
    /// What the command line asks for.
    public enum Action: Sendable {
        case serve(ServeConfiguration, Logging)
        case printCapabilities
        case help
        case version
    }

    /// Where log lines go and from which level.
    public struct Logging: Sendable, Equatable {
        /// nil: nothing is logged (`--log-level off`).
        public var level: Logger.Level? = .info
        public var syslog = false
        public init(level: Logger.Level? = .info, syslog: Bool = false) {
            self.level = level
            self.syslog = syslog
        }
    }

    /// The features `--print-capabilities` lists (QEMU's vhost-user.json
    /// "fs" features): the virtiofsd-style separate options work.
    public static let features = ["separate-options"]

    public static var capabilitiesJSON: String {
        "{\n  \"type\": \"fs\",\n  \"features\": [\n" + features.map { "    \"\($0)\"" }.joined(separator: ",\n") + "\n  ]\n}"
    }

    /// --help: every option of the table with its help, refused ones marked.
    public static var helpText: String {
        var lines = ["Usage: daxfs-virtiofsd --shared-dir DIR (--socket-path PATH | --fd N) [OPTIONS]", "",
                     "daxfs's vhost-user-fs backend with virtiofsd's command line.", "", "Options:"]
        for option in options {
            let value = switch option.value {
            case .none: ""
            case .required: " VALUE"
            case .optional: "[=VALUE]"
            }
            lines.append("  " + option.names.joined(separator: ", ") + value)
            lines.append("        " + option.help)
        }
        return lines.joined(separator: "\n")
    }

    /// How an option takes its value.
    public enum Value: Sendable { case none, required, optional }

    public struct Option: Sendable {
        public let names: [String]
        public let value: Value
        /// Implemented, or the reason it is refused.
        public let refusal: String?
        public let help: String
        let apply: @Sendable (inout State, String?) throws(ServeError) -> Void
    }

    /// The parse so far.
    struct State {
        var sharedDir: String?
        var socketPath: String?
        var socketGroup: String?
        var fd: Int32?
        var configuration = ServeConfiguration(listen: .descriptor(-1), sharedDir: "")
        var logging = Logging()
        var action: Action?
        /// Set by --cache, or by -o cache=.
        var cache = PassthroughFS.CacheMode.auto
        init() {
            // virtiofsd's defaults where they differ from daxfs serve's.
            configuration.fileSystem.handleKillprivV2 = false
            configuration.fileSystem.announceSubmounts = true
            configuration.sandbox.mode = .namespace
        }
    }

    public static func parse(_ arguments: [String]) throws(ServeError) -> Action {
        var state = State()
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            var name = argument, inline: String?
            if argument.hasPrefix("--"), let equals = argument.firstIndex(of: "=") {
                name = String(argument[..<equals])
                inline = String(argument[argument.index(after: equals)...])
            } else if argument.hasPrefix("-o"), argument.count > 2 {
                name = "-o"
                inline = String(argument.dropFirst(2))
            }
            guard let option = options.first(where: { $0.names.contains(name) }) else {
                if argument.hasPrefix("-") { throw ServeError("unknown option \(name) (daxfs-virtiofsd --help lists the options)") }
                throw ServeError("unexpected argument \(argument): daxfs-virtiofsd takes only options")
            }
            if let refusal = option.refusal { throw ServeError("\(name) is not supported by daxfs-virtiofsd: \(refusal)") }
            var value = inline
            switch option.value {
            case .none:
                if inline != nil { throw ServeError("\(name) takes no value") }
            case .required:
                if value == nil {
                    guard index < arguments.count else { throw ServeError("\(name) needs a value") }
                    value = arguments[index]
                    index += 1
                }
            case .optional:
                break
            }
            try option.apply(&state, value)
        }
        if let action = state.action { return action }
        return .serve(try finish(state), state.logging)
    }

    private static func finish(_ state: State) throws(ServeError) -> ServeConfiguration {
        var configuration = state.configuration
        guard let sharedDir = state.sharedDir else { throw ServeError("--shared-dir (or -o source=) is required") }
        configuration.sharedDir = sharedDir
        switch (state.socketPath, state.fd) {
        case (let path?, nil): configuration.listen = .path(path, group: state.socketGroup)
        case (nil, let fd?):
            if state.socketGroup != nil { throw ServeError("--socket-group applies to --socket-path, not to an inherited --fd") }
            configuration.listen = .descriptor(fd)
        case (nil, nil): throw ServeError("--socket-path or --fd is required")
        case (_?, _?): throw ServeError("--socket-path and --fd exclude each other")
        }
        configuration.fileSystem.cache = state.cache
        if configuration.backend.mmapWindowSize == 0, !configuration.ringFiles.isEmpty || !configuration.privateRingFiles.isEmpty {
            configuration.backend.mmapWindowSize = 64 << 20  // as daxfs serve: a window for the rings
        }
        configuration.sandbox.readOnly = configuration.fileSystem.readOnly
        if configuration.maxFrontends > 1 { configuration.keepListening = true }
        return configuration
    }

    // MARK: The table

    private static func number<T: FixedWidthInteger>(_ value: String?, _ name: String, _ range: ClosedRange<T>) throws(ServeError) -> T {
        guard let value, let number = T(value), range.contains(number) else {
            throw ServeError("\(name) needs a number from \(range.lowerBound) to \(range.upperBound), not \(value ?? "nothing")")
        }
        return number
    }

    private static func choice<T: RawRepresentable>(_ value: String?, _ name: String, _ all: [T]) throws(ServeError) -> T where T.RawValue == String {
        guard let value, let chosen = T(rawValue: value) else {
            throw ServeError("\(name) must be one of \(all.map(\.rawValue).joined(separator: ", ")), not \(value ?? "nothing")")
        }
        return chosen
    }

    private static func cacheMode(_ value: String?, _ name: String) throws(ServeError) -> PassthroughFS.CacheMode {
        switch value {
        case "auto": return .auto
        case "always": return .always
        case "never", "none": return .never
        case "metadata":
            throw ServeError("\(name) metadata is not supported by daxfs-virtiofsd: use auto (attributes for 1 s, data revalidated on open) or never")
        default: throw ServeError("\(name) must be auto, always, never or metadata, not \(value ?? "nothing")")
        }
    }

    private static func logLevel(_ value: String?, _ name: String) throws(ServeError) -> Logger.Level? {
        switch value {
        case "error", "err": return .error
        case "warn", "warning": return .warning
        case "info": return .info
        case "debug": return .debug
        case "trace": return .trace
        case "off": return nil
        default: throw ServeError("\(name) must be error, warn, info, debug, trace or off, not \(value ?? "nothing")")
        }
    }

    private static func option(_ names: [String], _ value: Value = .none, _ help: String,
                               _ apply: @escaping @Sendable (inout State, String?) throws(ServeError) -> Void) -> Option {
        Option(names: names, value: value, refusal: nil, help: help, apply: apply)
    }

    private static func refused(_ names: [String], _ value: Value, _ reason: String) -> Option {
        Option(names: names, value: value, refusal: reason, help: "not supported: " + reason, apply: { _, _ in })
    }

    public static let options: [Option] = [
        option(["--shared-dir"], .required, "Shared directory path") { $0.sharedDir = $1 },
        option(["--tag"], .required, "The virtio-fs tag answered in GET_CONFIG (offers VHOST_USER_PROTOCOL_F_CONFIG)") { $0.configuration.backend.tag = $1 },
        option(["--socket-path", "--socket"], .required, "vhost-user socket path (--socket is the deprecated name)") { $0.socketPath = $1 },
        option(["--socket-group"], .required, "Name of group for the vhost-user socket") { $0.socketGroup = $1 },
        option(["--fd"], .required, "File descriptor for the listening (not yet connected) socket") { state, value throws(ServeError) in
            state.fd = try number(value, "--fd", 0 ... Int32.max)
        },
        option(["--thread-pool-size"], .required, "Worker threads for requests; 0 handles them on each queue's thread") { state, value throws(ServeError) in
            state.configuration.backend.threadPoolSize = try number(value, "--thread-pool-size", 0 ... 1024)
        },
        option(["--xattr"], .none, "Enable support for extended attributes") { state, _ in state.configuration.fileSystem.xattr = true },
        option(["--posix-acl"], .optional, "POSIX ACLs: only never (the default) is supported") { _, value throws(ServeError) in
            guard value == "never" else {
                throw ServeError("--posix-acl\(value.map { "=" + $0 } ?? "") is not supported by daxfs-virtiofsd: POSIX ACL negotiation (FUSE_POSIX_ACL) is not implemented; --posix-acl=never is the default")
            }
        },
        refused(["--xattrmap"], .required, "extended attribute names are passed through unchanged; there is no name mapping"),
        option(["--sandbox"], .required, "Sandbox: namespace (default), chroot, none") { state, value throws(ServeError) in
            state.configuration.sandbox.mode = try choice(value, "--sandbox", Sandbox.Mode.allCases)
        },
        option(["--readonly"], .none, "Refuse every change to the shared directory (EROFS)") { state, _ in state.configuration.fileSystem.readOnly = true },
        option(["--seccomp"], .required, "Action on a syscall outside the allowlist: none, kill (default), log, trap") { state, value throws(ServeError) in
            state.configuration.sandbox.seccomp = try choice(value, "--seccomp", Sandbox.SeccompChoice.allCases)
        },
        option(["--no-announce-submounts"], .none, "Do not tell the guest which directories are mount points") { state, _ in
            state.configuration.fileSystem.announceSubmounts = false
        },
        option(["--announce-submounts"], .none, "Tell the guest which directories are mount points (FUSE_ATTR_SUBMOUNT) [default]") { state, _ in
            state.configuration.fileSystem.announceSubmounts = true
        },
        option(["--inode-file-handles"], .required, "never, prefer (default), mandatory: reopen nodes by file handle beyond --max-node-fds") { state, value throws(ServeError) in
            state.configuration.fileHandles = try choice(value == "fallback" ? "prefer" : value, "--inode-file-handles", ServeConfiguration.FileHandles.allCases)
        },
        option(["--cache"], .required, "Caching: auto (default), always, never") { state, value throws(ServeError) in state.cache = try cacheMode(value, "--cache") },
        option(["--allow-mmap"], .none, "Allow MAP_SHARED with --cache never (daxfs always allows it: FUSE_DIRECT_IO_ALLOW_MMAP)") { _, _ in },
        option(["--no-readdirplus"], .none, "Disable READDIRPLUS") { state, _ in state.configuration.fileSystem.readdirplus = false },
        refused(["--writeback"], .none, "the writeback cache would make the guest kernel, not the host file, the owner of recent writes; daxfs serves writes through to the host"),
        refused(["--allow-direct-io"], .none, "O_DIRECT is dropped on host descriptors because request buffers are guest memory without O_DIRECT's alignment"),
        option(["--print-capabilities"], .none, "Print vhost-user.json backend program capabilities and exit") { state, _ in state.action = .printCapabilities },
        option(["--modcaps"], .required, "Modify the kept capabilities, e.g. --modcaps=+sys_admin:-chown") { state, value in state.configuration.sandbox.modcaps = value },
        option(["--log-level"], .required, "Log level: error, warn, info (default), debug, trace, off") { state, value throws(ServeError) in
            state.logging.level = try logLevel(value, "--log-level")
        },
        option(["--syslog"], .none, "Log to syslog (default: stderr)") { state, _ in state.logging.syslog = true },
        option(["--rlimit-nofile"], .required, "Open-file limit to set (0 leaves it unchanged; default: the hard limit)") { state, value throws(ServeError) in
            state.configuration.openFileLimit = try number(value, "--rlimit-nofile", 0 ... UInt64(1 << 30))
        },
        option(["-o"], .required, "Options in virtiofsd's legacy format, comma-separated (deprecated)") { state, value throws(ServeError) in
            try legacyOptions(value ?? "", into: &state)
        },
        option(["-d"], .none, "Log level debug (deprecated)") { state, _ in state.logging.level = .debug },
        option(["--no-killpriv-v2"], .none, "Disable FUSE_HANDLE_KILLPRIV_V2 [default]") { state, _ in state.configuration.fileSystem.handleKillprivV2 = false },
        option(["--killpriv-v2"], .none, "Enable FUSE_HANDLE_KILLPRIV_V2: the server clears set-id bits on writes and truncations") { state, _ in
            state.configuration.fileSystem.handleKillprivV2 = true
        },
        option(["-f"], .none, "No effect (compatibility)") { _, _ in },
        option(["--security-label"], .optional, "Security labels: only never (the default) is supported") { _, value throws(ServeError) in
            guard value == "never" else {
                throw ServeError("--security-label\(value.map { "=" + $0 } ?? "") is not supported by daxfs-virtiofsd: FUSE_SECURITY_CTX is not implemented; --security-label=never is the default")
            }
        },
        refused(["--uid-map"], .required, "it maps uids through a user namespace, and daxfs-virtiofsd runs in the host's user namespace (as root)"),
        refused(["--gid-map"], .required, "it maps gids through a user namespace, and daxfs-virtiofsd runs in the host's user namespace (as root)"),
        option(["--translate-uid"], .required, "Translate uids: guest|host|squash-guest|squash-host|map:FROM:TO:COUNT or forbid-guest:BASE:COUNT (repeatable)") { state, value throws(ServeError) in
            do { state.configuration.fileSystem.uidTranslation.rules.append(try IDTranslation.parseRule(value ?? "")) } catch {
                throw ServeError("--translate-uid \(error)")
            }
        },
        option(["--translate-gid"], .required, "Translate gids, as --translate-uid (repeatable)") { state, value throws(ServeError) in
            do { state.configuration.fileSystem.gidTranslation.rules.append(try IDTranslation.parseRule(value ?? "")) } catch {
                throw ServeError("--translate-gid \(error)")
            }
        },
        option(["--preserve-noatime"], .none, "Keep O_NOATIME on opens (daxfs runs as root, so it never causes EPERM)") { _, _ in },
        refused(["--migration-mode"], .required, "live migration (VHOST_USER_PROTOCOL_F_DEVICE_STATE) is not implemented"),
        refused(["--migration-on-error"], .required, "live migration (VHOST_USER_PROTOCOL_F_DEVICE_STATE) is not implemented"),
        refused(["--migration-verify-handles"], .none, "live migration (VHOST_USER_PROTOCOL_F_DEVICE_STATE) is not implemented"),
        refused(["--migration-confirm-paths"], .none, "live migration (VHOST_USER_PROTOCOL_F_DEVICE_STATE) is not implemented"),
        option(["-h", "--help"], .none, "Print help") { state, _ in state.action = .help },
        option(["-V", "--version"], .none, "Print version") { state, _ in state.action = .version },
        // daxfs's own.
        option(["--cache-size-mib"], .required, "daxfs: DAX cache window offered in GET_SHMEM_CONFIG, in MiB (QEMU 11.1); 0 = no DAX") { state, value throws(ServeError) in
            state.configuration.backend.cacheSize = try number(value, "--cache-size-mib", 0 ... UInt64(1 << 24)) << 20
        },
        option(["--mmap-window-mib"], .required, "daxfs: FUSE direct mmap window (shared-memory id 1), in MiB") { state, value throws(ServeError) in
            state.configuration.backend.mmapWindowSize = try number(value, "--mmap-window-mib", 0 ... UInt64(1 << 24)) << 20
        },
        option(["--map-alignment"], .required, "daxfs: log2 of the alignment DAX mappings need (default: the page size)") { state, value throws(ServeError) in
            state.configuration.backend.session.mapAlignmentLog2 = try number(value, "--map-alignment", 12 ... 30)
        },
        option(["--poll-us"], .required, "daxfs: microseconds each queue thread spins for requests before it sleeps") { state, value throws(ServeError) in
            state.configuration.backend.pollMicroseconds = try number(value, "--poll-us", 0 ... 1_000_000)
        },
        option(["--request-queues"], .required, "daxfs: request queues announced in the config space with --tag") { state, value throws(ServeError) in
            state.configuration.backend.announcedRequestQueues = try number(value, "--request-queues", 1 ... 16)
        },
        option(["--max-node-fds"], .required, "daxfs: nodes that keep a host descriptor open") { state, value throws(ServeError) in
            state.configuration.maxNodeDescriptors = try number(value, "--max-node-fds", 1 ... Int(Int32.max))
        },
        option(["--ring-file"], .required, "daxfs: a device-like file in the share whose mmap is one region of server memory shared by every client (FUSE direct mmap; repeatable)") { state, value in
            state.configuration.ringFiles.append(value ?? "")
        },
        option(["--private-ring-file"], .required, "daxfs: like --ring-file, a private region per open (repeatable)") { state, value in
            state.configuration.privateRingFiles.append(value ?? "")
        },
        option(["--ring-tick-ms"], .required, "daxfs: milliseconds between the ring files' counter ticks") { state, value throws(ServeError) in
            state.configuration.ringTickMilliseconds = try number(value, "--ring-tick-ms", 1 ... 60_000)
        },
        option(["--keep-listening"], .none, "daxfs: keep listening after a frontend disconnects") { state, _ in state.configuration.keepListening = true },
        option(["--max-frontends"], .required, "daxfs: frontends served at once (implies --keep-listening above 1)") { state, value throws(ServeError) in
            state.configuration.maxFrontends = try number(value, "--max-frontends", 1 ... 64)
        },
    ]

    /// virtiofsd's `-o a,b=c,...` (the legacy C virtiofsd's options, which
    /// libvirt uses when `separate-options` is not listed).
    static func legacyOptions(_ list: String, into state: inout State) throws(ServeError) {
        for item in list.split(separator: ",", omittingEmptySubsequences: true) {
            let parts = item.split(separator: "=", maxSplits: 1)
            let key = String(parts[0]), value = parts.count > 1 ? String(parts[1]) : nil
            func need() throws(ServeError) -> String {
                guard let value, !value.isEmpty else { throw ServeError("-o \(key) needs a value (-o \(key)=...)") }
                return value
            }
            switch key {
            case "source": state.sharedDir = try need()
            case "cache": state.cache = try cacheMode(try need(), "-o cache=")
            case "xattr": state.configuration.fileSystem.xattr = true
            case "no_xattr": state.configuration.fileSystem.xattr = false
            case "flock": state.configuration.fileSystem.flockLocks = true
            case "no_flock": state.configuration.fileSystem.flockLocks = false
            case "posix_lock": state.configuration.fileSystem.posixLocks = true
            case "no_posix_lock": state.configuration.fileSystem.posixLocks = false
            case "readdirplus": state.configuration.fileSystem.readdirplus = true
            case "no_readdirplus": state.configuration.fileSystem.readdirplus = false
            case "announce_submounts": state.configuration.fileSystem.announceSubmounts = true
            case "killpriv_v2": state.configuration.fileSystem.handleKillprivV2 = true
            case "no_killpriv_v2": state.configuration.fileSystem.handleKillprivV2 = false
            case "sandbox": state.configuration.sandbox.mode = try choice(try need(), "-o sandbox=", Sandbox.Mode.allCases)
            case "log_level": state.logging.level = try logLevel(try need(), "-o log_level=")
            case "modcaps": state.configuration.sandbox.modcaps = try need()
            case "debug": state.logging.level = .debug
            case "norace", "no_writeback", "no_allow_direct_io": break  // what daxfs does anyway
            case "timeout":
                throw ServeError("-o timeout= is not supported by daxfs-virtiofsd: cache timeouts follow --cache (auto: 1 s, always: a day, never: none)")
            case "writeback", "allow_direct_io", "xattrmap":
                let option = options.first { $0.names.contains("--" + key.replacingUnderscores()) }
                throw ServeError("-o \(key) is not supported by daxfs-virtiofsd: \(option?.refusal ?? "not implemented")")
            default:
                throw ServeError("unknown -o option \(key)")
            }
        }
    }
}

extension String {
    fileprivate func replacingUnderscores() -> String { String(map { $0 == "_" ? "-" : $0 }) }
}
