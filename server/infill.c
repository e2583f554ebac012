/* infill.c: the FIM prompt (llama.cpp's layout and cuts, facts only) and llama-server's
 * native answer shape.  Token runs grow in one vector type; any failure unwinds through the
 * caller's free. */
#include <config.h>

#include "server/infill.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"

typedef struct ivec {
    int32_t *v;
    size_t n, cap;
} ivec_t;

static int iv_reserve(ivec_t *a, size_t more)
{
    if (a->n + more <= a->cap)
        return 0;
    size_t cap = a->cap ? a->cap : 64;
    while (cap < a->n + more)
        cap *= 2;
    int32_t *v = realloc(a->v, cap * sizeof *v);
    if (!v)
        return -ENOMEM;
    a->v = v;
    a->cap = cap;
    return 0;
}

static int iv_push(ivec_t *a, int32_t id)
{
    int rc = iv_reserve(a, 1);
    if (rc == 0)
        a->v[a->n++] = id;
    return rc;
}

static int iv_append(ivec_t *a, const int32_t *ids, size_t n)
{
    int rc = iv_reserve(a, n);
    if (rc == 0 && n) {
        memcpy(a->v + a->n, ids, n * sizeof *ids);
        a->n += n;
    }
    return rc;
}

/* Text appended as tokens: no BOS/EOS, special-token texts kept as text (llama-server
 * tokenizes every FIM input so). */
static int iv_text(ivec_t *a, const tok_t *t, const char *s, size_t len)
{
    if (!len)
        return 0;
    size_t n = 0, room = len + 8;
    for (;;) {
        int rc = iv_reserve(a, room);
        if (rc)
            return rc;
        rc = tok_encode(t, s, len, false, false, a->v + a->n, a->cap - a->n, &n);
        if (rc == 0) {
            a->n += n;
            return 0;
        }
        if (rc != -ENOSPC)
            return rc;
        room = n;
    }
}

int inf_check(const tok_t *t, char *msg, size_t cap)
{
    static const char *const what[3] = {"prefix", "suffix", "middle"};
    size_t o = 0;
    int missing = 0;
    if (cap)
        msg[0] = '\0';
    for (int k = 0; k < 3; k++) {
        if (tok_fim(t, k) >= 0)
            continue;
        if (!missing++ && cap)
            o += (size_t)snprintf(msg, cap, "Infill is not supported by this model: ");
        if (o < cap)
            o += (size_t)snprintf(msg + o, cap - o, "%s token is missing. ", what[k]);
    }
    return missing ? -ENOENT : 0;
}

static const char k_snippet[] = "\n\n--- snippet ---\n\n";

