/* request.h: the OpenAI request bodies, parsed and validated as pure functions (no I/O, no
 * engine): /v1/completions, /v1/chat/completions, /v1/embeddings, /tokenize, /detokenize,
 * and llama-server's native /infill and /completion.  Owns the parsed
 * rq_t and everything it points to.  A failure fills rq_err_t with the HTTP status, the
 * OpenAI error type, the offending field as `param` ("stop[2]", "messages[0].content") and
 * a message that says what was expected.  Any thread; no shared state. */
#ifndef FD_REQUEST_H
#define FD_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/fd.h"
#include "engine/engine.h"

enum rq_kind { RQ_COMPLETION = 1, RQ_CHAT, RQ_TOKENIZE, RQ_DETOKENIZE, RQ_EMBEDDINGS,
               RQ_INFILL, RQ_NATIVE, RQ_RERANK };

/* max_tokens: generate until the context is full (llama-server's n_predict -1). */
#define RQ_TO_CONTEXT (-1)
/* max_tokens 0 with echo (completions): the prompt alone, with its log-probabilities when
 * logprobs asks for them, and no generated token (vLLM; lm-evaluation-harness sends it). */
#define RQ_PROMPT_ONLY (-2)

/* Bounds a request is checked against (from the server's configuration). */
typedef struct rq_limits {
    int max_n;                  /* n x number of prompts */
    int max_stop;               /* stop strings (16) */
    int max_stop_len;           /* bytes per stop string (256) */
    int max_logit_bias;         /* entries (1024) */
    int max_inputs;             /* /v1/embeddings inputs per request (2048, OpenAI's) */
} rq_limits_t;

void rq_limits_default(rq_limits_t *l);

typedef struct rq_err {
    int status;                 /* HTTP status */
    const char *type;           /* "invalid_request_error", "not_found_error", ... */
    const char *code;           /* machine code or NULL */
    char param[128];             /* the field at fault, "" when none */
    char message[512];
    /* code "context_length_exceeded" for a prompt the context cannot hold: its tokens and
     * the context length (llama-server's error shows them); else 0 */
    long long n_prompt;
    int n_ctx;
} rq_err_t;

/* Fills e (printf-style message) and returns -EINVAL, for one-line error exits. */
int rq_fail(rq_err_t *e, int status, const char *type, const char *param, const char *fmt,
            ...) FD_PRINTF(5, 6);

typedef struct rq_seg {         /* one piece of a mixed prompt: text or token ids */
    char *text;                 /* NULL: ids */
    size_t text_len;
    int32_t *ids;
    size_t n_ids;
} rq_seg_t;

typedef struct rq_prompt {      /* one prompt of a completion request */
    char *text;                 /* given as a string (NUL-terminated copy), else NULL */
    size_t text_len;
    int32_t *ids;               /* given as token ids, or set later by tokenization */
    size_t n_ids;
    rq_seg_t *segs;             /* /completion's mixed form ([12, "text", 34]): its pieces
                                   in order (text and ids NULL); NULL otherwise */
    size_t n_segs;
} rq_prompt_t;

typedef struct rq_extra {      /* one /infill input_extra chunk */
    char *filename;             /* NULL when absent */
    size_t filename_len;
    char *text;
    size_t text_len;
} rq_extra_t;

typedef struct rq_call {        /* one tool call of an assistant message in the history */
    char *id;
    char *name;
    char *arguments;            /* JSON text of an object (checked to parse) */
} rq_call_t;

typedef struct rq_msg {         /* one chat message; parts are joined into content */
    char *role;                 /* system, developer, user, assistant or tool */
    char *content;              /* NULL only for an assistant message with tool calls and a
                                   null or absent content */
    rq_call_t *calls;           /* assistant: its tool_calls (NULL when none or []) */
    size_t n_calls;
    char *tool_call_id;         /* tool: the call it answers */
    char *reasoning;            /* assistant: its reasoning_content; NULL when absent or null */
} rq_msg_t;

/* tool_choice: RQ_TOOLS_NONE also when no tools are given. */
enum rq_tool_choice { RQ_TOOLS_NONE = 0, RQ_TOOLS_AUTO, RQ_TOOLS_REQUIRED, RQ_TOOLS_NAMED };

