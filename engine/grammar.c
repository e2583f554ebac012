/* grammar.c: the JSON recognizer and spec building.
 *
 * A spec is an array of nodes (what a value may be).  The state is a stack of frames: the
 * bottom one is the top-level value, each open object or array has one, and the top one is
 * what the next byte goes to (a value not started yet, a string, a number, a literal, or a
 * container between its elements).  A scalar that can only be known complete when a byte
 * that is not part of it arrives (a number, a literal of an enum) pops itself and hands that
 * byte to the frame below.
 * The vocabulary trie and the token mask are in grammar_mask.c. */
#include "engine/grammar.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "engine/gbnf.h"

enum node_kind { GN_STRING = 1, GN_NUMBER, GN_INTEGER, GN_LIT, GN_ARRAY, GN_OBJECT, GN_CHOICE,
                 GN_REF };

enum { GF_ONE = 1, GF_TAGGED = 2 }; /* object flags: exactly one property; its variant told
                                       by the first property's literal (gr_node_tagged) */

typedef struct gnode {
    uint8_t kind;
    uint8_t flags;
    int32_t a, b, c, d;         /* LIT: first literal, count; ARRAY: items, min, max (-1);
                                   OBJECT: first prop, count, extra, last required (-1);
                                   CHOICE: first alternative, count; REF: target (-1) */
    uint32_t first[8];          /* bytes a value of this node can start with */
} gnode_t;

typedef struct gprop {
    char *key;                  /* the key as JSON text, quotes included */
    uint32_t len;
    int32_t value;
    bool required;
} gprop_t;

typedef struct glit {
    char *s;
    uint32_t len;
    int32_t tag;                /* a tagged object's literal: the variant it selects; else -1 */
} glit_t;

/* What a builder and a spec both hold. */
typedef struct gtab {
    gnode_t *nodes;
    int n_nodes, cap_nodes;
    gprop_t *props;
    int n_props, cap_props;
    glit_t *lits;
    int n_lits, cap_lits;
    int32_t *alts;
    int n_alts, cap_alts;
} gtab_t;

struct gr_build {
    gtab_t t;
    int any;                    /* the any-value node, once made (-1) */
};

struct gr_spec {
    atomic_int refs;
    gtab_t t;
    int root;
    gb_grammar_t *gb;           /* a GBNF spec's grammar (then t is empty) */
};

/* ---- tables ---- */

