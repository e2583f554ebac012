/* backend.h: the interface every compute backend implements (cpu/, corsair/, cuda/), as a
 * vtable (ggml's habit).  A backend owns its memory (fb_alloc: host or device memory), the
 * prepared form of every weight (fb_weight_prepare: converted, re-laid or uploaded once at
 * load), its workers, and its queue: ops are issued in order and MAY run asynchronously;
 * fb_sync() waits for all issued work.  One thread (the engine thread) drives a backend.
 *
 * Memory rule: float pointers passed to ops are backend memory (from fb_alloc); small int
 * arrays (token ids, positions) are host memory and the backend copies them if it must.
 * Weights are described by fb_weight_t, whose src bytes are host memory (the mmapped file
 * or a buffer fusion/ owns) and stay valid until fb_weight_release.
 *
 * Timing: the fb_* wrappers time every op by class (norm, gemm, attention, other) into
 * fb_stats_t, cheaply (two clock reads per op); a backend that runs asynchronously or
 * simulates a device (corsair) adds its own device time.  Errors: 0 or negative (fd.h). */
#ifndef FD_BACKEND_H
#define FD_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fb_backend fb_backend_t;

/* Op classes for timing. */
enum fb_op_class { FB_OP_NORM, FB_OP_GEMM, FB_OP_ATTN, FB_OP_OTHER, FB_OP_CLASS_COUNT };
const char *fb_op_class_name(int c); /* "norm", "gemm", "attention", "other" */

typedef struct fb_stats {
    uint64_t host_ns[FB_OP_CLASS_COUNT];  /* wall time spent in each class on the host */
    uint64_t calls[FB_OP_CLASS_COUNT];
    double dev_s[FB_OP_CLASS_COUNT];      /* device time (simulated or measured), if any */
    double dev_total_s;                   /* device critical-path time (overlap counted once) */
} fb_stats_t;

/* A matrix W of n_out rows by n_in columns, row-major with each row contiguous (as GGUF
 * stores a tensor of ne = {n_in, n_out}).  A 1-D vector (norm gamma/beta) has n_out = 1. */
typedef struct fb_weight {
    int type;            /* enum gg_type of src */
    int64_t n_in;
    int64_t n_out;
    const void *src;     /* host bytes, n_out * gg_row_bytes(type, n_in) */
    const float *bias;   /* optional host vector of n_out added to the product, or NULL */
    const char *name;    /* for messages and per-layer mapping (may be NULL) */
    /* Optional host vector of n_in (or NULL): the product uses x[i] * in_scale[i] in place
     * of x[i], applied before any conversion or quantization of x inside the kernel.  This
     * is how fusion/ folds a norm gamma into a quantized matrix without re-rounding the
     * weights (fusion/fold.h, docs/fusion.md).  A deferred statistic (fb_defer_t) is still
     * that of the raw x.  Stays valid until fb_weight_release, like src. */
    const float *in_scale;
    void *impl;          /* backend-owned prepared form, set by fb_weight_prepare */
    fb_backend_t *owner;
} fb_weight_t;

/* Deferred normalization of a GEMM's input (../shared/design/fusion.md): the GEMM runs on
 * the raw row x; concurrently the backend reduces the row to its statistic and applies it
 * to the outputs:  RMS:   y = (x W^T) * 1/sqrt(mean(x^2) + eps) (+ bias)
 *                  LAYER: y = (x W'^T) * 1/sqrt(var(x) + eps)   (+ bias, the folded c)
 * The weights must already carry gamma (and for LAYER the mean-centering) by folding, or
 * carry gamma as fb_weight_t.in_scale; mean(x^2) and var(x) are those of the raw x (never
 * scaled by in_scale). */
enum fb_norm_kind { FB_NORM_NONE = 0, FB_NORM_RMS = 1, FB_NORM_LAYER = 2 };
typedef struct fb_defer {
    int kind;            /* enum fb_norm_kind */
    float eps;
    float *scale_out;    /* optional: the n_rows scales written here (backend memory) */
} fb_defer_t;

