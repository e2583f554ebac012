/* test_model.c: proves the model and the batched decoder step: stories260K's greedy output is
 * exactly the reference (both files, fusion on and off), fused and unfused logits agree,
 * several sequences decoded together (mixed prefill and decode, split sub-batches) give what
 * each gives alone, and bad batches fail clearly. */
#include <math.h>

#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"
#include "engine/model.h"
#include "tests/testutil.h"

/* ---- helpers ---- */

static llm_model_t *load(const char *path, bool fusion, int n_seq, int n_batch, int n_ctx)
{
    llm_load_params_t p;
    llm_load_params_default(&p);
    p.path = path;
    p.fusion = fusion;
    p.n_seq_max = n_seq;
    p.n_batch_max = n_batch;
    p.n_ctx = n_ctx;
    p.threads = 1;
    llm_model_t *m = NULL;
    char err[512];
    int rc = llm_load(&m, &p, err, sizeof(err));
    ck_assert_msg(rc == 0, "llm_load(%s): %s (%s)", path, err, fd_strerror(rc));
    return m;
}

static int argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

/* max |a - b| over max |b| */
static double logit_diff(const float *a, const float *b, int n)
{
    double d = 0, s = 0;
    for (int i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return d / s;
}

/* The reference file: 200 ids and the text. */
static int read_reference(int32_t *ids, char *text, size_t cap)
{
    const char *path = tu_shared("models/stories260K.reference.json", 1);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strstr(buf, "\"generated_ids\"");
    ck_assert_ptr_nonnull(p);
    p = strchr(p, '[') + 1;
    int k = 0;
    while (*p && *p != ']') {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) {
            p++;
            continue;
        }
        ids[k++] = (int32_t)v;
        p = end;
    }
    /* "text": a JSON string with \n and \" escapes only */
    p = strstr(buf, "\"text\"");
    ck_assert_ptr_nonnull(p);
    p = strchr(p + 6, '"') + 1;
    size_t o = 0;
    for (; *p && *p != '"' && o + 1 < cap; p++) {
        if (*p == '\\') {
            p++;
            text[o++] = *p == 'n' ? '\n' : *p;
        } else {
            text[o++] = *p;
        }
    }
    text[o] = '\0';
    return k;
}

/* ---- stories260K: the reference output ---- */

static void greedy_matches(const char *file, bool fusion)
{
    int32_t ref[256];
    static char text[8192];
    int n_ref = read_reference(ref, text, sizeof(text));
    ck_assert_int_eq(n_ref, 200);
    llm_model_t *m = load(tu_shared(file, 1), fusion, 1, 0, 0);
    const tok_t *tk = llm_tok(m);
    int V = llm_hparams(m)->n_vocab, slot;
    ck_assert_int_eq(llm_seq_alloc(m, &slot), 0);
    float *lg = malloc(sizeof(float) * V);
    int32_t t = tok_bos(tk), out[200];
    ck_assert_int_eq(t, 1);
    tok_stream_t ts;
    tok_stream_init(&ts, tk, true);
    static char streamed[8192];
    size_t sl = 0, len;
    for (int i = 0; i < 200; i++) {
        llm_batch_entry_t e = { .slot = slot, .tokens = &t, .n_tokens = 1, .want_logits = true };
        ck_assert_int_eq(llm_decode(m, &e, 1, lg), 0);
        t = out[i] = argmax(lg, V);
        ck_assert_msg(out[i] == ref[i], "%s fusion %d: token %d is %d, expected %d", file,
                      fusion, i, out[i], ref[i]);
        ck_assert_int_eq(tok_stream_push(&ts, tk, t, streamed + sl, sizeof(streamed) - sl,
                                         &len), 0);
        sl += len;
    }
    ck_assert_int_eq(tok_stream_flush(&ts, streamed + sl, sizeof(streamed) - sl, &len), 0);
    streamed[sl + len] = '\0';
    ck_assert_str_eq(streamed, text);
    static char dec[8192];
    ck_assert_int_eq(tok_decode(tk, out, 200, false, true, dec, sizeof(dec) - 1, &len), 0);
    dec[len] = '\0';
    ck_assert_str_eq(dec, text);
    ck_assert_int_eq(llm_seq_len(m, slot), 200);
    free(lg);
    llm_free(m);
}

START_TEST(test_greedy_fused) { greedy_matches("models/stories260K.gguf", true); }
END_TEST
START_TEST(test_greedy_unfused) { greedy_matches("models/stories260K.gguf", false); }
END_TEST
START_TEST(test_greedy_ggml_org_fused) { greedy_matches("models/stories260K-ggml-org.gguf", true); }
END_TEST
START_TEST(test_greedy_ggml_org_unfused)
{
    greedy_matches("models/stories260K-ggml-org.gguf", false);
}
END_TEST

