/* test_gptoss: gpt-oss random models run as llama.cpp runs them: both plans against a plain
 * double-precision forward written here from the architecture (attention sinks, biases,
 * swiglu_oai, top-k-then-softmax routing, the window on layers 0, 2, ...), where a model
 * without its sinks or its window is far off; fused equals unfused over several sequences;
 * ring caches on the local layers equal full caches; bad files get clear errors. */
#define _GNU_SOURCE /* memmem */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"
#include "engine/gguf.h"
#include "engine/gguf_write.h"
#include "engine/model.h"
#include "testutil.h"

/* The independent test's shape: head_dim 24 (n_head * head_dim 96 != n_embd 64), a window
 * of 5 under a 13-token prompt, 3 of 6 experts, F32 so only arithmetic differs. */
static gguf_w_llama_t small_spec(int wtype)
{
    return (gguf_w_llama_t){ .name = "gpt-oss-test", .arch = "gpt-oss", .n_embd = 64,
                             .n_layer = 2, .n_head = 4, .n_head_kv = 2, .head_dim = 24,
                             .n_ff = 40, .n_vocab = 300, .n_ctx = 64, .rope_base = 10000.0f,
                             .norm_eps = 1e-5f, .n_swa = 5, .wtype = wtype, .seed = 7,
                             .n_expert = 6, .n_expert_used = 3 };
}

static const char *write_model(const char *name, gguf_w_llama_t sp)
{
    const char *path = tu_tmp_path(name);
    char err[512];
    ck_assert_msg(gguf_w_llama_write(&sp, path, 1, err, sizeof(err)) == 0, "%s", err);
    return path;
}

static llm_model_t *load(const char *path, bool fusion, const char *backend, int n_batch,
                         bool swa_full)
{
    llm_load_params_t p;
    llm_load_params_default(&p);
    p.path = path;
    p.fusion = fusion;
    p.backend = backend;
    p.threads = 1;
    p.n_seq_max = 2;
    p.n_batch_max = n_batch;
    p.swa_full = swa_full;
    llm_model_t *m = NULL;
    char err[512];
    int rc = llm_load(&m, &p, err, sizeof(err));
    ck_assert_msg(rc == 0, "llm_load(%s): %s (%s)", path, err, fd_strerror(rc));
    return m;
}

/* ---- the plain forward ---------------------------------------------------------------- */

typedef struct ref_opts {
    bool no_sinks, no_window;
} ref_opts_t;

/* A tensor's values as floats: F32 in place, another type dequantized into a copy kept until
 * T_free (the plain forward of a Q8_0 file: its weights exactly, only the arithmetic ours). */
static float *T_copies[256];
static const char *T_names[256]; /* the reader's names: valid while g is */
static int T_n;

static const float *T(const gguf_t *g, const char *fmt, int l)
{
    char name[96];
    snprintf(name, sizeof(name), fmt, l);
    const gguf_tensor_t *t = gguf_find_tensor(g, name);
    ck_assert_msg(t != NULL, "%s", name);
    if (t->type == GG_F32)
        return t->data;
    for (int i = 0; i < T_n; i++)
        if (T_names[i] == t->name)
            return T_copies[i];
    const int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    ck_assert_int_lt(T_n, 256);
    T_names[T_n] = t->name;
    float *v = T_copies[T_n++] = malloc(sizeof(float) * (size_t)n);
    ck_assert_int_eq(fq_dequantize_row(t->type, t->data, v, n), 0);
    return v;
}

static void T_free(void)
{
    while (T_n > 0)
        free(T_copies[--T_n]);
}

/* y[o] = W[o, :] . x (+ b[o]), W n_out rows of n_in */
static void mv(const float *w, const float *b, const double *x, int n_in, int n_out, double *y)
{
    for (int o = 0; o < n_out; o++) {
        double s = b ? b[o] : 0.0;
        for (int i = 0; i < n_in; i++)
            s += (double)w[(size_t)o * n_in + i] * x[i];
        y[o] = s;
    }
}

static void rmsnorm(const double *x, const float *g, int n, double eps, double *y)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        y[i] = x[i] * r * g[i];
}

