/* test_cpu_backend.c: proves the backend registry and the CPU backend: every op through the
 * fb_* wrappers against values computed here from the op's definition (known cases and
 * naive loops on random inputs of awkward sizes, every weight type, deferred RMS/LayerNorm
 * scaling, in_scale and bias); the fast kernels against the scalar reference (ref_ops.c);
 * the batch kernels (dot8, dot2x8, gemm16; every row count 1..9) against the scalar table's
 * per-row kernels;
 * the mixture-of-experts gather and weighted scatter-add, and grouped products
 * (fb_matmul_group) bit-identical to one fb_matmul per part;
 * per-class timing; and clear errors for bad input and unknown backends. */
#include <math.h>

#include "backends/backend.h"
#include "backends/cpu/kernels.h"
#include "backends/cpu/pool.h"
#include "backends/cpu/ref_ops.h"
#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"
#include "tests/testutil.h"

/* Check's ck_assert reports every PASSING check to the runner (a write per call): inside
 * loops over thousands of elements these report failures only. */
#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond))                                                                           \
            ck_abort_msg("check failed: %s", #cond);                                           \
    } while (0)
#define CHECKM(cond, fmt, ...)                                                                 \
    do {                                                                                       \
        if (!(cond))                                                                           \
            ck_abort_msg(fmt, ##__VA_ARGS__);                                                  \
    } while (0)

/* Backend configurations every op test runs on: the plain reference, then each kernel
 * table this CPU has, with 1 and 3 threads (3 > cores here: chunks then interleave). */
typedef struct cfg {
    const char *opt[4];
    int threads;
} cfg_t;
static const cfg_t cfgs[] = {
    {{"ref=1"}, 1},
    {{"isa=scalar"}, 1},  {{"isa=scalar"}, 3},
    {{"isa=avx2"}, 1},    {{"isa=avx2"}, 3},
    {{"isa=avx512"}, 1},  {{"isa=avx512"}, 3},
    {{"isa=avx512", "defer=one"}, 3},
    {{"blas_rows=2", "qblas_rows=3"}, 2},
    /* decode of every matrix as four streams (quarters of each chunk) */
    {{"dot4_max=0", "streams=4"}, 1},
    {{"isa=avx2", "dot4_max=0", "streams=4"}, 2},
    /* float batches on AVX2 through dot2 (2 x 4 tiles) rather than gemmf */
    {{"isa=avx2", "fgemm=0"}, 2},
    /* batches on weights repacked at prepare (FCPU_REPACK8) */
    {{"isa=avx512", "repack=1"}, 3},
    /* batches on Q8_0 and Q4_0 weights interleaved 16 rows a group (FCPU_REPACK16, gemm16) */
    {{"isa=avx512", "repack=2"}, 3},
    /* int8 batches split along n_in into slices of 256 (mm_rows_sliced) */
    {{"isa=avx512", "kslice=256"}, 3},
    /* shrinking chunks for batches too (and 16-row groups), and even chunks for decode */
    {{"isa=avx512", "sched=guided", "repack=2"}, 3},
    {{"sched=even"}, 3},
    /* a group's parts each below dot4_max, their sum above: the group streams them */
    {{"dot4_max=20000"}, 2},
    /* the quantized types' kernels off: every product on the dequantizing path */
    {{"generic=1"}, 2},
};
#define N_CFG ((int)FD_ARRAY_LEN(cfgs))

/* The backend of configuration i, or NULL when this CPU lacks its instruction set. */
static fb_backend_t *mk_cfg(int i)
{
    fb_config_t cfg = {.threads = cfgs[i].threads, .options = cfgs[i].opt};
    fb_backend_t *be = NULL;
    char err[160];
    int rc = fb_create("cpu", &cfg, &be, err, sizeof(err));
    if (rc == FD_ECONFIG && strstr(err, "not available"))
        return NULL;
    CHECKM(rc == 0, "%s", err);
    ck_assert_str_eq(fb_name(be), "cpu");
    return be;
}

static fb_backend_t *mk_ref(void)
{
    return mk_cfg(0);
}

static float *rnd(uint64_t *s, int64_t n, float scale)
{
    float *p = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        p[i] = tu_randf(s) * scale;
    return p;
}

/* A rope's frequency factors: n in [1, 8), prepared as the F32 weight *ff (its values
 * returned, for the caller to free after releasing it). */
static float *rope_freqs(fb_backend_t *be, uint64_t *s, int n, fb_weight_t *ff)
{
    float *v = rnd(s, n, 1);
    for (int i = 0; i < n; i++)
        v[i] = 4.5f + 3.5f * v[i];
    *ff = (fb_weight_t){.type = GG_F32, .n_in = n, .n_out = 1, .src = v, .name = "rope_freqs"};
    ck_assert_int_eq(fb_weight_prepare(be, ff), 0);
    return v;
}

/* max |a - b| */
static double max_abs_diff(const float *a, const float *b, int64_t n)
{
    double d = 0;
    for (int64_t i = 0; i < n; i++)
        d = fmax(d, fabsf(a[i] - b[i]));
    return d;
}

/* A random weight of type: quantized from random floats where the type has a quantizer,
 * else random block bytes with sane fp16 scales. */
static void *mk_weight(uint64_t *s, int type, int64_t n_in, int64_t n_out)
{
    uint64_t rb = gg_row_bytes(type, (uint64_t)n_in);
    uint8_t *w = malloc(rb * (uint64_t)n_out);
    float *f = rnd(s, n_in * n_out, 1.0f);
    if (fq_type_quantizable(type)) {
        for (int64_t o = 0; o < n_out; o++)
            ck_assert_int_eq(fq_quantize_row(type, f + o * n_in, w + o * rb, n_in), 0);
    } else {
        for (uint64_t i = 0; i < rb * (uint64_t)n_out; i++)
            w[i] = (uint8_t)tu_rand64(s);
        /* fp16 scale fields: overwrite with 2^-8 .. 2^-5 so nothing is inf/NaN */
        int bb = gg_block_bytes(type);
        int offs[2] = {-1, -1};
        switch (type) {
        case GG_Q2_K: offs[0] = 80; offs[1] = 82; break;
        case GG_Q3_K: offs[0] = 108; break;
        case GG_Q5_K: offs[0] = 0; offs[1] = 2; break;
        case GG_Q4_1: case GG_Q5_1: offs[0] = 0; offs[1] = 2; break;
        case GG_Q5_0: case GG_Q8_1: offs[0] = 0; break;
        default: break;
        }
        for (uint64_t b = 0; b < rb * (uint64_t)n_out / (uint64_t)bb; b++)
            for (int k = 0; k < 2; k++)
                if (offs[k] >= 0) {
                    uint16_t h = (uint16_t)(((10 + tu_rand64(s) % 4) << 10) | (tu_rand64(s) & 1023));
                    memcpy(w + b * (uint64_t)bb + (uint64_t)offs[k], &h, 2);
                }
        if (type == GG_Q8_K)
            for (uint64_t b = 0; b < rb * (uint64_t)n_out / (uint64_t)bb; b++) {
                float d = 0.01f;
                memcpy(w + b * (uint64_t)bb, &d, 4);
            }
    }
    free(f);
    return w;
}

/* y = x W^T computed here: dequantize (fq_dequantize_row, proven by test_quants) and a
 * naive fp64 dot, with the deferred scale and bias applied per definition. */
static void naive_matmul(const fb_weight_t *w, const float *x, int64_t n_rows, double *y,
                         double *mag, int kind, float eps)
{
    float *wr = malloc((size_t)w->n_in * sizeof(float));
    for (int64_t o = 0; o < w->n_out; o++) {
        uint64_t rb = gg_row_bytes(w->type, (uint64_t)w->n_in);
        ck_assert_int_eq(fq_dequantize_row(w->type, (const uint8_t *)w->src + (uint64_t)o * rb, wr,
                                           w->n_in), 0);
        for (int64_t r = 0; r < n_rows; r++) {
            const float *xr = x + r * w->n_in;
            double acc = 0, m = 0, ss = 0, sum = 0;
            for (int64_t i = 0; i < w->n_in; i++) {
                double xi = (double)xr[i] * (w->in_scale ? w->in_scale[i] : 1.0);
                acc += wr[i] * xi;
                m += fabs(wr[i] * xi);
                ss += (double)xr[i] * xr[i];
                sum += xr[i];
            }
            double sc = 1;
            if (kind == FB_NORM_RMS)
                sc = 1 / sqrt(ss / (double)w->n_in + eps);
            if (kind == FB_NORM_LAYER) {
                double mean = sum / (double)w->n_in, v = 0;
                for (int64_t i = 0; i < w->n_in; i++)
                    v += (xr[i] - mean) * (xr[i] - mean);
                sc = 1 / sqrt(v / (double)w->n_in + eps);
            }
            y[r * w->n_out + o] = acc * sc + (w->bias ? w->bias[o] : 0);
            mag[r * w->n_out + o] = m * sc + (w->bias ? fabs(w->bias[o]) : 0);
        }
    }
    free(wr);
}

static const int all_types[] = {GG_F32, GG_F16, GG_BF16, GG_Q8_0, GG_Q4_0, GG_Q4_1, GG_Q5_0,
                                GG_Q5_1, GG_Q8_1, GG_Q2_K, GG_Q3_K, GG_Q4_K, GG_Q5_K, GG_Q6_K,
                                GG_Q8_K,
                                GG_IQ4_NL, GG_IQ4_XS, GG_MXFP4};

/* The reference backend against the definition: every weight type, plain / RMS / LAYER,
 * with and without bias and in_scale, odd shapes.  (The fast kernels are held to the
 * reference by test_fast_matmul.) */
START_TEST(test_matmul_types)
{
    int type = all_types[_i];
    fb_backend_t *be = mk_ref();
    uint64_t s = 100 + (uint64_t)type;
    int be_el = gg_block_elems(type);
    int64_t n_in = be_el == 1 ? 77 : 2 * be_el, n_out = 13, n_rows = 5;
    for (int variant = 0; variant < 6; variant++) {
        int kind = variant % 3;
        fb_weight_t w = {.type = type, .n_in = n_in, .n_out = n_out,
                         .src = mk_weight(&s, type, n_in, n_out)};
        float *bias = variant >= 3 ? rnd(&s, n_out, 2) : NULL;
        float *isc = variant >= 3 ? rnd(&s, n_in, 1.5f) : NULL;
        w.bias = bias;
        w.in_scale = isc;
        ck_assert_int_eq(fb_weight_prepare(be, &w), 0);
        float *x = fb_alloc(be, (size_t)(n_rows * n_in) * sizeof(float));
        float *y = fb_alloc(be, (size_t)(n_rows * n_out) * sizeof(float));
        float *sc = fb_alloc(be, (size_t)n_rows * sizeof(float));
        for (int64_t i = 0; i < n_rows * n_in; i++)
            x[i] = tu_randf(&s) * (i < n_in ? 300.f : 1.f); /* a large-magnitude row */
        for (int64_t i = 0; i < n_in; i++)
            x[n_in + i] += 5; /* a row with a large mean (LayerNorm's cancellation case) */
        fb_defer_t d = {.kind = kind, .eps = 1e-5f, .scale_out = sc};
        ck_assert_int_eq(fb_matmul(be, &w, x, n_rows, y, &d), 0);
        double *want = malloc((size_t)(n_rows * n_out) * sizeof(double));
        double *mag = malloc((size_t)(n_rows * n_out) * sizeof(double));
        naive_matmul(&w, x, n_rows, want, mag, kind, 1e-5f);
        for (int64_t i = 0; i < n_rows * n_out; i++)
            /* fp32 products summed: error well under 1e-5 of the sum of |terms| */
            CHECKM(fabs(y[i] - want[i]) <= 1e-5 * mag[i] + 1e-30,
                          "%s v%d i=%lld got %.9g want %.9g", gg_type_name(type), variant,
                          (long long)i, (double)y[i], want[i]);
        if (kind != FB_NORM_NONE)
            for (int64_t r = 0; r < n_rows; r++) {
                double want_s = fcpu_ref_norm_scale(kind, x + r * n_in, n_in, 1e-5f);
                CHECK(fabs(sc[r] - want_s) <= 1e-5 * want_s);
            }
        fb_weight_release(be, &w);
        ck_assert_ptr_null(w.impl);
        fb_free(be, x);
        fb_free(be, y);
        fb_free(be, sc);
        free(want);
        free(mag);
        free(bias);
        free(isc);
        free((void *)w.src);
    }
    fb_destroy(be);
}
END_TEST

/* A deferred product equals the unfused product of the normalized row (gamma = 1). */
START_TEST(test_defer_equals_norm_then_gemm)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    uint64_t s = 7;
    const int64_t n = 96, m = 33, rows = 3;
    float *wf = rnd(&s, n * m, 1), *x = rnd(&s, n * rows, 40), *xn = malloc(sizeof(float) * n * rows);
    float *y1 = malloc(sizeof(float) * m * rows), *y2 = malloc(sizeof(float) * m * rows);
    float *one = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++)
        one[i] = 1;
    fb_weight_t w = {.type = GG_F32, .n_in = n, .n_out = m, .src = wf};
    fb_weight_t g = {.type = GG_F32, .n_in = n, .n_out = 1, .src = one};
    ck_assert_int_eq(fb_weight_prepare(be, &w), 0);
    ck_assert_int_eq(fb_weight_prepare(be, &g), 0);
    ck_assert_int_eq(fb_rmsnorm(be, x, rows, n, &g, 1e-6f, xn), 0);
    ck_assert_int_eq(fb_matmul(be, &w, xn, rows, y1, NULL), 0);
    fb_defer_t d = {.kind = FB_NORM_RMS, .eps = 1e-6f};
    ck_assert_int_eq(fb_matmul(be, &w, x, rows, y2, &d), 0);
    for (int64_t i = 0; i < m * rows; i++)
        CHECK(fabsf(y1[i] - y2[i]) <= 1e-5f * (1 + fabsf(y1[i])));
    ck_assert_int_eq(fb_layernorm(be, x, rows, n, &g, NULL, 1e-6f, xn), 0);
    ck_assert_int_eq(fb_matmul(be, &w, xn, rows, y1, NULL), 0);
    /* LAYER expects mean-centering folded into W: W' = W - column means over inputs */
    float *wc = malloc(sizeof(float) * n * m);
    for (int64_t o = 0; o < m; o++) {
        double mu = 0;
        for (int64_t i = 0; i < n; i++)
            mu += wf[o * n + i];
        mu /= n;
        for (int64_t i = 0; i < n; i++)
            wc[o * n + i] = (float)(wf[o * n + i] - mu);
    }
    fb_weight_t w2 = {.type = GG_F32, .n_in = n, .n_out = m, .src = wc};
    ck_assert_int_eq(fb_weight_prepare(be, &w2), 0);
    d.kind = FB_NORM_LAYER;
    ck_assert_int_eq(fb_matmul(be, &w2, x, rows, y2, &d), 0);
    for (int64_t i = 0; i < m * rows; i++)
        CHECKM(fabsf(y1[i] - y2[i]) <= 1e-4f * (1 + fabsf(y1[i])), "%g %g", (double)y1[i], (double)y2[i]);
    fb_weight_release(be, &w);
    fb_weight_release(be, &w2);
    fb_weight_release(be, &g);
    free(wf); free(wc); free(x); free(xn); free(y1); free(y2); free(one);
    fb_destroy(be);
}
END_TEST

START_TEST(test_norms)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    float x[8] = {1, 2, 3, 4, -1, -1, -1, -1}, y[8];
    float gam[4] = {1, 2, 0.5f, -1}, bet[4] = {0.5f, 0, 0, 1};
    uint16_t gh[4];
    fb_weight_t g = {.type = GG_F32, .n_in = 4, .n_out = 1, .src = gam};
    fb_weight_t b = {.type = GG_F32, .n_in = 4, .n_out = 1, .src = bet};
    ck_assert_int_eq(fb_rmsnorm(be, x, 2, 4, &g, 0, y), 0);
    double r = sqrt(30.0 / 4); /* mean square of 1,2,3,4 is 7.5 */
    CHECK(fabs(y[0] - 1 / r) < 1e-6 && fabs(y[1] - 4 / r) < 1e-6);
    CHECK(fabs(y[2] - 1.5 / r) < 1e-6 && fabs(y[3] + 4 / r) < 1e-6);
    CHECK(fabs(y[4] + 1) < 1e-6 && fabs(y[5] + 2) < 1e-6);
    /* an F16 gamma (unprepared and prepared) gives the same */
    ck_assert_int_eq(fq_quantize_row(GG_F16, gam, gh, 4), 0);
    fb_weight_t g16 = {.type = GG_F16, .n_in = 4, .n_out = 1, .src = gh};
    float y2[8];
    ck_assert_int_eq(fb_rmsnorm(be, x, 2, 4, &g16, 0, y2), 0);
    ck_assert_int_eq(memcmp(y, y2, sizeof(y)), 0);
    ck_assert_int_eq(fb_weight_prepare(be, &g16), 0);
    ck_assert_int_eq(fb_rmsnorm(be, x, 2, 4, &g16, 0, y2), 0);
    ck_assert_int_eq(memcmp(y, y2, sizeof(y)), 0);
    fb_weight_release(be, &g16);
    /* in place */
    memcpy(y2, x, sizeof(x));
    ck_assert_int_eq(fb_rmsnorm(be, y2, 2, 4, &g, 0, y2), 0);
    ck_assert_int_eq(memcmp(y, y2, sizeof(y)), 0);
    /* layernorm: mean 2.5, var 1.25 */
    ck_assert_int_eq(fb_layernorm(be, x, 1, 4, &g, &b, 0, y), 0);
    double sd = sqrt(1.25);
    CHECK(fabs(y[0] - (-1.5 / sd * 1 + 0.5)) < 1e-6);
    CHECK(fabs(y[1] - (-0.5 / sd * 2)) < 1e-6);
    CHECK(fabs(y[3] - (1.5 / sd * -1 + 1)) < 1e-6);
    /* a constant row: var 0, eps keeps it finite; output = beta */
    ck_assert_int_eq(fb_layernorm(be, x + 4, 1, 4, &g, &b, 1e-5f, y), 0);
    for (int i = 0; i < 4; i++)
        CHECK(fabsf(y[i] - bet[i]) < 1e-6f);
    /* bad: gamma of the wrong length, negative eps */
    ck_assert_int_eq(fb_rmsnorm(be, x, 1, 5, &g, 0, y), -EINVAL);
    ck_assert_int_eq(fb_rmsnorm(be, x, 1, 4, &g, -1, y), -EINVAL);
    ck_assert_int_eq(fb_layernorm(be, x, 1, 4, &g, &g16, 0, y), 0);
    g16.n_in = 3;
    ck_assert_int_eq(fb_layernorm(be, x, 1, 4, &g, &g16, 0, y), -EINVAL);
    fb_destroy(be);
}
END_TEST

START_TEST(test_rope)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    /* two heads of 4, row stride 10 (padding must stay untouched) */
    float x[20], x0[20];
    for (int i = 0; i < 20; i++)
        x0[i] = x[i] = (float)(i + 1);
    int32_t pos[2] = {0, 1};
    fb_rope_t rp = {.mode = FB_ROPE_ADJACENT, .n_rot = 4, .freq_base = 10000, .freq_scale = 1};
    ck_assert_int_eq(fb_rope(be, x, 2, 10, 2, 4, pos, &rp), 0);
    for (int i = 0; i < 10; i++)
        CHECK(x[i] == x0[i]); /* position 0: identity */
    /* position 1: pair 0 rotates by 1 rad, pair 1 by 10000^(-2/4) = 0.01 rad */
    double c0 = cos(1), s0 = sin(1), c1 = cos(0.01), s1 = sin(0.01);
    const float *v = x + 10, *u = x0 + 10;
    CHECK(fabs(v[0] - (u[0] * c0 - u[1] * s0)) < 1e-5);
    CHECK(fabs(v[1] - (u[0] * s0 + u[1] * c0)) < 1e-5);
    CHECK(fabs(v[2] - (u[2] * c1 - u[3] * s1)) < 1e-5);
    CHECK(fabs(v[3] - (u[2] * s1 + u[3] * c1)) < 1e-5);
    CHECK(fabs(v[4] - (u[4] * c0 - u[5] * s0)) < 1e-5); /* second head, same angles */
    CHECK(x[18] == x0[18] && x[19] == x0[19]);
    /* NEOX pairs (i, i + 2) */
    memcpy(x, x0, sizeof(x));
    rp.mode = FB_ROPE_NEOX;
    ck_assert_int_eq(fb_rope(be, x, 2, 10, 2, 4, pos, &rp), 0);
    CHECK(fabs(v[0] - (u[0] * c0 - u[2] * s0)) < 1e-5);
    CHECK(fabs(v[2] - (u[0] * s0 + u[2] * c0)) < 1e-5);
    CHECK(fabs(v[1] - (u[1] * c1 - u[3] * s1)) < 1e-5);
    CHECK(fabs(v[3] - (u[1] * s1 + u[3] * c1)) < 1e-5);
    /* linear scaling: freq_scale 0.5 at position 2 is position 1 unscaled */
    float xa[20], xb[20];
    memcpy(xa, x0, sizeof(x0));
    memcpy(xb, x0, sizeof(x0));
    int32_t p1[2] = {1, 1}, p2[2] = {2, 2};
    rp.mode = FB_ROPE_ADJACENT;
    ck_assert_int_eq(fb_rope(be, xa, 2, 10, 2, 4, p1, &rp), 0);
    rp.freq_scale = 0.5f;
    ck_assert_int_eq(fb_rope(be, xb, 2, 10, 2, 4, p2, &rp), 0);
    for (int i = 0; i < 20; i++)
        CHECK(fabsf(xa[i] - xb[i]) < 1e-5f);
    /* partial rotation: n_rot 2 leaves dims 2,3 alone */
    memcpy(x, x0, sizeof(x));
    rp.freq_scale = 1;
    rp.n_rot = 2;
    ck_assert_int_eq(fb_rope(be, x, 2, 10, 2, 4, pos, &rp), 0);
    CHECK(x[12] == x0[12] && x[13] == x0[13] && x[10] != x0[10]);
    /* bad */
    rp.n_rot = 3;
    ck_assert_int_eq(fb_rope(be, x, 2, 10, 2, 4, pos, &rp), -EINVAL);
    rp.n_rot = 4;
    rp.freq_scale = 0;
    ck_assert_int_eq(fb_rope(be, x, 2, 10, 2, 4, pos, &rp), -EINVAL);
    rp.freq_scale = 1;
    ck_assert_int_eq(fb_rope(be, x, 2, 7, 2, 4, pos, &rp), -EINVAL);
    int32_t bad[2] = {0, -1};
    ck_assert_int_eq(fb_rope(be, x, 2, 10, 2, 4, bad, &rp), -EINVAL);
    fb_destroy(be);
}
END_TEST

