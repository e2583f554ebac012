/* corsair_backend.c: the Corsair virtual device behind backend.h's vtable.  It computes real
 * results on the host with Corsair's numerics (bfp.h) and charges every op to the timing
 * model (timing.h):
 *  - weights: dequantized from their file type (fq_dequantize_row) and converted to block
 *    floating point at fb_weight_prepare; 1-D weights (norm gammas) stay fp32 for the SIMD;
 *  - GEMM: each input row (times in_scale, when set) converted to BFP the same way, the
 *    DIMC's integer block products accumulated in fp32 (cs_bfp_dot), the deferred norm scale
 *    and the bias applied to the fp32 outputs;
 *  - attention: Q and K rows in BFP blocks along head_dim for the scores, P and V in blocks
 *    along the context for P.V (V's blocks cover the positions in the cache at the call, as
 *    a cache held in BFP would; a sliding window masks the rows before it as the causal mask
 *    masks those after, and a soft-cap is an fp32 tanh of the scores); softmax, norms, RoPE,
 *    SiLU, GELU, scales and adds in fp32 on the SIMD,
 *    reductions summed over 64 lanes then a tree, as a SIMD unit sums;
 *  - the embedding table is looked up in its file format (an LPDDR table, not a DIMC operand).
 * Timing: each op's inputs are ready when the op that wrote their buffer finished on the
 * simulated device (buffers are tracked per allocation); the op's growth of the critical path
 * goes to stats.dev_s[class] and dev_total_s.  Ops run synchronously on the calling thread. */
#include "backends/corsair/corsair.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"

typedef struct cs_alloc {
    uintptr_t base;
    size_t size;
    double ready;        /* simulated time its contents were last written */
    bool kv;             /* read by attention as K or V: a KV cache */
} cs_alloc_t;

typedef struct fcs {
    fb_backend_t base;
    cs_bfp_fmt_t wfmt, xfmt;
    bool poly2;
    cs_params_t params;
    cs_sim_t *sim;
    cs_alloc_t *allocs;  /* sorted by base */
    int n_allocs, cap_allocs;
    double alloc_bytes, dimc_bytes;
    int n_layer;         /* from the weights' "blk.N." names */
    double residual_bytes;
} fcs_t;

typedef struct fcs_weight {
    int8_t *q;           /* n_out rows of n_in mantissas */
    uint8_t *e;          /* n_out rows of nb exponents */
    int64_t nb;
    float *vec;          /* 1-D weights: fp32 values */
    bool row_parallel;   /* attn_output / ffn_down: split along n_in under tensor parallelism */
    bool head;           /* the LM head */
    double bytes;        /* device bytes counted in dimc_bytes */
    char label[24];      /* the name without "blk.N." and ".weight", for schedules */
} fcs_weight_t;

/* ---- buffers and their ready times ---- */

static cs_alloc_t *find_alloc(fcs_t *c, const void *p)
{
    uintptr_t a = (uintptr_t)p;
    int lo = 0, hi = c->n_allocs;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (c->allocs[mid].base <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return NULL;
    cs_alloc_t *r = &c->allocs[lo - 1];
    return a < r->base + FD_MAX(r->size, (size_t)1) ? r : NULL;
}

/* Memory the model does not know (host arrays) is ready from the start. */
static double ready_of(fcs_t *c, const void *p)
{
    const cs_alloc_t *a = find_alloc(c, p);
    return a ? a->ready : 0.0;
}

/* A buffer is ready when the last of the ops writing it is done: the unfused plan's Q, K
 * and V products write parts of one buffer, and the next op reads them all. */
static void set_ready(fcs_t *c, const void *p, double t)
{
    cs_alloc_t *a = find_alloc(c, p);
    if (a)
        a->ready = FD_MAX(a->ready, t);
}

static void *cs_alloc(fb_backend_t *be, size_t bytes)
{
    fcs_t *c = (fcs_t *)be;
    if (c->n_allocs == c->cap_allocs) {
        int cap = c->cap_allocs ? 2 * c->cap_allocs : 64;
        cs_alloc_t *n = realloc(c->allocs, (size_t)cap * sizeof(*n));
        if (!n)
            return NULL;
        c->allocs = n;
        c->cap_allocs = cap;
    }
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64))
        return NULL;
    int i = c->n_allocs;
    while (i > 0 && c->allocs[i - 1].base > (uintptr_t)p) {
        c->allocs[i] = c->allocs[i - 1];
        i--;
    }
    c->allocs[i] = (cs_alloc_t){ .base = (uintptr_t)p, .size = bytes };
    c->n_allocs++;
    c->alloc_bytes += (double)bytes;
    return p;
}

static void cs_free(fb_backend_t *be, void *p)
{
    fcs_t *c = (fcs_t *)be;
    for (int i = 0; i < c->n_allocs; i++)
        if (c->allocs[i].base == (uintptr_t)p) {
            c->alloc_bytes -= (double)c->allocs[i].size;
            memmove(&c->allocs[i], &c->allocs[i + 1],
                    (size_t)(c->n_allocs - i - 1) * sizeof(*c->allocs));
            c->n_allocs--;
            break;
        }
    free(p);
}

/* ---- timing glue ---- */

/* Freezes the mapping the first time the device computes: by then the plan has prepared
 * every weight and the engine has allocated the KV cache. */
