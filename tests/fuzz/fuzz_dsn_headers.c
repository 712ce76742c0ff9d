/*
 * fuzz_dsn_headers.c - bounce_compose on arbitrary originals and replies.
 *
 * Input layout: byte 0 picks the kind and RET; bytes up to the first NUL
 * after it are the diagnostic (any bytes, CR/LF included, as a hostile
 * primary could send); the rest is the stored original. The DSN must always
 * be valid stored wire form - CRLF lines only, no NUL, every line that
 * starts with '.' stuffed, no line over 998 octets - and its boundary must
 * occur exactly five times (Content-Type and four delimiter lines), i.e.
 * never inside the quoted content.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bounce.h"
#include "buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_check_wire(const char *d, size_t len)
{
    size_t start = 0;
    if (len < 2 || d[len - 2] != '\r' || d[len - 1] != '\n')
        abort();
    for (size_t i = 0; i < len; i++) {
        if (d[i] == '\0')
            abort();
        if (d[i] == '\r' && (i + 1 >= len || d[i + 1] != '\n'))
            abort();
        if (d[i] == '\n') {
            if (i == 0 || d[i - 1] != '\r')
                abort();
            size_t l = i - 1 - start;
            if (l > 998)
                abort();
            if (l >= 1 && d[start] == '.' && (l < 2 || d[start + 1] != '.'))
                abort();
            start = i + 1;
        }
    }
}

static size_t
fuzz_count(const char *hay, size_t len, const char *needle, size_t nlen)
{
    size_t c = 0;
    for (size_t i = 0; i + nlen <= len; i++)
        if (memcmp(hay + i, needle, nlen) == 0)
            c++;
    return c;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 20)
        return 0;
    unsigned sel = data[0];
    const uint8_t *rest = data + 1;
    size_t rlen = size - 1;
    const uint8_t *nul = memchr(rest, 0, rlen);
    size_t dlen = nul ? (size_t)(nul - rest) : 0;
    char *diag = malloc(dlen + 1);
    if (diag == NULL)
        return 0;
    memcpy(diag, rest, dlen);
    diag[dlen] = '\0';
    const uint8_t *orig = nul ? nul + 1 : rest;
    size_t olen = nul ? rlen - dlen - 1 : rlen;

    struct bounce_rcpt r[2] = {
        {"a@example.jp", "rfc822;a+2B1@example.jp", "5.1.1", diag, "primary.example.jp", 1},
        {".b@example.jp", NULL, NULL, dlen ? diag : NULL, NULL, 0},
    };
    struct bounce_info info;
    memset(&info, 0, sizeof(info));
    info.kind = (enum bounce_kind)(sel % 3);
    info.ret = (int)((sel >> 2) % 3);
    info.hostname = "mx2.example.net";
    info.qid = "FUZZ1";
    info.sender = "s@example.org";
    info.envid = (sel & 0x20) ? diag : NULL;
    info.arrival = 1700000000;
    info.now = 1700000000 + (int64_t)(sel & 0xc0);
    info.reason = (sel & 0x10) ? diag : NULL;
    info.full_limit = (sel & 0x40) ? 64 : 0;
    info.retry_until = 1700400000;

    struct buf out = {0};
    if (bounce_compose(&info, r, 1 + (sel & 1), orig, olen, &out) != 0)
        abort();
    fuzz_check_wire(out.data, out.len);
    const char *b = NULL;
    for (size_t i = 0; i + 10 <= out.len; i++) {
        if (memcmp(out.data + i, "boundary=\"", 10) == 0) {
            b = out.data + i + 10;
            break;
        }
    }
    if (b == NULL)
        abort();
    const char *e = memchr(b, '"', out.len - (size_t)(b - out.data));
    if (e == NULL || e == b)
        abort();
    if (fuzz_count(out.data, out.len, b, (size_t)(e - b)) != 5)
        abort();
    buf_free(&out);
    free(diag);
    return 0;
}
