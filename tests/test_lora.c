/* test_lora.c: proves LoRA adapters (engine/lora.c, fusion/plan.c) add scale * alpha / rank *
 * B (A x) to each adapted matrix: the LM head's term against a direct fp64 computation from
 * the file's A and B, fused and unfused plans agree (CPU and Corsair, Phi-3's fused tensors
 * too), scale 0 or no scales is bit-identical to the model without the adapter, sequences
 * with different adapters share a step, F16/BF16/Q8_0 adapters match the F32 one, and each
 * kind of bad adapter file fails the load with its own error naming file and tensor. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "common/ggtypes.h"
#include "engine/gguf.h"
#include "engine/gguf_write.h"
#include "engine/lora.h"
#include "engine/model.h"
#include "testutil.h"

/* A small random model (F32 unless wtype says otherwise), written once per name. */
static const char *write_model(const char *name, const char *arch, int wtype)
{
    gguf_w_llama_t p = { .name = name, .arch = arch, .n_embd = 64, .n_layer = 2, .n_head = 4,
                         .n_head_kv = 2, .n_ff = 128, .n_vocab = 300, .n_ctx = 64,
                         .rope_base = 10000.0f, .norm_eps = 1e-5f, .wtype = wtype,
                         .seed = 7 };
    const char *path = tu_tmp_path(name);
    if (access(path, R_OK) == 0)
        return path;
    char err[256];
    int rc = gguf_w_llama_write(&p, path, 1, err, sizeof(err));
    ck_assert_msg(rc == 0, "writing %s: %s", name, err);
    return path;
}

static const char *write_adapter(const char *name, const char *base, const char *targets,
                                 int rank, float alpha, int type, uint64_t seed)
{
    lora_gen_t g = { .base_path = base, .targets = targets, .rank = rank, .alpha = alpha,
                     .type = type, .seed = seed };
    const char *path = tu_tmp_path(name);
    char err[256];
    int rc = lora_write_random(&g, path, err, sizeof(err));
    ck_assert_msg(rc == 0, "writing %s: %s", name, err);
    return path;
}

static llm_model_t *load(const char *path, bool fused, const char *backend,
                         const char *const *lora, int n_lora, int n_seq)
{
    llm_load_params_t p;
    llm_load_params_default(&p);
    p.path = path;
    p.fusion = fused;
    p.backend = backend;
    p.threads = 1;
    p.lora = lora;
    p.n_lora = n_lora;
    p.n_seq_max = n_seq;
    char err[512] = "";
    llm_model_t *m = NULL;
    int rc = llm_load(&m, &p, err, sizeof(err));
    ck_assert_msg(rc == 0, "loading %s: %s", path, err);
    return m;
}

static const int32_t toks[] = { 1, 70, 100, 261, 299, 3, 150, 42 };
#define N_STEPS 4

/* A 5-token prefill, then 3 single tokens, with the given adapter scales: the logits of the
 * 4 steps. */
static void run(llm_model_t *m, const float *scales, float *logits)
{
    int V = llm_hparams(m)->n_vocab, slot;
    ck_assert_int_eq(llm_seq_alloc(m, &slot), 0);
    llm_batch_entry_t e = { .slot = slot, .tokens = toks, .n_tokens = 5, .want_logits = 1,
                            .lora = scales };
    ck_assert_int_eq(llm_decode(m, &e, 1, logits), 0);
    for (int i = 5; i < 8; i++) {
        e.tokens = toks + i;
        e.n_tokens = 1;
        ck_assert_int_eq(llm_decode(m, &e, 1, logits + (size_t)(i - 4) * V), 0);
    }
    llm_seq_free(m, slot);
}

/* The LM head's LoRA term from the file: logits = base + s * alpha / r * B (A h), h the
 * final hidden state (after output_norm and its gamma, which llm_decode returns). */
