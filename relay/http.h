/*
 * http.h - mx2d's tiny HTTP/1.x server for load balancers and Prometheus:
 * GET /healthz and GET /metrics on `http_listen` (SPEC.md "HTTP").
 *
 * Deliberately small: one request per connection (every response carries
 * "Connection: close" and the server closes after writing it), GET only
 * (405 with "Allow: GET" otherwise), request head at most HTTP_HEAD_MAX bytes
 * (431 beyond), the whole request within HTTP_TIMEOUT_MS (then the
 * connection is dropped), at most HTTP_MAX_CONN connections at once (more are
 * closed at accept). A request body is never read. Nothing is logged per
 * request: health checks must not fill the mail log.
 *
 *   GET /healthz  200 "ok\n" when the daemon is not stopping, the spool
 *                 directory is writable (access W_OK) and the writer's last
 *                 free-space figure is at least HTTP_HEALTH_MIN_FREE(cfg)
 *                 (2 x max_message_size, at least 1 MiB), and the SMTP
 *                 server has not flagged spool trouble; else 503 with one
 *                 line naming the reason.
 *   GET /metrics  200, Prometheus text format 0.0.4 (metrics.h).
 *   other paths   404. A query string is ignored for routing.
 *
 * The request parser, http_parse_request(), is pure and fuzzed
 * (tests/fuzz/fuzz_http.c).
 *
 * Callers: main.c (http_start before the privilege drop, http_set_source
 * once the flusher exists, http_stop at shutdown). Event-loop thread only.
 * The server borrows cfg and the metrics source; they outlive it.
 *
 * Errors: http_start returns 0 or a negative libuv code (logged).
 */
#ifndef MX2_HTTP_H
#define MX2_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "metrics.h"

#define HTTP_HEAD_MAX 8192    /* request line + headers + blank line */
#define HTTP_TARGET_MAX 1024  /* request-target; 414 beyond */
#define HTTP_MAX_HEADERS 64   /* header fields; 431 beyond */
#define HTTP_TIMEOUT_MS 10000 /* whole request, from accept */
#define HTTP_MAX_CONN 64

/* ---- pure parser ---- */

struct http_request {
    const char *method; /* views into the caller's buffer */
    size_t method_len;
    const char *target;
    size_t target_len;
    int minor; /* HTTP/1.<minor>: 0 or 1 */
    size_t nheaders;
};

/* Parse a request head from buf[0..len). Returns the head's length (through
 * the blank line) when complete; 0 when more bytes are needed (len <
 * HTTP_HEAD_MAX); or a negative HTTP status: -400 (malformed: bad method
 * token, control bytes, bare CR, obs-fold, header without colon or with a
 * bad name), -414 (target too long), -431 (head over HTTP_HEAD_MAX or too
 * many headers), -505 (a version other than HTTP/1.0 or HTTP/1.1). A bare
 * LF is taken as a line end (RFC 9112 2.2). Leading empty lines are
 * skipped. */
int http_parse_request(const char *buf, size_t len, struct http_request *req);

/* The response to a parsed request: status, and the path it routes to. */
enum http_route { HTTP_R_NONE = 0, HTTP_R_HEALTHZ, HTTP_R_METRICS };
/* 200 with *route set, or 405 (not GET), or 404 (unknown path). Pure. */
int http_route(const struct http_request *req, enum http_route *route);

/* Format a whole response (status line, Content-Type, Content-Length,
 * Connection: close, Allow for 405, then body) into out. Pure. */
void http_format_response(struct buf *out, int status, const char *content_type, const char *body,
                          size_t body_len);

/* ---- server ---- */

struct http_server;

/* What /healthz checks besides the spool (may be NULL). */
struct http_health {
    const struct writer *writer;
    const int *spool_trouble; /* smtpd_server.spool_trouble */
    const int *stopping;      /* main's flag */
};

/* Bind and listen on cfg->http_listen. */
int http_start(uv_loop_t *loop, const struct mx2_config *cfg, struct http_server **out);
/* Set what /metrics and /healthz read (before the loop runs). */
void http_set_source(struct http_server *srv, const struct metrics_src *src,
                     const struct http_health *health);
/* Close the listener and every connection; frees itself when the handles
 * are closed. NULL is a no-op. */
void http_stop(struct http_server *srv);

/* The health verdict: 0 and "ok" or 503 reason in why (pure apart from
 * access(2); exposed for the unit test). */
int http_health_check(const struct mx2_config *cfg, const struct http_health *h, char *why,
                      size_t len);

#endif
