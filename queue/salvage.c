/*
 * salvage.c - see salvage.h. The child reads the damaged copy with LMDB and
 * writes frames to a pipe; the parent checks and stores them.
 *
 * Frame: 4-byte key length, 4-byte envelope length, 8-byte body length
 * (all host order: both ends are this process image), then the three byte
 * strings. A missing body is sent with length 0 and fails the parent's
 * length check unless the envelope says 0 bytes, which it never does (a body
 * holds at least the terminating CRLF of its last line).
 */
#include "salvage.h"

#include <errno.h>
#include <lmdb.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "envelope.h"
#include "err.h"
#include "fsio.h"
#include "qid.h"
#include "spool.h"
#include "xalloc.h"

#define SALVAGE_KEY_MAX 511             /* LMDB's default key size limit */
#define SALVAGE_ENV_MAX (64u << 20)     /* an envelope is far smaller */
#define SALVAGE_BODY_MAX (4ull << 30)   /* beyond any max_message_size */
#define SALVAGE_BATCH_BYTES (64u << 20) /* one transaction's dirty pages */
#define SALVAGE_BATCH_RECS 256
#define SALVAGE_CHILD_SECONDS 600       /* one walk; a sane one takes seconds */

/* Child exit codes (parent only distinguishes "reached the end"). */
enum { SALVAGE_CHILD_END = 0, SALVAGE_CHILD_FAILED = 3, SALVAGE_CHILD_FAULT = 4 };

/* In the child: LMDB touching a page past the end of a cut file (SIGBUS) or
 * following a garbage pointer (SIGSEGV) is the expected way for a walk of a
 * damaged file to end. Exit quietly, so that it is not reported as a crash
 * (no core dump, no crash record). Async-signal-safe: _exit only. */
static void
salvage_on_fault(int sig)
{
    (void)sig;
    _exit(SALVAGE_CHILD_FAULT);
}

static int
salvage_send(int fd, const MDB_val *k, const MDB_val *env, const MDB_val *body)
{
    uint32_t kl = (uint32_t)k->mv_size, el = (uint32_t)env->mv_size;
    uint64_t bl = body ? body->mv_size : 0;
    unsigned char hdr[16];

    memcpy(hdr, &kl, 4);
    memcpy(hdr + 4, &el, 4);
    memcpy(hdr + 8, &bl, 8);
    if (fsio_write_all(fd, hdr, sizeof(hdr)) != 0 || fsio_write_all(fd, k->mv_data, kl) != 0 ||
        fsio_write_all(fd, env->mv_data, el) != 0)
        return -1;
    return body ? fsio_write_all(fd, body->mv_data, bl) : 0;
}

/* In the child: walk env forward (or backward) and send every record. Only
 * async-signal-safe-enough calls matter little here: the parent has no other
 * threads at this point (salvage.h). Never returns. */
static void __attribute__((noreturn))
salvage_child(const char *qdir, int fd, int backward)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbe, dbb;
    MDB_cursor *cur;
    MDB_val k, v, b;
    int rc, op = backward ? MDB_LAST : MDB_FIRST;
    struct sigaction sa;
    unsigned char last[SALVAGE_KEY_MAX];
    size_t lastlen = 0;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = salvage_on_fault;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGFPE, &sa, NULL);
    if (mdb_env_create(&env) != 0)
        _exit(SALVAGE_CHILD_FAILED);
    mdb_env_set_maxdbs(env, 4);
    /* NOLOCK: read the copy without touching its lock file. */
    if (mdb_env_open(env, qdir, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0600) != 0 ||
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0 ||
        mdb_dbi_open(txn, "env", 0, &dbe) != 0 || mdb_dbi_open(txn, "body", 0, &dbb) != 0 ||
        mdb_cursor_open(txn, dbe, &cur) != 0)
        _exit(SALVAGE_CHILD_FAILED);
    /* A damaged tree could lead the cursor in a circle: keys must keep
     * going one way, and the walk has a time limit (SIGALRM ends it). */
    alarm(SALVAGE_CHILD_SECONDS);
    for (;;) {
        rc = mdb_cursor_get(cur, &k, &v, (MDB_cursor_op)op);
        op = backward ? MDB_PREV : MDB_NEXT;
        if (rc == MDB_NOTFOUND)
            _exit(SALVAGE_CHILD_END);
        if (rc != 0 || k.mv_size > SALVAGE_KEY_MAX)
            _exit(SALVAGE_CHILD_FAILED);
        if (lastlen > 0) {
            size_t n = k.mv_size < lastlen ? k.mv_size : lastlen;
            int c = memcmp(k.mv_data, last, n);
            if (c == 0)
                c = k.mv_size < lastlen ? -1 : k.mv_size > lastlen ? 1 : 0;
            if (backward ? c >= 0 : c <= 0)
                _exit(SALVAGE_CHILD_FAILED);
        }
        memcpy(last, k.mv_data, k.mv_size);
        lastlen = k.mv_size;
        int brc = mdb_get(txn, dbb, &k, &b);
        if (salvage_send(fd, &k, &v, brc == 0 ? &b : NULL) != 0)
            _exit(SALVAGE_CHILD_FAILED);
    }
}

