/* engine.c: the scheduler core: continuous batching of many requests on one model, run by
 * one engine thread.
 *
 * Threads, and who owns what
 * - Caller threads (the server's event loop, tests) call eng_submit, eng_cancel,
 *   eng_cancel_all and eng_stats.  eng_submit builds the whole request (copies of the
 *   prompt and stop strings, the sampler with the prompt fed to its penalty history) before
 *   it takes e->mu, and under the lock only checks the bounds and links it into the queue.
 * - The engine thread (engine_main) owns the driver (model, KV cache, backend), the running
 *   requests' generation state (tokens, sampler, text buffers, timings) and calls every
 *   event callback.  It never holds e->mu while it decodes or calls back, so a callback may
 *   call any eng_* function except eng_close.
 * - e->mu guards: the waiting queue; the running array's membership; each request's
 *   `state` and `cancel` flag; the counters eng_stats publishes; `stopping`.  e->cv wakes the
 *   engine thread, which sleeps on it when no request is waiting or running (no polling).
 * A request's life: eng_submit (WAITING, queued) -> admitted at the start of a step under
 *   e->mu (RUNNING: KV tokens reserved, a slot allocated) -> prefill chunks -> one token per
 *   step -> finished by the engine thread: it leaves the running array and gives back its
 *   slot and reservation (counters updated under e->mu), THEN DONE is delivered (so a
 *   client that sees DONE also sees the freed capacity in eng_stats), then it is freed.
 *   eng_cancel only sets the flag; the engine acts on it at the start of its next step.
 *
 * One step
 *   1. Under e->mu: requests flagged cancelled or past their deadline are marked; waiting
 *      ones leave the queue.  Then admission in FIFO order while a running place is free and
 *      the head's prompt + max_tokens fits the KV budget (no overtaking: a large request at
 *      the head is not starved by small ones behind it).
 *   2. Marked requests finish (slot freed at once); admitted ones get a KV slot.
 *   3. One llm_decode batch: every running sequence whose prompt is processed feeds its
 *      last sampled token; then prompts still in prefill get chunks of at most
 *      prefill_chunk tokens, in admission order, until max_batch_tokens.  Only a prompt's
 *      last chunk asks for logits, except with prompt log-probabilities: then every chunk
 *      asks for all its rows' (at most plp_rows such rows a step: a bounded buffer), and
 *      each row becomes a prompt TOKEN event (emit_prompt) before any sampled token.
 *   4. Each sequence with logits samples a token (a constrained one through its grammar
 *      matcher's mask first: engine/grammar.h); text goes through the tokenizer's stream
 *      (complete UTF-8 only) and the stop-string matcher; TOKEN events; finished requests
 *      finish as in step 2.
 *   5. Counters published, on_step called, invariants checked (params.check, FD_DEBUG).
 *
 * Prefix cache (params.prefix_cache, engine thread; membership and counters under e->mu)
 *   A request that ends with its KV intact (stop, length, cancel, timeout: the engine acts
 *   on those between steps, so the slot holds exactly n_past valid tokens; not an error,
 *   whose step may have left the backend's state unknown) leaves its slot and tokens as a
 *   cached slot instead of freeing them.  Admission looks for the cached slot with the
 *   longest common prefix with the prompt; when at least prefix_cache_min tokens can be
 *   kept (never the last prompt token: its logits must be computed) the request takes that
 *   slot, truncated, and prefills only the rest.  Cached slots count against the slots and
 *   kv_total with the running ones; admission decides exactly as without the cache (places
 *   and reservations of running requests only) and then evicts least recently cached slots
 *   until the admitted request fits, so the cache never delays or refuses a request.
 *
 * Stop strings: generated text is kept in r->held until it can no longer be part of a stop
 * string; what is released is final.  A match anywhere in held ends the request with the text
 * before it (the stop string and anything after are dropped). */
#define _GNU_SOURCE /* memmem */
#include "config.h"

#include "engine/engine.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "engine/grammar.h"
#include "engine/ngram.h"
#include "engine/sampler.h"

enum req_state { REQ_WAITING = 1, REQ_RUNNING = 2 };

#define TH_WIN 64                /* bytes of the latest pieces a think tag is matched in */

typedef struct req {
    struct req *next, *prev;     /* waiting queue links (e->mu) */
    uint64_t id;
    int state;                   /* enum req_state (e->mu) */
    bool cancel;                 /* eng_cancel asked (e->mu) */

    /* set at submit, then the engine thread's */
    eng_event_cb on_event;
    void *ud;
    int32_t *tokens;             /* prompt, then generated; n_prompt + max_tokens */
    int n_prompt, max_tokens;
    int n_tokens;                /* prompt + generated so far */
    int n_past;                  /* tokens in the KV cache */
    int n_gen;
    int slot;                    /* -1 until admitted */
    int place;                   /* batch place 0..max_running-1 while running (e->mu) */
    int n_cached;                /* prompt tokens reused from a cached slot */
    int ckpt_at;                 /* where the prompt leaves, before its end, the cached
                                    sequence it shares the most with: a context checkpoint
                                    is made there (0: none) */
    /* n-gram speculation's adaptive draft length: grows while drafts are taken whole,
     * shrinks to what was taken; a failed shortest draft pauses drafting for draft_wait
     * steps, doubling (to 64) with each further failure */
    int draft_len;
    int draft_wait, draft_fails;
    /* a draft model's KV sequence beside the slot: it holds tokens[0..d_past); d_off: no
     * more drafts for this request (the draft model's context is full, or it failed) */
    int d_past;
    bool d_off;
    int64_t kv_need;             /* n_prompt + max_tokens, reserved while running */
    smp_t *smp;
    gr_matcher_t *gm;            /* constrained output, else NULL */
    uint32_t *allow;             /* its mask: one bit per vocabulary token */
    int n_probs;
    bool post_probs;             /* top holds the chain's survivors (sampling.post_probs) */
    bool plp;                    /* prompt log-probabilities wanted */
    int plp_top;
    bool no_reuse;               /* eng_request_t.no_cache_reuse */
    int pool;                    /* enum eng_pooling: an embedding request when not NONE */
    bool pool_norm;
    int n_embd;
    float *emb;                  /* pooling: the sum of the pooled rows' hidden states */
    bool encoder;                /* the model is an encoder: the prompt runs whole */
    bool ignore_eos;
    float *lora;                 /* n_lora adapter scales, NULL when none or all zero */
    int n_lora;
    char **stop;
    size_t *stop_len;
    int n_stop;
    size_t max_stop;
    uint64_t deadline_ns;        /* 0: none */
    int finish;                  /* decided finish reason, ENG_FINISH_NONE while going */
    const char *finish_msg;

    tok_stream_t ts;
    char *held;                  /* text not yet released */
    size_t n_held, cap_held;

    uint64_t t_submit, t_sched, t_prefill, t_first, t_done;
    double dev_s;

    /* the reasoning budget (eng_request_t.think_*): where the output is (TH_*), tokens
     * spent in the reasoning, the forced tokens and how many went out, the texts, and the
     * last pieces' bytes they are matched on */
    int th_state;
    int th_budget, th_used;
    int32_t *th_force;
    int n_th_force, th_k;
    char *th_open, *th_close;
    bool th_reopen;
    char th_win[TH_WIN];
    size_t th_n;
} req_t;

/* A finished sequence's KV slot kept for reuse. */
enum { TH_OFF = 0, TH_OUT, TH_IN, TH_FORCE, TH_DONE };
typedef struct cslot {
    int slot;
    int32_t *tokens;             /* the n tokens whose KV the slot holds (owned) */
    int n;
    uint64_t stamp;              /* when it was cached: the lowest is evicted first */
    float *lora;                 /* the adapter scales its KV was computed under (owned;
                                    NULL: none) */
} cslot_t;

/* One sampled token of a decoding sequence's run (n-gram speculation: several a step). */
typedef struct run_tok {
    int32_t tok;
    float lp;
    int n_top;
    int hist;                    /* recording it: 0, SAMPLED_GRAMMAR, or a negative errno */
} run_tok_t;

#define SAMPLED_GRAMMAR 1        /* the grammar matcher refused the token */

typedef struct sampled {
    int row0, n_rows;            /* the entry's rows in e->logits */
    int p0;                      /* the position of its first token */
    int n_draft;                 /* draft tokens fed after the last sampled one */
    int n_run;                   /* tokens sampled this step (the run), 0: none */
    run_tok_t *run;              /* e->spec_rows of them */
    eng_top_t *top;              /* e->spec_rows * SMP_MAX_TOP alternatives */
    const char *fail;            /* an error that ends the request after the run's tokens */
} sampled_t;

struct eng {
    eng_params_t p;
    eng_driver_t d;
    eng_info_t info;             /* used when the driver brings none */
    int max_running;
    int max_batch;
    int64_t kv_total;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool stopping;               /* e->mu */
    uint64_t next_id;            /* e->mu */
    req_t *wait_head, *wait_tail; /* e->mu */
    int n_waiting;               /* e->mu */
    req_t **run;                 /* admission order; membership changes under e->mu */
    int n_run;
    eng_stats_t pub;             /* published counters (e->mu) */
    bool cache_on;               /* params.prefix_cache and the driver can truncate */
    bool ckpt_on;                /* and make context checkpoints (params.ctx_checkpoints) */
    int cache_min;
    cslot_t *cache;              /* n_cache of d.n_slots; changes under e->mu */
    int n_cache;
    uint64_t cache_stamp;
    int *evict;                  /* slots schedule took out of the cache, freed after it */
    int n_evict;
    int spec_k;                  /* draft tokens a sequence a step at most, 0: speculation off */
    int spec_rows;               /* spec_k + 1: sampled tokens a sequence a step at most */
    int draft_min, lookup_min, lookup_max;
    /* a draft model (params.draft_model and the driver's draft_decode) */
    bool dm_on;
    float p_min;
    int dm_ctx;
    float *dlogits;              /* max_running rows of d.draft_n_vocab */
    llm_batch_entry_t *dent;     /* a draft pass's entries */
    int *dent_of;                /* the step entry each one is for */
    int *dbudget, *dk;           /* per step entry: draft tokens allowed, and drafted */

    /* engine thread only */
    llm_batch_entry_t *ent;
    req_t **ent_req;
    float *logits;               /* logits_rows rows of n_vocab */
    int logits_rows;
    int plp_rows;                /* prompt rows with logits per step (all requests) */
    req_t **admitted;
    int n_admitted;
    sampled_t *sampled;          /* per batch entry */
    run_tok_t *run_buf;          /* their runs and alternatives */
    eng_top_t *top_buf;
    char check_err[256];
    char step_err[160];

    /* the vocabulary trie for constrained output: built by the first eng_submit that asks
     * for it (under vocab_mu), then read-only until eng_close */
    pthread_mutex_t vocab_mu;
    gr_vocab_t *vocab;
};

static void engine_lock(eng_t *e)
{
    pthread_mutex_lock(&e->mu);
}

static void engine_unlock(eng_t *e)
{
    pthread_mutex_unlock(&e->mu);
}

const char *eng_finish_name(int reason)
{
    switch (reason) {
    case ENG_FINISH_STOP: return "stop";
    case ENG_FINISH_LENGTH: return "length";
    case ENG_FINISH_CANCEL: return "cancel";
    case ENG_FINISH_TIMEOUT: return "timeout";
    case ENG_FINISH_ERROR: return "error";
    default: return "none";
    }
}

