/*
 * fuzz_http.c - the HTTP request-head parser on arbitrary bytes (anyone who
 * can reach http_listen). Checked with abort(): the result is a length
 * within the input and HTTP_HEAD_MAX, 0 (need more; then every prefix is
 * also 0 or the same error), or one of the documented statuses; a parsed
 * method and target lie inside the head, the target within
 * HTTP_TARGET_MAX; routing gives 200/404/405 and 200 only for GET; and
 * parsing is independent of bytes beyond the head.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    struct http_request req, again;
    enum http_route route;
    int rc = http_parse_request(s, size, &req), st;

    if (rc < 0) {
        if (rc != -400 && rc != -414 && rc != -431 && rc != -505)
            abort();
        return 0;
    }
    if (rc == 0) {
        if (size >= HTTP_HEAD_MAX)
            abort();
        return 0;
    }
    if ((size_t)rc > size || rc > HTTP_HEAD_MAX)
        abort();
    if (req.method < s || req.method + req.method_len > s + rc || req.method_len == 0)
        abort();
    if (req.target < s || req.target + req.target_len > s + rc || req.target_len == 0 ||
        req.target_len > HTTP_TARGET_MAX)
        abort();
    if (req.minor != 0 && req.minor != 1)
        abort();
    st = http_route(&req, &route);
    if (st != 200 && st != 404 && st != 405)
        abort();
    if (st == 200 &&
        (req.method_len != 3 || memcmp(req.method, "GET", 3) != 0 || route == HTTP_R_NONE))
        abort();
    /* The head alone parses to the same length. */
    if (http_parse_request(s, (size_t)rc, &again) != rc)
        abort();
    return 0;
}
