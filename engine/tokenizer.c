/* tokenizer.c: SentencePiece-style and GPT-2 byte-level BPE tokenizers over one vocabulary.
 *
 * Both kinds merge adjacent symbols through a binary heap and a doubly linked symbol list,
 * so encoding is O(n log n) in the input length.  SPM merges the pair whose joined text is
 * the highest-scoring vocabulary piece (ties: leftmost), as sentencepiece's BPE model does;
 * BPE merges the pair with the lowest merge rank (ties: leftmost).  Pieces, special tokens
 * and merge pairs are found through open-addressing hash tables built once at load.
 *
 * Ill-formed UTF-8 is never an error: an invalid byte is a symbol of its own, which SPM
 * turns into its <0xXX> byte token and byte-level BPE maps like any other byte, so decoding
 * returns the very bytes that were encoded. */
#include "config.h"

#include "engine/tokenizer.h"

#include <math.h>
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "common/log.h"
#include "engine/ugm.h"
#include "engine/unicode.h"
#include "engine/wordpiece.h"

/* U+2581 LOWER ONE EIGHTH BLOCK: how SentencePiece writes a space inside pieces. */
static const char SPM_SPACE[] = "\xE2\x96\x81";

#define MAX_EOG 16

/* Text -> token id, keys living in the tokenizer's text arena.  Slots hold ids, -1 empty. */
typedef struct strmap {
    int32_t *slot;
    size_t mask;
} strmap_t;

typedef struct merge_slot {
    uint64_t key;   /* left id << 32 | right id */
    int32_t rank;   /* -1: empty slot */
    int32_t result; /* id of the joined piece */
} merge_slot_t;

struct tok {
    int kind;
    int pre;
    int32_t n;
    char *text;           /* every token's text, each NUL-terminated */
    size_t *toff;
    uint32_t *tlen;
    float *score;
    uint8_t *type;
    char *ptext;          /* every token's rendering (tok_piece without render_special) */
    size_t *poff;
    uint32_t *plen;
    strmap_t pieces;      /* all tokens by text (the last of duplicate texts wins) */
    strmap_t specials;    /* control, unknown and user-defined tokens by text */
    uint32_t sl_off[257]; /* sl_len[sl_off[b]..sl_off[b+1]): distinct lengths of special */
    uint32_t *sl_len;     /* texts starting with byte b, longest first */
    merge_slot_t *merges;
    size_t merge_mask;
    int32_t byte_tok[256];  /* SPM: <0xXX>; BPE: the mapped character of the byte */
    bool barrier[128];      /* SPM: ASCII bytes in no mergeable piece longer than one byte */
    int16_t uni2byte[324];  /* BPE: code point of the byte mapping -> byte, -1 if none */
    uint16_t byte_cp[256];  /* BPE: byte -> code point of its mapped character */
    int32_t bos, eos, eot, eom, unk, pad;
    int32_t sep;            /* WPM */
    uint32_t max_len;       /* WPM: the longest token text, in bytes */
    int32_t fim[TOK_FIM_N];
    bool add_bos, add_eos, add_space_prefix, ignore_merges, add_sep;
    int32_t harmony_end;  /* gpt-oss: <|end|>, which ends a message, not the generation */
    ugm_t *ugm;           /* UGM: the normalizer and the piece trie */
    int32_t eog[MAX_EOG];
    int n_eog;
};

/* ---------------------------------------------------------------- hash tables */

static uint64_t hash_bytes(const void *p, size_t n)
{
    /* FNV-1a with a final avalanche: keys are short and the tables are built once. */
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static int map_init(strmap_t *m, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n + 16)
        cap <<= 1;
    m->slot = malloc(cap * sizeof *m->slot);
    if (!m->slot)
        return -ENOMEM;
    memset(m->slot, 0xff, cap * sizeof *m->slot);
    m->mask = cap - 1;
    return 0;
}

static int32_t map_find(const tok_t *t, const strmap_t *m, const void *key, size_t len)
{
    if (!m->slot)
        return -1;
    size_t h = (size_t)hash_bytes(key, len) & m->mask;
    for (;;) {
        int32_t id = m->slot[h];
        if (id < 0)
            return -1;
        if (t->tlen[id] == len && memcmp(t->text + t->toff[id], key, len) == 0)
            return id;
        h = (h + 1) & m->mask;
    }
}

/* Inserts id under its own text; an earlier id with the same text is replaced. */
static void map_put(const tok_t *t, strmap_t *m, int32_t id)
{
    const char *key = t->text + t->toff[id];
    size_t len = t->tlen[id];
    size_t h = (size_t)hash_bytes(key, len) & m->mask;
    for (;;) {
        int32_t o = m->slot[h];
        if (o < 0 || (t->tlen[o] == len && memcmp(t->text + t->toff[o], key, len) == 0)) {
            m->slot[h] = id;
            return;
        }
        h = (h + 1) & m->mask;
    }
}

static const merge_slot_t *merge_find(const tok_t *t, int32_t l, int32_t r)
{
    if (!t->merges)
        return NULL;
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    size_t h = (size_t)hash_u64(key) & t->merge_mask;
    for (;;) {
        const merge_slot_t *s = &t->merges[h];
        if (s->rank < 0)
            return NULL;
        if (s->key == key)
            return s;
        h = (h + 1) & t->merge_mask;
    }
}

/* ---------------------------------------------------------------- byte-level mapping */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 take
 * the code points from U+0100 on, in byte order. */
static uint32_t byte_to_cp(uint8_t b)
{
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE))
        return b;
    uint32_t k = 0;
    for (unsigned c = 0; c < b; c++)
        if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE)))
            k++;
    return 256 + k;
}

/* ---------------------------------------------------------------- accessors */

int tok_kind(const tok_t *t) { return t->kind; }
int tok_pre(const tok_t *t) { return t->pre; }
int32_t tok_n_vocab(const tok_t *t) { return t->n; }
int32_t tok_bos(const tok_t *t) { return t->bos; }
int32_t tok_eos(const tok_t *t) { return t->eos; }
int32_t tok_eot(const tok_t *t) { return t->eot; }
int32_t tok_unk(const tok_t *t) { return t->unk; }
int32_t tok_pad(const tok_t *t) { return t->pad; }
int32_t tok_sep(const tok_t *t) { return t->sep; }
bool tok_add_sep(const tok_t *t) { return t->add_sep; }
int32_t tok_fim(const tok_t *t, int which)
{
    return which >= 0 && which < TOK_FIM_N ? t->fim[which] : -1;
}
bool tok_add_bos(const tok_t *t) { return t->add_bos; }
bool tok_add_eos(const tok_t *t) { return t->add_eos; }

bool tok_is_eog(const tok_t *t, int32_t id)
{
    if (id < 0)
        return false;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id)
            return true;
    return false;
}

int tok_token_type(const tok_t *t, int32_t id)
{
    if (id < 0 || id >= t->n)
        return -EINVAL;
    return t->type[id];
}

const char *tok_token_text(const tok_t *t, int32_t id)
{
    if (id < 0 || id >= t->n)
        return NULL;
    return t->text + t->toff[id];
}

int32_t tok_find(const tok_t *t, const char *text)
{
    if (!text)
        return -1;
    return map_find(t, &t->pieces, text, strlen(text));
}

/* ---------------------------------------------------------------- construction */

void tok_spec_init(tok_spec_t *s)
{
    memset(s, 0, sizeof *s);
    s->bos = s->eos = s->eot = s->eom = s->unk = s->pad = s->sep = -1;
    s->add_bos = s->add_eos = s->add_space_prefix = s->add_sep = -1;
    s->remove_extra_ws = s->escape_ws = s->ws_as_suffix = -1;
    for (int i = 0; i < TOK_FIM_N; i++)
        s->fim[i] = -1;
}

void tok_free(tok_t *t)
{
    if (!t)
        return;
    ugm_free(t->ugm);
    free(t->merges);
    free(t->sl_len);
    free(t->specials.slot);
    free(t->pieces.slot);
    free(t->plen);
    free(t->poff);
    free(t->ptext);
    free(t->type);
    free(t->score);
    free(t->tlen);
    free(t->toff);
    free(t->text);
    free(t);
}

static int pre_from_name(const char *name, bool *known)
{
    static const struct {
        const char *name;
        int pre;
    } tab[] = {
        {"default", TOK_PRE_GPT2},   {"gpt2", TOK_PRE_GPT2},     {"gpt-2", TOK_PRE_GPT2},
        {"mpt", TOK_PRE_GPT2},       {"olmo", TOK_PRE_GPT2},     {"jais", TOK_PRE_GPT2},
        {"llama3", TOK_PRE_LLAMA3},  {"llama-bpe", TOK_PRE_LLAMA3},
        {"qwen2", TOK_PRE_QWEN2},    {"deepseek-r1-qwen", TOK_PRE_QWEN2},
        {"smollm", TOK_PRE_DIGITS},  {"starcoder", TOK_PRE_DIGITS},
        {"refact", TOK_PRE_DIGITS},  {"command-r", TOK_PRE_DIGITS},
        {"codeshell", TOK_PRE_DIGITS},
        {"gpt-4o", TOK_PRE_GPT4O},   {"llama4", TOK_PRE_GPT4O},
    };
    *known = true;
    if (!name || !*name)
        return TOK_PRE_GPT2;
    for (size_t i = 0; i < FD_ARRAY_LEN(tab); i++)
        if (strcmp(name, tab[i].name) == 0)
            return tab[i].pre;
    *known = false;
    return TOK_PRE_GPT2;
}

