/*
 * mx2ctl.c - mx2's operator tool (SPEC.md "mx2ctl").
 *
 *   mx2ctl [-c FILE] queue [--json]      (also: mx2ctl mailq, or run as mailq)
 *   mx2ctl [-c FILE] show ID
 *   mx2ctl [-c FILE] export (--mbox FILE | --maildir DIR) [ID...]
 *   mx2ctl [-c FILE] flush [--wait]
 *   mx2ctl [-c FILE] delete ID... | delete --all
 *   mx2ctl [-c FILE] hold ID...
 *   mx2ctl [-c FILE] release ID...
 *   mx2ctl [-c FILE] stats [--json]
 *   mx2ctl -h | --help | --version
 *
 * `queue`, `show` and `export` read the spool directly (SPOOL_RDONLY: LMDB
 * readers never block mx2d's writer, so they work whether mx2d runs or
 * not). flush, delete, hold, release and stats talk to the running daemon
 * over `control_socket` (relay/common/ctlproto.h): the daemon owns the
 * queue's in-memory index and its writer, so a change made behind its back
 * would be lost or fought over. When it is not running they exit 1 with
 * "mx2ctl: mx2d is not running (cannot connect to SOCKET)"; a socket we may
 * not open gives "mx2ctl: SOCKET: permission denied" and exit 1.
 *
 * Per-ID commands go on after an ID that fails: each success is printed
 * on stdout ("ID: deleted"), each failure on stderr ("mx2ctl: ID: no such
 * message"), and any failure makes the exit status 1. `delete --all`
 * prints every ID it deleted and "deleted N messages".
 *
 * stats without a daemon: exit 1 (as the other daemon commands), because
 * half of the figures (counters since start, primary state, connections)
 * exist only in the daemon; `queue` gives the spool's view.
 *
 * Output follows Postfix so habits carry over:
 * - `queue` is shaped like mailq: "ID[*!]  SIZE  ARRIVAL  SENDER  (state)",
 *   then each pending recipient, preceded by its last error in parentheses
 *   (one parenthesised line per distinct error, as Postfix groups them),
 *   a blank line, and "-- N Kbytes in M Requests." ("Mail queue is empty").
 *   The mark after the ID is Postfix's: '*' active, '!' on hold, ' '
 *   deferred; the state is also spelled out. The null sender <> shows as
 *   MAILER-DAEMON, as in Postfix.
 * - `queue --json` prints one JSON object per message and line (like
 *   `postqueue -j`): id, size, arrival_time (unix seconds), sender ("" for
 *   <>), state, recipients [{address, state, last_error}] (all of them, each
 *   with its state).
 * - `show` is shaped like `postcat -q`: the envelope records, then the
 *   message as queued with the SMTP dot-stuffing undone and CRLF shown as LF.
 *
 * A record that fails to decode is listed as corrupt (never trusted, never
 * skipped silently), reported on stderr, and makes the exit status 1.
 *
 * Exit codes (SPEC.md "Programs"): 0 ok; 1 operational failure (no spool,
 * unknown ID, corrupt record, command not available); 2 usage error or a
 * configuration file that does not parse.
 */
#include "config.h"
#include "ctlproto.h"
#include "envelope.h"
#include "err.h"
#include "export.h"
#include "spool.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef MX2_VERSION
#define MX2_VERSION "unknown"
#endif

#define MX2CTL_EXIT_FAIL 1
#define MX2CTL_EXIT_USAGE 2

static const char mx2ctl_usage_text[] =
    "usage: mx2ctl [-c FILE] COMMAND [ARGS]\n"
    "       mx2ctl -h | --help | --version\n"
    "\n"
    "  -c FILE        configuration file (default " MX2_DEFAULT_CONFIG ")\n"
    "\n"
    "commands:\n"
    "  queue [--json]   list the queue like mailq (alias: mailq); --json prints\n"
    "                   one JSON object per message and line\n"
    "  show ID          print a message's envelope and contents (like postcat -q)\n"
    "  flush [--wait]   retry deferred mail now; --wait blocks until that round\n"
    "                   ends and prints delivered/deferred/bounced counts\n"
    "  delete ID...|--all   remove messages (no bounce)\n"
    "  hold ID...       park messages out of delivery\n"
    "  release ID...    put held messages back, due now\n"
    "  export (--mbox FILE | --maildir DIR) [ID...]\n"
    "                   copy queued mail (all, or the IDs given) out\n"
    "  stats [--json]   counters and queue figures from the daemon\n"
    "\n"
    "queue, show and export read the spool directly and work while mx2d is\n"
    "stopped; the other commands need the running daemon.\n";

static void
mx2ctl_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void
mx2ctl_usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("mx2ctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (try mx2ctl -h)\n", stderr);
    exit(MX2CTL_EXIT_USAGE);
}

/* ---- configuration and spool ---- */

/* Load the config into *cfg; exits on failure. */
static void
mx2ctl_load_config(const char *conf, struct mx2_config *cfg)
{
    struct config_errors errs = {0};
    int rc;

    config_defaults(cfg);
    rc = config_load(conf, cfg, &errs);
    if (rc != 0) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "mx2ctl: %s\n", errs.lines[i]);
        if (errs.count == 0)
            fprintf(stderr, "mx2ctl: %s: %s\n", conf, mx2_strerror(rc));
        config_errors_free(&errs);
        config_free(cfg);
        exit(rc == MX2_E_CONFIG ? MX2CTL_EXIT_USAGE : MX2CTL_EXIT_FAIL);
    }
    config_errors_free(&errs);
}

