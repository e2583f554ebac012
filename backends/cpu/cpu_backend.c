/* cpu_backend.c: the CPU backend (backend.h's vtable on host memory).
 *
 * Ops run on the calling thread plus the persistent workers of pool.c and return when done,
 * so fb_sync has nothing to wait for.  Weights are used in place (the mmapped file's bytes,
 * never copied); fb_weight_prepare only checks them and, for 1-D vectors of a type other
 * than F32 (norm gammas), keeps an F32 copy.  Every op checks its arguments and answers
 * -EINVAL or FD_EUNSUP rather than reading out of bounds.
 *
 * Matrix products split the output columns (weight rows) into chunks that the threads take
 * from an atomic counter, so a thread slowed by another process does not hold the others
 * up.  Each thread prepares the activations itself (int8 quantization for the quantized
 * types, the in_scale product) instead of sharing one prepared copy behind a barrier: that
 * costs n_in operations per row per thread, next to n_in * n_out / threads for its share of
 * the product.  The deferred normalization (fb_defer_t) rides on the same pass: each thread
 * reduces the raw row to its statistic while preparing it, multiplies its chunks and scales
 * their outputs; no thread waits for another between the reduction and the product.  The
 * alternative (one thread reduces, the others multiply and wait for its result before
 * scaling: options "defer=one") measured no faster (BENCHMARKS.md), so "each" is the
 * default.
 *
 * Options (fb_config_t.options): isa=scalar|avx2|avx512 (force a kernel table),
 * defer=each|one, blas_rows=N (F32 products with at least N rows go to OpenBLAS sgemm;
 * 0 = never; default 48), qblas_rows=N (the same for quantized weights, dequantized a tile
 * at a time; default 0 = never: the int8 kernels measured twice as fast), dot4_max=BYTES
 * (decode of matrices up to this size reads four weight rows per call; default 1 MiB),
 * dot8=0|1 (batches through the 8-row kernels: dot8 for Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 /
 * Q4_K / Q5_K / Q6_K / IQ4_NL / IQ4_XS / MXFP4,
 * dot2x8 for the float types; default 1), fgemm=0|1 (float-type batches of 2 or more rows
 * through gemmf, blocks of 12 weight rows against pieces of 8 activation rows, where the
 * table has it (AVX2); default 1), repack=0|1|2 (weights prepared while it is 1 get a copy of their
 * Q8_0 / Q4_0 rows in the FCPU_REPACK8 layout, while it is 2 a copy of their Q8_0 / Q4_0 /
 * Q4_K / Q5_K / Q6_K rows in groups of 16 in the FCPU_REPACK16 layout (the rows after the last full
 * group as they are; the copy has the source's size), made on every pool thread; the
 * batches read the copies while it has the value they were prepared with.  1 costs as much
 * memory again as the weights.  Under 2 every product of the matrix, decode included, reads
 * the copy, so the source's pages are handed back (MADV_PAGEOUT) and the resident size
 * stays about the file's; the file's pages are then no longer shared with the page cache,
 * and loading takes longer by the repacking; default 0), kslice=N (int8 batches of matrices
 * with n_in above N are computed N inputs at a time, so that the prepared activations stay
 * in L1; a multiple of 256, 0 = never; default 2048), farpf=N (int8 batches prefetch the
 * weights into L2 N times as far ahead as into L1, 0..64, 0 = not; default 8: 16 KiB),
 * streams=1|4|8 (decode of larger matrices: each chunk of weight rows read as that many
 * parts side by side, each part a sequential stream; default 4: one Zen 4 core read
 * 1.06-1.3x faster that way than with one stream, eight streams were slower again),
 * sched=even|guided|auto (how the threads take a product's weight rows: even chunks of
 * about 1/8 of a thread's share; guided: each take the rows left / (2 x threads), never
 * below 1/32 of a share, so long streams first and short chunks at the end; auto: guided
 * for one-row products (decode), even for the rest; default auto),
 * group=0|1 (matmul_group's products, a mixture-of-experts layer's experts, in one pool
 * dispatch whose threads share out the union of their output rows, or 0: one matmul
 * after another, as before the op existed; default 1),
 * ref=1 (every op on the plain reference of ref_ops.c).  set_option changes any of them
 * between ops (fusion-bench llama --ab). */
#include <cblas.h>
#include <math.h>
#include <sched.h>
#include <sys/mman.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/backend.h"
#include "backends/cpu/kernels.h"
#include "backends/cpu/pool.h"
#include "backends/cpu/ref_ops.h"
#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"

#define MAX_THREADS 256
#define PAR_MIN_WORK 32768 /* multiply-adds below which an op stays on one thread */
#define QTILE 64           /* weight rows dequantized per sgemm tile */
#define DOT4_MAX (1 << 20) /* matrix bytes up to which decode uses four rows per call */
#define KSLICE 2048       /* int8 batches: n_in slice length (mm_rows_sliced) */
/* int8 batches: dot8's prefetch distances, into L1 DOT8_PF bytes ahead (a piece of a row
 * when split: the row stride) and by default into L2 DOT8_FAR times as far */
#define DOT8_PF 2048
#define DOT8_FAR 8

enum { DEFER_EACH = 0, DEFER_ONE = 1 };
/* option sched: even chunks; shrinking chunks (take_chunk); shrinking for one-row products */
enum { SCHED_EVEN = 0, SCHED_GUIDED = 1, SCHED_AUTO = 2 };

/* A thread's scratch, grown on demand by that thread only. */
typedef struct scratch {
    void *p;
    size_t n;
} scratch_t;

typedef struct fcpu {
    fb_backend_t base;
    int n_threads;
    fcpu_pool_t *pool;
    const fcpu_kern_t *k;
    int defer_mode;
    int64_t blas_rows, qblas_rows;
    int64_t dot4_max;          /* matrix bytes up to which decode uses four rows per call */
    int streams;               /* decode of larger matrices: 1 or 4 weight streams a thread */
    int sched;                 /* SCHED_*: how a product's rows are handed out in chunks */
    bool dot8;                 /* batches through dot8 where the table has it */
    bool fgemm;                /* float batches through gemmf where the table has it */
    bool generic;              /* quantized weights through the dequantizing path (A/B) */
    int repack;                /* prepare FCPU_REPACK8 (1) or FCPU_REPACK16 (2) copies;
                                * batches use copies of the same layout */
    int64_t kslice;            /* int8 batches: n_in split into slices this long (0: not) */
    int farpf;                 /* int8 batches: L2 prefetch this many times as far as L1's */
    bool ref;
    bool group;                /* matmul_group in one dispatch (else one matmul per part) */
    scratch_t scr[MAX_THREADS];
    scratch_t attn_scr[MAX_THREADS];
    double *rope_inv;          /* base^(-2i/n_rot) / factor_i for the last (base, n_rot,
                                  factor values: rope_ff, a copy, or NULL) seen */
    float rope_base;
    int rope_n_rot;
    float *rope_ff;
} fcpu_t;

typedef struct fcpu_weight {
    uint64_t row_bytes;
    float *vec;           /* F32 copy of a 1-D non-F32 weight, else NULL */
    void *packed;         /* option repack: the rows in FCPU_REPACK8 / 16 layout, else NULL */
    int pack;             /* packed's layout: the repack value it was prepared with */
} fcpu_weight_t;

/* Waits for thread 0's published row scales (DEFER_ONE): spins briefly, then yields the
 * core, since thread 0 may be waiting for one when cores are oversubscribed. */
static void wait_flag(_Atomic int *flag)
{
    for (unsigned i = 0; !atomic_load_explicit(flag, memory_order_acquire); i++) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (i > 2048)
            sched_yield();
    }
}

static void *scratch_get(scratch_t *s, size_t n)
{
    if (s->n < n) {
        void *p = NULL;
        if (posix_memalign(&p, 64, n))
            return NULL;
        free(s->p);
        s->p = p;
        s->n = n;
    }
    return s->p;
}

static int threads_for(const fcpu_t *c, double work)
{
    if (work < PAR_MIN_WORK)
        return 1;
    return (int)FD_MIN((double)c->n_threads, FD_MAX(1.0, work / PAR_MIN_WORK));
}

/* ---- row-parallel helpers ------------------------------------------------------------- */

typedef void (*row_fn)(void *ctx, int64_t r0, int64_t r1, int ith);

typedef struct par_ctx {
    row_fn fn;
    void *ctx;
    int64_t n_rows;
} par_ctx_t;

static void par_task(void *arg, int ith, int nth)
{
    par_ctx_t *p = arg;
    int64_t r0 = p->n_rows * ith / nth, r1 = p->n_rows * (ith + 1) / nth;
    if (r1 > r0)
        p->fn(p->ctx, r0, r1, ith);
}

/* Runs fn over rows [0, n_rows), split evenly, on as many threads as the work deserves. */
static void par_rows(fcpu_t *c, int64_t n_rows, double work_per_row, row_fn fn, void *ctx)
{
    int nth = (int)FD_MIN((double)threads_for(c, work_per_row * (double)n_rows), (double)n_rows);
    par_ctx_t p = {.fn = fn, .ctx = ctx, .n_rows = n_rows};
    fcpu_pool_run(c->pool, FD_MAX(nth, 1), par_task, &p);
}

/* ---- memory --------------------------------------------------------------------------- */

static void *cpu_alloc(fb_backend_t *be, size_t bytes)
{
    void *p = NULL;
    /* 64-byte aligned: one cache line, and whole AVX-512 vectors */
    if (posix_memalign(&p, 64, bytes ? bytes : 64))
        return NULL;
    return p;
}

static void cpu_free(fb_backend_t *be, void *p)
{
    free(p);
}

static int cpu_copy(fb_backend_t *be, void *dst, const void *src, size_t bytes)
{
    if (bytes)
        memmove(dst, src, bytes);
    return 0;
}

static int cpu_sync(fb_backend_t *be)
{
    return 0;
}

/* ---- weights -------------------------------------------------------------------------- */

/* The repack of one matrix at prepare (option repack), split over the pool's threads. */
typedef struct repack_ctx {
    int type;
    int64_t n_in;
    const void *src;
    void *dst;
    uint64_t row_bytes;
} repack_ctx_t;

/* groups [g0, g1) of FCPU_G16 rows into FCPU_REPACK16 */
static void repack16_groups(void *ctx, int64_t g0, int64_t g1, int ith)
{
    const repack_ctx_t *r = ctx;
    const size_t gb = (size_t)FCPU_G16 * r->row_bytes;
    for (int64_t g = g0; g < g1; g++)
        fcpu_repack16_rows(r->type, r->n_in, (const uint8_t *)r->src + (size_t)g * gb,
                           r->row_bytes, (uint8_t *)r->dst + (size_t)g * gb);
}

/* rows [o0, o1) into FCPU_REPACK8 */
static void repack8_rows(void *ctx, int64_t o0, int64_t o1, int ith)
{
    const repack_ctx_t *r = ctx;
    for (int64_t o = o0; o < o1; o++)
        fcpu_repack8_row(r->type, r->n_in, (const uint8_t *)r->src + (size_t)o * r->row_bytes,
                         (uint8_t *)r->dst + (size_t)o * r->row_bytes);
}

