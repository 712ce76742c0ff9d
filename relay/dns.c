/*
 * dns.c - MX lookup (blocking, libresolv) and a hand-written MX answer
 * parser (see dns.h).
 *
 * Why a hand-written parser rather than ns_initparse()/ns_parserr(): the
 * answer comes from the network, and dns_parse_mx() is a fuzz target, so
 * every rule is spelled out here where it can be read and tested:
 * - every read is checked against the packet length first;
 * - a compression pointer (RFC 1035 4.1.4) must point backwards, before the
 *   pointer itself, and a name may follow at most DNS_MAX_HOPS pointers: a
 *   loop or a forward pointer is a malformed packet, not a hang;
 * - the counts in the header are believed only as far as the bytes go: an
 *   answer count larger than the records present is a malformed packet;
 * - an MX record's RDATA must be exactly preference + exchange name;
 * - a name longer than 255 octets on the wire, or a label type other than
 *   plain or pointer (RFC 6891 removed the others), is malformed;
 * - an exchange that is not a host name (octets outside letters, digits,
 *   '-' and '_') is skipped rather than handed to the connector: it could
 *   only be a mistake or an attack, and the other MX hosts still work.
 * Records other than IN MX (a CNAME in front of them, for instance) are
 * skipped; authority and additional sections are not read.
 *
 * Why res_nquery with a res_state on the stack: res_query() shares the
 * global _res and h_errno between threads; res_ninit/res_nquery/res_nclose
 * on a private state are safe in the threadpool. res_nquery, not
 * res_nsearch: the domain is a mail domain, never a name to complete with
 * the local search list.
 */
#include "dns.h"

#include <errno.h>
#include <netdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/nameser.h>
#include <netinet/in.h>
#include <resolv.h>

#include "xalloc.h"

#define DNS_HDR_LEN 12
#define DNS_MAX_HOPS 64
#define DNS_TYPE_MX 15
#define DNS_CLASS_IN 1
#define DNS_ANSWER_MAX 65536 /* the largest DNS message (TCP length field) */

enum { DNS_NAME_OK = 0, DNS_NAME_NOT_HOST = 1, DNS_NAME_BAD = -1 };

static unsigned
dns_u16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

static int
dns_host_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Read the (possibly compressed) name at msg[off]. On DNS_NAME_OK or
 * DNS_NAME_NOT_HOST, *next is the offset just after the name where it
 * started (after the first pointer, or after the root label), and when out
 * is not NULL it holds the name in lower case, labels joined by '.', no
 * trailing dot ("" for the root). DNS_NAME_BAD: malformed (see the file
 * comment). */
