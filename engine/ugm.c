/* ugm.c: SentencePiece's unigram tokenizer (ugm.h).
 *
 * Normalization walks the input once: at each position the longest rule of the charsmap's
 * double-array trie that matches the bytes there gives its replacement string (else the
 * character stays, and a byte that starts no well-formed character becomes U+FFFD), then
 * SentencePiece's white-space rules apply to the replacements as its Normalizer applies them
 * (spaces before the text dropped, a space that follows a space dropped, trailing spaces
 * dropped, the dummy space, spaces escaped as U+2581).  Where llama.cpp's normalizer differs
 * from SentencePiece's (a text of spaces only without remove_extra_whitespaces; a dummy
 * space that remove_extra_whitespaces adds even when add_dummy_prefix is off) this follows
 * SentencePiece, the tokenizer the models were trained with.
 *
 * The Viterbi search is SentencePiece's optimized one: for each character position, every
 * piece that starts there (found by walking the piece trie) offers the best path to its end
 * plus its score; a character that no single piece covers is the unknown piece at the lowest
 * piece score less 10.  Unused pieces are never chosen; a user-defined piece scores its
 * length times the highest normal score (at least FLT_MIN, as SentencePiece starts it) less
 * 0.1, which makes it win wherever it fits.  Scores add up in double, as llama.cpp and Hugging
 * Face's tokenizers do. */
#include "config.h"

#include "engine/ugm.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "engine/tokenizer.h"
#include "engine/unicode.h"

static const uint8_t SP_ESC[3] = {0xE2, 0x96, 0x81}; /* U+2581 */
static const uint8_t FFFD[3] = {0xEF, 0xBF, 0xBD};

struct ugm {
    /* normalizer */
    const uint32_t *units;   /* the double array (a copy, 4-byte aligned) */
    uint32_t *units_mem;
    size_t n_units;
    char *repl;              /* NUL-terminated replacement strings */
    size_t repl_len;
    bool prefix, remove_ws, escape, suffix;
    /* pieces */
    int32_t n;
    uint8_t *type;
    float *score;
    uint32_t *len;
    /* the piece trie, breadth first: node k's children are nodes first[k] ..
     * first[k] + cnt[k] - 1, label[] their bytes, ascending; node 0 the root */
    uint32_t *first;
    uint16_t *cnt;
    uint8_t *label;
    int32_t *node_id;        /* trie node -> piece id, -1 */
    uint32_t n_nodes;
    int32_t unk;
    double unk_score;
    float max_score;
    int32_t byte_id[256];    /* <0xXX> pieces, -1 when absent */
    bool byte_fallback;
};

void ugm_free(ugm_t *u)
{
    if (!u)
        return;
    free(u->label);
    free(u->cnt);
    free(u->first);
    free(u->node_id);
    free(u->len);
    free(u->score);
    free(u->type);
    free(u->repl);
    free(u->units_mem);
    free(u);
}

/* ---------------------------------------------------------------- the charsmap */

/* Darts-clone's unit layout: bit 31 marks a value unit (bits 0-30 the value); otherwise
 * bits 0-7 are the label, bit 8 says a value hangs below, and bits 10-30 are the offset to
 * the children (shifted left by 8 more when bit 9 is set). */
static inline uint32_t du_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
static inline uint32_t du_label(uint32_t u) { return u & ((1u << 31) | 0xFFu); }
static inline bool du_has_leaf(uint32_t u) { return (u >> 8) & 1u; }
static inline uint32_t du_value(uint32_t u) { return u & ((1u << 31) - 1); }

