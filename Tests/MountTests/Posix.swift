import Foundation
import Glibc
import Testing

// Small helpers over libc for the tests: results as values, errno by name,
// and the calls Swift's Glibc module leaves out.

/// The return value of a libc call, or the errno it failed with.
enum Outcome: Equatable, CustomStringConvertible {
    case value(Int)
    case error(Int32)

    var description: String {
        switch self {
        case .value(let value): "\(value)"
        case .error(let code): errnoName(code)
        }
    }
    var succeeded: Bool { if case .value = self { true } else { false } }
    var value: Int? { if case .value(let value) = self { value } else { nil } }
}

/// Runs a libc call that returns -1 and sets errno on failure.
func sys<T: BinaryInteger>(_ body: () -> T) -> Outcome {
    errno = 0
    let result = body()
    return result < 0 ? .error(errno) : .value(Int(result))
}

/// Throws with the call's name unless it succeeded.
@discardableResult
func must<T: BinaryInteger>(_ what: @autoclosure () -> String, _ body: () -> T) throws -> Int {
    switch sys(body) {
    case .value(let value): return value
    case .error(let code): throw HarnessError("\(what()): \(errnoName(code))")
    }
}

private let errnoNames: [Int32: String] = [
    EPERM: "EPERM", ENOENT: "ENOENT", EINTR: "EINTR", EIO: "EIO", ENXIO: "ENXIO", EBADF: "EBADF",
    EAGAIN: "EAGAIN", ENOMEM: "ENOMEM", EACCES: "EACCES", EFAULT: "EFAULT", EBUSY: "EBUSY",
    EEXIST: "EEXIST", EXDEV: "EXDEV", ENODEV: "ENODEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR",
    EINVAL: "EINVAL", ENFILE: "ENFILE", EMFILE: "EMFILE", EFBIG: "EFBIG", ENOSPC: "ENOSPC",
    ESPIPE: "ESPIPE", EROFS: "EROFS", EMLINK: "EMLINK", ERANGE: "ERANGE", ENAMETOOLONG: "ENAMETOOLONG",
    ENOSYS: "ENOSYS", ENOTEMPTY: "ENOTEMPTY", ELOOP: "ELOOP", ENODATA: "ENODATA", EOPNOTSUPP: "EOPNOTSUPP",
    EOVERFLOW: "EOVERFLOW", ESTALE: "ESTALE", ENOTCONN: "ENOTCONN", EPROTO: "EPROTO", ETXTBSY: "ETXTBSY",
    EDEADLK: "EDEADLK", ENOLCK: "ENOLCK", E2BIG: "E2BIG",
]

func errnoName(_ code: Int32) -> String { errnoNames[code] ?? "errno \(code)" }

// MARK: - Constants Glibc hides without _GNU_SOURCE

enum LinuxConstant {
    static let seekData: Int32 = 3
    static let seekHole: Int32 = 4
    static let fallocKeepSize: Int32 = 0x01
    static let fallocPunchHole: Int32 = 0x02
    static let renameNoReplace: UInt32 = 1
    static let renameExchange: UInt32 = 2
    static let xattrCreate: Int32 = 1
    static let xattrReplace: Int32 = 2
    static let oPath: Int32 = 0o10000000
}

// MARK: - xattr calls (sys/xattr.h is not in Swift's Glibc module)

