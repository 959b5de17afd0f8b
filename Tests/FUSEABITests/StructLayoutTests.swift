import FUSEABI
import Testing

// Every wire struct against include/uapi/linux/fuse.h of protocol 7.45
// (Linux 6.18). Offsets are written out from the header, not computed, so a
// reordered or resized Swift field fails here. The installed
// /usr/include/linux/fuse.h is 7.38 and agrees wherever a struct exists there.

// MARK: - Headers

@Test func fuseInHeader() throws {
    try checkLayout(Layout<InHeader>(kernelName: "fuse_in_header", size: 40, fields: [
        .u32("len", 0, \.len), .u32("opcode", 4, \.opcode), .u64("unique", 8, \.unique), .u64("nodeid", 16, \.nodeid),
        .u32("uid", 24, \.uid), .u32("gid", 28, \.gid), .u32("pid", 32, \.pid),
        .u16("total_extlen", 36, \.totalExtlen), .u16("padding", 38, \.padding),
    ]))
}

@Test func fuseOutHeader() throws {
    try checkLayout(Layout<OutHeader>(kernelName: "fuse_out_header", size: 16, fields: [
        .u32("len", 0, \.len), .u32("error", 4, \.error), .u64("unique", 8, \.unique),
    ]))
}

@Test func fuseExtHeader() throws {
    try checkLayout(Layout<ExtHeader>(kernelName: "fuse_ext_header", size: 8, fields: [
        .u32("size", 0, \.size), .u32("type", 4, \.type),
    ]))
}

// MARK: - Attributes

var attrFields: [Field<Attr>] { [
    .u64("ino", 0, \.ino), .u64("size", 8, \.size), .u64("blocks", 16, \.blocks),
    .u64("atime", 24, \.atime), .u64("mtime", 32, \.mtime), .u64("ctime", 40, \.ctime),
    .u32("atimensec", 48, \.atimensec), .u32("mtimensec", 52, \.mtimensec), .u32("ctimensec", 56, \.ctimensec),
    .u32("mode", 60, \.mode), .u32("nlink", 64, \.nlink), .u32("uid", 68, \.uid), .u32("gid", 72, \.gid),
    .u32("rdev", 76, \.rdev), .u32("blksize", 80, \.blksize), .u32("flags", 84, \.flags),
] }

var sxTimeFields: [Field<StatxTime>] { [
    .u64("tv_sec", 0, \.sec), .u32("tv_nsec", 8, \.nsec), .u32("__reserved", 12, \.reserved),
] }

var statxFields: [Field<Statx>] { [
    .u32("mask", 0, \.mask), .u32("blksize", 4, \.blksize), .u64("attributes", 8, \.attributes),
    .u32("nlink", 16, \.nlink), .u32("uid", 20, \.uid), .u32("gid", 24, \.gid),
    .u16("mode", 28, \.mode), .u16("__spare0", 30, \.spare0),
    .u64("ino", 32, \.ino), .u64("size", 40, \.size), .u64("blocks", 48, \.blocks), .u64("attributes_mask", 56, \.attributesMask),
] + Field.nested("atime", 64, \.atime, sxTimeFields) + Field.nested("btime", 80, \.btime, sxTimeFields)
  + Field.nested("ctime", 96, \.ctime, sxTimeFields) + Field.nested("mtime", 112, \.mtime, sxTimeFields) + [
    .u32("rdev_major", 128, \.rdevMajor), .u32("rdev_minor", 132, \.rdevMinor),
    .u32("dev_major", 136, \.devMajor), .u32("dev_minor", 140, \.devMinor),
] }

@Test func fuseAttr() throws {
    try checkLayout(Layout<Attr>(kernelName: "fuse_attr", size: 88, fields: attrFields))
}

@Test func fuseSxTime() throws {
    try checkLayout(Layout<StatxTime>(kernelName: "fuse_sx_time", size: 16, fields: sxTimeFields))
}

