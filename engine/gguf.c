/* gguf.c: the GGUF reader (see gguf.h).  One pass over the header validates every length,
 * count, type, shape and offset against the bytes actually present, and builds small
 * indexes (hash tables for keys and tensor names, element tables for string and nested
 * arrays) so that every accessor afterwards is a bounded lookup.
 *
 * Error classes, so that a damaged file always maps to the same code:
 *   FD_ETRUNC   something (a field, a string, an array, a tensor's data) runs past the end
 *               of the file: a cut file, or a count or length too big for the file;
 *   FD_ERANGE   a length, count or size that overflows 63 bits, a bad general.alignment,
 *               arrays nested absurdly deep;
 *   FD_EFORMAT  bad magic, unknown value type, malformed key or name, bool not 0/1,
 *               misaligned or overlapping tensor data;
 *   FD_EVERSION a version other than 2 or 3;  FD_EUNSUP big-endian files, unknown tensor
 *               types;  FD_EDUP duplicate keys or tensor names;  FD_ESHAPE bad dimensions;
 *   FD_ETYPE    general.alignment stored with a non-integer type. */
#include "engine/gguf.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fd.h"
#include "common/ggtypes.h"

#define GGUF_MAGIC "GGUF"
/* Nesting beyond this is never produced by real writers; the bound keeps recursion shallow. */
#define GGUF_MAX_NEST 8
/* Anything above this is not a length any file can hold; treated as overflow. */
#define GGUF_MAX_LEN ((uint64_t)INT64_MAX)

struct gguf_kv {
    const char *key;         /* NUL-terminated copy */
    int type;
    uint64_t off;            /* file offset of the value */
    const uint8_t *val;      /* value bytes in the mapping (scalars) */
    gguf_str_t str;          /* GGUF_STRING */
    gguf_arr_t arr;          /* GGUF_ARRAY */
};

struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t mem[];
};

struct gguf {
    char *name;
    const uint8_t *base;
    uint64_t size;
    bool mapped;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_off;
    int64_t n_kv;
    struct gguf_kv *kv;
    int64_t *kv_hash;        /* open addressing, -1 = empty; size kv_hmask + 1 */
    uint64_t kv_hmask;
    int64_t n_tensors;
    gguf_tensor_t *tensors;
    int64_t *t_hash;
    uint64_t t_hmask;
    struct chunk *arena;
};

/* ---- small helpers ---------------------------------------------------------------------- */

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32);
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* All of a handle's small allocations come from one arena, freed at close: the parse can
 * fail at any point without a per-object unwind. */
static void *arena_alloc(gguf_t *g, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct chunk *c = g->arena;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        c = malloc(sizeof(*c) + cap);
        if (!c)
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = g->arena;
        g->arena = c;
    }
    void *p = (char *)c->mem + c->used;
    c->used += n;
    return p;
}

