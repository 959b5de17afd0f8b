import FUSEABI

/// FUSE request and reply messages laid out as the kernel and daxfs lay them
/// out, for the targets' own INIT and for seeds.
public enum FUSEMessage {
    /// A request: `fuse_in_header` and the argument parts.
    public static func request(_ opcode: FUSEOpcode, unique: UInt64, node: UInt64 = 1, uid: UInt32 = 0, gid: UInt32 = 0,
                               _ parts: [[UInt8]] = []) -> [UInt8] {
        let body = parts.flatMap { $0 }
        let header = InHeader(len: UInt32(InHeader.wireSize + body.count), opcode: opcode.rawValue, unique: unique, nodeid: node,
                              uid: uid, gid: gid, pid: 4242)
        return header.wireBytes + body
    }

    /// A reply: `fuse_out_header` and the payload.
    public static func reply(unique: UInt64, error: Int32 = 0, _ payload: [UInt8] = []) -> [UInt8] {
        OutHeader(len: UInt32(OutHeader.wireSize + payload.count), error: error, unique: unique).wireBytes + payload
    }

    /// A NUL-terminated name argument.
    public static func name(_ text: String) -> [UInt8] { Array(text.utf8) + [0] }

    /// The INIT a Linux 6.x virtio-fs guest sends: protocol 7.45, every flag offered.
    public static func initRequest(unique: UInt64 = 1, flags: UInt32 = .max, flags2: UInt32 = .max) -> [UInt8] {
        request(.`init`, unique: unique, node: 0, [InitIn(major: 7, minor: 45, maxReadahead: 1 << 17, flags: flags, flags2: flags2).wireBytes])
    }
}

/// vhost-user messages: {u32 request, u32 flags, u32 size} and the payload.
public enum VhostMessageBytes {
    public static let version: UInt32 = 1
    public static let needReply: UInt32 = 0x8

    public static func message(_ request: UInt32, flags: UInt32 = version, _ payload: [UInt8] = []) -> [UInt8] {
        var w = ByteWriter()
        w.append(request)
        w.append(flags)
        w.append(UInt32(payload.count))
        w.append(payload)
        return w.bytes
    }

    public static func u64(_ value: UInt64) -> [UInt8] {
        var w = ByteWriter()
        w.append(value)
        return w.bytes
    }

    /// `vhost_vring_state` {u32 index, u32 num}.
    public static func state(_ index: UInt32, _ number: UInt32) -> [UInt8] {
        var w = ByteWriter()
        w.append(index)
        w.append(number)
        return w.bytes
    }
}