static int
dns_read_name(const unsigned char *msg, size_t len, size_t off, char *out, size_t outsize,
              size_t *next)
{
    size_t pos = off, o = 0, wire = 0;
    int hops = 0, host = 1;
    size_t after = 0;
    int jumped = 0;

    if (out != NULL && outsize < 256)
        return DNS_NAME_BAD; /* a caller bug; 256 holds any name */
    for (;;) {
        if (pos >= len)
            return DNS_NAME_BAD;
        unsigned l = msg[pos];
        if ((l & 0xc0) == 0xc0) {
            if (pos + 1 >= len)
                return DNS_NAME_BAD;
            size_t target = (size_t)(l & 0x3f) << 8 | msg[pos + 1];
            if (target >= pos || ++hops > DNS_MAX_HOPS)
                return DNS_NAME_BAD; /* forward/self pointer, or a loop */
            if (!jumped)
                after = pos + 2;
            jumped = 1;
            pos = target;
            continue;
        }
        if (l & 0xc0)
            return DNS_NAME_BAD; /* 0x40/0x80: obsolete extended label types */
        wire += l + 1;
        if (wire > 255)
            return DNS_NAME_BAD; /* RFC 1035 3.1: 255 octets at most */
        if (l == 0) {
            pos++;
            break;
        }
        if (pos + 1 + l > len)
            return DNS_NAME_BAD;
        if (out != NULL) {
            if (o > 0)
                out[o++] = '.';
            for (unsigned i = 0; i < l; i++) {
                unsigned char c = msg[pos + 1 + i];
                if (!dns_host_char(c))
                    host = 0;
                out[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            }
        }
        pos += 1 + l;
    }
    /* wire <= 255 bounds the text: labels + dots < 255 < outsize. */
    if (out != NULL)
        out[o] = '\0';
    *next = jumped ? after : pos;
    return host ? DNS_NAME_OK : DNS_NAME_NOT_HOST;
}

/* Insert h into out[0..*n) sorted by preference, after any equal ones
 * (answer order for ties), keeping at most max; a name already present keeps
 * its lower preference. */
static void
dns_insert(struct dns_host *out, size_t max, size_t *n, const char *name, unsigned pref)
{
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(out[i].name, name) == 0) {
            if (out[i].pref <= pref)
                return;
            memmove(&out[i], &out[i + 1], (*n - i - 1) * sizeof(*out));
            (*n)--;
            break;
        }
    }
    size_t at = *n;
    while (at > 0 && out[at - 1].pref > pref)
        at--;
    if (at >= max)
        return; /* worse than everything kept */
    size_t keep = *n < max ? *n : max - 1;
    memmove(&out[at + 1], &out[at], (keep - at) * sizeof(*out));
    snprintf(out[at].name, sizeof(out[at].name), "%s", name);
    out[at].pref = pref;
    *n = keep + 1;
}

static int
dns_parse_answer(const unsigned char *answer, int len, struct dns_host *out, size_t max, size_t *n)
{
    size_t L = (size_t)len;
    if (L < DNS_HDR_LEN)
        return MX2_E_PROTOCOL;
    unsigned flags = dns_u16(answer + 2);
    if (!(flags & 0x8000))
        return MX2_E_PROTOCOL; /* QR = 0: a query, not a response */
    switch (flags & 0x000f) {
    case 0:
        break;
    case 3:
        return MX2_E_NOT_FOUND; /* NXDOMAIN */
    case 2:                     /* SERVFAIL */
    case 5:                     /* REFUSED */
        return -EAGAIN;
    default:
        return MX2_E_PROTOCOL;
    }
    unsigned qd = dns_u16(answer + 4), an = dns_u16(answer + 6);
    size_t pos = DNS_HDR_LEN;
    char name[256];
    int null_mx = 0, skipped = 0;

    for (unsigned i = 0; i < qd; i++) {
        if (dns_read_name(answer, L, pos, NULL, 0, &pos) == DNS_NAME_BAD || L - pos < 4)
            return MX2_E_PROTOCOL;
        pos += 4; /* QTYPE, QCLASS */
    }
    for (unsigned i = 0; i < an; i++) {
        if (dns_read_name(answer, L, pos, NULL, 0, &pos) == DNS_NAME_BAD || L - pos < 10)
            return MX2_E_PROTOCOL;
        unsigned type = dns_u16(answer + pos), cls = dns_u16(answer + pos + 2);
        size_t rdlen = dns_u16(answer + pos + 8);
        pos += 10;
        if (L - pos < rdlen)
            return MX2_E_PROTOCOL;
        size_t end = pos + rdlen;
        if (type == DNS_TYPE_MX && cls == DNS_CLASS_IN) {
            size_t after;
            if (rdlen < 3)
                return MX2_E_PROTOCOL;
            unsigned pref = dns_u16(answer + pos);
            /* The name is read against the whole packet (its pointers may
             * reach back before this record) but must end with the RDATA. */
            int rc = dns_read_name(answer, end, pos + 2, name, sizeof(name), &after);
            if (rc == DNS_NAME_BAD || after != end)
                return MX2_E_PROTOCOL;
            if (name[0] == '\0')
                null_mx = 1; /* RFC 7505: "." */
            else if (rc == DNS_NAME_OK)
                dns_insert(out, max, n, name, pref);
            else
                skipped++;
        }
        pos = end;
    }
    /* RFC 7505 3: a null MX must be the only MX. One published next to real
     * hosts is a configuration mistake; the real hosts win. */
    if (*n == 0 && null_mx)
        return DNS_E_NULL_MX;
    /* MX records exist but none names a host: not a case for the implicit
     * MX (the domain did publish MX records), and not provably permanent. */
    if (*n == 0 && skipped > 0)
        return MX2_E_PROTOCOL;
    return 0;
}

