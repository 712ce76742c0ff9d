/*
 * test_bounce.c - RFC 3464 DSN composition: top-level headers, the MIME
 * structure and its boundary, every per-message and per-recipient field,
 * RET=HDRS/FULL and the size limit, delayed and success reports, ENVID and
 * ORCPT, and above all that the output is valid stored wire form (CRLF only,
 * dot-stuffed, lines <= 998) whatever the original or the diagnostics hold.
 * Also the reply -> status mapping and the NOTIFY rules.
 *
 * MX2_TEST_DUMP=1 prints the composed messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bounce.h"
#include "buf.h"
#include "envelope.h"
#include "err.h"
#include "spool.h"

#define NOW ((int64_t)1700000000)     /* Tue, 14 Nov 2023 22:13:20 +0000 */
#define ARRIVAL ((int64_t)1699990000) /* Tue, 14 Nov 2023 19:26:40 +0000 */

/* A stored original (wire form, dot-stuffed): a header line ".foo" is
 * stored as "..foo". */
static const char ORIG[] = "Received: from client.example.org (client.example.org [192.0.2.7])\r\n"
                           "\tby mx2.example.net with ESMTP id ABC123\r\n"
                           "From: Alice <alice@example.org>\r\n"
                           "To: bob@example.jp, carol@example.jp\r\n"
                           "Subject: quarterly figures\r\n"
                           "Message-ID: <orig-1@example.org>\r\n"
                           "..foo: a header that starts with a dot\r\n"
                           "\r\n"
                           "SECRET-BODY line one\r\n"
                           "..\r\n"
                           "..bar\r\n"
                           "last line\r\n";

static const struct bounce_rcpt RCPTS[] = {
    {"bob@example.jp", "rfc822;Bob+2BTag@example.jp", "5.1.1",
     "550 5.1.1 <bob@example.jp>: Recipient address rejected: User unknown", "primary.example.jp",
     NOW - 60},
    {"carol@example.jp", NULL, "4.4.1", NULL, NULL, 0},
};

static struct bounce_info
info_make(enum bounce_kind kind, int ret)
{
    struct bounce_info i;
    memset(&i, 0, sizeof(i));
    i.kind = kind;
    i.hostname = "mx2.example.net";
    i.qid = "ABC123";
    i.sender = "alice@example.org";
    i.ret = ret;
    i.arrival = ARRIVAL;
    i.now = NOW;
    i.reason = "the primary mail server rejected it";
    i.full_limit = 10 * 1024 * 1024;
    return i;
}

/* ---- helpers ---- */

static int
collect(void *arg, const unsigned char *p, size_t n)
{
    buf_append(arg, p, n);
    return 0;
}

/* Check the stored wire form and return the unstuffed text (NUL-terminated,
 * caller frees with buf_free). */
static void
check_wire(const struct buf *out, struct buf *plain)
{
    const char *d = out->data;
    size_t len = out->len;

    assert_true(len >= 2);
    assert_memory_equal(d + len - 2, "\r\n", 2); /* ends with a complete line */
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (d[i] == '\0')
            fail_msg("NUL at %zu", i);
        if (d[i] == '\r') {
            if (i + 1 >= len || d[i + 1] != '\n')
                fail_msg("bare CR at %zu", i);
        } else if (d[i] == '\n') {
            if (i == 0 || d[i - 1] != '\r')
                fail_msg("bare LF at %zu", i);
            size_t l = i - 1 - start; /* without CRLF */
            if (l > 998)
                fail_msg("line at %zu is %zu octets", start, l);
            if (l >= 1 && d[start] == '.' && (l < 2 || d[start + 1] != '.'))
                fail_msg("unstuffed dot line at %zu: %.*s", start, (int)l, d + start);
            start = i + 1;
        }
    }
    /* No final ".\r\n": the spool's stored form. */
    assert_false(len >= 3 && memcmp(d + len - 3, ".\r\n", 3) == 0 &&
                 (len == 3 || d[len - 4] == '\n'));
    memset(plain, 0, sizeof(*plain));
    assert_int_equal(spool_body_unstuff((const unsigned char *)d, len, collect, plain), 0);
    buf_append(plain, "", 1);
    plain->len--;
}

