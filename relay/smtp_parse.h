/*
 * smtp_parse.h - SMTP command lines (server side), reply lines (client
 * side), EHLO keywords and RFC 3461 xtext. Pure: no I/O, no libuv.
 *
 * Callers: smtp_session (commands), smtp_client (replies, EHLO keywords,
 * xtext to pass DSN parameters on), queue/envelope users (xtext). Any
 * thread; no global state; no allocation.
 *
 * Ownership: lines are borrowed and need not be NUL-terminated. Fields of
 * struct smtp_cmd named *_ptr/arg point INTO the caller's line and die with
 * it (STYLE.md "parsed views"); everything else (path, envid, orcpt) is
 * copied into the struct. struct smtp_reply owns a fixed buffer.
 *
 * Errors: smtp_parse_command() returns 0 or an mx2 code whose err.h entry is
 * the exact reply to send:
 *   MX2_E_SYNTAX          500 5.5.2  unknown command, NUL or 8-bit in the line
 *   MX2_E_INVAL           501 5.5.4  bad arguments (missing FROM:/TO:, bad or
 *                                    duplicate parameter value, argument to
 *                                    a command that takes none, ...)
 *   MX2_E_BAD_SENDER      501 5.1.7  MAIL path does not parse
 *   MX2_E_BAD_ADDRESS     501 5.1.3  RCPT path does not parse
 *   MX2_E_BAD_PARAM       555 5.5.4  unknown ESMTP parameter
 * Even on error out->verb is set (UNKNOWN for an unknown command) so the
 * session can count errors per verb. Whether a recognised verb is allowed
 * (BDAT, AUTH, EXPN -> 502 5.5.1 MX2_E_NOT_IMPLEMENTED; ETRN for listed
 * clients only; STARTTLS when configured) is the session's decision.
 * Reply-side functions return MX2_E_PROTOCOL for malformed replies.
 */
#ifndef MX2_SMTP_PARSE_H
#define MX2_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

enum smtp_verb {
    SMTP_V_UNKNOWN = 0,
    SMTP_V_EHLO,
    SMTP_V_HELO,
    SMTP_V_MAIL,
    SMTP_V_RCPT,
    SMTP_V_DATA,
    SMTP_V_RSET,
    SMTP_V_NOOP,
    SMTP_V_QUIT,
    SMTP_V_VRFY,
    SMTP_V_EXPN,
    SMTP_V_HELP,
    SMTP_V_STARTTLS,
    SMTP_V_ETRN,
    SMTP_V_BDAT,
    SMTP_V_AUTH,
    SMTP_V_COUNT_
};

/* Upper-case name of a verb ("UNKNOWN" for SMTP_V_UNKNOWN); never NULL. */
const char *smtp_verb_name(enum smtp_verb v);

enum smtp_body { SMTP_BODY_NONE = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };
enum smtp_ret { SMTP_RET_NONE = 0, SMTP_RET_FULL, SMTP_RET_HDRS };

/* RCPT NOTIFY= (RFC 3461 4.1); 0 = parameter not given. */
#define SMTP_NOTIFY_NEVER 0x1u
#define SMTP_NOTIFY_SUCCESS 0x2u
#define SMTP_NOTIFY_FAILURE 0x4u
#define SMTP_NOTIFY_DELAY 0x8u

/* RFC 3461 4.4: ENVID at most 100 characters (xtext-encoded); 4.2: ORCPT at
 * most 500 characters. Decoded values are never longer than encoded ones. */
#define SMTP_ENVID_MAX 100
#define SMTP_ORCPT_MAX 500

/* Input flags of smtp_parse_command(). */
#define SMTP_PARSE_UTF8 0x1u /* the transaction's MAIL had SMTPUTF8: allow UTF-8 in RCPT paths */

struct smtp_cmd {
    enum smtp_verb verb;
    /* Argument text after the verb and one space, trailing blanks removed
     * (EHLO/HELO domain, VRFY/EXPN/HELP/ETRN/NOOP/AUTH/BDAT argument).
     * Borrowed from the line; arg_len 0 when absent. For MAIL/RCPT: the
     * whole text after the verb. */
    const char *arg;
    size_t arg_len;

    /* MAIL / RCPT: the parsed path (ADDR_F_NULL for "<>" in MAIL). */
    struct addr_path path;

    /* MAIL parameters. */
    bool has_size;
    uint64_t size;           /* SIZE= */
    enum smtp_body body;     /* BODY= */
    bool smtputf8;           /* SMTPUTF8 */
    enum smtp_ret ret;       /* RET= */
    bool has_envid;
    char envid[SMTP_ENVID_MAX + 1]; /* ENVID=, xtext-decoded, NUL-terminated */
    size_t envid_len;
    bool has_auth;           /* AUTH= was given (accepted and ignored) */

    /* RCPT parameters. */
    unsigned notify;         /* SMTP_NOTIFY_* mask; 0 = not given */
    bool has_orcpt;
    char orcpt[SMTP_ORCPT_MAX + 1]; /* ORCPT=rfc822;... address, decoded, NUL-terminated */
    size_t orcpt_len;
};