/* NEOX RoPE of one head: pairs (i, i + d/2) turn by pos * base^(-2i/d) */
static void rope(double *v, int d, int pos, double base)
{
    for (int i = 0; i < d / 2; i++) {
        double th = pos * pow(base, -2.0 * i / d), c = cos(th), s = sin(th);
        double a = v[i], b = v[i + d / 2];
        v[i] = a * c - b * s;
        v[i + d / 2] = a * s + b * c;
    }
}

/* Logits of every position of toks (n), n_vocab each, computed from the file's tensors. */
static void ref_forward(const gguf_t *g, const gguf_w_llama_t *sp, const int32_t *toks, int n,
                        ref_opts_t o, double *logits)
{
    const int E = sp->n_embd, L = sp->n_layer, H = sp->n_head, HK = sp->n_head_kv;
    const int D = sp->head_dim, NQ = H * D, NKV = HK * D, FE = sp->n_ff, V = sp->n_vocab;
    const int NE = sp->n_expert, K = sp->n_expert_used, W = sp->n_swa;
    const double eps = sp->norm_eps;
    double *x = calloc((size_t)n * E, sizeof(double)), *xn = malloc(sizeof(double) * E);
    double *q = malloc(sizeof(double) * NQ), *att = malloc(sizeof(double) * NQ);
    double *kc = malloc(sizeof(double) * (size_t)n * NKV);
    double *vc = malloc(sizeof(double) * (size_t)n * NKV);
    double *y = malloc(sizeof(double) * E), *rl = malloc(sizeof(double) * NE);
    double *gt = malloc(sizeof(double) * FE), *up = malloc(sizeof(double) * FE);
    double *s = malloc(sizeof(double) * n);
    const float *emb = T(g, "token_embd.weight", 0);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < E; i++)
            x[(size_t)t * E + i] = emb[(size_t)toks[t] * E + i];
    for (int l = 0; l < L; l++) {
        const bool swa = l % 2 == 0 && !o.no_window; /* llama.cpp's pattern 2 */
        const float *sinks = T(g, "blk.%d.attn_sinks.weight", l);
        /* K and V of every position first (causal attention reads only earlier ones) */
        for (int t = 0; t < n; t++) {
            rmsnorm(x + (size_t)t * E, T(g, "blk.%d.attn_norm.weight", l), E, eps, xn);
            mv(T(g, "blk.%d.attn_k.weight", l), T(g, "blk.%d.attn_k.bias", l), xn, E, NKV,
               kc + (size_t)t * NKV);
            mv(T(g, "blk.%d.attn_v.weight", l), T(g, "blk.%d.attn_v.bias", l), xn, E, NKV,
               vc + (size_t)t * NKV);
            for (int h = 0; h < HK; h++)
                rope(kc + (size_t)t * NKV + h * D, D, t, sp->rope_base);
        }
        for (int t = 0; t < n; t++) {
            double *xt = x + (size_t)t * E;
            rmsnorm(xt, T(g, "blk.%d.attn_norm.weight", l), E, eps, xn);
            mv(T(g, "blk.%d.attn_q.weight", l), T(g, "blk.%d.attn_q.bias", l), xn, E, NQ, q);
            const int lo = swa ? FD_MAX(0, t - W + 1) : 0;
            for (int h = 0; h < H; h++) {
                double *qh = q + h * D;
                const int kv = h / (H / HK);
                rope(qh, D, t, sp->rope_base);
                double mx = o.no_sinks ? -INFINITY : sinks[h];
                for (int u = lo; u <= t; u++) {
                    double d = 0;
                    for (int j = 0; j < D; j++)
                        d += qh[j] * kc[(size_t)u * NKV + kv * D + j];
                    s[u] = d / sqrt((double)D);
                    mx = fmax(mx, s[u]);
                }
                double den = o.no_sinks ? 0.0 : exp(sinks[h] - mx);
                for (int u = lo; u <= t; u++)
                    den += (s[u] = exp(s[u] - mx));
                for (int j = 0; j < D; j++) {
                    double a = 0;
                    for (int u = lo; u <= t; u++)
                        a += s[u] * vc[(size_t)u * NKV + kv * D + j];
                    att[h * D + j] = a / den;
                }
            }
            mv(T(g, "blk.%d.attn_output.weight", l), T(g, "blk.%d.attn_output.bias", l), att,
               NQ, E, y);
            for (int i = 0; i < E; i++)
                xt[i] += y[i];
            /* the MoE: router logits + bias, top K, softmax over those K */
            rmsnorm(xt, T(g, "blk.%d.post_attention_norm.weight", l), E, eps, xn);
            mv(T(g, "blk.%d.ffn_gate_inp.weight", l), T(g, "blk.%d.ffn_gate_inp.bias", l), xn,
               E, NE, rl);
            int sel[16];
            double w[16], wsum = 0;
            for (int k = 0; k < K; k++) {
                int best = -1;
                for (int e = 0; e < NE; e++) {
                    bool taken = false;
                    for (int j = 0; j < k; j++)
                        taken |= sel[j] == e;
                    if (!taken && (best < 0 || rl[e] > rl[best]))
                        best = e;
                }
                sel[k] = best;
            }
            for (int k = 0; k < K; k++)
                wsum += (w[k] = exp(rl[sel[k]] - rl[sel[0]]));
            const float *wg = T(g, "blk.%d.ffn_gate_exps.weight", l);
            const float *wu = T(g, "blk.%d.ffn_up_exps.weight", l);
            const float *wd = T(g, "blk.%d.ffn_down_exps.weight", l);
            const float *bg = T(g, "blk.%d.ffn_gate_exps.bias", l);
            const float *bu = T(g, "blk.%d.ffn_up_exps.bias", l);
            const float *bd = T(g, "blk.%d.ffn_down_exps.bias", l);
            for (int k = 0; k < K; k++) {
                const int e = sel[k];
                mv(wg + (size_t)e * FE * E, bg + (size_t)e * FE, xn, E, FE, gt);
                mv(wu + (size_t)e * FE * E, bu + (size_t)e * FE, xn, E, FE, up);
                for (int i = 0; i < FE; i++) { /* swiglu_oai: alpha 1.702, limit 7 */
                    double a = fmin(gt[i], 7.0), b = fmax(fmin(up[i], 7.0), -7.0);
                    gt[i] = a / (1.0 + exp(-1.702 * a)) * (b + 1.0);
                }
                mv(wd + (size_t)e * E * FE, bd + (size_t)e * E, gt, FE, E, y);
                for (int i = 0; i < E; i++)
                    xt[i] += w[k] / wsum * y[i];
            }
        }
    }
    for (int t = 0; t < n; t++) {
        rmsnorm(x + (size_t)t * E, T(g, "output_norm.weight", 0), E, eps, xn);
        mv(T(g, "output.weight", 0), NULL, xn, E, V, logits + (size_t)t * V);
    }
    free(x); free(xn); free(q); free(att); free(kc); free(vc); free(y); free(rl); free(gt);
    free(up); free(s);
    T_free();
}

