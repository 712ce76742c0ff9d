/*
 * spool.c - see spool.h; the on-disk format and the crash-safety argument
 * are in queue/README.md.
 *
 * Why one LMDB environment and not a file per message (Postfix, OpenSMTPD):
 * a file per message costs a file fsync, a rename and a directory fsync per
 * message, which tops out at a few hundred messages per second on one disk.
 * An LMDB commit is copy-on-write pages, fdatasync, one meta page write,
 * fdatasync: its cost barely depends on how many messages the transaction
 * carries, so putting every message that finished DATA during the previous
 * commit into the next one (group commit) makes durable accept scale with
 * concurrency instead of disk latency. The same property makes every state
 * change atomic: a transaction is visible entirely after its meta page is
 * written, or not at all.
 *
 * Threads: the environment is opened with MDB_NOTLS so read transactions
 * are not tied to the thread that began them (a body handle may be read by a
 * delivery thread, a walk may run beside the writer); write transactions
 * are only ever begun by the one writer thread (LMDB serialises writers
 * anyway, with a mutex in lock.mdb).
 */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "fsio.h"
#include "journal.h"
#include "log.h"
#include "xalloc.h"

/* Bodies per write transaction, at most (one message may exceed it alone).
 * Without MDB_WRITEMAP LMDB builds every dirty page of a transaction in
 * malloc'd memory before writing it, so this bounds the writer's memory while
 * keeping ordinary batches (thousands of 2-100 KB messages) in one commit. */
#define SPOOL_TXN_BYTES (64u << 20)

#define SPOOL_MAXREADERS 1024

static const char spool_meta_version_key[] = "version";
/* meta/journal: 8 bytes big-endian, the journal generation whose records the
 * last checkpoint moved into LMDB (absent: 0). */
static const char spool_meta_journal_key[] = "journal";

#define SPOOL_JOURNAL_DEFAULT (4u << 20)
#define SPOOL_JOURNAL_MIN (64u << 10)

/* A journaled message not yet moved into LMDB. */
struct spool_jent {
    char qid[QID_SIZE];
    size_t off;      /* of its record in the journal */
    size_t env_len;  /* its parts, at off + JOURNAL_HDR */
    size_t body_len;
    size_t total;
};

/* The journal (journal.h, queue/README.md). RW: the writer thread appends
 * and checkpoints; any thread may take a view (spool_jview_take) under mu.
 * buf[0, tail) mirrors the file's valid run and is immutable until the
 * checkpoint that clears it (under mu), so the writer fills buf past tail
 * without the lock. RDONLY: only path is used; each view opens and reads the file. */
struct spool_journal {
    int fd;                 /* -1: no journal */
    size_t cap;             /* the file's size */
    unsigned char *buf;     /* RW: cap bytes */
    size_t tail;            /* under mu: end of the durable records */
    uint64_t gen;           /* generation being written: last checkpoint + 1 */
    struct spool_jent *idx; /* under mu: the pending records, in ID order */
    size_t n, alloc;
    int dirty;              /* a write or sync failed: checkpoint before appending */
    char *path;             /* RDONLY: queue/journal, opened by each view */
    uint64_t first_ms;      /* monotonic ms when the oldest pending record was synced */
    uint64_t replayed;      /* records moved into LMDB at open */
    pthread_mutex_t mu;
};

struct spool {
    char *dir;
    char *tmpdir;
    unsigned flags;
    MDB_env *env;
    MDB_dbi dbi_env, dbi_body, dbi_meta;
    struct qid_gen gen;
    _Atomic unsigned long tmp_seq;
    struct spool_journal j;
    uint64_t room;    /* writer: the last spool_free_space before the journal's share */
    uint64_t room_ms; /* when it was taken (monotonic ms; 0: never) */
};

/* LMDB codes stop here (STYLE.md: wrappers translate). */
static int
spool_mdb_err(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_NOTFOUND:
        return MX2_E_NOT_FOUND;
    case MDB_KEYEXIST:
        return MX2_E_EXISTS;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
    case MDB_PAGE_FULL:
    case ENOSPC:
    case EDQUOT:
    case EROFS:
    case EIO:
        return MX2_E_SPOOL;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
        return MX2_E_CORRUPT;
    case MDB_PANIC: /* a failed meta write: this environment is unusable */
        return MX2_E_PANIC;
    case MDB_VERSION_MISMATCH: /* another LMDB's lock format: not damage */
    case MDB_INCOMPATIBLE:
        return MX2_E_FORMAT;
    default:
        return rc > 0 ? -rc : MX2_E_INTERNAL;
    }
}

/* LMDB reader slots: SPOOL_MAXREADERS, or MX2_SPOOL_MAXREADERS (8 to
 * 65536) so that tests can run out of them quickly. */
static unsigned
spool_maxreaders(void)
{
    const char *s = getenv("MX2_SPOOL_MAXREADERS");
    char *end;
    unsigned long v;

    if (s == NULL || *s == '\0')
        return SPOOL_MAXREADERS;
    v = strtoul(s, &end, 10);
    if (*end != '\0' || v < 8 || v > 65536)
        return SPOOL_MAXREADERS;
    return (unsigned)v;
}

static int
spool_mapsize(size_t *out)
{
    const char *s = getenv("MX2_SPOOL_MAPSIZE");
    char *end;
    unsigned long long v;

    *out = (size_t)SPOOL_DEFAULT_MAPSIZE;
    if (s == NULL || *s == '\0')
        return 0;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 65536 || v > SIZE_MAX)
        return MX2_E_INVAL;
    *out = (size_t)v;
    return 0;
}

/* A read transaction. A read-only spool (mx2ctl, one thread) follows a
 * writer that grew the map; mx2d never grows its own map behind its back. */
static int
spool_rtxn(struct spool *s, MDB_txn **txn)
{
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);

    if (rc == MDB_MAP_RESIZED && (s->flags & SPOOL_RDONLY)) {
        rc = mdb_env_set_mapsize(s->env, 0);
        if (rc == 0)
            rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    }
    return spool_mdb_err(rc);
}

static char *
spool_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = xmalloc(n);

    snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* Open the named databases and check (RW: write) the format version. */
static int
spool_open_dbs(struct spool *s)
{
    int rdonly = (s->flags & SPOOL_RDONLY) != 0;
    unsigned dbflags = rdonly ? 0 : MDB_CREATE;
    MDB_txn *txn;
    MDB_val k = {sizeof(spool_meta_version_key) - 1, (void *)spool_meta_version_key}, v;
    MDB_cursor *cur;
    int rc;

    rc = rdonly ? spool_rtxn(s, &txn) : spool_mdb_err(mdb_txn_begin(s->env, NULL, 0, &txn));
    if (rc != 0)
        return rc;
    if ((rc = mdb_dbi_open(txn, "env", dbflags, &s->dbi_env)) != 0 ||
        (rc = mdb_dbi_open(txn, "body", dbflags, &s->dbi_body)) != 0 ||
        (rc = mdb_dbi_open(txn, "meta", dbflags, &s->dbi_meta)) != 0) {
        mdb_txn_abort(txn);
        /* A database without our named DBs is not a spool. */
        return rc == MDB_NOTFOUND ? MX2_E_CORRUPT : spool_mdb_err(rc);
    }
    rc = mdb_get(txn, s->dbi_meta, &k, &v);
    if (rc == MDB_NOTFOUND && !rdonly) {
        unsigned char ver[4] = {0, 0, 0, SPOOL_FORMAT_VERSION};
        v.mv_size = sizeof(ver);
        v.mv_data = ver;
        rc = mdb_put(txn, s->dbi_meta, &k, &v, 0);
    } else if (rc == 0) {
        const unsigned char *p = v.mv_data;
        if (v.mv_size != 4 || p[0] || p[1] || p[2] || p[3] != SPOOL_FORMAT_VERSION) {
            mdb_txn_abort(txn);
            return MX2_E_FORMAT;
        }
    } else if (rc == MDB_NOTFOUND) {
        rc = 0; /* read-only view of a spool that never committed: empty */
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return spool_mdb_err(rc);
    }
    /* Seed the ID generator above the highest key, so IDs keep increasing
     * across restarts even with a clock set back (MDB_APPEND relies on it). */
    qid_gen_init(&s->gen, 0);
    if (!rdonly && mdb_cursor_open(txn, s->dbi_env, &cur) == 0) {
        MDB_val ck, cv;
        uint64_t last;
        if (mdb_cursor_get(cur, &ck, &cv, MDB_LAST) == 0 &&
            qid_parse(ck.mv_data, ck.mv_size, &last) == 0)
            qid_gen_raise(&s->gen, last);
        mdb_cursor_close(cur);
    }
    /* Committing (also a read txn) keeps the DBI handles for all later txns. */
    return spool_mdb_err(mdb_txn_commit(txn));
}

/* LMDB maps the file and trusts it: a data.mdb cut short (a bad disk, a
 * careless copy) makes the first touch of a missing page kill the process
 * with SIGBUS, at every start. Check the file covers both meta pages and
 * every page the meta says is in use before any page is read through the
 * map (mdb_env_open read the metas with pread). */
static int
spool_check_size(struct spool *s, const char *qdir)
{
    char *data = spool_join(qdir, "data.mdb");
    long os_psize = sysconf(_SC_PAGESIZE);
    MDB_envinfo info;
    MDB_stat ms;
    struct stat st;
    int rc = stat(data, &st) != 0 ? -errno : 0;

    free(data);
    if (rc != 0)
        return rc;
    if (st.st_size < 2 * (off_t)(os_psize > 0 ? os_psize : 4096))
        return MX2_E_CORRUPT;
    if (mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &ms) != 0)
        return MX2_E_CORRUPT;
    if ((uint64_t)st.st_size < ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize)
        return MX2_E_CORRUPT;
    return 0;
}

