/*
 * test_smtp_data.c - the DATA scanner: end of data only at CRLF.CRLF, the
 * smuggling sequences, normalize vs reject, dot-stuffing, chunking
 * independence (one shot, byte by byte, random chunks give identical
 * results), Received: counting, Message-ID capture, size and line limits,
 * and the output invariants over many random inputs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "smtp_data.h"

#define S(x) x, sizeof(x) - 1
#define ALL ((size_t)-1)

struct result {
    char *out;
    size_t outlen;
    size_t consumed;
    bool done;
    int error;
    struct smtp_data d;
};

/* Feed `in` in chunks: chunk == 0 means random sizes from `seed`,
 * otherwise fixed-size chunks. The output buffer handed to each call is
 * exactly SMTP_DATA_OUT_SIZE(chunk) followed by a guard that must stay
 * untouched. */
static void
run(const char *in, size_t len, enum mx2_bare_newline mode, uint64_t max_size, unsigned max_rcvd,
    size_t chunk, unsigned seed, struct result *r)
{
    size_t pos = 0;

    memset(r, 0, sizeof(*r));
    r->out = malloc(SMTP_DATA_OUT_SIZE(len) + 1);
    assert_non_null(r->out);
    smtp_data_init(&r->d, mode, max_size, max_rcvd);
    srand(seed);
    while (pos < len && !r->d.done) {
        size_t n = chunk ? chunk : 1 + (size_t)rand() % 17, got, olen = 12345;
        size_t cap;
        char *buf;
        if (n > len - pos)
            n = len - pos;
        cap = SMTP_DATA_OUT_SIZE(n);
        buf = malloc(cap + 16);
        assert_non_null(buf);
        memset(buf + cap, 0xAA, 16);
        got = smtp_data_feed(&r->d, in + pos, n, buf, &olen);
        for (int g = 0; g < 16; g++)
            assert_int_equal((unsigned char)buf[cap + g], 0xAA);
        assert_true(olen <= cap);
        assert_true(got <= n);
        if (got < n)
            assert_true(r->d.done);
        memcpy(r->out + r->outlen, buf, olen);
        r->outlen += olen;
        pos += got;
        free(buf);
    }
    r->consumed = pos;
    r->done = r->d.done;
    r->error = r->d.error;
    /* After done nothing more is taken. */
    if (r->d.done) {
        char b[SMTP_DATA_OUT_SIZE(4)];
        size_t olen = 99;
        assert_int_equal(smtp_data_feed(&r->d, "x\r\n", 3, b, &olen), 0);
        assert_int_equal(olen, 0);
    }
}

static void
result_free(struct result *r)
{
    free(r->out);
}

struct row {
    const char *name;
    const char *in;
    size_t len;
    enum mx2_bare_newline mode;
    const char *out; /* NULL: not checked (an error discards it anyway) */
    size_t outlen;
    bool done;
    size_t consumed; /* ALL = the whole input */
    int error;
};

#define N MX2_BARE_NORMALIZE
#define R MX2_BARE_REJECT
#define BARE MX2_E_BARE_NEWLINE