static uint32_t rd_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Layout: the trie's size in bytes (u32, little-endian), the trie, the strings. */
static int load_charsmap(ugm_t *u, const uint8_t *cm, size_t len, char *err, size_t errlen)
{
    if (len == 0)
        return 0;
    if (len < 4) {
        fd_set_err(err, errlen, "precompiled_charsmap: %zu bytes, shorter than its 4-byte trie "
                   "size", len);
        return FD_EFORMAT;
    }
    const uint32_t tsize = rd_le32(cm);
    if (tsize % 4 != 0 || tsize == 0) {
        fd_set_err(err, errlen, "precompiled_charsmap: a trie of %u bytes is not a whole number "
                   "of 4-byte units", tsize);
        return FD_EFORMAT;
    }
    if ((size_t)tsize > len - 4) {
        fd_set_err(err, errlen, "precompiled_charsmap: truncated: the trie needs %u bytes, %zu "
                   "follow its size", tsize, len - 4);
        return FD_EFORMAT;
    }
    const size_t nu = tsize / 4, slen = len - 4 - tsize;
    const uint8_t *strs = cm + 4 + tsize;
    if (slen > 0 && strs[slen - 1] != 0) {
        fd_set_err(err, errlen, "precompiled_charsmap: the replacement strings do not end in "
                   "a NUL byte");
        return FD_EFORMAT;
    }
    u->units_mem = malloc(nu * sizeof *u->units_mem);
    u->repl = malloc(slen + 1);
    if (!u->units_mem || !u->repl)
        return -ENOMEM;
    for (size_t i = 0; i < nu; i++)
        u->units_mem[i] = rd_le32(cm + 4 + 4 * i);
    memcpy(u->repl, strs, slen);
    u->repl[slen] = 0;
    u->units = u->units_mem;
    u->n_units = nu;
    u->repl_len = slen;
    /* Every unit that a walk can reach is a node whose children lie inside the array or a
     * value that indexes a string: checked on all of them, so a bad file fails here, not
     * on some later input (the walk checks its bounds too). */
    for (size_t i = 0; i < nu; i++) {
        uint32_t w = u->units[i];
        if (w & (1u << 31)) {
            if (du_value(w) >= slen) {
                fd_set_err(err, errlen, "precompiled_charsmap: unit %zu points at string "
                           "offset %u, past the %zu bytes of strings", i, du_value(w), slen);
                return FD_EFORMAT;
            }
        } else if (w != 0 && ((size_t)i ^ du_offset(w)) >= nu) {
            fd_set_err(err, errlen, "precompiled_charsmap: unit %zu points at unit %zu, past "
                       "the trie's %zu units", i, (size_t)i ^ du_offset(w), nu);
            return FD_EFORMAT;
        }
    }
    return 0;
}

/* The longest charsmap rule matching s[0..n): its length (0: none) and replacement. */
static size_t charsmap_match(const ugm_t *u, const uint8_t *s, size_t n, const char **rep)
{
    if (u->n_units == 0)
        return 0;
    size_t best = 0;
    size_t node = du_offset(u->units[0]);
    for (size_t i = 0; i < n; i++) {
        const uint8_t c = s[i];
        if (c == 0) /* the trie's keys are C strings */
            break;
        node ^= c;
        if (node >= u->n_units)
            break;
        const uint32_t w = u->units[node];
        if (du_label(w) != c)
            break;
        node ^= du_offset(w);
        if (du_has_leaf(w)) {
            if (node >= u->n_units)
                break;
            const uint32_t v = u->units[node];
            if (!(v & (1u << 31)) || du_value(v) >= u->repl_len)
                break;
            best = i + 1;
            *rep = u->repl + du_value(v);
        }
    }
    return best;
}

/* ---------------------------------------------------------------- the piece trie */

/* The child of node by byte b (0: none; the root is never a child): a binary search of the
 * node's children, whose bytes are ascending. */
static inline uint32_t trie_child(const ugm_t *u, uint32_t node, uint8_t b)
{
    uint32_t lo = u->first[node], hi = lo + u->cnt[node];
    const uint32_t end = hi;
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo) / 2;
        if (u->label[mid] < b)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < end && u->label[lo] == b ? lo : 0;
}

typedef struct key {
    const uint8_t *s;
    uint32_t len;
    int32_t id;
} pkey_t;