static void map_once(fcs_t *c)
{
    if (cs_sim_mapped(c->sim))
        return;
    cs_model_shape_t m = { .n_layer = c->n_layer, .dimc_weight_bytes = c->dimc_bytes,
                           .kv_bytes = c->alloc_bytes * c->params.v[CS_P_ABYTES] / 4 };
    cs_sim_map(c->sim, &m);
}

/* Adds the critical-path growth since `before` to the backend's stats. */
static void charge(fcs_t *c, int cls, double before)
{
    double d = cs_sim_now(c->sim) - before;
    c->base.stats.dev_s[cls] += d;
    c->base.stats.dev_total_s += d;
}

static int cs_to_device(fb_backend_t *be, void *dst, const void *src, size_t bytes)
{
    fcs_t *c = (fcs_t *)be;
    if (bytes)
        memmove(dst, src, bytes);
    map_once(c);
    double t0 = cs_sim_now(c->sim);
    set_ready(c, dst, cs_sim_transfer_host(c->sim, t0, (double)bytes));
    charge(c, FB_OP_OTHER, t0);
    return 0;
}

static int cs_to_host(fb_backend_t *be, void *dst, const void *src, size_t bytes)
{
    fcs_t *c = (fcs_t *)be;
    if (bytes)
        memmove(dst, src, bytes);
    map_once(c);
    double t0 = cs_sim_now(c->sim);
    cs_sim_transfer_host(c->sim, ready_of(c, src), (double)bytes);
    charge(c, FB_OP_OTHER, t0);
    return 0;
}

static int cs_sync(fb_backend_t *be)
{
    return 0;
}

/* ---- weights ---- */

static int layer_of(const char *name)
{
    int l;
    if (name && sscanf(name, "blk.%d.", &l) == 1 && l >= 0)
        return l;
    return -1;
}

static bool is_head(const char *name)
{
    return name && (strcmp(name, "output") == 0 || strncmp(name, "output.", 7) == 0 ||
                    strstr(name, "(tied output)"));
}

static int cs_weight_prepare(fb_backend_t *be, fb_weight_t *w)
{
    fcs_t *c = (fcs_t *)be;
    int rc = fb_weight_check(w);
    if (rc)
        return rc;
    fcs_weight_t *cw = calloc(1, sizeof(*cw));
    float *row = malloc((size_t)w->n_in * sizeof(float));
    if (!cw || !row)
        goto nomem;
    const uint64_t rb = gg_row_bytes(w->type, (uint64_t)w->n_in);
    if (w->n_out == 1) { /* a norm's gamma for the SIMD, or a one-row matrix */
        if (!(cw->vec = malloc((size_t)w->n_in * sizeof(float))))
            goto nomem;
        fq_dequantize_row(w->type, w->src, cw->vec, w->n_in);
    }
    size_t n;
    cw->nb = cs_bfp_nblocks(&c->wfmt, w->n_in);
    if (fd_mul_size((size_t)w->n_out, (size_t)w->n_in, &n))
        goto nomem;
    cw->q = malloc(n);
    cw->e = malloc((size_t)w->n_out * (size_t)cw->nb);
    if (!cw->q || !cw->e)
        goto nomem;
    for (int64_t o = 0; o < w->n_out; o++) {
        fq_dequantize_row(w->type, (const uint8_t *)w->src + (uint64_t)o * rb, row, w->n_in);
        cs_bfp_encode(&c->wfmt, row, w->n_in, cw->q + (size_t)o * (size_t)w->n_in,
                      cw->e + (size_t)o * (size_t)cw->nb);
    }
    free(row);
    const char *nm = w->name;
    cw->row_parallel = nm && (strstr(nm, "attn_output") || strstr(nm, "ffn_down"));
    cw->head = is_head(nm);
    if (!(nm && strcmp(nm, "token_embd.weight") == 0)) { /* the table is looked up only */
        cw->bytes = (double)w->n_out * (double)w->n_in * c->params.v[CS_P_WBYTES];
        c->dimc_bytes += cw->bytes;
    }
    c->n_layer = FD_MAX(c->n_layer, layer_of(nm) + 1);
    const char *lb = nm ? nm : "matmul";
    if (layer_of(lb) >= 0)
        lb = strchr(lb + 4, '.') + 1;
    snprintf(cw->label, sizeof(cw->label), "%.*s", (int)strcspn(lb, " "), lb);
    char *dot = strstr(cw->label, ".weight");
    if (dot)
        *dot = '\0';
    w->impl = cw;
    return 0;
nomem:
    if (cw) {
        free(cw->q);
        free(cw->e);
        free(cw->vec);
    }
    free(cw);
    free(row);
    return -ENOMEM;
}

static void cs_weight_release(fb_backend_t *be, fb_weight_t *w)
{
    fcs_t *c = (fcs_t *)be;
    fcs_weight_t *cw = w->impl;
    if (!cw)
        return;
    c->dimc_bytes -= cw->bytes;
    free(cw->q);
    free(cw->e);
    free(cw->vec);
    free(cw);
}

/* A prepared 1-D weight of n values, or NULL. */
static const float *weight_vec(const fb_weight_t *w, int64_t n)
{
    if (!w || !w->impl || w->n_out != 1 || w->n_in != n)
        return NULL;
    return ((const fcs_weight_t *)w->impl)->vec;
}

/* ---- fp32 SIMD helpers ---- */

