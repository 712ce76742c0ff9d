/*
 * test_addr.c - RFC 5321 path parsing, the open-relay gate and formatting.
 *
 * The relay table is the heart of it: every address trick named in SPEC.md
 * and issue 3 (percent hack, bang path, quoted '@', source routes, trailing
 * dot, case, IP literals, look-alike domains) with the verdict and reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "err.h"

struct parse_row {
    const char *in;
    unsigned pflags;
    int rc;
    const char *local;  /* expected when rc == 0 */
    const char *domain; /* expected when rc == 0 */
    unsigned seen;      /* flags that must be set */
};

#define OK 0
#define BAD MX2_E_BAD_ADDRESS
#define NUL_ ADDR_PARSE_NULL
#define U8 ADDR_PARSE_UTF8

static const struct parse_row parse_rows[] = {
    {"<user@example.jp>", 0, OK, "user", "example.jp", 0},
    {"  <user@example.jp>\t", 0, OK, "user", "example.jp", 0},
    {"<USER@EXAMPLE.JP>", 0, OK, "USER", "example.jp", 0},
    {"<user@example.jp.>", 0, OK, "user", "example.jp", ADDR_F_TRAILING_DOT},
    {"<first.last+tag@mail.example.jp>", 0, OK, "first.last+tag", "mail.example.jp", 0},
    {"<a!#$%&'*+-/=?^_`{|}~@x.jp>", 0, OK, "a!#$%&'*+-/=?^_`{|}~", "x.jp",
     ADDR_F_HAS_PERCENT | ADDR_F_HAS_BANG},
    {"<\"a b\"@example.jp>", 0, OK, "a b", "example.jp", ADDR_F_QUOTED},
    {"<\"a\\\"b\\\\c\"@example.jp>", 0, OK, "a\"b\\c", "example.jp", ADDR_F_QUOTED},
    {"<\"user@evil.com\"@example.jp>", 0, OK, "user@evil.com", "example.jp",
     ADDR_F_QUOTED | ADDR_F_HAS_AT_IN_LOCAL},
    {"<\"@a:u@evil.com\"@example.jp>", 0, OK, "@a:u@evil.com", "example.jp",
     ADDR_F_HAS_AT_IN_LOCAL | ADDR_F_HAS_ROUTE_CHAR},
    {"<\"a>b\"@example.jp>", 0, OK, "a>b", "example.jp", ADDR_F_QUOTED},
    {"<user%evil.com@example.jp>", 0, OK, "user%evil.com", "example.jp", ADDR_F_HAS_PERCENT},
    {"<evil.com!user@example.jp>", 0, OK, "evil.com!user", "example.jp", ADDR_F_HAS_BANG},
    {"<@a.example,@b.example:user@c.example>", 0, OK, "user", "c.example", ADDR_F_ROUTE},
    {"<@example.jp:user@evil.com>", 0, OK, "user", "evil.com", ADDR_F_ROUTE},
    {"<user@[198.51.100.1]>", 0, OK, "user", "[198.51.100.1]", ADDR_F_IP_LITERAL},
    {"<user@[IPv6:2001:db8::1]>", 0, OK, "user", "[ipv6:2001:db8::1]", ADDR_F_IP_LITERAL},
    {"<>", NUL_, OK, "", "", ADDR_F_NULL},
    {" <> ", NUL_, OK, "", "", ADDR_F_NULL},
    {"<a@b-c.d1>", 0, OK, "a", "b-c.d1", 0},
    {"user@example.jp", ADDR_PARSE_BARE, OK, "user", "example.jp", 0},
    {"<user@example.jp>", ADDR_PARSE_BARE, OK, "user", "example.jp", 0},
    {"<us\xc3\xa9r@\xc3\xa9xample.jp>", U8, OK, "us\xc3\xa9r", "\xc3\xa9xample.jp", ADDR_F_UTF8},
    {"<\"\xe6\x97\xa5 x\"@example.jp>", U8, OK, "\xe6\x97\xa5 x", "example.jp",
     ADDR_F_UTF8 | ADDR_F_QUOTED},

    /* Bad. */
    {"", 0, BAD, NULL, NULL, 0},
    {"   ", 0, BAD, NULL, NULL, 0},
    {"<>", 0, BAD, NULL, NULL, 0},            /* null path only with the flag */
    {"<> x", NUL_, BAD, NULL, NULL, 0},
    {"user@example.jp", 0, BAD, NULL, NULL, 0}, /* brackets required */
    {"<user@example.jp", 0, BAD, NULL, NULL, 0},
    {"user@example.jp>", 0, BAD, NULL, NULL, 0},
    {"<user@example.jp>>", 0, BAD, NULL, NULL, 0},
    {"<<user@example.jp>>", 0, BAD, NULL, NULL, 0},
    {"<user>", 0, BAD, NULL, NULL, 0},
    {"<postmaster>", 0, BAD, NULL, NULL, 0},
    {"<@example.jp>", 0, BAD, NULL, NULL, 0},
    {"<user@>", 0, BAD, NULL, NULL, 0},
    {"<user@evil.com@example.jp>", 0, BAD, NULL, NULL, 0},
    {"<.user@x.jp>", 0, BAD, NULL, NULL, 0},
    {"<user.@x.jp>", 0, BAD, NULL, NULL, 0},
    {"<us..er@x.jp>", 0, BAD, NULL, NULL, 0},
    {"<us er@x.jp>", 0, BAD, NULL, NULL, 0},
    {"<us\\er@x.jp>", 0, BAD, NULL, NULL, 0},
    {"<\"\"@x.jp>", 0, BAD, NULL, NULL, 0},
    {"<\"unterminated@x.jp>", 0, BAD, NULL, NULL, 0},
    {"<\"a\tb\"@x.jp>", 0, BAD, NULL, NULL, 0},
    {"<user@example.jp..>", 0, BAD, NULL, NULL, 0},
    {"<user@.example.jp>", 0, BAD, NULL, NULL, 0},
    {"<user@exa..mple.jp>", 0, BAD, NULL, NULL, 0},
    {"<user@-example.jp>", 0, BAD, NULL, NULL, 0},
    {"<user@example-.jp>", 0, BAD, NULL, NULL, 0},
    {"<user@exa_mple.jp>", 0, BAD, NULL, NULL, 0},
    {"<user@.>", 0, BAD, NULL, NULL, 0},
    {"<user@[198.51.100.256]>", 0, BAD, NULL, NULL, 0},
    {"<user@[198.51.100]>", 0, BAD, NULL, NULL, 0},
    {"<user@[0x7f.0.0.1]>", 0, BAD, NULL, NULL, 0},
    {"<user@[IPv6:zz::1]>", 0, BAD, NULL, NULL, 0},
    {"<user@[tag:foo]>", 0, BAD, NULL, NULL, 0},
    {"<user@[198.51.100.1>", 0, BAD, NULL, NULL, 0},
    {"<user@[]>", 0, BAD, NULL, NULL, 0},
    {"<@a.example:>", 0, BAD, NULL, NULL, 0},
    {"<@a.example user@b>", 0, BAD, NULL, NULL, 0},
    {"<@a.example,user@b>", 0, BAD, NULL, NULL, 0},
    {"<@a.example.:user@b>", 0, BAD, NULL, NULL, 0},
    {"<us\xc3\xa9r@example.jp>", 0, BAD, NULL, NULL, 0},   /* 8-bit without SMTPUTF8 */
    {"<user@\xc3\xa9xample.jp>", 0, BAD, NULL, NULL, 0},
    {"<us\xc0\xc0r@example.jp>", U8, BAD, NULL, NULL, 0},   /* overlong */
    {"<us\xc0\x80r@example.jp>", U8, BAD, NULL, NULL, 0},   /* overlong NUL */
    {"<us\xed\xa0\x80r@example.jp>", U8, BAD, NULL, NULL, 0}, /* surrogate */
    {"<us\xffr@example.jp>", U8, BAD, NULL, NULL, 0},
    {"<us\xc3r@example.jp>", U8, BAD, NULL, NULL, 0},       /* truncated */
    {"<user@example.jp>x", 0, BAD, NULL, NULL, 0},
    {"<user@example.jp> <x@y>", 0, BAD, NULL, NULL, 0},
};