static int cpu_weight_prepare(fb_backend_t *be, fb_weight_t *w)
{
    fcpu_t *c = (fcpu_t *)be;
    int rc = fb_weight_check(w);
    if (rc)
        return rc;
    fcpu_weight_t *cw = calloc(1, sizeof(*cw));
    if (!cw)
        return -ENOMEM;
    cw->row_bytes = gg_row_bytes(w->type, (uint64_t)w->n_in);
    if (w->n_out == 1 && w->type != GG_F32) {
        cw->vec = malloc((size_t)w->n_in * sizeof(float));
        if (!cw->vec) {
            free(cw);
            return -ENOMEM;
        }
        fq_dequantize_row(w->type, w->src, cw->vec, w->n_in);
    } else if (w->n_out > 1 && ((c->repack == 1 && c->k->dot8r[w->type]) ||
                                (c->repack == 2 && w->n_out >= FCPU_G16 && c->k->gemm16[w->type]))) {
        cw->pack = c->repack;
        size_t bytes = (size_t)cw->row_bytes * (size_t)w->n_out;
        if (posix_memalign(&cw->packed, 1 << 21, bytes)) {
            free(cw);
            return -ENOMEM;
        }
        /* 2 MiB pages where the kernel has them (as the model file's mapping often does):
         * the batches stream the copy, and 4 KiB pages cost them a TLB walk per page */
        madvise(cw->packed, bytes, MADV_HUGEPAGE);
        repack_ctx_t r = {.type = w->type, .n_in = w->n_in, .src = w->src, .dst = cw->packed,
                          .row_bytes = cw->row_bytes};
        if (cw->pack == 2) {
            const int64_t full = w->n_out / FCPU_G16 * FCPU_G16;
            /* groups on every pool thread: the repack costs about a second per GB on one */
            par_rows(c, full / FCPU_G16, (double)FCPU_G16 * (double)cw->row_bytes, repack16_groups, &r);
            memcpy((uint8_t *)cw->packed + (size_t)full * cw->row_bytes,
                   (const uint8_t *)w->src + (size_t)full * cw->row_bytes,
                   (size_t)(w->n_out - full) * cw->row_bytes);
#ifdef MADV_PAGEOUT
            /* every product of this matrix now reads the copy: the source's whole pages may
             * leave memory (a hint; a file mapping's pages come back from the file if read
             * again, anonymous ones go to swap or stay) */
            const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
            const uintptr_t a0 = ((uintptr_t)w->src + pg - 1) & ~(pg - 1);
            const uintptr_t a1 = ((uintptr_t)w->src + bytes) & ~(pg - 1);
            if (a1 > a0)
                madvise((void *)a0, a1 - a0, MADV_PAGEOUT);
#endif
        } else {
            par_rows(c, w->n_out, (double)cw->row_bytes, repack8_rows, &r);
        }
    }
    w->impl = cw;
    return 0;
}

static void cpu_weight_release(fb_backend_t *be, fb_weight_t *w)
{
    fcpu_weight_t *cw = w->impl;
    if (cw) {
        free(cw->vec);
        free(cw->packed);
        free(cw);
    }
}

/* A 1-D weight of n floats (a norm gamma or beta) as F32: the prepared copy, the bytes
 * themselves, or (unprepared, other type) converted into tmp.  NULL when it does not fit. */
static const float *weight_vec(const fb_weight_t *w, int64_t n, float **tmp)
{
    *tmp = NULL;
    if (fb_weight_check(w) || (int64_t)w->n_in * w->n_out != n)
        return NULL;
    const fcpu_weight_t *cw = w->impl;
    if (w->type == GG_F32)
        return w->src;
    if (cw && cw->vec)
        return cw->vec;
    if (!(*tmp = malloc((size_t)n * sizeof(float))))
        return NULL;
    if (fq_dequantize_row(w->type, w->src, *tmp, n)) {
        free(*tmp);
        *tmp = NULL;
    }
    return *tmp;
}

/* ---- matmul --------------------------------------------------------------------------- */

enum mm_path { MM_DOT, MM_GENERIC, MM_BLAS, MM_QBLAS };

typedef struct mm_ctx {
    fcpu_t *c;
    const fb_weight_t *w;
    const float *x;
    int64_t n_rows, n_in, n_out;
    uint64_t row_bytes;
    const uint8_t *wrows;      /* weight row 0; row o at wrows + o * ldw */
    uint64_t ldw;
    float *y;
    int kind;
    float eps;
    float *scale_out;
    int path, xform;
    fcpu_dot_fn dot;
    int nr;                    /* activation rows per dot call: FCPU_NR, or FCPU_NR8 (dot8) */
    /* decode with four weight rows per call: only for matrices that stay in the caches.
     * Streaming from memory, four interleaved row streams defeat the hardware prefetchers:
     * one Zen 4 thread read a 1 GB Q8_0 matrix at 22 GB/s one row at a time, 7-10 GB/s
     * four rows at a time (F32: 21 against 15-18), though from L2 four rows are 15% faster. */
    void (*dot4)(int64_t n, const void *w, size_t ldw, const void *x, float *out);
    /* decode of a large matrix: a chunk's rows as four quarters read side by side, each a
     * long sequential stream (four streams far apart read faster than one on Zen 4, where
     * four adjacent rows, each too short for a prefetcher to train on, read slower) */
    void (*dot4q)(int64_t n, const void *w, size_t ldw, const void *x, float *out);
    size_t ldx;
    /* int8 batches: dot8 with the prefetch distances pf (L1) and pf2 (L2, 0: none); split
     * along n_in when ks > 0 (ldx is then the stride of one slice's prepared rows) */
    void (*dot8pf)(int64_t n, const void *w, ptrdiff_t pf, ptrdiff_t pf2, const void *x,
                   size_t ldx, int nr, float *out);
    ptrdiff_t pf, pf2;
    int64_t ks;
    /* FCPU_REPACK16 weights (wrows: the copy), any number of activation rows: groups of 16
     * weight rows through gemm16, the rows after the last full group through dot */
    void (*gemm16)(int64_t n, const void *w, const void *x, size_t ldx, int nr, float *y,
                   size_t ldy);
    /* float weights, 2 or more rows (option fgemm): blocks of FCPU_FNW weight rows against
     * groups of 8 activation rows, which each thread first copies into pieces of FCPU_FKB
     * (mm_prep: piece p of row r at xpack + (p * n_rows + r) * FCPU_FKB) */
    void (*gemmf)(int64_t n, const void *w, size_t ldw, int nw, const float *x, size_t ldx,
                  size_t ldp, int nr, float *y, size_t ldy);
    int64_t chunk;             /* rows a thread takes at a time (sched=guided: at least) */
    int64_t align;             /* every chunk but the last a multiple of this */
    int guided_div;            /* sched=guided: a take is the rows left / this (0: even) */
    _Atomic int64_t next;
    _Atomic int err;
    float *shared_scale;       /* DEFER_ONE: thread 0 publishes the scales here */
    _Atomic int scale_ready;
} mm_ctx_t;

/* The next chunk of weight rows [o0, o1); false when none is left.  sched=even: chunks of
 * m->chunk.  sched=guided: a take is the rows left / guided_div (rounded up to align), never
 * below m->chunk, so the first chunks are long streams and the last ones short, which
 * evens out the threads' finishing times without a long tail. */
static bool take_chunk(mm_ctx_t *m, int64_t *o0, int64_t *o1)
{
    int64_t a = atomic_load_explicit(&m->next, memory_order_relaxed), ch;
    do {
        if (a >= m->n_out)
            return false;
        ch = m->chunk;
        if (m->guided_div) {
            int64_t g = (m->n_out - a) / m->guided_div;
            g = (g + m->align - 1) / m->align * m->align;
            ch = FD_MAX(ch, g);
        }
    } while (!atomic_compare_exchange_weak(&m->next, &a, a + ch));
    *o0 = a;
    *o1 = FD_MIN(a + ch, m->n_out);
    return true;
}

/* The statistic's scale for one raw row (fb_defer_t): 1/sqrt(mean(x^2)+eps) or
 * 1/sqrt(var(x)+eps), variance in two passes. */
static float row_scale(const fcpu_kern_t *k, int kind, const float *x, int64_t n, float eps)
{
    if (kind == FB_NORM_RMS)
        return (float)(1.0 / sqrt(k->sumsq(x, n) / (double)n + eps));
    double mean = k->sum(x, n) / (double)n;
    return (float)(1.0 / sqrt(k->sumsq_dev(x, n, (float)mean) / (double)n + eps));
}

/* llama.cpp's q8_0 (and q8_1) activation blocks keep their scale d = amax / 127 in fp16 (its
 * quantize_row_q8_0: codes rne(x * 127 / amax), as the kernels' quant_q32, d stored as fp16),
 * which for small activations is far from d (fp16's subnormals start at 6.1e-5).  The XQ32
 * scales of a prepared row of n elements are rounded the same way here, on the row the
 * product really multiplies: s is the deferred norm's row scale the epilogue applies
 * afterwards (1 without), so d becomes fp16(d s) / s and the product equals llama.cpp's on
 * the normalized row (the codes do not depend on s). */
static bool xq32_form(int xform)
{
    return xform == FCPU_XQ32 || xform == FCPU_XQ32I || xform == FCPU_XQ32T;
}

static void xq32_scales_fp16(uint8_t *row, int64_t n, float s)
{
    float *d = (float *)fcpu_xq32_d(row, n);
    for (int64_t b = 0; b < n / 32; b++)
        d[b] = s == 1.f ? fq_f16_to_f32(fq_f32_to_f16(d[b]))
                        : fq_f16_to_f32(fq_f32_to_f16(d[b] * s)) / s;
}

/* Scales and biases the outputs of weight rows [o0, o1) for every activation row. */
static void mm_epilogue(const mm_ctx_t *m, const float *s, int64_t o0, int64_t o1)
{
    const float *bias = m->w->bias;
    if (!s && !bias)
        return;
    for (int64_t r = 0; r < m->n_rows; r++) {
        float *yr = m->y + r * m->n_out;
        float sr = s ? s[r] : 1.f;
        if (bias)
            for (int64_t o = o0; o < o1; o++)
                yr[o] = yr[o] * sr + bias[o];
        else
            for (int64_t o = o0; o < o1; o++)
                yr[o] *= sr;
    }
}

/* Weight rows [o0, o1) against all activation rows, blocked for the caches: a block of OB
 * weight rows (dequantized once when the type has no kernel) is reused by every group of
 * FCPU_NR activation rows.  Float rows are long (8 KB at n_in 2048), so they are also split
 * along n_in into KB-element pieces, and a group's pieces are copied next to each other:
 * rows 8 KB apart all fall into the same 32 sets of an 8-way L1, and 4 weight rows plus 4
 * activation rows at that stride already thrash it (one Zen 4 thread, weights in L2, 8
 * rows: 9 multiply-adds per cycle in place, see BENCHMARKS.md for packed). */
#ifndef MM_OB
#define MM_OB 16
#endif
#ifndef MM_OBF
#define MM_OBF 8
#endif
#ifndef MM_KB
#define MM_KB 512
#endif

