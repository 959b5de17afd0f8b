import FUSEABI
import HostSystem

/// A name argument that is not a single path component.
struct BadName: Error {}

extension WireReader {
    /// A NUL-terminated single path component.
    mutating func fileName() throws -> FileName {
        guard let name = FileName(validating: try cString()) else { throw BadName() }
        return name
    }

    mutating func cStringArg() throws -> CStringArg { CStringArg(bytes: try cString()) }

}

extension FUSESession {
    /// The single dispatch point: one decoder and one filesystem call per opcode.
    func dispatch(_ header: InHeader, _ opcode: FUSEOpcode, _ args: UnsafeRawBufferPointer,
                  _ ctx: RequestContext, _ reply: ReplyBuffer) throws(RequestFailure) -> ReplyOutcome {
        do {
            return try decodeAndCall(header, opcode, args, ctx, reply)
        } catch let failure as RequestFailure {
            throw failure
        } catch let errno as Errno {
            throw .errno(errno)
        } catch let wire as WireError {
            throw .malformed("\(wire) arguments (\(args.count) bytes)")
        } catch is BadName {
            throw .malformed("a name that is empty, '.', '..' or contains '/'")
        } catch {
            throw .malformed("\(error)")
        }
    }

    private func decodeAndCall(_ header: InHeader, _ opcode: FUSEOpcode, _ args: UnsafeRawBufferPointer,
                               _ ctx: RequestContext, _ reply: ReplyBuffer) throws -> ReplyOutcome {
        let fs = fileSystem
        let node = NodeID(header.nodeid)
        var r = WireReader(args)

        switch opcode {
        case .lookup:
            let name = try r.fileName()
            let entry = try fs.lookup(ctx, parent: node, name: name)
            return success(header, entry.wire, reply, entry: entry.node)

        case .forget:
            let count = try r.read(U64Arg.self).value
            fs.forget(node, count: count)
            return .none

        case .batchForget:
            let count = try r.read(U32PaddedArg.self).value
            guard UInt64(count) * UInt64(ForgetOne.wireSize) <= UInt64(r.remaining) else {
                throw RequestFailure.malformed("BATCH_FORGET of \(count) entries in \(r.remaining) bytes")
            }
            for _ in 0 ..< count {
                let one = try r.read(ForgetOne.self)
                fs.forget(NodeID(one.nodeid), count: one.nlookup)
            }
            return .none

        case .getattr:
            let input = try r.read(GetattrIn.self)
            let handle = input.getattrFlags & FUSEFlag.getattrFH != 0 ? FileHandle(input.fh) : nil
            return success(header, attrOut(try fs.getattr(ctx, node: node, handle: handle)), reply)

        case .setattr:
            let input = try r.read(SetattrIn.self)
            let attr = try fs.setattr(ctx, node: node, setattrRequest(input))
            if SetattrValid(rawValue: input.valid).contains(.size) { window?.fileMayHaveResized(node: node) }
            return success(header, attrOut(attr), reply)

        case .readlink:
            let target = try fs.readlink(ctx, node: node)
            guard target.count <= reply.payloadCapacity else { throw Errno.nameTooLong }
            target.withUnsafeBytes { UnsafeMutableRawBufferPointer(reply.payload).copyMemory(from: $0) }
            return success(header, payloadLength: target.count, reply)

        case .symlink:
            let name = try r.fileName()
            let target = try r.cStringArg()
            let entry = try fs.symlink(ctx, parent: node, name: name, target: target)
            return success(header, entry.wire, reply, entry: entry.node)

        case .mknod:
            let input = try r.read(MknodIn.self)
            let name = try r.fileName()
            let entry = try fs.mknod(ctx, parent: node, name: name, mode: input.mode, rdev: input.rdev, umask: input.umask)
            return success(header, entry.wire, reply, entry: entry.node)

        case .mkdir:
            let input = try r.read(MkdirIn.self)
            let name = try r.fileName()
            let entry = try fs.mkdir(ctx, parent: node, name: name, mode: input.mode, umask: input.umask)
            return success(header, entry.wire, reply, entry: entry.node)

        case .unlink:
            try fs.unlink(ctx, parent: node, name: try r.fileName())
            return success(header, reply)

        case .rmdir:
            try fs.rmdir(ctx, parent: node, name: try r.fileName())
            return success(header, reply)

        case .rename, .rename2:
            let newParent: UInt64, flags: UInt32
            if opcode == .rename {
                newParent = try r.read(U64Arg.self).value
                flags = 0
            } else {
                let input = try r.read(Rename2In.self)
                newParent = input.newdir
                flags = input.flags
            }
            let name = try r.fileName()
            let newName = try r.fileName()
            try fs.rename(ctx, parent: node, name: name, newParent: NodeID(newParent), newName: newName, flags: flags)
            return success(header, reply)

        case .link:
            let oldNode = try r.read(U64Arg.self).value
            let name = try r.fileName()
            let entry = try fs.link(ctx, node: NodeID(oldNode), newParent: node, newName: name)
            return success(header, entry.wire, reply, entry: entry.node)

        case .open:
            let input = try r.read(OpenIn.self)
            let opened = try fs.open(ctx, node: node, flags: input.flags, killSuidgid: input.openFlags & FUSEFlag.openKillSuidgid != 0)
            return success(header, openOut(opened), reply)

        case .create:
            let input = try r.read(CreateIn.self)
            let name = try r.fileName()
            let (entry, opened) = try fs.create(ctx, parent: node, name: name, mode: input.mode, flags: input.flags, umask: input.umask,
                                                killSuidgid: input.openFlags & FUSEFlag.openKillSuidgid != 0)
            return entryAndOpen(header, entry, opened, reply)

        case .tmpfile:
            let input = try r.read(CreateIn.self)
            let (entry, opened) = try fs.tmpfile(ctx, parent: node, mode: input.mode, flags: input.flags, umask: input.umask)
            return entryAndOpen(header, entry, opened, reply)

        case .read:
            let input = try r.read(ReadWriteIn.self)
            let limit = min(Int(input.size), reply.payloadCapacity)
            let buffer = UnsafeMutableRawBufferPointer(rebasing: reply.payload[0 ..< limit])
            let lockOwner = input.ioFlags & FUSEFlag.readLockOwner != 0 ? input.lockOwner : nil
            let count = try fs.read(ctx, node: node, handle: FileHandle(input.fh), offset: input.offset, into: buffer, lockOwner: lockOwner)
            return success(header, payloadLength: min(max(count, 0), limit), reply)

        case .write:
            let input = try r.read(ReadWriteIn.self)
            guard Int(input.size) == r.remaining else {
                throw RequestFailure.malformed("WRITE says \(input.size) bytes, carries \(r.remaining)")
            }
            let data = try r.bytes(Int(input.size))
            let lockOwner = input.ioFlags & FUSEFlag.writeLockOwner != 0 ? input.lockOwner : nil
            let count = try fs.write(ctx, node: node, handle: FileHandle(input.fh), offset: input.offset, data: data,
                                     writeFlags: input.ioFlags, lockOwner: lockOwner)
            window?.fileMayHaveResized(node: node)
            return success(header, U32PaddedArg(UInt32(clamping: count)), reply)

        case .statfs:
            return success(header, try fs.statfs(ctx, node: node), reply)

        case .release, .releasedir:
            let input = try r.read(ReleaseIn.self)
            if opcode == .release {
                try fs.release(ctx, node: node, handle: FileHandle(input.fh), flags: input.flags,
                               lockOwner: input.releaseFlags & FUSEFlag.releaseFlush != 0 ? input.lockOwner : nil,
                               flush: input.releaseFlags & FUSEFlag.releaseFlush != 0,
                               flockRelease: input.releaseFlags & FUSEFlag.releaseFlockUnlock != 0)
            } else {
                try fs.releasedir(ctx, node: node, handle: FileHandle(input.fh), flags: input.flags)
            }
            return success(header, reply)

        case .fsync, .fsyncdir:
            let input = try r.read(FsyncIn.self)
            let datasync = input.fsyncFlags & FUSEFlag.fsyncDatasync != 0
            if opcode == .fsync {
                try fs.fsync(ctx, node: node, handle: FileHandle(input.fh), datasync: datasync)
            } else {
                try fs.fsyncdir(ctx, node: node, handle: FileHandle(input.fh), datasync: datasync)
            }
            return success(header, reply)

        case .setxattr:
            let input: SetxattrIn
            if capabilities.contains(.setxattrExt) {
                input = try r.read(SetxattrIn.self)
            } else {
                input = SetxattrIn(size: try r.u32(), flags: try r.u32())
            }
            let name = try r.cStringArg()
            guard Int(input.size) == r.remaining else {
                throw RequestFailure.malformed("SETXATTR says \(input.size) value bytes, carries \(r.remaining)")
            }
            let value = try r.bytes(Int(input.size))
            try fs.setxattr(ctx, node: node, name: name, value: value, flags: input.flags, setxattrFlags: input.setxattrFlags)
            return success(header, reply)

        case .getxattr, .listxattr:
            let size = Int(try r.read(U32PaddedArg.self).value)
            let name = opcode == .getxattr ? try r.cStringArg() : nil
            if size == 0 {
                let needed = try name.map { try fs.getxattr(ctx, node: node, name: $0, into: nil) }
                    ?? fs.listxattr(ctx, node: node, into: nil)
                return success(header, U32PaddedArg(UInt32(clamping: needed)), reply)
            }
            let buffer = UnsafeMutableRawBufferPointer(rebasing: reply.payload[0 ..< min(size, reply.payloadCapacity)])
            let count = try name.map { try fs.getxattr(ctx, node: node, name: $0, into: buffer) }
                ?? fs.listxattr(ctx, node: node, into: buffer)
            return success(header, payloadLength: min(max(count, 0), buffer.count), reply)

        case .removexattr:
            try fs.removexattr(ctx, node: node, name: try r.cStringArg())
            return success(header, reply)

        case .flush:
            let input = try r.read(FlushIn.self)
            try fs.flush(ctx, node: node, handle: FileHandle(input.fh), lockOwner: input.lockOwner)
            return success(header, reply)

        case .opendir:
            let input = try r.read(OpenIn.self)
            return success(header, openOut(try fs.opendir(ctx, node: node, flags: input.flags)), reply)

        case .readdir, .readdirplus:
            let input = try r.read(ReadWriteIn.self)
            var writer = DirectoryWriter(buffer: reply.payload, limit: Int(input.size), plus: opcode == .readdirplus)
            try fs.readdir(ctx, node: node, handle: FileHandle(input.fh), offset: input.offset, writer: &writer)
            var outcome = success(header, payloadLength: writer.byteCount, reply)
            outcome.entryNodes = writer.referencedNodes
            return outcome

        case .getlk:
            let input = try r.read(LkIn.self)
            let lock = try fs.getlk(ctx, node: node, handle: FileHandle(input.fh), owner: input.owner, lock: input.lock)
            return success(header, lock, reply)

        case .setlk, .setlkw:
            let input = try r.read(LkIn.self)
            let isFlock = input.lkFlags & FUSEFlag.lkFlock != 0
            if opcode == .setlkw {
                try interruptible(ctx) { ctx throws(Errno) in
                    try fs.setlk(ctx, node: node, handle: FileHandle(input.fh), owner: input.owner, lock: input.lock, wait: true, isFlock: isFlock)
                }
            } else {
                try fs.setlk(ctx, node: node, handle: FileHandle(input.fh), owner: input.owner, lock: input.lock, wait: false, isFlock: isFlock)
            }
            return success(header, reply)

        case .access:
            try fs.access(ctx, node: node, mask: try r.read(U32PaddedArg.self).value)
            return success(header, reply)

        case .interrupt:
            interrupt(unique: try r.read(U64Arg.self).value)
            return .none

        case .bmap:
            let input = try r.read(BmapIn.self)
            return success(header, U64Arg(try fs.bmap(ctx, node: node, block: input.block, blockSize: input.blocksize)), reply)

        case .destroy:
            unmounted()
            return success(header, reply)

        case .fallocate:
            let input = try r.read(FallocateIn.self)
            try fs.fallocate(ctx, node: node, handle: FileHandle(input.fh), offset: input.offset, length: input.length, mode: input.mode)
            window?.fileMayHaveResized(node: node)
            return success(header, reply)

        case .lseek:
            let input = try r.read(LseekIn.self)
            return success(header, U64Arg(try fs.lseek(ctx, node: node, handle: FileHandle(input.fh), offset: input.offset, whence: input.whence)), reply)

        case .copyFileRange, .copyFileRange64:
            let input = try r.read(CopyFileRangeIn.self)
            let copied = try fs.copyFileRange(ctx, nodeIn: node, handleIn: FileHandle(input.fhIn), offsetIn: input.offIn,
                                              nodeOut: NodeID(input.nodeidOut), handleOut: FileHandle(input.fhOut),
                                              offsetOut: input.offOut, length: input.len, flags: input.flags)
            window?.fileMayHaveResized(node: NodeID(input.nodeidOut))
            if opcode == .copyFileRange64 { return success(header, U64Arg(copied), reply) }
            return success(header, U32PaddedArg(UInt32(clamping: copied)), reply)

        case .syncfs:
            _ = try r.read(U64Arg.self)
            try fs.syncfs(ctx, node: node)
            return success(header, reply)

        case .setupMapping:
            try setupMapping(ctx, node: node, try r.read(SetupMappingIn.self))
            return success(header, reply)

        case .removeMapping:
            try removeMappings(&r)
            return success(header, reply)

        case .daxfsMmap:
            return success(header, try directMmap(ctx, node: node, try r.read(DirectMmapIn.self)), reply)

        case .daxfsMunmap:
            try directMunmap(try r.read(DirectMunmapIn.self))
            return success(header, reply)

        case .notifyReply:
            // Replies to NOTIFY_RETRIEVE; daxfs never sends one.
            return .none

        default:
            // IOCTL, POLL, STATX, CUSE_INIT, unknown.
            throw Errno.notImplemented
        }
    }