START_TEST(test_head_formula)
{
    const char *base = write_model("m.gguf", NULL, GG_F32);
    const char *ad = write_adapter("head.gguf", base, "output", 4, 6.0f, GG_F32, 11);
    const char *ads[] = { ad };
    for (int fused = 0; fused < 2; fused++) {
        llm_model_t *m = load(base, fused, "cpu", ads, 1, 1);
        const llm_hparams_t *h = llm_hparams(m);
        const int V = h->n_vocab, E = h->n_embd;
        ck_assert_int_eq(llm_n_lora(m), 1);
        ck_assert_str_eq(llm_lora_path(m, 0), ad);
        ck_assert_float_eq(llm_lora_alpha(m, 0), 6.0f);
        ck_assert_int_eq(llm_lora_n_mats(m, 0), 1);
        gguf_t *g;
        char err[256];
        ck_assert_int_eq(gguf_open(&g, ad, err, sizeof(err)), 0);
        const gguf_tensor_t *ta = gguf_find_tensor(g, "output.weight.lora_a");
        const gguf_tensor_t *tb = gguf_find_tensor(g, "output.weight.lora_b");
        ck_assert(ta && tb && ta->type == GG_F32 && ta->ne[0] == E && ta->ne[1] == 4 &&
                  tb->ne[0] == 4 && tb->ne[1] == V);
        const float *A = ta->data, *B = tb->data;
        float *base_lg = malloc(sizeof(float) * V), *lg = malloc(sizeof(float) * V);
        float hid[64] = { 0 };
        const float scales[2] = { 1.0f, 0.5f };
        for (int si = 0; si < 2; si++) {
            float sc = scales[si];
            int slot;
            ck_assert_int_eq(llm_seq_alloc(m, &slot), 0);
            memset(hid, 0, sizeof(hid));
            llm_batch_entry_t e = { .slot = slot, .tokens = toks, .n_tokens = 5,
                                    .want_logits = 1, .want_hidden = 1, .hidden = hid };
            ck_assert_int_eq(llm_decode(m, &e, 1, base_lg), 0);
            ck_assert_int_eq(llm_seq_truncate(m, slot, 0), 0);
            e.want_hidden = 0;
            e.lora = &sc;
            ck_assert_int_eq(llm_decode(m, &e, 1, lg), 0);
            llm_seq_free(m, slot);
            double t[4], err_ok = 0, err_nolora = 0, err_norank = 0, mx = 0;
            for (int r = 0; r < 4; r++) {
                t[r] = 0;
                for (int i = 0; i < E; i++)
                    t[r] += (double)A[(size_t)r * E + i] * hid[i];
            }
            for (int o = 0; o < V; o++) {
                double u = 0;
                for (int r = 0; r < 4; r++)
                    u += (double)B[(size_t)o * 4 + r] * t[r];
                double want = base_lg[o] + sc * 6.0 / 4.0 * u;
                err_ok = fmax(err_ok, fabs(lg[o] - want));
                err_nolora = fmax(err_nolora, fabs(lg[o] - base_lg[o]));
                err_norank = fmax(err_norank, fabs(lg[o] - (base_lg[o] + sc * 6.0 * u)));
                mx = fmax(mx, fabs(want));
            }
            /* the bound holds, and neither a dropped term nor alpha without / rank does */
            ck_assert_msg(err_ok / mx < 2e-5, "fused %d scale %g: rel err %g", fused, sc,
                          err_ok / mx);
            ck_assert_msg(err_nolora / mx > 1e-2, "no LoRA term: %g", err_nolora / mx);
            ck_assert_msg(err_norank / mx > 1e-2, "alpha without rank: %g", err_norank / mx);
        }
        free(base_lg);
        free(lg);
        gguf_close(g);
        llm_free(m);
    }
}
END_TEST

/* Every target, two adapters at two scales: fused and unfused agree on both backends, and the
 * adapters move the logits well past that agreement. */
/* The Corsair backend computes in block floating point: its fused and unfused plans round
 * differently (test_model.c's CORSAIR_TOL, 10% of the logit scale), and so do its products
 * against the CPU's; its check is against the CPU's adapted logits, and the adapters must
 * move the logits by more than that bound for the check to mean anything. */
#define CORSAIR_TOL 0.10

