# server/local.mk: the HTTP server (libmicrohttpd on a libuv loop), OpenAI JSON, metrics.
# libfusiond_server.a is linked by the fusiond program and the server tests.
EXTRA_DIST += server/server.h
