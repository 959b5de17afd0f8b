import FUSEABI
import Testing

/// Runs `body` on a reader over the first `visible` bytes of `bytes`; the rest
/// stay in memory right after the buffer, so a reader that ran past its end
/// would see them instead of failing.
@discardableResult
private func withReader<R>(_ bytes: [UInt8], visible: Int? = nil, _ body: (inout WireReader) throws -> R) throws -> R {
    try bytes.withUnsafeBytes { raw in
        var reader = WireReader(UnsafeRawBufferPointer(rebasing: raw[..<(visible ?? raw.count)]))
        return try body(&reader)
    }
}

@Test func readsLittleEndian() throws {
    let bytes: [UInt8] = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0xff, 0xff, 0xff, 0xff, 0x34, 0x12, 0x9a]
    try withReader(bytes) { (r: inout WireReader) throws in
        #expect(try r.u64() == 0x0807_0605_0403_0201)
        #expect(try r.i32() == -1)
        #expect(try r.u16() == 0x1234)
        #expect(try r.u8() == 0x9a)
        #expect(r.remaining == 0)
    }
}

@Test(arguments: [1, 2, 4, 8])
func truncatedIntegerThrowsAndDoesNotMove(width: Int) throws {
    // `width - 1` visible bytes, then a byte the reader must not touch.
    let bytes = [UInt8](repeating: 0xAB, count: width)
    try withReader(bytes, visible: width - 1) { (r: inout WireReader) throws in
        #expect(throws: WireError.truncated) {
            switch width {
            case 1: _ = try r.u8()
            case 2: _ = try r.u16()
            case 4: _ = try r.u32()
            default: _ = try r.u64()
            }
        }
        #expect(r.position == 0)
        #expect(r.remaining == width - 1)
    }
}

@Test func skipAndBytesStayInside() throws {
    try withReader([1, 2, 3, 4, 5, 6, 7, 8], visible: 4) { (r: inout WireReader) throws in
        #expect(throws: WireError.truncated) { try r.skip(5) }
        #expect(throws: WireError.truncated) { try r.skip(-1) }
        #expect(throws: WireError.truncated) { _ = try r.bytes(5) }
        #expect(throws: WireError.truncated) { _ = try r.bytes(-1) }
        #expect(r.position == 0)
        try r.skip(1)
        #expect(Array(try r.bytes(2)) == [2, 3])
        #expect(Array(r.rest()) == [4])
        #expect(r.remaining == 0)
        #expect(Array(r.rest()).isEmpty)
        #expect(throws: WireError.truncated) { _ = try r.u8() }
    }
}

@Test func cStringNeedsATerminatorInsideTheBuffer() throws {
    // "ab" then the NUL just past the visible end: the name is unterminated.
    try withReader([0x61, 0x62, 0x00], visible: 2) { (r: inout WireReader) throws in
        #expect(throws: WireError.unterminatedString) { _ = try r.cString() }
        #expect(r.position == 0)
    }
    try withReader([]) { (r: inout WireReader) throws in
        #expect(throws: WireError.unterminatedString) { _ = try r.cString() }
    }
    try withReader([0x61, 0x62, 0x00, 0x00, 0x63, 0x00, 0x64]) { (r: inout WireReader) throws in
        #expect(Array(try r.cString()) == [0x61, 0x62])
        #expect(r.position == 3)
        #expect(Array(try r.cString()).isEmpty)  // an empty name is the caller's to reject
        #expect(Array(try r.cString()) == [0x63])
        #expect(throws: WireError.unterminatedString) { _ = try r.cString() }
        #expect(r.position == 6)
    }
}

@Test func readStructChecksLengthFirst() throws {
    try withReader([UInt8](repeating: 7, count: 40), visible: 39) { (r: inout WireReader) throws in
        #expect(throws: WireError.truncated) { _ = try r.read(InHeader.self) }
        #expect(r.position == 0)
        #expect(try r.read(OutHeader.self).len == 0x0707_0707)
        #expect(r.position == 16)
    }
}