START_TEST(test_hparams)
{
    llm_model_t *m = load(tu_shared("models/stories260K.gguf", 1), true, 1, 0, 0);
    const llm_hparams_t *h = llm_hparams(m);
    ck_assert_str_eq(h->arch, "llama");
    ck_assert_int_eq(h->n_vocab, 512);
    ck_assert_int_eq(h->n_ctx_train, 512);
    ck_assert_int_eq(h->n_ctx, 512);
    ck_assert_int_eq(h->n_embd, 64);
    ck_assert_int_eq(h->n_layer, 5);
    ck_assert_int_eq(h->n_head, 8);
    ck_assert_int_eq(h->n_head_kv, 4);
    ck_assert_int_eq(h->head_dim, 8);
    ck_assert_int_eq(h->n_ff, 172);
    ck_assert_int_eq(h->n_rot, 8);
    ck_assert_float_eq_tol(h->norm_eps, 1e-5f, 1e-9f);
    ck_assert_float_eq(h->rope_freq_base, 10000.0f);
    ck_assert_float_eq(h->rope_freq_scale, 1.0f);
    ck_assert_int_eq(h->rope_mode, FB_ROPE_ADJACENT);
    ck_assert(!h->tied_output);
    ck_assert(!h->qkv_bias);
    ck_assert(llm_fusion(m));
    ck_assert_int_eq(llm_softmax_mode(m), FB_SOFTMAX_MAXSUM);
    llm_free(m);
    /* the context override, and the ggml-org file's own 2048 */
    m = load(tu_shared("models/stories260K.gguf", 1), false, 1, 0, 64);
    ck_assert_int_eq(llm_hparams(m)->n_ctx, 64);
    ck_assert_int_eq(llm_softmax_mode(m), FB_SOFTMAX_REF);
    llm_free(m);
    m = load(tu_shared("models/stories260K-ggml-org.gguf", 1), true, 1, 0, 0);
    ck_assert_int_eq(llm_hparams(m)->n_ctx, 2048);
    llm_free(m);
}
END_TEST

/* Teacher-forced along the reference ids, fused (max+sum and sum-only) and unfused logits
 * agree to 1e-5 of their scale at every one of 200 steps: the plans are the same function,
 * and in fp32 they differ by rounding only (measured ~1e-7; the bound leaves 100x). */
START_TEST(test_fused_unfused_logits)
{
    int32_t ref[256];
    static char text[8192];
    read_reference(ref, text, sizeof(text));
    const char *path = tu_shared("models/stories260K.gguf", 1);
    llm_model_t *mu = load(path, false, 1, 0, 0), *mf = load(path, true, 1, 0, 0);
    llm_load_params_t p;
    llm_load_params_default(&p);
    p.path = path;
    p.softmax_mode = FB_SOFTMAX_SUMONLY;
    llm_model_t *ms;
    char err[256];
    ck_assert_int_eq(llm_load(&ms, &p, err, sizeof(err)), 0);
    int V = 512, su, sf, ss;
    ck_assert_int_eq(llm_seq_alloc(mu, &su), 0);
    ck_assert_int_eq(llm_seq_alloc(mf, &sf), 0);
    ck_assert_int_eq(llm_seq_alloc(ms, &ss), 0);
    float *lu = malloc(sizeof(float) * V), *lf = malloc(sizeof(float) * V);
    float *ls = malloc(sizeof(float) * V);
    int32_t t = 1;
    double worst = 0, worst_s = 0;
    for (int i = 0; i < 200; i++) {
        llm_batch_entry_t e = { .slot = su, .tokens = &t, .n_tokens = 1, .want_logits = true };
        ck_assert_int_eq(llm_decode(mu, &e, 1, lu), 0);
        e.slot = sf;
        ck_assert_int_eq(llm_decode(mf, &e, 1, lf), 0);
        e.slot = ss;
        ck_assert_int_eq(llm_decode(ms, &e, 1, ls), 0);
        worst = fmax(worst, logit_diff(lf, lu, V));
        worst_s = fmax(worst_s, logit_diff(ls, lu, V));
        t = ref[i];
    }
    fprintf(stderr, "stories260K fused vs unfused: max|dlogit|/max|logit| = %.2e (maxsum), "
            "%.2e (sumonly)\n", worst, worst_s);
    ck_assert_msg(worst <= 1e-5, "fused vs unfused %.3g", worst);
    ck_assert_msg(worst_s <= 1e-5, "sumonly vs unfused %.3g", worst_s);
    free(lu); free(lf); free(ls);
    llm_free(mu); llm_free(mf); llm_free(ms);
}
END_TEST

