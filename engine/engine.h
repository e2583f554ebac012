/* engine.h: the engine as the server sees it: one loaded model on one backend, a KV cache
 * pool, and the scheduler core that runs continuous batching on its own engine thread.
 * Requests are submitted from any thread (a locked queue); every engine step advances all
 * running sequences by one token and admits waiting prompts in prefill chunks.  Results come
 * back as events through the request's callback, ON THE ENGINE THREAD: the callback must
 * copy what it needs and return quickly (the server queues it and calls uv_async_send).
 * eng_* functions are thread-safe unless noted. */
#ifndef FD_ENGINE_H
#define FD_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backend.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

typedef struct eng eng_t;
typedef struct gr_spec gr_spec_t;   /* engine/grammar.h */

typedef struct eng_params {
    const char *model_path;     /* GGUF file */
    const char *backend;        /* "cpu" (default), "corsair", "cuda" */
    const char *const *backend_options; /* "key=value" for the backend, NULL-terminated */
    bool fusion;                /* deferred-normalization plan (default on) */
    int softmax_mode;           /* enum fb_softmax_mode used when fusion is on (MAXSUM) */
    int threads;                /* 0 = online cores */
    int n_ctx;                  /* 0 = the model's context length */
    int cache_type_k;           /* KV cache types (enum gg_type, backend.h's fb_kv_*: 0 = */
    int cache_type_v;           /* F32); eng_open fails on types the backend cannot read */
    int max_running;            /* sequences decoded together (default 16) */
    int max_waiting;            /* requests queued beyond the free running places before
                                   eng_submit answers FD_EFULL (default 64; 0: none) */
    int64_t kv_tokens;          /* KV cache capacity in tokens over all sequences;
                                   0 = max_running * n_ctx */
    int prefill_chunk;          /* prompt tokens per sequence per step (default 256) */
    /* Optional observer called on the engine thread after every step. */
    void (*on_step)(void *ud, double seconds, int batch_seqs, int batch_tokens);
    void *on_step_ud;
    int max_batch_tokens;       /* most tokens in one step: every running sequence's next
                                   token, then prefill chunks in admission order up to this
                                   (0 = max_running + 2 * prefill_chunk; at least
                                   max_running + 1) */
    bool check;                 /* run eng_check after every step and abort on a broken
                                   invariant (always on in --enable-debug builds) */
    bool prefix_cache;          /* keep a finished sequence's KV slot and tokens; a later
                                   prompt that starts with them reuses that KV and prefills
                                   only the rest.  Cached slots are evicted (least recently
                                   used first) whenever admission needs a slot or KV tokens,
                                   so they never delay or refuse a request (default off;
                                   needs the driver's seq_truncate) */
    int prefix_cache_min;       /* fewest reusable prompt tokens worth a cached slot
                                   (0 = 16) */
    /* n-gram (prompt-lookup) speculative decoding: each step a decoding sequence whose last
     * n tokens (n from lookup_max down to lookup_min) occurred earlier in its own prompt or
     * output also feeds up to draft_max tokens that followed there; they are verified in the
     * same step (the sampler runs on each row in turn and keeps going while it picks the
     * draft token), so a step emits 1 to draft_max + 1 tokens a sequence, with exactly the
     * outputs (and seeded RNG stream) of decoding without it for the same logits (a backend
     * may round a step's rows slightly differently with more of them, as it does when
     * sequences share a step: README).  Draft tokens count against
     * max_batch_tokens after every sequence's next token, before prefill chunks.  A
     * sequence's draft length adapts between draft_min and draft_max to how much of its
     * drafts was taken, and it pauses drafting after failed shortest drafts.  Needs the
     * driver's seq_truncate (the rejected rows' KV is forgotten): without it, off. */
    int draft_max;              /* most draft tokens a sequence a step, 0 (default): off;
                                   at most ENG_DRAFT_MAX */
    int draft_min;              /* fewest draft tokens worth verifying (0 = 1) */
    int lookup_max;             /* longest n-gram matched (0 = 4) */
    int lookup_min;             /* shortest n-gram matched (0 = 2) */
    /* Speculative decoding with a draft model (llama-server's --model-draft) instead of
     * n-gram lookup, with draft_max > 0: a smaller model of the same vocabulary (checked as
     * llama.cpp checks it: same vocabulary type, BOS/EOS ids and add flags, sizes within
     * 128, the same text for every shared token from id 5) runs greedily beside the model,
     * with its own KV cache slot per sequence kept in step with the accepted tokens (its
     * prompt prefilled in the same steps as the model's); each step it drafts up to
     * draft_max tokens per decoding sequence, all sequences batched in each of its passes,
     * stopping where its top token's probability falls below draft_p_min.  The model
     * verifies them as it verifies n-gram drafts (the same exact outputs).  lookup_* and the
     * n-gram adaptive draft length do not apply. */
    const char *draft_model;    /* GGUF file of the draft model; NULL: n-gram drafts */
    float draft_p_min;          /* 0..1 (default 0.75, llama.cpp's) */
    int draft_n_ctx;            /* the draft model's context (0: the model's n_ctx); a
                                   sequence longer than it is no longer drafted for */
    int draft_threads;          /* 0: threads */
    const char *draft_backend;  /* NULL: backend (its backend_options apply to both) */
    /* LoRA adapter files (llm_load_params_t.lora): adapter i is lora[i]; each request says
     * how much of each applies (eng_request_t.lora) */
    const char *const *lora;
    int n_lora;
    bool swa_full;              /* llm_load_params_t.swa_full: sliding-window layers keep
                                   every position, not a ring */
    llm_rope_params_t rope;     /* llm_load_params_t.rope: RoPE overrides (zero: none) */
    /* Context checkpoints a cached sequence keeps (llama-server's --ctx-checkpoints; default
     * 8, 0: none), with the prefix cache on a model whose sliding-window layers keep rings:
     * copies of the window the rings hold at chosen positions (the end of each prompt, and
     * the point where a prompt left a cached sequence before its end), so a later
     * prompt that leaves a cached sequence far before its end still reuses it up to such a
     * position (llm_seq_checkpoint; the driver's seq_checkpoint) */
    int ctx_checkpoints;
} eng_params_t;

