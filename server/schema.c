/* schema.c: JSON Schema -> grammar spec (see schema.h for the subset).
 *
 * One recursive walk over the schema builds grammar nodes.  A $ref compiles its definition
 * the first time (each definition once); a reference met again while that definition is
 * still being compiled (recursion) gets a placeholder node, resolved once the definition's
 * node exists.  The walk keeps the JSON pointer of where it is, so every refusal names the
 * place and the keyword. */
#include "server/schema.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"

#define SCH_MAX_NEST 64 /* schema nesting the walk follows (its own stack) */
#define SCH_MAX_DEFS 256

typedef struct def {
    const cJSON *schema;
    int state;                  /* 0 not compiled, 1 being compiled, 2 done */
    int node;
    int placeholder;            /* -1, or a reference node to resolve to node */
} def_t;

typedef struct sc {
    gr_build_t *b;
    const cJSON *root;
    char *err;
    size_t errlen;
    char path[512];
    size_t plen;
    int nest;
    def_t defs[SCH_MAX_DEFS];
    int n_defs;
    int root_node;              /* -1 while the root is being compiled */
    int root_ph;                /* placeholder for "#" met inside the root, or -1 */
} sc_t;

static const char *const annotations[] = {
    "title", "description", "default", "examples", "$comment", "$schema", "$id",
    "deprecated", "readOnly", "writeOnly",
};

static const char *const keywords[] = {
    "type", "properties", "required", "additionalProperties", "items", "minItems",
    "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions",
};

static int fail(sc_t *c, int code, const char *fmt, ...) FD_PRINTF(3, 4);
static int fail(sc_t *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    return code;
}

/* Appends "/seg" to the path (JSON pointer escapes); returns the length to restore. */
static size_t path_push(sc_t *c, const char *seg)
{
    size_t old = c->plen;
    if (c->plen + 2 < sizeof c->path)
        c->path[c->plen++] = '/';
    for (const char *p = seg; *p && c->plen + 3 < sizeof c->path; p++) {
        if (*p == '~' || *p == '/') {
            c->path[c->plen++] = '~';
            c->path[c->plen++] = *p == '~' ? '0' : '1';
        } else {
            c->path[c->plen++] = *p;
        }
    }
    c->path[c->plen] = 0;
    return old;
}

static size_t path_push_index(sc_t *c, int i)
{
    char buf[16];
    snprintf(buf, sizeof buf, "%d", i);
    return path_push(c, buf);
}

static void path_pop(sc_t *c, size_t old)
{
    c->plen = old;
    c->path[old] = 0;
}

static bool in_list(const char *k, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(k, list[i]) == 0)
            return true;
    return false;
}

static int compile(sc_t *c, const cJSON *s);

static int nomem(sc_t *c)
{
    return fail(c, -ENOMEM, "out of memory");
}

/* ---- $ref ---- */

static int compile_def(sc_t *c, def_t *d, const char *name, const char *container)
{
    if (d->state == 2)
        return d->node;
    if (d->state == 1) {
        if (d->placeholder < 0 && (d->placeholder = gr_node_ref(c->b)) < 0)
            return nomem(c);
        return d->placeholder;
    }
    d->state = 1;
    size_t saved = c->plen;
    char keep[sizeof c->path];
    memcpy(keep, c->path, c->plen + 1);
    c->plen = 0;
    c->path[0] = 0;
    path_push(c, container);
    path_push(c, name);
    int node = compile(c, d->schema);
    if (node < 0)
        return node;            /* the path names the place inside the definition */
    memcpy(c->path, keep, saved + 1);
    c->plen = saved;
    d->node = node;
    d->state = 2;
    return node;
}

