/*
 * smtp_server.c - listeners, accept, connection limits (see smtp_server.h).
 *
 * Per-IP counting uses a small chained hash keyed by the peer's address text:
 * it must stay cheap with ten thousand connections and must not be a memory
 * lever for a flood (entries exist only while that IP has connections).
 */
#include "smtp_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "err.h"
#include "log.h"
#include "smtp_session.h"
#include "xalloc.h"

struct smtpd_ipcount {
    struct smtpd_ipcount *next;
    unsigned count;
    char ip[INET6_ADDRSTRLEN];
};

static size_t
smtpd_ip_hash(const char *ip, size_t nbuckets)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (; *ip; ip++)
        h = (h ^ (unsigned char)*ip) * 16777619u;
    return h % nbuckets;
}

/* Returns the new count for ip after adding delta (+1 / -1). */
static unsigned
smtpd_ip_adjust(struct smtpd_server *srv, const char *ip, int delta)
{
    struct smtpd_ipcount **pp = &srv->ipbuckets[smtpd_ip_hash(ip, srv->nipbuckets)];
    struct smtpd_ipcount *e;

    for (; (e = *pp) != NULL; pp = &e->next)
        if (strcmp(e->ip, ip) == 0)
            break;
    if (e == NULL) {
        if (delta < 0)
            return 0;
        e = xcalloc(1, sizeof(*e));
        snprintf(e->ip, sizeof(e->ip), "%s", ip);
        e->next = NULL;
        *pp = e;
    }
    if (delta > 0)
        e->count++;
    else if (e->count > 0)
        e->count--;
    if (e->count == 0) {
        unsigned c = 0;
        *pp = e->next;
        free(e);
        return c;
    }
    return e->count;
}

static void
smtpd_on_connection(uv_stream_t *listener, int status)
{
    struct smtpd_server *srv = listener->data;
    struct smtpd_session *s;
    int refuse = 0;

    if (status < 0) {
        log_warn("accept: %s", uv_strerror(status));
        return;
    }
    if (srv->stopping)
        return;
    s = smtpd_session_new(srv);
    if (uv_accept(listener, (uv_stream_t *)&s->conn.tcp) != 0) {
        smtpd_session_abort(s);
        return;
    }
    srv->stats.connections++;
    if (conn_start(&s->conn, (uint64_t)srv->cfg->smtp_timeout * 1000) != 0) {
        smtpd_session_abort(s);
        return;
    }
    srv->nconn++;
    if (smtpd_ip_adjust(srv, s->conn.peer_ip, +1) > (unsigned)srv->cfg->max_connections_per_ip)
        refuse = 1;
    s->counted = 1;
    if (srv->nconn > (unsigned)srv->cfg->max_connections)
        refuse = 1;
    if (refuse) {
        srv->stats.rejected_limit++;
        log_info("reject: connect from %s: too many connections", s->conn.peer_ip);
        smtpd_session_refuse(s, MX2_E_TOO_MANY_CONN);
        return;
    }
    smtpd_session_start(s);
}

void
smtpd_server_session_gone(struct smtpd_server *srv, struct smtpd_session *s)
{
    if (s->counted) {
        srv->nconn--;
        smtpd_ip_adjust(srv, s->conn.peer_ip, -1);
        s->counted = 0;
    }
}

static int
smtpd_bind_one(struct smtpd_server *srv, uv_tcp_t *tcp, const struct mx2_hostport *hp)
{
    struct sockaddr_storage ss;
    char name[300];
    int rc;

    config_format_hostport(hp, name, sizeof(name));
    if (strchr(hp->host, ':') != NULL)
        rc = uv_ip6_addr(hp->host, hp->port, (struct sockaddr_in6 *)&ss);
    else
        rc = uv_ip4_addr(hp->host, hp->port, (struct sockaddr_in *)&ss);
    if (rc != 0) {
        log_err("listen %s: not a numeric address", name);
        return rc;
    }
    if ((rc = uv_tcp_init(srv->loop, tcp)) != 0)
        return rc;
    tcp->data = srv;
    /* An IPv6 wildcard must not also claim IPv4: "0.0.0.0:25" binds that. */
    rc = uv_tcp_bind(tcp, (struct sockaddr *)&ss,
                     ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)tcp, 1024, smtpd_on_connection);
    if (rc != 0)
        log_err("listen %s: %s", name, uv_strerror(rc));
    else
        log_info("listening on %s", name);
    return rc;
}

int
smtpd_server_start(struct smtpd_server *srv, uv_loop_t *loop, const struct mx2_config *cfg,
                   struct rcptmap *map, struct spool *spool, struct writer *writer,
                   struct tls_ctx *tls)
{
    memset(srv, 0, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = cfg;
    srv->map = map;
    srv->writer = writer;
    srv->spool = spool;
    srv->tls = tls;
    srv->body_pool_max = SMTPD_BODY_POOL;
    {
        /* Tests set a small pool (or 0) to drive the temp-file path. */
        const char *e = getenv("MX2_BODY_POOL");
        char *end;
        unsigned long long v = e ? strtoull(e, &end, 10) : 0;
        if (e != NULL && *e != '\0' && *end == '\0' && v <= SMTPD_BODY_POOL)
            srv->body_pool_max = (size_t)v;
    }
    srv->nipbuckets = 4093;
    srv->ipbuckets = xcalloc(srv->nipbuckets, sizeof(*srv->ipbuckets));
    srv->listeners = xcalloc(cfg->listen_count ? cfg->listen_count : 1, sizeof(uv_tcp_t));
    for (size_t i = 0; i < cfg->listen_count; i++) {
        int rc = smtpd_bind_one(srv, &srv->listeners[i], &cfg->listen[i]);
        srv->nlisteners = i + 1;
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void
smtpd_on_listener_closed(uv_handle_t *h)
{
    struct smtpd_server *srv = h->data;

    if (--srv->nlisteners == 0) {
        free(srv->listeners);
        srv->listeners = NULL;
    }
}

void
smtpd_server_stop(struct smtpd_server *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = 1;
    for (size_t i = 0; i < srv->nlisteners; i++)
        uv_close((uv_handle_t *)&srv->listeners[i], smtpd_on_listener_closed);
    if (srv->nlisteners == 0) {
        free(srv->listeners);
        srv->listeners = NULL;
    }
    for (struct smtpd_session *s = srv->sessions, *next; s != NULL; s = next) {
        next = s->next;
        smtpd_session_shutdown(s);
    }
}

int
smtpd_server_idle(const struct smtpd_server *srv)
{
    return srv->sessions == NULL && srv->listeners == NULL;
}
