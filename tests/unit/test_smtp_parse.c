/*
 * test_smtp_parse.c - command lines (verbs, MAIL/RCPT paths, every ESMTP
 * parameter good and bad), reply lines and the multi-line accumulator,
 * EHLO keywords, xtext.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "err.h"
#include "smtp_parse.h"

struct cmd_row {
    const char *line;
    unsigned flags;
    int rc;
    enum smtp_verb verb;
    const char *arg; /* expected arg (NULL: none / don't care for MAIL/RCPT) */
};

static const struct cmd_row cmd_rows[] = {
    {"EHLO client.example", 0, 0, SMTP_V_EHLO, "client.example"},
    {"ehlo client.example", 0, 0, SMTP_V_EHLO, "client.example"},
    {"EhLo [198.51.100.7]  ", 0, 0, SMTP_V_EHLO, "[198.51.100.7]"},
    {"HELO x", 0, 0, SMTP_V_HELO, "x"},
    {"EHLO", 0, MX2_E_INVAL, SMTP_V_EHLO, NULL},
    {"EHLO ", 0, MX2_E_INVAL, SMTP_V_EHLO, NULL},
    {"HELO", 0, MX2_E_INVAL, SMTP_V_HELO, NULL},
    {"EHLO caf\xc3\xa9", 0, MX2_E_INVAL, SMTP_V_EHLO, NULL},
    {"EHLO a\x01" "b", 0, MX2_E_INVAL, SMTP_V_EHLO, NULL},
    {"DATA", 0, 0, SMTP_V_DATA, NULL},
    {"data ", 0, 0, SMTP_V_DATA, NULL},
    {"DATA x", 0, MX2_E_INVAL, SMTP_V_DATA, NULL},
    {"RSET", 0, 0, SMTP_V_RSET, NULL},
    {"RSET now", 0, MX2_E_INVAL, SMTP_V_RSET, NULL},
    {"QUIT", 0, 0, SMTP_V_QUIT, NULL},
    {"QUIT please", 0, MX2_E_INVAL, SMTP_V_QUIT, NULL},
    {"NOOP", 0, 0, SMTP_V_NOOP, NULL},
    {"NOOP anything at all", 0, 0, SMTP_V_NOOP, "anything at all"},
    {"STARTTLS", 0, 0, SMTP_V_STARTTLS, NULL},
    {"STARTTLS x", 0, MX2_E_INVAL, SMTP_V_STARTTLS, NULL},
    {"VRFY postmaster", 0, 0, SMTP_V_VRFY, "postmaster"},
    {"VRFY", 0, MX2_E_INVAL, SMTP_V_VRFY, NULL},
    {"EXPN list", 0, 0, SMTP_V_EXPN, "list"},
    {"HELP", 0, 0, SMTP_V_HELP, NULL},
    {"HELP MAIL", 0, 0, SMTP_V_HELP, "MAIL"},
    {"ETRN example.jp", 0, 0, SMTP_V_ETRN, "example.jp"},
    {"ETRN", 0, MX2_E_INVAL, SMTP_V_ETRN, NULL},
    {"BDAT 100 LAST", 0, 0, SMTP_V_BDAT, "100 LAST"},
    {"AUTH PLAIN dGVzdA==", 0, 0, SMTP_V_AUTH, "PLAIN dGVzdA=="},
    {"", 0, MX2_E_SYNTAX, SMTP_V_UNKNOWN, NULL},
    {"   ", 0, MX2_E_SYNTAX, SMTP_V_UNKNOWN, NULL},
    {"FOO bar", 0, MX2_E_SYNTAX, SMTP_V_UNKNOWN, NULL},
    {"MAILFROM:<a@b.c>", 0, MX2_E_SYNTAX, SMTP_V_UNKNOWN, NULL},
    {"EHLOx", 0, MX2_E_SYNTAX, SMTP_V_UNKNOWN, NULL},
    {"EHLO\tx", 0, MX2_E_SYNTAX, SMTP_V_UNKNOWN, NULL},
    {"GET / HTTP/1.1", 0, MX2_E_SYNTAX, SMTP_V_UNKNOWN, NULL},
    {"\xff\xfe", 0, MX2_E_SYNTAX, SMTP_V_UNKNOWN, NULL},

    {"MAIL FROM:<a@example.com>", 0, 0, SMTP_V_MAIL, NULL},
    {"mail from:<a@example.com>", 0, 0, SMTP_V_MAIL, NULL},
    {"MAIL FROM: <a@example.com>", 0, 0, SMTP_V_MAIL, NULL},
    {"MAIL FROM:  <a@example.com>  ", 0, 0, SMTP_V_MAIL, NULL},
    {"MAIL FROM:<>", 0, 0, SMTP_V_MAIL, NULL},
    {"MAIL  FROM:<a@example.com>", 0, MX2_E_INVAL, SMTP_V_MAIL, NULL},
    {"MAIL FROM :<a@example.com>", 0, MX2_E_INVAL, SMTP_V_MAIL, NULL},
    {"MAIL TO:<a@example.com>", 0, MX2_E_INVAL, SMTP_V_MAIL, NULL},
    {"MAIL", 0, MX2_E_INVAL, SMTP_V_MAIL, NULL},
    {"MAIL FROM:", 0, MX2_E_INVAL, SMTP_V_MAIL, NULL},
    {"MAIL FROM:a@example.com", 0, MX2_E_BAD_SENDER, SMTP_V_MAIL, NULL},
    {"MAIL FROM:<a@example.com", 0, MX2_E_BAD_SENDER, SMTP_V_MAIL, NULL},
    {"MAIL FROM:<a@@example.com>", 0, MX2_E_BAD_SENDER, SMTP_V_MAIL, NULL},
    {"MAIL FROM:<a@example.com>SIZE=1", 0, MX2_E_BAD_SENDER, SMTP_V_MAIL, NULL},
    {"MAIL FROM:<caf\xc3\xa9@example.com>", 0, MX2_E_BAD_SENDER, SMTP_V_MAIL, NULL},
    {"MAIL FROM:<caf\xc3\xa9@example.com> SMTPUTF8", 0, 0, SMTP_V_MAIL, NULL},
    {"MAIL FROM:<a@example.com> FOO=bar", 0, MX2_E_BAD_PARAM, SMTP_V_MAIL, NULL},
    {"MAIL FROM:<a@example.com> NOTIFY=NEVER", 0, MX2_E_BAD_PARAM, SMTP_V_MAIL, NULL},
    {"MAIL FROM:<bad> FOO=bar", 0, MX2_E_BAD_SENDER, SMTP_V_MAIL, NULL},

    {"RCPT TO:<u@example.jp>", 0, 0, SMTP_V_RCPT, NULL},
    {"rcpt to: <u@example.jp>", 0, 0, SMTP_V_RCPT, NULL},
    {"RCPT TO:<>", 0, MX2_E_BAD_ADDRESS, SMTP_V_RCPT, NULL},
    {"RCPT TO:<u@evil.com@example.jp>", 0, MX2_E_BAD_ADDRESS, SMTP_V_RCPT, NULL},
    {"RCPT TO:u@example.jp", 0, MX2_E_BAD_ADDRESS, SMTP_V_RCPT, NULL},
    {"RCPT TO:<u>", 0, MX2_E_BAD_ADDRESS, SMTP_V_RCPT, NULL},
    {"RCPT FROM:<u@example.jp>", 0, MX2_E_INVAL, SMTP_V_RCPT, NULL},
    {"RCPT TO:<\xc3\xa9@example.jp>", 0, MX2_E_BAD_ADDRESS, SMTP_V_RCPT, NULL},
    {"RCPT TO:<\xc3\xa9@example.jp>", SMTP_PARSE_UTF8, 0, SMTP_V_RCPT, NULL},
    {"RCPT TO:<u@example.jp> SIZE=10", 0, MX2_E_BAD_PARAM, SMTP_V_RCPT, NULL},
    {"RCPT TO:<u@example.jp> XYZ", 0, MX2_E_BAD_PARAM, SMTP_V_RCPT, NULL},
};