/* Attention computed here: fp64 scores (soft-capped when asked), a mask (the causal one,
 * and the sliding window's: masked when pos - t >= window), softmax, P.V. */
static void naive_attn(const fb_attn_t *a, double *out)
{
    int hd = a->head_dim, grp = a->n_head / a->n_head_kv;
    for (int i = 0; i < a->n_q; i++)
        for (int h = 0; h < a->n_head; h++) {
            int T = a->pos[i] + 1, g = h / grp;
            double *sc = malloc(sizeof(double) * (size_t)T), mx = -1e300, l = 0;
            for (int t = 0; t < T; t++) {
                double d = 0;
                for (int j = 0; j < hd; j++)
                    d += (double)a->q[i * a->ldq + h * hd + j] * a->k[t * a->ldkv + g * hd + j];
                sc[t] = d * a->scale;
                if (a->softcap > 0)
                    sc[t] = a->softcap * tanh(sc[t] / a->softcap);
                if (a->window > 0 && a->pos[i] - t >= a->window)
                    sc[t] = -INFINITY;
                mx = fmax(mx, sc[t]);
            }
            for (int t = 0; t < T; t++)
                l += (sc[t] = exp(sc[t] - mx));
            for (int j = 0; j < hd; j++) {
                double o = 0;
                for (int t = 0; t < T; t++)
                    o += sc[t] / l * a->v[t * a->ldkv + g * hd + j];
                out[((size_t)i * a->n_head + h) * hd + j] = o;
            }
            free(sc);
        }
}

START_TEST(test_attention)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    uint64_t s = 21;
    const int n_head = 6, n_kv = 2, hd = 20, T = 37, nq = 5;
    const int64_t ldkv = n_kv * hd + 3, ldq = n_head * hd + 1, ldo = n_head * hd + 2;
    float *k = rnd(&s, T * ldkv, 1), *v = rnd(&s, T * ldkv, 1), *q = rnd(&s, nq * ldq, 2);
    float *out = malloc(sizeof(float) * nq * ldo);
    int32_t pos[5] = {0, 1, 17, 35, 36};
    double *want = malloc(sizeof(double) * nq * n_head * hd);
    /* window and soft-cap variants, then (last) the plain one the checks below rely on:
     * windows of 1 (the row itself), 5, and 40 (past every position: no effect) */
    static const struct { int window; float softcap; } var[] = {
        {5, 0}, {1, 0}, {0, 0.7f}, {5, 1.5f}, {40, 0}, {0, 0},
    };
    for (size_t vi = 0; vi < FD_ARRAY_LEN(var); vi++)
        for (int mode = 0; mode < 3; mode++) {
            fb_attn_t a = {.q = q, .ldq = ldq, .k = k, .v = v, .ldkv = ldkv, .out = out,
                           .ldo = ldo, .n_q = nq, .pos = pos, .n_head = n_head,
                           .n_head_kv = n_kv, .head_dim = hd, .scale = 1 / sqrtf(hd),
                           .mode = mode, .window = var[vi].window, .softcap = var[vi].softcap};
            ck_assert_int_eq(fb_attention(be, &a, 1), 0);
            naive_attn(&a, want);
            for (int i = 0; i < nq; i++)
                for (int j = 0; j < n_head * hd; j++)
                    CHECKM(fabs(out[i * ldo + j] - want[i * n_head * hd + j]) < 1e-5,
                           "window %d softcap %g mode %d q %d j %d: %g vs %g", var[vi].window,
                           (double)var[vi].softcap, mode, i, j, (double)out[i * ldo + j],
                           want[i * n_head * hd + j]);
            if (var[vi].window == 1) /* each row sees itself only: out = v[pos] */
                for (int i = 0; i < nq; i++)
                    for (int j = 0; j < n_head * hd; j++)
                        CHECK(fabsf(out[i * ldo + j] -
                                    v[pos[i] * ldkv + (j / hd / 3) * hd + j % hd]) < 1e-6f);
        }
    /* position 0 attends to key 0 only: out = v[0] of its group */
    for (int h = 0; h < n_head; h++)
        for (int j = 0; j < hd; j++)
            CHECK(fabsf(out[h * hd + j] - v[(h / 3) * hd + j]) < 1e-6f);
    /* causality: changing keys/values after a row's position does not change it */
    float o2 = out[2 * ldo + 5];
    for (int t = 18; t < T; t++)
        for (int j = 0; j < n_kv * hd; j++)
            v[t * ldkv + j] = 99;
    fb_attn_t a = {.q = q, .ldq = ldq, .k = k, .v = v, .ldkv = ldkv, .out = out, .ldo = ldo,
                   .n_q = nq, .pos = pos, .n_head = n_head, .n_head_kv = n_kv, .head_dim = hd,
                   .scale = 1 / sqrtf(hd), .mode = FB_SOFTMAX_SUMONLY};
    ck_assert_int_eq(fb_attention(be, &a, 1), 0);
    CHECK(out[2 * ldo + 5] == o2);
    /* two sequences in one call */
    fb_attn_t two[2] = {a, a};
    two[1].n_q = 1;
    ck_assert_int_eq(fb_attention(be, two, 2), 0);
    /* bad */
    a.n_head_kv = 4;
    ck_assert_int_eq(fb_attention(be, &a, 1), -EINVAL);
    a.n_head_kv = n_kv;
    a.mode = 7;
    ck_assert_int_eq(fb_attention(be, &a, 1), -EINVAL);
    a.mode = 0;
    a.ldkv = 5;
    ck_assert_int_eq(fb_attention(be, &a, 1), -EINVAL);
    a.ldkv = ldkv;
    a.window = -1;
    ck_assert_int_eq(fb_attention(be, &a, 1), -EINVAL);
    a.window = 0;
    a.softcap = -1;
    ck_assert_int_eq(fb_attention(be, &a, 1), -EINVAL);
    a.softcap = NAN;
    ck_assert_int_eq(fb_attention(be, &a, 1), -EINVAL);
    a.softcap = 0;
    int32_t p1 = pos[1];
    pos[1] = -1; /* a negative position, in the second sequence of a call */
    two[0].pos = two[1].pos = NULL;
    two[0].n_q = 0;
    two[1] = a;
    ck_assert_int_eq(fb_attention(be, two, 2), -EINVAL);
    pos[1] = p1;
    ck_assert_int_eq(fb_attention(be, two, 2), 0);
    free(k); free(v); free(q); free(out); free(want);
    fb_destroy(be);
}
END_TEST

START_TEST(test_elementwise)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    float g[6] = {0, 1, -2, 3, 50, -50}, u[6] = {1, 2, 3, 4, 5, 6}, o[3 * 2];
    /* rows of 2 from rows of stride 3: gate (0,1), (3,50) */
    ck_assert_int_eq(fb_silu_mul(be, g, u, 2, 2, 3, o), 0);
    CHECK(o[0] == 0);
    CHECK(fabsf(o[1] - 0.7310585786f * 2) < 1e-6f);
    CHECK(fabsf(o[2] - 3 / (1 + expf(-3)) * 4) < 1e-5f);
    CHECK(fabsf(o[3] - 50 * 5) < 1e-4f);
    float y[5] = {1, 2, 3, 4, 5}, x[6] = {10, 20, 30, 40, 50, 60};
    ck_assert_int_eq(fb_add(be, y, x, 5), 0);
    CHECK(y[0] == 11 && y[4] == 55);
    float d[12] = {0};
    ck_assert_int_eq(fb_copy2d(be, d, 4, x, 2, 3, 2), 0);
    CHECK(d[0] == 10 && d[1] == 20 && d[2] == 0 && d[4] == 30 && d[8] == 50 && d[9] == 60 && d[10] == 0);
    ck_assert_int_eq(fb_copy2d(be, d, 1, x, 2, 3, 2), -EINVAL);
    ck_assert_int_eq(fb_silu_mul(be, g, u, 2, 4, 3, o), -EINVAL);
    /* gelu_mul (tanh form): gelu(1) = 0.841192, gelu(3) = 2.996363, gelu(-2) = -0.045402;
     * far out it is x or 0 */
    float g2[6] = {1, -2, 3, 50, -50, 0};
    ck_assert_int_eq(fb_gelu_mul(be, g2, u, 2, 3, 3, o), 0);
    CHECKM(fabsf(o[0] - 0.8411920f) < 1e-6f, "%.7g", (double)o[0]);
    CHECKM(fabsf(o[1] - -0.0454023f * 2) < 1e-6f, "%.7g", (double)o[1]);
    CHECKM(fabsf(o[2] - 2.9963627f * 3) < 1e-5f, "%.7g", (double)o[2]);
    CHECK(fabsf(o[3] - 50 * 4) < 1e-4f && fabsf(o[4]) < 1e-20f && o[5] == 0);
    ck_assert_int_eq(fb_gelu_mul(be, g2, u, 2, 4, 3, o), -EINVAL);
    /* scale and softcap: 2 tanh(x / 2) */
    float sc[4] = {1, -2, 0, 100};
    ck_assert_int_eq(fb_scale(be, sc, 3, 0.5f), 0);
    CHECK(sc[0] == 0.5f && sc[1] == -1 && sc[2] == 0 && sc[3] == 100);
    ck_assert_int_eq(fb_softcap(be, sc, 4, 2), 0);
    CHECK(fabsf(sc[0] - 0.4898374f) < 1e-6f && fabsf(sc[1] - -0.9242344f) < 1e-6f);
    CHECK(sc[2] == 0 && fabsf(sc[3] - 2) < 1e-6f);
    ck_assert_int_eq(fb_softcap(be, sc, 4, 0), -EINVAL);
    ck_assert_int_eq(fb_softcap(be, sc, 4, INFINITY), -EINVAL);
    ck_assert_int_eq(fb_scale(be, sc, 4, NAN), -EINVAL);
    fb_destroy(be);
}
END_TEST

/* Mixture-of-experts row movement: gather and weighted scatter-add against values worked
 * out here and against the reference ops (fast: 4097 columns over the threads, repeated
 * destination rows added in order), and the wrappers' checks of ids and weights. */
START_TEST(test_moe_rows)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    float src[3 * 4] = {1, 2, 3, 90, 4, 5, 6, 91, 7, 8, 9, 92}; /* 3 rows of 3, stride 4 */
    int32_t ids[4] = {2, 0, 2, 1};
    float d[4 * 3];
    ck_assert_int_eq(fb_gather_rows(be, d, src, 4, 3, ids, 4, 3), 0);
    CHECK(d[0] == 7 && d[2] == 9 && d[3] == 1 && d[6] == 7 && d[9] == 4 && d[11] == 6);
    float y[3 * 4] = {0};
    float w[4] = {0.5f, 2, 0.25f, -1};
    ck_assert_int_eq(fb_scatter_add_rows(be, y, 4, 3, d, ids, w, 4, 3), 0);
    /* d holds src rows 2, 0, 2, 1: dst row 2 gets 0.5 * (7,8,9) + 0.25 * (7,8,9), row 0
     * 2 * (1,2,3), row 1 -(4,5,6) */
    CHECK(y[8] == 5.25f && y[10] == 6.75f);
    CHECK(y[0] == 2 && y[2] == 6 && y[4] == -4 && y[6] == -6);
    CHECK(y[3] == 0 && y[7] == 0 && y[11] == 0); /* past n: untouched */
    /* bad input: an id out of range, a missing weight array, a short stride */
    ids[1] = 3;
    ck_assert_int_eq(fb_gather_rows(be, d, src, 4, 3, ids, 4, 3), -EINVAL);
    ck_assert_int_eq(fb_scatter_add_rows(be, y, 4, 3, d, ids, w, 4, 3), -EINVAL);
    ids[1] = -1;
    ck_assert_int_eq(fb_gather_rows(be, d, src, 4, 3, ids, 4, 3), -EINVAL);
    ids[1] = 0;
    ck_assert_int_eq(fb_scatter_add_rows(be, y, 4, 3, d, ids, NULL, 4, 3), -EINVAL);
    ck_assert_int_eq(fb_gather_rows(be, d, src, 2, 3, ids, 4, 3), -EINVAL);
    ck_assert_int_eq(fb_gather_rows(be, d, src, 4, 3, NULL, 4, 3), -EINVAL);

    /* fast against the reference on larger shapes */
    uint64_t s = 1700 + (uint64_t)_i;
    static const int64_t ns[] = {1, 100, 4097};
    for (size_t k = 0; k < FD_ARRAY_LEN(ns); k++) {
        int64_t n = ns[k], n_src = 13, rows = 40;
        float *x = rnd(&s, n_src * n, 3), *g1 = malloc(sizeof(float) * (size_t)(rows * n));
        float *g2 = malloc(sizeof(float) * (size_t)(rows * n)), *wt = rnd(&s, rows, 1);
        float *y1 = rnd(&s, n_src * n, 2), *y2 = malloc(sizeof(float) * (size_t)(n_src * n));
        memcpy(y2, y1, sizeof(float) * (size_t)(n_src * n));
        int32_t *id = malloc(sizeof(int32_t) * (size_t)rows);
        for (int64_t r = 0; r < rows; r++)
            id[r] = (int32_t)((r * 7 + k) % (uint64_t)n_src);
        ck_assert_int_eq(fb_gather_rows(be, g1, x, n, n_src, id, rows, n), 0);
        fcpu_ref_gather_rows(g2, x, n, id, rows, n);
        ck_assert_int_eq(memcmp(g1, g2, sizeof(float) * (size_t)(rows * n)), 0);
        ck_assert_int_eq(fb_scatter_add_rows(be, y1, n, n_src, g1, id, wt, rows, n), 0);
        fcpu_ref_scatter_add_rows(y2, n, g2, id, wt, rows, n);
        for (int64_t i = 0; i < n_src * n; i++) /* a fused multiply-add may round once less */
            CHECKM(fabsf(y1[i] - y2[i]) <= 1e-6f * (fabsf(y2[i]) + 4), "n %lld: %g vs %g",
                   (long long)n, (double)y1[i], (double)y2[i]);
        free(x); free(g1); free(g2); free(wt); free(y1); free(y2); free(id);
    }
    fb_destroy(be);
}
END_TEST

START_TEST(test_get_rows)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    uint64_t s = 31;
    for (size_t t = 0; t < FD_ARRAY_LEN(all_types); t++) {
        int type = all_types[t];
        int64_t n_in = gg_block_elems(type) == 1 ? 19 : gg_block_elems(type), n_out = 9;
        void *src = mk_weight(&s, type, n_in, n_out);
        fb_weight_t w = {.type = type, .n_in = n_in, .n_out = n_out, .src = src};
        int32_t ids[4] = {8, 0, 3, 8};
        float *out = malloc(sizeof(float) * 4 * (size_t)n_in), *row = malloc(sizeof(float) * (size_t)n_in);
        ck_assert_int_eq(fb_get_rows(be, &w, ids, 4, out), 0);
        uint64_t rb = gg_row_bytes(type, (uint64_t)n_in);
        for (int r = 0; r < 4; r++) {
            fq_dequantize_row(type, (uint8_t *)src + rb * (uint64_t)ids[r], row, n_in);
            ck_assert_int_eq(memcmp(row, out + r * n_in, sizeof(float) * (size_t)n_in), 0);
        }
        int32_t bad[1] = {9};
        ck_assert_int_eq(fb_get_rows(be, &w, bad, 1, out), -EINVAL);
        bad[0] = -1;
        ck_assert_int_eq(fb_get_rows(be, &w, bad, 1, out), -EINVAL);
        free(src); free(out); free(row);
    }
    fb_destroy(be);
}
END_TEST

/* ---- fast kernels against the reference ------------------------------------------------ */

/* The activation block the kernels quantize to int8 for a weight type (0: activations stay
 * float).  Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 use 32-element blocks, the K-quants 256; the other types go
 * through a dequantized weight row and float activations. */
static int act_block(int type)
{
    switch (type) {
    case GG_Q8_0: case GG_Q4_0: return 32;
    case GG_Q4_1: case GG_Q5_0: case GG_Q5_1: return 32;
    case GG_IQ4_NL: case GG_MXFP4: return 32;
    case GG_Q4_K: case GG_Q5_K: case GG_Q6_K: return 256;
    case GG_Q2_K: case GG_Q3_K: return 256;
    case GG_IQ4_XS: return 256;
    default: return 0;
    }
}

/* Error bound of a fast product against the fp64 reference, per output:
 *  - float summation: the kernels sum n_in products in chains of at most n_in/8 + 8 terms
 *    (8 or 16 lanes, a tree at the end), |err| <= (n_in/8 + 24) u sum|w x'|, u = 2^-24;
 *  - int8 activations: x' (x times in_scale) is rounded to d/2 per element, d = the
 *    block's max |x'| / 127, so |err| <= sum_i |w_i| d_b(i) / 2 (1.01: d's own rounding);
 *  - then the deferred scale s and the bias add a few ulps: 4 u |y|. */
static void fast_bounds(const fb_weight_t *w, const float *x, int64_t n_rows, const double *ref_y,
                        const float *scl, double *bound)
{
    int64_t n = w->n_in;
    int blk = act_block(w->type);
    int64_t nb = blk ? n / blk : 0;
    float *wr = malloc(sizeof(float) * (size_t)n), *xs = malloc(sizeof(float) * (size_t)(n * n_rows));
    double *amax = malloc(sizeof(double) * (size_t)(nb * n_rows + 1));
    for (int64_t r = 0; r < n_rows; r++) {
        for (int64_t i = 0; i < n; i++)
            xs[r * n + i] = x[r * n + i] * (w->in_scale ? w->in_scale[i] : 1.f);
        for (int64_t b = 0; b < nb; b++) {
            double m = 0;
            for (int j = 0; j < blk; j++)
                m = fmax(m, fabs(xs[r * n + b * blk + j]));
            amax[r * nb + b] = m;
        }
    }
    uint64_t rb = gg_row_bytes(w->type, (uint64_t)n);
    for (int64_t o = 0; o < w->n_out; o++) {
        fq_dequantize_row(w->type, (const uint8_t *)w->src + rb * (uint64_t)o, wr, n);
        for (int64_t r = 0; r < n_rows; r++) {
            const float *xr = xs + r * n;
            double fsum = 0, qerr = 0;
            for (int64_t i = 0; i < n; i++)
                fsum += fabs((double)wr[i] * xr[i]);
            for (int64_t b = 0; b < nb; b++) {
                double sw = 0;
                for (int j = 0; j < blk; j++)
                    sw += fabs(wr[b * blk + j]);
                qerr += sw * amax[r * nb + b] / 127 / 2 * 1.01;
            }
            double s = scl ? scl[r] : 1;
            double fl = ((double)n / 8 + 24) * 0x1p-24 * fsum;
            bound[r * w->n_out + o] = (qerr + fl) * s + 4 * 0x1p-24 * fabs(ref_y[r * w->n_out + o]) + 1e-30;
        }
    }
    free(wr);
    free(xs);
    free(amax);
}

static const int fast_types[] = {GG_F32, GG_F16, GG_BF16, GG_Q8_0, GG_Q4_0, GG_Q4_K, GG_Q6_K,
                                 GG_Q5_K, GG_Q4_1,
                                 GG_Q5_0,
                                 GG_Q5_1,
                                 GG_IQ4_NL, GG_IQ4_XS, GG_MXFP4,
                                 GG_Q2_K,
                                 GG_Q3_K};

/* Every configuration x weight type x awkward shapes (odd n_out, n_in off the SIMD width,
 * batch 1..64) x deferred kinds, bias and in_scale, with a large-magnitude row. */
START_TEST(test_fast_matmul)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    uint64_t s = 500 + (uint64_t)_i;
    static const int64_t rows_set[] = {1, 2, 3, 5, 8, 17, 64};
    for (size_t t = 0; t < FD_ARRAY_LEN(fast_types); t++) {
        int type = fast_types[t];
        int be_el = gg_block_elems(type);
        for (int shape = 0; shape < 4; shape++) {
            int64_t n_in, n_out = (int64_t[]){1, 7, 33, 65}[shape];
            if (be_el == 1)
                n_in = (int64_t[]){1, 17, 100, 2100}[shape]; /* 2100: split along n_in */
            else if (be_el == 32)
                n_in = (int64_t[]){32, 96, 160, 2080}[shape];
            else
                n_in = (int64_t[]){256, 512, 768, 1280}[shape];
            int64_t n_rows = rows_set[(shape * 3 + t) % FD_ARRAY_LEN(rows_set)];
            if (shape == 3)
                n_rows = t % 2 ? 64 : 9;
            int kind = (int)((shape + t) % 3), extras = (int)((shape + t / 3) % 2);
            fb_weight_t w = {.type = type, .n_in = n_in, .n_out = n_out,
                             .src = mk_weight(&s, type, n_in, n_out)};
            float *bias = extras ? rnd(&s, n_out, 3) : NULL, *isc = extras ? rnd(&s, n_in, 2) : NULL;
            w.bias = bias;
            w.in_scale = isc;
            ck_assert_int_eq(fb_weight_prepare(be, &w), 0);
            float *x = rnd(&s, n_rows * n_in, 1), *y = malloc(sizeof(float) * (size_t)(n_rows * n_out));
            float *sc = malloc(sizeof(float) * (size_t)n_rows), *ry = malloc(sizeof(float) * (size_t)(n_rows * n_out));
            for (int64_t i = 0; i < n_rows * n_out; i++)
                y[i] = NAN; /* a row no chunk computed stays NaN */
            for (int64_t i = 0; i < n_in; i++)
                x[(n_rows / 2) * n_in + i] *= 1000; /* a large-magnitude row */
            fb_defer_t d = {.kind = kind, .eps = 1e-5f, .scale_out = sc};
            ck_assert_int_eq(fb_matmul(be, &w, x, n_rows, y, &d), 0);
            ck_assert_int_eq(fcpu_ref_matmul(&w, x, n_rows, ry, &d), 0);
            double *ryd = malloc(sizeof(double) * (size_t)(n_rows * n_out)), *bound = malloc(sizeof(double) * (size_t)(n_rows * n_out));
            for (int64_t i = 0; i < n_rows * n_out; i++)
                ryd[i] = ry[i];
            float *scl = NULL;
            if (kind != FB_NORM_NONE) {
                scl = malloc(sizeof(float) * (size_t)n_rows);
                for (int64_t r = 0; r < n_rows; r++)
                    scl[r] = (float)fcpu_ref_norm_scale(kind, x + r * n_in, n_in, 1e-5f);
            }
            fast_bounds(&w, x, n_rows, ryd, scl, bound);
            for (int64_t i = 0; i < n_rows * n_out; i++)
                CHECKM(fabs((double)y[i] - ryd[i]) <= bound[i],
                              "cfg %d %s n_in %lld n_out %lld rows %lld kind %d extras %d i %lld: %.9g vs %.9g (bound %.3g)",
                              _i, gg_type_name(type), (long long)n_in, (long long)n_out, (long long)n_rows,
                              kind, extras, (long long)i, (double)y[i], ryd[i], bound[i]);
            if (kind != FB_NORM_NONE)
                for (int64_t r = 0; r < n_rows; r++)
                    CHECK(fabsf(sc[r] - scl[r]) <= 1e-5f * scl[r]);
            fb_weight_release(be, &w);
            free((void *)w.src); free(bias); free(isc); free(x); free(y); free(sc); free(ry);
            free(ryd); free(bound); free(scl);
        }
    }
    fb_destroy(be);
}
END_TEST

