import Glibc

/// A condition to sleep on until something changes: a generation counter
/// behind a pthread mutex and condition variable. A sleeper reads `generation`
/// before it inspects the state it waits for and then waits for the
/// generation to move on, so a change made in between is never missed.
final class WakeUp: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var count: UInt64 = 0

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    var generation: UInt64 {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return count
    }

    /// Wakes every sleeper.
    func signal() {
        pthread_mutex_lock(mutex)
        count &+= 1
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Sleeps until the generation differs from `seen`.
    func wait(after seen: UInt64) {
        pthread_mutex_lock(mutex)
        while count == seen { pthread_cond_wait(condition, mutex) }
        pthread_mutex_unlock(mutex)
    }
}
