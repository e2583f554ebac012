/* cuda_kernels.h: the device kernels of the CUDA backend (cuda_kernels.cu) and the one
 * parameter struct each takes by value.  Every kernel has a single struct argument so that
 * cuda_backend.cu can launch, record and compare launches generically (CUDA graph replay:
 * a launch is a function, a grid and the bytes of its struct).  Included only by the two
 * .cu files of backends/cuda/; host code picks kernels through the fcu_k_* getters, called
 * on the engine thread. */
#ifndef FD_CUDA_KERNELS_H
#define FD_CUDA_KERNELS_H

#include <stdint.h>

#include <cuda_fp16.h>

/* Device layouts of prepared weights.  Q8 is Q8_0 re-laid for 16-byte loads: the int8
 * values as an n_out x n_in byte matrix and the fp16 block scales as n_out x n_in/32. */
enum fcu_wtype { FCU_W_F32 = 0, FCU_W_F16 = 1, FCU_W_BF16 = 2, FCU_W_Q8 = 3, FCU_W_COUNT };

/* How a product's input row is normalized.  RMS: the GEMV computes sum(x^2) itself, in the
 * same pass as the dot products; SCALES: per-row scales were computed before (LayerNorm's
 * two-pass variance, and the cuBLAS path). */
enum fcu_norm { FCU_NORM_NONE = 0, FCU_NORM_RMS = 1, FCU_NORM_SCALES = 2 };

#define FCU_GEMV_MAX_ROWS 8   /* activation rows one GEMV launch handles */
#define FCU_ATT_MAX_SEQ 16    /* sequences one attention launch carries inline */
#define FCU_ATT_MAX_GROUP 8   /* query heads per KV head the attention kernels handle */
#define FCU_ATT_QB 8          /* query rows of one sequence per attention block */
#define FCU_ATTD_MAX_SPLIT 64 /* splits of a row's context in the decode attention kernel */

typedef struct fcu_gemv_p {
    const void *w;            /* weights in the device layout */
    const __half *wscale;     /* Q8 block scales, else NULL */
    const float *x;           /* rows x n_in, contiguous */
    float *y;                 /* rows x n_out */
    const float *in_scale;    /* n_in or NULL: x[i] * in_scale[i] feeds the product */
    const float *bias;        /* n_out or NULL */
    const float *row_scale;   /* FCU_NORM_SCALES: rows scales */
    float *scale_out;         /* FCU_NORM_RMS: the rows scales written here, or NULL */
    float *add_to;            /* or NULL: also add_to[r][o] += y[r][o] (a residual add) */
    float *glu_out;           /* GLU kernels: glu_out[r][o] = silu(y[r][o]) * y[r][glu_n + o] */
    int glu_n;
    /* Epilogue RoPE (adjacent pairs) of up to two column ranges, then copies of up to two
     * column ranges to other buffers (the K and V rows into the cache): row r, column o of a
     * copied range [c0, c1) also goes to cp_dst[k][r][o - c0] (rows with NULL: not copied). */
    int rope_n, cp_n;
    int rope_c0[2], rope_c1[2], cp_c0[2], cp_c1[2];
    int rope_hd, rope_nrot;
    float rope_base, rope_scale;
    const int32_t *rope_pos;  /* device, rows */
    const double *rope_freq;  /* as fcu_rope_p.freq */
    float rope_mscale;        /* as fcu_rope_p.mscale */
    float *cp_dst[2][FCU_GEMV_MAX_ROWS];
    int n_in, n_out, rows;
    int norm;                 /* enum fcu_norm */
    float eps;
    /* One activation row (decode): the block stages x (times in_scale) in n_in floats of
     * dynamic shared memory and reduces the RMS statistic there, once per block instead of
     * once per warp; the launch passes that memory (fcu_gemv_stage_bytes).  Only for the
     * one-row kernels of fcu_k_gemv/fcu_k_gemv_glu. */
    int stage;
} fcu_gemv_p;

