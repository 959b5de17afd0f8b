import FUSEABI
import Testing

// Numeric values from include/uapi/linux/fuse.h (7.45).

@Test func protocolVersion() {
    #expect(FUSEProtocol.major == 7)      // FUSE_KERNEL_VERSION
    #expect(FUSEProtocol.minor == 45)     // FUSE_KERNEL_MINOR_VERSION
    #expect(FUSEProtocol.rootID == 1)     // FUSE_ROOT_ID
    #expect(FUSEProtocol.minReadBuffer == 8192)  // FUSE_MIN_READ_BUFFER
}

/// `enum fuse_opcode`, in the header's order.
let kernelOpcodes: [(String, UInt32)] = [
    ("LOOKUP", 1), ("FORGET", 2), ("GETATTR", 3), ("SETATTR", 4), ("READLINK", 5), ("SYMLINK", 6),
    ("MKNOD", 8), ("MKDIR", 9), ("UNLINK", 10), ("RMDIR", 11), ("RENAME", 12), ("LINK", 13),
    ("OPEN", 14), ("READ", 15), ("WRITE", 16), ("STATFS", 17), ("RELEASE", 18), ("FSYNC", 20),
    ("SETXATTR", 21), ("GETXATTR", 22), ("LISTXATTR", 23), ("REMOVEXATTR", 24), ("FLUSH", 25),
    ("INIT", 26), ("OPENDIR", 27), ("READDIR", 28), ("RELEASEDIR", 29), ("FSYNCDIR", 30),
    ("GETLK", 31), ("SETLK", 32), ("SETLKW", 33), ("ACCESS", 34), ("CREATE", 35), ("INTERRUPT", 36),
    ("BMAP", 37), ("DESTROY", 38), ("IOCTL", 39), ("POLL", 40), ("NOTIFY_REPLY", 41),
    ("BATCH_FORGET", 42), ("FALLOCATE", 43), ("READDIRPLUS", 44), ("RENAME2", 45), ("LSEEK", 46),
    ("COPY_FILE_RANGE", 47), ("SETUPMAPPING", 48), ("REMOVEMAPPING", 49), ("SYNCFS", 50),
    ("TMPFILE", 51), ("STATX", 52), ("COPY_FILE_RANGE_64", 53), ("CUSE_INIT", 4096),
]

