import FUSEABI
import HostSystem
import Synchronization

/// Kernel passthrough backing files (FUSE_DEV_IOC_BACKING_OPEN/CLOSE). Only
/// the /dev/fuse transport provides one.
public protocol BackingRegistry: Sendable {
    /// Registers `fd` as a backing file; the id goes into `Opened.backingID`.
    func open(fd: Int32) throws(Errno) -> Int32
    func close(id: Int32) throws(Errno)
}

/// Where unsolicited kernel notifications go (one whole message per call).
public protocol NotificationSink: Sendable {
    func send(_ message: UnsafeRawBufferPointer) throws(Errno)
}

/// What a filesystem knows about its connection after INIT.
public final class FUSEConnection: Sendable {
    /// Capabilities both sides agreed on.
    public let capabilities: InitFlags
    /// The kernel's protocol minor version.
    public let kernelMinor: UInt32
    /// Largest WRITE payload the kernel will send.
    public let maxWrite: UInt32
    /// Present when passthrough was negotiated and the transport can register backing files.
    public let backing: (any BackingRegistry)?
    private let sink: (any NotificationSink)?

    public init(capabilities: InitFlags, kernelMinor: UInt32, maxWrite: UInt32, backing: (any BackingRegistry)?, sink: (any NotificationSink)?) {
        self.capabilities = capabilities; self.kernelMinor = kernelMinor; self.maxWrite = maxWrite
        self.backing = backing; self.sink = sink
    }

    /// True when notifications reach the kernel (the /dev/fuse transport).
    public var canNotify: Bool { sink != nil }

    /// Tells the kernel to forget its cached name `name` in `parent`
    /// (FUSE_NOTIFY_INVAL_ENTRY). Do not call while handling a request that
    /// holds the parent directory's lock (e.g. from inside `lookup` of it).
    public func invalidateEntry(parent: NodeID, name: [UInt8]) throws(Errno) {
        var message = [UInt8](repeating: 0, count: OutHeader.wireSize + NotifyInvalEntryOut.wireSize + name.count + 1)
        let length = message.count
        message.withUnsafeMutableBytes { raw in
            var w = WireWriter(raw)
            w.write(OutHeader(len: UInt32(length), error: FUSENotifyCode.invalEntry.rawValue, unique: 0))
            w.write(NotifyInvalEntryOut(parent: parent.rawValue, namelen: UInt32(name.count)))
            w.bytes(name)
        }
        try send(message)
    }

    /// Drops cached attributes and the page-cache range [offset, offset+length)
    /// of `node` (FUSE_NOTIFY_INVAL_INODE). offset -1 invalidates attributes only; length 0 means to end of file.
    public func invalidateInode(_ node: NodeID, offset: Int64 = 0, length: Int64 = 0) throws(Errno) {
        var message = [UInt8](repeating: 0, count: OutHeader.wireSize + NotifyInvalInodeOut.wireSize)
        let length32 = UInt32(message.count)
        message.withUnsafeMutableBytes { raw in
            var w = WireWriter(raw)
            w.write(OutHeader(len: length32, error: FUSENotifyCode.invalInode.rawValue, unique: 0))
            w.write(NotifyInvalInodeOut(ino: node.rawValue, off: offset, len: length))
        }
        try send(message)
    }

    /// Tells the kernel `name` in `parent` (node `child`) was deleted (FUSE_NOTIFY_DELETE).
    public func notifyDelete(parent: NodeID, child: NodeID, name: [UInt8]) throws(Errno) {
        var message = [UInt8](repeating: 0, count: OutHeader.wireSize + NotifyDeleteOut.wireSize + name.count + 1)
        let length = message.count
        message.withUnsafeMutableBytes { raw in
            var w = WireWriter(raw)
            w.write(OutHeader(len: UInt32(length), error: FUSENotifyCode.delete.rawValue, unique: 0))
            w.write(NotifyDeleteOut(parent: parent.rawValue, child: child.rawValue, namelen: UInt32(name.count)))
            w.bytes(name)
        }
        try send(message)
    }

    private func send(_ message: [UInt8]) throws(Errno) {
        guard let sink else { throw .notImplemented }
        var failure: Errno?
        message.withUnsafeBytes { raw in
            do throws(Errno) { try sink.send(raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }
}