/* sum of x[i] (sq: of x[i]^2) as the SIMD sums: 64 lane accumulators, then a pairwise tree. */
#define LANES 64
static float lane_sum(const float *x, int64_t n, int stride, bool sq)
{
    float acc[LANES] = { 0 };
    for (int64_t i = 0; i < n; i++) {
        float v = x[i * stride];
        acc[i % LANES] += sq ? v * v : v;
    }
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int i = 0; i < w; i++)
            acc[i] += acc[i + w];
    return acc[0];
}

static float norm_scale(int kind, const float *x, int64_t n, float eps)
{
    if (kind == FB_NORM_RMS)
        return 1.0f / sqrtf(lane_sum(x, n, 1, true) / (float)n + eps);
    if (kind == FB_NORM_LAYER) {
        float mean = lane_sum(x, n, 1, false) / (float)n;
        float acc[LANES] = { 0 };
        for (int64_t i = 0; i < n; i++) {
            float d = x[i] - mean;
            acc[i % LANES] += d * d;
        }
        for (int w = LANES / 2; w > 0; w /= 2)
            for (int i = 0; i < w; i++)
                acc[i] += acc[i + w];
        return 1.0f / sqrtf(acc[0] / (float)n + eps);
    }
    return 1.0f;
}

/* ---- ops ---- */

static int cs_matmul(fb_backend_t *be, const fb_weight_t *w, const float *x, int64_t n_rows,
                     float *y, const fb_defer_t *defer)
{
    fcs_t *c = (fcs_t *)be;
    int rc = fb_weight_check(w);
    if (rc)
        return rc;
    const fcs_weight_t *cw = w->impl;
    if (!cw)
        return -EINVAL; /* not prepared here */
    const int kind = defer ? defer->kind : FB_NORM_NONE;
    if (kind != FB_NORM_NONE && !(defer->eps >= 0))
        return -EINVAL;
    const int64_t n = w->n_in, m = w->n_out;
    const int64_t nbx = cs_bfp_nblocks(&c->xfmt, n);
    float *xs = malloc((size_t)n * sizeof(float));
    int8_t *qx = malloc((size_t)n);
    uint8_t *ex = malloc((size_t)nbx);
    if (!xs || !qx || !ex) {
        free(xs);
        free(qx);
        free(ex);
        return -ENOMEM;
    }
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * n;
        const float s = norm_scale(kind, xr, n, kind ? defer->eps : 0);
        if (kind != FB_NORM_NONE && defer->scale_out)
            defer->scale_out[r] = s;
        if (w->in_scale) {
            for (int64_t i = 0; i < n; i++)
                xs[i] = xr[i] * w->in_scale[i];
            cs_bfp_encode(&c->xfmt, xs, n, qx, ex);
        } else {
            cs_bfp_encode(&c->xfmt, xr, n, qx, ex);
        }
        for (int64_t o = 0; o < m; o++) {
            float acc = cs_bfp_dot(&c->wfmt, cw->q + (size_t)o * (size_t)n,
                                   cw->e + (size_t)o * (size_t)cw->nb, &c->xfmt, qx, ex, n);
            if (kind != FB_NORM_NONE)
                acc *= s;
            y[r * m + o] = w->bias ? acc + w->bias[o] : acc;
        }
    }
    free(xs);
    free(qx);
    free(ex);

    map_once(c);
    double t0 = cs_sim_now(c->sim);
    if (cw->head)
        cs_sim_head(c->sim);
    double end = cs_sim_matmul(c->sim, ready_of(c, x), n_rows, n, m, kind, cw->row_parallel,
                               cw->label);
    set_ready(c, y, end);
    if (kind != FB_NORM_NONE && defer->scale_out)
        set_ready(c, defer->scale_out, end);
    charge(c, FB_OP_GEMM, t0);
    return 0;
}

static int norm_common(fcs_t *c, int kind, const float *x, int64_t n_rows, int64_t n,
                       const float *g, const float *b, float eps, float *y)
{
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        const float s = norm_scale(kind, xr, n, eps);
        const float mean = kind == FB_NORM_LAYER ? lane_sum(xr, n, 1, false) / (float)n : 0;
        for (int64_t i = 0; i < n; i++)
            yr[i] = (xr[i] - mean) * s * g[i] + (b ? b[i] : 0.0f);
    }
    map_once(c);
    double t0 = cs_sim_now(c->sim);
    set_ready(c, y, cs_sim_norm(c->sim, ready_of(c, x), kind, n_rows, n));
    charge(c, FB_OP_NORM, t0);
    return 0;
}

static int cs_rmsnorm(fb_backend_t *be, const float *x, int64_t n_rows, int64_t n,
                      const fb_weight_t *gamma, float eps, float *y)
{
    const float *g = weight_vec(gamma, n);
    if (!g || !(eps >= 0))
        return -EINVAL;
    return norm_common((fcs_t *)be, FB_NORM_RMS, x, n_rows, n, g, NULL, eps, y);
}

static int cs_layernorm(fb_backend_t *be, const float *x, int64_t n_rows, int64_t n,
                        const fb_weight_t *gamma, const fb_weight_t *beta, float eps, float *y)
{
    const float *g = weight_vec(gamma, n), *b = beta ? weight_vec(beta, n) : NULL;
    if (!g || !(eps >= 0) || (beta && !b))
        return -EINVAL;
    return norm_common((fcs_t *)be, FB_NORM_LAYER, x, n_rows, n, g, b, eps, y);
}