static double rel_diff_d(const float *a, const double *b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs(a[i] - b[i]));
        s = fmax(s, fabs(b[i]));
    }
    return d / s;
}

static const int32_t prompt[13] = { 1, 200, 45, 299, 259, 17, 3, 260, 77, 128, 90, 17, 5 };

/* Both plans, on the CPU backend and (loosely, BFP8 is its arithmetic) on Corsair, against
 * the plain forward; the same forward without sinks, or without the window, is far off. */
START_TEST(test_vs_plain)
{
    gguf_w_llama_t sp = small_spec(GG_F32);
    const char *path = write_model("small.gguf", sp);
    const int N = 13, V = sp.n_vocab;
    double *ref = malloc(sizeof(double) * N * V), *alt = malloc(sizeof(double) * N * V);
    float *lg = malloc(sizeof(float) * N * V);
    double off[2];
    for (int f = 0; f < 2; f++) {
        llm_model_t *m = load(path, f == 1, "cpu", 512, false);
        const llm_hparams_t *hp = llm_hparams(m);
        ck_assert(hp->gptoss);
        ck_assert_int_eq(hp->n_swa, 5);
        ck_assert_int_eq(hp->n_swa_layers, 1);
        ck_assert_int_eq(hp->rope_mode, FB_ROPE_NEOX);
        if (f == 0) {
            ref_forward(llm_gguf(m), &sp, prompt, N, (ref_opts_t){ 0 }, ref);
            ref_forward(llm_gguf(m), &sp, prompt, N, (ref_opts_t){ .no_sinks = true }, alt);
            off[0] = 0;
            for (int i = 0; i < N * V; i++)
                off[0] = fmax(off[0], fabs(ref[i] - alt[i]));
            ref_forward(llm_gguf(m), &sp, prompt, N, (ref_opts_t){ .no_window = true }, alt);
            off[1] = 0;
            for (int i = 0; i < N * V; i++)
                off[1] = fmax(off[1], fabs(ref[i] - alt[i]));
        }
        int slot;
        ck_assert_int_eq(llm_seq_alloc(m, &slot), 0);
        llm_batch_entry_t e = { .slot = slot, .tokens = prompt, .n_tokens = N, .want_logits = N };
        ck_assert_int_eq(llm_decode(m, &e, 1, lg), 0);
        if (getenv("GPTOSS_DEBUG")) {
            ref_forward(llm_gguf(m), &sp, prompt, N, (ref_opts_t){ .no_sinks = true }, alt);
            fprintf(stderr, "nosinks %g\n", rel_diff_d(lg, alt, (size_t)N * V));
            ref_forward(llm_gguf(m), &sp, prompt, N, (ref_opts_t){ .no_window = true }, alt);
            fprintf(stderr, "nowin %g\n", rel_diff_d(lg, alt, (size_t)N * V));
            for (int t = 0; t < N; t++)
                fprintf(stderr, "pos %d: %g\n", t, rel_diff_d(lg + t * V, ref + t * V, V));
        }
        double d = rel_diff_d(lg, ref, (size_t)N * V);
        fprintf(stderr, "gpt-oss %s plan vs the plain forward: %.2e\n", f ? "fused" : "unfused",
                d);
        ck_assert_msg(d < 2e-5, "%s plan: %g", f ? "fused" : "unfused", d);
        llm_free(m);
    }
    double scale = 0;
    for (int i = 0; i < N * V; i++)
        scale = fmax(scale, fabs(ref[i]));
    fprintf(stderr, "gpt-oss without sinks: off by %.3g, without the window: %.3g (of %.3g)\n",
            off[0], off[1], scale);
    ck_assert_msg(off[0] > 0.02 * scale && off[1] > 0.02 * scale, "%g %g", off[0], off[1]);
    free(ref);
    free(alt);
    free(lg);
}
END_TEST

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Two sequences of different lengths, prefilled then stepped 6 times, both batched in each
 * llm_decode: every row's logits (28 + 12 rows) into out. */
