/*
 * envelope.h - a queued message's envelope and its on-disk encoding.
 *
 * The envelope is everything about a message but its bytes: who sent it from
 * where (client, HELO, TLS), to whom (recipients, each with its own delivery
 * state), DSN parameters (RFC 3461) and the retry schedule. The spool stores
 * it, encoded by envelope_encode(), under the message's queue ID; see
 * queue/README.md for the byte layout.
 *
 * Decoding is the trust boundary: a spool record may have been damaged (disk,
 * bug, hand editing), so envelope_decode() checks every length against the
 * bytes that are really there, every enum against its range, every string for
 * forbidden bytes, the limits below and a CRC-32 over the whole record, and
 * refuses anything else with MX2_E_CORRUPT. It never reads out of bounds and
 * never allocates more than the input could justify.
 *
 * Callers: queue/spool.c (any thread it runs on), the SMTP session (builds an
 * envelope for spool_commit), the flusher, mx2ctl. Pure: no I/O, no globals,
 * thread-safe on distinct envelopes.
 *
 * Ownership: strings are NUL-terminated and owned by the struct when it came
 * from envelope_decode() or envelope_dup(); envelope_free() frees every
 * non-NULL string, the recipient array, and zeroes the struct (no-op on a
 * zeroed struct or NULL). An envelope built by a caller for encoding may point
 * at borrowed strings: encode only reads them (then do not call
 * envelope_free on it). NULL strings encode as empty; decode always yields
 * non-NULL strings ("" when empty).
 *
 * Errors: 0, MX2_E_INVAL (encode: a field out of range, a forbidden byte,
 * a limit exceeded), MX2_E_CORRUPT (decode).
 */
#ifndef MX2_ENVELOPE_H
#define MX2_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qid.h"

#define ENVELOPE_VERSION 1
#define ENVELOPE_MAX_RCPTS 100000
#define ENVELOPE_MAX_STR 4096   /* any string field, in bytes */
#define ENVELOPE_MAX_ERROR 512  /* a recipient's last error text, in bytes */

/* Recipient delivery state. */
enum envelope_rcpt_state {
    ENVELOPE_RCPT_PENDING = 0,  /* never tried */
    ENVELOPE_RCPT_DONE = 1,     /* accepted by the primary (2xx): never resent */
    ENVELOPE_RCPT_BOUNCED = 2,  /* 5xx or expired: a DSN is (to be) sent */
    ENVELOPE_RCPT_DEFERRED = 3, /* 4xx or no connection: retry later */
};

/* RCPT NOTIFY= (RFC 3461 4.1). 0 = not given (default: FAILURE,DELAY).
 * NEVER is exclusive. */
#define ENVELOPE_NOTIFY_NEVER 0x1u
#define ENVELOPE_NOTIFY_SUCCESS 0x2u
#define ENVELOPE_NOTIFY_FAILURE 0x4u
#define ENVELOPE_NOTIFY_DELAY 0x8u

/* Per-recipient flags. */
#define ENVELOPE_RF_DSN_SENT 0x1u /* the bounce (or success DSN) for it went out */

/* MAIL RET= (RFC 3461 4.3). */
enum envelope_ret {
    ENVELOPE_RET_NONE = 0,
    ENVELOPE_RET_FULL = 1,
    ENVELOPE_RET_HDRS = 2,
};

/* How the message came in (for Received: and XFORWARD PROTO=). */
enum envelope_proto {
    ENVELOPE_PROTO_SMTP = 0,
    ENVELOPE_PROTO_ESMTP = 1,
    ENVELOPE_PROTO_ESMTPS = 2,
};

/* Message flags. */
#define ENVELOPE_F_SMTPUTF8 0x1u /* MAIL ... SMTPUTF8 */
#define ENVELOPE_F_8BITMIME 0x2u /* MAIL ... BODY=8BITMIME */
#define ENVELOPE_F_HOLD 0x4u     /* parked by the operator: not delivered */
#define ENVELOPE_F_WARNED 0x8u   /* the delay warning was sent */
#define ENVELOPE_F_ALL_ 0xfu

