/* chat_render: the test helper that prints what server/chat.c renders for one conversation,
 * for tests/test_chat_jinja.py to compare with the real template rendered by jinja2.  Reads
 * one JSON object on stdin: {"family", "bos", "eos", "add_generation_prompt", "tools",
 * "tools_text", "messages": [{"role", "content", "tool_calls": [{"id", "function": {"name",
 * "arguments"}}], "tool_call_id", "reasoning_content"}], "enable_thinking",
 * "reasoning_effort", "prefill"} (arguments an
 * object or its JSON text; tools_text, the tools as JSON text, wins over tools).  Prints the
 * prompt and exits 0, or prints "REFUSED: <message>" and exits 3.  With "prefill": true the
 * last message is an assistant prefill (chat_format_prefill), and stderr gets "turn=N", the
 * offset where its turn's text begins, and "guess=N", chat_guess_turn's. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/chat.h"

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int main(void)
{
    static char in[1 << 20];
    size_t n = fread(in, 1, sizeof in - 1, stdin);
    in[n] = 0;
    cJSON *root = cJSON_Parse(in);
    if (!root) {
        fprintf(stderr, "chat_render: stdin is not JSON\n");
        return 2;
    }
    int family = chat_family_from_name(str(root, "family"));
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    size_t nm = (size_t)cJSON_GetArraySize(msgs);
    chat_msg_t *m = calloc(nm + 1, sizeof *m);
    chat_call_t *calls = calloc(64, sizeof *calls);
    size_t ncalls = 0;
    size_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, msgs)
    {
        const char *role = str(it, "role"); /* "developer": "system", as the server maps it */
        m[i].role = chat_role_from_name(role && strcmp(role, "developer") == 0 ? "system" : role);
        m[i].content = str(it, "content");
        m[i].len = m[i].content ? strlen(m[i].content) : 0;
        m[i].call_id = str(it, "tool_call_id");
        m[i].reasoning = str(it, "reasoning_content");
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(it, "tool_calls");
        m[i].calls = calls + ncalls;
        const cJSON *c;
        cJSON_ArrayForEach(c, tc)
        {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
            const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
            calls[ncalls].id = str(c, "id");
            calls[ncalls].name = str(fn, "name");
            calls[ncalls].arguments = cJSON_IsString(args) ? strdup(args->valuestring)
                                                           : cJSON_PrintUnformatted(args);
            ncalls++;
            m[i].n_calls++;
        }
        i++;
    }
    /* "tools_text": the tools as JSON text, numbers as written (cJSON would print 1.0 as 1) */
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    const char *raw = str(root, "tools_text");
    char *tools_text = raw ? strdup(raw)
                           : cJSON_IsArray(tools) ? cJSON_PrintUnformatted(tools) : NULL;
    const cJSON *agp = cJSON_GetObjectItemCaseSensitive(root, "add_generation_prompt");
    chat_opts_t o = {.bos = str(root, "bos"), .eos = str(root, "eos"),
                     .add_generation_prompt = !cJSON_IsFalse(agp), .tools = tools_text,
                     .no_thinking = cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(
                         root, "enable_thinking")),
                     .reasoning_effort = str(root, "reasoning_effort")};
    char *out = NULL, err[512] = "";
    size_t len = 0;
    size_t turn = 0;
    bool prefill = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "prefill"));
    int rc = prefill ? chat_format_prefill(family, m, nm, &o, &out, &len, &turn, err, sizeof err)
                     : chat_format(family, m, nm, &o, &out, &len, err, sizeof err);
    if (rc == 0 && prefill)
        fprintf(stderr, "turn=%zu\nguess=%zu\n", turn,
                chat_guess_turn(family, m, nm, &o, out, len));
    if (rc)
        printf("REFUSED: %s", err);
    else
        fwrite(out, 1, len, stdout);
    free(out);
    free(tools_text);
    for (size_t k = 0; k < ncalls; k++)
        free((char *)calls[k].arguments);
    free(calls);
    free(m);
    cJSON_Delete(root);
    return rc ? 3 : 0;
}