void eng_params_default(eng_params_t *p)
{
    memset(p, 0, sizeof *p);
    p->backend = "cpu";
    p->fusion = true;
    p->softmax_mode = FB_SOFTMAX_MAXSUM;
    p->max_running = 16;
    p->max_waiting = 64;
    p->prefill_chunk = 256;
    p->ctx_checkpoints = 8;
    p->draft_p_min = 0.75f;
}

/* ---- requests ---- */

static void req_free(req_t *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->stop);
    free(r->stop_len);
    smp_free(r->smp);
    gr_matcher_free(r->gm);
    free(r->allow);
    free(r->held);
    free(r->emb);
    free(r->lora);
    free(r->th_force);
    free(r->th_open);
    free(r->th_close);
    free(r->tokens);
    free(r);
}

static int held_reserve(req_t *r, size_t extra)
{
    if (r->n_held + extra <= r->cap_held)
        return 0;
    size_t cap = FD_MAX(r->cap_held * 2, r->n_held + extra);
    cap = FD_MAX(cap, (size_t)256);
    char *h = realloc(r->held, cap);
    if (!h)
        return -ENOMEM;
    r->held = h;
    r->cap_held = cap;
    return 0;
}

#define SUBMIT_ERR(code, ...) (snprintf(err, errlen, __VA_ARGS__), (code))

/* The vocabulary trie, built at the first request that constrains its output. */
static int vocab_get(eng_t *e, const gr_vocab_t **out, char *err, size_t errlen)
{
    if (!e->d.tok)
        return SUBMIT_ERR(-EINVAL, "constrained output needs the model's tokenizer");
    int rc = 0;
    pthread_mutex_lock(&e->vocab_mu);
    if (!e->vocab)
        rc = gr_vocab_build(&e->vocab, e->d.tok);
    *out = e->vocab;
    pthread_mutex_unlock(&e->vocab_mu);
    return rc < 0 ? SUBMIT_ERR(rc, "cannot index the vocabulary for constrained output: %s",
                               fd_strerror(rc))
                  : 0;
}

/* DRY's sequence breakers as token sequences (engine.h). */
int eng_dry_breakers(smp_t *s, const eng_sampling_t *p, const tok_t *tok)
{
    static const char *const def[] = { "\n", ":", "\"", "*" };
    if (!(p->dry_multiplier > 0) || !tok)
        return 0;
    int nb = p->n_dry_breakers > 0 ? p->n_dry_breakers : (int)FD_ARRAY_LEN(def);
    const int V = tok_n_vocab(tok);
    char piece[256];
    int32_t ids[64];
    for (int b = 0; b < nb; b++) {
        const char *str = p->n_dry_breakers > 0 ? p->dry_breakers[b] : def[b];
        size_t sl = FD_MIN(strlen(str), (size_t)SMP_BREAKER_LEN);
        for (int32_t id = 0; id < V; id++) {
            size_t wl = 0;
            if (tok_piece(tok, id, true, piece, sizeof piece, &wl) < 0 || wl > sizeof piece)
                continue;
            /* the whole breaker inside the token: a single-token breaker */
            bool inside = false;
            for (size_t at = 0; !inside && at + sl <= wl; at++)
                inside = memcmp(piece + at, str, sl) == 0;
            if (inside) {
                int rc = smp_add_breaker(s, id, NULL, 0);
                if (rc == -ENOMEM)
                    return rc;
                continue;
            }
            /* the token ends with the breaker's start: its rest, tokenized, follows */
            for (size_t at = 0; at < wl; at++) {
                size_t i = 0;
                while (i < sl && at + i < wl && piece[at + i] == str[i])
                    i++;
                if (i == 0 || at + i < wl)
                    continue;
                size_t n = 0;
                int rc = tok_encode(tok, str + i, sl - i, false, false, ids, FD_ARRAY_LEN(ids),
                                    &n);
                if (rc == -ENOMEM)
                    return rc;
                if (rc < 0)
                    continue;
                if ((rc = smp_add_breaker(s, id, ids, (int)FD_MIN(n, 20))) == -ENOMEM)
                    return rc;
            }
        }
    }
    return 0;
}

/* Validates r and builds the engine's request (no lock taken). */
static int req_build(eng_t *e, const eng_request_t *q, req_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!q->prompt || q->n_prompt == 0)
        return SUBMIT_ERR(-EINVAL, "empty prompt");
    const bool embed = q->pooling != ENG_POOL_NONE;
    const eng_info_t *inf = eng_info(e);
    if (embed && (q->pooling < ENG_POOL_MEAN || q->pooling > ENG_POOL_RANK))
        return SUBMIT_ERR(-EINVAL, "pooling %d: 1 (mean), 2 (cls), 3 (last) or 4 (rank)",
                          q->pooling);
    if (q->pooling == ENG_POOL_RANK && inf->n_cls_out < 1)
        return SUBMIT_ERR(-EINVAL, "this model has no classification head: it gives no rank "
                          "scores");
    if (inf->encoder && !embed)
        return SUBMIT_ERR(-EINVAL, "an encoder model (%s) gives embeddings and rank scores "
                          "only: it generates nothing", inf->arch);
    if (inf->encoder && q->n_lora)
        return SUBMIT_ERR(-EINVAL, "an encoder model takes no LoRA scales");
    if (embed && (q->max_tokens != 0 || q->prompt_logprobs))
        return SUBMIT_ERR(-EINVAL, "an embedding request generates nothing: max_tokens 0 and "
                          "no prompt log-probabilities");
    if (embed && eng_info(e)->n_embd < 1)
        return SUBMIT_ERR(-EINVAL, "this model gives no embeddings");
    if (q->max_tokens < 0)
        return SUBMIT_ERR(-EINVAL, "max_tokens %d: must be >= 0", q->max_tokens);
    if (q->prompt_logprobs &&
        (q->prompt_top < 0 || q->prompt_top > SMP_MAX_TOP || q->prompt_top > e->d.n_vocab))
        return SUBMIT_ERR(-EINVAL, "prompt log-probabilities with %d alternatives: 0..%d",
                          q->prompt_top, FD_MIN(SMP_MAX_TOP, e->d.n_vocab));
    if (!q->on_event)
        return SUBMIT_ERR(-EINVAL, "no event callback");
    if (!(q->timeout_s >= 0) || isinf(q->timeout_s))
        return SUBMIT_ERR(-EINVAL, "timeout %g: must be >= 0 seconds", q->timeout_s);
    if (q->n_prompt + (size_t)q->max_tokens > (size_t)e->d.n_ctx)
        return SUBMIT_ERR(FD_ECTX,
                          "prompt (%zu tokens) + max_tokens (%d) = %zu tokens exceeds the "
                          "context window of %d tokens",
                          q->n_prompt, q->max_tokens, q->n_prompt + (size_t)q->max_tokens,
                          e->d.n_ctx);
    if ((int64_t)q->n_prompt + q->max_tokens > e->kv_total)
        return SUBMIT_ERR(FD_ECTX,
                          "prompt (%zu tokens) + max_tokens (%d) = %zu tokens exceeds the KV "
                          "cache budget of %lld tokens",
                          q->n_prompt, q->max_tokens, q->n_prompt + (size_t)q->max_tokens,
                          (long long)e->kv_total);
    for (size_t i = 0; i < q->n_prompt; i++)
        if (q->prompt[i] < 0 || q->prompt[i] >= e->d.n_vocab)
            return SUBMIT_ERR(-EINVAL, "prompt token %zu is %d: outside the vocabulary (0..%d)",
                              i, (int)q->prompt[i], e->d.n_vocab - 1);
    if (q->n_lora != 0 && (q->n_lora != eng_info(e)->n_lora || !q->lora))
        return SUBMIT_ERR(-EINVAL, "%d LoRA scales for %d adapters", q->n_lora,
                          eng_info(e)->n_lora);
    for (int i = 0; i < q->n_lora; i++)
        if (!isfinite(q->lora[i]))
            return SUBMIT_ERR(-EINVAL, "LoRA scale %d is not a finite number", i);
    if (q->n_stop < 0 || q->n_stop > ENG_MAX_STOP || (q->n_stop > 0 && !q->stop))
        return SUBMIT_ERR(-EINVAL, "%d stop strings: at most %d", q->n_stop, ENG_MAX_STOP);
    for (int i = 0; i < q->n_stop; i++)
        if (!q->stop[i] || !q->stop[i][0])
            return SUBMIT_ERR(-EINVAL, "stop string %d is empty", i);
    int rc = smp_check_params(&q->sampling, e->d.n_vocab, err, errlen);
    if (rc < 0)
        return rc;
    const gr_vocab_t *vocab = NULL;
    if (q->sampling.grammar && (rc = vocab_get(e, &vocab, err, errlen)) < 0)
        return rc;
    if (q->n_think_force > 0) {
        if (!q->think_force || !q->think_open || !q->think_close || !q->think_open[0] ||
            !q->think_close[0] || strlen(q->think_open) >= TH_WIN ||
            strlen(q->think_close) >= TH_WIN || q->think_budget < 0)
            return SUBMIT_ERR(-EINVAL, "reasoning budget: a budget >= 0, the opening and "
                              "closing texts (1..%d bytes) and the forced tokens are needed",
                              TH_WIN - 1);
        if (q->sampling.grammar || !e->d.tok)
            return SUBMIT_ERR(-EINVAL, "a reasoning budget cannot hold %s",
                              q->sampling.grammar ? "a constrained output (grammar)"
                                                  : "a model without a tokenizer");
        for (int i = 0; i < q->n_think_force; i++)
            if (q->think_force[i] < 0 || q->think_force[i] >= e->d.n_vocab)
                return SUBMIT_ERR(-EINVAL, "reasoning budget: forced token %d is %d: outside "
                                  "the vocabulary", i, (int)q->think_force[i]);
    }

    req_t *r = calloc(1, sizeof *r);
    if (!r)
        return SUBMIT_ERR(-ENOMEM, "out of memory");
    r->slot = -1;
    r->place = -1;
    r->n_prompt = (int)q->n_prompt;
    r->max_tokens = q->max_tokens;
    r->kv_need = (int64_t)q->n_prompt + q->max_tokens;
    r->tokens = malloc((size_t)r->kv_need * sizeof *r->tokens);
    if (!r->tokens)
        goto nomem;
    memcpy(r->tokens, q->prompt, q->n_prompt * sizeof *r->tokens);
    r->n_tokens = r->n_prompt;
    r->draft_len = e->spec_k;
    if ((rc = smp_create(&r->smp, &q->sampling, e->d.n_vocab)) < 0 ||
        (rc = eng_dry_breakers(r->smp, &q->sampling, eng_tokenizer(e))) < 0)
        goto fail;
    if (vocab) {
        size_t bits = (size_t)FD_MAX(e->d.n_vocab, gr_vocab_n(vocab));
        r->allow = calloc((bits + 31) / 32, sizeof *r->allow);
        if (!r->allow)
            goto nomem;
        if ((rc = gr_matcher_new(&r->gm, q->sampling.grammar, vocab)) < 0)
            goto fail;
    }
    for (int i = 0; i < r->n_prompt; i++)
        if ((rc = smp_accept(r->smp, r->tokens[i], 0)) < 0)
            goto fail;
    if (q->n_stop > 0) {
        r->stop = calloc((size_t)q->n_stop, sizeof *r->stop);
        r->stop_len = calloc((size_t)q->n_stop, sizeof *r->stop_len);
        if (!r->stop || !r->stop_len)
            goto nomem;
        for (int i = 0; i < q->n_stop; i++) {
            if (!(r->stop[i] = strdup(q->stop[i])))
                goto nomem;
            r->n_stop = i + 1;
            r->stop_len[i] = strlen(r->stop[i]);
            r->max_stop = FD_MAX(r->max_stop, r->stop_len[i]);
        }
    }
    if (q->n_think_force > 0) {
        r->th_force = malloc((size_t)q->n_think_force * sizeof *r->th_force);
        r->th_open = strdup(q->think_open);
        r->th_close = strdup(q->think_close);
        if (!r->th_force || !r->th_open || !r->th_close)
            goto nomem;
        memcpy(r->th_force, q->think_force, (size_t)q->n_think_force * sizeof *r->th_force);
        r->n_th_force = q->n_think_force;
        r->th_budget = q->think_budget;
        r->th_reopen = q->think_reopen;
        r->th_state = !q->think_inside ? TH_OUT : q->think_budget == 0 ? TH_FORCE : TH_IN;
    }
    r->n_probs = q->sampling.n_probs;
    r->post_probs = q->sampling.post_probs;
    r->plp = q->prompt_logprobs;
    r->plp_top = q->prompt_top;
    r->no_reuse = q->no_cache_reuse;
    if (embed) {
        r->pool = q->pooling;
        r->pool_norm = q->normalize;
        r->n_embd = q->pooling == ENG_POOL_RANK ? inf->n_cls_out : inf->n_embd;
        r->pool_norm = q->normalize && q->pooling != ENG_POOL_RANK;
        r->encoder = inf->encoder;
        if (!(r->emb = calloc((size_t)r->n_embd, sizeof *r->emb)))
            goto nomem;
    }
    bool any_lora = false;
    for (int i = 0; i < q->n_lora; i++)
        any_lora |= q->lora[i] != 0.0f;
    if (any_lora) {
        if (!(r->lora = malloc((size_t)q->n_lora * sizeof *r->lora)))
            goto nomem;
        memcpy(r->lora, q->lora, (size_t)q->n_lora * sizeof *r->lora);
        r->n_lora = q->n_lora;
    }
    r->ignore_eos = q->ignore_eos;
    r->on_event = q->on_event;
    r->ud = q->ud;
    r->t_submit = fd_now_ns();
    /* past a year the limit means nothing, and the nanoseconds would overflow */
    if (q->timeout_s > 0 && q->timeout_s < 365 * 86400.0)
        r->deadline_ns = r->t_submit + (uint64_t)(q->timeout_s * 1e9);
    *out = r;
    return 0;
