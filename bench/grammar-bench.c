/* grammar-bench: the cost of constrained decoding on a model's vocabulary: indexing the
 * vocabulary once (gr_vocab_build), then the token mask of every step while a JSON document
 * is generated (fed back token by token, as the engine does), split into steps inside a string (the fast path) and the
 * others.  The document is fed as the longest allowed token that matches its next bytes
 * (the tokenizer's own split may not be allowed: a synthetic SentencePiece vocabulary
 * without a space piece encodes spaces as the bytes of U+2581, which JSON does not take as
 * whitespace).  Usage: grammar-bench MODEL.gguf [repeats] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "engine/gguf.h"
#include "engine/grammar.h"
#include "engine/tokenizer.h"

/* A document of the kind a structured output holds: keys, prose, numbers, nesting. */
static const char doc[] =
    "{\n  \"title\": \"The little girl and the dragon\",\n  \"year\": 2024,\n"
    "  \"rating\": 4.75,\n  \"tags\": [\"story\", \"dragon\", \"friendship\"],\n"
    "  \"characters\": [\n    {\"name\": \"Lily\", \"age\": 7, \"brave\": true},\n"
    "    {\"name\": \"Spark\", \"age\": 312, \"brave\": false, \"note\": null}\n  ],\n"
    "  \"summary\": \"Once upon a time, a little girl named Lily met a dragon who was "
    "afraid of the dark. She gave him a lantern, and they became friends.\",\n"
    "  \"quote\": \"\\\"Be kind,\\\" said Lily.\\nThe end \\u2764\"\n}";

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *what, double *t, int n)
{
    if (n == 0)
        return;
    qsort(t, (size_t)n, sizeof *t, cmp_d);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += t[i];
    printf("  %-22s %5d steps: mean %8.1f us, median %8.1f us, p90 %8.1f us, max %8.1f us\n",
           what, n, sum / n * 1e6, t[n / 2] * 1e6, t[n * 9 / 10] * 1e6, t[n - 1] * 1e6);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: grammar-bench MODEL.gguf [repeats]\n");
        return 2;
    }
    int repeats = argc > 2 ? atoi(argv[2]) : 5;
    char err[256];
    gguf_t *g;
    tok_t *t;
    if (gguf_open(&g, argv[1], err, sizeof err) < 0 || tok_load(&t, g, err, sizeof err) < 0) {
        fprintf(stderr, "grammar-bench: %s\n", err);
        return 1;
    }
    double t0 = fd_now_s();
    gr_vocab_t *v;
    if (gr_vocab_build(&v, t) < 0) {
        fprintf(stderr, "grammar-bench: out of memory\n");
        return 1;
    }
    double t_build = fd_now_s() - t0;
    gr_spec_t *spec;
    if (gr_spec_json(&spec, true) < 0)
        return 1;
    const int32_t V = tok_n_vocab(t);
    const size_t n_doc = sizeof doc - 1;
    size_t n_ids = n_doc; /* at most one token per byte */
    printf("%s: %d tokens (%s), %zu trie nodes, vocabulary indexed in %.1f ms; "
           "document of %zu bytes, json_object, %d repeats\n",
           argv[1], (int)V, tok_kind(t) == TOK_SPM ? "SPM" : "BPE",
           gr_vocab_trie_nodes(v), t_build * 1e3, n_doc, repeats);
    uint32_t *allow = calloc(((size_t)tok_n_vocab(t) + 31) / 32, sizeof *allow);
    size_t cap = (n_ids + 1) * (size_t)repeats;
    double *ts = malloc(cap * sizeof *ts), *to = malloc(cap * sizeof *to), *ta = malloc(cap * sizeof *ta);
    int n_s = 0, n_o = 0, n_a = 0;
    long allowed_s = 0, allowed_o = 0;
    for (int r = 0; r < repeats; r++) {
        gr_matcher_t *m;
        if (gr_matcher_new(&m, spec, v) < 0)
            return 1;
        size_t at = 0, steps = 0;
        for (;;) {
            bool in_str = gr_in_string(gr_matcher_state(m));
            double a = fd_now_s();
            int allowed = gr_matcher_mask(m, allow);
            double dt = fd_now_s() - a;
            ta[n_a++] = dt;
            if (in_str) {
                ts[n_s++] = dt;
                allowed_s += allowed;
            } else {
                to[n_o++] = dt;
                allowed_o += allowed;
            }
            steps++;
            if (at == n_doc) {
                if (!((allow[tok_eos(t) >> 5] >> (tok_eos(t) & 31)) & 1)) {
                    fprintf(stderr, "grammar-bench: no end of generation after the document\n");
                    return 1;
                }
                break;
            }
            int32_t next = -1;
            size_t best = 0;
            for (int32_t k = 0; k < V; k++) {
                size_t len;
                const uint8_t *b = gr_vocab_bytes(v, k, &len);
                if (b && len > best && len <= n_doc - at && memcmp(b, doc + at, len) == 0 &&
                    ((allow[k >> 5] >> (k & 31)) & 1)) {
                    best = len;
                    next = k;
                }
            }
            if (next < 0 || gr_matcher_accept(m, next) < 0) {
                fprintf(stderr, "grammar-bench: no allowed token at byte %zu\n", at);
                return 1;
            }
            at += best;
        }
        if (r == 0)
            printf("  the document took %zu steps\n", steps);
        gr_matcher_free(m);
    }
    report("every step", ta, n_a);
    report("inside a string", ts, n_s);
    report("structure (the rest)", to, n_o);
    printf("  allowed tokens on average: %.0f inside strings, %.0f elsewhere\n",
           n_s ? (double)allowed_s / n_s : 0.0, n_o ? (double)allowed_o / n_o : 0.0);
    free(ts);
    free(to);
    free(ta);
    free(allow);
    gr_spec_unref(spec);
    gr_vocab_free(v);
    tok_free(t);
    gguf_close(g);
    return 0;
}