/* ---- the journal (journal.h; queue/README.md, "The journal") ---- */

static uint64_t
spool_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The journal's size: SPOOL_JOURNAL_DEFAULT, or the environment variable
 * MX2_JOURNAL_SIZE in bytes (tests, benchmarks): 0 turns the journal off. */
static int
spool_journal_size(size_t *out)
{
    const char *v = getenv("MX2_JOURNAL_SIZE");
    unsigned long long n;
    char *end;

    *out = SPOOL_JOURNAL_DEFAULT;
    if (v == NULL || *v == '\0')
        return 0;
    errno = 0;
    n = strtoull(v, &end, 10);
    if (errno != 0 || *end != '\0' || (n != 0 && (n < SPOOL_JOURNAL_MIN || n > (1ull << 30))))
        return MX2_E_INVAL;
    *out = (size_t)n & ~(size_t)4095;
    return 0;
}

/* The code of a failed write transaction. A commit whose meta page write
 * failed returns that write's errno (EIO: "storage"), but LMDB has marked
 * the environment unusable: say so at once (MX2_E_PANIC), so that mx2d
 * restarts now instead of at some later write. */
static int
spool_write_err(struct spool *s, int rc)
{
    MDB_txn *probe = NULL;
    int prc;

    if (rc == 0 || rc == MDB_PANIC)
        return spool_mdb_err(rc);
    prc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &probe);
    if (prc == MDB_PANIC)
        return MX2_E_PANIC;
    if (prc == 0)
        mdb_txn_abort(probe);
    return spool_mdb_err(rc);
}

/* meta/journal in txn: the last checkpointed generation (0: none yet). */
static int
spool_ckpt_get(struct spool *s, MDB_txn *txn, uint64_t *gen)
{
    MDB_val k = {sizeof(spool_meta_journal_key) - 1, (void *)spool_meta_journal_key}, v;
    int rc = mdb_get(txn, s->dbi_meta, &k, &v);

    *gen = 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return spool_mdb_err(rc);
    if (v.mv_size != 8)
        return MX2_E_CORRUPT;
    for (size_t i = 0; i < 8; i++)
        *gen = (*gen << 8) | ((const unsigned char *)v.mv_data)[i];
    return 0;
}

/* meta/journal as of now (its own read transaction). */
static int
spool_ckpt_now(struct spool *s, uint64_t *gen)
{
    MDB_txn *txn;
    int rc;

    *gen = 0;
    if ((rc = spool_rtxn(s, &txn)) != 0)
        return rc;
    rc = spool_ckpt_get(s, txn, gen);
    mdb_txn_abort(txn);
    return rc;
}

/* An LMDB code. */
static int
spool_ckpt_put(struct spool *s, MDB_txn *txn, uint64_t gen)
{
    MDB_val k = {sizeof(spool_meta_journal_key) - 1, (void *)spool_meta_journal_key};
    unsigned char b[8];
    MDB_val v = {sizeof(b), b};

    for (int i = 7; i >= 0; i--, gen >>= 8)
        b[i] = (unsigned char)(gen & 0xff);
    return mdb_put(txn, s->dbi_meta, &k, &v, 0);
}

/* Whether the next write transaction must take the journal's records along
 * (writer thread: it alone changes n and dirty). */
static int
spool_jpending(const struct spool *s)
{
    return s->j.fd >= 0 && !(s->flags & SPOOL_RDONLY) && (s->j.n > 0 || s->j.dirty);
}

/* The checkpoint, inside txn: put every pending journal record into LMDB and
 * record their generation as moved. Their IDs are above every key in LMDB
 * (each was issued after the last checkpoint, and a direct commit always
 * folds the journal first), so MDB_APPEND holds. An LMDB code. */
static int
spool_jfold(struct spool *s, MDB_txn *txn)
{
    struct spool_journal *j = &s->j;
    int rc;

    for (size_t i = 0; i < j->n; i++) {
        const struct spool_jent *e = &j->idx[i];
        MDB_val k = {QID_LEN, (void *)e->qid};
        MDB_val ev = {e->env_len, j->buf + e->off + JOURNAL_HDR};
        MDB_val bv = {e->body_len, j->buf + e->off + JOURNAL_HDR + e->env_len};
        if ((rc = mdb_put(txn, s->dbi_body, &k, &bv, MDB_APPEND)) != 0 ||
            (rc = mdb_put(txn, s->dbi_env, &k, &ev, MDB_APPEND)) != 0)
            return rc;
    }
    return spool_ckpt_put(s, txn, j->gen);
}

/* After the transaction that folded the journal committed: its records are
 * in LMDB, durably; the next ones start a new generation at offset 0. */
static void
spool_jclear(struct spool *s)
{
    pthread_mutex_lock(&s->j.mu);
    s->j.n = 0;
    s->j.tail = 0;
    s->j.gen++;
    s->j.dirty = 0;
    pthread_mutex_unlock(&s->j.mu);
}

/* Whether LMDB (map and disk) surely has room for the journal's records and
 * need more bytes at the checkpoint, with LMDB's page overhead: twice the
 * bytes and 64 KiB. A record acknowledged into the journal must be movable
 * into LMDB; when that is in doubt the round goes to LMDB directly and meets
 * its answer there (452 4.3.1 when full). */
static int
spool_journal_room(struct spool *s, size_t need)
{
    uint64_t avail;

    /* The writer refreshes the figure at least every 50 ms (writer.c);
     * a second old one is taken again here. */
    if ((s->room_ms == 0 || spool_mono_ms() - s->room_ms > 1000) &&
        spool_free_space(s, &avail) != 0)
        return 0;
    avail = s->room; /* the journal's share not taken off: it is counted below */
    return avail / 2 >= (uint64_t)s->j.tail + need + (64u << 10);
}

/* Journal msgs[0..n) with one pwrite and one fdatasync. Returns 1 when the
 * batch is not for the journal (no journal, a body in a temp file or too
 * large, an envelope that does not encode, no room left, or a failed write
 * not yet checkpointed): the caller stores it in LMDB, which also folds the
 * journal. Else 0 (every message durable, result 0) or the error every
 * message got (nothing acknowledged). */
static int
spool_journal_append(struct spool *s, struct spool_new *msgs, size_t n)
{
    struct spool_journal *j = &s->j;
    size_t need = 0, off = j->tail, len;
    int rc;

    if (j->fd < 0 || j->dirty)
        return 1;
    for (size_t i = 0; i < n; i++) {
        struct spool_new *m = &msgs[i];
        if (m->env == NULL || m->body_fd >= 0 || (m->body == NULL && m->body_len > 0))
            return 1;
        m->env->size = m->body_len;
        /* Sized with a stand-in ID: every ID has the same length. */
        memcpy(m->env->qid, "0000000000000", QID_SIZE);
        len = journal_rec_size(envelope_encoded_size(m->env), m->body_len);
        if (len == 0 || len > JOURNAL_REC_MAX)
            return 1;
        need += len;
    }
    if (need > j->cap - j->tail || !spool_journal_room(s, need))
        return 1;
    pthread_mutex_lock(&j->mu);
    if (j->n + n > j->alloc) {
        j->alloc = (j->n + n) * 2;
        j->idx = xrealloc(j->idx, j->alloc * sizeof(*j->idx));
    }
    pthread_mutex_unlock(&j->mu);
    for (size_t i = 0; i < n; i++) {
        struct spool_new *m = &msgs[i];
        struct spool_jent *e = &j->idx[j->n + i];
        size_t envlen = envelope_encoded_size(m->env), outlen;
        /* IDs are issued here by the one writer, as in spool_put_one. */
        qid_next(&s->gen, e->qid);
        memcpy(m->env->qid, e->qid, QID_SIZE);
        if (envelope_encode_to(m->env, j->buf + off + JOURNAL_HDR, envlen, &outlen) != 0 ||
            outlen != envlen)
            log_abort(); /* encoded_size said it encodes */
        if (m->body_len > 0)
            memcpy(j->buf + off + JOURNAL_HDR + envlen, m->body, m->body_len);
        e->off = off;
        e->env_len = envlen;
        e->body_len = m->body_len;
        e->total = journal_rec_size(envlen, m->body_len);
        journal_rec_seal(j->buf + off, e->total, j->gen, envlen);
        memcpy(m->qid, e->qid, QID_SIZE);
        off += e->total;
    }
    /* The durability point of a journaled message: the records are written
     * over blocks the journal's creation already allocated and synced, so
     * fdatasync has no metadata to write: one device flush. */
    rc = fsio_pwrite_all(j->fd, j->buf + j->tail, off - j->tail, (off_t)j->tail);
    if (rc == 0 && fdatasync(j->fd) != 0)
        rc = -errno;
    if (rc != 0) {
        /* Not acknowledged: wipe the records, so that neither a reader of
         * the file (mx2ctl) nor the next start takes them for queued mail
         * (best effort: the wipe may fail as the write did). Some of them
         * may still reach the disk: never append after them in this
         * generation (a later valid record would make them part of the
         * run). The next write checkpoints instead. */
        memset(j->buf + j->tail, 0, off - j->tail);
        if (fsio_pwrite_all(j->fd, j->buf + j->tail, off - j->tail, (off_t)j->tail) == 0)
            (void)fdatasync(j->fd);
        j->dirty = 1;
        rc = spool_mdb_err(-rc);
        for (size_t i = 0; i < n; i++) {
            msgs[i].result = rc;
            msgs[i].qid[0] = '\0';
        }
        return rc;
    }
    pthread_mutex_lock(&j->mu);
    if (j->n == 0)
        j->first_ms = spool_mono_ms();
    j->n += n;
    j->tail = off;
    pthread_mutex_unlock(&j->mu);
    for (size_t i = 0; i < n; i++)
        msgs[i].result = 0;
    return 0;
}

