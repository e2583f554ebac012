/* encoder.c: the BERT encoder plan (encoder.h).  Every step is a backend op, so the CPU
 * backend's reference (ref=1) and SIMD paths, Corsair and CUDA all run it; the residual
 * sums and LayerNorms are llama.cpp's build_bert in its order (token + type row, then +
 * position; attention + input; FFN + its input). */
#include "fusion/encoder.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "common/ggtypes.h"

#define ENC_MAX_PREP 16 /* prepared weights a layer at most */

struct fz_enc {
    fb_backend_t *be;
    fz_enc_src_t s;
    int max_rows, max_seqs, n_cls_out;
    fz_enc_layer_src_t *layers;      /* copies whose weights are prepared */
    fb_weight_t emb_g, emb_b;        /* LayerNorm vectors as weights */
    fb_weight_t *ln;                 /* per layer: attn g, b, out g, b */
    fb_weight_t **prepared;
    int n_prepared;
    /* backend memory */
    float *x, *q, *k, *v, *att, *t, *u, *g, *ones, *c1, *c2;
    /* host memory */
    int32_t *pos, *apos, *zeros;
    float *host;                     /* final rows to pool (max_rows * n_embd) */
    float *hscores;                  /* the head's outputs (max_seqs * n_cls_out) */
    fb_attn_t *attn;
};

int fz_enc_n_cls_out(const fz_enc_t *e) { return e->n_cls_out; }

static int prep(fz_enc_t *e, fb_weight_t *w, char *err, size_t errlen)
{
    int rc = fb_weight_prepare(e->be, w);
    if (rc) {
        snprintf(err, errlen, "backend %s cannot prepare %s: %s", fb_name(e->be),
                 w->name ? w->name : "a weight", fd_strerror(rc));
        return rc;
    }
    e->prepared[e->n_prepared++] = w;
    return 0;
}

static fb_weight_t vec(const float *v, int n, const char *name)
{
    return (fb_weight_t){ .type = GG_F32, .n_in = n, .n_out = 1, .src = v, .name = name };
}

static float *dev(fz_enc_t *e, size_t floats, int *rc)
{
    float *p = fb_alloc(e->be, floats * sizeof(float));
    if (!p)
        *rc = -ENOMEM;
    return p;
}

void fz_enc_free(fz_enc_t *e)
{
    if (!e)
        return;
    for (int i = 0; i < e->n_prepared; i++)
        fb_weight_release(e->be, e->prepared[i]);
    float *bufs[] = { e->x, e->q, e->k, e->v, e->att, e->t, e->u, e->g, e->ones, e->c1, e->c2 };
    for (size_t i = 0; i < FD_ARRAY_LEN(bufs); i++)
        if (bufs[i])
            fb_free(e->be, bufs[i]);
    fb_host_free(e->be, e->host);
    fb_host_free(e->be, e->hscores);
    free(e->pos);
    free(e->apos);
    free(e->zeros);
    free(e->attn);
    free(e->prepared);
    free(e->ln);
    free(e->layers);
    free(e);
}

