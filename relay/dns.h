/*
 * dns.h - MX resolution for delivering bounces to the sender's domain.
 *
 * dns_mx_lookup() BLOCKS (libresolv res_nquery, with its own res_state per
 * call, so it is thread-safe): call it from a libuv threadpool worker
 * (uv_queue_work), never from the loop thread. dns_parse_mx() is the pure,
 * bounds-checked parser of the answer packet, exposed for the unit tests and
 * the fuzz target (tests/fuzz/fuzz_dns.c).
 *
 * Result (RFC 5321 5.1, RFC 7505):
 * - MX records: hosts sorted by preference, ties kept in answer order; names
 *   without the trailing dot. At most `max` hosts (the lowest preferences).
 * - The domain exists but has no MX record (NOERROR, no MX in the answer):
 *   implicit MX - the domain itself with preference 0, *n = 1. The caller
 *   then resolves its A/AAAA records (getaddrinfo) as for any MX host.
 * - Null MX (RFC 7505: the only MX is "."): the domain accepts no mail.
 *   A null MX next to real MX records (which RFC 7505 forbids) is ignored.
 *
 * Errors (the caller treats the first two as permanent - drop the bounce with
 * a log line - and the last two as temporary - retry later):
 *   DNS_E_NULL_MX (== MX2_E_RELAY_DENIED)  null MX: domain accepts no mail
 *   MX2_E_NOT_FOUND                        NXDOMAIN: no such domain
 *   -EAGAIN                                SERVFAIL, REFUSED, timeout, no
 *                                          network / no resolver configured
 *   MX2_E_PROTOCOL                         malformed or truncated answer,
 *                                          unexpected rcode, or MX records
 *                                          none of which names a host
 *   MX2_E_INVAL                            bad arguments (NULL, max == 0,
 *                                          empty or over-long domain)
 * dns_strerror() names these for log lines (mx2_strerror of MX2_E_RELAY_DENIED
 * would say "Relay access denied", which is not what happened).
 * On error *n is 0.
 *
 * Ownership: out is the caller's array of max entries; nothing is allocated.
 */
#ifndef MX2_DNS_H
#define MX2_DNS_H

#include <stddef.h>

#include "err.h"

#define DNS_E_NULL_MX MX2_E_RELAY_DENIED

struct dns_host {
    char name[256];
    unsigned pref;
};

/* Look up the MX hosts of `domain` (blocking). Returns 0 with *n >= 1 hosts,
 * or an error above. */
int dns_mx_lookup(const char *domain, struct dns_host *out, size_t max, size_t *n);

/* Parse a DNS response (header, questions, answers) for MX records.
 * Returns 0 with *n hosts (*n == 0: NOERROR with no MX, i.e. use the implicit
 * MX), DNS_E_NULL_MX, MX2_E_NOT_FOUND (rcode NXDOMAIN), -EAGAIN (rcode
 * SERVFAIL/REFUSED), MX2_E_PROTOCOL (malformed: truncated, bad counts,
 * compression loops or forward pointers, not a response, other rcodes), or
 * MX2_E_INVAL (NULL arguments, max == 0, len < 0). Never reads outside
 * answer[0..len). */
int dns_parse_mx(const unsigned char *answer, int len, struct dns_host *out, size_t max, size_t *n);

/* Text for the codes above in a DNS context ("domain accepts no mail
 * (null MX)", "no such domain", "temporary DNS failure", ...); otherwise
 * mx2_strerror(err). Never NULL. */
const char *dns_strerror(int err);

#endif
