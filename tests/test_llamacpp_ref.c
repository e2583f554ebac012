/* test_llamacpp_ref.c: proves fusiond computes what llama.cpp computes, architecture by
 * architecture and weight type by weight type: for small random-weight models (llama, qwen2,
 * qwen3, phi3, gemma2, gemma3, qwen3moe, olmoe, gpt-oss; F32, F16, BF16, Q8_0, Q4_0, Q4_1,
 * Q5_0, Q5_1, Q2_K, Q3_K, Q4_K_M, Q5_K_M, Q6_K, IQ4_NL, IQ4_XS, MXFP4, and llama.cpp's IQ4_XS
 * and MXFP4_MOE mixes) the logits after every prompt position, on the CPU backend (fast kernels and reference
 * ops, fused and unfused plans), equal llama.cpp's within the bound each type justifies;
 * Llama 3.1's RoPE frequency factors (rope_freqs.weight), phi3 (fused tensors), Phi-3.5's
 * LongRoPE (short and long factors, attention factor), Gemma 2/3 (embedding scale, GELU, post
 * norms, soft-caps, a sliding window of 4 under a 10-token prompt, Gemma 3's local RoPE base)
 * and the mixtures of experts qwen3moe, olmoe, qwen2moe and Mixtral-style llama (routing,
 * renormalization or not, OLMoE's whole-row Q/K norms, qwen2moe's sigmoid-gated shared
 * expert, a prompt that reaches every expert), gpt-oss (attention sinks, biases, swiglu_oai,
 * YaRN, a sliding window of 16 on the even layers under a 48-token prompt, which a window
 * one off fails; F32 and MXFP4 experts)
 * too, and a Gemma-style vocabulary tokenizes as llama.cpp tokenizes it; and with f16 and q8_0
 * KV caches, against llama.cpp's runs with the same cache types; YaRN RoPE scaling (llama,
 * qwen2 and qwen3 files with rope.scaling.type yarn, a 48-token prompt), where linear scaling
 * in its place, no ramp, a moved ramp or no magnitude fails; and with LoRA adapters
 * (F32, F16, BF16, Q8_0; one and two at once, scales 1, 0.4, -1.5, 0.7, 0.5) on F32, Q8_0 and
 * Q4_K_M models, where dropping the adapters' terms or scaling them wrongly fails.  The references are
 * tests/data/llamacpp-*.txt, written by tests/ref/make-refs.sh with
 * llama.cpp's own CPU binaries; each file's "model" line is the recipe this test writes the
 * same model from. */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <math.h>

#include "common/fd.h"
#include "common/ggtypes.h"
#include "engine/gguf_write.h"
#include "backends/backend.h"
#include "engine/lora.h"
#include "engine/model.h"
#include "tests/testutil.h"

#define MAX_IDS 64
#define N_VOCAB 512

typedef struct ref {
    gguf_w_llama_t spec;
    char arch[16], type[16];
    int32_t ids[MAX_IDS];
    int n_ids;
    float *logits;          /* n_ids rows of N_VOCAB */
    int cache_k, cache_v;   /* llama.cpp's KV cache types (the "cache" line; F32 without) */
    /* LoRA adapters ("lora" lines): the recipe of each (fusion-gguf-gen --lora), its scale,
     * and the file write_model writes it to */
    lora_gen_t lora[4];
    char lora_targets[4][128], lora_type[4][16];
    float lora_scale[4];
    char lora_path[4][4096];
    const char *lora_paths[4];
    int n_lora;
} ref_t;

static char tmpdir[] = "/tmp/fusiond-llamacpp-XXXXXX";

static int key_int(const char *val)
{
    char *end;
    long v = strtol(val, &end, 10);
    ck_assert_msg(*val && *end == '\0' && v >= 0 && v < (1L << 30), "bad number '%s'", val);
    return (int)v;
}

static int parse_type(const char *s)
{
    if (strcmp(s, "Q4_K_M") == 0)
        return GGUF_W_MIX_Q4_K_M;
    if (strcmp(s, "Q5_K_M") == 0)
        return GGUF_W_MIX_Q5_K_M;
    if (strcmp(s, "IQ4_XS_MIX") == 0)
        return GGUF_W_MIX_IQ4_XS;
    if (strcmp(s, "MXFP4_MOE") == 0)
        return GGUF_W_MIX_MXFP4_MOE;
    int t = gg_type_from_name(s);
    ck_assert_msg(t >= 0, "unknown type '%s'", s);
    return t;
}

/* The model line: key=value pairs, every one required. */
static void parse_model(ref_t *r, char *line)
{
    gguf_w_llama_t *s = &r->spec;
    *s = (gguf_w_llama_t){ .rope_base = 10000.0f, .norm_eps = 1e-5f, .name = "llamacpp-ref" };
    int seen = 0, gemma = 0, moe = 0;
    for (char *tok = strtok(line, " "); tok; tok = strtok(NULL, " ")) {
        char *eq = strchr(tok, '=');
        ck_assert_msg(eq != NULL, "model line: '%s' is not key=value", tok);
        *eq = '\0';
        const char *k = tok, *v = eq + 1;
        seen++;
        if (!strcmp(k, "arch"))
            snprintf(r->arch, sizeof(r->arch), "%s", v);
        else if (!strcmp(k, "type"))
            snprintf(r->type, sizeof(r->type), "%s", v);
        else if (!strcmp(k, "n_embd")) s->n_embd = key_int(v);
        else if (!strcmp(k, "n_layer")) s->n_layer = key_int(v);
        else if (!strcmp(k, "n_head")) s->n_head = key_int(v);
        else if (!strcmp(k, "n_head_kv")) s->n_head_kv = key_int(v);
        else if (!strcmp(k, "head_dim")) s->head_dim = key_int(v);
        else if (!strcmp(k, "n_ff")) s->n_ff = key_int(v);
        else if (!strcmp(k, "n_vocab")) s->n_vocab = key_int(v);
        else if (!strcmp(k, "n_ctx")) s->n_ctx = key_int(v);
        else if (!strcmp(k, "tied")) s->tied = key_int(v) != 0;
        else if (!strcmp(k, "rope_freqs")) s->rope_freqs = key_int(v) != 0;
        else if (!strcmp(k, "orig_ctx")) s->orig_ctx = key_int(v);
        else if (!strcmp(k, "attn_factor")) s->attn_factor = strtof(v, NULL);
        else if (!strcmp(k, "seed")) s->seed = (uint64_t)key_int(v);
        else if (!strcmp(k, "n_swa")) { /* gemma's (one of its four) or gpt-oss's window */
            s->n_swa = key_int(v);
            if (!strncmp(r->arch, "gemma", 5))
                gemma++;
            else
                seen--;
        }
        else if (!strcmp(k, "attn_softcap")) s->attn_softcap = strtof(v, NULL), gemma++;
        else if (!strcmp(k, "final_softcap")) s->final_softcap = strtof(v, NULL), gemma++;
        else if (!strcmp(k, "rope_base")) s->rope_base = strtof(v, NULL), gemma++;
        else if (!strcmp(k, "n_expert")) s->n_expert = key_int(v), moe++;
        else if (!strcmp(k, "n_expert_used")) s->n_expert_used = key_int(v), moe++;
        else if (!strcmp(k, "gemma_vocab")) s->gemma_vocab = key_int(v) != 0, seen--;
        else if (!strcmp(k, "rope_scale")) s->rope_scale = strtof(v, NULL), seen--;
        else if (!strcmp(k, "rope_scaling")) { /* yarn:FACTOR:ORIG_CTX[:ATTN_FACTOR] */
            char *end;
            ck_assert_msg(!strncmp(v, "yarn:", 5), "model line: rope_scaling '%s'", v);
            s->rope_scale = strtof(v + 5, &end);
            ck_assert_msg(*end == ':' && s->rope_scale > 0, "model line: rope_scaling '%s'", v);
            char *colon = strchr(end + 1, ':'); /* yarn:F:N:A: rope.scaling.attn_factor A */
            if (colon) {
                *colon = '\0';
                s->attn_factor = strtof(colon + 1, NULL);
                ck_assert_msg(s->attn_factor > 0, "model line: rope_scaling '%s'", v);
            }
            s->yarn_orig_ctx = key_int(end + 1);
            seen--;
        }
        else
            ck_abort_msg("model line: unknown key '%s'", k);
    }
    /* the gemma models' four keys come together, and the mixtures' two */
    ck_assert_int_eq(seen, 15 + gemma + moe);
    ck_assert(gemma == 0 || gemma == 4);
    ck_assert(moe == 0 || moe == 2);
    ck_assert_int_eq(s->n_vocab, N_VOCAB);
    s->arch = r->arch;
    s->wtype = parse_type(r->type);
}