static bool is_special_type(int ty)
{
    return ty == TOK_T_CONTROL || ty == TOK_T_UNKNOWN || ty == TOK_T_USER_DEFINED;
}

/* Parses "<0xAB>" (the SentencePiece byte-token spelling); -1 if the text is not one. */
static int parse_byte_token(const char *s, size_t n)
{
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        int d = fd_hex_digit(s[i]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* What tok_piece gives without render_special, written to out (at most the text's length). */
static size_t render_piece(const tok_t *t, int32_t id, char *out)
{
    const char *s = t->text + t->toff[id];
    size_t n = t->tlen[id], o = 0;
    int ty = t->type[id];
    if (ty == TOK_T_CONTROL || ty == TOK_T_UNKNOWN || ty == TOK_T_UNUSED)
        return 0;
    if (ty == TOK_T_BYTE) {
        int b = parse_byte_token(s, n);
        if (b >= 0) {
            out[0] = (char)b;
            return 1;
        }
        memcpy(out, s, n);
        return n;
    }
    if (t->kind == TOK_SPM || t->kind == TOK_WPM || t->kind == TOK_UGM) {
        /* sentencepiece turns U+2581 back into spaces in every piece it renders,
         * user-defined ones included (llama.cpp renders WPM pieces the same way) */
        for (size_t i = 0; i < n;) {
            if (i + 3 <= n && memcmp(s + i, SPM_SPACE, 3) == 0) {
                out[o++] = ' ';
                i += 3;
            } else {
                out[o++] = s[i++];
            }
        }
        return o;
    }
    if (ty == TOK_T_USER_DEFINED) { /* added tokens are stored as plain text */
        memcpy(out, s, n);
        return n;
    }
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = uni_scan((const uint8_t *)s + i, n - i, &cp);
        if (k > 0 && cp < FD_ARRAY_LEN(t->uni2byte) && t->uni2byte[cp] >= 0) {
            out[o++] = (char)t->uni2byte[cp];
            i += (size_t)k;
        } else {
            size_t m = k > 0 ? (size_t)k : 1;
            memcpy(out + o, s + i, m);
            o += m;
            i += m;
        }
    }
    return o;
}

static int build_merges(tok_t *t, const tok_spec_t *sp, char *err, size_t errlen)
{
    size_t cap = 16;
    while (cap < 2 * sp->n_merges + 16)
        cap <<= 1;
    t->merges = malloc(cap * sizeof *t->merges);
    if (!t->merges)
        return -ENOMEM;
    for (size_t i = 0; i < cap; i++)
        t->merges[i].rank = -1;
    t->merge_mask = cap - 1;
    char *joined = NULL;
    size_t joined_cap = 0;
    size_t skipped = 0;
    for (size_t i = 0; i < sp->n_merges; i++) {
        const char *m = sp->merges[i];
        if (!m) {
            skipped++;
            continue;
        }
        size_t n = sp->merge_lens ? sp->merge_lens[i] : strlen(m);
        /* the separator is the first space after the first byte */
        const char *sep = n > 1 ? memchr(m + 1, ' ', n - 1) : NULL;
        if (!sep) {
            skipped++;
            continue;
        }
        size_t ln = (size_t)(sep - m), rn = n - ln - 1;
        int32_t l = map_find(t, &t->pieces, m, ln);
        int32_t r = map_find(t, &t->pieces, sep + 1, rn);
        if (ln + rn > joined_cap) {
            size_t nc = FD_MAX(ln + rn, 2 * joined_cap);
            char *nj = realloc(joined, nc);
            if (!nj) {
                free(joined);
                return -ENOMEM;
            }
            joined = nj;
            joined_cap = nc;
        }
        memcpy(joined, m, ln);
        memcpy(joined + ln, sep + 1, rn);
        int32_t res = map_find(t, &t->pieces, joined, ln + rn);
        if (l < 0 || r < 0 || res < 0) {
            skipped++;
            continue;
        }
        uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
        size_t h = (size_t)hash_u64(key) & t->merge_mask;
        while (t->merges[h].rank >= 0 && t->merges[h].key != key)
            h = (h + 1) & t->merge_mask;
        if (t->merges[h].rank >= 0)
            continue; /* a repeated pair keeps its first (lowest) rank */
        if (i > INT32_MAX) {
            free(joined);
            fd_set_err(err, errlen, "too many merges (%zu)", sp->n_merges);
            return FD_ERANGE;
        }
        t->merges[h] = (merge_slot_t){key, (int32_t)i, res};
    }
    free(joined);
    if (skipped)
        fd_log_warn("tokenizer: %zu of %zu merges ignored (malformed, or a part or the "
                    "result is not in the vocabulary)", skipped, sp->n_merges);
    return 0;
}

static int build_specials(tok_t *t)
{
    size_t ns = 0;
    for (int32_t i = 0; i < t->n; i++)
        if (is_special_type(t->type[i]) && t->tlen[i] > 0)
            ns++;
    int rc = map_init(&t->specials, ns);
    if (rc)
        return rc;
    /* per first byte, the distinct lengths (a length appears once per byte) */
    uint32_t *cnt = calloc(256, sizeof *cnt);
    uint32_t *lens = ns ? malloc(ns * sizeof *lens) : NULL;
    uint8_t *first = ns ? malloc(ns) : NULL;
    if (!cnt || (ns && (!lens || !first))) {
        free(cnt);
        free(lens);
        free(first);
        return -ENOMEM;
    }
    size_t k = 0;
    for (int32_t i = 0; i < t->n; i++) {
        if (!is_special_type(t->type[i]) || t->tlen[i] == 0)
            continue;
        map_put(t, &t->specials, i);
        first[k] = (uint8_t)t->text[t->toff[i]];
        lens[k] = t->tlen[i];
        k++;
    }
    /* sort (first byte asc, length desc), then drop repeats */
    for (size_t i = 1; i < ns; i++) { /* insertion sort on a few hundred entries at most */
        uint8_t f = first[i];
        uint32_t l = lens[i];
        size_t j = i;
        while (j > 0 && (first[j - 1] > f || (first[j - 1] == f && lens[j - 1] < l))) {
            first[j] = first[j - 1];
            lens[j] = lens[j - 1];
            j--;
        }
        first[j] = f;
        lens[j] = l;
    }
    size_t u = 0;
    for (size_t i = 0; i < ns; i++) {
        if (u > 0 && first[u - 1] == first[i] && lens[u - 1] == lens[i])
            continue;
        first[u] = first[i];
        lens[u] = lens[i];
        u++;
    }
    for (size_t i = 0; i < u; i++)
        cnt[first[i]]++;
    t->sl_off[0] = 0;
    for (int b = 0; b < 256; b++)
        t->sl_off[b + 1] = t->sl_off[b] + cnt[b];
    t->sl_len = lens;
    free(first);
    free(cnt);
    return 0;
}

/* gpt-oss's harmony format, as llama.cpp treats it: the markers its chat parser reads
 * (<|channel|>, <|message|>, <|start|>, <|constrain|>) are always rendered (user-defined,
 * whatever the file says: llama.cpp does this for any vocabulary that has them), and in a
 * vocabulary with <|return|> and <|call|>, <|end|> closes one message of an answer that
 * goes on: rendered, and no end of generation (find_eog).  Before the pieces are rendered. */
static void harmony_types(tok_t *t)
{
    static const char *const shown[] = {"<|channel|>", "<|message|>", "<|start|>",
                                        "<|constrain|>"};
    for (size_t i = 0; i < FD_ARRAY_LEN(shown); i++) {
        int32_t id = map_find(t, &t->pieces, shown[i], strlen(shown[i]));
        if (id >= 0)
            t->type[id] = TOK_T_USER_DEFINED;
    }
    int32_t end = map_find(t, &t->pieces, "<|end|>", 7);
    t->harmony_end = -1;
    if (end >= 0 && map_find(t, &t->pieces, "<|return|>", 10) >= 0 &&
        map_find(t, &t->pieces, "<|call|>", 8) >= 0) {
        t->type[end] = TOK_T_USER_DEFINED;
        t->harmony_end = end;
    }
}

static void find_eog(tok_t *t)
{
    /* End-of-turn markers of the common chat formats, in order of preference for EOT;
     * gpt-oss's <|return|> (its answer is done) and <|call|> (a tool call is) after them. */
    static const char *const names[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
        "<|eom_id|>", "<EOT>", "<|end_of_text|>", "<|return|>", "<|call|>",
    };
    int32_t found[FD_ARRAY_LEN(names)];
    for (size_t i = 0; i < FD_ARRAY_LEN(names); i++) {
        int32_t id = map_find(t, &t->specials, names[i], strlen(names[i]));
        found[i] = (id >= 0 && id != t->harmony_end && (t->type[id] == TOK_T_CONTROL ||
                                                        t->type[id] == TOK_T_USER_DEFINED))
                       ? id : -1;
    }
    if (t->eot < 0)
        for (size_t i = 0; i < 5 && t->eot < 0; i++) /* the first five end a turn */
            t->eot = found[i];
    /* as llama.cpp: an end-of-generation marker the file types user-defined becomes a control
     * token (Gemma's <end_of_turn>), so plain text that spells it is not read as it unless
     * special tokens are parsed */
    for (size_t i = 0; i < FD_ARRAY_LEN(names); i++)
        if (found[i] >= 0 && t->type[found[i]] == TOK_T_USER_DEFINED)
            t->type[found[i]] = TOK_T_CONTROL;
    int32_t cand[6 + FD_ARRAY_LEN(names)];
    size_t nc = 0;
    /* llama.cpp ends a generation at the FIM padding, repository and file separator tokens:
     * a code model writes them when the middle is done */
    cand[nc++] = t->fim[TOK_FIM_PAD];
    cand[nc++] = t->fim[TOK_FIM_REP];
    cand[nc++] = t->fim[TOK_FIM_SEP];
    cand[nc++] = t->eos;
    cand[nc++] = t->eot;
    cand[nc++] = t->eom;
    for (size_t i = 0; i < FD_ARRAY_LEN(names); i++)
        cand[nc++] = found[i];
    for (size_t i = 0; i < nc && t->n_eog < MAX_EOG; i++)
        if (cand[i] >= 0 && cand[i] != t->harmony_end && !tok_is_eog(t, cand[i]))
            t->eog[t->n_eog++] = cand[i];
}

/* The FIM token texts of the common code models (llama.cpp's list, in its order of preference
 * within each kind), for vocabularies whose GGUF does not give the ids. */
static const char *const fim_texts[TOK_FIM_N][9] = {
    [TOK_FIM_PRE] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
                     "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>", "<PRE>",
                     "\xe2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>", NULL},
    [TOK_FIM_SUF] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
                     "<\xef\xbd\x9c" "fim\xe2\x96\x81" "hole\xef\xbd\x9c>", "<SUF>",
                     "\xe2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>", NULL},
    [TOK_FIM_MID] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
                     "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>", "<MID>",
                     "\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>", NULL},
    [TOK_FIM_PAD] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL},
    [TOK_FIM_REP] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
                     NULL},
    [TOK_FIM_SEP] = {"<|file_sep|>", NULL},
};