static int cs_rope(fb_backend_t *be, float *x, int64_t n_rows, int64_t ld, int n_heads,
                   int head_dim, const int32_t *pos, const fb_rope_t *rope)
{
    fcs_t *c = (fcs_t *)be;
    if (fb_rope_check(rope, head_dim))
        return -EINVAL;
    for (int64_t r = 0; r < n_rows; r++)
        if (pos[r] < 0)
            return -EINVAL;
    const int half = rope->n_rot / 2;
    const float *ff = rope->freq_factors ? rope->freq_factors->src : NULL;
    float dims[2];
    fb_rope_corr_dims(rope, dims);
    const double m = fb_rope_mscale(rope);
    for (int64_t r = 0; r < n_rows; r++)
        for (int i = 0; i < half; i++) {
            /* the SIMD reads cos/sin from a table computed once in high precision (YaRN's
             * blend and magnitude folded in) */
            double ext = (double)pos[r] * pow(rope->freq_base, -2.0 * i / rope->n_rot) /
                         (ff ? ff[i] : 1.0);
            double th = (double)pos[r] * rope->freq_scale *
                        pow(rope->freq_base, -2.0 * i / rope->n_rot) / (ff ? ff[i] : 1.0);
            double mix = fb_rope_yarn_mix(rope, dims, i);
            if (mix != 0)
                th = th * (1 - mix) + ext * mix;
            const float cs = (float)(cos(th) * m), sn = (float)(sin(th) * m);
            int a = rope->mode == FB_ROPE_NEOX ? i : 2 * i;
            int b = rope->mode == FB_ROPE_NEOX ? i + half : 2 * i + 1;
            for (int h = 0; h < n_heads; h++) {
                float *v = x + r * ld + (int64_t)h * head_dim;
                float va = v[a], vb = v[b];
                v[a] = va * cs - vb * sn;
                v[b] = va * sn + vb * cs;
            }
        }
    map_once(c);
    double t0 = cs_sim_now(c->sim);
    set_ready(c, x, cs_sim_rope(c->sim, ready_of(c, x), n_rows, n_heads, head_dim));
    charge(c, FB_OP_OTHER, t0);
    return 0;
}

/* Scratch of one attention call. */
typedef struct attn_buf {
    int8_t *kq, *vq, *qq, *pq;
    uint8_t *ke, *ve, *qe, *pe;
    float *e;
    float *kf, *vf, *row;  /* a typed cache's kv head dequantized (T rows of head_dim) */
} attn_buf_t;

static void attn_buf_free(attn_buf_t *b)
{
    free(b->kq); free(b->vq); free(b->qq); free(b->pq);
    free(b->ke); free(b->ve); free(b->qe); free(b->pe);
    free(b->e);
    free(b->kf); free(b->vf); free(b->row);
}

/* T rows of kv head g of a cache of type (backend.h's layout; F32: ldkv floats apart; a ring
 * cache's rows where fb_attn_row puts them) into out, head_dim floats a row; row holds a
 * padded head. */
static void kv_rows(int type, const void *data, const fb_attn_t *a, int g, int64_t T,
                    float *out, float *row)
{
    const int hd = a->head_dim;
    if (type == GG_F32) {
        for (int64_t t = 0; t < T; t++)
            memcpy(out + t * hd,
                   (const float *)data + fb_attn_row(a, t) * a->ldkv + (int64_t)g * hd,
                   (size_t)hd * sizeof(float));
        return;
    }
    const size_t hb = fb_kv_head_bytes(type, hd), rb = hb * (size_t)a->n_head_kv;
    const int be = gg_block_elems(type), hp = (hd + be - 1) / be * be;
    for (int64_t t = 0; t < T; t++) {
        fq_dequantize_row(type, (const uint8_t *)data + (size_t)fb_attn_row(a, t) * rb +
                                    (size_t)g * hb, row, hp);
        memcpy(out + t * hd, row, (size_t)hd * sizeof(float));
    }
}

/* exp(s - max) (or exp(s) for SUMONLY) of T scores into e; returns their fp32 sum.  A
 * sink (gpt-oss; has_sink) is one more score in the max and the sum, with no e of its own. */
static float softmax_exp(const fcs_t *c, const float *s, int64_t T, int mode, bool has_sink,
                         float sink, float *e)
{
    float se = 0;
    if (c->poly2) {
        /* the SIMD's poly2exp: e = p(r) 2^k; the max is that of the integer exponent k */
        int kmax = 0, ks = 0;
        float ms = has_sink ? cs_poly2_exp_parts(sink, &ks) : 0;
        if (mode != FB_SOFTMAX_SUMONLY) {
            kmax = has_sink ? ks : INT32_MIN;
            for (int64_t t = 0; t < T; t++) {
                int k;
                cs_poly2_exp_parts(s[t], &k);
                kmax = FD_MAX(kmax, k);
            }
        }
        for (int64_t t = 0; t < T; t++) {
            int k;
            float m = cs_poly2_exp_parts(s[t], &k);
            e[t] = ldexpf(m, k - kmax);
        }
        if (has_sink)
            se = ldexpf(ms, ks - kmax);
    } else {
        float mx = has_sink ? sink : -INFINITY;
        if (mode != FB_SOFTMAX_SUMONLY)
            for (int64_t t = 0; t < T; t++)
                mx = fmaxf(mx, s[t]);
        else
            mx = 0;
        for (int64_t t = 0; t < T; t++)
            e[t] = expf(s[t] - mx);
        if (has_sink)
            se = expf(sink - mx);
    }
    return lane_sum(e, T, 1, false) + se;
}