static int grow(void **p, int *cap, int need, size_t size)
{
    if (need <= *cap)
        return 0;
    int c = FD_MAX(need, *cap ? *cap * 2 : 16);
    void *q = realloc(*p, (size_t)c * size);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static void tab_free(gtab_t *t)
{
    for (int i = 0; i < t->n_props; i++)
        free(t->props[i].key);
    for (int i = 0; i < t->n_lits; i++)
        free(t->lits[i].s);
    free(t->nodes);
    free(t->props);
    free(t->lits);
    free(t->alts);
    memset(t, 0, sizeof *t);
}

static int tab_copy(gtab_t *dst, const gtab_t *src)
{
    memset(dst, 0, sizeof *dst);
    dst->nodes = malloc((size_t)FD_MAX(src->n_nodes, 1) * sizeof *dst->nodes);
    dst->props = calloc((size_t)FD_MAX(src->n_props, 1), sizeof *dst->props);
    dst->lits = calloc((size_t)FD_MAX(src->n_lits, 1), sizeof *dst->lits);
    dst->alts = malloc((size_t)FD_MAX(src->n_alts, 1) * sizeof *dst->alts);
    if (!dst->nodes || !dst->props || !dst->lits || !dst->alts)
        goto nomem;
    if (src->n_nodes)
        memcpy(dst->nodes, src->nodes, (size_t)src->n_nodes * sizeof *dst->nodes);
    dst->n_nodes = dst->cap_nodes = src->n_nodes;
    if (src->n_alts)
        memcpy(dst->alts, src->alts, (size_t)src->n_alts * sizeof *dst->alts);
    dst->n_alts = dst->cap_alts = src->n_alts;
    for (int i = 0; i < src->n_props; i++) {
        dst->props[i] = src->props[i];
        if (!(dst->props[i].key = malloc(src->props[i].len + 1)))
            goto nomem;
        memcpy(dst->props[i].key, src->props[i].key, src->props[i].len + 1);
        dst->n_props = dst->cap_props = i + 1;
    }
    for (int i = 0; i < src->n_lits; i++) {
        dst->lits[i] = src->lits[i];
        if (!(dst->lits[i].s = malloc(src->lits[i].len + 1)))
            goto nomem;
        memcpy(dst->lits[i].s, src->lits[i].s, src->lits[i].len + 1);
        dst->n_lits = dst->cap_lits = i + 1;
    }
    return 0;
nomem:
    tab_free(dst);
    return -ENOMEM;
}

static inline void bit_set(uint32_t *s, unsigned b)
{
    s[b >> 5] |= 1u << (b & 31);
}

static inline bool bit_has(const uint32_t *s, unsigned b)
{
    return (s[b >> 5] >> (b & 31)) & 1u;
}

static int new_node(gr_build_t *b, int kind)
{
    gtab_t *t = &b->t;
    if (grow((void **)&t->nodes, &t->cap_nodes, t->n_nodes + 1, sizeof *t->nodes) < 0)
        return -ENOMEM;
    gnode_t *n = &t->nodes[t->n_nodes];
    memset(n, 0, sizeof *n);
    n->kind = (uint8_t)kind;
    n->c = n->d = -1;
    return t->n_nodes++;
}

/* ---- building ---- */

int gr_build_new(gr_build_t **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return -ENOMEM;
    (*out)->any = -1;
    return 0;
}

void gr_build_free(gr_build_t *b)
{
    if (!b)
        return;
    tab_free(&b->t);
    free(b);
}

static void first_number(gnode_t *n)
{
    bit_set(n->first, '-');
    for (int c = '0'; c <= '9'; c++)
        bit_set(n->first, (unsigned)c);
}

int gr_node_string(gr_build_t *b)
{
    int i = new_node(b, GN_STRING);
    if (i >= 0)
        bit_set(b->t.nodes[i].first, '"');
    return i;
}

int gr_node_number(gr_build_t *b, bool integer)
{
    int i = new_node(b, integer ? GN_INTEGER : GN_NUMBER);
    if (i >= 0)
        first_number(&b->t.nodes[i]);
    return i;
}

static int lit_cmp(const void *x, const void *y)
{
    const glit_t *a = x, *c = y;
    int r = memcmp(a->s, c->s, FD_MIN(a->len, c->len));
    if (r)
        return r;
    return (a->len > c->len) - (a->len < c->len);
}

/* Whether text is exactly one JSON value (the recognizer itself, on an any-value spec). */
static bool one_json_value(const char *s, size_t len);

static int add_literals(gr_build_t *b, int n, const char *const *texts, const size_t *lens)
{
    gtab_t *t = &b->t;
    if (grow((void **)&t->lits, &t->cap_lits, t->n_lits + n, sizeof *t->lits) < 0)
        return -ENOMEM;
    int first = t->n_lits;
    for (int i = 0; i < n; i++) {
        glit_t *l = &t->lits[t->n_lits];
        if (!(l->s = malloc(lens[i] + 1)))
            return -ENOMEM;
        memcpy(l->s, texts[i], lens[i]);
        l->s[lens[i]] = 0;
        l->len = (uint32_t)lens[i];
        l->tag = -1;
        t->n_lits++;
    }
    /* sorted, so the literals that match a prefix are a range whose first is the shortest */
    qsort(&t->lits[first], (size_t)n, sizeof *t->lits, lit_cmp);
    int m = first + 1;
    for (int i = first + 1; i < t->n_lits; i++) {
        if (lit_cmp(&t->lits[i], &t->lits[m - 1]) == 0)
            free(t->lits[i].s);
        else
            t->lits[m++] = t->lits[i];
    }
    t->n_lits = m;
    int id = new_node(b, GN_LIT);
    if (id < 0)
        return id;
    gnode_t *nd = &t->nodes[id];
    nd->a = first;
    nd->b = m - first;
    for (int i = first; i < m; i++)
        bit_set(nd->first, (uint8_t)t->lits[i].s[0]);
    return id;
}

int gr_node_literals(gr_build_t *b, int n, const char *const *texts, const size_t *lens)
{
    if (n < 1)
        return -EINVAL;
    for (int i = 0; i < n; i++)
        if (!one_json_value(texts[i], lens[i]))
            return -EINVAL;
    return add_literals(b, n, texts, lens);
}

int gr_node_boolean(gr_build_t *b)
{
    static const char *const tf[] = {"true", "false"};
    static const size_t len[] = {4, 5};
    return add_literals(b, 2, tf, len);
}

int gr_node_null(gr_build_t *b)
{
    static const char *const nul[] = {"null"};
    static const size_t len[] = {4};
    return add_literals(b, 1, nul, len);
}

int gr_node_array(gr_build_t *b, int items, int min, int max)
{
    if (items < 0 || items >= b->t.n_nodes || min < 0 || (max >= 0 && max < min))
        return -EINVAL;
    int i = new_node(b, GN_ARRAY);
    if (i >= 0) {
        gnode_t *n = &b->t.nodes[i];
        n->a = items;
        n->b = min;
        n->c = max;
        bit_set(n->first, '[');
    }
    return i;
}

/* Appends key as a JSON string (quotes, escapes for quote, backslash and control bytes). */
static char *encode_key(const char *key, uint32_t *len)
{
    size_t n = strlen(key), o = 0;
    char *s = malloc(n * 6 + 3);
    if (!s)
        return NULL;
    s[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c == '"' || c == '\\') {
            s[o++] = '\\';
            s[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)sprintf(s + o, "\\u%04x", c);
        } else {
            s[o++] = (char)c;
        }
    }
    s[o++] = '"';
    s[o] = 0;
    *len = (uint32_t)o;
    return s;
}

