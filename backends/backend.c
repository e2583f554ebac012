/* backend.c: the backend registry and the fb_* wrappers (see backend.h).  Each wrapper checks
 * the arguments every backend would check alike, dispatches through the vtable and charges
 * the wall time of the call to the op's class: two monotonic clock reads per op (~40 ns),
 * cheap enough to stay on always.
 *
 * Which backends exist is decided at build time: "cpu" always; "cuda" when configure found
 * nvcc (HAVE_CUDA in config.h); "corsair" when its fragment (backends/corsair/local.mk)
 * defines FB_HAVE_CORSAIR.  Weak symbols would not do here: libfusiond is a static archive,
 * and a weak reference never pulls a member out of an archive, so the backend would silently
 * vanish. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "backends/backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"

typedef int (*fb_ctor)(const fb_config_t *cfg, fb_backend_t **out, char *err, size_t errlen);

static const struct {
    const char *name;
    fb_ctor create;
} registry[] = {
    {"cpu", fb_cpu_create},
#ifdef FB_HAVE_CORSAIR
    {"corsair", fb_corsair_create},
#endif
#ifdef HAVE_CUDA
    {"cuda", fb_cuda_create},
#endif
};

static const char *const known_names[] = {"cpu", "corsair", "cuda"};

const char *fb_op_class_name(int c)
{
    static const char *const names[FB_OP_CLASS_COUNT] = {"norm", "gemm", "attention", "other"};
    return c >= 0 && c < FB_OP_CLASS_COUNT ? names[c] : "unknown";
}

bool fb_available(const char *name)
{
    for (size_t i = 0; name && i < FD_ARRAY_LEN(registry); i++)
        if (strcmp(registry[i].name, name) == 0)
            return true;
    return false;
}

int fb_create(const char *name, const fb_config_t *cfg, fb_backend_t **out, char *err,
              size_t errlen)
{
    static const fb_config_t defaults = {0};
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!name || !*name)
        name = "cpu";
    for (size_t i = 0; i < FD_ARRAY_LEN(registry); i++) {
        if (strcmp(registry[i].name, name) != 0)
            continue;
        int rc = registry[i].create(cfg ? cfg : &defaults, out, err, errlen);
        if (rc == 0)
            memset(&(*out)->stats, 0, sizeof((*out)->stats));
        return rc;
    }
    char avail[64] = "";
    for (size_t i = 0; i < FD_ARRAY_LEN(registry); i++) {
        if (i)
            strncat(avail, ", ", sizeof(avail) - strlen(avail) - 1);
        strncat(avail, registry[i].name, sizeof(avail) - strlen(avail) - 1);
    }
    bool known = false;
    for (size_t i = 0; i < FD_ARRAY_LEN(known_names); i++)
        known |= strcmp(known_names[i], name) == 0;
    if (err && errlen)
        snprintf(err, errlen, "%s backend \"%s\" (this build has: %s)",
                 known ? "this build has no" : "unknown", name, avail);
    return -ENOENT;
}

void fb_destroy(fb_backend_t *be)
{
    if (be)
        be->ops->destroy(be);
}

const char *fb_name(const fb_backend_t *be)
{
    return be ? be->ops->name : "none";
}

bool fb_attn_ring(const fb_backend_t *be)
{
    return be && be->ops->attn_ring;
}

bool fb_gptoss_ops(const fb_backend_t *be)
{
    return be && be->ops->attn_sinks && be->ops->swiglu_oai;
}

bool fb_host_weights(const fb_backend_t *be)
{
    return be && be->ops->host_weights;
}

double fb_roof(fb_backend_t *be, int what, const void *buf, size_t bytes)
{
    if (!be || !be->ops->roof)
        return FD_EUNSUP;
    return be->ops->roof(be, what, buf, bytes);
}

void fb_stats_get(const fb_backend_t *be, fb_stats_t *out)
{
    *out = be->stats;
}

void fb_stats_reset(fb_backend_t *be)
{
    memset(&be->stats, 0, sizeof(be->stats));
}

static inline void charge(fb_backend_t *be, int cls, uint64_t t0)
{
    be->stats.host_ns[cls] += fd_now_ns() - t0;
    be->stats.calls[cls]++;
}

void *fb_alloc(fb_backend_t *be, size_t bytes)
{
    return be->ops->alloc(be, bytes);
}

void fb_free(fb_backend_t *be, void *p)
{
    if (p)
        be->ops->free(be, p);
}

int fb_to_device(fb_backend_t *be, void *dst, const void *src, size_t bytes)
{
    if ((!dst || !src) && bytes)
        return -EINVAL;
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->to_device(be, dst, src, bytes);
    charge(be, FB_OP_OTHER, t0);
    return rc;
}

int fb_to_host(fb_backend_t *be, void *dst, const void *src, size_t bytes)
{
    if ((!dst || !src) && bytes)
        return -EINVAL;
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->to_host(be, dst, src, bytes);
    charge(be, FB_OP_OTHER, t0);
    return rc;
}

int fb_sync(fb_backend_t *be)
{
    return be->ops->sync(be);
}

int fb_weight_check(const fb_weight_t *w)
{
    if (!w || !w->src || w->n_in <= 0 || w->n_out <= 0)
        return -EINVAL;
    if (!fq_type_supported(w->type))
        return FD_EUNSUP;
    if (gg_row_bytes(w->type, (uint64_t)w->n_in) == 0)
        return -EINVAL; /* n_in not a multiple of the block size */
    return 0;
}

