/* plan.c: the unfused (reference) and fused operator plans of a Llama-family decoder
 * (plan.h).  One straight-line forward serves both: the plans differ in which weights were
 * prepared (plain or folded) and in the few places marked "fused:" below. */
#include "fusion/plan.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "common/ggtypes.h"
#include "fusion/fold.h"

/* One layer's prepared weights.  Q/K/V and gate/up are products of one (concatenated, the
 * fused plan) or several parts (unfused, or fused parts whose types differ, as in Q4_K_M
 * files where attn_v is Q6_K while attn_q is Q4_K: concatenating those would need a
 * re-quantization). */
typedef struct layer {
    fb_weight_t norm1, norm2;        /* unfused: the RMSNorm gammas as 1-D weights */
    fb_weight_t qn, kn;              /* qwen3: the Q and K head norms (both plans) */
    bool qk_norm;
    fb_weight_t post1, post2;        /* Gemma's post-attention and post-FFN norms (both
                                        plans: no product follows them to defer into) */
    bool post_norm, swa;
    fz_folded_t qkv[3];
    int n_qkv;
    fb_weight_t wo, wdown;
    fz_folded_t gu[2];
    int n_gu;
    /* mixture of experts: the router (folded in the fused plan, like gate|up) and each
     * expert's gate and up (views of the file's bytes, or folded copies where the policy
     * folds) and down */
    fz_folded_t router;
    fz_folded_t *xg, *xu;
    fb_weight_t *xd;
    bool shared;                     /* qwen2moe: gu and wdown are the shared expert's */
    fz_folded_t shg;                 /* its gate (one output, folded like the router) */
    float *sinks;                    /* gpt-oss: n_head attention sinks (backend memory) */
} layer_t;

/* One LoRA matrix pair as prepared: A folded like its base product where a norm precedes
 * (fused plan), and the rows of the current product that apply it with their weights. */
typedef struct lmat {
    fz_lora_mat_t s;
    fz_folded_t a;
    fb_weight_t b;
    bool pre;                        /* a norm precedes the base product */
    int32_t *ids;                    /* host, max_rows */
    float *w;                        /* host, max_rows */
} lmat_t;

struct fz_plan {
    fb_backend_t *be;
    fz_model_src_t src;              /* dims and rope; the pointers are not used after load */
    fz_plan_opts_t o;
    int n_q, n_kv, n_qkv;            /* n_head * head_dim, n_head_kv * head_dim, sum */
    bool qk_norm;                    /* some layer has head norms (qs, ks allocated) */
    float attn_scale;                /* of the Q.K scores */
    layer_t *layers;
    fb_weight_t tok_embd, out_norm;
    fb_weight_t rope_ff;             /* src.rope_freqs as a weight (src.rope points to it) */
    fz_folded_t head;
    fb_weight_t **prepared;          /* every prepared weight, released in reverse */
    int n_prepared, cap_prepared;
    /* activations (backend memory), max_rows rows each unless noted */
    float *x, *xn, *qkv, *att, *tmp, *gu, *h;
    float *qs, *ks;                  /* qwen3: Q and K rows made contiguous for their norms */
    float *hx, *hxn, *logits;        /* max_seqs rows */
    fb_attn_t *attn;                 /* host, max_seqs */
    int32_t *wpos;                   /* host, max_rows: positions relative to a sliding
                                        window's first cache row */
    float *hid;                      /* host, max_seqs rows of n_embd: hidden states read back */
    int kv_type_k, kv_type_v;        /* the cache types kv_row_k / kv_row_v were computed for */
    size_t kv_row_k, kv_row_v;       /* bytes of one cache row */
    float **hid_dst;                 /* host, max_seqs: the sum each of those rows goes to */
    /* mixture of experts: router logits (max_rows rows of n_expert, and their host copy);
     * the rows each expert runs on, gathered (max_rows * n_expert_used rows of n_embd), their
     * gate, up and SiLU products (of n_ff_exp) and down products (of n_embd) */
    float *moe_lg, *moe_x, *moe_g, *moe_u, *moe_h, *moe_y;
    float *moe_lgh, *moe_prob, *moe_w, *moe_wr; /* host (moe_wr: weights in row order) */
    int32_t *moe_ids, *moe_sel;      /* host: source row of each gathered row; choices */
    int *moe_off, *moe_fill;         /* host: n_expert + 1 segment offsets; fill counters */
    uint64_t *moe_count;             /* host: n_layer * n_expert choices so far */
    float *moe_sg, *moe_sgh;         /* shared expert's gate logits: max_rows (and host) */
    int32_t *moe_iota;               /* host: 0, 1, .. max_rows - 1 */
    fb_mm_part_t *moe_parts;         /* host: a layer step's expert products (2 * n_expert) */
    bool shared;                     /* some layer has a shared expert */
    /* LoRA: the prepared matrices; activations for gathered rows (max_rows of the largest
     * n_in), A's products (of the largest rank) and B's (the largest n_out, or max_seqs rows
     * of n_vocab for the LM head); the sequence of each row and of each row the head runs */
    lmat_t *lm;
    int n_lm;
    float *l_in, *l_t, *l_u;
    int *row_seq, *head_seq;         /* host: max_rows, max_seqs */
    const fz_seq_t *cur_seqs;        /* the forward's sequences */
    bool lora_on;                    /* some sequence of the forward applies an adapter */
};

bool fz_plan_fused(const fz_plan_t *p) { return p->o.fused; }

size_t fz_plan_weight_copies(const fz_plan_t *p)
{
    size_t n = fz_folded_bytes(&p->head);
    for (int l = 0; p->layers && l < p->src.n_layer; l++) {
        for (int i = 0; i < 3; i++)
            n += fz_folded_bytes(&p->layers[l].qkv[i]);
        for (int i = 0; i < 2; i++)
            n += fz_folded_bytes(&p->layers[l].gu[i]);
        n += fz_folded_bytes(&p->layers[l].router) + fz_folded_bytes(&p->layers[l].shg);
        for (int e = 0; p->layers[l].xg && e < p->src.n_expert; e++)
            n += fz_folded_bytes(&p->layers[l].xg[e]) + fz_folded_bytes(&p->layers[l].xu[e]);
    }
    return n;
}

const uint64_t *fz_plan_expert_counts(const fz_plan_t *p)
{
    return p->moe_count;
}
int fz_plan_softmax_mode(const fz_plan_t *p)
{
    return p->o.fused ? p->o.softmax_mode : FB_SOFTMAX_REF;
}

static int prep(fz_plan_t *p, fb_weight_t *w, char *err, size_t errlen)
{
    int rc = fb_weight_prepare(p->be, w);
    if (rc) {
        snprintf(err, errlen, "backend %s cannot prepare %s: %s", fb_name(p->be),
                 w->name ? w->name : "a weight", fd_strerror(rc));
        return rc;
    }
    p->prepared[p->n_prepared++] = w;
    return 0;
}

static fb_weight_t gamma_weight(const float *g, int n, const char *name)
{
    fb_weight_t w = { .type = GG_F32, .n_in = n, .n_out = 1, .src = g, .name = name };
    return w;
}

/* The fold policy of the fused plan on this backend.  FZ_FOLD_AUTO on a backend that
 * computes from the host bytes in place (fb_host_weights: the CPU backend) is INSCALE for
 * every type, F32 included: a folded F32 matrix is a full copy (TinyLlama F32: 2.8 GB more
 * resident than the 4.2 GB file), while in_scale costs n_in multiplies per row of
 * activations (decode and prefill measured in BENCHMARKS.md).  Elsewhere AUTO keeps
 * fold.c's choice (fold F32): those backends hold weights of their own anyway. */