static int compile_ref(sc_t *c, const cJSON *ref)
{
    if (!cJSON_IsString(ref))
        return fail(c, -EINVAL, "'$ref' must be a string");
    const char *r = ref->valuestring;
    if (strcmp(r, "#") == 0) {
        if (c->root_node >= 0)
            return c->root_node;
        if (c->root_ph < 0 && (c->root_ph = gr_node_ref(c->b)) < 0)
            return nomem(c);
        return c->root_ph;
    }
    const char *container = NULL, *name = NULL;
    if (strncmp(r, "#/$defs/", 8) == 0) {
        container = "$defs";
        name = r + 8;
    } else if (strncmp(r, "#/definitions/", 14) == 0) {
        container = "definitions";
        name = r + 14;
    } else {
        return fail(c, FD_EUNSUP, "'$ref' \"%.100s\": only \"#\", \"#/$defs/<name>\" and "
                    "\"#/definitions/<name>\" are supported", r);
    }
    /* the name is a JSON pointer segment: ~1 is '/', ~0 is '~' */
    char key[256];
    size_t k = 0;
    for (const char *p = name; *p && k + 1 < sizeof key; p++) {
        if (p[0] == '~' && (p[1] == '0' || p[1] == '1')) {
            key[k++] = p[1] == '0' ? '~' : '/';
            p++;
        } else if (*p == '/') {
            return fail(c, FD_EUNSUP, "'$ref' \"%.100s\": only a definition itself can be "
                        "referred to, not a part of one", r);
        } else {
            key[k++] = *p;
        }
    }
    key[k] = 0;
    const cJSON *defs = cJSON_GetObjectItemCaseSensitive(c->root, container);
    const cJSON *d = cJSON_IsObject(defs) ? cJSON_GetObjectItemCaseSensitive(defs, key) : NULL;
    if (!d)
        return fail(c, -EINVAL, "'$ref' \"%.100s\" is not defined", r);
    for (int i = 0; i < c->n_defs; i++)
        if (c->defs[i].schema == d)
            return compile_def(c, &c->defs[i], key, container);
    if (c->n_defs == SCH_MAX_DEFS)
        return fail(c, FD_EUNSUP, "more than %d definitions", SCH_MAX_DEFS);
    def_t *nd = &c->defs[c->n_defs++];
    *nd = (def_t){ d, 0, -1, -1 };
    return compile_def(c, nd, key, container);
}

/* ---- types ---- */

enum { T_OBJECT = 1, T_ARRAY = 2, T_STRING = 4, T_NUMBER = 8, T_INTEGER = 16, T_BOOLEAN = 32,
       T_NULL = 64 };
static const char *const type_names[] = { "object", "array", "string", "number", "integer",
                                          "boolean", "null" };

static int parse_types(sc_t *c, const cJSON *t, unsigned *types)
{
    *types = 0;
    const cJSON *one = t;
    bool list = cJSON_IsArray(t);
    if (list && !t->child)
        return fail(c, -EINVAL, "'type' must not be an empty list");
    for (one = list ? t->child : t; one; one = list ? one->next : NULL) {
        if (!cJSON_IsString(one))
            return fail(c, -EINVAL, "'type' must be a string or a list of strings");
        unsigned bit = 0;
        for (size_t i = 0; i < FD_ARRAY_LEN(type_names); i++)
            if (strcmp(one->valuestring, type_names[i]) == 0)
                bit = 1u << i;
        if (!bit)
            return fail(c, -EINVAL, "'type' \"%.60s\" is not a JSON Schema type",
                        one->valuestring);
        if (*types & bit)
            return fail(c, -EINVAL, "'type' lists \"%s\" twice", one->valuestring);
        *types |= bit;
    }
    return 0;
}

static bool value_has_type(const cJSON *v, unsigned types)
{
    if (cJSON_IsObject(v))
        return types & T_OBJECT;
    if (cJSON_IsArray(v))
        return types & T_ARRAY;
    if (cJSON_IsString(v))
        return types & T_STRING;
    if (cJSON_IsBool(v))
        return types & T_BOOLEAN;
    if (cJSON_IsNull(v))
        return types & T_NULL;
    if (cJSON_IsNumber(v))
        return (types & T_NUMBER) ||
               ((types & T_INTEGER) && v->valuedouble == floor(v->valuedouble) &&
                fabs(v->valuedouble) < 9007199254740992.0);
    return false;
}

static int get_count(sc_t *c, const cJSON *s, const char *key, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, key);
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != floor(v->valuedouble))
        return fail(c, -EINVAL, "'%s' must be a non-negative integer", key);
    *out = v->valuedouble > 1e9 ? 1000000000 : (int)v->valuedouble;
    return 0;
}