static const struct row table_rows[] = {
    {"simple", S("Subject: x\r\n\r\nbody\r\n.\r\n"), N, S("Subject: x\r\n\r\nbody\r\n"), true, ALL, 0},
    {"empty message", S(".\r\n"), N, S(""), true, ALL, 0},
    {"one empty line", S("\r\n.\r\n"), N, S("\r\n"), true, ALL, 0},
    {"stuffed line kept", S("a\r\n..b\r\n..\r\n.\r\n"), N, S("a\r\n..b\r\n..\r\n"), true, ALL, 0},
    {"unstuffed proper line kept", S("a\r\n.b\r\n.\r\n"), N, S("a\r\n.b\r\n"), true, ALL, 0},
    {"dot-space line", S("a\r\n. \r\n.\r\n"), N, S("a\r\n. \r\n"), true, ALL, 0},
    {"pipelined next command", S("a\r\n.\r\nQUIT\r\n"), N, S("a\r\n"), true, 6, 0},
    {"pipelined at start", S(".\r\nRSET\r\n"), N, S(""), true, 3, 0},
    {"nul octets pass", S("a\0b\r\n.\r\n"), N, S("a\0b\r\n"), true, ALL, 0},
    {"8-bit passes", S("\xe6\x97\xa5\r\n.\r\n"), N, S("\xe6\x97\xa5\r\n"), true, ALL, 0},

    /* Smuggling: none of these end the data. */
    {"LF.LF", S("a\n.\nMAIL FROM:<x@y>\r\n.\r\n"), N, S("a\r\n..\r\nMAIL FROM:<x@y>\r\n"), true,
     ALL, 0},
    {"CR.LF", S("a\r.\nb\r\n.\r\n"), N, S("a .\r\nb\r\n"), true, ALL, 0},
    {"CR.CR", S("a\r.\rb\r\n.\r\n"), N, S("a . b\r\n"), true, ALL, 0},
    {"LF.CRLF", S("a\n.\r\nb\r\n.\r\n"), N, S("a\r\n..\r\nb\r\n"), true, ALL, 0},
    {"CRLF.LF", S("a\r\n.\nb\r\n.\r\n"), N, S("a\r\n..\r\nb\r\n"), true, ALL, 0},
    {"CRLF.CR+x", S("a\r\n.\rX\r\n.\r\n"), N, S("a\r\n. X\r\n"), true, ALL, 0},
    {"CRLF.CR+CRLF", S("a\r\n.\r\r\n.\r\n"), N, S("a\r\n. \r\n"), true, ALL, 0},
    {"dot-LF at start", S(".\nb\r\n.\r\n"), N, S("..\r\nb\r\n"), true, ALL, 0},
    {"LF.LF at start", S("\n.\n.\r\n"), N, S("\r\n..\r\n..\r\n"), false, ALL, 0},
    {"dot-CR at end of input", S("a\r\n.\r"), N, S("a\r\n"), false, ALL, 0},
    {"dot at end of input", S("a\r\n."), N, S("a\r\n"), false, ALL, 0},
    {"CR at end of input", S("a\r"), N, S("a"), false, ALL, 0},
    {"bare-LF line of dots", S("x\n..\r\n.\r\n"), N, S("x\r\n...\r\n"), true, ALL, 0},
    {"bare-LF then dot text", S("x\n.y\r\n.\r\n"), N, S("x\r\n..y\r\n"), true, ALL, 0},
    {"CR CR LF", S("a\r\r\n.\r\n"), N, S("a \r\n"), true, ALL, 0},
    {"CR at line start", S("\rb\r\n.\r\n"), N, S(" b\r\n"), true, ALL, 0},
    {"bare CR", S("a\rb\r\n.\r\n"), N, S("a b\r\n"), true, ALL, 0},
    {"bare LF", S("a\nb\r\n.\r\n"), N, S("a\r\nb\r\n"), true, ALL, 0},
    {"LF LF", S("a\n\nb\r\n.\r\n"), N, S("a\r\n\r\nb\r\n"), true, ALL, 0},
    {"LF CR LF", S("a\n\r\n.\r\n"), N, S("a\r\n\r\n"), true, ALL, 0},

    /* Reject mode: the error, the same end of data. */
    {"reject: clean", S("a\r\n..b\r\n.\r\n"), R, S("a\r\n..b\r\n"), true, ALL, 0},
    {"reject: bare LF", S("a\nb\r\n.\r\n"), R, NULL, 0, true, ALL, BARE},
    {"reject: bare CR", S("a\rb\r\n.\r\n"), R, NULL, 0, true, ALL, BARE},
    {"reject: LF.LF keeps scanning", S("a\n.\nb\r\n.\r\nQUIT\r\n"), R, NULL, 0, true, 10, BARE},
    {"reject: CRLF.CR+x", S("a\r\n.\rX\r\n.\r\n"), R, NULL, 0, true, ALL, BARE},
    {"reject: dot-LF at start", S(".\n.\r\n"), R, NULL, 0, false, ALL, BARE},
    {"reject: CR LF", S("a\r\n\r\n.\r\n"), R, S("a\r\n\r\n"), true, ALL, 0},
};