static const char *const fim_names[TOK_FIM_N] = {
    "prefix", "suffix", "middle", "padding", "repository", "file separator"
};

/* The FIM ids: the spec's (checked), else found by text; a token found by its text is made
 * a control token (llama.cpp does the same), so that it renders as nothing and its text in a
 * prompt is a special token only when special tokens are parsed. */
static int find_fim(tok_t *t, const tok_spec_t *sp, char *err, size_t errlen)
{
    for (int k = 0; k < TOK_FIM_N; k++) {
        int32_t id = sp->fim[k];
        if (id >= t->n) {
            fd_set_err(err, errlen, "tokenizer: the FIM %s token id %d is past the vocabulary "
                       "(%d tokens)", fim_names[k], id, t->n);
            return FD_EFORMAT;
        }
        if (id < 0) {
            id = -1;
            for (size_t i = 0; fim_texts[k][i] && id < 0; i++)
                id = map_find(t, &t->pieces, fim_texts[k][i], strlen(fim_texts[k][i]));
            if (id >= 0 && t->type[id] != TOK_T_CONTROL)
                t->type[id] = TOK_T_CONTROL;
        }
        t->fim[k] = id;
    }
    return 0;
}

static int32_t check_id(int32_t id, int32_t n, const char *what)
{
    if (id >= n) {
        fd_log_warn("tokenizer: %s id %d is past the vocabulary (%d tokens): ignored", what,
                    id, n);
        return -1;
    }
    return id < 0 ? -1 : id;
}

/* UGM: the unknown piece (the spec's, else the first of type unknown), then ugm.c's part. */
static int build_ugm(tok_t *t, const tok_spec_t *sp, char *err, size_t errlen)
{
    for (int32_t i = 0; t->unk < 0 && i < t->n; i++)
        if (t->type[i] == TOK_T_UNKNOWN)
            t->unk = i;
    int32_t *types = malloc((size_t)t->n * sizeof *types);
    if (!types)
        return -ENOMEM;
    for (int32_t i = 0; i < t->n; i++)
        types[i] = t->type[i];
    const char **texts = malloc((size_t)t->n * sizeof *texts);
    if (!texts) {
        free(types);
        return -ENOMEM;
    }
    for (int32_t i = 0; i < t->n; i++)
        texts[i] = t->text + t->toff[i];
    ugm_spec_t us = {
        .n_tokens = t->n, .texts = texts, .lens = t->tlen, .scores = t->score,
        .types = types, .unk = t->unk, .charsmap = sp->charsmap,
        .charsmap_len = sp->charsmap_len, .add_dummy_prefix = t->add_space_prefix,
        .remove_extra_whitespaces = sp->remove_extra_ws != 0,
        .escape_whitespaces = sp->escape_ws != 0, .ws_as_suffix = sp->ws_as_suffix > 0,
    };
    int rc = ugm_build(&t->ugm, &us, err, errlen);
    free(texts);
    free(types);
    return rc;
}

int tok_build(tok_t **out, const tok_spec_t *sp, char *err, size_t errlen)
{
    *out = NULL;
    if (!sp || (sp->kind != TOK_SPM && sp->kind != TOK_BPE && sp->kind != TOK_WPM &&
                sp->kind != TOK_UGM)) {
        fd_set_err(err, errlen, "tokenizer kind must be SPM, BPE, WPM or UGM");
        return -EINVAL;
    }
    if (sp->n_tokens <= 0 || !sp->texts) {
        fd_set_err(err, errlen, "empty vocabulary");
        return FD_EFORMAT;
    }
    if (sp->n_merges && !sp->merges) {
        fd_set_err(err, errlen, "merge count without merges");
        return -EINVAL;
    }
    /* Construction fills one zeroed struct field by field; tok_free releases whatever part
     * exists, so every failure below unwinds through the one label. */
    int rc = -ENOMEM;
    tok_t *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    int32_t n = sp->n_tokens;
    t->kind = sp->kind;
    t->n = n;
    bool known = true;
    t->pre = sp->kind != TOK_BPE ? TOK_PRE_NONE : pre_from_name(sp->pre, &known);
    if (!known)
        fd_log_warn("tokenizer: pre-tokenizer '%s' is unknown: splitting as gpt2 does, "
                    "which may not match the model's training", sp->pre);
    t->ignore_merges = t->pre == TOK_PRE_LLAMA3;

    t->toff = malloc((size_t)n * sizeof *t->toff);
    t->tlen = malloc((size_t)n * sizeof *t->tlen);
    t->score = malloc((size_t)n * sizeof *t->score);
    t->type = malloc((size_t)n);
    t->poff = malloc((size_t)n * sizeof *t->poff);
    t->plen = malloc((size_t)n * sizeof *t->plen);
    if (!t->toff || !t->tlen || !t->score || !t->type || !t->poff || !t->plen)
        goto fail;
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        const char *s = sp->texts[i];
        size_t len = s ? (sp->lens ? sp->lens[i] : strlen(s)) : 0;
        if (len > UINT32_MAX / 4) {
            fd_set_err(err, errlen, "token %d is %zu bytes long", i, len);
            rc = FD_ERANGE;
            goto fail;
        }
        t->toff[i] = total;
        t->tlen[i] = (uint32_t)len;
        total += len + 1;
        float sc = sp->scores ? sp->scores[i] : 0.0f;
        t->score[i] = isnan(sc) ? -FLT_MAX : sc;
        int ty = sp->types ? sp->types[i] : TOK_T_NORMAL;
        if (ty < TOK_T_NORMAL || ty > TOK_T_BYTE) {
            fd_set_err(err, errlen, "token %d has type %d (1..6 expected)", i, ty);
            rc = FD_EFORMAT;
            goto fail;
        }
        t->type[i] = (uint8_t)ty;
    }
    t->text = malloc(total);
    t->ptext = malloc(total);
    if (!t->text || !t->ptext)
        goto fail;
    for (int32_t i = 0; i < n; i++) {
        if (t->tlen[i])
            memcpy(t->text + t->toff[i], sp->texts[i], t->tlen[i]);
        t->text[t->toff[i] + t->tlen[i]] = '\0';
    }

    if ((rc = map_init(&t->pieces, (size_t)n)) != 0)
        goto fail;
    for (int32_t i = 0; i < n; i++)
        map_put(t, &t->pieces, i);
    if ((rc = find_fim(t, sp, err, errlen)) != 0)
        goto fail;
    harmony_types(t);

    for (int i = 0; i < 256; i++)
        t->byte_tok[i] = -1;
    memset(t->uni2byte, 0xff, sizeof t->uni2byte);
    if (t->kind == TOK_SPM) {
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            t->byte_tok[b] = map_find(t, &t->pieces, name, 6);
        }
    } else if (t->kind == TOK_BPE) {
        for (int b = 0; b < 256; b++) {
            uint32_t cp = byte_to_cp((uint8_t)b);
            t->byte_cp[b] = (uint16_t)cp;
            t->uni2byte[cp] = (int16_t)b;
            uint8_t u[4];
            int k = uni_encode(cp, u);
            t->byte_tok[b] = map_find(t, &t->pieces, u, (size_t)k);
        }
    }

    if (t->kind == TOK_SPM) {
        /* No merge can join a barrier byte to anything, so a session may be cut there: the
         * merges on either side never interact, and the result is the same, much faster
         * for long texts (Llama 2: newlines, tabs and digits). */
        bool seen[128] = {false};
        for (int32_t i = 0; i < n; i++) {
            if (t->tlen[i] < 2 || !(t->type[i] == TOK_T_NORMAL || t->type[i] == TOK_T_UNUSED ||
                                    t->type[i] == TOK_T_USER_DEFINED))
                continue;
            const uint8_t *p = (const uint8_t *)t->text + t->toff[i];
            for (uint32_t k = 0; k < t->tlen[i]; k++)
                if (p[k] < 128)
                    seen[p[k]] = true;
        }
        for (int b = 0; b < 128; b++)
            t->barrier[b] = !seen[b];
    }

    size_t po = 0;
    for (int32_t i = 0; i < n; i++) {
        t->poff[i] = po;
        size_t pl = render_piece(t, i, t->ptext + po);
        t->plen[i] = (uint32_t)pl;
        po += pl;
    }

    if (t->kind == TOK_BPE && (rc = build_merges(t, sp, err, errlen)) != 0)
        goto fail;
    if ((rc = build_specials(t)) != 0)
        goto fail;

    t->bos = check_id(sp->bos, n, "BOS");
    t->eos = check_id(sp->eos, n, "EOS");
    t->eot = check_id(sp->eot, n, "EOT");
    t->eom = check_id(sp->eom, n, "EOM");
    t->unk = check_id(sp->unk, n, "unknown-token");
    t->pad = check_id(sp->pad, n, "padding");
    t->sep = check_id(sp->sep, n, "separator");
    bool spm = t->kind == TOK_SPM, wpm = t->kind == TOK_WPM, ugm = t->kind == TOK_UGM;
    t->add_bos = sp->add_bos >= 0 ? sp->add_bos != 0
                                  : (spm || wpm || t->pre == TOK_PRE_LLAMA3);
    t->add_sep = (wpm && sp->add_sep != 0) || (ugm && sp->add_sep > 0);
    for (int32_t i = 0; wpm && i < n; i++)
        t->max_len = FD_MAX(t->max_len, t->tlen[i]);
    /* as llama.cpp: a unigram vocabulary ends its text with EOS unless the file says not */
    t->add_eos = sp->add_eos >= 0 ? sp->add_eos != 0 : ugm;
    t->add_space_prefix = sp->add_space_prefix >= 0 ? sp->add_space_prefix != 0 : spm || ugm;
    if (ugm && (rc = build_ugm(t, sp, err, errlen)) != 0)
        goto fail;
    find_eog(t);
    *out = t;
    return 0;
