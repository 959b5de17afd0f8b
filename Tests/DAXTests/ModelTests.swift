@_spi(Testing) import DaxClient
import Foundation
import Glibc
import HostSystem
import Synchronization
import Testing

/// Random reads, writes, truncates and extends through a 16-range window,
/// checked byte for byte against an in-memory model and, at the end, against
/// the host files. DAX_MODEL_SEED=<n> replays a run.
@Suite("Model-based random operations")
struct ModelTests {
    static let rangeSize: UInt64 = 64 << 10
    static let maxSize = 400 << 10

    /// One thread's files and their expected contents.
    struct Workload {
        let client: DaxClient
        let names: [String]
        var files: [DaxFile]
        var model: [[UInt8]]
        var rng: SeededRandom
        let pool: [UInt8]
        let seed: UInt64
        /// Read-only files every thread may read, with their contents.
        let shared: [(DaxFile, [UInt8])]
        var failures: [String] = []

        mutating func random(_ bound: Int) -> Int { Int(rng.next() % UInt64(max(bound, 1))) }

        mutating func length(small: Int, large: Int) -> Int {
            random(10) < 8 ? 1 + random(small) : 1 + random(large)
        }

        mutating func fail(_ step: Int, _ text: String) {
            failures.append("seed \(seed), step \(step): \(text) (replay with DAX_MODEL_SEED=\(seed))")
        }

        mutating func step(_ step: Int) {
            let i = random(files.count)
            let size = model[i].count
            let op = random(100)
            do {
                switch op {
                case 0 ..< 38:  // read, sometimes across or beyond the end
                    let offset = random(size + 20_000)
                    let count = length(small: 8192, large: 200_000)
                    let got = try files[i].read(count: count, at: UInt64(offset))
                    let expected = offset < size ? Array(model[i][offset ..< min(offset + count, size)]) : []
                    if !equal(got, expected) { fail(step, "read \(names[i]) [\(offset), +\(count)) of \(size): got \(got.count) bytes, differing from the model") }
                case 38 ..< 70:  // write, mostly inside, sometimes extending or leaving a hole
                    let offset = random(10) < 7 ? random(max(size, 1)) : size + random(20_000)
                    let count = min(length(small: 8192, large: 150_000), ModelTests.maxSize - offset)
                    guard count > 0 else { return }
                    let start = random(pool.count - count)
                    let file = files[i]
                    let wrote = try pool.withUnsafeBytes { bytes in
                        Result { () throws(Errno) -> Int in try file.pwrite(UnsafeRawBufferPointer(rebasing: bytes[start ..< start + count]), at: UInt64(offset)) }
                    }.get()
                    if wrote != count { fail(step, "write \(names[i]) [\(offset), +\(count)) wrote \(wrote)") }
                    if offset + count > model[i].count { model[i] += [UInt8](repeating: 0, count: offset + count - model[i].count) }
                    model[i].withUnsafeMutableBytes { target in
                        pool.withUnsafeBytes { source in
                            (target.baseAddress! + offset).copyMemory(from: source.baseAddress! + start, byteCount: count)
                        }
                    }
                case 70 ..< 80:  // truncate or extend with setattr
                    let newSize = random(ModelTests.maxSize)
                    try files[i].truncate(to: UInt64(newSize))
                    if newSize < size { model[i].removeSubrange(newSize...) } else { model[i] += [UInt8](repeating: 0, count: newSize - size) }
                case 80 ..< 86:  // append at the end
                    let count = min(1 + random(20_000), ModelTests.maxSize - size)
                    guard count > 0 else { return }
                    let start = random(pool.count - count)
                    let chunk = Array(pool[start ..< start + count])
                    try files[i].write(chunk, at: UInt64(size))
                    model[i] += chunk
                case 86 ..< 90:  // close and reopen: mappings of the node are removed
                    try files[i].close()
                    files[i] = try client.open(names[i], flags: O_RDWR)
                case 90 ..< 95:  // zero-copy view of one range
                    guard size > 0 else { return }
                    let offset = random(size)
                    let room = Int(ModelTests.rangeSize) - offset % Int(ModelTests.rangeSize)
                    let count = min(1 + random(4096), room, size - offset)
                    let expected = Array(model[i][offset ..< offset + count])
                    let matches = try files[i].withMappedBytes(offset: UInt64(offset), length: count) { bytes in
                        expected.withUnsafeBytes { memcmp(bytes.baseAddress!, $0.baseAddress!, count) == 0 }
                    }
                    if !matches { fail(step, "mapped bytes of \(names[i]) [\(offset), +\(count)) differ from the model") }
                default:  // a read of a shared file
                    guard let (file, content) = shared.isEmpty ? nil : shared[random(shared.count)] else { return }
                    let offset = random(content.count)
                    let count = length(small: 8192, large: 100_000)
                    let got = try file.read(count: count, at: UInt64(offset))
                    if !equal(got, Array(content[offset ..< min(offset + count, content.count)])) { fail(step, "read of a shared file at \(offset) differs") }
                }
            } catch {
                fail(step, "operation \(op) on \(names[i]) threw \(error)")
            }
        }

        func checkHostFiles(_ dir: TempDir) -> [String] {
            var problems: [String] = []
            for (i, name) in names.enumerated() {
                guard let host = try? hostRead(dir.file(name), count: ModelTests.maxSize + 1) else {
                    problems.append("cannot read host file \(name)")
                    continue
                }
                if !equal(host, model[i]) {
                    problems.append("seed \(seed): host file \(name) (\(host.count) bytes) differs from the model (\(model[i].count) bytes)")
                }
            }
            return problems
        }
    }

