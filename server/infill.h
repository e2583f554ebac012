/* infill.h: llama-server's /infill, fill-in-the-middle for code models: the FIM prompt as
 * llama.cpp's format_prompt_infill builds it (the repo-level pattern with FIM_REP/FIM_SEP,
 * else the extra context prefixed; PSM or SPM order; prefix, suffix and extra context cut to
 * fit), the PSM prompt of OpenAI's legacy `suffix`, and the answer in llama-server's native
 * /completion shape (whole, stream frames, response_fields).  Pure functions over an
 * immutable tok_t: any thread, no shared state. */
#ifndef FD_INFILL_H
#define FD_INFILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/tokenizer.h"
#include "server/openai.h"

/* One input_extra chunk: {"filename": string (optional), "text": string}. */
typedef struct inf_chunk {
    const char *filename;       /* NULL: llama-server's "tmp" */
    size_t filename_len;
    const char *text;
    size_t text_len;
} inf_chunk_t;

typedef struct inf_input {
    const char *prefix;         /* input_prefix: the text before the cursor */
    size_t prefix_len;
    const char *suffix;         /* input_suffix: the text after it */
    size_t suffix_len;
    const char *prompt;         /* prompt: appended to the prefix (llama.cpp puts it there,
                                   before FIM_SUF, not after FIM_MID as its README says) */
    size_t prompt_len;
    const inf_chunk_t *extra;
    size_t n_extra;
    bool spm;                   /* suffix first (--spm-infill) */
    /* The sizes the cuts are made from: the prefix keeps its last 3/4 * n_batch tokens,
     * the suffix its first n_batch/4 - 2 - (prompt tokens), the extra context (the
     * repository header and the chunks, as one token run) its last n_ctx - n_batch -
     * 2 * n_predict (n_predict -1: no limit set). */
    int n_ctx, n_batch, n_predict;
} inf_input_t;

typedef struct inf_prompt {
    int32_t *ids;
    size_t n;
    size_t cut_prefix, cut_suffix, cut_extra; /* tokens left out */
} inf_prompt_t;

/* 0 when the vocabulary has the FIM prefix, suffix and middle tokens; else -ENOENT and msg
 * holds llama-server's message ("Infill is not supported by this model: prefix token is
 * missing. ..."). */
int inf_check(const tok_t *t, char *msg, size_t cap);

/* The /infill prompt: 0 and *out filled (inf_prompt_free), -ENOENT (no FIM tokens), -ENOMEM,
 * or tok_encode's error. */
int inf_build(const tok_t *t, const inf_input_t *in, inf_prompt_t *out);
void inf_prompt_free(inf_prompt_t *p);

/* OpenAI's suffix: [BOS when bos] FIM_PRE prefix FIM_SUF suffix FIM_MID (PSM, nothing cut).
 * 0 and *ids (malloc'd), *n set; -ENOENT without FIM tokens, -ENOMEM, tok_encode's error. */
int inf_psm(const tok_t *t, bool bos, const int32_t *prefix, size_t n_prefix,
            const char *suffix, size_t suffix_len, int32_t **ids, size_t *n);

struct cJSON;

/* llama-server's native answer (/completion, /infill). */
typedef struct inf_answer {
    int index;                  /* which completion (prompts x n_cmpl) */
    bool slot_known;            /* false: id_slot is shown as -1 */
    int id_slot;                /* the batch slot it ran in */
    const int32_t *tokens;      /* ids for `tokens` (a frame's new ones; final: all when
                                   return_tokens), n_tokens of them */
    size_t n_tokens;
    const struct cJSON *probs;  /* completion_probabilities (copied), NULL: left out */
    const struct cJSON *settings; /* final: generation_settings (copied), NULL: left out */
    const char *content;        /* cleaned to valid UTF-8 */
    size_t content_len;
    bool stop;                  /* false: a stream frame (the short form) */
    const char *model;
    long long tokens_predicted, tokens_evaluated, tokens_cached;
    const char *prompt;         /* final: the prompt's text (special tokens shown), or NULL */
    size_t prompt_len;
    bool truncated;             /* prompt + generated tokens reached the context size */
    const char *stop_type;      /* "eos", "word", "limit" or "none" */
    const char *stopping_word;  /* NULL: "" */
    bool has_new_line;
    const oai_timings_t *timings; /* final: timings (NULL: none) */
    long long cache_n;          /* final: prompt tokens the prefix cache served (timings) */
    const char *const *fields;  /* response_fields: "a/b" paths kept (each under its path as
                                   the key), the rest left out; n_fields 0: everything */
    int n_fields;
} inf_answer_t;

/* The JSON text (malloc'd), NULL when out of memory. */
char *inf_answer_json(const inf_answer_t *a);

#endif