#define ENG_DRAFT_MAX 64

void eng_params_default(eng_params_t *p);

typedef struct eng_info {
    const char *model_id;       /* general.name, else the file name without .gguf */
    const char *model_path;
    const char *arch;           /* "llama", "qwen2", "qwen3" */
    const char *backend;
    bool fusion;
    const char *softmax_mode;   /* "ref", "maxsum", "sumonly" */
    int n_ctx;                  /* effective context length */
    int n_ctx_train;
    int n_vocab, n_embd, n_layer, n_head, n_head_kv;
    int64_t n_params;
    uint64_t file_bytes;
    const char *chat_template;  /* tokenizer.chat_template or NULL */
    int threads;
    int pooling;                /* the file's pooling type (enum eng_pooling), -1: none given */
    bool encoder;               /* an encoder (bert): embedding and rank requests only, each
                                   prompt run whole in one step (never in chunks) */
    int n_cls_out;              /* encoders: the classification head's outputs (0: none) */
    int draft_max;              /* speculation's draft_max in use; 0: off (not asked
                                   for, or the driver cannot truncate a sequence) */
    const char *draft_model;    /* the draft model's id (general.name or file name) when
                                   drafts come from one, else NULL (n-gram) */
    const char *draft_path;     /* its file */
    int draft_n_ctx;            /* its context */
    const char *cache_type_k;   /* "f32", "f16", "q8_0", ... (NULL: the driver has none) */
    const char *cache_type_v;
    uint64_t cache_bytes;       /* bytes the KV cache holds (all layers, K and V) */
    int max_running;            /* batch places: sequences decoded together (eng_slots) */
    int n_lora;                 /* LoRA adapters loaded (eng_params_t.lora) */
    const char *const *lora_paths; /* their files, n_lora */
    int swa_ring;               /* llm_swa_ring: positions a sliding-window layer keeps a
                                   sequence (0: every layer keeps n_ctx) */
    int ctx_checkpoints;        /* checkpoints a sequence keeps (0: none are made) */
    uint64_t ckpt_bytes_each;   /* host bytes one takes at most */
    uint64_t ckpt_bytes_max;    /* and all of them together */
} eng_info_t;

/* How an embedding request pools its prompt's final hidden states (llama.cpp's numbering of
 * <arch>.pooling_type, so the file's value maps directly). */
enum eng_pooling { ENG_POOL_NONE = 0, ENG_POOL_MEAN = 1, ENG_POOL_CLS = 2, ENG_POOL_LAST = 3,
                   ENG_POOL_RANK = 4 /* a reranker's score: the classification head over
                                        the first row (encoders with one: n_cls_out) */ };