/* Dynamic shared memory of a one-row product that stages its activations (0: it cannot). */
#define FCU_STAGE_MAX ((size_t)128 << 10)
size_t fcu_gemv_stage_bytes(int rows, int n_in);
/* Lets the one-row product kernels use FCU_STAGE_MAX bytes of dynamic shared memory (once per
 * device, before the first staged launch). */
cudaError_t fcu_gemv_init(void);

/* Per-row statistic and conversion pass in front of cuBLAS (and the row scales for the
 * LayerNorm GEMV): s = 1/sqrt(mean(x^2)+eps) or 1/sqrt(var(x)+eps) (1 for none); then, when
 * out is set, out[r][i] = x[r][i] * in_scale[i] * s in out_type. */
typedef struct fcu_prep_p {
    const float *x;
    void *out;                /* NULL: statistics only */
    float *scale_out;         /* rows, or NULL */
    const float *in_scale;
    int n, norm;              /* enum fb_norm_kind */
    int out_type;             /* FCU_W_F32, _F16 or _BF16 */
    float eps;
} fcu_prep_p;

typedef struct fcu_deq_p {    /* Q8 rows [row0, row0 + rows) to fp16 */
    const int8_t *q;
    const __half *scale;
    __half *out;
    int64_t row0;
    int n_in, rows;
} fcu_deq_p;

typedef struct fcu_rows_p {   /* y[r][o] = bias[o] (bias fill in front of a GEMM) */
    float *y;
    const float *bias;
    int n, rows;
} fcu_rows_p;

typedef struct fcu_norm_p {   /* unfused RMSNorm / LayerNorm */
    const float *x;
    float *y;
    const float *gamma, *beta;
    int n;
    float eps;
} fcu_norm_p;

typedef struct fcu_rope_p {  /* one or two buffers (Q and K) with the same rows */
    float *x, *x2;
    const int32_t *pos;       /* device */
    int64_t ld, ld2;
    int rows, n_heads, n_heads2, head_dim, mode, n_rot;
    float base, scale;
    const double *freq;       /* n_rot / 2 values base^(-2i / n_rot) (fcu_rope_freq), or NULL;
                                 never NULL when the rope has frequency factors or YaRN */
    float mscale;             /* cos and sin times this (fb_rope_mscale; 1 without YaRN) */
} fcu_rope_p;

/* Fills freq[i] = base^(-2i / n_rot) / factors[i] (factors: device floats, or NULL for 1),
 * i < n_rot / 2, on stream st, computed exactly as the RoPE kernels would compute each value
 * without factors themselves (so a table changes no result).  With YaRN (ext_factor not 0)
 * each value is then multiplied by its pair's blend of freq_scale and 1, scale (1 - mix) +
 * mix, mix = fb_rope_yarn_mix's ramp between corr0 and corr1 times ext_factor, so that the
 * kernels run it with a scale of 1. */
cudaError_t fcu_rope_freq(double *freq, int n_rot, float base, const float *factors,
                          float scale, float ext_factor, float corr0, float corr1,
                          cudaStream_t st);

#define FCU_COPY_MAX 16
typedef struct fcu_copy_p {  /* up to FCU_COPY_MAX 2-D copies of rows of n floats (grid z) */
    float *dst[FCU_COPY_MAX];
    const float *src[FCU_COPY_MAX];
    int64_t ld_dst[FCU_COPY_MAX], ld_src[FCU_COPY_MAX];
    int rows[FCU_COPY_MAX];
    int64_t n;
} fcu_copy_p;

typedef struct fcu_ew_p {     /* add, silu_mul */
    float *y;
    const float *a, *b;
    int64_t n, rows, ld_a, ld_y;
} fcu_ew_p;

typedef struct fcu_oai_p {    /* swiglu_oai (fb_ops_t.swiglu_oai): ew's layout */
    fcu_ew_p e;
    float alpha, limit;
} fcu_oai_p;

