/* test_gguf_write.c: proves the GGUF writer round-trips through the reader: metadata of every
 * value type (string and nested arrays included), tensors of every ggml type byte for byte,
 * quantized tensors equal to the reference quantizer's output, alignment; and that the
 * Llama generator writes the real stories260K tensor layout, its vocabulary, deterministic
 * weights of the promised scale, and the Q4_K_M type mix. */
#include <inttypes.h>
#include <math.h>

#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"
#include "engine/gguf.h"
#include "engine/gguf_write.h"
#include "tests/testutil.h"

static gguf_t *write_and_open(gguf_w_t *w, uint8_t **bytes, size_t *size)
{
    char err[512];
    int rc = gguf_w_write_mem(w, bytes, size, err, sizeof(err));
    ck_assert_msg(rc == 0, "write: %s", err);
    gguf_t *g = NULL;
    rc = gguf_open_mem(&g, *bytes, *size, "written.gguf", err, sizeof(err));
    ck_assert_msg(rc == 0, "read back: %s", err);
    return g;
}

static bool str_is(gguf_str_t s, const char *want, size_t len)
{
    return s.len == len && memcmp(s.ptr, want, len) == 0;
}

START_TEST(test_metadata_roundtrip)
{
    gguf_w_t *w;
    ck_assert_int_eq(gguf_w_new(&w), 0);
    ck_assert_int_eq(gguf_w_add_u8(w, "k.u8", 250), 0);
    ck_assert_int_eq(gguf_w_add_i8(w, "k.i8", -100), 0);
    ck_assert_int_eq(gguf_w_add_u16(w, "k.u16", 65000), 0);
    ck_assert_int_eq(gguf_w_add_i16(w, "k.i16", -32000), 0);
    ck_assert_int_eq(gguf_w_add_u32(w, "k.u32", 4000000000u), 0);
    ck_assert_int_eq(gguf_w_add_i32(w, "k.i32", -2000000000), 0);
    ck_assert_int_eq(gguf_w_add_u64(w, "k.u64", 0xfedcba9876543210ull), 0);
    ck_assert_int_eq(gguf_w_add_i64(w, "k.i64", INT64_MIN), 0);
    ck_assert_int_eq(gguf_w_add_f32(w, "k.f32", 3.25f), 0);
    ck_assert_int_eq(gguf_w_add_f64(w, "k.f64", -1e300), 0);
    ck_assert_int_eq(gguf_w_add_bool(w, "k.true", true), 0);
    ck_assert_int_eq(gguf_w_add_bool(w, "k.false", false), 0);
    ck_assert_int_eq(gguf_w_add_str(w, "k.str", "h\xc3\xa9llo"), 0);
    ck_assert_int_eq(gguf_w_add_strn(w, "k.bin", "a\0b", 3), 0);
    ck_assert_int_eq(gguf_w_add_str(w, "k.empty", ""), 0);
    const uint8_t a_u8[] = {0, 1, 255};
    const int8_t a_i8[] = {-128, 0, 127};
    const uint16_t a_u16[] = {1, 65535};
    const int16_t a_i16[] = {-32768, 5};
    const uint32_t a_u32[] = {7, 0xffffffffu, 9};
    const int32_t a_i32[] = {-1, 2, -3, 4};
    const uint64_t a_u64[] = {UINT64_MAX};
    const int64_t a_i64[] = {INT64_MIN, INT64_MAX};
    const float a_f32[] = {0.5f, -INFINITY, 1e-30f};
    const double a_f64[] = {M_PI, -0.0};
    const uint8_t a_bool[] = {1, 0, 1};
    const char *a_str[] = {"<unk>", "", "\xe2\x96\x81the", "x y"};
    ck_assert_int_eq(gguf_w_add_arr(w, "a.u8", GGUF_UINT8, a_u8, 3), 0);
    ck_assert_int_eq(gguf_w_add_arr(w, "a.i8", GGUF_INT8, a_i8, 3), 0);
    ck_assert_int_eq(gguf_w_add_arr(w, "a.u16", GGUF_UINT16, a_u16, 2), 0);
    ck_assert_int_eq(gguf_w_add_arr(w, "a.i16", GGUF_INT16, a_i16, 2), 0);
    ck_assert_int_eq(gguf_w_add_arr(w, "a.u32", GGUF_UINT32, a_u32, 3), 0);
    ck_assert_int_eq(gguf_w_add_arr(w, "a.i32", GGUF_INT32, a_i32, 4), 0);
    ck_assert_int_eq(gguf_w_add_arr(w, "a.u64", GGUF_UINT64, a_u64, 1), 0);
    ck_assert_int_eq(gguf_w_add_arr(w, "a.i64", GGUF_INT64, a_i64, 2), 0);
    ck_assert_int_eq(gguf_w_add_arr(w, "a.f32", GGUF_FLOAT32, a_f32, 3), 0);
    ck_assert_int_eq(gguf_w_add_arr(w, "a.f64", GGUF_FLOAT64, a_f64, 2), 0);
    ck_assert_int_eq(gguf_w_add_arr(w, "a.bool", GGUF_BOOL, a_bool, 3), 0);
    ck_assert_int_eq(gguf_w_add_arr(w, "a.none", GGUF_INT32, NULL, 0), 0);
    ck_assert_int_eq(gguf_w_add_str_arr(w, "a.str", a_str, 4), 0);
    const void *inner[] = {a_i32, a_i32, a_u8};
    const uint64_t inner_n[] = {4, 0, 2};
    ck_assert_int_eq(gguf_w_add_arr_arr(w, "a.nested", GGUF_INT32, 2, inner, inner_n), 0);
    const char *s0[] = {"p", "q"}, *s1[] = {"r"};
    const void *sinner[] = {s0, s1};
    const uint64_t sinner_n[] = {2, 1};
    ck_assert_int_eq(gguf_w_add_arr_arr(w, "a.nstr", GGUF_STRING, 2, sinner, sinner_n), 0);
    /* refusals */
    ck_assert_int_eq(gguf_w_add_u8(w, "k.u8", 1), FD_EDUP);
    ck_assert_int_eq(gguf_w_add_u8(w, "", 1), -EINVAL);
    ck_assert_int_eq(gguf_w_add_arr(w, "a.bad", GGUF_STRING, a_str, 1), -EINVAL);
    ck_assert_int_eq(gguf_w_add_arr(w, "a.bad", GGUF_ARRAY, a_u8, 1), -EINVAL);
    ck_assert_int_eq(gguf_w_n_kv(w), 30);

    uint8_t *bytes;
    size_t size;
    gguf_t *g = write_and_open(w, &bytes, &size);
    ck_assert_uint_eq(gguf_version(g), 3);
    ck_assert_int_eq(gguf_n_kv(g), 30);
    ck_assert_int_eq(gguf_n_tensors(g), 0);
    ck_assert_str_eq(gguf_kv_key(gguf_kv_at(g, 0)), "k.u8");
    ck_assert_str_eq(gguf_kv_key(gguf_kv_at(g, 29)), "a.nstr");
    uint64_t u;
    int64_t i;
    double d;
    bool b;
    gguf_str_t s;
    static const struct { const char *key; int type; } types[] = {
        {"k.u8", GGUF_UINT8}, {"k.i8", GGUF_INT8}, {"k.u16", GGUF_UINT16},
        {"k.i16", GGUF_INT16}, {"k.u32", GGUF_UINT32}, {"k.i32", GGUF_INT32},
        {"k.u64", GGUF_UINT64}, {"k.i64", GGUF_INT64}, {"k.f32", GGUF_FLOAT32},
        {"k.f64", GGUF_FLOAT64}, {"k.true", GGUF_BOOL}, {"k.str", GGUF_STRING},
        {"a.u8", GGUF_ARRAY},
    };
    for (size_t k = 0; k < FD_ARRAY_LEN(types); k++)
        ck_assert_int_eq(gguf_kv_type(gguf_find(g, types[k].key)), types[k].type);
    ck_assert_int_eq(gguf_get_u64(g, "k.u8", &u), 0);
    ck_assert_uint_eq(u, 250);
    ck_assert_int_eq(gguf_get_i64(g, "k.i8", &i), 0);
    ck_assert_int_eq(i, -100);
    ck_assert_int_eq(gguf_get_u64(g, "k.u16", &u), 0);
    ck_assert_uint_eq(u, 65000);
    ck_assert_int_eq(gguf_get_i64(g, "k.i16", &i), 0);
    ck_assert_int_eq(i, -32000);
    ck_assert_int_eq(gguf_get_u64(g, "k.u32", &u), 0);
    ck_assert_uint_eq(u, 4000000000u);
    ck_assert_int_eq(gguf_get_i64(g, "k.i32", &i), 0);
    ck_assert_int_eq(i, -2000000000);
    ck_assert_int_eq(gguf_get_u64(g, "k.u64", &u), 0);
    ck_assert_uint_eq(u, 0xfedcba9876543210ull);
    ck_assert_int_eq(gguf_get_i64(g, "k.i64", &i), 0);
    ck_assert(i == INT64_MIN);
    ck_assert_int_eq(gguf_get_f64(g, "k.f32", &d), 0);
    ck_assert(d == 3.25);
    ck_assert_int_eq(gguf_get_f64(g, "k.f64", &d), 0);
    ck_assert(d == -1e300);
    ck_assert_int_eq(gguf_get_bool(g, "k.true", &b), 0);
    ck_assert(b);
    ck_assert_int_eq(gguf_get_bool(g, "k.false", &b), 0);
    ck_assert(!b);
    ck_assert_int_eq(gguf_get_str(g, "k.str", &s), 0);
    ck_assert(str_is(s, "h\xc3\xa9llo", 6));
    ck_assert_int_eq(gguf_get_str(g, "k.bin", &s), 0);
    ck_assert(str_is(s, "a\0b", 3));
    ck_assert_int_eq(gguf_get_str(g, "k.empty", &s), 0);
    ck_assert_uint_eq(s.len, 0);

    gguf_arr_t a, sub;
    ck_assert_int_eq(gguf_get_arr(g, "a.u8", &a), 0);
    ck_assert_int_eq(gguf_arr_i64(&a, 2, &i), 0);
    ck_assert_int_eq(i, 255);
    ck_assert_int_eq(gguf_get_arr(g, "a.i8", &a), 0);
    ck_assert_int_eq(gguf_arr_i64(&a, 0, &i), 0);
    ck_assert_int_eq(i, -128);
    ck_assert_int_eq(gguf_get_arr(g, "a.u16", &a), 0);
    ck_assert_int_eq(gguf_arr_i64(&a, 1, &i), 0);
    ck_assert_int_eq(i, 65535);
    ck_assert_int_eq(gguf_get_arr(g, "a.i16", &a), 0);
    ck_assert_int_eq(gguf_arr_i64(&a, 0, &i), 0);
    ck_assert_int_eq(i, -32768);
    ck_assert_int_eq(gguf_get_arr(g, "a.u32", &a), 0);
    ck_assert_int_eq(gguf_arr_i64(&a, 1, &i), 0);
    ck_assert_int_eq(i, 0xffffffffll);
    ck_assert_int_eq(gguf_get_arr(g, "a.i32", &a), 0);
    ck_assert_uint_eq(a.n, 4);
    for (uint64_t k = 0; k < 4; k++) {
        ck_assert_int_eq(gguf_arr_i64(&a, k, &i), 0);
        ck_assert_int_eq(i, a_i32[k]);
    }
    ck_assert_int_eq(gguf_get_arr(g, "a.u64", &a), 0);
    ck_assert_int_eq(gguf_arr_i64(&a, 0, &i), FD_ERANGE);
    ck_assert_int_eq(gguf_get_arr(g, "a.i64", &a), 0);
    ck_assert_int_eq(gguf_arr_i64(&a, 1, &i), 0);
    ck_assert(i == INT64_MAX);
    ck_assert_int_eq(gguf_get_arr(g, "a.f32", &a), 0);
    ck_assert_int_eq(gguf_arr_f64(&a, 1, &d), 0);
    ck_assert(isinf(d) && d < 0);
    float f;
    ck_assert_int_eq(gguf_arr_f32(&a, 2, &f), 0);
    ck_assert(f == 1e-30f);
    ck_assert_int_eq(gguf_get_arr(g, "a.f64", &a), 0);
    ck_assert_int_eq(gguf_arr_f64(&a, 0, &d), 0);
    ck_assert(d == M_PI);
    ck_assert_int_eq(gguf_arr_f64(&a, 1, &d), 0);
    ck_assert(d == 0 && signbit(d));
    ck_assert_int_eq(gguf_get_arr(g, "a.bool", &a), 0);
    ck_assert_int_eq(a.elem_type, GGUF_BOOL);
    ck_assert_uint_eq(a.n, 3);
    ck_assert_int_eq(a.data[0], 1);
    ck_assert_int_eq(a.data[1], 0);
    ck_assert_int_eq(gguf_get_arr(g, "a.none", &a), 0);
    ck_assert_uint_eq(a.n, 0);
    ck_assert_int_eq(a.elem_type, GGUF_INT32);
    ck_assert_int_eq(gguf_get_arr(g, "a.str", &a), 0);
    ck_assert_uint_eq(a.n, 4);
    for (uint64_t k = 0; k < 4; k++) {
        ck_assert_int_eq(gguf_arr_str(&a, k, &s), 0);
        ck_assert(str_is(s, a_str[k], strlen(a_str[k])));
    }
    ck_assert_int_eq(gguf_get_arr(g, "a.nested", &a), 0);
    ck_assert_int_eq(a.elem_type, GGUF_ARRAY);
    ck_assert_uint_eq(a.n, 2);
    ck_assert_int_eq(gguf_arr_arr(&a, 0, &sub), 0);
    ck_assert_uint_eq(sub.n, 4);
    ck_assert_int_eq(gguf_arr_i64(&sub, 3, &i), 0);
    ck_assert_int_eq(i, 4);
    ck_assert_int_eq(gguf_arr_arr(&a, 1, &sub), 0);
    ck_assert_uint_eq(sub.n, 0);
    ck_assert_int_eq(gguf_get_arr(g, "a.nstr", &a), 0);
    ck_assert_int_eq(gguf_arr_arr(&a, 0, &sub), 0);
    ck_assert_int_eq(gguf_arr_str(&sub, 1, &s), 0);
    ck_assert(str_is(s, "q", 1));
    ck_assert_int_eq(gguf_arr_arr(&a, 1, &sub), 0);
    ck_assert_int_eq(gguf_arr_str(&sub, 0, &s), 0);
    ck_assert(str_is(s, "r", 1));
    gguf_close(g);
    free(bytes);
    gguf_w_free(w);
}
END_TEST