/* Loads the model, prepares the backend and starts the engine thread. */
int eng_open(eng_t **out, const eng_params_t *p, char *err, size_t errlen);
/* Cancels everything (each live request gets DONE with ENG_FINISH_CANCEL), stops the
 * thread, frees all.  Not from an event callback or on_step (it joins the engine thread). */
void eng_close(eng_t *e);
const eng_info_t *eng_info(const eng_t *e);
const tok_t *eng_tokenizer(const eng_t *e);

typedef struct eng_logit_bias {
    int32_t token;
    float bias;                 /* -inf (or <= -100) bans the token */
} eng_logit_bias_t;

typedef struct eng_sampling {
    float temperature;          /* 0 = greedy */
    float top_p;                /* 1 = off */
    int top_k;                  /* 0 = off */
    float min_p;                /* 0 = off */
    float presence_penalty;     /* OpenAI semantics, over generated tokens */
    float frequency_penalty;
    float repeat_penalty;       /* llama.cpp semantics, 1 = off */
    int repeat_last_n;
    uint64_t seed;              /* used when has_seed, else a random seed */
    bool has_seed;
    const eng_logit_bias_t *logit_bias; /* copied at submit */
    int n_logit_bias;
    int n_probs;                /* -1: no logprobs; 0..20: chosen token + n alternatives */
    /* llama.cpp's other samplers (engine/sampler.h defines each); 0 (what a zeroed struct
     * holds) leaves each one out, whatever its secondary values */
    float typical_p;            /* locally typical: 0 or >= 1 off, else (0, 1) */
    float dynatemp_range;       /* dynamic temperature: 0 off, else T +- range by entropy */
    float dynatemp_exponent;    /* its exponent (1) */
    float xtc_probability;      /* exclude top choices: 0 off */
    float xtc_threshold;        /* (0.1); above 0.5 XTC does nothing */
    float top_n_sigma;          /* <= 0 off */
    float dry_multiplier;       /* DRY: 0 off */
    float dry_base;             /* (1.75); below 1 DRY does nothing */
    int dry_allowed_length;     /* (2) */
    int dry_penalty_last_n;     /* -1: the whole context, 0: DRY off (-1) */
    const char *const *dry_breakers; /* copied at submit; NULL: "\n" ":" "\"" "*" */
    int n_dry_breakers;
    int mirostat;               /* 0 off, 1 or 2 (then the chain is temperature, mirostat) */
    float mirostat_tau;         /* target surprise (5) */
    float mirostat_eta;         /* learning rate (0.1) */
    uint8_t order[16];          /* the chain (enum smp_step, engine/sampler.h), n_order steps;
                                   n_order 0: fusiond's default chain */
    int n_order;
    bool post_probs;            /* logprob and top describe the distribution after the chain
                                   (llama-server's post_sampling_probs): its survivors only */
    gr_spec_t *grammar;         /* constrained output (JSON mode, a schema: engine/grammar.h);
                                   NULL: none.  eng_submit takes its own reference.  Each
                                   step only tokens that keep the output a valid prefix may
                                   be sampled; the end of generation only once it is
                                   complete (a stop string or max_tokens may still cut it) */
} eng_sampling_t;

void eng_sampling_default(eng_sampling_t *s);

/* DRY's sequence breakers (p->dry_breakers, or llama.cpp's default list) added to sampler s
 * as token sequences of tok's vocabulary (smp_add_breaker, engine/sampler.h), matched as
 * llama.cpp matches them: a token whose text holds the breaker is a breaker by itself; a
 * token that ends with the breaker's start is one followed by the tokenization of its rest
 * (at most 20 tokens).  Nothing when DRY is off.  What eng_submit does for a request, for
 * callers that sample themselves (fusion-cli).  0, -ENOMEM. */
struct smp;
int eng_dry_breakers(struct smp *s, const eng_sampling_t *p, const tok_t *tok);

enum eng_finish {
    ENG_FINISH_NONE = 0,
    ENG_FINISH_STOP,            /* EOS/EOT or a stop string */
    ENG_FINISH_LENGTH,          /* max_tokens or the context end */
    ENG_FINISH_CANCEL,          /* eng_cancel (client gone, drain) */
    ENG_FINISH_TIMEOUT,         /* the request's time limit */
    ENG_FINISH_ERROR
};
const char *eng_finish_name(int reason); /* "stop", "length", "cancel", "timeout", "error" */

