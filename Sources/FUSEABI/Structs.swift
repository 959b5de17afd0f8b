// FUSE 7.45 wire structs (include/uapi/linux/fuse.h). Field order and sizes are
// the kernel's; FUSEABITests pins every size and offset.

/// `struct fuse_in_header`, 40 bytes.
public struct InHeader: WireStruct, Equatable {
    public static let wireSize = 40
    public var len: UInt32, opcode: UInt32, unique: UInt64, nodeid: UInt64
    public var uid: UInt32, gid: UInt32, pid: UInt32
    /// Length of the extensions after the arguments, in units of 8 bytes (7.38+).
    public var totalExtlen: UInt16, padding: UInt16
    public init(len: UInt32 = 0, opcode: UInt32 = 0, unique: UInt64 = 0, nodeid: UInt64 = 0, uid: UInt32 = 0, gid: UInt32 = 0, pid: UInt32 = 0, totalExtlen: UInt16 = 0, padding: UInt16 = 0) {
        self.len = len; self.opcode = opcode; self.unique = unique; self.nodeid = nodeid
        self.uid = uid; self.gid = gid; self.pid = pid; self.totalExtlen = totalExtlen; self.padding = padding
    }
    public init(from r: inout WireReader) throws(WireError) {
        len = try r.u32(); opcode = try r.u32(); unique = try r.u64(); nodeid = try r.u64()
        uid = try r.u32(); gid = try r.u32(); pid = try r.u32(); totalExtlen = try r.u16(); padding = try r.u16()
    }
    public func encode(to w: inout WireWriter) {
        w.u32(len); w.u32(opcode); w.u64(unique); w.u64(nodeid); w.u32(uid); w.u32(gid); w.u32(pid); w.u16(totalExtlen); w.u16(padding)
    }
}

/// `struct fuse_out_header`, 16 bytes.
public struct OutHeader: WireStruct, Equatable {
    public static let wireSize = 16
    public var len: UInt32, error: Int32, unique: UInt64
    public init(len: UInt32, error: Int32, unique: UInt64) { self.len = len; self.error = error; self.unique = unique }
    public init(from r: inout WireReader) throws(WireError) { len = try r.u32(); error = try r.i32(); unique = try r.u64() }
    public func encode(to w: inout WireWriter) { w.u32(len); w.i32(error); w.u64(unique) }
}

/// `struct fuse_attr`, 88 bytes.
public struct Attr: WireStruct, Equatable {
    public static let wireSize = 88
    public var ino: UInt64 = 0, size: UInt64 = 0, blocks: UInt64 = 0
    public var atime: UInt64 = 0, mtime: UInt64 = 0, ctime: UInt64 = 0
    public var atimensec: UInt32 = 0, mtimensec: UInt32 = 0, ctimensec: UInt32 = 0
    public var mode: UInt32 = 0, nlink: UInt32 = 0, uid: UInt32 = 0, gid: UInt32 = 0
    public var rdev: UInt32 = 0, blksize: UInt32 = 0, flags: UInt32 = 0
    public init() {}
    public init(from r: inout WireReader) throws(WireError) {
        ino = try r.u64(); size = try r.u64(); blocks = try r.u64()
        atime = try r.u64(); mtime = try r.u64(); ctime = try r.u64()
        atimensec = try r.u32(); mtimensec = try r.u32(); ctimensec = try r.u32()
        mode = try r.u32(); nlink = try r.u32(); uid = try r.u32(); gid = try r.u32()
        rdev = try r.u32(); blksize = try r.u32(); flags = try r.u32()
    }
    public func encode(to w: inout WireWriter) {
        w.u64(ino); w.u64(size); w.u64(blocks); w.u64(atime); w.u64(mtime); w.u64(ctime)
        w.u32(atimensec); w.u32(mtimensec); w.u32(ctimensec)
        w.u32(mode); w.u32(nlink); w.u32(uid); w.u32(gid); w.u32(rdev); w.u32(blksize); w.u32(flags)
    }
}

/// `struct fuse_sx_time`, 16 bytes.
public struct StatxTime: WireStruct, Equatable {
    public static let wireSize = 16
    public var sec: Int64 = 0, nsec: UInt32 = 0, reserved: Int32 = 0
    public init(sec: Int64 = 0, nsec: UInt32 = 0) { self.sec = sec; self.nsec = nsec }
    public init(from r: inout WireReader) throws(WireError) { sec = try r.i64(); nsec = try r.u32(); reserved = try r.i32() }
    public func encode(to w: inout WireWriter) { w.i64(sec); w.u32(nsec); w.i32(reserved) }
}

