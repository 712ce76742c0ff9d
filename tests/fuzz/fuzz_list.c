/*
 * fuzz_list.c - mapsrc's list parser on arbitrary bytes.
 *
 * Input: plain recipient lists (local parts, addresses, @domain catch-alls, extra columns). Every
 * emitted name must also pass rcptmap_normalize_address (or, for a local part,
 * rcptmap_check_local): the parser and the map agree.
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
    struct mapsrc_list_stats st;

    fuzz_begin(data, size);
    if (mapsrc_list_buf((const char *)data, size, "fuzz", &sink, &st) != 0)
        abort();
    if (st.locals + st.addresses + st.catchalls != fuzz_names || st.bad_lines != fuzz_bad)
        abort();
    return 0;
}
