#define _GNU_SOURCE
#include <sched.h>
#include <stddef.h>
#include <sys/mount.h>
#include "FuzzShim.h"

int fuzz_private_tmpfs(const char *path) {
    if (unshare(CLONE_NEWNS) != 0) return -1;
    // Keep our mounts out of the host's namespace (systemd makes / shared).
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return -1;
    return mount("daxfs-fuzz", path, "tmpfs", MS_NODEV | MS_NOSUID, "size=64m,mode=0755");
}