/* Load the config and open the spool read-only; exits on failure. */
static struct spool *
mx2ctl_open_spool(const char *conf)
{
    struct mx2_config cfg;
    struct spool *sp;
    int rc;

    mx2ctl_load_config(conf, &cfg);
    rc = spool_open(cfg.spool_dir, SPOOL_RDONLY, &sp);
    if (rc != 0) {
        if (rc == -ENOENT)
            fprintf(stderr, "mx2ctl: %s: no queue there (spool_dir of %s; mx2d never ran?)\n",
                    cfg.spool_dir, conf);
        else
            fprintf(stderr, "mx2ctl: %s: cannot open the queue: %s\n", cfg.spool_dir,
                    mx2_strerror(rc));
        config_free(&cfg);
        exit(MX2CTL_EXIT_FAIL);
    }
    config_free(&cfg);
    return sp;
}

/* ---- formatting helpers ---- */

enum mx2ctl_state { MX2CTL_ACTIVE, MX2CTL_DEFERRED, MX2CTL_HOLD };

/* Postfix's words: a message on hold; one that has failed before and waits
 * for its next attempt (deferred); otherwise it is up for delivery (active). */
static enum mx2ctl_state
mx2ctl_msg_state(const struct envelope *e)
{
    if (e->flags & ENVELOPE_F_HOLD)
        return MX2CTL_HOLD;
    if (e->attempts > 0 || e->first_failure != 0)
        return MX2CTL_DEFERRED;
    for (size_t i = 0; i < e->nrcpt; i++)
        if (e->rcpts[i].state == ENVELOPE_RCPT_DEFERRED)
            return MX2CTL_DEFERRED;
    return MX2CTL_ACTIVE;
}

static const char *const mx2ctl_state_names[] = {"active", "deferred", "hold"};
static const char mx2ctl_state_marks[] = {'*', ' ', '!'};

/* Local time as mailq ("Tue Nov 14 22:13:20") or postcat (with the year). */
static void
mx2ctl_time(int64_t t, int with_year, char *buf, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    size_t n = 0;

    if (localtime_r(&tt, &tm) != NULL)
        n = with_year ? strftime(buf, len, "%a %b %e %H:%M:%S %Y", &tm)
                      : strftime(buf, len, "%a %b %e %H:%M:%S", &tm);
    if (n == 0)
        snprintf(buf, len, "%lld", (long long)t);
}

/* A JSON string: escapes quote, backslash and control characters; passes
 * valid UTF-8 through and replaces any invalid byte with U+FFFD, so the
 * output is always valid JSON whatever a record holds. */
static void
mx2ctl_json_str(FILE *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");

    fputc('"', out);
    while (*p) {
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            fputc('\\', out);
            fputc((int)c, out);
            p++;
        } else if (c < 0x20 || c == 0x7f) {
            switch (c) {
            case '\n': fputs("\\n", out); break;
            case '\r': fputs("\\r", out); break;
            case '\t': fputs("\\t", out); break;
            default: fprintf(out, "\\u%04x", c); break;
            }
            p++;
        } else if (c < 0x80) {
            fputc((int)c, out);
            p++;
        } else {
            /* Length of a valid UTF-8 sequence starting here, or 0. */
            size_t n = 0;
            uint32_t cp = 0;
            if (c >= 0xc2 && c <= 0xdf) {
                n = 2;
                cp = c & 0x1f;
            } else if (c >= 0xe0 && c <= 0xef) {
                n = 3;
                cp = c & 0x0f;
            } else if (c >= 0xf0 && c <= 0xf4) {
                n = 4;
                cp = c & 0x07;
            }
            for (size_t i = 1; i < n; i++) {
                if ((p[i] & 0xc0) != 0x80) {
                    n = 0;
                    break;
                }
                cp = (cp << 6) | (p[i] & 0x3f);
            }
            /* Refuse overlong forms, surrogates and code points past U+10FFFF. */
            if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
                (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
                n = 0;
            if (n == 0) {
                fputs("\\ufffd", out);
                p++;
            } else {
                fwrite(p, 1, n, out);
                p += n;
            }
        }
    }
    fputc('"', out);
}

/* ---- queue ---- */

struct mx2ctl_queue {
    int json;
    uint64_t messages, bytes, corrupt;
};

static void
mx2ctl_queue_header(void)
{
    printf("%-14s %8s %-19s  %s\n", "-Queue ID-", "--Size--", "---Arrival Time----",
           "-Sender/Recipient-------");
}