static int compile_array(sc_t *c, const cJSON *s)
{
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
    int min = 0, max = -1, rc;
    if ((rc = get_count(c, s, "minItems", &min)) < 0 || (rc = get_count(c, s, "maxItems", &max)) < 0)
        return rc;
    if (max >= 0 && min > max)
        return fail(c, -EINVAL, "'minItems' (%d) above 'maxItems' (%d): no array satisfies "
                    "both", min, max);
    int node;
    if (!items) {
        node = gr_node_any(c->b);
    } else if (cJSON_IsArray(items)) {
        size_t old = path_push(c, "items");
        (void)old;
        return fail(c, FD_EUNSUP, "'items' as a list (tuples) is not supported");
    } else {
        size_t old = path_push(c, "items");
        node = compile(c, items);
        if (node < 0)
            return node;
        path_pop(c, old);
    }
    if (node < 0)
        return nomem(c);
    int a = gr_node_array(c->b, node, min, max);
    return a < 0 ? nomem(c) : a;
}

static int compile_object(sc_t *c, const cJSON *s)
{
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    const cJSON *addl = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    if (props && !cJSON_IsObject(props))
        return fail(c, -EINVAL, "'properties' must be an object");
    if (req && !cJSON_IsArray(req))
        return fail(c, -EINVAL, "'required' must be a list of strings");
    if (addl && !cJSON_IsBool(addl) && !cJSON_IsObject(addl))
        return fail(c, -EINVAL, "'additionalProperties' must be a boolean or a schema");
    const char *keys[GR_MAX_PROPS];
    int values[GR_MAX_PROPS];
    bool required[GR_MAX_PROPS];
    int n = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, props)
    {
        if (n == GR_MAX_PROPS)
            return fail(c, FD_EUNSUP, "more than %d properties in one object", GR_MAX_PROPS);
        size_t old = path_push(c, "properties");
        path_push(c, p->string);
        int v = compile(c, p);
        if (v < 0)
            return v;
        path_pop(c, old);
        keys[n] = p->string;
        values[n] = v;
        required[n] = false;
        n++;
    }
    const cJSON *r;
    cJSON_ArrayForEach(r, req)
    {
        if (!cJSON_IsString(r))
            return fail(c, -EINVAL, "'required' must be a list of strings");
        int k = 0;
        while (k < n && strcmp(keys[k], r->valuestring) != 0)
            k++;
        if (k == n) {
            /* required but not described: a property of any value, after the others */
            if (n == GR_MAX_PROPS)
                return fail(c, FD_EUNSUP, "more than %d properties in one object",
                            GR_MAX_PROPS);
            int any = gr_node_any(c->b);
            if (any < 0)
                return nomem(c);
            keys[n] = r->valuestring;
            values[n] = any;
            n++;
        }
        required[k] = true;
    }
    int extra = -1;
    if (n == 0) {
        if (!addl || cJSON_IsTrue(addl)) {
            extra = gr_node_any(c->b);
        } else if (cJSON_IsObject(addl)) {
            size_t old = path_push(c, "additionalProperties");
            extra = compile(c, addl);
            if (extra < 0)
                return extra;
            path_pop(c, old);
        }
        if (extra < 0 && !cJSON_IsFalse(addl))
            return nomem(c);
    } else if (cJSON_IsObject(addl) && addl->child) {
        path_push(c, "additionalProperties");
        return fail(c, FD_EUNSUP, "'additionalProperties' as a schema beside 'properties' is "
                    "not supported (use false)");
    }
    int o = gr_node_object(c->b, n, keys, values, required, extra);
    if (o == -EINVAL)
        return fail(c, -EINVAL, "'required' lists a property twice");
    return o < 0 ? nomem(c) : o;
}

static int compile_type(sc_t *c, const cJSON *s, unsigned bit)
{
    int n;
    switch (bit) {
    case T_OBJECT:
        return compile_object(c, s);
    case T_ARRAY:
        return compile_array(c, s);
    case T_STRING:
        n = gr_node_string(c->b);
        break;
    case T_NUMBER:
    case T_INTEGER:
        n = gr_node_number(c->b, bit == T_INTEGER);
        break;
    case T_BOOLEAN:
        n = gr_node_boolean(c->b);
        break;
    default:
        n = gr_node_null(c->b);
        break;
    }
    return n < 0 ? nomem(c) : n;
}

