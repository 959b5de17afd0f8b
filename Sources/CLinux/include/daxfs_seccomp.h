// Sandbox primitives for daxfs-virtiofsd: a seccomp allowlist filter and
// capability sets (seccomp.c, capabilities.c). Like CLinux.h, this header
// stays free of _GNU_SOURCE; the .c files define it.
#ifndef DAXFS_SECCOMP_H
#define DAXFS_SECCOMP_H

#include <stddef.h>
#include <stdint.h>

/// What the filter does with a syscall outside the allowlist.
static const int DAXFS_SECCOMP_KILL = 1;  // SECCOMP_RET_KILL_PROCESS
static const int DAXFS_SECCOMP_LOG = 2;   // SECCOMP_RET_LOG: allow, and the kernel logs it
static const int DAXFS_SECCOMP_TRAP = 3;  // SECCOMP_RET_TRAP: SIGSYS to the calling thread

/// The daxfs allowlist: `*count` syscall numbers of this build's architecture.
const int *daxfs_seccomp_allowlist(size_t *count);

/// One classic BPF instruction (`struct sock_filter`).
struct daxfs_bpf_instruction {
    uint16_t code;
    uint8_t jt;
    uint8_t jf;
    uint32_t k;
};

/// Writes the filter for `action` (DAXFS_SECCOMP_*) into `program`, which has
/// room for `capacity` instructions: the allowlist plus `extra` numbers
/// allowed, everything else gets `action`, another architecture is killed.
/// Returns the number of instructions, or -1 with errno (EINVAL: bad action
/// or negative number; E2BIG: no room).
int daxfs_seccomp_build(int action, const int *extra, size_t extra_count,
                        struct daxfs_bpf_instruction *program, size_t capacity);

/// Builds the filter and installs it on every thread of the process:
/// prctl(PR_SET_NO_NEW_PRIVS) then seccomp(SECCOMP_SET_MODE_FILTER,
/// SECCOMP_FILTER_FLAG_TSYNC). Returns 0, or -1 with errno (ESRCH when a
/// thread could not be synchronised).
int daxfs_seccomp_install(int action, const int *extra, size_t extra_count);

/// For DAXFS_SECCOMP_TRAP: a SIGSYS handler that counts trapped syscalls,
/// remembers the last number, writes "daxfs: seccomp blocked syscall N" to
/// stderr and makes the call return -ENOSYS. Returns 0, or -1 with errno.
int daxfs_seccomp_report_traps(void);
/// Trapped syscalls so far, and the number of the last one (-1 if none).
uint64_t daxfs_seccomp_trap_count(void);
int daxfs_seccomp_last_trapped(void);

/// This build's syscall numbers of a few calls the tests use.
int daxfs_syscall_number(const char *name);

// Capabilities (capabilities.c). Sets are bit masks, bit n = capability n.

/// capget(2) for the calling thread. Returns 0, or -1 with errno.
int daxfs_capget(uint64_t *effective, uint64_t *permitted, uint64_t *inheritable);
/// capset(2) for the calling thread only. Returns 0, or -1 with errno.
int daxfs_capset(uint64_t effective, uint64_t permitted, uint64_t inheritable);
/// prctl(PR_CAPBSET_READ / PR_CAPBSET_DROP, cap): 1/0, or -1 with errno.
int daxfs_capbset_read(int cap);
int daxfs_capbset_drop(int cap);
/// prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL).
int daxfs_ambient_clear_all(void);
/// prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap): 1/0, or -1 with errno.
int daxfs_ambient_is_set(int cap);
/// prctl(PR_GET_SECUREBITS) / prctl(PR_GET_KEEPCAPS).
int daxfs_securebits(void);
/// Raw setresuid / setresgid for the calling thread only ((unsigned)-1 = unchanged);
/// glibc's wrappers change every thread.
int daxfs_thread_setresuid(unsigned int ruid, unsigned int euid, unsigned int suid);
int daxfs_thread_setresgid(unsigned int rgid, unsigned int egid, unsigned int sgid);
/// The calling thread's kernel thread id (gettid).
int daxfs_gettid(void);

#endif
