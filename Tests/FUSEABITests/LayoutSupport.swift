import FUSEABI
import Testing

/// One field of a kernel struct: its name in include/uapi/linux/fuse.h, its
/// byte offset and width there, and how to read it from the Swift value.
struct Field<T> {
    let name: String
    let offset: Int
    let width: Int
    /// The width of the Swift property; must equal `width`.
    let swiftWidth: Int
    let get: (T) -> UInt64

    static func u16<V: FixedWidthInteger>(_ name: String, _ offset: Int, _ path: KeyPath<T, V>) -> Field {
        field(name, offset, 2, path)
    }
    static func u32<V: FixedWidthInteger>(_ name: String, _ offset: Int, _ path: KeyPath<T, V>) -> Field {
        field(name, offset, 4, path)
    }
    static func u64<V: FixedWidthInteger>(_ name: String, _ offset: Int, _ path: KeyPath<T, V>) -> Field {
        field(name, offset, 8, path)
    }

    private static func field<V: FixedWidthInteger>(_ name: String, _ offset: Int, _ width: Int, _ path: KeyPath<T, V>) -> Field {
        Field(name: name, offset: offset, width: width, swiftWidth: MemoryLayout<V>.size) {
            // Signed fields: compare the bit pattern of the field's own width.
            UInt64(truncatingIfNeeded: $0[keyPath: path]) & mask(width)
        }
    }

    /// The fields of a nested struct (`fuse_entry_out.attr`, `fuse_statx.atime`, ...).
    static func nested<N>(_ name: String, _ offset: Int, _ path: KeyPath<T, N>, _ inner: [Field<N>]) -> [Field] {
        inner.map { field in
            Field(name: "\(name).\(field.name)", offset: offset + field.offset, width: field.width,
                  swiftWidth: field.swiftWidth) { field.get($0[keyPath: path]) }
        }
    }
}

func mask(_ width: Int) -> UInt64 { width == 8 ? .max : (1 << UInt64(width * 8)) - 1 }

/// A kernel struct's layout: its `sizeof`, every named field, and the byte
/// ranges the kernel reserves (`unused[]`, `spare[]`) that Swift skips.
struct Layout<T: WireStruct & Equatable> {
    let kernelName: String
    let size: Int
    let fields: [Field<T>]
    var reserved: [Range<Int>] = []
}

/// Distinct, nonzero bytes: field `k`'s value never equals a neighbour's, so
/// a field read from the wrong offset shows up as a wrong value.
private func distinctiveBytes(count: Int) -> [UInt8] {
    (0 ..< count).map { UInt8($0 % 251 + 1) }
}

/// Pins `T` to the kernel layout:
/// (a) `wireSize` is the kernel's sizeof and the fields tile the struct exactly;
/// (b) bytes placed at each kernel offset decode into the right field, and
///     encoding puts them back at that offset (reserved bytes encode as zero and
///     are ignored on decode);
/// (c) decode(encode(x)) == x, and one byte short throws `.truncated`.
func checkLayout<T: WireStruct & Equatable>(_ layout: Layout<T>, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let name = layout.kernelName
    // The spec itself must cover every byte once.
    var owner = [String?](repeating: nil, count: layout.size)
    let spans = layout.fields.map { ($0.name, $0.offset ..< $0.offset + $0.width) } + layout.reserved.map { ("reserved", $0) }
    for (fieldName, span) in spans {
        #expect(span.upperBound <= layout.size, "\(name).\(fieldName) ends past sizeof", sourceLocation: sourceLocation)
        for byte in span where byte < layout.size {
            #expect(owner[byte] == nil, "\(name): byte \(byte) in both \(owner[byte] ?? "") and \(fieldName)", sourceLocation: sourceLocation)
            owner[byte] = fieldName
        }
    }
    #expect(!owner.contains(nil), "\(name): bytes \(owner.indices.filter { owner[$0] == nil }) belong to no field", sourceLocation: sourceLocation)
    for field in layout.fields {
        #expect(field.swiftWidth == field.width, "\(name).\(field.name) is \(field.width) bytes in the kernel, \(field.swiftWidth) in Swift", sourceLocation: sourceLocation)
    }

    // With the wrong size the codec would trap on its own length assertions.
    try #require(T.wireSize == layout.size, "\(T.self).wireSize vs sizeof(struct \(name))", sourceLocation: sourceLocation)

    // Kernel-layout bytes with a distinctive value in every field.
    var kernelBytes = [UInt8](repeating: 0, count: layout.size)
    let pattern = distinctiveBytes(count: layout.size)
    var expected: [UInt64] = []
    var next = 0
    for field in layout.fields {
        var value: UInt64 = 0
        for i in 0 ..< field.width {
            let byte = pattern[next]
            next += 1
            kernelBytes[field.offset + i] = byte
            value |= UInt64(byte) << UInt64(8 * i)
        }
        expected.append(value)
    }

    let decoded = try T(wireBytes: kernelBytes)
    for (field, value) in zip(layout.fields, expected) {
        let got = field.get(decoded)
        #expect(got == value, "\(name).\(field.name) at \(field.offset): decoded 0x\(String(got, radix: 16)), kernel bytes hold 0x\(String(value, radix: 16))", sourceLocation: sourceLocation)
    }
    let encoded = decoded.wireBytes
    #expect(encoded.count == layout.size, sourceLocation: sourceLocation)
    for field in layout.fields where field.offset + field.width <= encoded.count {
        let span = field.offset ..< field.offset + field.width
        #expect(Array(encoded[span]) == Array(kernelBytes[span]), "\(name).\(field.name) encoded at the wrong place", sourceLocation: sourceLocation)
    }
    for span in layout.reserved where span.upperBound <= encoded.count {
        #expect(encoded[span].allSatisfy { $0 == 0 }, "\(name): reserved bytes \(span) not zero", sourceLocation: sourceLocation)
    }
    #expect(try T(wireBytes: encoded) == decoded, "\(name): decode(encode(x)) != x", sourceLocation: sourceLocation)

    // Garbage in reserved bytes does not leak into any field.
    if !layout.reserved.isEmpty {
        var dirty = kernelBytes
        for span in layout.reserved { for byte in span { dirty[byte] = 0xEE } }
        #expect(try T(wireBytes: dirty) == decoded, "\(name): reserved bytes changed the decoded value", sourceLocation: sourceLocation)
    }

    #expect(throws: WireError.truncated, "\(name) decoded from \(layout.size - 1) bytes", sourceLocation: sourceLocation) {
        _ = try T(wireBytes: Array(kernelBytes.dropLast()))
    }
}
