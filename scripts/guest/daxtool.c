/* A small static helper for the DAX guest checks (check-dax.sh); busybox has
 * no statx and no mmap. Built on the host by build-initramfs.sh with
 * gcc -static.
 *   daxtool statx FILE                 prints "dax=0|1 attributes=0x.. mask=0x.."
 *   daxtool now                        prints CLOCK_MONOTONIC in seconds
 *   daxtool mmap-write FILE OFF STR [msync]   stores STR at OFF through MAP_SHARED
 *   daxtool mmap-read FILE OFF LEN     prints LEN bytes at OFF read through MAP_SHARED
 *   daxtool mmap-poll FILE OFF STR SECONDS LINE
 *       maps the file, touches it, writes LINE to /dev/console, then polls the
 *       mapping until STR appears at OFF (exit 0) or SECONDS pass (exit 1). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef STATX_ATTR_DAX
#define STATX_ATTR_DAX 0x00200000
#endif

static int die(const char *what, const char *file) {
    fprintf(stderr, "daxtool: %s %s: %s\n", what, file, strerror(errno));
    return 1;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Maps [off, off + len) of file (page-aligned start), MAP_SHARED. */
static char *map_range(const char *file, int prot, off_t off, size_t len, int *fd_out, void **base, size_t *maplen) {
    int fd = open(file, (prot & PROT_WRITE) ? O_RDWR : O_RDONLY);
    if (fd < 0) { die("open", file); return NULL; }
    struct stat st;
    if (fstat(fd, &st) < 0) { die("fstat", file); close(fd); return NULL; }
    if ((off_t)(off + len) > st.st_size) {
        fprintf(stderr, "daxtool: %s is %lld bytes, range ends at %lld\n", file, (long long)st.st_size, (long long)(off + len));
        close(fd); return NULL;
    }
    off_t start = off & ~(off_t)4095;
    *maplen = off - start + len;
    *base = mmap(NULL, *maplen, prot, MAP_SHARED, fd, start);
    if (*base == MAP_FAILED) { die("mmap", file); close(fd); return NULL; }
    *fd_out = fd;
    return (char *)*base + (off - start);
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "statx") == 0) {
        struct statx stx;
        if (statx(AT_FDCWD, argv[2], AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) < 0) return die("statx", argv[2]);
        printf("dax=%d attributes=0x%llx mask=0x%llx\n", (stx.stx_attributes & STATX_ATTR_DAX) ? 1 : 0,
               (unsigned long long)stx.stx_attributes, (unsigned long long)stx.stx_attributes_mask);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "now") == 0) {
        printf("%.3f\n", now());
        return 0;
    }
    if (argc >= 5 && strcmp(argv[1], "mmap-write") == 0) {
        int fd; void *base; size_t maplen, len = strlen(argv[4]);
        char *p = map_range(argv[2], PROT_READ | PROT_WRITE, atoll(argv[3]), len, &fd, &base, &maplen);
        if (!p) return 1;
        memcpy(p, argv[4], len);
        if (argc >= 6 && strcmp(argv[5], "msync") == 0 && msync(base, maplen, MS_SYNC) < 0) return die("msync", argv[2]);
        munmap(base, maplen);
        close(fd);
        return 0;
    }
    if (argc >= 5 && strcmp(argv[1], "mmap-read") == 0) {
        int fd; void *base; size_t maplen, len = atoll(argv[4]);
        char *p = map_range(argv[2], PROT_READ, atoll(argv[3]), len, &fd, &base, &maplen);
        if (!p) return 1;
        fwrite(p, 1, len, stdout);
        putchar('\n');
        return 0;
    }
    if (argc >= 7 && strcmp(argv[1], "mmap-poll") == 0) {
        int fd; void *base; size_t maplen, len = strlen(argv[4]);
        volatile char *p = map_range(argv[2], PROT_READ, atoll(argv[3]), len, &fd, &base, &maplen);
        if (!p) return 1;
        char seen[256];
        size_t show = len < sizeof seen - 1 ? len : sizeof seen - 1;
        for (size_t i = 0; i < show; i++) seen[i] = p[i];   /* fault the range in before the host writes */
        int console = open("/dev/console", O_WRONLY);
        if (console < 0) return die("open", "/dev/console");
        dprintf(console, "%s\n", argv[6]);
        close(console);
        double deadline = now() + atof(argv[5]);
        for (;;) {
            int same = 1;
            for (size_t i = 0; i < len; i++) if (p[i] != argv[4][i]) { same = 0; break; }
            if (same) return 0;
            if (now() > deadline) break;
            usleep(10000);
        }
        for (size_t i = 0; i < show; i++) seen[i] = (p[i] >= 32 && p[i] < 127) ? p[i] : '.';
        seen[show] = 0;
        fprintf(stderr, "daxtool: mapping still shows '%s' after %s s, expected '%s'\n", seen, argv[5], argv[4]);
        return 1;
    }
    fprintf(stderr, "usage: daxtool statx FILE | now | mmap-write FILE OFF STR [msync] | mmap-read FILE OFF LEN | mmap-poll FILE OFF STR SECONDS LINE\n");
    return 2;
}
