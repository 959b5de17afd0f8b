import Glibc

/// Which sanitizers this process was built with, for tests whose time and
/// memory bounds must allow for them (AddressSanitizer makes the suite about
/// three times slower and keeps freed memory in a quarantine).
public enum Sanitizers {
    public static let address = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__asan_init") != nil
    /// ASAN_OPTIONS for a sandboxed daemon started by a test under
    /// AddressSanitizer: no leak check at exit, since LeakSanitizer reads
    /// /proc/self/maps by path and stops the threads with ptrace, and the
    /// sandbox takes both away (procfs is not at /proc inside it, and ptrace
    /// is outside the seccomp allowlist).
    public static var sandboxedAddressSanitizerOptions: String {
        let inherited = getenv("ASAN_OPTIONS").map { String(cString: $0) } ?? ""
        return (inherited.isEmpty ? "" : inherited + ":") + "detect_leaks=0"
    }

    /// How much longer things take under the sanitizers in use.
    public static var slowdown: Double { address ? 4 : 1 }
}