static int plan_policy(const fz_plan_t *p)
{
    if (p->o.fold_policy == FZ_FOLD_AUTO && fb_host_weights(p->be))
        return FZ_FOLD_INSCALE;
    return p->o.fold_policy;
}

/* Builds a product of parts: in the fused plan with gamma folded in (one concatenated weight
 * when the parts share a type), in the unfused plan the parts as they are.  On a backend
 * that computes in place, parts that keep their bytes (INSCALE) but do not follow each other
 * in memory (ffn_gate, ffn_down, ffn_up is the order of llama.cpp's files) stay separate
 * products, each on the raw rows with its own deferred scale, rather than be copied into
 * one: their concatenation would be a copy of the largest matrices of the model. */
static int build_product(fz_plan_t *p, const fb_weight_t *parts, int n_parts,
                         const float *gamma, const char *name, fz_folded_t *out, int *n_out,
                         char *err, size_t errlen)
{
    int same = 1, rc;
    for (int i = 1; i < n_parts; i++)
        same &= parts[i].type == parts[0].type;
    const int policy = plan_policy(p);
    if (same && n_parts > 1 && fb_host_weights(p->be) &&
        fz_fold_policy_for(parts[0].type, policy) == FZ_FOLD_INSCALE &&
        !fz_parts_adjacent(parts, n_parts))
        same = 0;
    if (p->o.fused && same) {
        *n_out = 1;
        rc = fz_fold_rms(parts, n_parts, gamma, policy, name, &out[0], err, errlen);
    } else {
        *n_out = n_parts;
        rc = 0;
        for (int i = 0; i < n_parts && rc == 0; i++) {
            if (p->o.fused) {
                rc = fz_fold_rms(&parts[i], 1, gamma, policy, parts[i].name, &out[i],
                                 err, errlen);
            } else {
                memset(&out[i], 0, sizeof(out[i]));
                out[i].w = parts[i];
                out[i].w.impl = NULL;
                out[i].w.owner = NULL;
            }
        }
    }
    for (int i = 0; i < *n_out && rc == 0; i++)
        rc = prep(p, &out[i].w, err, errlen);
    return rc;
}

/* One expert's gate or up: in the fused plan with the ffn_norm gamma as in_scale on the
 * model's own bytes (no copy per expert: gamma is the model's vector, which outlives the
 * plan) unless the policy folds this type, as build_product does for a single part. */
static int expert_weight(fz_plan_t *p, const fb_weight_t *w, const float *gamma,
                         fz_folded_t *out, char *err, size_t errlen)
{
    int rc = 0;
    memset(out, 0, sizeof(*out));
    const int policy = plan_policy(p);
    if (p->o.fused && fz_fold_policy_for(w->type, policy) != FZ_FOLD_INSCALE) {
        rc = fz_fold_rms(w, 1, gamma, policy, w->name, out, err, errlen);
    } else {
        out->w = *w;
        out->w.impl = NULL;
        out->w.owner = NULL;
        if (p->o.fused)
            out->w.in_scale = gamma;
    }
    return rc ? rc : prep(p, &out->w, err, errlen);
}

/* The router and the experts of layer l. */
static int build_moe(fz_plan_t *p, const fz_layer_src_t *s, layer_t *y, int l, char *err,
                     size_t errlen)
{
    const fz_model_src_t *m = &p->src;
    int n_router, rc;
    if (!s->exp_gate || !s->exp_up || !s->exp_down || !s->router.src) {
        snprintf(err, errlen, "plan: layer %d has no router or experts", l);
        return -EINVAL;
    }
    if ((rc = build_product(p, &s->router, 1, s->ffn_norm, "ffn_gate_inp", &y->router,
                            &n_router, err, errlen)))
        return rc;
    const size_t NE = (size_t)m->n_expert;
    y->xg = calloc(NE, sizeof(*y->xg));
    y->xu = calloc(NE, sizeof(*y->xu));
    y->xd = calloc(NE, sizeof(*y->xd));
    if (!y->xg || !y->xu || !y->xd) {
        snprintf(err, errlen, "plan: out of memory");
        return -ENOMEM;
    }
    for (size_t e = 0; e < NE; e++) {
        if ((rc = expert_weight(p, &s->exp_gate[e], s->ffn_norm, &y->xg[e], err, errlen)) ||
            (rc = expert_weight(p, &s->exp_up[e], s->ffn_norm, &y->xu[e], err, errlen)))
            return rc;
        y->xd[e] = s->exp_down[e];
        if ((rc = prep(p, &y->xd[e], err, errlen)))
            return rc;
    }
    return 0;
}

static int alloc_act(fz_plan_t *p, float **buf, size_t rows, size_t cols)
{
    size_t n;
    if (fd_mul_size(rows, cols, &n) || fd_mul_size(n, sizeof(float), &n))
        return FD_ERANGE;
    *buf = fb_alloc(p->be, n);
    return *buf ? 0 : -ENOMEM;
}

static void free_act(fz_plan_t *p)
{
    float **bufs[] = { &p->x, &p->xn, &p->qkv, &p->att, &p->tmp, &p->gu, &p->h,
                       &p->hx, &p->hxn, &p->logits, &p->qs, &p->ks, &p->moe_lg, &p->moe_x,
                       &p->moe_g, &p->moe_u, &p->moe_h, &p->moe_y, &p->moe_sg,
                       &p->l_in, &p->l_t, &p->l_u };
    for (size_t i = 0; i < FD_ARRAY_LEN(bufs); i++) {
        if (*bufs[i])
            fb_free(p->be, *bufs[i]);
        *bufs[i] = NULL;
    }
}

void fz_plan_free(fz_plan_t *p)
{
    if (!p)
        return;
    free_act(p);
    while (p->n_prepared > 0)
        fb_weight_release(p->be, p->prepared[--p->n_prepared]);
    if (p->layers) {
        for (int l = 0; l < p->src.n_layer; l++) {
            for (int i = 0; i < 3; i++)
                fz_folded_free(&p->layers[l].qkv[i]);
            for (int i = 0; i < 2; i++)
                fz_folded_free(&p->layers[l].gu[i]);
            layer_t *y = &p->layers[l];
            fz_folded_free(&y->router);
            fz_folded_free(&y->shg);
            for (int e = 0; y->xg && e < p->src.n_expert; e++) {
                fz_folded_free(&y->xg[e]);
                fz_folded_free(&y->xu[e]);
            }
            free(y->xg);
            free(y->xu);
            free(y->xd);
            if (y->sinks)
                fb_free(p->be, y->sinks);
        }
    }
    if (p->moe_lgh)
        fb_host_free(p->be, p->moe_lgh);
    free(p->moe_prob);
    free(p->moe_w);
    free(p->moe_wr);
    free(p->moe_ids);
    free(p->moe_sel);
    free(p->moe_off);
    free(p->moe_fill);
    free(p->moe_count);
    if (p->moe_sgh)
        fb_host_free(p->be, p->moe_sgh);
    free(p->moe_iota);
    free(p->moe_parts);
    for (int i = 0; p->lm && i < p->n_lm; i++) {
        fz_folded_free(&p->lm[i].a);
        free(p->lm[i].ids);
        free(p->lm[i].w);
    }
    free(p->lm);
    free(p->row_seq);
    free(p->head_seq);
    fz_folded_free(&p->head);
    free(p->layers);
    free(p->prepared);
    free(p->attn);
    free(p->wpos);
    free(p->hid);
    free(p->hid_dst);
    free(p);
}

