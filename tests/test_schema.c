/* test_schema.c: proves the JSON Schema compiler (server/schema.c): each supported keyword
 * accepts the documents the schema allows and refuses the others (checked against a small
 * schema validator written here), properties come in order with optional ones left out,
 * $ref recursion works, every unsupported keyword or malformed schema is refused with its
 * keyword and place named; and that stories260K, sampling at temperature 1 under a schema,
 * writes only documents that validate (or, cut by max_tokens, valid prefixes). */
#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>

#include "common/fd.h"
#include "engine/engine.h"
#include "engine/grammar.h"
#include "server/schema.h"
#include "tests/gen_collect.h"
#include "tests/testutil.h"

#define REQUIRE(cond, ...)                                                    \
    do {                                                                      \
        if (!(cond))                                                          \
            ck_abort_msg(__VA_ARGS__);                                        \
    } while (0)

/* ---- a validator for the subset, by the JSON Schema definitions ---- */

static bool validate(const cJSON *v, const cJSON *s, const cJSON *root);

static const cJSON *deref(const cJSON *root, const char *ref)
{
    if (strcmp(ref, "#") == 0)
        return root;
    const char *c = strncmp(ref, "#/$defs/", 8) == 0 ? "$defs" : "definitions";
    const char *name = strchr(ref + 2, '/') + 1;
    return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, c), name);
}

static bool has_type(const cJSON *v, const char *t)
{
    if (!strcmp(t, "object"))
        return cJSON_IsObject(v);
    if (!strcmp(t, "array"))
        return cJSON_IsArray(v);
    if (!strcmp(t, "string"))
        return cJSON_IsString(v);
    if (!strcmp(t, "number"))
        return cJSON_IsNumber(v);
    if (!strcmp(t, "integer"))
        return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble);
    if (!strcmp(t, "boolean"))
        return cJSON_IsBool(v);
    return cJSON_IsNull(v);
}

static bool validate(const cJSON *v, const cJSON *s, const cJSON *root)
{
    if (cJSON_IsBool(s))
        return cJSON_IsTrue(s);
    const cJSON *k;
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "$ref")))
        return validate(v, deref(root, k->valuestring), root);
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "anyOf")) ||
        (k = cJSON_GetObjectItemCaseSensitive(s, "oneOf"))) {
        int n = 0;
        const cJSON *a;
        cJSON_ArrayForEach(a, k) n += validate(v, a, root);
        if (strcmp(k->string, "oneOf") == 0 ? n != 1 : n < 1)
            return false;
    }
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "allOf"))) {
        const cJSON *a;
        cJSON_ArrayForEach(a, k) if (!validate(v, a, root)) return false;
    }
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "type"))) {
        bool ok = false;
        if (cJSON_IsString(k)) {
            ok = has_type(v, k->valuestring);
        } else {
            const cJSON *t;
            cJSON_ArrayForEach(t, k) ok |= has_type(v, t->valuestring);
        }
        if (!ok)
            return false;
    }
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "enum"))) {
        bool ok = false;
        const cJSON *e;
        cJSON_ArrayForEach(e, k) ok |= cJSON_Compare(v, e, true);
        if (!ok)
            return false;
    }
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "const")) && !cJSON_Compare(v, k, true))
        return false;
    if (cJSON_IsObject(v)) {
        const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
        const cJSON *addl = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
        const cJSON *m;
        cJSON_ArrayForEach(m, v)
        {
            const cJSON *ps = props ? cJSON_GetObjectItemCaseSensitive(props, m->string) : NULL;
            if (ps ? !validate(m, ps, root) : (addl && !validate(m, addl, root)))
                return false;
        }
        const cJSON *r;
        cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(s, "required"))
        {
            if (!cJSON_GetObjectItemCaseSensitive(v, r->valuestring))
                return false;
        }
    }
    if (cJSON_IsArray(v)) {
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items"), *it;
        int n = 0;
        cJSON_ArrayForEach(it, v)
        {
            n++;
            if (items && !validate(it, items, root))
                return false;
        }
        const cJSON *mn = cJSON_GetObjectItemCaseSensitive(s, "minItems");
        const cJSON *mx = cJSON_GetObjectItemCaseSensitive(s, "maxItems");
        if ((mn && n < mn->valueint) || (mx && n > mx->valueint))
            return false;
    }
    return true;
}

/* ---- helpers ---- */

