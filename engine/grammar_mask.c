/* grammar_mask.c: the vocabulary trie and the per-step token mask (see grammar.h).
 *
 * The vocabulary's token byte strings, sorted, form a trie laid out in preorder with skip
 * links (the index past each node's subtree).  One linear pass over it keeps a recognizer
 * state per trie depth: a node's state is its parent's copied and fed the node's byte; when
 * the byte is refused the whole subtree is skipped.  So shared prefixes are simulated once,
 * and a context that allows few bytes (after a key, between elements) visits few nodes.
 * Inside a free string almost every token is allowed: tokens made only of plain string
 * bytes (no quote, backslash or control byte, whole UTF-8 characters) are allowed there
 * from a precomputed bit set, and only the rest go through a second, much smaller trie.
 * A GBNF spec walks the whole trie the same way with a set of parse stacks per depth
 * (engine/gbnf.h); the stack nodes a depth made are dropped when the walk leaves it, so the
 * walk holds only those of the current path, and advances of sets made of older nodes are
 * cached (gb_cache_reset): inside a repetition each character leads back to the same set,
 * so most of the trie costs a cache lookup.  The reference runs without the cache.
 * Kept apart from grammar.c so that code which only builds specs (the server's request
 * parser) does not pull in the tokenizer. */
#include "engine/grammar.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "engine/gbnf.h"

static inline void bit_set(uint32_t *s, unsigned b)
{
    s[b >> 5] |= 1u << (b & 31);
}

static inline bool bit_has(const uint32_t *s, unsigned b)
{
    return (s[b >> 5] >> (b & 31)) & 1u;
}

/* ---- the vocabulary trie ---- */

/* Tokens longer than this are never allowed (no real vocabulary has one). */
#define GR_MAX_TOKEN_BYTES 1024

typedef struct tnode {
    uint8_t byte;
    uint16_t depth;             /* 1 for a first byte */
    uint32_t skip;              /* index past this node's subtree */
    uint32_t tok0, ntok;        /* tokens whose bytes end here: toks[tok0 .. tok0 + ntok) */
} tnode_t;

typedef struct trie {
    tnode_t *nodes;
    uint32_t n;
    int32_t *toks;
} trie_t;

struct gr_vocab {
    int32_t n;
    uint32_t *off;              /* token i's bytes: bytes[off[i] .. off[i + 1]) */
    uint8_t *bytes;
    uint32_t *eog;              /* bit sets of n bits */
    uint32_t *plain;            /* tokens that can sit inside a string as they are */
    trie_t all;                 /* every token with bytes */
    trie_t odd;                 /* those with bytes that are not plain */
    int max_len;
};

typedef struct tkey {
    const uint8_t *p;
    uint32_t len;
    int32_t id;
} tkey_t;

static int tkey_cmp(const void *x, const void *y)
{
    const tkey_t *a = x, *b = y;
    int r = memcmp(a->p, b->p, FD_MIN(a->len, b->len));
    if (r)
        return r;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

static void trie_free(trie_t *t)
{
    free(t->nodes);
    free(t->toks);
    memset(t, 0, sizeof *t);
}

/* The trie of the n keys (sorted here), nodes in preorder. */
static int trie_build(trie_t *t, tkey_t *k, uint32_t n)
{
    memset(t, 0, sizeof *t);
    qsort(k, n, sizeof *k, tkey_cmp);
    size_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        total += k[i].len;
    t->nodes = malloc(FD_MAX(total, (size_t)1) * sizeof *t->nodes);
    t->toks = malloc(FD_MAX(n, 1u) * sizeof *t->toks);
    uint32_t *path = malloc((GR_MAX_TOKEN_BYTES + 1) * sizeof *path);
    uint32_t *stack = malloc((GR_MAX_TOKEN_BYTES + 1) * sizeof *stack);
    if (!t->nodes || !t->toks || !path || !stack) {
        free(path);
        free(stack);
        trie_free(t);
        return -ENOMEM;
    }
    uint32_t nn = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t l = 0;
        if (i > 0)
            while (l < k[i - 1].len && l < k[i].len && k[i - 1].p[l] == k[i].p[l])
                l++;
        for (uint32_t d = l + 1; d <= k[i].len; d++) {
            t->nodes[nn] = (tnode_t){ k[i].p[d - 1], (uint16_t)d, 0, i, 0 };
            path[d] = nn++;
        }
        /* sorted: a token's node is the last one made at its depth, so each node's tokens
         * are consecutive */
        tnode_t *e = &t->nodes[path[k[i].len]];
        if (e->ntok == 0)
            e->tok0 = i;
        e->ntok++;
        t->toks[i] = k[i].id;
    }
    t->n = nn;
    uint32_t sp = 0;
    for (uint32_t i = 0; i < nn; i++) {
        while (sp > 0 && t->nodes[stack[sp - 1]].depth >= t->nodes[i].depth)
            t->nodes[stack[--sp]].skip = i;
        stack[sp++] = i;
    }
    while (sp > 0)
        t->nodes[stack[--sp]].skip = nn;
    free(path);
    free(stack);
    return 0;
}

