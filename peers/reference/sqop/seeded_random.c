/* getrandom(2) for sqop under Jabberwock: the bytes come from JABBERWOCK_SEED (64 hex digits,
 * drawn by the adapter from the call's seed) through SplitMix64 over four seeded lanes, so a run
 * of sqop is the same for the same seed. Loaded with LD_PRELOAD; a simulator's test stream, not a
 * source of secrets. Without JABBERWOCK_SEED it falls back to the kernel. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>
#include <stdarg.h>
#include <dlfcn.h>

static uint64_t lanes[4];
static uint64_t counter;
static int state = 0; /* 0: not read yet, 1: seeded, 2: no seed */

static uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void init(void) {
    const char *s = getenv("JABBERWOCK_SEED");
    state = 2;
    if (!s || strlen(s) != 64) return;
    for (int i = 0; i < 4; i++) {
        char part[17];
        memcpy(part, s + 16 * i, 16);
        part[16] = 0;
        lanes[i] = strtoull(part, NULL, 16);
    }
    state = 1;
}

static uint64_t next(void) {
    uint64_t c = counter++;
    return mix(lanes[0] ^ mix(c ^ lanes[1])) ^ mix(lanes[2] + mix(c + lanes[3]));
}

ssize_t getrandom(void *buf, size_t len, unsigned int flags) {
    if (state == 0) init();
    if (state != 1) {
        static ssize_t (*real)(void *, size_t, unsigned int) = 0;
        if (!real) real = (ssize_t (*)(void *, size_t, unsigned int))dlsym(RTLD_NEXT, "getrandom");
        return real(buf, len, flags);
    }
    unsigned char *p = buf;
    size_t done = 0;
    while (done < len) {
        uint64_t v = next();
        size_t n = len - done < 8 ? len - done : 8;
        memcpy(p + done, &v, n);
        done += n;
    }
    return (ssize_t)len;
}

int getentropy(void *buf, size_t len) {
    return getrandom(buf, len, 0) == (ssize_t)len ? 0 : -1;
}

/* Rust's getrandom crate calls the system call through syscall(3). */
long syscall(long number, ...) {
    va_list ap;
    long a[6];
    va_start(ap, number);
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_getrandom) {
        if (state == 0) init();
        if (state == 1) return getrandom((void *)a[0], (size_t)a[1], (unsigned int)a[2]);
    }
    static long (*real)(long, ...) = 0;
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