static gr_spec_t *compile_text(const char *text, int *rc, char *err, size_t errlen, char *path)
{
    cJSON *j = cJSON_Parse(text);
    ck_assert_msg(j, "test schema is not JSON: %s", text);
    gr_spec_t *g = NULL;
    *rc = sch_compile(j, &g, err, errlen, path, 256);
    cJSON_Delete(j);
    return g;
}

/* 1 complete, 0 prefix, -1 refused */
static int run(const gr_spec_t *g, const char *s)
{
    gr_state_t st;
    gr_start(g, &st);
    if (gr_feed_bytes(g, &st, s, strlen(s)) < 0)
        return -1;
    return gr_accepting(g, &st) ? 1 : 0;
}

typedef struct sch_case {
    const char *schema;
    const char *good[6];        /* documents the output may be */
    const char *bad[8];         /* documents it may not be (some valid by the schema but not
                                   in the order or form the generator uses: marked !) */
} sch_case_t;

static const sch_case_t cases[] = {
    { "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":"
      "\"integer\"},\"ok\":{\"type\":\"boolean\"}},\"required\":[\"name\",\"ok\"],"
      "\"additionalProperties\":false}",
      { "{\"name\":\"a\",\"age\":3,\"ok\":true}", "{\"name\":\"\",\"ok\":false}",
        "{ \"name\" : \"x\" , \"ok\" : true }" },
      { "{\"name\":\"a\"}", "{\"ok\":true,\"name\":\"a\"}", "{\"name\":\"a\",\"age\":1.5,\"ok\":true}",
        "{\"name\":\"a\",\"ok\":true,\"x\":1}", "{\"name\":3,\"ok\":true}", "[]" } },
    { "{\"type\":\"array\",\"items\":{\"enum\":[\"red\",\"green\",\"blue\",7]},\"minItems\":1,"
      "\"maxItems\":3}",
      { "[\"red\"]", "[7, \"blue\", \"red\"]" },
      { "[]", "[\"red\",\"red\",\"red\",\"red\"]", "[\"Red\"]", "[8]", "[\"r\"]" } },
    { "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
      "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"},\"maxItems\":2}},"
      "\"required\":[\"v\"]}},\"$ref\":\"#/$defs/node\"}",
      { "{\"v\":1}", "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[]},{\"v\":-3}]}" },
      { "{\"v\":1,\"kids\":[{}]}", "{\"kids\":[]}", "{\"v\":1,\"kids\":[{\"v\":1},{\"v\":1},{\"v\":1}]}" } },
    { "{\"type\":[\"integer\",\"null\",\"string\"]}",
      { "12", "null", "\"s\"", "-0" },
      { "1.5", "true", "{}" } },
    { "{\"type\":\"object\",\"properties\":{\"c\":{\"anyOf\":[{\"type\":\"string\",\"enum\":[\"a\","
      "\"b\",3]},{\"type\":\"null\"}]},\"k\":{\"const\":{\"x\":[1,true]}}},\"required\":[\"c\","
      "\"k\"]}",
      { "{\"c\":\"a\",\"k\":{\"x\":[1,true]}}", "{\"c\":null,\"k\":{\"x\":[1,true]}}" },
      { "{\"c\":3,\"k\":{\"x\":[1,true]}}", "{\"c\":\"a\",\"k\":{\"x\":[1, true]}}", "{\"c\":\"a\"}" } },
    { "{\"type\":\"object\",\"additionalProperties\":{\"type\":\"number\"}}",
      { "{}", "{\"a\":1,\"b\":2e3}" },
      { "{\"a\":\"x\"}", "{\"a\":null}" } },
    { "{\"title\":\"T\",\"description\":\"d\",\"required\":[\"id\"],\"allOf\":[true]}", { NULL }, { NULL } },
    { "{\"properties\":{\"id\":{}},\"required\":[\"id\",\"extra\"]}",
      { "{\"id\":[1,{}],\"extra\":null}" },
      { "{\"id\":1}", "{\"extra\":1,\"id\":1}" } },
    { "true", { "1", "[{}]", "\"x\"" }, { "" } },
};