struct salvage_batch {
    struct spool_raw rec[SALVAGE_BATCH_RECS];
    size_t n, bytes;
};

static void
salvage_batch_clear(struct salvage_batch *bt)
{
    for (size_t i = 0; i < bt->n; i++) {
        free((void *)bt->rec[i].key);
        free((void *)bt->rec[i].env);
        free((void *)bt->rec[i].body);
    }
    bt->n = 0;
    bt->bytes = 0;
}

static int
salvage_flush(struct spool *into, struct salvage_batch *bt, struct salvage_stats *st,
              uint64_t *dups)
{
    int rc = bt->n ? spool_restore(into, bt->rec, bt->n) : 0;

    for (size_t i = 0; rc == 0 && i < bt->n; i++) {
        if (bt->rec[i].result == 0)
            st->copied++;
        else if (bt->rec[i].result == MX2_E_EXISTS)
            (*dups)++; /* the backward walk met the forward one */
        else
            st->refused++;
    }
    salvage_batch_clear(bt);
    return rc;
}

/* Read n bytes or report a short stream (the child ended or died). */
static int
salvage_read(int fd, void *buf, size_t n)
{
    size_t got;
    int rc = fsio_read_all(fd, buf, n, &got);

    return rc != 0 ? rc : got == n ? 0 : -EPIPE;
}

/* Read and drop n bytes (a record refused before its body was read). */
static int
salvage_skip(int fd, uint64_t n)
{
    unsigned char buf[64 * 1024];

    while (n > 0) {
        size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
        int rc = salvage_read(fd, buf, k);
        if (rc != 0)
            return rc;
        n -= k;
    }
    return 0;
}

/* One walk: fork the child, store what it sends. *end = the child reached the
 * end of the database. */
/* In the child: send the damaged copy's meta/journal (8 bytes), if it can
 * be read. Never returns. */
static void __attribute__((noreturn))
salvage_ckpt_child(const char *qdir, int fd)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbm;
    MDB_val k = {7, (void *)"journal"}, v;
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = salvage_on_fault;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGSEGV, &sa, NULL);
    alarm(SALVAGE_CHILD_SECONDS);
    if (mdb_env_create(&env) != 0)
        _exit(SALVAGE_CHILD_FAILED);
    mdb_env_set_maxdbs(env, 4);
    if (mdb_env_open(env, qdir, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0600) != 0 ||
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0 ||
        mdb_dbi_open(txn, "meta", 0, &dbm) != 0)
        _exit(SALVAGE_CHILD_FAILED);
    if (mdb_get(txn, dbm, &k, &v) == MDB_NOTFOUND) {
        unsigned char zero[8] = {0};
        _exit(fsio_write_all(fd, zero, 8) == 0 ? SALVAGE_CHILD_END : SALVAGE_CHILD_FAILED);
    }
    if (v.mv_size != 8 || fsio_write_all(fd, v.mv_data, 8) != 0)
        _exit(SALVAGE_CHILD_FAILED);
    _exit(SALVAGE_CHILD_END);
}

/* The journal generation the damaged copy had checkpointed, read in a
 * child (the copy may kill its reader). 0 when unknown, which
 * makes salvage take the whole journal run (duplicates, never loss). */