/* Bytes ascending, a prefix before what extends it, ids ascending among equal texts. */
static int key_cmp(const void *pa, const void *pb)
{
    const pkey_t *a = pa, *b = pb;
    int c = memcmp(a->s, b->s, FD_MIN(a->len, b->len));
    if (c)
        return c;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

/* Builds the trie breadth first from the m keys sorted: a node is the range of keys sharing
 * its prefix; the keys that end there give its piece (the last id of equal texts, as a map
 * keeps the last), the rest split by their next byte into its children, appended in byte
 * order, so each node's children lie together and ascending.  At most max_nodes nodes (the
 * keys' bytes + 1). */
static int trie_build(ugm_t *u, pkey_t *k, size_t m, size_t max_nodes)
{
    qsort(k, m, sizeof *k, key_cmp);
    uint32_t *lo = malloc(max_nodes * sizeof *lo), *hi = malloc(max_nodes * sizeof *hi);
    u->first = malloc(max_nodes * sizeof *u->first);
    u->cnt = malloc(max_nodes * sizeof *u->cnt);
    u->label = malloc(max_nodes);
    u->node_id = malloc(max_nodes * sizeof *u->node_id);
    int rc = -ENOMEM;
    if (!lo || !hi || !u->first || !u->cnt || !u->label || !u->node_id)
        goto done;
    /* a node's depth is its prefix length: the next byte of its keys is s[depth]; one
     * depth per level, as the nodes of one level are contiguous */
    uint32_t n = 1, depth = 0, level_end = 1;
    lo[0] = 0;
    hi[0] = (uint32_t)m;
    u->label[0] = 0;
    for (uint32_t nd = 0; nd < n; nd++) {
        if (nd == level_end) {
            depth++;
            level_end = n;
        }
        uint32_t i = lo[nd];
        u->node_id[nd] = -1;
        while (i < hi[nd] && k[i].len == depth)
            u->node_id[nd] = k[i++].id;
        u->first[nd] = n;
        while (i < hi[nd]) {
            const uint8_t c = k[i].s[depth];
            uint32_t j = i + 1;
            while (j < hi[nd] && k[j].s[depth] == c)
                j++;
            if (n >= max_nodes) { /* cannot happen: each node is a distinct key prefix */
                rc = FD_ERANGE;
                goto done;
            }
            u->label[n] = c;
            lo[n] = i;
            hi[n] = j;
            n++;
            i = j;
        }
        u->cnt[nd] = (uint16_t)(n - u->first[nd]);
    }
    u->n_nodes = n;
    rc = 0;
done:
    free(hi);
    free(lo);
    return rc;
}

static int parse_byte_piece(const uint8_t *s, size_t n)
{
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        int d = fd_hex_digit((char)s[i]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

int ugm_build(ugm_t **out, const ugm_spec_t *sp, char *err, size_t errlen)
{
    *out = NULL;
    if (!sp || sp->n_tokens <= 0 || !sp->texts) {
        fd_set_err(err, errlen, "empty vocabulary");
        return FD_EFORMAT;
    }
    if (sp->unk < 0 || sp->unk >= sp->n_tokens) {
        fd_set_err(err, errlen, "a unigram (t5) vocabulary needs its unknown token (id %d, "
                   "%d tokens)", sp->unk, sp->n_tokens);
        return FD_EFORMAT;
    }
    ugm_t *u = calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    int rc = load_charsmap(u, sp->charsmap, sp->charsmap ? sp->charsmap_len : 0, err,
                           errlen);
    if (rc)
        goto fail;
    rc = -ENOMEM;
    const int32_t n = sp->n_tokens;
    u->n = n;
    u->unk = sp->unk;
    u->prefix = sp->add_dummy_prefix;
    u->remove_ws = sp->remove_extra_whitespaces;
    u->escape = sp->escape_whitespaces;
    u->suffix = sp->ws_as_suffix;
    u->type = malloc((size_t)n);
    u->score = malloc((size_t)n * sizeof *u->score);
    u->len = malloc((size_t)n * sizeof *u->len);
    if (!u->type || !u->score || !u->len)
        goto fail;
    size_t total = 1;
    float min_score = FLT_MAX;
    u->max_score = FLT_MIN; /* SentencePiece's start: log probabilities never raise it */
    bool any_normal = false;
    for (int32_t i = 0; i < n; i++) {
        const char *s = sp->texts[i];
        u->len[i] = s ? (sp->lens ? sp->lens[i] : (uint32_t)strlen(s)) : 0;
        int ty = sp->types ? sp->types[i] : TOK_T_NORMAL;
        u->type[i] = (uint8_t)(ty >= TOK_T_NORMAL && ty <= TOK_T_BYTE ? ty : TOK_T_NORMAL);
        float sc = sp->scores ? sp->scores[i] : 0.0f;
        u->score[i] = isnan(sc) ? -FLT_MAX : sc;
        if (u->type[i] == TOK_T_NORMAL) {
            any_normal = true;
            min_score = FD_MIN(min_score, u->score[i]);
            u->max_score = FD_MAX(u->max_score, u->score[i]);
        }
        if (u->type[i] == TOK_T_NORMAL || u->type[i] == TOK_T_USER_DEFINED)
            total += u->len[i];
    }
    u->unk_score = (double)(any_normal ? min_score : 0.0f) - 10.0;
    /* a trie of total nodes at most, numbered in 32 bits */
    if (total >= UINT32_MAX) {
        fd_set_err(err, errlen, "a unigram vocabulary of %zu piece bytes is too large", total);
        rc = FD_ERANGE;
        goto fail;
    }
    pkey_t *keys = malloc((size_t)n * sizeof *keys);
    if (!keys)
        goto fail;
    size_t m = 0;
    for (int32_t i = 0; i < n; i++)
        if ((u->type[i] == TOK_T_NORMAL || u->type[i] == TOK_T_USER_DEFINED) && u->len[i] > 0)
            keys[m++] = (pkey_t){(const uint8_t *)sp->texts[i], u->len[i], i};
    rc = trie_build(u, keys, m, total);
    free(keys);
    if (rc)
        goto fail;
    for (int b = 0; b < 256; b++)
        u->byte_id[b] = -1;
    for (int32_t i = 0; i < n; i++) {
        if (u->type[i] != TOK_T_BYTE)
            continue;
        int b = parse_byte_piece((const uint8_t *)sp->texts[i], u->len[i]);
        if (b >= 0 && u->byte_id[b] < 0) {
            u->byte_id[b] = i;
            u->byte_fallback = true;
        }
    }
    *out = u;
    return 0;
fail:
    if (rc == -ENOMEM)
        fd_set_err(err, errlen, "out of memory building the unigram tokenizer");
    ugm_free(u);
    return rc;
}

bool ugm_ws_as_suffix(const ugm_t *u) { return u->suffix; }

/* ---------------------------------------------------------------- normalization */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
    bool oom;
} buf_t;

static void put(buf_t *b, const void *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t nc = FD_MAX(b->cap * 2, b->n + n + 64);
        uint8_t *q = realloc(b->p, nc);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void put_space(const ugm_t *u, buf_t *b)
{
    if (u->escape)
        put(b, SP_ESC, 3);
    else
        put(b, " ", 1);
}

/* What s[0..n) (n > 0) starts with, normalized (*rep, *rlen), and the bytes it consumes. */
static size_t norm_prefix(const ugm_t *u, const uint8_t *s, size_t n, const uint8_t **rep,
                          size_t *rlen)
{
    const char *r = NULL;
    size_t k = charsmap_match(u, s, n, &r);
    if (k > 0) {
        *rep = (const uint8_t *)r;
        *rlen = strlen(r);
        return k;
    }
    uint32_t cp;
    int m = uni_scan(s, n, &cp);
    if (m > 0) {
        *rep = s;
        *rlen = (size_t)m;
        return (size_t)m;
    }
    *rep = FFFD; /* SentencePiece: one U+FFFD per ill-formed byte */
    *rlen = 3;
    return 1;
}

static int normalize(const ugm_t *u, const uint8_t *s, size_t n, buf_t *out)
{
    size_t i = 0;
    if (u->remove_ws) {
        while (i < n) {
            const uint8_t *r;
            size_t rl, k = norm_prefix(u, s + i, n - i, &r, &rl);
            if (!(rl == 1 && r[0] == ' '))
                break;
            i += k;
        }
    }
    if (i == n)
        return 0;
    if (u->prefix && !u->suffix)
        put_space(u, out);
    bool prev_space = u->remove_ws;
    while (i < n) {
        const uint8_t *r;
        size_t rl, k = norm_prefix(u, s + i, n - i, &r, &rl);
        while (prev_space && rl > 0 && r[0] == ' ') {
            r++;
            rl--;
        }
        if (rl > 0) {
            for (size_t j = 0; j < rl; j++) {
                if (r[j] == ' ' && u->escape)
                    put(out, SP_ESC, 3);
                else
                    put(out, r + j, 1);
            }
            prev_space = r[rl - 1] == ' ';
        }
        i += k;
        if (!u->remove_ws)
            prev_space = false;
    }
    if (u->remove_ws) {
        const size_t sl = u->escape ? 3 : 1;
        const uint8_t *sp = u->escape ? SP_ESC : (const uint8_t *)" ";
        while (out->n >= sl && memcmp(out->p + out->n - sl, sp, sl) == 0)
            out->n -= sl;
    }
    if (u->prefix && u->suffix)
        put_space(u, out);
    return out->oom ? -ENOMEM : 0;
}

int ugm_normalize(const ugm_t *u, const uint8_t *s, size_t n, uint8_t **out, size_t *out_len)
{
    buf_t b = {0};
    *out = NULL;
    *out_len = 0;
    int rc = normalize(u, s, n, &b);
    if (rc) {
        free(b.p);
        return rc;
    }
    if (!b.p && !(b.p = malloc(1)))
        return -ENOMEM;
    *out = b.p;
    *out_len = b.n;
    return 0;
}

/* ---------------------------------------------------------------- Viterbi */

/* The best path to one position: the piece that ends there, where it starts, the sum. */
typedef struct best {
    double score;
    int64_t start;   /* -1: not reached yet */
    int32_t id;
} best_t;

/* SentencePiece's character length from the lead byte (a continuation byte: 1). */
static inline size_t char_len(uint8_t c)
{
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}

int ugm_encode(const ugm_t *u, const uint8_t *s, size_t n, void (*emit)(void *, int32_t),
               void *ctx)
{
    buf_t nb = {0};
    int rc = normalize(u, s, n, &nb);
    const size_t N = nb.n;
    best_t *best = NULL;
    size_t *path = NULL;
    if (rc || N == 0)
        goto done;
    rc = -ENOMEM;
    best = malloc((N + 1) * sizeof *best);
    path = malloc((N + 1) * sizeof *path);
    if (!best || !path)
        goto done;
    for (size_t i = 0; i <= N; i++)
        best[i] = (best_t){0.0, -1, -1};
    best[0].start = 0;
    const uint8_t *t = nb.p;
    for (size_t pos = 0; pos < N;) {
        const size_t mb = FD_MIN(char_len(t[pos]), N - pos);
        const double here = best[pos].score;
        bool single = false;
        uint32_t node = 0;
        for (size_t k = pos; k < N; k++) {
            node = trie_child(u, node, t[k]);
            if (node == 0)
                break;
            const int32_t id = u->node_id[node];
            if (id < 0)
                continue;
            const size_t len = k + 1 - pos;
            const double sc = u->type[id] == TOK_T_USER_DEFINED
                                  ? (double)((float)len * u->max_score - 0.1f)
                                  : (double)u->score[id];
            best_t *b = &best[k + 1];
            if (b->start < 0 || here + sc > b->score)
                *b = (best_t){here + sc, (int64_t)pos, id};
            if (len == mb)
                single = true;
        }
        if (!single) {
            best_t *b = &best[pos + mb];
            if (b->start < 0 || here + u->unk_score > b->score)
                *b = (best_t){here + u->unk_score, (int64_t)pos, u->unk};
        }
        pos += mb;
    }
    /* the path's ends, back to front */
    size_t np = 0;
    for (size_t e = N; e > 0; e = (size_t)best[e].start)
        path[np++] = e;
    for (size_t k = np; k-- > 0;) {
        const size_t e = path[k];
        const size_t st = (size_t)best[e].start;
        const int32_t id = best[e].id;
        if (id != u->unk) {
            emit(ctx, id);
            continue;
        }
        if (u->byte_fallback) { /* the unknown characters' bytes */
            for (size_t j = st; j < e; j++)
                emit(ctx, u->byte_id[t[j]] >= 0 ? u->byte_id[t[j]] : u->unk);
            continue;
        }
        /* a run of unknown characters is one unknown piece */
        if (k + 1 < np && best[path[k + 1]].id == u->unk)
            continue;
        emit(ctx, id);
    }
    rc = 0;
done:
    free(path);
    free(best);
    free(nb.p);
    return rc;
}