static void
test_commands(void **state)
{
    for (size_t i = 0; i < sizeof(cmd_rows) / sizeof(cmd_rows[0]); i++) {
        const struct cmd_row *r = &cmd_rows[i];
        struct smtp_cmd c;
        int rc = smtp_parse_command(r->line, strlen(r->line), r->flags, &c);
        if (rc != r->rc || c.verb != r->verb)
            fail_msg("row %zu '%s': rc %d verb %d, want %d %d", i, r->line, rc, c.verb, r->rc,
                     r->verb);
        if (rc == 0 && r->arg != NULL) {
            if (c.arg_len != strlen(r->arg) || memcmp(c.arg, r->arg, c.arg_len) != 0)
                fail_msg("row %zu '%s': arg '%.*s'", i, r->line, (int)c.arg_len, c.arg);
        }
        if (rc == 0 && r->arg == NULL && r->verb != SMTP_V_MAIL && r->verb != SMTP_V_RCPT)
            assert_int_equal(c.arg_len, 0);
    }
}

static void
test_nul_in_line(void **state)
{
    struct smtp_cmd c;
    const char line[] = "MAIL FROM:<a@b.c>\0 SIZE=1";

    assert_int_equal(smtp_parse_command(line, sizeof(line) - 1, 0, &c), MX2_E_SYNTAX);
    /* len is honoured: the same buffer up to the NUL is fine. */
    assert_int_equal(smtp_parse_command(line, 17, 0, &c), 0);
    assert_string_equal(c.path.domain, "b.c");
}