/* Reads tests/data/llamacpp-<name>.txt. */
static void load_ref(const char *name, ref_t *r)
{
    char rel[256];
    snprintf(rel, sizeof(rel), "tests/data/llamacpp-%s.txt", name);
    size_t len;
    char *buf = tu_slurp(tu_src(rel), &len);
    memset(r, 0, sizeof(*r));
    int have_model = 0, rows = 0;
    for (char *cur = buf, *line; (line = tu_next_line(&cur));) {
        if (!strncmp(line, "model ", 6)) {
            parse_model(r, line + 6);
            have_model = 1;
        } else if (!strncmp(line, "cache ", 6)) {
            char k[16], v[16];
            ck_assert_int_eq(sscanf(line + 6, "%15s %15s", k, v), 2);
            r->cache_k = fb_kv_type_from_name(k);
            r->cache_v = fb_kv_type_from_name(v);
            ck_assert_msg(r->cache_k >= 0 && r->cache_v >= 0, "%s: bad cache line", rel);
        } else if (!strncmp(line, "lora ", 5)) {
            ck_assert_int_lt(r->n_lora, 4);
            int k = r->n_lora++;
            unsigned long long seed;
            ck_assert_msg(sscanf(line + 5, "rank=%d alpha=%f seed=%llu type=%15s targets=%127s "
                                 "scale=%f", &r->lora[k].rank, &r->lora[k].alpha, &seed,
                                 r->lora_type[k], r->lora_targets[k], &r->lora_scale[k]) == 6,
                          "%s: bad lora line", rel);
            r->lora[k].seed = seed;
            r->lora[k].type = parse_type(r->lora_type[k]);
            r->lora[k].targets = r->lora_targets[k];
        } else if (!strncmp(line, "ids ", 4)) {
            char *p = line + 4, *end;
            for (long v; (v = strtol(p, &end, 10)), end != p; p = end) {
                ck_assert_int_lt(r->n_ids, MAX_IDS);
                r->ids[r->n_ids++] = (int32_t)v;
            }
            r->logits = malloc(sizeof(float) * (size_t)r->n_ids * N_VOCAB);
            ck_assert_ptr_nonnull(r->logits);
        } else if (!strncmp(line, "logits ", 7)) {
            int pos, n;
            ck_assert_int_eq(sscanf(line + 7, "%d %d", &pos, &n), 2);
            ck_assert_msg(r->logits && pos == rows && pos < r->n_ids && n == N_VOCAB,
                          "%s: logits row %d out of order or of %d values", rel, pos, n);
            char *p = cur;
            ck_assert_ptr_nonnull(p);
            for (int i = 0; i < N_VOCAB; i++) {
                char *end;
                r->logits[(size_t)pos * N_VOCAB + (size_t)i] = strtof(p, &end);
                ck_assert_msg(end != p, "%s: row %d is short", rel, pos);
                p = end;
            }
            cur = strchr(p, '\n');
            if (cur)
                cur++;
            rows++;
        } else {
            ck_abort_msg("%s: unknown line '%.40s'", rel, line);
        }
    }
    ck_assert_msg(have_model && r->n_ids > 1 && rows == r->n_ids,
                  "%s: %d of %d logits rows, model line %s", rel, rows, r->n_ids,
                  have_model ? "present" : "missing");
    free(buf);
}

static const char *write_model(ref_t *r, const char *name)
{
    static char path[4096];
    snprintf(path, sizeof(path), "%s/%s.gguf", tmpdir, name);
    char err[512];
    int rc = gguf_w_llama_write(&r->spec, path, 1, err, sizeof(err));
    ck_assert_msg(rc == 0, "writing %s: %s", path, err);
    for (int k = 0; k < r->n_lora; k++) {
        snprintf(r->lora_path[k], sizeof(r->lora_path[k]), "%s/%s-a%d.gguf", tmpdir, name, k);
        r->lora[k].base_path = path;
        rc = lora_write_random(&r->lora[k], r->lora_path[k], err, sizeof(err));
        ck_assert_msg(rc == 0, "writing %s: %s", r->lora_path[k], err);
        r->lora_paths[k] = r->lora_path[k];
    }
    return path;
}

static void unlink_files(const ref_t *r, const char *path)
{
    unlink(path);
    for (int k = 0; k < r->n_lora; k++)
        unlink(r->lora_path[k]);
}

/* fusiond's logits for every prompt position: in one prefill step, or (stepwise) one token
 * per step as decoding runs. */
static float *run_with(const char *path, bool fusion, bool ref_ops, bool stepwise, int n_batch,
                       const ref_t *r, int cache_k, int cache_v, const llm_load_params_t *base)
{
    static const char *const ref_opt[] = { "ref=1", NULL };
    llm_load_params_t p;
    llm_load_params_default(&p);
    if (base)
        p = *base;
    p.path = path;
    p.cache_type_k = cache_k;
    p.cache_type_v = cache_v;
    p.fusion = fusion;
    p.threads = 1;
    p.backend_options = ref_ops ? ref_opt : NULL;
    p.n_batch_max = n_batch;
    p.lora = r->n_lora ? r->lora_paths : NULL;
    p.n_lora = r->n_lora;
    llm_model_t *m = NULL;
    char err[512];
    int rc = llm_load(&m, &p, err, sizeof(err));
    ck_assert_msg(rc == 0, "llm_load(%s): %s", path, err);
    ck_assert_str_eq(llm_hparams(m)->arch, r->arch);
    int slot;
    ck_assert_int_eq(llm_seq_alloc(m, &slot), 0);
    float *lg = malloc(sizeof(float) * (size_t)r->n_ids * N_VOCAB);
    ck_assert_ptr_nonnull(lg);
    int step = stepwise ? 1 : r->n_ids;
    for (int t = 0; t < r->n_ids; t += step) {
        llm_batch_entry_t e = { .slot = slot, .tokens = r->ids + t, .n_tokens = step,
                                .want_logits = step,
                                .lora = r->n_lora ? r->lora_scale : NULL };
        ck_assert_int_eq(llm_decode(m, &e, 1, lg + (size_t)t * N_VOCAB), 0);
    }
    /* a mixture of experts: the prompt reaches every expert of every layer, and each row
     * ran exactly n_expert_used of them */
    const llm_hparams_t *hp = llm_hparams(m);
    if (hp->n_expert > 0) {
        const uint64_t *cnt = llm_expert_counts(m);
        ck_assert_ptr_nonnull(cnt);
        for (int l = 0; l < hp->n_layer; l++) {
            uint64_t sum = 0;
            for (int x = 0; x < hp->n_expert; x++) {
                ck_assert_msg(cnt[l * hp->n_expert + x] > 0, "%s: expert %d of layer %d was "
                              "never chosen", path, x, l);
                sum += cnt[l * hp->n_expert + x];
            }
            ck_assert_uint_eq(sum, (uint64_t)r->n_ids * (uint64_t)hp->n_expert_used);
        }
    } else {
        ck_assert_ptr_null(llm_expert_counts(m));
    }
    llm_free(m);
    return lg;
}