static void
dump(const char *what, const struct buf *b)
{
    const char *e = getenv("MX2_TEST_DUMP");
    if (e && *e)
        fprintf(stderr, "==== %s ====\n%.*s==== end ====\n", what, (int)b->len, b->data);
}

/* The text of the line starting with `prefix` (exactly at a line start),
 * unfolded, in a static buffer; NULL when absent. from: search after it. */
static const char *
field(const char *text, const char *prefix, const char **from)
{
    static char val[8192];
    const char *p = from && *from ? *from : text;
    size_t pl = strlen(prefix);
    for (;;) {
        if (strncmp(p, prefix, pl) == 0 && (p == text || p[-1] == '\n'))
            break;
        p = strstr(p + 1, prefix);
        if (p == NULL)
            return NULL;
        if (p[-1] != '\n') {
            continue;
        }
        break;
    }
    size_t o = 0;
    const char *q = p + pl;
    for (;;) {
        const char *eol = strstr(q, "\r\n");
        assert_non_null(eol);
        size_t n = (size_t)(eol - q);
        assert_true(o + n < sizeof(val));
        memcpy(val + o, q, n);
        o += n;
        q = eol + 2;
        if (*q != ' ' && *q != '\t')
            break;
    }
    val[o] = '\0';
    if (from)
        *from = q;
    return val;
}

static size_t
count(const char *hay, const char *needle)
{
    size_t c = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        c++;
    return c;
}

/* The boundary from the Content-Type; checks the part structure. */
static void
check_mime(const char *plain, char *boundary, size_t size)
{
    const char *ct = field(plain, "Content-Type: ", NULL);
    assert_non_null(ct);
    assert_non_null(strstr(ct, "multipart/report"));
    assert_non_null(strstr(ct, "report-type=delivery-status"));
    const char *b = strstr(ct, "boundary=\"");
    assert_non_null(b);
    b += 10;
    const char *e = strchr(b, '"');
    assert_non_null(e);
    assert_true((size_t)(e - b) < size - 4 && e > b);
    assert_true(e - b <= 70); /* RFC 2046 5.1.1 */
    snprintf(boundary, size, "%.*s", (int)(e - b), b);

    char delim[128], close[128];
    snprintf(delim, sizeof(delim), "\r\n--%s\r\n", boundary);
    snprintf(close, sizeof(close), "\r\n--%s--\r\n", boundary);
    assert_int_equal(count(plain, delim), 3);
    assert_int_equal(count(plain, close), 1);
    /* The boundary occurs nowhere but in the header and the 4 delimiters. */
    assert_int_equal(count(plain, boundary), 5);
    /* The parts in order. */
    const char *p1 = strstr(plain, delim);
    const char *p2 = strstr(p1 + 1, delim);
    const char *p3 = strstr(p2 + 1, delim);
    assert_non_null(strstr(p1, "Content-Type: text/plain"));
    assert_true(strstr(p1, "Content-Type: text/plain") < p2);
    assert_true(strstr(p2, "Content-Type: message/delivery-status") < p3);
    assert_true(strstr(p3, "Content-Type: ") != NULL);
}

static void
compose_ok(const struct bounce_info *info, const struct bounce_rcpt *r, size_t n, const char *orig,
           size_t orig_len, struct buf *out, struct buf *plain, const char *what)
{
    memset(out, 0, sizeof(*out));
    assert_int_equal(bounce_compose(info, r, n, (const unsigned char *)orig, orig_len, out), 0);
    buf_append(out, "", 1); /* NUL-terminate for strstr, not counted */
    out->len--;
    dump(what, out);
    check_wire(out, plain);
}

/* ---- tests ---- */

