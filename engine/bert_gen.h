/* bert_gen.h: BERT-shaped GGUF models (arch "bert", a WordPiece vocabulary) with seeded
 * random weights, laid out as convert_hf_to_gguf writes BertModel: for the tests and the
 * benchmarks of the encoder (fusion-gguf-gen --arch bert).  The vocabulary is [PAD] [UNK]
 * [CLS] [SEP] [MASK], then word starts U+2581 + "a".."z", continuations "a".."z", a few
 * whole words, and U+2581 "w<n>" fillers up to n_vocab.  With t5_vocab, XLM-RoBERTa's kind
 * instead (tokenizer.ggml.model "t5", as convert_hf_to_gguf writes bge-m3's): <s> <pad> </s>
 * <unk>, then U+2581, U+2581 + "a".."z", "a".."z", the words with U+2581, and fillers, with
 * unigram scores (words above letters), add_bos/add_eos/add_sep on, no charsmap.  Any
 * thread; writes one file. */
#ifndef FD_BERT_GEN_H
#define FD_BERT_GEN_H

#include <stdint.h>

#include "engine/gguf_write.h"

typedef struct bert_gen {
    int n_embd, n_layer, n_head, n_ff, n_vocab, n_ctx;
    int n_types;                     /* token type rows (0: no token_types tensor) */
    int t5_vocab;                    /* 1: XLM-RoBERTa's unigram vocabulary, else WordPiece */
    int n_cls_out;                   /* classification head outputs (0: no head) */
    int pooling;                     /* bert.pooling_type (-1: not written) */
    int type;                        /* enum gg_type of the matrices (F32, F16, Q8_0, ...) */
    uint64_t seed;
    float eps;
} bert_gen_t;

/* bge-small-en-v1.5's shape: n_embd 384, 12 layers of 12 heads, n_ff 1536, 30522 tokens,
 * 512 positions, 2 token types, CLS pooling (2) as its GGUF says; F32, seed 1. */
void bert_gen_bge_small(bert_gen_t *p);
/* A small XLM-RoBERTa shape (bge-m3's family): n_embd 64, 2 layers of 4 heads, n_ff 96,
 * 300 tokens of the t5 vocabulary, 128 positions, 1 token type, CLS pooling (2). */
void bert_gen_xlmr_small(bert_gen_t *p);
/* Every value is a pure function of (seed, tensor name, row, column). */
float bert_gen_value(const bert_gen_t *p, const char *name, int64_t row, int64_t i);
/* Declares the whole model (metadata and tensors, filled at write) into w. */
int bert_gen_add(gguf_w_t *w, const bert_gen_t *p, char *err, size_t errlen);
int bert_gen_write(const bert_gen_t *p, const char *path, int threads, char *err,
                   size_t errlen);

#endif