/* The whole file behind fd (pread: the offset is left alone). */
static int
spool_read_file(int fd, unsigned char **out, size_t *len)
{
    struct stat st;
    size_t got = 0;

    *out = NULL;
    *len = 0;
    if (fstat(fd, &st) != 0)
        return -errno;
    if (st.st_size <= 0)
        return 0;
    *out = xmalloc((size_t)st.st_size);
    while (got < (size_t)st.st_size) {
        ssize_t r = pread(fd, *out + got, (size_t)st.st_size - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int rc = -errno;
            free(*out);
            *out = NULL;
            return rc;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    *len = got;
    return 0;
}

struct spool_replay {
    struct spool *s;
    MDB_txn *txn;
    uint64_t ckpt;
    uint64_t stored, refused;
    int rc; /* an LMDB code that dooms txn */
};

/* One record of the journal's valid run into LMDB, checked as spool_restore
 * checks records; an ID already stored is left alone. */
static int
spool_replay_cb(void *arg, const struct journal_rec *r, size_t off)
{
    struct spool_replay *rp = arg;
    struct envelope e;
    char qid[QID_SIZE];
    int ok, rc;

    (void)off;
    if (r->gen <= rp->ckpt)
        return 1; /* an old generation: the last checkpoint holds it */
    if (envelope_decode(r->env, r->env_len, &e) != 0) {
        rp->refused++;
        return 0;
    }
    ok = e.size == r->body_len;
    memcpy(qid, e.qid, QID_SIZE);
    envelope_free(&e);
    if (!ok) {
        rp->refused++;
        return 0;
    }
    MDB_val k = {QID_LEN, qid}, ev = {r->env_len, (void *)r->env}, bv = {r->body_len, (void *)r->body};
    rc = mdb_put(rp->txn, rp->s->dbi_env, &k, &ev, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST)
        return 0;
    if (rc == 0)
        rc = mdb_put(rp->txn, rp->s->dbi_body, &k, &bv, 0);
    if (rc != 0) {
        rp->rc = rc;
        return 1;
    }
    {
        uint64_t v;
        if (qid_parse(qid, QID_LEN, &v) == 0)
            qid_gen_raise(&rp->s->gen, v);
    }
    rp->stored++;
    return 0;
}

/* At a read-write open: move the journal's valid run into LMDB when the last
 * checkpoint does not already hold it (a crash or kill came between a 250
 * and the checkpoint), in one durable commit that also records its
 * generation. *next_gen = the generation to write next. */
static int
spool_journal_replay(struct spool *s, const unsigned char *data, size_t len, uint64_t *next_gen)
{
    struct spool_replay rp = {.s = s};
    MDB_txn *txn;
    uint64_t gen;
    size_t end;
    int rc;

    if ((rc = spool_mdb_err(mdb_txn_begin(s->env, NULL, 0, &txn))) != 0)
        return rc;
    if ((rc = spool_ckpt_get(s, txn, &rp.ckpt)) != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    rp.txn = txn;
    journal_scan(data, len, spool_replay_cb, &rp, &gen, &end);
    *next_gen = (gen > rp.ckpt ? gen : rp.ckpt) + 1;
    if (rp.rc != 0 || gen <= rp.ckpt) {
        mdb_txn_abort(txn);
        return spool_mdb_err(rp.rc);
    }
    if ((rc = spool_ckpt_put(s, txn, gen)) != 0) {
        mdb_txn_abort(txn);
        return spool_mdb_err(rc);
    }
    if ((rc = spool_mdb_err(mdb_txn_commit(txn))) == 0)
        s->j.replayed = rp.stored;
    return rc;
}

/* A new journal of size bytes: zeros written and synced (so that appends
 * overwrite allocated blocks), then renamed into place. */
static int
spool_journal_create(const char *qdir, const char *path, size_t size, int *fd_out)
{
    char *tmp = spool_join(qdir, "journal.new");
    unsigned char *zero = xcalloc(1, 256u << 10);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), rc = 0;

    if (fd < 0)
        rc = -errno;
    for (size_t off = 0; rc == 0 && off < size; off += 256u << 10)
        rc = fsio_pwrite_all(fd, zero, size - off < (256u << 10) ? size - off : 256u << 10,
                             (off_t)off);
    if (rc == 0)
        rc = fsio_durable_rename(fd, tmp, path);
    free(zero);
    if (rc != 0) {
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        free(tmp);
        return rc;
    }
    free(tmp);
    *fd_out = fd;
    return 0;
}

/* Open the journal: read-only, just the descriptor (views read the file).
 * Read-write: replay what a crash left, then use the file when it has the
 * configured size, or replace it. A journal that cannot be created (a full
 * disk) is not an error: messages then go to LMDB directly, as with
 * MX2_JOURNAL_SIZE=0. */
static int
spool_journal_open(struct spool *s, const char *qdir)
{
    struct spool_journal *j = &s->j;
    char *path = spool_join(qdir, "journal");
    int rdonly = (s->flags & SPOOL_RDONLY) != 0;
    uint64_t next_gen = 0;
    size_t want = 0, len;
    unsigned char *data;
    int fd, rc;

    if (!rdonly && (rc = spool_journal_size(&want)) != 0)
        goto out;
    fd = open(path, (rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT) {
        rc = -errno;
        goto out;
    }
    if (rdonly) {
        /* Views open the file each time: mx2d may replace it (another
         * size) or create it after this open. */
        if (fd >= 0)
            close(fd);
        j->path = path;
        path = NULL;
        rc = 0;
        goto out;
    }
    if (fd >= 0) {
        struct stat st;
        if ((rc = spool_read_file(fd, &data, &len)) != 0) {
            close(fd);
            goto out;
        }
        rc = spool_journal_replay(s, data, len, &next_gen);
        free(data);
        if (rc != 0) {
            close(fd);
            goto out;
        }
        if (want > 0 && fstat(fd, &st) == 0 && (size_t)st.st_size == want) {
            j->fd = fd;
            goto ready;
        }
        /* Another size, or no journal wanted: everything is in LMDB now. */
        close(fd);
        if (want == 0) {
            rc = unlink(path) == 0 ? fsio_fsync_dir(qdir) : -errno;
            goto out;
        }
    } else {
        uint64_t ckpt;
        if ((rc = spool_ckpt_now(s, &ckpt)) != 0)
            goto out;
        next_gen = ckpt + 1;
        if (want == 0)
            goto out;
    }
    if (spool_journal_create(qdir, path, want, &j->fd) != 0) {
        j->fd = -1;
        rc = 0;
        goto out;
    }
ready:
    j->cap = want;
    j->gen = next_gen;
    j->buf = xmalloc(want);
    rc = 0;
out:
    free(path);
    return rc;
}

/* A reader's copy of the journal's pending records: taken BEFORE the read
 * transaction it is combined with, and used only when that transaction's
 * checkpoint is older than gen (spool_jview_live). A checkpoint commits and
 * only then clears the journal, so every message is in the copy, in the
 * snapshot, or in both (the snapshot wins). */
struct spool_jview {
    uint64_t gen;
    unsigned char *mem; /* the records; idx[].off index into it */
    struct spool_jent *idx;
    size_t n, alloc;
};

static void
spool_jview_free(struct spool_jview *v)
{
    free(v->mem);
    free(v->idx);
    memset(v, 0, sizeof(*v));
}

static int
spool_jent_cmp(const void *key, const void *ent)
{
    return memcmp(key, ((const struct spool_jent *)ent)->qid, QID_LEN);
}

static const struct spool_jent *
spool_jview_find(const struct spool_jview *v, const char *qid)
{
    return v->n == 0 ? NULL : bsearch(qid, v->idx, v->n, sizeof(*v->idx), spool_jent_cmp);
}

/* Index one record of a journal file read by mx2ctl. The ID is taken from
 * the envelope record (offset 5); decoding checks it again before use. */
static int
spool_jview_cb(void *arg, const struct journal_rec *r, size_t off)
{
    struct spool_jview *v = arg;
    struct spool_jent *e;

    if (r->env_len < 5 + QID_LEN || qid_parse((const char *)r->env + 5, QID_LEN, NULL) != 0)
        return 0;
    /* Keep the index sorted for bsearch: an ID out of order (never written
     * by mx2d) is left out. */
    if (v->n > 0 && memcmp(r->env + 5, v->idx[v->n - 1].qid, QID_LEN) <= 0)
        return 0;
    if (v->n == v->alloc) {
        v->alloc = v->alloc ? v->alloc * 2 : 64;
        v->idx = xrealloc(v->idx, v->alloc * sizeof(*v->idx));
    }
    e = &v->idx[v->n];
    memcpy(e->qid, r->env + 5, QID_LEN);
    e->qid[QID_LEN] = '\0';
    e->off = off;
    e->env_len = r->env_len;
    e->body_len = r->body_len;
    e->total = r->total;
    v->n++;
    return 0;
}

/* Take a view of the pending records (all, or only qid's). */
static int
spool_jview_take(struct spool *s, const char *qid, struct spool_jview *v)
{
    struct spool_journal *j = &s->j;
    size_t len, end;
    int rc, fd;

    memset(v, 0, sizeof(*v));
    if (!(s->flags & SPOOL_RDONLY)) {
        if (j->fd < 0)
            return 0;
        pthread_mutex_lock(&j->mu);
        v->gen = j->gen;
        if (qid != NULL) {
            const struct spool_jent *e =
                j->n ? bsearch(qid, j->idx, j->n, sizeof(*j->idx), spool_jent_cmp) : NULL;
            if (e != NULL) {
                v->mem = xmalloc(e->total);
                memcpy(v->mem, j->buf + e->off, e->total);
                v->idx = xmalloc(sizeof(*v->idx));
                v->idx[0] = *e;
                v->idx[0].off = 0;
                v->n = 1;
            }
        } else if (j->n > 0) {
            v->mem = xmalloc(j->tail);
            memcpy(v->mem, j->buf, j->tail);
            v->idx = xmalloc(j->n * sizeof(*v->idx));
            memcpy(v->idx, j->idx, j->n * sizeof(*v->idx));
            v->n = j->n;
        }
        pthread_mutex_unlock(&j->mu);
        return 0;
    }
    /* mx2ctl: the file as it is now (mx2d may be writing it: a record cut
     * by a concurrent write fails its CRC and ends the run). Usually the
     * run is one the database already holds (mx2d checkpoints within
     * 200 ms, and at every stop): the first record's generation says so
     * without reading the rest. The checkpoint is read BEFORE the file: it
     * only grows, so the snapshot taken after the file holds at least it. */
    {
        unsigned char hdr[JOURNAL_HDR];
        uint64_t ckpt, gen = 0;
        ssize_t got;
        if ((rc = spool_ckpt_now(s, &ckpt)) != 0)
            return rc;
        if (j->path == NULL || (fd = open(j->path, O_RDONLY | O_CLOEXEC)) < 0)
            return j->path == NULL || errno == ENOENT ? 0 : -errno;
        got = pread(fd, hdr, sizeof(hdr), 0);
        for (size_t i = 8; i < 16; i++)
            gen = (gen << 8) | hdr[i];
        if (got != (ssize_t)sizeof(hdr) || memcmp(hdr, "MX2J", 4) != 0 || gen <= ckpt) {
            close(fd);
            return 0;
        }
    }
    rc = spool_read_file(fd, &v->mem, &len);
    close(fd);
    if (rc != 0)
        return rc;
    journal_scan(v->mem, len, spool_jview_cb, v, &v->gen, &end);
    return 0;
}

/* Whether view v holds records the snapshot txn does not. */
static int
spool_jview_live(struct spool *s, MDB_txn *txn, const struct spool_jview *v)
{
    uint64_t ckpt;

    return v->n > 0 && spool_ckpt_get(s, txn, &ckpt) == 0 && ckpt < v->gen;
}

/* Decode the view's record e, checked as a walk checks LMDB's records. */
static int
spool_jview_decode(const struct spool_jview *v, const struct spool_jent *e, struct envelope *out)
{
    int rc = envelope_decode(v->mem + e->off + JOURNAL_HDR, e->env_len, out);

    if (rc == 0 && (memcmp(out->qid, e->qid, QID_LEN) != 0 || out->size != e->body_len)) {
        envelope_free(out);
        rc = MX2_E_CORRUPT;
    }
    return rc;
}

int
spool_checkpoint(struct spool *s)
{
    MDB_txn *txn = NULL;
    int rc;

    if (s->flags & SPOOL_RDONLY)
        return MX2_E_INVAL;
    if (!spool_jpending(s))
        return 0;
    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc == 0)
        rc = spool_jfold(s, txn);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn != NULL)
        mdb_txn_abort(txn);
    if ((rc = spool_write_err(s, rc)) == 0)
        spool_jclear(s);
    return rc;
}

void
spool_journal_pending(struct spool *s, size_t *bytes, uint64_t *age_ms)
{
    *bytes = 0;
    *age_ms = 0;
    if (!spool_jpending(s))
        return;
    *bytes = s->j.tail > 0 ? s->j.tail : 1;
    *age_ms = spool_mono_ms() - s->j.first_ms;
}

size_t
spool_journal_cap(const struct spool *s)
{
    return s->j.fd >= 0 && !(s->flags & SPOOL_RDONLY) ? s->j.cap : 0;
}

uint64_t
spool_journal_replayed(const struct spool *s)
{
    return s->j.replayed;
}

int
spool_journal_salvage(struct spool *into, const char *qdir, uint64_t done_gen, uint64_t *copied,
                      uint64_t *refused)
{
    char *path = spool_join(qdir, "journal");
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc;
    struct spool_jview v = {0};
    struct spool_raw *recs;
    size_t len, end;

    free(path);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    rc = spool_read_file(fd, &v.mem, &len);
    close(fd);
    if (rc != 0)
        return rc;
    journal_scan(v.mem, len, spool_jview_cb, &v, &v.gen, &end);
    if (v.gen <= done_gen)
        v.n = 0; /* the damaged copy had moved this run in already */
    recs = xcalloc(v.n + 1, sizeof(*recs));
    for (size_t i = 0; i < v.n; i++) {
        recs[i].key = v.idx[i].qid;
        recs[i].key_len = QID_LEN;
        recs[i].env = v.mem + v.idx[i].off + JOURNAL_HDR;
        recs[i].env_len = v.idx[i].env_len;
        recs[i].body = v.mem + v.idx[i].off + JOURNAL_HDR + v.idx[i].env_len;
        recs[i].body_len = v.idx[i].body_len;
    }
    rc = v.n > 0 ? spool_restore(into, recs, v.n) : 0;
    for (size_t i = 0; rc == 0 && i < v.n; i++) {
        if (recs[i].result == 0)
            (*copied)++;
        else if (recs[i].result != MX2_E_EXISTS)
            (*refused)++;
    }
    free(recs);
    spool_jview_free(&v);
    return rc;
}

int
spool_open(const char *dir, unsigned flags, struct spool **out)
{
    struct spool *s;
    char *qdir = NULL;
    size_t mapsize;
    int rc;

    *out = NULL;
    if (dir == NULL || *dir == '\0' || (flags & ~SPOOL_RDONLY))
        return MX2_E_INVAL;
    if ((rc = spool_mapsize(&mapsize)) != 0)
        return rc;
    s = xcalloc(1, sizeof(*s));
    s->dir = xstrdup(dir);
    s->tmpdir = spool_join(dir, "tmp");
    s->flags = flags;
    s->j.fd = -1;
    pthread_mutex_init(&s->j.mu, NULL);
    atomic_init(&s->tmp_seq, 0);
    qdir = spool_join(dir, "queue");

    if (flags & SPOOL_RDONLY) {
        /* Create nothing: a missing spool is the operator's news. */
        char *data = spool_join(qdir, "data.mdb");
        struct stat st;
        rc = stat(data, &st) != 0 ? -errno : 0;
        free(data);
        if (rc != 0)
            goto fail;
    } else {
        if ((rc = fsio_mkdirs(qdir, 0700)) != 0 || (rc = fsio_mkdirs(s->tmpdir, 0700)) != 0)
            goto fail;
    }

    if ((rc = mdb_env_create(&s->env)) != 0) {
        rc = spool_mdb_err(rc);
        goto fail;
    }
    mdb_env_set_maxdbs(s->env, 4);
    mdb_env_set_maxreaders(s->env, spool_maxreaders());
    if (!(flags & SPOOL_RDONLY))
        mdb_env_set_mapsize(s->env, mapsize);
    /* Default sync mode: mdb_txn_commit returns after fdatasync of the data
     * pages and of the meta page. That return is what 250 waits for. */
    rc = mdb_env_open(s->env, qdir, MDB_NOTLS | ((flags & SPOOL_RDONLY) ? MDB_RDONLY : 0), 0600);
    if (rc != 0) {
        rc = spool_mdb_err(rc);
        goto fail;
    }
    if ((rc = spool_check_size(s, qdir)) != 0 || (rc = spool_open_dbs(s)) != 0 ||
        (rc = spool_journal_open(s, qdir)) != 0)
        goto fail;
    if (!(flags & SPOOL_RDONLY)) {
        /* data.mdb and lock.mdb may have just been created: make their
         * directory entries (and queue/, tmp/ themselves) durable before
         * anything is acknowledged. */
        if ((rc = fsio_fsync_dir(qdir)) != 0 || (rc = fsio_fsync_dir(dir)) != 0)
            goto fail;
    }
    free(qdir);
    *out = s;
    return 0;

fail:
    free(qdir);
    spool_close(s);
    return rc;
}

/* The address range of the mapping of the file st describes (device and
 * inode, from offset 0) in /proc/self/maps: LMDB does not tell where it
 * mapped data.mdb (me_mapaddr is only set for a fixed map). */
static int
spool_map_range(const struct stat *st, uintptr_t *lo, uintptr_t *hi)
{
    char line[512];
    FILE *f = fopen("/proc/self/maps", "re");
    int rc = MX2_E_NOT_FOUND;

    if (f == NULL)
        return -errno;
    /* "lo-hi perms offset major:minor inode path" */
    while (rc != 0 && fgets(line, sizeof(line), f) != NULL) {
        char *e, *p;
        unsigned long a = strtoul(line, &e, 16), b, off, maj, mnr, ino;
        if (*e != '-')
            continue;
        b = strtoul(e + 1, &e, 16);
        if (*e != ' ' || (p = strchr(e + 1, ' ')) == NULL)
            continue;
        off = strtoul(p + 1, &e, 16);
        maj = strtoul(e + 1, &e, 16);
        if (*e != ':')
            continue;
        mnr = strtoul(e + 1, &e, 16);
        ino = strtoul(e + 1, &e, 10);
        if (off == 0 && b > a && ino == (unsigned long)st->st_ino &&
            makedev((unsigned)maj, (unsigned)mnr) == st->st_dev) {
            *lo = (uintptr_t)a;
            *hi = (uintptr_t)b;
            rc = 0;
        }
    }
    fclose(f);
    return rc;
}

int
spool_release_pages(struct spool *spool)
{
    MDB_val k = {sizeof(spool_meta_version_key) - 1, (void *)spool_meta_version_key}, v;
    MDB_envinfo info;
    MDB_stat ms;
    MDB_txn *txn;
    struct stat st;
    uintptr_t lo = 0, hi = 0, at;
    uint64_t used;
    int fd, rc;

    if (mdb_env_get_fd(spool->env, &fd) != 0 || fstat(fd, &st) != 0)
        return MX2_E_INTERNAL;
    /* Found anew each time, under a read transaction: while one is open,
     * this process cannot remap (a read-only spool remaps when a writer
     * grew the map), so the range cannot move before madvise. The base is
     * derived from a pointer LMDB gave into the map, checked against it. */
    if ((rc = spool_rtxn(spool, &txn)) != 0)
        return rc;
    if ((rc = spool_mdb_err(mdb_get(txn, spool->dbi_meta, &k, &v))) == 0 &&
        (rc = spool_map_range(&st, &lo, &hi)) == 0) {
        at = (uintptr_t)v.mv_data;
        if (at < lo || at >= hi || mdb_env_info(spool->env, &info) != 0 ||
            mdb_env_stat(spool->env, &ms) != 0) {
            rc = MX2_E_INTERNAL;
        } else {
            used = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
            if (used > hi - lo)
                used = hi - lo;
            /* A shared file mapping: the pages stay in the page cache (and
             * on disk); only this process's page-table entries go. A reader
             * touching a page afterwards, even one holding a pointer into it
             * now, faults the same bytes back in. */
            if (madvise((char *)v.mv_data - (at - lo), (size_t)used, MADV_DONTNEED) != 0)
                rc = -errno;
        }
    }
    mdb_txn_abort(txn);
    return rc;
}

/* ---- probing before the open (spool_probe) ---- */

enum { SPOOL_PROBE_OK = 0, SPOOL_PROBE_OTHER = 2, SPOOL_PROBE_DAMAGED = 3, SPOOL_PROBE_FAULT = 4 };

/* In the probe child: a fault is the answer, not a crash to report. */
static void
spool_probe_on_fault(int sig)
{
    (void)sig;
    _exit(SPOOL_PROBE_FAULT);
}

/* A read-only walk that fails: LMDB reports a page that does not parse as
 * MDB_CORRUPTED, or, depending on where the damage sits, with codes we do
 * not map (MX2_E_INTERNAL). Either way the tree cannot be trusted. Another
 * LMDB's format or a system error is not damage. */
static int
spool_probe_verdict(int rc)
{
    return rc == MX2_E_CORRUPT || rc == MX2_E_INTERNAL ? SPOOL_PROBE_DAMAGED : SPOOL_PROBE_OTHER;
}

/* Every record of dbi, and for the envelopes their body's record. */
static int
spool_probe_db(struct spool *s, MDB_txn *txn, MDB_dbi dbi)
{
    MDB_cursor *cur;
    MDB_val k, v, b;
    int rc;

    if (mdb_cursor_open(txn, dbi, &cur) != 0)
        return SPOOL_PROBE_OTHER;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (dbi == s->dbi_env) {
            int brc = mdb_get(txn, s->dbi_body, &k, &b);
            if (brc != 0 && brc != MDB_NOTFOUND) {
                rc = brc;
                break;
            }
        }
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
        return SPOOL_PROBE_OK;
    return spool_probe_verdict(spool_mdb_err(rc));
}

static int
spool_probe_child(const char *dir)
{
    struct sigaction sa;
    struct spool *s = NULL;
    MDB_txn *txn;
    int rc;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = spool_probe_on_fault;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGFPE, &sa, NULL);
    /* The read-only open reads the meta database and the journal. */
    rc = spool_open(dir, SPOOL_RDONLY, &s);
    if (rc != 0 || s == NULL)
        return spool_probe_verdict(rc);
    if (spool_rtxn(s, &txn) != 0) {
        spool_close(s);
        return SPOOL_PROBE_OTHER;
    }
    /* 0 is LMDB's free-page database: a writer allocates from it. */
    if ((rc = spool_probe_db(s, txn, 0)) == SPOOL_PROBE_OK &&
        (rc = spool_probe_db(s, txn, s->dbi_env)) == SPOOL_PROBE_OK)
        rc = spool_probe_db(s, txn, s->dbi_body);
    mdb_txn_abort(txn);
    spool_close(s); /* frees its reader slot before the parent opens */
    return rc;
}