static void
test_failed_two_rcpts_headers_only(void **state)
{
    struct bounce_info info = info_make(BOUNCE_FAILED, ENVELOPE_RET_HDRS);
    struct buf out, plain;
    char boundary[128];
    compose_ok(&info, RCPTS, 2, ORIG, sizeof(ORIG) - 1, &out, &plain, "failed/hdrs");
    const char *t = plain.data;

    /* Top-level header section. */
    static const struct {
        const char *name, *value;
    } hdrs[] = {
        {"From: ", "MAILER-DAEMON@mx2.example.net (Mail Delivery System)"},
        {"To: ", "<alice@example.org>"},
        {"Subject: ", "Undelivered Mail Returned to Sender"},
        {"Date: ", "Tue, 14 Nov 2023 22:13:20 +0000"},
        {"Auto-Submitted: ", "auto-replied"},
        {"MIME-Version: ", "1.0"},
    };
    for (size_t i = 0; i < sizeof(hdrs) / sizeof(hdrs[0]); i++) {
        const char *v = field(t, hdrs[i].name, NULL);
        if (v == NULL || strcmp(v, hdrs[i].value) != 0)
            fail_msg("%s: got %s", hdrs[i].name, v ? v : "(none)");
    }
    const char *mid = field(t, "Message-ID: ", NULL);
    assert_non_null(mid);
    assert_true(mid[0] == '<' && strstr(mid, "@mx2.example.net>") != NULL);
    assert_non_null(strstr(mid, "ABC123"));
    /* The header section ends before the first part. */
    const char *eoh = strstr(t, "\r\n\r\n");
    assert_non_null(eoh);
    assert_true(strstr(t, "Auto-Submitted: ") < eoh);

    check_mime(t, boundary, sizeof(boundary));

    /* Human part names each recipient with its diagnostic. */
    const char *human = strstr(t, "Content-Type: text/plain");
    const char *status = strstr(t, "Content-Type: message/delivery-status");
    assert_true(human < status);
    assert_non_null(strstr(human, "<bob@example.jp>"));
    assert_non_null(strstr(human, "<carol@example.jp>"));
    assert_non_null(strstr(human, "User unknown"));
    assert_non_null(strstr(human, "the primary mail server rejected it"));

    /* Per-message fields. */
    assert_string_equal(field(status, "Reporting-MTA: ", NULL), "dns; mx2.example.net");
    assert_string_equal(field(status, "Arrival-Date: ", NULL), "Tue, 14 Nov 2023 19:26:40 +0000");
    assert_null(field(status, "Original-Envelope-Id:", NULL)); /* no ENVID given */

    /* Per-recipient fields, in order, first bob then carol. */
    const char *cur = status;
    assert_string_equal(field(t, "Original-Recipient: ", &cur), "rfc822;Bob+Tag@example.jp");
    assert_string_equal(field(t, "Final-Recipient: ", &cur), "rfc822; bob@example.jp");
    assert_string_equal(field(t, "Action: ", &cur), "failed");
    assert_string_equal(field(t, "Status: ", &cur), "5.1.1");
    assert_string_equal(field(t, "Remote-MTA: ", &cur), "dns; primary.example.jp");
    assert_string_equal(field(t, "Diagnostic-Code: ", &cur),
                        "smtp; 550 5.1.1 <bob@example.jp>: Recipient address rejected: User "
                        "unknown");
    assert_string_equal(field(t, "Last-Attempt-Date: ", &cur), "Tue, 14 Nov 2023 22:12:20 +0000");
    const char *carol = cur;
    assert_string_equal(field(t, "Final-Recipient: ", &cur), "rfc822; carol@example.jp");
    assert_string_equal(field(t, "Action: ", &cur), "failed");
    assert_string_equal(field(t, "Status: ", &cur), "4.4.1");
    /* carol has no ORCPT, remote MTA, diagnostic or attempt date. */
    const char *third = strstr(carol, "\r\n--");
    const char *c2 = carol;
    const char *orc = field(t, "Original-Recipient: ", &c2);
    assert_true(orc == NULL || c2 > third);
    c2 = carol;
    assert_true(field(t, "Remote-MTA: ", &c2) == NULL || c2 > third);
    c2 = carol;
    assert_true(field(t, "Diagnostic-Code: ", &c2) == NULL || c2 > third);
    c2 = carol;
    assert_true(field(t, "Last-Attempt-Date: ", &c2) == NULL || c2 > third);
    assert_null(strstr(t, "Will-Retry-Until"));
    assert_int_equal(count(status, "Final-Recipient: "), 2);

    /* Third part: the original headers (unstuffed ".foo"), not the body. */
    const char *hp = strstr(t, "Content-Type: text/rfc822-headers");
    assert_non_null(hp);
    assert_non_null(strstr(hp, "\r\nSubject: quarterly figures\r\n"));
    assert_non_null(strstr(hp, "\r\n.foo: a header that starts with a dot\r\n"));
    assert_non_null(strstr(hp, "\tby mx2.example.net with ESMTP id ABC123\r\n"));
    assert_null(strstr(t, "SECRET-BODY"));
    assert_null(strstr(t, "message/rfc822\r\n"));
    /* ... and the stored form has it stuffed. */
    assert_non_null(strstr(out.data, "\r\n..foo: a header"));
    /* 7-bit content is labelled 7bit. */
    assert_non_null(strstr(t, "Content-Transfer-Encoding: 7bit"));
    assert_null(strstr(t, "8bit"));

    buf_free(&out);
    buf_free(&plain);
}

