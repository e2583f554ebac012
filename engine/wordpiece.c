/* wordpiece.c: the WordPiece normalizer and word split (wordpiece.h), over the tables of
 * tools/gen-wordpiece-tables.py. */
#include "engine/wordpiece.h"

#include "engine/unicode.h"
#include "engine/wordpiece_data.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* Index of cp in a table sorted by its first column, or -1. */
static long map_find(const uint32_t (*map)[2], size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (map[mid][0] < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && map[lo][0] == cp ? (long)lo : -1;
}

static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r[mid][1] < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && r[lo][0] <= cp;
}

uint32_t wpm_nfd(uint32_t cp)
{
    if (cp >= 0xAC00 && cp <= 0xD7A3) /* a Hangul syllable: its leading consonant */
        return 0x1100 + (cp - 0xAC00) / 588;
    long i = map_find(wpm_nfd_map, N_OF(wpm_nfd_map), cp);
    return i < 0 ? cp : wpm_nfd_map[i][1];
}

uint32_t wpm_lower(uint32_t cp)
{
    if (cp < 0x80)
        return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
    long i = map_find(wpm_lower_map, N_OF(wpm_lower_map), cp);
    return i < 0 ? cp : wpm_lower_map[i][1];
}

bool wpm_is_punct(uint32_t cp) { return in_ranges(wpm_punct_ranges, N_OF(wpm_punct_ranges), cp); }

bool wpm_is_control(uint32_t cp)
{
    return in_ranges(wpm_control_ranges, N_OF(wpm_control_ranges), cp);
}

/* llama.cpp's white space set (its unicode_set_whitespace). */
bool wpm_is_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* The CJK blocks BERT's BasicTokenizer isolates, with Hugging Face's 0x2B920 for the start
 * of Extension E (llama.cpp keeps it too). */
bool wpm_is_cjk(uint32_t cp)
{
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* ASCII symbols (general category S below 0x7F): split like punctuation. */
static bool ascii_symbol(uint32_t cp)
{
    return cp == '$' || cp == '+' || cp == '<' || cp == '=' || cp == '>' || cp == '^' ||
           cp == '`' || cp == '|' || cp == '~';
}

const char *wpm_data_version(void) { return WPM_DATA_VERSION; }

size_t wpm_words(const uint8_t *s, size_t n, uint8_t *out, size_t *ends)
{
    size_t o = 0, nw = 0, start = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = uni_scan(s + i, n - i, &cp);
        if (k <= 0) { /* ill-formed or cut: llama.cpp's U+FFFD, which it drops */
            i += k < 0 ? (size_t)-k : n - i;
            continue;
        }
        i += (size_t)k;
        cp = wpm_nfd(cp);
        if (wpm_is_space(cp)) {
            if (o > start) {
                ends[nw++] = o;
                start = o;
            }
            continue;
        }
        if (cp == 0 || cp == UNI_REPLACEMENT || wpm_is_control(cp))
            continue;
        uint8_t u[4];
        int m = uni_encode(wpm_lower(cp), u);
        bool alone = wpm_is_punct(cp) || (cp < 0x7F && ascii_symbol(cp)) || wpm_is_cjk(cp);
        if (alone && o > start) {
            ends[nw++] = o;
            start = o;
        }
        for (int j = 0; j < m; j++)
            out[o++] = u[j];
        if (alone && o > start) {
            ends[nw++] = o;
            start = o;
        }
    }
    if (o > start)
        ends[nw++] = o;
    return nw;
}