int
spool_probe(const char *dir)
{
    int status;
    pid_t pid = fork();

    if (pid < 0)
        return 0; /* no probe; the open itself will do */
    if (pid == 0)
        _exit(spool_probe_child(dir)); /* no atexit handlers: the parent's */
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 0;
    if (WIFSIGNALED(status))
        return MX2_E_CORRUPT;
    if (WIFEXITED(status) &&
        (WEXITSTATUS(status) == SPOOL_PROBE_DAMAGED || WEXITSTATUS(status) == SPOOL_PROBE_FAULT))
        return MX2_E_CORRUPT;
    return 0;
}

int
spool_set_aside(const char *dir, char *moved_to, size_t n)
{
    char *qdir = spool_join(dir, "queue"), *aside = spool_join(dir, "quarantine");
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    int rc, len;

    if (gmtime_r(&now, &tm) == NULL || strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm) == 0)
        snprintf(stamp, sizeof(stamp), "%lld", (long long)now);
    rc = fsio_mkdirs(aside, 0700);
    for (int i = 0; rc == 0; i++) {
        len = i == 0 ? snprintf(moved_to, n, "%s/queue.%s", aside, stamp)
                     : snprintf(moved_to, n, "%s/queue.%s.%d", aside, stamp, i);
        if (len < 0 || (size_t)len >= n) {
            rc = -ENAMETOOLONG;
            break;
        }
        /* Never replace an earlier copy (rename would, over an empty dir). */
        if (access(moved_to, F_OK) == 0 && i < 100)
            continue;
        if (rename(qdir, moved_to) != 0)
            rc = -errno;
        break;
    }
    if (rc == 0 && (rc = fsio_fsync_dir(aside)) == 0)
        rc = fsio_fsync_dir(dir);
    free(qdir);
    free(aside);
    return rc;
}