nomem:
    rc = -ENOMEM;
fail:
    req_free(r);
    return SUBMIT_ERR(rc, "cannot set up the request: %s", fd_strerror(rc));
}

int eng_submit(eng_t *e, const eng_request_t *q, uint64_t *id, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = 0;
    if (!q)
        return SUBMIT_ERR(-EINVAL, "no request");
    req_t *r;
    int rc = req_build(e, q, &r, err, errlen);
    if (rc < 0)
        return rc;
    engine_lock(e);
    if (e->stopping) {
        engine_unlock(e);
        req_free(r);
        return SUBMIT_ERR(-ESHUTDOWN, "the engine is shutting down");
    }
    /* places that will be taken at the next step do not count against max_waiting */
    int free_places = FD_MAX(0, e->max_running - e->n_run);
    if (e->n_waiting >= e->p.max_waiting + free_places) {
        int n = e->n_waiting, running = e->n_run;
        engine_unlock(e);
        req_free(r);
        return SUBMIT_ERR(FD_EFULL, "the queue is full: %d requests waiting, %d running "
                          "(max_waiting %d, max_running %d)", n, running, e->p.max_waiting,
                          e->max_running);
    }
    r->id = ++e->next_id;
    r->state = REQ_WAITING;
    r->prev = e->wait_tail;
    if (e->wait_tail)
        e->wait_tail->next = r;
    else
        e->wait_head = r;
    e->wait_tail = r;
    e->n_waiting++;
    e->pub.waiting = e->n_waiting;
    if (id)
        *id = r->id;
    pthread_cond_signal(&e->cv);
    engine_unlock(e);
    return 0;
}

static req_t *find_live(eng_t *e, uint64_t id)
{
    for (req_t *r = e->wait_head; r; r = r->next)
        if (r->id == id)
            return r;
    for (int i = 0; i < e->n_run; i++)
        if (e->run[i]->id == id)
            return e->run[i];
    return NULL;
}

int eng_cancel(eng_t *e, uint64_t id)
{
    engine_lock(e);
    req_t *r = find_live(e, id);
    if (r) {
        r->cancel = true;
        pthread_cond_signal(&e->cv);
    }
    engine_unlock(e);
    return r ? 0 : -ENOENT;
}

void eng_cancel_all(eng_t *e)
{
    engine_lock(e);
    for (req_t *r = e->wait_head; r; r = r->next)
        r->cancel = true;
    for (int i = 0; i < e->n_run; i++)
        e->run[i]->cancel = true;
    pthread_cond_signal(&e->cv);
    engine_unlock(e);
}

/* The lowest batch place no running request holds (e->mu; n_run < max_running). */
static int free_place(const eng_t *e)
{
    for (int p = 0;; p++) {
        bool used = false;
        for (int i = 0; i < e->n_run && !used; i++)
            used = e->run[i]->place == p;
        if (!used)
            return p;
    }
}

int eng_slots(eng_t *e, eng_slot_t *out, int cap)
{
    engine_lock(e);
    int n = e->n_run;
    for (int i = 0; i < n && i < cap; i++)
        out[i] = (eng_slot_t){e->run[i]->place, e->run[i]->id};
    engine_unlock(e);
    return n;
}

void eng_stats(eng_t *e, eng_stats_t *out)
{
    engine_lock(e);
    *out = e->pub;
    engine_unlock(e);
}

const eng_info_t *eng_info(const eng_t *e)
{
    return &e->info;
}

const tok_t *eng_tokenizer(const eng_t *e)
{
    return e->d.tok;
}

static void logits_free(eng_t *e);

/* ---- events (engine thread) ---- */

static void emit_token(req_t *r, int32_t tok, size_t n_text, float logprob,
                       const eng_top_t *top, int n_top)
{
    eng_event_t ev = {
        .type = ENG_EV_TOKEN,
        .id = r->id,
        .t_ns = fd_now_ns(),
        .token = tok,
        .text = r->held ? r->held : "",
        .text_len = n_text,
        .logprob = logprob,
        .top = n_top > 0 ? top : NULL,
        .n_top = n_top,
        .slot = r->place,
    };
    r->on_event(r->ud, &ev);
    if (n_text > 0) {
        memmove(r->held, r->held + n_text, r->n_held - n_text);
        r->n_held -= n_text;
    }
}

static double ns_s(uint64_t a, uint64_t b)
{
    return b > a ? (double)(b - a) * 1e-9 : 0.0;
}

/* The pooled embedding from the sum of the pooled rows' states: a mean divides by the prompt
 * length; the L2 norm is taken in double so long vectors of small values keep precision. */
static void pool_finish(req_t *r)
{
    if (r->pool == ENG_POOL_MEAN)
        for (int j = 0; j < r->n_embd; j++)
            r->emb[j] /= (float)r->n_prompt;
    if (!r->pool_norm)
        return;
    double ss = 0;
    for (int j = 0; j < r->n_embd; j++)
        ss += (double)r->emb[j] * r->emb[j];
    if (ss > 0) {
        float inv = (float)(1.0 / sqrt(ss));
        for (int j = 0; j < r->n_embd; j++)
            r->emb[j] *= inv;
    }
}

static void emit_done(req_t *r)
{
    eng_event_t ev = { .type = ENG_EV_DONE, .id = r->id, .t_ns = r->t_done,
                       .finish = r->finish, .error = r->finish_msg, .slot = r->place };
    if (r->pool != ENG_POOL_NONE && r->finish == ENG_FINISH_STOP) {
        pool_finish(r);
        ev.embedding = r->emb;
        ev.n_embedding = r->n_embd;
    }
    eng_timings_t *t = &ev.timings;
    uint64_t sched = r->t_sched ? r->t_sched : r->t_done;
    t->queue_s = ns_s(r->t_submit, sched);
    t->prefill_s = ns_s(sched, r->t_prefill ? r->t_prefill : r->t_done);
    t->ttft_s = r->t_first ? ns_s(r->t_submit, r->t_first) : 0;
    t->decode_s = r->t_first ? ns_s(r->t_first, r->t_done) : 0;
    t->total_s = ns_s(r->t_submit, r->t_done);
    t->device_s = r->dev_s;
    t->n_prompt = r->n_prompt;
    t->n_gen = r->n_gen;
    t->n_cached = r->n_cached;
    r->on_event(r->ud, &ev);
}

static void finish_mark(req_t *r, int reason, const char *msg)
{
    if (r->finish == ENG_FINISH_NONE) {
        r->finish = reason;
        r->finish_msg = msg;
    }
}

/* Whether a finished request's slot holds exactly its n_past tokens' valid KV, worth
 * keeping.  Errors are not kept: a failed step may have left the backend in any state. */
static bool cache_keepable(eng_t *e, const req_t *r)
{
    if (!e->cache_on || r->slot < 0 || r->n_past < e->cache_min)
        return false;
    if (r->finish != ENG_FINISH_STOP && r->finish != ENG_FINISH_LENGTH &&
        r->finish != ENG_FINISH_CANCEL && r->finish != ENG_FINISH_TIMEOUT)
        return false;
    return !e->d.seq_len || e->d.seq_len(e->d.ctx, r->slot) == r->n_past;
}

/* Takes cache entry i out (e->mu held); its tokens are freed, its slot is the caller's. */
static cslot_t cache_take(eng_t *e, int i)
{
    cslot_t c = e->cache[i];
    e->cache[i] = e->cache[--e->n_cache];
    e->pub.cached_slots = e->n_cache;
    e->pub.kv_cached -= c.n;
    free(c.tokens);
    free(c.lora);
    c.tokens = NULL;
    c.lora = NULL;
    return c;
}

/* Evicts the least recently cached slot (e->mu held); freed by the engine after schedule. */
static void cache_evict_lru(eng_t *e)
{
    int lru = 0;
    for (int i = 1; i < e->n_cache; i++)
        if (e->cache[i].stamp < e->cache[lru].stamp)
            lru = i;
    e->evict[e->n_evict++] = cache_take(e, lru).slot;
    e->pub.cache_evictions++;
}

/* The cached slot r can reuse the most prompt tokens from (at least cache_min, keep), or -1.
 * A driver with sliding-window rings may keep less of a slot than the common prefix
 * (seq_reusable: a ring's window, or a context checkpoint's position);
 * *ring_miss is set when that made the best choice worse than the common prefix alone, and
 * *branch is the longest common prefix with a cached slot r may reuse that r leaves before
 * that slot's end (0: none). */