START_TEST(test_accepts)
{
    for (size_t c = 0; c < FD_ARRAY_LEN(cases); c++) {
        const sch_case_t *k = &cases[c];
        char err[256], path[256];
        int rc;
        gr_spec_t *g = compile_text(k->schema, &rc, err, sizeof err, path);
        if (!k->good[0] && !k->bad[0]) {
            /* allOf beside other keywords: refused, not half-applied */
            ck_assert_int_eq(rc, FD_EUNSUP);
            ck_assert_msg(strstr(err, "allOf"), "%s", err);
            continue;
        }
        ck_assert_msg(rc == 0, "schema %zu: %s at %s", c, err, path);
        cJSON *s = cJSON_Parse(k->schema);
        for (int i = 0; i < 6 && k->good[i]; i++) {
            ck_assert_msg(run(g, k->good[i]) == 1, "schema %zu refuses %s", c, k->good[i]);
            cJSON *v = cJSON_Parse(k->good[i]);
            ck_assert_msg(v && validate(v, s, s), "validator refuses %s", k->good[i]);
            cJSON_Delete(v);
        }
        for (int i = 0; i < 8 && k->bad[i]; i++)
            ck_assert_msg(run(g, k->bad[i]) != 1, "schema %zu accepts %s", c, k->bad[i]);
        cJSON_Delete(s);
        gr_spec_unref(g);
    }
}
END_TEST

START_TEST(test_refusals)
{
    static const struct {
        const char *schema;
        int rc;
        const char *msg;        /* in the message */
        const char *path;
    } bad[] = {
        { "{\"type\":\"string\",\"minLength\":3}", FD_EUNSUP, "minLength", "/minLength" },
        { "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"pattern\":\"x\"}}}",
          FD_EUNSUP, "pattern", "/properties/a/pattern" },
        { "{\"type\":\"integer\",\"minimum\":0}", FD_EUNSUP, "minimum", "/minimum" },
        { "{\"type\":\"string\",\"format\":\"date\"}", FD_EUNSUP, "format", "/format" },
        { "{\"items\":[{\"type\":\"string\"}]}", FD_EUNSUP, "tuples", "/items" },
        { "{\"prefixItems\":[]}", FD_EUNSUP, "prefixItems", "/prefixItems" },
        { "{\"not\":{}}", FD_EUNSUP, "not", "/not" },
        { "{\"anyOf\":[{\"type\":\"string\"},{\"enum\":[\"a\"]}]}", FD_EUNSUP, "anyOf", "" },
        { "{\"$ref\":\"#/$defs/x\",\"type\":\"object\"}", FD_EUNSUP, "$ref", "" },
        { "{\"$ref\":\"http://x/y\"}", FD_EUNSUP, "$ref", "" },
        { "{\"$ref\":\"#/$defs/missing\"}", -EINVAL, "not defined", "" },
        { "{\"properties\":{\"a\":{\"$defs\":{}}}}", FD_EUNSUP, "top", "/properties/a/$defs" },
        { "{\"type\":\"object\",\"properties\":{\"a\":{}},\"additionalProperties\":{\"type\":"
          "\"string\"}}", FD_EUNSUP, "additionalProperties", "/additionalProperties" },
        { "{\"type\":\"strng\"}", -EINVAL, "strng", "" },
        { "{\"type\":[]}", -EINVAL, "empty", "" },
        { "{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", -EINVAL, "minItems", "" },
        { "{\"type\":\"array\",\"minItems\":-1}", -EINVAL, "minItems", "" },
        { "{\"enum\":[]}", -EINVAL, "enum", "" },
        { "{\"type\":\"string\",\"enum\":[1,2]}", -EINVAL, "type", "" },
        { "{\"enum\":[1],\"const\":1}", FD_EUNSUP, "enum", "" },
        { "{\"required\":\"a\"}", -EINVAL, "required", "" },
        { "false", -EINVAL, "false", "" },
        { "[]", -EINVAL, "object or a boolean", "" },
        { "{\"$defs\":{\"a\":{\"anyOf\":[{\"$ref\":\"#/$defs/a\"},{\"type\":\"null\"}]}},"
          "\"$ref\":\"#/$defs/a\"}", FD_EUNSUP, "anyOf", "/$defs/a" },
        { "{\"properties\":{\"a\":{\"properties\":{\"b\":{\"uniqueItems\":true}}}}}", FD_EUNSUP,
          "uniqueItems", "/properties/a/properties/b/uniqueItems" },
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(bad); i++) {
        char err[256] = "", path[256] = "";
        int rc;
        gr_spec_t *g = compile_text(bad[i].schema, &rc, err, sizeof err, path);
        ck_assert_msg(rc == bad[i].rc, "%s: rc %d, want %d (%s)", bad[i].schema, rc, bad[i].rc,
                      err);
        ck_assert_ptr_null(g);
        ck_assert_msg(strstr(err, bad[i].msg), "%s: message [%s] lacks %s", bad[i].schema,
                      err, bad[i].msg);
        if (bad[i].path[0])
            ck_assert_msg(strcmp(path, bad[i].path) == 0, "%s: path [%s], want %s",
                          bad[i].schema, path, bad[i].path);
    }
}
END_TEST

