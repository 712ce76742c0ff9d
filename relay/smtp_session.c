/*
 * smtp_session.c - the inbound SMTP state machine (see smtp_session.h).
 *
 * Reading: every complete command line in the input buffer is handled in
 * order and its reply appended to s->out; the replies are written once the
 * input is drained or the session blocks (RFC 2920: replies in order, one
 * write per pipelined group). A session blocks while its message is being
 * spilled to disk or committed: the remaining pipelined commands stay in the
 * input buffer and reading is paused, so input stays bounded.
 *
 * DATA: bytes go through smtp_data, which finds the only valid end of data
 * (CRLF.CRLF) and yields the canonical wire form that is stored and later
 * sent to the primary as is. Errors found during DATA (size, bare newline,
 * loop) are recorded and answered once at the end (OpenSMTPD
 * smtp_message_end): the session stays in sync with the client.
 */
#include "smtp_session.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "config.h"
#include "ctlproto.h"
#include "err.h"
#include "flusher.h"
#include "log.h"
#include "rcptmap.h"
#include "smtp_parse.h"
#include "smtp_server.h"
#include "tls.h"
#include "xalloc.h"

/* Input handed to the DATA scanner per step (bounds the output reservation). */
#define SMTPD_DATA_STEP (16 * 1024)

static void smtpd_data_progress(struct smtpd_session *s, size_t n);
static void smtpd_pool_release(struct smtpd_session *s);
static void smtpd_process(struct smtpd_session *s);
static void smtpd_on_read(struct conn *c);
static void smtpd_on_tls_done(struct conn *c, int status);
static void smtpd_on_timeout(struct conn *c);
static void smtpd_on_close(struct conn *c);

static const struct conn_ops smtpd_conn_ops = {
    .on_read = smtpd_on_read,
    .on_tls_done = smtpd_on_tls_done,
    .on_timeout = smtpd_on_timeout,
    .on_close = smtpd_on_close,
};

static const char *const smtpd_state_names[] = {
    "INIT", "READY", "MAIL", "RCPT", "DATA", "SPILL", "COMMIT", "TLS", "QUIT",
};

static void
smtpd_enter_state(struct smtpd_session *s, enum smtpd_state st)
{
    if (s->state != st)
        log_debug("smtpd %s[%s]: %s -> %s", "unknown", s->conn.peer_ip,
                  smtpd_state_names[s->state], smtpd_state_names[st]);
    s->state = st;
}

static const struct mx2_config *
smtpd_cfg(const struct smtpd_session *s)
{
    return s->srv->cfg;
}

/* ---- replies ---- */

