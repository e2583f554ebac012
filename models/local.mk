# models/local.mk: the demo model shipped with fusiond (issue 10, models/README.md).  It is
# installed as $(pkgdatadir)/models/demo.gguf, where fusiond and fusion-cli look for a model
# when none is configured (FD_DATADIR "/" FD_DEMO_MODEL).
demomodeldir = $(pkgdatadir)/models
dist_demomodel_DATA = models/demo.gguf
EXTRA_DIST += models/README.md models/demo-tokenizer.model
