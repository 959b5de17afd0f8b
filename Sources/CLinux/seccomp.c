// The seccomp filter of daxfs-virtiofsd: an allowlist of the syscalls
// daxfs's server processes make, and a classic-BPF program that checks the
// architecture, lets those through and applies the chosen action to the rest.
//
// How the allowlist was found (redo it when the server learns a new call):
//
// 1. strace: the real server processes ran under
//        strace -D -f -qq -e trace=all -o /tmp/trace.$$ daxfs "$@"
//    (DAXFS_BIN pointed at a wrapper that execs that line) while these tests
//    drove them: VhostUserTests' ClientProcessTests, DAXOverVhostUserTests,
//    DirectMmapOverVhostUserTests and FileSizeTests (`daxfs serve`, DAX and
//    direct-mmap rings on) and MountTests (`daxfs mount`: /dev/fuse,
//    passthrough, the fanotify watch, every FUSE opcode the kernel sends for
//    fio and the POSIX checks). Every syscall name was collected, and sorted
//    into calls made before the first accept(2) and after.
// 2. The filter itself in log mode in front of the same runs and of
//    GuestTests (DAXFS_BIN = a wrapper that runs
//    `daxfs-sandbox-probe --seccomp log --extra … exec daxfs "$@"`): a call
//    outside the list shows in the kernel log as
//    "audit: type=1326 … syscall=N". The kernel rate-limits those lines
//    (kauditd_printk_skb: N callbacks suppressed), so the calls already known
//    were passed as --extra and only new ones could show.
// 3. Reading the code: Sources/HostSystem, Sources/CLinux and the modules'
//    direct Glibc calls, for paths the tests did not reach (FUSE_STATX,
//    FUSE_LSEEK, error paths, glibc fallbacks).
//
// Not listed, because daxfs makes them only before the sandbox goes in
// (install the filter after the listener is bound and the mapping shadow is
// mounted): the dynamic loader's execve, arch_prctl, access,
// set_tid_address, readlink("/proc/self/exe"); serve's start-up mkdir,
// mount, umount2(MNT_DETACH), rmdir (the mapping shadow), rename (the socket
// put in place), getuid/getgid (mount options); `daxfs mount`'s umount2 at
// exit (pass it as extra to sandbox `mount`); getrusage (`daxfs client`
// only). setresuid/setresgid and capget/capset are not made either: daxfs
// acts for a caller with setfsuid/setfsgid, and capabilities are dropped
// before the filter is installed.
//
// Each entry says why daxfs needs it. Names are __NR_* so the list builds on
// arm64 too, where the legacy calls (poll, unlink, renameat, accept, fstat)
// do not exist.
#define _GNU_SOURCE 1
#include "daxfs_seccomp.h"
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__x86_64__)
#define DAXFS_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define DAXFS_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "daxfs's seccomp filter knows x86_64 and aarch64 only"
#endif

