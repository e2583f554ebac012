/* model.c: loading a Llama-family GGUF model (llama, qwen2, qwen3, phi3, gemma2, gemma3, and
 * the mixture-of-experts qwen3moe, qwen2moe, olmoe and Mixtral-style llama), its KV cache
 * slots and the
 * batched decoder step (model.h).  Every tensor is checked here (presence, type, shape)
 * before anything is prepared, so a bad file fails with a message naming the tensor and no
 * backend work started.  Weights stay in the GGUF mapping; only the norm vectors of non-F32
 * files are converted, and fusion/ keeps what folding creates. */
#include "engine/model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"
#include "common/log.h"
#include "fusion/encoder.h"
#include "fusion/plan.h"
#include "engine/lora.h"

typedef struct slot {
    bool used;
    int len;
    int lo;                          /* rings: the first position they still hold */
    int n_ck;                        /* context checkpoints held (llm_seq_checkpoint) */
} slot_t;

/* A context checkpoint: a host copy of the local layers' K and V rows of positions
 * a .. last - 1, from which the sequence can go on at any position in [first, last] (the
 * window before each lies in those rows).  buf holds, for each local layer in order, its
 * last - a K rows then its V rows. */
typedef struct ckpt {
    int first, last, a;
    int last_saved;                  /* last when saved: buf holds last_saved - a rows */
    uint64_t stamp;                  /* when saved: the oldest goes first */
    void *buf;
    size_t bytes;
} ckpt_t;

struct llm_model {
    gguf_t *g;
    tok_t *tok;
    fb_backend_t *be;
    fz_plan_t *plan;
    llm_hparams_t hp;
    fz_model_src_t src;
    fz_layer_src_t *layers;
    float **owned;                   /* norm / bias vectors converted to fp32 */
    int n_owned, cap_owned;
    bool fusion;
    int n_seq_max, n_batch_max;
    void **kc, **vc;                 /* per layer, backend memory */
    int type_k, type_v;              /* enum gg_type of the cache */
    size_t cache_bytes;              /* of kc and vc over all layers */
    int ring;                        /* llm_swa_ring */
    int64_t *rings;                  /* per layer: ring rows a slot, 0: n_ctx (fz_kv_t.ring) */
    slot_t *slots;
    int n_ckpt;                      /* context checkpoints a slot keeps (0: none) */
    ckpt_t *ckpts;                   /* n_seq_max * n_ckpt, slot s's from s * n_ckpt */
    size_t ckpt_bytes;               /* their buffers' bytes now */
    uint64_t ckpt_stamp;
    int32_t *ids, *pos;              /* llm_decode scratch, n_batch_max */
    fz_seq_t *seqs;                  /* n_seq_max */
    fb_weight_t *experts;            /* n_layer * 3 * n_expert views: gate, up, down */
    lora_file_t *lora;               /* n_lora adapters */
    int n_lora;
    fz_lora_mat_t *lora_mats;        /* all adapters' matrices, for the plan */
    /* an encoder (bert) instead of the plan and the cache */
    fz_enc_t *enc;
    fz_enc_layer_src_t *enc_layers;
    fz_enc_seq_t *enc_seqs;          /* n_seq_max */
    int32_t *enc_types;              /* n_batch_max */
    int32_t sep;                     /* [SEP]: pairs' token types change after it */
};

void llm_load_params_default(llm_load_params_t *p)
{
    memset(p, 0, sizeof(*p));
    p->backend = "cpu";
    p->fusion = true;
    p->softmax_mode = FB_SOFTMAX_MAXSUM;
    p->n_seq_max = 1;
    p->n_batch_max = 512;
}

const llm_hparams_t *llm_hparams(const llm_model_t *m) { return &m->hp; }
const tok_t *llm_tok(const llm_model_t *m) { return m->tok; }
const gguf_t *llm_gguf(const llm_model_t *m) { return m->g; }
fb_backend_t *llm_backend(const llm_model_t *m) { return m->be; }
bool llm_fusion(const llm_model_t *m) { return m->fusion; }
int llm_softmax_mode(const llm_model_t *m)
{
    return m->plan ? fz_plan_softmax_mode(m->plan) : FB_SOFTMAX_REF;
}
int llm_n_seq_max(const llm_model_t *m) { return m->n_seq_max; }
int llm_n_batch_max(const llm_model_t *m) { return m->n_batch_max; }
int llm_cache_type_k(const llm_model_t *m) { return m->type_k; }
int llm_cache_type_v(const llm_model_t *m) { return m->type_v; }
size_t llm_cache_bytes(const llm_model_t *m) { return m->cache_bytes; }
int llm_swa_ring(const llm_model_t *m) { return m->ring; }
int llm_ctx_checkpoints(const llm_model_t *m) { return m->n_ckpt; }
size_t llm_ckpt_bytes(const llm_model_t *m) { return m->ckpt_bytes; }
const uint64_t *llm_expert_counts(const llm_model_t *m)
{
    return m->plan ? fz_plan_expert_counts(m->plan) : NULL;
}
int llm_n_lora(const llm_model_t *m) { return m->n_lora; }
const char *llm_lora_path(const llm_model_t *m, int i)
{
    return i >= 0 && i < m->n_lora ? gguf_path(m->lora[i].g) : NULL;
}
float llm_lora_alpha(const llm_model_t *m, int i)
{
    return i >= 0 && i < m->n_lora ? m->lora[i].alpha : 0.0f;
}
int llm_lora_n_mats(const llm_model_t *m, int i)
{
    return i >= 0 && i < m->n_lora ? m->lora[i].n_mats : 0;
}

/* Opens the adapters and hands their matrices to the plan (m->src.lora). */
static int load_lora(llm_model_t *m, const llm_load_params_t *p, char *err, size_t errlen)
{
    if (p->n_lora <= 0)
        return 0;
    m->lora = calloc((size_t)p->n_lora, sizeof(*m->lora));
    if (!m->lora)
        return -ENOMEM;
    const llm_hparams_t *hp = &m->hp;
    lora_base_t base = { .g = m->g, .arch = hp->arch, .n_layer = hp->n_layer,
                         .n_q = hp->n_head * hp->head_dim, .n_kv = hp->n_head_kv * hp->head_dim,
                         .n_ff = hp->n_ff, .fused_gate_up = hp->fused_gate_up,
                         .moe = hp->n_expert > 0 };
    int total = 0, rc;
    for (int i = 0; i < p->n_lora; i++) {
        if (!p->lora[i]) {
            snprintf(err, errlen, "LoRA adapter %d has no path", i);
            return -EINVAL;
        }
        if ((rc = lora_open(&m->lora[i], p->lora[i], i, &base, err, errlen)))
            return rc;
        m->n_lora++;
        total += m->lora[i].n_mats;
    }
    m->lora_mats = calloc((size_t)FD_MAX(total, 1), sizeof(*m->lora_mats));
    if (!m->lora_mats)
        return -ENOMEM;
    int k = 0;
    for (int i = 0; i < m->n_lora; i++)
        for (int j = 0; j < m->lora[i].n_mats; j++)
            m->lora_mats[k++] = m->lora[i].mats[j];
    m->src.n_lora = m->n_lora;
    m->src.n_lora_mats = total;
    m->src.lora = m->lora_mats;
    return 0;
}

static void free_lora(llm_model_t *m)
{
    for (int i = 0; i < m->n_lora; i++)
        lora_close(&m->lora[i]);
    free(m->lora);
    free(m->lora_mats);
    m->lora = NULL;
    m->lora_mats = NULL;
    m->n_lora = 0;
}

/* ---- hyperparameters ---- */

static int get_u32(const gguf_t *g, const char *arch, const char *key, bool need, uint32_t dflt,
                   uint32_t *out, char *err, size_t errlen)
{
    char k[128];
    snprintf(k, sizeof(k), "%s.%s", arch, key);
    int rc = gguf_get_u32(g, k, out);
    if (rc == -ENOENT && !need) {
        *out = dflt;
        return 0;
    }
    if (rc == -ENOENT) {
        snprintf(err, errlen, "%s: metadata key %s is missing", gguf_path(g), k);
        rc = FD_EFORMAT;
    } else if (rc)
        snprintf(err, errlen, "%s: metadata key %s: %s", gguf_path(g), k, fd_strerror(rc));
    else if (*out == 0 || *out > (1u << 30)) {
        snprintf(err, errlen, "%s: metadata key %s = %u is out of range", gguf_path(g), k, *out);
        rc = FD_ERANGE;
    }
    return rc;
}

static int get_f32(const gguf_t *g, const char *arch, const char *key, bool need, float dflt,
                   float *out, char *err, size_t errlen)
{
    char k[128];
    snprintf(k, sizeof(k), "%s.%s", arch, key);
    int rc = gguf_get_f32(g, k, out);
    if (rc == -ENOENT && !need) {
        *out = dflt;
        return 0;
    }
    if (rc == -ENOENT) {
        snprintf(err, errlen, "%s: metadata key %s is missing", gguf_path(g), k);
        rc = FD_EFORMAT;
    } else if (rc)
        snprintf(err, errlen, "%s: metadata key %s: %s", gguf_path(g), k, fd_strerror(rc));
    else if (!(*out > 0.0f) || *out > 1e30f) {
        snprintf(err, errlen, "%s: metadata key %s = %g is out of range", gguf_path(g), k,
                 (double)*out);
        rc = FD_ERANGE;
    }
    return rc;
}

