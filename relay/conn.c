/*
 * conn.c - see conn.h.
 */
#include "conn.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "tls.h"
#include "xalloc.h"

/* One read at a time runs on the loop thread, and its bytes are copied out
 * before the callback returns: one scratch buffer serves every connection, so
 * ten thousand idle connections hold no read memory. */
#define CONN_READ_SIZE (64 * 1024)
/* A peer that sends commands but never reads its replies must not make us
 * queue output without bound: reading stops above this much unsent output. */
#define CONN_OUT_HIGH (256 * 1024)
#define CONN_CORK_MAX (16 * 1024) /* gathered while corked; larger writes go as they are */
static char conn_scratch[CONN_READ_SIZE];

struct conn_wreq {
    uv_write_t req;
    struct conn *c;
    size_t len;
    char data[];
};

static void conn_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);
static void conn_owner_read(struct conn *c);

static void
conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    b->base = conn_scratch;
    b->len = sizeof(conn_scratch);
}

static void
conn_on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;

    if (--c->handles_open == 0) {
        buf_free(&c->in);
        buf_free(&c->cork);
        tls_session_free(c->tls);
        c->tls = NULL;
        c->ops->on_close(c);
    }
}

static void
conn_on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;

    if (!c->closing)
        c->ops->on_timeout(c);
}

int
conn_init(uv_loop_t *loop, struct conn *c, const struct conn_ops *ops, void *data)
{
    int rc;

    memset(c, 0, sizeof(*c));
    c->ops = ops;
    c->data = data;
    c->in_max = 64 * 1024;
    if ((rc = uv_tcp_init(loop, &c->tcp)) != 0)
        return rc;
    c->tcp.data = c;
    c->handles_open = 1;
    if ((rc = uv_timer_init(loop, &c->timer)) != 0) {
        /* The caller must still conn_close() to release the TCP handle. */
        return rc;
    }
    c->timer.data = c;
    c->handles_open = 2;
    return 0;
}

static void
conn_fill_addr(const struct sockaddr_storage *ss, char *ip, size_t iplen, uint16_t *port)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        uv_ip4_name(in, ip, iplen);
        *port = ntohs(in->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        uv_ip6_name(in6, ip, iplen);
        *port = ntohs(in6->sin6_port);
        /* Show v4-mapped peers as plain IPv4, as Postfix does. */
        if (strncmp(ip, "::ffff:", 7) == 0 && strchr(ip + 7, ':') == NULL)
            memmove(ip, ip + 7, strlen(ip + 7) + 1);
    } else {
        snprintf(ip, iplen, "unknown");
        *port = 0;
    }
}

int
conn_start(struct conn *c, uint64_t timeout_ms)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    int rc;

    /* One getpeername per connection (the logs and the per-IP limit need
     * the peer); nothing uses the local address, so no getsockname: at
     * thousands of connections a second every system call shows. */
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
        conn_fill_addr(&ss, c->peer_ip, sizeof(c->peer_ip), &c->peer_port);
    uv_tcp_nodelay(&c->tcp, 1);
    c->timeout_ms = timeout_ms;
    conn_touch(c);
    if ((rc = uv_read_start((uv_stream_t *)&c->tcp, conn_on_alloc, conn_on_read)) != 0)
        return rc;
    c->reading = 1;
    return 0;
}

void
conn_touch(struct conn *c)
{
    if (!c->closing && c->timeout_ms > 0)
        uv_timer_start(&c->timer, conn_on_timer, c->timeout_ms, 0);
}

void
conn_touch_for(struct conn *c, uint64_t ms)
{
    if (!c->closing && c->timeout_ms > 0)
        uv_timer_start(&c->timer, conn_on_timer, ms, 0);
}

void
conn_set_timeout(struct conn *c, uint64_t timeout_ms)
{
    c->timeout_ms = timeout_ms;
    conn_touch(c);
}

static void
conn_update_reading(struct conn *c)
{
    int want = !c->closing && !c->paused && !c->eof && buf_avail(&c->in) < c->in_max &&
               c->out_pending < CONN_OUT_HIGH;

    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, conn_on_alloc, conn_on_read) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

void
conn_pause(struct conn *c)
{
    c->paused = 1;
    conn_update_reading(c);
}

void
conn_resume(struct conn *c)
{
    c->paused = 0;
    conn_update_reading(c);
}

static void
conn_on_write(uv_write_t *req, int status)
{
    struct conn_wreq *w = (struct conn_wreq *)req;
    struct conn *c = w->c;

    c->out_pending -= w->len;
    free(w);
    if (status < 0 && c->err == 0)
        c->err = status;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->close_after_write) {
        if (c->out_pending == 0)
            conn_close(c);
        return;
    }
    /* Output drained: read again if we had stopped for it, and let the
     * owner go on with input it left buffered while its replies were
     * unread (an owner may stop early on its own output mark). */
    if (c->paused)
        return;
    conn_update_reading(c);
    if (buf_avail(&c->in) > 0)
        conn_owner_read(c);
}

static void
conn_send(struct conn *c, const char *data, size_t len)
{
    struct conn_wreq *w;
    uv_buf_t b;
    int rc;

    if (len == 0 || c->closing)
        return;
    /* Nothing of ours in flight: write what the socket takes now, without
     * a request (a reply usually fits at once: no allocation, and libuv
     * never arms POLLOUT, which costs an epoll_ctl to arm and one to drop). */
    if (c->out_pending == 0) {
        b = uv_buf_init((char *)data, (unsigned)len);
        rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (rc > 0) {
            data += rc;
            len -= (size_t)rc;
            if (len == 0)
                return;
        } else if (rc != UV_EAGAIN) {
            if (c->err == 0)
                c->err = rc;
            conn_close(c);
            return;
        }
    }
    w = xmalloc(sizeof(*w) + len);
    w->c = c;
    w->len = len;
    memcpy(w->data, data, len);
    b = uv_buf_init(w->data, (unsigned)len);
    c->out_pending += len;
    rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_on_write);
    if (rc != 0) {
        c->out_pending -= len;
        free(w);
        if (c->err == 0)
            c->err = rc;
        conn_close(c);
    }
}

