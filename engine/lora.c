/* lora.c: LoRA adapter files, checked against their model (lora.h).  The rules are
 * llama.cpp's (llama-adapter.cpp): general.type "adapter", adapter.type "lora", the same
 * general.architecture as the model; "<base>.lora_a" with ne [n_in, rank] and "<base>.lora_b"
 * with ne [rank, n_out] where the base tensor is [n_in, n_out]; the effective scale is
 * user_scale * alpha / rank when alpha is set, else user_scale. */
#include "engine/lora.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "common/ggtypes.h"
#include "engine/gguf_write.h"

static const char *const target_names[FZ_LORA_N_TARGETS] = {
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "output"
};

static bool str_is(gguf_str_t s, const char *want)
{
    return s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

static bool has_suffix(const char *s, const char *suf, size_t *stem)
{
    size_t n = strlen(s), k = strlen(suf);
    if (n <= k || strcmp(s + n - k, suf) != 0)
        return false;
    *stem = n - k;
    return true;
}

/* The key's string, checked to be `want`: 0, or an error naming what the file has. */
static int want_str(const gguf_t *g, const char *key, const char *want, const char *what,
                    char *err, size_t errlen)
{
    gguf_str_t s;
    int rc = gguf_get_str(g, key, &s);
    if (rc == -ENOENT) {
        snprintf(err, errlen, "%s: no %s: not a LoRA adapter (%s)", gguf_path(g), key, what);
        return FD_EFORMAT;
    }
    if (rc) {
        snprintf(err, errlen, "%s: %s is not a string", gguf_path(g), key);
        return rc;
    }
    if (!str_is(s, want)) {
        snprintf(err, errlen, "%s: %s is '%.*s', expected '%s' (%s)", gguf_path(g), key,
                 (int)FD_MIN(s.len, 64), s.ptr, want, what);
        return strcmp(key, "general.architecture") == 0 ? FD_EUNSUP : FD_EFORMAT;
    }
    return 0;
}

/* Which target a base tensor name is: n_tgt targets written to tgt (2 or 3 for fused
 * tensors, whose B rows split at rows[]), layer in *layer.  0 targets: not adaptable. */
static int target_of(const lora_base_t *b, const char *name, int *layer, int *tgt,
                     int64_t *rows)
{
    if (strcmp(name, "output.weight") == 0) {
        *layer = -1;
        tgt[0] = FZ_LORA_OUTPUT;
        return 1;
    }
    int l, off = 0;
    if (sscanf(name, "blk.%d.%n", &l, &off) != 1 || off == 0 || l < 0 || l >= b->n_layer)
        return 0;
    const char *rest = name + off;
    *layer = l;
    if (strcmp(rest, "attn_qkv.weight") == 0) {
        tgt[0] = FZ_LORA_Q, tgt[1] = FZ_LORA_K, tgt[2] = FZ_LORA_V;
        rows[0] = b->n_q, rows[1] = b->n_kv, rows[2] = b->n_kv;
        return 3;
    }
    if (b->fused_gate_up && strcmp(rest, "ffn_up.weight") == 0) {
        tgt[0] = FZ_LORA_GATE, tgt[1] = FZ_LORA_UP;
        rows[0] = rows[1] = b->n_ff;
        return 2;
    }
    for (int t = 0; t < FZ_LORA_OUTPUT; t++) {
        size_t k = strlen(target_names[t]);
        if (strncmp(rest, target_names[t], k) == 0 && strcmp(rest + k, ".weight") == 0) {
            if (b->moe && t >= FZ_LORA_GATE)
                return 0;
            tgt[0] = t;
            return 1;
        }
    }
    return 0;
}

static bool type_ok(int type)
{
    return type == GG_F32 || type == GG_F16 || type == GG_BF16 || type == GG_Q8_0;
}

static fb_weight_t weight_of(const gguf_tensor_t *t)
{
    fb_weight_t w = { .type = t->type, .n_in = t->ne[0], .n_out = t->ne[1], .src = t->data,
                      .name = t->name };
    return w;
}

/* Checks one pair (a, b) against its base tensor and appends its matrices. */
static int add_pair(lora_file_t *f, int index, const lora_base_t *base, const char *stem,
                    const gguf_tensor_t *a, const gguf_tensor_t *b, char *err, size_t errlen)
{
    const char *path = gguf_path(f->g);
    const gguf_tensor_t *bt = gguf_find_tensor(base->g, stem);
    if (!bt) {
        snprintf(err, errlen, "%s: tensor %s adapts %s, which the model %s does not have "
                 "(an adapter for another model?)", path, a->name, stem, gguf_path(base->g));
        return FD_EFORMAT;
    }
    int layer = -1, tgt[3];
    int64_t rows[3] = { 0 };
    int n_tgt = bt->n_dims == 2 ? target_of(base, stem, &layer, tgt, rows) : 0;
    if (n_tgt == 0) {
        snprintf(err, errlen, "%s: tensor %s: a LoRA on %s is not supported (adapted: "
                 "attn_q, attn_k, attn_v, attn_qkv, attn_output, ffn_gate, ffn_up, ffn_down of "
                 "dense layers, and output)", path, a->name, stem);
        return FD_EUNSUP;
    }
    const gguf_tensor_t *ab[2] = { a, b };
    for (int i = 0; i < 2; i++) {
        if (!type_ok(ab[i]->type)) {
            const char *tn = gg_type_name(ab[i]->type);
            snprintf(err, errlen, "%s: tensor %s has type %s: LoRA tensors must be F32, F16, "
                     "BF16 or Q8_0", path, ab[i]->name, tn ? tn : "?");
            return FD_EUNSUP;
        }
        if (ab[i]->n_dims != 2) {
            snprintf(err, errlen, "%s: tensor %s has %d dimensions, expected 2", path,
                     ab[i]->name, ab[i]->n_dims);
            return FD_ESHAPE;
        }
    }
    if (a->ne[0] != bt->ne[0] || b->ne[1] != bt->ne[1]) {
        snprintf(err, errlen, "%s: tensors %s [%lld, %lld] and %s [%lld, %lld] do not fit %s "
                 "[%lld, %lld] (lora_a must be [n_in, rank], lora_b [rank, n_out]; an adapter "
                 "for another model?)", path, a->name, (long long)a->ne[0], (long long)a->ne[1],
                 b->name, (long long)b->ne[0], (long long)b->ne[1], stem, (long long)bt->ne[0],
                 (long long)bt->ne[1]);
        return FD_ESHAPE;
    }
    if (a->ne[1] != b->ne[0]) {
        snprintf(err, errlen, "%s: rank mismatch: %s has rank %lld, %s has %lld (lora_a "
                 "transposed?)", path, a->name, (long long)a->ne[1], b->name,
                 (long long)b->ne[0]);
        return FD_ESHAPE;
    }
    const float rank = (float)a->ne[1];
    const float scale = f->alpha != 0.0f ? f->alpha / rank : 1.0f;
    fb_weight_t wa = weight_of(a), wb = weight_of(b);
    int64_t r0 = 0;
    for (int i = 0; i < n_tgt; i++) {
        fz_lora_mat_t *m = &f->mats[f->n_mats++];
        m->adapter = index;
        m->layer = layer;
        m->target = tgt[i];
        m->a = wa;
        m->b = wb;
        m->scale = scale;
        if (n_tgt > 1) {
            if (r0 + rows[i] > wb.n_out) {
                snprintf(err, errlen, "%s: tensor %s has %lld rows, fewer than its parts",
                         path, b->name, (long long)wb.n_out);
                return FD_ESHAPE;
            }
            m->b.src = (const uint8_t *)wb.src +
                       gg_row_bytes(wb.type, (uint64_t)wb.n_in) * (uint64_t)r0;
            m->b.n_out = rows[i];
            r0 += rows[i];
        }
    }
    return 0;
}

int lora_open(lora_file_t *out, const char *path, int index, const lora_base_t *base,
              char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    int rc = gguf_open(&out->g, path, err, errlen);
    if (rc)
        return rc;
    const gguf_t *g = out->g;
    if ((rc = want_str(g, "general.type", "adapter", "a model file is not an adapter", err,
                       errlen)) ||
        (rc = want_str(g, "adapter.type", "lora", "only LoRA adapters are supported", err,
                       errlen)) ||
        (rc = want_str(g, "general.architecture", base->arch,
                       "the adapter was made for another architecture", err, errlen)))
        goto fail;
    rc = gguf_get_f32(g, "adapter.lora.alpha", &out->alpha);
    if (rc == -ENOENT) {
        out->alpha = 0.0f;
    } else if (rc || !isfinite(out->alpha) || out->alpha < 0.0f) {
        snprintf(err, errlen, "%s: adapter.lora.alpha is not a finite non-negative number",
                 path);
        rc = rc ? rc : FD_ERANGE;
        goto fail;
    }
    const int64_t nt = gguf_n_tensors(g);
    if (nt < 1) {
        snprintf(err, errlen, "%s: the adapter has no tensors", path);
        rc = FD_EFORMAT;
        goto fail;
    }
    out->mats = calloc((size_t)nt * 3, sizeof(*out->mats));
    if (!out->mats) {
        snprintf(err, errlen, "out of memory");
        rc = -ENOMEM;
        goto fail;
    }
    char stem[256];
    for (int64_t i = 0; i < nt; i++) {
        const gguf_tensor_t *t = gguf_tensor_at(g, i);
        size_t k;
        bool is_a = has_suffix(t->name, ".lora_a", &k);
        if (!is_a && !has_suffix(t->name, ".lora_b", &k)) {
            snprintf(err, errlen, "%s: tensor %s: a LoRA tensor's name ends in .lora_a or "
                     ".lora_b", path, t->name);
            rc = FD_EFORMAT;
            goto fail;
        }
        if (k >= sizeof(stem)) {
            snprintf(err, errlen, "%s: tensor %s: name too long", path, t->name);
            rc = FD_EFORMAT;
            goto fail;
        }
        memcpy(stem, t->name, k);
        stem[k] = 0;
        char other[sizeof(stem) + 8];
        snprintf(other, sizeof(other), "%s.lora_%c", stem, is_a ? 'b' : 'a');
        const gguf_tensor_t *o = gguf_find_tensor(g, other);
        if (!o) {
            snprintf(err, errlen, "%s: tensor %s has no partner %s", path, t->name, other);
            rc = FD_EFORMAT;
            goto fail;
        }
        if (is_a && (rc = add_pair(out, index, base, stem, t, o, err, errlen)))
            goto fail;
    }
    return 0;
fail:
    lora_close(out);
    return rc;
}

void lora_close(lora_file_t *f)
{
    if (!f)
        return;
    gguf_close(f->g);
    free(f->mats);
    memset(f, 0, sizeof(*f));
}

/* ---- seeded random adapters (tests) ---- */

typedef struct gen_ctx {
    uint64_t seed;
    int rank;
} gen_ctx_t;

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int gen_fill(void *ud, const char *name, int64_t row, float *dst, int64_t n)
{
    const gen_ctx_t *c = ud;
    uint64_t h = c->seed;
    for (const char *s = name; *s; s++)
        h = mix64(h ^ (uint64_t)(unsigned char)*s);
    h = mix64(h ^ (uint64_t)row);
    /* uniform in +-sqrt(3 / n_in): variance 1 / n_in, so A x and B (A x) keep unit scale */
    const float amp = sqrtf(3.0f / (float)n);
    for (int64_t i = 0; i < n; i++) {
        uint64_t v = mix64(h + (uint64_t)i);
        dst[i] = amp * (float)((double)(v >> 11) * (2.0 / 9007199254740992.0) - 1.0);
    }
    return 0;
}

static bool target_wanted(const char *targets, const char *part)
{
    if (!targets || strcmp(targets, "all") == 0)
        return true;
    size_t k = strlen(part);
    for (const char *s = targets; *s;) {
        const char *e = strchr(s, ',');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == k && strncmp(s, part, k) == 0)
            return true;
        s += n + (e != NULL);
    }
    return false;
}

