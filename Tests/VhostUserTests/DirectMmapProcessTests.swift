@_spi(Testing) import DaxClient
import DAX
import Foundation
import FUSEServer
import Glibc
import HostSystem
import PassthroughFS
import Synchronization
import Testing
import VhostUser

/// FUSE direct mmap over vhost-user: the region's memfd travels with
/// SHMEM_MAP (shared-memory id 1) into a client in another process.
@Suite(.serialized) struct DirectMmapOverVhostUserTests {
    static let regionSize: UInt64 = 64 << 10

    func makeBackend() throws -> (BackendFixture, RingFiles) {
        var options = FSBackendOptions()
        options.cacheSize = 16 << 20
        options.mmapWindowSize = 16 << 20
        let rings = try RingFiles(regionSize: Self.regionSize)
        let fixture = try BackendFixture(options: options, ringFiles: rings)
        try rings.add(path: fixture.share + "/ring", sharing: .shared)
        try Data("plain file\n".utf8).write(to: URL(fileURLWithPath: fixture.share + "/plain"))
        return (fixture, rings)
    }

    static func waitUntil(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() {
            if Date() > deadline { return false }
            usleep(5_000)
        }
        return true
    }

    @Test func aRegionReachesTheClientThroughShmemMap() throws {
        let (fixture, rings) = try makeBackend()
        defer { fixture.stop() }
        let mmapMade = Locked<LocalWindow?>(nil), daxMade = Locked<LocalWindow?>(nil)
        let frontend = try VhostUserFrontend(socketPath: fixture.socketPath, makeWindow: { size throws(Errno) in
            let window = try LocalWindow(size: size, guarded: true)
            daxMade.withLock { $0 = window }
            return window
        }, makeMmapWindow: { size throws(Errno) in
            let window = try LocalWindow(size: size, guarded: true)
            mmapMade.withLock { $0 = window }
            return window
        })
        let mmapWindow = try #require(mmapMade.withLock { $0 } as LocalWindow?)
        #expect(mmapWindow.windowSize == 16 << 20)
        let client = try DaxClient(channel: try VirtioChannel(frontend: frontend), window: daxMade.withLock { $0 }, mmapWindow: mmapWindow)
        #expect(client.usesDirectMmap)
        let file = try client.open("ring", flags: O_RDWR)
        let mapping = try file.mmap(length: 8192, writable: true)
        guard case .region = mapping.kind else { Issue.record("\(mapping.kind)"); return }
        // The server's writes arrive in this process's memory, and ours in the server's.
        rings.tick()
        let text = String(decoding: UnsafeRawBufferPointer(mapping.bytes).prefix { $0 != 0 }, as: UTF8.self)
        #expect(text.hasPrefix("daxfs ring ring: region") && text.hasSuffix("tick 1\n"), "\(text)")
        mapping.bytes[5000] = 0x42
        let plain = try client.open("plain")
        let fallback = try plain.mmap(length: 4096)
        #expect(fallback.kind == .dax && Array(fallback.bytes.prefix(11)) == Array("plain file\n".utf8))
        try fallback.unmap()
        #expect(rings.mappedRegions == 1)
        try mapping.unmap()
        #expect(rings.mappedRegions == 0 && rings.space.liveRegions == 0)
        // The window range is inaccessible again (a write(2) from it fails with EFAULT).
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        #expect(Glibc.write(fds[1], mapping.pointer, 1) == -1 && errno == EFAULT)
        Glibc.close(fds[0]); Glibc.close(fds[1])
        try file.close(); try plain.close()
        client.shutdown()
    }

    @Test func aKilledClientProcessDropsItsRegions() throws {
        let (fixture, rings) = try makeBackend()
        defer { fixture.stop() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: daxfsBinary())
        process.arguments = ["client", "--socket-path", fixture.socketPath, "mmap-read", "ring", "--watch"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
        #expect(Self.waitUntil { rings.mappedRegions == 1 }, "the client never mapped the ring")
        rings.tick()
        // The counter the server writes shows up in the client's output.
        let reader = output.fileHandleForReading
        var seen = ""
        #expect(Self.waitUntil { seen += String(decoding: reader.availableData, as: UTF8.self); return seen.contains("tick 1") }, "\(seen)")
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        // The backend sees the connection end and drops the mapping: the region is freed.
        #expect(Self.waitUntil { rings.mappedRegions == 0 && rings.space.liveRegions == 0 },
                "regions still alive: \(rings.mappedRegions) mapped, \(rings.space.liveRegions) alive")
    }
}