static float *run_cache(const char *path, bool fusion, bool ref_ops, bool stepwise, int n_batch,
                        const ref_t *r, int cache_k, int cache_v)
{
    return run_with(path, fusion, ref_ops, stepwise, n_batch, r, cache_k, cache_v, NULL);
}

/* run() with the reference's own cache types. */
static float *run(const char *path, bool fusion, bool ref_ops, bool stepwise, int n_batch,
                  const ref_t *r)
{
    return run_cache(path, fusion, ref_ops, stepwise, n_batch, r, r->cache_k, r->cache_v);
}

/* The worst position's RMS difference over the RMS of llama.cpp's logits there. */
static double rel_err(const float *a, const ref_t *r, int *worst)
{
    double e = 0;
    for (int t = 0; t < r->n_ids; t++) {
        double d2 = 0, r2 = 0;
        for (int i = 0; i < N_VOCAB; i++) {
            double x = r->logits[(size_t)t * N_VOCAB + (size_t)i];
            double d = a[(size_t)t * N_VOCAB + (size_t)i] - x;
            d2 += d * d;
            r2 += x * x;
        }
        double v = sqrt(d2 / r2);
        if (v > e) {
            e = v;
            *worst = t;
        }
    }
    return e;
}

/* The bound of each weight type, relative RMS over the 512 logits.  The references use an
 * F32 KV cache, as fusiond does.  F32 weights: the two differ only in the order of float sums
 * (measured 3e-7 to 9e-7).  Elsewhere llama.cpp's CPU products round the activations to the
 * weights' dot type: F16 or BF16 (unit roundoff 2^-11, 2^-8), or 8-bit blocks (Q8_0 for
 * Q8_0/Q4_0, Q8_K for the K-quants).  fusiond's reference ops multiply unrounded activations,
 * its fast kernels round or not by path, so the bound is that rounding carried through the
 * 7 L + 1 = 15 products on a token's path: about sqrt(15) = 3.9 times one product's error,
 * with a margin (measured: F16 1.2e-3, BF16 6.4e-3, 8-bit 1.8e-2 to 3.0e-2; the fast K-quant
 * kernels round exactly as llama.cpp does and come within 4e-7).  A misread weight format is
 * off by tens of percent; a missing head norm or bias by more than 5%.
 * The newer types get the same 8-bit bound, for the same reason: both programs multiply the
 * very same quantized weights, so a type's own quantization error (Q2_K's is ten times
 * Q8_0's) cancels, and what is left is llama.cpp's rounding of the activations to its dot
 * type, 8-bit blocks for all of them (Q8_1 for Q4_1 and Q5_1; Q8_0 for Q5_0, IQ4_NL and
 * MXFP4; Q8_K for Q2_K, Q3_K and IQ4_XS).  Measured, worst of the five runs: Q4_1 2.1e-2,
 * Q5_0 2.0e-2, Q5_1 1.9e-2, Q2_K 2.6e-2, Q3_K 2.8e-2, IQ4_NL 1.9e-2, IQ4_XS 2.3e-2 (those
 * three are the reference ops'; their fast kernels come within 4e-7: they round as llama.cpp
 * does), MXFP4 1.6e-2, the IQ4_XS mix 2.2e-2,
 * qwen3moe with MXFP4 experts 1.7e-2, gpt-oss with MXFP4 experts 2.0e-2; gpt-oss in F32
 * 1.1e-6, under the F32 bound.  A mixture of experts also needs every row to pick the experts
 * llama.cpp picks: a row whose k-th and (k+1)-th experts score nearly alike can flip under
 * the two programs' different roundings (0.15 to 0.35 at that row; fusiond's expert counts
 * then differ between its own runs), so make-refs.sh's quantized MoE seeds are ones where
 * none is that close. */
static double bound(const char *arch, const char *type)
{
    /* Gemma's GELU: llama.cpp's CPU GELU reads a table indexed by the fp16 rounding of its
     * input and holding fp16 values (unit roundoff 2^-11 per element); fusiond computes it
     * in fp32.  Measured 3.1e-4 (gemma2) and 4.3e-4 (gemma3); reference ops that round as
     * that table does come 3 to 6 times closer.  The quantized types' bound covers it. */
    if (!strcmp(type, "F32") && !strncmp(arch, "gemma", 5))
        return 2e-3;
    if (!strcmp(type, "F32"))
        return 1e-5;
    if (!strcmp(type, "F16"))
        return 3e-3;
    if (!strcmp(type, "BF16"))
        return 1.5e-2;
    return 5e-2;
}

/* The fast kernels' bound where fusiond rounds the activations exactly as llama.cpp's CPU
 * products do: Q8_K blocks for the K-quants and IQ4_XS (fp32 scale), Q8_0 blocks for Q8_0,
 * Q4_0, Q5_0, IQ4_NL and MXFP4 (the scale amax / 127 stored in fp16, which for these small
 * random models' activations is often an fp16 subnormal: fusiond's XQ32 rows round it the
 * same way, on the normalized row when the norm is deferred, cpu_backend.c).  What is left
 * is the order of float sums, as for F32 weights: measured 1.9e-7 to 4.0e-7 (the fused plan:
 * prefill, stepwise, batches of 3) for the dense llama, qwen3 and phi3 models of those
 * types; before the fp16 scale the 32-element types were 1.8e-2 away, as far as unrounded
 * activations.  The unfused plan comes as close (1.8e-7 to 4.0e-7) except llama-q8_0's on
 * AVX2 (1.2e-2, the scalar table 1.9e-7): where an fp16 scale is a subnormal of a few bits,
 * a last-bit difference in the row before it moves the scale by a large step, so that run
 * keeps bound().  Not here either, so under bound(): Q4_1 and Q5_1 (llama.cpp's q8_1
 * blocks also carry fp16(d * sum of codes), which the XQ32 row has no room for: 1.9e-2),
 * Gemma (its GELU table, and 1.2e-2 to 2.9e-2 with 8-bit types, not yet explained),
 * mixtures of experts (0.4e-2 to 1.6e-2: the expert products' rows are not yet rounded on
 * llama.cpp's scale) and LoRA adapters (their own types).  The reference ops multiply
 * unrounded activations and keep bound(). */