static void
smtpd_reply(struct smtpd_session *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
smtpd_reply(struct smtpd_session *s, int code, const char *fmt, ...)
{
    char text[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    buf_appendf(&s->out, "%d %s\r\n", code, text);
    if (code >= 400)
        s->errors++;
}

/* The reply err.h gives err, with an optional "<addr>: " in front. */
static int
smtpd_reply_err(struct smtpd_session *s, int err, const char *addr)
{
    const char *ecode, *text;
    int code = mx2_err_smtp(err, &ecode, &text);

    if (addr != NULL)
        smtpd_reply(s, code, "%s <%s>: %s", ecode, addr, text);
    else
        smtpd_reply(s, code, "%s %s", ecode, text);
    return code;
}

static void
smtpd_flush(struct smtpd_session *s)
{
    if (buf_avail(&s->out) > 0) {
        conn_write(&s->conn, buf_head(&s->out), buf_avail(&s->out));
        buf_reset(&s->out);
    }
    if (s->out.cap > 4096)
        buf_free(&s->out);
}

/* ---- the transaction ---- */

static void
smtpd_on_unlinked(uv_fs_t *req)
{
    uv_fs_req_cleanup(req);
    free(req);
}

static void
smtpd_tmp_discard(struct smtpd_session *s)
{
    /* Close and unlink the temp file. Both are short metadata calls on a file
     * nobody else uses; the unlink is deferred to the threadpool so a slow
     * disk never stalls the loop. */
    if (s->tmpfd >= 0) {
        close(s->tmpfd);
        s->tmpfd = -1;
    }
    if (s->tmppath != NULL) {
        uv_fs_t *req = xmalloc(sizeof(*req));
        if (uv_fs_unlink(s->conn.tcp.loop, req, s->tmppath, smtpd_on_unlinked) != 0)
            free(req);
        free(s->tmppath);
        s->tmppath = NULL;
    }
}

static void
smtpd_reset_transaction(struct smtpd_session *s)
{
    free(s->sender);
    s->sender = NULL;
    free(s->envid);
    s->envid = NULL;
    for (size_t i = 0; i < s->nrcpt; i++) {
        free(s->rcpts[i].address);
        free(s->rcpts[i].orcpt);
    }
    free(s->rcpts);
    s->rcpts = NULL;
    s->nrcpt = s->rcpt_cap = 0;
    s->mail_flags = 0;
    s->ret = ENVELOPE_RET_NONE;
    buf_free(&s->body);
    smtpd_pool_release(s);
    s->spilled = 0;
    smtpd_tmp_discard(s);
    free(s->env.rcpts);
    memset(&s->env, 0, sizeof(s->env));
}

/* Give back the session's share of the body pool (its buffer has been
 * freed or is about to be). */
static void
smtpd_pool_release(struct smtpd_session *s)
{
    s->srv->body_pool_used -= s->pool_held;
    s->pool_held = 0;
}

/* The body in memory has reached its allowance: take another piece of the
 * pool if it has one and the body never went to a file. 1 = keep in memory. */
static int
smtpd_pool_grow(struct smtpd_session *s)
{
    struct smtpd_server *srv = s->srv;

    if (s->tmpfd >= 0 || srv->body_pool_used + SMTPD_POOL_STEP > srv->body_pool_max)
        return 0;
    srv->body_pool_used += SMTPD_POOL_STEP;
    s->pool_held += SMTPD_POOL_STEP;
    return 1;
}

static void
smtpd_maybe_free(struct smtpd_session *s)
{
    if (!s->closed || s->job_inflight || s->fs_inflight)
        return;
    smtpd_reset_transaction(s);
    buf_free(&s->out);
    free(s);
}

/* ---- commands ---- */

static void
smtpd_cmd_helo(struct smtpd_session *s, struct smtp_cmd *cmd)
{
    const struct mx2_config *cfg = smtpd_cfg(s);
    int ehlo = cmd->verb == SMTP_V_EHLO;

    if (cmd->arg_len == 0) {
        smtpd_reply(s, 501, "5.5.4 Syntax: %s hostname", ehlo ? "EHLO" : "HELO");
        return;
    }
    snprintf(s->helo, sizeof(s->helo), "%.*s", (int)cmd->arg_len, cmd->arg);
    /* RFC 5321 4.1.4: EHLO/HELO resets any transaction. */
    smtpd_reset_transaction(s);
    s->esmtp = ehlo;
    smtpd_enter_state(s, SMTPD_S_READY);
    if (!ehlo) {
        smtpd_reply(s, 250, "%s", cfg->hostname);
        return;
    }
    buf_appendf(&s->out, "250-%s\r\n", cfg->hostname);
    buf_appendf(&s->out, "250-PIPELINING\r\n");
    buf_appendf(&s->out, "250-SIZE %llu\r\n", (unsigned long long)cfg->max_message_size);
    if (cfg->etrn_clients_count > 0)
        buf_appendf(&s->out, "250-ETRN\r\n");
    if (s->srv->tls != NULL && !s->tls_active)
        buf_appendf(&s->out, "250-STARTTLS\r\n");
    buf_appendf(&s->out, "250-ENHANCEDSTATUSCODES\r\n");
    buf_appendf(&s->out, "250-8BITMIME\r\n");
    buf_appendf(&s->out, "250-DSN\r\n");
    buf_appendf(&s->out, "250 SMTPUTF8\r\n");
}

static const char *
smtpd_proto(const struct smtpd_session *s)
{
    return s->tls_active ? "ESMTPS" : s->esmtp ? "ESMTP" : "SMTP";
}

static void
smtpd_log_reject(struct smtpd_session *s, const char *verb, int err, const char *addr)
{
    const char *ecode, *text;
    int code = mx2_err_smtp(err, &ecode, &text);

    log_info("NOQUEUE: reject: %s from unknown[%s]: %d %s <%s>: %s; from=<%s> to=<%s> "
             "proto=%s helo=<%s>",
             verb, s->conn.peer_ip, code, ecode, addr, text, s->sender ? s->sender : "", addr,
             smtpd_proto(s), s->helo);
}

static void
smtpd_cmd_mail(struct smtpd_session *s, struct smtp_cmd *cmd)
{
    const struct mx2_config *cfg = smtpd_cfg(s);
    char text[ADDR_TEXT_MAX];

    if (s->state == SMTPD_S_INIT) {
        smtpd_reply(s, 503, "5.5.1 Error: send HELO/EHLO first");
        return;
    }
    if (s->state != SMTPD_S_READY) {
        smtpd_reply(s, 503, "5.5.1 Error: nested MAIL command");
        return;
    }
    if (s->srv->defer_new_mail) {
        /* defer_when_primary_up: the primary answers, so the sender should
         * deliver there; 421 closes the session (RFC 5321 3.8). */
        s->srv->stats.rejected_other++;
        smtpd_reply_err(s, MX2_E_PRIMARY_UP, NULL);
        smtpd_enter_state(s, SMTPD_S_QUIT);
        return;
    }
    if (cmd->has_size && cmd->size > cfg->max_message_size) {
        s->srv->stats.rejected_limit++;
        smtpd_reply(s, 552, "5.3.4 Message size exceeds fixed limit");
        return;
    }
    /* Room for the largest message we accept, as Postfix's queue_minfree
     * check does: refuse now rather than fail after DATA. */
    {
        uint64_t need = cfg->max_message_size + cfg->max_message_size / 2;
        if (cmd->has_size && cmd->size * 2 > need)
            need = cmd->size * 2;
        if (s->srv->spool_trouble || writer_free_space(s->srv->writer) < need) {
            s->srv->stats.rejected_limit++;
            smtpd_reply_err(s, MX2_E_SPOOL, NULL);
            return;
        }
    }
    if (addr_format(&cmd->path, text, sizeof(text), NULL) != 0) {
        smtpd_reply_err(s, MX2_E_BAD_SENDER, NULL);
        return;
    }
    s->sender = xstrdup(text);
    s->mail_flags = 0;
    if (cmd->smtputf8)
        s->mail_flags |= ENVELOPE_F_SMTPUTF8;
    if (cmd->body == SMTP_BODY_8BITMIME)
        s->mail_flags |= ENVELOPE_F_8BITMIME;
    s->ret = cmd->ret == SMTP_RET_FULL   ? ENVELOPE_RET_FULL
             : cmd->ret == SMTP_RET_HDRS ? ENVELOPE_RET_HDRS
                                         : ENVELOPE_RET_NONE;
    if (cmd->has_envid) {
        /* Kept xtext-encoded, as it will be passed on (RFC 3461 4.4). */
        char enc[3 * SMTP_ENVID_MAX + 1];
        size_t n;
        if (smtp_xtext_encode(cmd->envid, cmd->envid_len, enc, sizeof(enc), &n) == 0)
            s->envid = xstrdup(enc);
    }
    smtpd_enter_state(s, SMTPD_S_MAIL);
    smtpd_reply(s, 250, "2.1.0 Ok");
}

static void
smtpd_cmd_rcpt(struct smtpd_session *s, struct smtp_cmd *cmd)
{
    const struct mx2_config *cfg = smtpd_cfg(s);
    char text[ADDR_TEXT_MAX];
    int rc;

    if (s->state != SMTPD_S_MAIL && s->state != SMTPD_S_RCPT) {
        smtpd_reply(s, 503, "5.5.1 Error: need MAIL command");
        return;
    }
    if (addr_format(&cmd->path, text, sizeof(text), NULL) != 0 || (cmd->path.flags & ADDR_F_NULL)) {
        smtpd_reply_err(s, MX2_E_BAD_ADDRESS, NULL);
        return;
    }
    if (s->nrcpt >= (size_t)cfg->max_recipients) {
        s->srv->stats.rejected_limit++;
        smtpd_reply_err(s, MX2_E_TOO_MANY_RCPTS, NULL);
        return;
    }
    /* The open-relay gate: judged on the address the primary would finally
     * route to, before the map is consulted (a catch-all must never let a
     * routing trick through). */
    rc = addr_relay_check(&cmd->path, cfg->relay_domains, cfg->relay_domains_count);
    if (rc == 0)
        rc = rcptmap_lookup(s->srv->map, cmd->path.local, cmd->path.domain,
                            cfg->recipient_delimiter, NULL, 0);
    if (rc != 0) {
        if (rc == MX2_E_RELAY_DENIED)
            s->srv->stats.rejected_relay++;
        else if (rc == MX2_E_NOT_FOUND) {
            rc = MX2_E_USER_UNKNOWN;
            s->srv->stats.rejected_unknown++;
        } else {
            rc = MX2_E_MAP_UNAVAILABLE;
            s->srv->stats.rejected_map++;
        }
        smtpd_log_reject(s, "RCPT", rc, text);
        smtpd_reply_err(s, rc, text);
        return;
    }
    /* A recipient given twice is delivered once (as Postfix's cleanup
     * does), and repeats cost no memory. */
    for (size_t i = 0; i < s->nrcpt; i++)
        if (strcmp(s->rcpts[i].address, text) == 0) {
            smtpd_reply(s, 250, "2.1.5 Ok");
            return;
        }
    if (s->nrcpt == s->rcpt_cap) {
        s->rcpt_cap = s->rcpt_cap ? 2 * s->rcpt_cap : 4;
        s->rcpts = xrealloc(s->rcpts, s->rcpt_cap * sizeof(*s->rcpts));
    }
    s->rcpts[s->nrcpt].address = xstrdup(text);
    s->rcpts[s->nrcpt].orcpt = NULL;
    if (cmd->has_orcpt) {
        /* Stored as received on the wire, "rfc822;" + xtext (RFC 3461 4.2),
         * ready to be passed on and quoted in DSNs. */
        char enc[3 * SMTP_ORCPT_MAX + 8];
        size_t n;
        memcpy(enc, "rfc822;", 7);
        if (smtp_xtext_encode(cmd->orcpt, cmd->orcpt_len, enc + 7, sizeof(enc) - 7, &n) == 0)
            s->rcpts[s->nrcpt].orcpt = xstrdup(enc);
    }
    s->rcpts[s->nrcpt].notify = cmd->notify;
    s->nrcpt++;
    smtpd_enter_state(s, SMTPD_S_RCPT);
    smtpd_reply(s, 250, "2.1.5 Ok");
}

static void
smtpd_received_header(struct smtpd_session *s)
{
    const struct mx2_config *cfg = smtpd_cfg(s);
    char date[64];
    time_t now = time(NULL);
    struct tm tm;

    if (localtime_r(&now, &tm) == NULL ||
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm) == 0)
        snprintf(date, sizeof(date), "Thu, 01 Jan 1970 00:00:00 +0000");
    buf_appendf(&s->body, "Received: from %s (unknown [%s])\r\n", s->helo[0] ? s->helo : "unknown",
                s->conn.peer_ip);
    if (s->tls_active)
        buf_appendf(&s->body, "\t(using %s)\r\n", s->tls_info);
    buf_appendf(&s->body, "\tby %s (mx2) with %s", cfg->hostname, smtpd_proto(s));
    if (s->nrcpt == 1)
        buf_appendf(&s->body, "\r\n\tfor <%s>", s->rcpts[0].address);
    buf_appendf(&s->body, "; %s\r\n", date);
}

static void
smtpd_cmd_data(struct smtpd_session *s, struct smtp_cmd *cmd)
{
    const struct mx2_config *cfg = smtpd_cfg(s);

    if (cmd->arg_len != 0) {
        smtpd_reply(s, 501, "5.5.4 Syntax: DATA");
        return;
    }
    if (s->state == SMTPD_S_MAIL) {
        smtpd_reply(s, 554, "5.5.1 Error: no valid recipients");
        return;
    }
    if (s->state != SMTPD_S_RCPT) {
        smtpd_reply(s, 503, "5.5.1 Error: need RCPT command");
        return;
    }
    smtp_data_init(&s->scan, cfg->bare_newline, cfg->max_message_size, SMTPD_MAX_RECEIVED);
    buf_reset(&s->body);
    s->spilled = 0;
    smtpd_received_header(s);
    smtpd_enter_state(s, SMTPD_S_DATA);
    s->data_deadline = uv_now(s->conn.tcp.loop) + s->conn.timeout_ms;
    smtpd_reply(s, 354, "End data with <CR><LF>.<CR><LF>");
}

static void
smtpd_cmd_rset(struct smtpd_session *s, struct smtp_cmd *cmd)
{
    smtpd_reset_transaction(s);
    if (s->state != SMTPD_S_INIT)
        smtpd_enter_state(s, SMTPD_S_READY);
    smtpd_reply(s, 250, "2.0.0 Ok");
}

static void
smtpd_cmd_noop(struct smtpd_session *s, struct smtp_cmd *cmd)
{
    smtpd_reply(s, 250, "2.0.0 Ok");
}

static void
smtpd_cmd_quit(struct smtpd_session *s, struct smtp_cmd *cmd)
{
    smtpd_reply(s, 221, "2.0.0 Bye");
    smtpd_enter_state(s, SMTPD_S_QUIT);
}

static void
smtpd_cmd_vrfy(struct smtpd_session *s, struct smtp_cmd *cmd)
{
    /* RFC 5321 3.5.3: 252 when we will not verify; no user enumeration. */
    smtpd_reply(s, 252, "2.0.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void
smtpd_cmd_expn(struct smtpd_session *s, struct smtp_cmd *cmd)
{
    smtpd_reply(s, 502, "5.5.1 EXPN not available");
}

static void
smtpd_cmd_help(struct smtpd_session *s, struct smtp_cmd *cmd)
{
    smtpd_reply(s, 214, "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY STARTTLS "
                        "ETRN; see RFC 5321");
}

static void
smtpd_cmd_starttls(struct smtpd_session *s, struct smtp_cmd *cmd)
{
    if (s->srv->tls == NULL) {
        smtpd_reply_err(s, MX2_E_NOT_IMPLEMENTED, NULL);
        return;
    }
    if (s->tls_active) {
        smtpd_reply(s, 554, "5.5.1 Error: TLS already active");
        return;
    }
    if (cmd->arg_len != 0) {
        smtpd_reply(s, 501, "5.5.4 Syntax: STARTTLS");
        return;
    }
    if (s->state == SMTPD_S_MAIL || s->state == SMTPD_S_RCPT) {
        smtpd_reply(s, 503, "5.5.1 Error: MAIL transaction in progress");
        return;
    }
    smtpd_reply(s, 220, "2.0.0 Ready to start TLS");
    smtpd_flush(s);
    /* conn_starttls drops whatever the client pipelined behind STARTTLS. */
    if (conn_starttls(&s->conn, s->srv->tls, NULL) != 0) {
        log_warn("STARTTLS from unknown[%s]: cannot create TLS session", s->conn.peer_ip);
        conn_close(&s->conn);
        return;
    }
    smtpd_enter_state(s, SMTPD_S_TLS);
}

/* ETRN (RFC 1985): a client in etrn_clients (the primary, back up) asks us
 * to deliver what we hold for one of our relay domains now. Replies, where
 * RFC 1985 leaves a choice, as Postfix: 502 when ETRN is not offered at all
 * (etrn_clients empty), 503 before HELO or inside a mail transaction, 501
 * without a valid domain; 459 (temporary: the primary may be reconfigured)
 * for a client not in etrn_clients and for a domain we do not relay; 458
 * for "#queue" names, which mx2 does not have. Otherwise 250 when messages
 * were made due, 251 when none was waiting (RFC 1985 section 5). */
static void
smtpd_cmd_etrn(struct smtpd_session *s, struct smtp_cmd *cmd)
{
    const struct mx2_config *cfg = smtpd_cfg(s);
    const char *arg = cmd->arg;
    size_t len = cmd->arg_len, n;
    char dom[256];

    if (cfg->etrn_clients_count == 0) {
        smtpd_reply_err(s, MX2_E_NOT_IMPLEMENTED, NULL);
        return;
    }
    if (s->state == SMTPD_S_INIT) {
        smtpd_reply(s, 503, "5.5.1 Error: send HELO/EHLO first");
        return;
    }
    if (s->state == SMTPD_S_MAIL || s->state == SMTPD_S_RCPT) {
        smtpd_reply(s, 503, "5.5.1 Error: MAIL transaction in progress");
        return;
    }
    if (len == 0) {
        smtpd_reply(s, 501, "5.5.4 Syntax: ETRN domain");
        return;
    }
    if (!ctlproto_ip_listed(s->conn.peer_ip, cfg->etrn_clients, cfg->etrn_clients_count)) {
        log_info("ETRN %.*s from unknown[%s]: client not in etrn_clients",
                 (int)(len > 255 ? 255 : len), arg, s->conn.peer_ip);
        smtpd_reply(s, 459, "4.7.1 <%.*s>: client not authorized", (int)(len > 255 ? 255 : len),
                    arg);
        return;
    }
    if (arg[0] == '#') {
        smtpd_reply(s, 458, "4.3.0 Unable to queue messages for node %.*s",
                    (int)(len > 255 ? 255 : len), arg);
        return;
    }
    if (arg[0] == '@') {
        arg++;
        len--;
    }
    if (len > 0 && arg[len - 1] == '.')
        len--;
    if (len == 0 || len >= sizeof(dom)) {
        smtpd_reply(s, 501, "5.5.4 Syntax: ETRN domain");
        return;
    }
    for (size_t i = 0; i < len; i++) {
        char c = arg[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.')) {
            smtpd_reply(s, 501, "5.5.4 Syntax: ETRN domain");
            return;
        }
    }
    memcpy(dom, arg, len);
    dom[len] = '\0';
    if (!addr_domain_listed(dom, len, cfg->relay_domains, cfg->relay_domains_count) ||
        s->srv->flusher == NULL) {
        smtpd_reply(s, 459, "4.7.1 <%s>: Node not allowed: not a relay domain", dom);
        return;
    }
    n = flusher_flush_domain(s->srv->flusher, dom);
    log_info("ETRN %s from unknown[%s]: %zu message%s queued for delivery", dom, s->conn.peer_ip, n,
             n == 1 ? "" : "s");
    if (n > 0)
        smtpd_reply(s, 250, "2.0.0 Queuing for node %s started", dom);
    else
        smtpd_reply(s, 251, "2.0.0 OK, no messages waiting for node %s", dom);
}

static void
smtpd_cmd_not_impl(struct smtpd_session *s, struct smtp_cmd *cmd)
{
    smtpd_reply_err(s, MX2_E_NOT_IMPLEMENTED, NULL);
}

typedef void (*smtpd_cmd_fn)(struct smtpd_session *, struct smtp_cmd *);

/* Dispatch table, indexed by verb (Postfix smtpd_cmd_table). */
static const smtpd_cmd_fn smtpd_cmds[SMTP_V_COUNT_] = {
    [SMTP_V_EHLO] = smtpd_cmd_helo,         [SMTP_V_HELO] = smtpd_cmd_helo,
    [SMTP_V_MAIL] = smtpd_cmd_mail,         [SMTP_V_RCPT] = smtpd_cmd_rcpt,
    [SMTP_V_DATA] = smtpd_cmd_data,         [SMTP_V_RSET] = smtpd_cmd_rset,
    [SMTP_V_NOOP] = smtpd_cmd_noop,         [SMTP_V_QUIT] = smtpd_cmd_quit,
    [SMTP_V_VRFY] = smtpd_cmd_vrfy,         [SMTP_V_EXPN] = smtpd_cmd_expn,
    [SMTP_V_HELP] = smtpd_cmd_help,         [SMTP_V_STARTTLS] = smtpd_cmd_starttls,
    [SMTP_V_ETRN] = smtpd_cmd_etrn,         [SMTP_V_BDAT] = smtpd_cmd_not_impl,
    [SMTP_V_AUTH] = smtpd_cmd_not_impl,
};

static void
smtpd_handle_line(struct smtpd_session *s, const char *line, size_t len)
{
    struct smtp_cmd cmd;
    unsigned flags = (s->mail_flags & ENVELOPE_F_SMTPUTF8) ? SMTP_PARSE_UTF8 : 0;
    int rc = smtp_parse_command(line, len, flags, &cmd);

    if (rc != 0) {
        if (rc == MX2_E_SYNTAX)
            smtpd_reply(s, 500, "5.5.2 Error: command not recognized");
        else
            smtpd_reply_err(s, rc, NULL);
        return;
    }
    if (cmd.verb == SMTP_V_UNKNOWN || smtpd_cmds[cmd.verb] == NULL) {
        smtpd_reply(s, 500, "5.5.2 Error: command not recognized");
        return;
    }
    smtpd_cmds[cmd.verb](s, &cmd);
}

/* ---- DATA, spill, commit ---- */

static void smtpd_commit(struct smtpd_session *s);
static void smtpd_spill(struct smtpd_session *s, int final);

static void
smtpd_data_end(struct smtpd_session *s)
{
    int err = s->scan.error;

    if (err != 0) {
        const char *ecode, *text;
        int code = mx2_err_smtp(err, &ecode, &text);
        s->srv->stats.rejected_limit++;
        log_info("NOQUEUE: reject: DATA from unknown[%s]: %d %s %s; from=<%s> proto=%s helo=<%s>",
                 s->conn.peer_ip, code, ecode, text, s->sender, smtpd_proto(s), s->helo);
        smtpd_reply_err(s, err, NULL);
        smtpd_reset_transaction(s);
        smtpd_enter_state(s, SMTPD_S_READY);
        return;
    }
    if (s->tmpfd >= 0 && buf_avail(&s->body) > 0) {
        smtpd_spill(s, 1);
        return;
    }
    smtpd_commit(s);
}

static void
smtpd_on_spilled(uv_fs_t *req)
{
    struct smtpd_session *s = req->data;
    ssize_t r = req->result;
    int final = s->fs_final;

    uv_fs_req_cleanup(req);
    s->fs_inflight = 0;
    if (s->closed) {
        smtpd_maybe_free(s);
        return;
    }
    if (r < 0 || (size_t)r != buf_avail(&s->body)) {
        /* A short write means the disk is full or failing: 452, the client
         * retries later, and we keep serving. */
        log_warn("spool temp write: %s", r < 0 ? uv_strerror((int)r) : "short write");
        s->srv->stats.rejected_limit++;
        s->scan.error = MX2_E_SPOOL;
        if (final) {
            smtpd_data_end(s);
            smtpd_flush(s);
            conn_resume(&s->conn);
            smtpd_process(s);
            return;
        }
        /* Keep reading to the end of data, discarding. */
    } else {
        s->spilled += (uint64_t)r;
    }
    buf_reset(&s->body);
    if (s->pool_held > 0) {
        /* What the pool held is in the file now: the rest streams through
         * SMTPD_BODY_MEM, and the big buffer goes. */
        buf_free(&s->body);
        smtpd_pool_release(s);
    }
    if (final) {
        smtpd_commit(s);
        return;
    }
    smtpd_enter_state(s, SMTPD_S_DATA);
    /* Our own disk's time is not taken from the client's budget. */
    s->data_deadline += uv_now(s->conn.tcp.loop) - s->spill_started;
    smtpd_data_progress(s, 0);
    conn_resume(&s->conn);
    smtpd_process(s);
}

static void
smtpd_spill(struct smtpd_session *s, int final)
{
    uv_buf_t b;
    int rc;

    if (s->pool_held > 0)
        log_debug("body pool exhausted: spilling %zu bytes held in memory from unknown[%s]",
                  buf_avail(&s->body), s->conn.peer_ip);
    if (s->tmpfd < 0) {
        char path[SPOOL_PATH_MAX];
        /* One open(2) of a new file in our own spool: a metadata call,
         * accepted on the loop as libuv's own uv_fs_* users accept uv_fs_open
         * latency; the bulk writes below go to the threadpool. */
        rc = spool_tmp_open(s->srv->spool, &s->tmpfd, path);
        if (rc != 0) {
            log_warn("spool temp file: %s", mx2_strerror(rc));
            s->scan.error = MX2_E_SPOOL;
            buf_reset(&s->body);
            if (final)
                smtpd_data_end(s);
            return;
        }
        s->tmppath = xstrdup(path);
    }
    b = uv_buf_init((char *)buf_head(&s->body), (unsigned)buf_avail(&s->body));
    s->fsreq.data = s;
    s->fs_final = final;
    rc = uv_fs_write(s->conn.tcp.loop, &s->fsreq, s->tmpfd, &b, 1, (int64_t)s->spilled,
                     smtpd_on_spilled);
    if (rc != 0) {
        log_warn("spool temp write: %s", uv_strerror(rc));
        s->scan.error = MX2_E_SPOOL;
        buf_reset(&s->body);
        if (final)
            smtpd_data_end(s);
        return;
    }
    s->fs_inflight = 1;
    smtpd_enter_state(s, SMTPD_S_SPILL);
    s->spill_started = uv_now(s->conn.tcp.loop);
    conn_pause(&s->conn);
}

static void
smtpd_on_committed(struct writer_job *job)
{
    struct smtpd_session *s = job->data;
    struct envelope *env = &s->env;

    s->job_inflight = 0;
    if (job->result == 0) {
        s->srv->stats.accepted++;
        log_info("%s: client=unknown[%s]", job->msg.qid, s->conn.peer_ip);
        if (s->scan.message_id_len > 0)
            log_info("%s: message-id=%s", job->msg.qid, s->scan.message_id);
        log_info("%s: from=<%s>, size=%llu, nrcpt=%zu (queue active)", job->msg.qid, env->sender,
                 (unsigned long long)env->size, env->nrcpt);
        flusher_enqueue(s->srv->flusher, job->msg.qid, env);
    } else {
        log_warn("NOQUEUE: queue write failed for message from=<%s>: %s", env->sender,
                 mx2_strerror(job->result));
    }
    if (s->closed) {
        smtpd_maybe_free(s);
        return;
    }
    /* The 250 and the replies to whatever the client pipelined behind the
     * end of data (handled below) leave in one send. */
    conn_cork(&s->conn);
    if (job->result == 0)
        smtpd_reply(s, 250, "2.0.0 Ok: queued as %s", job->msg.qid);
    else
        smtpd_reply_err(s, job->result == MX2_E_SPOOL || job->result == -ENOSPC
                               ? MX2_E_SPOOL
                               : MX2_E_INTERNAL,
                        NULL);
    smtpd_reset_transaction(s);
    smtpd_enter_state(s, SMTPD_S_READY);
    if (s->stop_after) {
        smtpd_reply_err(s, MX2_E_SHUTDOWN, NULL);
        smtpd_flush(s);
        smtpd_enter_state(s, SMTPD_S_QUIT);
        conn_close_after_write(&s->conn);
        conn_uncork(&s->conn);
        return;
    }
    conn_resume(&s->conn);
    conn_touch(&s->conn);
    smtpd_process(s);
    conn_uncork(&s->conn);
}

static void
smtpd_commit(struct smtpd_session *s)
{
    struct envelope *env = &s->env;
    struct timespec ts;

    memset(env, 0, sizeof(*env));
    clock_gettime(CLOCK_REALTIME, &ts);
    env->arrival_sec = ts.tv_sec;
    env->arrival_usec = (uint32_t)(ts.tv_nsec / 1000);
    env->sender = s->sender;
    env->client_addr = s->conn.peer_ip;
    env->client_name = "unknown";
    env->helo = s->helo;
    env->proto = s->tls_active ? ENVELOPE_PROTO_ESMTPS
                 : s->esmtp    ? ENVELOPE_PROTO_ESMTP
                               : ENVELOPE_PROTO_SMTP;
    env->tls_cipher = s->tls_active ? s->tls_info : "";
    env->flags = s->mail_flags;
    env->ret = (enum envelope_ret)s->ret;
    env->envid = s->envid ? s->envid : "";
    env->rcpts = xcalloc(s->nrcpt, sizeof(*env->rcpts));
    env->nrcpt = s->nrcpt;
    for (size_t i = 0; i < s->nrcpt; i++) {
        env->rcpts[i].address = s->rcpts[i].address;
        env->rcpts[i].orcpt = s->rcpts[i].orcpt ? s->rcpts[i].orcpt : "";
        env->rcpts[i].notify = s->rcpts[i].notify;
        env->rcpts[i].state = ENVELOPE_RCPT_PENDING;
        env->rcpts[i].last_error = "";
    }
    memset(&s->job, 0, sizeof(s->job));
    s->job.kind = WRITER_COMMIT;
    s->job.msg.env = env;
    if (s->tmpfd >= 0) {
        s->job.msg.body_fd = s->tmpfd;
        s->job.msg.body = NULL;
        s->job.msg.body_len = (size_t)s->spilled;
    } else {
        s->job.msg.body_fd = -1;
        s->job.msg.body = buf_head(&s->body);
        s->job.msg.body_len = buf_avail(&s->body);
    }
    s->job.done = smtpd_on_committed;
    s->job.data = s;
    s->job_inflight = 1;
    /* Reading goes on: what a pipelining client sends meanwhile waits in
     * the input buffer (bounded: reading stops when it is full), since
     * smtpd_process handles nothing in COMMIT; EOF waits too. Not pausing
     * saves two epoll_ctl calls per message. */
    smtpd_enter_state(s, SMTPD_S_COMMIT);
    writer_submit(s->srv->writer, &s->job);
}

/* n more bytes of DATA arrived: refill the budget (SMTPD_MIN_DATA_RATE) and
 * arm the timer for what is left of it. */
static void
smtpd_data_progress(struct smtpd_session *s, size_t n)
{
    struct conn *c = &s->conn;
    uint64_t now = uv_now(c->tcp.loop), cap = now + c->timeout_ms;

    s->data_deadline += (uint64_t)n * 1000 / SMTPD_MIN_DATA_RATE;
    if (s->data_deadline > cap)
        s->data_deadline = cap;
    conn_touch_for(c, s->data_deadline > now ? s->data_deadline - now : 1);
}

/* Feed buffered input to the scanner. Returns 1 when the session must stop
 * processing for now (spilling, committing, or waiting for more input). */
static int
smtpd_feed_data(struct smtpd_session *s)
{
    struct conn *c = &s->conn;

    while (buf_avail(&c->in) > 0) {
        size_t step = buf_avail(&c->in) < SMTPD_DATA_STEP ? buf_avail(&c->in) : SMTPD_DATA_STEP;
        char *out = buf_reserve(&s->body, SMTP_DATA_OUT_SIZE(step));
        size_t outlen = 0;
        size_t used = smtp_data_feed(&s->scan, buf_head(&c->in), step, out, &outlen);

        s->body.len += outlen;
        buf_consume(&c->in, used);
        smtpd_data_progress(s, used);
        if (s->scan.done) {
            smtpd_data_end(s);
            return s->state != SMTPD_S_READY;
        }
        if (s->scan.error != 0)
            buf_reset(&s->body); /* the message is refused: keep nothing */
        if (buf_avail(&s->body) >= SMTPD_BODY_MEM + s->pool_held && !smtpd_pool_grow(s)) {
            smtpd_spill(s, 0);
            if (s->state == SMTPD_S_SPILL)
                return 1;
        }
    }
    return 1;
}

static void
smtpd_process(struct smtpd_session *s)
{
    struct conn *c = &s->conn;

    while (!c->closing && s->state != SMTPD_S_QUIT) {
        if (s->state == SMTPD_S_DATA) {
            if (smtpd_feed_data(s))
                break;
            continue;
        }
        if (s->state == SMTPD_S_SPILL || s->state == SMTPD_S_COMMIT || s->state == SMTPD_S_TLS)
            break;
        if (s->stop_after) {
            smtpd_reply_err(s, MX2_E_SHUTDOWN, NULL);
            smtpd_enter_state(s, SMTPD_S_QUIT);
            break;
        }
        /* A client that pipelines without reading its replies: stop
         * handling commands until the output drains (conn resumes us). */
        if (c->out_pending + buf_avail(&s->out) > SMTPD_OUT_HIGH)
            break;
        if (s->errors > SMTPD_ERROR_LIMIT) {
            log_info("too many errors from unknown[%s]", c->peer_ip);
            smtpd_reply_err(s, MX2_E_TOO_MANY_ERRORS, NULL);
            smtpd_enter_state(s, SMTPD_S_QUIT);
            break;
        }
        size_t avail = buf_avail(&c->in);
        if (avail == 0)
            break;
        const char *head = buf_head(&c->in);
        const char *lf = memchr(head, '\n', avail);
        if (lf == NULL) {
            if (avail >= SMTPD_LINE_MAX) {
                /* RFC 5321 4.5.3.1.4; never buffer an endless line. */
                if (!s->discard_line)
                    smtpd_reply_err(s, MX2_E_LINE_TOO_LONG, NULL);
                s->discard_line = 1;
                buf_consume(&c->in, avail);
            }
            break;
        }
        size_t linelen = (size_t)(lf - head) + 1;
        if (s->discard_line || linelen > SMTPD_LINE_MAX) {
            if (!s->discard_line)
                smtpd_reply_err(s, MX2_E_LINE_TOO_LONG, NULL);
            s->discard_line = 0;
            buf_consume(&c->in, linelen);
            continue;
        }
        char line[SMTPD_LINE_MAX];
        size_t len = linelen - 1;
        if (len > 0 && head[len - 1] == '\r')
            len--;
        memcpy(line, head, len);
        buf_consume(&c->in, linelen);
        conn_touch(c);
        smtpd_handle_line(s, line, len);
    }
    smtpd_flush(s);
    if (s->state == SMTPD_S_QUIT && !c->closing) {
        conn_close_after_write(c);
        return;
    }
    if (c->eof && !c->closing && s->state != SMTPD_S_COMMIT && s->state != SMTPD_S_SPILL) {
        /* Client went away (a DATA in progress is dropped: never acked);
         * replies to what it sent before its EOF still go out. */
        conn_close_after_write(c);
    }
}

/* ---- connection callbacks ---- */

static void
smtpd_on_read(struct conn *c)
{
    struct smtpd_session *s = c->data;

    smtpd_process(s);
}

static void
smtpd_on_tls_done(struct conn *c, int status)
{
    struct smtpd_session *s = c->data;

    if (status != 0) {
        char why[128];
        tls_errstr(c->tls, why, sizeof(why));
        log_info("TLS handshake failed from unknown[%s]: %s", c->peer_ip, why);
        conn_close(c);
        return;
    }
    s->tls_active = 1;
    tls_describe(c->tls, s->tls_info, sizeof(s->tls_info));
    log_info("TLS established from unknown[%s]: %s", c->peer_ip, s->tls_info);
    /* RFC 3207 4.2: forget everything learned before TLS; the client must
     * send EHLO again. */
    smtpd_reset_transaction(s);
    s->helo[0] = '\0';
    s->esmtp = 0;
    smtpd_enter_state(s, SMTPD_S_INIT);
    conn_touch(c); /* the first command after TLS gets a whole smtp_timeout */
}

static void
smtpd_on_timeout(struct conn *c)
{
    struct smtpd_session *s = c->data;

    if (s->state == SMTPD_S_COMMIT || s->state == SMTPD_S_SPILL) {
        conn_touch(c); /* our own disk is slow; not the client's fault */
        return;
    }
    if (s->state == SMTPD_S_QUIT || c->close_after_write) {
        /* The last replies were never read: give up on them. */
        conn_close(c);
        return;
    }
    log_info("timeout after %s from unknown[%s]", smtpd_state_names[s->state], c->peer_ip);
    if (s->state != SMTPD_S_TLS) {
        smtpd_reply(s, 421, "4.4.2 %s Error: timeout exceeded", smtpd_cfg(s)->hostname);
        smtpd_flush(s);
    }
    smtpd_enter_state(s, SMTPD_S_QUIT);
    conn_close_after_write(c);
}

static void
smtpd_on_close(struct conn *c)
{
    struct smtpd_session *s = c->data;
    struct smtpd_server *srv = s->srv;

    smtpd_server_session_gone(srv, s);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else if (srv->sessions == s)
        srv->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    s->closed = 1;
    smtpd_maybe_free(s);
}

/* ---- lifecycle ---- */

struct smtpd_session *
smtpd_session_new(struct smtpd_server *srv)
{
    struct smtpd_session *s = xcalloc(1, sizeof(*s));

    s->srv = srv;
    s->tmpfd = -1;
    if (conn_init(srv->loop, &s->conn, &smtpd_conn_ops, s) != 0) {
        /* Handles that did initialise are closed by conn_close. */
    }
    s->next = srv->sessions;
    if (srv->sessions != NULL)
        srv->sessions->prev = s;
    srv->sessions = s;
    return s;
}

void
smtpd_session_start(struct smtpd_session *s)
{
    smtpd_reply(s, 220, "%s ESMTP mx2", smtpd_cfg(s)->hostname);
    smtpd_flush(s);
}

void
smtpd_session_refuse(struct smtpd_session *s, int err)
{
    const char *ecode, *text;
    int code = mx2_err_smtp(err, &ecode, &text);

    smtpd_reply(s, code, "%s %s %s", ecode, smtpd_cfg(s)->hostname, text);
    smtpd_flush(s);
    smtpd_enter_state(s, SMTPD_S_QUIT);
    conn_close_after_write(&s->conn);
}

void
smtpd_session_abort(struct smtpd_session *s)
{
    conn_close(&s->conn);
}

void
smtpd_session_shutdown(struct smtpd_session *s)
{
    switch (s->state) {
    case SMTPD_S_DATA:
    case SMTPD_S_SPILL:
    case SMTPD_S_COMMIT:
        s->stop_after = 1;
        return;
    default:
        break;
    }
    if (s->conn.closing || s->state == SMTPD_S_QUIT)
        return;
    if (s->state != SMTPD_S_TLS) {
        smtpd_reply(s, 421, "4.3.2 %s Service shutting down", smtpd_cfg(s)->hostname);
        smtpd_flush(s);
    }
    smtpd_enter_state(s, SMTPD_S_QUIT);
    conn_close_after_write(&s->conn);
}