static void run_two(const char *path, bool fusion, int V, float *out)
{
    llm_load_params_t p;
    llm_load_params_default(&p);
    p.path = path;
    p.fusion = fusion;
    p.threads = 1;
    p.n_seq_max = 2;
    llm_model_t *m = NULL;
    char err[512];
    ck_assert_msg(llm_load(&m, &p, err, sizeof(err)) == 0, "%s", err);
    int32_t a[21], b[7];
    for (int i = 0; i < 21; i++)
        a[i] = (i * 37 + 11) % V;
    for (int i = 0; i < 7; i++)
        b[i] = (i * 53 + 5) % V;
    int s0, s1;
    ck_assert_int_eq(llm_seq_alloc(m, &s0), 0);
    ck_assert_int_eq(llm_seq_alloc(m, &s1), 0);
    llm_batch_entry_t e[2] = { { .slot = s0, .tokens = a, .n_tokens = 21, .want_logits = 21 },
                               { .slot = s1, .tokens = b, .n_tokens = 7, .want_logits = 7 } };
    ck_assert_int_eq(llm_decode(m, e, 2, out), 0);
    for (int step = 0; step < 6; step++) {
        int32_t t0 = (step * 17 + 3) % V, t1 = (step * 29 + 8) % V;
        e[0] = (llm_batch_entry_t){ .slot = s0, .tokens = &t0, .n_tokens = 1, .want_logits = 1 };
        e[1] = (llm_batch_entry_t){ .slot = s1, .tokens = &t1, .n_tokens = 1, .want_logits = 1 };
        ck_assert_int_eq(llm_decode(m, e, 2, out + (size_t)(28 + 2 * step) * V), 0);
    }
    llm_free(m);
}

