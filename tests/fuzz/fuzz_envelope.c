/*
 * fuzz_envelope.c - envelope_decode on arbitrary bytes.
 *
 * Each input is decoded twice: as given (exercises the CRC and length
 * checks) and with its trailing CRC recomputed, so mutations reach the field
 * checks behind the CRC. Whatever decodes must re-encode to exactly the same
 * bytes (the format has one spelling per envelope) and decode again.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_check(const uint8_t *data, size_t size)
{
    struct envelope e, again;
    unsigned char *buf;
    size_t len;

    if (envelope_decode(data, size, &e) != 0)
        return;
    if (envelope_encode(&e, &buf, &len) != 0)
        abort(); /* decoded but does not encode: decode is too lax */
    if (len != size || memcmp(buf, data, size) != 0)
        abort(); /* two spellings of one envelope */
    if (envelope_decode(buf, len, &again) != 0)
        abort();
    (void)envelope_pending_count(&again);
    envelope_free(&again);
    free(buf);
    envelope_free(&e);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy;

    fuzz_check(data, size);
    if (size < 4)
        return 0;
    copy = malloc(size);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    uint32_t c = envelope_crc32(copy, size - 4);
    copy[size - 4] = (uint8_t)(c >> 24);
    copy[size - 3] = (uint8_t)(c >> 16);
    copy[size - 2] = (uint8_t)(c >> 8);
    copy[size - 1] = (uint8_t)c;
    fuzz_check(copy, size);
    free(copy);
    return 0;
}
