import Foundation
import Glibc
import Testing

/// SplitMix64: small, seedable, good enough to pick operations.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// fsx-style model test: random operations applied to the mount and to a
/// plain host directory (the model); every result and the final trees must agree.
@Suite(.enabled(if: MountEnvironment.canMount, "needs root and /dev/fuse"))
struct ModelTests {
    static var operationCount: Int { Int(ProcessInfo.processInfo.environment["MODEL_OPS"] ?? "") ?? 20_000 }

    @Test(arguments: Mode.allCases)
    func randomOperationsMatchTheHost(mode: Mode) throws {
        let seed = ProcessInfo.processInfo.environment["MODEL_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 1 ... 1 << 48)
        try withMount(mode, label: "model") { mount in
            let model = Workload(mounted: mount.mountpoint, reference: try mount.hostScratch("reference"), seed: seed)
            defer { model.closeAll() }
            let started = Date()
            var tally: [String: (count: Int, succeeded: Int)] = [:]
            for index in 0 ..< Self.operationCount {
                let step = model.step()
                let kind = String(step.operation.prefix { $0 != " " })
                let succeeded = !step.reference.hasPrefix("E")
                tally[kind, default: (0, 0)].count += 1
                tally[kind, default: (0, 0)].succeeded += succeeded ? 1 : 0
                guard step.mounted == step.reference else {
                    Issue.record("""
                        MODEL_SEED=\(seed) (\(mode)): operation \(index) diverged: \(step.operation)
                          through the mount: \(step.mounted)
                          on the host:       \(step.reference)
                        """)
                    return
                }
                if Date().timeIntervalSince(started) > 120 {
                    Issue.record("MODEL_SEED=\(seed): too slow, stopped after \(index) operations in 120 s")
                    return
                }
            }
            model.closeAll()
            let expected = treeSnapshot(model.reference)
            expectSameLines(treeSnapshot(mount.shared), expected, "MODEL_SEED=\(seed) (\(mode)): shared directory vs model")
            expectSameLines(treeSnapshot(mount.mountpoint), expected, "MODEL_SEED=\(seed) (\(mode)): mount vs model")
            let summary = tally.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.succeeded)/\($0.value.count)" }.joined(separator: ", ")
            print("model test \(mode): \(Self.operationCount) operations in \(String(format: "%.1f", Date().timeIntervalSince(started))) s, MODEL_SEED=\(seed); succeeded: \(summary)")
        }
    }
}

/// Applies the same random operation under two roots and describes each result.
final class Workload {
    let mounted: String
    let reference: String
    private var random: SeededGenerator
    /// Open descriptors: (through the mount, on the host), opened by the same operation.
    private var handles: [(mounted: Int32, reference: Int32, name: String)] = []

    static let names = ["a", "b", "c", "d", "e"]
    static let maxFileSize = 320 << 10

    init(mounted: String, reference: String, seed: UInt64) {
        self.mounted = mounted
        self.reference = reference
        random = SeededGenerator(seed: seed)
    }

    struct Step {
        var operation: String
        var mounted: String
        var reference: String
    }

    /// A relative path of one to three components from a small set, so that
    /// operations collide often (EEXIST, ENOTDIR, ENOTEMPTY...).
    /// Most of the time an existing entry (a regular file if `file`), else a
    /// fresh combination of names.
    private func randomPath(file: Bool = false) -> String {
        if int(0 ... 9) < 7, let existing = existingPaths(filesOnly: file).randomElement(using: &random) { return existing }
        return freshPath()
    }

    /// A random combination of names, which may or may not exist.
    private func freshPath() -> String {
        let depth = [1, 1, 1, 2, 2, 3].randomElement(using: &random)!
        return (0 ..< depth).map { _ in Self.names.randomElement(using: &random)! }.joined(separator: "/")
    }

