/* perf.c: fusion-bench's throughput commands (see perf.h).
 *   roof   the limits: read bandwidth (a streaming read of a buffer far larger than the
 *          caches, on N threads) and OpenBLAS sgemm GFLOP/s (N threads);
 *   gemm   fb_matmul throughput per weight type and model shape, batch 1, 8, 64: GB/s of
 *          weights read and GFLOP/s, as fractions of the limits measured in the same run;
 *   norm   a norm -> product three ways: unfused, deferred with every thread reducing,
 *          deferred with one thread reducing while the others multiply;
 *   inscale a deferred-norm product with gamma folded into an F32 copy, against gamma as
 *          in_scale on the parts' own bytes (adjacent: one product; apart: one per part);
 *   llama  llama-bench-style prompt processing (pp) and decode (tg) tokens/s of a model file,
 *          plus batched decode of S sequences, with the achieved GB/s and GFLOP/s as
 *          fractions of the limits probed on the backend's threads right before and after
 *          every repetition (fb_roof).
 * Every figure is the median of repeated runs. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "bench/perf.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backends/backend.h"
#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "fusion/fold.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

typedef struct popts {
    int threads, reps, n_prompt, n_gen, seqs;
    int ab_seqs;            /* --ab decodes this many sequences: --seqs when given, else 1 */
    const char *model, *types, *models, *batches, *options, *ab;
    bool fusion;
    int mib;
} popts_t;

/* The clock every timing uses: wall time (default), or the process's CPU time (--clock cpu),
 * which preemption by other processes does not inflate: on a shared machine the only usable
 * one, for single-threaded runs (with N threads it sums their CPU time). */
static bool cpu_clock;