int gr_node_object(gr_build_t *b, int n, const char *const *keys, const int *values,
                   const bool *required, int extra)
{
    gtab_t *t = &b->t;
    if (n < 0 || extra >= t->n_nodes)
        return -EINVAL;
    if (n > GR_MAX_PROPS)
        return FD_ERANGE;
    for (int i = 0; i < n; i++) {
        if (values[i] < 0 || values[i] >= t->n_nodes)
            return -EINVAL;
        for (int j = 0; j < i; j++)
            if (strcmp(keys[i], keys[j]) == 0)
                return -EINVAL;
    }
    if (grow((void **)&t->props, &t->cap_props, t->n_props + n, sizeof *t->props) < 0)
        return -ENOMEM;
    int first = t->n_props, last_req = -1;
    for (int i = 0; i < n; i++) {
        gprop_t *p = &t->props[t->n_props];
        if (!(p->key = encode_key(keys[i], &p->len)))
            return -ENOMEM;
        p->value = values[i];
        p->required = required && required[i];
        if (p->required)
            last_req = i;
        t->n_props++;
    }
    int id = new_node(b, GN_OBJECT);
    if (id < 0)
        return id;
    gnode_t *nd = &t->nodes[id];
    nd->a = first;
    nd->b = n;
    nd->c = n > 0 ? -1 : extra;
    nd->d = last_req;
    bit_set(nd->first, '{');
    return id;
}

int gr_node_object_one(gr_build_t *b, int n, const char *const *keys, const int *values)
{
    if (n < 1)
        return -EINVAL;
    int o = gr_node_object(b, n, keys, values, NULL, -1);
    if (o >= 0)
        b->t.nodes[o].flags = GF_ONE;
    return o;
}

int gr_node_tagged(gr_build_t *b, int n, const char *const *tags, const size_t *lens,
                   const int *objs, char *err, size_t errlen)
{
    gtab_t *t = &b->t;
    if (n < 1) {
        snprintf(err, errlen, "no variants");
        return -EINVAL;
    }
    const gprop_t *key = NULL;
    for (int i = 0; i < n; i++) {
        const gnode_t *o = objs[i] >= 0 && objs[i] < t->n_nodes ? &t->nodes[objs[i]] : NULL;
        if (!o || o->kind != GN_OBJECT || o->b < 1 || o->flags || !t->props[o->a].required) {
            snprintf(err, errlen, "variant %d is not an object whose first property is "
                     "required", i);
            return -EINVAL;
        }
        const gprop_t *k = &t->props[o->a];
        if (key && (k->len != key->len || memcmp(k->key, key->key, k->len) != 0)) {
            snprintf(err, errlen, "variant %d's first property is not the others' %s", i,
                     key->key);
            return -EINVAL;
        }
        key = k;
        if (!one_json_value(tags[i], lens[i])) {
            snprintf(err, errlen, "variant %d's tag is not one JSON value", i);
            return -EINVAL;
        }
    }
    /* the key outlives this call only as the copy gr_node_object makes */
    char *k = malloc(key->len);
    if (!k)
        return -ENOMEM;
    memcpy(k, key->key + 1, key->len - 2); /* the name between its quotes */
    k[key->len - 2] = 0;
    if (strchr(k, '\\')) {
        free(k);
        snprintf(err, errlen, "a tag key with escapes");
        return -EINVAL;
    }
    int lit = add_literals(b, n, tags, lens);
    if (lit < 0 || t->nodes[lit].b != n) {
        free(k);
        snprintf(err, errlen, "two variants have the same tag");
        return lit < 0 ? lit : -EINVAL;
    }
    for (int i = 0; i < n; i++)
        for (int j = t->nodes[lit].a; j < t->nodes[lit].a + n; j++)
            if (t->lits[j].len == lens[i] && memcmp(t->lits[j].s, tags[i], lens[i]) == 0)
                t->lits[j].tag = objs[i];
    const char *keys[] = { k };
    const int values[] = { lit };
    const bool req[] = { true };
    int o = gr_node_object(b, 1, keys, values, req, -1);
    free(k);
    if (o >= 0)
        t->nodes[o].flags = GF_TAGGED;
    return o;
}

