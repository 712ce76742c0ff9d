/*
 * spool.h - the crash-safe message queue (one LMDB environment and its
 * journal).
 *
 * Layout: <spool_dir>/queue/{data.mdb,lock.mdb} holds three named databases:
 * "env" (queue ID -> envelope record, see envelope.h), "body" (queue ID ->
 * message bytes) and "meta" (format version, journal checkpoint).
 * <spool_dir>/queue/journal holds small new messages between their 250 and
 * the next checkpoint into LMDB; readers here see them all the same.
 * <spool_dir>/tmp/ holds the temp files of messages still being received.
 * queue/README.md has the byte layout and the crash-safety argument.
 *
 * Durability: a message exists once spool_commit() returns 0 for it, and not
 * before; its envelope and body appear together or not at all. A commit of
 * small messages is one journal append and one fdatasync; every other write
 * call is one LMDB transaction, durable (fdatasync'd) when it returns, atomic
 * across kill -9 and power loss: after a crash the spool shows the state
 * before or after the call, never a mix.
 *
 * Callers and threads: every call blocks on disk I/O. mx2d makes all writes
 * (spool_commit, spool_update) from ONE thread, its writer; it may read
 * (spool_get, spool_walk, spool_body_*) from any thread, concurrently, because
 * the environment is opened with MDB_NOTLS and read transactions are
 * per-call. mx2ctl opens the spool with SPOOL_RDONLY when mx2d is stopped (or
 * running: LMDB readers never block the writer). Never call from the event
 * loop.
 *
 * Open a given spool at most once per process (LMDB's rule: its POSIX locks
 * are per process), and do not use a spool across fork().
 *
 * Ownership: struct spool is opaque, created by spool_open, released by
 * spool_close (NULL is a no-op; close only when no other thread uses it).
 * Envelopes passed in are borrowed; envelopes handed out are owned by the
 * caller (spool_get) or valid during the callback only (spool_walk).
 * Body pointers are borrowed from LMDB's map and valid until
 * spool_body_close.
 *
 * Errors: 0 or a negative code: MX2_E_NOT_FOUND (no such queue ID),
 * MX2_E_CORRUPT (a record fails to decode; at open: data.mdb damaged),
 * MX2_E_FORMAT (at open: a spool format this build does not know),
 * MX2_E_PANIC (a write failed in a way LMDB cannot undo in this process, e.g.
 * the meta page write: every later write fails too; what was committed is
 * intact on disk, and a new process opens it normally),
 * MX2_E_SPOOL (disk or map full: the SMTP reply is 452 4.3.1), MX2_E_INVAL
 * (bad argument, or a write on a read-only spool), -errno (system calls, e.g.
 * -ENOENT when a read-only open finds no spool). LMDB's codes never leak.
 */
#ifndef MX2_SPOOL_H
#define MX2_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "envelope.h"
#include "qid.h"

#define SPOOL_RDONLY 0x1u /* create nothing, no writes (mx2ctl) */

#define SPOOL_FORMAT_VERSION 1
#define SPOOL_DEFAULT_MAPSIZE (64ull << 30) /* sparse; env MX2_SPOOL_MAPSIZE overrides */
#define SPOOL_PATH_MAX 4096

struct spool;

/* Open (RW: creating <dir>, <dir>/queue and <dir>/tmp with mode 0700 as
 * needed) the spool under dir. The map size is SPOOL_DEFAULT_MAPSIZE unless
 * the environment variable MX2_SPOOL_MAPSIZE holds a byte count (tests).
 * Read-only: -ENOENT when <dir>/queue/data.mdb does not exist. */
int spool_open(const char *dir, unsigned flags, struct spool **out);

/* Before mx2d opens its spool: read all of it that a start reads or a
 * writer may allocate from (the meta database, the free list, every
 * envelope with its body's record) in a forked child, read-only. LMDB
 * trusts the file's page numbers, so a damaged page there kills its reader
 * (SIGBUS, SIGSEGV) instead of returning an error: better the child than
 * mx2d at every start. Returns MX2_E_CORRUPT when the child died or found
 * the B-tree damaged (the caller sets the spool aside and salvages it),
 * else 0, also when there is no spool yet or the child could not run (the
 * open that follows reports those). Call with no spool of dir open in this
 * process and before other threads start (fork). Blocking. */
