/* ggtypes.c: block geometry of ggml types (ggml's ggml.c type_traits, restated). */
#include "common/ggtypes.h"

#include <strings.h>

struct gg_traits {
    const char *name;
    int blck;   /* elements per block */
    int bytes;  /* bytes per block */
};

static const struct gg_traits traits[GG_TYPE_COUNT] = {
    [GG_F32] = {"F32", 1, 4},
    [GG_F16] = {"F16", 1, 2},
    [GG_Q4_0] = {"Q4_0", 32, 2 + 16},
    [GG_Q4_1] = {"Q4_1", 32, 2 + 2 + 16},
    [GG_Q5_0] = {"Q5_0", 32, 2 + 4 + 16},
    [GG_Q5_1] = {"Q5_1", 32, 2 + 2 + 4 + 16},
    [GG_Q8_0] = {"Q8_0", 32, 2 + 32},
    [GG_Q8_1] = {"Q8_1", 32, 4 + 32},
    [GG_Q2_K] = {"Q2_K", 256, 16 + 64 + 2 + 2},
    [GG_Q3_K] = {"Q3_K", 256, 32 + 64 + 12 + 2},
    [GG_Q4_K] = {"Q4_K", 256, 2 + 2 + 12 + 128},
    [GG_Q5_K] = {"Q5_K", 256, 2 + 2 + 12 + 32 + 128},
    [GG_Q6_K] = {"Q6_K", 256, 128 + 64 + 16 + 2},
    [GG_Q8_K] = {"Q8_K", 256, 4 + 256 + 32},
    [GG_IQ4_NL] = {"IQ4_NL", 32, 2 + 16},
    [GG_IQ4_XS] = {"IQ4_XS", 256, 2 + 2 + 4 + 128},
    [GG_I8] = {"I8", 1, 1},
    [GG_I16] = {"I16", 1, 2},
    [GG_I32] = {"I32", 1, 4},
    [GG_I64] = {"I64", 1, 8},
    [GG_F64] = {"F64", 1, 8},
    [GG_BF16] = {"BF16", 1, 2},
    [GG_MXFP4] = {"MXFP4", 32, 1 + 16},
};

bool gg_type_known(int type)
{
    return type >= 0 && type < GG_TYPE_COUNT && traits[type].name != 0;
}

int gg_block_elems(int type)
{
    return gg_type_known(type) ? traits[type].blck : 0;
}

int gg_block_bytes(int type)
{
    return gg_type_known(type) ? traits[type].bytes : 0;
}

const char *gg_type_name(int type)
{
    return gg_type_known(type) ? traits[type].name : 0;
}

int gg_type_from_name(const char *name)
{
    for (int t = 0; t < GG_TYPE_COUNT; t++)
        if (traits[t].name && strcasecmp(traits[t].name, name) == 0)
            return t;
    return -1;
}

uint64_t gg_row_bytes(int type, uint64_t n)
{
    if (!gg_type_known(type))
        return 0;
    uint64_t b = (uint64_t)traits[type].blck;
    if (n % b)
        return 0;
    uint64_t blocks = n / b;
    if (blocks > UINT64_MAX / (uint64_t)traits[type].bytes)
        return 0;
    return blocks * (uint64_t)traits[type].bytes;
}