int fb_weight_prepare(fb_backend_t *be, fb_weight_t *w)
{
    if (!w || !w->src || w->n_in <= 0 || w->n_out <= 0)
        return -EINVAL;
    if (w->owner && w->owner != be)
        return -EINVAL; /* prepared by another backend: release it there first */
    if (w->owner == be)
        fb_weight_release(be, w); /* prepared again (new src?): drop the old form */
    int rc = be->ops->weight_prepare(be, w);
    if (rc == 0)
        w->owner = be;
    return rc;
}

void fb_weight_release(fb_backend_t *be, fb_weight_t *w)
{
    if (!w || w->owner != be)
        return;
    be->ops->weight_release(be, w);
    w->impl = NULL;
    w->owner = NULL;
}

int fb_matmul(fb_backend_t *be, const fb_weight_t *w, const float *x, int64_t n_rows,
              float *y, const fb_defer_t *defer)
{
    if (!w || !x || !y || n_rows < 0)
        return -EINVAL;
    if (defer && (defer->kind < FB_NORM_NONE || defer->kind > FB_NORM_LAYER))
        return -EINVAL;
    if (n_rows == 0)
        return 0;
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->matmul(be, w, x, n_rows, y, defer);
    charge(be, FB_OP_GEMM, t0);
    return rc;
}

int fb_matmul_group(fb_backend_t *be, const fb_mm_part_t *parts, int n_parts,
                    const fb_defer_t *defer)
{
    if (n_parts < 0 || (n_parts && !parts))
        return -EINVAL;
    if (defer && (defer->kind < FB_NORM_NONE || defer->kind > FB_NORM_LAYER || defer->scale_out))
        return -EINVAL;
    for (int i = 0; i < n_parts; i++) {
        const fb_mm_part_t *q = &parts[i];
        if (!q->w || !q->x || !q->y || q->n_rows < 0)
            return -EINVAL;
        int rc = fb_weight_check(q->w);
        if (rc)
            return rc;
    }
    uint64_t t0 = fd_now_ns();
    int rc = 0;
    if (be->ops->matmul_group)
        rc = be->ops->matmul_group(be, parts, n_parts, defer);
    else
        for (int i = 0; i < n_parts && rc == 0; i++)
            if (parts[i].n_rows)
                rc = be->ops->matmul(be, parts[i].w, parts[i].x, parts[i].n_rows, parts[i].y,
                                     defer);
    charge(be, FB_OP_GEMM, t0);
    return rc;
}