/* Every ggml type, from raw bytes: the same bytes come back, at aligned offsets. */
START_TEST(test_tensors_every_type)
{
    static const int all[] = {GG_F32, GG_F16, GG_Q4_0, GG_Q4_1, GG_Q5_0, GG_Q5_1, GG_Q8_0,
                              GG_Q8_1, GG_Q2_K, GG_Q3_K, GG_Q4_K, GG_Q5_K, GG_Q6_K, GG_Q8_K,
                              GG_I8, GG_I16, GG_I32, GG_I64, GG_F64, GG_BF16};
    for (int align = 32; align <= 128; align *= 4) {
        gguf_w_t *w;
        ck_assert_int_eq(gguf_w_new(&w), 0);
        ck_assert_int_eq(gguf_w_set_alignment(w, (uint32_t)align), 0);
        ck_assert_int_eq(gguf_w_add_str(w, "general.architecture", "test"), 0);
        uint8_t *data[FD_ARRAY_LEN(all)];
        uint64_t seed = 99;
        for (size_t k = 0; k < FD_ARRAY_LEN(all); k++) {
            int64_t ne[3] = {gg_block_elems(all[k]) * 2, 3, (int64_t)k % 2 + 1};
            size_t nb = (size_t)gg_row_bytes(all[k], (uint64_t)ne[0]) * 3 * (size_t)ne[2];
            data[k] = malloc(nb);
            for (size_t j = 0; j < nb; j++)
                data[k][j] = (uint8_t)tu_rand64(&seed);
            char name[32];
            snprintf(name, sizeof(name), "t.%s", gg_type_name(all[k]));
            ck_assert_int_eq(gguf_w_add_tensor(w, name, all[k], k % 2 ? 3 : 2, ne, data[k],
                                               NULL, NULL), 0);
        }
        uint8_t *bytes;
        size_t size;
        gguf_t *g = write_and_open(w, &bytes, &size);
        ck_assert_uint_eq(gguf_alignment(g), (uint64_t)align);
        uint64_t a;
        ck_assert_int_eq(gguf_get_u64(g, "general.alignment", &a) == 0, align != 32);
        ck_assert_int_eq(gguf_data_offset(g) % (uint64_t)align, 0);
        ck_assert_int_eq(gguf_n_tensors(g), (int64_t)FD_ARRAY_LEN(all));
        for (size_t k = 0; k < FD_ARRAY_LEN(all); k++) {
            const gguf_tensor_t *t = gguf_tensor_at(g, (int64_t)k);
            ck_assert_int_eq(t->type, all[k]);
            ck_assert_int_eq(t->n_dims, k % 2 ? 3 : 2);
            ck_assert_int_eq(t->ne[0], gg_block_elems(all[k]) * 2);
            ck_assert_int_eq(t->ne[1], 3);
            ck_assert_int_eq(t->ne[2], (int64_t)k % 2 + 1);
            ck_assert_uint_eq(t->offset % (uint64_t)align, 0);
            ck_assert(memcmp(t->data, data[k], t->nbytes) == 0);
            free(data[k]);
        }
        gguf_close(g);
        free(bytes);
        gguf_w_free(w);
    }
}
END_TEST

