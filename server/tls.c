/* tls.c: the HTTPS certificate pairs and libmicrohttpd's certificate callback (tls.h). */
#include "config.h"

#include "server/tls.h"

#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHAIN 16

typedef struct pair {
    struct pair *next;          /* older pairs */
    gnutls_pcert_st chain[MAX_CHAIN];
    unsigned n_chain;
    gnutls_privkey_t key;
} pair_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pair_t *pairs;           /* the current pair first */

static void pair_free(pair_t *p)
{
    for (unsigned i = 0; i < p->n_chain; i++)
        gnutls_pcert_deinit(&p->chain[i]);
    if (p->key)
        gnutls_privkey_deinit(p->key);
    free(p);
}

int tls_set(const char *cert_pem, const char *key_pem, char *err, size_t errlen)
{
    pair_t *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory reading the TLS certificate");
        return -ENOMEM;
    }
    gnutls_datum_t cert = {(unsigned char *)cert_pem, (unsigned int)strlen(cert_pem)};
    gnutls_datum_t key = {(unsigned char *)key_pem, (unsigned int)strlen(key_pem)};
    p->n_chain = MAX_CHAIN;
    int g = gnutls_pcert_list_import_x509_raw(p->chain, &p->n_chain, &cert,
                                              GNUTLS_X509_FMT_PEM, 0);
    if (g < 0) {
        p->n_chain = 0;
        snprintf(err, errlen, "the certificate: %s", gnutls_strerror(g));
        pair_free(p);
        return -EINVAL;
    }
    if ((g = gnutls_privkey_init(&p->key)) < 0 ||
        (g = gnutls_privkey_import_x509_raw(p->key, &key, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
        snprintf(err, errlen, "the private key: %s", gnutls_strerror(g));
        pair_free(p);
        return -EINVAL;
    }
    pthread_mutex_lock(&mu);
    p->next = pairs;
    pairs = p;
    pthread_mutex_unlock(&mu);
    return 0;
}

int tls_count(void)
{
    int n = 0;
    pthread_mutex_lock(&mu);
    for (const pair_t *p = pairs; p; p = p->next)
        n++;
    pthread_mutex_unlock(&mu);
    return n;
}

/* gnutls_certificate_retrieve_function2: the current pair, whatever the client asked for
 * (GnuTLS neither frees nor changes what it is given). */
static int retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_rdn, int nreqs,
                    const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                    gnutls_pcert_st **pcert, unsigned int *pcert_length, gnutls_privkey_t *pkey)
{
    (void)session;
    (void)req_ca_rdn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    pthread_mutex_lock(&mu);
    pair_t *p = pairs;
    pthread_mutex_unlock(&mu);
    if (!p)
        return -1;
    *pcert = p->chain;
    *pcert_length = p->n_chain;
    *pkey = p->key;
    return 0;
}

void *tls_callback(void)
{
    static gnutls_certificate_retrieve_function2 *const cb = retrieve;
    return (void *)cb;
}

void tls_clear(void)
{
    pthread_mutex_lock(&mu);
    pair_t *p = pairs;
    pairs = NULL;
    pthread_mutex_unlock(&mu);
    while (p) {
        pair_t *next = p->next;
        pair_free(p);
        p = next;
    }
}
