/*
 * test_http.c - the HTTP request parser (good heads, hostile heads, limits,
 * incremental input), routing, response framing, the health verdict, and
 * the Prometheus rendering of metrics.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "http.h"
#include "metrics.h"

static void
test_parse_good(void **state)
{
    static const struct {
        const char *head;
        const char *method, *target;
        int minor;
        size_t nheaders;
    } cases[] = {
        {"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/healthz", 1, 1},
        {"GET /metrics HTTP/1.0\r\n\r\n", "GET", "/metrics", 0, 0},
        {"GET /metrics HTTP/1.1\nHost: x\nAccept: */*\n\n", "GET", "/metrics", 1, 2},
        {"\r\nGET / HTTP/1.1\r\n\r\n", "GET", "/", 1, 0},
        {"POST /x?y=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\n", "POST", "/x?y=1", 1, 1},
        {"GET /healthz HTTP/1.1\r\nX-Empty:\r\nX-Tab: a\tb\r\n\r\n", "GET", "/healthz", 1, 2},
    };
    struct http_request req;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = strlen(cases[i].head);
        int rc = http_parse_request(cases[i].head, len, &req);
        if (rc != (int)len)
            fail_msg("case %zu: rc %d want %zu", i, rc, len);
        assert_int_equal(req.method_len, strlen(cases[i].method));
        assert_memory_equal(req.method, cases[i].method, req.method_len);
        assert_int_equal(req.target_len, strlen(cases[i].target));
        assert_memory_equal(req.target, cases[i].target, req.target_len);
        assert_int_equal(req.minor, cases[i].minor);
        assert_int_equal(req.nheaders, cases[i].nheaders);
        /* Every proper prefix asks for more. */
        for (size_t cut = 0; cut < len; cut++)
            if (http_parse_request(cases[i].head, cut, &req) != 0)
                fail_msg("case %zu: prefix %zu not incomplete", i, cut);
    }
    /* Bytes after the head (a body, a second request) are not consumed. */
    assert_int_equal(http_parse_request("GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", 36, &req),
                     18);
}

