/*
 * fuzz_journal.c - journal_scan (the replay's view of a journal file after a
 * crash) on arbitrary bytes.
 *
 * Each input is scanned twice: as given (magic, lengths and CRCs refuse
 * almost everything), and with the header of every record-shaped piece
 * resealed (lengths kept, CRC recomputed), so mutations reach the length
 * checks and the generation rule behind the CRC. Whatever the scan accepts
 * must lie inside the input, add up to the run's end, carry one generation,
 * and its envelope bytes go through envelope_decode as replay sends them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "journal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_state {
    const uint8_t *base;
    size_t size, next;
    uint64_t gen;
};

static int
fuzz_cb(void *arg, const struct journal_rec *r, size_t off)
{
    struct fuzz_state *st = arg;
    struct envelope e;

    if (off != st->next || r->total != JOURNAL_HDR + r->env_len + r->body_len ||
        off + r->total > st->size || r->env != st->base + off + JOURNAL_HDR ||
        r->body != r->env + r->env_len || r->gen == 0 || (st->gen != 0 && r->gen != st->gen))
        abort();
    st->gen = r->gen;
    st->next = off + r->total;
    if (envelope_decode(r->env, r->env_len, &e) == 0)
        envelope_free(&e);
    return 0;
}

static void
fuzz_scan(const uint8_t *data, size_t size)
{
    struct fuzz_state st = {data, size, 0, 0};
    uint64_t gen;
    size_t end;

    journal_scan(data, size, fuzz_cb, &st, &gen, &end);
    if (end != st.next || end > size || gen != st.gen)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy;
    size_t off = 0;

    fuzz_scan(data, size);
    copy = malloc(size + 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    /* Reseal each piece whose stated lengths fit, then step over it. */
    while (off + JOURNAL_HDR <= size) {
        size_t total = ((size_t)copy[off + 4] << 24) | ((size_t)copy[off + 5] << 16) |
                       ((size_t)copy[off + 6] << 8) | copy[off + 7];
        size_t envlen = ((size_t)copy[off + 16] << 24) | ((size_t)copy[off + 17] << 16) |
                        ((size_t)copy[off + 18] << 8) | copy[off + 19];
        uint64_t gen = 0;
        if (total < JOURNAL_HDR || total > size - off || envlen == 0 || envlen > total - JOURNAL_HDR)
            break;
        for (int i = 8; i < 16; i++)
            gen = (gen << 8) | copy[off + (size_t)i];
        journal_rec_seal(copy + off, total, gen, envlen);
        off += total;
    }
    fuzz_scan(copy, size);
    free(copy);
    return 0;
}
