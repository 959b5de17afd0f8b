#ifndef DAXFS_SANDBOX_H
#define DAXFS_SANDBOX_H

// The sandbox of `daxfs-virtiofsd` (Sources/ServeDaemon/Sandbox.swift):
// namespaces, mounts and root changes. Each returns 0 (or a pid), or -1
// with errno.

/// unshare(2) of new mount, network and IPC namespaces.
int daxfs_unshare_namespaces(void);
/// unshare(2) of a new pid namespace, for the children to come.
int daxfs_unshare_pid_namespace(void);
/// Makes every mount of this mount namespace a slave of the host's, so
/// nothing mounted here propagates back.
int daxfs_mounts_private(void);
/// A fresh procfs at `target` (nosuid, nodev, noexec).
int daxfs_mount_proc(const char *target);
/// Bind-mounts `path` onto itself (recursively), read-only when `readonly`.
int daxfs_bind_self(const char *path, int readonly);
/// chdir(path), pivot_root(".", "."), then a lazy unmount of the old root:
/// `path` becomes "/" of this mount namespace.
int daxfs_pivot_into(const char *path);
/// chroot(path) and chdir("/").
int daxfs_chroot_into(const char *path);
/// The parent death signal of the calling thread (PR_SET_PDEATHSIG).
int daxfs_set_parent_death_signal(int signal);
/// fork(2), for the pid namespace's first process (the caller is single-threaded).
int daxfs_fork(void);
/// waitpid(pid, &status, 0), retried on EINTR; returns the exit status, or
/// 128 + the signal that ended the child.
int daxfs_wait_exit_status(int pid);
/// 0 when name_to_handle_at gives a file handle for `path`, else -1 with
/// errno (EOPNOTSUPP: the filesystem has none).
int daxfs_can_make_file_handle(const char *path);
/// syslog(priority, "%s", message) (syslog is variadic: Swift cannot call it).
void daxfs_syslog(int priority, const char *message);
/// acct(2) with a NULL path: a syscall outside the seccomp allowlist, made
/// only when DAXFS_TEST_FORBIDDEN_SYSCALL is set (the filter's tests).
long daxfs_forbidden_syscall_for_tests(void);
/// 1 when `fd` is the root of a mount (statx STATX_ATTR_MOUNT_ROOT), 0
/// when not, -1 with errno when the kernel cannot say.
int daxfs_is_mount_root(int fd);

#endif
