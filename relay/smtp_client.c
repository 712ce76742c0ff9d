/*
 * smtp_client.c - the outbound SMTP state machine (see smtp_client.h).
 *
 * Pipelining (RFC 2920): with PIPELINING offered, MAIL, every RCPT and DATA
 * go out in one write and the replies are matched in order; without it,
 * one command per reply. A transaction whose MAIL or DATA fails is closed
 * with RSET so the connection can carry the next message.
 *
 * TLS: "may" uses STARTTLS when offered and carries on in clear when the
 * server does not offer it (RFC 7435 opportunistic); "encrypt" and "verify"
 * refuse to send anything in clear. AUTH is only ever sent over TLS, so a
 * password never crosses the network in clear.
 */
#include "smtp_client.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/base64.h>

#include "err.h"
#include "log.h"
#include "tls.h"
#include "xalloc.h"

#define SMTPC_IDLE_MS 10000 /* an idle reusable connection is closed after this */

static void smtpc_on_read(struct conn *conn);
static void smtpc_on_tls_done(struct conn *conn, int status);
static void smtpc_on_timeout(struct conn *conn);
static void smtpc_on_close(struct conn *conn);

static const struct conn_ops smtpc_conn_ops = {
    .on_read = smtpc_on_read,
    .on_tls_done = smtpc_on_tls_done,
    .on_timeout = smtpc_on_timeout,
    .on_close = smtpc_on_close,
};

static const char *const smtpc_state_names[] = {
    "CONNECT", "GREETING", "EHLO", "HELO", "STARTTLS", "TLS", "AUTH", "AUTH_USER", "AUTH_PASS",
    "READY", "XFORWARD", "TXN", "BODY", "RSET", "QUIT",
};

static void
smtpc_enter_state(struct smtpc *c, enum smtpc_state st)
{
    if (c->state != st)
        log_debug("smtpc %s[%s]:%u: %s -> %s", c->target.host, c->target.ip, c->target.port,
                  smtpc_state_names[c->state], smtpc_state_names[st]);
    c->state = st;
}

void
smtpc_relay_name(const struct smtpc *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s[%s]:%u", c->target.host, c->target.ip, c->target.port);
}