/* Grouped products (fb_matmul_group, a mixture-of-experts layer's experts): on every
 * configuration and every expert weight type, groups of parts with 0, 1 and several rows,
 * two shapes in one group (gate-like and down-like), in_scale on some parts, every deferred
 * kind: each part is bit-identical to the same configuration's fb_matmul of that part (the
 * per-expert path: the same per-row kernels), within the fast bounds of the reference, and
 * a part of 0 rows leaves its output untouched; then bad input. */
START_TEST(test_matmul_group)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    uint64_t s = 900 + (uint64_t)_i;
    enum { NP = 7 };
    static const int64_t rows_of[NP] = {1, 0, 3, 9, 1, 0, 2};
    for (size_t t = 0; t < FD_ARRAY_LEN(fast_types); t++) {
        const int type = fast_types[t];
        const int bel = gg_block_elems(type);
        const int64_t n_in_a = bel == 1 ? 100 : bel == 32 ? 160 : 512;
        const int64_t n_in_b = bel == 1 ? 17 : bel == 32 ? 96 : 256;
        fb_weight_t w[NP];
        float *x[NP], *y[NP], *y1[NP], *isc[NP];
        fb_mm_part_t parts[NP];
        for (int i = 0; i < NP; i++) {
            int64_t n_in = i % 3 == 2 ? n_in_b : n_in_a, n_out = i % 3 == 2 ? 65 : 33;
            int64_t r = rows_of[(i + (int)t) % NP];
            isc[i] = i % 2 ? rnd(&s, n_in, 2) : NULL;
            w[i] = (fb_weight_t){.type = type, .n_in = n_in, .n_out = n_out,
                                 .src = mk_weight(&s, type, n_in, n_out), .in_scale = isc[i]};
            ck_assert_int_eq(fb_weight_prepare(be, &w[i]), 0);
            x[i] = rnd(&s, r * n_in, 1);
            y[i] = malloc(sizeof(float) * (size_t)(FD_MAX(r, 1) * n_out));
            y1[i] = malloc(sizeof(float) * (size_t)(FD_MAX(r, 1) * n_out));
            for (int64_t j = 0; j < FD_MAX(r, 1) * n_out; j++)
                y[i][j] = y1[i][j] = NAN; /* a row no chunk computed stays NaN */
            if (r == 0)
                y[i][0] = 42.f;
            parts[i] = (fb_mm_part_t){&w[i], x[i], r, y[i]};
        }
        const int kind = (int)(t % 3);
        fb_defer_t d = {.kind = kind, .eps = 1e-5f};
        ck_assert_int_eq(fb_matmul_group(be, parts, NP, kind ? &d : NULL), 0);
        for (int i = 0; i < NP; i++) {
            const int64_t r = parts[i].n_rows, n_in = w[i].n_in, n_out = w[i].n_out;
            if (r == 0) {
                CHECK(y[i][0] == 42.f);
                continue;
            }
            ck_assert_int_eq(fb_matmul(be, &w[i], x[i], r, y1[i], kind ? &d : NULL), 0);
            CHECKM(memcmp(y[i], y1[i], sizeof(float) * (size_t)(r * n_out)) == 0,
                   "cfg %d %s part %d rows %lld: grouped differs from fb_matmul", _i,
                   gg_type_name(type), i, (long long)r);
            float *ry = malloc(sizeof(float) * (size_t)(r * n_out)), *scl = NULL;
            double *ryd = malloc(sizeof(double) * (size_t)(r * n_out));
            double *bound = malloc(sizeof(double) * (size_t)(r * n_out));
            ck_assert_int_eq(fcpu_ref_matmul(&w[i], x[i], r, ry, kind ? &d : NULL), 0);
            for (int64_t j = 0; j < r * n_out; j++)
                ryd[j] = ry[j];
            if (kind != FB_NORM_NONE) {
                scl = malloc(sizeof(float) * (size_t)r);
                for (int64_t k = 0; k < r; k++)
                    scl[k] = (float)fcpu_ref_norm_scale(kind, x[i] + k * n_in, n_in, 1e-5f);
            }
            fast_bounds(&w[i], x[i], r, ryd, scl, bound);
            for (int64_t j = 0; j < r * n_out; j++)
                CHECKM(fabs((double)y[i][j] - ryd[j]) <= bound[j],
                       "cfg %d %s part %d j %lld: %.9g vs ref %.9g", _i, gg_type_name(type), i,
                       (long long)j, (double)y[i][j], ryd[j]);
            free(ry);
            free(ryd);
            free(bound);
            free(scl);
        }
        if (t == 0) { /* bad input, on parts that are otherwise good */
            fb_defer_t so = {.kind = FB_NORM_RMS, .eps = 1e-5f, .scale_out = y1[0]};
            fb_defer_t bk = {.kind = 7};
            ck_assert_int_eq(fb_matmul_group(be, parts, 0, NULL), 0);
            ck_assert_int_eq(fb_matmul_group(be, NULL, 0, NULL), 0);
            ck_assert_int_eq(fb_matmul_group(be, parts, -1, NULL), -EINVAL);
            ck_assert_int_eq(fb_matmul_group(be, NULL, 2, NULL), -EINVAL);
            ck_assert_int_eq(fb_matmul_group(be, parts, NP, &so), -EINVAL);
            ck_assert_int_eq(fb_matmul_group(be, parts, NP, &bk), -EINVAL);
            fb_mm_part_t bad[2] = {parts[0], parts[0]};
            bad[1].x = NULL;
            ck_assert_int_eq(fb_matmul_group(be, bad, 2, NULL), -EINVAL);
            bad[1] = parts[0];
            bad[1].n_rows = -1;
            ck_assert_int_eq(fb_matmul_group(be, bad, 2, NULL), -EINVAL);
            bad[1] = parts[0];
            bad[1].w = NULL;
            ck_assert_int_eq(fb_matmul_group(be, bad, 2, NULL), -EINVAL);
            fb_weight_t wb = w[0];
            wb.n_in = 0;
            bad[1] = parts[0];
            bad[1].w = &wb;
            ck_assert_int_eq(fb_matmul_group(be, bad, 2, NULL), -EINVAL);
            fb_defer_t neg = {.kind = FB_NORM_RMS, .eps = -1.f};
            ck_assert_int_eq(fb_matmul_group(be, parts, NP, &neg), -EINVAL);
        }
        for (int i = 0; i < NP; i++) {
            fb_weight_release(be, &w[i]);
            free((void *)w[i].src);
            free(isc[i]);
            free(x[i]);
            free(y[i]);
            free(y1[i]);
        }
    }
    fb_destroy(be);
}
END_TEST

/* A backend without the op (corsair) runs fb_matmul_group as one fb_matmul per part. */
START_TEST(test_matmul_group_fallback)
{
    fb_config_t cfg = {.threads = 1};
    fb_backend_t *be = NULL;
    char err[160];
    ck_assert_int_eq(fb_create("corsair", &cfg, &be, err, sizeof(err)), 0);
    uint64_t s = 77;
    fb_weight_t w = {.type = GG_Q8_0, .n_in = 64, .n_out = 5,
                     .src = mk_weight(&s, GG_Q8_0, 64, 5)};
    ck_assert_int_eq(fb_weight_prepare(be, &w), 0);
    float *xh = rnd(&s, 3 * 64, 1);
    float *x = fb_alloc(be, 3 * 64 * sizeof(float)), *y = fb_alloc(be, 3 * 5 * sizeof(float));
    float *y1 = fb_alloc(be, 3 * 5 * sizeof(float));
    float a[15], b[15];
    ck_assert_int_eq(fb_to_device(be, x, xh, 3 * 64 * sizeof(float)), 0);
    fb_mm_part_t parts[3] = {{&w, x, 1, y}, {&w, x, 0, y1}, {&w, x + 64, 2, y + 5}};
    fb_defer_t d = {.kind = FB_NORM_RMS, .eps = 1e-5f};
    ck_assert_int_eq(fb_matmul_group(be, parts, 3, &d), 0);
    ck_assert_int_eq(fb_matmul(be, &w, x, 3, y1, &d), 0);
    ck_assert_int_eq(fb_to_host(be, a, y, sizeof(a)), 0);
    ck_assert_int_eq(fb_to_host(be, b, y1, sizeof(b)), 0);
    ck_assert_int_eq(fb_sync(be), 0);
    for (int i = 0; i < 15; i++)
        CHECKM(a[i] == b[i], "corsair grouped %d: %.9g vs %.9g", i, (double)a[i], (double)b[i]);
    fb_free(be, x);
    fb_free(be, y);
    fb_free(be, y1);
    fb_weight_release(be, &w);
    free((void *)w.src);
    free(xh);
    fb_destroy(be);
}
END_TEST

/* ---- batch kernels against the per-row scalar kernels ---------------------------------- */

/* Every table with batch kernels (the VNNI one; the plain C table's per-row kernels run the
 * batches faster than a transposed layout would there): its quant_q32t (quant_qkt) is its
 * quant_q32 (quant_qk) with the codes moved as fcpu_xq32t_at says (scales and sums
 * untouched; XQKT's sums are d times the sums of 32), and its dot8 gives, for 1..8 rows, what the scalar table's per-row dot gives
 * on XQ32 (XQK) rows: the integer sums are exact, so
 * only the float summation order differs.  Block counts 1, 3, 8, 9, 17 and 65 cover rows of
 * no full group, of groups only, and of groups with 1..7 blocks after them; Q4_K and Q5_K
 * take 1, 2 and 5 super-blocks. */
START_TEST(test_dot8_kernels)
{
    const fcpu_kern_t *k = fcpu_kernels(_i), *ref = fcpu_kernels(FCPU_ISA_SCALAR);
    if (!k)
        return;
    uint64_t s = 2100 + (uint64_t)_i;
    static const int64_t blocks[] = {1, 3, 8, 9, 17, 65}, supers[] = {1, 2, 5};
    static const int types[] = {GG_Q8_0, GG_Q4_0, GG_Q4_K, GG_Q5_K};
    int tested = 0, tested_r = 0, tested_pf = 0;
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        int type = types[t];
        if (!k->dot8[type])
            continue;
        const bool kq = type == GG_Q4_K || type == GG_Q5_K;
        const int form = kq ? FCPU_XQK : FCPU_XQ32, blk = kq ? 256 : 32;
        void (*qt)(const float *, int64_t, void *) = kq ? k->quant_qkt : k->quant_q32t;
        void (*qn)(const float *, int64_t, void *) = kq ? k->quant_qk : k->quant_q32;
        CHECK(qt != NULL);
        CHECK(k->xform8[type] == (kq ? FCPU_XQKT : FCPU_XQ32T));
        for (size_t bi = 0; bi < (kq ? FD_ARRAY_LEN(supers) : FD_ARRAY_LEN(blocks)); bi++) {
            const int64_t n = blk * (kq ? supers[bi] : blocks[bi]), n_out = 3;
            const size_t ldx = fcpu_xrow_bytes(k->xform8[type], n);
            CHECK(ldx == fcpu_xrow_bytes(form, n));
            void *w = mk_weight(&s, type, n, n_out);
            const uint64_t rb = gg_row_bytes(type, (uint64_t)n);
            uint8_t *xt = malloc(ldx * FCPU_NR8), *xn = malloc(ldx * FCPU_NR8);
            float *x = rnd(&s, n * FCPU_NR8, 1);
            for (int64_t i = 0; i < n; i++)
                x[3 * n + i] *= 1000; /* a large-magnitude row */
            for (int r = 0; r < FCPU_NR8; r++) {
                qt(x + r * n, n, xt + (size_t)r * ldx);
                qn(x + r * n, n, xn + (size_t)r * ldx);
                const int8_t *q8t = fcpu_x_qs(xt + (size_t)r * ldx), *q8n = fcpu_x_qs(xn + (size_t)r * ldx);
                for (int64_t b = 0; b < n / 32; b++)
                    for (int e = 0; e < 32; e++)
                        CHECKM(q8t[fcpu_xq32t_at(b, e, n / 32)] == q8n[32 * b + e],
                               "%s %s n %lld row %d block %lld code %d", k->name,
                               gg_type_name(type), (long long)n, r, (long long)b, e);
                const size_t tail = kq ? 4 * (size_t)(n / 256) : 8 * (size_t)(n / 32);
                CHECK(memcmp(xt + (size_t)r * ldx + n, xn + (size_t)r * ldx + n, tail) == 0);
                if (kq) { /* XQKT: d times the sums of 32 where XQK has the sums of 16 */
                    const float *dt = fcpu_xqkt_dsum(xt + (size_t)r * ldx, n);
                    const float *d = fcpu_xqk_d(xn + (size_t)r * ldx, n);
                    const int16_t *bs = fcpu_xqk_bsum(xn + (size_t)r * ldx, n);
                    for (int64_t j = 0; j < n / 32; j++) {
                        int sum = 0;
                        for (int e = 0; e < 32; e++)
                            sum += q8n[32 * j + e];
                        CHECK(sum == bs[2 * j] + bs[2 * j + 1]);
                        CHECKM(dt[j] == d[j / 8] * (float)sum, "%s n %lld row %d sum %lld: %g vs %g",
                               k->name, (long long)n, r, (long long)j, (double)dt[j],
                               (double)(d[j / 8] * (float)sum));
                    }
                }
            }
            uint8_t *wr = NULL;
            if (k->dot8r[type]) {
                wr = malloc(rb * (uint64_t)n_out);
                memset(wr, 0xa5, rb * (uint64_t)n_out);
                for (int64_t o = 0; o < n_out; o++)
                    CHECK(fcpu_repack8_row(type, n, (const uint8_t *)w + rb * (uint64_t)o, wr + rb * (uint64_t)o) == 0);
                tested_r++;
            } else { /* into a scratch row: xt holds the activations */
                uint8_t *scr = malloc(rb);
                CHECK(fcpu_repack8_row(type, n, w, scr) == (kq ? FD_EUNSUP : 0));
                free(scr);
            }
            for (int64_t o = 0; o < n_out; o++) {
                const uint8_t *wo = (const uint8_t *)w + rb * (uint64_t)o;
                float *wf = malloc(sizeof(float) * (size_t)n);
                fq_dequantize_row(type, wo, wf, n);
                for (int nr = 1; nr <= FCPU_NR8; nr++) {
                    float got[FCPU_NR8], want[FCPU_NR8];
                    for (int r = 0; r < FCPU_NR8; r++)
                        got[r] = NAN;
                    k->dot8[type](n, wo, xt, ldx, nr, got);
                    for (int r = 0; r < nr; r++) {
                        /* the same codes through the scalar per-row kernel; a bound from
                         * the sum of |terms| */
                        const uint8_t *row = xn + (size_t)r * ldx;
                        ref->dot[type](n, wo, row, ldx, 1, &want[r]);
                        const int8_t *q = fcpu_x_qs(row);
                        const float *d = kq ? fcpu_xqk_d(row, n) : fcpu_xq32_d(row, n);
                        double mag = 0;
                        for (int64_t i = 0; i < n; i++)
                            mag += fabs((double)wf[i] * q[i] * d[i / blk]);
                        CHECKM(fabs((double)got[r] - want[r]) <= 1e-5 * mag + 1e-30,
                               "%s %s n %lld out %lld rows %d row %d: %.9g vs %.9g (|terms| %.3g)",
                               k->name, gg_type_name(type), (long long)n, (long long)o, nr, r,
                               (double)got[r], (double)want[r], mag);
                    }
                    for (int r = nr; r < FCPU_NR8; r++)
                        CHECKM(isnan(got[r]), "%s: dot8 wrote past row %d", k->name, nr);
                    if (k->dot8pf[type]) { /* only the prefetch address differs */
                        float gp[FCPU_NR8];
                        for (int r = 0; r < FCPU_NR8; r++)
                            gp[r] = NAN;
                        k->dot8pf[type](n, wo, (ptrdiff_t)rb, nr % 2 ? 4 * (ptrdiff_t)rb : 0, xt,
                                        ldx, nr, gp);
                        for (int r = 0; r < FCPU_NR8; r++)
                            CHECKM(r < nr ? gp[r] == got[r] : isnan(gp[r]),
                                   "%s %s n %lld rows %d row %d: dot8pf %.9g, dot8 %.9g", k->name,
                                   gg_type_name(type), (long long)n, nr, r, (double)gp[r],
                                   (double)got[r]);
                        tested_pf++;
                    }
                    if (wr) { /* the repacked row: the same integer sums in the same order */
                        float gr[FCPU_NR8];
                        for (int r = 0; r < FCPU_NR8; r++)
                            gr[r] = NAN;
                        k->dot8r[type](n, wr + rb * (uint64_t)o, xt, ldx, nr, gr);
                        for (int r = 0; r < FCPU_NR8; r++)
                            CHECKM(r < nr ? gr[r] == got[r] : isnan(gr[r]),
                                   "%s %s n %lld out %lld rows %d row %d: dot8r %.9g, dot8 %.9g",
                                   k->name, gg_type_name(type), (long long)n, (long long)o, nr, r,
                                   (double)gr[r], (double)got[r]);
                    }
                }
                free(wf);
            }
            tested++;
            free(w); free(xt); free(xn); free(x); free(wr);
        }
    }
    if (_i == FCPU_ISA_AVX512)
        CHECK(tested == 18 && tested_r == 12 && tested_pf == 18 * 3 * FCPU_NR8); /* the VNNI table has every batch form */
}
END_TEST

/* The int8 batch kernels (dot8 of Q8_0, Q4_0 on XQ32T rows; Q4_K, Q5_K on XQKT rows) at the
 * edges of their 16-bit sums, every table that has them: 1..8 rows against the fp64 dot of
 * the dequantized weights with the activations' dequantized codes and against the scalar
 * per-row dot on XQ32 (XQK) rows, within float rounding of the sum of |terms|.  Weight rows
 * 0 and 1 are quantized from random floats; rows 2 and 3 hold the largest codes (Q8_0 127
 * and -128, Q4_0 nibbles 15 and 0, Q4_K 15 with scales and mins 63, Q5_K 31) under the
 * largest fp16 scale, and alternate largest and zero codes under the smallest (subnormal)
 * one.  Activation rows 3, 4 and 5 are all +1, all -1 and alternating (every code +-127, so
 * a group of 8 blocks of Q4_0 codes 15 sums to 30480 in 16 bits, and Q5_K's codes 31 would
 * pass 2^15 past 4 blocks); row 6 is random times 2^60, row 7 times 2^-60.  Block counts 1,
 * 3, 9 and 17 (tails of 1..7 blocks after the groups of 8), 1, 2, 3 and 5 super-blocks. */
START_TEST(test_dot8_extremes)
{
    const fcpu_kern_t *k = fcpu_kernels(_i), *ref = fcpu_kernels(FCPU_ISA_SCALAR);
    if (!k)
        return;
    static const int types[] = {GG_Q8_0, GG_Q4_0, GG_Q4_K, GG_Q5_K};
    static const int64_t blocks[] = {1, 3, 9, 17}, supers[] = {1, 2, 3, 5};
    uint64_t s = 2700 + (uint64_t)_i;
    int tested = 0;
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        const int type = types[t];
        if (!k->dot8[type])
            continue;
        const bool kq = type == GG_Q4_K || type == GG_Q5_K;
        const int blk = kq ? 256 : 32, form = kq ? FCPU_XQK : FCPU_XQ32;
        CHECK(k->xform8[type] == (kq ? FCPU_XQKT : FCPU_XQ32T));
        for (size_t bi = 0; bi < 4; bi++) {
            const int64_t n = blk * (kq ? supers[bi] : blocks[bi]), n_out = 4;
            const size_t ldx = fcpu_xrow_bytes(form, n);
            const uint64_t rb = gg_row_bytes(type, (uint64_t)n);
            const size_t bb = (size_t)gg_block_bytes(type);
            uint8_t *w = mk_weight(&s, type, n, n_out);
            for (int row = 2; row < 4; row++)
                for (int64_t b = 0; b < n / blk; b++) {
                    uint8_t *p = w + rb * (uint64_t)row + (size_t)b * bb;
                    const bool big = row == 2, odd = b % 2;
                    const uint16_t d = big ? 0x7bff : 0x0001; /* 65504, 2^-24 */
                    memcpy(p, &d, 2);
                    if (type == GG_Q8_0) {
                        for (int e = 0; e < 32; e++)
                            p[2 + e] = (uint8_t)(big ? (e % 3 ? 127 : -128) : odd ? (e % 2 ? 127 : 0) : -127);
                    } else if (type == GG_Q4_0) {
                        memset(p + 2, big || odd ? 0xff : 0x00, 16);
                    } else {
                        const uint16_t dmin = big ? 0x7bff : 0x0400;
                        memcpy(p + 2, &dmin, 2);
                        memset(p + 4, 0xff, 12); /* every scale and min 63 */
                        if (type == GG_Q5_K)
                            memset(p + 16, big || odd ? 0xff : 0x55, 32);
                        memset(p + bb - 128, big || odd ? 0xff : 0x00, 128);
                    }
                }
            float *x = rnd(&s, n * FCPU_NR8, 1), *wf = malloc(sizeof(float) * (size_t)n);
            for (int64_t i = 0; i < n; i++) {
                x[3 * n + i] = 1;
                x[4 * n + i] = -1;
                x[5 * n + i] = i % 2 ? 1 : -1;
                x[6 * n + i] = ldexpf(x[6 * n + i], 60);
                x[7 * n + i] = ldexpf(x[7 * n + i], -60);
            }
            uint8_t *xq = malloc(ldx * FCPU_NR8), *xt = malloc(ldx * FCPU_NR8);
            for (int r = 0; r < FCPU_NR8; r++) {
                (kq ? k->quant_qk : k->quant_q32)(x + r * n, n, xq + (size_t)r * ldx);
                (kq ? k->quant_qkt : k->quant_q32t)(x + r * n, n, xt + (size_t)r * ldx);
            }
            for (int64_t o = 0; o < n_out; o++) {
                const uint8_t *wo = w + rb * (uint64_t)o;
                fq_dequantize_row(type, wo, wf, n);
                double want[FCPU_NR8], mag[FCPU_NR8];
                float sref[FCPU_NR8];
                for (int r = 0; r < FCPU_NR8; r++) {
                    const uint8_t *row = xq + (size_t)r * ldx;
                    const int8_t *q = fcpu_x_qs(row);
                    const float *d = kq ? fcpu_xqk_d(row, n) : fcpu_xq32_d(row, n);
                    want[r] = mag[r] = 0;
                    for (int64_t i = 0; i < n; i++) {
                        double p = (double)wf[i] * q[i] * d[i / blk];
                        want[r] += p;
                        mag[r] += fabs(p);
                    }
                    ref->dot[type](n, wo, row, ldx, 1, &sref[r]);
                }
                for (int nr = 1; nr <= FCPU_NR8; nr++) {
                    float got[FCPU_NR8];
                    for (int r = 0; r < FCPU_NR8; r++)
                        got[r] = NAN;
                    k->dot8[type](n, wo, xt, ldx, nr, got);
                    for (int r = 0; r < FCPU_NR8; r++) {
                        if (r >= nr) {
                            CHECKM(isnan(got[r]), "%s: dot8 wrote past row %d", k->name, nr);
                            continue;
                        }
                        const double tol = 1e-5 * mag[r] + 1e-30;
                        CHECKM(isfinite(got[r]) && fabs(got[r] - want[r]) <= tol &&
                                   fabs((double)got[r] - sref[r]) <= tol,
                               "%s dot8 %s n %lld out %lld rows %d row %d: %.9g, fp64 %.9g, scalar %.9g",
                               k->name, gg_type_name(type), (long long)n, (long long)o, nr, r,
                               (double)got[r], want[r], (double)sref[r]);
                        tested++;
                    }
                }
            }
            free(w); free(x); free(wf); free(xq); free(xt);
        }
    }
    if (_i != FCPU_ISA_SCALAR) /* the AVX2 and VNNI tables have all four */
        CHECK(tested == 4 * 4 * 4 * (FCPU_NR8 * (FCPU_NR8 + 1) / 2));
}
END_TEST