fail:
    if (rc == -ENOMEM)
        fd_set_err(err, errlen, "out of memory building the tokenizer");
    tok_free(t);
    return rc;
}

/* ---------------------------------------------------------------- GGUF loading */

static int get_id(const gguf_t *g, const char *key, int32_t dflt, int32_t *out)
{
    uint32_t v;
    int rc = gguf_get_u32(g, key, &v);
    if (rc == -ENOENT) {
        *out = dflt;
        return 0;
    }
    if (rc) {
        int64_t s;
        if (gguf_get_i64(g, key, &s) == 0) { /* a signed -1 also means "none" */
            *out = s < 0 || s > INT32_MAX ? -1 : (int32_t)s;
            return 0;
        }
        return rc;
    }
    *out = v > INT32_MAX ? -1 : (int32_t)v;
    return 0;
}

/* The FIM ids; llama.cpp reads the older keys after the new ones, so they win. */
static int get_fim(const gguf_t *g, tok_spec_t *sp)
{
    static const char *const keys[TOK_FIM_N] = {
        "tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id",
        "tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.fim_pad_token_id",
        "tokenizer.ggml.fim_rep_token_id", "tokenizer.ggml.fim_sep_token_id",
    };
    static const char *const old[3] = {
        "tokenizer.ggml.prefix_token_id", "tokenizer.ggml.suffix_token_id",
        "tokenizer.ggml.middle_token_id",
    };
    int rc;
    for (int k = 0; k < TOK_FIM_N; k++)
        if ((rc = get_id(g, keys[k], -1, &sp->fim[k])) != 0)
            return rc;
    for (int k = 0; k < 3; k++) {
        int32_t v;
        if ((rc = get_id(g, old[k], -2, &v)) != 0)
            return rc;
        if (v != -2)
            sp->fim[k] = v;
    }
    return 0;
}

static int get_flag(const gguf_t *g, const char *key, int *out)
{
    bool b;
    int rc = gguf_get_bool(g, key, &b);
    if (rc == -ENOENT) {
        *out = -1;
        return 0;
    }
    if (rc)
        return rc;
    *out = b;
    return 0;
}

/* WPM's special ids: BOS is [CLS] (tokenizer.ggml.cls_token_id when bos_token_id is absent,
 * as older converters wrote it), [SEP] from seperator_token_id (llama.cpp's spelling) and
 * [UNK]; each found by its text when the file names none.  add_sep_token may turn [SEP]
 * off. */
static int32_t find_text(const char *const *texts, const uint32_t *lens, int32_t n,
                         const char *s)
{
    size_t l = strlen(s);
    for (int32_t i = 0; i < n; i++)
        if (lens[i] == l && memcmp(texts[i], s, l) == 0)
            return i;
    return -1;
}

static int wpm_ids(const gguf_t *g, tok_spec_t *sp, const char *const *texts,
                   const uint32_t *lens, int32_t n)
{
    int rc;
    if (sp->bos < 0 &&
        (rc = get_id(g, "tokenizer.ggml.cls_token_id", find_text(texts, lens, n, "[CLS]"),
                     &sp->bos)))
        return rc;
    if ((rc = get_id(g, "tokenizer.ggml.seperator_token_id", -2, &sp->sep)))
        return rc;
    if (sp->sep == -2 && (rc = get_id(g, "tokenizer.ggml.separator_token_id",
                                      find_text(texts, lens, n, "[SEP]"), &sp->sep)))
        return rc;
    if (sp->unk < 0)
        sp->unk = find_text(texts, lens, n, "[UNK]");
    return get_flag(g, "tokenizer.ggml.add_sep_token", &sp->add_sep);
}

/* UGM: the precompiled_charsmap (bytes, in place in the mapping) and the normalizer flags. */
static int ugm_settings(const gguf_t *g, tok_spec_t *sp, char *err, size_t errlen)
{
    gguf_arr_t cm;
    int rc = gguf_get_arr(g, "tokenizer.ggml.precompiled_charsmap", &cm);
    if (rc == 0) {
        if (cm.elem_type != GGUF_UINT8 && cm.elem_type != GGUF_INT8) {
            fd_set_err(err, errlen, "tokenizer.ggml.precompiled_charsmap: an array of %s, not "
                       "of bytes", gguf_vtype_name(cm.elem_type));
            return FD_EFORMAT;
        }
        sp->charsmap = cm.data;
        sp->charsmap_len = (size_t)cm.n;
    } else if (rc != -ENOENT) {
        fd_set_err(err, errlen, "tokenizer.ggml.precompiled_charsmap: %s", fd_strerror(rc));
        return FD_EFORMAT;
    }
    /* the last two are SentencePiece's normalizer flags that llama.cpp's converter does not
     * write (no model it converts changes them); read when a file has them */
    static const char *const keys[] = {"tokenizer.ggml.remove_extra_whitespaces",
                                       "tokenizer.ggml.escape_whitespaces",
                                       "tokenizer.ggml.treat_whitespace_as_suffix"};
    int *const flags[] = {&sp->remove_extra_ws, &sp->escape_ws, &sp->ws_as_suffix};
    for (size_t i = 0; i < FD_ARRAY_LEN(keys); i++) {
        if ((rc = get_flag(g, keys[i], flags[i]))) {
            fd_set_err(err, errlen, "%s: %s", keys[i], fd_strerror(rc));
            return FD_EFORMAT;
        }
    }
    return 0;
}

