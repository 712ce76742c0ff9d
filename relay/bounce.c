/*
 * bounce.c - RFC 3464 DSN composition (see bounce.h).
 *
 * How it is built: the three MIME parts are composed first, each into its own
 * buffer and already in stored wire form; then a boundary is chosen that
 * occurs in none of them (RFC 2046 5.1.1 - the boundary must not appear in
 * the encapsulated text), then the top-level header and the parts are joined
 * into `out`. Composing into temporaries also keeps `out` untouched on error.
 *
 * Every line goes through bounce_line(), the single place that enforces the
 * wire form the spool stores and the flusher sends verbatim: it dot-stuffs a
 * line that starts with '.' (RFC 5321 4.5.2) and splits anything that would
 * exceed 998 octets (RFC 5321 4.5.3.1.6, RFC 5322 2.1.1). Text that comes
 * from outside (reply text, addresses, the original message) is cleaned of
 * CR, LF and other controls before it can reach a line, so a hostile reply
 * such as "550 x\r\n.\r\nMAIL FROM:..." cannot end the DSN early or inject
 * lines when the DSN is later sent.
 *
 * Decisions where the RFCs leave room:
 * - ENVID and ORCPT are stored xtext-encoded (as received, to be passed on);
 *   the DSN shows them decoded, as Postfix does and as RFC 6533's split
 *   between the xtext and unitext forms implies for rfc822 addresses. A value
 *   that does not decode is shown as stored (xtext is printable ASCII).
 * - message/delivery-status is US-ASCII (RFC 3464 2.1): 8-bit octets in a
 *   diagnostic are replaced by '?'. Addresses are shown as they are (an
 *   SMTPUTF8 address stays UTF-8; a message/global-delivery-status per
 *   RFC 6533 is not produced).
 * - A diagnostic that starts with an SMTP reply code has diagnostic type
 *   "smtp"; anything else (a connection error) "x-mx2".
 * - Quoted 8-bit content (headers or the whole original) marks its part and
 *   the multipart "Content-Transfer-Encoding: 8bit" (RFC 2045 6.4: a
 *   multipart's encoding must cover its parts); the flusher should then send
 *   BODY=8BITMIME where offered.
 */
#include "bounce.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "envelope.h"
#include "err.h"
#include "smtp_parse.h"

#define BOUNCE_LINE_MAX 998  /* octets per line, CRLF excluded */
#define BOUNCE_FOLD_SOFT 76  /* preferred width of folded fields and text */
#define BOUNCE_FOLD_HARD 900 /* a word longer than this is cut */

/* ---- lines ---- */

/* Append one logical line (no CR/LF in it) in stored wire form. A line that
 * would be too long is cut; each continuation gets `cont` (" " inside a
 * header section so the pieces stay one folded field, "" elsewhere). */
static void
bounce_line(struct buf *b, const char *p, size_t n, const char *cont)
{
    bool first = true;
    size_t clen = strlen(cont);

    do {
        const char *pre = first ? "" : cont;
        size_t plen = first ? 0 : clen;
        /* The stuffing dot counts against the limit, so a line of 998 '.'
         * is cut into 997 + 1 rather than stored as 999 octets. */
        bool dot = (plen > 0 ? pre[0] : (n > 0 ? p[0] : 0)) == '.';
        size_t room = BOUNCE_LINE_MAX - plen - (dot ? 1 : 0);
        size_t take = n < room ? n : room;
        if (dot)
            buf_append(b, ".", 1);
        buf_append(b, pre, plen);
        buf_append(b, p, take);
        buf_append(b, "\r\n", 2);
        p += take;
        n -= take;
        first = false;
    } while (n > 0);
}

static void
bounce_str(struct buf *b, const char *s)
{
    bounce_line(b, s, strlen(s), "");
}

/* Copy s into `t` with controls (CR, LF, TAB, NUL...) turned into spaces,
 * runs of spaces collapsed and both ends trimmed; 8-bit octets become '?'
 * when ascii_only. */
static void
bounce_clean(struct buf *t, const char *s, bool ascii_only)
{
    bool space = true; /* drop leading blanks */
    buf_reset(t);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || c == ' ') {
            if (!space)
                buf_append(t, " ", 1);
            space = true;
            continue;
        }
        if (c >= 0x80 && ascii_only)
            c = '?';
        buf_append(t, &c, 1);
        space = false;
    }
    if (t->len > 0 && t->data[t->len - 1] == ' ')
        t->len--;
    buf_append(t, "", 1); /* NUL, not counted */
    t->len--;
}

