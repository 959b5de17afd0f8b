#define _GNU_SOURCE 1
#include "daxfs_sandbox.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

int daxfs_unshare_namespaces(void) { return unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC); }

int daxfs_unshare_pid_namespace(void) { return unshare(CLONE_NEWPID); }

int daxfs_mounts_private(void) { return mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL); }

int daxfs_mount_proc(const char *target) {
    return mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

int daxfs_bind_self(const char *path, int readonly) {
    if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) != 0) return -1;
    if (readonly && mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) != 0) return -1;
    return 0;
}

int daxfs_pivot_into(const char *path) {
    if (chdir(path) != 0) return -1;
    if (syscall(SYS_pivot_root, ".", ".") != 0) return -1;
    // The old root is stacked under the new one at "."; take it away.
    if (umount2(".", MNT_DETACH) != 0) return -1;
    return chdir("/");
}

int daxfs_chroot_into(const char *path) {
    if (chroot(path) != 0) return -1;
    return chdir("/");
}

int daxfs_set_parent_death_signal(int signal) { return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0, 0, 0); }

int daxfs_fork(void) { return fork(); }

int daxfs_wait_exit_status(int pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -1;
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 1;
}

int daxfs_can_make_file_handle(const char *path) {
    struct file_handle *handle = malloc(sizeof(struct file_handle) + MAX_HANDLE_SZ);
    if (!handle) return -1;
    handle->handle_bytes = MAX_HANDLE_SZ;
    int mount_id = 0;
    int result = name_to_handle_at(AT_FDCWD, path, handle, &mount_id, 0);
    int saved = errno;
    free(handle);
    errno = saved;
    return result == 0 ? 0 : -1;
}

void daxfs_syslog(int priority, const char *message) { syslog(priority, "%s", message); }

long daxfs_forbidden_syscall_for_tests(void) { return syscall(SYS_acct, NULL); }

int daxfs_is_mount_root(int fd) {
    struct statx info;
    if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, 0, &info) != 0) return -1;
    if (!(info.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)) { errno = EOPNOTSUPP; return -1; }
    return (info.stx_attributes & STATX_ATTR_MOUNT_ROOT) ? 1 : 0;
}