double bench_now_s(bool cpu)
{
    if (!cpu)
        return fd_now_s();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now_s(void)
{
    return bench_now_s(cpu_clock);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double med(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int n_threads(int t)
{
    if (t > 0)
        return t;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* ---- roof: read bandwidth and sgemm --------------------------------------------------- */

typedef struct rd_arg {
    const uint8_t *p;
    size_t n;
    uint64_t sink;
} rd_arg_t;

/* The read loops stream four interleaved quarters of the buffer at once, as the GEMV reads
 * four weight rows: one stream per thread leaves some CPUs' prefetchers idle (an Intel
 * Xeon read 20% less that way). */
#if defined(__x86_64__)
__attribute__((target("avx2"))) static uint64_t read_avx2(const uint8_t *p, size_t n)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t q = n / 4 & ~(size_t)63;
    for (size_t i = 0; i + 64 <= q; i += 64) {
        a0 = _mm256_add_epi64(a0, _mm256_add_epi64(_mm256_load_si256((const __m256i *)(p + i)),
                                                   _mm256_load_si256((const __m256i *)(p + i + 32))));
        a1 = _mm256_add_epi64(a1, _mm256_add_epi64(_mm256_load_si256((const __m256i *)(p + q + i)),
                                                   _mm256_load_si256((const __m256i *)(p + q + i + 32))));
        a2 = _mm256_add_epi64(a2, _mm256_add_epi64(_mm256_load_si256((const __m256i *)(p + 2 * q + i)),
                                                   _mm256_load_si256((const __m256i *)(p + 2 * q + i + 32))));
        a3 = _mm256_add_epi64(a3, _mm256_add_epi64(_mm256_load_si256((const __m256i *)(p + 3 * q + i)),
                                                   _mm256_load_si256((const __m256i *)(p + 3 * q + i + 32))));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t o[4];
    _mm256_storeu_si256((__m256i *)o, s);
    return o[0] + o[1] + o[2] + o[3];
}

__attribute__((target("avx512f"))) static uint64_t read_avx512(const uint8_t *p, size_t n)
{
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    size_t q = n / 4 & ~(size_t)63;
    for (size_t i = 0; i + 64 <= q; i += 64) {
        a0 = _mm512_add_epi64(a0, _mm512_load_si512(p + i));
        a1 = _mm512_add_epi64(a1, _mm512_load_si512(p + q + i));
        a2 = _mm512_add_epi64(a2, _mm512_load_si512(p + 2 * q + i));
        a3 = _mm512_add_epi64(a3, _mm512_load_si512(p + 3 * q + i));
    }
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
}
#endif

static uint64_t read_plain(const uint8_t *p, size_t n)
{
    const uint64_t *q = (const uint64_t *)p;
    uint64_t a[8] = {0};
    for (size_t i = 0; i + 8 <= n / 8; i += 8)
        for (int j = 0; j < 8; j++)
            a[j] += q[i + j];
    return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

static void *rd_main(void *v)
{
    rd_arg_t *a = v;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f")) {
        a->sink = read_avx512(a->p, a->n);
        return NULL;
    }
    if (__builtin_cpu_supports("avx2")) {
        a->sink = read_avx2(a->p, a->n);
        return NULL;
    }
#endif
    a->sink = read_plain(a->p, a->n);
    return NULL;
}

/* GB/s of a streaming read over a buffer of mib MiB split across nth threads (median). */
static double measure_bw(int nth, int reps, int mib)
{
    size_t n = (size_t)mib << 20;
    uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, 64, n))
        return 0;
    for (size_t i = 0; i < n; i += 4096)
        memset(buf + i, (int)(i >> 12), 4096);
    double *t = malloc(sizeof(double) * (size_t)reps);
    rd_arg_t *a = calloc((size_t)nth, sizeof(*a));
    pthread_t *th = calloc((size_t)nth, sizeof(*th));
    uint64_t sink = 0;
    for (int r = -1; r < reps; r++) {
        for (int i = 0; i < nth; i++) {
            size_t lo = n / (size_t)nth * (size_t)i & ~(size_t)127;
            size_t hi = i == nth - 1 ? n : n / (size_t)nth * (size_t)(i + 1) & ~(size_t)127;
            a[i] = (rd_arg_t){.p = buf + lo, .n = hi - lo};
        }
        double t0 = now_s();
        for (int i = 1; i < nth; i++)
            pthread_create(&th[i], NULL, rd_main, &a[i]);
        rd_main(&a[0]);
        for (int i = 1; i < nth; i++)
            pthread_join(th[i], NULL);
        double dt = now_s() - t0;
        for (int i = 0; i < nth; i++)
            sink += a[i].sink;
        if (r >= 0)
            t[r] = (double)n / dt * 1e-9;
    }
    double m = med(t, reps);
    if (sink == 42)
        fprintf(stderr, " ");
    free(t);
    free(a);
    free(th);
    free(buf);
    return m;
}

/* sgemm GFLOP/s, C (m x n) = A (m x k) B^T (n x k): a prefill-sized product (median). */
static double measure_sgemm(int nth, int reps)
{
    const int m = 512, n = 2048, k = 2048;
    float *A = malloc(sizeof(float) * (size_t)m * k), *B = malloc(sizeof(float) * (size_t)n * k);
    float *C = malloc(sizeof(float) * (size_t)m * n);
    for (size_t i = 0; i < (size_t)m * k; i++)
        A[i] = (float)((i * 7919) % 1000) * 1e-3f;
    for (size_t i = 0; i < (size_t)n * k; i++)
        B[i] = (float)((i * 104729) % 1000) * 1e-3f;
    openblas_set_num_threads(nth);
    double *t = malloc(sizeof(double) * (size_t)reps);
    for (int r = -1; r < reps; r++) {
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.f, A, k, B, k, 0.f, C, n);
        double dt = now_s() - t0;
        if (r >= 0)
            t[r] = 2.0 * m * n * k / dt * 1e-9;
    }
    double g = med(t, reps);
    free(t);
    free(A);
    free(B);
    free(C);
    return g;
}

typedef struct roof {
    double bw, sgemm;
} roof_t;

static roof_t measure_roof(const popts_t *o)
{
    int nth = n_threads(o->threads);
    roof_t r = {.bw = measure_bw(nth, o->reps, o->mib), .sgemm = measure_sgemm(nth, FD_MAX(3, o->reps / 3))};
    printf("# roof: %d threads: read bandwidth %.1f GB/s (%d MiB), OpenBLAS sgemm %.1f GFLOP/s "
           "(512x2048x2048)\n", nth, r.bw, o->mib, r.sgemm);
    fflush(stdout);
    return r;
}

/* ---- probes interleaved with the runs they judge --------------------------------------- */

/* The shared machine's read bandwidth moves by a third between runs, so a limit measured
 * once at the start says little about a decode a minute later.  The probes below run on the
 * backend's own threads (fb_roof: the CPU backend's pool, every read loop it has, the best
 * kept) right before and right after every repetition, and each repetition is judged
 * against the higher of its two probes (a roof must not be underestimated). */
typedef struct probe {
    fb_backend_t *be;
    uint8_t *buf;
    size_t n;
} probe_t;

static int probe_init(probe_t *pr, fb_backend_t *be, int mib)
{
    pr->be = be;
    pr->n = (size_t)mib << 20;
    pr->buf = NULL;
    if (posix_memalign((void **)&pr->buf, 64, pr->n))
        return -ENOMEM;
    for (size_t i = 0; i < pr->n; i += 4096)
        memset(pr->buf + i, (int)(i >> 12), 4096);
    /* a backend without probes (or --clock cpu, which they do not follow) reports none */
    if (cpu_clock || fb_roof(be, FB_ROOF_READ, pr->buf, pr->n) < 0) {
        free(pr->buf);
        pr->buf = NULL;
    }
    return 0;
}

static double probe_bw(const probe_t *pr)
{
    return pr->buf ? fb_roof(pr->be, FB_ROOF_READ, pr->buf, pr->n) : 0;
}

static double probe_sgemm(const probe_t *pr)
{
    return pr->buf ? fb_roof(pr->be, FB_ROOF_SGEMM, NULL, 0) : 0;
}

static void probe_free(probe_t *pr)
{
    free(pr->buf);
    pr->buf = NULL;
}

/* One line of per-repetition figures: "# NAME reps: tok/s a b c; LIMIT before/after a/b ...;
 * of LIMIT x% y% z%". */
static void print_reps(const char *name, const char *unit, int reps, const double *tps,
                       const double *before, const double *after, const double *ratio)
{
    printf("# %s reps: tok/s", name);
    for (int r = 0; r < reps; r++)
        printf(" %.1f", tps[r]);
    printf("; %s before/after", unit);
    for (int r = 0; r < reps; r++)
        printf(" %.1f/%.1f", before[r], after[r]);
    printf("; of limit");
    for (int r = 0; r < reps; r++)
        printf(" %.0f%%", 100 * ratio[r]);
    printf("\n");
}

/* ---- gemm: fb_matmul per type and shape ----------------------------------------------- */

typedef struct pshape {
    const char *name;
    int n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab;
} pshape_t;

static const pshape_t pshapes[] = {
    {"stories260K", 64, 172, 8, 4, 8, 512},
    {"stories110M", 768, 2048, 12, 12, 64, 32000},
    {"TinyLlama-1.1B", 2048, 5632, 32, 4, 64, 32000},
    {"Llama-2-7B", 4096, 11008, 32, 32, 128, 32000},
    {"Llama-3-8B", 4096, 14336, 32, 8, 128, 128256},
};

static bool in_list(const char *list, const char *name)
{
    if (!list)
        return true;
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

/* The batch sizes of --batches (or dflt), those of at least one row, in order; how many. */
static int batch_list(const popts_t *o, const char *dflt, int *rows, int cap)
{
    char buf[64];
    int n = 0;
    snprintf(buf, sizeof(buf), "%s", o->batches ? o->batches : dflt);
    for (char *bp = strtok(buf, ","); bp && n < cap; bp = strtok(NULL, ","))
        if (atoi(bp) >= 1)
            rows[n++] = atoi(bp);
    return n;
}

static uint64_t prng = 0x9e3779b97f4a7c15ull;
static float prand(void)
{
    prng ^= prng << 13;
    prng ^= prng >> 7;
    prng ^= prng << 17;
    return (float)((double)(prng >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static void *rand_weights(int type, int64_t n_out, int64_t n_in)
{
    size_t rb = gg_row_bytes(type, (uint64_t)n_in);
    uint8_t *q = malloc(rb * (size_t)n_out);
    float *row = malloc(sizeof(float) * (size_t)n_in);
    if (!q || !row) {
        fprintf(stderr, "fusion-bench: out of memory for a %lld x %lld matrix\n", (long long)n_out,
                (long long)n_in);
        exit(1);
    }
    for (int64_t o = 0; o < n_out; o++) {
        for (int64_t i = 0; i < n_in; i++)
            row[i] = prand() * 0.05f;
        fq_quantize_row(type, row, q + (size_t)o * rb, n_in);
    }
    free(row);
    return q;
}

/* Splits "a,b,c" options into a NULL-terminated array (static storage). */
static const char *const *split_options(const char *s)
{
    static char buf[512];
    static const char *v[16];
    int n = 0;
    if (!s)
        return NULL;
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *p = strtok(buf, ","); p && n < 15; p = strtok(NULL, ","))
        v[n++] = p;
    v[n] = NULL;
    return v;
}

static fb_backend_t *make_cpu(const popts_t *o)
{
    fb_config_t cfg = {.threads = o->threads, .options = split_options(o->options)};
    fb_backend_t *be;
    char err[256];
    if (fb_create("cpu", &cfg, &be, err, sizeof(err))) {
        fprintf(stderr, "fusion-bench: %s\n", err);
        exit(1);
    }
    return be;
}

static void bench_one(fb_backend_t *be, const popts_t *o, const roof_t *rf, const char *model,
                      const char *op, int type, int64_t n_out, int64_t n_in)
{
    if (!gg_row_bytes(type, (uint64_t)n_in))
        return;
    void *wq = rand_weights(type, n_out, n_in);
    fb_weight_t w = {.type = type, .n_in = n_in, .n_out = n_out, .src = wq, .name = op};
    if (fb_weight_prepare(be, &w)) {
        fprintf(stderr, "fusion-bench: cannot prepare %s\n", op);
        exit(1);
    }
    double wbytes = (double)gg_row_bytes(type, (uint64_t)n_in) * (double)n_out;
    int rl[16], nr = batch_list(o, "1,8,64", rl, 16);
    for (int bi = 0; bi < nr; bi++) {
        const int rows = rl[bi];
        float *x = fb_alloc(be, sizeof(float) * (size_t)rows * (size_t)n_in);
        float *y = fb_alloc(be, sizeof(float) * (size_t)rows * (size_t)n_out);
        for (int64_t i = 0; i < rows * n_in; i++)
            x[i] = prand();
        /* small products repeat inside one timing so a run lasts >= ~1 ms */
        int inner = (int)FD_MAX(1.0, FD_MIN(1000.0, 2e6 / (wbytes + 1.0)));
        double *t = malloc(sizeof(double) * (size_t)o->reps);
        for (int r = -1; r < o->reps; r++) {
            double t0 = now_s();
            for (int k = 0; k < inner; k++)
                fb_matmul(be, &w, x, rows, y, NULL);
            fb_sync(be);
            if (r >= 0)
                t[r] = (now_s() - t0) / inner;
        }
        double s = med(t, o->reps);
        double gbs = wbytes / s * 1e-9, gfl = 2.0 * (double)n_in * (double)n_out * rows / s * 1e-9;
        printf("gemm %-15s %-8s %-5s %6lldx%-6lld batch %2d %9.1f us %7.1f GB/s (%3.0f%% bw) "
               "%7.1f GFLOP/s (%3.0f%% sgemm)\n", model, op, gg_type_name(type),
               (long long)n_out, (long long)n_in, rows, s * 1e6, gbs, 100 * gbs / rf->bw, gfl,
               100 * gfl / rf->sgemm);
        fflush(stdout);
        free(t);
        fb_free(be, x);
        fb_free(be, y);
    }
    fb_weight_release(be, &w);
    free(wq);
}

static int cmd_gemm(const popts_t *o)
{
    roof_t rf = measure_roof(o);
    fb_backend_t *be = make_cpu(o);
    char desc[256] = "";
    if (be->ops->describe)
        be->ops->describe(be, desc, sizeof(desc));
    printf("# gemm: %s, %d reps (medians)\n", desc, o->reps);
    static const int types[] = {GG_F32, GG_F16, GG_BF16, GG_Q8_0, GG_Q4_0, GG_Q4_K, GG_Q5_K,
                                GG_Q6_K,
                                GG_Q4_1,
                                GG_Q5_0,
                                GG_Q5_1,
                                GG_Q2_K,
                                GG_Q3_K,
                                GG_IQ4_NL,
                                GG_IQ4_XS,
                                GG_MXFP4};
    for (size_t m = 0; m < FD_ARRAY_LEN(pshapes); m++) {
        const pshape_t *s = &pshapes[m];
        if (!in_list(o->models, s->name))
            continue;
        for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
            if (!in_list(o->types ? o->types : "F32,Q8_0,Q4_0,Q4_K", gg_type_name(types[t])))
                continue;
            int64_t nqkv = (int64_t)(s->n_head + 2 * s->n_head_kv) * s->head_dim;
            bench_one(be, o, &rf, s->name, "qkv", types[t], nqkv, s->n_embd);
            bench_one(be, o, &rf, s->name, "gate_up", types[t], 2 * (int64_t)s->n_ff, s->n_embd);
            bench_one(be, o, &rf, s->name, "down", types[t], s->n_embd, s->n_ff);
        }
    }
    fb_destroy(be);
    return 0;
}

/* ---- norm: the deferred norm's two schedules against the unfused pair ------------------- */

/* One product with a norm in front, three ways, alternating within each repetition:
 * unfused (fb_rmsnorm, then fb_matmul), fused with every thread reducing the row itself
 * ("each", the default), fused with thread 0 reducing while the others multiply ("one"). */
static void norm_one(fb_backend_t *be[2], const popts_t *o, const char *model, const char *op,
                     int type, int64_t n_out, int64_t n_in)
{
    if (!gg_row_bytes(type, (uint64_t)n_in))
        return;
    void *wq = rand_weights(type, n_out, n_in);
    float *gam = malloc(sizeof(float) * (size_t)n_in);
    for (int64_t i = 0; i < n_in; i++)
        gam[i] = 1.0f + 0.1f * prand();
    fb_weight_t w[2], g[2];
    for (int b = 0; b < 2; b++) {
        w[b] = (fb_weight_t){.type = type, .n_in = n_in, .n_out = n_out, .src = wq, .name = op};
        g[b] = (fb_weight_t){.type = GG_F32, .n_in = n_in, .n_out = 1, .src = gam, .name = "g"};
        if (fb_weight_prepare(be[b], &w[b]) || fb_weight_prepare(be[b], &g[b])) {
            fprintf(stderr, "fusion-bench: cannot prepare %s\n", op);
            exit(1);
        }
    }
    int rl[16], nr = batch_list(o, "1,8,64", rl, 16);
    for (int bi = 0; bi < nr; bi++) {
        const int rows = rl[bi];
        float *x = fb_alloc(be[0], sizeof(float) * (size_t)rows * (size_t)n_in);
        float *xn = fb_alloc(be[0], sizeof(float) * (size_t)rows * (size_t)n_in);
        float *y = fb_alloc(be[0], sizeof(float) * (size_t)rows * (size_t)n_out);
        for (int64_t i = 0; i < rows * n_in; i++)
            x[i] = 3 * prand();
        fb_defer_t d = {.kind = FB_NORM_RMS, .eps = 1e-5f};
        double wbytes = (double)gg_row_bytes(type, (uint64_t)n_in) * (double)n_out;
        int inner = (int)FD_MAX(1.0, FD_MIN(1000.0, 2e6 / (wbytes + 1.0)));
        double *t[3], *r1 = malloc(sizeof(double) * (size_t)o->reps), *r2 = malloc(sizeof(double) * (size_t)o->reps);
        for (int k = 0; k < 3; k++)
            t[k] = malloc(sizeof(double) * (size_t)o->reps);
        for (int r = -1; r < o->reps; r++) {
            double tt[3];
            for (int k = 0; k < 3; k++) {
                fb_backend_t *b = be[k == 2];
                double t0 = now_s();
                for (int i = 0; i < inner; i++) {
                    if (k == 0) {
                        fb_rmsnorm(b, x, rows, n_in, &g[0], 1e-5f, xn);
                        fb_matmul(b, &w[0], xn, rows, y, NULL);
                    } else {
                        fb_matmul(b, &w[k == 2], x, rows, y, &d);
                    }
                }
                fb_sync(b);
                tt[k] = (now_s() - t0) / inner;
            }
            if (r >= 0) {
                for (int k = 0; k < 3; k++)
                    t[k][r] = tt[k];
                r1[r] = tt[0] / tt[1];
                r2[r] = tt[2] / tt[1];
            }
        }
        double mu = med(t[0], o->reps), me = med(t[1], o->reps), mo = med(t[2], o->reps);
        printf("norm %-15s %-8s %-5s %6lldx%-6lld batch %2d  unfused %9.1f us  each %9.1f us  "
               "one %9.1f us  unfused/each %.3f  one/each %.3f\n", model, op, gg_type_name(type),
               (long long)n_out, (long long)n_in, rows, mu * 1e6, me * 1e6, mo * 1e6,
               med(r1, o->reps), med(r2, o->reps));
        fflush(stdout);
        for (int k = 0; k < 3; k++)
            free(t[k]);
        free(r1);
        free(r2);
        fb_free(be[0], x);
        fb_free(be[0], xn);
        fb_free(be[0], y);
    }
    for (int b = 0; b < 2; b++) {
        fb_weight_release(be[b], &w[b]);
        fb_weight_release(be[b], &g[b]);
    }
    free(wq);
    free(gam);
}

static int cmd_norm(const popts_t *o)
{
    fb_backend_t *be[2];
    const char *opts[2][3] = {{"defer=each", NULL}, {"defer=one", NULL}};
    for (int b = 0; b < 2; b++) {
        fb_config_t cfg = {.threads = o->threads, .options = opts[b]};
        char err[256];
        if (fb_create("cpu", &cfg, &be[b], err, sizeof(err))) {
            fprintf(stderr, "fusion-bench: %s\n", err);
            return 1;
        }
    }
    printf("# norm: RMSNorm -> product, unfused vs deferred (each thread reduces / thread 0 "
           "reduces), %d threads, %d reps (medians; ratios per repetition)\n",
           n_threads(o->threads), o->reps);
    static const int types[] = {GG_F32, GG_F16, GG_BF16, GG_Q8_0, GG_Q4_0, GG_Q4_K, GG_Q6_K};
    for (size_t m = 0; m < FD_ARRAY_LEN(pshapes); m++) {
        const pshape_t *s = &pshapes[m];
        if (!in_list(o->models, s->name))
            continue;
        for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
            if (!in_list(o->types ? o->types : "F32,Q8_0", gg_type_name(types[t])))
                continue;
            int64_t nqkv = (int64_t)(s->n_head + 2 * s->n_head_kv) * s->head_dim;
            norm_one(be, o, s->name, "qkv", types[t], nqkv, s->n_embd);
            norm_one(be, o, s->name, "gate_up", types[t], 2 * (int64_t)s->n_ff, s->n_embd);
        }
    }
    fb_destroy(be[0]);
    fb_destroy(be[1]);
    return 0;
}

/* ---- inscale: a norm's gamma folded into F32 copies, or applied as in_scale ------------- */

/* The fused plan's three ways to run a deferred-norm product over parts (Q, K, V or gate,
 * up) on the CPU backend, alternating within each repetition: "fold" (gamma folded into one
 * concatenated F32 copy: what the plan did before in_scale), "view" (the parts adjacent in
 * memory, one product on their bytes with gamma as in_scale) and "split" (parts apart in
 * memory, one product per part, each with in_scale).  Each variant cycles through enough
 * instances of its matrices (>= 256 MiB) that every product reads its weights from memory,
 * as decode does. */
#define IS_MAXP 3
typedef struct is_inst {
    fz_folded_t f[IS_MAXP];
    int n;
} is_inst_t;

static void inscale_one(fb_backend_t *be, const popts_t *o, const char *model, const char *op,
                        int type, const int64_t *outs, int n_parts, int64_t n_in)
{
    size_t rb = gg_row_bytes(type, (uint64_t)n_in), total = 0;
    if (!rb)
        return;
    for (int i = 0; i < n_parts; i++)
        total += rb * (size_t)outs[i];
    int n_inst = (int)FD_MAX(1.0, ceil((double)(256u << 20) / (double)total));
    float *gam = malloc(sizeof(float) * (size_t)n_in);
    for (int64_t i = 0; i < n_in; i++)
        gam[i] = 1.0f + 0.1f * prand();
    is_inst_t *v[3];
    void **mem = calloc((size_t)n_inst * (IS_MAXP + 1), sizeof(void *));
    int n_mem = 0;
    char err[256];
    for (int k = 0; k < 3; k++)
        v[k] = calloc((size_t)n_inst, sizeof(is_inst_t));
    for (int j = 0; j < n_inst; j++) {
        fb_weight_t parts[IS_MAXP], adj[IS_MAXP];
        uint8_t *cat = malloc(total), *c = cat;
        mem[n_mem++] = cat;
        for (int i = 0; i < n_parts; i++) {
            void *q = rand_weights(type, outs[i], n_in);
            mem[n_mem++] = q;
            parts[i] = (fb_weight_t){.type = type, .n_in = n_in, .n_out = outs[i], .src = q, .name = op};
            memcpy(c, q, rb * (size_t)outs[i]);
            adj[i] = parts[i];
            adj[i].src = c;
            c += rb * (size_t)outs[i];
        }
        int rc = fz_fold_rms(parts, n_parts, gam, FZ_FOLD_FOLD, op, &v[0][j].f[0], err, sizeof(err));
        rc = rc ? rc : fz_fold_rms(adj, n_parts, gam, FZ_FOLD_INSCALE, op, &v[1][j].f[0], err, sizeof(err));
        v[0][j].n = v[1][j].n = 1;
        for (int i = 0; i < n_parts && rc == 0; i++)
            rc = fz_fold_rms(&parts[i], 1, gam, FZ_FOLD_INSCALE, op, &v[2][j].f[i], err, sizeof(err));
        v[2][j].n = n_parts;
        for (int k = 0; k < 3 && rc == 0; k++)
            for (int i = 0; i < v[k][j].n && rc == 0; i++)
                rc = fb_weight_prepare(be, &v[k][j].f[i].w);
        if (rc) {
            fprintf(stderr, "fusion-bench: inscale %s: %s\n", op, rc ? err : "");
            exit(1);
        }
    }
    int64_t n_out = 0;
    for (int i = 0; i < n_parts; i++)
        n_out += outs[i];
    int rl[16], nr = batch_list(o, "1,8,128", rl, 16);
    for (int bi = 0; bi < nr; bi++) {
        const int rows = rl[bi];
        float *x = fb_alloc(be, sizeof(float) * (size_t)rows * (size_t)n_in);
        float *y = fb_alloc(be, sizeof(float) * (size_t)rows * (size_t)n_out);
        for (int64_t i = 0; i < rows * n_in; i++)
            x[i] = 3 * prand();
        fb_defer_t d = {.kind = FB_NORM_RMS, .eps = 1e-5f};
        double *t[3], *r[2];
        for (int k = 0; k < 3; k++)
            t[k] = malloc(sizeof(double) * (size_t)o->reps);
        for (int k = 0; k < 2; k++)
            r[k] = malloc(sizeof(double) * (size_t)o->reps);
        for (int rep = -1; rep < o->reps; rep++) {
            double tt[3];
            for (int k = 0; k < 3; k++) {
                double t0 = now_s();
                for (int j = 0; j < n_inst; j++) {
                    float *yo = y;
                    for (int i = 0; i < v[k][j].n; i++) {
                        fb_matmul(be, &v[k][j].f[i].w, x, rows, yo, &d);
                        yo += (size_t)rows * (size_t)v[k][j].f[i].w.n_out;
                    }
                }
                fb_sync(be);
                tt[k] = (now_s() - t0) / n_inst;
            }
            if (rep >= 0) {
                for (int k = 0; k < 3; k++)
                    t[k][rep] = tt[k];
                r[0][rep] = tt[0] / tt[1];
                r[1][rep] = tt[0] / tt[2];
            }
        }
        double mf = med(t[0], o->reps), mv = med(t[1], o->reps), ms = med(t[2], o->reps);
        printf("inscale %-15s %-8s %-5s %6lldx%-6lld %d parts batch %3d  fold %9.1f us  view %9.1f us  "
               "split %9.1f us  fold/view %.3f  fold/split %.3f\n", model, op, gg_type_name(type),
               (long long)n_out, (long long)n_in, n_parts, rows, mf * 1e6, mv * 1e6, ms * 1e6,
               med(r[0], o->reps), med(r[1], o->reps));
        fflush(stdout);
        for (int k = 0; k < 3; k++)
            free(t[k]);
        free(r[0]);
        free(r[1]);
        fb_free(be, x);
        fb_free(be, y);
    }
    for (int k = 0; k < 3; k++) {
        for (int j = 0; j < n_inst; j++)
            for (int i = 0; i < v[k][j].n; i++) {
                fb_weight_release(be, &v[k][j].f[i].w);
                fz_folded_free(&v[k][j].f[i]);
            }
        free(v[k]);
    }
    for (int i = 0; i < n_mem; i++)
        free(mem[i]);
    free(mem);
    free(gam);
}

static int cmd_inscale(const popts_t *o)
{
    fb_backend_t *be = make_cpu(o);
    char desc[256] = "";
    if (be->ops->describe)
        be->ops->describe(be, desc, sizeof(desc));
    printf("# inscale: deferred-norm products, gamma folded into an F32 copy / as in_scale on "
           "adjacent parts / as in_scale on separate parts; %s, %d reps (medians; ratios per "
           "repetition)\n", desc, o->reps);
    static const int types[] = {GG_F32, GG_F16, GG_BF16, GG_Q8_0, GG_Q4_0, GG_Q4_K};
    for (size_t m = 0; m < FD_ARRAY_LEN(pshapes); m++) {
        const pshape_t *s = &pshapes[m];
        if (!in_list(o->models ? o->models : "TinyLlama-1.1B", s->name))
            continue;
        for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
            if (!in_list(o->types ? o->types : "F32", gg_type_name(types[t])))
                continue;
            const int64_t qkv[3] = {(int64_t)s->n_head * s->head_dim,
                                    (int64_t)s->n_head_kv * s->head_dim,
                                    (int64_t)s->n_head_kv * s->head_dim};
            const int64_t gu[2] = {s->n_ff, s->n_ff}, head[1] = {s->n_vocab};
            inscale_one(be, o, s->name, "qkv", types[t], qkv, 3, s->n_embd);
            inscale_one(be, o, s->name, "gate_up", types[t], gu, 2, s->n_embd);
            inscale_one(be, o, s->name, "head", types[t], head, 1, s->n_embd);
        }
    }
    fb_destroy(be);
    return 0;
}

/* ---- llama: pp / tg tokens per second of a model -------------------------------------- */

/* Resident memory of this process now, in MB (VmRSS; the roof buffers are freed by then), or -1. */
static double peak_rss_mb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %lf kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb < 0 ? -1 : kb / 1024;
}

