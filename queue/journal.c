/*
 * journal.c - see journal.h.
 */
#include "journal.h"

#include <string.h>

#include "envelope.h"

static const unsigned char journal_magic[4] = {'M', 'X', '2', 'J'};

static void
put_be(unsigned char *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

static uint64_t
get_be(const unsigned char *p, int n)
{
    uint64_t v = 0;

    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* CRC-32 of [0, 20) then [24, total): the CRC field itself is left out. */
static uint32_t
journal_crc(const unsigned char *rec, size_t total)
{
    uint32_t c = envelope_crc32_update(0, rec, 20);

    return envelope_crc32_update(c, rec + JOURNAL_HDR, total - JOURNAL_HDR);
}

size_t
journal_rec_size(size_t env_len, size_t body_len)
{
    if (env_len == 0 || env_len > UINT32_MAX - JOURNAL_HDR ||
        body_len > UINT32_MAX - JOURNAL_HDR - env_len)
        return 0;
    return JOURNAL_HDR + env_len + body_len;
}

void
journal_rec_seal(unsigned char *dst, size_t total, uint64_t gen, size_t env_len)
{
    memcpy(dst, journal_magic, 4);
    put_be(dst + 4, total, 4);
    put_be(dst + 8, gen, 8);
    put_be(dst + 16, env_len, 4);
    put_be(dst + 20, journal_crc(dst, total), 4);
}

int
journal_rec_parse(const unsigned char *buf, size_t n, struct journal_rec *out)
{
    size_t total, env_len;

    if (n < JOURNAL_HDR || memcmp(buf, journal_magic, 4) != 0)
        return -1;
    total = (size_t)get_be(buf + 4, 4);
    env_len = (size_t)get_be(buf + 16, 4);
    if (total < JOURNAL_HDR || total > n || env_len == 0 || env_len > total - JOURNAL_HDR)
        return -1;
    if (journal_crc(buf, total) != (uint32_t)get_be(buf + 20, 4))
        return -1;
    out->gen = get_be(buf + 8, 8);
    out->env = buf + JOURNAL_HDR;
    out->env_len = env_len;
    out->body = buf + JOURNAL_HDR + env_len;
    out->body_len = total - JOURNAL_HDR - env_len;
    out->total = total;
    return out->gen == 0 ? -1 : 0;
}

int
journal_scan(const unsigned char *buf, size_t n, journal_scan_cb cb, void *arg, uint64_t *gen,
             size_t *end)
{
    struct journal_rec r;
    size_t off = 0;
    int rc = 0;

    *gen = 0;
    while (off < n && journal_rec_parse(buf + off, n - off, &r) == 0) {
        if (*gen == 0)
            *gen = r.gen;
        else if (r.gen != *gen)
            break;
        if (cb != NULL && (rc = cb(arg, &r, off)) != 0)
            break;
        off += r.total;
    }
    *end = off;
    return rc;
}