/* The same input gives the same result however it is split. */
static void
check_row(const struct row *w)
{
    struct result ref;
    size_t want_consumed = w->consumed == ALL ? w->len : w->consumed;

    run(w->in, w->len, w->mode, 0, 50, w->len ? w->len : 1, 0, &ref);
    if (ref.done != w->done || ref.error != w->error || ref.consumed != want_consumed)
        fail_msg("%s: done %d error %d consumed %zu", w->name, ref.done, ref.error, ref.consumed);
    if (w->out != NULL && (ref.outlen != w->outlen || memcmp(ref.out, w->out, w->outlen) != 0))
        fail_msg("%s: output '%.*s' (%zu)", w->name, (int)ref.outlen, ref.out, ref.outlen);
    for (unsigned k = 0; k < 30; k++) {
        struct result r;
        /* k == 0: byte by byte; k == 1, 2: 2- and 3-byte chunks; else random. */
        run(w->in, w->len, w->mode, 0, 50, k < 3 ? k + 1 : 0, k, &r);
        if (r.done != ref.done || r.error != ref.error || r.consumed != ref.consumed ||
            r.outlen != ref.outlen || memcmp(r.out, ref.out, r.outlen) != 0 ||
            r.d.size != ref.d.size || r.d.lines != ref.d.lines)
            fail_msg("%s: chunking %u differs", w->name, k);
        result_free(&r);
    }
    result_free(&ref);
}

static void
test_table(void **state)
{
    for (size_t i = 0; i < sizeof(table_rows) / sizeof(table_rows[0]); i++) {
        const struct row *w = &table_rows[i];
        check_row(w);
    }
}

/* "\r\n.\r" and "\n" arriving in separate packets still end the data,
 * and nothing after it is taken. */
static void
test_split_terminator(void **state)
{
    const char *parts[] = {"hello\r\n", ".", "\r", "\nMAIL FROM:<a@b>\r\n"};
    struct smtp_data d;
    char out[64];
    size_t olen, got;

    smtp_data_init(&d, MX2_BARE_NORMALIZE, 0, 50);
    got = smtp_data_feed(&d, parts[0], strlen(parts[0]), out, &olen);
    assert_int_equal(got, 7);
    assert_int_equal(olen, 7);
    assert_memory_equal(out, "hello\r\n", 7);
    got = smtp_data_feed(&d, parts[1], 1, out, &olen);
    assert_int_equal(got, 1);
    assert_int_equal(olen, 0);
    got = smtp_data_feed(&d, parts[2], 1, out, &olen);
    assert_int_equal(got, 1);
    assert_int_equal(olen, 0);
    assert_false(d.done);
    got = smtp_data_feed(&d, parts[3], strlen(parts[3]), out, &olen);
    assert_int_equal(got, 1);
    assert_int_equal(olen, 0);
    assert_true(d.done);
    assert_int_equal(d.error, 0);
    assert_int_equal(d.size, 7);
}

/* A held ".\r" resolved by the next chunk: output may exceed 2*inlen by
 * the held octets, and stays within SMTP_DATA_OUT_SIZE. */
static void
test_held_bytes_bound(void **state)
{
    struct smtp_data d;
    char out[SMTP_DATA_OUT_SIZE(1)];
    size_t olen;

    smtp_data_init(&d, MX2_BARE_NORMALIZE, 0, 0);
    assert_int_equal(smtp_data_feed(&d, ".", 1, out, &olen), 1);
    assert_int_equal(olen, 0);
    assert_int_equal(smtp_data_feed(&d, "\r", 1, out, &olen), 1);
    assert_int_equal(olen, 0);
    assert_int_equal(smtp_data_feed(&d, "\r", 1, out, &olen), 1);
    assert_int_equal(olen, 2);
    assert_memory_equal(out, ". ", 2);
    assert_int_equal(smtp_data_feed(&d, "x", 1, out, &olen), 1);
    assert_int_equal(olen, 2);
    assert_memory_equal(out, " x", 2);
    smtp_data_init(&d, MX2_BARE_NORMALIZE, 0, 0);
    assert_int_equal(smtp_data_feed(&d, ".", 1, out, &olen), 1);
    assert_int_equal(smtp_data_feed(&d, "\n", 1, out, &olen), 1);
    assert_int_equal(olen, 4);
    assert_memory_equal(out, "..\r\n", 4);
    assert_true(olen <= SMTP_DATA_OUT_SIZE(1));
}

static char *
build_headers(unsigned n_received, const char *name, size_t *len)
{
    size_t cap = 64 + n_received * 64, n = 0;
    char *m = malloc(cap);

    assert_non_null(m);
    for (unsigned i = 0; i < n_received; i++)
        n += (size_t)snprintf(m + n, cap - n, "%s from h%u by mx; Mon, 1 Jan 2024\r\n", name, i);
    n += (size_t)snprintf(m + n, cap - n, "Subject: t\r\n\r\nReceived: in body\r\n.\r\n");
    *len = n;
    return m;
}