@Test func fuseStatx() throws {
    // __u64 __spare2[14] at 144.
    try checkLayout(Layout<Statx>(kernelName: "fuse_statx", size: 256, fields: statxFields, reserved: [144 ..< 256]))
}

@Test func fuseEntryOut() throws {
    try checkLayout(Layout<EntryOut>(kernelName: "fuse_entry_out", size: 128, fields: [
        .u64("nodeid", 0, \.nodeid), .u64("generation", 8, \.generation),
        .u64("entry_valid", 16, \.entryValid), .u64("attr_valid", 24, \.attrValid),
        .u32("entry_valid_nsec", 32, \.entryValidNsec), .u32("attr_valid_nsec", 36, \.attrValidNsec),
    ] + Field.nested("attr", 40, \.attr, attrFields)))
}

@Test func fuseAttrOut() throws {
    try checkLayout(Layout<AttrOut>(kernelName: "fuse_attr_out", size: 104, fields: [
        .u64("attr_valid", 0, \.attrValid), .u32("attr_valid_nsec", 8, \.attrValidNsec), .u32("dummy", 12, \.dummy),
    ] + Field.nested("attr", 16, \.attr, attrFields)))
}

@Test func fuseStatxOut() throws {
    // __u64 spare[2] at 16, then the statx with its own __spare2[14] at 32 + 144.
    try checkLayout(Layout<StatxOut>(kernelName: "fuse_statx_out", size: 288, fields: [
        .u64("attr_valid", 0, \.attrValid), .u32("attr_valid_nsec", 8, \.attrValidNsec), .u32("flags", 12, \.flags),
    ] + Field.nested("stat", 32, \.stat, statxFields), reserved: [16 ..< 32, 176 ..< 288]))
}

@Test func fuseKstatfs() throws {
    // padding at 52 and spare[6] at 56 are skipped by the Swift type.
    try checkLayout(Layout<KStatfs>(kernelName: "fuse_kstatfs", size: 80, fields: [
        .u64("blocks", 0, \.blocks), .u64("bfree", 8, \.bfree), .u64("bavail", 16, \.bavail),
        .u64("files", 24, \.files), .u64("ffree", 32, \.ffree),
        .u32("bsize", 40, \.bsize), .u32("namelen", 44, \.namelen), .u32("frsize", 48, \.frsize),
    ], reserved: [52 ..< 80]))
}

var fileLockFields: [Field<FileLock>] { [
    .u64("start", 0, \.start), .u64("end", 8, \.end), .u32("type", 16, \.type), .u32("pid", 20, \.pid),
] }

@Test func fuseFileLock() throws {
    try checkLayout(Layout<FileLock>(kernelName: "fuse_file_lock", size: 24, fields: fileLockFields))
}

// MARK: - Small arguments

@Test func singleU64Structs() throws {
    // fuse_forget_in.nlookup, fuse_interrupt_in.unique, fuse_link_in.oldnodeid,
    // fuse_rename_in.newdir, fuse_lseek_out.offset, fuse_bmap_out.block,
    // fuse_syncfs_in.padding, fuse_lk_out's start...: all a lone __u64.
    try checkLayout(Layout<U64Arg>(kernelName: "fuse_forget_in", size: 8, fields: [.u64("nlookup", 0, \.value)]))
}

@Test func u32PairStructs() throws {
    // fuse_write_out {size, padding}, fuse_getxattr_in/out {size, padding},
    // fuse_access_in {mask, padding}, fuse_batch_forget_in {count, dummy},
    // fuse_poll_out {revents, padding}.
    try checkLayout(Layout<U32PaddedArg>(kernelName: "fuse_write_out", size: 8, fields: [
        .u32("size", 0, \.value), .u32("padding", 4, \.second),
    ]))
}

