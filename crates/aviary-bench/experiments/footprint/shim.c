/*
 * An experiment, not part of any build: preloaded into Mosquitto, it runs LINES extra
 * cache lines of code (two instructions each, one taken jump to the next line) before
 * every write(), so that Mosquitto's message path spans about as many instruction cache
 * lines as Aviary's while costing almost nothing on warm caches. Comparing Mosquitto with
 * and without it in the same alternating run shows what the size of the code a message
 * runs through does to latency on this machine (see README.md, "the QoS 0 tail").
 *
 *   gcc -O2 -shared -fPIC -o shim560.so shim.c -ldl
 *   gcc -O2 -shared -fPIC -DLINES=0 -o shim0.so shim.c -ldl     (the control)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <unistd.h>

#ifndef LINES
#define LINES 560
#endif
#define STRING(x) #x
#define EXPAND(x) STRING(x)

__attribute__((noinline)) static void footprint(void)
{
    __asm__ volatile(".p2align 6\n"
                     ".rept " EXPAND(LINES) "\n"
                     "addq $1, %%rax\n"
                     "jmp 1f\n"
                     ".p2align 6\n"
                     "1:\n"
                     ".endr\n" ::: "rax", "cc", "memory");
}

static ssize_t (*real_write)(int, const void *, size_t);

ssize_t write(int fd, const void *buf, size_t count)
{
    if (!real_write)
        real_write = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    footprint();
    return real_write(fd, buf, count);
}
