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
#include "engine/tokenizer.h"

typedef struct eng eng_t;

typedef struct eng_params {
    const char *model_path;     /* GGUF file */
    const char *backend;        /* "cpu" (default), "corsair", "cuda" */
    const char *const *backend_options; /* "key=value" for the backend, NULL-terminated */
    bool fusion;                /* deferred-normalization plan (default on) */
    int softmax_mode;           /* enum fb_softmax_mode used when fusion is on (MAXSUM) */
    int threads;                /* 0 = online cores */
    int n_ctx;                  /* 0 = the model's context length */
    int max_running;            /* sequences decoded together (default 16) */
    int max_waiting;            /* queued requests before FD_EFULL (default 64) */
    int64_t kv_tokens;          /* KV cache capacity in tokens over all sequences;
                                   0 = max_running * n_ctx */
    int prefill_chunk;          /* prompt tokens per sequence per step (default 256) */
    /* Optional observer called on the engine thread after every step. */
    void (*on_step)(void *ud, double seconds, int batch_seqs, int batch_tokens);
    void *on_step_ud;
} eng_params_t;

void eng_params_default(eng_params_t *p);

typedef struct eng_info {
    const char *model_id;       /* general.name, else the file name without .gguf */
    const char *model_path;
    const char *arch;           /* "llama", "qwen2" */
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
} eng_info_t;

/* Loads the model, prepares the backend and starts the engine thread. */
int eng_open(eng_t **out, const eng_params_t *p, char *err, size_t errlen);
/* Cancels everything, stops the thread, frees all. */
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
} eng_sampling_t;

void eng_sampling_default(eng_sampling_t *s);

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
} eng_timings_t;

typedef struct eng_event {
    int type;                   /* enum eng_event_type */
    uint64_t id;
    uint64_t t_ns;              /* fd_now_ns() when produced */
    /* TOKEN */
    int32_t token;
    const char *text;           /* newly released text: complete UTF-8 only, stop strings
                                   trimmed; may be empty while text is held back because it
                                   could start a stop string */
    size_t text_len;
    float logprob;              /* of the chosen token (valid when n_probs >= 0) */
    const eng_top_t *top;       /* n_top alternatives, best first */
    int n_top;
    /* DONE */
    int finish;                 /* enum eng_finish */
    const char *error;          /* message when finish == ENG_FINISH_ERROR */
    eng_timings_t timings;
} eng_event_t;

typedef void (*eng_event_cb)(void *ud, const eng_event_t *ev);

typedef struct eng_request {
    const int32_t *prompt;      /* copied at submit; must not be empty */
    size_t n_prompt;
    int max_tokens;             /* > 0 */
    eng_sampling_t sampling;
    const char *const *stop;    /* copied; matched across token boundaries */
    int n_stop;
    bool ignore_eos;
    double timeout_s;           /* 0 = none; counted from submit */
    eng_event_cb on_event;      /* called on the engine thread; DONE is the last call */
    void *ud;
} eng_request_t;

/* Queues a request.  0 and *id set, or: -EINVAL (bad field, message in err), FD_ECTX (prompt
 * plus max_tokens exceed n_ctx: the numbers in err), FD_EFULL (waiting queue full),
 * -ESHUTDOWN (engine closing).  On error on_event is never called. */
int eng_submit(eng_t *e, const eng_request_t *r, uint64_t *id, char *err, size_t errlen);
/* Cancels at the next step (frees its KV at once); DONE with ENG_FINISH_CANCEL follows.
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
} eng_stats_t;

void eng_stats(eng_t *e, eng_stats_t *out);

#endif
