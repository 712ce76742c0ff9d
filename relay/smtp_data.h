/*
 * smtp_data.h - the DATA scanner: raw client bytes after "354" in, the
 * message in canonical wire form out. The anti-smuggling core of mx2.
 *
 * Purpose: find the end of data (ONLY <CRLF>.<CRLF>, RFC 5321 4.1.1.4; at
 * the very start ".<CRLF>" ends an empty message) and produce exactly the
 * bytes mx2 will later send to the primary after its own "DATA": CRLF line
 * ends, dot-stuffed, without the final ".<CRLF>". Whatever a client sends,
 * the output never contains a line that is a lone "." and never a bare CR
 * or LF, so no byte sequence can end the data early at the primary (SMTP
 * smuggling, CVE-2023-51764 and friends). For a well-formed client (every
 * line ended by CRLF) the output is the input minus the terminator.
 *
 * Rules (SPEC.md "SMTP behaviour (inbound)", bare_newline):
 *   - MX2_BARE_NORMALIZE: a bare LF ends a line (CRLF is written); a CR not
 *     followed by LF becomes a space. A line that followed a proper CRLF (or
 *     starts the data) is taken as transparency-encoded (RFC 5321 4.5.2) and
 *     copied as is; a line that followed a bare LF is raw text, so when it
 *     starts with '.' one more '.' is written in front. A line consisting of
 *     a lone "." that is not the terminator (".\n", "\r\n.\n") is written
 *     "..".
 *   - MX2_BARE_REJECT: the first bare LF or stray CR sets error
 *     MX2_E_BARE_NEWLINE; scanning goes on (same line rules) until the real
 *     terminator so the session stays in sync and replies once.
 *   - Header section (up to the first empty line): "Received:" fields are
 *     counted (name case-insensitive, at line start); more than max_received
 *     sets MX2_E_LOOP. The first Message-ID value is copied (bounded,
 *     unfolded, blanks trimmed).
 *   - Output bytes are counted in size; above max_size sets MX2_E_TOO_BIG.
 *   - Once error is set no more output is produced (the caller discards the
 *     message), but scanning and counting continue to the terminator. When
 *     several errors apply, d->error is chosen by priority (loop, then size,
 *     then bare newline), so the final reply never depends on how the
 *     client's bytes were split into reads. Where exactly the output stops may depend on how
 *     the input was chunked; everything else (error, size, counters, done,
 *     consumed) never does.
 *   - Lines longer than 998 octets (RFC 5321 4.5.3.1.6) are only counted.
 *
 * Callers: smtp_session, on the loop thread. Pure: no I/O, no allocation;
 * the struct holds O(1) state and may be embedded in the session.
 *
 * Ownership: in/out are the caller's. message_id is inside the struct.
 *
 * Errors: reported in d->error (0, MX2_E_BARE_NEWLINE 550 5.5.2,
 * MX2_E_LOOP 554 5.4.6, MX2_E_TOO_BIG 552 5.3.4); smtp_data_feed itself
 * cannot fail.
 */
#ifndef MX2_SMTP_DATA_H
#define MX2_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Output buffer the caller must give smtp_data_feed for inlen input bytes:
 * each input byte yields at most two output bytes (bare LF -> CRLF, a dot
 * at the start of a bare-LF line -> ".."), plus up to a few bytes held
 * back from the previous call (a pending ".", CR). */
#define SMTP_DATA_OUT_SIZE(inlen) (2 * (size_t)(inlen) + 8)

#define SMTP_DATA_MSGID_MAX 255   /* bytes of Message-ID kept for the log */
#define SMTP_DATA_LINE_MAX 998    /* longer lines are counted in long_lines */
#define SMTP_DATA_HDRNAME_MAX 32  /* header names longer than this are not examined */

struct smtp_data {
    /* Settings (smtp_data_init). */
    enum mx2_bare_newline mode;
    uint64_t max_size;        /* 0 = no limit */
    unsigned max_received;    /* 0 = no limit */

    /* Results, valid at any time; final once done. */
    bool done;                /* the terminator was consumed */
    int error;                /* 0 or the first MX2_E_* (see above) */
    uint64_t size;            /* output bytes (counted even after an error) */
    unsigned received_count;  /* "Received:" header fields */
    char message_id[SMTP_DATA_MSGID_MAX + 1]; /* "" when none; NUL-terminated */
    size_t message_id_len;
    bool eightbit;            /* an octet >= 0x80 anywhere in the message */
    bool eightbit_header;     /* ... in the header section */
    uint64_t lines;           /* output lines */
    uint64_t long_lines;      /* lines over SMTP_DATA_LINE_MAX octets */
    uint64_t bare_lf;         /* bare LFs seen (normalized or rejected) */
    uint64_t bare_cr;         /* stray CRs seen */

    /* Private scanner state; do not touch. */
    int st_;                  /* position in the line-start / CR state machine */
    bool bare_start_;         /* current line began after a bare LF */
    uint64_t line_len_;       /* output octets in the current line */
    bool in_header_;
    uint64_t hdr_col_;        /* content octets in the current header line */
    int hdr_kind_;            /* what the current header field is */
    bool hdr_name_done_;
    unsigned hdr_name_len_;
    char hdr_name_[SMTP_DATA_HDRNAME_MAX];
    bool msgid_done_;
    unsigned errs_;           /* errors seen (bit set), see set_error() */
};

/* Start a new message. max_size: max_message_size (0 = none);
 * max_received: 50 in mx2d (0 = none). */
void smtp_data_init(struct smtp_data *d, enum mx2_bare_newline mode, uint64_t max_size,
                    unsigned max_received);

/* Scan inlen bytes. Writes up to SMTP_DATA_OUT_SIZE(inlen) bytes to out and
 * sets *outlen. Returns the number of input bytes consumed: all of them,
 * unless the terminator was found, in which case d->done is set and the
 * bytes from the return value on belong to the next command (pipelining).
 * After done, returns 0 and writes nothing. */
size_t smtp_data_feed(struct smtp_data *d, const char *in, size_t inlen, char *out,
                      size_t *outlen);

#endif
