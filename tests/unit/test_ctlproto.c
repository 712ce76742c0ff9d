/*
 * test_ctlproto.c - the control-socket line protocol: request parsing
 * (good and hostile lines), request formatting round trips, response lines
 * both ways, line framing, the ID check against queue/qid.h's qid_valid, and
 * the etrn_clients address match.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctlproto.h"
#include "err.h"
#include "qid.h"

#define ID1 "1J11ENHF37I00"
#define ID2 "1J11ENHFEGU00"

static void
test_parse_good(void **state)
{
    static const struct {
        const char *line;
        enum ctlproto_cmd cmd;
        unsigned flags;
        size_t nids;
        const char *id0;
    } cases[] = {
        {"PING", CTLPROTO_PING, 0, 0, NULL},
        {"ping\r", CTLPROTO_PING, 0, 0, NULL},
        {"FLUSH", CTLPROTO_FLUSH, 0, 0, NULL},
        {"flush wait", CTLPROTO_FLUSH, CTLPROTO_F_WAIT, 0, NULL},
        {"  FLUSH \t WAIT  ", CTLPROTO_FLUSH, CTLPROTO_F_WAIT, 0, NULL},
        {"STATS", CTLPROTO_STATS, 0, 0, NULL},
        {"DELETE ALL", CTLPROTO_DELETE, CTLPROTO_F_ALL, 0, NULL},
        {"delete all", CTLPROTO_DELETE, CTLPROTO_F_ALL, 0, NULL},
        {"DELETE " ID1, CTLPROTO_DELETE, 0, 1, ID1},
        {"DELETE " ID1 " " ID2, CTLPROTO_DELETE, 0, 2, ID1},
        {"HOLD 1j11enhf37i00", CTLPROTO_HOLD, 0, 1, ID1},
        {"RELEASE " ID2 "\t" ID1, CTLPROTO_RELEASE, 0, 2, ID2},
    };
    struct ctlproto_req *req = malloc(sizeof(*req));

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *why = "unset";
        int rc = ctlproto_parse_request(cases[i].line, strlen(cases[i].line), req, &why);
        if (rc != 0)
            fail_msg("case %zu '%s': rc %d (%s)", i, cases[i].line, rc, why);
        assert_int_equal(req->cmd, cases[i].cmd);
        assert_int_equal(req->flags, cases[i].flags);
        assert_int_equal(req->nids, cases[i].nids);
        if (cases[i].id0)
            assert_string_equal(req->ids[0], cases[i].id0);
    }
    free(req);
}

static void
test_parse_bad(void **state)
{
    static const struct {
        const char *line;
        size_t len; /* 0: strlen */
        int rc;
    } cases[] = {
        {"", 0, MX2_E_SYNTAX},
        {"   ", 0, MX2_E_SYNTAX},
        {"FLUSHX", 0, MX2_E_SYNTAX},
        {"ETRN example.jp", 0, MX2_E_SYNTAX},
        {"FLUSH NOW", 0, MX2_E_SYNTAX},
        {"FLUSH WAIT WAIT", 0, MX2_E_SYNTAX},
        {"STATS x", 0, MX2_E_SYNTAX},
        {"PING\x01", 0, MX2_E_SYNTAX},
        {"PING\xff", 0, MX2_E_SYNTAX},
        {"DELETE " ID1 "\0 " ID2, 7 + 13 + 2 + 13, MX2_E_SYNTAX},
        {"DELETE\nALL", 0, MX2_E_SYNTAX},
        {"DELETE", 0, MX2_E_INVAL},
        {"HOLD ALL", 0, MX2_E_INVAL},
        {"DELETE ALL " ID1, 0, MX2_E_SYNTAX},
        {"DELETE ALL ALL", 0, MX2_E_SYNTAX},
        {"DELETE " ID1 " ALL", 0, MX2_E_INVAL},
        {"DELETE 1J11ENHF37I0", 0, MX2_E_INVAL},
        {"DELETE 1J11ENHF37I000", 0, MX2_E_INVAL},
        {"DELETE 1J11ENHF37IW0", 0, MX2_E_INVAL}, /* W is outside the alphabet */
        {"DELETE 4J11ENHF37I00", 0, MX2_E_INVAL}, /* above 2^62 */
        {"DELETE ../../etc/pw", 0, MX2_E_INVAL},
    };
    struct ctlproto_req *req = malloc(sizeof(*req));

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].line);
        const char *why = NULL;
        int rc = ctlproto_parse_request(cases[i].line, len, req, &why);
        if (rc != cases[i].rc)
            fail_msg("case %zu '%s': rc %d, want %d", i, cases[i].line, rc, cases[i].rc);
        assert_non_null(why);
    }
    free(req);
}