/// libc's xattr functions, looked up at run time.
enum Xattr {
    typealias GetFunction = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeMutableRawPointer?, Int) -> Int
    typealias SetFunction = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeRawPointer?, Int, Int32) -> Int32
    typealias ListFunction = @convention(c) (UnsafePointer<CChar>, UnsafeMutablePointer<CChar>?, Int) -> Int
    typealias RemoveFunction = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>) -> Int32

    private static func symbol<F>(_ name: String, as _: F.Type) -> F {
        guard let address = dlsym(dlopen(nil, RTLD_NOW), name) else { fatalError("libc has no \(name)") }
        return unsafeBitCast(address, to: F.self)
    }

    nonisolated(unsafe) static let get = symbol("getxattr", as: GetFunction.self)
    nonisolated(unsafe) static let lget = symbol("lgetxattr", as: GetFunction.self)
    nonisolated(unsafe) static let set = symbol("setxattr", as: SetFunction.self)
    nonisolated(unsafe) static let lset = symbol("lsetxattr", as: SetFunction.self)
    nonisolated(unsafe) static let list = symbol("listxattr", as: ListFunction.self)
    nonisolated(unsafe) static let llist = symbol("llistxattr", as: ListFunction.self)
    nonisolated(unsafe) static let remove = symbol("removexattr", as: RemoveFunction.self)

    /// The value, or the errno (`follow: false` reads a symlink's own xattrs).
    static func value(_ path: String, _ name: String, follow: Bool = true) -> Result<[UInt8], SystemError> {
        let call = follow ? get : lget
        let size = call(path, name, nil, 0)
        if size < 0 { return .failure(SystemError(errno)) }
        var buffer = [UInt8](repeating: 0, count: size)
        let got = buffer.withUnsafeMutableBytes { call(path, name, $0.baseAddress, $0.count) }
        if got < 0 { return .failure(SystemError(errno)) }
        return .success(Array(buffer.prefix(got)))
    }

    /// Attribute names, sorted.
    static func names(_ path: String, follow: Bool = true) -> Result<[String], SystemError> {
        let call = follow ? list : llist
        let size = call(path, nil, 0)
        if size < 0 { return .failure(SystemError(errno)) }
        var buffer = [CChar](repeating: 0, count: size)
        let got = call(path, &buffer, size)
        if got < 0 { return .failure(SystemError(errno)) }
        let names = buffer.prefix(got).split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return .success(names.sorted())
    }
}

struct SystemError: Error, Equatable, CustomStringConvertible {
    let code: Int32
    init(_ code: Int32) { self.code = code }
    var description: String { errnoName(code) }
}

// MARK: - Files

/// Deterministic bytes: a function of `seed` and the position.
func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0 ..< count).map { _ in
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return UInt8(truncatingIfNeeded: state)
    }
}

/// FNV-1a, to log file contents compactly.
func fingerprint<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    return String(hash, radix: 16)
}

/// Writes all of `bytes` at `offset`.
func pwriteAll(_ fd: Int32, _ bytes: [UInt8], at offset: Int) -> Outcome {
    var done = 0
    while done < bytes.count {
        let result = sys { bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, bytes.count - done, off_t(offset + done)) } }
        guard case .value(let count) = result else { return result }
        if count == 0 { return .error(EIO) }
        done += count
    }
    return .value(done)
}

/// Reads up to `count` bytes at `offset` (short only at end of file).
func preadAll(_ fd: Int32, count: Int, at offset: Int) -> Result<[UInt8], SystemError> {
    var buffer = [UInt8](repeating: 0, count: count)
    var done = 0
    while done < count {
        let result = sys { buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) } }
        switch result {
        case .error(let code): return .failure(SystemError(code))
        case .value(0): return .success(Array(buffer.prefix(done)))
        case .value(let got): done += got
        }
    }
    return .success(buffer)
}

/// The whole file, or the errno of open or read.
func readFile(_ path: String) -> Result<[UInt8], SystemError> {
    let fd = open(path, O_RDONLY)
    if fd < 0 { return .failure(SystemError(errno)) }
    defer { close(fd) }
    var data: [UInt8] = []
    while true {
        switch preadAll(fd, count: 1 << 20, at: data.count) {
        case .failure(let error): return .failure(error)
        case .success(let chunk):
            data += chunk
            if chunk.count < 1 << 20 { return .success(data) }
        }
    }
}

func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)
    guard fd >= 0 else { throw HarnessError("open \(path): \(errnoName(errno))") }
    defer { close(fd) }
    if case .error(let code) = pwriteAll(fd, bytes, at: 0) { throw HarnessError("write \(path): \(errnoName(code))") }
}

func fileStat(_ path: String, follow: Bool = true) -> stat? {
    var info = stat()
    return (follow ? stat(path, &info) : lstat(path, &info)) == 0 ? info : nil
}