static int cache_lookup(const eng_t *e, const req_t *r, int *keep, bool *ring_miss,
                        int *branch)
{
    int best = -1, best_keep = 0, best_common = 0;
    *ring_miss = false;
    *branch = 0;
    if (r->plp || r->pool != ENG_POOL_NONE || r->no_reuse)
        return -1;  /* a cached prefix's rows would have no logits or hidden states */
    for (int i = 0; i < e->n_cache; i++) {
        const cslot_t *c = &e->cache[i];
        if ((c->lora == NULL) != (r->lora == NULL) ||
            (r->lora && memcmp(c->lora, r->lora, (size_t)r->n_lora * sizeof *r->lora) != 0))
            continue;  /* its KV was computed under other adapter scales */
        int n = FD_MIN(c->n, r->n_prompt - 1), k = 0;
        while (k < n && c->tokens[k] == r->tokens[k])
            k++;
        best_common = FD_MAX(best_common, k);
        if (k < c->n)
            *branch = FD_MAX(*branch, k);
        if (k > 0 && e->d.seq_reusable) {
            int u = e->d.seq_reusable(e->d.ctx, c->slot, k);
            k = u < 0 ? 0 : FD_MIN(u, k);
        }
        if (k > best_keep || (k == best_keep && best >= 0 && c->stamp > e->cache[best].stamp)) {
            best = i;
            best_keep = k;
        }
    }
    if (best_common >= e->cache_min && best_keep < best_common)
        *ring_miss = true;
    if (best < 0 || best_keep < e->cache_min)
        return -1;
    *keep = best_keep;
    return best;
}

/* Ends a running request: slot (to the cache or freed) and reservation back, counters,
 * DONE, free. */
static void finish_running(eng_t *e, req_t *r)
{
    bool keep = cache_keepable(e, r);
    if (r->slot >= 0 && !keep)
        e->d.seq_free(e->d.ctx, r->slot);
    const size_t ckpt_bytes = e->ckpt_on ? e->d.ckpt_bytes(e->d.ctx) : 0;
    engine_lock(e);
    int i = 0;
    while (i < e->n_run && e->run[i] != r)
        i++;
    memmove(&e->run[i], &e->run[i + 1], (size_t)(e->n_run - i - 1) * sizeof *e->run);
    e->n_run--;
    e->pub.running = e->n_run;
    e->pub.kv_reserved -= r->kv_need;
    e->pub.kv_used -= r->slot >= 0 ? r->n_past : 0;
    if (e->ckpt_on)
        e->pub.ckpt_bytes = ckpt_bytes;
    if (keep) {
        /* its reservation covered n_past, so reserved + cached stays within kv_total */
        e->cache[e->n_cache++] = (cslot_t){ r->slot, r->tokens, r->n_past, ++e->cache_stamp,
                                            r->lora };
        r->tokens = NULL;
        r->lora = NULL;
        e->pub.cached_slots = e->n_cache;
        e->pub.kv_cached += r->n_past;
    }
    engine_unlock(e);
    r->slot = -1;
    r->t_done = fd_now_ns();
    emit_done(r);
    req_free(r);
}

/* Ends a request that never ran (it already left the queue). */
static void finish_waiting(req_t *r)
{
    r->t_done = fd_now_ns();
    emit_done(r);
    req_free(r);
}

/* ---- text and stop strings (engine thread) ---- */

/* Length of the longest suffix of held that is a proper prefix of a stop string. */
static size_t stop_prefix_tail(const req_t *r)
{
    size_t best = 0;
    for (int i = 0; i < r->n_stop; i++) {
        size_t L = FD_MIN(r->stop_len[i] - 1, r->n_held);
        for (; L > best; L--) {
            if (memcmp(r->held + r->n_held - L, r->stop[i], L) == 0) {
                best = L;
                break;
            }
        }
    }
    return best;
}

/* Offset of the earliest complete stop string in held, or -1. */
static long stop_find(const req_t *r)
{
    long best = -1;
    for (int i = 0; i < r->n_stop; i++) {
        const char *m = memmem(r->held, r->n_held, r->stop[i], r->stop_len[i]);
        if (m && (best < 0 || m - r->held < best))
            best = m - r->held;
    }
    return best;
}

/* Appends the token's text (or the stream's flush when tok < 0) to held. */
static int text_append(eng_t *e, req_t *r, int32_t tok)
{
    size_t need = 64, len = 0;
    for (;;) {
        int rc = held_reserve(r, need);
        if (rc < 0)
            return rc;
        char *out = r->held + r->n_held;
        size_t cap = r->cap_held - r->n_held;
        rc = tok >= 0 ? e->d.stream_push(e->d.ctx, &r->ts, tok, out, cap, &len)
                      : e->d.stream_flush(e->d.ctx, &r->ts, out, cap, &len);
        if (rc == -ENOSPC && len > cap) {
            need = len;
            continue;
        }
        if (rc < 0)
            return rc;
        r->n_held += len;
        return 0;
    }
}

/* A sampled token (already recorded in the sampler's history and the grammar matcher when
 * it was sampled: t->hist says how that went): text, stop strings, the TOKEN event, and the
 * finish it causes. */
static void on_sampled(eng_t *e, req_t *r, const run_tok_t *t, const eng_top_t *top)
{
    const int32_t tok = t->tok;
    const float logprob = t->lp;
    const int n_top = t->n_top;
    r->tokens[r->n_tokens++] = tok;
    r->n_gen++;
    if (!r->t_first)
        r->t_first = fd_now_ns();
    int rc = t->hist < 0 ? t->hist : 0;
    if (t->hist == SAMPLED_GRAMMAR) {
        finish_mark(r, ENG_FINISH_ERROR, "the sampled token breaks response_format");
        emit_token(r, tok, 0, logprob, top, n_top);
        return;
    }
    bool eog = !r->ignore_eos && e->d.is_eog(e->d.ctx, tok);
    if (rc == 0)
        rc = text_append(e, r, eog ? -1 : tok);
    if (rc < 0) {
        finish_mark(r, ENG_FINISH_ERROR, "out of memory for the generated text");
        emit_token(r, tok, 0, logprob, top, n_top);
        return;
    }
    bool last = eog || r->n_gen >= r->max_tokens || r->n_tokens >= e->d.n_ctx;
    if (last && !eog && text_append(e, r, -1) < 0)
        finish_mark(r, ENG_FINISH_ERROR, "out of memory for the generated text");
    size_t release;
    long at = stop_find(r);
    if (at >= 0) {
        /* a stop string that is not valid UTF-8 may match inside a character: drop it whole */
        while (at > 0 && ((uint8_t)r->held[at] & 0xC0) == 0x80)
            at--;
        release = (size_t)at;
        r->n_held = (size_t)at;         /* the stop string and what follows are dropped */
        finish_mark(r, ENG_FINISH_STOP, NULL);
    } else if (last) {
        release = r->n_held;
        finish_mark(r, eog ? ENG_FINISH_STOP : ENG_FINISH_LENGTH, NULL);
    } else {
        release = r->n_held - stop_prefix_tail(r);
        /* a stop string that is not valid UTF-8 could cut a character: release whole ones */
        while (release > 0 && release < r->n_held && ((uint8_t)r->held[release] & 0xC0) == 0x80)
            release--;
    }
    emit_token(r, tok, release, logprob, top, n_top);
}

/* ---- the step (engine thread) ---- */

/* Publishes a step's counters, before any of its events goes out: a client that sees a
 * token or DONE also sees the step in eng_stats. */
static void publish_step(eng_t *e, int n_seqs, int n_tok, uint64_t prompt_tok, uint64_t gen_tok,
                         int64_t kv_add, uint64_t drafted, uint64_t accepted)
{
    fb_stats_t ops;
    memset(&ops, 0, sizeof ops);
    if (e->d.stats)
        e->d.stats(e->d.ctx, &ops);
    engine_lock(e);
    e->pub.steps++;
    e->pub.last_batch_seqs = n_seqs;
    e->pub.last_batch_tokens = n_tok;
    e->pub.prompt_tokens += prompt_tok;
    e->pub.gen_tokens += gen_tok;
    e->pub.kv_used += kv_add;
    e->pub.draft_tokens += drafted;
    e->pub.draft_accepted += accepted;
    e->pub.ops = ops;
    engine_unlock(e);
}

static double dev_total(eng_t *e)
{
    if (!e->d.stats)
        return 0;
    fb_stats_t st;
    e->d.stats(e->d.ctx, &st);
    return st.dev_total_s;
}

/* Grows the logits buffer to rows rows (its contents are not kept). */
static int logits_grow(eng_t *e, int rows)
{
    size_t bytes;
    if (fd_mul_size((size_t)rows, (size_t)e->d.n_vocab, &bytes) < 0 ||
        fd_mul_size(bytes, sizeof(float), &bytes) < 0)
        return FD_ERANGE;
    float *p = e->d.host_alloc && e->d.host_free ? e->d.host_alloc(e->d.ctx, bytes)
                                                 : malloc(bytes);
    if (!p)
        return -ENOMEM;
    logits_free(e);
    e->logits = p;
    e->logits_rows = rows;
    return 0;
}

/* The prompt TOKEN events of one prefill chunk: row k of the entry's logits (position
 * p0 + k of the prompt, the chunk's rows being all wanted) predicts prompt token p0 + k + 1.
 * The rows are read one at a time: no per-position vocabulary-sized state is kept. */
static void emit_prompt(eng_t *e, req_t *r, const sampled_t *sp)
{
    const int V = e->d.n_vocab;
    eng_top_t top[SMP_MAX_TOP];
    for (int k = 0; k < sp->n_rows && r->finish == ENG_FINISH_NONE; k++) {
        int pos = sp->p0 + k + 1;
        if (pos >= r->n_prompt)
            break;
        float *lg = e->logits + (size_t)(sp->row0 + k) * (size_t)V;
        eng_event_t ev = { .type = ENG_EV_TOKEN, .id = r->id, .token = r->tokens[pos],
                           .text = "", .prompt = true, .n_top = r->plp_top, .slot = r->place,
                           .top = r->plp_top > 0 ? top : NULL };
        int rc = smp_logprobs(r->smp, lg, r->tokens[pos], &ev.logprob, &ev.rank, top,
                              r->plp_top);
        if (rc < 0) {
            finish_mark(r, ENG_FINISH_ERROR, rc == FD_ERANGE
                        ? "the model gave no finite logit for a prompt position"
                        : "out of memory for the prompt's log-probabilities");
            return;
        }
        ev.t_ns = fd_now_ns();
        r->on_event(r->ud, &ev);
    }
}

/* The draft of decoding sequence r this step (n-gram speculation), written in place after
 * its tokens: at most cap tokens, and never so many that its run could pass max_tokens or
 * the context end (a run emits up to k + 1 tokens; the context's last token is emitted but
 * never fed, as without speculation).  r->tokens holds n_prompt + max_tokens, so the draft
 * fits.  0: speculation off, or no draft worth verifying. */
static int draft_for(const eng_t *e, req_t *r, int cap)
{
    if (e->spec_k == 0)
        return 0;
    if (!e->dm_on && r->draft_wait > 0) {
        r->draft_wait--;
        return 0;
    }
    int k = FD_MIN(e->dm_on ? e->spec_k : r->draft_len, cap);
    k = FD_MIN(k, r->max_tokens - r->n_gen - 1);
    k = FD_MIN(k, e->d.n_ctx - r->n_tokens - 1);
    if (e->dm_on) {
        /* the draft model holds the tokens and all drafts but the last */
        if (r->d_off || r->n_tokens >= e->dm_ctx) {
            r->d_off = true;
            return 0;
        }
        k = FD_MIN(k, e->dm_ctx - r->n_tokens + 1);
        return k >= e->draft_min ? k : 0;   /* a budget: draft_model_pass drafts */
    }
    if (k < e->draft_min)
        return 0;
    k = ngram_draft(r->tokens, r->n_tokens, e->lookup_min, e->lookup_max, k,
                    &r->tokens[r->n_tokens]);
    return k >= e->draft_min ? k : 0;
}

