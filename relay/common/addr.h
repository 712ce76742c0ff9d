/*
 * addr.h - RFC 5321 paths: parse "<local@domain>", judge the relay domain,
 * format back to "local@domain".
 *
 * Purpose: the one address parser of mx2. The SMTP session parses MAIL FROM
 * and RCPT TO paths with it (through smtp_parse), and the tools (mx2map) use
 * the same code, so that mx2d and the map builder agree on what an address
 * is. Being a backup MX that the primary trusts, mx2 must never become an
 * open relay: addr_relay_check() is the single place that decides whether a
 * parsed recipient is one mx2 may accept, and it refuses every routing trick
 * (percent hack, bang path, quoted '@', source route, IP literal) whatever
 * the recipient map would say (SPEC.md "SMTP behaviour (inbound)").
 *
 * Callers and thread: pure functions over caller memory; any thread. No
 * allocation, no I/O, no uv.h.
 *
 * Ownership: struct addr_path is a plain value (fixed arrays); copy it
 * freely. Input strings are borrowed for the call only and need not be
 * NUL-terminated.
 *
 * Errors: 0 on success; MX2_E_BAD_ADDRESS for any syntax problem (the caller
 * picks the reply: 501 5.1.7 for a sender, 501 5.1.3 for a recipient);
 * MX2_E_RELAY_DENIED from addr_relay_check(); MX2_E_INVAL from
 * addr_format() when the buffer is too small.
 */
#ifndef MX2_ADDR_H
#define MX2_ADDR_H

#include <stddef.h>

/* RFC 5321 4.5.3.1: local part 64 octets, domain 255, path 256 (including
 * the angle brackets). The local-part limit is applied to the form written
 * on the wire (quotes and backslashes included). */
#define ADDR_LOCAL_MAX 64
#define ADDR_DOMAIN_MAX 255
#define ADDR_PATH_MAX 256

/* Buffer size that always holds addr_format()'s output plus its NUL: a
 * re-quoted local part (each octet may gain a backslash, plus two quotes),
 * '@', the domain. */
#define ADDR_TEXT_MAX (2 * ADDR_LOCAL_MAX + 2 + 1 + ADDR_DOMAIN_MAX + 1)

/* Input flags of addr_parse_path(). */
enum addr_parse_flag {
    ADDR_PARSE_NULL = 1u << 0,  /* accept "<>" (MAIL FROM only) */
    ADDR_PARSE_UTF8 = 1u << 1,  /* accept 8-bit UTF-8 in local part and domain (SMTPUTF8) */
    ADDR_PARSE_BARE = 1u << 2,  /* also accept "local@domain" without angle brackets
                                   (tools and config; never used for SMTP commands) */
};

/* What the parser saw (struct addr_path.flags). */
enum addr_seen_flag {
    ADDR_F_NULL = 1u << 0,           /* the null path "<>": local and domain are empty */
    ADDR_F_QUOTED = 1u << 1,         /* the local part was a quoted string */
    ADDR_F_ROUTE = 1u << 2,          /* a source route "@a,@b:" preceded the mailbox (ignored) */
    ADDR_F_HAS_PERCENT = 1u << 3,    /* '%' in the local part (percent hack) */
    ADDR_F_HAS_BANG = 1u << 4,       /* '!' in the local part (UUCP bang path) */
    ADDR_F_HAS_AT_IN_LOCAL = 1u << 5,/* '@' inside a quoted local part */
    ADDR_F_IP_LITERAL = 1u << 6,     /* domain is an address literal [1.2.3.4] / [IPv6:...] */
    ADDR_F_TRAILING_DOT = 1u << 7,   /* "user@example.jp." (the dot was removed) */
    ADDR_F_UTF8 = 1u << 8,           /* 8-bit octets in local part or domain */
    ADDR_F_HAS_ROUTE_CHAR = 1u << 9, /* ':' or ',' inside a quoted local part */
};

struct addr_path {
    /* The local part as the primary will see it: quotes removed and
     * backslash escapes resolved ("a b"@x -> `a b`). Never contains NUL
     * (RFC 5321 qtext/quoted-pair exclude it). */
    char local[ADDR_LOCAL_MAX + 1];
    size_t local_len;
    /* Lower-cased (ASCII only), without a trailing dot. An address literal
     * keeps its brackets: "[198.51.100.1]", "[ipv6:2001:db8::1]". */
    char domain[ADDR_DOMAIN_MAX + 1];
    size_t domain_len;
    unsigned flags; /* enum addr_seen_flag */
};

/* Parse one path, e.g. "<user@example.jp>", "<@a,@b:user@c>", "<>".
 * Leading and trailing spaces/tabs around the path are ignored. `flags` is a
 * mask of enum addr_parse_flag. Returns 0 (out filled) or
 * MX2_E_BAD_ADDRESS (out zeroed). */
int addr_parse_path(const char *s, size_t len, unsigned flags, struct addr_path *out);

/* Length of the bracketed path at the start of s: s[0] must be '<'; the
 * result is the offset just past the matching '>', skipping '>' inside a
 * quoted string or after a backslash. Lets smtp_parse split
 * `<"a>b"@x> SIZE=1` into path and parameters. Returns 0 and sets *end, or
 * MX2_E_BAD_ADDRESS when there is no closing '>'. */
int addr_path_end(const char *s, size_t len, size_t *end);

/* The open-relay gate. Returns 0 when the final domain is one of
 * relay_domains (exact, ASCII case-insensitive, trailing dot ignored on
 * either side) and the local part carries no routing character;
 * MX2_E_RELAY_DENIED otherwise (foreign domain, IP literal, '%', '!',
 * quoted '@', quoted ':' or ',', null path). relay_domains are borrowed. */
int addr_relay_check(const struct addr_path *a, char *const *relay_domains, size_t n);

/* 1 if `domain` (len bytes) equals one of relay_domains under the rules of
 * addr_relay_check(), else 0. */
int addr_domain_listed(const char *domain, size_t len, char *const *relay_domains, size_t n);

/* Write "local@domain" (NUL-terminated) into buf, re-quoting the local part
 * when it is not a dot-atom (RFC 5321 4.1.2 Quoted-string). The null path
 * gives "". *outlen (may be NULL) gets the length without the NUL. A buffer
 * of ADDR_TEXT_MAX bytes always suffices. Returns 0 or MX2_E_INVAL (buffer
 * too small; buf then holds ""). */
int addr_format(const struct addr_path *a, char *buf, size_t size, size_t *outlen);

/* 1 if the local part needs quoting to be sent in a path (not a dot-atom). */
int addr_local_needs_quotes(const char *local, size_t len);

#endif