int fz_enc_create(fz_enc_t **out, fb_backend_t *be, const fz_enc_src_t *src, int max_rows,
                  int max_seqs, char *err, size_t errlen)
{
    *out = NULL;
    if (!be || !src || max_rows < 1 || max_seqs < 1 || src->n_layer < 1 ||
        src->n_head < 1 || src->head_dim * src->n_head != src->n_embd) {
        snprintf(err, errlen, "bad encoder description");
        return -EINVAL;
    }
    fz_enc_t *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->be = be;
    e->s = *src;
    e->max_rows = max_rows;
    e->max_seqs = max_seqs;
    const int L = src->n_layer;
    const size_t R = (size_t)max_rows, E = (size_t)src->n_embd, F = (size_t)src->n_ff;
    int rc = -ENOMEM;
    e->layers = calloc((size_t)L, sizeof(*e->layers));
    e->ln = calloc((size_t)L * 4, sizeof(*e->ln));
    e->prepared = calloc((size_t)L * ENC_MAX_PREP + 16, sizeof(*e->prepared));
    e->pos = malloc(R * sizeof(int32_t));
    e->apos = malloc(R * sizeof(int32_t));
    e->zeros = calloc(R, sizeof(int32_t));
    e->attn = calloc((size_t)max_seqs, sizeof(*e->attn));
    if (!e->layers || !e->ln || !e->prepared || !e->pos || !e->apos || !e->zeros || !e->attn)
        goto fail;
    memcpy(e->layers, src->layers, (size_t)L * sizeof(*e->layers));
    e->s.layers = e->layers;
    e->emb_g = vec(src->emb_ln_g, src->n_embd, "token_embd_norm.weight");
    e->emb_b = vec(src->emb_ln_b, src->n_embd, "token_embd_norm.bias");
    if ((rc = prep(e, &e->s.tok_embd, err, errlen)) || (rc = prep(e, &e->s.pos_embd, err, errlen)) ||
        (e->s.type_embd.src && (rc = prep(e, &e->s.type_embd, err, errlen))) ||
        (rc = prep(e, &e->emb_g, err, errlen)) || (rc = prep(e, &e->emb_b, err, errlen)))
        goto fail;
    for (int l = 0; l < L; l++) {
        fz_enc_layer_src_t *y = &e->layers[l];
        fb_weight_t *ln = e->ln + 4 * l;
        ln[0] = vec(y->attn_ln_g, src->n_embd, "attn_output_norm.weight");
        ln[1] = vec(y->attn_ln_b, src->n_embd, "attn_output_norm.bias");
        ln[2] = vec(y->out_ln_g, src->n_embd, "layer_output_norm.weight");
        ln[3] = vec(y->out_ln_b, src->n_embd, "layer_output_norm.bias");
        fb_weight_t *w[] = { &y->wq, &y->wk, &y->wv, &y->wo, &y->up, &y->down,
                             &ln[0], &ln[1], &ln[2], &ln[3] };
        for (size_t i = 0; i < FD_ARRAY_LEN(w); i++)
            if ((rc = prep(e, w[i], err, errlen)))
                goto fail;
    }
    if (e->s.cls.src) {
        if ((rc = prep(e, &e->s.cls, err, errlen)) ||
            (e->s.cls_out.src && (rc = prep(e, &e->s.cls_out, err, errlen))))
            goto fail;
        e->n_cls_out = (int)(e->s.cls_out.src ? e->s.cls_out.n_out : e->s.cls.n_out);
    }
    rc = 0;
    e->x = dev(e, R * E, &rc);
    e->q = dev(e, R * E, &rc);
    e->k = dev(e, R * E, &rc);
    e->v = dev(e, R * E, &rc);
    e->att = dev(e, R * E, &rc);
    e->t = dev(e, R * E, &rc);
    e->u = dev(e, R * F, &rc);
    e->g = dev(e, R * F, &rc);
    e->ones = dev(e, R * F, &rc);
    if (e->n_cls_out) {
        e->c1 = dev(e, (size_t)max_seqs * E, &rc);
        e->c2 = dev(e, (size_t)max_seqs * (size_t)FD_MAX(e->n_cls_out, 1), &rc);
    }
    e->host = fb_host_alloc(be, R * E * sizeof(float));
    e->hscores = fb_host_alloc(be, (size_t)max_seqs * (size_t)FD_MAX(e->n_cls_out, 1) *
                                   sizeof(float));
    if (rc || !e->host || !e->hscores) {
        rc = -ENOMEM;
        snprintf(err, errlen, "cannot allocate the encoder's activations (%d rows)", max_rows);
        goto fail;
    }
    /* GELU alone is gelu_mul by ones */
    for (size_t i = 0; i < R * E; i++)
        e->host[i] = 1.0f;
    for (size_t off = 0; off < R * F && rc == 0; off += R * E)
        rc = fb_to_device(be, e->ones + off, e->host, FD_MIN(R * E, R * F - off) * sizeof(float));
    if (rc || (rc = fb_sync(be))) {
        snprintf(err, errlen, "backend %s: %s", fb_name(be), fd_strerror(rc));
        goto fail;
    }
    *out = e;
    return 0;
fail:
    if (rc == -ENOMEM && err && !err[0])
        snprintf(err, errlen, "out of memory preparing the encoder");
    fz_enc_free(e);
    return rc;
}

/* One layer over all rows: x in, x out. */
static int layer(fz_enc_t *e, int l, int n_rows, const fz_enc_seq_t *seqs, int n_seqs)
{
    fb_backend_t *be = e->be;
    const fz_enc_layer_src_t *y = &e->layers[l];
    const fb_weight_t *ln = e->ln + 4 * l;
    const int64_t E = e->s.n_embd, F = e->s.n_ff, R = n_rows;
    fb_mm_part_t qkv[3] = { { &y->wq, e->x, R, e->q }, { &y->wk, e->x, R, e->k },
                            { &y->wv, e->x, R, e->v } };
    int rc;
    if ((rc = fb_matmul_group(be, qkv, 3, NULL)))
        return rc;
    /* each sequence's rows attend to all of its rows: every query at the last position */
    for (int s = 0, r0 = 0; s < n_seqs; r0 += seqs[s++].n_rows) {
        for (int i = 0; i < seqs[s].n_rows; i++)
            e->apos[r0 + i] = seqs[s].n_rows - 1;
        e->attn[s] = (fb_attn_t){ .q = e->q + (size_t)r0 * E, .ldq = E,
                                  .k = e->k + (size_t)r0 * E, .v = e->v + (size_t)r0 * E,
                                  .ldkv = E, .out = e->att + (size_t)r0 * E, .ldo = E,
                                  .n_q = seqs[s].n_rows, .pos = e->apos + r0,
                                  .n_head = e->s.n_head, .n_head_kv = e->s.n_head,
                                  .head_dim = e->s.head_dim,
                                  .scale = 1.0f / sqrtf((float)e->s.head_dim),
                                  .mode = FB_SOFTMAX_REF };
    }
    if ((rc = fb_attention(be, e->attn, n_seqs)) ||
        (rc = fb_matmul(be, &y->wo, e->att, R, e->t, NULL)) ||
        (rc = fb_add(be, e->t, e->x, R * E)) ||
        (rc = fb_layernorm(be, e->t, R, E, &ln[0], &ln[1], e->s.eps, e->x)) ||
        (rc = fb_matmul(be, &y->up, e->x, R, e->u, NULL)) ||
        (rc = fb_gelu_mul(be, e->u, e->ones, R, F, F, e->g)) ||
        (rc = fb_matmul(be, &y->down, e->g, R, e->t, NULL)) ||
        (rc = fb_add(be, e->t, e->x, R * E)) ||
        (rc = fb_layernorm(be, e->t, R, E, &ln[2], &ln[3], e->s.eps, e->x)))
        return rc;
    return 0;
}

