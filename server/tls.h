/* tls.h: the certificate and key the HTTPS server presents, replaceable while it serves (a
 * SIGHUP after a renewal).  Owns the GnuTLS certificate chains and keys parsed from PEM, and
 * the certificate callback libmicrohttpd calls on each handshake, which hands out the current
 * pair.  Every pair set is kept until tls_clear: a handshake on libmicrohttpd's thread may be
 * using an older one.  One set per process (GnuTLS's callback has no user pointer): the
 * server of the process calls tls_set (loop thread) and tls_clear (after its daemon stopped);
 * the callback runs on any thread. */
#ifndef FD_TLS_H
#define FD_TLS_H

#include <stddef.h>

/* Parses a PEM certificate chain and its PEM private key and makes them the pair handed to
 * new handshakes.  0, or -EINVAL (err says what GnuTLS refused) / -ENOMEM, the current pair
 * kept. */
int tls_set(const char *cert_pem, const char *key_pem, char *err, size_t errlen);

/* Pairs set so far (the current one included); 0 after tls_clear. */
int tls_count(void);

/* libmicrohttpd's MHD_OPTION_HTTPS_CERT_CALLBACK argument (a
 * gnutls_certificate_retrieve_function2 *). */
void *tls_callback(void);

/* Frees every pair; no handshake may run (the daemon is stopped). */
void tls_clear(void);

#endif
