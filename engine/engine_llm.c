/* engine_llm.c: eng_open: the scheduler (engine.c) driving a model loaded with llm_load and
 * its tokenizer, and a draft model beside it (params.draft_model: a second llm_load, one of
 * its KV sequences paired with each of the model's slots).  The driver functions run on the engine thread only; the model, tokenizer
 * and eng_info strings live until eng_close calls llm_close_driver after the thread ended. */
#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fd.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

typedef struct llm_drv {
    llm_model_t *m;
    const tok_t *tok;
    eng_info_t info;
    char model_id[256];
    char *chat_template;
    const char **lora_paths;         /* llm_n_lora of them, the model's strings */
    llm_model_t *dm;                 /* the draft model, or NULL */
    int *dslot;                      /* its sequence for each of the model's slots (-1) */
    llm_batch_entry_t *dent;         /* a draft pass's entries with its sequences */
    char draft_id[256];
} llm_drv_t;

static int d_seq_alloc(void *ctx, int *slot)
{
    llm_drv_t *d = ctx;
    int rc = llm_seq_alloc(d->m, slot);
    if (rc < 0 || !d->dm)
        return rc;
    if ((rc = llm_seq_alloc(d->dm, &d->dslot[*slot])) < 0) {
        llm_seq_free(d->m, *slot);
        d->dslot[*slot] = -1;
    }
    return rc;
}

static void d_seq_free(void *ctx, int slot)
{
    llm_drv_t *d = ctx;
    llm_seq_free(d->m, slot);
    if (d->dm && d->dslot[slot] >= 0) {
        llm_seq_free(d->dm, d->dslot[slot]);
        d->dslot[slot] = -1;
    }
}

static int d_draft_decode(void *ctx, const llm_batch_entry_t *e, int n, float *logits)
{
    llm_drv_t *d = ctx;
    for (int i = 0; i < n; i++) {
        d->dent[i] = e[i];
        d->dent[i].slot = d->dslot[e[i].slot];
        d->dent[i].lora = NULL;
    }
    return llm_decode(d->dm, d->dent, n, logits);
}

static int d_draft_len(void *ctx, int slot)
{
    llm_drv_t *d = ctx;
    return llm_seq_len(d->dm, d->dslot[slot]);
}

static int d_draft_truncate(void *ctx, int slot, int len)
{
    llm_drv_t *d = ctx;
    return llm_seq_truncate(d->dm, d->dslot[slot], len);
}

static int d_seq_len(void *ctx, int slot)
{
    return llm_seq_len(((llm_drv_t *)ctx)->m, slot);
}

static int d_seq_truncate(void *ctx, int slot, int len)
{
    return llm_seq_truncate(((llm_drv_t *)ctx)->m, slot, len);
}

static int d_seq_reusable(void *ctx, int slot, int len)
{
    return llm_seq_reusable(((llm_drv_t *)ctx)->m, slot, len);
}

static int d_seq_checkpoint(void *ctx, int slot, int first, int last)
{
    return llm_seq_checkpoint(((llm_drv_t *)ctx)->m, slot, first, last);
}

static size_t d_ckpt_bytes(void *ctx)
{
    return llm_ckpt_bytes(((llm_drv_t *)ctx)->m);
}

static int d_decode(void *ctx, const llm_batch_entry_t *e, int n, float *logits)
{
    return llm_decode(((llm_drv_t *)ctx)->m, e, n, logits);
}

static bool d_is_eog(void *ctx, int32_t token)
{
    return tok_is_eog(((llm_drv_t *)ctx)->tok, token);
}

/* Text that starts right after BOS drops the SPM dummy-prefix space, as a whole-text decode
 * does; after any other prompt the space is part of the continuation. */
static void d_stream_init(void *ctx, tok_stream_t *s, int32_t last_prompt_token)
{
    const tok_t *t = ((llm_drv_t *)ctx)->tok;
    tok_stream_init(s, t, tok_bos(t) >= 0 && last_prompt_token == tok_bos(t));
}

static int d_stream_push(void *ctx, tok_stream_t *s, int32_t token, char *out, size_t cap,
                         size_t *len)
{
    return tok_stream_push(s, ((llm_drv_t *)ctx)->tok, token, out, cap, len);
}

static int d_stream_flush(void *ctx, tok_stream_t *s, char *out, size_t cap, size_t *len)
{
    return tok_stream_flush(s, out, cap, len);
}