typedef struct fcu_scal_p {   /* scale (y *= s) and softcap (y = s tanh(y / s)) */
    float *y;
    int64_t n;
    float s;
} fcu_scal_p;
typedef struct fcu_moe_p {     /* gather_rows, scatter_add_rows (mixture of experts) */
    float *dst;
    const float *src;
    const int32_t *ids;       /* device: rows of src (gather) or of dst (scatter) */
    const float *w;           /* device: a weight per row (scatter) */
    int64_t ld, n;            /* ld: the stride of the addressed rows; n: floats a row */
    int rows;
} fcu_moe_p;

typedef struct fcu_getrows_p {
    const void *w;
    const __half *wscale;
    const int32_t *ids;       /* device */
    float *out;
    int n_in;
} fcu_getrows_p;

typedef struct fcu_att_seq {
    const float *q;
    const float *k, *v;       /* F32 caches; other types: their bytes (fb_attn_t's layout) */
    float *out;
    const int32_t *pos;       /* device: n_q positions */
    int ldq, ldkv, ldo;
    int n_q;
    int row0;                 /* its first query row among the launch's rows */
    int grp0;                 /* its first row group (grid y) */
    int T;                    /* decode kernel: positions in its context (pos[0] + 1) */
    int ring_start;           /* a ring cache (fcu_att_p.ring): position t at row
                                 (ring_start + t) % ring; 0 otherwise */
} fcu_att_seq;

/* Attention of up to FCU_ATT_MAX_SEQ sequences.  Grid: x = n_head_kv, y = row groups of
 * FCU_ATT_QB rows of one sequence, z = splits of `chunk` cached positions.  part / counter:
 * per (row, head, split) partial results and per (row, kv head) arrival counters, used when
 * a row's context spans several splits (merged with a log-sum-exp rescale by the block that
 * arrives last; the counters return to zero). */
typedef struct fcu_att_p {
    fcu_att_seq s[FCU_ATT_MAX_SEQ];
    float *part;
    int *counter;
    float *scores;            /* REF: rows x n_head x t_max, p written back normalized */
    int n_seq, n_head, n_head_kv, head_dim, chunk, max_split, t_max;
    int mode;                 /* enum fb_softmax_mode */
    int vec4;                 /* K rows and head offsets allow 16-byte loads */
    int lg;                   /* decode kernel: lanes per cached position (a power of 2) */
    float scale;
    int window;               /* fb_attn_t.window, the same for the launch's sequences (one
                                 layer's): positions t with pos - t >= window are masked
                                 (general kernel only; 0 = none).  Here, not per sequence, so
                                 the parameters stay within MAX_BLOB */
    float softcap;            /* fb_attn_t.softcap (general kernel only; 0 = none) */
    int ring;                 /* fb_attn_t.ring of the launch's sequences (0 = none) */
    int type_k, type_v;       /* enum gg_type of the caches (GG_F32 = 0: ldkv floats a row;
                                 others: fb_kv_row_bytes a row, fb_attn_t's layout) */
    const float *sinks;       /* fb_attn_t.sinks of the launch's sequences (one layer's;
                                 NULL = none): n_head logits that join each row's softmax
                                 denominator only */
} fcu_att_p;

/* Typed cache writes (fb_kv_store) of up to FCU_KVST_MAX parts (grid y): part k's rows of
 * n_head_kv heads of head_dim floats (src, ld_src floats apart) as consecutive cache rows of
 * type[k] at dst[k], each head rounded by its type's reference rounding (quants.c), zero
 * padded to whole blocks.  Grid x covers the largest part's units (a block of 32, or one
 * F16 / BF16 element). */