int fb_rmsnorm(fb_backend_t *be, const float *x, int64_t n_rows, int64_t n,
               const fb_weight_t *gamma, float eps, float *y)
{
    if (!x || !y || !gamma || n_rows < 0 || n <= 0)
        return -EINVAL;
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->rmsnorm(be, x, n_rows, n, gamma, eps, y);
    charge(be, FB_OP_NORM, t0);
    return rc;
}

int fb_layernorm(fb_backend_t *be, const float *x, int64_t n_rows, int64_t n,
                 const fb_weight_t *gamma, const fb_weight_t *beta, float eps, float *y)
{
    if (!x || !y || !gamma || n_rows < 0 || n <= 0)
        return -EINVAL;
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->layernorm(be, x, n_rows, n, gamma, beta, eps, y);
    charge(be, FB_OP_NORM, t0);
    return rc;
}

/* ggml's rotation count to pair index: the pair that turns n_turns times in n_ctx_orig
 * positions, n_rot * ln(n_ctx_orig / (2 pi n_turns)) / (2 ln base) */
static float corr_dim(const fb_rope_t *r, float n_turns)
{
    return (float)r->n_rot * logf((float)r->n_ctx_orig / (n_turns * 2 * (float)M_PI)) /
           (2 * logf(r->freq_base));
}

void fb_rope_corr_dims(const fb_rope_t *rope, float dims[2])
{
    float lo = floorf(corr_dim(rope, rope->beta_fast));
    float hi = ceilf(corr_dim(rope, rope->beta_slow));
    dims[0] = lo > 0 ? lo : 0;
    dims[1] = hi < (float)(rope->n_rot - 1) ? hi : (float)(rope->n_rot - 1);
}

float fb_rope_yarn_mix(const fb_rope_t *rope, const float dims[2], int i)
{
    if (rope->ext_factor == 0.0f)
        return 0.0f;
    float w = dims[1] - dims[0];
    float y = ((float)i - dims[0]) / (w > 0.001f ? w : 0.001f);
    y = y < 0 ? 0 : y > 1 ? 1 : y;
    return (1 - y) * rope->ext_factor;
}

float fb_rope_mscale(const fb_rope_t *rope)
{
    float m = rope->attn_factor > 0 ? rope->attn_factor : 1.0f;
    if (rope->ext_factor != 0.0f)
        m *= 1.0f + 0.1f * logf(1.0f / rope->freq_scale);
    return m;
}

int fb_rope_check(const fb_rope_t *rope, int head_dim)
{
    if (rope->n_rot <= 0 || rope->n_rot > head_dim || rope->n_rot % 2 ||
        (rope->mode != FB_ROPE_ADJACENT && rope->mode != FB_ROPE_NEOX) ||
        !(rope->freq_base > 0) || !isfinite(rope->freq_base) || !(rope->freq_scale > 0) ||
        !isfinite(rope->freq_scale) || !(rope->attn_factor >= 0) ||
        !isfinite(rope->attn_factor) || !(rope->ext_factor >= 0) || !isfinite(rope->ext_factor))
        return -EINVAL;
    /* a base of 1 has no correction dims (ln 1 divides) */
    if (rope->ext_factor != 0.0f &&
        (rope->n_ctx_orig <= 0 || !(rope->beta_fast > 0) || !(rope->beta_slow > 0) ||
         !isfinite(rope->beta_fast) || !isfinite(rope->beta_slow) || rope->freq_base == 1.0f))
        return -EINVAL;
    return 0;
}

int fb_rope(fb_backend_t *be, float *x, int64_t n_rows, int64_t ld, int n_heads, int head_dim,
            const int32_t *pos, const fb_rope_t *rope)
{
    if (!x || !pos || !rope || n_rows < 0 || n_heads <= 0 || head_dim <= 0 ||
        ld < (int64_t)n_heads * head_dim)
        return -EINVAL;
    const fb_weight_t *ff = rope->freq_factors;
    if (ff && (ff->type != GG_F32 || !ff->src || (int64_t)ff->n_in * ff->n_out != rope->n_rot / 2))
        return -EINVAL;
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->rope(be, x, n_rows, ld, n_heads, head_dim, pos, rope);
    charge(be, FB_OP_OTHER, t0);
    return rc;
}