static const int daxfs_allowlist[] = {
    // --- Memory: malloc (brk, mmap, mremap for large reallocs), the Swift
    //     runtime, thread stacks (glibc caches them: madvise MADV_DONTNEED,
    //     mprotect for guard pages), guest memory tables, DAX windows and
    //     rings (mmap of memfds and host files; madvise MADV_HUGEPAGE).
    __NR_brk, __NR_mmap, __NR_munmap, __NR_mprotect, __NR_mremap, __NR_madvise,
    __NR_memfd_create,      // the DAX window and ring files
    // --- Threads: pthread_create is clone3 (clone on glibc < 2.34 or when
    //     clone3 is refused); each new thread registers its robust futex list
    //     and its rseq area; locks, conditions and joins are futexes.
    __NR_clone3, __NR_clone, __NR_futex, __NR_set_robust_list, __NR_rseq,
    __NR_exit,              // a thread ends
    __NR_exit_group,        // the process ends
    __NR_sched_yield,       // ring workers with requests pending (RingFiles)
    __NR_sched_getaffinity, // sysconf(_SC_NPROCESSORS_ONLN): OSThread.processorCount
    __NR_gettid,            // thread ids against fanotify's FAN_REPORT_TID (truncation guard)
    __NR_getpid,            // the host watcher skips its own process's events
    __NR_tgkill,            // raise(): the SIGBUS handler re-raises a fault it cannot fix; abort()
    __NR_prctl,             // PR_SET_NAME: every OSThread names itself
    __NR_unshare,           // unshare(CLONE_FS): a worker's own umask (daxfs_thread_set_umask)
    __NR_umask,
    // --- Signals: the SIGBUS fault handler for DAX copies and guarded guest
    //     memory, the thread that waits for SIGINT/SIGTERM/SIGHUP
    //     (rt_sigtimedwait), blocked masks of new threads, the Swift runtime's
    //     alternate signal stack for its crash reporter.
    __NR_rt_sigaction, __NR_rt_sigprocmask, __NR_rt_sigreturn, __NR_rt_sigtimedwait,
    __NR_sigaltstack,
    // --- Time. clock_gettime normally stays in the vDSO; usleep is
    //     clock_nanosleep (lock retries, ring ticks, watcher batching).
    __NR_clock_gettime, __NR_clock_nanosleep,
    __NR_getrandom,         // Swift's hashing seed, glibc malloc
    // --- Descriptors and plain I/O: FUSE requests and replies on /dev/fuse
    //     and the virtqueues, file data (READ/WRITE are pread/pwrite), logging.
    __NR_read, __NR_write, __NR_pread64, __NR_pwrite64,
    __NR_close,
    __NR_dup,               // a node's O_PATH descriptor handed out to a second owner
    __NR_fcntl,             // F_DUPFD_CLOEXEC, F_GETFL/F_SETFL, OFD and POSIX locks (GETLK/SETLK/SETLKW)
    __NR_flock,             // FUSE_FLOCK
    __NR_ioctl,             // FUSE_DEV_IOC_CLONE / BACKING_OPEN / BACKING_CLOSE; TCGETS from stdio
    __NR_lseek,             // FUSE_LSEEK (SEEK_DATA/SEEK_HOLE), directory rewinds
    __NR_fallocate,         // FUSE_FALLOCATE
    __NR_copy_file_range,   // FUSE_COPY_FILE_RANGE
    __NR_ftruncate,         // SETATTR size; sizing ring and window memfds
    __NR_fsync, __NR_fdatasync, __NR_syncfs, // FSYNC, FSYNCDIR, SYNCFS
    __NR_getdents64,        // READDIR, READDIRPLUS
    // --- Files by name, always relative to a directory descriptor (names
    //     are single components under an O_PATH node, or /proc/self/fd/N).
    __NR_openat,            // also /proc/PID/maps and /proc/PID/status of the frontend and callers
    __NR_name_to_handle_at, __NR_open_by_handle_at, // nodes past --max-node-fds, reopened by handle
    __NR_newfstatat,        // glibc's fstat/fstatat/stat: LOOKUP, GETATTR, the mountpoint check
#ifdef __NR_fstat
    __NR_fstat,             // the same on glibc < 2.33
#endif
    __NR_statx,             // FUSE_STATX
    __NR_readlinkat,        // READLINK
    __NR_fchownat,          // SETATTR uid/gid (AT_EMPTY_PATH on the node)
    __NR_fchmod, __NR_fchmodat, // SETATTR mode on an open file / through /proc/self/fd
    __NR_utimensat,         // SETATTR times
    __NR_mkdirat, __NR_mknodat, __NR_symlinkat, __NR_linkat, __NR_unlinkat,
    __NR_renameat2,         // RENAME2 with flags
#ifdef __NR_renameat
    __NR_renameat,          // glibc's renameat2 with flags 0
#endif
#ifdef __NR_unlink
    __NR_unlink,            // the truncation guard's probe file (unlink(3) on x86_64)
#endif
    __NR_faccessat2,        // ACCESS, and the truncation guard's permission checks
    __NR_fstatfs,           // STATFS
    // Extended attributes go through /proc/self/fd/N paths (getxattr & co
    // follow that magic link to the node itself).
    __NR_getxattr, __NR_setxattr, __NR_listxattr, __NR_removexattr,
    // --- Acting for a request's caller, per thread (daxfs_become): fsuid and
    //     fsgid, and the raw setgroups (glibc's setgroups would change every
    //     thread). open_by_handle privileged sets fsuid 0 for one call.
    __NR_setfsuid, __NR_setfsgid, __NR_setgroups,
    // --- Waiting: queue kicks and calls, the vhost-user socket, /dev/fuse,
    //     the host watch and the truncation guard all poll(2).
#ifdef __NR_poll
    __NR_poll,
#else
    __NR_ppoll,             // glibc's poll() where there is no poll syscall (arm64)
#endif
    __NR_eventfd2,          // virtqueue kick/call descriptors, thread wake-ups
    // --- Host-change watches: fanotify (--cache auto; the pre-content group
    //     of the truncation guard), inotify on DAX-mapped files.
    __NR_fanotify_init, __NR_fanotify_mark,
    __NR_inotify_init1, __NR_inotify_add_watch, __NR_inotify_rm_watch,
    // --- The vhost-user socket: listener, the frontend's connection (a
    //     new one after a disconnect), messages with SCM_RIGHTS descriptors
    //     (sendmsg/recvmsg), recv(3) is recvfrom, SO_PEERCRED.
    __NR_socket, __NR_bind, __NR_listen,
#ifdef __NR_accept
    __NR_accept,
#endif
    __NR_accept4,
    __NR_sendmsg, __NR_recvmsg, __NR_recvfrom, __NR_getsockopt, __NR_shutdown,
    // --- The open-file limit: PassthroughFS sizes --max-node-fds from it.
    __NR_prlimit64,
};