static void fused_unfused(const char *model, const char *adapter_base, const char *backend,
                          const char *tag)
{
    const bool bfp = strcmp(backend, "corsair") == 0;
    const double tol = bfp ? CORSAIR_TOL : 1e-4;
    char n1[64], n2[64];
    snprintf(n1, sizeof(n1), "all-%s.gguf", tag);
    snprintf(n2, sizeof(n2), "qv-%s.gguf", tag);
    const char *a1 = write_adapter(n1, adapter_base, "all", 4, 8.0f, GG_F32, 21);
    const char *a2 = write_adapter(n2, adapter_base, "attn_q,attn_v,attn_qkv", 8, 4.0f,
                                   GG_F32, 22);
    const char *ads[] = { a1, a2 };
    llm_model_t *mu = load(model, false, backend, ads, 2, 1);
    llm_model_t *mf = load(model, true, backend, ads, 2, 1);
    const int V = llm_hparams(mf)->n_vocab;
    const size_t N = (size_t)N_STEPS * V;
    float *lu = malloc(sizeof(float) * N), *lf = malloc(sizeof(float) * N);
    float *lb = malloc(sizeof(float) * N), *lc = malloc(sizeof(float) * N);
    llm_model_t *mc = bfp ? load(model, false, "cpu", ads, 2, 1) : NULL;
    run(bfp ? mc : mf, NULL, lb);
    const float sets[3][2] = { { 1.0f, 0.0f }, { 0.0f, 1.0f }, { 0.7f, -1.5f } };
    for (int k = 0; k < 3; k++) {
        run(mu, sets[k], lu);
        run(mf, sets[k], lf);
        double d = tu_rel_diff(lf, lu, N), moved = tu_rel_diff(lf, lb, N);
        ck_assert_msg(d < tol, "%s %s set %d: fused vs unfused %g", tag, backend, k, d);
        ck_assert_msg(moved > (bfp ? 3 * tol : 1e-2), "%s %s set %d: the adapters moved the logits by %g "
                      "only", tag, backend, k, moved);
        if (bfp) {
            run(mc, sets[k], lc);
            double du = tu_rel_diff(lu, lc, N), df = tu_rel_diff(lf, lc, N);
            ck_assert_msg(du < tol && df < tol, "%s set %d: corsair vs cpu: unfused %g, fused "
                          "%g", tag, k, du, df);
        }
    }
    free(lc);
    llm_free(mc);
    free(lu);
    free(lf);
    free(lb);
    llm_free(mu);
    llm_free(mf);
}

START_TEST(test_fused_unfused_cpu)
{
    const char *m = write_model("m.gguf", NULL, GG_F32);
    fused_unfused(m, m, "cpu", "llama");
}
END_TEST

START_TEST(test_fused_unfused_corsair)
{
    const char *m = write_model("m.gguf", NULL, GG_F32);
    fused_unfused(m, m, "corsair", "llama-c");
}
END_TEST

START_TEST(test_fused_unfused_q8)
{
    /* a quantized base: A takes gamma as in_scale in the fused plan, as the base matrix */
    const char *m = write_model("m-q8.gguf", NULL, GG_Q8_0);
    fused_unfused(m, m, "cpu", "q8");
}
END_TEST

START_TEST(test_fused_unfused_phi3)
{
    /* Phi-3's attn_qkv and gate|up ffn_up tensors: one adapter pair, B split by rows */
    const char *m = write_model("phi3.gguf", "phi3", GG_F32);
    fused_unfused(m, m, "cpu", "phi3");
}
END_TEST

START_TEST(test_fused_unfused_qwen2)
{
    const char *m = write_model("qwen2.gguf", "qwen2", GG_F32);
    fused_unfused(m, m, "cpu", "qwen2");
}
END_TEST

/* Scale 0, or no scales, is the model without adapters, bit for bit, in both plans. */
START_TEST(test_scale_zero_exact)
{
    const char *base = write_model("m.gguf", NULL, GG_F32);
    const char *ad = write_adapter("all-z.gguf", base, "all", 4, 8.0f, GG_F32, 31);
    const char *ads[] = { ad };
    for (int fused = 0; fused < 2; fused++) {
        llm_model_t *m0 = load(base, fused, "cpu", NULL, 0, 1);
        llm_model_t *m1 = load(base, fused, "cpu", ads, 1, 1);
        const size_t N = (size_t)N_STEPS * llm_hparams(m0)->n_vocab;
        float *a = malloc(sizeof(float) * N), *b = malloc(sizeof(float) * N);
        const float zero = 0.0f, one = 1.0f;
        run(m0, NULL, a);
        run(m1, &zero, b);
        ck_assert_int_eq(memcmp(a, b, sizeof(float) * N), 0);
        run(m1, NULL, b);
        ck_assert_int_eq(memcmp(a, b, sizeof(float) * N), 0);
        run(m1, &one, b);
        ck_assert(memcmp(a, b, sizeof(float) * N) != 0);
        /* and back: nothing of the adapted run stays behind */
        run(m1, &zero, b);
        ck_assert_int_eq(memcmp(a, b, sizeof(float) * N), 0);
        free(a);
        free(b);
        llm_free(m0);
        llm_free(m1);
    }
}
END_TEST