static void
test_parse_table(void **state)
{
    for (size_t i = 0; i < sizeof(parse_rows) / sizeof(parse_rows[0]); i++) {
        const struct parse_row *r = &parse_rows[i];
        struct addr_path a;
        int rc = addr_parse_path(r->in, strlen(r->in), r->pflags, &a);
        if (rc != r->rc)
            fail_msg("row %zu %s: rc %d, want %d", i, r->in, rc, r->rc);
        if (rc != 0) {
            assert_int_equal(a.local_len, 0);
            assert_int_equal(a.flags, 0);
            continue;
        }
        if (strcmp(a.local, r->local) != 0 || strcmp(a.domain, r->domain) != 0)
            fail_msg("row %zu %s: got %s / %s", i, r->in, a.local, a.domain);
        assert_int_equal(a.local_len, strlen(r->local));
        assert_int_equal(a.domain_len, strlen(r->domain));
        if ((a.flags & r->seen) != r->seen)
            fail_msg("row %zu %s: flags %#x lack %#x", i, r->in, a.flags, r->seen);
    }
}

/* The path is not NUL-terminated: the parser must honour len. */
static void
test_parse_uses_len(void **state)
{
    const char buf[] = "<user@example.jp>GARBAGE";
    struct addr_path a;

    assert_int_equal(addr_parse_path(buf, 17, 0, &a), 0);
    assert_string_equal(a.domain, "example.jp");
    assert_int_equal(addr_parse_path(buf, 16, 0, &a), MX2_E_BAD_ADDRESS);
    /* An embedded NUL is never part of an address. */
    assert_int_equal(addr_parse_path("<us\0er@x.jp>", 12, 0, &a), MX2_E_BAD_ADDRESS);
    assert_int_equal(addr_parse_path("<\"us\0er\"@x.jp>", 14, 0, &a), MX2_E_BAD_ADDRESS);
}