int
dns_parse_mx(const unsigned char *answer, int len, struct dns_host *out, size_t max, size_t *n)
{
    if (n != NULL)
        *n = 0;
    if (answer == NULL || out == NULL || n == NULL || max == 0 || len < 0)
        return MX2_E_INVAL;
    /* Hosts found before a later record turns out malformed are not
     * reported: a half-parsed answer is no answer. */
    int rc = dns_parse_answer(answer, len, out, max, n);
    if (rc != 0)
        *n = 0;
    return rc;
}

/* The domain must be an ASCII host name (an IDN in its A-label form): the
 * resolver would otherwise be asked for something no MX can have. */
static int
dns_check_domain(const char *d, char *lower, size_t size)
{
    size_t n = strlen(d);
    if (n > 0 && d[n - 1] == '.')
        n--;
    if (n == 0 || n > 253 || n >= size || d[0] == '.')
        return MX2_E_INVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c == '.') {
            if (d[i + 1] == '.')
                return MX2_E_INVAL;
        } else if (!dns_host_char(c)) {
            return MX2_E_INVAL;
        }
        lower[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    lower[n] = '\0';
    return 0;
}

int
dns_mx_lookup(const char *domain, struct dns_host *out, size_t max, size_t *n)
{
    char name[256];
    struct __res_state st;
    int rc;

    if (n != NULL)
        *n = 0;
    if (domain == NULL || out == NULL || n == NULL || max == 0)
        return MX2_E_INVAL;
    if ((rc = dns_check_domain(domain, name, sizeof(name))) != 0)
        return rc;

    memset(&st, 0, sizeof(st));
    if (res_ninit(&st) != 0)
        return -EAGAIN; /* no resolver configuration: try again later */
    unsigned char *ans = xmalloc(DNS_ANSWER_MAX);
    int len = res_nquery(&st, name, C_IN, T_MX, ans, DNS_ANSWER_MAX);
    if (len < 0) {
        /* res_nquery folds the rcode and "no answer" into h_errno. */
        switch (st.res_h_errno) {
        case HOST_NOT_FOUND:
            rc = MX2_E_NOT_FOUND;
            break;
        case NO_DATA:
            rc = 0; /* the name exists, it has no MX: implicit MX below */
            break;
        case NO_RECOVERY: /* FORMERR, NOTIMP, REFUSED from the server */
        case TRY_AGAIN:   /* SERVFAIL, timeout */
        default:          /* no network, no server */
            rc = -EAGAIN;
            break;
        }
    } else {
        if (len > DNS_ANSWER_MAX)
            len = DNS_ANSWER_MAX;
        rc = dns_parse_mx(ans, len, out, max, n);
    }
    free(ans);
    res_nclose(&st);
    if (rc == 0 && *n == 0) {
        /* RFC 5321 5.1: no MX, the domain itself is the implicit MX. */
        snprintf(out[0].name, sizeof(out[0].name), "%s", name);
        out[0].pref = 0;
        *n = 1;
    }
    if (rc != 0)
        *n = 0;
    return rc;
}

const char *
dns_strerror(int err)
{
    switch (err) {
    case DNS_E_NULL_MX:
        return "domain accepts no mail (null MX)";
    case MX2_E_NOT_FOUND:
        return "no such domain";
    case -EAGAIN:
        return "temporary DNS failure";
    case MX2_E_PROTOCOL:
        return "malformed DNS answer";
    default:
        return mx2_strerror(err);
    }
}