static void
test_ret_full_and_limit(void **state)
{
    struct bounce_info info = info_make(BOUNCE_FAILED, ENVELOPE_RET_FULL);
    struct buf out, plain;
    char boundary[128];

    compose_ok(&info, RCPTS, 2, ORIG, sizeof(ORIG) - 1, &out, &plain, "failed/full");
    check_mime(plain.data, boundary, sizeof(boundary));
    const char *p = strstr(plain.data, "Content-Type: message/rfc822\r\n");
    assert_non_null(p);
    /* The whole original, unstuffed, after the part's blank line. */
    struct buf want = {0};
    assert_int_equal(
        spool_body_unstuff((const unsigned char *)ORIG, sizeof(ORIG) - 1, collect, &want), 0);
    buf_append(&want, "", 1);
    assert_non_null(strstr(p, want.data));
    assert_non_null(strstr(plain.data, "\r\n.bar\r\n"));
    assert_non_null(strstr(plain.data, "\r\n.\r\n")); /* the ".." line, unstuffed */
    assert_non_null(strstr(out.data, "\r\n..\r\n"));  /* ... stuffed when stored */
    assert_non_null(strstr(out.data, "\r\n..bar\r\n"));
    assert_null(strstr(plain.data, "text/rfc822-headers"));
    buf_free(&want);
    buf_free(&out);
    buf_free(&plain);

    /* Larger than full_limit: headers only, and the text says why. */
    info.full_limit = 100;
    compose_ok(&info, RCPTS, 2, ORIG, sizeof(ORIG) - 1, &out, &plain, "failed/full-too-big");
    assert_non_null(strstr(plain.data, "Content-Type: text/rfc822-headers"));
    assert_null(strstr(plain.data, "SECRET-BODY"));
    assert_non_null(strstr(plain.data, "too large"));
    buf_free(&out);
    buf_free(&plain);

    /* RET not given (NONE) behaves like HDRS. */
    info = info_make(BOUNCE_FAILED, ENVELOPE_RET_NONE);
    compose_ok(&info, RCPTS, 2, ORIG, sizeof(ORIG) - 1, &out, &plain, "failed/none");
    assert_non_null(strstr(plain.data, "Content-Type: text/rfc822-headers"));
    assert_null(strstr(plain.data, "SECRET-BODY"));
    buf_free(&out);
    buf_free(&plain);
}