static bool win_ends(const req_t *r, const char *tag)
{
    size_t k = strlen(tag);
    return r->th_n >= k && memcmp(r->th_win + r->th_n - k, tag, k) == 0;
}

/* The reasoning budget after token tok (sampled or forced): where the output is now. */
static void think_after(eng_t *e, req_t *r, int32_t tok)
{
    if (r->th_state == TH_FORCE) {
        if (++r->th_k == r->n_th_force) {
            r->th_state = r->th_reopen ? TH_OUT : TH_DONE;
            r->th_n = 0;
        }
        return;
    }
    char piece[TH_WIN];
    size_t len = 0;
    int prc = tok_piece(e->d.tok, tok, true, piece, sizeof piece, &len);
    if (prc < 0) /* a longer piece holds no tag: it clears the window below */
        len = prc == -ENOSPC ? TH_WIN : 0;
    if (len >= TH_WIN) {
        r->th_n = 0;
    } else {
        if (r->th_n + len > TH_WIN) {
            size_t drop = r->th_n + len - TH_WIN;
            memmove(r->th_win, r->th_win + drop, r->th_n - drop);
            r->th_n -= drop;
        }
        memcpy(r->th_win + r->th_n, piece, len);
        r->th_n += len;
    }
    if (r->th_state == TH_OUT) {
        if (win_ends(r, r->th_open)) {
            r->th_state = r->th_used >= r->th_budget ? TH_FORCE : TH_IN;
            r->th_k = 0;
            r->th_n = 0;
        }
    } else if (r->th_state == TH_IN) {
        r->th_used++;
        if (win_ends(r, r->th_close)) {
            r->th_state = r->th_reopen ? TH_OUT : TH_DONE;
            r->th_n = 0;
        } else if (r->th_used >= r->th_budget) {
            r->th_state = TH_FORCE;
            r->th_k = 0;
        }
    }
}

/* ---- the draft model (params.draft_model; engine thread) ---- */

/* Cuts r's draft sequence back to its first len tokens (those still r's): a truncation the
 * draft model refuses empties it (always possible) and ends r's drafting. */
static void draft_sync(eng_t *e, req_t *r, int len)
{
    if (r->d_past <= len)
        return;
    if (e->d.draft_truncate(e->d.ctx, r->slot, len) >= 0) {
        r->d_past = len;
        return;
    }
    r->d_off = true;
    if (e->d.draft_truncate(e->d.ctx, r->slot, 0) >= 0)
        r->d_past = 0;
}

/* The draft model's pick from one logits row: its most likely token (the lowest id of a
 * tie) among those the model has, and that token's probability; -1 for a row with no
 * finite logit. */
static int32_t draft_pick(const eng_t *e, const float *lg, float *p)
{
    const int V = e->d.draft_n_vocab, Vt = FD_MIN(V, e->d.n_vocab);
    int32_t best = 0;
    float mx = lg[0];
    for (int i = 1; i < V; i++)
        if (lg[i] > mx)
            mx = lg[i];
    for (int i = 1; i < Vt; i++)
        if (lg[i] > lg[best])
            best = i;
    *p = 0;
    if (!isfinite(mx) || !isfinite(lg[best]))
        return -1;
    double sum = 0;
    for (int i = 0; i < V; i++)
        sum += exp((double)(lg[i] - mx));
    *p = (float)(exp((double)(lg[best] - mx)) / sum);
    return best;
}

/* One draft-model pass over e->dent[0..m): false when it failed (every sequence in it then
 * stops drafting; the draft model's lengths are unchanged). */
static bool draft_decode(eng_t *e, int m)
{
    int rc = e->d.draft_decode(e->d.ctx, e->dent, m, e->dlogits);
    engine_lock(e);
    e->pub.draft_steps++;
    engine_unlock(e);
    if (rc >= 0)
        return true;
    for (int j = 0; j < m; j++)
        e->ent_req[e->dent_of[j]]->d_off = true;
    return false;
}

/* The drafts of a step from the draft model, over the step's n entries (decoding
 * sequences with their draft budget in sampled[].n_draft, then prefill chunks).  Pass 1
 * feeds each drafting sequence the tokens its draft sequence lacks (its last sampled token,
 * with the accepted drafts before it) and each prefilling sequence its chunk (no logits:
 * the draft model prefills with the model, in the same steps), and picks every drafting
 * sequence's first draft token; each further pass feeds the tokens just picked, all
 * sequences batched.  A sequence stops at its budget, at a pick below draft_p_min (not
 * drafted), at an end of generation (drafted).  The drafts go after each sequence's tokens;
 * its entry's rows become 1 + drafts, or 1 when fewer than draft_min.  Returns the draft
 * tokens. */
static uint64_t draft_model_pass(eng_t *e, int n)
{
    int m = 0;
    for (int i = 0; i < n; i++) {
        req_t *r = e->ent_req[i];
        e->dbudget[i] = e->dk[i] = 0;
        if (r->d_off || r->max_tokens == 0 || r->pool != ENG_POOL_NONE)
            continue;
        int from = r->d_past, to;
        if (r->n_past >= r->n_prompt) {
            e->dbudget[i] = e->sampled[i].n_draft;
            if (e->dbudget[i] == 0)
                continue;   /* its draft sequence catches up when it drafts again */
            to = r->n_tokens;
        } else {
            to = r->n_past + e->ent[i].n_tokens;
            if (to > e->dm_ctx) {
                r->d_off = true;    /* the prompt is longer than the draft's context */
                continue;
            }
        }
        if (to <= from)
            continue;
        e->dent[m] = (llm_batch_entry_t){ .slot = r->slot, .tokens = &r->tokens[from],
                                          .n_tokens = to - from,
                                          .want_logits = e->dbudget[i] > 0 };
        e->dent_of[m++] = i;
    }
    while (m > 0 && draft_decode(e, m)) {
        int row = 0, next = 0;
        for (int j = 0; j < m; j++) {
            const int i = e->dent_of[j];
            req_t *r = e->ent_req[i];
            r->d_past += e->dent[j].n_tokens;
            if (!e->dent[j].want_logits)
                continue;
            float p;
            int32_t t = draft_pick(e, e->dlogits + (size_t)row++ * (size_t)e->d.draft_n_vocab,
                                   &p);
            if (t < 0 || !(p >= e->p_min))
                continue;
            r->tokens[r->n_tokens + e->dk[i]++] = t;
            if (e->dk[i] < e->dbudget[i] && !e->d.is_eog(e->d.ctx, t)) {
                e->dent[next] = (llm_batch_entry_t){ .slot = r->slot,
                                                     .tokens = &r->tokens[r->n_tokens +
                                                                          e->dk[i] - 1],
                                                     .n_tokens = 1, .want_logits = 1 };
                e->dent_of[next++] = i;
            }
        }
        m = next;
    }
    uint64_t drafted = 0;
    for (int i = 0; i < n; i++) {
        req_t *r = e->ent_req[i];
        if (r->n_past < r->n_prompt)
            continue;
        int k = e->dk[i] >= e->draft_min ? e->dk[i] : 0;
        e->ent[i].n_tokens = e->ent[i].want_logits = 1 + k;
        e->sampled[i].n_draft = k;
        drafted += (uint64_t)k;
    }
    return drafted;
}

/* Samples one logits row of r into t (the grammar's mask first), then records the token in
 * the sampler's history and the grammar matcher, so that the run's next row sees it as the
 * next step would; a reasoning budget that ran out forces its token instead.  NULL, or the
 * message of the error that ends the request (no token). */
static const char *sample_row(eng_t *e, req_t *r, float *lg, run_tok_t *t, eng_top_t *top)
{
    if (r->th_state == TH_FORCE) {
        t->tok = r->th_force[r->th_k];
        t->n_top = 0;
        t->lp = 0;
        t->hist = smp_accept(r->smp, t->tok, 1);
        think_after(e, r, t->tok);
        return NULL;
    }
    t->n_top = r->n_probs > 0 ? FD_MIN(r->n_probs, e->d.n_vocab) : 0;
    t->lp = 0;
    t->hist = 0;
    if (r->gm) {
        int allowed = gr_matcher_mask(r->gm, r->allow);
        if (allowed == 0)
            return "no token of the vocabulary can continue the output as its constraint "
                   "(response_format, grammar) requires";
        /* no banned token (logprob -inf) among the alternatives */
        t->n_top = FD_MIN(t->n_top, allowed);
    }
    t->tok = smp_sample_masked(r->smp, lg, r->allow, r->n_probs >= 0 ? &t->lp : NULL, top,
                               t->n_top);
    if (r->post_probs)
        t->n_top = FD_MIN(t->n_top, smp_post_count(r->smp));
    if (t->tok < 0)
        return t->tok != FD_ERANGE ? "out of memory while sampling"
             : r->gm ? "every token that the output's constraint allows is banned by "
                       "logit_bias"
                     : "every token is banned by logit_bias";
    t->hist = smp_accept(r->smp, t->tok, 1);
    /* the mask allowed it: only a driver whose end-of-generation ids differ from the
     * tokenizer's gets a refusal */
    if (t->hist == 0 && r->gm && gr_matcher_accept(r->gm, t->tok) < 0)
        t->hist = SAMPLED_GRAMMAR;
    if (r->th_state != TH_OFF && r->th_state != TH_DONE)
        think_after(e, r, t->tok);
    return NULL;
}

/* The run of one entry: its last k + 1 logits rows (k draft tokens, r->tokens[n_tokens..])
 * sampled in order while the sampler picks the draft token: the first other token, an
 * end of generation or a refused token ends it (and is part of it).  Then the rejected
 * drafts' KV is forgotten, so the cache holds every token but the last sampled, as always.
 * Returns the KV rows dropped. */
static int sample_run(eng_t *e, req_t *r, sampled_t *sp, int last_row, uint64_t *gen_tok,
                      uint64_t *accepted)
{
    const int k = sp->n_draft;
    int taken = 0;
    for (int j = 0; j <= k; j++) {
        run_tok_t *t = &sp->run[j];
        float *lg = e->logits + (size_t)(last_row - k + j) * (size_t)e->d.n_vocab;
        if ((sp->fail = sample_row(e, r, lg, t, sp->top + (size_t)j * SMP_MAX_TOP)))
            break;
        sp->n_run++;
        (*gen_tok)++;
        bool hit = j < k && t->tok == r->tokens[r->n_tokens + j];
        taken += hit;
        if (!hit || t->hist != 0 || (!r->ignore_eos && e->d.is_eog(e->d.ctx, t->tok)))
            break;
    }
    if (e->dm_on)   /* its sequence holds no rejected draft (r->n_tokens: before the run) */
        draft_sync(e, r, r->n_tokens + taken);
    if (k == 0)
        return 0;
    *accepted += (uint64_t)taken;
    if (e->dm_on)
        goto drop;
    /* an extra row costs a good part of a step on the CPU backend: draft only as far as
     * drafts are taken (a no-repetition stream soon stops drafting) */
    if (taken == k) {
        r->draft_len = FD_MIN(e->spec_k, r->draft_len + 2);
        r->draft_fails = 0;
    } else if (taken > 0) {
        r->draft_len = FD_MAX(e->draft_min, taken + 1);
        r->draft_fails = 0;
    } else if (k > e->draft_min) {
        r->draft_len = FD_MAX(e->draft_min, k / 2);
    } else {
        r->draft_wait = FD_MIN(64, 1 << FD_MIN(r->draft_fails, 6));
        r->draft_fails++;
    }
drop:;
    int keep = sp->p0 + FD_MAX(sp->n_run, 1);
    if (keep >= r->n_past)
        return 0;
    if (e->d.seq_truncate(e->d.ctx, r->slot, keep) < 0) {
        if (!sp->fail)
            sp->fail = "cannot drop the rejected draft tokens from the KV cache";
        return 0;
    }
    int dropped = r->n_past - keep;
    r->n_past = keep;
    return dropped;
}