/// Names in a directory, without "." and "..", sorted; nil if it cannot be opened.
func directoryNames(_ path: String, includingDots: Bool = false) -> [String]? {
    guard let dir = opendir(path) else { return nil }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        // Up to the NUL only: a dirent is as long as its name, not d_name's 256 bytes.
        let name = withUnsafePointer(to: &entry.pointee.d_name) {
            String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
        }
        if includingDots || (name != "." && name != "..") { names.append(name) }
    }
    return names.sorted()
}

func fileType(_ mode: mode_t) -> String {
    switch mode & S_IFMT {
    case S_IFREG: "file"
    case S_IFDIR: "dir"
    case S_IFLNK: "symlink"
    case S_IFIFO: "fifo"
    case S_IFSOCK: "socket"
    case S_IFCHR: "chardev"
    case S_IFBLK: "blockdev"
    default: "type \(mode & S_IFMT)"
    }
}

func readLink(_ path: String) -> Result<String, SystemError> {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let count = readlink(path, &buffer, buffer.count - 1)
    if count < 0 { return .failure(SystemError(errno)) }
    return .success(String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self))
}

// MARK: - Trees

/// One line per entry below `root` (sorted, relative paths): type, mode,
/// links, owner, size, contents or link target, and user xattrs. Times and
/// inode numbers are left out: they differ between two honest copies.
func treeSnapshot(_ root: String, directorySizes: Bool = false) -> [String] {
    var lines: [String] = []
    func walk(_ relative: String) {
        let path = relative.isEmpty ? root : root + "/" + relative
        guard let names = directoryNames(path) else {
            lines.append("\(relative): cannot open directory: \(errnoName(errno))")
            return
        }
        for name in names {
            let child = relative.isEmpty ? name : relative + "/" + name
            let full = root + "/" + child
            guard let info = fileStat(full, follow: false) else {
                lines.append("\(child): lstat \(errnoName(errno))")
                continue
            }
            var line = "\(child): \(fileType(info.st_mode)) mode=\(String(info.st_mode & 0o7777, radix: 8)) nlink=\(info.st_nlink) owner=\(info.st_uid):\(info.st_gid)"
            switch info.st_mode & S_IFMT {
            case S_IFREG:
                switch readFile(full) {
                case .success(let data): line += " size=\(info.st_size) data=\(data.count):\(fingerprint(data))"
                case .failure(let error): line += " size=\(info.st_size) read=\(error)"
                }
            case S_IFLNK:
                line += " -> \((try? readLink(full).get()) ?? "?")"
            case S_IFDIR:
                if directorySizes { line += " size=\(info.st_size)" }
            case S_IFCHR, S_IFBLK:
                line += " rdev=\(info.st_rdev)"
            default: break
            }
            if info.st_mode & S_IFMT != S_IFLNK, case .success(let names) = Xattr.names(full, follow: false) {
                let user = names.filter { $0.hasPrefix("user.") }
                if !user.isEmpty {
                    line += " xattrs=" + user.map { name in
                        "\(name)=" + ((try? Xattr.value(full, name, follow: false).get()).map { fingerprint($0) } ?? "?")
                    }.joined(separator: ",")
                }
            }
            lines.append(line)
            if info.st_mode & S_IFMT == S_IFDIR { walk(child) }
        }
    }
    walk("")
    return lines
}

/// Expects two line lists to be equal, reporting the first difference with
/// a little context instead of two long arrays.
func expectSameLines(_ actual: [String], _ expected: [String], _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    guard actual != expected else { return }
    let index = zip(actual, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(actual.count, expected.count)
    let context = expected[max(0, index - 3) ..< index].map { "  \($0)" }.joined(separator: "\n")
    let got = index < actual.count ? actual[index] : "<nothing>"
    let want = index < expected.count ? expected[index] : "<nothing>"
    Issue.record("""
        \(what): first difference at line \(index + 1) of \(expected.count) (got \(actual.count))
        after:
        \(context)
          got:      \(got)
          expected: \(want)
        """, sourceLocation: sourceLocation)
}