/* Emit text (already cleaned: single spaces, no controls) folded near
 * BOUNCE_FOLD_SOFT columns at spaces. header: a field - the continuation
 * line starts with the space it was folded at (RFC 5322 2.2.3); otherwise a
 * paragraph - the space is dropped. A word longer than BOUNCE_FOLD_HARD is
 * cut; in a field its continuation gets a blank of its own. Every line
 * emitted here is shorter than BOUNCE_LINE_MAX. */
static void
bounce_fold(struct buf *b, const char *s, size_t n, bool header)
{
    struct buf t = {0};
    size_t pos = 0;
    bool lead = false; /* the next line needs a leading blank (after a cut) */

    for (;;) {
        size_t rest = n - pos;
        size_t brk = 0, next;
        if (rest + (lead ? 1 : 0) <= BOUNCE_FOLD_SOFT)
            break;
        /* The last space within the soft width (not the one the line may
         * start with), else the first one within the hard width. */
        for (size_t i = pos + BOUNCE_FOLD_SOFT - (lead ? 1 : 0); i > pos; i--) {
            if (i < n && s[i] == ' ') {
                brk = i;
                break;
            }
        }
        for (size_t i = pos + BOUNCE_FOLD_SOFT; brk == 0 && i < n && i <= pos + BOUNCE_FOLD_HARD;
             i++) {
            if (s[i] == ' ')
                brk = i;
        }
        if (brk == 0) {
            if (rest <= BOUNCE_FOLD_HARD)
                break;
            brk = pos + BOUNCE_FOLD_HARD;
            next = brk;
        } else {
            next = header ? brk : brk + 1;
        }
        buf_reset(&t);
        if (lead)
            buf_append(&t, " ", 1);
        buf_append(&t, s + pos, brk - pos);
        bounce_line(b, t.data, t.len, "");
        lead = header && next == brk && s[brk] != ' ';
        pos = next;
    }
    buf_reset(&t);
    if (lead)
        buf_append(&t, " ", 1);
    buf_append(&t, s + pos, n - pos);
    bounce_line(b, t.data ? t.data : "", t.len, header ? " " : "");
    buf_free(&t);
}

/* "Name: value" as a folded field; value is cleaned first. */
static void
bounce_field(struct buf *b, struct buf *tmp, const char *name, const char *value, bool ascii_only)
{
    struct buf t = {0};
    bounce_clean(tmp, value, ascii_only);
    buf_appendf(&t, "%s: ", name);
    buf_append(&t, tmp->data, tmp->len);
    /* A value may come out empty after cleaning: keep "Name:" valid. */
    if (tmp->len == 0)
        t.len--;
    bounce_fold(b, t.data, t.len, true);
    buf_free(&t);
}

static void
bounce_para(struct buf *b, struct buf *tmp, const char *text)
{
    bounce_clean(tmp, text, false);
    bounce_fold(b, tmp->data, tmp->len, false);
}

/* ---- values ---- */