static void
test_limits(void **state)
{
    char buf[600], local[100], dom[300];
    struct addr_path a;

    /* Local part: 64 octets ok, 65 not; quoted length counts as written. */
    memset(local, 'a', 64);
    local[64] = '\0';
    snprintf(buf, sizeof(buf), "<%s@x.jp>", local);
    assert_int_equal(addr_parse_path(buf, strlen(buf), 0, &a), 0);
    assert_int_equal(a.local_len, 64);
    snprintf(buf, sizeof(buf), "<%sa@x.jp>", local);
    assert_int_equal(addr_parse_path(buf, strlen(buf), 0, &a), MX2_E_BAD_ADDRESS);
    memset(local, 'a', 62);
    local[62] = '\0';
    snprintf(buf, sizeof(buf), "<\"%s\"@x.jp>", local); /* 64 on the wire */
    assert_int_equal(addr_parse_path(buf, strlen(buf), 0, &a), 0);
    snprintf(buf, sizeof(buf), "<\"%sa\"@x.jp>", local); /* 65 on the wire */
    assert_int_equal(addr_parse_path(buf, strlen(buf), 0, &a), MX2_E_BAD_ADDRESS);

    /* Label: 63 ok, 64 not. */
    memset(dom, 'b', 63);
    dom[63] = '\0';
    snprintf(buf, sizeof(buf), "<u@%s.jp>", dom);
    assert_int_equal(addr_parse_path(buf, strlen(buf), 0, &a), 0);
    snprintf(buf, sizeof(buf), "<u@%sb.jp>", dom);
    assert_int_equal(addr_parse_path(buf, strlen(buf), 0, &a), MX2_E_BAD_ADDRESS);

    /* Path 256 with brackets ok, 257 not: "<u@" + domain + ">" */
    {
        size_t n = 0;
        /* five "c"*49 + "." labels and a final "cc": 252 octets */
        for (int l = 0; l < 5; l++) {
            memset(dom + n, 'c', 49);
            n += 49;
            dom[n++] = '.';
        }
        dom[n++] = 'c';
        dom[n++] = 'c';
        dom[n] = '\0';
        assert_int_equal(strlen(dom), 252);
        snprintf(buf, sizeof(buf), "<u@%s>", dom);
        assert_int_equal(strlen(buf), 256);
        assert_int_equal(addr_parse_path(buf, strlen(buf), 0, &a), 0);
        assert_int_equal(a.domain_len, 252);
        snprintf(buf, sizeof(buf), "<uu@%s>", dom);
        assert_int_equal(addr_parse_path(buf, strlen(buf), 0, &a), MX2_E_BAD_ADDRESS);
    }
    /* Long garbage never crashes and never parses. */
    memset(buf, '<', sizeof(buf) - 1);
    buf[sizeof(buf) - 1] = '\0';
    assert_int_equal(addr_parse_path(buf, strlen(buf), NUL_, &a), MX2_E_BAD_ADDRESS);
}

