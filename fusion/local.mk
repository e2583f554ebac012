# fusion/local.mk: load-time weight folding and the fused / unfused operator plans.
libfusiond_a_SOURCES += fusion/fold.h fusion/fold.c fusion/plan.h fusion/plan.c
dist_doc_DATA += docs/fusion.md
libfusiond_a_SOURCES += fusion/encoder.h fusion/encoder.c