static void mm_rows(const mm_ctx_t *m, const fcpu_kern_t *k, const uint8_t *wsrc,
                    const uint8_t *xbase, float *wbuf, float *xpack, int64_t o0, int64_t o1)
{
    const int64_t n_in = m->n_in, n_rows = m->n_rows;
    const bool fl = m->xform == FCPU_XF32;
    const int64_t OB = fl ? MM_OBF : MM_OB;
    /* two or three rows fit L1 whole and gain nothing from the split; nor do batches of 8
     * (dot2x8): their activations stay in L2, and the weights then stream row by row, which
     * the prefetchers follow far better than the pieces of 8 rows (TinyLlama F32 products,
     * 8 rows, one thread: 1.6-1.9x faster unsplit) */
    const bool split = fl && n_rows >= FCPU_NR && m->nr != FCPU_NR8;
    const int64_t KB = split ? MM_KB : n_in;
    /* two weight rows per call for the float types (dequantized rows included) */
    const int wt = m->path == MM_GENERIC ? GG_F32 : m->w->type;
    void (*dot2)(int64_t, const void *, size_t, const void *, size_t, int, float *) =
        split ? k->dot2[wt] : NULL; /* a single row streams better alone (see dot4) */
    int ostr = FCPU_NR; /* out[i * ostr + j]: weight row i, activation row j */
    if (fl && m->nr == FCPU_NR8) { /* batches: all rows against two weight rows */
        dot2 = k->dot2x8[wt];
        ostr = FCPU_NR8;
    }
    float out[2 * FCPU_NR8];
    if (split) /* once per chunk: piece p of row r at xpack + (p * n_rows + r) * KB */
        for (int64_t kb = 0; kb < n_in; kb += MM_KB)
            for (int64_t r = 0; r < n_rows; r++)
                memcpy(xpack + ((size_t)(kb / MM_KB) * (size_t)n_rows + (size_t)r) * MM_KB,
                       xbase + (size_t)r * m->ldx + (size_t)kb * 4,
                       (size_t)FD_MIN(MM_KB, n_in - kb) * 4);
    for (int64_t ob = o0; ob < o1; ob += OB) {
        const int64_t oe = FD_MIN(ob + OB, o1);
        const uint8_t *wb = wsrc + (uint64_t)ob * m->ldw;
        size_t wld = m->ldw, esz = m->path == MM_GENERIC ? 4 : (size_t)gg_block_bytes(m->w->type);
        if (m->path == MM_GENERIC) {
            for (int64_t o = ob; o < oe; o++)
                fq_dequantize_row(m->w->type, wb + (uint64_t)(o - ob) * m->ldw, wbuf + (o - ob) * n_in, n_in);
            wb = (const uint8_t *)wbuf;
            wld = (size_t)n_in * sizeof(float);
        }
        for (int64_t kb = 0; kb < n_in; kb += KB) {
            const int64_t nk = FD_MIN(KB, n_in - kb);
            /* float types: element kb is at byte kb * esz of a weight row, kb * 4 of an
             * activation row; the other forms are never split (KB = n_in) */
            const size_t woff = fl ? (size_t)kb * esz : 0, xoff = fl ? (size_t)kb * 4 : 0;
            if (split && ob + OB < o1) /* the next block's piece, while this one computes */
                for (int64_t o = ob + OB; o < FD_MIN(ob + 2 * OB, o1); o++)
                    for (size_t b = 0; b < (size_t)nk * esz; b += 64)
                        __builtin_prefetch(wsrc + (uint64_t)o * m->ldw + woff + b, 0, 2);
            for (int64_t r = 0; r < n_rows; r += m->nr) {
                const int nr = (int)FD_MIN(m->nr, n_rows - r);
                const uint8_t *xr = xbase + (size_t)r * m->ldx + xoff;
                size_t ldx = m->ldx;
                if (split) {
                    xr = (const uint8_t *)(xpack + ((size_t)(kb / MM_KB) * (size_t)n_rows + (size_t)r) * MM_KB);
                    ldx = MM_KB * sizeof(float);
                }
                for (int64_t o = ob; o < oe;) {
                    const uint8_t *wo = wb + (size_t)(o - ob) * wld + woff;
                    int mw = 1;
                    if (dot2 && o + 1 < oe) {
                        dot2(nk, wo, wld, xr, ldx, nr, out);
                        mw = 2;
                    } else {
                        /* the float dot takes FCPU_NR rows a call, dot8 all of them */
                        const int dn = fl ? FCPU_NR : m->nr;
                        if (m->dot8pf)
                            m->dot8pf(nk, wo, m->pf, m->pf2, xr, ldx, nr, out);
                        else
                            for (int j = 0; j < nr; j += dn)
                                m->dot(nk, wo, xr + (size_t)j * ldx, ldx, FD_MIN(dn, nr - j), out + j);
                    }
                    for (int i = 0; i < mw; i++, o++) {
                        float *y = m->y + r * m->n_out + o;
                        if (kb == 0)
                            for (int j = 0; j < nr; j++)
                                y[j * m->n_out] = out[i * ostr + j];
                        else
                            for (int j = 0; j < nr; j++)
                                y[j * m->n_out] += out[i * ostr + j];
                    }
                }
            }
        }
    }
}

/* Weight rows [o0, o1) against all activation rows, one n_in slice of ks elements at a
 * time: slice s of every row was prepared as a row of its own (at xbase + (s * n_rows + r)
 * * ldx), exact since the int8 blocks and XQ32T's groups of 8 blocks never cross a slice.
 * Eight prepared rows of n_in 5632 (TinyLlama's down) take 56 KiB, past a 32 KiB L1, so the
 * unsplit dot8 reloads them from L2 for every weight row; a slice of 2048 takes 20 KiB and
 * stays in L1 while the chunk's rows pass over it.  Each dot8 call reads a piece of one
 * weight row, and the next call the same piece of the next row: that is where it
 * prefetches (pf = the row stride).  OB weight rows at a time share each group of 8
 * activation rows, for batches above 8 (prefill). */
static void mm_rows_sliced(const mm_ctx_t *m, const uint8_t *wsrc, const uint8_t *xbase,
                           int64_t o0, int64_t o1)
{
    const int64_t n_in = m->n_in, n_rows = m->n_rows, n_out = m->n_out;
    const int64_t be = gg_block_elems(m->w->type);
    const size_t bb = gg_block_bytes(m->w->type);
    float out[FCPU_NR8];
    for (int64_t k0 = 0, s = 0; k0 < n_in; k0 += m->ks, s++) {
        const int64_t kn = FD_MIN(m->ks, n_in - k0);
        const size_t woff = (size_t)(k0 / be) * bb;
        const uint8_t *xs = xbase + (size_t)s * (size_t)n_rows * m->ldx;
        for (int64_t ob = o0; ob < o1; ob += MM_OB)
            for (int64_t r = 0; r < n_rows; r += FCPU_NR8) {
                const int nr = (int)FD_MIN(FCPU_NR8, n_rows - r);
                for (int64_t o = ob; o < FD_MIN(ob + MM_OB, o1); o++) {
                    m->dot8pf(kn, wsrc + (uint64_t)o * m->ldw + woff, m->pf, m->pf2,
                              xs + (size_t)r * m->ldx, m->ldx, nr, out);
                    float *y = m->y + r * n_out + o;
                    if (k0 == 0)
                        for (int j = 0; j < nr; j++)
                            y[j * n_out] = out[j];
                    else
                        for (int j = 0; j < nr; j++)
                            y[j * n_out] += out[j];
                }
            }
    }
}

/* Weight rows [o0, o1) (o0 a multiple of FCPU_G16) on FCPU_REPACK16 weights: each group
 * of 16 rows against 8 activation rows a call, its outputs stored straight into y. */
static void mm_rows16(const mm_ctx_t *m, const uint8_t *wsrc, const uint8_t *xbase, int64_t o0,
                      int64_t o1)
{
    const int64_t n_out = m->n_out, full = n_out / FCPU_G16 * FCPU_G16;
    int64_t o = o0;
    for (; o + FCPU_G16 <= FD_MIN(o1, full); o += FCPU_G16)
        for (int64_t r = 0; r < m->n_rows; r += FCPU_NR8)
            m->gemm16(m->n_in, wsrc + (uint64_t)o * m->ldw, xbase + (size_t)r * m->ldx, m->ldx,
                      (int)FD_MIN(FCPU_NR8, m->n_rows - r), m->y + r * n_out + o, (size_t)n_out);
    float out[FCPU_NR];
    for (; o < o1; o++)
        for (int64_t r = 0; r < m->n_rows; r += FCPU_NR) {
            const int nr = (int)FD_MIN(FCPU_NR, m->n_rows - r);
            m->dot(m->n_in, wsrc + (uint64_t)o * m->ldw, xbase + (size_t)r * m->ldx, m->ldx, nr, out);
            for (int j = 0; j < nr; j++)
                m->y[(r + j) * n_out + o] = out[j];
        }
}

/* One thread's view of a product: its scratch, its row scales and its prepared rows. */
typedef struct mm_thr {
    float *xpack, *s, *wbuf;
    const uint8_t *xbase;
} mm_thr_t;

/* Step 1 of a product on thread ith: its scratch, its own copy of the activations, and the
 * row statistics on the way (every row when each, else only on the first thread, which
 * also writes scale_out).  -ENOMEM when the scratch does not fit. */
static int mm_prep(mm_ctx_t *m, int ith, bool each, bool first, mm_thr_t *t)
{
    fcpu_t *c = m->c;
    const fcpu_kern_t *k = c->k;
    const fb_weight_t *w = m->w;
    const int64_t n_in = m->n_in, n_rows = m->n_rows;
    const bool scaled_x = w->in_scale != NULL;
    const bool need_x = m->xform != FCPU_XF32 || scaled_x;

    /* scratch: [packed x pieces][scales n_rows][x row n_in floats][prepared x][weights] */
    size_t off_s = m->xform == FCPU_XF32 && n_rows >= FCPU_NR && m->nr != FCPU_NR8
                       ? (size_t)((n_in + MM_KB - 1) / MM_KB) * (size_t)n_rows * MM_KB * sizeof(float)
                       : 0;
    if (m->gemmf)
        off_s = (size_t)((n_in + FCPU_FKB - 1) / FCPU_FKB) * (size_t)n_rows * FCPU_FKB * sizeof(float);
    size_t off_x = off_s + (((size_t)n_rows * 4 + 63) & ~(size_t)63);
    size_t off_xp = off_x + (((size_t)n_in * 4 + 63) & ~(size_t)63);
    const int64_t n_sl = m->ks ? (n_in + m->ks - 1) / m->ks : 1; /* prepared slices a row */
    size_t off_w = off_xp + (need_x ? (size_t)n_sl * (size_t)n_rows * m->ldx : 0);
    size_t wtile = m->path == MM_QBLAS ? QTILE : m->path == MM_GENERIC ? MM_OB : 0;
    uint8_t *buf = scratch_get(&c->scr[ith], off_w + wtile * (size_t)n_in * 4 + 64);
    if (!buf)
        return -ENOMEM;
    float *s = (float *)(buf + off_s), *xtmp = (float *)(buf + off_x);
    uint8_t *xp = buf + off_xp;
    t->xpack = (float *)buf;
    t->s = s;
    t->wbuf = (float *)(buf + off_w);

    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = m->x + r * n_in;
        if (each || (m->kind != FB_NORM_NONE && first)) {
            s[r] = row_scale(k, m->kind, xr, n_in, m->eps);
            if (first && m->scale_out)
                m->scale_out[r] = s[r];
        }
        if (!need_x)
            continue;
        const float *src = xr;
        if (scaled_x) {
            float *dst = m->xform == FCPU_XF32 ? (float *)(xp + (size_t)r * m->ldx) : xtmp;
            k->mul(xr, w->in_scale, dst, n_in);
            src = dst;
        }
        /* the norm scale of an XQ32 row (each is set for those: s[r] is known) */
        const float sr = xq32_form(m->xform) && m->kind != FB_NORM_NONE ? s[r] : 1.f;
        if (m->ks) {
            for (int64_t k0 = 0, sl = 0; k0 < n_in; k0 += m->ks, sl++) {
                uint8_t *dst = xp + ((size_t)sl * (size_t)n_rows + (size_t)r) * m->ldx;
                if (m->xform == FCPU_XQ32T) {
                    k->quant_q32t(src + k0, FD_MIN(m->ks, n_in - k0), dst);
                    xq32_scales_fp16(dst, FD_MIN(m->ks, n_in - k0), sr);
                } else {
                    k->quant_qkt(src + k0, FD_MIN(m->ks, n_in - k0), dst);
                }
            }
        } else if (m->xform == FCPU_XQ32)
            k->quant_q32(src, n_in, xp + (size_t)r * m->ldx);
        else if (m->xform == FCPU_XQ32I)
            k->quant_q32i(src, n_in, xp + (size_t)r * m->ldx);
        else if (m->xform == FCPU_XQ32T)
            k->quant_q32t(src, n_in, xp + (size_t)r * m->ldx);
        else if (m->xform == FCPU_XQKT)
            k->quant_qkt(src, n_in, xp + (size_t)r * m->ldx);
        else if (m->xform == FCPU_XQK)
            k->quant_qk(src, n_in, xp + (size_t)r * m->ldx);
        if (!m->ks && xq32_form(m->xform))
            xq32_scales_fp16(xp + (size_t)r * m->ldx, n_in, sr);
    }
    t->xbase = need_x ? xp : (const uint8_t *)m->x;
    if (m->gemmf) { /* gemmf's pieces: the rows of a piece next to each other */
        const int64_t np = (n_in + FCPU_FKB - 1) / FCPU_FKB;
        for (int64_t p = 0; p < np; p++)
            for (int64_t r = 0; r < n_rows; r++)
                memcpy(t->xpack + (size_t)(p * n_rows + r) * FCPU_FKB,
                       t->xbase + (size_t)r * m->ldx + (size_t)p * FCPU_FKB * sizeof(float),
                       (size_t)FD_MIN(FCPU_FKB, n_in - p * FCPU_FKB) * sizeof(float));
        t->xbase = (const uint8_t *)t->xpack;
    }
    return 0;
}