static size_t vtype_size(int t)
{
    switch (t) {
    case GGUF_UINT8: case GGUF_INT8: case GGUF_BOOL: return 1;
    case GGUF_UINT16: case GGUF_INT16: return 2;
    case GGUF_UINT32: case GGUF_INT32: case GGUF_FLOAT32: return 4;
    case GGUF_UINT64: case GGUF_INT64: case GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static bool vtype_is_int(int t)
{
    switch (t) {
    case GGUF_UINT8: case GGUF_INT8: case GGUF_UINT16: case GGUF_INT16:
    case GGUF_UINT32: case GGUF_INT32: case GGUF_UINT64: case GGUF_INT64:
        return true;
    default:
        return false;
    }
}

const char *gguf_vtype_name(int vtype)
{
    static const char *const names[GGUF_VTYPE_COUNT] = {
        "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL",
        "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64",
    };
    return vtype >= 0 && vtype < GGUF_VTYPE_COUNT ? names[vtype] : "?";
}

/* ---- the parser ------------------------------------------------------------------------- */

struct rd {
    gguf_t *g;
    uint64_t pos;
    char *err;
    size_t errlen;
    const char *what;        /* "key 'x'" / "tensor 'y'" / "tensor #n": where we are */
    char whatbuf[160];
    int64_t elem;            /* index in the innermost array being read, or -1 */
};

static int fail(struct rd *r, int code, const char *fmt, ...) FD_PRINTF(3, 4);

static int fail(struct rd *r, int code, const char *fmt, ...)
{
    if (!r->err || !r->errlen)
        return code;
    int n = snprintf(r->err, r->errlen, "%s: ", r->g->name);
    if (n < 0 || (size_t)n >= r->errlen)
        return code;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0 || (size_t)(n + m) >= r->errlen || !r->what)
        return code;
    if (r->elem >= 0)
        snprintf(r->err + n + m, r->errlen - (size_t)(n + m), " (%s, array element %" PRId64 ")",
                 r->what, r->elem);
    else
        snprintf(r->err + n + m, r->errlen - (size_t)(n + m), " (%s)", r->what);
    return code;
}

static void set_what(struct rd *r, const char *kind, const char *s, size_t len)
{
    /* Names come from the file: show them escaped and bounded. */
    size_t o = (size_t)snprintf(r->whatbuf, sizeof(r->whatbuf), "%s '", kind);
    for (size_t i = 0; i < len && o + 8 < sizeof(r->whatbuf); i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\')
            r->whatbuf[o++] = (char)c;
        else
            o += (size_t)snprintf(r->whatbuf + o, sizeof(r->whatbuf) - o, "\\x%02x", c);
    }
    if (o + 8 >= sizeof(r->whatbuf) && len)
        o += (size_t)snprintf(r->whatbuf + o, sizeof(r->whatbuf) - o, "...");
    snprintf(r->whatbuf + o, sizeof(r->whatbuf) - o, "'");
    r->what = r->whatbuf;
}

static uint64_t remain(const struct rd *r)
{
    return r->g->size - r->pos;
}

static int need(struct rd *r, uint64_t n, const char *field)
{
    if (n <= remain(r))
        return 0;
    return fail(r, FD_ETRUNC,
                "truncated: %s at offset %" PRIu64 " needs %" PRIu64 " bytes, only %" PRIu64
                " remain in the file (%" PRIu64 " bytes)",
                field, r->pos, n, remain(r), r->g->size);
}

static int rd_u32(struct rd *r, uint32_t *out, const char *field)
{
    int rc = need(r, 4, field);
    if (rc)
        return rc;
    *out = le32(r->g->base + r->pos);
    r->pos += 4;
    return 0;
}

static int rd_u64(struct rd *r, uint64_t *out, const char *field)
{
    int rc = need(r, 8, field);
    if (rc)
        return rc;
    *out = le64(r->g->base + r->pos);
    r->pos += 8;
    return 0;
}

/* A count of items, each at least min_each bytes, must fit both 63 bits and the bytes that
 * remain: checked before anything is allocated for it. */
static int check_count(struct rd *r, uint64_t n, uint64_t min_each, uint64_t at,
                       const char *field)
{
    if (n > GGUF_MAX_LEN)
        return fail(r, FD_ERANGE, "%s %" PRIu64 " at offset %" PRIu64 " overflows", field, n, at);
    if (min_each && n > remain(r) / min_each)
        return fail(r, FD_ETRUNC,
                    "truncated: %s %" PRIu64 " at offset %" PRIu64 " needs at least %" PRIu64
                    " bytes per item, only %" PRIu64 " bytes remain in the file (%" PRIu64
                    " bytes)",
                    field, n, at, min_each, remain(r), r->g->size);
    return 0;
}

static int rd_str(struct rd *r, gguf_str_t *out, const char *field)
{
    uint64_t at = r->pos, len;
    int rc = rd_u64(r, &len, field);
    if (rc)
        return rc;
    if (len > GGUF_MAX_LEN)
        return fail(r, FD_ERANGE, "%s length %" PRIu64 " at offset %" PRIu64 " overflows",
                    field, len, at);
    if (len > remain(r))
        return fail(r, FD_ETRUNC,
                    "truncated: %s of %" PRIu64 " bytes at offset %" PRIu64
                    " runs past the end of the file (%" PRIu64 " bytes)",
                    field, len, at, r->g->size);
    out->ptr = (const char *)r->g->base + r->pos;
    out->len = len;
    r->pos += len;
    return 0;
}

/* Keys and tensor names are handed out NUL-terminated, so an embedded NUL would make two
 * different names look equal. */
static int rd_name(struct rd *r, const char **out, gguf_str_t *raw, const char *field)
{
    uint64_t at = r->pos;
    int rc = rd_str(r, raw, field);
    if (rc)
        return rc;
    if (raw->len == 0)
        return fail(r, FD_EFORMAT, "empty %s at offset %" PRIu64, field, at);
    if (memchr(raw->ptr, 0, raw->len))
        return fail(r, FD_EFORMAT, "%s at offset %" PRIu64 " contains a NUL byte", field, at);
    char *s = arena_alloc(r->g, raw->len + 1);
    if (!s)
        return fail(r, -ENOMEM, "out of memory");
    memcpy(s, raw->ptr, raw->len);
    s[raw->len] = 0;
    *out = s;
    return 0;
}

static int parse_array(struct rd *r, gguf_arr_t *a, int depth);

/* Checks and skips n fixed-size elements (bools must be 0 or 1). */
static int skip_fixed(struct rd *r, int type, uint64_t n, const char *field)
{
    uint64_t sz = vtype_size(type);
    uint64_t at = r->pos;
    if (n > remain(r) / sz)
        return fail(r, FD_ETRUNC,
                    "truncated: %s of %" PRIu64 " %s values (%" PRIu64 " bytes each) at offset %"
                    PRIu64 " runs past the end of the file (%" PRIu64 " bytes)",
                    field, n, gguf_vtype_name(type), sz, at, r->g->size);
    if (type == GGUF_BOOL)
        for (uint64_t i = 0; i < n; i++) {
            uint8_t b = r->g->base[at + i];
            if (b > 1)
                return fail(r, FD_EFORMAT, "bool value %u at offset %" PRIu64
                            " is neither 0 nor 1", b, at + i);
        }
    r->pos += n * sz;
    return 0;
}

static int parse_array(struct rd *r, gguf_arr_t *a, int depth)
{
    uint64_t at = r->pos;
    uint32_t et;
    uint64_t n;
    int rc = rd_u32(r, &et, "array element type");
    if (rc)
        return rc;
    if (et >= GGUF_VTYPE_COUNT)
        return fail(r, FD_EFORMAT, "unknown array element type %" PRIu32 " at offset %" PRIu64,
                    et, at);
    if (et == GGUF_ARRAY && depth + 1 >= GGUF_MAX_NEST)
        return fail(r, FD_ERANGE, "arrays nested deeper than %d levels at offset %" PRIu64,
                    GGUF_MAX_NEST, at);
    uint64_t nat = r->pos;
    if ((rc = rd_u64(r, &n, "array length")))
        return rc;
    a->elem_type = (int)et;
    a->n = n;
    a->data = r->g->base + r->pos;
    a->priv = NULL;
    if (et == GGUF_STRING) {
        if ((rc = check_count(r, n, 8, nat, "array length")))
            return rc;
        gguf_str_t *s = n ? arena_alloc(r->g, n * sizeof(*s)) : NULL;
        if (n && !s)
            return fail(r, -ENOMEM, "out of memory for an array of %" PRIu64 " strings", n);
        for (uint64_t i = 0; i < n; i++) {
            r->elem = (int64_t)i;
            if ((rc = rd_str(r, &s[i], "array string")))
                return rc;
        }
        a->priv = s;
    } else if (et == GGUF_ARRAY) {
        if ((rc = check_count(r, n, 12, nat, "array length")))
            return rc;
        gguf_arr_t *sub = n ? arena_alloc(r->g, n * sizeof(*sub)) : NULL;
        if (n && !sub)
            return fail(r, -ENOMEM, "out of memory for an array of %" PRIu64 " arrays", n);
        for (uint64_t i = 0; i < n; i++) {
            r->elem = (int64_t)i;
            if ((rc = parse_array(r, &sub[i], depth + 1)))
                return rc;
        }
        a->priv = sub;
    } else {
        if ((rc = check_count(r, n, 0, nat, "array length")))
            return rc;
        if ((rc = skip_fixed(r, (int)et, n, "array")))
            return rc;
    }
    r->elem = -1;
    return 0;
}

/* Open-addressing table of indexes into names; 2x oversized, so probes stay short. */
static int64_t *hash_new(gguf_t *g, int64_t n, uint64_t *mask)
{
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2)
        cap <<= 1;
    int64_t *h = arena_alloc(g, cap * sizeof(*h));
    if (!h)
        return NULL;
    memset(h, 0xff, cap * sizeof(*h));
    *mask = cap - 1;
    return h;
}

