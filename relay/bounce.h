/*
 * bounce.h - RFC 3464 delivery status notifications (bounces, delay
 * warnings, success reports), composed in memory. Pure: no I/O, no clock
 * (times come in the info struct), no globals.
 *
 * The DSN is a multipart/report; report-type=delivery-status (RFC 6522)
 * with three parts: a text/plain explanation naming each recipient and its
 * diagnostic; message/delivery-status (RFC 3464) with Reporting-MTA,
 * Original-Envelope-Id (when ENVID was given), Arrival-Date and, per
 * recipient, Original-Recipient (when ORCPT was given), Final-Recipient,
 * Action, Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date and
 * Will-Retry-Until (delayed only); then the original header section as
 * text/rfc822-headers, or the whole original as message/rfc822 for RET=FULL
 * when it is not larger than full_limit. Headers: From MAILER-DAEMON@hostname
 * (Mail Delivery System), To <sender>, Subject, Date, Message-ID,
 * Auto-Submitted: auto-replied (RFC 3834), MIME-Version, Content-Type. The
 * envelope sender of the DSN is <> (the caller's business).
 *
 * The output is the spool's stored wire form, ready for spool_commit: CRLF
 * line ends, no bare CR or LF, every line starting with '.' dot-stuffed, no
 * line longer than 998 octets (long diagnostics are folded, long original
 * header lines split), and no final ".\r\n". The original is read in that same
 * stored form and unstuffed before it is quoted.
 *
 * Callers: the flusher (loop thread; composing is CPU only and bounded by
 * full_limit + headers). Thread-safe on distinct outputs.
 *
 * Ownership: everything in info and rcpts is borrowed for the call; out is
 * appended to (not reset) and stays the caller's.
 *
 * Errors: 0, or MX2_E_INVAL (NULL info/out/hostname/sender, n == 0, or a
 * recipient without an address); on error out is left as it was.
 */
#ifndef MX2_BOUNCE_H
#define MX2_BOUNCE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* BOUNCE_RELAYED: RFC 3461 6.2.2 — a recipient with NOTIFY=SUCCESS was
 * handed to a primary that does not offer DSN, so no later notice will come. */
enum bounce_kind { BOUNCE_FAILED = 0, BOUNCE_DELAYED, BOUNCE_DELIVERED, BOUNCE_RELAYED };

struct bounce_rcpt {
    const char *address;    /* final recipient (envelope RCPT) */
    const char *orcpt;      /* ORCPT value as stored ("rfc822;x@y", xtext) or NULL/"" */
    const char *status;     /* "5.1.1", "4.4.1", "5.4.7" ...; NULL/"" -> by kind */
    const char *diagnostic; /* remote reply text ("550 5.1.1 user unknown") or NULL */
    const char *remote_mta; /* host name of the primary that answered, or NULL */
    int64_t last_attempt;   /* unix seconds, 0 = none */
};

struct bounce_info {
    enum bounce_kind kind;
    const char *hostname; /* Reporting-MTA, From: MAILER-DAEMON@hostname, Message-ID */
    const char *qid;      /* original queue id (X-Postfix-Queue-ID-like field) */
    const char *sender;   /* original envelope sender (the DSN's To:) */
    const char *envid;    /* ENVID (xtext) or NULL/"" */
    int ret;              /* enum envelope_ret: NONE/HDRS -> headers only; FULL ->
                             whole message as message/rfc822 when it is not larger
                             than full_limit, else headers */
    int64_t arrival;      /* Arrival-Date */
    int64_t now;          /* Date: */
    const char *reason;   /* human sentence for the text part, e.g. "the primary mail
                             server rejected it"; NULL -> a default by kind */
    size_t full_limit;    /* e.g. 10 MiB; 0 = no limit */
    int64_t retry_until;  /* BOUNCE_DELAYED: Will-Retry-Until (arrival + queue_lifetime);
                             0 = omit */
};

/* Compose the DSN (see the file comment) and append it to out.
 * orig/orig_len: the stored original message (wire form, dot-stuffed); may be
 * NULL/0 (then an empty header part). Returns 0 or MX2_E_INVAL. */
int bounce_compose(const struct bounce_info *info, const struct bounce_rcpt *rcpts, size_t n,
                   const unsigned char *orig, size_t orig_len, struct buf *out);

/* The enhanced status for a reply: ecode when it is a valid "X.Y.Z"
 * (RFC 3463: class 2/4/5, subject 0..999, detail 0..999) whose class matches
 * the reply code's first digit; else "5.0.0" for 5xx, "4.0.0" for 4xx,
 * "2.0.0" for 2xx, "4.0.0" for anything else. Written to buf (len >= 12 is
 * always enough); returns buf. ecode may be NULL. */
const char *bounce_status_from_reply(int code, const char *ecode, char *buf, size_t len);

/* RFC 3461 section 6.1/6.2 for a relay sending its own DSN: 1 when a DSN of
 * `kind` should be sent for a recipient whose NOTIFY= bits are `notify`
 * (ENVELOPE_NOTIFY_* from envelope.h; 0 = not given = FAILURE,DELAY):
 * FAILED needs FAILURE (or none given), DELAYED needs DELAY (or none
 * given), DELIVERED needs SUCCESS; NEVER suppresses everything. The caller
 * also never sends a DSN for the null sender <>. */
int bounce_notify_wanted(unsigned notify, enum bounce_kind kind);

/* The Subject: used for a kind (for logs and tests). */
const char *bounce_subject(enum bounce_kind kind);

#endif
