/*
 * flusher.c - delivery of the queue (see flusher.h).
 *
 * Index: a hash by queue ID, one min-heap per route keyed by (next attempt,
 * queue ID) so that due messages come out oldest first, and a list in
 * arrival order for expiry (queue IDs sort by arrival, and messages enter
 * the index in ID order, so the head of the list is always the oldest).
 *
 * An attempt: load envelope and body (LMDB read; the pages are mapped, no
 * syscall on the hot path), send the pending recipients, then one writer
 * transaction records every recipient's outcome, the message's next
 * attempt, and its removal when nothing is pending. When recipients
 * bounced, the DSN is committed first and the update follows only after it
 * is durable: a crash between the two resends the DSN (at-least-once), it
 * never loses it.
 */
#include "flusher.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "bounce.h"
#include "dns.h"
#include "err.h"
#include "log.h"
#include "schedule.h"
#include "smtp_client.h"
#include "spool.h"
#include "tls.h"
#include "writer.h"
#include "xalloc.h"

#define FL_TICK_MS 100
#define FL_MAX_TARGETS 32
#define FL_BOUNCE_CONCURRENCY 2
#define FL_RESOLVE_TTL 60       /* seconds a resolved primary target list is reused */
#define FL_DSN_FULL_LIMIT (10u << 20)

enum fl_route { FL_PRIMARY = 0, FL_BOUNCE = 1 };

struct fl_msg {
    char qid[QID_SIZE];
    int64_t arrival;
    int64_t next_attempt;
    enum fl_route route;
    unsigned active : 1, hold : 1, in_round : 1;
    unsigned round_counted : 1;    /* its outcome is in the flush round's tally */
    unsigned opbusy;               /* operator actions being written */
    uint64_t size;
    uint32_t npending;             /* recipients still to deliver */
    uint64_t domains;              /* bit i: a recipient in relay_domains[i] */
    struct fl_op *ops;             /* operator actions waiting for the attempt to end */
    size_t heap_idx;               /* SIZE_MAX when not in a heap */
    struct fl_msg *hnext;          /* hash chain */
    struct fl_msg *anext, *aprev;  /* arrival order */
};

struct fl_heap {
    struct fl_msg **v;
    size_t n, cap;
};

struct fl_conn;

/* An operator action (delete/hold/release) on one message. */
struct fl_op {
    struct writer_job job;
    struct spool_op op;
    struct flusher *fl;
    flusher_op_cb cb;
    void *arg;
    struct fl_op *next;
};

struct flusher {
    uv_loop_t *loop;
    const struct mx2_config *cfg;
    struct spool *spool;
    struct writer *writer;
    struct tls_ctx *tls;           /* client TLS for the primary (NULL when none) */
    struct tls_ctx *tls_bounce;    /* opportunistic TLS for bounce destinations */
    char *auth_password;
    struct fl_msg **buckets;
    size_t nbuckets, nmsgs;
    struct fl_msg *ahead, *atail;
    struct fl_heap heap[2];
    struct fl_conn *conns;         /* all connections */
    unsigned nconn[2];
    unsigned nprobe;
    struct sched_primary primary;
    struct smtpc_result down_why;  /* why the primary is down (for deferrals) */
    int reported;                  /* state last given to state_cb: -1 none, 0 down, 1 up */
    struct smtpc_target ptargets[FL_MAX_TARGETS];
    size_t nptargets;
    int64_t ptargets_at;           /* when resolved; 0 = never */
    int presolving;
    uv_timer_t tick;
    int stopping;
    unsigned pending_work;         /* resolver jobs and writer jobs in flight */
    struct flusher_stats stats;
    void (*state_cb)(void *, int);
    void *state_arg;
    uint32_t seed;
    uint64_t bytes, held;
    /* flush --wait: one round at a time; later waiters join it. */
    int round_active;
    uint64_t round_waiting; /* messages of the round not yet attempted */
    uint64_t round_delivered, round_deferred, round_bounced;
    struct fl_waiter *waiters;
};

struct fl_waiter {
    struct fl_waiter *next;
    flusher_round_cb done;
    void *arg;
};

struct fl_conn {
    struct smtpc c;
    struct flusher *fl;
    enum fl_route route;
    struct smtpc_target targets[FL_MAX_TARGETS];
    size_t ntargets, ti;
    struct fl_msg *bmsg;           /* bounce route: the one message to carry */
    struct fl_attempt *cur;
    struct fl_attempt *pnext;      /* pipelined behind cur (smtpc on_next) */
    struct fl_conn *next, *prev;
    unsigned probe : 1, reached : 1;
    int64_t opened;
};

struct fl_attempt {
    struct flusher *fl;
    struct fl_msg *msg;
    struct envelope env;
    struct spool_body body;
    size_t *idx;
    struct smtpc_result *res;
    size_t n;
    struct smtpc_msg m;
    int64_t started;
    char relay[320];
    char remote_host[256];
    struct writer_job job;
    struct spool_op *ops;
    size_t nops, opcap;
    int deleting;
    int down_deferral; /* deferred with the primary's failure, no network */
    int primary_dsn;   /* the primary offered DSN for this attempt */
    uint64_t t_delivered, t_bounced, t_deferred; /* this attempt's outcome, per recipient */
    size_t *relayed;   /* NOTIFY=SUCCESS recipients handed to a non-DSN primary */
    enum bounce_kind dsn_kind;
    size_t nrelayed;
    int64_t next_attempt;
    /* DSN */
    struct writer_job djob;
    struct buf dsn;
    struct envelope denv;
    struct envelope_rcpt drcpt;
};

static void fl_kick(struct flusher *fl);
static void fl_op_start_waiting(struct flusher *fl, struct fl_msg *m);
static void fl_op_flush_all(struct flusher *fl, struct fl_msg *m, int rc);
struct fl_attempt;
static int fl_queue_dsn(struct fl_attempt *a, const size_t *which, size_t nwhich,
                        enum bounce_kind kind);
static void fl_conn_open(struct flusher *fl, enum fl_route route, struct fl_msg *bmsg,
                         const struct smtpc_target *t, size_t nt, int probe);

static int64_t
fl_now(void)
{
    return (int64_t)time(NULL);
}

/* ---- index ---- */

static size_t
fl_hash(const char *qid, size_t nb)
{
    uint32_t h = 2166136261u;
    for (; *qid; qid++)
        h = (h ^ (unsigned char)*qid) * 16777619u;
    return h & (nb - 1);
}

static struct fl_msg *
fl_find(struct flusher *fl, const char *qid)
{
    for (struct fl_msg *m = fl->buckets[fl_hash(qid, fl->nbuckets)]; m; m = m->hnext)
        if (strcmp(m->qid, qid) == 0)
            return m;
    return NULL;
}

static void
fl_grow(struct flusher *fl)
{
    size_t nb = fl->nbuckets * 2;
    struct fl_msg **b = xcalloc(nb, sizeof(*b));

    for (size_t i = 0; i < fl->nbuckets; i++)
        for (struct fl_msg *m = fl->buckets[i], *next; m; m = next) {
            next = m->hnext;
            size_t h = fl_hash(m->qid, nb);
            m->hnext = b[h];
            b[h] = m;
        }
    free(fl->buckets);
    fl->buckets = b;
    fl->nbuckets = nb;
}

static int
fl_heap_less(const struct fl_msg *a, const struct fl_msg *b)
{
    if (a->next_attempt != b->next_attempt)
        return a->next_attempt < b->next_attempt;
    return strcmp(a->qid, b->qid) < 0;
}

static void
fl_heap_swap(struct fl_heap *h, size_t i, size_t j)
{
    struct fl_msg *t = h->v[i];
    h->v[i] = h->v[j];
    h->v[j] = t;
    h->v[i]->heap_idx = i;
    h->v[j]->heap_idx = j;
}

static void
fl_heap_up(struct fl_heap *h, size_t i)
{
    while (i > 0 && fl_heap_less(h->v[i], h->v[(i - 1) / 2])) {
        fl_heap_swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void
fl_heap_down(struct fl_heap *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && fl_heap_less(h->v[l], h->v[m]))
            m = l;
        if (r < h->n && fl_heap_less(h->v[r], h->v[m]))
            m = r;
        if (m == i)
            return;
        fl_heap_swap(h, i, m);
        i = m;
    }
}

/* Make every message in h due now; the order becomes queue-ID (arrival)
 * order, so the oldest goes first. */
static void
fl_heap_all_due(struct fl_heap *h)
{
    for (size_t i = 0; i < h->n; i++)
        h->v[i]->next_attempt = 0;
    for (size_t i = h->n / 2; i-- > 0;)
        fl_heap_down(h, i);
}