static void
test_parse_limits(void **state)
{
    struct ctlproto_req *req = malloc(sizeof(*req));
    char *line = malloc(CTLPROTO_LINE_MAX + 16);
    size_t len;
    const char *why;

    /* Exactly CTLPROTO_MAX_IDS IDs fit in a line; one more is refused. */
    len = (size_t)sprintf(line, "DELETE");
    for (int i = 0; i < CTLPROTO_MAX_IDS; i++)
        len += (size_t)sprintf(line + len, " %s", ID1);
    assert_true(len < CTLPROTO_LINE_MAX);
    assert_int_equal(ctlproto_parse_request(line, len, req, &why), 0);
    assert_int_equal(req->nids, CTLPROTO_MAX_IDS);
    len += (size_t)sprintf(line + len, " %s", ID2);
    assert_int_equal(ctlproto_parse_request(line, len, req, &why), MX2_E_INVAL);

    memset(line, 'A', CTLPROTO_LINE_MAX + 8);
    assert_int_equal(ctlproto_parse_request(line, CTLPROTO_LINE_MAX, req, &why),
                     MX2_E_LINE_TOO_LONG);
    free(line);
    free(req);
}

static void
test_id_valid_matches_qid(void **state)
{
    static const char *const ids[] = {
        ID1, "0000000000000", "3VVVVVVVVVVVV", "4000000000000", "1J11ENHF37I0",
        "",  "1J11ENHF37I0a", "1J11ENHF37I0W", "1J11ENHF37I0-", "1J11ENHF37I00X",
    };
    char buf[QID_SIZE];
    struct qid_gen g;

    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        assert_int_equal(ctlproto_id_valid(ids[i], strlen(ids[i])), qid_valid(ids[i]));
    qid_gen_init(&g, 0);
    for (int i = 0; i < 100; i++) {
        qid_next(&g, buf);
        assert_true(ctlproto_id_valid(buf, strlen(buf)));
    }
    assert_int_equal(CTLPROTO_ID_LEN, QID_LEN);
}

static void
test_format_request_roundtrip(void **state)
{
    const char *ids[] = {ID1, ID2};
    const char *bad[] = {"nope"};
    struct ctlproto_req *req = malloc(sizeof(*req));
    char buf[CTLPROTO_LINE_MAX];
    int n;

    n = ctlproto_format_request(CTLPROTO_DELETE, 0, ids, 2, buf, sizeof(buf));
    assert_string_equal(buf, "DELETE " ID1 " " ID2 "\n");
    assert_int_equal(n, (int)strlen(buf));
    assert_int_equal(ctlproto_parse_request(buf, (size_t)n - 1, req, NULL), 0);
    assert_int_equal(req->nids, 2);
    assert_string_equal(req->ids[1], ID2);

    assert_int_equal(
        ctlproto_format_request(CTLPROTO_FLUSH, CTLPROTO_F_WAIT, NULL, 0, buf, sizeof(buf)), 11);
    assert_string_equal(buf, "FLUSH WAIT\n");
    ctlproto_format_request(CTLPROTO_DELETE, CTLPROTO_F_ALL, NULL, 0, buf, sizeof(buf));
    assert_string_equal(buf, "DELETE ALL\n");
    ctlproto_format_request(CTLPROTO_STATS, 0, NULL, 0, buf, sizeof(buf));
    assert_string_equal(buf, "STATS\n");

    assert_int_equal(ctlproto_format_request(CTLPROTO_HOLD, 0, bad, 1, buf, sizeof(buf)),
                     MX2_E_INVAL);
    assert_int_equal(ctlproto_format_request(CTLPROTO_HOLD, 0, NULL, 0, buf, sizeof(buf)),
                     MX2_E_INVAL);
    assert_int_equal(ctlproto_format_request(CTLPROTO_STATS, 0, ids, 1, buf, sizeof(buf)),
                     MX2_E_INVAL);
    assert_int_equal(ctlproto_format_request(CTLPROTO_DELETE, 0, ids, 2, buf, 20),
                     MX2_E_LINE_TOO_LONG);
    assert_int_equal(ctlproto_format_request(CTLPROTO_CMD_COUNT_, 0, NULL, 0, buf, sizeof(buf)),
                     MX2_E_INVAL);
    free(req);
}

