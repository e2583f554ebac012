/* quantize.c: llama.cpp's own quantizer (llama_model_quantize of node-llama-cpp's prebuilt
 * libllama) on a GGUF file: check-types.sh compares the tensor types it picks with the ones
 * fusion-gguf-gen writes.  usage: quantize IN.gguf OUT.gguf FTYPE [pure|imatrix]
 * FTYPE is llama.h's llama_ftype number (10 Q2_K, 11-13 Q3_K_S/M/L, 15 Q4_K_M, 17 Q5_K_M,
 * 21 Q2_K_S, 30 IQ4_XS, 38 MXFP4_MOE).  imatrix: an importance matrix of ones for every
 * matrix (llama.cpp refuses Q2_K_S without one; its type choices for the K mixes do not
 * depend on it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"
#include "gguf.h"
#include "llama.h"

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: quantize IN.gguf OUT.gguf FTYPE [pure|imatrix]\n");
        return 2;
    }
    llama_backend_init();
    llama_model_quantize_params p = llama_model_quantize_default_params();
    p.ftype = (enum llama_ftype)atoi(argv[3]);
    p.nthread = 1;
    p.pure = argc == 5 && strcmp(argv[4], "pure") == 0;
    struct llama_model_imatrix_data *im = NULL;
    float *ones = NULL;
    struct ggml_context *ctx = NULL;
    struct gguf_context *g = NULL;
    if (argc == 5 && strcmp(argv[4], "imatrix") == 0) {
        struct gguf_init_params gp = { .no_alloc = true, .ctx = &ctx };
        if (!(g = gguf_init_from_file(argv[1], gp))) {
            fprintf(stderr, "quantize: cannot read %s\n", argv[1]);
            return 1;
        }
        size_t n = 0, most = 0;
        for (struct ggml_tensor *t = ggml_get_first_tensor(ctx); t; t = ggml_get_next_tensor(ctx, t)) {
            n++;
            if ((size_t)(t->ne[0] * t->ne[2]) > most)
                most = (size_t)(t->ne[0] * t->ne[2]);
        }
        im = calloc(n + 1, sizeof(*im));
        ones = malloc(most * sizeof(float));
        if (!im || !ones)
            return 1;
        for (size_t i = 0; i < most; i++)
            ones[i] = 1.0f;
        size_t k = 0;
        for (struct ggml_tensor *t = ggml_get_first_tensor(ctx); t; t = ggml_get_next_tensor(ctx, t))
            if (ggml_n_dims(t) >= 2)
                im[k++] = (struct llama_model_imatrix_data){ t->name, ones,
                                                             (size_t)(t->ne[0] * t->ne[2]) };
        p.imatrix = im;
    }
    int rc = llama_model_quantize(argv[1], argv[2], &p) ? 1 : 0;
    free(im);
    free(ones);
    if (g)
        gguf_free(g);
    if (ctx)
        ggml_free(ctx);
    return rc;
}
