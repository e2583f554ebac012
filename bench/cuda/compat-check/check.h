/* check.h (bench/cuda/compat-check): the small part of the Check unit-test API that
 * tests/test_cuda.c, tests/test_cpu_backend.c and tests/testutil.h use, for building them on
 * the GPU machine (test_cpu_backend for its host's AVX-512 kernels), whose image has no Check
 * development files (bench/cuda/cuda-all.sh puts this folder on the include
 * path only when <check.h> is missing).  Tests run in-process, one after another; a failed
 * assertion ends its test (longjmp) and the runner counts it.  Header-only: one test program. */
#ifndef FD_COMPAT_CHECK_H
#define FD_COMPAT_CHECK_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct ckl_test {
    const char *name;
    void (*fn)(int _i);
} ckl_test;
typedef struct TCase {
    const char *name;
    const ckl_test *t[128];
    int lo[128], hi[128]; /* tcase_add_loop_test's range; [0, 1) for a plain test */
    int n;
} TCase;
typedef struct Suite {
    const char *name;
    TCase *tc[16];
    int n;
} Suite;
typedef struct SRunner {
    Suite *s;
    int failed;
} SRunner;
enum { CK_NORMAL = 0 };

static jmp_buf ckl_jmp;

static void ckl_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: FAIL: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    longjmp(ckl_jmp, 1);
}

#define START_TEST(name)                                                                       \
    static void name##_fn(int _i);                                                             \
    static const ckl_test name##_t = {#name, name##_fn};                                       \
    static const ckl_test *const name = &name##_t;                                             \
    static void name##_fn(int _i)                                                              \
    {                                                                                          \
        (void)_i;
#define END_TEST }

#define ck_abort_msg(...) ckl_fail(__FILE__, __LINE__, __VA_ARGS__)
#define ck_assert_msg(c, ...)                                                                  \
    do {                                                                                       \
        if (!(c))                                                                              \
            ckl_fail(__FILE__, __LINE__, __VA_ARGS__);                                         \
    } while (0)
#define ck_assert(c) ck_assert_msg(c, "assertion '%s' failed", #c)
#define ckl_cmp(T, F, a, op, b)                                                                \
    do {                                                                                       \
        T a_ = (T)(a), b_ = (T)(b);                                                            \
        if (!(a_ op b_))                                                                       \
            ckl_fail(__FILE__, __LINE__, "'%s %s %s' failed: " F " vs " F, #a, #op, #b, a_, b_); \
    } while (0)
#define ck_assert_int_eq(a, b) ckl_cmp(intmax_t, "%jd", a, ==, b)
#define ck_assert_int_ne(a, b) ckl_cmp(intmax_t, "%jd", a, !=, b)
#define ck_assert_int_lt(a, b) ckl_cmp(intmax_t, "%jd", a, <, b)
#define ck_assert_int_le(a, b) ckl_cmp(intmax_t, "%jd", a, <=, b)
#define ck_assert_int_gt(a, b) ckl_cmp(intmax_t, "%jd", a, >, b)
#define ck_assert_int_ge(a, b) ckl_cmp(intmax_t, "%jd", a, >=, b)
#define ck_assert_uint_eq(a, b) ckl_cmp(uintmax_t, "%ju", a, ==, b)
#define ck_assert_uint_gt(a, b) ckl_cmp(uintmax_t, "%ju", a, >, b)
#define ck_assert_ptr_nonnull(p) ck_assert_msg((p) != NULL, "'%s' is NULL", #p)
#define ck_assert_ptr_null(p) ck_assert_msg((p) == NULL, "'%s' is not NULL", #p)
#define ck_assert_str_eq(a, b)                                                                 \
    ck_assert_msg(strcmp((a), (b)) == 0, "'%s' != '%s'", (a), (b))

static inline Suite *suite_create(const char *name)
{
    Suite *s = calloc(1, sizeof(*s));
    s->name = name;
    return s;
}
static inline TCase *tcase_create(const char *name)
{
    TCase *t = calloc(1, sizeof(*t));
    t->name = name;
    return t;
}
static inline void tcase_set_timeout(TCase *t, double s) { (void)t; (void)s; }
static inline void tcase_add_loop_test(TCase *t, const ckl_test *x, int lo, int hi)
{
    if (t->n == (int)(sizeof(t->t) / sizeof(t->t[0]))) {
        fprintf(stderr, "compat check.h: too many tests in %s\n", t->name);
        exit(2);
    }
    t->t[t->n] = x;
    t->lo[t->n] = lo;
    t->hi[t->n++] = hi;
}
static inline void tcase_add_test(TCase *t, const ckl_test *x) { tcase_add_loop_test(t, x, 0, 1); }
static inline void suite_add_tcase(Suite *s, TCase *t) { s->tc[s->n++] = t; }
static inline SRunner *srunner_create(Suite *s)
{
    SRunner *r = calloc(1, sizeof(*r));
    r->s = s;
    return r;
}
static inline void srunner_run_all(SRunner *r, int mode)
{
    (void)mode;
    int total = 0;
    for (int i = 0; i < r->s->n; i++)
        for (int j = 0; j < r->s->tc[i]->n; j++)
            for (int k = r->s->tc[i]->lo[j]; k < r->s->tc[i]->hi[j]; k++) {
                const ckl_test *t = r->s->tc[i]->t[j];
                struct timespec a, b;
                clock_gettime(CLOCK_MONOTONIC, &a);
                int failed = setjmp(ckl_jmp);
                if (!failed)
                    t->fn(k);
                clock_gettime(CLOCK_MONOTONIC, &b);
                fprintf(stderr, "%s: %s:%s:%d (%.2f s)\n", failed ? "FAIL" : "PASS",
                        r->s->tc[i]->name, t->name, k,
                        (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec));
                r->failed += failed;
                total++;
            }
    fprintf(stderr, "%d%%: Checks: %d, Failures: %d\n",
            total ? 100 * (total - r->failed) / total : 100, total, r->failed);
}
static inline int srunner_ntests_failed(SRunner *r) { return r->failed; }
static inline void srunner_free(SRunner *r)
{
    for (int i = 0; i < r->s->n; i++)
        free(r->s->tc[i]);
    free(r->s);
    free(r);
}

#endif
