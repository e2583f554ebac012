/* test_bert.c: proves the bert encoder (engine/model.c + fusion/encoder.c) computes what a
 * plain double-precision BERT written here computes from the file's weights (embeddings,
 * post-LayerNorm blocks, non-causal attention, GELU, mean / CLS / last pooling, the
 * classification head with pair token types) on the CPU backend's SIMD and reference paths
 * and on Corsair, and for XLM-RoBERTa's shape (t5 vocabulary, one token type, a
 * <s> q </s></s> d </s> pair); that F16 and Q8_0 files stay near the F32 file's results; that an input's
 * result does not depend on what shares its batch or on how batches are cut; and that bad
 * files and bad batches get clear errors. */
#define _GNU_SOURCE
#include "engine/model.h"

#include <math.h>
#include <string.h>

#include "common/fd.h"
#include "common/ggtypes.h"
#include "engine/bert_gen.h"
#include "engine/gguf.h"
#include "engine/gguf_write.h"
#include "engine/tokenizer.h"
#include "tests/testutil.h"

static bert_gen_t shape(void)
{
    return (bert_gen_t){ .n_embd = 48, .n_layer = 2, .n_head = 4, .n_ff = 72, .n_vocab = 100,
                         .n_ctx = 24, .n_types = 2, .n_cls_out = 1, .pooling = 1,
                         .type = GG_F32, .seed = 7, .eps = 1e-12f };
}

static const char *write_model(const bert_gen_t *p, const char *name)
{
    const char *path = tu_tmp_path(name);
    char err[256];
    ck_assert_msg(bert_gen_write(p, path, 1, err, sizeof err) == 0, "%s", err);
    return path;
}

/* ---- the plain reference ---- */

static const float *T(const gguf_t *g, const char *fmt, int l)
{
    char name[64];
    snprintf(name, sizeof name, fmt, l);
    const gguf_tensor_t *t = gguf_find_tensor(g, name);
    ck_assert_msg(t && t->type == GG_F32, "%s", name);
    return t->data;
}

static void linear(const float *w, const float *b, const double *x, int in, int out, double *y)
{
    for (int o = 0; o < out; o++) {
        double s = b ? b[o] : 0.0;
        for (int i = 0; i < in; i++)
            s += (double)w[(size_t)o * in + i] * x[i];
        y[o] = s;
    }
}

static void layernorm(double *x, int n, const float *g, const float *b, double eps)
{
    double m = 0, v = 0;
    for (int i = 0; i < n; i++)
        m += x[i];
    m /= n;
    for (int i = 0; i < n; i++)
        v += (x[i] - m) * (x[i] - m);
    v /= n;
    for (int i = 0; i < n; i++)
        x[i] = (x[i] - m) / sqrt(v + eps) * g[i] + b[i];
}

