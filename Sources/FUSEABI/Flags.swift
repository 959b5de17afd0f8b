/// INIT capability flags: `flags` holds bits 0–31, `flags2` bits 32–63 (FUSE_INIT_EXT).
public struct InitFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(flags: UInt32, flags2: UInt32) { rawValue = UInt64(flags) | UInt64(flags2) << 32 }
    public var low: UInt32 { UInt32(truncatingIfNeeded: rawValue) }
    public var high: UInt32 { UInt32(truncatingIfNeeded: rawValue >> 32) }

    public static let asyncRead = InitFlags(rawValue: 1 << 0)
    public static let posixLocks = InitFlags(rawValue: 1 << 1)
    public static let fileOps = InitFlags(rawValue: 1 << 2)
    public static let atomicOTrunc = InitFlags(rawValue: 1 << 3)
    public static let exportSupport = InitFlags(rawValue: 1 << 4)
    public static let bigWrites = InitFlags(rawValue: 1 << 5)
    public static let dontMask = InitFlags(rawValue: 1 << 6)
    public static let spliceWrite = InitFlags(rawValue: 1 << 7)
    public static let spliceMove = InitFlags(rawValue: 1 << 8)
    public static let spliceRead = InitFlags(rawValue: 1 << 9)
    public static let flockLocks = InitFlags(rawValue: 1 << 10)
    public static let hasIoctlDir = InitFlags(rawValue: 1 << 11)
    public static let autoInvalData = InitFlags(rawValue: 1 << 12)
    public static let doReaddirplus = InitFlags(rawValue: 1 << 13)
    public static let readdirplusAuto = InitFlags(rawValue: 1 << 14)
    public static let asyncDIO = InitFlags(rawValue: 1 << 15)
    public static let writebackCache = InitFlags(rawValue: 1 << 16)
    public static let noOpenSupport = InitFlags(rawValue: 1 << 17)
    public static let parallelDirops = InitFlags(rawValue: 1 << 18)
    public static let handleKillpriv = InitFlags(rawValue: 1 << 19)
    public static let posixACL = InitFlags(rawValue: 1 << 20)
    public static let abortError = InitFlags(rawValue: 1 << 21)
    public static let maxPages = InitFlags(rawValue: 1 << 22)
    public static let cacheSymlinks = InitFlags(rawValue: 1 << 23)
    public static let noOpendirSupport = InitFlags(rawValue: 1 << 24)
    public static let explicitInvalData = InitFlags(rawValue: 1 << 25)
    public static let mapAlignment = InitFlags(rawValue: 1 << 26)
    public static let submounts = InitFlags(rawValue: 1 << 27)
    public static let handleKillprivV2 = InitFlags(rawValue: 1 << 28)
    public static let setxattrExt = InitFlags(rawValue: 1 << 29)
    public static let initExt = InitFlags(rawValue: 1 << 30)
    public static let initReserved = InitFlags(rawValue: 1 << 31)
    public static let securityContext = InitFlags(rawValue: 1 << 32)
    public static let hasInodeDAX = InitFlags(rawValue: 1 << 33)
    public static let createSuppGroup = InitFlags(rawValue: 1 << 34)
    public static let hasExpireOnly = InitFlags(rawValue: 1 << 35)
    public static let directIOAllowMmap = InitFlags(rawValue: 1 << 36)
    public static let passthrough = InitFlags(rawValue: 1 << 37)
    public static let noExportSupport = InitFlags(rawValue: 1 << 38)
    public static let hasResend = InitFlags(rawValue: 1 << 39)
    public static let allowIdmap = InitFlags(rawValue: 1 << 40)
    public static let overIOUring = InitFlags(rawValue: 1 << 41)
    public static let requestTimeout = InitFlags(rawValue: 1 << 42)
}

/// `fuse_open_out.open_flags`.
public struct OpenReplyFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let directIO = OpenReplyFlags(rawValue: 1 << 0)
    public static let keepCache = OpenReplyFlags(rawValue: 1 << 1)
    public static let nonSeekable = OpenReplyFlags(rawValue: 1 << 2)
    public static let cacheDir = OpenReplyFlags(rawValue: 1 << 3)
    public static let stream = OpenReplyFlags(rawValue: 1 << 4)
    public static let noFlush = OpenReplyFlags(rawValue: 1 << 5)
    public static let parallelDirectWrites = OpenReplyFlags(rawValue: 1 << 6)
    public static let passthrough = OpenReplyFlags(rawValue: 1 << 7)
}

/// `fuse_setattr_in.valid`.
public struct SetattrValid: OptionSet, Hashable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let mode = SetattrValid(rawValue: 1 << 0)
    public static let uid = SetattrValid(rawValue: 1 << 1)
    public static let gid = SetattrValid(rawValue: 1 << 2)
    public static let size = SetattrValid(rawValue: 1 << 3)
    public static let atime = SetattrValid(rawValue: 1 << 4)
    public static let mtime = SetattrValid(rawValue: 1 << 5)
    public static let fh = SetattrValid(rawValue: 1 << 6)
    public static let atimeNow = SetattrValid(rawValue: 1 << 7)
    public static let mtimeNow = SetattrValid(rawValue: 1 << 8)
    public static let lockOwner = SetattrValid(rawValue: 1 << 9)
    public static let ctime = SetattrValid(rawValue: 1 << 10)
    public static let killSuidgid = SetattrValid(rawValue: 1 << 11)
}

/// Small flag constants of individual requests.
public enum FUSEFlag {
    public static let getattrFH: UInt32 = 1 << 0           // fuse_getattr_in.getattr_flags
    public static let openKillSuidgid: UInt32 = 1 << 0     // fuse_open_in.open_flags
    public static let releaseFlush: UInt32 = 1 << 0        // fuse_release_in.release_flags
    public static let releaseFlockUnlock: UInt32 = 1 << 1
    public static let writeCache: UInt32 = 1 << 0          // fuse_write_in.write_flags
    public static let writeLockOwner: UInt32 = 1 << 1
    public static let writeKillSuidgid: UInt32 = 1 << 2
    public static let readLockOwner: UInt32 = 1 << 1       // fuse_read_in.read_flags
    public static let lkFlock: UInt32 = 1 << 0             // fuse_lk_in.lk_flags
    public static let fsyncDatasync: UInt32 = 1 << 0       // fuse_fsync_in.fsync_flags
    public static let setxattrACLKillSgid: UInt32 = 1 << 0 // fuse_setxattr_in.setxattr_flags
    public static let attrSubmount: UInt32 = 1 << 0        // fuse_attr.flags
    public static let attrDAX: UInt32 = 1 << 1
    public static let expireOnly: UInt32 = 1 << 0          // fuse_notify_inval_entry_out.flags
    public static let setupMappingWrite: UInt64 = 1 << 0   // fuse_setupmapping_in.flags
    public static let setupMappingRead: UInt64 = 1 << 1
}