/* Bytes of weights one decode step reads: every tensor except the embedding table (one row
 * per token), unless the LM head shares it. */
static double step_bytes(const llm_model_t *m)
{
    const gguf_t *g = llm_gguf(m);
    double b = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_t *t = gguf_tensor_at(g, i);
        if (strcmp(t->name, "token_embd.weight") == 0 && !llm_hparams(m)->tied_output)
            continue;
        b += (double)t->nbytes;
    }
    return b;
}

static int run_pp(llm_model_t *m, int slot, const int32_t *toks, int n, double *dt)
{
    int V = llm_hparams(m)->n_vocab;
    float *logits = malloc(sizeof(float) * (size_t)V);
    llm_seq_truncate(m, slot, 0);
    llm_batch_entry_t e = {.slot = slot, .tokens = toks, .n_tokens = n, .want_logits = true};
    double t0 = now_s();
    int rc = llm_decode(m, &e, 1, logits);
    *dt = now_s() - t0;
    free(logits);
    return rc;
}

/* n decode steps of S sequences at once (S = 1: plain decode), after a 1-token prompt each. */
static int run_tg(llm_model_t *m, const int *slots, int S, int n, double *dt)
{
    int V = llm_hparams(m)->n_vocab, rc = 0;
    float *logits = malloc(sizeof(float) * (size_t)V * (size_t)S);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)S);
    llm_batch_entry_t *e = malloc(sizeof(*e) * (size_t)S);
    for (int s = 0; s < S; s++) {
        llm_seq_truncate(m, slots[s], 0);
        tok[s] = (int32_t)(1 + s) % V;
        e[s] = (llm_batch_entry_t){.slot = slots[s], .tokens = &tok[s], .n_tokens = 1, .want_logits = true};
    }
    rc = llm_decode(m, e, S, logits); /* the first step fills caches: not counted */
    double t0 = now_s();
    for (int i = 0; i < n && rc == 0; i++) {
        for (int s = 0; s < S; s++) {
            const float *l = logits + (size_t)s * V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (l[v] > l[best])
                    best = v;
            tok[s] = best;
        }
        rc = llm_decode(m, e, S, logits);
    }
    *dt = now_s() - t0;
    free(logits);
    free(tok);
    free(e);
    return rc;
}