int spool_probe(const char *dir);
void spool_close(struct spool *spool);

/* A spool that spool_open refuses as MX2_E_CORRUPT (data.mdb shorter than
 * the pages it uses, or not an LMDB file or not a spool at all) cannot be
 * read safely record by record. mx2d moves it aside whole so that it can keep
 * accepting mail into a new one: rename <dir>/queue to
 * <dir>/quarantine/queue.<UTC time>[.N] (never replacing anything) and fsync
 * both directories. moved_to (n bytes) receives the new path. The spool must
 * not be open. MX2_E_FORMAT (a newer format) is never a reason to do this. */
int spool_set_aside(const char *dir, char *moved_to, size_t n);

/* The directory given to spool_open (borrowed). */
const char *spool_dir(const struct spool *spool);

/* ---- receiving ---- */

/* Create a new empty temp file in <dir>/tmp/ (O_RDWR|O_CREAT|O_EXCL|
 * O_CLOEXEC, mode 0600) for a body being received. *fd and path_out (at least
 * SPOOL_PATH_MAX bytes) are the caller's: it writes the body (no fsync
 * needed), passes the fd to spool_commit, then closes and unlinks it whatever
 * the outcome. Any thread (it is one open(2)). */
int spool_tmp_open(struct spool *spool, int *fd, char *path_out);

/* One message to store. */
struct spool_new {
    /* in */
    struct envelope *env;  /* borrowed; spool_commit sets env->qid and env->size */
    const void *body;      /* body in memory (when body_fd < 0) */
    int body_fd;           /* or: fd of a temp file, read with pread from offset 0 */
    size_t body_len;       /* bytes of body: the stored format (README.md) */
    /* out */
    int result;            /* 0: durable under qid; else why it was not stored */
    char qid[QID_SIZE];    /* the queue ID when result == 0 */
};

/* Store n messages in ONE write transaction and ONE commit (group commit).
 * (A batch whose bodies add up to more than 64 MiB is split into several
 * transactions, because LMDB holds a transaction's dirty pages in memory
 * until the commit; results are still per message.) For each: assign a fresh
 * queue ID (strictly increasing), encode and put the envelope, reserve the
 * body's space in the map and copy the body into it (memcpy or pread). A
 * message whose envelope does not encode (MX2_E_INVAL) or whose temp file is
 * short/unreadable (-EIO/-errno) fails alone; the others still commit. When
 * the commit itself fails every message of that transaction fails with the
 * same code (disk or map full: MX2_E_SPOOL) and nothing of it is visible.
 * Returns 0 when every transaction committed (see each result), else the
 * first commit error. Writer thread only. */
int spool_commit(struct spool *spool, struct spool_new *msgs, size_t n);

/* One record as stored (salvage.h): restored under its own queue ID. */
struct spool_raw {
    /* in */
    const void *key;
    size_t key_len;
    const void *env; /* envelope record bytes */
    size_t env_len;
    const void *body; /* stored body bytes */
    size_t body_len;
    /* out */
    int result; /* 0 stored; MX2_E_CORRUPT (fails decode, key/ID or body length
                 * check); MX2_E_EXISTS (the ID is already in this spool) */
};

/* Store n records byte for byte in ONE transaction, each checked first as
 * spool_recover checks records. Returns 0 when the transaction committed
 * (see each result), else the commit's error (nothing stored). Writer or
 * startup thread only. IDs may be older than this spool's newest: reopen the
 * spool afterwards so new IDs are issued above them. */
int spool_restore(struct spool *spool, struct spool_raw *recs, size_t n);

/* ---- state changes ---- */

