# server/local.mk: included from the top-level Makefile.am.