struct ramp {
    int calls;
    int fail_at;
};

static int fill_ramp(void *ud, const char *name, int64_t row, float *dst, int64_t n)
{
    struct ramp *r = ud;
    __atomic_add_fetch(&r->calls, 1, __ATOMIC_RELAXED);
    if (row == r->fail_at)
        return FD_ECANCEL;
    uint64_t s = (uint64_t)row * 7919 + (uint64_t)strlen(name);
    for (int64_t i = 0; i < n; i++)
        dst[i] = tu_randf(&s) * (float)(1 + row);
    return 0;
}

/* Filled tensors are exactly what the reference quantizer makes of the same floats, and
 * dequantize back close to them; the result is the same with 1 or 3 writer threads. */
START_TEST(test_tensors_filled)
{
    static const int types[] = {GG_F32, GG_F16, GG_BF16, GG_Q8_0, GG_Q4_0, GG_Q4_1, GG_Q5_0,
                                GG_Q5_1, GG_Q4_K, GG_Q6_K};
    /* relative RMS error bounds: the format's step size for inputs in [-1, 1) x row scale */
    static const double tol[] = {0, 1e-3, 8e-3, 1e-2, 0.12, 0.08, 0.06, 0.04, 0.08, 0.02};
    uint8_t *out[2];
    size_t outsz[2];
    for (int pass = 0; pass < 2; pass++) {
        gguf_w_t *w;
        ck_assert_int_eq(gguf_w_new(&w), 0);
        ck_assert_int_eq(gguf_w_set_threads(w, pass ? 3 : 1), 0);
        struct ramp r = {0, -1};
        for (size_t k = 0; k < FD_ARRAY_LEN(types); k++) {
            int64_t ne[2] = {512, 5};
            ck_assert_int_eq(gguf_w_add_tensor(w, gg_type_name(types[k]), types[k], 2, ne, NULL,
                                               fill_ramp, &r), 0);
        }
        gguf_t *g = write_and_open(w, &out[pass], &outsz[pass]);
        ck_assert_int_eq(r.calls, 5 * (int)FD_ARRAY_LEN(types));
        float x[512], y[512];
        uint8_t q[2048];
        for (size_t k = 0; k < FD_ARRAY_LEN(types); k++) {
            const gguf_tensor_t *t = gguf_find_tensor(g, gg_type_name(types[k]));
            ck_assert_ptr_nonnull(t);
            size_t rb = (size_t)gg_row_bytes(types[k], 512);
            double e2 = 0, x2 = 0;
            for (int row = 0; row < 5; row++) {
                struct ramp dummy = {0, -1};
                fill_ramp(&dummy, t->name, row, x, 512);
                ck_assert_int_eq(fq_quantize_row(types[k], x, q, 512), 0);
                const uint8_t *at = (const uint8_t *)t->data + (size_t)row * rb;
                ck_assert_msg(memcmp(at, q, rb) == 0, "%s row %d differs", t->name, row);
                ck_assert_int_eq(fq_dequantize_row(types[k], at, y, 512), 0);
                for (int i = 0; i < 512; i++) {
                    e2 += (double)(y[i] - x[i]) * (y[i] - x[i]);
                    x2 += (double)x[i] * x[i];
                }
            }
            double rel = sqrt(e2 / x2);
            ck_assert_msg(rel <= tol[k], "%s: relative RMS error %g > %g", t->name, rel, tol[k]);
            if (types[k] != GG_F32)
                ck_assert_msg(rel > 0, "%s: no rounding at all?", t->name);
        }
        gguf_close(g);
        gguf_w_free(w);
    }
    ck_assert_uint_eq(outsz[0], outsz[1]);
    ck_assert(memcmp(out[0], out[1], outsz[0]) == 0);
    free(out[0]);
    free(out[1]);
}
END_TEST

