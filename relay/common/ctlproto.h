/*
 * ctlproto.h - the control-socket line protocol between mx2ctl and mx2d.
 *
 * Transport: a unix stream socket at `control_socket` (mode 0660, owned by
 * the daemon's user and group: whoever may write it may operate the queue).
 * Requests and responses are lines of printable ASCII ending in LF (a CR
 * before the LF is tolerated, so `socat - UNIX:/run/mx2/control.sock` works
 * by hand). The client sends one request line, then reads the response up to
 * its terminating "." line; it may then send the next request on the same
 * connection. The server handles one request at a time, in order.
 *
 * Requests (verb case-insensitive, words separated by spaces or tabs):
 *
 *   PING                      -> OK pong
 *   FLUSH                     -> OK flush started
 *   FLUSH WAIT                -> STAT delivered N / STAT deferred N /
 *                                STAT bounced N, then OK round finished
 *                                (answered when every message queued at that
 *                                moment has had one attempt)
 *   DELETE ID [ID...]         -> one line per ID, in order:
 *   HOLD ID [ID...]              "OK ID" or "ERR 404 ID no such message"
 *   RELEASE ID [ID...]           (or "ERR 500 ID <reason>")
 *   DELETE ALL                -> one "OK ID" line per message deleted
 *   STATS                     -> "STAT name value" lines (CTLPROTO_STAT_*
 *                                names below), then OK
 *
 *   IDs are queue IDs as queue/qid.h spells them (13 characters of
 *   [0-9A-V], the first one 0-3: the same test as qid_valid(), which
 *   control.c applies again); at most CTLPROTO_MAX_IDS per line, and the server allows
 *   CTLPROTO_SESSION_MAX_IDS per connection (a client splits longer lists).
 *
 * Response lines:
 *
 *   OK [text]                 success (of the request, or of one ID)
 *   ERR <code> [text]         failure; code is three digits:
 *                               400 malformed request (bad verb, word, ID,
 *                                   byte outside printable ASCII)
 *                               404 no such message (text starts with the ID)
 *                               413 request line longer than CTLPROTO_LINE_MAX
 *                               429 too many IDs on this connection
 *                               500 internal error (text says which)
 *                               503 the daemon is shutting down
 *   STAT <name> <value>       one figure (name [a-z_.]+, value a decimal)
 *   .                         end of the response
 *
 * A malformed request never closes the connection by itself: it gets
 * "ERR 400 ...\n.\n" and the next line is read (an overlong line is
 * discarded up to its LF first). Idle connections are closed after a
 * timeout (control.c).
 *
 * Also here: ctlproto_ip_listed(), the address match of `etrn_clients`
 * (the SMTP-side way of asking for a flush), kept pure so it is unit-tested.
 *
 * Callers: relay/control.c (server side, loop thread) and tools/mx2ctl.c.
 * Everything is pure: no allocation, no I/O, thread-safe. Parsed views
 * (ptr, len) point into the caller's line and die with it.
 *
 * Errors: 0 or a negative mx2 code: MX2_E_SYNTAX (malformed), MX2_E_INVAL
 * (bad ID or argument), MX2_E_LINE_TOO_LONG (over CTLPROTO_LINE_MAX or an
 * output buffer too small).
 */
#ifndef MX2_CTLPROTO_H
#define MX2_CTLPROTO_H

#include <stddef.h>
#include <stdint.h>

/* A queue ID (queue/qid.h QID_LEN; relay/common cannot include queue/). */
#define CTLPROTO_ID_LEN 13
#define CTLPROTO_ID_SIZE (CTLPROTO_ID_LEN + 1)

#define CTLPROTO_LINE_MAX 4096         /* longest line, with its LF */
#define CTLPROTO_MAX_IDS 256           /* IDs in one request line */
#define CTLPROTO_SESSION_MAX_IDS 10000 /* IDs in one connection */

enum ctlproto_cmd {
    CTLPROTO_PING = 0,
    CTLPROTO_FLUSH,
    CTLPROTO_DELETE,
    CTLPROTO_HOLD,
    CTLPROTO_RELEASE,
    CTLPROTO_STATS,
    CTLPROTO_CMD_COUNT_
};

#define CTLPROTO_F_WAIT 0x1u /* FLUSH WAIT */
#define CTLPROTO_F_ALL 0x2u  /* DELETE ALL */

struct ctlproto_req {
    enum ctlproto_cmd cmd;
    unsigned flags;
    size_t nids;
    char ids[CTLPROTO_MAX_IDS][CTLPROTO_ID_SIZE];
};