static void d_stats(void *ctx, fb_stats_t *out)
{
    fb_stats_get(llm_backend(((llm_drv_t *)ctx)->m), out);
}

static void *d_host_alloc(void *ctx, size_t bytes)
{
    return fb_host_alloc(llm_backend(((llm_drv_t *)ctx)->m), bytes);
}

static void d_host_free(void *ctx, void *p)
{
    fb_host_free(llm_backend(((llm_drv_t *)ctx)->m), p);
}

static void d_close(void *ctx)
{
    llm_drv_t *d = ctx;
    llm_free(d->m);
    llm_free(d->dm);
    free(d->dslot);
    free(d->dent);
    free(d->chat_template);
    free(d->lora_paths);
    free(d);
}

static const char *softmax_name(int mode)
{
    switch (mode) {
    case FB_SOFTMAX_REF: return "ref";
    case FB_SOFTMAX_MAXSUM: return "maxsum";
    case FB_SOFTMAX_SUMONLY: return "sumonly";
    default: return "unknown";
    }
}

/* general.name, else the file name without its folder and ".gguf" (id: 256 bytes). */
static void model_id(const llm_model_t *m, const char *path, char *id)
{
    gguf_str_t s;
    if (gguf_get_str(llm_gguf(m), "general.name", &s) == 0 && s.len > 0) {
        snprintf(id, 256, "%.*s", (int)FD_MIN(s.len, 255), s.ptr);
        return;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".gguf") == 0)
        n -= 5;
    snprintf(id, 256, "%.*s", (int)FD_MIN(n, 255), base);
}

/* llama.cpp's vocabulary sizes of a model and its draft may differ by this much
 * (common/speculative.cpp), and token texts are compared from this id on */
#define DRAFT_VOCAB_DIFF 128
#define DRAFT_VOCAB_FIRST 5

/* A token's text for a message: printable ASCII as is, other bytes escaped, cut short. */
static void token_shown(const tok_t *t, int32_t id, char *out, size_t cap)
{
    const char *s = tok_token_text(t, id);
    size_t o = 0;
    for (; s && *s && o + 5 < cap; s++)
        o += (size_t)snprintf(out + o, cap - o, (unsigned char)*s >= 0x20 &&
                              (unsigned char)*s < 0x7f ? "%c" : "\\x%02x", (unsigned char)*s);
    out[o] = 0;
}

/* Whether the draft model's vocabulary can stand for the model's, as llama.cpp's
 * common_speculative_are_compatible decides it: the same vocabulary type, add-BOS and
 * add-EOS flags and BOS and EOS ids, sizes within DRAFT_VOCAB_DIFF, and the same text for
 * every id from DRAFT_VOCAB_FIRST that both have.  0, or FD_ECONFIG with the first
 * difference in err. */
static int draft_compatible(const tok_t *t, const tok_t *dt, const char *path, char *err,
                            size_t errlen)
{
    const char *what = NULL;
    if (tok_kind(t) != tok_kind(dt))
        what = "its vocabulary type differs";
    else if (tok_add_bos(t) != tok_add_bos(dt) || tok_add_eos(t) != tok_add_eos(dt))
        what = "it adds BOS or EOS otherwise";
    else if (tok_bos(t) != tok_bos(dt) || tok_eos(t) != tok_eos(dt))
        what = "its BOS or EOS token differs";
    if (what) {
        snprintf(err, errlen, "draft model %s: %s: speculative decoding needs the model's "
                 "vocabulary (BOS %d, EOS %d; draft BOS %d, EOS %d)", path, what, tok_bos(t),
                 tok_eos(t), tok_bos(dt), tok_eos(dt));
        return FD_ECONFIG;
    }
    const int32_t n = tok_n_vocab(t), nd = tok_n_vocab(dt);
    if (abs(n - nd) > DRAFT_VOCAB_DIFF) {
        snprintf(err, errlen, "draft model %s: %d tokens, the model %d: speculative decoding "
                 "needs the model's vocabulary (sizes within %d)", path, nd, n,
                 DRAFT_VOCAB_DIFF);
        return FD_ECONFIG;
    }
    for (int32_t i = DRAFT_VOCAB_FIRST; i < FD_MIN(n, nd); i++) {
        const char *a = tok_token_text(t, i), *b = tok_token_text(dt, i);
        if (a && b && strcmp(a, b) == 0)
            continue;
        char sa[48], sb[48];
        token_shown(t, i, sa, sizeof sa);
        token_shown(dt, i, sb, sizeof sb);
        snprintf(err, errlen, "draft model %s: token %d is '%s' there, '%s' in the model: "
                 "speculative decoding needs the model's vocabulary", path, (int)i, sb, sa);
        return FD_ECONFIG;
    }
    return 0;
}