START_TEST(test_writer_errors)
{
    gguf_w_t *w;
    char err[512];
    ck_assert_int_eq(gguf_w_new(&w), 0);
    int64_t ne[4] = {64, 2, 1, 1};
    float data[128] = {0};
    struct ramp r = {0, 3};
    ck_assert_int_eq(gguf_w_set_alignment(w, 48), -EINVAL);
    ck_assert_int_eq(gguf_w_set_alignment(w, 0), -EINVAL);
    ck_assert_int_eq(gguf_w_set_threads(w, 0), -EINVAL);
    ck_assert_int_eq(gguf_w_add_tensor(w, "a", GG_F32, 2, ne, data, NULL, NULL), 0);
    ck_assert_int_eq(gguf_w_set_alignment(w, 64), -EINVAL); /* tensors already placed */
    ck_assert_int_eq(gguf_w_add_tensor(w, "a", GG_F32, 2, ne, data, NULL, NULL), FD_EDUP);
    ck_assert_int_eq(gguf_w_add_tensor(w, "", GG_F32, 2, ne, data, NULL, NULL), -EINVAL);
    ck_assert_int_eq(gguf_w_add_tensor(w, "b", GG_F32, 2, ne, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(gguf_w_add_tensor(w, "b", 4, 2, ne, data, NULL, NULL), FD_EUNSUP);
    ck_assert_int_eq(gguf_w_add_tensor(w, "b", GG_F32, 0, ne, data, NULL, NULL), FD_ESHAPE);
    ck_assert_int_eq(gguf_w_add_tensor(w, "b", GG_F32, 5, ne, data, NULL, NULL), FD_ESHAPE);
    ck_assert_int_eq(gguf_w_add_tensor(w, "b", GG_Q4_K, 2, ne, data, NULL, NULL), FD_ESHAPE);
    int64_t zero[2] = {64, 0};
    ck_assert_int_eq(gguf_w_add_tensor(w, "b", GG_F32, 2, zero, data, NULL, NULL), FD_ESHAPE);
    int64_t huge[4] = {1ll << 40, 1ll << 30, 1, 1};
    ck_assert_int_eq(gguf_w_add_tensor(w, "b", GG_F32, 2, huge, data, NULL, NULL), FD_ERANGE);
    /* I8 has no quantizer: only raw bytes can be written */
    int64_t k256[2] = {256, 1};
    ck_assert_int_eq(gguf_w_add_tensor(w, "b", GG_I8, 2, k256, NULL, fill_ramp, &r),
                     FD_EUNSUP);
    ck_assert_int_eq(gguf_w_n_tensors(w), 1);
    ck_assert_uint_eq(gguf_w_data_bytes(w), 512);
    /* a failing fill aborts the write, and write_file leaves nothing behind */
    int64_t ne6[2] = {32, 6};
    ck_assert_int_eq(gguf_w_add_tensor(w, "c", GG_Q8_0, 2, ne6, NULL, fill_ramp, &r), 0);
    char path[] = "/tmp/test_gguf_write_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(path));
    char file[128], tmp[140];
    snprintf(file, sizeof(file), "%s/m.gguf", path);
    snprintf(tmp, sizeof(tmp), "%s.tmp", file);
    ck_assert_int_eq(gguf_w_write_file(w, file, err, sizeof(err)), FD_ECANCEL);
    ck_assert_ptr_nonnull(strstr(err, "tensor 'c' row 3"));
    ck_assert_int_ne(access(file, F_OK), 0);
    ck_assert_int_ne(access(tmp, F_OK), 0);
    r.fail_at = -1;
    ck_assert_int_eq(gguf_w_write_file(w, file, err, sizeof(err)), 0);
    gguf_t *g;
    ck_assert_int_eq(gguf_open(&g, file, err, sizeof(err)), 0);
    ck_assert_int_eq(gguf_n_tensors(g), 2);
    gguf_close(g);
    ck_assert_int_ne(access(tmp, F_OK), 0);
    unlink(file);
    rmdir(path);
    ck_assert_int_eq(gguf_w_write_file(w, "/nonexistent-dir/m.gguf", err, sizeof(err)), -ENOENT);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent-dir/m.gguf.tmp"));
    gguf_w_free(w);
}
END_TEST

/* ---- the Llama generator ---------------------------------------------------------------- */

static gguf_t *gen(gguf_w_llama_t *p, uint8_t **bytes, size_t *size)
{
    gguf_w_t *w;
    char err[512];
    ck_assert_int_eq(gguf_w_new(&w), 0);
    int rc = gguf_w_llama_add(w, p, err, sizeof(err));
    ck_assert_msg(rc == 0, "%s", err);
    gguf_t *g = write_and_open(w, bytes, size);
    gguf_w_free(w);
    return g;
}

/* The stories260K preset has exactly the tensor table of the real stories260K.gguf. */
START_TEST(test_llama_stories_layout)
{
    gguf_w_llama_t p;
    ck_assert_int_eq(gguf_w_llama_preset("STORIES260k", &p), 0);
    uint8_t *bytes;
    size_t size;
    gguf_t *g = gen(&p, &bytes, &size);
    ck_assert_int_eq(p.n_fallback, 0);
    char err[512];
    gguf_t *real = NULL;
    int rc = gguf_open(&real, tu_shared("models/stories260K.gguf", 1), err, sizeof(err));
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_int_eq(gguf_n_tensors(g), gguf_n_tensors(real));
    for (int64_t i = 0; i < gguf_n_tensors(real); i++) {
        const gguf_tensor_t *a = gguf_tensor_at(real, i);
        const gguf_tensor_t *b = gguf_find_tensor(g, a->name);
        ck_assert_msg(b != NULL, "generated model lacks %s", a->name);
        ck_assert_int_eq(a->n_dims, b->n_dims);
        for (int d = 0; d < GGUF_MAX_DIMS; d++)
            ck_assert_int_eq(a->ne[d], b->ne[d]);
        ck_assert_int_eq(b->type, GG_F32);
    }
    /* the hyperparameters the real file has, with the same values */
    static const char *const keys[] = {
        "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
        "llama.attention.head_count", "llama.attention.head_count_kv", "llama.block_count",
        "llama.rope.dimension_count", "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
    };
    for (size_t k = 0; k < FD_ARRAY_LEN(keys); k++) {
        uint32_t x, y;
        ck_assert_int_eq(gguf_get_u32(real, keys[k], &x), 0);
        ck_assert_int_eq(gguf_get_u32(g, keys[k], &y), 0);
        ck_assert_msg(x == y, "%s: %u vs %u", keys[k], x, y);
    }
    float eps;
    ck_assert_int_eq(gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps), 0);
    ck_assert_float_eq(eps, 1e-5f);
    ck_assert_int_eq(gguf_get_f32(g, "llama.rope.freq_base", &eps), 0);
    ck_assert_float_eq(eps, 10000.0f);
    gguf_str_t s;
    ck_assert_int_eq(gguf_get_str(g, "general.architecture", &s), 0);
    ck_assert(str_is(s, "llama", 5));
    ck_assert_int_eq(gguf_get_str(g, "tokenizer.ggml.model", &s), 0);
    ck_assert(str_is(s, "llama", 5));

    /* vocabulary: specials, 256 byte tokens, then distinct normal pieces */
    gguf_arr_t tok, sc, ty;
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.tokens", &tok), 0);
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.scores", &sc), 0);
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.token_type", &ty), 0);
    ck_assert_uint_eq(tok.n, 512);
    ck_assert_uint_eq(sc.n, 512);
    ck_assert_uint_eq(ty.n, 512);
    int64_t t;
    static const char *const first[3] = {"<unk>", "<s>", "</s>"};
    static const int first_type[3] = {2, 3, 3};
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(gguf_arr_str(&tok, (uint64_t)k, &s), 0);
        ck_assert(str_is(s, first[k], strlen(first[k])));
        ck_assert_int_eq(gguf_arr_i64(&ty, (uint64_t)k, &t), 0);
        ck_assert_int_eq(t, first_type[k]);
    }
    for (int b = 0; b < 256; b++) {
        char want[8];
        snprintf(want, sizeof(want), "<0x%02X>", b);
        ck_assert_int_eq(gguf_arr_str(&tok, 3 + (uint64_t)b, &s), 0);
        ck_assert(str_is(s, want, 6));
        ck_assert_int_eq(gguf_arr_i64(&ty, 3 + (uint64_t)b, &t), 0);
        ck_assert_int_eq(t, 6);
    }
    ck_assert_int_eq(gguf_arr_str(&tok, 259, &s), 0);
    ck_assert(str_is(s, "!", 1));
    ck_assert_int_eq(gguf_arr_str(&tok, 259 + 94, &s), 0);
    ck_assert(str_is(s, "\xe2\x96\x81!", 4));
    float prev = 1;
    for (uint64_t k = 259; k < 512; k++) {
        float f;
        ck_assert_int_eq(gguf_arr_i64(&ty, k, &t), 0);
        ck_assert_int_eq(t, 1);
        ck_assert_int_eq(gguf_arr_f32(&sc, k, &f), 0);
        ck_assert(f < prev);
        prev = f;
        gguf_str_t a;
        ck_assert_int_eq(gguf_arr_str(&tok, k, &a), 0);
        for (uint64_t j = 0; j < k; j++) {
            gguf_str_t b;
            gguf_arr_str(&tok, j, &b);
            ck_assert(!(a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0));
        }
    }
    bool bos;
    ck_assert_int_eq(gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &bos), 0);
    ck_assert(bos);

    /* weights: as gguf_w_llama_value says, of variance 1/ne0, norms within 1 +- 0.1 */
    const gguf_tensor_t *q = gguf_find_tensor(g, "blk.2.attn_q.weight");
    const float *v = q->data;
    double sum2 = 0;
    for (int64_t r = 0; r < q->ne[1]; r++)
        for (int64_t i = 0; i < q->ne[0]; i++) {
            float x = v[r * q->ne[0] + i];
            ck_assert(x == gguf_w_llama_value(&p, q->name, r, i, q->ne[0]));
            sum2 += (double)x * x;
        }
    double var = sum2 / (double)gguf_tensor_nelems(q);
    ck_assert_msg(fabs(var * 64 - 1) < 0.05, "variance %g, want 1/64", var);
    const gguf_tensor_t *n = gguf_find_tensor(g, "blk.0.ffn_norm.weight");
    const float *nv = n->data;
    double mean = 0;
    for (int i = 0; i < 64; i++) {
        ck_assert(nv[i] >= 0.9f && nv[i] <= 1.1f);
        mean += nv[i] / 64.0;
    }
    ck_assert(fabs(mean - 1) < 0.03);
    /* tensors are independent: two layers' q differ */
    const gguf_tensor_t *q3 = gguf_find_tensor(g, "blk.3.attn_q.weight");
    ck_assert(memcmp(q->data, q3->data, q->nbytes) != 0);

    /* the same seed gives the same bytes; another seed does not */
    uint8_t *b2;
    size_t s2;
    gguf_t *g2 = gen(&p, &b2, &s2);
    ck_assert(s2 == size && memcmp(bytes, b2, size) == 0);
    gguf_close(g2);
    free(b2);
    p.seed = 2;
    g2 = gen(&p, &b2, &s2);
    ck_assert(memcmp(gguf_find_tensor(g2, "blk.2.attn_q.weight")->data, q->data, q->nbytes));
    gguf_close(g2);
    free(b2);
    gguf_close(real);
    gguf_close(g);
    free(bytes);
}
END_TEST

/* Every weight type on a shape the K-quants fit: the types used are the ones asked for (the
 * Q4_K_M and Q5_K_M mixes exactly as llama.cpp's recipes), and each quantized matrix
 * dequantizes to the F32 model's values within its format's error. */
