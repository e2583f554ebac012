# tools/local.mk: included from the top-level Makefile.am.

# fusion-cli: text generation from the command line (model, fusion plans, sampler).
bin_PROGRAMS += fusion-cli
fusion_cli_SOURCES = tools/fusion-cli.c
fusion_cli_LDADD = $(FD_LIBS)