enum fb_rope_mode {
    FB_ROPE_ADJACENT = 0, /* Llama in GGUF: rotate pairs (x[2i], x[2i+1]) */
    FB_ROPE_NEOX = 1      /* Qwen2 / NeoX: rotate (x[i], x[i + d/2]) */
};
typedef struct fb_rope {
    int mode;            /* enum fb_rope_mode */
    int n_rot;           /* rotated dimensions per head (usually head_dim) */
    float freq_base;     /* theta, e.g. 10000 */
    float freq_scale;    /* linear scaling: position multiplied by this (1 = none) */
    /* NULL, or n_rot / 2 F32 factors (a prepared weight whose host bytes src holds): pair i
     * turns at base^(-2i / n_rot) / factor[i] (Llama 3.1's rope_freqs.weight) */
    const fb_weight_t *freq_factors;
    /* YaRN, as llama.cpp's ggml_rope_ext computes it (all unused while ext_factor is 0): pair
     * i's angle is the scaled one blended towards the unscaled one by ramp(i) * ext_factor,
     * where ramp is 1 up to the pair of beta_fast turns in n_ctx_orig positions and 0 from
     * the pair of beta_slow turns (fb_rope_corr_dims), and cos and sin are multiplied by
     * 1 + 0.1 ln(1 / freq_scale) on top of attn_factor */
    float ext_factor;
    float beta_fast, beta_slow;  /* llama.cpp's defaults: 32 and 1 */
    int n_ctx_orig;              /* the context the model was trained for (> 0 with YaRN) */
    float attn_factor;           /* multiplies cos and sin (0: 1) */
} fb_rope_t;

/* YaRN's ramp ends (pair indices, as ggml_rope_yarn_corr_dims rounds them: the fast end
 * floored and at least 0, the slow end ceiled and at most n_rot - 1), in float as ggml. */
void fb_rope_corr_dims(const fb_rope_t *rope, float dims[2]);
/* ramp(i) * ext_factor of pair i (0 without YaRN), in float as ggml computes it. */
float fb_rope_yarn_mix(const fb_rope_t *rope, const float dims[2], int i);
/* What cos and sin are multiplied by: attn_factor (0: 1), times 1 + 0.1 ln(1 / freq_scale)
 * while ext_factor is not 0. */
float fb_rope_mscale(const fb_rope_t *rope);
/* 0 if the rope's fields are ones every backend accepts for head_dim, else -EINVAL. */
int fb_rope_check(const fb_rope_t *rope, int head_dim);

/* Softmax -> P.V.  REF: the unfused reference (normalize p, then p V).  MAXSUM: deferred,
 * exp(s - max) feeds P.V and the sum divides the result (safe default).  SUMONLY: the
 * paper's form with no max (M = 0): one reduction, overflows for scores above ~88. */
enum fb_softmax_mode { FB_SOFTMAX_REF = 0, FB_SOFTMAX_MAXSUM = 1, FB_SOFTMAX_SUMONLY = 2 };