static bool str_is(gguf_str_t s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

/* The mixture-of-experts keys.  llama.cpp's graphs for these architectures fix the routing
 * rather than read it from the file: softmax over all experts, top expert_used_count, the
 * chosen weights renormalized for qwen3moe and llama (Mixtral) but not for olmoe and
 * qwen2moe, and no
 * scale (expert_gating_func, expert_weights_norm and expert_weights_scale are read only by
 * other architectures' graphs); fusiond does the same, and says so when a file's keys
 * disagree. */
static int read_experts(const gguf_t *g, const char *ar, uint32_t ff, uint32_t *experts,
                        llm_hparams_t *hp, char *err, size_t errlen)
{
    char k[128];
    snprintf(k, sizeof(k), "%s.expert_count", ar);
    int rc = gguf_get_u32(g, k, experts);
    if (rc == -ENOENT || (rc == 0 && *experts == 0)) {
        *experts = 0;
        if (!strcmp(ar, "qwen3moe") || !strcmp(ar, "olmoe") || !strcmp(ar, "qwen2moe") ||
            !strcmp(ar, "gpt-oss")) {
            snprintf(err, errlen, "%s: %s is %s: a %s model needs experts", gguf_path(g), k,
                     rc ? "missing" : "0", ar);
            return FD_EFORMAT;
        }
        return 0;
    }
    if (rc) {
        snprintf(err, errlen, "%s: metadata key %s: %s", gguf_path(g), k, fd_strerror(rc));
        return rc;
    }
    if (strcmp(ar, "llama") && strcmp(ar, "qwen3moe") && strcmp(ar, "olmoe") &&
        strcmp(ar, "qwen2moe") && strcmp(ar, "gpt-oss")) {
        snprintf(err, errlen, "%s: %s = %u: mixture-of-experts %s models are not supported "
                 "(qwen3moe, qwen2moe, olmoe, llama)", gguf_path(g), k, *experts, ar);
        return FD_EUNSUP;
    }
    uint32_t used, fe;
    if (*experts > 1024) {
        snprintf(err, errlen, "%s: %s = %u is out of range (at most 1024)", gguf_path(g), k,
                 *experts);
        return FD_ERANGE;
    }
    if ((rc = get_u32(g, ar, "expert_used_count", true, 0, &used, err, errlen)))
        return rc;
    if (used > *experts) {
        snprintf(err, errlen, "%s: %s.expert_used_count %u exceeds expert_count %u",
                 gguf_path(g), ar, used, *experts);
        return FD_EFORMAT;
    }
    /* qwen3moe, qwen2moe: its own key, else llama.cpp's fallback n_ff / used; the others:
     * n_ff.  qwen2moe's shared expert: its own key, else n_ff. */
    bool q3 = !strcmp(ar, "qwen3moe") || !strcmp(ar, "qwen2moe");
    const bool oss = !strcmp(ar, "gpt-oss"); /* its own key, required (llama.cpp) */
    if ((rc = get_u32(g, ar, "expert_feed_forward_length", oss,
                      q3 ? (used ? ff / used : ff) : ff, &fe, err, errlen)))
        return rc;
    if (!q3 && !oss)
        fe = ff;
    if (oss && (fe == 0 || used == 0)) {
        snprintf(err, errlen, "%s: %s.expert_feed_forward_length %u and expert_used_count %u "
                 "must be positive", gguf_path(g), ar, fe, used);
        return FD_EFORMAT;
    }
    hp->n_expert = (int)*experts;
    hp->n_expert_used = (int)used;
    hp->n_ff_exp = (int)fe;
    hp->moe_norm_w = strcmp(ar, "olmoe") != 0 && strcmp(ar, "qwen2moe") != 0 && !oss;
    if (!strcmp(ar, "qwen2moe")) {
        uint32_t fs;
        if ((rc = get_u32(g, ar, "expert_shared_feed_forward_length", false, ff, &fs, err,
                          errlen)))
            return rc;
        hp->n_ff_shexp = (int)fs;
    }
    bool b;
    uint32_t gf;
    float sc;
    snprintf(k, sizeof(k), "%s.expert_weights_norm", ar);
    if (gguf_get_bool(g, k, &b) == 0 && b != hp->moe_norm_w)
        fd_log_info("%s: %s = %s is not applied (llama.cpp's %s graph %s the weights)",
                    gguf_path(g), k, b ? "true" : "false", ar,
                    hp->moe_norm_w ? "renormalizes" : "does not renormalize");
    snprintf(k, sizeof(k), "%s.expert_gating_func", ar);
    if (gguf_get_u32(g, k, &gf) == 0 && gf > 1 && !oss)
        fd_log_info("%s: %s = %u is not applied (llama.cpp's %s graph uses softmax)",
                    gguf_path(g), k, gf, ar);
    snprintf(k, sizeof(k), "%s.expert_weights_scale", ar);
    if (gguf_get_f32(g, k, &sc) == 0 && sc != 0.0f && sc != 1.0f)
        fd_log_info("%s: %s = %g is not applied (llama.cpp's %s graph does not scale)",
                    gguf_path(g), k, (double)sc, ar);
    return 0;
}

/* An optional float key that may be 0 (a soft-cap the file turns off). */
static int get_f32_or(const gguf_t *g, const char *arch, const char *key, float dflt, float *out,
                      char *err, size_t errlen)
{
    char k[128];
    snprintf(k, sizeof(k), "%s.%s", arch, key);
    int rc = gguf_get_f32(g, k, out);
    if (rc == -ENOENT) {
        *out = dflt;
        return 0;
    }
    if (rc == 0 && !(*out >= 0.0f && *out < 1e30f)) {
        snprintf(err, errlen, "%s: metadata key %s = %g is out of range", gguf_path(g), k,
                 (double)*out);
        return FD_ERANGE;
    }
    if (rc)
        snprintf(err, errlen, "%s: metadata key %s: %s", gguf_path(g), k, fd_strerror(rc));
    return rc;
}

/* Whether layer l of a Gemma model is local (sliding window): llama.cpp's rule, the pattern
 * period p making every p-th layer global (l % p == p - 1), or the file's per-layer list. */
static bool gemma_layer_swa(const llm_model_t *m, int l)
{
    const llm_hparams_t *hp = &m->hp;
    if (hp->n_swa == 0)
        return false;
    if (hp->swa_period > 0)
        return l % hp->swa_period < hp->swa_period - 1;
    char k[128];
    gguf_arr_t arr;
    int64_t v = 0;
    snprintf(k, sizeof(k), "%s.attention.sliding_window_pattern", hp->arch);
    if (gguf_get_arr(m->g, k, &arr) || (uint64_t)l >= arr.n)
        return false;
    if (arr.elem_type == GGUF_BOOL)
        return arr.data[l] != 0;
    return gguf_arr_i64(&arr, (uint64_t)l, &v) == 0 && v;
}

/* attention.sliding_window_pattern (Gemma 2/3, gpt-oss) into *period: a period, or 0 for one
 * boolean per layer (checked here, read where the layers are built); absent, *period is left
 * as it is (the architecture's default). */
static int read_swa_pattern(const gguf_t *g, const char *ar, uint32_t layers, uint32_t *period,
                            char *err, size_t errlen)
{
    char k[128];
    snprintf(k, sizeof(k), "%s.attention.sliding_window_pattern", ar);
    const gguf_kv_t *pk = gguf_find(g, k);
    gguf_arr_t arr;
    if (!pk)
        return 0;
    if (gguf_kv_arr(pk, &arr) == 0) {
        int64_t v;
        if (arr.n != layers || (arr.elem_type != GGUF_BOOL && gguf_arr_i64(&arr, 0, &v))) {
            snprintf(err, errlen, "%s: %s is not a list of %u booleans (one per layer)",
                     gguf_path(g), k, layers);
            return FD_EFORMAT;
        }
        *period = 0;
        return 0;
    }
    return get_u32(g, ar, "attention.sliding_window_pattern", true, 0, period, err, errlen);
}

/* Gemma 2 and 3 (llama.cpp's hparams for LLM_ARCH_GEMMA2 / GEMMA3; Gemma 1 has none of
 * what follows but the query scale): the window and its
 * pattern (Gemma 2 alternates local and global from layer 0; Gemma 3 has 5 local layers to a
 * global one), the local layers' RoPE base (Gemma 3: 10000 unless rope.freq_base_swa says),
 * the query scale (1/sqrt(n_embd / n_head) for the 27B sizes, known by their layer count,
 * else 1/sqrt(head_dim)) and the soft-caps (Gemma 2 only for the scores; default 50 and 30). */
static int read_gemma(llm_model_t *m, char *err, size_t errlen)
{
    const gguf_t *g = m->g;
    llm_hparams_t *hp = &m->hp;
    const char *ar = hp->arch;
    bool g2 = strcmp(ar, "gemma2") == 0;
    uint32_t layers, embd, heads, kl, swa, period = g2 ? 2 : 6;
    int rc;
    char k[128];
    hp->gemma = true;
    if ((rc = get_u32(g, ar, "block_count", true, 0, &layers, err, errlen)) ||
        (rc = get_u32(g, ar, "embedding_length", true, 0, &embd, err, errlen)) ||
        (rc = get_u32(g, ar, "attention.head_count", true, 0, &heads, err, errlen)) ||
        (rc = get_u32(g, ar, "attention.key_length", false, embd / heads, &kl, err, errlen)))
        return rc;
    if (strcmp(ar, "gemma") == 0) {
        /* Gemma 1: every layer global, no soft-caps, no post norms; Q scaled by
         * 1/sqrt(head_dim) */
        hp->attn_scale = 1.0f / sqrtf((float)kl);
        return get_f32(g, ar, "rope.freq_base", false, 10000.0f, &hp->rope_freq_base_swa, err,
                       errlen);
    }
    snprintf(k, sizeof(k), "%s.attention.sliding_window", ar);
    rc = gguf_get_u32(g, k, &swa);
    if (rc == -ENOENT && g2)
        swa = 4096, rc = 0;
    if (rc) {
        snprintf(err, errlen, "%s: metadata key %s is %s", gguf_path(g), k,
                 rc == -ENOENT ? "missing" : "not an unsigned integer");
        return rc == -ENOENT ? FD_EFORMAT : rc;
    }
    if (swa > (1u << 30)) {
        snprintf(err, errlen, "%s: %s = %u is out of range", gguf_path(g), k, swa);
        return FD_ERANGE;
    }
    hp->n_swa = (int)swa;
    if ((rc = read_swa_pattern(g, ar, layers, &period, err, errlen)))
        return rc;
    hp->swa_period = (int)period;
    bool big = layers == (g2 ? 46u : 62u);
    hp->attn_scale = 1.0f / sqrtf((float)(big ? embd / heads : kl));
    if ((rc = get_f32_or(g, ar, "final_logit_softcapping", g2 ? 30.0f : 0.0f,
                         &hp->final_softcap, err, errlen)))
        return rc;
    if (g2 && (rc = get_f32_or(g, ar, "attn_logit_softcapping", 50.0f, &hp->attn_softcap, err,
                               errlen)))
        return rc;
    float base;
    if ((rc = get_f32(g, ar, "rope.freq_base", false, 10000.0f, &base, err, errlen)) ||
        (rc = get_f32(g, ar, "rope.freq_base_swa", false, g2 ? base : 10000.0f,
                      &hp->rope_freq_base_swa, err, errlen)))
        return rc;
    return 0;
}

/* gpt-oss (llama.cpp's hparams for LLM_ARCH_OPENAI_MOE): attention.sliding_window is
 * required; sliding_window_pattern (a period, or one boolean per layer) defaults to 2, so
 * layers 0, 2, 4, ... are local (l % p < p - 1, as Gemma 2); the local layers' RoPE has the
 * file's base (or rope.freq_base_swa) and the file's scale, not the overrides'.  Call after
 * the RoPE scaling is read (factor: the file's rope.scaling.factor). */
static int read_gptoss(llm_model_t *m, float factor, char *err, size_t errlen)
{
    const gguf_t *g = m->g;
    llm_hparams_t *hp = &m->hp;
    const char *ar = hp->arch;
    uint32_t layers, swa, period = 2;
    int rc;
    hp->gptoss = true;
    if ((rc = get_u32(g, ar, "block_count", true, 0, &layers, err, errlen)) ||
        (rc = get_u32(g, ar, "attention.sliding_window", true, 0, &swa, err, errlen)))
        return rc;
    if (swa == 0 || swa > (1u << 30)) {
        snprintf(err, errlen, "%s: %s.attention.sliding_window = %u is out of range (1 to "
                 "2^30)", gguf_path(g), ar, swa);
        return FD_ERANGE;
    }
    hp->n_swa = (int)swa;
    if ((rc = read_swa_pattern(g, ar, layers, &period, err, errlen)))
        return rc;
    hp->swa_period = (int)period;
    float base;
    if ((rc = get_f32(g, ar, "rope.freq_base", false, 10000.0f, &base, err, errlen)) ||
        (rc = get_f32(g, ar, "rope.freq_base_swa", false, base, &hp->rope_freq_base_swa, err,
                      errlen)))
        return rc;
    hp->rope_freq_scale_swa = factor > 0.0f ? 1.0f / factor : 1.0f;
    return 0;
}

int llm_rope_scaling_parse(const char *s, int *out)
{
    static const char *const names[] = {"none", "linear", "yarn"};
    for (int i = 0; i < 3; i++)
        if (s && strcmp(s, names[i]) == 0) {
            *out = LLM_ROPE_SCALING_NONE + i;
            return 0;
        }
    return -EINVAL;
}

const char *llm_rope_scaling_name(int type)
{
    switch (type) {
    case LLM_ROPE_SCALING_NONE: return "none";
    case LLM_ROPE_SCALING_LINEAR: return "linear";
    case LLM_ROPE_SCALING_YARN: return "yarn";
    default: return "file";
    }
}

const char *const llm_rope_option_names[] = {
    "rope-scaling", "rope-scale", "rope-freq-base", "rope-freq-scale", "yarn-orig-ctx",
    "yarn-ext-factor", "yarn-attn-factor", "yarn-beta-slow", "yarn-beta-fast", NULL};

int llm_rope_option(llm_rope_params_t *r, const char *name, const char *value, char *err,
                    size_t errlen)
{
    int k = 0;
    while (llm_rope_option_names[k] && strcmp(llm_rope_option_names[k], name))
        k++;
    if (!llm_rope_option_names[k])
        return -ENOENT;
    if (k == 0) {
        if (llm_rope_scaling_parse(value, &r->scaling) == 0)
            return 0;
        snprintf(err, errlen, "--rope-scaling takes none, linear or yarn, not '%s'", value);
        return -EINVAL;
    }
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    bool num = !errno && end != value && !*end && isfinite(v) && fabs(v) < 1e30;
    if (k == 4) {
        if (num && v >= 0 && v <= (1 << 30) && v == (int)v) {
            r->yarn_orig_ctx = (int)v;
            return 0;
        }
        snprintf(err, errlen, "--yarn-orig-ctx takes a whole number of positions (0: the "
                 "model's), not '%s'", value);
        return -EINVAL;
    }
    if (k <= 3) { /* 0 keeps the model's */
        if (num && v >= 0 && (k != 1 || v == 0 || v >= 1e-30)) {
            if (k == 1)
                r->freq_scale = v > 0 ? (float)(1.0 / v) : 0.0f;
            else
                *(k == 2 ? &r->freq_base : &r->freq_scale) = (float)v;
            return 0;
        }
        snprintf(err, errlen, "--%s takes a number >= 0 (0: the model's), not '%s'", name, value);
        return -EINVAL;
    }
    static const unsigned bit[] = {LLM_YARN_EXT, LLM_YARN_ATTN, LLM_YARN_BETA_SLOW,
                                   LLM_YARN_BETA_FAST};
    float *dst[] = {&r->yarn_ext_factor, &r->yarn_attn_factor, &r->yarn_beta_slow,
                    &r->yarn_beta_fast};
    const int i = k - 5;
    if (num && v < 0) { /* llama.cpp's -1: unset */
        r->set &= ~bit[i];
        return 0;
    }
    if (num && (i == 0 ? v >= 0 : v > 0)) {
        r->set |= bit[i];
        *dst[i] = (float)v;
        return 0;
    }
    snprintf(err, errlen, "--%s takes a number %s (negative: the default), not '%s'", name,
             i == 0 ? ">= 0" : "> 0", value);
    return -EINVAL;
}

/* The scaling type, frequency base and scale, and YaRN's blend and ramp as llama.cpp's
 * context resolves them: an override wins over the file; type none never scales; the blend
 * (ext_factor) defaults to 1 with YaRN, else 0; the ramp's betas to 32 and 1.  llama.cpp
 * reads rope.scaling.yarn_* only for architectures fusiond does not run (grok, mistral3,
 * deepseek2), so they are not read here either. */
static int rope_scaling(llm_model_t *m, const llm_load_params_t *p, int stype, float factor,
                        char *err, size_t errlen)
{
    llm_hparams_t *hp = &m->hp;
    const llm_rope_params_t *o = &p->rope;
    const unsigned set = o->set;
    const char *bad = NULL;
    if (o->scaling < LLM_ROPE_SCALING_FILE || o->scaling > LLM_ROPE_SCALING_YARN)
        bad = "rope scaling type";
    else if (!(o->freq_base >= 0) || !isfinite(o->freq_base))
        bad = "rope freq base";
    else if (!(o->freq_scale >= 0) || !isfinite(o->freq_scale))
        bad = "rope freq scale";
    else if (o->yarn_orig_ctx < 0)
        bad = "yarn original context";
    else if ((set & LLM_YARN_EXT) &&
             (!(o->yarn_ext_factor >= 0) || !isfinite(o->yarn_ext_factor)))
        bad = "yarn ext factor";
    else if ((set & LLM_YARN_ATTN) &&
             (!(o->yarn_attn_factor > 0) || !isfinite(o->yarn_attn_factor)))
        bad = "yarn attn factor";
    else if ((set & LLM_YARN_BETA_FAST) &&
             (!(o->yarn_beta_fast > 0) || !isfinite(o->yarn_beta_fast)))
        bad = "yarn beta fast";
    else if ((set & LLM_YARN_BETA_SLOW) &&
             (!(o->yarn_beta_slow > 0) || !isfinite(o->yarn_beta_slow)))
        bad = "yarn beta slow";
    if (bad) {
        snprintf(err, errlen, "%s: bad %s override", gguf_path(m->g), bad);
        return -EINVAL;
    }
    int type = o->scaling != LLM_ROPE_SCALING_FILE ? o->scaling : stype;
    hp->rope_scaling = type;
    if (o->freq_base > 0)
        hp->rope_freq_base = o->freq_base;
    hp->rope_freq_scale = o->freq_scale > 0 ? o->freq_scale : 1.0f / factor;
    if (type == LLM_ROPE_SCALING_NONE)
        hp->rope_freq_scale = 1.0f;
    hp->yarn_ext_factor = set & LLM_YARN_EXT ? o->yarn_ext_factor
                                             : type == LLM_ROPE_SCALING_YARN ? 1.0f : 0.0f;
    hp->yarn_beta_fast = set & LLM_YARN_BETA_FAST ? o->yarn_beta_fast : 32.0f;
    hp->yarn_beta_slow = set & LLM_YARN_BETA_SLOW ? o->yarn_beta_slow : 1.0f;
    hp->yarn_attn_factor = set & LLM_YARN_ATTN ? o->yarn_attn_factor : 1.0f;
    return 0;
}

/* After rope.scaling.attn_factor and original_context_length: YaRN's original context and
 * llama.cpp's attention factor.  With a blend, llama.cpp replaces the attention factor by
 * YaRN's magnitude (1 + 0.1 ln factor, 1 for a factor up to 1) divided by the same
 * 1 + 0.1 ln factor that ggml's RoPE multiplies back, so an override of it counts only
 * without a blend; rope.scaling.attn_factor multiplies either. */
static void yarn_finish(llm_hparams_t *hp, const llm_load_params_t *p)
{
    hp->n_ctx_orig_yarn = p->rope.yarn_orig_ctx > 0 ? (uint32_t)p->rope.yarn_orig_ctx
                                              : hp->n_ctx_orig;
    if (hp->yarn_ext_factor != 0.0f) {
        const float f = 1.0f / hp->rope_freq_scale;
        hp->yarn_attn_factor = f <= 1.0f ? 1.0f : 0.1f * logf(f) + 1.0f;
        hp->yarn_attn_factor *= 1.0f / (1.0f + 0.1f * logf(f));
    }
    hp->yarn_attn_factor *= hp->rope_attn_factor;
}

static int read_hparams(llm_model_t *m, const llm_load_params_t *p, char *err, size_t errlen)
{
    const gguf_t *g = m->g;
    llm_hparams_t *hp = &m->hp;
    gguf_str_t a;
    int rc = gguf_get_str(g, "general.architecture", &a);
    if (rc) {
        snprintf(err, errlen, "%s: general.architecture is %s", gguf_path(g),
                 rc == -ENOENT ? "missing" : "not a string");
        return rc == -ENOENT ? FD_EFORMAT : rc;
    }
    if (!str_is(a, "llama") && !str_is(a, "qwen2") && !str_is(a, "qwen3") &&
        !str_is(a, "phi3") && !str_is(a, "gemma") && !str_is(a, "gemma2") &&
        !str_is(a, "gemma3") && !str_is(a, "qwen3moe") && !str_is(a, "olmoe") &&
        !str_is(a, "qwen2moe") && !str_is(a, "gpt-oss")) {
        snprintf(err, errlen, "%s: architecture '%.*s' is not supported (supported: llama, "
                 "qwen2, qwen3, phi3, gemma, gemma2, gemma3 text models, qwen3moe, qwen2moe, "
                 "olmoe, gpt-oss)",
                 gguf_path(g), (int)FD_MIN(a.len, 64), a.ptr);
        return FD_EUNSUP;
    }
    memcpy(hp->arch, a.ptr, a.len);
    hp->arch[a.len] = '\0';
    const char *ar = hp->arch;

    uint32_t ctx, embd, layers, ff, heads, heads_kv, kl, vl, rot, experts;
    if ((rc = get_u32(g, ar, "context_length", true, 0, &ctx, err, errlen)) ||
        (rc = get_u32(g, ar, "embedding_length", true, 0, &embd, err, errlen)) ||
        (rc = get_u32(g, ar, "block_count", true, 0, &layers, err, errlen)) ||
        (rc = get_u32(g, ar, "feed_forward_length", true, 0, &ff, err, errlen)) ||
        (rc = get_u32(g, ar, "attention.head_count", true, 0, &heads, err, errlen)) ||
        (rc = get_u32(g, ar, "attention.head_count_kv", false, heads, &heads_kv, err, errlen)))
        return rc;
    char kk[128];
    uint32_t pool;
    snprintf(kk, sizeof(kk), "%s.pooling_type", ar);
    hp->pooling = gguf_get_u32(g, kk, &pool) == 0 && pool <= 3 ? (int)pool : -1;
    snprintf(kk, sizeof(kk), "%s.attention.key_length", ar);
    if (embd % heads && !gguf_find(g, kk)) {
        snprintf(err, errlen, "%s: embedding_length %u is not a multiple of head_count %u "
                 "and %s is absent", gguf_path(g), embd, heads, kk);
        return FD_EFORMAT;
    }
    if ((rc = get_u32(g, ar, "attention.key_length", false, embd / heads, &kl, err, errlen)) ||
        (rc = get_u32(g, ar, "attention.value_length", false, kl, &vl, err, errlen)) ||
        (rc = get_u32(g, ar, "rope.dimension_count", false, kl, &rot, err, errlen)))
        return rc;
    if ((rc = read_experts(g, ar, ff, &experts, hp, err, errlen)))
        return rc;
    if (heads % heads_kv) {
        snprintf(err, errlen, "%s: head_count %u is not a multiple of head_count_kv %u",
                 gguf_path(g), heads, heads_kv);
        return FD_EFORMAT;
    }
    if (vl != kl) {
        snprintf(err, errlen, "%s: attention.value_length %u differs from key_length %u "
                 "(not supported)", gguf_path(g), vl, kl);
        return FD_EUNSUP;
    }
    if (rot > kl || rot % 2) {
        snprintf(err, errlen, "%s: rope.dimension_count %u must be even and at most the head "
                 "dimension %u", gguf_path(g), rot, kl);
        return FD_EFORMAT;
    }
    if ((rc = get_f32(g, ar, "attention.layer_norm_rms_epsilon", true, 0, &hp->norm_eps, err,
                      errlen)) ||
        (rc = get_f32(g, ar, "rope.freq_base", false, 10000.0f, &hp->rope_freq_base, err,
                      errlen)))
        return rc;

    /* RoPE scaling: rope.scaling.type (llama.cpp reads a missing one as linear) + factor, or
     * the older rope.scale_linear */
    float factor = 1.0f;
    char k[128];
    gguf_str_t st;
    int stype = LLM_ROPE_SCALING_LINEAR;
    snprintf(k, sizeof(k), "%s.rope.scaling.type", ar);
    rc = gguf_get_str(g, k, &st);
    if (rc == 0) {
        char name[16];
        snprintf(name, sizeof(name), "%.*s", (int)FD_MIN(st.len, sizeof(name) - 1), st.ptr);
        if (st.len >= sizeof(name) || llm_rope_scaling_parse(name, &stype)) {
            snprintf(err, errlen, "%s: %s '%.*s' is not supported (none, linear, yarn)",
                     gguf_path(g), k, (int)FD_MIN(st.len, 32), st.ptr);
            return FD_EUNSUP;
        }
    } else if (rc != -ENOENT) {
        snprintf(err, errlen, "%s: %s is not a string", gguf_path(g), k);
        return rc;
    }
    if (stype != LLM_ROPE_SCALING_NONE || rc == -ENOENT) {
        snprintf(k, sizeof(k), "%s.rope.scaling.factor", ar);
        bool has = gguf_get_f32(g, k, &factor) != -ENOENT;
        if ((rc = get_f32(g, ar, has ? "rope.scaling.factor" : "rope.scale_linear", false,
                          1.0f, &factor, err, errlen)))
            return rc;
    }

    hp->n_ctx_train = (int)ctx;
    hp->n_ctx = p->n_ctx > 0 ? p->n_ctx : (int)ctx;
    hp->n_embd = (int)embd;
    hp->n_layer = (int)layers;
    hp->n_head = (int)heads;
    hp->n_head_kv = (int)heads_kv;
    hp->head_dim = (int)kl;
    hp->n_ff = (int)ff;
    hp->n_rot = (int)rot;
    if ((rc = rope_scaling(m, p, stype, factor, err, errlen)))
        return rc;
    /* llama.cpp's rope types: NEOX for both Qwen generations and Phi-3 */
    bool qwen2 = strcmp(ar, "qwen2") == 0, qwen3 = strcmp(ar, "qwen3") == 0;
    bool phi3 = strcmp(ar, "phi3") == 0, qwen3moe = strcmp(ar, "qwen3moe") == 0;
    bool olmoe = strcmp(ar, "olmoe") == 0, qwen2moe = strcmp(ar, "qwen2moe") == 0;
    bool gemma2 = strcmp(ar, "gemma2") == 0, gemma3 = strcmp(ar, "gemma3") == 0;
    bool gemma1 = strcmp(ar, "gemma") == 0, oss = strcmp(ar, "gpt-oss") == 0;
    hp->rope_mode = qwen2 || qwen3 || phi3 || gemma1 || gemma2 || gemma3 || qwen3moe || olmoe ||
                    qwen2moe || oss ? FB_ROPE_NEOX : FB_ROPE_ADJACENT;
    hp->qkv_bias = qwen2 || qwen2moe || oss;
    if (oss && (rc = read_gptoss(m, factor, err, errlen)))
        return rc;
    hp->qk_norm = qwen3 || gemma3 || qwen3moe || olmoe;
    hp->qk_norm_full = olmoe;
    if (gemma1 || gemma2 || gemma3)
        if ((rc = read_gemma(m, err, errlen)))
            return rc;
    hp->fused_gate_up = phi3;
    /* Phi-3.5's LongRoPE: a factor on cos and sin (so attention scores scale by its square),
     * and per-pair frequency factors chosen by the context length */
    if ((rc = get_f32(g, ar, "rope.scaling.attn_factor", false, 1.0f, &hp->rope_attn_factor,
                      err, errlen)) ||
        (rc = get_u32(g, ar, "rope.scaling.original_context_length", false, ctx,
                      &hp->n_ctx_orig, err, errlen)))
        return rc;
    yarn_finish(hp, p);
    if (phi3) {
        uint32_t swa;
        snprintf(kk, sizeof(kk), "%s.attention.sliding_window", ar);
        if (gguf_get_u32(g, kk, &swa) == 0 && swa > 0)
            fd_log_info("%s: %s = %u is not applied (full attention, as llama.cpp does for "
                        "phi3)", gguf_path(g), kk, swa);
    }
    return 0;
}

/* ---- tensors ---- */

static bool matrix_type_ok(int type)
{
    switch (type) {
    case GG_F32: case GG_F16: case GG_BF16: case GG_Q8_0: case GG_Q4_0: case GG_Q4_K:
    case GG_Q5_K: case GG_Q6_K:
    case GG_Q4_1: case GG_Q5_0: case GG_Q5_1:
    case GG_IQ4_NL: case GG_IQ4_XS: case GG_MXFP4:
    case GG_Q2_K: case GG_Q3_K:
        return true;
    }
    return false;
}

static void shape_str(const gguf_tensor_t *t, char *buf, size_t len)
{
    int o = snprintf(buf, len, "[");
    for (int d = 0; d < t->n_dims && o < (int)len; d++)
        o += snprintf(buf + o, len - (size_t)o, "%s%lld", d ? ", " : "", (long long)t->ne[d]);
    if (o < (int)len)
        snprintf(buf + o, len - (size_t)o, "]");
}

/* A tensor's type is one the backends' matrix products take (find and experts_of). */
static int type_check(const llm_model_t *m, const gguf_tensor_t *t, const char *name,
                      char *err, size_t errlen)
{
    if (!matrix_type_ok(t->type) || !fq_type_supported(t->type)) {
        const char *tn = gg_type_name(t->type);
        snprintf(err, errlen, "%s: tensor %s has type %s, which is not supported (F32, F16, "
                 "BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, "
                 "MXFP4)",
                 gguf_path(m->g), name, tn ? tn : "unknown");
        return FD_EUNSUP;
    }
    return 0;
}

/* Finds a tensor and checks its shape {ne0} (ne1 = 0) or {ne0, ne1}. */
static int find(const llm_model_t *m, const char *name, int64_t ne0, int64_t ne1, bool need,
                const gguf_tensor_t **out, char *err, size_t errlen)
{
    const gguf_tensor_t *t = gguf_find_tensor(m->g, name);
    *out = t;
    if (!t) {
        if (!need)
            return 0;
        snprintf(err, errlen, "%s: tensor %s is missing", gguf_path(m->g), name);
        return FD_EFORMAT;
    }
    int dims = ne1 ? 2 : 1;
    bool ok = t->ne[0] == ne0 && (!ne1 || t->ne[1] == ne1);
    for (int d = dims; d < GGUF_MAX_DIMS; d++)
        ok = ok && t->ne[d] == 1;
    if (!ok) {
        char have[96];
        shape_str(t, have, sizeof(have));
        if (ne1)
            snprintf(err, errlen, "%s: tensor %s has shape %s, expected [%lld, %lld]",
                     gguf_path(m->g), name, have, (long long)ne0, (long long)ne1);
        else
            snprintf(err, errlen, "%s: tensor %s has shape %s, expected [%lld]",
                     gguf_path(m->g), name, have, (long long)ne0);
        return FD_ESHAPE;
    }
    return type_check(m, t, name, err, errlen);
}

/* A 3-D tensor of n_expert matrices of n_out rows by n_in (one after the other in the
 * file), as n views into its bytes (no copy), like rows_of. */
static int experts_of(const llm_model_t *m, const char *name, int64_t n_in, int64_t n_out,
                      int n, fb_weight_t *views, char *err, size_t errlen)
{
    const gguf_tensor_t *t = gguf_find_tensor(m->g, name);
    if (!t) {
        snprintf(err, errlen, "%s: tensor %s is missing", gguf_path(m->g), name);
        return FD_EFORMAT;
    }
    if (t->ne[0] != n_in || t->ne[1] != n_out || t->ne[2] != n || t->ne[3] != 1) {
        char have[96];
        shape_str(t, have, sizeof(have));
        snprintf(err, errlen, "%s: tensor %s has shape %s, expected [%lld, %lld, %d]",
                 gguf_path(m->g), name, have, (long long)n_in, (long long)n_out, n);
        return FD_ESHAPE;
    }
    int rc = type_check(m, t, name, err, errlen);
    if (rc)
        return rc;
    const uint64_t bytes = gg_row_bytes(t->type, (uint64_t)n_in) * (uint64_t)n_out;
    for (int e = 0; e < n; e++)
        views[e] = (fb_weight_t){ .type = t->type, .n_in = n_in, .n_out = n_out,
                                  .src = (const uint8_t *)t->data + bytes * (uint64_t)e,
                                  .name = t->name };
    return 0;
}

static int matrix(const llm_model_t *m, const char *name, int64_t n_in, int64_t n_out,
                  bool need, fb_weight_t *w, char *err, size_t errlen)
{
    const gguf_tensor_t *t;
    memset(w, 0, sizeof(*w));
    int rc = find(m, name, n_in, n_out, need, &t, err, errlen);
    if (rc || !t)
        return rc;
    w->type = t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    w->src = t->data;
    w->name = t->name;
    return 0;
}

/* Rows [r0, r0 + n) of a matrix, as a matrix of its own over the same bytes. */
static fb_weight_t rows_of(const fb_weight_t *w, int64_t r0, int64_t n)
{
    fb_weight_t v = *w;
    v.src = (const uint8_t *)w->src + gg_row_bytes(w->type, (uint64_t)w->n_in) * (uint64_t)r0;
    v.n_out = n;
    return v;
}

/* A 1-D vector of n (rows 0), or rows vectors of n one after the other (a 2-D tensor
 * [n, rows]: gpt-oss's expert biases), as fp32: in place in the mapping when stored as F32,
 * else converted. */
static int vectors(llm_model_t *m, const char *name, int64_t n, int64_t rows, bool need,
                   const float **out, char *err, size_t errlen)
{
    const gguf_tensor_t *t;
    *out = NULL;
    int rc = find(m, name, n, rows, need, &t, err, errlen);
    if (rc || !t)
        return rc;
    n *= rows ? rows : 1;
    if (t->type == GG_F32) {
        *out = t->data;
        return 0;
    }
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? 2 * m->cap_owned : 64;
        float **o = realloc(m->owned, (size_t)cap * sizeof(*o));
        if (!o)
            return -ENOMEM;
        m->owned = o;
        m->cap_owned = cap;
    }
    float *v = malloc((size_t)n * sizeof(float));
    if (!v)
        return -ENOMEM;
    m->owned[m->n_owned++] = v;
    rc = fq_dequantize_row(t->type, t->data, v, n);
    if (rc)
        snprintf(err, errlen, "%s: tensor %s: cannot convert to F32: %s", gguf_path(m->g), name,
                 fd_strerror(rc));
    *out = v;
    return rc;
}

