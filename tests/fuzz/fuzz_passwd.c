/*
 * fuzz_passwd.c - mapsrc's passwd parser on arbitrary bytes.
 *
 * Input: passwd(5) lines: the uid floor comes from the first byte, so the filters see varied
 * settings. Every delivered account must be counted exactly once.
 *
 * Invariants checked on every name handed to the sink (a violation aborts):
 * non-empty, ASCII lower-case, no whitespace, control bytes or routing
 * characters ('%', '!', ':'; '@' only as the one separator of a list
 * address), and accepted by the same rcptmap checks the map applies at
 * lookup time. Each bad line must carry a line number within the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mapsrc.h"
#include "rcptmap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mapsrc_sink sink = {fuzz_on_name, fuzz_on_bad, NULL};
    struct mapsrc_passwd_stats st;
    static const char *const excl[] = {"guest"};
    struct mapsrc_passwd_opts opts = {size > 0 ? (unsigned long)data[0] * 8 : 1000, excl, 1};

    fuzz_names = fuzz_bad = 0;
    fuzz_lines = 1;
    for (size_t i = 0; i < size; i++)
        fuzz_lines += data[i] == '\n';
    if (mapsrc_passwd_buf((const char *)data, size, "fuzz", &opts, &sink, &st) != 0)
        abort();
    if (st.accounts != fuzz_names)
        abort();
    return 0;
}