/* Context checkpoints after a prefill chunk of r from position p0 (r->n_past now): at the
 * point where r left a cached sequence before its end (the longest such prefix), as a later
 * prompt may leave there too (another user's question after a shared system prompt; not a
 * prompt that extends a whole cached conversation, which branches nowhere), and over the
 * last LLM_CKPT_SPAN positions of the prompt once it is done (the same prompt again: a
 * regenerated answer reuses it to its last token; a next turn whose template renders the
 * answer otherwise).  The rings still hold both windows right after the step that passed
 * them.  A checkpoint that cannot be made costs only reuse, never the request. */
static void ckpt_prefill(eng_t *e, req_t *r, int p0)
{
    int saved = 0;
    if (r->n_past == r->n_prompt)
        saved += e->d.seq_checkpoint(e->d.ctx, r->slot,
                                     FD_MAX(0, r->n_prompt - LLM_CKPT_SPAN + 1),
                                     r->n_prompt) == 1;
    if (r->ckpt_at >= p0 && r->ckpt_at <= r->n_past) {
        saved += e->d.seq_checkpoint(e->d.ctx, r->slot, r->ckpt_at, r->ckpt_at) == 1;
        r->ckpt_at = 0;
    }
    if (saved) {
        size_t b = e->d.ckpt_bytes(e->d.ctx);
        engine_lock(e);
        e->pub.ckpt_saved += (uint64_t)saved;
        e->pub.ckpt_bytes = b;
        engine_unlock(e);
    }
}

static void run_step(eng_t *e)
{
    int n = 0, n_tok = 0, n_logits = 0, n_dec = 0;
    uint64_t prompt_tok = 0, gen_tok = 0, drafted = 0, accepted = 0;
    int64_t dropped = 0;
    for (int i = 0; i < e->n_run; i++)
        n_dec += e->run[i]->n_past >= e->run[i]->n_prompt;
    /* every decoding sequence's next token first, then their drafts, then prefill chunks */
    int draft_cap = e->max_batch - n_dec;
    for (int i = 0; i < e->n_run; i++) {
        req_t *r = e->run[i];
        if (r->n_past >= r->n_prompt) {
            int k = draft_for(e, r, draft_cap);
            draft_cap -= k;
            e->ent[n] = (llm_batch_entry_t){ .slot = r->slot, .tokens = &r->tokens[r->n_past],
                                             .n_tokens = 1 + k, .want_logits = 1 + k,
                                             .lora = r->lora };
            e->sampled[n].n_draft = k;
            e->ent_req[n++] = r;
            n_tok += 1 + k;
            n_logits += 1 + k;
            drafted += (uint64_t)k;
        }
    }
    if (n_logits > e->logits_rows && logits_grow(e, n_logits) < 0) {
        /* no memory for the drafts' logits: this step verifies none */
        for (int i = 0; i < n; i++) {
            e->ent[i].n_tokens = e->ent[i].want_logits = 1;
            e->sampled[i].n_draft = 0;
        }
        n_tok = n_logits = n;
        drafted = 0;
    }
    int plp_left = e->plp_rows;
    for (int i = 0; i < e->n_run && n_tok < e->max_batch; i++) {
        req_t *r = e->run[i];
        if (r->n_past >= r->n_prompt)
            continue;
        int take = FD_MIN(e->p.prefill_chunk, r->n_prompt - r->n_past);
        take = FD_MIN(take, e->max_batch - n_tok);
        /* CLS pools the first row: a first chunk of one token makes it a trailing row, the
         * only kind llm_decode returns */
        if (r->pool == ENG_POOL_CLS && r->n_past == 0)
            take = 1;
        if (r->encoder) {
            /* an encoder's rows attend to each other: the whole prompt in one step, alone
             * in it if it is larger than a step */
            if (n_tok > 0 && n_tok + r->n_prompt > e->max_batch)
                continue;
            take = r->n_prompt;
        }
        if (r->plp) {
            /* every row's logits: a step holds at most plp_rows of them (the buffer) */
            take = FD_MIN(take, plp_left);
            if (take == 0)
                continue;
            plp_left -= take;
        }
        bool last = r->n_past + take == r->n_prompt;
        bool want = last && r->max_tokens > 0;
        /* with prompt log-probabilities every row's (wanted rows are the trailing ones: with
         * max_tokens 0 the last row's go unused rather than shift the others) */
        e->ent[n] = (llm_batch_entry_t){ .slot = r->slot, .tokens = &r->tokens[r->n_past],
                                         .n_tokens = take, .want_logits = r->plp ? take : want,
                                         .lora = r->lora };
        if (r->pool != ENG_POOL_NONE) {
            e->ent[n].hidden = r->emb;
            e->ent[n].want_hidden = r->pool == ENG_POOL_MEAN ? take
                                  : r->pool == ENG_POOL_CLS ? (r->n_past == 0)
                                  : last;
            if (r->encoder)
                e->ent[n].enc_pool = r->pool == ENG_POOL_CLS    ? LLM_ENC_FIRST
                                   : r->pool == ENG_POOL_RANK ? LLM_ENC_RANK
                                                              : LLM_ENC_SUM;
            if (r->encoder && r->pool == ENG_POOL_CLS)
                e->ent[n].want_hidden = 0;
        }
        e->sampled[n].n_draft = 0;
        e->ent_req[n++] = r;
        n_tok += take;
        n_logits += e->ent[n - 1].want_logits;
        prompt_tok += (uint64_t)take;
    }
    if (n == 0)
        return;
    if (e->dm_on) {
        drafted = draft_model_pass(e, n);
        n_tok = n_logits = 0;
        for (int i = 0; i < n; i++) {
            n_tok += e->ent[i].n_tokens;
            n_logits += e->ent[i].want_logits;
        }
    }
    if (n_logits > e->logits_rows && logits_grow(e, n_logits) < 0) {
        /* only prompt log-probabilities need more than the rows allocated at open */
        for (int i = 0; i < n; i++)
            if (e->ent_req[i]->plp && e->ent_req[i]->n_past < e->ent_req[i]->n_prompt)
                finish_mark(e->ent_req[i], ENG_FINISH_ERROR,
                            "out of memory for the prompt's logits");
        return;
    }

    const uint64_t t0 = fd_now_ns();
    const double dev0 = dev_total(e);
    int rc = e->d.decode(e->d.ctx, e->ent, n, n_logits ? e->logits : NULL);
    const uint64_t t1 = fd_now_ns();
    const double dev = dev_total(e) - dev0;

    if (rc < 0) {
        snprintf(e->step_err, sizeof e->step_err, "the model step failed: %s",
                 fd_strerror(rc));
        for (int i = 0; i < n; i++)
            finish_mark(e->ent_req[i], ENG_FINISH_ERROR, e->step_err);
        prompt_tok = 0;
        drafted = 0;
    } else {
        /* sample every sequence first, so the counters go out before the events */
        int li = 0;
        for (int i = 0; i < n; i++) {
            req_t *r = e->ent_req[i];
            sampled_t *sp = &e->sampled[i];
            sp->n_run = 0;
            sp->fail = NULL;
            sp->row0 = li;
            sp->n_rows = e->ent[i].want_logits;
            sp->p0 = r->n_past;
            li += sp->n_rows;
            r->n_past += e->ent[i].n_tokens;
            r->dev_s += dev;
            if (e->ckpt_on && sp->p0 < r->n_prompt)
                ckpt_prefill(e, r, sp->p0);
            if (!r->t_prefill && r->n_past >= r->n_prompt)
                r->t_prefill = t1;
            if (r->n_past < r->n_prompt || sp->n_rows == 0 || r->max_tokens == 0)
                continue;   /* a prefill chunk before the last, or nothing to generate */
            dropped += sample_run(e, r, sp, li - 1, &gen_tok, &accepted);
        }
    }
    publish_step(e, n, n_tok, prompt_tok, gen_tok, rc >= 0 ? n_tok - dropped : 0, drafted,
                 accepted);
    uint64_t unsent = 0;
    int64_t unkept = 0;
    for (int i = 0; i < n && rc >= 0; i++) {
        const sampled_t *sp = &e->sampled[i];
        req_t *r = e->ent_req[i];
        if (r->plp && sp->p0 < r->n_prompt)
            emit_prompt(e, r, sp);
        if (r->max_tokens == 0 && r->n_past >= r->n_prompt)
            finish_mark(r, r->pool != ENG_POOL_NONE ? ENG_FINISH_STOP : ENG_FINISH_LENGTH, NULL);
        int j = 0;
        for (; j < sp->n_run && (j == 0 || r->finish == ENG_FINISH_NONE); j++)
            on_sampled(e, r, &sp->run[j], sp->top + (size_t)j * SMP_MAX_TOP);
        if (j < sp->n_run) {
            /* a stop string inside the run: what follows it was never emitted, and the KV
             * keeps only what was (a cached slot must match its tokens) */
            unsent += (uint64_t)(sp->n_run - j);
            int keep = r->n_tokens - 1;
            if (r->n_past > keep && e->d.seq_truncate(e->d.ctx, r->slot, keep) >= 0) {
                unkept += r->n_past - keep;
                r->n_past = keep;
            }
            if (e->dm_on)
                draft_sync(e, r, r->n_tokens);
        }
        if (sp->fail)
            finish_mark(r, ENG_FINISH_ERROR, sp->fail);
    }
    if (unsent || unkept) {
        engine_lock(e);
        e->pub.gen_tokens -= unsent;
        e->pub.kv_used -= unkept;
        engine_unlock(e);
    }
    for (int i = 0; i < n; i++)
        if (e->ent_req[i]->finish != ENG_FINISH_NONE)
            finish_running(e, e->ent_req[i]);
    if (e->p.on_step)
        e->p.on_step(e->p.on_step_ud, (double)(t1 - t0) * 1e-9, n, n_tok);
    if (e->p.check && eng_check(e, e->check_err, sizeof e->check_err) < 0) {
        fprintf(stderr, "fusiond: engine invariant broken: %s\n", e->check_err);
        abort();
    }
}

/* Step 1 under e->mu: marks cancelled and expired requests (taking waiting ones out of the
 * queue into *gone) and admits from the queue head.  Returns false when the engine is
 * stopping. */