@Test func fuseForgetOne() throws {
    try checkLayout(Layout<ForgetOne>(kernelName: "fuse_forget_one", size: 16, fields: [
        .u64("nodeid", 0, \.nodeid), .u64("nlookup", 8, \.nlookup),
    ]))
}

@Test func fuseGetattrIn() throws {
    try checkLayout(Layout<GetattrIn>(kernelName: "fuse_getattr_in", size: 16, fields: [
        .u32("getattr_flags", 0, \.getattrFlags), .u32("dummy", 4, \.dummy), .u64("fh", 8, \.fh),
    ]))
}

@Test func fuseStatxIn() throws {
    try checkLayout(Layout<StatxIn>(kernelName: "fuse_statx_in", size: 24, fields: [
        .u32("getattr_flags", 0, \.getattrFlags), .u32("reserved", 4, \.reserved), .u64("fh", 8, \.fh),
        .u32("sx_flags", 16, \.sxFlags), .u32("sx_mask", 20, \.sxMask),
    ]))
}

@Test func fuseMknodIn() throws {
    try checkLayout(Layout<MknodIn>(kernelName: "fuse_mknod_in", size: 16, fields: [
        .u32("mode", 0, \.mode), .u32("rdev", 4, \.rdev), .u32("umask", 8, \.umask), .u32("padding", 12, \.padding),
    ]))
}

@Test func fuseMkdirIn() throws {
    try checkLayout(Layout<MkdirIn>(kernelName: "fuse_mkdir_in", size: 8, fields: [
        .u32("mode", 0, \.mode), .u32("umask", 4, \.umask),
    ]))
}

@Test func fuseRename2In() throws {
    try checkLayout(Layout<Rename2In>(kernelName: "fuse_rename2_in", size: 16, fields: [
        .u64("newdir", 0, \.newdir), .u32("flags", 8, \.flags), .u32("padding", 12, \.padding),
    ]))
}

@Test func fuseSetattrIn() throws {
    try checkLayout(Layout<SetattrIn>(kernelName: "fuse_setattr_in", size: 88, fields: [
        .u32("valid", 0, \.valid), .u32("padding", 4, \.padding), .u64("fh", 8, \.fh), .u64("size", 16, \.size),
        .u64("lock_owner", 24, \.lockOwner), .u64("atime", 32, \.atime), .u64("mtime", 40, \.mtime), .u64("ctime", 48, \.ctime),
        .u32("atimensec", 56, \.atimensec), .u32("mtimensec", 60, \.mtimensec), .u32("ctimensec", 64, \.ctimensec),
        .u32("mode", 68, \.mode), .u32("unused4", 72, \.unused4), .u32("uid", 76, \.uid), .u32("gid", 80, \.gid),
        .u32("unused5", 84, \.unused5),
    ]))
}

// MARK: - Open, read, write, release

@Test func fuseOpenIn() throws {
    try checkLayout(Layout<OpenIn>(kernelName: "fuse_open_in", size: 8, fields: [
        .u32("flags", 0, \.flags), .u32("open_flags", 4, \.openFlags),
    ]))
}

@Test func fuseCreateIn() throws {
    try checkLayout(Layout<CreateIn>(kernelName: "fuse_create_in", size: 16, fields: [
        .u32("flags", 0, \.flags), .u32("mode", 4, \.mode), .u32("umask", 8, \.umask), .u32("open_flags", 12, \.openFlags),
    ]))
}

@Test func fuseOpenOut() throws {
    try checkLayout(Layout<OpenOut>(kernelName: "fuse_open_out", size: 16, fields: [
        .u64("fh", 0, \.fh), .u32("open_flags", 8, \.openFlags), .u32("backing_id", 12, \.backingID),
    ]))
    // backing_id is signed: -1 must round-trip as 0xffffffff.
    let out = OpenOut(fh: 1, openFlags: OpenReplyFlags.passthrough.rawValue, backingID: -1)
    #expect(Array(out.wireBytes[8 ..< 16]) == [0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])
    #expect(try OpenOut(wireBytes: out.wireBytes).backingID == -1)
}