void gr_vocab_free(gr_vocab_t *v)
{
    if (!v)
        return;
    trie_free(&v->all);
    trie_free(&v->odd);
    free(v->off);
    free(v->bytes);
    free(v->eog);
    free(v->plain);
    free(v);
}

int gr_vocab_build(gr_vocab_t **out, const tok_t *t)
{
    *out = NULL;
    int32_t n = tok_n_vocab(t);
    gr_vocab_t *v = calloc(1, sizeof *v);
    if (!v)
        return -ENOMEM;
    v->n = n;
    size_t words = ((size_t)n + 31) / 32;
    v->off = malloc(((size_t)n + 1) * sizeof *v->off);
    v->eog = calloc(words, sizeof *v->eog);
    v->plain = calloc(words, sizeof *v->plain);
    tkey_t *keys = malloc((size_t)FD_MAX(n, 1) * sizeof *keys);
    size_t cap = (size_t)n * 4 + 64, used = 0;
    v->bytes = malloc(cap);
    if (!v->off || !v->eog || !v->plain || !keys || !v->bytes)
        goto nomem;
    for (int32_t i = 0; i < n; i++) {
        v->off[i] = (uint32_t)used;
        if (tok_is_eog(t, i))
            bit_set(v->eog, (unsigned)i);
        int tt = tok_token_type(t, i);
        if (tok_is_eog(t, i) || tt == TOK_T_CONTROL || tt == TOK_T_UNKNOWN || tt == TOK_T_UNUSED)
            continue;
        for (;;) {
            size_t len = 0;
            int rc = tok_piece(t, i, false, (char *)v->bytes + used, cap - used, &len);
            if (rc == -ENOSPC) {
                size_t c = FD_MAX(cap * 2, used + len + 64);
                uint8_t *nb = realloc(v->bytes, c);
                if (!nb)
                    goto nomem;
                v->bytes = nb;
                cap = c;
                continue;
            }
            if (rc == 0 && len <= GR_MAX_TOKEN_BYTES)
                used += len;
            break;
        }
    }
    v->off[n] = (uint32_t)used;
    uint32_t n_all = 0, n_odd = 0;
    for (int32_t i = 0; i < n; i++) {
        uint32_t len = v->off[i + 1] - v->off[i];
        if (len == 0)
            continue;
        keys[n_all++] = (tkey_t){ v->bytes + v->off[i], len, i };
        v->max_len = FD_MAX(v->max_len, (int)len);
    }
    if (trie_build(&v->all, keys, n_all) < 0)
        goto nomem;
    for (uint32_t i = 0; i < n_all; i++) {
        if (gr_string_plain(keys[i].p, keys[i].len))
            bit_set(v->plain, (unsigned)keys[i].id);
        else
            keys[n_odd++] = keys[i];
    }
    if (trie_build(&v->odd, keys, n_odd) < 0)
        goto nomem;
    free(keys);
    *out = v;
    return 0;
nomem:
    free(keys);
    gr_vocab_free(v);
    return -ENOMEM;
}

int32_t gr_vocab_n(const gr_vocab_t *v)
{
    return v->n;
}

const uint8_t *gr_vocab_bytes(const gr_vocab_t *v, int32_t id, size_t *len)
{
    *len = 0;
    if (id < 0 || id >= v->n || v->off[id + 1] == v->off[id])
        return NULL;
    *len = v->off[id + 1] - v->off[id];
    return v->bytes + v->off[id];
}

bool gr_vocab_is_eog(const gr_vocab_t *v, int32_t id)
{
    return id >= 0 && id < v->n && bit_has(v->eog, (unsigned)id);
}

size_t gr_vocab_trie_nodes(const gr_vocab_t *v)
{
    return v->all.n;
}

/* ---- the matcher ---- */

