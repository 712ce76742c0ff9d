/*
 * buf.c - see buf.h. Consumed bytes are reclaimed lazily: when the buffer
 * empties the offsets rewind; when room is needed the live bytes move down.
 */
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

char *
buf_reserve(struct buf *b, size_t n)
{
    if (b->off == b->len)
        b->off = b->len = 0;
    if (b->cap - b->len >= n)
        return b->data + b->len;
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= n)
            return b->data + b->len;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n)
        cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
    return b->data + b->len;
}

void
buf_append(struct buf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    memcpy(buf_reserve(b, n), p, n);
    b->len += n;
}

void
buf_appendf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    char *p = buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void
buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

void
buf_reset(struct buf *b)
{
    b->off = b->len = 0;
}

void
buf_free(struct buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}
