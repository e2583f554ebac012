# systemd/local.mk: the unit.  make fills in the paths (configure leaves $(sbindir) as
# ${exec_prefix}/sbin, which systemd would not expand).  systemdsystemunitdir defaults to
# ${prefix}/lib/systemd/system, so a staged install (DESTDIR, distcheck) stays inside it.
systemdsystemunit_DATA = systemd/fusiond.service
EXTRA_DIST += systemd/fusiond.service.in
CLEANFILES += systemd/fusiond.service

systemd/fusiond.service: $(srcdir)/systemd/fusiond.service.in Makefile
	$(AM_V_GEN)$(MKDIR_P) systemd && \
	sed -e 's|@sbindir[@]|$(sbindir)|g' -e 's|@sysconfdir[@]|$(sysconfdir)|g' \
	  $(srcdir)/systemd/fusiond.service.in > $@.tmp && mv $@.tmp $@
