#!/usr/bin/env python3
"""train_tokenizer.py CORPUS_DIR OUT_PREFIX: trains the demo model's vocabulary.

A SentencePiece BPE model of 2048 pieces with byte fallback, on kjv-train.txt (one chapter a
line, from make_corpus.sh), set up like Llama's tokenizer so that a llama.cpp-style SPM
tokenizer (fusiond's engine/tokenizer.c) reproduces SentencePiece's encoding exactly:
  - ids 0 <unk>, 1 <s>, 2 </s>, then the 256 byte pieces <0x00>..<0xFF>, then the merges;
  - normalization "identity" and no removal of extra whitespace: the text is encoded as it
    is, spaces become U+2581, and one U+2581 is prefixed (add_dummy_prefix);
  - byte_fallback: characters outside the vocabulary become their UTF-8 bytes;
  - character_coverage 1.0: every character of the corpus is a piece; split_digits as Llama
    (the corpus has no digits: they are always bytes).
Deterministic: one thread, the whole corpus in file order, no sampling or shuffling.
Writes OUT_PREFIX.model and OUT_PREFIX.vocab.  Needs the sentencepiece package (Debian
python3-sentencepiece 0.1.97 made the committed models/demo-tokenizer.model).
"""
import os
import sys

import sentencepiece as spm

VOCAB_SIZE = 2048


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: train_tokenizer.py CORPUS_DIR OUT_PREFIX")
    corpus, prefix = sys.argv[1], sys.argv[2]
    spm.SentencePieceTrainer.train(
        input=os.path.join(corpus, "kjv-train.txt"),
        model_prefix=prefix,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        max_sentence_length=1 << 16,   # chapters are lines; Psalm 119 is about 24 KB
        input_sentence_size=0,          # all lines, no sampling
        shuffle_input_sentence=False,
        num_threads=1,
        minloglevel=1,
    )
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    print("vocab", sp.get_piece_size(), "pieces;", prefix + ".model")


if __name__ == "__main__":
    main()