/* Step 2: weight rows [o0, o1) against every activation row (no epilogue). */
static void mm_chunk(mm_ctx_t *m, const mm_thr_t *t, int64_t o0, int64_t o1)
{
    fcpu_t *c = m->c;
    const fcpu_kern_t *k = c->k;
    const fb_weight_t *w = m->w;
    const int64_t n_in = m->n_in, n_rows = m->n_rows;
    const uint8_t *xbase = t->xbase;
    const float *xf = (const float *)xbase; /* the F32 activations (BLAS paths) */
    float *wbuf = t->wbuf;
    {
        const uint8_t *wsrc = m->wrows;
        if (m->path == MM_BLAS) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n_rows, (int)(o1 - o0),
                        (int)n_in, 1.f, xf, (int)n_in, (const float *)(wsrc + (uint64_t)o0 * m->ldw),
                        (int)(m->ldw / sizeof(float)), 0.f, m->y + o0, (int)m->n_out);
        } else if (m->path == MM_QBLAS) {
            for (int64_t t0 = o0; t0 < o1; t0 += QTILE) {
                int64_t t1 = FD_MIN(t0 + QTILE, o1);
                for (int64_t o = t0; o < t1; o++)
                    fq_dequantize_row(w->type, wsrc + (uint64_t)o * m->ldw,
                                      wbuf + (o - t0) * n_in, n_in);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n_rows, (int)(t1 - t0),
                            (int)n_in, 1.f, xf, (int)n_in, wbuf, (int)n_in, 0.f, m->y + t0,
                            (int)m->n_out);
            }
        } else if (n_rows == 1 && m->dot4q && o1 - o0 >= c->streams) {
            /* c->streams (4 or 8) parts of q rows each, read side by side: part j's row i
             * is row o0 + j * q + i */
            const int ns = c->streams;
            const int64_t q = (o1 - o0) / ns;
            const size_t qb = (size_t)q * m->ldw;
            float out[4];
            for (int64_t o = o0; o < o0 + q; o++)
                for (int g = 0; g < ns; g += 4) {
                    m->dot4q(n_in, wsrc + (uint64_t)(o + g * q) * m->ldw, qb, xbase, out);
                    for (int j = 0; j < 4; j++)
                        m->y[o + (g + j) * q] = out[j];
                }
            for (int64_t o = o0 + ns * q; o < o1; o++)
                m->dot(n_in, wsrc + (uint64_t)o * m->ldw, xbase, m->ldx, 1, m->y + o);
        } else if (n_rows == 1 && m->dot4) {
            /* decode of a small matrix: four weight rows per call share the activation
             * loads and one horizontal reduction */
            int64_t o = o0;
            for (; o + 4 <= o1; o += 4)
                m->dot4(n_in, wsrc + (uint64_t)o * m->ldw, m->ldw, xbase, m->y + o);
            for (; o < o1; o++)
                m->dot(n_in, wsrc + (uint64_t)o * m->ldw, xbase, m->ldx, 1, m->y + o);
        } else if (m->gemm16) {
            mm_rows16(m, wsrc, xbase, o0, o1);
        } else if (m->gemmf) {
            /* each block of weight rows against every group of 8: past 8 rows (a prefill
             * below blas_rows) the block's rows come back from L2 */
            const size_t ldp = (size_t)n_rows * FCPU_FKB * sizeof(float);
            for (int64_t o = o0; o < o1; o += FCPU_FNW)
                for (int64_t r = 0; r < n_rows; r += FCPU_NR8)
                    m->gemmf(n_in, wsrc + (uint64_t)o * m->ldw, m->ldw, (int)FD_MIN(FCPU_FNW, o1 - o),
                             (const float *)xbase + r * FCPU_FKB, FCPU_FKB * sizeof(float), ldp,
                             (int)FD_MIN(FCPU_NR8, n_rows - r), m->y + r * m->n_out + o,
                             (size_t)m->n_out);
        } else if (m->ks) {
            mm_rows_sliced(m, wsrc, xbase, o0, o1);
        } else {
            mm_rows(m, k, wsrc, xbase, wbuf, t->xpack, o0, o1);
        }
    }
}

static void mm_task(void *arg, int ith, int nth)
{
    mm_ctx_t *m = arg;
    /* XQ32 rows need their norm scale before the product (xq32_scales_fp16) */
    const bool each = m->kind != FB_NORM_NONE &&
                      (m->c->defer_mode == DEFER_EACH || nth == 1 || xq32_form(m->xform));
    mm_thr_t t;
    int rc = mm_prep(m, ith, each, ith == 0, &t);
    if (rc) {
        atomic_store(&m->err, rc);
        return;
    }
    if (m->kind != FB_NORM_NONE && !each && ith == 0) {
        memcpy(m->shared_scale, t.s, (size_t)m->n_rows * sizeof(float));
        atomic_store_explicit(&m->scale_ready, 1, memory_order_release);
    }

    int64_t done[64][2];
    int n_done = 0;
    for (;;) {
        int64_t o0, o1;
        if (!take_chunk(m, &o0, &o1))
            break;
        mm_chunk(m, &t, o0, o1);
        if (m->kind == FB_NORM_NONE || each) {
            mm_epilogue(m, m->kind != FB_NORM_NONE ? t.s : NULL, o0, o1);
        } else if (n_done < 64) {
            done[n_done][0] = o0;
            done[n_done++][1] = o1;
        } else { /* too many chunks to remember: wait for the scales now */
            wait_flag(&m->scale_ready);
            mm_epilogue(m, m->shared_scale, o0, o1);
        }
    }
    /* DEFER_ONE: the join, once thread 0's statistic is there */
    if (n_done) {
        wait_flag(&m->scale_ready);
        for (int i = 0; i < n_done; i++)
            mm_epilogue(m, m->shared_scale, done[i][0], done[i][1]);
    }
}

/* Chooses the path, kernels and chunking of one product into *mp, as a run on nth threads
 * (0: as many as its work deserves, threads_for), and returns that thread count.  streamed:
 * decode reads the matrix as a stream from memory whatever its size (dot4q, never dot4). */
static int mm_setup(fcpu_t *c, const fb_weight_t *w, const float *x, int64_t n_rows, float *y,
                    const fb_defer_t *defer, int nth, bool streamed, mm_ctx_t *mp)
{
    const int kind = defer ? defer->kind : FB_NORM_NONE;
    mm_ctx_t m = {.c = c, .w = w, .x = x, .n_rows = n_rows, .n_in = w->n_in, .n_out = w->n_out,
                  .row_bytes = gg_row_bytes(w->type, (uint64_t)w->n_in), .y = y, .kind = kind,
                  .wrows = w->src,
                  .eps = defer ? defer->eps : 0, .scale_out = kind ? defer->scale_out : NULL,
                  .nr = FCPU_NR};
    m.ldw = m.row_bytes;
    const fcpu_kern_t *k = c->k;
    if (w->type == GG_F32 && c->blas_rows > 0 && n_rows >= c->blas_rows) {
        m.path = MM_BLAS;
        m.xform = FCPU_XF32;
    } else if (w->type != GG_F32 && c->qblas_rows > 0 && n_rows >= c->qblas_rows) {
        m.path = MM_QBLAS;
        m.xform = FCPU_XF32;
    } else if (k->dot[w->type] && !(c->generic && w->type != GG_F32 && w->type != GG_F16 &&
                                     w->type != GG_BF16)) {
        m.path = MM_DOT;
        m.dot = k->dot[w->type];
        m.xform = k->xform[w->type];
        if (m.row_bytes * (uint64_t)w->n_out <= (uint64_t)c->dot4_max && !streamed)
            m.dot4 = k->dot4[w->type];
        else if (c->streams > 1)
            m.dot4q = k->dot4[w->type];
        const fcpu_weight_t *cw = w->impl;
        if (n_rows >= 1 && c->repack == 2 && cw && cw->packed && cw->pack == 2 &&
            k->gemm16[w->type]) {
            /* 16 weight rows a call share every activation load; one row (decode) reads the
             * copy too (as fast as dot4q in A/B), since the source's pages were handed back */
            m.gemm16 = k->gemm16[w->type];
            m.wrows = cw->packed;
            m.dot4 = m.dot4q = NULL;
        } else if (n_rows >= 2 && c->dot8 && k->dot8[w->type]) { /* the weight work shared by 8 rows */
            m.dot = k->dot8[w->type];
            m.xform = k->xform8[w->type];
            m.nr = FCPU_NR8;
            if (c->repack == 1 && cw && cw->packed && cw->pack == 1 && k->dot8r[w->type]) {
                m.dot = k->dot8r[w->type];
                m.wrows = cw->packed;
            } else if (k->dot8pf[w->type]) {
                m.dot8pf = k->dot8pf[w->type];
                m.pf = DOT8_PF;
                if (c->kslice > 0 && w->n_in > c->kslice) {
                    m.ks = c->kslice;
                    m.pf = (ptrdiff_t)m.ldw; /* the same piece of the next row */
                }
                m.pf2 = c->farpf * m.pf;
            }
        }
    } else {
        m.path = MM_GENERIC;
        m.dot = k->dot[GG_F32];
        m.xform = FCPU_XF32;
    }
    if (m.xform == FCPU_XF32 && (m.path == MM_DOT || m.path == MM_GENERIC) && n_rows > FCPU_NR &&
        c->dot8 && k->dot2x8[m.path == MM_GENERIC ? GG_F32 : w->type])
        m.nr = FCPU_NR8; /* each weight row read once per 8 activation rows, not per 4 */
    if (m.path == MM_DOT && m.xform == FCPU_XF32 && n_rows >= 2 && c->fgemm && k->gemmf[w->type])
        m.gemmf = k->gemmf[w->type]; /* each weight row read once per 8 activation rows */
    m.ldx = fcpu_xrow_bytes(m.xform, m.ks ? m.ks : w->n_in);
    if (m.xform == FCPU_XF32 && !w->in_scale)
        m.ldx = (size_t)w->n_in * sizeof(float); /* the caller's rows as they are */
    if (m.path == MM_BLAS || m.path == MM_QBLAS)
        m.ldx = (size_t)w->n_in * sizeof(float); /* sgemm reads packed rows */

    if (nth <= 0)
        nth = threads_for(c, (double)w->n_in * (double)w->n_out * (double)n_rows);
    /* chunks: about 8 per thread, for balance when a core is shared; BLAS wants big ones */
    int64_t per = (w->n_out + nth * 8 - 1) / (nth * 8);
    if (m.path == MM_BLAS || m.path == MM_QBLAS)
        per = (w->n_out + nth - 1) / nth;
    m.align = 4;
    if (m.gemmf) /* whole blocks */
        m.align = FCPU_FNW;
    if (m.gemm16) /* whole groups of 16 rows */
        m.align = FCPU_G16;
    if (m.path == MM_QBLAS)
        m.align = QTILE;
    /* sched=auto: shrinking chunks for decode, where the threads stream the weights from
     * memory and the one that finishes last holds up the step (two threads on a quiet host:
     * F32 1.05x, Q8_0 1.02x); batches keep even chunks (no gain measured) */
    const bool guided = c->sched == SCHED_GUIDED || (c->sched == SCHED_AUTO && n_rows == 1);
    if (guided && nth > 1 && m.path != MM_BLAS && m.path != MM_QBLAS) {
        m.guided_div = 2 * nth;
        per = (w->n_out + nth * 32 - 1) / (nth * 32);
    }
    m.chunk = FD_MAX((per + m.align - 1) / m.align * m.align, (int64_t)m.align);
    *mp = m;
    return nth;
}

static int cpu_matmul(fb_backend_t *be, const fb_weight_t *w, const float *x, int64_t n_rows,
                      float *y, const fb_defer_t *defer)
{
    fcpu_t *c = (fcpu_t *)be;
    int rc = fb_weight_check(w);
    if (rc)
        return rc;
    int kind = defer ? defer->kind : FB_NORM_NONE;
    if (kind != FB_NORM_NONE && !(defer->eps >= 0))
        return -EINVAL;
    if (c->ref)
        return fcpu_ref_matmul(w, x, n_rows, y, defer);
    mm_ctx_t m;
    int nth = mm_setup(c, w, x, n_rows, y, defer, 0, false, &m);
    float *shared = NULL;
    if (kind != FB_NORM_NONE && c->defer_mode == DEFER_ONE && nth > 1) {
        if (!(shared = malloc((size_t)n_rows * sizeof(float))))
            return -ENOMEM;
        m.shared_scale = shared;
    }
    fcpu_pool_run(c->pool, nth, mm_task, &m);
    free(shared);
    return atomic_load(&m.err);
}