void
spool_close(struct spool *spool)
{
    if (spool == NULL)
        return;
    if (spool->env != NULL)
        mdb_env_close(spool->env);
    if (spool->j.fd >= 0)
        close(spool->j.fd);
    free(spool->j.buf);
    free(spool->j.idx);
    free(spool->j.path);
    pthread_mutex_destroy(&spool->j.mu);
    free(spool->dir);
    free(spool->tmpdir);
    free(spool);
}

const char *
spool_dir(const struct spool *spool)
{
    return spool->dir;
}

/* ---- receiving ---- */

int
spool_tmp_open(struct spool *spool, int *fd, char *path_out)
{
    struct timespec ts;

    *fd = -1;
    if (spool->flags & SPOOL_RDONLY)
        return MX2_E_INVAL;
    clock_gettime(CLOCK_REALTIME, &ts);
    for (int tries = 0; tries < 100; tries++) {
        unsigned long seq = atomic_fetch_add(&spool->tmp_seq, 1);
        int n = snprintf(path_out, SPOOL_PATH_MAX, "%s/%lld.%ld.%lu", spool->tmpdir,
                         (long long)ts.tv_sec, (long)getpid(), seq);
        if (n < 0 || n >= SPOOL_PATH_MAX)
            return -ENAMETOOLONG;
        *fd = open(path_out, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (*fd >= 0)
            return 0;
        if (errno != EEXIST && errno != EINTR)
            return errno == ENOSPC || errno == EDQUOT ? MX2_E_SPOOL : -errno;
    }
    return -EEXIST;
}

/* Fill dst with len bytes from offset 0 of fd. A file shorter than the
 * caller said is -EIO: storing a truncated message would be silent loss. */
static int
spool_pread_all(int fd, unsigned char *dst, size_t len)
{
    size_t off = 0;

    while (off < len) {
        ssize_t r = pread(fd, dst + off, len - off, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EIO;
        off += (size_t)r;
    }
    return 0;
}

/* Put one message into txn. Returns 0 (stored, msg->qid set), a per-message
 * error in msg->result with return 0 (skipped, txn still good), or an LMDB
 * code (< 0 translated) that dooms the whole transaction. */
static int
spool_put_one(struct spool *s, MDB_txn *txn, struct spool_new *m)
{
    struct envelope *e = m->env;
    char qid[QID_SIZE];
    size_t envlen, outlen;
    MDB_val k, v;
    int rc;

    m->qid[0] = '\0';
    if (e == NULL || (m->body_fd < 0 && m->body == NULL && m->body_len > 0)) {
        m->result = MX2_E_INVAL;
        return 0;
    }
    /* The ID is assigned here, inside the transaction, by the one writer:
     * keys are therefore strictly increasing and MDB_APPEND is valid. */
    qid_next(&s->gen, qid);
    memcpy(e->qid, qid, QID_SIZE);
    e->size = m->body_len;
    envlen = envelope_encoded_size(e);
    if (envlen == 0) {
        m->result = MX2_E_INVAL;
        return 0;
    }

    k.mv_size = QID_LEN;
    k.mv_data = qid;
    v.mv_size = m->body_len;
    v.mv_data = NULL;
    rc = mdb_put(txn, s->dbi_body, &k, &v, MDB_RESERVE | MDB_APPEND);
    if (rc != 0)
        return rc;
    /* Copy the body straight into the page LMDB reserved: no intermediate
     * buffer, so the writer's memory is the transaction's dirty pages. */
    if (m->body_fd >= 0) {
        rc = spool_pread_all(m->body_fd, v.mv_data, m->body_len);
        if (rc != 0) {
            int drc = mdb_del(txn, s->dbi_body, &k, NULL);
            if (drc != 0)
                return drc;
            m->result = rc;
            return 0;
        }
    } else if (m->body_len > 0) {
        memcpy(v.mv_data, m->body, m->body_len);
    }

    v.mv_size = envlen;
    v.mv_data = NULL;
    rc = mdb_put(txn, s->dbi_env, &k, &v, MDB_RESERVE | MDB_APPEND);
    if (rc != 0)
        return rc;
    if (envelope_encode_to(e, v.mv_data, envlen, &outlen) != 0 || outlen != envlen)
        log_abort(); /* encoded_size said it encodes: a broken invariant */
    memcpy(m->qid, qid, QID_SIZE);
    m->result = 1; /* stored in this txn; becomes 0 when the commit succeeds */
    return 0;
}

/* One transaction over msgs[0..n), taking the journal's pending records
 * along first when fold is set. Returns 0 or the commit error. */
static int
spool_commit_txn(struct spool *s, struct spool_new *msgs, size_t n, int fold)
{
    MDB_txn *txn = NULL;
    int rc;

    fold = fold && spool_jpending(s);
    /* A failed begin (MDB_PANIC after a failed meta write) leaves txn unset:
     * only a transaction that began is aborted. */
    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc == 0 && fold)
        rc = spool_jfold(s, txn);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = spool_put_one(s, txn, &msgs[i]);
    if (rc == 0) {
        /* The durability point: LMDB writes the dirty pages, fdatasyncs,
         * writes the meta page that makes them reachable, fdatasyncs. */
        rc = mdb_txn_commit(txn);
    } else if (txn != NULL) {
        mdb_txn_abort(txn);
    }
    rc = spool_write_err(s, rc);
    if (rc == 0 && fold)
        spool_jclear(s);
    for (size_t i = 0; i < n; i++) {
        if (rc != 0) {
            msgs[i].result = rc;
            msgs[i].qid[0] = '\0';
        } else if (msgs[i].result == 1) {
            msgs[i].result = 0;
        }
    }
    return rc;
}

int
spool_commit(struct spool *spool, struct spool_new *msgs, size_t n)
{
    size_t start = 0;
    int first_err = 0;

    if (spool->flags & SPOOL_RDONLY) {
        for (size_t i = 0; i < n; i++)
            msgs[i].result = MX2_E_INVAL;
        return MX2_E_INVAL;
    }
    /* Small messages: the journal, one sync, checkpointed later. */
    if ((first_err = spool_journal_append(spool, msgs, n)) != 1)
        return first_err;
    first_err = 0;
    while (start < n) {
        size_t end = start, bytes = 0;
        /* At least one message per transaction; more while under the cap. */
        do {
            bytes += msgs[end].body_len;
            end++;
        } while (end < n && bytes + msgs[end].body_len <= SPOOL_TXN_BYTES);
        /* Every transaction folds the journal while it has records: a
         * key stored past them would break MDB_APPEND's order for good. */
        int rc = spool_commit_txn(spool, msgs + start, end - start, 1);
        if (rc != 0 && first_err == 0)
            first_err = rc;
        start = end;
    }
    return first_err;
}

int
spool_restore(struct spool *s, struct spool_raw *recs, size_t n)
{
    MDB_txn *txn;
    int rc;

    if (s->flags & SPOOL_RDONLY)
        return MX2_E_INVAL;
    if ((rc = spool_mdb_err(mdb_txn_begin(s->env, NULL, 0, &txn))) != 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct spool_raw *r = &recs[i];
        MDB_val k = {r->key_len, (void *)r->key}, ev = {r->env_len, (void *)r->env};
        MDB_val bv = {r->body_len, (void *)r->body};
        struct envelope e;
        r->result = MX2_E_CORRUPT;
        if (envelope_decode(r->env, r->env_len, &e) != 0)
            continue;
        int ok = r->key_len == QID_LEN && memcmp(r->key, e.qid, QID_LEN) == 0 &&
                 r->body != NULL && r->body_len == e.size;
        envelope_free(&e);
        if (!ok)
            continue;
        int prc = mdb_put(txn, s->dbi_env, &k, &ev, MDB_NOOVERWRITE);
        if (prc == MDB_KEYEXIST) {
            r->result = MX2_E_EXISTS;
            continue;
        }
        if (prc == 0)
            prc = mdb_put(txn, s->dbi_body, &k, &bv, 0);
        if (prc != 0)
            rc = spool_mdb_err(prc);
        else
            r->result = 0;
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        for (size_t i = 0; i < n; i++)
            recs[i].result = rc;
        return rc;
    }
    rc = spool_mdb_err(mdb_txn_commit(txn));
    if (rc != 0)
        for (size_t i = 0; i < n; i++)
            recs[i].result = rc;
    return rc;
}

/* ---- state changes ---- */

/* Apply op to the decoded envelope e. 0 or MX2_E_INVAL. */
static int
spool_apply(struct envelope *e, const struct spool_op *op)
{
    switch (op->kind) {
    case SPOOL_OP_RCPT: {
        if (op->rcpt >= e->nrcpt || (unsigned)op->state > ENVELOPE_RCPT_DEFERRED || op->when < 0)
            return MX2_E_INVAL;
        struct envelope_rcpt *r = &e->rcpts[op->rcpt];
        r->state = op->state;
        r->attempts = op->attempts;
        r->last_attempt = op->when;
        if (op->error != NULL)
            envelope_set_error(r, op->error, strlen(op->error));
        return 0;
    }
    case SPOOL_OP_SCHEDULE:
        if (op->first_failure < 0 || op->next_attempt < 0)
            return MX2_E_INVAL;
        e->attempts = op->attempts;
        e->first_failure = op->first_failure;
        e->next_attempt = op->next_attempt;
        return 0;
    case SPOOL_OP_HOLD:
        e->flags |= ENVELOPE_F_HOLD;
        return 0;
    case SPOOL_OP_RELEASE:
        e->flags &= ~ENVELOPE_F_HOLD;
        e->next_attempt = 0;
        return 0;
    case SPOOL_OP_WARNED:
        e->flags |= ENVELOPE_F_WARNED;
        return 0;
    case SPOOL_OP_DSN_SENT:
        if (op->rcpt == SPOOL_RCPT_ALL) {
            for (size_t i = 0; i < e->nrcpt; i++)
                if (e->rcpts[i].state == ENVELOPE_RCPT_BOUNCED)
                    e->rcpts[i].flags |= ENVELOPE_RF_DSN_SENT;
            return 0;
        }
        if (op->rcpt >= e->nrcpt)
            return MX2_E_INVAL;
        e->rcpts[op->rcpt].flags |= ENVELOPE_RF_DSN_SENT;
        return 0;
    case SPOOL_OP_DELETE:
        break;
    }
    return MX2_E_INVAL;
}

/* One op inside txn. Per-op failures go to op->result (return 0); a
 * non-zero return is an LMDB error that dooms the transaction. */
static int
spool_op_one(struct spool *s, MDB_txn *txn, struct spool_op *op)
{
    MDB_val k = {QID_LEN, op->qid}, v;
    struct envelope e;
    size_t len, outlen;
    int rc;

    if (qid_parse(op->qid, strnlen(op->qid, QID_SIZE), NULL) != 0) {
        op->result = MX2_E_INVAL;
        return 0;
    }
    if (op->kind == SPOOL_OP_DELETE) {
        rc = mdb_del(txn, s->dbi_env, &k, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return rc;
        op->result = rc == MDB_NOTFOUND ? MX2_E_NOT_FOUND : 0;
        rc = mdb_del(txn, s->dbi_body, &k, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return rc;
        return 0;
    }
    rc = mdb_get(txn, s->dbi_env, &k, &v);
    if (rc == MDB_NOTFOUND) {
        op->result = MX2_E_NOT_FOUND;
        return 0;
    }
    if (rc != 0)
        return rc;
    if (envelope_decode(v.mv_data, v.mv_size, &e) != 0) {
        op->result = MX2_E_CORRUPT;
        return 0;
    }
    op->result = spool_apply(&e, op);
    if (op->result == 0) {
        len = envelope_encoded_size(&e);
        if (len == 0) {
            op->result = MX2_E_INVAL;
        } else {
            v.mv_size = len;
            v.mv_data = NULL;
            rc = mdb_put(txn, s->dbi_env, &k, &v, MDB_RESERVE);
            if (rc == 0 && (envelope_encode_to(&e, v.mv_data, len, &outlen) != 0 || outlen != len))
                log_abort(); /* encoded_size said it encodes */
        }
    }
    envelope_free(&e);
    return rc;
}

/* One transaction over ops; fold: take the journal's records along first.
 * Without fold, an op naming a journaled message is left alone with
 * MX2_E_SPOOL (it would not find it). */
static int
spool_update_txn(struct spool *spool, struct spool_op *ops, size_t n, int fold)
{
    MDB_txn *txn = NULL;
    int rc, skip = !fold && spool_jpending(spool);

    rc = mdb_txn_begin(spool->env, NULL, 0, &txn);
    if (rc == 0 && fold)
        rc = spool_jfold(spool, txn);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (skip && spool->j.n > 0 &&
            bsearch(ops[i].qid, spool->j.idx, spool->j.n, sizeof(*spool->j.idx),
                    spool_jent_cmp) != NULL) {
            ops[i].result = MX2_E_SPOOL;
            continue;
        }
        rc = spool_op_one(spool, txn, &ops[i]);
    }
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn != NULL)
        mdb_txn_abort(txn);
    rc = spool_write_err(spool, rc);
    if (rc == 0 && fold)
        spool_jclear(spool);
    if (rc != 0)
        for (size_t i = 0; i < n; i++)
            ops[i].result = rc;
    return rc;
}

int
spool_update(struct spool *spool, struct spool_op *ops, size_t n)
{
    int rc, fold;

    if (spool->flags & SPOOL_RDONLY) {
        for (size_t i = 0; i < n; i++)
            ops[i].result = MX2_E_INVAL;
        return MX2_E_INVAL;
    }
    /* The journal's records go along (the checkpoint): the ops may name
     * them, and this commit costs the same with them. */
    fold = spool_jpending(spool);
    rc = spool_update_txn(spool, ops, n, fold);
    if (rc == MX2_E_SPOOL && fold && n > 0) {
        /* The journal's records did not fit (the disk filled up under us):
         * still record the ops on messages already in LMDB -- deliveries
         * and deletes are what frees space -- and leave those naming
         * journaled messages (MX2_E_SPOOL) to be tried again. */
        rc = spool_update_txn(spool, ops, n, 0);
    }
    return rc;
}

/* ---- reading ---- */

int
spool_get(struct spool *spool, const char *qid, struct envelope *out)
{
    struct spool_jview jv;
    const struct spool_jent *je;
    MDB_txn *txn;
    MDB_val k, v;
    int rc;

    memset(out, 0, sizeof(*out));
    if (!qid_valid(qid))
        return MX2_E_INVAL;
    if ((rc = spool_jview_take(spool, qid, &jv)) != 0)
        return rc;
    if ((rc = spool_rtxn(spool, &txn)) != 0) {
        spool_jview_free(&jv);
        return rc;
    }
    k.mv_size = QID_LEN;
    k.mv_data = (void *)qid;
    rc = mdb_get(txn, spool->dbi_env, &k, &v);
    if (rc == 0)
        rc = envelope_decode(v.mv_data, v.mv_size, out);
    else if (rc == MDB_NOTFOUND && spool_jview_live(spool, txn, &jv) &&
             (je = spool_jview_find(&jv, qid)) != NULL)
        rc = spool_jview_decode(&jv, je, out);
    else
        rc = spool_mdb_err(rc);
    mdb_txn_abort(txn);
    spool_jview_free(&jv);
    return rc;
}

/* The key as a printable ID for reports, even when it is not a valid one. */
static void
spool_key_name(const MDB_val *k, char out[QID_SIZE])
{
    size_t n = k->mv_size < QID_LEN ? k->mv_size : QID_LEN;
    const unsigned char *p = k->mv_data;

    for (size_t i = 0; i < n; i++)
        out[i] = ((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'A' && p[i] <= 'Z')) ? (char)p[i] : '?';
    out[n] = '\0';
}

/* After the walk over LMDB: the journal's records the snapshot txn does not
 * hold (their IDs are above LMDB's, so arrival order is kept). */
static int
spool_walk_journal(struct spool *spool, MDB_txn *txn, const struct spool_jview *jv,
                   spool_walk_cb cb, void *arg)
{
    int rc = 0;

    if (!spool_jview_live(spool, txn, jv))
        return 0;
    for (size_t i = 0; i < jv->n && rc == 0; i++) {
        const struct spool_jent *je = &jv->idx[i];
        MDB_val k = {QID_LEN, (void *)je->qid}, v;
        struct envelope e;
        if (mdb_get(txn, spool->dbi_env, &k, &v) == 0)
            continue; /* replayed beside an older copy: LMDB's is the one */
        int drc = spool_jview_decode(jv, je, &e);
        rc = drc == 0 ? cb(arg, je->qid, &e, 0) : cb(arg, je->qid, NULL, drc);
        if (drc == 0)
            envelope_free(&e);
    }
    return rc;
}

int
spool_walk(struct spool *spool, spool_walk_cb cb, void *arg)
{
    struct spool_jview jv;
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc, op = MDB_FIRST;

    if ((rc = spool_jview_take(spool, NULL, &jv)) != 0)
        return rc;
    if ((rc = spool_rtxn(spool, &txn)) != 0) {
        spool_jview_free(&jv);
        return rc;
    }
    rc = mdb_cursor_open(txn, spool->dbi_env, &cur);
    if (rc != 0) {
        mdb_txn_abort(txn);
        spool_jview_free(&jv);
        return spool_mdb_err(rc);
    }
    for (;;) {
        char name[QID_SIZE];
        struct envelope e;
        rc = mdb_cursor_get(cur, &k, &v, (MDB_cursor_op)op);
        op = MDB_NEXT;
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            break;
        }
        if (rc != 0) {
            rc = spool_mdb_err(rc);
            break;
        }
        spool_key_name(&k, name);
        int drc = envelope_decode(v.mv_data, v.mv_size, &e);
        /* A record whose key and embedded ID disagree is as corrupt as one
         * whose CRC fails: it would be delivered under the wrong name. */
        if (drc == 0 && (k.mv_size != QID_LEN || memcmp(k.mv_data, e.qid, QID_LEN) != 0)) {
            envelope_free(&e);
            drc = MX2_E_CORRUPT;
        }
        rc = drc == 0 ? cb(arg, name, &e, 0) : cb(arg, name, NULL, drc);
        envelope_free(&e);
        if (rc != 0)
            break;
    }
    mdb_cursor_close(cur);
    if (rc == 0)
        rc = spool_walk_journal(spool, txn, &jv, cb, arg);
    mdb_txn_abort(txn);
    spool_jview_free(&jv);
    return rc;
}