/* Three sequences in one step, each with its own adapter set (gathered rows), equal the same
 * sequences run alone. */
START_TEST(test_mixed_batch)
{
    const char *base = write_model("m.gguf", NULL, GG_F32);
    const char *a1 = write_adapter("all-m1.gguf", base, "all", 4, 8.0f, GG_F32, 41);
    const char *a2 = write_adapter("all-m2.gguf", base, "attn_k,ffn_down,output", 4, 2.0f,
                                   GG_F32, 42);
    const char *ads[] = { a1, a2 };
    for (int fused = 0; fused < 2; fused++) {
        llm_model_t *m = load(base, fused, "cpu", ads, 2, 3);
        const int V = llm_hparams(m)->n_vocab;
        const float s[3][2] = { { 1.0f, 0.0f }, { 0.0f, 0.0f }, { 0.5f, 2.0f } };
        float *alone = malloc(sizeof(float) * 3 * V), *batch = malloc(sizeof(float) * 3 * V);
        int slot[3];
        for (int k = 0; k < 3; k++) {
            ck_assert_int_eq(llm_seq_alloc(m, &slot[k]), 0);
            llm_batch_entry_t e = { .slot = slot[k], .tokens = toks + k, .n_tokens = 4,
                                    .want_logits = 1, .lora = s[k] };
            ck_assert_int_eq(llm_decode(m, &e, 1, alone + (size_t)k * V), 0);
            ck_assert_int_eq(llm_seq_truncate(m, slot[k], 0), 0);
        }
        llm_batch_entry_t e[3];
        for (int k = 0; k < 3; k++)
            e[k] = (llm_batch_entry_t){ .slot = slot[k], .tokens = toks + k, .n_tokens = 4,
                                        .want_logits = 1, .lora = k == 1 ? NULL : s[k] };
        ck_assert_int_eq(llm_decode(m, e, 3, batch), 0);
        for (int k = 0; k < 3; k++) {
            double d = tu_rel_diff(batch + (size_t)k * V, alone + (size_t)k * V, (size_t)V);
            ck_assert_msg(d < 1e-5, "fused %d seq %d: batched vs alone %g", fused, k, d);
        }
        ck_assert(tu_rel_diff(batch, batch + V, (size_t)V) > 1e-3);
        free(alone);
        free(batch);
        llm_free(m);
    }
}
END_TEST

/* F16, BF16 and Q8_0 adapters hold the F32 adapter's values up to their rounding: the
 * adapter's effect on the logits matches the F32 adapter's within that rounding. */
START_TEST(test_adapter_types)
{
    const char *base = write_model("m.gguf", NULL, GG_F32);
    const int types[] = { GG_F16, GG_BF16, GG_Q8_0 };
    const double bound[] = { 2e-3, 2e-2, 2e-2 };
    const char *a32 = write_adapter("t-f32.gguf", base, "all", 32, 16.0f, GG_F32, 51);
    const char *ads32[] = { a32 };
    llm_model_t *m0 = load(base, true, "cpu", NULL, 0, 1), *m32 = load(base, true, "cpu", ads32,
                                                                         1, 1);
    const size_t N = (size_t)N_STEPS * llm_hparams(m0)->n_vocab;
    float *lb = malloc(sizeof(float) * N), *l32 = malloc(sizeof(float) * N);
    float *lt = malloc(sizeof(float) * N), *d32 = malloc(sizeof(float) * N);
    float *dt = malloc(sizeof(float) * N);
    const float one = 1.0f;
    run(m0, NULL, lb);
    run(m32, &one, l32);
    for (size_t i = 0; i < N; i++)
        d32[i] = l32[i] - lb[i];
    for (int k = 0; k < 3; k++) {
        char name[32];
        snprintf(name, sizeof(name), "t-%s.gguf", gg_type_name(types[k]));
        const char *ad = write_adapter(name, base, "all", 32, 16.0f, types[k], 51);
        const char *ads[] = { ad };
        llm_model_t *m = load(base, true, "cpu", ads, 1, 1);
        run(m, &one, lt);
        for (size_t i = 0; i < N; i++)
            dt[i] = lt[i] - lb[i];
        double d = tu_rel_diff(dt, d32, N);
        ck_assert_msg(d < bound[k], "%s adapter: its effect differs from F32's by %g",
                      gg_type_name(types[k]), d);
        ck_assert(d > 0);
        llm_free(m);
    }
    free(lb);
    free(l32);
    free(lt);
    free(d32);
    free(dt);
    llm_free(m0);
    llm_free(m32);
}
END_TEST