static void
test_delayed_and_envid(void **state)
{
    struct bounce_info info = info_make(BOUNCE_DELAYED, ENVELOPE_RET_HDRS);
    struct buf out, plain;
    char boundary[128];

    info.envid = "QQ314159+2Bx";
    info.retry_until = ARRIVAL + 5 * 86400;
    info.reason = "the primary mail server is not reachable";
    compose_ok(&info, RCPTS + 1, 1, ORIG, sizeof(ORIG) - 1, &out, &plain, "delayed");
    const char *t = plain.data;
    check_mime(t, boundary, sizeof(boundary));
    assert_string_equal(field(t, "Subject: ", NULL), "Delayed Mail (still being retried)");
    assert_string_equal(field(t, "Action: ", NULL), "delayed");
    assert_string_equal(field(t, "Status: ", NULL), "4.4.1");
    assert_string_equal(field(t, "Original-Envelope-Id: ", NULL), "QQ314159+x");
    assert_string_equal(field(t, "Will-Retry-Until: ", NULL), "Sun, 19 Nov 2023 19:26:40 +0000");
    assert_null(strstr(t, "Action: failed"));
    /* The per-message group comes first (RFC 3464 2.2). */
    assert_true(strstr(t, "Original-Envelope-Id:") < strstr(t, "Reporting-MTA:"));
    assert_true(strstr(t, "Reporting-MTA:") < strstr(t, "Final-Recipient:"));
    assert_non_null(strstr(t, "not reachable"));
    buf_free(&out);
    buf_free(&plain);

    /* Success report. */
    info = info_make(BOUNCE_DELIVERED, ENVELOPE_RET_HDRS);
    struct bounce_rcpt ok = {"bob@example.jp",     NULL, "2.0.0", "250 2.0.0 Ok: queued as X",
                             "primary.example.jp", NOW};
    compose_ok(&info, &ok, 1, ORIG, sizeof(ORIG) - 1, &out, &plain, "delivered");
    assert_string_equal(field(plain.data, "Subject: ", NULL), "Successful Mail Delivery Report");
    assert_string_equal(field(plain.data, "Action: ", NULL), "delivered");
    assert_string_equal(field(plain.data, "Status: ", NULL), "2.0.0");
    assert_null(strstr(plain.data, "Will-Retry-Until"));
    buf_free(&out);
    buf_free(&plain);
}