static void
test_parse_bad(void **state)
{
    static const struct {
        const char *head;
        int rc;
    } cases[] = {
        {"GET /healthz\r\n\r\n", -400},
        {"GET  /healthz HTTP/1.1\r\n\r\n", -400},
        {"GET /healthz  HTTP/1.1\r\n\r\n", -400},
        {"G(T / HTTP/1.1\r\n\r\n", -400},
        {" GET / HTTP/1.1\r\n\r\n", -400},
        {"GET / HTTP/1.1 \r\n\r\n", -400},
        {"GET / http/1.1\r\n\r\n", -400},
        {"GET / HTTP/2.0\r\n\r\n", -505},
        {"GET / HTTP/1.2\r\n\r\n", -505},
        {"GET / HTTP/1.10\r\n\r\n", -400},
        {"GET /\x7f HTTP/1.1\r\n\r\n", -400},
        {"GET /\x80 HTTP/1.1\r\n\r\n", -400},
        {"GET / HTTP/1.1\rHost: x\r\n\r\n", -400},
        {"GET / HTTP/1.1\r\nHost : x\r\n\r\n", -400},
        {"GET / HTTP/1.1\r\nHost x\r\n\r\n", -400},
        {"GET / HTTP/1.1\r\n: x\r\n\r\n", -400},
        {"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", -400},
        {"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", -400},
        {"GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", -400},
        {"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n", -400},
        {"GETGETGETGETGETGETGETGETGETGETGETGET / HTTP/1.1\r\n\r\n", -400},
    };
    struct http_request req;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = http_parse_request(cases[i].head, strlen(cases[i].head), &req);
        if (rc != cases[i].rc)
            fail_msg("case %zu '%s': rc %d want %d", i, cases[i].head, rc, cases[i].rc);
    }
    /* A NUL in a header value. */
    assert_int_equal(http_parse_request("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 27, &req), -400);
}

static void
test_parse_limits(void **state)
{
    struct http_request req;
    char *big = malloc(3 * HTTP_HEAD_MAX);
    size_t len;

    /* Target too long. */
    len = (size_t)sprintf(big, "GET /");
    memset(big + len, 'a', HTTP_TARGET_MAX + 1);
    len += HTTP_TARGET_MAX + 1;
    len += (size_t)sprintf(big + len, " HTTP/1.1\r\n\r\n");
    assert_int_equal(http_parse_request(big, len, &req), -414);

    /* Head over the limit, with or without its end beyond it. */
    len = (size_t)sprintf(big, "GET / HTTP/1.1\r\n");
    while (len < HTTP_HEAD_MAX + 100)
        len += (size_t)sprintf(big + len, "X-Pad: %s\r\n", "0123456789");
    assert_int_equal(http_parse_request(big, HTTP_HEAD_MAX, &req), -431);
    len += (size_t)sprintf(big + len, "\r\n");
    assert_int_equal(http_parse_request(big, len, &req), -431);

    /* Too many header fields, even when short. */
    len = (size_t)sprintf(big, "GET / HTTP/1.1\r\n");
    for (int i = 0; i <= HTTP_MAX_HEADERS; i++)
        len += (size_t)sprintf(big + len, "a: b\r\n");
    len += (size_t)sprintf(big + len, "\r\n");
    assert_int_equal(http_parse_request(big, len, &req), -431);
    free(big);
}

static void
test_route(void **state)
{
    static const struct {
        const char *head;
        int status;
        enum http_route route;
    } cases[] = {
        {"GET /healthz HTTP/1.1\r\n\r\n", 200, HTTP_R_HEALTHZ},
        {"GET /metrics HTTP/1.1\r\n\r\n", 200, HTTP_R_METRICS},
        {"GET /metrics?name[]=x HTTP/1.1\r\n\r\n", 200, HTTP_R_METRICS},
        {"GET /healthz/ HTTP/1.1\r\n\r\n", 404, HTTP_R_NONE},
        {"GET /HEALTHZ HTTP/1.1\r\n\r\n", 404, HTTP_R_NONE},
        {"GET / HTTP/1.1\r\n\r\n", 404, HTTP_R_NONE},
        {"GET http://x/metrics HTTP/1.1\r\n\r\n", 404, HTTP_R_NONE},
        {"POST /metrics HTTP/1.1\r\n\r\n", 405, HTTP_R_NONE},
        {"HEAD /healthz HTTP/1.1\r\n\r\n", 405, HTTP_R_NONE},
        {"get /healthz HTTP/1.1\r\n\r\n", 405, HTTP_R_NONE},
    };
    struct http_request req;
    enum http_route route;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_true(http_parse_request(cases[i].head, strlen(cases[i].head), &req) > 0);
        assert_int_equal(http_route(&req, &route), cases[i].status);
        assert_int_equal(route, cases[i].route);
    }
}