struct gr_matcher {
    gr_spec_t *g;
    const gr_vocab_t *v;
    gr_state_t st;
    gr_state_t *stk;            /* max_len + 1 states: one per trie depth */
    /* a GBNF spec's: the stacks now (in cbuf[cc] unless a character is partial), and a set,
     * its buffer and the pool's mark per trie depth */
    gb_pool_t *pool;
    gb_set_t cur;
    int32_t *cbuf[2];
    int cc;
    gb_set_t *dset;
    int32_t *dbuf;
    uint32_t *dmark;
};

int gr_matcher_new(gr_matcher_t **out, gr_spec_t *g, const gr_vocab_t *v)
{
    *out = NULL;
    gr_matcher_t *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    const size_t depths = (size_t)v->max_len + 1;
    m->g = gr_spec_ref(g);
    m->v = v;
    const gb_grammar_t *gb = gr_spec_grammar(g);
    if (!gb) {
        if (!(m->stk = malloc(depths * sizeof *m->stk)))
            goto nomem;
        gr_start(g, &m->st);
    } else {
        m->cbuf[0] = malloc(2 * GB_MAX_STACKS * sizeof *m->cbuf[0]);
        m->dset = malloc(depths * sizeof *m->dset);
        m->dbuf = malloc(depths * GB_MAX_STACKS * sizeof *m->dbuf);
        m->dmark = malloc(depths * sizeof *m->dmark);
        if (!m->cbuf[0] || !m->dset || !m->dbuf || !m->dmark || gb_pool_new(&m->pool, gb) < 0)
            goto nomem;
        m->cbuf[1] = m->cbuf[0] + GB_MAX_STACKS;
        memset(&m->st, 0, sizeof m->st);
        /* a grammar whose start is past the limits allows nothing but the end */
        if (gb_start(m->pool, &m->cur, m->cbuf[0]) < 0)
            m->cur = (gb_set_t){ .top = m->cbuf[0] };
    }
    *out = m;
    return 0;
nomem:
    gr_matcher_free(m);
    return -ENOMEM;
}

void gr_matcher_free(gr_matcher_t *m)
{
    if (!m)
        return;
    gr_spec_unref(m->g);
    free(m->stk);
    gb_pool_free(m->pool);
    free(m->cbuf[0]);
    free(m->dset);
    free(m->dbuf);
    free(m->dmark);
    free(m);
}

const gr_state_t *gr_matcher_state(const gr_matcher_t *m)
{
    return &m->st;
}

bool gr_matcher_accepting(const gr_matcher_t *m)
{
    return m->pool ? gb_accepting(&m->cur) : gr_accepting(m->g, &m->st);
}

bool gr_matcher_finished(const gr_matcher_t *m)
{
    return m->pool ? gb_finished(&m->cur) : gr_finished(&m->st);
}

static void walk(gr_matcher_t *m, const trie_t *t, uint32_t *allow)
{
    const gr_spec_t *g = m->g;
    gr_state_t *stk = m->stk;
    gr_state_copy(&stk[0], &m->st);
    for (uint32_t i = 0; i < t->n;) {
        const tnode_t *nd = &t->nodes[i];
        gr_state_t *c = &stk[nd->depth];
        gr_state_copy(c, &stk[nd->depth - 1]);
        if (gr_feed(g, c, nd->byte) < 0) {
            i = nd->skip;
            continue;
        }
        for (uint32_t k = 0; k < nd->ntok; k++)
            bit_set(allow, (unsigned)t->toks[nd->tok0 + k]);
        i++;
    }
}

/* The GBNF walk: depth d's set comes from depth d - 1's; before it is made, the nodes made
 * for the previous path at depth >= d are dropped. */
static void walk_gbnf(gr_matcher_t *m, const trie_t *t, uint32_t *allow)
{
    gb_pool_t *p = m->pool;
    m->dset[0] = m->cur;
    m->dmark[0] = gb_mark(p);
    gb_cache_reset(p);
    for (uint32_t i = 0; i < t->n;) {
        const tnode_t *nd = &t->nodes[i];
        const unsigned d = nd->depth;
        gb_rollback(p, m->dmark[d - 1]);
        if (gb_feed(p, &m->dset[d - 1], &m->dset[d], m->dbuf + (size_t)d * GB_MAX_STACKS,
                    nd->byte) < 0) {
            i = nd->skip;
            continue;
        }
        m->dmark[d] = gb_mark(p);
        for (uint32_t k = 0; k < nd->ntok; k++)
            bit_set(allow, (unsigned)t->toks[nd->tok0 + k]);
        i++;
    }
    gb_rollback(p, m->dmark[0]);
}