int gr_node_ref(gr_build_t *b)
{
    int i = new_node(b, GN_REF);
    if (i >= 0)
        b->t.nodes[i].a = -1;   /* unresolved */
    return i;
}

int gr_node_set_ref(gr_build_t *b, int ref, int target)
{
    if (ref < 0 || ref >= b->t.n_nodes || b->t.nodes[ref].kind != GN_REF || target < 0 ||
        target >= b->t.n_nodes)
        return -EINVAL;
    b->t.nodes[ref].a = target;
    return 0;
}

/* The node a reference chain ends at, or -1 (unresolved, or a cycle). */
static int resolve(const gtab_t *t, int i)
{
    for (int hops = 0; hops <= t->n_nodes; hops++) {
        if (i < 0 || i >= t->n_nodes)
            return -1;
        if (t->nodes[i].kind != GN_REF)
            return i;
        i = t->nodes[i].a;
    }
    return -1;
}

int gr_node_choice(gr_build_t *b, int n, const int *alts, char *err, size_t errlen)
{
    gtab_t *t = &b->t;
    if (n < 1)
        return -EINVAL;
    uint32_t seen[8] = { 0 };
    int number = -1, integer = -1;
    for (int i = 0; i < n; i++) {
        int r = resolve(t, alts[i]);
        if (r < 0) {
            snprintf(err, errlen, "a choice among values refers to one not defined yet");
            return -EINVAL;
        }
        if (t->nodes[r].kind == GN_NUMBER)
            number = i;
        if (t->nodes[r].kind == GN_INTEGER)
            integer = i;
    }
    if (grow((void **)&t->alts, &t->cap_alts, t->n_alts + n, sizeof *t->alts) < 0)
        return -ENOMEM;
    int first = t->n_alts;
    for (int i = 0; i < n; i++) {
        if (i == integer && number >= 0)
            continue;
        const gnode_t *a = &t->nodes[resolve(t, alts[i])];
        for (int w = 0; w < 8; w++) {
            if (seen[w] & a->first[w]) {
                snprintf(err, errlen, "alternatives that can start with the same character "
                         "(other than number with integer) cannot be told apart");
                t->n_alts = first;
                return -EINVAL;
            }
            seen[w] |= a->first[w];
        }
        t->alts[t->n_alts++] = alts[i];
    }
    int id = new_node(b, GN_CHOICE);
    if (id < 0)
        return id;
    t->nodes[id].a = first;
    t->nodes[id].b = t->n_alts - first;
    memcpy(t->nodes[id].first, seen, sizeof seen);
    return id;
}

int gr_node_any(gr_build_t *b)
{
    if (b->any >= 0)
        return b->any;
    int ref = gr_node_ref(b);
    int str = gr_node_string(b), num = gr_node_number(b, false);
    static const char *const tfn[] = {"true", "false", "null"};
    static const size_t len[] = {4, 5, 4};
    int lit = add_literals(b, 3, tfn, len);
    if (ref < 0 || str < 0 || num < 0 || lit < 0)
        return -ENOMEM;
    int arr = gr_node_array(b, ref, 0, -1);
    int obj = gr_node_object(b, 0, NULL, NULL, NULL, ref);
    if (arr < 0 || obj < 0)
        return -ENOMEM;
    char err[8];
    int alts[] = { obj, arr, str, num, lit };
    int any = gr_node_choice(b, 5, alts, err, sizeof err);
    if (any < 0)
        return any;
    gr_node_set_ref(b, ref, any);
    b->any = any;
    return any;
}

int gr_build_finish(gr_build_t *b, int root, gr_spec_t **out, char *err, size_t errlen)
{
    *out = NULL;
    gtab_t *t = &b->t;
    for (int i = 0; i < t->n_nodes; i++) {
        if (t->nodes[i].kind == GN_REF && resolve(t, i) < 0) {
            snprintf(err, errlen, "a reference that is undefined or only refers to itself");
            return -EINVAL;
        }
    }
    if (resolve(t, root) < 0) {
        snprintf(err, errlen, "no top-level value");
        return -EINVAL;
    }
    gr_spec_t *g = calloc(1, sizeof *g);
    if (!g || tab_copy(&g->t, t) < 0) {
        free(g);
        return -ENOMEM;
    }
    /* references followed once here, so the recognizer never meets one */
    for (int i = 0; i < g->t.n_nodes; i++) {
        gnode_t *n = &g->t.nodes[i];
        if (n->kind == GN_ARRAY)
            n->a = resolve(t, n->a);
        else if (n->kind == GN_OBJECT && n->c >= 0)
            n->c = resolve(t, n->c);
    }
    for (int i = 0; i < g->t.n_props; i++)
        g->t.props[i].value = resolve(t, g->t.props[i].value);
    for (int i = 0; i < g->t.n_alts; i++)
        g->t.alts[i] = resolve(t, g->t.alts[i]);
    g->root = resolve(t, root);
    atomic_init(&g->refs, 1);
    *out = g;
    return 0;
}

