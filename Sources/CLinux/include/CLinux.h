// The only C in daxfs: what Swift cannot import from Glibc directly —
// variadic syscalls, GNU-only calls, function-like macros and constants that
// need _GNU_SOURCE. The header itself stays free of _GNU_SOURCE so its types
// agree with Swift's Glibc module; shim.c defines it.
#ifndef DAXFS_CLINUX_H
#define DAXFS_CLINUX_H

#include <stdint.h>
#include <sys/types.h>
#include <fcntl.h>

// Linux x86_64/arm64 values (asm-generic), which Glibc hides without _GNU_SOURCE.
static const int DAXFS_O_PATH = 010000000;
static const int DAXFS_O_NOFOLLOW = 0400000;
static const int DAXFS_O_DIRECTORY = 0200000;
static const int DAXFS_O_CLOEXEC = 02000000;
static const int DAXFS_O_DIRECT = 040000;
static const int DAXFS_O_TMPFILE = 020200000;
static const int DAXFS_O_NOATIME = 01000000;
static const int DAXFS_AT_EMPTY_PATH = 0x1000;
static const int DAXFS_AT_EACCESS = 0x200;
static const int DAXFS_AT_SYMLINK_NOFOLLOW = 0x100;
static const int DAXFS_AT_REMOVEDIR = 0x200;
static const int DAXFS_AT_FDCWD = -100;
static const int DAXFS_SEEK_DATA = 3;
static const int DAXFS_SEEK_HOLE = 4;
static const int DAXFS_F_OFD_GETLK = 36;
static const int DAXFS_F_OFD_SETLK = 37;
static const int DAXFS_F_OFD_SETLKW = 38;
static const unsigned int DAXFS_RENAME_NOREPLACE = 1;
static const unsigned int DAXFS_RENAME_EXCHANGE = 2;
static const unsigned int DAXFS_RENAME_WHITEOUT = 4;
static const unsigned long DAXFS_MS_NOSUID = 2;
static const unsigned long DAXFS_MS_NODEV = 4;
static const int DAXFS_MNT_DETACH = 2;
static const long DAXFS_UTIME_NOW = ((1l << 30) - 1l);
static const long DAXFS_UTIME_OMIT = ((1l << 30) - 2l);

/// FUSE device ioctls (include/uapi/linux/fuse.h, 7.40+).
static const unsigned long DAXFS_FUSE_DEV_IOC_CLONE = 0x8004E500UL;
static const unsigned long DAXFS_FUSE_DEV_IOC_BACKING_OPEN = 0x4010E501UL;
static const unsigned long DAXFS_FUSE_DEV_IOC_BACKING_CLOSE = 0x4004E502UL;

int daxfs_errno(void);
void daxfs_set_errno(int value);
int daxfs_openat(int dirfd, const char *path, int flags, unsigned int mode);
int daxfs_ioctl_ptr(int fd, unsigned long request, void *arg);
/// fcntl with a `struct flock` built from plain fields (F_OFD_* and classic).
int daxfs_fcntl_lock(int fd, int cmd, short *type, short whence, int64_t *start, int64_t *len, int32_t *pid);
int daxfs_renameat2(int olddir, const char *oldpath, int newdir, const char *newpath, unsigned int flags);
long daxfs_getdents64(int fd, void *buffer, size_t size);
ssize_t daxfs_copy_file_range(int fd_in, int64_t *off_in, int fd_out, int64_t *off_out, size_t len, unsigned int flags);
int daxfs_fallocate(int fd, int mode, int64_t offset, int64_t len);
uint64_t daxfs_makedev(unsigned int major, unsigned int minor);
unsigned int daxfs_major(uint64_t dev);
unsigned int daxfs_minor(uint64_t dev);
int daxfs_syncfs(int fd);
int daxfs_set_thread_name(const char *name);

// PassthroughFS: xattr calls (sys/xattr.h is not in Swift's Glibc module),
// flock, and a per-thread umask.
ssize_t daxfs_getxattr(const char *path, const char *name, void *value, size_t size);
int daxfs_setxattr(const char *path, const char *name, const void *value, size_t size, int flags);
ssize_t daxfs_listxattr(const char *path, char *list, size_t size);
int daxfs_removexattr(const char *path, const char *name);
/// flock(2); Swift cannot call it because `struct flock` shares the name.
int daxfs_flock(int fd, int operation);
/// Gives the calling thread its own fs_struct (unshare(CLONE_FS)) and sets its
/// umask to 0, once per thread, so that modes the kernel already masked are
/// used as sent. Returns 0, or -1 with errno.

/// Makes the calling thread's filesystem credentials (fsuid, fsgid) those of
/// a request's caller; a no-op when they already are. The first switch away
/// from root drops the thread's supplementary groups (raw setgroups: only this
/// thread). Returns 0, or -1 with errno when the kernel refused.
int daxfs_become(unsigned int uid, unsigned int gid);
/// Like `daxfs_become`, with the caller's supplementary groups (count 0 = none).
int daxfs_become_with_groups(unsigned int uid, unsigned int gid, const unsigned int *groups, int count);
/// Gives the calling thread its own umask (unshare(CLONE_FS) once) set to `mask`.
int daxfs_thread_set_umask(unsigned int mask);

/// Unix-socket messages with descriptors (SCM_RIGHTS), whose cmsg macros
/// Swift cannot import. Return bytes sent/received or -1 with errno; on
/// receive, `*nfds` is set to the number of descriptors taken (extra ones are closed).
long daxfs_send_with_fds(int sock, const void *buffer, size_t length, const int *fds, int nfds);
long daxfs_recv_with_fds(int sock, void *buffer, size_t length, int *fds, int maxfds, int *nfds);
int daxfs_eventfd(unsigned int initial, int flags);
/// memfd_create(name, MFD_CLOEXEC).
int daxfs_memfd(const char *name);
static const int DAXFS_EFD_CLOEXEC = 02000000;
static const int DAXFS_EFD_NONBLOCK = 04000;

