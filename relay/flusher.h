/*
 * flusher.h - delivers the queue: to the primary (routes in cfg->primary,
 * tried in order, connections reused, up to primary_concurrency in
 * parallel), and mx2's own DSNs to bounce_relay or the sender domain's MX.
 *
 * The flusher keeps a small index of every queued message in memory (queue
 * ID, next attempt, arrival order) and loads the envelope and body from the
 * spool only to deliver. Outcomes are recorded through the writer (one
 * transaction per attempt): a recipient the primary accepted is marked done
 * durably before the message can leave the queue.
 *
 * The primary's state (sched_primary): a connection-level failure marks it
 * down; while down, nothing is sent at it but a probe every probe_interval;
 * the first probe that reaches EHLO marks it up and makes every deferred
 * message due at once, oldest first.
 *
 * Callers: main.c (start/stop), the SMTP session (flusher_enqueue after a
 * commit), the control socket later (flush). Event-loop thread only.
 */
#ifndef MX2_FLUSHER_H
#define MX2_FLUSHER_H

#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "envelope.h"

struct spool;
struct writer;
struct flusher;

struct flusher_stats {
    uint64_t queue_bytes;  /* sum of message sizes in the queue */
    int64_t oldest_arrival; /* unix seconds of the oldest queued message; 0 if empty */
    uint64_t held;         /* messages on hold */
    uint64_t delivered;    /* recipients accepted by the primary */
    uint64_t deferred;     /* recipient attempts that failed temporarily */
    uint64_t bounced;      /* recipients bounced (5xx or expired) */
    uint64_t expired;      /* recipients that outlived queue_lifetime */
    uint64_t dsn_sent;     /* DSN messages queued */
    uint64_t messages;     /* in the queue now */
    int primary_up;
};

/* Walks the spool to build the index. Returns 0 or an error (logged). */
int flusher_start(uv_loop_t *loop, const struct mx2_config *cfg, struct spool *spool,
                  struct writer *writer, struct flusher **out);
/* A message was just committed (the envelope is the committed one). */
void flusher_enqueue(struct flusher *fl, const char *qid, const struct envelope *env);
/* Every deferred message becomes due now; a down primary is probed now. */
void flusher_flush(struct flusher *fl);
/* Stop: close connections, cancel timers. In-flight writer jobs still
 * complete (call before writer_stop); free with flusher_free after the loop
 * has run the close callbacks. */
void flusher_stop(struct flusher *fl);
void flusher_free(struct flusher *fl);
/* 1 when stopped and nothing of the flusher is in flight any more. */
int flusher_idle(const struct flusher *fl);
void flusher_get_stats(const struct flusher *fl, struct flusher_stats *st);
/* Operator actions (mx2ctl through the control socket). Each is applied in
 * one writer transaction and answered on the loop thread:
 * cb(arg, 0 | MX2_E_NOT_FOUND | error). A message being delivered right now
 * is changed as soon as that attempt has been recorded. delete removes the
 * message without any bounce; hold parks it: it is neither delivered nor
 * expired until released or deleted (Postfix's hold queue); release makes it
 * due now. */
typedef void (*flusher_op_cb)(void *arg, int result);
void flusher_delete(struct flusher *fl, const char *qid, flusher_op_cb cb, void *arg);
void flusher_hold(struct flusher *fl, const char *qid, flusher_op_cb cb, void *arg);
void flusher_release(struct flusher *fl, const char *qid, flusher_op_cb cb, void *arg);
/* Calls cb(arg, qid) for every queued message (for `delete --all`). */
void flusher_foreach(struct flusher *fl, void (*cb)(void *arg, const char *qid), void *arg);

/* flush --wait: make everything due now (as flusher_flush) and call done
 * once every message that was queued at that moment has had one attempt
 * (or the primary turned out to be down), with the recipients delivered,
 * deferred and bounced in that round. */
typedef void (*flusher_round_cb)(void *arg, uint64_t delivered, uint64_t deferred,
                                 uint64_t bounced);
void flusher_flush_wait(struct flusher *fl, flusher_round_cb done, void *arg);

/* ETRN (RFC 1985): flush the messages that have a recipient in `domain`
 * (case-insensitive). Returns the number of messages made due. */
size_t flusher_flush_domain(struct flusher *fl, const char *domain);

/* Callback when the primary's state changes (defer_when_primary_up). */
void flusher_on_primary_state(struct flusher *fl, void (*cb)(void *arg, int up), void *arg);

#endif
