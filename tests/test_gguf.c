/* test_gguf.c: proves the GGUF reader reads real files exactly (values checked against the
 * shared models, vocabularies and the llama2.c checkpoint) and that every kind of damage a
 * file can carry is refused with its own error code, never a crash or an out-of-bounds read
 * (each damaged file sits in a malloc of exactly its size, so ASan sees any overrun). */
#include <inttypes.h>
#include <math.h>

#include "common/fd.h"
#include "common/ggtypes.h"
#include "engine/gguf.h"
#include "tests/testutil.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static uint8_t *slurp(const char *path, size_t *size)
{
    return (uint8_t *)tu_slurp(path, size);
}

static bool str_is(gguf_str_t s, const char *want)
{
    return s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

static void walk_all(const gguf_t *g);

/* Opens a private exact-size copy of bytes, so that any read past size is an ASan error. */
static int open_copy(const uint8_t *bytes, size_t size, char *err, size_t errlen)
{
    uint8_t *copy = malloc(size ? size : 1);
    ck_assert(copy != NULL);
    if (size)
        memcpy(copy, bytes, size);
    gguf_t *g = NULL;
    int rc = gguf_open_mem(&g, copy, size, "damaged.gguf", err, errlen);
    if (rc == 0) {
        walk_all(g);
        gguf_close(g);
    } else {
        ck_assert_ptr_null(g);
    }
    free(copy);
    return rc;
}

/* Touches every value and tensor byte reachable through the API. */
static void walk_arr(const gguf_arr_t *a, int depth)
{
    for (uint64_t i = 0; i < a->n; i++) {
        gguf_str_t s;
        gguf_arr_t sub;
        int64_t v;
        double d;
        volatile uint8_t sink = 0;
        if (gguf_arr_str(a, i, &s) == 0 && s.len)
            sink ^= (uint8_t)s.ptr[s.len - 1];
        if (gguf_arr_arr(a, i, &sub) == 0)
            walk_arr(&sub, depth + 1);
        (void)gguf_arr_i64(a, i, &v);
        (void)gguf_arr_f64(a, i, &d);
        (void)sink;
    }
}

static void walk_all(const gguf_t *g)
{
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const gguf_kv_t *kv = gguf_kv_at(g, i);
        ck_assert(gguf_find(g, gguf_kv_key(kv)) == kv);
        gguf_arr_t a;
        uint64_t u;
        double d;
        gguf_str_t s;
        (void)gguf_kv_u64(kv, &u);
        (void)gguf_kv_f64(kv, &d);
        (void)gguf_kv_str(kv, &s);
        if (gguf_kv_arr(kv, &a) == 0)
            walk_arr(&a, 0);
    }
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_t *t = gguf_tensor_at(g, i);
        ck_assert(gguf_find_tensor(g, t->name) == t);
        const uint8_t *p = t->data;
        volatile uint8_t sink = p[0] ^ p[t->nbytes - 1];
        (void)sink;
    }
    FILE *devnull = fopen("/dev/null", "w");
    ck_assert(devnull != NULL);
    gguf_dump(g, devnull);
    fclose(devnull);
}

/* ---- real files ------------------------------------------------------------------------- */