    static func makePool(_ rng: inout SeededRandom) -> [UInt8] {
        var pool = [UInt8](repeating: 0, count: 1 << 20)
        pool.withUnsafeMutableBytes { raw in
            let words = raw.bindMemory(to: UInt64.self)
            for k in words.indices { words[k] = rng.next() }
        }
        return pool
    }

    static func setUpFiles(_ client: DaxClient, names: [String], rng: inout SeededRandom, pool: [UInt8]) throws -> ([DaxFile], [[UInt8]]) {
        var files: [DaxFile] = []
        var model: [[UInt8]] = []
        for name in names {
            let file = try client.create(name)
            let size = Int(rng.next() % 300_000)
            let start = Int(rng.next() % UInt64(pool.count - size))
            let content = Array(pool[start ..< start + size])
            try file.write(content, at: 0)
            files.append(file)
            model.append(content)
        }
        return (files, model)
    }

    @Test(arguments: [DAXMode.always, .auto])
    func randomOperationsMatchTheModel(_ mode: DAXMode) throws {
        let seed = modelSeed()
        var rng = SeededRandom(seed: seed)
        let dir = TempDir("model")
        let client = try makeClient(dir.path, ranges: 16, rangeSize: Self.rangeSize, mode: mode) { $0.admitAfterMisses = 3 }
        let pool = Self.makePool(&rng)
        let names = (0 ..< 50).map { "file\($0)" }
        let (files, model) = try Self.setUpFiles(client, names: names, rng: &rng, pool: pool)
        var work = Workload(client: client, names: names, files: files, model: model, rng: rng, pool: pool, seed: seed, shared: [])
        for step in 0 ..< 20_000 {
            work.step(step)
            if step % 2000 == 0 {
                let broken = client.windowInvariantViolations()
                if !broken.isEmpty { work.fail(step, "window invariants: \(broken.prefix(3))") }
            }
            if !work.failures.isEmpty { break }
        }
        for failure in work.failures.prefix(5) { Issue.record(Comment(rawValue: failure)) }
        for file in work.files { try file.close() }
        for problem in work.checkHostFiles(dir).prefix(5) { Issue.record(Comment(rawValue: problem)) }
        let stats = client.statistics
        print("model \(mode), seed \(seed): \(stats)")
        #expect(client.windowInvariantViolations() == [])
        #expect(stats.freeRanges == stats.ranges, "every range is free once all files are closed")
        // Reclaim and upgrade ran all the time.
        #expect(stats.reclaimed > 1000 && stats.upgrades > 100, "seed \(seed): \(stats)")
    }

    @Test(arguments: [DAXMode.always, .auto])
    func fourThreadsMatchTheirModels(_ mode: DAXMode) throws {
        let seed = modelSeed()
        var rng = SeededRandom(seed: seed)
        let dir = TempDir("model4")
        let client = try makeClient(dir.path, ranges: 16, rangeSize: Self.rangeSize, mode: mode) { $0.admitAfterMisses = 3 }
        let pool = Self.makePool(&rng)
        var shared: [(DaxFile, [UInt8])] = []
        for k in 0 ..< 2 {
            let content = Array(pool[k * 300_000 ..< k * 300_000 + 300_000])
            try hostWrite(dir.file("shared\(k)"), content)
            shared.append((try client.open("shared\(k)"), content))
        }
        var workloads: [Workload] = []
        for t in 0 ..< 4 {
            let names = (0 ..< 13).map { "t\(t)-file\($0)" }
            let (files, model) = try Self.setUpFiles(client, names: names, rng: &rng, pool: pool)
            workloads.append(Workload(client: client, names: names, files: files, model: model,
                                      rng: SeededRandom(seed: seed &+ UInt64(t) &* 0x9E37), pool: pool, seed: seed, shared: shared))
        }
        let results = Locked<[Int: Workload]>([:])
        let sendable = UncheckedBox(workloads)
        var threads: [OSThread] = []
        for t in 0 ..< 4 {
            threads.append(try OSThread(name: "dax-model-\(t)") {
                var work = sendable.value[t]
                for step in 0 ..< 5_000 {
                    work.step(step)
                    if !work.failures.isEmpty { break }
                }
                let done = work
                results.withLock { $0[t] = done }
            })
        }
        for thread in threads { thread.join() }
        let finished = results.withLock { UncheckedBox($0) }.value
        for t in 0 ..< 4 {
            guard let work = finished[t] else { Issue.record("thread \(t) did not finish"); continue }
            for failure in work.failures.prefix(3) { Issue.record(Comment(rawValue: "thread \(t): " + failure)) }
            for file in work.files { try file.close() }
            for problem in work.checkHostFiles(dir).prefix(3) { Issue.record(Comment(rawValue: "thread \(t): " + problem)) }
        }
        for (file, _) in shared { try file.close() }
        #expect(client.windowInvariantViolations() == [])
        let stats = client.statistics
        print("4 threads, \(mode), seed \(seed): \(stats)")
        #expect(stats.freeRanges == stats.ranges)
        #expect(stats.reclaimed > 100, "seed \(seed): \(stats)")
    }
}

/// Hands values to threads the test joins before looking at them again.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    return a.withUnsafeBytes { x in b.withUnsafeBytes { y in a.isEmpty || memcmp(x.baseAddress!, y.baseAddress!, a.count) == 0 } }
}