static int vector(llm_model_t *m, const char *name, int64_t n, bool need, const float **out,
                  char *err, size_t errlen)
{
    return vectors(m, name, n, 0, need, out, err, errlen);
}

/* gpt-oss's layer parts beyond Q/K/V's biases: attention sinks, the output's, the router's
 * and each expert's biases (the experts' 2-D [width, n_expert], one row an expert), all
 * required as llama.cpp requires them. */
static int read_gptoss_layer(llm_model_t *m, int l, fz_layer_src_t *y, fb_weight_t *xg,
                             fb_weight_t *xu, fb_weight_t *xd, char *err, size_t errlen)
{
    const llm_hparams_t *hp = &m->hp;
    const int NE = hp->n_expert;
    const int64_t E = hp->n_embd, FE = hp->n_ff_exp;
    const float *b[3];
    char n[64];
    int rc;
    const char *bn[3] = { "ffn_gate_exps.bias", "ffn_up_exps.bias", "ffn_down_exps.bias" };
    const int64_t bw[3] = { FE, FE, E };
    snprintf(n, sizeof(n), "blk.%d.attn_sinks.weight", l);
    if ((rc = vector(m, n, hp->n_head, true, &y->attn_sinks, err, errlen)))
        return rc;
    snprintf(n, sizeof(n), "blk.%d.attn_output.bias", l);
    if ((rc = vector(m, n, E, true, &y->wo.bias, err, errlen)))
        return rc;
    snprintf(n, sizeof(n), "blk.%d.ffn_gate_inp.bias", l);
    if ((rc = vector(m, n, NE, true, &y->router.bias, err, errlen)))
        return rc;
    for (int i = 0; i < 3; i++) {
        snprintf(n, sizeof(n), "blk.%d.%s", l, bn[i]);
        if ((rc = vectors(m, n, bw[i], NE, true, &b[i], err, errlen)))
            return rc;
    }
    for (int e = 0; e < NE; e++) {
        xg[e].bias = b[0] + (size_t)e * (size_t)FE;
        xu[e].bias = b[1] + (size_t)e * (size_t)FE;
        xd[e].bias = b[2] + (size_t)e * (size_t)E;
    }
    y->swa = gemma_layer_swa(m, l);
    m->hp.n_swa_layers += y->swa;
    return 0;
}

