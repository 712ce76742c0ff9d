/*
 * tls.h - mbedTLS 2.28 over memory buffers, for connections driven by libuv.
 *
 * A tls_ctx is a shared configuration (server: certificate and key; client:
 * verification mode and CA). A tls_session is one connection's TLS state. The
 * session never touches a socket: the owner feeds received ciphertext with
 * tls_feed(), pulls ciphertext to send with tls_out()/tls_out_consume(), and
 * steps the handshake / reads / writes plaintext. Receiving returns
 * "need more" when the fed ciphertext is used up (h2o's read_bio pattern).
 *
 * Thread: the event-loop thread only (the DRBG is not locked).
 * Ownership: tls_ctx outlives its sessions; *_free(NULL) is a no-op.
 * Errors: 0 or MX2_E_TLS (details are logged by the caller via tls_errstr()).
 * Renegotiation is disabled (a classic CPU-exhaustion vector).
 */
#ifndef MX2_TLS_H
#define MX2_TLS_H

#include <stddef.h>

#include "config.h"

struct tls_ctx;
struct tls_session;

int tls_ctx_server_new(const char *cert_file, const char *key_file, struct tls_ctx **out,
                       char *err, size_t errlen);
/* mode: MX2_TLS_MAY / ENCRYPT (no verification), VERIFY (chain against ca_file + host name). */
int tls_ctx_client_new(enum mx2_tls_mode mode, const char *ca_file, struct tls_ctx **out,
                       char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *ctx);

/* servername: client side SNI and the name verified in VERIFY mode; NULL on a server. */
struct tls_session *tls_session_new(struct tls_ctx *ctx, const char *servername);
void tls_session_free(struct tls_session *s);

/* Ciphertext in. Bounded by the caller's read size; kept until consumed. */
void tls_feed(struct tls_session *s, const char *data, size_t len);
/* Ciphertext out: pointer and length of what is waiting to be sent. */
size_t tls_out(struct tls_session *s, const char **data);
void tls_out_consume(struct tls_session *s, size_t n);

/* 1 = handshake complete, 0 = needs more input, MX2_E_TLS = failed. */
int tls_handshake(struct tls_session *s);
/* >0 plaintext bytes, 0 = needs more input, MX2_E_TLS = error,
 * MX2_E_SHUTDOWN = the peer sent close_notify. */
long tls_read(struct tls_session *s, char *buf, size_t len);
/* Encrypts all of buf into the out buffer. 0 or MX2_E_TLS. */
int tls_write(struct tls_session *s, const char *buf, size_t len);
void tls_close_notify(struct tls_session *s);

/* "TLSv1.2 with cipher TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384" style text for
 * Received: and logs. */
void tls_describe(struct tls_session *s, char *buf, size_t len);
/* Last mbedTLS error of this session as text. */
void tls_errstr(struct tls_session *s, char *buf, size_t len);

#endif