static int attn_one(fcs_t *c, const fb_attn_t *a, attn_buf_t *b)
{
    const int hd = a->head_dim, group = a->n_head / a->n_head_kv;
    const cs_bfp_fmt_t *xf = &c->xfmt;
    int64_t T = 0;
    for (int i = 0; i < a->n_q; i++)
        T = FD_MAX(T, (int64_t)a->pos[i] + 1);
    if (T == 0)
        return 0;
    const int64_t nbh = cs_bfp_nblocks(xf, hd), nbt = cs_bfp_nblocks(xf, T);
    size_t kn = (size_t)T * (size_t)hd;
    if (!(b->kq = malloc(kn)) || !(b->vq = malloc(kn)) || !(b->qq = malloc((size_t)hd)) ||
        !(b->pq = malloc((size_t)T)) || !(b->ke = malloc((size_t)T * (size_t)nbh)) ||
        !(b->ve = malloc((size_t)hd * (size_t)nbt)) || !(b->qe = malloc((size_t)nbh)) ||
        !(b->pe = malloc((size_t)nbt)) || !(b->e = malloc(3 * (size_t)T * sizeof(float))) ||
        !(b->row = malloc(((size_t)hd + 32) * sizeof(float))))
        return -ENOMEM;
    float *sc = b->e + T, *col = b->e + 2 * T;
    /* a ring's rows are gathered in order, as a typed cache's are */
    const bool typed = a->type_k != GG_F32 || a->type_v != GG_F32 || a->ring > 0;
    if (typed && !(b->kf = malloc(kn * sizeof(float))))
        return -ENOMEM;
    if (typed && !(b->vf = malloc(kn * sizeof(float))))
        return -ENOMEM;
    for (int g = 0; g < a->n_head_kv; g++) {
        /* a typed cache's values as its type rounds them, then in the device's own blocks */
        const float *kr = a->k + (int64_t)g * hd, *vr = a->v + (int64_t)g * hd;
        int64_t ldk = a->ldkv, ldv = a->ldkv;
        if (typed) {
            kv_rows(a->type_k, a->k_data, a, g, T, b->kf, b->row);
            kv_rows(a->type_v, a->v_data, a, g, T, b->vf, b->row);
            kr = b->kf;
            vr = b->vf;
            ldk = ldv = hd;
        }
        /* K rows in blocks along head_dim; V columns in blocks along the context */
        for (int64_t t = 0; t < T; t++)
            cs_bfp_encode(xf, kr + t * ldk, hd, b->kq + t * hd, b->ke + t * nbh);
        for (int j = 0; j < hd; j++) {
            for (int64_t t = 0; t < T; t++)
                col[t] = vr[t * ldv + j];
            cs_bfp_encode(xf, col, T, b->vq + (size_t)j * (size_t)T, b->ve + (size_t)j * nbt);
        }
        for (int i = 0; i < a->n_q; i++) {
            const int64_t Ti = (int64_t)a->pos[i] + 1;
            /* a sliding window: positions before t0 are masked like those after pos */
            const int64_t t0 = a->window > 0 ? FD_MAX((int64_t)0, Ti - a->window) : 0;
            for (int hh = 0; hh < group; hh++) {
                const int h = g * group + hh;
                cs_bfp_encode(xf, a->q + (int64_t)i * a->ldq + (int64_t)h * hd, hd, b->qq, b->qe);
                for (int64_t t = t0; t < Ti; t++)
                    sc[t] = cs_bfp_dot(xf, b->qq, b->qe, xf, b->kq + t * hd, b->ke + t * nbh,
                                       hd) * a->scale;
                if (a->softcap > 0.0f) /* fp32 tanh on the SIMD */
                    for (int64_t t = t0; t < Ti; t++)
                        sc[t] = a->softcap * tanhf(sc[t] / a->softcap);
                const float l = softmax_exp(c, sc + t0, Ti - t0, a->mode, a->sinks != NULL,
                                            a->sinks ? a->sinks[h] : 0.0f, b->e + t0);
                const float inv = 1.0f / l;
                if (a->mode == FB_SOFTMAX_REF) /* normalize p before P.V */
                    for (int64_t t = t0; t < Ti; t++)
                        b->e[t] *= inv;
                for (int64_t t = 0; t < t0; t++) /* masked positions */
                    b->e[t] = 0;
                for (int64_t t = Ti; t < T; t++)
                    b->e[t] = 0;
                cs_bfp_encode(xf, b->e, T, b->pq, b->pe);
                float *out = a->out + (int64_t)i * a->ldo + (int64_t)h * hd;
                for (int j = 0; j < hd; j++) {
                    float o = cs_bfp_dot(xf, b->pq, b->pe, xf, b->vq + (size_t)j * (size_t)T,
                                         b->ve + (size_t)j * nbt, T);
                    out[j] = a->mode == FB_SOFTMAX_REF ? o : o * inv;
                }
            }
        }
    }
    return 0;
}

