/* grammar.h: constrained decoding (JSON mode, structured outputs, GBNF grammars): a
 * byte-level JSON recognizer (a pushdown automaton over a compiled spec: any JSON, an
 * object, or what a JSON Schema compiles to) or a GBNF grammar's (engine/gbnf.h), a
 * per-model trie of the vocabulary's token bytes, and the per-step mask of the tokens that
 * keep the output a valid prefix.  Specs are immutable and
 * reference-counted (any thread); a gr_vocab_t is immutable after gr_vocab_build (any
 * thread); a gr_state_t or gr_matcher_t belongs to one sequence (the engine thread).
 * Called by the engine (engine.c) and, to build specs, the server (request.c, schema.c). */
#ifndef FD_GRAMMAR_H
#define FD_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/tokenizer.h"

/* Objects and arrays nest at most this deep; at most GR_MAX_WS whitespace bytes in a row
 * between tokens (a model must make progress, not ramble in whitespace). */
#define GR_MAX_DEPTH 32
#define GR_MAX_WS 24
/* Properties per schema object (a key matches against a bit set of them). */
#define GR_MAX_PROPS 64

typedef struct gr_spec gr_spec_t;

/* ---- specs ---- */

/* Any JSON text (object_only: its top-level value must be an object: json_object mode).
 * 0 or -ENOMEM. */
int gr_spec_json(gr_spec_t **out, bool object_only);
/* A GBNF grammar (llama.cpp's format: engine/gbnf.h) as a spec.  0, or -EINVAL /
 * FD_ERANGE with err saying where and what ("line L, column C: ..."), -ENOMEM.  Such a
 * spec only drives a matcher: the JSON recognizer's functions below are not for it. */
int gr_spec_gbnf(gr_spec_t **out, const char *text, size_t len, char *err, size_t errlen);
/* Its grammar, or NULL for a JSON spec. */
const struct gb_grammar *gr_spec_grammar(const gr_spec_t *g);
/* Takes a reference / drops one (freed at the last).  Any thread. */
gr_spec_t *gr_spec_ref(gr_spec_t *g);
void gr_spec_unref(gr_spec_t *g);

/* Building a spec node by node (the schema compiler uses this; tests may too).  Node
 * functions return the new node's index (>= 0) or a negative error; nodes may refer to
 * nodes made later through gr_node_ref (recursive schemas).  Any node may be the root. */
typedef struct gr_build gr_build_t;
int gr_build_new(gr_build_t **out);
void gr_build_free(gr_build_t *b);
int gr_node_any(gr_build_t *b);          /* any JSON value */
int gr_node_string(gr_build_t *b);       /* any string */
int gr_node_number(gr_build_t *b, bool integer); /* integer: no fraction or exponent */
int gr_node_boolean(gr_build_t *b);
int gr_node_null(gr_build_t *b);
/* An array of items (a node) with min..max elements (max < 0: no bound). */
int gr_node_array(gr_build_t *b, int items, int min, int max);
/* An object.  n > 0: exactly these properties, in this order, each at most once; the
 * required ones always, the others optional.  n == 0: any keys, each value of node extra
 * (extra < 0: only the empty object).  Keys are copied; FD_ERANGE above GR_MAX_PROPS,
 * -EINVAL for duplicate keys. */
int gr_node_object(gr_build_t *b, int n, const char *const *keys, const int *values,
                   const bool *required, int extra);
/* An object of exactly one member, whose key is one of keys[0..n) and whose value is then
 * values[k] ({"tool_call": ...} or {"response": ...}).  -EINVAL for n < 1 or duplicate keys. */
int gr_node_object_one(gr_build_t *b, int n, const char *const *keys, const int *values);
/* One of n objects told apart by the value of their first property: objs[i] is an object
 * (gr_node_object, its first property required and the same key in all, a key without
 * escapes) chosen when that property's value is the JSON text tags[i] (lens[i] bytes; the
 * variant's own schema for that value is not consulted: the tag is it).  Until the tag is
 * complete any of them may follow ({"name": "get_weather", "arguments": <its schema>}).
 * -EINVAL (err says why) for mismatched variants or equal tags, -ENOMEM. */
int gr_node_tagged(gr_build_t *b, int n, const char *const *tags, const size_t *lens,
                   const int *objs, char *err, size_t errlen);
/* One of n JSON texts, byte for byte (enum and const: their values serialized without
 * whitespace).  Texts are copied; each must be one valid JSON value (-EINVAL otherwise). */
int gr_node_literals(gr_build_t *b, int n, const char *const *texts, const size_t *lens);
/* Whichever of n alternatives accepts the first byte (type lists, anyOf).  -EINVAL when two
 * alternatives can start with the same byte (a number and an integer are allowed together:
 * the number stands for both). */
int gr_node_choice(gr_build_t *b, int n, const int *alts, char *err, size_t errlen);
/* A placeholder resolved with gr_node_set_ref before gr_build_finish. */
int gr_node_ref(gr_build_t *b);
int gr_node_set_ref(gr_build_t *b, int ref, int target);
/* The spec with root as its top-level value (b keeps its nodes: it can make more specs).
 * -EINVAL for an unresolved or cyclic reference (message in err), -ENOMEM. */