START_TEST(test_llama_types)
{
    static const struct { const char *name; int type; double tol; } cases[] = {
        {"F16", GG_F16, 1e-3}, {"BF16", GG_BF16, 8e-3}, {"Q8_0", GG_Q8_0, 1e-2},
        {"Q4_0", GG_Q4_0, 0.12}, {"Q4_K", GG_Q4_K, 0.1}, {"Q6_K", GG_Q6_K, 0.03},
        {"Q4_K_M", GGUF_W_MIX_Q4_K_M, 0.1}, {"Q5_K", GG_Q5_K, 0.05},
        {"Q5_K_M", GGUF_W_MIX_Q5_K_M, 0.05},
        {"IQ4_NL", GG_IQ4_NL, 0.12}, {"IQ4_XS", GG_IQ4_XS, 0.12}, {"MXFP4", GG_MXFP4, 0.2},
    };
    gguf_w_llama_t p = {.name = "t", .n_embd = 256, .n_layer = 8, .n_head = 4, .n_head_kv = 2,
                        .n_ff = 512, .n_vocab = 300, .n_ctx = 64, .rope_base = 10000,
                        .norm_eps = 1e-5f, .tied = false, .wtype = GG_F32, .seed = 7};
    uint8_t *fb;
    size_t fsz;
    gguf_t *ref = gen(&p, &fb, &fsz);
    ck_assert_int_eq(gguf_n_tensors(ref), 3 + 8 * 9);
    float *x = malloc(512 * sizeof(float));
    for (size_t c = 0; c < FD_ARRAY_LEN(cases); c++) {
        p.wtype = cases[c].type;
        uint8_t *b;
        size_t sz;
        gguf_t *g = gen(&p, &b, &sz);
        ck_assert_int_eq(p.n_fallback, 0);
        ck_assert_uint_lt(sz, fsz);
        for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
            const gguf_tensor_t *t = gguf_tensor_at(g, i);
            const gguf_tensor_t *r = gguf_find_tensor(ref, t->name);
            int want = cases[c].type;
            if (t->n_dims == 1) {
                want = GG_F32;
            } else if (want == GGUF_W_MIX_Q4_K_M || want == GGUF_W_MIX_Q5_K_M) {
                const int base = want == GGUF_W_MIX_Q4_K_M ? GG_Q4_K : GG_Q5_K;
                int il = -1;
                sscanf(t->name, "blk.%d.", &il);
                /* llama.cpp's use_more_bits(il, 8): il < 1, il >= 7, (il - 1) % 3 == 2 */
                bool more = il == 0 || il == 3 || il == 6 || il == 7;
                want = base;
                if (strcmp(t->name, "output.weight") == 0 ||
                    (more && (strstr(t->name, "attn_v") || strstr(t->name, "ffn_down"))))
                    want = GG_Q6_K;
            }
            ck_assert_msg(t->type == want, "%s %s: type %s, want %s", cases[c].name, t->name,
                          gg_type_name(t->type), gg_type_name(want));
            size_t rb = (size_t)gg_row_bytes(t->type, (uint64_t)t->ne[0]);
            double e2 = 0, x2 = 0;
            for (int64_t row = 0; row < t->ne[1]; row++) {
                const float *rv = (const float *)r->data + row * r->ne[0];
                ck_assert_int_eq(fq_dequantize_row(t->type, (const uint8_t *)t->data +
                                                   (size_t)row * rb, x, t->ne[0]), 0);
                for (int64_t k = 0; k < t->ne[0]; k++) {
                    e2 += (double)(x[k] - rv[k]) * (x[k] - rv[k]);
                    x2 += (double)rv[k] * rv[k];
                }
            }
            double rel = sqrt(e2 / x2);
            ck_assert_msg(rel <= cases[c].tol, "%s %s: relative RMS error %g > %g",
                          cases[c].name, t->name, rel, cases[c].tol);
        }
        uint32_t ft;
        ck_assert_int_eq(gguf_get_u32(g, "general.file_type", &ft), 0);
        gguf_close(g);
        free(b);
    }
    free(x);
    gguf_close(ref);
    free(fb);
}
END_TEST

/* The mixes' and the fallback's types, tensor by tensor, as llama.cpp's quantizer picks them
 * (llama_model_quantize of each model's F32 file by node-llama-cpp 3.22.1's libllama, ftypes
 * Q4_K_M, Q5_K_M, IQ4_XS and the pure Q3_K): 8 experts put attn_k / attn_v at Q8_0 and
 * attn_output at Q5_K (Q4_K_M), a shared expert's ffn_down takes ffn_down's extra bits, phi3's
 * attn_qkv takes attn_v's, Q5_K falls back to Q5_1 and Q3_K to Q4_0.  tests/ref/check-types.sh
 * compares whole files with llama.cpp's quantizer. */
START_TEST(test_llama_quantizer_types)
{
    static const struct {
        const char *arch;
        int wtype, n_embd, n_ff, n_layer, n_head, n_head_kv, n_expert;
        bool tied;
        const char *name;
        int type;
    } cases[] = {
        { "qwen2moe", GGUF_W_MIX_Q4_K_M, 256, 256, 2, 4, 2, 8, false, "blk.0.attn_k.weight", GG_Q8_0 },
        { "qwen2moe", GGUF_W_MIX_Q4_K_M, 256, 256, 2, 4, 2, 8, false, "blk.0.attn_v.weight", GG_Q8_0 },
        { "qwen2moe", GGUF_W_MIX_Q4_K_M, 256, 256, 2, 4, 2, 8, false, "blk.0.attn_q.weight", GG_Q4_K },
        { "qwen2moe", GGUF_W_MIX_Q4_K_M, 256, 256, 2, 4, 2, 8, false, "blk.1.attn_output.weight", GG_Q5_K },
        { "qwen2moe", GGUF_W_MIX_Q4_K_M, 256, 256, 2, 4, 2, 8, false, "blk.0.ffn_down_shexp.weight", GG_Q4_K },
        { "qwen2moe", GGUF_W_MIX_Q4_K_M, 256, 256, 2, 4, 2, 8, false, "blk.1.ffn_down_shexp.weight", GG_Q6_K },
        { "qwen2moe", GGUF_W_MIX_Q4_K_M, 256, 256, 2, 4, 2, 8, false, "blk.1.ffn_down_exps.weight", GG_Q6_K },
        { "qwen2moe", GGUF_W_MIX_Q4_K_M, 256, 256, 2, 4, 2, 8, false, "token_embd.weight", GG_Q4_K },
        { "qwen3moe", GGUF_W_MIX_Q4_K_M, 256, 256, 2, 4, 2, 16, false, "blk.0.attn_k.weight", GG_Q4_K },
        { "qwen3moe", GGUF_W_MIX_Q5_K_M, 256, 256, 2, 4, 2, 8, false, "blk.0.attn_k.weight", GG_Q8_0 },
        { "qwen3moe", GGUF_W_MIX_Q5_K_M, 256, 256, 2, 4, 2, 8, false, "blk.0.attn_output.weight", GG_Q5_K },
        { "phi3", GGUF_W_MIX_Q4_K_M, 256, 512, 2, 4, 2, 0, false, "blk.0.attn_qkv.weight", GG_Q4_K },
        { "phi3", GGUF_W_MIX_Q4_K_M, 256, 512, 2, 4, 2, 0, false, "blk.1.attn_qkv.weight", GG_Q6_K },
        { "qwen2", GGUF_W_MIX_IQ4_XS, 288, 320, 2, 8, 2, 0, true, "blk.0.attn_v.weight", GG_Q5_1 },
        { "qwen2", GGUF_W_MIX_IQ4_XS, 288, 320, 2, 8, 2, 0, true, "blk.1.ffn_down.weight", GG_IQ4_NL },
        { "qwen2", GGUF_W_MIX_IQ4_XS, 288, 320, 2, 8, 2, 0, true, "token_embd.weight", GG_Q8_0 },
        { "llama", GG_Q3_K, 288, 512, 2, 4, 2, 0, false, "blk.0.attn_q.weight", GG_Q4_0 },
        { "llama", GG_Q3_K, 288, 512, 2, 4, 2, 0, false, "blk.0.ffn_down.weight", GG_Q3_K },
    };
    gguf_t *g = NULL;
    uint8_t *b = NULL;
    for (size_t k = 0; k < FD_ARRAY_LEN(cases); k++) {
        /* one model per run of cases with the same shape */
        if (k > 0 && !strcmp(cases[k].arch, cases[k - 1].arch) &&
            cases[k].wtype == cases[k - 1].wtype && cases[k].n_expert == cases[k - 1].n_expert &&
            cases[k].n_embd == cases[k - 1].n_embd)
            goto check;
        if (g) {
            gguf_close(g);
            free(b);
        }
        gguf_w_llama_t p = {.name = "m", .arch = cases[k].arch, .n_embd = cases[k].n_embd,
                            .n_layer = cases[k].n_layer, .n_head = cases[k].n_head,
                            .n_head_kv = cases[k].n_head_kv, .n_ff = cases[k].n_ff,
                            .n_vocab = 300, .n_ctx = 64, .rope_base = 10000, .norm_eps = 1e-5f,
                            .tied = cases[k].tied, .wtype = cases[k].wtype, .seed = 7,
                            .n_expert = cases[k].n_expert,
                            .n_expert_used = cases[k].n_expert ? 4 : 0};
        if (!strcmp(cases[k].arch, "qwen3moe"))
            p.head_dim = 64;
        size_t sz;
        g = gen(&p, &b, &sz);
    check:;
        const gguf_tensor_t *t = gguf_find_tensor(g, cases[k].name);
        ck_assert_ptr_nonnull(t);
        ck_assert_msg(t->type == cases[k].type, "%s %s: %s is %s, llama.cpp's quantizer makes "
                      "it %s", cases[k].arch, cases[k].name, cases[k].name,
                      gg_type_name(t->type), gg_type_name(cases[k].type));
    }
    gguf_close(g);
    free(b);
}
END_TEST

/* llama.cpp's Q2_K, Q2_K_S, Q3_K_S, Q3_K_M and Q3_K_L recipes (and Q4_K_M's "70B" rule),
 * tensor by tensor, as node-llama-cpp 3.22.1's llama_model_quantize picks them for each shape
 * (tests/ref/check-types.sh compares the whole files).  The types are the writer's choices
 * (gguf_w_tensor_at; nothing is written, so 80 layers cost nothing).  A spec lists, per
 * role, one type letter per layer (the last letter repeats): 2 Q2_K, 3 Q3_K, 4 Q4_K, 5 Q5_K,
 * 6 Q6_K, 8 Q8_0, 0 Q4_0, a Q5_0, b Q5_1; "*" covers every matrix not listed. */
