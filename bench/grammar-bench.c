/* grammar-bench: the cost of constrained decoding on a model's vocabulary: indexing the
 * vocabulary once (gr_vocab_build), then the token mask of every step while a JSON document
 * is generated (fed back token by token, as the engine does), split into steps inside a string (the fast path) and the
 * others.  The document is fed as the longest allowed token that matches its next bytes
 * (the tokenizer's own split may not be allowed: a synthetic SentencePiece vocabulary
 * without a space piece encodes spaces as the bytes of U+2581, which JSON does not take as
 * whitespace).  Then the same document under a GBNF grammar of JSON (engine/gbnf.h: the
 * stack-set recognizer, every step a walk of the whole trie), and the mask's reference (every
 * token fed byte by byte) on a few steps of each, for the ratio.
 * Usage: grammar-bench MODEL.gguf [repeats] */
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

/* JSON as a GBNF grammar (RFC 8259, whitespace bounded as the JSON recognizer bounds it). */
static const char json_gbnf[] =
    "root   ::= value\n"
    "value  ::= object | array | string | number | \"true\" | \"false\" | \"null\"\n"
    "object ::= \"{\" ws ( member ( ws \",\" ws member )* ws )? \"}\"\n"
    "member ::= string ws \":\" ws value\n"
    "array  ::= \"[\" ws ( value ( ws \",\" ws value )* ws )? \"]\"\n"
    "string ::= \"\\\"\" ( [^\"\\\\\\x00-\\x1f] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" "
    "[0-9a-fA-F]{4} ) )* \"\\\"\"\n"
    "number ::= \"-\"? ( \"0\" | [1-9] [0-9]* ) ( \".\" [0-9]+ )? ( [eE] [-+]? [0-9]+ )?\n"
    "ws     ::= [ \\t\\n\\r]{0,24}\n";

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

/* Generates the document under spec, repeats times, and reports the mask's cost per step;
 * the reference mask is timed on the first 16 steps of the first run. */
static int run_doc(const char *label, gr_spec_t *spec, gr_vocab_t *v, const tok_t *t,
                   int repeats)
{
    const int32_t V = tok_n_vocab(t);
    const size_t n_doc = sizeof doc - 1;
    size_t n_ids = n_doc; /* at most one token per byte */
    printf(" %s:\n", label);
    uint32_t *allow = calloc(((size_t)V + 31) / 32, sizeof *allow);
    uint32_t *ref = calloc(((size_t)V + 31) / 32, sizeof *ref);
    size_t cap = (n_ids + 1) * (size_t)repeats;
    double *ts = malloc(cap * sizeof *ts), *to = malloc(cap * sizeof *to), *ta = malloc(cap * sizeof *ta);
    double tr[16], tf[16];
    int n_s = 0, n_o = 0, n_a = 0, n_r = 0;
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
            if (r == 0 && n_r < 16) {
                a = fd_now_s();
                int n_ref = gr_matcher_mask_ref(m, ref);
                tr[n_r] = fd_now_s() - a;
                tf[n_r++] = dt;
                if (n_ref != allowed ||
                    memcmp(ref, allow, ((size_t)V + 31) / 32 * sizeof *ref) != 0) {
                    fprintf(stderr, "grammar-bench: the mask differs from its reference\n");
                    return 1;
                }
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
    qsort(tr, (size_t)n_r, sizeof *tr, cmp_d);
    qsort(tf, (size_t)n_r, sizeof *tf, cmp_d);
    printf("  reference mask (each token fed byte by byte), first %d steps: median %.1f us, "
           "%.1fx the fast mask's %.1f us\n", n_r, tr[n_r / 2] * 1e6,
           tr[n_r / 2] / tf[n_r / 2], tf[n_r / 2] * 1e6);
    free(ts);
    free(to);
    free(ta);
    free(allow);
    free(ref);
    return 0;
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
    gr_spec_t *spec, *gspec;
    if (gr_spec_json(&spec, true) < 0)
        return 1;
    if (gr_spec_gbnf(&gspec, json_gbnf, sizeof json_gbnf - 1, err, sizeof err) < 0) {
        fprintf(stderr, "grammar-bench: %s\n", err);
        return 1;
    }
    printf("%s: %d tokens (%s), %zu trie nodes, vocabulary indexed in %.1f ms; "
           "document of %zu bytes, %d repeats\n",
           argv[1], (int)tok_n_vocab(t), tok_kind(t) == TOK_SPM ? "SPM" : "BPE",
           gr_vocab_trie_nodes(v), t_build * 1e3, sizeof doc - 1, repeats);
    int rc = run_doc("json_object (the JSON recognizer)", spec, v, t, repeats);
    if (rc == 0)
        rc = run_doc("GBNF grammar of JSON (the stack-set recognizer)", gspec, v, t, repeats);
    gr_spec_unref(spec);
    gr_spec_unref(gspec);
    gr_vocab_free(v);
    tok_free(t);
    gguf_close(g);
    return rc;
}