static void
test_responses(void **state)
{
    char buf[CTLPROTO_LINE_MAX];
    struct ctlproto_resp r;
    char *longtext = malloc(3 * CTLPROTO_LINE_MAX);
    int n;

    n = ctlproto_format_ok(buf, sizeof(buf), ID1);
    assert_string_equal(buf, "OK " ID1 "\n");
    assert_int_equal(ctlproto_parse_response(buf, (size_t)n - 1, &r), 0);
    assert_int_equal(r.kind, CTLPROTO_R_OK);
    assert_int_equal(r.text_len, 13);
    assert_memory_equal(r.text, ID1, 13);

    ctlproto_format_ok(buf, sizeof(buf), NULL);
    assert_string_equal(buf, "OK\n");
    assert_int_equal(ctlproto_parse_response(buf, 2, &r), 0);
    assert_int_equal(r.text_len, 0);

    /* Text is sanitised: no newline can inject a fake "." end line. */
    n = ctlproto_format_err(buf, sizeof(buf), 404, "x\n.\nOK y");
    assert_string_equal(buf, "ERR 404 x?.?OK y\n");
    assert_int_equal(ctlproto_parse_response(buf, (size_t)n - 1, &r), 0);
    assert_int_equal(r.kind, CTLPROTO_R_ERR);
    assert_int_equal(r.code, 404);
    ctlproto_format_err(buf, sizeof(buf), 7, "bad code");
    assert_string_equal(buf, "ERR 500 bad code\n");

    memset(longtext, 'x', 3 * CTLPROTO_LINE_MAX - 1);
    longtext[3 * CTLPROTO_LINE_MAX - 1] = '\0';
    n = ctlproto_format_err(buf, sizeof(buf), 500, longtext);
    assert_true(n > 0 && n < CTLPROTO_LINE_MAX);
    assert_int_equal(buf[n - 1], '\n');
    assert_int_equal(ctlproto_format_ok(buf, 10, "x"), MX2_E_LINE_TOO_LONG);

    n = ctlproto_format_stat(buf, sizeof(buf), "queue_bytes", UINT64_MAX);
    assert_string_equal(buf, "STAT queue_bytes 18446744073709551615\n");
    assert_int_equal(ctlproto_parse_response(buf, (size_t)n - 1, &r), 0);
    assert_int_equal(r.kind, CTLPROTO_R_STAT);
    assert_int_equal(r.value, UINT64_MAX);
    assert_int_equal(r.text_len, 11);

    assert_int_equal(ctlproto_parse_response(".", 1, &r), 0);
    assert_int_equal(r.kind, CTLPROTO_R_END);
    assert_int_equal(ctlproto_parse_response(".\r", 2, &r), 0);
    assert_int_equal(r.kind, CTLPROTO_R_END);

    {
        static const char *const bad[] = {
            "",
            "..",
            "OKAY",
            "ERR",
            "ERR 40",
            "ERR 4044 x",
            "ERR 600 x",
            "ERR abc",
            "STAT x",
            "STAT x ",
            "STAT X 1",
            "STAT x 1a",
            "STAT x 18446744073709551616",
            "STAT  1",
            "hello",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
            if (ctlproto_parse_response(bad[i], strlen(bad[i]), &r) != MX2_E_SYNTAX)
                fail_msg("response '%s' accepted", bad[i]);
    }
    free(longtext);
}

static void
test_next_line(void **state)
{
    size_t ll = 0, used = 0;
    char *big = malloc(CTLPROTO_LINE_MAX + 10);

    assert_int_equal(ctlproto_next_line("PING\r\nSTATS\n", 12, &ll, &used), 1);
    assert_int_equal(ll, 4);
    assert_int_equal(used, 6);
    assert_int_equal(ctlproto_next_line("PIN", 3, &ll, &used), 0);
    assert_int_equal(ctlproto_next_line("\n", 1, &ll, &used), 1);
    assert_int_equal(ll, 0);
    memset(big, 'a', CTLPROTO_LINE_MAX + 10);
    assert_int_equal(ctlproto_next_line(big, CTLPROTO_LINE_MAX - 1, &ll, &used), 0);
    assert_int_equal(ctlproto_next_line(big, CTLPROTO_LINE_MAX, &ll, &used), MX2_E_LINE_TOO_LONG);
    /* A LF beyond the limit does not make an overlong line acceptable. */
    big[CTLPROTO_LINE_MAX + 2] = '\n';
    assert_int_equal(ctlproto_next_line(big, CTLPROTO_LINE_MAX + 10, &ll, &used),
                     MX2_E_LINE_TOO_LONG);
    free(big);
}

static void
test_ip_listed(void **state)
{
    char *list[] = {"192.0.2.1", "2001:db8::1", "not-an-ip", "::ffff:198.51.100.7"};
    static const struct {
        const char *ip;
        int want;
    } cases[] = {
        {"192.0.2.1", 1},        {"::ffff:192.0.2.1", 1},
        {"::FFFF:192.0.2.1", 1}, {"2001:DB8:0:0::1", 1},
        {"2001:db8::2", 0},      {"198.51.100.7", 1},
        {"192.0.2.10", 0},       {"192.0.2.1 ", 0},
        {"not-an-ip", 0},        {"", 0},
        {"0300.0.2.1", 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (ctlproto_ip_listed(cases[i].ip, list, 4) != cases[i].want)
            fail_msg("ip '%s': want %d", cases[i].ip, cases[i].want);
    assert_int_equal(ctlproto_ip_listed("192.0.2.1", list, 0), 0);
    assert_int_equal(ctlproto_ip_listed(NULL, list, 4), 0);
}

static void
test_names(void **state)
{
    assert_string_equal(ctlproto_cmd_name(CTLPROTO_FLUSH), "FLUSH");
    assert_string_equal(ctlproto_cmd_name(CTLPROTO_CMD_COUNT_), "?");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_parse_limits),
        cmocka_unit_test(test_id_valid_matches_qid),
        cmocka_unit_test(test_format_request_roundtrip),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_next_line),
        cmocka_unit_test(test_ip_listed),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