gr_spec_t *gr_spec_ref(gr_spec_t *g)
{
    if (g)
        atomic_fetch_add(&g->refs, 1);
    return g;
}

void gr_spec_unref(gr_spec_t *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    tab_free(&g->t);
    gb_free(g->gb);
    free(g);
}

int gr_spec_gbnf(gr_spec_t **out, const char *text, size_t len, char *err, size_t errlen)
{
    *out = NULL;
    gr_spec_t *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    int rc = gb_parse(&g->gb, text, len, err, errlen);
    if (rc < 0) {
        free(g);
        return rc;
    }
    atomic_init(&g->refs, 1);
    *out = g;
    return 0;
}

const struct gb_grammar *gr_spec_grammar(const gr_spec_t *g)
{
    return g->gb;
}

int gr_spec_json(gr_spec_t **out, bool object_only)
{
    gr_build_t *b;
    int rc = gr_build_new(&b);
    if (rc < 0)
        return rc;
    int any = gr_node_any(b);
    int root = any;
    if (any >= 0 && object_only)
        root = gr_node_object(b, 0, NULL, NULL, NULL, any);
    char err[64];
    rc = root < 0 ? root : gr_build_finish(b, root, out, err, sizeof err);
    gr_build_free(b);
    return rc;
}

/* ---- the recognizer ---- */

enum frame_kind { F_VALUE = 1, F_STR, F_NUM, F_LIT, F_ARR, F_OBJ };
/* string phases */
enum { S_NORMAL, S_ESC, S_HEX, S_LOW_BS, S_LOW_U, S_LOW_HEX, S_UTF8 };
/* number phases */
enum { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };
/* array phases */
enum { A_START, A_IN, A_AFTER, A_COMMA };
/* object phases */
enum { O_START, O_KEYM, O_KEY, O_COLON, O_VSTART, O_VAL, O_AFTER, O_COMMA };

static inline bool is_ws(uint8_t b)
{
    return b == ' ' || b == '\n' || b == '\t' || b == '\r';
}

static inline bool is_digit(uint8_t b)
{
    return b >= '0' && b <= '9';
}

void gr_start(const gr_spec_t *g, gr_state_t *s)
{
    memset(s, 0, offsetof(gr_state_t, f) + sizeof s->f[0]);
    s->depth = 1;
    s->f[0].kind = F_VALUE;
    s->f[0].node = g->root;
}

static inline int ws_byte(gr_state_t *s)
{
    if (s->ws >= GR_MAX_WS)
        return -1;
    s->ws++;
    return 0;
}

/* A value frame just ended (popped): its parent moves on, or the document is complete. */
static void value_done(const gr_spec_t *g, gr_state_t *s)
{
    if (s->depth == 0) {
        s->done = 1;
        return;
    }
    gr_frame_t *p = &s->f[s->depth - 1];
    if (p->kind == F_ARR) {
        p->phase = A_AFTER;
        p->i++;
        return;
    }
    if (p->phase == O_VAL && (g->t.nodes[p->node].flags & GF_TAGGED)) {
        /* the tag literal just ended (its frame, popped, is still above): the object
         * goes on as the variant it names, its first property read */
        p->node = g->t.lits[s->f[s->depth].i].tag;
        p->j = 0;
    }
    p->phase = p->phase == O_KEY ? O_COLON : O_AFTER;
}

static int push_value(gr_state_t *s, int node)
{
    gr_frame_t *f = &s->f[s->depth++];
    memset(f, 0, sizeof *f);
    f->kind = F_VALUE;
    f->node = node;
    return 0;
}

/* Starts an object key at its opening quote (phase O_START or O_COMMA). */
static int key_start(const gr_spec_t *g, gr_state_t *s, gr_frame_t *f)
{
    const gnode_t *n = &g->t.nodes[f->node];
    if (n->b == 0) {
        if (n->c < 0)
            return -1;
        f->phase = O_KEY;
        gr_frame_t *k = &s->f[s->depth++];
        memset(k, 0, sizeof *k);
        k->kind = F_STR;
        k->node = -1;
        k->phase = S_NORMAL;
        return 0;
    }
    /* candidates: the properties from the next one up to and including the next required
     * (exactly one: any of them) */
    int from = f->phase == O_START ? 0 : (int)f->j + 1;
    uint64_t m = 0;
    for (int j = from; j < n->b; j++) {
        m |= 1ull << j;
        if (g->t.props[n->a + j].required && !(n->flags & GF_ONE))
            break;
    }
    if (!m)
        return -1;
    f->mask = m;
    f->pos = 1;
    f->phase = O_KEYM;
    return 0;
}