static int cs_attention(fb_backend_t *be, const fb_attn_t *a, int n_seq)
{
    fcs_t *c = (fcs_t *)be;
    cs_attn_seq_t stack[64], *seqs = n_seq <= 64 ? stack : malloc((size_t)n_seq * sizeof(*seqs));
    if (!seqs)
        return -ENOMEM;
    double ready = 0;
    int n_valid = 0, rc = 0;
    for (int s = 0; s < n_seq && rc == 0; s++) {
        attn_buf_t b = { 0 };
        rc = attn_one(c, &a[s], &b);
        attn_buf_free(&b);
        for (int i = 0; i < 2; i++) {
            cs_alloc_t *al = find_alloc(c, i ? a[s].v : a[s].k);
            if (al) {
                al->kv = true;
                ready = FD_MAX(ready, al->ready);
            }
        }
        ready = FD_MAX(ready, ready_of(c, a[s].q));
        /* a window bounds the cache rows read: the last row's window and the rows before
         * it in the call */
        if (a[s].n_q > 0)
            seqs[n_valid++] = (cs_attn_seq_t){
                a[s].n_q, a[s].window > 0 ? FD_MIN(a[s].pos[a[s].n_q - 1],
                                                   a[s].window + a[s].n_q - 2)
                                          : a[s].pos[a[s].n_q - 1] };
    }
    if (rc == 0 && n_valid > 0) {
        map_once(c);
        double t0 = cs_sim_now(c->sim);
        double end = cs_sim_attention(c->sim, ready, seqs, n_valid, a[0].n_head, a[0].n_head_kv,
                                      a[0].head_dim, a[0].mode);
        for (int s = 0; s < n_seq; s++)
            set_ready(c, a[s].out, end);
        charge(c, FB_OP_ATTN, t0);
    }
    if (seqs != stack)
        free(seqs);
    return rc;
}

/* The simulated time of a gated product (SiLU's or GELU's: one transcendental and a few
 * products an element), once its values are computed. */
static int glu_timed(fcs_t *c, const float *gate, const float *up, int64_t n_rows, int64_t n,
                     const float *out)
{
    map_once(c);
    double t0 = cs_sim_now(c->sim);
    double ready = FD_MAX(ready_of(c, gate), ready_of(c, up));
    set_ready(c, out, cs_sim_silu_mul(c->sim, ready, n_rows, n));
    charge(c, FB_OP_OTHER, t0);
    return 0;
}

static int cs_silu_mul(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                       int64_t n, int64_t ld_in, float *out)
{
    fcs_t *c = (fcs_t *)be;
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < n; i++) {
            float g = gate[r * ld_in + i];
            out[r * n + i] = g / (1.0f + expf(-g)) * up[r * ld_in + i];
        }
    return glu_timed(c, gate, up, n_rows, n, out);
}

/* GELU (tanh form) gating in fp32 on the SIMD, timed as SiLU's gating. */
static int cs_gelu_mul(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                       int64_t n, int64_t ld_in, float *out)
{
    fcs_t *c = (fcs_t *)be;
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < n; i++) {
            float g = gate[r * ld_in + i];
            float z = 0.7978845608f * (g + 0.044715f * g * g * g);
            out[r * n + i] = 0.5f * g * (1.0f + tanhf(z)) * up[r * ld_in + i];
        }
    return glu_timed(c, gate, up, n_rows, n, out);
}

/* gpt-oss's gating (backend.h fb_ops_t.swiglu_oai) in fp32 on the SIMD, timed as SiLU's. */
static int cs_swiglu_oai(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                         int64_t n, int64_t ld_in, float alpha, float limit, float *out)
{
    fcs_t *c = (fcs_t *)be;
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < n; i++) {
            float g = fminf(gate[r * ld_in + i], limit);
            float u = fmaxf(fminf(up[r * ld_in + i], limit), -limit);
            out[r * n + i] = g / (1.0f + expf(-alpha * g)) * (u + 1.0f);
        }
    return glu_timed(c, gate, up, n_rows, n, out);
}

/* The embedding scale: one product an element, timed as an add. */
static int cs_scale(fb_backend_t *be, float *y, int64_t n, float sc)
{
    fcs_t *c = (fcs_t *)be;
    for (int64_t i = 0; i < n; i++)
        y[i] *= sc;
    map_once(c);
    double t0 = cs_sim_now(c->sim);
    set_ready(c, y, cs_sim_add(c->sim, ready_of(c, y), n));
    charge(c, FB_OP_OTHER, t0);
    return 0;
}

/* The logits' soft-cap: a tanh an element, timed as a row of SiLU gating. */
static int cs_softcap(fb_backend_t *be, float *y, int64_t n, float cap)
{
    fcs_t *c = (fcs_t *)be;
    for (int64_t i = 0; i < n; i++)
        y[i] = cap * tanhf(y[i] / cap);
    map_once(c);
    double t0 = cs_sim_now(c->sim);
    set_ready(c, y, cs_sim_silu_mul(c->sim, ready_of(c, y), 1, n));
    charge(c, FB_OP_OTHER, t0);
    return 0;
}

static int cs_add(fb_backend_t *be, float *y, const float *x, int64_t n)
{
    fcs_t *c = (fcs_t *)be;
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
    map_once(c);
    double t0 = cs_sim_now(c->sim);
    set_ready(c, y, cs_sim_add(c->sim, FD_MAX(ready_of(c, x), ready_of(c, y)), n));
    c->residual_bytes = (double)n * sizeof(float);
    charge(c, FB_OP_OTHER, t0);
    return 0;
}

