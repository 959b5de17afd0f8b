#define _GNU_SOURCE 1
#include "CLinux.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

int daxfs_errno(void) { return errno; }
void daxfs_set_errno(int value) { errno = value; }

int daxfs_openat(int dirfd, const char *path, int flags, unsigned int mode) {
    return openat(dirfd, path, flags, (mode_t)mode);
}

int daxfs_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }


int daxfs_fcntl_lock(int fd, int cmd, short *type, short whence, int64_t *start, int64_t *len, int32_t *pid) {
    struct flock lock;
    memset(&lock, 0, sizeof lock);
    lock.l_type = *type;
    lock.l_whence = whence;
    lock.l_start = *start;
    lock.l_len = *len;
    lock.l_pid = *pid;
    int result = fcntl(fd, cmd, &lock);
    *type = lock.l_type;
    *start = lock.l_start;
    *len = lock.l_len;
    *pid = lock.l_pid;
    return result;
}

int daxfs_renameat2(int olddir, const char *oldpath, int newdir, const char *newpath, unsigned int flags) {
    return renameat2(olddir, oldpath, newdir, newpath, flags);
}

long daxfs_getdents64(int fd, void *buffer, size_t size) { return syscall(SYS_getdents64, fd, buffer, size); }

ssize_t daxfs_copy_file_range(int fd_in, int64_t *off_in, int fd_out, int64_t *off_out, size_t len, unsigned int flags) {
    off_t in = (off_t)*off_in, out = (off_t)*off_out;
    ssize_t result = copy_file_range(fd_in, &in, fd_out, &out, len, flags);
    *off_in = in;
    *off_out = out;
    return result;
}

int daxfs_fallocate(int fd, int mode, int64_t offset, int64_t len) { return fallocate(fd, mode, offset, len); }

uint64_t daxfs_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }
unsigned int daxfs_major(uint64_t dev) { return major(dev); }
unsigned int daxfs_minor(uint64_t dev) { return minor(dev); }
int daxfs_syncfs(int fd) { return syncfs(fd); }



#include <pthread.h>
int daxfs_set_thread_name(const char *name) { return pthread_setname_np(pthread_self(), name); }

#include <sched.h>
#include <sys/stat.h>
#include <sys/file.h>
#include <sys/xattr.h>

int daxfs_flock(int fd, int operation) { return flock(fd, operation); }

ssize_t daxfs_getxattr(const char *path, const char *name, void *value, size_t size) { return getxattr(path, name, value, size); }
int daxfs_setxattr(const char *path, const char *name, const void *value, size_t size, int flags) { return setxattr(path, name, value, size, flags); }
ssize_t daxfs_listxattr(const char *path, char *list, size_t size) { return listxattr(path, list, size); }
int daxfs_removexattr(const char *path, const char *name) { return removexattr(path, name); }

static __thread int daxfs_umask_own = 0;
static __thread unsigned int daxfs_umask_value = 0;

int daxfs_thread_set_umask(unsigned int mask) {
    if (!daxfs_umask_own) {
        if (unshare(CLONE_FS) != 0) return -1;
        daxfs_umask_own = 1;
        umask(mask & 0777);
        daxfs_umask_value = mask & 0777;
        return 0;
    }
    if (daxfs_umask_value != (mask & 0777)) {
        umask(mask & 0777);
        daxfs_umask_value = mask & 0777;
    }
    return 0;
}


#include <setjmp.h>
#include <stdatomic.h>

static __thread sigjmp_buf *volatile daxfs_fault_target;
static atomic_int daxfs_fault_installed;

/* Guest memory ranges whose SIGBUS is survivable (see daxfs_guard_region). */
#define DAXFS_GUARDED_REGIONS 4096
static struct {
    _Atomic uintptr_t start, end;
    int *_Atomic poisoned;
} daxfs_guarded[DAXFS_GUARDED_REGIONS];

int daxfs_guard_region(void *start, size_t length, int *poisoned) {
    for (int slot = 0; slot < DAXFS_GUARDED_REGIONS; slot++) {
        uintptr_t expected = 0;
        if (atomic_load(&daxfs_guarded[slot].end) != 0) continue;
        // Claim the slot by its start (0 = free), then publish the end last.
        if (!atomic_compare_exchange_strong(&daxfs_guarded[slot].start, &expected, (uintptr_t)start)) continue;
        atomic_store(&daxfs_guarded[slot].poisoned, poisoned);
        atomic_store(&daxfs_guarded[slot].end, (uintptr_t)start + length);
        return slot;
    }
    return -1;
}