/* Attention of one sequence's new query rows against its KV cache. */
typedef struct fb_attn {
    const float *q;  int64_t ldq;   /* n_q rows; head h at q + i*ldq + h*head_dim */
    /* F32 cache (type_k / type_v 0, GG_F32): row t, kv head g at k + t*ldkv + g*head_dim.
     * Other types (fb_kv_*): k_data / v_data hold the typed rows, row t at byte
     * t * fb_kv_row_bytes(type, n_head_kv, head_dim), kv head g at byte
     * g * fb_kv_head_bytes(type, head_dim) of it (each head's blocks contiguous, padded to
     * whole blocks); ldkv is then not read.  The unions name one pointer two ways. */
    union { const float *k; const void *k_data; };
    union { const float *v; const void *v_data; };
    int64_t ldkv;
    float *out;      int64_t ldo;   /* n_q rows of n_head*head_dim */
    int n_q;
    const int32_t *pos;             /* host: row i attends to cache rows 0..pos[i] */
    int n_head, n_head_kv, head_dim;
    float scale;                    /* usually 1/sqrt(head_dim) */
    int mode;                       /* enum fb_softmax_mode */
    /* Sliding window (Gemma 2/3's local layers; 0 = none): row i attends only to cache rows
     * t with pos[i] - t < window, i.e. pos[i] - window + 1 .. pos[i] (llama.cpp's standard
     * SWA mask).  The cache still holds every position. */
    int window;
    /* Score soft-capping (Gemma 2; 0 = none): each scaled score s becomes
     * softcap * tanh(s / softcap) before the softmax. */
    float softcap;
    int type_k, type_v;             /* enum gg_type of the cache (0: GG_F32, as above) */
    /* A ring cache (a local layer's that keeps only the window; 0 = none): k / v hold ring
     * rows, and the row numbered t above (the one pos counts) lies at ring row
     * (ring_start + t) % ring.  Every pos[i] must be below ring (a row's span fits); only a
     * backend with fb_ops_t.attn_ring takes one (fb_attention: FD_EUNSUP). */
    int64_t ring, ring_start;
    /* Attention sinks (gpt-oss; NULL = none): n_head floats of backend memory, a learned
     * logit per query head that joins each row's softmax denominator only: with M the max
     * of the row's scores and sinks[h] (0 in SUMONLY), p_t = exp(s_t - M) /
     * (sum_t exp(s_t - M) + exp(sinks[h] - M)), and no V row goes with it (llama.cpp's
     * soft_max / flash_attn_ext sinks; not multiplied by scale).  Only a backend with
     * fb_ops_t.attn_sinks takes them (fb_attention: FD_EUNSUP). */
    const float *sinks;
} fb_attn_t;

/* The stored row of fb_attn_t row t (ring or not). */
static inline int64_t fb_attn_row(const fb_attn_t *a, int64_t t)
{
    return a->ring > 0 ? (a->ring_start + t) % a->ring : t;
}

/* KV cache element types (llama-server's --cache-type-k / --cache-type-v): GG_F32, GG_F16,
 * GG_BF16, GG_Q8_0, GG_Q4_0, GG_Q4_1, GG_Q5_0, GG_Q5_1.  A row of a typed cache holds
 * n_head_kv heads, each head_dim elements rounded up to whole blocks (the padding holds
 * zeros), so one head's blocks are contiguous and attention streams them. */
bool fb_kv_type_valid(int type);
/* llama.cpp's lower-case names ("f32", "f16", "bf16", "q8_0", ...): the type, or -1 when the
 * name is none of fb_kv_type_valid's. */
int fb_kv_type_from_name(const char *name);
const char *fb_kv_type_name(int type);        /* "f16", ...; "?" when not a cache type */
size_t fb_kv_head_bytes(int type, int head_dim); /* 0 when the type is not a cache type */
size_t fb_kv_row_bytes(int type, int n_head_kv, int head_dim);
/* n_rows rows of n_head_kv heads of head_dim floats (rows ld_src apart) as typed cache rows
 * at dst (layout above): each head quantized by its type's reference rounding (quants.h),
 * zero padded to whole blocks.  Shared by the backends' fb_kv_store.  0, -ENOMEM or
 * fq_quantize_row's error. */
int fb_kv_quantize(void *dst, int type, const float *src, int64_t ld_src, int64_t n_rows,
                   int n_head_kv, int head_dim);

typedef struct fb_config {
    int threads;                    /* CPU workers; 0 = online cores */
    int device;                     /* device index (cuda) */
    const char *const *options;     /* backend-specific "key=value" strings, NULL-terminated */
} fb_config_t;

