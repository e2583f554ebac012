/* ugm.h: SentencePiece's unigram model (GGUF tokenizer.ggml.model "t5", llama.cpp's UGM), the
 * tokenizer of T5 and of the XLM-RoBERTa encoders (bge-m3, bge-reranker-v2-m3).  Owns the
 * normalizer (the precompiled_charsmap: a Darts double-array trie over the input bytes whose
 * leaves index NUL-terminated replacement strings, longest prefix wins) with SentencePiece's
 * white-space rules, and a byte trie over the pieces for the Viterbi search.  tokenizer.c
 * builds one per "t5" vocabulary and hands it the text between special tokens.  Immutable
 * after ugm_build: any thread may normalize and encode at once. */
#ifndef FD_UGM_H
#define FD_UGM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ugm ugm_t;

typedef struct ugm_spec {
    int32_t n_tokens;
    const char *const *texts;      /* piece texts of lens[i] bytes (lens NULL: NUL-ended) */
    const uint32_t *lens;
    const float *scores;           /* log probabilities (NULL: all 0) */
    const int32_t *types;          /* enum tok_ttype (NULL: all normal) */
    int32_t unk;                   /* the unknown piece: required */
    const uint8_t *charsmap;       /* tokenizer.ggml.precompiled_charsmap; NULL or empty:
                                      no normalization rules (identity) */
    size_t charsmap_len;
    bool add_dummy_prefix;         /* add_space_prefix: a space before the text */
    bool remove_extra_whitespaces; /* leading and trailing spaces dropped, runs made one */
    bool escape_whitespaces;       /* a space becomes U+2581 (SentencePiece's default) */
    bool ws_as_suffix;             /* treat_whitespace_as_suffix: the dummy space goes after */
} ugm_spec_t;

/* Builds the normalizer and the piece trie.  FD_EFORMAT (message in err) for a charsmap that
 * is truncated, whose trie size is not a whole number of units, whose units point outside
 * the trie or the replacement strings, or whose strings are not NUL-terminated; and for an
 * unknown-piece id outside the vocabulary.  -ENOMEM when memory runs out. */
int ugm_build(ugm_t **out, const ugm_spec_t *spec, char *err, size_t errlen);
void ugm_free(ugm_t *u);

/* treat_whitespace_as_suffix, as built. */
bool ugm_ws_as_suffix(const ugm_t *u);

/* The normalized form of s[0..n) (any bytes; ill-formed UTF-8 becomes U+FFFD, one per byte,
 * as SentencePiece does), for tests and diagnostics: *out is malloc'd (free it), *out_len
 * its length.  -ENOMEM. */
int ugm_normalize(const ugm_t *u, const uint8_t *s, size_t n, uint8_t **out, size_t *out_len);

/* Tokenizes s[0..n): normalized, then the Viterbi path of highest total score through the
 * pieces (a character no piece covers: the unknown piece at the lowest score less 10, runs
 * of them one unknown piece; with byte pieces <0xXX> in the vocabulary, its UTF-8 bytes
 * instead).  Calls emit(ctx, id) for each id in order.  -ENOMEM. */
int ugm_encode(const ugm_t *u, const uint8_t *s, size_t n, void (*emit)(void *, int32_t),
               void *ctx);

#endif
