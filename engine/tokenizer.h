/* tokenizer.h: text <-> token ids from a GGUF vocabulary: SentencePiece-style (llama: scores,
 * byte fallback, dummy-prefix space), GPT-2 byte-level BPE (gpt2: merges, byte-to-unicode,
 * pre-tokenizer split by tokenizer.ggml.pre), WordPiece (bert) and SentencePiece's unigram
 * model (t5, engine/ugm.h).  Owns its vocabulary copy and lookup tables.
 * A tok_t is immutable after tok_load: any thread may encode/decode concurrently.
 * tok_stream_t is per sequence and never splits a UTF-8 character. */
#ifndef FD_TOKENIZER_H
#define FD_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

typedef struct tok tok_t;

/* TOK_WPM: WordPiece (BERT's, tokenizer.ggml.model "bert"), as llama.cpp's WPM: the text
 * normalized and split into words (wordpiece.h), each word matched greedily longest-first
 * as U+2581 + word against the vocabulary (whose convert_hf_to_gguf form writes a word-start
 * piece "play" as U+2581 "play" and a continuation "##ing" as "ing"); a word with a
 * position nothing matches is one unknown token.  add_special writes [CLS] (the BOS id)
 * before and [SEP] after. */
/* TOK_UGM: SentencePiece's unigram model (tokenizer.ggml.model "t5": T5, and the XLM-RoBERTa
 * encoders such as bge-m3), as llama.cpp's UGM: each run of text between special tokens is
 * normalized by the precompiled_charsmap and SentencePiece's white-space rules, then cut into
 * the pieces of highest total score (ugm.h).  User-defined pieces are matched inside that
 * search, as SentencePiece matches them, not split out first.  add_special writes BOS (if
 * add_bos) before and EOS (add_eos, the default) after. */
enum tok_kind { TOK_SPM = 1, TOK_BPE = 2, TOK_WPM = 3, TOK_UGM = 4 };
/* Token types as GGUF stores them (tokenizer.ggml.token_type). */
enum tok_ttype {
    TOK_T_NORMAL = 1, TOK_T_UNKNOWN = 2, TOK_T_CONTROL = 3,
    TOK_T_USER_DEFINED = 4, TOK_T_UNUSED = 5, TOK_T_BYTE = 6
};
/* BPE pre-tokenizer splits (the regexes of the reference tokenizers, written out in C). */
enum tok_pre {
    TOK_PRE_NONE = 0,   /* SPM: no split */
    TOK_PRE_GPT2,       /* "gpt2", "gpt-2", "default" and unknown names (with a warning) */
    TOK_PRE_LLAMA3,     /* "llama3", "llama-bpe": digits in groups of 3, merges skipped for
                           whole-word tokens (ignore_merges) */
    TOK_PRE_QWEN2,      /* "qwen2": as llama3 with single digits, merges always applied */
    TOK_PRE_DIGITS,     /* "smollm", "starcoder", "refact", "command-r": every digit its own
                           piece, then the gpt2 split */
    TOK_PRE_GPT4O,      /* "gpt-4o", "llama4" (gpt-oss's o200k): letter runs split at case
                           changes, contractions as suffixes, digits in groups of 3, as
                           llama.cpp's rewrite of the o200k regex splits */
};

/* Loads tokenizer.ggml.* from g (tokens, scores, token_type, merges, model, pre, special ids,
 * add_bos/add_eos/add_space_prefix, the FIM ids: fim_{pre,suf,mid,pad,rep,sep}_token_id and
 * the older prefix/suffix/middle_token_id, which win when both are present, as in
 * llama.cpp).  Copies what it keeps: g may be closed afterwards.
 * FD_EUNSUP for a tokenizer model other than llama/gpt2/bert/t5, FD_EFORMAT for inconsistent data
 * (message in err). */
int tok_load(tok_t **out, const gguf_t *g, char *err, size_t errlen);
void tok_free(tok_t *t);