int tok_load(tok_t **out, const gguf_t *g, char *err, size_t errlen)
{
    *out = NULL;
    tok_spec_t sp;
    tok_spec_init(&sp);
    gguf_str_t model, pre;
    gguf_arr_t toks, scores, types, merges;
    int rc = gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rc) {
        fd_set_err(err, errlen, "tokenizer.ggml.model: %s", rc == -ENOENT ? "missing" :
                   fd_strerror(rc));
        return rc == -ENOENT ? FD_EFORMAT : rc;
    }
    if (model.len == 5 && memcmp(model.ptr, "llama", 5) == 0) {
        sp.kind = TOK_SPM;
    } else if (model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0) {
        sp.kind = TOK_BPE;
    } else if (model.len == 4 && memcmp(model.ptr, "bert", 4) == 0) {
        sp.kind = TOK_WPM;
    } else if (model.len == 2 && memcmp(model.ptr, "t5", 2) == 0) {
        sp.kind = TOK_UGM;
    } else {
        fd_set_err(err, errlen, "tokenizer model '%.*s' is not supported (llama, gpt2, bert, t5)",
                   (int)FD_MIN(model.len, 64), model.ptr);
        return FD_EUNSUP;
    }
    char pre_name[64] = "";
    if (gguf_get_str(g, "tokenizer.ggml.pre", &pre) == 0) {
        size_t l = FD_MIN(pre.len, sizeof pre_name - 1);
        memcpy(pre_name, pre.ptr, l);
        pre_name[l] = '\0';
        sp.pre = pre_name;
    }
    rc = gguf_get_arr(g, "tokenizer.ggml.tokens", &toks);
    if (rc || toks.elem_type != GGUF_STRING || toks.n == 0 || toks.n > INT32_MAX) {
        fd_set_err(err, errlen, "tokenizer.ggml.tokens: %s", rc ? fd_strerror(rc) :
                   "not a non-empty array of strings");
        return rc && rc != FD_ETYPE ? rc : FD_EFORMAT;
    }
    size_t n = (size_t)toks.n;
    bool have_scores = gguf_get_arr(g, "tokenizer.ggml.scores", &scores) == 0;
    bool have_types = gguf_get_arr(g, "tokenizer.ggml.token_type", &types) == 0;
    bool have_merges = gguf_get_arr(g, "tokenizer.ggml.merges", &merges) == 0;
    if ((have_scores && scores.n != n) || (have_types && types.n != n)) {
        fd_set_err(err, errlen, "tokenizer: %zu tokens but %llu scores and %llu types", n,
                   have_scores ? (unsigned long long)scores.n : 0ull,
                   have_types ? (unsigned long long)types.n : 0ull);
        return FD_EFORMAT;
    }
    if (sp.kind == TOK_BPE && (!have_merges || merges.elem_type != GGUF_STRING)) {
        fd_set_err(err, errlen, "tokenizer.ggml.merges: a gpt2 tokenizer needs its merges");
        return FD_EFORMAT;
    }
    if (sp.kind == TOK_SPM || sp.kind == TOK_UGM)
        have_merges = false;
    if (sp.kind == TOK_UGM && (rc = ugm_settings(g, &sp, err, errlen)) != 0)
        return rc;

    rc = -ENOMEM;
    size_t nm = have_merges ? (size_t)merges.n : 0;
    const char **texts = malloc(n * sizeof *texts);
    uint32_t *lens = malloc(n * sizeof *lens);
    float *sc = have_scores ? malloc(n * sizeof *sc) : NULL;
    int32_t *ty = have_types ? malloc(n * sizeof *ty) : NULL;
    const char **mt = nm ? malloc(nm * sizeof *mt) : NULL;
    uint32_t *ml = nm ? malloc(nm * sizeof *ml) : NULL;
    if (!texts || !lens || (have_scores && !sc) || (have_types && !ty) ||
        (nm && (!mt || !ml))) {
        fd_set_err(err, errlen, "out of memory reading the vocabulary");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        gguf_str_t s;
        if ((rc = gguf_arr_str(&toks, i, &s)) != 0 || s.len > UINT32_MAX / 4) {
            fd_set_err(err, errlen, "tokenizer.ggml.tokens[%zu]: unreadable", i);
            rc = rc ? rc : FD_EFORMAT;
            goto done;
        }
        texts[i] = s.ptr;
        lens[i] = (uint32_t)s.len;
        if (sc && (rc = gguf_arr_f32(&scores, i, &sc[i])) != 0) {
            fd_set_err(err, errlen, "tokenizer.ggml.scores[%zu]: %s", i, fd_strerror(rc));
            goto done;
        }
        int64_t v;
        if (ty && (rc = gguf_arr_i64(&types, i, &v)) != 0) {
            fd_set_err(err, errlen, "tokenizer.ggml.token_type[%zu]: %s", i, fd_strerror(rc));
            goto done;
        }
        if (ty)
            ty[i] = v < TOK_T_NORMAL || v > TOK_T_BYTE ? TOK_T_NORMAL : (int32_t)v;
    }
    for (size_t i = 0; i < nm; i++) {
        gguf_str_t s;
        if ((rc = gguf_arr_str(&merges, i, &s)) != 0 || s.len > UINT32_MAX / 4) {
            fd_set_err(err, errlen, "tokenizer.ggml.merges[%zu]: unreadable", i);
            rc = rc ? rc : FD_EFORMAT;
            goto done;
        }
        mt[i] = s.ptr;
        ml[i] = (uint32_t)s.len;
    }
    sp.n_tokens = (int32_t)n;
    sp.texts = texts;
    sp.lens = lens;
    sp.scores = sc;
    sp.types = ty;
    sp.n_merges = nm;
    sp.merges = mt;
    sp.merge_lens = ml;
    /* SentencePiece vocabularies put <unk>, <s>, </s> first when the file does not say;
     * T5's are <pad>, </s>, <unk> (llama.cpp's defaults for "t5") */
    bool spm = sp.kind == TOK_SPM, ugm = sp.kind == TOK_UGM;
    if ((rc = get_id(g, "tokenizer.ggml.bos_token_id", spm ? 1 : -1, &sp.bos)) ||
        (rc = get_id(g, "tokenizer.ggml.eos_token_id", spm ? 2 : ugm ? 1 : -1, &sp.eos)) ||
        (rc = get_id(g, "tokenizer.ggml.unknown_token_id", spm ? 0 : ugm ? 2 : -1,
                     &sp.unk)) ||
        (rc = get_id(g, "tokenizer.ggml.eot_token_id", -1, &sp.eot)) ||
        (rc = get_id(g, "tokenizer.ggml.eom_token_id", -1, &sp.eom)) ||
        (rc = get_id(g, "tokenizer.ggml.padding_token_id", ugm ? 0 : -1, &sp.pad)) ||
        (ugm && (rc = get_id(g, "tokenizer.ggml.seperator_token_id", -1, &sp.sep))) ||
        (ugm && (rc = get_flag(g, "tokenizer.ggml.add_sep_token", &sp.add_sep))) ||
        (rc = get_fim(g, &sp)) ||
        (rc = get_flag(g, "tokenizer.ggml.add_bos_token", &sp.add_bos)) ||
        (rc = get_flag(g, "tokenizer.ggml.add_eos_token", &sp.add_eos)) ||
        (rc = get_flag(g, "tokenizer.ggml.add_space_prefix", &sp.add_space_prefix))) {
        fd_set_err(err, errlen, "tokenizer: a special token id or flag has the wrong type (%s)",
                   fd_strerror(rc));
        goto done;
    }
    if (sp.kind == TOK_WPM && (rc = wpm_ids(g, &sp, texts, lens, (int32_t)n)) != 0) {
        fd_set_err(err, errlen, "tokenizer: a special token id has the wrong type (%s)",
                   fd_strerror(rc));
        goto done;
    }
    rc = tok_build(out, &sp, err, errlen);
done:
    free(ml);
    free(mt);
    free(ty);
    free(sc);
    free(lens);
    free(texts);
    return rc;
}

/* ---------------------------------------------------------------- encoding */

typedef struct sink {
    int32_t *ids;
    size_t cap, n;
} sink_t;

static inline void emit(sink_t *s, int32_t id)
{
    if (s->n < s->cap)
        s->ids[s->n] = id;
    s->n++;
}

static void sink_emit(void *ctx, int32_t id) { emit(ctx, id); }

/* One symbol of a merge session: a run of bytes of the session's text. */
typedef struct sym {
    int32_t prev, next;
    uint32_t start, len;  /* len 0: merged into its left neighbour */
    int32_t id;           /* BPE: current token; SPM: merge-tree node */
} sym_t;

/* A candidate merge of symbols left and right (adjacent when pushed). */
typedef struct bigram {
    union {
        float score;      /* SPM: higher first */
        int32_t rank;     /* BPE: lower first */
    } u;
    int32_t left, right;
    uint32_t size;        /* joined length when pushed: stale if the symbols changed */
    int32_t result;       /* BPE: the joined token */
} bigram_t;

/* SPM merge tree: what a final symbol was built from, for re-splitting unused pieces. */
typedef struct node {
    uint32_t start, len;
    int32_t l, r;
} node_t;

/* Per-call working memory, grown on demand and reused across the words of one call. */
typedef struct work {
    uint8_t *buf;
    size_t buf_cap;
    sym_t *sym;
    size_t sym_cap;
    bigram_t *heap;
    size_t heap_cap, heap_n;
    node_t *node;
    size_t node_cap;
    int32_t *stack;
    size_t stack_cap;
    bool bpe;
} work_t;

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = FD_MAX(need, *cap * 2), bytes;
    if (fd_mul_size(nc, elem, &bytes))
        return -ENOMEM;
    void *q = realloc(*p, bytes);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = nc;
    return 0;
}

static void work_free(work_t *w)
{
    free(w->buf);
    free(w->sym);
    free(w->heap);
    free(w->node);
    free(w->stack);
}

static inline bool big_before(const work_t *w, const bigram_t *a, const bigram_t *b)
{
    if (w->bpe) {
        if (a->u.rank != b->u.rank)
            return a->u.rank < b->u.rank;
    } else if (a->u.score != b->u.score) {
        return a->u.score > b->u.score;
    }
    return a->left < b->left;
}

/* The heap's capacity is reserved per session (3 entries per symbol), so push cannot fail. */
static void heap_push(work_t *w, bigram_t b)
{
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!big_before(w, &b, &w->heap[p]))
            break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = b;
}

