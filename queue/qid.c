/*
 * qid.c - see qid.h.
 *
 * Why this shape: the ID doubles as the database key, so it must sort by
 * arrival (the flusher and mailq walk the spool in key order, and the spool
 * appends with MDB_APPEND, which needs strictly increasing keys). Time in the
 * high bits gives the order; the 10-bit sequence gives uniqueness within one
 * microsecond; taking max(now, last + 1) keeps both when the clock jumps back
 * (NTP step, VM restore), at the cost of IDs that run ahead of the wall clock
 * until it catches up. The spool seeds the floor from its highest key, so the
 * order also survives a restart with a clock set back.
 *
 * The state is one atomic word updated by compare-and-swap, so concurrent
 * callers never get the same value and never block each other.
 */
#include "qid.h"

#include <string.h>
#include <time.h>

#include "err.h"

static const char qid_alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUV";

#define QID_VALUE_MAX ((UINT64_C(1) << 62) - 1)

void
qid_gen_init(struct qid_gen *g, uint64_t floor)
{
    atomic_init(&g->last, floor);
}

void
qid_gen_raise(struct qid_gen *g, uint64_t floor)
{
    uint64_t last = atomic_load(&g->last);

    while (last < floor && !atomic_compare_exchange_weak(&g->last, &last, floor))
        ;
}

uint64_t
qid_next_at(struct qid_gen *g, uint64_t now_usec, char out[QID_SIZE])
{
    uint64_t base = (now_usec << QID_SEQ_BITS) & QID_VALUE_MAX;
    uint64_t last = atomic_load(&g->last);
    uint64_t v;

    do {
        v = base > last ? base : last + 1;
    } while (!atomic_compare_exchange_weak(&g->last, &last, v));
    qid_format(v, out);
    return v;
}

uint64_t
qid_next(struct qid_gen *g, char out[QID_SIZE])
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return qid_next_at(g, (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u, out);
}

void
qid_format(uint64_t value, char out[QID_SIZE])
{
    value &= QID_VALUE_MAX;
    for (int i = QID_LEN - 1; i >= 0; i--) {
        out[i] = qid_alphabet[value & 31u];
        value >>= 5;
    }
    out[QID_LEN] = '\0';
}

int
qid_parse(const char *s, size_t len, uint64_t *value)
{
    uint64_t v = 0;

    if (s == NULL || len != QID_LEN)
        return MX2_E_INVAL;
    for (size_t i = 0; i < QID_LEN; i++) {
        unsigned c = (unsigned char)s[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'A' && c <= 'V')
            d = c - 'A' + 10;
        else
            return MX2_E_INVAL;
        /* 13 digits of 5 bits are 65 bits: refuse a first digit that would
         * shift bits out, and anything above the 62-bit range. */
        if (v > (UINT64_MAX >> 5))
            return MX2_E_INVAL;
        v = (v << 5) | d;
    }
    if (v > QID_VALUE_MAX)
        return MX2_E_INVAL;
    if (value != NULL)
        *value = v;
    return 0;
}

int
qid_valid(const char *s)
{
    return s != NULL && qid_parse(s, strlen(s), NULL) == 0;
}

uint64_t
qid_usec(uint64_t value)
{
    return value >> QID_SEQ_BITS;
}