static double ref_bound(const ref_t *r);
static double fast_bound(const ref_t *r)
{
    static const char *const exact[] = { "Q8_0", "Q4_0", "Q5_0", "IQ4_NL", "MXFP4", "Q2_K",
                                         "Q3_K", "Q4_K_M", "Q5_K_M", "Q6_K", "IQ4_XS",
                                         "IQ4_XS_MIX" };
    if (r->n_lora > 0 || r->spec.n_expert > 0 || !strncmp(r->arch, "gemma", 5) ||
        !strcmp(r->arch, "gpt-oss") || r->cache_k != GG_F32)
        return ref_bound(r);
    for (size_t i = 0; i < FD_ARRAY_LEN(exact); i++)
        if (!strcmp(r->type, exact[i]))
            return 1e-5;
    return ref_bound(r);
}

/* The bound of a reference with a KV cache other than F32 (F32 weights).  Both programs
 * round each K and V value to the cache type the same way (f16: round to nearest even; q8_0:
 * ggml's blocks, d = amax / 127 in fp16, codes rounded to nearest), and fusiond computes
 * around the rounded cache as llama.cpp does (cpu/ref_ops.h): the query rounded for the K
 * type (f16; q8_0 blocks with llama.cpp's fp16 scale),
 * p normalized and rounded to f16 for an f16 V.  The references turn off this llama.cpp's
 * Hadamard rotation of quantized caches (LLAMA_ATTN_ROT_DISABLE, tests/ref), which fusiond
 * does not do.  Measured, relative RMS of the logits: f16 2.6e-6 (llama, head_dim 64) and
 * 1.2e-4 (qwen3, head_dim 32) against llama.cpp's f16 run, where fusiond's f32 run is 8.7e-4
 * and 5.3e-4 away (the cache's own rounding); q8_0 3.8e-7 to 4.8e-7 (all five runs) against
 * llama.cpp's q8_0 run, where the f32 run is 1.6e-2 and 1.4e-2 away (and 1.0e-3 and 1.3e-3
 * while the query's block scale stayed fp32).  The bounds sit between, well
 * below the distance to the f32 run, so fusiond with the wrong cache type fails them
 * (test_cache_type_discriminates). */
static double cache_bound(int cache_type)
{
    return cache_type == GG_F16 ? 1.5e-4 : 1e-5;
}

static const char *const refs[] = {
    "llama-f32", "qwen2-f32", "qwen3-f32", "llama-f16", "llama-bf16", "llama-q8_0",
    "llama-q4_0", "llama-q4_k_m", "llama-q5_k_m", "llama-q6_k", "qwen3-q4_k_m",
    "llama3-ropefreqs-f32", "llama3-ropefreqs-q4_k_m", "phi3-f32", "phi3-longrope-short-f32",
    "phi3-longrope-long-f32", "phi3-q4_k_m", "gemma2-f32", "gemma3-f32", "gemma2-q8_0",
    "gemma3-q8_0", "gemma2-q4_k_m", "gemma3-q4_k_m", "gemma3-ropescale-f32", "gemma-f32",
    "gemma-q4_k_m", "qwen3moe-f32",
    "qwen3moe-q8_0", "qwen3moe-q4_k_m", "olmoe-f32", "olmoe-q4_k_m", "mixtral-f32",
    "mixtral-q4_0", "qwen2moe-f32", "qwen2moe-q4_k_m", "llama-hd64-f32", "qwen3-f32-kv-f16",
    "qwen3-f32-kv-q8_0", "llama-hd64-f32-kv-f16", "llama-hd64-f32-kv-q8_0", "llama-yarn-f32",
    "qwen2-yarn-f32", "qwen3-yarn-f32", "qwen3-yarn-q8_0", "qwen3-yarn-af-f32",
    "lora-llama-f32", "lora-llama-f32-scaled", "lora-qwen2-f32", "lora-phi3-f32",
    "lora-llama-q8_0", "lora-llama-q4_k_m", "llama-q4_1", "llama-q5_0", "llama-q5_1",
    "llama-q2_k", "llama-q3_k", "llama-iq4_nl", "llama-iq4_xs", "llama-mxfp4",
    "llama-iq4_xs_mix", "qwen3moe-mxfp4_moe", "gpt-oss-f32", "gpt-oss-mxfp4_moe",
};

/* A reference with adapters: every adapted matrix is three products (W x, A x, B (A x)), so
 * an F32 model's float-order differences double (measured 2.8e-6 llama, 1.4e-5 phi3 in
 * sub-batches of 3, against 1e-5 without adapters); an adapter of another type rounds the
 * activations of its two products as a weight of that type does (llama.cpp's CPU products),
 * on a term as large as the base product here (alpha / rank * scale up to 2.8): F16 as the
 * F16 models' bound (measured 6.1e-4), BF16 twice the BF16 models' (measured 1.9e-2).  The
 * terms dropped, alpha not divided by the rank or a wrong scale are 1.3 to 12 away
 * (test_lora_discriminates). */
static double ref_bound(const ref_t *r)
{
    if (r->cache_k != GG_F32)
        return cache_bound(r->cache_k);
    double b = bound(r->arch, r->type);
    if (r->n_lora > 0 && !strcmp(r->type, "F32"))
        b *= 2;
    for (int k = 0; k < r->n_lora; k++)
        b = fmax(b, strcmp(r->lora_type[k], "BF16") ? bound(r->arch, r->lora_type[k]) : 3e-2);
    return b;
}

START_TEST(test_matches_llamacpp)
{
    const char *name = refs[_i];
    ref_t r;
    load_ref(name, &r);
    const char *path = write_model(&r, name);
    const double b_ref = ref_bound(&r), b_fast = fast_bound(&r);
    /* the last variant: the prompt in sub-batches of 3 rows (later rows find the earlier
     * ones in the cache; Gemma's windows start inside a sub-batch's past) */
    for (int v = 0; v < 5; v++) {
        bool fusion = v != 1, ref_ops = v == 2, stepwise = v == 3;
        float *lg = run(path, fusion, ref_ops, stepwise, v == 4 ? 3 : 0, &r);
        const double b = ref_ops || !fusion ? b_ref : b_fast;
        int worst = 0;
        double e = rel_err(lg, &r, &worst), mx = 0;
        for (size_t i = 0; i < (size_t)r.n_ids * N_VOCAB; i++) /* for the reader only */
            mx = fmax(mx, fabs((double)lg[i] - r.logits[i]));
        fprintf(stderr, "%-16s fusion %-3s %-7s %-8s relative error %.2e (bound %.1e, "
                "position %d), max |logit difference| %.2e\n", name, fusion ? "on" : "off",
                ref_ops ? "ref ops" : "fast", stepwise ? "stepwise" : v == 4 ? "batch3" : "prefill",
                e, b, worst, mx);
        ck_assert_msg(e <= b, "%s fusion %d ref %d stepwise %d: logits at position %d differ "
                      "from llama.cpp's by %.3e relative (bound %.1e)", name, fusion, ref_ops,
                      stepwise, worst, e, b);
        free(lg);
    }
    free(r.logits);
    unlink_files(&r, path);
}
END_TEST

