/* ggtypes.h: the ggml tensor types that GGUF files name, and their block geometry.  Knowing
 * every type's block size lets the GGUF reader check sizes even for types we cannot compute
 * with.  Pure tables; any thread. */
#ifndef FD_GGTYPES_H
#define FD_GGTYPES_H

#include <stdbool.h>
#include <stdint.h>

/* The numeric ids are ggml's (they are stored in GGUF files). */
enum gg_type {
    GG_F32 = 0, GG_F16 = 1, GG_Q4_0 = 2, GG_Q4_1 = 3,
    GG_Q5_0 = 6, GG_Q5_1 = 7, GG_Q8_0 = 8, GG_Q8_1 = 9,
    GG_Q2_K = 10, GG_Q3_K = 11, GG_Q4_K = 12, GG_Q5_K = 13, GG_Q6_K = 14, GG_Q8_K = 15,
    GG_IQ4_NL = 20,
    GG_IQ4_XS = 23,
    GG_I8 = 24, GG_I16 = 25, GG_I32 = 26, GG_I64 = 27, GG_F64 = 28,
    GG_BF16 = 30,
    GG_MXFP4 = 39,
    GG_TYPE_COUNT = 40
};

/* Elements per block (1 for plain types) and bytes per block; 0 for an unknown type. */
int gg_block_elems(int type);
int gg_block_bytes(int type);
const char *gg_type_name(int type);   /* "F32", "Q4_K", ...; NULL when unknown */
int gg_type_from_name(const char *name); /* case-insensitive; -1 when unknown */
bool gg_type_known(int type);

/* Bytes for n elements of type (n must be a multiple of the block size): 0 on error or
 * overflow. */
uint64_t gg_row_bytes(int type, uint64_t n);

#endif