/* ---- grouped products (mixture-of-experts) -------------------------------------------- */

typedef struct mm_group {
    mm_ctx_t *m;
    int n;
} mm_group_t;

/* Every thread walks the products in order and takes chunks of each until none is left, so
 * the threads move on to the next product without a barrier and the union of the output
 * rows is shared out in one dispatch.  A thread prepares a product's activations only when
 * it gets a chunk of it; with one dispatch there is no first thread to publish the row
 * statistics, so each computes its own (DEFER_EACH: the same function of the same row,
 * hence the same scale). */
static void mm_group_task(void *arg, int ith, int nth)
{
    mm_group_t *g = arg;
    (void)nth;
    for (int i = 0; i < g->n; i++) {
        mm_ctx_t *m = &g->m[i];
        int64_t o0, o1;
        if (!take_chunk(m, &o0, &o1))
            continue;
        mm_thr_t t;
        int rc = mm_prep(m, ith, true, false, &t);
        if (rc) {
            atomic_store(&m->err, rc);
            continue;
        }
        do {
            mm_chunk(m, &t, o0, o1);
            mm_epilogue(m, m->kind != FB_NORM_NONE ? t.s : NULL, o0, o1);
        } while (take_chunk(m, &o0, &o1));
    }
}

static int cpu_matmul_group(fb_backend_t *be, const fb_mm_part_t *parts, int n_parts,
                            const fb_defer_t *defer)
{
    fcpu_t *c = (fcpu_t *)be;
    if (defer && defer->kind != FB_NORM_NONE && !(defer->eps >= 0))
        return -EINVAL;
    int rc = 0;
    if (c->ref || !c->group) { /* the reference, or group=0: one product after another */
        for (int i = 0; i < n_parts && rc == 0; i++)
            if (parts[i].n_rows)
                rc = c->ref ? fcpu_ref_matmul(parts[i].w, parts[i].x, parts[i].n_rows, parts[i].y,
                                              defer)
                            : cpu_matmul(be, parts[i].w, parts[i].x, parts[i].n_rows, parts[i].y,
                                         defer);
        return rc;
    }
    double work = 0;
    uint64_t bytes = 0;
    int n = 0;
    for (int i = 0; i < n_parts; i++)
        if (parts[i].n_rows) {
            const fb_weight_t *w = parts[i].w;
            work += (double)w->n_in * (double)w->n_out * (double)parts[i].n_rows;
            bytes += gg_row_bytes(w->type, (uint64_t)w->n_in) * (uint64_t)w->n_out;
            n++;
        }
    if (n == 0)
        return 0;
    mm_ctx_t one, *ms = n == 1 ? &one : malloc((size_t)n * sizeof(*ms));
    if (!ms)
        return -ENOMEM;
    const int nth = threads_for(c, work);
    /* A group's matrices are as cold as their sum is large: experts are chosen afresh every
     * step, so a small expert matrix is no more in the caches than a large dense one, and
     * four adjacent rows a call (dot4, for matrices that stay cached) read it at a fraction
     * of the rate of dot4q's streams (BENCHMARKS.md, grouped expert products) */
    const bool streamed = bytes > (uint64_t)c->dot4_max;
    for (int i = 0, j = 0; i < n_parts; i++)
        if (parts[i].n_rows)
            mm_setup(c, parts[i].w, parts[i].x, parts[i].n_rows, parts[i].y, defer, nth, streamed,
                     &ms[j++]);
    mm_group_t g = {.m = ms, .n = n};
    fcpu_pool_run(c->pool, nth, mm_group_task, &g);
    for (int i = 0; i < n && rc == 0; i++)
        rc = atomic_load(&ms[i].err);
    if (ms != &one)
        free(ms);
    return rc;
}

/* ---- norms ---------------------------------------------------------------------------- */

typedef struct norm_ctx {
    const fcpu_kern_t *k;
    const float *x, *g, *b;
    float *y;
    int64_t n;
    float eps;
} norm_ctx_t;

static void rms_rows(void *arg, int64_t r0, int64_t r1, int ith)
{
    norm_ctx_t *a = arg;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = a->x + r * a->n;
        float s = (float)(1.0 / sqrt(a->k->sumsq(x, a->n) / (double)a->n + a->eps));
        a->k->mul_scale(x, a->g, s, a->y + r * a->n, a->n);
    }
}

static void ln_rows(void *arg, int64_t r0, int64_t r1, int ith)
{
    norm_ctx_t *a = arg;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = a->x + r * a->n;
        float *y = a->y + r * a->n;
        float mean = (float)(a->k->sum(x, a->n) / (double)a->n);
        float s = (float)(1.0 / sqrt(a->k->sumsq_dev(x, a->n, mean) / (double)a->n + a->eps));
        for (int64_t i = 0; i < a->n; i++)
            y[i] = (x[i] - mean) * s * a->g[i] + (a->b ? a->b[i] : 0.f);
    }
}

static int cpu_rmsnorm(fb_backend_t *be, const float *x, int64_t n_rows, int64_t n,
                       const fb_weight_t *gamma, float eps, float *y)
{
    fcpu_t *c = (fcpu_t *)be;
    float *tmp;
    const float *g = weight_vec(gamma, n, &tmp);
    if (!g || !(eps >= 0)) {
        free(tmp);
        return -EINVAL;
    }
    if (c->ref) {
        fcpu_ref_rmsnorm(x, n_rows, n, g, eps, y);
    } else {
        norm_ctx_t a = {.k = c->k, .x = x, .g = g, .y = y, .n = n, .eps = eps};
        par_rows(c, n_rows, 2.0 * (double)n, rms_rows, &a);
    }
    free(tmp);
    return 0;
}

static int cpu_layernorm(fb_backend_t *be, const float *x, int64_t n_rows, int64_t n,
                         const fb_weight_t *gamma, const fb_weight_t *beta, float eps, float *y)
{
    fcpu_t *c = (fcpu_t *)be;
    float *tg = NULL, *tb = NULL;
    const float *g = weight_vec(gamma, n, &tg), *b = NULL;
    int rc = 0;
    if (!g || !(eps >= 0))
        rc = -EINVAL;
    else if (beta && !(b = weight_vec(beta, n, &tb)))
        rc = -EINVAL;
    if (rc == 0) {
        if (c->ref) {
            fcpu_ref_layernorm(x, n_rows, n, g, b, eps, y);
        } else {
            norm_ctx_t a = {.k = c->k, .x = x, .g = g, .b = b, .y = y, .n = n, .eps = eps};
            par_rows(c, n_rows, 3.0 * (double)n, ln_rows, &a);
        }
    }
    free(tg);
    free(tb);
    return rc;
}

/* ---- rope ----------------------------------------------------------------------------- */

typedef struct rope_ctx {
    float *x;
    int64_t ld;
    int n_heads, head_dim;
    const int32_t *pos;
    const fb_rope_t *rope;
    const double *inv; /* base^(-2i/n_rot) */
    const float *mix;  /* YaRN's blend of each pair (fb_rope_yarn_mix), or NULL: none */
    double mscale;     /* fb_rope_mscale */
} rope_ctx_t;

static void rope_rows(void *arg, int64_t r0, int64_t r1, int ith)
{
    rope_ctx_t *a = arg;
    const int half = a->rope->n_rot / 2;
    float cs[512], sn[512];
    for (int64_t r = r0; r < r1; r++) {
        /* the angles depend on the position only: once per row, for all heads */
        for (int i = 0; i < half; i++) {
            double th = (double)a->pos[r] * a->rope->freq_scale * a->inv[i];
            if (a->mix && a->mix[i] != 0) {
                double mix = a->mix[i];
                th = th * (1 - mix) + (double)a->pos[r] * a->inv[i] * mix;
            }
            cs[i] = (float)(cos(th) * a->mscale);
            sn[i] = (float)(sin(th) * a->mscale);
        }
        for (int h = 0; h < a->n_heads; h++) {
            float *v = a->x + r * a->ld + (int64_t)h * a->head_dim;
            if (a->rope->mode == FB_ROPE_NEOX) {
                for (int i = 0; i < half; i++) {
                    float p = v[i], q = v[i + half];
                    v[i] = p * cs[i] - q * sn[i];
                    v[i + half] = p * sn[i] + q * cs[i];
                }
            } else {
                for (int i = 0; i < half; i++) {
                    float p = v[2 * i], q = v[2 * i + 1];
                    v[2 * i] = p * cs[i] - q * sn[i];
                    v[2 * i + 1] = p * sn[i] + q * cs[i];
                }
            }
        }
    }
}

static int cpu_rope(fb_backend_t *be, float *x, int64_t n_rows, int64_t ld, int n_heads,
                    int head_dim, const int32_t *pos, const fb_rope_t *rope)
{
    fcpu_t *c = (fcpu_t *)be;
    if (fb_rope_check(rope, head_dim))
        return -EINVAL;
    for (int64_t r = 0; r < n_rows; r++)
        if (pos[r] < 0)
            return -EINVAL;
    if (c->ref || rope->n_rot > 1024) {
        fcpu_ref_rope(x, n_rows, ld, n_heads, head_dim, pos, rope);
        return 0;
    }
    const float *ff = rope->freq_factors ? rope->freq_factors->src : NULL;
    const size_t half = (size_t)rope->n_rot / 2;
    if (!c->rope_inv || c->rope_base != rope->freq_base || c->rope_n_rot != rope->n_rot ||
        !c->rope_ff != !ff || (ff && memcmp(c->rope_ff, ff, half * sizeof(float)))) {
        double *inv = realloc(c->rope_inv, half * sizeof(double));
        if (!inv)
            return -ENOMEM;
        c->rope_inv = inv;
        float *copy = NULL;
        if (ff && !(copy = malloc(half * sizeof(float)))) {
            c->rope_n_rot = 0;
            return -ENOMEM;
        }
        for (size_t i = 0; i < half; i++) /* as ref_ops.c computes theta */
            inv[i] = pow(rope->freq_base, -2.0 * (double)i / rope->n_rot) / (ff ? ff[i] : 1.0);
        if (ff)
            memcpy(copy, ff, half * sizeof(float));
        free(c->rope_ff);
        c->rope_ff = copy;
        c->rope_base = rope->freq_base;
        c->rope_n_rot = rope->n_rot;
    }
    float mix[512], dims[2];
    fb_rope_corr_dims(rope, dims);
    for (size_t i = 0; i < half; i++)
        mix[i] = fb_rope_yarn_mix(rope, dims, (int)i);
    rope_ctx_t a = {.x = x, .ld = ld, .n_heads = n_heads, .head_dim = head_dim, .pos = pos,
                    .rope = rope, .inv = c->rope_inv, .mix = rope->ext_factor != 0 ? mix : NULL,
                    .mscale = fb_rope_mscale(rope)};
    par_rows(c, n_rows, 3.0 * n_heads * head_dim + 20.0 * rope->n_rot, rope_rows, &a);
    return 0;
}

/* ---- attention ------------------------------------------------------------------------ */

/* One unit of work: one query row of one sequence against one KV head, for all the query
 * heads that share it (grouped-query attention): every K and V row is read once per unit. */
typedef struct attn_ctx {
    fcpu_t *c;
    const fb_attn_t *a;
    int n_seq;
    const int64_t *unit_start; /* n_seq + 1 prefix sums of units */
    int64_t n_units;
    _Atomic int64_t next;
    _Atomic int err;
} attn_ctx_t;

/* cap * tanh(y / cap) in float: the fast paths' soft-cap of attention scores and logits
 * (the reference ops keep their own, fcpu_ref_softcap). */
static void softcap_f(float *y, int64_t n, float cap)
{
    const float ic = 1.0f / cap;
    for (int64_t i = 0; i < n; i++)
        y[i] = cap * tanhf(y[i] * ic);
}