/* The LoRA references need the adapters' terms at their scales: fusiond without the terms
 * (scale 0), with alpha not divided by the rank, or with the scale applied twice, is outside
 * the bound; with them it is inside (test_matches_llamacpp). */
START_TEST(test_lora_discriminates)
{
    static const char *const names[] = { "lora-llama-f32", "lora-llama-f32-scaled",
                                         "lora-llama-q4_k_m" };
    for (size_t n = 0; n < FD_ARRAY_LEN(names); n++) {
        ref_t r;
        load_ref(names[n], &r);
        const char *path = write_model(&r, names[n]);
        const double b = ref_bound(&r);
        float scale[4];
        memcpy(scale, r.lora_scale, sizeof(scale));
        for (int v = 0; v < 3; v++) {
            for (int k = 0; k < r.n_lora; k++)
                r.lora_scale[k] = v == 0 ? 0.0f
                                : v == 1 ? scale[k] * (float)r.lora[k].rank
                                         : scale[k] * 2.0f;
            float *lg = run(path, true, false, false, 0, &r);
            int worst = 0;
            double e = rel_err(lg, &r, &worst);
            static const char *const what[] = { "without the LoRA term",
                                                "with alpha not divided by the rank",
                                                "with a wrong scale" };
            fprintf(stderr, "%-22s %-36s relative error %.2e (bound %.1e)\n", names[n],
                    what[v], e, b);
            ck_assert_msg(e > 10 * b, "%s %s: within %.3e of llama.cpp (bound %.1e)",
                          names[n], what[v], e, b);
            free(lg);
        }
        free(r.logits);
        unlink_files(&r, path);
    }
}
END_TEST

/* The comparison can fail: a model written from another seed does not match, nor do the
 * qwen3 reference's weights run as llama (no head norms, adjacent RoPE pairs). */
START_TEST(test_discriminates)
{
    ref_t r;
    load_ref("qwen3-f32", &r);
    r.spec.seed += 1;
    const char *path = write_model(&r, "other-seed");
    float *lg = run(path, true, false, false, 0, &r);
    int worst = 0;
    double e = rel_err(lg, &r, &worst);
    ck_assert_msg(e > 0.3, "another seed's model is within %.3e of the reference", e);
    free(lg);
    unlink(path);
    free(r.logits);

    load_ref("qwen3-f32", &r);
    snprintf(r.arch, sizeof(r.arch), "llama");
    r.spec.arch = r.arch;
    path = write_model(&r, "as-llama");
    lg = run(path, true, false, false, 0, &r);
    e = rel_err(lg, &r, &worst);
    ck_assert_msg(e > 0.05, "the qwen3 reference is matched by its weights run as llama (%.3e)",
                  e);
    free(lg);
    unlink(path);
    free(r.logits);
}
END_TEST

/* The YaRN references tell YaRN's parts apart: run as linear scaling, without the ramp's
 * blend (ext_factor 0, YaRN's magnitude kept through the attention factor), with the ramp's
 * ends moved (betas 8 and 4), without the magnitude (the file's rope.scaling.attn_factor
 * dividing it out), or without the file's attention factor (qwen3-yarn-af's 0.75), fusiond
 * misses llama.cpp's logits by far more than the bound; and an attention factor override,
 * which llama.cpp drops under a YaRN blend, changes nothing. */
START_TEST(test_yarn_discriminates)
{
    static const char *const names[] = { "llama-yarn-f32", "qwen2-yarn-f32", "qwen3-yarn-f32",
                                         "qwen3-yarn-af-f32" };
    for (size_t i = 0; i < FD_ARRAY_LEN(names); i++) {
        ref_t r;
        load_ref(names[i], &r);
        const double b = bound(r.arch, r.type);
        const float mscale = 1.0f + 0.1f * logf(r.spec.rope_scale);
        for (int v = 0; v < 6; v++) {
            if (v == 5 && !(r.spec.attn_factor > 0))
                continue;
            llm_load_params_t p;
            llm_load_params_default(&p);
            const char *what = "";
            ref_t w = r;
            switch (v) {
            case 0: what = "linear"; p.rope.scaling = LLM_ROPE_SCALING_LINEAR; break;
            case 1:
                what = "no ramp";
                p.rope.set = LLM_YARN_EXT | LLM_YARN_ATTN;
                p.rope.yarn_ext_factor = 0;
                p.rope.yarn_attn_factor = mscale;
                break;
            case 2:
                what = "moved ramp";
                p.rope.set = LLM_YARN_BETA_FAST | LLM_YARN_BETA_SLOW;
                p.rope.yarn_beta_fast = 8;
                p.rope.yarn_beta_slow = 4;
                break;
            case 3:
                what = "no magnitude";
                w.spec.attn_factor = (r.spec.attn_factor > 0 ? r.spec.attn_factor : 1) / mscale;
                break;
            case 5: what = "no attn_factor"; w.spec.attn_factor = 0; break;
            case 4:
                what = "attn override";
                p.rope.set = LLM_YARN_ATTN;
                p.rope.yarn_attn_factor = 2;
                break;
            }
            const char *path = write_model(&w, "yarn-broken");
            float *lg = run_with(path, true, false, false, 0, &r, GG_F32, GG_F32, &p);
            int worst = 0;
            double e = rel_err(lg, &r, &worst);
            fprintf(stderr, "%-16s %-13s relative error %.2e (bound %.1e)\n", names[i], what, e,
                    b);
            if (v == 4)
                ck_assert_msg(e <= b, "%s: %s: %.3e", names[i], what, e);
            else
                ck_assert_msg(e > 10 * b, "%s %s: within %.3e of llama.cpp", names[i], what, e);
            free(lg);
            unlink(path);
        }
        free(r.logits);
    }
}
END_TEST

/* gpt-oss's sliding window matters to its reference (a 48-token prompt, a window of 16 on
 * the even layers): fusiond with a window one shorter or one longer misses llama.cpp's
 * logits by far more than the bound (measured 0.64 and 0.93). */
START_TEST(test_gptoss_window_discriminates)
{
    ref_t r;
    load_ref("gpt-oss-f32", &r);
    const double b = bound(r.arch, r.type);
    const int swa = r.spec.n_swa, wrong[] = { swa - 1, swa + 1 };
    ck_assert_int_gt(r.n_ids, swa + 8);
    for (size_t k = 0; k < FD_ARRAY_LEN(wrong); k++) {
        ref_t w = r;
        w.spec.n_swa = wrong[k];
        const char *path = write_model(&w, "gptoss-window");
        float *lg = run(path, true, false, false, 0, &r);
        int worst = 0;
        double e = rel_err(lg, &r, &worst);
        fprintf(stderr, "gpt-oss-f32 with a window of %d, not %d: relative error %.2e (bound "
                "%.1e)\n", wrong[k], swa, e, b);
        ck_assert_msg(e > 10 * b, "gpt-oss-f32 with a window of %d: within %.3e of llama.cpp",
                      wrong[k], e);
        free(lg);
        unlink(path);
    }
    free(r.logits);
}
END_TEST

/* The cache references tell the cache types apart: fusiond with an F32 cache is outside the
 * bound of llama.cpp's f16 and q8_0 runs (and with an f16 cache outside q8_0's), so a cache
 * that silently kept F32, or rounded to another type, would fail test_matches_llamacpp. */
