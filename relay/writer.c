/*
 * writer.c - see writer.h.
 *
 * Ordering: a job's callback runs only after the write holding it was
 * durable (spool_commit/spool_update returned, after the journal's or LMDB's
 * fdatasync): the session sends "250 ... queued as" from that callback, never
 * earlier. Between rounds the writer checkpoints the journal when its
 * records are due (WRITER_CHECKPOINT_MS), and before the thread ends. Commits run before updates within a round so that an update can
 * never name a message the same round has not stored yet.
 */
#include "writer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "xalloc.h"

/* The journal's records move into LMDB (spool_checkpoint) at the latest this
 * long after the oldest was acknowledged, or once they fill half of it.
 * Usually sooner: the flusher's state updates carry them along. */
#define WRITER_CHECKPOINT_MS 200

/* How often the writer unmaps the spool's touched pages (spool_release_pages):
 * at 7,000 messages a second the queue file grows ~30 MiB a second, and
 * what mx2d touches of it would show in its RSS until released. */
#define WRITER_RELEASE_MS 250

struct writer {
    uv_loop_t *loop;
    struct spool *spool;
    uv_async_t async;
    /* Jobs submitted during one turn of the loop, handed over together at
     * its end (loop thread only): one wake-up of the writer for all the
     * deferrals of a flusher tick, or all the sessions whose DATA ended in
     * one poll, instead of a round for the first and another for the rest. */
    struct writer_job *local_head, *local_tail;
    uv_prepare_t prepare;
    uv_check_t check;
    int closed; /* handles closed so far (writer_stop) */
    uint64_t space_ms; /* writer thread: when free_space was last refreshed */
    uint64_t release_ms; /* writer thread: when the map's pages were last released */
    int release_due;     /* writer thread: a round ran since (it may have touched pages) */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct writer_job *queued_head, *queued_tail; /* under mu */
    struct writer_job *done_head, *done_tail; /* under mu */
    int stop;                                 /* under mu */
    int started;
    _Atomic uint64_t free_space;
    _Atomic int fatal;                        /* a write failed with MX2_E_PANIC */
    int fatal_reported;                       /* loop thread */
    void (*on_fatal)(void *);
    void *on_fatal_arg;
    struct writer_stats stats; /* under mu */
};

static void
writer_append(struct writer_job **head, struct writer_job **tail, struct writer_job *list,
              struct writer_job *last)
{
    if (list == NULL)
        return;
    if (*tail != NULL)
        (*tail)->next_ = list;
    else
        *head = list;
    *tail = last;
}

/* Monotonic milliseconds (writer thread's own timing). */
static uint64_t
writer_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Whether a job of the round failed for want of space. */
static int
writer_round_full(const struct writer_job *jobs)
{
    for (; jobs != NULL; jobs = jobs->next_)
        if (jobs->result == MX2_E_SPOOL)
            return 1;
    return 0;
}

static void
writer_round(struct writer *w, struct writer_job *jobs)
{
    size_t ncommit = 0, nops = 0, i;
    struct spool_new *msgs;
    struct spool_op *ops;
    struct writer_job *j, *last = NULL;
    int rc;

    for (j = jobs; j != NULL; j = j->next_) {
        if (j->kind == WRITER_COMMIT)
            ncommit++;
        else
            nops += j->nops;
        last = j;
    }
    if (ncommit > 0) {
        msgs = xmalloc(ncommit * sizeof(*msgs));
        for (i = 0, j = jobs; j != NULL; j = j->next_)
            if (j->kind == WRITER_COMMIT)
                msgs[i++] = j->msg;
        if (spool_commit(w->spool, msgs, ncommit) == MX2_E_PANIC)
            atomic_store(&w->fatal, 1);
        for (i = 0, j = jobs; j != NULL; j = j->next_)
            if (j->kind == WRITER_COMMIT) {
                j->msg = msgs[i++];
                j->result = j->msg.result;
            }
        free(msgs);
    }
    if (nops > 0) {
        ops = xmalloc(nops * sizeof(*ops));
        for (i = 0, j = jobs; j != NULL; j = j->next_)
            if (j->kind == WRITER_UPDATE) {
                memcpy(ops + i, j->ops, j->nops * sizeof(*ops));
                i += j->nops;
            }
        rc = spool_update(w->spool, ops, nops);
        if (rc == MX2_E_PANIC)
            atomic_store(&w->fatal, 1);
        for (i = 0, j = jobs; j != NULL; j = j->next_)
            if (j->kind == WRITER_UPDATE) {
                memcpy(j->ops, ops + i, j->nops * sizeof(*ops));
                i += j->nops;
                j->result = rc;
                /* Left for later (a full disk kept the journal's records
                 * out of LMDB): the job as a whole was not recorded. */
                for (size_t k = 0; rc == 0 && k < j->nops; k++)
                    if (j->ops[k].result == MX2_E_SPOOL)
                        j->result = MX2_E_SPOOL;
            }
        free(ops);
    }
    /* The free-space figure (452 at MAIL when low; the journal's room):
     * refreshed every 50 ms while rounds run, at once after a full disk. */
    {
        uint64_t avail, ms = writer_now_ms();
        if (ms - w->space_ms >= 50 || writer_round_full(jobs)) {
            if (spool_free_space(w->spool, &avail) == 0)
                atomic_store(&w->free_space, avail);
            w->space_ms = ms;
        }
    }
    pthread_mutex_lock(&w->mu);
    w->stats.rounds++;
    w->stats.committed += ncommit;
    w->stats.updates += nops;
    if (ncommit > w->stats.max_batch)
        w->stats.max_batch = ncommit;
    writer_append(&w->done_head, &w->done_tail, jobs, last);
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->async);
}