static int compile_enum(sc_t *c, const cJSON *s, const cJSON *en, const cJSON *cn,
                        unsigned types)
{
    const char *key = en ? "enum" : "const";
    if (en && (!cJSON_IsArray(en) || !en->child))
        return fail(c, -EINVAL, "'enum' must be a non-empty list");
    const cJSON *first = en ? en->child : cn;
    int count = 0, n = 0, rc = 0;
    for (const cJSON *v = first; v; v = en ? v->next : NULL)
        count++;
    char **texts = calloc((size_t)count, sizeof *texts);
    size_t *lens = calloc((size_t)count, sizeof *lens);
    if (!texts || !lens) {
        rc = nomem(c);
        goto out;
    }
    for (const cJSON *v = first; v; v = en ? v->next : NULL) {
        if (types && !value_has_type(v, types))
            continue;
        if (!(texts[n] = cJSON_PrintUnformatted(v))) {
            rc = nomem(c);
            goto out;
        }
        lens[n] = strlen(texts[n]);
        n++;
    }
    if (n == 0) {
        rc = fail(c, -EINVAL, "no value of '%s' has the schema's 'type'", key);
        goto out;
    }
    rc = gr_node_literals(c->b, n, (const char *const *)texts, lens);
    if (rc == -EINVAL)
        rc = fail(c, -EINVAL, "a value of '%s' cannot be written as JSON", key);
    else if (rc < 0)
        rc = nomem(c);
out:
    for (int i = 0; texts && i < n; i++)
        cJSON_free(texts[i]);
    free(texts);
    free(lens);
    (void)s;
    return rc;
}

static int compile_choice(sc_t *c, const cJSON *s, const char *key)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(s, key);
    if (!cJSON_IsArray(list) || !list->child)
        return fail(c, -EINVAL, "'%s' must be a non-empty list of schemas", key);
    int n = cJSON_GetArraySize(list);
    if (strcmp(key, "allOf") == 0) {
        if (n != 1)
            return fail(c, FD_EUNSUP, "'allOf' with more than one schema is not supported");
        size_t old = path_push(c, key);
        path_push_index(c, 0);
        int node = compile(c, list->child);
        if (node >= 0)
            path_pop(c, old);
        return node;
    }
    int *alts = calloc((size_t)n, sizeof *alts);
    if (!alts)
        return nomem(c);
    int i = 0, rc = 0;
    const cJSON *a;
    cJSON_ArrayForEach(a, list)
    {
        size_t old = path_push(c, key);
        path_push_index(c, i);
        if ((rc = compile(c, a)) < 0)
            goto out;
        path_pop(c, old);
        alts[i++] = rc;
    }
    char why[160];
    rc = gr_node_choice(c->b, n, alts, why, sizeof why);
    if (rc == -EINVAL)
        rc = fail(c, FD_EUNSUP, "'%s': %s (each alternative must start with a different "
                  "character: an object, an array, a string, a number, true/false, null)",
                  key, why);
    else if (rc < 0)
        rc = nomem(c);
out:
    free(alts);
    return rc;
}