/// `struct fuse_statx`, 256 bytes.
public struct Statx: WireStruct, Equatable {
    public static let wireSize = 256
    public var mask: UInt32 = 0, blksize: UInt32 = 0, attributes: UInt64 = 0
    public var nlink: UInt32 = 0, uid: UInt32 = 0, gid: UInt32 = 0, mode: UInt16 = 0, spare0: UInt16 = 0
    public var ino: UInt64 = 0, size: UInt64 = 0, blocks: UInt64 = 0, attributesMask: UInt64 = 0
    public var atime = StatxTime(), btime = StatxTime(), ctime = StatxTime(), mtime = StatxTime()
    public var rdevMajor: UInt32 = 0, rdevMinor: UInt32 = 0, devMajor: UInt32 = 0, devMinor: UInt32 = 0
    public init() {}
    public init(from r: inout WireReader) throws(WireError) {
        mask = try r.u32(); blksize = try r.u32(); attributes = try r.u64()
        nlink = try r.u32(); uid = try r.u32(); gid = try r.u32(); mode = try r.u16(); spare0 = try r.u16()
        ino = try r.u64(); size = try r.u64(); blocks = try r.u64(); attributesMask = try r.u64()
        atime = try r.read(StatxTime.self); btime = try r.read(StatxTime.self)
        ctime = try r.read(StatxTime.self); mtime = try r.read(StatxTime.self)
        rdevMajor = try r.u32(); rdevMinor = try r.u32(); devMajor = try r.u32(); devMinor = try r.u32()
        try r.skip(14 * 8)
    }
    public func encode(to w: inout WireWriter) {
        w.u32(mask); w.u32(blksize); w.u64(attributes); w.u32(nlink); w.u32(uid); w.u32(gid); w.u16(mode); w.u16(spare0)
        w.u64(ino); w.u64(size); w.u64(blocks); w.u64(attributesMask)
        w.write(atime); w.write(btime); w.write(ctime); w.write(mtime)
        w.u32(rdevMajor); w.u32(rdevMinor); w.u32(devMajor); w.u32(devMinor); w.zeros(14 * 8)
    }
}

/// `struct fuse_kstatfs`, 80 bytes.
public struct KStatfs: WireStruct, Equatable {
    public static let wireSize = 80
    public var blocks: UInt64 = 0, bfree: UInt64 = 0, bavail: UInt64 = 0, files: UInt64 = 0, ffree: UInt64 = 0
    public var bsize: UInt32 = 0, namelen: UInt32 = 0, frsize: UInt32 = 0
    public init() {}
    public init(from r: inout WireReader) throws(WireError) {
        blocks = try r.u64(); bfree = try r.u64(); bavail = try r.u64(); files = try r.u64(); ffree = try r.u64()
        bsize = try r.u32(); namelen = try r.u32(); frsize = try r.u32(); try r.skip(4 + 6 * 4)
    }
    public func encode(to w: inout WireWriter) {
        w.u64(blocks); w.u64(bfree); w.u64(bavail); w.u64(files); w.u64(ffree)
        w.u32(bsize); w.u32(namelen); w.u32(frsize); w.zeros(4 + 6 * 4)
    }
}

/// `struct fuse_file_lock`, 24 bytes.
public struct FileLock: WireStruct, Equatable {
    public static let wireSize = 24
    public var start: UInt64 = 0, end: UInt64 = 0, type: UInt32 = 0, pid: UInt32 = 0
    public init(start: UInt64 = 0, end: UInt64 = 0, type: UInt32 = 0, pid: UInt32 = 0) { self.start = start; self.end = end; self.type = type; self.pid = pid }
    public init(from r: inout WireReader) throws(WireError) { start = try r.u64(); end = try r.u64(); type = try r.u32(); pid = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u64(start); w.u64(end); w.u32(type); w.u32(pid) }
}

/// `struct fuse_entry_out`, 128 bytes.
public struct EntryOut: WireStruct, Equatable {
    public static let wireSize = 128
    public var nodeid: UInt64 = 0, generation: UInt64 = 0, entryValid: UInt64 = 0, attrValid: UInt64 = 0
    public var entryValidNsec: UInt32 = 0, attrValidNsec: UInt32 = 0
    public var attr = Attr()
    public init() {}
    public init(from r: inout WireReader) throws(WireError) {
        nodeid = try r.u64(); generation = try r.u64(); entryValid = try r.u64(); attrValid = try r.u64()
        entryValidNsec = try r.u32(); attrValidNsec = try r.u32(); attr = try r.read(Attr.self)
    }
    public func encode(to w: inout WireWriter) {
        w.u64(nodeid); w.u64(generation); w.u64(entryValid); w.u64(attrValid)
        w.u32(entryValidNsec); w.u32(attrValidNsec); w.write(attr)
    }
}

/// `struct fuse_attr_out`, 104 bytes.
public struct AttrOut: WireStruct, Equatable {
    public static let wireSize = 104
    public var attrValid: UInt64 = 0, attrValidNsec: UInt32 = 0, dummy: UInt32 = 0
    public var attr = Attr()
    public init() {}
    public init(from r: inout WireReader) throws(WireError) { attrValid = try r.u64(); attrValidNsec = try r.u32(); dummy = try r.u32(); attr = try r.read(Attr.self) }
    public func encode(to w: inout WireWriter) { w.u64(attrValid); w.u32(attrValidNsec); w.u32(dummy); w.write(attr) }
}