static int k23_letter(char c)
{
    switch (c) {
    case '2': return GG_Q2_K;
    case '3': return GG_Q3_K;
    case '4': return GG_Q4_K;
    case '5': return GG_Q5_K;
    case '6': return GG_Q6_K;
    case '8': return GG_Q8_0;
    case '0': return GG_Q4_0;
    case 'a': return GG_Q5_0;
    case 'b': return GG_Q5_1;
    default: ck_abort_msg("bad type letter '%c'", c); return -1;
    }
}

/* The type spec gives tensor `name` (role after "blk.N.", or the whole name). */
static int k23_want(const char *spec, const char *name)
{
    int il = 0;
    const char *role = name;
    if (sscanf(name, "blk.%d.", &il) == 1)
        role = strchr(name + 4, '.') + 1;
    size_t rl = strcspn(role, ".");
    if (!strncmp(role, "ffn_gate_inp", rl) && rl == 12)
        return GG_F32; /* a router: llama.cpp's quantizer keeps it */
    const char *star = NULL;
    for (const char *s = spec; *s;) {
        const char *colon = strchr(s, ':'), *end = strchr(s, ' ');
        ck_assert_ptr_nonnull(colon);
        size_t n = end ? (size_t)(end - colon - 1) : strlen(colon + 1);
        if ((size_t)(colon - s) == rl && !strncmp(s, role, rl))
            return k23_letter(colon[1 + FD_MIN((size_t)il, n - 1)]);
        if (colon - s == 1 && *s == '*')
            star = colon + 1;
        s = end ? end + 1 : colon + 1 + n;
    }
    ck_assert_ptr_nonnull(star);
    return k23_letter(*star);
}

START_TEST(test_llama_k23_mixes)
{
    static const struct {
        const char *arch;
        int wtype, n_embd, n_ff, n_layer, n_head, n_head_kv, n_expert;
        bool tied;
        const char *spec;
    } cases[] = {
        /* 16 layers, n_head / n_head_kv = 2: n / 8 = 2, n / 16 = 1 */
        { "llama", GGUF_W_MIX_Q2_K, 256, 512, 16, 4, 2, 0, false,
          "output:6 attn_v:3 ffn_down:3 attn_output:3 *:2" },
        { "llama", GGUF_W_MIX_Q2_K_S, 256, 512, 16, 4, 2, 0, false,
          "output:6 ffn_down:442 *:2" },
        { "llama", GGUF_W_MIX_Q3_K_S, 256, 512, 16, 4, 2, 0, false, "output:6 *:3" },
        { "llama", GGUF_W_MIX_Q3_K_M, 256, 512, 16, 4, 2, 0, false,
          "output:6 attn_v:554 ffn_down:54 attn_output:4 *:3" },
        { "llama", GGUF_W_MIX_Q3_K_L, 256, 512, 16, 4, 2, 0, false,
          "output:6 attn_v:5 ffn_down:5 attn_output:5 *:3" },
        /* n_head / n_head_kv = 4: attn_v Q4_K; tied: the embedding takes the output's Q6_K */
        { "llama", GGUF_W_MIX_Q2_K, 256, 512, 8, 8, 2, 0, true,
          "token_embd:6 attn_v:4 ffn_down:3 attn_output:3 *:2" },
        { "llama", GGUF_W_MIX_Q2_K_S, 256, 512, 8, 8, 2, 0, true,
          "token_embd:6 attn_v:4 ffn_down:42 *:2" },
        /* 8 experts: attn_v and attn_k Q8_0; attn_output Q5_K but for Q2_K_S and Q3_K_L */
        { "qwen3moe", GGUF_W_MIX_Q2_K, 256, 256, 2, 4, 2, 8, false,
          "output:6 attn_v:8 attn_k:8 attn_output:5 ffn_down_exps:3 *:2" },
        { "qwen3moe", GGUF_W_MIX_Q2_K_S, 256, 256, 8, 4, 2, 8, false,
          "output:6 attn_v:8 attn_k:8 ffn_down_exps:42 *:2" },
        { "qwen3moe", GGUF_W_MIX_Q3_K_M, 256, 256, 16, 4, 2, 8, false,
          "output:6 attn_v:8 attn_k:8 attn_output:5 ffn_down_exps:54 *:3" },
        { "qwen3moe", GGUF_W_MIX_Q3_K_L, 256, 256, 2, 4, 2, 8, false,
          "output:6 attn_v:8 attn_k:8 ffn_down_exps:5 *:3" },
        { "qwen3moe", GGUF_W_MIX_Q3_K_M, 256, 256, 2, 4, 2, 16, false,
          "output:6 attn_v:554 ffn_down_exps:4 attn_output:4 *:3" },
        { "llama", GGUF_W_MIX_Q3_K_S, 256, 256, 2, 4, 2, 8, true,
          "token_embd:6 attn_v:8 attn_k:8 attn_output:5 *:3" },
        /* a shared expert's ffn_down takes ffn_down's rule; phi3's attn_qkv attn_v's */
        { "qwen2moe", GGUF_W_MIX_Q3_K_M, 256, 256, 16, 4, 2, 4, false,
          "output:6 attn_v:554 ffn_down_exps:54 ffn_down_shexp:54 attn_output:4 *:3" },
        { "phi3", GGUF_W_MIX_Q3_K_M, 256, 512, 4, 4, 2, 0, false,
          "output:6 attn_qkv:554 ffn_down:4 attn_output:4 *:3" },
        { "phi3", GGUF_W_MIX_Q2_K, 256, 512, 2, 4, 2, 0, false,
          "output:6 attn_qkv:3 ffn_down:3 attn_output:3 *:2" },
        /* rows of 896 and 640: Q2_K / Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, the output
         * Q8_0 */
        { "qwen2", GGUF_W_MIX_Q2_K, 896, 640, 3, 14, 2, 0, true,
          "token_embd:8 attn_v:a *:0" },
        { "qwen2", GGUF_W_MIX_Q3_K_M, 896, 640, 3, 14, 2, 0, true,
          "token_embd:8 attn_v:bba ffn_down:a attn_output:a *:0" },
        /* llama.cpp's "70B" (80 layers, grouped-query attention): a Q3_K / Q4_K attn_v is
         * Q5_K; not with n_head == n_head_kv (its 65B) */
        { "llama", GGUF_W_MIX_Q3_K_M, 256, 256, 80, 4, 2, 0, false,
          "output:6 attn_v:5 ffn_down:555554 attn_output:4 *:3" },
        { "llama", GGUF_W_MIX_Q3_K_S, 256, 256, 80, 4, 2, 0, false,
          "output:6 attn_v:5 *:3" },
        { "llama", GGUF_W_MIX_Q3_K_S, 256, 256, 80, 4, 4, 0, false, "output:6 *:3" },
        { "qwen2", GGUF_W_MIX_Q2_K, 256, 256, 80, 4, 4, 0, true,
          "token_embd:6 attn_v:5 ffn_down:3 attn_output:3 *:2" },
        /* Q4_K_M at 80 layers: Q6_K where use_more_bits(il, 80) (il < 10, il >= 70,
         * (il - 10) % 3 == 2), the other attn_v Q5_K (the 70B rule), ffn_down Q4_K */
        { "llama", GGUF_W_MIX_Q4_K_M, 256, 256, 80, 4, 2, 0, false,
          "output:6 attn_v:666666666655655655655655655655655655655655655655655655655655"
          "65565565566666666666 "
          "ffn_down:666666666644644644644644644644644644644644644644644644644644"
          "64464464466666666666 *:4" },
    };
    for (size_t k = 0; k < FD_ARRAY_LEN(cases); k++) {
        gguf_w_llama_t p = {.name = "m", .arch = cases[k].arch, .n_embd = cases[k].n_embd,
                            .n_layer = cases[k].n_layer, .n_head = cases[k].n_head,
                            .n_head_kv = cases[k].n_head_kv, .n_ff = cases[k].n_ff,
                            .n_vocab = 300, .n_ctx = 64, .rope_base = 10000, .norm_eps = 1e-5f,
                            .tied = cases[k].tied, .wtype = cases[k].wtype, .seed = 7,
                            .n_expert = cases[k].n_expert,
                            .n_expert_used = cases[k].n_expert ? 2 : 0};
        if (!strcmp(cases[k].arch, "qwen3moe"))
            p.head_dim = 64;
        gguf_w_t *w;
        char err[256];
        ck_assert_int_eq(gguf_w_new(&w), 0);
        ck_assert_msg(gguf_w_llama_add(w, &p, err, sizeof(err)) == 0, "case %zu: %s", k, err);
        int n = 0;
        for (int64_t i = 0; i < gguf_w_n_tensors(w); i++) {
            const char *name;
            int dims, got = gguf_w_tensor_at(w, i, &name, &dims);
            if (dims == 1)
                continue;
            int want = k23_want(cases[k].spec, name);
            ck_assert_msg(got == want, "case %zu (%s, %d layers): %s is %s, llama.cpp's "
                          "quantizer makes it %s", k, cases[k].arch, cases[k].n_layer, name,
                          gg_type_name(got), gg_type_name(want));
            n++;
        }
        const char *none;
        int nd;
        ck_assert_int_eq(gguf_w_tensor_at(w, gguf_w_n_tensors(w), &none, &nd), -1);
        ck_assert_int_gt(n, 4 * cases[k].n_layer);
        gguf_w_free(w);
    }
    /* the file type each recipe records (llama.h's llama_ftype) */
    static const struct { int mix; uint32_t ftype; } ft[] = {
        {GGUF_W_MIX_Q2_K, 10}, {GGUF_W_MIX_Q2_K_S, 21}, {GGUF_W_MIX_Q3_K_S, 11},
        {GGUF_W_MIX_Q3_K_M, 12}, {GGUF_W_MIX_Q3_K_L, 13},
    };
    for (size_t k = 0; k < FD_ARRAY_LEN(ft); k++) {
        gguf_w_llama_t p = {.name = "m", .n_embd = 256, .n_layer = 1, .n_head = 4,
                            .n_head_kv = 2, .n_ff = 256, .n_vocab = 260, .n_ctx = 16,
                            .rope_base = 10000, .norm_eps = 1e-5f, .wtype = ft[k].mix,
                            .seed = 1};
        uint8_t *b;
        size_t sz;
        gguf_t *g = gen(&p, &b, &sz);
        uint32_t v;
        ck_assert_int_eq(gguf_get_u32(g, "general.file_type", &v), 0);
        ck_assert_uint_eq(v, ft[k].ftype);
        gguf_close(g);
        free(b);
    }
}
END_TEST

