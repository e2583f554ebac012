/* fd.c: error names, clocks and checked size arithmetic (see fd.h). */
#include "common/fd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *fd_strerror(int rc)
{
    switch (rc) {
    case 0: return "success";
    case FD_EFORMAT: return "malformed data";
    case FD_ETRUNC: return "truncated data";
    case FD_EVERSION: return "unsupported version";
    case FD_ETYPE: return "wrong type";
    case FD_EUNSUP: return "not supported";
    case FD_EDUP: return "duplicate";
    case FD_ERANGE: return "out of range";
    case FD_ESHAPE: return "wrong shape";
    case FD_ECTX: return "exceeds the context window";
    case FD_EFULL: return "full, try again later";
    case FD_ECANCEL: return "cancelled";
    case FD_ETIMEOUT: return "time limit reached";
    case FD_EBACKEND: return "backend error";
    case FD_ECONFIG: return "bad configuration";
    default: break;
    }
    if (rc < 0 && rc > -4096)
        return strerror(-rc);
    return "unknown error";
}

uint64_t fd_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double fd_now_s(void)
{
    return (double)fd_now_ns() * 1e-9;
}

int fd_mul_size(size_t a, size_t b, size_t *out)
{
    if (b != 0 && a > SIZE_MAX / b)
        return FD_ERANGE;
    *out = a * b;
    return 0;
}

int fd_add_size(size_t a, size_t b, size_t *out)
{
    if (a > SIZE_MAX - b)
        return FD_ERANGE;
    *out = a + b;
    return 0;
}

static void oom(size_t n)
{
    fprintf(stderr, "fusiond: out of memory allocating %zu bytes at start-up\n", n);
    abort();
}

void *fd_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *fd_xcalloc(size_t n, size_t m)
{
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p)
        oom(n * m);
    return p;
}

char *fd_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = fd_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

void fd_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}
