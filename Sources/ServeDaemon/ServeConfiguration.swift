import FUSEServer
import HostSystem
import Logging
import PassthroughFS
import VhostUser

/// Everything `ServeDaemon.run` needs: what `daxfs serve` and
/// `daxfs-virtiofsd` parse their command lines into.
public struct ServeConfiguration: Sendable {
    /// Where frontends connect.
    public enum Listen: Sendable, Equatable {
        /// A Unix socket created at this path (a stale socket there is
        /// replaced), owned by `group` when given (virtiofsd's --socket-group).
        case path(String, group: String? = nil)
        /// A socket that is already listening, inherited from the parent
        /// (libvirt's `--fd=N`).
        case descriptor(Int32)
    }

    public var listen: Listen
    /// The host directory shared.
    public var sharedDir: String
    public var fileSystem = PassthroughFS.Options()
    public var backend = FSBackendOptions()
    /// Exit when the frontend disconnects, unless this is set.
    public var keepListening = false
    /// Frontends served at once (above 1 implies `keepListening`).
    public var maxFrontends = 1
    /// Device-like files of FUSE direct mmap (`--ring-file`).
    public var ringFiles: [String] = []
    /// Like `ringFiles`, a private region per open (`--private-ring-file`).
    public var privateRingFiles: [String] = []
    public var ringTickMilliseconds = 100
    /// Hidden: a pipe the ring files report their regions to (tests).
    public var ringPipeFD: Int32?
    /// Nodes that keep a host descriptor; nil: half of this frontend's share.
    public var maxNodeDescriptors: Int?
    /// The open-file limit to set first; nil raises the soft limit to the
    /// hard one, 0 leaves it alone (virtiofsd's --rlimit-nofile).
    public var openFileLimit: UInt64?
    /// Whether node descriptors may be closed and reopened by file handle
    /// (virtiofsd's --inode-file-handles).
    public var fileHandles = FileHandles.prefer
    /// The isolation entered before serving.
    public var sandbox = Sandbox.Options()

    public enum FileHandles: String, Sendable, CaseIterable {
        /// Every node keeps its descriptor (the open-file limit bounds the nodes).
        case never
        /// Beyond the node descriptor limit, close and reopen by handle where
        /// the filesystem supports handles.
        case prefer
        /// As `prefer`, and refuse to start unless the shared directory's
        /// filesystem gives file handles.
        case mandatory
    }

    public init(listen: Listen, sharedDir: String) {
        self.listen = listen
        self.sharedDir = sharedDir
        fileSystem.passthrough = false
        // Extended attributes only when asked for, as in virtiofsd.
        fileSystem.xattr = false
        // Guest pids mean nothing on the host; the guest checks permissions itself.
        fileSystem.callerGroupsFromProc = false
        // A guest cannot be told about host changes (no notification queue): short timeouts.
        fileSystem.watchHost = false
    }
}

/// A failure of the daemon, in words for its user.
public struct ServeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