@Test func fuseReleaseIn() throws {
    try checkLayout(Layout<ReleaseIn>(kernelName: "fuse_release_in", size: 24, fields: [
        .u64("fh", 0, \.fh), .u32("flags", 8, \.flags), .u32("release_flags", 12, \.releaseFlags), .u64("lock_owner", 16, \.lockOwner),
    ]))
}

@Test func fuseFlushIn() throws {
    try checkLayout(Layout<FlushIn>(kernelName: "fuse_flush_in", size: 24, fields: [
        .u64("fh", 0, \.fh), .u32("unused", 8, \.unused), .u32("padding", 12, \.padding), .u64("lock_owner", 16, \.lockOwner),
    ]))
}

@Test func fuseReadInAndWriteIn() throws {
    // fuse_read_in {fh, offset, size, read_flags, lock_owner, flags, padding} and
    // fuse_write_in {fh, offset, size, write_flags, lock_owner, flags, padding}.
    try checkLayout(Layout<ReadWriteIn>(kernelName: "fuse_read_in", size: 40, fields: [
        .u64("fh", 0, \.fh), .u64("offset", 8, \.offset), .u32("size", 16, \.size), .u32("read_flags", 20, \.ioFlags),
        .u64("lock_owner", 24, \.lockOwner), .u32("flags", 32, \.flags), .u32("padding", 36, \.padding),
    ]))
}

@Test func fuseFsyncIn() throws {
    try checkLayout(Layout<FsyncIn>(kernelName: "fuse_fsync_in", size: 16, fields: [
        .u64("fh", 0, \.fh), .u32("fsync_flags", 8, \.fsyncFlags), .u32("padding", 12, \.padding),
    ]))
}

@Test func fuseSetxattrIn() throws {
    try checkLayout(Layout<SetxattrIn>(kernelName: "fuse_setxattr_in", size: 16, fields: [
        .u32("size", 0, \.size), .u32("flags", 4, \.flags), .u32("setxattr_flags", 8, \.setxattrFlags), .u32("padding", 12, \.padding),
    ]))
    #expect(SetxattrIn.compatSize == 8)  // FUSE_COMPAT_SETXATTR_IN_SIZE
}

@Test func fuseLkIn() throws {
    try checkLayout(Layout<LkIn>(kernelName: "fuse_lk_in", size: 48, fields: [
        .u64("fh", 0, \.fh), .u64("owner", 8, \.owner),
    ] + Field.nested("lk", 16, \.lock, fileLockFields) + [
        .u32("lk_flags", 40, \.lkFlags), .u32("padding", 44, \.padding),
    ]))
}

// MARK: - INIT

@Test func fuseInitIn() throws {
    try checkLayout(Layout<InitIn>(kernelName: "fuse_init_in", size: 64, fields: [
        .u32("major", 0, \.major), .u32("minor", 4, \.minor), .u32("max_readahead", 8, \.maxReadahead),
        .u32("flags", 12, \.flags), .u32("flags2", 16, \.flags2),
    ], reserved: [20 ..< 64]))
    #expect(InitIn.compatSize == 16)
}

@Test func fuseInitOut() throws {
    try checkLayout(Layout<InitOut>(kernelName: "fuse_init_out", size: 64, fields: [
        .u32("major", 0, \.major), .u32("minor", 4, \.minor), .u32("max_readahead", 8, \.maxReadahead), .u32("flags", 12, \.flags),
        .u16("max_background", 16, \.maxBackground), .u16("congestion_threshold", 18, \.congestionThreshold),
        .u32("max_write", 20, \.maxWrite), .u32("time_gran", 24, \.timeGran),
        .u16("max_pages", 28, \.maxPages), .u16("map_alignment", 30, \.mapAlignment),
        .u32("flags2", 32, \.flags2), .u32("max_stack_depth", 36, \.maxStackDepth),
        .u16("request_timeout", 40, \.requestTimeout),
    ], reserved: [42 ..< 64]))  // __u16 unused[11]
}

