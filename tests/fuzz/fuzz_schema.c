/* fuzz_schema.c: libFuzzer target for the JSON Schema compiler (server/schema.h) and the
 * JSON recognizer (engine/grammar.h).  The input is a schema, a NUL byte, then a document
 * (no NUL: json_object mode on the whole input).  A refused schema must say why; a compiled
 * one must drive the recognizer over the document byte by byte within its bounds (depth,
 * open containers, whitespace run), a state copy must go on as the original, and a document
 * the recognizer calls complete must be one JSON value that cJSON parses.  Seeds in
 * tests/fuzz/corpus/fuzz_schema/. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "engine/grammar.h"
#include "server/schema.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    gr_spec_t *g = NULL;
    const uint8_t *doc = data;
    size_t n_doc = size;
    if (nul) {
        char *text = malloc((size_t)(nul - data) + 1);
        if (!text)
            return 0;
        memcpy(text, data, (size_t)(nul - data));
        text[nul - data] = 0;
        cJSON *schema = cJSON_Parse(text);
        free(text);
        if (!schema)
            return 0;
        char err[256] = "", path[256] = "x";
        int rc = sch_compile(schema, &g, err, sizeof err, path, sizeof path);
        cJSON_Delete(schema);
        if (rc < 0) {
            CHECK(!g && err[0] && (path[0] == 0 || path[0] == '/'));
            CHECK(rc == FD_EUNSUP || rc == -EINVAL || rc == -ENOMEM);
            return 0;
        }
        CHECK(g && path[0] == 0);
        doc = nul + 1;
        n_doc = size - (size_t)(nul - data) - 1;
    } else if (gr_spec_json(&g, true) < 0) {
        return 0;
    }
    gr_state_t *s = malloc(sizeof *s), *c = malloc(sizeof *c);
    if (!s || !c)
        goto out;
    gr_start(g, s);
    size_t i = 0;
    for (; i < n_doc; i++) {
        gr_state_copy(c, s);
        if (gr_feed(g, c, doc[i]) < 0)
            break;
        gr_state_copy(s, c);
        CHECK(s->depth <= GR_MAX_DEPTH + 1 && s->nc <= GR_MAX_DEPTH && s->ws <= GR_MAX_WS);
        CHECK(!s->done || s->depth == 0);
    }
    if (i == n_doc && gr_accepting(g, s) && n_doc > 0) {
        char *text = malloc(n_doc + 1);
        if (text) {
            memcpy(text, doc, n_doc);
            text[n_doc] = 0;
            const char *end = NULL;
            cJSON *v = memchr(doc, 0, n_doc) ? NULL : cJSON_ParseWithOpts(text, &end, 1);
            CHECK(v);
            cJSON_Delete(v);
            free(text);
        }
    }
out:
    free(s);
    free(c);
    gr_spec_unref(g);
    return 0;
}
