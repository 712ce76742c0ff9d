/*
 * journal.h - the record format of the spool's journal (queue/journal), and
 * the scan that decides which records a crash left valid. Pure: no I/O.
 *
 * The journal is where a small new message becomes durable before its 250:
 * one append over preallocated, already-written blocks and one fdatasync per
 * writer round, instead of LMDB's two ordered syncs. spool.c owns the file
 * and moves records into LMDB at checkpoints; queue/README.md has the
 * crash-safety argument. This file only says what a record is.
 *
 * A record (big-endian integers):
 *   0   4  magic "MX2J"
 *   4   4  total length of the record in bytes, header included
 *   8   8  generation: the checkpoint number it belongs after
 *   16  4  length of the envelope record (envelope.h encoding)
 *   20  4  CRC-32 of bytes [0, 20) followed by bytes [24, total)
 *   24     the envelope record, then the stored body (total - 24 - envlen)
 * Records follow each other from offset 0 with no gaps. The file was
 * zero-filled when created and is only ever overwritten, so past the last
 * record lie zeros or records of an older generation, never a valid record
 * of the current one that is not part of the run.
 *
 * Callers: spool.c (writer thread, mx2ctl), the fuzz target, unit tests.
 */
#ifndef MX2_JOURNAL_H
#define MX2_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#define JOURNAL_HDR 24u
/* A record of more than this is never journaled (stored in LMDB directly):
 * writing large bodies twice costs more than the sync it would save. */
#define JOURNAL_REC_MAX (128u << 10)

struct journal_rec {
    uint64_t gen;
    const unsigned char *env; /* borrowed from the scanned buffer */
    size_t env_len;
    const unsigned char *body;
    size_t body_len;
    size_t total; /* bytes the record takes */
};

/* Bytes a record with these parts takes; 0 if it cannot be represented. */
size_t journal_rec_size(size_t env_len, size_t body_len);

/* Write the header of a record of total bytes (journal_rec_size) at dst,
 * whose envelope (env_len bytes) and body already sit at dst + JOURNAL_HDR:
 * fills magic, lengths, generation and the CRC over the whole record. */
void journal_rec_seal(unsigned char *dst, size_t total, uint64_t gen, size_t env_len);

/* Parse the record at buf[0..n). 0, or -1 when there is none: zeros, a torn
 * or short record, a bad CRC, lengths that do not fit. */
int journal_rec_parse(const unsigned char *buf, size_t n, struct journal_rec *out);

/* The valid run: the records from offset 0 on that parse and carry the
 * first record's generation, stopping at the first that does not. cb (may be
 * NULL) sees each in order; a non-zero return stops the scan and is
 * returned. *gen = the run's generation (0 when the run is empty), *end =
 * the offset after its last record. */
typedef int (*journal_scan_cb)(void *arg, const struct journal_rec *rec, size_t off);
int journal_scan(const unsigned char *buf, size_t n, journal_scan_cb cb, void *arg, uint64_t *gen,
                 size_t *end);

#endif
