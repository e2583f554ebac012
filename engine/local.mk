# engine/local.mk: GGUF reader, model, tokenizer, sampler, KV cache, decoder, scheduler core.
libfusiond_a_SOURCES += engine/gguf.h engine/tokenizer.h engine/engine.h
libfusiond_a_SOURCES += engine/gguf.c
FUZZ_SRCS += engine/gguf.c
libfusiond_a_SOURCES += engine/model.h engine/model.c

libfusiond_a_SOURCES += engine/sampler.h engine/sampler.c
libfusiond_a_SOURCES += engine/grammar.h engine/grammar.c engine/grammar_mask.c
libfusiond_a_SOURCES += engine/gbnf.h engine/gbnf.c

libfusiond_a_SOURCES += engine/unicode.h engine/unicode_data.h engine/unicode.c engine/tokenizer.c
FUZZ_SRCS += engine/unicode.c engine/tokenizer.c
EXTRA_DIST += tools/gen-unicode-tables.py tools/unicode_ranges.py
libfusiond_a_SOURCES += engine/wordpiece.h engine/wordpiece_data.h engine/wordpiece.c
libfusiond_a_SOURCES += engine/ugm.h engine/ugm.c
FUZZ_SRCS += engine/ugm.c
FUZZ_SRCS += engine/wordpiece.c
EXTRA_DIST += tools/gen-wordpiece-tables.py

libfusiond_a_SOURCES += engine/ngram.h engine/ngram.c
libfusiond_a_SOURCES += engine/engine.c engine/engine_llm.c

libfusiond_a_SOURCES += engine/gguf_write.h engine/gguf_write.c
libfusiond_a_SOURCES += engine/bert_gen.h engine/bert_gen.c
libfusiond_a_SOURCES += engine/lora.h engine/lora.c
