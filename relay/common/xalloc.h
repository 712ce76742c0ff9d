/*
 * xalloc.h - allocation that never returns NULL.
 *
 * Out of memory is fatal (Postfix mymalloc): an acknowledged message never
 * lives only in memory, so dying loses nothing that was promised.
 * Any thread.
 */
#ifndef MX2_XALLOC_H
#define MX2_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