static void
fl_heap_push(struct fl_heap *h, struct fl_msg *m)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 64;
        h->v = xrealloc(h->v, h->cap * sizeof(*h->v));
    }
    h->v[h->n] = m;
    m->heap_idx = h->n++;
    fl_heap_up(h, m->heap_idx);
}

static void
fl_heap_remove(struct fl_heap *h, struct fl_msg *m)
{
    size_t i = m->heap_idx;

    if (i == SIZE_MAX)
        return;
    h->n--;
    if (i != h->n) {
        h->v[i] = h->v[h->n];
        h->v[i]->heap_idx = i;
        fl_heap_down(h, i);
        fl_heap_up(h, i);
    }
    m->heap_idx = SIZE_MAX;
}

static void
fl_schedule(struct flusher *fl, struct fl_msg *m, int64_t when)
{
    fl_heap_remove(&fl->heap[m->route], m);
    m->next_attempt = when;
    if (!m->hold && !m->active && m->opbusy == 0)
        fl_heap_push(&fl->heap[m->route], m);
}

static void
fl_round_end(struct flusher *fl)
{
    struct fl_waiter *w = fl->waiters, *next;

    fl->round_active = 0;
    fl->waiters = NULL;
    for (struct fl_msg *m = fl->ahead; m != NULL; m = m->anext)
        m->in_round = m->round_counted = 0;
    for (; w != NULL; w = next) {
        next = w->next;
        w->done(w->arg, fl->round_delivered, fl->round_deferred, fl->round_bounced);
        free(w);
    }
}

/* Add an attempt's outcome to the flush round (once per message). */
static void
fl_round_tally(struct flusher *fl, struct fl_attempt *a)
{
    if (a->msg->round_counted)
        return;
    a->msg->round_counted = 1;
    fl->round_delivered += a->t_delivered;
    fl->round_bounced += a->t_bounced;
    fl->round_deferred += a->t_deferred;
}

static void
fl_round_leave(struct flusher *fl, struct fl_msg *m)
{
    if (!m->in_round)
        return;
    m->in_round = 0;
    if (fl->round_active && --fl->round_waiting == 0)
        fl_round_end(fl);
}

static void
fl_forget(struct flusher *fl, struct fl_msg *m)
{
    struct fl_msg **pp = &fl->buckets[fl_hash(m->qid, fl->nbuckets)];

    fl_heap_remove(&fl->heap[m->route], m);
    if (m->in_round) {
        fl->round_deferred++; /* removed before its attempt (operator delete) */
        fl_round_leave(fl, m);
    }
    for (; *pp; pp = &(*pp)->hnext)
        if (*pp == m) {
            *pp = m->hnext;
            break;
        }
    if (m->aprev)
        m->aprev->anext = m->anext;
    else
        fl->ahead = m->anext;
    if (m->anext)
        m->anext->aprev = m->aprev;
    else
        fl->atail = m->aprev;
    fl->nmsgs--;
    fl->bytes -= m->size;
    if (m->hold)
        fl->held--;
    free(m);
}

static enum fl_route
fl_route_of(const struct flusher *fl, const struct envelope *env)
{
    /* Inbound RCPT only ever accepts relay domains; a recipient elsewhere
     * can only be the sender of a message we bounced: a DSN of ours. */
    const char *at = strrchr(env->rcpts[0].address, '@');
    const char *dom = at ? at + 1 : "";

    if (env->sender[0] == '\0' &&
        !addr_domain_listed(dom, strlen(dom), fl->cfg->relay_domains,
                            fl->cfg->relay_domains_count))
        return FL_BOUNCE;
    return FL_PRIMARY;
}

static void
fl_add(struct flusher *fl, const char *qid, const struct envelope *env)
{
    struct fl_msg *m;
    size_t h;

    if (fl_find(fl, qid) != NULL)
        return;
    if (fl->nmsgs >= fl->nbuckets * 2)
        fl_grow(fl);
    m = xcalloc(1, sizeof(*m));
    snprintf(m->qid, sizeof(m->qid), "%s", qid);
    m->arrival = env->arrival_sec;
    m->route = fl_route_of(fl, env);
    m->hold = (env->flags & ENVELOPE_F_HOLD) != 0;
    m->heap_idx = SIZE_MAX;
    m->size = env->size;
    m->npending = (uint32_t)envelope_pending_count(env);
    for (size_t i = 0; i < env->nrcpt; i++) {
        const char *at = strrchr(env->rcpts[i].address, '@');
        for (size_t d = 0; at != NULL && d < fl->cfg->relay_domains_count && d < 64; d++)
            if (strcasecmp(at + 1, fl->cfg->relay_domains[d]) == 0)
                m->domains |= 1ull << d;
    }
    fl->bytes += m->size;
    if (m->hold)
        fl->held++;
    h = fl_hash(qid, fl->nbuckets);
    m->hnext = fl->buckets[h];
    fl->buckets[h] = m;
    /* Arrival order: append, or insert from the tail (IDs are increasing
     * almost always; the walk at startup is in ID order). */
    {
        struct fl_msg *p = fl->atail;
        while (p != NULL && strcmp(p->qid, m->qid) > 0)
            p = p->aprev;
        m->aprev = p;
        m->anext = p ? p->anext : fl->ahead;
        if (m->anext)
            m->anext->aprev = m;
        else
            fl->atail = m;
        if (p)
            p->anext = m;
        else
            fl->ahead = m;
    }
    fl->nmsgs++;
    fl_schedule(fl, m, env->next_attempt);
}

/* ---- resolving targets (threadpool) ---- */

struct fl_resolve {
    uv_work_t work;
    struct flusher *fl;
    enum fl_route route;
    char qid[QID_SIZE];            /* bounce route: the message */
    struct mx2_hostport entries[FL_MAX_TARGETS]; /* more could give no address */
    size_t nentries;
    char domain[256];              /* bounce route without bounce_relay: MX of this */
    struct smtpc_target t[FL_MAX_TARGETS];
    size_t n;
    int err;
};

static void
fl_add_addrs(struct fl_resolve *r, const char *host, uint16_t port)
{
    struct addrinfo hints, *res = NULL, *ai;
    char ps[8];

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    snprintf(ps, sizeof(ps), "%u", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0) {
        if (r->err == 0)
            r->err = -EAGAIN;
        return;
    }
    for (ai = res; ai != NULL && r->n < FL_MAX_TARGETS; ai = ai->ai_next) {
        struct smtpc_target *t = &r->t[r->n];
        if (ai->ai_addrlen > sizeof(t->addr))
            continue;
        memset(t, 0, sizeof(*t));
        memcpy(&t->addr, ai->ai_addr, ai->ai_addrlen);
        snprintf(t->host, sizeof(t->host), "%s", host);
        t->port = port;
        if (ai->ai_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)ai->ai_addr, t->ip, sizeof(t->ip));
        else if (ai->ai_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)ai->ai_addr, t->ip, sizeof(t->ip));
        else
            continue;
        r->n++;
    }
    freeaddrinfo(res);
}

static void
fl_resolve_mx(struct fl_resolve *r, const char *domain, uint16_t port)
{
    struct dns_host hosts[10];
    size_t n = 0;
    int rc = dns_mx_lookup(domain, hosts, 10, &n);

    if (rc != 0) {
        r->err = rc;
        return;
    }
    for (size_t i = 0; i < n; i++)
        fl_add_addrs(r, hosts[i].name, port);
    if (r->n > 0)
        r->err = 0;
}