START_TEST(test_stories260k)
{
    const char *path = tu_shared("models/stories260K.gguf", 1);
    gguf_t *g = NULL;
    char err[512];
    int rc = gguf_open(&g, path, err, sizeof(err));
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(gguf_version(g), 3);
    ck_assert_uint_eq(gguf_alignment(g), 32);
    ck_assert_uint_eq(gguf_file_size(g), 1185376);
    ck_assert_uint_eq(gguf_data_offset(g), 14176);
    ck_assert_int_eq(gguf_n_kv(g), 19);
    ck_assert_int_eq(gguf_n_tensors(g), 48);

    gguf_str_t s;
    ck_assert_int_eq(gguf_get_str(g, "general.architecture", &s), 0);
    ck_assert(str_is(s, "llama"));
    ck_assert_int_eq(gguf_get_str(g, "tokenizer.ggml.model", &s), 0);
    ck_assert(str_is(s, "llama"));
    uint32_t u;
    ck_assert_int_eq(gguf_get_u32(g, "llama.embedding_length", &u), 0);
    ck_assert_uint_eq(u, 64);
    ck_assert_int_eq(gguf_get_u32(g, "llama.block_count", &u), 0);
    ck_assert_uint_eq(u, 5);
    ck_assert_int_eq(gguf_get_u32(g, "llama.context_length", &u), 0);
    ck_assert_uint_eq(u, 512);
    ck_assert_int_eq(gguf_get_u32(g, "llama.feed_forward_length", &u), 0);
    ck_assert_uint_eq(u, 172);
    ck_assert_int_eq(gguf_get_u32(g, "llama.attention.head_count", &u), 0);
    ck_assert_uint_eq(u, 8);
    ck_assert_int_eq(gguf_get_u32(g, "llama.attention.head_count_kv", &u), 0);
    ck_assert_uint_eq(u, 4);
    ck_assert_int_eq(gguf_get_u32(g, "tokenizer.ggml.padding_token_id", &u), 0);
    ck_assert_uint_eq(u, 0xffffffffu);
    int32_t i32;
    ck_assert_int_eq(gguf_get_i32(g, "tokenizer.ggml.padding_token_id", &i32), FD_ERANGE);
    int64_t i64;
    ck_assert_int_eq(gguf_get_i64(g, "tokenizer.ggml.padding_token_id", &i64), 0);
    ck_assert_int_eq(i64, 4294967295ll);
    float eps;
    ck_assert_int_eq(gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps), 0);
    ck_assert_float_eq(eps, 1e-5f);
    /* type checks and absence */
    ck_assert_int_eq(gguf_get_u32(g, "general.architecture", &u), FD_ETYPE);
    ck_assert_int_eq(gguf_get_f32(g, "llama.block_count", &eps), FD_ETYPE);
    ck_assert_int_eq(gguf_get_str(g, "llama.block_count", &s), FD_ETYPE);
    ck_assert_int_eq(gguf_get_u32(g, "llama.no_such_key", &u), -ENOENT);
    bool b;
    ck_assert_int_eq(gguf_get_bool(g, "llama.block_count", &b), FD_ETYPE);
    const gguf_kv_t *kv = gguf_find(g, "llama.block_count");
    ck_assert_ptr_nonnull(kv);
    ck_assert_int_eq(gguf_kv_type(kv), GGUF_UINT32);
    ck_assert_str_eq(gguf_kv_key(gguf_kv_at(g, 0)), "tokenizer.ggml.tokens");
    ck_assert_ptr_null(gguf_kv_at(g, 19));
    ck_assert_ptr_null(gguf_kv_at(g, -1));

    /* vocabulary: 512 pieces, a known one, its score and types */
    gguf_arr_t a;
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.tokens", &a), 0);
    ck_assert_int_eq(a.elem_type, GGUF_STRING);
    ck_assert_uint_eq(a.n, 512);
    ck_assert_int_eq(gguf_arr_str(&a, 0, &s), 0);
    ck_assert(str_is(s, "<unk>"));
    ck_assert_int_eq(gguf_arr_str(&a, 3, &s), 0);
    ck_assert(str_is(s, "<0x00>"));
    ck_assert_int_eq(gguf_arr_str(&a, 300, &s), 0);
    ck_assert(str_is(s, "\xe2\x96\x81ha"));
    ck_assert_int_eq(gguf_arr_str(&a, 259, &s), 0);
    ck_assert(str_is(s, "\xe2\x96\x81t"));
    ck_assert_int_eq(gguf_arr_str(&a, 512, &s), -ERANGE);
    ck_assert_int_eq(gguf_arr_i64(&a, 0, &i64), FD_ETYPE);
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.scores", &a), 0);
    ck_assert_int_eq(a.elem_type, GGUF_FLOAT32);
    float f;
    ck_assert_int_eq(gguf_arr_f32(&a, 300, &f), 0);
    ck_assert_float_eq(f, -41.0f);
    ck_assert_int_eq(gguf_arr_f32(&a, 511, &f), 0);
    ck_assert_float_eq(f, -252.0f);
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.token_type", &a), 0);
    ck_assert_int_eq(gguf_arr_i64(&a, 0, &i64), 0);
    ck_assert_int_eq(i64, 2);  /* unknown */
    ck_assert_int_eq(gguf_arr_i64(&a, 1, &i64), 0);
    ck_assert_int_eq(i64, 3);  /* control */
    ck_assert_int_eq(gguf_arr_i64(&a, 258, &i64), 0);
    ck_assert_int_eq(i64, 6);  /* byte */
    ck_assert_int_eq(gguf_arr_i64(&a, 259, &i64), 0);
    ck_assert_int_eq(i64, 1);  /* normal */

    /* tensor table */
    const gguf_tensor_t *t = gguf_find_tensor(g, "token_embd.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->n_dims, 2);
    ck_assert_int_eq(t->ne[0], 64);
    ck_assert_int_eq(t->ne[1], 512);
    ck_assert_int_eq(t->ne[2], 1);
    ck_assert_int_eq(t->type, GG_F32);
    ck_assert_uint_eq(t->offset, 0);
    ck_assert_uint_eq(t->nbytes, 131072);
    ck_assert_int_eq(gguf_tensor_nelems(t), 32768);
    ck_assert_ptr_eq(t, gguf_tensor_at(g, 0));
    t = gguf_find_tensor(g, "blk.0.ffn_down.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->ne[0], 172);
    ck_assert_int_eq(t->ne[1], 64);
    ck_assert_uint_eq(t->nbytes, 172 * 64 * 4);
    t = gguf_find_tensor(g, "blk.4.attn_k.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->ne[0], 64);
    ck_assert_int_eq(t->ne[1], 32);
    t = gguf_find_tensor(g, "output_norm.weight");
    ck_assert_int_eq(t->n_dims, 1);
    ck_assert_int_eq(t->ne[0], 64);
    ck_assert_ptr_null(gguf_find_tensor(g, "blk.5.attn_k.weight"));
    ck_assert_ptr_null(gguf_tensor_at(g, 48));
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        t = gguf_tensor_at(g, i);
        ck_assert_int_eq(t->type, GG_F32);
        ck_assert_uint_eq(((uintptr_t)t->data - (uintptr_t)gguf_tensor_at(g, 0)->data) % 32, 0);
    }

    /* tensor bytes against the llama2.c checkpoint: a 7-int header, then the embedding
     * table [vocab][dim], then the attention norms of every layer */
    size_t bsize;
    uint8_t *bin = slurp(tu_shared("models/stories260K.bin", 1), &bsize);
    int32_t hdr[7];
    memcpy(hdr, bin, sizeof(hdr));
    ck_assert_int_eq(hdr[0], 64);
    t = gguf_find_tensor(g, "token_embd.weight");
    ck_assert(memcmp(t->data, bin + 28, t->nbytes) == 0);
    for (int l = 0; l < 5; l++) {
        char name[64];
        snprintf(name, sizeof(name), "blk.%d.attn_norm.weight", l);
        t = gguf_find_tensor(g, name);
        ck_assert_ptr_nonnull(t);
        ck_assert(memcmp(t->data, bin + 28 + 131072 + (size_t)l * 256, 256) == 0);
    }
    free(bin);
    gguf_close(g);
}
END_TEST

START_TEST(test_stories260k_ggml_org)
{
    char err[512];
    gguf_t *g = NULL, *h = NULL;
    int rc = gguf_open(&g, tu_shared("models/stories260K-ggml-org.gguf", 1), err, sizeof(err));
    ck_assert_msg(rc == 0, "%s", err);
    rc = gguf_open(&h, tu_shared("models/stories260K.gguf", 1), err, sizeof(err));
    ck_assert_msg(rc == 0, "%s", err);
    uint32_t u;
    ck_assert_int_eq(gguf_get_u32(g, "llama.context_length", &u), 0);
    ck_assert_uint_eq(u, 2048);
    ck_assert_int_eq(gguf_get_u32(h, "llama.context_length", &u), 0);
    ck_assert_uint_eq(u, 512);
    ck_assert_int_eq(gguf_n_tensors(g), 48);
    /* the same tensors, byte for byte */
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_t *a = gguf_tensor_at(g, i);
        const gguf_tensor_t *b = gguf_find_tensor(h, a->name);
        ck_assert_ptr_nonnull(b);
        ck_assert_uint_eq(a->nbytes, b->nbytes);
        ck_assert(memcmp(a->data, b->data, a->nbytes) == 0);
    }
    gguf_close(g);
    gguf_close(h);
}
END_TEST

START_TEST(test_vocab_spm)
{
    char err[512];
    gguf_t *g = NULL;
    int rc = gguf_open(&g, tu_shared("tokenizer-tests/ggml-vocab-llama-spm.gguf", 1), err,
                       sizeof(err));
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_int_eq(gguf_n_tensors(g), 0);
    gguf_arr_t a;
    gguf_str_t s;
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.tokens", &a), 0);
    ck_assert_uint_eq(a.n, 32000);
    ck_assert_int_eq(gguf_arr_str(&a, 15043, &s), 0);
    ck_assert(str_is(s, "\xe2\x96\x81Hello"));
    ck_assert_int_eq(gguf_arr_str(&a, 3186, &s), 0);
    ck_assert(str_is(s, "\xe2\x96\x81world"));
    ck_assert_int_eq(gguf_arr_str(&a, 29871, &s), 0);
    ck_assert(str_is(s, "\xe2\x96\x81"));
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.scores", &a), 0);
    ck_assert_uint_eq(a.n, 32000);
    float f;
    ck_assert_int_eq(gguf_arr_f32(&a, 15043, &f), 0);
    ck_assert_float_eq(f, -14784.0f);
    ck_assert_int_eq(gguf_arr_f32(&a, 29871, &f), 0);
    ck_assert_float_eq(f, -1e9f);
    bool b = false;
    ck_assert_int_eq(gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b), 0);
    ck_assert(b);
    ck_assert_int_eq(gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b), 0);
    ck_assert(!b);
    uint32_t u;
    ck_assert_int_eq(gguf_get_u32(g, "llama.vocab_size", &u), 0);
    ck_assert_uint_eq(u, 32000);
    gguf_close(g);
}
END_TEST

