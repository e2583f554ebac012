/* fuzz_stream.c: libFuzzer target for streamed text: the engine's release of generated text
 * (tok_stream_* chunks, text held back while it could start a stop string, stop strings cut)
 * and the server's stream chunk JSON.  The engine runs on a scripted model that "samples" the
 * token ids the input lists (byte pieces that split UTF-8 characters, multi-byte pieces,
 * control tokens, EOS), with up to three stop strings (any bytes) from the input.  Every
 * TOKEN event's text must be whole UTF-8 characters; their concatenation must be a prefix of
 * the whole decoded text that contains no stop string, equal to all of it unless a stop
 * string ended the request right where the text stops; and each chunk must come back
 * unchanged from its JSON frame (NUL bytes as U+FFFD).  Built by `make fuzz`; seeds in tests/fuzz/corpus/fuzz_stream/.
 *
 * Input: byte 0 flags (bits 0-1 vocabulary, 2 ignore_eos, 3 prompt ends in BOS, 4-5 stop
 * strings); each stop string as a length byte (1 + n % 8) and its bytes; then the script,
 * two bytes (little-endian) per token, at most 96 tokens. */
#define _GNU_SOURCE /* memmem */
#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "common/log.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "engine/unicode.h"
#include "server/openai.h"
#include "tests/fuzz/fuzz.h"

enum { MAX_SCRIPT = 96, N_CTX = 128, N_VOCABS = 2 };

/* ---- two small vocabularies: SPM with byte fallback, byte-level BPE ---- */

static tok_t *vocab[N_VOCABS];

static void build_vocabs(void)
{
    static char texts[300][16];
    static const char *ptrs[300];
    static float scores[300];
    static int32_t types[300];
    static const char *pieces[] = {"a", "b", "c", "ab", "bc", "abc", "\xE2\x96\x81", "\xE2\x96\x81" "a",
                                   "\xC3\xA9", "\xE4\xB8\xAD", "\xF0\x9F\x98\x80", "\xE2\x96\x81\xC3\xA9",
                                   "x\xC3", "\xA9y", "\n", "<|x|>"};
    int n = 0;
    for (; n < 3; n++) {
        snprintf(texts[n], 16, "%s", n == 0 ? "<unk>" : n == 1 ? "<s>" : "</s>");
        types[n] = n == 0 ? TOK_T_UNKNOWN : TOK_T_CONTROL;
    }
    for (int b = 0; b < 256; b++, n++) {
        snprintf(texts[n], 16, "<0x%02X>", b);
        types[n] = TOK_T_BYTE;
    }
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++, n++) {
        snprintf(texts[n], 16, "%s", pieces[i]);
        types[n] = i + 1 == sizeof pieces / sizeof pieces[0] ? TOK_T_CONTROL : TOK_T_NORMAL;
    }
    for (int i = 0; i < n; i++) {
        ptrs[i] = texts[i];
        scores[i] = -(float)i;
    }
    tok_spec_t s;
    tok_spec_init(&s);
    s.kind = TOK_SPM;
    s.n_tokens = n;
    s.texts = ptrs;
    s.scores = scores;
    s.types = types;
    s.bos = 1;
    s.eos = 2;
    s.unk = 0;
    char err[128];
    if (tok_build(&vocab[0], &s, err, sizeof err))
        abort();

    /* byte-level: the 256 mapped bytes, merged pieces (one that ends inside a character),
     * BOS/EOS controls */
    static char bl[300][16];
    static const char *bp[300];
    static int32_t bt[300];
    int m = 0, next = 256;
    for (int b = 0; b < 256; b++, m++) {
        bool direct = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        uint8_t u[4];
        int k = uni_encode(direct ? (uint32_t)b : (uint32_t)next++, u);
        memcpy(bl[m], u, (size_t)k);
        bp[m] = bl[m];
        bt[m] = TOK_T_NORMAL;
    }
    static const char *extra[] = {"ab", "abc", "\xC4\xA0" "a", "\xC3\x83\xC2\xA9", "<s>", "</s>"};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++, m++) {
        bp[m] = extra[i];
        bt[m] = i >= 4 ? TOK_T_CONTROL : TOK_T_NORMAL;
    }
    static const char *merges[] = {"a b", "ab c", "\xC4\xA0 a", "\xC3\x83 \xC2\xA9"};
    tok_spec_init(&s);
    s.kind = TOK_BPE;
    s.pre = "gpt2";
    s.n_tokens = m;
    s.texts = bp;
    s.types = bt;
    s.merges = merges;
    s.n_merges = sizeof merges / sizeof merges[0];
    s.bos = m - 2;
    s.eos = m - 1;
    if (tok_build(&vocab[1], &s, err, sizeof err))
        abort();
}