/* Returns the slot for name: either empty (-1) or holding the index of an equal name. */
static int64_t *hash_slot(int64_t *h, uint64_t mask, const char *name, size_t len,
                          const char *(*name_of)(const gguf_t *, int64_t), const gguf_t *g)
{
    uint64_t i = hash_bytes(name, len) & mask;
    for (;;) {
        if (h[i] < 0)
            return &h[i];
        const char *o = name_of(g, h[i]);
        if (strlen(o) == len && memcmp(o, name, len) == 0)
            return &h[i];
        i = (i + 1) & mask;
    }
}

static const char *kv_name(const gguf_t *g, int64_t i)
{
    return g->kv[i].key;
}

static const char *tensor_name(const gguf_t *g, int64_t i)
{
    return g->tensors[i].name;
}

static int parse_kv(struct rd *r, int64_t idx)
{
    gguf_t *g = r->g;
    struct gguf_kv *kv = &g->kv[idx];
    snprintf(r->whatbuf, sizeof(r->whatbuf), "metadata entry #%" PRId64, idx);
    r->what = r->whatbuf;
    uint64_t at = r->pos;
    gguf_str_t raw;
    int rc = rd_name(r, &kv->key, &raw, "key");
    if (rc)
        return rc;
    set_what(r, "key", raw.ptr, raw.len);
    int64_t *slot = hash_slot(g->kv_hash, g->kv_hmask, kv->key, raw.len, kv_name, g);
    if (*slot >= 0)
        return fail(r, FD_EDUP, "duplicate key at offset %" PRIu64 " (first at entry #%" PRId64
                    ")", at, *slot);
    uint32_t t;
    uint64_t tat = r->pos;
    if ((rc = rd_u32(r, &t, "value type")))
        return rc;
    if (t >= GGUF_VTYPE_COUNT)
        return fail(r, FD_EFORMAT, "unknown value type %" PRIu32 " at offset %" PRIu64, t, tat);
    kv->type = (int)t;
    kv->off = r->pos;
    kv->val = g->base + r->pos;
    if (t == GGUF_STRING)
        rc = rd_str(r, &kv->str, "string value");
    else if (t == GGUF_ARRAY)
        rc = parse_array(r, &kv->arr, 0);
    else
        rc = skip_fixed(r, (int)t, 1, "value");
    if (rc)
        return rc;
    *slot = idx;
    return 0;
}