static const char *const lora_target_names[FZ_LORA_N_TARGETS] = {
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "output"
};

/* Prepares the adapters' matrices (src->lora): each checked against the shape of the matrix
 * it adapts, A folded with that matrix's norm gamma in the fused plan, and the scratch the
 * products need. */
static int build_lora(fz_plan_t *p, const fz_model_src_t *src, char *err, size_t errlen)
{
    const int n = src->n_lora_mats;
    if (n <= 0)
        return 0;
    if (src->n_lora < 1 || !src->lora) {
        snprintf(err, errlen, "plan: %d LoRA matrices of %d adapters", n, src->n_lora);
        return -EINVAL;
    }
    p->lm = calloc((size_t)n, sizeof(*p->lm));
    p->row_seq = calloc((size_t)p->o.max_rows, sizeof(int));
    p->head_seq = calloc((size_t)p->o.max_seqs, sizeof(int));
    if (!p->lm || !p->row_seq || !p->head_seq)
        goto nomem;
    const int64_t E = src->n_embd, F = src->n_ff;
    int64_t max_in = 0, max_rank = 0, max_out = 0, head_out = 0;
    for (int i = 0; i < n; i++) {
        const fz_lora_mat_t *m = &src->lora[i];
        lmat_t *L = &p->lm[p->n_lm];
        if (m->target < 0 || m->target >= FZ_LORA_N_TARGETS || m->adapter < 0 ||
            m->adapter >= src->n_lora ||
            (m->target != FZ_LORA_OUTPUT && (m->layer < 0 || m->layer >= src->n_layer))) {
            snprintf(err, errlen, "plan: LoRA matrix %d: target %d of layer %d, adapter %d", i,
                     m->target, m->layer, m->adapter);
            return -EINVAL;
        }
        const int64_t dims[FZ_LORA_N_TARGETS][2] = {
            { E, p->n_q }, { E, p->n_kv }, { E, p->n_kv }, { p->n_q, E },
            { E, F }, { E, F }, { F, E }, { E, src->n_vocab } };
        const int t = m->target;
        const bool ffn = t == FZ_LORA_GATE || t == FZ_LORA_UP || t == FZ_LORA_DOWN;
        if (ffn && src->n_expert > 0) {
            snprintf(err, errlen, "plan: LoRA on %s of layer %d: the feed-forward of a mixture "
                     "of experts takes no adapter", lora_target_names[t], m->layer);
            return FD_EUNSUP;
        }
        if (m->a.n_in != dims[t][0] || m->b.n_out != dims[t][1] || m->a.n_out != m->b.n_in ||
            m->a.n_out < 1) {
            snprintf(err, errlen, "plan: LoRA on %s of layer %d: A is %lld x %lld and B %lld x "
                     "%lld (outputs x inputs), the matrix is %lld x %lld",
                     lora_target_names[t], m->layer, (long long)m->a.n_out,
                     (long long)m->a.n_in, (long long)m->b.n_out, (long long)m->b.n_in,
                     (long long)dims[t][1], (long long)dims[t][0]);
            return FD_ESHAPE;
        }
        const fz_layer_src_t *ls = t == FZ_LORA_OUTPUT ? NULL : &src->layers[m->layer];
        const float *gamma = t <= FZ_LORA_V ? ls->attn_norm
                           : (t == FZ_LORA_GATE || t == FZ_LORA_UP) ? ls->ffn_norm
                           : t == FZ_LORA_OUTPUT ? src->out_norm : NULL;
        L->s = *m;
        L->pre = gamma != NULL;
        L->ids = malloc((size_t)p->o.max_rows * sizeof(int32_t));
        L->w = malloc((size_t)p->o.max_rows * sizeof(float));
        p->n_lm++;
        if (!L->ids || !L->w)
            goto nomem;
        int rc;
        if (L->pre) {
            rc = expert_weight(p, &m->a, gamma, &L->a, err, errlen);
        } else {
            L->a.w = m->a;
            L->a.w.impl = NULL;
            L->a.w.owner = NULL;
            rc = prep(p, &L->a.w, err, errlen);
        }
        L->b = m->b;
        L->b.impl = NULL;
        L->b.owner = NULL;
        if (rc || (rc = prep(p, &L->b, err, errlen)))
            return rc;
        max_in = FD_MAX(max_in, m->a.n_in);
        max_rank = FD_MAX(max_rank, m->a.n_out);
        if (t == FZ_LORA_OUTPUT)
            head_out = m->b.n_out;
        else
            max_out = FD_MAX(max_out, m->b.n_out);
    }
    size_t R = (size_t)p->o.max_rows, S = (size_t)p->o.max_seqs;
    size_t U = FD_MAX(R * (size_t)max_out, S * (size_t)head_out);
    int rc;
    if ((rc = alloc_act(p, &p->l_in, R, (size_t)max_in)) ||
        (rc = alloc_act(p, &p->l_t, R, (size_t)max_rank)) ||
        (rc = alloc_act(p, &p->l_u, U, 1))) {
        snprintf(err, errlen, "plan: cannot allocate LoRA activations on %s (%s)",
                 fb_name(p->be), fd_strerror(rc));
        return rc;
    }
    return 0;
nomem:
    snprintf(err, errlen, "plan: out of memory");
    return -ENOMEM;
}