enum eng_event_type { ENG_EV_TOKEN = 1, ENG_EV_DONE = 2 };

typedef struct eng_top {
    int32_t token;
    float logprob;
} eng_top_t;

typedef struct eng_timings {
    double queue_s;             /* submit -> first scheduled */
    double prefill_s;           /* first scheduled -> prompt processed */
    double ttft_s;              /* submit -> first token */
    double decode_s;            /* first token -> done */
    double total_s;
    double device_s;            /* simulated/measured device time (corsair, cuda), else 0 */
    int n_prompt;
    int n_gen;
    int n_cached;               /* prompt tokens whose KV came from the prefix cache (not
                                   prefilled) */
} eng_timings_t;

typedef struct eng_event {
    int type;                   /* enum eng_event_type */
    uint64_t id;
    uint64_t t_ns;              /* fd_now_ns() when produced */
    /* TOKEN */
    int32_t token;
    const char *text;           /* newly released text: complete UTF-8 only, stop strings
                                   trimmed; may be empty while text is held back because it
                                   could start a stop string.  Every sampled token has its
                                   TOKEN event, the EOS/EOT that ends a request included
                                   (its text: whatever was still held back).  TOKEN only:
                                   DONE carries no text, so text held back when a request
                                   ends without a token (timeout, cancel, error) is dropped:
                                   at most the longest stop string less one byte. */
    size_t text_len;
    float logprob;              /* of the chosen token (valid when n_probs >= 0) */
    const eng_top_t *top;       /* n_top alternatives, best first */
    int n_top;
    /* prompt log-probabilities (eng_request_t.prompt_logprobs): TOKEN events with prompt
     * set come first, one per prompt position 1..n_prompt-1 in order, before any generated
     * token: token is the prompt token at that position, logprob its log-probability given
     * the tokens before it (the raw model distribution: smp_logprobs), rank its rank, top
     * the request's prompt_top alternatives; no text. */
    bool prompt;
    int rank;
    /* TOKEN and DONE: the batch place it runs in (eng_slots), -1 when it never ran */
    int slot;
    /* DONE */
    int finish;                 /* enum eng_finish */
    const float *embedding;     /* embedding requests finished with ENG_FINISH_STOP: n_embd
                                   floats, valid during the callback; else NULL */
    int n_embedding;
    const char *error;          /* message when finish == ENG_FINISH_ERROR */
    eng_timings_t timings;
} eng_event_t;

typedef void (*eng_event_cb)(void *ud, const eng_event_t *ev);

typedef struct eng_request {
    const int32_t *prompt;      /* copied at submit; must not be empty */
    size_t n_prompt;
    int max_tokens;             /* >= 0; 0 generates nothing: the prompt is prefilled (with
                                   prompt_logprobs, their events), then DONE
                                   (ENG_FINISH_LENGTH): a prompt-only request leaves its KV
                                   for the prefix cache, as editors warm it */
    eng_sampling_t sampling;
    const char *const *stop;    /* copied; matched across token boundaries */
    int n_stop;
    bool ignore_eos;
    double timeout_s;           /* 0 = none; counted from submit.  When it passes, the
                                   request ends at the engine's next step: the client has
                                   had a TOKEN event for every token sampled before, then
                                   DONE with ENG_FINISH_TIMEOUT and the timings (a request
                                   still queued ends with no token). */
    eng_event_cb on_event;      /* called on the engine thread; DONE is the last call */
    void *ud;
    bool prompt_logprobs;       /* a prompt TOKEN event per position >= 1 (eng_event_t.prompt).
                                   Such a request never reuses the prefix cache: every
                                   prompt row's logits must be computed */
    int prompt_top;             /* 0..SMP_MAX_TOP alternatives with each (prompt_logprobs) */
    /* An embedding request (pooling != ENG_POOL_NONE, max_tokens 0, no prompt_logprobs):
     * the prompt is prefilled like any other (in chunks, sharing steps), nothing is
     * sampled, and DONE (ENG_FINISH_STOP) carries the pooled final hidden state: the mean
     * of every prompt token's, the first token's (CLS) or the last token's, L2-normalized
     * when normalize is set.  It never reuses the prefix cache (the cached rows would give
     * no hidden states), though its finished KV may be cached for later prompts.
     * On an encoder (eng_info_t.encoder) every request is one of these, its prompt runs
     * whole in one step, and ENG_POOL_RANK (a pair [CLS] query [SEP] document [SEP]) gives
     * the classification head's n_cls_out scores, never normalized. */
    int pooling;                /* enum eng_pooling */
    bool normalize;
    /* LoRA: n_lora scales (eng_info_t.n_lora of them, or 0: none), one per adapter, each
     * finite, copied at submit.  Requests with different scales share steps (each sequence
     * applies its own); a cached prefix is reused only under the same scales, since its KV
     * was computed under them (all zero is the same as none). */
    const float *lora;
    int n_lora;
    /* Prefills the whole prompt, reusing no cached prefix (llama-server's cache_prompt
     * false); its finished KV may still be cached for later prompts. */
    bool no_cache_reuse;
    /* A reasoning budget (llama-server's --reasoning-budget), on when n_think_force > 0:
     * once the output is in its reasoning (it wrote think_open's text, or the prompt opened
     * it: think_inside) and has written think_budget (>= 0) tokens after the opening
     * without think_close's text, the think_force tokens are forced, one per token sampled
     * (logprob 0, no alternatives; the sampler's history takes them), and the output goes on
     * freely.  think_reopen: a later opening (gpt-oss's several analysis messages) counts on
     * from what was spent, and is closed at once when nothing is left.  The texts are
     * matched on the tokens' pieces, so any tokenization of them counts.  Needs the
     * driver's tokenizer; not with a grammar (-EINVAL).  Copied at submit. */
    int think_budget;
    const char *think_open, *think_close;
    const int32_t *think_force;
    int n_think_force;
    bool think_inside, think_reopen;
} eng_request_t;