/* llama.cpp's IQ4_XS recipe (llama_tensor_get_type without an importance matrix) and its
 * fallback for rows not a multiple of 256 (IQ4_NL), and MXFP4_MOE (experts MXFP4, the rest
 * Q8_0), tensor by tensor. */
START_TEST(test_llama_iq_mixes)
{
    /* n_embd 288: every matrix reading the residual (ne0 = 288) falls back from IQ4_XS to
     * IQ4_NL, output.weight is Q8_0, attn_v (n_head / n_head_kv = 4: Q5_K) takes the
     * generic fallback; ffn_down (ne0 = 512) is IQ4_XS but Q5_K in layer 0 (< 8 / 8) */
    gguf_w_llama_t p = {.name = "m", .n_embd = 288, .n_layer = 8, .n_head = 8, .n_head_kv = 2,
                        .n_ff = 512, .n_vocab = 300, .n_ctx = 64, .rope_base = 10000,
                        .norm_eps = 1e-5f, .wtype = GGUF_W_MIX_IQ4_XS, .seed = 7};
    uint8_t *b;
    size_t sz;
    gguf_t *g = gen(&p, &b, &sz);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_t *t = gguf_tensor_at(g, i);
        int il = -1;
        sscanf(t->name, "blk.%d.", &il);
        if (t->n_dims == 1)
            continue;
        if (strcmp(t->name, "output.weight") == 0)
            ck_assert_int_eq(t->type, GG_Q8_0);
        else if (strstr(t->name, "ffn_down"))
            ck_assert_msg(t->type == (il == 0 ? GG_Q5_K : GG_IQ4_XS), "%s: %s", t->name,
                          gg_type_name(t->type));
        else if (strstr(t->name, "attn_v"))
            ck_assert_msg(t->type != GG_IQ4_XS && t->type != GG_IQ4_NL && t->type != GG_Q5_K,
                          "%s: %s", t->name, gg_type_name(t->type));
        else
            ck_assert_msg(t->type == GG_IQ4_NL, "%s: %s", t->name, gg_type_name(t->type));
    }
    uint32_t ft;
    ck_assert_int_eq(gguf_get_u32(g, "general.file_type", &ft), 0);
    ck_assert_uint_eq(ft, 30); /* LLAMA_FTYPE_MOSTLY_IQ4_XS */
    gguf_close(g);
    free(b);

    /* n_embd 256, tied: attn_v Q5_K, the embedding (the output) Q6_K, the rest IQ4_XS;
     * n_layer 4: no ffn_down in the first eighth */
    p.n_embd = 256;
    p.n_layer = 4;
    p.tied = true;
    p.n_fallback = 0;
    g = gen(&p, &b, &sz);
    ck_assert_int_eq(p.n_fallback, 0);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_t *t = gguf_tensor_at(g, i);
        int want = t->n_dims == 1 ? GG_F32 : strstr(t->name, "attn_v") ? GG_Q5_K
                 : strcmp(t->name, "token_embd.weight") == 0 ? GG_Q6_K : GG_IQ4_XS;
        ck_assert_msg(t->type == want, "%s: %s", t->name, gg_type_name(t->type));
    }
    gguf_close(g);
    free(b);

    /* MXFP4_MOE on a mixture of experts: the 3-D experts MXFP4, the router F32, the rest Q8_0 */
    p = (gguf_w_llama_t){.name = "moe", .arch = "qwen3moe", .n_embd = 64, .n_layer = 2,
                         .n_head = 4, .n_head_kv = 2, .n_ff = 96, .n_vocab = 300, .n_ctx = 64,
                         .rope_base = 10000, .norm_eps = 1e-5f, .n_expert = 4,
                         .n_expert_used = 2, .wtype = GGUF_W_MIX_MXFP4_MOE, .seed = 3};
    g = gen(&p, &b, &sz);
    ck_assert_int_eq(p.n_fallback, 0);
    int n_exps = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_t *t = gguf_tensor_at(g, i);
        int want = t->n_dims == 1 || strstr(t->name, "ffn_gate_inp") ? GG_F32
                 : t->n_dims == 3 ? GG_MXFP4 : GG_Q8_0;
        n_exps += t->n_dims == 3;
        ck_assert_msg(t->type == want, "%s: %s", t->name, gg_type_name(t->type));
    }
    ck_assert_int_eq(n_exps, 3 * 2);
    ck_assert_int_eq(gguf_get_u32(g, "general.file_type", &ft), 0);
    ck_assert_uint_eq(ft, 38); /* LLAMA_FTYPE_MOSTLY_MXFP4_MOE */
    gguf_close(g);
    free(b);
}
END_TEST

START_TEST(test_llama_fallback_and_tied)
{
    gguf_w_llama_t p;
    ck_assert_int_eq(gguf_w_llama_preset("stories260K", &p), 0);
    p.wtype = GG_Q4_K;
    p.tied = true;
    uint8_t *b;
    size_t sz;
    gguf_t *g = gen(&p, &b, &sz);
    /* ne0 = 64 rows fall back to Q5_0 (llama.cpp's fallback of Q4_K), ffn_down (ne0 = 172)
     * to F16 */
    ck_assert_int_eq(gguf_n_tensors(g), 47);
    ck_assert_ptr_null(gguf_find_tensor(g, "output.weight"));
    ck_assert_int_eq(p.n_fallback, 1 + 5 * 7);
    ck_assert_int_eq(gguf_find_tensor(g, "token_embd.weight")->type, GG_Q5_0);
    ck_assert_int_eq(gguf_find_tensor(g, "blk.0.attn_q.weight")->type, GG_Q5_0);
    ck_assert_int_eq(gguf_find_tensor(g, "blk.4.ffn_down.weight")->type, GG_F16);
    ck_assert_int_eq(gguf_find_tensor(g, "blk.4.ffn_norm.weight")->type, GG_F32);
    gguf_close(g);
    free(b);

    /* presets by name, and shape refusals */
    char err[256];
    for (const char *const *n = gguf_w_llama_preset_names(); *n; n++) {
        ck_assert_int_eq(gguf_w_llama_preset(*n, &p), 0);
        ck_assert_int_eq(gguf_w_llama_check(&p, err, sizeof(err)), 0);
    }
    ck_assert_int_eq(gguf_w_llama_preset("Llama-3-8B", &p), 0);
    ck_assert_int_eq(p.n_vocab, 128256);
    ck_assert_int_eq(p.n_head_kv, 8);
    ck_assert_float_eq(p.rope_base, 500000.0f);
    ck_assert_int_eq(gguf_w_llama_preset("gpt-5", &p), -ENOENT);
    ck_assert_int_eq(gguf_w_llama_preset("stories260K", &p), 0);
    p.n_head = 7;
    ck_assert_int_eq(gguf_w_llama_check(&p, err, sizeof(err)), FD_ESHAPE);
    ck_assert_ptr_nonnull(strstr(err, "n_head 7"));
    p.n_head = 8;
    p.n_head_kv = 3;
    ck_assert_int_eq(gguf_w_llama_check(&p, err, sizeof(err)), FD_ESHAPE);
    p.n_head_kv = 4;
    p.n_vocab = 100;
    ck_assert_int_eq(gguf_w_llama_check(&p, err, sizeof(err)), FD_ESHAPE);
    p.n_vocab = 512;
    p.wtype = GG_Q8_K; /* an activation type, never a weight type */
    ck_assert_int_eq(gguf_w_llama_check(&p, err, sizeof(err)), FD_EUNSUP);
    p.wtype = GG_F32;
    p.n_embd = 72; /* head size 9: odd */
    ck_assert_int_eq(gguf_w_llama_check(&p, err, sizeof(err)), FD_ESHAPE);
}
END_TEST