/* gemm16 on FCPU_REPACK16 groups: fcpu_repack16_rows puts every code and scale where
 * kernels.h says (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K), and gemm16 gives, for 1..8 rows in the table's
 * form xform (XQ32; XQ32I for Q4_0; XQK for the K-quants), what the scalar table's per-row
 * dot gives on XQ32 (XQK) rows for each of the 16 rows (exact integer sums; float order
 * differs), storing 16 outputs per activation row at the stride asked and nothing else.
 * Block counts 1, 3, 9, 65 and 130 include rows longer than the kernel's pieces of 64 blocks
 * and (odd) XQ32I rows ending in a lone block; the K-quants' 1, 2, 15, 17 and 33
 * super-blocks cross Q4_K's pieces of 16 and end Q6_K's pairs of super-blocks either way. */
START_TEST(test_gemm16_kernels)
{
    const fcpu_kern_t *k = fcpu_kernels(_i), *ref = fcpu_kernels(FCPU_ISA_SCALAR);
    if (!k)
        return;
    uint64_t s = 2400 + (uint64_t)_i;
    static const int64_t blocks[] = {1, 3, 9, 65, 130};
    static const int64_t supers[] = {1, 2, 15, 17, 33};
    static const int types[] = {GG_Q8_0, GG_Q4_0, GG_Q4_K, GG_Q5_K, GG_Q6_K};
    const int G = FCPU_G16;
    const size_t ldy = 21;
    int tested = 0;
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++)
    for (size_t bi = 0; bi < FD_ARRAY_LEN(blocks); bi++) {
        const int type = types[t];
        const bool kq = type == GG_Q4_K || type == GG_Q5_K || type == GG_Q6_K;
        const int64_t nb = kq ? supers[bi] : blocks[bi], n = gg_block_elems(type) * nb, n_out = 2 * G + 5;
        const uint64_t rb = gg_row_bytes(type, (uint64_t)n), gb = rb / (uint64_t)nb * G;
        void *w = mk_weight(&s, type, n, n_out);
        uint8_t *wp = malloc(rb * G * 2);
        memset(wp, 0xa5, rb * G * 2);
        for (int g = 0; g < 2; g++)
            CHECK(fcpu_repack16_rows(type, n, (const uint8_t *)w + rb * G * g, rb, wp + rb * G * g) == 0);
        CHECK(fcpu_repack16_rows(GG_Q5_0, n, w, rb, wp) == FD_EUNSUP); /* before the layout check: writes nothing */
        for (int g = 0; g < 2; g++)
            for (int i = 0; i < G; i++)
                for (int64_t j = 0; j < nb; j++) {
                    const uint8_t *src = (const uint8_t *)w + rb * (uint64_t)(G * g + i);
                    const uint8_t *p = wp + rb * G * g + gb * (size_t)j;
                    if (type == GG_Q8_0) {
                        const fq_block_q8_0 *b = (const fq_block_q8_0 *)(const void *)src + j;
                        for (int e = 0; e < 32; e++)
                            CHECK(p[64 * (e / 4) + 4 * i + e % 4] == (uint8_t)(b->qs[e] + 128));
                        CHECK(memcmp(p + 512 + 2 * i, &b->d, 2) == 0);
                    } else if (type == GG_Q4_0) { /* code e of the block: input e, value (code - 8) d */
                        const fq_block_q4_0 *b = (const fq_block_q4_0 *)(const void *)src + j;
                        for (int e = 0; e < 32; e++) {
                            const int code = e < 16 ? b->qs[e] & 15 : b->qs[e - 16] >> 4;
                            const uint8_t byte = p[64 * ((e % 16) / 4) + 4 * i + e % 4];
                            CHECK((e < 16 ? byte & 15 : byte >> 4) == code);
                        }
                        CHECK(memcmp(p + 256 + 2 * i, &b->d, 2) == 0);
                    } else if (type == GG_Q6_K) { /* the code of input e as quants.c defines it;
                                                   * its sub-block's 3 vectors (even super-blocks
                                                   * from 0, odd ones from 32, d after / before) */
                        const fq_block_q6_K *b = (const fq_block_q6_K *)(const void *)src + j;
                        const uint8_t *v = p + (j % 2 ? 32 : 0), *dp = p + (j % 2 ? 0 : gb - 32);
                        for (int e = 0; e < 256; e++) {
                            const int h = e / 128, kk = (e % 128) / 32, l = e % 32;
                            const uint8_t lb = b->ql[64 * h + l + 32 * (kk & 1)];
                            const int code = (kk < 2 ? lb & 15 : lb >> 4) | ((b->qh[32 * h + l] >> (2 * kk)) & 3) << 4;
                            const uint8_t *c = v + 256 + 192 * (e / 16) + 4 * i + e % 4;
                            const int m = (e % 16) / 4;
                            const int got = m < 3 ? c[64 * m] & 63 : c[0] >> 6 | (c[64] >> 6) << 2 | (c[128] >> 6) << 4;
                            CHECK(got == code);
                        }
                        for (int e = 0; e < 16; e++)
                            CHECK((int8_t)v[64 * (e / 4) + 4 * i + e % 4] == b->scales[e]);
                        CHECK(memcmp(dp + 2 * i, &b->d, 2) == 0);
                    } else { /* input e: sub-block e / 32, code of sub-block 2p + h at the h
                              * nibble of qs[32 p + e % 32] (Q5_K: + 16 for bit sb of qh[e % 32],
                              * in vector e % 32 / 4 after the nibbles); the scales' 12 bytes as
                              * they are */
                        const bool five = type == GG_Q5_K;
                        const fq_block_q4_K *b = (const fq_block_q4_K *)(const void *)(src + (size_t)j * (five ? sizeof(fq_block_q5_K) : sizeof(fq_block_q4_K)));
                        const uint8_t *qs = five ? ((const fq_block_q5_K *)(const void *)b)->qs : b->qs;
                        const uint8_t *qh = ((const fq_block_q5_K *)(const void *)b)->qh;
                        for (int e = 0; e < 256; e++) {
                            const int sb = e / 32, l = e % 32;
                            int code = (qs[32 * (sb / 2) + l] >> (4 * (sb % 2))) & 15;
                            const uint8_t byte = p[256 + 64 * (8 * (sb / 2) + l / 4) + 4 * i + l % 4];
                            int got = (byte >> (4 * (sb % 2))) & 15;
                            if (five) {
                                code |= ((qh[l] >> sb) & 1) << 4;
                                got |= ((p[2304 + 64 * (l / 4) + 4 * i + l % 4] >> sb) & 1) << 4;
                            }
                            CHECK(got == code);
                        }
                        for (int e = 0; e < 12; e++)
                            CHECK(p[64 + 64 * (e / 4) + 4 * i + e % 4] == b->scales[e]);
                        CHECK(memcmp(p + 2 * i, &b->d, 2) == 0);
                        CHECK(memcmp(p + 32 + 2 * i, &b->dmin, 2) == 0);
                    }
                }
        if (!k->gemm16[type]) {
            free(w); free(wp);
            continue;
        }
        const int form = k->xform[type];
        CHECK(form == (type == GG_Q4_0 ? FCPU_XQ32I : kq ? FCPU_XQK : FCPU_XQ32));
        const size_t ldx = fcpu_xrow_bytes(form, n);
        CHECK(ldx == fcpu_xrow_bytes(kq ? FCPU_XQK : FCPU_XQ32, n));
        uint8_t *xq = malloc(ldx * FCPU_NR8), *xn = malloc(ldx * FCPU_NR8);
        float *x = rnd(&s, n * FCPU_NR8, 1), *wf = malloc(sizeof(float) * (size_t)n * G * 2);
        for (int64_t i = 0; i < n; i++)
            x[2 * n + i] *= 1000; /* a large-magnitude row */
        for (int r = 0; r < FCPU_NR8; r++) {
            (form == FCPU_XQ32I ? k->quant_q32i : kq ? k->quant_qk : k->quant_q32)(x + r * n, n, xq + (size_t)r * ldx);
            (kq ? k->quant_qk : k->quant_q32)(x + r * n, n, xn + (size_t)r * ldx);
        }
        for (int o = 0; o < 2 * G; o++)
            fq_dequantize_row(type, (const uint8_t *)w + rb * (uint64_t)o, wf + (size_t)o * n, n);
        for (int g = 0; g < 2; g++)
            for (int nr = 1; nr <= FCPU_NR8; nr++) {
                float y[FCPU_NR8 * 21 + 1];
                for (size_t i = 0; i < FD_ARRAY_LEN(y); i++)
                    y[i] = NAN;
                k->gemm16[type](n, wp + rb * G * g, xq, ldx, nr, y, ldy);
                for (int r = 0; r < FCPU_NR8; r++)
                    for (int i = 0; i < (int)ldy; i++) {
                        const float got = y[(size_t)r * ldy + i];
                        if (r >= nr || i >= G) {
                            CHECKM(isnan(got), "%s %s n %lld rows %d: wrote y[%d][%d]", k->name,
                                   gg_type_name(type), (long long)n, nr, r, i);
                            continue;
                        }
                        const int o = G * g + i;
                        const uint8_t *row = xn + (size_t)r * ldx;
                        float want;
                        ref->dot[type](n, (const uint8_t *)w + rb * (uint64_t)o, row, ldx, 1, &want);
                        const int8_t *q = fcpu_x_qs(row);
                        double mag = 0;
                        for (int64_t e = 0; e < n; e++)
                            mag += fabs((double)wf[(size_t)o * n + e] * q[e] *
                                        (kq ? fcpu_xqk_d(row, n)[e / 256] : fcpu_xq32_d(row, n)[e / 32]));
                        CHECKM(fabs((double)got - want) <= 1e-5 * mag + 1e-30,
                               "%s %s n %lld out %d rows %d row %d: %.9g vs %.9g (|terms| %.3g)", k->name,
                               gg_type_name(type), (long long)n, o, nr, r, (double)got, (double)want, mag);
                    }
            }
        tested++;
        free(w); free(wp); free(xq); free(xn); free(x); free(wf);
    }
    if (_i == FCPU_ISA_AVX512)
        CHECK(tested == 5 * (int)FD_ARRAY_LEN(blocks)); /* the VNNI table has gemm16 for all five */
}
END_TEST

/* Q6_K's batch kernel (the per-row kernel on up to 8 untransposed XQK rows) against the
 * scalar table's per-row dot, 1..8 rows, 1, 2 and 5 super-blocks, and nothing written past
 * the rows asked for. */
START_TEST(test_dot8_q6_K)
{
    const fcpu_kern_t *k = fcpu_kernels(_i), *ref = fcpu_kernels(FCPU_ISA_SCALAR);
    if (!k || !k->dot8[GG_Q6_K])
        return;
    CHECK(k->xform8[GG_Q6_K] == FCPU_XQK);
    uint64_t s = 2150 + (uint64_t)_i;
    static const int64_t supers[] = {1, 2, 5};
    for (size_t bi = 0; bi < FD_ARRAY_LEN(supers); bi++) {
        const int64_t n = 256 * supers[bi], n_out = 3;
        const size_t ldx = fcpu_xrow_bytes(FCPU_XQK, n);
        const uint64_t rb = gg_row_bytes(GG_Q6_K, (uint64_t)n);
        void *w = mk_weight(&s, GG_Q6_K, n, n_out);
        uint8_t *xq = malloc(ldx * FCPU_NR8);
        float *x = rnd(&s, n * FCPU_NR8, 1), *wf = malloc(sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++)
            x[5 * n + i] *= 1000; /* a large-magnitude row */
        for (int r = 0; r < FCPU_NR8; r++)
            k->quant_qk(x + r * n, n, xq + (size_t)r * ldx);
        for (int64_t o = 0; o < n_out; o++) {
            const uint8_t *wo = (const uint8_t *)w + rb * (uint64_t)o;
            fq_dequantize_row(GG_Q6_K, wo, wf, n);
            for (int nr = 1; nr <= FCPU_NR8; nr++) {
                float got[FCPU_NR8];
                for (int r = 0; r < FCPU_NR8; r++)
                    got[r] = NAN;
                k->dot8[GG_Q6_K](n, wo, xq, ldx, nr, got);
                for (int r = 0; r < FCPU_NR8; r++) {
                    if (r >= nr) {
                        CHECKM(isnan(got[r]), "%s: dot8 Q6_K wrote past row %d", k->name, nr);
                        continue;
                    }
                    const uint8_t *row = xq + (size_t)r * ldx;
                    float want;
                    ref->dot[GG_Q6_K](n, wo, row, ldx, 1, &want);
                    const int8_t *q = fcpu_x_qs(row);
                    const float *d = fcpu_xqk_d(row, n);
                    double mag = 0;
                    for (int64_t i = 0; i < n; i++)
                        mag += fabs((double)wf[i] * q[i] * d[i / 256]);
                    CHECKM(fabs((double)got[r] - want) <= 1e-5 * mag + 1e-30,
                           "%s Q6_K n %lld out %lld rows %d row %d: %.9g vs %.9g (|terms| %.3g)",
                           k->name, (long long)n, (long long)o, nr, r, (double)got[r],
                           (double)want, mag);
                }
            }
        }
        free(w); free(xq); free(x); free(wf);
    }
}
END_TEST

/* Q4_K and Q5_K, every table: the scalar per-row dot is the dequantized weights times the
 * activations' codes (fq_dot_ref, fp64), and each table's dot (1..4 rows), dot4 (four
 * weight rows, decode) and dot8 (1..8 rows on its own XQKT form) give what the scalar dot
 * gives on the same codes (exact integer sums; only the float order differs), for 1, 2, 15,
 * 17 and 33 super-blocks.  Weights quantized from random floats (Q5_K's fifth bits set about
 * half the time) and, in the last of the four rows, every code 31 or 0 / 16 alternating, so
 * the fifth bits meet both the largest and the zero codes. */
START_TEST(test_kmin_kernels)
{
    const fcpu_kern_t *k = fcpu_kernels(_i), *ref = fcpu_kernels(FCPU_ISA_SCALAR);
    if (!k)
        return;
    static const int types[] = {GG_Q4_K, GG_Q5_K};
    static const int64_t supers[] = {1, 2, 15, 17, 33};
    uint64_t s = 2300 + (uint64_t)_i;
    int tested4 = 0, tested8 = 0;
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        const int type = types[t];
        CHECK(k->dot[type] != NULL && k->xform[type] == FCPU_XQK);
        for (size_t bi = 0; bi < FD_ARRAY_LEN(supers); bi++) {
            const int64_t n = 256 * supers[bi], n_out = 4;
            const size_t ldx = fcpu_xrow_bytes(FCPU_XQK, n);
            const uint64_t rb = gg_row_bytes(type, (uint64_t)n);
            uint8_t *w = mk_weight(&s, type, n, n_out);
            if (type == GG_Q5_K) /* row 3: codes 31 and 0 / 16, the nibble 15 or 0 */
                for (int64_t b = 0; b < n / 256; b++) {
                    fq_block_q5_K *blk = (fq_block_q5_K *)(void *)(w + 3 * rb) + b;
                    memset(blk->qs, b % 2 ? 0xff : 0x00, sizeof(blk->qs));
                    memset(blk->qh, b % 2 ? 0xff : 0x55, sizeof(blk->qh));
                }
            uint8_t *xq = malloc(ldx * FCPU_NR8), *xt = malloc(ldx * FCPU_NR8);
            float *x = rnd(&s, n * FCPU_NR8, 1), *wf = malloc(sizeof(float) * (size_t)n);
            float *xd = malloc(sizeof(float) * (size_t)n);
            for (int64_t i = 0; i < n; i++)
                x[2 * n + i] *= 1000; /* a large-magnitude row */
            for (int r = 0; r < FCPU_NR8; r++) {
                k->quant_qk(x + r * n, n, xq + (size_t)r * ldx);
                if (k->dot8[type])
                    k->quant_qkt(x + r * n, n, xt + (size_t)r * ldx);
            }
            double mag[4][FCPU_NR8];
            float want[4][FCPU_NR8];
            for (int64_t o = 0; o < n_out; o++) {
                const uint8_t *wo = w + rb * (uint64_t)o;
                fq_dequantize_row(type, wo, wf, n);
                for (int r = 0; r < FCPU_NR8; r++) {
                    const uint8_t *row = xq + (size_t)r * ldx;
                    const int8_t *q = fcpu_x_qs(row);
                    const float *d = fcpu_xqk_d(row, n);
                    mag[o][r] = 0;
                    for (int64_t i = 0; i < n; i++) {
                        xd[i] = (float)q[i] * d[i / 256];
                        mag[o][r] += fabs((double)wf[i] * xd[i]);
                    }
                    ref->dot[type](n, wo, row, ldx, 1, &want[o][r]);
                    double oracle = fq_dot_ref(type, wo, xd, n);
                    CHECKM(fabs(want[o][r] - oracle) <= 1e-5 * mag[o][r] + 1e-30,
                           "scalar %s n %lld out %lld row %d: %.9g vs dequantized %.9g",
                           gg_type_name(type), (long long)n, (long long)o, r,
                           (double)want[o][r], oracle);
                }
                for (int nr = 1; nr <= FCPU_NR8; nr++)
                    for (int b8 = 0; b8 < 2; b8++) { /* dot on XQK rows, dot8 on XQKT rows */
                        fcpu_dot_fn f = b8 ? k->dot8[type] : k->dot[type];
                        if (!f || (!b8 && nr > FCPU_NR))
                            continue;
                        float got[FCPU_NR8];
                        for (int r = 0; r < FCPU_NR8; r++)
                            got[r] = NAN;
                        f(n, wo, b8 ? xt : xq, ldx, nr, got);
                        for (int r = 0; r < FCPU_NR8; r++)
                            CHECKM(r < nr ? fabs((double)got[r] - want[o][r]) <= 1e-5 * mag[o][r] + 1e-30 : isnan(got[r]),
                                   "%s %s %s n %lld out %lld rows %d row %d: %.9g vs %.9g",
                                   k->name, b8 ? "dot8" : "dot", gg_type_name(type), (long long)n,
                                   (long long)o, nr, r, (double)got[r], (double)want[o][r]);
                        tested8 += b8;
                    }
            }
            if (k->dot4[type]) /* the four weight rows against each activation row */
                for (int r = 0; r < FCPU_NR8; r++) {
                    float got[4];
                    k->dot4[type](n, w, rb, xq + (size_t)r * ldx, got);
                    for (int64_t o = 0; o < n_out; o++)
                        CHECKM(fabs((double)got[o] - want[o][r]) <= 1e-5 * mag[o][r] + 1e-30,
                               "%s dot4 %s n %lld out %lld row %d: %.9g vs %.9g", k->name,
                               gg_type_name(type), (long long)n, (long long)o, r,
                               (double)got[o], (double)want[o][r]);
                    tested4++;
                }
            free(w); free(xq); free(xt); free(x); free(wf); free(xd);
        }
    }
    if (_i != FCPU_ISA_SCALAR) /* the SIMD tables decode four rows at a time */
        CHECK(tested4 == 2 * 5 * FCPU_NR8);
    if (_i == FCPU_ISA_AVX512) /* and the VNNI one has the batch kernels */
        CHECK(tested8 == 2 * 5 * 4 * FCPU_NR8);
}
END_TEST

/* generic=1 takes the quantized weights off their int8 kernels: its products are the
 * reference's (dequantized weights, float activations) to float rounding, where the default
 * backend's int8 activations put them measurably further off. */
START_TEST(test_generic_option)
{
    static const int types[] = {GG_Q4_K, GG_Q3_K, GG_Q8_0};
    uint64_t s = 77;
    const char *gopt[] = {"generic=1", NULL};
    fb_config_t gc = {.threads = 1, .options = gopt}, fc = {.threads = 1};
    fb_backend_t *bg = NULL, *bf = NULL;
    char err[160];
    ck_assert_int_eq(fb_create("cpu", &gc, &bg, err, sizeof(err)), 0);
    ck_assert_int_eq(fb_create("cpu", &fc, &bf, err, sizeof(err)), 0);
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        const int64_t n_in = 512, n_out = 9, n_rows = 3;
        fb_weight_t wg = {.type = types[t], .n_in = n_in, .n_out = n_out,
                          .src = mk_weight(&s, types[t], n_in, n_out)}, wf = wg;
        ck_assert_int_eq(fb_weight_prepare(bg, &wg), 0);
        ck_assert_int_eq(fb_weight_prepare(bf, &wf), 0);
        float *x = rnd(&s, n_rows * n_in, 1), yg[27], yf[27], yr[27];
        ck_assert_int_eq(fb_matmul(bg, &wg, x, n_rows, yg, NULL), 0);
        ck_assert_int_eq(fb_matmul(bf, &wf, x, n_rows, yf, NULL), 0);
        ck_assert_int_eq(fcpu_ref_matmul(&wg, x, n_rows, yr, NULL), 0);
        double eg = 0, ef = 0;
        for (int i = 0; i < n_rows * n_out; i++) {
            eg = fmax(eg, fabs((double)yg[i] - yr[i]));
            ef = fmax(ef, fabs((double)yf[i] - yr[i]));
            CHECK(isfinite(yg[i]) && isfinite(yf[i]));
        }
        CHECKM(eg < 1e-4 && ef > 10 * eg, "%s: generic off by %g, int8 path by %g",
               gg_type_name(types[t]), eg, ef);
        fb_weight_release(bg, &wg);
        fb_weight_release(bf, &wf);
        free((void *)wg.src);
        free(x);
    }
    const char *bad[] = {"generic=2", NULL};
    fb_config_t bc = {.threads = 1, .options = bad};
    fb_backend_t *bb = NULL;
    char msg[512];
    ck_assert_int_eq(fb_create("cpu", &bc, &bb, msg, sizeof(msg)), FD_ECONFIG);
    ck_assert_ptr_nonnull(strstr(msg, "generic=0|1"));
    fb_destroy(bg);
    fb_destroy(bf);
}
END_TEST