/* The final states of one input (n x E). */
static void ref_forward(const gguf_t *g, const bert_gen_t *p, const int32_t *tok,
                        const int32_t *types, int n, double *h)
{
    const int E = p->n_embd, F = p->n_ff, H = p->n_head, D = E / H;
    double *q = calloc((size_t)n * E, sizeof(double)), *k = calloc((size_t)n * E, sizeof(double));
    double *v = calloc((size_t)n * E, sizeof(double)), *a = calloc((size_t)n * E, sizeof(double));
    double *t = calloc((size_t)E, sizeof(double)), *u = calloc((size_t)F, sizeof(double));
    double *sc = calloc((size_t)n, sizeof(double));
    for (int r = 0; r < n; r++) {
        const float *te = T(g, "token_embd.weight", 0) + (size_t)tok[r] * E;
        const float *ty = T(g, "token_types.weight", 0) + (size_t)(types ? types[r] : 0) * E;
        const float *pe = T(g, "position_embd.weight", 0) + (size_t)r * E;
        for (int i = 0; i < E; i++)
            h[(size_t)r * E + i] = (double)te[i] + ty[i] + pe[i];
        layernorm(h + (size_t)r * E, E, T(g, "token_embd_norm.weight", 0),
                  T(g, "token_embd_norm.bias", 0), p->eps);
    }
    for (int l = 0; l < p->n_layer; l++) {
        for (int r = 0; r < n; r++) {
            const double *x = h + (size_t)r * E;
            linear(T(g, "blk.%d.attn_q.weight", l), T(g, "blk.%d.attn_q.bias", l), x, E, E,
                   q + (size_t)r * E);
            linear(T(g, "blk.%d.attn_k.weight", l), T(g, "blk.%d.attn_k.bias", l), x, E, E,
                   k + (size_t)r * E);
            linear(T(g, "blk.%d.attn_v.weight", l), T(g, "blk.%d.attn_v.bias", l), x, E, E,
                   v + (size_t)r * E);
        }
        for (int r = 0; r < n; r++)
            for (int hh = 0; hh < H; hh++) {
                double mx = -1e300, sum = 0;
                for (int j = 0; j < n; j++) { /* every row: not causal */
                    double s = 0;
                    for (int d = 0; d < D; d++)
                        s += q[(size_t)r * E + hh * D + d] * k[(size_t)j * E + hh * D + d];
                    sc[j] = s / sqrt((double)D);
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j < n; j++)
                    sum += (sc[j] = exp(sc[j] - mx));
                for (int d = 0; d < D; d++) {
                    double o = 0;
                    for (int j = 0; j < n; j++)
                        o += sc[j] / sum * v[(size_t)j * E + hh * D + d];
                    a[(size_t)r * E + hh * D + d] = o;
                }
            }
        for (int r = 0; r < n; r++) {
            double *x = h + (size_t)r * E;
            linear(T(g, "blk.%d.attn_output.weight", l), T(g, "blk.%d.attn_output.bias", l),
                   a + (size_t)r * E, E, E, t);
            for (int i = 0; i < E; i++)
                x[i] += t[i];
            layernorm(x, E, T(g, "blk.%d.attn_output_norm.weight", l),
                      T(g, "blk.%d.attn_output_norm.bias", l), p->eps);
            linear(T(g, "blk.%d.ffn_up.weight", l), T(g, "blk.%d.ffn_up.bias", l), x, E, F, u);
            for (int i = 0; i < F; i++)
                u[i] = 0.5 * u[i] * (1 + tanh(sqrt(2 / M_PI) * (u[i] + 0.044715 * pow(u[i], 3))));
            linear(T(g, "blk.%d.ffn_down.weight", l), T(g, "blk.%d.ffn_down.bias", l), u, F, E,
                   t);
            for (int i = 0; i < E; i++)
                x[i] += t[i];
            layernorm(x, E, T(g, "blk.%d.layer_output_norm.weight", l),
                      T(g, "blk.%d.layer_output_norm.bias", l), p->eps);
        }
    }
    free(q), free(k), free(v), free(a), free(t), free(u), free(sc);
}

static double ref_rank(const gguf_t *g, const bert_gen_t *p, const double *h0)
{
    const int E = p->n_embd;
    double *c = calloc((size_t)E, sizeof(double)), y;
    linear(T(g, "cls.weight", 0), T(g, "cls.bias", 0), h0, E, E, c);
    for (int i = 0; i < E; i++)
        c[i] = tanh(c[i]);
    linear(T(g, "cls.output.weight", 0), T(g, "cls.output.bias", 0), c, E, 1, &y);
    free(c);
    return y;
}

/* ---- the engine's ---- */

static llm_model_t *load(const char *path, const char *backend, const char *opt, int seqs,
                         int batch)
{
    llm_load_params_t lp;
    llm_load_params_default(&lp);
    lp.path = path;
    lp.backend = backend;
    const char *opts[2] = { opt, NULL };
    lp.backend_options = opt ? opts : NULL;
    lp.threads = 2;
    lp.n_seq_max = seqs;
    lp.n_batch_max = batch;
    llm_model_t *m;
    char err[256];
    ck_assert_msg(llm_load(&m, &lp, err, sizeof err) == 0, "%s", err);
    return m;
}

static void rand_tokens(uint64_t *s, int32_t *t, int n, int n_vocab)
{
    for (int i = 0; i < n; i++)
        t[i] = 5 + (int32_t)(tu_rand64(s) % (uint64_t)(n_vocab - 5));
}