/* What every backend needs of one sequence's attention: buffers, a position per query row
 * (none negative), whole GQA groups, row strides that hold every head, a known mode. */
static int attn_check(const fb_attn_t *a)
{
    if (!a->q || !a->k || !a->v || !a->out || a->n_q < 0 || !(a->pos || !a->n_q))
        return -EINVAL;
    if (a->n_head <= 0 || a->n_head_kv <= 0 || a->head_dim <= 0 || a->n_head % a->n_head_kv)
        return -EINVAL;
    if (!fb_kv_type_valid(a->type_k) || !fb_kv_type_valid(a->type_v))
        return -EINVAL;
    if (a->ldq < (int64_t)a->n_head * a->head_dim || a->ldo < (int64_t)a->n_head * a->head_dim)
        return -EINVAL;
    if ((a->type_k == GG_F32 || a->type_v == GG_F32) &&
        a->ldkv < (int64_t)a->n_head_kv * a->head_dim)
        return -EINVAL;
    if (a->mode < FB_SOFTMAX_REF || a->mode > FB_SOFTMAX_SUMONLY)
        return -EINVAL;
    for (int i = 0; i < a->n_q; i++)
        if (a->pos[i] < 0)
            return -EINVAL;
    if (a->window < 0 || !(a->softcap >= 0.0f) || isinf(a->softcap))
        return -EINVAL;
    if (a->ring < 0 || (a->ring > 0 && (a->ring_start < 0 || a->ring_start >= a->ring)))
        return -EINVAL;
    for (int i = 0; a->ring > 0 && i < a->n_q; i++)
        if (a->pos[i] >= a->ring)
            return -EINVAL;
    return 0;
}

int fb_attention(fb_backend_t *be, const fb_attn_t *a, int n_seq)
{
    if (n_seq < 0 || (!a && n_seq))
        return -EINVAL;
    for (int s = 0; s < n_seq; s++) {
        int rc = attn_check(&a[s]);
        if (rc)
            return rc;
        if ((a[s].window || a[s].softcap > 0.0f) && !be->ops->attn_window)
            return FD_EUNSUP;
        if (a[s].ring > 0 && !be->ops->attn_ring)
            return FD_EUNSUP;
        if (a[s].sinks && !be->ops->attn_sinks)
            return FD_EUNSUP;
    }
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->attention(be, a, n_seq);
    charge(be, FB_OP_ATTN, t0);
    return rc;
}

int fb_silu_mul(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                int64_t n, int64_t ld_in, float *out)
{
    if (!gate || !up || !out || n_rows < 0 || n < 0 || ld_in < n)
        return -EINVAL;
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->silu_mul(be, gate, up, n_rows, n, ld_in, out);
    charge(be, FB_OP_OTHER, t0);
    return rc;
}

int fb_add(fb_backend_t *be, float *y, const float *x, int64_t n)
{
    if (!y || !x || n < 0)
        return -EINVAL;
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->add(be, y, x, n);
    charge(be, FB_OP_OTHER, t0);
    return rc;
}

int fb_gelu_mul(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                int64_t n, int64_t ld_in, float *out)
{
    if (!gate || !up || !out || n_rows < 0 || n < 0 || ld_in < n)
        return -EINVAL;
    if (!be->ops->gelu_mul)
        return FD_EUNSUP;
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->gelu_mul(be, gate, up, n_rows, n, ld_in, out);
    charge(be, FB_OP_OTHER, t0);
    return rc;
}

int fb_swiglu_oai(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                  int64_t n, int64_t ld_in, float alpha, float limit, float *out)
{
    if (!gate || !up || !out || n_rows < 0 || n < 0 || ld_in < n || !isfinite(alpha) ||
        !(limit > 0.0f) || !isfinite(limit))
        return -EINVAL;
    if (!be->ops->swiglu_oai)
        return FD_EUNSUP;
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->swiglu_oai(be, gate, up, n_rows, n, ld_in, alpha, limit, out);
    charge(be, FB_OP_OTHER, t0);
    return rc;
}