static int parse_tensor_info(struct rd *r, int64_t idx)
{
    gguf_t *g = r->g;
    gguf_tensor_t *t = &g->tensors[idx];
    snprintf(r->whatbuf, sizeof(r->whatbuf), "tensor #%" PRId64, idx);
    r->what = r->whatbuf;
    uint64_t at = r->pos;
    gguf_str_t raw;
    int rc = rd_name(r, &t->name, &raw, "tensor name");
    if (rc)
        return rc;
    set_what(r, "tensor", raw.ptr, raw.len);
    int64_t *slot = hash_slot(g->t_hash, g->t_hmask, t->name, raw.len, tensor_name, g);
    if (*slot >= 0)
        return fail(r, FD_EDUP, "duplicate tensor name at offset %" PRIu64
                    " (first is tensor #%" PRId64 ")", at, *slot);
    uint32_t nd;
    uint64_t ndat = r->pos;
    if ((rc = rd_u32(r, &nd, "tensor n_dims")))
        return rc;
    if (nd == 0 || nd > GGUF_MAX_DIMS)
        return fail(r, FD_ESHAPE, "n_dims %" PRIu32 " at offset %" PRIu64 " is not in 1..%d",
                    nd, ndat, GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    uint64_t nel = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t v, dat = r->pos;
        if ((rc = rd_u64(r, &v, "tensor dimension")))
            return rc;
        if (v == 0 || v > GGUF_MAX_LEN)
            return fail(r, FD_ESHAPE, "dimension %" PRIu32 " is %" PRId64 " (at offset %" PRIu64
                        "), must be positive", d, (int64_t)v, dat);
        if (nel > GGUF_MAX_LEN / v)
            return fail(r, FD_ERANGE, "element count overflows at dimension %" PRIu32
                        " (offset %" PRIu64 ")", d, dat);
        nel *= v;
        t->ne[d] = (int64_t)v;
    }
    uint32_t ty;
    uint64_t tyat = r->pos;
    if ((rc = rd_u32(r, &ty, "tensor type")))
        return rc;
    if (ty > INT32_MAX || !gg_type_known((int)ty))
        return fail(r, FD_EUNSUP, "unknown tensor type %" PRIu32 " at offset %" PRIu64, ty, tyat);
    t->type = (int)ty;
    uint64_t blck = (uint64_t)gg_block_elems(t->type);
    if ((uint64_t)t->ne[0] % blck)
        return fail(r, FD_ESHAPE, "ne[0] = %" PRId64 " is not a multiple of the %s block size %"
                    PRIu64, t->ne[0], gg_type_name(t->type), blck);
    uint64_t row = gg_row_bytes(t->type, (uint64_t)t->ne[0]);
    uint64_t rows = nel / (uint64_t)t->ne[0];
    if (row == 0 || rows > GGUF_MAX_LEN / row)
        return fail(r, FD_ERANGE, "byte size of %" PRIu64 " %s elements overflows", nel,
                    gg_type_name(t->type));
    t->nbytes = row * rows;
    uint64_t oat = r->pos;
    if ((rc = rd_u64(r, &t->offset, "tensor offset")))
        return rc;
    if (t->offset > GGUF_MAX_LEN)
        return fail(r, FD_ERANGE, "data offset %" PRIu64 " at offset %" PRIu64 " overflows",
                    t->offset, oat);
    if (t->offset % g->alignment)
        return fail(r, FD_EFORMAT, "data offset %" PRIu64 " (at offset %" PRIu64
                    ") is not a multiple of the alignment %" PRIu64,
                    t->offset, oat, g->alignment);
    *slot = idx;
    return 0;
}

static int read_alignment(struct rd *r)
{
    gguf_t *g = r->g;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv_t *kv = gguf_find(g, "general.alignment");
    if (!kv)
        return 0;
    set_what(r, "key", kv->key, strlen(kv->key));
    uint64_t a;
    if (!vtype_is_int(kv->type))
        return fail(r, FD_ETYPE, "general.alignment has type %s, expected UINT32",
                    gguf_vtype_name(kv->type));
    if (gguf_kv_u64(kv, &a))
        return fail(r, FD_ERANGE, "general.alignment at offset %" PRIu64 " is negative",
                    kv->off);
    if (a == 0 || (a & (a - 1)) || a > (1u << 30))
        return fail(r, FD_ERANGE, "general.alignment %" PRIu64 " at offset %" PRIu64
                    " is not a power of two in 1..2^30", a, kv->off);
    g->alignment = a;
    r->what = NULL;
    return 0;
}