/// `struct fuse_statx_out`, 288 bytes.
public struct StatxOut: WireStruct, Equatable {
    public static let wireSize = 288
    public var attrValid: UInt64 = 0, attrValidNsec: UInt32 = 0, flags: UInt32 = 0
    public var stat = Statx()
    public init() {}
    public init(from r: inout WireReader) throws(WireError) { attrValid = try r.u64(); attrValidNsec = try r.u32(); flags = try r.u32(); try r.skip(16); stat = try r.read(Statx.self) }
    public func encode(to w: inout WireWriter) { w.u64(attrValid); w.u32(attrValidNsec); w.u32(flags); w.zeros(16); w.write(stat) }
}

/// A struct of a single little-endian u64 (forget_in, rename_in, link_in, interrupt_in, lseek_out, bmap_out, syncfs_in, ...).
public struct U64Arg: WireStruct, Equatable {
    public static let wireSize = 8
    public var value: UInt64
    public init(_ value: UInt64) { self.value = value }
    public init(from r: inout WireReader) throws(WireError) { value = try r.u64() }
    public func encode(to w: inout WireWriter) { w.u64(value) }
}

/// A u32 followed by 4 bytes of padding (write_out, getxattr_in/out, access_in, mkdir_in's halves, poll_out).
public struct U32PaddedArg: WireStruct, Equatable {
    public static let wireSize = 8
    public var value: UInt32, second: UInt32
    public init(_ value: UInt32, _ second: UInt32 = 0) { self.value = value; self.second = second }
    public init(from r: inout WireReader) throws(WireError) { value = try r.u32(); second = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u32(value); w.u32(second) }
}

/// `struct fuse_forget_one`, 16 bytes.
public struct ForgetOne: WireStruct, Equatable {
    public static let wireSize = 16
    public var nodeid: UInt64, nlookup: UInt64
    public init(nodeid: UInt64, nlookup: UInt64) { self.nodeid = nodeid; self.nlookup = nlookup }
    public init(from r: inout WireReader) throws(WireError) { nodeid = try r.u64(); nlookup = try r.u64() }
    public func encode(to w: inout WireWriter) { w.u64(nodeid); w.u64(nlookup) }
}

/// `struct fuse_getattr_in`, 16 bytes.
public struct GetattrIn: WireStruct, Equatable {
    public static let wireSize = 16
    public var getattrFlags: UInt32, dummy: UInt32, fh: UInt64
    public init(getattrFlags: UInt32 = 0, fh: UInt64 = 0) { self.getattrFlags = getattrFlags; dummy = 0; self.fh = fh }
    public init(from r: inout WireReader) throws(WireError) { getattrFlags = try r.u32(); dummy = try r.u32(); fh = try r.u64() }
    public func encode(to w: inout WireWriter) { w.u32(getattrFlags); w.u32(dummy); w.u64(fh) }
}

/// `struct fuse_statx_in`, 24 bytes.
public struct StatxIn: WireStruct, Equatable {
    public static let wireSize = 24
    public var getattrFlags: UInt32 = 0, reserved: UInt32 = 0, fh: UInt64 = 0, sxFlags: UInt32 = 0, sxMask: UInt32 = 0
    public init() {}
    public init(from r: inout WireReader) throws(WireError) { getattrFlags = try r.u32(); reserved = try r.u32(); fh = try r.u64(); sxFlags = try r.u32(); sxMask = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u32(getattrFlags); w.u32(reserved); w.u64(fh); w.u32(sxFlags); w.u32(sxMask) }
}

/// `struct fuse_mknod_in`, 16 bytes.
public struct MknodIn: WireStruct, Equatable {
    public static let wireSize = 16
    public var mode: UInt32, rdev: UInt32, umask: UInt32, padding: UInt32
    public init(mode: UInt32, rdev: UInt32, umask: UInt32) { self.mode = mode; self.rdev = rdev; self.umask = umask; padding = 0 }
    public init(from r: inout WireReader) throws(WireError) { mode = try r.u32(); rdev = try r.u32(); umask = try r.u32(); padding = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u32(mode); w.u32(rdev); w.u32(umask); w.u32(padding) }
}

/// `struct fuse_mkdir_in`, 8 bytes.
public struct MkdirIn: WireStruct, Equatable {
    public static let wireSize = 8
    public var mode: UInt32, umask: UInt32
    public init(mode: UInt32, umask: UInt32) { self.mode = mode; self.umask = umask }
    public init(from r: inout WireReader) throws(WireError) { mode = try r.u32(); umask = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u32(mode); w.u32(umask) }
}

/// `struct fuse_rename2_in`, 16 bytes.
public struct Rename2In: WireStruct, Equatable {
    public static let wireSize = 16
    public var newdir: UInt64, flags: UInt32, padding: UInt32
    public init(newdir: UInt64, flags: UInt32) { self.newdir = newdir; self.flags = flags; padding = 0 }
    public init(from r: inout WireReader) throws(WireError) { newdir = try r.u64(); flags = try r.u32(); padding = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u64(newdir); w.u32(flags); w.u32(padding) }
}