START_TEST(test_cache_type_discriminates)
{
    static const struct { const char *name; int k, v; } wrong[] = {
        { "qwen3-f32-kv-f16", GG_F32, GG_F32 },       { "qwen3-f32-kv-q8_0", GG_F32, GG_F32 },
        { "llama-hd64-f32-kv-f16", GG_F32, GG_F32 },  { "llama-hd64-f32-kv-q8_0", GG_F32, GG_F32 },
        { "llama-hd64-f32-kv-q8_0", GG_F16, GG_F16 }, { "llama-hd64-f32-kv-f16", GG_Q8_0, GG_Q8_0 },
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(wrong); i++) {
        ref_t r;
        load_ref(wrong[i].name, &r);
        const char *path = write_model(&r, "wrong-cache");
        for (int ref_ops = 0; ref_ops < 2; ref_ops++) {
            float *lg = run_cache(path, true, ref_ops, false, 0, &r, wrong[i].k, wrong[i].v);
            int worst = 0;
            double e = rel_err(lg, &r, &worst), b = cache_bound(r.cache_k);
            fprintf(stderr, "%-22s with a %s cache (%s): relative error %.2e (bound %.1e)\n",
                    wrong[i].name, fb_kv_type_name(wrong[i].k), ref_ops ? "ref ops" : "fast", e, b);
            ck_assert_msg(e > b, "%s: fusiond with a %s cache is within the bound (%.3e <= %.0e)",
                          wrong[i].name, fb_kv_type_name(wrong[i].k), e, b);
            free(lg);
        }
        unlink(path);
        free(r.logits);
    }
}
END_TEST

/* Loads the model at path with the defaults on one thread (*m NULL on failure). */
static int load_file(const char *path, llm_model_t **m, char *err, size_t errlen)
{
    llm_load_params_t p;
    llm_load_params_default(&p);
    p.path = path;
    p.threads = 1;
    *m = NULL;
    return llm_load(m, &p, err, errlen);
}

/* Writes the model of spec s to memory (the caller frees it). */
static uint8_t *spec_file(gguf_w_llama_t *s, size_t *size)
{
    gguf_w_t *w;
    ck_assert_int_eq(gguf_w_new(&w), 0);
    char err[512];
    ck_assert_msg(gguf_w_llama_add(w, s, err, sizeof(err)) == 0, "%s", err);
    uint8_t *file;
    ck_assert_int_eq(gguf_w_write_mem(w, &file, size, err, sizeof(err)), 0);
    gguf_w_free(w);
    return file;
}

/* Loads a copy of a qwen3 file with one change at the first occurrence of `find`: `repl`
 * (same length) written over it, or, with repl NULL, the 64-bit ne[0] of the tensor named
 * there halved.  Returns the loader's error. */
static int load_patched(const uint8_t *file, size_t size, const char *find, const char *repl,
                        char *err, size_t errlen)
{
    uint8_t *buf = malloc(size);
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, file, size);
    size_t n = strlen(find);
    uint8_t *at = memmem(buf, size, find, n);
    ck_assert_msg(at != NULL, "'%s' is not in the file", find);
    if (repl) {
        memcpy(at, repl, n);
    } else {
        /* tensor info: name, u32 n_dims, i64 ne[0] ... */
        int64_t ne0;
        memcpy(&ne0, at + n + 4, 8);
        ne0 /= 2;
        memcpy(at + n + 4, &ne0, 8);
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/patched.gguf", tmpdir);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(buf, 1, size, f), size);
    fclose(f);
    free(buf);
    llm_model_t *m;
    int rc = load_file(path, &m, err, errlen);
    ck_assert_ptr_null(m);
    unlink(path);
    return rc;
}

/* load_patched with `find` renamed to `repl` is refused: FD_EFORMAT, "<find> is missing". */
static void expect_missing(const uint8_t *file, size_t size, const char *find, const char *repl)
{
    char err[512], want[256];
    int rc = load_patched(file, size, find, repl, err, sizeof(err));
    ck_assert_int_eq(rc, FD_EFORMAT);
    snprintf(want, sizeof(want), "%s is missing", find);
    ck_assert_msg(strstr(err, want), "error: %s", err);
}

/* load_patched with tensor `name`'s ne[0] halved is refused, naming it. */
static void expect_halved(const uint8_t *file, size_t size, const char *name)
{
    char err[512];
    int rc = load_patched(file, size, name, NULL, err, sizeof(err));
    ck_assert_msg(rc != 0 && strstr(err, name), "error: %s", err);
}

/* A qwen3 file missing a head norm, or with one of the wrong length, is refused naming it. */
START_TEST(test_qwen3_bad_norm)
{
    gguf_w_llama_t s = { .name = "bad", .arch = "qwen3", .n_embd = 64, .n_layer = 2,
                         .n_head = 4, .n_head_kv = 2, .head_dim = 32, .n_ff = 96,
                         .n_vocab = N_VOCAB, .n_ctx = 64, .rope_base = 1e4f, .norm_eps = 1e-6f,
                         .wtype = GG_F32, .seed = 3 };
    size_t size;
    uint8_t *file = spec_file(&s, &size);

    expect_missing(file, size, "blk.1.attn_k_norm.weight", "blk.1.attn_k_form.weight");
    expect_halved(file, size, "blk.0.attn_q_norm.weight");
    free(file);
}
END_TEST

/* Gemma files: a missing post norm is refused naming it, a gemma3 file without its sliding
 * window (a key llama.cpp requires) naming the key, and other Gemma generations (gemma3n,
 * or an unknown variant) naming the architecture. */
START_TEST(test_gemma_bad)
{
    gguf_w_llama_t s = { .name = "bad", .arch = "gemma3", .n_embd = 64, .n_layer = 2,
                         .n_head = 4, .n_head_kv = 2, .head_dim = 32, .n_ff = 96,
                         .n_vocab = N_VOCAB, .n_ctx = 64, .rope_base = 1e6f, .norm_eps = 1e-6f,
                         .wtype = GG_F32, .seed = 3, .tied = true, .n_swa = 4 };
    char err[512];
    size_t size;
    uint8_t *file = spec_file(&s, &size);

    expect_missing(file, size, "blk.1.post_ffw_norm.weight", "blk.1.post_ffw_form.weight");
    expect_halved(file, size, "blk.0.post_attention_norm.weight");
    expect_missing(file, size, "gemma3.attention.sliding_window",
                   "gemma3.attention.sliding_windoh");
    int rc = load_patched(file, size, "gemma3", "gemmax", err, sizeof(err));
    ck_assert_int_eq(rc, FD_EUNSUP);
    ck_assert_msg(strstr(err, "architecture 'gemmax' is not supported"), "error: %s", err);
    free(file);

    /* gemma3n: refused on its architecture alone, before any other key is read */
    gguf_w_t *w;
    ck_assert_int_eq(gguf_w_new(&w), 0);
    ck_assert_int_eq(gguf_w_add_str(w, "general.architecture", "gemma3n"), 0);
    ck_assert_int_eq(gguf_w_write_mem(w, &file, &size, err, sizeof(err)), 0);
    gguf_w_free(w);
    rc = load_patched(file, size, "gemma3n", "gemma3n", err, sizeof(err));
    ck_assert_int_eq(rc, FD_EUNSUP);
    ck_assert_msg(strstr(err, "architecture 'gemma3n' is not supported") &&
                  strstr(err, "gemma2, gemma3"), "error: %s", err);
    free(file);
}
END_TEST