int fb_scale(fb_backend_t *be, float *y, int64_t n, float s)
{
    if (!y || n < 0 || !isfinite(s))
        return -EINVAL;
    if (!be->ops->scale)
        return FD_EUNSUP;
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->scale(be, y, n, s);
    charge(be, FB_OP_OTHER, t0);
    return rc;
}

int fb_softcap(fb_backend_t *be, float *y, int64_t n, float cap)
{
    if (!y || n < 0 || !(cap > 0.0f) || isinf(cap))
        return -EINVAL;
    if (!be->ops->softcap)
        return FD_EUNSUP;
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->softcap(be, y, n, cap);
    charge(be, FB_OP_OTHER, t0);
    return rc;
}

int fb_get_rows(fb_backend_t *be, const fb_weight_t *w, const int32_t *ids, int64_t n,
                float *out)
{
    if (!w || !out || n < 0 || (!ids && n))
        return -EINVAL;
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->get_rows(be, w, ids, n, out);
    charge(be, FB_OP_OTHER, t0);
    return rc;
}

int fb_copy2d(fb_backend_t *be, float *dst, int64_t ld_dst, const float *src, int64_t ld_src,
              int64_t n_rows, int64_t n)
{
    if (!dst || !src || n_rows < 0 || n < 0 || ld_dst < n || ld_src < n)
        return -EINVAL;
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->copy2d(be, dst, ld_dst, src, ld_src, n_rows, n);
    charge(be, FB_OP_OTHER, t0);
    return rc;
}

static int check_ids(const int32_t *ids, int64_t n_rows, int64_t limit)
{
    if (n_rows && !ids)
        return -EINVAL;
    for (int64_t r = 0; r < n_rows; r++)
        if (ids[r] < 0 || ids[r] >= limit)
            return -EINVAL;
    return 0;
}

int fb_gather_rows(fb_backend_t *be, float *dst, const float *src, int64_t ld_src,
                   int64_t n_src_rows, const int32_t *ids, int64_t n_rows, int64_t n)
{
    if (!dst || !src || n_rows < 0 || n < 0 || ld_src < n ||
        check_ids(ids, n_rows, n_src_rows))
        return -EINVAL;
    if (!be->ops->gather_rows)
        return FD_EUNSUP;
    uint64_t t0 = fd_now_ns();
    int rc = n_rows ? be->ops->gather_rows(be, dst, src, ld_src, ids, n_rows, n) : 0;
    charge(be, FB_OP_OTHER, t0);
    return rc;
}

int fb_scatter_add_rows(fb_backend_t *be, float *dst, int64_t ld_dst, int64_t n_dst_rows,
                        const float *src, const int32_t *ids, const float *w, int64_t n_rows,
                        int64_t n)
{
    if (!dst || !src || n_rows < 0 || n < 0 || ld_dst < n || (n_rows && !w) ||
        check_ids(ids, n_rows, n_dst_rows))
        return -EINVAL;
    if (!be->ops->scatter_add_rows)
        return FD_EUNSUP;
    uint64_t t0 = fd_now_ns();
    int rc = n_rows ? be->ops->scatter_add_rows(be, dst, ld_dst, src, ids, w, n_rows, n) : 0;
    charge(be, FB_OP_OTHER, t0);
    return rc;
}

/* ---- KV cache types ---- */

static const struct { int type; const char *name; } kv_types[] = {
    { GG_F32, "f32" },   { GG_F16, "f16" },   { GG_BF16, "bf16" }, { GG_Q8_0, "q8_0" },
    { GG_Q4_0, "q4_0" }, { GG_Q4_1, "q4_1" }, { GG_Q5_0, "q5_0" }, { GG_Q5_1, "q5_1" },
};

bool fb_kv_type_valid(int type)
{
    for (size_t i = 0; i < FD_ARRAY_LEN(kv_types); i++)
        if (kv_types[i].type == type)
            return true;
    return false;
}