/* The map from parser errors to replies: exact codes SPEC/issue name. */
static void
test_error_replies(void **state)
{
    static const struct {
        int err, code;
        const char *ecode;
    } rows[] = {
        {MX2_E_INVAL, 501, "5.5.4"},     {MX2_E_BAD_SENDER, 501, "5.1.7"},
        {MX2_E_BAD_ADDRESS, 501, "5.1.3"}, {MX2_E_BAD_PARAM, 555, "5.5.4"},
        {MX2_E_SYNTAX, 500, "5.5.2"},    {MX2_E_NOT_IMPLEMENTED, 502, "5.5.1"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const char *ec;
        assert_int_equal(mx2_err_smtp(rows[i].err, &ec, NULL), rows[i].code);
        assert_string_equal(ec, rows[i].ecode);
    }
}

static void
test_mail_params_good(void **state)
{
    struct smtp_cmd c;
    const char *l = "MAIL FROM:<a@example.com> SIZE=12345 BODY=8BITMIME RET=HDRS "
                    "ENVID=QQ+2BABC+3Dx AUTH=<>";

    assert_int_equal(smtp_parse_command(l, strlen(l), 0, &c), 0);
    assert_true(c.has_size);
    assert_int_equal(c.size, 12345);
    assert_int_equal(c.body, SMTP_BODY_8BITMIME);
    assert_int_equal(c.ret, SMTP_RET_HDRS);
    assert_true(c.has_envid);
    assert_string_equal(c.envid, "QQ+ABC=x");
    assert_int_equal(c.envid_len, 8);
    assert_true(c.has_auth);
    assert_false(c.smtputf8);
    assert_string_equal(c.path.local, "a");

    l = "MAIL FROM:<> size=0 body=7bit ret=full smtputf8   auth=user+40example.com";
    assert_int_equal(smtp_parse_command(l, strlen(l), 0, &c), 0);
    assert_true(c.path.flags & ADDR_F_NULL);
    assert_true(c.has_size);
    assert_int_equal(c.size, 0);
    assert_int_equal(c.body, SMTP_BODY_7BIT);
    assert_int_equal(c.ret, SMTP_RET_FULL);
    assert_true(c.smtputf8);
    assert_false(c.has_envid);

    l = "MAIL FROM:<a@example.com> SIZE=18446744073709551615";
    assert_int_equal(smtp_parse_command(l, strlen(l), 0, &c), 0);
    assert_int_equal(c.size, UINT64_MAX);

    l = "MAIL FROM:<a@example.com>";
    assert_int_equal(smtp_parse_command(l, strlen(l), 0, &c), 0);
    assert_false(c.has_size);
    assert_int_equal(c.body, SMTP_BODY_NONE);
    assert_int_equal(c.ret, SMTP_RET_NONE);
}

static void
test_mail_params_bad(void **state)
{
    static const struct {
        const char *params;
        int rc;
    } rows[] = {
        {"SIZE=", MX2_E_INVAL},
        {"SIZE", MX2_E_INVAL},
        {"SIZE=abc", MX2_E_INVAL},
        {"SIZE=-1", MX2_E_INVAL},
        {"SIZE=1e6", MX2_E_INVAL},
        {"SIZE=18446744073709551616", MX2_E_INVAL},
        {"SIZE=100000000000000000000000", MX2_E_INVAL},
        {"SIZE=1 SIZE=2", MX2_E_INVAL},
        {"BODY=BINARYMIME", MX2_E_INVAL},
        {"BODY=8BIT", MX2_E_INVAL},
        {"BODY=", MX2_E_INVAL},
        {"BODY=7BIT BODY=7BIT", MX2_E_INVAL},
        {"SMTPUTF8=yes", MX2_E_INVAL},
        {"SMTPUTF8 SMTPUTF8", MX2_E_INVAL},
        {"RET=ALL", MX2_E_INVAL},
        {"RET", MX2_E_INVAL},
        {"RET=FULL RET=HDRS", MX2_E_INVAL},
        {"ENVID=", MX2_E_INVAL},
        {"ENVID=a+2", MX2_E_INVAL},
        {"ENVID=a+ZZ", MX2_E_INVAL},
        {"ENVID=a+00b", MX2_E_INVAL},      /* decodes to NUL */
        {"ENVID=a+0Db", MX2_E_INVAL},      /* decodes to CR */
        {"ENVID=a+C3+A9", MX2_E_INVAL},    /* 8-bit */
        {"ENVID=x ENVID=y", MX2_E_INVAL},
        {"ENVID=" "0123456789012345678901234567890123456789012345678901234567890123456789"
         "01234567890123456789012345678901", MX2_E_INVAL}, /* 101 */
        {"AUTH=", MX2_E_INVAL},
        {"AUTH=a+Q", MX2_E_INVAL},
        {"FOO", MX2_E_BAD_PARAM},
        {"X-FOO=1", MX2_E_BAD_PARAM},
        {"NOTIFY=NEVER", MX2_E_BAD_PARAM},
        {"ORCPT=rfc822;a@b", MX2_E_BAD_PARAM},
        {"=x", MX2_E_INVAL},
        {"-X=1", MX2_E_INVAL},
        {"SIZE=1=2", MX2_E_INVAL},
        {"SIZE=1\x01", MX2_E_INVAL},
        {"SIZE=\xc3\xa9", MX2_E_INVAL},
        {"SIZE=1 FOO", MX2_E_BAD_PARAM},
        {"FOO SIZE=x", MX2_E_BAD_PARAM}, /* the first error wins */
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char line[512];
        struct smtp_cmd c;
        int rc;
        snprintf(line, sizeof(line), "MAIL FROM:<a@example.com> %s", rows[i].params);
        rc = smtp_parse_command(line, strlen(line), 0, &c);
        if (rc != rows[i].rc)
            fail_msg("'%s': rc %d want %d", line, rc, rows[i].rc);
        assert_int_equal(c.verb, SMTP_V_MAIL);
    }
    /* ENVID of exactly 100 characters is fine. */
    {
        char line[512];
        struct smtp_cmd c;
        char v[101];
        memset(v, 'e', 100);
        v[100] = '\0';
        snprintf(line, sizeof(line), "MAIL FROM:<a@example.com> ENVID=%s", v);
        assert_int_equal(smtp_parse_command(line, strlen(line), 0, &c), 0);
        assert_int_equal(c.envid_len, 100);
    }
}

static void
test_rcpt_params(void **state)
{
    static const struct {
        const char *params;
        int rc;
        unsigned notify;
        const char *orcpt;
    } rows[] = {
        {"", 0, 0, NULL},
        {"NOTIFY=NEVER", 0, SMTP_NOTIFY_NEVER, NULL},
        {"NOTIFY=SUCCESS", 0, SMTP_NOTIFY_SUCCESS, NULL},
        {"notify=failure,delay", 0, SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY, NULL},
        {"NOTIFY=SUCCESS,FAILURE,DELAY", 0,
         SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY, NULL},
        {"ORCPT=rfc822;u@example.jp", 0, 0, "u@example.jp"},
        {"ORCPT=RFC822;u+2Bt@example.jp NOTIFY=DELAY", 0, SMTP_NOTIFY_DELAY, "u+t@example.jp"},
        {"NOTIFY=NEVER,SUCCESS", MX2_E_INVAL, 0, NULL},
        {"NOTIFY=SUCCESS,NEVER", MX2_E_INVAL, 0, NULL},
        {"NOTIFY=SUCCESS,SUCCESS", MX2_E_INVAL, 0, NULL},
        {"NOTIFY=", MX2_E_INVAL, 0, NULL},
        {"NOTIFY=SUCCESS,", MX2_E_INVAL, 0, NULL},
        {"NOTIFY=,SUCCESS", MX2_E_INVAL, 0, NULL},
        {"NOTIFY=ALWAYS", MX2_E_INVAL, 0, NULL},
        {"NOTIFY", MX2_E_INVAL, 0, NULL},
        {"NOTIFY=DELAY NOTIFY=DELAY", MX2_E_INVAL, 0, NULL},
        {"ORCPT=u@example.jp", MX2_E_INVAL, 0, NULL},
        {"ORCPT=x400;u", MX2_E_INVAL, 0, NULL},
        {"ORCPT=rfc822;", MX2_E_INVAL, 0, NULL},
        {"ORCPT=rfc822;a+0Ab", MX2_E_INVAL, 0, NULL},
        {"ORCPT=rfc822;a ORCPT=rfc822;b", MX2_E_INVAL, 0, NULL},
        {"SIZE=1", MX2_E_BAD_PARAM, 0, NULL},
        {"BODY=8BITMIME", MX2_E_BAD_PARAM, 0, NULL},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char line[700];
        struct smtp_cmd c;
        int rc;
        snprintf(line, sizeof(line), "RCPT TO:<u@example.jp>%s%s", rows[i].params[0] ? " " : "",
                 rows[i].params);
        rc = smtp_parse_command(line, strlen(line), 0, &c);
        if (rc != rows[i].rc)
            fail_msg("'%s': rc %d want %d", line, rc, rows[i].rc);
        if (rc != 0)
            continue;
        assert_int_equal(c.notify, rows[i].notify);
        assert_int_equal(c.has_orcpt, rows[i].orcpt != NULL);
        if (rows[i].orcpt != NULL)
            assert_string_equal(c.orcpt, rows[i].orcpt);
        assert_string_equal(c.path.local, "u");
    }
    /* ORCPT limit: 500 characters with the type. */
    {
        char line[700], v[600];
        struct smtp_cmd c;
        memset(v, 'o', sizeof(v));
        v[500 - 7] = '\0'; /* "rfc822;" + 493 = 500 */
        snprintf(line, sizeof(line), "RCPT TO:<u@example.jp> ORCPT=rfc822;%s", v);
        assert_int_equal(smtp_parse_command(line, strlen(line), 0, &c), 0);
        assert_int_equal(c.orcpt_len, 493);
        v[501 - 7] = '\0';
        memset(v, 'o', 494);
        snprintf(line, sizeof(line), "RCPT TO:<u@example.jp> ORCPT=rfc822;%s", v);
        assert_int_equal(smtp_parse_command(line, strlen(line), 0, &c), MX2_E_INVAL);
    }
}

/* The path of MAIL/RCPT goes through addr_parse_path: tricks parse, and
 * the relay gate sees them. */
static void
test_rcpt_path_tricks(void **state)
{
    char *domains[] = {"example.jp"};
    static const struct {
        const char *line;
        int relay;
    } rows[] = {
        {"RCPT TO:<user@example.jp>", 0},
        {"RCPT TO:<USER@EXAMPLE.JP.>", 0},
        {"RCPT TO:<user%evil.com@example.jp>", MX2_E_RELAY_DENIED},
        {"RCPT TO:<evil.com!user@example.jp>", MX2_E_RELAY_DENIED},
        {"RCPT TO:<\"user@evil.com\"@example.jp>", MX2_E_RELAY_DENIED},
        {"RCPT TO:<\"user>x\"@example.jp> NOTIFY=NEVER", 0},
        {"RCPT TO:<@example.jp:user@evil.com>", MX2_E_RELAY_DENIED},
        {"RCPT TO:<user@[198.51.100.1]>", MX2_E_RELAY_DENIED},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct smtp_cmd c;
        assert_int_equal(smtp_parse_command(rows[i].line, strlen(rows[i].line), 0, &c), 0);
        if (addr_relay_check(&c.path, domains, 1) != rows[i].relay)
            fail_msg("%s: relay verdict wrong", rows[i].line);
    }
}

static void
test_verb_names(void **state)
{
    assert_string_equal(smtp_verb_name(SMTP_V_MAIL), "MAIL");
    assert_string_equal(smtp_verb_name(SMTP_V_STARTTLS), "STARTTLS");
    assert_string_equal(smtp_verb_name(SMTP_V_UNKNOWN), "UNKNOWN");
    assert_string_equal(smtp_verb_name(SMTP_V_COUNT_), "UNKNOWN");
    for (int v = 0; v < SMTP_V_COUNT_; v++)
        assert_non_null(smtp_verb_name((enum smtp_verb)v));
}

/* --- xtext --- */

static void
test_xtext(void **state)
{
    static const struct {
        const char *enc;
        const char *dec;
    } good[] = {
        {"", ""},
        {"abc", "abc"},
        {"a+2Bb", "a+b"},
        {"a+3Db", "a=b"},
        {"+20", " "},
        {"a+2bb", "a+b"}, /* lower-case hex tolerated */
        {"!~<>@", "!~<>@"},
    };
    static const char *const bad[] = {
        "a b", "a=b", "+", "+2", "+G0", "+00", "+7F", "+80", "+FF", "a\x01", "\xc3\xa9", "+0A",
    };
    char out[64];
    size_t n;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(smtp_xtext_decode(good[i].enc, strlen(good[i].enc), out, sizeof(out), &n),
                         0);
        assert_string_equal(out, good[i].dec);
        assert_int_equal(n, strlen(good[i].dec));
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (smtp_xtext_decode(bad[i], strlen(bad[i]), out, sizeof(out), &n) != MX2_E_INVAL)
            fail_msg("xtext '%s' should be refused", bad[i]);
        assert_string_equal(out, "");
    }
    /* Output too small. */
    assert_int_equal(smtp_xtext_decode("abcd", 4, out, 4, &n), MX2_E_INVAL);
    assert_int_equal(smtp_xtext_decode("abc", 3, out, 4, &n), 0);
    assert_int_equal(smtp_xtext_decode("abc", 3, out, 0, &n), MX2_E_INVAL);

    assert_int_equal(smtp_xtext_encode("a+b=c d", 7, out, sizeof(out), &n), 0);
    assert_string_equal(out, "a+2Bb+3Dc+20d");
    assert_int_equal(smtp_xtext_encode("\x01\xff", 2, out, sizeof(out), &n), 0);
    assert_string_equal(out, "+01+FF");
    assert_int_equal(smtp_xtext_encode("++", 2, out, 6, &n), MX2_E_INVAL);
    assert_string_equal(out, "");
    assert_int_equal(smtp_xtext_encode("++", 2, out, 7, &n), 0);
    assert_int_equal(n, 6);
}