/* ---- bad adapter files ---- */

static int zero_fill(void *ud, const char *name, int64_t row, float *dst, int64_t n)
{
    (void)ud;
    (void)name;
    for (int64_t i = 0; i < n; i++)
        dst[i] = 0.01f * (float)((row + i) % 7);
    return 0;
}

typedef struct bad_tensor {
    const char *name;
    int type;
    int64_t ne0, ne1;
} bad_tensor_t;

static const char *write_bad(const char *name, const char *type, const char *adapter_type,
                             const char *arch, const bad_tensor_t *t, int n)
{
    gguf_w_t *w;
    ck_assert_int_eq(gguf_w_new(&w), 0);
    ck_assert_int_eq(gguf_w_add_str(w, "general.architecture", arch), 0);
    if (type)
        ck_assert_int_eq(gguf_w_add_str(w, "general.type", type), 0);
    if (adapter_type)
        ck_assert_int_eq(gguf_w_add_str(w, "adapter.type", adapter_type), 0);
    ck_assert_int_eq(gguf_w_add_f32(w, "adapter.lora.alpha", 4.0f), 0);
    for (int i = 0; i < n; i++) {
        int64_t ne[2] = { t[i].ne0, t[i].ne1 };
        ck_assert_int_eq(gguf_w_add_tensor(w, t[i].name, t[i].type, 2, ne, NULL, zero_fill,
                                           NULL), 0);
    }
    const char *path = tu_tmp_path(name);
    char err[256];
    ck_assert_msg(gguf_w_write_file(w, path, err, sizeof(err)) == 0, "%s", err);
    gguf_w_free(w);
    return path;
}

static void expect_fail(const char *model, const char *adapter, int code, const char *what,
                        const char *tensor)
{
    llm_load_params_t p;
    llm_load_params_default(&p);
    p.path = model;
    p.threads = 1;
    const char *ads[] = { adapter };
    p.lora = ads;
    p.n_lora = 1;
    char err[512] = "";
    llm_model_t *m = NULL;
    int rc = llm_load(&m, &p, err, sizeof(err));
    ck_assert_msg(rc == code, "%s: rc %d (%s), expected %d", adapter, rc, err, code);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(err, adapter) != NULL, "the message names no file: %s", err);
    ck_assert_msg(strstr(err, what) != NULL, "'%s' not in: %s", what, err);
    if (tensor)
        ck_assert_msg(strstr(err, tensor) != NULL, "tensor '%s' not in: %s", tensor, err);
}