static int key_byte(const gr_spec_t *g, gr_frame_t *f, uint8_t b)
{
    const gnode_t *n = &g->t.nodes[f->node];
    uint64_t m = f->mask, keep = 0;
    int done = -1;
    while (m) {
        int j = __builtin_ctzll(m);
        m &= m - 1;
        const gprop_t *p = &g->t.props[n->a + j];
        if (f->pos < p->len && (uint8_t)p->key[f->pos] == b) {
            keep |= 1ull << j;
            if (f->pos + 1u == p->len)
                done = j;
        }
    }
    if (!keep)
        return -1;
    f->mask = keep;
    f->pos++;
    if (done >= 0) {
        /* a JSON string ends at its first unescaped quote: no other key goes on */
        f->j = (uint32_t)done;
        f->phase = O_COLON;
    }
    return 0;
}

static int str_byte(const gr_spec_t *g, gr_state_t *s, gr_frame_t *f, uint8_t b)
{
    int h;
    switch (f->phase) {
    case S_NORMAL:
        if (b == '"') {
            s->depth--;
            value_done(g, s);
            return 0;
        }
        if (b == '\\') {
            f->phase = S_ESC;
            return 0;
        }
        if (b < 0x20)
            return -1;
        if (b < 0x80)
            return 0;
        f->lo = 0x80;
        f->hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF) {
            f->n = 1;
        } else if (b >= 0xE0 && b <= 0xEF) {
            f->n = 2;
            if (b == 0xE0)
                f->lo = 0xA0;   /* no overlong forms */
            else if (b == 0xED)
                f->hi = 0x9F;   /* no surrogates */
        } else if (b >= 0xF0 && b <= 0xF4) {
            f->n = 3;
            if (b == 0xF0)
                f->lo = 0x90;
            else if (b == 0xF4)
                f->hi = 0x8F;   /* nothing above U+10FFFF */
        } else {
            return -1;
        }
        f->phase = S_UTF8;
        return 0;
    case S_UTF8:
        if (b < f->lo || b > f->hi)
            return -1;
        f->lo = 0x80;
        f->hi = 0xBF;
        if (--f->n == 0)
            f->phase = S_NORMAL;
        return 0;
    case S_ESC:
        if (b == 'u') {
            f->phase = S_HEX;
            f->n = 4;
            f->i = 0;
            return 0;
        }
        if (!strchr("\"\\/bfnrt", b) || b == 0)
            return -1;
        f->phase = S_NORMAL;
        return 0;
    case S_HEX:
        if ((h = fd_hex_digit(b)) < 0)
            return -1;
        f->i = f->i * 16 + (uint32_t)h;
        f->n--;
        /* a low surrogate alone is refused as soon as it shows */
        if (f->n == 2 && f->i >= 0xDC && f->i <= 0xDF)
            return -1;
        if (f->n == 0)
            f->phase = f->i >= 0xD800 && f->i <= 0xDBFF ? S_LOW_BS : S_NORMAL;
        return 0;
    case S_LOW_BS:
        if (b != '\\')
            return -1;
        f->phase = S_LOW_U;
        return 0;
    case S_LOW_U:
        if (b != 'u')
            return -1;
        f->phase = S_LOW_HEX;
        f->n = 4;
        return 0;
    case S_LOW_HEX:
        if ((h = fd_hex_digit(b)) < 0)
            return -1;
        if ((f->n == 4 && h != 0xD) || (f->n == 3 && h < 0xC))
            return -1;
        if (--f->n == 0)
            f->phase = S_NORMAL;
        return 0;
    }
    return -1;
}

