/*
 * test_dns.c - the MX answer parser on hand-built DNS packets (no network):
 * sorting and ties, compression, truncation to max, duplicates, NODATA,
 * null MX (RFC 7505), rcodes, and malformed packets - every truncation of a
 * good packet, compression loops and forward pointers, wrong counts, bad
 * RDATA lengths, over-long names, obsolete label types. dns_mx_lookup() is
 * tested only for argument checks, which fail before any network access.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "dns.h"
#include "err.h"

/* ---- packet builder ---- */

struct pkt {
    unsigned char b[4096];
    size_t n;
};

static void
put8(struct pkt *p, unsigned v)
{
    assert_true(p->n < sizeof(p->b));
    p->b[p->n++] = (unsigned char)v;
}

static void
put16(struct pkt *p, unsigned v)
{
    put8(p, v >> 8);
    put8(p, v & 0xff);
}

static void
put32(struct pkt *p, uint32_t v)
{
    put16(p, v >> 16);
    put16(p, v & 0xffff);
}

/* Labels of a dotted name; "" is the root. Ends with a zero label unless
 * ptr >= 0, in which case a compression pointer to ptr ends it. */
static void
put_name(struct pkt *p, const char *name, int ptr)
{
    const char *s = name;
    while (*s) {
        const char *dot = strchr(s, '.');
        size_t l = dot ? (size_t)(dot - s) : strlen(s);
        put8(p, (unsigned)l);
        for (size_t i = 0; i < l; i++)
            put8(p, (unsigned char)s[i]);
        s += l;
        if (*s == '.')
            s++;
    }
    if (ptr >= 0)
        put16(p, 0xc000u | (unsigned)ptr);
    else
        put8(p, 0);
}

static void
header(struct pkt *p, unsigned flags, unsigned qd, unsigned an)
{
    p->n = 0;
    put16(p, 0x1234);
    put16(p, flags);
    put16(p, qd);
    put16(p, an);
    put16(p, 0);
    put16(p, 0);
}

#define RESP 0x8180u /* QR, RD, RA, rcode 0 */
#define QNAME_OFF 12 /* the question's name starts right after the header */

static void
question(struct pkt *p, const char *name)
{
    put_name(p, name, -1);
    put16(p, 15); /* MX */
    put16(p, 1);  /* IN */
}

/* An MX record owned by the question name; the exchange is `name` ended by
 * a pointer to `ptr` (or a root label when ptr < 0). */
static void
mx(struct pkt *p, unsigned pref, const char *name, int ptr)
{
    put16(p, 0xc000u | QNAME_OFF);
    put16(p, 15);
    put16(p, 1);
    put32(p, 3600);
    size_t at = p->n;
    put16(p, 0); /* rdlength, patched */
    put16(p, pref);
    put_name(p, name, ptr);
    size_t rdlen = p->n - at - 2;
    p->b[at] = (unsigned char)(rdlen >> 8);
    p->b[at + 1] = (unsigned char)rdlen;
}

/* A good answer for example.jp with four MX records, used by several tests. */
static void
good_packet(struct pkt *p)
{
    header(p, RESP, 1, 4);
    question(p, "example.jp");
    mx(p, 20, "mx2", QNAME_OFF);
    mx(p, 10, "MX1.Example.JP", -1);
    mx(p, 10, "mx1b", QNAME_OFF);
    mx(p, 30, "mx3.other.example", -1);
}

static int
parse(const struct pkt *p, struct dns_host *h, size_t max, size_t *n)
{
    return dns_parse_mx(p->b, (int)p->n, h, max, n);
}

/* ---- tests ---- */