/* ---- stories260K under a schema ---- */

static int32_t piece_id(const tok_t *t, const char *text, const char *byte_form)
{
    int32_t id = tok_find(t, text);
    return id >= 0 ? id : tok_find(t, byte_form);
}

START_TEST(test_engine_schemas)
{
    eng_params_t p;
    eng_params_default(&p);
    p.model_path = tu_shared("models/stories260K.gguf", 1);
    p.threads = 1;
    p.max_running = 8;
    p.check = true;
    char err[256], path[256];
    eng_t *e;
    ck_assert_msg(eng_open(&e, &p, err, sizeof err) == 0, "%s", err);
    const tok_t *t = eng_tokenizer(e);
    /* closing quotes, brackets and braces favoured and whitespace disfavoured (the mask
     * still decides what is valid): stories260K would otherwise write stories inside every
     * string and pad every gap with whitespace up to its bound */
    eng_logit_bias_t bias[] = { { piece_id(t, "}", "<0x7D>"), 10 },
                                { piece_id(t, "]", "<0x5D>"), 10 },
                                { piece_id(t, "\"", "<0x22>"), 5 },
                                { piece_id(t, "\xe2\x96\x81", "<0x20>"), -4 },
                                { piece_id(t, "\n", "<0x0A>"), -4 } };
    int32_t ids[64];
    size_t n_ids;
    const char *prompt = "Once upon a time";
    ck_assert_int_eq(tok_encode(t, prompt, strlen(prompt), true, false, ids, 64, &n_ids), 0);
    enum { N = 24, MAXT = 160 };
    gen_t *out = calloc(N, sizeof *out);
    for (size_t c = 0; c < FD_ARRAY_LEN(cases); c++) {
        if (!cases[c].good[0])
            continue;
        int rc;
        gr_spec_t *g = compile_text(cases[c].schema, &rc, err, sizeof err, path);
        ck_assert_int_eq(rc, 0);
        cJSON *s = cJSON_Parse(cases[c].schema);
        for (int i = 0; i < N; i++) {
            gen_init(&out[i]);
            eng_request_t q;
            memset(&q, 0, sizeof q);
            q.prompt = ids;
            q.n_prompt = n_ids;
            q.max_tokens = MAXT;
            eng_sampling_default(&q.sampling);
            q.sampling.seed = (uint64_t)(100 * c + (size_t)i);
            q.sampling.has_seed = true;
            q.sampling.grammar = g;
            q.sampling.logit_bias = bias;
            q.sampling.n_logit_bias = (int)FD_ARRAY_LEN(bias);
            q.on_event = gen_event;
            q.ud = &out[i];
            uint64_t id;
            ck_assert_msg(eng_submit(e, &q, &id, err, sizeof err) == 0, "%s", err);
        }
        int stops = 0;
        for (int i = 0; i < N; i++) {
            gen_t *o = &out[i];
            gen_wait(o);
            if (o->finish == ENG_FINISH_STOP) {
                stops++;
                cJSON *v = cJSON_Parse(o->text);
                REQUIRE(v && validate(v, s, s), "schema %zu: [%s] does not validate", c,
                        o->text);
                cJSON_Delete(v);
            } else {
                REQUIRE(o->finish == ENG_FINISH_LENGTH && o->n_tok == MAXT,
                        "schema %zu: finish %d after %d tokens", c, o->finish, o->n_tok);
                REQUIRE(run(g, o->text) >= 0, "schema %zu: [%s] is no prefix", c, o->text);
            }
        }
        fprintf(stderr, "schema %zu: %d of %d stopped\n", c, stops, N);
        /* free keys and numbers ramble on, so some schemas finish rarely: a few documents
         * that complete still prove the point, none would prove nothing */
        ck_assert_msg(stops >= 2, "schema %zu: only %d of %d finished", c, stops, N);
        cJSON_Delete(s);
        gr_spec_unref(g);
    }
    free(out);
    eng_close(e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("schema");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_accepts);
    tcase_add_test(tc, test_refusals);
    tcase_add_test(tc, test_engine_schemas);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