enum spool_op_kind {
    SPOOL_OP_RCPT,     /* recipient rcpt: state, error (NULL keeps the old text),
                        * attempts, last_attempt = when */
    SPOOL_OP_SCHEDULE, /* message: attempts, first_failure, next_attempt */
    SPOOL_OP_HOLD,     /* set ENVELOPE_F_HOLD */
    SPOOL_OP_RELEASE,  /* clear ENVELOPE_F_HOLD and next_attempt (deliver now) */
    SPOOL_OP_WARNED,   /* set ENVELOPE_F_WARNED (delay warning sent) */
    SPOOL_OP_DSN_SENT, /* set ENVELOPE_RF_DSN_SENT on recipient rcpt, or on every
                        * bounced recipient when rcpt == SPOOL_RCPT_ALL */
    SPOOL_OP_DELETE,   /* remove envelope and body */
};

#define SPOOL_RCPT_ALL ((size_t)-1)

struct spool_op {
    /* in */
    enum spool_op_kind kind;
    char qid[QID_SIZE];
    size_t rcpt;                    /* recipient index (SPOOL_OP_RCPT, _DSN_SENT) */
    enum envelope_rcpt_state state; /* SPOOL_OP_RCPT */
    const char *error;              /* SPOOL_OP_RCPT: borrowed, any bytes
                                     * (sanitised by envelope_set_error); NULL keeps */
    uint32_t attempts;              /* SPOOL_OP_RCPT (recipient), _SCHEDULE (message) */
    int64_t when;                   /* SPOOL_OP_RCPT: last_attempt */
    int64_t first_failure;          /* SPOOL_OP_SCHEDULE */
    int64_t next_attempt;           /* SPOOL_OP_SCHEDULE */
    /* out */
    int result; /* 0, MX2_E_NOT_FOUND (e.g. deleted meanwhile), MX2_E_INVAL
                 * (bad index/kind), MX2_E_CORRUPT (record undecodable; a
                 * DELETE still removes it) */
};

/* Apply n operations, in order, in ONE transaction (several ops may touch the
 * same message; each sees the previous ones), which also checkpoints the
 * journal. An op that fails (see result) changes nothing and does not stop
 * the others. Returns 0 when the transaction committed, else the code every
 * op got (nothing changed). When the journal's records do not fit (disk
 * full), the ops on messages already in LMDB are still applied and those
 * naming journaled messages get MX2_E_SPOOL (try again later).
 * Writer thread only. */
int spool_update(struct spool *spool, struct spool_op *ops, size_t n);

/* ---- reading ---- */

/* Decode the envelope of qid into *out (owned by the caller: envelope_free).
 * MX2_E_NOT_FOUND, MX2_E_CORRUPT, MX2_E_INVAL (malformed qid). */
int spool_get(struct spool *spool, const char *qid, struct envelope *out);

/* Called once per message in queue-ID (arrival) order. env is the decoded
 * envelope and err 0; or env is NULL and err MX2_E_CORRUPT for a record that
 * does not decode (qid still names it). env is valid during the call only;
 * the callback may keep its contents by copying the struct and zeroing *env.
 * Return 0 to go on, anything else to stop the walk (spool_walk returns it). */
typedef int (*spool_walk_cb)(void *arg, const char *qid, struct envelope *env, int err);

/* Walk all messages in one read transaction (a consistent snapshot).
 * Returns 0, the callback's non-zero value, or an error. */
int spool_walk(struct spool *spool, spool_walk_cb cb, void *arg);

/* Zero-copy access to a stored body. */
struct spool_body {
    const unsigned char *data; /* borrowed from the map */
    size_t len;
    void *txn_;                /* private: the read transaction holding data */
    unsigned char *own_;       /* private: or a copy (a journaled body) */
};

/* Opens a read transaction that keeps (data, len) valid until
 * spool_body_close. Hold it briefly: an open reader pins old pages (the file
 * grows while it is held). On error b is left closed (spool_body_close is a
 * no-op on it). */
int spool_body_open(struct spool *spool, const char *qid, struct spool_body *b);
void spool_body_close(struct spool_body *b);

/* The stored body format is the wire format minus the final ".\r\n" (CRLF
 * line ends, dot-stuffed). Undo the dot-stuffing: call out(arg, ptr, len) with
 * consecutive pieces of the unstuffed message (borrowed from data). Stops and
 * returns the first non-zero value out returns, else 0. Pure. */