static bool schedule(eng_t *e, req_t **gone)
{
    engine_lock(e);
    while (!e->stopping && !e->wait_head && e->n_run == 0)
        pthread_cond_wait(&e->cv, &e->mu);
    if (e->stopping) {
        engine_unlock(e);
        return false;
    }
    const uint64_t now = fd_now_ns();
    for (int i = 0; i < e->n_run; i++) {
        req_t *r = e->run[i];
        if (r->cancel)
            finish_mark(r, ENG_FINISH_CANCEL, NULL);
        else if (r->deadline_ns && now >= r->deadline_ns)
            finish_mark(r, ENG_FINISH_TIMEOUT, NULL);
    }
    *gone = NULL;
    req_t **tail = gone;
    for (req_t *r = e->wait_head, *next; r; r = next) {
        next = r->next;
        if (r->cancel)
            finish_mark(r, ENG_FINISH_CANCEL, NULL);
        else if (r->deadline_ns && now >= r->deadline_ns)
            finish_mark(r, ENG_FINISH_TIMEOUT, NULL);
        else
            continue;
        if (r->prev)
            r->prev->next = r->next;
        else
            e->wait_head = r->next;
        if (r->next)
            r->next->prev = r->prev;
        else
            e->wait_tail = r->prev;
        e->n_waiting--;
        r->next = NULL;
        *tail = r;
        tail = &r->next;
    }
    e->n_admitted = 0;
    while (e->wait_head && e->n_run < e->max_running &&
           e->pub.kv_reserved + e->wait_head->kv_need <= e->kv_total) {
        req_t *r = e->wait_head;
        e->wait_head = r->next;
        if (e->wait_head)
            e->wait_head->prev = NULL;
        else
            e->wait_tail = NULL;
        e->n_waiting--;
        r->next = r->prev = NULL;
        r->state = REQ_RUNNING;
        r->t_sched = now;
        r->place = free_place(e);
        e->run[e->n_run++] = r;
        e->pub.kv_reserved += r->kv_need;
        e->admitted[e->n_admitted++] = r;
        int keep = 0;
        bool ring_miss;
        int branch;
        int hit = cache_lookup(e, r, &keep, &ring_miss, &branch);
        e->pub.cache_ring_misses += ring_miss;
        /* another prompt may leave the cached sequences here too: keep the window there */
        r->ckpt_at = e->ckpt_on && branch >= e->cache_min ? branch : 0;
        if (hit >= 0) {
            r->slot = cache_take(e, hit).slot;
            r->n_past = r->n_cached = keep;
            e->pub.kv_used += keep;
            e->pub.cache_hits++;
            e->pub.cached_tokens += (uint64_t)keep;
        }
        /* the cached slots give way to what admission decided without them */
        while (e->n_cache > 0 && (e->n_run + e->n_cache > e->d.n_slots ||
                                  e->pub.kv_reserved + e->pub.kv_cached > e->kv_total))
            cache_evict_lru(e);
    }
    e->pub.waiting = e->n_waiting;
    e->pub.running = e->n_run;
    engine_unlock(e);
    return true;
}

static void *engine_main(void *arg)
{
    eng_t *e = arg;
    for (;;) {
        req_t *gone;
        if (!schedule(e, &gone))
            break;
        while (gone) {
            req_t *next = gone->next;
            finish_waiting(gone);
            gone = next;
        }
        for (int i = 0; i < e->n_evict; i++)
            e->d.seq_free(e->d.ctx, e->evict[i]);
        if (e->n_evict && e->ckpt_on) {
            size_t b = e->d.ckpt_bytes(e->d.ctx);
            engine_lock(e);
            e->pub.ckpt_bytes = b;
            engine_unlock(e);
        }
        e->n_evict = 0;
        for (int i = 0; i < e->n_admitted; i++) {
            req_t *r = e->admitted[i];
            if (r->slot >= 0) {
                /* a cached slot: forget what follows the common prefix (a context checkpoint
                 * may give the sliding-window layers their window back) */
                int rc = e->d.seq_truncate(e->d.ctx, r->slot, r->n_past);
                if (rc < 0) {
                    finish_mark(r, ENG_FINISH_ERROR, "cannot reuse a cached KV cache slot");
                    continue;
                }
                if (rc == 1) {
                    engine_lock(e);
                    e->pub.cache_ckpt_hits++;
                    engine_unlock(e);
                }
                if (e->dm_on) {
                    /* the draft sequence keeps what it holds of the common prefix */
                    r->d_past = FD_MAX(e->d.draft_len(e->d.ctx, r->slot), 0);
                    draft_sync(e, r, r->n_past);
                }
                e->d.stream_init(e->d.ctx, &r->ts, r->tokens[r->n_prompt - 1]);
                continue;
            }
            int rc = e->d.seq_alloc(e->d.ctx, &r->slot);
            if (rc < 0) {
                r->slot = -1;
                finish_mark(r, ENG_FINISH_ERROR, "no free KV cache slot");
                continue;
            }
            e->d.stream_init(e->d.ctx, &r->ts, r->tokens[r->n_prompt - 1]);
        }
        bool ended = false;
        for (int i = e->n_run - 1; i >= 0; i--) {
            if (e->run[i]->finish != ENG_FINISH_NONE) {
                finish_running(e, e->run[i]);
                ended = true;
            }
        }
        if (ended) {
            /* a place was freed: admit into it before the step rather than after */
            engine_lock(e);
            bool admit = e->wait_head && e->n_run < e->max_running;
            engine_unlock(e);
            if (admit)
                continue;
        }
        run_step(e);
    }
    /* closing: everything still queued or running ends as cancelled */
    engine_lock(e);
    req_t *w = e->wait_head;
    e->wait_head = e->wait_tail = NULL;
    e->n_waiting = 0;
    e->pub.waiting = 0;
    engine_unlock(e);
    while (w) {
        req_t *next = w->next;
        finish_mark(w, ENG_FINISH_CANCEL, NULL);
        finish_waiting(w);
        w = next;
    }
    while (e->n_run > 0) {
        req_t *r = e->run[e->n_run - 1];
        finish_mark(r, ENG_FINISH_CANCEL, NULL);
        finish_running(e, r);
    }
    engine_lock(e);
    while (e->n_cache > 0)
        cache_evict_lru(e);
    engine_unlock(e);
    for (int i = 0; i < e->n_evict; i++)
        e->d.seq_free(e->d.ctx, e->evict[i]);
    e->n_evict = 0;
    return NULL;
}

/* ---- invariants (engine thread) ---- */

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            snprintf(err, errlen, __VA_ARGS__);                               \
            rc = FD_EFORMAT;                                                  \
            goto out;                                                         \
        }                                                                     \
    } while (0)

int eng_check(eng_t *e, char *err, size_t errlen)
{
    int rc = 0;
    engine_lock(e);
    int n = 0;
    uint64_t last_id = 0;
    const req_t *prev = NULL;
    for (const req_t *r = e->wait_head; r; prev = r, r = r->next) {
        CHECK(r->prev == prev, "waiting request %llu: broken back link",
              (unsigned long long)r->id);
        CHECK(r->state == REQ_WAITING, "request %llu in the queue is not waiting",
              (unsigned long long)r->id);
        CHECK(r->id > last_id, "queue out of FIFO order at request %llu",
              (unsigned long long)r->id);
        CHECK(r->slot < 0 && r->n_past == 0, "waiting request %llu holds KV",
              (unsigned long long)r->id);
        last_id = r->id;
        n++;
        CHECK(n <= e->n_waiting, "queue longer than its count %d", e->n_waiting);
    }
    CHECK(e->wait_tail == prev, "queue tail is not its last request");
    CHECK(n == e->n_waiting && e->pub.waiting == n, "queue holds %d, counted %d (published %d)",
          n, e->n_waiting, e->pub.waiting);
    CHECK(e->n_run >= 0 && e->n_run <= e->max_running, "%d running, at most %d", e->n_run,
          e->max_running);
    CHECK(e->pub.running == e->n_run, "published running %d, actual %d", e->pub.running,
          e->n_run);
    int64_t reserved = 0, used = 0;
    last_id = 0;
    for (int i = 0; i < e->n_run; i++) {
        const req_t *r = e->run[i];
        unsigned long long id = (unsigned long long)r->id;
        CHECK(r->state == REQ_RUNNING, "request %llu in the running set is not running", id);
        CHECK(r->id > last_id, "running set out of admission order at request %llu", id);
        last_id = r->id;
        CHECK(r->slot >= 0 && r->slot < e->d.n_slots, "request %llu: slot %d", id, r->slot);
        for (int j = 0; j < i; j++)
            CHECK(e->run[j]->slot != r->slot, "requests %llu and %llu share slot %d",
                  (unsigned long long)e->run[j]->id, id, r->slot);
        CHECK(r->n_tokens == r->n_prompt + r->n_gen, "request %llu: %d tokens != %d + %d", id,
              r->n_tokens, r->n_prompt, r->n_gen);
        CHECK((r->n_gen < r->max_tokens || (r->max_tokens == 0 && r->n_past < r->n_prompt)) &&
              r->n_tokens <= e->d.n_ctx,
              "request %llu still running with %d of %d tokens", id, r->n_gen, r->max_tokens);
        CHECK(r->n_past <= r->n_tokens && r->kv_need == r->n_prompt + r->max_tokens,
              "request %llu: %d tokens in the KV cache, %d known", id, r->n_past, r->n_tokens);
        CHECK(r->n_past >= r->n_prompt ? r->n_past == r->n_tokens - 1 : r->n_gen == 0,
              "request %llu: %d in the KV cache after %d generated", id, r->n_past, r->n_gen);
        if (e->d.seq_len)
            CHECK(e->d.seq_len(e->d.ctx, r->slot) == r->n_past,
                  "request %llu: the model holds %d tokens in slot %d, the scheduler %d", id,
                  e->d.seq_len(e->d.ctx, r->slot), r->slot, r->n_past);
        if (e->dm_on)
            CHECK(r->d_past >= 0 && r->d_past <= r->n_tokens &&
                  e->d.draft_len(e->d.ctx, r->slot) == r->d_past,
                  "request %llu: the draft model holds %d tokens in slot %d, the scheduler %d "
                  "(of %d)", id, e->d.draft_len(e->d.ctx, r->slot), r->slot, r->d_past,
                  r->n_tokens);
        /* held: a possible stop-string start (at most max_stop - 1 bytes), moved back to a
         * character start when a stop string is not valid UTF-8 (at most 3 bytes more) */
        CHECK(r->n_stop == 0 || r->n_held < r->max_stop + 3,
              "request %llu holds back %zu bytes, longest stop string %zu", id, r->n_held,
              r->max_stop);
        CHECK(r->n_cached >= 0 && r->n_cached < r->n_prompt &&
              (r->n_cached == 0 || (e->cache_on && r->n_cached >= e->cache_min)),
              "request %llu: %d prompt tokens from the cache of %d", id, r->n_cached,
              r->n_prompt);
        reserved += r->kv_need;
        used += r->n_past;
    }
    int64_t cached = 0;
    CHECK(e->n_cache == 0 || e->cache_on, "cached slots with the prefix cache off");
    CHECK(e->n_cache >= 0 && e->n_run + e->n_cache <= e->d.n_slots,
          "%d running and %d cached slots, %d slots", e->n_run, e->n_cache, e->d.n_slots);
    CHECK(e->pub.cached_slots == e->n_cache, "published cached slots %d, actual %d",
          e->pub.cached_slots, e->n_cache);
    for (int i = 0; i < e->n_cache; i++) {
        const cslot_t *c = &e->cache[i];
        CHECK(c->slot >= 0 && c->slot < e->d.n_slots, "cached slot %d out of range", c->slot);
        CHECK(c->tokens && c->n >= e->cache_min && c->n <= e->d.n_ctx,
              "cached slot %d holds %d tokens", c->slot, c->n);
        CHECK(c->stamp >= 1 && c->stamp <= e->cache_stamp, "cached slot %d stamped %llu",
              c->slot, (unsigned long long)c->stamp);
        for (int j = 0; j < e->n_run; j++)
            CHECK(e->run[j]->slot != c->slot, "request %llu runs in cached slot %d",
                  (unsigned long long)e->run[j]->id, c->slot);
        for (int j = 0; j < i; j++)
            CHECK(e->cache[j].slot != c->slot, "slot %d cached twice", c->slot);
        if (e->d.seq_len)
            CHECK(e->d.seq_len(e->d.ctx, c->slot) == c->n,
                  "the model holds %d tokens in cached slot %d, the cache %d",
                  e->d.seq_len(e->d.ctx, c->slot), c->slot, c->n);
        cached += c->n;
    }
    CHECK(cached == e->pub.kv_cached && reserved + cached <= e->kv_total,
          "KV cached %lld, published %lld, with %lld reserved, budget %lld",
          (long long)cached, (long long)e->pub.kv_cached, (long long)reserved,
          (long long)e->kv_total);
    CHECK(reserved == e->pub.kv_reserved && reserved <= e->kv_total,
          "KV reserved %lld, counted %lld, budget %lld", (long long)reserved,
          (long long)e->pub.kv_reserved, (long long)e->kv_total);
    CHECK(used == e->pub.kv_used, "KV used %lld, published %lld", (long long)used,
          (long long)e->pub.kv_used);
out:
    engine_unlock(e);
    return rc;
}

