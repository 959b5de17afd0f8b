import CLinux
import FUSEABI
import Glibc
import HostSystem

/// One vhost-user message: a 12-byte header {request, flags, size}, `size`
/// payload bytes, and descriptors passed with SCM_RIGHTS.
public struct VhostMessage: ~Copyable {
    public var request: UInt32
    public var flags: UInt32
    public var payload: [UInt8]
    /// Received descriptors, owned by the message until taken.
    public var fds: [Int32]

    public init(request: UInt32, flags: UInt32, payload: [UInt8], fds: [Int32] = []) {
        self.request = request; self.flags = flags; self.payload = payload; self.fds = fds
    }

    /// Takes descriptor `index`, leaving -1 so deinit does not close it.
    public mutating func takeFD(_ index: Int = 0) -> Int32? {
        guard index < fds.count, fds[index] >= 0 else { return nil }
        defer { fds[index] = -1 }
        return fds[index]
    }

    deinit { for fd in fds where fd >= 0 { Syscall.close(fd) } }

    public var needsReply: Bool { flags & VhostUser.needReplyFlag != 0 }

    /// Reads the payload with the FUSE wire reader's bounds checks.
    public func withReader<R>(_ body: (inout WireReader) throws(WireError) -> R) throws(WireError) -> R {
        let result: Result<R, WireError> = payload.withUnsafeBytes { raw in
            var reader = WireReader(raw)
            do throws(WireError) { return .success(try body(&reader)) } catch { return .failure(error) }
        }
        return try result.get()
    }
}

/// Why a connection ends.
public enum VhostError: Error, CustomStringConvertible, Equatable {
    case disconnected
    case protocolViolation(String)
    case system(Errno)

    public var description: String {
        switch self {
        case .disconnected: "the peer disconnected"
        case .protocolViolation(let reason): "protocol violation: \(reason)"
        case .system(let errno): "\(errno)"
        }
    }
}

/// Reads and writes whole vhost-user messages on a Unix stream socket.
public struct MessageSocket: Sendable {
    public let fd: Int32

    public init(fd: Int32) { self.fd = fd }

    /// The next message; throws `.disconnected` at end of stream.
    public func receive() throws(VhostError) -> VhostMessage {
        var header = [UInt8](repeating: 0, count: VhostUser.headerSize)
        var fds = [Int32](repeating: -1, count: 8)
        var count: Int32 = 0
        let received = header.withUnsafeMutableBytes { raw in
            daxfs_recv_with_fds(fd, raw.baseAddress, raw.count, &fds, 8, &count)
        }
        let taken = Array(fds.prefix(Int(max(count, 0))))
        var message = VhostMessage(request: 0, flags: 0, payload: [], fds: taken)
        if received < 0 {
            let error = Errno(daxfs_errno())
            if error == .interrupted { return try receive() }
            throw error == Errno(ECONNRESET) ? .disconnected : .system(error)
        }
        if received == 0 { throw .disconnected }
        if received < VhostUser.headerSize {
            try readExactly(into: &header, from: Int(received))
        }
        let request = header.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt32.self).littleEndian }
        let flags = header.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian }
        let size = header.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian }
        guard flags & VhostUser.versionMask == VhostUser.version else {
            throw .protocolViolation("message version \(flags & VhostUser.versionMask), expected 1")
        }
        guard size <= VhostUser.maxPayload else {
            throw .protocolViolation("payload of \(size) bytes (request \(request)) exceeds \(VhostUser.maxPayload)")
        }
        message.request = request
        message.flags = flags
        var payload = [UInt8](repeating: 0, count: Int(size))
        try readExactly(into: &payload, from: 0)
        message.payload = payload
        return message
    }

    private func readExactly(into buffer: inout [UInt8], from start: Int) throws(VhostError) {
        var done = start
        while done < buffer.count {
            let result = buffer.withUnsafeMutableBytes { raw in Glibc.recv(fd, raw.baseAddress! + done, raw.count - done, 0) }
            if result < 0 {
                let error = Errno(daxfs_errno())
                if error == .interrupted { continue }
                throw .system(error)
            }
            if result == 0 { throw .disconnected }
            done += result
        }
    }

    /// Polls without sleeping until a message arrives or `nanoseconds` pass.
    public func spinUntilReadable(nanoseconds: UInt64) {
        let start = monotonicNanoseconds()
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            descriptor.revents = 0
            if poll(&descriptor, 1, 0) != 0 { return }
            if monotonicNanoseconds() &- start >= nanoseconds { return }
        }
    }

    /// Sends one message with optional descriptors.
    public func send(request: UInt32, flags: UInt32, payload: [UInt8], fds: [Int32] = []) throws(VhostError) {
        var bytes = [UInt8]()
        bytes.reserveCapacity(VhostUser.headerSize + payload.count)
        for value in [request, flags, UInt32(payload.count)] {
            withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
        }
        bytes.append(contentsOf: payload)
        var sent = 0
        while sent < bytes.count {
            let result = bytes.withUnsafeBytes { raw in
                sent == 0
                    ? daxfs_send_with_fds(fd, raw.baseAddress, raw.count, fds, Int32(fds.count))
                    : daxfs_send_with_fds(fd, raw.baseAddress! + sent, raw.count - sent, nil, 0)
            }
            if result < 0 {
                let error = Errno(daxfs_errno())
                if error == .interrupted { continue }
                throw error == Errno(EPIPE) || error == Errno(ECONNRESET) ? .disconnected : .system(error)
            }
            sent += result
        }
    }

    /// Replies to `message` with `payload`.
    public func reply(to message: borrowing VhostMessage, payload: [UInt8]) throws(VhostError) {
        try send(request: message.request, flags: VhostUser.version | VhostUser.replyFlag, payload: payload)
    }
}

extension Array where Element == UInt8 {
    /// Little-endian encoding of integers, for vhost-user payloads.
    public static func le<T: FixedWidthInteger>(_ values: T...) -> [UInt8] {
        var out: [UInt8] = []
        for value in values { Swift.withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) } }
        return out
    }
}
