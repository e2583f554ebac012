/* tokenizer.h: text <-> token ids from a GGUF vocabulary: SentencePiece-style (llama: scores,
 * byte fallback, dummy-prefix space) and GPT-2 byte-level BPE (gpt2: merges, byte-to-unicode,
 * pre-tokenizer split by tokenizer.ggml.pre).  Owns its vocabulary copy and lookup tables.
 * A tok_t is immutable after tok_load: any thread may encode/decode concurrently.
 * tok_stream_t is per sequence and never splits a UTF-8 character. */
#ifndef FD_TOKENIZER_H
#define FD_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

typedef struct tok tok_t;

enum tok_kind { TOK_SPM = 1, TOK_BPE = 2 };
/* Token types as GGUF stores them (tokenizer.ggml.token_type). */
enum tok_ttype {
    TOK_T_NORMAL = 1, TOK_T_UNKNOWN = 2, TOK_T_CONTROL = 3,
    TOK_T_USER_DEFINED = 4, TOK_T_UNUSED = 5, TOK_T_BYTE = 6
};

int tok_load(tok_t **out, const gguf_t *g, char *err, size_t errlen);
void tok_free(tok_t *t);

int tok_kind(const tok_t *t);
int32_t tok_n_vocab(const tok_t *t);
int32_t tok_bos(const tok_t *t);  /* -1 when the vocabulary has none */
int32_t tok_eos(const tok_t *t);
int32_t tok_eot(const tok_t *t);  /* end of turn (e.g. <|eot_id|>), -1 when none */
bool tok_add_bos(const tok_t *t); /* tokenizer.ggml.add_bos_token (or the kind's default) */
bool tok_add_eos(const tok_t *t);
bool tok_is_eog(const tok_t *t, int32_t id); /* EOS, EOT or another end-of-generation id */
int tok_token_type(const tok_t *t, int32_t id);
const char *tok_token_text(const tok_t *t, int32_t id); /* raw vocabulary string */
int32_t tok_find(const tok_t *t, const char *text);      /* exact piece lookup, -1 if none */

/* Encodes len bytes of text.  add_special: add BOS/EOS as the vocabulary asks.  parse_special:
 * control/user-defined token texts in the input become their ids.  Writes up to cap ids and
 * sets *n to the count needed; returns -ENOSPC when cap is too small (call again). */
int tok_encode(const tok_t *t, const char *text, size_t len, bool add_special,
               bool parse_special, int32_t *ids, size_t cap, size_t *n);

/* The bytes a token stands for (SPM: U+2581 -> space, <0xAB> -> that byte; BPE: the
 * byte-to-unicode mapping undone; control tokens: empty unless render_special).  Writes up
 * to cap bytes, *len = bytes needed; -ENOSPC when cap is too small. */
int tok_piece(const tok_t *t, int32_t id, bool render_special, char *buf, size_t cap,
              size_t *len);

/* Decodes ids to text (whole string, may end in an incomplete UTF-8 sequence if the ids do).
 * strip_leading_space: drop the SPM dummy-prefix space of the first piece. */
int tok_decode(const tok_t *t, const int32_t *ids, size_t n, bool render_special,
               bool strip_leading_space, char *buf, size_t cap, size_t *len);

/* Streaming decode for one sequence: push ids, get back only complete UTF-8 characters
 * (invalid sequences become U+FFFD, never dropped silently); flush at the end. */
typedef struct tok_stream {
    uint8_t pend[8];
    int n_pend;
    bool first;          /* next piece is the first of the text (strip SPM dummy space) */
    bool strip_space;
} tok_stream_t;
void tok_stream_init(tok_stream_t *s, const tok_t *t, bool strip_leading_space);
/* Appends the text of id to out (cap bytes); *len = bytes written.  -ENOSPC if cap < 64. */
int tok_stream_push(tok_stream_t *s, const tok_t *t, int32_t id, char *out, size_t cap,
                    size_t *len);
int tok_stream_flush(tok_stream_t *s, char *out, size_t cap, size_t *len);

#endif