    private func attrOut(_ reply: AttrReply) -> AttrOut {
        var out = AttrOut()
        out.attrValid = reply.timeout.seconds
        out.attrValidNsec = reply.timeout.nanoseconds
        out.attr = reply.attr
        return out
    }

    private func openOut(_ opened: Opened) -> OpenOut {
        OpenOut(fh: opened.handle.rawValue, openFlags: opened.flags.rawValue, backingID: opened.backingID)
    }

    private func entryAndOpen(_ header: InHeader, _ entry: Entry, _ opened: Opened, _ reply: ReplyBuffer) -> ReplyOutcome {
        var w = WireWriter(reply.storage, position: OutHeader.wireSize)
        w.write(entry.wire)
        w.write(openOut(opened))
        return success(header, payloadLength: EntryOut.wireSize + OpenOut.wireSize, reply, entry: entry.node)
    }

    private func setattrRequest(_ input: SetattrIn) -> SetattrRequest {
        let valid = SetattrValid(rawValue: input.valid)
        func time(_ set: SetattrValid, _ now: SetattrValid?, _ seconds: UInt64, _ nanos: UInt32) -> TimeUpdate? {
            if let now, valid.contains(now) { return .now }
            guard valid.contains(set) else { return nil }
            return .set(seconds: Int64(bitPattern: seconds), nanoseconds: nanos)
        }
        return SetattrRequest(
            handle: valid.contains(.fh) ? FileHandle(input.fh) : nil,
            mode: valid.contains(.mode) ? input.mode : nil,
            uid: valid.contains(.uid) ? input.uid : nil,
            gid: valid.contains(.gid) ? input.gid : nil,
            size: valid.contains(.size) ? input.size : nil,
            atime: time(.atime, .atimeNow, input.atime, input.atimensec),
            mtime: time(.mtime, .mtimeNow, input.mtime, input.mtimensec),
            ctime: time(.ctime, nil, input.ctime, input.ctimensec),
            lockOwner: valid.contains(.lockOwner) ? input.lockOwner : nil,
            killSuidgid: valid.contains(.killSuidgid))
    }
}