int inf_build(const tok_t *t, const inf_input_t *in, inf_prompt_t *out)
{
    memset(out, 0, sizeof *out);
    if (inf_check(t, NULL, 0))
        return -ENOENT;
    int32_t pre = tok_fim(t, TOK_FIM_PRE), suf = tok_fim(t, TOK_FIM_SUF);
    int32_t mid = tok_fim(t, TOK_FIM_MID), rep = tok_fim(t, TOK_FIM_REP);
    int32_t sep = tok_fim(t, TOK_FIM_SEP);
    ivec_t prefix = {0}, suffix = {0}, prompt = {0}, extra = {0}, all = {0};
    int rc;
    if ((rc = iv_text(&prefix, t, in->prefix, in->prefix_len)) ||
        (rc = iv_text(&suffix, t, in->suffix, in->suffix_len)) ||
        (rc = iv_text(&prompt, t, in->prompt, in->prompt_len)))
        goto done;
    /* the repo-level pattern (Qwen2.5-Coder): a repository header, each chunk under its
     * file name, then the current file's; without FIM_SEP each chunk follows a separator */
    if (rep >= 0 && ((rc = iv_push(&extra, rep)) || (rc = iv_text(&extra, t, "myproject\n", 10))))
        goto done;
    for (size_t i = 0; i < in->n_extra; i++) {
        const inf_chunk_t *c = &in->extra[i];
        if (sep >= 0) {
            /* the name and its newline are one text, as llama.cpp tokenizes them */
            const char *fn = c->filename ? c->filename : "tmp";
            size_t fl = c->filename ? c->filename_len : 3;
            char *line = malloc(fl + 1);
            if (!line) {
                rc = -ENOMEM;
                goto done;
            }
            memcpy(line, fn, fl);
            line[fl] = '\n';
            if (!(rc = iv_push(&extra, sep)))
                rc = iv_text(&extra, t, line, fl + 1);
            free(line);
            if (rc)
                goto done;
        } else if ((rc = iv_text(&extra, t, k_snippet, sizeof k_snippet - 1))) {
            goto done;
        }
        if ((rc = iv_text(&extra, t, c->text, c->text_len)))
            goto done;
    }
    if (sep >= 0 && ((rc = iv_push(&extra, sep)) || (rc = iv_text(&extra, t, "filename\n", 9))))
        goto done;

    long long nb = in->n_batch;
    long long take_pre = FD_MIN((long long)prefix.n, 3 * (nb / 4));
    long long take_suf = FD_MIN((long long)suffix.n,
                                FD_MAX(0LL, nb / 4 - (2 + (long long)prompt.n)));
    long long take_extra = FD_MIN((long long)extra.n,
                                  FD_MAX(0LL, (long long)in->n_ctx - nb -
                                                  2LL * in->n_predict));
    out->cut_prefix = prefix.n - (size_t)take_pre;
    out->cut_suffix = suffix.n - (size_t)take_suf;
    out->cut_extra = extra.n - (size_t)take_extra;

    const int32_t *p_ids = prefix.v + out->cut_prefix, *s_ids = suffix.v;
    if ((rc = iv_append(&all, extra.v + out->cut_extra, (size_t)take_extra)))
        goto done;
    if (tok_add_bos(t) && tok_bos(t) >= 0 && (rc = iv_push(&all, tok_bos(t))))
        goto done;
    if (in->spm) {
        if ((rc = iv_push(&all, suf)) || (rc = iv_append(&all, s_ids, (size_t)take_suf)) ||
            (rc = iv_push(&all, pre)) || (rc = iv_append(&all, p_ids, (size_t)take_pre)) ||
            (rc = iv_append(&all, prompt.v, prompt.n)))
            goto done;
    } else {
        if ((rc = iv_push(&all, pre)) || (rc = iv_append(&all, p_ids, (size_t)take_pre)) ||
            (rc = iv_append(&all, prompt.v, prompt.n)) || (rc = iv_push(&all, suf)) ||
            (rc = iv_append(&all, s_ids, (size_t)take_suf)))
            goto done;
    }
    if ((rc = iv_push(&all, mid)))
        goto done;
    out->ids = all.v;
    out->n = all.n;
    all.v = NULL;
done:
    free(all.v);
    free(extra.v);
    free(prompt.v);
    free(suffix.v);
    free(prefix.v);
    if (rc)
        memset(out, 0, sizeof *out);
    return rc;
}

void inf_prompt_free(inf_prompt_t *p)
{
    if (!p)
        return;
    free(p->ids);
    memset(p, 0, sizeof *p);
}

int inf_psm(const tok_t *t, bool bos, const int32_t *prefix, size_t n_prefix,
            const char *suffix, size_t suffix_len, int32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    if (inf_check(t, NULL, 0))
        return -ENOENT;
    ivec_t a = {0};
    int rc = 0;
    if ((bos && tok_bos(t) >= 0 && (rc = iv_push(&a, tok_bos(t)))) ||
        (rc = iv_push(&a, tok_fim(t, TOK_FIM_PRE))) || (rc = iv_append(&a, prefix, n_prefix)) ||
        (rc = iv_push(&a, tok_fim(t, TOK_FIM_SUF))) ||
        (rc = iv_text(&a, t, suffix, suffix_len)) || (rc = iv_push(&a, tok_fim(t, TOK_FIM_MID)))) {
        free(a.v);
        return rc;
    }
    *ids = a.v;
    *n = a.n;
    return 0;
}

/* ---------------------------------------------------------------- the native answer */