int
spool_body_open(struct spool *spool, const char *qid, struct spool_body *b)
{
    struct spool_jview jv;
    const struct spool_jent *je;
    MDB_txn *txn;
    MDB_val k, v;
    int rc;

    memset(b, 0, sizeof(*b));
    if (!qid_valid(qid))
        return MX2_E_INVAL;
    if ((rc = spool_jview_take(spool, qid, &jv)) != 0)
        return rc;
    if ((rc = spool_rtxn(spool, &txn)) != 0) {
        spool_jview_free(&jv);
        return rc;
    }
    k.mv_size = QID_LEN;
    k.mv_data = (void *)qid;
    rc = mdb_get(txn, spool->dbi_body, &k, &v);
    if (rc == MDB_NOTFOUND && spool_jview_live(spool, txn, &jv) &&
        (je = spool_jview_find(&jv, qid)) != NULL) {
        /* Journaled, not checkpointed yet: the caller gets its own copy
         * (the journal's memory is reused after the checkpoint). */
        mdb_txn_abort(txn);
        b->own_ = xmalloc(je->body_len + 1);
        memcpy(b->own_, jv.mem + je->off + JOURNAL_HDR + je->env_len, je->body_len);
        b->data = b->own_;
        b->len = je->body_len;
        spool_jview_free(&jv);
        return 0;
    }
    spool_jview_free(&jv);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return spool_mdb_err(rc);
    }
    b->data = v.mv_data;
    b->len = v.mv_size;
    b->txn_ = txn;
    return 0;
}