static int compile(sc_t *c, const cJSON *s)
{
    if (++c->nest > SCH_MAX_NEST)
        return fail(c, FD_EUNSUP, "schemas nested more than %d deep", SCH_MAX_NEST);
    int rc;
    if (cJSON_IsBool(s)) {
        rc = cJSON_IsTrue(s) ? gr_node_any(c->b)
                             : fail(c, -EINVAL, "the schema false allows no value");
        if (rc == -ENOMEM)
            rc = nomem(c);
        goto out;
    }
    if (!cJSON_IsObject(s)) {
        rc = fail(c, -EINVAL, "a schema must be an object or a boolean");
        goto out;
    }
    const char *constraint = NULL; /* a constraining keyword other than the one in charge */
    int n_constraints = 0;
    const cJSON *k;
    cJSON_ArrayForEach(k, s)
    {
        if (in_list(k->string, annotations, FD_ARRAY_LEN(annotations)))
            continue;
        if (!in_list(k->string, keywords, FD_ARRAY_LEN(keywords))) {
            path_push(c, k->string);
            rc = fail(c, FD_EUNSUP, "the keyword '%.60s' is not supported in a response_format "
                      "schema", k->string);
            goto out;
        }
        if (strcmp(k->string, "$defs") == 0 || strcmp(k->string, "definitions") == 0) {
            if (s != c->root) {
                path_push(c, k->string);
                rc = fail(c, FD_EUNSUP, "'%s' is supported at the top of the schema only",
                          k->string);
                goto out;
            }
            if (!cJSON_IsObject(k)) {
                path_push(c, k->string);
                rc = fail(c, -EINVAL, "'%s' must be an object", k->string);
                goto out;
            }
            continue;
        }
        n_constraints++;
        if (!constraint || strcmp(k->string, "type") != 0)
            constraint = k->string;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    const cJSON *cn = cJSON_GetObjectItemCaseSensitive(s, "const");
    static const char *const alone[] = { "$ref", "anyOf", "oneOf", "allOf" };
    for (size_t i = 0; i < FD_ARRAY_LEN(alone); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, alone[i]);
        if (!v)
            continue;
        if (n_constraints > 1) {
            rc = fail(c, FD_EUNSUP, "'%s' beside other keywords (such as '%s') is not "
                      "supported", alone[i], strcmp(constraint, alone[i]) ? constraint : "type");
            goto out;
        }
        rc = i == 0 ? compile_ref(c, v) : compile_choice(c, s, alone[i]);
        goto out;
    }
    unsigned types = 0;
    if (type && (rc = parse_types(c, type, &types)) < 0)
        goto out;
    if (en || cn) {
        if (n_constraints > (type ? 2 : 1)) {
            rc = fail(c, FD_EUNSUP, "'%s' beside keywords other than 'type' is not supported",
                      en ? "enum" : "const");
            goto out;
        }
        rc = compile_enum(c, s, en, cn, types);
        goto out;
    }
    if (!type) {
        /* no type: the keywords present say what to make (what else the schema allows,
         * the output simply never uses) */
        if (cJSON_GetObjectItemCaseSensitive(s, "properties") ||
            cJSON_GetObjectItemCaseSensitive(s, "required") ||
            cJSON_GetObjectItemCaseSensitive(s, "additionalProperties"))
            types = T_OBJECT;
        else if (cJSON_GetObjectItemCaseSensitive(s, "items") ||
                 cJSON_GetObjectItemCaseSensitive(s, "minItems") ||
                 cJSON_GetObjectItemCaseSensitive(s, "maxItems"))
            types = T_ARRAY;
        else {
            rc = gr_node_any(c->b);
            if (rc < 0)
                rc = nomem(c);
            goto out;
        }
    }
    int nodes[8], n = 0;
    for (unsigned bit = 1; bit <= T_NULL; bit <<= 1) {
        if (!(types & bit))
            continue;
        if ((rc = compile_type(c, s, bit)) < 0)
            goto out;
        nodes[n++] = rc;
    }
    if (n == 1) {
        rc = nodes[0];
    } else {
        char why[160];
        rc = gr_node_choice(c->b, n, nodes, why, sizeof why);
        if (rc == -EINVAL)
            rc = fail(c, -EINVAL, "'type': %s", why);
        else if (rc < 0)
            rc = nomem(c);
    }
out:
    c->nest--;
    return rc;
}

/* Compiles schema into b; its root node in *node.  (#/$defs refs resolve inside schema.) */
static int compile_into(gr_build_t *b, const cJSON *schema, int *node, char *err, size_t errlen,
                        char *path, size_t pathlen)
{
    sc_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    c->b = b;
    c->err = err;
    c->errlen = errlen;
    c->root = schema;
    c->root_node = -1;
    c->root_ph = -1;
    int rc = compile(c, schema);
    if (rc >= 0) {
        *node = rc;
        c->root_node = rc;
        c->path[0] = 0;
        if (c->root_ph >= 0)
            gr_node_set_ref(c->b, c->root_ph, rc);
        for (int i = 0; i < c->n_defs; i++)
            if (c->defs[i].placeholder >= 0)
                gr_node_set_ref(c->b, c->defs[i].placeholder, c->defs[i].node);
        rc = 0;
    }
    if (path && pathlen)
        snprintf(path, pathlen, "%s", rc < 0 ? c->path : "");
    free(c);
    return rc;
}

int sch_compile_node(gr_build_t *b, const cJSON *schema, int *node, char *err, size_t errlen,
                     char *path, size_t pathlen)
{
    return compile_into(b, schema, node, err, errlen, path, pathlen);
}

int sch_compile(const cJSON *schema, gr_spec_t **out, char *err, size_t errlen, char *path,
                size_t pathlen)
{
    *out = NULL;
    gr_build_t *b;
    if (gr_build_new(&b) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int root = -1;
    int rc = compile_into(b, schema, &root, err, errlen, path, pathlen);
    if (rc == 0) {
        char why[160];
        rc = gr_build_finish(b, root, out, why, sizeof why);
        if (rc == -EINVAL)
            snprintf(err, errlen, "%s", why);
        else if (rc < 0)
            snprintf(err, errlen, "out of memory");
    }
    gr_build_free(b);
    return rc;
}