static int cmp_by_offset(const void *a, const void *b)
{
    const gguf_tensor_t *x = *(const gguf_tensor_t *const *)a;
    const gguf_tensor_t *y = *(const gguf_tensor_t *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int check_tensor_data(struct rd *r)
{
    gguf_t *g = r->g;
    if (g->n_tensors == 0)
        return 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor_t *t = &g->tensors[i];
        set_what(r, "tensor", t->name, strlen(t->name));
        uint64_t start = g->data_off + t->offset;
        if (start > GGUF_MAX_LEN || t->nbytes > GGUF_MAX_LEN - start)
            return fail(r, FD_ERANGE, "data range overflows (offset %" PRIu64 ", %" PRIu64
                        " bytes)", t->offset, t->nbytes);
        if (start + t->nbytes > g->size)
            return fail(r, FD_ETRUNC, "truncated: data [%" PRIu64 ", %" PRIu64
                        ") runs past the end of the file (%" PRIu64 " bytes)",
                        start, start + t->nbytes, g->size);
        t->data = g->base + start;
    }
    r->what = NULL;
    const gguf_tensor_t **ord = malloc((size_t)g->n_tensors * sizeof(*ord));
    if (!ord)
        return fail(r, -ENOMEM, "out of memory");
    for (int64_t i = 0; i < g->n_tensors; i++)
        ord[i] = &g->tensors[i];
    qsort(ord, (size_t)g->n_tensors, sizeof(*ord), cmp_by_offset);
    int rc = 0;
    for (int64_t i = 1; i < g->n_tensors; i++) {
        const gguf_tensor_t *p = ord[i - 1], *q = ord[i];
        if (p->offset + p->nbytes > q->offset) {
            rc = fail(r, FD_EFORMAT, "tensor '%s' data [%" PRIu64 ", %" PRIu64
                      ") overlaps tensor '%s' data [%" PRIu64 ", %" PRIu64 ")",
                      q->name, g->data_off + q->offset, g->data_off + q->offset + q->nbytes,
                      p->name, g->data_off + p->offset, g->data_off + p->offset + p->nbytes);
            break;
        }
    }
    free(ord);
    return rc;
}

static int parse(gguf_t *g, char *err, size_t errlen)
{
    struct rd r = {.g = g, .err = err, .errlen = errlen, .elem = -1};
    int rc;
    size_t m = g->size < 4 ? (size_t)g->size : 4;
    if (memcmp(g->base, GGUF_MAGIC, m) != 0) {
        char hex[16] = "";
        for (size_t i = 0; i < m; i++)
            snprintf(hex + 3 * i, sizeof(hex) - 3 * i, "%02x ", g->base[i]);
        return fail(&r, FD_EFORMAT, "bad magic (first bytes %.*s), not a GGUF file",
                    (int)(m ? 3 * m - 1 : 0), hex);
    }
    if (g->size < 4)
        return fail(&r, FD_ETRUNC, "truncated: the file is %" PRIu64
                    " bytes, too short for the GGUF magic", g->size);
    r.pos = 4;
    if ((rc = rd_u32(&r, &g->version, "version")))
        return rc;
    if (g->version == 0x02000000u || g->version == 0x03000000u)
        return fail(&r, FD_EUNSUP, "big-endian GGUF (version %" PRIu32
                    " byte-swapped) is not supported", __builtin_bswap32(g->version));
    if (g->version != 2 && g->version != 3)
        return fail(&r, FD_EVERSION, "GGUF version %" PRIu32 " is not supported (2 and 3 are)",
                    g->version);
    uint64_t n_tensors, n_kv;
    uint64_t tat = r.pos;
    if ((rc = rd_u64(&r, &n_tensors, "tensor count")))
        return rc;
    uint64_t kat = r.pos;
    if ((rc = rd_u64(&r, &n_kv, "metadata count")))
        return rc;
    /* Smallest encodings: a kv is an 8-byte key length, a 1-byte key, a 4-byte type and a
     * 1-byte value; a tensor info an 8-byte name length, a 1-byte name, n_dims, one dim, a
     * type and an offset. */
    if ((rc = check_count(&r, n_kv, 14, kat, "metadata count")))
        return rc;
    if ((rc = check_count(&r, n_tensors, 33, tat, "tensor count")))
        return rc;
    if (n_kv * 14 + n_tensors * 33 > remain(&r))
        return fail(&r, FD_ETRUNC, "truncated: %" PRIu64 " metadata entries and %" PRIu64
                    " tensors need at least %" PRIu64 " bytes, only %" PRIu64
                    " remain in the file (%" PRIu64 " bytes)",
                    n_kv, n_tensors, n_kv * 14 + n_tensors * 33, remain(&r), g->size);
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    g->kv = n_kv ? arena_alloc(g, n_kv * sizeof(*g->kv)) : NULL;
    g->kv_hash = hash_new(g, g->n_kv, &g->kv_hmask);
    g->tensors = n_tensors ? arena_alloc(g, n_tensors * sizeof(*g->tensors)) : NULL;
    g->t_hash = hash_new(g, g->n_tensors, &g->t_hmask);
    if ((n_kv && !g->kv) || !g->kv_hash || (n_tensors && !g->tensors) || !g->t_hash)
        return fail(&r, -ENOMEM, "out of memory");
    if (n_tensors)
        memset(g->tensors, 0, n_tensors * sizeof(*g->tensors));
    for (int64_t i = 0; i < g->n_kv; i++)
        if ((rc = parse_kv(&r, i)))
            return rc;
    r.what = NULL;
    if ((rc = read_alignment(&r)))
        return rc;
    for (int64_t i = 0; i < g->n_tensors; i++)
        if ((rc = parse_tensor_info(&r, i)))
            return rc;
    r.what = NULL;
    /* With no tensors a file may end right after its metadata, padding or not. */
    uint64_t pad = (g->alignment - r.pos % g->alignment) % g->alignment;
    g->data_off = r.pos + pad;
    if (g->n_tensors && g->data_off > g->size)
        return fail(&r, FD_ETRUNC, "truncated: the tensor data section starts at offset %"
                    PRIu64 ", past the end of the file (%" PRIu64 " bytes)",
                    g->data_off, g->size);
    return check_tensor_data(&r);
}

/* ---- open / close ----------------------------------------------------------------------- */

static gguf_t *handle_new(const char *name)
{
    gguf_t *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->name = strdup(name ? name : "(memory)");
    if (!g->name) {
        free(g);
        return NULL;
    }
    return g;
}

void gguf_close(gguf_t *g)
{
    if (!g)
        return;
    if (g->mapped)
        munmap((void *)g->base, (size_t)g->size);
    while (g->arena) {
        struct chunk *c = g->arena;
        g->arena = c->next;
        free(c);
    }
    free(g->name);
    free(g);
}

int gguf_open_mem(gguf_t **out, const void *data, size_t size, const char *name,
                  char *err, size_t errlen)
{
    *out = NULL;
    if (err && errlen)
        err[0] = 0;
    gguf_t *g = handle_new(name);
    if (!g) {
        if (err && errlen)
            snprintf(err, errlen, "%s: out of memory", name ? name : "(memory)");
        return -ENOMEM;
    }
    static const uint8_t empty[1];
    g->base = size ? data : empty;
    g->size = size;
    int rc = parse(g, err, errlen);
    if (rc) {
        gguf_close(g);
        return rc;
    }
    *out = g;
    return 0;
}

int gguf_open(gguf_t **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    if (err && errlen)
        err[0] = 0;
    int rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(-rc));
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(-rc));
        goto fail_fd;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
        if (err && errlen)
            snprintf(err, errlen, "%s: not a regular file", path);
        goto fail_fd;
    }
    gguf_t *g = handle_new(path);
    if (!g) {
        rc = -ENOMEM;
        if (err && errlen)
            snprintf(err, errlen, "%s: out of memory", path);
        goto fail_fd;
    }
    g->size = (uint64_t)st.st_size;
    if (g->size) {
        void *p = mmap(NULL, (size_t)g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            rc = -errno;
            if (err && errlen)
                snprintf(err, errlen, "%s: cannot map %" PRIu64 " bytes: %s", path, g->size,
                         strerror(-rc));
            goto fail_handle;
        }
        g->base = p;
        g->mapped = true;
    } else {
        static const uint8_t empty[1];
        g->base = empty;
    }
    close(fd);
    fd = -1;
    if ((rc = parse(g, err, errlen)))
        goto fail_handle;
    *out = g;
    return 0;