static void
test_received_count(void **state)
{
    static const struct {
        unsigned n, limit;
        const char *name;
        unsigned count;
        int error;
    } rows[] = {
        {50, 50, "Received:", 50, 0},
        {51, 50, "Received:", 51, MX2_E_LOOP},
        {51, 50, "received:", 51, MX2_E_LOOP},
        {51, 50, "RECEIVED :", 51, MX2_E_LOOP},
        {60, 50, "X-Received:", 0, 0},
        {60, 50, "Received-SPF:", 0, 0},
        {3, 2, "Received:", 3, MX2_E_LOOP},
        {100, 0, "Received:", 100, 0}, /* 0 = no limit */
        {0, 50, "Received:", 0, 0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        size_t len;
        char *m = build_headers(rows[i].n, rows[i].name, &len);
        struct result r;
        run(m, len, MX2_BARE_NORMALIZE, 0, rows[i].limit, 0, (unsigned)i, &r);
        assert_true(r.done);
        assert_int_equal(r.consumed, len);
        if (r.d.received_count != rows[i].count || r.error != rows[i].error)
            fail_msg("row %zu: count %u error %d", i, r.d.received_count, r.error);
        if (r.error != 0)
            assert_true(r.outlen < len); /* output stopped */
        result_free(&r);
        free(m);
    }
}

static void
test_received_not_in_body_or_continuation(void **state)
{
    const char m[] = "Subject: x\r\n Received: folded\r\n\tReceived: folded\r\n"
                     "X: y\n Received: folded after LF\r\n\r\nReceived: body\r\n.\r\n";
    struct result r;

    run(m, sizeof(m) - 1, MX2_BARE_NORMALIZE, 0, 50, 0, 1, &r);
    assert_int_equal(r.d.received_count, 0);
    result_free(&r);
    /* The header section also ends at an empty line made of a bare LF. */
    {
        const char m2[] = "A: b\n\nReceived: body\r\n.\r\n";
        run(m2, sizeof(m2) - 1, MX2_BARE_NORMALIZE, 0, 50, 0, 1, &r);
        assert_int_equal(r.d.received_count, 0);
        result_free(&r);
    }
    /* A transparency dot is not part of the field name. */
    {
        const char m3[] = ".Received: x\r\nReceived: y\r\n\r\n.\r\n";
        run(m3, sizeof(m3) - 1, MX2_BARE_NORMALIZE, 0, 1, 0, 1, &r);
        assert_int_equal(r.d.received_count, 2);
        assert_int_equal(r.error, MX2_E_LOOP);
        result_free(&r);
    }
}

static void
test_message_id(void **state)
{
    static const struct {
        const char *msg;
        const char *id;
    } rows[] = {
        {"Message-ID: <abc@example.com>\r\n\r\nx\r\n.\r\n", "<abc@example.com>"},
        {"message-id:<abc@x>   \r\n\r\n.\r\n", "<abc@x>"},
        {"Message-Id:\r\n <folded@x>\r\nSubject: s\r\n\r\n.\r\n", "<folded@x>"},
        {"Message-Id: <a\r\n b@x>\r\n\r\n.\r\n", "<a b@x>"},
        {"Subject: s\r\n\r\nMessage-ID: <body@x>\r\n.\r\n", ""},
        {"Message-ID: <first@x>\r\nMessage-ID: <second@x>\r\n\r\n.\r\n", "<first@x>"},
        {".Message-ID: <dot@x>\r\n\r\n.\r\n", "<dot@x>"},
        {"Message-ID: <ctl\x01\xff@x>\r\n\r\n.\r\n", "<ctl??@x>"},
        {"Message-ID: <bare@x>\nSubject: y\n\n.\r\n", "<bare@x>"},
        {"X-Message-ID: <no@x>\r\n\r\n.\r\n", ""},
        {"Message-ID: <unterminated@x>", "<unterminated@x>"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct result r;
        run(rows[i].msg, strlen(rows[i].msg), MX2_BARE_NORMALIZE, 0, 50, 0, (unsigned)i, &r);
        if (strcmp(r.d.message_id, rows[i].id) != 0)
            fail_msg("row %zu: message-id '%s'", i, r.d.message_id);
        assert_int_equal(r.d.message_id_len, strlen(rows[i].id));
        result_free(&r);
    }
    /* Bounded copy. */
    {
        char m[2048];
        struct result r;
        size_t n = (size_t)snprintf(m, sizeof(m), "Message-ID: <");
        memset(m + n, 'i', 1000);
        n += 1000;
        n += (size_t)snprintf(m + n, sizeof(m) - n, "@x>\r\n\r\n.\r\n");
        run(m, n, MX2_BARE_NORMALIZE, 0, 50, 0, 3, &r);
        assert_int_equal(r.d.message_id_len, SMTP_DATA_MSGID_MAX);
        assert_int_equal(strlen(r.d.message_id), SMTP_DATA_MSGID_MAX);
        assert_true(r.done);
        assert_int_equal(r.error, 0);
        result_free(&r);
    }
}

static void
test_size_limit(void **state)
{
    struct result r;
    const char ok[] = "12345678\r\n.\r\n";  /* 10 octets of message */
    const char big[] = "123456789\r\n.\r\nNOOP\r\n";

    run(ok, sizeof(ok) - 1, MX2_BARE_NORMALIZE, 10, 50, 0, 1, &r);
    assert_true(r.done);
    assert_int_equal(r.error, 0);
    assert_int_equal(r.d.size, 10);
    assert_int_equal(r.outlen, 10);
    result_free(&r);

    run(big, sizeof(big) - 1, MX2_BARE_NORMALIZE, 10, 50, 0, 2, &r);
    assert_true(r.done);
    assert_int_equal(r.error, MX2_E_TOO_BIG);
    assert_int_equal(r.consumed, sizeof(big) - 1 - 6); /* kept scanning to the end */
    assert_int_equal(r.d.size, 11);                    /* counted in full */
    assert_true(r.outlen <= 10);                       /* output stopped */
    result_free(&r);

    /* Normalisation counts: 5 bare LFs grow 5 octets each by one. */
    {
        const char m[] = "a\nb\nc\nd\ne\n\r\n.\r\n";
        run(m, sizeof(m) - 1, MX2_BARE_NORMALIZE, 16, 50, 0, 3, &r);
        assert_int_equal(r.d.size, 17);
        assert_int_equal(r.error, MX2_E_TOO_BIG);
        assert_int_equal(r.d.bare_lf, 5);
        result_free(&r);
    }
    /* Several errors: the reply is chosen by priority (loop > size > bare
     * newline), whatever came first and however the bytes were split. */
    {
        const char m[] = "a\nbbbbbbbbbbbbbbbbbbbb\r\n.\r\n";
        run(m, sizeof(m) - 1, MX2_BARE_REJECT, 5, 50, 0, 4, &r);
        assert_int_equal(r.error, MX2_E_TOO_BIG);
        result_free(&r);
    }
    {
        /* Too big long before the fourth Received: still a loop. */
        const char m[] = "Received: a\r\nX: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n"
                         "Received: b\r\nReceived: c\r\nReceived: d\r\n\r\nbody\r\n.\r\n";
        run(m, sizeof(m) - 1, MX2_BARE_NORMALIZE, 20, 3, 0, 4, &r);
        assert_int_equal(r.error, MX2_E_LOOP);
        result_free(&r);
    }
}

static void
test_long_lines_and_counters(void **state)
{
    char m[4096];
    size_t n = 0;
    struct result r;

    memset(m + n, 'x', 998);
    n += 998;
    memcpy(m + n, "\r\n", 2);
    n += 2;
    memset(m + n, 'y', 999);
    n += 999;
    memcpy(m + n, "\r\n", 2);
    n += 2;
    memset(m + n, 'z', 2000);
    n += 2000;
    memcpy(m + n, "\r\n.\r\n", 5);
    n += 5;
    run(m, n, MX2_BARE_NORMALIZE, 0, 50, 0, 9, &r);
    assert_true(r.done);
    assert_int_equal(r.error, 0); /* long lines are not an error */
    assert_int_equal(r.d.long_lines, 2);
    assert_int_equal(r.d.lines, 3);
    assert_int_equal(r.outlen, n - 3);
    assert_memory_equal(r.out, m, n - 3);
    assert_false(r.d.eightbit);
    result_free(&r);

    {
        const char e[] = "Subject: x\r\n\r\nbody \xc3\xa9\r\n.\r\n";
        run(e, sizeof(e) - 1, MX2_BARE_NORMALIZE, 0, 50, 0, 1, &r);
        assert_true(r.d.eightbit);
        assert_false(r.d.eightbit_header);
        result_free(&r);
    }
    {
        const char e[] = "Subject: \xc3\xa9\r\n\r\nbody\r\n.\r\n";
        run(e, sizeof(e) - 1, MX2_BARE_NORMALIZE, 0, 50, 0, 1, &r);
        assert_true(r.d.eightbit);
        assert_true(r.d.eightbit_header);
        result_free(&r);
    }
    {
        const char e[] = "a\rb\nc\r\r\n.\r\n";
        run(e, sizeof(e) - 1, MX2_BARE_NORMALIZE, 0, 50, 0, 1, &r);
        assert_int_equal(r.d.bare_cr, 2);
        assert_int_equal(r.d.bare_lf, 1);
        assert_int_equal(r.error, 0);
        result_free(&r);
    }
}

/* --- invariants over random inputs ------------------------------------- */

/* The output never holds a line that is a lone "." (which would end the
 * data at the primary), never a bare CR or LF, and ends with CRLF unless
 * empty or cut by an error. */
static void
check_invariants(const char *o, size_t n, bool done, int error)
{
    for (size_t i = 0; i < n; i++) {
        if (o[i] == '\r')
            assert_true(i + 1 < n && o[i + 1] == '\n');
        if (o[i] == '\n')
            assert_true(i > 0 && o[i - 1] == '\r');
        if (o[i] == '.' && (i == 0 || o[i - 1] == '\n') && i + 1 < n)
            assert_false(o[i + 1] == '\r'); /* a "." line */
    }
    if (done && error == 0 && n > 0)
        assert_true(n >= 2 && o[n - 2] == '\r' && o[n - 1] == '\n');
}

/* Is there a bare CR or LF in in[0..end)? */
static bool
has_bare(const char *in, size_t end)
{
    for (size_t i = 0; i < end; i++) {
        if (in[i] == '\r' && (i + 1 >= end || in[i + 1] != '\n'))
            return true;
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
            return true;
    }
    return false;
}

static void
test_random_invariants(void **state)
{
    static const char alphabet[] = "a.\r\n";
    char in[40];

    srand(12345);
    for (int iter = 0; iter < 30000; iter++) {
        size_t len = (size_t)rand() % sizeof(in), term = SIZE_MAX;
        enum mx2_bare_newline mode = (iter & 1) ? MX2_BARE_REJECT : MX2_BARE_NORMALIZE;
        struct result a, b;

        for (size_t i = 0; i < len; i++)
            in[i] = alphabet[rand() % 4];
        /* Reference end of data: ".\r\n" at the start, or the first
         * "\r\n.\r\n". */
        if (len >= 3 && memcmp(in, ".\r\n", 3) == 0)
            term = 3;
        else
            for (size_t i = 0; i + 5 <= len; i++)
                if (memcmp(in + i, "\r\n.\r\n", 5) == 0) {
                    term = i + 5;
                    break;
                }
        run(in, len, mode, 0, 0, len ? len : 1, 0, &a);
        run(in, len, mode, 0, 0, 1, 0, &b);
        assert_int_equal(a.done, term != SIZE_MAX);
        assert_int_equal(a.consumed, term != SIZE_MAX ? term : len);
        assert_int_equal(a.outlen, b.outlen);
        assert_memory_equal(a.out, b.out, a.outlen);
        assert_int_equal(a.error, b.error);
        check_invariants(a.out, a.outlen, a.done, a.error);
        if (a.done) {
            size_t body = term - 3; /* without ".\r\n" */
            bool bare = has_bare(in, body);
            if (mode == MX2_BARE_REJECT)
                assert_int_equal(a.error, bare ? MX2_E_BARE_NEWLINE : 0);
            if (!bare) {
                /* Well-formed input passes unchanged. */
                assert_int_equal(a.outlen, body);
                assert_memory_equal(a.out, in, body);
            }
        }
        result_free(&a);
        result_free(&b);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_split_terminator),
        cmocka_unit_test(test_held_bytes_bound),
        cmocka_unit_test(test_received_count),
        cmocka_unit_test(test_received_not_in_body_or_continuation),
        cmocka_unit_test(test_message_id),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_long_lines_and_counters),
        cmocka_unit_test(test_random_invariants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
