/* fuzz_gguf.c: libFuzzer target for the GGUF reader: any bytes go through gguf_open_mem; a
 * file that opens is walked in full (every key, value, array element at any nesting, tensor
 * byte range) and dumped, so a validation gap shows up as an ASan/UBSan report.
 * Built by `make fuzz` (clang); seeds in tests/fuzz/corpus/fuzz_gguf/. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "engine/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void walk_arr(const gguf_arr_t *a)
{
    for (uint64_t i = 0; i < a->n; i++) {
        gguf_str_t s;
        gguf_arr_t sub;
        int64_t v;
        double d;
        if (gguf_arr_str(a, i, &s) == 0 && s.len)
            sink += (uint8_t)s.ptr[0] + (uint8_t)s.ptr[s.len - 1];
        if (gguf_arr_arr(a, i, &sub) == 0)
            walk_arr(&sub);
        if (gguf_arr_i64(a, i, &v) == 0)
            sink += (uint64_t)v;
        if (gguf_arr_f64(a, i, &d) == 0)
            sink += d == d;
    }
    gguf_str_t s;
    sink += gguf_arr_str(a, a->n, &s) == 0; /* one past the end must be refused */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *devnull;
    if (!devnull)
        devnull = fopen("/dev/null", "w");
    gguf_t *g = NULL;
    char err[256];
    if (gguf_open_mem(&g, data, size, "fuzz.gguf", err, sizeof(err)) != 0) {
        sink += strlen(err);
        return 0;
    }
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const gguf_kv_t *kv = gguf_kv_at(g, i);
        const char *key = gguf_kv_key(kv);
        sink += gguf_find(g, key) == kv;
        uint64_t u;
        int64_t v;
        double d;
        bool b;
        gguf_str_t s;
        gguf_arr_t a;
        uint32_t u32;
        int32_t i32;
        float f;
        sink += gguf_kv_u64(kv, &u) == 0 ? u : 0;
        sink += gguf_kv_i64(kv, &v) == 0 ? (uint64_t)v : 0;
        sink += gguf_kv_f64(kv, &d) == 0;
        sink += gguf_kv_bool(kv, &b) == 0 && b;
        if (gguf_kv_str(kv, &s) == 0 && s.len)
            sink += (uint8_t)s.ptr[s.len - 1];
        sink += gguf_get_u32(g, key, &u32) == 0;
        sink += gguf_get_i32(g, key, &i32) == 0;
        sink += gguf_get_f32(g, key, &f) == 0;
        if (gguf_kv_arr(kv, &a) == 0)
            walk_arr(&a);
    }
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_t *t = gguf_tensor_at(g, i);
        sink += gguf_find_tensor(g, t->name) == t;
        const uint8_t *p = t->data;
        sink += p[0] + p[t->nbytes - 1] + (uint64_t)gguf_tensor_nelems(t);
    }
    if (devnull)
        gguf_dump(g, devnull);
    gguf_close(g);
    return 0;
}
