# server/local.mk: the HTTP server (libmicrohttpd on a libuv loop), OpenAI JSON, metrics.
# libfusiond_server.a is linked by the fusiond program and the server tests.
noinst_LIBRARIES += libfusiond_server.a
libfusiond_server_a_SOURCES = server/server.h \
	server/request.h server/request.c \
	server/strbuf.h server/strbuf.c \
	server/metrics.h server/metrics.c \
	server/openai.h server/openai.c \
	server/evq.h server/evq.c \
	server/server.c
libfusiond_server_a_CFLAGS = $(AM_CFLAGS) $(MHD_CFLAGS) $(CJSON_CFLAGS) $(UV_CFLAGS) \
	$(GNUTLS_CFLAGS)
SRV_LIBS = libfusiond_server.a $(FD_LIBS) $(MHD_LIBS) $(CJSON_LIBS) $(UV_LIBS) $(GNUTLS_LIBS)
EXTRA_DIST += server/DESIGN.md
FUZZ_SRCS += server/request.c server/openai.c

# The daemon (issue 7): the option table and config file, sd_notify, privileges.  Kept in
# its own library so the fusiond program and test_config link the same objects.
noinst_LIBRARIES += libfusiond_daemon.a
libfusiond_daemon_a_SOURCES = server/config.h server/config.c server/notify.h server/notify.c
libfusiond_daemon_a_CFLAGS = $(AM_CFLAGS) $(SYSTEMD_CFLAGS) $(GNUTLS_CFLAGS)
libfusiond_daemon_a_CPPFLAGS = $(AM_CPPFLAGS) \
	-DFD_SRC_DEMO_MODEL='"$(abs_top_srcdir)/models/demo.gguf"'
DAEMON_LIBS = libfusiond_daemon.a $(SYSTEMD_LIBS) $(GNUTLS_LIBS)

# response_format json_schema: JSON Schema compiled into an engine grammar spec.
libfusiond_server_a_SOURCES += server/schema.h server/schema.c
# guided_regex and guided_choice compiled to GBNF (engine/gbnf.h).
libfusiond_server_a_SOURCES += server/regex.h server/regex.c
FUZZ_SRCS += server/schema.c

# Chat prompt formatting (template family detection, one formatter per family).
libfusiond_server_a_SOURCES += server/chat.h server/chat.c
# The Jinja2 interpreter that renders any chat template (--jinja, unknown templates).
libfusiond_server_a_SOURCES += server/jinja.h server/jinja.c
# Tool calls read back out of generated text, per chat family.
libfusiond_server_a_SOURCES += server/toolcall.h server/toolcall.c
# Reasoning ("<think>...</think>") separated from the answer (reasoning_format).
libfusiond_server_a_SOURCES += server/reasoning.h server/reasoning.c
# The Responses API (/v1/responses): translated to the chat path; its answers and store.
libfusiond_server_a_SOURCES += server/responses.h server/responses.c
# Anthropic's Messages API (/v1/messages): translated to the chat path; its answers.
libfusiond_server_a_SOURCES += server/anthropic.h server/anthropic.c
# llama-server's /infill: the FIM prompt and the native answer shape.
libfusiond_server_a_SOURCES += server/infill.h server/infill.c
# HTTPS certificate pairs, replaceable while serving (SIGHUP).
libfusiond_server_a_SOURCES += server/tls.h server/tls.c
FUZZ_SRCS += server/toolcall.c
FUZZ_SRCS += server/chat.c

# fusiond, the daemon: main() in server/main.c.
sbin_PROGRAMS += fusiond
fusiond_SOURCES = server/main.c
fusiond_CFLAGS = $(AM_CFLAGS) $(UV_CFLAGS) $(SYSTEMD_CFLAGS)
fusiond_LDADD = $(DAEMON_LIBS) $(SRV_LIBS)

# llama-server's native shapes: /completion's probabilities and settings, /props, /slots.
libfusiond_server_a_SOURCES += server/native.h server/native.c
