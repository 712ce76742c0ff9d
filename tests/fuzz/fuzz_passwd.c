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

#include "mapsrc_sink.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mapsrc_sink sink = {fuzz_on_name, fuzz_on_bad, NULL};
    struct mapsrc_passwd_stats st;
    static const char *const excl[] = {"guest"};
    struct mapsrc_passwd_opts opts = {size > 0 ? (unsigned long)data[0] * 8 : 1000, excl, 1};

    fuzz_begin(data, size);
    if (mapsrc_passwd_buf((const char *)data, size, "fuzz", &opts, &sink, &st) != 0)
        abort();
    if (st.accounts != fuzz_names)
        abort();
    return 0;
}