struct envelope_rcpt {
    char *address;        /* the RCPT TO path, without <>; never empty */
    char *orcpt;          /* ORCPT= as received ("rfc822;x@y"), "" when absent */
    unsigned notify;      /* ENVELOPE_NOTIFY_* bits */
    enum envelope_rcpt_state state;
    unsigned flags;       /* ENVELOPE_RF_* */
    uint32_t attempts;    /* delivery attempts for this recipient */
    int64_t last_attempt; /* unix seconds, 0 = never */
    char *last_error;     /* last reply/error text, <= ENVELOPE_MAX_ERROR bytes */
};

struct envelope {
    char qid[QID_SIZE];      /* set by the spool at commit */
    int64_t arrival_sec;     /* unix time of the 250 (set by the caller) */
    uint32_t arrival_usec;   /* 0..999999 */
    char *sender;            /* MAIL FROM path without <>; "" for <> */
    uint64_t size;           /* bytes of the stored body (set by the spool) */
    char *client_addr;       /* "192.0.2.1" / "2001:db8::1" */
    char *client_name;       /* reverse name, "unknown" or "" */
    char *helo;              /* HELO/EHLO argument */
    enum envelope_proto proto;
    char *tls_cipher;        /* "TLS1.3 TLS_AES_256_GCM_SHA384" or "" */
    unsigned flags;          /* ENVELOPE_F_* */
    enum envelope_ret ret;
    char *envid;             /* ENVID= (xtext as received) or "" */
    uint32_t attempts;       /* delivery rounds that tried this message */
    int64_t first_failure;   /* unix seconds of the first temporary failure, 0 none */
    int64_t next_attempt;    /* unix seconds; 0 = as soon as possible */
    struct envelope_rcpt *rcpts;
    size_t nrcpt;            /* 1..ENVELOPE_MAX_RCPTS */
};

/* Encode into a new buffer (xmalloc'd, *out owned by the caller, free()).
 * Returns 0 or MX2_E_INVAL. The qid must be set and valid. */
int envelope_encode(const struct envelope *env, unsigned char **out, size_t *outlen);

/* The exact number of bytes envelope_encode would produce (0 when invalid). */
size_t envelope_encoded_size(const struct envelope *env);

/* Encode into buf[0..cap) (cap >= envelope_encoded_size). Returns 0 and sets
 * *outlen, or MX2_E_INVAL (including cap too small). */
int envelope_encode_to(const struct envelope *env, unsigned char *buf, size_t cap,
                       size_t *outlen);

/* Decode data[0..len) into *out (overwritten, owned by the caller, release with
 * envelope_free). Returns 0 or MX2_E_CORRUPT; on error *out is zeroed. */
int envelope_decode(const void *data, size_t len, struct envelope *out);

/* Deep copy. Returns 0 (allocation failure is fatal). */
int envelope_dup(const struct envelope *src, struct envelope *dst);

void envelope_free(struct envelope *env);

/* Store `text` (len bytes, need not be NUL-terminated) as the recipient's last
 * error: truncated to ENVELOPE_MAX_ERROR bytes (on a UTF-8 boundary), control
 * characters (CR, LF, TAB, ...) replaced by spaces, so any reply text a
 * primary sends can be stored. Frees the previous text (the envelope must own
 * its strings). */
void envelope_set_error(struct envelope_rcpt *r, const char *text, size_t len);

/* Names for logs and mx2ctl. */
const char *envelope_rcpt_state_name(enum envelope_rcpt_state s); /* "pending" ... */
const char *envelope_proto_name(enum envelope_proto p);            /* "ESMTPS" ... */
const char *envelope_ret_name(enum envelope_ret r);                /* "", "FULL", "HDRS" */

/* Recipients still to deliver (pending or deferred). */
size_t envelope_pending_count(const struct envelope *env);

/* CRC-32 (IEEE 802.3, as zlib) of data; the record's trailer. Exposed for the
 * fuzz target, which repairs the CRC of mutated records to reach the field
 * checks behind it. */
uint32_t envelope_crc32(const void *data, size_t len);
/* The CRC-32 of (the bytes crc was computed over) followed by data, as zlib's
 * crc32(crc, data, len); envelope_crc32(d, n) == envelope_crc32_update(0, d, n). */
uint32_t envelope_crc32_update(uint32_t crc, const void *data, size_t len);

#endif