/// `struct fuse_setattr_in`, 88 bytes.
public struct SetattrIn: WireStruct, Equatable {
    public static let wireSize = 88
    public var valid: UInt32 = 0, padding: UInt32 = 0, fh: UInt64 = 0, size: UInt64 = 0, lockOwner: UInt64 = 0
    public var atime: UInt64 = 0, mtime: UInt64 = 0, ctime: UInt64 = 0
    public var atimensec: UInt32 = 0, mtimensec: UInt32 = 0, ctimensec: UInt32 = 0
    public var mode: UInt32 = 0, unused4: UInt32 = 0, uid: UInt32 = 0, gid: UInt32 = 0, unused5: UInt32 = 0
    public init() {}
    public init(from r: inout WireReader) throws(WireError) {
        valid = try r.u32(); padding = try r.u32(); fh = try r.u64(); size = try r.u64(); lockOwner = try r.u64()
        atime = try r.u64(); mtime = try r.u64(); ctime = try r.u64()
        atimensec = try r.u32(); mtimensec = try r.u32(); ctimensec = try r.u32()
        mode = try r.u32(); unused4 = try r.u32(); uid = try r.u32(); gid = try r.u32(); unused5 = try r.u32()
    }
    public func encode(to w: inout WireWriter) {
        w.u32(valid); w.u32(padding); w.u64(fh); w.u64(size); w.u64(lockOwner)
        w.u64(atime); w.u64(mtime); w.u64(ctime); w.u32(atimensec); w.u32(mtimensec); w.u32(ctimensec)
        w.u32(mode); w.u32(unused4); w.u32(uid); w.u32(gid); w.u32(unused5)
    }
}

/// `struct fuse_open_in`, 8 bytes.
public struct OpenIn: WireStruct, Equatable {
    public static let wireSize = 8
    public var flags: UInt32, openFlags: UInt32
    public init(flags: UInt32, openFlags: UInt32 = 0) { self.flags = flags; self.openFlags = openFlags }
    public init(from r: inout WireReader) throws(WireError) { flags = try r.u32(); openFlags = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u32(flags); w.u32(openFlags) }
}

/// `struct fuse_create_in`, 16 bytes.
public struct CreateIn: WireStruct, Equatable {
    public static let wireSize = 16
    public var flags: UInt32, mode: UInt32, umask: UInt32, openFlags: UInt32
    public init(flags: UInt32, mode: UInt32, umask: UInt32, openFlags: UInt32 = 0) { self.flags = flags; self.mode = mode; self.umask = umask; self.openFlags = openFlags }
    public init(from r: inout WireReader) throws(WireError) { flags = try r.u32(); mode = try r.u32(); umask = try r.u32(); openFlags = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u32(flags); w.u32(mode); w.u32(umask); w.u32(openFlags) }
}

/// `struct fuse_open_out`, 16 bytes.
public struct OpenOut: WireStruct, Equatable {
    public static let wireSize = 16
    public var fh: UInt64, openFlags: UInt32, backingID: Int32
    public init(fh: UInt64 = 0, openFlags: UInt32 = 0, backingID: Int32 = 0) { self.fh = fh; self.openFlags = openFlags; self.backingID = backingID }
    public init(from r: inout WireReader) throws(WireError) { fh = try r.u64(); openFlags = try r.u32(); backingID = try r.i32() }
    public func encode(to w: inout WireWriter) { w.u64(fh); w.u32(openFlags); w.i32(backingID) }
}

/// `struct fuse_release_in`, 24 bytes.
public struct ReleaseIn: WireStruct, Equatable {
    public static let wireSize = 24
    public var fh: UInt64, flags: UInt32, releaseFlags: UInt32, lockOwner: UInt64
    public init(fh: UInt64, flags: UInt32 = 0, releaseFlags: UInt32 = 0, lockOwner: UInt64 = 0) { self.fh = fh; self.flags = flags; self.releaseFlags = releaseFlags; self.lockOwner = lockOwner }
    public init(from r: inout WireReader) throws(WireError) { fh = try r.u64(); flags = try r.u32(); releaseFlags = try r.u32(); lockOwner = try r.u64() }
    public func encode(to w: inout WireWriter) { w.u64(fh); w.u32(flags); w.u32(releaseFlags); w.u64(lockOwner) }
}

/// `struct fuse_flush_in`, 24 bytes.
public struct FlushIn: WireStruct, Equatable {
    public static let wireSize = 24
    public var fh: UInt64, unused: UInt32, padding: UInt32, lockOwner: UInt64
    public init(fh: UInt64, lockOwner: UInt64) { self.fh = fh; unused = 0; padding = 0; self.lockOwner = lockOwner }
    public init(from r: inout WireReader) throws(WireError) { fh = try r.u64(); unused = try r.u32(); padding = try r.u32(); lockOwner = try r.u64() }
    public func encode(to w: inout WireWriter) { w.u64(fh); w.u32(unused); w.u32(padding); w.u64(lockOwner) }
}