int gr_build_finish(gr_build_t *b, int root, gr_spec_t **out, char *err, size_t errlen);

/* ---- the recognizer ----
 * A state is a plain struct: copy it with gr_state_copy (only the used frames) or by
 * assignment.  It accepts exactly the byte strings that are prefixes of a document the spec
 * allows (RFC 8259 JSON: UTF-8 checked, \u escapes with surrogate pairs paired, no leading
 * zeros), with whitespace only between tokens (at most GR_MAX_WS in a row, some before the
 * top-level value, none after it). */
typedef struct gr_frame {
    int32_t node;
    uint8_t kind, phase, n, lo, hi;
    uint16_t pos;
    uint32_t i, j;
    uint64_t mask;
} gr_frame_t;

typedef struct gr_state {
    uint8_t depth;              /* frames in use */
    uint8_t nc;                 /* open containers */
    uint8_t ws;                 /* whitespace bytes in a row */
    uint8_t done;               /* the top-level value is complete: nothing may follow */
    gr_frame_t f[GR_MAX_DEPTH + 1];
} gr_state_t;

void gr_start(const gr_spec_t *g, gr_state_t *s);
static inline void gr_state_copy(gr_state_t *dst, const gr_state_t *src)
{
    __builtin_memcpy(dst, src, offsetof(gr_state_t, f) + src->depth * sizeof(gr_frame_t));
}
/* Feeds one byte: 0, or -1 when the text would no longer be a valid prefix (s is then
 * meaningless: feed a copy when the byte may be refused). */
int gr_feed(const gr_spec_t *g, gr_state_t *s, uint8_t b);
int gr_feed_bytes(const gr_spec_t *g, gr_state_t *s, const void *p, size_t n);
/* The text so far is a complete document (the end of generation may come now). */
bool gr_accepting(const gr_spec_t *g, const gr_state_t *s);
/* Complete, and no byte can follow (only the end of generation). */
bool gr_finished(const gr_state_t *s);

/* The next byte goes into a free string, between characters (the mask's fast path). */
bool gr_in_string(const gr_state_t *s);
/* Bytes that can stand inside a JSON string as they are: no quote, backslash or control
 * byte, whole valid UTF-8 characters. */
bool gr_string_plain(const uint8_t *p, size_t len);

/* ---- the vocabulary ---- */

typedef struct gr_vocab gr_vocab_t;

/* Every token's bytes (tok_piece without special rendering: SentencePiece's U+2581 as a
 * space, <0xNN> as that byte, byte-level BPE undone) in a trie.  Tokens with no bytes
 * (control, unknown, unused) are never allowed, except end-of-generation tokens
 * (tok_is_eog), which are allowed exactly when the document is complete.  -ENOMEM. */
int gr_vocab_build(gr_vocab_t **out, const tok_t *t);
void gr_vocab_free(gr_vocab_t *v);
int32_t gr_vocab_n(const gr_vocab_t *v);
/* A token's bytes (NULL, *len 0 for a token without any) and whether it ends generation. */
const uint8_t *gr_vocab_bytes(const gr_vocab_t *v, int32_t id, size_t *len);
bool gr_vocab_is_eog(const gr_vocab_t *v, int32_t id);
size_t gr_vocab_trie_nodes(const gr_vocab_t *v);

/* ---- per-sequence matcher: the state and the scratch space the mask walks with ---- */

typedef struct gr_matcher gr_matcher_t;

/* Takes a reference to g; v must outlive the matcher.  -ENOMEM. */
int gr_matcher_new(gr_matcher_t **out, gr_spec_t *g, const gr_vocab_t *v);
void gr_matcher_free(gr_matcher_t *m);
/* Sets bit t of allow (n_vocab bits, 32 per word, LSB first) for each token t that may come
 * next, clears the others.  Returns how many are allowed (0: the spec cannot be continued
 * with this vocabulary). */
int gr_matcher_mask(gr_matcher_t *m, uint32_t *allow);
/* The same mask the plain way: every token's bytes fed to the recognizer one by one (the
 * reference gr_matcher_mask is tested against; slow). */
int gr_matcher_mask_ref(gr_matcher_t *m, uint32_t *allow);
/* Advances over a sampled token: 0, or -EINVAL when the token was not allowed (the state is
 * then unchanged).  An end-of-generation token leaves the state as it is. */
int gr_matcher_accept(gr_matcher_t *m, int32_t token);
/* The JSON recognizer's state (a GBNF matcher's is an empty one). */
const gr_state_t *gr_matcher_state(const gr_matcher_t *m);
/* The output so far is complete (end of generation allowed) / nothing but the end may
 * follow. */
bool gr_matcher_accepting(const gr_matcher_t *m);
bool gr_matcher_finished(const gr_matcher_t *m);

#endif