@Test func opcodeValues() {
    let swift: [(FUSEOpcode, UInt32)] = [
        (.lookup, 1), (.forget, 2), (.getattr, 3), (.setattr, 4), (.readlink, 5), (.symlink, 6),
        (.mknod, 8), (.mkdir, 9), (.unlink, 10), (.rmdir, 11), (.rename, 12), (.link, 13),
        (.open, 14), (.read, 15), (.write, 16), (.statfs, 17), (.release, 18), (.fsync, 20),
        (.setxattr, 21), (.getxattr, 22), (.listxattr, 23), (.removexattr, 24), (.flush, 25),
        (.`init`, 26), (.opendir, 27), (.readdir, 28), (.releasedir, 29), (.fsyncdir, 30),
        (.getlk, 31), (.setlk, 32), (.setlkw, 33), (.access, 34), (.create, 35), (.interrupt, 36),
        (.bmap, 37), (.destroy, 38), (.ioctl, 39), (.poll, 40), (.notifyReply, 41),
        (.batchForget, 42), (.fallocate, 43), (.readdirplus, 44), (.rename2, 45), (.lseek, 46),
        (.copyFileRange, 47), (.setupMapping, 48), (.removeMapping, 49), (.syncfs, 50),
        (.tmpfile, 51), (.statx, 52), (.copyFileRange64, 53), (.cuseInit, 4096),
    ]
    for (opcode, value) in swift { #expect(opcode.rawValue == value, "\(opcode)") }
    // Names follow the kernel's FUSE_<NAME>.
    for (name, value) in kernelOpcodes {
        #expect(FUSEOpcode(rawValue: value).description == name)
    }
    // allKnown is exactly the kernel's list: 1–53 except 7 and 19, plus CUSE_INIT.
    let expected = Set(kernelOpcodes.map(\.1))
    #expect(Set(FUSEOpcode.allKnown.map(\.rawValue)) == expected)
    #expect(FUSEOpcode.allKnown.count == expected.count)
    #expect(!expected.contains(7) && !expected.contains(19))
    #expect(FUSEOpcode(rawValue: 7).description == "opcode 7")
}

@Test func notifyCodes() {
    let codes: [(FUSENotifyCode, Int32)] = [
        (.poll, 1), (.invalInode, 2), (.invalEntry, 3), (.store, 4), (.retrieve, 5),
        (.delete, 6), (.resend, 7), (.incEpoch, 8), (.prune, 9),
    ]
    for (code, value) in codes { #expect(code.rawValue == value) }
}

@Test func initFlagBits() {
    let bits: [(InitFlags, Int, String)] = [
        (.asyncRead, 0, "ASYNC_READ"), (.posixLocks, 1, "POSIX_LOCKS"), (.fileOps, 2, "FILE_OPS"),
        (.atomicOTrunc, 3, "ATOMIC_O_TRUNC"), (.exportSupport, 4, "EXPORT_SUPPORT"), (.bigWrites, 5, "BIG_WRITES"),
        (.dontMask, 6, "DONT_MASK"), (.spliceWrite, 7, "SPLICE_WRITE"), (.spliceMove, 8, "SPLICE_MOVE"),
        (.spliceRead, 9, "SPLICE_READ"), (.flockLocks, 10, "FLOCK_LOCKS"), (.hasIoctlDir, 11, "HAS_IOCTL_DIR"),
        (.autoInvalData, 12, "AUTO_INVAL_DATA"), (.doReaddirplus, 13, "DO_READDIRPLUS"),
        (.readdirplusAuto, 14, "READDIRPLUS_AUTO"), (.asyncDIO, 15, "ASYNC_DIO"),
        (.writebackCache, 16, "WRITEBACK_CACHE"), (.noOpenSupport, 17, "NO_OPEN_SUPPORT"),
        (.parallelDirops, 18, "PARALLEL_DIROPS"), (.handleKillpriv, 19, "HANDLE_KILLPRIV"),
        (.posixACL, 20, "POSIX_ACL"), (.abortError, 21, "ABORT_ERROR"), (.maxPages, 22, "MAX_PAGES"),
        (.cacheSymlinks, 23, "CACHE_SYMLINKS"), (.noOpendirSupport, 24, "NO_OPENDIR_SUPPORT"),
        (.explicitInvalData, 25, "EXPLICIT_INVAL_DATA"), (.mapAlignment, 26, "MAP_ALIGNMENT"),
        (.submounts, 27, "SUBMOUNTS"), (.handleKillprivV2, 28, "HANDLE_KILLPRIV_V2"),
        (.setxattrExt, 29, "SETXATTR_EXT"), (.initExt, 30, "INIT_EXT"), (.initReserved, 31, "INIT_RESERVED"),
        (.securityContext, 32, "SECURITY_CTX"), (.hasInodeDAX, 33, "HAS_INODE_DAX"),
        (.createSuppGroup, 34, "CREATE_SUPP_GROUP"), (.hasExpireOnly, 35, "HAS_EXPIRE_ONLY"),
        (.directIOAllowMmap, 36, "DIRECT_IO_ALLOW_MMAP"), (.passthrough, 37, "PASSTHROUGH"),
        (.noExportSupport, 38, "NO_EXPORT_SUPPORT"), (.hasResend, 39, "HAS_RESEND"),
        (.allowIdmap, 40, "ALLOW_IDMAP"), (.overIOUring, 41, "OVER_IO_URING"),
        (.requestTimeout, 42, "REQUEST_TIMEOUT"),
    ]
    for (flag, bit, name) in bits { #expect(flag.rawValue == 1 << UInt64(bit), "FUSE_\(name)") }
}

@Test func initFlagsSplitIntoFlagsAndFlags2() {
    let flags: InitFlags = [.mapAlignment, .initExt, .hasInodeDAX, .passthrough]
    #expect(flags.low == 1 << 26 | 1 << 30)
    #expect(flags.high == 1 << 1 | 1 << 5)  // bits 33 and 37 of flags2
    #expect(InitFlags(flags: flags.low, flags2: flags.high) == flags)
}

@Test func openReplyFlagBits() {
    let bits: [(OpenReplyFlags, Int, String)] = [
        (.directIO, 0, "DIRECT_IO"), (.keepCache, 1, "KEEP_CACHE"), (.nonSeekable, 2, "NONSEEKABLE"),
        (.cacheDir, 3, "CACHE_DIR"), (.stream, 4, "STREAM"), (.noFlush, 5, "NOFLUSH"),
        (.parallelDirectWrites, 6, "PARALLEL_DIRECT_WRITES"), (.passthrough, 7, "PASSTHROUGH"),
    ]
    for (flag, bit, name) in bits { #expect(flag.rawValue == 1 << UInt32(bit), "FOPEN_\(name)") }
}

@Test func setattrValidBits() {
    let bits: [(SetattrValid, Int, String)] = [
        (.mode, 0, "MODE"), (.uid, 1, "UID"), (.gid, 2, "GID"), (.size, 3, "SIZE"), (.atime, 4, "ATIME"),
        (.mtime, 5, "MTIME"), (.fh, 6, "FH"), (.atimeNow, 7, "ATIME_NOW"), (.mtimeNow, 8, "MTIME_NOW"),
        (.lockOwner, 9, "LOCKOWNER"), (.ctime, 10, "CTIME"), (.killSuidgid, 11, "KILL_SUIDGID"),
    ]
    for (flag, bit, name) in bits { #expect(flag.rawValue == 1 << UInt32(bit), "FATTR_\(name)") }
}

@Test func requestFlagValues() {
    #expect(FUSEFlag.getattrFH == 1)             // FUSE_GETATTR_FH
    #expect(FUSEFlag.openKillSuidgid == 1)       // FUSE_OPEN_KILL_SUIDGID
    #expect(FUSEFlag.releaseFlush == 1)          // FUSE_RELEASE_FLUSH
    #expect(FUSEFlag.releaseFlockUnlock == 2)    // FUSE_RELEASE_FLOCK_UNLOCK
    #expect(FUSEFlag.writeCache == 1)            // FUSE_WRITE_CACHE
    #expect(FUSEFlag.writeLockOwner == 2)        // FUSE_WRITE_LOCKOWNER
    #expect(FUSEFlag.writeKillSuidgid == 4)      // FUSE_WRITE_KILL_SUIDGID
    #expect(FUSEFlag.readLockOwner == 2)         // FUSE_READ_LOCKOWNER
    #expect(FUSEFlag.lkFlock == 1)               // FUSE_LK_FLOCK
    #expect(FUSEFlag.fsyncDatasync == 1)         // FUSE_FSYNC_FDATASYNC
    #expect(FUSEFlag.setxattrACLKillSgid == 1)   // FUSE_SETXATTR_ACL_KILL_SGID
    #expect(FUSEFlag.attrSubmount == 1)          // FUSE_ATTR_SUBMOUNT
    #expect(FUSEFlag.attrDAX == 2)               // FUSE_ATTR_DAX
    #expect(FUSEFlag.expireOnly == 1)            // FUSE_EXPIRE_ONLY
    #expect(FUSEFlag.setupMappingWrite == 1)     // FUSE_SETUPMAPPING_FLAG_WRITE
    #expect(FUSEFlag.setupMappingRead == 2)      // FUSE_SETUPMAPPING_FLAG_READ
    #expect(ExtHeader.typeSuppGroups == 32)      // FUSE_EXT_GROUPS
}