/* Queues a request.  0 and *id set, or: -EINVAL (bad field, message in err), FD_ECTX (prompt
 * plus max_tokens exceed n_ctx, or the KV budget kv_tokens: the numbers in err), FD_EFULL
 * (waiting queue full), -ESHUTDOWN (engine closing), -ENOMEM.  On error on_event is never
 * called.  At most ENG_MAX_STOP stop strings, none empty. */
#define ENG_MAX_STOP 16
int eng_submit(eng_t *e, const eng_request_t *r, uint64_t *id, char *err, size_t errlen);
/* Cancels at the next step (frees its KV at once, or keeps it as a cached slot with
 * params.prefix_cache); DONE with ENG_FINISH_CANCEL follows.
 * -ENOENT when id is unknown or already done. */
int eng_cancel(eng_t *e, uint64_t id);
void eng_cancel_all(eng_t *e);

typedef struct eng_stats {
    int running;                /* sequences in the batch */
    int waiting;                /* queued requests */
    int64_t kv_used;            /* KV cache tokens in use */
    int64_t kv_total;
    int last_batch_seqs;
    int last_batch_tokens;
    uint64_t steps;
    uint64_t prompt_tokens;     /* totals since open */
    uint64_t gen_tokens;
    fb_stats_t ops;             /* per op-class time (fusion/backends) */
    int64_t kv_reserved;        /* KV tokens promised to running requests (prompt +
                                   max_tokens each): admission stops at kv_total */
    /* prefix cache (params.prefix_cache) */
    int cached_slots;           /* finished sequences' slots kept for reuse */
    int64_t kv_cached;          /* their tokens (not in kv_used): with kv_reserved at most
                                   kv_total */
    uint64_t cache_hits;        /* requests that reused a cached slot's KV */
    uint64_t cached_tokens;     /* prompt tokens those requests did not prefill */
    uint64_t cache_evictions;   /* cached slots dropped to make room */
    uint64_t cache_ring_misses; /* admissions whose longest cached common prefix could not be
                                   reused, a ring having overwritten the window it needs
                                   (driver's seq_reusable): prefilled from less (a context
                                   checkpoint's position) or from 0 */
    uint64_t cache_ckpt_hits;   /* admissions that reused a cached slot from a context
                                   checkpoint (the ring alone could not) */
    uint64_t ckpt_saved;        /* context checkpoints made */
    uint64_t ckpt_bytes;        /* host bytes the context checkpoints take now */
    /* speculation (params.draft_max): draft tokens fed for verification, and those the
     * sampler picked (accepted / drafted: the acceptance rate) */
    uint64_t draft_tokens;
    uint64_t draft_accepted;
    uint64_t draft_steps;       /* draft model passes (params.draft_model) */
} eng_stats_t;

void eng_stats(eng_t *e, eng_stats_t *out);

/* A running request's place in the batch: 0..max_running-1, taken at admission (the lowest
 * free one) and kept until the request ends (llama-server's slot). */
