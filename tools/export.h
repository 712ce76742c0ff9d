/*
 * export.h - copy queued messages out of mx2 as mbox or Maildir, for a
 * primary that stays down longer than the queue lifetime (SPEC.md "mx2ctl":
 * `mx2ctl export (--mbox FILE | --maildir DIR) [ID...]`).
 *
 * What a message becomes (both formats): LF line ends (the spool keeps the
 * SMTP wire form: CRLF, dot-stuffed; the dots are undone first), and two
 * headers prepended, as a local delivery agent does:
 *     Return-Path: <sender>          (<> for a bounce)
 *     X-Original-To: rcpt            (one per recipient still pending or
 *                                     deferred; all of them when none is)
 *
 * mbox (the "mboxrd" dialect, which is the one that round-trips): each
 * message starts with "From SENDER DATE" (SENDER MAILER-DAEMON for <>,
 * whitespace in it replaced by '_'; DATE the arrival in ctime format,
 * local time), every body line matching /^>*From / gets one more '>', and
 * the message ends with an empty line. The file is opened O_APPEND, locked
 * with fcntl(F_SETLKW) while written (as MUAs and local(8) do) and fsync'd.
 *
 * Maildir: DIR, DIR/tmp, DIR/new and DIR/cur are created (0700) as needed;
 * each message is written to tmp/NAME, fsync'd and linked into new/NAME
 * (link fails rather than overwrites), then the tmp name is removed and new/
 * fsync'd. NAME is "TIME.QID.HOST" (TIME the export time in unix seconds,
 * QID the queue ID, HOST the host name with '/' as \057 and ':' as \072, as
 * the Maildir spec asks), with "_N" after the QID if that name is taken.
 *
 * Callers: mx2ctl (single-threaded) and the unit test. No global state.
 * Envelopes and bodies are borrowed; body is the stored form
 * (spool_body_open's data).
 *
 * Errors: 0 or -errno (I/O), MX2_E_INVAL (bad argument).
 */
#ifndef MX2_EXPORT_H
#define MX2_EXPORT_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "envelope.h"

/* Write the message (the added headers, then the LF text) to out; with
 * mboxrd, quote /^>*From / lines. Does not write the From_ line. */
int export_write_message(FILE *out, const struct envelope *e, const unsigned char *body, size_t len,
                         int mboxrd);

/* "From SENDER DATE\n" for e into buf (NUL-terminated). Returns its length
 * or MX2_E_INVAL when size is too small. */
int export_from_line(const struct envelope *e, char *buf, size_t size);

/* An open, locked mbox. */
struct export_mbox {
    FILE *f;
    int fd;
};
int export_mbox_open(const char *path, struct export_mbox *mb);
/* From_ line, message, empty line. */
int export_mbox_append(struct export_mbox *mb, const struct envelope *e, const unsigned char *body,
                       size_t len);
/* fsync and close (unlocks). Returns the first error. */
int export_mbox_close(struct export_mbox *mb);

/* Create dir and its tmp/new/cur. */
int export_maildir_init(const char *dir);
/* Deliver one message; name_out (may be NULL) gets the file name in new/. */
int export_maildir_write(const char *dir, const char *host, int64_t now, const struct envelope *e,
                         const unsigned char *body, size_t len, char *name_out, size_t name_size);

#endif