/* ---- the batch step ---- */

/* Three sequences decoded together, in steps that mix prefill and decode at different
 * positions, give the logits and tokens each gives alone (same backend, so the rows are
 * computed alike: within 1e-5 of scale, argmax equal); so does a model whose sub-batches are
 * 3 rows, which splits prompts across sub-batches. */
START_TEST(test_batch_equals_alone)
{
    const char *path = tu_shared("models/stories260K.gguf", 1);
    static const int32_t pa[] = { 1, 403, 407, 261, 378, 432, 383 };
    static const int32_t pb[] = { 1, 13, 300 };
    static const int32_t pc[] = { 1, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409 };
    const int32_t *prompts[3] = { pa, pb, pc };
    const int plen[3] = { 7, 3, 11 };
    const int V = 512, steps = 6;
    /* alone: prompt, then greedy steps */
    float alone[3][7][512];
    int32_t alone_tok[3][7];
    for (int s = 0; s < 3; s++) {
        llm_model_t *m = load(path, true, 1, 0, 0);
        int slot;
        ck_assert_int_eq(llm_seq_alloc(m, &slot), 0);
        llm_batch_entry_t e = { slot, prompts[s], plen[s], true };
        ck_assert_int_eq(llm_decode(m, &e, 1, alone[s][0]), 0);
        for (int i = 0; i < steps; i++) {
            alone_tok[s][i] = argmax(alone[s][i], V);
            llm_batch_entry_t d = { slot, &alone_tok[s][i], 1, true };
            ck_assert_int_eq(llm_decode(m, &d, 1, alone[s][i + 1]), 0);
        }
        llm_free(m);
    }
    for (int nb = 0; nb < 2; nb++) {
        llm_model_t *m = load(path, true, 4, nb ? 3 : 0, 0);
        int slot[3];
        for (int s = 0; s < 3; s++)
            ck_assert_int_eq(llm_seq_alloc(m, &slot[s]), 0);
        /* step 0: A's prompt alone (no logits: only the cache) in two pieces: first 4
         * tokens now, the rest later with the others */
        llm_batch_entry_t e0 = { slot[0], pa, 4, false };
        ck_assert_int_eq(llm_decode(m, &e0, 1, NULL), 0);
        ck_assert_int_eq(llm_seq_len(m, slot[0]), 4);
        /* step 1: A finishes its prompt, B prefills whole, C prefills part */
        float lg[3][512];
        llm_batch_entry_t e1[3] = { { slot[1], pb, 3, true }, { slot[0], pa + 4, 3, true },
                                    { slot[2], pc, 5, false } };
        ck_assert_int_eq(llm_decode(m, e1, 3, lg[0]), 0);
        ck_assert_msg(logit_diff(lg[0], alone[1][0], V) <= 1e-5, "B prompt");
        ck_assert_msg(logit_diff(lg[1], alone[0][0], V) <= 1e-5, "A prompt");
        /* step 2: A and B decode, C finishes its prompt */
        int32_t ta = argmax(lg[1], V), tb = argmax(lg[0], V);
        llm_batch_entry_t e2[3] = { { slot[0], &ta, 1, true }, { slot[2], pc + 5, 6, true },
                                    { slot[1], &tb, 1, true } };
        ck_assert_int_eq(llm_decode(m, e2, 3, lg[0]), 0);
        ck_assert_int_eq(ta, alone_tok[0][0]);
        ck_assert_int_eq(tb, alone_tok[1][0]);
        ck_assert_msg(logit_diff(lg[0], alone[0][1], V) <= 1e-5, "A step 1");
        ck_assert_msg(logit_diff(lg[1], alone[2][0], V) <= 1e-5, "C prompt");
        ck_assert_msg(logit_diff(lg[2], alone[1][1], V) <= 1e-5, "B step 1");
        /* then all three decode together, each at its own position */
        int32_t t[3] = { argmax(lg[0], V), argmax(lg[2], V), argmax(lg[1], V) };
        int k[3] = { 2, 2, 1 }; /* next index into alone[s] */
        for (int i = 0; i < 4; i++) {
            llm_batch_entry_t e[3] = { { slot[2], &t[2], 1, true }, { slot[0], &t[0], 1, true },
                                       { slot[1], &t[1], 1, true } };
            ck_assert_int_eq(llm_decode(m, e, 3, lg[0]), 0);
            const int order[3] = { 2, 0, 1 };
            for (int j = 0; j < 3; j++) {
                int s = order[j];
                ck_assert_int_eq(t[s], alone_tok[s][k[s] - 1]);
                ck_assert_msg(logit_diff(lg[j], alone[s][k[s]], V) <= 1e-5,
                              "seq %d step %d (batch max %d)", s, k[s], nb ? 3 : 512);
                t[s] = argmax(lg[j], V);
                k[s]++;
            }
        }
        ck_assert_int_eq(llm_seq_len(m, slot[0]), 7 + 5);
        ck_assert_int_eq(llm_seq_len(m, slot[1]), 3 + 5);
        ck_assert_int_eq(llm_seq_len(m, slot[2]), 11 + 4);
        /* truncating and re-feeding gives the same logits again */
        ck_assert_int_eq(llm_seq_truncate(m, slot[1], 3), 0);
        llm_batch_entry_t r = { slot[1], &alone_tok[1][0], 1, true };
        ck_assert_int_eq(llm_decode(m, &r, 1, lg[0]), 0);
        ck_assert_msg(logit_diff(lg[0], alone[1][1], V) <= 1e-5, "after truncate");
        llm_free(m);
    }
}
END_TEST