int spool_body_unstuff(const unsigned char *data, size_t len,
                       int (*out)(void *arg, const unsigned char *p, size_t n), void *arg);

/* ---- the journal (queue/README.md, "The journal") ---- */

/* Move the journal's records into LMDB now, in one durable commit (a
 * spool_update or a commit that goes to LMDB does the same on its way).
 * Writer thread. 0 when there was nothing to move. */
int spool_checkpoint(struct spool *spool);

/* Bytes of journal records not yet checkpointed (0: none) and how long the
 * oldest has waited, in ms. Writer thread (its checkpoint policy). */
void spool_journal_pending(struct spool *spool, size_t *bytes, uint64_t *age_ms);

/* The journal's size; 0 when this spool writes without one (read-only,
 * MX2_JOURNAL_SIZE=0, or the file could not be created: a full disk). */
size_t spool_journal_cap(const struct spool *spool);

/* Messages the read-write open moved from the journal into LMDB (a crash
 * came between their 250 and their checkpoint). */
uint64_t spool_journal_replayed(const struct spool *spool);

/* Store, as spool_restore does, every message of the journal in qdir (the
 * queue/ directory of a spool set aside as damaged): IDs already stored are
 * left alone. Nothing when the journal's run is of generation done_gen or
 * older (that copy's meta/journal: its checkpoint held the run already;
 * 0 when unknown). Adds to *copied and *refused. */
int spool_journal_salvage(struct spool *into, const char *qdir, uint64_t done_gen,
                          uint64_t *copied, uint64_t *refused);

/* ---- figures and recovery ---- */

struct spool_stats {
    uint64_t messages;       /* envelopes in the spool */
    uint64_t recipients;     /* recipients still pending or deferred */
    uint64_t bytes;          /* sum of message sizes */
    uint64_t held;           /* messages on hold */
    uint64_t corrupt;        /* records that do not decode (walks report them) */
    int64_t oldest_arrival;  /* unix seconds of the oldest message; 0 if empty */
    uint64_t tmp_removed;    /* spool_recover: temp files removed */
    uint64_t quarantined;    /* spool_recover: records moved to quarantine/ */
};

/* Figures over one snapshot. */
int spool_stats(struct spool *spool, struct spool_stats *st);

/* Told about each record spool_recover quarantines: its ID (or the key made
 * printable), why, and the directory its bytes were saved in; dir is NULL
 * when they could not be saved (disk full...): the record was left in place. */
typedef void (*spool_quarantine_cb)(void *arg, const char *qid, const char *why,
                                    const char *dir);

/* At mx2d startup, before accepting mail: remove everything in <dir>/tmp/
 * (bodies of sessions that never got their 250); move every record that
 * cannot be trusted (envelope fails to decode or names another ID, body
 * missing or not the length its envelope says, body without envelope) to
 * <dir>/quarantine/ as <ID>.env / <ID>.body files holding the raw stored
 * bytes, durably, before deleting it, calling cb (may be NULL) for each; then
 * fill *st. The rest of the queue is untouched. RW only. */
int spool_recover(struct spool *spool, struct spool_stats *st, spool_quarantine_cb cb, void *arg);

/* Bytes a new message may use: the smaller of the file system's space
 * available to us (statvfs of the spool dir) and the room left in the map. */
int spool_free_space(struct spool *spool, uint64_t *bytes_avail);

/* Unmap from this process the pages of data.mdb it has touched; they stay
 * in the page cache. Why: every touch of the map (a B-tree walk, a body
 * sent) maps the page and, by the kernel's fault-around, up to 15 of its
 * neighbours, so without this mx2d's RSS grows toward the size of the queue
 * (10,000 queued 2 KiB messages: ~30 MiB of it) though none of it is memory
 * mx2d owns. Safe with readers running in other threads: what they touch
 * next is faulted in again, the same bytes. Any thread (it opens a read
 * transaction and reads /proc/self/maps); mx2d's writer calls it every
 * WRITER_RELEASE_MS. Returns 0, -errno, or an mx2 code when the map
 * cannot be found. */
int spool_release_pages(struct spool *spool);

#endif