/* 1: consumed; 0: the number is complete and b is not part of it; -1: refused. */
static int num_byte(gr_frame_t *f, bool integer, uint8_t b)
{
    switch (f->phase) {
    case N_MINUS:
        if (b == '0')
            f->phase = N_ZERO;
        else if (b >= '1' && b <= '9')
            f->phase = N_INT;
        else
            return -1;
        return 1;
    case N_ZERO:
    case N_INT:
        if (is_digit(b))
            return f->phase == N_ZERO ? -1 : 1;
        if (b == '.' && !integer) {
            f->phase = N_DOT;
            return 1;
        }
        if ((b == 'e' || b == 'E') && !integer) {
            f->phase = N_E;
            return 1;
        }
        return 0;
    case N_DOT:
        if (!is_digit(b))
            return -1;
        f->phase = N_FRAC;
        return 1;
    case N_FRAC:
        if (is_digit(b))
            return 1;
        if (b == 'e' || b == 'E') {
            f->phase = N_E;
            return 1;
        }
        return 0;
    case N_E:
        if (b == '+' || b == '-') {
            f->phase = N_ESIGN;
            return 1;
        }
        if (!is_digit(b))
            return -1;
        f->phase = N_EXP;
        return 1;
    case N_ESIGN:
        if (!is_digit(b))
            return -1;
        f->phase = N_EXP;
        return 1;
    case N_EXP:
        return is_digit(b) ? 1 : 0;
    }
    return -1;
}

static bool num_complete(const gr_frame_t *f)
{
    return f->phase == N_ZERO || f->phase == N_INT || f->phase == N_FRAC ||
           f->phase == N_EXP;
}

/* Narrows the literal range [i, j) to those with byte b at pos: 1 consumed, 0 complete and
 * b not part of it, -1 refused.  The range shares its first pos bytes and is sorted, so the
 * one literal that ends at pos (if any) comes first and the rest are in order of their byte
 * at pos: two binary searches find the sub-range (an enum may be long). */
static int lit_byte(const gr_spec_t *g, gr_frame_t *f, uint8_t b)
{
    const glit_t *l = g->t.lits;
    uint32_t lo = f->i, hi = f->j;
    const bool ends = l[lo].len == f->pos;
    if (ends)
        lo++;
    uint32_t a = lo, z = hi;
    while (a < z) {
        uint32_t m = a + (z - a) / 2;
        if ((uint8_t)l[m].s[f->pos] < b)
            a = m + 1;
        else
            z = m;
    }
    uint32_t e = a;
    z = hi;
    while (e < z) {
        uint32_t m = e + (z - e) / 2;
        if ((uint8_t)l[m].s[f->pos] <= b)
            e = m + 1;
        else
            z = m;
    }
    if (e > a) {
        f->i = a;
        f->j = e;
        f->pos++;
        return 1;
    }
    return ends ? 0 : -1;
}

static bool lit_complete(const gr_spec_t *g, const gr_frame_t *f)
{
    return g->t.lits[f->i].len == f->pos;
}

/* The first byte of a value of the frame's node (not whitespace): the frame becomes what
 * that value is. */
static int value_start(const gr_spec_t *g, gr_state_t *s, gr_frame_t *f, uint8_t b)
{
    const gnode_t *n = &g->t.nodes[f->node];
    if (!bit_has(n->first, b))
        return -1;
    while (n->kind == GN_CHOICE) {
        int k = 0;
        while (!bit_has(g->t.nodes[g->t.alts[n->a + k]].first, b))
            k++;
        f->node = g->t.alts[n->a + k];
        n = &g->t.nodes[f->node];
    }
    f->phase = 0;
    f->i = f->j = 0;
    f->pos = 0;
    f->mask = 0;
    f->n = 0;
    switch (n->kind) {
    case GN_STRING:
        f->kind = F_STR;
        f->phase = S_NORMAL;
        return 0;
    case GN_NUMBER:
    case GN_INTEGER:
        f->kind = F_NUM;
        f->phase = b == '-' ? N_MINUS : b == '0' ? N_ZERO : N_INT;
        return 0;
    case GN_LIT:
        f->kind = F_LIT;
        f->i = (uint32_t)n->a;
        f->j = (uint32_t)(n->a + n->b);
        return lit_byte(g, f, b) == 1 ? 0 : -1;
    case GN_ARRAY:
    case GN_OBJECT:
        if (s->nc >= GR_MAX_DEPTH)
            return -1;
        s->nc++;
        f->kind = n->kind == GN_ARRAY ? F_ARR : F_OBJ;
        f->phase = n->kind == GN_ARRAY ? A_START : O_START;
        return 0;
    }
    return -1;
}

static void container_end(const gr_spec_t *g, gr_state_t *s)
{
    s->nc--;
    s->depth--;
    value_done(g, s);
}