static bigram_t heap_pop(work_t *w)
{
    bigram_t top = w->heap[0];
    bigram_t last = w->heap[--w->heap_n];
    size_t n = w->heap_n, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && big_before(w, &w->heap[c + 1], &w->heap[c]))
            c++;
        if (!big_before(w, &w->heap[c], &last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n)
        w->heap[i] = last;
    return top;
}

/* Splits b[0..n) into symbols: well-formed characters, or single ill-formed bytes. */
static int make_symbols(work_t *w, const uint8_t *b, size_t n, size_t *nsym)
{
    if (n > INT32_MAX)
        return -ENOMEM;
    if (grow((void **)&w->sym, &w->sym_cap, n, sizeof *w->sym) ||
        grow((void **)&w->heap, &w->heap_cap, 3 * n, sizeof *w->heap))
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int c = b[i] < 0x80 ? 1 : uni_scan(b + i, n - i, &cp);
        size_t len = c > 0 ? (size_t)c : 1;
        w->sym[k] = (sym_t){(int32_t)k - 1, (int32_t)k + 1, (uint32_t)i, (uint32_t)len, -1};
        k++;
        i += len;
    }
    if (k)
        w->sym[k - 1].next = -1;
    *nsym = k;
    w->heap_n = 0;
    return 0;
}

/* SentencePiece merges through normal, user-defined and unused pieces; unused ones are split
 * again at the end (sentencepiece's rev_merge). */
static bool spm_mergeable(int ty)
{
    return ty == TOK_T_NORMAL || ty == TOK_T_USER_DEFINED || ty == TOK_T_UNUSED;
}

static void spm_try(const tok_t *t, work_t *w, const uint8_t *b, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return;
    const sym_t *L = &w->sym[l], *R = &w->sym[r];
    uint32_t size = L->len + R->len;
    int32_t id = map_find(t, &t->pieces, b + L->start, size);
    if (id < 0 || !spm_mergeable(t->type[id]))
        return;
    bigram_t g = {.u.score = t->score[id], .left = l, .right = r, .size = size, .result = id};
    heap_push(w, g);
}

static void emit_bytes(const tok_t *t, sink_t *out, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_tok[b[i]];
        if (id < 0)
            id = t->unk;
        if (id >= 0)
            emit(out, id);
    }
}

static int spm_session(const tok_t *t, work_t *w, const uint8_t *b, size_t n, sink_t *out)
{
    size_t ns;
    if (make_symbols(w, b, n, &ns) ||
        grow((void **)&w->node, &w->node_cap, 2 * ns, sizeof *w->node) ||
        grow((void **)&w->stack, &w->stack_cap, 2 * ns, sizeof *w->stack))
        return -ENOMEM;
    for (size_t i = 0; i < ns; i++) {
        w->node[i] = (node_t){w->sym[i].start, w->sym[i].len, -1, -1};
        w->sym[i].id = (int32_t)i;
    }
    size_t nn = ns;
    for (size_t i = 1; i < ns; i++)
        spm_try(t, w, b, (int32_t)i - 1, (int32_t)i);
    while (w->heap_n) {
        bigram_t g = heap_pop(w);
        sym_t *L = &w->sym[g.left], *R = &w->sym[g.right];
        if (L->len == 0 || R->len == 0 || L->len + R->len != g.size)
            continue;
        w->node[nn] = (node_t){L->start, g.size, L->id, R->id};
        L->id = (int32_t)nn++;
        L->len = g.size;
        R->len = 0;
        L->next = R->next;
        if (R->next >= 0)
            w->sym[R->next].prev = g.left;
        spm_try(t, w, b, L->prev, g.left);
        spm_try(t, w, b, g.left, L->next);
    }
    for (int32_t i = ns ? 0 : -1; i >= 0; i = w->sym[i].next) {
        size_t sp = 0;
        w->stack[sp++] = w->sym[i].id;
        while (sp) {
            const node_t *nd = &w->node[w->stack[--sp]];
            int32_t id = map_find(t, &t->pieces, b + nd->start, nd->len);
            if (id >= 0 && (t->type[id] == TOK_T_NORMAL || t->type[id] == TOK_T_USER_DEFINED)) {
                emit(out, id);
            } else if (nd->l >= 0) {
                w->stack[sp++] = nd->r;
                w->stack[sp++] = nd->l;
            } else {
                emit_bytes(t, out, b + nd->start, nd->len);
            }
        }
    }
    return 0;
}

static int spm_fragment(const tok_t *t, work_t *w, const uint8_t *s, size_t n, bool prefix,
                        sink_t *out)
{
    size_t need;
    if (fd_mul_size(n, 3, &need) || fd_add_size(need, 3, &need) ||
        grow((void **)&w->buf, &w->buf_cap, need, 1))
        return -ENOMEM;
    size_t m = 0;
    if (prefix) {
        memcpy(w->buf, SPM_SPACE, 3);
        m = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(w->buf + m, SPM_SPACE, 3);
            m += 3;
        } else {
            w->buf[m++] = s[i];
        }
    }
    size_t from = 0;
    for (size_t i = 0; i < m; i++) {
        if (w->buf[i] >= 128 || !t->barrier[w->buf[i]])
            continue;
        int rc;
        if ((i > from && (rc = spm_session(t, w, w->buf + from, i - from, out)) != 0) ||
            (rc = spm_session(t, w, w->buf + i, 1, out)) != 0)
            return rc;
        from = i + 1;
    }
    return from < m ? spm_session(t, w, w->buf + from, m - from, out) : 0;
}

static void bpe_try(const tok_t *t, work_t *w, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return;
    const sym_t *L = &w->sym[l], *R = &w->sym[r];
    if (L->id < 0 || R->id < 0)
        return;
    const merge_slot_t *m = merge_find(t, L->id, R->id);
    if (!m)
        return;
    bigram_t g = {.u.rank = m->rank, .left = l, .right = r, .size = L->len + R->len,
                  .result = m->result};
    heap_push(w, g);
}

/* One pre-token of byte-level BPE: every byte starts as the token of its mapped character. */
static int bpe_word(const tok_t *t, work_t *w, const uint8_t *s, size_t n, sink_t *out)
{
    if (n == 0)
        return 0;
    if (t->ignore_merges) {
        size_t need;
        if (fd_mul_size(n, 2, &need) || grow((void **)&w->buf, &w->buf_cap, need, 1))
            return -ENOMEM;
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            m += (size_t)uni_encode(t->byte_cp[s[i]], w->buf + m);
        int32_t id = map_find(t, &t->pieces, w->buf, m);
        if (id >= 0 && t->type[id] == TOK_T_NORMAL) {
            emit(out, id);
            return 0;
        }
    }
    if (n > INT32_MAX || grow((void **)&w->sym, &w->sym_cap, n, sizeof *w->sym) ||
        grow((void **)&w->heap, &w->heap_cap, 3 * n, sizeof *w->heap))
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        w->sym[i] = (sym_t){(int32_t)i - 1, (int32_t)i + 1, (uint32_t)i, 1, t->byte_tok[s[i]]};
    w->sym[n - 1].next = -1;
    w->heap_n = 0;
    for (size_t i = 1; i < n; i++)
        bpe_try(t, w, (int32_t)i - 1, (int32_t)i);
    while (w->heap_n) {
        bigram_t g = heap_pop(w);
        sym_t *L = &w->sym[g.left], *R = &w->sym[g.right];
        if (L->len == 0 || R->len == 0 || L->len + R->len != g.size)
            continue;
        L->id = g.result;
        L->len = g.size;
        R->len = 0;
        L->next = R->next;
        if (R->next >= 0)
            w->sym[R->next].prev = g.left;
        bpe_try(t, w, L->prev, g.left);
        bpe_try(t, w, g.left, L->next);
    }
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
        if (w->sym[i].id >= 0)
            emit(out, w->sym[i].id);
        else if (t->unk >= 0)
            emit(out, t->unk);
    }
    return 0;
}

/* ---------------------------------------------------------------- pre-tokenizers */

/* The class of the character at s[i] (ill-formed bytes: one OTHER byte); *k its length. */
static inline int char_at(const uint8_t *s, size_t n, size_t i, uint32_t *cp, size_t *k)
{
    uint8_t c = s[i];
    if (c < 0x80) {
        *cp = c;
        *k = 1;
        if ((c >= 0x09 && c <= 0x0D) || c == ' ')
            return UNI_SPACE;
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
            return UNI_LETTER;
        if (c >= '0' && c <= '9')
            return UNI_NUMBER;
        return UNI_OTHER;
    }
    int r = uni_scan(s + i, n - i, cp);
    if (r <= 0) {
        *cp = UINT32_MAX;
        *k = 1;
        return UNI_OTHER;
    }
    *k = (size_t)r;
    return uni_class(*cp);
}

static inline int class_at(const uint8_t *s, size_t n, size_t i)
{
    uint32_t cp;
    size_t k;
    return char_at(s, n, i, &cp, &k);
}

/* End of the run of characters of class cls starting at i; at most max characters. */
static size_t run_end(const uint8_t *s, size_t n, size_t i, int cls, size_t max)
{
    size_t count = 0;
    while (i < n && count < max) {
        uint32_t cp;
        size_t k;
        if (char_at(s, n, i, &cp, &k) != cls)
            break;
        i += k;
        count++;
    }
    return i;
}

