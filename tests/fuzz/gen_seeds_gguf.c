/* gen_seeds_gguf.c: writes the seed corpus of fuzz_gguf (tests/fuzz/corpus/fuzz_gguf/) with
 * the GGUF writer: small valid files that between them hold every value type, nested and
 * string arrays, every tensor type, a non-default alignment, a v2 header and a tiny Llama
 * model.  Built with the tests; run by hand:  tests/fuzz/gen_seeds_gguf DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "common/ggtypes.h"
#include "engine/gguf_write.h"

static int save(gguf_w_t *w, const char *dir, const char *name, uint32_t version)
{
    uint8_t *b;
    size_t n;
    char err[256], path[1024];
    if (gguf_w_write_mem(w, &b, &n, err, sizeof(err))) {
        fprintf(stderr, "gen_seeds_gguf: %s: %s\n", name, err);
        return 1;
    }
    b[4] = (uint8_t)version; /* the layout of v2 and v3 is the same */
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int rc = !f || fwrite(b, 1, n, f) != n;
    if (f && fclose(f))
        rc = 1;
    if (rc)
        fprintf(stderr, "gen_seeds_gguf: cannot write %s\n", path);
    else
        printf("%s: %zu bytes\n", path, n);
    free(b);
    gguf_w_free(w);
    return rc;
}

static gguf_w_t *fresh(void)
{
    gguf_w_t *w;
    if (gguf_w_new(&w)) {
        fprintf(stderr, "gen_seeds_gguf: out of memory\n");
        exit(1);
    }
    return w;
}

static int metadata(const char *dir)
{
    gguf_w_t *w = fresh();
    const uint8_t u8[] = {1, 2, 3};
    const int16_t i16[] = {-2, 2};
    const uint32_t u32[] = {7, 8};
    const int64_t i64[] = {-1, 1ll << 40};
    const float f32[] = {0.5f, -2.0f};
    const double f64[] = {1e-9, 3.0};
    const uint8_t bools[] = {1, 0};
    const char *strs[] = {"<unk>", "", "\xe2\x96\x81hi", "x"};
    const void *inner[] = {u32, u32};
    const uint64_t inner_n[] = {2, 1};
    const char *s0[] = {"a", "bc"};
    const void *sinner[] = {s0, s0};
    const uint64_t sinner_n[] = {2, 0};
    int rc = gguf_w_add_str(w, "general.architecture", "llama") |
             gguf_w_add_u8(w, "t.u8", 200) | gguf_w_add_i8(w, "t.i8", -3) |
             gguf_w_add_u16(w, "t.u16", 65535) | gguf_w_add_i16(w, "t.i16", -300) |
             gguf_w_add_u32(w, "t.u32", 4000000000u) | gguf_w_add_i32(w, "t.i32", -5) |
             gguf_w_add_u64(w, "t.u64", UINT64_MAX) | gguf_w_add_i64(w, "t.i64", INT64_MIN) |
             gguf_w_add_f32(w, "t.f32", 1e-5f) | gguf_w_add_f64(w, "t.f64", 2.5) |
             gguf_w_add_bool(w, "t.bool", true) | gguf_w_add_strn(w, "t.bin", "a\0b", 3) |
             gguf_w_add_arr(w, "a.u8", GGUF_UINT8, u8, 3) |
             gguf_w_add_arr(w, "a.i16", GGUF_INT16, i16, 2) |
             gguf_w_add_arr(w, "a.i64", GGUF_INT64, i64, 2) |
             gguf_w_add_arr(w, "a.f32", GGUF_FLOAT32, f32, 2) |
             gguf_w_add_arr(w, "a.f64", GGUF_FLOAT64, f64, 2) |
             gguf_w_add_arr(w, "a.bool", GGUF_BOOL, bools, 2) |
             gguf_w_add_str_arr(w, "a.str", strs, 4) |
             gguf_w_add_arr_arr(w, "a.nested", GGUF_UINT32, 2, inner, inner_n) |
             gguf_w_add_arr_arr(w, "a.nstr", GGUF_STRING, 2, sinner, sinner_n);
    if (rc)
        return 1;
    return save(w, dir, "metadata.gguf", 3);
}

static int all_types(const char *dir, int align, const char *name, uint32_t version)
{
    static const int types[] = {GG_F32, GG_F16, GG_Q4_0, GG_Q4_1, GG_Q5_0, GG_Q5_1, GG_Q8_0,
                                GG_Q8_1, GG_Q2_K, GG_Q3_K, GG_Q4_K, GG_Q5_K, GG_Q6_K, GG_Q8_K,
                                GG_I8, GG_I16, GG_I32, GG_I64, GG_F64, GG_BF16};
    static uint8_t bytes[FD_ARRAY_LEN(types)][400];
    gguf_w_t *w = fresh();
    if (align != 32 && gguf_w_set_alignment(w, (uint32_t)align))
        return 1;
    if (gguf_w_add_str(w, "general.architecture", "test"))
        return 1;
    uint64_t s = 5;
    for (size_t k = 0; k < FD_ARRAY_LEN(types); k++) {
        int be = gg_block_elems(types[k]);
        int64_t ne[2] = {be, be == 1 ? 3 : 1};
        for (size_t j = 0; j < sizeof(bytes[k]); j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            bytes[k][j] = (uint8_t)(s >> 56);
        }
        char tn[32];
        snprintf(tn, sizeof(tn), "blk.%zu.%s", k, gg_type_name(types[k]));
        if (gguf_w_add_tensor(w, tn, types[k], be == 1 ? 2 : 1, ne, bytes[k], NULL, NULL))
            return 1;
    }
    return save(w, dir, name, version);
}

static int tiny_llama(const char *dir)
{
    gguf_w_llama_t p = {.name = "seed", .n_embd = 32, .n_layer = 1, .n_head = 2,
                        .n_head_kv = 1, .n_ff = 32, .n_vocab = 260, .n_ctx = 32,
                        .rope_base = 10000, .norm_eps = 1e-5f, .tied = true,
                        .wtype = GG_Q4_0, .seed = 1};
    gguf_w_t *w = fresh();
    char err[256];
    if (gguf_w_llama_add(w, &p, err, sizeof(err))) {
        fprintf(stderr, "gen_seeds_gguf: %s\n", err);
        return 1;
    }
    return save(w, dir, "tiny-llama-q4_0.gguf", 3);
}

static int vocab_only(const char *dir)
{
    gguf_w_t *w = fresh();
    const char *tokens[] = {"!", "\"", "\xc4\xa0t", "he", "<|endoftext|>"};
    const char *merges[] = {"\xc4\xa0 t", "h e"};
    const int32_t types[] = {1, 1, 1, 1, 3};
    if (gguf_w_add_str(w, "general.architecture", "gpt2") |
        gguf_w_add_str(w, "tokenizer.ggml.model", "gpt2") |
        gguf_w_add_str_arr(w, "tokenizer.ggml.tokens", tokens, 5) |
        gguf_w_add_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, types, 5) |
        gguf_w_add_str_arr(w, "tokenizer.ggml.merges", merges, 2) |
        gguf_w_add_u32(w, "tokenizer.ggml.eos_token_id", 4))
        return 1;
    return save(w, dir, "vocab-only.gguf", 3);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds_gguf DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    return metadata(dir) || all_types(dir, 32, "all-types.gguf", 3) ||
           all_types(dir, 64, "all-types-align64-v2.gguf", 2) || tiny_llama(dir) ||
           vocab_only(dir) || save(fresh(), dir, "empty.gguf", 3);
}