/* ---- the scripted model ---- */

typedef struct script {
    const tok_t *tok;           /* the vocabulary of the running request */
    int32_t ids[MAX_SCRIPT];
    int n, next;
    bool used[4];
    int len[4];
} script_t;

static script_t sc;

static int d_alloc(void *ctx, int *slot)
{
    for (int i = 0; i < 4; i++)
        if (!sc.used[i]) {
            sc.used[i] = true;
            sc.len[i] = 0;
            *slot = i;
            return 0;
        }
    return FD_EFULL;
}

static void d_free(void *ctx, int slot)
{
    sc.used[slot] = false;
}

static int d_len(void *ctx, int slot)
{
    return sc.len[slot];
}

static int d_decode(void *ctx, const llm_batch_entry_t *e, int n, float *logits)
{
    int nv = tok_n_vocab(sc.tok), k = 0;
    for (int i = 0; i < n; i++) {
        sc.len[e[i].slot] += e[i].n_tokens;
        if (!e[i].want_logits)
            continue;
        float *l = logits + (size_t)k++ * (size_t)nv;
        memset(l, 0, (size_t)nv * sizeof *l);
        l[sc.ids[sc.next < sc.n ? sc.next : sc.n - 1]] = 10;
        sc.next++;
    }
    return 0;
}

static bool d_eog(void *ctx, int32_t t)
{
    return tok_is_eog(sc.tok, t);
}

static void d_sinit(void *ctx, tok_stream_t *s, int32_t last)
{
    tok_stream_init(s, sc.tok, tok_bos(sc.tok) >= 0 && last == tok_bos(sc.tok));
}

static int d_push(void *ctx, tok_stream_t *s, int32_t t, char *out, size_t cap, size_t *len)
{
    return tok_stream_push(s, sc.tok, t, out, cap, len);
}

static int d_flush(void *ctx, tok_stream_t *s, char *out, size_t cap, size_t *len)
{
    return tok_stream_flush(s, out, cap, len);
}

/* ---- collecting one request's events ---- */

typedef struct coll {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int finish;
    char text[MAX_SCRIPT * 64];
    size_t len;
    int32_t toks[MAX_SCRIPT + 1];
    int n_tok;
    bool bad_chunk;
} coll_t;

static coll_t co = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* The chunk as a stream frame (chat.completion.chunk delta), parsed back. */
static bool frame_ok(const char *text, size_t len)
{
    oai_choice_t ch = {.index = 0, .text = text, .text_len = len};
    oai_resp_t r = {.kind = RQ_CHAT, .chunk = true, .id = "chatcmpl-x", .model = "m",
                    .created = 1, .choices = &ch, .n_choices = 1};
    char *js = oai_response(&r);
    if (!js)
        return false;
    cJSON *root = cJSON_Parse(js);
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "choices"), 0);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(c0, "delta"), "content");
    /* NUL bytes (a <0x00> token) travel as U+FFFD: JSON strings here cannot hold them */
    char *want = oai_utf8_clean(text, len);
    bool ok = want && cJSON_IsString(t) && strcmp(t->valuestring, want) == 0 &&
              (memchr(text, 0, len) || strlen(want) == len);
    free(want);
    cJSON_Delete(root);
    free(js);
    return ok;
}

static void on_event(void *ud, const eng_event_t *ev)
{
    pthread_mutex_lock(&co.mu);
    if (ev->type == ENG_EV_TOKEN) {
        if (co.n_tok <= MAX_SCRIPT)
            co.toks[co.n_tok++] = ev->token;
        if (!uni_valid((const uint8_t *)ev->text, ev->text_len) ||
            co.len + ev->text_len > sizeof co.text ||
            (ev->text_len && !frame_ok(ev->text, ev->text_len))) /* the server sends no empty chunk */
            co.bad_chunk = true;
        else {
            memcpy(co.text + co.len, ev->text, ev->text_len);
            co.len += ev->text_len;
        }
    } else {
        co.finish = ev->finish;
        co.done = true;
        pthread_cond_signal(&co.cv);
    }
    pthread_mutex_unlock(&co.mu);
}

static eng_t *eng;