static int
mx2ctl_queue_text(struct mx2ctl_queue *q, const char *qid, const struct envelope *e)
{
    char when[64];
    const char *last = NULL;
    enum mx2ctl_state st = mx2ctl_msg_state(e);

    if (q->messages == 1)
        mx2ctl_queue_header();
    mx2ctl_time(e->arrival_sec, 0, when, sizeof(when));
    printf("%-13s%c %8llu %s  %s  (%s)\n", qid, mx2ctl_state_marks[st],
           (unsigned long long)e->size, when, e->sender[0] ? e->sender : "MAILER-DAEMON",
           mx2ctl_state_names[st]);
    for (size_t i = 0; i < e->nrcpt; i++) {
        const struct envelope_rcpt *r = &e->rcpts[i];
        if (r->state != ENVELOPE_RCPT_PENDING && r->state != ENVELOPE_RCPT_DEFERRED)
            continue;
        if (r->last_error[0] != '\0' && (last == NULL || strcmp(last, r->last_error) != 0))
            printf("(%s)\n", r->last_error);
        last = r->last_error;
        printf("%45s%s\n", "", r->address);
    }
    printf("\n");
    return 0;
}

static int
mx2ctl_queue_json(struct mx2ctl_queue *q, const char *qid, const struct envelope *e)
{
    printf("{\"id\":");
    mx2ctl_json_str(stdout, qid);
    printf(",\"size\":%llu,\"arrival_time\":%lld,\"sender\":", (unsigned long long)e->size,
           (long long)e->arrival_sec);
    mx2ctl_json_str(stdout, e->sender);
    printf(",\"state\":\"%s\",\"recipients\":[", mx2ctl_state_names[mx2ctl_msg_state(e)]);
    /* SPEC: each pending recipient, as in the text listing; one already
     * delivered or bounced is no longer the queue's business. */
    for (size_t i = 0, n = 0; i < e->nrcpt; i++) {
        const struct envelope_rcpt *r = &e->rcpts[i];
        if (r->state != ENVELOPE_RCPT_PENDING && r->state != ENVELOPE_RCPT_DEFERRED)
            continue;
        printf("%s{\"address\":", n++ ? "," : "");
        mx2ctl_json_str(stdout, r->address);
        printf(",\"state\":\"%s\",\"last_error\":", envelope_rcpt_state_name(r->state));
        mx2ctl_json_str(stdout, r->last_error);
        printf("}");
    }
    printf("]}\n");
    return 0;
}

static int
mx2ctl_queue_cb(void *arg, const char *qid, struct envelope *e, int err)
{
    struct mx2ctl_queue *q = arg;

    q->messages++;
    if (e == NULL) {
        q->corrupt++;
        fprintf(stderr, "mx2ctl: %s: corrupt queue record refused: %s\n", qid,
                mx2_strerror(err));
        if (q->json) {
            printf("{\"id\":");
            mx2ctl_json_str(stdout, qid);
            printf(",\"state\":\"corrupt\"}\n");
        } else {
            if (q->messages == 1)
                mx2ctl_queue_header();
            printf("%-13s? (corrupt queue record)\n\n", qid);
        }
        return 0;
    }
    q->bytes += e->size;
    return q->json ? mx2ctl_queue_json(q, qid, e) : mx2ctl_queue_text(q, qid, e);
}

/* Quarantined records are not in the queue any more, so the listing cannot
 * show them; say on stderr that some exist (stdout keeps its format: the
 * total line stays last). */
static void
mx2ctl_quarantine_note(const char *spooldir)
{
    char path[4096];
    DIR *d;
    struct dirent *de;
    size_t n = 0;

    snprintf(path, sizeof(path), "%s/quarantine", spooldir);
    if ((d = opendir(path)) == NULL)
        return;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    if (n > 0)
        fprintf(stderr,
                "mx2ctl: %zu item%s in %s: damaged records or a damaged queue set aside at "
                "startup, not delivered (queue/README.md, \"Damage\")\n",
                n, n == 1 ? "" : "s", path);
}

static int
mx2ctl_cmd_queue(const char *conf, int argc, char **argv)
{
    struct mx2ctl_queue q = {0};
    struct spool *sp;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            q.json = 1;
        else
            mx2ctl_usage_error("queue: unexpected argument '%s'", argv[i]);
    }
    sp = mx2ctl_open_spool(conf);
    rc = spool_walk(sp, mx2ctl_queue_cb, &q);
    mx2ctl_quarantine_note(spool_dir(sp));
    spool_close(sp);
    if (rc != 0) {
        fflush(stdout);
        fprintf(stderr, "mx2ctl: cannot read the queue: %s\n", mx2_strerror(rc));
        return MX2CTL_EXIT_FAIL;
    }
    if (!q.json) {
        if (q.messages == 0)
            printf("Mail queue is empty\n");
        else
            printf("-- %llu Kbytes in %llu Request%s.\n",
                   (unsigned long long)((q.bytes + 1023) / 1024),
                   (unsigned long long)q.messages, q.messages == 1 ? "" : "s");
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "mx2ctl: write error on standard output\n");
        return MX2CTL_EXIT_FAIL;
    }
    return q.corrupt ? MX2CTL_EXIT_FAIL : 0;
}

/* ---- show ---- */

/* Write a piece of the unstuffed message with CRLF shown as LF. */
static int
mx2ctl_show_piece(void *arg, const unsigned char *p, size_t n)
{
    FILE *out = arg;

    if (n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n') {
        fwrite(p, 1, n - 2, out);
        fputc('\n', out);
    } else {
        fwrite(p, 1, n, out);
    }
    return ferror(out) ? -EIO : 0;
}