fail_handle:
    gguf_close(g);
fail_fd:
    if (fd >= 0)
        close(fd);
    return rc;
}

/* ---- accessors -------------------------------------------------------------------------- */

uint32_t gguf_version(const gguf_t *g) { return g->version; }
uint64_t gguf_alignment(const gguf_t *g) { return g->alignment; }
uint64_t gguf_data_offset(const gguf_t *g) { return g->data_off; }
uint64_t gguf_file_size(const gguf_t *g) { return g->size; }
const char *gguf_path(const gguf_t *g) { return g->name; }
int64_t gguf_n_kv(const gguf_t *g) { return g->n_kv; }
int64_t gguf_n_tensors(const gguf_t *g) { return g->n_tensors; }

const gguf_kv_t *gguf_kv_at(const gguf_t *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? &g->kv[i] : NULL;
}

const gguf_kv_t *gguf_find(const gguf_t *g, const char *key)
{
    if (!key || !g->kv_hash)
        return NULL;
    int64_t *s = hash_slot(g->kv_hash, g->kv_hmask, key, strlen(key), kv_name, g);
    return *s >= 0 ? &g->kv[*s] : NULL;
}

const char *gguf_kv_key(const gguf_kv_t *kv) { return kv->key; }
int gguf_kv_type(const gguf_kv_t *kv) { return kv->type; }

