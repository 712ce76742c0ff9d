/*
 * smtp_data.c - the DATA scanner (see smtp_data.h for the contract).
 *
 * Why this shape. SMTP smuggling (CVE-2023-51764/5/6) works because two
 * MTAs disagree on where a message ends: a client sends "\n.\n" or
 * "\r\n.\r" + something, one MTA takes it for the end of data and the next
 * MTA in the chain does not (or the other way round), and the bytes after
 * it become a second, forged transaction. mx2 closes both halves:
 *   1. Only <CRLF>.<CRLF> ends the data here (RFC 5321 4.1.1.4, 4.5.2).
 *   2. What we pass on is canonical: every line ends in CRLF, there is no
 *      bare CR or LF, and no line of the output is a lone ".", so the
 *      primary cannot find an end of data that we did not.
 *
 * The state machine works on single octets only where it must (line start,
 * after a CR) and copies runs between CR/LF with memchr; positions of the
 * next CR and LF are cached per call so a hostile chunk full of bare CRs
 * stays linear.
 *
 * Line starts come in two kinds. After a proper CRLF (or at the start of
 * the data) the client had to dot-stuff, so the line is already in wire
 * form and is copied unchanged: "..x" stays "..x", and even an unstuffed
 * ".x" is left alone because it means "x" to us and to the primary alike.
 * After a bare LF (normalize mode) the client evidently did not think a
 * line started, so it did not stuff either: a leading '.' gets one more
 * '.' in front. The one case that needs holding back is a lone "." after a
 * proper line start: it is the terminator only when CRLF follows; followed
 * by a bare LF it is written "..", followed by a stray CR it becomes ". ".
 *
 * Byte accounting: `size` and `line_len_` count wire octets written (the
 * CRLF of a line counts in size but not in the line length). Header
 * analysis sees the *content*: the transparency dot is not part of it.
 */
#include "smtp_data.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "err.h"
#include "log.h"

enum {
    ST_START = 0, /* at the start of a line, nothing held */
    ST_DOT,       /* proper line start, "." held */
    ST_DOT_CR,    /* proper line start, ".\r" held: terminator if LF follows */
    ST_MID,       /* inside a line, nothing held */
    ST_CR,        /* "\r" held (inside a line or at its start) */
};

enum { HDR_OTHER = 0, HDR_MSGID };

struct emit {
    char *out;
    size_t n;
};

/* Several errors can apply to one message (a loop that is also too big).
 * Which one is found first depends on how the bytes were split into reads,
 * so the reply is chosen by a fixed priority instead: the set of errors is
 * the same for any split once the terminator is reached (fuzz_smtp_data
 * checks that). A mail loop is the most specific, then the size, then the
 * bare newline. */
static void
set_error(struct smtp_data *d, int err)
{
    unsigned bit = err == MX2_E_LOOP ? 4u : err == MX2_E_TOO_BIG ? 2u : 1u;

    d->errs_ |= bit;
    d->error = (d->errs_ & 4u)   ? MX2_E_LOOP
               : (d->errs_ & 2u) ? MX2_E_TOO_BIG
                                 : MX2_E_BARE_NEWLINE;
}

/* True if any octet of p[0..n) has its high bit set; 8 octets at a time. */
static int
has_8bit(const unsigned char *p, size_t n)
{
    size_t i = 0;
    uint64_t acc = 0;

    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        acc |= w;
    }
    for (; i < n; i++)
        acc |= p[i];
    return (acc & UINT64_C(0x8080808080808080)) != 0;
}

/* Wire octets: counted always, written only while there is no error. */
static void
wire(struct smtp_data *d, struct emit *e, const char *p, size_t n)
{
    d->size += n;
    d->line_len_ += n;
    if (d->max_size != 0 && d->size > d->max_size)
        set_error(d, MX2_E_TOO_BIG);
    if (d->error == 0) {
        memcpy(e->out + e->n, p, n);
        e->n += n;
    }
}