/* Q2_K and Q3_K, every table this CPU has: the scalar per-row dot equals the fp64 dot of the
 * dequantized weights (fq_dot_ref) with the activations' codes, and each table's dot (1..4
 * rows), dot4 (four weight rows, at two offsets) and dot8 (1..8 rows on its XQK form) equal
 * both the scalar dot and that fp64 dot, finite, writing no row past the ones asked.  Super-
 * block counts 1, 2, 3, 7 and 17.  Six weight rows: quantized from random floats (centred,
 * and shifted so Q2_K's mins matter); random bytes with random-sign d and dmin (negative
 * mins); every code the largest (Q2_K 3, Q3_K 7: the high bit set) with the largest scales
 * and mins and d, dmin at fp16's largest (Q2_K's dmin negative) in even super-blocks, every
 * code the smallest (Q3_K -4) with the most negative scales in odd ones; d = 0 with
 * dmin != 0 and dmin = 0 with d != 0 alternating; and random bytes again.  Activation rows:
 * random, one times 1000, one all zero, one all +1 (every code 127, the largest sums of 16)
 * and one +-1.  The bound is 1e-5 of the sum of the terms' magnitudes (Q2_K's d sc q and
 * dmin m apart: the kernels subtract the two sums). */
static uint16_t k23_f16(uint64_t *s, int signed_) /* |h| in 2^-8 .. 2^3 */
{
    uint16_t h = (uint16_t)(((7 + tu_rand64(s) % 5) << 10) | (tu_rand64(s) & 1023));
    return signed_ && tu_rand64(s) % 2 ? (uint16_t)(h | 0x8000) : h;
}

START_TEST(test_k23_kernels)
{
    const fcpu_kern_t *k = fcpu_kernels(_i), *ref = fcpu_kernels(FCPU_ISA_SCALAR);
    if (!k)
        return;
    static const int types[] = {GG_Q2_K, GG_Q3_K};
    static const int64_t supers[] = {1, 2, 3, 7, 17};
    enum { NW = 6 };
    uint64_t s = 2700 + (uint64_t)_i;
    int tested = 0, tested4 = 0, tested8 = 0;
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        const int type = types[t];
        const bool q3 = type == GG_Q3_K;
        CHECK(ref->dot[type] != NULL && ref->xform[type] == FCPU_XQK);
        CHECK(k->dot[type] != NULL && k->xform[type] == FCPU_XQK);
        if (_i != FCPU_ISA_SCALAR) /* the SIMD tables: decode four rows, batches of 8 */
            CHECK(k->dot4[type] != NULL && k->dot8[type] != NULL && k->xform8[type] == FCPU_XQK);
        for (size_t bi = 0; bi < FD_ARRAY_LEN(supers); bi++) {
            const int64_t n = 256 * supers[bi], nb = supers[bi];
            const size_t ldx = fcpu_xrow_bytes(FCPU_XQK, n);
            const uint64_t rb = gg_row_bytes(type, (uint64_t)n);
            uint8_t *w = malloc(rb * NW);
            float *wf = rnd(&s, n * NW, 1);
            for (int64_t i = 0; i < n; i++)
                wf[n + i] += 0.7f;
            for (int o = 0; o < 2; o++)
                ck_assert_int_eq(fq_quantize_row(type, wf + o * n, w + rb * (uint64_t)o, n), 0);
            for (uint64_t i = 2 * rb; i < NW * rb; i++)
                w[i] = (uint8_t)tu_rand64(&s);
            for (int o = 2; o < NW; o++)
                for (int64_t b = 0; b < nb; b++) {
                    uint8_t *blk = w + rb * (uint64_t)o + (size_t)b * (q3 ? sizeof(fq_block_q3_K) : sizeof(fq_block_q2_K));
                    fq_block_q2_K *b2 = (fq_block_q2_K *)(void *)blk;
                    fq_block_q3_K *b3 = (fq_block_q3_K *)(void *)blk;
                    uint16_t d = k23_f16(&s, 1), dmin = k23_f16(&s, 1);
                    if (o == 3) { /* the extremes */
                        const bool hi = b % 2 == 0;
                        d = hi ? 0x7bff : 0x3c00;
                        dmin = hi ? 0xfbff : 0x3c00;
                        if (q3) {
                            memset(b3->qs, hi ? 0xff : 0x00, sizeof(b3->qs));
                            memset(b3->hmask, hi ? 0xff : 0x00, sizeof(b3->hmask));
                            memset(b3->scales, hi ? 0xff : 0x00, sizeof(b3->scales)); /* 31, -32 */
                        } else {
                            memset(b2->qs, hi ? 0xff : 0x00, sizeof(b2->qs));
                            memset(b2->scales, hi ? 0xff : 0xf0, sizeof(b2->scales));
                        }
                    }
                    if (o == 4) { /* d 0 (dmin not), dmin 0 (d not) */
                        if (b % 2 == 0)
                            d = 0;
                        else
                            dmin = 0;
                    }
                    if (q3) {
                        memcpy(&b3->d, &d, 2);
                    } else {
                        memcpy(&b2->d, &d, 2);
                        memcpy(&b2->dmin, &dmin, 2);
                    }
                }
            uint8_t *xq = malloc(ldx * FCPU_NR8);
            float *x = rnd(&s, n * FCPU_NR8, 1), *xd = malloc(sizeof(float) * (size_t)n);
            for (int64_t i = 0; i < n; i++) {
                x[2 * n + i] *= 1000;
                x[5 * n + i] = 0;
                x[6 * n + i] = 1;
                x[7 * n + i] = tu_rand64(&s) % 2 ? 1.f : -1.f;
            }
            for (int r = 0; r < FCPU_NR8; r++)
                k->quant_qk(x + r * n, n, xq + (size_t)r * ldx);
            double mag[NW][FCPU_NR8], oracle[NW][FCPU_NR8];
            float want[NW][FCPU_NR8];
            for (int o = 0; o < NW; o++) {
                const uint8_t *wo = w + rb * (uint64_t)o;
                ck_assert_int_eq(fq_dequantize_row(type, wo, wf, n), 0);
                for (int r = 0; r < FCPU_NR8; r++) {
                    const uint8_t *row = xq + (size_t)r * ldx;
                    const int8_t *q = fcpu_x_qs(row);
                    const float *d = fcpu_xqk_d(row, n);
                    mag[o][r] = 0;
                    for (int64_t i = 0; i < n; i++) {
                        xd[i] = (float)q[i] * d[i / 256];
                        double m = fabs((double)wf[i]);
                        if (!q3) { /* d sc q and dmin m apart: |w| + 2 |dmin m| */
                            const fq_block_q2_K *b2 = (const fq_block_q2_K *)(const void *)wo + i / 256;
                            m += 2 * fabs((double)fq_f16_to_f32(b2->dmin) * (b2->scales[i % 256 / 16] >> 4));
                        }
                        mag[o][r] += m * fabs((double)xd[i]);
                    }
                    CHECK(isfinite(mag[o][r]));
                    oracle[o][r] = fq_dot_ref(type, wo, xd, n);
                    ref->dot[type](n, wo, row, ldx, 1, &want[o][r]);
                    CHECKM(isfinite(want[o][r]) && fabs(want[o][r] - oracle[o][r]) <= 1e-5 * mag[o][r] + 1e-30,
                           "scalar %s n %lld out %d row %d: %.9g vs dequantized %.9g",
                           gg_type_name(type), (long long)n, o, r, (double)want[o][r], oracle[o][r]);
                }
                for (int nr = 1; nr <= FCPU_NR8; nr++)
                    for (int b8 = 0; b8 < 2; b8++) {
                        fcpu_dot_fn f = b8 ? k->dot8[type] : k->dot[type];
                        if (!f || (!b8 && nr > FCPU_NR))
                            continue;
                        float got[FCPU_NR8];
                        for (int r = 0; r < FCPU_NR8; r++)
                            got[r] = NAN;
                        f(n, wo, xq, ldx, nr, got);
                        for (int r = 0; r < FCPU_NR8; r++) {
                            if (r >= nr) {
                                CHECKM(isnan(got[r]), "%s %s %s: wrote past row %d", k->name,
                                       b8 ? "dot8" : "dot", gg_type_name(type), nr);
                                continue;
                            }
                            CHECKM(isfinite(got[r]) &&
                                   fabs((double)got[r] - want[o][r]) <= 1e-5 * mag[o][r] + 1e-30 &&
                                   fabs((double)got[r] - oracle[o][r]) <= 1e-5 * mag[o][r] + 1e-30,
                                   "%s %s %s n %lld out %d rows %d row %d: %.9g vs scalar %.9g, fp64 %.9g",
                                   k->name, b8 ? "dot8" : "dot", gg_type_name(type), (long long)n,
                                   o, nr, r, (double)got[r], (double)want[o][r], oracle[o][r]);
                        }
                        tested += !b8;
                        tested8 += b8;
                    }
            }
            if (k->dot4[type]) /* rows 0..3 and 2..5 against each activation row */
                for (int o0 = 0; o0 <= 2; o0 += 2)
                    for (int r = 0; r < FCPU_NR8; r++) {
                        float got[4];
                        k->dot4[type](n, w + rb * (uint64_t)o0, rb, xq + (size_t)r * ldx, got);
                        for (int j = 0; j < 4; j++) {
                            const int o = o0 + j;
                            CHECKM(isfinite(got[j]) &&
                                   fabs((double)got[j] - want[o][r]) <= 1e-5 * mag[o][r] + 1e-30 &&
                                   fabs((double)got[j] - oracle[o][r]) <= 1e-5 * mag[o][r] + 1e-30,
                                   "%s dot4 %s n %lld out %d row %d: %.9g vs scalar %.9g, fp64 %.9g",
                                   k->name, gg_type_name(type), (long long)n, o, r, (double)got[j],
                                   (double)want[o][r], oracle[o][r]);
                        }
                        tested4++;
                    }
            free(w); free(wf); free(xq); free(x); free(xd);
        }
    }
    CHECK(tested == 2 * 5 * NW * FCPU_NR);
    if (_i != FCPU_ISA_SCALAR)
        CHECK(tested4 == 2 * 5 * 2 * FCPU_NR8 && tested8 == 2 * 5 * NW * FCPU_NR8);
}
END_TEST

/* Q4_0, Q4_1, Q5_0 and Q5_1 (the legacy 32-element types): on every table, the scalar
 * per-row dot equals fq_dot_ref of the dequantized activation codes (fp64), and each table's
 * dot (1..4 rows) and dot4 (four weight rows), on the table's own activation form (XQ32, or
 * XQ32I for Q4_0 where the table says so: the same codes), and, where present, dot8 (1..8
 * XQ32 rows; Q4_0's transposed dot8 has its own test) equal the scalar one within float
 * rounding of the sum of |terms|, and the fp64 dot too, writing no row past the ones asked.
 * Block counts 1, 3, 8, 9, 17 and 65: rows with no full group of 8, groups only, and groups
 * with 1..7 blocks after them (XQ32I: a lone last block).  Weights quantized from random
 * floats (shifted, so the mins are not near 0); in the third of the four rows the scales
 * (and mins) at their ends, fp16 65504 (min -65504) in even blocks and 2^-24 (the smallest
 * subnormal) in odd ones, and in the last row every code the largest (nibble 15, fifth bit
 * set) in even blocks and 0 in odd ones. */
START_TEST(test_legacy_kernels)
{
    const fcpu_kern_t *k = fcpu_kernels(_i), *ref = fcpu_kernels(FCPU_ISA_SCALAR);
    if (!k)
        return;
    static const int types[] = {GG_Q4_0, GG_Q4_1, GG_Q5_0, GG_Q5_1};
    static const int64_t blocks[] = {1, 3, 8, 9, 17, 65};
    uint64_t s = 2500 + (uint64_t)_i;
    int tested = 0, tested4 = 0, tested8 = 0, n4 = 0, n8 = 0;
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        const int type = types[t];
        const size_t bb = (size_t)gg_block_bytes(type);
        const int form = k->xform[type];
        CHECK(k->dot[type] != NULL && ref->dot[type] != NULL && ref->xform[type] == FCPU_XQ32);
        CHECK(form == FCPU_XQ32 || (type == GG_Q4_0 && form == FCPU_XQ32I));
        const bool d8 = k->dot8[type] && k->xform8[type] == FCPU_XQ32;
        n4 += k->dot4[type] != NULL;
        n8 += d8;
        for (size_t bi = 0; bi < FD_ARRAY_LEN(blocks); bi++) {
            const int64_t n = 32 * blocks[bi], n_out = 4;
            const size_t ldx = fcpu_xrow_bytes(FCPU_XQ32, n);
            const uint64_t rb = gg_row_bytes(type, (uint64_t)n);
            uint8_t *w = malloc(rb * (uint64_t)n_out);
            float *wf = rnd(&s, n * n_out, 1);
            for (int64_t i = 0; i < n * n_out; i++)
                wf[i] += 0.5f;
            for (int64_t o = 0; o < n_out; o++)
                ck_assert_int_eq(fq_quantize_row(type, wf + o * n, w + rb * (uint64_t)o, n), 0);
            for (int64_t b = 0; b < n / 32; b++) {
                uint8_t *blk = w + 2 * rb + (size_t)b * bb; /* row 2: the extreme scales */
                const uint16_t d = b % 2 ? 0x0001 : 0x7bff, m = b % 2 ? 0x0001 : 0xfbff;
                memcpy(blk, &d, 2);
                if (type == GG_Q4_1 || type == GG_Q5_1)
                    memcpy(blk + 2, &m, 2);
                blk = w + 3 * rb + (size_t)b * bb; /* row 3: the extreme codes */
                memset(blk + bb - 16, b % 2 ? 0x00 : 0xff, 16);
                if (type == GG_Q5_0 || type == GG_Q5_1)
                    memset(blk + bb - 20, b % 2 ? 0x00 : 0xff, 4);
            }
            uint8_t *xq = malloc(ldx * FCPU_NR8), *xt = malloc(ldx * FCPU_NR8);
            uint8_t *xk = malloc(ldx * FCPU_NR8);
            float *x = rnd(&s, n * FCPU_NR8, 1), *xd = malloc(sizeof(float) * (size_t)n);
            for (int64_t i = 0; i < n; i++)
                x[5 * n + i] *= 1000; /* a large-magnitude row */
            for (int r = 0; r < FCPU_NR8; r++) {
                k->quant_q32(x + r * n, n, xq + (size_t)r * ldx);
                /* the table's form for dot and dot4, XQ32 rows for dot8 */
                (form == FCPU_XQ32I ? k->quant_q32i : k->quant_q32)(x + r * n, n, xk + (size_t)r * ldx);
                if (d8)
                    k->quant_q32(x + r * n, n, xt + (size_t)r * ldx);
            }
            double mag[4][FCPU_NR8], exact[4][FCPU_NR8];
            float want[4][FCPU_NR8];
            for (int64_t o = 0; o < n_out; o++) {
                const uint8_t *wo = w + rb * (uint64_t)o;
                fq_dequantize_row(type, wo, wf, n);
                for (int r = 0; r < FCPU_NR8; r++) {
                    const uint8_t *row = xq + (size_t)r * ldx;
                    const int8_t *q = fcpu_x_qs(row);
                    const float *d = fcpu_xq32_d(row, n);
                    mag[o][r] = 0;
                    for (int64_t i = 0; i < n; i++) {
                        xd[i] = (float)q[i] * d[i / 32];
                        mag[o][r] += fabs((double)wf[i] * xd[i]);
                    }
                    ref->dot[type](n, wo, row, ldx, 1, &want[o][r]);
                    exact[o][r] = fq_dot_ref(type, wo, xd, n);
                    CHECKM(fabs(want[o][r] - exact[o][r]) <= 1e-5 * mag[o][r] + 1e-30,
                           "scalar %s n %lld out %lld row %d: %.9g vs dequantized %.9g",
                           gg_type_name(type), (long long)n, (long long)o, r,
                           (double)want[o][r], exact[o][r]);
                }
                for (int nr = 1; nr <= FCPU_NR8; nr++)
                    for (int b8 = 0; b8 < 2; b8++) { /* dot on the table's rows, dot8 on XQ32 rows */
                        fcpu_dot_fn f = b8 ? (d8 ? k->dot8[type] : NULL) : k->dot[type];
                        if (!f || (!b8 && nr > FCPU_NR))
                            continue;
                        float got[FCPU_NR8];
                        for (int r = 0; r < FCPU_NR8; r++)
                            got[r] = NAN;
                        f(n, wo, b8 ? xt : xk, ldx, nr, got);
                        for (int r = 0; r < FCPU_NR8; r++) {
                            const double tol = 1e-5 * mag[o][r] + 1e-30;
                            CHECKM(r < nr ? fabs((double)got[r] - want[o][r]) <= tol &&
                                                fabs((double)got[r] - exact[o][r]) <= tol
                                          : isnan(got[r]),
                                   "%s %s %s n %lld out %lld rows %d row %d: %.9g vs %.9g, fp64 %.9g",
                                   k->name, b8 ? "dot8" : "dot", gg_type_name(type), (long long)n,
                                   (long long)o, nr, r, (double)got[r], (double)want[o][r],
                                   exact[o][r]);
                        }
                        tested += !b8;
                        tested8 += b8;
                    }
            }
            if (k->dot4[type]) /* the four weight rows against each activation row */
                for (int r = 0; r < FCPU_NR8; r++) {
                    float got[4];
                    k->dot4[type](n, w, rb, xk + (size_t)r * ldx, got);
                    for (int64_t o = 0; o < n_out; o++) {
                        const double tol = 1e-5 * mag[o][r] + 1e-30;
                        CHECKM(fabs((double)got[o] - want[o][r]) <= tol &&
                                   fabs((double)got[o] - exact[o][r]) <= tol,
                               "%s dot4 %s n %lld out %lld row %d: %.9g vs %.9g, fp64 %.9g",
                               k->name, gg_type_name(type), (long long)n, (long long)o, r,
                               (double)got[o], (double)want[o][r], exact[o][r]);
                    }
                    tested4++;
                }
            free(w); free(wf); free(xq); free(xt); free(xk); free(x); free(xd);
        }
    }
    CHECK(tested == 4 * 6 * 4 * FCPU_NR);
    CHECK(tested4 == n4 * 6 * FCPU_NR8 && tested8 == n8 * 6 * 4 * FCPU_NR8);
    if (_i != FCPU_ISA_SCALAR) /* the SIMD tables decode four rows at a time (Q4_0 too), batch 8 */
        CHECK(n4 == 4 && n8 >= 3);
}
END_TEST

/* IQ4_NL, IQ4_XS and MXFP4's value in fp64, from the block layout of quants.h (not from
 * fq_dequantize_row, whose floats overflow for MXFP4's largest exponents): element i of a
 * row of n. */
static double table_value(int type, const uint8_t *row, int64_t i)
{
    const int e = (int)(i % 32), sh = e < 16 ? 0 : 4;
    if (type == GG_IQ4_XS) {
        const fq_block_iq4_xs *b = (const fq_block_iq4_xs *)(const void *)row + i / 256;
        const int s = (int)(i % 256) / 32;
        const int ls = (((b->scales_l[s / 2] >> (4 * (s % 2))) & 15) | (((b->scales_h >> (2 * s)) & 3) << 4)) - 32;
        const int c = (b->qs[16 * s + e % 16] >> sh) & 15;
        return (double)fq_f16_to_f32(b->d) * ls * fq_kvalues_iq4nl[c];
    }
    if (type == GG_MXFP4) {
        const fq_block_mxfp4 *b = (const fq_block_mxfp4 *)(const void *)row + i / 32;
        return ldexp(fq_kvalues_mxfp4[(b->qs[e % 16] >> sh) & 15], b->e - 128);
    }
    const fq_block_iq4_nl *b = (const fq_block_iq4_nl *)(const void *)row + i / 32;
    return (double)fq_f16_to_f32(b->d) * fq_kvalues_iq4nl[(b->qs[e % 16] >> sh) & 15];
}

/* Rows 2 and 3 of a table-type weight: the scales at their ends.  IQ4_NL: fp16 d 65504 and
 * 2^-24 (the smallest subnormal) alternating by block; IQ4_XS: the 6-bit sub-block scales
 * 0 and 63 (ls -32 and 31), alternating by sub-block in row 2 and by super-block in row 3
 * (whose codes are then all 0 or all 15: weights -127 and 113); MXFP4: the E8M0 exponents
 * 0..3 in row 2 (scales 2^-128..2^-125, subnormal to normal) and 252..255 (2^124..2^127)
 * in row 3. */
static void table_extremes(int type, uint8_t *w, uint64_t rb, int64_t n)
{
    for (int row = 2; row < 4; row++)
        for (int64_t b = 0; b < n / gg_block_elems(type); b++) {
            uint8_t *blk = w + rb * (uint64_t)row + (uint64_t)b * (uint64_t)gg_block_bytes(type);
            if (type == GG_IQ4_NL) {
                uint16_t d = b % 2 ? 0x0001 : 0x7bff;
                memcpy(blk, &d, 2);
            } else if (type == GG_MXFP4) {
                blk[0] = (uint8_t)((row == 2 ? 0 : 252) + b % 4);
            } else {
                fq_block_iq4_xs *x = (fq_block_iq4_xs *)(void *)blk;
                if (row == 2) { /* raw scale 0 in even sub-blocks, 63 in odd ones */
                    memset(x->scales_l, 0xf0, 4);
                    x->scales_h = 0xcccc;
                } else {
                    memset(x->scales_l, b % 2 ? 0xff : 0x00, 4);
                    x->scales_h = b % 2 ? 0xffff : 0x0000;
                    memset(x->qs, b % 2 ? 0xff : 0x00, sizeof(x->qs));
                }
            }
        }
}