/* Fused against unfused over two batched sequences: the fused plan defers each RMS scale past
 * products that carry biases (added after the scale) and the softmax denominator, sink
 * included, past P.V.  F32: within 1e-5 of the logits' scale, and of the plain forward of
 * each sequence.  Q8_0, and Q8_0 with MXFP4 experts (the released files' layout): the 8-bit
 * activation rounding differs between the plans (raw and normalized rows), so each is
 * compared with the plain forward on the file's weights (dequantized): fused no worse than
 * 1.5 x unfused (test_model's rule), on the median row. */
START_TEST(test_fused_unfused)
{
    static const char *const label[3] = { "F32", "Q8_0", "Q8_0 + MXFP4 experts" };
    for (int q = 0; q < 3; q++) {
        gguf_w_llama_t sp = small_spec(q ? GG_Q8_0 : GG_F32);
        sp.n_embd = 96;
        sp.n_ff = 64;
        sp.exp_wtype = q == 2 ? GG_MXFP4 : 0; /* as the released files hold them */
        const char *path = write_model(q == 2 ? "mxfp4.gguf" : q ? "q8.gguf" : "f32.gguf", sp);
        const int V = sp.n_vocab;
        const size_t n = (size_t)40 * V;
        float *lu = malloc(sizeof(float) * n), *lf = malloc(sizeof(float) * n);
        float *lr = malloc(sizeof(float) * n);
        run_two(path, false, V, lu);
        run_two(path, true, V, lf);
        if (q == 0) {
            double d = tu_rel_diff(lf, lu, n);
            fprintf(stderr, "gpt-oss F32 fused vs unfused: %.2e\n", d);
            ck_assert_msg(d < 1e-5, "%g", d);
        }
        {
            /* the plain forward of each sequence on the file's weights, in run_two's row order */
            gguf_t *g;
            char err[512];
            ck_assert_msg(gguf_open(&g, path, err, sizeof(err)) == 0, "%s", err);
            int32_t sa[27], sb[13];
            for (int i = 0; i < 27; i++)
                sa[i] = i < 21 ? (i * 37 + 11) % V : ((i - 21) * 17 + 3) % V;
            for (int i = 0; i < 13; i++)
                sb[i] = i < 7 ? (i * 53 + 5) % V : ((i - 7) * 29 + 8) % V;
            double *ra = malloc(sizeof(double) * 27 * V), *rb = malloc(sizeof(double) * 13 * V);
            ref_forward(g, &sp, sa, 27, (ref_opts_t){ 0 }, ra);
            ref_forward(g, &sp, sb, 13, (ref_opts_t){ 0 }, rb);
            gguf_close(g);
            for (int r = 0; r < 40; r++) {
                const double *src = r < 21 ? ra + (size_t)r * V
                                  : r < 28 ? rb + (size_t)(r - 21) * V
                                  : (r - 28) % 2 == 0 ? ra + (size_t)(21 + (r - 28) / 2) * V
                                                      : rb + (size_t)(7 + (r - 28) / 2) * V;
                for (int i = 0; i < V; i++)
                    lr[(size_t)r * V + i] = (float)src[i];
            }
            free(ra);
            free(rb);
            /* per row, the median: an 8-bit rounding that flips one of a row's experts
             * moves that row far (measured: one row of 40 off by half the logits' scale,
             * in both plans alike), which a worst case would take for the plans' error */
            double du[40], df[40];
            for (int r = 0; r < 40; r++) {
                du[r] = tu_rel_diff(lu + (size_t)r * V, lr + (size_t)r * V, (size_t)V);
                df[r] = tu_rel_diff(lf + (size_t)r * V, lr + (size_t)r * V, (size_t)V);
            }
            qsort(du, 40, sizeof(double), cmp_double);
            qsort(df, 40, sizeof(double), cmp_double);
            fprintf(stderr, "gpt-oss %s vs the plain forward, median row: unfused %.2e, fused "
                    "%.2e\n", label[q], du[20], df[20]);
            ck_assert_msg(q ? df[20] <= 1.5 * du[20] + 1e-6 && du[20] < 0.05
                            : du[39] < 1e-5 && df[39] < 1e-5,
                          "fused %g unfused %g", df[20], du[20]);
        }
        free(lu);
        free(lf);
        free(lr);
    }
}
END_TEST