int gr_feed(const gr_spec_t *g, gr_state_t *s, uint8_t b)
{
    const bool ws = is_ws(b);
    for (;;) {
        if (s->depth == 0)
            return -1;
        gr_frame_t *f = &s->f[s->depth - 1];
        const gnode_t *n = &g->t.nodes[f->node >= 0 ? f->node : 0];
        int r;
        switch (f->kind) {
        case F_VALUE:
            if (ws)
                return ws_byte(s);
            s->ws = 0;
            return value_start(g, s, f, b);
        case F_STR:
            return str_byte(g, s, f, b);
        case F_NUM:
            r = num_byte(f, n->kind == GN_INTEGER, b);
            if (r != 0)
                return r > 0 ? 0 : -1;
            s->depth--;
            value_done(g, s);
            continue;
        case F_LIT:
            r = lit_byte(g, f, b);
            if (r != 0)
                return r > 0 ? 0 : -1;
            s->depth--;
            value_done(g, s);
            continue;
        case F_ARR:
            if (f->phase != A_IN && ws)
                return ws_byte(s);
            s->ws = 0;
            switch (f->phase) {
            case A_START:
                if (b == ']' && n->b == 0) {
                    container_end(g, s);
                    return 0;
                }
                if (n->c == 0)
                    return -1;
                f->phase = A_IN;
                push_value(s, n->a);
                continue;
            case A_AFTER:
                if (b == ',' && (n->c < 0 || (int)f->i < n->c)) {
                    f->phase = A_COMMA;
                    return 0;
                }
                if (b == ']' && (int)f->i >= n->b) {
                    container_end(g, s);
                    return 0;
                }
                return -1;
            case A_COMMA:
                f->phase = A_IN;
                push_value(s, n->a);
                continue;
            }
            return -1;
        case F_OBJ:
            if (f->phase != O_KEYM && ws)
                return ws_byte(s);
            s->ws = 0;
            switch (f->phase) {
            case O_START:
                if (b == '}' && n->d < 0 && !(n->flags & GF_ONE)) {
                    container_end(g, s);
                    return 0;
                }
                return b == '"' ? key_start(g, s, f) : -1;
            case O_COMMA:
                return b == '"' ? key_start(g, s, f) : -1;
            case O_KEYM:
                return key_byte(g, f, b);
            case O_COLON:
                if (b != ':')
                    return -1;
                f->phase = O_VSTART;
                return 0;
            case O_VSTART:
                f->phase = O_VAL;
                push_value(s, n->b > 0 ? g->t.props[n->a + (int)f->j].value : n->c);
                continue;
            case O_AFTER:
                if (b == ',' && (n->b == 0 || (int)f->j + 1 < n->b) && !(n->flags & GF_ONE)) {
                    f->phase = O_COMMA;
                    return 0;
                }
                if (b == '}' && (n->b == 0 || n->d <= (int)f->j || (n->flags & GF_ONE))) {
                    container_end(g, s);
                    return 0;
                }
                return -1;
            }
            return -1;
        }
        return -1;
    }
}

int gr_feed_bytes(const gr_spec_t *g, gr_state_t *s, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (gr_feed(g, s, b[i]) < 0)
            return -1;
    return 0;
}

bool gr_accepting(const gr_spec_t *g, const gr_state_t *s)
{
    if (s->done)
        return true;
    if (s->depth != 1)
        return false;
    const gr_frame_t *f = &s->f[0];
    if (f->kind == F_NUM)
        return num_complete(f);
    if (f->kind == F_LIT)
        return lit_complete(g, f);
    return false;
}

bool gr_finished(const gr_state_t *s)
{
    return s->done;
}

/* Literals are rare (schema compilation): an any-value spec is made for each check. */
static bool one_json_value(const char *s, size_t len)
{
    gr_spec_t *g;
    if (gr_spec_json(&g, false) < 0)
        return false;
    gr_state_t *st = malloc(sizeof *st);
    bool ok = st && len > 0 && !is_ws((uint8_t)s[0]);
    if (ok) {
        gr_start(g, st);
        ok = gr_feed_bytes(g, st, s, len) == 0 && gr_accepting(g, st);
    }
    free(st);
    gr_spec_unref(g);
    return ok;
}

/* ---- what the mask needs to know (grammar_mask.c) ---- */

/* Whether a token's bytes can stand inside a JSON string as they are: no quote, backslash
 * or control byte, and whole, valid UTF-8 characters only. */
bool gr_string_plain(const uint8_t *p, size_t len)
{
    gr_frame_t f;
    gr_state_t s;
    memset(&f, 0, sizeof f);
    f.kind = F_STR;
    f.phase = S_NORMAL;
    s.depth = 1;
    for (size_t i = 0; i < len; i++)
        if (p[i] == '"' || p[i] == '\\' || str_byte(NULL, &s, &f, p[i]) < 0)
            return false;
    return f.phase == S_NORMAL;
}

bool gr_in_string(const gr_state_t *s)
{
    const gr_frame_t *f = s->depth ? &s->f[s->depth - 1] : NULL;
    return f && f->kind == F_STR && f->phase == S_NORMAL;
}
