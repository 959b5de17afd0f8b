import Glibc
@_spi(Testing) import PassthroughFS
import Testing

/// The fanotify event parser never reads past its buffer, whatever the bytes.
@Suite struct HostWatchParserTests {
    @Test func garbageAndTruncatedEventsDecodeToNothingHarmful() throws {
        var template = Array("/tmp/daxfs-watch-XXXXXX".utf8CString)
        let directory = String(cString: try #require(mkdtemp(&template)))
        defer { rmdir(directory) }
        guard HostWatchParser.changes(in: [], watching: directory) != nil else {
            print("skipped: fanotify needs CAP_SYS_ADMIN")
            return
        }
        // A well-formed header whose lengths lie: longer than the buffer, metadata longer than the event.
        var tooLong = [UInt8](repeating: 0, count: 24)
        tooLong[0] = 200; tooLong[6] = 24
        var metadataTooLong = tooLong
        metadataTooLong[0] = 24; metadataTooLong[6] = 100
        // An info record claiming a handle larger than itself.
        var event = [UInt8](repeating: 0, count: 48)
        event[0] = 48; event[6] = 24
        event[8] = 0x04  // FAN_ATTRIB
        event[20] = 0xFF; event[21] = 0xFF; event[22] = 0xFF; event[23] = 0x7F  // a foreign pid
        event[24] = 1; event[26] = 24  // FID record of 24 bytes
        event[36] = 0xF0  // handle_bytes 240
        #expect(HostWatchParser.changes(in: [tooLong, metadataTooLong, event], watching: directory) == [0, 0, 0])
        // An event whose fd field names one of this process's descriptors: the
        // parser must leave it alone (it once closed it, and other tests' logs vanished).
        let mine = open("/dev/null", O_RDONLY)
        defer { close(mine) }
        var naming = [UInt8](repeating: 0, count: 24)
        naming[0] = 24; naming[6] = 24
        withUnsafeBytes(of: mine.littleEndian) { for (i, byte) in $0.enumerated() { naming[16 + i] = byte } }
        _ = HostWatchParser.changes(in: [naming], watching: directory)
        #expect(fcntl(mine, F_GETFD) != -1, "the parser closed descriptor \(mine)")
        var random = SystemRandomNumberGenerator()
        let garbage = (0 ..< 20_000).map { _ in
            (0 ..< Int.random(in: 0 ... 300, using: &random)).map { _ in UInt8.random(in: 0 ... 255, using: &random) }
        }
        #expect(HostWatchParser.changes(in: garbage, watching: directory)?.count == garbage.count)
    }
}
