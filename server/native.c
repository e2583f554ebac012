/* native.c: llama-server's response shapes (formats only, as its README documents them).
 * Every builder makes one cJSON tree and prints it; a failed allocation anywhere gives NULL. */
#include <config.h>

#include "server/native.h"

#include "engine/sampler.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *nat_error(int status, const char *type, const char *message)
{
    if (!type || strcmp(type, "service_unavailable_error") == 0)
        type = status == 503 ? "unavailable_error" : "server_error";
    cJSON *root = cJSON_CreateObject(), *e = cJSON_CreateObject();
    char *msg = oai_utf8_clean(message ? message : "", message ? strlen(message) : 0);
    bool ok = root && oai_put(root, "error", e) && oai_put(e, "code", cJSON_CreateNumber(status)) &&
              msg && oai_put(e, "message", cJSON_CreateString(msg)) &&
              oai_put(e, "type", cJSON_CreateString(type));
    free(msg);
    return oai_print(root, ok);
}

char *nat_error_ctx(long long n_prompt, int n_ctx)
{
    char msg[160];
    snprintf(msg, sizeof msg, "request (%lld tokens) exceeds the available context size (%d "
             "tokens), try increasing it", n_prompt, n_ctx);
    cJSON *root = cJSON_CreateObject(), *e = cJSON_CreateObject();
    bool ok = root && oai_put(root, "error", e) && oai_put(e, "code", cJSON_CreateNumber(400)) &&
              oai_put(e, "message", cJSON_CreateString(msg)) &&
              oai_put(e, "type", cJSON_CreateString("exceed_context_size_error")) &&
              oai_put(e, "n_prompt_tokens", cJSON_CreateNumber((double)n_prompt)) &&
              oai_put(e, "n_ctx", cJSON_CreateNumber(n_ctx));
    if (!root)
        cJSON_Delete(e);
    return oai_print(root, ok);
}

/* oai_token_logprobs writes each token as {token, logprob, bytes, top_logprobs}; the native
 * entries add the token id. */
static bool add_id(cJSON *entry, int32_t id)
{
    return cJSON_AddNumberToObject(entry, "id", id) != NULL;
}

/* post_sampling_probs: the entry's "logprob" becomes "prob" (its exponential), and
 * "top_logprobs" "top_probs". */
static bool to_prob(cJSON *entry)
{
    cJSON *lp = cJSON_DetachItemFromObjectCaseSensitive(entry, "logprob");
    if (!lp)
        return false;
    double v = exp(lp->valuedouble);
    cJSON_Delete(lp);
    if (!cJSON_AddNumberToObject(entry, "prob", v))
        return false;
    cJSON *tops = cJSON_DetachItemFromObjectCaseSensitive(entry, "top_logprobs");
    if (!tops)
        return true;
    cJSON_AddItemToObject(entry, "top_probs", tops);
    return true;
}

cJSON *nat_probs(const tok_t *tok, const oai_lp_t *lp, size_t n, bool post)
{
    char *text = oai_token_logprobs(tok, lp, n);
    cJSON *a = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!a)
        return NULL;
    bool ok = (size_t)cJSON_GetArraySize(a) == n;
    size_t i = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, a)
    {
        if (!ok)
            break;
        ok = add_id(it, lp[i].token);
        cJSON *tops = cJSON_GetObjectItemCaseSensitive(it, "top_logprobs"), *t;
        int k = 0;
        cJSON_ArrayForEach(t, tops)
        {
            ok = ok && k < lp[i].n_top && add_id(t, lp[i].top[k].token) && (!post || to_prob(t));
            k++;
        }
        ok = ok && (!post || to_prob(it));
        i++;
    }
    if (!ok) {
        cJSON_Delete(a);
        return NULL;
    }
    return a;
}

