/*
 * fuzz_aliases.c - mapsrc's aliases parser on arbitrary bytes.
 *
 * Input: aliases(5) text with continuation lines, comments and quoted names. Names and bad-line
 * reports must match the counters.
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
    struct mapsrc_aliases_stats st;

    fuzz_begin(data, size);
    if (mapsrc_aliases_buf((const char *)data, size, "fuzz", &sink, &st) != 0)
        abort();
    if (st.names != fuzz_names || st.bad_lines != fuzz_bad)
        abort();
    return 0;
}