/* Every printable string survives encode -> decode unchanged. */
static void
test_xtext_round_trip(void **state)
{
    char in[96], enc[3 * 96 + 1], dec[97];
    size_t n, m;

    for (int i = 0; i < 95; i++)
        in[i] = (char)(0x20 + i);
    for (size_t len = 0; len <= 95; len++) {
        assert_int_equal(smtp_xtext_encode(in + 95 - len, len, enc, sizeof(enc), &n), 0);
        for (size_t k = 0; k < n; k++)
            assert_true(enc[k] > ' ' && enc[k] <= '~' && enc[k] != '=');
        assert_int_equal(smtp_xtext_decode(enc, n, dec, sizeof(dec), &m), 0);
        assert_int_equal(m, len);
        assert_memory_equal(dec, in + 95 - len, len);
    }
}

/* --- replies --- */

static void
test_reply_lines(void **state)
{
    static const struct {
        const char *line;
        int rc, code, last;
        const char *ecode, *text;
    } rows[] = {
        {"250 2.0.0 Ok: queued as 12345", 0, 250, 1, "2.0.0", "Ok: queued as 12345"},
        {"250-mx.example.jp", 0, 250, 0, NULL, "mx.example.jp"},
        {"250-PIPELINING", 0, 250, 0, NULL, "PIPELINING"},
        {"250 8BITMIME", 0, 250, 1, NULL, "8BITMIME"},
        {"250", 0, 250, 1, NULL, ""},
        {"250 ", 0, 250, 1, NULL, ""},
        {"550 5.1.1 <u@x>: Recipient address rejected", 0, 550, 1, "5.1.1",
         "<u@x>: Recipient address rejected"},
        {"451 4.3.0", 0, 451, 1, "4.3.0", ""},
        {"421-4.7.0 too many", 0, 421, 0, "4.7.0", "too many"},
        {"550 4.1.1 mismatched class", 0, 550, 1, NULL, "4.1.1 mismatched class"},
        {"550 5.1.1000 too long", 0, 550, 1, NULL, "5.1.1000 too long"},
        {"550 5.1.1x", 0, 550, 1, NULL, "5.1.1x"},
        {"354 End data with <CR><LF>.<CR><LF>", 0, 354, 1, NULL,
         "End data with <CR><LF>.<CR><LF>"},
        {"220 mx ESMTP", 0, 220, 1, NULL, "mx ESMTP"},
        {"25", MX2_E_PROTOCOL, 0, 0, NULL, NULL},
        {"", MX2_E_PROTOCOL, 0, 0, NULL, NULL},
        {"abc def", MX2_E_PROTOCOL, 0, 0, NULL, NULL},
        {"150 x", MX2_E_PROTOCOL, 0, 0, NULL, NULL},
        {"650 x", MX2_E_PROTOCOL, 0, 0, NULL, NULL},
        {"2500 x", MX2_E_PROTOCOL, 0, 0, NULL, NULL},
        {"250_x", MX2_E_PROTOCOL, 0, 0, NULL, NULL},
        {"25a x", MX2_E_PROTOCOL, 0, 0, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct smtp_reply_line l;
        int rc = smtp_parse_reply_line(rows[i].line, strlen(rows[i].line), &l);
        if (rc != rows[i].rc)
            fail_msg("'%s': rc %d", rows[i].line, rc);
        if (rc != 0)
            continue;
        assert_int_equal(l.code, rows[i].code);
        assert_int_equal(l.is_last, rows[i].last);
        assert_int_equal(l.has_ecode, rows[i].ecode != NULL);
        if (rows[i].ecode)
            assert_string_equal(l.ecode, rows[i].ecode);
        if (l.text_len != strlen(rows[i].text) || memcmp(l.text, rows[i].text, l.text_len) != 0)
            fail_msg("'%s': text '%.*s'", rows[i].line, (int)l.text_len, l.text);
    }
    {
        struct smtp_reply_line l;
        assert_int_equal(smtp_parse_reply_line("250 a\0b", 7, &l), MX2_E_PROTOCOL);
    }
}

static void
test_reply_accumulator(void **state)
{
    static const char *const ehlo[] = {
        "250-mx.example.jp Hello",   "250-PIPELINING",        "250-SIZE 10240000",
        "250-ETRN",                  "250-STARTTLS",          "250-AUTH PLAIN LOGIN XOAUTH2",
        "250-ENHANCEDSTATUSCODES",   "250-8BITMIME",          "250-DSN",
        "250-SMTPUTF8",              "250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT",
        "250 CHUNKING",
    };
    struct smtp_reply r;
    struct smtp_ehlo e;
    int rc = 0;

    smtp_reply_init(&r);
    for (size_t i = 0; i < sizeof(ehlo) / sizeof(ehlo[0]); i++) {
        rc = smtp_reply_add_line(&r, ehlo[i], strlen(ehlo[i]));
        assert_int_equal(rc, i + 1 == sizeof(ehlo) / sizeof(ehlo[0]) ? 1 : 0);
    }
    assert_true(r.done);
    assert_int_equal(r.code, 250);
    assert_int_equal(r.nlines, 12);
    {
        const char *head = "mx.example.jp Hello\nPIPELINING\nSIZE 10240000\n";
        assert_int_equal(strncmp(r.text, head, strlen(head)), 0);
    }
    assert_int_equal(r.text_len, strlen(r.text));
    assert_int_equal(smtp_reply_add_line(&r, "250 x", 5), MX2_E_INVAL);

    assert_int_equal(smtp_ehlo_parse(&r, &e), 0);
    assert_true(e.pipelining);
    assert_true(e.has_size);
    assert_int_equal(e.size, 10240000);
    assert_true(e.eightbitmime);
    assert_true(e.smtputf8);
    assert_true(e.dsn);
    assert_true(e.starttls);
    assert_true(e.enhancedstatuscodes);
    assert_true(e.chunking);
    assert_int_equal(e.auth, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN | SMTP_AUTH_OTHER);
    assert_int_equal(e.xforward, SMTP_XF_NAME | SMTP_XF_ADDR | SMTP_XF_PROTO | SMTP_XF_HELO |
                                     SMTP_XF_SOURCE | SMTP_XF_PORT | SMTP_XF_IDENT);

    /* A minimal EHLO: the greeting line's words are not keywords. */
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_add_line(&r, "250 PIPELINING", 14), 1);
    assert_int_equal(smtp_ehlo_parse(&r, &e), 0);
    assert_false(e.pipelining);

    /* Lower case, AUTH= form, SIZE without number. */
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_add_line(&r, "250-hi", 6), 0);
    assert_int_equal(smtp_reply_add_line(&r, "250-size", 8), 0);
    assert_int_equal(smtp_reply_add_line(&r, "250-AUTH=CRAM-MD5", 17), 0);
    assert_int_equal(smtp_reply_add_line(&r, "250 starttls", 12), 1);
    assert_int_equal(smtp_ehlo_parse(&r, &e), 0);
    assert_true(e.has_size);
    assert_int_equal(e.size, 0);
    assert_int_equal(e.auth, SMTP_AUTH_CRAM_MD5);
    assert_true(e.starttls);
    assert_false(e.dsn);
    assert_int_equal(e.xforward, 0);

    /* Not a 2xx or not complete: refused. */
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_add_line(&r, "250-hi", 6), 0);
    assert_int_equal(smtp_ehlo_parse(&r, &e), MX2_E_PROTOCOL);
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_add_line(&r, "502 5.5.1 no", 12), 1);
    assert_int_equal(smtp_ehlo_parse(&r, &e), MX2_E_PROTOCOL);
    assert_true(r.has_ecode);
    assert_string_equal(r.ecode, "5.5.1");
}