START_TEST(test_bad_files)
{
    const char *base = write_model("m.gguf", NULL, GG_F32);
    const char *qw = write_model("qwen2.gguf", "qwen2", GG_F32);
    const bad_tensor_t good[] = { { "blk.0.attn_q.weight.lora_a", GG_F32, 64, 4 },
                                  { "blk.0.attn_q.weight.lora_b", GG_F32, 4, 64 } };
    /* a model is not an adapter */
    expect_fail(base, base, FD_EFORMAT, "not a LoRA adapter", NULL);
    expect_fail(base, write_bad("type.gguf", "model", "lora", "llama", good, 2), FD_EFORMAT,
                "general.type is 'model'", NULL);
    expect_fail(base, write_bad("ia3.gguf", "adapter", "ia3", "llama", good, 2), FD_EFORMAT,
                "adapter.type is 'ia3'", NULL);
    expect_fail(base, write_bad("arch.gguf", "adapter", "lora", "qwen2", good, 2), FD_EUNSUP,
                "another architecture", NULL);
    expect_fail(base, write_bad("unk.gguf", "adapter", "lora", "llama",
                                (bad_tensor_t[]){ { "blk.9.attn_q.weight.lora_a", GG_F32, 64, 4 },
                                                  { "blk.9.attn_q.weight.lora_b", GG_F32, 4, 64 } },
                                2),
                FD_EFORMAT, "does not have", "blk.9.attn_q.weight");
    /* a llama adapter on a qwen2 model */
    expect_fail(qw, write_bad("llama-on-qwen2.gguf", "adapter", "lora", "llama", good, 2),
                FD_EUNSUP, "another architecture", NULL);
    expect_fail(base, write_bad("embd.gguf", "adapter", "lora", "llama",
                                (bad_tensor_t[]){ { "token_embd.weight.lora_a", GG_F32, 64, 4 },
                                                  { "token_embd.weight.lora_b", GG_F32, 4, 300 } },
                                2),
                FD_EUNSUP, "not supported", "token_embd.weight");
    expect_fail(base, write_bad("shape.gguf", "adapter", "lora", "llama",
                                (bad_tensor_t[]){ { "blk.1.ffn_up.weight.lora_a", GG_F32, 128, 4 },
                                                  { "blk.1.ffn_up.weight.lora_b", GG_F32, 4, 128 } },
                                2),
                FD_ESHAPE, "do not fit", "blk.1.ffn_up.weight.lora_a");
    expect_fail(base, write_bad("rank.gguf", "adapter", "lora", "llama",
                                (bad_tensor_t[]){ { "blk.0.attn_k.weight.lora_a", GG_F32, 64, 4 },
                                                  { "blk.0.attn_k.weight.lora_b", GG_F32, 8, 32 } },
                                2),
                FD_ESHAPE, "rank mismatch", "blk.0.attn_k.weight.lora_b");
    expect_fail(base, write_bad("q4.gguf", "adapter", "lora", "llama",
                                (bad_tensor_t[]){ { "blk.0.attn_q.weight.lora_a", GG_Q4_0, 64, 4 },
                                                  { "blk.0.attn_q.weight.lora_b", GG_F32, 4, 64 } },
                                2),
                FD_EUNSUP, "type Q4_0", "blk.0.attn_q.weight.lora_a");
    expect_fail(base, write_bad("half.gguf", "adapter", "lora", "llama", good, 1), FD_EFORMAT,
                "no partner", "blk.0.attn_q.weight.lora_b");
    expect_fail(base, write_bad("suffix.gguf", "adapter", "lora", "llama",
                                (bad_tensor_t[]){ { "blk.0.attn_q.weight.lora_c", GG_F32, 64, 4 } },
                                1),
                FD_EFORMAT, ".lora_a or .lora_b", "blk.0.attn_q.weight.lora_c");
    expect_fail(base, write_bad("empty.gguf", "adapter", "lora", "llama", NULL, 0), FD_EFORMAT,
                "no tensors", NULL);
    /* the good one loads */
    const char *ok = write_bad("good.gguf", "adapter", "lora", "llama", good, 2);
    const char *ads[] = { ok };
    llm_free(load(base, true, "cpu", ads, 1, 1));
}
END_TEST

int main(void)
{
    tu_tmp_make("fd-test-lora");
    Suite *s = suite_create("lora");
    TCase *tc = tcase_create("lora");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_head_formula);
    tcase_add_test(tc, test_fused_unfused_cpu);
    tcase_add_test(tc, test_fused_unfused_corsair);
    tcase_add_test(tc, test_fused_unfused_q8);
    tcase_add_test(tc, test_fused_unfused_phi3);
    tcase_add_test(tc, test_fused_unfused_qwen2);
    tcase_add_test(tc, test_scale_zero_exact);
    tcase_add_test(tc, test_mixed_batch);
    tcase_add_test(tc, test_adapter_types);
    tcase_add_test(tc, test_bad_files);
    suite_add_tcase(s, tc);
    int rc = tu_run(s);
    tu_tmp_remove();
    return rc;
}