/* Gemma shapes: the presets as published, the tensors and keys each generation has (post
 * norms for both, head norms for gemma3, soft-caps only when given) and the refusals. */
START_TEST(test_llama_gemma)
{
    gguf_w_llama_t p;
    char err[256];
    ck_assert_int_eq(gguf_w_llama_preset("gemma-3-270m", &p), 0);
    ck_assert_str_eq(p.arch, "gemma3");
    ck_assert_int_eq(p.n_embd, 640);
    ck_assert_int_eq(p.head_dim, 256);
    ck_assert_int_eq(p.n_swa, 512);
    ck_assert_int_eq(p.n_vocab, 262144);
    ck_assert_int_eq(gguf_w_llama_preset("Gemma-2-2B", &p), 0);
    ck_assert_float_eq(p.attn_softcap, 50.0f);
    ck_assert_float_eq(p.final_softcap, 30.0f);

    p = (gguf_w_llama_t){ .name = "g", .arch = "gemma2", .n_embd = 64, .n_layer = 2,
                          .n_head = 4, .n_head_kv = 2, .head_dim = 32, .n_ff = 96,
                          .n_vocab = 512, .n_ctx = 64, .rope_base = 1e4f, .norm_eps = 1e-6f,
                          .tied = true, .wtype = GG_F32, .seed = 5, .n_swa = 8,
                          .attn_softcap = 2.5f, .final_softcap = 4 };
    uint8_t *b;
    size_t sz;
    gguf_t *g = gen(&p, &b, &sz);
    uint32_t u;
    float f;
    ck_assert_int_eq(gguf_get_u32(g, "gemma2.attention.sliding_window", &u), 0);
    ck_assert_uint_eq(u, 8);
    ck_assert_int_eq(gguf_get_f32(g, "gemma2.attn_logit_softcapping", &f), 0);
    ck_assert_float_eq(f, 2.5f);
    ck_assert_int_eq(gguf_get_f32(g, "gemma2.final_logit_softcapping", &f), 0);
    ck_assert_float_eq(f, 4.0f);
    ck_assert_ptr_nonnull(gguf_find_tensor(g, "blk.1.post_attention_norm.weight"));
    ck_assert_ptr_nonnull(gguf_find_tensor(g, "blk.1.post_ffw_norm.weight"));
    ck_assert_ptr_null(gguf_find_tensor(g, "blk.0.attn_q_norm.weight"));
    ck_assert_ptr_null(gguf_find_tensor(g, "output.weight"));
    gguf_close(g);
    free(b);

    p.arch = "gemma3";
    p.attn_softcap = p.final_softcap = 0;
    g = gen(&p, &b, &sz);
    ck_assert_ptr_nonnull(gguf_find_tensor(g, "blk.0.attn_q_norm.weight"));
    ck_assert_ptr_nonnull(gguf_find_tensor(g, "blk.0.attn_k_norm.weight"));
    ck_assert_ptr_nonnull(gguf_find_tensor(g, "blk.0.post_ffw_norm.weight"));
    ck_assert_int_eq(gguf_get_f32(g, "gemma3.final_logit_softcapping", &f), -ENOENT);
    gguf_close(g);
    free(b);

    /* the Gemma-style vocabulary: <bos> 2, <eos> 1, user-defined pieces, no space prefix */
    p.gemma_vocab = true;
    g = gen(&p, &b, &sz);
    bool sp = true;
    ck_assert_int_eq(gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u), 0);
    ck_assert_uint_eq(u, 2);
    ck_assert_int_eq(gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &u), 0);
    ck_assert_uint_eq(u, 1);
    ck_assert_int_eq(gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &sp), 0);
    ck_assert(!sp);
    gguf_arr_t toks;
    gguf_str_t piece;
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.tokens", &toks), 0);
    ck_assert_int_eq(gguf_arr_str(&toks, 6, &piece), 0);
    ck_assert(piece.len == 13 && memcmp(piece.ptr, "<end_of_turn>", 13) == 0);
    ck_assert_int_eq(gguf_arr_str(&toks, 12, &piece), 0);
    ck_assert(piece.len == 6 && memcmp(piece.ptr, "<0x00>", 6) == 0);
    gguf_close(g);
    free(b);
    p.n_vocab = 268; /* 12 specials and 256 bytes leave no piece */
    ck_assert_int_eq(gguf_w_llama_check(&p, err, sizeof(err)), FD_ESHAPE);
    p.n_vocab = 512;
    p.gemma_vocab = false;

    p.n_swa = 0; /* gemma3 needs its window */
    ck_assert_int_eq(gguf_w_llama_check(&p, err, sizeof(err)), FD_ESHAPE);
    ck_assert_ptr_nonnull(strstr(err, "sliding window"));
    p.n_swa = 8;
    p.final_softcap = -1;
    ck_assert_int_eq(gguf_w_llama_check(&p, err, sizeof(err)), FD_ESHAPE);
    p.final_softcap = 0;
    p.arch = "gemma3n";
    ck_assert_int_eq(gguf_w_llama_check(&p, err, sizeof(err)), FD_EUNSUP);
}
END_TEST

static int cmp_str(const void *a, const void *b)
{
    const gguf_str_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->ptr, y->ptr, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* A Llama-3-sized vocabulary: 128256 distinct pieces. */
START_TEST(test_llama_big_vocab)
{
    gguf_w_llama_t p = {.name = "v", .n_embd = 32, .n_layer = 1, .n_head = 2, .n_head_kv = 1,
                        .n_ff = 32, .n_vocab = 128256, .n_ctx = 16, .rope_base = 10000,
                        .norm_eps = 1e-5f, .tied = true, .wtype = GG_F16, .seed = 3};
    uint8_t *b;
    size_t sz;
    gguf_t *g = gen(&p, &b, &sz);
    gguf_arr_t tok;
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.tokens", &tok), 0);
    ck_assert_uint_eq(tok.n, 128256);
    gguf_str_t *all = malloc(tok.n * sizeof(*all));
    for (uint64_t i = 0; i < tok.n; i++)
        ck_assert_int_eq(gguf_arr_str(&tok, i, &all[i]), 0);
    qsort(all, tok.n, sizeof(*all), cmp_str);
    for (uint64_t i = 1; i < tok.n; i++)
        ck_assert_msg(cmp_str(&all[i - 1], &all[i]) != 0, "duplicate piece '%.*s'",
                      (int)all[i].len, all[i].ptr);
    free(all);
    ck_assert_int_eq(gguf_find_tensor(g, "token_embd.weight")->ne[1], 128256);
    gguf_close(g);
    free(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gguf_write");
    TCase *tc = tcase_create("writer");
    tcase_add_test(tc, test_metadata_roundtrip);
    tcase_add_test(tc, test_tensors_every_type);
    tcase_add_test(tc, test_tensors_filled);
    tcase_add_test(tc, test_writer_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("llama generator");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_llama_types);
    tcase_add_test(tc, test_llama_fallback_and_tied);
    tcase_add_test(tc, test_llama_iq_mixes);
    tcase_add_test(tc, test_llama_quantizer_types);
    tcase_add_test(tc, test_llama_k23_mixes);
    tcase_add_test(tc, test_llama_gemma);
    tcase_add_test(tc, test_llama_big_vocab);
    suite_add_tcase(s, tc);
    bool have_shared = tu_shared("models/stories260K.gguf", 0) != NULL;
    if (have_shared) {
        tc = tcase_create("real layout");
        tcase_add_test(tc, test_llama_stories_layout);
        suite_add_tcase(s, tc);
    }
    int rc = tu_run(s);
    if (rc == EXIT_SUCCESS && !have_shared)
        tu_shared("models/stories260K.gguf", 1);
    return rc;
}
