/* gbnf.h: llama.cpp's GBNF grammars: the parser (text to a compiled, immutable grammar of
 * rules over Unicode code points) and the recognizer, a set of parse stacks advanced one
 * UTF-8 byte at a time (partial characters at token boundaries included).  A compiled
 * grammar is immutable (any thread); a gb_pool_t and the sets made with it belong to one
 * sequence (the engine thread).  Called by engine/grammar.c (specs) and grammar_mask.c
 * (the token mask); tests and fuzz targets call it directly. */
#ifndef FD_GBNF_H
#define FD_GBNF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits: grammar text, rules (named and the ones groups and repetitions make), compiled
 * elements, a {m,n} bound, stacks alive at once, stack nodes per sequence, and the work of
 * one character (stack expansions).  A prefix whose parse needs more stacks, nodes or work
 * than this is refused as if it were outside the language. */
#define GB_MAX_TEXT (256u * 1024u)
#define GB_MAX_RULES 8192
#define GB_MAX_ELEMS (1u << 18)
#define GB_MAX_REPEAT 1000
#define GB_MAX_STACKS 1024
#define GB_MAX_NODES (1u << 20)
#define GB_MAX_WORK 65536

typedef struct gb_grammar gb_grammar_t;

/* Compiles GBNF text (len bytes; NULs are errors).  0 and *out, or -EINVAL (err: "line L,
 * column C: what", for syntax errors, an undefined rule, no root, left recursion, an empty
 * grammar), FD_ERANGE (over a limit above; err says which), -ENOMEM. */
int gb_parse(gb_grammar_t **out, const char *text, size_t len, char *err, size_t errlen);
void gb_free(gb_grammar_t *g);
int gb_n_rules(const gb_grammar_t *g);

/* ---- the recognizer ----
 * A set is the parse stacks alive after the bytes so far (node ids in the pool; -1 is the
 * empty stack: the text so far is a sentence of the grammar) and a partial UTF-8 character.
 * top points into the caller's buffer (GB_MAX_STACKS entries), to the set it came from
 * (while a character is partial), or into the pool's cache (gb_cache_reset). */
typedef struct gb_set {
    const int32_t *top;
    uint32_t n;
    uint32_t cp;                /* the partial character's bits so far */
    uint8_t need;               /* its continuation bytes still to come (0: none) */
    uint8_t lo, hi;             /* the range of the next continuation byte */
    bool acc;                   /* the empty stack is among them */
} gb_set_t;

typedef struct gb_pool gb_pool_t;

int gb_pool_new(gb_pool_t **out, const gb_grammar_t *g);
void gb_pool_free(gb_pool_t *p);
/* The stacks before any byte, into buf.  0, or -1 when a limit was hit. */
int gb_start(gb_pool_t *p, gb_set_t *s, int32_t *buf);
/* Feeds one byte of in into out (whose stacks go to buf when the byte completes a
 * character).  0, or -1 when the text would no longer be a prefix of a sentence (a byte
 * that is not UTF-8 included); out is then meaningless. */
int gb_feed(gb_pool_t *p, const gb_set_t *in, gb_set_t *out, int32_t *buf, uint8_t b);
/* The text so far is a sentence (the end of generation may come now). */
static inline bool gb_accepting(const gb_set_t *s)
{
    return s->acc && s->need == 0;
}
/* Nothing but the end may follow: the one stack left is the empty one. */
static inline bool gb_finished(const gb_set_t *s)
{
    return s->acc && s->n == 1 && s->need == 0;
}
/* Nodes made after a mark are dropped by gb_rollback (the mask tries tokens so); sets that
 * used them are then meaningless. */
uint32_t gb_mark(const gb_pool_t *p);
void gb_rollback(gb_pool_t *p, uint32_t mark);
uint32_t gb_pool_nodes(const gb_pool_t *p);
/* Starts caching advances (until the next rollback below this point or gb_compact): the
 * mask calls it before it walks the vocabulary, so a set fed the same character again
 * (inside a repetition: every token's first character) is advanced once.  A set's top may
 * then point into the cache, valid until the cache is reset or turned off. */
void gb_cache_reset(gb_pool_t *p);
/* Stops caching until the next reset (the reference mask runs without it). */
void gb_cache_off(gb_pool_t *p);
/* Keeps only the nodes set s uses (renumbered: s's stacks are rewritten in buf, which must
 * be the buffer s->top points to or hold s->n entries).  0 or -ENOMEM (the pool is then
 * unchanged). */
int gb_compact(gb_pool_t *p, gb_set_t *s, int32_t *buf);

/* Whether the whole of text is a sentence (tests, fuzzing): 1 yes, 0 no, -ENOMEM. */
int gb_match(const gb_grammar_t *g, const void *text, size_t len);

#endif