/* Checkpoint when the journal's records are due (WRITER_CHECKPOINT_MS), or
 * always (force: before the thread ends). Returns how many ms until the
 * records left are due (long when there are none). */
static uint64_t
writer_checkpoint(struct writer *w, int force)
{
    size_t bytes, cap = spool_journal_cap(w->spool);
    uint64_t age;

    spool_journal_pending(w->spool, &bytes, &age);
    if (bytes == 0)
        return 5000;
    if (force || age >= WRITER_CHECKPOINT_MS || bytes >= cap / 2) {
        int rc = spool_checkpoint(w->spool);
        if (rc == MX2_E_PANIC) {
            atomic_store(&w->fatal, 1);
            uv_async_send(&w->async); /* the loop reports it (writer_on_fatal) */
        }
        if (rc != 0) {
            /* The records stay durable in the journal; new ones go to LMDB
             * directly once it is full, and get its error meanwhile. */
            log_warn("spool: journal checkpoint failed: %s", mx2_strerror(rc));
            return 1000;
        }
        pthread_mutex_lock(&w->mu);
        w->stats.checkpoints++;
        pthread_mutex_unlock(&w->mu);
        return 5000;
    }
    return WRITER_CHECKPOINT_MS - age;
}

/* Release the spool's mapped pages every WRITER_RELEASE_MS (writer thread). */
static void
writer_release_pages(struct writer *w)
{
    uint64_t now = writer_now_ms();

    if (now - w->release_ms < WRITER_RELEASE_MS)
        return;
    w->release_ms = now;
    w->release_due = 0;
    (void)spool_release_pages(w->spool); /* only memory accounting is at stake */
}

static void *
writer_main(void *arg)
{
    struct writer *w = arg;

    for (;;) {
        struct writer_job *jobs;
        struct timespec ts;
        uint64_t wait_ms = writer_checkpoint(w, 0);

        writer_release_pages(w);
        /* Idle after rounds: wake to release what they touched (the
         * flusher's reads too), not seconds later. */
        if (w->release_due && wait_ms > WRITER_RELEASE_MS)
            wait_ms = WRITER_RELEASE_MS;

        pthread_mutex_lock(&w->mu);
        while (w->queued_head == NULL && !w->stop) {
            /* Wake for the journal's checkpoint, and every few seconds to
             * refresh the free-space figure. */
            clock_gettime(CLOCK_MONOTONIC, &ts); /* the cv waits on it */
            ts.tv_sec += (time_t)(wait_ms / 1000);
            ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) != 0 && w->queued_head == NULL) {
                uint64_t avail;
                pthread_mutex_unlock(&w->mu);
                wait_ms = writer_checkpoint(w, 0);
                if (spool_free_space(w->spool, &avail) == 0)
                    atomic_store(&w->free_space, avail);
                writer_release_pages(w); /* what the last rounds touched */
                if (w->release_due && wait_ms > WRITER_RELEASE_MS)
                    wait_ms = WRITER_RELEASE_MS;
                pthread_mutex_lock(&w->mu);
            }
        }
        jobs = w->queued_head;
        w->queued_head = w->queued_tail = NULL;
        if (jobs == NULL && w->stop) {
            pthread_mutex_unlock(&w->mu);
            /* A clean stop leaves nothing for the next start to replay. */
            writer_checkpoint(w, 1);
            return NULL;
        }
        pthread_mutex_unlock(&w->mu);
        writer_round(w, jobs);
        w->release_due = 1;
    }
}