static double max_rel(const float *a, const double *b, int n)
{
    double d = 0, m = 0;
    for (int i = 0; i < n; i++) {
        d = fmax(d, fabs(a[i] - b[i]));
        m = fmax(m, fabs(b[i]));
    }
    return d / m;
}

START_TEST(test_reference)
{
    static const char *const be[3][2] = { { "cpu", NULL }, { "cpu", "ref=1" },
                                          { "corsair", NULL } };
    bert_gen_t p = shape();
    const char *path = write_model(&p, "ref.gguf");
    gguf_t *g;
    char err[256];
    ck_assert_msg(gguf_open(&g, path, err, sizeof err) == 0, "%s", err);
    const int E = p.n_embd, n = 13;
    int32_t tok[24], types[24];
    uint64_t seed = 3;
    rand_tokens(&seed, tok, n, p.n_vocab);
    tok[0] = 2;
    tok[6] = 3; /* a [SEP]: the pair's second segment starts after it */
    tok[n - 1] = 3;
    for (int i = 0; i < n; i++)
        types[i] = i > 6;
    double *h = calloc((size_t)n * E, sizeof(double)), *h2 = calloc((size_t)n * E, sizeof(double));
    ref_forward(g, &p, tok, NULL, n, h);
    ref_forward(g, &p, tok, types, n, h2);
    double mean[64] = { 0 };
    for (int r = 0; r < n; r++)
        for (int i = 0; i < E; i++)
            mean[i] += h[(size_t)r * E + i];
    const double want_rank = ref_rank(g, &p, h2);
    /* the head's score without token types differs: the types are really used */
    ck_assert(fabs(ref_rank(g, &p, h) - want_rank) > 1e-4);
    for (int b = 0; b < 3; b++) {
        if (!fb_available(be[b][0]))
            continue;
        llm_model_t *m = load(path, be[b][0], be[b][1], 4, 0);
        const llm_hparams_t *hp = llm_hparams(m);
        ck_assert(hp->encoder);
        ck_assert_int_eq(hp->n_cls_out, 1);
        ck_assert_int_eq(hp->n_type, 2);
        ck_assert_int_eq(hp->pooling, 1);
        float sum[64] = { 0 }, first[64] = { 0 }, last[64] = { 0 }, score[1];
        int slot[4];
        for (int i = 0; i < 4; i++)
            ck_assert_int_eq(llm_seq_alloc(m, &slot[i]), 0);
        llm_batch_entry_t e[4] = {
            { .slot = slot[0], .tokens = tok, .n_tokens = n, .want_hidden = n, .hidden = sum },
            { .slot = slot[1], .tokens = tok, .n_tokens = n, .hidden = first,
              .enc_pool = LLM_ENC_FIRST },
            { .slot = slot[2], .tokens = tok, .n_tokens = n, .want_hidden = 1, .hidden = last },
            { .slot = slot[3], .tokens = tok, .n_tokens = n, .hidden = score,
              .enc_pool = LLM_ENC_RANK },
        };
        ck_assert_int_eq(llm_decode(m, e, 4, NULL), 0);
        /* Corsair's products round through its block floating point */
        const double tol = b == 2 ? 3e-2 : 2e-5;
        double d1 = max_rel(sum, mean, E), d2 = max_rel(first, h, E);
        double d3 = max_rel(last, h + (size_t)(n - 1) * E, E);
        double d4 = fabs(score[0] - want_rank) / fmax(1.0, fabs(want_rank));
        ck_assert_msg(d1 < tol && d2 < tol && d3 < tol && d4 < tol,
                      "%s %s: mean %g cls %g last %g rank %g", be[b][0],
                      be[b][1] ? be[b][1] : "", d1, d2, d3, d4);
        ck_assert_int_eq(llm_seq_len(m, slot[0]), n);
        llm_free(m);
    }
    free(h);
    free(h2);
    gguf_close(g);
}
END_TEST

/* XLM-RoBERTa's shape (bge-m3, bge-reranker-v2-m3): a t5 vocabulary and one token type row.
 * The converter dropped the position rows before padding_idx + 1, so position i is row i, as
 * the reference reads it; every token is type 0, the pair's second segment too.  A pair
 * framed <s> query </s></s> document </s> from the unigram tokenizer's ids gives the
 * reference's CLS state and score. */
