# tools/local.mk: included from the top-level Makefile.am.

# fusion-cli: text generation from the command line (model, fusion plans, sampler).
bin_PROGRAMS += fusion-cli
fusion_cli_SOURCES = tools/fusion-cli.c
fusion_cli_LDADD = $(FD_LIBS)
fusion_cli_CPPFLAGS = $(AM_CPPFLAGS) -DFD_SRC_DEMO_MODEL='"$(abs_top_srcdir)/models/demo.gguf"'

# fusion-gguf-gen: Llama-shaped GGUF models with seeded random weights (tests, benchmarks).
noinst_PROGRAMS += fusion-gguf-gen
fusion_gguf_gen_SOURCES = tools/fusion-gguf-gen.c
fusion_gguf_gen_LDADD = $(FD_LIBS)

# tools/demo: how models/demo.gguf was made (corpus, tokenizer, training, export, golden files).
EXTRA_DIST += tools/demo/make_corpus.sh tools/demo/train_tokenizer.py tools/demo/train.py \
	tools/demo/export_gguf.py tools/demo/make_golden.py tools/demo/check_gguf.py