/* Parse one command line WITHOUT its CRLF. flags: SMTP_PARSE_*. Returns 0 or
 * an error from the table above; out is always initialised. */
int smtp_parse_command(const char *line, size_t len, unsigned flags, struct smtp_cmd *out);

/* --- xtext (RFC 3461 section 4) ---------------------------------------- */

/* Decode xtext: xchar is '!'..'~' except '+' and '='; "+XX" is one octet
 * (hex digits upper case per the RFC; lower case is tolerated). Decoded
 * octets must be printable US-ASCII or space (RFC 3461 4.2/4.4) - NUL,
 * controls and 8-bit are refused. Writes at most outsize-1 bytes plus a NUL.
 * Returns 0 and *outlen, or MX2_E_INVAL (bad xtext or out too small). */
int smtp_xtext_decode(const char *in, size_t inlen, char *out, size_t outsize, size_t *outlen);

/* Encode octets as xtext ('+', '=', and anything outside '!'..'~' become
 * "+XX"). out needs 3*inlen+1 bytes at most. Returns 0 and *outlen, or
 * MX2_E_INVAL when out is too small (out then holds ""). */
int smtp_xtext_encode(const char *in, size_t inlen, char *out, size_t outsize, size_t *outlen);

/* --- replies (client side) ---------------------------------------------- */

/* One reply line WITHOUT its CRLF: "250-text", "250 text" or a bare "250". */
struct smtp_reply_line {
    int code;          /* 200..599 */
    bool is_last;      /* ' ' or end of line after the code; '-' = more lines follow */
    bool has_ecode;
    char ecode[12];    /* "X.Y.Z" when has_ecode (class X equals the code's first digit) */
    const char *text;  /* after the code, separator and enhanced code; borrowed */
    size_t text_len;
};

/* Returns 0 or MX2_E_PROTOCOL (not three digits 2xx-5xx, bad separator, NUL). */
int smtp_parse_reply_line(const char *line, size_t len, struct smtp_reply_line *out);

/* Multi-line reply accumulator. Bounds: SMTP_REPLY_MAX_LINES lines and
 * SMTP_REPLY_TEXT_MAX bytes of joined text; exceeding either, mixing codes
 * across lines, or a malformed line is MX2_E_PROTOCOL. */
#define SMTP_REPLY_MAX_LINES 128
#define SMTP_REPLY_TEXT_MAX 8192

struct smtp_reply {
    int code;              /* of the first line */
    bool has_ecode;
    char ecode[12];        /* of the first line that had one */
    unsigned nlines;
    bool done;             /* the last line ("NNN ...") was added */
    size_t text_len;
    /* Every line's text (enhanced code stripped), joined with '\n',
     * NUL-terminated. */
    char text[SMTP_REPLY_TEXT_MAX + 1];
};

void smtp_reply_init(struct smtp_reply *r);

/* Add one line (without CRLF). Returns 1 when the reply is complete (r->done),
 * 0 when more lines are expected, MX2_E_PROTOCOL on a malformed, mixed-code
 * or oversized reply (r is then unusable until smtp_reply_init), or
 * MX2_E_INVAL when called after done. */
int smtp_reply_add_line(struct smtp_reply *r, const char *line, size_t len);

/* --- EHLO keywords ------------------------------------------------------ */

#define SMTP_AUTH_PLAIN 0x1u
#define SMTP_AUTH_LOGIN 0x2u
#define SMTP_AUTH_CRAM_MD5 0x4u
#define SMTP_AUTH_OTHER 0x8u /* some other mechanism was listed */

#define SMTP_XF_NAME 0x1u
#define SMTP_XF_ADDR 0x2u
#define SMTP_XF_PROTO 0x4u
#define SMTP_XF_HELO 0x8u
#define SMTP_XF_SOURCE 0x10u
#define SMTP_XF_PORT 0x20u
#define SMTP_XF_IDENT 0x40u

struct smtp_ehlo {
    bool pipelining;
    bool has_size;      /* SIZE was listed */
    uint64_t size;      /* SIZE n; 0 = listed without a number (no fixed limit) */
    bool eightbitmime;
    bool smtputf8;
    bool dsn;
    bool starttls;
    bool enhancedstatuscodes;
    bool chunking;
    unsigned auth;      /* SMTP_AUTH_* */
    unsigned xforward;  /* SMTP_XF_*; 0 = XFORWARD not offered */
};

/* Read the keywords of a complete 250 EHLO reply (first line = greeting,
 * skipped). Unknown keywords are ignored. Returns 0, or MX2_E_PROTOCOL if
 * r is not a complete 2xx reply. */
int smtp_ehlo_parse(const struct smtp_reply *r, struct smtp_ehlo *out);

/* One keyword line's text (e.g. "SIZE 10240000", "AUTH PLAIN LOGIN"),
 * merged into out (which the caller zeroes first). */
void smtp_ehlo_parse_line(const char *text, size_t len, struct smtp_ehlo *out);

#endif