/* Loads a gemma model written from s, with one extra metadata key added by `extra` (or
 * none), and returns it (the caller frees it). */
static llm_model_t *load_gemma(gguf_w_llama_t *s, void (*extra)(gguf_w_t *w))
{
    gguf_w_t *w;
    char err[512], path[4096];
    ck_assert_int_eq(gguf_w_new(&w), 0);
    ck_assert_int_eq(gguf_w_llama_add(w, s, err, sizeof(err)), 0);
    if (extra)
        extra(w);
    snprintf(path, sizeof(path), "%s/hp.gguf", tmpdir);
    ck_assert_int_eq(gguf_w_write_file(w, path, err, sizeof(err)), 0);
    gguf_w_free(w);
    llm_model_t *m;
    ck_assert_msg(load_file(path, &m, err, sizeof(err)) == 0, "%s", err);
    unlink(path);
    return m;
}

static void pattern_u32(gguf_w_t *w)
{
    ck_assert_int_eq(gguf_w_add_u32(w, "gemma3.attention.sliding_window_pattern", 3), 0);
}

static void pattern_bools(gguf_w_t *w)
{
    const uint8_t b[6] = { 1, 0, 1, 0, 0, 1 };
    ck_assert_int_eq(gguf_w_add_arr(w, "gemma3.attention.sliding_window_pattern", GGUF_BOOL, b,
                                    6), 0);
}

/* llama.cpp's Gemma hyperparameters: the local layers (Gemma 2 every other one from layer 0,
 * Gemma 3 five of six, or the file's attention.sliding_window_pattern as a period or a list),
 * the query scale (1/sqrt(n_embd / n_head) for the 27B sizes, 46 and 62 layers, else
 * 1/sqrt(head_dim)), the soft-caps' defaults (Gemma 2: 50 and 30; Gemma 3: none) and the
 * local RoPE base (Gemma 3: 10000). */
START_TEST(test_gemma_hparams)
{
    gguf_w_llama_t s = { .name = "hp", .arch = "gemma3", .n_embd = 64, .n_layer = 6,
                         .n_head = 4, .n_head_kv = 2, .head_dim = 32, .n_ff = 64,
                         .n_vocab = N_VOCAB, .n_ctx = 64, .rope_base = 1e6f, .norm_eps = 1e-6f,
                         .wtype = GG_F32, .seed = 3, .tied = true, .n_swa = 4 };
    llm_model_t *m = load_gemma(&s, NULL);
    const llm_hparams_t *hp = llm_hparams(m);
    ck_assert(hp->gemma && hp->qk_norm);
    ck_assert_int_eq(hp->n_swa_layers, 5);
    ck_assert_int_eq(hp->swa_period, 6);
    ck_assert_float_eq(hp->attn_scale, 1.0f / sqrtf(32.0f));
    ck_assert_float_eq(hp->final_softcap, 0.0f);
    ck_assert_float_eq(hp->attn_softcap, 0.0f);
    ck_assert_float_eq(hp->rope_freq_base_swa, 10000.0f);
    llm_free(m);
    m = load_gemma(&s, pattern_u32);
    ck_assert_int_eq(llm_hparams(m)->n_swa_layers, 4); /* 0 1 local, 2 global, 3 4 local */
    llm_free(m);
    m = load_gemma(&s, pattern_bools);
    ck_assert_int_eq(llm_hparams(m)->n_swa_layers, 3);
    ck_assert_int_eq(llm_hparams(m)->swa_period, 0);
    llm_free(m);
    s.n_layer = 62; /* Gemma 3 27B's depth: n_embd / n_head = 16 */
    m = load_gemma(&s, NULL);
    ck_assert_float_eq(llm_hparams(m)->attn_scale, 1.0f / sqrtf(16.0f));
    llm_free(m);

    s.arch = "gemma2";
    s.n_layer = 5;
    s.n_swa = 0; /* absent: llama.cpp's 4096 */
    m = load_gemma(&s, NULL);
    hp = llm_hparams(m);
    ck_assert(hp->gemma && !hp->qk_norm);
    ck_assert_int_eq(hp->n_swa, 4096);
    ck_assert_int_eq(hp->n_swa_layers, 3); /* 0, 2, 4 */
    ck_assert_float_eq(hp->attn_softcap, 50.0f);
    ck_assert_float_eq(hp->final_softcap, 30.0f);
    ck_assert_float_eq(hp->rope_freq_base_swa, 1e6f); /* Gemma 2: the file's base */
    ck_assert_float_eq(hp->attn_scale, 1.0f / sqrtf(32.0f));
    llm_free(m);
    s.n_layer = 46; /* Gemma 2 27B's depth */
    m = load_gemma(&s, NULL);
    ck_assert_float_eq(llm_hparams(m)->attn_scale, 1.0f / sqrtf(16.0f));
    llm_free(m);
}
END_TEST

/* Gemma's tokenizer (SentencePiece with no space prefix, user-defined pieces matched whole,
 * <end_of_turn> made a control token as llama.cpp makes it, byte fallback): on the
 * Gemma-style vocabulary of tests/data/llamacpp-tok-gemma.txt every text encodes to
 * llama.cpp's ids, with and without special-token parsing; the model loads with it. */
START_TEST(test_gemma_tokens)
{
    size_t len;
    char *buf = tu_slurp(tu_src("tests/data/llamacpp-tok-gemma.txt"), &len);
    ref_t r;
    memset(&r, 0, sizeof(r));
    llm_model_t *m = NULL;
    int cases = 0;
    for (char *cur = buf, *line; (line = tu_next_line(&cur));) {
        if (!strncmp(line, "model ", 6)) {
            parse_model(&r, line + 6);
            ck_assert(r.spec.gemma_vocab);
            const char *path = write_model(&r, "tok-gemma");
            char err[512];
            ck_assert_msg(load_file(path, &m, err, sizeof(err)) == 0, "%s", err);
            unlink(path);
            continue;
        }
        ck_assert_ptr_nonnull(m);
        const tok_t *t = llm_tok(m);
        int a, b;
        if (sscanf(line, "bos %d eos %d", &a, &b) == 2) {
            ck_assert_int_eq(tok_bos(t), a);
            ck_assert_int_eq(tok_eos(t), b);
            ck_assert(tok_add_bos(t));
            continue;
        }
        int special, n_want;
        char hex[512];
        ck_assert_msg(sscanf(line, "tokens %d %511s %d", &special, hex, &n_want) == 3,
                      "bad line '%.60s'", line);
        char text[256];
        size_t tl = 0;
        for (const char *h = hex; strcmp(hex, "-") && h[0] && h[1]; h += 2) {
            unsigned v;
            ck_assert_int_eq(sscanf(h, "%2x", &v), 1);
            ck_assert_uint_lt(tl, sizeof(text));
            text[tl++] = (char)v;
        }
        int32_t got[256], want[256];
        const char *p = line;
        for (int skip = 0; skip < 4; skip++)
            p = strchr(p, ' ') ? strchr(p, ' ') + 1 : p + strlen(p);
        for (int i = 0; i < n_want; i++) {
            char *end;
            want[i] = (int32_t)strtol(p, &end, 10);
            ck_assert_msg(end != p, "short line '%.60s'", line);
            p = end;
        }
        size_t n = 0;
        ck_assert_int_eq(tok_encode(t, text, tl, false, special != 0, got, 256, &n), 0);
        char gs[1024] = "", ws[1024] = "";
        for (size_t i = 0; i < n; i++)
            snprintf(gs + strlen(gs), sizeof(gs) - strlen(gs), " %d", got[i]);
        for (int i = 0; i < n_want; i++)
            snprintf(ws + strlen(ws), sizeof(ws) - strlen(ws), " %d", want[i]);
        ck_assert_msg(n == (size_t)n_want && memcmp(got, want, n * sizeof(int32_t)) == 0,
                      "'%.*s' (special %d): fusiond%s, llama.cpp%s", (int)tl, text, special,
                      gs, ws);
        cases++;
    }
    ck_assert_int_eq(cases, 24);
    llm_free(m);
    free(r.logits);
    free(buf);
}
END_TEST

