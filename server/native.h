/* native.h: llama-server's own response shapes beside the OpenAI ones: its error body, the
 * completion_probabilities of /completion, its generation-settings object, GET /props and
 * GET /slots.  Pure functions over what the caller passes in (the server gathers the live
 * slot state on the loop thread): any thread, no shared state.  Values fusiond does not
 * have are left out. */
#ifndef FD_NATIVE_H
#define FD_NATIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "server/openai.h"

struct cJSON;

/* {"error": {"code": status, "message": ..., "type": ...}}; fusiond's error types map to
 * llama-server's (service_unavailable_error -> unavailable_error).  NULL: out of memory. */
char *nat_error(int status, const char *type, const char *message);

/* A prompt of n_prompt tokens the context of n_ctx cannot hold, as llama-server answers it:
 * {"error": {"code": 400, "message": "request (N tokens) exceeds the available context size
 * (M tokens), try increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": N,
 * "n_ctx": M}} (clients read the two numbers to shorten what they send).  NULL: out of
 * memory. */
char *nat_error_ctx(long long n_prompt, int n_ctx);

/* completion_probabilities: per token {id, token, bytes, logprob, top_logprobs: [{id,
 * token, bytes, logprob}]}; post (post_sampling_probs: lp holds the log of the
 * probabilities after the sampling chain): prob and top_probs instead, the probabilities
 * themselves.  NULL: out of memory. */
struct cJSON *nat_probs(const tok_t *tok, const oai_lp_t *lp, size_t n, bool post);

/* One request's settings as llama-server's params object shows them. */
typedef struct nat_params {
    int n_predict;              /* -1: until the context is full */
    const eng_sampling_t *s;    /* has_seed false: shown as llama-server's random seed */
    const char *const *stop;
    int n_stop;
    bool ignore_eos, stream;
    int n_probs;
    bool json_schema;           /* the output is constrained by JSON ("grammar" says so) */
    const char *grammar;        /* or by this GBNF text ("grammar" shows it), else NULL */
} nat_params_t;

struct cJSON *nat_params_json(const nat_params_t *p);

/* One batch slot as /slots lists it. */
typedef struct nat_slot {
    int id;
    bool busy;
    long long id_task;          /* the engine request id, -1 when idle */
    const nat_params_t *params; /* the request's, or the defaults when idle */
    long long n_decoded;
    long long n_remain;         /* -1: unlimited */
    bool has_new_line;
} nat_slot_t;

typedef struct nat_server {
    int n_ctx;
    bool speculative;           /* n-gram speculative decoding is on */
} nat_server_t;

/* GET /slots: an array of n slots.  NULL: out of memory. */
char *nat_slots(const nat_server_t *sv, const nat_slot_t *slots, int n);

typedef struct nat_props {
    const nat_server_t *sv;
    const nat_params_t *defaults;
    int total_slots;
    const char *model_path;
    const char *model_alias;
    const char *chat_template;  /* NULL: "" */
    const char *bos_token, *eos_token; /* their text; NULL: left out */
    const char *build_info;
} nat_props_t;

/* GET /props.  NULL: out of memory. */
char *nat_props(const nat_props_t *p);

#endif