static void
mx2ctl_notify(unsigned n, char *buf, size_t len)
{
    static const struct {
        unsigned bit;
        const char *name;
    } bits[] = {{ENVELOPE_NOTIFY_NEVER, "NEVER"},
                {ENVELOPE_NOTIFY_SUCCESS, "SUCCESS"},
                {ENVELOPE_NOTIFY_FAILURE, "FAILURE"},
                {ENVELOPE_NOTIFY_DELAY, "DELAY"}};

    buf[0] = '\0';
    if (n == 0) {
        snprintf(buf, len, "(default)");
        return;
    }
    for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]); i++)
        if (n & bits[i].bit) {
            size_t used = strlen(buf);
            snprintf(buf + used, len - used, "%s%s", used ? "," : "", bits[i].name);
        }
}

static void
mx2ctl_show_envelope(const struct envelope *e)
{
    char t[64];

    printf("*** ENVELOPE RECORDS %s ***\n", e->qid);
    printf("queue_id: %s\n", e->qid);
    printf("message_size: %llu\n", (unsigned long long)e->size);
    mx2ctl_time(e->arrival_sec, 1, t, sizeof(t));
    printf("message_arrival_time: %s (%lld.%06u)\n", t, (long long)e->arrival_sec,
           (unsigned)e->arrival_usec);
    printf("state: %s\n", mx2ctl_state_names[mx2ctl_msg_state(e)]);
    printf("sender: %s\n", e->sender);
    printf("client_address: %s\n", e->client_addr);
    printf("client_name: %s\n", e->client_name);
    printf("helo_name: %s\n", e->helo);
    printf("protocol: %s\n", envelope_proto_name(e->proto));
    if (e->tls_cipher[0])
        printf("tls: %s\n", e->tls_cipher);
    printf("flags:%s%s%s%s%s\n", e->flags & ENVELOPE_F_SMTPUTF8 ? " SMTPUTF8" : "",
           e->flags & ENVELOPE_F_8BITMIME ? " 8BITMIME" : "",
           e->flags & ENVELOPE_F_HOLD ? " HOLD" : "",
           e->flags & ENVELOPE_F_WARNED ? " DELAY-WARNED" : "", e->flags ? "" : " none");
    if (e->ret != ENVELOPE_RET_NONE)
        printf("dsn_ret: %s\n", envelope_ret_name(e->ret));
    if (e->envid[0])
        printf("dsn_envid: %s\n", e->envid);
    printf("attempts: %u\n", (unsigned)e->attempts);
    if (e->first_failure) {
        mx2ctl_time(e->first_failure, 1, t, sizeof(t));
        printf("first_failure: %s\n", t);
    }
    if (e->next_attempt) {
        mx2ctl_time(e->next_attempt, 1, t, sizeof(t));
        printf("next_attempt: %s\n", t);
    }
    for (size_t i = 0; i < e->nrcpt; i++) {
        const struct envelope_rcpt *r = &e->rcpts[i];
        char nt[64];
        printf("recipient: %s\n", r->address);
        printf("  state: %s%s, attempts: %u", envelope_rcpt_state_name(r->state),
               r->flags & ENVELOPE_RF_DSN_SENT ? " (DSN sent)" : "", (unsigned)r->attempts);
        if (r->last_attempt) {
            mx2ctl_time(r->last_attempt, 1, t, sizeof(t));
            printf(", last attempt: %s", t);
        }
        printf("\n");
        if (r->orcpt[0])
            printf("  orcpt: %s\n", r->orcpt);
        mx2ctl_notify(r->notify, nt, sizeof(nt));
        printf("  notify: %s\n", nt);
        if (r->last_error[0])
            printf("  last_error: %s\n", r->last_error);
    }
}

static int
mx2ctl_cmd_show(const char *conf, int argc, char **argv)
{
    struct spool *sp;
    struct envelope e;
    struct spool_body b;
    char qid[QID_SIZE];
    int rc;

    if (argc != 2)
        mx2ctl_usage_error("show: expected one queue ID");
    /* IDs are upper case; accept a pasted lower-case one. */
    snprintf(qid, sizeof(qid), "%s", argv[1]);
    for (char *p = qid; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    sp = mx2ctl_open_spool(conf);
    rc = strlen(argv[1]) == QID_LEN ? spool_get(sp, qid, &e) : MX2_E_NOT_FOUND;
    if (rc == MX2_E_NOT_FOUND || rc == MX2_E_INVAL) {
        fprintf(stderr, "mx2ctl: %s: no such message\n", argv[1]);
        spool_close(sp);
        return MX2CTL_EXIT_FAIL;
    }
    if (rc != 0) {
        fprintf(stderr, "mx2ctl: %s: %s\n", argv[1],
                rc == MX2_E_CORRUPT ? "corrupt queue record refused" : mx2_strerror(rc));
        spool_close(sp);
        return MX2CTL_EXIT_FAIL;
    }
    mx2ctl_show_envelope(&e);
    envelope_free(&e);
    rc = spool_body_open(sp, qid, &b);
    if (rc != 0) {
        fflush(stdout);
        fprintf(stderr, "mx2ctl: %s: message contents missing: %s\n", qid, mx2_strerror(rc));
        spool_close(sp);
        return MX2CTL_EXIT_FAIL;
    }
    printf("*** MESSAGE CONTENTS %s ***\n", qid);
    rc = spool_body_unstuff(b.data, b.len, mx2ctl_show_piece, stdout);
    /* A body always ends with CRLF in the stored format; keep the trailer on
     * its own line even if it does not. */
    if (b.len > 0 && b.data[b.len - 1] != '\n')
        putchar('\n');
    printf("*** MESSAGE FILE END %s ***\n", qid);
    spool_body_close(&b);
    spool_close(sp);
    if (rc != 0 || fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "mx2ctl: write error on standard output\n");
        return MX2CTL_EXIT_FAIL;
    }
    return 0;
}