static void
test_path_end(void **state)
{
    static const struct {
        const char *in;
        int rc;
        size_t end;
    } rows[] = {
        {"<a@b> SIZE=1", 0, 5},
        {"<> BODY=8BITMIME", 0, 2},
        {"<\"a>b\"@x> X", 0, 9},
        {"<\"a\\\">b\"@x>", 0, 11},
        {"<a@b", MX2_E_BAD_ADDRESS, 0},
        {"a@b>", MX2_E_BAD_ADDRESS, 0},
        {"<\"a>@b", MX2_E_BAD_ADDRESS, 0},
        {"", MX2_E_BAD_ADDRESS, 0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        size_t end = 0;
        int rc = addr_path_end(rows[i].in, strlen(rows[i].in), &end);
        assert_int_equal(rc, rows[i].rc);
        if (rc == 0)
            assert_int_equal(end, rows[i].end);
    }
}

/* The open-relay battery. relay_domains = example.jp, other.example. */
struct relay_row {
    const char *path;
    int parse_rc;
    int relay_rc; /* when it parses */
    const char *why;
};

#define DENY MX2_E_RELAY_DENIED

static const struct relay_row relay_rows[] = {
    {"<user@example.jp>", OK, OK, "listed domain"},
    {"<USER@EXAMPLE.JP>", OK, OK, "domains are case-insensitive"},
    {"<user@Example.Jp.>", OK, OK, "trailing dot is the same domain"},
    {"<user@other.example>", OK, OK, "second listed domain"},
    {"<first.last+tag@example.jp>", OK, OK, "plain dot-atom with +tag"},
    {"<\"john doe\"@example.jp>", OK, OK, "quoted local part without routing chars"},
    {"<@evil.com:user@example.jp>", OK, OK, "source route ignored: final domain is ours"},
    {"<@a.example,@b.example:user@example.jp>", OK, OK, "multi-hop route ignored"},
    {"<user%evil.com@example.jp>", OK, DENY, "percent hack"},
    {"<evil.com!user@example.jp>", OK, DENY, "bang path"},
    {"<\"user@evil.com\"@example.jp>", OK, DENY, "quoted @"},
    {"<\"user%evil.com\"@example.jp>", OK, DENY, "quoted percent"},
    {"<\"@evil.com:user\"@example.jp>", OK, DENY, "quoted source route"},
    {"<\"a,b\"@example.jp>", OK, DENY, "quoted comma (list)"},
    {"<user@evil.com@example.jp>", BAD, 0, "two @: parse error"},
    {"<@example.jp:user@evil.com>", OK, DENY, "source route: judged on evil.com"},
    {"<user@[198.51.100.1]>", OK, DENY, "IPv4 literal"},
    {"<user@[IPv6:2001:db8::1]>", OK, DENY, "IPv6 literal"},
    {"<user@example.jp.evil.com>", OK, DENY, "look-alike suffix"},
    {"<user@sub.example.jp>", OK, DENY, "subdomain not listed"},
    {"<user@xexample.jp>", OK, DENY, "prefix look-alike"},
    {"<user@jp>", OK, DENY, "parent domain"},
    {"<user@evil.com>", OK, DENY, "foreign domain"},
    {"<user@example.jp..>", BAD, 0, "two trailing dots"},
    {"<user@example.jp>.", BAD, 0, "dot after path"},
};

static void
test_relay_table(void **state)
{
    char *domains[] = {"example.jp", "Other.Example."};

    for (size_t i = 0; i < sizeof(relay_rows) / sizeof(relay_rows[0]); i++) {
        const struct relay_row *r = &relay_rows[i];
        struct addr_path a;
        int rc = addr_parse_path(r->path, strlen(r->path), 0, &a);
        if (rc != r->parse_rc)
            fail_msg("%s (%s): parse rc %d", r->path, r->why, rc);
        if (rc != 0)
            continue;
        rc = addr_relay_check(&a, domains, 2);
        if (rc != r->relay_rc)
            fail_msg("%s (%s): relay rc %d, want %d", r->path, r->why, rc, r->relay_rc);
    }
}

/* Hand-built paths (flags missing) are still judged on their octets; the
 * null path and empty lists deny. */
static void
test_relay_defence_in_depth(void **state)
{
    char *domains[] = {"example.jp"};
    struct addr_path a;
    const char *locals[] = {"u%evil", "evil!u", "u@evil", "a:b", "a,b"};

    for (size_t i = 0; i < sizeof(locals) / sizeof(locals[0]); i++) {
        memset(&a, 0, sizeof(a));
        strcpy(a.local, locals[i]);
        a.local_len = strlen(locals[i]);
        strcpy(a.domain, "example.jp");
        a.domain_len = 10;
        assert_int_equal(addr_relay_check(&a, domains, 1), MX2_E_RELAY_DENIED);
    }
    memset(&a, 0, sizeof(a));
    strcpy(a.domain, "[1.2.3.4]");
    a.domain_len = 9;
    strcpy(a.local, "u");
    a.local_len = 1;
    assert_int_equal(addr_relay_check(&a, domains, 1), MX2_E_RELAY_DENIED);

    assert_int_equal(addr_parse_path("<>", 2, ADDR_PARSE_NULL, &a), 0);
    assert_int_equal(addr_relay_check(&a, domains, 1), MX2_E_RELAY_DENIED);
    assert_int_equal(addr_parse_path("<u@example.jp>", 14, 0, &a), 0);
    assert_int_equal(addr_relay_check(&a, domains, 0), MX2_E_RELAY_DENIED);
    assert_int_equal(addr_relay_check(&a, domains, 1), 0);

    assert_true(addr_domain_listed("EXAMPLE.JP.", 11, domains, 1));
    assert_false(addr_domain_listed(".", 1, domains, 1));
    assert_false(addr_domain_listed("", 0, domains, 1));
    assert_false(addr_domain_listed("example.j", 9, domains, 1));
}

static void
test_format(void **state)
{
    static const struct {
        const char *in;
        unsigned pflags;
        const char *out;
    } rows[] = {
        {"<user@example.jp>", 0, "user@example.jp"},
        {"<User@Example.JP.>", 0, "User@example.jp"},
        {"<@a.b:user@example.jp>", 0, "user@example.jp"},
        {"<\"user\"@example.jp>", 0, "user@example.jp"},
        {"<\"john doe\"@example.jp>", 0, "\"john doe\"@example.jp"},
        {"<\"a\\\"b\\\\c\"@x.jp>", 0, "\"a\\\"b\\\\c\"@x.jp"},
        {"<\"a..b\"@x.jp>", 0, "\"a..b\"@x.jp"},
        {"<\".a\"@x.jp>", 0, "\".a\"@x.jp"},
        {"<\"a.\"@x.jp>", 0, "\"a.\"@x.jp"},
        {"<\"u@evil\"@x.jp>", 0, "\"u@evil\"@x.jp"},
        {"<u@[198.51.100.1]>", 0, "u@[198.51.100.1]"},
        {"<>", ADDR_PARSE_NULL, ""},
        {"<\xc3\xa9@x.jp>", ADDR_PARSE_UTF8, "\xc3\xa9@x.jp"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct addr_path a, b;
        char buf[ADDR_TEXT_MAX], path[ADDR_TEXT_MAX + 2];
        size_t n;
        assert_int_equal(addr_parse_path(rows[i].in, strlen(rows[i].in), rows[i].pflags, &a), 0);
        assert_int_equal(addr_format(&a, buf, sizeof(buf), &n), 0);
        assert_string_equal(buf, rows[i].out);
        assert_int_equal(n, strlen(rows[i].out));
        /* Round trip: the formatted address parses back to the same path. */
        snprintf(path, sizeof(path), "<%s>", buf);
        assert_int_equal(addr_parse_path(path, strlen(path), rows[i].pflags, &b), 0);
        assert_string_equal(a.local, b.local);
        assert_string_equal(a.domain, b.domain);
    }
}

static void
test_format_small_buffer(void **state)
{
    struct addr_path a;
    char buf[8];
    size_t n = 99;

    assert_int_equal(addr_parse_path("<user@example.jp>", 17, 0, &a), 0);
    assert_int_equal(addr_format(&a, buf, sizeof(buf), &n), MX2_E_INVAL);
    assert_string_equal(buf, "");
    assert_int_equal(n, 0);
    assert_int_equal(addr_format(&a, buf, 0, NULL), MX2_E_INVAL);
    /* Exactly enough: 15 + NUL. */
    {
        char b16[16];
        assert_int_equal(addr_format(&a, b16, sizeof(b16), &n), 0);
        assert_int_equal(n, 15);
    }
    /* The worst case fits ADDR_TEXT_MAX: 32 escaped quotes + long domain. */
    {
        char in[400], out[ADDR_TEXT_MAX];
        size_t k = 0;
        in[k++] = '<';
        in[k++] = '"';
        for (int i = 0; i < 31; i++) {
            in[k++] = '\\';
            in[k++] = '"';
        }
        in[k++] = '"';
        memcpy(in + k, "@x.jp>", 6);
        k += 6;
        assert_int_equal(addr_parse_path(in, k, 0, &a), 0);
        assert_int_equal(addr_format(&a, out, sizeof(out), &n), 0);
        assert_int_equal(n, 2 + 62 + 5);
    }
}

static void
test_needs_quotes(void **state)
{
    assert_false(addr_local_needs_quotes("a.b", 3));
    assert_false(addr_local_needs_quotes("a+b=c", 5));
    assert_true(addr_local_needs_quotes("", 0));
    assert_true(addr_local_needs_quotes("a b", 3));
    assert_true(addr_local_needs_quotes(".a", 2));
    assert_true(addr_local_needs_quotes("a.", 2));
    assert_true(addr_local_needs_quotes("a..b", 4));
    assert_true(addr_local_needs_quotes("a@b", 3));
    assert_true(addr_local_needs_quotes("a\"b", 3));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_uses_len),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_path_end),
        cmocka_unit_test(test_relay_table),
        cmocka_unit_test(test_relay_defence_in_depth),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_format_small_buffer),
        cmocka_unit_test(test_needs_quotes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