static void
smtpc_write(struct smtpc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
smtpc_write(struct smtpc *c, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    conn_write(&c->conn, line, (size_t)n);
}

static void
smtpc_result_set(struct smtpc_result *r, int code, const char *ecode, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
smtpc_result_set(struct smtpc_result *r, int code, const char *ecode, const char *fmt, ...)
{
    va_list ap;

    r->code = code;
    snprintf(r->ecode, sizeof(r->ecode), "%s", ecode ? ecode : "");
    va_start(ap, fmt);
    vsnprintf(r->text, sizeof(r->text), fmt, ap);
    va_end(ap);
}

/* The reply as one line of text: "550 5.1.1 text" (lines joined by spaces). */
static void
smtpc_result_from_reply(struct smtpc_result *r, const struct smtp_reply *rep)
{
    char text[sizeof(r->text)];
    size_t n = 0;

    for (size_t i = 0; i < rep->text_len && n + 1 < sizeof(text); i++)
        text[n++] = rep->text[i] == '\n' ? ' ' : rep->text[i];
    text[n] = '\0';
    if (rep->has_ecode)
        smtpc_result_set(r, rep->code, rep->ecode, "%d %s %s", rep->code, rep->ecode, text);
    else
        smtpc_result_set(r, rep->code, "", "%d %s", rep->code, text);
}

/* Connection-level failure: report once, then close. */
static void
smtpc_fail(struct smtpc *c, int code, const char *ecode, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
smtpc_fail(struct smtpc *c, int code, const char *ecode, const char *fmt, ...)
{
    struct smtpc_result why;
    struct smtpc_msg *m = c->msg;
    va_list ap;

    if (c->failed)
        return;
    c->failed = 1;
    memset(&why, 0, sizeof(why));
    why.code = code;
    snprintf(why.ecode, sizeof(why.ecode), "%s", ecode ? ecode : "");
    va_start(ap, fmt);
    vsnprintf(why.text, sizeof(why.text), fmt, ap);
    va_end(ap);
    c->msg = NULL;
    if (c->next != NULL) {
        struct smtpc_msg *n = c->next;
        c->next = NULL;
        c->ops->on_abandon(c, n, &why);
    }
    c->ops->on_fail(c, m, &why);
    conn_close(&c->conn);
}

static void
smtpc_fail_reply(struct smtpc *c, const char *what)
{
    struct smtpc_result r;

    smtpc_result_from_reply(&r, &c->reply);
    smtpc_fail(c, r.code, r.ecode, "host %s[%s] said: %s (in reply to %s)", c->target.host,
               c->target.ip, r.text, what);
}

static void
smtpc_ready(struct smtpc *c)
{
    smtpc_enter_state(c, SMTPC_S_READY);
    conn_set_timeout(&c->conn, SMTPC_IDLE_MS);
    c->ops->on_ready(c);
}

static void
smtpc_after_ehlo(struct smtpc *c)
{
    if (!c->tls_active && c->tls != NULL && c->tls_mode != MX2_TLS_NONE && c->ehlo.starttls) {
        smtpc_write(c, "STARTTLS\r\n");
        smtpc_enter_state(c, SMTPC_S_STARTTLS);
        return;
    }
    if (!c->tls_active && (c->tls_mode == MX2_TLS_ENCRYPT || c->tls_mode == MX2_TLS_VERIFY)) {
        smtpc_fail(c, 0, "4.7.4", "TLS is required, but was not offered by host %s[%s]",
                   c->target.host, c->target.ip);
        return;
    }
    if (c->auth.user != NULL && c->auth.user[0] != '\0') {
        unsigned char plain[1024], b64[1500];
        size_t ul = strlen(c->auth.user), pl = strlen(c->auth.password), olen;

        if (!c->tls_active) {
            smtpc_fail(c, 0, "4.7.0", "SASL authentication to %s[%s] refused without TLS",
                       c->target.host, c->target.ip);
            return;
        }
        if (c->ehlo.auth & SMTP_AUTH_PLAIN) {
            /* RFC 4616: authzid NUL authcid NUL passwd. */
            if (ul + pl + 2 > sizeof(plain)) {
                smtpc_fail(c, 0, "4.7.0", "SASL credentials too long");
                return;
            }
            plain[0] = '\0';
            memcpy(plain + 1, c->auth.user, ul);
            plain[1 + ul] = '\0';
            memcpy(plain + 2 + ul, c->auth.password, pl);
            if (mbedtls_base64_encode(b64, sizeof(b64), &olen, plain, ul + pl + 2) != 0) {
                smtpc_fail(c, 0, "4.7.0", "SASL encoding failed");
                return;
            }
            memset(plain, 0, sizeof(plain));
            smtpc_write(c, "AUTH PLAIN %.*s\r\n", (int)olen, b64);
            smtpc_enter_state(c, SMTPC_S_AUTH);
            return;
        }
        if (c->ehlo.auth & SMTP_AUTH_LOGIN) {
            smtpc_write(c, "AUTH LOGIN\r\n");
            smtpc_enter_state(c, SMTPC_S_AUTH_USER);
            return;
        }
        smtpc_fail(c, 0, "4.7.0", "host %s[%s] offers no SASL mechanism we support",
                   c->target.host, c->target.ip);
        return;
    }
    smtpc_ready(c);
}

static void
smtpc_send_b64(struct smtpc *c, const char *s)
{
    unsigned char b64[1024];
    size_t olen;

    if (mbedtls_base64_encode(b64, sizeof(b64), &olen, (const unsigned char *)s, strlen(s)) != 0) {
        smtpc_fail(c, 0, "4.7.0", "SASL encoding failed");
        return;
    }
    smtpc_write(c, "%.*s\r\n", (int)olen, b64);
}

static void
smtpc_send_mail(struct smtpc *c, const struct smtpc_msg *m)
{
    const struct envelope *env = m->env;
    struct buf line = {0};

    buf_appendf(&line, "MAIL FROM:<%s>", env->sender);
    if (c->ehlo.has_size)
        buf_appendf(&line, " SIZE=%llu", (unsigned long long)m->body_len);
    if ((env->flags & ENVELOPE_F_8BITMIME) && c->ehlo.eightbitmime)
        buf_appendf(&line, " BODY=8BITMIME");
    if ((env->flags & ENVELOPE_F_SMTPUTF8) && c->ehlo.smtputf8)
        buf_appendf(&line, " SMTPUTF8");
    if (c->ehlo.dsn) {
        if (env->ret == ENVELOPE_RET_FULL)
            buf_appendf(&line, " RET=FULL");
        else if (env->ret == ENVELOPE_RET_HDRS)
            buf_appendf(&line, " RET=HDRS");
        if (env->envid != NULL && env->envid[0] != '\0')
            buf_appendf(&line, " ENVID=%s", env->envid);
    }
    buf_appendf(&line, "\r\n");
    conn_write(&c->conn, buf_head(&line), buf_avail(&line));
    buf_free(&line);
}

static void
smtpc_send_rcpt(struct smtpc *c, const struct smtpc_msg *m, size_t i)
{
    const struct envelope_rcpt *r = &m->env->rcpts[m->idx[i]];
    struct buf line = {0};

    buf_appendf(&line, "RCPT TO:<%s>", r->address);
    if (c->ehlo.dsn) {
        if (r->notify & ENVELOPE_NOTIFY_NEVER) {
            buf_appendf(&line, " NOTIFY=NEVER");
        } else if (r->notify != 0) {
            /* RFC 3461 4.1: a comma-separated list of SUCCESS, FAILURE, DELAY. */
            const char *sep = " NOTIFY=";
            if (r->notify & ENVELOPE_NOTIFY_SUCCESS) {
                buf_appendf(&line, "%sSUCCESS", sep);
                sep = ",";
            }
            if (r->notify & ENVELOPE_NOTIFY_FAILURE) {
                buf_appendf(&line, "%sFAILURE", sep);
                sep = ",";
            }
            if (r->notify & ENVELOPE_NOTIFY_DELAY)
                buf_appendf(&line, "%sDELAY", sep);
        }
        if (r->orcpt != NULL && r->orcpt[0] != '\0')
            buf_appendf(&line, " ORCPT=%s", r->orcpt);
    }
    buf_appendf(&line, "\r\n");
    conn_write(&c->conn, buf_head(&line), buf_avail(&line));
    buf_free(&line);
}

/* Reset the per-transaction state for c->msg, whose commands are (being)
 * sent. */
static void
smtpc_txn_begin(struct smtpc *c)
{
    c->expect = 0;
    c->naccepted = 0;
    c->mail_failed = 0;
    memset(&c->txn, 0, sizeof(c->txn));
    smtpc_enter_state(c, SMTPC_S_TXN);
    conn_set_timeout(&c->conn, (uint64_t)c->cfg->smtp_timeout * 1000);
}

/* The XFORWARD line for env (without CRLF) into line; 0 when the server
 * offers none of its attributes or the line would not fit. */
static int
smtpc_xforward_line(const struct smtpc *c, const struct envelope *env, char *line, size_t size)
{
    /* Postfix XFORWARD_README: attribute values are xtext; send what the
     * server asked for, so its checks see the real client. */
    char name[512], addr[160], helo[800];
    const char *cname = env->client_name[0] ? env->client_name : "[UNAVAILABLE]";
    size_t n, p;

    if (c->ehlo.xforward == 0)
        return 0;
    p = (size_t)snprintf(line, size, "XFORWARD");
    if ((c->ehlo.xforward & SMTP_XF_NAME) &&
        smtp_xtext_encode(cname, strlen(cname), name, sizeof(name), &n) == 0)
        p += (size_t)snprintf(line + p, size - p, " NAME=%s", name);
    if ((c->ehlo.xforward & SMTP_XF_ADDR) &&
        smtp_xtext_encode(env->client_addr, strlen(env->client_addr), addr, sizeof(addr), &n) == 0)
        p += (size_t)snprintf(line + p, size - p, " ADDR=%s", addr);
    if (c->ehlo.xforward & SMTP_XF_PROTO)
        p += (size_t)snprintf(line + p, size - p, " PROTO=%s",
                              env->proto == ENVELOPE_PROTO_SMTP ? "SMTP" : "ESMTP");
    if ((c->ehlo.xforward & SMTP_XF_HELO) && env->helo[0] != '\0' &&
        smtp_xtext_encode(env->helo, strlen(env->helo), helo, sizeof(helo), &n) == 0)
        p += (size_t)snprintf(line + p, size - p, " HELO=%s", helo);
    return p < size - 2;
}

/* MAIL, and with PIPELINING every RCPT and DATA, in one write, preceded by
 * XFORWARD when the server offers it (Postfix's client pipelines XFORWARD
 * with MAIL the same way). 1 when XFORWARD was sent: its reply comes
 * first. */
static int
smtpc_send_envelope(struct smtpc *c, const struct smtpc_msg *m)
{
    char line[1600];
    int xfwd = 0;

    conn_cork(&c->conn);
    if (c->pipelining && smtpc_xforward_line(c, m->env, line, sizeof(line))) {
        smtpc_write(c, "%s\r\n", line);
        xfwd = 1;
    }
    smtpc_send_mail(c, m);
    if (c->pipelining) {
        for (size_t i = 0; i < m->n; i++)
            smtpc_send_rcpt(c, m, i);
        smtpc_write(c, "DATA\r\n");
    }
    conn_uncork(&c->conn);
    return xfwd;
}

static void
smtpc_start_txn(struct smtpc *c)
{
    smtpc_txn_begin(c);
    c->xfwd_pending = (unsigned)smtpc_send_envelope(c, c->msg);
}

void
smtpc_send(struct smtpc *c, struct smtpc_msg *m)
{
    c->msg = m;
    c->used = 1;
    for (size_t i = 0; i < m->n; i++)
        memset(&m->res[i], 0, sizeof(m->res[i]));
    if (!c->pipelining) {
        char line[1600];
        if (smtpc_xforward_line(c, m->env, line, sizeof(line))) {
            /* Without PIPELINING, XFORWARD waits for its own reply. */
            smtpc_write(c, "%s\r\n", line);
            smtpc_enter_state(c, SMTPC_S_XFORWARD);
            conn_set_timeout(&c->conn, (uint64_t)c->cfg->smtp_timeout * 1000);
            return;
        }
    }
    smtpc_start_txn(c);
}

static void
smtpc_finish_txn(struct smtpc *c, int rset)
{
    struct smtpc_msg *m = c->msg;

    c->msg = NULL;
    c->sent_messages++;
    if (c->next != NULL) {
        /* The next transaction is already on the wire behind the "." just
         * answered (which ended this one whatever its code: no RSET). */
        c->msg = c->next;
        c->next = NULL;
        smtpc_txn_begin(c);
        c->xfwd_pending = c->next_xfwd;
        c->next_xfwd = 0;
        c->ops->on_done(c, m);
        return;
    }
    if (rset) {
        smtpc_write(c, "RSET\r\n");
        smtpc_enter_state(c, SMTPC_S_RSET);
        c->ops->on_done(c, m);
        return;
    }
    smtpc_enter_state(c, SMTPC_S_READY);
    c->ops->on_done(c, m);
    if (c->state == SMTPC_S_READY && !c->conn.closing && c->msg == NULL)
        smtpc_ready(c);
}

static void
smtpc_send_body(struct smtpc *c)
{
    /* The stored form is already canonical CRLF and dot-stuffed: it goes out
     * as is, followed by the terminator. */
    if (c->msg->body_len > 0)
        conn_write(&c->conn, (const char *)c->msg->body, c->msg->body_len);
    conn_write(&c->conn, ".\r\n", 3);
    smtpc_enter_state(c, SMTPC_S_BODY);
    if (c->pipelining && c->ops->on_next != NULL && c->next == NULL &&
        !c->conn.closing) {
        struct smtpc_msg *n = c->ops->on_next(c);
        if (n != NULL) {
            c->next = n;
            c->used = 1;
            for (size_t i = 0; i < n->n; i++)
                memset(&n->res[i], 0, sizeof(n->res[i]));
            c->next_xfwd = (unsigned)smtpc_send_envelope(c, n);
        }
    }
}

/* One complete reply in a transaction. */
static void
smtpc_txn_reply(struct smtpc *c)
{
    struct smtpc_msg *m = c->msg;
    int code = c->reply.code;

    if (c->xfwd_pending) {
        /* XFORWARD's reply: a refused XFORWARD is not worth failing the
         * delivery for (as without PIPELINING); a server closing (421)
         * is, with its own words. */
        c->xfwd_pending = 0;
        if (code == 421)
            smtpc_fail_reply(c, "XFORWARD");
        return;
    }
    if (c->expect == 0) { /* MAIL */
        c->expect = 1;
        if (code / 100 != 2) {
            c->mail_failed = 1;
            smtpc_result_from_reply(&c->txn, &c->reply);
            for (size_t i = 0; i < m->n; i++)
                m->res[i] = c->txn;
            if (!c->pipelining) {
                smtpc_finish_txn(c, 1);
                return;
            }
        } else if (!c->pipelining) {
            smtpc_send_rcpt(c, m, 0);
        }
        return;
    }
    if (c->expect <= m->n) { /* RCPT */
        size_t i = c->expect - 1;
        c->expect++;
        if (!c->mail_failed) {
            smtpc_result_from_reply(&m->res[i], &c->reply);
            if (code / 100 == 2)
                c->naccepted++;
        }
        if (!c->pipelining) {
            if (c->expect <= m->n)
                smtpc_send_rcpt(c, m, c->expect - 1);
            else if (c->naccepted > 0)
                smtpc_write(c, "DATA\r\n");
            else
                smtpc_finish_txn(c, 1);
        }
        return;
    }
    /* DATA */
    c->expect++;
    if (code == 354) {
        if (c->mail_failed || c->naccepted == 0) {
            /* Should not happen (the server accepted DATA without a valid
             * recipient): end it empty, the server must refuse. */
            conn_write(&c->conn, ".\r\n", 3);
            smtpc_enter_state(c, SMTPC_S_BODY);
            return;
        }
        smtpc_send_body(c);
        return;
    }
    if (!c->mail_failed && c->naccepted > 0) {
        smtpc_result_from_reply(&c->txn, &c->reply);
        for (size_t i = 0; i < m->n; i++)
            if (m->res[i].code / 100 == 2)
                m->res[i] = c->txn;
    }
    smtpc_finish_txn(c, 1);
}

static void
smtpc_body_reply(struct smtpc *c)
{
    struct smtpc_msg *m = c->msg;

    if (!c->mail_failed && c->naccepted > 0) {
        smtpc_result_from_reply(&c->txn, &c->reply);
        for (size_t i = 0; i < m->n; i++)
            if (m->res[i].code / 100 == 2)
                m->res[i] = c->txn;
    }
    smtpc_finish_txn(c, c->reply.code / 100 != 2);
}

static void
smtpc_handle_reply(struct smtpc *c)
{
    int code = c->reply.code;

    switch (c->state) {
    case SMTPC_S_GREETING:
        if (code / 100 != 2) {
            smtpc_fail_reply(c, "initial greeting");
            return;
        }
        smtpc_write(c, "EHLO %s\r\n", c->cfg->hostname);
        smtpc_enter_state(c, SMTPC_S_EHLO);
        conn_set_timeout(&c->conn, (uint64_t)c->cfg->smtp_timeout * 1000);
        return;
    case SMTPC_S_EHLO:
        if (code / 100 != 2) {
            if (c->tls_active || c->tls_mode >= MX2_TLS_ENCRYPT) {
                smtpc_fail_reply(c, "EHLO");
                return;
            }
            smtpc_write(c, "HELO %s\r\n", c->cfg->hostname);
            smtpc_enter_state(c, SMTPC_S_HELO);
            return;
        }
        memset(&c->ehlo, 0, sizeof(c->ehlo));
        smtp_ehlo_parse(&c->reply, &c->ehlo);
        c->pipelining = c->ehlo.pipelining;
        smtpc_after_ehlo(c);
        return;
    case SMTPC_S_HELO:
        if (code / 100 != 2) {
            smtpc_fail_reply(c, "HELO");
            return;
        }
        memset(&c->ehlo, 0, sizeof(c->ehlo));
        c->pipelining = 0;
        smtpc_after_ehlo(c);
        return;
    case SMTPC_S_STARTTLS:
        if (code != 220) {
            if (c->tls_mode == MX2_TLS_MAY) {
                c->ehlo.starttls = false;
                smtpc_after_ehlo(c);
                return;
            }
            smtpc_fail_reply(c, "STARTTLS");
            return;
        }
        if (conn_starttls(&c->conn, c->tls, c->target.host) != 0) {
            smtpc_fail(c, 0, "4.7.5", "cannot start TLS with %s[%s]", c->target.host,
                       c->target.ip);
            return;
        }
        smtpc_enter_state(c, SMTPC_S_TLS);
        return;
    case SMTPC_S_AUTH:
        if (code != 235) {
            smtpc_fail_reply(c, "AUTH");
            return;
        }
        smtpc_ready(c);
        return;
    case SMTPC_S_AUTH_USER:
        /* AUTH LOGIN: a 334 prompt for the user name, then one for the
         * password, then 235. */
        if (code != 334) {
            smtpc_fail_reply(c, "AUTH LOGIN");
            return;
        }
        smtpc_send_b64(c, c->auth.user);
        smtpc_enter_state(c, SMTPC_S_AUTH_PASS);
        return;
    case SMTPC_S_AUTH_PASS:
        if (code != 334) {
            smtpc_fail_reply(c, "AUTH LOGIN");
            return;
        }
        smtpc_send_b64(c, c->auth.password);
        smtpc_enter_state(c, SMTPC_S_AUTH);
        return;
    case SMTPC_S_XFORWARD:
        /* A refused XFORWARD is not worth failing the delivery for; a
         * server closing (421) is. */
        if (code == 421) {
            smtpc_fail_reply(c, "XFORWARD");
            return;
        }
        smtpc_start_txn(c);
        return;
    case SMTPC_S_TXN:
        smtpc_txn_reply(c);
        return;
    case SMTPC_S_BODY:
        smtpc_body_reply(c);
        return;
    case SMTPC_S_RSET:
        if (code / 100 != 2) {
            conn_close(&c->conn);
            return;
        }
        smtpc_ready(c);
        return;
    case SMTPC_S_QUIT:
        conn_close(&c->conn);
        return;
    default:
        /* A reply nobody asked for (READY, TLS): the server is confused. */
        smtpc_fail(c, 0, "4.5.0", "unexpected reply from %s[%s] in state %s", c->target.host,
                   c->target.ip, smtpc_state_names[c->state]);
        return;
    }
}

static void
smtpc_on_read(struct conn *conn)
{
    struct smtpc *c = conn->data;

    while (!conn->closing && buf_avail(&conn->in) > 0) {
        const char *head = buf_head(&conn->in);
        size_t avail = buf_avail(&conn->in);
        const char *lf = memchr(head, '\n', avail);
        int rc;

        if (lf == NULL) {
            if (avail > 4096) {
                smtpc_fail(c, 0, "4.5.0", "reply line too long from %s[%s]", c->target.host,
                           c->target.ip);
                return;
            }
            break;
        }
        size_t linelen = (size_t)(lf - head) + 1, len = linelen - 1;
        if (len > 0 && head[len - 1] == '\r')
            len--;
        rc = smtp_reply_add_line(&c->reply, head, len);
        buf_consume(&conn->in, linelen);
        if (rc < 0) {
            smtpc_fail(c, 0, "4.5.0", "malformed reply from %s[%s]", c->target.host,
                       c->target.ip);
            return;
        }
        if (rc == 1) {
            conn_touch(conn);
            smtpc_handle_reply(c);
            smtp_reply_init(&c->reply);
        }
    }
    if (conn->eof && !conn->closing) {
        if (c->state == SMTPC_S_QUIT || (c->state == SMTPC_S_READY && c->msg == NULL && !c->failed &&
                                         c->used)) {
            conn_close(conn);
            return;
        }
        smtpc_fail(c, 0, "4.4.2", "lost connection with %s[%s] while in state %s",
                   c->target.host, c->target.ip, smtpc_state_names[c->state]);
    }
}

static void
smtpc_on_tls_done(struct conn *conn, int status)
{
    struct smtpc *c = conn->data;

    if (status != 0) {
        char why[160];
        tls_errstr(conn->tls, why, sizeof(why));
        smtpc_fail(c, 0, "4.7.5", "TLS handshake with %s[%s] failed: %s", c->target.host,
                   c->target.ip, why);
        return;
    }
    c->tls_active = 1;
    {
        char info[160];
        tls_describe(conn->tls, info, sizeof(info));
        log_debug("TLS to %s[%s]:%u: %s", c->target.host, c->target.ip, c->target.port, info);
    }
    /* RFC 3207 4.2: discard what we knew; EHLO again over TLS. */
    smtpc_write(c, "EHLO %s\r\n", c->cfg->hostname);
    smtpc_enter_state(c, SMTPC_S_EHLO);
}

static void
smtpc_on_timeout(struct conn *conn)
{
    struct smtpc *c = conn->data;

    if (c->state == SMTPC_S_READY && c->msg == NULL) {
        smtpc_quit(c);
        return;
    }
    if (c->state == SMTPC_S_QUIT) {
        conn_close(conn);
        return;
    }
    smtpc_fail(c, 0, "4.4.2", "conversation with %s[%s] timed out while in state %s",
               c->target.host, c->target.ip, smtpc_state_names[c->state]);
}

static void
smtpc_on_close(struct conn *conn)
{
    struct smtpc *c = conn->data;

    if (!c->failed && (c->msg != NULL || c->state < SMTPC_S_READY)) {
        struct smtpc_result why;
        struct smtpc_msg *m = c->msg;
        memset(&why, 0, sizeof(why));
        c->failed = 1;
        c->msg = NULL;
        why.code = 0;
        snprintf(why.ecode, sizeof(why.ecode), "4.4.1");
        snprintf(why.text, sizeof(why.text), "connection to %s[%s]:%u lost or refused",
                 c->target.host, c->target.ip, c->target.port);
        if (c->next != NULL) {
            struct smtpc_msg *n = c->next;
            c->next = NULL;
            c->ops->on_abandon(c, n, &why);
        }
        c->ops->on_fail(c, m, &why);
    }
    c->ops->on_close(c);
}

static void
smtpc_on_connect(uv_connect_t *req, int status)
{
    struct smtpc *c = req->data;

    if (c->conn.closing)
        return;
    if (status < 0) {
        smtpc_fail(c, 0, "4.4.1", "connect to %s[%s]:%u: %s", c->target.host, c->target.ip,
                   c->target.port, uv_strerror(status));
        return;
    }
    if (conn_start(&c->conn, (uint64_t)c->cfg->connect_timeout * 1000) != 0) {
        smtpc_fail(c, 0, "4.4.1", "connect to %s[%s]:%u: cannot start reading", c->target.host,
                   c->target.ip, c->target.port);
        return;
    }
    smtpc_enter_state(c, SMTPC_S_GREETING);
}

void
smtpc_connect(struct smtpc *c, uv_loop_t *loop, const struct mx2_config *cfg,
              const struct smtpc_target *target, struct tls_ctx *tls, enum mx2_tls_mode mode,
              const struct smtpc_auth *auth, const struct smtpc_ops *ops, void *data)
{
    int rc;

    memset(c, 0, sizeof(*c));
    c->cfg = cfg;
    c->target = *target;
    c->tls = tls;
    c->tls_mode = mode;
    if (auth != NULL)
        c->auth = *auth;
    c->ops = ops;
    c->data = data;
    smtp_reply_init(&c->reply);
    rc = conn_init(loop, &c->conn, &smtpc_conn_ops, c);
    if (rc == 0) {
        /* connect_timeout covers the TCP connect and the greeting. */
        conn_set_timeout(&c->conn, (uint64_t)cfg->connect_timeout * 1000);
        c->creq.data = c;
        rc = uv_tcp_connect(&c->creq, &c->conn.tcp, (const struct sockaddr *)&c->target.addr,
                            smtpc_on_connect);
    }
    if (rc != 0) {
        /* Reported from the close callback, never from inside this call. */
        c->failed = 0;
        conn_close(&c->conn);
    }
}

void
smtpc_quit(struct smtpc *c)
{
    if (c->conn.closing)
        return;
    if (c->state == SMTPC_S_READY && c->msg == NULL) {
        smtpc_write(c, "QUIT\r\n");
        smtpc_enter_state(c, SMTPC_S_QUIT);
        conn_set_timeout(&c->conn, 2000);
        return;
    }
    /* The owner asked: nothing to report, unless a message was under way —
     * then on_fail (from the close callback) lets its outcome be recorded
     * as deferred instead of vanishing. */
    if (c->msg == NULL)
        c->failed = 1;
    conn_close(&c->conn);
}
