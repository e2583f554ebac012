# etc/local.mk: the documented configuration file.  It is installed as
# $(sysconfdir)/fusiond.conf only when none is there, so an operator's edits survive
# `make install`; the pristine copy always goes to $(docdir)/fusiond.conf.dist.
EXTRA_DIST += etc/fusiond.conf