/* ---- talking to the daemon ---- */

struct mx2ctl_client {
    int fd;
    char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char in[2 * CTLPROTO_LINE_MAX];
    size_t inlen;
};

/* Connect to the control socket named by the config; exits 1 with the
 * SPEC's message when mx2d is not running or the socket is not ours to
 * open. timeout_sec 0: wait as long as the daemon needs (flush --wait). */
static void
mx2ctl_connect(const char *conf, struct mx2ctl_client *cl, int timeout_sec)
{
    struct mx2_config cfg;
    struct sockaddr_un sun;
    int err;

    mx2ctl_load_config(conf, &cfg);
    memset(cl, 0, sizeof(*cl));
    if (strlen(cfg.control_socket) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "mx2ctl: control_socket %s: path too long\n", cfg.control_socket);
        config_free(&cfg);
        exit(MX2CTL_EXIT_FAIL);
    }
    snprintf(cl->sock, sizeof(cl->sock), "%s", cfg.control_socket);
    config_free(&cfg);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, cl->sock, strlen(cl->sock));
    if ((cl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        fprintf(stderr, "mx2ctl: socket: %s\n", strerror(errno));
        exit(MX2CTL_EXIT_FAIL);
    }
    if (connect(cl->fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        err = errno;
        close(cl->fd);
        if (err == EACCES || err == EPERM)
            fprintf(stderr, "mx2ctl: %s: permission denied\n", cl->sock);
        else if (err == ENOENT || err == ECONNREFUSED || err == ENOTDIR)
            fprintf(stderr, "mx2ctl: mx2d is not running (cannot connect to %s)\n", cl->sock);
        else
            fprintf(stderr, "mx2ctl: mx2d is not running (cannot connect to %s: %s)\n", cl->sock,
                    strerror(err));
        exit(MX2CTL_EXIT_FAIL);
    }
    if (timeout_sec > 0) {
        struct timeval tv = {.tv_sec = timeout_sec, .tv_usec = 0};
        setsockopt(cl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(cl->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
}

static void
mx2ctl_lost(struct mx2ctl_client *cl, const char *what)
{
    fprintf(stderr, "mx2ctl: %s: %s\n", cl->sock, what);
    exit(MX2CTL_EXIT_FAIL);
}

static void
mx2ctl_send(struct mx2ctl_client *cl, const char *line, size_t len)
{
    while (len > 0) {
        ssize_t n = send(cl->fd, line, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            mx2ctl_lost(cl, "connection to mx2d lost while sending");
        line += n;
        len -= (size_t)n;
    }
}

/* Read one response line into *r (its text borrowed from cl->in until the
 * next call); exits on a lost connection or a line we cannot parse. */
static void
mx2ctl_recv(struct mx2ctl_client *cl, struct ctlproto_resp *r, size_t *consumed)
{
    size_t linelen;

    if (*consumed > 0) {
        memmove(cl->in, cl->in + *consumed, cl->inlen - *consumed);
        cl->inlen -= *consumed;
        *consumed = 0;
    }
    for (;;) {
        int rc = ctlproto_next_line(cl->in, cl->inlen, &linelen, consumed);
        ssize_t n;
        if (rc == 1)
            break;
        if (rc < 0)
            mx2ctl_lost(cl, "mx2d sent an overlong line");
        n = recv(cl->fd, cl->in + cl->inlen, sizeof(cl->in) - cl->inlen, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            mx2ctl_lost(cl, "mx2d did not answer in time");
        if (n <= 0)
            mx2ctl_lost(cl, "mx2d closed the connection");
        cl->inlen += (size_t)n;
    }
    if (ctlproto_parse_response(cl->in, linelen, r) != 0)
        mx2ctl_lost(cl, "mx2d sent a malformed answer");
}

/* An ERR that is about the request as a whole: print and say so. */
static int
mx2ctl_request_err(const struct ctlproto_resp *r)
{
    if (r->code == CTLPROTO_ERR_SHUTDOWN)
        fprintf(stderr, "mx2ctl: mx2d is shutting down\n");
    else
        fprintf(stderr, "mx2ctl: mx2d refused the request: %d %.*s\n", r->code, (int)r->text_len,
                r->text);
    return MX2CTL_EXIT_FAIL;
}

/* ---- flush ---- */

static int
mx2ctl_cmd_flush(const char *conf, int argc, char **argv)
{
    struct mx2ctl_client cl;
    struct ctlproto_resp r;
    char line[64];
    size_t consumed = 0;
    uint64_t counts[3] = {0, 0, 0};
    int wait = 0, rc = 0, n;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--wait") == 0)
            wait = 1;
        else
            mx2ctl_usage_error("flush: unexpected argument '%s'", argv[i]);
    }
    mx2ctl_connect(conf, &cl, wait ? 0 : 30);
    n = ctlproto_format_request(CTLPROTO_FLUSH, wait ? CTLPROTO_F_WAIT : 0, NULL, 0, line,
                                sizeof(line));
    mx2ctl_send(&cl, line, (size_t)n);
    for (;;) {
        mx2ctl_recv(&cl, &r, &consumed);
        if (r.kind == CTLPROTO_R_END)
            break;
        if (r.kind == CTLPROTO_R_ERR) {
            rc = mx2ctl_request_err(&r);
        } else if (r.kind == CTLPROTO_R_STAT) {
            static const char *const names[] = {"delivered", "deferred", "bounced"};
            for (size_t i = 0; i < 3; i++)
                if (r.text_len == strlen(names[i]) && memcmp(r.text, names[i], r.text_len) == 0)
                    counts[i] = r.value;
        }
    }
    close(cl.fd);
    if (rc == 0) {
        if (wait)
            printf("delivered %llu, deferred %llu, bounced %llu\n", (unsigned long long)counts[0],
                   (unsigned long long)counts[1], (unsigned long long)counts[2]);
        else
            printf("flush started\n");
    }
    return rc;
}

/* ---- delete, hold, release ---- */

#define MX2CTL_IDS_PER_REQUEST 100

static int
mx2ctl_cmd_ids(const char *conf, int argc, char **argv)
{
    enum ctlproto_cmd cmd = strcmp(argv[0], "delete") == 0 ? CTLPROTO_DELETE
                            : strcmp(argv[0], "hold") == 0 ? CTLPROTO_HOLD
                                                           : CTLPROTO_RELEASE;
    const char *done = cmd == CTLPROTO_DELETE ? "deleted"
                       : cmd == CTLPROTO_HOLD ? "held"
                                              : "released";
    struct mx2ctl_client cl;
    struct ctlproto_resp r;
    char line[CTLPROTO_LINE_MAX];
    const char **ids;
    char **owned;
    size_t nids = 0, nowned = 0, consumed = 0;
    uint64_t ok = 0;
    int all = 0, rc = 0;

    for (int i = 1; i < argc; i++) {
        if (cmd == CTLPROTO_DELETE && strcmp(argv[i], "--all") == 0)
            all = 1;
        else if (argv[i][0] == '-')
            mx2ctl_usage_error("%s: unknown option '%s'", argv[0], argv[i]);
        else
            nids++;
    }
    if (all && nids > 0)
        mx2ctl_usage_error("delete: give IDs or --all, not both");
    if (!all && nids == 0)
        mx2ctl_usage_error("%s: expected one or more queue IDs%s", argv[0],
                           cmd == CTLPROTO_DELETE ? " or --all" : "");
    /* Connect before allocating: mx2ctl_connect exits when mx2d is down. */
    mx2ctl_connect(conf, &cl, 60);
    ids = calloc((size_t)argc + 1, sizeof(*ids));
    owned = calloc((size_t)argc + 1, sizeof(*owned));
    if (ids == NULL || owned == NULL) {
        fprintf(stderr, "mx2ctl: out of memory\n");
        rc = MX2CTL_EXIT_FAIL;
        goto out;
    }
    nids = 0;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--all") != 0)
            ids[nids++] = argv[i];
    /* IDs are upper case; accept a pasted lower-case one. A malformed ID
     * cannot be in the queue: report it like any unknown ID and go on. */
    for (size_t i = 0; i < nids; i++) {
        if (strlen(ids[i]) == QID_LEN) {
            char *up = strdup(ids[i]);
            if (up == NULL) {
                fprintf(stderr, "mx2ctl: out of memory\n");
                rc = MX2CTL_EXIT_FAIL;
                goto out;
            }
            for (char *p = up; *p; p++)
                *p = (char)toupper((unsigned char)*p);
            ids[i] = owned[nowned++] = up;
        }
    }
    for (size_t start = 0; all ? start == 0 : start < nids;) {
        const char *batch[MX2CTL_IDS_PER_REQUEST];
        size_t nb = 0;
        int n;
        if (!all) {
            while (start < nids && nb < MX2CTL_IDS_PER_REQUEST) {
                const char *id = ids[start++];
                if (!qid_valid(id)) {
                    fprintf(stderr, "mx2ctl: %s: no such message\n", id);
                    rc = MX2CTL_EXIT_FAIL;
                    continue;
                }
                batch[nb++] = id;
            }
            if (nb == 0)
                continue;
        } else {
            start = 1;
        }
        n = ctlproto_format_request(cmd, all ? CTLPROTO_F_ALL : 0, batch, nb, line, sizeof(line));
        if (n < 0) {
            fprintf(stderr, "mx2ctl: cannot build the request: %s\n", mx2_strerror(n));
            rc = MX2CTL_EXIT_FAIL;
            goto out;
        }
        mx2ctl_send(&cl, line, (size_t)n);
        for (;;) {
            mx2ctl_recv(&cl, &r, &consumed);
            if (r.kind == CTLPROTO_R_END)
                break;
            if (r.kind == CTLPROTO_R_OK) {
                printf("%.*s: %s\n", (int)r.text_len, r.text, done);
                ok++;
            } else if (r.kind == CTLPROTO_R_ERR && r.code == CTLPROTO_ERR_NOT_FOUND) {
                /* "ID no such message" */
                size_t idlen = 0;
                while (idlen < r.text_len && r.text[idlen] != ' ')
                    idlen++;
                fprintf(stderr, "mx2ctl: %.*s: no such message\n", (int)idlen, r.text);
                rc = MX2CTL_EXIT_FAIL;
            } else if (r.kind == CTLPROTO_R_ERR && r.code == CTLPROTO_ERR_INTERNAL) {
                fprintf(stderr, "mx2ctl: %.*s\n", (int)r.text_len, r.text);
                rc = MX2CTL_EXIT_FAIL;
            } else if (r.kind == CTLPROTO_R_ERR) {
                rc = mx2ctl_request_err(&r);
            }
        }
    }
    if (all)
        printf("deleted %llu message%s\n", (unsigned long long)ok, ok == 1 ? "" : "s");
out:
    /* Every exit after the connect comes here, so nothing leaks on the
     * error paths either. */
    close(cl.fd);
    for (size_t i = 0; i < nowned; i++)
        free(owned[i]);
    free(owned);
    free(ids);
    if (fflush(stdout) != 0)
        rc = MX2CTL_EXIT_FAIL;
    return rc;
}

/* ---- stats ---- */

static int
mx2ctl_cmd_stats(const char *conf, int argc, char **argv)
{
    struct mx2ctl_client cl;
    struct ctlproto_resp r;
    char line[64];
    size_t consumed = 0;
    int json = 0, rc = 0, n, first = 1;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else
            mx2ctl_usage_error("stats: unexpected argument '%s'", argv[i]);
    }
    mx2ctl_connect(conf, &cl, 30);
    n = ctlproto_format_request(CTLPROTO_STATS, 0, NULL, 0, line, sizeof(line));
    mx2ctl_send(&cl, line, (size_t)n);
    if (json)
        printf("{");
    for (;;) {
        mx2ctl_recv(&cl, &r, &consumed);
        if (r.kind == CTLPROTO_R_END)
            break;
        if (r.kind == CTLPROTO_R_ERR) {
            rc = mx2ctl_request_err(&r);
        } else if (r.kind == CTLPROTO_R_STAT) {
            /* spool_free_bytes is unknown (all ones) until first measured. */
            if (r.value == UINT64_MAX)
                continue;
            if (json)
                printf("%s\"%.*s\":%llu", first ? "" : ",", (int)r.text_len, r.text,
                       (unsigned long long)r.value);
            else
                printf("%-26.*s %llu\n", (int)r.text_len, r.text, (unsigned long long)r.value);
            first = 0;
        }
    }
    if (json)
        printf("}\n");
    close(cl.fd);
    if (fflush(stdout) != 0)
        rc = MX2CTL_EXIT_FAIL;
    return rc;
}

/* ---- export ---- */

struct mx2ctl_idlist {
    char (*ids)[QID_SIZE];
    size_t n;
    uint64_t corrupt;
};

static int
mx2ctl_collect_cb(void *arg, const char *qid, struct envelope *e, int err)
{
    struct mx2ctl_idlist *l = arg;
    char(*nids)[QID_SIZE];

    if (e == NULL) {
        fprintf(stderr, "mx2ctl: %s: corrupt queue record refused: %s\n", qid, mx2_strerror(err));
        l->corrupt++;
        return 0;
    }
    nids = realloc(l->ids, (l->n + 1) * sizeof(*l->ids));
    if (nids == NULL)
        return -ENOMEM;
    l->ids = nids;
    snprintf(l->ids[l->n++], QID_SIZE, "%s", qid);
    return 0;
}

static int
mx2ctl_cmd_export(const char *conf, int argc, char **argv)
{
    const char *mbox = NULL, *maildir = NULL;
    int have_dest = 0;
    struct mx2ctl_idlist l = {0};
    struct export_mbox mb = {NULL, -1};
    struct spool *sp;
    char host[256];
    uint64_t exported = 0;
    int rc = 0, failed = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mbox") == 0 || strcmp(argv[i], "--maildir") == 0) {
            if (i + 1 >= argc)
                mx2ctl_usage_error("export: %s needs an argument", argv[i]);
            /* A flag, not mbox/maildir != NULL: comparing argv[] entries
             * with NULL makes clang-analyzer believe one may be NULL. */
            if (have_dest)
                mx2ctl_usage_error("export: give one of --mbox FILE or --maildir DIR");
            have_dest = 1;
            if (strcmp(argv[i], "--mbox") == 0)
                mbox = argv[++i];
            else
                maildir = argv[++i];
        } else if (argv[i][0] == '-') {
            mx2ctl_usage_error("export: unknown option '%s'", argv[i]);
        }
    }
    if (!have_dest)
        mx2ctl_usage_error("export: give --mbox FILE or --maildir DIR");
    /* Open before allocating: mx2ctl_open_spool exits on failure. */
    sp = mx2ctl_open_spool(conf);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mbox") == 0 || strcmp(argv[i], "--maildir") == 0) {
            i++;
        } else if (strlen(argv[i]) != QID_LEN) {
            fprintf(stderr, "mx2ctl: %s: no such message\n", argv[i]);
            failed++;
        } else {
            char(*nids)[QID_SIZE] = realloc(l.ids, (l.n + 1) * sizeof(*l.ids));
            if (nids == NULL) {
                fprintf(stderr, "mx2ctl: out of memory\n");
                spool_close(sp);
                free(l.ids);
                return MX2CTL_EXIT_FAIL;
            }
            l.ids = nids;
            snprintf(l.ids[l.n], QID_SIZE, "%s", argv[i]);
            for (char *p = l.ids[l.n]; *p; p++)
                *p = (char)toupper((unsigned char)*p);
            l.n++;
        }
    }
    if (l.n == 0 && failed == 0) {
        int wrc = spool_walk(sp, mx2ctl_collect_cb, &l);
        if (wrc != 0) {
            fprintf(stderr, "mx2ctl: cannot read the queue: %s\n", mx2_strerror(wrc));
            spool_close(sp);
            free(l.ids);
            return MX2CTL_EXIT_FAIL;
        }
        failed += l.corrupt != 0;
    }
    if (mbox != NULL)
        rc = export_mbox_open(mbox, &mb);
    else
        rc = export_maildir_init(maildir);
    if (rc != 0) {
        fprintf(stderr, "mx2ctl: %s: %s\n", mbox ? mbox : maildir, mx2_strerror(rc));
        spool_close(sp);
        free(l.ids);
        return MX2CTL_EXIT_FAIL;
    }
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    for (size_t i = 0; i < l.n; i++) {
        struct envelope e;
        struct spool_body b;
        const char *id = l.ids[i];

        rc = qid_valid(id) ? spool_get(sp, id, &e) : MX2_E_NOT_FOUND;
        if (rc != 0) {
            fprintf(stderr, "mx2ctl: %s: %s\n", id,
                    rc == MX2_E_NOT_FOUND ? "no such message" : mx2_strerror(rc));
            failed++;
            continue;
        }
        rc = spool_body_open(sp, id, &b);
        if (rc == 0) {
            if (mbox != NULL)
                rc = export_mbox_append(&mb, &e, b.data, b.len);
            else
                rc = export_maildir_write(maildir, host, (int64_t)time(NULL), &e, b.data, b.len,
                                          NULL, 0);
            spool_body_close(&b);
        }
        envelope_free(&e);
        if (rc != 0) {
            fprintf(stderr, "mx2ctl: %s: %s\n", id, mx2_strerror(rc));
            failed++;
            if (rc != MX2_E_NOT_FOUND)
                break; /* an I/O error on the output will not get better */
            continue;
        }
        exported++;
    }
    if (mbox != NULL && (rc = export_mbox_close(&mb)) != 0) {
        fprintf(stderr, "mx2ctl: %s: %s\n", mbox, mx2_strerror(rc));
        failed++;
    }
    spool_close(sp);
    free(l.ids);
    printf("exported %llu message%s to %s %s\n", (unsigned long long)exported,
           exported == 1 ? "" : "s", mbox ? "mbox" : "Maildir", mbox ? mbox : maildir);
    return failed ? MX2CTL_EXIT_FAIL : 0;
}

