# man/local.mk: the manual pages.
dist_man_MANS += man/fusiond.8 man/fusion-cli.1
