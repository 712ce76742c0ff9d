/*
 * mapsrc_sink.h - the sink shared by the three map-source fuzz targets
 * (fuzz_passwd.c, fuzz_aliases.c, fuzz_list.c): included once by each.
 *
 * Invariants checked on every name handed to the sink (a violation aborts):
 * non-empty, ASCII lower-case, no whitespace, control bytes or routing
 * characters ('%', '!', ':'; '@' only as the one separator of a list
 * address), and accepted by the same rcptmap checks the map applies at
 * lookup time. Each bad line must carry a line number within the input.
 */
#ifndef MX2_FUZZ_MAPSRC_SINK_H
#define MX2_FUZZ_MAPSRC_SINK_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mapsrc.h"
#include "rcptmap.h"

static size_t fuzz_names, fuzz_bad, fuzz_lines;

static void
fuzz_on_name(void *arg, const char *name)
{
    char key[RCPTMAP_KEY_MAX];
    const char *at = strchr(name, '@');
    size_t n = strlen(name);

    if (n == 0)
        abort();
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= ' ' || c == 0x7f || c == '%' || c == '!' || c == ':' || (c >= 'A' && c <= 'Z'))
            abort();
    }
    if (at != NULL) {
        if (strchr(at + 1, '@') != NULL)
            abort();
        if (rcptmap_normalize_address(name, key, sizeof(key), NULL) < 0)
            abort();
        if (strcmp(key, name) != 0)
            abort(); /* emitted names are already in canonical form */
    } else if (rcptmap_check_local(name, n, NULL) != 0) {
        abort();
    }
    fuzz_names++;
}

static void
fuzz_on_bad(void *arg, const char *file, unsigned long line, const char *reason)
{
    if (line == 0 || line > fuzz_lines || reason == NULL || *reason == '\0' ||
        strcmp(file, "fuzz") != 0)
        abort();
    fuzz_bad++;
}

/* Reset the counters for one input and count its lines. */
static void
fuzz_begin(const uint8_t *data, size_t size)
{
    fuzz_names = fuzz_bad = 0;
    fuzz_lines = 1;
    for (size_t i = 0; i < size; i++)
        fuzz_lines += data[i] == '\n';
}

#endif