static bool
fl_is_ip_literal(const char *host)
{
    unsigned char a[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

static void
fl_resolve_work(uv_work_t *w)
{
    struct fl_resolve *r = w->data;

    for (size_t i = 0; i < r->nentries; i++) {
        /* [host] = no MX lookup (Postfix convention); plain host = its MX.
         * An IP address written without brackets has no MX to look up: it
         * is meant as it is (an MX query for "192.0.2.1" would only fail). */
        if (r->entries[i].bracketed || fl_is_ip_literal(r->entries[i].host))
            fl_add_addrs(r, r->entries[i].host, r->entries[i].port);
        else
            fl_resolve_mx(r, r->entries[i].host, r->entries[i].port);
    }
    if (r->domain[0] != '\0')
        fl_resolve_mx(r, r->domain, 25);
    if (r->n > 0)
        r->err = 0;
    else if (r->err == 0)
        r->err = MX2_E_NOT_FOUND;
}

static void fl_bounce_unroutable(struct flusher *fl, struct fl_msg *m, int err);

static void
fl_resolve_done(uv_work_t *w, int status)
{
    struct fl_resolve *r = w->data;
    struct flusher *fl = r->fl;

    fl->pending_work--;
    if (fl->stopping) {
        free(r);
        return;
    }
    if (r->route == FL_PRIMARY) {
        fl->presolving = 0;
        if (r->n == 0) {
            log_warn("primary: cannot resolve any address: %s", dns_strerror(r->err));
            memset(&fl->down_why, 0, sizeof(fl->down_why));
            snprintf(fl->down_why.ecode, sizeof(fl->down_why.ecode), "4.4.3");
            snprintf(fl->down_why.text, sizeof(fl->down_why.text),
                     "primary: cannot resolve any address: %s", dns_strerror(r->err));
            if (sched_primary_failed(&fl->primary, fl->cfg, fl_now()))
                log_warn("primary is DOWN: no address; probing every %llds",
                         (long long)fl->cfg->probe_interval);
        } else {
            memcpy(fl->ptargets, r->t, r->n * sizeof(r->t[0]));
            fl->nptargets = r->n;
            fl->ptargets_at = fl_now();
        }
        free(r);
        fl_kick(fl);
        return;
    }
    {
        struct fl_msg *m = fl_find(fl, r->qid);
        fl->nconn[FL_BOUNCE]--; /* the slot fl_kick reserved for this lookup */
        if (m != NULL) {
            if (r->n == 0)
                fl_bounce_unroutable(fl, m, r->err);
            else
                fl_conn_open(fl, FL_BOUNCE, m, r->t, r->n, 0);
        }
    }
    free(r);
    fl_kick(fl);
}

static void
fl_resolve_start(struct flusher *fl, enum fl_route route, struct fl_msg *m, const char *domain)
{
    struct fl_resolve *r = xcalloc(1, sizeof(*r));

    r->fl = fl;
    r->route = route;
    r->work.data = r;
    if (route == FL_PRIMARY) {
        for (size_t i = 0; i < fl->cfg->primary_count && i < FL_MAX_TARGETS; i++)
            r->entries[r->nentries++] = fl->cfg->primary[i];
        fl->presolving = 1;
    } else {
        snprintf(r->qid, sizeof(r->qid), "%s", m->qid);
        if (fl->cfg->has_bounce_relay)
            r->entries[r->nentries++] = fl->cfg->bounce_relay;
        else
            snprintf(r->domain, sizeof(r->domain), "%s", domain);
    }
    if (uv_queue_work(fl->loop, &r->work, fl_resolve_work, fl_resolve_done) != 0) {
        fl->presolving = 0;
        free(r);
        return;
    }
    fl->pending_work++;
}

/* ---- operator actions ---- */

static void
fl_op_done(struct writer_job *job)
{
    struct fl_op *o = job->data;
    struct flusher *fl = o->fl;
    struct fl_msg *m = fl_find(fl, o->op.qid);
    int rc = job->result != 0 ? job->result : o->op.result;

    fl->pending_work--;
    if (m != NULL && m->opbusy > 0)
        m->opbusy--;
    if (rc == 0 && m != NULL && !m->active) {
        switch (o->op.kind) {
        case SPOOL_OP_DELETE:
            log_info("%s: removed (deleted by the operator)", m->qid);
            fl_forget(fl, m);
            m = NULL;
            break;
        case SPOOL_OP_HOLD:
            if (!m->hold) {
                m->hold = 1;
                fl->held++;
                fl_round_leave(fl, m);
            }
            fl_heap_remove(&fl->heap[m->route], m);
            log_info("%s: held by the operator", m->qid);
            break;
        case SPOOL_OP_RELEASE:
            if (m->hold) {
                m->hold = 0;
                fl->held--;
            }
            fl_schedule(fl, m, 0);
            log_info("%s: released by the operator", m->qid);
            break;
        default:
            break;
        }
    }
    if (m != NULL && !m->active && !m->hold &&
        m->opbusy == 0 && m->heap_idx == SIZE_MAX && !fl->stopping)
        fl_schedule(fl, m, m->next_attempt); /* back to the scheduler */
    if (o->cb)
        o->cb(o->arg, rc);
    free(o);
    if (!fl->stopping)
        fl_kick(fl);
}

static void
fl_op_submit(struct flusher *fl, struct fl_op *o)
{
    struct fl_msg *m = fl_find(fl, o->op.qid);

    /* Until the action is written, the scheduler must not start an attempt
     * on the message (a hold would otherwise be answered "held" while a
     * delivery is under way). */
    if (m != NULL) {
        m->opbusy++;
        fl_heap_remove(&fl->heap[m->route], m);
    }
    memset(&o->job, 0, sizeof(o->job));
    o->job.kind = WRITER_UPDATE;
    o->job.ops = &o->op;
    o->job.nops = 1;
    o->job.done = fl_op_done;
    o->job.data = o;
    fl->pending_work++;
    writer_submit(fl->writer, &o->job);
}

/* The attempt on m ended and m still exists: run the actions that waited. */
static void
fl_op_start_waiting(struct flusher *fl, struct fl_msg *m)
{
    struct fl_op *o = m->ops, *next;

    m->ops = NULL;
    for (; o != NULL; o = next) {
        next = o->next;
        fl_op_submit(fl, o);
    }
}

/* m was removed by its own delivery: actions that waited are moot. */
static void
fl_op_flush_all(struct flusher *fl, struct fl_msg *m, int rc)
{
    struct fl_op *o = m->ops, *next;

    m->ops = NULL;
    for (; o != NULL; o = next) {
        next = o->next;
        if (o->cb)
            o->cb(o->arg, o->op.kind == SPOOL_OP_DELETE ? rc : MX2_E_NOT_FOUND);
        free(o);
    }
}

static void
fl_operator(struct flusher *fl, const char *qid, enum spool_op_kind kind, flusher_op_cb cb,
            void *arg)
{
    struct fl_op *o = xcalloc(1, sizeof(*o));
    struct fl_msg *m = fl_find(fl, qid);

    o->fl = fl;
    o->cb = cb;
    o->arg = arg;
    o->op.kind = kind;
    snprintf(o->op.qid, sizeof(o->op.qid), "%s", qid);
    if (m != NULL && m->active) {
        o->next = m->ops;
        m->ops = o;
        return;
    }
    fl_op_submit(fl, o);
}

void
flusher_delete(struct flusher *fl, const char *qid, flusher_op_cb cb, void *arg)
{
    fl_operator(fl, qid, SPOOL_OP_DELETE, cb, arg);
}

void
flusher_hold(struct flusher *fl, const char *qid, flusher_op_cb cb, void *arg)
{
    fl_operator(fl, qid, SPOOL_OP_HOLD, cb, arg);
}

void
flusher_release(struct flusher *fl, const char *qid, flusher_op_cb cb, void *arg)
{
    fl_operator(fl, qid, SPOOL_OP_RELEASE, cb, arg);
}

void
flusher_foreach(struct flusher *fl, void (*cb)(void *arg, const char *qid), void *arg)
{
    for (struct fl_msg *m = fl->ahead; m != NULL; m = m->anext)
        cb(arg, m->qid);
}

/* ---- recording outcomes ---- */

static struct spool_op *
fl_op(struct fl_attempt *a, enum spool_op_kind kind)
{
    struct spool_op *op;

    if (a->nops == a->opcap) {
        a->opcap = a->opcap ? 2 * a->opcap : 8;
        a->ops = xrealloc(a->ops, a->opcap * sizeof(*a->ops));
    }
    op = &a->ops[a->nops++];
    memset(op, 0, sizeof(*op));
    op->kind = kind;
    snprintf(op->qid, sizeof(op->qid), "%s", a->msg->qid);
    return op;
}

static void
fl_attempt_free(struct fl_attempt *a)
{
    spool_body_close(&a->body); /* a no-op on a body never opened */
    envelope_free(&a->env);
    free(a->idx);
    free(a->res);
    free(a->ops);
    free(a->relayed);
    buf_free(&a->dsn);
    free(a);
}

static void
fl_on_updated(struct writer_job *job)
{
    struct fl_attempt *a = job->data;
    struct flusher *fl = a->fl;
    struct fl_msg *m = a->msg;

    fl->pending_work--;
    m->active = 0;
    /* Tallied by fl_attempt_finish, unless a flush round began after the
     * attempt finished but before its record was written: count it now. */
    if (m->in_round)
        fl_round_tally(fl, a);
    fl_round_leave(fl, m);
    if (job->result != 0) {
        /* The record failed (disk trouble): try the message again later;
         * recipients already accepted may be sent twice (at-least-once). */
        log_warn("%s: cannot record delivery state: %s", m->qid, mx2_strerror(job->result));
        if (!fl->stopping)
            fl_schedule(fl, m, fl_now() + fl->cfg->retry_min);
    } else if (a->deleting) {
        log_info("%s: removed", m->qid);
        fl_op_flush_all(fl, m, MX2_OK);
        fl_forget(fl, m);
        m = NULL;
    } else if (!fl->stopping) {
        /* Deferred without trying because the primary was down, and it
         * has come back meanwhile: due now, not at its backoff. */
        fl_schedule(fl, m, a->down_deferral && fl->primary.up ? 0 : a->next_attempt);
    }
    if (m != NULL && m->ops != NULL)
        fl_op_start_waiting(fl, m);
    fl_attempt_free(a);
    if (!fl->stopping)
        fl_kick(fl);
}

static void
fl_submit_update(struct fl_attempt *a)
{
    /* The attempt is over (any DSN is composed): its body view ends now,
     * not when the writer has recorded the outcome. Each open view is an
     * LMDB read transaction, holding a reader slot and pinning old pages;
     * a fast primary and a slow disk leave thousands of attempts waiting
     * for their record, which used to exhaust the slots (every later read
     * failed: "cannot read the queue file"). */
    spool_body_close(&a->body);
    a->m.body = NULL;
    a->m.body_len = 0;
    memset(&a->job, 0, sizeof(a->job));
    a->job.kind = WRITER_UPDATE;
    a->job.ops = a->ops;
    a->job.nops = a->nops;
    a->job.done = fl_on_updated;
    a->job.data = a;
    a->fl->pending_work++;
    writer_submit(a->fl->writer, &a->job);
}

static void
fl_on_dsn_committed(struct writer_job *job)
{
    struct fl_attempt *a = job->data;
    struct flusher *fl = a->fl;

    fl->pending_work--;
    if (job->result != 0) {
        /* Without the DSN durable the original must stay, but what the
         * primary accepted is still recorded (never resent): keep the
         * recipients' outcomes, drop "DSN sent" and the removal, and come
         * back for the notification later. */
        size_t k = 0;
        log_warn("%s: cannot queue the delivery status notification: %s", a->msg->qid,
                 mx2_strerror(job->result));
        free(a->denv.rcpts);
        a->denv.rcpts = NULL;
        for (size_t i = 0; i < a->nops; i++)
            if (a->ops[i].kind == SPOOL_OP_RCPT)
                a->ops[k++] = a->ops[i];
        a->nops = k;
        a->nrelayed = 0;
        a->deleting = 0;
        a->down_deferral = 0;
        a->next_attempt = fl_now() + fl->cfg->retry_min;
        fl_submit_update(a);
        return;
    }
    fl->stats.dsn_sent++;
    log_info("%s: sender %s notification: %s", a->msg->qid,
             a->dsn_kind == BOUNCE_FAILED    ? "non-delivery"
             : a->dsn_kind == BOUNCE_DELAYED ? "delay"
                                             : "delivery status",
             job->msg.qid);
    fl_add(fl, job->msg.qid, &a->denv);
    free(a->denv.rcpts);
    a->denv.rcpts = NULL;
    if (a->nrelayed > 0) {
        size_t n = a->nrelayed;
        a->nrelayed = 0;
        if (fl_queue_dsn(a, a->relayed, n, BOUNCE_RELAYED) == 0)
            return; /* the update follows this one's commit */
    }
    fl_submit_update(a);
}

/* Queue one DSN for the bounced recipients in `which` (indices into env). */
static int
fl_queue_dsn(struct fl_attempt *a, const size_t *which, size_t nwhich, enum bounce_kind kind)
{
    struct flusher *fl = a->fl;
    const struct envelope *env = &a->env;
    struct bounce_info info;
    struct bounce_rcpt *br = xcalloc(nwhich, sizeof(*br));
    char (*status)[12] = xcalloc(nwhich, sizeof(*status));
    struct timespec ts;
    int rc;

    memset(&info, 0, sizeof(info));
    info.kind = kind;
    info.hostname = fl->cfg->hostname;
    info.qid = a->msg->qid;
    info.sender = env->sender;
    info.envid = env->envid;
    info.ret = env->ret;
    info.arrival = env->arrival_sec;
    info.now = fl_now();
    info.full_limit = FL_DSN_FULL_LIMIT;
    info.retry_until = kind == BOUNCE_DELAYED ? sched_expire_time(fl->cfg, env->arrival_sec) : 0;
    for (size_t i = 0; i < nwhich; i++) {
        const struct envelope_rcpt *r = &env->rcpts[which[i]];
        const char *err = r->last_error ? r->last_error : "";
        int code = 0;
        char ecode[12] = "";
        /* The stored error reads "550 5.1.1 text": the reply code, then the
         * enhanced code if there is one. */
        if (err[0] >= '2' && err[0] <= '5' && err[1] >= '0' && err[1] <= '9' && err[2] >= '0' &&
            err[2] <= '9' && (err[3] == ' ' || err[3] == '\0')) {
            code = (err[0] - '0') * 100 + (err[1] - '0') * 10 + (err[2] - '0');
            if (err[3] == ' ' && sscanf(err + 4, "%11[0-9.]", ecode) != 1)
                ecode[0] = '\0';
        }
        if (r->state == ENVELOPE_RCPT_BOUNCED && code / 100 != 5)
            snprintf(status[i], sizeof(status[i]), "%s", "4.4.7");
        else
            bounce_status_from_reply(code, ecode, status[i], sizeof(status[i]));
        br[i].address = r->address;
        br[i].orcpt = r->orcpt;
        br[i].status = status[i];
        br[i].diagnostic = err[0] ? err : NULL;
        br[i].remote_mta = a->remote_host[0] ? a->remote_host : NULL;
        br[i].last_attempt = r->last_attempt;
    }
    a->dsn_kind = kind;
    buf_reset(&a->dsn);
    rc = bounce_compose(&info, br, nwhich, a->body.data, a->body.len, &a->dsn);
    free(br);
    free(status);
    if (rc != 0)
        return rc;
    memset(&a->denv, 0, sizeof(a->denv));
    memset(&a->drcpt, 0, sizeof(a->drcpt));
    clock_gettime(CLOCK_REALTIME, &ts);
    a->denv.arrival_sec = ts.tv_sec;
    a->denv.arrival_usec = (uint32_t)(ts.tv_nsec / 1000);
    a->denv.sender = "";
    a->denv.client_addr = "127.0.0.1";
    a->denv.client_name = "localhost";
    a->denv.helo = fl->cfg->hostname;
    a->denv.proto = ENVELOPE_PROTO_ESMTP;
    a->denv.tls_cipher = "";
    a->denv.envid = "";
    a->drcpt.address = (char *)env->sender;
    a->drcpt.orcpt = "";
    a->drcpt.last_error = "";
    a->denv.rcpts = xcalloc(1, sizeof(a->drcpt));
    a->denv.rcpts[0] = a->drcpt;
    a->denv.nrcpt = 1;
    memset(&a->djob, 0, sizeof(a->djob));
    a->djob.kind = WRITER_COMMIT;
    a->djob.msg.env = &a->denv;
    a->djob.msg.body = buf_head(&a->dsn);
    a->djob.msg.body_len = buf_avail(&a->dsn);
    a->djob.msg.body_fd = -1;
    a->djob.done = fl_on_dsn_committed;
    a->djob.data = a;
    fl->pending_work++;
    writer_submit(fl->writer, &a->djob);
    return 0;
}

static const char *
fl_state_word(int code)
{
    return code / 100 == 2 ? "sent" : code / 100 == 5 ? "bounced" : "deferred";
}

static void
fl_log_rcpt(struct fl_attempt *a, const struct envelope_rcpt *r, const char *status,
            const char *dsn, const char *text)
{
    int64_t now = fl_now();

    /* Exactly SPEC's shape: no delays=, orig_to= or conn_use=, which a
     * pattern copied from SPEC would not expect. */
    log_info("%s: to=<%s>, relay=%s, delay=%lld, dsn=%s, status=%s (%s)", a->msg->qid,
             r->address, a->relay[0] ? a->relay : "none", (long long)(now - a->env.arrival_sec),
             dsn, status, text);
}

/* Record the outcome of an attempt (n results; n may be 0 when the message
 * is only being expired). why: connection-level failure, or NULL. */
static void
fl_attempt_finish(struct fl_attempt *a, const struct smtpc_result *why)
{
    struct flusher *fl = a->fl;
    struct envelope *env = &a->env;
    int64_t now = fl_now();
    size_t pending = 0, *bounced = xcalloc(env->nrcpt ? env->nrcpt : 1, sizeof(size_t));
    size_t nb = 0;
    int expired;

    /* The ops below point at result texts the writer reads later: they must
     * live in the attempt, not in the caller's `why`. */
    if (why != NULL) {
        for (size_t i = 0; i < a->n; i++)
            a->res[i] = *why;
        why = NULL;
    }

    for (size_t i = 0; i < a->n; i++) {
        struct envelope_rcpt *r = &env->rcpts[a->idx[i]];
        const struct smtpc_result *res = why != NULL ? why : &a->res[i];
        char dsn[12];
        struct spool_op *op;
        int code = res->code;

        bounce_status_from_reply(code ? code : 451, res->ecode[0] ? res->ecode : "4.4.1", dsn,
                                 sizeof(dsn));
        op = fl_op(a, SPOOL_OP_RCPT);
        op->rcpt = a->idx[i];
        op->attempts = r->attempts + 1;
        op->when = now;
        op->error = res->text;
        r->last_attempt = now;
        envelope_set_error(r, res->text, strlen(res->text));
        if (code / 100 == 2) {
            op->state = r->state = ENVELOPE_RCPT_DONE;
            fl->stats.delivered++;
        } else if (code / 100 == 5) {
            op->state = r->state = ENVELOPE_RCPT_BOUNCED;
            fl->stats.bounced++;
        } else {
            op->state = r->state = ENVELOPE_RCPT_DEFERRED;
            fl->stats.deferred++;
        }
        fl_log_rcpt(a, r, code / 100 == 2 ? "sent" : fl_state_word(code ? code : 451), dsn,
                    res->text);
    }
    /* RFC 3461 6.2.2: NOTIFY=SUCCESS, and the primary cannot carry it on. */
    if (a->msg->route == FL_PRIMARY && !a->primary_dsn && env->sender[0] != '\0')
        for (size_t i = 0; i < a->n; i++) {
            const struct envelope_rcpt *r = &env->rcpts[a->idx[i]];
            if (r->state == ENVELOPE_RCPT_DONE && bounce_notify_wanted(r->notify, BOUNCE_RELAYED)) {
                if (a->relayed == NULL)
                    a->relayed = xcalloc(a->n, sizeof(*a->relayed));
                a->relayed[a->nrelayed++] = a->idx[i];
            }
        }
    expired = sched_expired(fl->cfg, env->arrival_sec, now);
    for (size_t i = 0; i < env->nrcpt; i++) {
        struct envelope_rcpt *r = &env->rcpts[i];
        if (r->state == ENVELOPE_RCPT_PENDING || r->state == ENVELOPE_RCPT_DEFERRED) {
            if (!expired) {
                pending++;
                continue;
            }
            /* Pending past queue_lifetime: bounce (SPEC: five days by default). */
            struct spool_op *op = fl_op(a, SPOOL_OP_RCPT);
            char text[600];
            snprintf(text, sizeof(text), "delivery time expired%s%s",
                     r->last_error && r->last_error[0] ? "; last error: " : "",
                     r->last_error ? r->last_error : "");
            op->rcpt = i;
            op->state = r->state = ENVELOPE_RCPT_BOUNCED;
            op->attempts = r->attempts;
            op->when = r->last_attempt;
            envelope_set_error(r, text, strlen(text));
            op->error = r->last_error;
            fl->stats.expired++;
            fl->stats.bounced++;
            /* SPEC's statuses are sent|deferred|bounced; the text says why
             * (Postfix would write status=expired, returned to sender). */
            fl_log_rcpt(a, r, "bounced", "4.4.7", text);
        }
        if (r->state == ENVELOPE_RCPT_BOUNCED && !(r->flags & ENVELOPE_RF_DSN_SENT))
            bounced[nb++] = i;
    }
    for (size_t i = 0; i < a->n; i++) {
        enum envelope_rcpt_state st = env->rcpts[a->idx[i]].state;
        if (st == ENVELOPE_RCPT_DONE)
            a->t_delivered++;
        else if (st == ENVELOPE_RCPT_BOUNCED)
            a->t_bounced++;
        else
            a->t_deferred++;
    }
    if (a->msg->in_round)
        fl_round_tally(fl, a);
    a->msg->npending = (uint32_t)pending;
    if (pending > 0) {
        struct spool_op *op = fl_op(a, SPOOL_OP_SCHEDULE);
        uint32_t attempts = env->attempts + 1;
        op->attempts = attempts;
        op->first_failure = env->first_failure ? env->first_failure : now;
        a->next_attempt = sched_next_attempt(fl->cfg, now, attempts, fl->seed++);
        op->next_attempt = a->next_attempt;
    }
    if (nb > 0) {
        struct spool_op *op = fl_op(a, SPOOL_OP_DSN_SENT);
        op->rcpt = SPOOL_RCPT_ALL;
    }
    if (pending == 0) {
        fl_op(a, SPOOL_OP_DELETE);
        a->deleting = 1;
    }
    if (nb > 0) {
        /* Which of the bounced recipients asked for (or default to) a DSN. */
        size_t nw = 0;
        for (size_t i = 0; i < nb; i++)
            if (bounce_notify_wanted(env->rcpts[bounced[i]].notify, BOUNCE_FAILED))
                bounced[nw++] = bounced[i];
        if (a->msg->route == FL_BOUNCE || env->sender[0] == '\0') {
            /* Never bounce a bounce (RFC 5321 6.1 / 3464): drop, with a log line. */
            log_info("%s: sender is <>, no notification for %zu failed recipient(s): dropped",
                     a->msg->qid, nb);
        } else if (nw > 0 && fl_queue_dsn(a, bounced, nw, BOUNCE_FAILED) == 0) {
            free(bounced);
            return; /* the update follows the DSN's commit */
        }
    } else if (pending > 0 && a->msg->route == FL_PRIMARY && env->sender[0] != '\0' &&
               sched_delay_warning_due(fl->cfg, env->arrival_sec, now,
                                       (env->flags & ENVELOPE_F_WARNED) != 0)) {
        /* delay_warning: tell the sender once that the message is still
         * waiting (RFC 3464 Action: delayed), for the recipients whose
         * NOTIFY asks for it (none given = FAILURE,DELAY). */
        size_t nw = 0;
        fl_op(a, SPOOL_OP_WARNED);
        for (size_t i = 0; i < env->nrcpt; i++) {
            const struct envelope_rcpt *r = &env->rcpts[i];
            if ((r->state == ENVELOPE_RCPT_PENDING || r->state == ENVELOPE_RCPT_DEFERRED) &&
                bounce_notify_wanted(r->notify, BOUNCE_DELAYED))
                bounced[nw++] = i;
        }
        if (nw > 0 && fl_queue_dsn(a, bounced, nw, BOUNCE_DELAYED) == 0) {
            free(bounced);
            return;
        }
    }
    free(bounced);
    if (a->nrelayed > 0) {
        size_t n = a->nrelayed;
        a->nrelayed = 0;
        if (fl_queue_dsn(a, a->relayed, n, BOUNCE_RELAYED) == 0)
            return;
    }
    fl_submit_update(a);
}

static struct fl_attempt *
fl_attempt_new(struct flusher *fl, struct fl_msg *m)
{
    struct fl_attempt *a = xcalloc(1, sizeof(*a));
    int rc;

    a->fl = fl;
    a->msg = m;
    a->started = fl_now();
    rc = spool_get(fl->spool, m->qid, &a->env);
    if (rc != 0) {
        log_warn("%s: cannot read the queue file: %s; leaving it for the operator", m->qid,
                 mx2_strerror(rc));
        free(a);
        return NULL;
    }
    rc = spool_body_open(fl->spool, m->qid, &a->body);
    if (rc != 0) {
        log_warn("%s: cannot read the message: %s; leaving it for the operator", m->qid,
                 mx2_strerror(rc));
        envelope_free(&a->env);
        free(a);
        return NULL;
    }
    a->idx = xcalloc(a->env.nrcpt, sizeof(*a->idx));
    a->res = xcalloc(a->env.nrcpt, sizeof(*a->res));
    for (size_t i = 0; i < a->env.nrcpt; i++) {
        enum envelope_rcpt_state st = a->env.rcpts[i].state;
        if (st == ENVELOPE_RCPT_PENDING || st == ENVELOPE_RCPT_DEFERRED)
            a->idx[a->n++] = i;
    }
    m->active = 1;
    fl_heap_remove(&fl->heap[m->route], m);
    return a;
}

/* A message that cannot be attempted now but may need expiring. */
static void
fl_expire(struct flusher *fl, struct fl_msg *m)
{
    struct fl_attempt *a = fl_attempt_new(fl, m);

    if (a == NULL) {
        fl_schedule(fl, m, fl_now() + fl->cfg->retry_max);
        return;
    }
    a->n = 0; /* nothing attempted: only the expiry */
    fl_attempt_finish(a, NULL);
}

static void
fl_bounce_unroutable(struct flusher *fl, struct fl_msg *m, int err)
{
    if (err == MX2_E_NOT_FOUND || err == DNS_E_NULL_MX) {
        /* A DSN that can never be delivered: drop it (no bounce of a bounce). */
        struct fl_attempt *a = fl_attempt_new(fl, m);
        struct smtpc_result why;
        if (a == NULL)
            return;
        memset(&why, 0, sizeof(why));
        why.code = 550;
        snprintf(why.ecode, sizeof(why.ecode), "5.1.2");
        snprintf(why.text, sizeof(why.text), "550 5.1.2 %s", dns_strerror(err));
        fl_attempt_finish(a, &why);
        return;
    }
    log_info("%s: bounce destination temporarily unresolvable: %s", m->qid, dns_strerror(err));
    /* A deferral like any other: recorded (attempts, last error for
     * `mx2ctl queue`), retried with the usual backoff, expired in time. */
    struct fl_attempt *a = fl_attempt_new(fl, m);
    struct smtpc_result why;
    if (a == NULL) {
        fl_schedule(fl, m, fl_now() + fl->cfg->retry_max);
        return;
    }
    memset(&why, 0, sizeof(why));
    snprintf(why.ecode, sizeof(why.ecode), "4.4.3");
    snprintf(why.text, sizeof(why.text), "bounce destination temporarily unresolvable: %s",
             dns_strerror(err));
    fl_attempt_finish(a, &why);
}

/* ---- connections ---- */

static void fl_on_ready(struct smtpc *c);
static void fl_on_done(struct smtpc *c, struct smtpc_msg *msg);
static void fl_on_fail(struct smtpc *c, struct smtpc_msg *msg, const struct smtpc_result *why);
static void fl_on_close(struct smtpc *c);

static struct smtpc_msg *fl_on_next(struct smtpc *c);
static void fl_on_abandon(struct smtpc *c, struct smtpc_msg *msg, const struct smtpc_result *why);

static const struct smtpc_ops fl_smtpc_ops = {
    .on_ready = fl_on_ready,
    .on_done = fl_on_done,
    .on_fail = fl_on_fail,
    .on_close = fl_on_close,
    .on_next = fl_on_next,
    .on_abandon = fl_on_abandon,
};

static void
fl_conn_connect(struct fl_conn *fc)
{
    struct flusher *fl = fc->fl;
    struct smtpc_auth auth = {0};
    struct tls_ctx *tls = fc->route == FL_PRIMARY ? fl->tls : fl->tls_bounce;
    enum mx2_tls_mode mode = fc->route == FL_PRIMARY ? fl->cfg->primary_tls : MX2_TLS_MAY;

    if (fc->route == FL_PRIMARY && fl->cfg->primary_auth_user[0] != '\0') {
        auth.user = fl->cfg->primary_auth_user;
        auth.password = fl->auth_password ? fl->auth_password : "";
    }
    fc->opened = fl_now();
    smtpc_connect(&fc->c, fl->loop, fl->cfg, &fc->targets[fc->ti], tls, mode, &auth,
                  &fl_smtpc_ops, fc);
}

static void
fl_conn_open(struct flusher *fl, enum fl_route route, struct fl_msg *bmsg,
             const struct smtpc_target *t, size_t nt, int probe)
{
    struct fl_conn *fc = xcalloc(1, sizeof(*fc));

    fc->fl = fl;
    fc->route = route;
    fc->bmsg = bmsg;
    fc->probe = probe;
    fc->ntargets = nt < FL_MAX_TARGETS ? nt : FL_MAX_TARGETS;
    memcpy(fc->targets, t, fc->ntargets * sizeof(*t));
    fc->next = fl->conns;
    if (fl->conns)
        fl->conns->prev = fc;
    fl->conns = fc;
    fl->nconn[route]++;
    if (probe)
        fl->nprobe++;
    fl_conn_connect(fc);
}

static void
fl_set_primary(struct flusher *fl, int up)
{
    int64_t now = fl_now();

    if (up) {
        if (sched_primary_ok(&fl->primary, now)) {
            size_t n = fl->heap[FL_PRIMARY].n;
            log_info("primary is UP again: delivering the queue (%zu messages)", n);
            /* Everything deferred becomes due now, oldest first. */
            fl_heap_all_due(&fl->heap[FL_PRIMARY]);
        }
        if (fl->state_cb && fl->reported != 1) {
            fl->reported = 1;
            fl->state_cb(fl->state_arg, 1);
        }
    } else {
        if (sched_primary_failed(&fl->primary, fl->cfg, now)) {
            log_warn("primary is DOWN: holding the queue, probing every %llds",
                     (long long)fl->cfg->probe_interval);
        }
        if (fl->state_cb && fl->reported != 0) {
            fl->reported = 0;
            fl->state_cb(fl->state_arg, 0);
        }
        /* A flush round cannot finish against a dead primary: what is left
         * of it counts as deferred. */
        if (fl->round_active) {
            uint64_t left = 0;
            uint64_t rcpts = 0;
            for (struct fl_msg *m = fl->ahead; m != NULL; m = m->anext)
                if (m->in_round && !m->active && m->route == FL_PRIMARY) {
                    left++;
                    rcpts += m->npending;
                }
            if (left == fl->round_waiting) {
                fl->round_deferred += rcpts;
                fl_round_end(fl);
            }
        }
    }
}

/* Read the message and set up an attempt of it on fc; NULL when it needs
 * no network (finished or rescheduled here). */
static struct fl_attempt *
fl_prepare_attempt(struct fl_conn *fc, struct fl_msg *m)
{
    struct flusher *fl = fc->fl;
    struct fl_attempt *a = fl_attempt_new(fl, m);

    if (a == NULL) {
        fl_schedule(fl, m, fl_now() + fl->cfg->retry_max);
        return NULL;
    }
    smtpc_relay_name(&fc->c, a->relay, sizeof(a->relay));
    snprintf(a->remote_host, sizeof(a->remote_host), "%s", fc->c.target.host);
    if (a->n == 0 || sched_expired(fl->cfg, a->env.arrival_sec, fl_now())) {
        /* Nothing to send, or too old to try: finish records the expiry. */
        a->n = 0;
        fl_attempt_finish(a, NULL);
        return NULL;
    }
    if ((a->env.flags & ENVELOPE_F_SMTPUTF8) && !fc->c.ehlo.smtputf8) {
        /* RFC 6531 3.4: an SMTPUTF8 message to a server without it fails. */
        for (size_t i = 0; i < a->n; i++) {
            a->res[i].code = 550;
            snprintf(a->res[i].ecode, sizeof(a->res[i].ecode), "5.6.7");
            snprintf(a->res[i].text, sizeof(a->res[i].text),
                     "550 5.6.7 SMTPUTF8 is required, but was not offered by host %s",
                     fc->c.target.host);
        }
        fl_attempt_finish(a, NULL);
        return NULL;
    }
    a->primary_dsn = fc->c.ehlo.dsn;
    a->m.env = &a->env;
    a->m.body = a->body.data;
    a->m.body_len = a->body.len;
    a->m.idx = a->idx;
    a->m.n = a->n;
    a->m.res = a->res;
    a->m.data = a;
    return a;
}

/* Start the next attempt on an idle connection. */
static void
fl_start_attempt(struct fl_conn *fc, struct fl_msg *m)
{
    struct fl_attempt *a = fl_prepare_attempt(fc, m);

    if (a == NULL)
        return;
    fc->cur = a;
    smtpc_send(&fc->c, &a->m);
}

static struct fl_msg *
fl_next_due(struct flusher *fl, enum fl_route route, int64_t now)
{
    struct fl_heap *h = &fl->heap[route];

    if (h->n == 0 || h->v[0]->next_attempt > now)
        return NULL;
    return h->v[0];
}

static void
fl_on_ready(struct smtpc *c)
{
    struct fl_conn *fc = c->data;
    struct flusher *fl = fc->fl;
    struct fl_msg *m;

    fc->reached = 1;
    if (fc->route == FL_PRIMARY)
        fl_set_primary(fl, 1);
    if (fc->probe) {
        fc->probe = 0;
        fl->nprobe--;
    }
    if (fl->stopping) {
        smtpc_quit(c);
        return;
    }
    if (fc->route == FL_BOUNCE) {
        m = fc->bmsg;
        fc->bmsg = NULL;
        if (m == NULL || !fl_find(fl, m->qid)) {
            smtpc_quit(c);
            return;
        }
        m->active = 0;
        fl_start_attempt(fc, m);
        return;
    }
    m = fl_next_due(fl, FL_PRIMARY, fl_now());
    if (m == NULL)
        return; /* stays idle until the idle timeout or the next kick */
    fl_start_attempt(fc, m);
}

/* A message behind the current one on the same connection: what the idle
 * path would pick next (fl_on_ready). Primary route only; never while
 * stopping (so no new transaction outlives the shutdown's drain). */
static struct smtpc_msg *
fl_on_next(struct smtpc *c)
{
    struct fl_conn *fc = c->data;
    struct flusher *fl = fc->fl;
    struct fl_msg *m;

    if (fc->route != FL_PRIMARY || fl->stopping || fc->pnext != NULL)
        return NULL;
    while ((m = fl_next_due(fl, FL_PRIMARY, fl_now())) != NULL) {
        struct fl_attempt *a = fl_prepare_attempt(fc, m);
        if (a != NULL) {
            fc->pnext = a;
            return &a->m;
        }
    }
    return NULL;
}

/* The connection failed after a message was pipelined but before any reply
 * to it could count: nothing of it was delivered, defer it like the
 * message in progress (fl_on_fail). */
static void
fl_on_abandon(struct smtpc *c, struct smtpc_msg *msg, const struct smtpc_result *why)
{
    struct fl_conn *fc = c->data;
    struct fl_attempt *a = msg->data;
    struct smtpc_result d = *why;

    fc->pnext = NULL;
    if (d.code / 100 != 4)
        d.code = 0;
    for (size_t i = 0; i < a->n; i++)
        a->res[i] = d;
    fl_attempt_finish(a, NULL);
}

static void
fl_on_done(struct smtpc *c, struct smtpc_msg *msg)
{
    struct fl_conn *fc = c->data;
    struct fl_attempt *a = msg->data;

    /* A pipelined next message is now the one in progress. */
    fc->cur = fc->pnext;
    fc->pnext = NULL;
    fl_attempt_finish(a, NULL);
    if (fc->route == FL_BOUNCE)
        smtpc_quit(c); /* one message per bounce connection */
}

static void
fl_on_fail(struct smtpc *c, struct smtpc_msg *msg, const struct smtpc_result *why)
{
    struct fl_conn *fc = c->data;
    struct flusher *fl = fc->fl;

    fc->cur = NULL;
    if (msg != NULL) {
        /* The transaction never completed: whatever the RCPT replies were,
         * nothing was delivered; every recipient tried is deferred with
         * the connection's failure (a 5xx greeting included). */
        struct fl_attempt *a = msg->data;
        struct smtpc_result d = *why;
        if (d.code / 100 != 4)
            d.code = 0;
        for (size_t i = 0; i < a->n; i++)
            a->res[i] = d;
        fl_attempt_finish(a, NULL);
    }
    if (fl->stopping)
        return;
    log_info("%s", why->text);
    if (fc->route == FL_PRIMARY && !fc->reached) {
        fl->down_why = *why;
        if (fl->down_why.code / 100 != 4)
            fl->down_why.code = 0;
    }
    if (!fc->reached && fc->ti + 1 < fc->ntargets) {
        fc->ti++; /* on_close connects to the next address */
        return;
    }
    fc->ti = fc->ntargets; /* no more */
    /* Only a primary we could not even talk to is down; a transaction
     * that failed half-way defers that message, not the whole queue. */
    if (fc->route == FL_PRIMARY && !fc->reached)
        fl_set_primary(fl, 0);
    else if (fc->bmsg != NULL) {
        struct fl_msg *m = fc->bmsg;
        fc->bmsg = NULL;
        m->active = 0;
        fl_schedule(fl, m, sched_next_attempt(fl->cfg, fl_now(), 1, fl->seed++));
        if (m->ops != NULL)
            fl_op_start_waiting(fl, m);
    }
}

static void
fl_on_close(struct smtpc *c)
{
    struct fl_conn *fc = c->data;
    struct flusher *fl = fc->fl;

    if (!fl->stopping && !fc->reached && fc->ti < fc->ntargets) {
        /* Try the next address of the same route (smtpc_connect re-inits). */
        fl_conn_connect(fc);
        return;
    }
    if (fc->probe)
        fl->nprobe--;
    fl->nconn[fc->route]--;
    if (fc->prev)
        fc->prev->next = fc->next;
    else
        fl->conns = fc->next;
    if (fc->next)
        fc->next->prev = fc->prev;
    if (fc->bmsg != NULL) {
        fc->bmsg->active = 0;
        if (!fl->stopping) {
            fl_schedule(fl, fc->bmsg, fl_now() + fl->cfg->retry_min);
            if (fc->bmsg->ops != NULL)
                fl_op_start_waiting(fl, fc->bmsg);
        }
    }
    free(fc);
    if (!fl->stopping)
        fl_kick(fl);
}

/* ---- the scheduler ---- */

static void
fl_kick(struct flusher *fl)
{
    int64_t now = fl_now();
    struct fl_msg *m;

    if (fl->stopping)
        return;
    /* Expiry runs even while the primary is down: walk from the oldest. */
    for (m = fl->ahead; m != NULL && sched_expired(fl->cfg, m->arrival, now);) {
        struct fl_msg *next = m->anext;
        if (!m->active && !m->hold && m->opbusy == 0 && m->route == FL_PRIMARY &&
            !fl->primary.up)
            fl_expire(fl, m);
        m = next;
    }
    /* While the primary is down, a message that comes due is deferred
     * with the primary's failure, without touching the network (Postfix:
     * "delivery temporarily suspended"): its recipients show why in
     * `mx2ctl queue`, and it follows its own backoff until a probe
     * succeeds and makes everything due at once. */
    if (!fl->primary.up && fl->down_why.text[0] != '\0' && fl->nprobe == 0 &&
        !sched_probe_due(&fl->primary, now)) {
        /* (Not while a probe is due or under way: a flush or ETRN asks for
         * exactly that probe, and its messages must wait for its answer.) */
        for (int budget = 256; budget > 0 && (m = fl_next_due(fl, FL_PRIMARY, now)) != NULL;
             budget--) {
            struct fl_attempt *a = fl_attempt_new(fl, m);
            if (a == NULL) {
                fl_schedule(fl, m, now + fl->cfg->retry_max);
                continue;
            }
            a->down_deferral = 1;
            snprintf(a->relay, sizeof(a->relay), "none");
            fl_attempt_finish(a, &fl->down_why);
        }
    }
    /* Primary route. */
    if (fl->cfg->primary_count > 0) {
        int need = fl_next_due(fl, FL_PRIMARY, now) != NULL;
        int stale = fl->ptargets_at == 0 || now - fl->ptargets_at > FL_RESOLVE_TTL;
        int probe = (!fl->primary.up && sched_probe_due(&fl->primary, now)) ||
                    (fl->cfg->defer_when_primary_up && fl->primary.up && !need &&
                     now >= fl->primary.next_probe);
        if ((need || probe) && stale && !fl->presolving) {
            fl_resolve_start(fl, FL_PRIMARY, NULL, NULL);
        } else if (fl->nptargets > 0 && !fl->presolving) {
            if (!fl->primary.up) {
                if (probe && fl->nprobe == 0) {
                    fl->primary.next_probe = now + fl->cfg->probe_interval;
                    fl_conn_open(fl, FL_PRIMARY, NULL, fl->ptargets, fl->nptargets, 1);
                }
            } else {
                if (probe && fl->nprobe == 0 && fl->nconn[FL_PRIMARY] == 0) {
                    fl->primary.next_probe = now + fl->cfg->probe_interval;
                    fl_conn_open(fl, FL_PRIMARY, NULL, fl->ptargets, fl->nptargets, 1);
                }
                /* Idle connections take work first, then open new ones. */
                for (struct fl_conn *fc = fl->conns; fc != NULL; fc = fc->next) {
                    if (fc->route != FL_PRIMARY || fc->cur != NULL || fc->c.state != SMTPC_S_READY ||
                        fc->c.conn.closing)
                        continue;
                    if ((m = fl_next_due(fl, FL_PRIMARY, now)) == NULL)
                        break;
                    fl_start_attempt(fc, m);
                }
                unsigned connecting = 0;
                for (struct fl_conn *fc = fl->conns; fc != NULL; fc = fc->next)
                    if (fc->route == FL_PRIMARY && fc->c.state < SMTPC_S_READY)
                        connecting++;
                size_t due = 0;
                for (size_t i = 0; i < fl->heap[FL_PRIMARY].n && due <= (size_t)fl->cfg->primary_concurrency; i++)
                    if (fl->heap[FL_PRIMARY].v[i]->next_attempt <= now)
                        due++;
                while (due > connecting && fl->nconn[FL_PRIMARY] < (unsigned)fl->cfg->primary_concurrency) {
                    fl_conn_open(fl, FL_PRIMARY, NULL, fl->ptargets, fl->nptargets, 0);
                    connecting++;
                }
            }
        }
    }
    /* Our own DSNs: one connection each, a few at a time. */
    while (fl->nconn[FL_BOUNCE] < FL_BOUNCE_CONCURRENCY &&
           (m = fl_next_due(fl, FL_BOUNCE, now)) != NULL) {
        const char *at;
        struct envelope env;
        if (sched_expired(fl->cfg, m->arrival, now)) {
            fl_expire(fl, m);
            continue;
        }
        if (spool_get(fl->spool, m->qid, &env) != 0) {
            fl_schedule(fl, m, now + fl->cfg->retry_max);
            continue;
        }
        at = strrchr(env.rcpts[0].address, '@');
        fl_heap_remove(&fl->heap[FL_BOUNCE], m);
        m->active = 1;
        fl->nconn[FL_BOUNCE]++; /* reserved until the resolver answers */
        fl_resolve_start(fl, FL_BOUNCE, m, at ? at + 1 : "");
        envelope_free(&env);
    }
}

/* ---- life cycle ---- */

static void
fl_on_tick(uv_timer_t *t)
{
    fl_kick(t->data);
}

struct fl_walk {
    struct flusher *fl;
    uint64_t corrupt;
};

static int
fl_walk_cb(void *arg, const char *qid, struct envelope *env, int err)
{
    struct fl_walk *w = arg;

    if (env == NULL) {
        log_warn("%s: corrupt queue record (%s): left in place, not delivered", qid,
                 mx2_strerror(err));
        w->corrupt++;
        return 0;
    }
    fl_add(w->fl, qid, env);
    return 0;
}

static char *
fl_read_password(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];

    if (f == NULL)
        return NULL;
    if (fgets(line, sizeof(line), f) == NULL)
        line[0] = '\0';
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    return xstrdup(line);
}

int
flusher_start(uv_loop_t *loop, const struct mx2_config *cfg, struct spool *spool,
              struct writer *writer, struct flusher **out)
{
    struct flusher *fl = xcalloc(1, sizeof(*fl));
    struct fl_walk w = {fl, 0};
    char why[256];
    int rc;

    fl->loop = loop;
    fl->cfg = cfg;
    fl->spool = spool;
    fl->writer = writer;
    fl->nbuckets = 1024;
    fl->buckets = xcalloc(fl->nbuckets, sizeof(*fl->buckets));
    fl->seed = (uint32_t)time(NULL) ^ (uint32_t)getpid();
    sched_primary_init(&fl->primary);
    fl->reported = -1;
    if (cfg->primary_tls != MX2_TLS_NONE &&
        tls_ctx_client_new(cfg->primary_tls, cfg->primary_tls_ca, &fl->tls, why, sizeof(why)) != 0) {
        log_err("primary_tls: %s", why);
        free(fl->buckets);
        free(fl);
        return MX2_E_CONFIG;
    }
    if (tls_ctx_client_new(MX2_TLS_MAY, NULL, &fl->tls_bounce, why, sizeof(why)) != 0)
        fl->tls_bounce = NULL;
    if (cfg->primary_auth_user[0] != '\0') {
        fl->auth_password = fl_read_password(cfg->primary_auth_password_file);
        if (fl->auth_password == NULL)
            log_warn("primary_auth: cannot read %s", cfg->primary_auth_password_file);
    }
    rc = spool_walk(spool, fl_walk_cb, &w);
    if (rc != 0 && rc != MX2_E_CORRUPT)
        log_warn("queue walk: %s", mx2_strerror(rc));
    log_info("flusher: %zu messages queued%s", fl->nmsgs, w.corrupt ? " (and corrupt records)" : "");
    /* Messages deferred before a restart would otherwise wait out their
     * backoff even if the primary came back meanwhile: treat the primary as
     * unknown-down and probe it at once; a probe that gets through makes
     * the whole queue due (the same path as a primary coming back). */
    {
        int64_t now = (int64_t)time(NULL);
        for (struct fl_msg *m = fl->ahead; m != NULL; m = m->anext)
            if (m->route == FL_PRIMARY && !m->hold && m->next_attempt > now) {
                fl->primary.up = 0;
                fl->primary.next_probe = 0;
                log_info("flusher: deferred mail in the queue: probing the primary now");
                break;
            }
    }
    uv_timer_init(loop, &fl->tick);
    fl->tick.data = fl;
    uv_timer_start(&fl->tick, fl_on_tick, 0, FL_TICK_MS);
    *out = fl;
    return 0;
}

void
flusher_enqueue(struct flusher *fl, const char *qid, const struct envelope *env)
{
    if (fl == NULL || fl->stopping)
        return;
    fl_add(fl, qid, env);
    /* While the primary is known to be down, a new message would only be
     * deferred with the known reason: leave that to the next tick, so the
     * deferrals of everything that arrives meanwhile share one write
     * transaction, instead of each costing the writer a commit that the
     * next client's 250 would wait behind. */
    if (!fl->primary.up && fl->down_why.text[0] != '\0')
        return;
    fl_kick(fl);
}

void
flusher_flush(struct flusher *fl)
{
    fl_heap_all_due(&fl->heap[FL_PRIMARY]);
    fl_heap_all_due(&fl->heap[FL_BOUNCE]);
    if (!fl->primary.up)
        fl->primary.next_probe = 0;
    fl_kick(fl);
}

void
flusher_flush_wait(struct flusher *fl, flusher_round_cb done, void *arg)
{
    struct fl_waiter *w = xcalloc(1, sizeof(*w));

    w->done = done;
    w->arg = arg;
    w->next = fl->waiters;
    fl->waiters = w;
    if (!fl->round_active) {
        fl->round_active = 1;
        fl->round_waiting = 0;
        fl->round_delivered = fl->round_deferred = fl->round_bounced = 0;
        /* mx2's own DSNs are not part of an operator's flush round: their
         * destinations are the senders' servers, not the primary. */
        for (struct fl_msg *m = fl->ahead; m != NULL; m = m->anext)
            if (!m->hold && !m->opbusy && m->route == FL_PRIMARY) {
                m->in_round = 1;
                m->round_counted = 0;
                fl->round_waiting++;
            }
        if (fl->round_waiting == 0) {
            fl_round_end(fl);
            return;
        }
    }
    flusher_flush(fl);
}

size_t
flusher_flush_domain(struct flusher *fl, const char *domain)
{
    size_t n = 0;
    uint64_t mask = 0;

    for (size_t d = 0; d < fl->cfg->relay_domains_count && d < 64; d++)
        if (strcasecmp(domain, fl->cfg->relay_domains[d]) == 0)
            mask |= 1ull << d;
    for (struct fl_msg *m = fl->ahead; m != NULL; m = m->anext)
        if ((m->domains & mask) && !m->hold && !m->active) {
            fl_schedule(fl, m, 0);
            n++;
        }
    if (n > 0 && !fl->primary.up)
        fl->primary.next_probe = 0;
    if (n > 0)
        fl_kick(fl);
    return n;
}

void
flusher_stop(struct flusher *fl)
{
    if (fl == NULL || fl->stopping)
        return;
    fl->stopping = 1;
    uv_timer_stop(&fl->tick);
    uv_close((uv_handle_t *)&fl->tick, NULL);
    for (struct fl_conn *fc = fl->conns; fc != NULL; fc = fc->next)
        smtpc_quit(&fc->c);
}

int
flusher_idle(const struct flusher *fl)
{
    return fl == NULL || (fl->conns == NULL && fl->pending_work == 0);
}

void
flusher_free(struct flusher *fl)
{
    if (fl == NULL)
        return;
    for (size_t i = 0; i < fl->nbuckets; i++)
        for (struct fl_msg *m = fl->buckets[i], *next; m; m = next) {
            next = m->hnext;
            free(m);
        }
    free(fl->buckets);
    free(fl->heap[0].v);
    free(fl->heap[1].v);
    tls_ctx_free(fl->tls);
    tls_ctx_free(fl->tls_bounce);
    free(fl->auth_password);
    free(fl);
}

void
flusher_get_stats(const struct flusher *fl, struct flusher_stats *st)
{
    *st = fl->stats;
    st->messages = fl->nmsgs;
    st->primary_up = fl->primary.up;
    st->queue_bytes = fl->bytes;
    st->held = fl->held;
    st->oldest_arrival = fl->ahead ? fl->ahead->arrival : 0;
}

void
flusher_on_primary_state(struct flusher *fl, void (*cb)(void *arg, int up), void *arg)
{
    fl->state_cb = cb;
    fl->state_arg = arg;
}