int fz_plan_create(fz_plan_t **out, fb_backend_t *be, const fz_model_src_t *src,
                   const fz_plan_opts_t *opts, char *err, size_t errlen)
{
    *out = NULL;
    if (opts->max_rows < 1 || opts->max_seqs < 1 || src->n_layer < 1) {
        snprintf(err, errlen, "plan: max_rows, max_seqs and n_layer must be positive");
        return -EINVAL;
    }
    if (opts->fused && opts->softmax_mode != FB_SOFTMAX_MAXSUM &&
        opts->softmax_mode != FB_SOFTMAX_SUMONLY) {
        snprintf(err, errlen, "plan: the fused plan's softmax mode must be maxsum or sumonly");
        return -EINVAL;
    }
    fz_plan_t *p = calloc(1, sizeof(*p));
    if (!p)
        goto nomem;
    p->be = be;
    p->src = *src;
    p->src.layers = NULL;
    p->o = *opts;
    p->n_q = src->n_head * src->head_dim;
    p->n_kv = src->n_head_kv * src->head_dim;
    p->n_qkv = p->n_q + 2 * p->n_kv;
    p->kv_row_k = p->kv_row_v = (size_t)p->n_kv * sizeof(float);
    /* RoPE's cos and sin times an attention factor a make Q.K scores a^2 times larger: the
     * same as scaling the scores, which is where the plan applies it */
    float af = src->rope_attn_factor > 0 ? src->rope_attn_factor : 1.0f;
    p->attn_scale = af * af * (src->attn_scale > 0 ? src->attn_scale
                                                   : 1.0f / sqrtf((float)src->head_dim));
    int L = src->n_layer;
    const bool moe = src->n_expert > 0;
    if (moe && (src->n_expert_used < 1 || src->n_expert_used > src->n_expert ||
                src->n_ff_exp < 1)) {
        snprintf(err, errlen, "plan: %d of %d experts, expert width %d", src->n_expert_used,
                 src->n_expert, src->n_ff_exp);
        free(p);
        return -EINVAL;
    }
    p->cap_prepared = 14 * L + 4 + (moe ? L * (3 + 3 * src->n_expert) : 0) +
                      2 * FD_MAX(src->n_lora_mats, 0);
    p->layers = calloc((size_t)L, sizeof(*p->layers));
    p->prepared = calloc((size_t)p->cap_prepared, sizeof(*p->prepared));
    p->attn = calloc((size_t)opts->max_seqs, sizeof(*p->attn));
    p->wpos = calloc((size_t)opts->max_rows, sizeof(*p->wpos));
    p->hid = calloc((size_t)opts->max_seqs * (size_t)src->n_embd, sizeof(*p->hid));
    p->hid_dst = calloc((size_t)opts->max_seqs, sizeof(*p->hid_dst));
    if (!p->layers || !p->prepared || !p->attn || !p->wpos || !p->hid || !p->hid_dst)
        goto nomem;

    int rc;
    for (int l = 0; l < L; l++) {
        const fz_layer_src_t *s = &src->layers[l];
        layer_t *y = &p->layers[l];
        if (!opts->fused) {
            y->norm1 = gamma_weight(s->attn_norm, src->n_embd, "attn_norm");
            y->norm2 = gamma_weight(s->ffn_norm, src->n_embd, "ffn_norm");
            if ((rc = prep(p, &y->norm1, err, errlen)) || (rc = prep(p, &y->norm2, err, errlen)))
                goto fail;
        }
        fb_weight_t qkv[3] = { s->wq, s->wk, s->wv }, gu[2] = { s->w_gate, s->w_up };
        if ((rc = build_product(p, qkv, 3, s->attn_norm, "attn_qkv", y->qkv, &y->n_qkv, err,
                                errlen)))
            goto fail;
        if (moe)
            rc = build_moe(p, s, y, l, err, errlen);
        if (rc == 0 && moe && s->shexp_gate.src) {
            int n_shg;
            y->shared = p->shared = true;
            rc = build_product(p, &s->shexp_gate, 1, s->ffn_norm, "ffn_gate_inp_shexp",
                               &y->shg, &n_shg, err, errlen);
        }
        if (rc == 0 && (!moe || y->shared))
            rc = build_product(p, gu, 2, s->ffn_norm, "ffn_gate_up", y->gu, &y->n_gu, err,
                               errlen);
        if (rc)
            goto fail;
        /* the head norms are plain operators in both plans: what follows them is RoPE, not a
         * product a scale could be deferred past */
        if (s->q_norm || s->k_norm) {
            if (!s->q_norm || !s->k_norm) {
                snprintf(err, errlen, "plan: layer %d has one of the Q and K head norms only",
                         l);
                rc = -EINVAL;
                goto fail;
            }
            y->qk_norm = true;
            y->qn = gamma_weight(s->q_norm, src->qk_norm_full ? p->n_q : src->head_dim,
                                 "attn_q_norm");
            y->kn = gamma_weight(s->k_norm, src->qk_norm_full ? p->n_kv : src->head_dim,
                                 "attn_k_norm");
            if ((rc = prep(p, &y->qn, err, errlen)) || (rc = prep(p, &y->kn, err, errlen)))
                goto fail;
            p->qk_norm = true;
        }
        y->swa = s->swa;
        if (s->attn_sinks) {
            /* both plans: a sink joins the softmax's denominator (fb_attn_t.sinks) */
            const size_t nb = (size_t)src->n_head * sizeof(float);
            if (!(y->sinks = fb_alloc(be, nb)) ||
                (rc = fb_to_device(be, y->sinks, s->attn_sinks, nb))) {
                rc = y->sinks ? rc : -ENOMEM;
                snprintf(err, errlen, "plan: cannot place layer %d's attention sinks on %s "
                         "(%s)", l, fb_name(be), fd_strerror(rc));
                goto fail;
            }
        }
        if (s->post_attn_norm || s->post_ffn_norm) {
            if (!s->post_attn_norm || !s->post_ffn_norm) {
                snprintf(err, errlen, "plan: layer %d has one of the two post norms only", l);
                rc = -EINVAL;
                goto fail;
            }
            y->post_norm = true;
            y->post1 = gamma_weight(s->post_attn_norm, src->n_embd, "post_attention_norm");
            y->post2 = gamma_weight(s->post_ffn_norm, src->n_embd, "post_ffw_norm");
            if ((rc = prep(p, &y->post1, err, errlen)) || (rc = prep(p, &y->post2, err, errlen)))
                goto fail;
        }
        y->wo = s->wo;
        y->wdown = s->w_down;
        if ((rc = prep(p, &y->wo, err, errlen)) ||
            ((!moe || y->shared) && (rc = prep(p, &y->wdown, err, errlen))))
            goto fail;
    }
    p->tok_embd = src->tok_embd;
    if ((rc = prep(p, &p->tok_embd, err, errlen)))
        goto fail;
    p->src.rope.freq_factors = NULL;
    if (src->rope_freqs) {
        p->rope_ff = gamma_weight(src->rope_freqs, src->rope.n_rot / 2, "rope_freqs");
        if ((rc = prep(p, &p->rope_ff, err, errlen)))
            goto fail;
        p->src.rope.freq_factors = &p->rope_ff;
    }
    /* both plans: the fused head folds this gamma in, but hidden states (embeddings) are
     * normalized explicitly */
    int n_head_parts;
    p->out_norm = gamma_weight(src->out_norm, src->n_embd, "output_norm");
    if ((rc = prep(p, &p->out_norm, err, errlen)))
        goto fail;
    if ((rc = build_product(p, &src->output, 1, src->out_norm, "output", &p->head,
                            &n_head_parts, err, errlen)))
        goto fail;

    size_t R = (size_t)opts->max_rows, S = (size_t)opts->max_seqs;
    size_t E = (size_t)src->n_embd, F = (size_t)src->n_ff;
    if ((rc = alloc_act(p, &p->x, R, E)) || (rc = alloc_act(p, &p->qkv, R, (size_t)p->n_qkv)) ||
        (rc = alloc_act(p, &p->att, R, (size_t)p->n_q)) || (rc = alloc_act(p, &p->tmp, R, E)) ||
        ((!moe || p->shared) &&
         ((rc = alloc_act(p, &p->gu, R, 2 * F)) || (rc = alloc_act(p, &p->h, R, F)))) ||
        (rc = alloc_act(p, &p->hx, S, E)) || (rc = alloc_act(p, &p->hxn, S, E)) ||
        (rc = alloc_act(p, &p->logits, S, (size_t)src->n_vocab)))
        goto fail_mem;
    if (moe) {
        size_t NE = (size_t)src->n_expert, RK = R * (size_t)src->n_expert_used;
        size_t FE = (size_t)src->n_ff_exp;
        if ((rc = alloc_act(p, &p->moe_lg, R, NE)) || (rc = alloc_act(p, &p->moe_x, RK, E)) ||
            (rc = alloc_act(p, &p->moe_g, RK, FE)) || (rc = alloc_act(p, &p->moe_u, RK, FE)) ||
            (rc = alloc_act(p, &p->moe_h, RK, FE)) || (rc = alloc_act(p, &p->moe_y, RK, E)))
            goto fail_mem;
        p->moe_lgh = fb_host_alloc(p->be, R * NE * sizeof(float)); /* page-locked on a GPU */
        p->moe_prob = malloc(NE * sizeof(float));
        p->moe_w = malloc(RK * sizeof(float));
        p->moe_wr = malloc(RK * sizeof(float));
        p->moe_ids = malloc(RK * sizeof(int32_t));
        p->moe_sel = malloc(RK * sizeof(int32_t));
        p->moe_off = malloc((NE + 1) * sizeof(int));
        p->moe_fill = malloc(NE * sizeof(int));
        p->moe_count = calloc((size_t)L * NE, sizeof(uint64_t));
        p->moe_parts = malloc(2 * NE * sizeof(fb_mm_part_t));
        if (!p->moe_lgh || !p->moe_prob || !p->moe_w || !p->moe_wr || !p->moe_ids ||
            !p->moe_sel || !p->moe_off || !p->moe_fill || !p->moe_count || !p->moe_parts)
            goto nomem;
        if (p->shared) {
            if ((rc = alloc_act(p, &p->moe_sg, R, 1)))
                goto fail_mem;
            p->moe_sgh = fb_host_alloc(p->be, R * sizeof(float));
            p->moe_iota = malloc(R * sizeof(int32_t));
            if (!p->moe_sgh || !p->moe_iota)
                goto nomem;
            for (size_t r = 0; r < R; r++)
                p->moe_iota[r] = (int32_t)r;
        }
    }
    if (!opts->fused && (rc = alloc_act(p, &p->xn, R, E)))
        goto fail_mem;
    if ((rc = build_lora(p, src, err, errlen)))
        goto fail;
    if (p->qk_norm && ((rc = alloc_act(p, &p->qs, R, (size_t)p->n_q)) ||
                       (rc = alloc_act(p, &p->ks, R, (size_t)p->n_kv))))
        goto fail_mem;
    *out = p;
    return 0;

fail_mem:
    snprintf(err, errlen, "plan: cannot allocate activations for %d rows on %s (%s)",
             opts->max_rows, fb_name(be), fd_strerror(rc));
fail:
    fz_plan_free(p);
    return rc;
nomem:
    snprintf(err, errlen, "plan: out of memory");
    fz_plan_free(p);
    return -ENOMEM;
}