void
spool_body_close(struct spool_body *b)
{
    if (b == NULL)
        return;
    if (b->txn_ != NULL)
        mdb_txn_abort(b->txn_);
    free(b->own_);
    memset(b, 0, sizeof(*b));
}

int
spool_body_unstuff(const unsigned char *data, size_t len,
                   int (*out)(void *arg, const unsigned char *p, size_t n), void *arg)
{
    size_t off = 0;

    /* Each line that starts with '.' had one '.' added (RFC 5321 4.5.2):
     * emit every line from its second byte in that case. */
    while (off < len) {
        const unsigned char *nl = memchr(data + off, '\n', len - off);
        size_t end = nl ? (size_t)(nl - data) + 1 : len;
        size_t from = off;
        int rc;
        if (data[off] == '.')
            from++;
        if (end > from && (rc = out(arg, data + from, end - from)) != 0)
            return rc;
        off = end;
    }
    return 0;
}

/* ---- figures and recovery ---- */

static int
spool_stats_cb(void *arg, const char *qid, struct envelope *e, int err)
{
    struct spool_stats *st = arg;

    st->messages++;
    if (e == NULL) {
        st->corrupt++;
        return 0;
    }
    st->recipients += envelope_pending_count(e);
    st->bytes += e->size;
    if (e->flags & ENVELOPE_F_HOLD)
        st->held++;
    if (st->oldest_arrival == 0 || e->arrival_sec < st->oldest_arrival)
        st->oldest_arrival = e->arrival_sec;
    return 0;
}

int
spool_stats(struct spool *spool, struct spool_stats *st)
{
    memset(st, 0, sizeof(*st));
    return spool_walk(spool, spool_stats_cb, st);
}

/* Remove every entry of tmp/. Only called before sessions start, so every
 * file there belongs to a session that died before its commit: its client
 * never got a 250 and will send again. */
static int
spool_clean_tmp(struct spool *s, uint64_t *removed)
{
    DIR *d = opendir(s->tmpdir);
    struct dirent *de;
    int rc = 0;

    *removed = 0;
    if (d == NULL)
        return -errno;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) == 0)
            (*removed)++;
        else if (errno != ENOENT && rc == 0)
            rc = -errno;
    }
    closedir(d);
    return rc;
}

/* ---- quarantine ---- */

/* Keys of the records being quarantined, deleted once their bytes are safe. */
struct spool_qlist {
    MDB_val *key; /* mv_data owned (copied out of the map) */
    size_t n, cap;
};

static void
spool_qlist_add(struct spool_qlist *l, const MDB_val *k)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->key = xrealloc(l->key, l->cap * sizeof(*l->key));
    }
    l->key[l->n].mv_size = k->mv_size;
    l->key[l->n].mv_data = xmalloc(k->mv_size ? k->mv_size : 1);
    memcpy(l->key[l->n].mv_data, k->mv_data, k->mv_size);
    l->n++;
}

static void
spool_qlist_free(struct spool_qlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->key[i].mv_data);
    free(l->key);
}

/* Why the record under k cannot be delivered as it stands, or NULL. Sets
 * *body (mv_data NULL when there is none). */