static void setup(void)
{
    fd_log_set_level(FD_LOG_ERROR);
    build_vocabs();
    sc.tok = vocab[0];
    eng_driver_t d = {.n_vocab = tok_n_vocab(vocab[0]) > tok_n_vocab(vocab[1])
                                     ? tok_n_vocab(vocab[0]) : tok_n_vocab(vocab[1]),
                      .n_ctx = N_CTX, .n_slots = 4, .seq_alloc = d_alloc, .seq_free = d_free,
                      .seq_len = d_len, .decode = d_decode, .is_eog = d_eog,
                      .stream_init = d_sinit, .stream_push = d_push, .stream_flush = d_flush};
    eng_params_t p;
    eng_params_default(&p);
    p.max_running = 1;
    p.check = true;
    char err[256];
    if (eng_open_driver(&eng, &p, &d, err, sizeof err)) {
        fprintf(stderr, "fuzz_stream: %s\n", err);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!eng)
        setup();
    if (size < 3)
        return 0;
    uint8_t flags = data[0];
    const uint8_t *p = data + 1, *end = data + size;
    char stops[3][9];
    const char *stop_ptrs[3];
    int n_stop = 0;
    for (int i = 0; i < ((flags >> 4) & 3) && p < end; i++) {
        size_t L = 1 + (size_t)(*p++ % 8);
        if ((size_t)(end - p) < L)
            break;
        memcpy(stops[n_stop], p, L);
        stops[n_stop][L] = 0;
        p += L;
        if (strlen(stops[n_stop]) == L) /* the engine takes C strings: no NUL inside */
            stop_ptrs[n_stop] = stops[n_stop], n_stop++;
    }
    const tok_t *t = vocab[(flags & 3) % N_VOCABS];
    int nv = tok_n_vocab(t);
    sc.tok = t;
    sc.n = 0;
    sc.next = 0;
    for (; end - p >= 2 && sc.n < MAX_SCRIPT; p += 2)
        sc.ids[sc.n++] = (int32_t)((p[0] | p[1] << 8) % nv);
    if (sc.n == 0)
        return 0;

    int32_t prompt[2] = {3 + 'a', (flags & 8) ? tok_bos(t) : 3 + 'b'};
    if (prompt[1] < 0)
        prompt[1] = 3;
    eng_request_t q;
    memset(&q, 0, sizeof q);
    q.prompt = prompt;
    q.n_prompt = 2;
    q.max_tokens = sc.n;
    eng_sampling_default(&q.sampling);
    q.sampling.temperature = 0;
    q.stop = stop_ptrs;
    q.n_stop = n_stop;
    q.ignore_eos = flags & 4;
    q.on_event = on_event;
    co.done = false;
    co.len = 0;
    co.n_tok = 0;
    co.bad_chunk = false;
    uint64_t id;
    char err[256];
    CHECK(eng_submit(eng, &q, &id, err, sizeof err) == 0);
    pthread_mutex_lock(&co.mu);
    while (!co.done)
        pthread_cond_wait(&co.cv, &co.mu);
    pthread_mutex_unlock(&co.mu);

    /* The sampled tokens are the script's, in order, until the request ended. */
    CHECK(!co.bad_chunk && co.n_tok >= 1 && co.n_tok <= sc.n);
    for (int i = 0; i < co.n_tok; i++)
        CHECK(co.toks[i] == sc.ids[i]);

    /* The whole text of those tokens, decoded as the engine's stream does. */
    static char full[MAX_SCRIPT * 64 + 8];
    size_t fl = 0, cl;
    tok_stream_t st;
    tok_stream_init(&st, t, prompt[1] == tok_bos(t));
    bool eog = false;
    for (int i = 0; i < co.n_tok && !eog; i++) {
        eog = !q.ignore_eos && tok_is_eog(t, co.toks[i]);
        if (!eog) {
            CHECK(tok_stream_push(&st, t, co.toks[i], full + fl, sizeof full - fl, &cl) == 0);
            fl += cl;
        }
    }
    CHECK(tok_stream_flush(&st, full + fl, sizeof full - fl, &cl) == 0);
    fl += cl;

    CHECK(co.len <= fl && memcmp(co.text, full, co.len) == 0);
    for (int i = 0; i < n_stop; i++)
        CHECK(!memmem(co.text, co.len, stop_ptrs[i], strlen(stop_ptrs[i])));
    bool cut = false; /* a stop string starts in the character where the text ends */
    for (int i = 0; i < n_stop; i++) {
        const char *m = memmem(full + co.len, FD_MIN(fl - co.len, 3 + strlen(stop_ptrs[i])),
                               stop_ptrs[i], strlen(stop_ptrs[i]));
        if (m && m - (full + co.len) < 4)
            cut = true;
    }
    if (co.finish == ENG_FINISH_LENGTH)
        CHECK(co.len == fl && co.n_tok == sc.n && !cut);
    else if (co.finish == ENG_FINISH_STOP)
        CHECK(cut || (co.len == fl && eog));
    else
        abort();
    return 0;
}