/* The rows attended of a ring cache (fb_attn_t.ring) lie in at most two runs: n1 rows from
 * the first's stored row, then the rest from the ring's row 0.  Each run is contiguous, so
 * the kernels stream it as they stream a whole cache. */
static int64_t ring_run(const fb_attn_t *a, int64_t t0, int64_t T, int64_t *p0)
{
    *p0 = fb_attn_row(a, t0);
    return a->ring > 0 ? FD_MIN(T, a->ring - *p0) : T;
}

/* s[t] = q . K row t for n F32 rows ld floats apart: four rows per kernel call. */
static void scores_f32(const fcpu_kern_t *k, const float *kg, int64_t ld, const float *q,
                       int hd, float *s, int64_t n)
{
    int64_t t = 0;
    if (k->dot4[GG_F32])
        for (; t + 4 <= n; t += 4)
            k->dot4[GG_F32](hd, kg + t * ld, (size_t)ld * sizeof(float), q, s + t);
    for (; t < n; t++)
        s[t] = k->vdot(q, kg + t * ld, hd);
}

/* sc holds pos[i] + 1 scores, then head_dim floats for a ring's second run of P.V. */
static void attn_unit(const fcpu_kern_t *k, const fb_attn_t *a, int i, int g, float *sc)
{
    const int hd = a->head_dim, grp = a->n_head / a->n_head_kv;
    /* the cache rows attended: all up to pos, or the window's last ones */
    const int64_t end = (int64_t)a->pos[i] + 1;
    const int64_t t0 = a->window > 0 ? FD_MAX((int64_t)0, end - a->window) : 0, T = end - t0;
    int64_t p0;
    const int64_t n1 = ring_run(a, t0, T, &p0);
    const float *kg = a->k + (p0 * a->ldkv + (int64_t)g * hd);
    const float *vg = a->v + (p0 * a->ldkv + (int64_t)g * hd);
    const float *kw = a->k + (int64_t)g * hd, *vw = a->v + (int64_t)g * hd;
    float *o2 = sc + end;
    for (int j = 0; j < grp; j++) {
        const int h = g * grp + j;
        const float *q = a->q + (int64_t)i * a->ldq + (int64_t)h * hd;
        float *o = a->out + (int64_t)i * a->ldo + (int64_t)h * hd, *s = sc;
        scores_f32(k, kg, a->ldkv, q, hd, s, n1);
        if (T > n1)
            scores_f32(k, kw, a->ldkv, q, hd, s + n1, T - n1);
        k->scale(s, a->scale, T);
        if (a->softcap > 0.0f)
            softcap_f(s, T, a->softcap);
        /* SUMONLY: the paper's form, M = 0, one reduction; otherwise the row max (a sink
         * counts in it and in the denominator) */
        float mx = a->mode == FB_SOFTMAX_SUMONLY ? 0.f : k->vmax(s, T);
        if (a->sinks && a->mode != FB_SOFTMAX_SUMONLY)
            mx = fmaxf(mx, a->sinks[h]);
        float l = k->exp_sum(s, mx, s, T);
        if (a->sinks)
            l += expf(a->sinks[h] - mx);
        if (a->mode == FB_SOFTMAX_REF) /* the unfused order: normalize p, then P.V */
            k->scale(s, 1.f / l, T);
        k->pv(s, vg, a->ldkv, n1, hd, o);
        if (T > n1) {
            k->pv(s + n1, vw, a->ldkv, T - n1, hd, o2);
            k->add(o, o2, hd);
        }
        if (a->mode != FB_SOFTMAX_REF) /* deferred: the denominator divides P.V's result */
            k->scale(o, 1.f / l, hd);
    }
}

/* A typed cache's K or V of kv head g: the first row and the bytes between rows. */
static const uint8_t *kv_base(int type, const void *data, const fb_attn_t *a, int g,
                              size_t *stride)
{
    if (type == GG_F32) {
        *stride = (size_t)a->ldkv * sizeof(float);
        return (const uint8_t *)((const float *)data + (int64_t)g * a->head_dim);
    }
    const size_t hb = fb_kv_head_bytes(type, a->head_dim);
    *stride = hb * (size_t)a->n_head_kv;
    return (const uint8_t *)data + (size_t)g * hb;
}

static int kv_pad(int type, int hd)
{
    const int be = gg_block_elems(type);
    return (hd + be - 1) / be * be;
}

/* attn_unit's scratch for caches that are not F32/F32: the scores, then (64-byte aligned)
 * the query padded to whole blocks, a dequantized row, the padded output, the query in the
 * K type's activation form. */
static size_t typed_scratch(const fcpu_kern_t *k, const fb_attn_t *a, int64_t T, size_t *off)
{
    const int hpk = kv_pad(a->type_k, a->head_dim), hpv = kv_pad(a->type_v, a->head_dim);
    const int xf = a->type_k == GG_F32 || a->type_k == GG_F16 || a->type_k == GG_BF16 ||
                           !k->dot[a->type_k] ? FCPU_XF32 : k->xform[a->type_k];
#define A64(n) (((n) + 63) & ~(size_t)63)
    off[0] = A64((size_t)T * sizeof(float));
    off[1] = off[0] + A64((size_t)hpk * sizeof(float));
    off[2] = off[1] + A64((size_t)FD_MAX(hpk, hpv) * sizeof(float));
    off[3] = off[2] + A64(2 * (size_t)hpv * sizeof(float)); /* output, a ring's second run */
    return off[3] + (xf == FCPU_XF32 ? 0 : fcpu_xrow_bytes(xf, hpk));
#undef A64
}

/* attn_unit over a cache of other types (backend.h's typed layout), with the reference's
 * roundings (fcpu_ref_attention: llama.cpp's).  K: F16 and BF16 rows against the query
 * rounded to their type, then widened exactly (dot4/dot on floats); Q8_0 and Q4_0 rows
 * against the query quantized to int8 blocks of 32 (XQ32/XQ32I), as llama.cpp quantizes the
 * activations of a Q8_0 / Q4_0 product, with the weights' product kernels: the integer dot
 * products read a quarter of the bytes the float form would; the other types (no kernel)
 * dequantize each row against the query rounded the same way in floats.  V: pvq[type], or
 * each row dequantized and added; an F16 / BF16 V gets p normalized and rounded to its
 * type. */
static void attn_unit_typed(const fcpu_kern_t *k, const fb_attn_t *a, int i, int g,
                            uint8_t *scr, const size_t *off)
{
    const int hd = a->head_dim, grp = a->n_head / a->n_head_kv;
    const int tk = a->type_k, tv = a->type_v;
    const int hpk = kv_pad(tk, hd), hpv = kv_pad(tv, hd);
    /* the cache rows attended: all up to pos, or the window's last ones (as attn_unit) */
    const int64_t end = (int64_t)a->pos[i] + 1;
    const int64_t t0 = a->window > 0 ? FD_MAX((int64_t)0, end - a->window) : 0, T = end - t0;
    size_t lk, lv;
    const uint8_t *kg = kv_base(tk, a->k_data, a, g, &lk), *vg = kv_base(tv, a->v_data, a, g, &lv);
    /* a ring's second run starts at its row 0 (ring_run) */
    const uint8_t *kw = kg, *vw = vg;
    int64_t p0;
    const int64_t n1 = ring_run(a, t0, T, &p0);
    kg += (size_t)p0 * lk;
    vg += (size_t)p0 * lv;
    float *s = (float *)scr, *qp = (float *)(scr + off[0]), *row = (float *)(scr + off[1]);
    float *ob = (float *)(scr + off[2]), *ob2 = ob + hpv;
    void *xq = scr + off[3];
    const bool fl = tk == GG_F32 || tk == GG_F16 || tk == GG_BF16;
    const int xf = fl || !k->dot[tk] ? FCPU_XF32 : k->xform[tk];
    for (int j = 0; j < grp; j++) {
        const int h = g * grp + j;
        const float *q = a->q + (int64_t)i * a->ldq + (int64_t)h * hd;
        float *o = a->out + (int64_t)i * a->ldo + (int64_t)h * hd;
        const void *x = q;
        if (xf != FCPU_XF32) {
            memcpy(qp, q, (size_t)hd * sizeof(float));
            memset(qp + hd, 0, (size_t)(hpk - hd) * sizeof(float));
            if (xf == FCPU_XQ32I)
                k->quant_q32i(qp, hpk, xq);
            else
                k->quant_q32(qp, hpk, xq);
            if (xq32_form(xf))
                xq32_scales_fp16(xq, hpk, 1.f);
            x = xq;
        } else if (tk != GG_F32) {
            fcpu_ref_kv_query(tk, q, hd, qp); /* hd floats a head: cheap next to T rows */
            x = qp;
        }
        for (int run = 0; run < 2; run++) {
            const uint8_t *kb = run ? kw : kg;
            const int64_t n = run ? T - n1 : n1;
            float *sr = run ? s + n1 : s;
            int64_t t = 0;
            if (!k->dot[tk]) {
                for (; t < n; t++) {
                    fq_dequantize_row(tk, kb + (size_t)t * lk, row, hpk);
                    sr[t] = k->vdot(qp, row, hpk);
                }
            } else {
                const int64_t nx = xf == FCPU_XF32 ? hd : hpk;
                if (k->dot4[tk])
                    for (; t + 4 <= n; t += 4)
                        k->dot4[tk](nx, kb + (size_t)t * lk, lk, x, sr + t);
                for (; t < n; t++)
                    k->dot[tk](nx, kb + (size_t)t * lk, x, 0, 1, sr + t);
            }
        }
        k->scale(s, a->scale, T);
        if (a->softcap > 0.0f)
            softcap_f(s, T, a->softcap);
        float mx = a->mode == FB_SOFTMAX_SUMONLY ? 0.f : k->vmax(s, T);
        if (a->sinks && a->mode != FB_SOFTMAX_SUMONLY)
            mx = fmaxf(mx, a->sinks[h]);
        float l = k->exp_sum(s, mx, s, T);
        if (a->sinks)
            l += expf(a->sinks[h] - mx);
        const bool p_round = tv == GG_F16 || tv == GG_BF16;
        if (a->mode == FB_SOFTMAX_REF || p_round)
            k->scale(s, 1.f / l, T);
        if (p_round)
            k->round_to[tv](s, T);
        for (int run = 0; run < 2; run++) {
            const uint8_t *vb = run ? vw : vg;
            const int64_t n = run ? T - n1 : n1;
            const float *sr = run ? s + n1 : s;
            float *od = run ? ob2 : ob;
            if (run && n == 0)
                break;
            if (tv == GG_F32) {
                k->pv(sr, (const float *)vb, a->ldkv, n, hd, od);
            } else if (k->pvq[tv]) {
                k->pvq[tv](sr, vb, lv, n, hpv, od);
            } else {
                memset(od, 0, (size_t)hpv * sizeof(float));
                for (int64_t t = 0; t < n; t++) {
                    fq_dequantize_row(tv, vb + (size_t)t * lv, row, hpv);
                    k->axpy(sr[t], row, od, hpv);
                }
            }
            if (run)
                k->add(ob, ob2, hd);
        }
        memcpy(o, ob, (size_t)hd * sizeof(float));
        if (a->mode != FB_SOFTMAX_REF && !p_round)
            k->scale(o, 1.f / l, hd);
    }
}

static void attn_task(void *arg, int ith, int nth)
{
    attn_ctx_t *x = arg;
    int s = 0;
    for (;;) {
        int64_t u = atomic_fetch_add(&x->next, 1);
        if (u >= x->n_units)
            return;
        while (u >= x->unit_start[s + 1])
            s++;
        const fb_attn_t *a = &x->a[s];
        int64_t lu = u - x->unit_start[s];
        int i = (int)(lu / a->n_head_kv), g = (int)(lu % a->n_head_kv);
        const bool typed = a->type_k != GG_F32 || a->type_v != GG_F32;
        size_t off[4], need = ((size_t)a->pos[i] + 1 + (size_t)a->head_dim) * sizeof(float);
        if (typed)
            need = typed_scratch(x->c->k, a, (int64_t)a->pos[i] + 1, off);
        float *sc = scratch_get(&x->c->attn_scr[ith], need);
        if (!sc) {
            atomic_store(&x->err, -ENOMEM);
            return;
        }
        if (typed)
            attn_unit_typed(x->c->k, a, i, g, (uint8_t *)sc, off);
        else
            attn_unit(x->c->k, a, i, g, sc);
    }
}