typedef struct rq {
    int kind;                   /* enum rq_kind */
    char *model;                /* NULL when absent */
    /* completion / tokenize / detokenize: prompts (detokenize: one, as ids) */
    rq_prompt_t *prompts;
    size_t n_prompts;
    /* chat */
    rq_msg_t *msgs;
    size_t n_msgs;
    bool add_generation_prompt; /* chat (default true) */
    /* chat function calling: the validated tools as the JSON text of OpenAI's array (NULL:
     * none given, or tool_choice "none", which asks for text), their names, the choice
     * (tool_name: the function a named choice forces) and parallel_tool_calls (default
     * true; false: at most one call is returned). */
    char *tools;
    char **tool_names;
    int n_tools;
    int tool_choice;            /* enum rq_tool_choice */
    char *tool_name;
    bool tool_grammar;          /* named: grammar holds the output (the arguments, after the
                                   call opening the server writes) to the function's
                                   parameters schema */
    bool parallel_tool_calls;
    /* chat reasoning: chat_template_kwargs.enable_thinking false (other keys are accepted
     * and ignored, as a template ignores variables it does not use), and llama-server's
     * per-request reasoning_format (-1: not given, else enum rsn_format) */
    bool no_thinking;
    char *template_kwargs;      /* chat_template_kwargs as JSON text (a Jinja template's extra
                                   variables); NULL when not given */
    int reasoning_format;
    /* reasoning_budget_tokens (or thinking_budget_tokens): think-block tokens allowed, -1
     * no limit, 0 thinking off; -2: not given (the configuration's reasoning_budget) */
    int reasoning_budget;
    char *reasoning_budget_message; /* llama-server's: forced before the end (NULL: the
                                       configuration's) */
    /* gpt-oss's reasoning level: "low", "medium" or "high" (a static string), from
     * reasoning_effort or chat_template_kwargs.reasoning_effort (the former wins); NULL:
     * not given (the template's default, medium) */
    const char *reasoning_effort;
    /* generation */
    int max_tokens;             /* 0 = not given (the caller applies its default);
                                   RQ_TO_CONTEXT = as many as the context holds;
                                   RQ_PROMPT_ONLY = none (max_tokens 0 with echo) */
    const char *max_tokens_field; /* the field it came from: "max_tokens", (chat)
                                     "max_completion_tokens" or llama-server's "n_predict";
                                     NULL when not given */
    int n;
    bool stream;
    bool include_usage;         /* stream_options.include_usage */
    bool echo;
    int logprobs;               /* -1: none; else alternatives per token (0..20) */
    int prompt_logprobs;        /* vLLM's: -1 none; else alternatives per prompt position
                                   (0..20), answered in its prompt_logprobs shape */
    char **stop;
    int n_stop;
    bool ignore_eos;
    eng_sampling_t sampling;    /* logit_bias points into bias below, grammar to grammar */
    gr_spec_t *grammar;         /* the output's constraint (owned), NULL: free text */
    char *grammar_text;         /* a GBNF constraint's text (grammar, guided_grammar, or what
                                   guided_regex / guided_choice became), else NULL */
    eng_logit_bias_t *bias;
    int n_bias;
    /* embeddings: the inputs are prompts (param "input"; none empty) */
    bool base64;                /* encoding_format "base64" (default "float") */
    int dimensions;             /* 0: not given; else checked against the model's size */
    /* rerank (llama-server's /rerank): the documents are prompts (text), the query here */
    char *query;
    size_t query_len;
    int top_n;                  /* results kept, best first (default: all documents) */
    bool return_text;
    bool tei;                   /* documents sent as "texts": TEI's answer (an array of
                                   {index, score[, text]}) instead of Jina's */
    /* tokenize */
    bool add_special;           /* default true */
    bool parse_special;         /* default true: special-token texts become their ids */
    bool with_pieces;
    /* completions: OpenAI's suffix (NULL: none; the FIM prompt needs the model's tokens) */
    char *suffix;
    size_t suffix_len;
    /* infill (llama-server's /infill): input_prefix, input_suffix (both required strings),
     * prompt (prompts[0], "" when absent), input_extra, response_fields.  Other fields
     * are /v1/completions' (llama-server's n_predict, top_k, samplers, ...), cache_prompt
     * and the editor stops are /completion's (below); unknown ones (llama.vim's
     * t_max_prompt_ms, id_slot) are ignored as llama-server
     * ignores what it does not know, except the unsupported ones that would change the
     * answer, refused as on the OpenAI endpoints. */
    char *input_prefix, *input_suffix;
    size_t input_prefix_len, input_suffix_len;
    rq_extra_t *extra;
    size_t n_extra;
    char **response_fields;
    int n_response_fields;
    /* llama-server's stops for editors (0: off): t_max_predict_ms, a time limit since the
     * first token, applied at a token that ends a line; n_indent, the least indentation of
     * a line after the first (a line indented less ends the answer, cut before its text) */
    float t_max_predict_ms;
    int n_indent;
    /* llama-server's /completion (RQ_NATIVE) and /infill: n_probs (its logprobs: 0 none, else
     * that many alternatives, answered as completion_probabilities; on the OpenAI endpoints
     * it sets logprobs instead, when that is not given), return_tokens (the generated
     * ids in `tokens`); cache_prompt (/completion and /infill; default true; false: no
     * cached prefix is reused, the whole prompt is prefilled); response_fields and the
     * editor stops above apply as on /infill. */
    int n_probs;
    bool return_tokens;
    bool cache_prompt;
    /* llama-server's per-request LoRA scales: "lora": [{"id": N, "scale": S}, ...]; the
     * adapters not listed get scale 0 (has_lora false: the server's global scales).  Ids are
     * checked against the adapters loaded by the server. */
    bool has_lora;
    struct rq_lora { int id; float scale; } *lora;
    int n_lora;
    /* llama.cpp's samplers (typical_p, dynatemp_*, xtc_*, top_n_sigma, dry_*, mirostat*,
     * samplers: on every generating endpoint, into sampling); the DRY breakers' strings
     * (sampling.dry_breakers points here); /completion's post_sampling_probs (n_probs then
     * answers the probabilities after the chain, as prob / top_probs) */
    char **dry_breakers;
    int n_dry_breakers;
    bool post_sampling_probs;
} rq_t;

