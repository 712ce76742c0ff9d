/*
 * smtp_client.h - one outbound SMTP connection (to the primary or a bounce
 * destination): connect, greeting, EHLO (HELO fallback), STARTTLS per
 * primary_tls, AUTH PLAIN/LOGIN, then any number of transactions, each
 * pipelined when the server offers PIPELINING, with XFORWARD, SIZE,
 * 8BITMIME, SMTPUTF8 and DSN parameters passed on when offered.
 *
 * Callers: flusher, event-loop thread only.
 * Flow: smtpc_connect() -> on_ready (idle, may send) -> smtpc_send() ->
 * on_done (per-recipient results filled) -> on_ready ... -> smtpc_quit().
 * Any connection-level failure (connect, timeout, greeting, TLS, AUTH, lost
 * connection) calls on_fail once, with the message in progress (or NULL),
 * and then the connection closes; on_close runs last, after which the owner
 * frees the struct. Every network step has a timeout: connect_timeout for
 * connect and greeting, smtp_timeout for each later reply.
 *
 * Ownership: the message, its envelope and body are the caller's and must
 * stay valid until on_done/on_fail. Strings in the target are copied.
 */
#ifndef MX2_SMTP_CLIENT_H
#define MX2_SMTP_CLIENT_H

#include <netinet/in.h>
#include <sys/socket.h>

#include "config.h"
#include "conn.h"
#include "envelope.h"
#include "smtp_parse.h"

struct tls_ctx;
struct smtpc;

struct smtpc_target {
    struct sockaddr_storage addr;
    char host[256]; /* the name (or IP) we were told: logs, SNI, verification */
    char ip[INET6_ADDRSTRLEN];
    uint16_t port;
};

struct smtpc_result {
    int code;       /* SMTP reply code; 0 = not tried */
    char ecode[12]; /* enhanced status ("" when the server gave none) */
    char text[512]; /* the reply, "250 2.0.0 Ok: queued as X" style */
};

struct smtpc_msg {
    const struct envelope *env;
    const unsigned char *body; /* stored wire form */
    size_t body_len;
    const size_t *idx;          /* recipients (indices into env->rcpts) to attempt */
    size_t n;
    struct smtpc_result *res;   /* n results, filled by the client */
    void *data;                 /* the caller's */
};

struct smtpc_ops {
    void (*on_ready)(struct smtpc *c);
    void (*on_done)(struct smtpc *c, struct smtpc_msg *m);
    void (*on_fail)(struct smtpc *c, struct smtpc_msg *m, const struct smtpc_result *why);
    void (*on_close)(struct smtpc *c);
    /* Optional. With PIPELINING, right after a message's body and "." are
     * written, the client asks for the next message and sends its MAIL,
     * RCPT and DATA behind them in the same write (RFC 2920 3.1: message
     * content may be the first "command" of a group), saving a round trip
     * per message. Return NULL for none. Its replies are read after the
     * end-of-data reply of the previous one; on_done follows for each in
     * order. */
    struct smtpc_msg *(*on_next)(struct smtpc *c);
    /* With on_next: a pipelined message the connection failed before its
     * transaction began to be answered; called just before on_fail (which
     * carries the message in progress), with the same reason. */
    void (*on_abandon)(struct smtpc *c, struct smtpc_msg *m, const struct smtpc_result *why);
};

struct smtpc_auth {
    const char *user;     /* NULL or "": no AUTH */
    const char *password;
};

enum smtpc_state {
    SMTPC_S_CONNECT = 0,
    SMTPC_S_GREETING,
    SMTPC_S_EHLO,
    SMTPC_S_HELO,
    SMTPC_S_STARTTLS,
    SMTPC_S_TLS,
    SMTPC_S_AUTH,
    SMTPC_S_AUTH_USER,
    SMTPC_S_AUTH_PASS,
    SMTPC_S_READY,
    SMTPC_S_XFORWARD,
    SMTPC_S_TXN,
    SMTPC_S_BODY,
    SMTPC_S_RSET,
    SMTPC_S_QUIT,
};

struct smtpc {
    struct conn conn;
    uv_connect_t creq;
    const struct mx2_config *cfg;
    struct tls_ctx *tls;          /* NULL: never STARTTLS */
    enum mx2_tls_mode tls_mode;
    struct smtpc_auth auth;
    struct smtpc_target target;
    const struct smtpc_ops *ops;
    void *data;
    enum smtpc_state state;
    struct smtp_reply reply;
    struct smtp_ehlo ehlo;
    unsigned tls_active : 1, failed : 1, pipelining : 1, mail_failed : 1, used : 1,
        xfwd_pending : 1, /* the transaction's first reply is XFORWARD's (pipelined) */
        next_xfwd : 1;    /* the same for next */
    struct smtpc_msg *msg;
    struct smtpc_msg *next;  /* pipelined behind msg's end of data (on_next) */
    size_t expect;    /* next reply of the transaction: 0 = MAIL, 1..n = RCPT, n+1 = DATA */
    size_t naccepted;
    struct smtpc_result txn; /* MAIL or DATA failure */
    uint64_t sent_messages;
};

/* Start connecting. Callbacks always follow, asynchronously: a connection
 * that cannot even start reports through on_fail and on_close like any
 * other failure. */
void smtpc_connect(struct smtpc *c, uv_loop_t *loop, const struct mx2_config *cfg,
                  const struct smtpc_target *target, struct tls_ctx *tls,
                  enum mx2_tls_mode mode, const struct smtpc_auth *auth,
                  const struct smtpc_ops *ops, void *data);
/* Only in on_ready. */
void smtpc_send(struct smtpc *c, struct smtpc_msg *m);
/* Polite close (QUIT) when idle, hard close otherwise. */
void smtpc_quit(struct smtpc *c);
/* "host[ip]:port" for log lines. */
void smtpc_relay_name(const struct smtpc *c, char *buf, size_t len);

#endif