#define FCU_KVST_MAX 8
typedef struct fcu_kvst_p {
    void *dst[FCU_KVST_MAX];
    const float *src[FCU_KVST_MAX];
    int64_t ld_src[FCU_KVST_MAX];
    int rows[FCU_KVST_MAX], type[FCU_KVST_MAX];
    int n_head_kv, head_dim;
} fcu_kvst_p;
/* The units (threads) of rows rows of type: blocks of 32, or elements of F16 / BF16. */
int64_t fcu_kvst_units(int type, int rows, int n_head_kv, int head_dim);

/* Kernel getters (host).  gemv: vec=1 needs n_in % 8 == 0 and 16-byte aligned rows and x;
 * rows in 1..FCU_GEMV_MAX_ROWS; n_in picks the configuration.  *rows_per_block says how
 * many weight rows a block covers. */
const void *fcu_k_gemv(int wtype, int rows, int vec, int n_in, int *rows_per_block, int *threads);
/* The GLU form (vec only): a block covers rows_per_block gate rows and as many up rows. */
const void *fcu_k_gemv_glu(int wtype, int rows, int n_in, int *rows_per_block, int *threads);
/* The multi-row kernel (tensor cores, sm_80 and later): 1..FCU_GEMV_MAX_ROWS activation rows
 * of any wtype at fp32 accuracy, n_in % 8 == 0 and 16-byte aligned rows and x, as vec above;
 * glu: the GLU form (n_out: its gate rows).  Grid: n_out / rows_per_block, rounded up. */
const void *fcu_k_gemv_mr(int wtype, int glu, int n_out, int *rows_per_block, int *threads);
const void *fcu_k_prep(void);
const void *fcu_k_deq_q8(void);
const void *fcu_k_bias_rows(void);
const void *fcu_k_rmsnorm(void);
const void *fcu_k_layernorm(void);
const void *fcu_k_rope(void);
const void *fcu_k_add(int vec4);
const void *fcu_k_silu_mul(void);
const void *fcu_k_gelu_mul(void);   /* fcu_ew_p as silu_mul's: GELU's tanh form */
const void *fcu_k_swiglu_oai(void); /* fcu_oai_p: gpt-oss's gating (backend.h) */
const void *fcu_k_scale(void);      /* fcu_scal_p */
const void *fcu_k_softcap(void);    /* fcu_scal_p */
const void *fcu_k_copy2d(void);
const void *fcu_k_get_rows(int wtype);
/* gather: grid x covers n, y rows (grid-stride beyond 65535).  scatter_add: grid x covers n,
 * each thread adds every row into its column in row order (rows may share a destination). */
const void *fcu_k_gather_rows(void);
const void *fcu_k_scatter_add_rows(void);
/* which: 0 fused (MAXSUM / SUMONLY), 1 REF scores, 2 REF softmax, 3 REF P.V.  These honour
 * the launch's window and softcap (masked scores are -inf; a split whose positions are all
 * masked contributes nothing); the decode kernel honours the softcap only. */
const void *fcu_k_attention(int which);
/* The decode kernel (fused modes, one query row per sequence, 16-byte aligned q/k/v rows,
 * head_dim % 4 == 0): nv 16-byte pieces per lane, 1 for head_dim <= 128, 2 up to 256; grp
 * query heads per KV head; part entries of head_dim + 4 floats.  prefetch: the variant that
 * loads a group's next batch of positions while it scores this one (nv 1, grp <= 4 only; it
 * needs twice the registers, so it pays where the launch has few blocks, about 2 per SM:
 * measured, docs/gpu.md). */
const void *fcu_k_attention_dec(int nv, int grp, int prefetch);
/* The decode kernel over typed caches (type_k == type_v, a cache type other than F32;
 * NULL for others): rows 8-byte aligned (F16, BF16) or 2-byte aligned (block types), the
 * query rounded as a product with K of the type rounds it (fcpu_ref_kv_query); no
 * prefetching variant. */
const void *fcu_k_attention_dec_typed(int type, int nv, int grp);
/* fcu_kvst_p's kernel. */
const void *fcu_k_kv_store(void);

#endif
