/* fuzz_request.c: libFuzzer target: arbitrary bytes as the body of every request kind must
 * parse or fail cleanly (an HTTP status, a message, never a fault or a leak); a success must
 * hold values inside the documented ranges, and the response builders must turn any parsed
 * text into valid UTF-8 JSON. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/openai.h"
#include "server/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rq_limits_t lim;
    rq_limits_default(&lim);
    for (int kind = RQ_COMPLETION; kind <= RQ_DETOKENIZE; kind++) {
        rq_t r;
        rq_err_t e;
        int rc = rq_parse(kind, (const char *)data, size, &lim, &r, &e);
        if (rc) {
            if ((e.status != 400 && e.status != 500) || !e.message[0] || !e.type)
                abort();
            continue;
        }
        if (r.n < 1 || r.n > lim.max_n || r.n_stop > lim.max_stop || r.logprobs > 20 ||
            r.sampling.temperature < 0 || r.sampling.temperature > 2 ||
            !(r.sampling.top_p > 0 && r.sampling.top_p <= 1) || r.max_tokens < 0)
            abort();
        for (size_t i = 0; i < r.n_prompts; i++) {
            if (r.prompts[i].text && !rq_utf8_valid(r.prompts[i].text, r.prompts[i].text_len))
                abort();
            if (r.prompts[i].text) {
                char *j = oai_detokenize(r.prompts[i].text, r.prompts[i].text_len);
                if (j && !rq_utf8_valid(j, strlen(j)))
                    abort();
                free(j);
            }
        }
        for (size_t i = 0; i < r.n_msgs; i++)
            if (!r.msgs[i].role || !r.msgs[i].content)
                abort();
        rq_check_vocab(&r, 512, &e);
        int mt = 0;
        rq_resolve_max_tokens(&r, 5, 512, &mt, &e);
        rq_free(&r);
    }
    /* Raw bytes through the UTF-8 cleaner. */
    char *c = oai_utf8_clean((const char *)data, size);
    if (c && !rq_utf8_valid(c, strlen(c)))
        abort();
    free(c);
    return 0;
}