/* Loads p->draft_model beside d->m (same backend options, one KV sequence for each of the
 * model's slots) and checks its vocabulary. */
static int draft_load(llm_drv_t *d, const eng_params_t *p, const llm_load_params_t *tp,
                      char *err, size_t errlen)
{
    llm_load_params_t lp;
    llm_load_params_default(&lp);
    lp.path = p->draft_model;
    lp.backend = p->draft_backend ? p->draft_backend : tp->backend;
    lp.backend_options = p->backend_options;
    lp.threads = p->draft_threads > 0 ? p->draft_threads : p->threads;
    lp.fusion = p->fusion;
    lp.softmax_mode = p->softmax_mode;
    lp.n_ctx = p->draft_n_ctx > 0 ? p->draft_n_ctx : llm_hparams(d->m)->n_ctx;
    lp.cache_type_k = p->cache_type_k;
    lp.cache_type_v = p->cache_type_v;
    lp.swa_full = p->swa_full;
    lp.n_seq_max = llm_n_seq_max(d->m);
    lp.n_batch_max = tp->n_batch_max;
    char e2[400];
    int rc = llm_load(&d->dm, &lp, e2, sizeof e2);
    if (rc < 0) {
        snprintf(err, errlen, "draft model: %s", e2);
        return rc;
    }
    if (llm_hparams(d->dm)->encoder || llm_hparams(d->m)->encoder) {
        snprintf(err, errlen, "draft model %s: speculative decoding needs two decoders, not "
                 "an encoder (%s)", p->draft_model, llm_hparams(d->m)->encoder
                 ? llm_hparams(d->m)->arch : llm_hparams(d->dm)->arch);
        return FD_ECONFIG;
    }
    if ((rc = draft_compatible(d->tok, llm_tok(d->dm), p->draft_model, err, errlen)) < 0)
        return rc;
    const int n = llm_n_seq_max(d->m);
    d->dslot = malloc((size_t)n * sizeof *d->dslot);
    d->dent = calloc((size_t)n, sizeof *d->dent);
    if (!d->dslot || !d->dent) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++)
        d->dslot[i] = -1;
    model_id(d->dm, p->draft_model, d->draft_id);
    return 0;
}

