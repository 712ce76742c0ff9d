/*
 * buf.h - a growable byte buffer with a read offset.
 *
 * Callers: any module, one owner per buffer, no locking. Memory comes from
 * xalloc (out of memory is fatal). buf_free() releases and zeroes; a zeroed
 * struct buf is a valid empty buffer. Pointers into data die at the next
 * append/reserve.
 */
#ifndef MX2_BUF_H
#define MX2_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;
    size_t off; /* first unconsumed byte */
    size_t len; /* end of valid bytes (off <= len <= cap) */
    size_t cap;
};

static inline size_t
buf_avail(const struct buf *b)
{
    return b->len - b->off;
}

static inline const char *
buf_head(const struct buf *b)
{
    return b->data + b->off;
}

/* Make room for n more bytes at the tail; returns the tail pointer. */
char *buf_reserve(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drop n bytes from the head. */
void buf_consume(struct buf *b, size_t n);
/* Forget everything but keep the memory. */
void buf_reset(struct buf *b);
void buf_free(struct buf *b);

#endif
