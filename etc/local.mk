# etc/local.mk: the documented configuration file.  It is installed as
# $(sysconfdir)/fusiond.conf only when none is there, so an operator's edits survive
# `make install`; the pristine copy always goes to $(docdir)/fusiond.conf.dist.  Uninstall
# removes the configuration only if it is unchanged.
EXTRA_DIST += etc/fusiond.conf

install-data-local:
	$(MKDIR_P) '$(DESTDIR)$(sysconfdir)' '$(DESTDIR)$(docdir)'
	$(INSTALL_DATA) $(srcdir)/etc/fusiond.conf '$(DESTDIR)$(docdir)/fusiond.conf.dist'
	@if test -f '$(DESTDIR)$(sysconfdir)/fusiond.conf'; then \
	  echo "keeping $(DESTDIR)$(sysconfdir)/fusiond.conf (the new default is $(docdir)/fusiond.conf.dist)"; \
	else \
	  echo " $(INSTALL_DATA) etc/fusiond.conf '$(DESTDIR)$(sysconfdir)/fusiond.conf'"; \
	  $(INSTALL_DATA) $(srcdir)/etc/fusiond.conf '$(DESTDIR)$(sysconfdir)/fusiond.conf'; \
	fi

uninstall-local:
	rm -f '$(DESTDIR)$(docdir)/fusiond.conf.dist'
	@if cmp -s $(srcdir)/etc/fusiond.conf '$(DESTDIR)$(sysconfdir)/fusiond.conf'; then \
	  echo " rm -f '$(DESTDIR)$(sysconfdir)/fusiond.conf'"; \
	  rm -f '$(DESTDIR)$(sysconfdir)/fusiond.conf'; \
	else \
	  test ! -f '$(DESTDIR)$(sysconfdir)/fusiond.conf' || \
	    echo "keeping the edited $(DESTDIR)$(sysconfdir)/fusiond.conf"; \
	fi