/* ---- bad input ---- */

START_TEST(test_bad_batch)
{
    llm_model_t *m = load(tu_shared("models/stories260K.gguf", 1), true, 2, 0, 8);
    int a, b, c;
    ck_assert_int_eq(llm_seq_alloc(m, &a), 0);
    ck_assert_int_eq(llm_seq_alloc(m, &b), 0);
    ck_assert_int_eq(llm_seq_alloc(m, &c), FD_EFULL);
    float lg[2 * 512];
    int32_t toks[9] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 }, bad = 512, neg = -1;
    /* longer than the context (8): refused, nothing changes */
    llm_batch_entry_t e = { a, toks, 9, true };
    ck_assert_int_eq(llm_decode(m, &e, 1, lg), FD_ECTX);
    ck_assert_int_eq(llm_seq_len(m, a), 0);
    e.n_tokens = 8;
    ck_assert_int_eq(llm_decode(m, &e, 1, lg), 0);
    e.n_tokens = 1;
    ck_assert_int_eq(llm_decode(m, &e, 1, lg), FD_ECTX);
    ck_assert_int_eq(llm_seq_len(m, a), 8);
    /* empty entry, no entries, bad ids, unknown or free slot, duplicate slot, NULL logits */
    llm_batch_entry_t z = { b, toks, 0, true };
    ck_assert_int_eq(llm_decode(m, &z, 1, lg), -EINVAL);
    ck_assert_int_eq(llm_decode(m, &z, 0, lg), -EINVAL);
    llm_batch_entry_t x = { b, &bad, 1, true };
    ck_assert_int_eq(llm_decode(m, &x, 1, lg), -EINVAL);
    x.tokens = &neg;
    ck_assert_int_eq(llm_decode(m, &x, 1, lg), -EINVAL);
    llm_batch_entry_t y = { 7, toks, 1, true };
    ck_assert_int_eq(llm_decode(m, &y, 1, lg), -EINVAL);
    llm_batch_entry_t d[2] = { { b, toks, 1, true }, { b, toks, 1, true } };
    ck_assert_int_eq(llm_decode(m, d, 2, lg), -EINVAL);
    llm_batch_entry_t nl = { b, toks, 1, true };
    ck_assert_int_eq(llm_decode(m, &nl, 1, NULL), -EINVAL);
    /* a bad entry next to a good one: neither runs */
    llm_batch_entry_t mix[2] = { { b, toks, 2, true }, { a, toks, 1, true } };
    ck_assert_int_eq(llm_decode(m, mix, 2, lg), FD_ECTX);
    ck_assert_int_eq(llm_seq_len(m, b), 0);
    ck_assert_int_eq(llm_seq_truncate(m, a, 9), -EINVAL);
    ck_assert_int_eq(llm_seq_truncate(m, a, 2), 0);
    ck_assert_int_eq(llm_seq_len(m, a), 2);
    llm_seq_free(m, a);
    ck_assert_int_eq(llm_seq_len(m, a), -EINVAL);
    ck_assert_int_eq(llm_seq_alloc(m, &c), 0);
    ck_assert_int_eq(c, a);
    ck_assert_int_eq(llm_seq_len(m, c), 0);
    llm_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model");
    TCase *ref = tcase_create("stories260K");
    tcase_add_test(ref, test_hparams);
    tcase_add_test(ref, test_greedy_fused);
    tcase_add_test(ref, test_greedy_unfused);
    tcase_add_test(ref, test_greedy_ggml_org_fused);
    tcase_add_test(ref, test_greedy_ggml_org_unfused);
    tcase_add_test(ref, test_fused_unfused_logits);
    tcase_add_test(ref, test_batch_equals_alone);
    tcase_add_test(ref, test_bad_batch);
    suite_add_tcase(s, ref);
    return tu_run(s);
}
