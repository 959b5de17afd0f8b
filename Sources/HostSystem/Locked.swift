import Glibc

/// A value behind a pthread mutex. daxfs uses this instead of
/// `Synchronization.Mutex` because the thread sanitizer understands pthread
/// locks but not the futex calls `Mutex` makes on Linux (CI runs the
/// concurrent DAX model test under TSan).
public final class Locked<Value: ~Copyable>: @unchecked Sendable {
    // @usableFromInline + @inlinable below: callers in other modules get a
    // specialized, inlined critical section instead of an unspecialized
    // generic call (measured on the DAX hit path, which takes it twice).
    @usableFromInline let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    @usableFromInline var value: Value

    public init(_ value: consuming Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with exclusive access to the value.
    @inlinable
    public func withLock<Result: ~Copyable, E: Error>(_ body: (inout Value) throws(E) -> Result) throws(E) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }

    /// Runs `body` if the lock is free right now; nil when another thread holds it.
    @inlinable
    public func withLockIfAvailable<Result, E: Error>(_ body: (inout Value) throws(E) -> Result) throws(E) -> Result? {
        guard pthread_mutex_trylock(mutex) == 0 else { return nil }
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