    /// Every entry of the model tree (not descending into symlinks).
    private func existingPaths(filesOnly: Bool) -> [String] {
        var paths: [String] = []
        func walk(_ relative: String) {
            for name in directoryNames(reference + "/" + relative) ?? [] {
                let child = relative.isEmpty ? name : relative + "/" + name
                let type = fileStat(reference + "/" + child, follow: false).map { $0.st_mode & S_IFMT }
                if !filesOnly || type == S_IFREG { paths.append(child) }
                if type == S_IFDIR { walk(child) }
            }
        }
        walk("")
        return paths
    }

    private func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &random) }

    /// Runs `body` under both roots.
    private func both(_ operation: String, _ body: (String) -> String) -> Step {
        Step(operation: operation, mounted: body(mounted), reference: body(reference))
    }

    func step() -> Step {
        let roll = int(0 ... 99)
        // Data operations mostly aim at files; name operations at anything.
        let path = randomPath(file: roll < 50 || roll >= 90)
        switch roll {
        case 0 ..< 10:
            let flags = O_CREAT | O_WRONLY | [0, O_EXCL, O_TRUNC].randomElement(using: &random)!
            return both("create \(path) flags 0o\(String(flags, radix: 8))") { root in
                let fd = open(root + "/" + path, flags, 0o644)
                if fd < 0 { return errnoName(errno) }
                close(fd)
                return "ok"
            }
        case 10 ..< 30:
            let offset = int(0 ... Self.maxFileSize - 1)
            let length = min(Self.maxFileSize - offset, roll < 27 ? int(1 ... 32 << 10) : int(1 ... 160 << 10))
            let data = pattern(length, seed: random.next())
            return both("write \(path) \(length) bytes at \(offset)") { root in
                let fd = open(root + "/" + path, O_WRONLY)
                if fd < 0 { return errnoName(errno) }
                defer { close(fd) }
                return "\(pwriteAll(fd, data, at: offset))"
            }
        case 30 ..< 40:
            let offset = int(0 ... Self.maxFileSize)
            let length = int(1 ... 96 << 10)
            return both("read \(path) \(length) bytes at \(offset)") { root in
                let fd = open(root + "/" + path, O_RDONLY)
                if fd < 0 { return errnoName(errno) }
                defer { close(fd) }
                switch preadAll(fd, count: length, at: offset) {
                case .success(let data): return "\(data.count) bytes \(fingerprint(data))"
                case .failure(let error): return error.description
                }
            }
        case 40 ..< 44:
            return both("read all of \(path)") { root in
                switch readFile(root + "/" + path) {
                case .success(let data): return "\(data.count) bytes \(fingerprint(data))"
                case .failure(let error): return error.description
                }
            }
        case 44 ..< 50:
            let size = int(0 ... Self.maxFileSize)
            return both("truncate \(path) to \(size)") { root in "\(sys { truncate(root + "/" + path, off_t(size)) })" }
        case 50 ..< 58:
            let target = int(0 ... 1) == 0 ? randomPath() : freshPath()
            let flags = roll < 56 ? 0 : [LinuxConstant.renameNoReplace, LinuxConstant.renameExchange].randomElement(using: &random)!
            return both("rename \(path) -> \(target) flags \(flags)") { root in
                "\(sys { daxfsRenameat2(root + "/" + path, root + "/" + target, flags) })"
            }
        case 58 ..< 62:
            let target = int(0 ... 3) == 0 ? randomPath() : freshPath()
            return both("link \(path) -> \(target)") { root in "\(sys { link(root + "/" + path, root + "/" + target) })" }
        case 62 ..< 68:
            return both("unlink \(path)") { root in "\(sys { unlink(root + "/" + path) })" }
        case 68 ..< 74:
            return both("mkdir \(path)") { root in "\(sys { mkdir(root + "/" + path, 0o755) })" }
        case 74 ..< 78:
            return both("rmdir \(path)") { root in "\(sys { rmdir(root + "/" + path) })" }
        case 78 ..< 84:
            return both("lstat \(path)") { root in
                guard let info = fileStat(root + "/" + path, follow: false) else { return errnoName(errno) }
                let size = info.st_mode & S_IFMT == S_IFDIR ? "" : " size \(info.st_size)"
                return "\(fileType(info.st_mode)) \(String(info.st_mode & 0o7777, radix: 8)) nlink \(info.st_nlink)\(size)"
            }
        case 84 ..< 87:
            let directory = roll == 84 ? "" : path
            return both("readdir \(directory)") { root in
                directoryNames(root + "/" + directory)?.joined(separator: ",") ?? errnoName(errno)
            }
        case 87 ..< 89:
            // Relative targets only, without "..": a link must never lead
            // either run outside its own root.
            let target = [path, "missing", "a/b"].randomElement(using: &random)!
            let name = randomPath()
            return both("symlink \(name) -> \(target)") { root in "\(sys { symlink(target, root + "/" + name) })" }
        case 89:
            let mode = [0o600, 0o644, 0o755, 0o4711].randomElement(using: &random)!
            return both("chmod \(path) 0o\(String(mode, radix: 8))") { root in "\(sys { chmod(root + "/" + path, mode_t(mode)) })" }
        default:
            return handleStep(path: path, roll: roll)
        }
    }

    /// Operations on descriptors kept open across other operations: the file
    /// may meanwhile be renamed, unlinked or truncated.
    private func handleStep(path: String, roll: Int) -> Step {
        if handles.isEmpty || (roll < 93 && handles.count < 4) {
            let flags = O_RDWR | (roll == 90 ? O_APPEND : 0)
            let fds = (open(mounted + "/" + path, flags), open(reference + "/" + path, flags))
            let outcome = (fds.0 < 0 ? errnoName(errno) : "ok", fds.1 < 0 ? errnoName(errno) : "ok")
            // Keep a pair only if both opened; otherwise close what did.
            if fds.0 >= 0 && fds.1 >= 0 {
                handles.append((fds.0, fds.1, path))
            } else {
                if fds.0 >= 0 { close(fds.0) }
                if fds.1 >= 0 { close(fds.1) }
            }
            // Open on the mount first: errno of the second call would overwrite the first's.
            return Step(operation: "open handle \(path) flags 0o\(String(flags, radix: 8))", mounted: outcome.0, reference: outcome.1)
        }
        let slot = int(0 ... handles.count - 1)
        let handle = handles[slot]
        switch roll {
        case 93 ..< 96:
            let offset = int(0 ... Self.maxFileSize - 1)
            let data = pattern(min(Self.maxFileSize - offset, int(1 ... 16 << 10)), seed: random.next())
            return Step(operation: "write handle(\(handle.name)) \(data.count) bytes at \(offset)",
                        mounted: "\(pwriteAll(handle.mounted, data, at: offset))",
                        reference: "\(pwriteAll(handle.reference, data, at: offset))")
        case 96 ..< 98:
            let offset = int(0 ... Self.maxFileSize)
            let length = int(1 ... 64 << 10)
            func read(_ fd: Int32) -> String {
                switch preadAll(fd, count: length, at: offset) {
                case .success(let data): return "\(data.count) bytes \(fingerprint(data))"
                case .failure(let error): return error.description
                }
            }
            return Step(operation: "read handle(\(handle.name)) \(length) bytes at \(offset)",
                        mounted: read(handle.mounted), reference: read(handle.reference))
        case 98:
            let size = int(0 ... Self.maxFileSize)
            return Step(operation: "ftruncate handle(\(handle.name)) to \(size)",
                        mounted: "\(sys { ftruncate(handle.mounted, off_t(size)) })",
                        reference: "\(sys { ftruncate(handle.reference, off_t(size)) })")
        default:
            handles.remove(at: slot)
            return Step(operation: "close handle(\(handle.name))",
                        mounted: "\(sys { close(handle.mounted) })", reference: "\(sys { close(handle.reference) })")
        }
    }

    func closeAll() {
        for handle in handles {
            close(handle.mounted)
            close(handle.reference)
        }
        handles.removeAll()
    }
}