static const struct {
    const char *name;
    int (*run)(const char *conf, int argc, char **argv);
} mx2ctl_commands[] = {
    {"queue", mx2ctl_cmd_queue}, {"mailq", mx2ctl_cmd_queue},   {"show", mx2ctl_cmd_show},
    {"flush", mx2ctl_cmd_flush}, {"delete", mx2ctl_cmd_ids},    {"hold", mx2ctl_cmd_ids},
    {"release", mx2ctl_cmd_ids}, {"export", mx2ctl_cmd_export}, {"stats", mx2ctl_cmd_stats},
};

int
main(int argc, char **argv)
{
    const char *conf = MX2_DEFAULT_CONFIG;
    const char *prog = strrchr(argv[0], '/');
    char **args = calloc((size_t)argc + 2, sizeof(*args));
    int nargs = 0, rc;

    prog = prog ? prog + 1 : argv[0];
    if (args == NULL) {
        fprintf(stderr, "mx2ctl: out of memory\n");
        return MX2CTL_EXIT_FAIL;
    }
    /* Invoked as mailq (or the installed mx2-mailq link): `queue`, as
     * Postfix's mailq is `postqueue -p`. */
    if (strcmp(prog, "mailq") == 0 || strcmp(prog, "mx2-mailq") == 0)
        args[nargs++] = "queue";
    /* -c FILE, -h and --version may come before or after the command. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0) {
            if (i + 1 >= argc)
                mx2ctl_usage_error("option -c needs an argument");
            conf = argv[++i];
        } else if (strncmp(argv[i], "-c", 2) == 0 && argv[i][2] != '\0') {
            conf = argv[i] + 2;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(mx2ctl_usage_text, stdout);
            free(args);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("mx2ctl %s\n", MX2_VERSION);
            free(args);
            return 0;
        } else if (nargs == 0 && argv[i][0] == '-') {
            mx2ctl_usage_error("unknown option '%s'", argv[i]);
        } else {
            args[nargs++] = argv[i];
        }
    }
    if (nargs == 0)
        mx2ctl_usage_error("missing command (queue, show, flush, delete, hold, release, "
                           "export, stats)");
    for (size_t i = 0; i < sizeof(mx2ctl_commands) / sizeof(mx2ctl_commands[0]); i++) {
        if (strcmp(args[0], mx2ctl_commands[i].name) == 0) {
            rc = mx2ctl_commands[i].run(conf, nargs, args);
            free(args);
            return rc;
        }
    }
    mx2ctl_usage_error("unknown command '%s'", args[0]);
}