/* Send what was gathered while corked. The buffer is taken off the
 * connection first, so a failing send (which closes) cannot recurse into
 * it. */
static void
conn_cork_flush(struct conn *c)
{
    struct buf b = c->cork;

    memset(&c->cork, 0, sizeof(c->cork));
    if (buf_avail(&b) > 0)
        conn_send(c, buf_head(&b), buf_avail(&b));
    buf_free(&b);
}

static void
conn_write_raw(struct conn *c, const char *data, size_t len)
{
    if (len == 0 || c->closing)
        return;
    if (c->corked > 0) {
        if (buf_avail(&c->cork) + len <= CONN_CORK_MAX) {
            buf_append(&c->cork, data, len);
            return;
        }
        conn_cork_flush(c);
        if (len <= CONN_CORK_MAX) {
            buf_append(&c->cork, data, len);
            return;
        }
    }
    conn_send(c, data, len);
}

void
conn_cork(struct conn *c)
{
    c->corked++;
}

void
conn_uncork(struct conn *c)
{
    if (c->corked > 0 && --c->corked == 0)
        conn_cork_flush(c);
}

/* The owner's on_read, with what it writes in answer gathered into one
 * send. */
static void
conn_owner_read(struct conn *c)
{
    conn_cork(c);
    c->ops->on_read(c);
    conn_uncork(c);
}

static void
conn_flush_tls(struct conn *c)
{
    const char *p;
    size_t n = tls_out(c->tls, &p);

    if (n > 0) {
        conn_write_raw(c, p, n);
        tls_out_consume(c->tls, n);
    }
}

void
conn_write(struct conn *c, const char *data, size_t len)
{
    if (c->closing || len == 0)
        return;
    if (c->tls == NULL) {
        conn_write_raw(c, data, len);
        return;
    }
    if (tls_write(c->tls, data, len) != 0) {
        c->err = MX2_E_TLS;
        conn_close(c);
        return;
    }
    conn_flush_tls(c);
}

/* Decrypt everything fed so far into c->in. 0 or an error. */
static int
conn_tls_drain(struct conn *c)
{
    for (;;) {
        char *dst = buf_reserve(&c->in, 16 * 1024);
        long n = tls_read(c->tls, dst, 16 * 1024);
        if (n > 0) {
            c->in.len += (size_t)n;
            continue;
        }
        if (n == 0)
            return 0;
        return (int)n;
    }
}

static void
conn_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;

    if (c->closing)
        return;
    if (n == 0)
        return;
    if (n < 0) {
        if (n != UV_EOF)
            c->err = (int)n;
        c->eof = 1;
        conn_update_reading(c);
        conn_owner_read(c);
        return;
    }
    if (c->tls == NULL) {
        buf_append(&c->in, b->base, (size_t)n);
    } else {
        int rc;
        tls_feed(c->tls, b->base, (size_t)n);
        if (c->tls_handshaking) {
            rc = tls_handshake(c->tls);
            conn_flush_tls(c);
            if (rc == 0)
                return;
            c->tls_handshaking = 0;
            c->ops->on_tls_done(c, rc < 0 ? rc : 0);
            if (rc < 0 || c->closing)
                return;
        }
        rc = conn_tls_drain(c);
        conn_flush_tls(c);
        if (rc < 0) {
            c->err = rc == MX2_E_SHUTDOWN ? 0 : rc;
            c->eof = 1;
        }
    }
    conn_owner_read(c);
    if (c->closing)
        return;
    /* Idle connections hold no input memory. */
    if (buf_avail(&c->in) == 0 && c->in.cap > 0)
        buf_free(&c->in);
    /* Stop reading while the owner leaves more than in_max unconsumed (or
     * paused us); start again once it has caught up. */
    conn_update_reading(c);
}

int
conn_starttls(struct conn *c, struct tls_ctx *ctx, const char *servername)
{
    buf_reset(&c->in);
    c->tls = tls_session_new(ctx, servername);
    if (c->tls == NULL)
        return MX2_E_TLS;
    c->tls_handshaking = 1;
    if (servername != NULL) {
        int rc = tls_handshake(c->tls); /* sends ClientHello */
        conn_flush_tls(c);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void
conn_close(struct conn *c)
{
    if (c->closing)
        return;
    if (c->tls != NULL && !c->tls_handshaking && c->err == 0) {
        tls_close_notify(c->tls);
        conn_flush_tls(c);
    }
    /* What was gathered still goes (a last reply before closing), as
     * unqueued writes always did: one attempt, no waiting. */
    conn_cork_flush(c);
    if (c->closing)
        return; /* a failed send above has closed it already */
    c->closing = 1;
    uv_timer_stop(&c->timer);
    if (c->handles_open >= 1)
        uv_close((uv_handle_t *)&c->tcp, conn_on_handle_closed);
    if (c->handles_open >= 2)
        uv_close((uv_handle_t *)&c->timer, conn_on_handle_closed);
}

void
conn_close_after_write(struct conn *c)
{
    conn_cork_flush(c);
    if (c->closing)
        return;
    if (c->out_pending == 0) {
        conn_close(c);
        return;
    }
    c->close_after_write = 1;
    conn_pause(c);
    /* A peer that never reads must not hold the connection forever. */
    if (c->timeout_ms == 0)
        c->timeout_ms = 30000;
    conn_touch(c);
}
