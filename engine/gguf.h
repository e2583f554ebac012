/* gguf.h: the GGUF model-file reader (versions 2 and 3, little-endian).  Owns the read-only
 * mapping of one file, its metadata key/value table and its tensor table; values and tensor
 * data are read in place, never copied.  gguf_open validates everything up front (bounds,
 * counts, types, sizes, alignment, overlaps), so every accessor below is a plain lookup that
 * cannot read outside the mapping.  Open/close on one thread; once open, any thread may read.
 * Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md */
#ifndef FD_GGUF_H
#define FD_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct gguf gguf_t;

/* Metadata value types (ids as stored in the file). */
enum gguf_vtype {
    GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3,
    GGUF_UINT32 = 4, GGUF_INT32 = 5, GGUF_FLOAT32 = 6, GGUF_BOOL = 7,
    GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_UINT64 = 10, GGUF_INT64 = 11,
    GGUF_FLOAT64 = 12,
    GGUF_VTYPE_COUNT
};

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

/* A string inside the mapping: not NUL-terminated. */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str_t;

/* An array value (possibly nested: elem_type GGUF_ARRAY). */
typedef struct gguf_arr {
    int elem_type;        /* enum gguf_vtype */
    uint64_t n;           /* element count */
    const uint8_t *data;  /* first element in the mapping */
    const void *priv;     /* reader's index for string / nested elements */
} gguf_arr_t;

typedef struct gguf_kv gguf_kv_t; /* one metadata entry, opaque */

typedef struct gguf_tensor {
    const char *name;        /* NUL-terminated (owned by the reader) */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the contiguous dimension; unused dims are 1 */
    int type;                /* enum gg_type (common/ggtypes.h) */
    uint64_t offset;         /* relative to the start of the data section */
    uint64_t nbytes;
    const void *data;        /* inside the mapping, aligned to gguf_alignment() */
} gguf_tensor_t;

/* Opens and validates path.  On failure returns a negative code (fd.h) and writes a message
 * naming the file, what is wrong and where (byte offset, key or tensor) into err. */
int gguf_open(gguf_t **out, const char *path, char *err, size_t errlen);
/* The same over bytes in memory (not copied: data must outlive the handle); name is used in
 * messages.  Used by tests and the fuzzer. */
int gguf_open_mem(gguf_t **out, const void *data, size_t size, const char *name,
                  char *err, size_t errlen);
void gguf_close(gguf_t *g);

uint32_t gguf_version(const gguf_t *g);
uint64_t gguf_alignment(const gguf_t *g);
uint64_t gguf_data_offset(const gguf_t *g);  /* file offset of the tensor data section */
uint64_t gguf_file_size(const gguf_t *g);
const char *gguf_path(const gguf_t *g);

/* Metadata. */
int64_t gguf_n_kv(const gguf_t *g);
const gguf_kv_t *gguf_kv_at(const gguf_t *g, int64_t i);
const gguf_kv_t *gguf_find(const gguf_t *g, const char *key);   /* NULL when absent */
const char *gguf_kv_key(const gguf_kv_t *kv);                   /* NUL-terminated */
int gguf_kv_type(const gguf_kv_t *kv);                          /* enum gguf_vtype */

/* Typed getters by key: 0, -ENOENT when the key is absent, FD_ETYPE when the stored type does
 * not convert.  Integer getters accept any integer type whose value fits; gguf_get_f32 also
 * accepts FLOAT64. */
int gguf_get_u32(const gguf_t *g, const char *key, uint32_t *out);
int gguf_get_i32(const gguf_t *g, const char *key, int32_t *out);
int gguf_get_u64(const gguf_t *g, const char *key, uint64_t *out);
int gguf_get_i64(const gguf_t *g, const char *key, int64_t *out);
int gguf_get_f32(const gguf_t *g, const char *key, float *out);
int gguf_get_f64(const gguf_t *g, const char *key, double *out);
int gguf_get_bool(const gguf_t *g, const char *key, bool *out);
int gguf_get_str(const gguf_t *g, const char *key, gguf_str_t *out);
int gguf_get_arr(const gguf_t *g, const char *key, gguf_arr_t *out);

/* The same on an entry. */
int gguf_kv_u64(const gguf_kv_t *kv, uint64_t *out);
int gguf_kv_i64(const gguf_kv_t *kv, int64_t *out);
int gguf_kv_f64(const gguf_kv_t *kv, double *out);
int gguf_kv_bool(const gguf_kv_t *kv, bool *out);
int gguf_kv_str(const gguf_kv_t *kv, gguf_str_t *out);
int gguf_kv_arr(const gguf_kv_t *kv, gguf_arr_t *out);

/* Array elements (i < a->n; FD_ETYPE when the element type does not convert, -ERANGE past
 * the end). */
int gguf_arr_str(const gguf_arr_t *a, uint64_t i, gguf_str_t *out);
int gguf_arr_i64(const gguf_arr_t *a, uint64_t i, int64_t *out);
int gguf_arr_f64(const gguf_arr_t *a, uint64_t i, double *out);
int gguf_arr_f32(const gguf_arr_t *a, uint64_t i, float *out);
int gguf_arr_arr(const gguf_arr_t *a, uint64_t i, gguf_arr_t *out);

/* Tensors. */
int64_t gguf_n_tensors(const gguf_t *g);
const gguf_tensor_t *gguf_tensor_at(const gguf_t *g, int64_t i);
const gguf_tensor_t *gguf_find_tensor(const gguf_t *g, const char *name); /* NULL: absent */
int64_t gguf_tensor_nelems(const gguf_tensor_t *t);

const char *gguf_vtype_name(int vtype);

/* Prints the metadata (long arrays abbreviated) and the tensor table, like gguf-dump. */
void gguf_dump(const gguf_t *g, FILE *f);

#endif