#undef CHECK

/* ---- open / close ---- */

#define OPEN_ERR(code, ...) (snprintf(err, errlen, __VA_ARGS__), (code))

static void draft_free(eng_t *e)
{
    free(e->dlogits);
    free(e->dent);
    free(e->dent_of);
    free(e->dbudget);
    free(e->dk);
}

static void logits_free(eng_t *e)
{
    if (e->d.host_alloc && e->d.host_free) {
        if (e->logits)
            e->d.host_free(e->d.ctx, e->logits);
    } else {
        free(e->logits);
    }
    e->logits = NULL;
}

int eng_open_driver(eng_t **out, const eng_params_t *p, const eng_driver_t *d, char *err,
                    size_t errlen)
{
    char dummy[8];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    *out = NULL;
    int rc;
    eng_t *e = NULL;
    if (!d->seq_alloc || !d->seq_free || !d->decode || !d->is_eog || !d->stream_init ||
        !d->stream_push || !d->stream_flush || d->n_vocab < 1 || d->n_ctx < 1 || d->n_slots < 1) {
        rc = OPEN_ERR(-EINVAL, "incomplete model driver");
        goto fail_params;
    }
    const int lk_min = p->lookup_min ? p->lookup_min : 2;
    const int lk_max = p->lookup_max ? p->lookup_max : 4;
    if (p->draft_max < 0 || p->draft_max > ENG_DRAFT_MAX || p->draft_min < 0 ||
        p->draft_min > FD_MAX(p->draft_max, 1) || p->lookup_min < 0 || p->lookup_max < 0 ||
        lk_min > lk_max) {
        rc = OPEN_ERR(FD_ECONFIG,
                      "speculation: draft_max %d (0..%d), draft_min %d (0..draft_max), "
                      "lookup_min %d and lookup_max %d (>= 0, min <= max; 0: 2 and 4)",
                      p->draft_max, ENG_DRAFT_MAX, p->draft_min, p->lookup_min, p->lookup_max);
        goto fail_params;
    }
    if (!(p->draft_p_min >= 0 && p->draft_p_min <= 1) || p->draft_n_ctx < 0 ||
        p->draft_threads < 0) {
        rc = OPEN_ERR(FD_ECONFIG, "speculation: draft_p_min %g (0..1), draft_n_ctx %d and "
                      "draft_threads %d (>= 0)", (double)p->draft_p_min, p->draft_n_ctx,
                      p->draft_threads);
        goto fail_params;
    }
    if (p->max_running < 1 || p->max_waiting < 0 || p->prefill_chunk < 1 || p->kv_tokens < 0 ||
        p->max_batch_tokens < 0 || p->prefix_cache_min < 0 || p->ctx_checkpoints < 0) {
        rc = OPEN_ERR(FD_ECONFIG,
                      "max_running %d (>= 1), max_waiting %d (>= 0), prefill_chunk %d (>= 1), "
                      "kv_tokens %lld, max_batch_tokens %d, prefix_cache_min %d and "
                      "ctx_checkpoints %d (>= 0)",
                      p->max_running, p->max_waiting, p->prefill_chunk,
                      (long long)p->kv_tokens, p->max_batch_tokens, p->prefix_cache_min,
                      p->ctx_checkpoints);
        goto fail_params;
    }
    e = calloc(1, sizeof *e);
    if (!e) {
        rc = OPEN_ERR(-ENOMEM, "out of memory");
        goto fail_params;
    }
    e->p = *p;
    e->d = *d;
#ifdef FD_DEBUG
    e->p.check = true;
#endif
    e->max_running = FD_MIN(p->max_running, d->n_slots);
    e->max_batch = p->max_batch_tokens ? p->max_batch_tokens
                                       : e->max_running + 2 * p->prefill_chunk;
    e->max_batch = FD_MAX(e->max_batch, e->max_running + 1);
    e->kv_total = p->kv_tokens ? p->kv_tokens : (int64_t)e->max_running * d->n_ctx;
    /* the driver's strings live until its close */
    if (d->info) {
        e->info = *d->info;
    } else {
        e->info.model_id = "driver";
        e->info.model_path = "";
        e->info.arch = "";
        e->info.backend = "";
        e->info.softmax_mode = "";
        e->info.n_ctx = e->info.n_ctx_train = d->n_ctx;
        e->info.n_vocab = d->n_vocab;
        e->info.pooling = -1;
    }
    e->spec_k = d->seq_truncate ? p->draft_max : 0;
    e->dm_on = e->spec_k > 0 && d->draft_decode && d->draft_len && d->draft_truncate &&
               d->draft_n_vocab > 0 && d->draft_n_ctx > 0;
    e->p_min = p->draft_p_min;
    e->dm_ctx = d->draft_n_ctx;
    e->spec_rows = e->spec_k + 1;
    e->draft_min = FD_MAX(p->draft_min, 1);
    e->lookup_min = lk_min;
    e->lookup_max = lk_max;
    e->info.draft_max = e->spec_k;
    e->info.max_running = e->max_running;
    e->pub.kv_total = e->kv_total;
    e->cache_on = p->prefix_cache && d->seq_truncate;
    e->cache_min = p->prefix_cache_min ? p->prefix_cache_min : 16;
    e->ckpt_on = e->cache_on && p->ctx_checkpoints > 0 && d->seq_checkpoint && d->ckpt_bytes;

    const size_t R = (size_t)e->max_running;
    e->run = calloc(R, sizeof *e->run);
    e->admitted = calloc(R, sizeof *e->admitted);
    e->ent = calloc(R, sizeof *e->ent);
    e->ent_req = calloc(R, sizeof *e->ent_req);
    e->sampled = calloc(R, sizeof *e->sampled);
    e->run_buf = calloc(R * (size_t)e->spec_rows, sizeof *e->run_buf);
    e->top_buf = calloc(R * (size_t)e->spec_rows * SMP_MAX_TOP, sizeof *e->top_buf);
    e->cache = calloc((size_t)d->n_slots, sizeof *e->cache);
    e->evict = calloc((size_t)d->n_slots, sizeof *e->evict);
    if (e->dm_on) {
        e->dent = calloc(R, sizeof *e->dent);
        e->dent_of = calloc(R, sizeof *e->dent_of);
        e->dbudget = calloc(R, sizeof *e->dbudget);
        e->dk = calloc(R, sizeof *e->dk);
        size_t dbytes;
        if (fd_mul_size(R, (size_t)d->draft_n_vocab, &dbytes) == 0 &&
            fd_mul_size(dbytes, sizeof(float), &dbytes) == 0)
            e->dlogits = malloc(dbytes);
        if (!e->dent || !e->dent_of || !e->dbudget || !e->dk || !e->dlogits) {
            rc = OPEN_ERR(-ENOMEM, "out of memory for the draft model's logits");
            goto fail_alloc;
        }
    }
    size_t n_logits;
    if (fd_mul_size(R, (size_t)d->n_vocab, &n_logits) < 0 ||
        fd_mul_size(n_logits, sizeof(float), &n_logits) < 0) {
        rc = OPEN_ERR(FD_ERANGE, "logits buffer size overflows");
        goto fail_alloc;
    }
    e->logits = d->host_alloc && d->host_free ? d->host_alloc(d->ctx, n_logits) : malloc(n_logits);
    e->logits_rows = e->max_running;
    /* prompt log-probabilities: 16 MiB of logits rows per step, at least one row */
    e->plp_rows = (int)FD_MAX((size_t)1, FD_MIN((size_t)p->prefill_chunk,
                                                ((size_t)16 << 20) / ((size_t)d->n_vocab * sizeof(float))));
    if (!e->run || !e->admitted || !e->ent || !e->ent_req || !e->sampled || !e->logits ||
        !e->cache || !e->evict || !e->run_buf || !e->top_buf) {
        rc = OPEN_ERR(-ENOMEM, "out of memory for %d running sequences", e->max_running);
        goto fail_alloc;
    }
    for (size_t i = 0; i < R; i++) {
        e->sampled[i].run = e->run_buf + i * (size_t)e->spec_rows;
        e->sampled[i].top = e->top_buf + i * (size_t)e->spec_rows * SMP_MAX_TOP;
    }
    if ((rc = -pthread_mutex_init(&e->mu, NULL))) {
        snprintf(err, errlen, "mutex: %s", fd_strerror(rc));
        goto fail_alloc;
    }
    if ((rc = -pthread_cond_init(&e->cv, NULL))) {
        snprintf(err, errlen, "condition variable: %s", fd_strerror(rc));
        goto fail_cond;
    }
    if ((rc = -pthread_mutex_init(&e->vocab_mu, NULL))) {
        snprintf(err, errlen, "mutex: %s", fd_strerror(rc));
        goto fail_vocab_mu;
    }
    if ((rc = -pthread_create(&e->thread, NULL, engine_main, e))) {
        snprintf(err, errlen, "cannot start the engine thread: %s", fd_strerror(rc));
        goto fail_thread;
    }
    *out = e;
    return 0;

fail_thread:
    pthread_mutex_destroy(&e->vocab_mu);
fail_vocab_mu:
    pthread_cond_destroy(&e->cv);
fail_cond:
    pthread_mutex_destroy(&e->mu);
fail_alloc:
    logits_free(e);
    draft_free(e);
    free(e->evict);
    free(e->cache);
    free(e->top_buf);
    free(e->run_buf);
    free(e->sampled);
    free(e->ent_req);
    free(e->ent);
    free(e->admitted);
    free(e->run);
    free(e);
fail_params:
    if (d->close)
        d->close(d->ctx);
    return rc;
}

void eng_close(eng_t *e)
{
    if (!e)
        return;
    engine_lock(e);
    e->stopping = true;
    pthread_cond_signal(&e->cv);
    engine_unlock(e);
    pthread_join(e->thread, NULL);
    gr_vocab_free(e->vocab);
    pthread_mutex_destroy(&e->vocab_mu);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    logits_free(e); /* before close: the driver's memory may belong to its backend */
    draft_free(e);
    if (e->d.close)
        e->d.close(e->d.ctx);
    free(e->evict);
    free(e->cache);
    free(e->top_buf);
    free(e->run_buf);
    free(e->sampled);
    free(e->ent_req);
    free(e->ent);
    free(e->admitted);
    free(e->run);
    free(e);
}
