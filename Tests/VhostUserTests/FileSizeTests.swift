import DaxClient
import DAX
import FUSEServer
import Foundation
import Glibc
import HostSystem
import Testing
@testable import VhostUser

/// A file that shrinks under a DAX mapping: QEMU dies of SIGBUS on a page
/// past the end of a file it maps, so the backend takes those pages out of
/// the frontend's window when it sees the file shrink (a host truncation,
/// through inotify), and gives them back when the file grows again. Here the
/// frontend is the daxfs client with a window that takes the backend's
/// changes as QEMU's does (not guarded).
@Suite(.serialized) struct FileSizeTests {
    static let page = UInt64(HostPage.size)

    func mappedBytes(_ window: LocalWindow) -> UInt64 {
        var count: UInt64 = 0
        var offset: UInt64 = 0
        while offset < window.windowSize {
            if window.isMapped(offset: offset, length: Self.page, writable: false) { count += Self.page }
            offset += Self.page
        }
        return count
    }

    func waitFor(_ what: () -> Bool) -> Bool {
        for _ in 0 ..< 200 { if what() { return true }; usleep(10_000) }
        return what()
    }

    /// Writes `content` (4 MiB) to `path` on the host, connects a client with
    /// a window that takes the backend's changes, and reads at 0 and 3 MiB so
    /// that two 2 MiB ranges are mapped; nil (an issue recorded) without a window.
    func mapTwoRanges(of path: String, _ content: [UInt8], _ fixture: BackendFixture) throws -> (ConnectedClient, LocalWindow, DaxFile)? {
        writeHost(path, content)
        let connected = try connectClient(fixture.socketPath, guarded: false) { $0.backgroundReclaim = false }
        guard let window = connected.window else { Issue.record("no window"); return nil }
        let file = try connected.client.open("data")
        #expect(try file.read(count: 4096, at: 0) == Array(content[0 ..< 4096]))
        #expect(try file.read(count: 4096, at: 3 << 20) == Array(content[3 << 20 ..< (3 << 20) + 4096]))
        #expect(mappedBytes(window) == 4 << 20)
        return (connected, window, file)
    }

    @Test func hostTruncationTakesPagesPastTheEndOutOfTheWindow() throws {
        var options = FSBackendOptions()
        options.cacheSize = 16 << 20
        let fixture = try BackendFixture(options: options)
        defer { fixture.stop() }
        let path = fixture.share + "/data"
        let content = pattern(4 << 20, seed: 9)
        guard let (connected, window, file) = try mapTwoRanges(of: path, content, fixture) else { return }
        defer { _ = connected }

        // Host truncation to 1 MiB + 100: the first range keeps its pages up
        // to the new end (rounded up to a page), the second goes entirely.
        #expect(truncate(path, off_t((1 << 20) + 100)) == 0)
        #expect(waitFor { mappedBytes(window) == (1 << 20) + Self.page }, "mapped: \(mappedBytes(window))")

        // The file grows back: both ranges are whole again and show the host's bytes.
        writeHost(path, Array(content[((1 << 20) + 100)...]), at: (1 << 20) + 100)
        #expect(waitFor { mappedBytes(window) == 4 << 20 }, "mapped: \(mappedBytes(window))")
        #expect(try file.read(count: 4096, at: 3 << 20) == Array(content[3 << 20 ..< (3 << 20) + 4096]))
        try file.close()
    }

    /// With pre-content events (Linux ≥ 6.14 on ext4, xfs, btrfs) a host
    /// truncation waits for the backend: when truncate(2) returns, the pages
    /// past the new end have already left the window, so no frontend can
    /// touch one in between (QEMU would die of SIGBUS). The same for an open
    /// with O_TRUNC, which raises only FAN_OPEN_PERM.
    @Test func hostTruncationWaitsUntilItsPagesLeftTheWindow() throws {
        var options = FSBackendOptions()
        options.cacheSize = 16 << 20
        let fixture = try BackendFixture(options: options)
        defer { fixture.stop() }
        if let why = TruncationGuard.unavailable(in: fixture.share) {
            print("skipped: host truncations cannot be held here: \(why)")
            return
        }
        let path = fixture.share + "/data"
        let content = pattern(4 << 20, seed: 11)
        guard let (connected, window, file) = try mapTwoRanges(of: path, content, fixture) else { return }
        defer { _ = connected }

        // No waiting here: truncate(2) returned, so the pages are gone.
        #expect(truncate(path, off_t((1 << 20) + 100)) == 0)
        #expect(mappedBytes(window) == (1 << 20) + Self.page)

        writeHost(path, Array(content[((1 << 20) + 100)...]), at: (1 << 20) + 100)
        #expect(waitFor { mappedBytes(window) == 4 << 20 }, "mapped: \(mappedBytes(window))")

        // An open with O_TRUNC empties the file: nothing of it stays mapped.
        let emptied = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)
        #expect(emptied >= 0)
        #expect(mappedBytes(window) == 0)
        close(emptied)

        // A host reader that opens the file now (its reads ask the guard) reads it.
        writeHost(path, content)
        #expect(waitFor { mappedBytes(window) == 4 << 20 }, "mapped: \(mappedBytes(window))")
        #expect(readHost(path, count: content.count) == content)
        #expect(try file.read(count: 4096, at: 3 << 20) == Array(content[3 << 20 ..< (3 << 20) + 4096]))
        try file.close()
    }
}