static int cpu_attention(fb_backend_t *be, const fb_attn_t *a, int n_seq)
{
    fcpu_t *c = (fcpu_t *)be;
    if (c->ref) {
        for (int s = 0; s < n_seq; s++) {
            int rc = fcpu_ref_attention(&a[s]);
            if (rc)
                return rc;
        }
        return 0;
    }
    int64_t stack_starts[65], *starts = n_seq < 65 ? stack_starts : malloc(sizeof(int64_t) * (size_t)(n_seq + 1));
    if (!starts)
        return -ENOMEM;
    starts[0] = 0;
    double work = 0;
    for (int s = 0; s < n_seq; s++) {
        if (a[s].n_head / a[s].n_head_kv > 64) { /* attn_unit's per-group arrays */
            for (int t = 0; t < n_seq; t++)
                if (fcpu_ref_attention(&a[t]))
                    break;
            if (starts != stack_starts)
                free(starts);
            return 0;
        }
        starts[s + 1] = starts[s] + (int64_t)a[s].n_q * a[s].n_head_kv;
        for (int i = 0; i < a[s].n_q; i++)
            work += 2.0 * (a[s].window > 0 ? FD_MIN(a[s].pos[i] + 1, a[s].window)
                                            : a[s].pos[i] + 1) *
                    a[s].n_head * a[s].head_dim;
    }
    attn_ctx_t x = {.c = c, .a = a, .n_seq = n_seq, .unit_start = starts, .n_units = starts[n_seq]};
    int nth = (int)FD_MIN((double)threads_for(c, work), (double)FD_MAX(x.n_units, 1));
    fcpu_pool_run(c->pool, nth, attn_task, &x);
    if (starts != stack_starts)
        free(starts);
    return atomic_load(&x.err);
}

/* ---- element-wise --------------------------------------------------------------------- */

typedef struct ew_ctx {
    const fcpu_kern_t *k;
    void (*glu)(const float *g, const float *u, float *out, int64_t n); /* gated rows */
    const float *a, *b;
    float *y;
    int64_t n, ld;
} ew_ctx_t;

static void glu_rows(void *arg, int64_t r0, int64_t r1, int ith)
{
    ew_ctx_t *e = arg;
    for (int64_t r = r0; r < r1; r++)
        e->glu(e->a + r * e->ld, e->b + r * e->ld, e->y + r * e->n, e->n);
}

/* SiLU's and GELU's gating differ only in the reference op, the row kernel and its work an
 * element (par_rows' estimate, which sizes the split). */
static int glu_mul(fb_backend_t *be, bool gelu, const float *gate, const float *up,
                   int64_t n_rows, int64_t n, int64_t ld_in, float *out)
{
    fcpu_t *c = (fcpu_t *)be;
    if (c->ref) {
        (gelu ? fcpu_ref_gelu_mul : fcpu_ref_silu_mul)(gate, up, n_rows, n, ld_in, out);
        return 0;
    }
    ew_ctx_t e = {.k = c->k, .glu = gelu ? c->k->gelu_mul : c->k->silu_mul, .a = gate,
                  .b = up, .y = out, .n = n, .ld = ld_in};
    par_rows(c, n_rows, (gelu ? 12.0 : 8.0) * (double)n, glu_rows, &e);
    return 0;
}

static int cpu_silu_mul(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                        int64_t n, int64_t ld_in, float *out)
{
    return glu_mul(be, false, gate, up, n_rows, n, ld_in, out);
}

static int cpu_gelu_mul(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                        int64_t n, int64_t ld_in, float *out)
{
    return glu_mul(be, true, gate, up, n_rows, n, ld_in, out);
}

/* gpt-oss's gating: the row loop in float with expf (the reference computes in double) */
typedef struct oai_ctx {
    const float *g, *u;
    float *y;
    int64_t n, ld;
    float alpha, limit;
} oai_ctx_t;

static void oai_rows(void *arg, int64_t r0, int64_t r1, int ith)
{
    const oai_ctx_t *e = arg;
    for (int64_t r = r0; r < r1; r++) {
        const float *g = e->g + r * e->ld, *u = e->u + r * e->ld;
        float *y = e->y + r * e->n;
        for (int64_t i = 0; i < e->n; i++) {
            const float x = fminf(g[i], e->limit);
            const float v = fmaxf(fminf(u[i], e->limit), -e->limit);
            y[i] = x / (1.0f + expf(-e->alpha * x)) * (v + 1.0f);
        }
    }
}

static int cpu_swiglu_oai(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                          int64_t n, int64_t ld_in, float alpha, float limit, float *out)
{
    fcpu_t *c = (fcpu_t *)be;
    if (c->ref) {
        fcpu_ref_swiglu_oai(gate, up, n_rows, n, ld_in, alpha, limit, out);
        return 0;
    }
    oai_ctx_t e = {.g = gate, .u = up, .y = out, .n = n, .ld = ld_in, .alpha = alpha,
                   .limit = limit};
    par_rows(c, n_rows, 12.0 * (double)n, oai_rows, &e);
    return 0;
}

/* scale and softcap run once a step on one row of n_embd or the logits: one thread */
static int cpu_scale(fb_backend_t *be, float *y, int64_t n, float s)
{
    fcpu_t *c = (fcpu_t *)be;
    if (c->ref)
        fcpu_ref_scale(y, n, s);
    else
        c->k->scale(y, s, n);
    return 0;
}

static int cpu_softcap(fb_backend_t *be, float *y, int64_t n, float cap)
{
    fcpu_t *c = (fcpu_t *)be;
    if (c->ref) {
        fcpu_ref_softcap(y, n, cap);
        return 0;
    }
    softcap_f(y, n, cap);
    return 0;
}

static void add_rows(void *arg, int64_t r0, int64_t r1, int ith)
{
    ew_ctx_t *e = arg;
    int64_t i0 = r0 * 4096, i1 = FD_MIN(r1 * 4096, e->n);
    e->k->add(e->y + i0, e->a + i0, i1 - i0);
}

static int cpu_add(fb_backend_t *be, float *y, const float *x, int64_t n)
{
    fcpu_t *c = (fcpu_t *)be;
    if (c->ref) {
        fcpu_ref_add(y, x, n);
        return 0;
    }
    ew_ctx_t e = {.k = c->k, .a = x, .y = y, .n = n};
    par_rows(c, (n + 4095) / 4096, 4096.0 / 4, add_rows, &e);
    return 0;
}

static int cpu_get_rows(fb_backend_t *be, const fb_weight_t *w, const int32_t *ids, int64_t n,
                        float *out)
{
    int rc = fb_weight_check(w);
    if (rc)
        return rc;
    for (int64_t r = 0; r < n; r++)
        if (ids[r] < 0 || ids[r] >= w->n_out)
            return -EINVAL;
    fcpu_ref_get_rows(w, ids, n, out);
    return 0;
}

static int cpu_copy2d(fb_backend_t *be, float *dst, int64_t ld_dst, const float *src,
                      int64_t ld_src, int64_t n_rows, int64_t n)
{
    fcpu_ref_copy2d(dst, ld_dst, src, ld_src, n_rows, n);
    return 0;
}

/* ---- mixture-of-experts row movement ---- */

typedef struct mv_ctx {
    const fcpu_kern_t *k;
    float *dst;
    const float *src;
    const int32_t *ids;
    const float *w;
    int64_t ld, n_rows, n;
} mv_ctx_t;

static void gather_task(void *arg, int64_t r0, int64_t r1, int ith)
{
    mv_ctx_t *m = arg;
    for (int64_t r = r0; r < r1; r++)
        memcpy(m->dst + r * m->n, m->src + (int64_t)m->ids[r] * m->ld,
               (size_t)m->n * sizeof(float));
}

static int cpu_gather_rows(fb_backend_t *be, float *dst, const float *src, int64_t ld_src,
                           const int32_t *ids, int64_t n_rows, int64_t n)
{
    fcpu_t *c = (fcpu_t *)be;
    if (c->ref) {
        fcpu_ref_gather_rows(dst, src, ld_src, ids, n_rows, n);
        return 0;
    }
    mv_ctx_t m = {.dst = dst, .src = src, .ids = ids, .ld = ld_src, .n = n};
    par_rows(c, n_rows, 2.0 * (double)n, gather_task, &m);
    return 0;
}

/* Split by columns, not rows: two rows of src may add into one row of dst, and every thread
 * then still adds them in row order (the result does not depend on the thread count). */
#define SCATTER_COLS 256

static void scatter_task(void *arg, int64_t c0, int64_t c1, int ith)
{
    mv_ctx_t *m = arg;
    int64_t i0 = c0 * SCATTER_COLS, i1 = FD_MIN(c1 * SCATTER_COLS, m->n);
    for (int64_t r = 0; r < m->n_rows; r++)
        m->k->axpy(m->w[r], m->src + r * m->n + i0, m->dst + (int64_t)m->ids[r] * m->ld + i0,
                   i1 - i0);
}

static int cpu_scatter_add_rows(fb_backend_t *be, float *dst, int64_t ld_dst, const float *src,
                                const int32_t *ids, const float *w, int64_t n_rows, int64_t n)
{
    fcpu_t *c = (fcpu_t *)be;
    if (c->ref) {
        fcpu_ref_scatter_add_rows(dst, ld_dst, src, ids, w, n_rows, n);
        return 0;
    }
    mv_ctx_t m = {.k = c->k, .dst = dst, .src = src, .ids = ids, .w = w, .ld = ld_dst,
                  .n_rows = n_rows, .n = n};
    par_rows(c, (n + SCATTER_COLS - 1) / SCATTER_COLS, 3.0 * SCATTER_COLS * (double)n_rows,
             scatter_task, &m);
    return 0;
}

static int cpu_kv_check(fb_backend_t *be, int type_k, int type_v, int head_dim)
{
    return fq_type_quantizable(type_k) && fq_type_quantizable(type_v) ? 0 : FD_EUNSUP;
}

typedef struct kvs_ctx {
    uint8_t *dst;
    int type;
    const float *src;
    int64_t ld;
    int n_head_kv, head_dim;
    size_t row_bytes;
    _Atomic int err;
} kvs_ctx_t;

static void kvs_rows(void *arg, int64_t r0, int64_t r1, int ith)
{
    kvs_ctx_t *x = arg;
    int rc = fcpu_ref_kv_store(x->dst + (size_t)r0 * x->row_bytes, x->type, x->src + r0 * x->ld,
                               x->ld, r1 - r0, x->n_head_kv, x->head_dim);
    if (rc)
        atomic_store(&x->err, rc);
}

/* The reference rounding (quants.c) on the pool: a step writes one row a sequence a layer,
 * a prefill chunk a few hundred, next to attention over all of them. */
static int cpu_kv_store(fb_backend_t *be, void *dst, int type, const float *src, int64_t ld_src,
                        int64_t n_rows, int n_head_kv, int head_dim)
{
    fcpu_t *c = (fcpu_t *)be;
    if (!fq_type_quantizable(type))
        return FD_EUNSUP;
    kvs_ctx_t x = {.dst = dst, .type = type, .src = src, .ld = ld_src, .n_head_kv = n_head_kv,
                   .head_dim = head_dim, .row_bytes = fb_kv_row_bytes(type, n_head_kv, head_dim)};
    if (n_rows > 0)
        par_rows(c, n_rows, 8.0 * n_head_kv * head_dim, kvs_rows, &x);
    return atomic_load(&x.err);
}

/* ---- roofs (benchmarks) --------------------------------------------------------------- */

/* The read loops a product's weight stream could at best match, on the pool's threads:
 * every thread one contiguous share (one stream, four interleaved streams, one stream with
 * software prefetch), or chunks taken from an atomic counter as the products take theirs.
 * Which one reads fastest depends on the CPU's prefetchers (BENCHMARKS.md), and a roof must
 * not underestimate, so the probe runs them all and keeps the best. */
#define ROOF_CHUNK ((size_t)1 << 16)

typedef struct roof_ctx {
    const fcpu_kern_t *k;
    const uint8_t *p;
    size_t n;
    int mode;
    bool chunked;
    _Atomic size_t next;
    _Atomic uint64_t sink;   /* every thread's sum: the loads cannot be dropped */
} roof_ctx_t;

