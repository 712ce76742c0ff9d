/*
 * tls.c - see tls.h.
 *
 * The BIO callbacks read from and append to two struct buf per session, so
 * mbedTLS never blocks and never sees the socket: mbedtls_ssl_* calls return
 * WANT_READ when the fed ciphertext is exhausted, and the owner simply waits
 * for the next read callback. Sends always succeed into memory; the owner
 * flushes them with one uv_write.
 */
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "buf.h"
#include "err.h"
#include "xalloc.h"

struct tls_ctx {
    mbedtls_ssl_config conf;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt cert;
    mbedtls_x509_crt ca;
    mbedtls_pk_context key;
    int server;
};

struct tls_session {
    mbedtls_ssl_context ssl;
    struct buf in;  /* ciphertext received, not yet consumed by mbedTLS */
    struct buf out; /* ciphertext produced, not yet sent */
    int last_err;
};

static void
tls_fmt_err(int rc, const char *what, char *err, size_t errlen)
{
    char m[160];

    mbedtls_strerror(rc, m, sizeof(m));
    snprintf(err, errlen, "%s: %s (-0x%04x)", what, m, (unsigned)-rc);
}

static int
tls_ctx_common(struct tls_ctx *c, int endpoint, char *err, size_t errlen)
{
    static const char pers[] = "mx2-tls";
    int rc;

    mbedtls_ssl_config_init(&c->conf);
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);
    mbedtls_x509_crt_init(&c->cert);
    mbedtls_x509_crt_init(&c->ca);
    mbedtls_pk_init(&c->key);
    rc = mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy,
                               (const unsigned char *)pers, sizeof(pers) - 1);
    if (rc != 0) {
        tls_fmt_err(rc, "seeding the DRBG", err, errlen);
        return MX2_E_TLS;
    }
    rc = mbedtls_ssl_config_defaults(&c->conf, endpoint, MBEDTLS_SSL_TRANSPORT_STREAM,
                                     MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc != 0) {
        tls_fmt_err(rc, "TLS defaults", err, errlen);
        return MX2_E_TLS;
    }
    mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
    /* TLS 1.2 at least; renegotiation off (CPU exhaustion, RFC 5746 history). */
    mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_renegotiation(&c->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    return 0;
}

int
tls_ctx_server_new(const char *cert_file, const char *key_file, struct tls_ctx **out,
                   char *err, size_t errlen)
{
    struct tls_ctx *c = xcalloc(1, sizeof(*c));
    int rc;

    c->server = 1;
    if (tls_ctx_common(c, MBEDTLS_SSL_IS_SERVER, err, errlen) != 0)
        goto fail;
    if ((rc = mbedtls_x509_crt_parse_file(&c->cert, cert_file)) != 0) {
        tls_fmt_err(rc, cert_file, err, errlen);
        goto fail;
    }
    if ((rc = mbedtls_pk_parse_keyfile(&c->key, key_file, NULL)) != 0) {
        tls_fmt_err(rc, key_file, err, errlen);
        goto fail;
    }
    if ((rc = mbedtls_ssl_conf_own_cert(&c->conf, &c->cert, &c->key)) != 0) {
        tls_fmt_err(rc, "certificate and key", err, errlen);
        goto fail;
    }
    /* SMTP clients rarely present certificates; we never ask. */
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_NONE);
    *out = c;
    return 0;
fail:
    tls_ctx_free(c);
    return MX2_E_TLS;
}

int
tls_ctx_client_new(enum mx2_tls_mode mode, const char *ca_file, struct tls_ctx **out, char *err,
                   size_t errlen)
{
    struct tls_ctx *c = xcalloc(1, sizeof(*c));
    int rc;

    if (tls_ctx_common(c, MBEDTLS_SSL_IS_CLIENT, err, errlen) != 0)
        goto fail;
    if (mode == MX2_TLS_VERIFY) {
        if (ca_file == NULL || *ca_file == '\0') {
            snprintf(err, errlen, "primary_tls = \"verify\" needs primary_tls_ca");
            goto fail;
        }
        if ((rc = mbedtls_x509_crt_parse_file(&c->ca, ca_file)) < 0) {
            tls_fmt_err(rc, ca_file, err, errlen);
            goto fail;
        }
        mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
        mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    } else {
        /* may/encrypt: opportunistic encryption, RFC 7435; no authentication. */
        mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_NONE);
    }
    *out = c;
    return 0;