/* IQ4_NL, IQ4_XS and MXFP4, every table: the scalar per-row dot, and each table's dot
 * (1..4 rows), dot8 (1..8 rows) and dot4 (four weight rows against one), against the fp64
 * dot of the weights' values (table_value) with the activations' dequantized codes, and
 * against the scalar dot (exact integer sums: only the float order differs), within float
 * rounding of the sum of |terms|, finite, writing no row past the ones asked.  Block
 * counts 1, 3, 8, 9, 17 and 65 (rows without a full group of 8, groups only, groups and
 * 1..7 more); IQ4_XS 1, 2, 3 and 5 super-blocks.  Weights quantized from random floats,
 * rows 2 and 3 with extreme scales (table_extremes); activation row 5 scaled by 2^100 and
 * row 6 by 2^-100, so that MXFP4's smallest and largest exponents meet products in float
 * range (pairs whose sum of |terms| passes 1e37 are out of float range and skipped). */
START_TEST(test_table_kernels)
{
    const fcpu_kern_t *k = fcpu_kernels(_i), *ref = fcpu_kernels(FCPU_ISA_SCALAR);
    if (!k)
        return;
    static const int types[] = {GG_IQ4_NL, GG_IQ4_XS, GG_MXFP4};
    static const int64_t blocks[] = {1, 3, 8, 9, 17, 65}, supers[] = {1, 2, 3, 5};
    uint64_t s = 2600 + (uint64_t)_i;
    int tested = 0, tested4 = 0, tested8 = 0, extreme = 0;
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        const int type = types[t];
        const bool xs = type == GG_IQ4_XS;
        const int form = xs ? FCPU_XQK : FCPU_XQ32, blk = xs ? 256 : 32;
        CHECK(k->dot[type] != NULL && k->xform[type] == form);
        CHECK(k->dot4[type] != NULL && k->dot8[type] != NULL && k->xform8[type] == form);
        const size_t nsz = xs ? FD_ARRAY_LEN(supers) : FD_ARRAY_LEN(blocks);
        for (size_t bi = 0; bi < nsz; bi++) {
            const int64_t n = blk * (xs ? supers[bi] : blocks[bi]), n_out = 4;
            const size_t ldx = fcpu_xrow_bytes(form, n);
            const uint64_t rb = gg_row_bytes(type, (uint64_t)n);
            uint8_t *w = mk_weight(&s, type, n, n_out);
            table_extremes(type, w, rb, n);
            uint8_t *xq = malloc(ldx * FCPU_NR8);
            float *x = rnd(&s, n * FCPU_NR8, 1);
            for (int64_t i = 0; i < n; i++) {
                x[5 * n + i] = ldexpf(x[5 * n + i], 100);
                x[6 * n + i] = ldexpf(x[6 * n + i], -100);
            }
            for (int r = 0; r < FCPU_NR8; r++)
                (xs ? k->quant_qk : k->quant_q32)(x + r * n, n, xq + (size_t)r * ldx);
            double want[4][FCPU_NR8], mag[4][FCPU_NR8];
            for (int64_t o = 0; o < n_out; o++)
                for (int r = 0; r < FCPU_NR8; r++) {
                    const uint8_t *row = xq + (size_t)r * ldx;
                    const int8_t *q = fcpu_x_qs(row);
                    const float *d = xs ? fcpu_xqk_d(row, n) : fcpu_xq32_d(row, n);
                    want[o][r] = mag[o][r] = 0;
                    for (int64_t i = 0; i < n; i++) {
                        double p = table_value(type, w + rb * (uint64_t)o, i) * q[i] * d[i / blk];
                        want[o][r] += p;
                        mag[o][r] += fabs(p);
                    }
                }
            /* got[o][r] from each kernel; -1: the scalar dot, 0: dot, 1: dot8, 2: dot4 */
            for (int kind = -1; kind < 3; kind++)
                for (int nr = 1; nr <= (kind == 1 ? FCPU_NR8 : kind == 2 ? 1 : FCPU_NR); nr++) {
                    float got[4][FCPU_NR8];
                    for (int r0 = 0; r0 < FCPU_NR8; r0 += nr) {
                        const int rn = FD_MIN(nr, FCPU_NR8 - r0);
                        const uint8_t *xr = xq + (size_t)r0 * ldx;
                        float g[FCPU_NR8];
                        for (int64_t o = 0; o < n_out; o++) {
                            const uint8_t *wo = w + rb * (uint64_t)o;
                            for (int r = 0; r < FCPU_NR8; r++)
                                g[r] = NAN;
                            if (kind == 2) { /* four weight rows: rows o = 0..3 at once */
                                if (o == 0)
                                    k->dot4[type](n, w, rb, xr, g);
                                else
                                    break;
                                for (int j = 0; j < 4; j++)
                                    got[j][r0] = g[j];
                                continue;
                            }
                            (kind < 0 ? ref->dot[type] : kind ? k->dot8[type] : k->dot[type])(n, wo, xr, ldx, rn, g);
                            for (int r = 0; r < FCPU_NR8; r++)
                                if (r < rn)
                                    got[o][r0 + r] = g[r];
                                else
                                    CHECKM(isnan(g[r]), "%s: kind %d wrote past row %d", k->name, kind, rn);
                        }
                    }
                    for (int64_t o = 0; o < n_out; o++)
                        for (int r = 0; r < FCPU_NR8; r++) {
                            if (mag[o][r] > 1e37) /* out of float range */
                                continue;
                            float rv;
                            ref->dot[type](n, w + rb * (uint64_t)o, xq + (size_t)r * ldx, ldx, 1, &rv);
                            const double tol = 1e-5 * mag[o][r] + 1e-30;
                            CHECKM(isfinite(got[o][r]) && fabs(got[o][r] - want[o][r]) <= tol &&
                                       fabs((double)got[o][r] - rv) <= tol,
                                   "%s kind %d %s n %lld out %lld rows %d row %d: %.9g, fp64 %.9g, scalar %.9g",
                                   k->name, kind, gg_type_name(type), (long long)n, (long long)o, nr, r,
                                   (double)got[o][r], want[o][r], (double)rv);
                            tested += kind == 0;
                            tested8 += kind == 1;
                            tested4 += kind == 2;
                            extreme += o >= 2 && mag[o][r] > 1e-20;
                        }
                }
            free(w); free(xq); free(x);
        }
    }
    /* every pair compared but the out-of-range ones, and the extreme rows not all skipped */
    CHECK(tested > 3 * 4 * FCPU_NR8 && tested8 > tested && tested4 > 0);
    CHECK(extreme > 3 * 4 * 8);
}
END_TEST

/* Every table's dot2x8 (two float-type weight rows against 1..8 activation rows) against the
 * scalar table's per-row dot, on lengths off the vector width (tails) and on. */
START_TEST(test_dot2x8_kernels)
{
    const fcpu_kern_t *k = fcpu_kernels(_i), *ref = fcpu_kernels(FCPU_ISA_SCALAR);
    if (!k)
        return;
    uint64_t s = 2200 + (uint64_t)_i;
    static const int64_t lens[] = {1, 17, 100, 1000};
    static const int types[] = {GG_F32, GG_F16, GG_BF16};
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        int type = types[t];
        if (!k->dot2x8[type])
            continue;
        for (size_t li = 0; li < FD_ARRAY_LEN(lens); li++) {
            const int64_t n = lens[li];
            const uint64_t rb = gg_row_bytes(type, (uint64_t)n);
            void *w = mk_weight(&s, type, n, 2);
            float *x = rnd(&s, n * FCPU_NR8, 1), *wf = malloc(sizeof(float) * (size_t)(2 * n));
            for (int j = 0; j < 2; j++)
                fq_dequantize_row(type, (const uint8_t *)w + rb * (uint64_t)j, wf + j * n, n);
            for (int nr = 1; nr <= FCPU_NR8; nr++) {
                float got[2 * FCPU_NR8];
                for (int i = 0; i < 2 * FCPU_NR8; i++)
                    got[i] = NAN;
                k->dot2x8[type](n, w, (size_t)rb, x, (size_t)n * sizeof(float), nr, got);
                for (int j = 0; j < 2; j++)
                    for (int r = 0; r < FCPU_NR8; r++) {
                        float g = got[j * FCPU_NR8 + r];
                        if (r >= nr) {
                            CHECKM(isnan(g), "%s: dot2x8 wrote past row %d", k->name, nr);
                            continue;
                        }
                        float want;
                        ref->dot[type](n, (const uint8_t *)w + rb * (uint64_t)j, x + r * n, 0, 1, &want);
                        double mag = 0;
                        for (int64_t i = 0; i < n; i++)
                            mag += fabs((double)wf[j * n + i] * x[r * n + i]);
                        CHECKM(fabs((double)g - want) <= 1e-5 * mag + 1e-30,
                               "%s %s n %lld rows %d w %d x %d: %.9g vs %.9g", k->name,
                               gg_type_name(type), (long long)n, nr, j, r, (double)g, (double)want);
                    }
            }
            free(w); free(x); free(wf);
        }
    }
}
END_TEST

/* fb_matmul with every batch size 1..9 and 16 (one full group of 8 rows, one more, two), the types
 * with batch kernels and a float one, against the fp64 definition: the row grouping of the
 * batch path (8 rows per call, then the rest) must not mix up or drop rows.  37 outputs: two
 * groups of 16 weight rows (repack=2's gemm16, decode included) and 5 after them. */
/* Every table's gemmf (blocks of 1..FCPU_FNW float-type weight rows against 1..8 activation
 * rows given in pieces of FCPU_FKB) against a double-precision dot of the dequantized
 * weights and the scalar table's per-row dot, on lengths below, at and across the piece
 * (tails off the vector width), with the pieces of a larger batch (ldp > nr pieces) and
 * outputs ldy apart: nothing outside the nr x nw outputs written. */
START_TEST(test_gemmf_kernels)
{
    const fcpu_kern_t *k = fcpu_kernels(_i), *ref = fcpu_kernels(FCPU_ISA_SCALAR);
    if (!k)
        return;
    uint64_t s = 2250 + (uint64_t)_i;
    static const int64_t lens[] = {1, 13, FCPU_FKB, FCPU_FKB + 9, 3 * FCPU_FKB - 1, 1000};
    static const int nws[] = {1, 2, 3, 4, 5, 7, 11, FCPU_FNW};
    static const int types[] = {GG_F32, GG_F16, GG_BF16};
    int tested = 0;
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        int type = types[t];
        if (!k->gemmf[type])
            continue;
        for (size_t li = 0; li < FD_ARRAY_LEN(lens); li++) {
            const int64_t n = lens[li], np = (n + FCPU_FKB - 1) / FCPU_FKB;
            const uint64_t rb = gg_row_bytes(type, (uint64_t)n) + 8; /* rows not packed (aligned for F32) */
            const int nb = FCPU_NR8 + 3; /* the batch the pieces were cut from */
            uint8_t *w = malloc(rb * FCPU_FNW);
            void *wq = mk_weight(&s, type, n, FCPU_FNW);
            for (int j = 0; j < FCPU_FNW; j++)
                memcpy(w + rb * (uint64_t)j, (uint8_t *)wq + (rb - 8) * (uint64_t)j, rb - 8);
            float *x = rnd(&s, n * nb, 1), *wf = malloc(sizeof(float) * (size_t)(FCPU_FNW * n));
            float *xp = malloc(sizeof(float) * (size_t)(np * nb * FCPU_FKB));
            for (int64_t i = 0; i < np * nb * FCPU_FKB; i++)
                xp[i] = NAN; /* past the end of the last piece: never read */
            for (int64_t p = 0; p < np; p++)
                for (int r = 0; r < nb; r++)
                    memcpy(xp + (p * nb + r) * FCPU_FKB, x + r * n + p * FCPU_FKB,
                           sizeof(float) * (size_t)FD_MIN(FCPU_FKB, n - p * FCPU_FKB));
            for (int j = 0; j < FCPU_FNW; j++)
                fq_dequantize_row(type, w + rb * (uint64_t)j, wf + j * n, n);
            for (size_t wi = 0; wi < FD_ARRAY_LEN(nws); wi++) {
                const int nw = nws[wi];
                for (int nr = 1; nr <= FCPU_NR8; nr++) {
                    const int r0 = nr % 3, ldy = FCPU_FNW + 5; /* rows r0.. of the batch */
                    float y[(FCPU_NR8 + 1) * (FCPU_FNW + 5)];
                    for (size_t i = 0; i < FD_ARRAY_LEN(y); i++)
                        y[i] = NAN;
                    k->gemmf[type](n, w, (size_t)rb, nw, xp + r0 * FCPU_FKB, FCPU_FKB * sizeof(float),
                                   (size_t)nb * FCPU_FKB * sizeof(float), nr, y, (size_t)ldy);
                    for (int r = 0; r <= FCPU_NR8; r++)
                        for (int j = 0; j < ldy; j++) {
                            float g = y[r * ldy + j];
                            if (r >= nr || j >= nw) {
                                CHECKM(isnan(g), "%s: gemmf wrote y[%d][%d] (nr %d nw %d)", k->name, r, j, nr, nw);
                                continue;
                            }
                            const float *xr = x + (r0 + r) * n;
                            double want = 0, mag = 0;
                            for (int64_t i = 0; i < n; i++) {
                                want += (double)wf[j * n + i] * xr[i];
                                mag += fabs((double)wf[j * n + i] * xr[i]);
                            }
                            float sv;
                            ref->dot[type](n, w + rb * (uint64_t)j, xr, 0, 1, &sv);
                            const double tol = 1e-5 * mag + 1e-30;
                            CHECKM(isfinite(g) && fabs((double)g - want) <= tol && fabs((double)g - sv) <= tol,
                                   "%s %s n %lld nw %d nr %d w %d x %d: %.9g, fp64 %.9g, scalar %.9g",
                                   k->name, gg_type_name(type), (long long)n, nw, nr, j, r, (double)g,
                                   want, (double)sv);
                            tested++;
                        }
                }
            }
            free(w); free(wq); free(x); free(wf); free(xp);
        }
    }
    if (_i == FCPU_ISA_AVX2) /* the table the AVX2 machines run: the test must not be empty */
        CHECK(tested > 3 * 6 * 100);
}
END_TEST

START_TEST(test_batch_rows)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    uint64_t s = 2300 + (uint64_t)_i;
    static const int types[] = {GG_Q8_0, GG_Q4_0, GG_F32, GG_F16, GG_BF16, GG_Q4_K, GG_Q6_K,
                                GG_IQ4_NL, GG_IQ4_XS, GG_MXFP4};
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        int type = types[t];
        const int64_t n_in = gg_block_elems(type) == 1 ? 1000 : gg_block_elems(type) == 256 ? 512 : 2080, n_out = 37;
        fb_weight_t w = {.type = type, .n_in = n_in, .n_out = n_out,
                         .src = mk_weight(&s, type, n_in, n_out)};
        ck_assert_int_eq(fb_weight_prepare(be, &w), 0);
        for (int64_t n_rows = 1; n_rows <= 16; n_rows = n_rows == 9 ? 16 : n_rows + 1) {
            float *x = rnd(&s, n_rows * n_in, 1), *y = malloc(sizeof(float) * (size_t)(n_rows * n_out));
            float *ry = malloc(sizeof(float) * (size_t)(n_rows * n_out));
            for (int64_t i = 0; i < n_rows * n_out; i++)
                y[i] = NAN;
            ck_assert_int_eq(fb_matmul(be, &w, x, n_rows, y, NULL), 0);
            ck_assert_int_eq(fcpu_ref_matmul(&w, x, n_rows, ry, NULL), 0);
            double *ryd = malloc(sizeof(double) * (size_t)(n_rows * n_out)), *bound = malloc(sizeof(double) * (size_t)(n_rows * n_out));
            for (int64_t i = 0; i < n_rows * n_out; i++)
                ryd[i] = ry[i];
            fast_bounds(&w, x, n_rows, ryd, NULL, bound);
            for (int64_t i = 0; i < n_rows * n_out; i++)
                CHECKM(fabs((double)y[i] - ryd[i]) <= bound[i],
                       "cfg %d %s rows %lld i %lld: %.9g vs %.9g (bound %.3g)", _i,
                       gg_type_name(type), (long long)n_rows, (long long)i, (double)y[i], ryd[i], bound[i]);
            free(x); free(y); free(ry); free(ryd); free(bound);
        }
        fb_weight_release(be, &w);
        free((void *)w.src);
    }
    fb_destroy(be);
}
END_TEST

START_TEST(test_fast_attention)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    uint64_t s = 900 + (uint64_t)_i;
    static const int shapes[][4] = {/* n_head, n_kv, head_dim, ctx */
                                    {8, 8, 8, 40}, {6, 2, 20, 130}, {4, 1, 64, 300}, {32, 4, 100, 70}};
    for (size_t sh = 0; sh < FD_ARRAY_LEN(shapes); sh++) {
        int nh = shapes[sh][0], nkv = shapes[sh][1], hd = shapes[sh][2], T = shapes[sh][3];
        int nq = sh % 2 ? 1 : 5;
        int64_t ldkv = (int64_t)nkv * hd + 1, ldq = (int64_t)nh * hd, ldo = (int64_t)nh * hd + 3;
        float *k = rnd(&s, T * ldkv, 1), *v = rnd(&s, T * ldkv, 1), *q = rnd(&s, nq * ldq, 3);
        float *o1 = malloc(sizeof(float) * (size_t)((nq + 1) * ldo));
        float *o2 = malloc(sizeof(float) * (size_t)((nq + 1) * ldo));
        int32_t pos[5];
        for (int i = 0; i < nq; i++)
            pos[i] = T - nq + i;
        for (int mode = 0; mode < 6; mode++) {
            /* two sequences: the second sees the first half of the cache; modes 3..5 again
             * with a sliding window of 7 or 33 (Gemma's local layers) and a soft-cap */
            int32_t pos2[1] = {T / 2};
            fb_attn_t a[2] = {
                {.q = q, .ldq = ldq, .k = k, .v = v, .ldkv = ldkv, .out = o1, .ldo = ldo, .n_q = nq,
                 .pos = pos, .n_head = nh, .n_head_kv = nkv, .head_dim = hd, .scale = 1 / sqrtf(hd),
                 .mode = mode % 3, .window = mode < 3 ? 0 : sh % 2 ? 7 : 33,
                 .softcap = mode < 3 ? 0.0f : 3.0f},
            };
            a[1] = a[0];
            a[1].n_q = 1;
            a[1].pos = pos2;
            a[1].out = o1 + nq * ldo;
            ck_assert_int_eq(fb_attention(be, a, 2), 0);
            fb_attn_t r0 = a[0], r1 = a[1];
            r0.out = o2;
            r1.out = o2 + nq * ldo;
            ck_assert_int_eq(fcpu_ref_attention(&r0), 0);
            ck_assert_int_eq(fcpu_ref_attention(&r1), 0);
            /* outputs are convex combinations of v (|v| <= 1): exp's 2e-7, the score dot
             * products (|s| up to ~10, error ~1e-6) and the sums keep |err| under 2e-5 */
            for (int i = 0; i <= nq; i++)
                for (int j = 0; j < nh * hd; j++)
                    CHECKM(fabsf(o1[i * ldo + j] - o2[i * ldo + j]) <= 2e-5f,
                                  "cfg %d shape %zu mode %d: %g vs %g", _i, sh, mode,
                                  (double)o1[i * ldo + j], (double)o2[i * ldo + j]);
        }
        free(k); free(v); free(q); free(o1); free(o2);
    }
    fb_destroy(be);
}
END_TEST

/* Typed KV caches (fb_kv_store + attention): every configuration against the reference
 * (fcpu_ref_attention, rows dequantized as read) on awkward shapes: head_dim 64, 80 (not a
 * whole number of blocks: padded), 128 and 20, GQA groups of 1 to 4, lengths that are no
 * multiple of 32, and every type pair the fast path treats differently. */