/// `struct fuse_read_in` and `struct fuse_write_in` share one layout, 40 bytes.
public struct ReadWriteIn: WireStruct, Equatable {
    public static let wireSize = 40
    public var fh: UInt64, offset: UInt64, size: UInt32, ioFlags: UInt32, lockOwner: UInt64, flags: UInt32, padding: UInt32
    public init(fh: UInt64, offset: UInt64, size: UInt32, ioFlags: UInt32 = 0, lockOwner: UInt64 = 0, flags: UInt32 = 0) {
        self.fh = fh; self.offset = offset; self.size = size; self.ioFlags = ioFlags; self.lockOwner = lockOwner; self.flags = flags; padding = 0
    }
    public init(from r: inout WireReader) throws(WireError) {
        fh = try r.u64(); offset = try r.u64(); size = try r.u32(); ioFlags = try r.u32(); lockOwner = try r.u64(); flags = try r.u32(); padding = try r.u32()
    }
    public func encode(to w: inout WireWriter) { w.u64(fh); w.u64(offset); w.u32(size); w.u32(ioFlags); w.u64(lockOwner); w.u32(flags); w.u32(padding) }
}

/// `struct fuse_fsync_in`, 16 bytes.
public struct FsyncIn: WireStruct, Equatable {
    public static let wireSize = 16
    public var fh: UInt64, fsyncFlags: UInt32, padding: UInt32
    public init(fh: UInt64, fsyncFlags: UInt32) { self.fh = fh; self.fsyncFlags = fsyncFlags; padding = 0 }
    public init(from r: inout WireReader) throws(WireError) { fh = try r.u64(); fsyncFlags = try r.u32(); padding = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u64(fh); w.u32(fsyncFlags); w.u32(padding) }
}

/// `struct fuse_setxattr_in`, 16 bytes (8 bytes, `FUSE_COMPAT_SETXATTR_IN_SIZE`, without FUSE_SETXATTR_EXT).
public struct SetxattrIn: WireStruct, Equatable {
    public static let wireSize = 16
    public static let compatSize = 8
    public var size: UInt32, flags: UInt32, setxattrFlags: UInt32, padding: UInt32
    public init(size: UInt32, flags: UInt32, setxattrFlags: UInt32 = 0) { self.size = size; self.flags = flags; self.setxattrFlags = setxattrFlags; padding = 0 }
    public init(from r: inout WireReader) throws(WireError) { size = try r.u32(); flags = try r.u32(); setxattrFlags = try r.u32(); padding = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u32(size); w.u32(flags); w.u32(setxattrFlags); w.u32(padding) }
}

/// `struct fuse_lk_in`, 48 bytes.
public struct LkIn: WireStruct, Equatable {
    public static let wireSize = 48
    public var fh: UInt64, owner: UInt64, lock: FileLock, lkFlags: UInt32, padding: UInt32
    public init(fh: UInt64, owner: UInt64, lock: FileLock, lkFlags: UInt32 = 0) { self.fh = fh; self.owner = owner; self.lock = lock; self.lkFlags = lkFlags; padding = 0 }
    public init(from r: inout WireReader) throws(WireError) { fh = try r.u64(); owner = try r.u64(); lock = try r.read(FileLock.self); lkFlags = try r.u32(); padding = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u64(fh); w.u64(owner); w.write(lock); w.u32(lkFlags); w.u32(padding) }
}

/// `struct fuse_init_in`: 16 bytes before 7.36, 64 bytes with `flags2` after.
public struct InitIn: WireStruct, Equatable {
    public static let wireSize = 64
    public static let compatSize = 16
    public var major: UInt32, minor: UInt32, maxReadahead: UInt32, flags: UInt32, flags2: UInt32
    public init(major: UInt32, minor: UInt32, maxReadahead: UInt32, flags: UInt32, flags2: UInt32 = 0) {
        self.major = major; self.minor = minor; self.maxReadahead = maxReadahead; self.flags = flags; self.flags2 = flags2
    }
    public init(from r: inout WireReader) throws(WireError) {
        major = try r.u32(); minor = try r.u32(); maxReadahead = try r.u32(); flags = try r.u32(); flags2 = try r.u32(); try r.skip(11 * 4)
    }
    /// Decodes either the 16-byte or the 64-byte form.
    public static func decodeAny(_ r: inout WireReader) throws(WireError) -> InitIn {
        if r.remaining >= wireSize { return try r.read(InitIn.self) }
        guard r.remaining >= compatSize else { throw .truncated }
        return InitIn(major: try r.u32(), minor: try r.u32(), maxReadahead: try r.u32(), flags: try r.u32())
    }
    public func encode(to w: inout WireWriter) { w.u32(major); w.u32(minor); w.u32(maxReadahead); w.u32(flags); w.u32(flags2); w.zeros(11 * 4) }
}

