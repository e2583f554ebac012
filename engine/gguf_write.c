/* gguf_write.c: GGUF v3 writer and the Llama-shaped model generator (see gguf_write.h).
 * Metadata is serialized as it is added (one growing buffer); tensors are declared up front
 * so that the header with every offset can be written before any data is streamed. */
#include "engine/gguf_write.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"

struct wbuf {
    uint8_t *p;
    size_t n, cap;
    bool oom;
};

struct wtensor {
    char *name;
    int type, n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint64_t nbytes, offset;
    const void *data;
    gguf_w_fill_fn fill;
    void *ud;
};

struct gguf_w {
    uint32_t alignment;
    int threads;
    struct wbuf kv;
    int64_t n_kv;
    char **keys;
    size_t keys_cap;
    struct wtensor *t;
    int64_t n_t;
    size_t t_cap;
    uint64_t data_size;
};

/* ---- byte buffer ------------------------------------------------------------------------ */

static void wb_put(struct wbuf *b, const void *d, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (b->cap - b->n < n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->n < n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void wb_u8(struct wbuf *b, uint8_t v) { wb_put(b, &v, 1); }

static void wb_u16(struct wbuf *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    wb_put(b, x, 2);
}

static void wb_u32(struct wbuf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    wb_put(b, x, 4);
}

static void wb_u64(struct wbuf *b, uint64_t v)
{
    wb_u32(b, (uint32_t)v);
    wb_u32(b, (uint32_t)(v >> 32));
}

static void wb_str(struct wbuf *b, const char *s, uint64_t len)
{
    wb_u64(b, len);
    wb_put(b, s, (size_t)len);
}

static size_t fixed_size(int t)
{
    switch (t) {
    case GGUF_UINT8: case GGUF_INT8: case GGUF_BOOL: return 1;
    case GGUF_UINT16: case GGUF_INT16: return 2;
    case GGUF_UINT32: case GGUF_INT32: case GGUF_FLOAT32: return 4;
    case GGUF_UINT64: case GGUF_INT64: case GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* Element i of a C array of type t, encoded little-endian. */
static void wb_elem(struct wbuf *b, int t, const void *data, uint64_t i)
{
    size_t sz = fixed_size(t);
    const uint8_t *p = (const uint8_t *)data + i * sz;
    uint16_t v16;
    uint32_t v32;
    uint64_t v64;
    switch (sz) {
    case 1: wb_u8(b, t == GGUF_BOOL ? (p[0] != 0) : p[0]); break;
    case 2: memcpy(&v16, p, 2); wb_u16(b, v16); break;
    case 4: memcpy(&v32, p, 4); wb_u32(b, v32); break;
    default: memcpy(&v64, p, 8); wb_u64(b, v64); break;
    }
}

/* ---- writer ----------------------------------------------------------------------------- */

int gguf_w_new(gguf_w_t **out)
{
    gguf_w_t *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    w->threads = 1;
    *out = w;
    return 0;
}

void gguf_w_free(gguf_w_t *w)
{
    if (!w)
        return;
    for (int64_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    free(w->keys);
    for (int64_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->t);
    free(w->kv.p);
    free(w);
}

int gguf_w_set_alignment(gguf_w_t *w, uint32_t alignment)
{
    if (alignment == 0 || (alignment & (alignment - 1)) || w->n_t)
        return -EINVAL;
    w->alignment = alignment;
    return 0;
}

int gguf_w_set_threads(gguf_w_t *w, int threads)
{
    if (threads < 1 || threads > 1024)
        return -EINVAL;
    w->threads = threads;
    return 0;
}

int64_t gguf_w_n_kv(const gguf_w_t *w) { return w->n_kv; }
int64_t gguf_w_n_tensors(const gguf_w_t *w) { return w->n_t; }
uint64_t gguf_w_data_bytes(const gguf_w_t *w) { return w->data_size; }

int gguf_w_tensor_at(const gguf_w_t *w, int64_t i, const char **name, int *n_dims)
{
    if (i < 0 || i >= w->n_t)
        return -1;
    *name = w->t[i].name;
    *n_dims = w->t[i].n_dims;
    return w->t[i].type;
}

/* Starts an entry: checks and records the key, writes it and the value type.  On success
 * the caller appends the value; an allocation failure shows up as kv.oom. */
static int kv_begin(gguf_w_t *w, const char *key, int type)
{
    if (!key || !*key)
        return -EINVAL;
    for (int64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0)
            return FD_EDUP;
    if ((size_t)w->n_kv == w->keys_cap) {
        size_t cap = w->keys_cap ? w->keys_cap * 2 : 32;
        char **k = realloc(w->keys, cap * sizeof(*k));
        if (!k)
            return -ENOMEM;
        w->keys = k;
        w->keys_cap = cap;
    }
    char *k = strdup(key);
    if (!k)
        return -ENOMEM;
    w->keys[w->n_kv++] = k;
    wb_str(&w->kv, key, strlen(key));
    wb_u32(&w->kv, (uint32_t)type);
    return 0;
}

static int kv_end(gguf_w_t *w)
{
    return w->kv.oom ? -ENOMEM : 0;
}

static int add_fixed(gguf_w_t *w, const char *key, int type, const void *v)
{
    int rc = kv_begin(w, key, type);
    if (rc)
        return rc;
    wb_elem(&w->kv, type, v, 0);
    return kv_end(w);
}

#define ADDER(fn, T, VT)                                         \
    int fn(gguf_w_t *w, const char *key, T v)                    \
    {                                                            \
        return add_fixed(w, key, VT, &v);                        \
    }
ADDER(gguf_w_add_u8, uint8_t, GGUF_UINT8)
ADDER(gguf_w_add_i8, int8_t, GGUF_INT8)
ADDER(gguf_w_add_u16, uint16_t, GGUF_UINT16)
ADDER(gguf_w_add_i16, int16_t, GGUF_INT16)
ADDER(gguf_w_add_u32, uint32_t, GGUF_UINT32)
ADDER(gguf_w_add_i32, int32_t, GGUF_INT32)
ADDER(gguf_w_add_u64, uint64_t, GGUF_UINT64)
ADDER(gguf_w_add_i64, int64_t, GGUF_INT64)
ADDER(gguf_w_add_f32, float, GGUF_FLOAT32)
ADDER(gguf_w_add_f64, double, GGUF_FLOAT64)

int gguf_w_add_bool(gguf_w_t *w, const char *key, bool v)
{
    uint8_t b = v;
    return add_fixed(w, key, GGUF_BOOL, &b);
}

int gguf_w_add_strn(gguf_w_t *w, const char *key, const char *s, uint64_t len)
{
    int rc = kv_begin(w, key, GGUF_STRING);
    if (rc)
        return rc;
    wb_str(&w->kv, s, len);
    return kv_end(w);
}

int gguf_w_add_str(gguf_w_t *w, const char *key, const char *s)
{
    return gguf_w_add_strn(w, key, s, strlen(s));
}

static void put_arr_body(struct wbuf *b, int elem_type, const void *data, uint64_t n)
{
    wb_u32(b, (uint32_t)elem_type);
    wb_u64(b, n);
    if (elem_type == GGUF_STRING) {
        const char *const *s = data;
        for (uint64_t i = 0; i < n; i++)
            wb_str(b, s[i], strlen(s[i]));
    } else {
        for (uint64_t i = 0; i < n; i++)
            wb_elem(b, elem_type, data, i);
    }
}

int gguf_w_add_arr(gguf_w_t *w, const char *key, int elem_type, const void *data, uint64_t n)
{
    if (!fixed_size(elem_type) || (n && !data))
        return -EINVAL;
    int rc = kv_begin(w, key, GGUF_ARRAY);
    if (rc)
        return rc;
    put_arr_body(&w->kv, elem_type, data, n);
    return kv_end(w);
}

int gguf_w_add_str_arr(gguf_w_t *w, const char *key, const char *const *s, uint64_t n)
{
    if (n && !s)
        return -EINVAL;
    int rc = kv_begin(w, key, GGUF_ARRAY);
    if (rc)
        return rc;
    put_arr_body(&w->kv, GGUF_STRING, s, n);
    return kv_end(w);
}

int gguf_w_add_arr_arr(gguf_w_t *w, const char *key, int inner_type, uint64_t n,
                       const void *const *inner, const uint64_t *inner_n)
{
    if (inner_type != GGUF_STRING && !fixed_size(inner_type))
        return -EINVAL;
    int rc = kv_begin(w, key, GGUF_ARRAY);
    if (rc)
        return rc;
    wb_u32(&w->kv, GGUF_ARRAY);
    wb_u64(&w->kv, n);
    for (uint64_t i = 0; i < n; i++)
        put_arr_body(&w->kv, inner_type, inner[i], inner_n[i]);
    return kv_end(w);
}

int gguf_w_add_tensor(gguf_w_t *w, const char *name, int type, int n_dims, const int64_t *ne,
                      const void *data, gguf_w_fill_fn fill, void *ud)
{
    if (!name || !*name || (!data && !fill))
        return -EINVAL;
    if (!gg_type_known(type))
        return FD_EUNSUP;
    if (!data && !fq_type_quantizable(type))
        return FD_EUNSUP;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return FD_ESHAPE;
    for (int64_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return FD_EDUP;
    struct wtensor t = {.type = type, .n_dims = n_dims, .data = data, .fill = fill, .ud = ud};
    uint64_t rows = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] <= 0)
            return FD_ESHAPE;
        if (d > 0) {
            if ((uint64_t)t.ne[d] > (uint64_t)INT64_MAX / rows)
                return FD_ERANGE;
            rows *= (uint64_t)t.ne[d];
        }
    }
    if (t.ne[0] % gg_block_elems(type))
        return FD_ESHAPE;
    uint64_t row = gg_row_bytes(type, (uint64_t)t.ne[0]);
    if (!row || rows > (uint64_t)INT64_MAX / row)
        return FD_ERANGE;
    t.nbytes = row * rows;
    uint64_t a = w->alignment;
    uint64_t padded = (t.nbytes + a - 1) / a * a;
    if (w->data_size > (uint64_t)INT64_MAX - padded)
        return FD_ERANGE;
    t.offset = w->data_size;
    if ((size_t)w->n_t == w->t_cap) {
        size_t cap = w->t_cap ? w->t_cap * 2 : 64;
        struct wtensor *nt = realloc(w->t, cap * sizeof(*nt));
        if (!nt)
            return -ENOMEM;
        w->t = nt;
        w->t_cap = cap;
    }
    if (!(t.name = strdup(name)))
        return -ENOMEM;
    w->t[w->n_t++] = t;
    w->data_size += padded;
    return 0;
}

static int werr(char *err, size_t errlen, int code, const char *fmt, ...) FD_PRINTF(4, 5);

static int werr(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int write_pad(FILE *f, uint64_t pos, uint64_t align)
{
    static const uint8_t zeros[4096];
    uint64_t pad = (align - pos % align) % align;
    while (pad) {
        size_t n = pad > sizeof(zeros) ? sizeof(zeros) : (size_t)pad;
        if (fwrite(zeros, 1, n, f) != n)
            return -EIO;
        pad -= n;
    }
    return 0;
}

/* Rows of a filled tensor are produced in batches; each batch is split over the writer's
 * threads (fill and quantize are the slow part: the reference K-quantizers run a few M
 * values/s), then written in order. */
struct fill_job {
    const struct wtensor *t;
    int64_t row0, rows;      /* this thread's slice */
    uint8_t *dst;
    size_t rb;
    int rc;
    char msg[200];
};

static void *fill_rows(void *arg)
{
    struct fill_job *j = arg;
    const struct wtensor *t = j->t;
    int64_t ne0 = t->ne[0];
    float *x = malloc((size_t)ne0 * sizeof(float));
    if (!x) {
        j->rc = -ENOMEM;
        snprintf(j->msg, sizeof(j->msg), "out of memory for a row of tensor '%s'", t->name);
        return NULL;
    }
    for (int64_t r = 0; r < j->rows && !j->rc; r++) {
        int64_t row = j->row0 + r;
        if ((j->rc = t->fill(t->ud, t->name, row, x, ne0)))
            snprintf(j->msg, sizeof(j->msg), "tensor '%s' row %" PRId64 ": fill failed: %s",
                     t->name, row, fd_strerror(j->rc));
        else if ((j->rc = fq_quantize_row(t->type, x, j->dst + (size_t)r * j->rb, ne0)))
            snprintf(j->msg, sizeof(j->msg), "tensor '%s': cannot quantize to %s: %s", t->name,
                     gg_type_name(t->type), fd_strerror(j->rc));
    }
    free(x);
    return NULL;
}

static int write_filled(FILE *f, const struct wtensor *t, int threads, char *err,
                        size_t errlen)
{
    int64_t ne0 = t->ne[0];
    int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
    size_t rb = (size_t)gg_row_bytes(t->type, (uint64_t)ne0);
    int64_t batch = FD_MAX((int64_t)1, ((int64_t)1 << 22) * threads / ne0);
    batch = FD_MIN(batch, rows);
    uint8_t *buf = malloc((size_t)batch * rb);
    struct fill_job *jobs = calloc((size_t)threads, sizeof(*jobs));
    pthread_t *tid = calloc((size_t)threads, sizeof(*tid));
    bool *started = calloc((size_t)threads, sizeof(*started));
    int rc = 0;
    if (!buf || !jobs || !tid || !started) {
        rc = werr(err, errlen, -ENOMEM, "out of memory for tensor '%s'", t->name);
        goto out;
    }
    for (int64_t r0 = 0; r0 < rows && !rc; r0 += batch) {
        int64_t n = FD_MIN(batch, rows - r0);
        int nt = (int)FD_MIN((int64_t)threads, n);
        for (int k = 0; k < nt; k++) {
            int64_t a = n * k / nt, b = n * (k + 1) / nt;
            jobs[k] = (struct fill_job){.t = t, .row0 = r0 + a, .rows = b - a,
                                        .dst = buf + (size_t)a * rb, .rb = rb};
            /* slice 0, and any whose thread did not start, run on this thread */
            started[k] = k > 0 && pthread_create(&tid[k], NULL, fill_rows, &jobs[k]) == 0;
        }
        for (int k = 0; k < nt; k++) {
            if (started[k])
                pthread_join(tid[k], NULL);
            else
                fill_rows(&jobs[k]);
        }
        for (int k = 0; k < nt && !rc; k++)
            if (jobs[k].rc)
                rc = werr(err, errlen, jobs[k].rc, "%s", jobs[k].msg);
        if (!rc && fwrite(buf, 1, (size_t)n * rb, f) != (size_t)n * rb)
            rc = werr(err, errlen, -EIO, "write error in tensor '%s'", t->name);
    }
out:
    free(started);
    free(tid);
    free(jobs);
    free(buf);
    return rc;
}

int gguf_w_write(gguf_w_t *w, FILE *f, char *err, size_t errlen)
{
    struct wbuf h = {0};
    int rc;
    bool add_align = w->alignment != GGUF_DEFAULT_ALIGNMENT;
    for (int64_t i = 0; i < w->n_kv && add_align; i++)
        if (strcmp(w->keys[i], "general.alignment") == 0)
            add_align = false;
    wb_put(&h, "GGUF", 4);
    wb_u32(&h, 3);
    wb_u64(&h, (uint64_t)w->n_t);
    wb_u64(&h, (uint64_t)w->n_kv + add_align);
    wb_put(&h, w->kv.p, w->kv.n);
    if (add_align) {
        wb_str(&h, "general.alignment", strlen("general.alignment"));
        wb_u32(&h, GGUF_UINT32);
        wb_u32(&h, w->alignment);
    }
    for (int64_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        wb_str(&h, t->name, strlen(t->name));
        wb_u32(&h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++)
            wb_u64(&h, (uint64_t)t->ne[d]);
        wb_u32(&h, (uint32_t)t->type);
        wb_u64(&h, t->offset);
    }
    if (h.oom || w->kv.oom) {
        free(h.p);
        return werr(err, errlen, -ENOMEM, "out of memory for the GGUF header");
    }
    if (fwrite(h.p, 1, h.n, f) != h.n || write_pad(f, h.n, w->alignment)) {
        free(h.p);
        return werr(err, errlen, -EIO, "write error in the GGUF header");
    }
    free(h.p);
    for (int64_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        if (t->data) {
            if (fwrite(t->data, 1, (size_t)t->nbytes, f) != t->nbytes)
                return werr(err, errlen, -EIO, "write error in tensor '%s'", t->name);
        } else if ((rc = write_filled(f, t, w->threads, err, errlen))) {
            return rc;
        }
        if (write_pad(f, t->nbytes, w->alignment))
            return werr(err, errlen, -EIO, "write error after tensor '%s'", t->name);
    }
    if (fflush(f) != 0 || ferror(f))
        return werr(err, errlen, -EIO, "write error");
    return 0;
}

int gguf_w_write_file(gguf_w_t *w, const char *path, char *err, size_t errlen)
{
    size_t n = strlen(path) + 8;
    char *tmp = malloc(n);
    if (!tmp)
        return werr(err, errlen, -ENOMEM, "%s: out of memory", path);
    snprintf(tmp, n, "%s.tmp", path);
    int rc;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc = -errno;
        werr(err, errlen, rc, "%s: cannot create: %s", tmp, strerror(-rc));
        goto out;
    }
    char e2[256] = "";
    rc = gguf_w_write(w, f, e2, sizeof(e2));
    if (fclose(f) != 0 && !rc)
        rc = werr(e2, sizeof(e2), -EIO, "close failed");
    if (rc) {
        werr(err, errlen, rc, "%s: %s", path, e2);
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        rc = -errno;
        werr(err, errlen, rc, "%s: cannot rename from %s: %s", path, tmp, strerror(-rc));
        unlink(tmp);
    }
out:
    free(tmp);
    return rc;
}

int gguf_w_write_mem(gguf_w_t *w, uint8_t **out, size_t *size, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return werr(err, errlen, -ENOMEM, "out of memory");
    int rc = gguf_w_write(w, f, err, errlen);
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = (uint8_t *)buf;
    *size = len;
    return 0;
}

/* ---- Llama-shaped models ---------------------------------------------------------------- */

struct preset {
    const char *name;
    int n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
    float rope_base, eps;
    bool tied;
    const char *arch;   /* NULL: llama */
    int head_dim;       /* 0: n_embd / n_head */
    int n_swa;          /* gemma: the sliding window */
    float attn_softcap, final_softcap;
    int n_expert, n_expert_used; /* n_ff: each expert's width */
};

/* Hyperparameters as published for each model. */
static const struct preset presets[] = {
    {"stories260K", 64, 5, 8, 4, 172, 512, 512, 10000.0f, 1e-5f, false, NULL, 0, 0, 0, 0, 0, 0},
    {"stories110M", 768, 12, 12, 12, 2048, 32000, 1024, 10000.0f, 1e-5f, true, NULL, 0, 0, 0, 0,
     0, 0},
    {"TinyLlama-1.1B", 2048, 22, 32, 4, 5632, 32000, 2048, 10000.0f, 1e-5f, false, NULL, 0, 0, 0,
     0, 0, 0},
    {"Llama-2-7B", 4096, 32, 32, 32, 11008, 32000, 4096, 10000.0f, 1e-5f, false, NULL, 0, 0, 0, 0,
     0, 0},
    {"Llama-3-8B", 4096, 32, 32, 8, 14336, 128256, 8192, 500000.0f, 1e-5f, false, NULL, 0, 0, 0,
     0, 0, 0},
    {"Qwen3-0.6B", 1024, 28, 16, 8, 3072, 151936, 40960, 1000000.0f, 1e-6f, true, "qwen3", 128, 0,
     0, 0, 0, 0},
    {"Gemma-3-270M", 640, 18, 4, 1, 2048, 262144, 32768, 1000000.0f, 1e-6f, true, "gemma3", 256,
     512, 0, 0, 0, 0},
    {"Gemma-3-1B", 1152, 26, 4, 1, 6912, 262144, 32768, 1000000.0f, 1e-6f, true, "gemma3", 256,
     512, 0, 0, 0, 0},
    {"Gemma-2-2B", 2304, 26, 8, 4, 9216, 256000, 8192, 10000.0f, 1e-6f, true, "gemma2", 256,
     4096, 50.0f, 30.0f, 0, 0},
    {"Qwen3-30B-A3B", 2048, 48, 32, 4, 768, 151936, 40960, 1000000.0f, 1e-6f, false, "qwen3moe",
     128, 0, 0, 0, 128, 8},
    {"OLMoE-1B-7B", 2048, 16, 16, 16, 1024, 50304, 4096, 10000.0f, 1e-5f, false, "olmoe", 0, 0, 0,
     0, 64, 8},
    {"Mixtral-8x7B", 4096, 32, 32, 8, 14336, 32000, 32768, 1000000.0f, 1e-5f, false, NULL, 0, 0, 0,
     0, 8, 2},
    {"Qwen3-MoE-tiny", 256, 4, 4, 2, 128, 512, 512, 1000000.0f, 1e-6f, false, "qwen3moe", 64, 0,
     0, 0, 16, 4},
    /* gpt-oss: YaRN by 32 from 4096 positions (gguf_w_llama_preset sets it) */
    {"gpt-oss-20b", 2880, 24, 64, 8, 2880, 201088, 131072, 150000.0f, 1e-5f, false, "gpt-oss",
     64, 128, 0, 0, 32, 4},
    {"gpt-oss-120b", 2880, 36, 64, 8, 2880, 201088, 131072, 150000.0f, 1e-5f, false, "gpt-oss",
     64, 128, 0, 0, 128, 4},
    {"gpt-oss-tiny", 96, 4, 4, 2, 64, 512, 512, 150000.0f, 1e-5f, false, "gpt-oss", 32, 8, 0, 0,
     8, 3},
};

const char *const *gguf_w_llama_preset_names(void)
{
    static const char *names[FD_ARRAY_LEN(presets) + 1];
    for (size_t i = 0; i < FD_ARRAY_LEN(presets); i++)
        names[i] = presets[i].name;
    return names;
}

int gguf_w_llama_preset(const char *name, gguf_w_llama_t *p)
{
    for (size_t i = 0; i < FD_ARRAY_LEN(presets); i++) {
        const struct preset *s = &presets[i];
        if (strcasecmp(s->name, name) != 0)
            continue;
        *p = (gguf_w_llama_t){
            .name = s->name, .n_embd = s->n_embd, .n_layer = s->n_layer, .n_head = s->n_head,
            .n_head_kv = s->n_head_kv, .n_ff = s->n_ff, .n_vocab = s->n_vocab,
            .n_ctx = s->n_ctx, .rope_base = s->rope_base, .norm_eps = s->eps, .tied = s->tied,
            .wtype = GG_F32, .seed = 1, .arch = s->arch, .head_dim = s->head_dim,
            .n_swa = s->n_swa, .attn_softcap = s->attn_softcap,
            .final_softcap = s->final_softcap,
            .n_expert = s->n_expert, .n_expert_used = s->n_expert_used,
        };
        if (s->arch && strcmp(s->arch, "gpt-oss") == 0) {
            p->rope_scale = 32.0f;
            p->yarn_orig_ctx = 4096;
        }
        return 0;
    }
    return -ENOENT;
}

static bool wtype_ok(int t)
{
    switch (t) {
    case GG_F32: case GG_F16: case GG_BF16: case GG_Q8_0: case GG_Q4_0: case GG_Q4_K:
    case GG_Q5_K: case GG_Q6_K: case GGUF_W_MIX_Q4_K_M: case GGUF_W_MIX_Q5_K_M:
    case GG_Q4_1: case GG_Q5_0: case GG_Q5_1:
    case GG_Q2_K: case GG_Q3_K:
    case GG_IQ4_NL: case GG_IQ4_XS: case GG_MXFP4: case GGUF_W_MIX_IQ4_XS:
    case GGUF_W_MIX_MXFP4_MOE: case GGUF_W_MIX_Q2_K: case GGUF_W_MIX_Q2_K_S:
    case GGUF_W_MIX_Q3_K_S: case GGUF_W_MIX_Q3_K_M: case GGUF_W_MIX_Q3_K_L:
        return true;
    default:
        return false;
    }
}

static const char *llama_arch(const gguf_w_llama_t *p)
{
    return p->arch ? p->arch : "llama";
}

static int head_dim(const gguf_w_llama_t *p)
{
    return p->head_dim ? p->head_dim : p->n_embd / p->n_head;
}

int gguf_w_llama_check(const gguf_w_llama_t *p, char *err, size_t errlen)
{
    if (p->n_embd <= 0 || p->n_layer <= 0 || p->n_head <= 0 || p->n_head_kv <= 0 ||
        p->n_ff <= 0 || p->n_ctx <= 0)
        return werr(err, errlen, FD_ESHAPE, "n_embd, n_layer, n_head, n_head_kv, n_ff and n_ctx "
                    "must be positive");
    const char *arch = llama_arch(p);
    if (strcmp(arch, "llama") && strcmp(arch, "qwen2") && strcmp(arch, "qwen3") &&
        strcmp(arch, "phi3") && strcmp(arch, "gemma") && strcmp(arch, "gemma2") &&
        strcmp(arch, "gemma3") && strcmp(arch, "qwen3moe") && strcmp(arch, "olmoe") &&
        strcmp(arch, "qwen2moe") && strcmp(arch, "gpt-oss"))
        return werr(err, errlen, FD_EUNSUP, "architecture '%s' is not one of llama, qwen2, "
                    "qwen3, phi3, gemma, gemma2, gemma3, qwen3moe, qwen2moe, olmoe, gpt-oss",
                    arch);
    if (p->n_swa < 0 || ((!strcmp(arch, "gemma3") || !strcmp(arch, "gpt-oss")) && p->n_swa == 0))
        return werr(err, errlen, FD_ESHAPE, "sliding window %d: %s needs one > 0", p->n_swa,
                    arch);
    if (p->attn_softcap < 0 || p->final_softcap < 0 || p->rope_scale < 0)
        return werr(err, errlen, FD_ESHAPE, "soft-caps and the RoPE scale must not be "
                    "negative");
    if (p->yarn_orig_ctx < 0 || (p->yarn_orig_ctx > 0 && (!(p->rope_scale > 0) || p->orig_ctx)))
        return werr(err, errlen, FD_ESHAPE, "YaRN's original context %d needs a RoPE scale and "
                    "no LongRoPE", p->yarn_orig_ctx);
    bool moe_arch = !strcmp(arch, "qwen3moe") || !strcmp(arch, "olmoe") ||
                    !strcmp(arch, "qwen2moe") || !strcmp(arch, "gpt-oss");
    if (p->n_expert < 0 || p->n_expert > 1024 || (p->n_expert == 0 && moe_arch) ||
        (p->n_expert > 0 && !moe_arch && strcmp(arch, "llama")))
        return werr(err, errlen, FD_ESHAPE, "%d experts: %s", p->n_expert,
                    moe_arch ? "qwen3moe, qwen2moe, olmoe and gpt-oss need 1 to 1024"
                             : "only llama, qwen3moe, qwen2moe, olmoe and gpt-oss take experts "
                               "(at most 1024)");
    if (p->exp_wtype &&
        (!fq_type_supported(p->exp_wtype) || p->n_embd % gg_block_elems(p->exp_wtype) ||
         p->n_ff % gg_block_elems(p->exp_wtype)))
        return werr(err, errlen, FD_ESHAPE, "expert type %d: not a type the writer quantizes, "
                    "or n_embd %d / n_ff %d not whole blocks of it", p->exp_wtype, p->n_embd,
                    p->n_ff);
    if (p->n_expert > 0 && (p->n_expert_used < 1 || p->n_expert_used > p->n_expert))
        return werr(err, errlen, FD_ESHAPE, "%d of %d experts used per token: must be 1 to %d",
                    p->n_expert_used, p->n_expert, p->n_expert);
    if (p->orig_ctx < 0 || (p->orig_ctx > 0 && !(p->attn_factor > 0)))
        return werr(err, errlen, FD_ESHAPE, "LongRoPE needs an original context > 0 and an "
                    "attention factor > 0");
    if (p->head_dim < 0 || (p->head_dim == 0 && p->n_embd % p->n_head))
        return werr(err, errlen, FD_ESHAPE, "n_embd %d is not a multiple of n_head %d",
                    p->n_embd, p->n_head);
    if (head_dim(p) % 2)
        return werr(err, errlen, FD_ESHAPE, "head size %d is odd (RoPE rotates pairs)",
                    head_dim(p));
    if (p->n_head % p->n_head_kv)
        return werr(err, errlen, FD_ESHAPE, "n_head %d is not a multiple of n_head_kv %d",
                    p->n_head, p->n_head_kv);
    if (p->n_vocab < 259 + 1 || (p->gemma_vocab && p->n_vocab < 268 + 1))
        return werr(err, errlen, FD_ESHAPE, "n_vocab %d: at least %d (%d special and 256 byte "
                    "tokens come first)", p->n_vocab, p->gemma_vocab ? 269 : 260,
                    p->gemma_vocab ? 12 : 3);
    if (p->n_vocab > 1 << 24)
        return werr(err, errlen, FD_ESHAPE, "n_vocab %d is too large", p->n_vocab);
    if (!(p->rope_base > 0) || !(p->norm_eps > 0))
        return werr(err, errlen, FD_ESHAPE, "rope base and norm eps must be positive");
    if (!wtype_ok(p->wtype))
        return werr(err, errlen, FD_EUNSUP, "weight type %d is not one of F32, F16, BF16, Q8_0, "
                    "Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q4_K_M, Q5_K_M, "
                    "IQ4_NL, IQ4_XS, MXFP4, IQ4_XS_MIX, MXFP4_MOE, Q2_K_MIX, Q2_K_S, Q3_K_S, "
                    "Q3_K_M, Q3_K_L", p->wtype);
    return 0;
}

/* llama.cpp's fallback for a type whose block does not fit a row of ne0 (its quantizer's
 * tensor_type_fallback): IQ4_XS -> IQ4_NL, Q2_K and Q3_K -> Q4_0, Q4_K -> Q5_0,
 * Q5_K -> Q5_1, Q6_K -> Q8_0, a 32-block type kept; F16 when that does not fit either. */
static int fallback_type(int t, int64_t ne0, int *n_fallback)
{
    if (ne0 % gg_block_elems(t) == 0)
        return t;
    (*n_fallback)++;
    switch (t) {
    case GG_IQ4_XS: t = GG_IQ4_NL; break;
    case GG_Q2_K: case GG_Q3_K: t = GG_Q4_0; break;
    case GG_Q4_K: t = GG_Q5_0; break;
    case GG_Q5_K: t = GG_Q5_1; break;
    case GG_Q6_K: t = GG_Q8_0; break;
    default: break;
    }
    return ne0 % gg_block_elems(t) == 0 ? t : GG_F16;
}

/* llama.cpp's "use more bits" layers of the Q4_K_M recipe. */
static bool more_bits(int il, int n)
{
    return il < n / 8 || il >= 7 * n / 8 || (il - n / 8) % 3 == 2;
}

/* llama.cpp's quantizer's categories (llama_tensor_get_type): attn_v and phi3's attn_qkv
 * are "V-like"; a shared expert's ffn_down_shexp is an ffn_down. */
static bool role_is_v(const char *role)
{
    return !strcmp(role, "attn_v") || !strcmp(role, "attn_qkv");
}

static bool role_is_down(const char *role)
{
    return !strncmp(role, "ffn_down", 8);
}

/* llama.cpp's "70B" model type, the one its quantizer's recipes look at (an attn_v of Q3_K
 * or Q4_K gets Q5_K): llama with 80 layers, grouped-query attention and not 8 experts (8 make
 * it 8x7B), qwen2 with 80 layers. */
static bool is_70b(const gguf_w_llama_t *p)
{
    const char *ar = llama_arch(p);
    if (p->n_layer != 80)
        return false;
    return (!strcmp(ar, "llama") && p->n_expert != 8 && p->n_head != p->n_head_kv) ||
           !strcmp(ar, "qwen2");
}

/* llama.cpp's Q2_K, Q2_K_S, Q3_K_S, Q3_K_M and Q3_K_L recipes (gguf_write.h). */
static int k23_mix_type(const gguf_w_llama_t *p, const char *role, int il)
{
    const int m = p->wtype;
    const bool q2 = m == GGUF_W_MIX_Q2_K || m == GGUF_W_MIX_Q2_K_S;
    const bool gqa4 = p->n_head / p->n_head_kv >= 4, eight = p->n_expert == 8;
    if (!strcmp(role, "output") || (p->tied && !strcmp(role, "token_embd")))
        return GG_Q6_K; /* Q8_0 where 256 does not divide the rows: fallback_type */
    int t = q2 ? GG_Q2_K : GG_Q3_K;
    if (role_is_v(role)) {
        if (m == GGUF_W_MIX_Q2_K)
            t = gqa4 ? GG_Q4_K : GG_Q3_K;
        else if (m == GGUF_W_MIX_Q2_K_S && gqa4)
            t = GG_Q4_K;
        else if (m == GGUF_W_MIX_Q3_K_M)
            t = il < 2 ? GG_Q5_K : GG_Q4_K; /* the first two attn_v of the file */
        else if (m == GGUF_W_MIX_Q3_K_L)
            t = GG_Q5_K;
        if (is_70b(p) && (t == GG_Q3_K || t == GG_Q4_K))
            t = GG_Q5_K;
        if (eight)
            t = GG_Q8_0;
    } else if (!strcmp(role, "attn_k")) {
        if (eight)
            t = GG_Q8_0;
    } else if (role_is_down(role)) {
        if (m == GGUF_W_MIX_Q2_K)
            t = GG_Q3_K;
        else if (m == GGUF_W_MIX_Q2_K_S && il < p->n_layer / 8)
            t = GG_Q4_K;
        else if (m == GGUF_W_MIX_Q3_K_M)
            t = il < p->n_layer / 16 ? GG_Q5_K : GG_Q4_K;
        else if (m == GGUF_W_MIX_Q3_K_L)
            t = GG_Q5_K;
    } else if (!strcmp(role, "attn_output")) {
        if (eight) {
            if (m == GGUF_W_MIX_Q2_K || m == GGUF_W_MIX_Q3_K_S || m == GGUF_W_MIX_Q3_K_M)
                t = GG_Q5_K;
        } else if (m == GGUF_W_MIX_Q2_K) {
            t = GG_Q3_K;
        } else if (m == GGUF_W_MIX_Q3_K_M) {
            t = GG_Q4_K;
        } else if (m == GGUF_W_MIX_Q3_K_L) {
            t = GG_Q5_K;
        }
    }
    return t;
}

/* llama.cpp's IQ4_XS and MXFP4_MOE recipes (gguf_write.h) for the 2-D matrices. */
static int iq_mix_type(const gguf_w_llama_t *p, const char *role, int il)
{
    if (p->wtype == GGUF_W_MIX_MXFP4_MOE)
        return GG_Q8_0; /* the experts are typed where they are written (expert_type) */
    if (!strcmp(role, "output") || (p->tied && !strcmp(role, "token_embd")))
        return GG_Q6_K;
    bool v = role_is_v(role);
    int t = GG_IQ4_XS;
    if (v && p->n_head / p->n_head_kv >= 4)
        t = GG_Q5_K;
    if (role_is_down(role) && il < p->n_layer / 8)
        t = GG_Q5_K;
    if (p->n_expert == 8 && (v || !strcmp(role, "attn_k")))
        t = GG_Q8_0;
    if (p->n_expert == 8 && !strcmp(role, "attn_output"))
        t = GG_Q5_K;
    return t;
}

/* The type of a matrix in role `role` of layer il whose rows are ne0 long: the requested
 * type or the mix's pick for the role, then llama.cpp's fallback where its block does not
 * fit the row.  Checked tensor by tensor against llama.cpp's quantizer (llama_model_quantize
 * of the same model's F32 file) for llama, qwen2 (tied, n_embd 896), phi3, gemma3, qwen3moe,
 * olmoe, qwen2moe and gpt-oss shapes. */
static int matrix_type(const gguf_w_llama_t *p, const char *role, int il, int64_t ne0,
                       int *n_fallback)
{
    int t = p->wtype;
    if (t == GGUF_W_MIX_IQ4_XS || t == GGUF_W_MIX_MXFP4_MOE)
        return fallback_type(iq_mix_type(p, role, il), ne0, n_fallback);
    if (t >= GGUF_W_MIX_Q2_K && t <= GGUF_W_MIX_Q3_K_L)
        return fallback_type(k23_mix_type(p, role, il), ne0, n_fallback);
    if (t == GGUF_W_MIX_Q4_K_M || t == GGUF_W_MIX_Q5_K_M) {
        bool q4 = t == GGUF_W_MIX_Q4_K_M;
        t = q4 ? GG_Q4_K : GG_Q5_K;
        /* the output matrix, or the embedding that serves as it (tied) */
        if (strcmp(role, "output") == 0 || (p->tied && strcmp(role, "token_embd") == 0))
            t = GG_Q6_K;
        else if ((role_is_v(role) || role_is_down(role)) && more_bits(il, p->n_layer))
            t = GG_Q6_K;
        else if (q4 && role_is_v(role) && is_70b(p))
            t = GG_Q5_K;
        /* 8 experts: V and K at Q8_0, the attention output at Q5_K */
        if (p->n_expert == 8 && (role_is_v(role) || !strcmp(role, "attn_k")))
            t = GG_Q8_0;
        if (p->n_expert == 8 && q4 && !strcmp(role, "attn_output"))
            t = GG_Q5_K;
    }
    return fallback_type(t, ne0, n_fallback);
}

/* The type of a 3-D expert tensor whose dense role (ffn_gate, ffn_up, ffn_down) is role. */
static int expert_type(const gguf_w_llama_t *p, const char *role, int il, int64_t ne0,
                       int *n_fallback)
{
    if (p->wtype != GGUF_W_MIX_MXFP4_MOE)
        return matrix_type(p, role, il, ne0, n_fallback);
    if (ne0 % 32) {
        (*n_fallback)++;
        return GG_F16;
    }
    return GG_MXFP4;
}

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    return h;
}

enum { V_MATRIX, V_NORM, V_BIAS, V_FREQ, V_SINK };

static int value_kind(const char *name)
{
    size_t n = strlen(name);
    if (strcmp(name, "rope_freqs.weight") == 0 || strcmp(name, "rope_factors_long.weight") == 0 ||
        strcmp(name, "rope_factors_short.weight") == 0)
        return V_FREQ;
    if (n >= 11 && strcmp(name + n - 11, "norm.weight") == 0)
        return V_NORM;
    if (n >= 17 && strcmp(name + n - 17, "attn_sinks.weight") == 0)
        return V_SINK;
    if (n >= 5 && strcmp(name + n - 5, ".bias") == 0)
        return V_BIAS;
    return V_MATRIX;
}

/* Counter-based (splitmix64 stream per row), so any element can be recomputed on its own. */
static float value_at(uint64_t rowseed, int64_t i, int kind, int64_t ne0)
{
    uint64_t z = mix64(rowseed + (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull);
    float u = (float)((double)(z >> 11) * (2.0 / 9007199254740992.0) - 1.0); /* [-1, 1) */
    if (kind == V_NORM)
        return 1.0f + 0.1f * u;
    if (kind == V_BIAS)
        return 0.5f * u;
    if (kind == V_FREQ)
        return 4.5f + 3.5f * u;
    if (kind == V_SINK) /* gpt-oss's sinks: logits of the scores' size, [0, 3) */
        return 1.5f + 1.5f * u;
    return u * sqrtf(3.0f / (float)ne0); /* variance 1/ne0 */
}

static uint64_t row_seed(uint64_t seed, const char *name, int64_t row)
{
    return mix64(mix64(seed ^ name_hash(name)) + (uint64_t)row * 0xd1b54a32d192ed03ull);
}

float gguf_w_llama_value(const gguf_w_llama_t *p, const char *name, int64_t row, int64_t i,
                         int64_t ne0)
{
    return value_at(row_seed(p->seed, name, row), i, value_kind(name), ne0);
}

static int fill_random(void *ud, const char *name, int64_t row, float *dst, int64_t n)
{
    const gguf_w_llama_t *p = ud;
    uint64_t rs = row_seed(p->seed, name, row);
    int kind = value_kind(name);
    for (int64_t i = 0; i < n; i++)
        dst[i] = value_at(rs, i, kind, n);
    return 0;
}

static int llama_ftype(int wtype)
{
    switch (wtype) {
    case GG_F32: return 0;      /* LLAMA_FTYPE_ALL_F32 */
    case GG_F16: return 1;      /* MOSTLY_F16 */
    case GG_Q4_0: return 2;     /* MOSTLY_Q4_0 */
    case GG_Q8_0: return 7;     /* MOSTLY_Q8_0 */
    case GG_Q4_1: return 3;     /* MOSTLY_Q4_1 */
    case GG_Q5_0: return 8;     /* MOSTLY_Q5_0 */
    case GG_Q5_1: return 9;     /* MOSTLY_Q5_1 */
    case GG_Q2_K: return 10;    /* MOSTLY_Q2_K */
    case GGUF_W_MIX_Q2_K: return 10;
    case GGUF_W_MIX_Q2_K_S: return 21;
    case GG_Q3_K: return 11;    /* MOSTLY_Q3_K_S (every matrix Q3_K) */
    case GGUF_W_MIX_Q3_K_S: return 11;
    case GGUF_W_MIX_Q3_K_M: return 12;
    case GGUF_W_MIX_Q3_K_L: return 13;
    case GG_Q4_K: return 14;    /* MOSTLY_Q4_K_S */
    case GGUF_W_MIX_Q4_K_M: return 15;
    case GG_Q5_K: return 16;    /* MOSTLY_Q5_K_S */
    case GGUF_W_MIX_Q5_K_M: return 17;
    case GG_Q6_K: return 18;    /* MOSTLY_Q6_K */
    case GG_BF16: return 32;    /* MOSTLY_BF16 */
    case GG_IQ4_NL: return 25;  /* MOSTLY_IQ4_NL */
    case GG_IQ4_XS: return 30;  /* MOSTLY_IQ4_XS */
    case GGUF_W_MIX_IQ4_XS: return 30;
    case GG_MXFP4: return 38;   /* MOSTLY_MXFP4_MOE */
    case GGUF_W_MIX_MXFP4_MOE: return 38;
    default: return 0;
    }
}

/* The SPM-style vocabulary: pieces after the byte tokens are the printable ASCII characters,
 * then the same with a leading U+2581 (SentencePiece's space), then ever longer lowercase
 * strings, with and without it, until n_vocab; all distinct.  gemma: Gemma's special and
 * user-defined pieces first (gguf_w_llama_t.gemma_vocab). */
static int add_vocab(gguf_w_t *w, int n_vocab, bool gemma)
{
    char **tok = calloc((size_t)n_vocab, sizeof(*tok));
    float *score = malloc((size_t)n_vocab * sizeof(*score));
    int32_t *type = malloc((size_t)n_vocab * sizeof(*type));
    int rc = -ENOMEM;
    int n = 0;
    if (!tok || !score || !type)
        goto out;
    static const char *const special[3] = {"<unk>", "<s>", "</s>"};
    /* Gemma's first ids, then its chat markers and a few user-defined pieces */
    static const struct { const char *text; int type; } gspecial[] = {
        {"<pad>", 3}, {"<eos>", 3}, {"<bos>", 3}, {"<unk>", 2}, {"<mask>", 3},
        {"<start_of_turn>", 4}, {"<end_of_turn>", 4}, {"\n\n", 4}, {"\t\t", 4}, {"<b>", 4},
        {"\xe2\x96\x81\xe2\x96\x81", 1},
        {"\xe2\x96\x81\xe2\x96\x81\xe2\x96\x81\xe2\x96\x81", 1},
    };
    int n_special = gemma ? (int)FD_ARRAY_LEN(gspecial) : 3;
    for (int i = 0; i < n_special; i++, n++) {
        if (!(tok[n] = strdup(gemma ? gspecial[i].text : special[i])))
            goto out;
        score[n] = 0; /* the runs of spaces: the best scores of the normal pieces */
        type[n] = gemma ? gspecial[i].type : i == 0 ? 2 : 3; /* unknown, control */
    }
    for (int b = 0; b < 256; b++, n++) {
        char s[8];
        snprintf(s, sizeof(s), "<0x%02X>", b);
        if (!(tok[n] = strdup(s)))
            goto out;
        score[n] = 0;
        type[n] = 6; /* byte */
    }
    for (int len = 1; n < n_vocab; len++) {
        int base = len == 1 ? 94 : 26; /* '!'..'~', then 'a'..'z' */
        uint64_t count = 1;
        for (int k = 0; k < len; k++)
            count *= (uint64_t)base;
        for (int sp = 0; sp < 2 && n < n_vocab; sp++)
            for (uint64_t c = 0; c < count && n < n_vocab; c++, n++) {
                char s[64];
                size_t o = 0;
                if (sp) {
                    memcpy(s, "\xe2\x96\x81", 3);
                    o = 3;
                }
                uint64_t v = c;
                for (int k = 0; k < len; k++) {
                    s[o + (size_t)(len - 1 - k)] = (char)(len == 1 ? '!' + (int)(v % 94)
                                                                  : 'a' + (int)(v % 26));
                    v /= (uint64_t)base;
                }
                s[o + (size_t)len] = 0;
                if (!(tok[n] = strdup(s)))
                    goto out;
                score[n] = -(float)(n - 259);
                type[n] = 1; /* normal */
            }
    }
    if (gemma &&
        ((rc = gguf_w_add_bool(w, "tokenizer.ggml.add_space_prefix", false)) ||
         (rc = gguf_w_add_u32(w, "tokenizer.ggml.padding_token_id", 0))))
        goto out;
    if ((rc = gguf_w_add_str(w, "tokenizer.ggml.model", "llama")) ||
        (rc = gguf_w_add_str_arr(w, "tokenizer.ggml.tokens", (const char *const *)tok,
                                 (uint64_t)n_vocab)) ||
        (rc = gguf_w_add_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, score,
                             (uint64_t)n_vocab)) ||
        (rc = gguf_w_add_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, type,
                             (uint64_t)n_vocab)) ||
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.unknown_token_id", gemma ? 3 : 0)) ||
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.bos_token_id", gemma ? 2 : 1)) ||
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.eos_token_id", gemma ? 1 : 2)) ||
        (rc = gguf_w_add_bool(w, "tokenizer.ggml.add_bos_token", true)) ||
        (rc = gguf_w_add_bool(w, "tokenizer.ggml.add_eos_token", false)))
        goto out;
out:
    if (tok)
        for (int i = 0; i < n; i++)
            free(tok[i]);
    free(tok);
    free(score);
    free(type);
    return rc;
}

static int add_matrix(gguf_w_t *w, gguf_w_llama_t *p, const char *name, const char *role,
                      int il, int64_t ne0, int64_t ne1)
{
    int64_t ne[2] = {ne0, ne1};
    int t = matrix_type(p, role, il, ne0, &p->n_fallback);
    return gguf_w_add_tensor(w, name, t, 2, ne, NULL, fill_random, p);
}

/* An F32 vector: a norm's gamma or a bias. */
static int add_norm(gguf_w_t *w, gguf_w_llama_t *p, const char *name, int64_t n)
{
    return gguf_w_add_tensor(w, name, GG_F32, 1, &n, NULL, fill_random, p);
}

/* "<arch>.<key>" into buf. */
static const char *akey(char *buf, size_t len, const char *arch, const char *key)
{
    snprintf(buf, len, "%s.%s", arch, key);
    return buf;
}

/* Whether architecture ar has a tensor whose `only` list is spec (see blk[] below). */
static bool arch_has(const char *spec, const char *ar)
{
    if (spec[0] == '!')
        return strcmp(spec + 1, ar) != 0;
    if (strcmp(spec, "gemma") == 0) /* Gemma 2 and 3 (Gemma 1 has no post norms) */
        return strcmp(ar, "gemma2") == 0 || strcmp(ar, "gemma3") == 0;
    size_t n = strlen(ar);
    for (const char *s = spec; (s = strstr(s, ar)) != NULL; s += n)
        if ((s == spec || s[-1] == ' ') && (s[n] == ' ' || s[n] == '\0'))
            return true;
    return false;
}

int gguf_w_llama_add(gguf_w_t *w, gguf_w_llama_t *p, char *err, size_t errlen)
{
    int rc = gguf_w_llama_check(p, err, errlen);
    if (rc)
        return rc;
    p->n_fallback = 0;
    const char *ar = llama_arch(p);
    int hd = head_dim(p);
    int64_t kv_dim = (int64_t)hd * p->n_head_kv, q_dim = (int64_t)hd * p->n_head;
    char k[96];
    if ((rc = gguf_w_add_str(w, "general.architecture", ar)) ||
        (rc = gguf_w_add_str(w, "general.name", p->name ? p->name : "random-llama")) ||
        (rc = gguf_w_add_u32(w, "general.file_type", (uint32_t)llama_ftype(p->wtype))) ||
        (rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar, "context_length"), (uint32_t)p->n_ctx)) ||
        (rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar, "embedding_length"),
                             (uint32_t)p->n_embd)) ||
        (rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar, "block_count"), (uint32_t)p->n_layer)) ||
        (rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar, "feed_forward_length"),
                             (uint32_t)p->n_ff)) ||
        (rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar, "attention.head_count"),
                             (uint32_t)p->n_head)) ||
        (rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar, "attention.head_count_kv"),
                             (uint32_t)p->n_head_kv)) ||
        (p->head_dim &&
         ((rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar, "attention.key_length"),
                               (uint32_t)hd)) ||
          (rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar, "attention.value_length"),
                               (uint32_t)hd)))) ||
        (rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar, "rope.dimension_count"), (uint32_t)hd)) ||
        (rc = gguf_w_add_f32(w, akey(k, sizeof(k), ar, "rope.freq_base"), p->rope_base)) ||
        (rc = gguf_w_add_f32(w, akey(k, sizeof(k), ar, "attention.layer_norm_rms_epsilon"),
                             p->norm_eps)) ||
        (rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar, "vocab_size"), (uint32_t)p->n_vocab)) ||
        (p->orig_ctx > 0 &&
         ((rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar, "rope.scaling.original_context_length"),
                               (uint32_t)p->orig_ctx)) ||
          (rc = gguf_w_add_f32(w, akey(k, sizeof(k), ar, "rope.scaling.attn_factor"),
                               p->attn_factor)))) ||
        (p->rope_scale > 0 &&
         ((rc = gguf_w_add_str(w, akey(k, sizeof(k), ar, "rope.scaling.type"),
                               p->yarn_orig_ctx > 0 ? "yarn" : "linear")) ||
          (rc = gguf_w_add_f32(w, akey(k, sizeof(k), ar, "rope.scaling.factor"),
                               p->rope_scale)))) ||
        (p->yarn_orig_ctx > 0 &&
         ((rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar, "rope.scaling.original_context_length"),
                               (uint32_t)p->yarn_orig_ctx)) ||
          (p->attn_factor > 0 &&
           (rc = gguf_w_add_f32(w, akey(k, sizeof(k), ar, "rope.scaling.attn_factor"),
                                p->attn_factor))))) ||
        (p->n_swa > 0 && (rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar,
                                                  "attention.sliding_window"),
                                              (uint32_t)p->n_swa))) ||
        (p->attn_softcap > 0 &&
         (rc = gguf_w_add_f32(w, akey(k, sizeof(k), ar, "attn_logit_softcapping"),
                              p->attn_softcap))) ||
        (p->final_softcap > 0 &&
         (rc = gguf_w_add_f32(w, akey(k, sizeof(k), ar, "final_logit_softcapping"),
                              p->final_softcap))) ||
        (p->n_expert > 0 &&
         ((rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar, "expert_count"), (uint32_t)p->n_expert)) ||
          (rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar, "expert_used_count"),
                               (uint32_t)p->n_expert_used)) ||
          ((!strcmp(ar, "qwen3moe") || !strcmp(ar, "qwen2moe") || !strcmp(ar, "gpt-oss")) &&
           (rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar, "expert_feed_forward_length"),
                                (uint32_t)p->n_ff))) ||
          (!strcmp(ar, "qwen2moe") &&
           (rc = gguf_w_add_u32(w, akey(k, sizeof(k), ar,
                                     "expert_shared_feed_forward_length"),
                                (uint32_t)p->n_ff))))) ||
        (rc = gguf_w_add_u64(w, "fusiond.seed", p->seed)) ||
        (rc = add_vocab(w, p->n_vocab, p->gemma_vocab)))
        return werr(err, errlen, rc, "metadata: %s", fd_strerror(rc));
    char name[64];
    if ((rc = add_matrix(w, p, "token_embd.weight", "token_embd", 0, p->n_embd, p->n_vocab)) ||
        (p->rope_freqs && (rc = add_norm(w, p, "rope_freqs.weight", hd / 2))) ||
        (p->orig_ctx > 0 && ((rc = add_norm(w, p, "rope_factors_long.weight", hd / 2)) ||
                             (rc = add_norm(w, p, "rope_factors_short.weight", hd / 2)))) ||
        (rc = add_norm(w, p, "output_norm.weight", p->n_embd)) ||
        (!p->tied &&
         (rc = add_matrix(w, p, "output.weight", "output", 0, p->n_embd, p->n_vocab))))
        return werr(err, errlen, rc, "tensors: %s", fd_strerror(rc));
    /* shapes: 0 n_embd, 1 kv_dim, 2 n_ff, 3 q_dim, 4 head_dim, 5 q_dim + 2 kv_dim, 6 2 n_ff,
     * 7 n_expert, 8 n_head;
     * kind: matrix, norm (a vector of `out`), or a bias of `out` (qwen2) */
    enum { MAT, NORM, BIAS, ROUTER, EXPS, EXPB };
    static const struct {
        const char *role, *suffix;
        int in, out, kind;
        const char *only;      /* the architectures that have it ("qwen3 gemma3"), NULL:
                                  all; "!phi3": all but phi3; "gemma": gemma2 and gemma3;
                                  "moe": models with experts (whose ffn_gate/up/down are
                                  then left out) */
    } blk[] = {
        {"attn_norm", "weight", 0, 0, NORM, NULL}, {"attn_q", "weight", 0, 3, MAT, "!phi3"},
        {"attn_k", "weight", 0, 1, MAT, "!phi3"}, {"attn_v", "weight", 0, 1, MAT, "!phi3"},
        {"attn_qkv", "weight", 0, 5, MAT, "phi3"},
        {"attn_q", "bias", 0, 3, BIAS, "qwen2 qwen2moe gpt-oss"},
        {"attn_k", "bias", 0, 1, BIAS, "qwen2 qwen2moe gpt-oss"},
        {"attn_v", "bias", 0, 1, BIAS, "qwen2 qwen2moe gpt-oss"},
        {"attn_q_norm", "weight", 0, 4, NORM, "qwen3 gemma3 qwen3moe"},
        {"attn_k_norm", "weight", 0, 4, NORM, "qwen3 gemma3 qwen3moe"},
        {"attn_q_norm", "weight", 0, 3, NORM, "olmoe"},
        {"attn_k_norm", "weight", 0, 1, NORM, "olmoe"},
        {"attn_output", "weight", 3, 0, MAT, NULL},
        {"attn_output", "bias", 0, 0, BIAS, "gpt-oss"},
        {"attn_sinks", "weight", 0, 8, NORM, "gpt-oss"},
        {"post_attention_norm", "weight", 0, 0, NORM, "gemma"},
        {"post_attention_norm", "weight", 0, 0, NORM, "gpt-oss"}, /* its FFN norm */
        {"ffn_norm", "weight", 0, 0, NORM, "!gpt-oss"},
        {"ffn_gate", "weight", 0, 2, MAT, "!phi3"}, {"ffn_up", "weight", 0, 2, MAT, "!phi3"},
        {"ffn_up", "weight", 0, 6, MAT, "phi3"},
        {"ffn_down", "weight", 2, 0, MAT, NULL},
        {"post_ffw_norm", "weight", 0, 0, NORM, "gemma"},
        {"ffn_gate_inp", "weight", 0, 7, ROUTER, "moe"},
        {"ffn_gate_exps", "weight", 0, 2, EXPS, "moe"},
        {"ffn_up_exps", "weight", 0, 2, EXPS, "moe"},
        {"ffn_down_exps", "weight", 2, 0, EXPS, "moe"},
        {"ffn_gate_inp", "bias", 0, 7, BIAS, "gpt-oss"},
        {"ffn_gate_exps", "bias", 0, 2, EXPB, "gpt-oss"},
        {"ffn_up_exps", "bias", 0, 2, EXPB, "gpt-oss"},
        {"ffn_down_exps", "bias", 0, 0, EXPB, "gpt-oss"},
        {"ffn_gate_inp_shexp", "weight", 0, 0, NORM, "qwen2moe"},
        {"ffn_gate_shexp", "weight", 0, 2, MAT, "qwen2moe"},
        {"ffn_up_shexp", "weight", 0, 2, MAT, "qwen2moe"},
        {"ffn_down_shexp", "weight", 2, 0, MAT, "qwen2moe"},
    };
    const int64_t dims[9] = {p->n_embd, kv_dim, p->n_ff, q_dim, hd, q_dim + 2 * kv_dim,
                             2 * (int64_t)p->n_ff, p->n_expert, p->n_head};
    const bool moe = p->n_expert > 0;
    for (int il = 0; il < p->n_layer; il++)
        for (size_t j = 0; j < FD_ARRAY_LEN(blk); j++) {
            const char *only = blk[j].only;
            if ((only && (!strcmp(only, "moe") ? !moe : !arch_has(only, ar))) ||
                (moe && (!strcmp(blk[j].role, "ffn_gate") || !strcmp(blk[j].role, "ffn_up") ||
                         !strcmp(blk[j].role, "ffn_down"))))
                continue;
            snprintf(name, sizeof(name), "blk.%d.%s.%s", il, blk[j].role, blk[j].suffix);
            if (blk[j].kind == MAT) {
                rc = add_matrix(w, p, name, blk[j].role, il, dims[blk[j].in],
                                dims[blk[j].out]);
            } else if (blk[j].kind == ROUTER) {
                int64_t ne[2] = {dims[blk[j].in], dims[blk[j].out]};
                rc = gguf_w_add_tensor(w, name, GG_F32, 2, ne, NULL, fill_random, p);
            } else if (blk[j].kind == EXPB) { /* gpt-oss: one bias row an expert, F32 */
                int64_t ne[2] = {dims[blk[j].out], p->n_expert};
                rc = gguf_w_add_tensor(w, name, GG_F32, 2, ne, NULL, fill_random, p);
            } else if (blk[j].kind == EXPS) {
                /* the dense role's type (ffn_down_exps as ffn_down in the Q4_K_M recipe) */
                char role[16];
                snprintf(role, sizeof(role), "%.*s", (int)(strlen(blk[j].role) - 5),
                         blk[j].role);
                int64_t ne[3] = {dims[blk[j].in], dims[blk[j].out], p->n_expert};
                int t = p->exp_wtype ? p->exp_wtype
                                     : expert_type(p, role, il, ne[0], &p->n_fallback);
                rc = gguf_w_add_tensor(w, name, t, 3, ne, NULL, fill_random, p);
            } else {
                rc = add_norm(w, p, name, dims[blk[j].out]);
            }
            if (rc)
                return werr(err, errlen, rc, "tensor %s: %s", name, fd_strerror(rc));
        }
    return 0;
}

int gguf_w_llama_write(gguf_w_llama_t *p, const char *path, int threads, char *err,
                       size_t errlen)
{
    gguf_w_t *w;
    int rc = gguf_w_new(&w);
    if (rc)
        return werr(err, errlen, rc, "out of memory");
    if ((rc = gguf_w_set_threads(w, threads)))
        werr(err, errlen, rc, "bad thread count %d", threads);
    else if (!(rc = gguf_w_llama_add(w, p, err, errlen)))
        rc = gguf_w_write_file(w, path, err, errlen);
    gguf_w_free(w);
    return rc;
}