static int read_tensors(llm_model_t *m, char *err, size_t errlen)
{
    llm_hparams_t *hp = &m->hp;
    const gguf_tensor_t *emb = gguf_find_tensor(m->g, "token_embd.weight");
    if (!emb) {
        snprintf(err, errlen, "%s: tensor token_embd.weight is missing", gguf_path(m->g));
        return FD_EFORMAT;
    }
    if (emb->ne[1] < 1 || emb->ne[1] > (1 << 24)) {
        snprintf(err, errlen, "%s: tensor token_embd.weight has %lld rows (vocabulary size "
                 "out of range)", gguf_path(m->g), (long long)emb->ne[1]);
        return FD_ESHAPE;
    }
    hp->n_vocab = (int)emb->ne[1];
    int64_t E = hp->n_embd, V = hp->n_vocab, F = hp->n_ff;
    int64_t NQ = (int64_t)hp->n_head * hp->head_dim, NKV = (int64_t)hp->n_head_kv * hp->head_dim;

    /* Six tensors per layer at least (Phi-3's fused Q|K|V and gate|up): an absurd
     * block_count is refused before anything is allocated for it (a file of a few bytes could
     * otherwise ask for gigabytes). */
    if ((int64_t)hp->n_layer * 6 > gguf_n_tensors(m->g)) {
        snprintf(err, errlen, "%s: block_count %d needs at least %lld tensors; the file has "
                 "%lld", gguf_path(m->g), hp->n_layer, (long long)hp->n_layer * 6,
                 (long long)gguf_n_tensors(m->g));
        return FD_EFORMAT;
    }
    fz_model_src_t *s = &m->src;
    m->layers = calloc((size_t)hp->n_layer, sizeof(*m->layers));
    if (!m->layers)
        return -ENOMEM;
    const int NE = hp->n_expert;
    if (NE > 0) {
        m->experts = calloc((size_t)hp->n_layer * 3 * (size_t)NE, sizeof(*m->experts));
        if (!m->experts)
            return -ENOMEM;
    }
    int rc;
    if ((rc = matrix(m, "token_embd.weight", E, V, true, &s->tok_embd, err, errlen)) ||
        (rc = vector(m, "output_norm.weight", E, true, &s->out_norm, err, errlen)) ||
        (rc = matrix(m, "output.weight", E, V, hp->gptoss, &s->output, err, errlen)))
        return rc;
    /* Llama 3.1's long-context RoPE: a factor dividing each pair's frequency; Phi-3.5's
     * LongRoPE has two sets, long for a context beyond the original one, else short */
    const char *rf = "rope_freqs.weight";
    if (!gguf_find_tensor(m->g, rf) && gguf_find_tensor(m->g, "rope_factors_short.weight"))
        rf = hp->n_ctx > (int)hp->n_ctx_orig ? "rope_factors_long.weight"
                                             : "rope_factors_short.weight";
    if ((rc = vector(m, rf, hp->n_rot / 2, false, &s->rope_freqs, err, errlen)))
        return rc;
    for (int i = 0; s->rope_freqs && i < hp->n_rot / 2; i++)
        if (!(s->rope_freqs[i] > 0.0f) || !isfinite(s->rope_freqs[i])) {
            snprintf(err, errlen, "%s: tensor %s: factor %d is %g (must be positive and "
                     "finite)", gguf_path(m->g), rf, i, (double)s->rope_freqs[i]);
            return FD_EFORMAT;
        }
    hp->rope_freqs = s->rope_freqs != NULL;
    hp->tied_output = s->output.src == NULL;
    if (hp->tied_output) {
        s->output = s->tok_embd;
        s->output.name = "token_embd.weight (tied output)";
    }
    for (int l = 0; l < hp->n_layer; l++) {
        fz_layer_src_t *y = &m->layers[l];
        char n[10][64];
        const char *suf[10] = { "attn_norm.weight", "attn_q.weight", "attn_k.weight",
                                "attn_v.weight", "attn_output.weight", "ffn_norm.weight",
                                "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight", "" };
        if (hp->gptoss) /* its FFN norm (llama.cpp's attn_post_norm) */
            suf[5] = "post_attention_norm.weight";
        for (int i = 0; i < 9; i++)
            snprintf(n[i], sizeof(n[i]), "blk.%d.%s", l, suf[i]);
        /* Q|K|V in one attn_qkv tensor (Phi-3), else three */
        fb_weight_t qkv;
        snprintf(n[9], sizeof(n[9]), "blk.%d.attn_qkv.weight", l);
        if ((rc = matrix(m, n[9], E, NQ + 2 * NKV, false, &qkv, err, errlen)))
            return rc;
        if (qkv.src) {
            y->wq = rows_of(&qkv, 0, NQ);
            y->wk = rows_of(&qkv, NQ, NKV);
            y->wv = rows_of(&qkv, NQ + NKV, NKV);
        } else if ((rc = matrix(m, n[1], E, NQ, true, &y->wq, err, errlen)) ||
                   (rc = matrix(m, n[2], E, NKV, true, &y->wk, err, errlen)) ||
                   (rc = matrix(m, n[3], E, NKV, true, &y->wv, err, errlen))) {
            return rc;
        }
        if ((rc = vector(m, n[0], E, true, &y->attn_norm, err, errlen)) ||
            (rc = matrix(m, n[4], NQ, E, true, &y->wo, err, errlen)) ||
            (rc = vector(m, n[5], E, true, &y->ffn_norm, err, errlen)))
            return rc;
        if (NE > 0) {
            /* the router, then gate, up and down of every expert */
            fb_weight_t *v = m->experts + (size_t)l * 3 * (size_t)NE;
            const int64_t FE = hp->n_ff_exp;
            char xn[3][64];
            snprintf(n[9], sizeof(n[9]), "blk.%d.ffn_gate_inp.weight", l);
            snprintf(xn[0], sizeof(xn[0]), "blk.%d.ffn_gate_exps.weight", l);
            snprintf(xn[1], sizeof(xn[1]), "blk.%d.ffn_up_exps.weight", l);
            snprintf(xn[2], sizeof(xn[2]), "blk.%d.ffn_down_exps.weight", l);
            if ((rc = matrix(m, n[9], E, NE, true, &y->router, err, errlen)) ||
                (rc = experts_of(m, xn[0], E, FE, NE, v, err, errlen)) ||
                (rc = experts_of(m, xn[1], E, FE, NE, v + NE, err, errlen)) ||
                (rc = experts_of(m, xn[2], FE, E, NE, v + 2 * NE, err, errlen)))
                return rc;
            y->exp_gate = v;
            y->exp_up = v + NE;
            y->exp_down = v + 2 * NE;
            if (hp->gptoss &&
                (rc = read_gptoss_layer(m, l, y, v, v + NE, v + 2 * NE, err, errlen)))
                return rc;
            /* qwen2moe's shared expert, in the dense slots, and its sigmoid gate (a vector,
             * taken as a product of one output) */
            if (hp->n_ff_shexp > 0) {
                const int64_t FS = hp->n_ff_shexp;
                char sn[4][64];
                const char *ss[4] = { "ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp",
                                      "ffn_gate_inp_shexp" };
                for (int i = 0; i < 4; i++)
                    snprintf(sn[i], sizeof(sn[i]), "blk.%d.%s.weight", l, ss[i]);
                if ((rc = matrix(m, sn[0], E, FS, true, &y->w_gate, err, errlen)) ||
                    (rc = matrix(m, sn[1], E, FS, true, &y->w_up, err, errlen)) ||
                    (rc = matrix(m, sn[2], FS, E, true, &y->w_down, err, errlen)) ||
                    (rc = matrix(m, sn[3], E, 1, true, &y->shexp_gate, err, errlen)))
                    return rc;
            }
        } else if ((rc = matrix(m, n[8], F, E, true, &y->w_down, err, errlen))) {
            return rc;
        } else if (hp->fused_gate_up) {
            /* Phi-3's ffn_up holds gate rows, then up rows (llama.cpp's SwiGLU halves) */
            fb_weight_t gu;
            if ((rc = matrix(m, n[7], E, 2 * F, true, &gu, err, errlen)))
                return rc;
            y->w_gate = rows_of(&gu, 0, F);
            y->w_up = rows_of(&gu, F, F);
        } else if ((rc = matrix(m, n[6], E, F, true, &y->w_gate, err, errlen)) ||
                   (rc = matrix(m, n[7], E, F, true, &y->w_up, err, errlen))) {
            return rc;
        }
        if (hp->qkv_bias) {
            fb_weight_t *w[3] = { &y->wq, &y->wk, &y->wv };
            const char *bn[3] = { "attn_q.bias", "attn_k.bias", "attn_v.bias" };
            for (int i = 0; i < 3; i++) {
                snprintf(n[9], sizeof(n[9]), "blk.%d.%s", l, bn[i]);
                if ((rc = vector(m, n[9], w[i]->n_out, true, &w[i]->bias, err, errlen)))
                    return rc;
            }
        }
        if (hp->gemma && strcmp(hp->arch, "gemma") != 0) { /* Gemma 1 has no post norms */
            const float **g[2] = { &y->post_attn_norm, &y->post_ffn_norm };
            const char *gn[2] = { "post_attention_norm.weight", "post_ffw_norm.weight" };
            for (int i = 0; i < 2; i++) {
                snprintf(n[9], sizeof(n[9]), "blk.%d.%s", l, gn[i]);
                if ((rc = vector(m, n[9], E, true, g[i], err, errlen)))
                    return rc;
            }
            y->swa = gemma_layer_swa(m, l);
            hp->n_swa_layers += y->swa;
        }
        if (hp->qk_norm) {
            const float **g[2] = { &y->q_norm, &y->k_norm };
            const char *gn[2] = { "attn_q_norm.weight", "attn_k_norm.weight" };
            /* per head, or (olmoe) over the whole Q and K rows */
            const int64_t len[2] = { hp->qk_norm_full ? NQ : hp->head_dim,
                                     hp->qk_norm_full ? NKV : hp->head_dim };
            for (int i = 0; i < 2; i++) {
                snprintf(n[9], sizeof(n[9]), "blk.%d.%s", l, gn[i]);
                if ((rc = vector(m, n[9], len[i], true, g[i], err, errlen)))
                    return rc;
            }
        }
    }
    int64_t np = 0;
    for (int64_t i = 0; i < gguf_n_tensors(m->g); i++)
        np += gguf_tensor_nelems(gguf_tensor_at(m->g, i));
    hp->n_params = np;

    s->n_layer = hp->n_layer;
    s->n_embd = hp->n_embd;
    s->n_head = hp->n_head;
    s->n_head_kv = hp->n_head_kv;
    s->head_dim = hp->head_dim;
    s->n_ff = hp->n_ff;
    s->n_vocab = hp->n_vocab;
    s->eps = hp->norm_eps;
    /* without a YaRN blend the attention factor scales the plan's scores (as its square,
     * which is what scaling cos and sin of every rotated dimension does); with one it goes
     * with YaRN's magnitude into the RoPE itself, as ggml applies it */
    const bool yarn = hp->yarn_ext_factor != 0.0f;
    s->rope_attn_factor = yarn ? 1.0f : hp->yarn_attn_factor;
    s->rope = (fb_rope_t){ .mode = hp->rope_mode, .n_rot = hp->n_rot,
                           .freq_base = hp->rope_freq_base,
                           .freq_scale = hp->rope_freq_scale,
                           .ext_factor = hp->yarn_ext_factor,
                           .beta_fast = hp->yarn_beta_fast, .beta_slow = hp->yarn_beta_slow,
                           .n_ctx_orig = (int)hp->n_ctx_orig_yarn,
                           .attn_factor = yarn ? hp->yarn_attn_factor : 0.0f };
    if (yarn || hp->rope_scaling == LLM_ROPE_SCALING_YARN)
        fd_log_info("%s: RoPE scaling %s, factor %g, YaRN ext_factor %g, original context %u, "
                    "beta %g/%g, magnitude %g", gguf_path(m->g),
                    llm_rope_scaling_name(hp->rope_scaling), 1.0 / hp->rope_freq_scale,
                    (double)hp->yarn_ext_factor, hp->n_ctx_orig_yarn,
                    (double)hp->yarn_beta_fast, (double)hp->yarn_beta_slow,
                    (double)fb_rope_mscale(&s->rope));
    s->layers = m->layers;
    if (hp->gemma) {
        s->act = FZ_ACT_GELU;
        s->embd_scale = sqrtf((float)hp->n_embd);
        s->attn_scale = hp->attn_scale;
        s->attn_softcap = hp->attn_softcap;
        s->final_softcap = hp->final_softcap;
        s->n_swa = hp->n_swa;
        /* llama.cpp's local layers: their own base, no linear scaling */
        s->rope_swa = s->rope;
        s->rope_swa.freq_base = hp->rope_freq_base_swa;
        if (strcmp(hp->arch, "gemma3") == 0)
            s->rope_swa.freq_scale = 1.0f;
    }
    s->qk_norm_full = hp->qk_norm_full;
    s->n_expert = hp->n_expert;
    s->n_expert_used = hp->n_expert_used;
    s->n_ff_exp = hp->n_ff_exp;
    if (hp->n_ff_shexp > 0)
        s->n_ff = hp->n_ff_shexp; /* the plan's dense feed-forward is the shared expert */
    s->moe_gating = FZ_GATING_SOFTMAX;
    s->moe_norm_w = hp->moe_norm_w;
    s->moe_w_scale = 0.0f;
    if (hp->gptoss) {
        s->act = FZ_ACT_SWIGLU_OAI;
        s->moe_gating = FZ_GATING_SOFTMAX_WEIGHT;
        s->n_swa = hp->n_swa;
        /* llama.cpp's local layers: the file's base and scale (get_rope_freq_base/_scale) */
        s->rope_swa = s->rope;
        s->rope_swa.freq_base = hp->rope_freq_base_swa;
        s->rope_swa.freq_scale = hp->rope_freq_scale_swa;
    }
    return 0;
}

