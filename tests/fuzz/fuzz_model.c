/* fuzz_model.c: libFuzzer target for model loading: any bytes, as a GGUF file (an in-memory
 * file, so the real mmap path runs), go through llm_load (hyperparameters, tensor table,
 * tokenizer metadata, backend, fusion plan, KV cache).  A model that loads must then
 * tokenize and detokenize a little text, run two decoder steps and free cleanly, so a file
 * that slips past validation with shapes the kernels cannot take shows up as an ASan/UBSan
 * report.  Built by `make fuzz`; seeds in tests/fuzz/corpus/fuzz_model/ (gen_seeds_model). */
#define _GNU_SOURCE /* memfd_create */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/fd.h"
#include "common/log.h"
#include "engine/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile float sink;

static void run(llm_model_t *m, const uint8_t *data, size_t size)
{
    const llm_hparams_t *h = llm_hparams(m);
    if (h->n_vocab <= 0 || h->n_embd <= 0 || h->n_layer <= 0 || h->n_head <= 0 ||
        h->n_head_kv <= 0 || h->n_ctx != 16)
        abort();
    const tok_t *t = llm_tok(m);
    if (tok_n_vocab(t) != h->n_vocab)
        abort();
    static const char text[] = "the thing \xe4\xb8\xad 12 <|im_start|>\xff";
    int32_t ids[64];
    size_t n = 0;
    int rc = tok_encode(t, text, sizeof text - 1, true, true, ids, 64, &n);
    if (rc && rc != -ENOSPC)
        abort();
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (ids[i] < 0 || ids[i] >= h->n_vocab)
            abort();
    char out[512];
    size_t len;
    if (rc == 0 && n > 0)
        (void)tok_decode(t, ids, n, true, true, out, sizeof out, &len);

    /* Two steps: a 3-token prefill, then one token; ids drawn from the file's bytes. */
    int slot;
    if (llm_seq_alloc(m, &slot))
        abort();
    int32_t tk[3];
    for (int i = 0; i < 3; i++)
        tk[i] = (int32_t)(((uint32_t)data[(size * (size_t)(i + 1)) / 4] * 2654435761u) %
                          (uint32_t)h->n_vocab);
    float *logits = malloc((size_t)h->n_vocab * sizeof *logits);
    if (!logits)
        abort();
    llm_batch_entry_t e = {.slot = slot, .tokens = tk, .n_tokens = 3, .want_logits = true};
    rc = llm_decode(m, &e, 1, logits);
    if (rc == 0) {
        if (llm_seq_len(m, slot) != 3)
            abort();
        sink += logits[0] + logits[h->n_vocab - 1];
        e.n_tokens = 1;
        rc = llm_decode(m, &e, 1, logits);
        if (rc == 0)
            sink += logits[h->n_vocab / 2];
    }
    if (rc != 0 && rc != FD_EBACKEND && rc != -ENOMEM)
        abort();
    free(logits);
    llm_seq_free(m, slot);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd_log_set_level(FD_LOG_ERROR);
        fd = memfd_create("fuzz_model.gguf", 0);
        if (fd < 0)
            abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
        abort();

    llm_load_params_t p;
    llm_load_params_default(&p);
    p.path = path;
    p.threads = 1;
    p.n_ctx = 16;
    p.n_seq_max = 2;
    p.n_batch_max = 4;              /* the 3-token prefill stays in one sub-batch... */
    p.fusion = size & 1;            /* ...and both plans get inputs */
    llm_model_t *m = NULL;
    char err[512];
    int rc = llm_load(&m, &p, err, sizeof err);
    if (rc == 0) {
        run(m, data, size);
        llm_free(m);
    } else if (m || !err[0]) {
        abort();                    /* a refusal says why and leaves nothing behind */
    }
    return 0;
}