START_TEST(test_xlmr)
{
    bert_gen_t p;
    bert_gen_xlmr_small(&p);
    p.n_cls_out = 1;
    p.seed = 5;
    const char *path = write_model(&p, "xlmr.gguf");
    gguf_t *g;
    char err[256];
    ck_assert_msg(gguf_open(&g, path, err, sizeof err) == 0, "%s", err);
    llm_model_t *m = load(path, "cpu", NULL, 2, 0);
    const llm_hparams_t *hp = llm_hparams(m);
    ck_assert_int_eq(hp->n_type, 1);
    ck_assert_int_eq(hp->pooling, 2);
    const tok_t *t = llm_tok(m);
    ck_assert_int_eq(tok_kind(t), TOK_UGM);
    const char *q = "what is the capital of france", *d = "paris is a capital";
    int32_t tok[40];
    size_t nq, nd;
    tok[0] = tok_bos(t);
    ck_assert_int_eq(tok_encode(t, q, strlen(q), false, false, tok + 1, 16, &nq), 0);
    ck_assert_int_eq(nq, 6);
    tok[nq + 1] = tok[nq + 2] = tok_eos(t);
    ck_assert_int_eq(tok_encode(t, d, strlen(d), false, false, tok + nq + 3, 16, &nd), 0);
    ck_assert_int_eq(nd, 4);
    const int n = (int)(nq + nd + 4), E = p.n_embd;
    tok[n - 1] = tok_eos(t);
    ck_assert(tok[0] == 0 && tok[n - 1] == 2);
    double *h = calloc((size_t)n * E, sizeof(double));
    ref_forward(g, &p, tok, NULL, n, h);
    const double want = ref_rank(g, &p, h);
    float first[64] = { 0 }, score[1];
    int slot[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(llm_seq_alloc(m, &slot[i]), 0);
    llm_batch_entry_t e[2] = {
        { .slot = slot[0], .tokens = tok, .n_tokens = n, .hidden = first,
          .enc_pool = LLM_ENC_FIRST },
        { .slot = slot[1], .tokens = tok, .n_tokens = n, .hidden = score,
          .enc_pool = LLM_ENC_RANK },
    };
    ck_assert_int_eq(llm_decode(m, e, 2, NULL), 0);
    const double d1 = max_rel(first, h, E), d2 = fabs(score[0] - want) / fmax(1.0, fabs(want));
    ck_assert_msg(d1 < 2e-5 && d2 < 2e-5, "xlmr: cls %g rank %g", d1, d2);
    llm_free(m);
    free(h);
    gguf_close(g);
}
END_TEST

/* One input's pooled state alone, next to others, and with batches cut small. */
START_TEST(test_batch_independence)
{
    bert_gen_t p = shape();
    const char *path = write_model(&p, "batch.gguf");
    const int E = p.n_embd;
    static const int len[5] = { 3, 24, 1, 11, 7 };
    int32_t tok[5][24];
    uint64_t seed = 11;
    for (int i = 0; i < 5; i++) {
        rand_tokens(&seed, tok[i], len[i], p.n_vocab);
        tok[i][0] = 2;
    }
    float alone[5][64] = { { 0 } }, rank_alone[5] = { 0 };
    llm_model_t *m = load(path, "cpu", NULL, 5, 0);
    int slot[5];
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(llm_seq_alloc(m, &slot[i]), 0);
    for (int i = 0; i < 5; i++) {
        llm_batch_entry_t e = { .slot = slot[0], .tokens = tok[i], .n_tokens = len[i],
                                .want_hidden = len[i], .hidden = alone[i] };
        ck_assert_int_eq(llm_decode(m, &e, 1, NULL), 0);
        llm_batch_entry_t r = { .slot = slot[0], .tokens = tok[i], .n_tokens = len[i],
                                .hidden = &rank_alone[i], .enc_pool = LLM_ENC_RANK };
        ck_assert_int_eq(llm_decode(m, &r, 1, NULL), 0);
    }
    llm_free(m);
    /* all five at once, with batches of 512 rows and of 24 (cut between inputs) */
    for (int batch = 0; batch <= 24; batch += 24) {
        m = load(path, "cpu", NULL, 5, batch);
        for (int i = 0; i < 5; i++)
            ck_assert_int_eq(llm_seq_alloc(m, &slot[i]), 0);
        float got[5][64] = { { 0 } }, rank[5];
        llm_batch_entry_t e[5], r[5];
        for (int i = 0; i < 5; i++) {
            e[i] = (llm_batch_entry_t){ .slot = slot[i], .tokens = tok[i], .n_tokens = len[i],
                                        .want_hidden = len[i], .hidden = got[i] };
            r[i] = (llm_batch_entry_t){ .slot = slot[4 - i], .tokens = tok[i],
                                        .n_tokens = len[i], .hidden = &rank[i],
                                        .enc_pool = LLM_ENC_RANK };
        }
        ck_assert_int_eq(llm_decode(m, e, 5, NULL), 0);
        ck_assert_int_eq(llm_decode(m, r, 5, NULL), 0);
        for (int i = 0; i < 5; i++) {
            ck_assert_msg(tu_rel_diff(got[i], alone[i], (size_t)E) < 1e-5,
                          "input %d, batch %d: %g", i, batch,
                          tu_rel_diff(got[i], alone[i], (size_t)E));
            ck_assert_msg(fabsf(rank[i] - rank_alone[i]) < 1e-5f * fmaxf(1, fabsf(rank[i])),
                          "pair %d: %g vs %g", i, rank[i], rank_alone[i]);
        }
        llm_free(m);
    }
}
END_TEST

/* The same random model stored as F16 and Q8_0 (matrices; biases and norms stay F32): the
 * pooled states and the rank score stay near the F32 model's (the weights' rounding). */
START_TEST(test_weight_types)
{
    static const struct {
        int type;
        double tol;
    } ty[] = { { GG_F16, 2e-3 }, { GG_Q8_0, 3e-2 } };
    bert_gen_t p = shape();
    p.n_embd = 64;  /* rows of whole Q8_0 blocks */
    p.n_ff = 96;
    const char *f32 = write_model(&p, "f32.gguf");
    int32_t tok[20];
    uint64_t seed = 5;
    rand_tokens(&seed, tok, 20, p.n_vocab);
    tok[0] = 2;
    tok[9] = 3;
    float want[2][65] = { { 0 } };
    for (int t = -1; t < 2; t++) {
        if (t >= 0)
            p.type = ty[t].type;
        llm_model_t *m = load(t < 0 ? f32 : write_model(&p, t ? "q8.gguf" : "f16.gguf"), "cpu",
                              NULL, 2, 0);
        float got[2][65] = { { 0 } };
        int s0, s1;
        ck_assert_int_eq(llm_seq_alloc(m, &s0), 0);
        ck_assert_int_eq(llm_seq_alloc(m, &s1), 0);
        llm_batch_entry_t e[2] = {
            { .slot = s0, .tokens = tok, .n_tokens = 20, .want_hidden = 20, .hidden = got[0] },
            { .slot = s1, .tokens = tok, .n_tokens = 20, .hidden = got[1],
              .enc_pool = LLM_ENC_RANK },
        };
        ck_assert_int_eq(llm_decode(m, e, 2, NULL), 0);
        if (t < 0) {
            memcpy(want, got, sizeof(want));
        } else {
            double d = tu_rel_diff(got[0], want[0], 64);
            double r = fabs(got[1][0] - want[1][0]) / fmax(1.0, fabs(want[1][0]));
            ck_assert_msg(d < ty[t].tol && r < ty[t].tol && d > 0, "%s: states %g, score %g",
                          gg_type_name(ty[t].type), d, r);
        }
        llm_free(m);
    }
}
END_TEST

/* Damaged files: each refused with a message naming what is wrong.  The damage is done to
 * the written bytes: a name renamed (so the tensor or key is missing), a value changed. */
START_TEST(test_bad_files)
{
    bert_gen_t p = shape();
    p.n_layer = 1;
    static const struct {
        const char *find, *repl;  /* same length */
        int rc;
        const char *msg;
    } cases[] = {
        { "blk.0.ffn_up.bias", "blk.0.ffn_up.bia_", FD_EFORMAT, "blk.0.ffn_up.bias is missing" },
        { "position_embd.weight", "position_embd.weigh_", FD_EFORMAT,
          "position_embd.weight is missing" },
        { "cls.weight", "cls.weigh_", FD_EFORMAT, "cls.output.weight without cls.weight" },
        { "layer_norm_epsilon", "layer_norm_epsilo_", FD_EFORMAT, "layer_norm_epsilon" },
        /* the bool after its key and type (4 bytes): false -> true */
        { "bert.attention.causal", NULL, FD_EUNSUP, "causal" },
    };
    const char *good = write_model(&p, "good.gguf");
    size_t len;
    char *bytes = tu_slurp(good, &len);
    for (size_t c = 0; c < FD_ARRAY_LEN(cases); c++) {
        char *copy = malloc(len);
        memcpy(copy, bytes, len);
        char *at = memmem(copy, len, cases[c].find, strlen(cases[c].find));
        ck_assert_ptr_nonnull(at);
        if (cases[c].repl)
            memcpy(at, cases[c].repl, strlen(cases[c].repl));
        else
            at[strlen(cases[c].find) + 4] = 1;
        const char *bad = tu_tmp_path("bad.gguf");
        FILE *f = fopen(bad, "wb");
        ck_assert(f && fwrite(copy, 1, len, f) == len && fclose(f) == 0);
        free(copy);
        llm_load_params_t lp;
        llm_load_params_default(&lp);
        lp.path = bad;
        llm_model_t *m = NULL;
        char err[256] = "";
        int rc = llm_load(&m, &lp, err, sizeof err);
        ck_assert_msg(rc == cases[c].rc && strstr(err, cases[c].msg), "case %zu: %d %s", c, rc,
                      err);
        ck_assert_ptr_null(m);
    }
    free(bytes);
}
END_TEST

START_TEST(test_bad_batches)
{
    bert_gen_t p = shape();
    p.n_cls_out = 0;
    const char *path = write_model(&p, "nohead.gguf");
    llm_model_t *m = load(path, "cpu", NULL, 2, 0);
    ck_assert_int_eq(llm_hparams(m)->n_cls_out, 0);
    int s0, s1;
    ck_assert_int_eq(llm_seq_alloc(m, &s0), 0);
    ck_assert_int_eq(llm_seq_alloc(m, &s1), 0);
    int32_t tok[30];
    for (int i = 0; i < 30; i++)
        tok[i] = 5 + i;
    float h[64], logits[200];
    llm_batch_entry_t e = { .slot = s0, .tokens = tok, .n_tokens = 25, .want_hidden = 1,
                            .hidden = h };
    ck_assert_int_eq(llm_decode(m, &e, 1, NULL), FD_ECTX); /* past the 24 positions */
    e.n_tokens = 5;
    e.enc_pool = LLM_ENC_RANK; /* no head */
    ck_assert_int_eq(llm_decode(m, &e, 1, NULL), -EINVAL);
    e.enc_pool = LLM_ENC_SUM;
    e.want_logits = 1; /* an encoder gives no logits */
    ck_assert_int_eq(llm_decode(m, &e, 1, logits), -EINVAL);
    e.want_logits = 0;
    tok[2] = 100; /* out of the vocabulary */
    ck_assert_int_eq(llm_decode(m, &e, 1, NULL), -EINVAL);
    tok[2] = 7;
    llm_batch_entry_t two[2] = { e, e }; /* one slot twice */
    ck_assert_int_eq(llm_decode(m, two, 2, NULL), -EINVAL);
    two[1].slot = s1;
    memset(h, 0, sizeof h);
    ck_assert_int_eq(llm_decode(m, two, 2, NULL), 0);
    llm_free(m);
}
END_TEST

int main(void)
{
    tu_tmp_make("test_bert");
    Suite *s = suite_create("bert");
    TCase *tc = tcase_create("bert");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_reference);
    tcase_add_test(tc, test_batch_independence);
    tcase_add_test(tc, test_xlmr);
    tcase_add_test(tc, test_weight_types);
    tcase_add_test(tc, test_bad_files);
    tcase_add_test(tc, test_bad_batches);
    suite_add_tcase(s, tc);
    int rc = tu_run(s);
    tu_tmp_remove();
    return rc;
}