static uint64_t
salvage_ckpt(const char *qdir)
{
    unsigned char b[8];
    uint64_t gen = 0;
    int p[2], status;
    pid_t pid;

    if (pipe(p) != 0)
        return 0;
    if ((pid = fork()) < 0) {
        close(p[0]);
        close(p[1]);
        return 0;
    }
    if (pid == 0) {
        close(p[0]);
        salvage_ckpt_child(qdir, p[1]);
    }
    close(p[1]);
    if (salvage_read(p[0], b, sizeof(b)) == 0)
        for (size_t i = 0; i < 8; i++)
            gen = (gen << 8) | b[i];
    close(p[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return gen;
}

static int
salvage_walk(struct spool *into, const char *qdir, int backward, struct salvage_stats *st,
             int *end)
{
    struct salvage_batch *bt = xcalloc(1, sizeof(*bt));
    uint64_t dups = 0;
    int p[2], status = 0, rc = 0;
    pid_t pid;

    *end = 0;
    if (pipe(p) != 0) {
        free(bt);
        return -errno;
    }
    pid = fork();
    if (pid < 0) {
        rc = -errno;
        close(p[0]);
        close(p[1]);
        free(bt);
        return rc;
    }
    if (pid == 0) {
        close(p[0]);
        salvage_child(qdir, p[1], backward);
    }
    close(p[1]);
    for (;;) {
        unsigned char hdr[16];
        uint32_t kl, el;
        uint64_t bl;
        if (salvage_read(p[0], hdr, sizeof(hdr)) != 0)
            break;
        memcpy(&kl, hdr, 4);
        memcpy(&el, hdr + 4, 4);
        memcpy(&bl, hdr + 8, 8);
        if (kl > SALVAGE_KEY_MAX || el > SALVAGE_ENV_MAX || bl > SALVAGE_BODY_MAX)
            break; /* the child is confused: stop reading it */
        struct spool_raw *r = &bt->rec[bt->n];
        void *key = xmalloc(kl + 1), *env = xmalloc(el + 1), *body = NULL;
        struct envelope e;
        int ok;
        if (salvage_read(p[0], key, kl) != 0 || salvage_read(p[0], env, el) != 0) {
            free(key);
            free(env);
            break;
        }
        /* Trust the body length only once the envelope vouches for it (CRC,
         * ID, size): a confused child cannot make us allocate garbage. */
        ok = envelope_decode(env, el, &e) == 0;
        if (ok) {
            ok = kl == QID_LEN && memcmp(key, e.qid, QID_LEN) == 0 && e.size == bl;
            envelope_free(&e);
        }
        if (ok && (body = malloc(bl ? bl : 1)) == NULL)
            ok = 0;
        if (!ok) {
            free(key);
            free(env);
            st->refused++;
            if (salvage_skip(p[0], bl) != 0)
                break;
            continue;
        }
        if (salvage_read(p[0], body, bl) != 0) {
            free(key);
            free(env);
            free(body);
            break;
        }
        memset(r, 0, sizeof(*r));
        r->key = key;
        r->env = env;
        r->body = body;
        r->key_len = kl;
        r->env_len = el;
        r->body_len = bl;
        bt->n++;
        bt->bytes += kl + el + bl;
        if ((bt->n == SALVAGE_BATCH_RECS || bt->bytes >= SALVAGE_BATCH_BYTES) &&
            (rc = salvage_flush(into, bt, st, &dups)) != 0)
            break;
    }
    close(p[0]);
    if (rc != 0)
        kill(pid, SIGKILL);
    pid_t w;
    do
        w = waitpid(pid, &status, 0);
    while (w < 0 && errno == EINTR);
    if (rc == 0)
        rc = salvage_flush(into, bt, st, &dups);
    else
        salvage_batch_clear(bt);
    free(bt);
    *end = w == pid && WIFEXITED(status) && WEXITSTATUS(status) == SALVAGE_CHILD_END;
    return rc;
}

int
salvage_into(struct spool *into, const char *damaged_qdir, struct salvage_stats *st)
{
    int end, rc;

    memset(st, 0, sizeof(*st));
    rc = salvage_walk(into, damaged_qdir, 0, st, &end);
    st->complete = end;
    if (rc == 0 && !end)
        rc = salvage_walk(into, damaged_qdir, 1, st, &end);
    /* Messages acknowledged but not yet checkpointed are in the damaged
     * copy's journal, which is a plain file: take them too (after the walks,
     * so that an ID both hold is stored once), unless the copy's own
     * checkpoint says its run was already moved in (and may since have been
     * delivered and deleted). */
    if (rc == 0)
        rc = spool_journal_salvage(into, damaged_qdir, salvage_ckpt(damaged_qdir), &st->copied,
                                   &st->refused);
    return rc;
}