/* Where part i of a product writes: the whole of buf, rows of the concatenated width, when
 * there is one part; else consecutive blocks of max_rows rows of each part's width. */
static void part_out(const fz_plan_t *p, float *buf, const fz_folded_t *parts, int i,
                     float **dst, int64_t *ld)
{
    float *d = buf;
    for (int j = 0; j < i; j++)
        d += (size_t)p->o.max_rows * (size_t)parts[j].w.n_out;
    *dst = d;
    *ld = parts[i].w.n_out;
}

/* Runs a product over n rows of in into buf; fused: in is the raw residual row and the
 * RMS scale is deferred to the outputs. */
static int product(fz_plan_t *p, const fz_folded_t *parts, int n_parts, const float *in,
                   int n, float *buf)
{
    fb_defer_t defer = { .kind = FB_NORM_RMS, .eps = p->src.eps };
    for (int i = 0; i < n_parts; i++) {
        float *dst;
        int64_t ld;
        part_out(p, buf, parts, i, &dst, &ld);
        int rc = fb_matmul(p->be, &parts[i].w, in, n, dst, p->o.fused ? &defer : NULL);
        if (rc)
            return rc;
    }
    return 0;
}

/* Columns [col, ...) of a product's output as a pointer and a row stride. */
static void view(const fz_plan_t *p, float *buf, const fz_folded_t *parts, int n_parts,
                 int64_t col, float **ptr, int64_t *ld)
{
    for (int i = 0; i < n_parts; i++) {
        if (col < parts[i].w.n_out || i == n_parts - 1) {
            part_out(p, buf, parts, i, ptr, ld);
            *ptr += col;
            return;
        }
        col -= parts[i].w.n_out;
    }
}

/* RMSNorm of each head of n rows of *x (row stride *ld) with gamma g, as one operator over
 * n * n_heads rows of head_dim: rows that are not contiguous (a concatenated Q|K|V product)
 * are first copied into scratch, and *x, *ld then point there. */
static int head_norm(fz_plan_t *p, float **x, int64_t *ld, int n, int n_heads, int dim,
                     const fb_weight_t *g, float *scratch)
{
    int64_t width = (int64_t)n_heads * dim;
    int rc;
    if (*ld != width) {
        if ((rc = fb_copy2d(p->be, scratch, width, *x, *ld, n, width)))
            return rc;
        *x = scratch;
        *ld = width;
    }
    return fb_rmsnorm(p->be, *x, (int64_t)n * n_heads, dim, g, p->src.eps, *x);
}

/* The expert weights of one row from its n_expert router logits (enum fz_moe_gating):
 * sel[0..k) the chosen experts, best first (ties to the lower index), w their weights. */
static void route_row(fz_plan_t *p, const float *lg, int32_t *sel, float *w)
{
    const fz_model_src_t *m = &p->src;
    const int NE = m->n_expert, K = m->n_expert_used;
    float *prob = p->moe_prob;
    if (m->moe_gating == FZ_GATING_SOFTMAX_WEIGHT) {
        /* gpt-oss: the top K logits, then a softmax over those K only */
        for (int e = 0; e < NE; e++)
            prob[e] = lg[e];
    } else if (m->moe_gating == FZ_GATING_SIGMOID) {
        for (int e = 0; e < NE; e++)
            prob[e] = 1.0f / (1.0f + expf(-lg[e]));
    } else {
        float mx = lg[0];
        for (int e = 1; e < NE; e++)
            mx = fmaxf(mx, lg[e]);
        double sum = 0;
        for (int e = 0; e < NE; e++) {
            prob[e] = expf(lg[e] - mx);
            sum += prob[e];
        }
        float inv = (float)(1.0 / sum);
        for (int e = 0; e < NE; e++)
            prob[e] *= inv;
    }
    for (int j = 0; j < K; j++) {
        int best = -1;
        for (int e = 0; e < NE; e++) {
            bool taken = false;
            for (int i = 0; i < j && !taken; i++)
                taken = sel[i] == e;
            if (!taken && (best < 0 || prob[e] > prob[best]))
                best = e;
        }
        sel[j] = best;
        w[j] = prob[best];
    }
    if (m->moe_gating == FZ_GATING_SOFTMAX_WEIGHT) {
        const float mx = w[0]; /* the largest logit */
        double sum = 0;
        for (int j = 0; j < K; j++)
            sum += (w[j] = expf(w[j] - mx));
        for (int j = 0; j < K; j++)
            w[j] = (float)(w[j] / sum);
    }
    if (m->moe_norm_w) {
        float sum = 0;
        for (int j = 0; j < K; j++)
            sum += w[j];
        for (int j = 0; j < K; j++)
            w[j] /= sum;
    }
    if (m->moe_w_scale != 0.0f && m->moe_w_scale != 1.0f)
        for (int j = 0; j < K; j++)
            w[j] *= m->moe_w_scale;
}

/* Routes n rows from the host router logits: each expert's rows become one segment
 * moe_off[e] .. moe_off[e + 1] of the gathered rows, in row order, with the row it came
 * from in moe_ids and its weight in moe_w. */
static void route(fz_plan_t *p, int l, int n)
{
    const fz_model_src_t *m = &p->src;
    const int NE = m->n_expert, K = m->n_expert_used;
    for (int r = 0; r < n; r++)
        route_row(p, p->moe_lgh + (size_t)r * NE, p->moe_sel + (size_t)r * K,
                  p->moe_wr + (size_t)r * K);
    memset(p->moe_off, 0, (size_t)(NE + 1) * sizeof(int));
    for (int i = 0; i < n * K; i++)
        p->moe_off[p->moe_sel[i] + 1]++;
    for (int e = 0; e < NE; e++) {
        p->moe_off[e + 1] += p->moe_off[e];
        p->moe_fill[e] = p->moe_off[e];
        p->moe_count[(size_t)l * NE + e] += (uint64_t)(p->moe_off[e + 1] - p->moe_off[e]);
    }
    for (int i = 0; i < n * K; i++) {
        int at = p->moe_fill[p->moe_sel[i]]++;
        p->moe_ids[at] = i / K;
        p->moe_w[at] = p->moe_wr[i];
    }
}