/// Ring-index accesses shared with another process (virtqueues).
uint16_t daxfs_load_acquire_u16(const volatile void *address);
void daxfs_store_release_u16(volatile void *address, uint16_t value);
void daxfs_fence(void);
/// Host-change events for cache invalidation (fanotify on the whole
/// filesystem of `path`, reporting directory handles with names and object
/// handles). Returns the fanotify descriptor, or -1 with errno (EPERM
/// without CAP_SYS_ADMIN).
int daxfs_fanotify_watch(const char *path, uint64_t mask);
/// A fanotify group of pre-content permission events (FAN_CLASS_PRE_CONTENT,
/// non-blocking, FAN_REPORT_TID; event descriptors O_RDONLY | O_LARGEFILE |
/// O_CLOEXEC), or -1 with errno.
int daxfs_fanotify_pre_content(void);
/// fanotify_mark(group, flags, mask, fd, NULL): marks the inode behind `fd`.
int daxfs_fanotify_mark_inode(int group, unsigned int flags, uint64_t mask, int fd);
/// FAN_PRE_ACCESS (Linux 6.14): a read, write or truncation of a marked file
/// waits until the group answers; a truncation's range is {new size, 0}.
static const uint64_t DAXFS_FAN_PRE_ACCESS = 0x00100000;
static const uint64_t DAXFS_FAN_OPEN_PERM = 0x00010000;
static const uint8_t DAXFS_FAN_EVENT_INFO_TYPE_RANGE = 6;
static const unsigned int DAXFS_FAN_MARK_ADD = 0x00000001;
static const unsigned int DAXFS_FAN_MARK_REMOVE = 0x00000002;
static const uint32_t DAXFS_FAN_ALLOW = 0x01;
/// The pid of the process at the other end of Unix socket `sock`
/// (SO_PEERCRED), or -1 with errno.
int daxfs_peer_pid(int sock);
/// open_by_handle_at(mount_fd, handle, flags); `handle` is a struct file_handle.
int daxfs_open_by_handle(int mount_fd, const void *handle, int flags);
/// The same with this thread's filesystem uid set to 0 for the call, so the
/// capability it needs (CAP_DAC_READ_SEARCH) is effective even while the
/// thread acts as a caller (`daxfs_become`); the caller's uid is restored.
int daxfs_open_by_handle_privileged(int mount_fd, const void *handle, int flags);
/// name_to_handle_at(fd, "", handle, mount_id, AT_EMPTY_PATH): the handle of
/// the inode behind `fd` (O_PATH allowed). `handle` is a struct file_handle
/// whose handle_bytes says how much room follows it.
int daxfs_handle_of(int fd, void *handle, int *mount_id);
/// Room for any file handle (MAX_HANDLE_SZ) after the 8-byte header.
static const int DAXFS_MAX_HANDLE_BYTES = 128;
static const uint64_t DAXFS_FAN_MODIFY = 0x2;
static const uint64_t DAXFS_FAN_ATTRIB = 0x4;
static const uint64_t DAXFS_FAN_CLOSE_WRITE = 0x8;
static const uint64_t DAXFS_FAN_MOVED_FROM = 0x40;
static const uint64_t DAXFS_FAN_MOVED_TO = 0x80;
static const uint64_t DAXFS_FAN_CREATE = 0x100;
static const uint64_t DAXFS_FAN_DELETE = 0x200;
static const uint64_t DAXFS_FAN_DELETE_SELF = 0x400;
static const uint64_t DAXFS_FAN_MOVE_SELF = 0x800;
static const uint64_t DAXFS_FAN_Q_OVERFLOW = 0x4000;
static const uint64_t DAXFS_FAN_ONDIR = 0x40000000;
static const int DAXFS_FAN_EVENT_INFO_TYPE_FID = 1;
static const int DAXFS_FAN_EVENT_INFO_TYPE_DFID_NAME = 2;
static const int DAXFS_FAN_EVENT_INFO_TYPE_DFID = 3;

/// Counters shared with another process (direct mmap rings).
uint64_t daxfs_load_acquire_u64(const volatile void *address);
void daxfs_store_release_u64(volatile void *address, uint64_t value);

/// Fault-safe copies for DAX windows. A window page whose file range was
/// truncated away raises SIGBUS on access; these copies catch it on the
/// calling thread and return the number of bytes copied before the fault.
/// `daxfs_install_fault_handler` must run once before (idempotent). A SIGBUS
/// outside a safe copy still kills the process as usual.
int daxfs_install_fault_handler(void);
/// Guest memory whose file the frontend may shrink under the backend: a
/// SIGBUS inside [start, start+length) maps a private zero page over the
/// faulting page, sets *poisoned to 1 and lets the access go on (the
/// connection is then closed by its owner). The fault handler must be
/// installed. Returns a slot for `daxfs_unguard_region`, or -1 when all
/// 4,096 are taken.
int daxfs_guard_region(void *start, size_t length, int *poisoned);
void daxfs_unguard_region(int slot);
/// Reads an int written by the fault handler (acquire).
int daxfs_load_acquire_int(const int *address);
size_t daxfs_safe_copy(void *dst, const void *src, size_t n);

#include "daxfs_sandbox.h"
#include "daxfs_seccomp.h"

#endif