fail:
    tls_ctx_free(c);
    return MX2_E_TLS;
}

void
tls_ctx_free(struct tls_ctx *c)
{
    if (c == NULL)
        return;
    mbedtls_ssl_config_free(&c->conf);
    mbedtls_ctr_drbg_free(&c->drbg);
    mbedtls_entropy_free(&c->entropy);
    mbedtls_x509_crt_free(&c->cert);
    mbedtls_x509_crt_free(&c->ca);
    mbedtls_pk_free(&c->key);
    free(c);
}

static int
tls_bio_send(void *arg, const unsigned char *data, size_t len)
{
    struct tls_session *s = arg;

    buf_append(&s->out, data, len);
    return (int)len;
}

static int
tls_bio_recv(void *arg, unsigned char *data, size_t len)
{
    struct tls_session *s = arg;
    size_t n = buf_avail(&s->in);

    if (n == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    if (n > len)
        n = len;
    memcpy(data, buf_head(&s->in), n);
    buf_consume(&s->in, n);
    return (int)n;
}

struct tls_session *
tls_session_new(struct tls_ctx *ctx, const char *servername)
{
    struct tls_session *s = xcalloc(1, sizeof(*s));

    mbedtls_ssl_init(&s->ssl);
    if (mbedtls_ssl_setup(&s->ssl, &ctx->conf) != 0 ||
        (servername != NULL && mbedtls_ssl_set_hostname(&s->ssl, servername) != 0)) {
        tls_session_free(s);
        return NULL;
    }
    mbedtls_ssl_set_bio(&s->ssl, s, tls_bio_send, tls_bio_recv, NULL);
    return s;
}

void
tls_session_free(struct tls_session *s)
{
    if (s == NULL)
        return;
    mbedtls_ssl_free(&s->ssl);
    buf_free(&s->in);
    buf_free(&s->out);
    free(s);
}

void
tls_feed(struct tls_session *s, const char *data, size_t len)
{
    buf_append(&s->in, data, len);
}

size_t
tls_out(struct tls_session *s, const char **data)
{
    *data = buf_head(&s->out);
    return buf_avail(&s->out);
}

void
tls_out_consume(struct tls_session *s, size_t n)
{
    buf_consume(&s->out, n);
}

int
tls_handshake(struct tls_session *s)
{
    int rc = mbedtls_ssl_handshake(&s->ssl);

    if (rc == 0)
        return 1;
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
        return 0;
    s->last_err = rc;
    return MX2_E_TLS;
}

long
tls_read(struct tls_session *s, char *buf, size_t len)
{
    int rc = mbedtls_ssl_read(&s->ssl, (unsigned char *)buf, len);

    if (rc > 0)
        return rc;
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
        return 0;
    if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
        return MX2_E_SHUTDOWN;
    s->last_err = rc;
    return MX2_E_TLS;
}

int
tls_write(struct tls_session *s, const char *buf, size_t len)
{
    while (len > 0) {
        int rc = mbedtls_ssl_write(&s->ssl, (const unsigned char *)buf, len);
        if (rc < 0) {
            /* The send BIO never blocks, so WANT_WRITE cannot happen. */
            s->last_err = rc;
            return MX2_E_TLS;
        }
        buf += rc;
        len -= (size_t)rc;
    }
    return 0;
}

void
tls_close_notify(struct tls_session *s)
{
    (void)mbedtls_ssl_close_notify(&s->ssl);
}

void
tls_describe(struct tls_session *s, char *buf, size_t len)
{
    snprintf(buf, len, "%s with cipher %s", mbedtls_ssl_get_version(&s->ssl),
             mbedtls_ssl_get_ciphersuite(&s->ssl));
}

void
tls_errstr(struct tls_session *s, char *buf, size_t len)
{
    mbedtls_strerror(s->last_err, buf, len);
}