static void
writer_on_async(uv_async_t *a)
{
    struct writer *w = a->data;
    struct writer_job *jobs, *next;

    pthread_mutex_lock(&w->mu);
    jobs = w->done_head;
    w->done_head = w->done_tail = NULL;
    pthread_mutex_unlock(&w->mu);
    for (; jobs != NULL; jobs = next) {
        next = jobs->next_;
        jobs->next_ = NULL;
        jobs->done(jobs);
    }
    if (atomic_load(&w->fatal) && !w->fatal_reported && w->on_fatal != NULL) {
        w->fatal_reported = 1;
        w->on_fatal(w->on_fatal_arg);
    }
}

void
writer_on_fatal(struct writer *w, void (*cb)(void *arg), void *arg)
{
    w->on_fatal = cb;
    w->on_fatal_arg = arg;
}

/* Hand the jobs of this loop turn to the thread: after the I/O callbacks
 * (check) and after the timers (prepare, before the loop may block in poll). */
static void
writer_hand_over(struct writer *w)
{
    if (w->local_head == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    writer_append(&w->queued_head, &w->queued_tail, w->local_head, w->local_tail);
    pthread_mutex_unlock(&w->mu);
    /* Signalled after the unlock: the woken thread does not run straight
     * into the mutex we still hold (two futex calls less per hand-over). */
    pthread_cond_signal(&w->cv);
    w->local_head = w->local_tail = NULL;
}

static void
writer_on_prepare(uv_prepare_t *h)
{
    writer_hand_over(h->data);
}

static void
writer_on_check(uv_check_t *h)
{
    writer_hand_over(h->data);
}

int
writer_start(uv_loop_t *loop, struct spool *spool, struct writer **out)
{
    struct writer *w = xcalloc(1, sizeof(*w));
    uint64_t avail = UINT64_MAX;
    int rc;

    w->loop = loop;
    w->spool = spool;
    pthread_mutex_init(&w->mu, NULL);
    {
        /* Timed waits on the monotonic clock: a clock stepped back must
         * not postpone the journal's checkpoint. */
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&w->cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (spool_free_space(spool, &avail) != 0)
        avail = UINT64_MAX;
    atomic_store(&w->free_space, avail);
    if ((rc = uv_async_init(loop, &w->async, writer_on_async)) != 0) {
        free(w);
        return rc;
    }
    w->async.data = w;
    uv_prepare_init(loop, &w->prepare);
    uv_check_init(loop, &w->check);
    w->prepare.data = w->check.data = w;
    uv_prepare_start(&w->prepare, writer_on_prepare);
    uv_check_start(&w->check, writer_on_check);
    /* They never keep the loop alive by themselves. */
    uv_unref((uv_handle_t *)&w->prepare);
    uv_unref((uv_handle_t *)&w->check);
    if ((rc = pthread_create(&w->thread, NULL, writer_main, w)) != 0) {
        uv_close((uv_handle_t *)&w->async, NULL);
        uv_close((uv_handle_t *)&w->prepare, NULL);
        uv_close((uv_handle_t *)&w->check, NULL);
        return -rc;
    }
    w->started = 1;
    *out = w;
    return 0;
}

void
writer_submit(struct writer *w, struct writer_job *job)
{
    job->next_ = NULL;
    writer_append(&w->local_head, &w->local_tail, job, job);
}

/* Called for each of the three handles; the last one frees the writer. */
static void
writer_on_closed(uv_handle_t *h)
{
    struct writer *w = h->data;

    if (++w->closed < 3)
        return;
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

void
writer_stop(struct writer *w)
{
    if (w == NULL)
        return;
    writer_hand_over(w);
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (w->started)
        pthread_join(w->thread, NULL);
    /* Deliver the last completions before the handles go. */
    writer_on_async(&w->async);
    uv_close((uv_handle_t *)&w->prepare, writer_on_closed);
    uv_close((uv_handle_t *)&w->check, writer_on_closed);
    uv_close((uv_handle_t *)&w->async, writer_on_closed);
}

uint64_t
writer_free_space(const struct writer *w)
{
    return atomic_load(&((struct writer *)w)->free_space);
}

void
writer_get_stats(struct writer *w, struct writer_stats *st)
{
    pthread_mutex_lock(&w->mu);
    *st = w->stats;
    pthread_mutex_unlock(&w->mu);
}