@Test func cuseInitIn() throws {
    try checkLayout(Layout<CuseInitIn>(kernelName: "cuse_init_in", size: 16, fields: [
        .u32("major", 0, \.major), .u32("minor", 4, \.minor), .u32("unused", 8, \.unused), .u32("flags", 12, \.flags),
    ]))
}

@Test func cuseInitOut() throws {
    // 8 × __u32 then __u32 spare[10]: sizeof is 72.
    try checkLayout(Layout<CuseInitOut>(kernelName: "cuse_init_out", size: 72, fields: [
        .u32("major", 0, \.major), .u32("minor", 4, \.minor), .u32("unused", 8, \.unused), .u32("flags", 12, \.flags),
        .u32("max_read", 16, \.maxRead), .u32("max_write", 20, \.maxWrite),
        .u32("dev_major", 24, \.devMajor), .u32("dev_minor", 28, \.devMinor),
    ], reserved: [32 ..< 72]))
}

// MARK: - Other requests

@Test func fuseBmapIn() throws {
    try checkLayout(Layout<BmapIn>(kernelName: "fuse_bmap_in", size: 16, fields: [
        .u64("block", 0, \.block), .u32("blocksize", 8, \.blocksize), .u32("padding", 12, \.padding),
    ]))
}

@Test func fuseIoctlIn() throws {
    try checkLayout(Layout<IoctlIn>(kernelName: "fuse_ioctl_in", size: 32, fields: [
        .u64("fh", 0, \.fh), .u32("flags", 8, \.flags), .u32("cmd", 12, \.cmd), .u64("arg", 16, \.arg),
        .u32("in_size", 24, \.inSize), .u32("out_size", 28, \.outSize),
    ]))
}

@Test func fuseIoctlOut() throws {
    try checkLayout(Layout<IoctlOut>(kernelName: "fuse_ioctl_out", size: 16, fields: [
        .u32("result", 0, \.result), .u32("flags", 4, \.flags), .u32("in_iovs", 8, \.inIovs), .u32("out_iovs", 12, \.outIovs),
    ]))
}

@Test func fusePollIn() throws {
    try checkLayout(Layout<PollIn>(kernelName: "fuse_poll_in", size: 24, fields: [
        .u64("fh", 0, \.fh), .u64("kh", 8, \.kh), .u32("flags", 16, \.flags), .u32("events", 20, \.events),
    ]))
}

@Test func fuseFallocateIn() throws {
    try checkLayout(Layout<FallocateIn>(kernelName: "fuse_fallocate_in", size: 32, fields: [
        .u64("fh", 0, \.fh), .u64("offset", 8, \.offset), .u64("length", 16, \.length),
        .u32("mode", 24, \.mode), .u32("padding", 28, \.padding),
    ]))
}

@Test func fuseLseekIn() throws {
    try checkLayout(Layout<LseekIn>(kernelName: "fuse_lseek_in", size: 24, fields: [
        .u64("fh", 0, \.fh), .u64("offset", 8, \.offset), .u32("whence", 16, \.whence), .u32("padding", 20, \.padding),
    ]))
}

@Test func fuseCopyFileRangeIn() throws {
    try checkLayout(Layout<CopyFileRangeIn>(kernelName: "fuse_copy_file_range_in", size: 56, fields: [
        .u64("fh_in", 0, \.fhIn), .u64("off_in", 8, \.offIn), .u64("nodeid_out", 16, \.nodeidOut),
        .u64("fh_out", 24, \.fhOut), .u64("off_out", 32, \.offOut), .u64("len", 40, \.len), .u64("flags", 48, \.flags),
    ]))
}

// MARK: - DAX

