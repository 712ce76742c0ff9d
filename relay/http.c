/*
 * http.c - GET /healthz and GET /metrics (see http.h).
 *
 * Why a hand-written parser and not a library: SPEC allows nothing beyond
 * libuv/mbedTLS/LMDB/libconfig at run time, and the subset needed here is
 * tiny. It follows RFC 9112 strictly where laxness has bitten servers
 * (request smuggling needs two parsers that disagree; mx2 never forwards a
 * request, but a strict parser is also a simple one): no obs-fold, no bare
 * CR, no control bytes, a token method, an exact version. A request body is
 * never read because we close after one response.
 *
 * The port is for load balancers and Prometheus: it never touches the mail
 * log, and a client that opens connections and sends nothing costs a
 * bounded slot for at most HTTP_TIMEOUT_MS.
 */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "err.h"
#include "log.h"
#include "writer.h"
#include "xalloc.h"

/* ---- pure parser ---- */

/* RFC 9110 5.6.2 tchar. */
static int
http_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Find the next line in buf[pos..len): sets *end (line end, before CR LF or
 * LF) and *next (after the LF). 0 = need more, 1 = found, -400 for a CR not
 * followed by LF. */
static int
http_line(const char *buf, size_t len, size_t pos, size_t *end, size_t *next)
{
    for (size_t i = pos; i < len; i++) {
        if (buf[i] == '\n') {
            *end = i;
            *next = i + 1;
            return 1;
        }
        if (buf[i] == '\r') {
            if (i + 1 == len)
                return 0;
            if (buf[i + 1] != '\n')
                return -400;
            *end = i;
            *next = i + 2;
            return 1;
        }
    }
    return 0;
}

static int
http_parse_request_line(const char *p, size_t n, struct http_request *req)
{
    size_t i = 0, start;

    while (i < n && http_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i > 32 || i >= n || p[i] != ' ')
        return -400;
    req->method = p;
    req->method_len = i;
    start = ++i;
    while (i < n && p[i] != ' ') {
        unsigned char c = (unsigned char)p[i];
        if (c <= 0x20 || c >= 0x7f)
            return -400;
        i++;
    }
    if (i == start || i >= n)
        return -400;
    if (i - start > HTTP_TARGET_MAX)
        return -414;
    req->target = p + start;
    req->target_len = i - start;
    i++;
    if (n - i != 8 || memcmp(p + i, "HTTP/", 5) != 0 || p[i + 6] != '.' || p[i + 5] < '0' ||
        p[i + 5] > '9' || p[i + 7] < '0' || p[i + 7] > '9')
        return -400;
    if (p[i + 5] != '1' || (p[i + 7] != '0' && p[i + 7] != '1'))
        return -505;
    req->minor = p[i + 7] - '0';
    return 0;
}

static int
http_parse_header(const char *p, size_t n)
{
    size_t i = 0;

    if (n > 0 && (p[0] == ' ' || p[0] == '\t'))
        return -400; /* obs-fold (RFC 9112 5.2) */
    while (i < n && http_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ':')
        return -400; /* no name, or whitespace before the colon (RFC 9112 5.1) */
    for (i++; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return -400;
    }
    return 0;
}

int
http_parse_request(const char *buf, size_t len, struct http_request *req)
{
    size_t pos = 0, end, next;
    int rc, have_line = 0;
    size_t scan = len < HTTP_HEAD_MAX ? len : HTTP_HEAD_MAX;

    memset(req, 0, sizeof(*req));
    for (;;) {
        rc = http_line(buf, scan, pos, &end, &next);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return len >= HTTP_HEAD_MAX ? -431 : 0;
        if (!have_line) {
            if (end == pos) {
                /* RFC 9112 2.2: ignore empty lines before the request-line,
                 * but not without bound. */
                if (pos >= 8)
                    return -400;
                pos = next;
                continue;
            }
            if ((rc = http_parse_request_line(buf + pos, end - pos, req)) != 0)
                return rc;
            have_line = 1;
        } else if (end == pos) {
            return (int)next;
        } else {
            if (++req->nheaders > HTTP_MAX_HEADERS)
                return -431;
            if ((rc = http_parse_header(buf + pos, end - pos)) != 0)
                return rc;
        }
        pos = next;
    }
}