/* ---- KV cache ---- */

/* Each layer's K and V caches hold n_seq_max slots of n_ctx rows of their type
 * (fz_kv_t's layout); a local layer's slot holds a ring of window + n_batch_max - 1 rows
 * instead: a step writes its rows before it attends, so its first row's window (n_swa - 1
 * rows before it) must survive the step's own n_batch_max rows at most, and every shorter
 * rewind (a rejected draft, a stop string: rows of the last step) finds its window intact
 * too.  llama.cpp's SWA cache is window + ubatch cells a sequence for the same reason. */
static int alloc_cache(llm_model_t *m, const llm_load_params_t *p, char *err, size_t errlen)
{
    const llm_hparams_t *hp = &m->hp;
    size_t rk = fb_kv_row_bytes(m->type_k, hp->n_head_kv, hp->head_dim);
    size_t rv = fb_kv_row_bytes(m->type_v, hp->n_head_kv, hp->head_dim);
    int64_t ring = (int64_t)hp->n_swa + m->n_batch_max - 1;
    m->ring = 0;
    if (hp->n_swa_layers > 0 && hp->n_swa > 0 && !p->swa_full && fb_attn_ring(m->be) &&
        ring < hp->n_ctx)
        m->ring = (int)ring;
    m->rings = calloc((size_t)hp->n_layer, sizeof(*m->rings));
    m->kc = calloc((size_t)hp->n_layer, sizeof(*m->kc));
    m->vc = calloc((size_t)hp->n_layer, sizeof(*m->vc));
    m->slots = calloc((size_t)m->n_seq_max, sizeof(*m->slots));
    /* checkpoints stand in for what a ring forgets: nothing to keep without rings */
    m->n_ckpt = m->ring > 0 ? p->n_ckpt : 0;
    m->ckpts = m->n_ckpt ? calloc((size_t)m->n_seq_max * (size_t)m->n_ckpt, sizeof(*m->ckpts))
                         : NULL;
    if (!m->kc || !m->vc || !m->slots || !m->rings || (m->n_ckpt && !m->ckpts))
        return -ENOMEM;
    m->cache_bytes = 0;
    for (int l = 0; l < hp->n_layer; l++) {
        m->rings[l] = m->ring > 0 && m->layers[l].swa ? m->ring : 0;
        size_t rows, bytes_k, bytes_v;
        if (fd_mul_size((size_t)(m->rings[l] ? m->rings[l] : hp->n_ctx), (size_t)m->n_seq_max,
                        &rows) ||
            fd_mul_size(rows, rk, &bytes_k) || fd_mul_size(rows, rv, &bytes_v) ||
            bytes_k + bytes_v < bytes_k || m->cache_bytes + bytes_k + bytes_v < m->cache_bytes) {
            snprintf(err, errlen, "KV cache size overflows (n_ctx %d, %d sequences)", hp->n_ctx,
                     m->n_seq_max);
            return FD_ERANGE;
        }
        m->cache_bytes += bytes_k + bytes_v;
        m->kc[l] = fb_alloc(m->be, bytes_k);
        m->vc[l] = fb_alloc(m->be, bytes_v);
        if (!m->kc[l] || !m->vc[l]) {
            snprintf(err, errlen, "cannot allocate the KV cache: %d layers x %zu + %zu bytes "
                     "(n_ctx %d, %d sequences, K %s, V %s); lower --ctx", hp->n_layer, bytes_k,
                     bytes_v, hp->n_ctx, m->n_seq_max, fb_kv_type_name(m->type_k),
                     fb_kv_type_name(m->type_v));
            return -ENOMEM;
        }
    }
    return 0;
}