int fb_kv_type_from_name(const char *name)
{
    for (size_t i = 0; name && i < FD_ARRAY_LEN(kv_types); i++)
        if (!strcasecmp(name, kv_types[i].name))
            return kv_types[i].type;
    return -1;
}

const char *fb_kv_type_name(int type)
{
    for (size_t i = 0; i < FD_ARRAY_LEN(kv_types); i++)
        if (kv_types[i].type == type)
            return kv_types[i].name;
    return "?";
}

size_t fb_kv_head_bytes(int type, int head_dim)
{
    if (!fb_kv_type_valid(type) || head_dim <= 0)
        return 0;
    const int be = gg_block_elems(type);
    return (size_t)((head_dim + be - 1) / be) * (size_t)gg_block_bytes(type);
}

size_t fb_kv_row_bytes(int type, int n_head_kv, int head_dim)
{
    return n_head_kv > 0 ? (size_t)n_head_kv * fb_kv_head_bytes(type, head_dim) : 0;
}

int fb_kv_quantize(void *dst, int type, const float *src, int64_t ld_src, int64_t n_rows,
                   int n_head_kv, int head_dim)
{
    const size_t hb = fb_kv_head_bytes(type, head_dim);
    const int be = gg_block_elems(type);
    const int64_t hdp = (int64_t)(head_dim + be - 1) / be * be;
    float *buf = calloc((size_t)hdp, sizeof(float));
    if (!buf)
        return -ENOMEM;
    int rc = 0;
    for (int64_t r = 0; r < n_rows && rc == 0; r++)
        for (int g = 0; g < n_head_kv && rc == 0; g++) {
            /* the padding past head_dim stays zero */
            memcpy(buf, src + r * ld_src + (int64_t)g * head_dim, (size_t)head_dim * sizeof(float));
            rc = fq_quantize_row(type, buf,
                                 (uint8_t *)dst + ((size_t)r * (size_t)n_head_kv + (size_t)g) * hb,
                                 hdp);
        }
    free(buf);
    return rc;
}

int fb_kv_check(fb_backend_t *be, int type_k, int type_v, int head_dim)
{
    if (!fb_kv_type_valid(type_k) || !fb_kv_type_valid(type_v) || head_dim <= 0)
        return -EINVAL;
    if (type_k == GG_F32 && type_v == GG_F32)
        return 0;
    return be->ops->kv_check ? be->ops->kv_check(be, type_k, type_v, head_dim) : FD_EUNSUP;
}

int fb_kv_store(fb_backend_t *be, void *dst, int type, const float *src, int64_t ld_src,
                int64_t n_rows, int n_head_kv, int head_dim)
{
    const int64_t w = (int64_t)n_head_kv * head_dim;
    if (!dst || !src || n_rows < 0 || n_head_kv <= 0 || head_dim <= 0 || ld_src < w ||
        !fb_kv_type_valid(type))
        return -EINVAL;
    if (type == GG_F32)
        return fb_copy2d(be, dst, w, src, ld_src, n_rows, w);
    if (!be->ops->kv_store)
        return FD_EUNSUP;
    uint64_t t0 = fd_now_ns();
    int rc = be->ops->kv_store(be, dst, type, src, ld_src, n_rows, n_head_kv, head_dim);
    charge(be, FB_OP_OTHER, t0);
    return rc;
}

void fb_mark(fb_backend_t *be, int what, int arg)
{
    if (be->ops->mark)
        be->ops->mark(be, what, arg);
}

void *fb_host_alloc(fb_backend_t *be, size_t bytes)
{
    return be && be->ops->host_alloc ? be->ops->host_alloc(be, bytes) : malloc(bytes ? bytes : 1);
}

void fb_host_free(fb_backend_t *be, void *p)
{
    if (!p)
        return;
    if (be && be->ops->host_alloc)
        be->ops->host_free(be, p);
    else
        free(p);
}

int fb_set_option(fb_backend_t *be, const char *kv)
{
    if (!be || !kv)
        return -EINVAL;
    return be->ops->set_option ? be->ops->set_option(be, kv) : FD_EUNSUP;
}
