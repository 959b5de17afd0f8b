import Glibc
import HostSystem

/// The mount suite's workloads. Each takes a path, so the same function
/// measures the host directory and both mounts. Every timed region runs from
/// open to close, so a FUSE OPEN, FLUSH and RELEASE are part of the figure.
enum BenchWorkload {
    static let blockSize = 1 << 20
    static let smallBlockSize = 4096

    /// A 1 MiB page-aligned buffer of pseudo-random bytes (nothing a
    /// filesystem could compress or skip as zeros).
    static func makeBuffer() -> UnsafeMutableRawBufferPointer {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 4096)
        var random = SplitMix64(seed: 0xDA8F5)
        for word in buffer.bindMemory(to: UInt64.self).indices {
            buffer.storeBytes(of: random.next(), toByteOffset: word * 8, as: UInt64.self)
        }
        return buffer
    }

    /// Writes `bytes` in 1 MiB pwrites to `path`: a new file, or with
    /// `overwrite` the existing one (no O_TRUNC, so its cached pages stay).
    /// The span covers open, the writes and close, not fsync: it is the
    /// write(2) path into the page cache (and, without passthrough, through the
    /// server), not the disk. With `sync`, fsync runs before close (used to
    /// create the data file, untimed).
    @discardableResult
    static func writeFile(_ path: String, bytes: Int, buffer: UnsafeMutableRawBufferPointer,
                          overwrite: Bool = false, sync: Bool = false) throws -> Span {
        try timed {
            let flags = O_WRONLY | (overwrite ? 0 : O_CREAT | O_EXCL)
            let fd = try attempt("open \(path)") {
                try FileDescriptor.open(path, flags: flags, mode: 0o644)
            }
            var offset = 0
            while offset < bytes {
                try Interruption.check()
                let chunk = UnsafeRawBufferPointer(rebasing: buffer[..<min(blockSize, bytes - offset)])
                offset += try attempt("write \(path)") {
                    try Syscall.pwrite(fd.rawValue, from: chunk, offset: Int64(offset))
                }
            }
            if sync {
                _ = try attempt("fsync \(path)") { try Syscall.call { fsync(fd.rawValue) } }
            }
            try closeChecked(fd, path)
        }
    }

    /// Writes a new file, then overwrites it in place; removes it afterwards,
    /// untimed, so no dirty pages carry over. The first figure includes
    /// allocating page-cache memory, the second is the write path alone.
    static func sequentialWrite(_ path: String, bytes: Int,
                                buffer: UnsafeMutableRawBufferPointer) throws -> (write: Span, overwrite: Span) {
        defer { unlink(path) }
        let write = try writeFile(path, bytes: bytes, buffer: buffer)
        let overwrite = try writeFile(path, bytes: bytes, buffer: buffer, overwrite: true)
        return (write, overwrite)
    }

    /// Writes a new file of `bytes` with 4 KiB write(2)s (the file offset
    /// advances; no pwrite), timed from open to close, fsync excluded; removes
    /// it afterwards, untimed. Small writes are where a FUSE server pays per
    /// call: without FUSE_HANDLE_KILLPRIV_V2 the kernel asks it for
    /// `security.capability` before every one.
    static func smallWrites(_ path: String, bytes: Int, buffer: UnsafeMutableRawBufferPointer) throws -> Span {
        defer { unlink(path) }
        let block = UnsafeRawBufferPointer(rebasing: buffer[..<smallBlockSize])
        return try timed {
            let fd = try attempt("open \(path)") {
                try FileDescriptor.open(path, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
            }
            var written = 0
            while written < bytes {
                if written & 0xFFFFF == 0 { try Interruption.check() }
                let count = try attempt("write \(path)") { try Syscall.write(fd.rawValue, from: block) }
                guard count == smallBlockSize else {
                    throw BenchError("write \(path): \(count) bytes at offset \(written), expected \(smallBlockSize)")
                }
                written += count
            }
            try closeChecked(fd, path)
        }
    }

    /// Writes and removes a scratch file of `bytes`, untimed, so that the
    /// next new-file write gets page-cache memory the machine has just freed.
    /// Without it, on a VM whose balloon reports free pages back to the host,
    /// a write runs at the host's page-fault speed (~0.5 GB/s here instead of
    /// ~5) whenever its pages were freed more than a second or two before,
    /// and the figure depends on which configuration happened to go first.
    static func recyclePageCache(_ path: String, bytes: Int, buffer: UnsafeMutableRawBufferPointer) throws {
        defer { unlink(path) }
        try writeFile(path, bytes: bytes, buffer: buffer)
    }

    /// Reads the whole file in 1 MiB preads; returns the bytes read.
    static func sequentialRead(_ path: String, buffer: UnsafeMutableRawBufferPointer) throws -> (Int, Span) {
        var total = 0
        let span = try timed {
            let fd = try attempt("open \(path)") { try FileDescriptor.open(path, flags: O_RDONLY) }
            while true {
                try Interruption.check()
                let count = try attempt("read \(path)") {
                    try Syscall.pread(fd.rawValue, into: buffer, offset: Int64(total))
                }
                if count == 0 { break }
                total += count
            }
            try closeChecked(fd, path)
        }
        return (total, span)
    }

    /// 4 KiB preads at uniformly random 4 KiB-aligned offsets for about
    /// `seconds`; returns the number of reads. The same `seed` gives the same
    /// offsets, so configurations read the same blocks.
    static func randomRead(_ path: String, fileSize: Int, seconds: Double, seed: UInt64,
                           buffer: UnsafeMutableRawBufferPointer) throws -> (Int, Span) {
        let blocks = UInt64(fileSize / smallBlockSize)
        let block = UnsafeMutableRawBufferPointer(rebasing: buffer[..<smallBlockSize])
        var random = SplitMix64(seed: seed)
        var reads = 0
        let span = try timed {
            let fd = try attempt("open \(path)") { try FileDescriptor.open(path, flags: O_RDONLY) }
            let deadline = monotonicSeconds() + seconds
            repeat {
                try Interruption.check()
                for _ in 0..<64 {
                    let offset = Int64((random.next() % blocks) * UInt64(smallBlockSize))
                    let count = try attempt("read \(path)") {
                        try Syscall.pread(fd.rawValue, into: block, offset: offset)
                    }
                    guard count == smallBlockSize else {
                        throw BenchError("read \(path): \(count) bytes at offset \(offset), expected \(smallBlockSize)")
                    }
                }
                reads += 64
            } while monotonicSeconds() < deadline
            try closeChecked(fd, path)
        }
        return (reads, span)
    }

    /// `count` empty files in a fresh directory, for the metadata phases.
    /// The directory must be fresh each time: ext4 without a journal delays
    /// the reuse of freed inodes and a reused directory slows down run after run.
    final class FileSet {
        let path: String
        let directory: FileDescriptor
        let names: [String]

        init(in path: String, count: Int) throws {
            try makeDirectory(path)
            self.path = path
            directory = try attempt("open \(path)") { try FileDescriptor.open(path, flags: O_RDONLY) }
            names = (0..<count).map { "f\($0)" }
        }

        /// Creates every file (open O_CREAT|O_EXCL, close).
        func create() throws -> Span {
            try timed {
                for name in names {
                    try Interruption.check()
                    _ = try attempt("create \(path)/\(name)") {
                        try FileDescriptor.open(name, relativeTo: directory.rawValue, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
                    }
                }
            }
        }

        /// One fstatat of every file.
        func stat() throws -> Span {
            var info = Glibc.stat()
            return try timed {
                for name in names {
                    try Interruption.check()
                    _ = try attempt("stat \(path)/\(name)") {
                        try Syscall.call { fstatat(directory.rawValue, name, &info, 0) }
                    }
                }
            }
        }

        /// Unlinks every file, then the directory.
        func unlink() throws -> Span {
            let span = try timed {
                for name in names {
                    try Interruption.check()
                    _ = try attempt("unlink \(path)/\(name)") {
                        try Syscall.call { unlinkat(directory.rawValue, name, 0) }
                    }
                }
            }
            rmdir(path)
            return span
        }
    }

    /// `count` getppid(2) calls: the cost of a bare system call, which on
    /// this machine depends on what the CPU did just before (see
    /// `MountBenchSuite.measureMetadata`).
    static func bareSystemCalls(_ count: Int) -> Span {
        timed { for _ in 0..<count { _ = getppid() } }
    }
}