static void ckpt_drop(llm_model_t *m, ckpt_t *c);

static void free_cache(llm_model_t *m)
{
    for (int i = 0; m->ckpts && i < m->n_seq_max * m->n_ckpt; i++)
        ckpt_drop(m, &m->ckpts[i]);
    free(m->ckpts);
    m->ckpts = NULL;
    for (int l = 0; m->kc && l < m->hp.n_layer; l++)
        if (m->kc[l])
            fb_free(m->be, m->kc[l]);
    for (int l = 0; m->vc && l < m->hp.n_layer; l++)
        if (m->vc[l])
            fb_free(m->be, m->vc[l]);
    free(m->kc);
    free(m->vc);
    free(m->rings);
    m->kc = m->vc = NULL;
    m->rings = NULL;
}

/* The sliding-window layers' cache, said once at load. */
static void log_swa(const llm_model_t *m, const llm_load_params_t *p)
{
    const llm_hparams_t *hp = &m->hp;
    if (hp->n_swa_layers == 0 || hp->n_swa <= 0)
        return;
    if (m->ring > 0)
        fd_log_info("%s: sliding window of %d on %d of %d layers: their KV cache keeps %d "
                    "positions a sequence (window + batch %d - 1) of n_ctx %d; KV cache %zu "
                    "bytes (--swa-full keeps every position)", gguf_path(m->g), hp->n_swa,
                    hp->n_swa_layers, hp->n_layer, m->ring, m->n_batch_max, hp->n_ctx,
                    m->cache_bytes);
    if (m->n_ckpt > 0)
        fd_log_info("%s: context checkpoints: up to %d a sequence of at most %zu bytes each "
                    "(%d sequences: at most %zu bytes of host memory)", gguf_path(m->g),
                    m->n_ckpt, llm_ckpt_bytes_each(m), m->n_seq_max, llm_ckpt_bytes_max(m));
    else
        fd_log_info("%s: sliding window of %d on %d of %d layers: the KV cache keeps every "
                    "position of every layer (%s); KV cache %zu bytes", gguf_path(m->g),
                    hp->n_swa, hp->n_swa_layers, hp->n_layer,
                    p->swa_full ? "--swa-full"
                    : !fb_attn_ring(m->be) ? "the backend reads no ring caches"
                                           : "window + batch - 1 is not below n_ctx",
                    m->cache_bytes);
}

/* ---- bert (an encoder: fusion/encoder.h) ---- */

static bool slot_ok(const llm_model_t *m, int slot);

static bool is_bert(const gguf_t *g)
{
    gguf_str_t a;
    return gguf_get_str(g, "general.architecture", &a) == 0 && str_is(a, "bert");
}

/* llama.cpp's bert hyperparameters: the usual sizes, attention.layer_norm_epsilon, an
 * optional pooling_type (4: rank) and attention.causal (true is refused: a causal BERT is
 * not what the arch means). */
static int bert_hparams(llm_model_t *m, const llm_load_params_t *p, char *err, size_t errlen)
{
    const gguf_t *g = m->g;
    llm_hparams_t *hp = &m->hp;
    const char *ar = "bert";
    snprintf(hp->arch, sizeof(hp->arch), "%s", ar);
    uint32_t ctx, embd, layers, ff, heads, heads_kv, pool;
    int rc;
    if ((rc = get_u32(g, ar, "context_length", true, 0, &ctx, err, errlen)) ||
        (rc = get_u32(g, ar, "embedding_length", true, 0, &embd, err, errlen)) ||
        (rc = get_u32(g, ar, "block_count", true, 0, &layers, err, errlen)) ||
        (rc = get_u32(g, ar, "feed_forward_length", true, 0, &ff, err, errlen)) ||
        (rc = get_u32(g, ar, "attention.head_count", true, 0, &heads, err, errlen)) ||
        (rc = get_u32(g, ar, "attention.head_count_kv", false, heads, &heads_kv, err, errlen)) ||
        (rc = get_f32(g, ar, "attention.layer_norm_epsilon", true, 0, &hp->norm_eps, err,
                      errlen)))
        return rc;
    if (embd % heads || heads_kv != heads) {
        snprintf(err, errlen, "%s: bert: embedding_length %u, head_count %u, head_count_kv %u: "
                 "the heads must split the embedding evenly and K/V heads equal Q heads",
                 gguf_path(g), embd, heads, heads_kv);
        return FD_EFORMAT;
    }
    bool causal = false;
    if (gguf_get_bool(g, "bert.attention.causal", &causal) == 0 && causal) {
        snprintf(err, errlen, "%s: bert.attention.causal is true: a causal bert is not "
                 "supported (BERT encoders attend both ways)", gguf_path(g));
        return FD_EUNSUP;
    }
    hp->pooling = gguf_get_u32(g, "bert.pooling_type", &pool) == 0 && pool <= 4 ? (int)pool : -1;
    hp->encoder = true;
    hp->n_ctx_train = (int)ctx;
    hp->n_ctx = p->n_ctx > 0 ? p->n_ctx : (int)ctx;
    hp->n_embd = (int)embd;
    hp->n_layer = (int)layers;
    hp->n_head = hp->n_head_kv = (int)heads;
    hp->head_dim = (int)(embd / heads);
    hp->n_ff = (int)ff;
    hp->rope_freq_scale = 1.0f;
    return 0;
}

/* A matrix whose row count the file sets (position and type tables, the head's output):
 * n_in columns, 1..max rows. */
static int rows_matrix(llm_model_t *m, const char *name, int64_t n_in, int64_t max, bool need,
                       fb_weight_t *w, char *err, size_t errlen)
{
    const gguf_tensor_t *t = gguf_find_tensor(m->g, name);
    memset(w, 0, sizeof(*w));
    if (!t && !need)
        return 0;
    int64_t rows = t ? t->ne[1] : 1;
    if (t && (rows < 1 || rows > max)) {
        snprintf(err, errlen, "%s: tensor %s has %lld rows (1 to %lld expected)",
                 gguf_path(m->g), name, (long long)rows, (long long)max);
        return FD_ESHAPE;
    }
    return matrix(m, name, n_in, rows, need, w, err, errlen);
}

/* A matrix with its bias vector (name.weight and name.bias, both required). */
static int biased(llm_model_t *m, const char *name, int64_t n_in, int64_t n_out,
                  fb_weight_t *w, char *err, size_t errlen)
{
    char wn[96], bn[96];
    snprintf(wn, sizeof(wn), "%s.weight", name);
    snprintf(bn, sizeof(bn), "%s.bias", name);
    int rc = matrix(m, wn, n_in, n_out, true, w, err, errlen);
    if (rc == 0)
        rc = vector(m, bn, n_out, true, &w->bias, err, errlen);
    return rc;
}

static int norm_pair(llm_model_t *m, const char *name, int64_t n, const float **g,
                     const float **b, char *err, size_t errlen)
{
    char gn[96], bn[96];
    snprintf(gn, sizeof(gn), "%s.weight", name);
    snprintf(bn, sizeof(bn), "%s.bias", name);
    int rc = vector(m, gn, n, true, g, err, errlen);
    if (rc == 0)
        rc = vector(m, bn, n, true, b, err, errlen);
    return rc;
}

/* convert_hf_to_gguf's BertModel tensors: token_embd, position_embd, token_types,
 * token_embd_norm, per layer attn_q/k/v/output (+ bias), attn_output_norm, ffn_up/down
 * (+ bias), layer_output_norm, and the classification head cls / cls.output. */
static int bert_tensors(llm_model_t *m, fz_enc_src_t *s, char *err, size_t errlen)
{
    llm_hparams_t *hp = &m->hp;
    const gguf_tensor_t *emb = gguf_find_tensor(m->g, "token_embd.weight");
    if (!emb) {
        snprintf(err, errlen, "%s: tensor token_embd.weight is missing", gguf_path(m->g));
        return FD_EFORMAT;
    }
    if (emb->ne[1] < 1 || emb->ne[1] > (1 << 24)) {
        snprintf(err, errlen, "%s: tensor token_embd.weight has %lld rows (vocabulary size "
                 "out of range)", gguf_path(m->g), (long long)emb->ne[1]);
        return FD_ESHAPE;
    }
    hp->n_vocab = (int)emb->ne[1];
    const int64_t E = hp->n_embd, F = hp->n_ff;
    if ((int64_t)hp->n_layer * 16 > gguf_n_tensors(m->g)) {
        snprintf(err, errlen, "%s: block_count %d needs %lld tensors; the file has %lld",
                 gguf_path(m->g), hp->n_layer, (long long)hp->n_layer * 16,
                 (long long)gguf_n_tensors(m->g));
        return FD_EFORMAT;
    }
    m->enc_layers = calloc((size_t)hp->n_layer, sizeof(*m->enc_layers));
    if (!m->enc_layers)
        return -ENOMEM;
    int rc;
    if ((rc = matrix(m, "token_embd.weight", E, hp->n_vocab, true, &s->tok_embd, err,
                     errlen)) ||
        (rc = rows_matrix(m, "position_embd.weight", E, 1 << 20, true, &s->pos_embd, err,
                          errlen)) ||
        (rc = rows_matrix(m, "token_types.weight", E, 64, false, &s->type_embd, err, errlen)) ||
        (rc = norm_pair(m, "token_embd_norm", E, &s->emb_ln_g, &s->emb_ln_b, err, errlen)))
        return rc;
    for (int l = 0; l < hp->n_layer; l++) {
        fz_enc_layer_src_t *y = &m->enc_layers[l];
        char n[8][64];
        const char *suf[8] = { "attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down",
                               "attn_output_norm", "layer_output_norm" };
        for (int i = 0; i < 8; i++)
            snprintf(n[i], sizeof(n[i]), "blk.%d.%s", l, suf[i]);
        if ((rc = biased(m, n[0], E, E, &y->wq, err, errlen)) ||
            (rc = biased(m, n[1], E, E, &y->wk, err, errlen)) ||
            (rc = biased(m, n[2], E, E, &y->wv, err, errlen)) ||
            (rc = biased(m, n[3], E, E, &y->wo, err, errlen)) ||
            (rc = biased(m, n[4], E, F, &y->up, err, errlen)) ||
            (rc = biased(m, n[5], F, E, &y->down, err, errlen)) ||
            (rc = norm_pair(m, n[6], E, &y->attn_ln_g, &y->attn_ln_b, err, errlen)) ||
            (rc = norm_pair(m, n[7], E, &y->out_ln_g, &y->out_ln_b, err, errlen)))
            return rc;
    }
    /* the classification head: cls (E -> E) + bias, then cls.output (E -> n) + bias */
    if (gguf_find_tensor(m->g, "cls.weight")) {
        if ((rc = biased(m, "cls", E, E, &s->cls, err, errlen)))
            return rc;
        const gguf_tensor_t *o = gguf_find_tensor(m->g, "cls.output.weight");
        if (o && (rc = rows_matrix(m, "cls.output.weight", E, 1 << 16, true, &s->cls_out, err,
                                   errlen)))
            return rc;
        if (o && (rc = vector(m, "cls.output.bias", s->cls_out.n_out, true, &s->cls_out.bias,
                              err, errlen)))
            return rc;
        hp->n_cls_out = (int)(o ? s->cls_out.n_out : E);
    } else if (gguf_find_tensor(m->g, "cls.output.weight")) {
        snprintf(err, errlen, "%s: tensor cls.output.weight without cls.weight (the "
                 "classification head's first dense layer)", gguf_path(m->g));
        return FD_EFORMAT;
    }
    hp->n_type = s->type_embd.src ? (int)s->type_embd.n_out : 0;
    const int n_pos = (int)s->pos_embd.n_out;
    if (hp->n_ctx > n_pos) {
        fd_log_info("%s: context %d is past the %d learned positions: using %d",
                    gguf_path(m->g), hp->n_ctx, n_pos, n_pos);
        hp->n_ctx = n_pos;
    }
    int64_t np = 0;
    for (int64_t i = 0; i < gguf_n_tensors(m->g); i++)
        np += gguf_tensor_nelems(gguf_tensor_at(m->g, i));
    hp->n_params = np;
    s->n_layer = hp->n_layer;
    s->n_embd = hp->n_embd;
    s->n_head = hp->n_head;
    s->head_dim = hp->head_dim;
    s->n_ff = hp->n_ff;
    s->n_vocab = hp->n_vocab;
    s->n_pos = n_pos;
    s->eps = hp->norm_eps;
    s->layers = m->enc_layers;
    return 0;
}