static void
msgid_put(struct smtp_data *d, unsigned char c)
{
    /* Leading blanks are skipped; the value goes to a log line, so
     * controls and 8-bit octets are shown as '?'. */
    if (d->message_id_len == 0 && (c == ' ' || c == '\t'))
        return;
    if (d->message_id_len >= SMTP_DATA_MSGID_MAX)
        return;
    if (c < 0x20 || c >= 0x7f)
        c = (c == '\t') ? ' ' : '?';
    d->message_id[d->message_id_len++] = (char)c;
    d->message_id[d->message_id_len] = '\0';
}

static void
hdr_name_end(struct smtp_data *d)
{
    unsigned n = d->hdr_name_len_;

    d->hdr_name_done_ = true;
    /* RFC 5322 4.5 obsolete syntax allows blanks before the colon
     * ("Received :"); a loop counter that missed them would be bypassed. */
    while (n > 0 && (d->hdr_name_[n - 1] == ' ' || d->hdr_name_[n - 1] == '\t'))
        n--;
    if (n == 8 && strncasecmp(d->hdr_name_, "received", 8) == 0) {
        d->received_count++;
        if (d->max_received != 0 && d->received_count > d->max_received)
            set_error(d, MX2_E_LOOP);
    } else if (n == 10 && strncasecmp(d->hdr_name_, "message-id", 10) == 0 && !d->msgid_done_ &&
               d->message_id_len == 0) {
        d->hdr_kind_ = HDR_MSGID;
    }
}

/* Content octets of the current line while in the header section. */
static void
hdr_content(struct smtp_data *d, const unsigned char *p, size_t n)
{
    size_t i = 0;

    if (d->hdr_col_ == 0 && n > 0) {
        if (p[0] == ' ' || p[0] == '\t') {
            /* A folded continuation: same field, same kind. */
            d->hdr_name_done_ = true;
        } else {
            if (d->hdr_kind_ == HDR_MSGID)
                d->msgid_done_ = true;
            d->hdr_kind_ = HDR_OTHER;
            d->hdr_name_done_ = false;
            d->hdr_name_len_ = 0;
        }
    }
    d->hdr_col_ += n;
    for (; i < n && !d->hdr_name_done_; i++) {
        if (p[i] == ':') {
            hdr_name_end(d);
        } else if (d->hdr_name_len_ < SMTP_DATA_HDRNAME_MAX) {
            d->hdr_name_[d->hdr_name_len_++] = (char)p[i];
        } else {
            d->hdr_name_done_ = true; /* too long to be a name we care about */
            d->hdr_kind_ = HDR_OTHER;
        }
    }
    if (d->hdr_kind_ == HDR_MSGID && !d->msgid_done_)
        for (; i < n; i++)
            msgid_put(d, p[i]);
}

/* Content octets: wire + what we learn from them. */
static void
content(struct smtp_data *d, struct emit *e, const char *p, size_t n)
{
    if ((!d->eightbit || (d->in_header_ && !d->eightbit_header)) &&
        has_8bit((const unsigned char *)p, n)) {
        d->eightbit = true;
        if (d->in_header_)
            d->eightbit_header = true;
    }
    wire(d, e, p, n);
    if (d->in_header_)
        hdr_content(d, (const unsigned char *)p, n);
}

static void
eol(struct smtp_data *d, struct emit *e, bool bare)
{
    if (d->in_header_) {
        if (d->line_len_ == 0) {
            d->in_header_ = false; /* the empty line ends the header section */
            if (d->hdr_kind_ == HDR_MSGID)
                d->msgid_done_ = true;
        } else if (d->hdr_kind_ == HDR_MSGID) {
            while (d->message_id_len > 0 && d->message_id[d->message_id_len - 1] == ' ')
                d->message_id[--d->message_id_len] = '\0';
        }
    }
    if (d->line_len_ > SMTP_DATA_LINE_MAX)
        d->long_lines++;
    d->lines++;
    d->hdr_col_ = 0;
    wire(d, e, "\r\n", 2);
    d->line_len_ = 0;
    d->bare_start_ = bare;
    d->st_ = ST_START;
}

static void
bare_seen(struct smtp_data *d, bool lf)
{
    if (lf)
        d->bare_lf++;
    else
        d->bare_cr++;
    if (d->mode == MX2_BARE_REJECT)
        set_error(d, MX2_E_BARE_NEWLINE);
}