START_TEST(test_kv_types)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    uint64_t s = 4200 + (uint64_t)_i;
    static const int shapes[][4] = {/* n_head, n_kv, head_dim, ctx */
                                    {8, 2, 64, 45}, {4, 4, 80, 33}, {8, 2, 128, 70}, {6, 2, 20, 37}};
    static const int types[][2] = {
        {GG_F16, GG_F16},   {GG_BF16, GG_BF16}, {GG_Q8_0, GG_Q8_0}, {GG_Q4_0, GG_Q4_0},
        {GG_Q8_0, GG_F16},  {GG_F32, GG_Q8_0},  {GG_Q4_1, GG_Q5_0}, {GG_Q5_1, GG_F32},
    };
    for (size_t sh = 0; sh < FD_ARRAY_LEN(shapes); sh++) {
        const int nh = shapes[sh][0], nkv = shapes[sh][1], hd = shapes[sh][2], T = shapes[sh][3];
        const int nq = sh % 2 ? 1 : 3, kvd = nkv * hd;
        const int64_t ldsrc = kvd + 5, ldq = (int64_t)nh * hd + 1, ldo = (int64_t)nh * hd + 2;
        float *k = rnd(&s, T * ldsrc, 1), *v = rnd(&s, T * ldsrc, 1), *q = rnd(&s, nq * ldq, 1);
        float *kf = malloc(sizeof(float) * (size_t)T * kvd), *vf = malloc(sizeof(float) * (size_t)T * kvd);
        for (int t = 0; t < T; t++) {
            memcpy(kf + t * kvd, k + t * ldsrc, sizeof(float) * (size_t)kvd);
            memcpy(vf + t * kvd, v + t * ldsrc, sizeof(float) * (size_t)kvd);
        }
        float *o1 = malloc(sizeof(float) * (size_t)(nq * ldo)), *o2 = malloc(sizeof(float) * (size_t)(nq * ldo));
        int32_t pos[3];
        for (int i = 0; i < nq; i++)
            pos[i] = T - nq + i;
        for (size_t ty = 0; ty < FD_ARRAY_LEN(types); ty++) {
            const int tk = types[ty][0], tv = types[ty][1];
            ck_assert_int_eq(fb_kv_check(be, tk, tv, hd), 0);
            size_t rk = fb_kv_row_bytes(tk, nkv, hd), rv = fb_kv_row_bytes(tv, nkv, hd);
            uint8_t *kc = malloc(rk * (size_t)T), *vc = malloc(rv * (size_t)T);
            uint8_t *kr = malloc(rk * (size_t)T), *vr = malloc(rv * (size_t)T);
            /* the write: the backend's store is the reference's, byte for byte */
            ck_assert_int_eq(fb_kv_store(be, kc, tk, k, ldsrc, T, nkv, hd), 0);
            ck_assert_int_eq(fb_kv_store(be, vc, tv, v, ldsrc, T, nkv, hd), 0);
            ck_assert_int_eq(fcpu_ref_kv_store(kr, tk, k, ldsrc, T, nkv, hd), 0);
            ck_assert_int_eq(fcpu_ref_kv_store(vr, tv, v, ldsrc, T, nkv, hd), 0);
            ck_assert(!memcmp(kc, kr, rk * (size_t)T) && !memcmp(vc, vr, rv * (size_t)T));
            /* F32 "typed" rows are the floats without the source stride */
            const void *kd = tk == GG_F32 ? (const void *)kf : kc, *vd = tv == GG_F32 ? (const void *)vf : vc;
            for (int mode = 0; mode < 4; mode++) {
                /* mode 3: MAXSUM with Gemma's sliding window and soft-cap */
                fb_attn_t a = {.q = q, .ldq = ldq, .k_data = kd, .v_data = vd, .ldkv = kvd,
                               .out = o1, .ldo = ldo, .n_q = nq, .pos = pos, .n_head = nh,
                               .n_head_kv = nkv, .head_dim = hd, .scale = 1 / sqrtf(hd),
                               .mode = mode % 3, .type_k = tk, .type_v = tv,
                               .window = mode == 3 ? 9 : 0, .softcap = mode == 3 ? 0.5f : 0};
                if (mode == 3)
                    a.mode = FB_SOFTMAX_MAXSUM;
                ck_assert_int_eq(fb_attention(be, &a, 1), 0);
                fb_attn_t r = a;
                r.out = o2;
                ck_assert_int_eq(fcpu_ref_attention(&r), 0);
                /* as test_fast_attention: the fast path rounds the query and p as the
                 * reference does, only the summation order differs; but a p that the
                 * reference (fp64) and the fast path (fp32) compute a hair apart can round
                 * to neighbouring F16 / BF16 values: one such p (< 1) moves the output by
                 * at most its ulp (2^-11, 2^-8) times |v| <= 1 */
                const float tol = tv == GG_BF16 ? 4e-3f : tv == GG_F16 ? 5e-4f : 3e-5f;
                for (int i = 0; i < nq; i++)
                    for (int j = 0; j < nh * hd; j++)
                        CHECKM(fabsf(o1[i * ldo + j] - o2[i * ldo + j]) <= tol,
                               "cfg %d shape %zu types %s/%s mode %d q %d j %d: %g vs %g", _i, sh,
                               fb_kv_type_name(tk), fb_kv_type_name(tv), mode, i, j,
                               (double)o1[i * ldo + j], (double)o2[i * ldo + j]);
            }
            /* and the typed cache is the float cache, give or take its rounding: Q4 rounds
             * each value by up to half a step of amax / 8 (|x| <= 1: 1/16), the output
             * averages many such errors */
            if (sh == 0 && tk != GG_F32 && tv != GG_F32) {
                fb_attn_t a = {.q = q, .ldq = ldq, .k_data = kd, .v_data = vd, .ldkv = kvd,
                               .out = o1, .ldo = ldo, .n_q = nq, .pos = pos, .n_head = nh,
                               .n_head_kv = nkv, .head_dim = hd, .scale = 1 / sqrtf(hd),
                               .mode = FB_SOFTMAX_MAXSUM, .type_k = tk, .type_v = tv};
                fb_attn_t f = a;
                f.k = kf;
                f.v = vf;
                f.type_k = f.type_v = GG_F32;
                f.out = o2;
                ck_assert_int_eq(fb_attention(be, &a, 1), 0);
                ck_assert_int_eq(fcpu_ref_attention(&f), 0);
                double e = 0, m = 0;
                for (int i = 0; i < nq; i++)
                    for (int j = 0; j < nh * hd; j++) {
                        e = fmax(e, fabs(o1[i * ldo + j] - o2[i * ldo + j]));
                        m = fmax(m, fabs(o2[i * ldo + j]));
                    }
                const double bound = tk == GG_F16 || tk == GG_BF16 ? 1e-2 : 5e-2;
                CHECKM(e < bound && e > 0, "types %s/%s: max error %g against the f32 cache",
                       fb_kv_type_name(tk), fb_kv_type_name(tv), e);
                (void)m;
            }
            free(kc); free(vc); free(kr); free(vr);
        }
        /* bad: no cache type, and a typed K cache with an F32 V cache still needs ldkv */
        fb_attn_t a = {.q = q, .ldq = ldq, .k_data = kf, .v_data = vf, .ldkv = kvd, .out = o1,
                       .ldo = ldo, .n_q = nq, .pos = pos, .n_head = nh, .n_head_kv = nkv,
                       .head_dim = hd, .scale = 1, .mode = 0, .type_k = GG_Q4_K};
        ck_assert_int_eq(fb_attention(be, &a, 1), -EINVAL);
        a.type_k = GG_F16;
        a.ldkv = 1;
        ck_assert_int_eq(fb_attention(be, &a, 1), -EINVAL);
        a.type_v = GG_F16;
        ck_assert_int_eq(fb_attention(be, &a, 1), 0);
        free(k); free(v); free(q); free(kf); free(vf); free(o1); free(o2);
    }
    ck_assert_int_eq(fb_kv_check(be, GG_Q4_K, GG_F16, 64), -EINVAL);
    ck_assert_int_eq(fb_kv_store(be, &s, GG_Q6_K, (float *)&s, 64, 1, 1, 64), -EINVAL);
    fb_destroy(be);
}
END_TEST

/* round_to (the p of P.V over an F16 / BF16 V) of each kernel table equals quants.c's
 * conversions, ties, overflow, denormals and NaN included. */
START_TEST(test_round_kernels)
{
    const fcpu_kern_t *k = fcpu_kernels(_i);
    if (!k)
        return;
    uint64_t s = 77;
    float x[203], y[203];
    for (int i = 0; i < 203; i++)
        x[i] = tu_randf(&s) * (i % 3 ? 1.f : 1e-6f);
    x[0] = 1.f + 1.f / 2048;           /* an f16 tie: rounds to even (1) */
    x[1] = 1.f + 3.f / 2048;           /* the other tie: up */
    x[2] = 70000.f;                    /* past f16's range: inf */
    x[3] = NAN;
    x[4] = 1e-8f;                      /* an f16 denormal */
    x[5] = 1.f + 1.f / 256;            /* a bf16 tie */
    for (int ty = 0; ty < 2; ty++) {
        const int t = ty ? GG_BF16 : GG_F16;
        ck_assert_ptr_nonnull(k->round_to[t]);
        memcpy(y, x, sizeof(x));
        k->round_to[t](y, 203);
        for (int i = 0; i < 203; i++) {
            float w = t == GG_F16 ? fq_f16_to_f32(fq_f32_to_f16(x[i]))
                                  : fq_bf16_to_f32(fq_f32_to_bf16(x[i]));
            CHECKM((isnan(w) && isnan(y[i])) || w == y[i], "%s %s x %g: %g vs %g", k->name,
                   gg_type_name(t), (double)x[i], (double)y[i], (double)w);
        }
    }
    CHECK(!k->round_to[GG_Q8_0]);
}
END_TEST

/* The names and sizes of the cache types (backend.h). */
/* Ring caches (fb_attn_t.ring, a sliding-window layer's): 40 positions written, the last 17
 * kept in a ring at every possible start, 3 query rows with a window of 9 (a span of 11 rows
 * that wraps at 10 of the 17 starts): every configuration and cache type gives what the same
 * backend gives over the whole cache: exactly on the reference, within 2e-5 on the fast path
 * (a wrapped span's P.V is two runs added); the ring's rows outside the span are never read
 * (they hold NaN bytes), and a bad ring is refused. */
START_TEST(test_kv_ring)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    uint64_t s = 4300 + (uint64_t)_i;
    enum { NH = 4, NKV = 2, HD = 64, T = 40, R = 17, NQ = 3, KVD = NKV * HD };
    static const int types[] = { GG_F32, GG_F16, GG_BF16, GG_Q8_0, GG_Q4_0, GG_Q4_1, GG_Q5_0,
                                 GG_Q5_1 };
    float *k = rnd(&s, T * KVD, 1), *v = rnd(&s, T * KVD, 1), *q = rnd(&s, NQ * NH * HD, 1);
    float o1[NQ * NH * HD], o2[NQ * NH * HD];
    int32_t pos[NQ] = { T - 3, T - 2, T - 1 };
    /* the window's rows (29 .. 39) only, positions relative to the first: what a plan passes */
    const int lo = T - 3 - 9 + 1;
    int32_t rp[NQ] = { pos[0] - lo, pos[1] - lo, pos[2] - lo };
    for (size_t ty = 0; ty < FD_ARRAY_LEN(types); ty++) {
        const int t = types[ty];
        const size_t rb = fb_kv_row_bytes(t, NKV, HD);
        uint8_t *kc = malloc(rb * T), *vc = malloc(rb * T), *kr = malloc(rb * R),
                *vr = malloc(rb * R);
        ck_assert_int_eq(fb_kv_store(be, kc, t, k, KVD, T, NKV, HD), 0);
        ck_assert_int_eq(fb_kv_store(be, vc, t, v, KVD, T, NKV, HD), 0);
        for (int rs = 0; rs < R; rs++) {
            /* logical row u at ring row (rs + u) % R, the last R rows written; the rows
             * before the window poisoned */
            for (int u = T - R; u < T; u++) {
                const size_t at = (size_t)((rs + u) % R) * rb;
                if (u < lo) {
                    memset(kr + at, 0xff, rb);
                    memset(vr + at, 0xff, rb);
                } else {
                    memcpy(kr + at, kc + (size_t)u * rb, rb);
                    memcpy(vr + at, vc + (size_t)u * rb, rb);
                }
            }
            for (int mode = 0; mode < 3; mode++) {
                fb_attn_t a = {.q = q, .ldq = NH * HD, .k_data = kc, .v_data = vc, .ldkv = KVD,
                               .out = o1, .ldo = NH * HD, .n_q = NQ, .pos = pos, .n_head = NH,
                               .n_head_kv = NKV, .head_dim = HD, .scale = 0.125f,
                               .mode = mode, .type_k = t, .type_v = t, .window = 9};
                ck_assert_int_eq(fb_attention(be, &a, 1), 0);
                fb_attn_t b = a;
                b.k_data = kr;
                b.v_data = vr;
                b.out = o2;
                b.pos = rp;
                b.ring = R;
                b.ring_start = (rs + lo) % R;
                ck_assert_int_eq(fb_attention(be, &b, 1), 0);
                const float tol = _i == 0 ? 0.0f : 2e-5f;
                for (int j = 0; j < NQ * NH * HD; j++)
                    CHECKM(fabsf(o1[j] - o2[j]) <= tol, "cfg %d %s start %d mode %d j %d: %g "
                           "vs %g", _i, fb_kv_type_name(t), rs, mode, j, (double)o1[j],
                           (double)o2[j]);
                if (ty == 0 && rs == 0 && mode == 0) {
                    b.ring_start = R;
                    ck_assert_int_eq(fb_attention(be, &b, 1), -EINVAL);
                    b.ring_start = 0;
                    b.ring = -1;
                    ck_assert_int_eq(fb_attention(be, &b, 1), -EINVAL);
                    b.ring = 10; /* the last row's position, 10, is no ring row */
                    ck_assert_int_eq(fb_attention(be, &b, 1), -EINVAL);
                }
            }
        }
        free(kc);
        free(vc);
        free(kr);
        free(vr);
    }
    free(k);
    free(v);
    free(q);
    fb_destroy(be);
}
END_TEST

START_TEST(test_kv_type_names)
{
    static const char *const names[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"};
    for (size_t i = 0; i < FD_ARRAY_LEN(names); i++) {
        int t = fb_kv_type_from_name(names[i]);
        ck_assert(fb_kv_type_valid(t));
        ck_assert_str_eq(fb_kv_type_name(t), names[i]);
    }
    ck_assert_int_eq(fb_kv_type_from_name("Q8_0"), GG_Q8_0);
    ck_assert_int_eq(fb_kv_type_from_name("q4_k"), -1);
    ck_assert_int_eq(fb_kv_type_from_name("iq4_nl"), -1);
    ck_assert_int_eq(fb_kv_type_from_name(""), -1);
    ck_assert_int_eq(fb_kv_type_from_name(NULL), -1);
    ck_assert_str_eq(fb_kv_type_name(GG_Q6_K), "?");
    /* head_dim 80: three Q8_0 blocks (34 bytes), 160 F16 bytes; 4 heads */
    ck_assert_uint_eq(fb_kv_head_bytes(GG_Q8_0, 80), 102);
    ck_assert_uint_eq(fb_kv_row_bytes(GG_Q8_0, 4, 80), 408);
    ck_assert_uint_eq(fb_kv_row_bytes(GG_F16, 4, 80), 640);
    ck_assert_uint_eq(fb_kv_row_bytes(GG_F32, 4, 80), 1280);
    ck_assert_uint_eq(fb_kv_row_bytes(GG_Q4_0, 4, 64), 4 * 2 * 18);
    ck_assert_uint_eq(fb_kv_head_bytes(GG_Q4_K, 256), 0);
    ck_assert_uint_eq(fb_kv_head_bytes(GG_F16, 0), 0);
}
END_TEST

/* SUMONLY has no max: a score above ~88 overflows fp32's exp (backend.h); the fast path
 * must show it (a hidden max would not), MAXSUM must not. */
START_TEST(test_sumonly_overflow)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    float q[4] = {10, 10, 10, 10}, k[8] = {5, 5, 5, 5, 1, 0, 0, 0}, v[8] = {1, 2, 3, 4, 5, 6, 7, 8}, o[4];
    int32_t pos[1] = {1};
    fb_attn_t a = {.q = q, .ldq = 4, .k = k, .v = v, .ldkv = 4, .out = o, .ldo = 4, .n_q = 1,
                   .pos = pos, .n_head = 1, .n_head_kv = 1, .head_dim = 4, .scale = 1, .mode = FB_SOFTMAX_MAXSUM};
    ck_assert_int_eq(fb_attention(be, &a, 1), 0);
    CHECK(fabsf(o[0] - 1) < 1e-5f); /* score 200 vs 10: all weight on key 0 */
    a.mode = FB_SOFTMAX_SUMONLY;
    ck_assert_int_eq(fb_attention(be, &a, 1), 0);
    if (strcmp(cfgs[_i].opt[0], "ref=1") != 0) /* the fp64 reference does not overflow */
        CHECK(!isfinite(o[0]));
    fb_destroy(be);
}
END_TEST

/* Regression (fuzz_model): a row holding NaN or infinity (weights that overflow, or a hostile
 * file) once made the AVX2/AVX-512 Q4_0 dot product overflow a signed int (its correction
 * term -8 * sum of the quantized activations), undefined behaviour that UBSan reports.  Every
 * configuration and weight type must now give non-finite outputs for such rows and leave the
 * finite rows of the same batch exactly as they are alone. */
START_TEST(test_nonfinite_rows)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    uint64_t s = 1700 + (uint64_t)_i;
    static const int types[] = {GG_F32, GG_F16, GG_Q8_0, GG_Q4_0, GG_Q4_K, GG_Q6_K};
    const int64_t n_in = 256, n_out = 5, n_rows = 4;
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        fb_weight_t w = {.type = types[t], .n_in = n_in, .n_out = n_out,
                         .src = mk_weight(&s, types[t], n_in, n_out)};
        ck_assert_int_eq(fb_weight_prepare(be, &w), 0);
        float *x = rnd(&s, n_rows * n_in, 1), y[4 * 5], yf[4 * 5];
        /* the same batch with finite rows only: the same code path for the same batch size */
        ck_assert_int_eq(fb_matmul(be, &w, x, n_rows, yf, NULL), 0);
        x[1 * n_in + 7] = NAN;
        x[1 * n_in + 40] = INFINITY;
        x[2 * n_in + 200] = -INFINITY;
        ck_assert_int_eq(fb_matmul(be, &w, x, n_rows, y, NULL), 0);
        for (int64_t r = 0; r < n_rows; r++) {
            bool bad = r == 1 || r == 2;
            for (int64_t o = 0; o < n_out; o++) {
                float v = y[r * n_out + o], f = yf[r * n_out + o];
                CHECKM(bad ? !isfinite(v) : isfinite(v) && fabsf(v - f) <= 1e-5f * (1 + fabsf(f)),
                       "cfg %d %s row %lld out %lld: %g (all finite: %g)", _i,
                       gg_type_name(types[t]), (long long)r, (long long)o, (double)v, (double)f);
            }
        }
        fb_weight_release(be, &w);
        free((void *)w.src);
        free(x);
    }
    fb_destroy(be);
}
END_TEST

START_TEST(test_fast_rowops)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    uint64_t s = 1200 + (uint64_t)_i;
    static const int64_t ns[] = {1, 7, 64, 100, 4097};
    for (size_t k = 0; k < FD_ARRAY_LEN(ns); k++) {
        int64_t n = ns[k], rows = k % 2 ? 3 : 40;
        float *x = rnd(&s, rows * n, 4), *g = rnd(&s, n, 2), *b = rnd(&s, n, 1);
        float *y1 = malloc(sizeof(float) * (size_t)(rows * n)), *y2 = malloc(sizeof(float) * (size_t)(rows * n));
        for (int64_t i = 0; i < n; i++)
            x[i] = x[i] * 1000 + 3000; /* large magnitude, large mean */
        fb_weight_t gw = {.type = GG_F32, .n_in = n, .n_out = 1, .src = g};
        fb_weight_t bw = {.type = GG_F32, .n_in = n, .n_out = 1, .src = b};
        /* norms: one scale per row (float sums of <= n/8 terms: 1e-6) times x g: 1e-5 rel */
        ck_assert_int_eq(fb_rmsnorm(be, x, rows, n, &gw, 1e-5f, y1), 0);
        fcpu_ref_rmsnorm(x, rows, n, g, 1e-5f, y2);
        for (int64_t i = 0; i < rows * n; i++)
            CHECK(fabsf(y1[i] - y2[i]) <= 1e-5f * fabsf(y2[i]) + 1e-30f);
        ck_assert_int_eq(fb_layernorm(be, x, rows, n, &gw, &bw, 1e-5f, y1), 0);
        fcpu_ref_layernorm(x, rows, n, g, b, 1e-5f, y2);
        for (int64_t i = 0; i < rows * n; i++) /* |(x - mean) s g| is O(|g|): absolute */
            CHECKM(fabsf(y1[i] - y2[i]) <= 1e-4f, "n %lld: %g vs %g", (long long)n, (double)y1[i], (double)y2[i]);
        /* silu_mul: exp to 2e-7 relative, then a division and a product */
        float *u = rnd(&s, rows * n, 3), *gt = rnd(&s, rows * n, 30);
        ck_assert_int_eq(fb_silu_mul(be, gt, u, rows, n, n, y1), 0);
        fcpu_ref_silu_mul(gt, u, rows, n, n, y2);
        for (int64_t i = 0; i < rows * n; i++)
            CHECK(fabsf(y1[i] - y2[i]) <= 1e-6f * fabsf(y2[i]) + 1e-30f);
        /* gelu_mul: the same form as silu_mul's (x / (1 + exp(-2z))) after the cubic z, which
         * costs a few ulp; near its zero crossing at x = 0 the error is absolute */
        ck_assert_int_eq(fb_gelu_mul(be, gt, u, rows, n, n, y1), 0);
        fcpu_ref_gelu_mul(gt, u, rows, n, n, y2);
        for (int64_t i = 0; i < rows * n; i++)
            CHECKM(fabsf(y1[i] - y2[i]) <= 2e-6f * fabsf(y2[i]) + 1e-7f, "gelu %g vs %g",
                   (double)y1[i], (double)y2[i]);
        /* scale and softcap over the rows as one vector */
        memcpy(y1, gt, sizeof(float) * (size_t)(rows * n));
        memcpy(y2, gt, sizeof(float) * (size_t)(rows * n));
        ck_assert_int_eq(fb_scale(be, y1, rows * n, 0.37f), 0);
        fcpu_ref_scale(y2, rows * n, 0.37f);
        ck_assert_int_eq(fb_softcap(be, y1, rows * n, 5.0f), 0);
        fcpu_ref_softcap(y2, rows * n, 5.0f);
        for (int64_t i = 0; i < rows * n; i++)
            CHECK(fabsf(y1[i] - y2[i]) <= 1e-6f * fabsf(y2[i]) + 1e-7f);
        memcpy(y1, x, sizeof(float) * (size_t)(rows * n));
        memcpy(y2, x, sizeof(float) * (size_t)(rows * n));
        ck_assert_int_eq(fb_add(be, y1, u, rows * n), 0);
        fcpu_ref_add(y2, u, rows * n);
        ck_assert_int_eq(memcmp(y1, y2, sizeof(float) * (size_t)(rows * n)), 0);
        free(x); free(g); free(b); free(y1); free(y2); free(u); free(gt);
    }
    /* rope: float cos/sin of the fp64 angles; |err| <= 2 ulp-ish of |x|; with and without
     * frequency factors (which change the result: the fast path must use them) */
    static const int rp[][4] = {{1, 8, 8, 0}, {4, 64, 64, 1}, {3, 100, 64, 0}, {32, 128, 128, 1}};
    for (size_t k = 0; k < 2 * FD_ARRAY_LEN(rp); k++) {
        const int *c = rp[k % FD_ARRAY_LEN(rp)];
        bool with_ff = k >= FD_ARRAY_LEN(rp);
        int nh = c[0], hd = c[1];
        int64_t rows = 5, ld = (int64_t)nh * hd + 2;
        float *x1 = rnd(&s, rows * ld, 2), *x2 = malloc(sizeof(float) * (size_t)(rows * ld));
        float *x0 = malloc(sizeof(float) * (size_t)(rows * ld));
        memcpy(x2, x1, sizeof(float) * (size_t)(rows * ld));
        memcpy(x0, x1, sizeof(float) * (size_t)(rows * ld));
        int32_t pos[5] = {0, 1, 17, 4000, 123456};
        fb_weight_t ff;
        float *ffv = rope_freqs(be, &s, c[2] / 2, &ff);
        fb_rope_t r = {.mode = c[3], .n_rot = c[2], .freq_base = 500000, .freq_scale = 0.25f,
                       .freq_factors = with_ff ? &ff : NULL};
        ck_assert_int_eq(fb_rope(be, x1, rows, ld, nh, hd, pos, &r), 0);
        fcpu_ref_rope(x2, rows, ld, nh, hd, pos, &r);
        for (int64_t i = 0; i < rows * ld; i++)
            CHECKM(fabsf(x1[i] - x2[i]) <= 1e-6f * 4, "%g vs %g", (double)x1[i], (double)x2[i]);
        if (with_ff) {
            fb_rope_t plain = r;
            plain.freq_factors = NULL;
            fcpu_ref_rope(x0, rows, ld, nh, hd, pos, &plain);
            double d = max_abs_diff(x0, x2, rows * ld);
            CHECKM(d > 0.1, "the factors change nothing (%g)", d);
            /* factors of the wrong length, or not F32, are refused */
            fb_weight_t bad = ff;
            bad.n_in = c[2] / 2 + 1;
            r.freq_factors = &bad;
            ck_assert_int_eq(fb_rope(be, x1, rows, ld, nh, hd, pos, &r), -EINVAL);
            bad.n_in = c[2] / 2;
            bad.type = GG_F16;
            ck_assert_int_eq(fb_rope(be, x1, rows, ld, nh, hd, pos, &r), -EINVAL);
        }
        fb_weight_release(be, &ff);
        free(x0); free(x1); free(x2); free(ffv);
    }
    fb_destroy(be);
}
END_TEST