int
http_route(const struct http_request *req, enum http_route *route)
{
    size_t plen = 0;

    *route = HTTP_R_NONE;
    if (req->method_len != 3 || memcmp(req->method, "GET", 3) != 0)
        return 405;
    while (plen < req->target_len && req->target[plen] != '?')
        plen++;
    if (plen == 8 && memcmp(req->target, "/healthz", 8) == 0)
        *route = HTTP_R_HEALTHZ;
    else if (plen == 8 && memcmp(req->target, "/metrics", 8) == 0)
        *route = HTTP_R_METRICS;
    else
        return 404;
    return 200;
}

static const char *
http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Error";
    }
}

void
http_format_response(struct buf *out, int status, const char *content_type, const char *body,
                     size_t body_len)
{
    buf_appendf(out,
                "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n",
                status, http_reason(status), content_type, body_len,
                status == 405 ? "Allow: GET\r\n" : "");
    buf_append(out, body, body_len);
}

/* ---- health ---- */

static uint64_t
http_min_free(const struct mx2_config *cfg)
{
    uint64_t min = cfg->max_message_size <= UINT64_MAX / 2 ? 2 * cfg->max_message_size : UINT64_MAX;
    return min < (1u << 20) ? (1u << 20) : min;
}

int
http_health_check(const struct mx2_config *cfg, const struct http_health *h, char *why, size_t len)
{
    char qdir[4096];

    if (h != NULL && h->stopping != NULL && *h->stopping) {
        snprintf(why, len, "shutting down");
        return 503;
    }
    /* The spool's directories must be writable (root passes access(2) anyway;
     * that is why the free-space figure below matters). */
    snprintf(qdir, sizeof(qdir), "%s/queue", cfg->spool_dir);
    if (access(cfg->spool_dir, W_OK) != 0 || access(qdir, W_OK) != 0) {
        snprintf(why, len, "spool %s not writable", cfg->spool_dir);
        return 503;
    }
    if (h != NULL && h->writer != NULL) {
        uint64_t avail = writer_free_space(h->writer), min = http_min_free(cfg);
        if (avail != UINT64_MAX && avail < min) {
            snprintf(why, len, "spool low on space: %llu bytes free, %llu needed",
                     (unsigned long long)avail, (unsigned long long)min);
            return 503;
        }
    }
    if (h != NULL && h->spool_trouble != NULL && *h->spool_trouble) {
        snprintf(why, len, "spool trouble reported by the SMTP server");
        return 503;
    }
    snprintf(why, len, "ok");
    return 200;
}

/* ---- server ---- */

struct http_conn {
    struct conn conn;
    struct http_server *srv;
    struct http_conn *next, *prev;
    int answered;
};

struct http_server {
    uv_loop_t *loop;
    const struct mx2_config *cfg;
    uv_tcp_t listener;
    struct metrics_src src;
    struct http_health health;
    struct http_conn *conns;
    unsigned nconn;
    int stopping, listener_open;
};

static void http_on_read(struct conn *c);
static void http_on_timeout(struct conn *c);
static void http_on_close(struct conn *c);

static const struct conn_ops http_conn_ops = {
    .on_read = http_on_read,
    .on_tls_done = NULL,
    .on_timeout = http_on_timeout,
    .on_close = http_on_close,
};

static void
http_maybe_free(struct http_server *srv)
{
    if (srv->stopping && srv->nconn == 0 && !srv->listener_open)
        free(srv);
}

static void
http_respond(struct http_conn *hc, int status, const char *ctype, const char *body, size_t len)
{
    struct buf out = {0};

    hc->answered = 1;
    http_format_response(&out, status, ctype, body, len);
    conn_write(&hc->conn, buf_head(&out), buf_avail(&out));
    buf_free(&out);
    conn_close_after_write(&hc->conn);
}

static void
http_respond_text(struct http_conn *hc, int status, const char *text)
{
    http_respond(hc, status, "text/plain; charset=utf-8", text, strlen(text));
}