void
smtp_data_init(struct smtp_data *d, enum mx2_bare_newline mode, uint64_t max_size,
               unsigned max_received)
{
    memset(d, 0, sizeof(*d));
    d->mode = mode;
    d->max_size = max_size;
    d->max_received = max_received;
    d->st_ = ST_START;
    d->in_header_ = true;
}

size_t
smtp_data_feed(struct smtp_data *d, const char *in, size_t inlen, char *out, size_t *outlen)
{
    struct emit e = {out, 0};
    size_t i = 0, next_cr = 0, next_lf = 0;
    bool cr_known = false, lf_known = false;

    *outlen = 0;
    if (d->done)
        return 0;
    while (i < inlen) {
        char c = in[i];

        switch (d->st_) {
        case ST_MID: {
            size_t j;
            if (!lf_known || next_lf < i) {
                const char *p = memchr(in + i, '\n', inlen - i);
                next_lf = p != NULL ? (size_t)(p - in) : inlen;
                lf_known = true;
            }
            if (!cr_known || next_cr < i) {
                const char *p = memchr(in + i, '\r', next_lf - i);
                /* Beyond next_lf we do not know; mark so it is searched again. */
                next_cr = p != NULL ? (size_t)(p - in) : next_lf;
                cr_known = p != NULL || next_lf == inlen;
            }
            j = next_cr < next_lf ? next_cr : next_lf;
            if (j > i) {
                content(d, &e, in + i, j - i);
                i = j;
                continue;
            }
            i++;
            if (c == '\r') {
                d->st_ = ST_CR;
            } else { /* '\n' with no CR before it */
                bare_seen(d, true);
                eol(d, &e, true);
            }
            break;
        }
        case ST_START:
            if (c == '.') {
                i++;
                if (d->bare_start_) {
                    /* After a bare LF: the client did not stuff, we do. */
                    wire(d, &e, ".", 1);
                    content(d, &e, ".", 1);
                    d->st_ = ST_MID;
                } else {
                    d->st_ = ST_DOT;
                }
            } else if (c == '\r') {
                i++;
                d->st_ = ST_CR;
            } else if (c == '\n') {
                i++;
                bare_seen(d, true);
                eol(d, &e, true);
            } else {
                d->st_ = ST_MID;
            }
            break;
        case ST_DOT:
            if (c == '\r') {
                i++;
                d->st_ = ST_DOT_CR;
            } else if (c == '\n') {
                /* ".\n": a lone dot ended by a bare LF is text, never the
                 * end; written stuffed so the primary reads a "." line. */
                i++;
                bare_seen(d, true);
                wire(d, &e, ".", 1);
                content(d, &e, ".", 1);
                eol(d, &e, true);
            } else {
                /* The transparency dot of a proper line (RFC 5321 4.5.2):
                 * wire only; the octet after it is content. */
                wire(d, &e, ".", 1);
                d->st_ = ST_MID;
            }
            break;
        case ST_DOT_CR:
            if (c == '\n') {
                i++;
                d->done = true;
                *outlen = e.n;
                return i;
            }
            /* ".\r" + anything but LF: the CR was stray (a space), and the
             * line is ". ..." - not a terminator, for us or the primary. */
            bare_seen(d, false);
            wire(d, &e, ".", 1);
            content(d, &e, " ", 1);
            if (c == '\r') {
                i++;
                d->st_ = ST_CR;
            } else {
                d->st_ = ST_MID;
            }
            break;
        case ST_CR:
            if (c == '\n') {
                i++;
                eol(d, &e, false);
            } else {
                /* A CR not followed by LF is a space (Postfix 3.9
                 * smtpd_forbid_bare_newline=normalize does the same). */
                bare_seen(d, false);
                content(d, &e, " ", 1);
                if (c == '\r') {
                    i++; /* stays in ST_CR: this CR is now held */
                } else {
                    d->st_ = ST_MID;
                }
            }
            break;
        default:
            log_abort(); /* a broken invariant: st_ is private */
        }
    }
    *outlen = e.n;
    return i;
}
