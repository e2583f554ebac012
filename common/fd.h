/* fd.h: what every layer of fusiond shares: the error convention, monotonic time and a few
 * helpers.  The lowest layer (common/): server -> engine -> fusion -> backends -> common.
 * Error convention (libuv-style): functions return int, 0 on success, a negative code on
 * failure: -errno values (-ENOMEM, -EINVAL, -ENOENT, ...) or one of the FD_E* codes below.
 * fd_strerror() names any of them.  Thread-safe; no state. */
#ifndef FD_H
#define FD_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

enum {
    FD_EFORMAT   = -1000, /* malformed input file or data */
    FD_ETRUNC    = -1001, /* input ends early */
    FD_EVERSION  = -1002, /* unsupported format version */
    FD_ETYPE     = -1003, /* value of the wrong type */
    FD_EUNSUP    = -1004, /* valid but not supported (architecture, tensor type, ...) */
    FD_EDUP      = -1005, /* duplicate key or name */
    FD_ERANGE    = -1006, /* value or size out of range, overflow */
    FD_ESHAPE    = -1007, /* tensor of the wrong shape */
    FD_ECTX      = -1008, /* does not fit in the context window */
    FD_EFULL     = -1009, /* queue or cache full: try later */
    FD_ECANCEL   = -1010, /* cancelled */
    FD_ETIMEOUT  = -1011, /* time limit reached */
    FD_EBACKEND  = -1012, /* backend failure (device error) */
    FD_ECONFIG   = -1013, /* bad configuration */
};

/* Returns a static string describing rc (negative errno or FD_E*). */
const char *fd_strerror(int rc);

/* Monotonic clock, nanoseconds and seconds. */
uint64_t fd_now_ns(void);
double fd_now_s(void);

/* Size helpers that report overflow: return 0 and set *out, or FD_ERANGE. */
int fd_mul_size(size_t a, size_t b, size_t *out);
int fd_add_size(size_t a, size_t b, size_t *out);

/* Allocation that aborts with a message: for start-up structures only.  Request-driven
 * allocations use malloc and return -ENOMEM instead (style.md, rule 3). */
void *fd_xmalloc(size_t n);
void *fd_xcalloc(size_t n, size_t m);
char *fd_xstrdup(const char *s);

#define FD_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define FD_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FD_MAX(a, b) ((a) > (b) ? (a) : (b))

/* The value of the hexadecimal digit c (0-9, a-f, A-F), or -1 when c is none (c < 0 too). */
static inline int fd_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#if defined(__GNUC__)
#define FD_LIKELY(x) __builtin_expect(!!(x), 1)
#define FD_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define FD_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define FD_LIKELY(x) (x)
#define FD_UNLIKELY(x) (x)
#define FD_PRINTF(f, a)
#endif

/* Writes a message into err[errlen] (printf format), nothing when err is NULL or errlen 0:
 * how loaders and parsers hand their caller a readable reason beside the return code. */
void fd_set_err(char *err, size_t errlen, const char *fmt, ...) FD_PRINTF(3, 4);

#endif
