/* ngram.c: the n-gram draft finder (see ngram.h).  A plain backward scan: the history is at
 * most n_ctx tokens and the scan stops at the most recent match, so it costs far less than
 * one decode step's matrix work; no index is kept between steps. */
#include "engine/ngram.h"

#include <string.h>

int ngram_draft(const int32_t *tok, int n, int n_min, int n_max, int k, int32_t *draft)
{
    if (!tok || !draft || n < 2 || k <= 0 || n_min < 1 || n_max < n_min)
        return 0;
    if (n_max > n - 1)
        n_max = n - 1;
    for (int L = n_max; L >= n_min; L--) {
        const int32_t *tail = tok + n - L;
        for (int i = n - L - 1; i >= 0; i--) {
            if (tok[i + L - 1] != tail[L - 1] || memcmp(tok + i, tail, (size_t)L * sizeof *tok))
                continue;
            /* x[src + j]: the history, then the draft written so far */
            const int src = i + L;
            for (int j = 0; j < k; j++)
                draft[j] = src + j < n ? tok[src + j] : draft[src + j - n];
            return k;
        }
    }
    return 0;
}