@Test func messageReadsHeaderThenArgumentThenName() throws {
    // A LOOKUP-shaped message: in_header, then "name\0".
    let header = InHeader(len: 45, opcode: FUSEOpcode.lookup.rawValue, unique: 9, nodeid: 1, uid: 1, gid: 2, pid: 3)
    let message = header.wireBytes + Array("name".utf8) + [0]
    try withReader(message) { (r: inout WireReader) throws in
        #expect(try r.read(InHeader.self) == header)
        #expect(String(decoding: try r.cString(), as: UTF8.self) == "name")
        #expect(r.remaining == 0)
    }
}

// MARK: - INIT: two sizes

@Test func initInDecodesTheCompatForm() throws {
    // Kernels before 7.36 send 16 bytes: major, minor, max_readahead, flags.
    let compat: [UInt8] = [7, 0, 0, 0, 31, 0, 0, 0, 0, 0, 2, 0, 0x01, 0x00, 0x00, 0x40]
    let value = try withReader(compat) { (r: inout WireReader) throws in
        let value = try InitIn.decodeAny(&r)
        #expect(r.remaining == 0)
        return value
    }
    #expect(value == InitIn(major: 7, minor: 31, maxReadahead: 0x20000, flags: 0x4000_0001, flags2: 0))
}

@Test func initInDecodesTheFullForm() throws {
    let full = InitIn(major: 7, minor: 45, maxReadahead: 0x20000,
                      flags: InitFlags([.initExt, .mapAlignment]).low,
                      flags2: InitFlags([.passthrough, .hasInodeDAX]).high)
    var bytes = full.wireBytes
    #expect(bytes.count == 64)
    #expect(Array(bytes[16 ..< 20]) == [0x22, 0, 0, 0])  // flags2 at 16
    bytes += [0xEE, 0xEE]  // trailing bytes are not INIT's
    let value = try withReader(bytes) { (r: inout WireReader) throws in
        let value = try InitIn.decodeAny(&r)
        #expect(r.position == 64)
        return value
    }
    #expect(value == full)
}

@Test(arguments: [0, 8, 15])
func initInShorterThanCompatThrows(count: Int) throws {
    try withReader([UInt8](repeating: 1, count: 16), visible: count) { (r: inout WireReader) throws in
        #expect(throws: WireError.truncated) { _ = try InitIn.decodeAny(&r) }
    }
}

@Test func initInBetweenTheTwoFormsReadsTheCompatPart() throws {
    // 16 ≤ length < 64: the 16-byte form; flags2 is not trusted.
    let bytes = InitIn(major: 7, minor: 40, maxReadahead: 1, flags: 2, flags2: 3).wireBytes
    let value = try withReader(bytes, visible: 40) { r in try InitIn.decodeAny(&r) }
    #expect(value == InitIn(major: 7, minor: 40, maxReadahead: 1, flags: 2, flags2: 0))
}

// MARK: - Writer

@Test func writerAlignsAndSeeks() {
    var out = [UInt8](repeating: 0xCC, count: 32)
    out.withUnsafeMutableBytes { raw in
        var w = WireWriter(raw)
        w.u8(1)
        w.align(to: 8)
        #expect(w.position == 8)
        w.align(to: 8)
        #expect(w.position == 8)
        w.bytes([UInt8]([9, 9, 9]))
        w.zeros(2)
        w.seek(to: 24)
        w.u64(0x0102_0304_0506_0708)
        #expect(w.remaining == 0)
    }
    #expect(out == [1, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 0, 0] + [UInt8](repeating: 0xCC, count: 11) + [8, 7, 6, 5, 4, 3, 2, 1])
}

@Test func direntNameIsPaddedToEightBytes() {
    // A READDIR entry for "abc": 24-byte header, name, pad to 32.
    var out = [UInt8](repeating: 0xCC, count: 32)
    out.withUnsafeMutableBytes { raw in
        var w = WireWriter(raw)
        w.write(DirentHeader(ino: 5, off: 1, namelen: 3, type: 8))
        w.bytes(Array("abc".utf8))
        w.align(to: 8)
        #expect(w.position == 32)
    }
    #expect(Array(out[24 ..< 32]) == [0x61, 0x62, 0x63, 0, 0, 0, 0, 0])
}