/* gate (x) up by the model's activation (fz_model_src_t.act). */
static int glu(fz_plan_t *p, const float *g, const float *u, int64_t n_rows, int64_t n,
               int64_t ld, float *out)
{
    switch (p->src.act) {
    case FZ_ACT_GELU:
        return fb_gelu_mul(p->be, g, u, n_rows, n, ld, out);
    case FZ_ACT_SWIGLU_OAI:
        return fb_swiglu_oai(p->be, g, u, n_rows, n, ld, FZ_SWIGLU_OAI_ALPHA,
                             FZ_SWIGLU_OAI_LIMIT, out);
    default:
        return fb_silu_mul(p->be, g, u, n_rows, n, ld, out);
    }
}

/* The mixture-of-experts feed-forward of layer l over n rows of in (the fused plan: raw
 * residual rows, every product's RMS scale deferred, which commutes with gathering rows),
 * added into the residual x.  The router's logits come back to the host to be routed: on a
 * device backend that is one copy of n x n_expert floats and a wait for the queue, per
 * layer and step. */
static int moe_ffn(fz_plan_t *p, int l, const float *in, int n)
{
    const layer_t *y = &p->layers[l];
    const fz_model_src_t *m = &p->src;
    const int NE = m->n_expert, nk = n * m->n_expert_used;
    const int64_t E = m->n_embd, FE = m->n_ff_exp;
    fb_defer_t defer = { .kind = FB_NORM_RMS, .eps = m->eps };
    const fb_defer_t *d = p->o.fused ? &defer : NULL;
    int rc;
    /* qwen2moe's shared expert, first: in is the residual x itself in the fused plan, which
     * the experts' scatter-add changes */
    if (y->shared) {
        float *g, *u;
        int64_t ldg, ldu;
        if ((rc = product(p, y->gu, y->n_gu, in, n, p->gu)))
            return rc;
        view(p, p->gu, y->gu, y->n_gu, 0, &g, &ldg);
        view(p, p->gu, y->gu, y->n_gu, m->n_ff, &u, &ldu);
        if ((rc = fb_silu_mul(p->be, g, u, n, m->n_ff, ldg, p->h)) ||
            (rc = fb_matmul(p->be, &y->wdown, p->h, n, p->tmp, NULL)) ||
            (rc = fb_matmul(p->be, &y->shg.w, in, n, p->moe_sg, d)) ||
            (rc = fb_to_host(p->be, p->moe_sgh, p->moe_sg, (size_t)n * sizeof(float))))
            return rc;
    }
    if ((rc = fb_matmul(p->be, &y->router.w, in, n, p->moe_lg, d)) ||
        (rc = fb_to_host(p->be, p->moe_lgh, p->moe_lg, (size_t)n * (size_t)NE * sizeof(float))) ||
        (rc = fb_sync(p->be)))
        return rc;
    route(p, l, n);
    if ((rc = fb_gather_rows(p->be, p->moe_x, in, E, n, p->moe_ids, nk, E)))
        return rc;
    /* the chosen experts' products as two groups (gate and up, then down), each one op a
     * backend may spread over its workers at once (fb_matmul_group) */
    fb_mm_part_t *pt = p->moe_parts;
    int np = 0;
    for (int e = 0; e < NE; e++) {
        int r0 = p->moe_off[e], cnt = p->moe_off[e + 1] - r0;
        if (cnt == 0)
            continue;
        const float *xe = p->moe_x + (size_t)r0 * (size_t)E;
        pt[np++] = (fb_mm_part_t){ &y->xg[e].w, xe, cnt, p->moe_g + (size_t)r0 * (size_t)FE };
        pt[np++] = (fb_mm_part_t){ &y->xu[e].w, xe, cnt, p->moe_u + (size_t)r0 * (size_t)FE };
    }
    if ((rc = fb_matmul_group(p->be, pt, np, d)) ||
        (rc = glu(p, p->moe_g, p->moe_u, nk, FE, FE, p->moe_h)))
        return rc;
    np = 0;
    for (int e = 0; e < NE; e++) {
        int r0 = p->moe_off[e], cnt = p->moe_off[e + 1] - r0;
        if (cnt > 0)
            pt[np++] = (fb_mm_part_t){ &y->xd[e], p->moe_h + (size_t)r0 * (size_t)FE, cnt,
                                       p->moe_y + (size_t)r0 * (size_t)E };
    }
    if ((rc = fb_matmul_group(p->be, pt, np, NULL)))
        return rc;
    if ((rc = fb_scatter_add_rows(p->be, p->x, E, n, p->moe_y, p->moe_ids, p->moe_w, nk, E)))
        return rc;
    if (!y->shared)
        return 0;
    /* the shared expert's rows, each scaled by the sigmoid of its gate logit */
    for (int r = 0; r < n; r++)
        p->moe_sgh[r] = 1.0f / (1.0f + expf(-p->moe_sgh[r]));
    return fb_scatter_add_rows(p->be, p->x, E, n, p->tmp, p->moe_iota, p->moe_sgh, n, E);
}

/* Adds the LoRA terms of (layer, target) to n rows of dst (row stride ld), whose inputs are
 * the n rows of in (contiguous, the base product's input: raw rows in the fused plan when a
 * norm precedes); rseq: each row's sequence.  Per adapter only the rows whose sequence
 * applies it take part (gathered when not all do), each with its own weight, so sequences
 * with different adapters or scales share a step; rows of scale 0 are left exactly as the
 * base product wrote them. */
static int lora_add(fz_plan_t *p, int layer, int target, const float *in, int n,
                    const int *rseq, float *dst, int64_t ld)
{
    if (!p->lora_on)
        return 0;
    fb_defer_t defer = { .kind = FB_NORM_RMS, .eps = p->src.eps };
    for (int i = 0; i < p->n_lm; i++) {
        lmat_t *L = &p->lm[i];
        if (L->s.target != target || (target != FZ_LORA_OUTPUT && L->s.layer != layer))
            continue;
        int k = 0;
        for (int r = 0; r < n; r++) {
            const float *sc = p->cur_seqs[rseq[r]].lora;
            float u = sc ? sc[L->s.adapter] : 0.0f;
            if (u != 0.0f) {
                L->ids[k] = r;
                L->w[k++] = u * L->s.scale;
            }
        }
        if (k == 0)
            continue;
        const int64_t nin = L->a.w.n_in;
        const float *x = in;
        int rc = 0;
        if (k < n) {
            rc = fb_gather_rows(p->be, p->l_in, in, nin, n, L->ids, k, nin);
            x = p->l_in;
        }
        if (rc || (rc = fb_matmul(p->be, &L->a.w, x, k, p->l_t,
                                  p->o.fused && L->pre ? &defer : NULL)) ||
            (rc = fb_matmul(p->be, &L->b, p->l_t, k, p->l_u, NULL)) ||
            (rc = fb_scatter_add_rows(p->be, dst, ld, n, p->l_u, L->ids, L->w, k, L->b.n_out)))
            return rc;
    }
    return 0;
}

