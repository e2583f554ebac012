# engine/local.mk: GGUF reader, model, tokenizer, sampler, KV cache, decoder, scheduler core.
libfusiond_a_SOURCES += engine/gguf.h engine/tokenizer.h engine/engine.h
libfusiond_a_SOURCES += engine/gguf.c
FUZZ_SRCS += engine/gguf.c
libfusiond_a_SOURCES += engine/gguf_write.h engine/gguf_write.c