const int *daxfs_seccomp_allowlist(size_t *count) {
    *count = sizeof daxfs_allowlist / sizeof daxfs_allowlist[0];
    return daxfs_allowlist;
}

static int daxfs_compare_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static struct daxfs_bpf_instruction daxfs_statement(uint16_t code, uint32_t k) {
    return (struct daxfs_bpf_instruction){ .code = code, .jt = 0, .jf = 0, .k = k };
}

static struct daxfs_bpf_instruction daxfs_jump(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) {
    return (struct daxfs_bpf_instruction){ .code = code, .jt = jt, .jf = jf, .k = k };
}

// A block compares up to this many numbers; its jumps to the block's own
// "allow" must fit the 8-bit jump offsets of classic BPF.
#define DAXFS_BLOCK 200

int daxfs_seccomp_build(int action, const int *extra, size_t extra_count,
                        struct daxfs_bpf_instruction *program, size_t capacity) {
    // if/else: the DAXFS_SECCOMP_* constants are not case labels in C before C23.
    uint32_t otherwise;
    if (action == DAXFS_SECCOMP_KILL) otherwise = SECCOMP_RET_KILL_PROCESS;
    else if (action == DAXFS_SECCOMP_LOG) otherwise = SECCOMP_RET_LOG;
    else if (action == DAXFS_SECCOMP_TRAP) otherwise = SECCOMP_RET_TRAP;
    else { errno = EINVAL; return -1; }
    size_t listed = sizeof daxfs_allowlist / sizeof daxfs_allowlist[0];
    size_t total = listed + extra_count;
    int *numbers = malloc((total ? total : 1) * sizeof(int));
    if (numbers == NULL) { errno = ENOMEM; return -1; }
    memcpy(numbers, daxfs_allowlist, listed * sizeof(int));
    for (size_t i = 0; i < extra_count; i++) {
        if (extra[i] < 0) { free(numbers); errno = EINVAL; return -1; }
        numbers[listed + i] = extra[i];
    }
    // Sorted and without duplicates: each number is compared once.
    qsort(numbers, total, sizeof(int), daxfs_compare_int);
    size_t unique = 0;
    for (size_t i = 0; i < total; i++)
        if (unique == 0 || numbers[unique - 1] != numbers[i]) numbers[unique++] = numbers[i];

    size_t blocks = (unique + DAXFS_BLOCK - 1) / DAXFS_BLOCK;
    size_t needed = 5 + unique + 2 * blocks + 1;
    if (needed > capacity || needed > BPF_MAXINSNS) { free(numbers); errno = E2BIG; return -1; }

    size_t at = 0;
    // Another architecture's numbers mean other calls: kill, whatever the action.
    program[at++] = daxfs_statement(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    program[at++] = daxfs_jump(BPF_JMP | BPF_JEQ | BPF_K, DAXFS_AUDIT_ARCH, 1, 0);
    program[at++] = daxfs_statement(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    program[at++] = daxfs_statement(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#if defined(__x86_64__)
    // x32 calls arrive with AUDIT_ARCH_X86_64 and bit 30 set in nr: another ABI, killed too.
    program[at++] = daxfs_jump(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1);
    program[at++] = daxfs_statement(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
#endif
    for (size_t start = 0; start < unique; start += DAXFS_BLOCK) {
        size_t count = unique - start < DAXFS_BLOCK ? unique - start : DAXFS_BLOCK;
        // Entry i jumps over the rest of the block and the "ja" to the block's allow.
        for (size_t i = 0; i < count; i++)
            program[at++] = daxfs_jump(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)numbers[start + i], (uint8_t)(count - i), 0);
        program[at++] = daxfs_statement(BPF_JMP | BPF_JA, 1);
        program[at++] = daxfs_statement(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    }
    program[at++] = daxfs_statement(BPF_RET | BPF_K, otherwise);
    free(numbers);
    return (int)at;
}

int daxfs_seccomp_install(int action, const int *extra, size_t extra_count) {
    size_t capacity = 8 + sizeof daxfs_allowlist / sizeof daxfs_allowlist[0] + 3 * (extra_count + 1);
    if (capacity > BPF_MAXINSNS) capacity = BPF_MAXINSNS;
    struct daxfs_bpf_instruction *program = calloc(capacity, sizeof *program);
    if (program == NULL) { errno = ENOMEM; return -1; }
    int length = daxfs_seccomp_build(action, extra, extra_count, program, capacity);
    if (length < 0) { int saved = errno; free(program); errno = saved; return -1; }
    _Static_assert(sizeof(struct daxfs_bpf_instruction) == sizeof(struct sock_filter), "sock_filter layout");
    struct sock_fprog fprog = { .len = (unsigned short)length, .filter = (struct sock_filter *)program };
    // Without no_new_privs an unprivileged process may not install a filter,
    // and a filtered process could exec a set-uid program.
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) { int saved = errno; free(program); errno = saved; return -1; }
    long result = syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog);
    int saved = errno;
    free(program);
    // With TSYNC a positive result is the id of a thread that could not take the filter.
    if (result > 0) { errno = ESRCH; return -1; }
    if (result < 0) { errno = saved; return -1; }
    return 0;
}

static atomic_uint_fast64_t daxfs_trap_count;
static atomic_int daxfs_trap_last = -1;

static void daxfs_sigsys_handler(int signo, siginfo_t *info, void *context) {
    (void)signo;
    int number = info->si_syscall;
    atomic_fetch_add(&daxfs_trap_count, 1);
    atomic_store(&daxfs_trap_last, number);
    // Only async-signal-safe calls here: format by hand, one write(2).
    char line[64] = "daxfs: seccomp blocked syscall ";
    size_t at = strlen(line);
    char digits[12];
    int n = 0;
    unsigned int value = (unsigned int)number;
    do { digits[n++] = (char)('0' + value % 10); value /= 10; } while (value != 0 && n < 11);
    while (n > 0) line[at++] = digits[--n];
    line[at++] = '\n';
    ssize_t ignored = write(2, line, at);
    (void)ignored;
    // The kernel rolled the registers back to the call (the return register
    // holds the syscall number); make the call fail with ENOSYS instead.
    ucontext_t *uc = context;
#if defined(__x86_64__)
    uc->uc_mcontext.gregs[REG_RAX] = -ENOSYS;
#elif defined(__aarch64__)
    uc->uc_mcontext.regs[0] = (unsigned long long)(long long)-ENOSYS;
#endif
}

int daxfs_seccomp_report_traps(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = daxfs_sigsys_handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_SIGINFO;
    return sigaction(SIGSYS, &action, NULL);
}

uint64_t daxfs_seccomp_trap_count(void) { return atomic_load(&daxfs_trap_count); }
int daxfs_seccomp_last_trapped(void) { return atomic_load(&daxfs_trap_last); }

int daxfs_syscall_number(const char *name) {
    static const struct { const char *name; int number; } known[] = {
        { "getpid", __NR_getpid }, { "getppid", __NR_getppid }, { "acct", __NR_acct }, { "ptrace", __NR_ptrace },
        { "kexec_load", __NR_kexec_load }, { "execve", __NR_execve }, { "seccomp", __NR_seccomp },
        { "personality", __NR_personality },
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(known[i].name, name) == 0) return known[i].number;
    return -1;
}