/* A vocabulary described in memory, for tests, the fuzzer and tools: tok_load fills one of
 * these from GGUF metadata.  tok_spec_init sets every id to -1 and every flag to -1 (the
 * kind's default: SPM adds BOS and the dummy prefix, BPE neither, except llama3 adds BOS). */
/* Fill-in-the-middle tokens (code models: Qwen2.5-Coder, CodeLlama, StarCoder2, DeepSeek-Coder,
 * Codestral): prefix, suffix, middle, and the padding, repository and file-separator tokens
 * of the repo-level pattern.  PAD, REP and SEP also end a generation, as in llama.cpp. */
enum tok_fim { TOK_FIM_PRE, TOK_FIM_SUF, TOK_FIM_MID, TOK_FIM_PAD, TOK_FIM_REP, TOK_FIM_SEP,
               TOK_FIM_N };

typedef struct tok_spec {
    int kind;                     /* TOK_SPM, TOK_BPE, TOK_WPM or TOK_UGM */
    const char *pre;              /* tokenizer.ggml.pre; NULL: "default" */
    int32_t n_tokens;
    const char *const *texts;     /* token strings of lens[i] bytes (lens NULL: NUL-ended) */
    const uint32_t *lens;
    const float *scores;          /* NULL: all 0 */
    const int32_t *types;         /* enum tok_ttype; NULL: all normal */
    size_t n_merges;              /* BPE: "left right" strings */
    const char *const *merges;
    const uint32_t *merge_lens;   /* NULL: NUL-ended */
    int32_t bos, eos, eot, eom, unk, pad; /* -1: none (eot: found by text when -1) */
    int32_t sep;                  /* WPM: [SEP] (-1: none) */
    int add_bos, add_eos, add_space_prefix; /* 0, 1, or -1 for the default */
    int add_sep;                  /* WPM: [SEP] after the text with add_special (-1: yes);
                                     UGM: only reported (a pair's separator, -1: no) */
    const uint8_t *charsmap;      /* UGM: precompiled_charsmap (NULL: no rules) */
    size_t charsmap_len;
    int remove_extra_ws;          /* UGM: remove_extra_whitespaces (-1: yes) */
    int escape_ws;                /* UGM: escape_whitespaces (-1: yes) */
    int ws_as_suffix;             /* UGM: treat_whitespace_as_suffix (-1: no) */
    int32_t fim[TOK_FIM_N];       /* enum tok_fim -> id; -1: found by text as llama.cpp does
                                     (a token found so becomes a control token); an id past
                                     the vocabulary is an error (FD_EFORMAT) */
} tok_spec_t;
void tok_spec_init(tok_spec_t *s);
int tok_build(tok_t **out, const tok_spec_t *spec, char *err, size_t errlen);

int tok_kind(const tok_t *t);
int tok_pre(const tok_t *t);      /* enum tok_pre */
int32_t tok_n_vocab(const tok_t *t);
int32_t tok_bos(const tok_t *t);  /* -1 when the vocabulary has none */
int32_t tok_eos(const tok_t *t);
int32_t tok_eot(const tok_t *t);  /* end of turn (e.g. <|eot_id|>), -1 when none */
int32_t tok_unk(const tok_t *t);
int32_t tok_pad(const tok_t *t);
int32_t tok_sep(const tok_t *t);  /* WPM's [SEP] (UGM: the file's separator), -1 when none */
bool tok_add_sep(const tok_t *t); /* WPM: add_special writes [SEP] at the end; UGM: a pair
                                     puts the separator between its texts (llama.cpp's
                                     add_sep_token) */
int32_t tok_fim(const tok_t *t, int which); /* enum tok_fim; -1 when none (or which is bad) */
bool tok_add_bos(const tok_t *t); /* tokenizer.ggml.add_bos_token (or the kind's default) */
bool tok_add_eos(const tok_t *t);
bool tok_is_eog(const tok_t *t, int32_t id); /* EOS, EOT or another end-of-generation id */
int tok_token_type(const tok_t *t, int32_t id); /* -EINVAL for an id out of range */
const char *tok_token_text(const tok_t *t, int32_t id); /* raw vocabulary string; NULL if
                                                          id is out of range */
