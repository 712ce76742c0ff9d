/*
 * qid.h - queue IDs: unique, short, sortable by arrival.
 *
 * A queue ID is QID_LEN (13) characters from "0123456789ABCDEFGHIJKLMNOPQRSTUV"
 * (a subset of [0-9A-Z]), the fixed-width base32 spelling of a 62-bit value:
 *
 *     value = (microseconds since the epoch) << 10 | sequence (10 bits)
 *
 * The alphabet is in ASCII order and the width is fixed, so comparing two IDs
 * with strcmp/memcmp compares their values: IDs sort by arrival. A generator
 * issues max(now << 10, last + 1): two IDs in the same microsecond differ in the
 * sequence, and a clock stepped back never produces an ID below one already
 * issued (the generator runs "in the future" until the clock catches up).
 * 52 bits of microseconds last until the year 2112.
 *
 * Callers: the spool (queue/spool.c) owns one generator, seeded from the
 * highest ID in the spool at open, and assigns IDs inside its write
 * transaction; tests; mx2ctl (validation of an ID typed by the operator).
 *
 * Thread safety: qid_next*() may be called from any number of threads on one
 * generator (lock-free compare-and-swap on an atomic). Everything else is pure.
 * No allocation, no errors beyond the documented return values.
 */
#ifndef MX2_QID_H
#define MX2_QID_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define QID_LEN 13
#define QID_SIZE (QID_LEN + 1) /* with the terminating NUL */
#define QID_SEQ_BITS 10

struct qid_gen {
    _Atomic uint64_t last; /* the last value issued (0: none yet) */
};

/* Start a generator whose IDs will all be above `floor` (the value of the
 * highest ID already in use, 0 if none). */
void qid_gen_init(struct qid_gen *g, uint64_t floor);

/* Raise the floor (never lowers it). Thread-safe. */
void qid_gen_raise(struct qid_gen *g, uint64_t floor);

/* Issue the next ID using the real-time clock; writes QID_SIZE bytes
 * (NUL-terminated) to out and returns its value. */
uint64_t qid_next(struct qid_gen *g, char out[QID_SIZE]);

/* The same with an explicit clock reading (for tests). */
uint64_t qid_next_at(struct qid_gen *g, uint64_t now_usec, char out[QID_SIZE]);

/* Spell a value (< 2^62, as every issued value is; higher bits are ignored)
 * as QID_LEN characters plus a NUL. */
void qid_format(uint64_t value, char out[QID_SIZE]);

/* Parse exactly QID_LEN characters s[0..len) (len must be QID_LEN).
 * Returns 0 and sets *value, or MX2_E_INVAL for a wrong length, a character
 * outside the alphabet, or a value above 2^62 - 1. value may be NULL
 * (validation only). */
int qid_parse(const char *s, size_t len, uint64_t *value);

/* 1 if the NUL-terminated s is a well-formed ID, else 0. */
int qid_valid(const char *s);

/* The arrival time encoded in a value, in microseconds since the epoch. */
uint64_t qid_usec(uint64_t value);

#endif