static int cs_get_rows(fb_backend_t *be, const fb_weight_t *w, const int32_t *ids, int64_t n,
                       float *out)
{
    fcs_t *c = (fcs_t *)be;
    int rc = fb_weight_check(w);
    if (rc)
        return rc;
    for (int64_t r = 0; r < n; r++)
        if (ids[r] < 0 || ids[r] >= w->n_out)
            return -EINVAL;
    const uint64_t rb = gg_row_bytes(w->type, (uint64_t)w->n_in);
    for (int64_t r = 0; r < n; r++)
        fq_dequantize_row(w->type, (const uint8_t *)w->src + (uint64_t)ids[r] * rb,
                          out + r * w->n_in, w->n_in);
    map_once(c);
    double t0 = cs_sim_now(c->sim);
    set_ready(c, out, cs_sim_get_rows(c->sim, t0, n, (double)rb));
    charge(c, FB_OP_OTHER, t0);
    return 0;
}

static int cs_copy2d(fb_backend_t *be, float *dst, int64_t ld_dst, const float *src,
                     int64_t ld_src, int64_t n_rows, int64_t n)
{
    fcs_t *c = (fcs_t *)be;
    for (int64_t r = 0; r < n_rows; r++)
        memmove(dst + r * ld_dst, src + r * ld_src, (size_t)n * sizeof(float));
    map_once(c);
    const cs_alloc_t *d = find_alloc(c, dst);
    double t0 = cs_sim_now(c->sim);
    double end = cs_sim_copy(c->sim, FD_MAX(ready_of(c, src), ready_of(c, dst)), n_rows, n,
                             d && d->kv);
    set_ready(c, dst, end);
    charge(c, FB_OP_OTHER, t0);
    return 0;
}

/* Mixture-of-experts row movement: the device moves whole rows between its activation
 * buffers, timed as a copy (gather) and as an add of the rows (scatter-add); the expert
 * products that come between are charged for the experts actually run, by cs_matmul. */
static int cs_gather_rows(fb_backend_t *be, float *dst, const float *src, int64_t ld_src,
                          const int32_t *ids, int64_t n_rows, int64_t n)
{
    fcs_t *c = (fcs_t *)be;
    for (int64_t r = 0; r < n_rows; r++)
        memcpy(dst + r * n, src + (int64_t)ids[r] * ld_src, (size_t)n * sizeof(float));
    map_once(c);
    double t0 = cs_sim_now(c->sim);
    double end = cs_sim_copy(c->sim, FD_MAX(ready_of(c, src), ready_of(c, dst)), n_rows, n,
                             false);
    set_ready(c, dst, end);
    charge(c, FB_OP_OTHER, t0);
    return 0;
}

static int cs_scatter_add_rows(fb_backend_t *be, float *dst, int64_t ld_dst, const float *src,
                               const int32_t *ids, const float *w, int64_t n_rows, int64_t n)
{
    fcs_t *c = (fcs_t *)be;
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < n; i++)
            dst[(int64_t)ids[r] * ld_dst + i] += w[r] * src[r * n + i];
    map_once(c);
    double t0 = cs_sim_now(c->sim);
    set_ready(c, dst, cs_sim_add(c->sim, FD_MAX(ready_of(c, src), ready_of(c, dst)),
                                 n_rows * n));
    charge(c, FB_OP_OTHER, t0);
    return 0;
}

/* Every cache type: attention dequantizes the rows it reads into the device's BFP blocks
 * (the type's rounding, then BFP's), and the timing charges the bytes the type stores. */
static int cs_kv_check(fb_backend_t *be, int type_k, int type_v, int head_dim)
{
    fcs_t *c = (fcs_t *)be;
    if (!fq_type_quantizable(type_k) || !fq_type_quantizable(type_v))
        return FD_EUNSUP;
    double bk = type_k == GG_F32 ? 0 : (double)fb_kv_head_bytes(type_k, head_dim) / head_dim;
    double bv = type_v == GG_F32 ? 0 : (double)fb_kv_head_bytes(type_v, head_dim) / head_dim;
    cs_sim_set_kv_bytes(c->sim, bk, bv);
    return 0;
}

static int cs_kv_store(fb_backend_t *be, void *dst, int type, const float *src, int64_t ld_src,
                       int64_t n_rows, int n_head_kv, int head_dim)
{
    fcs_t *c = (fcs_t *)be;
    int rc = fb_kv_quantize(dst, type, src, ld_src, n_rows, n_head_kv, head_dim);
    if (rc)
        return rc;
    map_once(c);
    cs_alloc_t *d = find_alloc(c, dst);
    if (d)
        d->kv = true;
    double t0 = cs_sim_now(c->sim);
    set_ready(c, dst, cs_sim_copy(c->sim, FD_MAX(ready_of(c, src), ready_of(c, dst)), n_rows,
                                  (int64_t)n_head_kv * head_dim, true));
    charge(c, FB_OP_OTHER, t0);
    return 0;
}

static void cs_mark(fb_backend_t *be, int what, int arg)
{
    fcs_t *c = (fcs_t *)be;
    map_once(c);
    double t0 = cs_sim_now(c->sim);
    switch (what) {
    case FB_MARK_STEP_BEGIN: cs_sim_step_begin(c->sim, arg); break;
    case FB_MARK_STEP_END: cs_sim_step_end(c->sim); break;
    case FB_MARK_LAYER: cs_sim_layer(c->sim, arg, c->residual_bytes); break;
    default: break;
    }
    charge(c, FB_OP_OTHER, t0);
}