START_TEST(test_vocab_gpt2)
{
    char err[512];
    gguf_t *g = NULL;
    int rc = gguf_open(&g, tu_shared("tokenizer-tests/ggml-vocab-gpt-2.gguf", 1), err,
                       sizeof(err));
    ck_assert_msg(rc == 0, "%s", err);
    gguf_arr_t a;
    gguf_str_t s;
    ck_assert_int_eq(gguf_get_str(g, "tokenizer.ggml.model", &s), 0);
    ck_assert(str_is(s, "gpt2"));
    ck_assert_int_eq(gguf_get_str(g, "tokenizer.ggml.pre", &s), 0);
    ck_assert(str_is(s, "gpt-2"));
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.tokens", &a), 0);
    ck_assert_uint_eq(a.n, 50257);
    ck_assert_int_eq(gguf_arr_str(&a, 50256, &s), 0);
    ck_assert(str_is(s, "<|endoftext|>"));
    ck_assert_int_eq(gguf_arr_str(&a, 31373, &s), 0);
    ck_assert(str_is(s, "hello"));
    ck_assert_int_eq(gguf_arr_str(&a, 995, &s), 0);
    ck_assert(str_is(s, "\xc4\xa0world"));
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.merges", &a), 0);
    ck_assert_int_eq(a.elem_type, GGUF_STRING);
    ck_assert_uint_eq(a.n, 50000);
    ck_assert_int_eq(gguf_arr_str(&a, 0, &s), 0);
    ck_assert(str_is(s, "\xc4\xa0 t"));
    ck_assert_int_eq(gguf_arr_str(&a, 49999, &s), 0);
    ck_assert(str_is(s, "\xc4\xa0g azed"));
    uint32_t u;
    ck_assert_int_eq(gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &u), 0);
    ck_assert_uint_eq(u, 50256);
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.token_type", &a), 0);
    int64_t v;
    ck_assert_int_eq(gguf_arr_i64(&a, 50256, &v), 0);
    ck_assert_int_eq(v, 3);
    gguf_close(g);
}
END_TEST

START_TEST(test_dump)
{
    char err[512];
    gguf_t *g = NULL;
    ck_assert_int_eq(gguf_open(&g, tu_shared("models/stories260K.gguf", 1), err, sizeof(err)), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    gguf_dump(g, f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, "GGUF v3, 1185376 bytes, 19 metadata keys, 48 tensors"));
    ck_assert_ptr_nonnull(strstr(buf, "general.architecture"));
    ck_assert_ptr_nonnull(strstr(buf, "= \"llama\"\n"));
    ck_assert_ptr_nonnull(strstr(buf, "[STRING x 512]"));
    ck_assert_ptr_nonnull(strstr(buf, "\"<unk>\", \"<s>\", \"</s>\", \"<0x00>\""));
    ck_assert_ptr_nonnull(strstr(buf, "... (512 total)]"));
    ck_assert_ptr_null(strstr(buf, "<0x10>")); /* abbreviated, not listed */
    ck_assert_ptr_nonnull(strstr(buf, "llama.embedding_length"));
    ck_assert(strstr(buf, "blk.0.ffn_down.weight") != NULL);
    /* a tensor row: name, shape, type, offset, bytes */
    char *row = strstr(buf, "token_embd.weight");
    ck_assert_ptr_nonnull(row);
    char name[64], x[8], type[16];
    long long ne0, ne1, off, nb;
    ck_assert_int_eq(sscanf(row, "%63s %lld %7s %lld %15s %lld %lld", name, &ne0, x, &ne1, type,
                            &off, &nb), 7);
    ck_assert_int_eq(ne0, 64);
    ck_assert_int_eq(ne1, 512);
    ck_assert_str_eq(type, "F32");
    ck_assert_int_eq(off, 0);
    ck_assert_int_eq(nb, 131072);
    free(buf);
    gguf_close(g);
}
END_TEST

START_TEST(test_open_errors)
{
    char err[512];
    gguf_t *g = (gguf_t *)1;
    ck_assert_int_eq(gguf_open(&g, "/nonexistent/x.gguf", err, sizeof(err)), -ENOENT);
    ck_assert_ptr_null(g);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/x.gguf"));
    ck_assert_int_eq(gguf_open(&g, "/", err, sizeof(err)), -EISDIR);
    char tmp[] = "/tmp/test_gguf_XXXXXX";
    int fd = mkstemp(tmp);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(gguf_open(&g, tmp, err, sizeof(err)), FD_ETRUNC);
    ck_assert_ptr_nonnull(strstr(err, tmp));
    unlink(tmp);
    /* a tiny error buffer is never overrun, and NULL is allowed */
    char small[8];
    ck_assert_int_eq(gguf_open_mem(&g, "XXXX", 4, "a-long-file-name.gguf", small,
                                   sizeof(small)), FD_EFORMAT);
    ck_assert_uint_eq(strlen(small), 7);
    ck_assert_int_eq(gguf_open_mem(&g, "XXXX", 4, "x", NULL, 0), FD_EFORMAT);
}
END_TEST

/* ---- a small independent GGUF builder for synthetic cases ------------------------------- */

struct buf {
    uint8_t *p;
    size_t n, cap;
};

static void put(struct buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert(b->p != NULL);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put_u8(struct buf *b, uint8_t v) { put(b, &v, 1); }

static void put_u32(struct buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, x, 4);
}

static void put_u64(struct buf *b, uint64_t v)
{
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}