@Test func fuseSetupmappingIn() throws {
    try checkLayout(Layout<SetupMappingIn>(kernelName: "fuse_setupmapping_in", size: 40, fields: [
        .u64("fh", 0, \.fh), .u64("foffset", 8, \.foffset), .u64("len", 16, \.len),
        .u64("flags", 24, \.flags), .u64("moffset", 32, \.moffset),
    ]))
}

@Test func fuseRemovemappingIn() throws {
    try checkLayout(Layout<RemoveMappingIn>(kernelName: "fuse_removemapping_in", size: 4, fields: [
        .u32("count", 0, \.count),
    ]))
}

@Test func fuseRemovemappingOne() throws {
    try checkLayout(Layout<RemoveMappingOne>(kernelName: "fuse_removemapping_one", size: 16, fields: [
        .u64("moffset", 0, \.moffset), .u64("len", 8, \.len),
    ]))
}

// MARK: - Directory entries, notifications, passthrough

@Test func fuseDirent() throws {
    // FUSE_NAME_OFFSET = offsetof(struct fuse_dirent, name) = 24.
    try checkLayout(Layout<DirentHeader>(kernelName: "fuse_dirent", size: 24, fields: [
        .u64("ino", 0, \.ino), .u64("off", 8, \.off), .u32("namelen", 16, \.namelen), .u32("type", 20, \.type),
    ]))
}

@Test func fuseNotifyInvalInodeOut() throws {
    try checkLayout(Layout<NotifyInvalInodeOut>(kernelName: "fuse_notify_inval_inode_out", size: 24, fields: [
        .u64("ino", 0, \.ino), .u64("off", 8, \.off), .u64("len", 16, \.len),
    ]))
}

@Test func fuseNotifyInvalEntryOut() throws {
    try checkLayout(Layout<NotifyInvalEntryOut>(kernelName: "fuse_notify_inval_entry_out", size: 16, fields: [
        .u64("parent", 0, \.parent), .u32("namelen", 8, \.namelen), .u32("flags", 12, \.flags),
    ]))
}

@Test func fuseNotifyDeleteOut() throws {
    try checkLayout(Layout<NotifyDeleteOut>(kernelName: "fuse_notify_delete_out", size: 24, fields: [
        .u64("parent", 0, \.parent), .u64("child", 8, \.child), .u32("namelen", 16, \.namelen), .u32("padding", 20, \.padding),
    ]))
}

@Test func fuseNotifyStoreOut() throws {
    try checkLayout(Layout<NotifyStoreOut>(kernelName: "fuse_notify_store_out", size: 24, fields: [
        .u64("nodeid", 0, \.nodeid), .u64("offset", 8, \.offset), .u32("size", 16, \.size), .u32("padding", 20, \.padding),
    ]))
}

@Test func fuseNotifyRetrieveOut() throws {
    try checkLayout(Layout<NotifyRetrieveOut>(kernelName: "fuse_notify_retrieve_out", size: 32, fields: [
        .u64("notify_unique", 0, \.notifyUnique), .u64("nodeid", 8, \.nodeid), .u64("offset", 16, \.offset),
        .u32("size", 24, \.size), .u32("padding", 28, \.padding),
    ]))
}

@Test func fuseNotifyRetrieveIn() throws {
    try checkLayout(Layout<NotifyRetrieveIn>(kernelName: "fuse_notify_retrieve_in", size: 40, fields: [
        .u64("dummy1", 0, \.dummy1), .u64("offset", 8, \.offset), .u32("size", 16, \.size), .u32("dummy2", 20, \.dummy4),
        .u64("dummy3", 24, \.dummy5), .u64("dummy4", 32, \.dummy6),
    ]))
}

@Test func fuseBackingMap() throws {
    try checkLayout(Layout<BackingMap>(kernelName: "fuse_backing_map", size: 16, fields: [
        .u32("fd", 0, \.fd), .u32("flags", 4, \.flags), .u64("padding", 8, \.padding),
    ]))
}
