/* A small static helper for the DAX guest checks (check-dax.sh, check-truncate.sh); busybox has
 * no statx and no mmap. Built on the host by build-initramfs.sh with
 * gcc -static.
 *   daxtool statx FILE                 prints "dax=0|1 attributes=0x.. mask=0x.."
 *   daxtool now                        prints CLOCK_MONOTONIC in seconds
 *   daxtool mmap-write FILE OFF STR [msync]   stores STR at OFF through MAP_SHARED
 *   daxtool mmap-read FILE OFF LEN     prints LEN bytes at OFF read through MAP_SHARED
 *   daxtool mmap-poll FILE OFF STR SECONDS LINE
 *       maps the file, touches it, writes LINE to /dev/console, then polls the
 *       mapping until STR appears at OFF (exit 0) or SECONDS pass (exit 1).
 * For check-truncate.sh (files whose every 4 KiB block b holds 512 copies of
 * the 8 bytes {u32 b, u32 TRUNC_MAGIC}, little-endian; host-truncate.py):
 *   daxtool trunc-read FILE DONE SECONDS READY
 *       preads random 4 KiB blocks until the file DONE exists (or SECONDS
 *       pass), counting correct blocks, short reads, reads at EOF, all-zero
 *       blocks, partial ones (right or zero 8 bytes at a time), other wrong
 *       bytes and errors (by errno); creates READY after the first read,
 *       prints a PROGRESS line every 0.2 s and FIGURE lines
 *       truncate_read_{correct,short,eof,zeros,partial,wrong,errors,sigbus}
 *   daxtool trunc-mmap FILE DONE SECONDS READY
 *       the same through one MAP_SHARED mapping of the whole file (its size
 *       at the start), catching SIGBUS (sigsetjmp) to count it and go on:
 *       FIGURE truncate_mmap_{correct,...,sigbus}
 *   daxtool trunc-verify FILE          reads every block once (read(2)) and
 *       prints FIGURE truncate_final_{size,blocks_correct,blocks_bad} */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdarg.h>
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

/* check-truncate.sh: the block pattern, the readers and their counts. */
#define TRUNC_MAGIC 0x434e5254u   /* "TRNC" */
#define BLOCK 4096

/* partial: every 8 bytes either right or zero, some of each (a truncation or
 * a restore that crossed the block); wrong: any other bytes. */
enum { C_CORRECT, C_SHORT, C_EOF, C_ZEROS, C_PARTIAL, C_WRONG, C_ERRORS, C_SIGBUS, C_COUNT };
static const char *const class_names[C_COUNT] = { "correct", "short", "eof", "zeros", "partial", "wrong", "errors", "sigbus" };

struct counts {
    unsigned long long n[C_COUNT];
    unsigned long long errnos[160];        /* errors by errno */
    char first_wrong[200];                 /* the first wrong block, described */
};

static int classify(const unsigned char *buf, uint32_t block) {
    const uint32_t *w = (const uint32_t *)buf;
    int zero = 0, right = 0, other = 0;
    for (int i = 0; i < BLOCK / 4; i += 2) {
        if (w[i] == block && w[i + 1] == TRUNC_MAGIC) right++;
        else if (!(w[i] | w[i + 1])) zero++;
        else other++;
    }
    return other ? C_WRONG : !zero ? C_CORRECT : !right ? C_ZEROS : C_PARTIAL;
}

static void note_wrong(struct counts *c, const unsigned char *buf, uint32_t block) {
    if (c->first_wrong[0]) return;
    const uint32_t *w = (const uint32_t *)buf;
    int right = 0, zero = 0;
    for (int i = 0; i < BLOCK / 4; i += 2) {
        if (w[i] == block && w[i + 1] == TRUNC_MAGIC) right++;
        else if (!(w[i] | w[i + 1])) zero++;
    }
    snprintf(c->first_wrong, sizeof c->first_wrong, "block=%u words_right=%d words_zero=%d first=%08x:%08x",
             block, right, zero, w[0], w[1]);
}

static uint64_t rng_state;
static uint64_t rng(void) {   /* xorshift64* */
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static void line_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void line_out(const char *fmt, ...) {   /* one write(2) per line: readers share the console */
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof text - 2) n = sizeof text - 2;
    text[n++] = '\n';
    (void)!write(1, text, n);
}

static void print_counts(const char *label, const char *prefix, const struct counts *c, double t) {
    char text[600];
    int n = snprintf(text, sizeof text, "%s %s t=%.1f", label, prefix, t);
    for (int k = 0; k < C_COUNT && n < (int)sizeof text; k++)
        n += snprintf(text + n, sizeof text - n, " %s=%llu", class_names[k], c->n[k]);
    line_out("%s", text);
}

static void print_figures(const char *prefix, const struct counts *c, double t) {
    for (int k = 0; k < C_COUNT; k++) line_out("FIGURE %s_%s %llu", prefix, class_names[k], c->n[k]);
    char errs[400] = "";
    int n = 0;
    for (int e = 0; e < 160 && n < (int)sizeof errs; e++)
        if (c->errnos[e]) n += snprintf(errs + n, sizeof errs - n, " %s:%llu", strerrorname_np(e) ? strerrorname_np(e) : "?", c->errnos[e]);
    line_out("INFO %s seconds=%.1f errnos:%s first_wrong: %s", prefix, t, n ? errs : " none", c->first_wrong[0] ? c->first_wrong : "none");
}