static inline bool is_crlf(uint8_t c)
{
    return c == '\r' || c == '\n';
}

static inline bool is_crlf_cp(uint32_t cp)
{
    return cp == '\r' || cp == '\n';
}

static size_t space_nl_run(const uint8_t *s, size_t n, size_t i);

/* The white-space alternatives shared by both regexes, at a space character at i:
 * \s+(?!\S) takes the run but leaves its last character to the next piece when a
 * non-space follows; a single space before a non-space falls through to \s+. */
static size_t space_run(const uint8_t *s, size_t n, size_t i)
{
    size_t e = i, last = i, count = 0;
    while (e < n) {
        uint32_t cp;
        size_t k;
        if (char_at(s, n, e, &cp, &k) != UNI_SPACE)
            break;
        last = e;
        e += k;
        count++;
    }
    if (e == n || count < 2)
        return e;
    return last;
}

/* 's|'t|'re|'ve|'m|'ll|'d at i, in any case with fold (Llama 3's (?i:...), GPT-4o's
 * '[sS]|...): its end, or i when none starts there. */
static size_t contraction(const uint8_t *s, size_t n, size_t i, bool fold)
{
    if (i + 1 < n && s[i] == '\'') {
        uint8_t f = fold ? 0x20 : 0;
        uint8_t a = s[i + 1] | f, b = i + 2 < n ? s[i + 2] | f : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd')
            return i + 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
            return i + 3;
    }
    return i;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t pre_gpt2(const uint8_t *s, size_t n, size_t i)
{
    size_t ce = contraction(s, n, i, false);
    if (ce != i)
        return ce;
    uint32_t cp;
    size_t k;
    int c = char_at(s, n, i, &cp, &k);
    if (cp == ' ' && i + 1 < n) {
        int c1 = class_at(s, n, i + 1);
        if (c1 != UNI_SPACE)
            return run_end(s, n, i + 1, c1, SIZE_MAX);
    }
    if (c != UNI_SPACE)
        return run_end(s, n, i, c, SIZE_MAX);
    return space_run(s, n, i);
}

/* Llama 3 (digits = 3) and Qwen 2 (digits = 1):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,digits}
 * | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t pre_llama3(const uint8_t *s, size_t n, size_t i, size_t digits)
{
    size_t ce = contraction(s, n, i, true);
    if (ce != i)
        return ce;
    uint32_t cp;
    size_t k;
    int c = char_at(s, n, i, &cp, &k);
    if (c == UNI_LETTER)
        return run_end(s, n, i, UNI_LETTER, SIZE_MAX);
    if (c != UNI_NUMBER && !is_crlf_cp(cp) && i + k < n && class_at(s, n, i + k) == UNI_LETTER)
        return run_end(s, n, i + k, UNI_LETTER, SIZE_MAX);
    if (c == UNI_NUMBER)
        return run_end(s, n, i, UNI_NUMBER, digits);
    size_t o = SIZE_MAX;
    if (cp == ' ' && i + 1 < n && class_at(s, n, i + 1) == UNI_OTHER)
        o = i + 1;
    else if (c == UNI_OTHER)
        o = i;
    if (o != SIZE_MAX) {
        size_t e = run_end(s, n, o, UNI_OTHER, SIZE_MAX);
        while (e < n && is_crlf(s[e]))
            e++;
        return e;
    }
    return space_nl_run(s, n, i);
}

/* The letter classes of llama.cpp's GPT-4o regex: it runs the o200k pattern rewritten as
 * ((?=[\p{L}])([^a-z]))* and ((?=[\p{L}])([^A-Z]))+ (std::regex has no \p{Lu}/\p{Ll}), so
 * "upper" (bit 1) is a letter other than a-z and "lower" (bit 2) a letter other than A-Z:
 * every non-ASCII letter is both, and marks (\p{M}) are no letters at all.  0: no letter. */
static inline int gpt4o_case(const uint8_t *s, size_t n, size_t i, size_t *k)
{
    uint32_t cp;
    if (char_at(s, n, i, &cp, k) != UNI_LETTER)
        return 0;
    if (cp >= 0x80)
        return 3;
    return cp >= 'a' && cp <= 'z' ? 2 : 1;
}

/* The two letter alternatives at the letter at p, as a backtracking matcher takes them:
 * upper* lower+ first (the upper run gives back characters until a lower one can start:
 * the last character of the run that is both, which then ends the word on its own), else
 * upper+ lower* (then just the upper run); each with its optional contraction. */
static size_t gpt4o_word(const uint8_t *s, size_t n, size_t p)
{
    size_t e = p, both = SIZE_MAX, k;
    int c;
    while (e < n && ((c = gpt4o_case(s, n, e, &k)) & 1)) {
        if (c & 2)
            both = e;
        e += k;
    }
    size_t end = e;
    if (e < n && (gpt4o_case(s, n, e, &k) & 2)) {
        while (end < n && (gpt4o_case(s, n, end, &k) & 2))
            end += k;
    } else if (both != SIZE_MAX) {
        gpt4o_case(s, n, both, &k);
        end = both + k;
    }
    return contraction(s, n, end, true);
}

/* GPT-4o / o200k (gpt-oss), as llama.cpp runs it:
 * [^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(contraction)?
 * |[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(contraction)?
 * |\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t pre_gpt4o(const uint8_t *s, size_t n, size_t i)
{
    uint32_t cp;
    size_t k;
    int c = char_at(s, n, i, &cp, &k);
    if (c == UNI_LETTER)
        return gpt4o_word(s, n, i);
    if (c != UNI_NUMBER && !is_crlf_cp(cp) && i + k < n && class_at(s, n, i + k) == UNI_LETTER)
        return gpt4o_word(s, n, i + k);
    if (c == UNI_NUMBER)
        return run_end(s, n, i, UNI_NUMBER, 3);
    size_t o = SIZE_MAX;
    if (cp == ' ' && i + 1 < n && class_at(s, n, i + 1) == UNI_OTHER)
        o = i + 1;
    else if (c == UNI_OTHER)
        o = i;
    if (o != SIZE_MAX) {
        size_t e = run_end(s, n, o, UNI_OTHER, SIZE_MAX);
        while (e < n && (is_crlf(s[e]) || s[e] == '/'))
            e++;
        return e;
    }
    return space_nl_run(s, n, i);
}

/* At a white-space character: \s*[\r\n]+ ends after the run's last line break, if it has
 * one; else the \s+(?!\S) and \s+ of space_run. */
static size_t space_nl_run(const uint8_t *s, size_t n, size_t i)
{
    size_t e = i, nl = SIZE_MAX;
    while (e < n) {
        uint32_t cp2;
        size_t k2;
        if (char_at(s, n, e, &cp2, &k2) != UNI_SPACE)
            break;
        if (is_crlf(s[e]))
            nl = e + 1;
        e += k2;
    }
    if (nl != SIZE_MAX)
        return nl;
    return space_run(s, n, i);
}

static size_t pre_next(const tok_t *t, const uint8_t *s, size_t n, size_t i)
{
    switch (t->pre) {
    case TOK_PRE_LLAMA3:
        return pre_llama3(s, n, i, 3);
    case TOK_PRE_QWEN2:
        return pre_llama3(s, n, i, 1);
    case TOK_PRE_GPT4O:
        return pre_gpt4o(s, n, i);
    default:
        return pre_gpt2(s, n, i);
    }
}

static int bpe_split(const tok_t *t, work_t *w, const uint8_t *s, size_t n, sink_t *out)
{
    for (size_t i = 0; i < n;) {
        size_t e = pre_next(t, s, n, i);
        int rc = bpe_word(t, w, s + i, e - i, out);
        if (rc)
            return rc;
        i = e;
    }
    return 0;
}

static int bpe_fragment(const tok_t *t, work_t *w, const uint8_t *s, size_t n, sink_t *out)
{
    if (t->pre != TOK_PRE_DIGITS)
        return bpe_split(t, w, s, n, out);
    /* a first pass splits out every digit; the gpt2 split runs on the text between */
    size_t from = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k;
        if (char_at(s, n, i, &cp, &k) != UNI_NUMBER) {
            i += k;
            continue;
        }
        int rc;
        if ((rc = bpe_split(t, w, s + from, i - from, out)) != 0 ||
            (rc = bpe_word(t, w, s + i, k, out)) != 0)
            return rc;
        i += k;
        from = i;
    }
    return bpe_split(t, w, s + from, n - from, out);
}

int tok_split(const tok_t *t, const char *text, size_t len, size_t *ends, size_t cap,
              size_t *n)
{
    const uint8_t *s = (const uint8_t *)text;
    size_t k = 0;
    if (!text && len)
        return -EINVAL;
    for (size_t i = 0; i < len;) {
        size_t e = len;
        if (t->kind == TOK_BPE) {
            uint32_t cp;
            size_t cl;
            if (t->pre == TOK_PRE_DIGITS && char_at(s, len, i, &cp, &cl) == UNI_NUMBER) {
                e = i + cl;
            } else if (t->pre == TOK_PRE_DIGITS) {
                size_t lim = i; /* the gpt2 split, inside the run up to the next digit */
                while (lim < len && char_at(s, len, lim, &cp, &cl) != UNI_NUMBER)
                    lim += cl;
                e = pre_gpt2(s, lim, i);
            } else {
                e = pre_next(t, s, len, i);
            }
        }
        if (ends && k < cap)
            ends[k] = e;
        k++;
        i = e;
    }
    *n = k;
    return k > cap ? -ENOSPC : 0;
}

