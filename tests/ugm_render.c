/* ugm_render: the test helper that prints how engine/tokenizer.c tokenizes texts with the
 * vocabulary of the GGUF file argv[1] (any tokenizer kind; written for "t5"), for
 * tests/test_ugm_spm.py to compare with SentencePiece.  Reads one text per stdin line, as
 * hex; prints, per line, the ids without special tokens, comma-separated, then a tab and the
 * hex of their decoding (strip_leading_space on).  With --time, prints on stderr the load time
 * and the encoding time alone (the texts' bytes, the ids, seconds: BENCHMARKS.md).  Exits 2
 * on bad input, 1 when the file's tokenizer does not load (the message on stderr). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

int main(int argc, char **argv)
{
    if (argc != 2 && !(argc == 3 && strcmp(argv[2], "--time") == 0))
        return 2;
    const bool timed = argc == 3;
    double t0 = fd_now_s(), t_enc = 0;
    size_t n_bytes = 0, n_ids = 0;
    gguf_t *g;
    tok_t *t;
    char err[256];
    if (gguf_open(&g, argv[1], err, sizeof err)) {
        fprintf(stderr, "ugm_render: %s\n", err);
        return 1;
    }
    if (tok_load(&t, g, err, sizeof err)) {
        fprintf(stderr, "ugm_render: %s\n", err);
        gguf_close(g);
        return 1;
    }
    gguf_close(g);
    const double t_load = fd_now_s() - t0;
    static char line[1 << 16], text[1 << 15], dec[1 << 17];
    static int32_t ids[1 << 16];
    int rc = 0;
    while (fgets(line, sizeof line, stdin)) {
        size_t hl = strcspn(line, "\r\n"), n = hl / 2;
        for (size_t i = 0; i < n; i++) {
            unsigned v;
            if (sscanf(line + 2 * i, "%2x", &v) != 1) {
                rc = 2;
                goto out;
            }
            text[i] = (char)v;
        }
        size_t ni = 0, nd = 0;
        double te = fd_now_s();
        int rc_e = tok_encode(t, text, n, false, false, ids, sizeof ids / sizeof ids[0], &ni);
        t_enc += fd_now_s() - te;
        n_bytes += n;
        n_ids += ni;
        if (rc_e || tok_decode(t, ids, ni, false, true, dec, sizeof dec, &nd)) {
            rc = 2;
            goto out;
        }
        for (size_t k = 0; k < ni; k++)
            printf(k ? ",%d" : "%d", (int)ids[k]);
        printf("\t");
        for (size_t k = 0; k < nd; k++)
            printf("%02x", (unsigned char)dec[k]);
        printf("\n");
    }
out:
    if (timed)
        fprintf(stderr, "load %.4f s, encode %zu bytes -> %zu ids in %.4f s\n", t_load,
                n_bytes, n_ids, t_enc);
    tok_free(t);
    return rc;
}