/* Rings on the local layers (window 5 + batch 4 - 1 = 8 rows a slot of n_ctx 64) give the
 * logits a full cache gives, over 40 positions (the rings wrap four times), fused and
 * unfused. */
START_TEST(test_rings)
{
    gguf_w_llama_t sp = small_spec(GG_F32);
    const char *path = write_model("ring.gguf", sp);
    const int V = sp.n_vocab, N = 40;
    int32_t toks[40];
    for (int i = 0; i < N; i++)
        toks[i] = (i * 41 + 7) % V;
    for (int f = 0; f < 2; f++) {
        llm_model_t *r = load(path, f == 1, "cpu", 4, false), *full = load(path, f == 1, "cpu",
                                                                             4, true);
        ck_assert_int_eq(llm_swa_ring(r), 8);
        ck_assert_int_eq(llm_swa_ring(full), 0);
        ck_assert(llm_cache_bytes(r) < llm_cache_bytes(full));
        float *lr = malloc(sizeof(float) * N * V), *lf = malloc(sizeof(float) * N * V);
        llm_model_t *ms[2] = { r, full };
        float *out[2] = { lr, lf };
        for (int k = 0; k < 2; k++) {
            int slot;
            ck_assert_int_eq(llm_seq_alloc(ms[k], &slot), 0);
            /* a prefill of 10, then one token a step */
            llm_batch_entry_t e = { .slot = slot, .tokens = toks, .n_tokens = 10,
                                    .want_logits = 10 };
            ck_assert_int_eq(llm_decode(ms[k], &e, 1, out[k]), 0);
            for (int t = 10; t < N; t++) {
                e = (llm_batch_entry_t){ .slot = slot, .tokens = toks + t, .n_tokens = 1,
                                         .want_logits = 1 };
                ck_assert_int_eq(llm_decode(ms[k], &e, 1, out[k] + (size_t)t * V), 0);
            }
        }
        double d = tu_rel_diff(lr, lf, (size_t)N * V);
        fprintf(stderr, "gpt-oss rings vs full caches (%s): %.2e\n", f ? "fused" : "unfused", d);
        ck_assert_msg(d < 1e-5, "%g", d);
        free(lr);
        free(lf);
        llm_free(r);
        llm_free(full);
    }
}
END_TEST

/* The small model as bytes, with one same-length name swapped for another (so the file
 * stays a valid GGUF), loaded from a file: the error code and its message. */
static int load_patched(const char *from, const char *to, char *err, size_t errlen)
{
    gguf_w_llama_t sp = small_spec(GG_F32);
    gguf_w_t *w;
    uint8_t *buf;
    size_t size;
    ck_assert_int_eq(gguf_w_new(&w), 0);
    ck_assert_msg(gguf_w_llama_add(w, &sp, err, errlen) == 0, "%s", err);
    ck_assert_int_eq(gguf_w_write_mem(w, &buf, &size, err, errlen), 0);
    gguf_w_free(w);
    const size_t n = strlen(from);
    ck_assert_uint_eq(n, strlen(to));
    uint8_t *a = memmem(buf, size, from, n), *b = to[0] ? memmem(buf, size, to, n) : NULL;
    ck_assert_ptr_nonnull(a);
    memcpy(a, to, n);
    if (b) /* a swap: the other name takes from's */
        memcpy(b, from, n);
    const char *path = tu_tmp_path("bad.gguf");
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(buf, 1, size, f), size);
    fclose(f);
    free(buf);
    llm_load_params_t p;
    llm_load_params_default(&p);
    p.path = path;
    llm_model_t *m = NULL;
    int rc = llm_load(&m, &p, err, errlen);
    ck_assert_ptr_null(m);
    return rc;
}

