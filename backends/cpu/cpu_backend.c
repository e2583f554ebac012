/* cpu_backend.c: the CPU backend (backend.h's vtable on host memory).  Ops run synchronously
 * on the calling thread, so fb_sync has nothing to wait for.  Weights are used in place
 * (the mmapped file's bytes); fb_weight_prepare only checks them and, for 1-D vectors of a
 * type other than F32 (norm gammas), keeps an F32 copy.  Every op checks its arguments and
 * answers -EINVAL or FD_EUNSUP rather than reading out of bounds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/backend.h"
#include "backends/cpu/ref_ops.h"
#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"

typedef struct fcpu {
    fb_backend_t base;
    int n_threads;
} fcpu_t;

typedef struct fcpu_weight {
    uint64_t row_bytes;
    float *vec; /* F32 copy of a 1-D non-F32 weight, else NULL */
} fcpu_weight_t;

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

static int check_weight(const fb_weight_t *w)
{
    if (!w || !w->src || w->n_in <= 0 || w->n_out <= 0)
        return -EINVAL;
    if (!fq_type_supported(w->type))
        return FD_EUNSUP;
    if (gg_row_bytes(w->type, (uint64_t)w->n_in) == 0)
        return -EINVAL; /* n_in not a multiple of the block size */
    return 0;
}

static int cpu_weight_prepare(fb_backend_t *be, fb_weight_t *w)
{
    int rc = check_weight(w);
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
    }
    w->impl = cw;
    return 0;
}

static void cpu_weight_release(fb_backend_t *be, fb_weight_t *w)
{
    fcpu_weight_t *cw = w->impl;
    if (cw) {
        free(cw->vec);
        free(cw);
    }
}

/* A 1-D weight of n floats (a norm gamma or beta) as F32: the prepared copy, the bytes
 * themselves, or (unprepared, other type) converted into tmp.  NULL when it does not fit. */
static const float *weight_vec(const fb_weight_t *w, int64_t n, float **tmp)
{
    *tmp = NULL;
    if (check_weight(w) || (int64_t)w->n_in * w->n_out != n)
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

/* ---- ops ------------------------------------------------------------------------------ */

static int cpu_matmul(fb_backend_t *be, const fb_weight_t *w, const float *x, int64_t n_rows,
                      float *y, const fb_defer_t *defer)
{
    int rc = check_weight(w);
    if (rc)
        return rc;
    if (defer && defer->kind != FB_NORM_NONE && !(defer->eps >= 0))
        return -EINVAL;
    return fcpu_ref_matmul(w, x, n_rows, y, defer);
}

static int cpu_rmsnorm(fb_backend_t *be, const float *x, int64_t n_rows, int64_t n,
                       const fb_weight_t *gamma, float eps, float *y)
{
    float *tmp;
    const float *g = weight_vec(gamma, n, &tmp);
    if (!g || !(eps >= 0)) {
        free(tmp);
        return -EINVAL;
    }
    fcpu_ref_rmsnorm(x, n_rows, n, g, eps, y);
    free(tmp);
    return 0;
}

static int cpu_layernorm(fb_backend_t *be, const float *x, int64_t n_rows, int64_t n,
                         const fb_weight_t *gamma, const fb_weight_t *beta, float eps, float *y)
{
    float *tg = NULL, *tb = NULL;
    const float *g = weight_vec(gamma, n, &tg), *b = NULL;
    int rc = 0;
    if (!g || !(eps >= 0))
        rc = -EINVAL;
    else if (beta && !(b = weight_vec(beta, n, &tb)))
        rc = -EINVAL;
    if (rc == 0)
        fcpu_ref_layernorm(x, n_rows, n, g, b, eps, y);
    free(tg);
    free(tb);
    return rc;
}

static int cpu_rope(fb_backend_t *be, float *x, int64_t n_rows, int64_t ld, int n_heads,
                    int head_dim, const int32_t *pos, const fb_rope_t *rope)
{
    if (rope->n_rot <= 0 || rope->n_rot > head_dim || rope->n_rot % 2 ||
        (rope->mode != FB_ROPE_ADJACENT && rope->mode != FB_ROPE_NEOX) ||
        !(rope->freq_base > 0) || !(rope->freq_scale > 0))
        return -EINVAL;
    for (int64_t r = 0; r < n_rows; r++)
        if (pos[r] < 0)
            return -EINVAL;
    fcpu_ref_rope(x, n_rows, ld, n_heads, head_dim, pos, rope);
    return 0;
}

static int check_attn(const fb_attn_t *a)
{
    if (!a->q || !a->k || !a->v || !a->out || a->n_q < 0 || !(a->pos || !a->n_q))
        return -EINVAL;
    if (a->n_head <= 0 || a->n_head_kv <= 0 || a->head_dim <= 0 || a->n_head % a->n_head_kv)
        return -EINVAL;
    if (a->ldq < (int64_t)a->n_head * a->head_dim || a->ldo < (int64_t)a->n_head * a->head_dim ||
        a->ldkv < (int64_t)a->n_head_kv * a->head_dim)
        return -EINVAL;
    if (a->mode < FB_SOFTMAX_REF || a->mode > FB_SOFTMAX_SUMONLY)
        return -EINVAL;
    for (int i = 0; i < a->n_q; i++)
        if (a->pos[i] < 0)
            return -EINVAL;
    return 0;
}

static int cpu_attention(fb_backend_t *be, const fb_attn_t *a, int n_seq)
{
    for (int s = 0; s < n_seq; s++) {
        int rc = check_attn(&a[s]);
        if (rc)
            return rc;
    }
    for (int s = 0; s < n_seq; s++) {
        int rc = fcpu_ref_attention(&a[s]);
        if (rc)
            return rc;
    }
    return 0;
}

static int cpu_silu_mul(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                        int64_t n, int64_t ld_in, float *out)
{
    fcpu_ref_silu_mul(gate, up, n_rows, n, ld_in, out);
    return 0;
}

static int cpu_add(fb_backend_t *be, float *y, const float *x, int64_t n)
{
    fcpu_ref_add(y, x, n);
    return 0;
}

static int cpu_get_rows(fb_backend_t *be, const fb_weight_t *w, const int32_t *ids, int64_t n,
                        float *out)
{
    int rc = check_weight(w);
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

static void cpu_describe(fb_backend_t *be, char *buf, size_t len)
{
    const fcpu_t *c = (const fcpu_t *)be;
    snprintf(buf, len, "cpu: %d threads, scalar reference kernels", c->n_threads);
}

static void cpu_destroy(fb_backend_t *be)
{
    free(be);
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
    .add = cpu_add,
    .get_rows = cpu_get_rows,
    .copy2d = cpu_copy2d,
    .mark = NULL,
    .describe = cpu_describe,
};

int fb_cpu_create(const fb_config_t *cfg, fb_backend_t **out, char *err, size_t errlen)
{
    int threads = cfg ? cfg->threads : 0;
    if (threads < 0 || threads > 1024) {
        if (err && errlen)
            snprintf(err, errlen, "cpu backend: bad thread count %d", threads);
        return FD_ECONFIG;
    }
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)FD_MIN(n, 1024) : 1;
    }
    fcpu_t *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->base.ops = &cpu_ops;
    c->n_threads = threads;
    *out = &c->base;
    return 0;
}