/* RFC 5322 3.3 date-time in UTC, locale-independent. */
static void
bounce_date(int64_t t, char *out, size_t len)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const mons[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 1970) {
        /* A nonsense time (a damaged envelope): print the epoch rather than
         * a four-digit-year violation. */
        memset(&tm, 0, sizeof(tm));
        tm.tm_year = 70;
        tm.tm_mday = 1;
        tm.tm_wday = 4;
    }
    snprintf(out, len, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
             mons[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* 1..3 digits at *p, value stored in *v; advances *p. */
static bool
bounce_digits(const char **p, unsigned *v)
{
    unsigned n = 0, x = 0;
    while (**p >= '0' && **p <= '9' && n < 4) {
        x = x * 10 + (unsigned)(**p - '0');
        (*p)++;
        n++;
    }
    *v = x;
    return n >= 1 && n <= 3;
}

/* A valid RFC 3463 code "C.S.D" ended by NUL or a blank; returns the class
 * digit or 0. */
static int
bounce_ecode_class(const char *e)
{
    unsigned cls, sub, det;
    const char *p = e;
    if (!e || !bounce_digits(&p, &cls) || p - e != 1 || *p++ != '.')
        return 0;
    if (!bounce_digits(&p, &sub) || *p++ != '.' || !bounce_digits(&p, &det))
        return 0;
    if (*p != '\0' && *p != ' ')
        return 0;
    return cls == 2 || cls == 4 || cls == 5 ? (int)cls : 0;
}

const char *
bounce_status_from_reply(int code, const char *ecode, char *buf, size_t len)
{
    int cls = code / 100;
    if (code < 200 || code > 599 || (cls != 2 && cls != 4 && cls != 5))
        cls = 4; /* no usable reply: a transient failure (RFC 3463 4.0.0) */
    if (len == 0)
        return buf;
    if (bounce_ecode_class(ecode) == cls) {
        size_t n = strcspn(ecode, " ");
        if (n >= len)
            n = len - 1;
        memcpy(buf, ecode, n);
        buf[n] = '\0';
    } else {
        snprintf(buf, len, "%d.0.0", cls);
    }
    return buf;
}

int
bounce_notify_wanted(unsigned notify, enum bounce_kind kind)
{
    if (notify & ENVELOPE_NOTIFY_NEVER)
        return 0;
    switch (kind) {
    case BOUNCE_FAILED:
        return notify == 0 || (notify & ENVELOPE_NOTIFY_FAILURE) != 0;
    case BOUNCE_DELAYED:
        return notify == 0 || (notify & ENVELOPE_NOTIFY_DELAY) != 0;
    case BOUNCE_DELIVERED:
    case BOUNCE_RELAYED:
        return (notify & ENVELOPE_NOTIFY_SUCCESS) != 0;
    }
    return 0;
}

const char *
bounce_subject(enum bounce_kind kind)
{
    switch (kind) {
    case BOUNCE_DELAYED:
        return "Delayed Mail (still being retried)";
    case BOUNCE_DELIVERED:
    case BOUNCE_RELAYED:
        return "Successful Mail Delivery Report";
    case BOUNCE_FAILED:
    default:
        return "Undelivered Mail Returned to Sender";
    }
}

static const char *
bounce_action(enum bounce_kind kind)
{
    return kind == BOUNCE_DELAYED     ? "delayed"
           : kind == BOUNCE_DELIVERED ? "delivered"
           : kind == BOUNCE_RELAYED   ? "relayed"
                                      : "failed";
}

static bool
bounce_empty(const char *s)
{
    return s == NULL || *s == '\0';
}

/* The recipient's status if it is a valid RFC 3463 code, else the generic
 * one for the kind of report. */
static const char *
bounce_rcpt_status(enum bounce_kind kind, const struct bounce_rcpt *r)
{
    if (bounce_ecode_class(r->status) != 0 && strchr(r->status, ' ') == NULL)
        return r->status;
    return kind == BOUNCE_FAILED ? "5.0.0" : kind == BOUNCE_DELAYED ? "4.0.0" : "2.0.0";
}

/* xtext-decoded copy of s into out (NUL-terminated), or s as is when it
 * does not decode. */
static void
bounce_unxtext(const char *s, char *out, size_t outsize)
{
    size_t n;
    if (smtp_xtext_decode(s, strlen(s), out, outsize, &n) != 0)
        snprintf(out, outsize, "%s", s);
}

/* ---- the original message ---- */

/* Quote the stored original: undo the dot-stuffing line by line (the rule of
 * spool_body_unstuff; done here per line so that a headers-only quote stops
 * at the end of the header section without copying a large body), clean
 * stray CR, and re-emit through bounce_line. headers_only stops before the
 * first empty line. Sets *eightbit when any octet is >= 0x80. */
static void
bounce_quote(struct buf *b, const unsigned char *orig, size_t len, bool headers_only,
             bool *eightbit)
{
    size_t off = 0;
    bool in_headers = true;
    struct buf line = {0};

    while (off < len) {
        const unsigned char *nl = memchr(orig + off, '\n', len - off);
        size_t end = nl ? (size_t)(nl - orig) : len;
        size_t from = off;
        size_t to = end;
        if (to > from && orig[to - 1] == '\r')
            to--;
        if (from < to && orig[from] == '.')
            from++;
        if (in_headers && to == from) {
            if (headers_only)
                break;
            in_headers = false;
        }
        buf_reset(&line);
        buf_append(&line, orig + from, to - from);
        for (size_t i = 0; i < line.len; i++) {
            unsigned char c = (unsigned char)line.data[i];
            /* A bare CR (not before LF) would break the wire form when the
             * DSN is sent; the spool should never hold one, but the quote
             * must not depend on it. */
            if (c == '\r' || c == '\0')
                line.data[i] = ' ';
            else if (c >= 0x80)
                *eightbit = true;
        }
        bounce_line(b, line.data ? line.data : "", line.len, in_headers ? " " : "");
        off = nl ? end + 1 : len;
    }
    buf_free(&line);
}

static bool
bounce_has_8bit(const struct buf *b)
{
    for (size_t i = 0; i < b->len; i++)
        if ((unsigned char)b->data[i] >= 0x80)
            return true;
    return false;
}

static bool
bounce_contains(const struct buf *b, const char *needle)
{
    size_t n = strlen(needle);
    if (n == 0)
        return true;
    if (b->len < n)
        return false;
    for (size_t i = 0; i + n <= b->len; i++) {
        const char *hit = memchr(b->data + i, needle[0], b->len - n + 1 - i);
        if (hit == NULL)
            return false;
        i = (size_t)(hit - b->data);
        if (memcmp(hit, needle, n) == 0)
            return true;
    }
    return false;
}

/* ---- the parts ---- */

static void
bounce_text_part(const struct bounce_info *info, const struct bounce_rcpt *rcpts, size_t n,
                 bool full, bool too_big, struct buf *p, struct buf *tmp)
{
    struct buf s = {0};
    char date[64];

    buf_appendf(&s, "This is the mail system at host %s.", info->hostname);
    bounce_para(p, tmp, s.data);
    bounce_str(p, "");
    buf_reset(&s);
    switch (info->kind) {
    case BOUNCE_FAILED:
        buf_appendf(&s,
                    "I'm sorry to have to tell you that your message could not be delivered to "
                    "the recipients listed below, because %s.",
                    bounce_empty(info->reason) ? "it was rejected or could not be delivered in time"
                                               : info->reason);
        break;
    case BOUNCE_DELAYED:
        buf_appendf(&s,
                    "Your message has not been delivered yet to the recipients listed below, "
                    "because %s. This is only a warning: the mail system will keep trying",
                    bounce_empty(info->reason) ? "the receiving mail server is not reachable"
                                               : info->reason);
        if (info->retry_until > 0) {
            bounce_date(info->retry_until, date, sizeof(date));
            buf_appendf(&s, " until %s", date);
        }
        buf_appendf(&s, ", and you do not need to send the message again.");
        break;
    case BOUNCE_DELIVERED:
        buf_appendf(&s, "Your message was successfully delivered to the recipients listed below");
        if (!bounce_empty(info->reason))
            buf_appendf(&s, " (%s)", info->reason);
        buf_appendf(&s, ", as you requested.");
        break;
    case BOUNCE_RELAYED:
        buf_appendf(&s, "Your message was relayed to the recipients' mail server, which does not "
                        "offer delivery status notifications, so no further notice will come");
        if (!bounce_empty(info->reason))
            buf_appendf(&s, " (%s)", info->reason);
        buf_appendf(&s, ".");
        break;
    }
    bounce_para(p, tmp, s.data);
    bounce_str(p, "");
    buf_reset(&s);
    buf_appendf(&s,
                "For further assistance, please send mail to postmaster@%s and include "
                "this report.",
                info->hostname);
    bounce_para(p, tmp, s.data);
    bounce_str(p, "");
    bounce_str(p, "                   The mail system");
    bounce_str(p, "");
    for (size_t i = 0; i < n; i++) {
        buf_reset(&s);
        buf_appendf(&s, "<%s>: ", rcpts[i].address);
        if (!bounce_empty(rcpts[i].remote_mta))
            buf_appendf(&s, "host %s said: ", rcpts[i].remote_mta);
        if (!bounce_empty(rcpts[i].diagnostic))
            buf_appendf(&s, "%s", rcpts[i].diagnostic);
        else
            buf_appendf(&s, "status %s", bounce_rcpt_status(info->kind, &rcpts[i]));
        bounce_para(p, tmp, s.data);
        bounce_str(p, "");
    }
    if (too_big)
        bounce_para(p, tmp,
                    "The message is too large to be returned in full; only its headers are "
                    "attached.");
    else if (full)
        bounce_para(p, tmp, "The original message is attached.");
    else
        bounce_para(p, tmp, "The headers of the original message are attached.");
    buf_free(&s);
}

static void
bounce_status_part(const struct bounce_info *info, const struct bounce_rcpt *rcpts, size_t n,
                   struct buf *p, struct buf *tmp)
{
    struct buf v = {0};
    char date[64];
    char dec[ENVELOPE_MAX_STR + 1];

    if (!bounce_empty(info->envid)) {
        bounce_unxtext(info->envid, dec, sizeof(dec));
        bounce_field(p, tmp, "Original-Envelope-Id", dec, true);
    }
    buf_appendf(&v, "dns; %s", info->hostname);
    bounce_field(p, tmp, "Reporting-MTA", v.data, true);
    if (!bounce_empty(info->qid))
        bounce_field(p, tmp, "X-Mx2-Queue-ID", info->qid, true);
    buf_reset(&v);
    buf_appendf(&v, "rfc822; %s", info->sender);
    bounce_field(p, tmp, "X-Mx2-Sender", v.data, false);
    bounce_date(info->arrival, date, sizeof(date));
    bounce_field(p, tmp, "Arrival-Date", date, true);

    for (size_t i = 0; i < n; i++) {
        const struct bounce_rcpt *r = &rcpts[i];
        bounce_str(p, ""); /* each recipient's group follows a blank line */
        if (!bounce_empty(r->orcpt)) {
            const char *semi = strchr(r->orcpt, ';');
            if (semi && semi > r->orcpt) {
                buf_reset(&v);
                buf_append(&v, r->orcpt, (size_t)(semi - r->orcpt));
                bounce_unxtext(semi + 1, dec, sizeof(dec));
                buf_appendf(&v, ";%s", dec);
                bounce_field(p, tmp, "Original-Recipient", v.data, false);
            }
        }
        buf_reset(&v);
        buf_appendf(&v, "rfc822; %s", r->address);
        bounce_field(p, tmp, "Final-Recipient", v.data, false);
        bounce_field(p, tmp, "Action", bounce_action(info->kind), true);
        bounce_field(p, tmp, "Status", bounce_rcpt_status(info->kind, r), true);
        if (!bounce_empty(r->remote_mta)) {
            buf_reset(&v);
            buf_appendf(&v, "dns; %s", r->remote_mta);
            bounce_field(p, tmp, "Remote-MTA", v.data, true);
        }
        if (!bounce_empty(r->diagnostic)) {
            const char *d = r->diagnostic;
            bool smtp = d[0] >= '2' && d[0] <= '5' && d[1] >= '0' && d[1] <= '9' && d[2] >= '0' &&
                        d[2] <= '9' && (d[3] == '\0' || d[3] == ' ' || d[3] == '-');
            buf_reset(&v);
            buf_appendf(&v, "%s; %s", smtp ? "smtp" : "x-mx2", d);
            bounce_field(p, tmp, "Diagnostic-Code", v.data, true);
        }
        if (r->last_attempt > 0) {
            bounce_date(r->last_attempt, date, sizeof(date));
            bounce_field(p, tmp, "Last-Attempt-Date", date, true);
        }
        if (info->kind == BOUNCE_DELAYED && info->retry_until > 0) {
            bounce_date(info->retry_until, date, sizeof(date));
            bounce_field(p, tmp, "Will-Retry-Until", date, true);
        }
    }
    buf_free(&v);
}

int
bounce_compose(const struct bounce_info *info, const struct bounce_rcpt *rcpts, size_t n,
               const unsigned char *orig, size_t orig_len, struct buf *out)
{
    if (info == NULL || out == NULL || rcpts == NULL || n == 0 || bounce_empty(info->hostname) ||
        bounce_empty(info->sender) || (orig == NULL && orig_len > 0))
        return MX2_E_INVAL;
    if (info->kind != BOUNCE_FAILED && info->kind != BOUNCE_DELAYED &&
        info->kind != BOUNCE_DELIVERED && info->kind != BOUNCE_RELAYED)
        return MX2_E_INVAL;
    for (size_t i = 0; i < n; i++)
        if (bounce_empty(rcpts[i].address))
            return MX2_E_INVAL;

    bool want_full = info->ret == ENVELOPE_RET_FULL;
    bool too_big = want_full && info->full_limit > 0 && orig_len > info->full_limit;
    bool full = want_full && !too_big;
    bool orig8 = false;
    struct buf text = {0}, status = {0}, quote = {0}, tmp = {0}, hdr = {0};

    bounce_text_part(info, rcpts, n, full, too_big, &text, &tmp);
    bounce_status_part(info, rcpts, n, &status, &tmp);
    if (orig_len > 0)
        bounce_quote(&quote, orig, orig_len, !full, &orig8);
    bool text8 = bounce_has_8bit(&text);
    bool any8 = text8 || orig8 || bounce_has_8bit(&status);

    /* The boundary: the queue ID and the time make it unlikely to occur
     * anywhere; the check makes it impossible (a quoted DSN about a DSN of
     * the same message, or a hostile original, could contain it). */
    char boundary[128];
    for (unsigned k = 0;; k++) {
        snprintf(boundary, sizeof(boundary), "%s.%llx.%u/%s",
                 bounce_empty(info->qid) ? "mx2" : info->qid, (unsigned long long)info->now, k,
                 info->hostname);
        /* keep it short and of boundary characters only (RFC 2046 5.1.1) */
        boundary[69] = '\0';
        for (char *c = boundary; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '.' || *c == '/' || *c == '-' || *c == '_'))
                *c = '_';
        if (!bounce_contains(&text, boundary) && !bounce_contains(&status, boundary) &&
            !bounce_contains(&quote, boundary))
            break;
    }

    char date[64];
    bounce_date(info->now, date, sizeof(date));
    buf_appendf(&hdr, "MAILER-DAEMON@%s (Mail Delivery System)", info->hostname);
    struct buf h = {0};
    bounce_field(&h, &tmp, "From", hdr.data, false);
    buf_reset(&hdr);
    buf_appendf(&hdr, "<%s>", info->sender);
    bounce_field(&h, &tmp, "To", hdr.data, false);
    bounce_field(&h, &tmp, "Subject", bounce_subject(info->kind), true);
    bounce_field(&h, &tmp, "Date", date, true);
    {
        time_t tt = (time_t)info->now;
        struct tm tm;
        char stamp[32] = "19700101000000";
        if (gmtime_r(&tt, &tm) != NULL && tm.tm_year + 1900 <= 9999 &&
            strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm) == 0)
            snprintf(stamp, sizeof(stamp), "19700101000000");
        buf_reset(&hdr);
        static const char kind_letter[] = {'F', 'D', 'S', 'R'};
        buf_appendf(&hdr, "<%s.%s.%c@%s>", stamp, bounce_empty(info->qid) ? "mx2" : info->qid,
                    kind_letter[info->kind], info->hostname);
        bounce_field(&h, &tmp, "Message-ID", hdr.data, true);
    }
    bounce_field(&h, &tmp, "Auto-Submitted", "auto-replied", true);
    bounce_field(&h, &tmp, "MIME-Version", "1.0", true);
    buf_reset(&hdr);
    buf_appendf(&hdr, "multipart/report; report-type=delivery-status; boundary=\"%s\"", boundary);
    bounce_field(&h, &tmp, "Content-Type", hdr.data, true);
    bounce_field(&h, &tmp, "Content-Transfer-Encoding", any8 ? "8bit" : "7bit", true);
    bounce_str(&h, "");
    bounce_str(&h, "This is a MIME-encapsulated message.");
    bounce_str(&h, "");

    /* part 1: human text */
    buf_reset(&hdr);
    buf_appendf(&hdr, "--%s", boundary);
    bounce_str(&h, hdr.data);
    bounce_str(&h, "Content-Description: Notification");
    bounce_str(&h, "Content-Type: text/plain; charset=utf-8");
    bounce_str(&h, text8 ? "Content-Transfer-Encoding: 8bit" : "Content-Transfer-Encoding: 7bit");
    bounce_str(&h, "");
    buf_append(&h, text.data, text.len);
    bounce_str(&h, "");
    /* part 2: machine-readable status */
    bounce_str(&h, hdr.data);
    bounce_str(&h, "Content-Description: Delivery report");
    bounce_str(&h, "Content-Type: message/delivery-status");
    bounce_str(&h, "");
    buf_append(&h, status.data, status.len);
    bounce_str(&h, "");
    /* part 3: the original */
    bounce_str(&h, hdr.data);
    if (full) {
        bounce_str(&h, "Content-Description: Undelivered Message");
        bounce_str(&h, "Content-Type: message/rfc822");
    } else {
        bounce_str(&h, "Content-Description: Undelivered Message Headers");
        bounce_str(&h, "Content-Type: text/rfc822-headers");
    }
    if (orig8)
        bounce_str(&h, "Content-Transfer-Encoding: 8bit");
    bounce_str(&h, "");
    buf_append(&h, quote.data, quote.len);
    bounce_str(&h, "");
    buf_reset(&hdr);
    buf_appendf(&hdr, "--%s--", boundary);
    bounce_str(&h, hdr.data);

    buf_append(out, h.data, h.len);
    buf_free(&h);
    buf_free(&hdr);
    buf_free(&text);
    buf_free(&status);
    buf_free(&quote);
    buf_free(&tmp);
    return 0;
}