/// `struct fuse_init_out`, 64 bytes.
public struct InitOut: WireStruct, Equatable {
    public static let wireSize = 64
    public var major: UInt32 = 0, minor: UInt32 = 0, maxReadahead: UInt32 = 0, flags: UInt32 = 0
    public var maxBackground: UInt16 = 0, congestionThreshold: UInt16 = 0, maxWrite: UInt32 = 0, timeGran: UInt32 = 0
    public var maxPages: UInt16 = 0, mapAlignment: UInt16 = 0, flags2: UInt32 = 0, maxStackDepth: UInt32 = 0
    public var requestTimeout: UInt16 = 0
    public init() {}
    public init(from r: inout WireReader) throws(WireError) {
        major = try r.u32(); minor = try r.u32(); maxReadahead = try r.u32(); flags = try r.u32()
        maxBackground = try r.u16(); congestionThreshold = try r.u16(); maxWrite = try r.u32(); timeGran = try r.u32()
        maxPages = try r.u16(); mapAlignment = try r.u16(); flags2 = try r.u32(); maxStackDepth = try r.u32()
        requestTimeout = try r.u16(); try r.skip(11 * 2)
    }
    public func encode(to w: inout WireWriter) {
        w.u32(major); w.u32(minor); w.u32(maxReadahead); w.u32(flags)
        w.u16(maxBackground); w.u16(congestionThreshold); w.u32(maxWrite); w.u32(timeGran)
        w.u16(maxPages); w.u16(mapAlignment); w.u32(flags2); w.u32(maxStackDepth); w.u16(requestTimeout); w.zeros(11 * 2)
    }
}

/// `struct cuse_init_in`, 16 bytes.
public struct CuseInitIn: WireStruct, Equatable {
    public static let wireSize = 16
    public var major: UInt32, minor: UInt32, unused: UInt32, flags: UInt32
    public init(from r: inout WireReader) throws(WireError) { major = try r.u32(); minor = try r.u32(); unused = try r.u32(); flags = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u32(major); w.u32(minor); w.u32(unused); w.u32(flags) }
}

/// `struct cuse_init_out`, 72 bytes.
public struct CuseInitOut: WireStruct, Equatable {
    public static let wireSize = 72
    public var major: UInt32 = 0, minor: UInt32 = 0, unused: UInt32 = 0, flags: UInt32 = 0
    public var maxRead: UInt32 = 0, maxWrite: UInt32 = 0, devMajor: UInt32 = 0, devMinor: UInt32 = 0
    public init() {}
    public init(from r: inout WireReader) throws(WireError) {
        major = try r.u32(); minor = try r.u32(); unused = try r.u32(); flags = try r.u32()
        maxRead = try r.u32(); maxWrite = try r.u32(); devMajor = try r.u32(); devMinor = try r.u32(); try r.skip(10 * 4)
    }
    public func encode(to w: inout WireWriter) {
        w.u32(major); w.u32(minor); w.u32(unused); w.u32(flags); w.u32(maxRead); w.u32(maxWrite); w.u32(devMajor); w.u32(devMinor); w.zeros(10 * 4)
    }
}

/// `struct fuse_bmap_in`, 16 bytes.
public struct BmapIn: WireStruct, Equatable {
    public static let wireSize = 16
    public var block: UInt64, blocksize: UInt32, padding: UInt32
    public init(from r: inout WireReader) throws(WireError) { block = try r.u64(); blocksize = try r.u32(); padding = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u64(block); w.u32(blocksize); w.u32(padding) }
}

/// `struct fuse_ioctl_in`, 32 bytes.
public struct IoctlIn: WireStruct, Equatable {
    public static let wireSize = 32
    public var fh: UInt64, flags: UInt32, cmd: UInt32, arg: UInt64, inSize: UInt32, outSize: UInt32
    public init(from r: inout WireReader) throws(WireError) { fh = try r.u64(); flags = try r.u32(); cmd = try r.u32(); arg = try r.u64(); inSize = try r.u32(); outSize = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u64(fh); w.u32(flags); w.u32(cmd); w.u64(arg); w.u32(inSize); w.u32(outSize) }
}

/// `struct fuse_ioctl_out`, 16 bytes.
public struct IoctlOut: WireStruct, Equatable {
    public static let wireSize = 16
    public var result: Int32, flags: UInt32, inIovs: UInt32, outIovs: UInt32
    public init(from r: inout WireReader) throws(WireError) { result = try r.i32(); flags = try r.u32(); inIovs = try r.u32(); outIovs = try r.u32() }
    public func encode(to w: inout WireWriter) { w.i32(result); w.u32(flags); w.u32(inIovs); w.u32(outIovs) }
}

/// `struct fuse_poll_in`, 24 bytes.
public struct PollIn: WireStruct, Equatable {
    public static let wireSize = 24
    public var fh: UInt64, kh: UInt64, flags: UInt32, events: UInt32
    public init(from r: inout WireReader) throws(WireError) { fh = try r.u64(); kh = try r.u64(); flags = try r.u32(); events = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u64(fh); w.u64(kh); w.u32(flags); w.u32(events) }
}