static void
test_status_defaults(void **state)
{
    static const struct {
        enum bounce_kind kind;
        const char *status, *want;
    } rows[] = {
        {BOUNCE_FAILED, NULL, "5.0.0"},      {BOUNCE_FAILED, "", "5.0.0"},
        {BOUNCE_FAILED, "5.x.1", "5.0.0"},   {BOUNCE_FAILED, "5.7.1 x", "5.0.0"},
        {BOUNCE_DELAYED, NULL, "4.0.0"},     {BOUNCE_DELIVERED, NULL, "2.0.0"},
        {BOUNCE_RELAYED, NULL, "2.0.0"},
        {BOUNCE_FAILED, "5.4.7", "5.4.7"},   {BOUNCE_FAILED, "4.4.7", "4.4.7"},
        {BOUNCE_FAILED, "5.1.10", "5.1.10"}, {BOUNCE_FAILED, "5.1234.1", "5.0.0"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct bounce_info info = info_make(rows[i].kind, ENVELOPE_RET_HDRS);
        struct bounce_rcpt r = {"x@example.jp", NULL, rows[i].status, NULL, NULL, 0};
        struct buf out, plain;
        compose_ok(&info, &r, 1, NULL, 0, &out, &plain, "status");
        const char *st = field(plain.data, "Status: ", NULL);
        if (rows[i].kind == BOUNCE_RELAYED && strstr(plain.data, "Action: relayed") == NULL)
            fail_msg("row %zu: no Action: relayed", i);
        if (st == NULL || strcmp(st, rows[i].want) != 0)
            fail_msg("row %zu: Status %s, want %s", i, st ? st : "(none)", rows[i].want);
        buf_free(&out);
        buf_free(&plain);
    }
}

/* Hostile and oversized inputs: the output stays valid wire form. */
static void
test_wire_form_under_stress(void **state)
{
    struct buf orig = {0}, out, plain;
    char boundary[128];

    /* Headers: a 3000-octet header line, a 998-dot line, a bare LF and a
     * bare CR in the middle of lines, 8-bit. */
    buf_appendf(&orig, "Subject: ");
    for (int i = 0; i < 3000; i++)
        buf_append(&orig, "x", 1);
    buf_appendf(&orig, "\r\n");
    for (int i = 0; i < 999; i++) /* stored: 999 dots = one stuffed line of 998 */
        buf_append(&orig, ".", 1);
    buf_appendf(&orig, "\r\nX-Bare: a\nb\rc\r\nX-8bit: caf\xc3\xa9\r\n\r\nbody\r\n");
    for (int i = 0; i < 2500; i++)
        buf_append(&orig, i % 100 == 99 ? " " : "y", 1);
    buf_appendf(&orig, "\r\n..\r\nend"); /* no final CRLF */

    /* A diagnostic that tries to end the message and inject commands, and
     * a very long one with and without spaces. */
    struct buf longd = {0}, longw = {0};
    buf_appendf(&longd, "550-5.7.1 first\r\n.\r\nMAIL FROM:<evil@example.com>\r\n550 5.7.1 ");
    for (int i = 0; i < 400; i++)
        buf_appendf(&longd, "word%d ", i);
    buf_appendf(&longw, "451 ");
    for (int i = 0; i < 2500; i++)
        buf_append(&longw, "z", 1);
    buf_append(&longd, "", 1);
    buf_append(&longw, "", 1);
    struct bounce_rcpt r[] = {
        {"a@example.jp", NULL, "5.7.1", longd.data, "primary.example.jp", NOW},
        {"b@example.jp", "rfc822;b@example.jp", "4.0.0", longw.data, NULL, NOW},
        {".dot@example.jp", NULL, "5.1.1", "550 .\r\n.", NULL, 0},
    };
    for (int ret = ENVELOPE_RET_NONE; ret <= ENVELOPE_RET_HDRS; ret++) {
        struct bounce_info info = info_make(BOUNCE_FAILED, ret);
        info.reason = "it was rejected\r\n.\r\nQUIT";
        compose_ok(&info, r, 3, orig.data, orig.len, &out, &plain, "stress");
        check_mime(plain.data, boundary, sizeof(boundary));
        assert_null(strstr(out.data, "\r\n.\r\n")); /* stored: no end of data */
        assert_null(strstr(plain.data, "\r\nMAIL FROM"));
        assert_null(strstr(plain.data, "\r\nQUIT"));
        /* The diagnostic survives, folded: every word is there. */
        const char *d = field(plain.data, "Diagnostic-Code: ", NULL);
        assert_non_null(d);
        assert_non_null(strstr(d, "smtp; 550-5.7.1 first . MAIL FROM:<evil@example.com> 550"));
        assert_non_null(strstr(d, " word0 "));
        assert_non_null(strstr(d, " word399"));
        /* 8-bit quoted content is declared. */
        assert_non_null(strstr(plain.data, "Content-Transfer-Encoding: 8bit"));
        assert_non_null(strstr(plain.data, "caf\xc3\xa9"));
        if (ret == ENVELOPE_RET_FULL)
            assert_non_null(strstr(plain.data, "\r\nend\r\n"));
        else
            assert_null(strstr(plain.data, "\r\nbody\r\n"));
        buf_free(&out);
        buf_free(&plain);
    }
    buf_free(&orig);
    buf_free(&longd);
    buf_free(&longw);
}

static void
test_boundary_avoids_content(void **state)
{
    struct bounce_info info = info_make(BOUNCE_FAILED, ENVELOPE_RET_FULL);
    struct buf out, plain, orig = {0};
    char first[128], second[128];

    /* Learn the boundary chosen for an innocent message, then plant it
     * (and its delimiter line) in the original. */
    compose_ok(&info, RCPTS, 1, ORIG, sizeof(ORIG) - 1, &out, &plain, "boundary-1");
    check_mime(plain.data, first, sizeof(first));
    buf_free(&out);
    buf_free(&plain);

    buf_appendf(&orig, "Subject: trap %s\r\n\r\n--%s\r\n--%s--\r\n", first, first, first);
    compose_ok(&info, RCPTS, 1, orig.data, orig.len, &out, &plain, "boundary-2");
    check_mime(plain.data, second, sizeof(second)); /* counts: only 5 occurrences */
    assert_string_not_equal(first, second);
    assert_non_null(strstr(plain.data, first)); /* the quoted original is intact */
    buf_free(&out);
    buf_free(&plain);
    buf_free(&orig);
}

static void
test_appends_and_no_original(void **state)
{
    struct bounce_info info = info_make(BOUNCE_FAILED, ENVELOPE_RET_HDRS);
    struct buf out = {0}, plain;
    char boundary[128];

    buf_append(&out, "KEEP", 4);
    assert_int_equal(bounce_compose(&info, RCPTS, 1, NULL, 0, &out), 0);
    assert_memory_equal(out.data, "KEEP", 4);
    buf_consume(&out, 4);
    struct buf view = {0};
    buf_append(&view, buf_head(&out), buf_avail(&out));
    check_wire(&view, &plain);
    check_mime(plain.data, boundary, sizeof(boundary));
    assert_non_null(strstr(plain.data, "text/rfc822-headers"));
    buf_free(&view);
    buf_free(&plain);
    buf_free(&out);

    /* A message with no body and no final CRLF: all of it is headers. */
    static const char hdr_only[] = "Subject: only headers\r\nX-A: b";
    compose_ok(&info, RCPTS, 1, hdr_only, sizeof(hdr_only) - 1, &out, &plain, "hdr-only");
    assert_non_null(strstr(plain.data, "\r\nSubject: only headers\r\nX-A: b\r\n"));
    buf_free(&out);
    buf_free(&plain);
}

static void
test_invalid_arguments(void **state)
{
    struct bounce_info good = info_make(BOUNCE_FAILED, ENVELOPE_RET_HDRS);
    struct bounce_rcpt noaddr[] = {{"a@example.jp", NULL, NULL, NULL, NULL, 0},
                                   {"", NULL, NULL, NULL, NULL, 0}};
    struct buf out = {0};
    buf_append(&out, "X", 1);

    struct bounce_info nosender = good, nohost = good, nullsender = good, badkind = good;
    nosender.sender = ""; /* <> is never bounced */
    nullsender.sender = NULL;
    nohost.hostname = NULL;
    badkind.kind = (enum bounce_kind)7;
    assert_int_equal(bounce_compose(NULL, RCPTS, 1, NULL, 0, &out), MX2_E_INVAL);
    assert_int_equal(bounce_compose(&good, RCPTS, 0, NULL, 0, &out), MX2_E_INVAL);
    assert_int_equal(bounce_compose(&good, NULL, 1, NULL, 0, &out), MX2_E_INVAL);
    assert_int_equal(bounce_compose(&good, RCPTS, 1, NULL, 0, NULL), MX2_E_INVAL);
    assert_int_equal(bounce_compose(&good, RCPTS, 1, NULL, 5, &out), MX2_E_INVAL);
    assert_int_equal(bounce_compose(&nosender, RCPTS, 1, NULL, 0, &out), MX2_E_INVAL);
    assert_int_equal(bounce_compose(&nullsender, RCPTS, 1, NULL, 0, &out), MX2_E_INVAL);
    assert_int_equal(bounce_compose(&nohost, RCPTS, 1, NULL, 0, &out), MX2_E_INVAL);
    assert_int_equal(bounce_compose(&badkind, RCPTS, 1, NULL, 0, &out), MX2_E_INVAL);
    assert_int_equal(bounce_compose(&good, noaddr, 2, NULL, 0, &out), MX2_E_INVAL);
    assert_int_equal(out.len, 1); /* untouched on error */
    buf_free(&out);
}

static void
test_status_from_reply(void **state)
{
    static const struct {
        int code;
        const char *ecode, *want;
    } rows[] = {
        {550, "5.1.1", "5.1.1"},
        {550, "5.1.1 user unknown", "5.1.1"},
        {550, "4.1.1", "5.0.0"}, /* class mismatch */
        {450, "4.2.0", "4.2.0"},
        {450, "5.2.0", "4.0.0"},
        {421, NULL, "4.0.0"},
        {554, NULL, "5.0.0"},
        {554, "", "5.0.0"},
        {554, "5.7", "5.0.0"},
        {554, "5.7.1.2", "5.0.0"},
        {554, "5..1", "5.0.0"},
        {554, "55.1.1", "5.0.0"},
        {554, "5.1234.1", "5.0.0"},
        {554, "5.123.456", "5.123.456"},
        {554, "5.1.1x", "5.0.0"},
        {554, "3.1.1", "5.0.0"},
        {250, "2.0.0", "2.0.0"},
        {250, NULL, "2.0.0"},
        {354, NULL, "4.0.0"},
        {0, NULL, "4.0.0"},
        {-1, "5.1.1", "4.0.0"},
        {999, "5.1.1", "4.0.0"},
        {600, NULL, "4.0.0"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char buf[16];
        const char *got = bounce_status_from_reply(rows[i].code, rows[i].ecode, buf, sizeof(buf));
        assert_ptr_equal(got, buf);
        if (strcmp(got, rows[i].want) != 0)
            fail_msg("row %zu (%d %s): got %s want %s", i, rows[i].code,
                     rows[i].ecode ? rows[i].ecode : "NULL", got, rows[i].want);
    }
    char tiny[4];
    bounce_status_from_reply(550, "5.1.1", tiny, sizeof(tiny));
    assert_string_equal(tiny, "5.1"); /* truncated, still terminated */
}

static void
test_notify_wanted(void **state)
{
    static const struct {
        unsigned notify;
        enum bounce_kind kind;
        int want;
    } rows[] = {
        {0, BOUNCE_FAILED, 1},
        {0, BOUNCE_DELAYED, 1},
        {0, BOUNCE_DELIVERED, 0},
        {ENVELOPE_NOTIFY_NEVER, BOUNCE_FAILED, 0},
        {ENVELOPE_NOTIFY_NEVER, BOUNCE_DELAYED, 0},
        {ENVELOPE_NOTIFY_NEVER, BOUNCE_DELIVERED, 0},
        {ENVELOPE_NOTIFY_SUCCESS, BOUNCE_FAILED, 0},
        {ENVELOPE_NOTIFY_SUCCESS, BOUNCE_DELIVERED, 1},
        {ENVELOPE_NOTIFY_FAILURE, BOUNCE_FAILED, 1},
        {ENVELOPE_NOTIFY_FAILURE, BOUNCE_DELAYED, 0},
        {ENVELOPE_NOTIFY_DELAY, BOUNCE_DELAYED, 1},
        {ENVELOPE_NOTIFY_DELAY, BOUNCE_FAILED, 0},
        {ENVELOPE_NOTIFY_FAILURE | ENVELOPE_NOTIFY_DELAY, BOUNCE_FAILED, 1},
        {ENVELOPE_NOTIFY_FAILURE | ENVELOPE_NOTIFY_DELAY, BOUNCE_DELAYED, 1},
        {ENVELOPE_NOTIFY_SUCCESS | ENVELOPE_NOTIFY_FAILURE, BOUNCE_DELIVERED, 1},
        {0, BOUNCE_RELAYED, 0},
        {ENVELOPE_NOTIFY_SUCCESS, BOUNCE_RELAYED, 1},
        {ENVELOPE_NOTIFY_NEVER, BOUNCE_RELAYED, 0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        if (bounce_notify_wanted(rows[i].notify, rows[i].kind) != rows[i].want)
            fail_msg("row %zu", i);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failed_two_rcpts_headers_only),
        cmocka_unit_test(test_ret_full_and_limit),
        cmocka_unit_test(test_delayed_and_envid),
        cmocka_unit_test(test_status_defaults),
        cmocka_unit_test(test_wire_form_under_stress),
        cmocka_unit_test(test_boundary_avoids_content),
        cmocka_unit_test(test_appends_and_no_original),
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test(test_status_from_reply),
        cmocka_unit_test(test_notify_wanted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
