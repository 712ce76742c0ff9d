/*
 * salvage.h - copy what can still be read out of a damaged spool.
 *
 * When spool_open or spool_recover finds data.mdb damaged as a whole
 * (MX2_E_CORRUPT: cut short, or a B-tree page that does not parse), mx2d
 * moves the queue directory aside (spool_set_aside), opens a new empty spool
 * and calls salvage_into() to bring every record the damaged copy still
 * yields into it, so that the rest of the queue is delivered.
 *
 * Why a child process: LMDB maps the file and trusts its page numbers; a
 * damaged file can make it touch a page past the end (SIGBUS) or follow
 * garbage. The reading happens in a forked child that streams records over a
 * pipe; if it faults (SIGBUS/SIGSEGV, caught: it exits quietly) or dies,
 * the parent keeps what it had received. The child walks
 * the env database forward from the first key; when that walk does not reach
 * the end, a second child walks backward from the last key, so records on
 * both sides of a damaged region come back.
 *
 * The parent trusts nothing it receives: each record must decode
 * (envelope_decode: CRC, limits), carry the ID of its key and come with a
 * body of exactly the length its envelope states; anything else is left in
 * the damaged copy (counted as refused). Records are committed in batches,
 * durably, without overwriting.
 *
 * Caller: mx2d's main thread at startup, before any other thread exists
 * (fork). Blocking. The damaged copy is opened read-only and never written.
 * Errors: 0 when the salvage ran (see the counts; nothing found is not an
 * error); -errno or an MX2_E_* code when it could not run or the new spool
 * refused a write (MX2_E_SPOOL).
 */
#ifndef MX2_SALVAGE_H
#define MX2_SALVAGE_H

#include <stdint.h>

struct spool;

struct salvage_stats {
    uint64_t copied;  /* records now in the new spool */
    uint64_t refused; /* records read but failing the checks above */
    int complete;     /* 1: the forward walk reached the end without error */
};

int salvage_into(struct spool *into, const char *damaged_qdir, struct salvage_stats *st);

#endif