const gguf_tensor_t *gguf_tensor_at(const gguf_t *g, int64_t i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const gguf_tensor_t *gguf_find_tensor(const gguf_t *g, const char *name)
{
    if (!name || !g->t_hash)
        return NULL;
    int64_t *s = hash_slot(g->t_hash, g->t_hmask, name, strlen(name), tensor_name, g);
    return *s >= 0 ? &g->tensors[*s] : NULL;
}

int64_t gguf_tensor_nelems(const gguf_tensor_t *t)
{
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

/* Scalars of every integer type widen to a signed/unsigned pair so that one range check
 * serves all getters. */
static int scalar_int(int type, const uint8_t *p, int64_t *s, uint64_t *u, bool *is_signed)
{
    *is_signed = true;
    switch (type) {
    case GGUF_UINT8: *s = p[0]; break;
    case GGUF_INT8: *s = (int8_t)p[0]; break;
    case GGUF_UINT16: *s = le16(p); break;
    case GGUF_INT16: *s = (int16_t)le16(p); break;
    case GGUF_UINT32: *s = le32(p); break;
    case GGUF_INT32: *s = (int32_t)le32(p); break;
    case GGUF_INT64: *s = (int64_t)le64(p); break;
    case GGUF_UINT64: *u = le64(p); *is_signed = false; return 0;
    default: return FD_ETYPE;
    }
    *u = (uint64_t)*s;
    return 0;
}

static int scalar_u64(int type, const uint8_t *p, uint64_t *out)
{
    int64_t s;
    uint64_t u;
    bool sg;
    int rc = scalar_int(type, p, &s, &u, &sg);
    if (rc)
        return rc;
    if (sg && s < 0)
        return FD_ERANGE;
    *out = u;
    return 0;
}

static int scalar_i64(int type, const uint8_t *p, int64_t *out)
{
    int64_t s;
    uint64_t u;
    bool sg;
    int rc = scalar_int(type, p, &s, &u, &sg);
    if (rc)
        return rc;
    if (!sg) {
        if (u > (uint64_t)INT64_MAX)
            return FD_ERANGE;
        s = (int64_t)u;
    }
    *out = s;
    return 0;
}

static int scalar_f64(int type, const uint8_t *p, double *out)
{
    if (type == GGUF_FLOAT32) {
        uint32_t b = le32(p);
        float f;
        memcpy(&f, &b, 4);
        *out = f;
    } else if (type == GGUF_FLOAT64) {
        uint64_t b = le64(p);
        memcpy(out, &b, 8);
    } else {
        return FD_ETYPE;
    }
    return 0;
}

int gguf_kv_u64(const gguf_kv_t *kv, uint64_t *out) { return scalar_u64(kv->type, kv->val, out); }
int gguf_kv_i64(const gguf_kv_t *kv, int64_t *out) { return scalar_i64(kv->type, kv->val, out); }
int gguf_kv_f64(const gguf_kv_t *kv, double *out) { return scalar_f64(kv->type, kv->val, out); }

int gguf_kv_bool(const gguf_kv_t *kv, bool *out)
{
    if (kv->type != GGUF_BOOL)
        return FD_ETYPE;
    *out = kv->val[0] != 0;
    return 0;
}

int gguf_kv_str(const gguf_kv_t *kv, gguf_str_t *out)
{
    if (kv->type != GGUF_STRING)
        return FD_ETYPE;
    *out = kv->str;
    return 0;
}

int gguf_kv_arr(const gguf_kv_t *kv, gguf_arr_t *out)
{
    if (kv->type != GGUF_ARRAY)
        return FD_ETYPE;
    *out = kv->arr;
    return 0;
}

#define GETTER(fn, kvfn, T)                                              \
    int fn(const gguf_t *g, const char *key, T *out)                     \
    {                                                                    \
        const gguf_kv_t *kv = gguf_find(g, key);                         \
        return kv ? kvfn(kv, out) : -ENOENT;                             \
    }

GETTER(gguf_get_u64, gguf_kv_u64, uint64_t)
GETTER(gguf_get_i64, gguf_kv_i64, int64_t)
GETTER(gguf_get_f64, gguf_kv_f64, double)
GETTER(gguf_get_bool, gguf_kv_bool, bool)
GETTER(gguf_get_str, gguf_kv_str, gguf_str_t)
GETTER(gguf_get_arr, gguf_kv_arr, gguf_arr_t)

int gguf_get_u32(const gguf_t *g, const char *key, uint32_t *out)
{
    uint64_t v;
    int rc = gguf_get_u64(g, key, &v);
    if (rc)
        return rc;
    if (v > UINT32_MAX)
        return FD_ERANGE;
    *out = (uint32_t)v;
    return 0;
}

int gguf_get_i32(const gguf_t *g, const char *key, int32_t *out)
{
    int64_t v;
    int rc = gguf_get_i64(g, key, &v);
    if (rc)
        return rc;
    if (v < INT32_MIN || v > INT32_MAX)
        return FD_ERANGE;
    *out = (int32_t)v;
    return 0;
}

int gguf_get_f32(const gguf_t *g, const char *key, float *out)
{
    double v;
    int rc = gguf_get_f64(g, key, &v);
    if (rc)
        return rc;
    *out = (float)v;
    return 0;
}

/* ---- arrays ----------------------------------------------------------------------------- */

static const uint8_t *arr_elem(const gguf_arr_t *a, uint64_t i)
{
    return a->data + i * vtype_size(a->elem_type);
}

int gguf_arr_str(const gguf_arr_t *a, uint64_t i, gguf_str_t *out)
{
    if (a->elem_type != GGUF_STRING)
        return FD_ETYPE;
    if (i >= a->n)
        return -ERANGE;
    *out = ((const gguf_str_t *)a->priv)[i];
    return 0;
}

int gguf_arr_arr(const gguf_arr_t *a, uint64_t i, gguf_arr_t *out)
{
    if (a->elem_type != GGUF_ARRAY)
        return FD_ETYPE;
    if (i >= a->n)
        return -ERANGE;
    *out = ((const gguf_arr_t *)a->priv)[i];
    return 0;
}

int gguf_arr_i64(const gguf_arr_t *a, uint64_t i, int64_t *out)
{
    if (!vtype_is_int(a->elem_type))
        return FD_ETYPE;
    if (i >= a->n)
        return -ERANGE;
    return scalar_i64(a->elem_type, arr_elem(a, i), out);
}

int gguf_arr_f64(const gguf_arr_t *a, uint64_t i, double *out)
{
    if (a->elem_type != GGUF_FLOAT32 && a->elem_type != GGUF_FLOAT64)
        return FD_ETYPE;
    if (i >= a->n)
        return -ERANGE;
    return scalar_f64(a->elem_type, arr_elem(a, i), out);
}

int gguf_arr_f32(const gguf_arr_t *a, uint64_t i, float *out)
{
    double v;
    int rc = gguf_arr_f64(a, i, &v);
    if (rc)
        return rc;
    *out = (float)v;
    return 0;
}

/* ---- dump ------------------------------------------------------------------------------- */

#define DUMP_STR_MAX 96     /* characters of a string value shown before "..." */
#define DUMP_ARR_MAX 8      /* array elements shown before "... (N total)" */

static void put_str(FILE *f, const char *s, uint64_t len)
{
    fputc('"', f);
    uint64_t shown = len > DUMP_STR_MAX ? DUMP_STR_MAX : len;
    while (shown < len && shown > 0 && ((unsigned char)s[shown] & 0xc0) == 0x80)
        shown--; /* do not cut a UTF-8 character */
    for (uint64_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
    if (shown < len)
        fprintf(f, "... (%" PRIu64 " bytes)", len);
}

static void put_scalar(FILE *f, int type, const uint8_t *p)
{
    int64_t s;
    uint64_t u;
    bool sg;
    double d;
    if (type == GGUF_BOOL)
        fputs(p[0] ? "true" : "false", f);
    else if (scalar_f64(type, p, &d) == 0)
        fprintf(f, "%.9g", d);
    else if (scalar_int(type, p, &s, &u, &sg) == 0) {
        if (sg)
            fprintf(f, "%" PRId64, s);
        else
            fprintf(f, "%" PRIu64, u);
    }
}

static void put_arr(FILE *f, const gguf_arr_t *a)
{
    fputc('[', f);
    uint64_t shown = a->n > DUMP_ARR_MAX ? DUMP_ARR_MAX : a->n;
    for (uint64_t i = 0; i < shown; i++) {
        if (i)
            fputs(", ", f);
        if (a->elem_type == GGUF_STRING) {
            const gguf_str_t *s = &((const gguf_str_t *)a->priv)[i];
            put_str(f, s->ptr, s->len);
        } else if (a->elem_type == GGUF_ARRAY) {
            put_arr(f, &((const gguf_arr_t *)a->priv)[i]);
        } else {
            put_scalar(f, a->elem_type, arr_elem(a, i));
        }
    }
    if (shown < a->n)
        fprintf(f, ", ... (%" PRIu64 " total)", a->n);
    fputc(']', f);
}

static void type_label(char *buf, size_t n, const gguf_kv_t *kv)
{
    if (kv->type != GGUF_ARRAY) {
        snprintf(buf, n, "%s", gguf_vtype_name(kv->type));
        return;
    }
    snprintf(buf, n, "[%s x %" PRIu64 "]", gguf_vtype_name(kv->arr.elem_type), kv->arr.n);
}

void gguf_dump(const gguf_t *g, FILE *f)
{
    fprintf(f, "%s: GGUF v%" PRIu32 ", %" PRIu64 " bytes, %" PRId64 " metadata keys, %" PRId64
            " tensors, alignment %" PRIu64 ", data at offset %" PRIu64 "\n",
            g->name, g->version, g->size, g->n_kv, g->n_tensors, g->alignment, g->data_off);
    fprintf(f, "\nmetadata:\n");
    for (int64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv_t *kv = &g->kv[i];
        char tl[48];
        type_label(tl, sizeof(tl), kv);
        fprintf(f, "%5" PRId64 "  %-40s %-20s = ", i + 1, kv->key, tl);
        if (kv->type == GGUF_STRING)
            put_str(f, kv->str.ptr, kv->str.len);
        else if (kv->type == GGUF_ARRAY)
            put_arr(f, &kv->arr);
        else
            put_scalar(f, kv->type, kv->val);
        fputc('\n', f);
    }
    fprintf(f, "\ntensors:\n%5s  %-32s %-24s %-6s %14s %14s\n", "#", "name", "shape", "type",
            "offset", "bytes");
    uint64_t total = 0, nel = 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor_t *t = &g->tensors[i];
        char shape[96];
        size_t o = 0;
        for (int d = 0; d < t->n_dims; d++)
            o += (size_t)snprintf(shape + o, sizeof(shape) - o, "%s%" PRId64,
                                  d ? " x " : "", t->ne[d]);
        fprintf(f, "%5" PRId64 "  %-32s %-24s %-6s %14" PRIu64 " %14" PRIu64 "\n", i + 1,
                t->name, shape, gg_type_name(t->type), t->offset, t->nbytes);
        total += t->nbytes;
        nel += (uint64_t)gguf_tensor_nelems(t);
    }
    fprintf(f, "\n%" PRId64 " tensors, %" PRIu64 " elements, %" PRIu64 " bytes of tensor data\n",
            g->n_tensors, nel, total);
}