/// `struct fuse_fallocate_in`, 32 bytes.
public struct FallocateIn: WireStruct, Equatable {
    public static let wireSize = 32
    public var fh: UInt64, offset: UInt64, length: UInt64, mode: UInt32, padding: UInt32
    public init(fh: UInt64, offset: UInt64, length: UInt64, mode: UInt32) { self.fh = fh; self.offset = offset; self.length = length; self.mode = mode; padding = 0 }
    public init(from r: inout WireReader) throws(WireError) { fh = try r.u64(); offset = try r.u64(); length = try r.u64(); mode = try r.u32(); padding = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u64(fh); w.u64(offset); w.u64(length); w.u32(mode); w.u32(padding) }
}

/// `struct fuse_lseek_in`, 24 bytes.
public struct LseekIn: WireStruct, Equatable {
    public static let wireSize = 24
    public var fh: UInt64, offset: UInt64, whence: UInt32, padding: UInt32
    public init(fh: UInt64, offset: UInt64, whence: UInt32) { self.fh = fh; self.offset = offset; self.whence = whence; padding = 0 }
    public init(from r: inout WireReader) throws(WireError) { fh = try r.u64(); offset = try r.u64(); whence = try r.u32(); padding = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u64(fh); w.u64(offset); w.u32(whence); w.u32(padding) }
}

/// `struct fuse_copy_file_range_in`, 56 bytes.
public struct CopyFileRangeIn: WireStruct, Equatable {
    public static let wireSize = 56
    public var fhIn: UInt64, offIn: UInt64, nodeidOut: UInt64, fhOut: UInt64, offOut: UInt64, len: UInt64, flags: UInt64
    public init(fhIn: UInt64, offIn: UInt64, nodeidOut: UInt64, fhOut: UInt64, offOut: UInt64, len: UInt64, flags: UInt64 = 0) {
        self.fhIn = fhIn; self.offIn = offIn; self.nodeidOut = nodeidOut; self.fhOut = fhOut; self.offOut = offOut; self.len = len; self.flags = flags
    }
    public init(from r: inout WireReader) throws(WireError) {
        fhIn = try r.u64(); offIn = try r.u64(); nodeidOut = try r.u64(); fhOut = try r.u64(); offOut = try r.u64(); len = try r.u64(); flags = try r.u64()
    }
    public func encode(to w: inout WireWriter) { w.u64(fhIn); w.u64(offIn); w.u64(nodeidOut); w.u64(fhOut); w.u64(offOut); w.u64(len); w.u64(flags) }
}

/// `struct fuse_setupmapping_in`, 40 bytes.
public struct SetupMappingIn: WireStruct, Equatable {
    public static let wireSize = 40
    public var fh: UInt64, foffset: UInt64, len: UInt64, flags: UInt64, moffset: UInt64
    public init(fh: UInt64, foffset: UInt64, len: UInt64, flags: UInt64, moffset: UInt64) { self.fh = fh; self.foffset = foffset; self.len = len; self.flags = flags; self.moffset = moffset }
    public init(from r: inout WireReader) throws(WireError) { fh = try r.u64(); foffset = try r.u64(); len = try r.u64(); flags = try r.u64(); moffset = try r.u64() }
    public func encode(to w: inout WireWriter) { w.u64(fh); w.u64(foffset); w.u64(len); w.u64(flags); w.u64(moffset) }
}

/// `struct fuse_removemapping_in`, 4 bytes; `count` × `RemoveMappingOne` follow.
public struct RemoveMappingIn: WireStruct, Equatable {
    public static let wireSize = 4
    public var count: UInt32
    public init(count: UInt32) { self.count = count }
    public init(from r: inout WireReader) throws(WireError) { count = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u32(count) }
}

/// `struct fuse_removemapping_one`, 16 bytes.
public struct RemoveMappingOne: WireStruct, Equatable {
    public static let wireSize = 16
    public var moffset: UInt64, len: UInt64
    public init(moffset: UInt64, len: UInt64) { self.moffset = moffset; self.len = len }
    public init(from r: inout WireReader) throws(WireError) { moffset = try r.u64(); len = try r.u64() }
    public func encode(to w: inout WireWriter) { w.u64(moffset); w.u64(len) }
}

/// `struct fuse_dirent` header, 24 bytes; the name follows, padded to 8 bytes.
public struct DirentHeader: WireStruct, Equatable {
    public static let wireSize = 24
    public var ino: UInt64, off: UInt64, namelen: UInt32, type: UInt32
    public init(ino: UInt64, off: UInt64, namelen: UInt32, type: UInt32) { self.ino = ino; self.off = off; self.namelen = namelen; self.type = type }
    public init(from r: inout WireReader) throws(WireError) { ino = try r.u64(); off = try r.u64(); namelen = try r.u32(); type = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u64(ino); w.u64(off); w.u32(namelen); w.u32(type) }
}