static sigjmp_buf fault_jump;
static volatile sig_atomic_t fault_armed;
static void on_sigbus(int sig) {
    (void)sig;
    if (fault_armed) siglongjmp(fault_jump, 1);
    signal(SIGBUS, SIG_DFL);
    raise(SIGBUS);
}

/* The reader loop of trunc-read (mapped == 0) and trunc-mmap (mapped == 1). */
static int trunc_reader(const char *file, const char *done, double seconds, const char *ready, int mapped) {
    const char *prefix = mapped ? "truncate_mmap" : "truncate_read";
    int fd = open(file, O_RDONLY);
    if (fd < 0) return die("open", file);
    struct stat st;
    if (fstat(fd, &st) < 0) return die("fstat", file);
    uint64_t blocks = st.st_size / BLOCK;
    if (blocks == 0) { fprintf(stderr, "daxtool: %s is empty\n", file); return 1; }
    volatile unsigned char *map = NULL;
    if (mapped) {
        void *m = mmap(NULL, blocks * BLOCK, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) return die("mmap", file);
        map = m;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigbus;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGBUS, &sa, NULL);
    }
    static struct counts c;
    static unsigned char buf[BLOCK] __attribute__((aligned(8)));
    rng_state = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull ^ (uint64_t)(now() * 1e6) ^ (mapped ? 0x5555 : 0);
    if (!rng_state) rng_state = 1;
    double start = now(), next_poll = start, next_report = start + 0.2, end = start + seconds;
    int made_ready = 0;
    for (;;) {
        uint32_t block = rng() % blocks;
        int k;
        if (mapped) {
            fault_armed = 1;
            if (sigsetjmp(fault_jump, 1)) {
                fault_armed = 0;
                k = C_SIGBUS;
            } else {
                for (int i = 0; i < BLOCK; i += 8) *(uint64_t *)(buf + i) = *(volatile uint64_t *)(map + (uint64_t)block * BLOCK + i);
                fault_armed = 0;
                k = classify(buf, block);
            }
        } else {
            ssize_t got = pread(fd, buf, BLOCK, (off_t)block * BLOCK);
            if (got < 0) {
                k = C_ERRORS;
                if (errno < 160) c.errnos[errno]++;
            } else if (got == 0) k = C_EOF;
            else if (got < BLOCK) k = C_SHORT;
            else k = classify(buf, block);
        }
        c.n[k]++;
        if (k == C_WRONG && !c.first_wrong[0]) {   /* said at once: a VM that dies prints no summary */
            note_wrong(&c, buf, block);
            line_out("INFO %s first wrong block at t=%.2f: %s", prefix, now() - start, c.first_wrong);
        }
        if (!made_ready) {
            int r = open(ready, O_WRONLY | O_CREAT, 0644);
            if (r >= 0) close(r);
            made_ready = 1;
        }
        double t = now();
        if (t >= next_report) { print_counts("PROGRESS", prefix, &c, t - start); next_report = t + 0.2; }
        if (t >= next_poll) {
            if (access(done, F_OK) == 0 || t >= end) break;
            next_poll = t + 0.05;
        }
    }
    double t = now() - start;
    if (access(done, F_OK) != 0) line_out("INFO %s gave up after %.0f s without %s", prefix, seconds, done);
    print_figures(prefix, &c, t);
    return 0;
}

static int trunc_verify(const char *file) {
    int fd = open(file, O_RDONLY);
    if (fd < 0) return die("open", file);
    struct stat st;
    if (fstat(fd, &st) < 0) return die("fstat", file);
    static unsigned char buf[BLOCK] __attribute__((aligned(8)));
    unsigned long long good = 0, bad = 0;
    char first[120] = "none";
    for (uint64_t b = 0; b * BLOCK < (uint64_t)st.st_size; b++) {
        ssize_t got = pread(fd, buf, BLOCK, (off_t)b * BLOCK);
        int k = got < 0 ? C_ERRORS : got < BLOCK ? C_SHORT : classify(buf, b);
        if (k == C_CORRECT) good++;
        else if (bad++ == 0) snprintf(first, sizeof first, "block %llu: %s%s", (unsigned long long)b, class_names[k], got < 0 ? strerror(errno) : "");
    }
    line_out("FIGURE truncate_final_size %lld", (long long)st.st_size);
    line_out("FIGURE truncate_final_blocks_correct %llu", good);
    line_out("FIGURE truncate_final_blocks_bad %llu", bad);
    line_out("INFO truncate_final first bad: %s", first);
    return 0;
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
    if (argc >= 6 && strcmp(argv[1], "trunc-read") == 0) return trunc_reader(argv[2], argv[3], atof(argv[4]), argv[5], 0);
    if (argc >= 6 && strcmp(argv[1], "trunc-mmap") == 0) return trunc_reader(argv[2], argv[3], atof(argv[4]), argv[5], 1);
    if (argc >= 3 && strcmp(argv[1], "trunc-verify") == 0) return trunc_verify(argv[2]);
    fprintf(stderr, "usage: daxtool statx FILE | now | mmap-write FILE OFF STR [msync] | mmap-read FILE OFF LEN | mmap-poll FILE OFF STR SECONDS LINE\n"
                    "       | trunc-read FILE DONE SECONDS READY | trunc-mmap FILE DONE SECONDS READY | trunc-verify FILE\n");
    return 2;
}