/* The whole load of an encoder; llm_free unwinds whatever part exists. */
static int bert_load(llm_model_t *m, const llm_load_params_t *p, char *err, size_t errlen)
{
    if (p->n_lora > 0) {
        snprintf(err, errlen, "%s: LoRA adapters are not supported on a bert (encoder) model",
                 gguf_path(m->g));
        return FD_EUNSUP;
    }
    fz_enc_src_t src;
    memset(&src, 0, sizeof(src));
    int rc;
    if ((rc = bert_hparams(m, p, err, errlen)) || (rc = bert_tensors(m, &src, err, errlen)) ||
        (rc = tok_load(&m->tok, m->g, err, errlen)))
        return rc;
    if (tok_n_vocab(m->tok) != m->hp.n_vocab) {
        snprintf(err, errlen, "%s: the vocabulary has %d tokens but token_embd.weight has %d "
                 "rows", gguf_path(m->g), (int)tok_n_vocab(m->tok), m->hp.n_vocab);
        return FD_ESHAPE;
    }
    /* the second segment's token type starts after [SEP]; XLM-RoBERTa's pairs (t5
     * vocabulary) are all type 0, as Hugging Face runs them */
    m->sep = tok_kind(m->tok) == TOK_UGM ? -1
             : tok_sep(m->tok) >= 0 ? tok_sep(m->tok) : tok_eos(m->tok);
    fb_config_t cfg = { .threads = p->threads, .options = p->backend_options };
    if ((rc = fb_create(p->backend ? p->backend : "cpu", &cfg, &m->be, err, errlen)))
        return rc;
    /* every input runs whole in one forward: a batch holds at least the longest */
    m->n_batch_max = FD_MAX(m->n_batch_max, m->hp.n_ctx);
    if (m->fusion)
        fd_log_info("%s: bert runs one plan with fusion on or off: its post-LayerNorm blocks "
                    "need every normalized row (the residual), so deferring the norm past "
                    "the next product saves nothing", gguf_path(m->g));
    m->fusion = false;
    if ((rc = fz_enc_create(&m->enc, m->be, &src, m->n_batch_max, m->n_seq_max, err, errlen)))
        return rc;
    m->slots = calloc((size_t)m->n_seq_max, sizeof(*m->slots));
    m->enc_seqs = calloc((size_t)m->n_seq_max, sizeof(*m->enc_seqs));
    m->enc_types = malloc((size_t)m->n_batch_max * sizeof(*m->enc_types));
    m->ids = malloc((size_t)m->n_batch_max * sizeof(*m->ids));
    if (!m->slots || !m->enc_seqs || !m->enc_types || !m->ids)
        return -ENOMEM;
    fd_log_info("%s: bert encoder, %d layers, n_embd %d, %d heads, n_ff %d, %d positions, "
                "%d token types, pooling %d, classification head: %d outputs",
                gguf_path(m->g), m->hp.n_layer, m->hp.n_embd, m->hp.n_head, m->hp.n_ff,
                src.n_pos, m->hp.n_type, m->hp.pooling, m->hp.n_cls_out);
    return 0;
}

/* An encoder step: each entry a whole input, packed into forwards of at most n_batch_max
 * rows (an input is never split: its rows attend to each other). */
static int bert_decode(llm_model_t *m, const llm_batch_entry_t *e, int n)
{
    if (n < 1 || n > m->n_seq_max || !e)
        return -EINVAL;
    for (int i = 0; i < n; i++) {
        const llm_batch_entry_t *b = &e[i];
        if (!slot_ok(m, b->slot) || b->n_tokens < 1 || !b->tokens || b->want_logits ||
            b->enc_pool < LLM_ENC_SUM || b->enc_pool > LLM_ENC_RANK ||
            (b->enc_pool == LLM_ENC_SUM && (b->want_hidden < 0 || b->want_hidden > b->n_tokens)) ||
            (b->enc_pool == LLM_ENC_RANK && m->hp.n_cls_out == 0) ||
            ((b->enc_pool != LLM_ENC_SUM || b->want_hidden > 0) && !b->hidden))
            return -EINVAL;
        for (int j = 0; j < i; j++)
            if (e[j].slot == b->slot)
                return -EINVAL;
        for (int t = 0; t < b->n_tokens; t++)
            if (b->tokens[t] < 0 || b->tokens[t] >= m->hp.n_vocab)
                return -EINVAL;
        if (b->n_tokens > m->hp.n_ctx)
            return FD_ECTX;
    }
    for (int i = 0; i < n;) {
        int rows = 0, ns = 0;
        bool typed = false;
        while (i < n && rows + e[i].n_tokens <= m->n_batch_max) {
            const llm_batch_entry_t *b = &e[i++];
            bool after_sep = false;
            for (int t = 0; t < b->n_tokens; t++) {
                m->ids[rows + t] = b->tokens[t];
                /* a pair's second segment: type 1 after its first [SEP] */
                m->enc_types[rows + t] = after_sep && m->hp.n_type > 1;
                after_sep = after_sep || (b->enc_pool == LLM_ENC_RANK && b->tokens[t] == m->sep);
                typed = typed || m->enc_types[rows + t];
            }
            int pool = b->enc_pool == LLM_ENC_RANK    ? FZ_ENC_RANK
                       : b->enc_pool == LLM_ENC_FIRST ? FZ_ENC_FIRST
                                                      : FZ_ENC_SUM;
            m->enc_seqs[ns++] = (fz_enc_seq_t){ .n_rows = b->n_tokens, .pool = pool,
                                                .want = b->want_hidden, .out = b->hidden };
            rows += b->n_tokens;
        }
        int rc = fz_enc_forward(m->enc, m->ids, typed ? m->enc_types : NULL, rows, m->enc_seqs,
                                ns);
        if (rc)
            return rc;
    }
    for (int i = 0; i < n; i++)
        m->slots[e[i].slot].len = e[i].n_tokens;
    return 0;
}

/* ---- load / free ---- */

int llm_load(llm_model_t **out, const llm_load_params_t *p, char *err, size_t errlen)
{
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!p || !p->path) {
        snprintf(err, errlen, "no model path");
        return -EINVAL;
    }
    if (p->n_ctx < 0 || p->n_seq_max < 0 || p->n_batch_max < 0 || p->threads < 0 ||
        p->n_ckpt < 0) {
        snprintf(err, errlen, "negative n_ctx, n_seq_max, n_batch_max, threads or n_ckpt");
        return -EINVAL;
    }
    if (p->fusion && p->softmax_mode != FB_SOFTMAX_MAXSUM &&
        p->softmax_mode != FB_SOFTMAX_SUMONLY) {
        snprintf(err, errlen, "softmax mode %d: the fused plan takes maxsum or sumonly",
                 p->softmax_mode);
        return -EINVAL;
    }
    llm_model_t *m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    m->fusion = p->fusion;
    m->n_seq_max = p->n_seq_max ? p->n_seq_max : 1;
    m->n_batch_max = p->n_batch_max ? p->n_batch_max : 512;

    int rc = gguf_open(&m->g, p->path, err, errlen);
    if (rc)
        goto fail_open;
    if (is_bert(m->g)) {
        if ((rc = bert_load(m, p, err, errlen))) {
            if (rc == -ENOMEM && err && !err[0])
                snprintf(err, errlen, "out of memory");
            llm_free(m);
            return rc;
        }
        *out = m;
        return 0;
    }
    if ((rc = read_hparams(m, p, err, errlen)))
        goto fail_model;
    if ((rc = read_tensors(m, err, errlen)))
        goto fail_model;
    if ((rc = load_lora(m, p, err, errlen)))
        goto fail_model;
    if ((rc = tok_load(&m->tok, m->g, err, errlen)))
        goto fail_model;
    if (tok_n_vocab(m->tok) != m->hp.n_vocab) {
        snprintf(err, errlen, "%s: the vocabulary has %d tokens but token_embd.weight has %d "
                 "rows", gguf_path(m->g), (int)tok_n_vocab(m->tok), m->hp.n_vocab);
        rc = FD_ESHAPE;
        goto fail_tok;
    }

    fb_config_t cfg = { .threads = p->threads, .options = p->backend_options };
    if ((rc = fb_create(p->backend ? p->backend : "cpu", &cfg, &m->be, err, errlen)))
        goto fail_tok;
    if (m->hp.gptoss && !fb_gptoss_ops(m->be)) {
        snprintf(err, errlen, "%s: backend %s does not run gpt-oss models (it has no "
                 "attention sinks or swiglu_oai gating); use the cpu or corsair backend",
                 gguf_path(m->g), fb_name(m->be));
        rc = FD_EUNSUP;
        goto fail_backend;
    }
    m->type_k = p->cache_type_k;
    m->type_v = p->cache_type_v;
    if ((rc = fb_kv_check(m->be, m->type_k, m->type_v, m->hp.head_dim))) {
        if (rc == -EINVAL)
            snprintf(err, errlen, "KV cache types %d and %d: not cache types (%s)", m->type_k,
                     m->type_v, "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1");
        else
            snprintf(err, errlen, "backend %s cannot attend over a KV cache of K %s and V %s "
                     "(head_dim %d): choose other cache types", fb_name(m->be),
                     fb_kv_type_name(m->type_k), fb_kv_type_name(m->type_v), m->hp.head_dim);
        goto fail_backend;
    }
    fz_plan_opts_t po = { .fused = p->fusion, .softmax_mode = p->softmax_mode,
                          .fold_policy = 0, .max_rows = m->n_batch_max,
                          .max_seqs = m->n_seq_max };
    if ((rc = fz_plan_create(&m->plan, m->be, &m->src, &po, err, errlen)))
        goto fail_backend;
    if ((rc = alloc_cache(m, p, err, errlen)))
        goto fail_plan;
    log_swa(m, p);
    m->ids = malloc((size_t)m->n_batch_max * sizeof(*m->ids));
    m->pos = malloc((size_t)m->n_batch_max * sizeof(*m->pos));
    m->seqs = malloc((size_t)m->n_seq_max * sizeof(*m->seqs));
    if (!m->ids || !m->pos || !m->seqs) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto fail_scratch;
    }
    *out = m;
    return 0;

fail_scratch:
    free(m->ids);
    free(m->pos);
    free(m->seqs);
fail_plan:
    free_cache(m);
    free(m->slots);
    fz_plan_free(m->plan);
fail_backend:
    fb_destroy(m->be);
fail_tok:
    tok_free(m->tok);
fail_model:
    if (rc == -ENOMEM && err && !err[0])
        snprintf(err, errlen, "out of memory");
    for (int i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->experts);
    free_lora(m);
    gguf_close(m->g);
fail_open:
    free(m);
    return rc;
}

void llm_free(llm_model_t *m)
{
    if (!m)
        return;
    fz_enc_free(m->enc);
    free(m->enc_layers);
    free(m->enc_seqs);
    free(m->enc_types);
    free(m->ids);
    free(m->pos);
    free(m->seqs);
    free_cache(m);
    free(m->slots);
    fz_plan_free(m->plan);
    fb_destroy(m->be);
    tok_free(m->tok);
    for (int i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->experts);
    free_lora(m);
    gguf_close(m->g);
    free(m);
}

/* ---- sequences ---- */

int llm_seq_alloc(llm_model_t *m, int *slot)
{
    for (int s = 0; s < m->n_seq_max; s++) {
        if (!m->slots[s].used) {
            m->slots[s] = (slot_t){ .used = true };
            *slot = s;
            return 0;
        }
    }
    return FD_EFULL;
}

static bool slot_ok(const llm_model_t *m, int slot)
{
    return slot >= 0 && slot < m->n_seq_max && m->slots[slot].used;
}

/* ---- context checkpoints ---- */

/* The most rows one checkpoint holds: the window before its first position and the rest of
 * its span. */
static int ckpt_rows_max(const llm_model_t *m)
{
    return m->hp.n_swa - 1 + LLM_CKPT_SPAN - 1;
}

static size_t ckpt_row_bytes(const llm_model_t *m)
{
    return (size_t)m->hp.n_swa_layers *
           (fb_kv_row_bytes(m->type_k, m->hp.n_head_kv, m->hp.head_dim) +
            fb_kv_row_bytes(m->type_v, m->hp.n_head_kv, m->hp.head_dim));
}