/* WPM: the normalized words of s[0..n), each as U+2581 + word matched greedily longest
 * first against every token text (llama.cpp's WPM session); a word with a position no token
 * starts at is one unknown token. */
static int wpm_fragment(const tok_t *t, const uint8_t *s, size_t n, sink_t *out)
{
    uint8_t *buf = malloc(wpm_out_cap(n) + 3);
    size_t *ends = malloc((n + 1) * sizeof *ends);
    if (!buf || !ends) {
        free(buf);
        free(ends);
        return -ENOMEM;
    }
    /* the words land after room for the U+2581 each gets in turn */
    size_t nw = wpm_words(s, n, buf + 3, ends);
    for (size_t k = 0, from = 0; k < nw; from = ends[k++]) {
        uint8_t *w = buf + from;       /* 3 bytes before the word: free or already matched */
        const size_t len = ends[k] - from + 3;
        memcpy(w, SPM_SPACE, 3);
        const size_t mark = out->n;
        for (size_t i = 0; i < len;) {
            size_t j = FD_MIN(len, i + t->max_len);
            int32_t id = -1;
            for (; j > i && id < 0; j--)
                id = map_find(t, &t->pieces, w + i, j - i);
            if (id < 0) {
                out->n = mark; /* discard the word's pieces */
                break;
            }
            emit(out, id);
            i = j + 1;
        }
        if (out->n == mark && t->unk >= 0)
            emit(out, t->unk);
    }
    free(buf);
    free(ends);
    return 0;
}

/* The special token whose text starts at s[0] (longest first), or -1. */
static int32_t match_special(const tok_t *t, const uint8_t *s, size_t n, bool parse_special,
                             size_t *len)
{
    uint8_t b = s[0];
    for (uint32_t j = t->sl_off[b]; j < t->sl_off[b + 1]; j++) {
        size_t l = t->sl_len[j];
        if (l > n)
            continue;
        int32_t id = map_find(t, &t->specials, s, l);
        if (id < 0)
            continue;
        if (t->type[id] != TOK_T_USER_DEFINED && !parse_special)
            continue;
        if (t->type[id] == TOK_T_USER_DEFINED && t->kind == TOK_UGM)
            continue; /* SentencePiece matches them inside its search */
        *len = l;
        return id;
    }
    return -1;
}

int tok_encode(const tok_t *t, const char *text, size_t len, bool add_special,
               bool parse_special, int32_t *ids, size_t cap, size_t *n)
{
    sink_t out = {ids, ids ? cap : 0, 0};
    *n = 0;
    if (!text && len)
        return -EINVAL;
    work_t w = {0};
    w.bpe = t->kind == TOK_BPE;
    if (add_special && t->add_bos && t->bos >= 0)
        emit(&out, t->bos);
    const uint8_t *s = (const uint8_t *)text;
    bool prev_special = true; /* SPM: the dummy prefix goes on the text's first fragment */
    size_t from = 0;
    int rc = 0;
    for (size_t i = 0; i <= len && rc == 0;) {
        size_t sl = 0;
        int32_t sid = -1;
        if (i < len) {
            if (t->sl_off[s[i]] == t->sl_off[s[i] + 1]) {
                i++;
                continue;
            }
            sid = match_special(t, s + i, len - i, parse_special, &sl);
            if (sid < 0) {
                i++;
                continue;
            }
        }
        if (i > from) {
            if (t->kind == TOK_SPM)
                rc = spm_fragment(t, &w, s + from, i - from,
                                  t->add_space_prefix && prev_special, &out);
            else if (t->kind == TOK_WPM)
                rc = wpm_fragment(t, s + from, i - from, &out);
            else if (t->kind == TOK_UGM)
                rc = ugm_encode(t->ugm, s + from, i - from, sink_emit, &out);
            else
                rc = bpe_fragment(t, &w, s + from, i - from, &out);
            prev_special = false;
        }
        if (sid < 0)
            break;
        emit(&out, sid);
        /* as llama.cpp: SPM text after a special token gets the dummy prefix again */
        prev_special = true;
        i += sl;
        from = i;
    }
    work_free(&w);
    if (rc)
        return rc;
    if (add_special && t->add_sep && t->sep >= 0 && t->kind == TOK_WPM)
        emit(&out, t->sep);
    if (add_special && t->add_eos && t->eos >= 0)
        emit(&out, t->eos);
    *n = out.n;
    return out.n > out.cap ? -ENOSPC : 0;
}

/* ---------------------------------------------------------------- decoding */

static void piece_ref(const tok_t *t, int32_t id, bool render_special, const char **p,
                      size_t *len)
{
    int ty = t->type[id];
    if (render_special && (ty == TOK_T_CONTROL || ty == TOK_T_UNKNOWN || ty == TOK_T_UNUSED)) {
        *p = t->text + t->toff[id];
        *len = t->tlen[id];
    } else {
        *p = t->ptext + t->poff[id];
        *len = t->plen[id];
    }
}

int tok_piece(const tok_t *t, int32_t id, bool render_special, char *buf, size_t cap,
              size_t *len)
{
    *len = 0;
    if (id < 0 || id >= t->n)
        return -EINVAL;
    const char *p;
    size_t n;
    piece_ref(t, id, render_special, &p, &n);
    *len = n;
    if (n > cap || (n && !buf))
        return -ENOSPC;
    if (n)
        memcpy(buf, p, n);
    return 0;
}

/* Whether a decoded text starts with a dummy-prefix space to drop: SPM's always (as before);
 * UGM's when the vocabulary adds one before the text (SentencePiece's decoder). */
static bool strips_space(const tok_t *t)
{
    return t->kind == TOK_SPM ||
           (t->kind == TOK_UGM && t->add_space_prefix && !ugm_ws_as_suffix(t->ugm));
}

int tok_decode(const tok_t *t, const int32_t *ids, size_t n, bool render_special,
               bool strip_leading_space, char *buf, size_t cap, size_t *len)
{
    *len = 0;
    if (n && !ids)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->n)
            return -EINVAL;
    bool strip = strip_leading_space && strips_space(t);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p;
        size_t pl;
        piece_ref(t, ids[i], render_special, &p, &pl);
        if (pl && strip) {
            if (p[0] == ' ') {
                p++;
                pl--;
            }
            strip = false;
        }
        if (buf && o + pl <= cap)
            memcpy(buf + o, p, pl);
        o += pl;
    }
    *len = o;
    return o > cap || (o && !buf) ? -ENOSPC : 0;
}

void tok_stream_init(tok_stream_t *s, const tok_t *t, bool strip_leading_space)
{
    memset(s, 0, sizeof *s);
    s->first = true;
    s->strip_space = strip_leading_space && strips_space(t);
}

static inline void put(char *out, size_t cap, size_t *o, const uint8_t *b, size_t n)
{
    if (*o + n <= cap)
        memcpy(out + *o, b, n);
    *o += n;
}

int tok_stream_push(tok_stream_t *s, const tok_t *t, int32_t id, char *out, size_t cap,
                    size_t *len)
{
    *len = 0;
    if (id < 0 || id >= t->n)
        return -EINVAL;
    const char *p;
    size_t pl;
    piece_ref(t, id, s->render_special, &p, &pl);
    bool first = s->first;
    if (pl && first) {
        if (s->strip_space && p[0] == ' ') {
            p++;
            pl--;
        }
        first = false;
    }
    /* the held-back bytes and this piece, scanned as one sequence */
    static const uint8_t fffd[3] = {0xEF, 0xBF, 0xBD};
    size_t np = (size_t)s->n_pend, total = np + pl, o = 0, i = 0;
    uint8_t pend[8];
    int n_pend = 0;
    while (i < total) {
        uint8_t c[4];
        size_t m = FD_MIN((size_t)4, total - i);
        for (size_t j = 0; j < m; j++)
            c[j] = i + j < np ? s->pend[i + j] : (uint8_t)p[i + j - np];
        uint32_t cp;
        int r = uni_scan(c, m, &cp);
        if (r > 0) {
            put(out, cap, &o, c, (size_t)r);
            i += (size_t)r;
        } else if (r == 0) {
            memcpy(pend, c, m); /* an unfinished character: wait for the next piece */
            n_pend = (int)m;
            break;
        } else {
            put(out, cap, &o, fffd, 3);
            i += (size_t)-r;
        }
    }
    *len = o;
    if (o > cap)
        return -ENOSPC;
    memcpy(s->pend, pend, (size_t)n_pend);
    s->n_pend = n_pend;
    s->first = first;
    return 0;
}

int tok_stream_flush(tok_stream_t *s, char *out, size_t cap, size_t *len)
{
    *len = 0;
    if (s->n_pend == 0)
        return 0;
    *len = 3;
    if (cap < 3)
        return -ENOSPC;
    memcpy(out, "\xEF\xBF\xBD", 3);
    s->n_pend = 0;
    return 0;
}