static void roof_read_task(void *arg, int ith, int nth)
{
    roof_ctx_t *r = arg;
    uint64_t s = 0;
    if (r->chunked) {
        for (;;) {
            size_t o = atomic_fetch_add(&r->next, ROOF_CHUNK);
            if (o >= r->n)
                break;
            s += r->k->read_sum(r->p + o, FD_MIN(ROOF_CHUNK, r->n - o), r->mode);
        }
    } else {
        size_t lo = r->n / (size_t)nth * (size_t)ith & ~(size_t)255;
        size_t hi = ith == nth - 1 ? r->n : r->n / (size_t)nth * (size_t)(ith + 1) & ~(size_t)255;
        s = r->k->read_sum(r->p + lo, hi - lo, r->mode);
    }
    atomic_fetch_add(&r->sink, s);
}

typedef struct sgemm_ctx {
    const float *a, *b;
    float *c;
    int m, n, k;
} sgemm_ctx_t;

/* Each thread its share of the output columns with single-threaded OpenBLAS: how the
 * products of a prefill use it (MM_BLAS). */
static void roof_sgemm_task(void *arg, int ith, int nth)
{
    sgemm_ctx_t *g = arg;
    int c0 = g->n * ith / nth / 16 * 16, c1 = ith == nth - 1 ? g->n : g->n * (ith + 1) / nth / 16 * 16;
    if (c1 > c0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->m, c1 - c0, g->k, 1.f, g->a, g->k,
                    g->b + (size_t)c0 * g->k, g->k, 0.f, g->c + c0, g->n);
}

static double cpu_roof(fb_backend_t *be, int what, const void *buf, size_t bytes)
{
    fcpu_t *c = (fcpu_t *)be;
    if (what == FB_ROOF_READ) {
        if (!buf || bytes < 256 * (size_t)c->n_threads || ((uintptr_t)buf & 63))
            return -EINVAL;
        static const struct { int mode; bool chunked; } loops[] = {
            {0, false}, {1, false}, {2, false}, {0, true}};
        double best = 0;
        for (size_t i = 0; i < FD_ARRAY_LEN(loops); i++) {
            roof_ctx_t r = {.k = c->k, .p = buf, .n = bytes & ~(size_t)255,
                            .mode = loops[i].mode, .chunked = loops[i].chunked};
            double t0 = fd_now_s();
            fcpu_pool_run(c->pool, c->n_threads, roof_read_task, &r);
            double dt = fd_now_s() - t0;
            best = FD_MAX(best, (double)r.n / dt * 1e-9);
        }
        return best;
    }
    if (what != FB_ROOF_SGEMM)
        return -EINVAL;
    sgemm_ctx_t g = {.m = 512, .n = 2048, .k = 2048};
    float *a = malloc(sizeof(float) * (size_t)g.m * g.k), *b = malloc(sizeof(float) * (size_t)g.n * g.k);
    float *y = malloc(sizeof(float) * (size_t)g.m * g.n);
    double rate = -ENOMEM;
    if (a && b && y) {
        for (size_t i = 0; i < (size_t)g.m * g.k; i++)
            a[i] = (float)((i * 7919) % 1000) * 1e-3f;
        for (size_t i = 0; i < (size_t)g.n * g.k; i++)
            b[i] = (float)((i * 104729) % 1000) * 1e-3f;
        memset(y, 0, sizeof(float) * (size_t)g.m * g.n);
        g.a = a;
        g.b = b;
        g.c = y;
        double t0 = fd_now_s();
        fcpu_pool_run(c->pool, c->n_threads, roof_sgemm_task, &g);
        rate = 2.0 * g.m * g.n * g.k / (fd_now_s() - t0) * 1e-9;
    }
    free(a);
    free(b);
    free(y);
    return rate;
}

/* ---- object --------------------------------------------------------------------------- */

static void cpu_describe(fb_backend_t *be, char *buf, size_t len)
{
    const fcpu_t *c = (const fcpu_t *)be;
    snprintf(buf, len, "cpu: %d threads, %s kernels%s, deferred norm: %s, sgemm from %lld rows, "
             "decode streams %d",
             c->n_threads, c->ref ? "reference" : c->k->name,
             c->k->isa == FCPU_ISA_AVX512 ? " (VNNI)" : "",
             c->defer_mode == DEFER_ONE ? "one thread reduces" : "every thread reduces",
             (long long)c->blas_rows, c->streams);
}

static int parse_options(fcpu_t *c, const char *const *opt, char *err, size_t errlen);

/* Between ops on the driving thread, like every op: benchmarks compare variants on the same
 * prepared weights. */
static int cpu_set_option(fb_backend_t *be, const char *kv)
{
    const char *opts[2] = {kv, NULL};
    char err[1];
    return parse_options((fcpu_t *)be, opts, err, sizeof(err));
}

static void cpu_destroy(fb_backend_t *be)
{
    fcpu_t *c = (fcpu_t *)be;
    fcpu_pool_destroy(c->pool);
    for (int i = 0; i < MAX_THREADS; i++) {
        free(c->scr[i].p);
        free(c->attn_scr[i].p);
    }
    free(c->rope_inv);
    free(c->rope_ff);
    free(c);
}

static const fb_ops_t cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .sync = cpu_sync,
    .weight_prepare = cpu_weight_prepare,
    .weight_release = cpu_weight_release,
    .matmul = cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .layernorm = cpu_layernorm,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .silu_mul = cpu_silu_mul,
    .gelu_mul = cpu_gelu_mul,
    .scale = cpu_scale,
    .softcap = cpu_softcap,
    .attn_window = true,
    .attn_sinks = true,
    .swiglu_oai = cpu_swiglu_oai,
    .attn_ring = true,
    .add = cpu_add,
    .get_rows = cpu_get_rows,
    .copy2d = cpu_copy2d,
    .mark = NULL,
    .describe = cpu_describe,
    .set_option = cpu_set_option,
    .host_weights = true,
    .roof = cpu_roof,
    .gather_rows = cpu_gather_rows,
    .matmul_group = cpu_matmul_group,
    .scatter_add_rows = cpu_scatter_add_rows,
    .kv_check = cpu_kv_check,
    .kv_store = cpu_kv_store,
};

static int parse_options(fcpu_t *c, const char *const *opt, char *err, size_t errlen)
{
    for (; opt && *opt; opt++) {
        const char *o = *opt, *eq = strchr(o, '=');
        const char *v = eq ? eq + 1 : "";
        size_t kl = eq ? (size_t)(eq - o) : strlen(o);
        char *end = NULL;
        long long ks;
        if (kl == 3 && !strncmp(o, "isa", 3)) {
            int isa = -1;
            for (int i = 0; i < FCPU_ISA_COUNT; i++)
                if (!strcmp(v, fcpu_isa_name(i)))
                    isa = i;
            if (isa < 0 || !fcpu_kernels(isa)) {
                snprintf(err, errlen, "cpu backend: isa=%s is not available on this CPU", v);
                return FD_ECONFIG;
            }
            c->k = fcpu_kernels(isa);
        } else if (kl == 5 && !strncmp(o, "defer", 5) && (!strcmp(v, "each") || !strcmp(v, "one"))) {
            c->defer_mode = !strcmp(v, "one") ? DEFER_ONE : DEFER_EACH;
        } else if (kl == 9 && !strncmp(o, "blas_rows", 9) && *v && (c->blas_rows = strtoll(v, &end, 10)) >= 0 && !*end) {
            continue;
        } else if (kl == 10 && !strncmp(o, "qblas_rows", 10) && *v && (c->qblas_rows = strtoll(v, &end, 10)) >= 0 && !*end) {
            continue;
        } else if (kl == 8 && !strncmp(o, "dot4_max", 8) && *v && (c->dot4_max = strtoll(v, &end, 10)) >= 0 && !*end) {
            continue;
        } else if (kl == 7 && !strncmp(o, "streams", 7) && (!strcmp(v, "1") || !strcmp(v, "4") || !strcmp(v, "8"))) {
            c->streams = v[0] - '0';
        } else if (kl == 5 && !strncmp(o, "sched", 5) && (!strcmp(v, "even") || !strcmp(v, "guided") || !strcmp(v, "auto"))) {
            c->sched = !strcmp(v, "even") ? SCHED_EVEN : !strcmp(v, "guided") ? SCHED_GUIDED : SCHED_AUTO;
        } else if (kl == 4 && !strncmp(o, "dot8", 4) && (!strcmp(v, "0") || !strcmp(v, "1"))) {
            c->dot8 = v[0] == '1';
        } else if (kl == 5 && !strncmp(o, "fgemm", 5) && (!strcmp(v, "0") || !strcmp(v, "1"))) {
            c->fgemm = v[0] == '1';
        } else if (kl == 6 && !strncmp(o, "repack", 6) && v[0] >= '0' && v[0] <= '2' && !v[1]) {
            c->repack = v[0] - '0';
        } else if (kl == 5 && !strncmp(o, "farpf", 5) && *v && (ks = strtoll(v, &end, 10)) >= 0 &&
                   ks <= 64 && !*end) {
            c->farpf = (int)ks;
        } else if (kl == 6 && !strncmp(o, "kslice", 6) && *v && (ks = strtoll(v, &end, 10)) >= 0 &&
                   !*end && ks % 256 == 0) {
            c->kslice = ks;
        } else if (kl == 7 && !strncmp(o, "generic", 7) && (!strcmp(v, "0") || !strcmp(v, "1"))) {
            c->generic = v[0] == '1';
        } else if (kl == 3 && !strncmp(o, "ref", 3) && (!strcmp(v, "0") || !strcmp(v, "1"))) {
            c->ref = v[0] == '1';
        } else if (kl == 5 && !strncmp(o, "group", 5) && (!strcmp(v, "0") || !strcmp(v, "1"))) {
            c->group = v[0] == '1';
        } else {
            snprintf(err, errlen, "cpu backend: bad option \"%s\" (isa=scalar|avx2|avx512, "
                     "defer=each|one, blas_rows=N, qblas_rows=N, dot4_max=BYTES, streams=1|4|8, "
                     "sched=even|guided|auto, dot8=0|1, fgemm=0|1, repack=0|1|2, kslice=N (a multiple of 256), farpf=N, ref=0|1, group=0|1, "
                     "generic=0|1)", o);
            return FD_ECONFIG;
        }
    }
    return 0;
}

int fb_cpu_create(const fb_config_t *cfg, fb_backend_t **out, char *err, size_t errlen)
{
    char ebuf[1];
    if (!err || !errlen) {
        err = ebuf;
        errlen = sizeof(ebuf);
    }
    int threads = cfg ? cfg->threads : 0;
    if (threads < 0 || threads > MAX_THREADS) {
        snprintf(err, errlen, "cpu backend: bad thread count %d (1..%d, 0 = online cores)",
                 threads, MAX_THREADS);
        return FD_ECONFIG;
    }
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)FD_MIN(n, MAX_THREADS) : 1;
    }
    fcpu_t *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->base.ops = &cpu_ops;
    c->n_threads = threads;
    c->k = fcpu_kernels_best();
    c->defer_mode = DEFER_EACH;
    c->blas_rows = 48; /* crossover measured between 32 and 64 rows (BENCHMARKS.md) */
    c->qblas_rows = 0;
    c->dot4_max = DOT4_MAX;
    c->streams = 4;
    c->sched = SCHED_AUTO;
    c->dot8 = true;
    c->fgemm = true;
    c->kslice = KSLICE;
    c->farpf = DOT8_FAR;
    c->group = true;
    int rc = parse_options(c, cfg ? cfg->options : NULL, err, errlen);
    if (rc)
        goto fail_options;
    rc = fcpu_pool_create(&c->pool, threads);
    if (rc) {
        snprintf(err, errlen, "cpu backend: cannot start %d threads: %s", threads, fd_strerror(rc));
        goto fail_pool;
    }
    /* our workers split every product; OpenBLAS threads on top would fight them */
    openblas_set_num_threads(1);
    *out = &c->base;
    return 0;

fail_pool:
fail_options:
    free(c);
    return rc;
}
