// Raw capability calls for daxfs-virtiofsd's --modcaps (Capabilities.swift).
// capget/capset have no glibc wrapper worth using (libcap is not a
// dependency); version 3 of the interface carries 64-bit sets in two halves.
#define _GNU_SOURCE 1
#include "daxfs_seccomp.h"
#include <errno.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int daxfs_capget(uint64_t *effective, uint64_t *permitted, uint64_t *inheritable) {
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    if (syscall(SYS_capget, &header, data) != 0) return -1;
    *effective = (uint64_t)data[1].effective << 32 | data[0].effective;
    *permitted = (uint64_t)data[1].permitted << 32 | data[0].permitted;
    *inheritable = (uint64_t)data[1].inheritable << 32 | data[0].inheritable;
    return 0;
}

int daxfs_capset(uint64_t effective, uint64_t permitted, uint64_t inheritable) {
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {
        { .effective = (uint32_t)effective, .permitted = (uint32_t)permitted, .inheritable = (uint32_t)inheritable },
        { .effective = (uint32_t)(effective >> 32), .permitted = (uint32_t)(permitted >> 32),
          .inheritable = (uint32_t)(inheritable >> 32) },
    };
    return (int)syscall(SYS_capset, &header, data);
}

int daxfs_capbset_read(int cap) { return prctl(PR_CAPBSET_READ, (unsigned long)cap, 0, 0, 0); }
int daxfs_capbset_drop(int cap) { return prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0, 0, 0); }
int daxfs_ambient_clear_all(void) { return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); }
int daxfs_ambient_is_set(int cap) { return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, (unsigned long)cap, 0, 0); }
int daxfs_securebits(void) { return prctl(PR_GET_SECUREBITS, 0, 0, 0, 0); }

int daxfs_thread_setresuid(unsigned int ruid, unsigned int euid, unsigned int suid) {
    return (int)syscall(SYS_setresuid, ruid, euid, suid);
}
int daxfs_thread_setresgid(unsigned int rgid, unsigned int egid, unsigned int sgid) {
    return (int)syscall(SYS_setresgid, rgid, egid, sgid);
}
int daxfs_gettid(void) { return (int)syscall(SYS_gettid); }