/* One product of a group: y (n_rows x w->n_out) = x (n_rows x w->n_in) W^T, as fb_matmul. */
typedef struct fb_mm_part {
    const fb_weight_t *w;
    const float *x;
    int64_t n_rows;      /* 0: skipped */
    float *y;
} fb_mm_part_t;

/* The vtable.  Every op may be asynchronous; fb_sync waits. */
typedef struct fb_ops {
    const char *name;
    void (*destroy)(fb_backend_t *be);
    void *(*alloc)(fb_backend_t *be, size_t bytes);
    void (*free)(fb_backend_t *be, void *p);
    int (*to_device)(fb_backend_t *be, void *dst, const void *src, size_t bytes);
    int (*to_host)(fb_backend_t *be, void *dst, const void *src, size_t bytes);
    int (*sync)(fb_backend_t *be);
    int (*weight_prepare)(fb_backend_t *be, fb_weight_t *w);
    void (*weight_release)(fb_backend_t *be, fb_weight_t *w);

    /* y[r, :] = x[r, :] W^T (+ bias), r < n_rows; x is n_rows x n_in, y n_rows x n_out,
     * both contiguous.  defer: NULL or kind NONE for a plain product. */
    int (*matmul)(fb_backend_t *be, const fb_weight_t *w, const float *x, int64_t n_rows,
                  float *y, const fb_defer_t *defer);
    /* y = x / sqrt(mean(x^2) + eps) * gamma, per row of n. y may equal x. */
    int (*rmsnorm)(fb_backend_t *be, const float *x, int64_t n_rows, int64_t n,
                   const fb_weight_t *gamma, float eps, float *y);
    /* y = (x - mean) / sqrt(var + eps) * gamma + beta (beta may be NULL). */
    int (*layernorm)(fb_backend_t *be, const float *x, int64_t n_rows, int64_t n,
                     const fb_weight_t *gamma, const fb_weight_t *beta, float eps, float *y);
    /* Rotates n_heads heads of head_dim in each of n_rows rows (row stride ld) in place. */
    int (*rope)(fb_backend_t *be, float *x, int64_t n_rows, int64_t ld, int n_heads,
                int head_dim, const int32_t *pos, const fb_rope_t *rope);
    /* n_seq independent attentions (one per sequence).  fb_attention has checked each
     * (buffers, positions, head counts and strides, mode; -EINVAL): a backend checks only
     * its own limits. */
    int (*attention)(fb_backend_t *be, const fb_attn_t *a, int n_seq);
    /* out[r, i] = silu(gate[r, i]) * up[r, i]; gate/up rows have stride ld_in. */
    int (*silu_mul)(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                    int64_t n, int64_t ld_in, float *out);
    /* y[i] += x[i], i < n. */
    int (*add)(fb_backend_t *be, float *y, const float *x, int64_t n);
    /* Rows of a (possibly quantized) matrix, dequantized: out[r, :] = W[ids[r], :]. */
    int (*get_rows)(fb_backend_t *be, const fb_weight_t *w, const int32_t *ids, int64_t n,
                    float *out);
    /* 2-D copy: n_rows rows of n floats, strides in floats. */
    int (*copy2d)(fb_backend_t *be, float *dst, int64_t ld_dst, const float *src,
                  int64_t ld_src, int64_t n_rows, int64_t n);
    /* Optional: step/layer markers for device models and profilers (may be NULL). */
    void (*mark)(fb_backend_t *be, int what, int arg);
    /* Optional: a line of backend-specific information (threads, ISA, device). */
    void (*describe)(fb_backend_t *be, char *buf, size_t len);
    /* Optional: changes one backend option ("key=value", as in fb_config_t.options) between
     * ops, for benchmarks that compare variants on the same prepared weights. */
    int (*set_option)(fb_backend_t *be, const char *kv);
    /* True when the backend computes from fb_weight_t.src in place, keeping no copy of its
     * own (the CPU backend): a host copy made for it (a folded or concatenated matrix) is
     * then memory the model did not need, so fusion/plan.c hands such a backend gamma as
     * in_scale and runs parts that are not adjacent in memory as separate products. */
    bool host_weights;
    /* Optional, for benchmarks (fusion-bench): a limit the products run against, measured
     * on the workers that run them (enum fb_roof).  FB_ROOF_READ: reads the bytes of buf
     * (host memory far larger than the caches) with each of the backend's read loops and
     * returns the best rate in GB/s.  FB_ROOF_SGEMM: an fp32 product of 512 x 2048 by
     * 2048 x 2048 (buf unused), returns GFLOP/s.  Negative: an error (fd.h). */
    double (*roof)(fb_backend_t *be, int what, const void *buf, size_t bytes);
    /* Optional: host memory that fb_to_host copies into fastest (page-locked for a GPU: one
     * transfer straight into it, no bounce buffer), for buffers that receive a copy every
     * step, such as the logits.  NULL: plain malloc/free.  host_free gets only pointers
     * host_alloc returned. */
    void *(*host_alloc)(fb_backend_t *be, size_t bytes);
    void (*host_free)(fb_backend_t *be, void *p);
    /* Gemma's ops (optional: NULL makes the wrapper answer FD_EUNSUP).
     * out[r, i] = gelu(gate[r, i]) * up[r, i], GELU's tanh form
     * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); gate/up rows have stride ld_in. */
    int (*gelu_mul)(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                    int64_t n, int64_t ld_in, float *out);
    /* y[i] *= s, i < n. */
    int (*scale)(fb_backend_t *be, float *y, int64_t n, float s);
    /* y[i] = cap * tanh(y[i] / cap), i < n (cap > 0). */
    int (*softcap)(fb_backend_t *be, float *y, int64_t n, float cap);
    /* True when attention honours fb_attn_t.window and .softcap; fb_attention refuses
     * (FD_EUNSUP) either on a backend without it. */
    bool attn_window;
    /* Mixture-of-experts (fusion/plan.c groups a batch's rows by expert).  ids and w are
     * host memory; fb_gather_rows / fb_scatter_add_rows check them (-EINVAL) first.
     * gather_rows: dst[r, :] = src[ids[r] * ld_src + 0..n), r < n_rows (dst contiguous, n
     * floats a row).  scatter_add_rows: dst[ids[r] * ld_dst + i] += w[r] * src[r * n + i]
     * for r = 0, 1, .. in that order (an id may repeat: each row adds in turn). */
    int (*gather_rows)(fb_backend_t *be, float *dst, const float *src, int64_t ld_src,
                       const int32_t *ids, int64_t n_rows, int64_t n);
    int (*scatter_add_rows)(fb_backend_t *be, float *dst, int64_t ld_dst, const float *src,
                            const int32_t *ids, const float *w, int64_t n_rows, int64_t n);
    /* Optional, KV cache types other than F32 (NULL: F32 caches only).  kv_check: 0 when
     * attention reads K caches of type_k and V caches of type_v at this head size, else
     * FD_EUNSUP (the model refuses the types at load).  kv_store: n_rows rows of n_head_kv
     * heads of head_dim floats (src, row stride ld_src floats) converted into consecutive
     * cache rows of type at dst (layout of fb_attn_t), as a cache write. */
    int (*kv_check)(fb_backend_t *be, int type_k, int type_v, int head_dim);
    int (*kv_store)(fb_backend_t *be, void *dst, int type, const float *src, int64_t ld_src,
                    int64_t n_rows, int n_head_kv, int head_dim);
    /* Optional: n_parts independent products (fb_mm_part_t) as one op, each exactly as
     * matmul would compute it with the same defer, so a backend can spread the union of
     * their output rows over its workers in one dispatch (a mixture-of-experts layer's many
     * small expert products).  fb_matmul_group has checked every part (fb_weight_check
     * too) and the defer, whose scale_out is NULL; a backend skips parts of 0 rows.  NULL
     * here: fb_matmul_group loops over matmul, which is how Corsair and CUDA run it,
     * unchanged. */
    int (*matmul_group)(fb_backend_t *be, const fb_mm_part_t *parts, int n_parts,
                        const fb_defer_t *defer);
    /* True when attention reads ring caches (fb_attn_t.ring); without it the model keeps
     * full caches on every layer. */
    bool attn_ring;
    /* gpt-oss (optional: NULL / false makes the wrapper answer FD_EUNSUP).  attn_sinks: true
     * when attention honours fb_attn_t.sinks.  swiglu_oai: llama.cpp's swiglu_oai,
     * out[r, i] = g / (1 + exp(-alpha g)) * (u + 1) with g = min(gate[r, i], limit) and
     * u = up[r, i] clamped to [-limit, limit]; gate/up rows have stride ld_in. */
    bool attn_sinks;
    int (*swiglu_oai)(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                      int64_t n, int64_t ld_in, float alpha, float limit, float *out);
} fb_ops_t;

