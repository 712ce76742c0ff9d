/*
 * writer.h - the durable-write thread: every spool write of mx2d goes here.
 *
 * One thread, fed by a queue, answering through a uv_async_t (STYLE.md). A
 * round takes EVERYTHING queued at that moment: all new messages go into one
 * spool_commit (one journal append and one sync, or one LMDB transaction),
 * all state changes into one spool_update (which also checkpoints the
 * journal). Messages that finish DATA while a round is syncing form the next
 * round together: this group commit is what lets many sessions share one
 * fsync instead of paying one each. Jobs submitted during one turn of the
 * event loop are handed to the thread together, at the end of the turn.
 * Between rounds the thread checkpoints the journal when it is due.
 *
 * Not the libuv threadpool: it is shared with uv_fs_* and DNS work, and LMDB
 * has a single writer anyway, so one dedicated thread loses nothing.
 *
 * Callers: the event-loop thread (submit, stop); completions run on the loop
 * thread, in submission order within a round. A job is owned by the caller
 * and must stay alive until its done callback has run.
 * After free-space checks the writer publishes the spool's free bytes
 * (writer_free_space), refreshed every 50 ms while rounds run, after a round
 * that met a full disk, and at least every few seconds.
 */
#ifndef MX2_WRITER_H
#define MX2_WRITER_H

#include <stdint.h>
#include <uv.h>

#include "spool.h"

enum writer_kind { WRITER_COMMIT = 0, WRITER_UPDATE };

struct writer_job {
    enum writer_kind kind;
    struct spool_new msg;  /* WRITER_COMMIT: in/out as spool_commit */
    struct spool_op *ops;  /* WRITER_UPDATE: in/out as spool_update */
    size_t nops;
    int result;            /* WRITER_COMMIT: msg.result; WRITER_UPDATE: transaction result */
    void (*done)(struct writer_job *job);
    void *data;            /* the submitter's */
    struct writer_job *next_;
};

struct writer_stats {
    uint64_t rounds;       /* transactions committed */
    uint64_t committed;    /* messages stored */
    uint64_t updates;      /* state changes applied */
    uint64_t max_batch;    /* most messages in one round */
    uint64_t checkpoints;  /* journal checkpoints of their own (spool_checkpoint) */
};

struct writer;

int writer_start(uv_loop_t *loop, struct spool *spool, struct writer **out);
/* Loop thread. The job's done callback runs later on the loop thread. */
void writer_submit(struct writer *w, struct writer_job *job);
/* Finish every queued job (their callbacks run), join the thread, release
 * the async handle. Loop thread; the loop must run for close callbacks. */
void writer_stop(struct writer *w);
/* cb(arg) runs once, on the loop thread, after the round whose commit or
 * update failed with MX2_E_PANIC has delivered its results (those jobs got
 * the error: nothing of them was acknowledged). Every later write would
 * fail the same way; the process must restart. */
void writer_on_fatal(struct writer *w, void (*cb)(void *arg), void *arg);
/* Last known free bytes of the spool (UINT64_MAX before the first check). */
uint64_t writer_free_space(const struct writer *w);
void writer_get_stats(struct writer *w, struct writer_stats *st);

#endif