static void put_str(struct buf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

static void put_hdr(struct buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    put(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}

static void put_pad(struct buf *b, size_t align)
{
    while (b->n % align)
        put_u8(b, 0);
}

static int open_buf(struct buf *b, gguf_t **g, char *err, size_t errlen)
{
    return gguf_open_mem(g, b->p, b->n, "synthetic.gguf", err, errlen);
}

START_TEST(test_nested_and_types)
{
    struct buf b = {0};
    put_hdr(&b, 2, 1, 9);
    /* [[1, 2, 3], [], [-4]] of INT16 */
    put_str(&b, "t.nested");
    put_u32(&b, GGUF_ARRAY);
    put_u32(&b, GGUF_ARRAY);
    put_u64(&b, 3);
    put_u32(&b, GGUF_INT16);
    put_u64(&b, 3);
    for (int i = 1; i <= 3; i++) {
        put_u8(&b, (uint8_t)i);
        put_u8(&b, 0);
    }
    put_u32(&b, GGUF_STRING);
    put_u64(&b, 0);
    put_u32(&b, GGUF_INT16);
    put_u64(&b, 1);
    put_u8(&b, 0xfc);
    put_u8(&b, 0xff);
    /* [["a", "bc"]] : nested strings */
    put_str(&b, "t.nstr");
    put_u32(&b, GGUF_ARRAY);
    put_u32(&b, GGUF_ARRAY);
    put_u64(&b, 1);
    put_u32(&b, GGUF_STRING);
    put_u64(&b, 2);
    put_str(&b, "a");
    put_str(&b, "bc");
    put_str(&b, "t.u8");
    put_u32(&b, GGUF_UINT8);
    put_u8(&b, 200);
    put_str(&b, "t.i8");
    put_u32(&b, GGUF_INT8);
    put_u8(&b, 0xff);
    put_str(&b, "t.f64");
    put_u32(&b, GGUF_FLOAT64);
    double d = 0.1;
    put(&b, &d, 8);
    put_str(&b, "t.u64");
    put_u32(&b, GGUF_UINT64);
    put_u64(&b, UINT64_MAX);
    put_str(&b, "t.bool");
    put_u32(&b, GGUF_BOOL);
    put_u8(&b, 1);
    put_str(&b, "general.alignment");
    put_u32(&b, GGUF_UINT32);
    put_u32(&b, 64);
    put_str(&b, "t.empty");
    put_u32(&b, GGUF_STRING);
    put_u64(&b, 0);
    /* one Q8_0 tensor of 2 blocks x 3 rows */
    put_str(&b, "w");
    put_u32(&b, 2);
    put_u64(&b, 64);
    put_u64(&b, 3);
    put_u32(&b, GG_Q8_0);
    put_u64(&b, 0);
    put_pad(&b, 64);
    size_t data_at = b.n;
    for (int i = 0; i < 3 * 68; i++)
        put_u8(&b, (uint8_t)i);

    gguf_t *g = NULL;
    char err[512];
    int rc = open_buf(&b, &g, err, sizeof(err));
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(gguf_version(g), 2);
    ck_assert_uint_eq(gguf_alignment(g), 64);
    ck_assert_uint_eq(gguf_data_offset(g), data_at);
    gguf_arr_t a, sub;
    int64_t v;
    ck_assert_int_eq(gguf_get_arr(g, "t.nested", &a), 0);
    ck_assert_int_eq(a.elem_type, GGUF_ARRAY);
    ck_assert_uint_eq(a.n, 3);
    ck_assert_int_eq(gguf_arr_arr(&a, 0, &sub), 0);
    ck_assert_uint_eq(sub.n, 3);
    ck_assert_int_eq(gguf_arr_i64(&sub, 2, &v), 0);
    ck_assert_int_eq(v, 3);
    ck_assert_int_eq(gguf_arr_arr(&a, 1, &sub), 0);
    ck_assert_int_eq(sub.elem_type, GGUF_STRING);
    ck_assert_uint_eq(sub.n, 0);
    ck_assert_int_eq(gguf_arr_arr(&a, 2, &sub), 0);
    ck_assert_int_eq(gguf_arr_i64(&sub, 0, &v), 0);
    ck_assert_int_eq(v, -4);
    ck_assert_int_eq(gguf_arr_arr(&a, 3, &sub), -ERANGE);
    ck_assert_int_eq(gguf_arr_i64(&a, 0, &v), FD_ETYPE);
    ck_assert_int_eq(gguf_get_arr(g, "t.nstr", &a), 0);
    ck_assert_int_eq(gguf_arr_arr(&a, 0, &sub), 0);
    gguf_str_t s;
    ck_assert_int_eq(gguf_arr_str(&sub, 1, &s), 0);
    ck_assert(str_is(s, "bc"));

    uint32_t u;
    int32_t i;
    uint64_t u64;
    int64_t i64;
    float f;
    double dd;
    bool bb;
    ck_assert_int_eq(gguf_get_u32(g, "t.u8", &u), 0);
    ck_assert_uint_eq(u, 200);
    ck_assert_int_eq(gguf_get_i32(g, "t.i8", &i), 0);
    ck_assert_int_eq(i, -1);
    ck_assert_int_eq(gguf_get_u32(g, "t.i8", &u), FD_ERANGE);
    ck_assert_int_eq(gguf_get_u64(g, "t.u64", &u64), 0);
    ck_assert_uint_eq(u64, UINT64_MAX);
    ck_assert_int_eq(gguf_get_i64(g, "t.u64", &i64), FD_ERANGE);
    ck_assert_int_eq(gguf_get_u32(g, "t.u64", &u), FD_ERANGE);
    ck_assert_int_eq(gguf_get_f64(g, "t.f64", &dd), 0);
    ck_assert(dd == 0.1);
    ck_assert_int_eq(gguf_get_f32(g, "t.f64", &f), 0);
    ck_assert_float_eq(f, 0.1f);
    ck_assert_int_eq(gguf_get_bool(g, "t.bool", &bb), 0);
    ck_assert(bb);
    ck_assert_int_eq(gguf_get_u32(g, "t.bool", &u), FD_ETYPE);
    ck_assert_int_eq(gguf_get_str(g, "t.empty", &s), 0);
    ck_assert_uint_eq(s.len, 0);
    ck_assert_str_eq(gguf_vtype_name(GGUF_FLOAT64), "FLOAT64");
    ck_assert_str_eq(gguf_vtype_name(99), "?");

    const gguf_tensor_t *t = gguf_find_tensor(g, "w");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->type, GG_Q8_0);
    ck_assert_uint_eq(t->nbytes, 3 * 68);
    ck_assert_ptr_eq(t->data, b.p + data_at);
    ck_assert_int_eq(((const uint8_t *)t->data)[100], 100);
    walk_all(g);
    gguf_close(g);

    /* every truncation of this file is FD_ETRUNC */
    for (size_t n = 0; n < b.n; n++)
        ck_assert_int_eq(open_copy(b.p, n, err, sizeof(err)), FD_ETRUNC);
    free(b.p);
}
END_TEST

/* Arrays nested one level too deep are refused before the recursion gets deep. */
START_TEST(test_nesting_limit)
{
    char err[512];
    gguf_t *g = NULL;
    for (int depth = 7; depth <= 9; depth++) {
        struct buf b = {0};
        put_hdr(&b, 3, 0, 1);
        put_str(&b, "deep");
        put_u32(&b, GGUF_ARRAY);
        for (int i = 0; i < depth - 1; i++) {
            put_u32(&b, GGUF_ARRAY);
            put_u64(&b, 1);
        }
        put_u32(&b, GGUF_UINT8);
        put_u64(&b, 1);
        put_u8(&b, 7);
        int rc = open_buf(&b, &g, err, sizeof(err));
        if (depth <= 8) {
            ck_assert_msg(rc == 0, "depth %d: %s", depth, err);
            gguf_close(g);
        } else {
            ck_assert_int_eq(rc, FD_ERANGE);
            ck_assert_ptr_nonnull(strstr(err, "nested"));
            ck_assert_ptr_nonnull(strstr(err, "key 'deep'"));
        }
        free(b.p);
    }
}
END_TEST

/* Files built around one tensor "w" (F32 64x2) with a header variation. */
static int one_tensor_file(uint32_t align_type, uint64_t align, const char *key, int bool_val,
                           char *err, size_t errlen)
{
    struct buf b = {0};
    int nkv = (align_type != 0xffffffffu) + (bool_val >= 0);
    put_hdr(&b, 3, 1, (uint64_t)nkv);
    if (align_type != 0xffffffffu) {
        put_str(&b, key);
        put_u32(&b, align_type);
        if (align_type == GGUF_STRING)
            put_str(&b, "32");
        else if (align_type == GGUF_UINT64 || align_type == GGUF_FLOAT64)
            put_u64(&b, align);
        else
            put_u32(&b, (uint32_t)align);
    }
    if (bool_val >= 0) {
        put_str(&b, "t.b");
        put_u32(&b, GGUF_BOOL);
        put_u8(&b, (uint8_t)bool_val);
    }
    put_str(&b, "w");
    put_u32(&b, 2);
    put_u64(&b, 64);
    put_u64(&b, 2);
    put_u32(&b, GG_F32);
    put_u64(&b, 0);
    put_pad(&b, align_type == GGUF_UINT32 && align && !(align & (align - 1)) ? align : 32);
    for (int i = 0; i < 512; i++)
        put_u8(&b, 0);
    int rc = open_copy(b.p, b.n, err, errlen);
    free(b.p);
    return rc;
}

START_TEST(test_alignment_and_bool)
{
    char err[512];
    ck_assert_int_eq(one_tensor_file(0xffffffffu, 0, NULL, -1, err, sizeof(err)), 0);
    ck_assert_int_eq(one_tensor_file(GGUF_UINT32, 32, "general.alignment", -1, err,
                                     sizeof(err)), 0);
    ck_assert_int_eq(one_tensor_file(GGUF_UINT32, 256, "general.alignment", -1, err,
                                     sizeof(err)), 0);
    ck_assert_int_eq(one_tensor_file(GGUF_UINT32, 1, "general.alignment", -1, err,
                                     sizeof(err)), 0);
    ck_assert_int_eq(one_tensor_file(GGUF_UINT32, 0, "general.alignment", -1, err,
                                     sizeof(err)), FD_ERANGE);
    ck_assert_ptr_nonnull(strstr(err, "general.alignment 0"));
    ck_assert_int_eq(one_tensor_file(GGUF_UINT32, 48, "general.alignment", -1, err,
                                     sizeof(err)), FD_ERANGE);
    ck_assert_ptr_nonnull(strstr(err, "power of two"));
    ck_assert_int_eq(one_tensor_file(GGUF_UINT64, 1ull << 40, "general.alignment", -1, err,
                                     sizeof(err)), FD_ERANGE);
    ck_assert_int_eq(one_tensor_file(GGUF_INT32, (uint32_t)-32, "general.alignment", -1, err,
                                     sizeof(err)), FD_ERANGE);
    ck_assert_int_eq(one_tensor_file(GGUF_STRING, 0, "general.alignment", -1, err,
                                     sizeof(err)), FD_ETYPE);
    ck_assert_ptr_nonnull(strstr(err, "general.alignment has type STRING"));
    ck_assert_int_eq(one_tensor_file(GGUF_FLOAT32, 0x42000000u, "general.alignment", -1, err,
                                     sizeof(err)), FD_ETYPE);
    ck_assert_int_eq(one_tensor_file(0xffffffffu, 0, NULL, 1, err, sizeof(err)), 0);
    ck_assert_int_eq(one_tensor_file(0xffffffffu, 0, NULL, 2, err, sizeof(err)), FD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err, "bool value 2"));
}
END_TEST