cJSON *nat_params_json(const nat_params_t *p)
{
    const eng_sampling_t *s = p->s;
    cJSON *o = cJSON_CreateObject(), *stop = cJSON_CreateArray(), *smp = cJSON_CreateArray();
    cJSON *brk = cJSON_CreateArray();
    bool ok = o && oai_put(o, "n_predict", cJSON_CreateNumber(p->n_predict)) &&
              /* llama-server's "random" seed value */
              oai_put(o, "seed",
                      cJSON_CreateNumber(s->has_seed ? (double)s->seed : 4294967295.0)) &&
              oai_put(o, "temperature", cJSON_CreateNumber(s->temperature)) &&
              oai_put(o, "dynatemp_range", cJSON_CreateNumber(s->dynatemp_range)) &&
              oai_put(o, "dynatemp_exponent", cJSON_CreateNumber(s->dynatemp_exponent)) &&
              oai_put(o, "top_k", cJSON_CreateNumber(s->top_k)) &&
              oai_put(o, "top_p", cJSON_CreateNumber(s->top_p)) &&
              oai_put(o, "min_p", cJSON_CreateNumber(s->min_p)) &&
              /* llama-server's "off" values: top_n_sigma -1, typical_p 1 */
              oai_put(o, "top_n_sigma", cJSON_CreateNumber(s->top_n_sigma > 0 ? s->top_n_sigma
                                                                            : -1)) &&
              oai_put(o, "xtc_probability", cJSON_CreateNumber(s->xtc_probability)) &&
              oai_put(o, "xtc_threshold", cJSON_CreateNumber(s->xtc_threshold)) &&
              oai_put(o, "typical_p", cJSON_CreateNumber(s->typical_p > 0 && s->typical_p < 1
                                                         ? s->typical_p : 1)) &&
              oai_put(o, "repeat_last_n", cJSON_CreateNumber(s->repeat_last_n)) &&
              oai_put(o, "repeat_penalty", cJSON_CreateNumber(s->repeat_penalty)) &&
              oai_put(o, "presence_penalty", cJSON_CreateNumber(s->presence_penalty)) &&
              oai_put(o, "frequency_penalty", cJSON_CreateNumber(s->frequency_penalty)) &&
              oai_put(o, "dry_multiplier", cJSON_CreateNumber(s->dry_multiplier)) &&
              oai_put(o, "dry_base", cJSON_CreateNumber(s->dry_base)) &&
              oai_put(o, "dry_allowed_length", cJSON_CreateNumber(s->dry_allowed_length)) &&
              oai_put(o, "dry_penalty_last_n", cJSON_CreateNumber(s->dry_penalty_last_n)) &&
              oai_put(o, "dry_sequence_breakers", brk) &&
              oai_put(o, "mirostat", cJSON_CreateNumber(s->mirostat)) &&
              oai_put(o, "mirostat_tau", cJSON_CreateNumber(s->mirostat_tau)) &&
              oai_put(o, "mirostat_eta", cJSON_CreateNumber(s->mirostat_eta)) &&
              oai_put(o, "stop", stop) &&
              oai_put(o, "max_tokens", cJSON_CreateNumber(p->n_predict)) &&
              oai_put(o, "n_keep", cJSON_CreateNumber(0)) &&
              oai_put(o, "n_discard", cJSON_CreateNumber(0)) &&
              oai_put(o, "ignore_eos", cJSON_CreateBool(p->ignore_eos)) &&
              oai_put(o, "stream", cJSON_CreateBool(p->stream)) &&
              oai_put(o, "logit_bias", cJSON_CreateArray()) &&
              oai_put(o, "n_probs", cJSON_CreateNumber(p->n_probs)) &&
              oai_put(o, "min_keep", cJSON_CreateNumber(0)) &&
              oai_put(o, "grammar", cJSON_CreateString(p->grammar       ? p->grammar
                                                        : p->json_schema ? "(json_schema)"
                                                                         : "")) &&
              oai_put(o, "samplers", smp) &&
              oai_put(o, "timings_per_token", cJSON_CreateFalse()) &&
              oai_put(o, "post_sampling_probs", cJSON_CreateBool(s->post_probs));
    if (!ok) {
        if (!o || !cJSON_GetObjectItemCaseSensitive(o, "dry_sequence_breakers"))
            cJSON_Delete(brk);
        if (!o || !cJSON_GetObjectItemCaseSensitive(o, "stop"))
            cJSON_Delete(stop);
        if (!o || !cJSON_GetObjectItemCaseSensitive(o, "samplers"))
            cJSON_Delete(smp);
        cJSON_Delete(o);
        return NULL;
    }
    for (int i = 0; ok && i < p->n_stop; i++)
        ok = oai_put(stop, NULL, cJSON_CreateString(p->stop[i]));
    static const char *const def_brk[] = {"\n", ":", "\"", "*"};
    int nb = s->n_dry_breakers > 0 ? s->n_dry_breakers : (int)FD_ARRAY_LEN(def_brk);
    for (int i = 0; ok && i < nb; i++)
        ok = oai_put(brk, NULL, cJSON_CreateString(s->n_dry_breakers > 0 ? s->dry_breakers[i]
                                                                         : def_brk[i]));
    /* the chain in order (engine/sampler.h), under llama-server's names: the request's
     * "samplers", else fusiond's default chain (Mirostat replaces it when on) */
    eng_sampling_t chain = *s;
    chain.mirostat = 0;
    uint8_t order[SMP_MAX_ORDER];
    int n_order = smp_chain_order(&chain, order);
    for (int i = 0; ok && i < n_order; i++)
        ok = oai_put(smp, NULL, cJSON_CreateString(smp_step_name(order[i])));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    /* logit_bias as llama-server lists it: [[id, bias], ...] */
    cJSON *lb = cJSON_GetObjectItemCaseSensitive(o, "logit_bias");
    for (int i = 0; ok && i < s->n_logit_bias; i++) {
        cJSON *pair = cJSON_CreateArray();
        ok = oai_put(lb, NULL, pair) &&
             oai_put(pair, NULL, cJSON_CreateNumber(s->logit_bias[i].token)) &&
             oai_put(pair, NULL, s->logit_bias[i].bias > -1e30f
                                 ? cJSON_CreateNumber(s->logit_bias[i].bias)
                                 : cJSON_CreateFalse());
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *slot_json(const nat_server_t *sv, const nat_slot_t *sl)
{
    cJSON *o = cJSON_CreateObject(), *nt = cJSON_CreateObject();
    bool ok = o && nt && oai_put(o, "id", cJSON_CreateNumber(sl->id)) &&
              oai_put(o, "id_task", cJSON_CreateNumber((double)(sl->busy ? sl->id_task : -1))) &&
              oai_put(o, "n_ctx", cJSON_CreateNumber(sv->n_ctx)) &&
              oai_put(o, "speculative", cJSON_CreateBool(sv->speculative)) &&
              oai_put(o, "is_processing", cJSON_CreateBool(sl->busy)) &&
              oai_put(o, "params", nat_params_json(sl->params)) && oai_put(o, "next_token", nt);
    if (!ok) {
        if (o && !cJSON_GetObjectItemCaseSensitive(o, "next_token"))
            cJSON_Delete(nt);
        cJSON_Delete(o);
        return NULL;
    }
    ok = oai_put(nt, "has_next_token", cJSON_CreateBool(sl->busy)) &&
         oai_put(nt, "has_new_line", cJSON_CreateBool(sl->has_new_line)) &&
         oai_put(nt, "n_remain", cJSON_CreateNumber((double)sl->n_remain)) &&
         oai_put(nt, "n_decoded", cJSON_CreateNumber((double)sl->n_decoded));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

char *nat_slots(const nat_server_t *sv, const nat_slot_t *slots, int n)
{
    cJSON *a = cJSON_CreateArray();
    bool ok = a != NULL;
    for (int i = 0; ok && i < n; i++)
        ok = oai_put(a, NULL, slot_json(sv, &slots[i]));
    return oai_print(a, ok);
}

char *nat_props(const nat_props_t *p)
{
    nat_slot_t idle = {.id = 0, .params = p->defaults, .n_remain = -1};
    cJSON *o = cJSON_CreateObject(), *dgs = slot_json(p->sv, &idle);
    cJSON *mod = cJSON_CreateObject();
    bool ok = o && dgs && mod && oai_put(o, "default_generation_settings", dgs);
    if (!ok)
        cJSON_Delete(dgs);
    ok = ok && oai_put(dgs, "prompt", cJSON_CreateString("")) &&
         oai_put(o, "total_slots", cJSON_CreateNumber(p->total_slots)) &&
         oai_put(o, "model_path", cJSON_CreateString(p->model_path ? p->model_path : "")) &&
         oai_put(o, "model_alias", cJSON_CreateString(p->model_alias ? p->model_alias : "")) &&
         oai_put(o, "chat_template",
                 cJSON_CreateString(p->chat_template ? p->chat_template : "")) &&
         oai_put(o, "modalities", mod);
    if (!ok && o && !cJSON_GetObjectItemCaseSensitive(o, "modalities"))
        cJSON_Delete(mod);
    ok = ok && oai_put(mod, "vision", cJSON_CreateFalse()) &&
         oai_put(mod, "audio", cJSON_CreateFalse());
    if (ok && p->bos_token)
        ok = oai_put(o, "bos_token", cJSON_CreateString(p->bos_token));
    if (ok && p->eos_token)
        ok = oai_put(o, "eos_token", cJSON_CreateString(p->eos_token));
    ok = ok && oai_put(o, "build_info", cJSON_CreateString(p->build_info ? p->build_info : "")) &&
         oai_put(o, "is_sleeping", cJSON_CreateFalse());
    return oai_print(o, ok);
}
