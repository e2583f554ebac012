/* quantize.c: llama.cpp's own quantizer (llama_model_quantize of node-llama-cpp's prebuilt
 * libllama) on a GGUF file: check-types.sh compares the tensor types it picks with the ones
 * fusion-gguf-gen writes.  usage: quantize IN.gguf OUT.gguf FTYPE [pure]
 * FTYPE is llama.h's llama_ftype number (15 Q4_K_M, 17 Q5_K_M, 30 IQ4_XS, 38 MXFP4_MOE). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: quantize IN.gguf OUT.gguf FTYPE [pure]\n");
        return 2;
    }
    llama_backend_init();
    llama_model_quantize_params p = llama_model_quantize_default_params();
    p.ftype = (enum llama_ftype)atoi(argv[3]);
    p.nthread = 1;
    p.pure = argc == 5 && strcmp(argv[4], "pure") == 0;
    return llama_model_quantize(argv[1], argv[2], &p) ? 1 : 0;
}