START_TEST(test_bad_files)
{
    char err[512];
    /* no sinks on layer 1 */
    ck_assert_int_eq(load_patched("blk.1.attn_sinks.weight", "blk.1.attn_sinkz.weight", err,
                                  sizeof(err)), FD_EFORMAT);
    ck_assert_msg(strstr(err, "blk.1.attn_sinks.weight is missing"), "%s", err);
    /* sinks of 6 (the router bias's length) where 4 heads need 4 */
    ck_assert_int_eq(load_patched("blk.0.attn_sinks.weight", "blk.0.ffn_gate_inp.bias", err,
                                  sizeof(err)), FD_ESHAPE);
    ck_assert_msg(strstr(err, "blk.0.attn_sinks.weight has shape [6], expected [4]"), "%s",
                  err);
    /* the experts' biases: missing, and the gate's swapped with the down's ([64, 6]) */
    ck_assert_int_eq(load_patched("blk.0.ffn_up_exps.bias", "blk.0.ffn_up_exps.bia_", err,
                                  sizeof(err)), FD_EFORMAT);
    ck_assert_msg(strstr(err, "blk.0.ffn_up_exps.bias is missing"), "%s", err);
    ck_assert_int_eq(load_patched("blk.1.ffn_gate_exps.bias", "blk.1.ffn_down_exps.bias", err,
                                  sizeof(err)), FD_ESHAPE);
    ck_assert_msg(strstr(err, "blk.1.ffn_gate_exps.bias has shape [64, 6], expected [40, 6]"),
                  "%s", err);
    ck_assert_int_eq(load_patched("blk.0.attn_output.bias", "blk.0.attn_output.bia_", err,
                                  sizeof(err)), FD_EFORMAT);
    ck_assert_msg(strstr(err, "blk.0.attn_output.bias is missing"), "%s", err);
    ck_assert_int_eq(load_patched("blk.1.ffn_gate_inp.bias", "blk.1.ffn_gate_inp.bia_", err,
                                  sizeof(err)), FD_EFORMAT);
    ck_assert_msg(strstr(err, "blk.1.ffn_gate_inp.bias is missing"), "%s", err);
    /* the FFN norm is post_attention_norm (a file with ffn_norm instead lacks it) */
    ck_assert_int_eq(load_patched("blk.0.post_attention_norm.weight",
                                  "blk.0.post_attention_norX.weight", err, sizeof(err)),
                     FD_EFORMAT);
    ck_assert_msg(strstr(err, "blk.0.post_attention_norm.weight is missing"), "%s", err);
    /* keys llama.cpp requires */
    ck_assert_int_eq(load_patched("gpt-oss.attention.sliding_window",
                                  "gpt-oss.attention.sliding_windoX", err, sizeof(err)),
                     FD_EFORMAT);
    ck_assert_msg(strstr(err, "gpt-oss.attention.sliding_window is missing"), "%s", err);
    ck_assert_int_eq(load_patched("gpt-oss.expert_feed_forward_length",
                                  "gpt-oss.expert_feed_forward_lengtX", err, sizeof(err)),
                     FD_EFORMAT);
    ck_assert_msg(strstr(err, "gpt-oss.expert_feed_forward_length is missing"), "%s", err);
    /* the output matrix is not tied in gpt-oss */
    ck_assert_int_eq(load_patched("output.weight", "outpuX.weight", err, sizeof(err)),
                     FD_EFORMAT);
    ck_assert_msg(strstr(err, "output.weight is missing"), "%s", err);
}
END_TEST

/* The backend's gpt-oss ops against their references: a sink joins only the denominator
 * (an attention whose sinks are -inf-like equals one without; a large sink shrinks every
 * output by the same factor), and swiglu_oai clamps as llama.cpp's does. */