static void
test_sorted_and_compressed(void **state)
{
    struct pkt p;
    struct dns_host h[8];
    size_t n = 99;
    good_packet(&p);
    assert_int_equal(parse(&p, h, 8, &n), 0);
    static const struct {
        const char *name;
        unsigned pref;
    } want[] = {
        {"mx1.example.jp", 10}, /* lower-cased; tie kept in answer order */
        {"mx1b.example.jp", 10},
        {"mx2.example.jp", 20}, /* compressed: label + pointer */
        {"mx3.other.example", 30},
    };
    assert_int_equal(n, 4);
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(h[i].name, want[i].name);
        assert_int_equal(h[i].pref, want[i].pref);
    }

    /* max keeps the best ones. */
    static const struct {
        size_t max;
        const char *last;
    } rows[] = {{1, "mx1.example.jp"}, {2, "mx1b.example.jp"}, {3, "mx2.example.jp"}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct dns_host g[4];
        assert_int_equal(parse(&p, g, rows[i].max, &n), 0);
        assert_int_equal(n, rows[i].max);
        assert_string_equal(g[n - 1].name, rows[i].last);
        assert_string_equal(g[0].name, "mx1.example.jp");
    }
}

static void
test_worse_first_then_better_with_small_max(void **state)
{
    struct pkt p;
    struct dns_host h[2];
    size_t n;
    header(&p, RESP, 1, 5);
    question(&p, "example.jp");
    mx(&p, 50, "e", QNAME_OFF);
    mx(&p, 40, "d", QNAME_OFF);
    mx(&p, 30, "c", QNAME_OFF);
    mx(&p, 30, "c2", QNAME_OFF);
    mx(&p, 60, "f", QNAME_OFF);
    assert_int_equal(parse(&p, h, 2, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(h[0].name, "c.example.jp");
    assert_string_equal(h[1].name, "c2.example.jp");
}

static void
test_duplicates_cname_and_other_classes(void **state)
{
    struct pkt p;
    struct dns_host h[8];
    size_t n;
    header(&p, RESP, 1, 5);
    question(&p, "example.jp");
    /* A CNAME in front (skipped). */
    put16(&p, 0xc000u | QNAME_OFF);
    put16(&p, 5);
    put16(&p, 1);
    put32(&p, 60);
    put16(&p, 2);
    put16(&p, 0xc000u | QNAME_OFF);
    mx(&p, 20, "mx", QNAME_OFF);
    mx(&p, 10, "mx", QNAME_OFF); /* same host, better preference */
    mx(&p, 30, "mx", QNAME_OFF); /* same host, worse */
    /* An MX in class CH (skipped). */
    put16(&p, 0xc000u | QNAME_OFF);
    put16(&p, 15);
    put16(&p, 3);
    put32(&p, 60);
    put16(&p, 7);
    put16(&p, 1);
    put_name(&p, "ch", QNAME_OFF);
    assert_int_equal(parse(&p, h, 8, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(h[0].name, "mx.example.jp");
    assert_int_equal(h[0].pref, 10);
}

static void
test_nodata_and_null_mx(void **state)
{
    struct pkt p;
    struct dns_host h[4];
    size_t n = 7;

    header(&p, RESP, 1, 0); /* NOERROR, no answer: implicit MX for the caller */
    question(&p, "example.jp");
    assert_int_equal(parse(&p, h, 4, &n), 0);
    assert_int_equal(n, 0);

    header(&p, RESP, 1, 1); /* RFC 7505 null MX */
    question(&p, "example.jp");
    mx(&p, 0, "", -1);
    assert_int_equal(parse(&p, h, 4, &n), DNS_E_NULL_MX);
    assert_int_equal(n, 0);

    header(&p, RESP, 1, 2); /* null MX next to a real one: the real one wins */
    question(&p, "example.jp");
    mx(&p, 0, "", -1);
    mx(&p, 10, "mx", QNAME_OFF);
    assert_int_equal(parse(&p, h, 4, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(h[0].name, "mx.example.jp");

    /* Exchanges that are not host names are skipped; with nothing else
     * left that is an error, not an implicit MX. */
    header(&p, RESP, 1, 2);
    question(&p, "example.jp");
    mx(&p, 10, "bad host", QNAME_OFF);
    mx(&p, 20, "ok", QNAME_OFF);
    assert_int_equal(parse(&p, h, 4, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(h[0].name, "ok.example.jp");
    header(&p, RESP, 1, 1);
    question(&p, "example.jp");
    mx(&p, 10,
       "a\x01"
       "b",
       -1);
    assert_int_equal(parse(&p, h, 4, &n), MX2_E_PROTOCOL);
    assert_int_equal(n, 0);
}

static void
test_rcodes(void **state)
{
    static const struct {
        unsigned flags;
        int rc;
    } rows[] = {
        {0x8183, MX2_E_NOT_FOUND}, /* NXDOMAIN */
        {0x8182, -EAGAIN},         /* SERVFAIL */
        {0x8185, -EAGAIN},         /* REFUSED */
        {0x8181, MX2_E_PROTOCOL},  /* FORMERR */
        {0x8184, MX2_E_PROTOCOL},  /* NOTIMP */
        {0x818f, MX2_E_PROTOCOL},
        {0x0100, MX2_E_PROTOCOL}, /* QR = 0: a query */
        {0x8580, 0},              /* AA set: fine */
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct pkt p;
        struct dns_host h[4];
        size_t n = 5;
        header(&p, rows[i].flags, 1, 1);
        question(&p, "example.jp");
        mx(&p, 10, "mx", QNAME_OFF);
        int rc = parse(&p, h, 4, &n);
        if (rc != rows[i].rc)
            fail_msg("row %zu: rc %d want %d", i, rc, rows[i].rc);
        assert_int_equal(n, rc == 0 ? 1 : 0);
    }
}

static void
test_every_truncation_is_rejected(void **state)
{
    struct pkt p;
    struct dns_host h[8];
    size_t n;
    good_packet(&p);
    for (size_t len = 0; len < p.n; len++) {
        n = 42;
        int rc = dns_parse_mx(p.b, (int)len, h, 8, &n);
        if (rc != MX2_E_PROTOCOL)
            fail_msg("length %zu of %zu: rc %d", len, p.n, rc);
        assert_int_equal(n, 0);
    }
    /* Trailing bytes (authority/additional, or junk) are not read. */
    put32(&p, 0xdeadbeef);
    assert_int_equal(parse(&p, h, 8, &n), 0);
    assert_int_equal(n, 4);
}

static void
test_compression_attacks(void **state)
{
    struct pkt p;
    struct dns_host h[4];
    size_t n;

    /* The question name points at itself. */
    header(&p, RESP, 1, 0);
    put16(&p, 0xc000u | 12);
    put32(&p, 0x000f0001);
    assert_int_equal(parse(&p, h, 4, &n), MX2_E_PROTOCOL);

    /* A forward pointer (to the answer's exchange, after it). */
    header(&p, RESP, 1, 1);
    put_name(&p, "example", 40);
    put32(&p, 0x000f0001);
    mx(&p, 10, "mx", -1);
    assert_int_equal(parse(&p, h, 4, &n), MX2_E_PROTOCOL);

    /* A pointer to itself inside an MX's RDATA. */
    header(&p, RESP, 1, 1);
    question(&p, "example.jp");
    size_t a = p.n;
    put16(&p, 0xc000u | QNAME_OFF);
    put16(&p, 15);
    put16(&p, 1);
    put32(&p, 60);
    put16(&p, 6);
    put16(&p, 10);
    put8(&p, 1);
    put8(&p, 'x');
    put16(&p, 0xc000u | (unsigned)(a + 16)); /* the pointer's own offset */
    assert_int_equal(parse(&p, h, 4, &n), MX2_E_PROTOCOL);

    /* A long chain of backward pointers: more than 64 hops. */
    header(&p, RESP, 1, 1);
    question(&p, "example.jp");
    size_t prev = QNAME_OFF;
    for (int i = 0; i < 70; i++) {
        size_t here = p.n;
        put16(&p, 0xc000u | (unsigned)prev);
        prev = here;
    }
    put16(&p, 0xc000u | QNAME_OFF);
    put16(&p, 15);
    put16(&p, 1);
    put32(&p, 60);
    put16(&p, 4);
    put16(&p, 10);
    put16(&p, 0xc000u | (unsigned)prev);
    assert_int_equal(parse(&p, h, 4, &n), MX2_E_PROTOCOL);

    /* ... while a short chain is fine: the second exchange points into
     * the first, which points into the question. */
    header(&p, RESP, 1, 2);
    question(&p, "example.jp");
    size_t rec1 = p.n;
    mx(&p, 10, "mail", QNAME_OFF);
    mx(&p, 20, "in", (int)(rec1 + 14)); /* owner 2 + fixed 10 + pref 2 */
    assert_int_equal(parse(&p, h, 4, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(h[0].name, "mail.example.jp");
    assert_string_equal(h[1].name, "in.mail.example.jp");
}

static void
test_bad_counts_and_lengths(void **state)
{
    struct pkt p;
    struct dns_host h[4];
    size_t n;

    good_packet(&p);
    p.b[7] = 5; /* one answer more than present */
    assert_int_equal(parse(&p, h, 4, &n), MX2_E_PROTOCOL);
    good_packet(&p);
    p.b[5] = 2; /* two questions claimed */
    assert_int_equal(parse(&p, h, 4, &n), MX2_E_PROTOCOL);
    good_packet(&p);
    p.b[6] = 0xff; /* 65284 answers */
    assert_int_equal(parse(&p, h, 4, &n), MX2_E_PROTOCOL);
    good_packet(&p);
    p.b[7] = 2; /* fewer answers claimed: only those are read */
    assert_int_equal(parse(&p, h, 4, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(h[0].name, "mx1.example.jp");

    /* RDATA length: too short for pref + name, longer than the name,
     * shorter than the name, beyond the packet. */
    static const int deltas[] = {-100, +1, -1, +200};
    for (size_t i = 0; i < sizeof(deltas) / sizeof(deltas[0]); i++) {
        header(&p, RESP, 1, 1);
        question(&p, "example.jp");
        size_t rec = p.n;
        mx(&p, 10, "mx", QNAME_OFF);
        if (deltas[i] == +1)
            put8(&p, 0); /* so the longer RDATA is inside the packet */
        size_t at = rec + 10;
        int rdlen = (p.b[at] << 8 | p.b[at + 1]) + deltas[i];
        if (rdlen < 0)
            rdlen = 2;
        p.b[at] = (unsigned char)(rdlen >> 8);
        p.b[at + 1] = (unsigned char)rdlen;
        if (parse(&p, h, 4, &n) != MX2_E_PROTOCOL)
            fail_msg("delta %d accepted", deltas[i]);
    }

    /* A name of more than 255 octets. */
    header(&p, RESP, 1, 1);
    question(&p, "example.jp");
    char longname[400];
    size_t o = 0;
    for (int i = 0; i < 5; i++) {
        memset(longname + o, 'a' + i, 60);
        o += 60;
        longname[o++] = '.';
    }
    longname[o - 1] = '\0';
    mx(&p, 10, longname, -1);
    assert_int_equal(parse(&p, h, 4, &n), MX2_E_PROTOCOL);

    /* A 253-character name is fine. */
    header(&p, RESP, 1, 1);
    question(&p, "example.jp");
    o = 0;
    for (int i = 0; i < 4; i++) {
        memset(longname + o, 'a' + i, 62);
        o += 62;
        longname[o++] = '.';
    }
    longname[o++] = 'z';
    longname[o] = '\0';
    assert_int_equal(strlen(longname), 253);
    mx(&p, 10, longname, -1);
    assert_int_equal(parse(&p, h, 4, &n), 0);
    assert_string_equal(h[0].name, longname);

    /* Obsolete label types 0x40 / 0x80. */
    static const unsigned types[] = {0x41, 0x81};
    for (size_t i = 0; i < 2; i++) {
        header(&p, RESP, 1, 1);
        question(&p, "example.jp");
        put16(&p, 0xc000u | QNAME_OFF);
        put16(&p, 15);
        put16(&p, 1);
        put32(&p, 60);
        put16(&p, 5);
        put16(&p, 10);
        put8(&p, types[i]);
        put8(&p, 'a');
        put8(&p, 0);
        assert_int_equal(parse(&p, h, 4, &n), MX2_E_PROTOCOL);
    }

    /* Pointer cut in half at the end of the packet. */
    header(&p, RESP, 1, 0);
    put8(&p, 0xc0);
    assert_int_equal(parse(&p, h, 4, &n), MX2_E_PROTOCOL);
}

static void
test_invalid_arguments(void **state)
{
    struct pkt p;
    struct dns_host h[4];
    size_t n = 3;
    good_packet(&p);
    assert_int_equal(dns_parse_mx(NULL, 10, h, 4, &n), MX2_E_INVAL);
    assert_int_equal(n, 0);
    assert_int_equal(dns_parse_mx(p.b, -1, h, 4, &n), MX2_E_INVAL);
    assert_int_equal(dns_parse_mx(p.b, (int)p.n, NULL, 4, &n), MX2_E_INVAL);
    assert_int_equal(dns_parse_mx(p.b, (int)p.n, h, 0, &n), MX2_E_INVAL);
    assert_int_equal(dns_parse_mx(p.b, (int)p.n, h, 4, NULL), MX2_E_INVAL);

    /* dns_mx_lookup refuses these before touching the resolver. */
    static const char *const bad[] = {
        "",
        ".",
        "a..b",
        ".example.jp",
        "exa mple.jp",
        "[192.0.2.1]",
        "ex\xc3\xa4mple.jp",
        "a@b.jp",
        "example.jp..",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = 9;
        if (dns_mx_lookup(bad[i], h, 4, &n) != MX2_E_INVAL)
            fail_msg("domain %zu accepted", i);
        assert_int_equal(n, 0);
    }
    char longd[300];
    memset(longd, 'a', sizeof(longd) - 1);
    longd[sizeof(longd) - 1] = '\0';
    assert_int_equal(dns_mx_lookup(longd, h, 4, &n), MX2_E_INVAL);
    assert_int_equal(dns_mx_lookup(NULL, h, 4, &n), MX2_E_INVAL);
    assert_int_equal(dns_mx_lookup("example.jp", h, 0, &n), MX2_E_INVAL);
    assert_int_equal(dns_mx_lookup("example.jp", NULL, 4, &n), MX2_E_INVAL);
}

static void
test_strerror(void **state)
{
    assert_string_equal(dns_strerror(DNS_E_NULL_MX), "domain accepts no mail (null MX)");
    assert_string_equal(dns_strerror(MX2_E_NOT_FOUND), "no such domain");
    assert_string_equal(dns_strerror(-EAGAIN), "temporary DNS failure");
    assert_string_equal(dns_strerror(MX2_E_PROTOCOL), "malformed DNS answer");
    assert_string_equal(dns_strerror(MX2_E_INVAL), mx2_strerror(MX2_E_INVAL));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sorted_and_compressed),
        cmocka_unit_test(test_worse_first_then_better_with_small_max),
        cmocka_unit_test(test_duplicates_cname_and_other_classes),
        cmocka_unit_test(test_nodata_and_null_mx),
        cmocka_unit_test(test_rcodes),
        cmocka_unit_test(test_every_truncation_is_rejected),
        cmocka_unit_test(test_compression_attacks),
        cmocka_unit_test(test_bad_counts_and_lengths),
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
