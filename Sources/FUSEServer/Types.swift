import FUSEABI
import Synchronization

/// A node id the server gave the kernel in an entry reply (`fuse_in_header.nodeid`).
public struct NodeID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    /// `FUSE_ROOT_ID`: the shared directory itself.
    public static let root = NodeID(FUSEProtocol.rootID)
    public var description: String { "node \(rawValue)" }
}

/// An open-file or open-directory handle the server gave the kernel (`fh`).
public struct FileHandle: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
}

/// Set by the session when the kernel interrupts a request (FUSE_INTERRUPT).
/// Filesystems that block (SETLKW) poll it and answer EINTR.
public final class InterruptFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    public var isSet: Bool { flag.load(ordering: .acquiring) }
    @_spi(Testing) public func set() { flag.store(true, ordering: .releasing) }
}

/// Who sent a request: the credentials from `fuse_in_header`.
public struct RequestContext: Sendable {
    public var unique: UInt64
    public var uid: UInt32
    public var gid: UInt32
    public var pid: UInt32
    /// Present only for requests that may block and can be interrupted.
    public var interrupt: InterruptFlag?
    /// Supplementary groups the kernel sent with a create-type request
    /// (FUSE_CREATE_SUPP_GROUP); usually empty.
    public var supplementaryGroups: [UInt32] = []
    public init(unique: UInt64 = 0, uid: UInt32 = 0, gid: UInt32 = 0, pid: UInt32 = 0, interrupt: InterruptFlag? = nil) {
        self.unique = unique; self.uid = uid; self.gid = gid; self.pid = pid; self.interrupt = interrupt
    }
    public var isInterrupted: Bool { interrupt?.isSet ?? false }
}

/// A single path component from a request: non-empty, no '/', not "." or "..",
/// NUL-terminated in place. It points into the request buffer and is valid
/// only for the duration of the call that receives it — copy it to keep it.
public struct FileName: @unchecked Sendable, CustomStringConvertible {
    /// The name's bytes, without the terminating NUL (which is at `bytes.count`).
    public let bytes: UnsafeRawBufferPointer

    /// Checks the component rules; the caller guarantees a NUL right after `bytes`.
    public init?(validating bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty, !bytes.contains(UInt8(ascii: "/")) else { return nil }
        if bytes.count == 1 && bytes[0] == UInt8(ascii: ".") { return nil }
        if bytes.count == 2 && bytes[0] == UInt8(ascii: ".") && bytes[1] == UInt8(ascii: ".") { return nil }
        self.bytes = bytes
    }

    /// Calls `body` with the NUL-terminated name; no copy.
    public func withCString<R, E: Error>(_ body: (UnsafePointer<CChar>) throws(E) -> R) throws(E) -> R {
        try body(bytes.baseAddress!.assumingMemoryBound(to: CChar.self))
    }

    public var string: String { String(decoding: bytes, as: UTF8.self) }
    public var description: String { string }
}

/// Arbitrary NUL-terminated bytes from a request (a symlink target, an xattr
/// name). Same lifetime rule as `FileName`.
public struct CStringArg: @unchecked Sendable {
    public let bytes: UnsafeRawBufferPointer
    /// The caller guarantees a NUL right after `bytes`.
    public init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
    public func withCString<R, E: Error>(_ body: (UnsafePointer<CChar>) throws(E) -> R) throws(E) -> R {
        try body(bytes.baseAddress!.assumingMemoryBound(to: CChar.self))
    }
    public var string: String { String(decoding: bytes, as: UTF8.self) }
}

/// How long the kernel may cache a reply, in seconds and nanoseconds.
public struct CacheTimeout: Sendable, Equatable {
    public var seconds: UInt64
    public var nanoseconds: UInt32
    public init(seconds: UInt64, nanoseconds: UInt32 = 0) { self.seconds = seconds; self.nanoseconds = nanoseconds }
    public init(_ value: Double) {
        let clamped = max(0, value)
        seconds = UInt64(clamped)
        nanoseconds = UInt32((clamped - Double(UInt64(clamped))) * 1e9)
    }
    public static let zero = CacheTimeout(seconds: 0)
}