/* --ab A/B: decode (S = --seqs sequences when given, else 1) with backend option A and B, alternating within every
 * repetition (A first in even ones, B in odd ones) (fb_set_option between them, the same prepared weights), each run between its
 * own two read probes; prints both medians and the median of the per-repetition B/A. */
static int run_ab(llm_model_t *m, const popts_t *o, const probe_t *pr, const int *slots, double bytes)
{
    char a[128], *b;
    snprintf(a, sizeof(a), "%s", o->ab);
    if (!(b = strchr(a, '/'))) {
        fprintf(stderr, "fusion-bench: --ab wants OPTION_A/OPTION_B\n");
        return -EINVAL;
    }
    *b++ = '\0';
    const char *v[2] = {a, b};
    fb_backend_t *be = llm_backend(m);
    size_t nr = (size_t)o->reps;
    double *t[2], *sh[2], *ratio = malloc(sizeof(double) * nr), dt;
    for (int k = 0; k < 2; k++) {
        t[k] = malloc(sizeof(double) * nr);
        sh[k] = malloc(sizeof(double) * nr);
    }
    int rc = 0;
    for (int r = 0; r < o->reps && rc == 0; r++) {
        for (int i = 0; i < 2 && rc == 0; i++) {
            int k = i ^ (r & 1); /* A first in even repetitions, B first in odd ones */
            if ((rc = fb_set_option(be, v[k]))) {
                fprintf(stderr, "fusion-bench: option %s: %s\n", v[k], fd_strerror(rc));
                break;
            }
            double before = probe_bw(pr);
            const int S = FD_MAX(1, o->ab_seqs); /* aggregate tok/s of the sequences */
            rc = run_tg(m, slots, S, o->n_gen, &dt);
            double after = probe_bw(pr);
            t[k][r] = (double)o->n_gen * S / dt;
            sh[k][r] = pr->buf ? t[k][r] / S * bytes * 1e-9 / FD_MAX(before, after) : 0;
        }
        if (rc == 0)
            ratio[r] = t[1][r] / t[0][r];
    }
    if (rc == 0) {
        printf("# ab tg%dx%d reps: %s/%s tok/s", o->n_gen, FD_MAX(1, o->ab_seqs), v[0], v[1]);
        for (int r = 0; r < o->reps; r++)
            printf(" %.2f/%.2f", t[0][r], t[1][r]);
        printf("\n");
        printf("ab tg%-5d %s %.2f tok/s (%.0f%% bw)  %s %.2f tok/s (%.0f%% bw)  B/A %.3f\n",
               o->n_gen, v[0], med(t[0], o->reps), 100 * med(sh[0], o->reps), v[1],
               med(t[1], o->reps), 100 * med(sh[1], o->reps), med(ratio, o->reps));
    }
    for (int k = 0; k < 2; k++) {
        free(t[k]);
        free(sh[k]);
    }
    free(ratio);
    return rc;
}