/* YaRN (llama.cpp's rope_yarn): the ramp's ends and blend, the magnitude, values worked by
 * hand, fast vs reference on awkward shapes, and the fields a backend refuses. */
START_TEST(test_rope_yarn)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    /* ggml_rope_yarn_corr_dims of Qwen2.5's 128 dims, base 1e6, 32768 positions, betas 32/1:
     * 128 ln(32768 / 64 pi) / 2 ln 1e6 = 23.6 floored, 128 ln(32768 / 2 pi) / 2 ln 1e6 =
     * 39.7 ceiled */
    fb_rope_t q = {.mode = FB_ROPE_NEOX, .n_rot = 128, .freq_base = 1e6f, .freq_scale = 0.25f,
                   .ext_factor = 1, .beta_fast = 32, .beta_slow = 1, .n_ctx_orig = 32768};
    float dims[2];
    fb_rope_corr_dims(&q, dims);
    CHECKM(dims[0] == 23 && dims[1] == 40, "corr dims %g %g", (double)dims[0], (double)dims[1]);
    CHECK(fb_rope_yarn_mix(&q, dims, 0) == 1 && fb_rope_yarn_mix(&q, dims, 23) == 1);
    CHECK(fabsf(fb_rope_yarn_mix(&q, dims, 30) - (1 - 7.0f / 17)) < 1e-6f);
    CHECK(fb_rope_yarn_mix(&q, dims, 40) == 0 && fb_rope_yarn_mix(&q, dims, 63) == 0);
    CHECK(fabsf(fb_rope_mscale(&q) - (float)(1 + 0.1 * log(4.0))) < 1e-6f);
    q.attn_factor = 0.5f;
    CHECK(fabsf(fb_rope_mscale(&q) - (float)(0.5 * (1 + 0.1 * log(4.0)))) < 1e-6f);
    q.ext_factor = 0;
    CHECK(fb_rope_mscale(&q) == 0.5f && fb_rope_yarn_mix(&q, dims, 0) == 0);

    /* n_rot 8, base 1e4, 64 positions: ends 0 (8 ln(64 / 64 pi) / 2 ln 1e4 = -0.5) and 2
     * (1.008 ceiled); so at position p, freq_scale 1/4, pair 0 turns by p (all
     * extrapolation), pair 1 by 0.1 p (0.25 / 2 + 1 / 2), pairs 2 and 3 by 0.01 p / 4 and
     * 0.001 p / 4; all four times 1 + 0.1 ln 4 */
    fb_rope_t r = {.mode = FB_ROPE_ADJACENT, .n_rot = 8, .freq_base = 10000, .freq_scale = 0.25f,
                   .ext_factor = 1, .beta_fast = 32, .beta_slow = 1, .n_ctx_orig = 64};
    float x[8] = {1, 0, 1, 0, 1, 0, 1, 0};
    int32_t p3 = 3;
    ck_assert_int_eq(fb_rope(be, x, 1, 8, 1, 8, &p3, &r), 0);
    const double th[4] = {3.0, 0.3 * 0.625, 0.03 * 0.25, 0.003 * 0.25}, m = 1 + 0.1 * log(4.0);
    for (int i = 0; i < 4; i++)
        CHECKM(fabs(x[2 * i] - m * cos(th[i])) < 2e-6 && fabs(x[2 * i + 1] - m * sin(th[i])) < 2e-6,
               "pair %d: %g %g, want %g %g", i, (double)x[2 * i], (double)x[2 * i + 1],
               m * cos(th[i]), m * sin(th[i]));

    /* fast vs reference: partial rotation, padding, odd head counts, far positions, both
     * pair layouts, frequency factors, a part blend, a ramp that covers every pair */
    static const int cf[][6] = { /* heads, head_dim, n_rot, mode, orig ctx, factors */
        {1, 8, 8, 0, 64, 0}, {3, 100, 64, 1, 4096, 0}, {5, 64, 48, 0, 32768, 1},
        {2, 128, 128, 1, 32, 1}, {7, 6, 6, 1, 2, 0}};
    uint64_t s = 77;
    for (size_t k = 0; k < FD_ARRAY_LEN(cf); k++) {
        const int *c = cf[k];
        int nh = c[0], hd = c[1];
        int64_t rows = 7, ld = (int64_t)nh * hd + 3;
        float *x1 = rnd(&s, rows * ld, 2), *x2 = malloc(sizeof(float) * (size_t)(rows * ld));
        float *x0 = malloc(sizeof(float) * (size_t)(rows * ld));
        ck_assert_ptr_nonnull(x2);
        ck_assert_ptr_nonnull(x0);
        memcpy(x2, x1, sizeof(float) * (size_t)(rows * ld));
        memcpy(x0, x1, sizeof(float) * (size_t)(rows * ld));
        int32_t pos[7] = {0, 1, 2, 31, 33, 4000, 123456};
        fb_weight_t ff;
        float *ffv = rope_freqs(be, &s, c[2] / 2, &ff);
        fb_rope_t y = {.mode = c[3], .n_rot = c[2], .freq_base = k == 3 ? 1e6f : 1e4f,
                       .freq_scale = k == 1 ? 0.125f : 0.25f, .freq_factors = c[5] ? &ff : NULL,
                       .ext_factor = k == 2 ? 0.5f : 1, .beta_fast = 32, .beta_slow = 1,
                       .n_ctx_orig = c[4], .attn_factor = k == 4 ? 0.75f : 0};
        ck_assert_int_eq(fb_rope(be, x1, rows, ld, nh, hd, pos, &y), 0);
        fcpu_ref_rope(x2, rows, ld, nh, hd, pos, &y);
        double e = max_abs_diff(x1, x2, rows * ld);
        CHECKM(e <= 1e-5, "case %zu: fast vs reference %g", k, e);
        /* the same rope without YaRN differs (the blend and magnitude are applied) */
        fb_rope_t lin = y;
        lin.ext_factor = 0;
        fcpu_ref_rope(x0, rows, ld, nh, hd, pos, &lin);
        double d = max_abs_diff(x0, x2, rows * ld);
        CHECKM(d > 0.1, "case %zu: YaRN changes nothing (%g)", k, d);
        fb_weight_release(be, &ff);
        free(x0); free(x1); free(x2); free(ffv);
    }

    /* refused: a negative or non-finite blend, a blend without an original context or with
     * betas that are not positive, a negative attention factor, a base of 1 */
    fb_rope_t bad[6];
    for (int i = 0; i < 6; i++)
        bad[i] = r;
    bad[0].ext_factor = -1;
    bad[1].ext_factor = NAN;
    bad[2].n_ctx_orig = 0;
    bad[3].beta_slow = 0;
    bad[4].attn_factor = -2;
    bad[5].freq_base = 1;
    for (int i = 0; i < 6; i++)
        CHECKM(fb_rope(be, x, 1, 8, 1, 8, &p3, &bad[i]) == -EINVAL, "bad rope %d accepted", i);
    /* without a blend, the YaRN fields are not looked at */
    bad[2].ext_factor = 0;
    ck_assert_int_eq(fb_rope(be, x, 1, 8, 1, 8, &p3, &bad[2]), 0);
    fb_destroy(be);
}
END_TEST

/* ---- decode: one activation row ------------------------------------------------------- */

/* One activation row against every weight type on every configuration: the four-row decode
 * kernels (dot4: matrices up to dot4_max, rows adjacent; with dot4_max=0 and streams=4, rows
 * a quarter-chunk apart, and the remainder rows one at a time), with in_scale and a deferred
 * RMS norm, n_in with and without a tail of fewer than 8 blocks. */
START_TEST(test_decode_rows)
{
    fb_backend_t *be = mk_cfg(_i);
    if (!be)
        return;
    uint64_t s = 3100 + (uint64_t)_i;
    for (size_t t = 0; t < FD_ARRAY_LEN(fast_types); t++) {
        int type = fast_types[t], el = gg_block_elems(type);
        for (int shape = 0; shape < 3; shape++) {
            int64_t n_out = (int64_t[]){5, 13, 67}[shape];
            int64_t n_in = el == 1 ? (int64_t[]){48, 1000, 2051}[shape]
                                   : el * (int64_t[]){1, 13, 24}[shape];
            fb_weight_t w = {.type = type, .n_in = n_in, .n_out = n_out,
                             .src = mk_weight(&s, type, n_in, n_out)};
            float *isc = shape == 1 ? rnd(&s, n_in, 2) : NULL;
            w.in_scale = isc;
            ck_assert_int_eq(fb_weight_prepare(be, &w), 0);
            float *x = rnd(&s, n_in, 1), *y = malloc(sizeof(float) * (size_t)n_out);
            float *ry = malloc(sizeof(float) * (size_t)n_out), sc = 0, scl = 0;
            fb_defer_t d = {.kind = shape == 2 ? FB_NORM_RMS : FB_NORM_NONE, .eps = 1e-5f,
                            .scale_out = &sc};
            ck_assert_int_eq(fb_matmul(be, &w, x, 1, y, &d), 0);
            ck_assert_int_eq(fcpu_ref_matmul(&w, x, 1, ry, &d), 0);
            double ryd[67], bound[67];
            for (int64_t i = 0; i < n_out; i++)
                ryd[i] = ry[i];
            if (d.kind != FB_NORM_NONE)
                scl = (float)fcpu_ref_norm_scale(d.kind, x, n_in, 1e-5f);
            fast_bounds(&w, x, 1, ryd, d.kind != FB_NORM_NONE ? &scl : NULL, bound);
            for (int64_t i = 0; i < n_out; i++)
                CHECKM(fabs((double)y[i] - ryd[i]) <= bound[i],
                       "cfg %d %s n_in %lld n_out %lld i %lld: %.9g vs %.9g (bound %.3g)", _i,
                       gg_type_name(type), (long long)n_in, (long long)n_out, (long long)i,
                       (double)y[i], ryd[i], bound[i]);
            fb_weight_release(be, &w);
            free((void *)w.src); free(isc); free(x); free(y); free(ry);
        }
    }
    fb_destroy(be);
}
END_TEST

/* ---- the roof probes (fusion-bench) ----------------------------------------------------- */

/* Every table's read loop, in every mode, sums the same 64-bit words as a plain loop (so
 * nothing is skipped or read twice), and fb_roof returns a rate for both limits and
 * -EINVAL for a buffer it cannot use. */
START_TEST(test_roof)
{
    const size_t n = (size_t)1 << 20;
    uint64_t *buf = NULL;
    ck_assert_int_eq(posix_memalign((void **)&buf, 64, n), 0);
    uint64_t want = 0, s = 77;
    for (size_t i = 0; i < n / 8; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        buf[i] = s >> 7;
        want += buf[i];
    }
    for (int isa = 0; isa < FCPU_ISA_COUNT; isa++) {
        const fcpu_kern_t *k = fcpu_kernels(isa);
        if (!k)
            continue;
        for (int mode = 0; mode < 3; mode++) {
            ck_assert_uint_eq(k->read_sum(buf, n, mode), want);
            /* a share of 256 bytes: mode 1's quarters are whole vectors */
            uint64_t part = 0;
            for (size_t i = 0; i < 32; i++)
                part += buf[64 + i];
            ck_assert_uint_eq(k->read_sum(buf + 64, 256, mode), part);
        }
    }
    fb_backend_t *be = NULL;
    fb_config_t cfg = {.threads = 2};
    ck_assert_int_eq(fb_create("cpu", &cfg, &be, NULL, 0), 0);
    ck_assert(fb_roof(be, FB_ROOF_READ, buf, n) > 0);
    ck_assert(fb_roof(be, FB_ROOF_SGEMM, NULL, 0) > 0);
    ck_assert(fb_roof(be, FB_ROOF_READ, NULL, n) == -EINVAL);
    ck_assert(fb_roof(be, FB_ROOF_READ, (const uint8_t *)buf + 8, n - 64) == -EINVAL);
    ck_assert(fb_roof(be, 7, buf, n) == -EINVAL);
    ck_assert(fb_roof(NULL, FB_ROOF_READ, buf, n) == FD_EUNSUP);
    fb_destroy(be);
    free(buf);
}
END_TEST

/* ---- the thread pool ------------------------------------------------------------------- */

typedef struct pool_ctx {
    fcpu_pool_t *p;
    int phase_count[3];
    int seen_bad;
    long hits[8];
} pool_ctx_t;

/* Three phases separated by barriers: nobody may see a phase before all finished the one
 * before it. */
static void pool_task(void *arg, int ith, int nth)
{
    pool_ctx_t *c = arg;
    for (int ph = 0; ph < 3; ph++) {
        __atomic_add_fetch(&c->phase_count[ph], 1, __ATOMIC_SEQ_CST);
        fcpu_pool_barrier(c->p, nth);
        if (__atomic_load_n(&c->phase_count[ph], __ATOMIC_SEQ_CST) != nth)
            __atomic_store_n(&c->seen_bad, 1, __ATOMIC_SEQ_CST);
        fcpu_pool_barrier(c->p, nth);
    }
    c->hits[ith]++;
}

START_TEST(test_pool)
{
    fcpu_pool_t *p = NULL;
    ck_assert_int_eq(fcpu_pool_create(&p, 4), 0);
    ck_assert_int_eq(fcpu_pool_size(p), 4);
    pool_ctx_t c = {.p = p};
    for (int run = 0; run < 400; run++) {
        int nth = 1 + run % 4;
        memset(c.phase_count, 0, sizeof(c.phase_count));
        fcpu_pool_run(p, nth, pool_task, &c);
        CHECKM(!c.seen_bad, "run %d: a thread passed a barrier early", run);
        if (run % 100 == 0)
            usleep(1000); /* let the workers fall asleep: the futex path must wake them */
    }
    long total = 0;
    for (int i = 0; i < 4; i++)
        total += c.hits[i];
    /* runs with nth = 1..4: thread i takes part in the runs with nth > i */
    ck_assert_int_eq(c.hits[0], 400);
    ck_assert_int_eq(c.hits[3], 100);
    ck_assert_int_eq(total, 400 + 300 + 200 + 100);
    fcpu_pool_run(p, 99, pool_task, &c); /* more than the pool: capped */
    fcpu_pool_destroy(p);
    ck_assert_int_eq(fcpu_pool_create(&p, 0), -EINVAL);
}
END_TEST

START_TEST(test_registry_and_stats)
{
    fb_backend_t *be = NULL;
    char err[160] = "";
    ck_assert_int_eq(fb_create("nosuch", NULL, &be, err, sizeof(err)), -ENOENT);
    ck_assert_ptr_null(be);
    ck_assert_ptr_nonnull(strstr(err, "unknown backend \"nosuch\""));
    ck_assert_ptr_nonnull(strstr(err, "cpu"));
    CHECK(fb_available("cpu"));
    CHECK(!fb_available("nosuch"));
    if (!fb_available("cuda")) {
        ck_assert_int_eq(fb_create("cuda", NULL, &be, err, sizeof(err)), -ENOENT);
        ck_assert_ptr_nonnull(strstr(err, "no backend \"cuda\""));
    }
    fb_config_t bad = {.threads = -3};
    ck_assert_int_eq(fb_create("cpu", &bad, &be, err, sizeof(err)), FD_ECONFIG);
    /* a slice must hold whole groups of 8 blocks and whole super-blocks; the L2 prefetch
     * distance is a small multiple */
    static const char *const bad_slices[][2] = {{"kslice=100"}, {"kslice=-256"}, {"kslice="},
                                                {"farpf=65"}, {"farpf=-1"}, {"farpf=x"},
                                                {"sched=fast"}, {"sched="}};
    for (size_t i = 0; i < FD_ARRAY_LEN(bad_slices); i++) {
        fb_config_t bs = {.threads = 1, .options = bad_slices[i]};
        ck_assert_int_eq(fb_create("cpu", &bs, &be, err, sizeof(err)), FD_ECONFIG);
        ck_assert_ptr_nonnull(strstr(err, i < 3 ? "kslice" : i < 6 ? "farpf" : "sched"));
    }
    ck_assert_int_eq(fb_create(NULL, NULL, &be, err, sizeof(err)), 0); /* default: cpu */
    ck_assert_str_eq(fb_name(be), "cpu");
    ck_assert_str_eq(fb_op_class_name(FB_OP_ATTN), "attention");
    ck_assert_str_eq(fb_op_class_name(FB_OP_GEMM), "gemm");
    char desc[128] = "";
    be->ops->describe(be, desc, sizeof(desc));
    ck_assert_ptr_nonnull(strstr(desc, "threads"));

    float wf[64 * 8], x[64], y[8], one[64];
    for (int i = 0; i < 64 * 8; i++)
        wf[i] = 0.01f * (float)(i % 13);
    for (int i = 0; i < 64; i++)
        x[i] = one[i] = 1;
    fb_weight_t w = {.type = GG_F32, .n_in = 64, .n_out = 8, .src = wf};
    fb_weight_t g = {.type = GG_F32, .n_in = 64, .n_out = 1, .src = one};
    ck_assert_int_eq(fb_weight_prepare(be, &w), 0);
    fb_stats_t st;
    fb_stats_get(be, &st);
    ck_assert_uint_eq(st.calls[FB_OP_GEMM], 0);
    ck_assert_int_eq(fb_matmul(be, &w, x, 1, y, NULL), 0);
    ck_assert_int_eq(fb_matmul(be, &w, x, 1, y, NULL), 0);
    ck_assert_int_eq(fb_rmsnorm(be, x, 1, 64, &g, 1e-5f, x), 0);
    fb_stats_get(be, &st);
    ck_assert_uint_eq(st.calls[FB_OP_GEMM], 2);
    ck_assert_uint_eq(st.calls[FB_OP_NORM], 1);
    ck_assert_uint_eq(st.calls[FB_OP_ATTN], 0);
    ck_assert_uint_gt(st.host_ns[FB_OP_GEMM], 0);
    fb_stats_reset(be);
    fb_stats_get(be, &st);
    ck_assert_uint_eq(st.calls[FB_OP_GEMM], 0);

    /* bad weights and shapes */
    fb_weight_t wi8 = {.type = GG_I8, .n_in = 64, .n_out = 8, .src = wf};
    ck_assert_int_eq(fb_weight_prepare(be, &wi8), FD_EUNSUP);
    ck_assert_int_eq(fb_matmul(be, &wi8, x, 1, y, NULL), FD_EUNSUP);
    fb_weight_t wq = {.type = GG_Q8_0, .n_in = 40, .n_out = 8, .src = wf};
    ck_assert_int_eq(fb_weight_prepare(be, &wq), -EINVAL);
    ck_assert_int_eq(fb_matmul(be, &wq, x, 1, y, NULL), -EINVAL);
    fb_weight_t wn = {.type = GG_F32, .n_in = 64, .n_out = 8, .src = NULL};
    ck_assert_int_eq(fb_weight_prepare(be, &wn), -EINVAL);
    fb_defer_t dbad = {.kind = 9};
    ck_assert_int_eq(fb_matmul(be, &w, x, 1, y, &dbad), -EINVAL);
    ck_assert_int_eq(fb_matmul(be, &w, x, -1, y, NULL), -EINVAL);
    ck_assert_int_eq(fb_matmul(be, &w, x, 0, y, NULL), 0);
    fb_weight_release(be, &w);
    fb_destroy(be);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cpu_backend");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_matmul_types, 0, (int)FD_ARRAY_LEN(all_types));
    tcase_add_loop_test(tc, test_defer_equals_norm_then_gemm, 0, N_CFG);
    tcase_add_loop_test(tc, test_norms, 0, N_CFG);
    tcase_add_loop_test(tc, test_rope, 0, N_CFG);
    tcase_add_loop_test(tc, test_rope_yarn, 0, N_CFG);
    tcase_add_loop_test(tc, test_attention, 0, N_CFG);
    tcase_add_loop_test(tc, test_elementwise, 0, N_CFG);
    tcase_add_loop_test(tc, test_get_rows, 0, N_CFG);
    tcase_add_loop_test(tc, test_moe_rows, 0, N_CFG);
    tcase_add_test(tc, test_registry_and_stats);
    tcase_add_test(tc, test_pool);
    tcase_add_test(tc, test_roof);
    tcase_add_loop_test(tc, test_decode_rows, 0, N_CFG);
    tcase_add_loop_test(tc, test_fast_matmul, 0, N_CFG);
    tcase_add_loop_test(tc, test_matmul_group, 0, N_CFG);
    tcase_add_test(tc, test_matmul_group_fallback);
    tcase_add_loop_test(tc, test_dot8_kernels, 0, FCPU_ISA_COUNT);
    tcase_add_loop_test(tc, test_dot8_extremes, 0, FCPU_ISA_COUNT);
    tcase_add_loop_test(tc, test_dot2x8_kernels, 0, FCPU_ISA_COUNT);
    tcase_add_loop_test(tc, test_gemmf_kernels, 0, FCPU_ISA_COUNT);
    tcase_add_loop_test(tc, test_dot8_q6_K, 0, FCPU_ISA_COUNT);
    tcase_add_loop_test(tc, test_kmin_kernels, 0, FCPU_ISA_COUNT);
    tcase_add_loop_test(tc, test_legacy_kernels, 0, FCPU_ISA_COUNT);
    tcase_add_loop_test(tc, test_table_kernels, 0, FCPU_ISA_COUNT);
    tcase_add_loop_test(tc, test_k23_kernels, 0, FCPU_ISA_COUNT);
    tcase_add_test(tc, test_generic_option);
    tcase_add_loop_test(tc, test_gemm16_kernels, 0, FCPU_ISA_COUNT);
    tcase_add_loop_test(tc, test_batch_rows, 0, N_CFG);
    tcase_add_loop_test(tc, test_fast_attention, 0, N_CFG);
    tcase_add_loop_test(tc, test_sumonly_overflow, 0, N_CFG);
    tcase_add_loop_test(tc, test_kv_types, 0, 7);
    tcase_add_loop_test(tc, test_kv_ring, 0, 7);
    tcase_add_test(tc, test_kv_type_names);
    tcase_add_loop_test(tc, test_round_kernels, 0, FCPU_ISA_COUNT);
    tcase_add_loop_test(tc, test_fast_rowops, 0, N_CFG);
    tcase_add_loop_test(tc, test_nonfinite_rows, 0, N_CFG);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