/* Most entries of a request's "lora". */
#define RQ_MAX_LORA 64

/* Bounds of an /infill body. */
#define RQ_MAX_EXTRA 4096          /* input_extra chunks */
#define RQ_MAX_RESPONSE_FIELDS 64

/* Parses body (len bytes, need not be NUL-terminated) as a request of kind.  0 and *out
 * filled (free with rq_free), or -EINVAL with e filled (400 for bad JSON, wrong types and
 * out-of-range values), or -ENOMEM. */
int rq_parse(int kind, const char *body, size_t len, const rq_limits_t *lim, rq_t *out,
             rq_err_t *e);
void rq_free(rq_t *r);

/* The checks that need the model: token ids and logit_bias keys below n_vocab.  0 or
 * -EINVAL with e filled. */
int rq_check_vocab(const rq_t *r, int32_t n_vocab, rq_err_t *e);

/* Resolves max_tokens for a prompt of n_prompt tokens in a context of n_ctx and checks the
 * sum fits: the requested value, else the default (16 for completions, the rest of the
 * context for chat and infill; infill also cuts a larger value to what the context holds,
 * as llama-server stops there).  0 and *max_tokens set, or -EINVAL (400, the numbers in the
 * message; a prompt or a sum beyond the context has OpenAI's code
 * "context_length_exceeded", and param the field the client sent). */
int rq_resolve_max_tokens(const rq_t *r, size_t n_prompt, int n_ctx, int *max_tokens,
                          rq_err_t *e);

/* true when s[0..len) is valid UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF). */
bool rq_utf8_valid(const char *s, size_t len);

/* The small cJSON readers the request parsers share (request.c, responses.c, anthropic.c):
 * rq_field, o's key, NULL when absent or null; rq_type_name, what v is in an error message
 * ("a string", "an array", ...); rq_is_str, v is the string s; rq_oom, the 500 of a request
 * that ran out of memory while being read (returns -ENOMEM). */
struct cJSON;
const struct cJSON *rq_field(const struct cJSON *o, const char *key);
const char *rq_type_name(const struct cJSON *v);
bool rq_is_str(const struct cJSON *v, const char *s);
int rq_oom(rq_err_t *e);

/* Renames the chat parser's fields in e's param and message to another API's names: every
 * map[k][0] becomes map[k][1], for k in order; a replacement that would not fit in its
 * buffer is left out (the Responses and Messages APIs' errors). */
void rq_err_rename(rq_err_t *e, const char *const (*map)[2], size_t n);
/* OpenAI's rule for function names (which the templates print unescaped): 1-64 of a-z, A-Z,
 * 0-9, '_' and '-'. */
bool rq_fn_name_ok(const char *s);

#endif
