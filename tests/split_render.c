/* split_render: the test helper that prints how engine/tokenizer.c's BPE pre-tokenizer named
 * by argv[1] ("gpt-4o", "llama3", ...) splits texts, for tests/test_pretok_regex.py to compare
 * with the reference regex.  Reads one text per stdin line, as hex; prints, per line, the
 * pieces' end offsets in bytes, comma-separated.  Exits 2 on bad input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer.h"

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    const char *texts[] = {"a"};
    float scores[] = {0};
    int32_t types[] = {TOK_T_NORMAL};
    tok_spec_t s;
    tok_spec_init(&s);
    s.kind = TOK_BPE;
    s.pre = argv[1];
    s.n_tokens = 1;
    s.texts = texts;
    s.scores = scores;
    s.types = types;
    tok_t *t;
    char err[256];
    if (tok_build(&t, &s, err, sizeof err)) {
        fprintf(stderr, "split_render: %s\n", err);
        return 2;
    }
    static char line[1 << 16], text[1 << 15];
    static size_t ends[1 << 15];
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
        size_t ne = 0;
        if (tok_split(t, text, n, ends, sizeof ends / sizeof ends[0], &ne)) {
            rc = 2;
            goto out;
        }
        for (size_t k = 0; k < ne; k++)
            printf(k ? ",%zu" : "%zu", ends[k]);
        printf("\n");
    }
out:
    tok_free(t);
    return rc;
}
