import DaxClient
import Foundation
import Glibc
import MappingShadow
import HostSystem
import Synchronization
import Testing
import VhostUser

/// QEMU 11.1 turns every DAX mapping into a memory-table change of the
/// vhost device (ADD_MEM_REG/REM_MEM_REG on the main socket) and waits for
/// its answer. The backend's control thread must answer while queue threads
/// wait for their SHMEM replies: here the frontend holds every SHMEM reply
/// back until its memory-table change has been answered, and two readers
/// with a window smaller than their files keep mapping and reclaiming.
@Suite(.serialized) struct MemoryTableTests {
    @Test(arguments: [0, 2])
    func shmemRepliesWaitForMemoryTableChanges(threadPoolSize: Int) throws {
        var options = FSBackendOptions()
        options.cacheSize = 8 << 20  // 4 ranges for 2 files of 8 MiB each
        options.threadPoolSize = threadPoolSize
        // As `daxfs serve` runs with QEMU: read-write descriptors, which the
        // backend's ADD_MEM_REG maps read-write.
        guard getuid() == 0, let shadow = try? MappingShadow() else { print("skipped: the mapping shadow needs root and /dev/fuse"); return }
        options.mappableFiles = shadow
        let fixture = try BackendFixture(options: options)
        // Stopped only when the backend is not stuck (joining it would hang the suite).
        var healthy = false
        defer { if healthy { fixture.stop() } }
        for name in ["a", "b"] { writeHost(fixture.share + "/" + name, pattern(8 << 20, seed: name == "a" ? 1 : 2)) }

        let connected = try connectClient(fixture.socketPath, mirrorMappings: true) { $0.backgroundReclaim = false }
        let client = connected.client
        #expect(client.usesWindow)
        let failures = Mutex<[String]>([])
        let finished = Atomic<Int>(0)
        var readers: [OSThread] = []
        for (index, name) in ["a", "b"].enumerated() {
            readers.append(try OSThread(name: "reader-\(name)") {
                defer { finished.add(1, ordering: .releasing) }
                do throws(Errno) {
                    let file = try client.open(name)
                    let expected = pattern(8 << 20, seed: UInt8(index + 1))
                    var rng = SplitMix(seed: UInt64(index + 7))
                    for _ in 0 ..< 200 {
                        let offset = Int(rng.next() % UInt64((8 << 20) - 4096))
                        let got = try file.read(count: 4096, at: UInt64(offset))
                        if got != Array(expected[offset ..< offset + 4096]) {
                            failures.withLock { $0.append("\(name): wrong bytes at \(offset)") }
                            return
                        }
                    }
                    try file.close()
                } catch {
                    failures.withLock { $0.append("\(name): \(error)") }
                }
            })
        }
        // A deadlock would leave the readers waiting forever: give them a deadline.
        let deadline = Date().addingTimeInterval(60)
        while finished.load(ordering: .acquiring) < readers.count && Date() < deadline { usleep(10_000) }
        let done = finished.load(ordering: .acquiring) == readers.count
        #expect(done, "the readers did not finish in 60 s: the backend deadlocked on a memory-table change")
        guard done else { return }  // joining would hang
        healthy = true
        for reader in readers { reader.join() }
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
        let stats = client.statistics
        #expect(stats.mappingsSetUp > 4, "the window should have been reclaimed and mapped again: \(stats)")
    }
}