/// An entry reply: the node the kernel should attach to a name. A lookup that
/// returns an `Entry` with a nonzero node increments that node's lookup count
/// by one. `node == 0` is a negative entry the kernel caches for `entryTimeout`.
public struct Entry: Sendable, Equatable {
    public var node: NodeID
    public var generation: UInt64
    public var attr: Attr
    public var entryTimeout: CacheTimeout
    public var attrTimeout: CacheTimeout
    public init(node: NodeID, generation: UInt64 = 0, attr: Attr, entryTimeout: CacheTimeout, attrTimeout: CacheTimeout) {
        self.node = node; self.generation = generation; self.attr = attr; self.entryTimeout = entryTimeout; self.attrTimeout = attrTimeout
    }
    public static func negative(timeout: CacheTimeout) -> Entry {
        Entry(node: NodeID(0), attr: Attr(), entryTimeout: timeout, attrTimeout: .zero)
    }
    public var wire: EntryOut {
        var out = EntryOut()
        out.nodeid = node.rawValue; out.generation = generation
        out.entryValid = entryTimeout.seconds; out.entryValidNsec = entryTimeout.nanoseconds
        out.attrValid = attrTimeout.seconds; out.attrValidNsec = attrTimeout.nanoseconds
        out.attr = attr
        return out
    }
}

/// An attribute reply.
public struct AttrReply: Sendable, Equatable {
    public var attr: Attr
    public var timeout: CacheTimeout
    public init(attr: Attr, timeout: CacheTimeout) { self.attr = attr; self.timeout = timeout }
}

/// An open or create reply.
public struct Opened: Sendable, Equatable {
    public var handle: FileHandle
    public var flags: OpenReplyFlags
    /// A backing id from `BackingRegistry.open` when `flags` has `.passthrough`.
    public var backingID: Int32
    public init(handle: FileHandle, flags: OpenReplyFlags = [], backingID: Int32 = 0) { self.handle = handle; self.flags = flags; self.backingID = backingID }
}

/// A time to set in SETATTR.
public enum TimeUpdate: Sendable, Equatable {
    case now
    case set(seconds: Int64, nanoseconds: UInt32)
}

/// What SETATTR asks to change; nil fields stay as they are.
public struct SetattrRequest: Sendable, Equatable {
    public var handle: FileHandle?
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var size: UInt64?
    public var atime: TimeUpdate?
    public var mtime: TimeUpdate?
    public var ctime: TimeUpdate?
    public var lockOwner: UInt64?
    /// FATTR_KILL_SUIDGID: clear set-user-ID/set-group-ID as part of this change.
    public var killSuidgid: Bool
    public init(handle: FileHandle? = nil, mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil, size: UInt64? = nil,
                atime: TimeUpdate? = nil, mtime: TimeUpdate? = nil, ctime: TimeUpdate? = nil, lockOwner: UInt64? = nil, killSuidgid: Bool = false) {
        self.handle = handle; self.mode = mode; self.uid = uid; self.gid = gid; self.size = size
        self.atime = atime; self.mtime = mtime; self.ctime = ctime; self.lockOwner = lockOwner; self.killSuidgid = killSuidgid
    }
}

/// `struct statvfs` fields the kernel wants.
public typealias StatfsReply = KStatfs

/// A byte range lock as FUSE describes it (`end` inclusive, `UInt64.max` = to EOF).
public typealias LockRange = FileLock

/// What a node is, for directory entries (`DT_*` values).
public enum DirentType: UInt32, Sendable {
    case unknown = 0, fifo = 1, char = 2, directory = 4, block = 6, regular = 8, symlink = 10, socket = 12
    public init(mode: UInt32) {
        switch mode & 0o170000 {
        case 0o010000: self = .fifo
        case 0o020000: self = .char
        case 0o040000: self = .directory
        case 0o060000: self = .block
        case 0o100000: self = .regular
        case 0o120000: self = .symlink
        case 0o140000: self = .socket
        default: self = .unknown
        }
    }
}