/* The LoRA terms of Q, K and V (or gate and up: first the target t0, then t0 + 1 ...) at
 * their columns of a product's output. */
static int lora_parts(fz_plan_t *p, int l, int t0, int nt, const int64_t *cols,
                      const fz_folded_t *parts, int n_parts, const float *in, int n, float *buf)
{
    for (int i = 0; i < nt && p->lora_on; i++) {
        float *d;
        int64_t ld;
        view(p, buf, parts, n_parts, cols[i], &d, &ld);
        int rc = lora_add(p, l, t0 + i, in, n, p->row_seq, d, ld);
        if (rc)
            return rc;
    }
    return 0;
}

static int layer_forward(fz_plan_t *p, int l, const fz_kv_t *kv, const int32_t *pos, int n,
                         const fz_seq_t *seqs, int n_seqs)
{
    const layer_t *y = &p->layers[l];
    const fz_model_src_t *m = &p->src;
    if (kv->type_k != p->kv_type_k || kv->type_v != p->kv_type_v) {
        p->kv_type_k = kv->type_k;
        p->kv_type_v = kv->type_v;
        p->kv_row_k = fb_kv_row_bytes(kv->type_k, m->n_head_kv, m->head_dim);
        p->kv_row_v = fb_kv_row_bytes(kv->type_v, m->n_head_kv, m->head_dim);
    }
    if (!p->kv_row_k || !p->kv_row_v)
        return -EINVAL;
    int64_t E = m->n_embd, F = m->n_ff;
    int rc;

    /* attention block: unfused normalizes first; fused: the product sees the raw rows */
    const float *in = p->x;
    if (!p->o.fused) {
        if ((rc = fb_rmsnorm(p->be, p->x, n, E, &y->norm1, m->eps, p->xn)))
            return rc;
        in = p->xn;
    }
    const int64_t qkv_cols[3] = { 0, p->n_q, p->n_q + p->n_kv };
    if ((rc = product(p, y->qkv, y->n_qkv, in, n, p->qkv)) ||
        (rc = lora_parts(p, l, FZ_LORA_Q, 3, qkv_cols, y->qkv, y->n_qkv, in, n, p->qkv)))
        return rc;
    float *q, *k, *v;
    int64_t ldq, ldk, ldv;
    view(p, p->qkv, y->qkv, y->n_qkv, 0, &q, &ldq);
    view(p, p->qkv, y->qkv, y->n_qkv, p->n_q, &k, &ldk);
    view(p, p->qkv, y->qkv, y->n_qkv, p->n_q + p->n_kv, &v, &ldv);
    /* per head (qwen3), or OLMoE's over the whole Q and K rows: one "head" of their width */
    int hq = m->qk_norm_full ? 1 : m->n_head, hk = m->qk_norm_full ? 1 : m->n_head_kv;
    int dq = m->qk_norm_full ? p->n_q : m->head_dim, dk = m->qk_norm_full ? p->n_kv : m->head_dim;
    if (y->qk_norm &&
        ((rc = head_norm(p, &q, &ldq, n, hq, dq, &y->qn, p->qs)) ||
         (rc = head_norm(p, &k, &ldk, n, hk, dk, &y->kn, p->ks))))
        return rc;
    const fb_rope_t *rope = y->swa && m->rope_swa.n_rot ? &m->rope_swa : &m->rope;
    if ((rc = fb_rope(p->be, q, n, ldq, m->n_head, m->head_dim, pos, rope)) ||
        (rc = fb_rope(p->be, k, n, ldk, m->n_head_kv, m->head_dim, pos, rope)))
        return rc;

    const int64_t ring = kv->ring && y->swa && m->n_swa > 0 ? kv->ring[l] : 0;
    if (ring > 0 && ring < (int64_t)m->n_swa)
        return -EINVAL;
    int row = 0;
    for (int s = 0; s < n_seqs; s++) {
        const fz_seq_t *sq = &seqs[s];
        const int64_t r0 = (int64_t)sq->slot * (ring > 0 ? ring : kv->n_ctx);
        uint8_t *kc = (uint8_t *)kv->k[l] + (size_t)r0 * p->kv_row_k;
        uint8_t *vc = (uint8_t *)kv->v[l] + (size_t)r0 * p->kv_row_v;
        /* a ring takes the rows up to its end, then the rest from its row 0 */
        const size_t at = (size_t)(ring > 0 ? pos[row] % ring : pos[row]);
        const int n1 = ring > 0 ? (int)FD_MIN((int64_t)sq->n_rows, ring - (int64_t)at)
                                : sq->n_rows;
        if (ring > 0 && sq->n_rows > ring)
            return -EINVAL;
        for (int part = 0; part < 2; part++) {
            const int nr = part ? sq->n_rows - n1 : n1, r = row + (part ? n1 : 0);
            const size_t dst = part ? 0 : at;
            if (nr == 0)
                continue;
            if ((rc = fb_kv_store(p->be, kc + dst * p->kv_row_k, kv->type_k,
                                  k + (size_t)r * ldk, ldk, nr, m->n_head_kv, m->head_dim)) ||
                (rc = fb_kv_store(p->be, vc + dst * p->kv_row_v, kv->type_v,
                                  v + (size_t)r * ldv, ldv, nr, m->n_head_kv, m->head_dim)))
                return rc;
        }
        /* A local layer's rows see only the window's cache rows: the attention starts at the
         * first row's window (lo), with positions relative to it, so no backend reads or
         * scores the rows before (a long context costs the window, not the context); the
         * mask is needed only while a later row's window starts after lo, and without it a
         * decode row is plain causal attention over the window.  A ring holds those rows
         * from lo % ring on, wrapping at its end. */
        const int32_t *apos = pos + row;
        int window = 0;
        size_t lo = 0;
        if (y->swa && m->n_swa > 0) {
            lo = (size_t)FD_MAX(0, pos[row] - m->n_swa + 1);
            for (int i = 0; i < sq->n_rows; i++)
                p->wpos[row + i] = pos[row + i] - (int32_t)lo;
            apos = p->wpos + row;
            window = apos[sq->n_rows - 1] >= m->n_swa ? m->n_swa : 0;
        }
        const size_t base = ring > 0 ? 0 : lo;
        p->attn[s] = (fb_attn_t){
            .q = q + (size_t)row * ldq, .ldq = ldq,
            .k_data = kc + base * p->kv_row_k, .v_data = vc + base * p->kv_row_v,
            .ldkv = p->n_kv,
            .type_k = kv->type_k, .type_v = kv->type_v,
            .out = p->att + (size_t)row * p->n_q, .ldo = p->n_q,
            .n_q = sq->n_rows, .pos = apos,
            .n_head = m->n_head, .n_head_kv = m->n_head_kv, .head_dim = m->head_dim,
            .scale = p->attn_scale,
            .mode = fz_plan_softmax_mode(p),
            .window = window,
            .softcap = m->attn_softcap,
            .ring = ring, .ring_start = ring > 0 ? (int64_t)(lo % (size_t)ring) : 0,
            .sinks = y->sinks,
        };
        row += sq->n_rows;
    }
    if ((rc = fb_attention(p->be, p->attn, n_seqs)) ||
        (rc = fb_matmul(p->be, &y->wo, p->att, n, p->tmp, NULL)) ||
        (rc = lora_add(p, l, FZ_LORA_O, p->att, n, p->row_seq, p->tmp, E)) ||
        (y->post_norm && (rc = fb_rmsnorm(p->be, p->tmp, n, E, &y->post1, m->eps, p->tmp))) ||
        (rc = fb_add(p->be, p->x, p->tmp, (int64_t)n * E)))
        return rc;

    /* feed-forward block; fused: the deferred scale reaches the gate before SiLU */
    in = p->x;
    if (!p->o.fused) {
        if ((rc = fb_rmsnorm(p->be, p->x, n, E, &y->norm2, m->eps, p->xn)))
            return rc;
        in = p->xn;
    }
    if (m->n_expert > 0)
        return moe_ffn(p, l, in, n);
    const int64_t gu_cols[2] = { 0, F };
    if ((rc = product(p, y->gu, y->n_gu, in, n, p->gu)) ||
        (rc = lora_parts(p, l, FZ_LORA_GATE, 2, gu_cols, y->gu, y->n_gu, in, n, p->gu)))
        return rc;
    float *g, *u;
    int64_t ldg, ldu;
    view(p, p->gu, y->gu, y->n_gu, 0, &g, &ldg);
    view(p, p->gu, y->gu, y->n_gu, F, &u, &ldu);
    if ((rc = glu(p, g, u, n, F, ldg, p->h)) ||
        (rc = fb_matmul(p->be, &y->wdown, p->h, n, p->tmp, NULL)) ||
        (rc = lora_add(p, l, FZ_LORA_DOWN, p->h, n, p->row_seq, p->tmp, E)) ||
        (y->post_norm && (rc = fb_rmsnorm(p->be, p->tmp, n, E, &y->post2, m->eps, p->tmp))) ||
        (rc = fb_add(p->be, p->x, p->tmp, (int64_t)n * E)))
        return rc;
    return 0;
}