static int cmd_llama(const popts_t *o)
{
    if (!o->model) {
        fprintf(stderr, "fusion-bench llama: give -m MODEL (bench/make-models writes some)\n");
        return 1;
    }
    roof_t rf = measure_roof(o);
    llm_load_params_t p;
    llm_load_params_default(&p);
    p.path = o->model;
    p.threads = o->threads;
    p.fusion = o->fusion;
    p.backend_options = split_options(o->options);
    p.n_ctx = o->n_prompt + o->n_gen + 8;
    p.n_seq_max = FD_MAX(1, o->seqs);
    p.n_batch_max = FD_MAX(o->n_prompt, 8);
    llm_model_t *m;
    char err[512];
    if (llm_load(&m, &p, err, sizeof(err))) {
        fprintf(stderr, "fusion-bench: %s\n", err);
        return 1;
    }
    const llm_hparams_t *h = llm_hparams(m);
    char desc[256] = "";
    fb_backend_t *be = llm_backend(m);
    if (be->ops->describe)
        be->ops->describe(be, desc, sizeof(desc));
    double bytes = step_bytes(m), flops = 2.0 * (double)h->n_params;
    printf("# llama: %s: %.1f M params, %.1f MB read per decode step; fusion %s; %s\n", o->model,
           (double)h->n_params / 1e6, bytes / 1e6, o->fusion ? "on" : "off", desc);
    int *slots = malloc(sizeof(int) * (size_t)FD_MAX(1, o->seqs));
    int rc = 0;
    for (int s = 0; s < FD_MAX(1, o->seqs) && rc == 0; s++)
        rc = llm_seq_alloc(m, &slots[s]);
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)o->n_prompt);
    for (int i = 0; i < o->n_prompt; i++)
        toks[i] = (int32_t)(1 + (i * 7919) % (h->n_vocab - 1));
    size_t nr = (size_t)o->reps;
    double *t = malloc(sizeof(double) * nr), dt = 0;
    double *pb = malloc(sizeof(double) * nr), *pa = malloc(sizeof(double) * nr);
    double *ratio = malloc(sizeof(double) * nr), *tcopy = malloc(sizeof(double) * nr);
    probe_t pr = {0};
    if (rc == 0 && (rc = probe_init(&pr, be, o->mib)) == 0 && pr.buf)
        printf("# limits below: probes on the backend's %d threads before and after every "
               "repetition (read: best of its read loops over %d MiB); a repetition's share is "
               "of the higher of its two probes; the line gives medians\n",
               n_threads(o->threads), o->mib);
    if (rc == 0 && o->ab) {
        rc = run_ab(m, o, &pr, slots, bytes);
        goto done;
    }
    if (rc == 0 && o->n_prompt > 0) {
        rc = run_pp(m, slots[0], toks, o->n_prompt, &dt); /* warm-up */
        for (int r = 0; r < o->reps && rc == 0; r++) {
            pb[r] = probe_sgemm(&pr);
            rc = run_pp(m, slots[0], toks, o->n_prompt, &dt);
            pa[r] = probe_sgemm(&pr);
            t[r] = o->n_prompt / dt;
            ratio[r] = t[r] * flops * 1e-9 / (pr.buf ? FD_MAX(pb[r], pa[r]) : rf.sgemm);
        }
        if (rc == 0) {
            char name[32];
            snprintf(name, sizeof(name), "pp%d", o->n_prompt);
            if (pr.buf)
                print_reps(name, "sgemm GFLOP/s", o->reps, t, pb, pa, ratio);
            memcpy(tcopy, t, sizeof(double) * nr);
            double v = med(tcopy, o->reps);
            printf("pp%-8d %10.1f tok/s %8.1f GFLOP/s %5.0f %%sgemm\n", o->n_prompt, v,
                   v * flops * 1e-9, 100 * med(ratio, o->reps));
        }
    }
    int Ss[2] = {1, o->seqs};
    double tg1 = 0;
    for (int k = 0; k < (o->seqs > 1 ? 2 : 1) && rc == 0 && o->n_gen > 0; k++) {
        int S = Ss[k];
        for (int r = 0; r < o->reps && rc == 0; r++) {
            if (S == 1)
                pb[r] = probe_bw(&pr);
            rc = run_tg(m, slots, S, o->n_gen, &dt);
            t[r] = (double)o->n_gen * S / dt;
            if (S == 1) {
                pa[r] = probe_bw(&pr);
                ratio[r] = t[r] * bytes * 1e-9 / (pr.buf ? FD_MAX(pb[r], pa[r]) : rf.bw);
            }
        }
        if (rc == 0) {
            char name[32];
            snprintf(name, sizeof(name), S == 1 ? "tg%d" : "tg%dx%d", o->n_gen, S);
            if (S == 1 && pr.buf)
                print_reps(name, "read GB/s", o->reps, t, pb, pa, ratio);
            memcpy(tcopy, t, sizeof(double) * nr);
            double v = med(tcopy, o->reps);
            if (S == 1)
                printf("%-10s %10.1f tok/s %8.1f GB/s %5.0f %%bw\n", name, v, v * bytes * 1e-9,
                       100 * med(ratio, o->reps));
            else
                printf("%-10s %10.1f tok/s aggregate (%.2fx one sequence)\n", name, v,
                       v / (tg1 > 0 ? tg1 : v));
            if (S == 1)
                tg1 = v;
        }
    }