/* Mixture of experts, several sequences in one step: routing is per row, so two sequences
 * of the qwen3moe reference's prompt (the whole prompt and its first 10 tokens), prefilled
 * together and then decoded a token each per step, give each row llama.cpp's logits. */
START_TEST(test_moe_batched)
{
    ref_t r;
    load_ref("qwen3moe-f32", &r);
    const char *path = write_model(&r, "moe-batched");
    for (int fusion = 0; fusion < 2; fusion++) {
        llm_load_params_t p;
        llm_load_params_default(&p);
        p.path = path;
        p.fusion = fusion;
        p.threads = 2;
        p.n_seq_max = 2;
        llm_model_t *m = NULL;
        char err[512];
        ck_assert_msg(llm_load(&m, &p, err, sizeof(err)) == 0, "%s", err);
        int a, b;
        ck_assert_int_eq(llm_seq_alloc(m, &a), 0);
        ck_assert_int_eq(llm_seq_alloc(m, &b), 0);
        const int na = 16, nb = 10;
        float *lg = malloc(sizeof(float) * (size_t)(na + nb) * N_VOCAB);
        ck_assert_ptr_nonnull(lg);
        llm_batch_entry_t e[2] = {
            { .slot = a, .tokens = r.ids, .n_tokens = na, .want_logits = na },
            { .slot = b, .tokens = r.ids, .n_tokens = nb, .want_logits = nb },
        };
        ck_assert_int_eq(llm_decode(m, e, 2, lg), 0);
        double worst = 0;
        for (int row = 0; row < na + nb; row++) {
            int t = row < na ? row : row - na;
            for (int i = 0; i < N_VOCAB; i++)
                worst = fmax(worst, fabs(lg[(size_t)row * N_VOCAB + (size_t)i] -
                                         r.logits[(size_t)t * N_VOCAB + (size_t)i]));
        }
        /* then one token each per step: a at na.., b at nb.. */
        for (int step = 0; step < 6; step++) {
            e[0] = (llm_batch_entry_t){ .slot = a, .tokens = r.ids + na + step, .n_tokens = 1,
                                        .want_logits = 1 };
            e[1] = (llm_batch_entry_t){ .slot = b, .tokens = r.ids + nb + step, .n_tokens = 1,
                                        .want_logits = 1 };
            ck_assert_int_eq(llm_decode(m, e, 2, lg), 0);
            for (int i = 0; i < N_VOCAB; i++) {
                worst = fmax(worst, fabs(lg[i] - r.logits[(size_t)(na + step) * N_VOCAB +
                                                          (size_t)i]));
                worst = fmax(worst, fabs(lg[N_VOCAB + i] -
                                         r.logits[(size_t)(nb + step) * N_VOCAB + (size_t)i]));
            }
        }
        fprintf(stderr, "qwen3moe-f32 two sequences, fusion %s: max |logit difference| %.2e\n",
                fusion ? "on" : "off", worst);
        ck_assert_msg(worst < 1e-4, "batched MoE rows differ from llama.cpp's by %g", worst);
        free(lg);
        llm_free(m);
    }
    unlink(path);
    free(r.logits);
}
END_TEST

/* Writes a reference's model to memory. */
static uint8_t *moe_file(const char *name, size_t *size)
{
    ref_t r;
    load_ref(name, &r);
    free(r.logits);
    return spec_file(&r.spec, size);
}

/* Damaged mixture-of-experts files are refused with a message naming what is wrong: more
 * experts used than there are, a missing router, an expert tensor of the wrong shape. */
START_TEST(test_moe_bad_files)
{
    size_t size;
    uint8_t *file = moe_file("qwen3moe-f32", &size);
    char err[512];
    /* expert_used_count (4) -> 9 of 8: the key's value follows its name and u32 type */
    const char *key = "qwen3moe.expert_used_count";
    uint8_t *at = memmem(file, size, key, strlen(key));
    ck_assert_ptr_nonnull(at);
    uint32_t v;
    memcpy(&v, at + strlen(key) + 4, 4);
    ck_assert_uint_eq(v, 4);
    v = 9;
    memcpy(at + strlen(key) + 4, &v, 4);
    int rc = load_patched(file, size, "blk.0.attn_q.weight", "blk.0.attn_q.weight", err,
                          sizeof(err));
    ck_assert_int_eq(rc, FD_EFORMAT);
    ck_assert_msg(strstr(err, "expert_used_count 9 exceeds expert_count 8"), "error: %s", err);
    v = 4;
    memcpy(at + strlen(key) + 4, &v, 4);

    expect_missing(file, size, "blk.1.ffn_gate_inp.weight", "blk.1.ffn_gate_inq.weight");

    expect_halved(file, size, "blk.0.ffn_up_exps.weight");

    expect_missing(file, size, "blk.1.ffn_down_exps.weight", "blk.1.ffn_down_exps.weighz");
    free(file);

    /* qwen2moe without its shared expert's gate, or with a shared expert of the wrong width */
    file = moe_file("qwen2moe-f32", &size);
    expect_missing(file, size, "blk.1.ffn_gate_inp_shexp.weight",
                   "blk.1.ffn_gate_inp_shexq.weight");
    expect_halved(file, size, "blk.0.ffn_up_shexp.weight");
    free(file);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("llamacpp_ref");
    TCase *c = tcase_create("logits");
    tcase_set_timeout(c, 120);
    tcase_add_loop_test(c, test_matches_llamacpp, 0, (int)FD_ARRAY_LEN(refs));
    tcase_add_test(c, test_discriminates);
    tcase_add_test(c, test_lora_discriminates);
    tcase_add_test(c, test_cache_type_discriminates);
    tcase_add_test(c, test_gptoss_window_discriminates);
    tcase_add_test(c, test_yarn_discriminates);
    tcase_add_test(c, test_qwen3_bad_norm);
    tcase_add_test(c, test_gemma_bad);
    tcase_add_test(c, test_gemma_tokens);
    tcase_add_test(c, test_gemma_hparams);
    tcase_add_test(c, test_moe_batched);
    tcase_add_test(c, test_moe_bad_files);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    int rc = tu_run(suite());
    rmdir(tmpdir);
    return rc;
}