/* The LM head over the first n rows of hx, into host logits (n rows of n_vocab); fused:
 * hx holds raw residual rows and the final RMS scale is deferred to the output. */
static int head(fz_plan_t *p, int n, float *logits)
{
    const fz_model_src_t *m = &p->src;
    int rc;
    if (p->o.fused) {
        fb_defer_t defer = { .kind = FB_NORM_RMS, .eps = m->eps };
        rc = fb_matmul(p->be, &p->head.w, p->hx, n, p->logits, &defer);
        if (rc == 0)
            rc = lora_add(p, -1, FZ_LORA_OUTPUT, p->hx, n, p->head_seq, p->logits, m->n_vocab);
    } else {
        rc = fb_rmsnorm(p->be, p->hx, n, m->n_embd, &p->out_norm, m->eps, p->hxn);
        if (rc == 0)
            rc = fb_matmul(p->be, &p->head.w, p->hxn, n, p->logits, NULL);
        if (rc == 0)
            rc = lora_add(p, -1, FZ_LORA_OUTPUT, p->hxn, n, p->head_seq, p->logits, m->n_vocab);
    }
    if (rc == 0 && m->final_softcap > 0)
        rc = fb_softcap(p->be, p->logits, (int64_t)n * m->n_vocab, m->final_softcap);
    if (rc == 0)
        rc = fb_to_host(p->be, logits, p->logits, (size_t)n * (size_t)m->n_vocab * sizeof(float));
    return rc;
}

/* The final hidden states of the first n rows of hx: RMSNorm with the output gamma (the plain
 * operator in both plans), read back and added into each row's sum. */
static int hidden_out(fz_plan_t *p, int n)
{
    const size_t E = (size_t)p->src.n_embd;
    int rc = fb_rmsnorm(p->be, p->hx, n, (int64_t)E, &p->out_norm, p->src.eps, p->hxn);
    if (rc == 0)
        rc = fb_to_host(p->be, p->hid, p->hxn, (size_t)n * E * sizeof(float));
    if (rc == 0)
        rc = fb_sync(p->be);
    for (int i = 0; i < n && rc == 0; i++)
        for (size_t j = 0; j < E; j++)
            p->hid_dst[i][j] += p->hid[(size_t)i * E + j];
    return rc;
}

int fz_forward(fz_plan_t *p, const fz_kv_t *kv, const int32_t *tokens, const int32_t *pos,
               int n_rows, const fz_seq_t *seqs, int n_seqs, float *logits)
{
    const fz_model_src_t *m = &p->src;
    int64_t E = m->n_embd;
    if (n_rows < 1 || n_rows > p->o.max_rows || n_seqs < 1 || n_seqs > p->o.max_seqs)
        return -EINVAL;
    p->cur_seqs = seqs;
    p->lora_on = false;
    if (p->n_lm > 0) {
        int row = 0;
        for (int s = 0; s < n_seqs; s++) {
            for (int r = 0; r < seqs[s].n_rows && row < n_rows; r++)
                p->row_seq[row++] = s;
            for (int a = 0; seqs[s].lora && a < m->n_lora; a++)
                p->lora_on |= seqs[s].lora[a] != 0.0f;
        }
    }
    fb_mark(p->be, FB_MARK_STEP_BEGIN, n_rows);
    int rc = fb_get_rows(p->be, &p->tok_embd, tokens, n_rows, p->x);
    if (rc == 0 && m->embd_scale > 0)
        rc = fb_scale(p->be, p->x, (int64_t)n_rows * E, m->embd_scale);
    for (int l = 0; l < m->n_layer && rc == 0; l++) {
        fb_mark(p->be, FB_MARK_LAYER, l);
        rc = layer_forward(p, l, kv, pos, n_rows, seqs, n_seqs);
    }

    /* the rows that want logits, gathered max_seqs at a time into hx: the head's output
     * (n_vocab floats a row) is what must stay small, not the rows */
    int n_out = 0, row = 0, n_done = 0;
    for (int s = 0; s < n_seqs && rc == 0; s++) {
        row += seqs[s].n_rows;
        int nl = FD_MIN(FD_MAX(seqs[s].want_logits, 0), seqs[s].n_rows);
        for (int r = row - nl; r < row && rc == 0; r++) {
            if (p->head_seq)
                p->head_seq[n_out] = s;
            rc = fb_copy2d(p->be, p->hx + (size_t)n_out++ * E, E, p->x + (size_t)r * E, E, 1, E);
            if (rc == 0 && n_out == p->o.max_seqs) {
                rc = head(p, n_out, logits + (size_t)n_done * (size_t)m->n_vocab);
                n_done += n_out;
                n_out = 0;
            }
        }
    }
    if (rc == 0 && n_out > 0)
        rc = head(p, n_out, logits + (size_t)n_done * (size_t)m->n_vocab);

    /* the rows that want hidden states, likewise max_seqs at a time through hx */
    n_out = 0;
    row = 0;
    for (int s = 0; s < n_seqs && rc == 0; s++) {
        row += seqs[s].n_rows;
        int nh = seqs[s].hidden ? FD_MIN(FD_MAX(seqs[s].want_hidden, 0), seqs[s].n_rows) : 0;
        for (int r = row - nh; r < row && rc == 0; r++) {
            p->hid_dst[n_out] = seqs[s].hidden;
            rc = fb_copy2d(p->be, p->hx + (size_t)n_out++ * E, E, p->x + (size_t)r * E, E, 1, E);
            if (rc == 0 && n_out == p->o.max_seqs) {
                rc = hidden_out(p, n_out);
                n_out = 0;
            }
        }
    }
    if (rc == 0 && n_out > 0)
        rc = hidden_out(p, n_out);
    int rs = fb_sync(p->be);
    fb_mark(p->be, FB_MARK_STEP_END, n_rows);
    return rc ? rc : rs;
}
