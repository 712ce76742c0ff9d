/*
 * conn.h - one TCP connection on the loop: socket, idle timer, a bounded
 * plaintext input buffer, ordered output, optional TLS.
 *
 * Callers: smtp_session (server side) and, later, smtp_client, http and
 * control. Event-loop thread only.
 *
 * Reading: every read lands in one loop-wide scratch buffer and is appended to
 * c->in (decrypted first when TLS is on), then on_read() runs. The owner
 * consumes what it handled with buf_consume(&c->in, n). When c->in holds more
 * than in_max bytes, or the owner paused the connection, reading stops, so a
 * client can never make us buffer more than in_max + one read. An idle
 * connection owns no input memory (the buffer is released when empty).
 *
 * Writing: conn_write() copies; bytes leave in call order. With TLS they are
 * encrypted first. conn_close_after_write() closes once everything queued was
 * written. Between conn_cork() and conn_uncork() (which nest) small writes
 * are gathered and leave in one send when the last uncork comes: every
 * on_read runs corked, so what an owner writes in answer to one read (a
 * client's MAIL, RCPT and DATA behind a body and its dot; a server's
 * replies) is one segment, one wake-up of the peer, not one per line.
 *
 * Ownership: the owner embeds or allocates the struct conn and frees it in
 * on_close, which runs once after both handles are closed (libuv: free only in
 * close_cb). After conn_close() no other callback runs.
 */
#ifndef MX2_CONN_H
#define MX2_CONN_H

#include <netinet/in.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"

struct tls_ctx;
struct tls_session;
struct conn;

struct conn_ops {
    void (*on_read)(struct conn *c);                /* c->in grew, or c->eof / c->err set */
    void (*on_tls_done)(struct conn *c, int status); /* handshake finished: 0 or MX2_E_TLS */
    void (*on_timeout)(struct conn *c);
    void (*on_close)(struct conn *c); /* handles closed: owner may free */
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct buf in; /* plaintext received, not yet consumed */
    size_t in_max;
    struct tls_session *tls;
    const struct conn_ops *ops;
    void *data;              /* owner's */
    unsigned handles_open;   /* closes pending before on_close */
    size_t out_pending;      /* bytes handed to uv_write, not yet completed */
    struct buf cork;         /* gathered while corked; freed when sent */
    unsigned corked;         /* conn_cork() depth */
    uint64_t timeout_ms;
    unsigned reading : 1, paused : 1, closing : 1, close_after_write : 1, eof : 1,
        tls_handshaking : 1;
    int err; /* first read/write error (negative libuv code or MX2_E_TLS) */
    char peer_ip[INET6_ADDRSTRLEN];
    uint16_t peer_port;
};

/* Initialise both handles on loop (the TCP handle is then ready for uv_accept
 * or uv_tcp_connect). */
int conn_init(uv_loop_t *loop, struct conn *c, const struct conn_ops *ops, void *data);
/* After accept/connect: learn addresses, start reading and the idle timer. */
int conn_start(struct conn *c, uint64_t timeout_ms);
void conn_pause(struct conn *c);
void conn_resume(struct conn *c);
/* Restart the idle timer (call on progress). */
void conn_touch(struct conn *c);
/* Like conn_touch, but the timer fires after ms instead of timeout_ms (no-op
 * when the connection has no timeout). */
void conn_touch_for(struct conn *c, uint64_t ms);
void conn_set_timeout(struct conn *c, uint64_t timeout_ms);
void conn_write(struct conn *c, const char *data, size_t len);
/* Gather writes until the matching conn_uncork(); the last one sends them.
 * Writes larger than a few KiB are not copied: what was gathered goes
 * first, then they go as they are. */
void conn_cork(struct conn *c);
void conn_uncork(struct conn *c);
/* Start TLS. Everything still unread in c->in is discarded first: after
 * STARTTLS, plaintext the peer pipelined behind the command must never be
 * taken as if it came over TLS (RFC 3207 §4.2 / CVE-2011-0411). The server
 * waits for ClientHello; a client (servername set) sends it now. */
int conn_starttls(struct conn *c, struct tls_ctx *ctx, const char *servername);
void conn_close(struct conn *c);
void conn_close_after_write(struct conn *c);

#endif