int32_t tok_find(const tok_t *t, const char *text);      /* exact piece lookup, -1 if none */

/* Encodes len bytes of text (any bytes: NULs and ill-formed UTF-8 included; SPM and BPE
 * encode such bytes as byte tokens, so decoding gives back the same bytes; UGM, as
 * SentencePiece, reads each ill-formed byte as U+FFFD).  add_special:
 * add BOS/EOS as the vocabulary asks.  parse_special: control and unknown token texts in
 * the input become their ids (leftmost, longest match first).  User-defined token texts
 * always do, as in Hugging Face tokenizers and llama.cpp (UGM: inside its search).  Writes up to cap ids and sets *n
 * to the count needed; returns -ENOSPC when cap is too small (call again), -ENOMEM when
 * working memory (about 64 bytes per input byte, for the longest run between special
 * tokens) cannot be had. */
int tok_encode(const tok_t *t, const char *text, size_t len, bool add_special,
               bool parse_special, int32_t *ids, size_t cap, size_t *n);

/* The pre-tokenizer's split of text (BPE: the pieces the split regex of tok_pre() gives;
 * SPM: the whole text is one piece) as end offsets, without looking for special tokens:
 * for tests and diagnostics.  Writes up to cap ends, *n = count; -ENOSPC when cap is short. */
int tok_split(const tok_t *t, const char *text, size_t len, size_t *ends, size_t cap,
              size_t *n);

/* The bytes a token stands for (SPM: U+2581 -> space, <0xAB> -> that byte; BPE: the
 * byte-to-unicode mapping undone; control, unknown and unused tokens: empty unless
 * render_special, then their raw text).  Writes up to cap bytes, *len = bytes needed;
 * -ENOSPC when cap is too small, -EINVAL for an id out of range. */
int tok_piece(const tok_t *t, int32_t id, bool render_special, char *buf, size_t cap,
              size_t *len);

/* Decodes ids to text (whole string, may end in an incomplete UTF-8 sequence if the ids do).
 * strip_leading_space: drop the SPM/UGM dummy-prefix space of the first piece (the first one
 * that is not empty, so a leading BOS does not count); no effect for BPE.  -EINVAL (and
 * *len = 0) when an id is out of range. */
int tok_decode(const tok_t *t, const int32_t *ids, size_t n, bool render_special,
               bool strip_leading_space, char *buf, size_t cap, size_t *len);

/* Streaming decode for one sequence: push ids, get back only complete UTF-8 characters
 * (invalid sequences become U+FFFD, never dropped silently); flush at the end. */
typedef struct tok_stream {
    uint8_t pend[8];
    int n_pend;
    bool first;          /* next piece is the first of the text (strip SPM dummy space) */
    bool strip_space;
    bool render_special; /* false after init: control tokens add nothing */
} tok_stream_t;
void tok_stream_init(tok_stream_t *s, const tok_t *t, bool strip_leading_space);
/* Appends the text of id to out (cap bytes); *len = bytes written.  The output is at most
 * 3 * (piece length + 3) bytes (cap >= 64 covers pieces up to 18 bytes); when it does not
 * fit, returns -ENOSPC with *len = bytes needed and the stream unchanged (call again with a
 * larger buffer).  -EINVAL for an id out of range (stream unchanged). */
int tok_stream_push(tok_stream_t *s, const tok_t *t, int32_t id, char *out, size_t cap,
                    size_t *len);
/* Emits what is held back (an unfinished sequence becomes one U+FFFD); needs cap >= 3. */
int tok_stream_flush(tok_stream_t *s, char *out, size_t cap, size_t *len);

#endif