int eng_open(eng_t **out, const eng_params_t *p, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    *out = NULL;
    if (!p->model_path) {
        snprintf(err, errlen, "no model file given");
        return FD_ECONFIG;
    }
    if (p->max_running < 1 || p->prefill_chunk < 1 || p->max_batch_tokens < 0 ||
        p->ctx_checkpoints < 0) {
        snprintf(err, errlen, "max_running %d, prefill_chunk %d (>= 1), max_batch_tokens %d, "
                 "ctx_checkpoints %d (>= 0)", p->max_running, p->prefill_chunk,
                 p->max_batch_tokens, p->ctx_checkpoints);
        return FD_ECONFIG;
    }
    llm_drv_t *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    llm_load_params_t lp;
    llm_load_params_default(&lp);
    lp.path = p->model_path;
    if (p->backend)
        lp.backend = p->backend;
    lp.backend_options = p->backend_options;
    lp.threads = p->threads;
    lp.fusion = p->fusion;
    lp.softmax_mode = p->softmax_mode;
    lp.n_ctx = p->n_ctx;
    lp.cache_type_k = p->cache_type_k;
    lp.cache_type_v = p->cache_type_v;
    lp.lora = p->lora;
    lp.n_lora = p->n_lora;
    lp.swa_full = p->swa_full;
    lp.n_ckpt = p->prefix_cache ? p->ctx_checkpoints : 0; /* they serve the prefix cache */
    lp.rope = p->rope;
    lp.n_seq_max = p->max_running;
    /* the scheduler's step is one llm_decode call: size the activations for all of it */
    lp.n_batch_max = p->max_batch_tokens ? p->max_batch_tokens
                                         : p->max_running + 2 * p->prefill_chunk;
    lp.n_batch_max = FD_MAX(lp.n_batch_max, p->max_running + 1);
    int rc = llm_load(&d->m, &lp, err, errlen);
    if (rc < 0) {
        free(d);
        return rc;
    }
    d->tok = llm_tok(d->m);
    const llm_hparams_t *hp = llm_hparams(d->m);
    model_id(d->m, p->model_path, d->model_id);
    if (p->draft_model && p->draft_max > 0 &&
        (rc = draft_load(d, p, &lp, err, errlen)) < 0) {
        d_close(d);
        return rc;
    }
    gguf_str_t tmpl;
    if (gguf_get_str(llm_gguf(d->m), "tokenizer.chat_template", &tmpl) == 0) {
        d->chat_template = malloc(tmpl.len + 1);
        if (!d->chat_template) {
            snprintf(err, errlen, "out of memory");
            d_close(d);
            return -ENOMEM;
        }
        memcpy(d->chat_template, tmpl.ptr, tmpl.len);
        d->chat_template[tmpl.len] = 0;
    }
    if (llm_n_lora(d->m) > 0) {
        d->lora_paths = calloc((size_t)llm_n_lora(d->m), sizeof *d->lora_paths);
        if (!d->lora_paths) {
            snprintf(err, errlen, "out of memory");
            d_close(d);
            return -ENOMEM;
        }
        for (int i = 0; i < llm_n_lora(d->m); i++)
            d->lora_paths[i] = llm_lora_path(d->m, i);
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    d->info = (eng_info_t){
        .model_id = d->model_id,
        .model_path = gguf_path(llm_gguf(d->m)),
        .arch = hp->arch,
        .backend = fb_name(llm_backend(d->m)),
        .fusion = llm_fusion(d->m),
        .softmax_mode = softmax_name(llm_softmax_mode(d->m)),
        .n_ctx = hp->n_ctx,
        .n_ctx_train = hp->n_ctx_train,
        .n_vocab = hp->n_vocab,
        .n_embd = hp->n_embd,
        .pooling = hp->pooling,
        .encoder = hp->encoder,
        .n_cls_out = hp->n_cls_out,
        .n_layer = hp->n_layer,
        .n_head = hp->n_head,
        .n_head_kv = hp->n_head_kv,
        .n_params = hp->n_params,
        .file_bytes = gguf_file_size(llm_gguf(d->m)),
        .chat_template = d->chat_template,
        .threads = p->threads > 0 ? p->threads : (online > 0 ? (int)online : 1),
        .cache_type_k = fb_kv_type_name(llm_cache_type_k(d->m)),
        .cache_type_v = fb_kv_type_name(llm_cache_type_v(d->m)),
        .cache_bytes = llm_cache_bytes(d->m),
        .n_lora = llm_n_lora(d->m),
        .lora_paths = d->lora_paths,
        .swa_ring = llm_swa_ring(d->m),
        .ctx_checkpoints = llm_ctx_checkpoints(d->m),
        .ckpt_bytes_each = llm_ckpt_bytes_each(d->m),
        .ckpt_bytes_max = llm_ckpt_bytes_max(d->m),
        .draft_model = d->dm ? d->draft_id : NULL,
        .draft_path = d->dm ? gguf_path(llm_gguf(d->dm)) : NULL,
        .draft_n_ctx = d->dm ? llm_hparams(d->dm)->n_ctx : 0,
    };
    eng_driver_t drv = {
        .ctx = d,
        .info = &d->info,
        .tok = d->tok,
        .n_vocab = hp->n_vocab,
        .n_ctx = hp->n_ctx,
        .n_slots = llm_n_seq_max(d->m),
        .seq_alloc = d_seq_alloc,
        .seq_free = d_seq_free,
        .seq_len = d_seq_len,
        .seq_truncate = d_seq_truncate,
        .decode = d_decode,
        .is_eog = d_is_eog,
        .stream_init = d_stream_init,
        .stream_push = d_stream_push,
        .stream_flush = d_stream_flush,
        .stats = d_stats,
        .host_alloc = d_host_alloc,
        .host_free = d_host_free,
        .close = d_close,
        .seq_reusable = d_seq_reusable,
        .seq_checkpoint = d_seq_checkpoint,
        .ckpt_bytes = d_ckpt_bytes,
        .draft_n_vocab = d->dm ? llm_hparams(d->dm)->n_vocab : 0,
        .draft_n_ctx = d->dm ? llm_hparams(d->dm)->n_ctx : 0,
        .draft_decode = d->dm ? d_draft_decode : NULL,
        .draft_len = d->dm ? d_draft_len : NULL,
        .draft_truncate = d->dm ? d_draft_truncate : NULL,
    };
    /* eng_open_driver closes the driver (and so the model) when it fails */
    return eng_open_driver(out, p, &drv, err, errlen);
}