static void
http_on_read(struct conn *c)
{
    struct http_conn *hc = c->data;
    struct http_server *srv = hc->srv;
    struct http_request req;
    enum http_route route;
    int rc, status;

    if (hc->answered)
        return;
    rc = http_parse_request(buf_head(&c->in), buf_avail(&c->in), &req);
    if (rc == 0) {
        if (c->eof || c->err)
            conn_close(c); /* gave up half-way: nothing to answer */
        return;
    }
    if (rc < 0) {
        char text[64];
        snprintf(text, sizeof(text), "%s\n", http_reason(-rc));
        http_respond_text(hc, -rc, text);
        return;
    }
    status = http_route(&req, &route);
    if (status != 200) {
        http_respond_text(hc, status, status == 405 ? "only GET is supported\n" : "not found\n");
        return;
    }
    if (route == HTTP_R_HEALTHZ) {
        char why[256], body[300];
        status = http_health_check(srv->cfg, &srv->health, why, sizeof(why));
        /* SPEC: 200 `ok`: exactly those two bytes, no newline, so that a
         * check comparing the body with "ok" holds; a 503 says why. */
        snprintf(body, sizeof(body), "%s", why);
        http_respond_text(hc, status, body);
    } else {
        struct metrics_snapshot snap;
        struct buf body = {0};
        metrics_collect(&srv->src, (int64_t)time(NULL), &snap);
        metrics_render_prometheus(&snap, &body);
        http_respond(hc, 200, "text/plain; version=0.0.4; charset=utf-8", buf_head(&body),
                     buf_avail(&body));
        buf_free(&body);
    }
}

static void
http_on_timeout(struct conn *c)
{
    /* No 408: a client that is this slow is not a health checker. */
    conn_close(c);
}

static void
http_on_close(struct conn *c)
{
    struct http_conn *hc = c->data;
    struct http_server *srv = hc->srv;

    if (hc->prev != NULL)
        hc->prev->next = hc->next;
    else
        srv->conns = hc->next;
    if (hc->next != NULL)
        hc->next->prev = hc->prev;
    srv->nconn--;
    buf_free(&c->in);
    free(hc);
    http_maybe_free(srv);
}

static void
http_on_connection(uv_stream_t *listener, int status)
{
    struct http_server *srv = listener->data;
    struct http_conn *hc;
    int rc;

    if (status < 0 || srv->stopping)
        return;
    hc = xcalloc(1, sizeof(*hc));
    hc->srv = srv;
    rc = conn_init(srv->loop, &hc->conn, &http_conn_ops, hc);
    if (rc != 0 && hc->conn.handles_open == 0) {
        free(hc);
        return;
    }
    hc->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = hc;
    srv->conns = hc;
    srv->nconn++;
    if (rc != 0) {
        conn_close(&hc->conn); /* on_close unlinks and frees */
        return;
    }
    hc->conn.in_max = HTTP_HEAD_MAX;
    if (uv_accept(listener, (uv_stream_t *)&hc->conn.tcp) != 0 || srv->nconn > HTTP_MAX_CONN ||
        conn_start(&hc->conn, HTTP_TIMEOUT_MS) != 0) {
        conn_close(&hc->conn);
        return;
    }
}

int
http_start(uv_loop_t *loop, const struct mx2_config *cfg, struct http_server **out)
{
    struct http_server *srv;
    struct sockaddr_storage ss;
    char name[300];
    int rc;

    *out = NULL;
    config_format_hostport(&cfg->http_listen, name, sizeof(name));
    memset(&ss, 0, sizeof(ss));
    if (strchr(cfg->http_listen.host, ':') != NULL)
        rc = uv_ip6_addr(cfg->http_listen.host, cfg->http_listen.port, (struct sockaddr_in6 *)&ss);
    else
        rc = uv_ip4_addr(cfg->http_listen.host, cfg->http_listen.port, (struct sockaddr_in *)&ss);
    if (rc != 0) {
        log_err("http_listen %s: not a numeric address", name);
        return rc;
    }
    srv = xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = cfg;
    if ((rc = uv_tcp_init(loop, &srv->listener)) != 0) {
        free(srv);
        return rc;
    }
    srv->listener.data = srv;
    srv->listener_open = 1;
    rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss,
                     ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, 128, http_on_connection);
    if (rc != 0) {
        log_err("http_listen %s: %s", name, uv_strerror(rc));
        http_stop(srv);
        return rc;
    }
    log_info("HTTP (healthz, metrics) on %s", name);
    *out = srv;
    return 0;
}

void
http_set_source(struct http_server *srv, const struct metrics_src *src,
                const struct http_health *health)
{
    if (srv == NULL)
        return;
    if (src != NULL)
        srv->src = *src;
    if (health != NULL)
        srv->health = *health;
}

static void
http_on_listener_closed(uv_handle_t *h)
{
    struct http_server *srv = h->data;

    srv->listener_open = 0;
    http_maybe_free(srv);
}

void
http_stop(struct http_server *srv)
{
    if (srv == NULL || srv->stopping)
        return;
    srv->stopping = 1;
    for (struct http_conn *hc = srv->conns; hc != NULL; hc = hc->next)
        conn_close(&hc->conn);
    uv_close((uv_handle_t *)&srv->listener, http_on_listener_closed);
}