int fz_enc_forward(fz_enc_t *e, const int32_t *tokens, const int32_t *types, int n_rows,
                   const fz_enc_seq_t *seqs, int n_seqs)
{
    fb_backend_t *be = e->be;
    const int64_t E = e->s.n_embd, R = n_rows;
    if (n_rows < 1 || n_rows > e->max_rows || n_seqs < 1 || n_seqs > e->max_seqs)
        return -EINVAL;
    for (int s = 0, r0 = 0; s < n_seqs; r0 += seqs[s++].n_rows)
        for (int i = 0; i < seqs[s].n_rows; i++)
            e->pos[r0 + i] = i;
    int rc;
    fb_mark(be, FB_MARK_STEP_BEGIN, n_rows);
    if ((rc = fb_get_rows(be, &e->s.tok_embd, tokens, R, e->x)))
        return rc;
    if (e->s.type_embd.src &&
        ((rc = fb_get_rows(be, &e->s.type_embd, types ? types : e->zeros, R, e->t)) ||
         (rc = fb_add(be, e->x, e->t, R * E))))
        return rc;
    if ((rc = fb_get_rows(be, &e->s.pos_embd, e->pos, R, e->t)) ||
        (rc = fb_add(be, e->x, e->t, R * E)) ||
        (rc = fb_layernorm(be, e->x, R, E, &e->emb_g, &e->emb_b, e->s.eps, e->t)) ||
        (rc = fb_copy2d(be, e->x, E, e->t, E, R, E)))
        return rc;
    for (int l = 0; l < e->s.n_layer; l++) {
        fb_mark(be, FB_MARK_LAYER, l);
        if ((rc = layer(e, l, n_rows, seqs, n_seqs)))
            return rc;
    }
    /* pooling: the states to the host; the head's first rows gathered on the device */
    int n_rank = 0;
    bool host = false;
    for (int s = 0, r0 = 0; s < n_seqs; r0 += seqs[s++].n_rows) {
        if (seqs[s].pool == FZ_ENC_RANK) {
            if ((rc = fb_copy2d(be, e->c1 + (size_t)n_rank++ * E, E, e->x + (size_t)r0 * E, E,
                                1, E)))
                return rc;
        } else {
            host = true;
        }
    }
    if (host && (rc = fb_to_host(be, e->host, e->x, (size_t)R * E * sizeof(float))))
        return rc;
    if (n_rank) {
        const int C = e->n_cls_out;
        float *scores = e->c2;
        if ((rc = fb_matmul(be, &e->s.cls, e->c1, n_rank, e->t, NULL)) ||
            (rc = fb_softcap(be, e->t, (int64_t)n_rank * e->s.cls.n_out, 1.0f))) /* tanh */
            return rc;
        if (e->s.cls_out.src) {
            if ((rc = fb_matmul(be, &e->s.cls_out, e->t, n_rank, e->c2, NULL)))
                return rc;
        } else {
            scores = e->t;
        }
        if ((rc = fb_to_host(be, e->hscores, scores,
                             (size_t)n_rank * (size_t)C * sizeof(float))))
            return rc;
    }
    if ((rc = fb_sync(be)))
        return rc;
    n_rank = 0;
    for (int s = 0, r0 = 0; s < n_seqs; r0 += seqs[s++].n_rows) {
        const fz_enc_seq_t *q = &seqs[s];
        if (q->pool == FZ_ENC_RANK) {
            memcpy(q->out, e->hscores + (size_t)n_rank++ * (size_t)e->n_cls_out,
                   (size_t)e->n_cls_out * sizeof(float));
            continue;
        }
        const int first = q->pool == FZ_ENC_FIRST ? 0 : q->n_rows - q->want;
        const int last = q->pool == FZ_ENC_FIRST ? 1 : q->n_rows;
        for (int r = first; r < last; r++) {
            const float *h = e->host + (size_t)(r0 + r) * E;
            for (int64_t i = 0; i < E; i++)
                q->out[i] += h[i];
        }
    }
    fb_mark(be, FB_MARK_STEP_END, n_rows);
    return 0;
}
