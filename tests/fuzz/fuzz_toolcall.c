/* fuzz_toolcall.c: libFuzzer target: arbitrary bytes as a model's output, read for tool calls
 * in each family, must not fault; a success names an offered function with a JSON object
 * for arguments and content inside the text; the stream hold-back never exceeds the text and
 * never shrinks as it grows, nor do the scanned calls and their arguments, nor the generic
 * format's decoded response (each one a prefix of the next).  The same bytes through chat_pyjson reparse when accepted
 * (unless a number overflowed to Infinity, which Python's json.dumps writes too). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/chat.h"
#include "server/toolcall.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *names[] = {"get_weather", "clock", "f"};
    static const int fams[] = {CHAT_LLAMA31, CHAT_QWEN, CHAT_MISTRAL, CHAT_DEEPSEEK_R1,
                               CHAT_MISTRAL3, CHAT_GRANITE, CHAT_PHI4MINI, TC_GENERIC};
    if (size < 1)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    for (size_t k = 0; k < sizeof fams / sizeof fams[0]; k++) {
        tc_result_t r;
        int rc = tc_parse(fams[k], text, len, names, 3, data[0] & 1, data[0], &r);
        if (rc == 0) {
            if (r.n_calls == 0 || r.content_len > len || (!(data[0] & 1) && r.n_calls != 1))
                abort();
            for (size_t i = 0; i < r.n_calls; i++) {
                cJSON *a = cJSON_Parse(r.calls[i].arguments);
                bool ok = cJSON_IsObject(a) && r.calls[i].id && r.calls[i].id[0];
                cJSON_Delete(a);
                bool known = false;
                for (int n = 0; n < 3; n++)
                    known |= strcmp(names[n], r.calls[i].name) == 0;
                if (!ok || !known)
                    abort();
            }
            tc_free(&r);
        } else if (rc != -ENOENT && rc != -ENOMEM) {
            abort();
        }
        size_t prev = 0, step = len > 256 ? len / 64 : 1, n_prev = 0;
        tc_span_t sp[8], last[8];
        for (size_t n = 0; n <= len; n += step) {
            size_t s = tc_stream_safe(fams[k], text, n);
            if (s > n || s < prev)
                abort();
            prev = s;
            size_t ns = 0;
            if (tc_scan(fams[k], text, n, sp, 8, &ns) == -ENOENT)
                break; /* past the point where it can be calls: nothing more is streamed */
            for (size_t c = 0; c < n_prev && c < ns; c++)
                if (sp[c].args_len < last[c].args_len ||
                    (last[c].args_started && sp[c].args_off != last[c].args_off) ||
                    sp[c].args_off + sp[c].args_len > n)
                    abort();
            if (ns < n_prev)
                abort();
            memcpy(last, sp, sizeof sp);
            n_prev = ns;
        }
    }
    char *prevc = NULL;
    size_t prevn = 0;
    for (size_t n = 0, step = len > 256 ? len / 64 : 1; n <= len; n += step) {
        char *c;
        size_t cn;
        int rc = tc_generic_content(text, n, &c, &cn);
        if (rc == -ENOENT && prevc)
            break; /* malformed from here on */
        if (rc == -ENOMEM)
            break;
        if (rc == 0) {
            if (cn > n || strlen(c) != cn || (prevc && (cn < prevn || memcmp(c, prevc, prevn))))
                abort();
            free(prevc);
            prevc = c;
            prevn = cn;
        } else if (rc != -ENOENT) {
            abort();
        }
    }
    free(prevc);
    char *z = malloc(len + 1);
    if (!z)
        return 0;
    memcpy(z, text, len);
    z[len] = 0;
    char *out = NULL;
    if (chat_pyjson(z, data[0] & 2 ? 4 : -1, &out) == 0) {
        cJSON *v = cJSON_Parse(out);
        if (!v && !strstr(out, "Infinity") && !strstr(out, "NaN"))
            abort();
        cJSON_Delete(v);
        free(out);
    }
    free(z);
    return 0;
}