done:
    probe_free(&pr); /* not the model's memory */
    printf("# memory: resident %.0f MB after the runs; model file %.0f MB\n", peak_rss_mb(),
           (double)gguf_file_size(llm_gguf(m)) / 1e6 * 1e6 / (1 << 20));
    fflush(stdout);
    if (rc)
        fprintf(stderr, "fusion-bench: llama: %s\n", fd_strerror(rc));
    free(pb);
    free(pa);
    free(ratio);
    free(tcopy);
    free(t);
    free(toks);
    for (int s = 0; s < FD_MAX(1, o->seqs); s++)
        llm_seq_free(m, slots[s]);
    free(slots);
    llm_free(m);
    return rc ? 1 : 0;
}

/* ---- command line --------------------------------------------------------------------- */

bool perf_command(const char *cmd)
{
    return !strcmp(cmd, "roof") || !strcmp(cmd, "gemm") || !strcmp(cmd, "norm") ||
           !strcmp(cmd, "llama") || !strcmp(cmd, "inscale");
}

void perf_usage(void *file)
{
    fprintf((FILE *)file,
            "       fusion-bench roof [--threads N] [--reps N] [--mib M]\n"
            "       fusion-bench gemm [--types F32,Q8_0,...] [--models a,b] [--batches 1,8,64]\n"
            "                         [--threads N] [--reps N] [--options k=v,...]\n"
            "       fusion-bench norm [--types F32,Q8_0] [--models a,b] [--batches 1,8,64]\n"
            "                         [--threads N] [--reps N]   (deferred norm: each / one / unfused)\n"
            "       fusion-bench inscale [--types F32] [--models TinyLlama-1.1B] [--batches 1,8,128]\n"
            "                         [--threads N] [--reps N]   (gamma folded / in_scale / split)\n"
            "       fusion-bench llama -m MODEL [-p 128] [-n 64] [--seqs 8] [--fusion on|off]\n"
            "                         [--threads N] [--reps N] [--options k=v,...]\n"
            "                         [--ab k=v/k=v]   (decode with option A, then B, alternating;\n"
            "                         --seqs sequences when given, else one)\n"
            "  (roof, gemm and llama measure read bandwidth and sgemm in the same run, llama\n"
            "   on its backend's threads right before and after every repetition;\n"
            "   --clock cpu times with process CPU time: for one thread on a loaded machine)\n");
}