enum fb_roof { FB_ROOF_READ = 0, FB_ROOF_SGEMM = 1 };

enum fb_mark { FB_MARK_STEP_BEGIN, FB_MARK_STEP_END, FB_MARK_LAYER };

/* The common head of every backend object; implementations embed it first. */
struct fb_backend {
    const fb_ops_t *ops;
    fb_stats_t stats;
};

/* Creates a backend by name ("cpu", "corsair", "cuda").  -ENOENT for an unknown or absent
 * backend (message in err). */
int fb_create(const char *name, const fb_config_t *cfg, fb_backend_t **out, char *err,
              size_t errlen);
void fb_destroy(fb_backend_t *be);
const char *fb_name(const fb_backend_t *be);
bool fb_available(const char *name);
void fb_stats_get(const fb_backend_t *be, fb_stats_t *out);
void fb_stats_reset(fb_backend_t *be);

/* Wrappers that dispatch and time (see fb_ops_t for contracts). */
void *fb_alloc(fb_backend_t *be, size_t bytes);
void fb_free(fb_backend_t *be, void *p);
int fb_to_device(fb_backend_t *be, void *dst, const void *src, size_t bytes);
int fb_to_host(fb_backend_t *be, void *dst, const void *src, size_t bytes);
int fb_sync(fb_backend_t *be);
int fb_weight_prepare(fb_backend_t *be, fb_weight_t *w);
/* The checks every backend makes on a weight before it prepares or multiplies it: 0, -EINVAL
 * (no data, an empty shape, n_in not a whole number of blocks) or FD_EUNSUP (a type the
 * quants module cannot read). */
