/* openai.h: the JSON fusiond answers with, in OpenAI's shapes: completions and chat
 * completions (whole or as stream chunks), usage, logprobs, llama-server-style timings, the
 * error body, /v1/models, /v1/embeddings, /tokenize and /detokenize.  Pure functions of their arguments
 * (built with cJSON); token strings come from the tokenizer and are always valid UTF-8 in
 * the output (invalid bytes become U+FFFD; chat logprobs also carry the raw `bytes`).
 * Any thread. */
#ifndef FD_OPENAI_H
#define FD_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "server/request.h"

#define OAI_MAX_TOP 20

typedef struct oai_lp {         /* one generated (or prompt) token and its log-probabilities */
    int32_t token;
    float logprob;
    int n_top;
    eng_top_t top[OAI_MAX_TOP];
    size_t text_offset;         /* byte offset of the token's text in the choice's text */
    int rank;                   /* prompt tokens: rank in the vocabulary (1 = the best) */
} oai_lp_t;

typedef struct oai_tool_call {  /* one entry of message.tool_calls or of a delta's */
    int index;
    const char *id;             /* chunks: NULL fields are left out (id, type and name come */
    const char *name;           /* in a call's first chunk, arguments in the ones after) */
    const char *arguments;
} oai_tool_call_t;

typedef struct oai_choice {
    int index;
    const char *text;           /* the text (whole, or this chunk's delta) */
    size_t text_len;
    const char *finish_reason;  /* "stop", "length", "tool_calls", or NULL (null in JSON) */
    bool content_null;          /* chat message: "content": null (it only calls tools) */
    const char *reasoning;      /* chat: the message's (or this chunk's) reasoning_content,
                                   reasoning_len bytes; NULL: left out */
    size_t reasoning_len;
    const oai_tool_call_t *calls; /* chat: message.tool_calls, or a chunk's delta.tool_calls */
    size_t n_calls;
    bool role;                  /* chat chunk: the delta carries "role": "assistant" */
    bool logprobs;              /* emit a logprobs object (else null) */
    const oai_lp_t *lp;
    size_t n_lp;
    const int32_t *echo_ids;    /* completions with echo and logprobs: prompt tokens, before */
    size_t n_echo;              /* the generated ones */
    /* The prompt's log-probabilities: plp[i - 1] is prompt position i's (i >= 1; position 0
     * has none: null, as OpenAI and vLLM answer).  Positions past n_plp are null.
     * Completions with echo and logprobs: in token_logprobs / top_logprobs (the top
     * alternatives, up to echo_top, and the prompt token itself, as vLLM lists it).
     * prompt_logprobs (vLLM's field): "prompt_logprobs" over plp_ids (the prompt):
     * [null, {"<id>": {"logprob", "rank", "decoded_token"}, ...}, ...], the prompt token and
     * the best prompt_top alternatives; on the choice for completions, on the response
     * (the first choice's) for chat, where vLLM puts it. */
    const oai_lp_t *plp;
    size_t n_plp;
    int echo_top;
    bool prompt_logprobs;
    int prompt_top;
    const int32_t *plp_ids;
    size_t n_plp_ids;
} oai_choice_t;

typedef struct oai_timings {
    double queue_ms;
    double prompt_ms;
    double ttft_ms;
    double predicted_ms;
    double total_ms;
    long long prompt_n;
    long long predicted_n;
    bool timed_out;
    double device_ms;           /* device time (simulated: corsair) of the request's steps;
                                   0 = the backend reports none, and it is left out */
} oai_timings_t;

typedef struct oai_resp {
    int kind;                   /* RQ_COMPLETION or RQ_CHAT */
    bool chunk;                 /* a stream chunk (delta, chat.completion.chunk) */
    const char *id;
    const char *model;
    long long created;
    const oai_choice_t *choices;
    int n_choices;
    bool usage;                 /* include "usage" */
    bool usage_null;            /* else "usage": null (the chunks before the include_usage
                                   one, as OpenAI sends them) */
    long long prompt_tokens;
    long long completion_tokens;
    bool cached_details;        /* usage.prompt_tokens_details.cached_tokens (the prefix
                                   cache is on) */
    long long cached_tokens;    /* of prompt_tokens, those whose KV was reused */
    bool reasoning_details;     /* usage.completion_tokens_details.reasoning_tokens (the
                                   reasoning was separated from the content) */
    long long reasoning_tokens; /* of completion_tokens, the think blocks' */
    const oai_timings_t *timings; /* NULL = none */
    const tok_t *tok;           /* token strings for logprobs (needed when any choice has them) */
} oai_resp_t;

/* The JSON builders' two steps, shared by every answer (openai.c, infill.c, native.c,
 * responses.c): item added to obj under key (to an array when key is NULL), false with item
 * freed when item is NULL or cannot be added; obj printed unformatted when ok (NULL when not,
 * or on OOM), and freed either way. */
struct cJSON;
bool oai_put(struct cJSON *obj, const char *key, struct cJSON *item);
char *oai_print(struct cJSON *obj, bool ok);
/* A deep copy of v (NULL for NULL, or on OOM), and a string the model wrote as a JSON string
 * (bytes that are not UTF-8 become U+FFFD, as in every answer; s NULL: ""). */
struct cJSON *oai_dup(const struct cJSON *v);
struct cJSON *oai_str_n(const char *s, size_t len);

/* Each returns a malloc'd NUL-terminated JSON text (free()), NULL when out of memory.
 * oai_error: a NULL code or param is null in the body, as OpenAI sends them; status is not
 * part of the body (the caller sends it as the HTTP status). */
char *oai_response(const oai_resp_t *r);
char *oai_error(int status, const char *type, const char *code, const char *param,
                const char *message);
char *oai_error_from(const rq_err_t *e);
/* /v1/models (list) or /v1/models/{id} (one object when single). */
char *oai_models(const eng_info_t *info, const char *model_id, long long created, bool single);
/* /tokenize: tokens, count, max_model_len; with pieces: [{"id", "piece"}], the piece its
 * text, or (not valid UTF-8: a byte token, part of a character) its bytes as numbers. */
char *oai_tokenize(const tok_t *tok, const int32_t *ids, size_t n, bool with_pieces,
                   int n_ctx);
/* /v1/embeddings: {"object": "list", "data": [{"object": "embedding", "index": i,
 * "embedding": ...}], "model", "usage"}; each of the n vectors (dim floats) as an array of
 * numbers, or with base64 as the base64 of its little-endian float32 bytes (what the SDKs
 * decode). */
char *oai_embeddings(const char *model, const float *const *vecs, int n, int dim, bool base64,
                     long long prompt_tokens);
/* The chat shape of n tokens' log-probabilities, as a JSON array text: [{"token", "logprob",
 * "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}] (the Responses API's
 * output_text logprobs have the same shape). */
char *oai_token_logprobs(const tok_t *tok, const oai_lp_t *lp, size_t n);
/* /detokenize: {"content": text, "prompt": text}. */
char *oai_detokenize(const char *text, size_t len);

/* Writes s[0..len) to out with invalid UTF-8 replaced by U+FFFD; NUL bytes become U+FFFD too
 * (cJSON strings cannot hold them).  Returns a malloc'd string, NULL on OOM. */
char *oai_utf8_clean(const char *s, size_t len);

#endif