static void
test_reply_malformed(void **state)
{
    struct smtp_reply r;
    char line[SMTP_REPLY_TEXT_MAX + 16];

    /* Codes change mid-reply: out of step. */
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_add_line(&r, "250-a", 5), 0);
    assert_int_equal(smtp_reply_add_line(&r, "251 b", 5), MX2_E_PROTOCOL);
    /* Poisoned until re-init. */
    assert_int_equal(smtp_reply_add_line(&r, "250 b", 5), MX2_E_PROTOCOL);
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_add_line(&r, "250 b", 5), 1);

    /* Garbage line. */
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_add_line(&r, "250-a", 5), 0);
    assert_int_equal(smtp_reply_add_line(&r, "hello", 5), MX2_E_PROTOCOL);

    /* Too many lines. */
    smtp_reply_init(&r);
    for (int i = 0; i < SMTP_REPLY_MAX_LINES; i++)
        assert_int_equal(smtp_reply_add_line(&r, "250-x", 5), 0);
    assert_int_equal(smtp_reply_add_line(&r, "250 x", 5), MX2_E_PROTOCOL);
    /* Exactly the maximum is fine. */
    smtp_reply_init(&r);
    for (int i = 0; i < SMTP_REPLY_MAX_LINES - 1; i++)
        assert_int_equal(smtp_reply_add_line(&r, "250-x", 5), 0);
    assert_int_equal(smtp_reply_add_line(&r, "250 x", 5), 1);

    /* Too much text: one line just under, one over. */
    memcpy(line, "250 ", 4);
    memset(line + 4, 't', SMTP_REPLY_TEXT_MAX);
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_add_line(&r, line, 4 + SMTP_REPLY_TEXT_MAX), 1);
    assert_int_equal(r.text_len, SMTP_REPLY_TEXT_MAX);
    line[3] = '-';
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_add_line(&r, line, 4 + SMTP_REPLY_TEXT_MAX), 0);
    assert_int_equal(smtp_reply_add_line(&r, "250 ", 4), MX2_E_PROTOCOL); /* + '\n' */
    {
        char big[SMTP_REPLY_TEXT_MAX + 8];
        memcpy(big, "250 ", 4);
        memset(big + 4, 'u', SMTP_REPLY_TEXT_MAX + 1);
        smtp_reply_init(&r);
        assert_int_equal(smtp_reply_add_line(&r, big, 4 + SMTP_REPLY_TEXT_MAX + 1),
                         MX2_E_PROTOCOL);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commands),
        cmocka_unit_test(test_nul_in_line),
        cmocka_unit_test(test_error_replies),
        cmocka_unit_test(test_mail_params_good),
        cmocka_unit_test(test_mail_params_bad),
        cmocka_unit_test(test_rcpt_params),
        cmocka_unit_test(test_rcpt_path_tricks),
        cmocka_unit_test(test_verb_names),
        cmocka_unit_test(test_xtext),
        cmocka_unit_test(test_xtext_round_trip),
        cmocka_unit_test(test_reply_lines),
        cmocka_unit_test(test_reply_accumulator),
        cmocka_unit_test(test_reply_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