int fb_weight_check(const fb_weight_t *w);
void fb_weight_release(fb_backend_t *be, fb_weight_t *w);
int fb_matmul(fb_backend_t *be, const fb_weight_t *w, const float *x, int64_t n_rows,
              float *y, const fb_defer_t *defer);
int fb_rmsnorm(fb_backend_t *be, const float *x, int64_t n_rows, int64_t n,
               const fb_weight_t *gamma, float eps, float *y);
int fb_layernorm(fb_backend_t *be, const float *x, int64_t n_rows, int64_t n,
                 const fb_weight_t *gamma, const fb_weight_t *beta, float eps, float *y);
int fb_rope(fb_backend_t *be, float *x, int64_t n_rows, int64_t ld, int n_heads, int head_dim,
            const int32_t *pos, const fb_rope_t *rope);
int fb_attention(fb_backend_t *be, const fb_attn_t *a, int n_seq);
int fb_silu_mul(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                int64_t n, int64_t ld_in, float *out);
int fb_add(fb_backend_t *be, float *y, const float *x, int64_t n);
int fb_gelu_mul(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                int64_t n, int64_t ld_in, float *out);
int fb_swiglu_oai(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                  int64_t n, int64_t ld_in, float alpha, float limit, float *out);
int fb_scale(fb_backend_t *be, float *y, int64_t n, float s);
int fb_softcap(fb_backend_t *be, float *y, int64_t n, float cap);
int fb_get_rows(fb_backend_t *be, const fb_weight_t *w, const int32_t *ids, int64_t n,
                float *out);