/* Keys and names with an embedded NUL or of length 0; a big-endian header. */
START_TEST(test_names)
{
    char err[512];
    gguf_t *g = NULL;
    struct buf b = {0};
    put_hdr(&b, 3, 0, 1);
    put_u64(&b, 3);
    put(&b, "a\0b", 3);
    put_u32(&b, GGUF_UINT8);
    put_u8(&b, 1);
    ck_assert_int_eq(open_buf(&b, &g, err, sizeof(err)), FD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err, "NUL"));
    b.n = 0;
    put_hdr(&b, 3, 0, 1);
    put_u64(&b, 0);
    put_u32(&b, GGUF_UINT8);
    put_u8(&b, 1);
    put_u8(&b, 0); /* so that the count check, which assumes 1-byte keys, passes */
    ck_assert_int_eq(open_buf(&b, &g, err, sizeof(err)), FD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err, "empty key"));
    b.n = 0;
    put_hdr(&b, 3, 1, 0);
    put_u64(&b, 0);
    put_u32(&b, 1);
    put_u64(&b, 32);
    put_u32(&b, GG_F32);
    put_u64(&b, 0);
    put_pad(&b, 32);
    for (int i = 0; i < 128; i++)
        put_u8(&b, 0);
    ck_assert_int_eq(open_buf(&b, &g, err, sizeof(err)), FD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err, "empty tensor name"));
    b.n = 0;
    put(&b, "GGUF", 4);
    put_u8(&b, 0);
    put_u8(&b, 0);
    put_u8(&b, 0);
    put_u8(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 0);
    ck_assert_int_eq(open_buf(&b, &g, err, sizeof(err)), FD_EUNSUP);
    ck_assert_ptr_nonnull(strstr(err, "big-endian"));
    /* an empty, valid file: no metadata, no tensors */
    b.n = 0;
    put_hdr(&b, 3, 0, 0);
    ck_assert_int_eq(open_buf(&b, &g, err, sizeof(err)), 0);
    ck_assert_int_eq(gguf_n_kv(g), 0);
    ck_assert_ptr_null(gguf_find(g, "x"));
    ck_assert_ptr_null(gguf_find_tensor(g, "x"));
    gguf_close(g);
    free(b.p);
}
END_TEST

/* ---- the damage generator --------------------------------------------------------------- */

/* Where every field of a good file lies, found by an independent walk of the format. */
struct kv_at {
    uint64_t keylen, key, key_n, type, val;
    uint32_t vtype, etype;
};
struct t_at {
    uint64_t namelen, name, name_n, ndims, dims, type, offset;
    uint32_t nd;
};
struct layout {
    int n_kv, n_t;
    struct kv_at kv[64];
    struct t_at t[64];
    uint64_t info_end, data_end;
};

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void wr64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