void daxfs_unguard_region(int slot) {
    if (slot < 0 || slot >= DAXFS_GUARDED_REGIONS) return;
    atomic_store(&daxfs_guarded[slot].end, 0);
    atomic_store(&daxfs_guarded[slot].poisoned, NULL);
    atomic_store(&daxfs_guarded[slot].start, 0);
}

/* A fault at `address` inside a guarded region: a private zero page goes
 * over the page (the access then goes on) and the region's owner is told. */
static int daxfs_patch_guarded(void *address) {
    uintptr_t at = (uintptr_t)address;
    for (int slot = 0; slot < DAXFS_GUARDED_REGIONS; slot++) {
        uintptr_t end = atomic_load(&daxfs_guarded[slot].end);
        if (end == 0 || at >= end || at < atomic_load(&daxfs_guarded[slot].start)) continue;
        uintptr_t page = at & ~(uintptr_t)4095;
        void *patched = mmap((void *)page, 4096, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (patched == MAP_FAILED) return 0;
        int *poisoned = atomic_load(&daxfs_guarded[slot].poisoned);
        if (poisoned != NULL) __atomic_store_n(poisoned, 1, __ATOMIC_RELEASE);
        return 1;
    }
    return 0;
}

static void daxfs_fault_handler(int signo, siginfo_t *info, void *context) {
    (void)context;
    sigjmp_buf *target = daxfs_fault_target;
    if (target != NULL) {
        daxfs_fault_target = NULL;
        siglongjmp(*target, 1);
    }
    if (info != NULL && daxfs_patch_guarded(info->si_addr)) return;
    // Not a fault inside a safe copy or guarded memory: die as SIGBUS would have made us.
    signal(signo, SIG_DFL);
    raise(signo);
}

int daxfs_install_fault_handler(void) {
    if (atomic_exchange(&daxfs_fault_installed, 1)) return 0;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = daxfs_fault_handler;
    sigemptyset(&action.sa_mask);
    // SA_NODEFER: leaving the handler by siglongjmp without restoring the
    // signal mask (sigsetjmp(…, 0) avoids a syscall per copy) must not leave
    // SIGBUS blocked.
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    return sigaction(SIGBUS, &action, NULL);
}

size_t daxfs_safe_copy(void *dst, const void *src, size_t n) {
    // Copy in page-sized steps so a fault reports how far we got.
    volatile size_t done = 0;
    sigjmp_buf target;
    if (sigsetjmp(target, 0) != 0) return done;
    daxfs_fault_target = &target;
    const size_t step = 4096;
    while (done < n) {
        size_t chunk = n - done < step ? n - done : step;
        memcpy((char *)dst + done, (const char *)src + done, chunk);
        done += chunk;
    }
    daxfs_fault_target = NULL;
    return done;
}

static __thread unsigned int daxfs_current_uid = 0, daxfs_current_gid = 0;
/// 0: the process's groups; 1: none; 2: a caller's list.
static __thread int daxfs_groups_state = 0;

int daxfs_become(unsigned int uid, unsigned int gid) { return daxfs_become_with_groups(uid, gid, NULL, 0); }

int daxfs_become_with_groups(unsigned int uid, unsigned int gid, const unsigned int *groups, int count) {
    if (count > 0) {
        // Raw syscall: glibc's setgroups would change every thread.
        if (syscall(SYS_setgroups, (size_t)count, groups) != 0) return -1;
        daxfs_groups_state = 2;
    } else if (daxfs_groups_state == 2 || (uid != 0 && daxfs_groups_state == 0)) {
        if (syscall(SYS_setgroups, 0, NULL) != 0) return -1;
        daxfs_groups_state = 1;
    }
    if (uid == daxfs_current_uid && gid == daxfs_current_gid) return 0;
    if (gid != daxfs_current_gid) {
        setfsgid(gid);
        if ((unsigned int)setfsgid((gid_t)-1) != gid) { errno = EPERM; return -1; }
        daxfs_current_gid = gid;
    }
    if (uid != daxfs_current_uid) {
        setfsuid(uid);
        if ((unsigned int)setfsuid((uid_t)-1) != uid) { errno = EPERM; return -1; }
        daxfs_current_uid = uid;
    }
    return 0;
}

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>

long daxfs_send_with_fds(int sock, const void *buffer, size_t length, const int *fds, int nfds) {
    struct iovec iov = { .iov_base = (void *)buffer, .iov_len = length };
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    char control[CMSG_SPACE(sizeof(int) * 8)];
    if (nfds > 8) { errno = EINVAL; return -1; }
    if (nfds > 0) {
        memset(control, 0, sizeof control);
        message.msg_control = control;
        message.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(header), fds, sizeof(int) * nfds);
    }
    return sendmsg(sock, &message, MSG_NOSIGNAL);
}

