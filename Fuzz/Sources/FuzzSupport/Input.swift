import Glibc

/// A cursor over one fuzz input. Reads past the end give zeros and empty
/// slices, so every input decodes to some sequence of actions.
public struct FuzzInput {
    public let bytes: UnsafeRawBufferPointer
    public private(set) var position = 0

    public init(_ data: UnsafePointer<UInt8>?, _ size: Int) {
        bytes = data.map { UnsafeRawBufferPointer(start: $0, count: size) } ?? UnsafeRawBufferPointer(start: nil, count: 0)
    }

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var remaining: Int { bytes.count - position }
    public var isEmpty: Bool { remaining <= 0 }

    public mutating func u8() -> UInt8 { integer() }
    public mutating func u16() -> UInt16 { integer() }
    public mutating func u32() -> UInt32 { integer() }
    public mutating func u64() -> UInt64 { integer() }
    public mutating func bool() -> Bool { u8() & 1 != 0 }

    /// A little-endian integer; missing bytes are zero.
    public mutating func integer<T: FixedWidthInteger>() -> T {
        var value: T = 0
        for index in 0 ..< MemoryLayout<T>.size where position < bytes.count {
            value |= T(truncatingIfNeeded: bytes[position]) << (8 * index)
            position += 1
        }
        return value
    }

    /// Up to `count` bytes (fewer at the end of the input), without copying.
    public mutating func take(_ count: Int) -> UnsafeRawBufferPointer {
        let count = max(0, min(count, remaining))
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: bytes[position ..< position + count])
    }

    /// Everything not yet read.
    public mutating func rest() -> UnsafeRawBufferPointer { take(remaining) }
}

/// Appends little-endian integers, for building messages and seeds.
public struct ByteWriter {
    public var bytes: [UInt8] = []
    public init() {}
    public mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
    public mutating func append(_ data: [UInt8]) { bytes += data }
}

/// Stops the process with a message: an oracle of a target found a broken
/// promise. libFuzzer sees a crash and saves the input.
public func fuzzFailure(_ message: String, file: StaticString = #fileID, line: UInt = #line) -> Never {
    fatalError("fuzz oracle: \(message)", file: file, line: line)
}
