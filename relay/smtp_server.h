/*
 * smtp_server.h - mx2d's SMTP listeners: bind, accept, connection limits,
 * the set of live sessions, graceful stop.
 *
 * Callers: main.c. Event-loop thread only. The server borrows the config,
 * the recipient map, the writer and the TLS context; they outlive it.
 *
 * Limits enforced at accept: max_connections (total) and
 * max_connections_per_ip; a connection over either limit gets
 * "421 4.7.0 Error: too many connections" and is closed at once.
 */
#ifndef MX2_SMTP_SERVER_H
#define MX2_SMTP_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "config.h"

struct rcptmap;
struct spool;
struct flusher;
struct tls_ctx;
struct writer;
struct smtpd_session;
struct smtpd_ipcount;

/* Counters shown by logs now and /metrics later. */
struct smtpd_stats {
    uint64_t connections;
    uint64_t accepted;           /* messages answered 250 */
    uint64_t rejected_relay;     /* 554 5.7.1 */
    uint64_t rejected_unknown;   /* 550 5.1.1 */
    uint64_t rejected_map;       /* 451 4.3.0 */
    uint64_t rejected_limit;     /* 452/552/421 limits */
    uint64_t rejected_other;
};

struct smtpd_server {
    uv_loop_t *loop;
    const struct mx2_config *cfg;
    struct rcptmap *map;
    struct writer *writer;
    struct spool *spool; /* for temp files of large messages */
    struct flusher *flusher; /* told about every committed message */
    struct tls_ctx *tls; /* inbound STARTTLS; NULL when not configured */
    uv_tcp_t *listeners;
    size_t nlisteners;
    unsigned nconn;
    struct smtpd_session *sessions; /* doubly linked list of live sessions */
    struct smtpd_ipcount **ipbuckets;
    size_t nipbuckets;
    struct smtpd_stats stats;
    size_t body_pool_max;   /* SMTPD_BODY_POOL; env MX2_BODY_POOL (bytes) overrides (tests) */
    size_t body_pool_used;  /* bytes of it lent to sessions */
    int stopping;
    /* Set by main: answer new mail with a temporary error (defer_when_primary_up). */
    int defer_new_mail;
    /* Set by main when the spool is low on space or unwritable. */
    int spool_trouble;
};

/* Bind every cfg->listen address. Returns 0 or a negative libuv/mx2 code
 * after logging which address failed. */
int smtpd_server_start(struct smtpd_server *srv, uv_loop_t *loop, const struct mx2_config *cfg,
                       struct rcptmap *map, struct spool *spool, struct writer *writer,
                       struct tls_ctx *tls);
/* Stop accepting; idle sessions get 421 and close; sessions in DATA or
 * waiting on the writer finish (bounded by smtp_timeout). */
void smtpd_server_stop(struct smtpd_server *srv);
/* 1 when every session has gone and the listeners are closed. */
int smtpd_server_idle(const struct smtpd_server *srv);

/* For the session module. */
void smtpd_server_session_gone(struct smtpd_server *srv, struct smtpd_session *s);

#endif