/* Feeds a token's bytes from the current set through the per-depth sets: 0 and the last
 * one in *end, or -1.  The caller rolls the pool back (or keeps what it made). */
static int feed_gbnf(gr_matcher_t *m, const uint8_t *b, size_t len, gb_set_t **end)
{
    m->dset[0] = m->cur;
    for (size_t k = 0; k < len; k++)
        if (gb_feed(m->pool, &m->dset[k], &m->dset[k + 1], m->dbuf + (k + 1) * GB_MAX_STACKS,
                    b[k]) < 0)
            return -1;
    *end = &m->dset[len];
    return 0;
}

static int finish_mask(gr_matcher_t *m, uint32_t *allow)
{
    const gr_vocab_t *v = m->v;
    const size_t words = ((size_t)v->n + 31) / 32;
    if (gr_matcher_accepting(m))
        for (size_t w = 0; w < words; w++)
            allow[w] |= v->eog[w];
    int count = 0;
    for (size_t w = 0; w < words; w++)
        count += __builtin_popcount(allow[w]);
    return count;
}

int gr_matcher_mask(gr_matcher_t *m, uint32_t *allow)
{
    const gr_vocab_t *v = m->v;
    const size_t words = ((size_t)v->n + 31) / 32;
    const gr_state_t *s = &m->st;
    if (m->pool) {
        memset(allow, 0, words * sizeof *allow);
        walk_gbnf(m, &v->all, allow);
    } else if (gr_in_string(s)) {
        memcpy(allow, v->plain, words * sizeof *allow);
        walk(m, &v->odd, allow);
    } else {
        memset(allow, 0, words * sizeof *allow);
        walk(m, &v->all, allow);
    }
    return finish_mask(m, allow);
}

int gr_matcher_mask_ref(gr_matcher_t *m, uint32_t *allow)
{
    const gr_vocab_t *v = m->v;
    memset(allow, 0, ((size_t)v->n + 31) / 32 * sizeof *allow);
    if (m->pool)
        gb_cache_off(m->pool);
    for (int32_t t = 0; t < v->n; t++) {
        size_t len;
        const uint8_t *b = gr_vocab_bytes(v, t, &len);
        if (!b)
            continue;
        bool ok;
        if (m->pool) {
            uint32_t mark = gb_mark(m->pool);
            gb_set_t *end;
            ok = feed_gbnf(m, b, len, &end) == 0;
            gb_rollback(m->pool, mark);
        } else {
            gr_state_t *tmp = &m->stk[0];
            gr_state_copy(tmp, &m->st);
            ok = gr_feed_bytes(m->g, tmp, b, len) == 0;
        }
        if (ok)
            bit_set(allow, (unsigned)t);
    }
    return finish_mask(m, allow);
}

int gr_matcher_accept(gr_matcher_t *m, int32_t token)
{
    const gr_vocab_t *v = m->v;
    if (token < 0 || token >= v->n)
        return -EINVAL;
    if (bit_has(v->eog, (unsigned)token))
        return gr_matcher_accepting(m) ? 0 : -EINVAL;
    size_t len;
    const uint8_t *p = gr_vocab_bytes(v, token, &len);
    if (!p)
        return -EINVAL;
    if (m->pool) {
        uint32_t mark = gb_mark(m->pool);
        gb_set_t *end;
        if (feed_gbnf(m, p, len, &end) < 0) {
            gb_rollback(m->pool, mark);
            return -EINVAL;
        }
        /* the stacks go to the other current buffer (a partial character's may still be
         * in this one), then only the nodes they use are kept */
        int32_t *dst = m->cbuf[1 - m->cc];
        if (end->top != m->cbuf[m->cc]) {
            memcpy(dst, end->top, end->n * sizeof *dst);
            end->top = dst;
            m->cc = 1 - m->cc;
        }
        m->cur = *end;
        /* in place: the stacks are already in cbuf[cc] */
        return gb_compact(m->pool, &m->cur, m->cbuf[m->cc]);
    }
    gr_state_t *tmp = &m->stk[0];
    gr_state_copy(tmp, &m->st);
    if (gr_feed_bytes(m->g, tmp, p, len) < 0)
        return -EINVAL;
    /* gr_feed may have pushed a frame past the copied ones: copy the whole used part */
    gr_state_copy(&m->st, tmp);
    return 0;
}