size_t llm_ckpt_bytes_each(const llm_model_t *m)
{
    return m->n_ckpt ? (size_t)ckpt_rows_max(m) * ckpt_row_bytes(m) : 0;
}

size_t llm_ckpt_bytes_max(const llm_model_t *m)
{
    return llm_ckpt_bytes_each(m) * (size_t)m->n_ckpt * (size_t)m->n_seq_max;
}

static ckpt_t *slot_ckpts(const llm_model_t *m, int slot)
{
    return m->ckpts + (size_t)slot * (size_t)m->n_ckpt;
}

static void ckpt_drop(llm_model_t *m, ckpt_t *c)
{
    if (c->buf) {
        fb_host_free(m->be, c->buf);
        m->ckpt_bytes -= c->bytes;
    }
    *c = (ckpt_t){ 0 };
}

/* Drops slot's checkpoint i (the last one moves into its place). */
static void ckpt_remove(llm_model_t *m, int slot, int i)
{
    ckpt_t *ck = slot_ckpts(m, slot);
    slot_t *sl = &m->slots[slot];
    ckpt_drop(m, &ck[i]);
    ck[i] = ck[--sl->n_ck];
    ck[sl->n_ck] = (ckpt_t){ 0 };
}

/* Copies the K and V rows of positions [a, a + n) of slot's local layers between the rings
 * and a checkpoint's buffer of n_buf rows a layer, from its row off (out: rings to buf).  A
 * ring holds them as one or two runs. */
static int ckpt_copy(llm_model_t *m, int slot, int a, int n, char *buf, int n_buf, int off,
                     bool out)
{
    const llm_hparams_t *hp = &m->hp;
    const size_t rk = fb_kv_row_bytes(m->type_k, hp->n_head_kv, hp->head_dim);
    const size_t rv = fb_kv_row_bytes(m->type_v, hp->n_head_kv, hp->head_dim);
    const int64_t ring = m->ring;
    const int64_t r0 = a % ring, n1 = FD_MIN((int64_t)n, ring - r0);
    const int64_t run_row[2] = { (int64_t)slot * ring + r0, (int64_t)slot * ring };
    const int64_t run_n[2] = { n1, n - n1 };
    for (int l = 0; l < hp->n_layer; l++) {
        if (!m->rings[l])
            continue;
        for (int kv = 0; kv < 2; kv++) {
            const size_t rb = kv ? rv : rk;
            char *dev = kv ? m->vc[l] : m->kc[l];
            char *host = buf + (kv ? (size_t)n_buf * rk : 0) + (size_t)off * rb;
            for (int r = 0, done = 0; r < 2; done += (int)run_n[r], r++) {
                if (run_n[r] == 0)
                    continue;
                char *d = dev + (size_t)run_row[r] * rb, *h = host + (size_t)done * rb;
                size_t bytes = (size_t)run_n[r] * rb;
                int rc = out ? fb_to_host(m->be, h, d, bytes) : fb_to_device(m->be, d, h, bytes);
                if (rc < 0)
                    return rc;
            }
        }
        buf += (size_t)n_buf * (rk + rv);
    }
    return fb_sync(m->be);
}

int llm_seq_checkpoint(llm_model_t *m, int slot, int first, int last)
{
    if (!slot_ok(m, slot) || first < 0 || first > last || last > m->slots[slot].len)
        return -EINVAL;
    slot_t *sl = &m->slots[slot];
    if (m->n_ckpt == 0 || last == 0)
        return 0;
    /* the span a checkpoint covers, and what the rings still hold of it (the window before
     * a position p > 0 is held while p - n_swa + 1 >= lo, or all of it while lo is 0) */
    first = FD_MAX(first, last - (LLM_CKPT_SPAN - 1));
    if (sl->lo > 0)
        first = FD_MAX(first, sl->lo + m->hp.n_swa - 1);
    first = FD_MAX(first, 1);
    if (first > last)
        return FD_ERANGE;
    ckpt_t *ck = slot_ckpts(m, slot);
    for (int i = 0; i < sl->n_ck; i++)
        if (ck[i].first <= first && last <= ck[i].last)
            return 0;  /* one already covers it */
    const int a = FD_MAX(0, first - m->hp.n_swa + 1), n = last - a;
    const size_t bytes = (size_t)n * ckpt_row_bytes(m);
    void *buf = fb_host_alloc(m->be, bytes);
    if (!buf)
        return -ENOMEM;
    int rc = ckpt_copy(m, slot, a, n, buf, n, 0, true);
    if (rc < 0) {
        fb_host_free(m->be, buf);
        return rc;
    }
    if (sl->n_ck == m->n_ckpt) {
        int old = 0;
        for (int i = 1; i < sl->n_ck; i++)
            if (ck[i].stamp < ck[old].stamp)
                old = i;
        ckpt_remove(m, slot, old);
    }
    ck[sl->n_ck++] = (ckpt_t){ .first = first, .last = last, .a = a, .last_saved = last,
                               .stamp = ++m->ckpt_stamp, .buf = buf, .bytes = bytes };
    m->ckpt_bytes += bytes;
    return 1;
}

int llm_seq_n_checkpoints(const llm_model_t *m, int slot)
{
    return slot_ok(m, slot) ? m->slots[slot].n_ck : -EINVAL;
}

/* The checkpoint of slot from which it can go on at the largest position <= len, that
 * position in *at; NULL when none can. */
static ckpt_t *ckpt_best(const llm_model_t *m, int slot, int len, int *at)
{
    ckpt_t *ck = slot_ckpts(m, slot), *best = NULL;
    *at = 0;
    for (int i = 0; i < m->slots[slot].n_ck; i++) {
        int p = FD_MIN(ck[i].last, len);
        if (p >= ck[i].first && p > *at) {
            best = &ck[i];
            *at = p;
        }
    }
    return best;
}

/* After a truncation to len: a checkpoint keeps only positions up to len (what follows will
 * be other tokens), and goes when its span lies past len. */
static void ckpt_trim(llm_model_t *m, int slot, int len)
{
    ckpt_t *ck = slot_ckpts(m, slot);
    for (int i = m->slots[slot].n_ck - 1; i >= 0; i--) {
        if (ck[i].first > len)
            ckpt_remove(m, slot, i);
        else
            ck[i].last = FD_MIN(ck[i].last, len);
    }
}

void llm_seq_free(llm_model_t *m, int slot)
{
    if (!slot_ok(m, slot))
        return;
    while (m->slots[slot].n_ck > 0)
        ckpt_remove(m, slot, m->slots[slot].n_ck - 1);
    m->slots[slot] = (slot_t){ 0 };
}

int llm_seq_len(const llm_model_t *m, int slot)
{
    return slot_ok(m, slot) ? m->slots[slot].len : -EINVAL;
}

/* Whether the rings still hold the window before len (positions lo .. len - 1 are held). */
static bool can_continue(const llm_model_t *m, int slot, int len)
{
    return len == 0 || m->ring == 0 || FD_MAX(0, len - m->hp.n_swa + 1) >= m->slots[slot].lo;
}

int llm_seq_reusable(const llm_model_t *m, int slot, int len)
{
    if (!slot_ok(m, slot) || len < 0 || len > m->slots[slot].len)
        return -EINVAL;
    if (can_continue(m, slot, len))
        return len;
    int at;
    return ckpt_best(m, slot, len, &at) ? at : 0;
}

int llm_seq_truncate(llm_model_t *m, int slot, int len)
{
    if (!slot_ok(m, slot) || len < 0 || len > m->slots[slot].len)
        return -EINVAL;
    slot_t *sl = &m->slots[slot];
    int rc = 0;
    if (!can_continue(m, slot, len)) {
        int at;
        ckpt_t *c = ckpt_best(m, slot, len, &at);
        if (!c || at != len)
            return FD_ERANGE;
        /* the window before len back into the rings, at the rows its positions take */
        const int a = FD_MAX(0, len - m->hp.n_swa + 1);
        rc = ckpt_copy(m, slot, a, len - a, c->buf, c->last_saved - c->a, a - c->a, false);
        if (rc < 0) {
            /* the rings are partly overwritten: nothing of the sequence is reusable */
            llm_seq_free(m, slot);
            sl->used = true;
            return rc;
        }
        sl->lo = a;
        rc = 1;
    }
    sl->len = len;
    if (len == 0)
        sl->lo = 0;
    ckpt_trim(m, slot, len);
    return rc;
}

/* ---- the step ---- */

static int check_batch(const llm_model_t *m, const llm_batch_entry_t *e, int n, float *logits)
{
    if (n < 1 || n > m->n_seq_max || !e)
        return -EINVAL;
    for (int i = 0; i < n; i++) {
        if (!slot_ok(m, e[i].slot) || e[i].n_tokens < 1 || !e[i].tokens)
            return -EINVAL;
        if (e[i].want_logits < 0 || e[i].want_logits > e[i].n_tokens ||
            (e[i].want_logits > 0 && !logits))
            return -EINVAL;
        if (e[i].want_hidden < 0 || e[i].want_hidden > e[i].n_tokens ||
            (e[i].want_hidden > 0 && !e[i].hidden) || e[i].enc_pool != LLM_ENC_SUM)
            return -EINVAL;
        for (int j = 0; j < i; j++)
            if (e[j].slot == e[i].slot)
                return -EINVAL;
        for (int t = 0; t < e[i].n_tokens; t++)
            if (e[i].tokens[t] < 0 || e[i].tokens[t] >= m->hp.n_vocab)
                return -EINVAL;
        if (e[i].n_tokens > m->hp.n_ctx - m->slots[e[i].slot].len)
            return FD_ECTX;
        if (!can_continue(m, e[i].slot, m->slots[e[i].slot].len))
            return FD_ERANGE; /* a failed step's rows overwrote the window */
    }
    return 0;
}

/* Rows of all entries are stacked, in entry order, into sub-batches of at most n_batch_max
 * rows (an entry longer than that is split across sub-batches: its later rows find the
 * earlier rows' K and V in the cache).  Lengths change only when every sub-batch ran. */
int llm_decode(llm_model_t *m, const llm_batch_entry_t *e, int n_entries, float *logits)
{
    if (m->enc)
        return bert_decode(m, e, n_entries);
    int rc = check_batch(m, e, n_entries, logits);
    if (rc)
        return rc;
    fz_kv_t kv = { .k = m->kc, .v = m->vc, .type_k = m->type_k, .type_v = m->type_v,
                   .n_ctx = m->hp.n_ctx, .ring = m->ring > 0 ? m->rings : NULL };
    int V = m->hp.n_vocab, n_logits = 0;
    int ent = 0, off = 0;      /* next token: entry ent, offset off */
    while (ent < n_entries) {
        int rows = 0, n_seqs = 0, first_logit = n_logits;
        while (ent < n_entries && rows < m->n_batch_max) {
            const llm_batch_entry_t *b = &e[ent];
            int take = FD_MIN(b->n_tokens - off, m->n_batch_max - rows);
            int base = m->slots[b->slot].len + off;
            for (int t = 0; t < take; t++) {
                m->ids[rows + t] = b->tokens[off + t];
                m->pos[rows + t] = base + t;
            }
            /* the entry's rows wanting logits are its last ones: this piece's share of them
             * is its own last rows */
            int first_want = b->n_tokens - b->want_logits;
            int nl = FD_MAX(0, off + take - FD_MAX(off, first_want));
            int first_hid = b->n_tokens - b->want_hidden;
            int nh = FD_MAX(0, off + take - FD_MAX(off, first_hid));
            off += take;
            bool last = off == b->n_tokens;
            m->seqs[n_seqs++] = (fz_seq_t){ .slot = b->slot, .n_rows = take, .want_logits = nl,
                                            .want_hidden = nh, .hidden = b->hidden,
                                            .lora = m->n_lora > 0 ? b->lora : NULL };
            n_logits += nl;
            rows += take;
            if (last) {
                ent++;
                off = 0;
            }
        }
        rc = fz_forward(m->plan, &kv, m->ids, m->pos, rows, m->seqs, n_seqs,
                        logits ? logits + (size_t)first_logit * (size_t)V : NULL);
        if (rc) {
            /* the lengths stay, but the rings may have lost what the rows written replaced */
            for (int i = 0; i < n_entries && m->ring > 0; i++) {
                slot_t *sl = &m->slots[e[i].slot];
                sl->lo = FD_MAX(sl->lo, sl->len + e[i].n_tokens - m->ring);
            }
            return rc;
        }
    }
    for (int i = 0; i < n_entries; i++) {
        slot_t *sl = &m->slots[e[i].slot];
        sl->len += e[i].n_tokens;
        /* the rings now hold the last ring positions written */
        if (m->ring > 0)
            sl->lo = FD_MAX(sl->lo, sl->len - m->ring);
    }
    return 0;
}
