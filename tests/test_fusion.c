/* test_fusion.c: proves the deferred-normalization fusion: RMSNorm and LayerNorm folding are
 * exact algebra (fp32 within 1e-5 of fp64), the fold policy for quantized weights keeps the
 * fused product as close to fp64 as the unfused one (and re-quantizing would not). */
#include <math.h>

#include "backends/backend.h"
#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"
#include "fusion/fold.h"
#include "tests/testutil.h"

/* ---- helpers ---- */

/* Relative error of y against the fp64 reference r: ||y - r||_2 / ||r||_2. */
static double rel_err(const float *y, const double *r, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)y[i] - r[i];
        num += d * d;
        den += r[i] * r[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* A gamma like trained norm weights: positive, spread over [e^-1.5, e^1.5]. */
static void rand_gamma(float *g, int64_t n, uint64_t *s)
{
    for (int64_t i = 0; i < n; i++)
        g[i] = expf(1.5f * tu_randf(s));
}

/* Activation rows: uniform, with a few outlier channels; every fourth row scaled by 1e3 (the
 * residual stream of a deep model) and every fifth by 1e-3. */
static void rand_rows(float *x, int64_t rows, int64_t n, uint64_t *s)
{
    for (int64_t r = 0; r < rows; r++) {
        float sc = r % 4 == 3 ? 1e3f : r % 5 == 4 ? 1e-3f : 1.0f;
        for (int64_t i = 0; i < n; i++) {
            float v = tu_randf(s);
            if (i % 61 == 7)
                v *= 20.0f;
            x[r * n + i] = v * sc;
        }
    }
}

static double rms_inv64(const float *x, int64_t n, double eps)
{
    double ss = 0;
    for (int64_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    return 1.0 / sqrt(ss / (double)n + eps);
}

static float rms_inv32(const float *x, int64_t n, float eps)
{
    float ss = 0;
    for (int64_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    return 1.0f / sqrtf(ss / (float)n + eps);
}

/* ---- RMSNorm folding: the scalar kernel ---- */

START_TEST(test_fold_rms_f32)
{
    uint64_t s = 11;
    const int64_t n_out = 7, n_in = 37;
    float w[7 * 37], g[37], d[7 * 37];
    for (int i = 0; i < 7 * 37; i++)
        w[i] = tu_randf(&s);
    rand_gamma(g, n_in, &s);
    fz_fold_rms_f32(w, n_out, n_in, g, d);
    for (int o = 0; o < n_out; o++)
        for (int i = 0; i < n_in; i++)
            ck_assert_float_eq(d[o * n_in + i], w[o * n_in + i] * g[i]);
    /* in place */
    fz_fold_rms_f32(w, n_out, n_in, g, w);
    ck_assert_mem_eq(w, d, sizeof(d));
}
END_TEST

/* Folding then deferring is the same function as normalizing then multiplying, in fp32 to
 * within 1e-5 of fp64, for large and small rows alike. */
START_TEST(test_fold_rms_equivalence)
{
    uint64_t s = 12;
    static const int64_t shapes[][2] = { { 1, 1 }, { 3, 17 }, { 64, 64 }, { 33, 100 },
                                         { 5, 257 }, { 128, 31 } };
    for (size_t k = 0; k < FD_ARRAY_LEN(shapes); k++) {
        int64_t n_out = shapes[k][0], n_in = shapes[k][1], rows = 8;
        float *w = malloc(sizeof(float) * n_out * n_in), *wf = malloc(sizeof(float) * n_out * n_in);
        float *g = malloc(sizeof(float) * n_in), *x = malloc(sizeof(float) * rows * n_in);
        float *y = malloc(sizeof(float) * n_out);
        double *ref = malloc(sizeof(double) * n_out);
        for (int64_t i = 0; i < n_out * n_in; i++)
            w[i] = tu_randf(&s) * 0.1f;
        rand_gamma(g, n_in, &s);
        rand_rows(x, rows, n_in, &s);
        fz_fold_rms_f32(w, n_out, n_in, g, wf);
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * n_in;
            double inv = rms_inv64(xr, n_in, 1e-5);
            float inv32 = rms_inv32(xr, n_in, 1e-5f);
            for (int64_t o = 0; o < n_out; o++) {
                double acc = 0;
                float u = 0;
                for (int64_t i = 0; i < n_in; i++) {
                    acc += (double)xr[i] * inv * g[i] * w[o * n_in + i];
                    u += xr[i] * wf[o * n_in + i];
                }
                ref[o] = acc;
                y[o] = u * inv32;
            }
            double e = rel_err(y, ref, n_out);
            ck_assert_msg(e <= 1e-5, "shape %lldx%lld row %lld: rel err %.3g", (long long)n_out,
                          (long long)n_in, (long long)r, e);
        }
        free(w); free(wf); free(g); free(x); free(y); free(ref);
    }
}
END_TEST

/* ---- LayerNorm folding on synthetic LayerNorm -> Linear blocks ---- */

/* out = LN(x; gamma, beta) W^T + b in fp64 (two-pass variance). */
static void ln_linear_ref(const float *x, int64_t n_in, const float *w, const float *b,
                          int64_t n_out, const float *g, const float *be, double eps,
                          double *out)
{
    double mu = 0, var = 0;
    for (int64_t i = 0; i < n_in; i++)
        mu += x[i];
    mu /= (double)n_in;
    for (int64_t i = 0; i < n_in; i++)
        var += (x[i] - mu) * (x[i] - mu);
    var /= (double)n_in;
    double inv = 1.0 / sqrt(var + eps);
    for (int64_t o = 0; o < n_out; o++) {
        double acc = b ? b[o] : 0;
        for (int64_t i = 0; i < n_in; i++)
            acc += ((x[i] - mu) * inv * g[i] + (be ? be[i] : 0)) * w[o * n_in + i];
        out[o] = acc;
    }
}

/* The same block in fp32, unfused: normalize (two-pass), then multiply. */
static void ln_linear_unfused32(const float *x, int64_t n_in, const float *w, const float *b,
                                int64_t n_out, const float *g, const float *be, float eps,
                                float *out)
{
    float mu = 0, var = 0;
    float *xn = malloc(sizeof(float) * n_in);
    for (int64_t i = 0; i < n_in; i++)
        mu += x[i];
    mu /= (float)n_in;
    for (int64_t i = 0; i < n_in; i++)
        var += (x[i] - mu) * (x[i] - mu);
    var /= (float)n_in;
    float inv = 1.0f / sqrtf(var + eps);
    for (int64_t i = 0; i < n_in; i++)
        xn[i] = (x[i] - mu) * inv * g[i] + (be ? be[i] : 0);
    for (int64_t o = 0; o < n_out; o++) {
        float acc = 0;
        for (int64_t i = 0; i < n_in; i++)
            acc += xn[i] * w[o * n_in + i];
        out[o] = acc + (b ? b[o] : 0);
    }
    free(xn);
}

/* Fused in fp32: u = x W'^T on the raw row, scaled by 1/sqrt(var + eps), plus c. */
static void ln_linear_fused32(const float *x, int64_t n_in, const float *wf, const float *c,
                              int64_t n_out, float eps, float *out)
{
    float mu = 0, var = 0;
    for (int64_t i = 0; i < n_in; i++)
        mu += x[i];
    mu /= (float)n_in;
    for (int64_t i = 0; i < n_in; i++)
        var += (x[i] - mu) * (x[i] - mu);
    var /= (float)n_in;
    float inv = 1.0f / sqrtf(var + eps);
    for (int64_t o = 0; o < n_out; o++) {
        float u = 0;
        for (int64_t i = 0; i < n_in; i++)
            u += x[i] * wf[o * n_in + i];
        out[o] = u * inv + c[o];
    }
}

START_TEST(test_fold_layernorm)
{
    uint64_t s = 13;
    static const int64_t shapes[][2] = { { 1, 2 }, { 9, 31 }, { 64, 64 }, { 40, 300 },
                                         { 3, 1024 } };
    /* offsets: the row's mean relative to its spread (a DC component) */
    static const float offsets[] = { 0.0f, 1.0f, 30.0f };
    double worst_f = 0, worst_u = 0;
    for (size_t k = 0; k < FD_ARRAY_LEN(shapes); k++) {
        int64_t n_out = shapes[k][0], n_in = shapes[k][1];
        float *w = malloc(sizeof(float) * n_out * n_in), *wf = malloc(sizeof(float) * n_out * n_in);
        float *b = malloc(sizeof(float) * n_out), *c = malloc(sizeof(float) * n_out);
        float *g = malloc(sizeof(float) * n_in), *be = malloc(sizeof(float) * n_in);
        float *x = malloc(sizeof(float) * n_in), *yu = malloc(sizeof(float) * n_out);
        float *yf = malloc(sizeof(float) * n_out);
        double *ref = malloc(sizeof(double) * n_out);
        for (int64_t i = 0; i < n_out * n_in; i++)
            w[i] = tu_randf(&s) * 0.1f;
        for (int64_t o = 0; o < n_out; o++)
            b[o] = tu_randf(&s);
        rand_gamma(g, n_in, &s);
        for (int64_t i = 0; i < n_in; i++)
            be[i] = 0.2f * tu_randf(&s);
        fz_fold_layer_f32(w, b, n_out, n_in, g, be, wf, c);
        /* the folded rows have zero mean (the centering lives in the weights) */
        for (int64_t o = 0; o < n_out; o++) {
            double m = 0, a = 0;
            for (int64_t i = 0; i < n_in; i++) {
                m += wf[o * n_in + i];
                a += fabs(wf[o * n_in + i]);
            }
            ck_assert(fabs(m) <= 1e-6 * a + 1e-30);
        }
        for (size_t f = 0; f < FD_ARRAY_LEN(offsets); f++) {
            for (int rep = 0; rep < 4; rep++) {
                float sc = rep == 3 ? 1e3f : rep == 2 ? 1e-2f : 1.0f;
                for (int64_t i = 0; i < n_in; i++)
                    x[i] = (tu_randf(&s) + offsets[f]) * sc;
                if (n_in == 2 && x[0] == x[1])
                    x[1] += sc;
                ln_linear_ref(x, n_in, w, b, n_out, g, be, 1e-5, ref);
                ln_linear_unfused32(x, n_in, w, b, n_out, g, be, 1e-5f, yu);
                ln_linear_fused32(x, n_in, wf, c, n_out, 1e-5f, yf);
                double eu = rel_err(yu, ref, n_out), ef = rel_err(yf, ref, n_out);
                /* Without a DC offset fp32 holds 1e-5.  With one, the fused product carries
                 * the row's mean mu through the GEMM and cancels it there (the centering
                 * lives in W'), so its rounding grows like 2^-24 * (|mu| / sigma) * sqrt(n);
                 * the unfused form loses less (its subtraction x - mu is nearly exact), but
                 * also some once sigma is small.  The bound is that estimate with a factor
                 * 4, for both (docs/fusion.md). */
                double mu = 0, var = 0;
                for (int64_t i = 0; i < n_in; i++)
                    mu += x[i];
                mu /= (double)n_in;
                for (int64_t i = 0; i < n_in; i++)
                    var += (x[i] - mu) * (x[i] - mu);
                double dc = fabs(mu) / sqrt(var / (double)n_in + 1e-5);
                double bound = 1e-5 + 4 * 0x1p-24 * dc * sqrt((double)n_in);
                ck_assert_msg(eu <= bound, "LN unfused %lldx%lld: %.3g > %.3g", (long long)n_out,
                              (long long)n_in, eu, bound);
                worst_f = fmax(worst_f, ef / bound);
                worst_u = fmax(worst_u, eu / bound);
                ck_assert_msg(ef <= bound, "LN fused %.3g > bound %.3g (unfused %.3g, "
                              "%lldx%lld offset %g)", ef, bound, eu, (long long)n_out,
                              (long long)n_in, (double)offsets[f]);
                if (offsets[f] == 0.0f)
                    ck_assert_msg(ef <= 1e-5, "LN fused %lldx%lld: %.3g", (long long)n_out,
                                  (long long)n_in, ef);
            }
        }
        free(w); free(wf); free(b); free(c); free(g); free(be); free(x); free(yu); free(yf);
        free(ref);
    }
    fprintf(stderr, "layernorm fold: worst error / bound: fused %.2f, unfused %.2f\n", worst_f,
            worst_u);
}
END_TEST

/* fz_fold_layer on a weight: the fp32 kernel's result, as an F32 fb_weight_t with c as bias. */
START_TEST(test_fold_layer_weight)
{
    uint64_t s = 14;
    const int64_t n_out = 5, n_in = 64;
    float w[5 * 64], b[5], g[64], be[64], wf[5 * 64], c[5];
    for (int i = 0; i < 5 * 64; i++)
        w[i] = tu_randf(&s);
    for (int i = 0; i < 5; i++)
        b[i] = tu_randf(&s);
    rand_gamma(g, n_in, &s);
    for (int i = 0; i < 64; i++)
        be[i] = tu_randf(&s);
    fz_fold_layer_f32(w, b, n_out, n_in, g, be, wf, c);
    fb_weight_t wt = { .type = GG_F32, .n_in = n_in, .n_out = n_out, .src = w, .name = "w" };
    fz_folded_t f;
    char err[256];
    ck_assert_int_eq(fz_fold_layer(&wt, b, g, be, FZ_FOLD_AUTO, "ln", &f, err, sizeof(err)), 0);
    ck_assert_int_eq(f.w.type, GG_F32);
    ck_assert_ptr_nonnull(f.w.bias);
    ck_assert_mem_eq(f.w.src, wf, sizeof(wf));
    ck_assert_mem_eq(f.w.bias, c, sizeof(c));
    fz_folded_free(&f);
}
END_TEST

/* ---- concatenation and the policies on fb_weight_t ---- */

START_TEST(test_fold_concat)
{
    uint64_t s = 15;
    const int64_t n_in = 64;
    float a[2 * 64], b[3 * 64], ba[2] = { 1, 2 }, g[64];
    for (int i = 0; i < 2 * 64; i++)
        a[i] = tu_randf(&s);
    for (int i = 0; i < 3 * 64; i++)
        b[i] = tu_randf(&s);
    rand_gamma(g, n_in, &s);
    uint8_t qa[2 * 68], qb[3 * 68];
    for (int r = 0; r < 2; r++)
        ck_assert_int_eq(fq_quantize_row(GG_Q8_0, a + r * 64, qa + r * 68, 64), 0);
    for (int r = 0; r < 3; r++)
        ck_assert_int_eq(fq_quantize_row(GG_Q8_0, b + r * 64, qb + r * 68, 64), 0);
    char err[256];
    fz_folded_t f;

    /* F32, AUTO: folded values, concatenated rows, bias padded with zeros */
    fb_weight_t p32[2] = { { .type = GG_F32, .n_in = 64, .n_out = 2, .src = a, .bias = ba, .name = "a" },
                           { .type = GG_F32, .n_in = 64, .n_out = 3, .src = b, .name = "b" } };
    ck_assert_int_eq(fz_fold_rms(p32, 2, g, FZ_FOLD_AUTO, "ab", &f, err, sizeof(err)), 0);
    ck_assert_int_eq(f.w.n_out, 5);
    ck_assert_ptr_null(f.w.in_scale);
    const float *fw = f.w.src;
    for (int i = 0; i < 64; i++) {
        ck_assert_float_eq(fw[1 * 64 + i], a[64 + i] * g[i]);
        ck_assert_float_eq(fw[4 * 64 + i], b[2 * 64 + i] * g[i]);
    }
    ck_assert_float_eq(f.w.bias[1], 2.0f);
    ck_assert_float_eq(f.w.bias[4], 0.0f);
    fz_folded_free(&f);

    /* Q8_0, AUTO = INSCALE: the bytes untouched, gamma attached */
    fb_weight_t pq[2] = { { .type = GG_Q8_0, .n_in = 64, .n_out = 2, .src = qa, .name = "a" },
                          { .type = GG_Q8_0, .n_in = 64, .n_out = 3, .src = qb, .name = "b" } };
    ck_assert_int_eq(fz_fold_rms(pq, 2, g, FZ_FOLD_AUTO, "ab", &f, err, sizeof(err)), 0);
    ck_assert_int_eq(f.w.type, GG_Q8_0);
    ck_assert_mem_eq(f.w.src, qa, sizeof(qa));
    ck_assert_mem_eq((const uint8_t *)f.w.src + sizeof(qa), qb, sizeof(qb));
    ck_assert_ptr_nonnull(f.w.in_scale);
    ck_assert_mem_eq(f.w.in_scale, g, sizeof(g));
    ck_assert_ptr_null(f.w.bias);
    fz_folded_free(&f);

    /* a single part under INSCALE is not copied at all */
    ck_assert_int_eq(fz_fold_rms(pq, 1, g, FZ_FOLD_INSCALE, "a", &f, err, sizeof(err)), 0);
    ck_assert_ptr_eq(f.w.src, qa);
    fz_folded_free(&f);

    /* REQUANT keeps the type; FOLD goes to F32 */
    ck_assert_int_eq(fz_fold_rms(pq, 2, g, FZ_FOLD_REQUANT, "ab", &f, err, sizeof(err)), 0);
    ck_assert_int_eq(f.w.type, GG_Q8_0);
    ck_assert_ptr_null(f.w.in_scale);
    fz_folded_free(&f);
    ck_assert_int_eq(fz_fold_rms(pq, 2, g, FZ_FOLD_FOLD, "ab", &f, err, sizeof(err)), 0);
    ck_assert_int_eq(f.w.type, GG_F32);
    fz_folded_free(&f);

    /* bad input: mismatched types or widths, and an unsupported type, named in the message */
    fb_weight_t mix[2] = { p32[0], pq[1] };
    ck_assert_int_eq(fz_fold_rms(mix, 2, g, FZ_FOLD_AUTO, "mix", &f, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "Q8_0"));
    fb_weight_t odd = p32[1];
    odd.n_in = 32;
    fb_weight_t mix2[2] = { p32[0], odd };
    ck_assert_int_eq(fz_fold_rms(mix2, 2, g, FZ_FOLD_AUTO, "mix", &f, err, sizeof(err)), -EINVAL);
    fb_weight_t i8 = { .type = GG_I8, .n_in = 64, .n_out = 1, .src = qa, .name = "i8" };
    ck_assert_int_eq(fz_fold_rms(&i8, 1, g, FZ_FOLD_AUTO, "i8", &f, err, sizeof(err)), FD_EUNSUP);
    ck_assert_ptr_nonnull(strstr(err, "I8"));
    ck_assert_int_eq(fz_fold_rms(pq, 0, g, FZ_FOLD_AUTO, "none", &f, err, sizeof(err)), -EINVAL);
}
END_TEST

/* ---- the decision for quantized weights, measured ----
 * For each type, the same stored matrix W (what the file holds) and the same rows x:
 *   ref      fp64: sum_i (x_i / r) gamma_i W_i
 *   unfused  fp32 normalized row (x * (1/r) * gamma), exact dot against W
 *   inscale  fp32 x * gamma, exact dot against W, times 1/r
 *   requant  exact dot of x against quantize(gamma * W), times 1/r
 * The dot is fq_dot_ref's (fp64 accumulation) so only the representation of weights and
 * activations differs.  inscale must be as good as unfused (within 2x + 1e-7); requant is
 * a second rounding of the weights and must be visibly worse: that is why the plan uses
 * INSCALE for every non-F32 type (docs/fusion.md has the table: fusion-bench --fold). */
typedef struct fold_errs {
    double unfused, inscale, requant;
} fold_errs_t;

static fold_errs_t measure_fold(int type, int64_t n_out, int64_t n_in, int rows, uint64_t seed)
{
    uint64_t s = seed;
    size_t rb = gg_row_bytes(type, n_in);
    float *wf = malloc(sizeof(float) * n_in), *wd = malloc(sizeof(float) * n_out * n_in);
    uint8_t *wq = malloc(rb * n_out), *wr = malloc(rb * n_out);
    float *g = malloc(sizeof(float) * n_in), *x = malloc(sizeof(float) * rows * n_in);
    float *t = malloc(sizeof(float) * n_in);
    float *yu = malloc(sizeof(float) * n_out), *yi = malloc(sizeof(float) * n_out);
    float *yr = malloc(sizeof(float) * n_out);
    double *ref = malloc(sizeof(double) * n_out);
    rand_gamma(g, n_in, &s);
    rand_rows(x, rows, n_in, &s);
    for (int64_t o = 0; o < n_out; o++) {
        for (int64_t i = 0; i < n_in; i++)
            wf[i] = 0.05f * tu_randf(&s);
        ck_assert_int_eq(fq_quantize_row(type, wf, wq + o * rb, n_in), 0);
        ck_assert_int_eq(fq_dequantize_row(type, wq + o * rb, wd + o * n_in, n_in), 0);
        for (int64_t i = 0; i < n_in; i++)
            t[i] = wd[o * n_in + i] * g[i];
        ck_assert_int_eq(fq_quantize_row(type, t, wr + o * rb, n_in), 0);
    }
    fold_errs_t e = { 0, 0, 0 };
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (int64_t)r * n_in;
        double inv = rms_inv64(xr, n_in, 1e-5);
        float inv32 = rms_inv32(xr, n_in, 1e-5f);
        float *xn = malloc(sizeof(float) * n_in), *xs = malloc(sizeof(float) * n_in);
        for (int64_t i = 0; i < n_in; i++) {
            xn[i] = xr[i] * inv32 * g[i];
            xs[i] = xr[i] * g[i];
        }
        for (int64_t o = 0; o < n_out; o++) {
            double acc = 0;
            for (int64_t i = 0; i < n_in; i++)
                acc += (double)xr[i] * inv * g[i] * wd[o * n_in + i];
            ref[o] = acc;
            yu[o] = (float)fq_dot_ref(type, wq + o * rb, xn, n_in);
            yi[o] = (float)fq_dot_ref(type, wq + o * rb, xs, n_in) * inv32;
            yr[o] = (float)fq_dot_ref(type, wr + o * rb, xr, n_in) * inv32;
        }
        e.unfused = fmax(e.unfused, rel_err(yu, ref, n_out));
        e.inscale = fmax(e.inscale, rel_err(yi, ref, n_out));
        e.requant = fmax(e.requant, rel_err(yr, ref, n_out));
        free(xn);
        free(xs);
    }
    free(wf); free(wd); free(wq); free(wr); free(g); free(x); free(t); free(yu); free(yi);
    free(yr); free(ref);
    return e;
}

START_TEST(test_fold_policy_numbers)
{
    static const int types[] = { GG_F16, GG_BF16, GG_Q8_0, GG_Q4_0, GG_Q4_K, GG_Q6_K };
    for (size_t k = 0; k < FD_ARRAY_LEN(types); k++) {
        int t = types[k];
        int64_t n_in = gg_block_elems(t) == 256 ? 512 : 96;
        fold_errs_t e = measure_fold(t, 24, n_in, 10, 100 + k);
        fprintf(stderr, "fold %-5s unfused %.2e  inscale %.2e  requant %.2e\n",
                gg_type_name(t), e.unfused, e.inscale, e.requant);
        ck_assert_msg(e.inscale <= 2 * e.unfused + 1e-7, "%s: inscale %.3g vs unfused %.3g",
                      gg_type_name(t), e.inscale, e.unfused);
        ck_assert_msg(e.requant > 10 * e.inscale, "%s: requant %.3g not worse than inscale %.3g",
                      gg_type_name(t), e.requant, e.inscale);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fusion");
    TCase *tc = tcase_create("fold");
    tcase_add_test(tc, test_fold_rms_f32);
    tcase_add_test(tc, test_fold_rms_equivalence);
    tcase_add_test(tc, test_fold_layernorm);
    tcase_add_test(tc, test_fold_layer_weight);
    tcase_add_test(tc, test_fold_concat);
    tcase_add_test(tc, test_fold_policy_numbers);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