int fb_copy2d(fb_backend_t *be, float *dst, int64_t ld_dst, const float *src, int64_t ld_src,
              int64_t n_rows, int64_t n);
/* 0 when be's attention reads caches of these types at head_dim; FD_EUNSUP when not (F32 and
 * F32 always), -EINVAL for a type that is no cache type. */
int fb_kv_check(fb_backend_t *be, int type_k, int type_v, int head_dim);
/* Writes n_rows K or V rows (n_head_kv heads of head_dim floats, src row stride ld_src)
 * into consecutive cache rows of type at dst (fb_attn_t's layout; F32: a copy2d of rows of
 * n_head_kv * head_dim floats). */
int fb_kv_store(fb_backend_t *be, void *dst, int type, const float *src, int64_t ld_src,
                int64_t n_rows, int n_head_kv, int head_dim);
/* fb_ops_t.matmul_group, or a loop of fb_matmul's op where the backend has none (same
 * results, one op per part).  -EINVAL: n_parts < 0, parts NULL with n_parts > 0, a part
 * with no weight, no x or y, or n_rows < 0, a bad defer kind, or a defer with scale_out
 * (whose rows would be ambiguous across parts).  Timed as one GEMM. */
int fb_matmul_group(fb_backend_t *be, const fb_mm_part_t *parts, int n_parts,
                    const fb_defer_t *defer);
/* fb_ops_t.gather_rows / scatter_add_rows (FD_EUNSUP for a backend without them); ids must
 * lie in [0, n_src_rows) of the rows the caller addresses (checked here: -EINVAL). */
int fb_gather_rows(fb_backend_t *be, float *dst, const float *src, int64_t ld_src,
                   int64_t n_src_rows, const int32_t *ids, int64_t n_rows, int64_t n);
int fb_scatter_add_rows(fb_backend_t *be, float *dst, int64_t ld_dst, int64_t n_dst_rows,
                        const float *src, const int32_t *ids, const float *w, int64_t n_rows,
                        int64_t n);
void fb_mark(fb_backend_t *be, int what, int arg);
/* fb_ops_t.attn_ring of the backend (false for NULL). */
bool fb_attn_ring(const fb_backend_t *be);
/* Whether the backend has gpt-oss's ops: attention sinks and swiglu_oai (false for NULL). */
bool fb_gptoss_ops(const fb_backend_t *be);
/* fb_ops_t.host_weights of the backend (false for NULL). */
bool fb_host_weights(const fb_backend_t *be);
/* fb_ops_t.roof, or FD_EUNSUP when the backend has none. */
double fb_roof(fb_backend_t *be, int what, const void *buf, size_t bytes);
/* fb_ops_t.host_alloc / host_free, or malloc / free (be may be NULL: malloc / free). */
void *fb_host_alloc(fb_backend_t *be, size_t bytes);
void fb_host_free(fb_backend_t *be, void *p);
/* One "key=value" option of the backend, changed at run time: FD_EUNSUP when the backend
 * has no run-time options, FD_ECONFIG for a key or value it does not take. */
int fb_set_option(fb_backend_t *be, const char *kv);

/* Constructors of the built-in backends (called by fb_create). */
int fb_cpu_create(const fb_config_t *cfg, fb_backend_t **out, char *err, size_t errlen);
int fb_corsair_create(const fb_config_t *cfg, fb_backend_t **out, char *err, size_t errlen);
int fb_cuda_create(const fb_config_t *cfg, fb_backend_t **out, char *err, size_t errlen);

#endif