int lora_write_random(const lora_gen_t *o, const char *path, char *err, size_t errlen)
{
    if (o->rank < 1 || !type_ok(o->type) || (o->type == GG_Q8_0 && o->rank % 32)) {
        snprintf(err, errlen, "adapter: rank %d, type %d (F32, F16, BF16, or Q8_0 with a rank "
                 "that is a multiple of 32)", o->rank, o->type);
        return -EINVAL;
    }
    gguf_t *g = NULL;
    gguf_w_t *w = NULL;
    int rc = gguf_open(&g, o->base_path, err, errlen);
    if (rc)
        return rc;
    gen_ctx_t ctx = { .seed = o->seed, .rank = o->rank };
    gguf_str_t arch;
    if ((rc = gguf_get_str(g, "general.architecture", &arch))) {
        snprintf(err, errlen, "%s: no general.architecture", o->base_path);
        goto done;
    }
    char a[64];
    snprintf(a, sizeof(a), "%.*s", (int)FD_MIN(arch.len, 63), arch.ptr);
    if ((rc = gguf_w_new(&w)) || (rc = gguf_w_add_str(w, "general.architecture", a)) ||
        (rc = gguf_w_add_str(w, "general.type", "adapter")) ||
        (rc = gguf_w_add_str(w, "general.name", "fusiond random LoRA")) ||
        (rc = gguf_w_add_str(w, "adapter.type", "lora")) ||
        (rc = gguf_w_add_f32(w, "adapter.lora.alpha", o->alpha))) {
        snprintf(err, errlen, "adapter: cannot build the header (%s)", fd_strerror(rc));
        goto done;
    }
    int n_pairs = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_t *t = gguf_tensor_at(g, i);
        int l, off = 0;
        char part[64] = "";
        if (strcmp(t->name, "output.weight") == 0)
            snprintf(part, sizeof(part), "output");
        else if (sscanf(t->name, "blk.%d.%n", &l, &off) == 1 && off > 0)
            snprintf(part, sizeof(part), "%s", t->name + off);
        size_t k;
        if (!part[0] || t->n_dims != 2)
            continue;
        if (has_suffix(part, ".weight", &k))
            part[k] = 0;
        else if (strcmp(part, "output") != 0)
            continue;
        bool known = strcmp(part, "output") == 0 || strcmp(part, "attn_qkv") == 0;
        for (int tg = 0; tg < FZ_LORA_OUTPUT && !known; tg++)
            known = strcmp(part, target_names[tg]) == 0;
        if (!known || !target_wanted(o->targets, part))
            continue;
        char na[300], nb[300];
        snprintf(na, sizeof(na), "%s.lora_a", t->name);
        snprintf(nb, sizeof(nb), "%s.lora_b", t->name);
        const int64_t nea[2] = { t->ne[0], o->rank }, neb[2] = { o->rank, t->ne[1] };
        if ((rc = gguf_w_add_tensor(w, na, o->type, 2, nea, NULL, gen_fill, &ctx)) ||
            (rc = gguf_w_add_tensor(w, nb, o->type, 2, neb, NULL, gen_fill, &ctx))) {
            snprintf(err, errlen, "adapter: cannot add %s (%s)", na, fd_strerror(rc));
            goto done;
        }
        n_pairs++;
    }
    if (n_pairs == 0) {
        snprintf(err, errlen, "adapter: %s has no matrix of the targets %s", o->base_path,
                 o->targets ? o->targets : "all");
        rc = -EINVAL;
        goto done;
    }
    rc = gguf_w_write_file(w, path, err, errlen);
done:
    gguf_w_free(w);
    gguf_close(g);
    return rc;
}
