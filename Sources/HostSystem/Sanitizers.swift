import Glibc

/// Which sanitizers this process was built with, for tests whose time and
/// memory bounds must allow for them (AddressSanitizer makes the suite about
/// three times slower and keeps freed memory in a quarantine).
public enum Sanitizers {
    public static let address = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__asan_init") != nil
    /// How much longer things take under the sanitizers in use.
    public static var slowdown: Double { address ? 4 : 1 }
}