static const char *
spool_record_fault(struct spool *s, MDB_txn *txn, MDB_val *k, const MDB_val *v, MDB_val *body)
{
    struct envelope e;
    const char *why = NULL;

    if (mdb_get(txn, s->dbi_body, k, body) != 0)
        body->mv_data = NULL, body->mv_size = 0;
    if (envelope_decode(v->mv_data, v->mv_size, &e) != 0)
        return "envelope fails its checksum or format checks";
    if (k->mv_size != QID_LEN || memcmp(k->mv_data, e.qid, QID_LEN) != 0)
        why = "envelope names another queue ID";
    else if (body->mv_data == NULL)
        why = "body missing";
    else if (body->mv_size != e.size)
        why = "body length differs from its envelope (truncated)";
    envelope_free(&e);
    return why;
}

/* Write one quarantined value to <qdir>/<name><suffix>, durably (fsync; the
 * caller fsyncs the directory). Never overwrites: an existing name gets a
 * counter, so an earlier quarantine of the same key is kept too. */
static int
spool_qfile_write(const char *qdir, const char *name, const char *suffix, const MDB_val *v,
                  char *path, size_t pathsz)
{
    int fd = -1, rc;

    for (int i = 0; i < 1000 && fd < 0; i++) {
        int n = i == 0 ? snprintf(path, pathsz, "%s/%s%s", qdir, name, suffix)
                       : snprintf(path, pathsz, "%s/%s.%d%s", qdir, name, i, suffix);
        if (n < 0 || (size_t)n >= pathsz)
            return -ENAMETOOLONG;
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            return errno == ENOSPC || errno == EDQUOT ? MX2_E_SPOOL : -errno;
    }
    if (fd < 0)
        return -EEXIST;
    rc = fsio_write_all(fd, v->mv_data, v->mv_size);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    close(fd);
    if (rc != 0)
        unlink(path);
    return rc == -ENOSPC || rc == -EDQUOT ? MX2_E_SPOOL : rc;
}

/* Save one bad record's bytes under quarantine/ and report it. */
static int
spool_qsave(struct spool *s, const char *qdir, const MDB_val *k, const MDB_val *env,
            const MDB_val *body, const char *why, spool_quarantine_cb cb, void *arg)
{
    char name[QID_SIZE], path[SPOOL_PATH_MAX];
    int rc;

    (void)s;
    spool_key_name(k, name);
    if (env != NULL && (rc = spool_qfile_write(qdir, name, ".env", env, path, sizeof(path))) != 0)
        return rc;
    if (body != NULL && body->mv_data != NULL &&
        (rc = spool_qfile_write(qdir, name, ".body", body, path, sizeof(path))) != 0)
        return rc;
    if (cb != NULL)
        cb(arg, name, why, qdir);
    return 0;
}

/* Move every record that cannot be trusted out of the database into
 * <dir>/quarantine/: envelopes that do not decode or name another ID, and
 * envelopes whose body is missing or of the wrong length, go there with their
 * body (<ID>.env, <ID>.body, the raw stored bytes); bodies without an envelope
 * (which cannot arise: both are written and deleted in one transaction) go as
 * <ID>.body. The files are fsync'd, then their directory, and only then are
 * the records deleted, in one transaction: a crash in between leaves the
 * record in place (quarantined again, under a new name, at the next start),
 * never lost. Nothing but these records is touched, so the rest of the queue
 * is delivered as usual. */
/* Pass 1 over one DB: save each bad record (see spool_quarantine) and list
 * its key. No writes happen during it, so the map's pointers stay valid. */
static int
spool_qscan(struct spool *s, MDB_txn *txn, MDB_dbi dbi, const char *qdir,
            struct spool_qlist *l, spool_quarantine_cb cb, void *arg)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v, b, ev;
    int rc = spool_mdb_err(mdb_cursor_open(txn, dbi, &cur));

    for (int op = MDB_FIRST; rc == 0; op = MDB_NEXT) {
        const char *why;
        if ((rc = spool_mdb_err(mdb_cursor_get(cur, &k, &v, (MDB_cursor_op)op))) != 0)
            break;
        /* A key that is no queue ID is not a damaged value but a damaged
         * tree (LMDB reading a page that is not what it thinks): nothing in
         * it can be deleted safely. The whole database goes aside and is
         * salvaged (salvage.h). */
        char name[QID_SIZE];
        spool_key_name(&k, name);
        if (k.mv_size != QID_LEN || !qid_valid(name)) {
            rc = MX2_E_CORRUPT;
            break;
        }
        if (dbi == s->dbi_env) {
            if ((why = spool_record_fault(s, txn, &k, &v, &b)) == NULL)
                continue;
        } else {
            if (mdb_get(txn, s->dbi_env, &k, &ev) != MDB_NOTFOUND)
                continue;
            why = "body without an envelope";
            b = v;
        }
        int qrc = fsio_mkdirs(qdir, 0700);
        if (qrc == 0)
            qrc = spool_qsave(s, qdir, &k, dbi == s->dbi_env ? &v : NULL, &b, why, cb, arg);
        if (qrc == 0) {
            spool_qlist_add(l, &k);
        } else if (cb != NULL) {
            /* No room to save the bytes (or no permission): never delete
             * what could not be saved. The record stays, refused by every
             * reader as before, and is tried again at the next start. */
            char note[160];
            snprintf(note, sizeof(note), "%s; could not be saved (%s): left in place", why,
                     mx2_strerror(qrc));
            cb(arg, name, note, NULL);
        }
    }
    if (rc == MX2_E_NOT_FOUND)
        rc = 0;
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

/* Move every record that cannot be trusted out of the database into
 * <dir>/quarantine/: envelopes that do not decode or name another ID, and
 * envelopes whose body is missing or of the wrong length, go there with their
 * body (<ID>.env, <ID>.body, the raw stored bytes); bodies without an envelope
 * (which cannot arise: both are written and deleted in one transaction) go as
 * <ID>.body. The files are fsync'd, then their directory, and only then are
 * the records deleted, in one transaction: a crash in between leaves the
 * record in place (quarantined again, under a new name, at the next start),
 * never lost. Nothing but these records is touched, so the rest of the queue
 * is delivered as usual. */
static int
spool_quarantine(struct spool *s, spool_quarantine_cb cb, void *arg, uint64_t *count)
{
    struct spool_qlist envs = {0}, bodies = {0};
    char *qdir = spool_join(s->dir, "quarantine");
    MDB_txn *txn;
    int rc;

    *count = 0;
    if ((rc = spool_mdb_err(mdb_txn_begin(s->env, NULL, 0, &txn))) != 0) {
        free(qdir);
        return rc;
    }
    rc = spool_qscan(s, txn, s->dbi_env, qdir, &envs, cb, arg);
    if (rc == 0)
        rc = spool_qscan(s, txn, s->dbi_body, qdir, &bodies, cb, arg);
    if (rc == 0 && envs.n + bodies.n > 0)
        rc = fsio_fsync_dir(qdir);
    /* Pass 2: the bytes are durable elsewhere; drop the records. */
    for (size_t i = 0; rc == 0 && i < envs.n; i++) {
        int r = mdb_del(txn, s->dbi_body, &envs.key[i], NULL);
        if (r == 0 || r == MDB_NOTFOUND)
            r = mdb_del(txn, s->dbi_env, &envs.key[i], NULL);
        rc = spool_mdb_err(r);
    }
    for (size_t i = 0; rc == 0 && i < bodies.n; i++)
        rc = spool_mdb_err(mdb_del(txn, s->dbi_body, &bodies.key[i], NULL));
    if (rc == 0 && envs.n + bodies.n > 0) {
        rc = spool_mdb_err(mdb_txn_commit(txn));
        if (rc == 0)
            *count = envs.n + bodies.n;
    } else {
        mdb_txn_abort(txn);
    }
    spool_qlist_free(&envs);
    spool_qlist_free(&bodies);
    free(qdir);
    return rc;
}

int
spool_recover(struct spool *spool, struct spool_stats *st, spool_quarantine_cb cb, void *arg)
{
    uint64_t quarantined;
    uint64_t removed;
    int rc;

    memset(st, 0, sizeof(*st));
    if (spool->flags & SPOOL_RDONLY)
        return MX2_E_INVAL;
    if ((rc = spool_clean_tmp(spool, &removed)) != 0)
        return rc;
    if ((rc = fsio_fsync_dir(spool->tmpdir)) != 0)
        return rc;
    if ((rc = spool_quarantine(spool, cb, arg, &quarantined)) != 0)
        return rc;
    rc = spool_stats(spool, st);
    st->tmp_removed = removed;
    st->quarantined = quarantined;
    return rc;
}

int
spool_free_space(struct spool *spool, uint64_t *bytes_avail)
{
    struct statvfs sv;
    MDB_envinfo info;
    MDB_stat ms;
    uint64_t disk, used, room;

    if (statvfs(spool->dir, &sv) != 0)
        return -errno;
    disk = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
    if (mdb_env_info(spool->env, &info) != 0 || mdb_env_stat(spool->env, &ms) != 0)
        return MX2_E_INTERNAL;
    /* Pages past last_pgno are never used yet; freed pages inside it are
     * reused too, so this undercounts the map's room: the safe direction. */
    used = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
    room = info.me_mapsize > used ? info.me_mapsize - used : 0;
    *bytes_avail = disk < room ? disk : room;
    /* The journal's records still need their place in LMDB. */
    if (!(spool->flags & SPOOL_RDONLY)) {
        spool->room = *bytes_avail; /* before the journal's share */
        spool->room_ms = spool_mono_ms();
        size_t pending = spool->j.tail;
        *bytes_avail = *bytes_avail > pending ? *bytes_avail - pending : 0;
    }
    return 0;
}