typedef struct eng_slot {
    int slot;
    uint64_t id;                /* eng_submit's id */
} eng_slot_t;

/* The running requests' places, read under the engine's lock: any thread.  Fills at most
 * cap entries (in admission order) and returns how many requests run. */
int eng_slots(eng_t *e, eng_slot_t *out, int cap);

/* Checks the scheduler's invariants (queue links and counts, FIFO order, slots distinct,
 * KV reservations and lengths, against the model's own sequence lengths; cached slots:
 * distinct from running ones, their lengths, within the slot count and the KV budget).  0, or FD_EFORMAT
 * with the first broken one in err.  ENGINE THREAD ONLY, between steps: call it from
 * on_step (the engine runs it after every step when params.check is set). */
int eng_check(eng_t *e, char *err, size_t errlen);

/* The model as the scheduler sees it.  eng_open builds one over llm_* and the tokenizer;
 * eng_open_driver takes any other, so the scheduler can be tested (and the server's tests
 * run) with a scripted model.  Every function is called on the engine thread only. */
typedef struct eng_driver {
    void *ctx;
    const eng_info_t *info;     /* owned by ctx; NULL: a minimal one is made up */
    const tok_t *tok;           /* what eng_tokenizer returns (may be NULL) */
    int n_vocab;
    int n_ctx;
    int n_slots;                /* sequences at once: max_running is capped to it */
    int (*seq_alloc)(void *ctx, int *slot);
    void (*seq_free)(void *ctx, int slot);
    int (*seq_len)(void *ctx, int slot);        /* for eng_check; may be NULL */
    /* llm_seq_truncate's contract (1: restored from a context checkpoint); NULL: no prefix
     * cache (params.prefix_cache ignored) */
    int (*seq_truncate)(void *ctx, int slot, int len);
    /* llm_decode's contract. */
    int (*decode)(void *ctx, const llm_batch_entry_t *e, int n, float *logits);
    bool (*is_eog)(void *ctx, int32_t token);
    /* tok_stream_*'s contract; last_prompt_token lets an SPM tokenizer drop the dummy-prefix
     * space of text that starts right after BOS. */
    void (*stream_init)(void *ctx, tok_stream_t *s, int32_t last_prompt_token);
    int (*stream_push)(void *ctx, tok_stream_t *s, int32_t token, char *out, size_t cap,
                       size_t *len);
    int (*stream_flush)(void *ctx, tok_stream_t *s, char *out, size_t cap, size_t *len);
    void (*stats)(void *ctx, fb_stats_t *out);  /* may be NULL */
    /* The logits buffer decode writes into: memory the backend copies into fastest
     * (fb_host_alloc).  Both NULL: malloc / free.  Freed before close. */
    void *(*host_alloc)(void *ctx, size_t bytes);
    void (*host_free)(void *ctx, void *p);
    void (*close)(void *ctx);   /* at eng_close (or a failed open), after the engine thread
                                   ended; may be NULL */
    /* llm_seq_reusable's contract: how much of a cached slot's first len positions a new
     * prompt can keep (len, or less where a sliding-window ring lost what it needs); NULL:
     * all of it */
    int (*seq_reusable)(void *ctx, int slot, int len);
    /* llm_seq_checkpoint's contract, and the bytes the checkpoints take now; NULL: none */
    int (*seq_checkpoint)(void *ctx, int slot, int first, int last);
    size_t (*ckpt_bytes)(void *ctx);
    /* A draft model (params.draft_model), NULL draft_decode: none.  It keeps its own KV
     * sequence beside each slot (allocated and freed with it by seq_alloc and seq_free, and
     * named by the slot's number): draft_decode is llm_decode's contract on it (logits of
     * draft_n_vocab floats a row), draft_len and draft_truncate llm_seq_len's and
     * llm_seq_truncate's.  The scheduler needs seq_truncate too to use it. */
    int draft_n_vocab;
    int draft_n_ctx;
    int (*draft_decode)(void *ctx, const llm_batch_entry_t *e, int n, float *logits);
    int (*draft_len)(void *ctx, int slot);
    int (*draft_truncate)(void *ctx, int slot, int len);
} eng_driver_t;

/* As eng_open on d instead of a model file (model_path, backend, fusion, threads and n_ctx
 * of p are not used).  d->close is called on failure too. */
int eng_open_driver(eng_t **out, const eng_params_t *p, const eng_driver_t *d, char *err,
                    size_t errlen);

#endif