int perf_main(int argc, char **argv)
{
    popts_t o = {.reps = 9, .n_prompt = 128, .n_gen = 64, .seqs = 8, .fusion = true, .mib = 1024};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "fusion-bench: %s needs a value\n", a);
            return 1;
        }
        i++;
        if (!strcmp(a, "--threads"))
            o.threads = atoi(v);
        else if (!strcmp(a, "--reps"))
            o.reps = atoi(v);
        else if (!strcmp(a, "--mib"))
            o.mib = atoi(v);
        else if (!strcmp(a, "-m"))
            o.model = v;
        else if (!strcmp(a, "-p"))
            o.n_prompt = atoi(v);
        else if (!strcmp(a, "-n"))
            o.n_gen = atoi(v);
        else if (!strcmp(a, "--seqs"))
            o.seqs = o.ab_seqs = atoi(v);
        else if (!strcmp(a, "--types"))
            o.types = v;
        else if (!strcmp(a, "--models"))
            o.models = v;
        else if (!strcmp(a, "--batches"))
            o.batches = v;
        else if (!strcmp(a, "--options"))
            o.options = v;
        else if (!strcmp(a, "--ab"))
            o.ab = v;
        else if (!strcmp(a, "--clock") && (!strcmp(v, "cpu") || !strcmp(v, "wall")))
            cpu_clock = !strcmp(v, "cpu");
        else if (!strcmp(a, "--fusion") && (!strcmp(v, "on") || !strcmp(v, "off")))
            o.fusion = !strcmp(v, "on");
        else {
            fprintf(stderr, "fusion-bench: unknown or bad option %s %s\n", a, v);
            return 1;
        }
    }
    if (o.reps < 1 || o.threads < 0 || o.mib < 16 || o.n_prompt < 0 || o.n_gen < 0 || o.seqs < 1) {
        fprintf(stderr, "fusion-bench: bad --reps, --threads, --mib, -p, -n or --seqs\n");
        return 1;
    }
    if (!strcmp(argv[1], "roof")) {
        measure_roof(&o);
        fb_backend_t *be = make_cpu(&o);
        probe_t pr = {0};
        if (probe_init(&pr, be, o.mib) == 0 && pr.buf) {
            double *bw = malloc(sizeof(double) * (size_t)o.reps);
            double *sg = malloc(sizeof(double) * (size_t)o.reps);
            for (int r = 0; r < o.reps; r++) {
                bw[r] = probe_bw(&pr);
                sg[r] = probe_sgemm(&pr);
            }
            printf("# roof probes (fusion-bench llama's): %d threads of the CPU backend: read "
                   "bandwidth %.1f GB/s (best read loop, median of %d), sgemm %.1f GFLOP/s "
                   "(columns split over the threads)\n", n_threads(o.threads),
                   med(bw, o.reps), o.reps, med(sg, o.reps));
            free(bw);
            free(sg);
        }
        probe_free(&pr);
        fb_destroy(be);
        return 0;
    }
    if (!strcmp(argv[1], "gemm"))
        return cmd_gemm(&o);
    if (!strcmp(argv[1], "norm"))
        return cmd_norm(&o);
    if (!strcmp(argv[1], "inscale"))
        return cmd_inscale(&o);
    return cmd_llama(&o);
}
