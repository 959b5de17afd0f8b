/// Reads little-endian integers from untrusted bytes. Every read checks the
/// bounds first; running past the end throws `WireError.truncated`.
public struct WireReader {
    public let bytes: UnsafeRawBufferPointer
    public private(set) var position: Int = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var remaining: Int { bytes.count - position }

    @inline(__always)
    mutating func load<T: FixedWidthInteger>(_: T.Type) throws(WireError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw .truncated }
        let value = bytes.loadUnaligned(fromByteOffset: position, as: T.self)
        position += size
        return T(littleEndian: value)
    }

    public mutating func u8() throws(WireError) -> UInt8 { try load(UInt8.self) }
    public mutating func u16() throws(WireError) -> UInt16 { try load(UInt16.self) }
    public mutating func u32() throws(WireError) -> UInt32 { try load(UInt32.self) }
    public mutating func i32() throws(WireError) -> Int32 { try load(Int32.self) }
    public mutating func u64() throws(WireError) -> UInt64 { try load(UInt64.self) }
    public mutating func i64() throws(WireError) -> Int64 { try load(Int64.self) }

    public mutating func skip(_ count: Int) throws(WireError) {
        guard count >= 0, remaining >= count else { throw .truncated }
        position += count
    }

    /// The next `count` bytes, without copying.
    public mutating func bytes(_ count: Int) throws(WireError) -> UnsafeRawBufferPointer {
        guard count >= 0, remaining >= count else { throw .truncated }
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: bytes[position ..< position + count])
    }

    /// Everything not yet read.
    public mutating func rest() -> UnsafeRawBufferPointer {
        defer { position = bytes.count }
        return UnsafeRawBufferPointer(rebasing: bytes[position...])
    }

    /// A NUL-terminated name: the bytes before the first NUL, which must lie
    /// inside the buffer. The reader moves past the NUL.
    public mutating func cString() throws(WireError) -> UnsafeRawBufferPointer {
        let rest = UnsafeRawBufferPointer(rebasing: bytes[position...])
        guard let nul = rest.firstIndex(of: 0) else { throw .unterminatedString }
        defer { position += nul + 1 }
        return UnsafeRawBufferPointer(rebasing: rest[..<nul])
    }

    /// Decodes one wire struct.
    public mutating func read<T: WireStruct>(_: T.Type) throws(WireError) -> T {
        guard remaining >= T.wireSize else { throw .truncated }
        let start = position
        let value = try T(from: &self)
        assert(position - start == T.wireSize, "\(T.self) decoded \(position - start) of \(T.wireSize) bytes")
        return value
    }
}

/// Why a message could not be decoded.
public enum WireError: Error, Equatable, Sendable {
    case truncated
    case unterminatedString
    case badLength
}

/// Writes little-endian integers into a buffer the server owns. Overrunning
/// it is a server bug, so it traps instead of throwing.
public struct WireWriter {
    public let buffer: UnsafeMutableRawBufferPointer
    public private(set) var position: Int

    public init(_ buffer: UnsafeMutableRawBufferPointer, position: Int = 0) {
        self.buffer = buffer
        self.position = position
    }

    public var remaining: Int { buffer.count - position }

    @inline(__always)
    mutating func store<T: FixedWidthInteger>(_ value: T) {
        let size = MemoryLayout<T>.size
        precondition(remaining >= size, "reply buffer overrun")
        buffer.storeBytes(of: value.littleEndian, toByteOffset: position, as: T.self)
        position += size
    }

    public mutating func u8(_ value: UInt8) { store(value) }
    public mutating func u16(_ value: UInt16) { store(value) }
    public mutating func u32(_ value: UInt32) { store(value) }
    public mutating func i32(_ value: Int32) { store(value) }
    public mutating func u64(_ value: UInt64) { store(value) }
    public mutating func i64(_ value: Int64) { store(value) }

    public mutating func zeros(_ count: Int) {
        precondition(count >= 0 && remaining >= count, "reply buffer overrun")
        if count > 0 { (buffer.baseAddress! + position).initializeMemory(as: UInt8.self, repeating: 0, count: count) }
        position += count
    }

    public mutating func bytes(_ data: UnsafeRawBufferPointer) {
        precondition(remaining >= data.count, "reply buffer overrun")
        if data.count > 0 { (buffer.baseAddress! + position).copyMemory(from: data.baseAddress!, byteCount: data.count) }
        position += data.count
    }

    public mutating func bytes<C: Collection>(_ data: C) where C.Element == UInt8 {
        precondition(remaining >= data.count, "reply buffer overrun")
        for byte in data { store(byte) }
    }

    /// Pads with zeros up to the next multiple of `alignment`.
    public mutating func align(to alignment: Int) {
        let pad = (alignment - position % alignment) % alignment
        zeros(pad)
    }

    public mutating func write<T: WireStruct>(_ value: T) {
        let start = position
        value.encode(to: &self)
        assert(position - start == T.wireSize, "\(T.self) encoded \(position - start) of \(T.wireSize) bytes")
    }

    /// Moves the write position (to fill a header after the body).
    public mutating func seek(to offset: Int) {
        precondition(offset >= 0 && offset <= buffer.count)
        position = offset
    }
}

/// A fixed-size FUSE wire struct with its exact layout.
public protocol WireStruct: Sendable {
    static var wireSize: Int { get }
    init(from reader: inout WireReader) throws(WireError)
    func encode(to writer: inout WireWriter)
}

extension WireStruct {
    /// Encodes into a fresh byte array (tests, notifications).
    public var wireBytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.wireSize)
        out.withUnsafeMutableBytes { raw in
            var writer = WireWriter(raw)
            writer.write(self)
        }
        return out
    }

    /// Decodes from the start of `bytes`.
    public init(wireBytes bytes: [UInt8]) throws(WireError) {
        var result: Result<Self, WireError> = .failure(.truncated)
        bytes.withUnsafeBytes { raw in
            var reader = WireReader(raw)
            do throws(WireError) { result = .success(try reader.read(Self.self)) } catch { result = .failure(error) }
        }
        self = try result.get()
    }
}