static void
test_response(void **state)
{
    struct buf b = {0};
    char *s;

    http_format_response(&b, 405, "text/plain", "no\n", 3);
    buf_append(&b, "", 1);
    s = (char *)buf_head(&b);
    assert_non_null(strstr(s, "HTTP/1.1 405 Method Not Allowed\r\n"));
    assert_non_null(strstr(s, "\r\nAllow: GET\r\n"));
    assert_non_null(strstr(s, "\r\nContent-Length: 3\r\n"));
    assert_non_null(strstr(s, "\r\nConnection: close\r\n\r\nno\n"));
    buf_reset(&b);
    http_format_response(&b, 200, "text/plain", "ok\n", 3);
    buf_append(&b, "", 1);
    s = (char *)buf_head(&b);
    assert_true(strncmp(s, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_null(strstr(s, "Allow:"));
    buf_free(&b);
}

static void
test_health(void **state)
{
    struct mx2_config cfg = {0};
    char dir[] = "/tmp/mx2-test-http-XXXXXX", q[64], why[256];
    struct http_health h = {0};
    int stopping = 0, trouble = 0;

    assert_non_null(mkdtemp(dir));
    config_defaults(&cfg);
    free(cfg.spool_dir);
    cfg.spool_dir = strdup(dir);
    /* No queue directory yet: not writable. */
    assert_int_equal(http_health_check(&cfg, NULL, why, sizeof(why)), 503);
    assert_non_null(strstr(why, "not writable"));
    snprintf(q, sizeof(q), "%s/queue", dir);
    assert_int_equal(mkdir(q, 0700), 0);
    assert_int_equal(http_health_check(&cfg, NULL, why, sizeof(why)), 200);
    assert_string_equal(why, "ok");
    h.stopping = &stopping;
    h.spool_trouble = &trouble;
    trouble = 1;
    assert_int_equal(http_health_check(&cfg, &h, why, sizeof(why)), 503);
    assert_non_null(strstr(why, "trouble"));
    trouble = 0;
    stopping = 1;
    assert_int_equal(http_health_check(&cfg, &h, why, sizeof(why)), 503);
    assert_string_equal(why, "shutting down");
    rmdir(q);
    rmdir(dir);
    config_free(&cfg);
}

static void
test_metrics_render(void **state)
{
    struct metrics_snapshot s;
    struct metrics_src src = {0};
    struct buf b = {0};
    const char *t;

    metrics_collect(&src, 1000, &s);
    assert_int_equal(s.accepted, 0);
    assert_true(s.spool_free_bytes == UINT64_MAX);
    s.accepted = 7;
    s.rejected_relay = 2;
    s.rejected_unknown_user = 3;
    s.queue_oldest_age_seconds = 3600;
    s.primary_up = 1;
    metrics_render_prometheus(&s, &b);
    buf_append(&b, "", 1);
    t = buf_head(&b);
    assert_non_null(strstr(t, "# TYPE mx2_accepted_total counter\nmx2_accepted_total 7\n"));
    assert_non_null(strstr(t, "mx2_rejected_total{reason=\"relay\"} 2\n"));
    assert_non_null(strstr(t, "mx2_rejected_total{reason=\"unknown_user\"} 3\n"));
    assert_non_null(strstr(t, "mx2_rejected_total{reason=\"map_unavailable\"} 0\n"));
    assert_non_null(strstr(t, "mx2_rejected_total{reason=\"limit\"} 0\n"));
    assert_non_null(strstr(t, "mx2_rejected_total{reason=\"other\"} 0\n"));
    assert_non_null(strstr(t, "# TYPE mx2_queue_oldest_age_seconds gauge\n"));
    assert_non_null(strstr(t, "mx2_queue_oldest_age_seconds 3600\n"));
    assert_non_null(strstr(t, "mx2_primary_up 1\n"));
    static const char *const names[] = {
        "mx2_delivered_total", "mx2_deferred_total", "mx2_bounced_total",    "mx2_expired_total",
        "mx2_queue_messages",  "mx2_queue_bytes",    "mx2_connections_open",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char help[128];
        snprintf(help, sizeof(help), "# HELP %s ", names[i]);
        if (strstr(t, help) == NULL)
            fail_msg("no HELP for %s", names[i]);
    }
    /* Unknown free space is left out rather than exported as 2^64-1. */
    assert_null(strstr(t, "mx2_spool_free_bytes"));
    /* Every line is a comment or "name[{labels}] value". */
    for (const char *p = t; *p;) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        if (*p != '#')
            assert_true(strncmp(p, "mx2_", 4) == 0 && memchr(p, ' ', (size_t)(nl - p)) != NULL);
        p = nl + 1;
    }
    buf_reset(&b);
    metrics_render_stat_lines(&s, &b);
    buf_append(&b, "", 1);
    assert_true(strncmp(buf_head(&b), "STAT accepted 7\n", 16) == 0);
    assert_non_null(strstr(buf_head(&b), "STAT rejected_unknown_user 3\n"));
    buf_free(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),     cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_parse_limits),   cmocka_unit_test(test_route),
        cmocka_unit_test(test_response),       cmocka_unit_test(test_health),
        cmocka_unit_test(test_metrics_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