/// `struct fuse_notify_inval_inode_out`, 24 bytes.
public struct NotifyInvalInodeOut: WireStruct, Equatable {
    public static let wireSize = 24
    public var ino: UInt64, off: Int64, len: Int64
    public init(ino: UInt64, off: Int64, len: Int64) { self.ino = ino; self.off = off; self.len = len }
    public init(from r: inout WireReader) throws(WireError) { ino = try r.u64(); off = try r.i64(); len = try r.i64() }
    public func encode(to w: inout WireWriter) { w.u64(ino); w.i64(off); w.i64(len) }
}

/// `struct fuse_notify_inval_entry_out`, 16 bytes; the name and a NUL follow.
public struct NotifyInvalEntryOut: WireStruct, Equatable {
    public static let wireSize = 16
    public var parent: UInt64, namelen: UInt32, flags: UInt32
    public init(parent: UInt64, namelen: UInt32, flags: UInt32 = 0) { self.parent = parent; self.namelen = namelen; self.flags = flags }
    public init(from r: inout WireReader) throws(WireError) { parent = try r.u64(); namelen = try r.u32(); flags = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u64(parent); w.u32(namelen); w.u32(flags) }
}

/// `struct fuse_notify_delete_out`, 24 bytes; the name and a NUL follow.
public struct NotifyDeleteOut: WireStruct, Equatable {
    public static let wireSize = 24
    public var parent: UInt64, child: UInt64, namelen: UInt32, padding: UInt32
    public init(parent: UInt64, child: UInt64, namelen: UInt32) { self.parent = parent; self.child = child; self.namelen = namelen; padding = 0 }
    public init(from r: inout WireReader) throws(WireError) { parent = try r.u64(); child = try r.u64(); namelen = try r.u32(); padding = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u64(parent); w.u64(child); w.u32(namelen); w.u32(padding) }
}

/// `struct fuse_notify_store_out`, 24 bytes.
public struct NotifyStoreOut: WireStruct, Equatable {
    public static let wireSize = 24
    public var nodeid: UInt64, offset: UInt64, size: UInt32, padding: UInt32
    public init(from r: inout WireReader) throws(WireError) { nodeid = try r.u64(); offset = try r.u64(); size = try r.u32(); padding = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u64(nodeid); w.u64(offset); w.u32(size); w.u32(padding) }
}

/// `struct fuse_notify_retrieve_out`, 32 bytes.
public struct NotifyRetrieveOut: WireStruct, Equatable {
    public static let wireSize = 32
    public var notifyUnique: UInt64, nodeid: UInt64, offset: UInt64, size: UInt32, padding: UInt32
    public init(from r: inout WireReader) throws(WireError) { notifyUnique = try r.u64(); nodeid = try r.u64(); offset = try r.u64(); size = try r.u32(); padding = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u64(notifyUnique); w.u64(nodeid); w.u64(offset); w.u32(size); w.u32(padding) }
}

/// `struct fuse_notify_retrieve_in`, 40 bytes.
public struct NotifyRetrieveIn: WireStruct, Equatable {
    public static let wireSize = 40
    public var dummy1: UInt64, offset: UInt64, size: UInt32, dummy4: UInt32, dummy5: UInt64, dummy6: UInt64
    public init(from r: inout WireReader) throws(WireError) { dummy1 = try r.u64(); offset = try r.u64(); size = try r.u32(); dummy4 = try r.u32(); dummy5 = try r.u64(); dummy6 = try r.u64() }
    public func encode(to w: inout WireWriter) { w.u64(dummy1); w.u64(offset); w.u32(size); w.u32(dummy4); w.u64(dummy5); w.u64(dummy6) }
}

/// `struct fuse_backing_map`, 16 bytes (argument of FUSE_DEV_IOC_BACKING_OPEN).
public struct BackingMap: WireStruct, Equatable {
    public static let wireSize = 16
    public var fd: Int32, flags: UInt32, padding: UInt64
    public init(fd: Int32, flags: UInt32 = 0) { self.fd = fd; self.flags = flags; padding = 0 }
    public init(from r: inout WireReader) throws(WireError) { fd = try r.i32(); flags = try r.u32(); padding = try r.u64() }
    public func encode(to w: inout WireWriter) { w.i32(fd); w.u32(flags); w.u64(padding) }
}

/// `struct fuse_ext_header`, 8 bytes: one request extension (security context, supplementary groups).
public struct ExtHeader: WireStruct, Equatable {
    public static let wireSize = 8
    public var size: UInt32, type: UInt32
    public init(size: UInt32, type: UInt32) { self.size = size; self.type = type }
    public init(from r: inout WireReader) throws(WireError) { size = try r.u32(); type = try r.u32() }
    public func encode(to w: inout WireWriter) { w.u32(size); w.u32(type) }
    /// `FUSE_EXT_GROUPS`: `struct fuse_supp_groups` {u32 nr_groups, u32 groups[]}. Types 0–31 are security contexts.
    public static let typeSuppGroups: UInt32 = 32
}