static cJSON *timings_json(const oai_timings_t *t, long long cache_n)
{
    cJSON *o = cJSON_CreateObject();
    double pn = (double)t->prompt_n, gn = (double)t->predicted_n;
    bool ok = o && oai_put(o, "cache_n", cJSON_CreateNumber((double)cache_n)) &&
              oai_put(o, "prompt_n", cJSON_CreateNumber(pn)) &&
              oai_put(o, "prompt_ms", cJSON_CreateNumber(t->prompt_ms)) &&
              oai_put(o, "prompt_per_token_ms",
                  cJSON_CreateNumber(pn > 0 ? t->prompt_ms / pn : 0)) &&
              oai_put(o, "prompt_per_second",
                  cJSON_CreateNumber(t->prompt_ms > 0 ? pn * 1e3 / t->prompt_ms : 0)) &&
              oai_put(o, "predicted_n", cJSON_CreateNumber(gn)) &&
              oai_put(o, "predicted_ms", cJSON_CreateNumber(t->predicted_ms)) &&
              oai_put(o, "predicted_per_token_ms",
                  cJSON_CreateNumber(gn > 0 ? t->predicted_ms / gn : 0)) &&
              oai_put(o, "predicted_per_second",
                  cJSON_CreateNumber(t->predicted_ms > 0 ? gn * 1e3 / t->predicted_ms : 0));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* The value at path "a/b/c" in o, or NULL. */
static const cJSON *at_path(const cJSON *o, const char *path)
{
    char key[128];
    while (o && *path) {
        const char *sl = strchr(path, '/');
        size_t l = sl ? (size_t)(sl - path) : strlen(path);
        if (l >= sizeof key || !cJSON_IsObject(o))
            return NULL;
        memcpy(key, path, l);
        key[l] = '\0';
        o = cJSON_GetObjectItemCaseSensitive(o, key);
        path += l + (sl ? 1 : 0);
    }
    return o;
}

char *inf_answer_json(const inf_answer_t *a)
{
    cJSON *o = cJSON_CreateObject();
    char *out = NULL;
    cJSON *toks = cJSON_CreateArray();
    bool ok = o && oai_put(o, "index", cJSON_CreateNumber(a->index)) &&
              oai_put(o, "content", oai_str_n(a->content, a->content_len)) &&
              oai_put(o, "tokens", toks);
    if (!ok && o && !cJSON_GetObjectItemCaseSensitive(o, "tokens"))
        cJSON_Delete(toks);
    for (size_t i = 0; ok && i < a->n_tokens; i++)
        ok = cJSON_AddItemToArray(toks, cJSON_CreateNumber(a->tokens[i]));
    ok = ok && oai_put(o, "id_slot", cJSON_CreateNumber(a->slot_known ? a->id_slot : -1)) &&
         oai_put(o, "stop", cJSON_CreateBool(a->stop));
    if (ok && a->probs)
        ok = oai_put(o, "completion_probabilities", cJSON_Duplicate(a->probs, true));
    if (ok && a->stop)
        ok = oai_put(o, "model", cJSON_CreateString(a->model ? a->model : ""));
    ok = ok && oai_put(o, "tokens_predicted", cJSON_CreateNumber((double)a->tokens_predicted)) &&
         oai_put(o, "tokens_evaluated", cJSON_CreateNumber((double)a->tokens_evaluated));
    if (ok && a->stop) {
        ok = (!a->prompt || oai_put(o, "prompt", oai_str_n(a->prompt, a->prompt_len))) &&
             oai_put(o, "has_new_line", cJSON_CreateBool(a->has_new_line)) &&
             oai_put(o, "truncated", cJSON_CreateBool(a->truncated)) &&
             oai_put(o, "stop_type", cJSON_CreateString(a->stop_type ? a->stop_type : "none")) &&
             oai_put(o, "stopping_word",
                 cJSON_CreateString(a->stopping_word ? a->stopping_word : "")) &&
             oai_put(o, "tokens_cached", cJSON_CreateNumber((double)a->tokens_cached)) &&
             (!a->settings ||
              oai_put(o, "generation_settings", cJSON_Duplicate(a->settings, true))) &&
             (!a->timings || oai_put(o, "timings", timings_json(a->timings, a->cache_n)));
    }
    if (ok && a->n_fields > 0) {
        cJSON *sel = cJSON_CreateObject();
        ok = sel != NULL;
        for (int i = 0; ok && i < a->n_fields; i++) {
            const cJSON *v = at_path(o, a->fields[i]);
            if (v && !cJSON_GetObjectItemCaseSensitive(sel, a->fields[i]))
                ok = oai_put(sel, a->fields[i], cJSON_Duplicate(v, true));
        }
        cJSON_Delete(o);
        o = sel;
    }
    if (ok)
        out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return out;
}