long daxfs_recv_with_fds(int sock, void *buffer, size_t length, int *fds, int maxfds, int *nfds) {
    struct iovec iov = { .iov_base = buffer, .iov_len = length };
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    char control[CMSG_SPACE(sizeof(int) * 16)];
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    *nfds = 0;
    long result = recvmsg(sock, &message, MSG_CMSG_CLOEXEC);
    if (result < 0) return result;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *received = (int *)CMSG_DATA(header);
        for (int i = 0; i < count; i++) {
            if (*nfds < maxfds) fds[(*nfds)++] = received[i];
            else close(received[i]);
        }
    }
    if (message.msg_flags & MSG_CTRUNC) {
        for (int i = 0; i < *nfds; i++) close(fds[i]);
        *nfds = 0;
        errno = EMSGSIZE;
        return -1;
    }
    return result;
}

int daxfs_eventfd(unsigned int initial, int flags) { return eventfd(initial, flags); }
int daxfs_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

uint16_t daxfs_load_acquire_u16(const volatile void *address) {
    return __atomic_load_n((const volatile uint16_t *)address, __ATOMIC_ACQUIRE);
}
void daxfs_store_release_u16(volatile void *address, uint16_t value) {
    __atomic_store_n((volatile uint16_t *)address, value, __ATOMIC_RELEASE);
}
void daxfs_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
uint64_t daxfs_load_acquire_u64(const volatile void *address) {
    return __atomic_load_n((const volatile uint64_t *)address, __ATOMIC_ACQUIRE);
}
void daxfs_store_release_u64(volatile void *address, uint64_t value) {
    __atomic_store_n((volatile uint64_t *)address, value, __ATOMIC_RELEASE);
}

int daxfs_fanotify_watch(const char *path, uint64_t mask) {
    int fd = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_REPORT_FID | FAN_REPORT_DFID_NAME, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    if (fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, mask, AT_FDCWD, path) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int daxfs_fanotify_pre_content(void) {
    return fanotify_init(FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_TID, O_RDONLY | O_LARGEFILE | O_CLOEXEC);
}

int daxfs_fanotify_mark_inode(int group, unsigned int flags, uint64_t mask, int fd) {
    return fanotify_mark(group, flags, mask, fd, NULL);
}

int daxfs_peer_pid(int sock) {
    struct ucred credentials;
    socklen_t length = sizeof credentials;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return -1;
    return credentials.pid;
}

int daxfs_open_by_handle(int mount_fd, const void *handle, int flags) {
    return open_by_handle_at(mount_fd, (struct file_handle *)handle, flags);
}

int daxfs_open_by_handle_privileged(int mount_fd, const void *handle, int flags) {
    unsigned int uid = daxfs_current_uid;
    if (uid != 0) setfsuid(0);
    int fd = open_by_handle_at(mount_fd, (struct file_handle *)handle, flags);
    int saved = errno;
    if (uid != 0) setfsuid(uid);
    errno = saved;
    return fd;
}

int daxfs_handle_of(int fd, void *handle, int *mount_id) {
    return name_to_handle_at(fd, "", (struct file_handle *)handle, mount_id, AT_EMPTY_PATH);
}

int daxfs_load_acquire_int(const int *address) { return __atomic_load_n(address, __ATOMIC_ACQUIRE); }
