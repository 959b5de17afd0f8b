/// FUSE protocol version daxfs speaks.
public enum FUSEProtocol {
    public static let major: UInt32 = 7
    public static let minor: UInt32 = 45
    /// The oldest kernel minor daxfs negotiates with (Linux 5.4-era virtio-fs).
    public static let oldestMinor: UInt32 = 31
    /// Root directory's node id (`FUSE_ROOT_ID`).
    public static let rootID: UInt64 = 1
    /// Kernel's upper bound on `max_pages` (`FUSE_MAX_MAX_PAGES`).
    public static let maxMaxPages: UInt16 = 256
    /// The kernel refuses a read buffer smaller than this (`FUSE_MIN_READ_BUFFER`).
    public static let minReadBuffer = 8192
}

/// A request opcode. Unknown values stay representable so they can be answered with ENOSYS.
public struct FUSEOpcode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let lookup = FUSEOpcode(rawValue: 1)
    public static let forget = FUSEOpcode(rawValue: 2)  // no reply
    public static let getattr = FUSEOpcode(rawValue: 3)
    public static let setattr = FUSEOpcode(rawValue: 4)
    public static let readlink = FUSEOpcode(rawValue: 5)
    public static let symlink = FUSEOpcode(rawValue: 6)
    public static let mknod = FUSEOpcode(rawValue: 8)
    public static let mkdir = FUSEOpcode(rawValue: 9)
    public static let unlink = FUSEOpcode(rawValue: 10)
    public static let rmdir = FUSEOpcode(rawValue: 11)
    public static let rename = FUSEOpcode(rawValue: 12)
    public static let link = FUSEOpcode(rawValue: 13)
    public static let open = FUSEOpcode(rawValue: 14)
    public static let read = FUSEOpcode(rawValue: 15)
    public static let write = FUSEOpcode(rawValue: 16)
    public static let statfs = FUSEOpcode(rawValue: 17)
    public static let release = FUSEOpcode(rawValue: 18)
    public static let fsync = FUSEOpcode(rawValue: 20)
    public static let setxattr = FUSEOpcode(rawValue: 21)
    public static let getxattr = FUSEOpcode(rawValue: 22)
    public static let listxattr = FUSEOpcode(rawValue: 23)
    public static let removexattr = FUSEOpcode(rawValue: 24)
    public static let flush = FUSEOpcode(rawValue: 25)
    public static let `init` = FUSEOpcode(rawValue: 26)
    public static let opendir = FUSEOpcode(rawValue: 27)
    public static let readdir = FUSEOpcode(rawValue: 28)
    public static let releasedir = FUSEOpcode(rawValue: 29)
    public static let fsyncdir = FUSEOpcode(rawValue: 30)
    public static let getlk = FUSEOpcode(rawValue: 31)
    public static let setlk = FUSEOpcode(rawValue: 32)
    public static let setlkw = FUSEOpcode(rawValue: 33)
    public static let access = FUSEOpcode(rawValue: 34)
    public static let create = FUSEOpcode(rawValue: 35)
    public static let interrupt = FUSEOpcode(rawValue: 36)  // no reply
    public static let bmap = FUSEOpcode(rawValue: 37)
    public static let destroy = FUSEOpcode(rawValue: 38)
    public static let ioctl = FUSEOpcode(rawValue: 39)
    public static let poll = FUSEOpcode(rawValue: 40)
    public static let notifyReply = FUSEOpcode(rawValue: 41)  // no reply
    public static let batchForget = FUSEOpcode(rawValue: 42)  // no reply
    public static let fallocate = FUSEOpcode(rawValue: 43)
    public static let readdirplus = FUSEOpcode(rawValue: 44)
    public static let rename2 = FUSEOpcode(rawValue: 45)
    public static let lseek = FUSEOpcode(rawValue: 46)
    public static let copyFileRange = FUSEOpcode(rawValue: 47)
    public static let setupMapping = FUSEOpcode(rawValue: 48)
    public static let removeMapping = FUSEOpcode(rawValue: 49)
    public static let syncfs = FUSEOpcode(rawValue: 50)
    public static let tmpfile = FUSEOpcode(rawValue: 51)
    public static let statx = FUSEOpcode(rawValue: 52)
    public static let copyFileRange64 = FUSEOpcode(rawValue: 53)
    public static let cuseInit = FUSEOpcode(rawValue: 4096)

    /// Every opcode a Linux 6.18 kernel can send.
    public static let allKnown: [FUSEOpcode] = [
        .lookup, .forget, .getattr, .setattr, .readlink, .symlink, .mknod, .mkdir, .unlink, .rmdir,
        .rename, .link, .open, .read, .write, .statfs, .release, .fsync, .setxattr, .getxattr,
        .listxattr, .removexattr, .flush, .`init`, .opendir, .readdir, .releasedir, .fsyncdir,
        .getlk, .setlk, .setlkw, .access, .create, .interrupt, .bmap, .destroy, .ioctl, .poll,
        .notifyReply, .batchForget, .fallocate, .readdirplus, .rename2, .lseek, .copyFileRange,
        .setupMapping, .removeMapping, .syncfs, .tmpfile, .statx, .copyFileRange64, .cuseInit,
    ]

    public var description: String {
        switch self {
        case .lookup: "LOOKUP"; case .forget: "FORGET"; case .getattr: "GETATTR"; case .setattr: "SETATTR"
        case .readlink: "READLINK"; case .symlink: "SYMLINK"; case .mknod: "MKNOD"; case .mkdir: "MKDIR"
        case .unlink: "UNLINK"; case .rmdir: "RMDIR"; case .rename: "RENAME"; case .link: "LINK"
        case .open: "OPEN"; case .read: "READ"; case .write: "WRITE"; case .statfs: "STATFS"
        case .release: "RELEASE"; case .fsync: "FSYNC"; case .setxattr: "SETXATTR"; case .getxattr: "GETXATTR"
        case .listxattr: "LISTXATTR"; case .removexattr: "REMOVEXATTR"; case .flush: "FLUSH"; case .`init`: "INIT"
        case .opendir: "OPENDIR"; case .readdir: "READDIR"; case .releasedir: "RELEASEDIR"; case .fsyncdir: "FSYNCDIR"
        case .getlk: "GETLK"; case .setlk: "SETLK"; case .setlkw: "SETLKW"; case .access: "ACCESS"
        case .create: "CREATE"; case .interrupt: "INTERRUPT"; case .bmap: "BMAP"; case .destroy: "DESTROY"
        case .ioctl: "IOCTL"; case .poll: "POLL"; case .notifyReply: "NOTIFY_REPLY"; case .batchForget: "BATCH_FORGET"
        case .fallocate: "FALLOCATE"; case .readdirplus: "READDIRPLUS"; case .rename2: "RENAME2"; case .lseek: "LSEEK"
        case .copyFileRange: "COPY_FILE_RANGE"; case .setupMapping: "SETUPMAPPING"; case .removeMapping: "REMOVEMAPPING"
        case .syncfs: "SYNCFS"; case .tmpfile: "TMPFILE"; case .statx: "STATX"; case .copyFileRange64: "COPY_FILE_RANGE_64"
        case .cuseInit: "CUSE_INIT"
        case .daxfsMmap: "DAXFS_MMAP"; case .daxfsMunmap: "DAXFS_MUNMAP"
        default: "opcode \(rawValue)"
        }
    }
}

/// Kernel-to-server notification codes (`fuse_notify_code`), sent with unique 0.
public struct FUSENotifyCode: RawRepresentable, Hashable, Sendable {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    public static let poll = FUSENotifyCode(rawValue: 1)
    public static let invalInode = FUSENotifyCode(rawValue: 2)
    public static let invalEntry = FUSENotifyCode(rawValue: 3)
    public static let store = FUSENotifyCode(rawValue: 4)
    public static let retrieve = FUSENotifyCode(rawValue: 5)
    public static let delete = FUSENotifyCode(rawValue: 6)
    public static let resend = FUSENotifyCode(rawValue: 7)
    public static let incEpoch = FUSENotifyCode(rawValue: 8)
    public static let prune = FUSENotifyCode(rawValue: 9)
}