static void cs_describe(fb_backend_t *be, char *buf, size_t len)
{
    fcs_t *c = (fcs_t *)be;
    char map[16];
    cs_param_format(&c->params, CS_P_MAPPING, map, sizeof(map));
    if (!cs_sim_mapped(c->sim)) {
        snprintf(buf, len, "corsair (simulated): weights %s, inputs %s, exp %s, mapping %s",
                 cs_bfp_fmt_name(&c->wfmt), cs_bfp_fmt_name(&c->xfmt),
                 c->poly2 ? "poly2" : "expf", map);
        return;
    }
    const cs_hw_t *h = cs_sim_hw(c->sim);
    snprintf(buf, len, "corsair (simulated): weights %s, inputs %s, exp %s, mapping %s over "
             "%d card%s (%d stage%s), weights in %s, KV in %s", cs_bfp_fmt_name(&c->wfmt),
             cs_bfp_fmt_name(&c->xfmt), c->poly2 ? "poly2" : "expf", map, h->n_cards,
             h->n_cards == 1 ? "" : "s", h->n_stages, h->n_stages == 1 ? "" : "s",
             h->weights_lpddr ? "LPDDR" : "SRAM", h->kv_lpddr ? "LPDDR" : "SRAM");
}

static void cs_destroy(fb_backend_t *be)
{
    fcs_t *c = (fcs_t *)be;
    cs_sim_free(c->sim);
    free(c->allocs);
    free(c);
}

static const fb_ops_t corsair_ops = {
    .name = "corsair",
    .destroy = cs_destroy,
    .alloc = cs_alloc,
    .free = cs_free,
    .to_device = cs_to_device,
    .to_host = cs_to_host,
    .sync = cs_sync,
    .weight_prepare = cs_weight_prepare,
    .weight_release = cs_weight_release,
    .matmul = cs_matmul,
    .rmsnorm = cs_rmsnorm,
    .layernorm = cs_layernorm,
    .rope = cs_rope,
    .attention = cs_attention,
    .silu_mul = cs_silu_mul,
    .gelu_mul = cs_gelu_mul,
    .scale = cs_scale,
    .softcap = cs_softcap,
    .attn_window = true,
    .attn_ring = true,
    .attn_sinks = true,
    .swiglu_oai = cs_swiglu_oai,
    .add = cs_add,
    .get_rows = cs_get_rows,
    .copy2d = cs_copy2d,
    .kv_check = cs_kv_check,
    .kv_store = cs_kv_store,
    .mark = cs_mark,
    .describe = cs_describe,
    .gather_rows = cs_gather_rows,
    .scatter_add_rows = cs_scatter_add_rows,
};

cs_sim_t *fb_corsair_sim(fb_backend_t *be)
{
    return be && be->ops == &corsair_ops ? ((fcs_t *)be)->sim : NULL;
}

bool fb_corsair_formats(const fb_backend_t *be, cs_bfp_fmt_t *weights, cs_bfp_fmt_t *inputs,
                        bool *poly2_exp)
{
    if (!be || be->ops != &corsair_ops)
        return false;
    const fcs_t *c = (const fcs_t *)be;
    if (weights)
        *weights = c->wfmt;
    if (inputs)
        *inputs = c->xfmt;
    if (poly2_exp)
        *poly2_exp = c->poly2;
    return true;
}

/* Numerics options first; every other key belongs to the timing model's table. */
static int parse_options(fcs_t *c, const char *const *opts, char *err, size_t errlen)
{
    bool wb_set = false, ab_set = false;
    for (int i = 0; opts && opts[i]; i++) {
        const char *o = opts[i];
        if (strncmp(o, "weights=", 8) == 0 || strncmp(o, "inputs=", 7) == 0) {
            bool wt = o[0] == 'w';
            if (cs_bfp_fmt_parse(strchr(o, '=') + 1, wt ? &c->wfmt : &c->xfmt)) {
                snprintf(err, errlen, "corsair: %s: the formats are bfp8 and bfp4", o);
                return FD_ECONFIG;
            }
            continue;
        }
        if (cs_params_set(&c->params, o, err, errlen))
            return FD_ECONFIG;
        wb_set |= strncmp(o, "weight_bytes=", 13) == 0;
        ab_set |= strncmp(o, "act_bytes=", 10) == 0;
    }
    /* the device bytes follow the formats unless given */
    if (!wb_set)
        c->params.v[CS_P_WBYTES] = c->wfmt.mbits / 8.0 + 1.0 / c->wfmt.block;
    if (!ab_set)
        c->params.v[CS_P_ABYTES] = c->xfmt.mbits / 8.0 + 1.0 / c->xfmt.block;
    c->poly2 = c->params.v[CS_P_EXP_POLY2] >= 0.5;
    return 0;
}

int fb_corsair_create(const fb_config_t *cfg, fb_backend_t **out, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    fcs_t *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->base.ops = &corsair_ops;
    c->wfmt = cs_bfp8;
    c->xfmt = cs_bfp8;
    cs_params_default(&c->params);
    int rc = parse_options(c, cfg ? cfg->options : NULL, err, errlen);
    if (rc)
        goto fail;
    if ((rc = cs_sim_create(&c->sim, &c->params)))
        goto fail;
    *out = &c->base;
    return 0;
fail:
    free(c);
    return rc;
}
