/*
 * fuzz_smtp_data.c - the DATA scanner on arbitrary bytes.
 *
 * The first input byte picks the mode (bit 0: reject) and a chunking seed;
 * the rest is the client's byte stream. Checked, with abort() on violation:
 *   - one-shot, byte-at-a-time and seed-driven chunked feeding give the
 *     same consumed count, done flag, error and counters, and the same
 *     output when there is no error;
 *   - every call writes at most SMTP_DATA_OUT_SIZE(inlen) bytes;
 *   - done exactly when the stream holds the terminator (".\r\n" at the
 *     start or the first "\r\n.\r\n"), and consumed is just past it;
 *   - the output has no bare CR or LF, no line that is a lone "." (so it
 *     cannot end the data early at the primary), and ends in CRLF;
 *   - reject mode flags MX2_E_BARE_NEWLINE iff the body had a bare CR/LF;
 *   - a body without bare CR/LF comes out byte for byte unchanged.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "smtp_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
    char *out;
    size_t outlen, consumed;
    struct smtp_data d;
};

/* chunk: 0 = one shot, else sizes from a small LCG seeded by `seed`, or 1. */
static void
feed(const char *in, size_t len, enum mx2_bare_newline mode, int how, unsigned seed, struct run *r)
{
    size_t pos = 0;
    char *buf = malloc(SMTP_DATA_OUT_SIZE(len));

    if (buf == NULL)
        abort();
    memset(r, 0, sizeof(*r));
    r->out = malloc(SMTP_DATA_OUT_SIZE(len));
    if (r->out == NULL)
        abort();
    smtp_data_init(&r->d, mode, 4096, 3);
    do {
        size_t n, got, olen;
        if (how == 0) {
            n = len - pos;
        } else if (how == 1) {
            n = len - pos < 1 ? len - pos : 1;
        } else {
            seed = seed * 1103515245u + 12345u;
            n = 1 + (seed >> 16) % 13;
            if (n > len - pos)
                n = len - pos;
        }
        got = smtp_data_feed(&r->d, in + pos, n, buf, &olen);
        if (olen > SMTP_DATA_OUT_SIZE(n) || got > n || (got < n && !r->d.done))
            abort();
        memcpy(r->out + r->outlen, buf, olen);
        r->outlen += olen;
        pos += got;
    } while (pos < len && !r->d.done);
    r->consumed = pos;
    free(buf);
}

static bool
has_bare(const char *in, size_t end)
{
    for (size_t i = 0; i < end; i++) {
        if (in[i] == '\r' && (i + 1 >= end || in[i + 1] != '\n'))
            return true;
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
            return true;
    }
    return false;
}

static void
check_output(const char *o, size_t n, const struct smtp_data *d)
{
    for (size_t i = 0; i < n; i++) {
        if (o[i] == '\r' && (i + 1 >= n || o[i + 1] != '\n'))
            abort(); /* bare CR in the output */
        if (o[i] == '\n' && (i == 0 || o[i - 1] != '\r'))
            abort(); /* bare LF in the output */
        if (o[i] == '.' && (i == 0 || o[i - 1] == '\n') && i + 1 < n && o[i + 1] == '\r')
            abort(); /* a lone "." line: would end the data at the primary */
    }
    if (d->done && d->error == 0 && n > 0 && (n < 2 || o[n - 2] != '\r' || o[n - 1] != '\n'))
        abort();
    if (d->error == 0 && d->size != n)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum mx2_bare_newline mode;
    const char *in;
    size_t len, term = SIZE_MAX;
    struct run a, b, c;

    if (size < 1)
        return 0;
    mode = (data[0] & 1) ? MX2_BARE_REJECT : MX2_BARE_NORMALIZE;
    in = (const char *)data + 1;
    len = size - 1;

    feed(in, len, mode, 0, 0, &a);
    feed(in, len, mode, 1, 0, &b);
    feed(in, len, mode, 2, data[0], &c);
    for (const struct run *x = &b; x != NULL; x = (x == &b) ? &c : NULL) {
        /* After an error the output is cut at a point that may depend on
         * the chunking (the caller discards it), so compare it only when
         * there is none. */
        if ((a.d.error == 0 && (x->outlen != a.outlen || memcmp(x->out, a.out, a.outlen) != 0)) ||
            x->consumed != a.consumed || x->d.done != a.d.done || x->d.error != a.d.error ||
            x->d.size != a.d.size || x->d.lines != a.d.lines ||
            x->d.received_count != a.d.received_count || x->d.long_lines != a.d.long_lines ||
            x->d.eightbit != a.d.eightbit || x->d.eightbit_header != a.d.eightbit_header ||
            x->d.bare_lf != a.d.bare_lf || x->d.bare_cr != a.d.bare_cr ||
            strcmp(x->d.message_id, a.d.message_id) != 0)
            abort(); /* the result depends on how the bytes were split */
    }
    check_output(a.out, a.outlen, &a.d);
    if (strlen(a.d.message_id) != a.d.message_id_len || a.d.message_id_len > SMTP_DATA_MSGID_MAX)
        abort();

    if (len >= 3 && memcmp(in, ".\r\n", 3) == 0) {
        term = 3;
    } else {
        const char *p = memmem(in, len, "\r\n.\r\n", 5);
        if (p != NULL)
            term = (size_t)(p - in) + 5;
    }
    if (a.d.done != (term != SIZE_MAX) || a.consumed != (term != SIZE_MAX ? term : len))
        abort(); /* the end of data is CRLF.CRLF and nothing else */
    if (a.d.error == MX2_E_BARE_NEWLINE && mode != MX2_BARE_REJECT)
        abort();
    if (a.d.done) {
        size_t body = term - 3;
        bool bare = has_bare(in, body);
        if (!bare && a.d.error == MX2_E_BARE_NEWLINE)
            abort(); /* reject mode refused a clean message */
        if (mode == MX2_BARE_REJECT && bare && a.d.error == 0)
            abort(); /* a bare CR/LF slipped through reject mode */
        if (!bare && a.d.error == 0 && (a.outlen != body || memcmp(a.out, in, body) != 0))
            abort(); /* a well-formed message must pass unchanged */
    }
    free(a.out);
    free(b.out);
    free(c.out);
    return 0;
}