static size_t fixed_size(uint32_t t)
{
    static const size_t s[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return s[t];
}

static uint64_t skip_value(const uint8_t *p, uint64_t o, uint32_t t)
{
    if (t == GGUF_STRING)
        return o + 8 + rd64(p + o);
    if (t != GGUF_ARRAY)
        return o + fixed_size(t);
    uint32_t et = rd32(p + o);
    uint64_t n = rd64(p + o + 4);
    o += 12;
    for (uint64_t i = 0; i < n; i++)
        o = skip_value(p, o, et);
    return o;
}

static void map_layout(const uint8_t *p, struct layout *L)
{
    memset(L, 0, sizeof(*L));
    L->n_t = (int)rd64(p + 8);
    L->n_kv = (int)rd64(p + 16);
    ck_assert(L->n_kv <= 64 && L->n_t <= 64);
    uint64_t o = 24;
    for (int i = 0; i < L->n_kv; i++) {
        struct kv_at *k = &L->kv[i];
        k->keylen = o;
        k->key_n = rd64(p + o);
        k->key = o + 8;
        k->type = k->key + k->key_n;
        k->vtype = rd32(p + k->type);
        k->val = k->type + 4;
        if (k->vtype == GGUF_ARRAY)
            k->etype = rd32(p + k->val);
        o = skip_value(p, k->val, k->vtype);
    }
    uint64_t end = 0;
    for (int i = 0; i < L->n_t; i++) {
        struct t_at *t = &L->t[i];
        t->namelen = o;
        t->name_n = rd64(p + o);
        t->name = o + 8;
        t->ndims = t->name + t->name_n;
        t->nd = rd32(p + t->ndims);
        t->dims = t->ndims + 4;
        t->type = t->dims + 8 * t->nd;
        t->offset = t->type + 4;
        o = t->offset + 8;
    }
    L->info_end = o;
    uint64_t data = (o + 31) / 32 * 32;
    for (int i = 0; i < L->n_t; i++) {
        struct t_at *t = &L->t[i];
        uint64_t n = 4;
        for (uint32_t d = 0; d < t->nd; d++)
            n *= rd64(p + t->dims + 8 * d);
        uint64_t e = data + rd64(p + t->offset) + n;
        if (e > end)
            end = e;
    }
    L->data_end = end;
}

static int find_kv(const uint8_t *p, const struct layout *L, const char *key)
{
    for (int i = 0; i < L->n_kv; i++)
        if (L->kv[i].key_n == strlen(key) && memcmp(p + L->kv[i].key, key, L->kv[i].key_n) == 0)
            return i;
    ck_abort_msg("key %s not in the file", key);
    return -1;
}

static int find_t(const uint8_t *p, const struct layout *L, const char *name)
{
    for (int i = 0; i < L->n_t; i++)
        if (L->t[i].name_n == strlen(name) && memcmp(p + L->t[i].name, name, L->t[i].name_n) == 0)
            return i;
    ck_abort_msg("tensor %s not in the file", name);
    return -1;
}

/* One damage: a name, how to apply it to a fresh copy, and the exact code expected along
 * with a phrase the message must contain. */
struct damage {
    const char *what;
    int code;
    const char *phrase;
};

static void expect(const uint8_t *bytes, size_t size, const struct damage *d)
{
    char err[512];
    int rc = open_copy(bytes, size, err, sizeof(err));
    ck_assert_msg(rc == d->code, "%s: got %d (%s), want %d; message: %s", d->what, rc,
                  fd_strerror(rc), d->code, err);
    if (rc) {
        ck_assert_msg(strncmp(err, "damaged.gguf: ", 14) == 0, "%s: message '%s' lacks the file",
                      d->what, err);
        ck_assert_msg(strstr(err, d->phrase) != NULL, "%s: message '%s' lacks '%s'", d->what,
                      err, d->phrase);
    }
}

START_TEST(test_damage_stories)
{
    size_t size;
    const uint8_t *good = slurp(tu_shared("models/stories260K.gguf", 1), &size);
    struct layout L;
    map_layout(good, &L);
    ck_assert_int_eq(L.n_kv, 19);
    ck_assert_int_eq(L.n_t, 48);
    ck_assert_uint_eq(L.data_end, size);
    uint8_t *p = malloc(size);
    ck_assert(p != NULL);
#define FRESH() memcpy(p, good, size)
#define CHECK(code, phrase, what) expect(p, size, &(struct damage){what, code, phrase})

    FRESH();
    CHECK(0, "", "the good file");

    /* header */
    FRESH(); p[0] = 'X';
    CHECK(FD_EFORMAT, "bad magic", "bad magic");
    FRESH(); memcpy(p, "GGML", 4);
    CHECK(FD_EFORMAT, "bad magic", "ggml magic");
    FRESH(); wr32(p + 4, 1);
    CHECK(FD_EVERSION, "version 1 is not supported", "version 1");
    FRESH(); wr32(p + 4, 4);
    CHECK(FD_EVERSION, "version 4", "version 4");
    FRESH(); wr32(p + 4, 0);
    CHECK(FD_EVERSION, "version 0", "version 0");
    FRESH(); wr32(p + 4, 0x03000000u);
    CHECK(FD_EUNSUP, "big-endian", "big-endian");

    /* absurd counts: refused before anything is allocated for them */
    FRESH(); wr64(p + 16, 1ull << 40);
    CHECK(FD_ETRUNC, "metadata count 1099511627776", "n_kv 2^40");
    FRESH(); wr64(p + 16, UINT64_MAX);
    CHECK(FD_ERANGE, "metadata count 18446744073709551615 at offset 16 overflows", "n_kv -1");
    FRESH(); wr64(p + 8, 1ull << 35);
    CHECK(FD_ETRUNC, "tensor count", "n_tensors 2^35");
    FRESH(); wr64(p + 8, 1ull << 63);
    CHECK(FD_ERANGE, "tensor count 9223372036854775808 at offset 8 overflows", "n_tensors 2^63");
    FRESH(); wr64(p + 16, size / 14 - 10); wr64(p + 8, size / 33 - 10);
    CHECK(FD_ETRUNC, "metadata entries and", "n_kv and n_tensors together too many");

    /* strings and keys */
    int arch = find_kv(good, &L, "general.architecture");
    FRESH(); wr64(p + L.kv[arch].keylen, 1ull << 63);
    CHECK(FD_ERANGE, "key length 9223372036854775808", "key length 2^63");
    FRESH(); wr64(p + L.kv[arch].keylen, UINT64_MAX - 3);
    CHECK(FD_ERANGE, "overflows", "key length -4");
    FRESH(); wr64(p + L.kv[arch].keylen, size);
    CHECK(FD_ETRUNC, "runs past the end", "key length = file size");
    FRESH(); wr64(p + L.kv[arch].val, 1ull << 62);
    CHECK(FD_ETRUNC, "string value of 4611686018427387904 bytes", "string length 2^62");
    FRESH(); wr64(p + L.kv[arch].val, 0x8000000000000005ull);
    CHECK(FD_ERANGE, "string value length", "string length 2^63+5");
    FRESH(); p[L.kv[arch].key + 3] = 0;
    CHECK(FD_EFORMAT, "contains a NUL byte", "NUL in a key");

    /* arrays */
    int toks = find_kv(good, &L, "tokenizer.ggml.tokens");
    int scores = find_kv(good, &L, "tokenizer.ggml.scores");
    FRESH(); wr64(p + L.kv[toks].val + 4, 1ull << 62);
    CHECK(FD_ETRUNC, "array length 4611686018427387904", "string array count 2^62");
    FRESH(); wr64(p + L.kv[toks].val + 4, UINT64_MAX);
    CHECK(FD_ERANGE, "array length 18446744073709551615", "string array count -1");
    FRESH(); wr64(p + L.kv[toks].val + 4, 1000000);
    CHECK(FD_ETRUNC, "needs at least 8 bytes per item", "string array count 1e6");
    FRESH(); wr64(p + L.kv[scores].val + 4, 1ull << 62);
    CHECK(FD_ETRUNC, "4611686018427387904 FLOAT32 values", "float array count 2^62");
    FRESH(); wr64(p + L.kv[scores].val + 4, 1ull << 63);
    CHECK(FD_ERANGE, "array length 9223372036854775808", "float array count 2^63");
    FRESH(); wr32(p + L.kv[scores].val, 13);
    CHECK(FD_EFORMAT, "unknown array element type 13", "array element type 13");
    FRESH(); wr64(p + L.kv[toks].val + 12 + 8 + 5, UINT64_MAX);
    CHECK(FD_ERANGE, "array string length", "token 1 length -1");
    FRESH(); wr64(p + L.kv[toks].val + 12 + 8 + 5, size);
    CHECK(FD_ETRUNC, "(key 'tokenizer.ggml.tokens', array element 1)",
          "token 1 length = file size");

    /* value types */
    int bc = find_kv(good, &L, "llama.block_count");
    FRESH(); wr32(p + L.kv[bc].type, 13);
    CHECK(FD_EFORMAT, "unknown value type 13", "value type 13");
    FRESH(); wr32(p + L.kv[bc].type, UINT32_MAX);
    CHECK(FD_EFORMAT, "unknown value type 4294967295", "value type -1");

    /* duplicate keys: bos and eos ids have keys of the same length */
    int bos = find_kv(good, &L, "tokenizer.ggml.bos_token_id");
    int eos = find_kv(good, &L, "tokenizer.ggml.eos_token_id");
    FRESH(); memcpy(p + L.kv[eos].key, good + L.kv[bos].key, L.kv[bos].key_n);
    CHECK(FD_EDUP, "duplicate key", "duplicate key");
    {
        char err[512];
        open_copy(p, size, err, sizeof(err));
        ck_assert_ptr_nonnull(strstr(err, "key 'tokenizer.ggml.bos_token_id'"));
    }

    /* general.alignment: llama.block_count has the same key length */
    ck_assert_uint_eq(strlen("general.alignment"), L.kv[bc].key_n);
    FRESH(); memcpy(p + L.kv[bc].key, "general.alignment", 17); wr32(p + L.kv[bc].val, 32);
    CHECK(0, "", "general.alignment 32");
    FRESH(); memcpy(p + L.kv[bc].key, "general.alignment", 17); wr32(p + L.kv[bc].val, 0);
    CHECK(FD_ERANGE, "general.alignment 0", "alignment 0");
    FRESH(); memcpy(p + L.kv[bc].key, "general.alignment", 17); wr32(p + L.kv[bc].val, 24);
    CHECK(FD_ERANGE, "not a power of two", "alignment 24");
    FRESH(); memcpy(p + L.kv[bc].key, "general.alignment", 17);
    wr32(p + L.kv[bc].type, GGUF_FLOAT32);
    CHECK(FD_ETYPE, "general.alignment has type FLOAT32", "alignment stored as float");
    FRESH(); memcpy(p + L.kv[bc].key, "general.alignment", 17);
    wr32(p + L.kv[bc].type, GGUF_INT32); wr32(p + L.kv[bc].val, (uint32_t)-32);
    CHECK(FD_ERANGE, "negative", "alignment -32");

    /* tensors */
    int emb = find_t(good, &L, "token_embd.weight");
    int out = find_t(good, &L, "output.weight");
    int q0 = find_t(good, &L, "blk.0.attn_q.weight");
    int q1 = find_t(good, &L, "blk.1.attn_q.weight");
    int last = L.n_t - 1;
    FRESH(); memcpy(p + L.t[q1].name, good + L.t[q0].name, L.t[q0].name_n);
    CHECK(FD_EDUP, "duplicate tensor name", "duplicate tensor name");
    FRESH(); wr64(p + L.t[emb].namelen, 1ull << 63);
    CHECK(FD_ERANGE, "tensor name length", "tensor name length 2^63");
    FRESH(); wr32(p + L.t[emb].ndims, 0);
    CHECK(FD_ESHAPE, "n_dims 0", "n_dims 0");
    FRESH(); wr32(p + L.t[emb].ndims, 5);
    CHECK(FD_ESHAPE, "n_dims 5", "n_dims 5");
    FRESH(); wr64(p + L.t[emb].dims, 0);
    CHECK(FD_ESHAPE, "dimension 0 is 0", "ne[0] = 0");
    FRESH(); wr64(p + L.t[emb].dims + 8, 0);
    CHECK(FD_ESHAPE, "dimension 1 is 0", "ne[1] = 0");
    FRESH(); wr64(p + L.t[emb].dims + 8, (uint64_t)-5);
    CHECK(FD_ESHAPE, "dimension 1 is -5", "ne[1] = -5");
    FRESH(); wr64(p + L.t[emb].dims, 1ull << 32); wr64(p + L.t[emb].dims + 8, 1ull << 32);
    CHECK(FD_ERANGE, "element count overflows", "2^32 x 2^32 elements");
    FRESH(); wr64(p + L.t[emb].dims + 8, 1ull << 56);
    CHECK(FD_ERANGE, "byte size of", "2^62 F32 elements");
    FRESH(); wr64(p + L.t[emb].dims + 8, 1ull << 40);
    CHECK(FD_ETRUNC, "runs past the end", "2^46 elements, no overflow");
    FRESH(); wr32(p + L.t[emb].type, 4);
    CHECK(FD_EUNSUP, "unknown tensor type 4", "tensor type 4 (removed Q4_2)");
    FRESH(); wr32(p + L.t[emb].type, 99);
    CHECK(FD_EUNSUP, "unknown tensor type 99", "tensor type 99");
    FRESH(); wr32(p + L.t[emb].type, UINT32_MAX);
    CHECK(FD_EUNSUP, "unknown tensor type 4294967295", "tensor type -1");
    FRESH(); wr32(p + L.t[emb].type, GG_Q4_K);
    CHECK(FD_ESHAPE, "not a multiple of the Q4_K block size 256", "ne[0] 64 for Q4_K");
    FRESH(); wr32(p + L.t[q0].type, GG_Q8_0); wr64(p + L.t[q0].dims, 48);
    CHECK(FD_ESHAPE, "not a multiple of the Q8_0 block size 32", "ne[0] 48 for Q8_0");
    FRESH(); wr32(p + L.t[emb].type, GG_F16);
    CHECK(0, "", "F16 embedding (smaller, still inside)");
    FRESH(); wr64(p + L.t[last].offset, rd64(good + L.t[last].offset) + 32);
    CHECK(FD_ETRUNC, "runs past the end of the file", "last tensor moved past the end");
    FRESH(); wr64(p + L.t[last].offset, 1ull << 40);
    CHECK(FD_ETRUNC, "runs past the end of the file", "tensor offset 2^40");
    FRESH(); wr64(p + L.t[last].offset, (1ull << 63) - 32);
    CHECK(FD_ERANGE, "data range overflows", "tensor offset 2^63-32");
    FRESH(); wr64(p + L.t[last].offset, UINT64_MAX - 31);
    CHECK(FD_ERANGE, "data offset", "tensor offset -32");
    FRESH(); wr64(p + L.t[out].offset, rd64(good + L.t[out].offset) + 4);
    CHECK(FD_EFORMAT, "is not a multiple of the alignment 32", "misaligned tensor");
    FRESH(); wr64(p + L.t[out].offset, 0);
    CHECK(FD_EFORMAT, "overlaps tensor", "output.weight on top of token_embd.weight");
    FRESH(); wr64(p + L.t[q1].offset, rd64(good + L.t[q0].offset) + 32);
    CHECK(FD_EFORMAT, "overlaps tensor", "partial overlap");

    /* truncation: every offset through the metadata and tensor table, a sample after */
    struct damage tr = {"truncation", FD_ETRUNC, "truncated"};
    char what[64];
    tr.what = what;
    for (size_t n = 0; n < L.info_end + 64; n++) {
        snprintf(what, sizeof(what), "truncated to %zu bytes", n);
        expect(good, n, &tr);
    }
    for (size_t n = L.info_end + 64; n < size; n += 4099) {
        snprintf(what, sizeof(what), "truncated to %zu bytes", n);
        expect(good, n, &tr);
    }
    snprintf(what, sizeof(what), "truncated by one byte");
    expect(good, size - 1, &tr);
#undef FRESH
#undef CHECK
    free(p);
    free((void *)good);
}
END_TEST

/* The vocabularies have no tensors: truncation anywhere in their metadata is caught too, and
 * a bool that is neither 0 nor 1 is refused. */
START_TEST(test_damage_vocab)
{
    size_t size;
    const uint8_t *good = slurp(tu_shared("tokenizer-tests/ggml-vocab-llama-spm.gguf", 1), &size);
    struct layout L;
    map_layout(good, &L);
    ck_assert_int_eq(L.n_kv, 22);
    ck_assert_uint_eq(L.info_end, size);
    uint8_t *p = malloc(size);
    memcpy(p, good, size);
    int ab = find_kv(good, &L, "tokenizer.ggml.add_bos_token");
    p[L.kv[ab].val] = 2;
    expect(p, size, &(struct damage){"bool 2", FD_EFORMAT, "bool value 2"});
    char what[64];
    struct damage tr = {what, FD_ETRUNC, "truncated"};
    for (size_t n = 0; n < size; n += (n < 2048 ? 1 : 3571)) {
        snprintf(what, sizeof(what), "vocab truncated to %zu bytes", n);
        expect(good, n, &tr);
    }
    free(p);
    free((void *)good);
}
END_TEST

/* Random byte damage in the header region: any outcome but a crash or an overrun is fine,
 * and a file that opens is walked in full. */
START_TEST(test_random_damage)
{
    size_t size;
    const uint8_t *good = slurp(tu_shared("models/stories260K.gguf", 1), &size);
    struct layout L;
    map_layout(good, &L);
    uint8_t *p = malloc(size);
    uint64_t seed = 12345;
    char err[512];
    int opened = 0;
    for (int iter = 0; iter < 1500; iter++) {
        memcpy(p, good, size);
        int flips = 1 + (int)(tu_rand64(&seed) % 4);
        for (int k = 0; k < flips; k++) {
            size_t at = tu_rand64(&seed) % L.info_end;
            p[at] = (uint8_t)tu_rand64(&seed);
        }
        size_t n = tu_rand64(&seed) % 8 ? size : tu_rand64(&seed) % size;
        int rc = open_copy(p, n, err, sizeof(err));
        if (rc == 0)
            opened++;
        else
            ck_assert_msg(rc <= FD_EFORMAT && rc >= FD_ECONFIG, "rc %d: %s", rc, err);
    }
    ck_assert_int_gt(opened, 0);
    free(p);
    free((void *)good);
}
END_TEST

static const char *const shared_files[] = {
    "models/stories260K.gguf", "models/stories260K-ggml-org.gguf", "models/stories260K.bin",
    "tokenizer-tests/ggml-vocab-llama-spm.gguf", "tokenizer-tests/ggml-vocab-gpt-2.gguf",
};

/* The synthetic cases run everywhere; the cases on real files only when ../shared is there
 * (a skip, exit 77, otherwise; a failure under FUSIOND_REQUIRE_SHARED=1).  Resolved here,
 * before Check forks, so that the skip is the program's, not a test's error. */
int main(void)
{
    const char *missing = NULL;
    for (size_t i = 0; i < FD_ARRAY_LEN(shared_files); i++)
        if (!tu_shared(shared_files[i], 0))
            missing = shared_files[i];
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("synthetic");
    tcase_add_test(tc, test_open_errors);
    tcase_add_test(tc, test_nested_and_types);
    tcase_add_test(tc, test_nesting_limit);
    tcase_add_test(tc, test_alignment_and_bool);
    tcase_add_test(tc, test_names);
    suite_add_tcase(s, tc);
    if (!missing) {
        tc = tcase_create("real files");
        tcase_add_test(tc, test_stories260k);
        tcase_add_test(tc, test_stories260k_ggml_org);
        tcase_add_test(tc, test_vocab_spm);
        tcase_add_test(tc, test_vocab_gpt2);
        tcase_add_test(tc, test_dump);
        suite_add_tcase(s, tc);
        tc = tcase_create("damage");
        tcase_set_timeout(tc, 300);
        tcase_add_test(tc, test_damage_stories);
        tcase_add_test(tc, test_damage_vocab);
        tcase_add_test(tc, test_random_damage);
        suite_add_tcase(s, tc);
    }
    int rc = tu_run(s);
    if (rc == EXIT_SUCCESS && missing)
        tu_shared(missing, 1);
    return rc;
}
