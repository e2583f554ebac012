/* fuzz_chat.c: libFuzzer target: arbitrary bytes as a chat template (family detection) and as
 * a conversation (roles and contents, NULs and ill-formed UTF-8 included) formatted by every
 * family must not fault (with or without assistant reasoning and thinking switched off), and a
 * success must hold every user content. */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/chat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fam = chat_detect((const char *)data, size);
    if (fam != -ENOENT && (fam < 0 || fam >= CHAT_N_FAMILIES))
        abort();
    if (size < 2)
        return 0;
    /* byte 0: options; then messages separated by 0xFF, each led by its role byte */
    chat_msg_t m[32];
    memset(m, 0, sizeof m);
    size_t n = 0;
    const uint8_t *p = data + 1, *end = data + size;
    while (p < end && n < 32) {
        const uint8_t *q = memchr(p, 0xFF, (size_t)(end - p));
        if (!q)
            q = end;
        if (q > p) {
            m[n].role = p[0] % 4 == 3 ? 7 : p[0] % 4; /* 7: an invalid role */
            m[n].content = (const char *)p + 1;
            m[n].len = (size_t)(q - p - 1);
            if ((data[0] & 4) && m[n].role == CHAT_ASSISTANT)
                m[n].reasoning = "\n<think>r</think>\n";
            n++;
        }
        p = q + 1;
    }
    chat_opts_t o = {.bos = "<s>", .eos = "</s>", .add_generation_prompt = data[0] & 1,
                     .strict = data[0] & 2, .no_thinking = data[0] & 8};
    for (int f = 0; f < CHAT_N_FAMILIES; f++) {
        char *out = NULL, err[128];
        size_t len = 0;
        int rc = chat_format(f, m, n, &o, &out, &len, err, sizeof err);
        if (rc == 0) {
            if (!out || strlen(out) > len)
                abort();
            for (size_t i = 0; i < n; i++) /* Mistral may drop the system text: users only */
                if (m[i].role == CHAT_USER && m[i].len > 0 && f != CHAT_LLAMA2 &&
                    f != CHAT_GEMMA && f != CHAT_LLAMA3 && f != CHAT_LLAMA31 &&
                    !memmem(out, len, m[i].content, m[i].len))
                    abort();
            free(out);
        } else if (out || (rc != -EINVAL && rc != -ENOMEM)) {
            abort();
        }
    }
    return 0;
}