/* Response error codes (the three digits after ERR). */
#define CTLPROTO_ERR_BAD_REQUEST 400
#define CTLPROTO_ERR_NOT_FOUND 404
#define CTLPROTO_ERR_TOO_LONG 413
#define CTLPROTO_ERR_TOO_MANY 429
#define CTLPROTO_ERR_INTERNAL 500
#define CTLPROTO_ERR_SHUTDOWN 503

/* STAT names, in the order STATS sends them (mx2ctl stats prints them). */
#define CTLPROTO_STATS_MAP(X)                                                                      \
    X(accepted)                                                                                    \
    X(rejected_relay)                                                                              \
    X(rejected_unknown_user)                                                                       \
    X(rejected_map_unavailable)                                                                    \
    X(rejected_limit)                                                                              \
    X(rejected_other)                                                                              \
    X(delivered)                                                                                   \
    X(deferred)                                                                                    \
    X(bounced)                                                                                     \
    X(expired)                                                                                     \
    X(queue_messages)                                                                              \
    X(queue_bytes)                                                                                 \
    X(queue_held)                                                                                  \
    X(queue_oldest_age_seconds)                                                                    \
    X(primary_up)                                                                                  \
    X(connections_open)                                                                            \
    X(connections_total)                                                                           \
    X(spool_free_bytes)                                                                            \
    X(uptime_seconds)

/* 1 if s[0..len) is a well-formed queue ID (same rule as qid_valid). */
int ctlproto_id_valid(const char *s, size_t len);

/* The name of a command ("FLUSH"...), or "?" */
const char *ctlproto_cmd_name(enum ctlproto_cmd cmd);

/* Find the end of the first line in buf[0..len). Returns 1 and sets
 * *linelen (bytes before the LF; a CR before it is not counted) and
 * *consumed (through the LF); 0 when no LF is there yet and len is below
 * CTLPROTO_LINE_MAX; MX2_E_LINE_TOO_LONG when a line is longer than that
 * (the caller discards up to the next LF). */
int ctlproto_next_line(const char *buf, size_t len, size_t *linelen, size_t *consumed);

/* Parse one request line (without LF; a trailing CR is ignored). IDs are
 * copied into req (upper-cased first: a pasted lower-case ID is accepted).
 * Returns 0; MX2_E_SYNTAX for an empty line, an unknown verb, a byte outside
 * printable ASCII/tab, or extra words; MX2_E_INVAL for a malformed ID, a
 * missing ID, or more than CTLPROTO_MAX_IDS; MX2_E_LINE_TOO_LONG for len >=
 * CTLPROTO_LINE_MAX. On error *why (may be NULL) gets a static message. */
int ctlproto_parse_request(const char *line, size_t len, struct ctlproto_req *req,
                           const char **why);

/* Format a request line with its LF into buf (size bytes, NUL-terminated).
 * ids/nids for DELETE/HOLD/RELEASE (each must pass qid_valid). Returns the
 * length, or MX2_E_INVAL (bad command or ID), MX2_E_LINE_TOO_LONG (does not
 * fit in size or CTLPROTO_LINE_MAX). */
int ctlproto_format_request(enum ctlproto_cmd cmd, unsigned flags, const char *const *ids,
                            size_t nids, char *buf, size_t size);

/* Response line builders: "OK text\n", "ERR code text\n", "STAT name
 * value\n", ".\n". text may be NULL; bytes outside printable ASCII in it
 * become '?', and it is cut so the line stays under CTLPROTO_LINE_MAX.
 * Return the length written (buf NUL-terminated), or MX2_E_LINE_TOO_LONG
 * when size is too small for even a cut line (size < 64). */
int ctlproto_format_ok(char *buf, size_t size, const char *text);
int ctlproto_format_err(char *buf, size_t size, int code, const char *text);
int ctlproto_format_stat(char *buf, size_t size, const char *name, uint64_t value);

enum ctlproto_resp_kind { CTLPROTO_R_OK = 0, CTLPROTO_R_ERR, CTLPROTO_R_STAT, CTLPROTO_R_END };

struct ctlproto_resp {
    enum ctlproto_resp_kind kind;
    int code;         /* ERR: 100..599; else 0 */
    const char *text; /* OK/ERR: the text (may be empty); STAT: the name */
    size_t text_len;
    uint64_t value; /* STAT */
};

/* Parse one response line (without LF; a trailing CR is ignored).
 * Returns 0 or MX2_E_SYNTAX. */
int ctlproto_parse_response(const char *line, size_t len, struct ctlproto_resp *resp);

/* 1 if the textual IP address ip (IPv4 or IPv6; an IPv4-mapped IPv6
 * address counts as its IPv4 address) equals one of list[0..n) under the
 * same normalisation (entries that do not parse never match), else 0. */
int ctlproto_ip_listed(const char *ip, char *const *list, size_t n);

#endif