START_TEST(test_ops)
{
    char err[256];
    fb_backend_t *be;
    fb_config_t cfg = { .threads = 2 };
    ck_assert_msg(fb_create("cpu", &cfg, &be, err, sizeof(err)) == 0, "%s", err);
    ck_assert(fb_gptoss_ops(be));
    const int64_t n = 37;
    float g[2 * 37], u[2 * 37], y[37], yr[37];
    uint64_t st = 3;
    for (int i = 0; i < 2 * n; i++) {
        g[i] = 12.0f * tu_randf(&st);
        u[i] = 12.0f * tu_randf(&st);
    }
    /* one row of 37 from rows 2 * 37 apart: the ld */
    ck_assert_int_eq(fb_swiglu_oai(be, g, u, 1, n, 2 * n, 1.702f, 7.0f, y), 0);
    for (int i = 0; i < n; i++) {
        double a = fmin(g[i], 7.0), b = fmax(fmin(u[i], 7.0), -7.0);
        yr[i] = (float)(a / (1.0 + exp(-1.702 * a)) * (b + 1.0));
        ck_assert_msg(fabsf(y[i] - yr[i]) <= 1e-5f * fmaxf(1.0f, fabsf(yr[i])), "%d: %g %g", i,
                      y[i], yr[i]);
    }
    ck_assert_int_eq(fb_swiglu_oai(be, g, u, 1, n, n, 1.702f, 0.0f, y), -EINVAL);
    /* attention of 3 rows at positions 4..6 over 7 cache rows, 4 heads of 2 kv heads */
    const int H = 4, HK = 2, D = 8, R = 7;
    float q[3 * 32], k[7 * 16], v[7 * 16], o1[3 * 32], o2[3 * 32], o3[3 * 32];
    float sinks[4] = { -1e30f, -1e30f, -1e30f, -1e30f }, big[4] = { 3, 3, 3, 3 };
    for (int i = 0; i < 3 * 32; i++)
        q[i] = tu_randf(&st);
    for (int i = 0; i < R * 16; i++) {
        k[i] = tu_randf(&st);
        v[i] = tu_randf(&st);
    }
    int32_t pos[3] = { 4, 5, 6 };
    for (int mode = 0; mode < 2; mode++) {
        fb_attn_t a = { .q = q, .ldq = H * D, .k = k, .v = v, .ldkv = HK * D, .out = o1,
                        .ldo = H * D, .n_q = 3, .pos = pos, .n_head = H, .n_head_kv = HK,
                        .head_dim = D, .scale = 0.35f,
                        .mode = mode ? FB_SOFTMAX_MAXSUM : FB_SOFTMAX_REF };
        ck_assert_int_eq(fb_attention(be, &a, 1), 0);
        a.out = o2;
        a.sinks = sinks;
        ck_assert_int_eq(fb_attention(be, &a, 1), 0);
        for (int i = 0; i < 3 * 32; i++)
            ck_assert_float_eq_tol(o1[i], o2[i], 1e-6f);
        /* a sink of 3 in every head: each head's output is o1 times sum / (sum + e^3 ...) */
        a.out = o3;
        a.sinks = big;
        ck_assert_int_eq(fb_attention(be, &a, 1), 0);
        for (int r = 0; r < 3; r++)
            for (int h = 0; h < H; h++) {
                const float *x = q + r * 32 + h * D;
                double mx = 3, sum = 0;
                for (int t = 0; t <= pos[r]; t++) {
                    double d = 0;
                    for (int j = 0; j < D; j++)
                        d += x[j] * k[t * 16 + (h / 2) * D + j];
                    mx = fmax(mx, d * 0.35);
                }
                for (int t = 0; t <= pos[r]; t++) {
                    double d = 0;
                    for (int j = 0; j < D; j++)
                        d += x[j] * k[t * 16 + (h / 2) * D + j];
                    sum += exp(d * 0.35 - mx);
                }
                double f = sum / (sum + exp(3 - mx));
                for (int j = 0; j < D; j++)
                    ck_assert_float_eq_tol(o3[r * 32 + h * D + j],
                                           (float)(o1[r * 32 + h * D + j] * f), 2e-6f);
            }
    }
    fb_destroy(be);
}
END_TEST

int main(void)
{
    tu_tmp_make("fusiond-gptoss");
    Suite *s = suite_create("gptoss");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_ops);
    tcase_add_test(tc, test_vs_plain);
    tcase_add_test(tc, test_fused_unfused);
    tcase_add_test(tc, test_rings);
    tcase_add_test(tc, test_bad_files);
    suite_add_tcase(s, tc);
    int rc = tu_run(s);
    tu_tmp_remove();
    return rc;
}
